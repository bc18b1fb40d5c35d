//! The plugin runtime: compiles detector components, checks them against the WIT world, and
//! runs instances of them in a sandbox with a CPU budget and a memory cap per call.
//!
//! ```no_run
//! use routewatch_host::runtime::{Batch, Column, Limits, Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig { cache_dir: None, limits: Limits::default() })?;
//! let plugin = runtime.load_file("routewatch_arima.wasm".as_ref())?;
//! let mut instance = plugin.instantiate()?;
//! instance.configure("{}")?;
//! let batch = Batch {
//!     routers: vec![0, 0],
//!     timestamps: vec![0, 60_000],
//!     columns: vec![Column { metric: "cpu_util".into(), values: vec![0.4, 0.5] }],
//! };
//! let output = instance.process(&batch)?;
//! assert_eq!(output.scores.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bindings;
mod cache;
mod error;
mod instance;
mod plugin;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

pub use bindings::{Anomaly, AnomalyKind, Batch, Column, Output, PluginInfo};
pub use error::{CallError, LoadError, RuntimeError, TrapKind};
pub use instance::{CallStats, Instance};
pub use plugin::Plugin;

use cache::ComponentCache;
use instance::HostState;

/// Checks a plugin's `output` for `batch` against the contract in `wit/detector.wit`, as
/// [`Instance::process`] does before it returns anything: one score in [0, 1] per point, no
/// more anomalies than points, each inside the batch with a score in [0, 1] and a reason of at
/// most 200 bytes. Public for the fuzz targets (`fuzz/`) and for checking a detector run natively.
pub fn check_output(batch: &Batch, output: &Output) -> Result<(), CallError> {
    instance::validate(batch, output)
}

/// Versions of the `routewatch:detector` WIT package this host serves.
pub const SUPPORTED_WIT_VERSIONS: &[&str] = &["0.1.0"];

/// How often the engine's epoch advances; CPU budgets are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Sandbox limits applied to every call of every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget of one call into a plugin (enforced by epoch interruption).
    pub cpu_budget: Duration,
    /// Largest linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Largest Wasm stack, in bytes.
    pub stack_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { cpu_budget: Duration::from_secs(1), memory_bytes: 256 << 20, stack_bytes: 1 << 20 }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Where compiled components are kept between runs; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    pub limits: Limits,
}

/// One Wasm engine shared by every plugin, with its linker and compiled-component cache.
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    cache: Option<ComponentCache>,
    limits: Limits,
    /// Kept for its `Drop`, which stops the thread.
    _ticker: EpochTicker,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .max_wasm_stack(config.limits.stack_bytes)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        // Rust's standard library imports WASI even when a plugin never touches a file; the
        // sandbox satisfies those imports with a context that grants nothing (see HostState).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| RuntimeError::Linker(format!("{e:#}")))?;
        bindings::DetectorPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| RuntimeError::Linker(format!("{e:#}")))?;

        let cache = config.cache_dir.map(|dir| ComponentCache::open(dir, &engine)).transpose()?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Runtime { engine, linker: Arc::new(linker), cache, limits: config.limits, _ticker: ticker })
    }

    /// Loads a component from a file (see [`Runtime::load`]).
    pub fn load_file(&self, path: &std::path::Path) -> Result<Plugin, LoadError> {
        let bytes =
            std::fs::read(path).map_err(|source| LoadError::Read { path: path.display().to_string(), source })?;
        self.load(&bytes)
    }

    /// Compiles (or fetches from the cache), checks against the detector world, and reads the
    /// plugin's info from a first instance.
    pub fn load(&self, bytes: &[u8]) -> Result<Plugin, LoadError> {
        plugin::load(self, bytes)
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] so that running Wasm can be interrupted.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
