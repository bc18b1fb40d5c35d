//! Onsets, not floods: one anomaly when a departure begins, then an update now and then while
//! it lasts, with reasons a person can read.
//!
//! A departure is a run of anomalous samples of one series. Its first sample is reported at
//! once (the **onset**). While it lasts, another anomaly (an **update**) is reported only when
//! its kind changes (a spike turns out to be a level shift) or when [`HOLD_OFF`] samples have
//! passed since the last report. The departure ends after [`HOLD_OFF`] samples in a row that
//! are not anomalous; the next anomalous sample is a new onset. Scores are not held off:
//! every sample keeps its own.

use serde::{Deserialize, Serialize};

use crate::calibrate::{Calibration, Calibrator, finite};
use crate::{Anomaly, AnomalyKind};

/// Samples between two reports of one departure, and quiet samples that end it.
pub const HOLD_OFF: u32 = 10;
/// Longest reason the host accepts (`wit/detector.wit`); the SDK cuts longer ones.
pub const MAX_REASON_BYTES: usize = 200;

/// What [`Episode::step`] decided about a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Nothing to report.
    None,
    /// A departure begins.
    Onset,
    /// A departure goes on (its kind changed, or `HOLD_OFF` samples passed).
    Update,
}

/// The departure state of one series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    active: bool,
    since_report: u32,
    quiet: u32,
    kind: Option<AnomalyKind>,
}

impl Episode {
    /// Advances by one sample, anomalous (of `kind`) or not.
    pub fn step(&mut self, anomalous: bool, kind: AnomalyKind) -> Report {
        if !anomalous {
            if self.active {
                self.quiet += 1;
                self.since_report = self.since_report.saturating_add(1);
                if self.quiet >= HOLD_OFF {
                    *self = Episode::default();
                }
            }
            return Report::None;
        }
        if !self.active {
            *self = Episode { active: true, since_report: 0, quiet: 0, kind: Some(kind) };
            return Report::Onset;
        }
        self.quiet = 0;
        self.since_report = self.since_report.saturating_add(1);
        if self.kind != Some(kind) || self.since_report >= HOLD_OFF {
            self.since_report = 0;
            self.kind = Some(kind);
            return Report::Update;
        }
        Report::None
    }

    /// Whether a departure is going on.
    pub fn active(&self) -> bool {
        self.active
    }
}

/// A [`Calibrator`] and an [`Episode`]: everything a forecasting detector needs per series to
/// turn forecasts into calibrated scores and onset anomalies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Judge {
    pub calibrator: Calibrator,
    pub episode: Episode,
}

/// What [`Judge::judge`] made of a sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Judgement {
    pub calibration: Calibration,
    /// Set at an onset or an update (with `row` and `column` left 0 for the caller).
    pub anomaly: Option<Anomaly>,
    /// The kind the evidence points to when the sample is anomalous.
    pub kind: Option<AnomalyKind>,
}

impl Judge {
    /// Scores `value` against the forecast `expected` (see [`Calibrator::observe`]) and decides
    /// whether to report. `min_z` is the least single-error threshold in sd; a departure
    /// smaller than `min_deviation` (metric units) is never anomalous.
    pub fn judge(&mut self, metric: &str, value: f64, expected: f64, min_z: f64, min_deviation: f64) -> Judgement {
        let calibration = self.calibrator.observe_with(value, expected, min_z, min_deviation);
        if !value.is_finite() {
            // A gap ends nothing and starts nothing.
            return Judgement { calibration, anomaly: None, kind: None };
        }
        let kind = if calibration.run >= 2 {
            AnomalyKind::LevelShift
        } else if calibration.z > 0.0 {
            AnomalyKind::Spike
        } else {
            AnomalyKind::Dip
        };
        let anomalous = calibration.anomalous();
        let report = self.episode.step(anomalous, kind);
        let anomaly = (report != Report::None).then(|| {
            let (lower, upper) = self.calibrator.band(expected, min_z);
            Anomaly {
                row: 0,
                column: 0,
                observed: value,
                expected: finite(expected),
                lower,
                upper,
                score: calibration.score,
                kind,
                reason: describe(metric, kind, expected, value, calibration.run, report == Report::Update),
            }
        });
        Judgement { calibration, anomaly, kind: anomalous.then_some(kind) }
    }
}

/// A human-sized reason: `"spike: bgp_up 8 → 14 (+75%)"`, at most [`MAX_REASON_BYTES`].
pub fn describe(metric: &str, kind: AnomalyKind, expected: f64, observed: f64, run: u8, update: bool) -> String {
    let what = match kind {
        AnomalyKind::Spike => "spike",
        AnomalyKind::Dip => "dip",
        AnomalyKind::LevelShift => "level shift",
        AnomalyKind::Drift => "drift",
        AnomalyKind::Loss => "loss",
        AnomalyKind::Hardware => "hardware",
        AnomalyKind::Outlier => "outlier",
        AnomalyKind::Changepoint => "changepoint",
        AnomalyKind::Other => "anomaly",
    };
    let still = if update { "still: " } else { "" };
    let over = if run >= 2 { format!(" for {run} samples") } else { String::new() };
    let mut text = format!(
        "{still}{what}: {metric} {} → {} ({}){over}",
        number(expected),
        number(observed),
        change(expected, observed)
    );
    truncate(&mut text, MAX_REASON_BYTES);
    text
}

/// The change from `from` to `to`: a percentage, a factor when it is large, or a difference
/// when `from` is zero.
pub fn change(from: f64, to: f64) -> String {
    if from == 0.0 || !from.is_finite() || !to.is_finite() {
        let d = finite(to - from);
        return if d >= 0.0 { format!("+{}", number(d)) } else { format!("-{}", number(-d)) };
    }
    let ratio = to / from;
    let percent = (ratio - 1.0) * 100.0;
    if ratio >= 10.0 {
        format!("×{}", number(ratio))
    } else if percent.abs() >= 10.0 {
        format!("{percent:+.0}%")
    } else {
        format!("{percent:+.1}%")
    }
}

/// A number to three or four significant digits, with k, M, G, T, P for large ones.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a == 0.0 {
        return "0".into();
    }
    if a >= 1e4 {
        const SUFFIX: [(f64, &str); 5] = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
        if a >= 1e18 {
            return format!("{x:.3e}");
        }
        let (unit, suffix) = SUFFIX.iter().copied().find(|(u, _)| a >= *u).unwrap_or((1e3, "k"));
        return format!("{}{suffix}", trim(x / unit, 3));
    }
    if x.fract() == 0.0 {
        return format!("{x:.0}");
    }
    if a < 1e-3 {
        return format!("{x:.3e}");
    }
    trim(x, 4)
}

/// `x` to `digits` significant digits, trailing zeros dropped.
fn trim(x: f64, digits: i32) -> String {
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text }
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
pub fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onset_then_updates_under_the_hold_off() {
        let mut e = Episode::default();
        let spike = AnomalyKind::Spike;
        assert_eq!(e.step(true, spike), Report::Onset);
        let reports: Vec<Report> = (0..25).map(|_| e.step(true, spike)).collect();
        let updates = reports.iter().filter(|r| **r == Report::Update).count();
        assert_eq!(updates, 2, "one update per {HOLD_OFF} samples: {reports:?}");
        assert_eq!(e.step(true, AnomalyKind::LevelShift), Report::Update, "a new kind is news");
        for _ in 0..3 {
            assert_eq!(e.step(false, spike), Report::None);
        }
        assert_eq!(e.step(true, AnomalyKind::LevelShift), Report::None, "a short pause is the same departure");
        for _ in 0..HOLD_OFF {
            e.step(false, spike);
        }
        assert!(!e.active());
        assert_eq!(e.step(true, spike), Report::Onset);
    }

    #[test]
    fn reasons_are_human_sized() {
        assert_eq!(describe("bgp_up", AnomalyKind::Spike, 8.0, 14.0, 1, false), "spike: bgp_up 8 → 14 (+75%)");
        assert_eq!(
            describe("rx_bps", AnomalyKind::LevelShift, 4.1e9, 1.2e9, 3, true),
            "still: level shift: rx_bps 4.1G → 1.2G (-71%) for 3 samples"
        );
        assert_eq!(describe("if_errors", AnomalyKind::Spike, 0.0, 40.0, 1, false), "spike: if_errors 0 → 40 (+40)");
        assert_eq!(number(0.41234), "0.4123");
        assert_eq!(change(2.0, 50.0), "×25");
        let long = describe(&"é".repeat(150), AnomalyKind::Dip, 1.7e308, -1e308, 1, false);
        assert!(long.len() <= MAX_REASON_BYTES && long.is_char_boundary(long.len()));
    }

    /// A judge (calibrator and episode) saved and restored at any sample, as detectors carry
    /// it in their snapshots, judges the rest of its series exactly as the one that went on:
    /// through its warm-up, threshold refreshes, held-out episodes, runs and adaptation.
    #[test]
    fn a_judge_restored_at_any_sample_judges_as_the_uninterrupted_one() {
        // Heavy-ish noise (a product of uniforms), a spike, a burst, a shift that lasts
        // beyond the adaptation, integers at the end, and gaps.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut uniform = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let values: Vec<f64> = (0..1500)
            .map(|i| {
                let noise = (uniform() - 0.5) * (1.0 + 4.0 * uniform() * uniform());
                match i {
                    _ if i % 97 == 13 => f64::NAN,
                    400 => 30.0,
                    600..=604 => 8.0 + noise,
                    900..=1000 => 6.0 + noise,
                    1200.. => (noise * 3.0).round(),
                    _ => noise,
                }
            })
            .collect();
        let judge_all = |judge: &mut Judge, values: &[f64]| -> Vec<(u64, Option<Anomaly>)> {
            values
                .iter()
                .map(|&v| judge.judge("cpu_util", v, 0.0, 0.0, 0.0))
                .map(|j| (j.calibration.score.to_bits(), j.anomaly))
                .collect()
        };
        let whole = judge_all(&mut Judge::default(), &values);
        assert!(whole.iter().filter(|(_, a)| a.is_some()).count() >= 3, "departures to report");
        for cut in (0..values.len()).step_by(7) {
            let mut before = Judge::default();
            let mut judged = judge_all(&mut before, &values[..cut]);
            let bytes = postcard::to_allocvec(&before).unwrap();
            let mut restored: Judge = postcard::from_bytes(&bytes).unwrap();
            judged.extend(judge_all(&mut restored, &values[cut..]));
            assert!(judged == whole, "restored at sample {cut}");
        }
    }

    #[test]
    fn truncation_keeps_utf8() {
        let mut s = "ab€€€".to_owned();
        truncate(&mut s, 4);
        assert_eq!(s, "ab");
    }
}
