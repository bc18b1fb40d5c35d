//! The plugins a host runs, and every change to them: loads from the plugin directory and
//! uploads, enable, disable, configure, delete, and quarantine of a plugin that keeps failing.
//!
//! The registry is the one place that decides which version of which plugin runs with which
//! configuration. Partition workers never take its lock on the hot path: they compare
//! [`Registry::generation`] with the one they last saw between batches, and only when it moved
//! do they fetch the new [`View`] and reconcile their instances with it (swapping versions,
//! carrying state over, see [`crate::reconcile`]).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use routewatch_engine::registry::{Registry, QuarantinePolicy};
//! # use routewatch_runtime::{Runtime, RuntimeConfig};
//! # use routewatch_engine::metrics::Metrics;
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let registry = Registry::new(runtime, Arc::new(Metrics::default()), QuarantinePolicy::default(), None)?;
//! let status = registry.install_file("plugins/routewatch_arima.wasm".as_ref())?;
//! assert_eq!(status.name, "arima");
//! registry.configure("arima", serde_json::json!({"threshold": 6.0}))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod classifier;
mod quarantine;
mod settings;
pub mod signing;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use routewatch_telemetry::Metric;
use serde::{Deserialize, Serialize};

pub use classifier::{
    CLASSIFIER_STATES, ClassifierCounters, ClassifierCountersView, ClassifierGuard, ClassifierStatus, ClassifierView,
    LiveClassifier,
};
pub use quarantine::{Health, QuarantinePolicy};
use settings::{PluginSettings, Settings};
pub use signing::{SignatureError, TrustedKeys};

use crate::metrics::Metrics;
use crate::metrics::{NameLabels, PluginLabels, StateLabels};
use classifier::ClassifierSlot;
use routewatch_runtime::classifier::ClassifierLoadError;
use routewatch_runtime::{LoadError, Loaded, Plugin, Runtime};

/// The states a plugin can be in, as the API and the `routewatch_plugin_state` metric name them.
/// `partial`: the current version runs on some partitions only, because others refused to hand
/// it their state (see [`PluginStatus::partitions`]).
pub const STATES: [&str; 4] = ["running", "partial", "quarantined", "disabled"];

/// Largest configuration a plugin may be given, as JSON text.
pub const MAX_CONFIG_BYTES: usize = 64 << 10;

/// Why a registry operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The component does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The component is not a classifier this host can run (or is a detector where a
    /// classifier was expected).
    #[error(transparent)]
    Classifier(ClassifierLoadError),
    /// Detectors and the classifier share one namespace (their metrics do).
    #[error("the name {name:?} is taken by {by}; detectors and the classifier need names of their own")]
    NameInUse {
        /// The name.
        name: String,
        /// What has it.
        by: &'static str,
    },
    /// No plugin has that name.
    #[error("no plugin is named {0:?}")]
    NotFound(String),
    /// The configuration does not fit the plugin's schema, or the plugin refused it.
    #[error("invalid configuration for {plugin}: {reason}")]
    InvalidConfig {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// A component names a plugin that already comes from elsewhere.
    #[error(
        "plugin {plugin:?} already comes from {existing}; replacing it with a component from {incoming} needs an \
         explicit replace (upload with ?replace=true, or remove the other one first)"
    )]
    Conflict {
        /// The plugin's name.
        plugin: String,
        /// Where it comes from now.
        existing: String,
        /// Where the new component comes from.
        incoming: String,
    },
    /// The component's signature is missing or not trusted.
    #[error("plugin refused: {0}")]
    Signature(#[from] SignatureError),
    /// Reading or writing the plugin directory or its settings failed.
    #[error("{0}")]
    Io(String),
}

/// Counts kept per plugin for the API (Prometheus has the same, by version).
#[derive(Debug, Default)]
pub struct PluginCounters {
    /// Calls of `process`.
    pub invocations: AtomicU64,
    /// Points scored.
    pub points: AtomicU64,
    /// Anomalies found.
    pub anomalies: AtomicU64,
    /// Calls that failed.
    pub traps: AtomicU64,
    /// Records isolated as poison.
    pub poison_records: AtomicU64,
    /// Versions loaded.
    pub reloads: AtomicU64,
}

impl PluginCounters {
    fn snapshot(&self) -> CountersView {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersView {
            invocations: get(&self.invocations),
            points: get(&self.points),
            anomalies: get(&self.anomalies),
            traps: get(&self.traps),
            poison_records: get(&self.poison_records),
            reloads: get(&self.reloads),
        }
    }
}

/// Where a plugin came from. A plugin keeps its source: a component from another source that
/// claims its name is refused unless the change says `replace` (see [`Registry::upload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file: in the watched plugin directory, or named in the configuration.
    File(PathBuf),
    /// Uploaded over the API to a host without a plugin directory (kept in memory only).
    Upload,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Upload => f.write_str("an upload"),
        }
    }
}

/// What a component file turned out to be, once installed.
#[derive(Debug, Clone)]
pub enum Installed {
    /// A detector.
    Detector(Box<PluginStatus>),
    /// The classifier, now live.
    Classifier(Box<ClassifierStatus>),
}

/// What a partition worker needs of one plugin.
#[derive(Clone)]
pub struct Active {
    /// The plugin's name.
    pub name: String,
    /// The version to run.
    pub plugin: Plugin,
    /// The configuration as JSON text, if any.
    pub config: Option<String>,
    /// Changes whenever the configuration does, so workers reconfigure only then.
    pub config_rev: u64,
    /// Enabled and not quarantined.
    pub runnable: bool,
    /// The operator chose to start this version without its predecessor's state, on the
    /// partitions where it refused that state.
    pub start_fresh: bool,
    /// Its counters, shared by every partition.
    pub counters: Arc<PluginCounters>,
}

/// The plugins as workers see them at one generation.
pub struct View {
    /// Changes with every change to the registry.
    pub generation: u64,
    /// The plugins, enabled or not.
    pub plugins: Vec<Active>,
}

/// A plugin as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginStatus {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it says it does.
    pub description: String,
    /// SHA-256 of the component.
    pub sha256: String,
    /// `running`, `quarantined` or `disabled`.
    pub state: String,
    /// Whether the operator enabled it.
    pub enabled: bool,
    /// The metrics it reads.
    pub metrics: Vec<String>,
    /// Its configuration, if set.
    pub config: Option<serde_json::Value>,
    /// The JSON Schema of its configuration.
    pub config_schema: serde_json::Value,
    /// `file` or `upload`.
    pub source: String,
    /// The file it was loaded from, if any.
    pub path: Option<PathBuf>,
    /// Unix milliseconds when this version was loaded.
    pub loaded_at: i64,
    /// Set while it is quarantined.
    pub quarantine: Option<QuarantineView>,
    /// How many times it was quarantined.
    pub quarantines: u64,
    /// The last change to this plugin that was refused (a version that did not load, a
    /// configuration or state it would not take), so an operator can see why.
    pub last_error: Option<String>,
    /// What each partition of this host really runs (a partition that refused the current
    /// version keeps the one before).
    pub partitions: Vec<PartitionVersion>,
    /// Whether the current version may start without the old state where it refused it.
    pub start_fresh: bool,
    /// The last time this plugin was taken over by a component from another source.
    pub takeover: Option<String>,
    /// Its counters.
    pub counters: CountersView,
}

/// One partition's running version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionVersion {
    /// The partition.
    pub partition: i32,
    /// The version running there.
    pub version: String,
    /// SHA-256 of that version.
    pub sha256: String,
}

/// A plugin's quarantine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuarantineView {
    /// The failure that put it there.
    pub reason: String,
    /// Seconds until the plugin is given another chance.
    pub remaining_secs: f64,
}

/// A plugin's counters, as the API shows them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CountersView {
    /// Calls of `process`.
    pub invocations: u64,
    /// Points scored.
    pub points: u64,
    /// Anomalies found.
    pub anomalies: u64,
    /// Calls that failed.
    pub traps: u64,
    /// Records isolated as poison.
    pub poison_records: u64,
    /// Versions loaded.
    pub reloads: u64,
}

struct Entry {
    plugin: Plugin,
    schema: Arc<jsonschema::Validator>,
    source: Source,
    loaded_at: SystemTime,
    health: Health,
    last_error: Option<String>,
    start_fresh: bool,
    takeover: Option<String>,
    counters: Arc<PluginCounters>,
}

struct Inner {
    entries: BTreeMap<String, Entry>,
    /// Enabled flags and configurations, by plugin name (they outlive versions).
    settings: Settings,
    /// Bumped with every configuration change.
    config_rev: u64,
    /// Load failures of files not (or no longer) behind any plugin, by path.
    file_errors: BTreeMap<PathBuf, String>,
    /// What each partition runs, by plugin name then partition (reported by the workers).
    running: BTreeMap<String, BTreeMap<i32, Plugin>>,
    /// The cause classifier.
    classifier: ClassifierSlot,
}

/// The live set of plugins (see the module docs).
pub struct Registry {
    runtime: Runtime,
    metrics: Arc<Metrics>,
    policy: QuarantinePolicy,
    /// The watched plugin directory: uploads are written here and settings kept here.
    dir: Option<PathBuf>,
    trusted: TrustedKeys,
    inner: Mutex<Inner>,
    view: Mutex<Arc<View>>,
    generation: AtomicU64,
    classifier_view: Mutex<Arc<ClassifierView>>,
    classifier_generation: AtomicU64,
    classifier_guard: Mutex<Option<ClassifierGuard>>,
}

/// File in the plugin directory that keeps enable flags and configurations set over the API.
pub const SETTINGS_FILE: &str = "routewatch-plugins.json";

impl Registry {
    /// An empty registry. With `dir`, settings changed over the API are kept in
    /// `dir/routewatch-plugins.json` and uploads are written to `dir`.
    pub fn new(
        runtime: Runtime,
        metrics: Arc<Metrics>,
        policy: QuarantinePolicy,
        dir: Option<PathBuf>,
    ) -> Result<Registry, RegistryError> {
        let settings = match &dir {
            Some(dir) => Settings::load(&dir.join(SETTINGS_FILE)).map_err(RegistryError::Io)?,
            None => Settings::default(),
        };
        Ok(Registry {
            runtime,
            metrics,
            policy,
            dir,
            trusted: TrustedKeys::default(),
            inner: Mutex::new(Inner {
                entries: BTreeMap::new(),
                settings,
                config_rev: 0,
                file_errors: BTreeMap::new(),
                running: BTreeMap::new(),
                classifier: ClassifierSlot::default(),
            }),
            view: Mutex::new(Arc::new(View { generation: 0, plugins: Vec::new() })),
            generation: AtomicU64::new(0),
            classifier_view: Mutex::new(Arc::new(ClassifierView { generation: 0, live: None })),
            classifier_generation: AtomicU64::new(0),
            classifier_guard: Mutex::new(None),
        })
    }

    /// Requires every component to be signed by one of `keys` (see [`signing`]).
    pub fn with_trusted_keys(mut self, keys: TrustedKeys) -> Registry {
        self.trusted = keys;
        self
    }

    /// The plugin directory, if the host has one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The quarantine policy.
    pub fn policy(&self) -> &QuarantinePolicy {
        &self.policy
    }

    /// Sets a plugin's starting configuration unless one was already set over the API (which
    /// the settings file keeps, and which wins).
    pub fn set_initial_config(&self, name: &str, config: serde_json::Value) {
        let mut inner = self.lock();
        let entry = inner.settings.plugins.entry(name.to_owned()).or_default();
        if entry.config.is_none() {
            entry.config = Some(config);
        }
    }

    /// Changes whenever the set of plugins, their versions, configurations or states do.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current view for workers.
    pub fn view(&self) -> Arc<View> {
        self.view.lock().expect("registry view lock").clone()
    }

    /// Loads a component from a file and installs it (see [`Registry::install`]). Its
    /// signature, when signatures are required, is the file `PATH.sig` beside it.
    pub fn install_file(&self, path: &Path) -> Result<PluginStatus, RegistryError> {
        let result = std::fs::read(path)
            .map_err(|source| RegistryError::Load(LoadError::Read { path: path.display().to_string(), source }))
            .and_then(|bytes| {
                let signature = self.signature_file(path)?;
                self.install(&bytes, Source::File(path.to_owned()), signature.as_deref())
            });
        if let Err(err) = &result {
            self.note_file_error(path, &err.to_string());
        }
        result
    }

    /// Loads a component of either world from a file (what the plugin directory holds): a
    /// detector is installed as by [`Registry::install_file`], a classifier goes live in the
    /// classifier slot (see [`classifier`]). Errors are kept as for detectors.
    pub fn install_component_file(&self, path: &Path) -> Result<Installed, RegistryError> {
        let result = std::fs::read(path)
            .map_err(|source| RegistryError::Load(LoadError::Read { path: path.display().to_string(), source }))
            .and_then(|bytes| {
                let signature = self.signature_file(path)?;
                self.trusted.verify(&bytes, signature.as_deref())?;
                let source = Source::File(path.to_owned());
                if let Some(status) = self.same_as_running(&bytes, &source) {
                    return Ok(Installed::Detector(Box::new(status)));
                }
                if let Some(status) = self.same_as_classifier(&bytes) {
                    return Ok(Installed::Classifier(status));
                }
                match self.runtime.load_any(&bytes).map_err(classifier::load_error)? {
                    Loaded::Detector(plugin) => {
                        self.install_plugin(plugin, source, false).map(|s| Installed::Detector(Box::new(s)))
                    }
                    Loaded::Classifier(plugin) => {
                        self.install_classifier(plugin, source, false).map(|s| Installed::Classifier(Box::new(s)))
                    }
                }
            });
        if let Err(err) = &result {
            self.note_file_error(path, &err.to_string());
        }
        result
    }

    /// The signature beside a component file, read only when signatures are required.
    fn signature_file(&self, path: &Path) -> Result<Option<String>, RegistryError> {
        if !self.trusted.required() {
            return Ok(None);
        }
        let mut sig_path = path.as_os_str().to_owned();
        sig_path.push(".sig");
        match std::fs::metadata(&sig_path) {
            Ok(meta) if meta.len() > signing::MAX_SIGNATURE_BYTES as u64 => {
                Err(RegistryError::Signature(SignatureError::Malformed))
            }
            Ok(_) => std::fs::read_to_string(&sig_path)
                .map(Some)
                .map_err(|e| RegistryError::Io(format!("reading {}: {e}", Path::new(&sig_path).display()))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(RegistryError::Io(format!("reading {}: {err}", Path::new(&sig_path).display()))),
        }
    }

    /// Checks a component's signature (when required), compiles and checks it, and makes it the
    /// running version of its plugin. A component whose configuration is refused leaves the
    /// running version in place; a component identical to the running one changes nothing;
    /// one that names a plugin from another source is refused ([`RegistryError::Conflict`]).
    pub fn install(
        &self,
        bytes: &[u8],
        source: Source,
        signature: Option<&str>,
    ) -> Result<PluginStatus, RegistryError> {
        self.trusted.verify(bytes, signature)?;
        if let Some(status) = self.same_as_running(bytes, &source) {
            return Ok(status);
        }
        let plugin = self.runtime.load(bytes)?;
        self.install_plugin(plugin, source, false)
    }

    /// Installs an uploaded component (see [`Registry::install`]). With a plugin directory it
    /// is also written there, as `<name>.wasm` or over the file its plugin came from, so that
    /// it survives a restart (with its signature as `<name>.wasm.sig`). A plugin that came
    /// from elsewhere (a `--plugin` file, another file) is replaced only with `replace`, and
    /// the takeover is audited. Returns whether the plugin is new.
    pub fn upload(
        &self,
        bytes: &[u8],
        signature: Option<&str>,
        replace: bool,
    ) -> Result<(PluginStatus, bool), RegistryError> {
        self.trusted.verify(bytes, signature)?;
        if let Some(status) = self.same_as_running(bytes, &Source::Upload) {
            return Ok((status, false));
        }
        let plugin = match self.runtime.load_any(bytes).map_err(classifier::load_error)? {
            Loaded::Detector(plugin) => plugin,
            Loaded::Classifier(plugin) => {
                return Err(RegistryError::Load(LoadError::NotADetector(format!(
                    "it is the classifier {:?} (routewatch:classifier); a classifier is uploaded with PUT /api/v1/classifier",
                    plugin.info().name
                ))));
            }
        };
        let name = plugin.info().name.clone();
        let existing = self.get(&name);
        let source = match &self.dir {
            Some(dir) => {
                let path = existing
                    .as_ref()
                    .and_then(|s| s.path.clone())
                    .filter(|p| p.parent() == Some(dir.as_path()))
                    .unwrap_or_else(|| dir.join(format!("{name}.wasm")));
                Source::File(path)
            }
            None => Source::Upload,
        };
        let status = self.install_plugin(plugin, source.clone(), replace)?;
        if let Source::File(path) = &source {
            self.write_upload(&name, path, bytes, signature)?;
        }
        Ok((status, existing.is_none()))
    }

    /// Writes an installed upload to `path` in the plugin directory. Installed first, written
    /// second: the watcher then finds the file already running and does nothing. Written
    /// under a hidden name and renamed, so that it never sees half a file. The signature goes
    /// first, so a watcher that checks signatures finds it when the component arrives.
    fn write_upload(
        &self,
        name: &str,
        path: &Path,
        bytes: &[u8],
        signature: Option<&str>,
    ) -> Result<(), RegistryError> {
        let write = |path: &Path, contents: &[u8]| {
            let tmp = path.with_file_name(format!(".{name}.upload"));
            std::fs::write(&tmp, contents).and_then(|()| std::fs::rename(&tmp, path))
        };
        let mut sig_path = path.as_os_str().to_owned();
        sig_path.push(".sig");
        let written = match signature {
            Some(signature) => write(Path::new(&sig_path), signature.trim().as_bytes()),
            None => Ok(()),
        }
        .and_then(|()| write(path, bytes));
        written.map_err(|e| RegistryError::Io(format!("plugin runs, but writing {} failed: {e}", path.display())))
    }

    /// The live classifier's status if `bytes` are exactly its component.
    fn same_as_classifier(&self, bytes: &[u8]) -> Option<Box<ClassifierStatus>> {
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        let live = self.lock().classifier.sha256().is_some_and(|s| s == sha);
        if live { self.classifier().map(Box::new) } else { None }
    }

    /// The running plugin's status if `bytes` are exactly its component.
    fn same_as_running(&self, bytes: &[u8], source: &Source) -> Option<PluginStatus> {
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        let mut inner = self.lock();
        if let Source::File(path) = source {
            inner.file_errors.remove(path);
        }
        let (name, entry) = inner.entries.iter().find(|(_, e)| e.plugin.sha256() == sha)?;
        Some(status(name, entry, &inner))
    }

    fn install_plugin(&self, plugin: Plugin, source: Source, replace: bool) -> Result<PluginStatus, RegistryError> {
        let name = plugin.info().name.clone();
        let schema = compile_schema(&plugin)?;
        // The plugin must accept the configuration it will run with. That runs plugin code, so
        // it runs outside the lock; the configuration is then checked to be the same one.
        let mut inner = loop {
            let (config, rev) = {
                let inner = self.lock();
                self.check_source(&inner, &name, &source, replace)?;
                (inner.settings.plugins.get(&name).and_then(|s| s.config.clone()), inner.config_rev)
            };
            if let Some(config) = &config
                && let Err(reason) = check_config(&plugin, &schema, config)
            {
                let err = RegistryError::InvalidConfig { plugin: name.clone(), reason };
                if let Some(entry) = self.lock().entries.get_mut(&name) {
                    entry.last_error = Some(format!("version {} refused: {err}", plugin.info().version));
                }
                return Err(err);
            }
            let inner = self.lock();
            if inner.config_rev == rev {
                break inner;
            }
        };
        self.check_source(&inner, &name, &source, replace)?;
        if let Source::File(path) = &source {
            inner.file_errors.remove(path);
        }
        if let Some(entry) = inner.entries.get(&name)
            && entry.plugin.sha256() == plugin.sha256()
        {
            return Ok(status(&name, entry, &inner));
        }
        let replaced = inner.entries.remove(&name);
        let counters = replaced.as_ref().map(|e| e.counters.clone()).unwrap_or_default();
        let mut takeover = replaced.as_ref().and_then(|e| e.takeover.clone());
        if let Some(old) = &replaced {
            self.clear_state_metric(&name, old.plugin.info().version.as_str());
            if old.source != source {
                let audit = format!(
                    "{} (sha256 {}) replaced {} (sha256 {}) at unix ms {}",
                    source,
                    plugin.sha256(),
                    old.source,
                    old.plugin.sha256(),
                    now_ms()
                );
                tracing::warn!(
                    plugin = %name,
                    from_source = %old.source,
                    from_sha256 = %old.plugin.sha256(),
                    to_source = %source,
                    to_sha256 = %plugin.sha256(),
                    "plugin taken over by a component from another source"
                );
                self.metrics.plugin_takeovers.get_or_create(&NameLabels::new(&name)).inc();
                takeover = Some(audit);
            }
            counters.reloads.fetch_add(1, Ordering::Relaxed);
            self.metrics.plugin_reloads.get_or_create(&labels(&plugin)).inc();
        }
        tracing::info!(
            plugin = %name,
            version = %plugin.info().version,
            sha256 = %plugin.sha256(),
            replaced = replaced.as_ref().map(|e| e.plugin.info().version.clone()),
            "plugin installed"
        );
        let ignored = plugin.ignored(Metric::ALL.iter().map(|m| m.name()));
        if !ignored.is_empty() {
            tracing::warn!(
                plugin = %name,
                reads = ?plugin.info().metrics,
                ?ignored,
                "the plugin reads only the metrics it lists: it scores the others 0"
            );
        }
        // Counters start at zero with the version, so that rates and alerts see the first event.
        let version_labels = labels(&plugin);
        let _ = self.metrics.plugin_reloads.get_or_create(&version_labels);
        let _ = self.metrics.plugin_quarantines.get_or_create(&version_labels);
        let _ = self.metrics.plugin_poison_records.get_or_create(&version_labels);
        let _ = self.metrics.plugin_restore_failures.get_or_create(&version_labels);
        let entry = Entry {
            plugin,
            schema,
            source,
            loaded_at: SystemTime::now(),
            health: replaced.map(|e| e.health).unwrap_or_default(),
            last_error: None,
            start_fresh: false,
            takeover,
            counters,
        };
        inner.entries.insert(name.clone(), entry);
        let result = status(&name, &inner.entries[&name], &inner);
        self.publish(&mut inner);
        Ok(result)
    }

    /// Refuses a component from another source than the running plugin's, unless `replace`.
    fn check_source(&self, inner: &Inner, name: &str, source: &Source, replace: bool) -> Result<(), RegistryError> {
        if inner.classifier.name() == Some(name) {
            return Err(RegistryError::NameInUse { name: name.to_owned(), by: "the classifier" });
        }
        match inner.entries.get(name) {
            Some(entry) if entry.source != *source && !replace => Err(RegistryError::Conflict {
                plugin: name.to_owned(),
                existing: entry.source.to_string(),
                incoming: source.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Unloads the plugin that `path` provided, if any (its file was removed).
    pub fn remove_file(&self, path: &Path) -> Option<String> {
        let mut inner = self.lock();
        inner.file_errors.remove(path);
        if self.remove_classifier_file(&mut inner, path) {
            return Some("classifier".to_owned());
        }
        let name = inner.entries.iter().find(|(_, e)| e.source == Source::File(path.to_owned()))?.0.clone();
        let entry = inner.entries.remove(&name).expect("found above");
        self.clear_state_metric(&name, &entry.plugin.info().version);
        tracing::info!(plugin = %name, path = %path.display(), "plugin file removed: unloaded");
        self.publish(&mut inner);
        Some(name)
    }

    /// Unloads a plugin and deletes its file if it lives in the plugin directory (so that it
    /// does not come back at the next start).
    pub fn delete(&self, name: &str) -> Result<(), RegistryError> {
        let mut inner = self.lock();
        let entry = inner.entries.remove(name).ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        self.clear_state_metric(name, &entry.plugin.info().version);
        if let (Source::File(path), Some(dir)) = (&entry.source, &self.dir)
            && path.parent() == Some(dir.as_path())
            && let Err(err) = std::fs::remove_file(path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(plugin = %name, path = %path.display(), "could not delete the plugin's file: {err}");
        }
        inner.settings.plugins.remove(name);
        self.save_settings(&inner)?;
        tracing::info!(plugin = %name, "plugin deleted");
        self.publish(&mut inner);
        Ok(())
    }

    /// Enables or disables a plugin. A disabled plugin keeps its state and sees no records.
    /// Enabling a quarantined plugin also lifts its quarantine.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<PluginStatus, RegistryError> {
        let mut inner = self.lock();
        let entry = inner.entries.get_mut(name).ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        if enabled {
            entry.health.lift(Instant::now());
        }
        inner.settings.plugins.entry(name.to_owned()).or_default().enabled = enabled;
        self.save_settings(&inner)?;
        tracing::info!(plugin = %name, enabled, "plugin {}", if enabled { "enabled" } else { "disabled" });
        self.publish(&mut inner);
        Ok(status(name, &inner.entries[name], &inner))
    }

    /// Replaces a plugin's configuration after checking it against the plugin's schema and
    /// with the plugin itself: a fresh instance of the current version, and of every older
    /// version still running on some partition, must accept it.
    pub fn configure(&self, name: &str, config: serde_json::Value) -> Result<PluginStatus, RegistryError> {
        let invalid = |reason: String| RegistryError::InvalidConfig { plugin: name.to_owned(), reason };
        let size = config.to_string().len();
        if size > MAX_CONFIG_BYTES {
            return Err(invalid(format!("it is {size} bytes of JSON, over the cap of {MAX_CONFIG_BYTES}")));
        }
        let (current, schema, older) = {
            let inner = self.lock();
            let entry = inner.entries.get(name).ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
            let mut older: Vec<Plugin> = Vec::new();
            for plugin in inner.running.get(name).into_iter().flat_map(BTreeMap::values) {
                if plugin.sha256() != entry.plugin.sha256() && older.iter().all(|p| p.sha256() != plugin.sha256()) {
                    older.push(plugin.clone());
                }
            }
            (entry.plugin.clone(), entry.schema.clone(), older)
        };
        // The checks run plugin code, so they run outside the lock.
        check_config(&current, &schema, &config).map_err(invalid)?;
        for plugin in &older {
            let schema = compile_schema(plugin)?;
            check_config(plugin, &schema, &config)
                .map_err(|reason| invalid(format!("version {} still running here: {reason}", plugin.info().version)))?;
        }
        let mut inner = self.lock();
        if !inner.entries.contains_key(name) {
            return Err(RegistryError::NotFound(name.to_owned()));
        }
        inner.settings.plugins.entry(name.to_owned()).or_default().config = Some(config);
        inner.config_rev += 1;
        self.save_settings(&inner)?;
        tracing::info!(plugin = %name, "plugin reconfigured");
        self.publish(&mut inner);
        Ok(status(name, &inner.entries[name], &inner))
    }

    /// Lets the current version start without its predecessor's state on the partitions
    /// where it refused that state (its warm-up starts again there).
    pub fn start_fresh(&self, name: &str) -> Result<PluginStatus, RegistryError> {
        let mut inner = self.lock();
        let entry = inner.entries.get_mut(name).ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        entry.start_fresh = true;
        entry.last_error = None;
        tracing::warn!(plugin = %name, version = %entry.plugin.info().version, "plugin version may start without the old state");
        self.publish(&mut inner);
        Ok(status(name, &inner.entries[name], &inner))
    }

    /// A worker's report of which version of a plugin runs on its partition; `None` when the
    /// plugin no longer runs there.
    pub fn report_running(&self, partition: i32, name: &str, plugin: Option<&Plugin>) {
        let mut inner = self.lock();
        let changed = match plugin {
            Some(plugin) => {
                let partitions = inner.running.entry(name.to_owned()).or_default();
                let before = partitions.insert(partition, plugin.clone());
                before.is_none_or(|p| p.sha256() != plugin.sha256())
            }
            None => inner.running.get_mut(name).is_some_and(|p| p.remove(&partition).is_some()),
        };
        if changed {
            self.refresh_partition_metrics(&inner, name);
        }
    }

    /// A worker's report that it gave up its partition: nothing runs there any more.
    pub fn report_partition_stopped(&self, partition: i32) {
        let mut inner = self.lock();
        let names: Vec<String> = inner
            .running
            .iter_mut()
            .filter_map(|(name, partitions)| partitions.remove(&partition).map(|_| name.clone()))
            .collect();
        for name in names {
            self.refresh_partition_metrics(&inner, &name);
        }
    }

    /// `routewatch_plugin_partitions`: partitions per running version of one plugin.
    fn refresh_partition_metrics(&self, inner: &Inner, name: &str) {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        if let Some(entry) = inner.entries.get(name) {
            counts.insert(entry.plugin.info().version.clone(), 0);
        }
        for plugin in inner.running.get(name).into_iter().flat_map(BTreeMap::values) {
            *counts.entry(plugin.info().version.clone()).or_default() += 1;
        }
        for (version, count) in counts {
            let labels = PluginLabels { plugin: name.to_owned(), version };
            if count == 0 && inner.entries.get(name).is_none_or(|e| e.plugin.info().version != labels.version) {
                self.metrics.plugin_partitions.remove(&labels);
            } else {
                self.metrics.plugin_partitions.get_or_create(&labels).set(count);
            }
        }
    }

    /// A worker's report of a batch the plugin failed, even after a retry on a fresh instance.
    pub fn report_failure(&self, name: &str, sha256: &str, reason: &str) {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(name) else { return };
        if entry.plugin.sha256() != sha256 {
            return; // an old version, already replaced
        }
        let Some(backoff) = entry.health.record_failure(Instant::now(), &self.policy, reason) else { return };
        self.metrics.plugin_quarantines.get_or_create(&labels(&entry.plugin)).inc();
        tracing::error!(
            plugin = %name,
            backoff_secs = backoff.as_secs_f64(),
            "plugin quarantined: {}",
            entry.health.reason().unwrap_or_default()
        );
        self.publish(&mut inner);
    }

    /// A worker's report that a new version would not take over on its partition (the old one
    /// keeps running there).
    pub fn report_swap_refused(&self, name: &str, version: &str, partition: i32, reason: &str) {
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.get_mut(name) {
            entry.last_error = Some(format!("version {version} refused on partition {partition}: {reason}"));
        }
        self.metrics.plugin_reload_failures.get_or_create(&NameLabels::new(name)).inc();
    }

    /// Ends quarantines whose time is up; called about once a second.
    pub fn tick(&self) {
        let mut inner = self.lock();
        let now = Instant::now();
        let mut released = false;
        for (name, entry) in inner.entries.iter_mut() {
            if entry.health.release_if_due(now) {
                tracing::info!(plugin = %name, "quarantine over: the plugin runs again");
                released = true;
            }
        }
        if released {
            self.publish(&mut inner);
        }
        if inner.classifier.release_if_due(now) {
            tracing::info!("classifier quarantine over: it names causes again");
            self.publish_classifier(&mut inner);
        }
    }

    /// Every plugin, by name.
    pub fn list(&self) -> Vec<PluginStatus> {
        let inner = self.lock();
        inner.entries.iter().map(|(name, entry)| status(name, entry, &inner)).collect()
    }

    /// One plugin's status.
    pub fn get(&self, name: &str) -> Option<PluginStatus> {
        let inner = self.lock();
        inner.entries.get(name).map(|entry| status(name, entry, &inner))
    }

    /// Files in the plugin directory that failed to load, with why.
    pub fn file_errors(&self) -> BTreeMap<PathBuf, String> {
        self.lock().file_errors.clone()
    }

    fn note_file_error(&self, path: &Path, error: &str) {
        let mut inner = self.lock();
        tracing::error!(path = %path.display(), "plugin file not loaded, the running version stays: {error}");
        if inner.classifier.note_file_error(path, error) {
            self.metrics.plugin_load_failures.inc();
            return;
        }
        let behind = inner.entries.values_mut().find(|e| e.source == Source::File(path.to_owned()));
        match behind {
            Some(entry) => entry.last_error = Some(format!("{} not loaded: {error}", path.display())),
            None => {
                inner.file_errors.insert(path.to_owned(), error.to_owned());
            }
        }
        self.metrics.plugin_load_failures.inc();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("registry lock")
    }

    fn save_settings(&self, inner: &Inner) -> Result<(), RegistryError> {
        match &self.dir {
            Some(dir) => inner.settings.save(&dir.join(SETTINGS_FILE)).map_err(RegistryError::Io),
            None => Ok(()),
        }
    }

    /// Builds the workers' view from the entries, bumps the generation and refreshes the
    /// state metric. Called with the lock held, after every change.
    fn publish(&self, inner: &mut Inner) {
        let now = Instant::now();
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let plugins = inner
            .entries
            .iter()
            .map(|(name, entry)| {
                let settings = inner.settings.plugins.get(name).cloned().unwrap_or_default();
                Active {
                    name: name.clone(),
                    plugin: entry.plugin.clone(),
                    config: settings.config.as_ref().map(|c| c.to_string()),
                    config_rev: inner.config_rev,
                    runnable: settings.enabled && !entry.health.is_quarantined(now),
                    start_fresh: entry.start_fresh,
                    counters: entry.counters.clone(),
                }
            })
            .collect();
        for (name, entry) in &inner.entries {
            let current = state_of(name, entry, inner, now);
            for state in STATES {
                let labels = StateLabels::new(name, &entry.plugin.info().version, state);
                self.metrics.plugin_state.get_or_create(&labels).set(i64::from(state == current));
            }
        }
        *self.view.lock().expect("registry view lock") = Arc::new(View { generation, plugins });
        self.generation.store(generation, Ordering::Release);
    }

    fn clear_state_metric(&self, name: &str, version: &str) {
        for state in STATES {
            self.metrics.plugin_state.remove(&StateLabels::new(name, version, state));
        }
    }
}

fn labels(plugin: &Plugin) -> PluginLabels {
    PluginLabels { plugin: plugin.info().name.clone(), version: plugin.info().version.clone() }
}

fn state_of(name: &str, entry: &Entry, inner: &Inner, now: Instant) -> &'static str {
    let enabled = inner.settings.plugins.get(name).is_none_or(|s| s.enabled);
    let partial = inner.running.get(name).is_some_and(|p| p.values().any(|p| p.sha256() != entry.plugin.sha256()));
    if !enabled {
        "disabled"
    } else if entry.health.is_quarantined(now) {
        "quarantined"
    } else if partial {
        "partial"
    } else {
        "running"
    }
}

fn status(name: &str, entry: &Entry, inner: &Inner) -> PluginStatus {
    let now = Instant::now();
    let info = entry.plugin.info();
    let plugin_settings = inner.settings.plugins.get(name).cloned().unwrap_or_else(PluginSettings::default);
    let quarantine = entry.health.quarantined_until().filter(|&until| now < until).map(|until| QuarantineView {
        reason: entry.health.reason().unwrap_or_default().to_owned(),
        remaining_secs: until.duration_since(now).as_secs_f64(),
    });
    let partitions = inner
        .running
        .get(name)
        .into_iter()
        .flatten()
        .map(|(&partition, plugin)| PartitionVersion {
            partition,
            version: plugin.info().version.clone(),
            sha256: plugin.sha256().to_owned(),
        })
        .collect();
    PluginStatus {
        name: name.to_owned(),
        version: info.version.clone(),
        description: info.description.clone(),
        sha256: entry.plugin.sha256().to_owned(),
        state: state_of(name, entry, inner, now).to_owned(),
        enabled: plugin_settings.enabled,
        metrics: info.metrics.clone(),
        config: plugin_settings.config,
        config_schema: serde_json::from_str(&info.config_schema).unwrap_or(serde_json::Value::Null),
        source: match entry.source {
            Source::File(_) => "file",
            Source::Upload => "upload",
        }
        .to_owned(),
        path: match &entry.source {
            Source::File(path) => Some(path.clone()),
            Source::Upload => None,
        },
        loaded_at: entry.loaded_at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
        quarantine,
        quarantines: entry.health.quarantines(),
        last_error: entry.last_error.clone(),
        partitions,
        start_fresh: entry.start_fresh,
        takeover: entry.takeover.clone(),
        counters: entry.counters.snapshot(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn compile_schema(plugin: &Plugin) -> Result<Arc<jsonschema::Validator>, RegistryError> {
    let bad = |reason: String| RegistryError::Load(LoadError::BadInfo(format!("config_schema: {reason}")));
    let schema: serde_json::Value =
        serde_json::from_str(&plugin.info().config_schema).map_err(|e| bad(e.to_string()))?;
    jsonschema::validator_for(&schema).map(Arc::new).map_err(|e| bad(e.to_string()))
}

/// Checks a configuration against the plugin's schema, then with a fresh instance of it.
fn check_config(plugin: &Plugin, schema: &jsonschema::Validator, config: &serde_json::Value) -> Result<(), String> {
    check_schema(schema, config)?;
    let mut instance = plugin.instantiate().map_err(|e| e.to_string())?;
    instance.configure(&config.to_string()).map_err(|e| e.to_string())
}

/// Checks a configuration's size and its fit to a schema.
fn check_schema(schema: &jsonschema::Validator, config: &serde_json::Value) -> Result<(), String> {
    let size = config.to_string().len();
    if size > MAX_CONFIG_BYTES {
        return Err(format!("it is {size} bytes of JSON, over the cap of {MAX_CONFIG_BYTES}"));
    }
    let problems: Vec<String> =
        schema.iter_errors(config).take(5).map(|e| format!("{} (at {})", e, e.instance_path())).collect();
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(())
}
