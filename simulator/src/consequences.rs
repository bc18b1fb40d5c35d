//! Consequences: what a fault left alone does to a router, as it would on a real one. They
//! follow from the router's state, not from the fault's kind, and each is blamed on the fault
//! that drove that state most:
//!
//! | consequence | when | what the telemetry shows | until |
//! |---|---|---|---|
//! | `process-crash` | memory in use reaches [`CRASH_MEM`] | the router reloads: [`RELOAD_S`] with no traffic and no sessions, then BGP re-establishes over 180 s with the CPU busy; memory back to its baseline; uptime and counters reset | the end of the reconvergence |
//! | `cpu-throttle` | chassis at or above [`THROTTLE_C`] | the CPU runs at [`THROTTLE_CLOCK`] of its clock: CPU utilisation rises by 1/0.6 for the same work | the chassis cools below [`RECOVER_C`] |
//! | `linecard-shutdown` | chassis at or above [`SHUTDOWN_C`] | [`SHED_SHARE`] of the line cards power off: traffic and their BGP sessions drop | the chassis cools below [`RECOVER_C`] |
//! | `psu-failure` | a `hardware-psu` fault of severity [`PSU_FAIL_SEVERITY`] or more left for [`PSU_FAIL_AFTER_S`] | the failing supply dies and the other cannot power the whole chassis: [`PSU_SHED_SHARE`] of the line cards are shed | the PSU fault ends (replaced, or `failover-psu`) |
//! | `bgp-hold-expiry` | CPU at or above [`PEGGED_CPU`] for [`HOLD_TIME_S`] (a runaway process, or a throttled CPU) | keepalives go unanswered and hold timers expire: [`HOLD_EXPIRY_DOWN`] of the sessions are down | CPU back below [`UNPEGGED_CPU`] |
//!
//! The crash ends the `memory-leak` and `cpu-runaway` faults on the router (a reload frees the
//! leaked memory and kills the runaway process); the other consequences leave their faults
//! running. Nothing here draws random numbers, so the same seed gives the same consequences.

use std::collections::{HashMap, VecDeque};

use routewatch_telemetry::{FaultKind, Metric};
use serde::{Deserialize, Serialize};

use crate::faults::{self, ActiveFault, Effects, FaultBook, HISTORY_LIMIT};
use crate::fleet::{BGP_CONVERGENCE_S, Fleet};

/// Memory in use (ratio) at which the routing process fails to allocate and crashes.
pub const CRASH_MEM: f64 = 0.99;
/// How long a router takes to reload after a crash: no forwarding, no sessions, seconds.
pub const RELOAD_S: f64 = 240.0;
/// Chassis temperature at which the CPU is throttled, degrees C.
pub const THROTTLE_C: f64 = 75.0;
/// Chassis temperature at which line cards are powered off to protect them, degrees C.
pub const SHUTDOWN_C: f64 = 85.0;
/// Below this the CPU runs at full clock again and shut line cards power back on, degrees C.
pub const RECOVER_C: f64 = 70.0;
/// Share of its clock a throttled CPU runs at.
pub const THROTTLE_CLOCK: f64 = 0.6;
/// Share of the line cards (and so of the traffic and BGP sessions) a shutdown takes out.
pub const SHED_SHARE: f64 = 0.5;
/// CPU (ratio) at which the control plane starves; sustained for [`HOLD_TIME_S`] the BGP hold
/// timers expire.
pub const PEGGED_CPU: f64 = 0.98;
/// The starved control plane recovers below this CPU.
pub const UNPEGGED_CPU: f64 = 0.9;
/// BGP hold time, seconds (the common default, three missed 60 s keepalives).
pub const HOLD_TIME_S: f64 = 180.0;
/// Share of the sessions down while the control plane is starved (they flap: some come back,
/// others time out).
pub const HOLD_EXPIRY_DOWN: f64 = 0.5;
/// A failing power supply at least this severe dies outright if left alone...
pub const PSU_FAIL_SEVERITY: f64 = 0.8;
/// ...this long after the fault started, seconds.
pub const PSU_FAIL_AFTER_S: f64 = 1800.0;
/// Share of the line cards shed when a supply dies: the chassis keeps what the remaining
/// supply can power (redundancy covers most of the load, not all of it when fully populated).
pub const PSU_SHED_SHARE: f64 = 0.25;

/// [`RELOAD_S`] in ms.
pub const RELOAD_MS: i64 = (RELOAD_S * 1000.0) as i64;
const CRASH_MS: i64 = ((RELOAD_S + BGP_CONVERGENCE_S) * 1000.0) as i64;

/// What a fault left alone led to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::VariantArray, strum::IntoStaticStr,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum ConsequenceKind {
    /// The routing process ran out of memory and crashed; the router reloaded.
    ProcessCrash,
    /// The chassis got hot enough for the CPU to be clocked down.
    CpuThrottle,
    /// The chassis got hot enough for line cards to be powered off.
    LinecardShutdown,
    /// A failing power supply died; line cards were shed to fit the remaining power.
    PsuFailure,
    /// A starved control plane missed keepalives; BGP hold timers expired.
    BgpHoldExpiry,
}

impl ConsequenceKind {
    /// The wire name (`process-crash`).
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The metrics it moves.
    pub const fn metrics(self) -> &'static [Metric] {
        use Metric::*;
        match self {
            ConsequenceKind::ProcessCrash => &[MemUtil, CpuUtil, RxBps, TxBps, BgpUp],
            ConsequenceKind::CpuThrottle => &[CpuUtil],
            ConsequenceKind::LinecardShutdown | ConsequenceKind::PsuFailure => &[RxBps, TxBps, BgpUp],
            ConsequenceKind::BgpHoldExpiry => &[BgpUp],
        }
    }
}

/// One consequence, as published in the ground truth (REST `GET /consequences`, the
/// `router-faults` topic and the `NAME.consequences.jsonl` file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "consequence")]
pub struct Consequence {
    /// Unique id (`csq-000001`).
    pub id: String,
    pub kind: ConsequenceKind,
    pub router: String,
    /// The fault blamed for it; absent when no fault was active (it never is on its own).
    pub fault: Option<String>,
    pub fault_kind: Option<FaultKind>,
    /// Event time of the first sample that shows it, ms since the Unix epoch.
    pub start: i64,
    /// Event time of the first sample free of it; absent while it lasts.
    pub end: Option<i64>,
    /// What set it off, e.g. `mem_util 0.991 >= 0.99`.
    pub trigger: String,
    /// Wire names of the metrics it moves.
    pub metrics: Vec<String>,
}

/// A change to the consequence ground truth, for the sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsequenceNotice {
    pub event: Consequence,
    /// False when it started, true when it ended (then `event.end` is set).
    pub ended: bool,
}

impl ConsequenceNotice {
    pub const fn phase(&self) -> &'static str {
        if self.ended { "ended" } else { "started" }
    }
}

#[derive(Debug, Clone)]
struct Active {
    event: Consequence,
    router_index: u32,
}

/// What a tick's checks started that the engine must carry out: a crash reboots the router.
#[derive(Debug, Clone, PartialEq)]
pub struct Crash {
    pub router_index: u32,
    /// The first sample of the reload.
    pub at: i64,
}

/// Active consequences, recent history and the notices not yet handed to the sinks.
#[derive(Debug, Default)]
pub struct ConsequenceBook {
    active: Vec<Active>,
    history: VecDeque<Consequence>,
    notices: Vec<ConsequenceNotice>,
    /// Routers whose CPU has been pegged since this event time.
    pegged_since: HashMap<u32, i64>,
    next_id: u64,
}

impl ConsequenceBook {
    /// Checks every router after the sample at `ts`; what starts or ends does so at `at`, the
    /// next sample. Returns the crashes to carry out.
    pub fn update(&mut self, ts: i64, at: i64, fleet: &Fleet, faults: &FaultBook) -> Vec<Crash> {
        // Crashes run their fixed course; PSU failures last as long as their fault.
        let mut i = 0;
        while i < self.active.len() {
            let c = &self.active[i];
            let over = match c.event.kind {
                ConsequenceKind::ProcessCrash => c.event.start + CRASH_MS <= at,
                ConsequenceKind::PsuFailure => {
                    !c.event.fault.as_ref().is_some_and(|id| faults.active().iter().any(|f| &f.event.id == id))
                }
                _ => false,
            };
            if over {
                let end = match c.event.kind {
                    ConsequenceKind::ProcessCrash => c.event.start + CRASH_MS,
                    _ => at,
                };
                self.finish(i, end);
            } else {
                i += 1;
            }
        }
        for f in faults.active() {
            let due = f.event.start + (PSU_FAIL_AFTER_S * 1000.0) as i64;
            if f.event.kind == FaultKind::HardwarePsu
                && f.event.magnitude >= PSU_FAIL_SEVERITY
                && due <= at
                && at < f.event.end
                && !self.is_active(f.router_index, ConsequenceKind::PsuFailure)
            {
                let trigger =
                    format!("power supply of severity {} failing for {PSU_FAIL_AFTER_S} s", f.event.magnitude);
                self.start(ConsequenceKind::PsuFailure, f.router_index, fleet, Some(f), at, trigger);
            }
        }

        let mut crashes = Vec::new();
        for index in 0..fleet.len() as u32 {
            let Some(v) = fleet.vitals(index) else { continue };
            if v.mem >= CRASH_MEM && !self.is_active(index, ConsequenceKind::ProcessCrash) {
                let cause =
                    blame(
                        faults,
                        index,
                        |f| if f.event.kind == FaultKind::MemoryLeak { f.event.magnitude } else { 0.0 },
                    );
                let trigger = format!("mem_util {:.3} >= {CRASH_MEM}", v.mem);
                self.start(ConsequenceKind::ProcessCrash, index, fleet, cause, at, trigger);
                crashes.push(Crash { router_index: index, at });
            }
            self.thermal(index, v.temp_c, at, fleet, faults);
            self.control_plane(index, v.cpu, ts, at, fleet, faults);
        }
        crashes
    }

    fn thermal(&mut self, index: u32, temp_c: f64, at: i64, fleet: &Fleet, faults: &FaultBook) {
        for (kind, limit) in
            [(ConsequenceKind::CpuThrottle, THROTTLE_C), (ConsequenceKind::LinecardShutdown, SHUTDOWN_C)]
        {
            let active = self.position(index, kind);
            match active {
                None if temp_c >= limit => {
                    let cause = blame(faults, index, |f| {
                        faults::heat_c(f.event.kind, f.event.magnitude, (at - f.event.start) as f64 / 1000.0)
                    });
                    self.start(kind, index, fleet, cause, at, format!("temp_c {temp_c:.1} >= {limit}"));
                }
                Some(i) if temp_c < RECOVER_C => {
                    self.finish(i, at);
                }
                _ => {}
            }
        }
    }

    fn control_plane(&mut self, index: u32, cpu: f64, ts: i64, at: i64, fleet: &Fleet, faults: &FaultBook) {
        if cpu >= PEGGED_CPU {
            let since = *self.pegged_since.entry(index).or_insert(ts);
            if (ts - since) as f64 >= HOLD_TIME_S * 1000.0 && !self.is_active(index, ConsequenceKind::BgpHoldExpiry) {
                let cause = blame(faults, index, |f| faults::cpu_load(f.event.kind, f.event.magnitude));
                let trigger = format!("cpu_util >= {PEGGED_CPU} for {HOLD_TIME_S} s");
                self.start(ConsequenceKind::BgpHoldExpiry, index, fleet, cause, at, trigger);
            }
            return;
        }
        self.pegged_since.remove(&index);
        if cpu < UNPEGGED_CPU
            && let Some(i) = self.position(index, ConsequenceKind::BgpHoldExpiry)
        {
            self.finish(i, at);
        }
    }

    fn start(
        &mut self,
        kind: ConsequenceKind,
        router_index: u32,
        fleet: &Fleet,
        cause: Option<&ActiveFault>,
        at: i64,
        trigger: String,
    ) {
        self.next_id += 1;
        let router = fleet.profile(router_index).map(|p| p.id.clone()).unwrap_or_default();
        let event = Consequence {
            id: format!("csq-{:06}", self.next_id),
            kind,
            router,
            fault: cause.map(|f| f.event.id.clone()),
            fault_kind: cause.map(|f| f.event.kind),
            start: at,
            end: None,
            trigger,
            metrics: kind.metrics().iter().map(|m| m.name().to_owned()).collect(),
        };
        tracing::debug!(id = %event.id, kind = kind.name(), router = %event.router, "consequence");
        self.notices.push(ConsequenceNotice { event: event.clone(), ended: false });
        self.active.push(Active { event, router_index });
    }

    fn finish(&mut self, pos: usize, end: i64) {
        let mut event = self.active.remove(pos).event;
        event.end = Some(end.max(event.start));
        self.notices.push(ConsequenceNotice { event: event.clone(), ended: true });
        if self.history.len() == HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.history.push_back(event);
    }

    fn position(&self, router_index: u32, kind: ConsequenceKind) -> Option<usize> {
        self.active.iter().position(|c| c.router_index == router_index && c.event.kind == kind)
    }

    pub fn is_active(&self, router_index: u32, kind: ConsequenceKind) -> bool {
        self.position(router_index, kind).is_some()
    }

    /// When the router is up again, if it is down reloading after a crash at `ts`.
    pub fn reload_until(&self, router_index: u32, ts: i64) -> Option<i64> {
        self.active
            .iter()
            .filter(|c| c.router_index == router_index && c.event.kind == ConsequenceKind::ProcessCrash)
            .map(|c| c.event.start + RELOAD_MS)
            .find(|&up| ts < up)
    }

    /// Ends every consequence on routers at or above `size` (the fleet shrank).
    pub fn end_beyond(&mut self, size: u32, at: i64) {
        self.pegged_since.retain(|&i, _| i < size);
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].router_index >= size {
                self.finish(i, at);
            } else {
                i += 1;
            }
        }
    }

    /// Adds what the active consequences do to the samples at `ts`.
    pub fn effects_into(&self, ts: i64, map: &mut HashMap<u32, Effects>) {
        for c in self.active.iter().filter(|c| c.event.start <= ts) {
            let fx = map.entry(c.router_index).or_default();
            match c.event.kind {
                ConsequenceKind::ProcessCrash => {
                    if ts < c.event.start + RELOAD_MS {
                        fx.traffic_mul = 0.0;
                        fx.bgp_down_frac = 1.0;
                    }
                }
                ConsequenceKind::CpuThrottle => fx.cpu_clock = fx.cpu_clock.min(THROTTLE_CLOCK),
                ConsequenceKind::LinecardShutdown | ConsequenceKind::PsuFailure => {
                    let share = if c.event.kind == ConsequenceKind::PsuFailure { PSU_SHED_SHARE } else { SHED_SHARE };
                    fx.traffic_mul *= 1.0 - share;
                    fx.bgp_down_frac = (fx.bgp_down_frac + share).min(1.0);
                }
                ConsequenceKind::BgpHoldExpiry => {
                    fx.bgp_down_frac = (fx.bgp_down_frac + HOLD_EXPIRY_DOWN).min(1.0);
                }
            }
        }
    }

    /// The consequences lasting now.
    pub fn active(&self) -> impl Iterator<Item = &Consequence> + '_ {
        self.active.iter().map(|c| &c.event)
    }

    /// Active consequences on a router.
    pub fn on_router(&self, router_index: u32) -> impl Iterator<Item = &Consequence> + '_ {
        self.active.iter().filter(move |c| c.router_index == router_index).map(|c| &c.event)
    }

    /// Every known consequence: ended ones (the last 10,000, oldest first), then active ones.
    pub fn all(&self) -> impl Iterator<Item = &Consequence> + '_ {
        self.history.iter().chain(self.active.iter().map(|c| &c.event))
    }

    pub fn take_notices(&mut self) -> Vec<ConsequenceNotice> {
        std::mem::take(&mut self.notices)
    }
}

/// The active fault on the router that scores highest (the earliest on a tie), if any scores
/// above zero.
fn blame(faults: &FaultBook, router_index: u32, score: impl Fn(&ActiveFault) -> f64) -> Option<&ActiveFault> {
    let mut best: Option<(&ActiveFault, f64)> = None;
    for f in faults.on_router(router_index) {
        let s = score(f);
        if s > 0.0 && best.is_none_or(|(_, b)| s > b) {
            best = Some((f, s));
        }
    }
    best.map(|(f, _)| f)
}

#[cfg(test)]
mod tests {
    use strum::VariantArray;

    use super::*;

    #[test]
    fn names_are_the_serde_names() {
        for kind in ConsequenceKind::VARIANTS {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name());
        }
    }
}
