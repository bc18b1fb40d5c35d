//! The incident routes of the REST API: listing with filters (router and site incidents), one
//! incident, acknowledgement and feedback, and every refusal (bad filters, unknown ids, oversized or malformed bodies,
//! missing token). Feedback lands in the feedback topic of a real broker (Apache Kafka,
//! `ROUTEWATCH_KAFKA_HOME`), read back as the training script reads it.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::TEST_TOKEN;
use routewatch_host::api::incidents::{Feedback, IncidentTopics, MAX_BODY_BYTES, Verdict};
use routewatch_host::api::{ApiState, Server};
use routewatch_host::feed::AnomalyFeed;
use routewatch_host::incidents::{AckFollower, AckRecord, IncidentBook};
use routewatch_host::metrics::Metrics;
use routewatch_host::registry::{QuarantinePolicy, Registry};
use routewatch_incidents::{Cause, RouterConfig, RouterStage, SiteConfig, SiteStage};
use routewatch_telemetry::{AnomalyEvent, AnomalyKind};
use routewatch_testkit::Broker;
use serde_json::{Value, json};

const FEEDBACK_TOPIC: &str = "router-incident-feedback";
const ACKS_TOPIC: &str = "router-incident-acks";

/// The topics of a real broker, and a producer for them.
fn topics(broker: &Broker) -> IncidentTopics {
    broker.create_topics(&[(FEEDBACK_TOPIC, 1), (ACKS_TOPIC, 1)]);
    let producer = routewatch_host::broker::producer(&broker_config(broker)).unwrap();
    IncidentTopics { producer, feedback: FEEDBACK_TOPIC.into(), acks: ACKS_TOPIC.into() }
}

fn broker_config(broker: &Broker) -> routewatch_host::HostConfig {
    routewatch_host::HostConfig {
        brokers: broker.bootstrap(),
        acks_topic: ACKS_TOPIC.into(),
        ..routewatch_host::HostConfig::default()
    }
}

struct Host {
    base: String,
    book: Arc<IncidentBook>,
    _server: Server,
}

fn event(router: &str, site: &str, minute: i64) -> AnomalyEvent {
    AnomalyEvent {
        router: router.into(),
        site: Some(site.into()),
        role: None,
        metric: "temp_c".into(),
        plugin: "arima".into(),
        plugin_version: "1".into(),
        ts: minute * 60_000,
        detected_at: None,
        value: 80.0,
        expected: 45.0,
        lower: None,
        upper: None,
        score: 0.95,
        kind: AnomalyKind::LevelShift,
        reason: String::new(),
    }
}

/// Three incidents: r1 (fra1, classified hardware-fan, open), r2 (fra1, unknown, resolved:
/// its resolution carries the verdict), r3 (ams2, unclassified, open).
fn book() -> Arc<IncidentBook> {
    let book = Arc::new(IncidentBook::default());
    fill(&book);
    book
}

/// Publishes the incidents of [`book`] into `book`.
fn fill(book: &IncidentBook) {
    let mut stage = RouterStage::new(RouterConfig::default()).unwrap();
    let mut updates = stage.take(&[event("r2", "fra1", 0)], 0);
    let r2 = updates[0].incident.id.clone();
    stage.set_causes(&r2, "unknown", vec![Cause { cause: "hardware-fan".into(), probability: 0.3 }]);
    updates.extend(stage.take(&[event("r1", "fra1", 30), event("r3", "ams2", 31)], 31 * 60_000));
    let r1 = stage.open().find(|i| i.router == "r1").unwrap().id.clone();
    let mut classified =
        stage.set_causes(&r1, "hardware-fan", vec![Cause { cause: "hardware-fan".into(), probability: 0.9 }]).unwrap();
    classified.features = stage.features_of("r1", &r1).unwrap();
    updates.push(classified);
    book.publish(2, &updates);
    // And a site incident of fra1 (three other routers at once), found by site partition 5.
    let mut others = RouterStage::new(RouterConfig::default()).unwrap();
    let together =
        others.take(&[event("s1", "fra1", 40), event("s2", "fra1", 41), event("s3", "fra1", 41)], 41 * 60_000);
    let mut sites = SiteStage::new(SiteConfig::default()).unwrap();
    let site_updates: Vec<_> = together.iter().flat_map(|u| sites.observe(u)).collect();
    assert_eq!(site_updates.len(), 1, "{site_updates:?}");
    book.publish_sites(5, &site_updates);
}

fn host(topics: Option<IncidentTopics>) -> Host {
    let book = book();
    let metrics = Arc::new(Metrics::default());
    let registry =
        Arc::new(Registry::new(common::runtime(), metrics.clone(), QuarantinePolicy::default(), None).unwrap());
    let state = ApiState::new(
        metrics,
        Arc::new(AnomalyFeed::default()),
        Arc::new(AtomicBool::new(true)),
        registry,
        TEST_TOKEN.into(),
        1 << 20,
    )
    .with_incidents(book.clone(), topics);
    let server = Server::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
    Host { base: format!("http://{}", server.addr()), book, _server: server }
}

/// One request; the status and the body as JSON.
fn call(host: &Host, method: &str, path: &str, token: bool, body: Option<&str>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{}{path}", host.base);
    let response = match method {
        "GET" => agent.get(&url).call(),
        _ => {
            let mut request = agent.post(&url).header("Content-Type", "application/json");
            if token {
                request = request.header("Authorization", format!("Bearer {TEST_TOKEN}"));
            }
            match body {
                Some(b) => request.send(b),
                None => request.send_empty(),
            }
        }
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

#[track_caller]
fn refused(answer: (u16, Value), status: u16, code: &str) -> String {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"], code, "{}", answer.1);
    answer.1["reason"].as_str().unwrap().to_owned()
}

fn routers(answer: &(u16, Value)) -> Vec<String> {
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1.as_array().unwrap().iter().map(|i| i["router"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn incidents_are_listed_and_filtered_by_state_site_and_cause() {
    let host = host(None);
    assert_eq!(routers(&call(&host, "GET", "/api/v1/incidents", false, None)), ["r3", "r1", "r2"], "newest first");
    assert_eq!(routers(&call(&host, "GET", "/api/v1/incidents?state=open", false, None)), ["r3", "r1"]);
    assert_eq!(routers(&call(&host, "GET", "/api/v1/incidents?state=resolved", false, None)), ["r2"]);
    assert_eq!(routers(&call(&host, "GET", "/api/v1/incidents?site=fra1", false, None)), ["r1", "r2"]);
    assert_eq!(routers(&call(&host, "GET", "/api/v1/incidents?cause=hardware-fan", false, None)), ["r1"]);
    assert_eq!(routers(&call(&host, "GET", "/api/v1/incidents?cause=unknown&site=fra1", false, None)), ["r2"]);
    assert_eq!(routers(&call(&host, "GET", "/api/v1/incidents?limit=1", false, None)), ["r3"]);
    let listed = call(&host, "GET", "/api/v1/incidents?router=r1", false, None).1;
    let one = &listed[0];
    assert_eq!((one["partition"].as_i64(), one["causes"][0]["cause"].as_str()), (Some(2), Some("hardware-fan")));
    assert!(one.get("features").is_none(), "features are not listed");
    let id = one["id"].as_str().unwrap();
    assert_eq!(call(&host, "GET", &format!("/api/v1/incidents/{id}"), false, None).1["router"], "r1");

    let reason = refused(call(&host, "GET", "/api/v1/incidents?state=closed", false, None), 400, "bad_request");
    assert!(reason.contains("open or resolved"), "{reason}");
    refused(call(&host, "GET", "/api/v1/incidents?colour=red", false, None), 400, "bad_request");
    refused(call(&host, "GET", "/api/v1/incidents?limit=-1", false, None), 400, "bad_request");
    let long = "s".repeat(200);
    refused(call(&host, "GET", &format!("/api/v1/incidents?site={long}"), false, None), 400, "bad_request");
    refused(call(&host, "GET", "/api/v1/incidents/inc-nope-1", false, None), 404, "not_found");
}

#[test]
fn site_incidents_are_listed_and_filtered_by_state_and_site() {
    let host = host(None);
    let keys = |path: &str| -> Vec<String> {
        let (status, body) = call(&host, "GET", path, false, None);
        assert_eq!(status, 200, "{body}");
        body.as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(keys("/api/v1/site-incidents"), ["fra1"]);
    assert_eq!(keys("/api/v1/site-incidents?state=open&site=fra1&limit=5"), ["fra1"]);
    assert!(keys("/api/v1/site-incidents?state=resolved").is_empty());
    assert!(keys("/api/v1/site-incidents?site=ams2").is_empty());
    let listed = call(&host, "GET", "/api/v1/site-incidents", false, None).1;
    assert_eq!(listed[0]["routers"], json!(["s1", "s2", "s3"]));
    assert_eq!((listed[0]["partition"].as_i64(), listed[0]["open"].as_i64()), (Some(5), Some(3)));
    assert_eq!(listed[0]["state"], "open");

    let reason = refused(call(&host, "GET", "/api/v1/site-incidents?state=closed", false, None), 400, "bad_request");
    assert!(reason.contains("open or resolved"), "{reason}");
    refused(call(&host, "GET", "/api/v1/site-incidents?cause=upstream", false, None), 400, "bad_request");
    refused(call(&host, "GET", "/api/v1/site-incidents?limit=x", false, None), 400, "bad_request");
    let long = "s".repeat(200);
    refused(call(&host, "GET", &format!("/api/v1/site-incidents?site={long}"), false, None), 400, "bad_request");
}

#[test]
fn acknowledging_needs_the_token_a_known_incident_and_a_small_well_formed_body() {
    let host = host(None);
    let listed = call(&host, "GET", "/api/v1/incidents?router=r1", false, None).1;
    let ack = format!("/api/v1/incidents/{}/ack", listed[0]["id"].as_str().unwrap());
    refused(call(&host, "POST", &ack, false, None), 401, "unauthorized");
    let (status, entry) = call(&host, "POST", &ack, true, Some(r#"{"by": "ana"}"#));
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["acknowledged"]["by"], "ana");
    assert!(entry["acknowledged"]["at"].as_i64().unwrap() > 0);
    let again = call(&host, "GET", "/api/v1/incidents?router=r1", false, None).1;
    assert_eq!(again[0]["acknowledged"]["by"], "ana", "the acknowledgement is kept");
    assert_eq!(call(&host, "POST", &ack, true, None).0, 200, "an empty body is fine");

    refused(call(&host, "POST", "/api/v1/incidents/inc-nope-1/ack", true, None), 404, "not_found");
    refused(call(&host, "POST", &ack, true, Some("{not json")), 400, "bad_request");
    refused(call(&host, "POST", &ack, true, Some(r#"{"by": "ana", "extra": 1}"#)), 400, "bad_request");
    refused(call(&host, "POST", &ack, true, Some(r#"{"by": "a\u0007b"}"#)), 400, "bad_request");
    let big = format!(r#"{{"by": "{}"}}"#, "x".repeat(MAX_BODY_BYTES));
    refused(call(&host, "POST", &ack, true, Some(&big)), 413, "too_large");
}

#[test]
fn an_acknowledgement_is_kept_in_the_acks_topic_and_follows_its_incident_to_other_books() {
    let broker = Broker::start();
    let host = host(Some(topics(&broker)));
    let r1 = host.book.list(10, |e| e.incident.router == "r1")[0].incident.id.clone();
    let (status, body) = call(&host, "POST", &format!("/api/v1/incidents/{r1}/ack"), true, Some(r#"{"by": "ana"}"#));
    assert_eq!(status, 200, "{body}");
    let stored = broker.read_all(ACKS_TOPIC, false);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].key.as_deref(), Some(r1.as_bytes()), "keyed by incident id");
    let record: AckRecord = serde_json::from_slice(&stored[0].payload).unwrap();
    assert_eq!((record.incident.as_str(), record.by.as_deref()), (r1.as_str(), Some("ana")));

    // A book that holds the incident (another host's, after a rebalance) takes it...
    let holding = book();
    let _follows = AckFollower::start(&broker_config(&broker), holding.clone()).unwrap();
    let acked = |book: &IncidentBook| book.get(&r1).and_then(|e| e.acknowledged).and_then(|a| a.by);
    wait_for("the holding book to take the acknowledgement", || acked(&holding).as_deref() == Some("ana"));
    // ... and one that gets the incident only later (a restarted host) has it acknowledged then.
    let later = Arc::new(IncidentBook::default());
    let _follows_too = AckFollower::start(&broker_config(&broker), later.clone()).unwrap();
    wait_for("the empty book to remember the acknowledgement", || later.remembered_acks() == 1);
    assert!(later.get(&r1).is_none());
    fill(&later);
    assert_eq!(acked(&later).as_deref(), Some("ana"), "it arrives acknowledged");
    assert!(later.list(10, |e| e.incident.router != "r1").iter().all(|e| e.acknowledged.is_none()));
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn feedback_is_checked_then_kept_in_the_feedback_topic_with_its_features() {
    let broker = Broker::start();
    let host = host(Some(topics(&broker)));
    let listed = call(&host, "GET", "/api/v1/incidents", false, None).1;
    let id_of = |router: &str| {
        listed.as_array().unwrap().iter().find(|i| i["router"] == router).unwrap()["id"].as_str().unwrap().to_owned()
    };
    let (r1, r2) = (id_of("r1"), id_of("r2"));
    let path = |id: &str| format!("/api/v1/incidents/{id}/feedback");

    refused(call(&host, "POST", &path(&r1), false, Some(r#"{"verdict": "confirmed"}"#)), 401, "unauthorized");
    refused(call(&host, "POST", &path("inc-nope-1"), true, Some(r#"{"verdict": "confirmed"}"#)), 404, "not_found");
    refused(call(&host, "POST", &path(&r1), true, Some(r#"{"verdict": "maybe"}"#)), 400, "bad_request");
    refused(call(&host, "POST", &path(&r1), true, None), 400, "bad_request");
    let reason = refused(
        call(&host, "POST", &path(&r1), true, Some(r#"{"verdict": "false-positive", "cause": "hardware-fan"}"#)),
        400,
        "bad_request",
    );
    assert!(reason.contains("no cause"), "{reason}");
    let long_cause = format!(r#"{{"verdict": "confirmed", "cause": "{}"}}"#, "c".repeat(200));
    refused(call(&host, "POST", &path(&r1), true, Some(&long_cause)), 400, "bad_request");
    let big = format!(r#"{{"verdict": "confirmed", "note": "{}"}}"#, "n".repeat(MAX_BODY_BYTES));
    refused(call(&host, "POST", &path(&r1), true, Some(&big)), 413, "too_large");

    let (status, stored) = call(&host, "POST", &path(&r1), true, Some(r#"{"verdict": "confirmed", "by": "ana"}"#));
    assert_eq!(status, 201, "{stored}");
    let (status, _) = call(
        &host,
        "POST",
        &path(&r2),
        true,
        Some(r#"{"verdict": "confirmed", "cause": "hardware-psu", "note": "the PSU log says so"}"#),
    );
    assert_eq!(status, 201);
    assert_eq!(call(&host, "POST", &path(&r2), true, Some(r#"{"verdict": "false-positive"}"#)).0, 201);

    let records = broker.consume(FEEDBACK_TOPIC, 3, Duration::from_secs(60));
    let feedback: Vec<Feedback> = records.iter().map(|m| serde_json::from_slice(&m.payload).unwrap()).collect();
    assert_eq!(records[0].key.as_deref(), Some(r1.as_bytes()), "keyed by incident id");
    assert_eq!((feedback[0].verdict, feedback[0].cause.as_deref()), (Verdict::Confirmed, Some("hardware-fan")));
    assert_eq!(feedback[0].by.as_deref(), Some("ana"));
    assert_eq!(feedback[0].features.len(), routewatch_incidents::FEATURE_COUNT, "what the classifier saw");
    assert_eq!(feedback[1].cause.as_deref(), Some("hardware-psu"), "the operator's cause wins");
    assert_eq!(feedback[1].predicted[0].cause, "hardware-fan");
    assert_eq!((feedback[2].verdict, feedback[2].cause.as_deref()), (Verdict::FalsePositive, None));
    assert_eq!(json!(feedback[2].verdict), json!("false-positive"));
}

#[test]
fn feedback_without_a_topic_is_refused_clearly() {
    let host = host(None);
    let listed = call(&host, "GET", "/api/v1/incidents?router=r1", false, None).1;
    let path = format!("/api/v1/incidents/{}/feedback", listed[0]["id"].as_str().unwrap());
    refused(call(&host, "POST", &path, true, Some(r#"{"verdict": "confirmed"}"#)), 503, "no_feedback_topic");
}
