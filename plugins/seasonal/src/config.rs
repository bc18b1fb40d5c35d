//! The detector's configuration, as accepted by `configure`.

use serde::{Deserialize, Serialize};

/// Configuration. Every field is optional in the JSON; `{}` gives these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Samples per seasonal cycle. None (the default): a day at the series' own sampling
    /// interval, the median of its first [`INTERVALS`] (1440 at one sample a minute, 288 at one
    /// every five, 24 hourly), at most [`MAX_PERIOD`].
    pub period: Option<usize>,
    /// Samples fitted, at least two periods; nothing is scored before the first fit. None: two
    /// periods. (A window shorter than two measured periods is taken as two periods.)
    pub window: Option<usize>,
    /// Samples between refits. None: one period.
    pub refit_every: Option<usize>,
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

/// The configuration as snapshot version 4 wrote it: every length in samples.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ConfigV4 {
    period: usize,
    window: usize,
    refit_every: usize,
    threshold: f64,
    level_shift_after: u32,
    metrics: Vec<String>,
    log_metrics: Vec<String>,
}

impl ConfigV4 {
    pub(crate) fn upgrade(self) -> Config {
        let ConfigV4 { period, window, refit_every, threshold, level_shift_after, metrics, log_metrics } = self;
        Config {
            period: Some(period),
            window: Some(window),
            refit_every: Some(refit_every),
            threshold,
            level_shift_after,
            metrics,
            log_metrics,
        }
    }
}

/// Intervals between a series' first samples whose median decides its default period.
pub const INTERVALS: usize = 16;
/// Longest period and window, in samples.
pub const MAX_PERIOD: usize = 10_000;
pub const MAX_WINDOW: usize = 2 * MAX_PERIOD;
/// A day, the default cycle.
const DAY_MS: i64 = 86_400_000;

/// The cycle of one series, in samples, as its configuration and its sampling interval decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    pub period: usize,
    pub window: usize,
    pub refit_every: usize,
}

/// Samples in a day at a median interval of `interval_ms`, within 2 and [`MAX_PERIOD`].
pub fn period_of_a_day(interval_ms: i64) -> usize {
    let interval = interval_ms.max(1);
    ((DAY_MS + interval / 2) / interval).clamp(2, MAX_PERIOD as i64) as usize
}

impl Default for Config {
    fn default() -> Config {
        Config {
            period: None,
            window: None,
            refit_every: None,
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

    /// The cycle of a series whose day is `measured` samples long (none while its interval is
    /// not known yet): none until a period is known.
    pub fn cycle(&self, measured: Option<usize>) -> Option<Cycle> {
        let period = self.period.or(measured)?;
        let window = self.window.map_or(2 * period, |w| w.max(2 * period));
        Some(Cycle { period, window, refit_every: self.refit_every.unwrap_or(period) })
    }

    /// What `parse` checks beyond the JSON's shape; a restored snapshot's configuration too.
    pub(crate) fn check(&self) -> Result<(), String> {
        let fail = |msg: String| Err(format!("invalid seasonal configuration: {msg}"));
        if let Some(period) = self.period
            && !(2..=MAX_PERIOD).contains(&period)
        {
            return fail(format!("period must be 2 to {MAX_PERIOD} samples, got {period}"));
        }
        if let Some(window) = self.window {
            let least = 2 * self.period.unwrap_or(1);
            if window < least || window > MAX_WINDOW {
                return fail(format!("window must be 2 x period ({least}) to {MAX_WINDOW} samples, got {window}"));
            }
        }
        if self.refit_every == Some(0) {
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
    "period": {"type": ["integer", "null"], "minimum": 2, "maximum": 10000, "default": null,
      "description": "Samples per seasonal cycle; null: a day at the series' own sampling interval (1440 at one sample a minute)."},
    "window": {"type": ["integer", "null"], "maximum": 20000, "default": null,
      "description": "Samples fitted; at least two periods (null: two periods). Nothing is scored before the first fit."},
    "refit_every": {"type": ["integer", "null"], "minimum": 1, "default": null,
      "description": "Samples between refits; null: one period."},
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
            (r#"{"period": 1}"#, "period"),
            (r#"{"window": 30000}"#, "window"),
            (r#"{"refit_every": 0}"#, "refit_every"),
            (r#"{"threshold": -1}"#, "threshold"),
            (r#"{"x": 1}"#, "unknown field"),
        ] {
            let err = Config::parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
        let schema: serde_json::Value = serde_json::from_str(Config::SCHEMA).unwrap();
        assert_eq!(schema["properties"].as_object().unwrap().len(), 7);
    }

    #[test]
    fn the_default_cycle_is_a_day_at_the_series_interval() {
        let config = Config::default();
        assert_eq!(config.cycle(None), None, "no period before the interval is known");
        let cycle = |interval_ms| config.cycle(Some(period_of_a_day(interval_ms))).unwrap();
        assert_eq!(cycle(60_000), Cycle { period: 1440, window: 2880, refit_every: 1440 });
        assert_eq!(cycle(300_000), Cycle { period: 288, window: 576, refit_every: 288 });
        assert_eq!(cycle(3_600_000).period, 24);
        assert_eq!(cycle(1_000).period, MAX_PERIOD, "capped");
        assert_eq!(cycle(86_400_000 * 7).period, 2, "at least two");
        // Set by hand, the period is the configuration's; a short window grows to two periods.
        let set = Config::parse(r#"{"period": 60, "window": 150, "refit_every": 45}"#).unwrap();
        assert_eq!(set.cycle(Some(288)), Some(Cycle { period: 60, window: 150, refit_every: 45 }));
        let short = Config::parse(r#"{"window": 100}"#).unwrap();
        assert_eq!(short.cycle(Some(288)).unwrap().window, 576);
    }
}
