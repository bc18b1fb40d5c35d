//! A small fleet on a real broker: records, producing them, and checking which were
//! processed (through the evil plugin's `mark` mode, which reports every record's first column
//! as an anomaly).

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use routewatch_host::HostConfig;
use routewatch_telemetry::{AnomalyEvent, Metrics, Record, Role, SCHEMA_VERSION};
use routewatch_testkit::Broker;

use super::{TEST_TOKEN, component};

pub const PARTITIONS: i32 = 4;
pub const T0: i64 = 1_764_000_000_000;

/// Logs from the hosts under test, shown for failing tests.
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_test_writer()
        .try_init();
}

pub fn topics(broker: &Broker) {
    logs();
    broker.create_topics(&[
        ("router-metrics", PARTITIONS),
        ("router-anomalies", PARTITIONS),
        ("router-metrics-dlq", PARTITIONS),
        ("routewatch-state", 1),
    ]);
}

pub fn router(i: usize) -> String {
    format!("rtr-{i:06}")
}

pub fn record(router_index: usize, step: i64, cpu: f64) -> Vec<u8> {
    Record {
        schema: SCHEMA_VERSION,
        router: router(router_index),
        site: format!("site{}", router_index % 3),
        region: "eu".into(),
        role: Role::Edge,
        vendor: "acme".into(),
        ts: T0 + step * 1000,
        metrics: Metrics {
            cpu_util: cpu,
            mem_util: 0.5,
            temp_c: 40.0,
            fan_rpm: 6000.0,
            bgp_up: 4.0,
            ..Default::default()
        },
    }
    .encode()
}

/// `steps` of a fleet of `routers` whose CPU follows a noisy daily curve (noise from `seed`),
/// plus what `bump(step, router)` adds: the crash and incident tests' waves and spikes.
pub fn cpu_curves(routers: usize, steps: i64, seed: u64, bump: impl Fn(i64, usize) -> f64) -> Vec<(String, Vec<u8>)> {
    let mut noise = super::Noise::new(seed);
    let mut records = Vec::with_capacity(routers * steps as usize);
    for step in 0..steps {
        for r in 0..routers {
            let phase = r as f64 * 0.3;
            let cpu = 0.4
                + 0.1 * (step as f64 * std::f64::consts::TAU / 288.0 + phase).sin()
                + 0.01 * noise.gaussian()
                + bump(step, r);
            records.push((router(r), record(r, step, cpu.clamp(0.0, 1.0))));
        }
    }
    records
}

pub fn producer(broker: &Broker) -> FutureProducer {
    producer_config(broker).create().expect("producer")
}

/// The settings of [`producer`]: retrying for ever, small batches.
pub fn producer_config(broker: &Broker) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker.bootstrap()).set("message.timeout.ms", "0").set("linger.ms", "5");
    config
}

/// Produces `(key, payload)` pairs to the metrics topic and waits for every acknowledgement.
pub fn produce(producer: &FutureProducer, records: &[(String, Vec<u8>)]) {
    let deliveries: Vec<_> = records
        .iter()
        .map(|(key, payload)| {
            producer.send_result(FutureRecord::to("router-metrics").key(key).payload(payload)).expect("queue has room")
        })
        .collect();
    for delivery in futures::executor::block_on(futures::future::join_all(deliveries)) {
        delivery.expect("delivery report").expect("delivered");
    }
}

/// A stream that keeps arriving while a test breaks things: `records` in chunks of 500, 50 ms
/// apart until the returned flag is set, then as fast as the broker takes them. Joining the
/// handle waits for every acknowledgement.
pub fn produce_paced(producer: FutureProducer, records: Vec<(String, Vec<u8>)>) -> (Arc<AtomicBool>, JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        for chunk in records.chunks(500) {
            produce(&producer, chunk);
            if !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    (stop, handle)
}

/// `routers x steps` records, all with a plain CPU value.
pub fn fleet(routers: usize, steps: std::ops::Range<i64>) -> Vec<(String, Vec<u8>)> {
    steps.flat_map(|step| (0..routers).map(move |r| (router(r), record(r, step, 0.5)))).collect()
}

pub fn mark() -> Option<serde_json::Value> {
    Some(serde_json::json!({"mode": "mark"}))
}

/// Waits until the anomalies topic holds a `cpu_util` anomaly for every expected (router, ts).
pub fn await_marked(broker: &Broker, expected: &HashSet<(String, i64)>, timeout: Duration) {
    let mut missing = expected.clone();
    broker.consume_until("router-anomalies", timeout, |m| {
        let event: AnomalyEvent = serde_json::from_slice(&m.payload).expect("anomalies are JSON");
        if event.metric == "cpu_util" {
            missing.remove(&(event.router, event.ts));
        }
        missing.is_empty()
    });
}

pub fn keys(records: &[(String, Vec<u8>)]) -> HashSet<(String, i64)> {
    records.iter().map(|(_, payload)| Record::decode(payload).map(|r| (r.router, r.ts)).unwrap()).collect()
}

/// The host's settings for tests: short snapshot interval and group timeouts.
pub fn config(broker: &Broker, group: &str, plugin: &str, plugin_config: Option<serde_json::Value>) -> HostConfig {
    let mut config = HostConfig {
        brokers: broker.bootstrap(),
        group_id: group.into(),
        partitions: PARTITIONS,
        plugins: vec![component(plugin)],
        listen: "127.0.0.1:0".parse().unwrap(),
        api_token: Some(TEST_TOKEN.into()),
        linger_ms: 20,
        snapshot_interval_secs: 1,
        ..HostConfig::default()
    };
    if let Some(value) = plugin_config {
        config.plugin_config.insert(plugin_name(plugin).into(), value);
    }
    // Short group timeouts, so joins and departures settle in seconds.
    config.kafka.insert("session.timeout.ms".into(), "6000".into());
    config.kafka.insert("heartbeat.interval.ms".into(), "500".into());
    config
}

pub fn plugin_name(component: &str) -> &str {
    match component {
        "routewatch_test_evil" => "evil",
        _ => "arima",
    }
}

/// A `routewatch run` process.
pub fn host_process(broker: &Broker, group: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_routewatch"))
        .args(["run", "--brokers", &broker.bootstrap(), "--group-id", group, "--listen", "127.0.0.1:0"])
        .args(["--plugin", component("routewatch_test_evil").to_str().unwrap()])
        .args(["--plugin-config", r#"evil={"mode":"mark"}"#, "--snapshot-interval-secs", "1"])
        .args(["--batch-records", "200", "--kafka", "session.timeout.ms=6000", "--kafka", "heartbeat.interval.ms=500"])
        .args(extra)
        .env("ROUTEWATCH_CACHE_DIR", std::env::temp_dir().join("routewatch-test-cache"))
        .env("ROUTEWATCH_API_TOKEN", TEST_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("routewatch run starts")
}
