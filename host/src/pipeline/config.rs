//! Configuration of `routewatch run`: a TOML file, then environment, then flags, each
//! overriding the one before (see `main.rs` for the flags and their variables).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the streaming host needs. Every field has a default; a file sets any subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Consumer group: hosts in one group split the partitions between them.
    pub group_id: String,
    pub metrics_topic: String,
    pub anomalies_topic: String,
    pub dlq_topic: String,
    /// Compacted topic holding each partition's detector state.
    pub state_topic: String,
    /// Create missing topics at start-up.
    pub create_topics: bool,
    /// Partitions of topics this host creates (the metrics topic's decides parallelism).
    pub partitions: i32,
    pub replication: i32,
    /// Retention of the metrics, anomalies and dead-letter topics this host creates.
    pub retention_hours: u64,
    /// Most records handed to the detectors in one batch.
    pub batch_records: usize,
    /// Longest a record waits for its batch to fill, in milliseconds.
    pub linger_ms: u64,
    /// How often each partition's detector state is written to the state topic, in seconds
    /// (it is also written on revoke and shutdown).
    pub snapshot_interval_secs: u64,
    /// Detector components to run on every partition.
    pub plugins: Vec<PathBuf>,
    /// Configuration per plugin name, passed to its `configure`.
    pub plugin_config: BTreeMap<String, serde_json::Value>,
    /// CPU budget of one plugin call, in milliseconds.
    pub cpu_budget_ms: u64,
    /// Memory cap of one plugin instance, in MiB.
    pub memory_mib: usize,
    /// Compiled-component cache; empty for none.
    pub cache_dir: Option<PathBuf>,
    /// Where the HTTP API (health, metrics, anomalies) listens.
    pub listen: SocketAddr,
    /// Extra librdkafka settings for every client (for example `security.protocol`).
    pub kafka: BTreeMap<String, String>,
}

impl Default for PipelineConfig {
    fn default() -> PipelineConfig {
        PipelineConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "routewatch".into(),
            metrics_topic: "router-metrics".into(),
            anomalies_topic: "router-anomalies".into(),
            dlq_topic: "router-metrics-dlq".into(),
            state_topic: "routewatch-state".into(),
            create_topics: true,
            partitions: 12,
            replication: 1,
            retention_hours: 72,
            batch_records: 10_000,
            linger_ms: 20,
            snapshot_interval_secs: 60,
            plugins: Vec::new(),
            plugin_config: BTreeMap::new(),
            cpu_budget_ms: 1000,
            memory_mib: 256,
            cache_dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 9400)),
            kafka: BTreeMap::new(),
        }
    }
}

impl PipelineConfig {
    /// Reads a TOML file; unknown keys are errors, so a typo does not pass silently.
    pub fn from_file(path: &Path) -> anyhow::Result<PipelineConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.brokers.trim().is_empty(), "brokers must not be empty");
        anyhow::ensure!(!self.group_id.trim().is_empty(), "group_id must not be empty");
        anyhow::ensure!(self.partitions >= 1, "partitions must be at least 1");
        anyhow::ensure!(self.replication >= 1, "replication must be at least 1");
        anyhow::ensure!((1..=1_000_000).contains(&self.batch_records), "batch_records must be 1 to 1000000");
        anyhow::ensure!(self.linger_ms <= 60_000, "linger_ms must be at most 60000");
        anyhow::ensure!(self.snapshot_interval_secs >= 1, "snapshot_interval_secs must be at least 1");
        anyhow::ensure!(!self.plugins.is_empty(), "no plugins configured: give at least one .wasm detector");
        anyhow::ensure!(self.cpu_budget_ms >= 1, "cpu_budget_ms must be at least 1");
        anyhow::ensure!(self.memory_mib >= 1, "memory_mib must be at least 1");
        Ok(())
    }

    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    pub fn snapshot_interval(&self) -> Duration {
        Duration::from_secs(self.snapshot_interval_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_a_subset_and_refuses_typos() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routewatch.toml");
        std::fs::write(
            &path,
            "brokers = \"k1:9092,k2:9092\"\nbatch_records = 500\n[plugin_config.arima]\nthreshold = 6.0\n",
        )
        .unwrap();
        let config = PipelineConfig::from_file(&path).unwrap();
        assert_eq!(config.brokers, "k1:9092,k2:9092");
        assert_eq!(config.batch_records, 500);
        assert_eq!(config.plugin_config["arima"]["threshold"], 6.0);
        assert_eq!(config.group_id, "routewatch");

        std::fs::write(&path, "brokerz = \"x\"\n").unwrap();
        let err = PipelineConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `brokerz`"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let config = PipelineConfig { plugins: vec!["a.wasm".into()], batch_records: 0, ..Default::default() };
        assert!(config.validate().unwrap_err().to_string().contains("batch_records"));
        assert!(PipelineConfig::default().validate().unwrap_err().to_string().contains("no plugins"));
    }
}
