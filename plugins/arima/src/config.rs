//! The detector's configuration, as accepted by `configure`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{MAX_D, MAX_ORDER};

/// Configuration. Every field is optional in the JSON; `{}` gives these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Least robust z-score at which a single point is anomalous. The calibrated threshold is
    /// higher where the series' own errors are heavy-tailed (see the SDK's `calibrate`).
    pub threshold: f64,
    /// Samples a series collects before its first fit, plus its own share of up to half as
    /// many again (`series::first_fit_after`); it is not scored until then.
    pub warmup: usize,
    /// Samples kept for refitting (the most recent, with anomalies replaced by forecasts).
    pub window: usize,
    /// Samples between refits (order re-selected each time).
    pub refit_every: usize,
    /// Largest AR order tried (0 to 2).
    pub max_p: usize,
    /// Largest degree of differencing tried (0 or 1).
    pub max_d: usize,
    /// Largest MA order tried (0 to 2).
    pub max_q: usize,
    /// Consecutive anomalies on the same side after which the series is taken to have moved
    /// to a new level: reported as a level shift and followed from there.
    pub level_shift_after: usize,
    /// Metrics to watch, by wire name; empty watches all.
    pub metrics: Vec<String>,
    /// Least departure from the forecast, in the metric's own units, that can be anomalous,
    /// by wire name. Counters that sit at zero and jitter by a unit or two on healthy routers
    /// (interface errors, BGP sessions) would otherwise alarm on every blip, since a series
    /// that never moves has no scale to measure a blip against.
    pub min_deviation: BTreeMap<String, f64>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            threshold: 6.0,
            warmup: 120,
            window: 240,
            refit_every: 1440,
            max_p: 2,
            max_d: 1,
            max_q: 2,
            level_shift_after: 3,
            metrics: Vec::new(),
            min_deviation: BTreeMap::from([
                ("if_errors".to_owned(), 5.0),
                ("bgp_up".to_owned(), 1.5),
                ("loss_ratio".to_owned(), 0.01),
            ]),
        }
    }
}

impl Config {
    /// Parses and checks a JSON configuration.
    pub fn parse(json: &str) -> Result<Config, String> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let config: Config = serde_json::from_str(json).map_err(|e| format!("invalid ARIMA configuration: {e}"))?;
        config.check()?;
        Ok(config)
    }

    /// What `parse` checks beyond the JSON's shape; a restored snapshot's configuration too.
    pub(crate) fn check(&self) -> Result<(), String> {
        let fail = |msg: String| Err(format!("invalid ARIMA configuration: {msg}"));
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return fail(format!("threshold must be a positive number, got {}", self.threshold));
        }
        if self.max_p > MAX_ORDER || self.max_q > MAX_ORDER || self.max_d > MAX_D {
            return fail(format!("max_p and max_q must be at most {MAX_ORDER} and max_d at most {MAX_D}"));
        }
        if self.warmup < 30 {
            return fail(format!("warmup must be at least 30 samples, got {}", self.warmup));
        }
        if self.window < self.warmup {
            return fail(format!("window ({}) must be at least warmup ({})", self.window, self.warmup));
        }
        if self.window > 10_000 {
            return fail(format!("window must be at most 10000 samples, got {}", self.window));
        }
        if self.refit_every == 0 {
            return fail("refit_every must be at least 1".into());
        }
        if self.level_shift_after < 2 {
            return fail(format!("level_shift_after must be at least 2, got {}", self.level_shift_after));
        }
        if let Some((metric, value)) = self.min_deviation.iter().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
            return fail(format!("min_deviation for {metric} must be a non-negative number, got {value}"));
        }
        Ok(())
    }

    /// The JSON Schema of the configuration, as reported in the plugin's info.
    pub const SCHEMA: &'static str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "ARIMA detector configuration",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "threshold": {"type": "number", "exclusiveMinimum": 0, "default": 6.0,
      "description": "Least robust z-score at which a single point is anomalous; higher on heavy-tailed series."},
    "warmup": {"type": "integer", "minimum": 30, "default": 120,
      "description": "Samples before a series' first fit, plus its share of up to half as many again (spread over the fleet)."},
    "window": {"type": "integer", "minimum": 30, "maximum": 10000, "default": 240,
      "description": "Samples kept for refitting; at least warmup."},
    "refit_every": {"type": "integer", "minimum": 1, "default": 1440,
      "description": "Samples between refits."},
    "max_p": {"type": "integer", "minimum": 0, "maximum": 2, "default": 2},
    "max_d": {"type": "integer", "minimum": 0, "maximum": 1, "default": 1},
    "max_q": {"type": "integer", "minimum": 0, "maximum": 2, "default": 2},
    "level_shift_after": {"type": "integer", "minimum": 2, "default": 3,
      "description": "Consecutive same-side anomalies that make a level shift."},
    "metrics": {"type": "array", "items": {"type": "string"}, "default": [],
      "description": "Metrics to watch by wire name; empty watches all."},
    "min_deviation": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
      "default": {"if_errors": 5.0, "bgp_up": 1.5, "loss_ratio": 0.01},
      "description": "Least departure from the forecast, in the metric's units, that can be anomalous."}
  }
}"#;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_defaults() {
        assert_eq!(Config::parse("{}").unwrap(), Config::default());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn refuses_bad_values_with_reasons() {
        for (json, needle) in [
            (r#"{"threshold": -1}"#, "threshold"),
            (r#"{"max_p": 5}"#, "max_p"),
            (r#"{"warmup": 5}"#, "warmup"),
            (r#"{"warmup": 200, "window": 100}"#, "window"),
            (r#"{"bogus": 1}"#, "unknown field"),
            (r#"{"threshold": "high"}"#, "invalid type"),
            (r#"{"min_deviation": {"if_errors": -1}}"#, "min_deviation for if_errors"),
            ("[1,2]", "invalid"),
        ] {
            let err = Config::parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn schema_is_valid_json() {
        let schema: serde_json::Value = serde_json::from_str(Config::SCHEMA).unwrap();
        assert_eq!(schema["properties"].as_object().unwrap().len(), 10);
    }
}
