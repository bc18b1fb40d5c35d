//! Where samples and ground truth go: Kafka, JSON-lines files, or nowhere (REST only).

mod file;
mod kafka;

pub use file::FileSink;
pub use kafka::{KafkaOptions, KafkaSink, ensure_topics};

use crate::changes::ChangeNotice;
use crate::encode::EncodedBatch;
use crate::faults::FaultNotice;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("writing {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka: {0} records not delivered before the flush timeout")]
    FlushTimeout(usize),
}

/// A destination for the simulation's output.
pub trait Sink: Send {
    /// One tick's records.
    fn records(&mut self, batch: &EncodedBatch) -> Result<(), SinkError>;
    /// Ground-truth changes (fault started, fault ended).
    fn faults(&mut self, notices: &[FaultNotice]) -> Result<(), SinkError>;
    /// Planned changes (scheduled, ended); the realistic profile makes them.
    fn changes(&mut self, notices: &[ChangeNotice]) -> Result<(), SinkError>;
    /// Makes everything written so far durable or delivered.
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// Drops everything: the simulator only serves REST and Prometheus.
#[derive(Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    fn records(&mut self, _: &EncodedBatch) -> Result<(), SinkError> {
        Ok(())
    }
    fn faults(&mut self, _: &[FaultNotice]) -> Result<(), SinkError> {
        Ok(())
    }
    fn changes(&mut self, _: &[ChangeNotice]) -> Result<(), SinkError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
