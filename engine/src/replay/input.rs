//! Replay inputs: a single-series CSV or the simulator's JSON lines, read as rows.

use std::io::BufRead;
use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use routewatch_telemetry::{MAX_RECORD_BYTES, Metric, Record};

use super::ReplayError;

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// Decide by the file extension: `.csv` is CSV, anything else JSON lines.
    Auto,
    /// One series: a `timestamp,value` header, then one row per sample.
    Csv,
    /// Telemetry records, one JSON object per line, as the simulator writes them.
    Jsonl,
}

impl InputFormat {
    /// The format of `path`: `Auto` decided by its extension.
    pub fn resolve(self, path: &Path) -> InputFormat {
        match self {
            InputFormat::Auto if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) => InputFormat::Csv,
            InputFormat::Auto => InputFormat::Jsonl,
            other => other,
        }
    }
}

/// One input row: a router's sample at one time, with a value per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The router.
    pub router: String,
    /// Its site, if the input says.
    pub site: Option<String>,
    /// Its role, if the input says.
    pub role: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// One value per column of the input (see [`RowReader::columns`]).
    pub values: Vec<f64>,
}

/// A row that could not be read, with where it was.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {reason}")]
pub struct BadRow {
    /// The input file.
    pub path: String,
    /// The line (1-based).
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

/// Reads rows from a replay input.
pub enum RowReader {
    /// A single-series CSV.
    Csv {
        /// The input file.
        path: String,
        /// The CSV reader.
        reader: csv::Reader<Box<dyn std::io::Read>>,
        /// Index of the `timestamp` column.
        ts: usize,
        /// Index of the `value` column.
        value: usize,
        /// The router every row belongs to.
        router: String,
        /// The record being read (reused).
        record: csv::StringRecord,
    },
    /// Telemetry records as JSON lines.
    Jsonl {
        /// The input file.
        path: String,
        /// The reader.
        reader: Box<dyn BufRead>,
        /// The line being read, as bytes: a line that is not UTF-8 is a bad row like any other.
        buffer: Vec<u8>,
        /// The line being read (1-based).
        line: u64,
    },
}

impl RowReader {
    /// Opens `path`. For CSV, every row belongs to `csv_router`.
    pub fn open(path: &Path, format: InputFormat, csv_router: &str) -> Result<RowReader, ReplayError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| ReplayError::Open { path: name.clone(), source })?;
        Ok(match format.resolve(path) {
            InputFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .trim(csv::Trim::All)
                    .from_reader(Box::new(std::io::BufReader::new(file)) as Box<dyn std::io::Read>);
                let headers = reader
                    .headers()
                    .map_err(|source| ReplayError::CsvHeader { path: name.clone(), reason: source.to_string() })?
                    .clone();
                let find = |wanted: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(wanted));
                let (Some(ts), Some(value)) = (find("timestamp"), find("value")) else {
                    return Err(ReplayError::CsvHeader {
                        path: name,
                        reason: format!("the CSV header must name `timestamp` and `value` columns, found {headers:?}"),
                    });
                };
                RowReader::Csv {
                    path: name,
                    reader,
                    ts,
                    value,
                    router: csv_router.to_owned(),
                    record: csv::StringRecord::new(),
                }
            }
            _ => RowReader::Jsonl {
                path: name,
                reader: Box::new(std::io::BufReader::with_capacity(1 << 16, file)),
                buffer: Vec::new(),
                line: 0,
            },
        })
    }

    /// Column names: the metric for a CSV, every metric for JSON lines.
    pub fn columns(&self, csv_metric: &str) -> Vec<String> {
        match self {
            RowReader::Csv { .. } => vec![csv_metric.to_owned()],
            RowReader::Jsonl { .. } => Metric::ALL.iter().map(|m| m.name().to_owned()).collect(),
        }
    }

    /// The next row, `None` at the end, or why the next row is bad. After a bad row, reading
    /// may go on with the row after it.
    pub fn next_row(&mut self) -> Option<Result<Row, BadRow>> {
        match self {
            RowReader::Csv { path, reader, ts, value, router, record } => {
                let bad = |line: u64, reason: String| BadRow { path: path.clone(), line, reason };
                match reader.read_record(record) {
                    Ok(false) => None,
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        Some(Err(bad(line, e.to_string())))
                    }
                    Ok(true) => {
                        let line = record.position().map_or(0, |p| p.line());
                        let parsed = parse_timestamp(record.get(*ts).unwrap_or("")).and_then(|t| {
                            let v = record.get(*value).unwrap_or("");
                            // An empty value is a gap: it is kept, and scored 0.
                            let v = if v.is_empty() {
                                Ok(f64::NAN)
                            } else {
                                v.parse::<f64>().map_err(|_| format!("value {v:?} is not a number"))
                            };
                            Ok((t, v?))
                        });
                        Some(match parsed {
                            Ok((ts, value)) => {
                                Ok(Row { router: router.clone(), site: None, role: None, ts, values: vec![value] })
                            }
                            Err(reason) => Err(bad(line, reason)),
                        })
                    }
                }
            }
            RowReader::Jsonl { path, reader, buffer, line } => loop {
                let complete = match read_line(reader, buffer, MAX_RECORD_BYTES) {
                    Ok(None) => return None,
                    Ok(Some(complete)) => complete,
                    Err(e) => return Some(Err(BadRow { path: path.clone(), line: *line + 1, reason: e.to_string() })),
                };
                // Counted whatever the line holds, so every later error names its own line.
                *line += 1;
                if !complete {
                    let reason = format!("line is over the record limit of {MAX_RECORD_BYTES} bytes");
                    return Some(Err(BadRow { path: path.clone(), line: *line, reason }));
                }
                if buffer.trim_ascii().is_empty() {
                    continue;
                }
                return Some(match Record::decode(buffer) {
                    Ok(record) => Ok(Row {
                        values: Metric::ALL.iter().map(|&m| record.metrics.get(m)).collect(),
                        router: record.router,
                        site: Some(record.site),
                        role: Some(record.role.name().to_owned()),
                        ts: record.ts,
                    }),
                    Err(e) => Err(BadRow { path: path.clone(), line: *line, reason: e.to_string() }),
                });
            },
        }
    }
}

/// Reads one line (without its line ending) into `buffer`, keeping at most `max` bytes of it:
/// `Some(true)` for a whole line, `Some(false)` for one that was longer (the rest is skipped,
/// never held in memory), `None` at the end of the input.
fn read_line(reader: &mut dyn BufRead, buffer: &mut Vec<u8>, max: usize) -> std::io::Result<Option<bool>> {
    buffer.clear();
    let mut complete = true;
    let mut any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        any = true;
        let (chunk, found_end) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..end], true),
            None => (available, false),
        };
        let room = max.saturating_sub(buffer.len());
        if chunk.len() > room {
            complete = false;
        }
        buffer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len() + usize::from(found_end);
        reader.consume(used);
        if found_end {
            break;
        }
    }
    if buffer.last() == Some(&b'\r') {
        buffer.pop();
    }
    Ok(any.then_some(complete))
}

/// Parses a timestamp to milliseconds since the Unix epoch. Accepts RFC 3339
/// (`2026-11-24T10:00:00Z`), naive date-times and dates (taken as UTC), and epoch numbers:
/// seconds below 10^11 (before the year 5138), milliseconds above.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(number) = text.parse::<f64>()
        && number.is_finite()
    {
        let ms = if number.abs() < 1e11 { number * 1000.0 } else { number };
        return Ok(ms.round() as i64);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis());
    }
    Err(format!("timestamp {text:?} is neither ISO-8601 nor an epoch number"))
}

#[cfg(test)]
mod tests {
    use super::parse_timestamp;

    #[test]
    fn timestamps_in_every_accepted_form() {
        let expected = 1_764_000_000_000;
        for text in [
            "1764000000",
            "1764000000000",
            "1764000000.0",
            "2025-11-24T16:00:00Z",
            "2025-11-24T17:00:00+01:00",
            "2025-11-24T16:00:00.000Z",
            "2025-11-24 16:00:00",
            "2025-11-24T16:00:00",
            "2025-11-24 16:00",
        ] {
            assert_eq!(parse_timestamp(text), Ok(expected), "{text}");
        }
        assert_eq!(parse_timestamp("2025-11-24"), Ok(1_763_942_400_000));
        assert!(parse_timestamp("yesterday").unwrap_err().contains("neither"));
        assert!(parse_timestamp("").is_err());
    }
}
