//! Regressions for the fuzz target `snapshot_changepoint` (see `fuzz/`): restore refuses what configure refuses.

use routewatch_changepoint::{Changepoint, Config};
use routewatch_plugin_sdk::Detector;

/// A snapshot in the detector's own layout (its version byte, then the configuration and an
/// empty table of series) carrying `config`.
fn snapshot_with(config: &Config) -> Vec<u8> {
    let version = Changepoint::default().snapshot()[0];
    routewatch_plugin_sdk::snapshot::encode(version, &(config, routewatch_plugin_sdk::SeriesTable::<u8>::default()))
}

/// Restore took the snapshot's configuration unchecked: a snapshot could carry one that
/// `configure` refuses, which the detector's code never expects. It must pass the same checks.
#[test]
fn a_snapshot_configuration_is_checked_like_configure() {
    let mut detector = Changepoint::default();
    assert_eq!(detector.restore(&snapshot_with(&Config::default())), Ok(()));
    let before = detector.snapshot();
    for (bad, needle) in [
        (Config { recent: 100, ..Config::default() }, "recent"),
        (Config { hazard: -1.0, ..Config::default() }, "hazard"),
    ] {
        let err = detector.restore(&snapshot_with(&bad)).unwrap_err();
        assert!(err.contains("snapshot") && err.contains(needle), "{err}");
    }
    assert_eq!(detector.snapshot(), before, "a refused snapshot changed the state");
}
