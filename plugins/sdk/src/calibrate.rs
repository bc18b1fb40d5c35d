//! Calibrated scores: how unlikely a departure is under the series' own recent behaviour.
//!
//! A detector forecasts each sample; a [`Calibrator`] per series turns the forecast error into
//! a score in [0, 1] that means the same for every detector and every series:
//!
//! 1. **Scale.** The error, less the part of it the previous error predicts (a lag-one
//!    regression: forecasters' errors are seldom independent), is measured in robust standard deviations `z = (value - expected) /
//!    sd`, where `sd` is a running, Huber-clipped mean absolute error of the series, never
//!    below a floor taken from the series itself: its quantisation step (the least change
//!    seen between two samples; 1 for a series of integers, so a counter that sits at zero
//!    has a scale of one unit), 1% of its own spread, and 1e-4 of its level. A constant,
//!    quantised or noiseless series therefore has a scale, and no absolute constant decides.
//! 2. **Tail.** How often `|z|` exceeds 1, 2 and 3 is tracked (exponentially weighted, a
//!    memory of about [`TAIL_MEMORY`] samples, starting from a Gaussian prior), and beyond 3
//!    the tail is a power law whose index is the Hill estimate over the exceedances of 3, with
//!    the local index between 2 and 3 sd as its prior (worth five exceedances). This is a peaks-over-
//!    threshold tail model (Hill 1975; as used for streaming thresholds by Siffer et al.,
//!    "Anomaly detection in streams with extreme value theory", KDD 2017). On Gaussian errors
//!    it gives thresholds of about 5 sd; on Student-t(3) errors about 100 sd.
//! 3. **Evidence.** Two kinds, each at the same false-alarm probability [`DECISION_P`] under
//!    that tail model: a single error beyond `x1` (the `1 - DECISION_P` two-sided quantile),
//!    and runs of the last `k` = 2 to [`RUN`] errors on one side all beyond `x_k`, where
//!    `P(|z| > x_k / 2)^k = DECISION_P`: a level shift of 5 sd is found by its third or
//!    fourth sample even when single errors of 50 sd are ordinary.
//! 4. **Score.** With `R` the largest ratio of evidence to its threshold (`|z| / x1`, or the
//!    run's least `|z|` over `x_k`), the score is `R^4 / (1 + R^4)`: exactly 0.5 at the
//!    threshold, about 0.06 at half of it and 0.94 at twice it, so scores spread over [0, 1]
//!    and do not saturate on noise.
//!
//! Samples whose score reaches 0.5 are not learned (an anomaly is not recent behaviour);
//! everything else is. Costs: a few multiply-adds per sample, a logarithm per exceedance of
//! 3 sd, and the thresholds are recomputed every [`REFRESH`] samples.

use serde::{Deserialize, Serialize};

/// Probability, under the series' own recent behaviour, of evidence at the decision: a
/// point scores 0.5 when evidence that strong arises by chance once in 100,000 samples.
pub const DECISION_P: f64 = 1e-5;
/// Longest run of same-side errors judged together.
pub const RUN: usize = 4;
/// Samples of memory of the tail rates.
pub const TAIL_MEMORY: f64 = 5000.0;
/// Errors learned before a calibrator scores (unless seeded with a scale).
pub const WARMUP: u32 = 30;
/// Samples between recomputations of the thresholds.
pub const REFRESH: u32 = 32;

/// Weight of the newest error in the scale.
const SCALE_ALPHA: f64 = 0.01;
/// Errors beyond this many sd move the scale only as far as one at it would (Huber).
const SCALE_CLIP: f64 = 3.0;
/// Weight of the newest sample in the level and spread used for the floor.
const VALUE_ALPHA: f64 = 0.002;
/// `E|e| * sqrt(pi / 2)` is the sd of Gaussian errors.
const MEAN_ABS_TO_SD: f64 = 1.253_314_137_315_500_3;
/// Gaussian two-sided exceedance rates of 1, 2 and 3 sd: the prior of the tail rates.
const GAUSS_OVER: [f64; 3] = [0.317_310_5, 0.045_500_26, 0.002_699_796];
/// Prior weight of the Gaussian rates, in samples.
const PRIOR_SAMPLES: f64 = 50.0;
/// Weight, in exceedances of 3 sd, of the prior tail index (see `tail`), and its lightest.
const PRIOR_EXCEEDANCES: f64 = 5.0;
const PRIOR_ALPHA_MAX: f64 = 8.0;
/// Suspicious samples in a row after which they are learned all the same.
const ADAPT_AFTER: u16 = 30;
/// Weight of the newest pair of errors in the lag-one regression, and its largest weight.
const LAG_ALPHA: f64 = 0.01;
const MAX_PHI: f64 = 0.95;
/// Samples scoring this or more are not learned (evidence at 70% of the decision).
const SUSPICIOUS: f64 = 0.19;
/// The least threshold of run evidence: a run of errors within 1.5 sd is never news.
const MIN_RUN_THRESHOLD: f64 = 1.5;
/// Fraction of the series' spread and of its level below which no scale is claimed.
const SPREAD_FLOOR: f64 = 0.01;
const LEVEL_FLOOR: f64 = 1e-4;

/// What the calibrator made of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Calibration {
    /// In [0, 1]; 0.5 is the decision.
    pub score: f64,
    /// Signed error in robust sd.
    pub z: f64,
    /// The scale used (metric units).
    pub sd: f64,
    /// Samples of the run that decided (1 for a single error).
    pub run: u8,
}

impl Calibration {
    /// Whether the sample is anomalous (`score >= 0.5`).
    pub fn anomalous(&self) -> bool {
        self.score >= 0.5
    }
}

/// Per-series calibration state (about 120 bytes; see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibrator {
    n: u32,
    seeded: bool,
    scale: f64,
    level: f64,
    spread: f64,
    step: f64,
    integral: bool,
    last: f64,
    /// Exponentially weighted count of samples, and of `|z|` over 1, 2 and 3.
    weight: f64,
    over: [f64; 3],
    /// Exponentially weighted sum of `ln(|z| / 3)` over the exceedances of 3.
    log_excess: f64,
    /// Last `RUN - 1` signed errors in sd (0: none).
    recent: [f32; RUN - 1],
    /// The previous error (NaN after an anomaly or before any), and the running lag-one
    /// covariance and variance of the errors.
    previous: f64,
    /// Suspicious samples in a row.
    suspicious: u16,
    lag_cov: f64,
    lag_var: f64,
    /// Innovations (metric units) not learned yet, newest first (negative: none).
    pending: [f32; RUN - 1],
    /// Thresholds in sd: `[x1, x2, .., x_RUN]`, then that of all but one of `RUN`.
    thresholds: [f32; RUN + 1],
}

impl Default for Calibrator {
    fn default() -> Calibrator {
        let mut c = Calibrator {
            n: 0,
            seeded: false,
            scale: 0.0,
            level: 0.0,
            spread: 0.0,
            step: 0.0,
            integral: true,
            last: f64::NAN,
            weight: 0.0,
            over: [0.0; 3],
            log_excess: 0.0,
            recent: [0.0; RUN - 1],
            previous: f64::NAN,
            suspicious: 0,
            lag_cov: 0.0,
            lag_var: 0.0,
            pending: [-1.0; RUN - 1],
            thresholds: [0.0; RUN + 1],
        };
        c.refresh();
        c
    }
}

impl Calibrator {
    /// Starts the scale at `sd` (metric units, from a fit's residuals, say) so that scoring
    /// begins at once instead of after [`WARMUP`] errors.
    pub fn seed(&mut self, sd: f64) {
        if sd.is_finite() && sd >= 0.0 {
            self.scale = sd;
            self.seeded = true;
        }
    }

    /// Learns a sample's value without an error to judge (a detector's warm-up), so the
    /// floor (step, spread, level) is known when scoring starts.
    pub fn learn_value(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.integral && value.fract() != 0.0 {
            self.integral = false;
        }
        if self.last.is_finite() {
            let d = finite((value - self.last).abs());
            if d > 0.0 && (self.step == 0.0 || d < self.step) {
                self.step = d;
            }
        }
        self.last = value;
        if self.weight == 0.0 && self.level == 0.0 && self.spread == 0.0 {
            self.level = value;
        }
        let deviation = finite((value - self.level).abs());
        self.level = (1.0 - VALUE_ALPHA) * self.level + VALUE_ALPHA * value;
        self.spread = (1.0 - VALUE_ALPHA) * self.spread + VALUE_ALPHA * deviation;
    }

    /// Forgets the run memory: a detector that has just followed a new level starts afresh.
    pub fn forget_run(&mut self) {
        self.recent = [0.0; RUN - 1];
        self.previous = f64::NAN;
    }

    /// Weight of the previous error in the innovation (see [`Calibrator::observe_with`]).
    pub fn phi(&self) -> f64 {
        if self.lag_var > 0.0 {
            let phi = self.lag_cov / self.lag_var;
            if phi > MAX_PHI {
                MAX_PHI
            } else if phi > 0.0 {
                phi
            } else {
                0.0
            }
        } else {
            0.0
        }
    }

    /// The scale learned from the errors alone (metric units), before any floor.
    pub fn learned_scale(&self) -> f64 {
        self.scale
    }

    /// The scale errors are measured against (metric units): the learned scale, never below
    /// the series' own floor.
    pub fn sd(&self) -> f64 {
        let step = if self.step > 0.0 {
            self.step
        } else if self.integral && self.last.is_finite() {
            1.0
        } else {
            0.0
        };
        let floor = max(max(step, SPREAD_FLOOR * self.spread), LEVEL_FLOOR * self.level.abs());
        max(max(self.scale, floor), f64::MIN_POSITIVE)
    }

    /// The single-error threshold in sd (at least `min_z`).
    pub fn threshold(&self, min_z: f64) -> f64 {
        max(f64::from(self.thresholds[0]), min_z)
    }

    /// The band `expected ± threshold * sd`, finite whatever the inputs.
    pub fn band(&self, expected: f64, min_z: f64) -> (f64, f64) {
        let half = finite(self.threshold(min_z) * self.sd());
        (finite(expected - half), finite(expected + half))
    }

    /// Scores `value` against the forecast `expected`, then learns from it unless it is
    /// anomalous. `min_z` is the least single-error threshold in sd (a detector's own
    /// `threshold` setting; 0 leaves it to the tail model). A missing value scores 0.
    pub fn observe(&mut self, value: f64, expected: f64, min_z: f64) -> Calibration {
        self.observe_with(value, expected, min_z, 0.0)
    }

    /// [`Calibrator::observe`], where a departure smaller than `min_deviation` (metric units)
    /// never reaches the decision, whatever its z: counters that jitter by a unit or two.
    pub fn observe_with(&mut self, value: f64, expected: f64, min_z: f64, min_deviation: f64) -> Calibration {
        if !value.is_finite() || !expected.is_finite() {
            return Calibration::default();
        }
        let sd = self.sd();
        let error = finite(value - expected);
        // Forecast errors of a real model are seldom independent (a bias, a lagging level, a
        // cycle it follows late): what is judged is the innovation, the error less the part
        // the previous error predicts (lag-one regression, weight `phi` in [0, 0.95]).
        let innovation = if self.previous.is_finite() { finite(error - self.phi() * self.previous) } else { error };
        let z = clamp_z(innovation / sd);
        let scoring = self.seeded || self.n >= WARMUP;
        let mut cal = Calibration { score: 0.0, z, sd, run: 1 };
        if scoring {
            let (mut ratio, run) = self.evidence(z, min_z);
            if min_deviation > 0.0 {
                let units = finite((value - expected).abs()) / min_deviation;
                ratio = if units < ratio { units } else { ratio };
            }
            cal.score = score_from_ratio(ratio);
            cal.run = run;
        }
        // Anomalies are not recent behaviour, and neither is a run on its way to being one: an
        // error is learned only once RUN - 1 more samples have passed without suspicion, so a
        // shift that is still building does not widen the scale it is measured against.
        // A departure that lasts becomes what the series does: after `ADAPT_AFTER` suspicious
        // samples in a row they are learned again (Huber-clipped), so that a calibrator never
        // stays at the decision for ever.
        self.suspicious = if cal.score < SUSPICIOUS { 0 } else { self.suspicious.saturating_add(1) };
        if cal.score < SUSPICIOUS || self.suspicious > ADAPT_AFTER {
            self.learn_value(value);
            if self.previous.is_finite() {
                self.lag_cov = finite((1.0 - LAG_ALPHA) * self.lag_cov + LAG_ALPHA * finite(self.previous * error));
                self.lag_var =
                    finite((1.0 - LAG_ALPHA) * self.lag_var + LAG_ALPHA * finite(self.previous * self.previous));
            }
            self.previous = error;
            let oldest = self.pending[RUN - 2];
            self.pending.rotate_right(1);
            self.pending[0] = innovation.abs() as f32;
            if oldest >= 0.0 {
                self.learn(f64::from(oldest));
            }
        } else {
            self.pending = [-1.0; RUN - 1];
            self.previous = f64::NAN;
        }
        // The run memory keeps anomalies too: they are what a run is made of.
        self.recent.rotate_right(1);
        self.recent[0] = z as f32;
        cal
    }

    /// Largest ratio of evidence to its threshold, and the run length that gave it.
    fn evidence(&self, z: f64, min_z: f64) -> (f64, u8) {
        let mut best = (z.abs() / self.threshold(min_z), 1u8);
        // |z| of the last RUN errors on the current error's side (0 for the other side or none).
        let mut same = [0.0; RUN];
        same[0] = z.abs();
        for (j, &previous) in self.recent.iter().enumerate() {
            let previous = f64::from(previous);
            same[j + 1] = if previous != 0.0 && (previous > 0.0) == (z > 0.0) { previous.abs() } else { 0.0 };
        }
        // All of the last k beyond their threshold.
        let mut least = same[0];
        for k in 2..=RUN {
            if same[k - 1] == 0.0 {
                break;
            }
            least = if same[k - 1] < least { same[k - 1] } else { least };
            let ratio = least / f64::from(self.thresholds[k - 1]);
            if ratio > best.0 {
                best = (ratio, k as u8);
            }
        }
        // All but one of the last RUN: one heavy-tailed sample does not hide a shift.
        let mut sorted = same;
        sorted.sort_unstable_by(f64::total_cmp);
        // The current error must be one of those beyond: a run that has ended is no news.
        let second = if same[0] < sorted[1] { same[0] } else { sorted[1] };
        let ratio = second / f64::from(self.thresholds[RUN]);
        if ratio > best.0 {
            best = (ratio, RUN as u8);
        }
        best
    }

    /// Learns one error (metric units) into the scale and the tail rates.
    fn learn(&mut self, error: f64) {
        let sd = self.sd();
        let z = clamp_z(error / sd);
        self.n = self.n.saturating_add(1);
        if self.n <= WARMUP && !self.seeded {
            // A running mean of the first errors, unclipped: there is no scale to clip by yet.
            // Errors against a scale that is still forming say nothing about the tail.
            self.scale += (finite(error * MEAN_ABS_TO_SD) - self.scale) / f64::from(self.n);
            return;
        }
        let clipped = if z.abs() > SCALE_CLIP { SCALE_CLIP * sd } else { error };
        self.scale = finite(self.scale + SCALE_ALPHA * (finite(clipped * MEAN_ABS_TO_SD) - self.scale));
        let keep = 1.0 - 1.0 / TAIL_MEMORY;
        self.weight = self.weight * keep + 1.0;
        let a = z.abs();
        for (i, over) in self.over.iter_mut().enumerate() {
            *over = *over * keep + if a > (i + 1) as f64 { 1.0 } else { 0.0 };
        }
        self.log_excess *= keep;
        if a > 3.0 {
            self.log_excess += (a / 3.0).ln();
        }
        if self.n.is_multiple_of(REFRESH) {
            self.refresh();
        }
    }

    /// Two-sided exceedance rates of 1, 2 and 3 sd, and the tail index beyond 3.
    fn tail(&self) -> ([f64; 3], f64) {
        let total = self.weight + PRIOR_SAMPLES;
        let rates = std::array::from_fn(|i| (self.over[i] + PRIOR_SAMPLES * GAUSS_OVER[i]) / total);
        // The prior index beyond 3 sd is the local one between 2 and 3 sd, which the rates
        // pin down long before there are many exceedances of 3 to fit (about 7 for Gaussian
        // errors, 2.5 for Student-t(3)), and never lighter than PRIOR_ALPHA_MAX.
        let local = (rates[1] / rates[2]).ln() / 1.5f64.ln();
        let prior_alpha = if local > 1.0 && local < PRIOR_ALPHA_MAX {
            local
        } else if local >= PRIOR_ALPHA_MAX {
            PRIOR_ALPHA_MAX
        } else {
            1.0
        };
        let exceedances = self.over[2] + PRIOR_EXCEEDANCES;
        let inverse_alpha = (self.log_excess + PRIOR_EXCEEDANCES / prior_alpha) / exceedances;
        (rates, 1.0 / inverse_alpha)
    }

    /// `|z|` exceeded with two-sided probability `p` under the tail model.
    fn quantile(rates: &[f64; 3], alpha: f64, p: f64) -> f64 {
        let [f1, f2, f3] = *rates;
        if p < f3 {
            return 3.0 * (f3 / p).powf(1.0 / alpha);
        }
        // Log-log interpolation between the tracked levels (a power law on each segment).
        let segment = |x0: f64, fa: f64, x1: f64, fb: f64| {
            let slope = (fa / fb).ln() / (x1 / x0).ln();
            if slope > 0.0 { x0 * (fa / p).powf(1.0 / slope) } else { x0 }
        };
        if p < f2 {
            segment(2.0, f2, 3.0, f3)
        } else if p < f1 {
            segment(1.0, f1, 2.0, f2)
        } else {
            1.0
        }
    }

    fn refresh(&mut self) {
        let (rates, alpha) = self.tail();
        self.thresholds[0] = Self::quantile(&rates, alpha, DECISION_P) as f32;
        for k in 2..=RUN {
            // Every one of k errors on one side beyond x: (rate(x) / 2)^k = DECISION_P / 2.
            let p = 2.0 * (DECISION_P / 2.0).powf(1.0 / k as f64);
            let x = Self::quantile(&rates, alpha, p);
            self.thresholds[k - 1] = max(x, MIN_RUN_THRESHOLD) as f32;
        }
        // All but one of RUN on one side beyond x: RUN (rate(x) / 2)^(RUN - 1) = DECISION_P / 2.
        let p = 2.0 * (DECISION_P / (2.0 * RUN as f64)).powf(1.0 / (RUN - 1) as f64);
        self.thresholds[RUN] = max(Self::quantile(&rates, alpha, p), MIN_RUN_THRESHOLD) as f32;
    }
}

/// The score of evidence `ratio` times its threshold: `R^4 / (1 + R^4)`, written so that it is
/// exact at 0 and infinity and needs no `exp`.
pub fn score_from_ratio(ratio: f64) -> f64 {
    if ratio.is_nan() {
        return 0.0;
    }
    let inverse = 1.0 / ratio;
    let i2 = inverse * inverse;
    1.0 / (1.0 + i2 * i2)
}

/// `x` with infinities replaced by the largest finite values.
#[inline(always)]
pub fn finite(x: f64) -> f64 {
    // NaN passes through: callers that can see one check for it.
    x.clamp(-f64::MAX, f64::MAX)
}

#[inline(always)]
fn clamp_z(z: f64) -> f64 {
    if z.is_nan() { 0.0 } else { z.clamp(-1e300, 1e300) }
}

/// `f64::max` as a compare and select (no libm call in Wasm).
#[inline(always)]
fn max(a: f64, b: f64) -> f64 {
    if a < b || a.is_nan() { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift uniform in (0, 1).
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn gaussian(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
        /// Student-t with 3 degrees of freedom.
        fn student3(&mut self) -> f64 {
            let z = self.gaussian();
            let chi: f64 = (0..3).map(|_| self.gaussian().powi(2)).sum();
            z / (chi / 3.0).sqrt()
        }
    }

    fn run(values: &[f64], expected: f64) -> Vec<Calibration> {
        let mut c = Calibrator::default();
        values.iter().map(|&v| c.observe(v, expected, 0.0)).collect()
    }

    #[test]
    fn thresholds_follow_the_tail() {
        let mut rng = Rng(7);
        let mut gauss = Calibrator::default();
        let mut heavy = Calibrator::default();
        for _ in 0..20_000 {
            gauss.observe(rng.gaussian(), 0.0, 0.0);
            heavy.observe(rng.student3(), 0.0, 0.0);
        }
        let (g, h) = (gauss.threshold(0.0), heavy.threshold(0.0));
        assert!((4.0..7.0).contains(&g), "Gaussian threshold {g}");
        assert!(h > 30.0, "Student-t(3) threshold {h}");
        assert!(gauss.thresholds[..RUN].windows(2).all(|w| w[0] >= w[1]), "{:?}", gauss.thresholds);
    }

    #[test]
    fn heavy_tailed_noise_rarely_reaches_the_decision_and_a_shift_does_at_once() {
        let mut found = 0;
        for seed in 1..=5 {
            let mut rng = Rng(seed * 7919);
            let noise: Vec<f64> = (0..10_000).map(|_| rng.student3()).collect();
            let high = run(&noise, 0.0).iter().filter(|c| c.anomalous()).count();
            assert!(high <= 3, "seed {seed}: {high} points at 0.5 or more");

            // 5 robust sd (the robust sd of t3 is 1.134) from sample 5000 on.
            let mut shifted = noise.clone();
            shifted[5000..].iter_mut().for_each(|v| *v += 5.0 * 1.134);
            let cal = run(&shifted, 0.0);
            let first = (5000..5020).find(|&i| cal[i].anomalous());
            assert!(first.is_some_and(|i| i <= 5006), "seed {seed}: first at {first:?}");
            found += usize::from(first.is_some_and(|i| i <= 5003));
        }
        // In Student-t(3) noise a shift of 5 robust sd is found within 3 samples about nine
        // times in ten at this decision (single errors of 50 sd are ordinary there).
        assert!(found >= 4, "{found} of 5 shifts found within 3 samples");
    }

    #[test]
    fn scores_spread_and_floors_hold() {
        let mut rng = Rng(3);
        let noise: Vec<f64> = (0..5000).map(|_| rng.gaussian()).collect();
        let cal = run(&noise, 0.0);
        let mean = cal.iter().map(|c| c.score).sum::<f64>() / cal.len() as f64;
        assert!(mean > 0.001 && mean < 0.1, "mean score {mean}");

        // A counter at zero: blips of one or two are one or two units, never anomalous.
        let mut counter = vec![0.0; 3000];
        for i in (50..3000).step_by(37) {
            counter[i] = 1.0 + (i % 2) as f64;
        }
        assert!(run(&counter, 0.0).iter().all(|c| !c.anomalous()));
        let mut c = Calibrator::default();
        counter.iter().for_each(|&v| {
            c.observe(v, 0.0, 0.0);
        });
        assert_eq!(c.sd(), 1.0, "integers: a scale of one unit");

        // A constant: no score; a quantised series gets its step.
        assert!(run(&[42.5; 500], 42.5).iter().all(|c| c.score == 0.0));
        let mut q = Calibrator::default();
        for i in 0..500 {
            q.observe(40.0 + 0.5 * (i % 3) as f64, 40.5, 0.0);
        }
        assert!(q.sd() >= 0.5, "{}", q.sd());
    }

    #[test]
    fn extreme_values_stay_finite() {
        let mut c = Calibrator::default();
        for (i, v) in
            [1.7e308, -1e308, 5e-324, 0.0, f64::MAX, -f64::MAX, 1e-300, 3.0].iter().cycle().take(400).enumerate()
        {
            let expected = if i % 3 == 0 { -f64::MAX } else { *v };
            let cal = c.observe(*v, expected, 6.0);
            assert!(cal.score.is_finite() && (0.0..=1.0).contains(&cal.score), "{cal:?}");
            let (lo, hi) = c.band(expected, 6.0);
            assert!(lo.is_finite() && hi.is_finite() && c.sd().is_finite());
        }
    }

    #[test]
    fn score_is_half_at_the_threshold() {
        assert_eq!(score_from_ratio(1.0), 0.5);
        assert_eq!(score_from_ratio(0.0), 0.0);
        assert_eq!(score_from_ratio(f64::INFINITY), 1.0);
        assert!((score_from_ratio(2.0) - 16.0 / 17.0).abs() < 1e-12);
    }
}
