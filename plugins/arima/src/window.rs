//! The refit window: a series' recent values in model space, two bytes a sample.
//!
//! A restored series must refit on exactly the numbers the uninterrupted one would, so the
//! window is kept in memory in the same form it is snapshotted in: after the first fit, on a
//! grid of `base + k * step` with `k` a 16-bit integer and `step` a power of two near
//! 1/2048 of the window's spread. Rounding to the grid adds noise of about 1/7000 of the
//! spread, far below any metric's own; the snapshot holds 2 bytes a sample instead of 4.
//!
//! Every change to the grid (at a fit, or when a sample falls off its ends) is a function of
//! the window alone, so the uninterrupted and the restored series make the same changes.

use std::collections::VecDeque;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Grid steps either side of the base that a sample can take.
const REACH: f64 = i16::MAX as f64;
/// Grid steps to one standard deviation of the window, at a fit.
const STEPS_PER_SPREAD: f64 = 2048.0;

/// Recent values, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Window {
    /// Before the first fit (no spread yet to size a grid by), in single precision.
    Raw(VecDeque<f32>),
    /// From the first fit on: sample `i` is `base + steps[i] * step`.
    Grid {
        base: f64,
        step: f64,
        #[serde(with = "two_bytes")]
        steps: VecDeque<i16>,
    },
}

impl Default for Window {
    fn default() -> Window {
        Window::Raw(VecDeque::new())
    }
}

impl Window {
    /// Whether the window could have been built by [`Window::push`] and [`Window::regrid`]:
    /// no NaN, a finite base and a positive, finite step. A snapshot is checked with it.
    pub fn is_sound(&self) -> bool {
        match self {
            // Version 4 kept values beyond single precision's range as infinities; a fit
            // re-grids them. No push makes a NaN.
            Window::Raw(values) => values.iter().all(|v| !v.is_nan()),
            Window::Grid { base, step, .. } => base.is_finite() && *step > 0.0 && step.is_finite(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Window::Raw(values) => values.len(),
            Window::Grid { steps, .. } => steps.len(),
        }
    }

    /// Appends a sample, keeping at most `capacity`. A sample beyond the grid's ends widens
    /// the grid (re-rounding the window) instead of being clipped.
    pub fn push(&mut self, value: f64, capacity: usize) {
        match self {
            // Beyond single precision's range a value would become infinite: it saturates.
            Window::Raw(values) => values.push_back(value.clamp(-f64::from(f32::MAX), f64::from(f32::MAX)) as f32),
            Window::Grid { base, step, steps } => match on_grid(value, *base, *step) {
                Some(k) => steps.push_back(k),
                None => {
                    let step = *step;
                    let mut values = self.values();
                    values.push(value);
                    *self = Window::fitted(&values, step);
                }
            },
        }
        self.trim(capacity);
    }

    /// Drops the oldest samples beyond `capacity`. Once full, the window drops one sample per
    /// sample; only a smaller configured window drops more. No loop on the per-point path.
    pub fn trim(&mut self, capacity: usize) {
        fn trim<T>(values: &mut VecDeque<T>, capacity: usize) {
            match values.len().saturating_sub(capacity) {
                0 => {}
                1 => {
                    values.pop_front();
                }
                excess => {
                    values.drain(..excess);
                }
            }
        }
        match self {
            Window::Raw(values) => trim(values, capacity),
            Window::Grid { steps, .. } => trim(steps, capacity),
        }
    }

    /// The samples, oldest first.
    pub fn values(&self) -> Vec<f64> {
        match self {
            Window::Raw(values) => values.iter().map(|&v| f64::from(v)).collect(),
            // At the very ends of f64's range the rounding to a step could overflow: saturate.
            Window::Grid { base, step, steps } => {
                steps.iter().map(|&k| (base + f64::from(k) * step).clamp(-f64::MAX, f64::MAX)).collect()
            }
        }
    }

    /// Re-grids the window for a fit, by the spread (standard deviation) of its samples, and
    /// returns the samples the fit is to read, with that spread.
    pub fn regrid(&mut self) -> (Vec<f64>, f64) {
        let values = self.values();
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let spread = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let scale = if spread > 0.0 && spread.is_finite() { spread } else { mean.abs() };
        let step = if scale > 0.0 && scale.is_finite() { power_of_two_below(scale / STEPS_PER_SPREAD) } else { 1.0 };
        *self = Window::fitted(&values, step);
        (self.values(), spread)
    }

    /// A grid holding `values`, with a step of at least `step` (doubled until every value is
    /// within reach of the base, the middle of their range).
    fn fitted(values: &[f64], mut step: f64) -> Window {
        let finite = || values.iter().copied().filter(|v| v.is_finite());
        let low = finite().fold(f64::INFINITY, f64::min);
        let high = finite().fold(f64::NEG_INFINITY, f64::max);
        let (base, half) = if low <= high { (low / 2.0 + high / 2.0, high / 2.0 - low / 2.0) } else { (0.0, 0.0) };
        if !(step > 0.0 && step.is_finite()) {
            step = f64::MIN_POSITIVE;
        }
        while half / step > REACH && (step * 2.0).is_finite() {
            step *= 2.0;
        }
        let steps = values
            .iter()
            .map(|&v| on_grid(v, base, step).unwrap_or(if v > base { i16::MAX } else { i16::MIN }))
            .collect();
        Window::Grid { base, step, steps }
    }
}

/// `value`'s nearest grid point, if it is within reach. A non-finite value sits at the base.
fn on_grid(value: f64, base: f64, step: f64) -> Option<i16> {
    if !value.is_finite() {
        return Some(0);
    }
    // Ties to even: one Wasm instruction (`f64.nearest`), where `round` is a libm call on
    // the per-point path.
    let k = ((value - base) / step).round_ties_even();
    (k.abs() <= REACH).then_some(k as i16)
}

/// The largest power of two at most `x` (a positive, finite number), from its exponent bits:
/// no libm call, the same on every platform.
fn power_of_two_below(x: f64) -> f64 {
    if x < f64::MIN_POSITIVE {
        return f64::MIN_POSITIVE;
    }
    f64::from_bits(x.to_bits() & 0x7FF0_0000_0000_0000)
}

/// Grid steps as little-endian byte pairs: postcard writes an `i16` as a varint of up to
/// three bytes, which would undo much of the saving.
mod two_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(steps: &VecDeque<i16>, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = steps.iter().flat_map(|k| k.to_le_bytes()).collect();
        bytes.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<VecDeque<i16>, D::Error> {
        let bytes = Vec::<u8>::deserialize(deserializer)?;
        if bytes.len() % 2 != 0 {
            return Err(serde::de::Error::custom("a window of grid steps has an odd number of bytes"));
        }
        Ok(bytes.chunks_exact(2).map(|pair| i16::from_le_bytes([pair[0], pair[1]])).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_on_the_grid_round_to_a_fraction_of_the_spread() {
        let mut window = Window::default();
        let raw: Vec<f64> = (0..240).map(|i| 50.0 + 3.0 * ((i as f64) * 0.37).sin()).collect();
        for &v in &raw {
            window.push(v, 240);
        }
        let (gridded, spread) = window.regrid();
        assert!((spread - 3.0 / 2f64.sqrt()).abs() < 0.1, "{spread}");
        for (a, b) in raw.iter().zip(&gridded) {
            assert!((a - b).abs() <= spread / STEPS_PER_SPREAD, "{a} became {b}");
        }
        assert_eq!(window.values(), gridded);
    }

    #[test]
    fn a_sample_beyond_the_ends_widens_the_grid_instead_of_clipping() {
        let mut window = Window::default();
        for i in 0..100 {
            window.push(f64::from(i % 7), 100);
        }
        window.regrid();
        window.push(1e9, 100);
        let values = window.values();
        assert_eq!(values.len(), 100);
        let last = *values.last().unwrap();
        assert!((last - 1e9).abs() <= 1e9 / REACH, "{last}");
    }

    #[test]
    fn constant_extreme_and_non_finite_samples_stay_finite() {
        for value in [0.0, 1e-300, -7.5, 1e300, f64::MAX, -f64::MAX] {
            let mut window = Window::default();
            for _ in 0..50 {
                window.push(value, 50);
            }
            let (values, _) = window.regrid();
            assert!(values.iter().all(|v| v.is_finite()), "{value}: {values:?}");
            window.push(f64::NAN, 50);
            window.push(-value, 50);
            window.push(f64::MAX, 50);
            assert!(window.values().iter().all(|v| v.is_finite()), "{value}");
        }
    }

    #[test]
    fn the_grid_survives_a_snapshot_bit_for_bit_in_two_bytes_a_sample() {
        let mut window = Window::default();
        for i in 0..240 {
            window.push(f64::from(i) * 0.1, 240);
        }
        window.regrid();
        let bytes = postcard::to_allocvec(&window).unwrap();
        assert!(bytes.len() <= 2 * 240 + 20, "{} bytes", bytes.len());
        let back: Window = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, window);
        assert!(postcard::from_bytes::<Window>(&bytes[..bytes.len() - 1]).is_err());
        assert!(back.is_sound());
    }

    #[test]
    fn a_window_no_push_could_make_is_unsound() {
        let grid = |base: f64, step: f64| Window::Grid { base, step, steps: VecDeque::from([0, 1]) };
        assert!(grid(1.0, 0.5).is_sound());
        for bad in [grid(f64::NAN, 0.5), grid(f64::INFINITY, 0.5), grid(1.0, 0.0), grid(1.0, -0.5), grid(1.0, f64::NAN)]
        {
            assert!(!bad.is_sound(), "{bad:?}");
        }
        assert!(!Window::Raw(VecDeque::from([1.0, f32::NAN])).is_sound());
        assert!(Window::Raw(VecDeque::from([f32::INFINITY])).is_sound(), "version 4 wrote these");
    }
}
