//! Exactly-once output on Apache Kafka: a host with `--processing-guarantee exactly-once`,
//! killed with SIGKILL in the middle of a stream and started again, leaves each record's
//! anomaly on `router-anomalies` exactly once for a `read_committed` reader.
//!
//! Counting uses the evil plugin's `mark` mode: one `cpu_util` anomaly per record.

mod common;

use std::collections::HashMap;
use std::process::Child;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fleet::{await_marked, fleet, host_process, keys, produce_paced, producer_config, topics};
use rdkafka::producer::FutureProducer;
use routewatch_telemetry::AnomalyEvent;
use routewatch_testkit::{Broker, Received};

const EXACTLY_ONCE: &[&str] = &["--processing-guarantee", "exactly-once"];

/// How often each (router, ts) was marked.
fn marks(messages: &[Received]) -> HashMap<(String, i64), usize> {
    let mut counts = HashMap::new();
    for m in messages {
        let event: AnomalyEvent = serde_json::from_slice(&m.payload).expect("anomalies are JSON");
        assert_eq!(event.metric, "cpu_util", "mark reports the first column only");
        *counts.entry((event.router, event.ts)).or_default() += 1;
    }
    counts
}

/// Stops a host the way an orchestrator does (SIGTERM), so it commits its last transaction.
fn terminate(mut host: Child) {
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    let sent = unsafe { libc::kill(host.id() as i32, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM");
    let status = host.wait().unwrap();
    assert!(status.success(), "the host exited with {status}");
}

#[test]
fn a_host_killed_mid_stream_leaves_each_anomaly_exactly_once() {
    let broker = Broker::start();
    topics(&broker);
    // Idempotent, so that the input itself holds each record once whatever the retries.
    let producer: FutureProducer = producer_config(&broker).set("enable.idempotence", "true").create().unwrap();
    let all = fleet(50, 0..400);
    // Records keep arriving before, during and after the crash.
    let (stop, sender) = produce_paced(producer, all.clone());
    let mut host = host_process(&broker, "eos", EXACTLY_ONCE);
    // Well into the stream (transactions committed on every partition), kill it unawares.
    await_marked(&broker, &keys(&all[..2000]), Duration::from_secs(120));
    host.kill().expect("SIGKILL");
    host.wait().unwrap();
    let host = host_process(&broker, "eos", EXACTLY_ONCE);
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    await_marked(&broker, &keys(&all), Duration::from_secs(180));
    terminate(host);

    let committed = marks(&broker.read_all("router-anomalies", true));
    let twice: Vec<_> = committed.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "anomalies seen more than once by a read_committed reader: {twice:?}");
    assert_eq!(committed.len(), all.len(), "every record's anomaly is there");
    // What the crash left behind, aborted: visible only to a read_uncommitted reader.
    let written: usize = marks(&broker.read_all("router-anomalies", false)).values().sum();
    eprintln!("{} records: {} anomalies committed once each, {} written in all", all.len(), committed.len(), written);
}
