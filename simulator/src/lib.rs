//! routewatch-simulator: a fleet of simulated routers with injected faults and ground truth.
//!
//! * [`fleet`]: router profiles and the metric dynamics (cycles, noise, correlations).
//! * [`faults`]: fault kinds, their effects, and the ground-truth book.
//! * [`consequences`]: what a fault left alone leads to (a crash, throttling, shutdowns).
//! * [`actions`]: remediation actions, what each fixes and how long it takes.
//! * [`realism`]: the telemetry profiles (`clean`, `realistic`) and the realistic traits.
//! * [`changes`]: planned changes (realistic profile), published as ground truth too.
//! * [`engine`]: the simulation state that the runner and the REST API share.
//! * [`runner`]: the clock (real time or fast event time) driving a [`sink::Sink`].
//! * [`sink`]: Kafka, JSON-lines files, or nothing.
//! * [`api`]: the REST API; [`metrics`]: Prometheus.
//!
//! See `simulator/README.md` for usage.

pub mod actions;
pub mod api;
pub mod changes;
pub mod consequences;
pub mod encode;
pub mod engine;
pub mod faults;
pub mod fleet;
pub mod metrics;
pub mod realism;
pub mod runner;
pub mod sink;

use std::sync::{Arc, Mutex, MutexGuard};

/// The version of the model's output: the same seed and parameters give the same records and
/// ground truth under the same version. Bumped whenever that output changes on purpose (the
/// clean golden hash in `tests/clean_golden.rs` moves with it), so that anything caching
/// simulated data can tell a stale set from a current one. 2: faults have consequences, and
/// faults ended early keep their schedule slot.
pub const MODEL_VERSION: u32 = 2;

pub use engine::{Engine, RuntimeConfig};
pub use realism::TelemetryProfile;

/// Locks a mutex, carrying on after a panic elsewhere: every engine operation leaves the
/// state consistent between statements that could panic, so the data is still usable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything the REST API needs, built around a shared engine.
pub fn app_state(
    engine: Arc<Mutex<Engine>>,
    metrics: &metrics::SimMetrics,
    router_gauges_max: u32,
    mode: &'static str,
    sink: &'static str,
) -> api::AppState {
    let registry = Arc::new(metrics.registry(engine.clone(), router_gauges_max));
    api::AppState { engine, registry, mode, sink }
}
