//! Scoring: anomalies against the ground truth, per detector and fault kind.
//!
//! * An anomaly **matches** a fault if it is on the fault's router, on one of the metrics the
//!   fault moves (`FaultEvent::metrics`), and at a time in `[start, end + grace samples]`.
//! * **Alarms.** The anomalies of one (router, metric) at most `merge_gap` samples apart form
//!   one alarm. An alarm that contains a matching anomaly is a true alarm (for the kind of the
//!   fault it matched). One on a router during one of its faults (within the same window) but
//!   on a metric the fault does not list is a side effect: neither true nor false. Every other
//!   alarm is a false alarm.
//! * **Recall** of a kind: faults of that kind with at least one matching anomaly, over all
//!   faults of that kind. **Delay**: samples from the fault's start to its first matching
//!   anomaly (0 = flagged on the first faulty sample); the median is over detected faults.
//! * **Precision** of a kind: true alarms for that kind over those plus the false alarms on
//!   the kind's metrics (the alarms an operator would have to look at for this kind). The
//!   overall precision counts all true and false alarms.
//! * **Planned changes** (realistic profile): an alarm that matches no fault but is on a
//!   router during one of its planned changes (same window: start to end + grace), on a
//!   metric the change moves, is an alarm on a planned change. It is neither true nor false:
//!   it is counted on its own, per change kind, with the changes that drew at least one.
//! * **False alarms per router-day**: all false alarms over routers x scored days.
//! * Only the last `eval_days` are scored: faults that start there, alarms that start there.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use anyhow::{Context, Result};
use routewatch_engine::replay::{InputFormat, ReplayOptions, replay};
use routewatch_runtime::{Limits, Runtime, RuntimeConfig};
use routewatch_telemetry::{AnomalyEvent, ChangeKind, FaultEvent, FaultKind, PlannedChange};

use crate::{QualityArgs, dataset, report};

/// One anomaly, reduced to what matching needs.
#[derive(Debug, Clone)]
pub struct Hit {
    pub router: String,
    pub metric: String,
    pub ts: i64,
}

/// Per fault kind (or overall) figures.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub faults: usize,
    pub detected: usize,
    pub true_alarms: usize,
    pub false_alarms: usize,
    pub delays: Vec<i64>,
}

impl Figures {
    pub fn recall(&self) -> f64 {
        ratio(self.detected, self.faults)
    }
    pub fn precision(&self) -> f64 {
        ratio(self.true_alarms, self.true_alarms + self.false_alarms)
    }
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
    }
    pub fn median_delay(&self) -> Option<f64> {
        if self.delays.is_empty() {
            return None;
        }
        let mut d = self.delays.clone();
        d.sort_unstable();
        let n = d.len();
        Some(if n % 2 == 1 { d[n / 2] as f64 } else { (d[n / 2 - 1] + d[n / 2]) as f64 / 2.0 })
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Alarms on one kind of planned change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlannedFigures {
    /// Changes of the kind that start in the scored window.
    pub changes: usize,
    /// Of those, the ones with at least one alarm.
    pub alarmed: usize,
    /// Alarms explained by a change of this kind (any change, also one that started earlier).
    pub alarms: usize,
}

/// A detector's (or a union's) scores.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub name: String,
    pub anomalies: usize,
    pub per_kind: BTreeMap<&'static str, Figures>,
    pub overall: Figures,
    pub false_per_router_day: f64,
    /// Alarms on planned changes, per change kind; neither true nor false alarms.
    pub planned: BTreeMap<&'static str, PlannedFigures>,
    pub planned_per_router_day: f64,
}

impl Evaluation {
    /// All alarms on planned changes.
    pub fn planned_alarms(&self) -> usize {
        self.planned.values().map(|p| p.alarms).sum()
    }
}

pub struct Window {
    pub from: i64,
    pub to: i64,
    pub interval_ms: i64,
    pub grace: i64,
    pub merge_gap: i64,
    pub router_days: f64,
}

/// Scores `hits` against `faults`, counting alarms on `changes` apart.
pub fn evaluate(name: &str, hits: &[Hit], faults: &[FaultEvent], changes: &[PlannedChange], w: &Window) -> Evaluation {
    // Every fault explains alarms, also one that started before the window and is still on
    // (a leak started yesterday is no false alarm today); only those that start in the window
    // are counted for recall and delay.
    let mut by_router: HashMap<&str, Vec<&FaultEvent>> = HashMap::new();
    for f in faults {
        by_router.entry(f.router.as_str()).or_default().push(f);
    }
    let faults: Vec<&FaultEvent> = faults.iter().filter(|f| f.start >= w.from && f.start < w.to).collect();
    let grace_ms = w.grace * w.interval_ms;
    let mut first_match: HashMap<&str, i64> = HashMap::new();
    let mut changes_by_router: HashMap<&str, Vec<&PlannedChange>> = HashMap::new();
    for c in changes {
        changes_by_router.entry(c.router.as_str()).or_default().push(c);
    }
    let mut planned: BTreeMap<&'static str, PlannedFigures> =
        ChangeKind::ALL.iter().map(|k| (k.name(), PlannedFigures::default())).collect();
    let mut alarmed_changes: std::collections::HashSet<&str> = std::collections::HashSet::new();

    // Alarms: runs per (router, metric).
    let mut series: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
    for h in hits.iter().filter(|h| h.ts >= w.from && h.ts < w.to) {
        series.entry((h.router.as_str(), h.metric.as_str())).or_default().push(h.ts);
    }
    let mut per_kind: BTreeMap<&'static str, Figures> =
        FaultKind::ALL.iter().map(|k| (k.name(), Figures::default())).collect();
    let mut kind_metrics: HashMap<&'static str, Vec<&str>> = HashMap::new();
    for f in &faults {
        let metrics = kind_metrics.entry(f.kind.name()).or_default();
        for m in &f.metrics {
            if !metrics.contains(&m.as_str()) {
                metrics.push(m.as_str());
            }
        }
    }
    let mut overall = Figures::default();
    let mut false_by_metric: HashMap<&str, usize> = HashMap::new();
    for ((router, metric), mut times) in series {
        times.sort_unstable();
        let on_router = by_router.get(router).map(Vec::as_slice).unwrap_or(&[]);
        let changes_on_router = changes_by_router.get(router).map(Vec::as_slice).unwrap_or(&[]);
        let mut alarms: Vec<Vec<i64>> = Vec::new();
        for ts in times {
            match alarms.last_mut() {
                Some(a) if ts - *a.last().expect("alarms are non-empty") <= w.merge_gap * w.interval_ms => a.push(ts),
                _ => alarms.push(vec![ts]),
            }
        }
        for alarm in alarms {
            let mut matched_kind = None;
            let mut side_effect = false;
            for &ts in &alarm {
                for f in on_router {
                    if ts >= f.start && ts <= f.end + grace_ms {
                        if f.metrics.iter().any(|m| m == metric) {
                            matched_kind.get_or_insert(f.kind.name());
                            let first = first_match.entry(f.id.as_str()).or_insert(ts);
                            *first = (*first).min(ts);
                        } else {
                            side_effect = true;
                        }
                    }
                }
            }
            let mut planned_kind = None;
            if matched_kind.is_none() {
                for &ts in &alarm {
                    for c in changes_on_router {
                        if ts >= c.start && ts <= c.end + grace_ms {
                            if c.metrics.iter().any(|m| m == metric) {
                                planned_kind.get_or_insert(c.kind.name());
                                alarmed_changes.insert(c.id.as_str());
                            } else {
                                side_effect = true;
                            }
                        }
                    }
                }
            }
            match (matched_kind, planned_kind) {
                (Some(kind), _) => {
                    per_kind.get_mut(kind).expect("every kind has a row").true_alarms += 1;
                    overall.true_alarms += 1;
                }
                (None, Some(kind)) => planned.get_mut(kind).expect("every change kind has a row").alarms += 1,
                (None, None) if side_effect => {}
                (None, None) => {
                    overall.false_alarms += 1;
                    *false_by_metric.entry(metric).or_default() += 1;
                }
            }
        }
    }
    for f in &faults {
        let figures = per_kind.get_mut(f.kind.name()).expect("every kind has a row");
        figures.faults += 1;
        overall.faults += 1;
        if let Some(&ts) = first_match.get(f.id.as_str()) {
            let delay = (ts - f.start) / w.interval_ms;
            figures.detected += 1;
            figures.delays.push(delay);
            overall.detected += 1;
            overall.delays.push(delay);
        }
    }
    for (kind, figures) in per_kind.iter_mut() {
        let metrics = kind_metrics.get(kind).map(Vec::as_slice).unwrap_or(&[]);
        figures.false_alarms = metrics.iter().map(|m| false_by_metric.get(m).copied().unwrap_or(0)).sum();
    }
    for c in changes.iter().filter(|c| c.start >= w.from && c.start < w.to) {
        let figures = planned.get_mut(c.kind.name()).expect("every change kind has a row");
        figures.changes += 1;
        if alarmed_changes.contains(c.id.as_str()) {
            figures.alarmed += 1;
        }
    }
    let planned_alarms: usize = planned.values().map(|p| p.alarms).sum();
    Evaluation {
        name: name.to_owned(),
        anomalies: hits.len(),
        false_per_router_day: overall.false_alarms as f64 / w.router_days,
        per_kind,
        overall,
        planned,
        planned_per_router_day: planned_alarms as f64 / w.router_days,
    }
}

pub fn run(args: &QualityArgs) -> Result<()> {
    anyhow::ensure!(args.eval_days >= 1 && args.eval_days < args.days, "eval_days must be 1 to days - 1");
    let params = dataset::Params {
        routers: args.routers,
        days: args.days,
        interval_s: args.interval_s,
        fault_rate: args.fault_rate,
        seed: args.seed,
        profile: args.profile,
    };
    // One data set per profile, so switching profiles never reuses the other's.
    let data = dataset::make(&args.out_dir.join(args.profile.name()), params, args.reuse)?;
    // Generous limits: a replay batch is a whole fleet tick, and seasonal refits all its
    // series in the same tick.
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(args.out_dir.join("components")),
        limits: Limits { cpu_budget: std::time::Duration::from_secs(600), memory_bytes: 2 << 30, ..Limits::default() },
        ..RuntimeConfig::default()
    })?;
    let loaded = args.detectors.load(&runtime)?;
    let detectors: Vec<&str> = loaded.iter().map(|(name, _)| *name).collect();
    let plugins = loaded.into_iter().map(|(_, p)| p).collect();
    let anomalies_path = args.out_dir.join(args.profile.name()).join("anomalies.jsonl");
    let options = ReplayOptions {
        input: data.records.clone(),
        format: InputFormat::Jsonl,
        scores: None,
        anomalies: Some(anomalies_path.clone()),
        batch_rows: data.routers as usize,
        csv_router: "series".into(),
        csv_metric: "value".into(),
        skip_invalid: false,
        progress: false,
    };
    tracing::info!("replaying {} through {} detectors", data.records.display(), detectors.len());
    let summary = replay(plugins, &options)?;
    for p in &summary.plugins {
        tracing::info!(plugin = %p.label, anomalies = p.anomalies, busy_s = p.busy.as_secs_f64(), failure = ?p.failure);
    }

    let mut hits: BTreeMap<String, Vec<Hit>> = BTreeMap::new();
    let file = std::fs::File::open(&anomalies_path)?;
    for line in std::io::BufReader::new(file).lines() {
        let event: AnomalyEvent = serde_json::from_str(&line?).context("reading the anomalies")?;
        hits.entry(event.plugin).or_default().push(Hit { router: event.router, metric: event.metric, ts: event.ts });
    }
    let from = data.end - i64::from(args.eval_days) * 86_400_000;
    let window = Window {
        from,
        to: data.end,
        interval_ms: data.interval_ms,
        grace: args.grace,
        merge_gap: args.merge_gap,
        router_days: f64::from(data.routers) * f64::from(args.eval_days),
    };
    let mut evaluations: Vec<Evaluation> = detectors
        .iter()
        .map(|name| {
            evaluate(name, hits.get(*name).map(Vec::as_slice).unwrap_or(&[]), &data.faults, &data.changes, &window)
        })
        .collect();
    let union: Vec<Hit> = ["arima", "lstm"].iter().flat_map(|n| hits.get(*n).cloned().unwrap_or_default()).collect();
    evaluations.insert(0, evaluate("arima + lstm (default set)", &union, &data.faults, &data.changes, &window));

    let text = report::quality(args, &data, &summary, &evaluations);
    println!("{text}");
    if let Some(path) = &args.write {
        report::replace_section(path, &report::heading(data.profile), &text)?;
        tracing::info!("wrote the table to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(id: &str, router: &str, start: i64, end: i64, metrics: &[&str]) -> FaultEvent {
        FaultEvent {
            id: id.into(),
            kind: FaultKind::CpuRunaway,
            router: router.into(),
            start,
            end,
            magnitude: 0.5,
            metrics: metrics.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn hit(router: &str, metric: &str, minute: i64) -> Hit {
        Hit { router: router.into(), metric: metric.into(), ts: minute * 60_000 }
    }

    #[test]
    fn matching_merging_and_false_alarms() {
        let w = Window { from: 0, to: 1440 * 60_000, interval_ms: 60_000, grace: 5, merge_gap: 10, router_days: 10.0 };
        let faults = vec![
            fault("a", "r1", 100 * 60_000, 110 * 60_000, &["cpu_util", "temp_c"]),
            fault("b", "r2", 500 * 60_000, 520 * 60_000, &["cpu_util"]),
            // Started before the window: explains its alarms, is not counted.
            fault("c", "r4", -100 * 60_000, 30 * 60_000, &["mem_util"]),
        ];
        let hits = vec![
            hit("r1", "cpu_util", 102),   // detects a, delay 2
            hit("r1", "cpu_util", 108),   // same alarm
            hit("r1", "temp_c", 114),     // within grace: a second true alarm
            hit("r1", "latency_ms", 105), // side effect: not counted
            hit("r1", "cpu_util", 200),   // false alarm
            hit("r3", "cpu_util", 50),    // false alarm
            hit("r2", "cpu_util", 530),   // after end + grace: false, b missed
            hit("r4", "mem_util", 10),    // fault c, still on: not false
        ];
        let e = evaluate("t", &hits, &faults, &[], &w);
        let k = &e.per_kind["cpu-runaway"];
        // Three true alarms (two for a, one for c), but only a and b are counted as faults.
        assert_eq!((k.faults, k.detected, k.true_alarms), (2, 1, 3));
        assert_eq!(k.delays, vec![2]);
        assert_eq!(e.overall.false_alarms, 3);
        assert_eq!(k.false_alarms, 3, "all false alarms are on cpu_util, one of the kind's metrics");
        assert!((e.false_per_router_day - 0.3).abs() < 1e-12);
        assert!((k.recall() - 0.5).abs() < 1e-12);
        assert!((k.precision() - 0.5).abs() < 1e-12);
    }

    fn change(id: &str, kind: ChangeKind, router: &str, start: i64, end: i64, metrics: &[&str]) -> PlannedChange {
        PlannedChange {
            id: id.into(),
            kind,
            router: router.into(),
            start,
            end,
            magnitude: 0.9,
            metrics: metrics.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn alarms_on_planned_changes_are_neither_true_nor_false() {
        let m = 60_000;
        let w = Window { from: 0, to: 1440 * m, interval_ms: m, grace: 5, merge_gap: 10, router_days: 10.0 };
        let faults = vec![fault("a", "r1", 100 * m, 110 * m, &["cpu_util"])];
        let changes = vec![
            // A maintenance window on r1 that overlaps the fault, and one on r2.
            change("m1", ChangeKind::Maintenance, "r1", 90 * m, 130 * m, &["cpu_util", "rx_bps"]),
            change("m2", ChangeKind::Maintenance, "r2", 300 * m, 340 * m, &["rx_bps", "bgp_up"]),
            // A config push nobody flags.
            change("p1", ChangeKind::ConfigPush, "r3", 600 * m, 603 * m, &["cpu_util"]),
            // Started before the window: explains alarms, is not counted as a change.
            change("g1", ChangeKind::TrafficMigration, "r4", -600 * m, 200 * m, &["rx_bps"]),
        ];
        let hits = vec![
            hit("r1", "cpu_util", 101), // the fault wins over the change: true, detects a
            hit("r1", "rx_bps", 95),    // the maintenance on r1: planned
            hit("r2", "rx_bps", 301),   // planned (m2)
            hit("r2", "bgp_up", 344),   // within grace of m2's end: planned, a second alarm
            hit("r2", "cpu_util", 320), // during m2 on a metric it does not list: side effect
            hit("r2", "rx_bps", 400),   // after m2 + grace: false
            hit("r4", "rx_bps", 150),   // the migration that started earlier: planned
            hit("r3", "cpu_util", 700), // after p1: false
        ];
        let e = evaluate("t", &hits, &faults, &changes, &w);
        assert_eq!(e.overall.true_alarms, 1);
        assert_eq!(e.overall.detected, 1);
        assert_eq!(e.overall.false_alarms, 2, "only the two alarms outside every window are false");
        let maintenance = &e.planned["maintenance"];
        assert_eq!(*maintenance, PlannedFigures { changes: 2, alarmed: 2, alarms: 3 });
        assert_eq!(e.planned["config-push"], PlannedFigures { changes: 1, alarmed: 0, alarms: 0 });
        assert_eq!(e.planned["traffic-migration"], PlannedFigures { changes: 0, alarmed: 0, alarms: 1 });
        assert_eq!(e.planned_alarms(), 4);
        assert!((e.planned_per_router_day - 0.4).abs() < 1e-12);
        // Recall and precision do not see the planned alarms.
        assert!((e.overall.recall() - 1.0).abs() < 1e-12);
        assert!((e.overall.precision() - 1.0 / 3.0).abs() < 1e-12);
    }
}
