//! `routewatch`: the detection host's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use routewatch_host::replay::{self, InputFormat, ReplayOptions, ReplayPlugin};
use routewatch_host::runtime::{Limits, Runtime, RuntimeConfig};

#[derive(Parser)]
#[command(name = "routewatch", version, about = "Finds what goes wrong in a fleet of routers, as it happens")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run detector plugins over a recorded file and write a score per point and the anomalies.
    Replay(ReplayArgs),
}

#[derive(Args)]
struct SandboxArgs {
    /// Directory for compiled components, so a restart does not recompile.
    #[arg(long, env = "ROUTEWATCH_CACHE_DIR", default_value_os_t = default_cache_dir())]
    cache_dir: PathBuf,
    /// Compile every time instead of using the cache.
    #[arg(long)]
    no_cache: bool,
    /// CPU budget of one plugin call, in milliseconds.
    #[arg(long, env = "ROUTEWATCH_CPU_BUDGET_MS", default_value_t = 1000)]
    cpu_budget_ms: u64,
    /// Memory cap of one plugin instance, in MiB.
    #[arg(long, env = "ROUTEWATCH_MEMORY_MIB", default_value_t = 256)]
    memory_mib: usize,
}

#[derive(Args)]
struct ReplayArgs {
    /// A detector component (.wasm). Repeat for several; each gets a score column.
    #[arg(long = "plugin", short = 'p', required = true)]
    plugins: Vec<PathBuf>,
    /// Configuration for a plugin, as NAME=JSON or NAME=@FILE (NAME from the plugin's info).
    #[arg(long = "config", short = 'c', value_name = "NAME=JSON")]
    configs: Vec<String>,
    /// The recording: a `timestamp,value` CSV or telemetry JSON lines.
    #[arg(long, short = 'i')]
    input: PathBuf,
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    format: InputFormat,
    /// Write one CSV row per input point (timestamp, router, metric, value, a score per plugin).
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Write anomalies as JSON lines; `-` for standard output.
    #[arg(long)]
    anomalies: Option<PathBuf>,
    /// Rows per batch handed to the plugins.
    #[arg(long, default_value_t = 4096)]
    batch_rows: usize,
    /// Router name given to the rows of a CSV input.
    #[arg(long, default_value = "series")]
    router: String,
    /// Metric name given to the values of a CSV input.
    #[arg(long, default_value = "value")]
    metric: String,
    /// Skip rows that do not parse (counted and logged) instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
    /// Never draw a progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,routewatch=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Replay(args) => run_replay(args),
    }
}

fn run_replay(args: ReplayArgs) -> Result<ExitCode> {
    let runtime = runtime(&args.sandbox)?;
    let mut configs = parse_configs(&args.configs)?;
    let mut plugins = Vec::new();
    for path in &args.plugins {
        let plugin = runtime.load_file(path).with_context(|| format!("loading {}", path.display()))?;
        let config = configs.remove(&plugin.info().name);
        plugins.push(ReplayPlugin { plugin, config });
    }
    if let Some(name) = configs.keys().next() {
        bail!("--config names plugin {name:?}, which is not among the loaded plugins");
    }
    let options = ReplayOptions {
        input: args.input,
        format: args.format,
        scores: args.scores,
        anomalies: args.anomalies,
        batch_rows: args.batch_rows,
        csv_router: args.router,
        csv_metric: args.metric,
        skip_invalid: args.skip_invalid,
        progress: !args.no_progress,
    };
    let summary = replay::replay(plugins, &options)?;
    let secs = summary.elapsed.as_secs_f64();
    eprintln!(
        "replayed {} rows ({} points) in {secs:.2} s, {:.0} points/s{}",
        summary.rows,
        summary.points,
        summary.points as f64 / secs.max(1e-9),
        if summary.skipped_rows > 0 { format!("; skipped {} bad rows", summary.skipped_rows) } else { String::new() }
    );
    let mut failed = false;
    for p in &summary.plugins {
        match &p.failure {
            None => eprintln!(
                "  {} {}: {} anomalies, {:.2} s in the plugin",
                p.label,
                p.version,
                p.anomalies,
                p.busy.as_secs_f64()
            ),
            Some(reason) => {
                failed = true;
                eprintln!("  {} {}: FAILED: {reason}", p.label, p.version);
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn runtime(args: &SandboxArgs) -> Result<Runtime> {
    let limits = Limits {
        cpu_budget: Duration::from_millis(args.cpu_budget_ms),
        memory_bytes: args.memory_mib << 20,
        ..Limits::default()
    };
    let cache_dir = (!args.no_cache).then(|| args.cache_dir.clone());
    Ok(Runtime::new(RuntimeConfig { cache_dir, limits })?)
}

/// `NAME=JSON` or `NAME=@FILE` into a map from plugin name to JSON text.
fn parse_configs(items: &[String]) -> Result<std::collections::HashMap<String, String>> {
    let mut configs = std::collections::HashMap::new();
    for item in items {
        let Some((name, value)) = item.split_once('=') else {
            bail!("--config {item:?} must be NAME=JSON or NAME=@FILE");
        };
        let json = match value.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file).with_context(|| format!("reading config file {file}"))?,
            None => value.to_owned(),
        };
        if configs.insert(name.to_owned(), json).is_some() {
            bail!("--config given twice for plugin {name:?}");
        }
    }
    Ok(configs)
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("routewatch").join("components")
}
