//! Remediation actions over real HTTP (the axum server on a socket): each fixes what it should
//! and nothing else after its delay, everything is in the ground truth (REST and files), and
//! every bad request gets a clear 4xx with a JSON body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use routewatch_simulator::actions::{ActionKind, MAX_BODY_BYTES};
use routewatch_simulator::consequences::{self, Consequence, ConsequenceKind};
use routewatch_simulator::engine::{Engine, FaultRequest, RuntimeConfig};
use routewatch_simulator::metrics::{ActionLabels, KindLabel, SimMetrics};
use routewatch_simulator::runner::{Pace, Runner, Stop};
use routewatch_simulator::sink::FileSink;
use routewatch_simulator::{api, app_state, lock};
use routewatch_telemetry::{FaultKind, Role};
use serde_json::{Value, json};

const START: i64 = 1_736_121_600_000;

/// The simulator's REST API served on a real socket, over an engine the test steps itself
/// (so event time is exact).
struct Sim {
    engine: Arc<Mutex<Engine>>,
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

fn sim(routers: u32, interval_ms: u64) -> Sim {
    let config = RuntimeConfig { routers, interval_ms, fault_rate: 0.0, ..Default::default() };
    let engine = Arc::new(Mutex::new(Engine::new(3, config, START).unwrap()));
    lock(&engine).tick(START);
    let state = app_state(engine.clone(), &SimMetrics::default(), 2000, "fast", "none");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, api::router(state)).await });
    Sim { engine, addr, _runtime: runtime }
}

impl Sim {
    /// One HTTP/1.1 exchange; the body must be JSON.
    fn request(&self, method: &str, path: &str, body: Option<&str>, content_type: bool) -> (u16, Value) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        let body = body.unwrap_or("");
        let ct = if content_type { "Content-Type: application/json\r\n" } else { "" };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let resp = String::from_utf8(resp).unwrap();
        let status = resp.split(' ').nth(1).unwrap().parse().unwrap();
        let (_, payload) = resp.split_once("\r\n\r\n").unwrap();
        let value = serde_json::from_str(payload).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {resp}"));
        (status, value)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None, false)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, Some(&body.to_string()), true)
    }

    fn act(&self, router: &str, action: &str) -> (u16, Value) {
        self.post(&format!("/routers/{router}/actions"), &json!({ "action": action, "reason": "test" }))
    }

    fn inject(&self, kind: &str, router: &str, magnitude: Option<f64>) -> String {
        let mut body = json!({ "kind": kind, "router": router, "duration_s": 3 * 3600 });
        if let Some(m) = magnitude {
            body["magnitude"] = json!(m);
        }
        let (status, v) = self.post("/faults", &body);
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    fn tick(&self) -> i64 {
        let mut e = lock(&self.engine);
        let ts = e.next_ts();
        e.tick(ts);
        ts
    }

    /// Asserts a JSON error with this status, an error code and a reason mentioning `needle`.
    fn expect_error(&self, (status, v): (u16, Value), expected: u16, needle: &str) -> Value {
        assert_eq!(status, expected, "{v}");
        assert!(v["error"].is_string(), "{v}");
        let reason = v["reason"].as_str().unwrap_or_else(|| panic!("no reason in {v}"));
        assert!(reason.contains(needle), "reason {reason:?} lacks {needle:?}");
        v
    }
}

/// The documented contract: what each action fixes and how long it takes (README, "Actions").
fn contract(action: &str) -> (i64, &'static [&'static str]) {
    match action {
        "restart-process" => (90, &["memory-leak", "cpu-runaway"]),
        "reset-interface" => (15, &["link-flap"]),
        "dampen-peer" => (30, &["route-flap"]),
        "failover-psu" => (20, &["hardware-psu"]),
        "reroute-traffic" => (120, &["traffic-spike", "packet-loss"]),
        "boost-fans" => (60, &["hardware-temperature"]),
        "replace-fan-tray" => (3600, &["hardware-fan"]),
        other => panic!("no contract for {other}"),
    }
}

#[test]
fn each_action_fixes_what_it_should_and_nothing_else_after_its_delay() {
    let names = ActionKind::names();
    let kinds: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
    let s = sim((names.len() * kinds.len()) as u32, 15_000);
    // One router per (action, fault kind): the fault, then the action.
    struct Case {
        action: &'static str,
        kind: &'static str,
        fault: String,
        id: String,
        completes_at: i64,
    }
    let mut cases = Vec::new();
    for (a, &action) in names.iter().enumerate() {
        for (k, &kind) in kinds.iter().enumerate() {
            let router = format!("rtr-{:06}", a * kinds.len() + k);
            let fault = s.inject(kind, &router, None);
            let (status, v) = s.act(&router, action);
            assert_eq!(status, 202, "{v}");
            let next = lock(&s.engine).next_ts();
            let (delay_s, _) = contract(action);
            assert_eq!(v["type"], "action");
            assert_eq!((v["action"].as_str(), v["router"].as_str()), (Some(action), Some(router.as_str())));
            assert_eq!((v["status"].as_str(), &v["outcome"]), (Some("running"), &Value::Null));
            assert_eq!(v["requested_at"], next, "starts with the next sample");
            assert_eq!(v["completes_at"], next + delay_s * 1000);
            assert_eq!(v["reason"], "test");
            let completes_at = v["completes_at"].as_i64().unwrap();
            cases.push(Case { action, kind, fault, id: v["id"].as_str().unwrap().to_owned(), completes_at });
        }
    }
    let last = cases.iter().map(|c| c.completes_at).max().unwrap();
    let mut checked_before = 0;
    loop {
        let ts = s.tick();
        for c in cases.iter().filter(|c| ts < c.completes_at && c.completes_at <= ts + 15_000) {
            // The last sample before it completes: the fault is still there.
            let (_, f) = s.get(&format!("/faults/{}", c.fault));
            assert_eq!(f["active"], true, "{} on {} before its delay: {f}", c.action, c.kind);
            let (_, a) = s.get(&format!("/actions/{}", c.id));
            assert_eq!(a["status"], "running", "{a}");
            checked_before += 1;
        }
        if ts >= last {
            break;
        }
    }
    assert_eq!(checked_before, cases.len());
    for c in &cases {
        let fixes = contract(c.action).1.contains(&c.kind);
        let (_, a) = s.get(&format!("/actions/{}", c.id));
        let (_, f) = s.get(&format!("/faults/{}", c.fault));
        assert_eq!(a["status"], "completed", "{a}");
        if fixes {
            assert_eq!(a["outcome"], "fixed", "{} should fix {}: {a}", c.action, c.kind);
            assert_eq!(a["fixed"], json!([{ "id": c.fault, "kind": c.kind }]));
            assert_eq!(f["active"], false, "{f}");
            assert_eq!(f["end"], c.completes_at, "fixed when the action completes");
        } else {
            assert_eq!(a["outcome"], "no-effect", "{} should not fix {}: {a}", c.action, c.kind);
            assert_eq!(a["fixed"], json!([]));
            assert_eq!(f["active"], true, "{} ended {}: {f}", c.action, c.kind);
        }
    }
    // Every action is listed, and the per-router list has just its router's.
    let (_, all) = s.get("/actions?limit=1000");
    assert_eq!(all["total"], cases.len());
    let (_, fixed) = s.get("/actions?status=completed&action=restart-process");
    assert_eq!(fixed["total"], kinds.len());
    let (status, mine) = s.get("/routers/rtr-000002/actions");
    assert_eq!(status, 200, "{mine}");
    assert_eq!((mine["router"].as_str(), &mine["total"]), (Some("rtr-000002"), &json!(1)));
    assert_eq!(mine["actions"][0]["id"], cases[2].id.as_str());
}

fn core(s: &Sim) -> (u32, String, u32) {
    let e = lock(&s.engine);
    let p = e.fleet().profiles().iter().max_by_key(|p| (p.role == Role::Core, p.bgp_sessions)).unwrap();
    (p.index, p.id.clone(), p.bgp_sessions)
}

#[test]
fn restart_process_drops_bgp_while_it_restarts_then_reconverges_with_the_leak_gone() {
    let s = sim(30, 30_000);
    let (i, id, sessions) = core(&s);
    let baseline_mem = lock(&s.engine).records()[i as usize].metrics.mem_util;
    s.inject("memory-leak", &id, Some(0.3));
    for _ in 0..60 {
        s.tick();
    }
    let leaky = lock(&s.engine).records()[i as usize].metrics.mem_util;
    assert!(leaky > baseline_mem + 0.1, "{baseline_mem} -> {leaky}");
    let (status, v) = s.act(&id, "restart-process");
    assert_eq!(status, 202, "{v}");
    let completes_at = v["completes_at"].as_i64().unwrap();
    // Restarting: another action waits (409), and its sessions are down while it restarts,
    // but forwarding goes on.
    let busy = s.expect_error(s.act(&id, "reset-interface"), 409, "restarting its routing process");
    assert_eq!(busy["error"], "conflict");
    loop {
        let ts = s.tick();
        let r = lock(&s.engine).delivered()[i as usize].clone();
        if ts >= completes_at {
            break;
        }
        assert_eq!(r.metrics.bgp_up, 0.0, "{r:?}");
        assert!(r.metrics.rx_bps > 0.0);
        assert!(r.metrics.mem_util > baseline_mem + 0.1, "not fixed before its delay");
    }
    let r = lock(&s.engine).delivered()[i as usize].clone();
    assert!((r.metrics.mem_util - baseline_mem).abs() < 0.05, "leak fixed: {} vs {baseline_mem}", r.metrics.mem_util);
    let mut bgp = Vec::new();
    for _ in 0..8 {
        s.tick();
        bgp.push(lock(&s.engine).delivered()[i as usize].metrics.bgp_up);
    }
    assert!(bgp[0] < f64::from(sessions), "{bgp:?}");
    assert!(*bgp.last().unwrap() >= f64::from(sessions) - 1.0, "re-established: {bgp:?}");
    let (_, a) = s.get(&format!("/actions/{}", v["id"].as_str().unwrap()));
    assert_eq!((a["outcome"].as_str(), a["fixed"][0]["kind"].as_str()), (Some("fixed"), Some("memory-leak")));
    // A process restart is not a reboot: the router's uptime and counters carry on.
    let (_, detail) = s.get(&format!("/routers/{id}"));
    assert_eq!(detail["health"]["counters"]["booted_at"], Value::Null, "{detail}");
}

#[test]
fn a_crashed_router_refuses_actions_while_it_reloads_and_its_consequence_is_listed() {
    let s = sim(30, 60_000);
    let (i, id, _) = core(&s);
    s.inject("memory-leak", &id, Some(1.0));
    let mut ticks = 0;
    let reloading = |s: &Sim| {
        let e = lock(&s.engine);
        e.consequences().reload_until(i, e.next_ts()).is_some()
    };
    while !reloading(&s) {
        s.tick();
        ticks += 1;
        assert!(ticks < 120, "no crash");
    }
    let up_at = s.expect_error(s.act(&id, "restart-process"), 409, "rebooting after a crash");
    assert!(up_at["reason"].as_str().unwrap().contains("until"), "{up_at}");
    s.tick();
    let (_, detail) = s.get(&format!("/routers/{id}"));
    assert_eq!(detail["health"]["state"], "reloading", "{detail}");
    assert_eq!(detail["health"]["consequences"][0]["kind"], "process-crash");
    let (status, list) = s.get(&format!("/consequences?router={id}&kind=process-crash&active=true"));
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1);
    let c: Consequence = serde_json::from_value(list["consequences"][0].clone()).unwrap();
    assert_eq!((c.kind, c.fault_kind, c.end), (ConsequenceKind::ProcessCrash, Some(FaultKind::MemoryLeak), None));
    assert_eq!(list["consequences"][0]["type"], "consequence");
    let (_, by_fault) = s.get(&format!("/consequences?fault={}", c.fault.as_deref().unwrap()));
    assert_eq!(by_fault["total"], 1);
    // Up again: actions are taken, the crash runs its course and ends.
    for _ in 0..(consequences::RELOAD_S as i64 / 60) {
        s.tick();
    }
    let (_, detail) = s.get(&format!("/routers/{id}"));
    assert_eq!(detail["health"]["state"], "up", "{detail}");
    assert_eq!(detail["health"]["counters"]["booted_at"], c.start + consequences::RELOAD_MS);
    let (status, v) = s.act(&id, "restart-process");
    assert_eq!(status, 202, "{v}");
    for _ in 0..4 {
        s.tick();
    }
    let (_, ended) = s.get(&format!("/consequences?router={id}&active=false"));
    assert_eq!(ended["total"], 1, "{ended}");
    assert!(ended["consequences"][0]["end"].is_i64());
    s.expect_error(s.get("/consequences?kind=meltdown"), 400, "meltdown");
    s.expect_error(s.get("/consequences?router=rtr-999999"), 404, "rtr-999999");
}

#[test]
fn bad_action_requests_get_clear_errors() {
    let s = sim(10, 60_000);
    let path = "/routers/rtr-000001/actions";
    // Unknown router, unknown action (with every valid one listed, the same as the catalog).
    s.expect_error(s.act("rtr-000099", "restart-process"), 404, "rtr-000099");
    s.expect_error(s.act("bogus", "restart-process"), 404, "bogus");
    let v = s.expect_error(s.act("rtr-000001", "reboot-everything"), 400, "unknown action \"reboot-everything\"");
    assert_eq!(v["error"], "unknown_action");
    let valid: Vec<&str> = v["valid"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(valid, ActionKind::names());
    for name in &valid {
        assert!(v["reason"].as_str().unwrap().contains(name), "{v}");
    }
    let (_, catalog) = s.get("/actions/catalog");
    let listed: Vec<&str> =
        catalog["actions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(listed, valid);
    assert!(catalog["actions"].as_array().unwrap().iter().all(|a| a["delay_s"].as_f64().unwrap() > 0.0));
    // Malformed bodies.
    s.expect_error(s.post(path, &json!({})), 400, "missing field `action`");
    s.expect_error(s.post(path, &json!({ "action": 7 })), 400, "invalid type");
    s.expect_error(s.post(path, &json!({ "action": "dampen-peer", "force": true })), 400, "unknown field `force`");
    s.expect_error(s.request("POST", path, Some("{\"action\":"), true), 400, "JSON");
    let v = s.expect_error(s.request("POST", path, Some(r#"{"action":"dampen-peer"}"#), false), 415, "Content-Type");
    assert_eq!(v["error"], "unsupported_media_type");
    // Too large: over the body cap is 413; under it but with an over-long field, 400.
    let huge = json!({ "action": "dampen-peer", "reason": "x".repeat(MAX_BODY_BYTES) });
    let v = s.expect_error(s.post(path, &huge), 413, &MAX_BODY_BYTES.to_string());
    assert_eq!(v["error"], "payload_too_large");
    s.expect_error(s.post(path, &json!({ "action": "dampen-peer", "reason": "x".repeat(600) })), 400, "reason");
    s.expect_error(
        s.post(path, &json!({ "action": "dampen-peer", "requested_by": "y".repeat(200) })),
        400,
        "requested_by",
    );
    // The same action twice while it runs: 409.
    assert_eq!(s.act("rtr-000001", "replace-fan-tray").0, 202);
    s.expect_error(s.act("rtr-000001", "replace-fan-tray"), 409, "already running this action");
    // Listing errors, and methods.
    s.expect_error(s.get("/actions/act-999999"), 404, "act-999999");
    s.expect_error(s.get("/actions?action=reboot"), 400, "unknown variant");
    s.expect_error(s.get("/actions?status=stuck"), 400, "unknown variant");
    s.expect_error(s.get("/actions?router=rtr-999999"), 404, "rtr-999999");
    s.expect_error(s.get("/actions?limit=0"), 400, "limit");
    s.expect_error(s.get("/routers/rtr-999999/actions"), 404, "rtr-999999");
    s.expect_error(s.get("/routers/rtr-000001/actions?router=rtr-000002"), 400, "path");
    s.expect_error(s.request("PUT", path, None, false), 405, "method");
    s.expect_error(s.request("DELETE", "/actions", None, false), 405, "method");
    // Nothing but the one good request was recorded.
    assert_eq!(lock(&s.engine).actions().all().count(), 1);
}

/// The runner publishes consequences and actions as files next to the faults file, one final
/// state a line.
#[test]
fn the_runner_writes_consequences_and_actions_to_their_ground_truth_files() {
    let config = RuntimeConfig { routers: 20, interval_ms: 60_000, fault_rate: 0.0, ..Default::default() };
    let engine = Arc::new(Mutex::new(Engine::new(4, config, START).unwrap()));
    let (leaky, flappy) = ("rtr-000003", "rtr-000004");
    let (leak, flap) = {
        let mut e = lock(&engine);
        let mut inject = |kind, router: &str, magnitude| {
            let req = FaultRequest { kind, router: Some(router.into()), duration_s: Some(6.0 * 3600.0), magnitude };
            e.inject(&req).unwrap().event.id
        };
        (inject(FaultKind::MemoryLeak, leaky, Some(1.0)), inject(FaultKind::LinkFlap, flappy, None))
    };
    let request = |action: &str| {
        let req = serde_json::from_value(json!({ "action": action, "requested_by": "policy:flaps" })).unwrap();
        lock(&engine).act(flappy, &req).unwrap().id
    };
    let fix = request("reset-interface");
    let noop = request("dampen-peer");
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("fleet.jsonl");
    let truth = FileSink::truth_path_for(&records);
    let sink = FileSink::create(&records, &truth).unwrap();
    let metrics = SimMetrics::default();
    let summary = Runner::new(engine.clone(), Box::new(sink), metrics.clone())
        .run(Pace::Fast, Some(START + 3 * 3_600_000), &Stop::default())
        .unwrap();
    assert_eq!(summary.ticks, 180);
    // Prometheus counts them too.
    assert_eq!(metrics.consequences.get_or_create(&KindLabel { kind: "process-crash" }).get(), 1);
    for (action, outcome) in [
        ("reset-interface", "requested"),
        ("reset-interface", "fixed"),
        ("dampen-peer", "requested"),
        ("dampen-peer", "no-effect"),
    ] {
        assert_eq!(metrics.actions.get_or_create(&ActionLabels { action, outcome }).get(), 1, "{action} {outcome}");
    }

    let lines = |what: &str| -> Vec<Value> {
        let path = FileSink::companion_path(&truth, what);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let consequences = lines("consequences");
    let crash = consequences.iter().find(|c| c["kind"] == "process-crash").expect("the leak crashed the router");
    assert_eq!((crash["router"].as_str(), crash["fault"].as_str()), (Some(leaky), Some(leak.as_str())));
    assert_eq!(crash["type"], "consequence");
    assert!(crash["end"].is_i64(), "final state: {crash}");
    let c: Consequence = serde_json::from_value(crash.clone()).unwrap();
    assert_eq!(c.end, Some(c.start + ((consequences::RELOAD_S + 180.0) * 1000.0) as i64));

    let actions = lines("actions");
    assert_eq!(actions.len(), 2, "{actions:?}");
    let by_id = |id: &str| actions.iter().find(|a| a["id"] == id).unwrap().clone();
    let (fixed, no_effect) = (by_id(&fix), by_id(&noop));
    assert_eq!((fixed["status"].as_str(), fixed["outcome"].as_str()), (Some("completed"), Some("fixed")));
    assert_eq!(fixed["fixed"], json!([{ "id": flap, "kind": "link-flap" }]));
    assert_eq!(fixed["requested_by"], "policy:flaps");
    assert_eq!(no_effect["outcome"], "no-effect");
    // The faults file agrees: the flap ended when its fix completed, the leak at the crash.
    let faults: Vec<Value> =
        std::fs::read_to_string(&truth).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let end = |id: &str| faults.iter().find(|f| f["id"] == id).unwrap()["end"].clone();
    assert_eq!(end(&flap), fixed["completes_at"]);
    assert_eq!(end(&leak), crash["start"]);
}
