//! Faults: what each kind does to a router's metrics, and the book of active and past faults
//! that is the ground truth.

use std::collections::{HashMap, VecDeque};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use routewatch_telemetry::{FaultEvent, FaultKind, Metric};
use serde::Serialize;

/// How many ended faults `GET /faults` keeps (the Kafka topic and the file keep all).
pub const HISTORY_LIMIT: usize = 10_000;

/// How a fault entered the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The random schedule.
    Schedule,
    /// `POST /faults`.
    Api,
}

impl Source {
    pub const fn name(self) -> &'static str {
        match self {
            Source::Schedule => "schedule",
            Source::Api => "api",
        }
    }
}

/// What the faults on a router do to it during one sample. Neutral by default.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects {
    /// Multiplies offered traffic.
    pub traffic_mul: f64,
    /// Added to CPU utilisation (ratio).
    pub cpu_add: f64,
    /// Added to memory utilisation (ratio).
    pub mem_add: f64,
    /// Added to the chassis temperature target, degrees C.
    pub temp_add: f64,
    /// Multiplies fan speed (a failed fan is below 1).
    pub fan_mul: f64,
    /// Amplitude of erratic fan speed (a failing power supply).
    pub fan_jitter: f64,
    pub latency_mul: f64,
    /// Added latency, ms.
    pub latency_add: f64,
    /// Added packet loss (ratio).
    pub loss_add: f64,
    /// Added interface errors per minute.
    pub errors_per_min: f64,
    /// Fraction of BGP sessions down.
    pub bgp_down_frac: f64,
    /// CPU clock as a share of full speed: below 1 when the chassis throttles it (the same
    /// work then takes a larger share of the CPU and makes less heat).
    pub cpu_clock: f64,
}

impl Default for Effects {
    fn default() -> Self {
        Effects {
            traffic_mul: 1.0,
            cpu_add: 0.0,
            mem_add: 0.0,
            temp_add: 0.0,
            fan_mul: 1.0,
            fan_jitter: 0.0,
            latency_mul: 1.0,
            latency_add: 0.0,
            loss_add: 0.0,
            errors_per_min: 0.0,
            bgp_down_frac: 0.0,
            cpu_clock: 1.0,
        }
    }
}

/// The behaviour of one fault kind: its magnitude's meaning and limits, its typical length
/// on the random schedule, and the metrics it moves.
#[derive(Debug, Clone, Copy)]
pub struct KindSpec {
    pub kind: FaultKind,
    /// What the magnitude means, for the API and README.
    pub magnitude_unit: &'static str,
    pub default_magnitude: f64,
    /// Valid magnitudes for `POST /faults`: (exclusive lower, inclusive upper).
    pub magnitude_limits: (f64, f64),
    /// The random schedule draws magnitudes uniformly from this range.
    pub random_magnitude: (f64, f64),
    /// The random schedule draws durations uniformly from this range, seconds.
    pub random_duration_s: (f64, f64),
    pub metrics: &'static [Metric],
}

use Metric::*;

const SPECS: [KindSpec; 9] = [
    KindSpec {
        kind: FaultKind::TrafficSpike,
        magnitude_unit: "traffic multiplier",
        default_magnitude: 3.0,
        magnitude_limits: (1.0, 50.0),
        random_magnitude: (2.0, 5.0),
        random_duration_s: (120.0, 1200.0),
        // Loss too, but only once the spike saturates the links.
        metrics: &[RxBps, TxBps, CpuUtil, TempC, LatencyMs],
    },
    KindSpec {
        kind: FaultKind::PacketLoss,
        magnitude_unit: "added loss ratio",
        default_magnitude: 0.05,
        magnitude_limits: (0.0, 1.0),
        random_magnitude: (0.01, 0.2),
        random_duration_s: (300.0, 1800.0),
        metrics: &[LossRatio, LatencyMs],
    },
    KindSpec {
        kind: FaultKind::HardwareTemperature,
        magnitude_unit: "degrees C added",
        default_magnitude: 25.0,
        magnitude_limits: (0.0, 80.0),
        random_magnitude: (10.0, 35.0),
        random_duration_s: (600.0, 3600.0),
        metrics: &[TempC, FanRpm],
    },
    KindSpec {
        kind: FaultKind::HardwareFan,
        magnitude_unit: "fraction of fan speed lost",
        default_magnitude: 0.7,
        magnitude_limits: (0.0, 1.0),
        random_magnitude: (0.4, 1.0),
        random_duration_s: (900.0, 5400.0),
        metrics: &[FanRpm, TempC],
    },
    KindSpec {
        kind: FaultKind::HardwarePsu,
        magnitude_unit: "severity 0..1",
        default_magnitude: 0.8,
        magnitude_limits: (0.0, 1.0),
        random_magnitude: (0.4, 1.0),
        random_duration_s: (600.0, 3600.0),
        metrics: &[FanRpm, TempC, IfErrors],
    },
    KindSpec {
        kind: FaultKind::LinkFlap,
        magnitude_unit: "fraction of traffic lost while down",
        default_magnitude: 0.8,
        magnitude_limits: (0.0, 1.0),
        random_magnitude: (0.3, 1.0),
        random_duration_s: (300.0, 1800.0),
        metrics: &[RxBps, TxBps, IfErrors, LossRatio, BgpUp],
    },
    KindSpec {
        kind: FaultKind::MemoryLeak,
        magnitude_unit: "memory ratio leaked per hour",
        default_magnitude: 0.05,
        magnitude_limits: (0.0, 1.0),
        random_magnitude: (0.02, 0.1),
        random_duration_s: (7200.0, 28_800.0),
        metrics: &[MemUtil],
    },
    KindSpec {
        kind: FaultKind::CpuRunaway,
        magnitude_unit: "CPU ratio added",
        default_magnitude: 0.5,
        magnitude_limits: (0.0, 1.0),
        random_magnitude: (0.3, 0.7),
        random_duration_s: (600.0, 3600.0),
        metrics: &[CpuUtil, TempC],
    },
    KindSpec {
        kind: FaultKind::RouteFlap,
        magnitude_unit: "fraction of BGP sessions flapping",
        default_magnitude: 0.5,
        magnitude_limits: (0.0, 1.0),
        random_magnitude: (0.25, 1.0),
        random_duration_s: (300.0, 1200.0),
        metrics: &[BgpUp, CpuUtil, LatencyMs],
    },
];

/// The behaviour of a fault kind.
pub fn spec(kind: FaultKind) -> &'static KindSpec {
    SPECS.iter().find(|s| s.kind == kind).expect("every kind has a spec")
}

/// Every kind's behaviour, in [`FaultKind::ALL`] order.
pub fn specs() -> &'static [KindSpec] {
    &SPECS
}

/// Adds one fault's effect at `elapsed_s` into its onset to `fx`. Flapping faults draw their
/// up/down state per sample from the router's `rng`, so they stay deterministic.
pub fn apply(kind: FaultKind, magnitude: f64, elapsed_s: f64, rng: &mut ChaCha8Rng, fx: &mut Effects) {
    // Hardware trouble builds up over a few minutes rather than stepping.
    let ramp = (elapsed_s / 300.0).clamp(0.0, 1.0);
    match kind {
        FaultKind::TrafficSpike => fx.traffic_mul *= magnitude,
        FaultKind::PacketLoss => {
            fx.loss_add += magnitude;
            // Retransmissions and rerouting add delay.
            fx.latency_mul *= 1.0 + 2.0 * magnitude.min(0.5);
        }
        FaultKind::HardwareTemperature => fx.temp_add += magnitude * ramp,
        FaultKind::HardwareFan => fx.fan_mul *= 1.0 - magnitude,
        FaultKind::HardwarePsu => {
            fx.fan_jitter += 0.3 * magnitude;
            fx.fan_mul *= 1.0 - 0.3 * magnitude;
            fx.errors_per_min += 50.0 * magnitude;
            fx.temp_add += 5.0 * magnitude * ramp;
        }
        FaultKind::LinkFlap => {
            fx.errors_per_min += 20.0 * magnitude;
            if rng.random::<f64>() < 0.5 {
                fx.traffic_mul *= 1.0 - magnitude;
                fx.loss_add += 0.1 * magnitude;
                fx.bgp_down_frac = (fx.bgp_down_frac + magnitude).min(1.0);
            }
        }
        FaultKind::MemoryLeak => fx.mem_add += magnitude * elapsed_s / 3600.0,
        FaultKind::CpuRunaway => fx.cpu_add += magnitude * ramp.max(0.5),
        FaultKind::RouteFlap => {
            let down = magnitude * rng.random::<f64>();
            fx.bgp_down_frac = (fx.bgp_down_frac + down).min(1.0);
            fx.latency_mul *= 1.0 + down;
        }
    }
}

/// Whether `apply` draws from the engine's random stream for this kind (one draw a sample).
const fn flaps(kind: FaultKind) -> bool {
    matches!(kind, FaultKind::LinkFlap | FaultKind::RouteFlap)
}

/// Roughly how many degrees C one fault adds to the chassis temperature it settles at, for
/// blaming a thermal consequence on the fault that heats the router most. Mirrors `apply`
/// and the thermal model in `fleet` (30 C for a total loss of cooling, ~20 C for a fully
/// busy CPU, 4 C for full links).
pub fn heat_c(kind: FaultKind, magnitude: f64, elapsed_s: f64) -> f64 {
    let ramp = (elapsed_s / 300.0).clamp(0.0, 1.0);
    match kind {
        FaultKind::HardwareTemperature => magnitude * ramp,
        FaultKind::HardwareFan => 30.0 * magnitude,
        FaultKind::HardwarePsu => 9.0 * magnitude + 5.0 * magnitude * ramp,
        FaultKind::CpuRunaway => 20.0 * magnitude * ramp.max(0.5),
        FaultKind::TrafficSpike => 4.0 * (magnitude - 1.0).min(2.0),
        _ => 0.0,
    }
}

/// Roughly how much CPU one fault adds (ratio), for blaming a starved control plane.
pub fn cpu_load(kind: FaultKind, magnitude: f64) -> f64 {
    match kind {
        FaultKind::CpuRunaway => magnitude,
        FaultKind::TrafficSpike => 0.4 * 0.3 * (magnitude - 1.0),
        FaultKind::RouteFlap | FaultKind::LinkFlap => 0.15 * magnitude,
        _ => 0.0,
    }
}

/// A fault and its bookkeeping.
#[derive(Debug, Clone, Serialize)]
pub struct FaultView {
    #[serde(flatten)]
    pub event: FaultEvent,
    pub active: bool,
    pub source: Source,
}

#[derive(Debug, Clone)]
pub struct ActiveFault {
    pub event: FaultEvent,
    pub router_index: u32,
    pub source: Source,
    /// The fault's number (the digits of its id): the order flapping faults draw in.
    pub seq: u64,
}

/// A change to the ground truth, for the sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultNotice {
    pub event: FaultEvent,
    pub source: Source,
    /// False when the fault started, true when it ended (then `event.end` is final).
    pub ended: bool,
}

impl FaultNotice {
    pub const fn phase(&self) -> &'static str {
        if self.ended { "ended" } else { "started" }
    }
}

/// What is needed to start a fault.
#[derive(Debug, Clone, Copy)]
pub struct NewFault<'a> {
    pub kind: FaultKind,
    pub router_index: u32,
    pub router: &'a str,
    /// Event time of the first affected sample, epoch ms.
    pub start: i64,
    pub duration_ms: i64,
    pub magnitude: f64,
    pub source: Source,
}

/// A fault that ended before its planned end keeps its slot until then: the random schedule
/// skips its router and kind, and a flapping kind keeps drawing its per-sample state, as if it
/// had run its course. So clearing, fixing or crashing a fault never changes which random
/// faults come later: a run with remediation sees the same schedule as one without.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    router_index: u32,
    kind: FaultKind,
    start: i64,
    planned_end: i64,
}

/// Active faults, recent history and the notices not yet handed to the sinks.
#[derive(Debug, Default)]
pub struct FaultBook {
    active: Vec<ActiveFault>,
    /// Faults ended early, until their planned end (see [`Slot`]).
    slots: Vec<Slot>,
    history: VecDeque<(FaultEvent, Source)>,
    notices: Vec<FaultNotice>,
    next_id: u64,
}

impl FaultBook {
    /// Starts a fault; its effects apply to samples with `start <= ts < end`.
    pub fn start(&mut self, f: NewFault<'_>) -> FaultView {
        let NewFault { kind, router_index, router, start, duration_ms, magnitude, source } = f;
        self.next_id += 1;
        let event = FaultEvent {
            id: format!("flt-{:06}", self.next_id),
            kind,
            router: router.to_owned(),
            start,
            end: start + duration_ms.max(1),
            magnitude,
            metrics: spec(kind).metrics.iter().map(|m| m.name().to_owned()).collect(),
        };
        self.notices.push(FaultNotice { event: event.clone(), source, ended: false });
        self.active.push(ActiveFault { event: event.clone(), router_index, source, seq: self.next_id });
        FaultView { event, active: true, source }
    }

    /// Ends the fault now (`end` becomes `at` if that is earlier than planned).
    pub fn end(&mut self, id: &str, at: i64) -> Option<FaultView> {
        let pos = self.active.iter().position(|f| f.event.id == id)?;
        Some(self.finish(pos, at))
    }

    /// Ends every fault whose planned end is at or before `ts`.
    pub fn expire(&mut self, ts: i64) {
        self.slots.retain(|s| s.planned_end > ts);
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].event.end <= ts {
                let end = self.active[i].event.end;
                self.finish(i, end);
            } else {
                i += 1;
            }
        }
    }

    /// Ends every fault on a router.
    pub fn end_router(&mut self, router_index: u32, at: i64) -> Vec<FaultView> {
        self.end_where(at, |f| f.router_index == router_index)
    }

    /// Ends every fault on routers at or above `size` (the fleet shrank).
    pub fn end_beyond(&mut self, size: u32, at: i64) -> Vec<FaultView> {
        self.end_where(at, |f| f.router_index >= size)
    }

    fn end_where(&mut self, at: i64, pred: impl Fn(&ActiveFault) -> bool) -> Vec<FaultView> {
        let mut ended = Vec::new();
        let mut i = 0;
        while i < self.active.len() {
            if pred(&self.active[i]) {
                ended.push(self.finish(i, at));
            } else {
                i += 1;
            }
        }
        ended
    }

    fn finish(&mut self, pos: usize, at: i64) -> FaultView {
        let ActiveFault { mut event, source, router_index, seq } = self.active.remove(pos);
        if at < event.end {
            // Kept in number order, as the active list is.
            let slot = Slot { seq, router_index, kind: event.kind, start: event.start, planned_end: event.end };
            let i = self.slots.partition_point(|s| s.seq < seq);
            self.slots.insert(i, slot);
        }
        event.end = event.end.min(at).max(event.start);
        self.notices.push(FaultNotice { event: event.clone(), source, ended: true });
        if self.history.len() == HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.history.push_back((event.clone(), source));
        FaultView { event, active: false, source }
    }

    pub fn active(&self) -> &[ActiveFault] {
        &self.active
    }

    pub fn has_active(&self, router_index: u32, kind: FaultKind) -> bool {
        self.active.iter().any(|f| f.router_index == router_index && f.event.kind == kind)
    }

    /// Whether the random schedule must skip this router and kind: a fault of the kind is
    /// active there, or one ended early and its planned time is not over yet, so that ending
    /// faults early never changes the random schedule.
    pub fn slot_taken(&self, router_index: u32, kind: FaultKind) -> bool {
        self.has_active(router_index, kind)
            || self.slots.iter().any(|s| s.router_index == router_index && s.kind == kind)
    }

    /// The active faults on a router.
    pub fn on_router(&self, router_index: u32) -> impl Iterator<Item = &ActiveFault> + '_ {
        self.active.iter().filter(move |f| f.router_index == router_index)
    }

    /// Every known fault: ended ones (oldest first), then active ones.
    pub fn all(&self) -> impl Iterator<Item = FaultView> + '_ {
        let ended = self.history.iter().map(|(e, s)| FaultView { event: e.clone(), active: false, source: *s });
        let active = self.active.iter().map(|f| FaultView { event: f.event.clone(), active: true, source: f.source });
        ended.chain(active)
    }

    pub fn get(&self, id: &str) -> Option<FaultView> {
        if let Some(f) = self.active.iter().find(|f| f.event.id == id) {
            return Some(FaultView { event: f.event.clone(), active: true, source: f.source });
        }
        let (event, source) = self.history.iter().rev().find(|(e, _)| e.id == id)?;
        Some(FaultView { event: event.clone(), active: false, source: *source })
    }

    /// The effects of the active faults, per router index, for samples at `ts`.
    pub fn effects(&self, ts: i64, rng: &mut ChaCha8Rng) -> HashMap<u32, Effects> {
        let mut map: HashMap<u32, Effects> = HashMap::new();
        // Flapping faults that ended early still draw, in fault order with the active ones, so
        // every other fault gets the draws it would have had (see `Slot`).
        let mut ended = self.slots.iter().filter(|s| flaps(s.kind) && s.start <= ts && ts < s.planned_end).peekable();
        for f in &self.active {
            if f.event.start <= ts && ts < f.event.end {
                if flaps(f.event.kind) {
                    while ended.next_if(|s| s.seq < f.seq).is_some() {
                        rng.random::<f64>();
                    }
                }
                let elapsed_s = (ts - f.event.start) as f64 / 1000.0;
                apply(f.event.kind, f.event.magnitude, elapsed_s, rng, map.entry(f.router_index).or_default());
            }
        }
        for _ in ended {
            rng.random::<f64>();
        }
        map
    }

    /// Hands over the ground-truth changes since the last call.
    pub fn take_notices(&mut self) -> Vec<FaultNotice> {
        std::mem::take(&mut self.notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_spec_in_order() {
        let kinds: Vec<_> = specs().iter().map(|s| s.kind).collect();
        assert_eq!(kinds, FaultKind::ALL);
        for s in specs() {
            let (lo, hi) = s.magnitude_limits;
            assert!(lo < s.default_magnitude && s.default_magnitude <= hi, "{:?}", s.kind);
            assert!(lo < s.random_magnitude.0 && s.random_magnitude.1 <= hi, "{:?}", s.kind);
            assert!(!s.metrics.is_empty());
        }
    }

    #[test]
    fn book_tracks_start_expiry_and_early_end() {
        let mut book = FaultBook::default();
        let new = |kind, router_index, router, duration_ms, source| NewFault {
            kind,
            router_index,
            router,
            start: 1000,
            duration_ms,
            magnitude: 0.5,
            source,
        };
        let a = book.start(new(FaultKind::CpuRunaway, 1, "rtr-000001", 5000, Source::Api));
        let b = book.start(new(FaultKind::MemoryLeak, 2, "rtr-000002", 60_000, Source::Schedule));
        assert_eq!(book.active().len(), 2);
        book.expire(5999);
        assert_eq!(book.active().len(), 2);
        book.expire(6000);
        assert_eq!(book.active().len(), 1);
        let ended = book.end(&b.event.id, 9000).unwrap();
        assert_eq!(ended.event.end, 9000);
        assert!(!ended.active);
        assert!(book.end(&b.event.id, 9000).is_none());
        let notices = book.take_notices();
        let phases: Vec<_> = notices.iter().map(|n| (n.phase(), n.event.id.clone())).collect();
        assert_eq!(
            phases,
            [
                ("started", a.event.id.clone()),
                ("started", b.event.id.clone()),
                ("ended", a.event.id.clone()),
                ("ended", b.event.id.clone()),
            ]
        );
        assert_eq!(book.get(&a.event.id).unwrap().event.end, 6000);
    }
}
