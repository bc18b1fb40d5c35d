//! Hot reload under load, against a real broker process (Tansu, memory storage):
//!
//! 1. Swap pause: records keep arriving from 2,000 routers while a rebuilt ARIMA is dropped into
//!    the plugin directory again and again; each partition's pause (old version's snapshot, new
//!    instance, configure, restore) is read from the host's own "took over" events.
//! 2. Drop to serving: from a component's rename into the plugin directory until every
//!    partition runs it, with a cold compile (new bytes, nothing cached) and with the compiled
//!    component already in the on-disk cache (a version this host has seen before).
//!
//! Run with `cargo xtask bench`; with `ROUTEWATCH_BENCH_WRITE=FILE` the figures replace the
//! "Plugin hot reload" section of FILE.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fleet::{producer, record};
use rdkafka::producer::FutureRecord;
use routewatch_host::{Host, HostConfig};
use routewatch_runtime::{Runtime, RuntimeConfig};
use routewatch_testkit::Broker;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

const PARTITIONS: i32 = 4;
const ROUTERS: usize = 2_000;
const SWAPS: usize = 25;

/// One "new plugin version took over" event: when, and the pause it reports.
#[derive(Clone, Copy)]
struct TookOver {
    at: Instant,
    pause: Duration,
}

/// Collects the host's swap events from its logs.
#[derive(Clone, Default)]
struct SwapLog(Arc<Mutex<Vec<TookOver>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SwapLog {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        struct Fields {
            message: bool,
            pause_us: Option<u64>,
        }
        impl Visit for Fields {
            fn record_u64(&mut self, field: &Field, value: u64) {
                if field.name() == "pause_us" {
                    self.pause_us = Some(value);
                }
            }
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" && format!("{value:?}") == "new plugin version took over" {
                    self.message = true;
                }
            }
        }
        let mut fields = Fields { message: false, pause_us: None };
        event.record(&mut fields);
        if let (true, Some(us)) = (fields.message, fields.pause_us) {
            self.0.lock().unwrap().push(TookOver { at: Instant::now(), pause: Duration::from_micros(us) });
        }
    }
}

impl SwapLog {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Waits for `n` more events after `seen`; returns the time of the last.
    fn wait(&self, seen: usize, n: usize) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            {
                let log = self.0.lock().unwrap();
                if log.len() >= seen + n {
                    return log[seen + n - 1].at;
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting for swaps");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn component(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join(format!("wasm32-wasip2/plugin/{name}.wasm"))
}

/// The component with a custom section appended: new bytes, the same code.
fn rebuilt(component: &[u8], tag: usize) -> Vec<u8> {
    let name = b"routewatch-bench";
    let payload_len = 1 + name.len() + 8;
    assert!(payload_len < 128);
    let mut bytes = component.to_vec();
    bytes.extend([0, payload_len as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&(tag as u64).to_le_bytes());
    bytes
}

/// Drops a component into the directory the way a deploy does: written aside, renamed in.
fn drop_in(dir: &Path, name: &str, bytes: &[u8]) -> Instant {
    let staging = dir.parent().unwrap().join(format!(".{name}.staging"));
    std::fs::write(&staging, bytes).unwrap();
    let at = Instant::now();
    std::fs::rename(&staging, dir.join(name)).unwrap();
    at
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let log = SwapLog::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(log.clone())
            .with(tracing_subscriber::filter::Targets::new().with_target("routewatch_host", tracing::Level::INFO)),
    )
    .unwrap();
    let load = common::load_average();
    let broker = Broker::tansu();
    broker.create_topics(&[
        ("router-metrics", PARTITIONS),
        ("router-anomalies", PARTITIONS),
        ("router-metrics-dlq", PARTITIONS),
        ("routewatch-state", 1),
    ]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("plugins");
    let cache = work.path().join("cache");
    std::fs::create_dir_all(&dir).unwrap();
    let arima = std::fs::read(component("routewatch_arima")).unwrap();
    std::fs::write(dir.join("arima.wasm"), &arima).unwrap();
    let mut config = HostConfig {
        brokers: broker.bootstrap(),
        group_id: "swap-bench".into(),
        partitions: PARTITIONS,
        plugin_dir: Some(dir.clone()),
        cache_dir: Some(cache.clone()),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_token: Some("bench-token-0123456789".into()),
        ..HostConfig::default()
    };
    config.kafka.insert("session.timeout.ms".into(), "6000".into());
    config.plugin_config.insert("arima".into(), serde_json::json!({"warmup": 30, "window": 120}));
    let pipeline = Host::start(config).unwrap();

    // Load: every router once every 100 ms (20,000 records/s), until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (producer, stop) = (producer(&broker), stop.clone());
        std::thread::spawn(move || {
            let mut step = 0usize;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                for router in 0..ROUTERS {
                    let payload = record(router, 1_764_000_000_000 + step as i64 * 1000, step);
                    let key = format!("rtr-{router:06}");
                    while producer.send_result(FutureRecord::to("router-metrics").key(&key).payload(&payload)).is_err()
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                step += 1;
                let next = started + Duration::from_millis(100) * step as u32;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    // Past the warm-up, so every partition holds fitted state for its routers.
    std::thread::sleep(Duration::from_secs(8));

    // Cold compiles: bytes never seen, so each is compiled by Cranelift.
    let mut pauses = Vec::new();
    let mut cold = Vec::new();
    for tag in 1..=SWAPS {
        let seen = log.len();
        let dropped = drop_in(&dir, "arima.wasm", &rebuilt(&arima, tag));
        let serving = log.wait(seen, PARTITIONS as usize);
        cold.push(serving - dropped);
        pauses.extend(log.0.lock().unwrap()[seen..].iter().map(|e| e.pause));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Cached: versions this host's cache already holds (compiled by a second runtime sharing
    // the cache directory, as a previous run or a rollback would have).
    let precompile = Runtime::new(RuntimeConfig { cache_dir: Some(cache), ..Default::default() }).unwrap();
    let mut cached = Vec::new();
    for tag in 1000..1000 + SWAPS {
        let bytes = rebuilt(&arima, tag);
        precompile.load(&bytes).unwrap();
        let seen = log.len();
        let dropped = drop_in(&dir, "arima.wasm", &bytes);
        let serving = log.wait(seen, PARTITIONS as usize);
        cached.push(serving - dropped);
        pauses.extend(log.0.lock().unwrap()[seen..].iter().map(|e| e.pause));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let records = pipeline.metrics().records.get();
    pipeline.shutdown().unwrap();

    pauses.sort_unstable();
    cold.sort_unstable();
    cached.sort_unstable();
    let summary = |v: &[Duration]| {
        format!("p50 {}, p99 {}, max {}", ms(percentile(v, 0.5)), ms(percentile(v, 0.99)), ms(*v.last().unwrap()))
    };
    eprintln!("swap pause ({} swaps): {}", pauses.len(), summary(&pauses));
    eprintln!("drop to serving, cold: {}", summary(&cold));
    eprintln!("drop to serving, cached: {}", summary(&cached));

    let report = format!(
        "## Plugin hot reload\n\n\
         Command: `cargo xtask bench` (bench `host/benches/plugin_swap.rs`)  \n\
         Machine: {machine}; broker, producer and host share it. Load average before the run: {load}.  \n\
         Setup: ARIMA ({size} KB component) on {PARTITIONS} partitions, {ROUTERS} routers sending a record every \
         100 ms (20,000 records/s, {records} records in all during the run); a rebuilt ARIMA (new bytes, same \
         code) renamed into the plugin directory {swaps} times, {SWAPS} cold and {SWAPS} cached.\n\n\
         | measurement | result | target |\n|---|---|---|\n\
         | swap pause per partition (old version's snapshot, new instance, configure, restore), {n} swaps under \
         load | **{pause}** | p99 under 20 ms |\n\
         | file dropped to the new version serving on every partition, cold compile | **{cold}** | under 2 s |\n\
         | file dropped to the new version serving on every partition, compiled component cached | **{cached}** | \
         under 100 ms |\n",
        machine = common::machine(),
        size = arima.len() / 1024,
        swaps = 2 * SWAPS,
        n = pauses.len(),
        pause = summary(&pauses),
        cold = summary(&cold),
        cached = summary(&cached),
    );
    println!("{report}");
    if let Some(path) = std::env::var_os("ROUTEWATCH_BENCH_WRITE") {
        common::write_section(Path::new(&path), "## Plugin hot reload", &report).expect("writing BENCHMARKS.md");
    }
}
