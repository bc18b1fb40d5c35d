//! Prometheus metrics: the simulator's own counters, and the fleet's current values read from
//! the engine at scrape time (so a resized fleet never leaves stale series behind).

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use routewatch_telemetry::{FaultKind, Metric, Role};

use crate::consequences::ConsequenceKind;
use crate::engine::Engine;
use crate::lock;

/// Above this fleet size, per-router series are not exported by default (fleet aggregates by
/// role still are): 10 series a router stays comfortable for one Prometheus up to here.
pub const DEFAULT_ROUTER_GAUGES_MAX: u32 = 2_000;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub kind: &'static str,
    pub source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
    /// `requested`, then `fixed` or `no-effect` when it completes.
    pub outcome: &'static str,
}

/// The simulator's own instruments. Cheap to clone (every instrument is shared).
#[derive(Debug, Clone)]
pub struct SimMetrics {
    pub records: Counter,
    pub record_bytes: Counter,
    pub ticks: Counter,
    pub ticks_late: Counter,
    pub tick_duration: Histogram,
    pub tick_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub faults_started: Family<FaultLabels, Counter>,
    pub faults_ended: Family<KindLabel, Counter>,
    pub consequences: Family<KindLabel, Counter>,
    pub actions: Family<ActionLabels, Counter>,
    pub delivered: Counter,
    pub delivery_errors: Counter,
    pub dropped: Counter,
    pub sink_errors: Counter,
}

impl Default for SimMetrics {
    fn default() -> Self {
        SimMetrics {
            records: Counter::default(),
            record_bytes: Counter::default(),
            ticks: Counter::default(),
            ticks_late: Counter::default(),
            tick_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            tick_lag: Gauge::default(),
            faults_started: Family::default(),
            faults_ended: Family::default(),
            consequences: Family::default(),
            actions: Family::default(),
            delivered: Counter::default(),
            delivery_errors: Counter::default(),
            dropped: Counter::default(),
            sink_errors: Counter::default(),
        }
    }
}

impl SimMetrics {
    /// A registry with these instruments and the fleet collector.
    pub fn registry(&self, engine: Arc<Mutex<Engine>>, router_gauges_max: u32) -> Registry {
        // Full names rather than a registry prefix: the prefix would also apply to the collector.
        let mut r = Registry::default();
        r.register("routewatch_sim_records", "Records handed to the sink", self.records.clone());
        r.register(
            "routewatch_sim_record_bytes",
            "JSON bytes of the records handed to the sink",
            self.record_bytes.clone(),
        );
        r.register("routewatch_sim_ticks", "Simulation steps (one sample per router each)", self.ticks.clone());
        r.register(
            "routewatch_sim_ticks_late",
            "Real-time steps that finished after the next step was due",
            self.ticks_late.clone(),
        );
        r.register(
            "routewatch_sim_tick_duration_seconds",
            "Wall time to simulate, encode and hand one step to the sink",
            self.tick_duration.clone(),
        );
        r.register(
            "routewatch_sim_tick_lag_seconds",
            "How long after its due time the latest real-time step was handed to the sink",
            self.tick_lag.clone(),
        );
        r.register("routewatch_sim_faults_started", "Faults started, by kind and source", self.faults_started.clone());
        r.register("routewatch_sim_faults_ended", "Faults ended, by kind", self.faults_ended.clone());
        r.register(
            "routewatch_sim_consequences",
            "Consequences of faults left alone (crashes, throttling, shutdowns), by kind",
            self.consequences.clone(),
        );
        r.register(
            "routewatch_sim_actions",
            "Remediation actions requested, and completed by outcome",
            self.actions.clone(),
        );
        r.register("routewatch_sim_kafka_delivered", "Messages the broker acknowledged", self.delivered.clone());
        r.register(
            "routewatch_sim_kafka_delivery_errors",
            "Messages the producer gave up on",
            self.delivery_errors.clone(),
        );
        r.register(
            "routewatch_sim_records_dropped",
            "Real-time records dropped because the producer queue stayed full",
            self.dropped.clone(),
        );
        r.register("routewatch_sim_sink_errors", "Sink write or flush failures", self.sink_errors.clone());
        r.register_collector(Box::new(FleetCollector { engine, router_gauges_max }));
        r
    }
}

/// Encodes the registry in the text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String cannot fail");
    out
}

/// Prometheus name (after `routewatch_router_`/`routewatch_fleet_`), help, and the factor from
/// the record's unit to the Prometheus base unit.
fn exposition(metric: Metric) -> (&'static str, &'static str, f64) {
    match metric {
        Metric::CpuUtil => ("cpu_utilization_ratio", "CPU utilisation", 1.0),
        Metric::MemUtil => ("memory_utilization_ratio", "Memory utilisation", 1.0),
        Metric::TempC => ("temperature_celsius", "Chassis temperature", 1.0),
        Metric::FanRpm => ("fan_speed_rpm", "Mean fan speed", 1.0),
        Metric::LatencyMs => ("latency_seconds", "Round-trip latency to the upstream", 1e-3),
        Metric::LossRatio => ("packet_loss_ratio", "Packet loss in the last interval", 1.0),
        Metric::RxBps => ("receive_bytes_per_second", "Received traffic", 1.0 / 8.0),
        Metric::TxBps => ("transmit_bytes_per_second", "Transmitted traffic", 1.0 / 8.0),
        Metric::IfErrors => ("interface_errors", "Interface errors in the last interval", 1.0),
        Metric::BgpUp => ("bgp_sessions_established", "BGP sessions established", 1.0),
    }
}

#[derive(Debug)]
struct FleetCollector {
    engine: Arc<Mutex<Engine>>,
    router_gauges_max: u32,
}

const ROLES: [Role; 3] = [Role::Core, Role::Edge, Role::Access];

impl Collector for FleetCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let engine = lock(&self.engine);
        let records = engine.records();
        let sampled = engine.ticks() > 0;

        let routers = ConstGauge::new(records.len() as i64);
        routers.encode(enc.encode_descriptor(
            "routewatch_sim_routers",
            "Routers in the fleet",
            None,
            MetricType::Gauge,
        )?)?;
        let ts = ConstGauge::new(engine.now() as f64 / 1000.0);
        ts.encode(enc.encode_descriptor(
            "routewatch_sim_event_time_seconds",
            "Event time of the latest sample (Unix seconds)",
            None,
            MetricType::Gauge,
        )?)?;
        {
            let mut m = enc.encode_descriptor(
                "routewatch_sim_faults_active",
                "Faults active now, by kind",
                None,
                MetricType::Gauge,
            )?;
            for kind in FaultKind::ALL {
                let n = engine.faults().active().iter().filter(|f| f.event.kind == kind).count();
                ConstGauge::new(n as i64).encode(m.encode_family(&[("kind", kind.name())])?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "routewatch_sim_consequences_active",
                "Consequences of faults left alone lasting now (routers reloading, throttled, shedding cards), by kind",
                None,
                MetricType::Gauge,
            )?;
            for kind in <ConsequenceKind as strum::VariantArray>::VARIANTS {
                let n = engine.consequences().active().filter(|c| c.kind == *kind).count();
                ConstGauge::new(n as i64).encode(m.encode_family(&[("kind", kind.name())])?)?;
            }
        }
        if !sampled {
            return Ok(());
        }

        // Fleet aggregates by role: always exported, bounded (3 roles x 2 statistics).
        for metric in Metric::ALL {
            let (name, help, scale) = exposition(metric);
            let family = format!("routewatch_fleet_{name}");
            let mut m = enc.encode_descriptor(
                &family,
                &format!("{help}, mean and max over the routers of a role"),
                None,
                MetricType::Gauge,
            )?;
            for role in ROLES {
                let values = records.iter().filter(|r| r.role == role).map(|r| r.metrics.get(metric) * scale);
                let (n, sum, max) = values.fold((0usize, 0.0, f64::MIN), |(n, s, m), v| (n + 1, s + v, m.max(v)));
                if n == 0 {
                    continue;
                }
                ConstGauge::new(sum / n as f64).encode(m.encode_family(&[("role", role.name()), ("stat", "mean")])?)?;
                ConstGauge::new(max).encode(m.encode_family(&[("role", role.name()), ("stat", "max")])?)?;
            }
        }

        // Per-router series only for fleets small enough that the label set stays sane.
        if records.len() as u64 > u64::from(self.router_gauges_max) {
            return Ok(());
        }
        for metric in Metric::ALL {
            let (name, help, scale) = exposition(metric);
            let family = format!("routewatch_router_{name}");
            let mut m = enc.encode_descriptor(&family, help, None, MetricType::Gauge)?;
            for r in records {
                let labels = [("router", r.router.as_str()), ("role", r.role.name()), ("site", r.site.as_str())];
                ConstGauge::new(r.metrics.get(metric) * scale).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
