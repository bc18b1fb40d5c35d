//! The metrics every router reports, with their units.

use serde::{Deserialize, Serialize};

/// One metric a router reports. The wire name (see [`Metric::name`]) is the JSON field name in
/// [`Metrics`] and the column name the host hands to detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// CPU utilisation, ratio 0..=1.
    CpuUtil,
    /// Memory utilisation, ratio 0..=1.
    MemUtil,
    /// Chassis temperature, degrees Celsius.
    TempC,
    /// Fan speed, revolutions per minute (mean of the fans).
    FanRpm,
    /// Round-trip latency to the router's upstream, milliseconds.
    LatencyMs,
    /// Packet loss, ratio 0..=1 of packets sent in the interval.
    LossRatio,
    /// Received traffic, bits per second.
    RxBps,
    /// Transmitted traffic, bits per second.
    TxBps,
    /// Interface errors counted during the interval.
    IfErrors,
    /// BGP sessions in the Established state.
    BgpUp,
}

impl Metric {
    /// Every metric, in wire order.
    pub const ALL: [Metric; 10] = [
        Metric::CpuUtil,
        Metric::MemUtil,
        Metric::TempC,
        Metric::FanRpm,
        Metric::LatencyMs,
        Metric::LossRatio,
        Metric::RxBps,
        Metric::TxBps,
        Metric::IfErrors,
        Metric::BgpUp,
    ];

    /// The wire name: JSON field in a record, column name in a detector batch.
    pub const fn name(self) -> &'static str {
        match self {
            Metric::CpuUtil => "cpu_util",
            Metric::MemUtil => "mem_util",
            Metric::TempC => "temp_c",
            Metric::FanRpm => "fan_rpm",
            Metric::LatencyMs => "latency_ms",
            Metric::LossRatio => "loss_ratio",
            Metric::RxBps => "rx_bps",
            Metric::TxBps => "tx_bps",
            Metric::IfErrors => "if_errors",
            Metric::BgpUp => "bgp_up",
        }
    }

    /// Looks a metric up by its wire name.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the value is a ratio that must lie in 0..=1.
    pub const fn is_ratio(self) -> bool {
        matches!(self, Metric::CpuUtil | Metric::MemUtil | Metric::LossRatio)
    }

    /// Whether the value must be non-negative (everything but temperature).
    pub const fn is_non_negative(self) -> bool {
        !matches!(self, Metric::TempC)
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The values of one sample. Every field is required in schema version 1.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub cpu_util: f64,
    pub mem_util: f64,
    pub temp_c: f64,
    pub fan_rpm: f64,
    pub latency_ms: f64,
    pub loss_ratio: f64,
    pub rx_bps: f64,
    pub tx_bps: f64,
    pub if_errors: f64,
    pub bgp_up: f64,
}

impl Metrics {
    /// The value of one metric.
    pub fn get(&self, metric: Metric) -> f64 {
        match metric {
            Metric::CpuUtil => self.cpu_util,
            Metric::MemUtil => self.mem_util,
            Metric::TempC => self.temp_c,
            Metric::FanRpm => self.fan_rpm,
            Metric::LatencyMs => self.latency_ms,
            Metric::LossRatio => self.loss_ratio,
            Metric::RxBps => self.rx_bps,
            Metric::TxBps => self.tx_bps,
            Metric::IfErrors => self.if_errors,
            Metric::BgpUp => self.bgp_up,
        }
    }

    /// A mutable reference to one metric's value.
    pub fn get_mut(&mut self, metric: Metric) -> &mut f64 {
        match metric {
            Metric::CpuUtil => &mut self.cpu_util,
            Metric::MemUtil => &mut self.mem_util,
            Metric::TempC => &mut self.temp_c,
            Metric::FanRpm => &mut self.fan_rpm,
            Metric::LatencyMs => &mut self.latency_ms,
            Metric::LossRatio => &mut self.loss_ratio,
            Metric::RxBps => &mut self.rx_bps,
            Metric::TxBps => &mut self.tx_bps,
            Metric::IfErrors => &mut self.if_errors,
            Metric::BgpUp => &mut self.bgp_up,
        }
    }
}
