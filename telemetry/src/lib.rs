//! The routewatch wire format, defined once for the simulator, the host and the tests.
//!
//! * [`Record`]: one telemetry sample of one router (topic `router-metrics`, replay input).
//! * [`AnomalyEvent`]: what a detector decided (topic `router-anomalies`, replay output).
//! * [`FaultEvent`]: ground truth of an injected fault (topic `router-faults`).
//! * [`PlannedChange`]: ground truth of a benign planned change (same topic, tagged `type`).
//!
//! Records are JSON objects; their `schema` field carries [`SCHEMA_VERSION`] so that a consumer
//! can refuse a record it does not understand instead of misreading it.
//!
//! ```
//! use routewatch_telemetry::{Metric, Record};
//!
//! let json = r#"{"schema":1,"router":"rtr-000042","site":"fra1","region":"eu-central",
//!   "role":"edge","vendor":"acme","ts":1764000000000,
//!   "metrics":{"cpu_util":0.41,"mem_util":0.63,"temp_c":47.5,"fan_rpm":6100,
//!   "latency_ms":3.2,"loss_ratio":0.0001,"rx_bps":4.1e9,"tx_bps":3.8e9,
//!   "if_errors":0,"bgp_up":4}}"#;
//! let record = Record::decode(json.as_bytes()).unwrap();
//! assert_eq!(record.metrics.get(Metric::CpuUtil), 0.41);
//! ```

mod action;
mod anomaly;
mod change;
mod fault;
mod metric;
mod record;

pub use action::Action;
pub use anomaly::{AnomalyEvent, AnomalyKind};
pub use change::{ChangeKind, PlannedChange};
pub use fault::{FaultEvent, FaultKind};
pub use metric::{Metric, Metrics};
pub use record::{DecodeError, MAX_RECORD_BYTES, Record, Role, SCHEMA_VERSION};
