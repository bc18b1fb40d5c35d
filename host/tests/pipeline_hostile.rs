//! Hostile plugins against the streaming host on a real broker: state too big for one record,
//! a snapshot over its cap, and a plugin that is slow on one partition only. Each test fails
//! when the guarantee it names is broken.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::fleet::{PARTITIONS, await_marked, keys, producer, record, router, topics};
use common::{TEST_TOKEN, component, metric_sum, wait_for};
use rdkafka::producer::{FutureProducer, FutureRecord};
use routewatch_host::{Host, HostConfig};
use routewatch_testkit::Broker;
use serde_json::json;

/// The tests here measure throughput: they run one at a time, not beside each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config(broker: &Broker, group: &str, evil: serde_json::Value) -> HostConfig {
    let mut config = HostConfig {
        brokers: broker.bootstrap(),
        group_id: group.into(),
        partitions: PARTITIONS,
        plugins: vec![component("routewatch_test_evil")],
        listen: "127.0.0.1:0".parse().unwrap(),
        api_token: Some(TEST_TOKEN.into()),
        linger_ms: 20,
        snapshot_interval_secs: 1,
        ..HostConfig::default()
    };
    config.plugin_config.insert("evil".into(), evil);
    config.kafka.insert("session.timeout.ms".into(), "6000".into());
    config.kafka.insert("heartbeat.interval.ms".into(), "500".into());
    config
}

/// Records `routers` x `steps` for explicit partitions: router `r` goes to partition
/// `r % PARTITIONS`, and `value` is its `bgp_up`.
fn records(routers: std::ops::Range<usize>, steps: std::ops::Range<i64>) -> Vec<(i32, String, Vec<u8>)> {
    steps
        .flat_map(|s| routers.clone().map(move |r| ((r % PARTITIONS as usize) as i32, router(r), record(r, s, 0.5))))
        .collect()
}

fn produce_to(producer: &FutureProducer, records: &[(i32, String, Vec<u8>)]) {
    let deliveries: Vec<_> = records
        .iter()
        .map(|(partition, key, payload)| {
            loop {
                let record = FutureRecord::to("router-metrics").partition(*partition).key(key).payload(payload);
                match producer.send_result(record) {
                    Ok(delivery) => break delivery,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
        .collect();
    for delivery in futures::executor::block_on(futures::future::join_all(deliveries)) {
        delivery.expect("delivery report").expect("delivered");
    }
}

fn marked(records: &[(i32, String, Vec<u8>)]) -> HashSet<(String, i64)> {
    keys(&records.iter().map(|(_, k, v)| (k.clone(), v.clone())).collect::<Vec<_>>())
}

/// Partition state larger than a Kafka record is saved in chunks and read back by the next
/// owner; a snapshot over `max_snapshot_mib` is the plugin's failure (it is quarantined), and
/// neither stalls the stream or the shutdown.
#[test]
fn big_state_is_saved_in_chunks_and_an_oversized_snapshot_is_a_plugin_failure() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let broker = Broker::start();
    topics(&broker);
    let producer = producer(&broker);
    let mut config = config(&broker, "big-state", json!({"mode": "big-snapshot", "snapshot_mib": 3}));
    config.max_snapshot_mib = 4;
    let host = Host::start(config.clone()).unwrap();
    let first = records(0..4, 0..20);
    produce_to(&producer, &first);
    wait_for("every partition to save its 3 MiB state", Duration::from_secs(60), || {
        let exposition = host.metrics().encode();
        let sizes = common::metric_samples(&exposition, "routewatch_state_bytes", &[]);
        sizes.len() == PARTITIONS as usize && sizes.iter().all(|&b| b > f64::from(3 << 20))
    });
    let readyz = ureq::get(&format!("http://{}/readyz", host.http_addr())).call().unwrap();
    assert_eq!(readyz.status().as_u16(), 200);
    let started = Instant::now();
    host.shutdown().expect("shutdown finishes");
    assert!(started.elapsed() < Duration::from_secs(30), "shutdown took {:?}", started.elapsed());

    // The next owner reads every partition's state back, from its chunks.
    let host = Host::start(config.clone()).unwrap();
    wait_for("the states to be restored", Duration::from_secs(60), || {
        metric_sum(&host.metrics().encode(), "routewatch_state_restores_total") >= f64::from(PARTITIONS)
    });

    // Now over the cap: every save is a failure of the plugin, which is quarantined, while
    // records keep being processed and saved without the plugin's new snapshot.
    let base = format!("http://{}", host.http_addr());
    let response = ureq::put(&format!("{base}/api/v1/plugins/evil/config"))
        .header("Authorization", &format!("Bearer {TEST_TOKEN}"))
        .send_json(json!({"mode": "big-snapshot", "snapshot_mib": 5}))
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    produce_to(&producer, &records(0..4, 20..40));
    wait_for("the plugin to be quarantined for its snapshots", Duration::from_secs(60), || {
        host.registry().get("evil").is_some_and(|s| s.state == "quarantined")
    });
    let exposition = host.metrics().encode();
    assert!(metric_sum(&exposition, "routewatch_plugin_oversized_snapshots_total") >= 3.0, "{exposition}");
    assert_eq!(metric_sum(&exposition, "routewatch_state_save_failures_total"), 0.0, "{exposition}");
    let started = Instant::now();
    host.shutdown().expect("shutdown finishes");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A plugin that is slow on one partition's records only: that partition is paused while its
/// worker catches up, and the others keep their throughput.
#[test]
fn a_slow_partition_does_not_hold_up_the_others() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let broker = Broker::start();
    topics(&broker);
    let producer = producer(&broker);
    // Batches holding the marker value (bgp_up = 777) cost about 100 ms of CPU; others nothing.
    let mut config = config(&broker, "slow", json!({"mode": "busy", "marker": 777.0, "spins": 100_000_000}));
    config.batch_records = 200;
    let host = Host::start(config).unwrap();
    // The fast partitions' time for 6,000 records, best of five rounds (the machine is noisy).
    let mut step = 50;
    let mut time_fast = || {
        (0..5)
            .map(|_| {
                let batch = records(1..4, step..step + 2000);
                step += 2000;
                let started = Instant::now();
                produce_to(&producer, &batch);
                await_marked(&broker, &marked(&batch), Duration::from_secs(120));
                started.elapsed()
            })
            .min()
            .unwrap()
    };
    let warm = records(1..4, 0..50);
    produce_to(&producer, &warm);
    await_marked(&broker, &marked(&warm), Duration::from_secs(120));
    // The slow plugin will keep one core busy, and on a small machine that alone slows
    // everything else. So the baseline is taken beside a thread that spins just as hard: what
    // is compared is then only whether the fast partitions wait for the slow one (a blocked
    // consumer waits behind the slow backlog, tens of seconds of work), not the core count.
    let spinning = Arc::new(AtomicBool::new(true));
    let hog = {
        let spinning = spinning.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while spinning.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
    };
    let alone = time_fast();
    spinning.store(false, Ordering::Relaxed);
    hog.join().unwrap();

    // Partition 0 gets 100,000 slow records: more than its worker's queue holds, and more than
    // it works through while the fast partitions are timed again.
    let slow: Vec<(i32, String, Vec<u8>)> = (0..100_000)
        .map(|step| {
            let mut value: serde_json::Value = serde_json::from_slice(&record(0, step, 0.5)).unwrap();
            value["metrics"]["bgp_up"] = json!(777.0);
            (0, router(0), serde_json::to_vec(&value).unwrap())
        })
        .collect();
    produce_to(&producer, &slow);
    wait_for("partition 0 to be paused", Duration::from_secs(60), || {
        metric_sum(host.metrics().encode().as_str(), "routewatch_partition_pauses_total") >= 1.0
    });
    let loaded = time_fast();
    // Partition 0 was behind all along: its records are not all done yet.
    let done = metric_sum(&host.metrics().encode(), "routewatch_records_done_total");
    let produced = (warm.len() + 10 * 6000 + slow.len()) as f64;
    assert!(
        done < produced - 10_000.0,
        "the slow partition caught up ({done} of {produced} done): nothing was measured"
    );
    // Throughput kept = time beside a busy core / time beside the slow partition. Seen here:
    // 46% to 243% on two cores from one run to the next (the best of five rounds of well under
    // a second each; the rest is the consumer's own work on partition 0's records, fetching and
    // decoding them before it parks them, which the spinning thread does not do). A consumer
    // blocked behind the slow partition would wait for its backlog: tens of seconds, under 5%.
    // With other builds on the machine it fell to 25% once. So the bar is at a tenth: below
    // the noise, and still twice a stall.
    let kept = alone.as_secs_f64() / loaded.as_secs_f64();
    eprintln!(
        "fast partitions: {alone:?} beside a busy core, {loaded:?} beside a slow partition ({:.0}% kept)",
        kept * 100.0
    );
    assert!(
        kept >= 0.10,
        "the fast partitions kept {:.0}% of their throughput ({alone:?} vs {loaded:?})",
        kept * 100.0
    );
    drop(host);
}
