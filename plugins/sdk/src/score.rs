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
    1.0 / (1.0 + (-(z - threshold) * Z_SCORE_SLOPE).exp())
}
