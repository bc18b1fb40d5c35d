//! State is exact after a crash: a host killed by SIGKILL, twice, mid-stream, is replaced by
//! one that restores the last snapshot, reads on from the snapshot's own offset, and delivers
//! nothing its predecessor had delivered. Its detectors see every record once, in order, so
//! the anomalies are those of a host that never crashed: compared by router, metric,
//! timestamp, plugin and score (bit for bit).
//!
//! Under both guarantees: at-least-once may deliver again what the last commit before a kill
//! did not cover; exactly-once, read `read_committed`, delivers nothing twice.
//!
//! The detectors include fleet-outlier, whose scores depend on where batches end: the hosts
//! cut their batches where their records happened to arrive (live, then a backlog after each
//! restart), and the engine ends every batch at a timestamp.
//!
//! Run on Apache Kafka (`ROUTEWATCH_KAFKA_HOME`, as the other broker tests).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::fleet::{PARTITIONS, T0, produce, producer, router, topics};
use common::{component, kill};
use routewatch_telemetry::AnomalyEvent;
use routewatch_testkit::Broker;

const ROUTERS: usize = 24;
const STEPS: i64 = 420;
/// Steps where every router spikes; the test waits for the marks of the first two before each
/// kill, and for those of the last step, which prove a run has read everything.
const WAVES: [i64; 3] = [160, 290, STEPS - 1];

/// A noisy daily curve per router, with a spike for every router at each wave and a few
/// smaller ones of its own, so that ARIMA reports anomalies before, between and after kills.
fn records() -> Vec<(String, Vec<u8>)> {
    common::fleet::cpu_curves(ROUTERS, STEPS, 11, |step, r| {
        if WAVES.contains(&step) {
            0.45
        } else if (step + r as i64 * 17) % 97 == 0 && step > 120 {
            0.2
        } else {
            0.0
        }
    })
}

/// A `routewatch run` process running ARIMA, fleet-outlier (which compares the routers of a
/// timestamp within a batch: exact only because batches end at timestamps, however a host
/// cuts them), and the evil plugin in `mark` mode (an anomaly for every record: how far a host
/// got, whatever the others find), its anomalies to `anomalies`.
fn host(broker: &Broker, group: &str, anomalies: &str, guarantee: &str) -> Child {
    let arima = component("routewatch_arima");
    let fleet = component("routewatch_fleet_outlier");
    let evil = component("routewatch_test_evil");
    Command::new(env!("CARGO_BIN_EXE_routewatch"))
        .args(["run", "--brokers", &broker.bootstrap(), "--group-id", group, "--listen", "127.0.0.1:0"])
        .args(["--plugin", arima.to_str().unwrap(), "--anomalies-topic", anomalies])
        // Six routers a partition, judged against five peers, and sensitive enough to report
        // the routers' own spikes on their daily curves (at the defaults it reports none here).
        .args(["--plugin", fleet.to_str().unwrap()])
        .args(["--plugin-config", r#"fleet-outlier={"min_peers":5,"threshold":2,"min_spread":0.5}"#])
        .args(["--plugin", evil.to_str().unwrap(), "--plugin-config", r#"evil={"mode":"mark"}"#])
        .args(["--partitions", &PARTITIONS.to_string(), "--snapshot-interval-secs", "1", "--batch-records", "100"])
        .args(["--kafka", "session.timeout.ms=6000", "--kafka", "heartbeat.interval.ms=500"])
        .args(["--processing-guarantee", guarantee])
        .env("ROUTEWATCH_CACHE_DIR", std::env::temp_dir().join("routewatch-test-cache"))
        .env("ROUTEWATCH_API_TOKEN", common::TEST_TOKEN)
        .env("RUST_LOG", "warn,routewatch=info,routewatch_host=info,routewatch_engine=info")
        .stdout(Stdio::null())
        .stderr(log(group))
        .spawn()
        .expect("routewatch run starts")
}

/// The host's log, in the temporary directory (named in the test's output).
fn log(group: &str) -> Stdio {
    let path = std::env::temp_dir().join(format!("routewatch-exact-state-{group}-{}.log", std::process::id()));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("host log");
    eprintln!("host log: {}", path.display());
    file.into()
}

/// Waits until `topic` holds the mark of every router at `step`.
fn await_wave(broker: &Broker, topic: &str, step: i64) {
    let mut missing: HashSet<String> = (0..ROUTERS).map(router).collect();
    let ts = T0 + step * 1000;
    broker.consume_until(topic, Duration::from_secs(240), |m| {
        let event: AnomalyEvent = serde_json::from_slice(&m.payload).expect("anomalies are JSON");
        if event.plugin == "evil" && event.metric == "cpu_util" && event.ts == ts {
            missing.remove(&event.router);
        }
        missing.is_empty()
    });
}

/// What the comparison looks at, with how often each appears.
type Key = (String, String, i64, String, u64);

fn anomalies(broker: &Broker, topic: &str) -> BTreeMap<Key, usize> {
    let mut found = BTreeMap::new();
    for m in broker.read_all(topic, true) {
        let e: AnomalyEvent = serde_json::from_slice(&m.payload).expect("anomalies are JSON");
        *found.entry((e.router, e.metric, e.ts, e.plugin, e.score.to_bits())).or_insert(0) += 1;
    }
    found
}

#[test]
fn a_host_killed_twice_mid_stream_finds_exactly_the_anomalies_of_one_that_never_crashed() {
    killed_twice("at-least-once");
}

#[test]
fn exactly_once_a_host_killed_twice_finds_the_same_anomalies_each_once() {
    killed_twice("exactly-once");
}

/// Runs the stream through a host killed twice and through one that never crashed, under
/// `guarantee`, and compares their anomalies.
fn killed_twice(guarantee: &str) {
    let broker = Broker::start();
    topics(&broker);
    let all = records();
    let producer = producer(&broker);
    // Records keep arriving while the first host runs and is killed.
    let sender = std::thread::spawn(move || {
        for chunk in all.chunks(ROUTERS * 2) {
            produce(&producer, chunk);
            std::thread::sleep(Duration::from_millis(40));
        }
    });

    let crashed = "anomalies-crashed";
    let mut running = host(&broker, "crashed", crashed, guarantee);
    for wave in &WAVES[..2] {
        await_wave(&broker, crashed, *wave);
        kill(running);
        running = host(&broker, "crashed", crashed, guarantee);
    }
    sender.join().unwrap();
    await_wave(&broker, crashed, WAVES[2]);
    kill(running);

    let straight = "anomalies-straight";
    let running = host(&broker, "straight", straight, guarantee);
    await_wave(&broker, straight, WAVES[2]);
    kill(running);

    let (crashed, straight) = (anomalies(&broker, crashed), anomalies(&broker, straight));
    let arima = straight.keys().filter(|k| k.3 == "arima").count();
    let fleet = straight.keys().filter(|k| k.3 == "fleet-outlier").count();
    assert!(arima >= ROUTERS, "ARIMA finds anomalies to compare: {arima}");
    assert!(fleet >= 5, "fleet-outlier finds anomalies to compare: {fleet}");
    assert_eq!(straight.len() - arima - fleet, ROUTERS * STEPS as usize, "a mark for every record");
    assert!(straight.values().all(|&n| n == 1), "an uninterrupted host delivers each anomaly once");
    let missing: Vec<&Key> = straight.keys().filter(|k| !crashed.contains_key(*k)).collect();
    let extra: Vec<&Key> = crashed.keys().filter(|k| !straight.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing after the crashes: {missing:?}\nonly after: {extra:?}");
    let repeated: usize = crashed.values().map(|n| n - 1).sum();
    eprintln!(
        "{} anomalies ({arima} of ARIMA, {fleet} of fleet-outlier), the same in both runs; {repeated} delivered twice across the two kills",
        straight.len()
    );
    // Twice is possible only for outputs delivered after the last commit that reached the broker
    // before a kill (commits go every 20 ms; under load their round trip adds more). Without the
    // suppression a restart repeats everything since the restored snapshot: in this test, most
    // of the crashed run's outputs between the snapshots and the kills.
    assert!(repeated <= straight.len() / 5, "{repeated} of {} outputs delivered twice", straight.len());
    if guarantee == "exactly-once" {
        // Each batch's outputs commit with its commit point in one transaction: nothing twice.
        assert_eq!(repeated, 0, "exactly-once delivered {repeated} outputs twice");
    }
}
