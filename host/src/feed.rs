//! Recent anomalies for the HTTP API, and a live feed for the terminal demo. Filled by the
//! feed sink ([`crate::sinks::feed`]) once a batch's anomalies are acknowledged.

use std::collections::VecDeque;
use std::sync::Mutex;

use routewatch_telemetry::AnomalyEvent;

/// How many recent anomalies the HTTP API keeps.
pub const RECENT_ANOMALIES: usize = 1000;

/// Recent anomalies, and a live feed of new ones.
pub struct AnomalyFeed {
    recent: Mutex<VecDeque<AnomalyEvent>>,
    live: tokio::sync::broadcast::Sender<AnomalyEvent>,
}

impl Default for AnomalyFeed {
    fn default() -> AnomalyFeed {
        AnomalyFeed { recent: Mutex::new(VecDeque::new()), live: tokio::sync::broadcast::channel(4096).0 }
    }
}

impl AnomalyFeed {
    /// Adds anomalies: to the recent ones (the oldest go past [`RECENT_ANOMALIES`]) and to
    /// the live feed.
    pub fn publish(&self, events: &[AnomalyEvent]) {
        if events.is_empty() {
            return;
        }
        let mut recent = self.recent.lock().expect("feed lock");
        for event in events {
            // Nobody listening is fine: the feed is for whoever wants it.
            let _ = self.live.send(event.clone());
            if recent.len() == RECENT_ANOMALIES {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
    }

    /// The most recent anomalies, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<AnomalyEvent> {
        self.recent_matching(limit, |_| true)
    }

    /// The most recent anomalies that pass `filter`, oldest first.
    pub fn recent_matching(&self, limit: usize, filter: impl Fn(&AnomalyEvent) -> bool) -> Vec<AnomalyEvent> {
        let recent = self.recent.lock().expect("feed lock");
        let mut found: Vec<AnomalyEvent> = recent.iter().rev().filter(|e| filter(e)).take(limit).cloned().collect();
        found.reverse();
        found
    }

    /// Every anomaly from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AnomalyEvent> {
        self.live.subscribe()
    }
}
