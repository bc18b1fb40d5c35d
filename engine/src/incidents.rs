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
use routewatch_runtime::classifier::{ClassifierInstance, ClassifierPlugin, Features, MAX_CLASSIFY_BATCH};
use routewatch_telemetry::AnomalyEvent;

use crate::metrics::{IncidentLabels, Metrics};

/// The name the stage's snapshot has among a stream's plugin states (`:` is in no plugin name).
pub const STATE_NAME: &str = "stage:incidents";

/// The `cause` label of an incident the classifier has not named yet.
pub const UNCLASSIFIED: &str = "unclassified";

/// A classifier component and this stream's instance of it.
pub struct Classifier {
    plugin: ClassifierPlugin,
    config: String,
    instance: Option<ClassifierInstance>,
}

impl Classifier {
    /// `plugin`, configured with `config` (JSON; `{}` for its defaults) in every instance.
    pub fn new(plugin: ClassifierPlugin, config: String) -> Classifier {
        Classifier { plugin, config, instance: None }
    }

    /// Its name and version.
    pub fn label(&self) -> String {
        format!("{}@{}", self.plugin.info().name, self.plugin.info().version)
    }

    /// Classifies `features`; a failure drops the instance (the next call starts a fresh one).
    fn classify(
        &mut self,
        features: &[Features],
    ) -> Result<Vec<routewatch_runtime::classifier::Classification>, String> {
        if self.instance.is_none() {
            let mut instance = self.plugin.instantiate().map_err(|e| format!("starting: {e}"))?;
            instance.configure(&self.config).map_err(|e| format!("configuring: {e}"))?;
            self.instance = Some(instance);
        }
        let instance = self.instance.as_mut().expect("started above");
        let mut answers = Vec::with_capacity(features.len());
        for chunk in features.chunks(MAX_CLASSIFY_BATCH) {
            match instance.classify(chunk) {
                Ok(more) => answers.extend(more),
                Err(err) => {
                    self.instance = None;
                    return Err(err.to_string());
                }
            }
        }
        Ok(answers)
    }
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
        let answers = match classifier.classify(&features) {
            Ok(answers) => answers,
            Err(err) => {
                self.metrics.classifier_failures.inc();
                tracing::warn!(
                    stream = self.stream,
                    classifier = %classifier.label(),
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
