//! Enable flags and configurations set over the API, kept in the plugin directory so that a
//! restart keeps what operators changed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub plugins: BTreeMap<String, PluginSettings>,
    /// The cause classifier's configuration, once set (absent from files written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_config: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginSettings {
    pub enabled: bool,
    pub config: Option<serde_json::Value>,
}

impl Default for PluginSettings {
    fn default() -> PluginSettings {
        PluginSettings { enabled: true, config: None }
    }
}

impl Settings {
    /// Reads the file; a missing file is empty settings, a damaged one an error (refusing to
    /// start beats silently forgetting what operators set).
    pub fn load(path: &Path) -> Result<Settings, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(err) => Err(format!("reading {}: {err}", path.display())),
        }
    }

    /// Writes the file whole or not at all (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(self).expect("settings serialise");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        assert!(Settings::load(&path).unwrap().plugins.is_empty());
        let mut settings = Settings::default();
        settings.plugins.insert(
            "arima".into(),
            PluginSettings { enabled: false, config: Some(serde_json::json!({"threshold": 6})) },
        );
        settings.save(&path).unwrap();
        assert_eq!(Settings::load(&path).unwrap().plugins["arima"], settings.plugins["arima"]);
        std::fs::write(&path, "{not json").unwrap();
        assert!(Settings::load(&path).unwrap_err().contains("s.json"));
    }
}
