//! The site stage of `routewatch run`: router incidents of one site (or role) that start
//! together become one site incident ([`routewatch_incidents::SiteStage`]).
//!
//! The metrics topic is keyed by router, so a site's routers are spread over partitions and
//! hosts, and no metrics partition sees a whole site. Each partition's Kafka sink therefore
//! writes its router incident updates a second time, keyed by site (or role), to the site
//! topic (`site_topic`, [`crate::sinks::kafka`]). This service is a member of a consumer group
//! of its own on that topic ([`group_id`]): every update of a site reaches the one member that
//! holds the site's partition, whichever host found it. Each partition of the site topic has
//! its own stage, whose state is saved to the state topic like a metrics partition's (under
//! `GROUP/SITE_TOPIC/PARTITION`, [`super::StateStore::for_topic`]) and follows the partition
//! to its next owner.
//!
//! Per record: the partition's stage takes the update; the site incident updates it makes go
//! to the site incidents topic (acknowledged by the broker before the next record), then to
//! the incident book, Alertmanager and the metrics. Every `snapshot_interval` (and on revoke
//! and shutdown) each changed stage is saved, and only then its offset committed; a restored
//! stage skips the records its state has already taken. Output is at-least-once under either
//! processing guarantee: a crash between an output and the next save makes the next owner
//! deliver those site updates again, which the compacted topic and Alertmanager (both keyed by
//! incident id) take as the same.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use routewatch_incidents::{IncidentUpdate, SiteChange, SiteConfig, SiteStage, SiteUpdate};

use super::{PartitionState, PluginState, StateStore};
use crate::alertmanager::Alertmanager;
use crate::broker::{self, Outgoing};
use crate::config::HostConfig;
use crate::incidents::IncidentBook;
use crate::metrics::{Metrics, ReasonLabels};

/// The name of the site stage's snapshot in its partition's saved state.
pub const STATE_NAME: &str = "stage:sites";
/// Largest record of the site topic taken; a larger one is skipped (and counted).
pub const MAX_RECORD_BYTES: usize = 256 << 10;

/// The consumer group of the site stage: the host group's, with `-sites`.
pub fn group_id(config: &HostConfig) -> String {
    format!("{}-sites", config.group_id)
}

/// Where the site stage's outputs go besides the site incidents topic.
pub struct SiteOutputs {
    /// The host's metrics.
    pub metrics: Arc<Metrics>,
    /// The book the API lists site incidents from.
    pub book: Arc<IncidentBook>,
    /// Where site incidents are posted as alerts, if anywhere.
    pub alertmanager: Option<Arc<Alertmanager>>,
}

/// The running site stage: its consumer thread.
pub struct SiteService {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl SiteService {
    /// Joins the site group on the site topic (created beforehand with the host's topics).
    pub fn start(config: &HostConfig, outputs: SiteOutputs) -> anyhow::Result<SiteService> {
        let context = SiteContext {
            settings: config.site_settings(),
            topic: config.site_topic.clone(),
            output_topic: config.site_incidents_topic.clone(),
            store: StateStore::for_topic(config, &config.site_topic)?,
            producer: broker::producer(config)?,
            outputs,
            held: Mutex::new(HashMap::new()),
        };
        let group = group_id(config);
        let settings = [
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            // Exactly-once hosts write the site topic in their transactions.
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
            ("fetch.wait.max.ms", "50"),
        ];
        let consumer: BaseConsumer<SiteContext> = broker::group_consumer_config(config, &settings)
            .create_with_context(context)
            .context("creating the site stage's consumer")?;
        consumer.subscribe(&[&config.site_topic]).context("subscribing to the site topic")?;
        tracing::info!(topic = %config.site_topic, group = %group, "site stage consuming");
        let stop = Arc::new(AtomicBool::new(false));
        let interval = config.snapshot_interval();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sites".into())
                .spawn(move || consume(&consumer, &stop, interval))
                .context("spawning the site stage's thread")?
        };
        Ok(SiteService { stop, thread: Some(thread) })
    }

    /// Whether the thread has stopped (by itself only on a fatal error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Saves every stage, commits and leaves the group, giving up after `grace`.
    pub fn shutdown(mut self, grace: Duration) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        let Some(thread) = self.thread.take() else { return Ok(()) };
        let deadline = Instant::now() + grace;
        while !thread.is_finished() {
            anyhow::ensure!(Instant::now() < deadline, "the site stage could not save and commit within {grace:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        thread.join().map_err(|_| anyhow::anyhow!("the site stage's thread panicked"))?
    }
}

impl Drop for SiteService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// One partition of the site topic this host holds.
struct Held {
    stage: SiteStage,
    /// The first offset the stage has not taken.
    next: i64,
    /// `next` as of the last save (and commit).
    saved: i64,
}

struct SiteContext {
    settings: SiteConfig,
    topic: String,
    output_topic: String,
    store: StateStore,
    producer: FutureProducer,
    outputs: SiteOutputs,
    held: Mutex<HashMap<i32, Held>>,
}

impl ClientContext for SiteContext {}

impl ConsumerContext for SiteContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            self.save(consumer, Some(&partitions));
            let mut held = self.lock();
            for partition in &partitions {
                held.remove(partition);
                self.outputs.book.forget_site_partition(*partition);
            }
            self.count_open(&held);
            tracing::info!(?partitions, "site partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            self.assign(&partitions);
        }
    }
}

impl SiteContext {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Held>> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Restores the stages of `partitions` (or starts them fresh) before their first record.
    fn assign(&self, partitions: &[i32]) {
        let mut states = match self.store.load(partitions) {
            Ok(loaded) => loaded.states,
            Err(err) => {
                tracing::error!("could not read the site stages' saved state, starting them fresh: {err:#}");
                HashMap::new()
            }
        };
        let mut held = self.lock();
        for &partition in partitions {
            let restored = states.remove(&partition).and_then(|state| {
                let snapshot = state.plugins.iter().find(|p| p.name == STATE_NAME)?;
                match SiteStage::restore(self.settings.clone(), &snapshot.snapshot) {
                    Ok(stage) => Some((stage, state.next_offset)),
                    Err(err) => {
                        tracing::error!(
                            partition,
                            "the site stage's saved state does not restore, starting fresh: {err}"
                        );
                        None
                    }
                }
            });
            let (stage, next) = restored.unwrap_or_else(|| {
                (SiteStage::new(self.settings.clone()).expect("site_config is validated at start"), 0)
            });
            tracing::info!(partition, from = next, open = stage.open().count(), "site partition assigned");
            held.insert(partition, Held { stage, next, saved: next });
        }
        self.count_open(&held);
    }

    /// Takes one record of the site topic; what it changes is delivered before this returns.
    fn take(&self, partition: i32, offset: i64, payload: Option<&[u8]>) {
        let mut held = self.lock();
        let Some(part) = held.get_mut(&partition) else { return };
        if offset < part.next {
            // Already in the restored state (saved after this record, committed before it).
            return;
        }
        part.next = offset + 1;
        let update = match decode(payload) {
            Ok(update) => update,
            Err(reason) => {
                self.outputs.metrics.site_records_rejected.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
                tracing::warn!(partition, offset, reason, "skipping a record of the site topic");
                return;
            }
        };
        let changes = part.stage.observe(&update);
        if changes.is_empty() {
            return;
        }
        self.deliver(partition, &changes);
        self.count_open(&held);
    }

    /// The site incident updates of one record: to Kafka (waiting for the broker), then the
    /// book, the counters and Alertmanager.
    fn deliver(&self, partition: i32, changes: &[SiteUpdate]) {
        let records = changes
            .iter()
            .map(|update| Outgoing {
                topic: self.output_topic.clone(),
                key: Some(update.incident.id.clone().into_bytes()),
                payload: Some(serde_json::to_vec(update).expect("a site incident always serialises")),
                headers: None,
            })
            .collect();
        broker::deliver(&self.producer, records);
        self.outputs.book.publish_sites(partition, changes);
        for update in changes {
            tracing::info!(
                incident = %update.incident.id, change = ?update.change, routers = update.incident.routers.len(),
                "site incident"
            );
            let counter = match update.change {
                SiteChange::Opened => &self.outputs.metrics.site_incidents_opened,
                SiteChange::Resolved => &self.outputs.metrics.site_incidents_resolved,
                SiteChange::Reopened => &self.outputs.metrics.site_incidents_reopened,
                SiteChange::Updated => continue,
            };
            counter.inc();
        }
        if let Some(alertmanager) = &self.outputs.alertmanager {
            alertmanager.post_sites(&changes.iter().map(|u| &u.incident).collect::<Vec<_>>());
        }
    }

    fn count_open(&self, held: &HashMap<i32, Held>) {
        let open: usize = held.values().map(|h| h.stage.open().count()).sum();
        self.outputs.metrics.site_incidents_open.set(open as i64);
    }

    /// Saves the changed stages (of `only`, or all) and commits their offsets: the offset
    /// committed is always that of a saved state. A save that fails is tried at the next.
    fn save(&self, consumer: &BaseConsumer<Self>, only: Option<&[i32]>) {
        let mut held = self.lock();
        let mut commits = TopicPartitionList::new();
        for (&partition, part) in held.iter_mut() {
            if part.next == part.saved || only.is_some_and(|o| !o.contains(&partition)) {
                continue;
            }
            let snapshot = match part.stage.snapshot() {
                Ok(snapshot) => snapshot,
                Err(err) => {
                    tracing::error!(partition, "encoding the site stage: {err}");
                    continue;
                }
            };
            let state = PartitionState::new(
                part.next,
                Vec::new(),
                vec![PluginState { name: STATE_NAME.into(), version: String::new(), snapshot }],
            );
            match self.store.save(partition, &state) {
                Ok(_) => {
                    part.saved = part.next;
                    if let Err(err) = commits.add_partition_offset(&self.topic, partition, Offset::Offset(part.next)) {
                        tracing::warn!(partition, "committing the site partition: {err}");
                    }
                }
                Err(err) => {
                    self.outputs.metrics.state_save_failures.inc();
                    tracing::warn!(partition, "saving the site stage: {err}");
                }
            }
        }
        drop(held);
        if commits.count() > 0
            && let Err(err) = consumer.commit(&commits, CommitMode::Sync)
        {
            tracing::warn!("committing the site partitions: {err}");
        }
    }
}

/// A record of the site topic as a router incident update, or why not.
fn decode(payload: Option<&[u8]>) -> Result<IncidentUpdate, &'static str> {
    let payload = payload.ok_or("empty")?;
    if payload.len() > MAX_RECORD_BYTES {
        return Err("oversized");
    }
    serde_json::from_slice(payload).map_err(|_| "malformed")
}

/// The thread: takes records until told to stop, saving every `interval`.
fn consume(consumer: &BaseConsumer<SiteContext>, stop: &AtomicBool, interval: Duration) -> anyhow::Result<()> {
    let mut last_save = Instant::now();
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => consumer.context().take(message.partition(), message.offset(), message.payload()),
            Some(Err(err)) => tracing::warn!("site stage consumer: {err}"),
            None => {}
        }
        if last_save.elapsed() >= interval {
            last_save = Instant::now();
            consumer.context().save(consumer, None);
        }
    }
    consumer.context().save(consumer, None);
    consumer.unsubscribe();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_that_are_not_incident_updates_are_refused_by_reason() {
        assert_eq!(decode(None).unwrap_err(), "empty");
        assert_eq!(decode(Some(b"{not json")).unwrap_err(), "malformed");
        assert_eq!(decode(Some(br#"{"change":"opened"}"#)).unwrap_err(), "malformed");
        let big = vec![b' '; MAX_RECORD_BYTES + 1];
        assert_eq!(decode(Some(&big)).unwrap_err(), "oversized");
    }
}
