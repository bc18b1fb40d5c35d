//! Remediation actions (`POST /routers/{id}/actions`): what an operator, or routewatch's
//! self-healing, can do to a router. Each fixes the fault kinds it would really fix, after a
//! realistic delay, and nothing else; every action and its outcome is ground truth.
//!
//! The action names come from [`ActionKind`] alone (serde and strum derive them), so the API,
//! its error messages and `GET /actions/catalog` cannot drift from the code.

use std::collections::{HashMap, VecDeque};

use routewatch_telemetry::FaultKind;
use serde::{Deserialize, Serialize};

use crate::faults::{Effects, HISTORY_LIMIT};

/// Largest `POST /routers/{id}/actions` body, bytes (larger ones get 413).
pub const MAX_BODY_BYTES: usize = 4096;
/// Longest `reason`, bytes.
pub const MAX_REASON_BYTES: usize = 512;
/// Longest `requested_by`, bytes.
pub const MAX_REQUESTED_BY_BYTES: usize = 128;

/// What can be done to a router: the vocabulary shared with routewatch's self-healing.
pub use routewatch_telemetry::Action as ActionKind;

/// What an action does: how long it takes, what it fixes, what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ActionSpec {
    pub action: ActionKind,
    /// From the request to the fix, seconds of event time.
    pub delay_s: f64,
    /// The fault kinds it ends on the router, if active when it completes.
    pub fixes: &'static [FaultKind],
    /// What it does besides, for the README and the catalog.
    pub side_effects: &'static str,
}

/// What each action does in the simulator: its delay, the faults it fixes, its side effects.
pub trait ActionSpecs: Copy {
    /// The action's spec.
    fn spec(self) -> ActionSpec;

    /// Whether it fixes faults of `kind`.
    fn fixes(self, kind: FaultKind) -> bool {
        self.spec().fixes.contains(&kind)
    }

    /// From the request to the fix, ms of event time.
    fn delay_ms(self) -> i64 {
        (self.spec().delay_s * 1000.0) as i64
    }
}

impl ActionSpecs for ActionKind {
    fn spec(self) -> ActionSpec {
        use FaultKind::*;
        let (delay_s, fixes, side_effects): (f64, &'static [FaultKind], &'static str) = match self {
            // Stopping bgpd/rpd, starting it and reloading its configuration takes one to two
            // minutes on most platforms; graceful restart keeps forwarding meanwhile.
            ActionKind::RestartProcess => (
                90.0,
                &[MemoryLeak, CpuRunaway],
                "every BGP session drops while the process restarts and re-establishes over 180 s after; \
                 forwarding continues (graceful restart)",
            ),
            ActionKind::ResetInterface => {
                (15.0, &[LinkFlap], "the interface is down for the reset (shorter than a sample)")
            }
            ActionKind::DampenPeer => (30.0, &[RouteFlap], "the flapping peer's routes are suppressed"),
            ActionKind::FailoverPsu => (20.0, &[HardwarePsu], "none: the chassis runs on the redundant supply"),
            // IGP and BGP convergence across the neighbours.
            ActionKind::RerouteTraffic => (120.0, &[TrafficSpike, PacketLoss], "the traffic is carried by other paths"),
            ActionKind::BoostFans => (60.0, &[HardwareTemperature], "louder fans, more power drawn"),
            // Dispatch, access and a hot swap in a staffed data centre.
            ActionKind::ReplaceFanTray => (3600.0, &[HardwareFan], "none: fan trays are hot-swappable"),
        };
        ActionSpec { action: self, delay_s, fixes, side_effects }
    }
}

/// The body of `POST /routers/{id}/actions`. The action is a string here so that an unknown
/// one is refused with the list of valid ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// An [`ActionKind`] wire name.
    pub action: String,
    /// Why (for the audit: an incident id, a ticket); at most [`MAX_REASON_BYTES`].
    pub reason: Option<String>,
    /// Who asked (a policy, an operator); at most [`MAX_REQUESTED_BY_BYTES`].
    pub requested_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionStatus {
    /// Accepted, not complete yet.
    Running,
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It ended at least one fault.
    Fixed,
    /// Nothing it can fix was active on the router when it completed.
    NoEffect,
}

/// A fault an action ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixedFault {
    pub id: String,
    pub kind: FaultKind,
}

/// One action, as `POST` answers it and as the ground truth publishes it (REST
/// `GET /actions`, the `router-faults` topic and the `NAME.actions.jsonl` file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "action")]
pub struct ActionRecord {
    /// Unique id (`act-000001`).
    pub id: String,
    pub action: ActionKind,
    pub router: String,
    /// Event time it starts: the next sample after the request, ms since the Unix epoch.
    pub requested_at: i64,
    /// Event time it completes (`requested_at` + the action's delay); its fix shows from the
    /// first sample at or after it.
    pub completes_at: i64,
    pub status: ActionStatus,
    /// Absent while running.
    pub outcome: Option<Outcome>,
    /// The faults it ended (empty unless the outcome is `fixed`).
    pub fixed: Vec<FixedFault>,
    pub reason: Option<String>,
    pub requested_by: Option<String>,
}

/// A change to the action ground truth, for the sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionNotice {
    pub record: ActionRecord,
}

impl ActionNotice {
    pub const fn phase(&self) -> &'static str {
        match self.record.status {
            ActionStatus::Running => "requested",
            ActionStatus::Completed => "completed",
        }
    }
}

/// A running action and the router it acts on.
#[derive(Debug, Clone)]
pub struct RunningAction {
    pub record: ActionRecord,
    pub router_index: u32,
}

/// What is needed to start an action.
#[derive(Debug, Clone)]
pub struct NewAction {
    pub action: ActionKind,
    pub router_index: u32,
    pub router: String,
    pub at: i64,
    pub reason: Option<String>,
    pub requested_by: Option<String>,
}

fn restarting(a: &RunningAction, ts: i64) -> bool {
    a.record.action == ActionKind::RestartProcess && a.record.requested_at <= ts && ts < a.record.completes_at
}

/// Running actions, recent history and the notices not yet handed to the sinks.
#[derive(Debug, Default)]
pub struct ActionBook {
    running: Vec<RunningAction>,
    history: VecDeque<ActionRecord>,
    notices: Vec<ActionNotice>,
    next_id: u64,
}

impl ActionBook {
    pub fn start(&mut self, new: NewAction) -> ActionRecord {
        self.next_id += 1;
        let record = ActionRecord {
            id: format!("act-{:06}", self.next_id),
            action: new.action,
            router: new.router,
            requested_at: new.at,
            completes_at: new.at + new.action.delay_ms(),
            status: ActionStatus::Running,
            outcome: None,
            fixed: Vec::new(),
            reason: new.reason,
            requested_by: new.requested_by,
        };
        self.notices.push(ActionNotice { record: record.clone() });
        self.running.push(RunningAction { record: record.clone(), router_index: new.router_index });
        record
    }

    /// Takes the actions that complete at or before `ts`, in completion order.
    pub fn due(&mut self, ts: i64) -> Vec<RunningAction> {
        let mut due: Vec<RunningAction> = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].record.completes_at <= ts {
                due.push(self.running.remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|a| a.record.completes_at);
        due
    }

    /// Records a due action as completed, with the faults it ended.
    pub fn complete(&mut self, action: RunningAction, fixed: Vec<FixedFault>) -> ActionRecord {
        let mut record = action.record;
        record.status = ActionStatus::Completed;
        record.outcome = Some(if fixed.is_empty() { Outcome::NoEffect } else { Outcome::Fixed });
        record.fixed = fixed;
        self.notices.push(ActionNotice { record: record.clone() });
        if self.history.len() == HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.history.push_back(record.clone());
        record
    }

    pub fn running(&self) -> &[RunningAction] {
        &self.running
    }

    /// Whether this action is already running on the router.
    pub fn is_running(&self, router_index: u32, action: ActionKind) -> bool {
        self.running.iter().any(|a| a.router_index == router_index && a.record.action == action)
    }

    /// When the routing process is back, if it is restarting on the router at `ts`.
    pub fn restart_until(&self, router_index: u32, ts: i64) -> Option<i64> {
        self.running.iter().find(|a| a.router_index == router_index && restarting(a, ts)).map(|a| a.record.completes_at)
    }

    /// Adds what the running actions do to the samples at `ts`: a restarting routing process
    /// holds no BGP sessions.
    pub fn effects_into(&self, ts: i64, map: &mut HashMap<u32, Effects>) {
        for a in self.running.iter().filter(|a| restarting(a, ts)) {
            map.entry(a.router_index).or_default().bgp_down_frac = 1.0;
        }
    }

    /// Every known action: completed ones (the last 10,000, oldest first), then running ones.
    pub fn all(&self) -> impl Iterator<Item = &ActionRecord> + '_ {
        self.history.iter().chain(self.running.iter().map(|a| &a.record))
    }

    pub fn get(&self, id: &str) -> Option<&ActionRecord> {
        self.all().find(|a| a.id == id)
    }

    pub fn take_notices(&mut self) -> Vec<ActionNotice> {
        std::mem::take(&mut self.notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_one_enum_and_agree_with_serde() {
        assert_eq!(ActionKind::all().len(), 7);
        for &a in ActionKind::all() {
            assert_eq!(serde_json::to_value(a).unwrap(), a.name());
            assert_eq!(ActionKind::from_name(a.name()), Some(a));
            assert!(a.spec().delay_s > 0.0 && !a.spec().fixes.is_empty(), "{a:?}");
        }
        assert_eq!(ActionKind::from_name("reboot"), None);
    }

    #[test]
    fn every_fault_kind_has_exactly_one_fix() {
        for kind in FaultKind::ALL {
            let fixers: Vec<_> = ActionKind::all().iter().filter(|a| a.fixes(kind)).collect();
            assert_eq!(fixers.len(), 1, "{kind:?}: {fixers:?}");
        }
    }
}
