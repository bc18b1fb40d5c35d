//! Build, test, demo and benchmark entry points for routewatch.
//!
//! ```text
//! cargo xtask build   # wasm32-wasip2 target if missing, the plugins, then the host
//! cargo xtask test    # build, install the test brokers (Apache Kafka, Tansu), run every test
//! cargo xtask demo    # build and run the demo
//! cargo xtask bench   # build and run the benchmarks, writing BENCHMARKS.md
//! cargo xtask fuzz    # every fuzz target in fuzz/ for 60 s each
//! ```

mod broker;
mod fuzz;
mod prometheus;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// The workspace's plugin crates, built as Wasm components: every package with a `cdylib`
/// target, read from `cargo metadata`, so that a new plugin needs no line here. The testing
/// ones among them are deliberately broken detectors that the host's containment tests load.
fn plugin_packages() -> Result<Vec<String>> {
    let output =
        cargo(&["metadata", "--no-deps", "--format-version", "1"]).output().context("running cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).context("reading cargo metadata")?;
    let is_component = |package: &serde_json::Value| {
        package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|target| target["crate_types"].as_array().into_iter().flatten().any(|kind| kind == "cdylib"))
    };
    let plugins: Vec<String> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|package| is_component(package))
        .filter_map(|package| package["name"].as_str().map(String::from))
        .collect();
    if plugins.is_empty() {
        bail!("cargo metadata lists no plugin crate (a package with a cdylib target)");
    }
    Ok(plugins)
}

/// The default set (the detectors the demo runs), by component file stem.
fn default_plugins(root: &Path) -> Result<Vec<String>> {
    let path = root.join("deploy/default-detectors.txt");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect())
}

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
    /// Build everything, install the test brokers (Apache Kafka, Tansu), and run every test.
    Test {
        /// Extra arguments for `cargo test` (for example a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build everything and run the demo: embedded broker, simulator, host, live anomalies.
    Demo,
    /// Build everything and run the benchmarks; figures go to BENCHMARKS.md.
    Bench,
    /// Build everything, then score every detector on a simulated labelled fleet, realistic
    /// profile unless `-- --profile clean` (BENCHMARKS.md).
    Quality {
        /// Extra arguments for `routewatch-quality quality` (see its --help).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Install cargo-fuzz if missing and run every fuzz target (fuzz/) for a bounded time.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// `address` (stable Rust with RUSTC_BOOTSTRAP=1, set for you) or `none`.
        #[arg(long, default_value = "address")]
        sanitizer: String,
        /// Targets to run (default: all).
        targets: Vec<String>,
    },
}

fn main() -> Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering the workspace {}", root.display()))?;
    match Cli::parse().task {
        Task::Build => build(),
        Task::Test { args } => {
            build()?;
            let tansu = broker::ensure_tansu()?;
            let kafka = broker::ensure_kafka(&root)?;
            let deploy_tools = prometheus::ensure_deploy_tools()?;
            // `cargo test` does not build benchmarks; build them so that one that no longer
            // compiles fails the test command, not the next `cargo xtask bench`.
            // Only the bench targets: `--workspace` alone also builds every library's unit tests
            // in the bench profile, which `cargo test --release` then builds again.
            run(&mut cargo(&["bench", "--workspace", "--bench", "*", "--no-run"]))?;
            let mut cmd = cargo(&["test", "--release", "--workspace"]);
            cmd.env("ROUTEWATCH_TANSU", &tansu).env("ROUTEWATCH_KAFKA_HOME", &kafka).envs(deploy_tools).args(&args);
            run(&mut cmd)
        }
        Task::Demo => {
            build()?;
            demo(&root)
        }
        Task::Bench => {
            build()?;
            let report = root.join("BENCHMARKS.md");
            run(cargo(&["bench", "-p", "routewatch-host", "--bench", "arima_throughput"])
                .env("ROUTEWATCH_BENCH_WRITE", &report))?;
            let tansu = broker::ensure_tansu()?;
            let kafka = broker::ensure_kafka(&root)?;
            let brokers = [("ROUTEWATCH_TANSU", tansu), ("ROUTEWATCH_KAFKA_HOME", kafka)];
            run(cargo(&["bench", "-p", "routewatch-host", "--bench", "pipeline"])
                .env("ROUTEWATCH_BENCH_WRITE", &report)
                .envs(brokers.clone()))?;
            run(cargo(&["bench", "-p", "routewatch-host", "--bench", "plugin_swap"])
                .env("ROUTEWATCH_BENCH_WRITE", &report)
                .envs(brokers.clone()))?;
            run(cargo(&["bench", "-p", "routewatch-simulator", "--bench", "sim_throughput"])
                .env("ROUTEWATCH_BENCH_WRITE", &report)
                .envs(brokers))
        }
        Task::Quality { args } => {
            // Detection quality on a labelled fleet, then each detector's speed through Wasm, its
            // snapshot size, the predictive alerts against the consequences, and the time to repair with self-healing off and in auto mode.
            build()?;
            let report = root.join("BENCHMARKS.md");
            let quality = ["run", "--release", "--quiet", "-p", "routewatch-quality", "--"];
            run(cargo(&quality).args(["quality", "--write"]).arg(&report).args(&args))?;
            run(cargo(&quality).args(["speed", "--write"]).arg(&report))?;
            run(cargo(&quality).args(["snapshots", "--write"]).arg(&report))?;
            run(cargo(&quality).args(["predict", "--write"]).arg(&report))?;
            run(cargo(&quality).args(["repair", "--routers", "400", "--days", "3", "--write"]).arg(&report))
        }
        Task::Fuzz { seconds, sanitizer, targets } => fuzz::run(&root, seconds, &sanitizer, &targets),
    }
}

fn build() -> Result<()> {
    ensure_wasm_target()?;
    let mut plugins = cargo(&["build", "--profile", "plugin", "--target", "wasm32-wasip2"]);
    for plugin in plugin_packages()? {
        plugins.args(["-p", &plugin]);
    }
    run(&mut plugins)?;
    run(&mut cargo(&["build", "--release", "-p", "routewatch-host", "-p", "routewatch-simulator"]))
}

/// The one-command demo: an embedded broker, the simulator and the host with the default
/// detectors and the forest classifier, incidents printed live (`routewatch demo`).
fn demo(root: &Path) -> Result<()> {
    let bin = target_dir()?.join("release");
    let plugins = plugin_dir()?;
    let mut cmd = Command::new(bin.join("routewatch"));
    cmd.arg("demo").arg("--simulator").arg(bin.join("routewatch-sim"));
    for plugin in default_plugins(root)? {
        cmd.arg("--plugin").arg(plugins.join(format!("{plugin}.wasm")));
    }
    cmd.arg("--classifier").arg(plugins.join("routewatch_classifier_forest.wasm"));
    cmd.current_dir(root);
    run(&mut cmd)
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

/// The workspace this xtask was run from. `cargo run` sets `CARGO_MANIFEST_DIR` for the process;
/// the path compiled in is only a fallback, since a target directory shared by two clones runs
/// one xtask binary for both.
fn workspace_root() -> PathBuf {
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir.parent().map_or_else(|| manifest_dir.clone(), Path::to_path_buf)
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
