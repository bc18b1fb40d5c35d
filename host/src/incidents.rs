//! The incidents this host's partitions found, for the HTTP API and the demo: the latest state
//! of each (filled by the incidents sink, [`crate::sinks::incidents`], once a batch is
//! acknowledged), operators' acknowledgements, and a live feed of every change.
//!
//! It keeps the site incidents of the site-topic partitions this host holds
//! ([`crate::kafka::sites`]) beside them, with the same bounds.
//!
//! The book is a view, not the record: `router-incidents` and `site-incidents` (compacted,
//! keyed by incident id) are. It holds at most [`MAX_INCIDENTS`], dropping the oldest resolved first, and forgets a
//! partition's open incidents when the partition leaves this host (its next owner reports them).

use std::collections::HashMap;
use std::sync::Mutex;

use routewatch_incidents::{Incident, IncidentUpdate, SiteIncident, SiteUpdate, State};
use serde::Serialize;

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
    sites: Mutex<HashMap<String, SiteEntry>>,
    live: tokio::sync::broadcast::Sender<IncidentUpdate>,
}

impl Default for IncidentBook {
    fn default() -> IncidentBook {
        IncidentBook {
            entries: Mutex::new(HashMap::new()),
            sites: Mutex::new(HashMap::new()),
            live: tokio::sync::broadcast::channel(4096).0,
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
                    entries.insert(incident.id.clone(), Entry { incident, partition, acknowledged: None, features });
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
        entry.acknowledged = Some(ack);
        Some(entry.clone())
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
}
