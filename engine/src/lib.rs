//! The routewatch detection engine: everything between a source of telemetry and the sinks of
//! its anomalies, without Kafka or HTTP.
//!
//! ```text
//!  Source ──pull──▶ Input (columnar batch) ──▶ Engine::step ──▶ every Sink, in order ──▶ acknowledged
//!  (Kafka partition,                     reconcile with the registry,    (Kafka, REST feed,
//!   recorded file)                       run every plugin (contained),   Prometheus, files)
//!                                        build the events
//! ```
//!
//! * [`Engine`] ([`engine`]): one stream's router table and plugin slots, and the step.
//! * [`reconcile`]: following the [`registry`] between batches (hot swap with state hand-over).
//! * [`contain`]: retrying a failed plugin, and finding its poison record by bisection.
//! * [`batch`]: rows into the columnar batch detectors take; [`events`]: outputs into events.
//! * [`incidents`]: the router incident stage (anomalies into incidents with a probable cause);
//!   [`forecast`]: the forecast stage (trends into predicted incidents, before the damage).
//! * [`source`] and [`sink`]: the seams; [`replay`]: the file source and file sinks.
//! * [`registry`]: the plugins a host runs (hot reload, enable, configure, quarantine).
//! * [`metrics`]: the Prometheus metrics; [`state`]: what a stream's saved state holds.
//!
//! The plugin sandbox itself is the `routewatch-runtime` crate.

#![warn(missing_docs)]

pub mod batch;
pub mod contain;
pub mod engine;
pub mod events;
pub mod forecast;
pub mod incidents;
pub mod metrics;
pub mod reconcile;
pub mod registry;
pub mod replay;
pub mod routers;
pub mod sink;
pub mod slot;
pub mod source;
pub mod state;

pub use batch::{Input, Position, RawRecord, Rejected};
pub use engine::{Engine, EngineConfig, PluginReport, Plugins, Poison, Processed, now_ms};
pub use forecast::Forecast;
pub use incidents::{Classifier, IncidentStage};
pub use sink::{Delivery, Sink, SinkError, StepError};
pub use slot::FixedPlugin;
pub use source::{Intake, Pull, Source, SourceError};
pub use state::{PartitionState, PluginState, RouterInfo, STATE_VERSION};
