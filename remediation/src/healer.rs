//! The healer: from an incident and its cause to an action, through the guard rails, with the
//! action's whole life on record. It decides; it does no I/O. The caller sends the
//! [`Execution`]s it asks for (see [`crate::HttpTarget`]), reports back with
//! [`Healer::executed`], and calls [`Healer::tick`] every so often so that actions whose
//! incidents do not resolve count against their policy's circuit breaker.
//!
//! Times are wall-clock milliseconds since the Unix epoch, passed in, so that tests can drive
//! the clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use routewatch_incidents::{Incident, State};
use serde::{Deserialize, Serialize};

use crate::policy::{self, Mode, Policy, PolicyError};
use crate::record::{ActionRecord, Refusal, Status, Verdict};

/// Most action records kept in memory (the topic keeps them all); the oldest settled go first.
pub const MAX_RECORDS: usize = 10_000;
/// Most policies.
pub const MAX_POLICIES: usize = 256;
const HOUR_MS: i64 = 3_600_000;

/// Self-healing settings: the guard rails and the policies (`[healing]` in the host's file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealingConfig {
    /// Global switch: actions that pass every guard rail are recorded as `dry-run` and not sent.
    #[serde(default)]
    pub dry_run: bool,
    /// Most actions a site may have in any hour.
    #[serde(default = "default_site_rate")]
    pub site_actions_per_hour: u32,
    /// Largest share of a site's routers in action at once (0 to 1). Strict: with 0.1, a site
    /// needs 10 routers before one of them may be acted on.
    #[serde(default = "default_blast_radius")]
    pub blast_radius: f64,
    /// Least time between two actions on one router, in seconds.
    #[serde(default = "default_cooldown")]
    pub router_cooldown_secs: u64,
    /// How long an executed action has to resolve its incident, in seconds.
    #[serde(default = "default_verify")]
    pub verify_secs: u64,
    /// Executed actions in a row that did not resolve their incidents before the policy's
    /// circuit breaker opens (and its actions are refused until it is reset).
    #[serde(default = "default_breaker")]
    pub breaker_failures: u32,
    #[serde(default)]
    pub policies: Vec<Policy>,
}

fn default_site_rate() -> u32 {
    3
}
fn default_blast_radius() -> f64 {
    0.1
}
fn default_cooldown() -> u64 {
    1800
}
fn default_verify() -> u64 {
    900
}
fn default_breaker() -> u32 {
    3
}

impl Default for HealingConfig {
    fn default() -> Self {
        HealingConfig {
            dry_run: false,
            site_actions_per_hour: default_site_rate(),
            blast_radius: default_blast_radius(),
            router_cooldown_secs: default_cooldown(),
            verify_secs: default_verify(),
            breaker_failures: default_breaker(),
            policies: Vec::new(),
        }
    }
}

/// Why a healing configuration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("healing.blast_radius must be above 0 and at most 1, not {0}")]
    BlastRadius(f64),
    #[error("healing.verify_secs must be at least 1")]
    Verify,
    #[error("healing.breaker_failures must be at least 1")]
    Breaker,
    #[error("at most {MAX_POLICIES} policies, not {0}")]
    TooManyPolicies(usize),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl HealingConfig {
    /// Checks the guard rails and every policy; `causes` are those the classifier can name.
    pub fn check(&self, causes: &[String]) -> Result<(), ConfigError> {
        if !(self.blast_radius > 0.0 && self.blast_radius <= 1.0) {
            return Err(ConfigError::BlastRadius(self.blast_radius));
        }
        if self.verify_secs == 0 {
            return Err(ConfigError::Verify);
        }
        if self.breaker_failures == 0 {
            return Err(ConfigError::Breaker);
        }
        if self.policies.len() > MAX_POLICIES {
            return Err(ConfigError::TooManyPolicies(self.policies.len()));
        }
        Ok(policy::check_all(&self.policies, causes)?)
    }
}

/// A policy with its circuit breaker, as `GET /api/v1/policies` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyStatus {
    #[serde(flatten)]
    pub policy: Policy,
    /// Executed actions in a row whose incidents did not resolve.
    pub failures_in_a_row: u32,
    /// Whether the breaker is open (the policy's actions are refused).
    pub breaker_open: bool,
}

/// A request to carry an action out, for the caller to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// The action record's id; report the result with it.
    pub id: String,
    pub incident: String,
    pub router: String,
    /// The policy that asked for it.
    pub policy: String,
    pub action: routewatch_telemetry::Action,
    pub target: String,
    pub timeout: Duration,
    pub retries: u32,
}

/// What the caller must do after a call: publish records (in order) and send executions.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    /// New versions of action records: to the audit topic, and counted in Prometheus.
    pub records: Vec<ActionRecord>,
    pub executions: Vec<Execution>,
}

/// How sending an action ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// Whether the target took the action.
    pub ok: bool,
    pub attempts: u32,
    /// The target's answer, or the error.
    pub detail: String,
}

/// Why an approval was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApproveError {
    #[error("incident {0} has no action to approve")]
    NoAction(String),
    #[error("the action of incident {incident} is {status}, not awaiting approval")]
    NotProposed { incident: String, status: &'static str },
}

struct PolicyState {
    policy: Policy,
    failures: u32,
    open: bool,
}

/// An executed action whose incident is not yet known to have resolved.
struct Acting {
    site: String,
    id: String,
    deadline: i64,
}

/// The self-healing state of one host: policies and breakers, guard-rail counters, records.
pub struct Healer {
    config: HealingConfig,
    causes: Vec<String>,
    policies: Vec<PolicyState>,
    records: HashMap<String, ActionRecord>,
    order: VecDeque<String>,
    /// Per router.
    acting: HashMap<String, Acting>,
    last_action: HashMap<String, i64>,
    /// Per site: times of its recent actions.
    site_actions: HashMap<String, VecDeque<i64>>,
    /// Per site: its routers as seen so far.
    sites: HashMap<String, HashSet<String>>,
}

impl Healer {
    /// A healer with `config`, checked against the `causes` the classifier can name.
    pub fn new(mut config: HealingConfig, causes: Vec<String>) -> Result<Healer, ConfigError> {
        config.check(&causes)?;
        let policies = std::mem::take(&mut config.policies)
            .into_iter()
            .map(|policy| PolicyState { policy, failures: 0, open: false })
            .collect();
        Ok(Healer {
            config,
            causes,
            policies,
            records: HashMap::new(),
            order: VecDeque::new(),
            acting: HashMap::new(),
            last_action: HashMap::new(),
            site_actions: HashMap::new(),
            sites: HashMap::new(),
        })
    }

    /// Notes a router of a site, for the blast radius (a site's size is the routers seen).
    pub fn observe_router(&mut self, site: Option<&str>, router: &str) {
        let routers = self.sites.entry(site.unwrap_or_default().to_owned()).or_default();
        if !routers.contains(router) {
            routers.insert(router.to_owned());
        }
    }

    /// Routers seen so far.
    pub fn routers_seen(&self) -> usize {
        self.sites.values().map(HashSet::len).sum()
    }

    /// Whether the global dry-run switch is on.
    pub fn dry_run(&self) -> bool {
        self.config.dry_run
    }

    /// Turns the global dry-run switch on or off.
    pub fn set_dry_run(&mut self, on: bool) {
        self.config.dry_run = on;
    }

    /// The guard rails in force (without the policies; see [`Healer::policies`]).
    pub fn guard_rails(&self) -> HealingConfig {
        HealingConfig { policies: Vec::new(), ..self.config.clone() }
    }

    /// Every policy, in order, with its breaker.
    pub fn policies(&self) -> Vec<PolicyStatus> {
        self.policies
            .iter()
            .map(|s| PolicyStatus { policy: s.policy.clone(), failures_in_a_row: s.failures, breaker_open: s.open })
            .collect()
    }

    /// The causes policies are checked against from now on: those of the classifier live now
    /// (the host refuses a classifier that does not name every policy's cause).
    pub fn set_causes(&mut self, causes: Vec<String>) {
        self.causes = causes;
    }

    /// Adds a policy, or replaces the one of that name (its breaker is kept); checked first.
    pub fn set_policy(&mut self, policy: Policy) -> Result<(), PolicyError> {
        let mut all: Vec<Policy> = self.policies.iter().map(|s| s.policy.clone()).collect();
        match all.iter().position(|p| p.name == policy.name) {
            Some(i) => all[i] = policy.clone(),
            None => all.push(policy.clone()),
        }
        if all.len() > MAX_POLICIES {
            return Err(PolicyError::Name(format!("{} (at most {MAX_POLICIES} policies)", policy.name)));
        }
        policy::check_all(&all, &self.causes)?;
        match self.policies.iter_mut().find(|s| s.policy.name == policy.name) {
            Some(state) => state.policy = policy,
            None => self.policies.push(PolicyState { policy, failures: 0, open: false }),
        }
        Ok(())
    }

    /// Removes a policy.
    pub fn remove_policy(&mut self, name: &str) -> Result<(), PolicyError> {
        let before = self.policies.len();
        self.policies.retain(|s| s.policy.name != name);
        if self.policies.len() == before { Err(PolicyError::NotFound(name.to_owned())) } else { Ok(()) }
    }

    /// Closes a policy's circuit breaker.
    pub fn reset_breaker(&mut self, name: &str) -> Result<(), PolicyError> {
        let state = self
            .policies
            .iter_mut()
            .find(|s| s.policy.name == name)
            .ok_or_else(|| PolicyError::NotFound(name.to_owned()))?;
        state.failures = 0;
        state.open = false;
        tracing::info!(policy = name, "circuit breaker reset");
        Ok(())
    }

    /// The action record of an incident.
    pub fn action_of(&self, incident: &str) -> Option<&ActionRecord> {
        self.records.get(&action_id(incident))
    }

    /// Action records, newest first, that `keep` selects, at most `limit`.
    pub fn records(&self, keep: impl Fn(&ActionRecord) -> bool, limit: usize) -> Vec<ActionRecord> {
        self.order.iter().rev().filter_map(|id| self.records.get(id)).filter(|r| keep(r)).take(limit).cloned().collect()
    }

    /// Follows an incident: an open one whose cause is final may get an action (one per
    /// incident); a resolved one settles its action.
    pub fn on_incident(&mut self, incident: &Incident, now: i64) -> Effects {
        let mut effects = Effects::default();
        let id = action_id(&incident.id);
        if incident.state == State::Resolved {
            self.settle(&id, now, &mut effects);
            return effects;
        }
        if self.records.contains_key(&id) || !incident.features_final {
            return effects;
        }
        let Some(cause) = incident.cause.as_deref().filter(|c| *c != "unknown") else { return effects };
        let Some(state) = self.policies.iter().find(|s| s.policy.cause == cause && s.policy.mode != Mode::Off) else {
            return effects;
        };
        let policy = state.policy.clone();
        let confidence = incident.causes.iter().find(|c| c.cause == cause).map_or(0.0, |c| c.probability);
        let mut record = ActionRecord {
            id: id.clone(),
            incident: incident.id.clone(),
            router: incident.router.clone(),
            site: incident.site.clone(),
            policy: policy.name.clone(),
            action: policy.action,
            mode: policy.mode,
            cause: cause.to_owned(),
            confidence,
            status: Status::Suggested,
            refusal: None,
            detail: String::new(),
            attempts: 0,
            verdict: None,
            created: now,
            updated: now,
        };
        self.observe_router(incident.site.as_deref(), &incident.router);
        if confidence < policy.min_confidence {
            record.status = Status::Refused;
            record.refusal = Some(Refusal::LowConfidence);
            record.detail = format!("{cause} at {confidence:.2}, below the policy's {:.2}", policy.min_confidence);
        } else {
            match policy.mode {
                Mode::Off => unreachable!("off policies are skipped above"),
                Mode::Suggest => record.detail = format!("suggested: {} for {cause}", policy.action),
                Mode::Approve => {
                    record.status = Status::Proposed;
                    record.detail = format!("awaiting approval: {} for {cause}", policy.action);
                }
                Mode::Auto => {
                    self.admit(&mut record, now, &mut effects);
                }
            }
        }
        self.put(record, &mut effects);
        effects
    }

    /// Runs the proposed action of `incident`, within the guard rails.
    pub fn approve(&mut self, incident: &str, now: i64) -> Result<Effects, ApproveError> {
        let id = action_id(incident);
        let record = self.records.get(&id).ok_or_else(|| ApproveError::NoAction(incident.to_owned()))?;
        if record.status != Status::Proposed {
            return Err(ApproveError::NotProposed { incident: incident.to_owned(), status: record.status.name() });
        }
        let mut record = record.clone();
        let mut effects = Effects::default();
        record.updated = now;
        self.admit(&mut record, now, &mut effects);
        self.put(record, &mut effects);
        Ok(effects)
    }

    /// Records how sending an action ended.
    pub fn executed(&mut self, id: &str, sent: Sent, now: i64) -> Effects {
        let mut effects = Effects::default();
        let Some(mut record) = self.records.get(id).cloned().filter(|r| r.status == Status::Executing) else {
            return effects;
        };
        record.attempts = sent.attempts;
        record.detail = sent.detail;
        record.updated = now;
        if sent.ok {
            record.status = Status::Executed;
        } else {
            // Never carried out: the router is not in action (its cooldown still runs, since a
            // timed-out request may have reached it).
            record.status = Status::Failed;
            self.acting.remove(&record.router);
        }
        self.put(record, &mut effects);
        effects
    }

    /// Executed actions past their verification window count as not having resolved their
    /// incidents: the router leaves action, and the policy's breaker counts a failure.
    pub fn tick(&mut self, now: i64) -> Effects {
        let mut effects = Effects::default();
        let due: Vec<(String, String)> = self
            .acting
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(router, a)| (router.clone(), a.id.clone()))
            .collect();
        for (router, id) in due {
            let Some(mut record) = self.records.get(&id).cloned() else { continue };
            if record.status != Status::Executed {
                // Still being sent: its deadline moves on when it is.
                continue;
            }
            self.acting.remove(&router);
            record.verdict = Some(Verdict::NotResolved);
            record.updated = now;
            if let Some(state) = self.policies.iter_mut().find(|s| s.policy.name == record.policy) {
                state.failures += 1;
                if state.failures >= self.config.breaker_failures && !state.open {
                    state.open = true;
                    tracing::warn!(
                        policy = %state.policy.name,
                        failures = state.failures,
                        "circuit breaker open: the policy's actions did not resolve their incidents"
                    );
                }
            }
            self.put(record, &mut effects);
        }
        effects
    }

    /// The guard rails, in order: the breaker, the router's cooldown, the site's rate, the
    /// blast radius. Passed: the action is executing (or, in dry run, recorded as such).
    fn admit(&mut self, record: &mut ActionRecord, now: i64, effects: &mut Effects) {
        let site = record.site.clone().unwrap_or_default();
        let refuse = |record: &mut ActionRecord, refusal: Refusal, detail: String| {
            record.status = Status::Refused;
            record.refusal = Some(refusal);
            record.detail = detail;
        };
        let Some(policy) = self.policies.iter().find(|s| s.policy.name == record.policy) else {
            return refuse(record, Refusal::CircuitOpen, "the policy was removed".into());
        };
        if policy.open {
            return refuse(
                record,
                Refusal::CircuitOpen,
                format!("{} actions in a row did not resolve their incidents", policy.failures),
            );
        }
        let cooldown = self.config.router_cooldown_secs as i64 * 1000;
        if let Some(&last) = self.last_action.get(&record.router)
            && now - last < cooldown
        {
            return refuse(
                record,
                Refusal::Cooldown,
                format!(
                    "last action on {} {} s ago (cooldown {} s)",
                    record.router,
                    (now - last) / 1000,
                    cooldown / 1000
                ),
            );
        }
        let recent = self.site_actions.entry(site.clone()).or_default();
        while recent.front().is_some_and(|&t| t <= now - HOUR_MS) {
            recent.pop_front();
        }
        if recent.len() >= self.config.site_actions_per_hour as usize {
            let detail = format!(
                "site {site:?} had {} actions in the last hour (limit {})",
                recent.len(),
                self.config.site_actions_per_hour
            );
            return refuse(record, Refusal::SiteRateLimit, detail);
        }
        let size = self.sites.get(&site).map_or(1, HashSet::len).max(1);
        let in_action = self.acting.values().filter(|a| a.site == site).count();
        let allowed = (self.config.blast_radius * size as f64 + 1e-9).floor() as usize;
        if in_action + 1 > allowed {
            let detail = format!(
                "{} of site {site:?}'s {size} routers would be in action; the blast radius allows {allowed}",
                in_action + 1
            );
            return refuse(record, Refusal::BlastRadius, detail);
        }
        if self.config.dry_run {
            record.status = Status::DryRun;
            record.detail =
                format!("dry run: {} on {} passed every guard rail and was not sent", record.action, record.router);
            return;
        }
        record.status = Status::Executing;
        recent.push_back(now);
        self.last_action.insert(record.router.clone(), now);
        let deadline = now + self.config.verify_secs as i64 * 1000;
        self.acting.insert(record.router.clone(), Acting { site, id: record.id.clone(), deadline });
        effects.executions.push(Execution {
            id: record.id.clone(),
            incident: record.incident.clone(),
            router: record.router.clone(),
            policy: record.policy.clone(),
            action: record.action,
            target: policy.policy.target.clone(),
            timeout: policy.policy.timeout(),
            retries: policy.policy.retries,
        });
    }

    /// The incident resolved: an executed action helped (and resets its policy's count); a
    /// proposal no one approved is withdrawn.
    fn settle(&mut self, id: &str, now: i64, effects: &mut Effects) {
        let Some(mut record) = self.records.get(id).cloned() else { return };
        match record.status {
            Status::Executed | Status::Executing if record.verdict.is_none() => {
                record.verdict = Some(Verdict::Resolved);
                if self.acting.get(&record.router).is_some_and(|a| a.id == record.id) {
                    self.acting.remove(&record.router);
                }
                if let Some(state) = self.policies.iter_mut().find(|s| s.policy.name == record.policy) {
                    state.failures = 0;
                }
            }
            Status::Proposed => {
                record.status = Status::Withdrawn;
                record.detail = "the incident resolved before the action was approved".into();
            }
            _ => return,
        }
        record.updated = now;
        self.put(record, effects);
    }

    /// Keeps a record's new version and publishes it.
    fn put(&mut self, record: ActionRecord, effects: &mut Effects) {
        if !self.records.contains_key(&record.id) {
            self.order.push_back(record.id.clone());
            while self.order.len() > MAX_RECORDS {
                // The oldest that is not in action or awaiting anything.
                let Some(at) = self.order.iter().position(|id| {
                    self.records
                        .get(id)
                        .is_none_or(|r| !matches!(r.status, Status::Proposed | Status::Executing) && !self.is_acting(r))
                }) else {
                    break;
                };
                if let Some(old) = self.order.remove(at) {
                    self.records.remove(&old);
                }
            }
        }
        self.records.insert(record.id.clone(), record.clone());
        effects.records.push(record);
    }

    fn is_acting(&self, record: &ActionRecord) -> bool {
        self.acting.get(&record.router).is_some_and(|a| a.id == record.id)
    }
}

/// The id of an incident's action.
pub fn action_id(incident: &str) -> String {
    format!("act-{incident}")
}
