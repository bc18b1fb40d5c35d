//! The detector's configuration, as accepted by `configure`.

use serde::{Deserialize, Serialize};

/// Which augurs-outlier method decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Double median absolute deviation: scores in MAD units, `threshold` decides.
    Mad,
    /// 1-D DBSCAN: outside the majority cluster (gaps wider than `epsilon`) is an outlier.
    Dbscan,
    /// Both must agree (fewer false alarms, a little less recall).
    Both,
}

/// Configuration. Every field is optional in the JSON; `{}` gives these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub method: Method,
    /// MAD score (robust sd of the peers' residuals) that scores 0.5.
    pub threshold: f64,
    /// DBSCAN neighbourhood, in residual units (a router's own sd).
    pub epsilon: f64,
    /// Least spread of the peers' residuals assumed, in a router's own sd: in a very quiet
    /// fleet the MAD shrinks and an ordinary wobble would otherwise stand out.
    pub min_spread: f64,
    /// Samples a router's baseline is learnt before it is compared.
    pub warmup: u64,
    /// Weight of the newest sample in a router's baseline.
    pub baseline_alpha: f64,
    /// The baseline's standard deviation is never below this fraction of its level.
    pub rel_floor: f64,
    /// Fewest peers (routers at one timestamp in one group) needed to judge.
    pub min_peers: usize,
    /// Consecutive outlying samples after which the baseline starts following again.
    pub accept_after: u32,
    /// Optional strict peer groups (lists of router ids, as the host numbers them).
    pub peer_groups: Vec<Vec<u32>>,
    /// Least absolute departure from a router's own baseline, per metric in its unit, for an
    /// outlier: counts jitter by a unit or two on healthy routers.
    pub min_deviation: std::collections::BTreeMap<String, f64>,
    /// Metrics to watch, by wire name; empty watches all.
    pub metrics: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            method: Method::Mad,
            threshold: 6.0,
            epsilon: 2.0,
            min_spread: 1.0,
            warmup: 60,
            baseline_alpha: 1.0 / 240.0,
            rel_floor: 0.01,
            min_peers: 20,
            accept_after: 120,
            peer_groups: Vec::new(),
            min_deviation: [("if_errors", 5.0), ("bgp_up", 1.5), ("loss_ratio", 0.01)]
                .into_iter()
                .map(|(m, v)| (m.to_owned(), v))
                .collect(),
            metrics: Vec::new(),
        }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let config: Config =
            serde_json::from_str(json).map_err(|e| format!("invalid fleet-outlier configuration: {e}"))?;
        config.check()?;
        Ok(config)
    }

    /// What `parse` checks beyond the JSON's shape; a restored snapshot's configuration too.
    pub(crate) fn check(&self) -> Result<(), String> {
        let fail = |msg: String| Err(format!("invalid fleet-outlier configuration: {msg}"));
        for (name, v) in [("threshold", self.threshold), ("epsilon", self.epsilon), ("min_spread", self.min_spread)] {
            if !(v.is_finite() && v > 0.0) {
                return fail(format!("{name} must be a positive number, got {v}"));
            }
        }
        if self.warmup < 10 {
            return fail(format!("warmup must be at least 10 samples, got {}", self.warmup));
        }
        if !(self.baseline_alpha > 0.0 && self.baseline_alpha <= 0.5) {
            return fail(format!("baseline_alpha must be in (0, 0.5], got {}", self.baseline_alpha));
        }
        if !(self.rel_floor >= 0.0 && self.rel_floor < 1.0) {
            return fail(format!("rel_floor must be in [0, 1), got {}", self.rel_floor));
        }
        if self.min_peers < 3 {
            return fail(format!("min_peers must be at least 3, got {}", self.min_peers));
        }
        let mut seen = std::collections::HashSet::new();
        for id in self.peer_groups.iter().flatten() {
            if *id >= 1 << 24 {
                return fail(format!("router id {id} in peer_groups is too large"));
            }
            if !seen.insert(*id) {
                return fail(format!("router id {id} is in more than one peer group"));
            }
        }
        Ok(())
    }

    /// Group index per router id; routers in no group get `u32::MAX` (one more group).
    pub fn group_table(&self) -> Vec<u32> {
        let mut table = Vec::new();
        for (g, ids) in self.peer_groups.iter().enumerate() {
            for &id in ids {
                if id as usize >= table.len() {
                    table.resize(id as usize + 1, u32::MAX);
                }
                table[id as usize] = g as u32;
            }
        }
        table
    }

    pub const SCHEMA: &'static str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "Fleet outlier detector configuration",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "method": {"enum": ["mad", "dbscan", "both"], "default": "mad",
      "description": "augurs-outlier method that decides: MAD, DBSCAN, or both agreeing."},
    "threshold": {"type": "number", "exclusiveMinimum": 0, "default": 6.0,
      "description": "MAD score that scores 0.5."},
    "epsilon": {"type": "number", "exclusiveMinimum": 0, "default": 2.0,
      "description": "DBSCAN neighbourhood in residual units (a router's own sd)."},
    "min_spread": {"type": "number", "exclusiveMinimum": 0, "default": 1.0,
      "description": "Least spread of peers' residuals assumed, in own sd."},
    "warmup": {"type": "integer", "minimum": 10, "default": 60},
    "baseline_alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5, "default": 0.0041666},
    "rel_floor": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.01},
    "min_peers": {"type": "integer", "minimum": 3, "default": 20},
    "accept_after": {"type": "integer", "minimum": 0, "default": 120},
    "peer_groups": {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0}},
      "default": [], "description": "Strict peer groups by router id; default: all routers in a batch."},
    "min_deviation": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
      "default": {"if_errors": 5, "bgp_up": 1.5, "loss_ratio": 0.01},
      "description": "Least absolute departure from the router's baseline per metric (its unit)."},
    "metrics": {"type": "array", "items": {"type": "string"}, "default": []}
  }
}"#;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_groups_and_errors() {
        assert_eq!(Config::parse("{}").unwrap(), Config::default());
        let c = Config::parse(r#"{"peer_groups": [[0, 2], [1]], "method": "both"}"#).unwrap();
        assert_eq!(c.group_table(), vec![0, 1, 0]);
        for (json, needle) in [
            (r#"{"threshold": 0}"#, "threshold"),
            (r#"{"peer_groups": [[1], [1]]}"#, "more than one"),
            (r#"{"method": "knn"}"#, "unknown variant"),
            (r#"{"min_peers": 1}"#, "min_peers"),
        ] {
            let err = Config::parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
        let schema: serde_json::Value = serde_json::from_str(Config::SCHEMA).unwrap();
        assert_eq!(schema["properties"].as_object().unwrap().len(), 12);
    }
}
