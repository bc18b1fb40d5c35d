//! Router incidents on a real broker (Apache Kafka, `ROUTEWATCH_KAFKA_HOME`, as the other
//! broker tests): the incident stage runs beside the detectors of each partition, the forest
//! classifier names every incident's cause, and the updates go to a compacted topic keyed by
//! incident id. A host killed by SIGKILL twice, each time while incidents are open, is
//! replaced by one that restores the incident stage with the partition's state: the latest
//! state of every incident is that of a host that never crashed.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::fleet::{PARTITIONS, T0, produce, producer, router, topics};
use common::{component, kill};
use routewatch_incidents::{Change, Incident, IncidentUpdate, State};
use routewatch_telemetry::AnomalyEvent;
use routewatch_testkit::Broker;

const ROUTERS: usize = 12;
const STEPS: i64 = 500;
/// Steps where every router's CPU jumps for three samples: an incident each. The test kills
/// the host right after the first two, while those incidents are open. ARIMA has warmed up by
/// the first (its first fits come between 120 and 180 samples, spread over the series).
const WAVES: [i64; 2] = [200, 370];

fn records() -> Vec<(String, Vec<u8>)> {
    common::fleet::cpu_curves(ROUTERS, STEPS, 5, |step, _| {
        if WAVES.iter().any(|w| (*w..w + 3).contains(&step)) { 0.45 } else { 0.0 }
    })
}

/// The records are a second apart: the incident stage counts its periods in those samples. A
/// quiet period of 60 samples keeps a wave's incidents open for about 2.4 s of the test's
/// time (a sample every 40 ms), long enough to kill a host while they are.
fn config_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("routewatch-incidents-test-{}.toml", std::process::id()));
    std::fs::write(&path, "[incident_config]\ninterval_ms = 1000\nquiet_samples = 60\n").expect("config file");
    path
}

/// A `routewatch run` process: ARIMA, the evil plugin marking every record (how far the host
/// got; its anomalies score 0, below what incidents take), and the forest classifier.
fn host(broker: &Broker, group: &str) -> Child {
    let log = std::env::temp_dir().join(format!("routewatch-incidents-{group}-{}.log", std::process::id()));
    eprintln!("host log: {}", log.display());
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("host log");
    Command::new(env!("CARGO_BIN_EXE_routewatch"))
        .args(["run", "--config", config_file().to_str().unwrap()])
        .args(["--brokers", &broker.bootstrap(), "--group-id", group, "--listen", "127.0.0.1:0"])
        .args(["--plugin", component("routewatch_arima").to_str().unwrap()])
        .args(["--plugin", component("routewatch_test_evil").to_str().unwrap()])
        .args(["--plugin-config", r#"evil={"mode":"mark"}"#, "--anomalies-topic", &format!("anomalies-{group}")])
        .args(["--classifier", component("routewatch_classifier_forest").to_str().unwrap()])
        .args(["--incidents-topic", &format!("incidents-{group}")])
        .args(["--partitions", &PARTITIONS.to_string(), "--snapshot-interval-secs", "1", "--batch-records", "100"])
        .args(["--kafka", "session.timeout.ms=6000", "--kafka", "heartbeat.interval.ms=500"])
        .env("ROUTEWATCH_CACHE_DIR", std::env::temp_dir().join("routewatch-test-cache"))
        .env("ROUTEWATCH_API_TOKEN", common::TEST_TOKEN)
        .env("RUST_LOG", "warn,routewatch_host=info,routewatch_engine=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("routewatch run starts")
}

/// Waits until the host has marked every router's record at `step`.
fn await_step(broker: &Broker, group: &str, step: i64) {
    let mut missing: HashSet<String> = (0..ROUTERS).map(router).collect();
    let ts = T0 + step * 1000;
    broker.consume_until(&format!("anomalies-{group}"), Duration::from_secs(240), |m| {
        let event: AnomalyEvent = serde_json::from_slice(&m.payload).expect("anomalies are JSON");
        if event.plugin == "evil" && event.ts == ts {
            missing.remove(&event.router);
        }
        missing.is_empty()
    });
}

/// Waits until every router has an open incident of the wave at `step`, and returns their ids.
fn await_open_wave(broker: &Broker, group: &str, step: i64) -> HashSet<String> {
    let mut open = BTreeMap::new();
    let ts = T0 + step * 1000;
    broker.consume_until(&format!("incidents-{group}"), Duration::from_secs(240), |m| {
        let update: IncidentUpdate = serde_json::from_slice(&m.payload).expect("incidents are JSON");
        let i = update.incident;
        if i.opened >= ts && i.opened < ts + 3000 && i.state == State::Open {
            open.insert(i.router.clone(), i.id);
        }
        open.len() == ROUTERS
    });
    open.into_values().collect()
}

/// The latest state of every incident, by id, as compaction would keep it; checks each key.
fn latest(broker: &Broker, group: &str) -> BTreeMap<String, (Change, Incident)> {
    let mut found = BTreeMap::new();
    for m in broker.read_all(&format!("incidents-{group}"), false) {
        let update: IncidentUpdate = serde_json::from_slice(&m.payload).expect("incidents are JSON");
        assert_eq!(m.key.as_deref(), Some(update.incident.id.as_bytes()), "keyed by incident id");
        found.insert(update.incident.id.clone(), (update.change, update.incident));
    }
    found
}

#[test]
fn incidents_open_during_two_crashes_end_as_those_of_a_host_that_never_crashed() {
    let broker = Broker::start();
    topics(&broker);
    let all = records();
    let producer = producer(&broker);
    let sender = std::thread::spawn(move || {
        for chunk in all.chunks(ROUTERS) {
            produce(&producer, chunk);
            std::thread::sleep(Duration::from_millis(40));
        }
    });

    let mut open_at_kills = HashSet::new();
    let mut running = host(&broker, "crashed");
    for wave in WAVES {
        open_at_kills.extend(await_open_wave(&broker, "crashed", wave));
        kill(running);
        running = host(&broker, "crashed");
    }
    sender.join().unwrap();
    await_step(&broker, "crashed", STEPS - 1);
    kill(running);

    let running = host(&broker, "straight");
    await_step(&broker, "straight", STEPS - 1);
    kill(running);

    let (crashed, straight) = (latest(&broker, "crashed"), latest(&broker, "straight"));
    assert_eq!(open_at_kills.len(), 2 * ROUTERS, "a kill with every router's incident open, twice");
    assert!(open_at_kills.iter().all(|id| straight.contains_key(id)), "the incidents open at the kills are real");
    assert_eq!(crashed.keys().collect::<Vec<_>>(), straight.keys().collect::<Vec<_>>(), "the same incidents");
    let mut resolved = 0;
    for (id, (change, incident)) in &straight {
        assert!(incident.cause.is_some() && !incident.causes.is_empty(), "{id} has a cause: {incident:?}");
        assert!(incident.causes.len() <= 3, "top 3 at most");
        if incident.state == State::Resolved {
            resolved += 1;
            assert_eq!(*change, Change::Resolved);
            // The latest state of a resolved incident does not depend on where batches ended.
            assert_eq!(&crashed[id].1, incident, "{id} after the crashes");
        }
    }
    assert!(open_at_kills.iter().all(|id| crashed[id].1.state == State::Resolved), "the open ones resolved");
    assert!(resolved >= 2 * ROUTERS, "{resolved} resolved incidents");
    eprintln!("{} incidents, {resolved} resolved, the same after two crashes", straight.len());
}
