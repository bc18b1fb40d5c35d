//! Cause classifiers: components of the `routewatch:classifier` world
//! (`wit/classifier/classifier.wit`), run in the same sandbox as detectors (the same store
//! set-up, CPU budget, memory cap, log limits and compiled-component cache).
//!
//! ```no_run
//! use routewatch_runtime::{Runtime, RuntimeConfig, classifier};
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let plugin = classifier::load_file(&runtime, "routewatch_classifier_forest.wasm".as_ref())?;
//! let mut instance = plugin.instantiate()?;
//! instance.configure("{}")?;
//! let answers = instance.classify(&[classifier::Features { layout: 1, values: vec![0.0; 115] }])?;
//! println!("{} ({:?})", answers[0].verdict, answers[0].top);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};

use super::instance::{CallStats, HostState, LogLimiter, sandboxed_call, sandboxed_store};
use super::{CallError, LoadError, Runtime};

mod bindings {
    // The generated items carry the WIT's own comments, where it has them.
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        world: "classifier-plugin",
        path: "../wit/classifier",
        additional_derives: [PartialEq],
    });
}

use bindings::routewatch::classifier::logging;
pub use bindings::routewatch::classifier::types::{Cause, Classification, ClassifierInfo, Features};
use bindings::{ClassifierPlugin as Bindings, ClassifierPluginPre};

/// Versions of the `routewatch:classifier` WIT package this host serves.
pub const SUPPORTED_CLASSIFIER_WIT_VERSIONS: &[&str] = &["0.1.0"];
/// The interface a classifier exports, without its version.
const CLASSIFIER_INTERFACE: &str = "routewatch:classifier/classifier";
/// Feature vectors sent in one call (the WIT world's documented cap).
pub const MAX_CLASSIFY_BATCH: usize = 1024;
/// Causes one classification may list.
pub const MAX_TOP: usize = 3;
/// Longest cause name or verdict, bytes.
pub const MAX_CAUSE_BYTES: usize = 64;
/// Causes a classifier may say it knows, and layouts it may read.
pub const MAX_INFO_CAUSES: usize = 256;
/// Feature layouts a classifier may say it reads.
pub const MAX_INFO_LAYOUTS: usize = 16;
/// The verdict of a classifier that is not sure.
pub const UNKNOWN: &str = "unknown";

/// Why a component is not a classifier this host can run.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierLoadError {
    /// What detectors and classifiers share: unreadable, not a component, no compile, imports.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Built against a version of the world this host does not serve.
    #[error(
        "component is built against WIT routewatch:classifier@{found}; this host serves {}",
        SUPPORTED_CLASSIFIER_WIT_VERSIONS.join(", ")
    )]
    UnsupportedVersion {
        /// The version it is built against.
        found: String,
    },
    /// It exports no `routewatch:classifier/classifier` interface.
    #[error("component does not implement the routewatch classifier world: {0}")]
    NotAClassifier(String),
    /// Its info breaks a cap or a rule of the world.
    #[error("classifier info is invalid: {0}")]
    BadInfo(String),
}

/// The classifier world's `logging` goes where a detector's does.
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

impl bindings::routewatch::classifier::types::Host for HostState {}

/// A classifier component, compiled and pre-linked. Cheap to clone.
#[derive(Clone)]
pub struct ClassifierPlugin {
    inner: Arc<Inner>,
}

struct Inner {
    info: ClassifierInfo,
    sha256: String,
    pre: ClassifierPluginPre<HostState>,
    limits: super::Limits,
    log: Arc<LogLimiter>,
}

impl std::fmt::Debug for ClassifierPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifierPlugin")
            .field("name", &self.inner.info.name)
            .field("version", &self.inner.info.version)
            .finish()
    }
}

impl ClassifierPlugin {
    /// What the classifier said about itself when it was loaded.
    pub fn info(&self) -> &ClassifierInfo {
        &self.inner.info
    }

    /// Hex SHA-256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// A fresh instance with the default configuration.
    pub fn instantiate(&self) -> Result<ClassifierInstance, CallError> {
        ClassifierInstance::new(
            &self.inner.pre,
            self.inner.info.name.clone(),
            self.inner.info.causes.clone(),
            self.inner.limits,
            self.inner.log.clone(),
        )
    }
}

/// One instance of a classifier. Not shared between threads.
pub struct ClassifierInstance {
    store: Store<HostState>,
    bindings: Bindings,
    budget: std::time::Duration,
    poisoned: bool,
    last: CallStats,
    /// The causes its info declares: the only names an answer may use (they become label
    /// values, so a classifier must not be able to invent new ones call after call).
    causes: Vec<String>,
}

impl ClassifierInstance {
    fn new(
        pre: &ClassifierPluginPre<HostState>,
        name: String,
        causes: Vec<String>,
        limits: super::Limits,
        log: Arc<LogLimiter>,
    ) -> Result<ClassifierInstance, CallError> {
        let mut store = sandboxed_store(pre.engine(), name, limits, log);
        let (bindings, last) = sandboxed_call(&mut store, limits.cpu_budget, |store| pre.instantiate(store));
        Ok(ClassifierInstance { store, bindings: bindings?, budget: limits.cpu_budget, poisoned: false, last, causes })
    }

    fn call<R>(
        &mut self,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
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

    /// Asks the instance for its info.
    pub fn info(&mut self) -> Result<ClassifierInfo, CallError> {
        self.call(|b, store| b.routewatch_classifier_classifier().call_info(store))
    }

    /// Applies a JSON configuration. A refusal keeps the instance and its old configuration.
    pub fn configure(&mut self, config: &str) -> Result<(), CallError> {
        self.call(|b, store| b.routewatch_classifier_classifier().call_configure(store, config))?
            .map_err(CallError::Plugin)
    }

    /// Classifies up to [`MAX_CLASSIFY_BATCH`] incidents; checks the answer against the
    /// contract before returning it.
    pub fn classify(&mut self, incidents: &[Features]) -> Result<Vec<Classification>, CallError> {
        if incidents.len() > MAX_CLASSIFY_BATCH {
            return Err(CallError::Plugin(format!(
                "{} incidents in one call, over the cap of {MAX_CLASSIFY_BATCH}",
                incidents.len()
            )));
        }
        let answers = self
            .call(|b, store| b.routewatch_classifier_classifier().call_classify(store, incidents))?
            .map_err(CallError::Plugin)?;
        validate(incidents.len(), &answers, &self.causes)?;
        Ok(answers)
    }

    /// Cost of the last call.
    pub fn last_call(&self) -> CallStats {
        self.last
    }

    /// Whether a trap ended the instance (it must not be called again).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

/// The contract of `classify`'s answer (wit/classifier/classifier.wit): one classification per
/// incident; at most [`MAX_TOP`] causes, most likely first, probabilities in [0, 1] summing to
/// at most 1; names and verdict of at most [`MAX_CAUSE_BYTES`]; the verdict the top cause or
/// `unknown`; every cause one of `declared` (the classifier's info).
pub fn validate(incidents: usize, answers: &[Classification], declared: &[String]) -> Result<(), CallError> {
    let bad = |m: String| Err(CallError::InvalidOutput(m));
    if answers.len() != incidents {
        return bad(format!("{} classifications for {incidents} incidents", answers.len()));
    }
    for (i, a) in answers.iter().enumerate() {
        if a.top.len() > MAX_TOP {
            return bad(format!("incident {i}: {} causes, over {MAX_TOP}", a.top.len()));
        }
        if a.verdict.len() > MAX_CAUSE_BYTES
            || a.top.iter().any(|c| c.name.is_empty() || c.name.len() > MAX_CAUSE_BYTES)
        {
            return bad(format!("incident {i}: a cause name or verdict is empty or over {MAX_CAUSE_BYTES} bytes"));
        }
        if let Some(c) = a.top.iter().find(|c| !declared.contains(&c.name)) {
            return bad(format!("incident {i}: cause {:?} is not one its info declares", c.name));
        }
        if a.top.iter().any(|c| !(0.0..=1.0).contains(&c.probability)) {
            return bad(format!("incident {i}: a probability outside [0, 1]"));
        }
        if a.top.windows(2).any(|w| w[0].probability < w[1].probability) {
            return bad(format!("incident {i}: causes not most likely first"));
        }
        if a.top.iter().map(|c| c.probability).sum::<f64>() > 1.0 + 1e-9 {
            return bad(format!("incident {i}: probabilities sum over 1"));
        }
        if a.verdict != UNKNOWN && a.top.first().is_none_or(|c| c.name != a.verdict) {
            return bad(format!("incident {i}: verdict {:?} is neither the top cause nor {UNKNOWN}", a.verdict));
        }
    }
    Ok(())
}

/// Loads a classifier from a file (see [`load`]).
pub fn load_file(runtime: &Runtime, path: &std::path::Path) -> Result<ClassifierPlugin, ClassifierLoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.display().to_string(), source })?;
    load(runtime, &bytes)
}

/// Compiles (or fetches from the runtime's cache), checks against the classifier world, and
/// reads the classifier's info from a first instance.
pub fn load(runtime: &Runtime, bytes: &[u8]) -> Result<ClassifierPlugin, ClassifierLoadError> {
    load_compiled(runtime, super::plugin::compile(runtime, bytes)?)
}

/// Whether a component's exports name the classifier interface, of any version (what tells a
/// classifier from a detector before either world is checked).
pub(super) fn exports_classifier(interfaces: &[String]) -> bool {
    interfaces.iter().any(|name| name.split_once('@').map_or(name.as_str(), |(i, _)| i) == CLASSIFIER_INTERFACE)
}

pub(super) fn load_compiled(
    runtime: &Runtime,
    compiled: super::plugin::Compiled,
) -> Result<ClassifierPlugin, ClassifierLoadError> {
    let engine = &runtime.engine;
    check_exports(&compiled.exported_interfaces(engine))?;
    let mut linker: Linker<HostState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| LoadError::Imports(format!("{e:#}")))?;
    Bindings::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
        .map_err(|e| LoadError::Imports(format!("{e:#}")))?;
    let pre = linker.instantiate_pre(&compiled.component).map_err(|e| LoadError::Imports(format!("{e:#}")))?;
    let pre = ClassifierPluginPre::new(pre).map_err(|e| ClassifierLoadError::NotAClassifier(format!("{e:#}")))?;
    // The probe only reads the info, so it declares no causes.
    let mut probe =
        ClassifierInstance::new(&pre, "(loading)".into(), Vec::new(), runtime.limits, runtime.log_limiter("(loading)"))
            .map_err(LoadError::Start)?;
    let info = probe.info().map_err(LoadError::Start)?;
    check_info(&info)?;
    compiled.keep(runtime)?;
    let log = runtime.log_limiter(&info.name);
    Ok(ClassifierPlugin {
        inner: Arc::new(Inner { info, sha256: hex::encode(compiled.sha), pre, limits: runtime.limits, log }),
    })
}

fn check_exports(names: &[String]) -> Result<(), ClassifierLoadError> {
    let found = names.iter().find_map(|name| {
        let (interface, version) = name.split_once('@').unwrap_or((name, ""));
        (interface == CLASSIFIER_INTERFACE).then_some(version)
    });
    match found {
        Some(version) if SUPPORTED_CLASSIFIER_WIT_VERSIONS.contains(&version) => Ok(()),
        Some(version) => Err(ClassifierLoadError::UnsupportedVersion { found: version.to_owned() }),
        None => Err(ClassifierLoadError::NotAClassifier(format!(
            "it exports {}; expected {CLASSIFIER_INTERFACE}@{}",
            if names.is_empty() { "no interfaces".to_owned() } else { names.join(", ") },
            SUPPORTED_CLASSIFIER_WIT_VERSIONS[0]
        ))),
    }
}

fn check_info(info: &ClassifierInfo) -> Result<(), ClassifierLoadError> {
    let bad = |m: String| Err(ClassifierLoadError::BadInfo(m));
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return bad("name must be 1 to 64 of [a-z0-9_-]".into());
    }
    if info.version.is_empty() || info.version.len() > 64 || info.version.chars().any(char::is_control) {
        return bad("version must be 1 to 64 characters, none of them control characters".into());
    }
    let caps = super::InfoCaps::DEFAULT;
    if info.description.len() > caps.description_bytes || info.config_schema.len() > caps.config_schema_bytes {
        return bad("description or config_schema over its cap".into());
    }
    if serde_json::from_str::<serde_json::Value>(&info.config_schema).is_err() {
        return bad("config_schema is not JSON".into());
    }
    if info.layouts.is_empty() || info.layouts.len() > MAX_INFO_LAYOUTS {
        return bad(format!("it must read 1 to {MAX_INFO_LAYOUTS} feature layouts"));
    }
    if info.causes.len() > MAX_INFO_CAUSES
        || info.causes.iter().any(|c| c.is_empty() || c.len() > MAX_CAUSE_BYTES || c == UNKNOWN)
    {
        return bad(format!(
            "at most {MAX_INFO_CAUSES} causes of 1 to {MAX_CAUSE_BYTES} bytes, none of them {UNKNOWN:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(verdict: &str, top: &[(&str, f64)]) -> Classification {
        Classification {
            verdict: verdict.into(),
            top: top.iter().map(|(n, p)| Cause { name: (*n).into(), probability: *p }).collect(),
        }
    }

    #[test]
    fn answers_are_checked_against_the_contract() {
        let declared: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert!(validate(1, &[answer("a", &[("a", 0.6), ("b", 0.3)])], &declared).is_ok());
        assert!(validate(1, &[answer(UNKNOWN, &[("a", 0.4), ("b", 0.3)])], &declared).is_ok());
        let broken = [
            (2, vec![answer("a", &[("a", 0.6)])]),
            (1, vec![answer("b", &[("a", 0.6), ("b", 0.3)])]),
            (1, vec![answer("a", &[("a", 0.3), ("b", 0.6)])]),
            (1, vec![answer("a", &[("a", 0.7), ("b", 0.6)])]),
            (1, vec![answer("a", &[("a", 1.5)])]),
            (1, vec![answer("a", &[("a", 0.4), ("b", 0.1), ("c", 0.1), ("d", 0.1)])]),
            (1, vec![answer(&"x".repeat(65), &[])]),
            // A name its info does not declare: label values must stay a known, bounded set.
            (1, vec![answer("e", &[("e", 0.6)])]),
            (1, vec![answer("a", &[("a", 0.6), ("made-up-7731", 0.3)])]),
        ];
        for (n, answers) in broken {
            assert!(validate(n, &answers, &declared).is_err(), "{answers:?}");
        }
    }
}
