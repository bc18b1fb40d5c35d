//! routewatch-quality: how well, and how fast, the detectors do on simulated fleets.
//!
//! ```text
//! routewatch-quality quality                      # simulated labelled fleet -> every detector -> table
//! routewatch-quality corpus DIR --labels FILE     # a folder of labelled single-series CSVs -> table
//! routewatch-quality generate-corpus DIR          # such a folder, from the simulator, with its labels
//! routewatch-quality speed                        # points/s per detector through Wasm
//! routewatch-quality incident-dataset --out F.csv  # incidents, their labels and features (classifier training data)
//! routewatch-quality incident-quality             # incidents and their causes, scored
//! routewatch-quality repair                       # time to repair, self-healing off vs auto
//! ```
//!
//! They find the components in `<target>/wasm32-wasip2/plugin` next to their own binary (build
//! them first: `cargo xtask build`) and, with `--write FILE`, replace their section of FILE
//! (BENCHMARKS.md). See `quality/README.md` for how anomalies are matched to faults.

mod corpus;
mod dataset;
mod incident_score;
mod incidents;
mod predict;
mod repair;
mod report;
mod score;
mod speed;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use routewatch_simulator::TelemetryProfile;

/// The detectors, by component file stem and plugin name.
pub const DETECTORS: [(&str, &str); 5] = [
    ("routewatch_arima", "arima"),
    ("routewatch_lstm", "lstm"),
    ("routewatch_seasonal", "seasonal"),
    ("routewatch_fleet_outlier", "fleet-outlier"),
    ("routewatch_changepoint", "changepoint"),
];

/// The default set's component stems, from `deploy/default-detectors.txt` (the one list the
/// demo, the image and Kubernetes also read).
pub fn default_set() -> Vec<&'static str> {
    include_str!("../../deploy/default-detectors.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The plugin names of the default set.
pub fn default_set_names() -> Vec<&'static str> {
    default_set()
        .into_iter()
        .map(|stem| {
            DETECTORS
                .iter()
                .find(|(s, _)| *s == stem)
                .map(|(_, name)| *name)
                .unwrap_or_else(|| panic!("deploy/default-detectors.txt names {stem}, which is not a shipped detector"))
        })
        .collect()
}

#[derive(Parser)]
#[command(about = "Detection quality and speed of the routewatch detectors")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Time to repair per fault kind, with self-healing off and in auto mode (closed loop).
    Repair(repair::RepairArgs),
    /// Predictive alerts against the simulator's consequences: share predicted, lead time,
    /// false predictions per router-day.
    Predict(predict::PredictArgs),
    /// Simulate a labelled fleet, replay it through every detector, and score them per fault kind.
    Quality(QualityArgs),
    /// Score every detector on a folder of labelled single-series CSVs (event-level and NAB).
    Corpus(corpus::CorpusArgs),
    /// Write a labelled corpus of single-series CSVs from the simulator (for `corpus`).
    GenerateCorpus(corpus::GenerateArgs),
    /// Measure points per second through Wasm for every detector.
    Speed(SpeedArgs),
    /// Group the default set's anomalies on a simulated labelled fleet into incidents and
    /// write their labels and classifier features as CSV (the classifier's training data).
    IncidentDataset(incidents::DatasetArgs),
    /// Group the default set's anomalies into incidents, name their causes with the classifier
    /// component, and score both against the ground truth (BENCHMARKS.md).
    IncidentQuality(incident_score::QualityArgs),
    /// Measure every detector's snapshot size per series.
    Snapshots(SnapshotArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct QualityArgs {
    #[arg(long, default_value_t = 1000)]
    pub routers: u32,
    /// Days simulated; all but the last `eval_days` are warm-up.
    #[arg(long, default_value_t = 3)]
    pub days: u32,
    /// Days at the end that are scored.
    #[arg(long, default_value_t = 1)]
    pub eval_days: u32,
    #[arg(long, default_value_t = 60)]
    pub interval_s: u64,
    /// Random faults per router per day.
    #[arg(long, default_value_t = 0.5)]
    pub fault_rate: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Telemetry profile of the simulated fleet.
    #[arg(long, value_enum, default_value_t = TelemetryProfile::Realistic)]
    pub profile: TelemetryProfile,
    /// Samples after a fault's end in which an anomaly still counts for it.
    #[arg(long, default_value_t = 5)]
    pub grace: i64,
    /// Anomalies of one (router, metric) at most this many samples apart form one alarm.
    #[arg(long, default_value_t = 10)]
    pub merge_gap: i64,
    /// Where the data sets (one folder per profile), anomalies and the compiled-component cache go.
    #[arg(long, default_value = "target/quality")]
    pub out_dir: PathBuf,
    /// Reuse an existing data set in `out_dir` if its parameters match.
    #[arg(long)]
    pub reuse: bool,
    /// Replace the "## Detection quality, PROFILE profile" section of this file (BENCHMARKS.md).
    #[arg(long)]
    pub write: Option<PathBuf>,
    #[command(flatten)]
    pub detectors: DetectorArgs,
}

/// Which detectors run, from where, with which configurations.
#[derive(clap::Args, Debug, Clone)]
pub struct DetectorArgs {
    /// Directory of the components; default `<target>/wasm32-wasip2/plugin`.
    #[arg(long)]
    pub plugins: Option<PathBuf>,
    /// Detectors to leave out, by name (repeatable).
    #[arg(long)]
    pub skip: Vec<String>,
    /// Configuration per detector, `NAME=JSON` (repeatable).
    #[arg(long = "config", value_parser = parse_config)]
    pub configs: Vec<(String, String)>,
}

impl DetectorArgs {
    /// The detectors that run, `(component stem, plugin name)`.
    pub fn selected(&self) -> Vec<(&'static str, &'static str)> {
        DETECTORS.iter().copied().filter(|(_, name)| !self.skip.iter().any(|s| s == name)).collect()
    }

    /// Loads the selected components, each with its configuration.
    pub fn load(
        &self,
        runtime: &routewatch_runtime::Runtime,
    ) -> Result<Vec<(&'static str, routewatch_engine::replay::ReplayPlugin)>> {
        let dir = match &self.plugins {
            Some(dir) => dir.clone(),
            None => default_plugin_dir()?,
        };
        let mut plugins = Vec::new();
        for (stem, name) in self.selected() {
            let plugin = load_component(runtime, &dir, stem)?;
            let config = self.configs.iter().find(|(n, _)| n == name).map(|(_, c)| c.clone());
            plugins.push((name, routewatch_engine::replay::ReplayPlugin { plugin, config }));
        }
        Ok(plugins)
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct SpeedArgs {
    #[arg(long, default_value_t = 1000)]
    pub routers: u32,
    /// Ticks (one sample per router) before timing starts.
    #[arg(long, default_value_t = 240)]
    pub warmup_ticks: usize,
    #[arg(long, default_value_t = 240)]
    pub timed_ticks: usize,
    /// Replace the "## Detectors" section of this file (BENCHMARKS.md).
    #[arg(long)]
    pub write: Option<PathBuf>,
    #[arg(long)]
    pub plugins: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SnapshotArgs {
    #[arg(long, default_value_t = 100)]
    pub routers: u32,
    /// Ticks (one sample per router) before the snapshot: two days by default, so that
    /// daily windows are full.
    #[arg(long, default_value_t = 2880)]
    pub ticks: usize,
    /// Replace the "## Snapshot size" section of this file (BENCHMARKS.md).
    #[arg(long)]
    pub write: Option<PathBuf>,
    #[arg(long)]
    pub plugins: Option<PathBuf>,
}

fn parse_config(s: &str) -> Result<(String, String), String> {
    let (name, json) = s.split_once('=').ok_or("expected NAME=JSON")?;
    Ok((name.to_owned(), json.to_owned()))
}

/// `<target>/wasm32-wasip2/plugin`, found from this binary's path (`<target>/release/...`).
/// The component `<dir>/<stem>.wasm`.
pub fn load_component(
    runtime: &routewatch_runtime::Runtime,
    dir: &Path,
    stem: &str,
) -> Result<routewatch_runtime::Plugin> {
    let path = dir.join(format!("{stem}.wasm"));
    runtime
        .load_file(&path)
        .with_context(|| format!("loading {} (build the plugins first: cargo xtask build)", path.display()))
}

pub fn default_plugin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe.ancestors().nth(2).context("binary lives in <target>/<profile>")?;
    Ok(target.join("wasm32-wasip2").join("plugin"))
}

/// Facts about the machine for the reports.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map_or("unknown".into(), |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    format!("{cpus} cores ({model}); load average before the run: {load}")
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,wasmtime=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().task {
        Task::Quality(args) => score::run(&args),
        Task::Corpus(args) => corpus::run(&args),
        Task::GenerateCorpus(args) => corpus::generate(&args),
        Task::Speed(args) => speed::run(&args),
        Task::IncidentDataset(args) => incidents::dataset(&args),
        Task::IncidentQuality(args) => incident_score::run(&args),
        Task::Snapshots(args) => speed::snapshots(&args),
        Task::Repair(args) => repair::run(&args),
        Task::Predict(args) => predict::run(&args),
    }
}
