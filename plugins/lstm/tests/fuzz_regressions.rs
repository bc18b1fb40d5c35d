//! Regressions for the fuzz target `snapshot_lstm` (see `fuzz/`): restore refuses what configure refuses.

use routewatch_lstm::{Config, Lstm};
use routewatch_plugin_sdk::Detector;

/// A snapshot in the detector's own layout (its version byte, then the configuration and no
/// routers) carrying `config`.
fn snapshot_with(config: &Config) -> Vec<u8> {
    let version = Lstm::default().snapshot()[0];
    routewatch_plugin_sdk::snapshot::encode(version, &(config, Vec::<u8>::new()))
}

/// Restore took the snapshot's configuration unchecked: a snapshot could carry one that
/// `configure` refuses, which the detector's code never expects. It must pass the same checks.
#[test]
fn a_snapshot_configuration_is_checked_like_configure() {
    let mut detector = Lstm::default();
    assert_eq!(detector.restore(&snapshot_with(&Config::default())), Ok(()));
    let before = detector.snapshot();
    for (bad, needle) in [
        (Config { warmup: 0, ..Config::default() }, "warmup"),
        (Config { threshold: f64::NAN, ..Config::default() }, "threshold"),
    ] {
        let err = detector.restore(&snapshot_with(&bad)).unwrap_err();
        assert!(err.contains("snapshot") && err.contains(needle), "{err}");
    }
    assert_eq!(detector.snapshot(), before, "a refused snapshot changed the state");
}
