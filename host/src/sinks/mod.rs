//! Where a partition's batches go, in order. Every sink must take a batch before its offsets
//! may be committed (see `routewatch_engine::sink`): the Kafka sink first (anomalies, incident
//! updates and dead letters, acknowledged by the broker), then the REST feed, the incident
//! book, self-healing, then Prometheus.
//!
//! Adding a sink (incidents, alerting, a webhook) is a module here with a [`Factory`], and
//! its line in [`REGISTERED`]. Nothing else changes: workers build their sinks from that list.

pub mod feed;
pub mod healing;
pub mod incidents;
pub mod kafka;
pub mod prometheus;

use std::sync::Arc;

use routewatch_engine::Sink;

use crate::broker::PartitionOutput;
use crate::config::HostConfig;
use crate::feed::AnomalyFeed;
use crate::incidents::IncidentBook;
use crate::metrics::Metrics;

/// What a sink of one partition may use.
pub struct SinkContext<'a> {
    /// The host's configuration.
    pub config: &'a HostConfig,
    /// The host's metrics.
    pub metrics: &'a Arc<Metrics>,
    /// Recent anomalies, for the API.
    pub feed: &'a Arc<AnomalyFeed>,
    /// Recent incidents, for the API.
    pub incidents: &'a Arc<IncidentBook>,
    /// Where incidents are posted as alerts, if anywhere.
    pub alertmanager: Option<&'a Arc<crate::alertmanager::Alertmanager>>,
    /// Self-healing, if configured.
    pub healing: Option<&'a Arc<crate::healing::Healing>>,
    /// The partition.
    pub partition: i32,
    /// The partition's Kafka output (its producer, or its transaction).
    pub output: &'a Arc<PartitionOutput>,
}

/// Makes one partition's instance of a sink; `None` when the configuration leaves it out.
pub type Factory = fn(&SinkContext<'_>) -> Option<Box<dyn Sink>>;

/// Every sink, in the order a batch goes through them.
pub const REGISTERED: &[Factory] = &[kafka::open, feed::open, incidents::open, healing::open, prometheus::open];

/// The sinks of one partition.
pub fn build(context: &SinkContext<'_>) -> Vec<Box<dyn Sink>> {
    REGISTERED.iter().filter_map(|open| open(context)).collect()
}
