//! Every PromQL expression of the dashboards, recording rules, alerting rules and Grafana alert
//! rules, run against a real Prometheus (Debian's) that scrapes a running simulator and host
//! once a second, with the repository's rule files loaded and faults injected: each must parse
//! and return data.
//!
//! The parts: an Apache Kafka broker (testkit), `routewatch-sim` in real time producing to it, faults
//! injected through the simulator's REST API, malformed records and poison records (which the
//! `evil` detector chokes on) produced straight to the metrics topic, and `routewatch run` with
//! the ARIMA and evil detectors. The binaries are found next to this test's own executable
//! (`<target>/release/`, `<target>/wasm32-wasip2/plugin/`), or in `ROUTEWATCH_BIN_DIR` and
//! `ROUTEWATCH_COMPONENTS_DIR`. (Not `ROUTEWATCH_PLUGIN_DIR`: that one is the host's own
//! setting for its watched plugin folder.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use routewatch_deploy_check::{
    Expression, Process, deploy, expressions, free_port, http, tool, url_encode, wait_until, yaml,
};
use routewatch_telemetry::{Metrics, Record, Role, SCHEMA_VERSION};
use routewatch_testkit::Broker;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

const ROUTERS: u32 = 40;
const PARTITIONS: i32 = 4;
/// The whole check, start to end, should take well under this.
const DEADLINE: Duration = Duration::from_secs(150);

/// What may legitimately be empty on a short healthy run, and what must return data instead.
/// Each replacement is part of the expression it stands in for, so the two cannot drift apart.
/// The original expression is still run (it must parse) and used if it does return data.
const MAY_BE_EMPTY: &[(&str, Instead, &str)] = &[
    // Alerts compare with a threshold that a healthy run does not cross: their left-hand side
    // must have data.
    (
        "alert RoutewatchRouterAnomalyRateHigh",
        Instead::Query("router:routewatch_router_anomalies:rate5m"),
        "no router keeps up 3 anomalies a minute",
    ),
    (
        "alert RoutewatchSiteAnomalyRateHigh",
        Instead::Query("site:routewatch_site_anomalies:rate5m"),
        "no site reaches 0.5 anomalies/s",
    ),
    ("alert RoutewatchPluginQuarantined", Instead::Query("routewatch_plugin_state"), "no plugin may be quarantined"),
    (
        "alert RoutewatchPluginTrapRateHigh",
        Instead::Query("plugin:routewatch_plugin_trap_ratio:rate5m"),
        "traps may stay under 1% of calls",
    ),
    ("alert RoutewatchHostDown", Instead::Query(r#"up{job="routewatch-host"}"#), "the host is up"),
    ("alert RoutewatchSimulatorDown", Instead::Query(r#"up{job="routewatch-simulator"}"#), "the simulator is up"),
    (
        "alert RoutewatchNoPartitionsAssigned",
        Instead::Query("sum by (job) (routewatch_assigned_partitions)"),
        "the host holds partitions",
    ),
    ("alert RoutewatchConsumerLagHigh", Instead::Query("job:routewatch_consumer_lag_records:sum"), "the host keeps up"),
    (
        "alert RoutewatchDeadLetterRateHigh",
        Instead::Query("job_reason:routewatch_dead_letter_ratio:rate5m"),
        "a few bad records are far under 1%",
    ),
    (
        "alert RoutewatchDetectionLatencyHigh",
        Instead::Query("job:routewatch_detection_latency_seconds:p99_5m"),
        "detection is fast",
    ),
    // Only a hot reload creates these series, and this run loads each detector once.
    ("dashboard routewatch-plugins / Hot-swap pause p99 / A", Instead::ParseOnly, "no hot reload happens in this run"),
    (
        "dashboard routewatch-plugins / Quarantines, reloads, poison records (1 h) / B",
        Instead::ParseOnly,
        "no hot reload happens in this run",
    ),
    // Poison records are the records' fault, not the plugin's: they are isolated and the plugin
    // stays in service. Its state gauge is checked through RoutewatchPluginQuarantined.
    (
        "dashboard routewatch-plugins / Quarantines, reloads, poison records (1 h) / A",
        Instead::ParseOnly,
        "no plugin is quarantined in this run",
    ),
];

#[derive(Debug, Clone, Copy)]
enum Instead {
    /// Run this part of the expression instead; it must return data.
    Query(&'static str),
    /// The expression must parse; no data is expected.
    ParseOnly,
}

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("test binaries live in <target>/<profile>/deps").to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("ROUTEWATCH_BIN_DIR").map_or_else(|| target_dir().join("release"), PathBuf::from);
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo xtask build` (or set ROUTEWATCH_BIN_DIR)",
        path.display()
    );
    path
}

fn component(name: &str) -> PathBuf {
    let dir = std::env::var_os("ROUTEWATCH_COMPONENTS_DIR")
        .map_or_else(|| target_dir().join("wasm32-wasip2").join("plugin"), PathBuf::from);
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the plugins with `cargo xtask build` (or set ROUTEWATCH_COMPONENTS_DIR)",
        path.display()
    );
    path
}

/// Prometheus on a free port, with the repository's scrape jobs pointed at the processes under
/// test, every interval 1 s, and the repository's rule files.
struct Prometheus {
    _process: Process,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(host: &str, simulator: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let mut config = yaml(&deploy("prometheus/prometheus.yml"));
        config["global"]["scrape_interval"] = "1s".into();
        config["global"]["evaluation_interval"] = "1s".into();
        let map = config.as_mapping_mut().unwrap();
        map.remove("alerting");
        let rules = deploy("prometheus/rules").join("*.yml").display().to_string();
        map.insert("rule_files".into(), Yaml::Sequence(vec![rules.into()]));
        let targets = BTreeMap::from([("routewatch-host", host), ("routewatch-simulator", simulator)]);
        let jobs = config["scrape_configs"].as_sequence_mut().unwrap();
        // Only the jobs of the processes under test, under the names the rules and dashboards use.
        jobs.retain(|job| targets.contains_key(job["job_name"].as_str().unwrap_or("")));
        assert_eq!(jobs.len(), targets.len(), "prometheus.yml must have the jobs {:?}", targets.keys());
        for job in jobs.iter_mut() {
            let target = targets[job["job_name"].as_str().unwrap()];
            job["static_configs"] = serde_yaml::from_str(&format!("[{{targets: ['{target}']}}]")).unwrap();
        }
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();

        let mut last = String::new();
        for _ in 0..3 {
            // Prometheus cannot report a port it picked itself; retry if another process took it.
            let addr = format!("127.0.0.1:{}", free_port());
            let mut cmd = Command::new(tool("prometheus", "ROUTEWATCH_PROMETHEUS"));
            cmd.arg(format!("--config.file={}", path.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn");
            let mut process = Process::spawn("prometheus", cmd);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if http(&addr, "GET", "/-/ready", None).is_ok_and(|(status, _)| status == 200) {
                    return Prometheus { _process: process, addr, _dir: dir };
                }
                if process.exited().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            last = process.log_tail();
        }
        panic!("Prometheus did not start\n{last}");
    }

    /// The answer of `/api/v1/query` for an instant query now.
    fn query(&self, promql: &str) -> Json {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (_, body) = http(&self.addr, "GET", &path, None).unwrap_or_else(|e| panic!("querying Prometheus: {e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("Prometheus answered {body:?}: {e}"))
    }

    /// The value of a query that returns one number.
    fn number(&self, promql: &str) -> Option<f64> {
        let answer = self.query(promql);
        answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok())
    }
}

/// What came back for one expression.
enum Outcome {
    Data,
    Empty,
    Error(String),
}

/// Data means at least one sample that is a number (NaN, as from a quantile over no events,
/// is not data).
fn outcome(answer: &Json) -> Outcome {
    if answer["status"] != "success" {
        return Outcome::Error(format!("{}: {}", answer["errorType"], answer["error"]));
    }
    let data = &answer["data"];
    let value_ok = |v: &Json| v.as_str().is_some_and(|s| s != "NaN");
    let has_data = match data["resultType"].as_str() {
        Some("vector") => data["result"].as_array().into_iter().flatten().any(|s| value_ok(&s["value"][1])),
        Some("matrix") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["values"].as_array().into_iter().flatten().any(|v| value_ok(&v[1]))),
        Some("scalar") | Some("string") => value_ok(&data["result"][1]),
        _ => false,
    };
    if has_data { Outcome::Data } else { Outcome::Empty }
}

/// The failure, if any, of one expression (taking [`MAY_BE_EMPTY`] into account).
fn check(prometheus: &Prometheus, expression: &Expression) -> Option<String> {
    let exception = MAY_BE_EMPTY.iter().find(|(origin, _, _)| *origin == expression.origin);
    match (outcome(&prometheus.query(&expression.promql)), exception) {
        (Outcome::Error(err), _) => Some(format!("does not run: {err}")),
        (Outcome::Data, _) | (Outcome::Empty, Some((_, Instead::ParseOnly, _))) => None,
        (Outcome::Empty, None) => Some("returned no data".into()),
        (Outcome::Empty, Some((_, Instead::Query(instead), why))) => match outcome(&prometheus.query(instead)) {
            Outcome::Data => None,
            Outcome::Empty => Some(format!("returned no data, nor did {instead} (allowed empty: {why})")),
            Outcome::Error(err) => Some(format!("{instead} does not run: {err}")),
        },
    }
}

/// A record the host accepts, with `rx_bps` set (666 makes the evil detector panic).
fn record(router: u32, rx_bps: f64) -> Vec<u8> {
    Record {
        schema: SCHEMA_VERSION,
        router: format!("rtr-{router:06}"),
        site: "fra1".into(),
        region: "eu-central".into(),
        role: Role::Edge,
        vendor: "acme".into(),
        ts: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
        metrics: Metrics { cpu_util: 0.3, mem_util: 0.5, temp_c: 40.0, fan_rpm: 6000.0, rx_bps, ..Default::default() },
    }
    .encode()
}

fn produce(broker: &Broker, payloads: &[(String, Vec<u8>)]) {
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", broker.bootstrap()).create().expect("producer");
    for (key, payload) in payloads {
        producer.send(BaseRecord::to("router-metrics").key(key).payload(payload)).expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
}

#[test]
fn every_promql_expression_returns_data_from_a_live_stack() {
    let started = Instant::now();
    let all = expressions();
    // Every exception must still name an expression, or it hides nothing and misleads.
    for (origin, instead, _) in MAY_BE_EMPTY {
        let expression = all.iter().find(|e| e.origin == *origin).unwrap_or_else(|| panic!("no expression {origin}"));
        if let Instead::Query(part) = instead {
            assert!(expression.promql.contains(part), "{origin}: {part} is not part of {}", expression.promql);
        }
    }

    let broker = Broker::start();
    broker.create_topics(&[
        ("router-metrics", PARTITIONS),
        ("router-faults", 1),
        ("router-anomalies", PARTITIONS),
        ("router-metrics-dlq", PARTITIONS),
        ("routewatch-state", 1),
    ]);

    let mut sim = Command::new(binary("routewatch-sim"));
    sim.args(["--routers", &ROUTERS.to_string(), "--interval", "200ms", "--fault-rate", "0", "--seed", "7"]).args([
        "--brokers",
        &broker.bootstrap(),
        "--partitions",
        &PARTITIONS.to_string(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut sim = Process::spawn("simulator", sim);
    let sim_addr = sim.wait_for_log("REST API and /metrics listening listen=", Duration::from_secs(30));

    // The deployments' own host settings, with what only this test needs on top: a short
    // ARIMA warm-up (30 samples, 6 s at this rate) and snappy group timeouts for the test broker.
    let mut host = Command::new(binary("routewatch"));
    host.arg("run")
        .arg("--config")
        .arg(deploy("host/routewatch.toml"))
        .args(["--brokers", &broker.bootstrap(), "--group-id", "deploy-check", "--listen", "127.0.0.1:0"])
        .args(["--partitions", &PARTITIONS.to_string(), "--snapshot-interval-secs", "2"])
        .arg("--plugin")
        .arg(component("routewatch_arima"))
        .arg("--plugin")
        .arg(component("routewatch_test_evil"))
        .args(["--plugin-config", r#"arima={"warmup":30}"#, "--plugin-config", r#"evil={"mode":"poison"}"#])
        .args(["--kafka", "session.timeout.ms=6000", "--kafka", "heartbeat.interval.ms=500"])
        .arg("--cache-dir")
        .arg(std::env::temp_dir().join("routewatch-deploy-check-components"))
        // As the deployments do; otherwise the host generates one and keeps it in $HOME.
        .env("ROUTEWATCH_API_TOKEN", "deploy-check-test-token");
    let mut host = Process::spawn("host", host);
    let host_addr = host.wait_for_log("HTTP API on http://", Duration::from_secs(90));

    let prometheus = Prometheus::start(&host_addr, &sim_addr);
    let failure_context = |host: &Process, sim: &Process| format!("{}\n{}", host.log_tail(), sim.log_tail());

    // Faults go in once ARIMA has warmed up, so that it learns the healthy routers first.
    let warm = f64::from(ROUTERS) * 40.0;
    wait_until("the host to consume the warm-up", DEADLINE, || {
        host.assert_running();
        prometheus.number("sum(routewatch_records_total)").is_some_and(|n| n >= warm)
    });
    let faults = [("cpu-runaway", 1), ("traffic-spike", 2), ("hardware-temperature", 3), ("packet-loss", 4)];
    for (kind, router) in faults {
        let body = format!(r#"{{"kind":"{kind}","router":"rtr-{router:06}","duration_s":600}}"#);
        let (status, answer) = http(&sim_addr, "POST", "/faults", Some(&body)).expect("simulator REST");
        assert_eq!(status, 201, "injecting {kind}: {answer}");
    }
    // Records the host must dead-letter, one per reason.
    let valid = String::from_utf8(record(ROUTERS + 1, 1000.0)).unwrap();
    let bad = [
        "this is not json".to_owned(),
        valid.replace("\"schema\":1", "\"schema\":99"),
        valid.replace("\"cpu_util\":0.3", "\"cpu_util\":7.5"),
        format!("{valid:20000}"),
    ];
    produce(&broker, &bad.iter().map(|b| ("rtr-bad".to_owned(), b.clone().into_bytes())).collect::<Vec<_>>());
    // Poison records, in separate batches (the host lingers 20 ms a batch): the evil detector
    // traps on each, and the host isolates each to the dead-letter topic (traps, poison records
    // and the plugin_trap reason get series). The pause paces the input; nothing waits on it.
    for i in 0..4 {
        produce(&broker, &[(format!("rtr-poison-{i}"), record(ROUTERS + 2 + i, 666.0))]);
        std::thread::sleep(Duration::from_millis(300));
    }

    // Everything is polled until it has returned data once: rates need two scrapes, rules an
    // evaluation, and some series (detection latency over a 1 m window) only follow anomalies.
    let mut pending: Vec<&Expression> = all.iter().collect();
    let mut failures: Vec<String>;
    loop {
        host.assert_running();
        sim.assert_running();
        failures = Vec::new();
        pending.retain(|e| match check(&prometheus, e) {
            Some(why) => {
                failures.push(format!("  {} ({})\n    {why}", e.origin, e.promql));
                true
            }
            None => false,
        });
        if pending.is_empty() || started.elapsed() > DEADLINE {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        failures.is_empty(),
        "{} of {} expressions failed after {:?}:\n{}\n{}",
        failures.len(),
        all.len(),
        started.elapsed(),
        failures.join("\n"),
        failure_context(&host, &sim)
    );
    eprintln!("all {} expressions returned data (or parsed, where allowed) in {:?}", all.len(), started.elapsed());
    drop(prometheus);
}
