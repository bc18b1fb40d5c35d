//! The live cause classifier: one slot in the registry, swapped at run time like a detector's
//! version, from the same places (the plugin directory, an upload, the `--classifier` file),
//! under the same signature rules and quarantine policy.
//!
//! The registry tells a classifier from a detector by the world its component exports. Only
//! one classifier is live at a time: the last one installed. The one given at start (the
//! `--classifier` file) is kept aside as the fallback: when a classifier from the directory or
//! an upload is removed, the fallback is live again; when the fallback itself is removed, no
//! classifier is (incidents are then `unclassified`).
//!
//! Incident stages never take the registry's lock on the hot path: they compare
//! [`Registry::classifier_generation`] with the one they last saw, and only when it moved do
//! they fetch the new [`ClassifierView`] and start a fresh instance of what it names.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use routewatch_runtime::Loaded;
use routewatch_runtime::classifier::{ClassifierInfo, ClassifierLoadError, ClassifierPlugin};
use serde::{Deserialize, Serialize};

use super::{Health, Inner, QuarantineView, Registry, RegistryError, Source, check_schema};
use crate::metrics::{PluginLabels, StateLabels};

/// The states of the classifier, as the API and `routewatch_plugin_state` name them.
pub const CLASSIFIER_STATES: [&str; 2] = ["running", "quarantined"];

/// A check a new classifier must pass before it goes live, besides its own (the host's
/// self-healing refuses one that cannot name the causes its policies act on).
pub type ClassifierGuard = Box<dyn Fn(&ClassifierInfo) -> Result<(), String> + Send + Sync>;

/// Counts kept for the API, across versions (Prometheus has them by version).
#[derive(Debug, Default)]
pub struct ClassifierCounters {
    /// Calls of `classify`.
    pub calls: AtomicU64,
    /// Incidents named a cause.
    pub incidents: AtomicU64,
    /// Calls that failed (trap, CPU budget, an answer that breaks the contract, a refusal).
    pub failures: AtomicU64,
    /// Classifiers swapped in.
    pub reloads: AtomicU64,
}

/// The classifier's counters, as the API shows them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ClassifierCountersView {
    /// Calls of `classify`.
    pub calls: u64,
    /// Incidents named a cause.
    pub incidents: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Classifiers swapped in.
    pub reloads: u64,
}

/// What an incident stage needs of the live classifier.
#[derive(Clone)]
pub struct LiveClassifier {
    /// The component.
    pub plugin: ClassifierPlugin,
    /// Its configuration, JSON text.
    pub config: String,
    /// Not quarantined.
    pub runnable: bool,
    /// Its counters, shared by every stage.
    pub counters: Arc<ClassifierCounters>,
}

/// The classifier as incident stages see it at one generation.
pub struct ClassifierView {
    /// Changes with every change to the classifier (a swap, a configuration, a quarantine).
    pub generation: u64,
    /// The live classifier, if any.
    pub live: Option<LiveClassifier>,
}

/// The classifier as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifierStatus {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it says it does.
    pub description: String,
    /// SHA-256 of the component.
    pub sha256: String,
    /// The feature layouts it reads.
    pub layouts: Vec<u32>,
    /// The causes it can name (besides `unknown`).
    pub causes: Vec<String>,
    /// `running` or `quarantined`.
    pub state: String,
    /// Its configuration.
    pub config: serde_json::Value,
    /// The JSON Schema of its configuration.
    pub config_schema: serde_json::Value,
    /// `file` or `upload`.
    pub source: String,
    /// The file it was loaded from, if any.
    pub path: Option<PathBuf>,
    /// Unix milliseconds when it went live.
    pub loaded_at: i64,
    /// Set while it is quarantined.
    pub quarantine: Option<QuarantineView>,
    /// How many times a classifier was quarantined here.
    pub quarantines: u64,
    /// The last classifier change that was refused, and why.
    pub last_error: Option<String>,
    /// The classifier given at start (`name@version`), live again if this one is removed.
    pub fallback: Option<String>,
    /// Its counters.
    pub counters: ClassifierCountersView,
}

#[derive(Clone)]
pub(super) struct ClassifierEntry {
    plugin: ClassifierPlugin,
    source: Source,
    loaded_at: SystemTime,
}

/// The classifier part of the registry's state (under the registry's lock).
#[derive(Default)]
pub(super) struct ClassifierSlot {
    live: Option<ClassifierEntry>,
    /// The one given at start.
    fallback: Option<ClassifierEntry>,
    health: Health,
    last_error: Option<String>,
    counters: Arc<ClassifierCounters>,
}

impl ClassifierSlot {
    /// The live classifier's name, if any (names are unique across detectors and it).
    pub(super) fn name(&self) -> Option<&str> {
        self.live.as_ref().map(|e| e.plugin.info().name.as_str())
    }

    pub(super) fn sha256(&self) -> Option<&str> {
        self.live.as_ref().map(|e| e.plugin.sha256())
    }

    /// Notes a refused file behind the live classifier; false when it is not behind it.
    pub(super) fn note_file_error(&mut self, path: &Path, error: &str) -> bool {
        let behind = self.live.as_ref().is_some_and(|e| e.source == Source::File(path.to_owned()));
        if behind {
            self.last_error = Some(format!("{} not loaded: {error}", path.display()));
        }
        behind
    }

    /// Ends a quarantine whose time is up. Returns whether it did.
    pub(super) fn release_if_due(&mut self, now: Instant) -> bool {
        self.live.is_some() && self.health.release_if_due(now)
    }
}

fn labels(plugin: &ClassifierPlugin) -> PluginLabels {
    PluginLabels { plugin: plugin.info().name.clone(), version: plugin.info().version.clone() }
}

/// A classifier load error as the registry reports it: what detectors share stays a load error.
pub(super) fn load_error(err: ClassifierLoadError) -> RegistryError {
    match err {
        ClassifierLoadError::Load(err) => RegistryError::Load(err),
        other => RegistryError::Classifier(other),
    }
}

impl Registry {
    /// Sets the classifier's configuration unless one was set over the API (which the settings
    /// file keeps, and which wins). Without either, a classifier is configured with `{}`.
    pub fn set_initial_classifier_config(&self, config: serde_json::Value) {
        let mut inner = self.lock();
        if inner.settings.classifier_config.is_none() {
            inner.settings.classifier_config = Some(config);
        }
    }

    /// Adds a check every new classifier must pass before it goes live.
    pub fn set_classifier_guard(&self, guard: ClassifierGuard) {
        *self.classifier_guard.lock().expect("classifier guard lock") = Some(guard);
    }

    /// Changes whenever the live classifier, its configuration or its state do.
    pub fn classifier_generation(&self) -> u64 {
        self.classifier_generation.load(Ordering::Acquire)
    }

    /// The current view for incident stages.
    pub fn classifier_view(&self) -> Arc<ClassifierView> {
        self.classifier_view.lock().expect("classifier view lock").clone()
    }

    /// The live classifier, if any.
    pub fn classifier(&self) -> Option<ClassifierStatus> {
        let inner = self.lock();
        classifier_status(&inner, Instant::now())
    }

    /// Loads the classifier given at start from `path` and makes it live and the fallback. Its
    /// signature, when signatures are required, is the file `PATH.sig` beside it.
    pub fn install_classifier_file(&self, path: &Path) -> Result<ClassifierStatus, RegistryError> {
        let bytes = std::fs::read(path).map_err(|source| {
            RegistryError::Load(routewatch_runtime::LoadError::Read { path: path.display().to_string(), source })
        })?;
        let signature = self.signature_file(path)?;
        self.trusted.verify(&bytes, signature.as_deref())?;
        let plugin = routewatch_runtime::classifier::load(&self.runtime, &bytes).map_err(load_error)?;
        self.install_classifier(plugin, Source::File(path.to_owned()), true)
    }

    /// Installs an uploaded classifier (signature, size and world checked as for detectors).
    /// With a plugin directory it is also written there, as `<name>.wasm` or over the file
    /// the live classifier came from, so that it survives a restart. Returns whether no
    /// classifier was live before.
    pub fn upload_classifier(
        &self,
        bytes: &[u8],
        signature: Option<&str>,
    ) -> Result<(ClassifierStatus, bool), RegistryError> {
        self.trusted.verify(bytes, signature)?;
        let plugin = match self.runtime.load_any(bytes).map_err(load_error)? {
            Loaded::Classifier(plugin) => plugin,
            Loaded::Detector(plugin) => {
                return Err(RegistryError::Classifier(ClassifierLoadError::NotAClassifier(format!(
                    "it is the detector {:?} (routewatch:detector); detectors are uploaded to POST /api/v1/plugins",
                    plugin.info().name
                ))));
            }
        };
        let name = plugin.info().name.clone();
        let (created, source) = {
            let inner = self.lock();
            let live = inner.classifier.live.as_ref();
            let source = match &self.dir {
                Some(dir) => Source::File(
                    live.and_then(|e| match &e.source {
                        Source::File(path) if path.parent() == Some(dir.as_path()) => Some(path.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| dir.join(format!("{name}.wasm"))),
                ),
                None => Source::Upload,
            };
            (live.is_none(), source)
        };
        let status = self.install_classifier(plugin, source.clone(), false)?;
        if let Source::File(path) = &source {
            self.write_upload(&name, path, bytes, signature)?;
        }
        Ok((status, created))
    }

    /// Checks a classifier (its name, its configuration with a fresh instance, the guard) and
    /// makes it live. The checks run plugin code, so they run outside the lock. A refused one
    /// leaves the live classifier as it was and says why in its status.
    pub(super) fn install_classifier(
        &self,
        plugin: ClassifierPlugin,
        source: Source,
        fallback: bool,
    ) -> Result<ClassifierStatus, RegistryError> {
        let name = plugin.info().name.clone();
        let result = self.check_classifier(&plugin);
        let mut inner = match result {
            Ok(inner) => inner,
            Err(err) => {
                let mut inner = self.lock();
                inner.classifier.last_error =
                    Some(format!("classifier {name} {} refused: {err}", plugin.info().version));
                return Err(err);
            }
        };
        if let Source::File(path) = &source {
            inner.file_errors.remove(path);
        }
        let entry = ClassifierEntry { plugin: plugin.clone(), source, loaded_at: SystemTime::now() };
        if fallback {
            inner.classifier.fallback = Some(entry.clone());
        }
        let slot = &mut inner.classifier;
        if slot.live.as_ref().is_some_and(|e| e.plugin.sha256() == plugin.sha256()) {
            slot.live = Some(entry);
            let status = classifier_status(&inner, Instant::now()).expect("live");
            return Ok(status);
        }
        let replaced = slot.live.replace(entry);
        // A new classifier gets its chance at once; the backoff of the next quarantine is kept.
        slot.health.lift(Instant::now());
        slot.last_error = None;
        if let Some(old) = &replaced {
            slot.counters.reloads.fetch_add(1, Ordering::Relaxed);
            self.metrics.plugin_reloads.get_or_create(&labels(&plugin)).inc();
            self.clear_state_metric(&old.plugin.info().name, &old.plugin.info().version);
        }
        let _ = self.metrics.plugin_reloads.get_or_create(&labels(&plugin));
        let _ = self.metrics.plugin_quarantines.get_or_create(&labels(&plugin));
        tracing::info!(
            classifier = %name,
            version = %plugin.info().version,
            sha256 = %plugin.sha256(),
            replaced = replaced.as_ref().map(|e| format!("{}@{}", e.plugin.info().name, e.plugin.info().version)),
            "classifier live"
        );
        self.publish_classifier(&mut inner);
        Ok(classifier_status(&inner, Instant::now()).expect("live"))
    }

    /// Runs the checks of [`Registry::install_classifier`] and returns the lock, taken again
    /// with the configuration they checked still in force.
    fn check_classifier(&self, plugin: &ClassifierPlugin) -> Result<std::sync::MutexGuard<'_, Inner>, RegistryError> {
        let name = &plugin.info().name;
        loop {
            let config = {
                let inner = self.lock();
                self.check_classifier_name(&inner, name)?;
                inner.settings.classifier_config.clone().unwrap_or_else(|| serde_json::json!({}))
            };
            // The guard first: it runs no plugin code.
            if let Some(guard) = self.classifier_guard.lock().expect("classifier guard lock").as_ref() {
                guard(plugin.info()).map_err(|reason| RegistryError::InvalidConfig { plugin: name.clone(), reason })?;
            }
            check_classifier_config(plugin, &config)
                .map_err(|reason| RegistryError::InvalidConfig { plugin: name.clone(), reason })?;
            let inner = self.lock();
            let now = inner.settings.classifier_config.clone().unwrap_or_else(|| serde_json::json!({}));
            if now == config {
                self.check_classifier_name(&inner, name)?;
                return Ok(inner);
            }
        }
    }

    fn check_classifier_name(&self, inner: &Inner, name: &str) -> Result<(), RegistryError> {
        if inner.entries.contains_key(name) {
            return Err(RegistryError::NameInUse { name: name.to_owned(), by: "a detector" });
        }
        Ok(())
    }

    /// Replaces the classifier's configuration after checking it with a fresh instance of the
    /// live classifier (and of the fallback, which must run with it too).
    pub fn configure_classifier(&self, config: serde_json::Value) -> Result<ClassifierStatus, RegistryError> {
        let (live, fallback) = {
            let inner = self.lock();
            let live = inner.classifier.live.as_ref().ok_or_else(|| RegistryError::NotFound("classifier".into()))?;
            (live.plugin.clone(), inner.classifier.fallback.as_ref().map(|e| e.plugin.clone()))
        };
        let invalid = |plugin: &ClassifierPlugin, reason: String| RegistryError::InvalidConfig {
            plugin: plugin.info().name.clone(),
            reason,
        };
        check_classifier_config(&live, &config).map_err(|reason| invalid(&live, reason))?;
        if let Some(fallback) = fallback.filter(|f| f.sha256() != live.sha256()) {
            check_classifier_config(&fallback, &config)
                .map_err(|reason| invalid(&fallback, format!("the fallback classifier refuses it: {reason}")))?;
        }
        let mut inner = self.lock();
        if inner.classifier.sha256() != Some(live.sha256()) {
            return Err(RegistryError::Io(
                "the classifier changed while its configuration was checked; try again".into(),
            ));
        }
        inner.settings.classifier_config = Some(config);
        self.save_settings(&inner)?;
        tracing::info!(classifier = %live.info().name, "classifier reconfigured");
        self.publish_classifier(&mut inner);
        Ok(classifier_status(&inner, Instant::now()).expect("live"))
    }

    /// Removes the live classifier (and its file, if it lives in the plugin directory): the
    /// fallback is live again, or none if it was the fallback.
    pub fn delete_classifier(&self) -> Result<(), RegistryError> {
        let mut inner = self.lock();
        let live = inner.classifier.live.clone().ok_or_else(|| RegistryError::NotFound("classifier".into()))?;
        if let (Source::File(path), Some(dir)) = (&live.source, &self.dir)
            && path.parent() == Some(dir.as_path())
            && let Err(err) = std::fs::remove_file(path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), "could not delete the classifier's file: {err}");
        }
        self.unload_classifier(&mut inner, &live.source);
        Ok(())
    }

    /// The classifier behind `path` is gone (its file was removed). Returns whether one was.
    pub(super) fn remove_classifier_file(&self, inner: &mut Inner, path: &Path) -> bool {
        let source = Source::File(path.to_owned());
        let behind = inner.classifier.live.as_ref().is_some_and(|e| e.source == source)
            || inner.classifier.fallback.as_ref().is_some_and(|e| e.source == source);
        if behind {
            self.unload_classifier(inner, &source);
        }
        behind
    }

    fn unload_classifier(&self, inner: &mut Inner, source: &Source) {
        let slot = &mut inner.classifier;
        if slot.fallback.as_ref().is_some_and(|e| e.source == *source) {
            slot.fallback = None;
        }
        if slot.live.as_ref().is_none_or(|e| e.source != *source) {
            return;
        }
        let old = slot.live.take().expect("checked above");
        self.clear_state_metric(&old.plugin.info().name, &old.plugin.info().version);
        slot.live = slot.fallback.clone();
        slot.health.lift(Instant::now());
        tracing::info!(
            classifier = %old.plugin.info().name,
            source = %source,
            now_live = slot.live.as_ref().map(|e| format!("{}@{}", e.plugin.info().name, e.plugin.info().version)),
            "classifier removed"
        );
        self.publish_classifier(inner);
    }

    /// An incident stage's report of a call of the live classifier that failed.
    pub fn report_classifier_failure(&self, sha256: &str, reason: &str) {
        let mut inner = self.lock();
        if inner.classifier.sha256() != Some(sha256) {
            return; // a classifier already replaced
        }
        let slot = &mut inner.classifier;
        let Some(backoff) = slot.health.record_failure(Instant::now(), &self.policy, reason) else { return };
        let plugin = slot.live.as_ref().expect("checked above").plugin.clone();
        self.metrics.plugin_quarantines.get_or_create(&labels(&plugin)).inc();
        tracing::error!(
            classifier = %plugin.info().name,
            backoff_secs = backoff.as_secs_f64(),
            "classifier quarantined (incidents keep their causes meanwhile): {}",
            slot.health.reason().unwrap_or_default()
        );
        self.publish_classifier(&mut inner);
    }

    /// Builds the stages' view, bumps the generation and refreshes the state metric. Called
    /// with the lock held, after every change.
    pub(super) fn publish_classifier(&self, inner: &mut Inner) {
        let now = Instant::now();
        let slot = &inner.classifier;
        let live = slot.live.as_ref().map(|entry| {
            let runnable = !slot.health.is_quarantined(now);
            let current = if runnable { "running" } else { "quarantined" };
            for state in CLASSIFIER_STATES {
                let labels = StateLabels::new(&entry.plugin.info().name, &entry.plugin.info().version, state);
                self.metrics.plugin_state.get_or_create(&labels).set(i64::from(state == current));
            }
            LiveClassifier {
                plugin: entry.plugin.clone(),
                config: inner.settings.classifier_config.as_ref().map_or_else(|| "{}".to_owned(), |c| c.to_string()),
                runnable,
                counters: slot.counters.clone(),
            }
        });
        let mut view = self.classifier_view.lock().expect("classifier view lock");
        let generation = view.generation + 1;
        *view = Arc::new(ClassifierView { generation, live });
        self.classifier_generation.store(generation, Ordering::Release);
    }
}

fn classifier_status(inner: &Inner, now: Instant) -> Option<ClassifierStatus> {
    let slot = &inner.classifier;
    let entry = slot.live.as_ref()?;
    let info = entry.plugin.info();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let quarantine = slot.health.quarantined_until().filter(|&until| now < until).map(|until| QuarantineView {
        reason: slot.health.reason().unwrap_or_default().to_owned(),
        remaining_secs: until.duration_since(now).as_secs_f64(),
    });
    Some(ClassifierStatus {
        name: info.name.clone(),
        version: info.version.clone(),
        description: info.description.clone(),
        sha256: entry.plugin.sha256().to_owned(),
        layouts: info.layouts.clone(),
        causes: info.causes.clone(),
        state: if quarantine.is_some() { "quarantined" } else { "running" }.to_owned(),
        config: inner.settings.classifier_config.clone().unwrap_or_else(|| serde_json::json!({})),
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
        quarantines: slot.health.quarantines(),
        last_error: slot.last_error.clone(),
        fallback: slot.fallback.as_ref().map(|e| format!("{}@{}", e.plugin.info().name, e.plugin.info().version)),
        counters: ClassifierCountersView {
            calls: get(&slot.counters.calls),
            incidents: get(&slot.counters.incidents),
            failures: get(&slot.counters.failures),
            reloads: get(&slot.counters.reloads),
        },
    })
}

/// Checks a configuration against the classifier's schema, then with a fresh instance of it.
fn check_classifier_config(plugin: &ClassifierPlugin, config: &serde_json::Value) -> Result<(), String> {
    let schema: serde_json::Value = serde_json::from_str(&plugin.info().config_schema).map_err(|e| e.to_string())?;
    let schema = jsonschema::validator_for(&schema).map_err(|e| format!("its config_schema: {e}"))?;
    check_schema(&schema, config)?;
    let mut instance = plugin.instantiate().map_err(|e| format!("starting: {e}"))?;
    instance.configure(&config.to_string()).map_err(|e| format!("it refused the configuration: {e}"))
}
