//! The detector's configuration, as accepted by `configure`.

use serde::{Deserialize, Serialize};

/// Configuration. Every field is optional in the JSON; `{}` gives these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Samples per seasonal cycle (1440: a day at one sample a minute).
    pub period: usize,
    /// Samples fitted (at least two periods); nothing is scored before the first fit.
    pub window: usize,
    /// Samples between refits.
    pub refit_every: usize,
    /// Least half-width of the prediction interval, in robust sd of the one-step errors; the
    /// calibrated width is larger on heavy-tailed series.
    pub threshold: f64,
    /// Consecutive same-side anomalies that make a level shift.
    pub level_shift_after: u32,
    /// Metrics to watch, by wire name; empty watches all.
    pub metrics: Vec<String>,
    /// Metrics modelled in logarithms. Traffic and latency vary by a factor over the day, and so
    /// does their noise: in logs the noise is the same at the peak as at night, so one interval
    /// width fits the whole cycle.
    pub log_metrics: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            period: 1440,
            window: 2880,
            refit_every: 1440,
            threshold: 6.0,
            level_shift_after: 3,
            metrics: Vec::new(),
            log_metrics: ["latency_ms", "loss_ratio", "rx_bps", "tx_bps"].map(String::from).to_vec(),
        }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let config: Config = serde_json::from_str(json).map_err(|e| format!("invalid seasonal configuration: {e}"))?;
        config.check()?;
        Ok(config)
    }

    /// What `parse` checks beyond the JSON's shape; a restored snapshot's configuration too.
    pub(crate) fn check(&self) -> Result<(), String> {
        let fail = |msg: String| Err(format!("invalid seasonal configuration: {msg}"));
        if self.period < 2 {
            return fail(format!("period must be at least 2 samples, got {}", self.period));
        }
        if self.window < 2 * self.period || self.window > 20_000 {
            return fail(format!(
                "window must be 2 x period ({}) to 20000 samples, got {}",
                2 * self.period,
                self.window
            ));
        }
        if self.refit_every == 0 {
            return fail("refit_every must be at least 1".into());
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return fail(format!("threshold must be a positive number, got {}", self.threshold));
        }
        if self.level_shift_after < 2 {
            return fail(format!("level_shift_after must be at least 2, got {}", self.level_shift_after));
        }
        Ok(())
    }

    pub const SCHEMA: &'static str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "Seasonal (MSTL + ETS) detector configuration",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "period": {"type": "integer", "minimum": 2, "default": 1440,
      "description": "Samples per seasonal cycle (a day at one sample a minute)."},
    "window": {"type": "integer", "maximum": 20000, "default": 2880,
      "description": "Samples fitted; at least two periods. Nothing is scored before the first fit."},
    "refit_every": {"type": "integer", "minimum": 1, "default": 1440},
    "threshold": {"type": "number", "exclusiveMinimum": 0, "default": 6.0,
      "description": "Prediction-interval half-width in ETS error sd (score 0.5)."},
    "level_shift_after": {"type": "integer", "minimum": 2, "default": 3},
    "metrics": {"type": "array", "items": {"type": "string"},
      "default": [], "description": "Metrics to watch; empty watches all."},
    "log_metrics": {"type": "array", "items": {"type": "string"},
      "default": ["latency_ms", "loss_ratio", "rx_bps", "tx_bps"],
      "description": "Metrics modelled in logarithms (their noise grows with their level); others are modelled in logarithms when positive and varying by a factor of 10 over the first window."}
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
            (r#"{"period": 100, "window": 150}"#, "window"),
            (r#"{"threshold": -1}"#, "threshold"),
            (r#"{"x": 1}"#, "unknown field"),
        ] {
            let err = Config::parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
        let schema: serde_json::Value = serde_json::from_str(Config::SCHEMA).unwrap();
        assert_eq!(schema["properties"].as_object().unwrap().len(), 7);
    }
}
