//! State that is exact after a crash: the seasonal detector restored at any sample scores the
//! rest of its series exactly as the uninterrupted one does (before its first fit, right
//! around a fit and every refit, in linear and logarithmic scale), and how the stream is cut
//! into batches changes nothing.

use routewatch_plugin_sdk::Detector;
use routewatch_plugin_sdk::testing::{Batches, Rng, Stream, assert_batching_is_invisible, assert_restores_anywhere};
use routewatch_seasonal::Seasonal;

/// A short cycle, so that a test crosses the first fit and a dozen refits; refits fall at
/// other phases than fits (`refit_every` is not a multiple of `period`).
const SHORT: &str = r#"{"period": 60, "window": 150, "refit_every": 45}"#;
const ROUTERS: u32 = 2;

fn seasonal(config: &str) -> impl Fn() -> Seasonal {
    let config = config.to_owned();
    move || {
        let mut detector = Seasonal::default();
        detector.configure(&config).unwrap();
        detector
    }
}

/// Two routers' CPU (linear), traffic (logarithms by name), a queue depth that swings by a
/// factor (logarithms by choice) and fan speed, with a cycle of `period` samples, spikes, a
/// level shift, a change of noise and gaps.
fn fleet(period: usize, ticks: usize, seed: u64) -> Stream {
    let mut rng = Rng::new(seed);
    let mut stream = Stream::new(&["cpu_util", "rx_bps", "queue_depth", "fan_rpm"]);
    for t in 0..ticks {
        let day = (t as f64 * std::f64::consts::TAU / period as f64).sin();
        for r in 0..ROUTERS {
            let loud = if t * 2 >= ticks { 2.0 } else { 1.0 };
            let mut v = [
                0.4 + 0.15 * day + 0.01 * loud * rng.normal(),
                1e9 * (1.0 + 0.5 * day) * (1.0 + 0.02 * rng.normal()),
                (30.0 * (1.2 + day) * (1.0 + 0.05 * rng.normal())).max(1.0),
                6000.0 + 30.0 * rng.normal(),
            ];
            if r == 0 && t * 5 == ticks * 3 {
                v[0] += 0.3; // a spike
            }
            if r == 1 && t * 10 >= ticks * 7 {
                v[3] -= 2000.0; // a fan fails: a level shift
            }
            if r == 1 && t * 4 == ticks * 3 {
                v[1] *= 0.05; // traffic collapses for a sample
            }
            if r == 0 && t % 71 == 9 {
                v[2] = f64::NAN;
            }
            stream.push(r, t as i64 * 60_000, &v);
        }
    }
    stream
}

#[test]
fn a_series_restored_at_any_sample_scores_as_the_uninterrupted_one() {
    let stream = fleet(60, 900, 3);
    let rows = ROUTERS as usize;
    // Every 17 rows (mid-tick too), and every row around the first fit (tick 150) and the
    // first refits (every 45 ticks after it).
    let mut cuts: Vec<usize> = (1..stream.len()).step_by(17).collect();
    for fit in [150, 195, 240, 555] {
        cuts.extend((fit - 2) * rows..(fit + 2) * rows);
    }
    let whole = assert_restores_anywhere(seasonal(SHORT), &stream, cuts, Batches::Every(40));
    assert!(whole.anomalies.len() >= 3, "the stream has departures to report: {:?}", whole.anomalies);
}

/// With the default configuration (a day of 1,440 samples, two days' window, a refit a day):
/// restored before the first fit, around it and around the first refit.
#[test]
fn restored_around_the_daily_fits_with_the_defaults() {
    let stream = fleet(1440, 5000, 5);
    let rows = ROUTERS as usize;
    let cuts = [100, 1500, 2879, 2880, 2881, 3500, 4319, 4320, 4321, 4700].map(|tick| tick * rows);
    assert_restores_anywhere(
        Seasonal::default,
        &stream,
        cuts.into_iter().chain([2880 * rows + 1]),
        Batches::Every(500),
    );
}

#[test]
fn batches_of_any_size_score_alike() {
    let stream = fleet(60, 900, 3);
    assert_batching_is_invisible(seasonal(SHORT), &stream, &[40, 1, 3, 150, stream.len()].map(Batches::Every));
}
