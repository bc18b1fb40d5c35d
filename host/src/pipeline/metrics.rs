//! The streaming host's Prometheus metrics. Labels stay bounded: plugin names, anomaly
//! kinds, decode-error kinds and partition numbers, never routers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnomalyLabels {
    pub plugin: String,
    pub version: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub plugin: String,
    pub version: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub partition: String,
}

/// Every metric the pipeline exports.
pub struct Metrics {
    pub registry: Registry,
    pub records: Counter,
    pub records_done: Counter,
    pub decode_errors: Family<ReasonLabels, Counter>,
    pub dead_letters: Counter,
    pub batches: Counter,
    pub batch_duration: Histogram,
    pub plugin_invocations: Family<PluginLabels, Counter>,
    pub plugin_points: Family<PluginLabels, Counter>,
    pub plugin_call_duration: Family<PluginLabels, Histogram>,
    pub plugin_failures: Family<FailureLabels, Counter>,
    pub anomalies: Family<AnomalyLabels, Counter>,
    pub detection_latency: Histogram,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    pub assigned_partitions: Gauge,
    pub state_snapshots: Counter,
    pub state_restores: Counter,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 100 us to about 100 s.
    exponential_buckets(0.0001, 2.0, 21)
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("routewatch");
        let records = Counter::default();
        registry.register("records", "Records consumed from the metrics topic", records.clone());
        let records_done = Counter::default();
        registry.register(
            "records_done",
            "Records fully handled: their anomalies and dead letters acknowledged by the broker",
            records_done.clone(),
        );
        let decode_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "decode_errors",
            "Records that failed to decode or validate, by reason",
            decode_errors.clone(),
        );
        let dead_letters = Counter::default();
        registry.register("dead_letters", "Records sent to the dead-letter topic", dead_letters.clone());
        let batches = Counter::default();
        registry.register("batches", "Batches handed to the detectors", batches.clone());
        let batch_duration = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "batch_duration",
            "Time from a batch's first record to its anomalies being acknowledged",
            prometheus_client::registry::Unit::Seconds,
            batch_duration.clone(),
        );
        let plugin_invocations = Family::<PluginLabels, Counter>::default();
        registry.register("plugin_invocations", "Calls of a plugin's process", plugin_invocations.clone());
        let plugin_points = Family::<PluginLabels, Counter>::default();
        registry.register("plugin_points", "Points scored by a plugin", plugin_points.clone());
        let plugin_call_duration =
            Family::<PluginLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register_with_unit(
            "plugin_call_duration",
            "Duration of one process call",
            prometheus_client::registry::Unit::Seconds,
            plugin_call_duration.clone(),
        );
        let plugin_failures = Family::<FailureLabels, Counter>::default();
        registry.register("plugin_failures", "Failed plugin calls, by kind", plugin_failures.clone());
        let anomalies = Family::<AnomalyLabels, Counter>::default();
        registry.register("anomalies", "Anomalies produced, by plugin and kind", anomalies.clone());
        let detection_latency = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "detection_latency",
            "Time from a record's event time to its anomaly being acknowledged by the broker",
            prometheus_client::registry::Unit::Seconds,
            detection_latency.clone(),
        );
        let consumer_lag = Family::<PartitionLabels, Gauge>::default();
        registry.register("consumer_lag_records", "Records in a partition not yet processed", consumer_lag.clone());
        let assigned_partitions = Gauge::default();
        registry.register("assigned_partitions", "Partitions this host holds", assigned_partitions.clone());
        let state_snapshots = Counter::default();
        registry.register("state_snapshots", "Partition states written to the state topic", state_snapshots.clone());
        let state_restores = Counter::default();
        registry.register("state_restores", "Partition states restored from the state topic", state_restores.clone());
        Metrics {
            registry,
            records,
            records_done,
            decode_errors,
            dead_letters,
            batches,
            batch_duration,
            plugin_invocations,
            plugin_points,
            plugin_call_duration,
            plugin_failures,
            anomalies,
            detection_latency,
            consumer_lag,
            assigned_partitions,
            state_snapshots,
            state_restores,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
