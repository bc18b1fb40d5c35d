//! Policies: which action a cause calls for, how sure the cause must be, and how far the
//! action may go on its own (its mode). Checked when loaded, from a file or over REST.

use std::time::Duration;

use routewatch_telemetry::Action;
use serde::{Deserialize, Serialize};

/// Longest policy name: it is a Prometheus label value and part of action ids.
pub const MAX_POLICY_NAME: usize = 64;
/// Longest target URL.
pub const MAX_TARGET_URL: usize = 512;
/// Most retries of one action.
pub const MAX_RETRIES: u32 = 5;
/// Longest timeout of one attempt.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// How far a policy's action goes without a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The policy does nothing.
    Off,
    /// The action is attached to the incident, for a person to take.
    #[default]
    Suggest,
    /// The action waits for `POST /api/v1/incidents/{id}/approve`, then runs.
    Approve,
    /// The action runs at once, within the guard rails.
    Auto,
}

impl Mode {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Suggest => "suggest",
            Mode::Approve => "approve",
            Mode::Auto => "auto",
        }
    }
}

/// One policy: an incident whose cause is `cause`, with at least `min_confidence`, calls for
/// `action`, sent to `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Unique; letters, digits, `-` and `_`.
    pub name: String,
    /// A cause the classifier can name (a fault kind such as `memory-leak`).
    pub cause: String,
    /// The least probability the classifier must give the cause (0 to 1; default 0.8).
    #[serde(default = "default_confidence")]
    pub min_confidence: f64,
    pub action: Action,
    #[serde(default)]
    pub mode: Mode,
    /// Base URL of the automation endpoint: actions go to `{target}/routers/{router}/actions`.
    pub target: String,
    /// Timeout of one attempt, in seconds (default 10).
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Attempts after the first, when the target cannot be reached or answers 5xx (default 2).
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_confidence() -> f64 {
    0.8
}

fn default_timeout() -> f64 {
    10.0
}

fn default_retries() -> u32 {
    2
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy name {0:?} must be 1 to {MAX_POLICY_NAME} letters, digits, '-' or '_'")]
    Name(String),
    #[error("policy {policy}: unknown cause {cause:?}; the classifier names: {known}")]
    UnknownCause { policy: String, cause: String, known: String },
    #[error("policy {policy}: min_confidence must be within 0 to 1, not {value}")]
    Confidence { policy: String, value: f64 },
    #[error("policy {policy}: target {target:?} must be an http:// or https:// URL of at most {MAX_TARGET_URL} bytes")]
    Target { policy: String, target: String },
    #[error("policy {policy}: timeout_secs must be above 0 and at most {}, not {value}", MAX_TIMEOUT.as_secs())]
    Timeout { policy: String, value: f64 },
    #[error("policy {policy}: retries must be at most {MAX_RETRIES}, not {value}")]
    Retries { policy: String, value: u32 },
    #[error("policies {first} and {second} both act on cause {cause:?}: one policy per cause")]
    DuplicateCause { first: String, second: String, cause: String },
    #[error("two policies are named {0:?}")]
    DuplicateName(String),
    #[error("no policy named {0:?}")]
    NotFound(String),
}

impl Policy {
    /// Checks the policy on its own; `causes` are those the classifier can name.
    pub fn check(&self, causes: &[String]) -> Result<(), PolicyError> {
        let policy = || self.name.clone();
        let valid_name = !self.name.is_empty()
            && self.name.len() <= MAX_POLICY_NAME
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(PolicyError::Name(self.name.chars().take(MAX_POLICY_NAME * 2).collect()));
        }
        if !causes.contains(&self.cause) {
            return Err(PolicyError::UnknownCause {
                policy: policy(),
                cause: self.cause.chars().take(MAX_POLICY_NAME).collect(),
                known: causes.join(", "),
            });
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(PolicyError::Confidence { policy: policy(), value: self.min_confidence });
        }
        let scheme = self.target.starts_with("http://") || self.target.starts_with("https://");
        if !scheme || self.target.len() > MAX_TARGET_URL || self.target.chars().any(char::is_whitespace) {
            return Err(PolicyError::Target { policy: policy(), target: self.target.chars().take(80).collect() });
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= MAX_TIMEOUT.as_secs_f64()) {
            return Err(PolicyError::Timeout { policy: policy(), value: self.timeout_secs });
        }
        if self.retries > MAX_RETRIES {
            return Err(PolicyError::Retries { policy: policy(), value: self.retries });
        }
        Ok(())
    }

    /// Timeout of one attempt.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }
}

/// Checks a whole set: each policy, unique names, one policy per cause.
pub fn check_all(policies: &[Policy], causes: &[String]) -> Result<(), PolicyError> {
    for (i, policy) in policies.iter().enumerate() {
        policy.check(causes)?;
        for other in &policies[..i] {
            if other.name == policy.name {
                return Err(PolicyError::DuplicateName(policy.name.clone()));
            }
            if other.cause == policy.cause {
                return Err(PolicyError::DuplicateCause {
                    first: other.name.clone(),
                    second: policy.name.clone(),
                    cause: policy.cause.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes() -> Vec<String> {
        vec!["memory-leak".into(), "link-flap".into()]
    }

    fn policy() -> Policy {
        serde_json::from_value(serde_json::json!({
            "name": "leak", "cause": "memory-leak", "action": "restart-process",
            "target": "http://127.0.0.1:8080"
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_cautious() {
        let p = policy();
        assert_eq!((p.mode, p.min_confidence, p.retries), (Mode::Suggest, 0.8, 2));
        p.check(&causes()).unwrap();
    }

    #[test]
    fn each_bad_field_is_refused_with_its_reason() {
        let bad = |edit: &dyn Fn(&mut Policy)| {
            let mut p = policy();
            edit(&mut p);
            p.check(&causes()).unwrap_err().to_string()
        };
        assert!(
            bad(&|p| p.cause = "gremlins".into())
                .contains("unknown cause \"gremlins\"; the classifier names: memory-leak, link-flap")
        );
        assert!(bad(&|p| p.name = "a b".into()).contains("letters, digits"));
        assert!(bad(&|p| p.name = "x".repeat(65)).contains("1 to 64"));
        assert!(bad(&|p| p.min_confidence = 1.5).contains("within 0 to 1"));
        assert!(bad(&|p| p.min_confidence = f64::NAN).contains("within 0 to 1"));
        assert!(bad(&|p| p.target = "ftp://x".into()).contains("http:// or https://"));
        assert!(bad(&|p| p.timeout_secs = 0.0).contains("timeout_secs"));
        assert!(bad(&|p| p.retries = 9).contains("retries"));
    }

    #[test]
    fn an_unknown_action_or_field_is_refused_by_the_parser() {
        let err = serde_json::from_value::<Policy>(serde_json::json!({
            "name": "x", "cause": "memory-leak", "action": "reboot", "target": "http://h"
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown variant `reboot`") && err.contains("restart-process"), "{err}");
        let err = serde_json::from_value::<Policy>(serde_json::json!({
            "name": "x", "cause": "memory-leak", "action": "dampen-peer", "target": "http://h", "mdoe": "auto"
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `mdoe`"), "{err}");
    }

    #[test]
    fn a_set_has_unique_names_and_one_policy_per_cause() {
        let mut second = policy();
        second.name = "leak2".into();
        assert!(matches!(check_all(&[policy(), second.clone()], &causes()), Err(PolicyError::DuplicateCause { .. })));
        second.cause = "link-flap".into();
        check_all(&[policy(), second.clone()], &causes()).unwrap();
        second.name = "leak".into();
        assert!(matches!(check_all(&[policy(), second], &causes()), Err(PolicyError::DuplicateName(_))));
    }
}
