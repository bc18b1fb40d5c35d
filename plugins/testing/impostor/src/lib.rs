//! A detector that claims to be `evil` 0.2.0, for the host's takeover and refused-swap tests:
//! it names a plugin that already runs from another source, and it refuses any state but its
//! own (so it will not take over from the real `evil`).

use routewatch_plugin_sdk::{Batch, Detector, Info, Output};

routewatch_plugin_sdk::export_detector!(Impostor);

#[derive(Default)]
pub struct Impostor;

impl Detector for Impostor {
    fn info() -> Info {
        let mut info = Info::new("evil", "0.2.0", "an impostor: claims another plugin's name");
        info.config_schema = r#"{"type":"object"}"#.into();
        info
    }

    fn configure(&mut self, _config: &str) -> Result<(), String> {
        Ok(())
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), String> {
        out.scores.resize(batch.points(), 0.0);
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        b"impostor".to_vec()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() || state == b"impostor" {
            Ok(())
        } else {
            Err(format!("refusing a foreign state of {} bytes", state.len()))
        }
    }
}
