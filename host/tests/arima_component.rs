//! The ARIMA component, loaded by the host: what it must find, what it must not, and that its
//! state survives a move to another instance.

mod common;

use common::{Noise, arima, runtime, seasonal, series_batch};
use routewatch_host::runtime::{AnomalyKind, Instance};

/// Runs `values` through `instance` in batches of 256 and returns (index, kind) per anomaly.
fn anomalies(instance: &mut Instance, values: &[f64]) -> Vec<(usize, AnomalyKind)> {
    let mut found = Vec::new();
    for (chunk_index, chunk) in values.chunks(256).enumerate() {
        let start = chunk_index * 256;
        let out = instance.process(&series_batch(chunk, start)).expect("batch is processed");
        assert_eq!(out.scores.len(), chunk.len(), "one score per point");
        found.extend(out.anomalies.iter().map(|a| (start + a.row as usize, a.kind)));
    }
    found
}

#[test]
fn flags_a_spike_within_two_points_of_onset() {
    let runtime = runtime();
    let mut values = seasonal(3000, 1);
    values[2000] += 3.0;
    let found = anomalies(&mut arima(&runtime).instantiate().unwrap(), &values);
    assert!(found.iter().any(|&(i, kind)| (2000..=2002).contains(&i) && kind == AnomalyKind::Spike), "{found:?}");
    assert!(found.iter().all(|&(i, _)| (2000..=2002).contains(&i)), "no other alarms: {found:?}");
}

#[test]
fn flags_a_level_shift_within_two_points_of_onset() {
    let runtime = runtime();
    let mut values = seasonal(3000, 2);
    values[2000..].iter_mut().for_each(|v| *v += 2.0);
    let found = anomalies(&mut arima(&runtime).instantiate().unwrap(), &values);
    assert!(found.iter().any(|&(i, _)| (2000..=2002).contains(&i)), "onset flagged: {found:?}");
    assert!(
        found.iter().any(|&(i, kind)| i <= 2002 && kind == AnomalyKind::LevelShift),
        "named a level shift: {found:?}"
    );
    assert!(found.iter().all(|&(i, _)| (2000..=2002).contains(&i)), "follows the new level: {found:?}");
}

#[test]
fn raises_nothing_on_ten_thousand_points_of_stationary_noise() {
    let runtime = runtime();
    let mut noise = Noise::new(99);
    let values: Vec<f64> = (0..10_000).map(|_| 40.0 + 4.0 * noise.gaussian()).collect();
    let found = anomalies(&mut arima(&runtime).instantiate().unwrap(), &values);
    assert_eq!(found, vec![], "default threshold, stationary noise");
}

#[test]
fn state_moves_to_a_new_instance_without_a_warmup_gap() {
    let runtime = runtime();
    let plugin = arima(&runtime);
    let values = seasonal(1500, 3);
    let mut first = plugin.instantiate().unwrap();
    anomalies(&mut first, &values[..1000]);
    let snapshot = first.snapshot().unwrap();

    let mut second = plugin.instantiate().unwrap();
    second.restore(&snapshot).unwrap();
    let tail = series_batch(&values[1000..1256], 1000);
    let a = first.process(&tail).unwrap();
    let b = second.process(&tail).unwrap();
    assert_eq!(a.scores, b.scores, "the restored instance scores exactly as the original");
    assert!(b.scores.iter().any(|s| *s > 0.0), "scored at once: no warm-up after restore");
}

#[test]
fn configuration_is_validated_by_the_plugin() {
    let runtime = runtime();
    let mut instance = arima(&runtime).instantiate().unwrap();
    let err = instance.configure(r#"{"threshold": -3}"#).unwrap_err();
    assert!(err.to_string().contains("threshold"), "{err}");
    assert!(err.instance_survives());
    instance.configure(r#"{"threshold": 4.5}"#).expect("a good configuration after a bad one");
    let info = instance.info().unwrap();
    assert_eq!(info.name, "arima");
    assert!(info.config_schema.contains("threshold"));
}
