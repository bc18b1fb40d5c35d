//! Hostile clients and plugins against the HTTP API, one guarantee per test: caps on what is
//! echoed, no plugin code where reads wait, a bounded check pool, takeovers that need an
//! explicit replace, signed plugins, and HTTP timeouts and a connection cap.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{TEST_TOKEN, component};
use routewatch_host::api::{ApiState, Server};
use routewatch_host::feed::AnomalyFeed;
use routewatch_host::metrics::Metrics;
use routewatch_host::registry::signing::KeyPair;
use routewatch_host::registry::{QuarantinePolicy, Registry, TrustedKeys};
use routewatch_host::runtime::{Limits, Runtime, RuntimeConfig};
use serde_json::{Value, json};

struct Host {
    base: String,
    addr: String,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
    _server: Server,
}

fn host_with(keys: TrustedKeys) -> Host {
    host_with_budget(keys, Duration::from_millis(200))
}

fn host_with_budget(keys: TrustedKeys, cpu_budget: Duration) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    // Compiled once into a cache, so that uploads in the tests cost a load, not a compilation.
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().join(".cache")),
        limits: Limits { cpu_budget, memory_bytes: 64 << 20, ..Limits::default() },
        ..RuntimeConfig::default()
    })
    .unwrap();
    runtime.load(&wasm("routewatch_test_evil")).unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    let registry = Arc::new(
        Registry::new(runtime, metrics.clone(), QuarantinePolicy::default(), Some(dir.path().join("plugins")))
            .unwrap()
            .with_trusted_keys(keys),
    );
    let state = ApiState::new(
        metrics.clone(),
        Arc::new(AnomalyFeed::default()),
        Arc::new(AtomicBool::new(true)),
        registry.clone(),
        TEST_TOKEN.into(),
        16 << 20,
    );
    let server = Server::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
    let addr = server.addr().to_string();
    Host { base: format!("http://{addr}"), addr, registry, metrics, _dir: dir, _server: server }
}

fn host() -> Host {
    host_with(TrustedKeys::default())
}

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(component(name)).unwrap()
}

/// One request with the token; the status and the body as JSON.
fn send(host: &Host, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{}{path}", host.base);
    let auth = format!("Bearer {TEST_TOKEN}");
    let response = match method {
        "GET" => agent.get(&url).call(),
        _ => {
            let mut request = match method {
                "POST" => agent.post(&url),
                "PUT" => agent.put(&url),
                other => panic!("{other}"),
            }
            .header("Authorization", &auth)
            .header("Content-Type", "application/json");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.send(body.unwrap_or_default())
        }
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().with_config().limit(64 << 20).read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[test]
fn a_plugin_whose_info_is_over_the_caps_is_refused_with_the_reason() {
    let h = host();
    let (status, body) = send(&h, "POST", "/api/v1/plugins", &[], Some(&wasm("routewatch_test_bloated")));
    assert_eq!(status, 422, "{body}");
    assert!(body["reason"].as_str().unwrap().contains("over the cap"), "{body}");
    assert_eq!(send(&h, "GET", "/api/v1/plugins", &[], None), (200, json!([])));
}

#[test]
fn a_configuration_over_its_cap_is_refused_while_it_arrives() {
    let h = host();
    assert_eq!(send(&h, "POST", "/api/v1/plugins", &[], Some(&wasm("routewatch_test_evil"))).0, 201);
    let huge = format!(r#"{{"mode": "ok", "pad": "{}"}}"#, "x".repeat(1 << 20));
    let (status, body) = send(&h, "PUT", "/api/v1/plugins/evil/config", &[], Some(huge.as_bytes()));
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "too_large");
    assert_eq!(h.registry.get("evil").unwrap().config, None, "nothing was applied");
}

#[test]
fn a_takeover_from_another_source_needs_replace_and_is_audited() {
    let h = host();
    // `evil` runs from a file outside the plugin directory, as `--plugin` gives it.
    h.registry.install_file(&component("routewatch_test_evil")).unwrap();
    let impostor = wasm("routewatch_test_impostor");
    let (status, body) = send(&h, "POST", "/api/v1/plugins", &[], Some(&impostor));
    assert_eq!(status, 409, "{body}");
    assert!(body["reason"].as_str().unwrap().contains("explicit replace"), "{body}");
    assert_eq!(h.registry.get("evil").unwrap().version, "0.1.0", "the real one still runs");

    let (status, body) = send(&h, "POST", "/api/v1/plugins?replace=true", &[], Some(&impostor));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "0.2.0");
    let audit = body["takeover"].as_str().expect("the takeover is on record");
    let old_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(wasm("routewatch_test_evil")))
    };
    assert!(audit.contains(&old_sha) && audit.contains(body["sha256"].as_str().unwrap()), "{audit}");
    let exposition = h.metrics.encode();
    assert_eq!(common::metric_sum(&exposition, "routewatch_plugin_takeovers_total"), 1.0, "{exposition}");
}

#[test]
fn reads_stay_fast_while_plugin_code_loops_and_a_full_check_pool_answers_503() {
    // A read queued behind a check would wait at least the check's 2 s of CPU; one that is
    // merely descheduled on a busy machine waits far less. The bar sits between the two.
    let h = host_with_budget(TrustedKeys::default(), Duration::from_secs(2));
    // Every check of this plugin's configuration runs `configure` until its CPU budget ends.
    h.registry.set_initial_config("evil", json!({"mode": "configure-loop"}));
    let evil = Arc::new(wasm("routewatch_test_evil"));
    let uploads: Vec<_> = (0..6)
        .map(|_| {
            let (base, evil) = (h.base.clone(), evil.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                agent
                    .post(&format!("{base}/api/v1/plugins"))
                    .header("Authorization", &format!("Bearer {TEST_TOKEN}"))
                    .send(&evil[..])
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(600) {
        for path in ["/healthz", "/api/v1/plugins", "/metrics"] {
            let t = Instant::now();
            assert_eq!(send(&h, "GET", path, &[], None).0, 200);
            slowest = slowest.max(t.elapsed());
        }
    }
    let statuses: Vec<u16> = uploads.into_iter().map(|u| u.join().unwrap()).collect();
    assert!(slowest < Duration::from_millis(500), "a read took {slowest:?} while plugin code ran");
    assert!(statuses.contains(&503), "six checks at once on a pool of two: {statuses:?}");
    assert!(statuses.iter().all(|s| [422, 503].contains(s)), "{statuses:?}");
}

#[test]
fn signed_plugins_only_when_keys_are_set() {
    let pair = KeyPair::generate().unwrap();
    let h = host_with(TrustedKeys::parse(&[pair.public_hex()]).unwrap());
    let evil = wasm("routewatch_test_evil");
    let (status, body) = send(&h, "POST", "/api/v1/plugins", &[], Some(&evil));
    assert_eq!((status, body["error"].as_str()), (403, Some("signature")), "{body}");
    let other = KeyPair::generate().unwrap().sign_hex(&evil);
    let (status, _) = send(&h, "POST", "/api/v1/plugins", &[("X-Routewatch-Signature", &other)], Some(&evil));
    assert_eq!(status, 403, "a signature by an untrusted key");
    let good = pair.sign_hex(&evil);
    let (status, body) = send(&h, "POST", "/api/v1/plugins", &[("X-Routewatch-Signature", &good)], Some(&evil));
    assert_eq!(status, 201, "{body}");
    // The upload was written to the plugin directory with its signature, so it loads again.
    let path = std::path::PathBuf::from(body["path"].as_str().unwrap());
    let sig = std::fs::read_to_string(format!("{}.sig", path.display())).unwrap();
    assert_eq!(sig, good);
    // A file without a signature is refused.
    let unsigned = path.with_file_name("unsigned.wasm");
    std::fs::write(&unsigned, wasm("routewatch_test_bloated")).unwrap();
    let err = h.registry.install_file(&unsigned).unwrap_err().to_string();
    assert!(err.contains("carries no signature"), "{err}");
}

#[test]
fn a_classifier_is_signed_like_a_detector() {
    let pair = KeyPair::generate().unwrap();
    let h = host_with(TrustedKeys::parse(&[pair.public_hex()]).unwrap());
    let stub = wasm("routewatch_test_classifier");
    let (status, body) = send(&h, "PUT", "/api/v1/classifier", &[], Some(&stub));
    assert_eq!((status, body["error"].as_str()), (403, Some("signature")), "{body}");
    let other = KeyPair::generate().unwrap().sign_hex(&stub);
    let (status, _) = send(&h, "PUT", "/api/v1/classifier", &[("X-Routewatch-Signature", &other)], Some(&stub));
    assert_eq!(status, 403, "a signature by an untrusted key");
    assert!(h.registry.classifier().is_none());
    let good = pair.sign_hex(&stub);
    let (status, body) = send(&h, "PUT", "/api/v1/classifier", &[("X-Routewatch-Signature", &good)], Some(&stub));
    assert_eq!((status, body["name"].as_str()), (201, Some("stub")), "{body}");
    let path = std::path::PathBuf::from(body["path"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(format!("{}.sig", path.display())).unwrap(), good);
    // Neither a classifier file without its signature nor a `--classifier` one is taken.
    let unsigned = path.with_file_name("unsigned.wasm");
    std::fs::write(&unsigned, wasm("routewatch_classifier_forest")).unwrap();
    let err = h.registry.install_component_file(&unsigned).unwrap_err().to_string();
    assert!(err.contains("carries no signature"), "{err}");
    let err = h.registry.install_classifier_file(&unsigned).unwrap_err().to_string();
    assert!(err.contains("carries no signature"), "{err}");
    assert_eq!(h.registry.classifier().unwrap().name, "stub");
}

#[test]
fn an_oversized_chunked_upload_gets_its_413_not_a_reset() {
    let h = host();
    let mut stream = TcpStream::connect(&h.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "POST /api/v1/plugins HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        h.addr
    )
    .unwrap();
    // 20 MiB in 1 MiB chunks, over the 16 MiB cap, sent whole before reading the answer.
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..20 {
        write!(stream, "{:x}\r\n", chunk.len()).unwrap();
        stream.write_all(&chunk).expect("the host keeps reading: no broken pipe");
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too_large"), "{answer}");
}

#[test]
fn half_sent_headers_time_out_and_connections_are_capped() {
    use routewatch_host::api::server::{HEADER_TIMEOUT, MAX_CONNECTIONS};
    let h = host();
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..MAX_CONNECTIONS + 40)
        .filter_map(|_| {
            let mut stream = TcpStream::connect(&h.addr).ok()?;
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").ok()?;
            Some(stream)
        })
        .collect();
    // Past the cap, a connection is closed at once: reading it ends without an answer.
    let mut extra = TcpStream::connect(&h.addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    assert!(matches!(extra.read(&mut buf), Ok(0) | Err(_)), "a connection over the cap was served");
    // The half-sent requests are dropped after the header timeout.
    for stream in &mut idle {
        stream.set_read_timeout(Some(HEADER_TIMEOUT + Duration::from_secs(10))).unwrap();
    }
    for stream in &mut idle {
        let mut buf = [0u8; 256];
        // hyper answers 408 or just closes; either way the connection ends.
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed < HEADER_TIMEOUT + Duration::from_secs(8), "the connections stayed open for {elapsed:?}");
    assert_eq!(send(&h, "GET", "/healthz", &[], None).0, 200, "the server serves again");
}
