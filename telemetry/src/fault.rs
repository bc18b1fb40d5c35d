//! Ground truth: the faults the simulator injected, so detection can be scored.

use serde::{Deserialize, Serialize};

/// The faults the simulator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    TrafficSpike,
    PacketLoss,
    /// Overheating: temperature climbs.
    HardwareTemperature,
    /// A failed fan: fan speed collapses, temperature follows.
    HardwareFan,
    /// A failed power supply: fans and temperature misbehave, errors appear.
    HardwarePsu,
    LinkFlap,
    MemoryLeak,
    CpuRunaway,
    RouteFlap,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::TrafficSpike,
        FaultKind::PacketLoss,
        FaultKind::HardwareTemperature,
        FaultKind::HardwareFan,
        FaultKind::HardwarePsu,
        FaultKind::LinkFlap,
        FaultKind::MemoryLeak,
        FaultKind::CpuRunaway,
        FaultKind::RouteFlap,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::TrafficSpike => "traffic-spike",
            FaultKind::PacketLoss => "packet-loss",
            FaultKind::HardwareTemperature => "hardware-temperature",
            FaultKind::HardwareFan => "hardware-fan",
            FaultKind::HardwarePsu => "hardware-psu",
            FaultKind::LinkFlap => "link-flap",
            FaultKind::MemoryLeak => "memory-leak",
            FaultKind::CpuRunaway => "cpu-runaway",
            FaultKind::RouteFlap => "route-flap",
        }
    }
}

/// One injected fault: published to `router-faults` when it starts and again when it ends
/// (with `end` set), and listed by the simulator's `GET /faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// Unique id, stable for the fault's life.
    pub id: String,
    pub kind: FaultKind,
    pub router: String,
    /// Event time of onset, ms since the Unix epoch.
    pub start: i64,
    /// Event time the fault ended or will end, ms since the Unix epoch.
    pub end: i64,
    /// Kind-specific strength (for example the traffic multiplier of a spike).
    pub magnitude: f64,
    /// Wire names of the metrics the fault moves (see [`crate::Metric::name`]).
    pub metrics: Vec<String>,
}
