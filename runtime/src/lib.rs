//! The plugin runtime: compiles detector components, checks them against the WIT world, and
//! runs instances of them in a sandbox with a CPU budget and a memory cap per call.
//!
//! ```no_run
//! use routewatch_runtime::{Batch, Column, Limits, Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig { limits: Limits::default(), ..RuntimeConfig::default() })?;
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

#![warn(missing_docs)]

mod bindings;
mod cache;
pub mod classifier;
mod error;
mod instance;
mod plugin;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

pub use bindings::{Anomaly, AnomalyKind, Batch, Column, Output, PluginInfo};
pub use error::{CallError, LoadError, RuntimeError, TrapKind};
pub use instance::{CallStats, Instance, LOG_LINES_PER_SECOND, LogLimiter, escape_plugin_text, thread_cpu_time};
pub use plugin::Plugin;

use cache::ComponentCache;
use classifier::{ClassifierLoadError, ClassifierPlugin};

/// A component of either world, as [`Runtime::load_any`] found it.
#[derive(Debug, Clone)]
pub enum Loaded {
    /// A detector (`routewatch:detector`).
    Detector(Plugin),
    /// A cause classifier (`routewatch:classifier`).
    Classifier(ClassifierPlugin),
}
use instance::HostState;

/// Longest reason an anomaly may carry, in bytes.
pub const MAX_REASON_BYTES: usize = 200;

/// Caps on what a plugin says about itself in its info. Everything there is echoed by the API
/// to every client that lists plugins, so none of it may be large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoCaps {
    /// Longest description.
    pub description_bytes: usize,
    /// How many metric names `metrics` may list.
    pub metrics: usize,
    /// Longest metric name.
    pub metric_name_bytes: usize,
    /// Largest configuration schema.
    pub config_schema_bytes: usize,
}

impl InfoCaps {
    /// The caps every plugin is held to (documented in the README).
    pub const DEFAULT: InfoCaps =
        InfoCaps { description_bytes: 4 << 10, metrics: 256, metric_name_bytes: 64, config_schema_bytes: 64 << 10 };
}

/// Default cap on the compiled-component cache: beyond it the least recently used entries go.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 2 << 30;

/// Checks a plugin's `output` for `batch` against the contract in `wit/detector.wit`, as
/// [`Instance::process`] does before it returns anything: one score in [0, 1] per point, no
/// more anomalies than points, each inside the batch with a score in [0, 1] and a reason of at
/// most [`MAX_REASON_BYTES`], finite values and ordered bounds. Public for the fuzz targets (`fuzz/`) and for checking a detector run natively.
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
    /// CPU time one call into a plugin may use: the CPU time of the thread running it, so
    /// time spent waiting for a core is not counted. Checked every millisecond by epoch
    /// interruption; a call is also stopped after 20 times the budget in wall-clock time.
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

/// How a [`Runtime`] is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are kept between runs; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Largest size of the cache directory; least recently used entries are evicted past it.
    pub cache_max_bytes: u64,
    /// Limits for every call.
    pub limits: Limits,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig { cache_dir: None, cache_max_bytes: DEFAULT_CACHE_MAX_BYTES, limits: Limits::default() }
    }
}

/// One Wasm engine shared by every plugin, with its linker and compiled-component cache.
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    cache: Option<ComponentCache>,
    limits: Limits,
    /// Log rate limits by plugin name, shared by every instance and version of a plugin.
    log_limits: Mutex<HashMap<String, Arc<LogLimiter>>>,
    /// Kept for its `Drop`, which stops the thread.
    _ticker: EpochTicker,
}

impl Runtime {
    /// Starts the Wasm engine, its linker and the cache.
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

        let cache =
            config.cache_dir.map(|dir| ComponentCache::open(dir, &engine, config.cache_max_bytes)).transpose()?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            cache,
            limits: config.limits,
            log_limits: Mutex::new(HashMap::new()),
            _ticker: ticker,
        })
    }

    /// The log rate limit of the plugin called `name`.
    fn log_limiter(&self, name: &str) -> Arc<LogLimiter> {
        let mut limits = self.log_limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        limits.entry(name.to_owned()).or_insert_with(|| Arc::new(LogLimiter::new(name))).clone()
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

    /// Loads a component of either world: a classifier if it exports the classifier interface
    /// (of any version, so that a wrong version is told so), a detector otherwise. It is
    /// compiled once whichever it is; the errors of a detector are [`ClassifierLoadError::Load`].
    pub fn load_any(&self, bytes: &[u8]) -> Result<Loaded, ClassifierLoadError> {
        let compiled = plugin::compile(self, bytes)?;
        if classifier::exports_classifier(&compiled.exported_interfaces(&self.engine)) {
            classifier::load_compiled(self, compiled).map(Loaded::Classifier)
        } else {
            Ok(Loaded::Detector(plugin::load_compiled(self, compiled)?))
        }
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The Wasm engine.
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
