//! The routewatch host binary's library: Kafka in and out, the HTTP API, the CLI's pieces.
//! Detection itself is the `routewatch-engine` crate and the sandbox the `routewatch-runtime`
//! crate; both are re-exported here under their old paths.
//!
//! * [`Host`] ([`host`]): a running host: plugins, the HTTP API and the Kafka service.
//! * [`kafka`]: the Kafka service: consumer group, a worker per partition, the state topic.
//! * [`broker`]: Kafka clients: configuration, topics, delivery, transactions.
//! * [`sinks`]: where a partition's batches go (Kafka, the REST feed, incidents, self-healing,
//!   Prometheus); [`alertmanager`]: incidents posted to Alertmanager; [`healing`]: actions
//!   taken on incidents under guard rails (`routewatch-remediation`).
//! * [`feed`]: recent anomalies for the API; [`incidents`]: recent incidents for the API;
//!   [`api`]: the HTTP API, plugin management included.
//! * [`config`]: the host's configuration.

pub mod alertmanager;
pub mod api;
pub mod broker;
pub mod config;
pub mod feed;
pub mod healing;
pub mod host;
pub mod incidents;
pub mod kafka;
pub mod sinks;

pub use config::{HostConfig, ProcessingGuarantee};
pub use host::{Host, SHUTDOWN_GRACE};
pub use routewatch_engine::{metrics, registry, replay, routers};
/// The plugin runtime, re-exported: see the `routewatch-runtime` crate.
pub use routewatch_runtime as runtime;
