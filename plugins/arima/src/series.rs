//! One (router, metric) series: warm-up, fit, one-step forecasts, scoring and refits.

use std::collections::VecDeque;

use routewatch_plugin_sdk::{Anomaly, Judge, SeriesKey};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::model::{Filter, Fit, Order, Precision, auto_fit, css, difference, fit_order};
use crate::window::Window;

/// For Gaussian residuals, `E|r| * sqrt(pi / 2)` is the standard deviation.
const MEAN_ABS_TO_SD: f64 = 1.253_314_137_315_500_3;
/// For Gaussian residuals, `1.4826 * MAD` is the standard deviation.
const MAD_TO_SD: f64 = 1.482_602_218_505_602;
/// Errors beyond this many robust sd reach the filter's state clipped (Huber's psi; see
/// [`Series::observe`]). About the calibrator's single-error threshold on Gaussian errors, so
/// a series with Gaussian errors is filtered as before, only heavier tails are clipped. (At
/// 3, the scale's own clip, the clean profile's false alarms rose by a sixth on the tuning
/// seed: a ramp that is not yet anomalous was followed too slowly.)
const FILTER_CLIP: f64 = 5.0;

/// When a series fits first: after `warmup` samples and its own share of up to half as many
/// again ([`SeriesKey::share`]).
///
/// Every series of a fleet that starts together would otherwise reach its warm-up at the same
/// timestamp, and the first fit, which chooses the order, costs about 100 µs a series: 10,000
/// series of one partition (1,000 routers) came to a second of CPU in one call, which is the
/// sandbox's budget, so the detector was stopped at warm-up. Spread over a further half
/// warm-up, the first fits (and, counted from them, the routine refits) cost a sixtieth of that
/// a batch at the default warm-up.
pub fn first_fit_after(key: SeriesKey, config: &Config) -> usize {
    config.warmup + key.share((config.warmup / 2).min(config.window.saturating_sub(config.warmup)))
}

/// What one observation came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub score: f64,
    /// Set at the onset of a departure and at its updates (row and column left 0).
    pub anomaly: Option<Anomaly>,
}

impl Verdict {
    /// A point that was not scored (warm-up, missing value, out of order).
    fn unscored() -> Verdict {
        Verdict { score: 0.0, anomaly: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Model {
    fit: Fit,
    filter: Filter,
}

/// A run of consecutive anomalies on one side of the forecast.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Run {
    /// +1 above, -1 below, 0 no run.
    side: i8,
    len: usize,
    residual_sum: f64,
}

/// One series, with its refit window of type `W`: a [`Window`] now, single precision in
/// snapshot version 4 ([`SeriesV4`]); the rest of the layout is the same in both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesOf<W> {
    last_ts: i64,
    /// Recent values in model space (observed minus `offset`), anomalies replaced by their
    /// forecasts so that one bad sample does not bend the next fit. Kept, and snapshotted,
    /// in one form (see [`Window`]): a restored series refits on exactly the numbers the
    /// uninterrupted one does (a refit on a shorter window after a restore once changed every
    /// score after it).
    window: W,
    model: Option<Model>,
    /// Accumulated level shifts: the model follows `value - offset`.
    offset: f64,
    /// Calibrated scores and onsets of the one-step residuals.
    judge: Judge,
    /// Standard deviation of the history at the last fit.
    spread: f64,
    since_fit: usize,
    run: Run,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            last_ts: i64::MIN,
            window: Window::default(),
            model: None,
            offset: 0.0,
            judge: Judge::default(),
            spread: 0.0,
            since_fit: 0,
            run: Run::default(),
        }
    }
}

/// A series as the detector keeps it.
pub type Series = SeriesOf<Window>;
/// A series as snapshot version 4 wrote it: its window in single precision, before any grid.
pub type SeriesV4 = SeriesOf<VecDeque<f32>>;

impl From<SeriesV4> for Series {
    /// The window stays raw until the next fit puts it on a grid.
    fn from(old: SeriesV4) -> Series {
        let SeriesOf { last_ts, window, model, offset, judge, spread, since_fit, run } = old;
        Series { last_ts, window: Window::Raw(window), model, offset, judge, spread, since_fit, run }
    }
}

impl Series {
    /// Whether a restored series is one the detector could have built (see [`Window::is_sound`]).
    pub fn is_sound(&self) -> bool {
        self.window.is_sound() && self.offset.is_finite()
    }

    /// Scores one sample and learns from it. A departure smaller than `min_deviation` (in the
    /// metric's units) is never anomalous, whatever its z-score. `key` names the series among
    /// the detector's (router and metric ids): it decides when, after `warmup` samples, the
    /// series fits first ([`first_fit_after`]).
    pub fn observe(
        &mut self,
        ts: i64,
        value: f64,
        config: &Config,
        metric: &str,
        min_deviation: f64,
        key: SeriesKey,
    ) -> Verdict {
        if !value.is_finite() || ts <= self.last_ts {
            // A gap or a replayed sample: nothing to learn, nothing to say.
            return Verdict::unscored();
        }
        self.last_ts = ts;
        let Some(model) = &mut self.model else {
            self.judge.calibrator.learn_value(value);
            self.remember(value, config);
            if self.window.len() >= first_fit_after(key, config) {
                self.refit(config, None);
            }
            return Verdict::unscored();
        };

        let forecast = model.filter.forecast(&model.fit);
        let expected = forecast.y + self.offset;
        let residual = value - expected;
        let judgement = self.judge.judge(metric, value, expected, config.threshold, min_deviation);
        let verdict = Verdict { score: judgement.calibration.score, anomaly: judgement.anomaly };

        if !residual.is_finite() || !judgement.calibration.anomalous() {
            self.run = Run::default();
            if residual.is_finite() {
                // A robust filter (Martin 1981; Maronna, Martin and Yohai, "Robust Statistics",
                // 2006, section 8.8): the model's state takes the observation cleaned of any
                // error beyond FILTER_CLIP robust sd. A spike that the series' heavy tail has
                // made ordinary would otherwise enter the MA lags whole, and a moving-average
                // term fitted to quantised noise (negative, as alternating steps make it) would
                // throw the next forecast far to the other side: a false "level shift" after
                // every ordinary spike. The window keeps the raw value for the next fit.
                let bound = FILTER_CLIP * judgement.calibration.sd;
                let cleaned = if residual.abs() > bound { residual.signum() * bound } else { residual };
                let y = forecast.y + cleaned;
                let w = model.filter.differenced(&model.fit, y);
                model.filter.push(w, cleaned, y);
                self.remember(value, config);
            }
        } else {
            let side = if residual > 0.0 { 1 } else { -1 };
            if self.run.side != side {
                self.run = Run { side, len: 0, residual_sum: 0.0 };
            }
            self.run.len += 1;
            self.run.residual_sum += residual;
            // Learn the forecast instead of the outlier.
            model.filter.push(forecast.w, 0.0, forecast.y);
            self.window.push(forecast.y, config.window);
            if self.run.len >= config.level_shift_after {
                // A lasting move: the model follows the new level from here.
                let shift = self.run.residual_sum / self.run.len as f64;
                if (self.offset + shift).is_finite() {
                    self.offset += shift;
                }
                self.run = Run::default();
            }
        }

        self.since_fit += 1;
        if self.since_fit >= config.warmup / 2 && self.drifted() {
            self.refit(config, None);
        } else if self.since_fit >= config.refit_every {
            // A routine refit keeps the order: choosing it again costs ten times as much.
            let order = self.model.as_ref().map(|m| m.fit.order);
            self.refit(config, order);
        }
        verdict
    }

    /// Whether residuals have outgrown the model: the series changed character since the fit.
    fn drifted(&self) -> bool {
        let scale = self.judge.calibrator.learned_scale();
        self.model.as_ref().is_some_and(|m| scale > 2.0 * max(m.fit.sigma2.sqrt(), 0.01 * self.spread))
    }

    fn remember(&mut self, value: f64, config: &Config) {
        self.window.push(value - self.offset, config.window);
    }

    /// Refits on the history (choosing the order again unless one is given), then re-runs
    /// the filter over the history to reach the present.
    fn refit(&mut self, config: &Config, order: Option<Order>) {
        if self.model.is_some() && self.window.len() < config.warmup {
            // A new configuration asks for a longer warm-up: keep the model until the window holds it.
            return;
        }
        self.since_fit = 0;
        let (history, spread) = self.window.regrid();
        let history = &history[..];
        let fit = match order {
            Some(order) => fit_order(history, order, Precision::Online),
            None => auto_fit(history, config.max_p, config.max_d, config.max_q),
        };
        let Some(fit) = fit else { return };
        self.spread = spread;
        let filter = Filter::warm(&fit, history.iter().copied());
        if self.model.is_none() {
            self.judge.calibrator.seed(robust_scale(&fit, history));
        }
        self.model = Some(Model { fit, filter });
    }
}

/// `f64::max` (a NaN loses), as a compare and select: in Wasm, `f64::max` is a call to libm's
/// `fmax`, and the per-point path should not pay a call (and its interruption check) for it.
#[inline(always)]
fn max(a: f64, b: f64) -> f64 {
    if a < b || a.is_nan() { b } else { a }
}

/// The scale a fresh model starts from: MAD of its residuals, or their mean absolute value
/// when more than half are exactly zero (counts that rarely move).
fn robust_scale(fit: &Fit, history: &[f64]) -> f64 {
    let w = difference(history, fit.order.d);
    let mut resid = Vec::with_capacity(w.len());
    css(&w, fit.order.p, fit.order.q, fit.mean, &fit.ar, &fit.ma, Some(&mut resid));
    let mut abs: Vec<f64> = resid[fit.order.p.min(resid.len())..].iter().map(|r| r.abs()).collect();
    if abs.is_empty() {
        return 0.0;
    }
    let mid = abs.len() / 2;
    let (_, median, _) = abs.select_nth_unstable_by(mid, f64::total_cmp);
    let mad = *median * MAD_TO_SD;
    if mad > 0.0 { mad } else { abs.iter().sum::<f64>() / abs.len() as f64 * MEAN_ABS_TO_SD }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fits_spread_over_half_a_warm_up_evenly() {
        let config = Config::default();
        let mut per_offset = vec![0usize; config.warmup / 2 + 1];
        for router in 0..10_000 {
            for metric in 0..10 {
                let at = first_fit_after(SeriesKey { router, metric }, &config);
                assert!((config.warmup..=config.warmup + config.warmup / 2).contains(&at));
                per_offset[at - config.warmup] += 1;
            }
        }
        let mean = 100_000 / per_offset.len();
        let most = *per_offset.iter().max().unwrap();
        assert!(most < mean * 3 / 2, "one offset has {most} series against a mean of {mean}: {per_offset:?}");
        // The first series (and a single-series replay) is not put off, and a window no
        // longer than the warm-up leaves nothing to spread over.
        assert_eq!(first_fit_after(SeriesKey { router: 0, metric: 0 }, &config), config.warmup);
        let tight = Config { window: config.warmup, ..Config::default() };
        assert!((0..1000).all(|router| first_fit_after(SeriesKey { router, metric: 0 }, &tight) == tight.warmup));
    }
}
