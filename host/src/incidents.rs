//! The incidents this host's partitions found, for the HTTP API and the demo: the latest state
//! of each (filled by the incidents sink, [`crate::sinks::incidents`], once a batch is
//! acknowledged), operators' acknowledgements, and a live feed of every change.
//!
//! It keeps the site incidents of the site-topic partitions this host holds
//! ([`crate::kafka::sites`]) beside them, with the same bounds.
//!
//! Acknowledgements are kept in the acks topic (`acks_topic`), which every host follows
//! ([`AckFollower`]): the book remembers the latest acknowledgement of each incident, and an
//! incident that arrives later (after a restart, or with a partition from another host) comes
//! in acknowledged.
//!
//! The book is a view, not the record: `router-incidents` and `site-incidents` (compacted,
//! keyed by incident id) are. It holds at most [`MAX_INCIDENTS`], dropping the oldest resolved first, and forgets a
//! partition's open incidents when the partition leaves this host (its next owner reports them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use routewatch_incidents::{Incident, IncidentUpdate, SiteIncident, SiteUpdate, State};
use serde::{Deserialize, Serialize};

use crate::config::HostConfig;

/// Incidents the book keeps.
pub const MAX_INCIDENTS: usize = 10_000;

/// An operator's acknowledgement of an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ack {
    /// Wall-clock time of the acknowledgement, ms since the Unix epoch.
    pub at: i64,
    /// Who, as they said (at most `MAX_NAME_BYTES` of the API's incidents routes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// An acknowledgement as the acks topic keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckRecord {
    /// The incident acknowledged.
    pub incident: String,
    /// Wall-clock time, ms since the Unix epoch.
    pub at: i64,
    /// Who, as they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// One incident as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Its latest state.
    #[serde(flatten)]
    pub incident: Incident,
    /// The partition of `router-metrics` that found it.
    pub partition: i32,
    /// Set once an operator acknowledged it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Ack>,
    /// The feature vector the classifier last saw (for feedback; not listed).
    #[serde(skip)]
    pub features: Vec<f64>,
}

/// One site incident as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteEntry {
    /// Its latest state.
    #[serde(flatten)]
    pub incident: SiteIncident,
    /// The partition of the site topic whose stage found it.
    pub partition: i32,
}

/// The incidents of this host's partitions, and a live feed of their changes.
pub struct IncidentBook {
    entries: Mutex<HashMap<String, Entry>>,
    /// The latest acknowledgement of each incident, held or not (at most [`MAX_INCIDENTS`]).
    acks: Mutex<HashMap<String, Ack>>,
    sites: Mutex<HashMap<String, SiteEntry>>,
    live: tokio::sync::broadcast::Sender<IncidentUpdate>,
    live_sites: tokio::sync::broadcast::Sender<SiteUpdate>,
}

impl Default for IncidentBook {
    fn default() -> IncidentBook {
        IncidentBook {
            entries: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            sites: Mutex::new(HashMap::new()),
            live: tokio::sync::broadcast::channel(4096).0,
            live_sites: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl IncidentBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a partition's acknowledged incident updates.
    pub fn publish(&self, partition: i32, updates: &[IncidentUpdate]) {
        if updates.is_empty() {
            return;
        }
        let mut entries = self.lock();
        for update in updates {
            // Nobody listening is fine: the feed is for whoever wants it.
            let _ = self.live.send(update.clone());
            let incident = update.incident.clone();
            match entries.get_mut(&incident.id) {
                Some(entry) => {
                    entry.incident = incident;
                    entry.partition = partition;
                    if !update.features.is_empty() {
                        entry.features.clone_from(&update.features);
                    }
                }
                None => {
                    if entries.len() >= MAX_INCIDENTS {
                        evict(&mut entries);
                    }
                    let features = update.features.clone();
                    let acknowledged = self.lock_acks().get(&incident.id).cloned();
                    entries.insert(incident.id.clone(), Entry { incident, partition, acknowledged, features });
                }
            }
        }
    }

    /// The partition left this host: its open incidents are its next owner's to report.
    pub fn forget_partition(&self, partition: i32) {
        self.lock().retain(|_, e| e.partition != partition || e.incident.state == State::Resolved);
    }

    /// Incidents that pass `filter`, most recently opened first, at most `limit`.
    pub fn list(&self, limit: usize, filter: impl Fn(&Entry) -> bool) -> Vec<Entry> {
        let entries = self.lock();
        let mut found: Vec<Entry> = entries.values().filter(|e| filter(e)).cloned().collect();
        found.sort_by(|a, b| (b.incident.opened, &b.incident.id).cmp(&(a.incident.opened, &a.incident.id)));
        found.truncate(limit);
        found
    }

    /// One incident.
    pub fn get(&self, id: &str) -> Option<Entry> {
        self.lock().get(id).cloned()
    }

    /// One incident and the features the classifier last saw.
    pub fn with_features(&self, id: &str) -> Option<(Entry, Vec<f64>)> {
        self.lock().get(id).map(|e| (e.clone(), e.features.clone()))
    }

    /// Acknowledges an incident; `None` if the book does not hold it.
    pub fn acknowledge(&self, id: &str, ack: Ack) -> Option<Entry> {
        let mut entries = self.lock();
        let entry = entries.get_mut(id)?;
        entry.acknowledged = Some(ack.clone());
        self.remember_ack(id, ack);
        Some(entry.clone())
    }

    /// Takes an acknowledgement from the acks topic: applied to the incident if the book holds
    /// it, and remembered for when it arrives. The latest wins.
    pub fn note_ack(&self, id: &str, ack: Ack) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(id)
            && entry.acknowledged.as_ref().is_none_or(|a| a.at <= ack.at)
        {
            entry.acknowledged = Some(ack.clone());
        }
        self.remember_ack(id, ack);
    }

    /// Acknowledgements the book remembers, of incidents it holds or not.
    pub fn remembered_acks(&self) -> usize {
        self.lock_acks().len()
    }

    fn lock_acks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ack>> {
        self.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember_ack(&self, id: &str, ack: Ack) {
        let mut acks = self.lock_acks();
        if !acks.contains_key(id) && acks.len() >= MAX_INCIDENTS {
            let oldest = acks.iter().min_by_key(|(_, a)| a.at).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                acks.remove(&oldest);
            }
        }
        match acks.get_mut(id) {
            Some(known) if known.at > ack.at => {}
            Some(known) => *known = ack,
            None => {
                acks.insert(id.to_owned(), ack);
            }
        }
    }

    fn lock_sites(&self) -> std::sync::MutexGuard<'_, HashMap<String, SiteEntry>> {
        self.sites.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes site incident updates of a partition of the site topic (delivered to Kafka).
    pub fn publish_sites(&self, partition: i32, updates: &[SiteUpdate]) {
        let mut sites = self.lock_sites();
        for update in updates {
            let incident = update.incident.clone();
            if !sites.contains_key(&incident.id) && sites.len() >= MAX_INCIDENTS {
                let oldest = sites
                    .values()
                    .min_by_key(|e| (e.incident.state == State::Open, e.incident.resolved.unwrap_or(e.incident.opened)))
                    .map(|e| e.incident.id.clone());
                if let Some(id) = oldest {
                    sites.remove(&id);
                }
            }
            sites.insert(incident.id.clone(), SiteEntry { incident, partition });
            // Nobody listening is fine.
            let _ = self.live_sites.send(update.clone());
        }
    }

    /// A partition of the site topic left this host: its open site incidents are its next
    /// owner's to report.
    pub fn forget_site_partition(&self, partition: i32) {
        self.lock_sites().retain(|_, e| e.partition != partition || e.incident.state == State::Resolved);
    }

    /// Site incidents that pass `filter`, most recently opened first, at most `limit`.
    pub fn list_sites(&self, limit: usize, filter: impl Fn(&SiteEntry) -> bool) -> Vec<SiteEntry> {
        let sites = self.lock_sites();
        let mut found: Vec<SiteEntry> = sites.values().filter(|e| filter(e)).cloned().collect();
        found.sort_by(|a, b| (b.incident.opened, &b.incident.id).cmp(&(a.incident.opened, &a.incident.id)));
        found.truncate(limit);
        found
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<IncidentUpdate> {
        self.live.subscribe()
    }

    /// Every site incident change from now on.
    pub fn subscribe_sites(&self) -> tokio::sync::broadcast::Receiver<SiteUpdate> {
        self.live_sites.subscribe()
    }
}

/// Follows the acks topic from its start for as long as it lives, and hands every
/// acknowledgement to the book. It reads without a consumer group (no offsets to commit):
/// each host reads the whole topic, which compaction keeps to one record per incident.
pub struct AckFollower {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Largest record of the acks topic taken; larger ones are skipped.
pub const MAX_ACK_RECORD_BYTES: usize = 4096;

impl AckFollower {
    /// Starts following `config.acks_topic` (which must exist: the host creates it first).
    pub fn start(config: &HostConfig, book: Arc<IncidentBook>) -> Result<AckFollower, rdkafka::error::KafkaError> {
        let group = format!("{}-acks", config.group_id);
        let consumer: BaseConsumer = crate::broker::client_config(
            config,
            &[("group.id", group.as_str()), ("enable.auto.commit", "false"), ("isolation.level", "read_committed")],
        )
        .create()?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&config.acks_topic, 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("acks".into())
            .spawn(move || {
                let mut broker_errors = Throttled::new("acks topic", ACK_ERROR_LOG_INTERVAL);
                while !flag.load(Ordering::Acquire) {
                    match consumer.poll(Duration::from_millis(200)) {
                        Some(Ok(message)) => match message.payload().filter(|p| p.len() <= MAX_ACK_RECORD_BYTES) {
                            Some(payload) => match serde_json::from_slice::<AckRecord>(payload) {
                                Ok(record) => book.note_ack(&record.incident, Ack { at: record.at, by: record.by }),
                                Err(err) => tracing::warn!(
                                    offset = message.offset(),
                                    "skipping an unreadable acknowledgement: {err}"
                                ),
                            },
                            None => tracing::warn!(
                                offset = message.offset(),
                                "skipping an empty or oversized acknowledgement"
                            ),
                        },
                        Some(Err(err)) => broker_errors.warn(&err),
                        None => {}
                    }
                }
            })
            .expect("spawning the acks follower");
        Ok(AckFollower { stop, thread: Some(thread) })
    }
}

impl Drop for AckFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// At most one warning this often about the acks topic: a broker that is down answers every
/// poll (five a second) with an error, which would drown the log.
const ACK_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// A warning about `what`, logged at most once per interval, with how many like it were held
/// back.
struct Throttled {
    what: &'static str,
    every: Duration,
    last: Option<std::time::Instant>,
    held_back: u64,
}

impl Throttled {
    fn new(what: &'static str, every: Duration) -> Throttled {
        Throttled { what, every, last: None, held_back: 0 }
    }

    fn warn(&mut self, err: &dyn std::fmt::Display) {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < self.every) {
            self.held_back += 1;
            return;
        }
        tracing::warn!(held_back = self.held_back, "{}: {err}", self.what);
        self.last = Some(now);
        self.held_back = 0;
    }

    /// Whether the next warning would be logged (for the tests).
    #[cfg(test)]
    fn would_log(&self) -> bool {
        self.last.is_none_or(|last| last.elapsed() >= self.every)
    }
}

/// Makes room: the incident resolved longest ago goes, else the one opened longest ago.
fn evict(entries: &mut HashMap<String, Entry>) {
    let oldest = entries
        .values()
        .min_by_key(|e| (e.incident.state == State::Open, e.incident.resolved.unwrap_or(e.incident.opened)))
        .map(|e| e.incident.id.clone());
    if let Some(id) = oldest {
        entries.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use routewatch_incidents::{Change, RouterConfig, RouterStage};
    use routewatch_telemetry::AnomalyEvent;

    use super::*;

    fn updates(router: &str, minutes: &[i64], until: i64) -> Vec<IncidentUpdate> {
        let mut stage = RouterStage::new(RouterConfig::default()).unwrap();
        let events: Vec<AnomalyEvent> = minutes
            .iter()
            .map(|&m| AnomalyEvent {
                router: router.into(),
                site: Some("fra1".into()),
                role: None,
                metric: "cpu_util".into(),
                plugin: "arima".into(),
                plugin_version: "1".into(),
                ts: m * 60_000,
                detected_at: None,
                value: 1.0,
                expected: 0.4,
                lower: None,
                upper: None,
                score: 0.9,
                kind: routewatch_telemetry::AnomalyKind::Spike,
                reason: String::new(),
            })
            .collect();
        stage.take(&events, until * 60_000)
    }

    #[test]
    fn the_latest_state_wins_and_a_leaving_partition_takes_its_open_incidents() {
        let book = IncidentBook::default();
        let r1 = updates("r1", &[0], 20);
        assert_eq!(r1.last().unwrap().change, Change::Resolved);
        book.publish(3, &r1);
        book.publish(3, &updates("r2", &[0], 1));
        book.publish(4, &updates("r3", &[0], 1));
        let all = book.list(10, |_| true);
        assert_eq!(all.len(), 3);
        assert_eq!(book.get(&r1[0].incident.id).unwrap().incident.state, State::Resolved, "the latest state wins");
        assert!(book.acknowledge(&r1[0].incident.id, Ack { at: 1, by: Some("ana".into()) }).is_some());
        assert!(book.acknowledge("inc-nope", Ack { at: 1, by: None }).is_none());
        book.forget_partition(3);
        let left: Vec<String> = book.list(10, |_| true).into_iter().map(|e| e.incident.router).collect();
        assert_eq!(left.len(), 2);
        assert!(left.contains(&"r1".to_owned()) && left.contains(&"r3".to_owned()), "{left:?}");
    }

    #[test]
    fn a_full_book_drops_the_oldest_resolved_first() {
        let book = IncidentBook::default();
        book.publish(0, &updates("resolved", &[0], 20));
        for i in 0..MAX_INCIDENTS {
            book.publish(0, &updates(&format!("r{i}"), &[1], 2));
        }
        let all = book.list(usize::MAX, |_| true);
        assert_eq!(all.len(), MAX_INCIDENTS);
        assert!(all.iter().all(|e| e.incident.router != "resolved"));
    }

    #[test]
    fn a_broker_that_stays_down_is_warned_about_once_per_interval() {
        let mut throttled = Throttled::new("acks topic", Duration::from_millis(300));
        let err = "all brokers down";
        throttled.warn(&err);
        for _ in 0..25 {
            throttled.warn(&err);
        }
        assert_eq!(throttled.held_back, 25, "the polls after the first within the interval are held back");
        assert!(!throttled.would_log());
        std::thread::sleep(Duration::from_millis(350));
        assert!(throttled.would_log());
        throttled.warn(&err);
        assert_eq!(throttled.held_back, 0, "the next warning says how many were held back, and the count starts over");
    }
}
