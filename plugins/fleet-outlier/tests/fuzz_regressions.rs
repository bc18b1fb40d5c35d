//! Regressions for the fuzz target `snapshot_fleet_outlier` (see `fuzz/`): restore refuses what configure refuses.

use routewatch_fleet_outlier::{Baseline, Config, FleetOutlier};
use routewatch_plugin_sdk::Detector;

/// A snapshot in the detector's own layout (its version byte, then configuration, metrics and
/// baselines in postcard) carrying `config`.
fn snapshot_with(config: &Config) -> Vec<u8> {
    let body = (config, Vec::<String>::new(), Vec::<Vec<Baseline>>::new());
    // The detector's own layout version, so the test follows its bumps.
    let mut bytes = vec![FleetOutlier::default().snapshot()[0]];
    bytes.extend(postcard::to_allocvec(&body).unwrap());
    bytes
}

/// Restore took the snapshot's configuration unchecked, and its peer groups size a table by
/// router id: a few bytes naming router 4,294,967,295 asked for 16 GiB. The configuration
/// must pass the checks `configure` makes.
#[test]
fn a_snapshot_configuration_is_checked_like_configure() {
    let mut detector = FleetOutlier::default();
    assert_eq!(detector.restore(&snapshot_with(&Config::default())), Ok(()));
    let before = detector.snapshot();
    // Just over the id cap (a 64 MiB table without the check, not 16 GiB: safe to run).
    let bad = Config { peer_groups: vec![vec![1 << 24]], ..Config::default() };
    let err = detector.restore(&snapshot_with(&bad)).unwrap_err();
    assert!(err.contains("corrupt fleet-outlier snapshot") && err.contains("peer_groups"), "{err}");
    let bad = Config { threshold: f64::NAN, ..Config::default() };
    let err = detector.restore(&snapshot_with(&bad)).unwrap_err();
    assert!(err.contains("threshold"), "{err}");
    assert_eq!(detector.snapshot(), before, "a refused snapshot changed the state");
}
