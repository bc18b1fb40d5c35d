//! The SDK's `snapshot::decode` on arbitrary bytes, for a state shaped like the detectors'
//! (a `SeriesTable` of series with windows): never panics, never allocates more than the
//! input can describe, and what it accepts encodes back to bytes that decode the same.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use routewatch_plugin_sdk::{SeriesTable, snapshot};

type State = (Vec<String>, SeriesTable<(u64, i64, f64, VecDeque<f64>, Option<Vec<f32>>)>);

fuzz_target!(
    init: routewatch_fuzz::write_seeds(routewatch_fuzz::seed_series_tables()),
    |data: &[u8]| {
        if let Ok(state) = snapshot::decode::<State>(data, 1, "fuzz") {
            let bytes = snapshot::encode(1, &state);
            let again: State = snapshot::decode(&bytes, 1, "fuzz").expect("an encoded state decodes");
            assert_eq!(snapshot::encode(1, &again), bytes, "decode, encode, decode changed the bytes");
        }
    }
);
