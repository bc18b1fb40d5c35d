//! `/api/v1/incidents`: the incidents of this host's partitions (from the [`IncidentBook`]),
//! an operator's acknowledgement, and feedback on the probable cause, kept in the feedback
//! topic for the classifier's training script (`plugins/classifier-forest/train/`).
//!
//! Handlers are thin: they check what the client sent (every body is capped at
//! [`MAX_BODY_BYTES`], every name at [`MAX_NAME_BYTES`]) and hand it on.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rdkafka::producer::{FutureProducer, FutureRecord};
use routewatch_incidents::{Cause, Incident, State as IncidentState};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};
use crate::incidents::{Ack, AckRecord};

/// Largest body an acknowledgement or a feedback may have.
pub const MAX_BODY_BYTES: usize = 4096;
/// Longest incident id, cause, or name of who acknowledged or gave feedback.
pub const MAX_NAME_BYTES: usize = 160;
/// Longest note a feedback may carry.
pub const MAX_NOTE_BYTES: usize = 1024;
/// Most incidents one list returns.
pub const MAX_LIMIT: usize = 1000;
/// How long a feedback waits for the broker to take it.
pub const FEEDBACK_DEADLINE: Duration = Duration::from_secs(10);

type ApiResult = Result<Response, ApiError>;

/// Where feedback and acknowledgements go: topics of the host's broker.
pub struct IncidentTopics {
    /// The producer.
    pub producer: FutureProducer,
    /// Feedback (`feedback_topic` of the configuration).
    pub feedback: String,
    /// Acknowledgements (`acks_topic`), compacted and keyed by incident id: every host follows
    /// it ([`crate::incidents::AckFollower`]), so an acknowledgement outlives restarts and
    /// follows the incident to its partition's next owner.
    pub acks: String,
}

/// Sends one record and waits (at most [`FEEDBACK_DEADLINE`]) for the broker to take it.
async fn store(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) -> Result<(), String> {
    let record = FutureRecord::to(topic).key(key).payload(payload);
    match tokio::time::timeout(FEEDBACK_DEADLINE, producer.send(record, FEEDBACK_DEADLINE)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((err, _))) => Err(err.to_string()),
        Err(_) => Err(format!("no acknowledgement within {} s", FEEDBACK_DEADLINE.as_secs())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    site: Option<String>,
    cause: Option<String>,
    router: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/incidents?state=open|resolved&site=S&cause=C&router=R&limit=N`: most recently
/// opened first (default 100, at most [`MAX_LIMIT`]). `cause` matches the classifier's verdict
/// (`unknown` included).
pub(super) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let wanted = state_filter(query.state.as_deref())?;
    for (what, value) in [("site", &query.site), ("cause", &query.cause), ("router", &query.router)] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_NAME_BYTES) {
            return Err(ApiError::bad_request(format!("{what} is over {MAX_NAME_BYTES} bytes")));
        }
    }
    let limit = query.limit.unwrap_or(100).min(MAX_LIMIT);
    let found = state.incidents.list(limit, |e| {
        let i = &e.incident;
        wanted.is_none_or(|s| i.state == s)
            && query.site.as_ref().is_none_or(|s| i.site.as_ref() == Some(s))
            && query.cause.as_ref().is_none_or(|c| i.cause.as_ref() == Some(c))
            && query.router.as_ref().is_none_or(|r| &i.router == r)
    });
    Ok(Json(found).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SiteListQuery {
    state: Option<String>,
    site: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/site-incidents?state=open|resolved&site=S&limit=N`: the site incidents of the
/// site-topic partitions this host holds, most recently opened first (default 100, at most
/// [`MAX_LIMIT`]). `site` matches the site (or role) they group.
pub(super) async fn list_sites(
    State(state): State<ApiState>,
    query: Result<Query<SiteListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let wanted = state_filter(query.state.as_deref())?;
    if query.site.as_ref().is_some_and(|v| v.len() > MAX_NAME_BYTES) {
        return Err(ApiError::bad_request(format!("site is over {MAX_NAME_BYTES} bytes")));
    }
    let limit = query.limit.unwrap_or(100).min(MAX_LIMIT);
    let found = state.incidents.list_sites(limit, |e| {
        wanted.is_none_or(|s| e.incident.state == s) && query.site.as_ref().is_none_or(|s| &e.incident.key == s)
    });
    Ok(Json(found).into_response())
}

/// `state=` of a list: open, resolved, or none (both).
fn state_filter(state: Option<&str>) -> Result<Option<IncidentState>, ApiError> {
    match state {
        None => Ok(None),
        Some("open") => Ok(Some(IncidentState::Open)),
        Some("resolved") => Ok(Some(IncidentState::Resolved)),
        Some(other) => Err(ApiError::bad_request(format!("state {other:?}: open or resolved"))),
    }
}

/// `GET /api/v1/incidents/{id}`, with its self-healing action (`action`) if it has one.
pub(super) async fn show(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id = checked_id(&id)?;
    let entry = state.incidents.get(id).ok_or_else(|| unknown(id))?;
    let mut body = serde_json::to_value(entry).expect("incidents serialise");
    if let Some(action) = state.healing.as_ref().and_then(|h| h.action_of(id))
        && let Some(object) = body.as_object_mut()
    {
        object.insert("action".into(), serde_json::to_value(action).expect("actions serialise"));
    }
    Ok(Json(body).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: Option<String>,
}

/// `POST /api/v1/incidents/{id}/ack`, body empty or `{"by": NAME}`.
pub(super) async fn ack(State(state): State<ApiState>, Path(id): Path<String>, request: Request) -> ApiResult {
    let id = checked_id(&id)?.to_owned();
    let body = super::plugins::capped_body(request, MAX_BODY_BYTES, "an acknowledgement").await?;
    let body: AckBody = if body.iter().all(u8::is_ascii_whitespace) { AckBody::default() } else { json(&body)? };
    let by = body.by.map(|b| checked_text("by", b, MAX_NAME_BYTES)).transpose()?;
    if state.incidents.get(&id).is_none() {
        return Err(unknown(&id));
    }
    let ack = Ack { at: routewatch_engine::now_ms(), by };
    if let Some(topics) = &state.topics {
        let record = AckRecord { incident: id.clone(), at: ack.at, by: ack.by.clone() };
        let payload = serde_json::to_vec(&record).expect("acknowledgements serialise");
        if let Err(err) = store(&topics.producer, &topics.acks, &id, &payload).await {
            tracing::warn!(incident = %id, "acknowledgement not stored: {err}");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ack_not_stored",
                format!("the acks topic did not take it: {err}"),
            ));
        }
    }
    let entry = state.incidents.acknowledge(&id, ack).ok_or_else(|| unknown(&id))?;
    tracing::info!(incident = %id, by = ?entry.acknowledged.as_ref().and_then(|a| a.by.as_deref()), "incident acknowledged");
    Ok(Json(entry).into_response())
}

/// What an operator says about an incident's cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The incident is real (and its cause is `cause`, or the classifier's if none is given).
    Confirmed,
    /// Nothing was wrong.
    FalsePositive,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    verdict: Verdict,
    cause: Option<String>,
    by: Option<String>,
    note: Option<String>,
}

/// One record of the feedback topic (JSON, keyed by incident id): what the training script
/// reads back (`train.py --feedback`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Feedback {
    /// The incident as the host last saw it.
    pub incident: Incident,
    pub verdict: Verdict,
    /// The true cause: the one the operator named, else (confirmed) the classifier's verdict;
    /// none for a false positive.
    pub cause: Option<String>,
    /// The classifier's causes when the feedback was given.
    pub predicted: Vec<Cause>,
    pub by: Option<String>,
    pub note: Option<String>,
    /// Wall-clock time of the feedback, ms since the Unix epoch.
    pub at: i64,
    /// Feature layout of `features`.
    pub layout: u32,
    /// The incident's feature vector, as the classifier last saw it (empty if it never did).
    pub features: Vec<f64>,
}

/// `POST /api/v1/incidents/{id}/feedback`, body
/// `{"verdict": "confirmed" | "false-positive", "cause": C?, "by": NAME?, "note": TEXT?}`:
/// answered once the feedback topic holds it.
pub(super) async fn feedback(State(state): State<ApiState>, Path(id): Path<String>, request: Request) -> ApiResult {
    let id = checked_id(&id)?.to_owned();
    let body = super::plugins::capped_body(request, MAX_BODY_BYTES, "a feedback").await?;
    let body: FeedbackBody = json(&body)?;
    let cause = body.cause.map(|c| checked_text("cause", c, MAX_NAME_BYTES)).transpose()?;
    if body.verdict == Verdict::FalsePositive && cause.is_some() {
        return Err(ApiError::bad_request("a false positive has no cause"));
    }
    let by = body.by.map(|b| checked_text("by", b, MAX_NAME_BYTES)).transpose()?;
    let note = body.note.map(|n| checked_text("note", n, MAX_NOTE_BYTES)).transpose()?;
    let Some(topics) = state.topics.clone() else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_feedback_topic", "this host keeps no feedback"));
    };
    let (entry, features) = state.incidents.with_features(&id).ok_or_else(|| unknown(&id))?;
    let cause = match body.verdict {
        Verdict::Confirmed => cause.or_else(|| entry.incident.cause.clone().filter(|c| c != "unknown")),
        Verdict::FalsePositive => None,
    };
    let record = Feedback {
        predicted: entry.incident.causes.clone(),
        incident: entry.incident,
        verdict: body.verdict,
        cause,
        by,
        note,
        at: routewatch_engine::now_ms(),
        layout: routewatch_incidents::FEATURE_LAYOUT_VERSION,
        features,
    };
    let payload = serde_json::to_vec(&record).expect("feedback always serialises");
    if let Err(err) = store(&topics.producer, &topics.feedback, &id, &payload).await {
        tracing::warn!(incident = %id, "feedback not stored: {err}");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "feedback_not_stored",
            format!("the feedback topic did not take it: {err}"),
        ));
    }
    tracing::info!(incident = %id, verdict = ?record.verdict, cause = ?record.cause, "incident feedback stored");
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

pub(super) fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!("no incident {id:?} on this host"))
}

/// Incident ids are `inc-{router}-{opened}`: printable, no slash, bounded.
pub(super) fn checked_id(id: &str) -> Result<&str, ApiError> {
    let ok = !id.is_empty() && id.len() <= MAX_NAME_BYTES && id.chars().all(|c| c.is_ascii_graphic() && c != '/');
    ok.then_some(id)
        .ok_or_else(|| ApiError::bad_request(format!("not an incident id: 1 to {MAX_NAME_BYTES} printable characters")))
}

fn checked_text(what: &str, text: String, cap: usize) -> Result<String, ApiError> {
    if text.is_empty() || text.len() > cap {
        return Err(ApiError::bad_request(format!("{what} must be 1 to {cap} bytes")));
    }
    if text.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{what} must not hold control characters")));
    }
    Ok(text)
}

pub(super) fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body: {e}")))
}
