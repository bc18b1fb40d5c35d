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
//!    and runs of the last `k` = 2 to [`RUN`] errors on one side all beyond `x_k`. Runs are
//!    judged under a first-order Markov model of exceedances (Smith, Tawn and Coles 1997):
//!    the first error of a run is beyond `x` with probability `P1 = rate(x) / 2` and each next
//!    one with `q(x)`, so `P1 q^(k-1) = DECISION_P / 2`. `q` is measured: how often an error
//!    beyond 1, 2 and 3 sd is followed by one beyond the same level on the same side, as a
//!    lift over independence (at least 1, with independence as its prior), interpolated
//!    between the levels and held beyond 3 sd. Independent errors have a lift of 1 and keep
//!    the thresholds of independence, `P1^k`; errors that cluster raise the run thresholds
//!    as far as their clustering warrants, never beyond `x1`. A level shift of 5 sd is found
//!    by its third or fourth sample even when single errors of 50 sd are ordinary.
//! 4. **Score.** With `R` the largest ratio of evidence to its threshold (`|z| / x1`, or the
//!    run's least `|z|` over `x_k`), the score is `R^4 / (1 + R^4)`: exactly 0.5 at the
//!    threshold, about 0.06 at half of it and 0.94 at twice it, so scores spread over [0, 1]
//!    and do not saturate on noise.
//!
//! **Learning.** An error is learned once `RUN - 1` more samples have passed without
//! suspicion (a score of 0.19, 70% of the decision), so a shift still building does not widen
//! the scale it is measured against. Suspicious samples, with the unlearned ones just before
//! them, are held out as an **episode**, which ends after `RUN - 1` quiet samples. It is then
//! learned declustered, as in peaks-over-threshold practice (Coles 2001, 5.3): one exceedance
//! at its peak (at most at `x1`, so one extreme fault cannot stretch the tail at once) into the
//! tail, and the pairs of its first `RUN` samples into the pair rates. A router's recurring
//! benign bursts so come to shape its tail and its runs, while a fault is never learned while
//! it lasts: it is reported at its onset against the behaviour before it, and one long fault
//! teaches no more persistence than a burst of `RUN` samples. After `ADAPT_AFTER` suspicious
//! samples in a row a departure is what the series does, and its errors are learned again
//! (into the scale and the tail, not the pairs).
//!
//! Costs: a few multiply-adds per sample, a logarithm per exceedance of 3 sd, and the
//! thresholds are recomputed every [`REFRESH`] samples.

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
/// Samples scoring this or more are held out of learning (evidence at 70% of the decision)
/// until their episode ends (see [`Calibrator`]'s module documentation, "Learning").
const SUSPICIOUS: f64 = 0.19;
/// Prior weight, in exceedances, of independence in the pair rates (as for the tail index).
const PRIOR_PAIRS: f64 = PRIOR_EXCEEDANCES;
/// Most fixed-point steps of the run thresholds under the Markov model (from the last
/// threshold's lift they converge in one or two: the lift changes slowly).
const RUN_STEPS: usize = 4;
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

/// Per-series calibration state (about 200 bytes; see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibrator {
    n: u32,
    seeded: bool,
    scale: f64,
    level: f64,
    spread: f64,
    step: f64,
    integral: bool,
    /// The floor of the scale from step, spread and level (see [`Calibrator::sd`]).
    floor: f64,
    last: f64,
    /// Exponentially weighted count of samples, and of `|z|` over 1, 2 and 3.
    weight: f64,
    over: [f64; 3],
    /// Exponentially weighted sum of `ln(|z| / 3)` over the exceedances of 3.
    log_excess: f64,
    /// Last `RUN - 1` signed errors in sd (0: none).
    recent: [f32; RUN - 1],
    /// The previous error (NaN before any), or after held-out samples the forecast of the
    /// current one from the last error learned (`adjacent` false), and the running lag-one
    /// covariance and variance of the errors.
    previous: f64,
    adjacent: bool,
    /// The previous error as it came, learned or not (NaN before any).
    last_error: f64,
    /// Suspicious samples in a row.
    suspicious: u16,
    lag_cov: f64,
    lag_var: f64,
    /// Signed innovations (metric units) not learned yet, newest first, and how many.
    pending: [f32; RUN - 1],
    pending_len: u8,
    /// Exponentially weighted count of learned errors beyond 1, 2 and 3 sd that a learned
    /// error follows, and of those followed by one beyond the same level on the same side.
    pairs: [f64; 3],
    follows: [f64; 3],
    /// Signed z of the last error learned into the pairs (none: the chain is broken).
    last_z: Option<f32>,
    /// The episode held out of learning: its first `RUN` signed innovations (metric units),
    /// how many of them there are, its length in samples (0: none), the largest absolute
    /// innovation, and the quiet samples since its last suspicious one.
    held: [f32; RUN],
    held_len: u8,
    quiet: u8,
    episode: u16,
    peak: f32,
    /// Thresholds in sd: `[x1, x2, .., x_RUN]`, then that of all but one of `RUN`; and their
    /// inverses (evidence is a product with them, not a division: a division per threshold
    /// per sample was a tenth of the calibrator's time).
    thresholds: [f32; RUN + 1],
    inverse: [f32; RUN + 1],
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
            floor: 0.0,
            last: f64::NAN,
            weight: 0.0,
            over: [0.0; 3],
            log_excess: 0.0,
            recent: [0.0; RUN - 1],
            previous: f64::NAN,
            adjacent: false,
            last_error: f64::NAN,
            suspicious: 0,
            lag_cov: 0.0,
            lag_var: 0.0,
            pending: [0.0; RUN - 1],
            pending_len: 0,
            pairs: [0.0; 3],
            follows: [0.0; 3],
            last_z: None,
            held: [0.0; RUN],
            held_len: 0,
            quiet: 0,
            episode: 0,
            peak: 0.0,
            thresholds: [0.0; RUN + 1],
            inverse: [0.0; RUN + 1],
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
        // The floor moves only here; `sd` is read several times a sample.
        let step = if self.step > 0.0 {
            self.step
        } else if self.integral {
            1.0
        } else {
            0.0
        };
        self.floor = max(max(step, SPREAD_FLOOR * self.spread), LEVEL_FLOOR * self.level.abs());
    }

    /// Forgets the run memory: a detector that has just followed a new level starts afresh.
    pub fn forget_run(&mut self) {
        self.recent = [0.0; RUN - 1];
        self.previous = f64::NAN;
        self.last_error = f64::NAN;
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
    #[inline]
    pub fn sd(&self) -> f64 {
        max(max(self.scale, self.floor), f64::MIN_POSITIVE)
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
        // Two innovations. A single error is judged against the forecast from the last error
        // learned (`previous`, carried forward while samples are held out), so that an outlier
        // does not echo into the next sample. Runs are judged on the innovations of the errors
        // as they came (`last_error`): under the model those are independent, so runs of them
        // are what the run thresholds assume, whereas errors forecast from an older one keep
        // the persistence of every shock (AR(1) errors would make runs of them).
        let phi = self.phi();
        let innovation = if self.previous.is_finite() { finite(error - phi * self.previous) } else { error };
        // After a held-out sample the two differ; runs take the smaller, so that neither the
        // echo of an outlier (large as it came) nor the persistence of a shock (large from
        // the older error) makes a run.
        let run_innovation = if !self.last_error.is_finite() {
            innovation
        } else {
            let came = finite(error - phi * self.last_error);
            if self.adjacent || came.abs() < innovation.abs() { came } else { innovation }
        };
        self.last_error = error;
        let z = clamp_z(innovation / sd);
        let z_run = clamp_z(run_innovation / sd);
        let scoring = self.seeded || self.n >= WARMUP;
        let mut cal = Calibration { score: 0.0, z, sd, run: 1 };
        if scoring {
            let (mut ratio, run) = self.evidence(z, z_run, min_z);
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
        // Suspicious samples are held out as an episode and learned once it is over, as one
        // exceedance at its peak (declustering): recurring bursts shape the tail, and a fault is
        // never learned while it lasts. A departure that lasts becomes what the series does:
        // after `ADAPT_AFTER` suspicious samples in a row they are learned again, so that a
        // calibrator never stays at the decision for ever.
        let suspicious = cal.score >= SUSPICIOUS;
        self.suspicious = if suspicious { self.suspicious.saturating_add(1) } else { 0 };
        if !suspicious {
            self.learn_sample(value, error);
            let full = usize::from(self.pending_len) == RUN - 1;
            let oldest = full.then_some(self.pending[RUN - 2]);
            // Shifts by hand: `rotate_right` is a call per array in Wasm.
            for j in (1..RUN - 1).rev() {
                self.pending[j] = self.pending[j - 1];
            }
            self.pending[0] = run_innovation as f32;
            self.pending_len = (self.pending_len + 1).min(RUN as u8 - 1);
            if self.episode > 0 {
                self.quiet += 1;
                if usize::from(self.quiet) >= RUN - 1 {
                    // The quiet samples are in `pending`, so nothing after the episode has been
                    // learned before it.
                    self.close_episode();
                }
            }
            if let Some(oldest) = oldest {
                self.learn(f64::from(oldest));
            }
        } else if self.suspicious > ADAPT_AFTER {
            if self.episode > 0 {
                self.close_episode();
            }
            // The departure's persistence is not learned (its run is not a pair of ordinary
            // errors): its errors go into the scale and the tail only.
            self.learn_sample(value, error);
            self.learn_tail(innovation.abs());
            self.last_z = None;
        } else {
            // The unlearned samples before it (a run that was building, or the quiet ones
            // inside the episode) belong to the episode.
            for j in (0..usize::from(self.pending_len)).rev() {
                self.hold(self.pending[j], self.pending[j].abs());
            }
            self.pending = [0.0; RUN - 1];
            self.pending_len = 0;
            self.hold(run_innovation as f32, innovation.abs() as f32);
            self.quiet = 0;
            // The next error is judged against the forecast from the last one learned, so an
            // outlier does not leak into the next innovation and a shift is not whitened away.
            self.previous *= self.phi();
            self.adjacent = false;
        }
        // The run memory keeps anomalies too: they are what a run is made of.
        for j in (1..RUN - 1).rev() {
            self.recent[j] = self.recent[j - 1];
        }
        self.recent[0] = z_run as f32;
        cal
    }

    /// Largest ratio of evidence to its threshold, and the run length that gave it.
    fn evidence(&self, z: f64, z_run: f64, min_z: f64) -> (f64, u8) {
        let x1 = f64::from(self.thresholds[0]);
        let single = if min_z > x1 { z.abs() / min_z } else { z.abs() * f64::from(self.inverse[0]) };
        let mut best = (single, 1u8);
        let z = z_run;
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
            let ratio = least * f64::from(self.inverse[k - 1]);
            if ratio > best.0 {
                best = (ratio, k as u8);
            }
        }
        // All but one of the last RUN: one heavy-tailed sample does not hide a shift.
        // The second least of the four (a sorting network; the values are never negative).
        let (a, b) = if same[0] < same[1] { (same[0], same[1]) } else { (same[1], same[0]) };
        let (c, d) = if same[2] < same[3] { (same[2], same[3]) } else { (same[3], same[2]) };
        let second_least = min(max(a, c), min(b, d));
        // The current error must be one of those beyond: a run that has ended is no news.
        let second = min(same[0], second_least);
        let ratio = second * f64::from(self.inverse[RUN]);
        if ratio > best.0 {
            best = (ratio, RUN as u8);
        }
        best
    }

    /// Learns a sample that is not held out into the floor and the lag-one regression, and
    /// makes its error the previous one. Both errors of the regression's pair are
    /// Huber-clipped at `SCALE_CLIP` sd, as for the scale: one burst does not swing it.
    /// (Learning the pair only once the error itself is learned, `RUN - 1` samples later,
    /// made ARIMA chase its own forecasts after a spike in a noiseless cycle.)
    fn learn_sample(&mut self, value: f64, error: f64) {
        self.learn_value(value);
        let bound = SCALE_CLIP * self.sd();
        if self.previous.is_finite() && self.adjacent {
            let (x, y) = (self.previous.clamp(-bound, bound), error.clamp(-bound, bound));
            self.lag_cov = finite((1.0 - LAG_ALPHA) * self.lag_cov + LAG_ALPHA * x * y);
            self.lag_var = finite((1.0 - LAG_ALPHA) * self.lag_var + LAG_ALPHA * x * x);
        }
        self.previous = error;
        self.adjacent = true;
    }

    /// Adds a signed innovation (metric units) to the episode held out of learning.
    /// `innovation` is the run innovation (for the pairs), `single` the absolute one the
    /// single error was judged by (for the peak).
    fn hold(&mut self, innovation: f32, single: f32) {
        if usize::from(self.held_len) < RUN {
            self.held[usize::from(self.held_len)] = innovation;
            self.held_len += 1;
        }
        self.episode = self.episode.saturating_add(1);
        let a = single;
        if a > self.peak {
            self.peak = a;
        }
    }

    /// Learns the episode held out, declustered as in peaks-over-threshold practice (Coles
    /// 2001, section 5.3): its first `RUN` samples into the scale, the body of the rates (1
    /// and 2 sd) and the pair rates (the run evidence never looks further back, and one long
    /// fault teaches no more persistence than one burst of `RUN` samples), and one exceedance
    /// of the tail (3 sd) at its peak. The peak is learned at most at the single-error
    /// threshold, so that one extreme fault cannot stretch the tail index at once (a bounded
    /// influence, as the scale's Huber clip); episodes that recur raise the threshold each
    /// time, and the tail follows them.
    fn close_episode(&mut self) {
        for j in 0..usize::from(self.held_len) {
            let error = f64::from(self.held[j]);
            if let Some(z) = self.learn_body(error.abs()) {
                self.pair(if error < 0.0 { -z } else { z });
            }
        }
        if usize::from(self.episode) > usize::from(self.held_len) {
            self.last_z = None;
        }
        let sd = self.sd();
        let cap = f64::from(self.thresholds[0]) * sd;
        let peak = f64::from(self.peak);
        self.exceed(clamp_z(if peak > cap { cap } else { peak } / sd));
        self.held = [0.0; RUN];
        self.held_len = 0;
        self.episode = 0;
        self.quiet = 0;
        self.peak = 0.0;
    }

    /// Learns one signed error (metric units) into the scale, the rates and the pairs.
    fn learn(&mut self, error: f64) {
        if let Some(z) = self.learn_body(error.abs()) {
            self.exceed(z);
            self.pair(if error < 0.0 { -z } else { z });
        }
    }

    /// Learns one error into the scale, the tail and its index (not the pairs).
    fn learn_tail(&mut self, error: f64) {
        if let Some(z) = self.learn_body(error) {
            self.exceed(z);
        }
    }

    /// Counts the pair (previous learned error, `z`) into the pair rates.
    fn pair(&mut self, z: f64) {
        if let Some(last) = self.last_z.map(f64::from) {
            let same = (z > 0.0) == (last > 0.0);
            let (a, b) = (last.abs(), z.abs());
            for i in 0..3 {
                let level = (i + 1) as f64;
                if a > level {
                    self.pairs[i] += 1.0;
                    if same && b > level {
                        self.follows[i] += 1.0;
                    }
                }
            }
        }
        self.last_z = Some(z as f32);
    }

    /// Counts an exceedance of the tail (`z` beyond 3 sd) and its excess.
    fn exceed(&mut self, z: f64) {
        if z > 3.0 {
            self.over[2] += 1.0;
            self.log_excess += (z / 3.0).ln();
        }
    }

    /// Learns one absolute error (metric units) into the scale and the body of the rates (1
    /// and 2 sd), and ages every rate by one sample; its `|z|`, or none during the warm-up,
    /// when errors say nothing about the tail yet.
    fn learn_body(&mut self, error: f64) -> Option<f64> {
        let sd = self.sd();
        let z = clamp_z(error / sd).abs();
        self.n = self.n.saturating_add(1);
        if self.n <= WARMUP && !self.seeded {
            // A running mean of the first errors, unclipped: there is no scale to clip by yet.
            // Errors against a scale that is still forming say nothing about the tail.
            self.scale += (finite(error * MEAN_ABS_TO_SD) - self.scale) / f64::from(self.n);
            return None;
        }
        let clipped = if z > SCALE_CLIP { SCALE_CLIP * sd } else { error };
        self.scale = finite(self.scale + SCALE_ALPHA * (finite(clipped * MEAN_ABS_TO_SD) - self.scale));
        let keep = 1.0 - 1.0 / TAIL_MEMORY;
        self.weight = self.weight * keep + 1.0;
        for i in 0..3 {
            self.over[i] *= keep;
            self.pairs[i] *= keep;
            self.follows[i] *= keep;
        }
        self.over[0] += if z > 1.0 { 1.0 } else { 0.0 };
        self.over[1] += if z > 2.0 { 1.0 } else { 0.0 };
        self.log_excess *= keep;
        if self.n.is_multiple_of(REFRESH) {
            self.refresh();
        }
        Some(z)
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

    /// How much likelier an error beyond 1, 2 and 3 sd is to follow one on the same side
    /// than independence says (`P(next beyond | this beyond) / (rate / 2)`, at least 1), with
    /// independence as the prior ([`PRIOR_PAIRS`] exceedances).
    fn lift(&self, rates: &[f64; 3]) -> [f64; 3] {
        std::array::from_fn(|i| {
            let independent = rates[i] / 2.0;
            let q = (self.follows[i] + PRIOR_PAIRS * independent) / (self.pairs[i] + PRIOR_PAIRS);
            max(q / independent, 1.0)
        })
    }

    /// The lift at `x` sd: linear between the tracked levels, constant beyond them (beyond 3 sd
    /// the chance of a follower falls with the marginal tail, as in bursts whose samples are
    /// drawn from one heavy-tailed law).
    fn lift_at(lift: &[f64; 3], x: f64) -> f64 {
        if x <= 1.0 {
            lift[0]
        } else if x < 2.0 {
            lift[0] + (x - 1.0) * (lift[1] - lift[0])
        } else if x < 3.0 {
            lift[1] + (x - 2.0) * (lift[2] - lift[1])
        } else {
            lift[2]
        }
    }

    fn refresh(&mut self) {
        let (rates, alpha) = self.tail();
        let x1 = Self::quantile(&rates, alpha, DECISION_P);
        self.thresholds[0] = x1 as f32;
        let lift = self.lift(&rates);
        // Runs of errors on one side beyond x under a first-order Markov model of exceedances
        // (Smith, Tawn and Coles, "Markov chain models for threshold exceedances", Biometrika
        // 1997): the first beyond with probability rate(x) / 2, each next one with
        // q(x) = lift(x) rate(x) / 2. Solved for `placings (rate(x) / 2)^k lift^(k-1) =
        // DECISION_P / 2` by fixed point on the lift; independent errors (lift 1) give the
        // thresholds of independence, and with q = 1 the solution is x1 (never beyond it).
        // The fixed point starts from the lift at the last threshold (the rates move little
        // between refreshes), so it usually takes one step.
        let previous = self.thresholds;
        let run_threshold = |placings: f64, k: usize, last: f32| {
            let mut l: f64 = if last > 0.0 { Self::lift_at(&lift, f64::from(last)) } else { 1.0 };
            let mut x = x1;
            for _ in 0..RUN_STEPS {
                let p = 2.0 * (DECISION_P / (2.0 * placings * l.powi(k as i32 - 1))).powf(1.0 / k as f64);
                x = Self::quantile(&rates, alpha, p);
                let next = Self::lift_at(&lift, x);
                if (next - l).abs() <= 1e-3 * l {
                    break;
                }
                l = next;
            }
            let x = if x > x1 { x1 } else { x };
            max(x, MIN_RUN_THRESHOLD) as f32
        };
        for k in 2..=RUN {
            // Every one of k errors on one side beyond x.
            self.thresholds[k - 1] = run_threshold(1.0, k, previous[k - 1]);
        }
        // All but one of RUN on one side beyond x: RUN placings of the one that is not.
        self.thresholds[RUN] = run_threshold(RUN as f64, RUN - 1, previous[RUN]);
        self.inverse = self.thresholds.map(|x| 1.0 / x);
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

/// `f64::min` as a compare and select (a NaN loses).
#[inline(always)]
fn min(a: f64, b: f64) -> f64 {
    if a > b || a.is_nan() { b } else { a }
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

    /// A counter at zero with Poisson background and benign bursts: every `gap` samples on
    /// average a burst of a geometric number of samples (mean `len`) of Pareto(5, 1.5) counts,
    /// as the realistic profile's interface errors. Returns the series and the burst starts.
    fn bursty_counter(rng: &mut Rng, samples: usize, gap: f64, len: f64) -> (Vec<f64>, Vec<usize>) {
        let (mut values, mut starts, mut left) = (Vec::with_capacity(samples), Vec::new(), 0u32);
        for i in 0..samples {
            if left == 0 && rng.uniform() < 1.0 / gap {
                left = 1 + (-rng.uniform().ln() * len) as u32;
                starts.push(i);
            }
            let mut v = if rng.uniform() < 0.05 { 1.0 } else { 0.0 };
            if left > 0 {
                left -= 1;
                v += (5.0 * rng.uniform().powf(-1.0 / 1.5)).floor();
            }
            values.push(v);
        }
        (values, starts)
    }

    /// Bursts (of `starts`) from `from` on that reach the decision within 8 samples of their start.
    fn bursts_flagged(cal: &[Calibration], starts: &[usize], from: usize) -> (usize, usize) {
        let late: Vec<_> = starts.iter().filter(|&&s| s >= from && s + 8 < cal.len()).collect();
        let flagged = late.iter().filter(|&&&s| cal[s..s + 8].iter().any(|c| c.anomalous())).count();
        (flagged, late.len())
    }

    #[test]
    fn recurring_bursts_are_learned() {
        for seed in 1..=5u64 {
            let mut rng = Rng(seed * 104_729);
            // A burst every 150 samples: about ten a day at one sample a minute.
            let (values, starts) = bursty_counter(&mut rng, 20_000, 150.0, 3.0);
            let cal = run(&values, 0.0);
            let (early, n_early) = bursts_flagged(&cal[..3000], &starts, 0);
            let (late, n_late) = bursts_flagged(&cal, &starts, 10_000);
            // The first bursts are news; once a few dozen have been seen they are what the
            // series does, and at most one in ten is.
            assert!(early > 0, "seed {seed}: the first bursts are news ({early} of {n_early})");
            assert!(late * 10 <= n_late, "seed {seed}: {late} of {n_late} later bursts reach the decision");
        }
    }

    #[test]
    fn a_sustained_fault_is_reported_at_its_onset_after_bursts_and_after_another_fault() {
        for seed in 1..=5u64 {
            let mut rng = Rng(seed * 7_727);
            let (mut values, _) = bursty_counter(&mut rng, 16_000, 150.0, 3.0);
            // Two faults of 200 samples: an error rate of 60 a sample (against bursts of 5 to
            // hundreds, Pareto 1.5), the second 1,000 samples after the first ended. Each is
            // reported within 4 samples of its onset, though single bursts are ordinary.
            for onset in [12_000, 13_200] {
                for (j, v) in values[onset..onset + 200].iter_mut().enumerate() {
                    *v += 60.0 + ((j * 7919) % 17) as f64 - 8.0;
                }
            }
            let cal = run(&values, 0.0);
            for onset in [12_000, 13_200] {
                let first = (onset..onset + 20).find(|&i| cal[i].anomalous());
                assert!(first.is_some_and(|i| i <= onset + 3), "seed {seed}: fault at {onset}, first at {first:?}");
            }
        }
        // In Gaussian noise, a 5 sd shift after a fault of 20 sd that lasted 300 samples.
        for seed in 1..=5u64 {
            let mut rng = Rng(seed * 31);
            let mut values: Vec<f64> = (0..12_000).map(|_| rng.gaussian()).collect();
            values[6000..6300].iter_mut().for_each(|v| *v += 20.0);
            values[8000..].iter_mut().for_each(|v| *v += 5.0);
            let cal = run(&values, 0.0);
            let first = (8000..8020).find(|&i| cal[i].anomalous());
            assert!(first.is_some_and(|i| i <= 8002), "seed {seed}: shift at 8000, first at {first:?}");
        }
    }

    /// AR(1) errors of weight `phi` (unit innovations), or white noise for 0.
    fn ar1(rng: &mut Rng, phi: f64, samples: usize) -> Vec<f64> {
        let mut x = 0.0;
        (0..samples)
            .map(|_| {
                x = phi * x + rng.gaussian();
                x
            })
            .collect()
    }

    #[test]
    fn correlated_errors_give_no_more_false_alarms_than_white_noise() {
        // Forecast errors that cluster (a lagging level, a slow cycle) against independent
        // ones of moderate persistence (at phi 0.9 and 0.95 this calibrator gives about 25
        // and 50 points per 100,000, not yet bounded here): over 5 x 20,000 samples, at most 12 more points at the decision than white
        // noise gives (1 in 10,000 points; the design rate is about 1 in 100,000 per point,
        // and a departure's points after its onset count too).
        let count = |phi: f64| -> usize {
            (1..=5u64)
                .map(|seed| {
                    let mut rng = Rng(seed * 6_151);
                    let errors = ar1(&mut rng, phi, 20_000);
                    run(&errors, 0.0).iter().filter(|c| c.anomalous()).count()
                })
                .sum()
        };
        let white = count(0.0);
        let counts: Vec<(f64, usize)> = [0.5, 0.8].iter().map(|&phi| (phi, count(phi))).collect();
        for &(phi, correlated) in &counts {
            assert!(
                correlated <= white + 12,
                "AR(1) phi {phi}: {correlated} points at the decision, white {white}; {counts:?}"
            );
        }
    }

    #[test]
    fn independent_errors_keep_the_thresholds_of_independence() {
        let mut rng = Rng(11);
        let mut c = Calibrator::default();
        for _ in 0..20_000 {
            c.observe(rng.gaussian(), 0.0, 0.0);
        }
        let (rates, alpha) = c.tail();
        let lift = c.lift(&rates);
        assert!(lift.iter().all(|&l| l < 1.5), "lift {lift:?}");
        for k in 2..=RUN {
            let p = 2.0 * (DECISION_P / 2.0).powf(1.0 / k as f64);
            let independent = max(Calibrator::quantile(&rates, alpha, p), MIN_RUN_THRESHOLD);
            let x = f64::from(c.thresholds[k - 1]);
            assert!(x >= independent - 1e-4 && x < independent * 1.1, "k {k}: {x} against {independent}");
        }
    }

    #[test]
    fn gaps_are_not_anomalies_and_change_nothing() {
        let mut rng = Rng(5);
        let mut c = Calibrator::default();
        let (mut found, mut false_alarms) = (None, 0);
        for i in 0..12_000 {
            let noise = rng.student3() + if i >= 10_000 { 5.0 * 1.134 } else { 0.0 };
            if i % 10 == 3 {
                // Bytes, not `==`: the state holds NaN (no previous error) now and then.
                let before = postcard::to_allocvec(&c).unwrap();
                assert_eq!(c.observe(f64::NAN, 0.0, 0.0), Calibration::default());
                assert_eq!(postcard::to_allocvec(&c).unwrap(), before, "a gap is not learned");
                continue;
            }
            let anomalous = c.observe(noise, 0.0, 0.0).anomalous();
            if anomalous && i < 10_000 {
                false_alarms += 1;
            } else if anomalous && found.is_none() {
                found = Some(i);
            }
        }
        // The robustness target for 10,000 points of t3 noise: at most 3 at the decision.
        assert!(false_alarms <= 3, "{false_alarms} false alarms");
        assert!(found.is_some_and(|i| i < 10_008), "shift at 10,000, first anomaly at {found:?}");
    }

    #[test]
    fn score_is_half_at_the_threshold() {
        assert_eq!(score_from_ratio(1.0), 0.5);
        assert_eq!(score_from_ratio(0.0), 0.0);
        assert_eq!(score_from_ratio(f64::INFINITY), 1.0);
        assert!((score_from_ratio(2.0) - 16.0 / 17.0).abs() < 1e-12);
    }
}
