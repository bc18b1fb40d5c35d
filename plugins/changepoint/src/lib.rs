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
use routewatch_plugin_sdk::{
    Anomaly, AnomalyKind, Batch, Detector, Info, Output, SeriesTable, Verdict, score_from_z, snapshot,
};
use serde::{Deserialize, Serialize};

pub use config::Config;

routewatch_plugin_sdk::export_detector!(Changepoint);

/// 2: the noise scale is the deviation from the level (1 measured first differences).
const SNAPSHOT_VERSION: u8 = 2;
/// For Gaussian noise, `sd = sqrt(pi / 2) E|x - mean|`.
const MEAN_ABS_TO_SD: f64 = 1.253_314_137_315_500_3;

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
    /// Sd of the samples around `level` (from a running mean absolute deviation).
    noise: f64,
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
            noise: 0.0,
            up: 0.0,
            down: 0.0,
            window: VecDeque::new(),
            cooldown: 0,
        }
    }
}

impl Series {
    fn observe(&mut self, ts: i64, value: f64, config: &Config) -> Verdict {
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
            return quiet;
        }
        let deviation = (value - self.level).abs();
        let floor = (config.rel_floor * self.level.abs()).max(1e-9);
        if self.n <= config.warmup {
            // Warm-up: the level as a fast running mean, the scale as the mean deviation from it.
            let n = (self.n - 1) as f64;
            self.noise += (deviation * MEAN_ABS_TO_SD - self.noise) / n;
            self.level += config.level_alpha.max(1.0 / self.n as f64) * (value - self.level);
            return quiet;
        }
        let noise = self.noise.max(floor);
        let z = (value - self.level) / noise;
        self.up = (self.up + z - config.drift).max(0.0);
        self.down = (self.down - z - config.drift).max(0.0);
        let sum = self.up.max(self.down);
        let mut score = score_from_z(sum, config.limit);
        let mut anomaly = None;
        if sum >= config.limit && self.cooldown == 0 {
            match self.confirm(config, noise) {
                Some((at, before, after)) => {
                    let shift = (after - before) / noise;
                    anomaly = Some(Anomaly {
                        row: 0,
                        column: 0,
                        observed: value,
                        expected: before,
                        lower: before - config.min_shift * noise,
                        upper: before + config.min_shift * noise,
                        score: score.max(0.5),
                        kind: AnomalyKind::LevelShift,
                        reason: format!(
                            "changepoint {at} samples ago: level {before:.4} -> {after:.4} ({shift:+.1} noise sd)"
                        ),
                    });
                    // Restart from the new level.
                    self.level = after;
                    self.up = 0.0;
                    self.down = 0.0;
                }
                None => {
                    score = score.min(0.49);
                    self.up = 0.0;
                    self.down = 0.0;
                    self.cooldown = config.cooldown;
                }
            }
        } else {
            if sum >= config.limit {
                score = score.min(0.49);
            }
            self.cooldown = self.cooldown.saturating_sub(1);
        }
        // The level follows slowly while nothing is going on; the noise scale learns Huber-clipped.
        if sum < config.limit {
            self.level += config.level_alpha * (value - self.level);
        }
        let clipped = (deviation * MEAN_ABS_TO_SD).min(config.limit * noise);
        self.noise += config.noise_alpha * (clipped - self.noise);
        Verdict { score, anomaly }
    }

    /// Runs augurs' BOCPD over the window; returns (samples ago, mean before, mean after) of a
    /// recent changepoint with a large enough shift.
    fn confirm(&self, config: &Config, noise: f64) -> Option<(usize, f64, f64)> {
        let values: Vec<f64> = self.window.iter().map(|v| (v - self.level) / noise).collect();
        let len = values.len();
        if len < 8 {
            return None;
        }
        let prior = NormalGamma::new_unchecked(0.0, 1.0, 1.0, 1.0);
        let mut bocpd = NormalGammaDetector::normal_gamma(config.hazard, prior);
        let changepoints = bocpd.detect_changepoints(&values);
        let at = changepoints.iter().rev().copied().find(|&cp| cp > 0 && cp + config.recent >= len && cp < len)?;
        let before = self.window.range(..at).sum::<f64>() / at as f64;
        let after = self.window.range(at..).sum::<f64>() / (len - at) as f64;
        ((after - before).abs() >= config.min_shift * noise).then_some((len - at, before, after))
    }
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
        self.series.process(batch, out, watched, |series, _, ts, value| series.observe(ts, value, config))
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
