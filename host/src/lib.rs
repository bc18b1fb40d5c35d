//! The routewatch detection host.
//!
//! * [`runtime`]: loads detector components and runs them in a sandbox.
//! * [`routers`]: the table that gives routers the small ids detectors see.
//! * [`replay`]: runs detectors over recorded data (`routewatch replay`).
//! * [`pipeline`]: the streaming host (`routewatch run`).
//! * [`registry`]: the plugins a host runs: hot reload, enable, configure, quarantine.
//! * [`api`]: the host's HTTP API, plugin management included.

pub mod api;
pub mod pipeline;
pub mod registry;
pub mod replay;
pub mod routers;
/// The plugin runtime, re-exported: see the `routewatch-runtime` crate.
pub use routewatch_runtime as runtime;
