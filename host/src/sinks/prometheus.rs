//! Prometheus: what a batch's acknowledgement means for the metrics (records done, detection
//! latency, batch duration). Last, so that it counts only what every other sink took.

use std::sync::Arc;

use routewatch_engine::{Delivery, Sink, SinkError, now_ms};

use super::SinkContext;
use crate::metrics::Metrics;

/// Counts acknowledged batches.
pub struct PrometheusSink {
    metrics: Arc<Metrics>,
}

/// The Prometheus sink of a partition.
pub fn open(context: &SinkContext<'_>) -> Option<Box<dyn Sink>> {
    Some(Box::new(PrometheusSink { metrics: context.metrics.clone() }))
}

impl Sink for PrometheusSink {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn deliver(&mut self, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        self.metrics.records_done.inc_by(delivery.input.records() as u64);
        let acknowledged = now_ms();
        for event in &delivery.processed.events {
            self.metrics.detection_latency.observe((acknowledged - event.ts).max(0) as f64 / 1000.0);
        }
        self.metrics.batch_duration.observe(delivery.started.elapsed().as_secs_f64());
        Ok(())
    }
}
