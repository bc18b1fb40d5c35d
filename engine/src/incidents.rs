//! The router incident stage of a stream: the stream's anomalies, grouped per router into
//! incidents (`routewatch-incidents`), each named a probable cause by a classifier component
//! (`routewatch:classifier`, run in the sandbox of `routewatch-runtime`).
//!
//! The stage is part of the stream's state, like a detector: its snapshot rides in the
//! stream's [`PartitionState`](crate::PartitionState) under [`STATE_NAME`], a name no plugin
//! can have, so it follows the partition to its next owner and survives a crash. After a
//! restore the engine runs the already-delivered records again (their anomalies are not
//! delivered twice, see [`crate::Engine::suppress_output_before`]); the stage takes their
//! anomalies too, so that it ends where the previous owner's stage was, and delivers only
//! what the new records change. Event time is the records' time, so the incidents of a
//! replay are those of the live run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use routewatch_incidents::{
    Cause, ConfigError, FEATURE_LAYOUT_VERSION, IncidentUpdate, RouterConfig, RouterStage, SnapshotError,
};
use std::sync::atomic::Ordering;

use routewatch_runtime::classifier::{
    Classification, ClassifierInstance, ClassifierPlugin, Features, MAX_CLASSIFY_BATCH,
};
use routewatch_runtime::{CallError, CallStats};
use routewatch_telemetry::AnomalyEvent;

use crate::metrics::{IncidentLabels, Metrics, PluginLabels, TrapLabels};
use crate::registry::{LiveClassifier, Registry};

/// The name the stage's snapshot has among a stream's plugin states (`:` is in no plugin name).
pub const STATE_NAME: &str = "stage:incidents";

/// The `cause` label of an incident the classifier has not named yet.
pub const UNCLASSIFIED: &str = "unclassified";

/// The classifier of one stream's incident stage and this stream's instance of it: either one
/// fixed component ([`Classifier::new`], for replays and the quality harness) or whatever the
/// registry's classifier slot holds ([`Classifier::live`], for the host, where it is swapped,
/// reconfigured and quarantined at run time).
pub struct Classifier {
    registry: Option<Arc<Registry>>,
    /// The registry's classifier generation `live` comes from.
    generation: u64,
    live: Option<LiveClassifier>,
    instance: Option<ClassifierInstance>,
}

/// What became of one call of [`Classifier::classify`].
enum Answer {
    /// No classifier runs (none is live, or it is quarantined).
    Idle,
    /// One classification per feature vector.
    Named(Vec<Classification>),
    /// The call failed; the instance was dropped.
    Failed(String),
}

impl Classifier {
    /// `plugin`, configured with `config` (JSON; `{}` for its defaults) in every instance.
    pub fn new(plugin: ClassifierPlugin, config: String) -> Classifier {
        let live = LiveClassifier { plugin, config, runnable: true, counters: Default::default() };
        Classifier { registry: None, generation: 0, live: Some(live), instance: None }
    }

    /// The registry's live classifier, followed between batches: when it changes (another
    /// component, configuration or state), the next call starts a fresh instance of it.
    pub fn live(registry: Arc<Registry>) -> Classifier {
        Classifier { registry: Some(registry), generation: 0, live: None, instance: None }
    }

    /// Its name and version, if one is live.
    pub fn label(&self) -> Option<String> {
        self.live.as_ref().map(|l| format!("{}@{}", l.plugin.info().name, l.plugin.info().version))
    }

    /// Takes the registry's latest classifier if it changed; only an atomic load otherwise.
    fn refresh(&mut self) {
        let Some(registry) = &self.registry else { return };
        if registry.classifier_generation() == self.generation {
            return;
        }
        let view = registry.classifier_view();
        let same = match (&self.live, &view.live) {
            (Some(a), Some(b)) => a.plugin.sha256() == b.plugin.sha256() && a.config == b.config,
            _ => false,
        };
        if !same {
            self.instance = None;
        }
        self.generation = view.generation;
        self.live = view.live.clone();
    }

    /// Classifies `features`; a failure drops the instance (the next call starts a fresh one)
    /// and is reported to the registry, which quarantines a classifier that keeps failing.
    fn classify(&mut self, features: &[Features], metrics: &Metrics) -> Answer {
        self.refresh();
        let Some(live) = self.live.as_ref().filter(|l| l.runnable) else { return Answer::Idle };
        let labels =
            PluginLabels { plugin: live.plugin.info().name.clone(), version: live.plugin.info().version.clone() };
        let result = classify_with(&mut self.instance, live, features, |stats| {
            metrics.plugin_invocations.get_or_create(&labels).inc();
            metrics.plugin_call_duration.get_or_create(&labels).observe(stats.duration.as_secs_f64());
            metrics.plugin_cpu.get_or_create(&labels).inc_by(stats.cpu.as_secs_f64());
            metrics
                .plugin_memory_high_water
                .get_or_create(&labels)
                .inner()
                .fetch_max(i64::try_from(stats.memory_high_water).unwrap_or(i64::MAX), Ordering::Relaxed);
            live.counters.calls.fetch_add(1, Ordering::Relaxed);
        });
        match result {
            Ok(answers) => {
                live.counters.incidents.fetch_add(answers.len() as u64, Ordering::Relaxed);
                Answer::Named(answers)
            }
            Err(err) => {
                self.instance = None;
                let trap = TrapLabels { plugin: labels.plugin, version: labels.version, kind: err.kind_label().into() };
                metrics.plugin_traps.get_or_create(&trap).inc();
                live.counters.failures.fetch_add(1, Ordering::Relaxed);
                let reason = err.to_string();
                if let Some(registry) = &self.registry {
                    registry.report_classifier_failure(live.plugin.sha256(), &reason);
                }
                Answer::Failed(reason)
            }
        }
    }
}

/// One classification of `features` with `live`, starting an instance if there is none;
/// `observe` sees the cost of every call.
fn classify_with(
    instance: &mut Option<ClassifierInstance>,
    live: &LiveClassifier,
    features: &[Features],
    observe: impl Fn(CallStats),
) -> Result<Vec<Classification>, CallError> {
    if instance.is_none() {
        let mut fresh = live.plugin.instantiate()?;
        fresh.configure(&live.config)?;
        *instance = Some(fresh);
    }
    let instance = instance.as_mut().expect("started above");
    let mut answers = Vec::with_capacity(features.len());
    for chunk in features.chunks(MAX_CLASSIFY_BATCH) {
        let result = instance.classify(chunk);
        observe(instance.last_call());
        answers.extend(result?);
    }
    Ok(answers)
}

/// One stream's router incidents.
pub struct IncidentStage {
    stage: RouterStage,
    classifier: Option<Classifier>,
    metrics: Arc<Metrics>,
    stream: i32,
    /// What this stage adds to `routewatch_incidents_open`, by incident id.
    counted: HashMap<String, IncidentLabels>,
}

impl IncidentStage {
    /// A stage of `config` for `stream`, naming causes with `classifier` (none: incidents
    /// without causes).
    pub fn new(
        config: RouterConfig,
        classifier: Option<Classifier>,
        metrics: Arc<Metrics>,
        stream: i32,
    ) -> Result<IncidentStage, ConfigError> {
        Ok(IncidentStage { stage: RouterStage::new(config)?, classifier, metrics, stream, counted: HashMap::new() })
    }

    /// The router stage (its open incidents, its configuration).
    pub fn router_stage(&self) -> &RouterStage {
        &self.stage
    }

    /// The stage's state (see [`RouterStage::snapshot`]).
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        self.stage.snapshot()
    }

    /// Continues from a snapshot; a refused one leaves the stage as it was.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.stage = RouterStage::restore(self.stage.config().clone(), bytes)?;
        self.count();
        Ok(())
    }

    /// Takes one batch's anomalies and the latest record time it reached. With `deliver`, the
    /// changed incidents are classified and returned; without (records a previous owner
    /// delivered), the stage only catches up.
    pub fn take(&mut self, events: &[AnomalyEvent], until: i64, deliver: bool) -> Vec<IncidentUpdate> {
        let mut updates = self.stage.take(events, until);
        if deliver {
            self.classify(&mut updates);
        } else {
            updates.clear();
        }
        self.count();
        updates
    }

    /// Names the causes of every incident in `updates` (one call for the batch) and writes
    /// them into the stage and into the updates.
    fn classify(&mut self, updates: &mut [IncidentUpdate]) {
        let Some(classifier) = self.classifier.as_mut() else {
            // Features travel with an update only once a classifier was given them.
            updates.iter_mut().for_each(|u| u.features.clear());
            return;
        };
        let mut seen = HashSet::new();
        let mut ids = Vec::new();
        let mut features = Vec::new();
        for update in updates.iter() {
            let incident = &update.incident;
            if !seen.insert(incident.id.clone()) {
                continue;
            }
            // The stage's, or (an incident it has already let go of) its resolution's.
            let held = self.stage.features_of(&incident.router, &incident.id);
            let carried = || updates.iter().rev().find(|u| u.incident.id == incident.id && !u.features.is_empty());
            if let Some(values) = held.or_else(|| carried().map(|u| u.features.clone())) {
                ids.push(incident.id.clone());
                features.push(Features { layout: FEATURE_LAYOUT_VERSION, values });
            }
        }
        if features.is_empty() {
            return;
        }
        let answers = match classifier.classify(&features, &self.metrics) {
            Answer::Named(answers) => answers,
            Answer::Idle => {
                updates.iter_mut().for_each(|u| u.features.clear());
                return;
            }
            Answer::Failed(err) => {
                self.metrics.classifier_failures.inc();
                tracing::warn!(
                    stream = self.stream,
                    classifier = classifier.label().unwrap_or_default(),
                    "classifying {} incidents failed; they keep their previous causes: {err}",
                    features.len()
                );
                return;
            }
        };
        let mut named: HashMap<String, (String, Vec<Cause>, Vec<f64>)> = HashMap::new();
        for ((id, answer), features) in ids.into_iter().zip(answers).zip(features) {
            let causes: Vec<Cause> =
                answer.top.into_iter().map(|c| Cause { cause: c.name, probability: c.probability }).collect();
            self.stage.set_causes(&id, &answer.verdict, causes.clone());
            named.insert(id, (answer.verdict, causes, features.values));
        }
        for update in updates.iter_mut() {
            if let Some((verdict, causes, features)) = named.get(&update.incident.id) {
                update.incident.cause = Some(verdict.clone());
                update.incident.causes = causes.clone();
                update.features = features.clone();
            }
        }
    }

    /// Brings `routewatch_incidents_open` in line with the stage's open incidents.
    fn count(&mut self) {
        let mut now: HashMap<String, IncidentLabels> = self
            .stage
            .open()
            .map(|i| {
                let labels = IncidentLabels {
                    site: i.site.clone().unwrap_or_default(),
                    cause: i.cause.clone().unwrap_or_else(|| UNCLASSIFIED.to_owned()),
                    severity: i.severity.name().to_owned(),
                };
                (i.id.clone(), labels)
            })
            .collect();
        for (id, labels) in &self.counted {
            if now.get(id) != Some(labels) {
                self.metrics.incidents_open.get_or_create(labels).dec();
            }
        }
        for (id, labels) in &now {
            if self.counted.get(id) != Some(labels) {
                self.metrics.incidents_open.get_or_create(labels).inc();
            }
        }
        std::mem::swap(&mut self.counted, &mut now);
    }

    /// The stream leaves this host: its incidents are no longer counted here.
    pub fn leave(&mut self) {
        for labels in self.counted.values() {
            self.metrics.incidents_open.get_or_create(labels).dec();
        }
        self.counted.clear();
    }
}
