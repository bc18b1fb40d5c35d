//! Changepoint detector: finds level shifts in each (router, metric) series.
//!
//! Two stages, so that the Bayesian method runs only where something happened:
//! 1. **Calibrated gate** (cheap, every sample): the deviation from a fast running level is
//!    scored by the SDK's calibrator: a run of deviations on one side, or a single one beyond
//!    `limit` robust sd, that is as unlikely as 1 in 100,000 under the series' own recent
//!    deviations opens the gate for `recent` samples.
//! 2. **BOCPD confirmation** (augurs-changepoint, while the gate is open): Bayesian online
//!    changepoint detection with a Normal-Gamma prior runs over the last `window` samples. The
//!    shift stands if BOCPD places a changepoint among the most recent samples, with at least
//!    three after it, and the medians on either side differ by at least `min_shift` noise sd.
//!    It is reported at its onset (the SDK's episode), and the series restarts from the new
//!    level. Unconfirmed, the score stays below 0.5.
//!
//! augurs' `Detector::detect_changepoints` takes a whole series, which is why it is run on
//! a window at the moment of an alarm rather than sample by sample.

mod config;

use std::collections::VecDeque;

use augurs::changepoint::{Detector as _, NormalGammaDetector, dist::NormalGamma};
use routewatch_plugin_sdk::calibrate::finite;
use routewatch_plugin_sdk::{
    Anomaly, AnomalyKind, Batch, Detector, Info, Judge, Output, Report, SeriesTable, Verdict, episode, snapshot,
};
use serde::{Deserialize, Serialize};

pub use config::Config;

routewatch_plugin_sdk::export_detector!(Changepoint);

/// 2: the noise scale is the deviation from the level (1 measured first differences).
/// 3: the SDK's calibrator and episode replace the noise scale.
const SNAPSHOT_VERSION: u8 = 4;

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
    /// Sd of the samples around `level` (a running mean absolute deviation): the unit of
    /// BOCPD's input and of `min_shift`.
    noise: f64,
    /// Calibrated scores of the deviations from `level`, and the onsets of level shifts.
    judge: Judge,
    /// Samples left in which an opened gate still looks for a changepoint.
    armed: u32,
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
            noise: 0.0,
            judge: Judge::default(),
            armed: 0,
            window: VecDeque::new(),
            cooldown: 0,
        }
    }
}

/// Normalised values handed to BOCPD are kept within this many sd: augurs' Normal-Gamma
/// model refuses non-finite sufficient statistics (it panicked on 1.7e308).
const BOCPD_CLIP: f64 = 1e6;
/// For Gaussian noise, `sd = sqrt(pi / 2) E|x - mean|`.
const MEAN_ABS_TO_SD: f64 = 1.253_314_137_315_500_3;
/// Samples after a changepoint needed to confirm it: a lone spike is not a new level.
const MIN_AFTER: usize = 3;

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
        let deviation = finite((value - self.level).abs());
        if self.n <= config.warmup {
            // Warm-up: the level as a fast running mean; the scales learn the deviations.
            let n = (self.n - 1) as f64;
            self.noise = finite(self.noise + (finite(deviation * MEAN_ABS_TO_SD) - self.noise) / n);
            self.judge.calibrator.observe(value, self.level, config.limit);
            self.level = finite(self.level + config.level_alpha.max(1.0 / self.n as f64) * (value - self.level));
            return quiet;
        }
        let level = self.level;
        // Calibrated evidence (a run of deviations, or one beyond `limit` sd) opens the gate;
        // BOCPD then has `recent` samples to confirm a changepoint.
        let calibration = self.judge.calibrator.observe(value, level, config.limit);
        let noise = self.noise.max(calibration.sd);
        let mut score = calibration.score;
        if score >= 0.5 && self.cooldown == 0 && self.armed == 0 {
            self.armed = config.recent as u32;
        }
        let mut shift = None;
        if self.armed > 0 {
            self.armed -= 1;
            shift = self.confirm(config, noise);
            if shift.is_some() {
                self.armed = 0;
            } else if self.armed == 0 {
                self.cooldown = config.cooldown;
            }
        } else {
            self.cooldown = self.cooldown.saturating_sub(1);
        }
        if shift.is_none() {
            // Not confirmed: below the decision, whatever the gate said.
            score = score.min(0.49);
        } else {
            score = score.max(0.5);
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
                    reason: episode::describe(
                        metric,
                        AnomalyKind::LevelShift,
                        before,
                        after,
                        at.min(255) as u8,
                        report == Report::Update,
                    ),
                });
            }
            // Restart from the new level.
            self.level = after;
            self.judge.calibrator.forget_run();
        } else if self.armed == 0 {
            // The level follows slowly while nothing is going on.
            self.level = finite(self.level + config.level_alpha * (value - self.level));
            let clipped = finite(deviation * MEAN_ABS_TO_SD).min(config.limit * noise);
            self.noise = finite(self.noise + config.level_alpha * 0.2 * (clipped - self.noise));
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
        let at = changepoints
            .iter()
            .rev()
            .copied()
            .find(|&cp| cp > 0 && cp + config.recent >= len && cp + MIN_AFTER <= len)?;
        // Medians, so that one heavy-tailed sample does not make or break a shift.
        let before = median(self.window.range(..at).copied().collect());
        let after = median(self.window.range(at..).copied().collect());
        (finite(after - before).abs() >= config.min_shift * noise).then_some((len - at, before, after))
    }
}

/// The median (the lower one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    let mid = (v.len() - 1) / 2;
    *v.select_nth_unstable_by(mid, f64::total_cmp).1
}

impl Detector for Changepoint {
    fn info() -> Info {
        Info {
            name: "changepoint".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Level shifts per series: a calibrated gate confirmed by Bayesian online changepoint detection \
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
        // A snapshot's configuration passes the checks `configure` makes.
        config.check().map_err(|e| format!("corrupt changepoint snapshot: {e}"))?;
        series.check().map_err(|e| format!("corrupt changepoint snapshot: {e}"))?;
        self.config = config;
        self.series = series;
        Ok(())
    }
}
