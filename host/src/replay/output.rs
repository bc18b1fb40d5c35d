//! Replay outputs: a score row per input point, and anomalies as JSON lines.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, SecondsFormat};
use routewatch_telemetry::AnomalyEvent;

/// Opens `path` for writing, or standard output for `-`.
pub fn create(path: &Path) -> anyhow::Result<Box<dyn Write>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufWriter::new(std::io::stdout())));
    }
    let file = std::fs::File::create(path).map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
    Ok(Box::new(std::io::BufWriter::with_capacity(1 << 16, file)))
}

/// `timestamp,router,metric,value,<plugin>...`: one row per input point, a score column per
/// plugin (empty where the plugin produced none).
pub struct ScoreWriter {
    out: Box<dyn Write>,
}

impl ScoreWriter {
    pub fn new(mut out: Box<dyn Write>, plugins: &[String]) -> anyhow::Result<ScoreWriter> {
        write!(out, "timestamp,router,metric,value")?;
        for name in plugins {
            write!(out, ",{name}")?;
        }
        writeln!(out)?;
        Ok(ScoreWriter { out })
    }

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

    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

pub struct AnomalyWriter {
    out: Box<dyn Write>,
}

impl AnomalyWriter {
    pub fn new(out: Box<dyn Write>) -> AnomalyWriter {
        AnomalyWriter { out }
    }

    pub fn write(&mut self, event: &AnomalyEvent) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        writeln!(self.out)
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// RFC 3339 in UTC with milliseconds; epoch milliseconds if out of chrono's range.
pub fn format_ts(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}
