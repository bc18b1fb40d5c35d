//! Kafka: anomalies to the anomalies topic, incident updates to the (compacted) incidents
//! topic keyed by incident id and, for the site stage ([`crate::kafka::sites`]), to the site
//! topic keyed by site (or role), and dead letters (records that do not decode, and poison
//! records) to the dead-letter topic, acknowledged by the broker before the batch is;
//! exactly-once, all in the partition's one transaction together with its next offset.

use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};
use routewatch_engine::{Delivery, Position, Sink, SinkError};
use routewatch_incidents::{GroupBy, IncidentUpdate, SiteStage};

use super::SinkContext;
use crate::broker::{Outgoing, PartitionOutput};
use crate::metrics::{Metrics, ReasonLabels};

/// A partition's anomalies and dead letters.
pub struct KafkaSink {
    output: Arc<PartitionOutput>,
    metrics: Arc<Metrics>,
    anomalies_topic: String,
    dlq_topic: String,
    metrics_topic: String,
    incidents_topic: String,
    /// The site topic and what it is keyed by, when this host runs the site stage.
    sites: Option<(String, GroupBy)>,
    partition: i32,
}

/// The Kafka sink of a partition.
pub fn open(context: &SinkContext<'_>) -> Option<Box<dyn Sink>> {
    let config = context.config;
    Some(Box::new(KafkaSink {
        output: context.output.clone(),
        metrics: context.metrics.clone(),
        anomalies_topic: config.anomalies_topic.clone(),
        dlq_topic: config.dlq_topic.clone(),
        metrics_topic: config.metrics_topic.clone(),
        incidents_topic: config.incidents_topic.clone(),
        sites: config.runs_sites().then(|| (config.site_topic.clone(), config.site_config.group_by)),
        partition: context.partition,
    }))
}

impl KafkaSink {
    /// The record at `position`, to the dead-letter topic with why in its headers.
    fn letter(
        &self,
        delivery: &Delivery<'_>,
        position: Position,
        reason: &str,
        message: &str,
        plugin: Option<&str>,
    ) -> Outgoing {
        self.metrics.dead_letters.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
        let source = format!("{}/{}/{position}", self.metrics_topic, self.partition);
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: "routewatch-error", value: Some(message.as_bytes()) })
            .insert(Header { key: "routewatch-error-kind", value: Some(reason.as_bytes()) })
            .insert(Header { key: "routewatch-source", value: Some(source.as_bytes()) });
        if let Some(plugin) = plugin {
            headers = headers.insert(Header { key: "routewatch-plugin", value: Some(plugin.as_bytes()) });
        }
        let raw = delivery.input.raw(position);
        Outgoing {
            topic: self.dlq_topic.clone(),
            key: raw.and_then(|r| r.key.clone()),
            payload: raw.and_then(|r| r.payload.clone()),
            headers: Some(headers),
        }
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn deliver(&mut self, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        let mut outgoing = Vec::new();
        for rejected in delivery.input.rejected() {
            outgoing.push(self.letter(delivery, rejected.position, rejected.reason, &rejected.message, None));
        }
        for poison in &delivery.processed.poison {
            outgoing.push(self.letter(delivery, poison.position, poison.reason, &poison.message, Some(&poison.plugin)));
        }
        outgoing.extend(delivery.processed.events.iter().map(|event| Outgoing {
            topic: self.anomalies_topic.clone(),
            key: Some(event.router.clone().into_bytes()),
            payload: Some(serde_json::to_vec(event).expect("an anomaly always serialises")),
            headers: None,
        }));
        outgoing.extend(delivery.processed.incidents.iter().map(|update| Outgoing {
            topic: self.incidents_topic.clone(),
            key: Some(update.incident.id.clone().into_bytes()),
            payload: Some(serde_json::to_vec(update).expect("an incident always serialises")),
            headers: None,
        }));
        if let Some((topic, group_by)) = &self.sites {
            // Predictions are no router in trouble, and an incident without a site has no group.
            outgoing.extend(
                delivery.processed.incidents.iter().filter(|u| u.incident.prediction.is_none()).filter_map(|update| {
                    let key = SiteStage::key(*group_by, &update.incident)?;
                    // The site stage needs no features (the incidents topic carries them).
                    let update = IncidentUpdate::new(update.change, update.incident.clone());
                    Some(Outgoing {
                        topic: topic.clone(),
                        key: Some(key.as_bytes().to_vec()),
                        payload: Some(serde_json::to_vec(&update).expect("an incident always serialises")),
                        headers: None,
                    })
                }),
            );
        }
        let next = delivery.input.end().expect("a delivered batch has records");
        if self.output.deliver(outgoing, next) {
            Ok(())
        } else {
            Err(SinkError::Closed(format!("partition {}: the transactional producer is fenced", self.partition)))
        }
    }
}
