//! Turning a robust z-score into a score in [0, 1].

/// How sharply the score rises around the threshold. At 1.5, with the default threshold of 6,
/// a point at z = 2 scores about 0.0025 and one at z = 12 about 0.9999.
pub const Z_SCORE_SLOPE: f64 = 1.5;

/// Maps a robust z-score to [0, 1], with exactly 0.5 at `threshold`: a logistic curve, so
/// scores are comparable across detectors that share the convention and plot smoothly.
///
/// ```
/// use routewatch_plugin_sdk::score_from_z;
/// assert_eq!(score_from_z(5.0, 5.0), 0.5);
/// assert!(score_from_z(0.0, 5.0) < 0.001);
/// assert!(score_from_z(20.0, 5.0) > 0.999);
/// ```
pub fn score_from_z(z: f64, threshold: f64) -> f64 {
    if z.is_nan() {
        return 0.0;
    }
    1.0 / (1.0 + exp(-(z - threshold) * Z_SCORE_SLOPE))
}

/// `e^x`, natively from libm (glibc picks a fused multiply-add version at run time).
#[cfg(not(target_arch = "wasm32"))]
#[inline(always)]
fn exp(x: f64) -> f64 {
    x.exp()
}

/// In Wasm, `f64::exp` is a call into wasi-libc, and the call (an epoch check at its entry, the
/// float registers the caller spills around it) costs more than the arithmetic; detectors
/// score every point, so there the series below is inlined instead. Both agree to 2 ulp.
#[cfg(target_arch = "wasm32")]
use inline_exp as exp;

/// `e^x` to about one ulp, saturating to 0 below -708 and to infinity above 709 (where the
/// logistic is 1 or 0 anyway).
#[cfg(any(target_arch = "wasm32", test))]
#[inline(always)]
fn inline_exp(x: f64) -> f64 {
    // Adding 1.5 * 2^52 rounds a value of magnitude below 2^51 to an integer, exactly.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    // ln 2 split so that `k * LN2_HI` is exact for |k| < 2^11 (Cody and Waite).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    if x.is_nan() {
        return x;
    }
    if x < -708.0 {
        return 0.0;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    // x = k ln 2 + r with |r| <= ln 2 / 2, so e^x = 2^k e^r.
    let shifted = x * std::f64::consts::LOG2_E + SHIFT;
    let k = shifted.to_bits().wrapping_sub(SHIFT.to_bits()) as i64;
    let kd = shifted - SHIFT;
    let r = (x - kd * LN2_HI) - kd * LN2_LO;
    // Taylor series to r^13 (the next term is below 2e-16), evaluated by Estrin's scheme.
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let q0 = (1.0 + r) + r2 * (C[2] + r * C[3]);
    let q1 = (C[4] + r * C[5]) + r2 * (C[6] + r * C[7]);
    let q2 = (C[8] + r * C[9]) + r2 * (C[10] + r * C[11]);
    let q3 = C[12] + r * C[13];
    let er = (q0 + r4 * q1) + r8 * (q2 + r4 * q3);
    er * f64::from_bits(((k + 1023) as u64) << 52)
}

/// 1 / i!
#[cfg(any(target_arch = "wasm32", test))]
const C: [f64; 14] = [
    1.0,
    1.0,
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40320.0,
    1.0 / 362_880.0,
    1.0 / 3_628_800.0,
    1.0 / 39_916_800.0,
    1.0 / 479_001_600.0,
    1.0 / 6_227_020_800.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_exp_agrees_with_libm() {
        let mut worst = 0.0f64;
        for i in -700_000..=700_000 {
            let x = i as f64 * 0.001_011;
            let (ours, libm) = (inline_exp(x), x.exp());
            worst = worst.max(((ours - libm) / libm).abs());
        }
        assert!(worst < 1e-15, "worst relative error {worst:e}");
        assert_eq!(inline_exp(0.0), 1.0);
        assert_eq!(inline_exp(-1000.0), 0.0);
        assert_eq!(inline_exp(1000.0), f64::INFINITY);
        assert!(inline_exp(f64::NAN).is_nan());
    }
}
