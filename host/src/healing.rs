//! Self-healing in the running host: the [`Healer`] of `routewatch-remediation` behind a lock,
//! fed incident updates by the healing sink (`sinks::healing`), with a sender thread that
//! carries actions out over HTTP, a ticker that settles actions whose incidents did not
//! resolve, every record on the actions topic (JSON, keyed by action id), and the counters.
//!
//! Nothing here holds up a batch: the sink only decides (under a short lock) and queues; a
//! full queue, a slow target or an unreachable one are outcomes on record, never a stall.
//! Each host heals the incidents of its own partitions, so the guard rails count per host:
//! with a site's routers over several hosts, the blast radius holds overall (each host keeps
//! its share of its routers), while the site's hourly rate is per host.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use routewatch_engine::RouterInfo;
use routewatch_engine::now_ms;
use routewatch_incidents::Incident;
use routewatch_remediation::{
    ActionRecord, ApproveError, ConfigError, Effects, Execution, Healer, HealingConfig, HttpTarget, PolicyError,
    PolicyStatus, Sent,
};

use crate::broker::{self, Outgoing};
use crate::metrics::{ActionLabels, Metrics, RefusalLabels};

/// Actions waiting to be sent; past this, an action fails at once ("queue full").
pub const QUEUE: usize = 256;
/// Batches of audit records waiting for the broker; past this (a broker down for long), new
/// ones are logged and dropped rather than held in memory without bound.
const AUDIT_QUEUE: usize = 4096;
/// How often executed actions are checked against their verification window.
const TICK: Duration = Duration::from_secs(1);

/// The host's self-healing.
pub struct Healing {
    healer: Mutex<Healer>,
    queue: SyncSender<Execution>,
    /// The audit trail's one writer: records reach the topic in the order they were made, so
    /// the compacted topic keeps each action's last state.
    audit: SyncSender<Vec<Outgoing>>,
    topic: String,
    metrics: Arc<Metrics>,
}

impl Healing {
    /// Checks `config` against the `causes` the classifier can name and starts the sender and
    /// the ticker (they stop when the last handle is dropped).
    pub fn start(
        config: HealingConfig,
        causes: Vec<String>,
        producer: FutureProducer,
        topic: String,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Healing>, ConfigError> {
        let healer = Healer::new(config, causes)?;
        let (queue, pending) = mpsc::sync_channel(QUEUE);
        let (audit, trail) = mpsc::sync_channel::<Vec<Outgoing>>(AUDIT_QUEUE);
        std::thread::Builder::new()
            .name("healing-audit".into())
            .spawn(move || {
                // Ends when the last handle (and so the sender) is dropped.
                for records in trail {
                    broker::deliver(&producer, records);
                }
            })
            .expect("spawning the healing audit writer");
        let healing = Arc::new(Healing { healer: Mutex::new(healer), queue, audit, topic, metrics });
        let weak = Arc::downgrade(&healing);
        std::thread::Builder::new()
            .name("healing-sender".into())
            .spawn(move || send_loop(&weak, &pending))
            .expect("spawning the healing sender");
        let weak = Arc::downgrade(&healing);
        std::thread::Builder::new()
            .name("healing-ticker".into())
            .spawn(move || {
                while let Some(healing) = weak.upgrade() {
                    let effects = healing.lock().tick(now_ms());
                    healing.apply(effects);
                    drop(healing);
                    std::thread::sleep(TICK);
                }
            })
            .expect("spawning the healing ticker");
        Ok(healing)
    }

    fn lock(&self) -> MutexGuard<'_, Healer> {
        self.healer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows a batch's incident updates; `routers` are the partition's, for site sizes.
    pub fn on_incidents<'a>(&self, incidents: impl IntoIterator<Item = &'a Incident>, routers: Option<&[RouterInfo]>) {
        let now = now_ms();
        let mut effects = Effects::default();
        {
            let mut healer = self.lock();
            for router in routers.into_iter().flatten() {
                healer.observe_router(Some(&router.site).filter(|s| !s.is_empty()).map(|s| s.as_str()), &router.name);
            }
            for incident in incidents {
                let more = healer.on_incident(incident, now);
                effects.records.extend(more.records);
                effects.executions.extend(more.executions);
            }
        }
        self.apply(effects);
    }

    /// Runs the proposed action of `incident` (approve mode).
    pub fn approve(&self, incident: &str) -> Result<ActionRecord, ApproveError> {
        let effects = self.lock().approve(incident, now_ms())?;
        let record = effects.records.last().cloned().expect("an approval records the action");
        self.apply(effects);
        Ok(record)
    }

    /// The action of an incident, if it has one.
    pub fn action_of(&self, incident: &str) -> Option<ActionRecord> {
        self.lock().action_of(incident).cloned()
    }

    /// Action records, newest first.
    pub fn records(&self, keep: impl Fn(&ActionRecord) -> bool, limit: usize) -> Vec<ActionRecord> {
        self.lock().records(keep, limit)
    }

    /// The policies with their breakers.
    pub fn policies(&self) -> Vec<PolicyStatus> {
        self.lock().policies()
    }

    /// Adds or replaces a policy, checked first against `causes`, those of the classifier
    /// live now (`None`: none is, and the last ones known stand).
    pub fn set_policy(
        &self,
        policy: routewatch_remediation::Policy,
        causes: Option<Vec<String>>,
    ) -> Result<(), PolicyError> {
        let name = policy.name.clone();
        let mut healer = self.lock();
        if let Some(causes) = causes {
            healer.set_causes(causes);
        }
        healer.set_policy(policy)?;
        drop(healer);
        tracing::info!(policy = %name, "self-healing policy set");
        Ok(())
    }

    /// Whether a classifier naming `causes` may take over: every policy's cause must be among
    /// them, or the policy would never act again. (Policies set later are checked when they
    /// are set, against the causes of the classifier live then.)
    pub fn accepts_causes(&self, causes: &[String]) -> Result<(), String> {
        let missing: Vec<String> =
            self.policies().into_iter().map(|s| s.policy.cause).filter(|c| !causes.contains(c)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("self-healing policies act on causes it does not name: {}", missing.join(", ")))
        }
    }

    /// Removes a policy.
    pub fn remove_policy(&self, name: &str) -> Result<(), PolicyError> {
        self.lock().remove_policy(name)?;
        tracing::info!(policy = %name, "self-healing policy removed");
        Ok(())
    }

    /// Closes a policy's circuit breaker.
    pub fn reset_breaker(&self, name: &str) -> Result<(), PolicyError> {
        self.lock().reset_breaker(name)
    }

    /// The guard rails in force, with the dry-run switch.
    pub fn guard_rails(&self) -> HealingConfig {
        self.lock().guard_rails()
    }

    /// Turns the global dry-run switch on or off.
    pub fn set_dry_run(&self, on: bool) {
        self.lock().set_dry_run(on);
        tracing::warn!(dry_run = on, "self-healing dry run switched");
    }

    /// Publishes records, then queues executions (a full queue fails the action at once).
    /// Publishing first keeps each action's trail in order: its execution's outcome cannot
    /// be written before the record that sent it.
    fn apply(&self, effects: Effects) {
        self.publish(effects.records);
        let mut records = Vec::new();
        for execution in effects.executions {
            if let Err(TrySendError::Full(execution) | TrySendError::Disconnected(execution)) =
                self.queue.try_send(execution)
            {
                let sent =
                    Sent { ok: false, attempts: 0, detail: format!("{QUEUE} actions already waiting to be sent") };
                records.extend(self.lock().executed(&execution.id, sent, now_ms()).records);
            }
        }
        self.publish(records);
    }

    fn publish(&self, records: Vec<ActionRecord>) {
        if records.is_empty() {
            return;
        }
        let mut outgoing = Vec::with_capacity(records.len());
        for record in &records {
            self.metrics
                .actions
                .get_or_create(&ActionLabels { policy: record.policy.clone(), outcome: record.status.name().into() })
                .inc();
            if let Some(refusal) = record.refusal {
                self.metrics
                    .action_refusals
                    .get_or_create(&RefusalLabels { policy: record.policy.clone(), reason: refusal.name().into() })
                    .inc();
            }
            tracing::info!(
                action = %record.id, policy = %record.policy, router = %record.router, status = record.status.name(),
                detail = %record.detail, "self-healing"
            );
            outgoing.push(Outgoing {
                topic: self.topic.clone(),
                key: Some(record.id.clone().into_bytes()),
                payload: Some(serde_json::to_vec(record).expect("action records serialise")),
                headers: None,
            });
        }
        // The audit trail must not hold anything up: the broker's acknowledgement is awaited on
        // the audit thread, and a failure is logged.
        if self.audit.try_send(outgoing).is_err() {
            tracing::error!(records = records.len(), "self-healing audit queue full: records not written to the topic");
        }
    }
}

fn send_loop(healing: &Weak<Healing>, pending: &Receiver<Execution>) {
    let target = HttpTarget::default();
    loop {
        match pending.recv_timeout(TICK) {
            Ok(execution) => {
                let sent = target.send(&execution);
                let Some(healing) = healing.upgrade() else { return };
                let effects = healing.lock().executed(&execution.id, sent, now_ms());
                healing.apply(effects);
            }
            Err(RecvTimeoutError::Timeout) if healing.strong_count() > 0 => {}
            Err(_) => return,
        }
    }
}
