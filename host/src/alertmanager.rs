//! Incidents to Alertmanager: each router incident (and site incident) is posted to every
//! configured Alertmanager's v2 API (`POST /api/v2/alerts`) as an alert, and resolved with
//! `endsAt` when the incident resolves.
//!
//! Posting never blocks a partition worker: the incidents sink hands updates to
//! [`Alertmanager::post`], which only records the latest state of each alert; one thread of
//! its own sends them, with a timeout per request and retries with backoff. Alertmanager
//! forgets an alert that is not sent again within its `resolve_timeout`, so open alerts are
//! sent again every [`RESEND`], as Prometheus does. An alert whose labels change (a new
//! cause, a higher severity) is a new alert to Alertmanager: the old one is resolved then.
//!
//! | label | value |
//! |---|---|
//! | `alertname` | `RouterIncident`, `SiteIncident`, or `RouterPrediction` (a predicted incident) |
//! | `incident` | the incident's id |
//! | `router` | the router (router incidents) |
//! | `site` | the site (empty when the records do not say) |
//! | `cause` | the classifier's verdict, `unknown`, or `unclassified` (site incidents: `upstream`) |
//! | `severity` | `info`, `warning` or `critical` |
//! | `metric` | predictions only: the metric forecast |
//!
//! A prediction's cause is `predicted`, its `summary` what is coming and when (`mem_util
//! reaches 0.98 in about 2h10m (80%: 1h40m to 2h50m)`); it is resolved when withdrawn or
//! reached (then the router incident, if any, takes over).
//!
//! Annotations: `summary`, `description` and `runbook_url` (`runbook_url` of the
//! configuration, with `{cause}` replaced).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use routewatch_incidents::{Incident, SiteIncident, State};
use serde::Serialize;

/// How often open alerts are sent again (Alertmanager's default `resolve_timeout` is 5 min).
pub const RESEND: Duration = Duration::from_secs(60);
/// Longest one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per request (with 0.5 s, then 1 s between them).
pub const ATTEMPTS: u32 = 3;
/// Alerts waiting to be sent, at most; past it new ones are dropped (and counted).
pub const MAX_PENDING: usize = 20_000;
/// Alerts sent in one request.
const BATCH: usize = 500;
/// Waits this long after a change for more, so that a burst of updates is one request.
const LINGER: Duration = Duration::from_millis(200);

/// The default runbook address: the README's incident section (how an operator acts on one).
/// A configured `runbook_url` may hold `{cause}`, replaced by the incident's cause.
pub const DEFAULT_RUNBOOK_URL: &str =
    "https://example.invalid/routewatch/blob/main/README.md#incidents-and-their-causes";

/// One alert as Alertmanager's v2 API takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Its identity to Alertmanager.
    pub labels: std::collections::BTreeMap<String, String>,
    /// What a person reads.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// RFC 3339.
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// RFC 3339; set once resolved.
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// Where to see it: the host's incident route.
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// What kind of router alert: its name, its `cause` label, and the metric of a prediction.
struct Kind<'a> {
    alertname: &'a str,
    cause: &'a str,
    metric: Option<&'a str>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

impl Alert {
    /// The alert of a router incident.
    pub fn router(incident: &Incident, runbook_url: &str, api: Option<&str>) -> Alert {
        if let Some(prediction) = &incident.prediction {
            return Alert::prediction(incident, prediction, runbook_url, api);
        }
        let cause = incident.cause.as_deref().unwrap_or(routewatch_engine::incidents::UNCLASSIFIED);
        let top = incident
            .causes
            .first()
            .map(|c| format!("{} ({:.0}%)", c.cause, c.probability * 100.0))
            .unwrap_or_else(|| "not named yet".to_owned());
        let others: Vec<String> =
            incident.causes.iter().skip(1).map(|c| format!("{} {:.0}%", c.cause, c.probability * 100.0)).collect();
        let description = format!(
            "{} anomalies on {} ({}) by {}; probable cause {top}{}{}. Acknowledge or give feedback at /api/v1/incidents/{}.",
            incident.anomalies,
            incident.metrics.join(", "),
            if incident.flapping { "flapping" } else { "steady" },
            incident.detectors.join(", "),
            if others.is_empty() { String::new() } else { format!(", else {}", others.join(", ")) },
            if incident.reopened > 0 { format!("; reopened {} times", incident.reopened) } else { String::new() },
            incident.id,
        );
        let kind = Kind { alertname: "RouterIncident", cause, metric: None };
        Alert::of_router(incident, kind, cause, description, runbook_url, api)
    }

    /// The alert of a predicted incident.
    fn prediction(
        incident: &Incident,
        prediction: &routewatch_incidents::Prediction,
        runbook_url: &str,
        api: Option<&str>,
    ) -> Alert {
        let description = format!(
            "{} trends at {:+.4} an hour from {:.4}; ETA {} (interval at {:.0}%: {} to {}). Acknowledge at /api/v1/incidents/{}.",
            prediction.metric,
            prediction.slope_per_hour,
            prediction.level,
            rfc3339(prediction.eta),
            prediction.confidence * 100.0,
            rfc3339(prediction.eta_earliest),
            prediction.eta_latest.map_or_else(|| "never".to_owned(), rfc3339),
            incident.id,
        );
        let kind = Kind { alertname: "RouterPrediction", cause: "predicted", metric: Some(&prediction.metric) };
        Alert::of_router(incident, kind, &prediction.summary, description, runbook_url, api)
    }

    /// A router's alert: its labels, annotations and times, as both kinds have them.
    fn of_router(
        incident: &Incident,
        kind: Kind<'_>,
        what: &str,
        description: String,
        runbook_url: &str,
        api: Option<&str>,
    ) -> Alert {
        let site = incident.site.as_deref().unwrap_or("");
        let mut pairs = vec![
            ("alertname", kind.alertname),
            ("incident", incident.id.as_str()),
            ("router", incident.router.as_str()),
            ("site", site),
            ("cause", kind.cause),
            ("severity", incident.severity.name()),
        ];
        pairs.extend(kind.metric.map(|m| ("metric", m)));
        Alert {
            labels: labels(&pairs),
            annotations: labels(&[
                ("summary", &format!("{} at {}: {what}", incident.router, if site.is_empty() { "?" } else { site })),
                ("description", &description),
                ("runbook_url", &runbook_url.replace("{cause}", kind.cause)),
            ]),
            starts_at: rfc3339(incident.opened),
            ends_at: (incident.state == State::Resolved)
                .then(|| rfc3339(incident.resolved.unwrap_or(incident.last_anomaly))),
            generator_url: api.map(|base| format!("{base}/api/v1/incidents/{}", incident.id)),
        }
    }

    /// The alert of a site (or role) incident: its routers' alerts are inhibited under it by
    /// `deploy/alertmanager/alertmanager.yml`.
    pub fn site(incident: &SiteIncident, runbook_url: &str) -> Alert {
        let cause = "upstream";
        Alert {
            labels: labels(&[
                ("alertname", "SiteIncident"),
                ("incident", &incident.id),
                ("site", &incident.key),
                ("cause", cause),
                ("severity", incident.severity.name()),
            ]),
            annotations: labels(&[
                ("summary", &format!("{} routers of {} in trouble at once", incident.routers.len(), incident.key)),
                (
                    "description",
                    &format!(
                        "Routers {} opened incidents together: the likely cause is upstream of them (power, \
                         uplink, cooling of the site).",
                        incident.routers.join(", ")
                    ),
                ),
                ("runbook_url", &runbook_url.replace("{cause}", cause)),
            ]),
            starts_at: rfc3339(incident.opened),
            ends_at: (incident.state == State::Resolved).then(|| rfc3339(incident.resolved.unwrap_or(incident.opened))),
            generator_url: None,
        }
    }

    fn key(&self) -> String {
        self.labels.get("incident").cloned().unwrap_or_default()
    }

    fn resolved(&self) -> bool {
        self.ends_at.is_some()
    }
}

/// How the sender reaches Alertmanager.
#[derive(Debug, Clone)]
pub struct AlertmanagerConfig {
    /// Base addresses (`http://host:9093`); every alert goes to each.
    pub urls: Vec<String>,
    /// Runbook address template (`{cause}` is replaced).
    pub runbook_url: String,
    /// The host's own API address, for `generatorURL`.
    pub api: Option<String>,
}

/// Counters of what was sent (the host's `routewatch_alertmanager_*` metrics).
#[derive(Debug, Clone, Default)]
pub struct AlertCounters {
    /// Alerts an Alertmanager accepted.
    pub sent: Counter,
    /// Requests that failed after every attempt.
    pub failures: Counter,
    /// Alerts dropped with [`MAX_PENDING`] waiting.
    pub dropped: Counter,
}

impl AlertCounters {
    /// The counters registered in the host's metrics.
    pub fn of(metrics: &crate::metrics::Metrics) -> AlertCounters {
        AlertCounters {
            sent: metrics.alertmanager_sent.clone(),
            failures: metrics.alertmanager_failures.clone(),
            dropped: metrics.alertmanager_dropped.clone(),
        }
    }
}

struct Shared {
    /// The latest state of each changed alert, by incident id, not yet sent.
    pending: Mutex<HashMap<String, Alert>>,
    wake: Condvar,
    stop: AtomicBool,
}

/// The Alertmanager output: hand it incidents; its thread sends them.
pub struct Alertmanager {
    shared: Arc<Shared>,
    config: AlertmanagerConfig,
    counters: AlertCounters,
    thread: Option<JoinHandle<()>>,
}

impl Alertmanager {
    /// Starts the sender thread.
    pub fn start(config: AlertmanagerConfig, counters: AlertCounters) -> Alertmanager {
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let (shared, urls, counters) = (shared.clone(), config.urls.clone(), counters.clone());
            std::thread::Builder::new()
                .name("alertmanager".into())
                .spawn(move || send_loop(&shared, &urls, &counters))
                .expect("spawning the Alertmanager sender")
        };
        Alertmanager { shared, config, counters, thread: Some(thread) }
    }

    /// Queues router incidents (their latest states); never blocks on the network.
    pub fn post(&self, incidents: &[&Incident]) {
        let alerts: Vec<Alert> =
            incidents.iter().map(|i| Alert::router(i, &self.config.runbook_url, self.config.api.as_deref())).collect();
        self.queue(alerts);
    }

    /// Queues site incidents.
    pub fn post_sites(&self, incidents: &[&SiteIncident]) {
        self.queue(incidents.iter().map(|i| Alert::site(i, &self.config.runbook_url)).collect());
    }

    fn queue(&self, alerts: Vec<Alert>) {
        if alerts.is_empty() {
            return;
        }
        let mut pending = self.shared.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for alert in alerts {
            let key = alert.key();
            if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
                self.counters.dropped.inc();
                continue;
            }
            pending.insert(key, alert);
        }
        self.shared.wake.notify_one();
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sender: waits for changes (or the next resend), sends them, and keeps open alerts to
/// send again.
fn send_loop(shared: &Shared, urls: &[String], counters: &AlertCounters) {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(REQUEST_TIMEOUT)).build().into();
    // Open alerts, by incident id, as last sent.
    let mut firing: HashMap<String, Alert> = HashMap::new();
    let mut last_resend = Instant::now();
    loop {
        let changed = {
            let mut pending = shared.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            while pending.is_empty() && !shared.stop.load(Ordering::Acquire) && last_resend.elapsed() < RESEND {
                let wait = RESEND.saturating_sub(last_resend.elapsed());
                pending = shared.wake.wait_timeout(pending, wait).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            }
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            drop(pending);
            // A burst of updates becomes one request.
            std::thread::sleep(LINGER);
            std::mem::take(&mut *shared.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
        };
        let mut batch: Vec<Alert> = Vec::new();
        for (key, alert) in changed {
            // New labels are a new alert to Alertmanager: the old one ends now.
            if let Some(old) = firing.get(&key)
                && old.labels != alert.labels
            {
                batch.push(Alert { ends_at: Some(rfc3339(routewatch_engine::now_ms())), ..old.clone() });
            }
            if alert.resolved() {
                firing.remove(&key);
            } else {
                firing.insert(key, alert.clone());
            }
            batch.push(alert);
        }
        if last_resend.elapsed() >= RESEND {
            last_resend = Instant::now();
            let sending: std::collections::HashSet<String> = batch.iter().map(Alert::key).collect();
            batch.extend(firing.iter().filter(|(k, _)| !sending.contains(*k)).map(|(_, a)| a.clone()));
        }
        for chunk in batch.chunks(BATCH) {
            let mut failed = false;
            for url in urls {
                match send(&agent, url, chunk) {
                    Ok(()) => {
                        counters.sent.inc_by(chunk.len() as u64);
                    }
                    Err(err) => {
                        failed = true;
                        counters.failures.inc();
                        tracing::warn!(alertmanager = %url, alerts = chunk.len(), "alerts not sent, kept for the next round: {err}");
                    }
                }
            }
            if failed {
                // Tried again with the next change or resend, unless a newer state is waiting. Open
                // alerts are resent anyway; this keeps resolutions from being lost.
                let mut pending = shared.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for alert in chunk {
                    let latest = firing.get(&alert.key()).is_none_or(|f| f.labels == alert.labels);
                    if latest && pending.len() < MAX_PENDING {
                        pending.entry(alert.key()).or_insert_with(|| alert.clone());
                    }
                }
            }
        }
    }
}

/// One request, with retries: `POST {url}/api/v2/alerts`.
fn send(agent: &ureq::Agent, url: &str, alerts: &[Alert]) -> Result<(), String> {
    let endpoint = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
    let mut backoff = Duration::from_millis(500);
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match agent.post(&endpoint).send_json(alerts) {
            Ok(_) => return Ok(()),
            // A 4xx will not get better: Alertmanager refused the alerts themselves.
            Err(ureq::Error::StatusCode(code)) if (400..500).contains(&code) => {
                return Err(format!("refused with status {code}"));
            }
            Err(err) => last = err.to_string(),
        }
        if attempt < ATTEMPTS {
            std::thread::sleep(backoff);
            backoff *= 2;
        }
    }
    Err(format!("{ATTEMPTS} attempts: {last}"))
}
