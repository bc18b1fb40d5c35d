//! The ARIMA detector run natively on synthetic series: what it must find and what it must not.
//! (The host's tests run the same checks through the Wasm component.)

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use routewatch_arima::Arima;
use routewatch_plugin_sdk::{AnomalyKind, Batch, Detector, Output};

/// A seasonal series: a period-60 cycle plus Gaussian noise of sd 0.2.
fn seasonal(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 0.2).unwrap();
    (0..n).map(|t| 10.0 + 3.0 * (t as f64 * std::f64::consts::TAU / 60.0).sin() + noise.sample(&mut rng)).collect()
}

/// Feeds one series in batches of 100 and returns (scores, anomalies as (index, kind)).
fn run(detector: &mut Arima, values: &[f64]) -> (Vec<f32>, Vec<(usize, AnomalyKind)>) {
    run_from(detector, values, 0)
}

/// As [`run`], for values that continue a series at sample `first`; indices are relative.
fn run_from(detector: &mut Arima, values: &[f64], first: usize) -> (Vec<f32>, Vec<(usize, AnomalyKind)>) {
    let mut scores = Vec::new();
    let mut anomalies = Vec::new();
    for (chunk_index, chunk) in values.chunks(100).enumerate() {
        let start = chunk_index * 100;
        let routers = vec![1; chunk.len()];
        let ts: Vec<i64> = (first + start..first + start + chunk.len()).map(|t| t as i64 * 60_000).collect();
        let batch = Batch::new(&routers, &ts, vec![("cpu_util", chunk)]);
        let mut out = Output::default();
        detector.process(&batch, &mut out).unwrap();
        assert_eq!(out.scores.len(), chunk.len());
        scores.extend(out.scores);
        anomalies.extend(out.anomalies.iter().map(|a| (start + a.row as usize, a.kind)));
    }
    (scores, anomalies)
}

#[test]
fn flags_a_spike_at_onset_and_nothing_after() {
    let mut values = seasonal(1000, 1);
    values[500] += 3.0;
    let (scores, anomalies) = run(&mut Arima::default(), &values);
    assert_eq!(anomalies, vec![(500, AnomalyKind::Spike)], "scores around: {:?}", &scores[495..510]);
    // Calibrated: 0.5 is the decision (README, "What a score means").
    assert!(scores[500] >= 0.5, "{}", scores[500]);
}

#[test]
fn flags_a_level_shift_within_two_points_and_follows_the_new_level() {
    let mut values = seasonal(1200, 2);
    values[700..].iter_mut().for_each(|v| *v += 2.0);
    let (_, anomalies) = run(&mut Arima::default(), &values);
    assert_eq!(anomalies.first(), Some(&(700, AnomalyKind::Spike)), "{anomalies:?}");
    assert!(
        anomalies.iter().any(|&(i, k)| k == AnomalyKind::LevelShift && (701..=702).contains(&i)),
        "a level shift within two points: {anomalies:?}"
    );
    assert!(anomalies.iter().all(|(i, _)| (700..=702).contains(i)), "settles after the shift: {anomalies:?}");
}

#[test]
fn flags_a_dip_as_a_dip() {
    let mut values = seasonal(800, 3);
    values[400] -= 3.0;
    let (_, anomalies) = run(&mut Arima::default(), &values);
    assert_eq!(anomalies, vec![(400, AnomalyKind::Dip)]);
}

/// Gaussian noise alarms at the calibrator's design rate: `DECISION_P` (1e-5) for each of
/// about five kinds of evidence (a single error, runs of 2 to 4, three of four), about 0.5 an
/// alarm in 10,000 points. Asserted over four seeds, since one seed's count is luck: this
/// test once asserted none on seed 42 alone, which held only for the fit made at exactly the
/// 120th sample (seed 2 gave one even then).
#[test]
fn stays_quiet_on_ten_thousand_points_of_stationary_noise() {
    let noise = Normal::new(50.0, 5.0).unwrap();
    let mut alarms = Vec::new();
    for seed in [42, 1, 2, 3] {
        let mut rng = StdRng::seed_from_u64(seed);
        let values: Vec<f64> = (0..10_000).map(|_| noise.sample(&mut rng)).collect();
        let (scores, anomalies) = run(&mut Arima::default(), &values);
        let high = scores.iter().filter(|&&s| s >= 0.5).count();
        assert!(anomalies.len() <= 2 && high <= 2, "seed {seed}: {anomalies:?}, {high} scores of 0.5 or more");
        alarms.extend(anomalies);
    }
    assert!(alarms.len() <= 4, "{} alarms in 40,000 points: {alarms:?}", alarms.len());
}

#[test]
fn a_restored_snapshot_continues_exactly() {
    let values = seasonal(900, 4);
    let mut original = Arima::default();
    run(&mut original, &values[..600]);
    let mut copy = Arima::default();
    copy.restore(&original.snapshot()).unwrap();
    assert_eq!(copy.snapshot(), original.snapshot());
    assert_eq!(run_from(&mut copy, &values[600..], 600), run_from(&mut original, &values[600..], 600));
}

/// Wherever a host restores a series (a crash can come at any sample), the restored detector
/// scores the rest of the series as the uninterrupted one does: through spikes, a level
/// shift and a change of noise that forces a refit soon after the restore.
#[test]
fn a_series_restored_at_any_sample_scores_as_the_uninterrupted_one() {
    let mut values = seasonal(1400, 10);
    let mut rng = StdRng::seed_from_u64(11);
    let wide = Normal::new(0.0, 1.5).unwrap();
    for (t, v) in values.iter_mut().enumerate() {
        if t >= 700 {
            *v += wide.sample(&mut rng); // the series changes character: a drift refit
        }
        if t >= 1100 {
            *v += 8.0; // a level shift
        }
    }
    values[400] += 4.0;
    values[950] -= 12.0;
    let whole = run(&mut Arima::default(), &values);
    for cut in (130..1400).step_by(53) {
        let mut before = Arima::default();
        let (mut scores, mut anomalies) = run(&mut before, &values[..cut]);
        let mut restored = Arima::default();
        restored.restore(&before.snapshot()).unwrap();
        let (rest_scores, rest_anomalies) = run_from(&mut restored, &values[cut..], cut);
        scores.extend(rest_scores);
        anomalies.extend(rest_anomalies.into_iter().map(|(i, kind)| (i + cut, kind)));
        assert_eq!(anomalies, whole.1, "restored at sample {cut}");
        assert_eq!(scores, whole.0, "restored at sample {cut}");
    }
}

#[test]
fn refuses_corrupt_snapshots_and_keeps_its_state() {
    let mut detector = Arima::default();
    run(&mut detector, &seasonal(300, 5));
    let before = detector.snapshot();
    for bad in [&[][..], &[9, 1, 2][..], &[1, 255, 255, 255][..]] {
        assert!(detector.restore(bad).is_err());
        assert_eq!(detector.snapshot(), before);
    }
}

#[test]
fn scores_missing_and_replayed_samples_zero_without_learning() {
    let values = seasonal(400, 6);
    let mut detector = Arima::default();
    run(&mut detector, &values);
    let before = detector.snapshot();
    let batch = Batch::new(&[1, 1], &[0, 400 * 60_000], vec![("cpu_util", &[99.0, f64::NAN][..])]);
    let mut out = Output::default();
    detector.process(&batch, &mut out).unwrap();
    assert_eq!(out.scores, vec![0.0, 0.0]);
    assert!(out.anomalies.is_empty());
    assert_eq!(detector.snapshot(), before);
}

#[test]
fn series_are_independent_per_router_and_metric() {
    let values = seasonal(400, 7);
    let mut spiked = values.clone();
    spiked[300] += 5.0;
    let mut detector = Arima::default();
    for (start, (a, b)) in values.chunks(100).zip(spiked.chunks(100)).enumerate() {
        let n = a.len();
        let routers: Vec<u32> = (0..n).map(|_| 1).chain((0..n).map(|_| 2)).collect();
        let ts: Vec<i64> = (0..2 * n).map(|i| ((start * 100 + i % n) * 60_000) as i64).collect();
        let ab: Vec<f64> = a.iter().chain(b).copied().collect();
        let batch = Batch::new(&routers, &ts, vec![("cpu_util", &ab[..]), ("temp_c", &ab[..])]);
        let mut out = Output::default();
        detector.process(&batch, &mut out).unwrap();
        let flagged: Vec<(u32, u32)> = out.anomalies.iter().map(|a| (routers[a.row as usize], a.column)).collect();
        let expected = if start == 3 { vec![(2, 0), (2, 1)] } else { vec![] };
        assert_eq!(flagged, expected, "batch {start}");
    }
}

#[test]
fn configuration_is_validated_and_applied() {
    let mut detector = Arima::default();
    assert!(detector.configure(r#"{"threshold": 0}"#).is_err());
    detector.configure(r#"{"metrics": ["temp_c"]}"#).unwrap();
    let mut values = seasonal(400, 8);
    values[300] += 5.0;
    let (scores, anomalies) = run(&mut detector, &values);
    assert!(anomalies.is_empty(), "cpu_util is not watched");
    assert!(scores.iter().all(|s| *s == 0.0));
}

#[test]
fn snapshots_stay_small_and_a_restored_series_refits_as_the_uninterrupted_one() {
    let values = seasonal(3000, 9);
    let mut original = Arima::default();
    run(&mut original, &values[..1000]);
    let snapshot = original.snapshot();
    // The goal is 1 KB a series (BENCHMARKS.md): the window is 480 of these bytes (240 samples
    // of two bytes on the series' grid), the calibrator's episode and pair rates about 130.
    assert!(snapshot.len() <= 1024, "one series' snapshot is {} bytes", snapshot.len());

    let mut restored = Arima::default();
    restored.restore(&snapshot).unwrap();
    let mut spiked = values[1000..].to_vec();
    spiked[1500] += 3.0;
    let (scores, anomalies) = run_from(&mut restored, &spiked, 1000);
    assert!(scores[0] > 0.0, "scored at once after the restore");
    assert!(anomalies.contains(&(1500, AnomalyKind::Spike)), "still detecting after its refits: {anomalies:?}");
    // The restored detector is the original one: the uninterrupted detector, fed the same
    // continuation, judges every point the same. (Seed 9's noise has a 3.7 sd dip near 2809
    // that both of them follow with a level shift; that is the model, not the restore.)
    let (original_scores, original_anomalies) = run_from(&mut original, &spiked, 1000);
    assert_eq!(anomalies, original_anomalies);
    assert_eq!(scores, original_scores);
}

#[test]
fn a_counter_that_sits_at_zero_alarms_on_a_burst_not_on_a_blip() {
    let mut detector = Arima::default();
    let mut errors = vec![0.0; 600];
    errors[300] = 1.0; // one stray error: routine
    errors[450] = 2.0;
    errors[500] = 40.0; // a burst: a failing link
    let routers = vec![1; errors.len()];
    let ts: Vec<i64> = (0..errors.len() as i64).map(|t| t * 60_000).collect();
    let batch = Batch::new(&routers, &ts, vec![("if_errors", &errors[..])]);
    let mut out = Output::default();
    detector.process(&batch, &mut out).unwrap();
    let flagged: Vec<u32> = out.anomalies.iter().map(|a| a.row).collect();
    assert_eq!(flagged, vec![500]);
}

#[test]
fn one_spike_in_a_noiseless_cycle_is_one_anomaly() {
    // As `routewatch replay` sees it in host/tests/replay_cli.rs: a smooth cycle, one spike.
    let mut values: Vec<f64> = (0..400).map(|i| 0.4 + 0.05 * (i as f64 / 20.0).sin()).collect();
    values[300] += 0.4;
    let (_, anomalies) = run(&mut Arima::default(), &values);
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0], (300, AnomalyKind::Spike));
}

/// The layout-4 fixture's series: a period-60 cycle plus uniform noise from a fixed LCG (no
/// `rand`, so the values cannot change with a crate upgrade).
fn fixture_series(n: usize) -> Vec<f64> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|t| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let noise = ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.6;
            10.0 + 3.0 * (t as f64 * std::f64::consts::TAU / 60.0).sin() + noise
        })
        .collect()
}

#[test]
fn a_snapshot_of_layout_4_restores_and_goes_on_detecting() {
    // Written by the build before the window went on a grid (layout 4, the window in single
    // precision): router 1 after 1000 samples of `fixture_series`, router 2 after 50 (warm-up).
    let old = include_bytes!("data/snapshot-v4.bin");
    assert_eq!(old[0], 4);
    let mut detector = Arima::default();
    detector.restore(old).unwrap();
    let mut values = fixture_series(2000)[1000..].to_vec();
    values[500] += 3.0;
    let (scores, anomalies) = run_from(&mut detector, &values, 1000);
    assert!(scores[0] > 0.0, "scored at once after the restore");
    assert_eq!(anomalies, vec![(500, AnomalyKind::Spike)]);
    // Its next snapshot is in the new layout, on a grid since its refit, and under 1 KB a series.
    let new = detector.snapshot();
    assert_ne!(new[0], 4);
    let mut again = Arima::default();
    again.restore(&new).unwrap();
    assert_eq!(again.snapshot(), new);
}

#[test]
fn refuses_a_snapshot_of_an_unknown_layout() {
    let mut detector = Arima::default();
    let mut bytes = detector.snapshot();
    bytes[0] = 3;
    let err = detector.restore(&bytes).unwrap_err();
    assert!(err.contains("version 3 is not supported"), "{err}");
}
