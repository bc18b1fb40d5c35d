//! A running plugin instance: its store, its sandbox and its calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::random::Deterministic;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::routewatch::detector::logging;
use super::bindings::{Batch, DetectorPlugin, DetectorPluginPre, Output, PluginInfo};
use super::error::{CallError, TrapKind};
use super::{EPOCH_TICK, Limits, MAX_REASON_BYTES};

/// Plugin stderr kept to explain a panic.
const STDERR_CAPACITY: usize = 16 * 1024;
/// Log lines a plugin may emit per second, over all its instances, before the host drops them.
pub const LOG_LINES_PER_SECOND: u32 = 20;
/// Longest plugin log line kept, in characters; the rest is cut.
const MAX_LOG_CHARS: usize = 1000;
/// A call may take this many times its CPU budget in wall-clock time before it is stopped
/// anyway: a backstop should the thread's CPU clock ever fail to advance.
const WALL_CLOCK_BACKSTOP: u32 = 20;

/// Per-instance state inside the wasmtime store.
pub struct HostState {
    plugin: String,
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
    memory_cap: usize,
    /// Largest memory the instance asked for, granted or not.
    memory_high_water: usize,
    /// Set when a growth past the cap was refused, to classify the trap that follows.
    memory_refused: Option<usize>,
    log: Arc<LogLimiter>,
    /// The running call's budget, checked whenever the epoch deadline passes.
    budget: CallBudget,
}

/// The CPU budget of the call in progress. The epoch ticker only wakes the check; what counts
/// is the CPU time of the thread running the plugin, so a plugin that waits for a core (many
/// partitions on few cores) is not charged for the wait.
#[derive(Clone, Copy)]
struct CallBudget {
    /// Thread CPU time at which the call has used its budget.
    cpu_limit: Duration,
    /// Wall-clock time past which the call stops whatever its CPU clock says.
    wall_limit: Instant,
}

impl CallBudget {
    fn start(budget: Duration) -> CallBudget {
        CallBudget { cpu_limit: thread_cpu_time() + budget, wall_limit: Instant::now() + budget * WALL_CLOCK_BACKSTOP }
    }

    /// Called on the plugin's thread when its epoch deadline passes: stop it, or let it run
    /// for the CPU time it has left.
    fn check(&self) -> UpdateDeadline {
        let left = self.cpu_limit.saturating_sub(thread_cpu_time());
        if left.is_zero() || Instant::now() >= self.wall_limit {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(ticks(left))
        }
    }
}

/// The log rate limit of one plugin, shared by all of its instances (every partition, every
/// restart): a fixed one-second window.
#[derive(Debug)]
pub struct LogLimiter {
    plugin: String,
    window: Mutex<LogWindow>,
}

#[derive(Debug)]
struct LogWindow {
    start: Instant,
    used: u32,
    dropped: u64,
}

impl LogLimiter {
    pub(super) fn new(plugin: &str) -> LogLimiter {
        LogLimiter {
            plugin: plugin.to_owned(),
            window: Mutex::new(LogWindow { start: Instant::now(), used: 0, dropped: 0 }),
        }
    }

    /// Whether one more line may be written now.
    fn admit(&self) -> bool {
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.duration_since(window.start) >= Duration::from_secs(1) {
            if window.dropped > 0 {
                tracing::warn!(plugin = %self.plugin, dropped = window.dropped, "plugin log lines dropped by the rate limit");
            }
            *window = LogWindow { start: now, used: 0, dropped: 0 };
        }
        if window.used >= LOG_LINES_PER_SECOND {
            window.dropped += 1;
            return false;
        }
        window.used += 1;
        true
    }
}

/// A plugin's text made safe for one log line: control characters (newlines included) are
/// escaped, so a plugin cannot forge lines that look like the host's, and length is capped.
pub fn escape_plugin_text(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars));
    for c in text.chars().take(max_chars) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl HostState {
    fn new(plugin: String, limits: Limits, log: Arc<LogLimiter>) -> HostState {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let mut wasi = WasiCtxBuilder::new();
        // Grant nothing: no files, no network, no environment or arguments, and a clock that
        // stands still, so a plugin's answers depend on its input alone. Randomness is a fixed
        // sequence for the same reason (std's HashMap seeds from it).
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(Deterministic::new(vec![0x5a, 0x17, 0xc3, 0x88]))
            .insecure_random(Deterministic::new(vec![0x42]))
            .insecure_random_seed(0);
        HostState {
            plugin,
            wasi: wasi.build(),
            table: ResourceTable::new(),
            stderr,
            memory_cap: limits.memory_bytes,
            memory_high_water: 0,
            memory_refused: None,
            log,
            budget: CallBudget::start(limits.cpu_budget),
        }
    }

    /// The tail of what the plugin wrote to stderr (a panic message, typically).
    fn stderr_tail(&self) -> String {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim();
        let start = text.len().saturating_sub(500);
        let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        text[start..].replace('\n', " | ")
    }
}

/// A clock that always reads zero.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.memory_high_water = self.memory_high_water.max(desired);
        if desired > self.memory_cap {
            self.memory_refused = Some(desired);
            // An error (not `Ok(false)`) traps at once: a plugin that ignores a failed
            // allocation must not limp on.
            return Err(wasmtime::format_err!("memory cap of {} bytes reached", self.memory_cap));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The `types` interface holds only types; nothing to implement.
impl super::bindings::routewatch::detector::types::Host for HostState {}

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, message: String) {
        let level = match level {
            logging::Level::Trace => tracing::Level::TRACE,
            logging::Level::Debug => tracing::Level::DEBUG,
            logging::Level::Info => tracing::Level::INFO,
            logging::Level::Warn => tracing::Level::WARN,
            logging::Level::Error => tracing::Level::ERROR,
        };
        self.log_line(level, &message);
    }
}

impl HostState {
    /// One plugin log line, rate-limited per plugin and escaped (every world's `logging`).
    pub(super) fn log_line(&self, level: tracing::Level, message: &str) {
        if !self.log.admit() {
            return;
        }
        let message = escape_plugin_text(message, MAX_LOG_CHARS);
        let plugin = &self.plugin;
        match level {
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            tracing::Level::ERROR => tracing::error!(plugin, "{message}"),
        }
    }
}

/// A store that runs a plugin in the sandbox: memory cap, CPU budget by epoch, no WASI grants.
/// Shared by every world the host serves.
pub(super) fn sandboxed_store(
    engine: &wasmtime::Engine,
    plugin: String,
    limits: Limits,
    log: Arc<LogLimiter>,
) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(plugin, limits, log));
    store.limiter(|state| state);
    store.epoch_deadline_callback(|store| Ok(store.data().budget.check()));
    store.set_epoch_deadline(ticks(limits.cpu_budget));
    store
}

/// Runs one call into a sandboxed store under `budget`: what it returned (a trap classified)
/// and what it cost.
pub(super) fn sandboxed_call<R>(
    store: &mut Store<HostState>,
    budget: Duration,
    f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
) -> (Result<R, CallError>, CallStats) {
    store.data_mut().budget = CallBudget::start(budget);
    store.set_epoch_deadline(ticks(budget));
    let started = Instant::now();
    let cpu_started = thread_cpu_time();
    let result = f(store);
    let stats = CallStats {
        duration: started.elapsed(),
        cpu: thread_cpu_time().saturating_sub(cpu_started),
        memory_high_water: store.data().memory_high_water,
    };
    (result.map_err(|err| classify(store, err, budget)), stats)
}

/// What the last call cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    /// Wall-clock time of the call.
    pub duration: Duration,
    /// CPU time the calling thread spent in the call (the plugin's own work, not time spent
    /// waiting for a core).
    pub cpu: Duration,
    /// Largest linear memory the instance has asked for so far, in bytes.
    pub memory_high_water: usize,
}

/// One instance of a plugin, with its own state. Not shared between threads; a partition
/// task owns one per plugin.
pub struct Instance {
    store: Store<HostState>,
    bindings: DetectorPlugin,
    budget: Duration,
    poisoned: bool,
    last: CallStats,
}

impl Instance {
    pub(super) fn new(
        pre: &DetectorPluginPre<HostState>,
        plugin: String,
        limits: Limits,
        log: Arc<LogLimiter>,
    ) -> Result<Instance, CallError> {
        let mut store = sandboxed_store(pre.engine(), plugin, limits, log);
        let budget = limits.cpu_budget;
        let started = Instant::now();
        let cpu_started = thread_cpu_time();
        let bindings = pre.instantiate(&mut store).map_err(|e| classify(&store, e, budget))?;
        let last = CallStats {
            duration: started.elapsed(),
            cpu: thread_cpu_time().saturating_sub(cpu_started),
            memory_high_water: store.data().memory_high_water,
        };
        Ok(Instance { store, bindings, budget, poisoned: false, last })
    }

    /// Asks the plugin for its info.
    pub fn info(&mut self) -> Result<PluginInfo, CallError> {
        self.call(|bindings, store| bindings.routewatch_detector_detector().call_info(store))
    }

    /// Applies a JSON configuration. A refusal keeps the instance and its old configuration.
    pub fn configure(&mut self, config: &str) -> Result<(), CallError> {
        self.call(|bindings, store| bindings.routewatch_detector_detector().call_configure(store, config))?
            .map_err(CallError::Plugin)
    }

    /// Scores a batch; checks the output against the contract before returning it.
    pub fn process(&mut self, batch: &Batch) -> Result<Output, CallError> {
        let output = self
            .call(|bindings, store| bindings.routewatch_detector_detector().call_process(store, batch))?
            .map_err(CallError::Plugin)?;
        validate(batch, &output)?;
        Ok(output)
    }

    /// The plugin's state, to restore into another instance.
    pub fn snapshot(&mut self) -> Result<Vec<u8>, CallError> {
        self.call(|bindings, store| bindings.routewatch_detector_detector().call_snapshot(store))
    }

    /// Replaces the instance's state. A refusal keeps the instance and its old state.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), CallError> {
        self.call(|bindings, store| bindings.routewatch_detector_detector().call_restore(store, state))?
            .map_err(CallError::Plugin)
    }

    /// Cost of the last call.
    pub fn last_call(&self) -> CallStats {
        self.last
    }

    /// Whether an earlier failure killed this instance.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn call<R>(
        &mut self,
        f: impl FnOnce(&DetectorPlugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        if self.poisoned {
            return Err(CallError::Poisoned);
        }
        let bindings = &self.bindings;
        let (result, stats) = sandboxed_call(&mut self.store, self.budget, |store| f(bindings, store));
        self.last = stats;
        // After a trap the component may not be entered again.
        self.poisoned = result.is_err();
        result
    }
}

/// CPU time of the calling thread so far. A plugin call runs on the caller's thread, so the
/// difference across a call is what the plugin cost, however busy the machine is. One read is
/// a system call (well under a microsecond): fine per batch or call, dear per point.
///
/// ```
/// let before = routewatch_runtime::thread_cpu_time();
/// let sum: u64 = (0..100_000u64).sum();
/// assert!(sum > 0 && routewatch_runtime::thread_cpu_time() >= before);
/// ```
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Epoch ticks for a budget, rounded up, plus one because the current tick is partly spent.
fn ticks(budget: Duration) -> u64 {
    budget.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1
}

/// Recursion this deep (the innermost frames all of one function) makes an out-of-bounds
/// access a stack overflow: Rust keeps addressable locals on a shadow stack in linear memory,
/// and when that runs out the symptom is a wild memory access, not a Wasm stack overflow.
const RECURSION_FRAMES: usize = 16;

/// Whether the innermost frames of a backtrace are one function calling itself.
fn runaway_recursion(backtrace: Option<&WasmBacktrace>) -> bool {
    let Some(frames) = backtrace.map(WasmBacktrace::frames) else { return false };
    frames.len() >= RECURSION_FRAMES
        && frames[..RECURSION_FRAMES].windows(2).all(|w| w[0].func_index() == w[1].func_index())
}

fn classify(store: &Store<HostState>, err: wasmtime::Error, budget: Duration) -> CallError {
    if let Some(requested) = store.data().memory_refused {
        return CallError::MemoryLimitExceeded { requested, cap: store.data().memory_cap };
    }
    let trap = err.downcast_ref::<Trap>().copied();
    let backtrace = err.downcast_ref::<WasmBacktrace>();
    let recursion = runaway_recursion(backtrace);
    let kind = match trap {
        Some(Trap::Interrupt) => return CallError::CpuBudgetExceeded { budget },
        Some(Trap::StackOverflow) => TrapKind::StackOverflow,
        Some(Trap::MemoryOutOfBounds) if recursion => TrapKind::StackOverflow,
        Some(Trap::UnreachableCodeReached) => TrapKind::Panic,
        Some(
            Trap::MemoryOutOfBounds
            | Trap::HeapMisaligned
            | Trap::TableOutOfBounds
            | Trap::IndirectCallToNull
            | Trap::BadSignature
            | Trap::IntegerOverflow
            | Trap::IntegerDivisionByZero
            | Trap::BadConversionToInteger,
        ) => TrapKind::Fault,
        _ => TrapKind::Other,
    };
    // The trap itself, not its backtrace: a runaway recursion's backtrace has thousands of
    // frames, and this message ends up in logs and record headers.
    let what = match trap {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    };
    let what = if recursion { format!("{what} in runaway recursion") } else { what };
    let stderr = store.data().stderr_tail();
    let message = if stderr.is_empty() { what } else { format!("{stderr} ({what})") };
    CallError::Trap { kind, message }
}

/// Checks a plugin's output against the contract in `wit/detector.wit`.
pub(super) fn validate(batch: &Batch, output: &Output) -> Result<(), CallError> {
    let rows = batch.routers.len();
    let points = rows * batch.columns.len();
    let bad = |msg: String| Err(CallError::InvalidOutput(msg));
    if output.scores.len() != points {
        return bad(format!("{} scores for {points} points", output.scores.len()));
    }
    if let Some(i) = output.scores.iter().position(|s| !(0.0..=1.0).contains(s)) {
        return bad(format!("score {} at point {i} is outside [0, 1]", output.scores[i]));
    }
    if output.anomalies.len() > points {
        return bad(format!("{} anomalies for {points} points", output.anomalies.len()));
    }
    for a in &output.anomalies {
        if a.row as usize >= rows || a.column as usize >= batch.columns.len() {
            return bad(format!("anomaly at row {} column {} is outside the batch", a.row, a.column));
        }
        if !(0.0..=1.0).contains(&a.score) {
            return bad(format!("anomaly score {} is outside [0, 1]", a.score));
        }
        if !a.observed.is_finite() || !a.expected.is_finite() {
            return bad(format!("anomaly observed {} and expected {} must be finite", a.observed, a.expected));
        }
        // A bound may be infinite on its own side only: "no bound there".
        if a.lower.is_nan() || a.upper.is_nan() || a.lower == f64::INFINITY || a.upper == f64::NEG_INFINITY {
            return bad(format!("anomaly bounds [{}, {}] are not a range", a.lower, a.upper));
        }
        if a.lower > a.upper {
            return bad(format!("anomaly lower bound {} is above its upper bound {}", a.lower, a.upper));
        }
        if a.reason.len() > MAX_REASON_BYTES {
            return bad(format!("anomaly reason is {} bytes, over {MAX_REASON_BYTES}", a.reason.len()));
        }
    }
    Ok(())
}
