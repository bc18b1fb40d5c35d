//! State that is exact after a crash: the changepoint detector restored at any sample scores
//! the rest of its series exactly as the uninterrupted one does (through an opened gate, a
//! BOCPD confirmation, a rejected alarm and its cooldown), and how the stream is cut into
//! batches changes nothing.

use routewatch_changepoint::Changepoint;
use routewatch_plugin_sdk::AnomalyKind;
use routewatch_plugin_sdk::testing::{Batches, Rng, Stream, assert_batching_is_invisible, assert_restores_anywhere};

const ROUTERS: u32 = 3;
const TICKS: usize = 1500;

/// Three routers' CPU (noise with level shifts, a spike, a change of noise) and interface
/// error counts (integers in bursts), 1,500 ticks; router 2 joins at tick 400.
fn fleet() -> Stream {
    let mut rng = Rng::new(7);
    let mut stream = Stream::new(&["cpu_util", "if_errors"]);
    for t in 0..TICKS {
        for r in 0..ROUTERS {
            if r == 2 && t < 400 {
                continue;
            }
            let mut cpu = 0.3 + 0.02 * rng.normal() * if t >= 900 { 2.5 } else { 1.0 };
            if r == 0 && t >= 600 {
                cpu += 0.25; // a level shift
            }
            if r == 1 && (700..720).contains(&t) {
                cpu += 0.3; // a plateau that ends
            }
            if r == 1 && t == 1000 {
                cpu += 0.5; // a lone spike: never a level shift
            }
            if r == 2 && t >= 1200 {
                cpu -= 0.2;
            }
            let burst = (t + 31 * r as usize) % 97 < 3;
            let errors = (rng.uniform() * if burst { 40.0 } else { 2.0 }).floor();
            let cpu = if r == 0 && t % 61 == 5 { f64::NAN } else { cpu };
            stream.push(r, t as i64 * 60_000, &[cpu, errors]);
        }
    }
    stream
}

/// The first row of `tick`: routers 0 and 1 from the start, router 2 from tick 400.
fn row_of(tick: usize) -> usize {
    if tick <= 400 { tick * 2 } else { 800 + (tick - 400) * 3 }
}

#[test]
fn a_series_restored_at_any_sample_scores_as_the_uninterrupted_one() {
    let stream = fleet();
    // Every 23 rows (mid-tick too), every row during the warm-up's end and the first shift
    // (the gate open, BOCPD confirming), the plateau and the lone spike (rejections, cooldowns).
    let mut cuts: Vec<usize> = (1..stream.len()).step_by(23).collect();
    for ticks in [55..65, 598..616, 698..735, 998..1015, 1198..1215] {
        cuts.extend(row_of(ticks.start)..row_of(ticks.end));
    }
    let whole = assert_restores_anywhere(Changepoint::default, &stream, cuts, Batches::Every(50));
    let shifts = whole.anomalies.iter().filter(|a| a.kind == AnomalyKind::LevelShift).count();
    assert!(shifts >= 2, "the stream has level shifts to confirm: {:?}", whole.anomalies);
}

#[test]
fn batches_of_any_size_score_alike() {
    let stream = fleet();
    assert_batching_is_invisible(Changepoint::default, &stream, &[50, 1, 2, 3, 64, stream.len()].map(Batches::Every));
}
