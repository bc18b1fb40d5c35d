//! The detector's configuration, as accepted by `configure`.

use serde::{Deserialize, Serialize};

/// Configuration. Every field is optional in the JSON; `{}` gives these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Error, in robust standard deviations of the router's own forecast errors, at which a
    /// point is anomalous (score 0.5).
    pub threshold: f64,
    /// Samples a router is seen before it is scored (normaliser and error scale settle).
    pub warmup: u64,
    /// Weight of the newest error in the smoothed error (1 = no smoothing).
    pub smoothing: f64,
    /// Weight of the newest error in the error scale.
    pub scale_alpha: f64,
    /// Least error scale, in the router's standard deviations.
    pub min_scale: f64,
    /// Consecutive anomalies on one side after which the new level is accepted.
    pub level_shift_after: u32,
    /// Least absolute departure from the forecast, per metric in its own unit, for a point to
    /// be anomalous: counts (interface errors, BGP sessions) jitter by a unit or two on a
    /// healthy router, which their tiny standard deviation would otherwise call a catastrophe.
    pub min_deviation: std::collections::BTreeMap<String, f64>,
    /// Metrics to report on, by wire name; empty reports all that the model reads.
    pub metrics: Vec<String>,
}

/// Default least departures: counts and the loss ratio, whose healthy noise is not Gaussian.
pub fn default_min_deviation() -> std::collections::BTreeMap<String, f64> {
    [("if_errors", 5.0), ("bgp_up", 1.5), ("loss_ratio", 0.01)].into_iter().map(|(m, v)| (m.to_owned(), v)).collect()
}

impl Default for Config {
    fn default() -> Config {
        Config {
            threshold: 6.0,
            warmup: 120,
            smoothing: 0.5,
            scale_alpha: 0.01,
            min_scale: 0.05,
            level_shift_after: 3,
            min_deviation: default_min_deviation(),
            metrics: Vec::new(),
        }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let config: Config = serde_json::from_str(json).map_err(|e| format!("invalid LSTM configuration: {e}"))?;
        config.check()?;
        Ok(config)
    }

    /// What `parse` checks beyond the JSON's shape; a restored snapshot's configuration too.
    pub(crate) fn check(&self) -> Result<(), String> {
        let fail = |msg: String| Err(format!("invalid LSTM configuration: {msg}"));
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return fail(format!("threshold must be a positive number, got {}", self.threshold));
        }
        if self.warmup < crate::normalize::WARMUP + 10 {
            return fail(format!(
                "warmup must be at least {} samples, got {}",
                crate::normalize::WARMUP + 10,
                self.warmup
            ));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return fail(format!("smoothing must be in (0, 1], got {}", self.smoothing));
        }
        if !(self.scale_alpha > 0.0 && self.scale_alpha <= 0.5) {
            return fail(format!("scale_alpha must be in (0, 0.5], got {}", self.scale_alpha));
        }
        if !(self.min_scale.is_finite() && self.min_scale > 0.0) {
            return fail(format!("min_scale must be a positive number, got {}", self.min_scale));
        }
        if self.level_shift_after < 2 {
            return fail(format!("level_shift_after must be at least 2, got {}", self.level_shift_after));
        }
        if let Some((m, v)) = self.min_deviation.iter().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
            return fail(format!("min_deviation of {m} must be a non-negative number, got {v}"));
        }
        if let Some(m) = self.metrics.iter().find(|m| !crate::model::FEATURES.contains(&m.as_str())) {
            return fail(format!("metric {m} is not one the model reads ({:?})", crate::model::FEATURES));
        }
        Ok(())
    }

    pub const SCHEMA: &'static str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "LSTM detector configuration",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "threshold": {"type": "number", "exclusiveMinimum": 0, "default": 6.0,
      "description": "Forecast error, in robust sd of the router's own errors, that scores 0.5."},
    "warmup": {"type": "integer", "minimum": 70, "default": 120,
      "description": "Samples a router is seen before it is scored."},
    "smoothing": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.5,
      "description": "Weight of the newest error in the smoothed error."},
    "scale_alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5, "default": 0.01,
      "description": "Weight of the newest error in the error scale."},
    "min_scale": {"type": "number", "exclusiveMinimum": 0, "default": 0.05,
      "description": "Least error scale, in the router's standard deviations."},
    "level_shift_after": {"type": "integer", "minimum": 2, "default": 3,
      "description": "Consecutive same-side anomalies after which the new level is accepted."},
    "min_deviation": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
      "default": {"if_errors": 5, "bgp_up": 1.5, "loss_ratio": 0.01},
      "description": "Least absolute departure from the forecast per metric (its unit) for an anomaly."},
    "metrics": {"type": "array", "items": {"type": "string", "enum": ["cpu_util", "mem_util", "temp_c",
      "fan_rpm", "latency_ms", "loss_ratio", "rx_bps", "tx_bps", "if_errors", "bgp_up"]}, "default": [],
      "description": "Metrics to report on; empty reports all ten."}
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
            (r#"{"threshold": 0}"#, "threshold"),
            (r#"{"warmup": 10}"#, "warmup"),
            (r#"{"metrics": ["nope"]}"#, "nope"),
            (r#"{"bogus": 1}"#, "unknown field"),
        ] {
            let err = Config::parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
        let schema: serde_json::Value = serde_json::from_str(Config::SCHEMA).unwrap();
        assert_eq!(schema["properties"].as_object().unwrap().len(), 8);
    }
}
