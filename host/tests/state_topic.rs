//! The compacted state topic on Apache Kafka: compaction really runs and keeps each
//! partition's latest state, and a host restoring a partition reads the newest record of its
//! key, whatever tombstones or records of another layout are in the log.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::fleet::{PARTITIONS, await_marked, config, fleet, keys, logs, mark, produce, producer};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use routewatch_host::Host;
use routewatch_host::kafka::{LEGACY_STATE_VERSION, PartitionState, RouterInfo, StateStore, state_key};
use routewatch_telemetry::AnomalyEvent;
use routewatch_testkit::Broker;

/// Topic settings under which the log cleaner compacts within seconds: segments roll every
/// 200 ms of writes, any dirty share is worth cleaning, nothing is too young to compact, and
/// tombstones go after a second. (The test broker's cleaner looks for work every 500 ms.)
const QUICK_COMPACTION: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("max.message.bytes", "67108864"),
    ("segment.ms", "200"),
    ("min.cleanable.dirty.ratio", "0.01"),
    ("min.compaction.lag.ms", "0"),
    ("delete.retention.ms", "1000"),
];

fn topics_with_quick_compaction(broker: &Broker) {
    logs();
    broker.create_topics(&[
        ("router-metrics", PARTITIONS),
        ("router-anomalies", PARTITIONS),
        ("router-metrics-dlq", PARTITIONS),
    ]);
    broker.create_topics_with(&[("routewatch-state", 1, QUICK_COMPACTION)]);
}

/// Every record of the state topic, oldest first: (offset, key, payload).
fn read_state_topic(broker: &Broker) -> Vec<(i64, String, Option<Vec<u8>>)> {
    let mut records = Vec::new();
    let consumer: BaseConsumer = broker.consumer_config("state-check").create().unwrap();
    let (_, high) = consumer.fetch_watermarks("routewatch-state", 0, Duration::from_secs(10)).unwrap();
    if high == 0 {
        return records;
    }
    broker.consume_until("routewatch-state", Duration::from_secs(30), |m| {
        let key = String::from_utf8(m.key.clone().unwrap_or_default()).unwrap();
        let done = m.offset + 1 >= high;
        records.push((m.offset, key, (!m.payload.is_empty()).then(|| m.payload.clone())));
        done
    });
    records
}

fn high_watermark(broker: &Broker, topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = broker.consumer_config("watermarks").create().unwrap();
    consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap().1
}

#[test]
fn compaction_keeps_each_partitions_latest_state_after_many_snapshots() {
    let broker = Broker::start();
    topics_with_quick_compaction(&broker);
    let producer = producer(&broker);
    let pipeline = Host::start(config(&broker, "compact", "routewatch_test_evil", mark())).unwrap();
    // Records keep coming for a while; every partition saves its state every second.
    let mut written = Vec::new();
    let started = Instant::now();
    let mut step = 0;
    while pipeline.metrics().state_snapshots.get() < 60 {
        assert!(started.elapsed() < Duration::from_secs(120), "too few snapshots were written");
        let records = fleet(20, step..step + 5);
        produce(&producer, &records);
        written.extend(records);
        step += 5;
        std::thread::sleep(Duration::from_millis(200));
    }
    await_marked(&broker, &keys(&written), Duration::from_secs(60));
    pipeline.shutdown().unwrap();
    let snapshots = high_watermark(&broker, "routewatch-state", 0);
    assert!(snapshots >= 60, "{snapshots} snapshots");

    // The active segment is never cleaned: after the final states, roll it with a record of
    // another key once the segment's time is up, then wait for the cleaner.
    std::thread::sleep(Duration::from_millis(300));
    let roll: FutureProducer = producer;
    futures::executor::block_on(
        roll.send(FutureRecord::to("routewatch-state").key("roll").payload("x"), Duration::from_secs(10)),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let records = loop {
        let records = read_state_topic(&broker);
        let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, key, _) in &records {
            *per_key.entry(key).or_default() += 1;
        }
        if per_key.values().all(|&n| n == 1) {
            break records;
        }
        assert!(Instant::now() < deadline, "not compacted after 90 s: {per_key:?} in {} records", records.len());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(records.first().is_some_and(|(offset, _, _)| *offset > 0), "the cleaner removed the oldest records");
    // One manifest per partition's key, and what the host's own reader makes of the compacted
    // topic is the state saved last: at the partition's end.
    let store = StateStore::new(&config(&broker, "compact", "routewatch_test_evil", mark())).unwrap();
    let states = store.load(&(0..PARTITIONS).collect::<Vec<_>>()).unwrap().states;
    for partition in 0..PARTITIONS {
        let key = state_key("compact", "router-metrics", partition);
        assert!(records.iter().any(|(_, k, _)| *k == key), "no manifest for {key}");
        let state = states.get(&partition).unwrap_or_else(|| panic!("no state read back for {key}"));
        assert_eq!(state.next_offset, high_watermark(&broker, "router-metrics", partition), "{key}");
        assert!(!state.routers.is_empty());
    }
    eprintln!("{snapshots} snapshots compacted to {} records", records.len());
}

fn state(next_offset: i64, site: &str, version: u32) -> Vec<u8> {
    let routers = vec![RouterInfo { name: "rtr-restore".into(), site: site.into(), role: "core".into() }];
    let mut state = PartitionState::new(next_offset, routers, Vec::new());
    state.version = version;
    postcard::to_stdvec(&state).unwrap()
}

#[test]
fn a_restoring_host_reads_the_newest_state_past_tombstones_and_older_layouts() {
    let broker = Broker::start();
    topics_with_quick_compaction(&broker);
    let producer = producer(&broker);
    let key = |p: i32| state_key("restore", "router-metrics", p);
    // Per partition, in this order: what the log holds for its key. The states are single
    // records of the first layout (still read); `old` is a layout no host reads.
    let (current, old) = (LEGACY_STATE_VERSION, LEGACY_STATE_VERSION - 1);
    // Every state is as of offset 0, so the one record of each partition (below) is one it has
    // not seen: a host skips the records before its restored state's offset.
    let log: Vec<(i32, Option<Vec<u8>>)> = vec![
        (0, Some(state(0, "older", current))),
        (0, Some(state(0, "newest", current))),
        (1, Some(state(0, "deleted", current))),
        (1, None),
        (2, Some(state(0, "superseded", current))),
        (2, Some(state(0, "other-layout", old))),
        (3, None),
        (3, Some(state(0, "after-tombstone", current))),
    ];
    for (partition, payload) in &log {
        let key = key(*partition);
        let mut record = FutureRecord::<str, [u8]>::to("routewatch-state").key(&key);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        futures::executor::block_on(producer.send(record, Duration::from_secs(10))).unwrap();
    }
    // One record of the router on each partition; the site it is reported with is the one the
    // restored router table holds (a fresh table takes the record's own site, `site0`).
    for partition in 0..PARTITIONS {
        let payload = common::fleet::record(0, partition as i64, 0.5);
        let payload = String::from_utf8(payload).unwrap().replace("rtr-000000", "rtr-restore");
        futures::executor::block_on(producer.send(
            FutureRecord::to("router-metrics").key("rtr-restore").partition(partition).payload(&payload),
            Duration::from_secs(10),
        ))
        .unwrap();
    }
    let pipeline = Host::start(config(&broker, "restore", "routewatch_test_evil", mark())).unwrap();
    let mut sites = BTreeMap::new();
    broker.consume_until("router-anomalies", Duration::from_secs(90), |m| {
        let event: AnomalyEvent = serde_json::from_slice(&m.payload).unwrap();
        // The record sent to partition p has the timestamp of step p.
        if event.metric == "cpu_util" {
            sites.insert((event.ts - common::fleet::T0) / 1000, event.site.unwrap());
        }
        sites.len() == PARTITIONS as usize
    });
    let sites: Vec<&str> = sites.values().map(String::as_str).collect();
    assert_eq!(sites, ["newest", "site0", "site0", "after-tombstone"]);
    assert_eq!(pipeline.metrics().state_restores.get(), 2);
    pipeline.shutdown().unwrap();
}
