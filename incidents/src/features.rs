//! The evidence an incident collects and the classifier's feature vector made from it.
//!
//! # Layout, version [`FEATURE_LAYOUT_VERSION`]
//!
//! [`FEATURE_COUNT`] = 10 x 11 + 5 numbers, all finite. First, for each metric of
//! [`Metric::ALL`] in that order (`cpu_util`, `mem_util`, `temp_c`, `fan_rpm`, `latency_ms`,
//! `loss_ratio`, `rx_bps`, `tx_bps`, `if_errors`, `bgp_up`), eleven numbers:
//!
//! | offset | name | meaning (0 when the metric did not move unless said) |
//! |---:|---|---|
//! | 0 | `present` | 1 if the metric has an anomaly in the window, else 0 |
//! | 1 | `events` | ln(1 + anomalies on the metric) |
//! | 2 | `direction` | (rises - falls) / anomalies, in [-1, 1]; a rise is observed > expected |
//! | 3 | `relative` | signed ln(1 + \|observed - expected\| / max(\|expected\|, 1e-9)) of the anomaly with the largest departure |
//! | 4 | `range_units` | signed ln(1 + \|observed - expected\| / half the detector's normal range) of that anomaly (its `relative` when the detector gave no range) |
//! | 5 | `onset` | samples from the incident's opening to the metric's first anomaly; -1 if absent |
//! | 6 | `rank` | order of the metric's first anomaly among the metrics (0 = first, ties share a rank); -1 if absent |
//! | 7 | `density` | anomalies / samples spanned (first to last, inclusive): near 1 sustained, low intermittent |
//! | 8 | `transient` | share of anomalies of kind spike or dip |
//! | 9 | `step` | share of kind level-shift or changepoint |
//! | 10 | `drift` | share of kind drift |
//!
//! Then five numbers about the whole window: `metrics` (how many metrics moved), `events`
//! (ln(1 + all anomalies)), `span` (samples from the opening to the last anomaly), `max_score`
//! (highest anomaly score) and `detectors` (how many detectors reported).
//!
//! The window is the incident's first `feature_window_samples` samples (see
//! [`crate::RouterConfig`]); later anomalies extend the incident but not its features, so the
//! cause named when the window closes stays put. A change to this layout bumps
//! [`FEATURE_LAYOUT_VERSION`] and needs a retrained classifier.

use routewatch_telemetry::{AnomalyEvent, AnomalyKind, Metric};
use serde::{Deserialize, Serialize};

/// Version of the layout below; a classifier names the version it was trained on.
pub const FEATURE_LAYOUT_VERSION: u32 = 1;
/// Numbers per metric.
pub const PER_METRIC: usize = 11;
/// Numbers about the whole window, after the per-metric blocks.
pub const GLOBAL: usize = 5;
/// Length of a feature vector.
pub const FEATURE_COUNT: usize = Metric::ALL.len() * PER_METRIC + GLOBAL;
/// Detectors counted in `detectors`; more are not told apart.
const MAX_DETECTORS: usize = 16;

const PER_METRIC_NAMES: [&str; PER_METRIC] = [
    "present",
    "events",
    "direction",
    "relative",
    "range_units",
    "onset",
    "rank",
    "density",
    "transient",
    "step",
    "drift",
];
const GLOBAL_NAMES: [&str; GLOBAL] = ["metrics", "events", "span", "max_score", "detectors"];

/// The name of every feature, in layout order: `cpu_util.present`, ..., `window.detectors`.
pub fn feature_names() -> Vec<String> {
    let mut names = Vec::with_capacity(FEATURE_COUNT);
    for metric in Metric::ALL {
        names.extend(PER_METRIC_NAMES.iter().map(|n| format!("{}.{n}", metric.name())));
    }
    names.extend(GLOBAL_NAMES.iter().map(|n| format!("window.{n}")));
    names
}

/// What one metric's anomalies in the window say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricEvidence {
    pub events: u32,
    pub first_ts: i64,
    pub last_ts: i64,
    pub rises: u32,
    pub falls: u32,
    /// |observed - expected| of the largest departure so far, to pick the one to keep.
    largest: f64,
    relative: f64,
    range_units: f64,
    transient: u32,
    step: u32,
    drift: u32,
}

/// The evidence of one incident's window, bounded in size whatever the anomaly count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    metrics: [Option<MetricEvidence>; Metric::ALL.len()],
    events: u32,
    max_score: f64,
    last_ts: i64,
    detectors: Vec<String>,
}

fn signed_log1p(x: f64) -> f64 {
    let y = x.abs().ln_1p().copysign(x);
    if y.is_finite() { y } else { 0.0 }
}

impl Evidence {
    /// Adds one anomaly. Anomalies on metrics outside [`Metric::ALL`] count in the totals only.
    pub fn add(&mut self, event: &AnomalyEvent) {
        self.events = self.events.saturating_add(1);
        self.max_score = self.max_score.max(event.score);
        self.last_ts = self.last_ts.max(event.ts);
        if self.detectors.len() < MAX_DETECTORS && !self.detectors.contains(&event.plugin) {
            self.detectors.push(event.plugin.clone());
        }
        let Some(index) = Metric::from_name(&event.metric).and_then(|m| Metric::ALL.iter().position(|&x| x == m))
        else {
            return;
        };
        let m = self.metrics[index].get_or_insert_with(|| MetricEvidence {
            first_ts: event.ts,
            last_ts: event.ts,
            ..MetricEvidence::default()
        });
        m.events = m.events.saturating_add(1);
        m.first_ts = m.first_ts.min(event.ts);
        m.last_ts = m.last_ts.max(event.ts);
        let delta = event.value - event.expected;
        if delta > 0.0 {
            m.rises += 1;
        } else if delta < 0.0 {
            m.falls += 1;
        }
        match event.kind {
            AnomalyKind::Spike | AnomalyKind::Dip => m.transient += 1,
            AnomalyKind::LevelShift | AnomalyKind::Changepoint => m.step += 1,
            AnomalyKind::Drift => m.drift += 1,
            _ => {}
        }
        if delta.is_finite() && delta.abs() >= m.largest {
            m.largest = delta.abs();
            let relative = delta / event.expected.abs().max(1e-9);
            let half_range = match (event.lower, event.upper) {
                (Some(lo), Some(hi)) if hi > lo => (hi - lo) / 2.0,
                (Some(lo), None) if event.expected > lo => event.expected - lo,
                (None, Some(hi)) if hi > event.expected => hi - event.expected,
                _ => 0.0,
            };
            m.relative = signed_log1p(relative);
            m.range_units = if half_range > 0.0 { signed_log1p(delta / half_range) } else { m.relative };
        }
    }

    /// How many metrics of [`Metric::ALL`] moved.
    pub fn metrics_moved(&self) -> usize {
        self.metrics.iter().flatten().count()
    }

    /// The evidence of one metric, if it moved.
    pub fn metric(&self, metric: Metric) -> Option<&MetricEvidence> {
        Metric::ALL.iter().position(|&m| m == metric).and_then(|i| self.metrics[i].as_ref())
    }

    /// The feature vector (layout in the module docs) of an incident opened at `opened`, with
    /// samples `interval_ms` apart.
    pub fn features(&self, opened: i64, interval_ms: i64) -> Vec<f64> {
        let interval = interval_ms.max(1) as f64;
        let mut firsts: Vec<i64> = self.metrics.iter().flatten().map(|m| m.first_ts).collect();
        firsts.sort_unstable();
        firsts.dedup();
        let mut out = Vec::with_capacity(FEATURE_COUNT);
        for slot in &self.metrics {
            match slot {
                None => out.extend([0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0]),
                Some(m) => {
                    let n = f64::from(m.events.max(1));
                    let span = ((m.last_ts - m.first_ts) as f64 / interval).max(0.0).round() + 1.0;
                    let rank = firsts.iter().position(|&t| t == m.first_ts).unwrap_or(0) as f64;
                    out.extend([
                        1.0,
                        f64::from(m.events).ln_1p(),
                        (f64::from(m.rises) - f64::from(m.falls)) / n,
                        m.relative,
                        m.range_units,
                        ((m.first_ts - opened) as f64 / interval).max(0.0),
                        rank,
                        (f64::from(m.events) / span).min(1.0),
                        f64::from(m.transient) / n,
                        f64::from(m.step) / n,
                        f64::from(m.drift) / n,
                    ]);
                }
            }
        }
        out.extend([
            self.metrics_moved() as f64,
            f64::from(self.events).ln_1p(),
            ((self.last_ts - opened) as f64 / interval).max(0.0),
            if self.max_score.is_finite() { self.max_score } else { 0.0 },
            self.detectors.len() as f64,
        ]);
        debug_assert_eq!(out.len(), FEATURE_COUNT);
        out
    }

    /// Whether a restored evidence is within the caps a live one keeps.
    pub(crate) fn is_bounded(&self) -> bool {
        self.detectors.len() <= MAX_DETECTORS && self.detectors.iter().all(|d| d.len() <= crate::MAX_ID_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event(metric: &str, ts: i64, value: f64, expected: f64, kind: AnomalyKind) -> AnomalyEvent {
        AnomalyEvent {
            router: "rtr-000001".into(),
            site: Some("fra1".into()),
            role: Some("edge".into()),
            metric: metric.into(),
            plugin: "arima".into(),
            plugin_version: "1".into(),
            ts,
            detected_at: None,
            value,
            expected,
            lower: Some(expected - 1.0),
            upper: Some(expected + 1.0),
            score: 0.9,
            kind,
            reason: String::new(),
        }
    }

    #[test]
    fn names_match_the_layout() {
        let names = feature_names();
        assert_eq!(names.len(), FEATURE_COUNT);
        assert_eq!(names[0], "cpu_util.present");
        assert_eq!(names[PER_METRIC + 5], "mem_util.onset");
        assert_eq!(names[FEATURE_COUNT - 1], "window.detectors");
    }

    #[test]
    fn which_metrics_moved_which_way_how_much_and_in_which_order() {
        let m = 60_000;
        let mut e = Evidence::default();
        // Fans fall first, then temperature rises for three samples in a row.
        e.add(&event("fan_rpm", 0, 1000.0, 6000.0, AnomalyKind::LevelShift));
        e.add(&event("temp_c", 2 * m, 70.0, 45.0, AnomalyKind::Drift));
        e.add(&event("temp_c", 3 * m, 75.0, 45.0, AnomalyKind::Drift));
        e.add(&event("temp_c", 4 * m, 80.0, 45.0, AnomalyKind::Spike));
        let f = e.features(0, m);
        assert_eq!(f.len(), FEATURE_COUNT);
        let at = |metric: Metric, offset: usize| {
            f[Metric::ALL.iter().position(|&x| x == metric).unwrap() * PER_METRIC + offset]
        };
        assert_eq!(at(Metric::FanRpm, 0), 1.0);
        assert_eq!(at(Metric::FanRpm, 2), -1.0, "the fan fell");
        assert_eq!(at(Metric::TempC, 2), 1.0, "the temperature rose");
        assert!((at(Metric::TempC, 3) - (35.0f64 / 45.0).ln_1p()).abs() < 1e-12, "largest departure kept");
        assert!((at(Metric::TempC, 4) - 35.0f64.ln_1p()).abs() < 1e-12, "in half-ranges of 1");
        assert_eq!((at(Metric::FanRpm, 5), at(Metric::TempC, 5)), (0.0, 2.0), "onsets in samples");
        assert_eq!((at(Metric::FanRpm, 6), at(Metric::TempC, 6)), (0.0, 1.0), "onset order");
        assert_eq!(at(Metric::TempC, 7), 1.0, "three anomalies over three samples: sustained");
        assert!((at(Metric::TempC, 8) - 1.0 / 3.0).abs() < 1e-12);
        assert!((at(Metric::TempC, 10) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(at(Metric::FanRpm, 9), 1.0);
        assert_eq!((at(Metric::CpuUtil, 0), at(Metric::CpuUtil, 5)), (0.0, -1.0), "cpu did not move");
        let g = &f[FEATURE_COUNT - GLOBAL..];
        assert_eq!(g[0], 2.0);
        assert!((g[1] - 4.0f64.ln_1p()).abs() < 1e-12);
        assert_eq!((g[2], g[3], g[4]), (4.0, 0.9, 1.0));
        assert!(f.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn a_zero_expectation_or_a_one_sided_range_stays_finite() {
        let mut e = Evidence::default();
        let mut ev = event("if_errors", 0, 50.0, 0.0, AnomalyKind::Spike);
        ev.lower = None;
        ev.upper = Some(3.0);
        e.add(&ev);
        let f = e.features(0, 60_000);
        assert!(f.iter().all(|x| x.is_finite()), "{f:?}");
        let base = 8 * PER_METRIC;
        assert!((f[base + 4] - (50.0f64 / 3.0).ln_1p()).abs() < 1e-12);
    }
}
