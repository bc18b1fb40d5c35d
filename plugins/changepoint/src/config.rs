//! The detector's configuration, as accepted by `configure`.

use serde::{Deserialize, Serialize};

/// Configuration. Every field is optional in the JSON; `{}` gives these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// CUSUM decision limit, in noise sd (the sum scores 0.5 there).
    pub limit: f64,
    /// CUSUM allowance per sample, in noise sd.
    pub drift: f64,
    /// Least shift of the mean, in noise sd, that BOCPD's changepoint must show.
    pub min_shift: f64,
    /// Samples BOCPD looks back over.
    pub window: usize,
    /// How recent (in samples) the confirmed changepoint must be.
    pub recent: usize,
    /// BOCPD hazard: expected samples between changepoints.
    pub hazard: f64,
    /// Samples before a series is judged.
    pub warmup: u64,
    /// Weight of the newest sample in the running level.
    pub level_alpha: f64,
    /// Weight of the newest deviation in the noise scale.
    pub noise_alpha: f64,
    /// The noise scale is never below this fraction of the level.
    pub rel_floor: f64,
    /// Samples the gate rests after BOCPD rejected an alarm.
    pub cooldown: u32,
    /// Metrics to watch, by wire name; empty watches all.
    pub metrics: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            limit: 10.0,
            drift: 1.0,
            min_shift: 4.0,
            window: 48,
            recent: 12,
            hazard: 250.0,
            warmup: 60,
            level_alpha: 0.05,
            noise_alpha: 0.01,
            rel_floor: 0.001,
            cooldown: 10,
            // Level shifts of continuous metrics; counts (errors, BGP sessions) and the loss
            // ratio jump by nature and are left to the forecasting detectors.
            metrics: ["cpu_util", "mem_util", "temp_c", "fan_rpm", "latency_ms", "rx_bps", "tx_bps"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let config: Config =
            serde_json::from_str(json).map_err(|e| format!("invalid changepoint configuration: {e}"))?;
        config.check()?;
        Ok(config)
    }

    /// What `parse` checks beyond the JSON's shape; a restored snapshot's configuration too.
    pub(crate) fn check(&self) -> Result<(), String> {
        let fail = |msg: String| Err(format!("invalid changepoint configuration: {msg}"));
        for (name, v) in [("limit", self.limit), ("min_shift", self.min_shift), ("hazard", self.hazard)] {
            if !(v.is_finite() && v > 0.0) {
                return fail(format!("{name} must be a positive number, got {v}"));
            }
        }
        if !(self.drift.is_finite() && self.drift >= 0.0) {
            return fail(format!("drift must be a non-negative number, got {}", self.drift));
        }
        if !(8..=1000).contains(&self.window) {
            return fail(format!("window must be 8 to 1000 samples, got {}", self.window));
        }
        if self.recent == 0 || self.recent >= self.window {
            return fail(format!("recent must be 1 to window - 1, got {}", self.recent));
        }
        if self.warmup < 10 {
            return fail(format!("warmup must be at least 10 samples, got {}", self.warmup));
        }
        for (name, v) in [("level_alpha", self.level_alpha), ("noise_alpha", self.noise_alpha)] {
            if !(v > 0.0 && v <= 0.5) {
                return fail(format!("{name} must be in (0, 0.5], got {v}"));
            }
        }
        if !(self.rel_floor >= 0.0 && self.rel_floor < 1.0) {
            return fail(format!("rel_floor must be in [0, 1), got {}", self.rel_floor));
        }
        Ok(())
    }

    pub const SCHEMA: &'static str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "Changepoint detector configuration",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "limit": {"type": "number", "exclusiveMinimum": 0, "default": 10.0,
      "description": "CUSUM decision limit in noise sd (score 0.5)."},
    "drift": {"type": "number", "minimum": 0, "default": 1.0, "description": "CUSUM allowance per sample."},
    "min_shift": {"type": "number", "exclusiveMinimum": 0, "default": 4.0,
      "description": "Least mean shift (noise sd) a confirmed changepoint must show."},
    "window": {"type": "integer", "minimum": 8, "maximum": 1000, "default": 48},
    "recent": {"type": "integer", "minimum": 1, "default": 12},
    "hazard": {"type": "number", "exclusiveMinimum": 0, "default": 250.0,
      "description": "BOCPD prior: expected samples between changepoints."},
    "warmup": {"type": "integer", "minimum": 10, "default": 60},
    "level_alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5, "default": 0.05},
    "noise_alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5, "default": 0.01},
    "rel_floor": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.001},
    "cooldown": {"type": "integer", "minimum": 0, "default": 10},
    "metrics": {"type": "array", "items": {"type": "string"},
      "default": ["cpu_util", "mem_util", "temp_c", "fan_rpm", "latency_ms", "rx_bps", "tx_bps"],
      "description": "Metrics to watch; empty watches all."}
  }
}"#;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        assert_eq!(Config::parse("{}").unwrap(), Config::default());
        for (json, needle) in [
            (r#"{"limit": 0}"#, "limit"),
            (r#"{"window": 4}"#, "window"),
            (r#"{"recent": 100}"#, "recent"),
            (r#"{"x": 1}"#, "unknown field"),
        ] {
            let err = Config::parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
        let schema: serde_json::Value = serde_json::from_str(Config::SCHEMA).unwrap();
        assert_eq!(schema["properties"].as_object().unwrap().len(), 12);
    }
}
