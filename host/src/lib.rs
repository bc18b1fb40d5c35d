//! The routewatch detection host.
//!
//! * [`runtime`]: loads detector components and runs them in a sandbox.
//! * [`routers`]: the table that gives routers the small ids detectors see.
//! * [`replay`]: runs detectors over recorded data (`routewatch replay`).
//! * [`pipeline`]: the streaming host (`routewatch run`).

pub mod pipeline;
pub mod replay;
pub mod routers;
pub mod runtime;
