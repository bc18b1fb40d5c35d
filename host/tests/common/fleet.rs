//! A small fleet on a real broker: records, producing them, and checking which were
//! processed (through the evil plugin's `mark` mode, which reports every record's first column
//! as an anomaly).

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use routewatch_telemetry::{AnomalyEvent, Metrics, Record, Role, SCHEMA_VERSION};
use routewatch_testkit::Broker;

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

pub fn producer(broker: &Broker) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.timeout.ms", "0")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
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
