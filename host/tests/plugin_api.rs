//! Plugin management without Kafka: the REST API route by route (success and every refusal),
//! the `routewatch plugin` CLI over it, and the watched plugin directory; the same for the
//! cause classifier (`/api/v1/classifier`, and a classifier dropped in the directory).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{TEST_TOKEN, component, rebuilt};
use routewatch_host::api::{ApiState, OPENAPI, Server};
use routewatch_host::feed::AnomalyFeed;
use routewatch_host::metrics::Metrics;
use routewatch_host::registry::watch::DirWatcher;
use routewatch_host::registry::{QuarantinePolicy, Registry, SETTINGS_FILE};
use serde_json::{Value, json};

const MAX_UPLOAD: usize = 4 << 20;

struct Host {
    base: String,
    registry: Arc<Registry>,
    dir: tempfile::TempDir,
    _server: Server,
}

fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let registry = Arc::new(
        Registry::new(common::runtime(), metrics.clone(), QuarantinePolicy::default(), Some(dir.path().into()))
            .unwrap(),
    );
    let state = ApiState::new(
        metrics,
        Arc::new(AnomalyFeed::default()),
        Arc::new(AtomicBool::new(true)),
        registry.clone(),
        TEST_TOKEN.into(),
        MAX_UPLOAD,
    );
    let server = Server::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
    Host { base: format!("http://{}", server.addr()), registry, dir, _server: server }
}

enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    Json(Value),
    Text(&'a str),
}

/// One request; returns the status and the body as JSON (`Null` for an empty body).
fn call(host: &Host, method: &str, path: &str, token: Option<&str>, body: Body) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{}{path}", host.base);
    let auth = token.map(|t| format!("Bearer {t}"));
    let with = |r: ureq::RequestBuilder<ureq::typestate::WithBody>| match &auth {
        Some(a) => r.header("Authorization", a),
        None => r,
    };
    let builder = |m: &str| match m {
        "POST" => agent.post(&url),
        "PUT" => agent.put(&url),
        "PATCH" => agent.patch(&url),
        other => panic!("no body for {other}"),
    };
    let response = match (method, body) {
        ("GET", _) => agent.get(&url).call(),
        ("DELETE", _) => {
            let r = agent.delete(&url);
            match &auth {
                Some(a) => r.header("Authorization", a).call(),
                None => r.call(),
            }
        }
        (m, Body::None) => with(builder(m)).send_empty(),
        (m, Body::Bytes(b)) => with(builder(m)).send(b),
        (m, Body::Json(v)) => with(builder(m)).send_json(&v),
        (m, Body::Text(t)) => with(builder(m)).header("Content-Type", "application/json").send(t),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().with_config().limit(64 << 20).read_to_string().unwrap();
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, value)
}

/// Asserts a JSON error with the given status and code.
#[track_caller]
fn refused(answer: (u16, Value), status: u16, code: &str) -> String {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"], code, "{}", answer.1);
    answer.1["reason"].as_str().expect("every error has a reason").to_owned()
}

/// Starts an upload of `length` bytes and reads the answer before sending any of them: the host
/// must refuse an oversized body from its announced length, without buffering it. (Sending it
/// whole races the refusal: the host may close the connection mid-body.)
fn announce_upload(host: &Host, length: usize) -> (u16, Value) {
    announce(host, "POST /api/v1/plugins", length)
}

/// [`announce_upload`] for any request line (`METHOD PATH`).
fn announce(host: &Host, request: &str, length: usize) -> (u16, Value) {
    use std::io::{Read, Write};
    let addr = host.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        stream,
        "{request} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\
         Content-Type: application/wasm\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&[0u8; 1024]).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::String(answer.clone())))
}

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(component(name)).unwrap()
}

#[test]
fn uploads_are_checked_authorised_and_capped() {
    let h = host();
    let arima = wasm("routewatch_arima");
    let token = Some(TEST_TOKEN);
    assert_eq!(call(&h, "GET", "/api/v1/plugins", None, Body::None), (200, json!([])));

    refused(call(&h, "POST", "/api/v1/plugins", None, Body::Bytes(&arima)), 401, "unauthorized");
    // A refused upload is read to its end before the refusal goes out: a client still sending
    // megabytes gets the 401, not a connection reset.
    let big = vec![0u8; MAX_UPLOAD - 1];
    refused(call(&h, "POST", "/api/v1/plugins", None, Body::Bytes(&big)), 401, "unauthorized");
    refused(
        call(&h, "POST", "/api/v1/plugins", Some("wrong-token-0123456789"), Body::Bytes(&arima)),
        401,
        "invalid_token",
    );
    let reason = refused(
        call(&h, "POST", "/api/v1/plugins", token, Body::Bytes(b"MZ\x90\x00 not wasm")),
        422,
        "invalid_component",
    );
    assert!(reason.contains("not a WebAssembly file"), "{reason}");
    let reason = refused(
        call(&h, "POST", "/api/v1/plugins", token, Body::Bytes(&wasm("routewatch_test_wrong_world"))),
        422,
        "invalid_component",
    );
    assert!(reason.contains("does not implement the routewatch detector world"), "{reason}");
    let reason = refused(
        call(&h, "POST", "/api/v1/plugins", token, Body::Bytes(&wasm("routewatch_test_wrong_version"))),
        422,
        "invalid_component",
    );
    assert!(reason.contains("this host serves 0.1.0"), "{reason}");
    let reason = refused(announce_upload(&h, MAX_UPLOAD + 1), 413, "too_large");
    assert!(reason.contains("capped"), "{reason}");
    refused(call(&h, "POST", "/api/v1/plugins", token, Body::Bytes(b"")), 400, "bad_request");
    assert!(h.registry.list().is_empty(), "nothing refused was installed");

    let (status, created) = call(&h, "POST", "/api/v1/plugins", token, Body::Bytes(&arima));
    assert_eq!(status, 201, "{created}");
    assert_eq!((created["name"].as_str(), created["state"].as_str()), (Some("arima"), Some("running")));
    assert!(h.dir.path().join("arima.wasm").is_file(), "an upload is kept in the plugin directory");
    assert_eq!(call(&h, "POST", "/api/v1/plugins", token, Body::Bytes(&arima)).0, 200, "the same bytes again");

    let (status, replaced) = call(&h, "POST", "/api/v1/plugins", token, Body::Bytes(&rebuilt(&arima, "v2")));
    assert_eq!(status, 200, "{replaced}");
    assert_ne!(replaced["sha256"], created["sha256"]);
    assert_eq!(replaced["counters"]["reloads"], 1);
    assert_eq!(std::fs::read(h.dir.path().join("arima.wasm")).unwrap(), rebuilt(&arima, "v2"));
}

#[test]
fn plugins_are_configured_enabled_disabled_and_deleted() {
    let h = host();
    let token = Some(TEST_TOKEN);
    assert_eq!(call(&h, "POST", "/api/v1/plugins", token, Body::Bytes(&wasm("routewatch_arima"))).0, 201);

    let (status, shown) = call(&h, "GET", "/api/v1/plugins/arima", None, Body::None);
    assert_eq!(status, 200);
    assert!(shown["config_schema"]["properties"]["threshold"].is_object(), "{shown}");
    refused(call(&h, "GET", "/api/v1/plugins/nope", None, Body::None), 404, "not_found");
    refused(call(&h, "GET", "/api/v1/plugins/..%2F..%2Fetc", None, Body::None), 400, "bad_request");
    refused(call(&h, "GET", "/api/v1/plugins/Arima.wasm", None, Body::None), 400, "bad_request");

    let config = "/api/v1/plugins/arima/config";
    refused(call(&h, "PUT", config, None, Body::Json(json!({"threshold": 6.0}))), 401, "unauthorized");
    let reason = refused(call(&h, "PUT", config, token, Body::Json(json!({"threshold": -1}))), 422, "invalid_config");
    assert!(reason.contains("threshold"), "{reason}");
    let reason = refused(call(&h, "PUT", config, token, Body::Json(json!({"bogus": 1}))), 422, "invalid_config");
    assert!(reason.contains("bogus"), "{reason}");
    refused(call(&h, "PUT", config, token, Body::Text("{not json")), 400, "bad_request");
    refused(call(&h, "PUT", "/api/v1/plugins/nope/config", token, Body::Json(json!({}))), 404, "not_found");
    let (status, configured) = call(&h, "PUT", config, token, Body::Json(json!({"threshold": 6.0})));
    assert_eq!((status, &configured["config"]), (200, &json!({"threshold": 6.0})));
    assert_eq!(call(&h, "GET", config, None, Body::None).1["config"], json!({"threshold": 6.0}));
    let settings: Value = serde_json::from_slice(&std::fs::read(h.dir.path().join(SETTINGS_FILE)).unwrap()).unwrap();
    assert_eq!(settings["plugins"]["arima"]["config"]["threshold"], 6.0, "kept for the next start");

    refused(call(&h, "POST", "/api/v1/plugins/arima/disable", None, Body::None), 401, "unauthorized");
    assert_eq!(call(&h, "POST", "/api/v1/plugins/arima/disable", token, Body::None).1["state"], "disabled");
    assert!(!h.registry.view().plugins[0].runnable);
    assert_eq!(call(&h, "POST", "/api/v1/plugins/arima/enable", token, Body::None).1["state"], "running");
    refused(call(&h, "POST", "/api/v1/plugins/nope/enable", token, Body::None), 404, "not_found");

    refused(call(&h, "DELETE", "/api/v1/plugins/arima", None, Body::None), 401, "unauthorized");
    assert_eq!(call(&h, "DELETE", "/api/v1/plugins/arima", token, Body::None).0, 204);
    assert!(!h.dir.path().join("arima.wasm").exists(), "its file is gone too");
    refused(call(&h, "GET", "/api/v1/plugins/arima", None, Body::None), 404, "not_found");
    refused(call(&h, "DELETE", "/api/v1/plugins/arima", token, Body::None), 404, "not_found");
}

#[test]
fn reads_errors_and_the_openapi_document() {
    let h = host();
    assert_eq!(call(&h, "GET", "/api/v1/anomalies?limit=5", None, Body::None), (200, json!([])));
    refused(call(&h, "GET", "/api/v1/anomalies?limit=many", None, Body::None), 400, "bad_request");
    refused(call(&h, "GET", "/api/v1/nothing-here", None, Body::None), 404, "not_found");
    refused(call(&h, "PATCH", "/api/v1/plugins", Some(TEST_TOKEN), Body::None), 405, "method_not_allowed");

    let (status, served) = call(&h, "GET", "/api/v1/openapi.json", None, Body::None);
    assert_eq!(status, 200);
    assert_eq!(served, serde_json::from_str::<Value>(OPENAPI).unwrap());
    // Every route the router serves is documented, with the right methods.
    let routes = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/anomalies"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/anomalies"),
        ("get", "/api/v1/plugins"),
        ("post", "/api/v1/plugins"),
        ("get", "/api/v1/plugins/{name}"),
        ("delete", "/api/v1/plugins/{name}"),
        ("post", "/api/v1/plugins/{name}/enable"),
        ("post", "/api/v1/plugins/{name}/disable"),
        ("post", "/api/v1/plugins/{name}/start-fresh"),
        ("get", "/api/v1/plugins/{name}/config"),
        ("put", "/api/v1/plugins/{name}/config"),
        ("get", "/api/v1/classifier"),
        ("put", "/api/v1/classifier"),
        ("delete", "/api/v1/classifier"),
        ("put", "/api/v1/classifier/config"),
        ("get", "/api/v1/incidents"),
        ("get", "/api/v1/incidents/{id}"),
        ("get", "/api/v1/site-incidents"),
        ("post", "/api/v1/incidents/{id}/ack"),
        ("post", "/api/v1/incidents/{id}/feedback"),
        ("post", "/api/v1/incidents/{id}/approve"),
        ("get", "/api/v1/actions"),
        ("get", "/api/v1/policies"),
        ("put", "/api/v1/policies/{name}"),
        ("delete", "/api/v1/policies/{name}"),
        ("post", "/api/v1/policies/{name}/reset"),
        ("get", "/api/v1/healing"),
        ("put", "/api/v1/healing/dry-run"),
    ];
    for (method, path) in routes {
        assert!(served["paths"][path][method].is_object(), "{method} {path} is not in the OpenAPI document");
        let concrete = path.replace("{name}", "arima");
        let answer = call(&h, &method.to_uppercase(), &concrete, Some(TEST_TOKEN), Body::None);
        assert_ne!(answer.1.get("error"), Some(&json!("method_not_allowed")), "{method} {path} is routed");
    }
    let documented: usize = served["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().keys().filter(|k| *k != "parameters").count())
        .sum();
    assert_eq!(documented, routes.len(), "the document has no route the server lacks");
    // The action names the document lists are the ones the host parses.
    let listed = &served["components"]["schemas"]["Action"]["properties"]["action"]["enum"];
    let names = routewatch_telemetry::Action::names();
    assert_eq!(listed, &json!(names), "the OpenAPI document's action names");
}

fn routewatch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_routewatch")).args(args).output().expect("routewatch runs")
}

#[test]
fn the_cli_manages_plugins_over_the_api() {
    let h = host();
    let base = ["plugin", "--host", h.base.as_str(), "--token", TEST_TOKEN];
    let cli = |extra: &[&str]| routewatch(&[&base[..], extra].concat());
    let text = |out: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };

    let arima = component("routewatch_arima");
    let out = cli(&["push", arima.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("arima 0.1.0 is running"), "{}", text(&out));
    let out = cli(&["ls"]);
    assert!(out.status.success() && text(&out).contains("arima") && text(&out).contains("running"), "{}", text(&out));

    let out = cli(&["config", "arima", r#"{"threshold": -1}"#]);
    assert!(!out.status.success(), "a bad configuration fails the command");
    assert!(text(&out).contains("HTTP 422, invalid_config"), "{}", text(&out));
    let out = cli(&["config", "arima", r#"{"threshold": 7}"#]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&cli(&["config", "arima"])).contains("\"threshold\":7"));

    assert!(text(&cli(&["disable", "arima"])).contains("is disabled"));
    assert!(text(&cli(&["enable", "arima"])).contains("is running"));
    let out = cli(&["push", component("routewatch_test_wrong_world").to_str().unwrap()]);
    assert!(!out.status.success() && text(&out).contains("invalid_component"), "{}", text(&out));

    let out = routewatch(&["plugin", "--host", &h.base, "--token-file", "/nonexistent/token", "rm", "arima"]);
    assert!(!out.status.success() && text(&out).contains("no API token"), "{}", text(&out));
    let out = cli(&["rm", "arima"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&["rm", "arima"]);
    assert!(!out.status.success() && text(&out).contains("HTTP 404"), "{}", text(&out));
}

/// Polls `check` every 10 ms for up to 10 s; returns how long it took.
#[track_caller]
fn wait_for(what: &str, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

fn sha(registry: &Registry, name: &str) -> Option<String> {
    registry.get(name).map(|s| s.sha256)
}

#[test]
fn the_plugin_directory_is_watched() {
    let h = host();
    let _watcher = DirWatcher::start(h.registry.clone(), h.dir.path().into()).unwrap();
    let path = h.dir.path().join("arima.wasm");
    let arima = wasm("routewatch_arima");

    std::fs::copy(component("routewatch_arima"), &path).unwrap();
    let took = wait_for("a dropped component to load", || h.registry.get("arima").is_some());
    assert!(took < Duration::from_secs(2), "loaded in {took:?}");
    let first = sha(&h.registry, "arima").unwrap();

    // A rebuilt component over the same file replaces the running version.
    std::fs::write(&path, rebuilt(&arima, "v2")).unwrap();
    wait_for("the new version", || sha(&h.registry, "arima").is_some_and(|s| s != first));
    let second = sha(&h.registry, "arima").unwrap();

    // A broken one leaves the running version in place and says why.
    std::fs::write(&path, b"garbage").unwrap();
    wait_for("the refusal", || h.registry.get("arima").is_some_and(|s| s.last_error.is_some()));
    let status = h.registry.get("arima").unwrap();
    assert_eq!(status.sha256, second, "the old version still runs");
    assert!(status.last_error.unwrap().contains("not a WebAssembly file"));

    // Files that are not detectors of this host's WIT version are reported, not loaded.
    let wrong = h.dir.path().join("wrong.wasm");
    std::fs::copy(component("routewatch_test_wrong_version"), &wrong).unwrap();
    wait_for("the wrong version's report", || h.registry.file_errors().contains_key(&wrong));
    assert!(h.registry.file_errors()[&wrong].contains("this host serves 0.1.0"));
    assert_eq!(h.registry.list().len(), 1);

    // Moved in from elsewhere (a rename, as deploy tools do) counts like a write.
    let staging = tempfile::tempdir_in(h.dir.path().parent().unwrap()).unwrap();
    let staged = staging.path().join("evil.wasm");
    std::fs::copy(component("routewatch_test_evil"), &staged).unwrap();
    std::fs::rename(&staged, h.dir.path().join("evil.wasm")).unwrap();
    wait_for("a renamed-in component", || h.registry.get("evil").is_some());

    std::fs::remove_file(&path).unwrap();
    wait_for("the unload", || h.registry.get("arima").is_none());
    assert!(file_names(h.dir.path()).contains(&"evil.wasm".to_owned()));
}

fn file_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// A copy of a classifier component that says it was built against another version of the
/// classifier package: every `routewatch:classifier/...@0.1.0` name becomes `@0.9.0` (the same
/// length, so the binary stays well formed).
fn other_classifier_version(component: &[u8]) -> Vec<u8> {
    let (from, to) = (b"routewatch:classifier/classifier@0.1.0", b"routewatch:classifier/classifier@0.9.0");
    let mut bytes = component.to_vec();
    let mut patched = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            patched += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(patched > 0, "the component names its export");
    bytes
}

#[test]
fn the_classifier_is_uploaded_checked_reconfigured_and_removed_over_rest() {
    let h = host();
    let token = Some(TEST_TOKEN);
    let forest = wasm("routewatch_classifier_forest");
    let stub = wasm("routewatch_test_classifier");
    let reason = refused(call(&h, "GET", "/api/v1/classifier", None, Body::None), 404, "not_found");
    assert!(reason.contains("no classifier is live"), "{reason}");

    // Every refusal, and none of them installs anything.
    refused(call(&h, "PUT", "/api/v1/classifier", None, Body::Bytes(&forest)), 401, "unauthorized");
    refused(
        call(&h, "PUT", "/api/v1/classifier", Some("wrong-token-0123456789"), Body::Bytes(&forest)),
        401,
        "invalid_token",
    );
    let reason = refused(announce(&h, "PUT /api/v1/classifier", MAX_UPLOAD + 1), 413, "too_large");
    assert!(reason.contains("capped"), "{reason}");
    refused(call(&h, "PUT", "/api/v1/classifier", token, Body::Bytes(b"")), 400, "bad_request");
    let reason = refused(
        call(&h, "PUT", "/api/v1/classifier", token, Body::Bytes(b"MZ\x90\x00 not wasm")),
        422,
        "invalid_component",
    );
    assert!(reason.contains("not a WebAssembly file"), "{reason}");
    let reason = refused(
        call(&h, "PUT", "/api/v1/classifier", token, Body::Bytes(&wasm("routewatch_arima"))),
        422,
        "invalid_component",
    );
    assert!(reason.contains("detector") && reason.contains("POST /api/v1/plugins"), "{reason}");
    let reason = refused(
        call(&h, "PUT", "/api/v1/classifier", token, Body::Bytes(&other_classifier_version(&forest))),
        422,
        "invalid_component",
    );
    assert!(reason.contains("routewatch:classifier@0.9.0") && reason.contains("this host serves 0.1.0"), "{reason}");
    // And a classifier is not a detector.
    let reason = refused(call(&h, "POST", "/api/v1/plugins", token, Body::Bytes(&forest)), 422, "invalid_component");
    assert!(reason.contains("PUT /api/v1/classifier"), "{reason}");
    assert!(h.registry.classifier().is_none() && h.registry.list().is_empty(), "nothing refused was installed");

    let (status, live) = call(&h, "PUT", "/api/v1/classifier", token, Body::Bytes(&forest));
    assert_eq!(status, 201, "{live}");
    assert_eq!((live["name"].as_str(), live["state"].as_str()), (Some("forest"), Some("running")));
    assert!(live["causes"].as_array().unwrap().iter().any(|c| c == "hardware-fan"), "{live}");
    assert!(h.dir.path().join("forest.wasm").is_file(), "an upload is kept in the plugin directory");
    assert_eq!(call(&h, "GET", "/api/v1/classifier", None, Body::None).1["sha256"], live["sha256"]);
    let generation = h.registry.classifier_generation();

    // A configuration the classifier refuses is refused, and the live one keeps its own.
    let config = "/api/v1/classifier/config";
    refused(call(&h, "PUT", config, None, Body::Json(json!({"min_confidence": 0.7}))), 401, "unauthorized");
    let reason =
        refused(call(&h, "PUT", config, token, Body::Json(json!({"min_confidence": 7}))), 422, "invalid_config");
    assert!(reason.contains("min_confidence"), "{reason}");
    refused(call(&h, "PUT", config, token, Body::Text("{not json")), 400, "bad_request");
    let (status, configured) = call(&h, "PUT", config, token, Body::Json(json!({"min_confidence": 0.7})));
    assert_eq!((status, &configured["config"]), (200, &json!({"min_confidence": 0.7})));
    assert!(h.registry.classifier_generation() > generation, "the stages see the change");
    let settings: Value = serde_json::from_slice(&std::fs::read(h.dir.path().join(SETTINGS_FILE)).unwrap()).unwrap();
    assert_eq!(settings["classifier_config"]["min_confidence"], 0.7, "kept for the next start");

    // The stub refuses that configuration (it takes only `mode`): it does not go live.
    let reason = refused(call(&h, "PUT", "/api/v1/classifier", token, Body::Bytes(&stub)), 422, "invalid_config");
    assert!(reason.contains("min_confidence"), "{reason}");
    let shown = call(&h, "GET", "/api/v1/classifier", None, Body::None).1;
    assert_eq!(shown["name"], "forest", "the live classifier stays");
    assert!(shown["last_error"].as_str().unwrap().contains("stub"), "{shown}");
    // With a configuration both take, it replaces the forest, over the forest's file.
    assert_eq!(call(&h, "PUT", config, token, Body::Json(json!({}))).0, 200);
    let (status, swapped) = call(&h, "PUT", "/api/v1/classifier", token, Body::Bytes(&stub));
    assert_eq!(status, 200, "{swapped}");
    assert_eq!((swapped["name"].as_str(), swapped["counters"]["reloads"].as_u64()), (Some("stub"), Some(1)));
    assert_eq!(std::fs::read(h.dir.path().join("forest.wasm")).unwrap(), stub);
    let view = h.registry.classifier_view();
    assert_eq!(view.live.as_ref().map(|l| l.plugin.info().name.as_str()), Some("stub"));

    // Detectors and the classifier do not share names (nor metrics).
    refused(call(&h, "DELETE", "/api/v1/classifier", None, Body::None), 401, "unauthorized");
    assert_eq!(call(&h, "DELETE", "/api/v1/classifier", token, Body::None).0, 204);
    assert!(!h.dir.path().join("forest.wasm").exists(), "its file is gone too");
    assert!(h.registry.classifier_view().live.is_none());
    refused(call(&h, "GET", "/api/v1/classifier", None, Body::None), 404, "not_found");
    refused(call(&h, "DELETE", "/api/v1/classifier", token, Body::None), 404, "not_found");
    refused(call(&h, "PUT", config, token, Body::Json(json!({}))), 404, "not_found");
}

#[test]
fn a_classifier_in_the_plugin_directory_goes_live_and_its_removal_brings_back_the_one_given_at_start() {
    let h = host();
    let start = tempfile::tempdir().unwrap();
    let given = start.path().join("stub.wasm");
    std::fs::copy(component("routewatch_test_classifier"), &given).unwrap();
    h.registry.install_classifier_file(&given).unwrap();
    let _watcher = DirWatcher::start(h.registry.clone(), h.dir.path().into()).unwrap();
    let live = |name: &str| h.registry.classifier().is_some_and(|c| c.name == name);
    let forest = wasm("routewatch_classifier_forest");
    let path = h.dir.path().join("causes.wasm");

    std::fs::write(&path, &forest).unwrap();
    let took = wait_for("a dropped classifier to go live", || live("forest"));
    assert!(took < Duration::from_secs(5), "live in {took:?}");
    let status = h.registry.classifier().unwrap();
    assert_eq!((status.path.as_deref(), status.fallback.as_deref()), (Some(path.as_path()), Some("stub@0.1.0")));
    assert!(h.registry.list().is_empty(), "a classifier is not a detector");

    // A rebuilt one over the same file swaps it; a broken one leaves it live and says why.
    std::fs::write(&path, rebuilt(&forest, "v2")).unwrap();
    wait_for("the rebuilt classifier", || h.registry.classifier().is_some_and(|c| c.counters.reloads == 2));
    let second = h.registry.classifier().unwrap().sha256;
    std::fs::write(&path, b"garbage").unwrap();
    wait_for("the refusal", || h.registry.classifier().is_some_and(|c| c.last_error.is_some()));
    assert_eq!(h.registry.classifier().unwrap().sha256, second, "the rebuilt one is still live");

    // Removed: the one given at start is live again.
    std::fs::write(&path, &forest).unwrap();
    wait_for("the forest again", || h.registry.classifier().is_some_and(|c| c.sha256 != second && c.name == "forest"));
    std::fs::remove_file(&path).unwrap();
    wait_for("the fallback", || live("stub"));
    assert_eq!(h.registry.classifier().unwrap().path.as_deref(), Some(given.as_path()));
}
