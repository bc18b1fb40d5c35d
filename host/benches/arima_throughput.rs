//! ARIMA points per second through the Wasm component and natively, side by side.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p routewatch-host --bench arima_throughput`
//! after `cargo xtask build`). With `ROUTEWATCH_BENCH_WRITE=FILE`, the figures replace the
//! "ARIMA through Wasm" section of FILE (BENCHMARKS.md).
//!
//! Workload: 100 routers x 10 metrics = 1,000 series of a daily cycle with noise, in batches
//! of one sample per series (1,000 points a batch). Every series is warmed up and fitted
//! before timing starts; the timed part includes the periodic refits. Native and Wasm
//! alternate, nine rounds each; the ratio is the median of the rounds' native/Wasm pairs.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use routewatch_arima::Arima;
use routewatch_plugin_sdk::{Detector, Output};
use routewatch_runtime::{Batch, Column, Limits, Runtime, RuntimeConfig};
use routewatch_telemetry::Metric;

const ROUTERS: u32 = 100;
/// Every metric of the telemetry record, so the workload has the real record's shape.
const METRICS: [Metric; 10] = Metric::ALL;
const WARMUP_STEPS: usize = 300;
const TIMED_STEPS: usize = 3000;
const ROUNDS: usize = 9;

fn main() {
    let load = common::load_average();
    let batches: Vec<Batch> = (0..WARMUP_STEPS + TIMED_STEPS).map(batch).collect();
    let points = (TIMED_STEPS * ROUTERS as usize * METRICS.len()) as f64;

    let runtime =
        Runtime::new(RuntimeConfig { limits: Limits::default(), ..RuntimeConfig::default() }).expect("runtime");
    let plugin =
        runtime.load_file(&component("routewatch_arima")).expect("ARIMA component (run `cargo xtask build` first)");

    let mut native_rounds = Vec::new();
    let mut wasm_rounds = Vec::new();
    for round in 0..ROUNDS {
        native_rounds.push(time_native(&batches));
        wasm_rounds.push(time_wasm(&plugin, &batches));
        eprintln!(
            "round {round}: native {:.0} points/s, wasm {:.0} points/s",
            points / native_rounds[round].as_secs_f64(),
            points / wasm_rounds[round].as_secs_f64()
        );
    }
    // What crossing the boundary costs: the same batches through a detector that only fills
    // in zero scores.
    let empty = runtime.load_file(&component("routewatch_test_evil")).expect("evil component");
    let mut empty_rounds: Vec<Duration> = (0..ROUNDS).map(|_| time_wasm(&empty, &batches)).collect();
    let empty_time = median(&mut empty_rounds);
    let per_call = empty_time / TIMED_STEPS as u32;
    // What calibration costs: the SDK's calibration and episodes behind a naive forecast, on
    // the same batches, less the boundary crossing measured above.
    let calibrate = runtime.load_file(&component("routewatch_test_calibrate_only")).expect("calibrate-only component");
    let mut calibrate_rounds: Vec<Duration> = (0..ROUNDS).map(|_| time_wasm(&calibrate, &batches)).collect();
    let calibrate_time = median(&mut calibrate_rounds);
    let wasm_time = median(&mut wasm_rounds.clone());
    let ns_per_point = |d: Duration| d.as_secs_f64() * 1e9 / points;
    let arima_ns = ns_per_point(wasm_time);
    let calibration_ns = ns_per_point(calibrate_time.saturating_sub(empty_time));
    let share = calibration_ns / arima_ns;

    // The ratio of each round's adjacent pair, not of the medians: a neighbour's load that
    // comes and goes then hits both sides of a pair alike.
    let mut ratios: Vec<f64> =
        native_rounds.iter().zip(&wasm_rounds).map(|(n, w)| w.as_secs_f64() / n.as_secs_f64()).collect();
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let native = points / median(&mut native_rounds).as_secs_f64();
    let wasm = points / median(&mut wasm_rounds).as_secs_f64();
    let report = format!(
        "## ARIMA through Wasm vs native\n\n\
         Command: `cargo xtask bench` (bench `host/benches/arima_throughput.rs`)  \n\
         Machine: {machine}  \n\
         Workload: {routers} routers x {metrics} metrics = {series} series, one sample per series per batch \
         ({per_batch} points a batch); {WARMUP_STEPS} steps of warm-up untimed, then {TIMED_STEPS} timed steps \
         ({points:.0} points, periodic refits included); native and Wasm alternate, median of {ROUNDS} rounds (the ratio is the median of each round's \
         native/Wasm pair). Load average before the run: {load}.\n\n\
         | path | points/s (one core) |\n|---|---|\n\
         | native (same `Arima` code, compiled for x86_64) | {native:.0} |\n\
         | Wasm component through the host (wasmtime 48, Cranelift) | {wasm:.0} |\n\
         | **ratio native / Wasm** | **{ratio:.2}x** |\n\n\
         Crossing the boundary (lowering a {per_batch}-point batch, lifting its scores) costs {per_call:?} \
         per call, measured with a detector that only writes zero scores.\n\n\
         Targets: Wasm at least 1,000,000 points/s ({wasm_ok}); within 1.2x of native (issue 13) ({ratio_ok}).\n\n\
         ### What calibration costs\n\n\
         The same run, the same batches: ARIMA (its calibrated scores included) beside the SDK's calibration \
         and episodes alone behind a naive forecast (`plugins/testing/calibrate-only`), each through Wasm, \
         less the boundary crossing.\n\n\
         | path | ns per point (Wasm) |\n|---|---:|\n\
         | ARIMA with calibration | {arima_ns:.1} |\n\
         | ARIMA without calibration (the difference) | {without_ns:.1} |\n\
         | calibration alone | {calibration_ns:.1} |\n\
         | **calibration / ARIMA** | **{share_pct:.0}%** |\n\n\
         Target: calibration at most 20% of ARIMA's per-point time ({share_ok}).\n",
        without_ns = arima_ns - calibration_ns,
        share_pct = share * 100.0,
        share_ok = if share <= 0.2 { "met" } else { "NOT met" },
        machine = common::machine(),
        routers = ROUTERS,
        metrics = METRICS.len(),
        series = ROUTERS as usize * METRICS.len(),
        per_batch = ROUTERS as usize * METRICS.len(),
        wasm_ok = if wasm >= 1e6 { "met" } else { "NOT met" },
        ratio_ok = if ratio <= 1.2 { "met" } else { "NOT met" },
    );
    println!("{report}");
    if let Some(path) = std::env::var_os("ROUTEWATCH_BENCH_WRITE") {
        common::write_section(Path::new(&path), "## ARIMA through Wasm vs native", &report)
            .expect("writing BENCHMARKS.md");
        eprintln!("wrote {}", PathBuf::from(path).display());
    }
}

/// One sample of every series at step `t`: a daily cycle (288 steps) per router, with noise.
fn batch(t: usize) -> Batch {
    let routers: Vec<u32> = (0..ROUTERS).collect();
    let columns = METRICS
        .iter()
        .enumerate()
        .map(|(m, metric)| Column {
            metric: metric.name().into(),
            values: routers
                .iter()
                .map(|&r| {
                    let phase = (t as f64 + r as f64 * 7.0) * std::f64::consts::TAU / 288.0;
                    let noise = hash_noise(t as u64, r as u64, m as u64);
                    100.0 * (m as f64 + 1.0) + 20.0 * phase.sin() + 2.0 * noise
                })
                .collect(),
        })
        .collect();
    Batch { routers, timestamps: vec![t as i64 * 60_000; ROUTERS as usize], columns }
}

/// A cheap deterministic noise in [-1, 1), so both paths see identical data.
fn hash_noise(a: u64, b: u64, c: u64) -> f64 {
    let mut x = a.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ c.wrapping_mul(0x1656_67b1_9e37_79f9);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

fn time_native(batches: &[Batch]) -> Duration {
    let mut detector = Arima::default();
    let mut out = Output::default();
    let mut run = |batch: &Batch, out: &mut Output| {
        let columns = batch.columns.iter().map(|c| (c.metric.as_str(), &c.values[..])).collect();
        let view = routewatch_plugin_sdk::Batch::new(&batch.routers, &batch.timestamps, columns);
        out.clear();
        detector.process(&view, out).unwrap();
        std::hint::black_box(&out.scores);
    };
    for b in &batches[..WARMUP_STEPS] {
        run(b, &mut out);
    }
    let started = Instant::now();
    for b in &batches[WARMUP_STEPS..] {
        run(b, &mut out);
    }
    started.elapsed()
}

fn time_wasm(plugin: &routewatch_runtime::Plugin, batches: &[Batch]) -> Duration {
    let mut instance = plugin.instantiate().unwrap();
    for b in &batches[..WARMUP_STEPS] {
        instance.process(b).unwrap();
    }
    let started = Instant::now();
    for b in &batches[WARMUP_STEPS..] {
        std::hint::black_box(instance.process(b).unwrap());
    }
    started.elapsed()
}

fn median(rounds: &mut [Duration]) -> Duration {
    rounds.sort();
    rounds[rounds.len() / 2]
}

fn component(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join(format!("wasm32-wasip2/plugin/{name}.wasm"))
}
