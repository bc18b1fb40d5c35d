//! When a failing plugin is taken out of service, and for how long.
//!
//! A plugin that fails `max_failures` batches within `window` is quarantined for a backoff that
//! starts at `backoff` and doubles with each quarantine up to `max_backoff`. Once a plugin has
//! stayed out of quarantine for `max_backoff`, it is forgiven: the next quarantine starts again
//! from `backoff`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Settings of the quarantine (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinePolicy {
    /// Failures within `window` that quarantine a plugin.
    pub max_failures: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// The first quarantine's length; each next one doubles it.
    pub backoff: Duration,
    /// The longest quarantine.
    pub max_backoff: Duration,
}

impl Default for QuarantinePolicy {
    fn default() -> QuarantinePolicy {
        QuarantinePolicy {
            max_failures: 3,
            window: Duration::from_secs(60),
            backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30 * 60),
        }
    }
}

/// A plugin's failure history and quarantine.
#[derive(Debug, Clone, Default)]
pub struct Health {
    failures: VecDeque<Instant>,
    quarantined_until: Option<Instant>,
    reason: Option<String>,
    next_backoff: Option<Duration>,
    released_at: Option<Instant>,
    quarantines: u64,
}

impl Health {
    /// Records a failed batch. Returns the backoff if this failure starts a quarantine.
    pub fn record_failure(&mut self, now: Instant, policy: &QuarantinePolicy, reason: &str) -> Option<Duration> {
        if self.is_quarantined(now) {
            // Batches already under way when the quarantine began: nothing more to decide.
            return None;
        }
        if self.released_at.is_some_and(|at| now.duration_since(at) >= policy.max_backoff) {
            self.next_backoff = None;
        }
        self.failures.push_back(now);
        while self.failures.front().is_some_and(|&t| now.duration_since(t) > policy.window) {
            self.failures.pop_front();
        }
        if (self.failures.len() as u32) < policy.max_failures.max(1) {
            return None;
        }
        let backoff = self.next_backoff.unwrap_or(policy.backoff).min(policy.max_backoff);
        self.next_backoff = Some((backoff * 2).min(policy.max_backoff));
        self.failures.clear();
        self.quarantined_until = Some(now + backoff);
        self.reason = Some(format!("{} failures within {:?}; last: {reason}", policy.max_failures, policy.window));
        self.quarantines += 1;
        Some(backoff)
    }

    /// Whether the plugin is quarantined at `now`.
    pub fn is_quarantined(&self, now: Instant) -> bool {
        self.quarantined_until.is_some_and(|until| now < until)
    }

    /// Ends a quarantine whose time is up. Returns whether it did.
    pub fn release_if_due(&mut self, now: Instant) -> bool {
        match self.quarantined_until {
            Some(until) if now >= until => {
                self.quarantined_until = None;
                self.released_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Ends a quarantine now (an operator re-enabled the plugin); the backoff is kept.
    pub fn lift(&mut self, now: Instant) {
        if self.is_quarantined(now) {
            self.quarantined_until = None;
            self.released_at = Some(now);
        }
        self.failures.clear();
    }

    /// Until when the plugin is out of service, if it is.
    pub fn quarantined_until(&self) -> Option<Instant> {
        self.quarantined_until
    }

    /// Why the last quarantine began.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Quarantines so far.
    pub fn quarantines(&self) -> u64 {
        self.quarantines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> QuarantinePolicy {
        QuarantinePolicy {
            max_failures: 3,
            window: Duration::from_secs(10),
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(20),
        }
    }

    #[test]
    fn quarantines_after_max_failures_within_the_window() {
        let (p, t0) = (policy(), Instant::now());
        let mut h = Health::default();
        assert_eq!(h.record_failure(t0, &p, "trap"), None);
        assert_eq!(h.record_failure(t0 + Duration::from_secs(1), &p, "trap"), None);
        assert_eq!(h.record_failure(t0 + Duration::from_secs(2), &p, "trap"), Some(Duration::from_secs(5)));
        assert!(h.is_quarantined(t0 + Duration::from_secs(6)));
        assert!(!h.is_quarantined(t0 + Duration::from_secs(7)));
        assert!(h.reason().unwrap().contains("last: trap"));
        assert_eq!(h.quarantines(), 1);
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_quarantine() {
        let (p, t0) = (policy(), Instant::now());
        let mut h = Health::default();
        for i in 0..10 {
            assert_eq!(h.record_failure(t0 + Duration::from_secs(i * 6), &p, "trap"), None, "failure {i}");
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_is_forgiven_after_a_quiet_spell() {
        let (p, mut now) = (policy(), Instant::now());
        let mut h = Health::default();
        let mut backoffs = Vec::new();
        for _ in 0..4 {
            let backoff = (0..3).find_map(|_| h.record_failure(now, &p, "trap")).unwrap();
            backoffs.push(backoff.as_secs());
            now += backoff;
            assert!(h.release_if_due(now));
        }
        assert_eq!(backoffs, [5, 10, 20, 20]);
        // Out of quarantine for the longest backoff: the next one starts from the base again.
        now += Duration::from_secs(21);
        let backoff = (0..3).find_map(|_| h.record_failure(now, &p, "trap")).unwrap();
        assert_eq!(backoff, Duration::from_secs(5));
    }

    #[test]
    fn failures_during_a_quarantine_are_ignored() {
        let (p, t0) = (policy(), Instant::now());
        let mut h = Health::default();
        (0..3).for_each(|_| _ = h.record_failure(t0, &p, "trap"));
        assert_eq!(h.record_failure(t0, &p, "late"), None);
        assert_eq!(h.quarantines(), 1);
        assert!(!h.release_if_due(t0 + Duration::from_secs(4)));
        assert!(h.release_if_due(t0 + Duration::from_secs(5)));
    }
}
