//! Changepoint detector: finds level shifts in each (router, metric) series.
//!
//! Two stages, so that the Bayesian method runs only where something happened:
//! 1. **CUSUM gate** (cheap, every sample): each sample is measured in standard deviations
//!    of its usual distance from a fast running level, and two-sided CUSUM sums collect
//!    sustained departures. That scale includes the slow wander of a healthy series (traffic
//!    and CPU drift for minutes, temperature lags), so only a move larger than the usual
//!    wander adds up; the fast level follows the daily swing, which therefore does not count.
//! 2. **BOCPD confirmation** (augurs-changepoint, on an alarm): Bayesian online changepoint
//!    detection with a Normal-Gamma prior runs over the last `window` samples. The alarm
//!    stands if BOCPD places a changepoint among the most recent samples and the means on
//!    either side differ by at least `min_shift` noise sd. The series then restarts from
//!    the new level.
//!
//! augurs' `Detector::detect_changepoints` takes a whole series, which is why it is run on
//! a window at the moment of an alarm rather than sample by sample.

mod config;

use std::collections::VecDeque;

use augurs::changepoint::{Detector as _, NormalGammaDetector, dist::NormalGamma};
use routewatch_plugin_sdk::calibrate::{finite, score_from_ratio};
use routewatch_plugin_sdk::{
    Anomaly, AnomalyKind, Batch, Detector, Info, Judge, Output, Report, SeriesTable, Verdict, episode, snapshot,
};
use serde::{Deserialize, Serialize};

pub use config::Config;

routewatch_plugin_sdk::export_detector!(Changepoint);

/// 2: the noise scale is the deviation from the level (1 measured first differences).
/// 3: the SDK's calibrator and episode replace the noise scale.
const SNAPSHOT_VERSION: u8 = 3;

/// The changepoint detector.
#[derive(Debug, Default)]
pub struct Changepoint {
    config: Config,
    series: SeriesTable<Series>,
}

/// One (router, metric) series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    n: u64,
    last_ts: i64,
    level: f64,
    /// Calibrated scores of the deviations from `level`, and the onsets of level shifts.
    judge: Judge,
    up: f64,
    down: f64,
    /// Recent raw values, for the confirmation stage.
    window: VecDeque<f64>,
    /// Samples to wait after a rejected alarm before the gate may fire again.
    cooldown: u32,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            n: 0,
            last_ts: i64::MIN,
            level: 0.0,
            judge: Judge::default(),
            up: 0.0,
            down: 0.0,
            window: VecDeque::new(),
            cooldown: 0,
        }
    }
}

/// Normalised values handed to BOCPD are kept within this many sd: augurs' Normal-Gamma
/// model refuses non-finite sufficient statistics (it panicked on 1.7e308).
const BOCPD_CLIP: f64 = 1e6;

impl Series {
    fn observe(&mut self, ts: i64, value: f64, metric: &str, config: &Config) -> Verdict {
        let quiet = Verdict { score: 0.0, anomaly: None };
        if !value.is_finite() || ts <= self.last_ts {
            return quiet;
        }
        self.last_ts = ts;
        self.window.push_back(value);
        if self.window.len() > config.window {
            self.window.pop_front();
        }
        self.n += 1;
        if self.n == 1 {
            self.level = value;
            self.judge.calibrator.learn_value(value);
            return quiet;
        }
        if self.n <= config.warmup {
            // Warm-up: the level as a fast running mean; the calibrator learns the deviations.
            self.judge.calibrator.observe(value, self.level, f64::INFINITY);
            self.level += config.level_alpha.max(1.0 / self.n as f64) * (value - self.level);
            return quiet;
        }
        let level = self.level;
        // Only runs are evidence of a level shift: a single error never decides here.
        let calibration = self.judge.calibrator.observe(value, level, f64::INFINITY);
        let noise = calibration.sd;
        let z = finite((value - level) / noise);
        self.up = finite((self.up + z - config.drift).max(0.0));
        self.down = finite((self.down - z - config.drift).max(0.0));
        let sum = self.up.max(self.down);
        // Calibrated evidence of a run, or the CUSUM beyond its limit, opens the gate.
        let cusum = sum / config.limit;
        let mut score = calibration.score.max(score_from_ratio(cusum));
        let gate = score >= 0.5;
        let mut shift = None;
        if gate && self.cooldown == 0 {
            match self.confirm(config, noise) {
                Some(found) => shift = Some(found),
                None => {
                    self.up = 0.0;
                    self.down = 0.0;
                    self.cooldown = config.cooldown;
                }
            }
        } else {
            self.cooldown = self.cooldown.saturating_sub(1);
        }
        if shift.is_none() {
            // Not confirmed: below the decision, whatever the gate said.
            score = score.min(0.49);
        }
        let report = self.judge.episode.step(shift.is_some(), AnomalyKind::LevelShift);
        let mut anomaly = None;
        if let Some((at, before, after)) = shift {
            if report != Report::None {
                anomaly = Some(Anomaly {
                    row: 0,
                    column: 0,
                    observed: value,
                    expected: finite(before),
                    lower: finite(before - config.min_shift * noise),
                    upper: finite(before + config.min_shift * noise),
                    score,
                    kind: AnomalyKind::LevelShift,
                    reason: episode::describe(metric, AnomalyKind::LevelShift, before, after, at.min(255) as u8, report == Report::Update),
                });
            }
            // Restart from the new level.
            self.level = after;
            self.up = 0.0;
            self.down = 0.0;
        } else if sum < config.limit {
            // The level follows slowly while nothing is going on.
            self.level = finite(self.level + config.level_alpha * (value - self.level));
        }
        Verdict { score, anomaly }
    }

    /// Runs augurs' BOCPD over the window; returns (samples ago, mean before, mean after) of a
    /// recent changepoint with a large enough shift.
    fn confirm(&self, config: &Config, noise: f64) -> Option<(usize, f64, f64)> {
        let values: Vec<f64> =
            self.window.iter().map(|v| ((v - self.level) / noise).clamp(-BOCPD_CLIP, BOCPD_CLIP)).collect();
        let len = values.len();
        if len < 8 || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let prior = NormalGamma::new_unchecked(0.0, 1.0, 1.0, 1.0);
        let mut bocpd = NormalGammaDetector::normal_gamma(config.hazard, prior);
        let changepoints = bocpd.detect_changepoints(&values);
        let at = changepoints.iter().rev().copied().find(|&cp| cp > 0 && cp + config.recent >= len && cp < len)?;
        // Medians, so that one heavy-tailed sample does not make or break a shift.
        let before = median(self.window.range(..at).copied().collect());
        let after = median(self.window.range(at..).copied().collect());
        (finite(after - before).abs() >= config.min_shift * noise).then_some((len - at, before, after))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f64::total_cmp).1
}

impl Detector for Changepoint {
    fn info() -> Info {
        Info {
            name: "changepoint".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Level shifts per series: a CUSUM gate confirmed by Bayesian online changepoint detection \
                          (augurs-changepoint)"
                .into(),
            metrics: Vec::new(),
            config_schema: Config::SCHEMA.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = Config::parse(config)?;
        Ok(())
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), String> {
        let config = &self.config;
        let watched =
            |metric: &str| (config.metrics.is_empty() || config.metrics.iter().any(|m| m == metric)).then_some(());
        self.series.process_named(batch, out, watched, |series, metric, _, ts, value| {
            series.observe(ts, value, metric, config)
        })
    }

    fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(SNAPSHOT_VERSION, &(&self.config, &self.series))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (config, series): (Config, SeriesTable<Series>) = snapshot::decode(bytes, SNAPSHOT_VERSION, "changepoint")?;
        series.check().map_err(|e| format!("corrupt changepoint snapshot: {e}"))?;
        self.config = config;
        self.series = series;
        Ok(())
    }
}
