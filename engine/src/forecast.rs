//! The forecast stage of a stream: each batch's values of the forecast metrics go to a
//! [`routewatch_incidents::ForecastStage`], which raises *predicted* incidents before a slow
//! fault does damage (memory about to run out, a chassis about to throttle). Its updates join
//! the router incident stage's in [`crate::Processed::incidents`], so that every incident sink
//! (Kafka, the REST book, Alertmanager) carries them without knowing where they came from.
//!
//! Like the incident stage, it is part of the stream's state (its snapshot rides under
//! [`STATE_NAME`]) and, after a restore, takes the already-delivered records again without
//! delivering their updates, so that it ends where the previous owner's stage was.

use std::collections::HashMap;
use std::sync::Arc;

use routewatch_incidents::{Change, ConfigError, ForecastConfig, ForecastStage, IncidentUpdate, Outcome, Sample};
use routewatch_runtime::Batch;

use crate::metrics::{MetricLabels, Metrics, PredictionLabels};
use crate::routers::RouterTable;

/// The name the stage's snapshot has among a stream's plugin states.
pub const STATE_NAME: &str = "stage:forecast";

/// One stream's forecasts.
pub struct Forecast {
    stage: ForecastStage,
    /// The target of each of the engine's columns, if it is forecast.
    targets: Vec<Option<usize>>,
    metrics: Arc<Metrics>,
    stream: i32,
    /// What this stage adds to `routewatch_predictions_open`, by incident id.
    counted: HashMap<String, String>,
}

impl Forecast {
    /// A stage of `config` for `stream`, whose batches have `columns`.
    pub fn new(
        config: ForecastConfig,
        columns: &[String],
        metrics: Arc<Metrics>,
        stream: i32,
    ) -> Result<Forecast, ConfigError> {
        let stage = ForecastStage::new(config)?;
        let targets = columns.iter().map(|c| stage.target(c)).collect();
        Ok(Forecast { stage, targets, metrics, stream, counted: HashMap::new() })
    }

    /// The stage (its open predictions, its configuration).
    pub fn stage(&self) -> &ForecastStage {
        &self.stage
    }

    /// The stage's state.
    pub fn snapshot(&self) -> Result<Vec<u8>, routewatch_incidents::SnapshotError> {
        self.stage.snapshot()
    }

    /// Continues from a snapshot; a refused one leaves the stage as it was.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), routewatch_incidents::SnapshotError> {
        self.stage = ForecastStage::restore(self.stage.config().clone(), bytes)?;
        self.count();
        Ok(())
    }

    /// Takes rows `rows` of `batch`, in row order (rows are in record order). With `deliver`,
    /// the updates are returned; without (records a previous owner delivered), the stage only
    /// catches up.
    pub fn take(
        &mut self,
        batch: &Batch,
        routers: &RouterTable,
        rows: std::ops::Range<usize>,
        deliver: bool,
    ) -> Vec<IncidentUpdate> {
        fn known(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        let mut updates = Vec::new();
        for row in rows {
            let router = routers.info(batch.routers[row]).expect("every row's router is in the table");
            for (column, target) in batch.columns.iter().zip(&self.targets) {
                let Some(target) = *target else { continue };
                let sample = Sample {
                    router: &router.name,
                    site: known(&router.site),
                    role: known(&router.role),
                    metric: &column.metric,
                    ts: batch.timestamps[row],
                    value: column.values[row],
                };
                if let Some(update) = self.stage.observe(target, sample)
                    && deliver
                {
                    updates.push(update);
                }
            }
        }
        for update in &updates {
            let metric = update.incident.metrics.first().cloned().unwrap_or_default();
            let reached = update.incident.prediction.as_ref().and_then(|p| p.outcome) == Some(Outcome::Reached);
            let change = match update.change {
                Change::Opened | Change::Reopened => "opened",
                Change::Updated => "updated",
                Change::Resolved if reached => "reached",
                Change::Resolved | Change::Withdrawn => "withdrawn",
            };
            self.metrics.predictions.get_or_create(&PredictionLabels { metric, change: change.into() }).inc();
        }
        self.count();
        updates
    }

    /// Brings `routewatch_predictions_open` in line with the stage's open predictions.
    fn count(&mut self) {
        let mut now: HashMap<String, String> =
            self.stage.open().map(|i| (i.id.clone(), i.metrics.first().cloned().unwrap_or_default())).collect();
        for (id, metric) in &self.counted {
            if !now.contains_key(id) {
                self.metrics.predictions_open.get_or_create(&MetricLabels { metric: metric.clone() }).dec();
            }
        }
        for (id, metric) in &now {
            if !self.counted.contains_key(id) {
                self.metrics.predictions_open.get_or_create(&MetricLabels { metric: metric.clone() }).inc();
            }
        }
        std::mem::swap(&mut self.counted, &mut now);
    }

    /// The stream leaves this host: its predictions are no longer counted here.
    pub fn leave(&mut self) {
        for metric in self.counted.values() {
            self.metrics.predictions_open.get_or_create(&MetricLabels { metric: metric.clone() }).dec();
        }
        self.counted.clear();
        tracing::debug!(stream = self.stream, "forecast stage left");
    }
}
