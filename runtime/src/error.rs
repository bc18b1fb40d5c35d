//! Typed errors of the plugin runtime. Every failure a plugin can cause maps to one of these;
//! none of them takes the host down.

use std::time::Duration;

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file does not read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file (it does not start with the `\\0asm` magic)")]
    NotWasm,
    /// A core module, not a component.
    #[error("a core WebAssembly module, not a component: build the plugin with `--target wasm32-wasip2`")]
    CoreModule,
    /// Cranelift refused the component.
    #[error("component does not compile: {0}")]
    Compile(String),
    #[error(
        "component is built against WIT routewatch:detector@{found}; this host serves {}",
        super::SUPPORTED_WIT_VERSIONS.join(", ")
    )]
    /// Built against a WIT version this host does not serve.
    UnsupportedVersion {
        /// The version it was built against.
        found: String,
    },
    /// It does not export the detector world.
    #[error("component does not implement the routewatch detector world: {0}")]
    NotADetector(String),
    /// It imports what the sandbox does not give.
    #[error("component needs imports the sandbox does not provide: {0}")]
    Imports(String),
    /// Its info breaks the caps or the contract.
    #[error("plugin info is invalid: {0}")]
    BadInfo(String),
    /// It failed while starting.
    #[error("plugin failed while starting: {0}")]
    Start(#[from] CallError),
    /// The compiled-component cache failed.
    #[error("compiled-component cache: {0}")]
    Cache(String),
}

/// How a trap happened, as far as the host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrapKind {
    /// The plugin panicked (Rust panics end in an `unreachable` instruction).
    Panic,
    /// The Wasm stack overflowed.
    StackOverflow,
    /// Out-of-bounds memory access, integer overflow, bad indirect call and the like.
    Fault,
    /// Anything else wasmtime reports.
    Other,
}

impl TrapKind {
    /// A short label, fit for a metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            TrapKind::Panic => "panic",
            TrapKind::StackOverflow => "stack_overflow",
            TrapKind::Fault => "fault",
            TrapKind::Other => "other",
        }
    }
}

/// Why a call into a plugin failed. After any variant but [`CallError::Plugin`] and
/// [`CallError::InvalidOutput`] the instance is dead and must be replaced.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// It used its CPU budget.
    #[error("plugin used its CPU budget of {budget:?} in one call")]
    CpuBudgetExceeded {
        /// The budget.
        budget: Duration,
    },
    /// It grew its memory past its cap.
    #[error("plugin tried to grow its memory to {requested} bytes, over its cap of {cap}")]
    MemoryLimitExceeded {
        /// Bytes it asked for.
        requested: usize,
        /// The cap.
        cap: usize,
    },
    /// It trapped.
    #[error("plugin trapped ({}): {message}", kind.as_str())]
    Trap {
        /// How.
        kind: TrapKind,
        /// What wasmtime said.
        message: String,
    },
    /// The plugin returned an error value: it is alive and keeps its state.
    #[error("plugin refused: {0}")]
    Plugin(String),
    /// The plugin returned something that breaks the contract (wrong length, NaN scores...).
    #[error("plugin returned invalid output: {0}")]
    InvalidOutput(String),
    /// An earlier failure left the instance unusable.
    #[error("instance is unusable after an earlier failure; start a new one")]
    Poisoned,
}

impl CallError {
    /// Whether the instance survived the failure.
    pub fn instance_survives(&self) -> bool {
        matches!(self, CallError::Plugin(_) | CallError::InvalidOutput(_))
    }

    /// A short label, fit for a metric label value.
    pub fn kind_label(&self) -> &'static str {
        match self {
            CallError::CpuBudgetExceeded { .. } => "cpu_budget",
            CallError::MemoryLimitExceeded { .. } => "memory_limit",
            CallError::Trap { kind, .. } => kind.as_str(),
            CallError::Plugin(_) => "plugin_error",
            CallError::InvalidOutput(_) => "invalid_output",
            CallError::Poisoned => "poisoned",
        }
    }
}

/// The runtime itself could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The Wasm engine would not start.
    #[error("configuring the Wasm engine: {0}")]
    Engine(String),
    /// The linker would not take the host functions.
    #[error("setting up the linker: {0}")]
    Linker(String),
    /// The cache directory failed.
    #[error("compiled-component cache at {path}: {source}")]
    Cache {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}
