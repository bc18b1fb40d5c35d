//! Replay outputs: a score row per input point, and anomalies as JSON lines.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, SecondsFormat};
use routewatch_telemetry::AnomalyEvent;

use super::ReplayError;
use crate::sink::{Delivery, Sink, SinkError};

/// Opens `path` for writing, or standard output for `-`.
pub fn create(path: &Path) -> Result<Box<dyn Write + Send>, ReplayError> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufWriter::new(std::io::stdout())));
    }
    let file = std::fs::File::create(path)
        .map_err(|source| ReplayError::Create { path: path.display().to_string(), source })?;
    Ok(Box::new(std::io::BufWriter::with_capacity(1 << 16, file)))
}

/// `timestamp,router,metric,value,<plugin>...`: one row per input point, a score column per
/// plugin (empty where the plugin produced none).
pub struct ScoreWriter {
    out: Box<dyn Write + Send>,
}

impl ScoreWriter {
    /// Writes the header: one score column per plugin label.
    pub fn new(mut out: Box<dyn Write + Send>, plugins: &[String]) -> std::io::Result<ScoreWriter> {
        write!(out, "timestamp,router,metric,value")?;
        for name in plugins {
            write!(out, ",{name}")?;
        }
        writeln!(out)?;
        Ok(ScoreWriter { out })
    }

    /// One point: its time, router, metric and value, and each plugin's score.
    pub fn row(
        &mut self,
        ts: i64,
        router: &str,
        metric: &str,
        value: f64,
        scores: impl Iterator<Item = Option<f32>>,
    ) -> std::io::Result<()> {
        write!(self.out, "{},{router},{metric},", format_ts(ts))?;
        if value.is_finite() {
            write!(self.out, "{value}")?;
        }
        for score in scores {
            match score {
                Some(s) => write!(self.out, ",{s}")?,
                None => write!(self.out, ",")?,
            }
        }
        writeln!(self.out)
    }
}

/// Anomalies as JSON lines.
pub struct AnomalyWriter {
    out: Box<dyn Write + Send>,
}

impl AnomalyWriter {
    /// Writes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> AnomalyWriter {
        AnomalyWriter { out }
    }

    /// Writes one anomaly.
    pub fn write(&mut self, event: &AnomalyEvent) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        writeln!(self.out)
    }
}

/// RFC 3339 in UTC with milliseconds; epoch milliseconds if out of chrono's range.
pub fn format_ts(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

impl Sink for ScoreWriter {
    fn name(&self) -> &'static str {
        "scores"
    }

    fn deliver(&mut self, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        let batch = delivery.input.batch();
        let columns = batch.columns.len();
        let plugins = delivery.processed.plugins();
        for row in 0..delivery.input.rows() {
            let router = &delivery.routers[batch.routers[row] as usize].name;
            for (c, column) in batch.columns.iter().enumerate() {
                let scores = (0..plugins).map(|p| delivery.processed.score(p, row, c, columns));
                self.row(batch.timestamps[row], router, &column.metric, column.values[row], scores)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(self.out.flush()?)
    }
}

impl Sink for AnomalyWriter {
    fn name(&self) -> &'static str {
        "anomalies"
    }

    fn deliver(&mut self, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        for event in &delivery.processed.events {
            self.write(event)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(self.out.flush()?)
    }
}
