//! Where samples and ground truth go: Kafka, JSON-lines files, or nowhere (REST only).

mod file;
mod kafka;

pub use file::FileSink;
pub use kafka::{KafkaOptions, KafkaSink, ensure_topics};

use crate::actions::ActionNotice;
use crate::changes::ChangeNotice;
use crate::consequences::ConsequenceNotice;
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
    /// Consequences of faults left alone (started, ended).
    fn consequences(&mut self, notices: &[ConsequenceNotice]) -> Result<(), SinkError>;
    /// Remediation actions (requested, completed with their outcome).
    fn actions(&mut self, notices: &[ActionNotice]) -> Result<(), SinkError>;
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
    fn consequences(&mut self, _: &[ConsequenceNotice]) -> Result<(), SinkError> {
        Ok(())
    }
    fn actions(&mut self, _: &[ActionNotice]) -> Result<(), SinkError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
