//! Where a batch's outcome goes. Each sink takes every batch, in order, and returns once the
//! batch is safe with it; a batch counts as acknowledged (and its source position may be
//! committed) only once every sink has returned. A sink that fails stops the batch there:
//! nothing is committed, and the records are processed again (at-least-once).
//!
//! Sinks today: anomalies and dead letters to Kafka, the REST feed and Prometheus (in the
//! host binary), score and anomaly files ([`crate::replay`]). A new stage (incidents,
//! alerting, remediation) is a type implementing [`Sink`] plus its registration where the
//! driver builds its sinks.

use std::time::Instant;

use crate::batch::Input;
use crate::engine::Processed;
use crate::state::RouterInfo;

/// A batch's outcome, as every sink sees it.
pub struct Delivery<'a> {
    /// The stream (Kafka partition) the batch came from.
    pub stream: i32,
    /// The batch: rows, where each came from, and the records that were rejected.
    pub input: &'a Input,
    /// What the plugins made of it.
    pub processed: &'a Processed,
    /// The stream's routers, by id (a row's router is `input.batch().routers[row]`).
    pub routers: &'a [RouterInfo],
    /// When processing began.
    pub started: Instant,
}

/// Why a sink did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The sink can take nothing more from this stream (a fenced Kafka producer: the stream
    /// has another owner).
    #[error("{0}")]
    Closed(String),
}

/// Where batches go.
pub trait Sink: Send {
    /// A short name, for logs.
    fn name(&self) -> &'static str;

    /// Takes a batch's outcome and returns once it is safe (written, acknowledged by the
    /// broker, ...).
    fn deliver(&mut self, delivery: &Delivery<'_>) -> Result<(), SinkError>;

    /// Flushes what the sink buffers; called once, after the last batch.
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Why a step did not go through.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The source could not go on.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// A sink did not take the batch.
    #[error("sink {sink}: {source}")]
    Sink {
        /// The sink's name.
        sink: &'static str,
        /// Why.
        source: SinkError,
    },
}
