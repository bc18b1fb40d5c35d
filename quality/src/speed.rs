//! Points per second through Wasm, per detector, on simulator data.
//!
//! The fleet is simulated in-process (fault-free), one batch per tick holding every router's
//! sample (ten metrics), as the streaming host hands them over. Each detector first sees
//! `warmup_ticks` untimed, so its models are fitted; then `timed_ticks` are timed, refits
//! included. Seasonal runs with a one-hour period and two-hour window here: the same refit work
//! per sample as the daily default (a window of two periods refitted once a period), without
//! two days of warm-up.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use routewatch_runtime::{Batch, Column, Limits, Runtime, RuntimeConfig};
use routewatch_simulator::{Engine, RuntimeConfig as SimConfig};
use routewatch_telemetry::Metric;

use crate::{DETECTORS, SnapshotArgs, SpeedArgs, dataset::START_MS, default_plugin_dir, report::replace_section};

const SEASONAL_BENCH_CONFIG: &str = r#"{"period": 60, "window": 120, "refit_every": 60}"#;

fn batches(routers: u32, ticks: usize) -> Result<Vec<Batch>> {
    let config = SimConfig { routers, interval_ms: 60_000, fault_rate: 0.0, ..Default::default() };
    let mut engine = Engine::new(7, config, START_MS).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = Vec::with_capacity(ticks);
    for t in 0..ticks {
        let ts = START_MS + t as i64 * 60_000;
        engine.tick(ts);
        let records = engine.records();
        let columns = Metric::ALL
            .iter()
            .map(|&m| Column { metric: m.name().into(), values: records.iter().map(|r| r.metrics.get(m)).collect() })
            .collect();
        out.push(Batch { routers: (0..routers).collect(), timestamps: vec![ts; records.len()], columns });
    }
    Ok(out)
}

pub fn run(args: &SpeedArgs) -> Result<()> {
    let plugin_dir = plugin_dir(args.plugins.as_ref())?;
    let all = batches(args.routers, args.warmup_ticks + args.timed_ticks)?;
    let (warm, timed) = all.split_at(args.warmup_ticks);
    let points_per_tick = args.routers as usize * Metric::ALL.len();
    let runtime = bench_runtime()?;
    let mut table = String::new();
    for (stem, name) in DETECTORS {
        let plugin = crate::load_component(&runtime, &plugin_dir, stem)?;
        let mut instance = plugin.instantiate()?;
        let config = if name == "seasonal" { Some(SEASONAL_BENCH_CONFIG) } else { None };
        if let Some(config) = config {
            instance.configure(config)?;
        }
        for batch in warm {
            instance.process(batch)?;
        }
        let started = Instant::now();
        let mut anomalies = 0;
        for batch in timed {
            anomalies += instance.process(batch)?.anomalies.len();
        }
        let elapsed = started.elapsed();
        let points = (timed.len() * points_per_tick) as f64;
        let per_s = points / elapsed.as_secs_f64();
        let router_samples = (timed.len() * args.routers as usize) as f64 / elapsed.as_secs_f64();
        tracing::info!(detector = name, points_per_s = per_s as u64, router_samples_per_s = router_samples as u64);
        let _ = writeln!(
            table,
            "| {name} | {:.0} | {:.0} | {:.2} | {anomalies} | {} |",
            per_s,
            router_samples,
            elapsed.as_secs_f64() / timed.len() as f64 * 1000.0,
            config.map_or("defaults".into(), |c| format!("`{c}`"))
        );
    }
    let text = format!(
        "## Detectors\n\n\
         Command: `cargo xtask quality` (runs `routewatch-quality speed --write BENCHMARKS.md` after the quality table)  \n\
         Machine: {}  \n\
         Workload: {} routers x 10 metrics from the simulator (fault-free), one batch per tick ({} points), \
         through each Wasm component in the host runtime; {} ticks of warm-up untimed, then {} ticks timed \
         (refits included). One core.\n\n\
         | detector | points/s | router-samples/s | ms per tick | anomalies while timed | configuration |\n\
         |---|---:|---:|---:|---:|---|\n{table}\n\
         Target: LSTM at least 100,000 router-samples/s (a router-sample is one router's ten metrics, one model step).\n",
        crate::machine(),
        args.routers,
        points_per_tick,
        args.warmup_ticks,
        args.timed_ticks,
    );
    println!("{text}");
    if let Some(path) = &args.write {
        replace_section(path, "## Detectors", &text)?;
    }
    Ok(())
}

/// Each detector's snapshot size per series: the state a partition saves and a new owner
/// restores, after every series has been seen for `args.ticks` ticks.
pub fn snapshots(args: &SnapshotArgs) -> Result<()> {
    let plugin_dir = plugin_dir(args.plugins.as_ref())?;
    let all = batches(args.routers, args.ticks)?;
    let columns: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
    let runtime = bench_runtime()?;
    let mut table = String::new();
    let mut arima_per_series = None;
    for (stem, name) in DETECTORS {
        let plugin = crate::load_component(&runtime, &plugin_dir, stem)?;
        let mut instance = plugin.instantiate()?;
        for batch in &all {
            instance.process(batch)?;
        }
        let bytes = instance.snapshot()?.len();
        let read = columns.len() - plugin.ignored(columns.iter().copied()).len();
        let series = args.routers as usize * read;
        let per_series = bytes as f64 / series as f64;
        tracing::info!(detector = name, bytes, series, per_series);
        if name == "arima" {
            arima_per_series = Some(per_series);
        }
        let _ = writeln!(table, "| {name} | {bytes} | {series} | {per_series:.0} |");
    }
    let text = format!(
        "## Snapshot size\n\n\
         Command: `cargo xtask quality` (runs `routewatch-quality snapshots --write BENCHMARKS.md`)  \n\
         Machine: {}  \n\
         Workload: {} routers x 10 metrics from the simulator (fault-free), {} ticks of one minute, default \
         configurations; then one snapshot of each detector, as a partition saves it. A series is one router's \
         metric that the detector reads (fleet-outlier's state is per metric across the fleet, so its figure \
         per series falls as the fleet grows).\n\n\
         | detector | snapshot bytes | series | bytes per series |\n\
         |---|---:|---:|---:|\n{table}\n\
         Goal: ARIMA at most 1 KB (1,024 bytes) per series ({}). A series carries its refit \
         window, without which a series restored after a crash refitted on a shorter window and \
         scored differently from the uninterrupted one: since snapshot version 5, 240 samples of \
         two bytes on a per-series grid of about 1/2048 of the window's spread (480 bytes; \
         version 4 kept them in single precision, 960 bytes, and gave 1,369 bytes a series).\n",
        crate::machine(),
        args.routers,
        args.ticks,
        match arima_per_series {
            Some(bytes) if bytes <= 1024.0 => "met",
            Some(_) => "**NOT met**",
            None => "ARIMA not measured",
        },
    );
    println!("{text}");
    if let Some(path) = &args.write {
        replace_section(path, "## Snapshot size", &text)?;
    }
    Ok(())
}

/// The components' folder: `plugins`, or the build's.
pub(crate) fn plugin_dir(plugins: Option<&PathBuf>) -> Result<PathBuf> {
    match plugins {
        Some(dir) => Ok(dir.clone()),
        None => default_plugin_dir(),
    }
}

/// A runtime with generous limits: a bench batch is a whole fleet tick.
pub(crate) fn bench_runtime() -> Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig {
        cache_dir: None,
        limits: Limits { cpu_budget: Duration::from_secs(600), memory_bytes: 2 << 30, ..Limits::default() },
        ..RuntimeConfig::default()
    })?)
}
