//! `Record::decode` on arbitrary bytes: never panics, and whatever it accepts lies in the
//! documented ranges and survives re-encoding bit for bit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: routewatch_fuzz::write_seeds(routewatch_fuzz::seed_records()),
    |data: &[u8]| routewatch_fuzz::check_record(data)
);
