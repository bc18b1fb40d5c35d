//! The telemetry record and its validation.

use serde::{Deserialize, Serialize};

use crate::metric::{Metric, Metrics};

/// The record schema this crate reads and writes. A record with another `schema` is refused.
pub const SCHEMA_VERSION: u32 = 1;

/// Records larger than this are refused before parsing (a sane record is about 350 bytes).
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// A router's role in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Core,
    Edge,
    Access,
}

impl Role {
    pub const fn name(self) -> &'static str {
        match self {
            Role::Core => "core",
            Role::Edge => "edge",
            Role::Access => "access",
        }
    }
}

/// One sample of one router: what the simulator produces to `router-metrics`, keyed by
/// `router`, and what `routewatch replay` reads as JSON lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Schema version, always [`SCHEMA_VERSION`] for records this crate writes.
    pub schema: u32,
    /// Router id, unique in the fleet (for example `rtr-000042`).
    pub router: String,
    pub site: String,
    pub region: String,
    pub role: Role,
    pub vendor: String,
    /// Event time: milliseconds since the Unix epoch, UTC.
    pub ts: i64,
    pub metrics: Metrics,
}

/// Why a record was refused. The `Display` text is what goes into the dead-letter header.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("record is {size} bytes, over the limit of {limit}")]
    Oversized { size: usize, limit: usize },
    #[error("record is not valid JSON for schema {SCHEMA_VERSION}: {0}")]
    Malformed(String),
    #[error("unsupported schema version {found} (this build reads {SCHEMA_VERSION})")]
    UnsupportedSchema { found: u64 },
    #[error("field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Just enough of a record to read its schema version before committing to its layout.
#[derive(Deserialize)]
struct SchemaProbe {
    schema: Option<u64>,
}

impl Record {
    /// Parses and validates one record.
    ///
    /// The schema version is checked first, so a record from a newer producer is reported as
    /// such rather than as a confusing missing-field error.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(DecodeError::Oversized { size: bytes.len(), limit: MAX_RECORD_BYTES });
        }
        match serde_json::from_slice::<Record>(bytes) {
            Ok(record) => {
                record.validate()?;
                Ok(record)
            }
            Err(err) => {
                // Explain a version mismatch ahead of the parse error it causes.
                if let Ok(SchemaProbe { schema: Some(found) }) = serde_json::from_slice(bytes)
                    && found != u64::from(SCHEMA_VERSION)
                {
                    return Err(DecodeError::UnsupportedSchema { found });
                }
                Err(DecodeError::Malformed(err.to_string()))
            }
        }
    }

    /// Serialises the record as one line of JSON (no trailing newline).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serialises")
    }

    /// Checks what the types alone cannot: version, identifiers and value ranges.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.schema != SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedSchema { found: u64::from(self.schema) });
        }
        check_id("router", &self.router)?;
        check_id("site", &self.site)?;
        check_id("region", &self.region)?;
        check_id("vendor", &self.vendor)?;
        if self.ts < 0 {
            return Err(DecodeError::Invalid { field: "ts", reason: format!("{} is before 1970", self.ts) });
        }
        for metric in Metric::ALL {
            let value = self.metrics.get(metric);
            let field = metric.name();
            if !value.is_finite() {
                return Err(DecodeError::Invalid { field, reason: format!("{value} is not finite") });
            }
            if metric.is_ratio() && !(0.0..=1.0).contains(&value) {
                return Err(DecodeError::Invalid { field, reason: format!("ratio {value} is outside 0..=1") });
            }
            if metric.is_non_negative() && value < 0.0 {
                return Err(DecodeError::Invalid { field, reason: format!("{value} is negative") });
            }
        }
        Ok(())
    }
}

/// Identifiers are short, printable and free of separators that would break a label or a key.
fn check_id(field: &'static str, value: &str) -> Result<(), DecodeError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Invalid { field, reason: format!("{value:?} must be 1 to 64 characters of [A-Za-z0-9._-]") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            schema: SCHEMA_VERSION,
            router: "rtr-000001".into(),
            site: "fra1".into(),
            region: "eu-central".into(),
            role: Role::Edge,
            vendor: "acme".into(),
            ts: 1_764_000_000_000,
            metrics: Metrics { cpu_util: 0.5, mem_util: 0.5, temp_c: 40.0, fan_rpm: 6000.0, ..Default::default() },
        }
    }

    #[test]
    fn round_trips() {
        let record = sample();
        assert_eq!(Record::decode(&record.encode()).unwrap(), record);
    }

    #[test]
    fn refuses_every_kind_of_bad_record() {
        let good = String::from_utf8(sample().encode()).unwrap();
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not valid JSON"),
            (good.replace("\"schema\":1", "\"schema\":2"), "unsupported schema version 2"),
            (good.replace("\"schema\":1,", ""), "missing field `schema`"),
            (good.replace("\"cpu_util\":0.5", "\"cpu_util\":\"high\""), "not valid JSON"),
            (good.replace("\"cpu_util\":0.5", "\"cpu_util\":1.5"), "field `cpu_util` is invalid"),
            (good.replace("\"rx_bps\":0.0", "\"rx_bps\":-1.0"), "field `rx_bps` is invalid"),
            (good.replace("\"rtr-000001\"", "\"../etc\""), "field `router` is invalid"),
            (good.replace("\"ts\":1764000000000", "\"ts\":-5"), "field `ts` is invalid"),
            (good.replace("\"vendor\"", "\"extra\":1,\"vendor\""), "unknown field `extra`"),
            (good.replace("\"if_errors\":0.0,", ""), "missing field `if_errors`"),
            (format!("{good:width$}", width = MAX_RECORD_BYTES + 1), "over the limit"),
        ];
        for (input, expected) in cases {
            let err = Record::decode(input.as_bytes()).expect_err(&input);
            assert!(err.to_string().contains(expected), "{input}: got {err}, wanted {expected}");
        }
    }

    #[test]
    fn nan_cannot_even_be_written_in_json() {
        // serde_json writes NaN as null, which a required f64 refuses: a NaN never gets through.
        let mut record = sample();
        record.metrics.temp_c = f64::NAN;
        assert!(Record::decode(&record.encode()).is_err());
        assert!(record.validate().is_err());
    }
}
