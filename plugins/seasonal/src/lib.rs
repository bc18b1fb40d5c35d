//! Seasonal detector: MSTL decomposition with an ETS level (augurs), scoring every sample
//! against its one-step prediction interval.
//!
//! Per (router, metric), once `window` samples are collected (two periods by default), in
//! logarithms for the `log_metrics` (and for any positive series that varies by a factor of
//! ten over its first window):
//! 1. augurs' MSTL splits the window into a seasonal profile (the daily cycle) and a
//!    deseasonalised part, to which augurs' ETS fits an ETS(A,N,N) model (`LevelEts`): a
//!    level with additive errors, whose smoothing weight `alpha` and error sd `sigma` come from
//!    the fit. The profile is then smoothed by a running median (`running_median`);
//! 2. every new sample is forecast as `level + seasonal[phase]`, and the error is scored by the
//!    SDK's calibrator (seeded with the fit's `sigma`): how unlikely it is under the series'
//!    own recent errors, 0.5 at the decision, at least `threshold` robust sd for a single
//!    error. Normal samples update the level with `alpha`, exactly as the fitted ETS filter
//!    would; anomalous ones do not, until `level_shift_after` in a row on one side make a
//!    level shift, which is then accepted. Anomalies mark the onset of a departure and its
//!    updates (the SDK's episode);
//! 3. it refits every `refit_every` samples on the latest window.
//!
//! The fitted ETS model does not expose its parameters, so `alpha` is recovered from the
//! model's in-sample one-step forecasts (for ETS(A,N,N), `f[t+1] - f[t] = alpha (d[t] - f[t])`)
//! and `sigma` from its in-sample prediction interval.

mod config;

use std::collections::VecDeque;

use augurs::ets::model::{ErrorComponent, Model as EtsModel, ModelType, SeasonalComponent, TrendComponent, Unfit};
use augurs::mstl::{FittedTrendModel, MSTLModel, TrendModel};
use augurs::{Fit, Forecast, Predict};
use routewatch_plugin_sdk::calibrate::finite;
use routewatch_plugin_sdk::{
    Anomaly, AnomalyKind, Batch, Calibrator, Detector, Info, Judge, Output, Report, SeriesKey, SeriesTable, Verdict,
    episode, snapshot,
};
use serde::{Deserialize, Serialize};

pub use config::{Config, Cycle};

routewatch_plugin_sdk::export_detector!(Seasonal);

/// 2: the configuration gained `log_metrics`. 3: series carry the SDK's calibrator and
/// episode, and their own scale. 5: the cycle's lengths may be left to each series' interval
/// (a day), which series measure; version 4 is still read.
const SNAPSHOT_VERSION: u8 = 5;
const SNAPSHOT_VERSION_SAMPLES: u8 = 4;
/// Two-sided 95% normal quantile: the in-sample interval level asked of augurs.
const Z95: f64 = 1.959_963_984_540_054;

/// The seasonal detector.
#[derive(Debug, Default)]
pub struct Seasonal {
    config: Config,
    series: SeriesTable<Series>,
}

/// A fitted model, advanced one sample at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fitted {
    /// One period of the seasonal component; `profile[phase]` belongs to the next sample.
    profile: Vec<f32>,
    phase: usize,
    level: f64,
    alpha: f64,
    sigma: f64,
}

/// One (router, metric) series, with its sampling rate of type `R`: a [`Rate`] now, nothing in
/// snapshot version 4 ([`SeriesV4`]); the rest of the layout is the same in both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesOf<R> {
    last_ts: Option<i64>,
    /// The latest samples (anomalies replaced by their forecasts), for refits.
    history: VecDeque<f32>,
    since_fit: usize,
    model: Option<Fitted>,
    /// How the samples are modelled, decided at the first fit.
    scale: Option<Scale>,
    /// Calibrated scores of the one-step errors and the onsets of departures.
    judge: Judge,
    run_side: i8,
    run_len: u32,
    run_sum: f64,
    rate: R,
}

/// A series as the detector keeps it.
pub type Series = SeriesOf<Rate>;
/// A series as snapshot version 4 wrote it, before series measured their rate (`()` takes no
/// bytes in postcard).
type SeriesV4 = SeriesOf<()>;

impl SeriesV4 {
    /// A version-4 series ran with a period in samples, which its configuration keeps.
    fn upgrade(self) -> Series {
        let SeriesOf { last_ts, history, since_fit, model, scale, judge, run_side, run_len, run_sum, rate: () } = self;
        SeriesOf { last_ts, history, since_fit, model, scale, judge, run_side, run_len, run_sum, rate: Rate::default() }
    }
}

/// A series' sampling rate, as the length of its day in samples: its default period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Intervals (ms) between the first samples, until they decide `day`.
    intervals: Vec<i64>,
    day: Option<u32>,
}

impl Rate {
    /// Counts the interval to a new sample until [`config::INTERVALS`] of them decide the day:
    /// their median, so that a few gaps do not shorten it.
    fn observe(&mut self, interval_ms: i64) {
        if self.day.is_some() {
            return;
        }
        self.intervals.push(interval_ms);
        if self.intervals.len() >= config::INTERVALS {
            self.intervals.sort_unstable();
            let median = self.intervals[self.intervals.len() / 2];
            self.day = Some(config::period_of_a_day(median) as u32);
            self.intervals = Vec::new();
        }
    }

    /// Samples in a day at the series' interval, once known.
    fn day(&self) -> Option<usize> {
        self.day.map(|d| d as usize)
    }

    /// Whether a restored rate is one `observe` could have made.
    fn is_sound(&self) -> bool {
        self.intervals.len() < config::INTERVALS
            && self.day.is_none_or(|d| (2..=config::MAX_PERIOD).contains(&(d as usize)))
    }
}

/// How a metric's samples are modelled: as they are, or in logarithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Scale {
    Linear,
    Log,
}

impl Scale {
    /// Zero (a link with no traffic) maps to a very low log, so that it still stands out.
    const LOG_FLOOR: f64 = 1e-6;

    fn to_model(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            // A gap stays a gap (`f64::max` would make NaN the floor, and the gap a dip).
            Scale::Log if v.is_nan() => v,
            Scale::Log => v.max(Self::LOG_FLOOR).ln(),
        }
    }

    fn to_metric(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log => finite(v.exp()),
        }
    }

    /// The scale for a series of no configured scale, from its first window: logarithms
    /// when every sample is positive and the series varies by an order of magnitude (traffic
    /// over a day: its noise grows with its level), otherwise the samples as they are.
    fn choose(history: &VecDeque<f32>) -> Scale {
        let (mut lo, mut hi) = (f32::INFINITY, 0f32);
        for &v in history {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > 0.0 && hi >= 10.0 * lo && hi.is_finite() { Scale::Log } else { Scale::Linear }
    }
}

impl Series {
    /// Scores one sample and learns from it; `key` spreads the first fit of a fleet's series
    /// (see below).
    fn observe(
        &mut self,
        ts: i64,
        raw: f64,
        metric: &str,
        named: Option<Scale>,
        config: &Config,
        key: SeriesKey,
    ) -> Verdict {
        let quiet = Verdict { score: 0.0, anomaly: None };
        if self.last_ts.is_some_and(|last| ts <= last) {
            return quiet;
        }
        // The default period is a day at the series' own interval.
        if let Some(last) = self.last_ts {
            self.rate.observe(ts - last);
        }
        self.last_ts = Some(ts);
        let cycle = config.cycle(self.rate.day());
        // Before the first fit the samples are kept as they are; the fit decides the scale.
        let scale = self.scale.unwrap_or(Scale::Linear);
        let value = scale.to_model(raw);
        let mut kept = value;
        let mut verdict = quiet;
        if let Some(model) = &mut self.model {
            let seasonal = f64::from(model.profile[model.phase]);
            model.phase = (model.phase + 1) % model.profile.len();
            if value.is_finite() {
                let expected = model.level + seasonal;
                let residual = value - expected;
                let calibration = self.judge.calibrator.observe(value, expected, config.threshold);
                verdict.score = calibration.score;
                let kind = if calibration.run >= 2 {
                    AnomalyKind::LevelShift
                } else if residual > 0.0 {
                    AnomalyKind::Spike
                } else {
                    AnomalyKind::Dip
                };
                let report = self.judge.episode.step(calibration.anomalous(), kind);
                if !calibration.anomalous() {
                    self.run_len = 0;
                    model.level += model.alpha * (value - seasonal - model.level);
                } else {
                    let side: i8 = if residual > 0.0 { 1 } else { -1 };
                    if self.run_side != side {
                        self.run_side = side;
                        self.run_len = 0;
                        self.run_sum = 0.0;
                    }
                    self.run_len += 1;
                    self.run_sum += residual;
                    if self.run_len >= config.level_shift_after {
                        // A lasting move: take the new level.
                        model.level = finite(model.level + self.run_sum / f64::from(self.run_len));
                        self.run_len = 0;
                        self.run_sum = 0.0;
                    } else {
                        kept = expected;
                    }
                }
                if report != Report::None {
                    let (lower, upper) = self.judge.calibrator.band(expected, config.threshold);
                    let (lower, upper) = (finite(scale.to_metric(lower)), finite(scale.to_metric(upper)));
                    let expected = finite(scale.to_metric(expected));
                    verdict.anomaly = Some(Anomaly {
                        row: 0,
                        column: 0,
                        observed: raw,
                        expected,
                        lower,
                        upper,
                        score: calibration.score,
                        kind,
                        reason: episode::describe(
                            metric,
                            kind,
                            expected,
                            raw,
                            calibration.run,
                            report == Report::Update,
                        ),
                    });
                }
            } else {
                kept = model.level + seasonal;
            }
        } else {
            self.judge.calibrator.learn_value(value);
        }
        if !kept.is_finite() {
            return verdict;
        }
        self.history.push_back(kept as f32);
        // Until the period is known the history is kept up to the longest window.
        let window = cycle.map_or(config::MAX_WINDOW, |c| c.window);
        while self.history.len() > window {
            self.history.pop_front();
        }
        self.since_fit += 1;
        let Some(cycle) = cycle else { return verdict };
        let due = match self.model {
            // After two periods and the series' own share of a quarter period more. A fit of
            // two days at 60 s costs about 10 ms in Wasm, and a fleet that starts together
            // fitted all its series in one call: the sandbox stopped seasonal there on a
            // partition of 1,000 routers. Spread over a quarter period, 10,000 series fit about
            // 28 a sample (about 0.3 s), and the refits, a period after each first fit, stay
            // spread. A longer spread would leave more of a series' third day unscored.
            None => self.since_fit >= cycle.window + key.share(cycle.period / 4),
            Some(_) => self.since_fit >= cycle.refit_every,
        };
        if due {
            self.since_fit = 0;
            if self.scale.is_none() {
                let chosen = named.unwrap_or_else(|| Scale::choose(&self.history));
                if chosen == Scale::Log {
                    self.history.iter_mut().for_each(|v| *v = Scale::Log.to_model(f64::from(*v)) as f32);
                    self.judge.calibrator = Calibrator::default();
                    self.history.iter().for_each(|&v| self.judge.calibrator.learn_value(f64::from(v)));
                }
                self.scale = Some(chosen);
            }
            let history: Vec<f64> = self.history.iter().map(|&v| f64::from(v)).collect();
            if history.iter().all(|v| v.is_finite())
                && let Some(model) = fit(&history, cycle.period)
            {
                if self.model.is_none() {
                    self.judge.calibrator.seed(model.sigma);
                }
                self.model = Some(model);
            }
        }
        verdict
    }
}

/// ETS(A,N,N) as MSTL's trend model, fitted directly. augurs 0.10's `AutoETS` finds no model
/// for any spec without a trend ("ANN" fails with `NoModelFound`: its candidate list for a
/// trend of `N` is empty), so the one model wanted is fitted without the search.
#[derive(Debug)]
struct LevelEts;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl TrendModel for LevelEts {
    fn name(&self) -> std::borrow::Cow<'_, str> {
        "ETS(A,N,N)".into()
    }

    fn fit(&self, y: &[f64]) -> Result<Box<dyn FittedTrendModel + Sync + Send>, BoxError> {
        let model_type =
            ModelType { error: ErrorComponent::Additive, trend: TrendComponent::None, season: SeasonalComponent::None };
        let model = Unfit::new(model_type).damped(false).fit(y)?;
        Ok(Box::new(FittedLevelEts(model)))
    }
}

#[derive(Debug)]
struct FittedLevelEts(EtsModel);

impl FittedTrendModel for FittedLevelEts {
    fn predict_inplace(&self, horizon: usize, level: Option<f64>, forecast: &mut Forecast) -> Result<(), BoxError> {
        Ok(self.0.predict_inplace(horizon, level, forecast)?)
    }

    fn predict_in_sample_inplace(&self, level: Option<f64>, forecast: &mut Forecast) -> Result<(), BoxError> {
        Ok(self.0.predict_in_sample_inplace(level, forecast)?)
    }

    fn training_data_size(&self) -> Option<usize> {
        Some(self.0.training_data_size())
    }
}

/// Fits MSTL + ETS(A,N,N) on `y` and returns the model ready to forecast the next sample.
fn fit(y: &[f64], period: usize) -> Option<Fitted> {
    let mstl = MSTLModel::new(vec![period], LevelEts);
    let fitted = mstl.fit(y).ok()?;
    let in_sample = fitted.predict_in_sample(Z95_LEVEL).ok()?;
    let seasonal = fitted.fit().seasonal().first()?;
    let n = y.len();
    if seasonal.len() != n || in_sample.point.len() != n {
        return None;
    }
    // Deseasonalised data and the ETS filter's one-step forecasts of it.
    let d: Vec<f64> = y.iter().zip(seasonal).map(|(v, s)| v - f64::from(*s)).collect();
    let f: Vec<f64> = in_sample.point.iter().zip(seasonal).map(|(p, s)| p - f64::from(*s)).collect();
    let (mut num, mut den) = (0.0, 0.0);
    for t in 0..n - 1 {
        let e = d[t] - f[t];
        num += (f[t + 1] - f[t]) * e;
        den += e * e;
    }
    let alpha = if den > 0.0 { (num / den).clamp(0.0, 1.0) } else { 0.0 };
    let sigma = match &in_sample.intervals {
        Some(iv) if !iv.upper.is_empty() => {
            let i = iv.upper.len() - 1;
            (iv.upper[i] - iv.lower[i]) / (2.0 * Z95)
        }
        _ => {
            let sse: f64 = d.iter().zip(&f).map(|(a, b)| (a - b).powi(2)).sum();
            (sse / n as f64).sqrt()
        }
    };
    if !(sigma.is_finite() && alpha.is_finite()) {
        return None;
    }
    let level = f[n - 1] + alpha * (d[n - 1] - f[n - 1]);
    // In-sample errors understate what is coming: the seasonal profile was fitted to the same
    // noise, from only window / period cycles, each phase's estimate carrying a share of it.
    let sigma = sigma * (1.0 + period as f64 / n as f64).sqrt();
    let profile = running_median(&seasonal[n - period..], period / PROFILE_MEDIAN_DIVISOR);
    Some(Fitted { profile, phase: 0, level, alpha, sigma })
}

const Z95_LEVEL: f64 = 0.95;

/// The profile is smoothed by a running median `period / 16` samples to each side (90 minutes
/// of a daily cycle at one sample a minute). With only two cycles in the window, STL cannot
/// tell a fault from the pattern: an hour of CPU runaway yesterday becomes a bump in the
/// profile and an alarm at the same time today. A daily cycle is smooth; a bump shorter than
/// the median's half-width is not part of it.
const PROFILE_MEDIAN_DIVISOR: usize = 16;

/// Circular running median of `profile`, `half` samples to each side.
fn running_median(profile: &[f32], half: usize) -> Vec<f32> {
    let n = profile.len();
    if half == 0 || n < 2 * half + 1 {
        return profile.to_vec();
    }
    let mut window = Vec::with_capacity(2 * half + 1);
    (0..n)
        .map(|i| {
            window.clear();
            window.extend((0..=2 * half).map(|k| profile[(i + n - half + k) % n]));
            *window.select_nth_unstable_by(half, f32::total_cmp).1
        })
        .collect()
}

impl Detector for Seasonal {
    fn info() -> Info {
        Info {
            name: "seasonal".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "MSTL seasonal profile with an ETS level (augurs); flags samples outside the one-step \
                          prediction interval"
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
        let watch = |metric: &str| {
            let watched = config.metrics.is_empty() || config.metrics.iter().any(|m| m == metric);
            let log = config.log_metrics.iter().any(|m| m == metric);
            watched.then_some(log.then_some(Scale::Log))
        };
        self.series.process_keyed(batch, out, watch, |series, key, metric, &named, ts, value| {
            series.observe(ts, value, metric, named, config, key)
        })
    }

    fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(SNAPSHOT_VERSION, &(&self.config, &self.series))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (config, series): (Config, SeriesTable<Series>) = if bytes.first() == Some(&SNAPSHOT_VERSION_SAMPLES) {
            let (config, series): (config::ConfigV4, SeriesTable<SeriesV4>) =
                snapshot::decode(bytes, SNAPSHOT_VERSION_SAMPLES, "seasonal")?;
            (config.upgrade(), series.map(SeriesV4::upgrade))
        } else {
            snapshot::decode(bytes, SNAPSHOT_VERSION, "seasonal")?
        };
        // A snapshot's configuration passes the checks `configure` makes.
        config.check().map_err(|e| format!("corrupt seasonal snapshot: {e}"))?;
        series.check().map_err(|e| format!("corrupt seasonal snapshot: {e}"))?;
        let bad_model =
            |s: &Series| s.model.as_ref().is_some_and(|m| m.profile.is_empty() || m.phase >= m.profile.len());
        if series.iter().any(bad_model) {
            return Err("corrupt seasonal snapshot: a fitted model has no profile".into());
        }
        if !series.iter().all(|s| s.rate.is_sound()) {
            return Err("corrupt seasonal snapshot: a sampling rate out of range".into());
        }
        self.config = config;
        self.series = series;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first series, whose first fit is not put off.
    const FIRST: SeriesKey = SeriesKey { router: 0, metric: 0 };

    /// A daily-like cycle with a little deterministic noise.
    fn cycle(n: usize, period: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let phase = i as f64 * std::f64::consts::TAU / period as f64;
                let noise = ((i * 7919 % 13) as f64 / 13.0 - 0.5) * 0.1;
                10.0 + phase.sin() + noise
            })
            .collect()
    }

    #[test]
    fn fits_the_cycle_and_forecasts_the_next_sample() {
        let y = cycle(120, 60);
        let model = fit(&y, 60).expect("MSTL + ETS(A,N,N) fits a clean cycle");
        assert_eq!(model.profile.len(), 60);
        assert!((0.0..=1.0).contains(&model.alpha), "alpha {}", model.alpha);
        assert!(model.sigma > 0.0 && model.sigma < 0.2, "sigma {} for noise of sd 0.03", model.sigma);
        // Sample 120 is at phase 0 of the cycle again: sin(0) = 0 around a level of 10.
        let forecast = model.level + f64::from(model.profile[0]);
        assert!((forecast - 10.0).abs() < 0.15, "forecast {forecast}");
    }

    #[test]
    fn flags_a_spike_and_stays_quiet_on_the_cycle() {
        let config = Config::parse(r#"{"period": 60, "window": 120, "refit_every": 60}"#).unwrap();
        let y = cycle(400, 60);
        let mut series = Series::default();
        let mut found = Vec::new();
        for (i, &v) in y.iter().enumerate() {
            let v = if i == 300 { v + 3.0 } else { v };
            if let Some(a) = series.observe(i as i64, v, "cpu_util", Some(Scale::Linear), &config, FIRST).anomaly {
                found.push((i, a.kind));
            }
        }
        assert_eq!(found, vec![(300, AnomalyKind::Spike)]);
    }

    /// By default the period is a day at the series' own interval: a series sampled every
    /// five minutes is judged from its third day (two days of 288 samples), not left silent
    /// for ten days as a fixed 2,880-sample window would leave it; one every minute is fitted
    /// on 1,440-sample days as before.
    #[test]
    fn the_default_period_is_a_day_at_the_series_interval() {
        for (interval_ms, day) in [(300_000i64, 288usize), (60_000, 1440)] {
            let config = Config::default();
            let y = cycle(3 * day, day);
            let mut series = Series::default();
            let mut found = Vec::new();
            let mut first_scored = None;
            for (i, &v) in y.iter().enumerate() {
                let v = if i == 2 * day + day / 2 { v + 3.0 } else { v };
                let verdict =
                    series.observe(i as i64 * interval_ms, v, "cpu_util", Some(Scale::Linear), &config, FIRST);
                if verdict.score > 0.0 && first_scored.is_none() {
                    first_scored = Some(i);
                }
                if let Some(a) = verdict.anomaly {
                    found.push((i, a.kind));
                }
            }
            assert_eq!(series.rate.day(), Some(day), "{interval_ms} ms");
            assert_eq!(series.model.as_ref().map(|m| m.profile.len()), Some(day));
            assert_eq!(first_scored, Some(2 * day), "{interval_ms} ms: scored from the first sample after two days");
            assert_eq!(found, vec![(2 * day + day / 2, AnomalyKind::Spike)], "{interval_ms} ms");
        }
    }

    /// A version-4 snapshot (lengths in samples) is still read, its lengths kept as set.
    #[test]
    fn a_version_4_snapshot_is_read_with_its_lengths() {
        let old_config = (60usize, 150usize, 45usize, 6.0f64, 3u32, Vec::<String>::new(), vec!["rx_bps".to_owned()]);
        let bytes = snapshot::encode(SNAPSHOT_VERSION_SAMPLES, &(old_config, SeriesTable::<SeriesV4>::default()));
        let mut detector = Seasonal::default();
        detector.restore(&bytes).unwrap();
        assert_eq!(detector.config.period, Some(60));
        assert_eq!(detector.config.cycle(Some(288)), Some(Cycle { period: 60, window: 150, refit_every: 45 }));
        assert_eq!(detector.config.log_metrics, vec!["rx_bps".to_owned()]);
        assert_eq!(detector.snapshot()[0], SNAPSHOT_VERSION);
    }

    /// A snapshot whose series carries a day of 0 samples (a period `fit` cannot take) is
    /// refused, and the state stays as it was.
    #[test]
    fn a_snapshot_with_a_rate_out_of_range_is_refused() {
        let mut detector = Seasonal::default();
        let batch = Batch::new(&[0], &[0], vec![("cpu_util", &[1.0][..])]);
        detector.process(&batch, &mut Output::default()).unwrap();
        let before = detector.snapshot();
        let table = detector.series.clone().map(|mut s| {
            s.rate.day = Some(0);
            s
        });
        let bytes = snapshot::encode(SNAPSHOT_VERSION, &(&detector.config, &table));
        let err = detector.restore(&bytes).unwrap_err();
        assert!(err.contains("sampling rate"), "{err}");
        assert_eq!(detector.snapshot(), before);
    }

    #[test]
    fn the_profile_median_removes_short_bumps_and_keeps_the_cycle() {
        // A daily cycle at one sample a minute, and an hour-long fault of five times its swing.
        let period = 1440;
        let cycle: Vec<f32> = (0..period).map(|i| (i as f32 * std::f32::consts::TAU / period as f32).sin()).collect();
        let mut bumped = cycle.clone();
        for v in &mut bumped[600..660] {
            *v += 5.0;
        }
        // The bump is gone. Beside it the median lags on the slope by up to half the bump (30
        // samples here), by under a quarter of the swing: far less than the bump, and less
        // than a fault.
        let smoothed = running_median(&bumped, period / PROFILE_MEDIAN_DIVISOR);
        for (i, (s, c)) in smoothed.iter().zip(&cycle).enumerate() {
            assert!((s - c).abs() < 0.25, "phase {i}: {s} vs {c}");
        }
        // The window wraps around the cycle's end.
        assert!((running_median(&cycle, period / PROFILE_MEDIAN_DIVISOR)[0] - cycle[0]).abs() < 0.01);
    }

    #[test]
    fn log_scale_reports_in_the_metric_units() {
        let config = Config::parse(r#"{"period": 60, "window": 120, "refit_every": 60}"#).unwrap();
        let mut series = Series::default();
        let mut found = Vec::new();
        for (i, v) in cycle(400, 60).into_iter().enumerate() {
            // Traffic-like: a cycle around 1e9 whose noise is relative; zero at sample 300.
            let v = if i == 300 { 0.0 } else { 1e9 * (v / 10.0) };
            if let Some(a) = series.observe(i as i64, v, "rx_bps", Some(Scale::Log), &config, FIRST).anomaly {
                found.push(a);
            }
        }
        assert_eq!(found.len(), 1, "{found:?}");
        let a = &found[0];
        assert_eq!((a.kind, a.observed), (AnomalyKind::Dip, 0.0));
        assert!((a.expected - 1e9).abs() < 2e7, "expected {} in bytes per second", a.expected);
        assert!(a.lower < a.expected && a.expected < a.upper && a.lower > 0.0);
    }

    #[test]
    fn a_gap_in_a_log_series_is_a_gap_not_a_dip() {
        let config = Config::parse(r#"{"period": 60, "window": 120, "refit_every": 60}"#).unwrap();
        let mut series = Series::default();
        for (i, v) in cycle(400, 60).into_iter().enumerate() {
            let v = if i % 50 == 7 { f64::NAN } else { 1e9 * (v / 10.0) };
            let verdict = series.observe(i as i64, v, "rx_bps", Some(Scale::Log), &config, FIRST);
            assert!(verdict.anomaly.is_none(), "sample {i}: {:?}", verdict.anomaly);
            if v.is_nan() {
                assert_eq!(verdict.score, 0.0, "sample {i}: a gap has no score");
            }
        }
    }
}
