//! Typed errors of the plugin runtime. Every failure a plugin can cause maps to one of these;
//! none of them takes the host down.

use std::time::Duration;

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("not a WebAssembly file (it does not start with the `\\0asm` magic)")]
    NotWasm,
    #[error("a core WebAssembly module, not a component: build the plugin with `--target wasm32-wasip2`")]
    CoreModule,
    #[error("component does not compile: {0}")]
    Compile(String),
    #[error(
        "component is built against WIT routewatch:detector@{found}; this host serves {}",
        super::SUPPORTED_WIT_VERSIONS.join(", ")
    )]
    UnsupportedVersion { found: String },
    #[error("component does not implement the routewatch detector world: {0}")]
    NotADetector(String),
    #[error("component needs imports the sandbox does not provide: {0}")]
    Imports(String),
    #[error("plugin info is invalid: {0}")]
    BadInfo(String),
    #[error("plugin failed while starting: {0}")]
    Start(#[from] CallError),
    #[error("compiled-component cache: {0}")]
    Cache(String),
}

/// How a trap happened, as far as the host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrapKind {
    /// The plugin panicked (Rust panics end in an `unreachable` instruction).
    Panic,
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
    #[error("plugin used its CPU budget of {budget:?} in one call")]
    CpuBudgetExceeded { budget: Duration },
    #[error("plugin tried to grow its memory to {requested} bytes, over its cap of {cap}")]
    MemoryLimitExceeded { requested: usize, cap: usize },
    #[error("plugin trapped ({}): {message}", kind.as_str())]
    Trap { kind: TrapKind, message: String },
    /// The plugin returned an error value: it is alive and keeps its state.
    #[error("plugin refused: {0}")]
    Plugin(String),
    /// The plugin returned something that breaks the contract (wrong length, NaN scores...).
    #[error("plugin returned invalid output: {0}")]
    InvalidOutput(String),
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
    #[error("configuring the Wasm engine: {0}")]
    Engine(String),
    #[error("setting up the linker: {0}")]
    Linker(String),
    #[error("compiled-component cache at {path}: {source}")]
    Cache { path: String, source: std::io::Error },
}
