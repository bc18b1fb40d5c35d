//! Planned changes (realistic profile): traffic migrations, maintenance windows and config
//! pushes. They are benign but move metrics like faults do, and they are published as ground
//! truth ([`PlannedChange`]) so that alarms on them can be counted apart.

use std::collections::{HashMap, VecDeque};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use routewatch_telemetry::{ChangeKind, Metric, PlannedChange};

use crate::faults::{Effects, HISTORY_LIMIT};
use crate::fleet::Profile;

/// How often, how long and how strong each kind of change is.
#[derive(Debug, Clone, Copy)]
pub struct ChangeSpec {
    pub kind: ChangeKind,
    /// Changes per router per day.
    pub per_router_day: f64,
    pub duration_s: (f64, f64),
    pub magnitude: (f64, f64),
    pub metrics: &'static [Metric],
}

use Metric::*;

/// Rates: Markopoulou et al. 2008 found 20% of IS-IS link failures in Sprint's backbone
/// inside scheduled maintenance windows; one window per router a month gives our fleet about
/// that share beside the faults' default rate. Config pushes are the most frequent change
/// (a few a week per router); migrations are rarer and last hours.
pub const SPECS: [ChangeSpec; 3] = [
    ChangeSpec {
        kind: ChangeKind::TrafficMigration,
        per_router_day: 1.0 / 50.0,
        duration_s: (6.0 * 3600.0, 48.0 * 3600.0),
        // The traffic multiplier moving load onto the router; half the migrations move it off
        // instead (the reciprocal, 0.4 to 0.71).
        magnitude: (1.4, 2.5),
        metrics: &[RxBps, TxBps, CpuUtil, LatencyMs, TempC, LossRatio],
    },
    ChangeSpec {
        kind: ChangeKind::Maintenance,
        per_router_day: 1.0 / 30.0,
        duration_s: (1800.0, 7200.0),
        magnitude: (0.8, 0.99),
        metrics: &[RxBps, TxBps, BgpUp, CpuUtil, LatencyMs, TempC, FanRpm, LossRatio],
    },
    ChangeSpec {
        kind: ChangeKind::ConfigPush,
        per_router_day: 0.3,
        duration_s: (120.0, 300.0),
        magnitude: (0.05, 0.5),
        metrics: &[CpuUtil, BgpUp, TempC],
    },
];

pub fn spec(kind: ChangeKind) -> &'static ChangeSpec {
    SPECS.iter().find(|s| s.kind == kind).expect("every kind has a spec")
}

/// Adds one change's effect at `elapsed_s` into it, `left_s` before its end.
pub fn apply(kind: ChangeKind, magnitude: f64, elapsed_s: f64, left_s: f64, fx: &mut Effects) {
    match kind {
        ChangeKind::TrafficMigration => {
            // Ramps over ten minutes at each end, as prefixes are moved a batch at a time.
            let ramp = (elapsed_s / 600.0).min(left_s / 600.0).clamp(0.0, 1.0);
            fx.traffic_mul *= 1.0 + (magnitude - 1.0) * ramp;
        }
        ChangeKind::Maintenance => {
            fx.traffic_mul *= 1.0 - magnitude;
            fx.bgp_down_frac = 1.0;
        }
        ChangeKind::ConfigPush => {
            fx.cpu_add += 0.15;
            // The commit resets some sessions for the first minute.
            if elapsed_s < 60.0 {
                fx.bgp_down_frac = (fx.bgp_down_frac + magnitude).min(1.0);
            }
        }
    }
}

/// A change to the planned-change ground truth, for the sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeNotice {
    pub event: PlannedChange,
    /// False when scheduled, true when ended.
    pub ended: bool,
}

#[derive(Debug, Clone)]
pub struct ActiveChange {
    pub event: PlannedChange,
    pub router_index: u32,
}

/// Scheduled and running changes, recent history, and notices not yet handed to the sinks.
#[derive(Debug, Default)]
pub struct ChangeBook {
    active: Vec<ActiveChange>,
    history: VecDeque<PlannedChange>,
    notices: Vec<ChangeNotice>,
    next_id: u64,
}

impl ChangeBook {
    /// Draws the changes scheduled during the last `dt_ms`: a Poisson number per kind for the
    /// fleet. Maintenance goes into the next local night (01:00 to 04:00); the others start
    /// now. A router has at most one change of a kind at a time.
    pub fn schedule(&mut self, rng: &mut ChaCha8Rng, ts: i64, dt_ms: i64, profiles: &[Profile]) {
        if profiles.is_empty() {
            return;
        }
        for spec in &SPECS {
            let expected = spec.per_router_day * profiles.len() as f64 * dt_ms as f64 / 86_400_000.0;
            let count = Poisson::new(expected).map(|p| p.sample(rng) as u64).unwrap_or(0);
            for _ in 0..count {
                let index = rng.random_range(0..profiles.len() as u32);
                let profile = &profiles[index as usize];
                let duration_s = rng.random_range(spec.duration_s.0..=spec.duration_s.1).round();
                let mut magnitude = rng.random_range(spec.magnitude.0..=spec.magnitude.1);
                if spec.kind == ChangeKind::TrafficMigration && rng.random::<bool>() {
                    // As many migrations off as on.
                    magnitude = 1.0 / magnitude;
                }
                let start = match spec.kind {
                    ChangeKind::Maintenance => {
                        next_local_night(ts, profile.utc_offset_h) + rng.random_range(0..3 * 3_600_000)
                    }
                    _ => ts,
                };
                if self.active.iter().any(|c| c.router_index == index && c.event.kind == spec.kind) {
                    continue;
                }
                self.start(spec, index, &profile.id, start, (duration_s * 1000.0) as i64, magnitude);
            }
        }
    }

    fn start(
        &mut self,
        spec: &ChangeSpec,
        router_index: u32,
        router: &str,
        start: i64,
        duration_ms: i64,
        magnitude: f64,
    ) {
        self.next_id += 1;
        let event = PlannedChange {
            id: format!("chg-{:06}", self.next_id),
            kind: spec.kind,
            router: router.to_owned(),
            start,
            end: start + duration_ms.max(1),
            magnitude: (magnitude * 1000.0).round() / 1000.0,
            metrics: spec.metrics.iter().map(|m| m.name().to_owned()).collect(),
        };
        self.notices.push(ChangeNotice { event: event.clone(), ended: false });
        self.active.push(ActiveChange { event, router_index });
    }

    /// Ends every change whose end is at or before `ts`; returns the routers whose maintenance
    /// ended (they reboot).
    pub fn expire(&mut self, ts: i64) -> Vec<(u32, i64)> {
        let mut rebooted = Vec::new();
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].event.end <= ts {
                let change = self.active.remove(i);
                if change.event.kind == ChangeKind::Maintenance {
                    rebooted.push((change.router_index, change.event.end));
                }
                self.finish(change.event);
            } else {
                i += 1;
            }
        }
        rebooted
    }

    /// Ends every change on routers at or above `size` (the fleet shrank), or all of them.
    pub fn end_beyond(&mut self, size: u32, at: i64) {
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].router_index >= size {
                let mut change = self.active.remove(i);
                change.event.end = change.event.end.min(at).max(change.event.start);
                self.finish(change.event);
            } else {
                i += 1;
            }
        }
    }

    fn finish(&mut self, event: PlannedChange) {
        self.notices.push(ChangeNotice { event: event.clone(), ended: true });
        if self.history.len() == HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.history.push_back(event);
    }

    /// Adds the effects of the changes running at `ts` to `map`.
    pub fn effects_into(&self, ts: i64, map: &mut HashMap<u32, Effects>) {
        for c in &self.active {
            if c.event.start <= ts && ts < c.event.end {
                let elapsed_s = (ts - c.event.start) as f64 / 1000.0;
                let left_s = (c.event.end - ts) as f64 / 1000.0;
                apply(c.event.kind, c.event.magnitude, elapsed_s, left_s, map.entry(c.router_index).or_default());
            }
        }
    }

    pub fn active(&self) -> &[ActiveChange] {
        &self.active
    }

    /// Every known change: ended ones (oldest first), then scheduled or running ones.
    pub fn all(&self) -> impl Iterator<Item = &PlannedChange> + '_ {
        self.history.iter().chain(self.active.iter().map(|c| &c.event))
    }

    pub fn take_notices(&mut self) -> Vec<ChangeNotice> {
        std::mem::take(&mut self.notices)
    }
}

/// 01:00 local time on the night after `ts` (or tonight, if it is not yet 01:00).
fn next_local_night(ts: i64, utc_offset_h: f64) -> i64 {
    let offset_ms = (utc_offset_h * 3_600_000.0) as i64;
    let day_ms = 86_400_000;
    let local = ts + offset_ms;
    let mut night = local.div_euclid(day_ms) * day_ms + 3_600_000;
    if night <= local {
        night += day_ms;
    }
    night - offset_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_goes_into_the_next_local_night() {
        // 2025-01-06 12:00 UTC in UTC+1: the next 01:00 local is 2025-01-07 00:00 UTC.
        let noon = 1_736_121_600_000 + 12 * 3_600_000;
        assert_eq!(next_local_night(noon, 1.0), 1_736_121_600_000 + 24 * 3_600_000);
        // 00:30 local is before tonight's 01:00.
        let half_past = 1_736_121_600_000 + 1_800_000;
        assert_eq!(next_local_night(half_past, 0.0), 1_736_121_600_000 + 3_600_000);
    }

    #[test]
    fn migrations_ramp_in_and_out_and_maintenance_drains() {
        let mut fx = Effects::default();
        apply(ChangeKind::TrafficMigration, 2.0, 300.0, 10_000.0, &mut fx);
        assert!((fx.traffic_mul - 1.5).abs() < 1e-12);
        let mut fx = Effects::default();
        apply(ChangeKind::TrafficMigration, 2.0, 5000.0, 60.0, &mut fx);
        assert!((fx.traffic_mul - 1.1).abs() < 1e-12);
        let mut fx = Effects::default();
        apply(ChangeKind::Maintenance, 0.9, 10.0, 10.0, &mut fx);
        assert!((fx.traffic_mul - 0.1).abs() < 1e-12 && fx.bgp_down_frac == 1.0);
    }
}
