//! State that is exact after a crash, across routers and metrics: ARIMA restored at any row of
//! a stream scores the rest bit for bit as the uninterrupted detector does (full anomalies,
//! not only their kinds: `detection.rs` has the one-series test), through warm-ups, drift
//! refits, the scheduled refit, level shifts and gaps, and batching changes nothing.

use routewatch_arima::Arima;
use routewatch_plugin_sdk::testing::{Batches, Rng, Stream, assert_batching_is_invisible, assert_restores_anywhere};

const ROUTERS: u32 = 3;
const TICKS: usize = 1700;

/// Three routers' CPU (a cycle whose noise widens at tick 700: drift refits), traffic (a level
/// shift at 1100) and interface errors (integer counts), past the scheduled refit at 1440;
/// router 2 joins at tick 300, and router 0's CPU has gaps.
fn fleet() -> Stream {
    let mut rng = Rng::new(13);
    let mut stream = Stream::new(&["cpu_util", "rx_bps", "if_errors"]);
    for t in 0..TICKS {
        let cycle = (t as f64 * std::f64::consts::TAU / 60.0).sin();
        for r in 0..ROUTERS {
            if r == 2 && t < 300 {
                continue;
            }
            let wide = if t >= 700 { 1.5 * rng.normal() } else { 0.0 };
            let mut cpu = 10.0 + 3.0 * cycle + 0.2 * rng.normal() + wide;
            if r == 0 && t % 89 == 11 {
                cpu = f64::NAN;
            }
            if r == 1 && t == 950 {
                cpu -= 12.0;
            }
            let mut rx = 1e9 * (1.0 + 0.2 * cycle) + 1e7 * rng.normal();
            if r != 1 && t >= 1100 {
                rx += 3e8;
            }
            let errors = (rng.uniform() * 3.0).floor();
            stream.push(r, t as i64 * 60_000, &[cpu, rx, errors]);
        }
    }
    stream
}

/// The first row of `tick`: routers 0 and 1 from the start, router 2 from tick 300.
fn row_of(tick: usize) -> usize {
    if tick <= 300 { tick * 2 } else { 600 + (tick - 300) * 3 }
}

#[test]
fn a_fleet_restored_at_any_row_scores_as_the_uninterrupted_one() {
    let stream = fleet();
    let mut cuts: Vec<usize> = (1..stream.len()).step_by(41).collect();
    for ticks in [118..124, 298..304, 418..424, 700..712, 1100..1106, 1438..1444] {
        cuts.extend(row_of(ticks.start)..row_of(ticks.end));
    }
    let whole = assert_restores_anywhere(Arima::default, &stream, cuts, Batches::Every(100));
    assert!(whole.anomalies.len() >= 3, "the stream has departures to report: {:?}", whole.anomalies);
}

#[test]
fn batches_of_any_size_score_alike() {
    let stream = fleet();
    assert_batching_is_invisible(Arima::default, &stream, &[100, 1, 7, 1000, stream.len()].map(Batches::Every));
}
