//! The streaming host against a real broker process (Apache Kafka, one per test; detection end
//! to end also on Tansu, the second implementation): detection end to end, dead letters with
//! their headers, topic creation, and no record lost across a host crash, a broker outage
//! (frozen, or killed and restarted on its data) and a rebalance between two hosts.
//!
//! Counting uses the evil plugin's `mark` mode, which reports every record's first column as
//! an anomaly: the anomalies topic then proves which records were processed.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::fleet::{
    PARTITIONS, T0, await_marked, config, fleet, host_process, keys, mark, produce, producer, record, router, topics,
};
use common::{Noise, metric_sum};
use routewatch_host::{Host, HostConfig};
use routewatch_telemetry::AnomalyEvent;
use routewatch_testkit::{Broker, Implementation};

#[test]
fn detects_an_injected_spike_end_to_end_on_apache_kafka() {
    detects_an_injected_spike_end_to_end(Implementation::Kafka);
}

#[test]
fn detects_an_injected_spike_end_to_end_on_tansu() {
    detects_an_injected_spike_end_to_end(Implementation::Tansu);
}

fn detects_an_injected_spike_end_to_end(implementation: Implementation) {
    let broker = implementation.start();
    topics(&broker);
    let mut noise = Noise::new(3);
    let mut records = Vec::new();
    for step in 0..300 {
        for r in 0..20 {
            let mut cpu = 0.4 + 0.1 * (step as f64 * std::f64::consts::TAU / 288.0).sin() + 0.01 * noise.gaussian();
            if r == 7 && step == 250 {
                cpu += 0.3;
            }
            records.push((router(r), record(r, step, cpu)));
        }
    }
    produce(&producer(&broker), &records);
    let pipeline = Host::start(config(&broker, "e2e", "routewatch_arima", None)).unwrap();

    let spike_ts = T0 + 250 * 1000;
    let mut found = None;
    broker.consume_until("router-anomalies", Duration::from_secs(120), |m| {
        let event: AnomalyEvent = serde_json::from_slice(&m.payload).unwrap();
        let hit = event.router == router(7) && event.metric == "cpu_util" && event.ts == spike_ts;
        if hit {
            assert_eq!(m.key.as_deref(), Some(router(7).as_bytes()), "anomalies are keyed by router");
            found = Some(event);
        }
        hit
    });
    let event = found.unwrap();
    assert_eq!((event.plugin.as_str(), event.kind.name()), ("arima", "spike"));
    assert_eq!((event.site.as_deref(), event.role.as_deref()), (Some("site1"), Some("edge")));
    assert!(
        event.detected_at.is_some_and(|t| t > event.ts)
            && event.score > 0.5
            && event.upper.is_some_and(|upper| event.value > upper)
    );
    let metrics = pipeline.metrics().encode();
    assert!(metrics.contains("routewatch_records_total 6000"), "{metrics}");
    pipeline.shutdown().unwrap();
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_with_reasons_and_the_rest_are_processed() {
    let broker = Broker::start();
    topics(&broker);
    let good = fleet(10, 0..50);
    let valid = String::from_utf8(record(1, 999, 0.5)).unwrap();
    let bad: Vec<(&str, String)> = vec![
        ("malformed", "this is not json".into()),
        ("unsupported_schema", valid.replace("\"schema\":1", "\"schema\":3")),
        ("malformed", valid.replace("\"temp_c\":40.0", "\"temp_c\":null")),
        ("malformed", valid.replace("\"fan_rpm\":6000.0,", "")),
        ("malformed", valid.replace("\"cpu_util\":0.5", "\"cpu_util\":\"busy\"")),
        ("invalid", valid.replace("\"cpu_util\":0.5", "\"cpu_util\":7.5")),
        ("oversized", format!("{valid:20000}")),
    ];
    let mut records = good.clone();
    for (i, (_, payload)) in bad.iter().enumerate() {
        records.insert(i * 40, ("rtr-bad".into(), payload.clone().into_bytes()));
    }
    produce(&producer(&broker), &records);
    let pipeline = Host::start(config(&broker, "dlq", "routewatch_test_evil", mark())).unwrap();

    await_marked(&broker, &keys(&good), Duration::from_secs(90));
    let dead = broker.consume("router-metrics-dlq", bad.len(), Duration::from_secs(30));
    let mut kinds: Vec<String> = dead
        .iter()
        .map(|m| {
            assert!(!m.header("routewatch-error").unwrap().is_empty(), "every dead letter says why");
            assert!(
                std::str::from_utf8(m.header("routewatch-source").unwrap()).unwrap().starts_with("router-metrics/")
            );
            assert!(bad.iter().any(|(_, payload)| payload.as_bytes() == m.payload), "original bytes kept");
            String::from_utf8(m.header("routewatch-error-kind").unwrap().to_vec()).unwrap()
        })
        .collect();
    kinds.sort();
    let mut expected: Vec<String> = bad.iter().map(|(kind, _)| kind.to_string()).collect();
    expected.sort();
    assert_eq!(kinds, expected);
    let metrics = pipeline.metrics().encode();
    assert_eq!(metric_sum(&metrics, "routewatch_dead_letters_total"), bad.len() as f64, "{metrics}");
    pipeline.shutdown().unwrap();
}

/// How the broker goes away for twenty seconds.
#[derive(Clone, Copy)]
enum Outage {
    /// SIGSTOP, then SIGCONT: connections stay open and nothing answers.
    Frozen,
    /// SIGKILL, then a new broker process on the same data directory.
    Restarted,
}

#[test]
fn a_broker_frozen_for_twenty_seconds_loses_nothing() {
    a_broker_outage_of_twenty_seconds_loses_nothing(Outage::Frozen);
}

#[test]
fn a_broker_killed_and_restarted_on_its_data_after_twenty_seconds_loses_nothing() {
    a_broker_outage_of_twenty_seconds_loses_nothing(Outage::Restarted);
}

fn a_broker_outage_of_twenty_seconds_loses_nothing(outage: Outage) {
    let mut broker = Broker::start();
    topics(&broker);
    let producer = producer(&broker);
    let before = fleet(20, 0..100);
    produce(&producer, &before);
    let pipeline = Host::start(config(&broker, "outage", "routewatch_test_evil", mark())).unwrap();
    await_marked(&broker, &keys(&before), Duration::from_secs(90));

    match outage {
        Outage::Frozen => broker.pause(),
        Outage::Restarted => broker.kill(),
    }
    // The outage itself: records produced meanwhile wait in the producer's queue.
    let during = fleet(20, 100..200);
    let sender = {
        let records = during.clone();
        std::thread::spawn(move || produce(&producer, &records))
    };
    std::thread::sleep(Duration::from_secs(20));
    match outage {
        Outage::Frozen => broker.resume(),
        Outage::Restarted => broker.restart(),
    }
    sender.join().unwrap();

    // Every record, from before the outage and during it, is marked on the anomalies topic.
    let mut all = keys(&before);
    all.extend(keys(&during));
    await_marked(&broker, &all, Duration::from_secs(120));
    assert!(!pipeline.is_finished(), "the host rode out the outage");
    pipeline.shutdown().unwrap();
}

#[test]
fn the_host_creates_its_topics_with_their_settings() {
    let broker = Broker::start();
    common::fleet::logs();
    // No topic exists, and the broker creates none by itself.
    assert!(broker.describe_topic("router-metrics").is_none());
    let pipeline =
        Host::start(HostConfig { retention_hours: 5, ..config(&broker, "create", "routewatch_test_evil", mark()) })
            .unwrap();
    for topic in ["router-metrics", "router-anomalies", "router-metrics-dlq"] {
        let (partitions, settings) = broker.describe_topic(topic).unwrap_or_else(|| panic!("{topic} was not created"));
        assert_eq!(partitions, PARTITIONS as usize, "{topic}");
        assert_eq!(settings["retention.ms"], (5 * 3_600_000).to_string(), "{topic}");
        assert_eq!(settings["cleanup.policy"], "delete", "{topic}");
    }
    let (partitions, settings) = broker.describe_topic("routewatch-state").expect("the state topic was created");
    assert_eq!(partitions, 1);
    assert_eq!(settings["cleanup.policy"], "compact");
    assert_eq!(settings["max.message.bytes"], "67108864");
    assert_eq!(settings["segment.ms"], "3600000");
    // And the host works on what it created.
    let records = fleet(5, 0..20);
    produce(&producer(&broker), &records);
    await_marked(&broker, &keys(&records), Duration::from_secs(90));
    pipeline.shutdown().unwrap();
}

#[test]
fn a_host_killed_mid_stream_and_restarted_loses_no_record() {
    let broker = Broker::start();
    topics(&broker);
    let producer = producer(&broker);
    let all = fleet(50, 0..400);
    let stop = Arc::new(AtomicBool::new(false));
    // Records keep arriving, before, during and after the crash.
    let sender = {
        let (records, stop) = (all.clone(), stop.clone());
        std::thread::spawn(move || {
            for chunk in records.chunks(500) {
                produce(&producer, chunk);
                if !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
    };
    let mut host = host_process(&broker, "crash", &[]);
    // Wait until the host is well into the stream, then kill it without warning.
    let first: HashSet<(String, i64)> = keys(&all[..2000]);
    await_marked(&broker, &first, Duration::from_secs(120));
    host.kill().expect("SIGKILL");
    host.wait().unwrap();
    let started = Instant::now();
    let mut host = host_process(&broker, "crash", &[]);
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();

    await_marked(&broker, &keys(&all), Duration::from_secs(180));
    eprintln!("all {} records processed {:?} after the restart", all.len(), started.elapsed());
    host.kill().unwrap();
    host.wait().unwrap();
}

#[test]
fn two_hosts_split_the_partitions_and_state_follows_them_classic_protocol() {
    two_hosts_split_the_partitions_and_state_follows_them(GroupProtocol::Classic);
}

#[test]
fn two_hosts_split_the_partitions_and_state_follows_them_consumer_protocol() {
    two_hosts_split_the_partitions_and_state_follows_them(GroupProtocol::Consumer);
}

/// The consumer group protocol: the classic one, or KIP-848's (the broker assigns).
#[derive(Clone, Copy)]
enum GroupProtocol {
    Classic,
    Consumer,
}

fn group_config(broker: &Broker, protocol: GroupProtocol) -> HostConfig {
    let mut config = config(broker, "pair", "routewatch_arima", None);
    if let GroupProtocol::Consumer = protocol {
        // Sessions and heartbeats are the broker's (the test broker's are 6 s and 500 ms).
        config.kafka.remove("session.timeout.ms");
        config.kafka.remove("heartbeat.interval.ms");
        config.kafka.insert("group.protocol".into(), "consumer".into());
    }
    config
}

fn two_hosts_split_the_partitions_and_state_follows_them(protocol: GroupProtocol) {
    let broker = Broker::start();
    topics(&broker);
    let producer = producer(&broker);
    produce(&producer, &fleet(40, 0..150));
    let a = Host::start(group_config(&broker, protocol)).unwrap();
    wait_for("host A holds every partition", || a.metrics().assigned_partitions.get() == i64::from(PARTITIONS));

    let b = Host::start(group_config(&broker, protocol)).unwrap();
    wait_for("the hosts split the partitions", || {
        let (x, y) = (a.metrics().assigned_partitions.get(), b.metrics().assigned_partitions.get());
        x > 0 && y > 0 && x + y == i64::from(PARTITIONS)
    });
    assert!(b.metrics().state_restores.get() > 0, "B continued from A's saved state");
    produce(&producer, &fleet(40, 150..200));
    let restores_before = a.metrics().state_restores.get();
    b.shutdown().unwrap();
    wait_for("host A takes the partitions back", || a.metrics().assigned_partitions.get() == i64::from(PARTITIONS));
    assert!(a.metrics().state_restores.get() > restores_before, "A continued from B's saved state");

    let before = a.metrics().records.get();
    let later = fleet(40, 200..210);
    produce(&producer, &later);
    wait_for("A processes the new records of every partition", || a.metrics().records.get() >= before + 400);
    a.shutdown().unwrap();
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
