//! State that is exact after a crash: the LSTM restored at any row scores the rest of a
//! fleet's stream exactly as the uninterrupted one does, and how the stream is cut into
//! batches (a restarted host cuts it differently) changes nothing.

use routewatch_lstm::Lstm;
use routewatch_lstm::model::FEATURES;
use routewatch_plugin_sdk::testing::{Batches, Rng, Stream, assert_batching_is_invisible, assert_restores_anywhere};

const ROUTERS: u32 = 6;
const TICKS: i64 = 700;

/// Six routers' ten metrics over 700 ticks: daily-like cycles with noise, a router that joins
/// late (its warm-up mid-stream), gaps, spikes, a CPU runaway that becomes a level shift, and
/// a latency series whose noise triples.
fn fleet() -> Stream {
    let mut rng = Rng::new(0x5eed);
    let mut stream = Stream::new(&FEATURES);
    for t in 0..TICKS {
        let day = (t as f64 * std::f64::consts::TAU / 240.0).sin();
        for r in 0..ROUTERS {
            if r == 5 && t < 200 {
                continue; // joins late
            }
            let size = 1.0 + f64::from(r) * 0.5;
            let mut v = [
                0.3 + 0.1 * day + 0.02 * rng.normal(),
                0.5 + 0.01 * rng.normal(),
                45.0 + 2.0 * day + 0.3 * rng.normal(),
                6000.0 + 50.0 * rng.normal(),
                5.0 + day + 0.2 * rng.normal() * if t > 450 { 3.0 } else { 1.0 },
                (0.001 + 0.0005 * rng.normal()).max(0.0),
                size * 1e9 * (1.0 + 0.3 * day + 0.02 * rng.normal()),
                size * 8e8 * (1.0 + 0.3 * day + 0.02 * rng.normal()),
                (rng.uniform() * 3.0).floor(),
                8.0,
            ];
            if r == 1 && t >= 380 {
                v[0] += 0.4; // CPU runaway: a level shift
            }
            if r == 2 && [250, 260, 500].contains(&t) {
                v[6] *= 3.0; // traffic spikes
            }
            if r == 3 && (300..304).contains(&t) {
                v[9] = 5.0; // BGP sessions drop
            }
            if r == 4 && t % 53 == 7 {
                v[2] = f64::NAN; // a gap
            }
            stream.push(r, t * 60_000, &v);
        }
    }
    stream
}

/// Rows at which the stream is restored: throughout (every 37 rows, so mid-tick too), and
/// around the normaliser's switch to forgetting (tick 60), the start of scoring (120), the
/// late router's warm-up and the faults.
fn cuts(stream: &Stream) -> Vec<usize> {
    let around = [60, 61, 120, 121, 260, 320, 380, 381, 383].map(|tick| tick * ROUTERS as usize);
    let mut cuts: Vec<usize> = (1..stream.len()).step_by(37).chain(around).collect();
    cuts.sort_unstable();
    cuts
}

#[test]
fn a_fleet_restored_at_any_sample_scores_as_the_uninterrupted_one() {
    let stream = fleet();
    let whole = assert_restores_anywhere(Lstm::default, &stream, cuts(&stream), Batches::Every(5 * ROUTERS as usize));
    assert!(whole.anomalies.len() >= 3, "the stream has departures to report: {:?}", whole.anomalies);
}

#[test]
fn batches_of_any_size_score_alike() {
    let stream = fleet();
    let one_tick = ROUTERS as usize;
    // One row at a time (a model call per router), a tick, mid-tick cuts, and all at once.
    assert_batching_is_invisible(Lstm::default, &stream, &[one_tick, 1, 4, 7, 100, stream.len()].map(Batches::Every));
}
