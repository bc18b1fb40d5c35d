//! Against a real broker process: records and ground truth reach their topics, decode, and
//! are keyed as documented; an outage loses nothing. The broker is Tansu, the second
//! implementation: these tests only produce, and it starts in milliseconds (the simulator
//! meets Apache Kafka in deploy/check's live test).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use routewatch_simulator::engine::{Engine, FaultRequest, RuntimeConfig};
use routewatch_simulator::lock;
use routewatch_simulator::metrics::SimMetrics;
use routewatch_simulator::runner::{Pace, Runner, Stop};
use routewatch_simulator::sink::{KafkaOptions, KafkaSink, ensure_topics};
use routewatch_telemetry::{FaultEvent, FaultKind, Record};
use routewatch_testkit::Broker;

const START: i64 = 1_736_121_600_000;
const TIMEOUT: Duration = Duration::from_secs(60);

fn engine(routers: u32) -> Arc<Mutex<Engine>> {
    let config = RuntimeConfig { routers, interval_ms: 60_000, fault_rate: 0.0, ..Default::default() };
    Arc::new(Mutex::new(Engine::new(3, config, START).unwrap()))
}

fn sink(broker: &Broker, metrics: &SimMetrics) -> Box<KafkaSink> {
    Box::new(KafkaSink::new(KafkaOptions::new(broker.bootstrap()), metrics.clone()).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn records_and_faults_reach_their_topics_decoded_and_keyed() {
    let broker = Broker::tansu();
    // The simulator's own topic creation, as `routewatch-sim --brokers` does it.
    ensure_topics(&broker.bootstrap(), &[("router-metrics", 4), ("router-faults", 1)]).await.unwrap();
    ensure_topics(&broker.bootstrap(), &[("router-metrics", 4)]).await.expect("existing topics are fine");

    let engine = engine(100);
    let fault = lock(&engine)
        .inject(&FaultRequest {
            kind: FaultKind::LinkFlap,
            router: Some("rtr-000042".into()),
            duration_s: Some(120.0),
            magnitude: None,
        })
        .unwrap()
        .event;
    let metrics = SimMetrics::default();
    let ticks = 5;
    let summary = tokio::task::spawn_blocking({
        let (engine, sink) = (engine.clone(), sink(&broker, &metrics));
        let metrics = metrics.clone();
        move || Runner::new(engine, sink, metrics).run(Pace::Fast, Some(START + ticks * 60_000), &Stop::default())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(summary.records, 500);
    assert_eq!(metrics.delivered.get(), 500 + 2, "every record and both fault notices acknowledged");
    assert_eq!(metrics.delivery_errors.get(), 0);

    let messages = broker.consume("router-metrics", 500, TIMEOUT);
    let mut seen = BTreeSet::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for m in &messages {
        let record = Record::decode(&m.payload).unwrap();
        assert_eq!(m.key.as_deref(), Some(record.router.as_bytes()), "keyed by router id");
        assert!(seen.insert((record.router.clone(), record.ts)), "duplicate {} {}", record.router, record.ts);
        let p = *partition_of.entry(record.router.clone()).or_insert(m.partition);
        assert_eq!(p, m.partition, "{} moved partitions", record.router);
    }
    assert_eq!(seen.len(), 500);
    let used: BTreeSet<_> = partition_of.values().collect();
    assert_eq!(used.len(), 4, "100 routers spread over all 4 partitions");

    // Started, then ended (after two samples), both keyed by fault id with a phase header.
    let faults = broker.consume("router-faults", 2, TIMEOUT);
    let phases: Vec<_> =
        faults.iter().map(|m| String::from_utf8_lossy(m.header("phase").unwrap()).into_owned()).collect();
    assert_eq!(phases, ["started", "ended"]);
    for m in &faults {
        assert_eq!(m.key.as_deref(), Some(fault.id.as_bytes()));
        let event: FaultEvent = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            (event.id.as_str(), event.kind, event.router.as_str()),
            (fault.id.as_str(), fault.kind, "rtr-000042")
        );
    }
    let ended: FaultEvent = serde_json::from_slice(&faults[1].payload).unwrap();
    assert_eq!((ended.start, ended.end), (START, START + 120_000));
}

/// Consequences and actions share `router-faults` with the faults, keyed by their own ids,
/// told apart by the `type` header (and the payload's `type`), with a `phase` header.
#[tokio::test(flavor = "multi_thread")]
async fn consequences_and_actions_reach_the_ground_truth_topic() {
    let broker = Broker::tansu();
    broker.create_topics(&[("router-metrics", 1), ("router-faults", 1)]);
    let engine = engine(10);
    let (leak, action) = {
        let mut e = lock(&engine);
        let req = FaultRequest {
            kind: FaultKind::MemoryLeak,
            router: Some("rtr-000001".into()),
            duration_s: Some(6.0 * 3600.0),
            magnitude: Some(1.0),
        };
        let leak = e.inject(&req).unwrap().event.id;
        let req = serde_json::from_value(serde_json::json!({"action": "failover-psu"})).unwrap();
        (leak, e.act("rtr-000002", &req).unwrap().id)
    };
    let metrics = SimMetrics::default();
    tokio::task::spawn_blocking({
        let (engine, sink) = (engine.clone(), sink(&broker, &metrics));
        move || Runner::new(engine, sink, metrics).run(Pace::Fast, Some(START + 90 * 60_000), &Stop::default())
    })
    .await
    .unwrap()
    .unwrap();
    // The leak (started, ended by the crash), the crash (started, ended), the action
    // (requested, completed).
    let messages = broker.consume("router-faults", 6, TIMEOUT);
    let seen: Vec<(String, String, String)> = messages
        .iter()
        .map(|m| {
            let header = |k| m.header(k).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
            (String::from_utf8_lossy(m.key.as_deref().unwrap()).into_owned(), header("type"), header("phase"))
        })
        .collect();
    let crash = lock(&engine).consequences().all().next().expect("the leak crashed the router").clone();
    let expect = |id: &str, kind: &str, phase: &str| (id.to_owned(), kind.to_owned(), phase.to_owned());
    for wanted in [
        expect(&leak, "", "started"),
        expect(&leak, "", "ended"),
        expect(&crash.id, "consequence", "started"),
        expect(&crash.id, "consequence", "ended"),
        expect(&action, "action", "requested"),
        expect(&action, "action", "completed"),
    ] {
        assert!(seen.contains(&wanted), "{wanted:?} not in {seen:?}");
    }
    let last_of = |id: &str| messages.iter().rev().find(|m| m.key.as_deref() == Some(id.as_bytes())).unwrap();
    let c: serde_json::Value = serde_json::from_slice(&last_of(&crash.id).payload).unwrap();
    assert_eq!(
        (c["type"].as_str(), c["kind"].as_str(), c["fault"].as_str()),
        (Some("consequence"), Some("process-crash"), Some(leak.as_str()))
    );
    let a: serde_json::Value = serde_json::from_slice(&last_of(&action).payload).unwrap();
    assert_eq!((a["type"].as_str(), a["outcome"].as_str()), (Some("action"), Some("no-effect")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_delays_but_loses_nothing() {
    let broker = Broker::tansu();
    broker.create_topics(&[("router-metrics", 2), ("router-faults", 1)]);
    let engine = engine(200);
    let metrics = SimMetrics::default();
    let stop = Stop::default();
    let ticks = 50;

    broker.pause();
    let runner = std::thread::spawn({
        let (engine, sink, metrics, stop) = (engine.clone(), sink(&broker, &metrics), metrics.clone(), stop.clone());
        move || Runner::new(engine, sink, metrics).run(Pace::Fast, Some(START + ticks * 60_000), &stop)
    });
    // Wait until the runner has produced well into the outage: nothing can be acknowledged.
    let deadline = Instant::now() + TIMEOUT;
    while metrics.records.get() < 5_000 {
        assert!(Instant::now() < deadline, "runner stalled at {} records", metrics.records.get());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(metrics.delivered.get(), 0, "delivered while the broker was frozen");
    broker.resume();
    let summary = runner.join().unwrap().unwrap();
    assert_eq!(summary.records, 200 * ticks as u64);
    assert_eq!(metrics.delivered.get(), summary.records);
    let messages = broker.consume("router-metrics", summary.records as usize, TIMEOUT);
    let mut per_router: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for m in &messages {
        let r = Record::decode(&m.payload).unwrap();
        per_router.entry(r.router).or_default().push(r.ts);
    }
    assert_eq!(per_router.len(), 200);
    for (router, ts) in per_router {
        let expected: Vec<i64> = (0..ticks).map(|i| START + i * 60_000).collect();
        assert_eq!(ts, expected, "{router}: samples missing, duplicated or out of order");
    }
}
