//! Guarded self-healing for routewatch: policies map an incident's probable cause to an
//! action; guard rails decide whether it may run; every step is on record.
//!
//! The flow, one incident at a time:
//!
//! 1. An incident's cause becomes final (its feature window closed) and a [`Policy`] names
//!    that cause: the policy's [`Mode`] decides what happens. `suggest` records the action for
//!    a person; `approve` waits for [`Healer::approve`]; `auto` goes on at once.
//! 2. The guard rails, in order: the classifier's confidence, the policy's circuit breaker,
//!    the router's cooldown, the site's hourly rate, and the blast radius (the share of a
//!    site's routers in action at once). The global dry-run switch stops an action that passed
//!    them all just before it is sent.
//! 3. The caller sends the [`Execution`] ([`HttpTarget`]: a timeout per attempt, retries) and
//!    reports back with [`Healer::executed`].
//! 4. The incident resolving within the verification window settles the action as having
//!    helped; [`Healer::tick`] settles it as not, and enough of those in a row open the
//!    policy's breaker.
//!
//! Every change of an action is an [`ActionRecord`] in [`Effects::records`], for the audit
//! topic, the REST list and the Prometheus counters.
//!
//! ```
//! use routewatch_remediation::{HealingConfig, Healer, Mode, Policy};
//! use routewatch_telemetry::Action;
//!
//! let policy = Policy {
//!     name: "leak-restart".into(),
//!     cause: "memory-leak".into(),
//!     min_confidence: 0.8,
//!     action: Action::RestartProcess,
//!     mode: Mode::Approve,
//!     target: "http://automation.example:8080".into(),
//!     timeout_secs: 10.0,
//!     retries: 2,
//! };
//! let config = HealingConfig { policies: vec![policy], ..HealingConfig::default() };
//! let healer = Healer::new(config, vec!["memory-leak".into()]).unwrap();
//! assert_eq!(healer.policies()[0].policy.mode, Mode::Approve);
//!
//! // A policy naming a cause the classifier cannot give is refused, with the reason.
//! let bad = Policy { cause: "gremlins".into(), ..healer.policies()[0].policy.clone() };
//! let config = HealingConfig { policies: vec![bad], ..HealingConfig::default() };
//! let err = Healer::new(config, vec!["memory-leak".into()]).err().unwrap();
//! assert!(err.to_string().contains("unknown cause \"gremlins\""));
//! ```

mod healer;
mod policy;
mod record;
mod target;

pub use healer::{
    ApproveError, ConfigError, Effects, Execution, Healer, HealingConfig, MAX_POLICIES, MAX_RECORDS, PolicyStatus,
    Sent, action_id,
};
pub use policy::{MAX_POLICY_NAME, MAX_RETRIES, MAX_TARGET_URL, MAX_TIMEOUT, Mode, Policy, PolicyError, check_all};
pub use record::{ActionRecord, Refusal, Status, Verdict};
pub use target::{HttpTarget, MAX_ANSWER_BYTES};
