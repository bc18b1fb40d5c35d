//! The router stage: anomalies of one router become one incident with a lifecycle.

use std::collections::BTreeMap;

use routewatch_telemetry::{AnomalyEvent, Metric};
use serde::{Deserialize, Serialize};

use crate::features::Evidence;
use crate::snapshot::{self, SnapshotError};
use crate::{FEATURE_LAYOUT_VERSION, MAX_ID_BYTES};

/// Metrics an incident lists; anomalies on further metrics still count, unnamed.
const MAX_METRICS: usize = 32;
/// Detectors an incident lists.
const MAX_DETECTORS: usize = 16;
/// Causes a classifier may attach.
const MAX_CAUSES: usize = 8;

/// The default [`RouterConfig::recall_samples`].
const RECALL_SAMPLES: u32 = 480;

/// How the router stage groups and ends incidents. Times are in samples of `interval_ms`, so
/// the defaults read the same at any sampling rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// The fleet's sampling interval, ms.
    pub interval_ms: i64,
    /// Anomalies scoring below this are ignored (0.5 is every shipped detector's decision).
    pub min_score: f64,
    /// Only an anomaly scoring at least this opens (or reopens) an incident; weaker ones join
    /// an open incident but never page anyone. Paging takes stronger evidence than flagging:
    /// 0.8 was chosen on the training seed (seed 1, clean profile), where it keeps false
    /// incidents under 0.1 per router-day; see plugins/classifier-forest/README.md.
    pub open_score: f64,
    /// An incident resolves once its router has had no anomaly for this many samples of event
    /// time. 10 is the quality harness's alarm merge gap: anomalies closer than that are
    /// one alarm there and one incident here.
    pub quiet_samples: u32,
    /// An anomaly this many samples or fewer after an incident resolved reopens that incident
    /// (same id) instead of opening a new one.
    pub reopen_samples: u32,
    /// Later than that but this many samples or fewer after it resolved, an anomaly still
    /// reopens the incident if it undoes the incident's lead: on the metric of its first
    /// anomaly, the other way, back toward the level before it. A detector follows a fault's
    /// new level within minutes, so the incident resolves while the fault goes on; when the
    /// fault ends hours later (memory freed after a leak, a fan back to speed), the return
    /// is flagged too, and would otherwise page as a second incident. 0 turns it off. See
    /// `quality/README.md`, "Incidents", for how the default was chosen.
    pub recall_samples: u32,
    /// After this many reopenings an incident is flapping: it stays open through its flaps,
    /// its quiet period multiplied by `flap_quiet_factor`, instead of resolving and reopening.
    pub flap_reopens: u32,
    pub flap_quiet_factor: u32,
    /// The classifier sees the first this-many samples of an incident (see [`crate::Evidence`]).
    pub feature_window_samples: u32,
    /// Open plus recently resolved incidents the stage keeps; beyond it, new incidents are
    /// not opened (counted in [`RouterStage::refused`]). Bounds memory and snapshot size.
    pub max_incidents: usize,
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        RouterConfig {
            interval_ms: 60_000,
            min_score: 0.5,
            open_score: 0.8,
            quiet_samples: 10,
            reopen_samples: 20,
            recall_samples: RECALL_SAMPLES,
            flap_reopens: 3,
            flap_quiet_factor: 3,
            feature_window_samples: 10,
            max_incidents: 100_000,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid incident configuration: {0}")]
pub struct ConfigError(pub String);

impl RouterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.into()));
        if self.interval_ms <= 0 || self.interval_ms > 86_400_000 {
            return bad("interval_ms must be 1 ms to one day");
        }
        if !(0.0..=1.0).contains(&self.min_score) || !(self.min_score..=1.0).contains(&self.open_score) {
            return bad("min_score must be in [0, 1] and open_score in [min_score, 1]");
        }
        if self.quiet_samples == 0 || self.feature_window_samples == 0 || self.flap_quiet_factor == 0 {
            return bad("quiet_samples, feature_window_samples and flap_quiet_factor must be positive");
        }
        if self.max_incidents == 0 || self.max_incidents > 10_000_000 {
            return bad("max_incidents must be 1 to 10,000,000");
        }
        Ok(())
    }

    fn samples(&self, n: u32) -> i64 {
        i64::from(n).saturating_mul(self.interval_ms)
    }
}

/// How urgent an incident is. It only ever rises during an incident's life, so an alert does
/// not bounce between receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// One metric, briefly.
    Info,
    /// Two metrics, or one for three samples or more.
    Warning,
    /// Traffic is hurt (loss, BGP sessions or latency moved), or three metrics or more moved.
    Critical,
}

impl Severity {
    pub const fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The severity the evidence so far calls for.
    fn of(metrics: &[String], anomalies: u64) -> Severity {
        let service = [Metric::LossRatio, Metric::BgpUp, Metric::LatencyMs];
        if metrics.len() >= 3 || metrics.iter().any(|m| service.iter().any(|s| s.name() == m)) {
            Severity::Critical
        } else if metrics.len() == 2 || anomalies >= 3 {
            Severity::Warning
        } else {
            Severity::Info
        }
    }
}

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Open,
    Resolved,
}

/// One probable cause with its probability, as a classifier gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    pub cause: String,
    pub probability: f64,
}

/// One router's incident, as written to `router-incidents` (JSON, keyed by `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `inc-{router}-{opened}`: unique (a router has one incident at a time), and the same in
    /// every replay and on every host.
    pub id: String,
    pub router: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub state: State,
    pub severity: Severity,
    /// Event time of the first anomaly, ms since the Unix epoch.
    pub opened: i64,
    /// Event time of the latest anomaly.
    pub last_anomaly: i64,
    /// Event time at which the quiet period passed: the last anomaly plus the quiet period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<i64>,
    /// Metrics with anomalies, in order of their first anomaly.
    pub metrics: Vec<String>,
    /// Detectors that reported.
    pub detectors: Vec<String>,
    pub anomalies: u64,
    pub max_score: f64,
    /// Times the incident resolved and came back: within the reopen period, or undoing its
    /// lead (the fault ending) within the recall period.
    pub reopened: u32,
    pub flapping: bool,
    /// Whether the feature window has closed: the features, and so the cause, are final.
    pub features_final: bool,
    /// The classifier's verdict: the most likely cause, or `unknown` when it is not sure
    /// enough; absent before a classifier has spoken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Probable causes, most likely first, as the classifier last said; empty before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
    /// Set on a *predicted* incident (raised by the forecast stage, [`crate::ForecastStage`],
    /// before anything is wrong): what is coming and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<crate::Prediction>,
}

/// What happened to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Opened,
    /// Something an operator would want to know: a new metric, a higher severity, flapping,
    /// the features became final, another cause.
    Updated,
    Resolved,
    /// Back within the reopen period, or undoing its lead (the fault ending) within the
    /// recall period: the same incident, open again.
    Reopened,
    /// A predicted incident whose trend went away before it got there (it is resolved).
    Withdrawn,
}

/// One change to one incident, with the incident as it now is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentUpdate {
    pub change: Change,
    pub incident: Incident,
    /// The feature vector (layout [`crate::FEATURE_LAYOUT_VERSION`]) the classifier was given
    /// for this update, when it was: what feedback on the incident is trained against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<f64>,
}

impl IncidentUpdate {
    /// A change to `incident`, without features.
    pub fn new(change: Change, incident: Incident) -> IncidentUpdate {
        IncidentUpdate { change, incident, features: Vec::new() }
    }
}

/// An incident and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tracked {
    incident: Incident,
    evidence: Evidence,
    /// The incident's first anomaly: its metric, whether it rose (observed above expected)
    /// and the level expected then. Absent in snapshots from before it was kept, and for a
    /// first anomaly with no direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lead: Option<Lead>,
}

/// Where an incident began: what a later anomaly must undo to be the same fault ending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Lead {
    metric: String,
    rises: bool,
    /// The forecast at the first anomaly: the level the metric had before the fault.
    baseline: f64,
}

impl Lead {
    fn of(event: &AnomalyEvent) -> Option<Lead> {
        let delta = event.value - event.expected;
        (delta.is_finite() && delta != 0.0 && event.expected.is_finite()).then(|| Lead {
            metric: event.metric.clone(),
            rises: delta > 0.0,
            baseline: event.expected,
        })
    }

    /// Whether `event` undoes this lead: on the same metric, the other way, and back toward
    /// the baseline from where the detector now expects the metric. That is a fault ending
    /// after the detector had followed the faulty level (memory freed after a leak, a fan back
    /// to speed), not a new fault. (Counting a departure the same way again as well was tried:
    /// it merged a few more splits but absorbed more faults into an earlier one.)
    fn undone_by(&self, event: &AnomalyEvent) -> bool {
        Lead::of(event).is_some_and(|now| {
            now.metric == self.metric
                && now.rises != self.rises
                && (event.value - self.baseline).abs() < (event.expected - self.baseline).abs()
        })
    }
}

impl Tracked {
    fn new(event: &AnomalyEvent) -> Tracked {
        Tracked {
            incident: Incident {
                id: format!("inc-{}-{}", event.router, event.ts),
                router: event.router.clone(),
                site: event.site.clone(),
                role: event.role.clone(),
                state: State::Open,
                severity: Severity::Info,
                opened: event.ts,
                last_anomaly: event.ts,
                resolved: None,
                metrics: Vec::new(),
                detectors: Vec::new(),
                anomalies: 0,
                max_score: 0.0,
                reopened: 0,
                flapping: false,
                features_final: false,
                cause: None,
                causes: Vec::new(),
                prediction: None,
            },
            evidence: Evidence::default(),
            lead: Lead::of(event),
        }
    }

    /// Whether `event`, coming after this incident resolved, is its fault ending (see
    /// [`Lead::undone_by`]).
    fn undone_by(&self, event: &AnomalyEvent) -> bool {
        self.lead.as_ref().is_some_and(|lead| lead.undone_by(event))
    }

    /// Adds an anomaly; whether the change is worth an update.
    fn absorb(&mut self, event: &AnomalyEvent, config: &RouterConfig) -> bool {
        let inc = &mut self.incident;
        inc.anomalies += 1;
        inc.last_anomaly = inc.last_anomaly.max(event.ts);
        inc.max_score = inc.max_score.max(event.score);
        let mut material = false;
        if !inc.metrics.contains(&event.metric) && inc.metrics.len() < MAX_METRICS {
            inc.metrics.push(event.metric.clone());
            material = true;
        }
        if !inc.detectors.contains(&event.plugin) && inc.detectors.len() < MAX_DETECTORS {
            inc.detectors.push(event.plugin.clone());
        }
        let severity = Severity::of(&inc.metrics, inc.anomalies).max(inc.severity);
        if severity != inc.severity {
            inc.severity = severity;
            material = true;
        }
        if !inc.features_final && event.ts < inc.opened + config.samples(config.feature_window_samples) {
            self.evidence.add(event);
        }
        material
    }

    fn quiet_ms(&self, config: &RouterConfig) -> i64 {
        let factor = if self.incident.flapping { config.flap_quiet_factor } else { 1 };
        config.samples(config.quiet_samples.saturating_mul(factor))
    }

    fn is_bounded(&self) -> bool {
        let i = &self.incident;
        let short = |s: &str| s.len() <= MAX_ID_BYTES;
        short(&i.router)
            && i.id.len() <= MAX_ID_BYTES + 32
            && i.site.as_deref().is_none_or(short)
            && i.role.as_deref().is_none_or(short)
            && i.metrics.len() <= MAX_METRICS
            && i.metrics.iter().all(|m| short(m))
            && i.detectors.len() <= MAX_DETECTORS
            && i.detectors.iter().all(|d| short(d))
            && i.causes.len() <= MAX_CAUSES
            && i.causes.iter().all(|c| short(&c.cause) && c.probability.is_finite())
            && self.evidence.is_bounded()
    }
}

/// The router stage of one partition. Feed it the partition's anomalies in the order they
/// were found ([`RouterStage::observe`]) and the event time each batch reached
/// ([`RouterStage::advance`]); it answers with the incidents that changed.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterStage {
    config: RouterConfig,
    /// Open incidents by router.
    open: BTreeMap<String, Tracked>,
    /// Incidents resolved within the last reopen or recall period, by router.
    recent: BTreeMap<String, Tracked>,
    /// Latest event time seen.
    watermark: i64,
    /// Incidents not opened because the stage was full.
    refused: u64,
}

/// The stage's state as a snapshot holds it.
#[derive(Serialize, Deserialize)]
struct State1 {
    feature_layout: u32,
    open: Vec<Tracked>,
    recent: Vec<Tracked>,
    watermark: i64,
    refused: u64,
}

impl RouterStage {
    pub fn new(config: RouterConfig) -> Result<RouterStage, ConfigError> {
        config.validate()?;
        Ok(RouterStage { config, open: BTreeMap::new(), recent: BTreeMap::new(), watermark: i64::MIN, refused: 0 })
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// The open incidents, by router.
    pub fn open(&self) -> impl Iterator<Item = &Incident> {
        self.open.values().map(|t| &t.incident)
    }

    /// Incidents not opened because the stage held `max_incidents` already.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The latest event time the stage has seen.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Takes one anomaly. Anomalies below `min_score`, with a non-finite score, or with a name
    /// over [`MAX_ID_BYTES`] are ignored.
    pub fn observe(&mut self, event: &AnomalyEvent) -> Vec<IncidentUpdate> {
        let long = |s: &str| s.len() > MAX_ID_BYTES;
        if !event.score.is_finite()
            || event.score < self.config.min_score
            || long(&event.router)
            || long(&event.metric)
            || long(&event.plugin)
            || event.site.as_deref().is_some_and(long)
            || event.role.as_deref().is_some_and(long)
        {
            return Vec::new();
        }
        self.watermark = self.watermark.max(event.ts);
        let mut updates = Vec::new();
        // A router quiet for longer than its period, before `advance` said so, resolves first.
        if let Some(t) = self.open.get(&event.router)
            && event.ts - t.incident.last_anomaly > t.quiet_ms(&self.config)
        {
            let resolved_at = t.incident.last_anomaly + t.quiet_ms(&self.config);
            updates.push(self.resolve(&event.router.clone(), resolved_at));
        }
        if let Some(t) = self.open.get_mut(&event.router) {
            if t.absorb(event, &self.config) {
                updates.push(IncidentUpdate::new(Change::Updated, t.incident.clone()));
            }
            return updates;
        }
        if event.score < self.config.open_score {
            return updates;
        }
        let reopen = self.config.samples(self.config.reopen_samples);
        let recall = self.config.samples(self.config.recall_samples);
        // A resolved incident that this anomaly does not reopen is dropped here either way:
        // a router has one incident at a time.
        if let Some(mut t) = self.recent.remove(&event.router)
            && t.incident
                .resolved
                .is_some_and(|r| event.ts <= r + reopen || (event.ts <= r + recall && t.undone_by(event)))
        {
            t.incident.state = State::Open;
            t.incident.resolved = None;
            t.incident.reopened += 1;
            t.incident.flapping |= t.incident.reopened >= self.config.flap_reopens;
            t.absorb(event, &self.config);
            updates.push(IncidentUpdate::new(Change::Reopened, t.incident.clone()));
            self.open.insert(event.router.clone(), t);
            return updates;
        }
        if self.open.len() + self.recent.len() >= self.config.max_incidents {
            // Make room from the oldest resolved incident; refuse only when all are open.
            match self.recent.iter().min_by_key(|(_, t)| t.incident.resolved).map(|(k, _)| k.clone()) {
                Some(oldest) => {
                    self.recent.remove(&oldest);
                }
                None => {
                    self.refused += 1;
                    return updates;
                }
            }
        }
        let mut t = Tracked::new(event);
        t.absorb(event, &self.config);
        updates.push(IncidentUpdate::new(Change::Opened, t.incident.clone()));
        self.open.insert(event.router.clone(), t);
        updates
    }

    /// Moves event time to `ts` (the latest record timestamp of a batch): incidents quiet for
    /// their period resolve, feature windows that have passed close, and resolved incidents
    /// past their reopen and recall periods are forgotten.
    pub fn advance(&mut self, ts: i64) -> Vec<IncidentUpdate> {
        self.watermark = self.watermark.max(ts);
        let now = self.watermark;
        let window = self.config.samples(self.config.feature_window_samples);
        let mut updates = Vec::new();
        let mut quiet = Vec::new();
        for (router, t) in &mut self.open {
            if now - t.incident.last_anomaly >= t.quiet_ms(&self.config) {
                quiet.push(router.clone());
            } else if !t.incident.features_final && now >= t.incident.opened + window {
                t.incident.features_final = true;
                updates.push(IncidentUpdate::new(Change::Updated, t.incident.clone()));
            }
        }
        for router in quiet {
            // Resolved when the quiet period passed, not when this batch ended: the same
            // time whatever the batch boundaries, so a replay after a crash agrees.
            let t = &self.open[&router];
            let at = t.incident.last_anomaly + t.quiet_ms(&self.config);
            updates.push(self.resolve(&router, at));
        }
        let kept = self.config.samples(self.config.reopen_samples.max(self.config.recall_samples));
        self.recent.retain(|_, t| t.incident.resolved.is_some_and(|r| now <= r + kept));
        updates
    }

    fn resolve(&mut self, router: &str, at: i64) -> IncidentUpdate {
        let mut t = self.open.remove(router).expect("resolving an open incident");
        t.incident.state = State::Resolved;
        t.incident.resolved = Some(at);
        t.incident.features_final = true;
        // The features go with the resolution: a batch that reaches past the reopen period
        // (a backlog) drops the incident from the stage before a classifier has seen it.
        let features = t.evidence.features(t.incident.opened, self.config.interval_ms);
        let update = IncidentUpdate { features, ..IncidentUpdate::new(Change::Resolved, t.incident.clone()) };
        self.recent.insert(router.to_owned(), t);
        update
    }

    /// The feature vector of a router's open (or recently resolved) incident, layout
    /// [`crate::FEATURE_LAYOUT_VERSION`].
    pub fn features(&self, router: &str) -> Option<Vec<f64>> {
        let t = self.open.get(router).or_else(|| self.recent.get(router))?;
        Some(t.evidence.features(t.incident.opened, self.config.interval_ms))
    }

    /// The evidence behind a router's open (or recently resolved) incident.
    pub fn evidence(&self, router: &str) -> Option<&Evidence> {
        self.open.get(router).or_else(|| self.recent.get(router)).map(|t| &t.evidence)
    }

    /// Attaches a classifier's answer to the incident `id`: its verdict (the top cause or
    /// `unknown`) and its causes (most likely first, at most 8 kept); an update if the verdict
    /// changed.
    pub fn set_causes(&mut self, id: &str, verdict: &str, mut causes: Vec<Cause>) -> Option<IncidentUpdate> {
        let t = self.open.values_mut().chain(self.recent.values_mut()).find(|t| t.incident.id == id)?;
        causes.retain(|c| c.cause.len() <= MAX_ID_BYTES && c.probability.is_finite());
        causes.truncate(MAX_CAUSES);
        let verdict = (verdict.len() <= MAX_ID_BYTES).then(|| verdict.to_owned());
        let changed = t.incident.cause != verdict;
        t.incident.cause = verdict;
        t.incident.causes = causes;
        changed.then(|| IncidentUpdate::new(Change::Updated, t.incident.clone()))
    }

    /// The feature vector of the incident `id` of `router`, if the stage still holds it (open
    /// or recently resolved); layout [`crate::FEATURE_LAYOUT_VERSION`].
    pub fn features_of(&self, router: &str, id: &str) -> Option<Vec<f64>> {
        let held = |t: &&Tracked| t.incident.id == id;
        let t = self.open.get(router).filter(held).or_else(|| self.recent.get(router).filter(held))?;
        Some(t.evidence.features(t.incident.opened, self.config.interval_ms))
    }

    /// Takes one batch: its anomalies in event-time order (stably sorted here, since a batch
    /// lists them detector by detector), moving event time to each anomaly's timestamp before
    /// it is observed, and finally to `until` (the batch's latest record timestamp). This is
    /// how the quality harness feeds a stage tick by tick, for batches of any size.
    pub fn take(&mut self, events: &[AnomalyEvent], until: i64) -> Vec<IncidentUpdate> {
        let mut order: Vec<&AnomalyEvent> = events.iter().collect();
        order.sort_by_key(|e| e.ts);
        let mut updates = Vec::new();
        for event in order {
            if event.ts > self.watermark {
                updates.extend(self.advance(event.ts));
            }
            updates.extend(self.observe(event));
        }
        updates.extend(self.advance(until));
        updates
    }

    /// The whole state, framed and versioned (see [`crate::SnapshotError`] for what restore
    /// refuses). The configuration is not in it: the restoring owner brings its own.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let state = State1 {
            feature_layout: FEATURE_LAYOUT_VERSION,
            open: self.open.values().cloned().collect(),
            recent: self.recent.values().cloned().collect(),
            watermark: self.watermark,
            refused: self.refused,
        };
        snapshot::encode(snapshot::ROUTER_MAGIC, &state)
    }

    /// A stage with `config` and the state of `bytes`.
    pub fn restore(config: RouterConfig, bytes: &[u8]) -> Result<RouterStage, SnapshotError> {
        config.validate().map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        let state: State1 = snapshot::decode(snapshot::ROUTER_MAGIC, bytes)?;
        if state.feature_layout != FEATURE_LAYOUT_VERSION {
            return Err(SnapshotError::Invalid(format!(
                "evidence of feature layout {}, this build uses {FEATURE_LAYOUT_VERSION}",
                state.feature_layout
            )));
        }
        if state.open.len() + state.recent.len() > config.max_incidents {
            return Err(SnapshotError::Invalid(format!(
                "{} incidents, over max_incidents {}",
                state.open.len() + state.recent.len(),
                config.max_incidents
            )));
        }
        let mut stage = RouterStage::new(config).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        for (list, open) in [(state.open, true), (state.recent, false)] {
            for t in list {
                let consistent = t.is_bounded() && (t.incident.state == State::Open) == open;
                let map = if open { &mut stage.open } else { &mut stage.recent };
                if !consistent || map.insert(t.incident.router.clone(), t).is_some() {
                    return Err(SnapshotError::Invalid(
                        "an incident is out of bounds, in the wrong state or twice".into(),
                    ));
                }
            }
        }
        if stage.open.keys().any(|r| stage.recent.contains_key(r)) {
            return Err(SnapshotError::Invalid("a router is both open and resolved".into()));
        }
        stage.watermark = state.watermark;
        stage.refused = state.refused;
        Ok(stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routewatch_telemetry::AnomalyKind;

    const M: i64 = 60_000;

    fn ev(router: &str, metric: &str, minute: i64) -> AnomalyEvent {
        AnomalyEvent {
            router: router.into(),
            site: Some("fra1".into()),
            role: Some("edge".into()),
            metric: metric.into(),
            plugin: "arima".into(),
            plugin_version: "1".into(),
            ts: minute * M,
            detected_at: None,
            value: 0.9,
            expected: 0.4,
            lower: Some(0.3),
            upper: Some(0.5),
            score: 0.8,
            kind: AnomalyKind::LevelShift,
            reason: String::new(),
        }
    }

    fn changes(updates: &[IncidentUpdate]) -> Vec<Change> {
        updates.iter().map(|u| u.change).collect()
    }

    fn stage() -> RouterStage {
        RouterStage::new(RouterConfig::default()).unwrap()
    }

    #[test]
    fn one_router_many_metrics_and_detectors_is_one_incident() {
        let mut s = stage();
        let first = s.observe(&ev("r1", "cpu_util", 100));
        assert_eq!(changes(&first), [Change::Opened]);
        let id = first[0].incident.id.clone();
        assert_eq!(id, format!("inc-r1-{}", 100 * M));
        assert_eq!(first[0].incident.severity, Severity::Info);
        // A second detector on the same metric: nothing an operator needs to hear.
        let mut lstm = ev("r1", "cpu_util", 101);
        lstm.plugin = "lstm".into();
        assert!(s.observe(&lstm).is_empty());
        // A second metric: an update, now a warning.
        let u = s.observe(&ev("r1", "temp_c", 101));
        assert_eq!(changes(&u), [Change::Updated]);
        assert_eq!(u[0].incident.id, id);
        assert_eq!(u[0].incident.severity, Severity::Warning);
        assert_eq!(u[0].incident.metrics, ["cpu_util", "temp_c"]);
        assert_eq!(u[0].incident.detectors, ["arima", "lstm"]);
        // Another router is another incident.
        assert_eq!(changes(&s.observe(&ev("r2", "cpu_util", 102))), [Change::Opened]);
        assert_eq!(s.open().count(), 2);
        // Weak anomalies are ignored; those below open_score join an open incident only.
        let mut weak = ev("r3", "cpu_util", 102);
        weak.score = 0.3;
        assert!(s.observe(&weak).is_empty());
        weak.score = 0.6;
        assert!(s.observe(&weak).is_empty());
        assert_eq!(s.open().count(), 2);
        let mut joins = ev("r1", "mem_util", 102);
        joins.score = 0.6;
        assert_eq!(changes(&s.observe(&joins)), [Change::Updated]);
        assert_eq!(s.open().next().unwrap().metrics, ["cpu_util", "temp_c", "mem_util"]);
    }

    #[test]
    fn resolves_after_the_quiet_period_in_event_time() {
        let mut s = stage();
        s.observe(&ev("r1", "cpu_util", 100));
        s.observe(&ev("r1", "cpu_util", 104));
        // Nine quiet samples after the last anomaly: still open (the feature window closed).
        let u = s.advance(113 * M);
        assert_eq!(changes(&u), [Change::Updated]);
        assert!(u[0].incident.features_final);
        assert!(s.advance(113 * M + M - 1).is_empty());
        let u = s.advance(114 * M);
        assert_eq!(changes(&u), [Change::Resolved]);
        assert_eq!(u[0].incident.resolved, Some(114 * M));
        assert_eq!(u[0].incident.last_anomaly, 104 * M);
        assert_eq!(s.open().count(), 0);
        // However late the batch that notices it: resolved when the quiet period passed.
        let mut late = stage();
        late.observe(&ev("r1", "cpu_util", 100));
        late.observe(&ev("r1", "cpu_util", 104));
        assert_eq!(late.advance(130 * M)[0].incident.resolved, Some(114 * M));
        // Event time, not arrival: an anomaly much later for the router, with no advance in
        // between, resolves the old incident before the new one opens.
        let mut s = stage();
        s.observe(&ev("r1", "cpu_util", 100));
        let u = s.observe(&ev("r1", "cpu_util", 200));
        assert_eq!(changes(&u), [Change::Resolved, Change::Opened]);
        assert_eq!(u[0].incident.resolved, Some(110 * M));
        assert_ne!(u[0].incident.id, u[1].incident.id);
    }

    #[test]
    fn a_backlog_past_the_reopen_period_leaves_the_resolution_its_features() {
        let mut s = stage();
        s.observe(&ev("r1", "cpu_util", 100));
        s.observe(&ev("r1", "cpu_util", 104));
        // One batch far past the quiet and reopen periods: the stage lets the incident go...
        let u = s.advance(1000 * M);
        let resolved = u.iter().find(|u| u.change == Change::Resolved).expect("resolved");
        assert!(s.features_of("r1", &resolved.incident.id).is_none(), "no longer held");
        // ...and its resolution carries what a classifier needs.
        assert_eq!(resolved.features.len(), crate::features::FEATURE_COUNT);
    }

    #[test]
    fn comes_back_soon_after_it_is_the_same_incident_and_flapping_holds_it_open() {
        let mut s = stage();
        let id = s.observe(&ev("r1", "bgp_up", 0))[0].incident.id.clone();
        let mut minute = 0;
        for round in 1..=3u32 {
            // Quiet long enough to resolve, then back within the reopen period.
            minute += 10;
            assert_eq!(changes(&s.advance(minute * M)), [Change::Resolved], "round {round}");
            minute += 15;
            let u = s.observe(&ev("r1", "bgp_up", minute));
            assert_eq!(changes(&u), [Change::Reopened]);
            assert_eq!((u[0].incident.id.as_str(), u[0].incident.reopened), (id.as_str(), round));
            assert_eq!(u[0].incident.flapping, round >= 3);
        }
        // Flapping: ten quiet samples no longer resolve it; thirty do.
        assert!(s.advance((minute + 10) * M).iter().all(|u| u.change != Change::Resolved));
        assert!(s.advance((minute + 29) * M).is_empty());
        assert_eq!(changes(&s.advance((minute + 30) * M)), [Change::Resolved]);
        // Past the reopen period an anomaly that does not undo the lead is a new incident.
        let later = minute + 30 + 21;
        s.advance(later * M);
        let u = s.observe(&ev("r1", "bgp_up", later));
        assert_eq!(changes(&u), [Change::Opened]);
        assert_ne!(u[0].incident.id, id);
        assert_eq!(u[0].incident.severity, Severity::Critical, "BGP sessions are traffic");
    }

    #[test]
    fn a_fault_ending_hours_after_its_incident_resolved_reopens_it() {
        // The lead: memory rose to 0.9 where 0.4 was expected.
        let back =
            |minute: i64, value: f64, expected: f64| AnomalyEvent { value, expected, ..ev("r1", "mem_util", minute) };
        let mut s = stage();
        let id = s.observe(&ev("r1", "mem_util", 0))[0].incident.id.clone();
        assert_eq!(changes(&s.advance(10 * M)), [Change::Resolved]);
        // Hours later, past the reopen period (20) but within the recall period (480): the
        // detector expects the leaked level, memory falls back. The same incident.
        let u = s.observe(&back(300, 0.42, 0.9));
        assert_eq!(changes(&u), [Change::Reopened]);
        assert_eq!((u[0].incident.id.as_str(), u[0].incident.reopened), (id.as_str(), 1));
        assert_eq!(changes(&s.advance(310 * M)), [Change::Resolved]);
        // Held through the recall period, and only that long.
        s.advance((310 + 480) * M);
        assert!(s.features_of("r1", &id).is_some(), "kept to 310 + 480 samples");
        s.advance((310 + 481) * M);
        assert!(s.features_of("r1", &id).is_none(), "forgotten after the recall period");

        for (what, event) in [
            // The same way again is a new fault.
            ("the same way", ev("r1", "mem_util", 300)),
            // A fall from where the detector already expects the old level is no return.
            ("a fall below the old level", back(300, 0.1, 0.4)),
            // Another metric returning is not this lead.
            ("another metric", AnomalyEvent { value: 0.4, expected: 0.9, ..ev("r1", "cpu_util", 300) }),
            // Past the recall period.
            ("too late", back(10 + 481, 0.42, 0.9)),
        ] {
            let mut s = stage();
            s.observe(&ev("r1", "mem_util", 0));
            s.advance(10 * M);
            assert_eq!(changes(&s.observe(&event)), [Change::Opened], "{what}");
        }
        // And with recall off, the return is a new incident.
        let mut s = RouterStage::new(RouterConfig { recall_samples: 0, ..RouterConfig::default() }).unwrap();
        s.observe(&ev("r1", "mem_util", 0));
        s.advance(10 * M);
        assert_eq!(changes(&s.observe(&back(300, 0.42, 0.9))), [Change::Opened]);
    }

    #[test]
    fn a_snapshot_from_before_leads_were_kept_restores_and_recalls_nothing() {
        let mut s = stage();
        s.observe(&ev("r1", "mem_util", 0));
        s.advance(10 * M);
        let bytes = s.snapshot().unwrap();
        let mut body: serde_json::Value = serde_json::from_slice(&bytes[6..]).unwrap();
        let recent = body["recent"].as_array_mut().unwrap();
        assert!(recent[0].as_object_mut().unwrap().remove("lead").is_some(), "the lead is in the snapshot");
        let mut old = bytes[..6].to_vec();
        old.extend(serde_json::to_vec(&body).unwrap());
        let mut restored = RouterStage::restore(RouterConfig::default(), &old).unwrap();
        let back = AnomalyEvent { value: 0.42, expected: 0.9, ..ev("r1", "mem_util", 100) };
        assert_eq!(changes(&restored.observe(&back)), [Change::Opened]);
        // With its lead, the restored stage recalls the incident as the original would.
        let mut restored = RouterStage::restore(RouterConfig::default(), &bytes).unwrap();
        assert_eq!(changes(&restored.observe(&back)), [Change::Reopened]);
        // Without, within the reopen period it reopens as it always did.
        let mut restored = RouterStage::restore(RouterConfig::default(), &old).unwrap();
        assert_eq!(changes(&restored.observe(&ev("r1", "mem_util", 25))), [Change::Reopened]);
    }

    #[test]
    fn severity_never_falls_and_three_metrics_are_critical() {
        let mut s = stage();
        s.observe(&ev("r1", "cpu_util", 0));
        s.observe(&ev("r1", "temp_c", 1));
        let u = s.observe(&ev("r1", "mem_util", 2));
        assert_eq!(u[0].incident.severity, Severity::Critical);
        assert!(s.observe(&ev("r1", "cpu_util", 3)).is_empty());
        assert_eq!(s.open().next().unwrap().severity, Severity::Critical);
    }

    #[test]
    fn the_feature_window_bounds_the_evidence() {
        let mut s = stage();
        s.observe(&ev("r1", "cpu_util", 0));
        s.observe(&ev("r1", "cpu_util", 9));
        s.observe(&ev("r1", "temp_c", 10)); // outside the 10-sample window
        let e = s.evidence("r1").unwrap();
        assert_eq!(e.metric(Metric::CpuUtil).unwrap().events, 2);
        assert!(e.metric(Metric::TempC).is_none());
        assert_eq!(s.open().next().unwrap().metrics, ["cpu_util", "temp_c"], "the incident still lists it");
        assert_eq!(s.features("r1").unwrap().len(), crate::FEATURE_COUNT);
    }

    #[test]
    fn a_full_stage_evicts_resolved_incidents_then_refuses() {
        let mut s = RouterStage::new(RouterConfig { max_incidents: 2, ..RouterConfig::default() }).unwrap();
        s.observe(&ev("r1", "cpu_util", 0));
        s.advance(10 * M);
        assert_eq!(changes(&s.observe(&ev("r2", "cpu_util", 11))), [Change::Opened]);
        assert_eq!(s.recent.len(), 1);
        assert_eq!(changes(&s.observe(&ev("r3", "cpu_util", 12))), [Change::Opened]);
        assert!(s.recent.is_empty(), "r1's resolved incident made room");
        assert!(s.observe(&ev("r4", "cpu_util", 12)).is_empty());
        assert_eq!(s.refused(), 1);
    }

    #[test]
    fn causes_attach_and_a_new_top_cause_is_an_update() {
        let mut s = stage();
        let id = s.observe(&ev("r1", "cpu_util", 0))[0].incident.id.clone();
        let cause = |c: &str, p| Cause { cause: c.into(), probability: p };
        let top = vec![cause("cpu-runaway", 0.8), cause("traffic-spike", 0.1)];
        assert!(s.set_causes(&id, "cpu-runaway", top).is_some());
        assert!(s.set_causes(&id, "cpu-runaway", vec![cause("cpu-runaway", 0.9)]).is_none(), "same verdict");
        assert!(s.set_causes(&id, "unknown", vec![cause("cpu-runaway", 0.4)]).is_some(), "unsure now");
        assert!(s.set_causes("inc-nope", "unknown", vec![]).is_none());
        let incident = s.open().next().unwrap();
        assert_eq!((incident.cause.as_deref(), incident.causes[0].probability), (Some("unknown"), 0.4));
        assert_eq!(s.features_of("r1", &id).map(|f| f.len()), Some(crate::FEATURE_COUNT));
        assert!(s.features_of("r1", "inc-other").is_none(), "another incident of the router");
    }

    #[test]
    fn a_batch_in_detector_order_is_taken_in_event_time_order() {
        // Two detectors, each listing its anomalies in time order: the second's early
        // anomaly comes last in the batch, yet r1's incident must not resolve before it.
        let mut batch = vec![ev("r1", "cpu_util", 0), ev("r1", "cpu_util", 14)];
        batch.push(AnomalyEvent { plugin: "lstm".into(), ..ev("r1", "temp_c", 7) });
        let mut s = stage();
        let updates = s.take(&batch, 15 * M);
        assert_eq!(changes(&updates), [Change::Opened, Change::Updated, Change::Updated]);
        assert_eq!(s.open().next().map(|i| i.anomalies), Some(3), "one incident through minute 14");
        // Fed tick by tick, as the quality harness does, the stage ends the same.
        let mut ticked = stage();
        for e in [&batch[0], &batch[2], &batch[1]] {
            ticked.advance(e.ts);
            ticked.observe(e);
        }
        ticked.advance(15 * M);
        assert_eq!(s, ticked);
        assert_eq!(changes(&s.take(&[], 25 * M)), [Change::Resolved], "quiet for 10 samples after minute 14");
    }

    #[test]
    fn snapshot_round_trip_mid_incident_continues_as_if_nothing_happened() {
        let mut a = stage();
        a.observe(&ev("r1", "cpu_util", 0));
        a.observe(&ev("r1", "temp_c", 1));
        a.observe(&ev("r2", "bgp_up", 0));
        a.advance(10 * M); // r2 resolves (r1 had an anomaly at 1)
        a.observe(&ev("r3", "loss_ratio", 10));
        let bytes = a.snapshot().unwrap();
        let mut b = RouterStage::restore(RouterConfig::default(), &bytes).unwrap();
        assert_eq!(a, b);
        // The restored stage does what the original does: r2 reopens, r1 resolves.
        for stage in [&mut a, &mut b] {
            assert_eq!(changes(&stage.observe(&ev("r2", "bgp_up", 12))), [Change::Reopened]);
            assert_eq!(changes(&stage.advance(12 * M)), [Change::Resolved]);
        }
        assert_eq!(a, b);
        assert_eq!(a.snapshot().unwrap(), b.snapshot().unwrap());
    }

    #[test]
    fn bad_snapshots_are_refused_with_a_reason() {
        let mut a = stage();
        a.observe(&ev("r1", "cpu_util", 0));
        let good = a.snapshot().unwrap();
        let restore = |b: &[u8]| RouterStage::restore(RouterConfig::default(), b);
        assert!(matches!(restore(b""), Err(SnapshotError::Truncated)));
        assert!(matches!(restore(&good[..good.len() - 3]), Err(SnapshotError::Decode(_))));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(matches!(restore(&magic), Err(SnapshotError::NotASnapshot)));
        let mut version = good.clone();
        version[4] = 99;
        assert!(matches!(restore(&version), Err(SnapshotError::Version { found: 99 })));
        let mut trailing = good.clone();
        trailing.push(b'x');
        assert!(matches!(restore(&trailing), Err(SnapshotError::Decode(_))));
        let huge = vec![0u8; crate::MAX_SNAPSHOT_BYTES + 1];
        assert!(matches!(restore(&huge), Err(SnapshotError::TooLarge { .. })));
        // A site snapshot is not a router snapshot.
        let site = crate::SiteStage::new(crate::SiteConfig::default()).unwrap().snapshot().unwrap();
        assert!(matches!(restore(&site), Err(SnapshotError::NotASnapshot)));
        // More incidents than this owner allows.
        let small = RouterConfig { max_incidents: 1, ..RouterConfig::default() };
        a.observe(&ev("r2", "cpu_util", 0));
        assert!(matches!(RouterStage::restore(small, &a.snapshot().unwrap()), Err(SnapshotError::Invalid(_))));
        // An incident whose router name is over the cap.
        let mut long = stage();
        long.observe(&ev("r1", "cpu_util", 0));
        let t = long.open.values_mut().next().unwrap();
        t.incident.router = "x".repeat(MAX_ID_BYTES + 1);
        assert!(matches!(restore(&long.snapshot().unwrap()), Err(SnapshotError::Invalid(_))));
        assert!(restore(&good).is_ok());
    }
}
