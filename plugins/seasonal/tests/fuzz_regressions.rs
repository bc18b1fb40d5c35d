//! Regressions for the fuzz target `snapshot_seasonal` (see `fuzz/`): restore refuses what configure refuses.

use routewatch_plugin_sdk::Detector;
use routewatch_seasonal::{Config, Seasonal};

/// A snapshot in the detector's own layout (its version byte, then the configuration and an
/// empty table of series) carrying `config`.
fn snapshot_with(config: &Config) -> Vec<u8> {
    let version = Seasonal::default().snapshot()[0];
    routewatch_plugin_sdk::snapshot::encode(version, &(config, routewatch_plugin_sdk::SeriesTable::<u8>::default()))
}

/// Restore took the snapshot's configuration unchecked: a snapshot could carry one that
/// `configure` refuses, which the detector's code never expects. It must pass the same checks.
#[test]
fn a_snapshot_configuration_is_checked_like_configure() {
    let mut detector = Seasonal::default();
    assert_eq!(detector.restore(&snapshot_with(&Config::default())), Ok(()));
    let before = detector.snapshot();
    for (bad, needle) in [
        (Config { period: Some(0), ..Config::default() }, "period"),
        (Config { refit_every: Some(0), ..Config::default() }, "refit_every"),
    ] {
        let err = detector.restore(&snapshot_with(&bad)).unwrap_err();
        assert!(err.contains("snapshot") && err.contains(needle), "{err}");
    }
    assert_eq!(detector.snapshot(), before, "a refused snapshot changed the state");
}
