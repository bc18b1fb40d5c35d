//! Per-router running normalisation: the arithmetic the model was trained on
//! (`train/train.py`, `normalise`). Change both or neither.

use serde::{Deserialize, Serialize};

/// Samples over which the statistics are exact running moments (Welford); after that they
/// follow the series with an exponential forgetting factor.
pub const WARMUP: u64 = 60;
/// Weight of the newest sample once warmed up: a time constant of a day at one sample a minute.
pub const ALPHA: f64 = 1.0 / 1440.0;
/// The standard deviation claimed is never below 1% of the level: a flat series (BGP sessions)
/// would otherwise turn rounding into a catastrophe.
pub const REL_FLOOR: f64 = 0.01;
pub const ABS_FLOOR: f64 = 1e-9;
/// Model inputs are clipped to this many standard deviations, the range it was trained on.
pub const CLIP: f64 = 8.0;

/// Running mean and variance of one (router, metric).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Norm {
    pub n: u64,
    pub mean: f64,
    pub var: f64,
}

impl Norm {
    /// The scale a value is measured against.
    pub fn sd(&self) -> f64 {
        self.var.max(0.0).sqrt().max(REL_FLOOR * self.mean.abs()).max(ABS_FLOOR)
    }

    /// `value` in standard deviations from the running mean (0 for the first sample).
    pub fn z(&self, value: f64) -> f64 {
        if self.n == 0 { 0.0 } else { (value - self.mean) / self.sd() }
    }

    /// Learns `value`.
    pub fn update(&mut self, value: f64) {
        if self.n == 0 {
            *self = Norm { n: 1, mean: value, var: 0.0 };
            return;
        }
        self.n += 1;
        let d = value - self.mean;
        if self.n <= WARMUP {
            let n = self.n as f64;
            self.mean += d / n;
            self.var += (d * (value - self.mean) - self.var) / n;
        } else {
            self.mean += ALPHA * d;
            self.var = (1.0 - ALPHA) * (self.var + ALPHA * d * d);
        }
    }

    /// Back from standard deviations to the metric's unit.
    pub fn denormalise(&self, z: f64) -> f64 {
        self.mean + z * self.sd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_gives_exact_moments() {
        let mut norm = Norm::default();
        for v in [1.0, 2.0, 3.0, 4.0] {
            norm.update(v);
        }
        assert!((norm.mean - 2.5).abs() < 1e-12);
        assert!((norm.var - 1.25).abs() < 1e-12, "population variance: {}", norm.var);
        assert!((norm.z(2.5 + 1.25f64.sqrt()) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn flat_series_keep_a_floor() {
        let mut norm = Norm::default();
        for _ in 0..100 {
            norm.update(11.0);
        }
        assert!((norm.sd() - 0.11).abs() < 1e-12);
        assert!((norm.z(10.0) + 1.0 / 0.11).abs() < 1e-9);
    }
}
