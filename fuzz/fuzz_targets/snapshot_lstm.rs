//! `Lstm::restore` on arbitrary bytes, starting from snapshots of a trained detector: never
//! panics, allocates within the snapshot's own bounds, and what it accepts snapshots back to
//! bytes that restore again and scores within the output contract.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use routewatch_lstm::Lstm;
use routewatch_plugin_sdk::Detector;

thread_local! {
    /// One detector for the whole run: its model takes a while to build, and it is not state
    /// (every input starts from the default state, restored below).
    static LSTM: RefCell<Lstm> = RefCell::new(Lstm::default());
    static EMPTY: Vec<u8> = Lstm::default().snapshot();
}

/// A configuration with short warm-ups, so that the seeds carry fitted models.
const SEED_CONFIG: &str = r#"{"warmup":70}"#;

fuzz_target!(
    init: routewatch_fuzz::write_seeds(routewatch_fuzz::trained_snapshots::<Lstm>(SEED_CONFIG, 80)),
    |data: &[u8]| LSTM.with_borrow_mut(|lstm| {
        EMPTY.with(|empty| lstm.restore(empty)).expect("the default state restores");
        routewatch_fuzz::check_restore(lstm, data)
    })
);
