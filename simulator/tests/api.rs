//! Every REST endpoint, including bad input: each error is JSON with a reason.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use routewatch_simulator::engine::{Engine, RuntimeConfig};
use routewatch_simulator::metrics::SimMetrics;
use routewatch_simulator::{api, app_state, lock};
use routewatch_telemetry::{FaultEvent, Record};
use serde_json::{Value, json};
use tower::ServiceExt;

const START: i64 = 1_736_121_600_000;

struct Sim {
    engine: Arc<Mutex<Engine>>,
    app: Router,
}

/// A fleet of `routers` with one sample taken, and its API.
fn sim(routers: u32, router_gauges_max: u32) -> Sim {
    let engine =
        Engine::new(1, RuntimeConfig { routers, interval_ms: 1000, fault_rate: 0.0, ..Default::default() }, START)
            .unwrap();
    let engine = Arc::new(Mutex::new(engine));
    lock(&engine).tick(START);
    let state = app_state(engine.clone(), &SimMetrics::default(), router_gauges_max, "real-time", "none");
    Sim { app: api::router(state), engine }
}

impl Sim {
    fn tick(&self) {
        let mut e = lock(&self.engine);
        let next = e.next_ts();
        e.tick(next);
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, bytes) = self.raw(method, uri, body.map(|b| b.to_string())).await;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{uri}: body is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, value)
    }

    async fn raw(&self, method: Method, uri: &str, body: Option<String>) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, None).await
    }

    /// Asserts a JSON error with the status, code, and a reason mentioning `needle`.
    async fn expect_error(&self, method: Method, uri: &str, body: Option<Value>, status: StatusCode, needle: &str) {
        let (got, v) = self.call(method.clone(), uri, body.clone()).await;
        assert_eq!(got, status, "{method} {uri} {body:?}: {v}");
        let reason = v["reason"].as_str().unwrap_or_else(|| panic!("{method} {uri}: no reason in {v}"));
        assert!(v["error"].is_string(), "{v}");
        assert!(reason.contains(needle), "{method} {uri}: reason {reason:?} lacks {needle:?}");
    }
}

#[tokio::test]
async fn simulate_returns_the_whole_fleet() {
    let s = sim(1000, 2000);
    let (status, v) = s.get("/routers/simulate").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["routers"], 1000);
    assert_eq!(v["ts"], START);
    let records: Vec<Record> = serde_json::from_value(v["records"].clone()).unwrap();
    assert_eq!(records.len(), 1000);
    for r in &records {
        r.validate().unwrap();
        assert_eq!(r.ts, START);
    }
    assert_eq!(records[42].router, "rtr-000042");
}

#[tokio::test]
async fn routers_list_filters_and_pages() {
    let s = sim(300, 2000);
    let (status, v) = s.get("/routers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["total"], 300);
    assert_eq!(v["routers"].as_array().unwrap().len(), 300);

    let (_, v) = s.get("/routers?role=core").await;
    let core = v["routers"].as_array().unwrap();
    assert!(!core.is_empty());
    assert!(core.iter().all(|r| r["role"] == "core"));
    assert_eq!(v["total"], core.len());

    let (_, v) = s.get("/routers?offset=10&limit=5").await;
    let ids: Vec<_> = v["routers"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["rtr-000010", "rtr-000011", "rtr-000012", "rtr-000013", "rtr-000014"]);

    let site = v["routers"][0]["site"].as_str().unwrap().to_owned();
    let (_, v) = s.get(&format!("/routers?site={site}")).await;
    assert!(v["routers"].as_array().unwrap().iter().all(|r| r["site"] == site.as_str()));

    s.expect_error(Method::GET, "/routers?role=spine", None, StatusCode::BAD_REQUEST, "unknown variant").await;
    s.expect_error(Method::GET, "/routers?limit=0", None, StatusCode::BAD_REQUEST, "limit").await;
    s.expect_error(Method::GET, "/routers?limit=-3", None, StatusCode::BAD_REQUEST, "limit").await;
    s.expect_error(Method::GET, "/routers?colour=red", None, StatusCode::BAD_REQUEST, "unknown field").await;
}

#[tokio::test]
async fn router_detail_and_unknown_routers() {
    let s = sim(50, 2000);
    let (status, v) = s.get("/routers/rtr-000007").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["router"]["id"], "rtr-000007");
    let latest: Record = serde_json::from_value(v["latest"].clone()).unwrap();
    assert_eq!(latest.router, "rtr-000007");
    assert_eq!(v["active_faults"], json!([]));

    for bad in ["rtr-000050", "rtr-7", "nope", "rtr-0000007"] {
        s.expect_error(Method::GET, &format!("/routers/{bad}"), None, StatusCode::NOT_FOUND, bad).await;
    }
}

#[tokio::test]
async fn inject_list_get_and_clear_faults() {
    let s = sim(20, 2000);
    let body = json!({"kind": "cpu-runaway", "router": "rtr-000003", "duration_s": 600, "magnitude": 0.6});
    let (status, v) = s.call(Method::POST, "/faults", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let fault: FaultEvent = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(fault.router, "rtr-000003");
    assert_eq!(fault.start, START + 1000, "starts with the next sample");
    assert_eq!(fault.end, START + 1000 + 600_000);
    assert_eq!(fault.metrics, ["cpu_util", "temp_c"]);
    assert_eq!(v["active"], true);
    assert_eq!(v["source"], "api");

    // The next sample shows it; the router and the list know it.
    let before = lock(&s.engine).records()[3].metrics.cpu_util;
    s.tick();
    let after = lock(&s.engine).records()[3].metrics.cpu_util;
    assert!(after > before + 0.25, "cpu {before} -> {after}");
    let (_, r) = s.get("/routers/rtr-000003").await;
    assert_eq!(r["router"]["faults"], json!([fault.id]));
    assert_eq!(r["active_faults"][0]["id"], fault.id.as_str());

    let (_, list) = s.get("/faults").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["faults"][0]["id"], fault.id.as_str());
    let (_, list) = s.get("/faults?active=true&kind=cpu-runaway&router=rtr-000003").await;
    assert_eq!(list["total"], 1);
    let (_, list) = s.get("/faults?active=false").await;
    assert_eq!(list["total"], 0);
    let (status, one) = s.get(&format!("/faults/{}", fault.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["kind"], "cpu-runaway");

    // A fault without router, duration or magnitude gets a random router and the defaults.
    let (status, v) = s.call(Method::POST, "/faults", Some(json!({"kind": "memory-leak"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(v["router"].as_str().unwrap().starts_with("rtr-"));
    assert_eq!(v["magnitude"], 0.05);

    let (status, v) = s.call(Method::DELETE, &format!("/faults/{}", fault.id), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["active"], false);
    assert_eq!(v["end"], START + 2000, "ends before the next sample");
    s.expect_error(Method::DELETE, &format!("/faults/{}", fault.id), None, StatusCode::CONFLICT, "already ended").await;
    s.expect_error(Method::DELETE, "/faults/flt-999999", None, StatusCode::NOT_FOUND, "flt-999999").await;
    s.expect_error(Method::GET, "/faults/flt-999999", None, StatusCode::NOT_FOUND, "flt-999999").await;
    let (_, list) = s.get("/faults?active=false").await;
    assert_eq!(list["total"], 1);
}

#[tokio::test]
async fn a_site_fault_starts_on_every_router_of_the_site_and_bad_ones_are_refused() {
    let s = sim(200, 2000);
    let site = lock(&s.engine).profile("rtr-000007").unwrap().site;
    let members: Vec<String> = (0..200)
        .map(|i| format!("rtr-{i:06}"))
        .filter(|id| lock(&s.engine).profile(id).unwrap().site == site)
        .collect();
    assert!(members.len() >= 2, "a 200-router fleet has several routers at {site}");

    let body = json!({"kind": "packet-loss", "duration_s": 120});
    let (status, v) = s.call(Method::POST, &format!("/sites/{site}/faults"), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["site"], site);
    let faults: Vec<FaultEvent> = serde_json::from_value(v["faults"].clone()).unwrap();
    let mut routers: Vec<String> = faults.iter().map(|f| f.router.clone()).collect();
    routers.sort();
    assert_eq!(routers, members, "one fault on each router of the site, none elsewhere");
    assert!(faults.iter().all(|f| f.start == START + 1000 && f.end == START + 1000 + 120_000), "all start together");
    let (_, list) = s.get("/faults?active=true&kind=packet-loss").await;
    assert_eq!(list["total"], members.len(), "each one is in the ground truth");

    let post = |uri: &'static str, body: Value, status, needle: &'static str| {
        let s = &s;
        async move { s.expect_error(Method::POST, uri, Some(body), status, needle).await }
    };
    post("/sites/atlantis/faults", json!({"kind": "packet-loss"}), StatusCode::NOT_FOUND, "no routers").await;
    post("/sites/atlantis/faults", json!({"kind": "packet-loss"}), StatusCode::NOT_FOUND, site).await;
    let bad = json!({"kind": "packet-loss", "router": "rtr-000001"});
    post("/sites/fra1/faults", bad, StatusCode::BAD_REQUEST, "leave router out").await;
    post("/sites/fra1/faults", json!({"kind": "packet-loss", "magnitude": 3.0}), StatusCode::BAD_REQUEST, "magnitude")
        .await;
    post("/sites/fra1/faults", json!({"kind": "meteor-strike"}), StatusCode::BAD_REQUEST, "meteor-strike").await;
    let (_, list) = s.get("/faults?active=true").await;
    assert_eq!(list["total"], members.len(), "a refused request starts nothing");
}

#[tokio::test]
async fn bad_fault_requests_are_refused_with_reasons() {
    let s = sim(20, 2000);
    let post = |body: Value, status, needle: &'static str| {
        let s = &s;
        async move { s.expect_error(Method::POST, "/faults", Some(body), status, needle).await }
    };
    post(json!({"kind": "meteor-strike"}), StatusCode::BAD_REQUEST, "unknown variant `meteor-strike`").await;
    post(json!({"router": "rtr-000001"}), StatusCode::BAD_REQUEST, "missing field `kind`").await;
    post(json!({"kind": "packet-loss", "duration_s": -5}), StatusCode::BAD_REQUEST, "duration_s").await;
    post(json!({"kind": "packet-loss", "duration_s": 0}), StatusCode::BAD_REQUEST, "positive").await;
    post(json!({"kind": "packet-loss", "duration_s": "long"}), StatusCode::BAD_REQUEST, "duration_s").await;
    post(json!({"kind": "packet-loss", "magnitude": 3.0}), StatusCode::BAD_REQUEST, "magnitude").await;
    post(json!({"kind": "traffic-spike", "magnitude": 0.5}), StatusCode::BAD_REQUEST, "traffic multiplier").await;
    post(json!({"kind": "packet-loss", "router": "rtr-999999"}), StatusCode::NOT_FOUND, "rtr-999999").await;
    post(json!({"kind": "packet-loss", "colour": "red"}), StatusCode::BAD_REQUEST, "unknown field `colour`").await;
    // Not JSON at all, and JSON without the content type.
    let (status, v) = s.raw(Method::POST, "/faults", Some("{kind:".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&v).unwrap();
    assert!(v["reason"].as_str().unwrap().contains("JSON"), "{v}");
    let req = Request::post("/faults").body(Body::from(r#"{"kind":"packet-loss"}"#)).unwrap();
    let resp = s.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(v["reason"].as_str().unwrap().contains("Content-Type"), "{v}");
    s.expect_error(Method::GET, "/faults?kind=fire", None, StatusCode::BAD_REQUEST, "unknown variant").await;
    s.expect_error(Method::GET, "/faults?router=rtr-999999", None, StatusCode::NOT_FOUND, "rtr-999999").await;
    // Nothing was created by any of that.
    assert_eq!(lock(&s.engine).faults().all().count(), 0);
}

#[tokio::test]
async fn restart_and_clear_router_remediations() {
    let s = sim(20, 2000);
    for kind in ["memory-leak", "hardware-fan"] {
        let (status, _) = s.call(Method::POST, "/faults", Some(json!({"kind": kind, "router": "rtr-000005"}))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, v) = s.call(Method::DELETE, "/routers/rtr-000005/faults", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["cleared"].as_array().unwrap().len(), 2);
    assert_eq!(lock(&s.engine).faults().active().len(), 0);

    s.call(Method::POST, "/faults", Some(json!({"kind": "cpu-runaway", "router": "rtr-000005"}))).await;
    let (status, v) = s.call(Method::POST, "/routers/rtr-000005/restart", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["restarted_at"], START + 1000);
    assert_eq!(v["cleared"][0]["kind"], "cpu-runaway");
    s.tick();
    assert_eq!(lock(&s.engine).records()[5].metrics.bgp_up, 0.0, "BGP re-establishes after a restart");

    s.expect_error(Method::POST, "/routers/rtr-000099/restart", None, StatusCode::NOT_FOUND, "rtr-000099").await;
    s.expect_error(Method::DELETE, "/routers/rtr-000099/faults", None, StatusCode::NOT_FOUND, "rtr-000099").await;
}

#[tokio::test]
async fn runtime_config_changes_and_validation() {
    let s = sim(20, 2000);
    let (status, v) = s.get("/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v,
        json!({
            "routers": 20, "interval_ms": 1000, "fault_rate": 0.0, "profile": "clean", "consequences": true,
            "seed": 1, "mode": "real-time"
        })
    );
    // Consequences switch off and on over REST.
    let (status, v) = s.call(Method::PATCH, "/config", Some(json!({"consequences": false}))).await;
    assert_eq!((status, &v["consequences"]), (StatusCode::OK, &json!(false)));
    s.call(Method::PATCH, "/config", Some(json!({"consequences": true}))).await;

    let (status, v) =
        s.call(Method::PATCH, "/config", Some(json!({"routers": 30, "interval_ms": 5000, "fault_rate": 2.5}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["routers"], 30);
    s.tick();
    assert_eq!(lock(&s.engine).records().len(), 30);
    assert_eq!(lock(&s.engine).now(), START + 5000);

    // Shrinking ends the faults of the routers that go.
    s.call(Method::POST, "/faults", Some(json!({"kind": "packet-loss", "router": "rtr-000025"}))).await;
    s.call(Method::PATCH, "/config", Some(json!({"routers": 10}))).await;
    assert_eq!(lock(&s.engine).faults().active().len(), 0);
    s.expect_error(Method::GET, "/routers/rtr-000025", None, StatusCode::NOT_FOUND, "rtr-000025").await;

    let patch = |body: Value, needle: &'static str| {
        let s = &s;
        async move { s.expect_error(Method::PATCH, "/config", Some(body), StatusCode::BAD_REQUEST, needle).await }
    };
    patch(json!({"routers": 0}), "routers").await;
    patch(json!({"routers": -1}), "routers").await;
    patch(json!({"interval_ms": 1}), "interval_ms").await;
    patch(json!({"fault_rate": -0.1}), "fault_rate").await;
    patch(json!({"seed": 4}), "unknown field `seed`").await;
    patch(json!({"profile": "noisy"}), "unknown variant `noisy`").await;
    assert_eq!(lock(&s.engine).config().routers, 10, "a refused patch changes nothing");
}

#[tokio::test]
async fn the_profile_switches_over_rest_and_planned_changes_are_listed() {
    let s = sim(2000, 2000);
    let (status, v) =
        s.call(Method::PATCH, "/config", Some(json!({"profile": "realistic", "interval_ms": 60_000}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["profile"], "realistic");
    // Two hours of a 2,000-router fleet: config pushes alone come at 0.3 per router per day.
    for _ in 0..120 {
        s.tick();
    }
    assert!(lock(&s.engine).delivered().len() < 2000, "the realistic profile loses some samples");
    let (status, v) = s.get("/changes?kind=config-push&limit=5").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["total"].as_u64().unwrap() > 5, "{v}");
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 5);
    assert!(changes.iter().all(|c| c["type"] == "planned-change" && c["kind"] == "config-push"), "{v}");
    let router = changes[0]["router"].as_str().unwrap().to_owned();
    let (_, v) = s.get(&format!("/changes?router={router}")).await;
    assert!(v["changes"].as_array().unwrap().iter().all(|c| c["router"] == router.as_str()));
    s.expect_error(Method::GET, "/changes?kind=outage", None, StatusCode::BAD_REQUEST, "outage").await;
    s.expect_error(Method::GET, "/changes?router=rtr-999999", None, StatusCode::NOT_FOUND, "rtr-999999").await;

    // Back to clean: the planned changes end, every router is delivered again.
    s.call(Method::PATCH, "/config", Some(json!({"profile": "clean"}))).await;
    s.tick();
    assert!(lock(&s.engine).changes().active().is_empty());
    assert_eq!(lock(&s.engine).delivered().len(), 2000);
    let (_, v) = s.get("/healthz").await;
    assert_eq!(v["profile"], "clean");
}

#[tokio::test]
async fn healthz_reports_state() {
    let s = sim(20, 2000);
    let (status, v) = s.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["routers"], 20);
    assert_eq!(v["ticks"], 1);
    assert_eq!(v["event_time"], START);
}

#[tokio::test]
async fn prometheus_metrics_follow_conventions_and_the_per_router_opt_out() {
    let s = sim(20, 2000);
    s.call(Method::POST, "/faults", Some(json!({"kind": "packet-loss", "router": "rtr-000001"}))).await;
    let (status, body) = s.raw(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    for needle in [
        "# TYPE routewatch_sim_records counter",
        "routewatch_sim_records_total 0",
        "routewatch_sim_routers 20",
        "routewatch_sim_faults_active{kind=\"packet-loss\"} 1",
        "routewatch_sim_consequences_active{kind=\"process-crash\"} 0",
        "routewatch_sim_tick_duration_seconds_bucket",
        "routewatch_fleet_cpu_utilization_ratio{role=\"access\",stat=\"mean\"}",
        "routewatch_router_latency_seconds{router=\"rtr-000001\",role=",
        "routewatch_router_receive_bytes_per_second{router=\"rtr-000019\"",
        "# EOF",
    ] {
        assert!(text.contains(&format!("\n{needle}")), "missing {needle:?} in\n{text}");
    }
    // Latency is exported in seconds: the record's ms / 1000.
    let record = lock(&s.engine).records()[1].clone();
    let line = text
        .lines()
        .find(|l| l.starts_with("routewatch_router_latency_seconds{router=\"rtr-000001\""))
        .unwrap_or_else(|| panic!("no latency line for rtr-000001 in\n{text}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((value - record.metrics.latency_ms / 1000.0).abs() < 1e-9, "{line}");

    // Over the threshold: aggregates only.
    let big = sim(20, 10);
    let (_, body) = big.raw(Method::GET, "/metrics", None).await;
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("routewatch_router_"), "per-router series above the opt-out threshold");
    assert!(text.contains("routewatch_fleet_temperature_celsius"));
}

#[tokio::test]
async fn unknown_paths_and_methods_are_json_errors() {
    let s = sim(5, 2000);
    s.expect_error(Method::GET, "/nope", None, StatusCode::NOT_FOUND, "no such endpoint").await;
    s.expect_error(Method::PUT, "/faults", None, StatusCode::METHOD_NOT_ALLOWED, "method").await;
    s.expect_error(Method::POST, "/routers/simulate", None, StatusCode::METHOD_NOT_ALLOWED, "method").await;
}
