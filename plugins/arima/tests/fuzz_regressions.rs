//! Regressions for the fuzz target `snapshot_arima` (see `fuzz/`): restore refuses what configure refuses.

use routewatch_arima::{Arima, Config};
use routewatch_plugin_sdk::Detector;

/// A snapshot in the detector's own layout (its version byte, then configuration, metrics and series
/// in postcard) carrying `config`.
fn snapshot_with(config: &Config) -> Vec<u8> {
    // The detector's own layout version, so the test follows its bumps.
    let mut bytes = vec![Arima::default().snapshot()[0]];
    bytes.extend(postcard::to_allocvec(&(config, Vec::<String>::new(), Vec::<u8>::new())).unwrap());
    bytes
}

/// Restore took the snapshot's configuration unchecked: a snapshot could carry one that
/// `configure` refuses, which the detector's code never expects. It must pass the same checks.
#[test]
fn a_snapshot_configuration_is_checked_like_configure() {
    let mut detector = Arima::default();
    assert_eq!(detector.restore(&snapshot_with(&Config::default())), Ok(()));
    let before = detector.snapshot();
    for (bad, needle) in [
        (Config { window: 10, ..Config::default() }, "window"),
        (Config { threshold: f64::NAN, ..Config::default() }, "threshold"),
    ] {
        let err = detector.restore(&snapshot_with(&bad)).unwrap_err();
        assert!(err.contains("snapshot") && err.contains(needle), "{err}");
    }
    assert_eq!(detector.snapshot(), before, "a refused snapshot changed the state");
}
