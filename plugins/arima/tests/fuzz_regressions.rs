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

/// Every byte of a real snapshot overwritten, in turn, with a few values: restore refuses it
/// and keeps its state, or gives a detector that runs on without panicking and scores in
/// [0, 1]. (Which windows are refused is `window.rs`'s unit tests' business.)
#[test]
fn any_corrupted_byte_of_a_snapshot_is_refused_or_harmless() {
    use routewatch_plugin_sdk::{Batch, Output};
    let feed = |detector: &mut Arima, from: usize, n: usize| {
        let values: Vec<f64> = (from..from + n).map(|t| 10.0 + (t as f64 * 0.3).sin()).collect();
        let ts: Vec<i64> = (from..from + n).map(|t| t as i64 * 60_000).collect();
        let routers = vec![1; n];
        let mut out = Output::default();
        detector.process(&Batch::new(&routers, &ts, vec![("cpu_util", &values[..])]), &mut out).map(|_| out)
    };
    let mut original = Arima::default();
    feed(&mut original, 0, 300).unwrap();
    let good = original.snapshot();
    let mut refused = 0;
    for at in 1..good.len() {
        for value in [0x00, 0xFF, 0x7F, good[at] ^ 0x01] {
            let mut bad = good.clone();
            bad[at] = value;
            let mut detector = Arima::default();
            let before = detector.snapshot();
            match detector.restore(&bad) {
                Err(_) => {
                    refused += 1;
                    assert_eq!(detector.snapshot(), before, "a refused snapshot changed the state");
                }
                Ok(()) => {
                    if let Ok(out) = feed(&mut detector, 300, 20) {
                        assert!(
                            out.scores.iter().all(|s| (0.0..=1.0).contains(s)),
                            "byte {at} = {value}: {:?}",
                            out.scores
                        );
                    }
                }
            }
        }
    }
    assert!(refused > 0);
}
