//! The audit trail: one record per action, written again at every change of its status (to the
//! `router-actions` topic and `GET /api/v1/actions`).

use routewatch_telemetry::Action;
use serde::{Deserialize, Serialize};

use crate::policy::Mode;

/// Where an action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Suggest mode: attached to the incident; nothing is sent.
    Suggested,
    /// Approve mode: waiting for `POST /api/v1/incidents/{id}/approve`.
    Proposed,
    /// Approved (or auto) and being sent to the target.
    Executing,
    /// The global dry-run switch was on: the action passed every guard rail, and was not sent.
    DryRun,
    /// The target took it.
    Executed,
    /// A guard rail, or a low confidence, stopped it (see `refusal`).
    Refused,
    /// The target could not be reached, timed out, or refused it, after every retry.
    Failed,
    /// Approve mode: the incident resolved before anyone approved the action.
    Withdrawn,
}

impl Status {
    /// The wire name, also the `outcome` label of `routewatch_actions_total`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Suggested => "suggested",
            Status::Proposed => "proposed",
            Status::Executing => "executing",
            Status::DryRun => "dry-run",
            Status::Executed => "executed",
            Status::Refused => "refused",
            Status::Failed => "failed",
            Status::Withdrawn => "withdrawn",
        }
    }
}

/// Why an action was refused: the `reason` label of `routewatch_action_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// The classifier gave the cause less than the policy's `min_confidence`.
    LowConfidence,
    /// The site had its hourly number of actions already.
    SiteRateLimit,
    /// Another action would put more than the blast radius of the site's routers in action.
    BlastRadius,
    /// The router had an action less than the cooldown ago.
    Cooldown,
    /// The policy's circuit breaker is open: its recent actions did not resolve their incidents.
    CircuitOpen,
}

impl Refusal {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::LowConfidence => "low-confidence",
            Refusal::SiteRateLimit => "site-rate-limit",
            Refusal::BlastRadius => "blast-radius",
            Refusal::Cooldown => "cooldown",
            Refusal::CircuitOpen => "circuit-open",
        }
    }
}

/// Whether an executed action's incident resolved in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The incident resolved within the verification window after the action.
    Resolved,
    /// It did not: counts against the policy's circuit breaker.
    NotResolved,
}

/// One action, as the audit trail shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// `act-{incident}`: an incident has at most one action.
    pub id: String,
    pub incident: String,
    pub router: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub policy: String,
    pub action: Action,
    pub mode: Mode,
    /// The cause the policy matched, and the classifier's probability for it.
    pub cause: String,
    pub confidence: f64,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// What happened, for a person: the refusal's details, the target's answer or error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Requests sent to the target.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Wall time of the first record, ms since the Unix epoch.
    pub created: i64,
    /// Wall time of this record.
    pub updated: i64,
}
