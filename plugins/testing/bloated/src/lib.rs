//! A detector whose info carries a 6 MiB description, for the host's size caps: everything
//! in a plugin's info is echoed to API clients, so the host must refuse it at load.

use routewatch_plugin_sdk::{Batch, Detector, Info, Output};

routewatch_plugin_sdk::export_detector!(Bloated);

#[derive(Default)]
pub struct Bloated;

impl Detector for Bloated {
    fn info() -> Info {
        Info::new("bloated", "0.1.0", &"a very long description ".repeat(8 << 20 >> 5))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), String> {
        out.scores.resize(batch.points(), 0.0);
        Ok(())
    }
}
