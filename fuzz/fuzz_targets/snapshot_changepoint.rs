//! `Changepoint::restore` on arbitrary bytes, starting from snapshots of a trained detector: never
//! panics, allocates within the snapshot's own bounds, and what it accepts snapshots back to
//! bytes that restore again and scores within the output contract.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routewatch_changepoint::Changepoint;

/// A configuration with short warm-ups, so that the seeds carry fitted models.
const SEED_CONFIG: &str = r#"{"warmup":10,"window":8,"recent":4}"#;

fuzz_target!(
    init: routewatch_fuzz::write_seeds(routewatch_fuzz::trained_snapshots::<Changepoint>(SEED_CONFIG, 40)),
    |data: &[u8]| routewatch_fuzz::check_restore(&mut Changepoint::default(), data)
);
