//! Incidents: each acknowledged batch's incident updates (made by the partition's incident
//! stage, `routewatch_engine::incidents`, and already written to `router-incidents` by the
//! Kafka sink in the batch's own delivery) go to the host's [`IncidentBook`] for the API and
//! the demo, are counted, and are queued for Alertmanager (never waiting for it). The stage's state is the partition's, so nothing here needs
//! saving: after a crash the next owner's stage makes the same updates again.

use std::sync::Arc;

use routewatch_engine::{Delivery, Sink, SinkError};
use routewatch_incidents::Change;

use super::SinkContext;
use crate::alertmanager::Alertmanager;
use crate::incidents::IncidentBook;
use crate::metrics::Metrics;

/// Publishes each batch's incident updates.
pub struct IncidentSink {
    book: Arc<IncidentBook>,
    metrics: Arc<Metrics>,
    alertmanager: Option<Arc<Alertmanager>>,
    partition: i32,
}

/// The incidents sink of a partition; none when incidents are off.
pub fn open(context: &SinkContext<'_>) -> Option<Box<dyn Sink>> {
    context.config.incidents.then(|| {
        Box::new(IncidentSink {
            book: context.incidents.clone(),
            metrics: context.metrics.clone(),
            alertmanager: context.alertmanager.cloned(),
            partition: context.partition,
        }) as Box<dyn Sink>
    })
}

impl Sink for IncidentSink {
    fn name(&self) -> &'static str {
        "incidents"
    }

    fn deliver(&mut self, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        let updates = &delivery.processed.incidents;
        // Predicted incidents are counted by the forecast stage (`routewatch_predictions_total`).
        for update in updates.iter().filter(|u| u.incident.prediction.is_none()) {
            let counter = match update.change {
                Change::Opened => &self.metrics.incidents_opened,
                Change::Reopened => &self.metrics.incidents_reopened,
                Change::Resolved => &self.metrics.incidents_resolved,
                Change::Updated | Change::Withdrawn => continue,
            };
            counter.inc();
        }
        self.book.publish(self.partition, updates);
        if let Some(alertmanager) = &self.alertmanager {
            alertmanager.post(&updates.iter().map(|u| &u.incident).collect::<Vec<_>>());
        }
        Ok(())
    }
}
