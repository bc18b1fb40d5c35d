//! Build, test, demo and benchmark entry points for routewatch.
//!
//! ```text
//! cargo xtask build   # wasm32-wasip2 target if missing, the plugins, then the host
//! cargo xtask test    # build, install the test broker, run every test
//! cargo xtask demo    # build and run the demo
//! cargo xtask bench   # build and run the benchmarks, writing BENCHMARKS.md
//! ```

mod broker;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// Plugin crates built as Wasm components. The testing ones are deliberately broken detectors
/// that the host's containment tests load.
const PLUGINS: &[&str] =
    &["routewatch-arima", "routewatch-test-evil", "routewatch-test-wrong-world", "routewatch-test-wrong-version"];

#[derive(Parser)]
#[command(about = "routewatch build, test, demo and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Add the wasm32-wasip2 target if missing, build the plugins, then the host.
    Build,
    /// Build everything, install the test broker, and run every test in the workspace.
    Test {
        /// Extra arguments for `cargo test` (for example a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build everything and run the demo.
    Demo,
    /// Build everything and run the benchmarks; figures go to BENCHMARKS.md.
    Bench,
}

fn main() -> Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match Cli::parse().task {
        Task::Build => build(),
        Task::Test { args } => {
            build()?;
            let tansu = broker::ensure_tansu()?;
            let mut cmd = cargo(&["test", "--release", "--workspace"]);
            cmd.env("ROUTEWATCH_TANSU", &tansu).args(&args);
            run(&mut cmd)
        }
        Task::Demo => {
            build()?;
            demo(&root)
        }
        Task::Bench => {
            build()?;
            run(cargo(&["bench", "-p", "routewatch-host", "--bench", "arima_throughput"])
                .env("ROUTEWATCH_BENCH_WRITE", root.join("BENCHMARKS.md")))
        }
    }
}

fn build() -> Result<()> {
    ensure_wasm_target()?;
    let mut plugins = cargo(&["build", "--profile", "plugin", "--target", "wasm32-wasip2"]);
    for plugin in PLUGINS {
        plugins.args(["-p", plugin]);
    }
    run(&mut plugins)?;
    run(&mut cargo(&["build", "--release", "-p", "routewatch-host"]))
}

/// The demo until the Kafka pipeline lands: a replay of a synthetic series through ARIMA.
fn demo(root: &Path) -> Result<()> {
    let out = root.join("target").join("demo");
    std::fs::create_dir_all(&out)?;
    let input = out.join("demo-series.csv");
    std::fs::write(&input, demo_series())?;
    let plugin = plugin_dir()?.join("routewatch_arima.wasm");
    run(cargo(&["run", "--release", "--quiet", "-p", "routewatch-host", "--", "replay"])
        .arg("--plugin")
        .arg(&plugin)
        .arg("--input")
        .arg(&input)
        .arg("--scores")
        .arg(out.join("scores.csv"))
        .arg("--anomalies")
        .arg("-"))?;
    println!("scores for every point: {}", out.join("scores.csv").display());
    Ok(())
}

/// A day of one-minute CPU samples with a daily cycle, noise, a spike and a level shift.
fn demo_series() -> String {
    let mut csv = String::from("timestamp,value\n");
    let start = 1_764_000_000_i64;
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..1440_i64 {
        // xorshift: a dependency-free, deterministic noise source for a demo series.
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        let jitter = (noise % 1000) as f64 / 1000.0 - 0.5;
        let phase = i as f64 / 1440.0 * std::f64::consts::TAU;
        let mut value = 0.45 + 0.2 * phase.sin() + 0.02 * jitter;
        if i == 600 {
            value += 0.3;
        }
        if i >= 1000 {
            value += 0.15;
        }
        csv.push_str(&format!("{},{value:.4}\n", start + i * 60));
    }
    csv
}

fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (routewatch builds plugins with rustup's wasm32-wasip2 target)")?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|t| t.trim() == "wasm32-wasip2") {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))
}

/// Where `cargo build --target wasm32-wasip2 --profile plugin` leaves the components.
fn plugin_dir() -> Result<PathBuf> {
    Ok(target_dir()?.join("wasm32-wasip2").join("plugin"))
}

fn target_dir() -> Result<PathBuf> {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(workspace_root().join("target")),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args);
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
