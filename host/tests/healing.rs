//! Self-healing end to end, on a real broker (Apache Kafka, `ROUTEWATCH_KAFKA_HOME`): records
//! through ARIMA become incidents, the forest classifier names their causes, and policies act
//! on them through the REST API and over HTTP to an automation endpoint (an axum server here,
//! as the simulator's or a real one would be).
//!
//! * Approve mode: every incident's action waits as `proposed`; `POST .../approve` sends it;
//!   the endpoint receives it; the incident resolving settles it as having helped.
//! * An unreachable target: the action ends `failed` after its retries, the host runs on.
//! * Policies over REST: a bad cause or action is refused with its reason; the dry-run switch.
//! * Every record of every action is on the audit topic, and counted in Prometheus.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::post;
use common::fleet::{T0, produce, producer, topics};
use common::{TEST_TOKEN, component, metric_samples};
use routewatch_host::Host;
use routewatch_remediation::{ActionRecord, HealingConfig, Mode, Policy, Status, Verdict};
use routewatch_telemetry::Action;
use routewatch_testkit::Broker;
use serde_json::{Value, json};

const ROUTERS: usize = 8;
const STEPS: i64 = 330;
/// Every router's CPU jumps for three samples here: an incident each.
const WAVE: i64 = 200;

fn records() -> Vec<(String, Vec<u8>)> {
    common::fleet::cpu_curves(ROUTERS, STEPS, 7, |step, _| if (WAVE..WAVE + 3).contains(&step) { 0.45 } else { 0.0 })
}

/// Sends the records a step every 40 ms, as routers would (an incident must be open when its
/// cause becomes final for a policy to act on it). With `hold`, stops after the wave's
/// feature window until the flag is set, so that its incidents stay open for the test.
fn send(broker: &Broker, hold: Option<Arc<AtomicBool>>) -> std::thread::JoinHandle<()> {
    let producer = producer(broker);
    let all = records();
    std::thread::spawn(move || {
        for (step, chunk) in all.chunks(ROUTERS).enumerate() {
            if step as i64 == WAVE + 12
                && let Some(hold) = &hold
            {
                while !hold.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            produce(&producer, chunk);
            std::thread::sleep(Duration::from_millis(40));
        }
    })
}

/// What an endpoint received: the router of the path, and the body.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// An automation endpoint that takes every action and remembers it.
fn endpoint() -> (String, Received) {
    let seen: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/routers/{id}/actions",
            post(|State(seen): State<Received>, Path(id): Path<String>, Json(body): Json<Value>| async move {
                seen.lock().unwrap().push((id, body));
                (axum::http::StatusCode::ACCEPTED, "{\"accepted\":true}")
            }),
        )
        .with_state(seen.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app).await.unwrap();
        })
    });
    (url, seen)
}

/// The causes the forest classifier can name.
fn causes() -> Vec<String> {
    let runtime = common::runtime();
    let forest = routewatch_host::runtime::classifier::load_file(&runtime, &component("routewatch_classifier_forest"))
        .expect("the forest classifier loads");
    forest.info().causes.clone()
}

/// One approve-mode policy per cause the classifier names (whatever it makes of a CPU wave,
/// an action is proposed), sent to `target`.
fn policies(target: &str) -> Vec<Policy> {
    causes()
        .into_iter()
        .map(|cause| Policy {
            name: format!("heal-{cause}"),
            cause,
            min_confidence: 0.0,
            action: Action::RestartProcess,
            mode: Mode::Approve,
            target: target.into(),
            timeout_secs: 2.0,
            retries: 1,
        })
        .collect()
}

struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(host: &Host) -> Api {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Api { base: format!("http://{}", host.http_addr()), agent }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let mut response = self.agent.get(format!("{}{path}", self.base)).call().unwrap();
        (response.status().as_u16(), response.body_mut().read_json().unwrap_or(Value::Null))
    }

    fn send(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {TEST_TOKEN}");
        let mut response = match method {
            "POST" => self.agent.post(&url).header("authorization", &auth).send(body.unwrap_or("")),
            "PUT" => self.agent.put(&url).header("authorization", &auth).send(body.unwrap_or("")),
            "DELETE" => self.agent.delete(&url).header("authorization", &auth).call(),
            _ => unreachable!(),
        }
        .unwrap();
        (response.status().as_u16(), response.body_mut().read_json().unwrap_or(Value::Null))
    }

    /// Waits for `condition`; on a timeout, fails with what the host has: its incidents and actions.
    fn wait(&self, what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        while !condition() {
            if std::time::Instant::now() > deadline {
                let incidents = self.get("/api/v1/incidents?limit=20").1;
                let actions = self.get("/api/v1/actions?limit=20").1;
                let text = self
                    .agent
                    .get(format!("{}/metrics", self.base))
                    .call()
                    .unwrap()
                    .body_mut()
                    .read_to_string()
                    .unwrap();
                let metrics: Vec<&str> =
                    text.lines().filter(|l| l.contains("classifier") || l.contains("action")).collect();
                panic!("timed out waiting: {what}\nincidents: {incidents}\nactions: {actions}\nmetrics: {metrics:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn actions(&self, query: &str) -> Vec<ActionRecord> {
        let (status, body) = self.get(&format!("/api/v1/actions?limit=1000&{query}"));
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).unwrap()
    }
}

fn host(broker: &Broker, group: &str, healing: HealingConfig) -> Host {
    let mut config = common::fleet::config(broker, group, "routewatch_arima", None);
    config.classifier = Some(component("routewatch_classifier_forest"));
    // Every incident gets the forest's most likely cause, however unsure.
    config.classifier_config = json!({"min_confidence": 0.0});
    config.incident_config.interval_ms = 1000;
    config.incident_config.quiet_samples = 30;
    config.anomalies_topic = format!("anomalies-{group}");
    config.incidents_topic = format!("incidents-{group}");
    config.actions_topic = format!("actions-{group}");
    config.healing = healing;
    Host::start(config).expect("the host starts")
}

#[test]
fn approve_mode_end_to_end_from_records_to_the_endpoint_and_back() {
    let broker = Broker::start();
    topics(&broker);
    let (target, received) = endpoint();
    let healing = HealingConfig {
        site_actions_per_hour: 1000,
        blast_radius: 1.0,
        router_cooldown_secs: 0,
        verify_secs: 3600,
        policies: policies(&target),
        ..HealingConfig::default()
    };
    let host = host(&broker, "approve", healing);
    let api = Api::new(&host);
    let hold = Arc::new(AtomicBool::new(false));
    let sender = send(&broker, Some(hold.clone()));

    // Each router's wave incident proposes an action, and waits.
    let wave = |a: &ActionRecord| {
        let opened: i64 = a.incident.rsplit('-').next().and_then(|t| t.parse().ok()).unwrap_or(0);
        (T0 + WAVE * 1000..T0 + (WAVE + 3) * 1000).contains(&opened)
    };
    api.wait("an action proposed for every router's wave incident", Duration::from_secs(60), || {
        api.actions("status=proposed")
            .iter()
            .filter(|a| wave(a))
            .map(|a| a.router.clone())
            .collect::<HashSet<_>>()
            .len()
            == ROUTERS
    });
    assert!(received.lock().unwrap().is_empty(), "approve mode sends nothing before approval");
    let proposed: Vec<ActionRecord> = api.actions("status=proposed").into_iter().filter(|a| wave(a)).collect();
    let first = &proposed[0];
    assert_eq!(first.action, Action::RestartProcess);
    // The incident shows its action.
    let (status, incident) = api.get(&format!("/api/v1/incidents/{}", first.incident));
    assert_eq!(status, 200);
    assert_eq!(incident["action"]["status"], "proposed", "{incident}");

    // Approval needs the token, names a real incident, and runs once.
    let path = format!("/api/v1/incidents/{}/approve", first.incident);
    let anonymous = api.agent.post(format!("{}{path}", api.base)).send("").unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    assert_eq!(api.send("POST", "/api/v1/incidents/inc-nope-1/approve", None).0, 404);
    let (status, approved) = api.send("POST", &path, None);
    assert_eq!(status, 200, "{approved}");
    api.wait("the endpoint to take the action", Duration::from_secs(30), || !received.lock().unwrap().is_empty());
    let (router_seen, body) = received.lock().unwrap()[0].clone();
    assert_eq!(router_seen, first.router);
    assert_eq!(body["action"], "restart-process");
    assert_eq!(body["reason"], format!("incident {} (action {})", first.incident, first.id));
    assert_eq!(body["requested_by"], format!("routewatch:{}", first.policy));
    api.wait("the action to be executed", Duration::from_secs(30), || {
        api.actions(&format!("incident={}", first.incident))[0].status == Status::Executed
    });
    assert_eq!(api.send("POST", &path, None).0, 409, "an executed action is not approved twice");
    hold.store(true, Ordering::Release);
    sender.join().unwrap();

    // The wave passes, the incident resolves after its quiet period: the action helped.
    api.wait("the incident to resolve and settle its action", Duration::from_secs(120), || {
        api.actions(&format!("incident={}", first.incident))[0].verdict == Some(Verdict::Resolved)
    });
    // The other proposals were never approved: withdrawn with their incidents.
    api.wait("the other wave proposals withdrawn with their incidents", Duration::from_secs(60), || {
        let withdrawn: HashSet<String> = api.actions("status=withdrawn").into_iter().map(|a| a.id).collect();
        proposed[1..].iter().all(|a| withdrawn.contains(&a.id))
    });

    // Every change is on the audit topic, keyed by action id, and counted.
    let audit: Vec<ActionRecord> = broker
        .read_all("actions-approve", true)
        .iter()
        .map(|m| {
            let record: ActionRecord = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(m.key.as_deref(), Some(record.id.as_bytes()));
            record
        })
        .collect();
    let trail: Vec<Status> = audit.iter().filter(|r| r.id == first.id).map(|r| r.status).collect();
    assert_eq!(trail, [Status::Proposed, Status::Executing, Status::Executed, Status::Executed], "{audit:?}");
    let exposition = host.metrics().encode();
    let executed =
        metric_samples(&exposition, "routewatch_actions_total", &[("policy", &first.policy), ("outcome", "executed")]);
    assert_eq!(executed.iter().sum::<f64>(), 2.0, "executed, then settled");
    host.shutdown().unwrap();
}

#[test]
fn an_unreachable_target_is_an_outcome_and_bad_policies_are_refused_with_their_reason() {
    let broker = Broker::start();
    topics(&broker);
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = format!("http://127.0.0.1:{port}");
    let mut policies = policies(&target);
    for policy in &mut policies {
        policy.mode = Mode::Auto;
    }
    let healing = HealingConfig {
        site_actions_per_hour: 1000,
        blast_radius: 1.0,
        router_cooldown_secs: 0,
        policies,
        ..HealingConfig::default()
    };
    let host = host(&broker, "unreachable", healing);
    let api = Api::new(&host);

    // Policies over REST are checked as the file's are.
    let (status, body) = api.send(
        "PUT",
        "/api/v1/policies/x",
        Some(r#"{"cause":"gremlins","action":"restart-process","target":"http://h"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body["reason"].as_str().unwrap().contains("unknown cause \"gremlins\""), "{body}");
    let (status, body) =
        api.send("PUT", "/api/v1/policies/x", Some(r#"{"cause":"memory-leak","action":"reboot","target":"http://h"}"#));
    assert_eq!(status, 400, "{body}");
    assert!(body["reason"].as_str().unwrap().contains("unknown variant `reboot`"), "{body}");
    // Nor does a classifier take over that cannot name the causes the policies act on.
    let stub = std::fs::read(component("routewatch_test_classifier")).unwrap();
    let mut response = api
        .agent
        .put(format!("{}/api/v1/classifier", api.base))
        .header("authorization", &format!("Bearer {TEST_TOKEN}"))
        .send(&stub[..])
        .unwrap();
    let body: Value = response.body_mut().read_json().unwrap();
    assert_eq!(response.status().as_u16(), 422, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("self-healing policies act on causes it does not name"),
        "{body}"
    );
    assert_eq!(host.registry().classifier().unwrap().name, "forest");
    let oversized = "x".repeat(routewatch_host::api::healing::MAX_BODY_BYTES + 1);
    let (status, _) = api.send("PUT", "/api/v1/policies/x", Some(&oversized));
    assert_eq!(status, 413);
    assert_eq!(api.send("DELETE", "/api/v1/policies/nope", None).0, 404);
    let (status, guard) = api.send("PUT", "/api/v1/healing/dry-run", Some(r#"{"dry_run":true}"#));
    assert_eq!((status, guard["dry_run"].as_bool()), (200, Some(true)));
    api.send("PUT", "/api/v1/healing/dry-run", Some(r#"{"dry_run":false}"#));

    send(&broker, None).join().unwrap();
    api.wait("every router's action to fail", Duration::from_secs(60), || {
        api.actions("status=failed").iter().map(|a| a.router.clone()).collect::<HashSet<_>>().len() == ROUTERS
    });
    let failed = &api.actions("status=failed")[0];
    assert_eq!(failed.attempts, 2, "the first attempt and one retry");
    assert!(failed.detail.contains(&format!("127.0.0.1:{port}")), "{}", failed.detail);
    // The host runs on: its API answers and it is ready.
    assert_eq!(api.get("/api/v1/policies").0, 200);
    assert!(!host.is_finished());
    host.shutdown().unwrap();
}
