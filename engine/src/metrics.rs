//! The host's Prometheus metrics. Labels stay bounded: plugin names, anomaly
//! kinds, decode-error kinds and partition numbers, never routers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A plugin version.
pub struct PluginLabels {
    /// The plugin's name.
    pub plugin: String,
    /// Its version.
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A plugin version and an anomaly kind.
pub struct AnomalyLabels {
    /// The plugin's name.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// The anomaly kind's wire name.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A plugin version and how its call failed.
pub struct TrapLabels {
    /// The plugin's name.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// The failure's kind (see `CallError::kind_label`).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// Why a record was refused.
pub struct ReasonLabels {
    /// A short reason (`malformed`, `plugin_trap`, ...).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A self-healing policy and what became of one of its actions.
pub struct ActionLabels {
    /// The policy's name.
    pub policy: String,
    /// The action's status (`suggested`, `proposed`, `executed`, `refused`, ...).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A self-healing policy and why one of its actions was refused.
pub struct RefusalLabels {
    /// The policy's name.
    pub policy: String,
    /// The guard rail (`low-confidence`, `site-rate-limit`, `blast-radius`, `cooldown`, `circuit-open`).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A stage of a partition worker's batch.
pub struct StageLabels {
    /// One of [`Stage`]'s names.
    pub stage: Stage,
}

/// Where a worker's CPU goes, batch by batch (`routewatch_stage_cpu_seconds_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Stage {
    /// Parsing records (JSON) into values.
    decode,
    /// Taking records from the source and adding them to the batch's columns.
    batch,
    /// Plugin calls, with moving the batch in and the outputs out of the sandbox.
    plugin,
    /// Building events and incidents and handing them to every sink until acknowledged.
    output,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A plugin version and one of its states.
pub struct StateLabels {
    /// The plugin's name.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// One of `registry::STATES`.
    pub state: String,
}

impl Metrics {
    /// Adds `spent` to `stage`'s CPU time.
    pub fn add_stage_cpu(&self, stage: Stage, spent: std::time::Duration) {
        self.stage_cpu.get_or_create(&StageLabels { stage }).inc_by(spent.as_secs_f64());
    }

    /// CPU seconds spent so far in `stage`.
    pub fn stage_cpu_seconds(&self, stage: Stage) -> f64 {
        self.stage_cpu.get_or_create(&StageLabels { stage }).get()
    }
}

impl StateLabels {
    /// Labels for `plugin` at `version` in `state`.
    pub fn new(plugin: &str, version: &str, state: &str) -> StateLabels {
        StateLabels { plugin: plugin.into(), version: version.into(), state: state.into() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A plugin, whatever its version.
pub struct NameLabels {
    /// The plugin's name.
    pub plugin: String,
}

impl NameLabels {
    /// Labels for `plugin`.
    pub fn new(plugin: &str) -> NameLabels {
        NameLabels { plugin: plugin.into() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A site and a router role.
pub struct SiteLabels {
    /// The site.
    pub site: String,
    /// The role.
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// An open incident's site, probable cause and severity (bounded: sites, the classifier's
/// causes plus `unknown` and `unclassified`, three severities).
pub struct IncidentLabels {
    /// The site (empty when the records do not say).
    pub site: String,
    /// The classifier's verdict, `unknown`, or `unclassified` before it has spoken.
    pub cause: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A forecast metric and what happened to a predicted incident of it (bounded: the forecast
/// targets, four changes).
pub struct PredictionLabels {
    /// The forecast metric.
    pub metric: String,
    /// `opened`, `updated`, `reached` or `withdrawn`.
    pub change: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A forecast metric.
pub struct MetricLabels {
    /// The forecast metric.
    pub metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A router.
pub struct RouterLabels {
    /// The router's name.
    pub router: String,
    /// Its site.
    pub site: String,
}

/// Routers with a series in `routewatch_router_anomalies_total`; past this many, anomalies of
/// further routers are counted by site only (a fleet-wide outage must not explode the series).
pub const MAX_ROUTER_SERIES: usize = 5000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// A partition.
pub struct PartitionLabels {
    /// Its number.
    pub partition: String,
}

/// Every metric a host exports.
pub struct Metrics {
    /// The Prometheus registry every metric is in (see [`Metrics::encode`]).
    pub registry: Registry,
    /// `routewatch_records`: Records consumed from the metrics topic.
    pub records: Counter,
    /// `routewatch_records_done`: Records fully handled: their anomalies and dead letters acknowledged by the broker.
    pub records_done: Counter,
    /// `routewatch_decode_errors`: Records that failed to decode or validate, by reason.
    pub decode_errors: Family<ReasonLabels, Counter>,
    /// `routewatch_stage_cpu`: CPU time of the workers' batches, by stage (decode is timed per
    /// record by the wall clock, a pure computation; the rest by the thread's CPU clock per batch).
    pub stage_cpu: Family<StageLabels, Counter<f64>>,
    /// `routewatch_dead_letters`: Records sent to the dead-letter topic, by reason (a decode error kind, or plugin_trap).
    pub dead_letters: Family<ReasonLabels, Counter>,
    /// `routewatch_batches`: Batches handed to the detectors.
    pub batches: Counter,
    /// `routewatch_batch_duration`: Time from a batch's first record to its anomalies being acknowledged.
    pub batch_duration: Histogram,
    /// `routewatch_plugin_invocations`: Calls of a plugin's process.
    pub plugin_invocations: Family<PluginLabels, Counter>,
    /// `routewatch_plugin_points`: Points scored by a plugin.
    pub plugin_points: Family<PluginLabels, Counter>,
    /// `routewatch_plugin_call_duration`: Duration of one process call.
    pub plugin_call_duration: Family<PluginLabels, Histogram>,
    /// `routewatch_plugin_cpu`: CPU time spent inside a plugin's calls.
    pub plugin_cpu: Family<PluginLabels, Counter<f64>>,
    /// `routewatch_plugin_memory_high_water`: Largest linear memory any instance of a plugin has asked for.
    pub plugin_memory_high_water: Family<PluginLabels, Gauge>,
    /// `routewatch_plugin_traps`: Failed plugin calls, by kind (cpu_budget, memory_limit, panic, stack_overflow, fault, other, \ invalid_output, plugin_error).
    pub plugin_traps: Family<TrapLabels, Counter>,
    /// `routewatch_plugin_poison_records`: Records isolated as the cause of a plugin's trap and sent to the dead-letter topic.
    pub plugin_poison_records: Family<PluginLabels, Counter>,
    /// `routewatch_plugin_reloads`: New versions of a plugin installed (labels: the new one).
    pub plugin_reloads: Family<PluginLabels, Counter>,
    /// `routewatch_plugin_reload_failures`: Partitions where a new version refused the old one's state (the old one kept running there).
    pub plugin_reload_failures: Family<NameLabels, Counter>,
    /// `routewatch_plugin_load_failures`: Plugin files that failed to load (not a component, wrong world, refused configuration...).
    pub plugin_load_failures: Counter,
    /// `routewatch_plugin_quarantines`: Times a failing plugin was quarantined.
    pub plugin_quarantines: Family<PluginLabels, Counter>,
    /// `routewatch_plugin_state`: 1 for a plugin's current state (running, quarantined, disabled), 0 for the others.
    pub plugin_state: Family<StateLabels, Gauge>,
    /// `routewatch_plugin_swap_pause`: Time a partition stopped to hand a plugin's state to its new version.
    pub plugin_swap_pause: Family<PluginLabels, Histogram>,
    /// `routewatch_plugin_partitions`: Partitions of this host that run this version of the plugin (a new version refused on some \ partitions shows beside the old one).
    pub plugin_partitions: Family<PluginLabels, Gauge>,
    /// `routewatch_plugin_restore_failures`: Saved states a plugin refused to restore (it started without them).
    pub plugin_restore_failures: Family<PluginLabels, Counter>,
    /// `routewatch_plugin_takeovers`: Plugins replaced by a component from another source (an explicit replace, audited in the log).
    pub plugin_takeovers: Family<NameLabels, Counter>,
    /// `routewatch_anomalies`: Anomalies produced, by plugin and kind.
    pub anomalies: Family<AnomalyLabels, Counter>,
    /// `routewatch_site_anomalies`: Anomalies produced, by site and router role.
    pub site_anomalies: Family<SiteLabels, Counter>,
    /// `routewatch_router_anomalies`: Anomalies produced, by router (only routers that had one, at most 5000 series).
    pub router_anomalies: Family<RouterLabels, Counter>,
    /// `routewatch_detection_latency`: Time from a record's event time to its anomaly being acknowledged by the broker.
    pub detection_latency: Histogram,
    /// `routewatch_consumer_lag_records`: Records in a partition not yet processed.
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// `routewatch_partition_pauses`: Times a partition's fetching was paused because its worker was behind (the others go on).
    pub partition_pauses: Counter,
    /// `routewatch_assigned_partitions`: Partitions this host holds.
    pub assigned_partitions: Gauge,
    /// `routewatch_state_snapshots`: Partition states written to the state topic.
    pub state_snapshots: Counter,
    /// `routewatch_state_restores`: Partition states restored from the state topic.
    pub state_restores: Counter,
    /// `routewatch_state_save_failures`: Partition state saves the broker did not take in time (tried again at the next interval).
    pub state_save_failures: Counter,
    /// `routewatch_state_unsaved_partitions`: Partitions whose last state save failed (/readyz answers 503 while any is).
    pub state_unsaved_partitions: Gauge,
    /// `routewatch_state`: Size of each partition's last saved state.
    pub state_bytes: Family<PartitionLabels, Gauge>,
    /// `routewatch_plugin_oversized_snapshots`: Snapshots over max_snapshot_mib, refused (each counts as a failure of the plugin).
    pub plugin_oversized_snapshots: Family<PluginLabels, Counter>,
    /// `routewatch_incidents_open`: Open router incidents held by this host's partitions, by site, cause and severity.
    pub incidents_open: Family<IncidentLabels, Gauge>,
    /// `routewatch_incidents_opened_total`: Router incidents opened (acknowledged by every sink).
    pub incidents_opened: Counter,
    /// `routewatch_incidents_reopened_total`: Router incidents reopened within their reopen period.
    pub incidents_reopened: Counter,
    /// `routewatch_incidents_resolved_total`: Router incidents resolved after their quiet period.
    pub incidents_resolved: Counter,
    /// `routewatch_site_incidents_open`: Open site incidents held by this host's partitions of the site topic.
    pub site_incidents_open: Gauge,
    /// `routewatch_site_incidents_opened_total`: Site incidents opened.
    pub site_incidents_opened: Counter,
    /// `routewatch_site_incidents_resolved_total`: Site incidents resolved (every router incident in them resolved).
    pub site_incidents_resolved: Counter,
    /// `routewatch_site_incidents_reopened_total`: Site incidents reopened because one of their router incidents reopened.
    pub site_incidents_reopened: Counter,
    /// `routewatch_site_records_rejected_total`: Records of the site topic that were not router incident updates, by reason (skipped).
    pub site_records_rejected: Family<ReasonLabels, Counter>,
    /// `routewatch_classifier_failures_total`: Classifier calls that failed (the incidents keep their previous cause).
    pub classifier_failures: Counter,
    /// `routewatch_predictions_open`: Open predicted incidents held by this host's partitions, by metric.
    pub predictions_open: Family<MetricLabels, Gauge>,
    /// `routewatch_predictions_total`: Predicted incidents by metric and change (opened, updated, reached, withdrawn).
    pub predictions: Family<PredictionLabels, Counter>,
    /// `routewatch_alertmanager_alerts_sent_total`: Incident alerts an Alertmanager accepted.
    pub alertmanager_sent: Counter,
    /// `routewatch_actions_total`: Self-healing action records, by policy and outcome (each change of an action counts once).
    pub actions: Family<ActionLabels, Counter>,
    /// `routewatch_action_refusals_total`: Self-healing actions refused, by policy and guard rail.
    pub action_refusals: Family<RefusalLabels, Counter>,
    /// `routewatch_alertmanager_send_failures_total`: Requests to an Alertmanager that failed after every attempt.
    pub alertmanager_failures: Counter,
    /// `routewatch_alertmanager_alerts_dropped_total`: Incident alerts dropped because too many were waiting.
    pub alertmanager_dropped: Counter,
    router_series: std::sync::atomic::AtomicUsize,
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
        let stage_cpu = Family::<StageLabels, Counter<f64>>::default();
        registry.register_with_unit(
            "stage_cpu",
            "CPU time of the workers' batches, by stage (decode, batch, plugin, output)",
            prometheus_client::registry::Unit::Seconds,
            stage_cpu.clone(),
        );
        let decode_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "decode_errors",
            "Records that failed to decode or validate, by reason",
            decode_errors.clone(),
        );
        let dead_letters = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dead_letters",
            "Records sent to the dead-letter topic, by reason (a decode error kind, or plugin_trap)",
            dead_letters.clone(),
        );
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
        let plugin_cpu = Family::<PluginLabels, Counter<f64>>::default();
        registry.register_with_unit(
            "plugin_cpu",
            "CPU time spent inside a plugin's calls",
            prometheus_client::registry::Unit::Seconds,
            plugin_cpu.clone(),
        );
        let plugin_memory_high_water = Family::<PluginLabels, Gauge>::default();
        registry.register_with_unit(
            "plugin_memory_high_water",
            "Largest linear memory any instance of a plugin has asked for",
            prometheus_client::registry::Unit::Bytes,
            plugin_memory_high_water.clone(),
        );
        let plugin_traps = Family::<TrapLabels, Counter>::default();
        registry.register(
            "plugin_traps",
            "Failed plugin calls, by kind (cpu_budget, memory_limit, panic, stack_overflow, fault, other, \
             invalid_output, plugin_error)",
            plugin_traps.clone(),
        );
        let plugin_poison_records = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_poison_records",
            "Records isolated as the cause of a plugin's trap and sent to the dead-letter topic",
            plugin_poison_records.clone(),
        );
        let plugin_reloads = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_reloads",
            "New versions of a plugin installed (labels: the new one)",
            plugin_reloads.clone(),
        );
        let plugin_reload_failures = Family::<NameLabels, Counter>::default();
        registry.register(
            "plugin_reload_failures",
            "Partitions where a new version refused the old one's state (the old one kept running there)",
            plugin_reload_failures.clone(),
        );
        let plugin_load_failures = Counter::default();
        registry.register(
            "plugin_load_failures",
            "Plugin files that failed to load (not a component, wrong world, refused configuration...)",
            plugin_load_failures.clone(),
        );
        let plugin_quarantines = Family::<PluginLabels, Counter>::default();
        registry.register("plugin_quarantines", "Times a failing plugin was quarantined", plugin_quarantines.clone());
        let plugin_state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "plugin_state",
            "1 for a plugin's current state (running, quarantined, disabled), 0 for the others",
            plugin_state.clone(),
        );
        let plugin_swap_pause =
            Family::<PluginLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register_with_unit(
            "plugin_swap_pause",
            "Time a partition stopped to hand a plugin's state to its new version",
            prometheus_client::registry::Unit::Seconds,
            plugin_swap_pause.clone(),
        );
        let plugin_partitions = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_partitions",
            "Partitions of this host that run this version of the plugin (a new version refused on some \
             partitions shows beside the old one)",
            plugin_partitions.clone(),
        );
        let plugin_restore_failures = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_restore_failures",
            "Saved states a plugin refused to restore (it started without them)",
            plugin_restore_failures.clone(),
        );
        let plugin_takeovers = Family::<NameLabels, Counter>::default();
        registry.register(
            "plugin_takeovers",
            "Plugins replaced by a component from another source (an explicit replace, audited in the log)",
            plugin_takeovers.clone(),
        );
        let anomalies = Family::<AnomalyLabels, Counter>::default();
        registry.register("anomalies", "Anomalies produced, by plugin and kind", anomalies.clone());
        let incidents_open = Family::<IncidentLabels, Gauge>::default();
        registry.register(
            "incidents_open",
            "Open router incidents held by this host's partitions, by site, cause and severity",
            incidents_open.clone(),
        );
        let incidents_opened = Counter::default();
        registry.register("incidents_opened", "Router incidents opened", incidents_opened.clone());
        let incidents_reopened = Counter::default();
        registry.register(
            "incidents_reopened",
            "Router incidents reopened within their reopen period",
            incidents_reopened.clone(),
        );
        let incidents_resolved = Counter::default();
        registry.register(
            "incidents_resolved",
            "Router incidents resolved after their quiet period",
            incidents_resolved.clone(),
        );
        let site_incidents_open = Gauge::default();
        registry.register(
            "site_incidents_open",
            "Open site incidents held by this host's partitions of the site topic",
            site_incidents_open.clone(),
        );
        let site_incidents_opened = Counter::default();
        registry.register("site_incidents_opened", "Site incidents opened", site_incidents_opened.clone());
        let site_incidents_resolved = Counter::default();
        registry.register(
            "site_incidents_resolved",
            "Site incidents resolved (every router incident in them resolved)",
            site_incidents_resolved.clone(),
        );
        let site_incidents_reopened = Counter::default();
        registry.register(
            "site_incidents_reopened",
            "Site incidents reopened because one of their router incidents reopened",
            site_incidents_reopened.clone(),
        );
        let site_records_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "site_records_rejected",
            "Records of the site topic that were not router incident updates, by reason (skipped)",
            site_records_rejected.clone(),
        );
        let classifier_failures = Counter::default();
        registry.register(
            "classifier_failures",
            "Classifier calls that failed (the incidents keep their previous cause)",
            classifier_failures.clone(),
        );
        let predictions_open = Family::<MetricLabels, Gauge>::default();
        registry.register(
            "predictions_open",
            "Open predicted incidents held by this host's partitions, by metric",
            predictions_open.clone(),
        );
        let predictions = Family::<PredictionLabels, Counter>::default();
        registry.register(
            "predictions",
            "Predicted incidents by metric and change (opened, updated, reached, withdrawn)",
            predictions.clone(),
        );
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "actions",
            "Self-healing action records, by policy and outcome (each change of an action counts once)",
            actions.clone(),
        );
        let action_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "action_refusals",
            "Self-healing actions refused, by policy and guard rail",
            action_refusals.clone(),
        );
        let alertmanager_sent = Counter::default();
        registry.register(
            "alertmanager_alerts_sent",
            "Incident alerts an Alertmanager accepted",
            alertmanager_sent.clone(),
        );
        let alertmanager_failures = Counter::default();
        registry.register(
            "alertmanager_send_failures",
            "Requests to an Alertmanager that failed after every attempt",
            alertmanager_failures.clone(),
        );
        let alertmanager_dropped = Counter::default();
        registry.register(
            "alertmanager_alerts_dropped",
            "Incident alerts dropped because too many were waiting",
            alertmanager_dropped.clone(),
        );
        let site_anomalies = Family::<SiteLabels, Counter>::default();
        registry.register("site_anomalies", "Anomalies produced, by site and router role", site_anomalies.clone());
        let router_anomalies = Family::<RouterLabels, Counter>::default();
        registry.register(
            "router_anomalies",
            "Anomalies produced, by router (only routers that had one, at most 5000 series)",
            router_anomalies.clone(),
        );
        let detection_latency = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "detection_latency",
            "Time from a record's event time to its anomaly being acknowledged by the broker",
            prometheus_client::registry::Unit::Seconds,
            detection_latency.clone(),
        );
        let consumer_lag = Family::<PartitionLabels, Gauge>::default();
        registry.register("consumer_lag_records", "Records in a partition not yet processed", consumer_lag.clone());
        let partition_pauses = Counter::default();
        registry.register(
            "partition_pauses",
            "Times a partition's fetching was paused because its worker was behind (the others go on)",
            partition_pauses.clone(),
        );
        let assigned_partitions = Gauge::default();
        registry.register("assigned_partitions", "Partitions this host holds", assigned_partitions.clone());
        let state_snapshots = Counter::default();
        registry.register("state_snapshots", "Partition states written to the state topic", state_snapshots.clone());
        let state_restores = Counter::default();
        registry.register("state_restores", "Partition states restored from the state topic", state_restores.clone());
        let state_save_failures = Counter::default();
        registry.register(
            "state_save_failures",
            "Partition state saves the broker did not take in time (tried again at the next interval)",
            state_save_failures.clone(),
        );
        let state_unsaved_partitions = Gauge::default();
        registry.register(
            "state_unsaved_partitions",
            "Partitions whose last state save failed (/readyz answers 503 while any is)",
            state_unsaved_partitions.clone(),
        );
        let state_bytes = Family::<PartitionLabels, Gauge>::default();
        registry.register_with_unit(
            "state",
            "Size of each partition's last saved state",
            prometheus_client::registry::Unit::Bytes,
            state_bytes.clone(),
        );
        let plugin_oversized_snapshots = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_oversized_snapshots",
            "Snapshots over max_snapshot_mib, refused (each counts as a failure of the plugin)",
            plugin_oversized_snapshots.clone(),
        );
        Metrics {
            registry,
            records,
            records_done,
            decode_errors,
            stage_cpu,
            dead_letters,
            batches,
            batch_duration,
            plugin_invocations,
            plugin_points,
            plugin_call_duration,
            plugin_cpu,
            plugin_memory_high_water,
            plugin_traps,
            plugin_poison_records,
            plugin_reloads,
            plugin_reload_failures,
            plugin_load_failures,
            plugin_quarantines,
            plugin_state,
            plugin_swap_pause,
            plugin_partitions,
            plugin_restore_failures,
            plugin_takeovers,
            anomalies,
            site_anomalies,
            router_anomalies,
            detection_latency,
            consumer_lag,
            partition_pauses,
            assigned_partitions,
            state_snapshots,
            state_restores,
            state_save_failures,
            state_unsaved_partitions,
            state_bytes,
            plugin_oversized_snapshots,
            incidents_open,
            incidents_opened,
            incidents_reopened,
            incidents_resolved,
            site_incidents_open,
            site_incidents_opened,
            site_incidents_reopened,
            site_incidents_resolved,
            site_records_rejected,
            classifier_failures,
            predictions_open,
            predictions,
            alertmanager_sent,
            actions,
            action_refusals,
            alertmanager_failures,
            alertmanager_dropped,
            router_series: Default::default(),
        }
    }
}

impl Metrics {
    /// Counts an anomaly by site and, within [`MAX_ROUTER_SERIES`], by router.
    pub fn count_router_anomaly(&self, router: &str, site: &str, role: &str) {
        self.site_anomalies.get_or_create(&SiteLabels { site: site.into(), role: role.into() }).inc();
        let labels = RouterLabels { router: router.into(), site: site.into() };
        // The family cannot tell its size, so the series are counted beside it; two threads
        // racing past the cap add a series or two, which is harmless.
        if self.router_series.load(std::sync::atomic::Ordering::Relaxed) < MAX_ROUTER_SERIES {
            let before = self.router_anomalies.get(&labels).is_some();
            self.router_anomalies.get_or_create(&labels).inc();
            if !before {
                self.router_series.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        } else if let Some(counter) = self.router_anomalies.get(&labels) {
            counter.inc();
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
