//! The forecast stage: a slow fault seen coming. Per router and watched metric, a robust,
//! exponentially weighted linear trend with a prediction interval; when the trend reaches a
//! level that hurts (memory about to run out, a chassis about to throttle) within the
//! horizon, the stage raises a *predicted* incident with an ETA and its interval, for example
//! `mem_util reaches 0.98 in about 2h10m (80%: 1h40m to 2h50m)`. The ETA is updated as data
//! comes in; the incident is withdrawn when the trend goes away and resolved (`reached`) when
//! the metric gets there.
//!
//! # The model
//!
//! A weighted least-squares line through the series, the weight of a sample halving every
//! `half_life_samples` ([`ForecastTarget`]). Its state is seven running sums, updated in O(1)
//! per sample and exact in a snapshot. Three things keep it honest on real telemetry:
//!
//! * **Heavy tails.** A sample further than 3 residual sd from the line is clipped to 3 sd
//!   before it is learned (Huber's rule), so one spike does not bend the trend. Five clipped
//!   samples in a row on one side are a level shift (a reboot, a migration): the fit starts
//!   again from the new level.
//! * **Dependence.** Telemetry residuals are autocorrelated, which makes the textbook standard
//!   error of a slope far too small. The slope's variance is inflated by `(1 + r) / (1 - r)`,
//!   `r` the measured lag-one autocorrelation of the one-step residuals (the AR(1) correction
//!   of, for example, Box, Jenkins and Reinsel, *Time Series Analysis*, for the variance of a
//!   mean under AR(1) errors).
//! * **Persistence.** A warning opens only once its condition held for `confirm_samples`
//!   samples in a row, and is withdrawn only once the trend has been gone as long.
//!
//! The ETA is where the line crosses the threshold; its interval takes the slope's
//! `confidence` interval (two-sided, 80% by default). A warning needs the whole interval of
//! the slope to point at the threshold (its lower bound above zero), and the ETA within
//! `horizon_samples`.
//!
//! Time is event time, as in the router stage: a replay gives the same predictions. State is
//! per router and metric, so the stage runs per partition of `router-metrics`, beside the
//! router stage, and its snapshot moves with the partition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::router::{Change, Incident, IncidentUpdate, Severity, State};
use crate::snapshot::{self, SnapshotError};
use crate::{ConfigError, MAX_ID_BYTES};

/// The name of the stage's detector in incidents it raises.
pub const FORECAST_DETECTOR: &str = "forecast";

/// Clipped samples in a row (one side) that make a level shift.
const SHIFT_AFTER: u8 = 5;
/// Huber clip, in residual sd.
const CLIP_SD: f64 = 3.0;
/// Targets a configuration may have.
const MAX_TARGETS: usize = 32;

/// One metric the stage forecasts, and the level it warns about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastTarget {
    /// The metric's wire name (any: `mem_util`, `temp_c`, a custom one).
    pub metric: String,
    /// The level that hurts.
    pub threshold: f64,
    /// Whether the trouble is the metric falling to the threshold (fan speed, free disk)
    /// rather than rising to it.
    #[serde(default)]
    pub falling: bool,
    /// Samples after which a sample's weight in the trend has halved: how far back the trend
    /// looks. A fit needs half of it (and at least 5 samples) before it may warn.
    pub half_life_samples: u32,
    /// How far ahead a warning may be, in samples.
    pub horizon_samples: u32,
    /// Per-sample damping of the trend when projected (1: a straight line). A damped trend
    /// (Gardner and McKenzie, 1985; among the most accurate simple methods in the M3
    /// forecasting competition) levels off: a metric that follows its cause with a lag, as a
    /// chassis' temperature follows its heat with a time constant of minutes, approaches a
    /// plateau, and a straight line through its rise overshoots it. With damping `d` the
    /// trend adds at most `slope * d / (1 - d)` in all.
    #[serde(default = "no_damping")]
    pub damping: f64,
}

fn no_damping() -> f64 {
    1.0
}

/// How the forecast stage warns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForecastConfig {
    /// The fleet's sampling interval, ms. Not read from a configuration file: a host takes
    /// its incident stage's (`RouterConfig::interval_ms`), so the fleet has one interval.
    #[serde(skip)]
    pub interval_ms: i64,
    /// Two-sided confidence of the ETA interval (and of the slope a warning needs).
    pub confidence: f64,
    /// Samples in a row a warning's condition must hold before it opens, and be gone before
    /// it is withdrawn.
    pub confirm_samples: u32,
    /// Series (router and metric) the stage keeps at most; samples of further series are
    /// ignored. Bounds memory and snapshot size (a few hundred bytes a series, in JSON).
    pub max_series: usize,
    /// What is forecast.
    pub targets: Vec<ForecastTarget>,
}

impl Default for ForecastConfig {
    /// Memory about to run out and a chassis about to throttle. The levels are the usual
    /// vendor figures (an allocator fails near full memory; CPUs throttle around 75 C at the
    /// chassis sensor), not values fitted to a simulator; set your platform's.
    fn default() -> ForecastConfig {
        ForecastConfig {
            interval_ms: 60_000,
            confidence: 0.8,
            confirm_samples: 3,
            max_series: 1_000_000,
            targets: vec![
                ForecastTarget {
                    metric: "mem_util".into(),
                    threshold: 0.98,
                    falling: false,
                    half_life_samples: 60,
                    horizon_samples: 6 * 60,
                    // A leak grows steadily until something gives.
                    damping: 1.0,
                },
                ForecastTarget {
                    metric: "temp_c".into(),
                    threshold: 75.0,
                    falling: false,
                    half_life_samples: 10,
                    horizon_samples: 60,
                    // A thermal time constant of about 4.5 minutes at one sample a minute
                    // (`d = exp(-1 / tau)`); set your chassis'.
                    damping: 0.8,
                },
            ],
        }
    }
}

impl ForecastConfig {
    /// Checks that the configuration can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.interval_ms <= 0 || self.interval_ms > 86_400_000 {
            return bad("forecast interval_ms must be 1 ms to one day".into());
        }
        if !(0.5..1.0).contains(&self.confidence) {
            return bad(format!("forecast confidence must be in [0.5, 1), got {}", self.confidence));
        }
        if self.confirm_samples == 0 || self.confirm_samples > 1000 {
            return bad("forecast confirm_samples must be 1 to 1000".into());
        }
        if self.max_series == 0 || self.max_series > 10_000_000 {
            return bad("forecast max_series must be 1 to 10,000,000".into());
        }
        if self.targets.len() > MAX_TARGETS {
            return bad(format!("at most {MAX_TARGETS} forecast targets"));
        }
        for (i, t) in self.targets.iter().enumerate() {
            if t.metric.is_empty() || t.metric.len() > MAX_ID_BYTES {
                return bad(format!("forecast target {i}: metric must be 1 to {MAX_ID_BYTES} bytes"));
            }
            if self.targets[..i].iter().any(|o| o.metric == t.metric) {
                return bad(format!("forecast target {}: given twice", t.metric));
            }
            if !t.threshold.is_finite() {
                return bad(format!("forecast target {}: threshold must be finite", t.metric));
            }
            if !(0.5..=1.0).contains(&t.damping) {
                return bad(format!("forecast target {}: damping must be in [0.5, 1]", t.metric));
            }
            if !(2..=100_000).contains(&t.half_life_samples) || !(1..=1_000_000).contains(&t.horizon_samples) {
                return bad(format!(
                    "forecast target {}: half_life_samples must be 2 to 100,000 and horizon_samples 1 to 1,000,000",
                    t.metric
                ));
            }
        }
        Ok(())
    }
}

/// What became of a predicted incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The metric got to the threshold.
    Reached,
    /// The trend went away first.
    Withdrawn,
}

/// What a predicted incident predicts (in [`Incident::prediction`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub metric: String,
    pub threshold: f64,
    pub falling: bool,
    /// The trend's level at the latest sample.
    pub level: f64,
    /// The trend's slope, metric units per hour.
    pub slope_per_hour: f64,
    /// Event time of the latest sample, ms: what the ETA is counted from.
    pub as_of: i64,
    /// Event time the trend reaches the threshold, ms.
    pub eta: i64,
    /// The ETA's interval at `confidence`; `eta_latest` is absent when the slower end of the
    /// slope's interval never gets there.
    pub eta_earliest: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_latest: Option<i64>,
    pub confidence: f64,
    /// Set once it is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// For people, e.g. `mem_util reaches 0.98 in about 2h10m (80%: 1h40m to 2h50m)`.
    pub summary: String,
}

/// The trend of one series: exponentially weighted sums, time in samples counted back from
/// the latest sample (0), values relative to `origin` (the first value of the fit), so that
/// neither large timestamps nor large values cost precision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Trend {
    n: u32,
    origin: f64,
    w: f64,
    w2: f64,
    t: f64,
    tt: f64,
    y: f64,
    ty: f64,
    yy: f64,
    /// The previous one-step residual, and the weighted sums of residual products and squares.
    previous: Option<f64>,
    rlag: f64,
    rr: f64,
    /// Clipped samples in a row, signed by side, and their values as they came (a level
    /// shift's fit starts from them, so that a fast ramp is a trend at once, not a wait).
    clipped: i8,
    shifted: Vec<f64>,
}

/// A fitted line at the latest sample.
#[derive(Debug, Clone, Copy)]
struct Fit {
    level: f64,
    slope: f64,
    slope_sd: f64,
    residual_sd: f64,
}

impl Trend {
    fn fit(&self) -> Option<Fit> {
        if self.n < 3 || self.w <= 0.0 {
            return None;
        }
        let (tm, ym) = (self.t / self.w, self.y / self.w);
        let sxx = self.tt / self.w - tm * tm;
        if sxx <= 0.0 {
            return None;
        }
        let sxy = self.ty / self.w - tm * ym;
        let syy = (self.yy / self.w - ym * ym).max(0.0);
        let slope = sxy / sxx;
        let neff = self.w * self.w / self.w2;
        if neff <= 2.0 {
            return None;
        }
        let residual_var = (syy - slope * sxy).max(0.0) * neff / (neff - 2.0);
        let r = if self.rr > 0.0 { (self.rlag / self.rr).clamp(0.0, 0.95) } else { 0.0 };
        let slope_var = residual_var / (sxx * neff) * (1.0 + r) / (1.0 - r);
        let level = self.origin + ym - slope * tm;
        Some(Fit { level, slope, slope_sd: slope_var.sqrt(), residual_sd: residual_var.sqrt() })
    }

    /// Learns `value`, `steps` samples after the previous one, with per-sample decay `decay`;
    /// whether it was a level shift (the fit started again).
    fn learn(&mut self, value: f64, steps: f64, decay: f64, warm: u32) -> bool {
        let fit = self.fit().filter(|_| self.n >= warm);
        let mut y = value;
        if let Some(fit) = fit {
            let expected = fit.level + fit.slope * steps;
            let limit = CLIP_SD * fit.residual_sd.max(1e-9 * (1.0 + expected.abs()));
            let residual = value - expected;
            if residual.abs() > limit {
                let side = if residual > 0.0 { 1 } else { -1 };
                if self.clipped.signum() != side {
                    self.shifted.clear();
                }
                self.clipped = if self.clipped.signum() == side { self.clipped + side } else { side };
                self.shifted.push(value);
                if self.clipped.unsigned_abs() >= SHIFT_AFTER {
                    let shifted = std::mem::take(&mut self.shifted);
                    *self = Trend::default();
                    for v in shifted {
                        self.learn(v, 1.0, decay, warm);
                    }
                    return true;
                }
                y = expected + limit * f64::from(side);
            } else {
                self.clipped = 0;
                self.shifted.clear();
            }
            let r = y - expected;
            let d = decay.powf(steps);
            if let Some(previous) = self.previous {
                self.rlag = d * self.rlag + r * previous;
            }
            self.rr = d * self.rr + r * r;
            self.previous = Some(r);
        }
        if self.n == 0 {
            self.origin = value;
        }
        let d = decay.powf(steps);
        // Every earlier sample is now `steps` further back.
        self.tt = d * (self.tt - 2.0 * steps * self.t + steps * steps * self.w);
        self.t = d * (self.t - steps * self.w);
        self.ty = d * (self.ty - steps * self.y);
        self.w = d * self.w + 1.0;
        self.w2 = d * d * self.w2 + 1.0;
        let v = y - self.origin;
        self.y = d * self.y + v;
        self.yy = d * self.yy + v * v;
        self.n = self.n.saturating_add(1);
        false
    }
}

/// The open warning of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Open {
    incident: Incident,
    /// The ETA last told, ms.
    told_eta: i64,
}

/// One router's metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Series {
    router: String,
    site: Option<String>,
    role: Option<String>,
    last_ts: i64,
    trend: Trend,
    /// Samples in a row the warning's condition held (closed) or failed (open).
    streak: u32,
    /// Samples left in which no new warning opens: after a threshold was reached, the
    /// metric hovering around it is the incident's business, not a new prediction's.
    quiet: u32,
    open: Option<Open>,
}

/// A router's sample of one metric, as the stage takes it.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub router: &'a str,
    pub site: Option<&'a str>,
    pub role: Option<&'a str>,
    pub metric: &'a str,
    /// Event time, ms.
    pub ts: i64,
    pub value: f64,
}

/// Predicted incidents of one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastStage {
    config: ForecastConfig,
    z: f64,
    /// By (router, target index).
    series: BTreeMap<(String, u16), Series>,
    refused: u64,
}

#[derive(Serialize, Deserialize)]
struct State1 {
    series: Vec<((String, u16), Series)>,
    refused: u64,
}

impl ForecastStage {
    pub fn new(config: ForecastConfig) -> Result<ForecastStage, ConfigError> {
        config.validate()?;
        let z = normal_quantile(0.5 + config.confidence / 2.0);
        Ok(ForecastStage { config, z, series: BTreeMap::new(), refused: 0 })
    }

    pub fn config(&self) -> &ForecastConfig {
        &self.config
    }

    /// The index of `metric`'s target, if it is forecast.
    pub fn target(&self, metric: &str) -> Option<usize> {
        self.config.targets.iter().position(|t| t.metric == metric)
    }

    /// The open predicted incidents.
    pub fn open(&self) -> impl Iterator<Item = &Incident> {
        self.series.values().filter_map(|s| s.open.as_ref().map(|o| &o.incident))
    }

    /// Samples of new series ignored because the stage held `max_series` already.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Takes one sample of target `target` (see [`ForecastStage::target`]). Samples that are
    /// not finite, not newer than the series' last, or with names over [`MAX_ID_BYTES`] are
    /// ignored.
    pub fn observe(&mut self, target: usize, sample: Sample<'_>) -> Option<IncidentUpdate> {
        let long = |s: &str| s.len() > MAX_ID_BYTES;
        let spec = self.config.targets.get(target)?;
        if !sample.value.is_finite()
            || long(sample.router)
            || sample.site.is_some_and(long)
            || sample.role.is_some_and(long)
        {
            return None;
        }
        let key = (sample.router.to_owned(), target as u16);
        if !self.series.contains_key(&key) {
            if self.series.len() >= self.config.max_series {
                self.refused += 1;
                return None;
            }
            self.series.insert(
                key.clone(),
                Series {
                    router: sample.router.to_owned(),
                    site: None,
                    role: None,
                    last_ts: i64::MIN,
                    trend: Trend::default(),
                    streak: 0,
                    quiet: 0,
                    open: None,
                },
            );
        }
        let series = self.series.get_mut(&key).expect("inserted above");
        if sample.ts <= series.last_ts {
            return None;
        }
        series.site = sample.site.map(str::to_owned);
        series.role = sample.role.map(str::to_owned);
        let interval = self.config.interval_ms as f64;
        let steps = if series.last_ts == i64::MIN { 1.0 } else { (sample.ts - series.last_ts) as f64 / interval };
        series.last_ts = sample.ts;
        let half_life = f64::from(spec.half_life_samples);
        if steps > 4.0 * half_life {
            // A gap longer than the trend remembers: start again.
            series.trend = Trend::default();
        }
        let decay = 0.5f64.powf(1.0 / half_life);
        if series.trend.learn(sample.value, steps.max(f64::MIN_POSITIVE), decay, warm_samples(spec)) {
            // A new level (a reboot freed the memory): whatever was reached is over.
            series.quiet = 0;
        }
        step(series, spec, &self.config, self.z, sample)
    }

    /// The whole state, framed and versioned. The configuration is not in it: the restoring
    /// owner brings its own, and series of metrics it no longer forecasts are dropped.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let state = State1 {
            series: self.series.iter().map(|(k, v)| ((k.0.clone(), k.1), v.clone())).collect(),
            refused: self.refused,
        };
        snapshot::encode(snapshot::FORECAST_MAGIC, &state)
    }

    /// A stage with `config` and the state of `bytes`. The snapshot's targets are matched by
    /// metric name against `config`'s.
    pub fn restore(config: ForecastConfig, bytes: &[u8]) -> Result<ForecastStage, SnapshotError> {
        let mut stage = ForecastStage::new(config).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        let state: State1 = snapshot::decode(snapshot::FORECAST_MAGIC, bytes)?;
        if state.series.len() > stage.config.max_series {
            return Err(SnapshotError::Invalid(format!(
                "{} series, over max_series {}",
                state.series.len(),
                stage.config.max_series
            )));
        }
        for ((router, target), series) in state.series {
            if router.len() > MAX_ID_BYTES || series.router != router {
                return Err(SnapshotError::Invalid("a series' router does not match its key".into()));
            }
            let Some(spec) = stage.config.targets.get(usize::from(target)) else { continue };
            let named = series.open.as_ref().and_then(|o| o.incident.prediction.as_ref()).map(|p| p.metric.as_str());
            if named.is_some_and(|m| m != spec.metric) {
                continue;
            }
            stage.series.insert((router, target), series);
        }
        stage.refused = state.refused;
        Ok(stage)
    }
}

/// Samples until a damped trend (Gardner and McKenzie's: the step `h` ahead adds
/// `slope * damping^h`) covers `gap`; none if it never does.
fn samples_to(gap: f64, slope: f64, damping: f64) -> Option<f64> {
    if slope <= 0.0 {
        return None;
    }
    if damping >= 1.0 {
        return Some(gap / slope);
    }
    // slope * damping * (1 - damping^h) / (1 - damping) = gap.
    let left = 1.0 - gap * (1.0 - damping) / (slope * damping);
    (left > 0.0).then(|| left.ln() / damping.ln())
}

/// Samples a fit needs before it clips outliers or may warn: half the half-life, and at
/// least a level shift's worth (a shift's fit starts from those samples).
fn warm_samples(spec: &ForecastTarget) -> u32 {
    (spec.half_life_samples / 2).max(u32::from(SHIFT_AFTER))
}

/// Decides what one new sample changes for `series`.
fn step(
    series: &mut Series,
    spec: &ForecastTarget,
    config: &ForecastConfig,
    z: f64,
    sample: Sample<'_>,
) -> Option<IncidentUpdate> {
    let sign = if spec.falling { -1.0 } else { 1.0 };
    let reached = sign * (sample.value - spec.threshold) >= 0.0;
    let warm = series.trend.n >= warm_samples(spec);
    let fit = series.trend.fit().filter(|_| warm);
    // Samples to the threshold at the slope and at its interval's ends (toward it).
    let eta = fit.and_then(|f| {
        let gap = sign * (spec.threshold - f.level);
        let toward = sign * f.slope;
        let (fast, slow) = (toward + z * f.slope_sd, toward - z * f.slope_sd);
        // The line is past the threshold but the metric is not yet: it is due now.
        let to =
            |slope: f64| if gap <= 0.0 { (slope > 0.0).then_some(0.0) } else { samples_to(gap, slope, spec.damping) };
        Some((f, to(toward)?, to(fast)?, to(slow)))
    });
    let horizon = f64::from(spec.horizon_samples);
    let warns = eta.is_some_and(|(_, at, _, slow)| slow.is_some() && at <= horizon) && !reached;

    let Some(open) = series.open.as_mut() else {
        if series.quiet > 0 {
            series.quiet -= 1;
            return None;
        }
        series.streak = if warns { series.streak + 1 } else { 0 };
        if series.streak < config.confirm_samples {
            return None;
        }
        series.streak = 0;
        let (fit, at, fast, slow) = eta.expect("a warning has an ETA");
        let prediction = prediction(spec, config, fit, sample.ts, at, fast, slow);
        let incident = Incident {
            id: format!("pred-{}-{}-{}", series.router, spec.metric, sample.ts),
            router: series.router.clone(),
            site: series.site.clone(),
            role: series.role.clone(),
            state: State::Open,
            severity: Severity::Warning,
            opened: sample.ts,
            last_anomaly: sample.ts,
            resolved: None,
            metrics: vec![spec.metric.clone()],
            detectors: vec![FORECAST_DETECTOR.into()],
            anomalies: 0,
            max_score: 0.0,
            reopened: 0,
            flapping: false,
            features_final: true,
            cause: None,
            causes: Vec::new(),
            prediction: Some(prediction.clone()),
        };
        series.open = Some(Open { incident: incident.clone(), told_eta: prediction.eta });
        return Some(IncidentUpdate::new(Change::Opened, incident));
    };

    if reached {
        let mut incident = series.open.take().expect("open").incident;
        finish(&mut incident, sample.ts, Outcome::Reached);
        series.streak = 0;
        series.quiet = spec.horizon_samples;
        return Some(IncidentUpdate::new(Change::Resolved, incident));
    }
    // Withdrawn once the line no longer gets there within twice the horizon, for
    // `confirm_samples` in a row: a slack against flapping at the horizon's edge.
    let holds = eta.is_some_and(|(_, at, _, _)| at <= 2.0 * horizon);
    series.streak = if holds { 0 } else { series.streak + 1 };
    if series.streak >= config.confirm_samples {
        let mut incident = series.open.take().expect("open").incident;
        finish(&mut incident, sample.ts, Outcome::Withdrawn);
        series.streak = 0;
        return Some(IncidentUpdate::new(Change::Withdrawn, incident));
    }
    let (fit, at, fast, slow) = eta?;
    let prediction = prediction(spec, config, fit, sample.ts, at, fast, slow);
    // Told again when the ETA moved by a fifth of the time left (and a sample at least).
    let left = (open.told_eta - sample.ts).max(config.interval_ms) as f64;
    let moved = (prediction.eta - open.told_eta).abs() as f64;
    let incident = &mut open.incident;
    incident.last_anomaly = sample.ts;
    let told = moved >= (0.2 * left).max(config.interval_ms as f64);
    if told {
        open.told_eta = prediction.eta;
    }
    incident.prediction = Some(prediction);
    told.then(|| IncidentUpdate::new(Change::Updated, incident.clone()))
}

fn finish(incident: &mut Incident, ts: i64, outcome: Outcome) {
    incident.state = State::Resolved;
    incident.resolved = Some(ts);
    incident.last_anomaly = ts;
    if let Some(p) = incident.prediction.as_mut() {
        p.outcome = Some(outcome);
        let verb = match outcome {
            Outcome::Reached => "reached",
            Outcome::Withdrawn => "withdrawn: the trend went away before",
        };
        p.summary = format!("{} {verb} {}", p.metric, number(p.threshold));
    }
}

fn prediction(
    spec: &ForecastTarget,
    config: &ForecastConfig,
    fit: Fit,
    now: i64,
    at: f64,
    fast: f64,
    slow: Option<f64>,
) -> Prediction {
    let ms = |samples: f64| now.saturating_add((samples * config.interval_ms as f64).min(1e15) as i64);
    let (eta, earliest, latest) = (ms(at), ms(fast), slow.map(ms));
    let verb = if spec.falling { "falls to" } else { "reaches" };
    let summary = format!(
        "{} {verb} {} in about {} ({:.0}%: {} to {})",
        spec.metric,
        number(spec.threshold),
        duration(eta - now),
        config.confidence * 100.0,
        duration(earliest - now),
        latest.map_or_else(|| "never".to_owned(), |l| duration(l - now)),
    );
    Prediction {
        metric: spec.metric.clone(),
        threshold: spec.threshold,
        falling: spec.falling,
        level: fit.level,
        slope_per_hour: fit.slope * 3_600_000.0 / config.interval_ms as f64,
        as_of: now,
        eta,
        eta_earliest: earliest,
        eta_latest: latest,
        confidence: config.confidence,
        outcome: None,
        summary,
    }
}

/// `2h10m`, `45m`, `3d4h`, to the minute.
fn duration(ms: i64) -> String {
    let minutes = (ms.max(0) + 30_000) / 60_000;
    let (d, h, m) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// A threshold as people write it (`0.98`, `75`).
fn number(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The standard normal quantile (Acklam's rational approximation, relative error 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_000_000_000;
    const MIN: i64 = 60_000;

    fn sample(router: &str, metric: &'static str, i: i64, value: f64) -> Sample<'static> {
        let router: &'static str = Box::leak(router.to_owned().into_boxed_str());
        Sample { router, site: Some("ams1"), role: None, metric, ts: T0 + i * MIN, value }
    }

    /// Feeds `values` (one a minute) of `metric`; the updates with their sample index.
    fn run(stage: &mut ForecastStage, metric: &'static str, values: &[f64]) -> Vec<(usize, IncidentUpdate)> {
        let target = stage.target(metric).expect("forecast");
        values
            .iter()
            .enumerate()
            .filter_map(|(i, &v)| stage.observe(target, sample("rtr-1", metric, i as i64, v)).map(|u| (i, u)))
            .collect()
    }

    /// A deterministic noise source (xorshift), heavy-tailed on request.
    struct Noise(u64);
    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform().max(1e-12), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
        /// Student-t with 2 degrees of freedom: infinite variance.
        fn heavy(&mut self) -> f64 {
            let z = self.normal();
            let chi2 = self.normal().powi(2) + self.normal().powi(2);
            z / (chi2 / 2.0).sqrt().max(1e-6)
        }
    }

    /// Memory with a daily cycle and noise; a leak of `per_hour` from sample `leak`.
    fn memory(n: usize, leak: usize, per_hour: f64, seed: u64) -> Vec<f64> {
        let mut noise = Noise(seed);
        (0..n)
            .map(|i| {
                let day = (i as f64 / 1440.0 * std::f64::consts::TAU).sin();
                let leaked = if i >= leak { per_hour * (i - leak) as f64 / 60.0 } else { 0.0 };
                ((0.45 + 0.02 * day + 0.003 * noise.normal() + leaked) * 1e4).round() / 1e4
            })
            .collect()
    }

    #[test]
    fn a_leak_is_predicted_hours_ahead_with_an_eta_that_holds() {
        let mut stage = ForecastStage::new(ForecastConfig::default()).unwrap();
        // 0.05/h from 0.45: 0.98 about 10.6 h (636 samples) after the leak starts at 1440.
        let values = memory(3000, 1440, 0.05, 1);
        let crossing = values.iter().position(|&v| v >= 0.98).unwrap();
        let updates = run(&mut stage, "mem_util", &values);
        let (opened_at, opened) = &updates[0];
        assert_eq!(opened.change, Change::Opened, "{updates:?}");
        let p = opened.incident.prediction.as_ref().unwrap();
        let lead = crossing - opened_at;
        assert!((60..=6 * 60 + 30).contains(&lead), "predicted {lead} samples ahead");
        let eta_error = (p.eta - (T0 + crossing as i64 * MIN)).abs() / MIN;
        assert!(eta_error < lead as i64 / 3, "ETA {} samples off at a lead of {lead}", eta_error);
        assert!(p.eta_earliest <= p.eta && p.eta_latest.is_some_and(|l| l >= p.eta));
        assert!(p.summary.starts_with("mem_util reaches 0.98 in about "), "{}", p.summary);
        assert!(opened.incident.id.starts_with("pred-rtr-1-mem_util-"));
        // Updated as it comes closer, then reached.
        assert!(updates.iter().any(|(_, u)| u.change == Change::Updated));
        let (reached_at, last) = updates.last().unwrap();
        assert_eq!((last.change, *reached_at), (Change::Resolved, crossing));
        assert_eq!(last.incident.prediction.as_ref().unwrap().outcome, Some(Outcome::Reached));
        // Nothing before the leak: the daily cycle is not a trend toward 0.98.
        assert!(updates.iter().all(|(i, _)| *i > 1440));
    }

    #[test]
    fn a_predicted_incident_is_withdrawn_when_the_trend_goes_away() {
        let mut stage = ForecastStage::new(ForecastConfig::default()).unwrap();
        let mut values = memory(2600, 1440, 0.08, 2);
        // The leak is fixed (the process restarted) at 1700, before it gets to 0.98 (at about
        // 1837): memory back to its baseline.
        let baseline = memory(2600, usize::MAX, 0.0, 2);
        values[1700..].copy_from_slice(&baseline[1700..]);
        let updates = run(&mut stage, "mem_util", &values);
        assert_eq!(updates[0].1.change, Change::Opened, "{updates:?}");
        assert!(updates[0].0 < 1700);
        let (at, withdrawn) = updates.iter().find(|(_, u)| u.change == Change::Withdrawn).expect("withdrawn");
        assert!((1700..1700 + 30).contains(at), "withdrawn at {at}");
        assert_eq!(withdrawn.incident.id, updates[0].1.incident.id);
        assert_eq!(withdrawn.incident.state, State::Resolved);
        assert_eq!(withdrawn.incident.prediction.as_ref().unwrap().outcome, Some(Outcome::Withdrawn));
        assert_eq!(updates.iter().filter(|(_, u)| u.change == Change::Opened).count(), 1, "{updates:?}");
    }

    #[test]
    fn a_slow_leak_that_stops_is_withdrawn_without_reaching() {
        let mut stage = ForecastStage::new(ForecastConfig::default()).unwrap();
        let mut values = memory(4000, 1440, 0.06, 3);
        // It stops leaking at 0.90 and stays there.
        let stop = values.iter().position(|&v| v >= 0.90).unwrap();
        let held = values[stop] - 0.45;
        let flat = memory(4000, usize::MAX, 0.0, 3);
        for i in stop..4000 {
            values[i] = flat[i] + held;
        }
        let updates = run(&mut stage, "mem_util", &values);
        let changes: Vec<Change> = updates.iter().map(|(_, u)| u.change).filter(|c| *c != Change::Updated).collect();
        assert_eq!(changes, [Change::Opened, Change::Withdrawn], "{updates:?}");
    }

    #[test]
    fn quiet_on_flat_noisy_heavy_tailed_quantised_and_constant_series() {
        let cases: Vec<(&str, Vec<f64>)> = vec![
            ("daily cycle", memory(6000, usize::MAX, 0.0, 4)),
            ("heavy tails", {
                let mut n = Noise(5);
                (0..6000).map(|_| 0.6 + 0.01 * n.heavy()).collect()
            }),
            ("quantised to 0.01", {
                let mut n = Noise(6);
                (0..6000).map(|_| ((0.6 + 0.01 * n.normal()) * 100.0).round() / 100.0).collect()
            }),
            ("constant", vec![0.5; 6000]),
            ("random walk, small steps", {
                let mut n = Noise(7);
                let mut x = 0.5;
                (0..6000)
                    .map(|_| {
                        x = (x + 0.0005 * n.normal()).clamp(0.3, 0.7);
                        x
                    })
                    .collect()
            }),
        ];
        for (name, values) in cases {
            let mut stage = ForecastStage::new(ForecastConfig::default()).unwrap();
            let updates = run(&mut stage, "mem_util", &values);
            assert!(updates.is_empty(), "{name}: {updates:?}");
        }
    }

    #[test]
    fn one_spike_does_not_bend_the_trend_and_a_level_shift_restarts_it() {
        let mut stage = ForecastStage::new(ForecastConfig::default()).unwrap();
        let mut values = memory(3000, usize::MAX, 0.0, 8);
        values[1500] = 0.97; // one wild sample
        for v in &mut values[2000..] {
            *v += 0.3; // a migration: a new level, no trend
        }
        assert!(run(&mut stage, "mem_util", &values).is_empty());
    }

    #[test]
    fn a_chassis_heating_up_is_predicted_before_it_throttles() {
        let mut stage = ForecastStage::new(ForecastConfig::default()).unwrap();
        let mut noise = Noise(9);
        // 50 C, then a fan failing: the chassis approaches 90 C with a lag of 20 minutes.
        let mut temp = 50.0;
        let values: Vec<f64> = (0..400)
            .map(|i| {
                let target = if i >= 200 { 90.0 } else { 50.0 };
                temp += (target - temp) / 20.0;
                ((temp + 0.15 * noise.normal()) * 100.0).round() / 100.0
            })
            .collect();
        let crossing = values.iter().position(|&v| v >= 75.0).unwrap();
        let updates = run(&mut stage, "temp_c", &values);
        let (opened_at, opened) = &updates[0];
        assert_eq!(opened.change, Change::Opened);
        assert!(*opened_at < crossing && *opened_at >= 200, "opened at {opened_at}, crossing at {crossing}");
        assert!(updates.iter().any(|(i, u)| *i == crossing && u.change == Change::Resolved));
    }

    /// A chassis heating toward `plateau` from 50 C as its cooling fails over an hour from
    /// sample 200 (dust, a fan wearing out), with a thermal time constant of 5 samples.
    fn heating(plateau: f64, seed: u64) -> Vec<f64> {
        let mut noise = Noise(seed);
        let mut temp = 50.0;
        (0..400)
            .map(|i| {
                let target = 50.0 + (plateau - 50.0) * ((i as f64 - 200.0) / 60.0).clamp(0.0, 1.0);
                temp += (target - temp) / 5.0;
                ((temp + 0.15 * noise.normal()) * 100.0).round() / 100.0
            })
            .collect()
    }

    #[test]
    fn a_chassis_that_levels_off_below_the_threshold_is_not_a_warning() {
        for seed in 20..30 {
            let mut stage = ForecastStage::new(ForecastConfig::default()).unwrap();
            let quiet = run(&mut stage, "temp_c", &heating(70.0, seed));
            assert!(quiet.is_empty(), "levels off at 70 C (seed {seed}): {quiet:?}");
            let mut stage = ForecastStage::new(ForecastConfig::default()).unwrap();
            let values = heating(90.0, seed);
            let crossing = values.iter().position(|&v| v >= 75.0).unwrap();
            let warned = run(&mut stage, "temp_c", &values);
            assert!(
                warned.first().is_some_and(|(i, u)| u.change == Change::Opened && *i < crossing),
                "seed {seed}: crossing at {crossing}, {warned:?}"
            );
        }
    }

    #[test]
    fn a_falling_target_warns_of_a_fall() {
        let config = ForecastConfig {
            targets: vec![ForecastTarget {
                metric: "fan_rpm".into(),
                threshold: 2000.0,
                falling: true,
                half_life_samples: 30,
                horizon_samples: 120,
                damping: 1.0,
            }],
            ..ForecastConfig::default()
        };
        let mut stage = ForecastStage::new(config).unwrap();
        let mut noise = Noise(10);
        let values: Vec<f64> = (0..500)
            .map(|i| 6000.0 - if i > 200 { 20.0 * (i - 200) as f64 } else { 0.0 } + 30.0 * noise.normal())
            .collect();
        let updates = run(&mut stage, "fan_rpm", &values);
        let p = updates[0].1.incident.prediction.as_ref().unwrap();
        assert!(p.summary.starts_with("fan_rpm falls to 2000 in about "), "{}", p.summary);
        assert!(p.slope_per_hour < 0.0);
    }

    #[test]
    fn a_restored_stage_continues_exactly() {
        let values = memory(3000, 1440, 0.05, 11);
        let mut whole = ForecastStage::new(ForecastConfig::default()).unwrap();
        let all = run(&mut whole, "mem_util", &values);
        for cut in [100, 1500, 1700, 2000] {
            let mut first = ForecastStage::new(ForecastConfig::default()).unwrap();
            let mut updates = run(&mut first, "mem_util", &values[..cut]);
            let mut restored = ForecastStage::restore(ForecastConfig::default(), &first.snapshot().unwrap()).unwrap();
            assert_eq!(restored, first);
            let target = restored.target("mem_util").unwrap();
            for (i, &v) in values.iter().enumerate().skip(cut) {
                if let Some(u) = restored.observe(target, sample("rtr-1", "mem_util", i as i64, v)) {
                    updates.push((i, u));
                }
            }
            assert_eq!(updates, all, "restored at {cut}");
        }
    }

    #[test]
    fn bad_configurations_and_snapshots_are_refused() {
        let mut config = ForecastConfig::default();
        config.targets[1].metric = "mem_util".into();
        assert!(ForecastStage::new(config).unwrap_err().0.contains("given twice"));
        let config = ForecastConfig { confidence: 1.0, ..ForecastConfig::default() };
        assert!(ForecastStage::new(config).is_err());
        let mut config = ForecastConfig::default();
        config.targets[0].threshold = f64::NAN;
        assert!(ForecastStage::new(config).is_err());
        for bad in [&b""[..], b"RWIF", b"RWIR\x01\x00{}", b"RWIF\x01\x00{\"series\":1}"] {
            assert!(ForecastStage::restore(ForecastConfig::default(), bad).is_err());
        }
    }

    #[test]
    fn series_are_capped_and_long_names_ignored() {
        let config = ForecastConfig { max_series: 2, ..ForecastConfig::default() };
        let mut stage = ForecastStage::new(config).unwrap();
        for r in 0..5 {
            stage.observe(0, sample(&format!("rtr-{r}"), "mem_util", 0, 0.5));
        }
        assert_eq!(stage.refused(), 3);
        let long = "r".repeat(MAX_ID_BYTES + 1);
        assert!(stage.observe(0, sample(&long, "mem_util", 1, 0.5)).is_none());
    }

    #[test]
    fn durations_and_quantiles() {
        assert_eq!(duration(130 * MIN), "2h10m");
        assert_eq!(duration(45 * MIN), "45m");
        assert_eq!(duration((3 * 1440 + 4 * 60) * MIN), "3d4h");
        assert!((normal_quantile(0.9) - 1.281_551_565_5).abs() < 1e-8);
        assert!((normal_quantile(0.975) - 1.959_963_985).abs() < 1e-8);
        assert!((normal_quantile(0.01) + 2.326_347_874).abs() < 1e-8);
    }
}
