//! State that is exact after a crash: the fleet-outlier detector, whose state is every
//! router's baseline across the fleet, restored at any timestamp scores the rest of the
//! stream exactly as the uninterrupted one does (through warm-ups, routers that leave and
//! join, an outlier accepted as the new normal), and batches cut at any timestamps change
//! nothing. A batch that ends inside a timestamp does change the scores (see the README).

use routewatch_fleet_outlier::FleetOutlier;
use routewatch_plugin_sdk::testing::{Batches, Rng, Stream, assert_batching_is_invisible, assert_restores_anywhere};
use routewatch_plugin_sdk::{AnomalyKind, Detector};

const ROUTERS: u32 = 30;
const TICKS: usize = 520;

/// Thirty routers of different sizes, three metrics, 520 ticks: a fleet-wide swing, a router
/// that overheats for longer than `accept_after` (then its new normal), a CPU spike, a router
/// away for 30 ticks, one that joins at tick 250, bursts of interface errors, and gaps.
/// Returns the stream and the first row of every tick.
fn fleet(seed: u64) -> (Stream, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let mut stream = Stream::new(&["cpu_util", "temp_c", "if_errors"]);
    let mut ticks = Vec::with_capacity(TICKS);
    for t in 0..TICKS {
        ticks.push(stream.len());
        let swing = if (300..320).contains(&t) { 0.2 } else { 0.0 };
        for r in 0..ROUTERS {
            if (r == 12 && (100..130).contains(&t)) || (r == 29 && t < 250) {
                continue;
            }
            let size = 1.0 + f64::from(r % 5);
            let mut cpu = 0.2 + 0.05 * size + swing + 0.02 * rng.normal();
            let mut temp = 40.0 + size + 0.5 * rng.normal();
            if r == 4 && t >= 150 {
                temp += 15.0; // overheats, and stays so
            }
            if r == 8 && (200..204).contains(&t) {
                cpu += 0.5;
            }
            if r == 17 && t % 43 == 3 {
                cpu = f64::NAN;
            }
            let errors = (rng.uniform() * if (t + r as usize) % 89 < 2 { 30.0 } else { 2.0 }).floor();
            stream.push(r, t as i64 * 60_000, &[cpu, temp, errors]);
        }
    }
    (stream, ticks)
}

fn configured(config: &'static str) -> impl Fn() -> FleetOutlier {
    move || {
        let mut detector = FleetOutlier::default();
        detector.configure(config).unwrap();
        detector
    }
}

const CONFIGS: [&str; 3] = [
    "{}",
    r#"{"method": "both"}"#,
    r#"{"method": "dbscan", "min_peers": 10, "peer_groups": [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]]}"#,
];

#[test]
fn a_fleet_restored_at_any_timestamp_scores_as_the_uninterrupted_one() {
    let (stream, ticks) = fleet(21);
    // Batches of five ticks: the detector is exact where batches end at a timestamp, and
    // only there (a timestamp split across batches is judged in parts; see the crate's README).
    let every_fifth: Vec<usize> = ticks.iter().copied().step_by(5).collect();
    for config in CONFIGS {
        // Every 7 ticks, and every tick around the warm-up's end, the overheating's onset,
        // the absent router's return, the late router's warm-up and the acceptance (tick 270).
        let mut cuts: Vec<usize> = ticks.iter().copied().step_by(7).collect();
        for around in [58..63, 148..153, 128..133, 308..313, 268..273] {
            cuts.extend(around.map(|t| ticks[t]));
        }
        let whole = assert_restores_anywhere(configured(config), &stream, cuts, Batches::At(&every_fifth));
        let outliers = whole.anomalies.iter().filter(|a| a.kind == AnomalyKind::Outlier).count();
        assert!(outliers >= 1, "{config}: the stream has outliers to report: {:?}", whole.anomalies);
    }
}

#[test]
fn batches_cut_at_any_timestamp_score_alike() {
    let (stream, ticks) = fleet(21);
    let every_third: Vec<usize> = ticks.iter().copied().step_by(3).collect();
    let uneven: Vec<usize> = ticks.iter().copied().filter(|&row| row % 5 < 2).collect();
    for config in CONFIGS {
        let batchings =
            [Batches::Every(stream.len()), Batches::At(&ticks), Batches::At(&every_third), Batches::At(&uneven)];
        assert_batching_is_invisible(configured(config), &stream, &batchings);
    }
}
