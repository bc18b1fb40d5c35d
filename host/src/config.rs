//! Configuration of `routewatch run`: a TOML file, then environment, then flags, each
//! overriding the one before (see `main.rs` for the flags and their variables).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the host promises about a record's outputs (anomalies, dead letters, state) when it
/// crashes or loses its partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessingGuarantee {
    /// Offsets are committed after the outputs are acknowledged: a crash may repeat outputs,
    /// never lose them.
    #[default]
    AtLeastOnce,
    /// Each partition's outputs and its consumer offset are committed in one Kafka
    /// transaction: a `read_committed` reader sees each record's outputs once.
    ExactlyOnce,
}

/// Everything the streaming host needs. Every field has a default; a file sets any subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
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
    /// At-least-once (the default) or exactly-once output.
    pub processing_guarantee: ProcessingGuarantee,
    /// How often each partition's detector state is written to the state topic, in seconds
    /// (it is also written on revoke and shutdown).
    pub snapshot_interval_secs: u64,
    /// Detector components to run on every partition, besides those in `plugin_dir`.
    pub plugins: Vec<PathBuf>,
    /// A watched folder of detector components: a `.wasm` dropped in is loaded, replaced is
    /// swapped in, removed is unloaded. Uploads are written here, and settings changed over the
    /// API are kept here (in `routewatch-plugins.json`). Created if missing.
    pub plugin_dir: Option<PathBuf>,
    /// Configuration per plugin name, passed to its `configure`.
    pub plugin_config: BTreeMap<String, serde_json::Value>,
    /// CPU budget of one plugin call, in milliseconds.
    pub cpu_budget_ms: u64,
    /// Memory cap of one plugin instance, in MiB.
    pub memory_mib: usize,
    /// Largest snapshot a plugin may hand over, in MiB; a larger one is a failure of the
    /// plugin (counted toward quarantine) and the previous snapshot is kept.
    pub max_snapshot_mib: usize,
    /// Compiled-component cache; empty for none.
    pub cache_dir: Option<PathBuf>,
    /// Largest size of the compiled-component cache, in MiB (least recently used go first).
    pub cache_max_mib: u64,
    /// Ed25519 public keys (64 hex digits each) that plugins must be signed with. When any
    /// are set, a component without a valid signature by one of them is refused.
    pub trusted_keys: Vec<String>,
    /// A plugin that fails this many batches within `quarantine_window_secs` is quarantined.
    pub quarantine_failures: u32,
    pub quarantine_window_secs: u64,
    /// First quarantine's length; each next one doubles, up to `quarantine_max_backoff_secs`.
    pub quarantine_backoff_secs: u64,
    pub quarantine_max_backoff_secs: u64,
    /// Where the HTTP API (health, metrics, anomalies, plugin management) listens.
    pub listen: SocketAddr,
    /// Bearer token that API mutations need. When unset, one is read from `api_token_file`,
    /// or generated and written there at first start.
    pub api_token: Option<String>,
    /// Where the generated token is kept (default: `$XDG_STATE_HOME/routewatch/api-token`,
    /// else `~/.local/state/routewatch/api-token`).
    pub api_token_file: Option<PathBuf>,
    /// Largest component an upload may carry, in MiB.
    pub max_upload_mib: usize,
    /// Extra librdkafka settings for every client (for example `security.protocol`).
    pub kafka: BTreeMap<String, String>,
    /// Group each partition's anomalies into router incidents (`routewatch-incidents`), kept
    /// with the partition's state and written to `incidents_topic`.
    pub incidents: bool,
    /// Compacted topic of router incidents: JSON, keyed by incident id, the latest state wins.
    pub incidents_topic: String,
    /// Operators' feedback on incidents (`POST /api/v1/incidents/{id}/feedback`), kept for
    /// good: the classifier's training script reads it back.
    pub feedback_topic: String,
    /// Operators' acknowledgements of incidents (`POST /api/v1/incidents/{id}/ack`):
    /// compacted, keyed by incident id; every host follows it, so an acknowledgement survives
    /// restarts and follows its incident's partition.
    pub acks_topic: String,
    /// The router incident stage's settings (quiet period, reopen period, scores, caps).
    pub incident_config: routewatch_incidents::RouterConfig,
    /// Raise predicted incidents (memory running out, a chassis heating up) before the
    /// damage, with an ETA, beside the router incidents (needs `incidents`).
    pub forecast: bool,
    /// What the forecast stage watches and warns about (`[forecast_config]`, with
    /// `[[forecast_config.targets]]`); its sampling interval is `incident_config`'s.
    pub forecast_config: routewatch_incidents::ForecastConfig,
    /// Group router incidents of one site (or role) that start together into site incidents
    /// (needs `incidents`): router incidents are re-keyed by site to `site_topic`, whose
    /// consumer group (`GROUP-sites`) runs the site stage per partition.
    pub sites: bool,
    /// Router incident updates keyed by site (or role), so that every incident of a site
    /// reaches one consumer whichever host found it.
    pub site_topic: String,
    /// Compacted topic of site incidents: JSON, keyed by site incident id, the latest state wins.
    pub site_incidents_topic: String,
    /// When router incidents make a site incident (`[site_config]`: `group_by`, `min_routers`,
    /// `onset_window_samples`, caps); its sampling interval is `incident_config`'s.
    pub site_config: routewatch_incidents::SiteConfig,
    /// A cause classifier component (`routewatch:classifier` world) that names each
    /// incident's probable causes; none: incidents carry no cause.
    pub classifier: Option<PathBuf>,
    /// The classifier's configuration, passed to its `configure`.
    pub classifier_config: serde_json::Value,
    /// Alertmanagers (`http://host:9093`) each incident is posted to, v2 API; none: no alerts.
    pub alertmanager_urls: Vec<String>,
    /// Self-healing: guard rails and policies (`[healing]` with `[[healing.policies]]`); no
    /// policies, no self-healing. Each policy's cause must be one the classifier names.
    pub healing: routewatch_remediation::HealingConfig,
    /// Topic of the self-healing audit trail: every change of every action (JSON, keyed by
    /// action id).
    pub actions_topic: String,
    /// Runbook link of each alert; `{cause}` is replaced by the incident's cause.
    pub runbook_url: String,
}

impl Default for HostConfig {
    fn default() -> HostConfig {
        HostConfig {
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
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            plugins: Vec::new(),
            plugin_config: BTreeMap::new(),
            cpu_budget_ms: 1000,
            memory_mib: 256,
            max_snapshot_mib: 64,
            cache_dir: None,
            cache_max_mib: 2048,
            trusted_keys: Vec::new(),
            plugin_dir: None,
            quarantine_failures: 3,
            quarantine_window_secs: 60,
            quarantine_backoff_secs: 30,
            quarantine_max_backoff_secs: 1800,
            listen: SocketAddr::from(([127, 0, 0, 1], 9400)),
            api_token: None,
            api_token_file: None,
            max_upload_mib: 64,
            kafka: BTreeMap::new(),
            incidents: true,
            incidents_topic: "router-incidents".into(),
            feedback_topic: "router-incident-feedback".into(),
            acks_topic: "router-incident-acks".into(),
            incident_config: routewatch_incidents::RouterConfig::default(),
            forecast: true,
            forecast_config: routewatch_incidents::ForecastConfig::default(),
            sites: true,
            site_topic: "router-incidents-by-site".into(),
            site_incidents_topic: "site-incidents".into(),
            site_config: routewatch_incidents::SiteConfig::default(),
            classifier: None,
            classifier_config: serde_json::json!({}),
            healing: routewatch_remediation::HealingConfig::default(),
            actions_topic: "router-actions".into(),
            alertmanager_urls: Vec::new(),
            runbook_url: crate::alertmanager::DEFAULT_RUNBOOK_URL.into(),
        }
    }
}

impl HostConfig {
    /// Reads a TOML file; unknown keys are errors, so a typo does not pass silently.
    pub fn from_file(path: &Path) -> anyhow::Result<HostConfig> {
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
        anyhow::ensure!(
            !self.plugins.is_empty() || self.plugin_dir.is_some(),
            "no plugins configured: give at least one .wasm detector, or a plugin_dir"
        );
        anyhow::ensure!(self.quarantine_failures >= 1, "quarantine_failures must be at least 1");
        anyhow::ensure!(self.quarantine_window_secs >= 1, "quarantine_window_secs must be at least 1");
        anyhow::ensure!(
            (1..=self.quarantine_max_backoff_secs).contains(&self.quarantine_backoff_secs),
            "quarantine_backoff_secs must be at least 1 and at most quarantine_max_backoff_secs"
        );
        anyhow::ensure!((1..=1024).contains(&self.max_upload_mib), "max_upload_mib must be 1 to 1024");
        if let Some(token) = &self.api_token {
            anyhow::ensure!(token.len() >= 16, "api_token must be at least 16 characters");
        }
        anyhow::ensure!(self.cpu_budget_ms >= 1, "cpu_budget_ms must be at least 1");
        anyhow::ensure!(self.memory_mib >= 1, "memory_mib must be at least 1");
        anyhow::ensure!(self.cache_max_mib >= 1, "cache_max_mib must be at least 1");
        anyhow::ensure!((1..=1024).contains(&self.max_snapshot_mib), "max_snapshot_mib must be 1 to 1024");
        for url in &self.alertmanager_urls {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "alertmanager_urls: {url:?} is not an http(s) address"
            );
        }
        self.incident_config.validate().map_err(|e| anyhow::anyhow!("incident_config: {e}"))?;
        self.forecast_settings().validate().map_err(|e| anyhow::anyhow!("forecast_config: {e}"))?;
        self.site_settings().validate().map_err(|e| anyhow::anyhow!("site_config: {e}"))?;
        crate::registry::TrustedKeys::parse(&self.trusted_keys).map_err(|e| anyhow::anyhow!("trusted_keys: {e}"))?;
        Ok(())
    }

    /// The forecast stage's settings, at the incident stage's sampling interval.
    pub fn forecast_settings(&self) -> routewatch_incidents::ForecastConfig {
        routewatch_incidents::ForecastConfig {
            interval_ms: self.incident_config.interval_ms,
            ..self.forecast_config.clone()
        }
    }

    /// The site stage's settings, at the incident stage's sampling interval.
    pub fn site_settings(&self) -> routewatch_incidents::SiteConfig {
        routewatch_incidents::SiteConfig { interval_ms: self.incident_config.interval_ms, ..self.site_config.clone() }
    }

    /// Whether this host runs the site stage: incidents on and sites on.
    pub fn runs_sites(&self) -> bool {
        self.incidents && self.sites
    }

    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    pub fn snapshot_interval(&self) -> Duration {
        Duration::from_secs(self.snapshot_interval_secs)
    }

    pub fn quarantine_policy(&self) -> crate::registry::QuarantinePolicy {
        crate::registry::QuarantinePolicy {
            max_failures: self.quarantine_failures,
            window: Duration::from_secs(self.quarantine_window_secs),
            backoff: Duration::from_secs(self.quarantine_backoff_secs),
            max_backoff: Duration::from_secs(self.quarantine_max_backoff_secs),
        }
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
            "brokers = \"k1:9092,k2:9092\"\nbatch_records = 500\nprocessing_guarantee = \"exactly-once\"\n\
             [plugin_config.arima]\nthreshold = 6.0\n",
        )
        .unwrap();
        let config = HostConfig::from_file(&path).unwrap();
        assert_eq!(config.processing_guarantee, ProcessingGuarantee::ExactlyOnce);
        assert_eq!(HostConfig::default().processing_guarantee, ProcessingGuarantee::AtLeastOnce);
        assert_eq!(config.brokers, "k1:9092,k2:9092");
        assert_eq!(config.batch_records, 500);
        assert_eq!(config.plugin_config["arima"]["threshold"], 6.0);
        assert_eq!(config.group_id, "routewatch");

        std::fs::write(&path, "brokerz = \"x\"\n").unwrap();
        let err = HostConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `brokerz`"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let config = HostConfig { plugins: vec!["a.wasm".into()], batch_records: 0, ..Default::default() };
        assert!(config.validate().unwrap_err().to_string().contains("batch_records"));
        assert!(HostConfig::default().validate().unwrap_err().to_string().contains("no plugins"));
        let config = HostConfig { plugin_dir: Some("plugins".into()), ..Default::default() };
        config.validate().unwrap();
        let short = HostConfig { api_token: Some("short".into()), ..config };
        assert!(short.validate().unwrap_err().to_string().contains("api_token"));
    }
}
