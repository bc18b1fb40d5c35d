//! `routewatch`: the detection host's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use routewatch_host::replay::{self, InputFormat, ReplayOptions, ReplayPlugin};
use routewatch_host::{Host, HostConfig, ProcessingGuarantee};

mod demo;
mod plugin_cli;
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
    /// Consume telemetry from Kafka, run the detectors, produce anomalies (the streaming host).
    Run(Box<RunArgs>),
    /// Everything on one machine: an embedded broker, the simulator and the host, with live
    /// anomalies in the terminal.
    Demo(demo::DemoArgs),
    /// Manage a running host's plugins over its API: ls, show, push, enable, disable, config, rm,
    /// start-fresh; keygen and sign for signed plugins.
    Plugin(plugin_cli::PluginArgs),
}

/// Flags of `routewatch run`. Each overrides the configuration file; each can also come
/// from the environment variable shown.
#[derive(Args)]
struct RunArgs {
    /// TOML configuration file (every key optional; see the README).
    #[arg(long, env = "ROUTEWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "ROUTEWATCH_BROKERS")]
    brokers: Option<String>,
    /// Consumer group; hosts in one group share the partitions.
    #[arg(long, env = "ROUTEWATCH_GROUP_ID")]
    group_id: Option<String>,
    /// Detector component to run; repeat for several (replaces the file's list).
    #[arg(long = "plugin", short = 'p', env = "ROUTEWATCH_PLUGINS", value_delimiter = ',')]
    plugins: Vec<PathBuf>,
    /// Watched folder of detector components (drop a .wasm in to load it).
    #[arg(long, env = "ROUTEWATCH_PLUGIN_DIR")]
    plugin_dir: Option<PathBuf>,
    /// Bearer token for API mutations (default: generated, see --api-token-file).
    #[arg(long, env = "ROUTEWATCH_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Where a generated API token is kept.
    #[arg(long, env = "ROUTEWATCH_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// Largest plugin upload, in MiB.
    #[arg(long, env = "ROUTEWATCH_MAX_UPLOAD_MIB")]
    max_upload_mib: Option<usize>,
    /// Failed batches within the window that quarantine a plugin.
    #[arg(long, env = "ROUTEWATCH_QUARANTINE_FAILURES")]
    quarantine_failures: Option<u32>,
    /// First quarantine's length in seconds (doubling after).
    #[arg(long, env = "ROUTEWATCH_QUARANTINE_BACKOFF_SECS")]
    quarantine_backoff_secs: Option<u64>,
    /// Plugin configuration as NAME=JSON or NAME=@FILE.
    #[arg(long = "plugin-config", value_name = "NAME=JSON")]
    plugin_configs: Vec<String>,
    /// Address of the HTTP API (health, metrics, anomalies).
    #[arg(long, env = "ROUTEWATCH_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    #[arg(long, env = "ROUTEWATCH_METRICS_TOPIC")]
    metrics_topic: Option<String>,
    #[arg(long, env = "ROUTEWATCH_ANOMALIES_TOPIC")]
    anomalies_topic: Option<String>,
    #[arg(long, env = "ROUTEWATCH_DLQ_TOPIC")]
    dlq_topic: Option<String>,
    #[arg(long, env = "ROUTEWATCH_STATE_TOPIC")]
    state_topic: Option<String>,
    /// Compacted topic of router incidents (JSON, keyed by incident id).
    #[arg(long, env = "ROUTEWATCH_INCIDENTS_TOPIC")]
    incidents_topic: Option<String>,
    /// Make no incidents (anomalies only).
    #[arg(long)]
    no_incidents: bool,
    /// Router incidents re-keyed by site, for the site stage.
    #[arg(long, env = "ROUTEWATCH_SITE_TOPIC")]
    site_topic: Option<String>,
    /// Compacted topic of site incidents (JSON, keyed by site incident id).
    #[arg(long, env = "ROUTEWATCH_SITE_INCIDENTS_TOPIC")]
    site_incidents_topic: Option<String>,
    /// Make no site incidents (router incidents only).
    #[arg(long)]
    no_sites: bool,
    /// Cause classifier component (routewatch:classifier world) naming each incident's cause;
    /// one in the plugin directory or from PUT /api/v1/classifier takes over while it is there.
    #[arg(long, env = "ROUTEWATCH_CLASSIFIER")]
    classifier: Option<PathBuf>,
    /// Topic of the self-healing audit trail (every change of every action).
    #[arg(long, env = "ROUTEWATCH_ACTIONS_TOPIC")]
    actions_topic: Option<String>,
    /// Self-healing dry run: actions that pass every guard rail are recorded, not sent.
    #[arg(long, env = "ROUTEWATCH_HEALING_DRY_RUN")]
    healing_dry_run: bool,
    /// Alertmanager base address each incident is posted to (v2 API); repeat for several.
    #[arg(long = "alertmanager-url", env = "ROUTEWATCH_ALERTMANAGER_URLS", value_delimiter = ',')]
    alertmanager_urls: Vec<String>,
    /// Partitions of topics created at start-up.
    #[arg(long, env = "ROUTEWATCH_PARTITIONS")]
    partitions: Option<i32>,
    /// Retention of created topics, in hours.
    #[arg(long, env = "ROUTEWATCH_RETENTION_HOURS")]
    retention_hours: Option<u64>,
    /// Do not create missing topics.
    #[arg(long)]
    no_create_topics: bool,
    /// Most records in one batch.
    #[arg(long, env = "ROUTEWATCH_BATCH_RECORDS")]
    batch_records: Option<usize>,
    /// Longest a record waits for its batch to fill, in milliseconds; a batch's last timestamp
    /// waits for its other records until none came for as long.
    #[arg(long, env = "ROUTEWATCH_LINGER_MS")]
    linger_ms: Option<u64>,
    /// at-least-once (default) or exactly-once (transactions; see the README).
    #[arg(long, env = "ROUTEWATCH_PROCESSING_GUARANTEE", value_enum)]
    processing_guarantee: Option<ProcessingGuarantee>,
    /// Seconds between saves of each partition's detector state.
    #[arg(long, env = "ROUTEWATCH_SNAPSHOT_INTERVAL_SECS")]
    snapshot_interval_secs: Option<u64>,
    /// CPU budget of one plugin call, in milliseconds.
    #[arg(long, env = "ROUTEWATCH_CPU_BUDGET_MS")]
    cpu_budget_ms: Option<u64>,
    /// Memory cap of one plugin instance, in MiB.
    #[arg(long, env = "ROUTEWATCH_MEMORY_MIB")]
    memory_mib: Option<usize>,
    /// Largest snapshot a plugin may hand over, in MiB.
    #[arg(long, env = "ROUTEWATCH_MAX_SNAPSHOT_MIB")]
    max_snapshot_mib: Option<usize>,
    /// Directory for compiled components.
    #[arg(long, env = "ROUTEWATCH_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Largest size of the compiled-component cache, in MiB.
    #[arg(long, env = "ROUTEWATCH_CACHE_MAX_MIB")]
    cache_max_mib: Option<u64>,
    /// Ed25519 public key (64 hex digits) plugins must be signed with; repeat for several
    /// (replaces the file's list).
    #[arg(long = "trusted-key", env = "ROUTEWATCH_TRUSTED_KEYS", value_delimiter = ',')]
    trusted_keys: Vec<String>,
    /// Extra librdkafka setting for every client, as KEY=VALUE; repeat for several.
    #[arg(long = "kafka", value_name = "KEY=VALUE")]
    kafka: Vec<String>,
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
    /// Rows per batch handed to the plugins; a batch ends at a timestamp, so the size changes
    /// no score.
    #[arg(long, alias = "batch-records", default_value_t = 4096)]
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
    // Ctrl-C and SIGTERM go to the main thread only: every thread started from here on
    // (librdkafka's, the mock broker's) inherits the block, so a signal cannot interrupt one
    // of their system calls and take a broker connection down mid-shutdown.
    block_termination_signals(true);
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
        Command::Run(args) => run_pipeline(*args),
        Command::Demo(args) => demo::run(args),
        Command::Plugin(args) => plugin_cli::run(args),
    }
}

/// The configuration file (or defaults) with the flags and environment on top.
fn pipeline_config(args: RunArgs) -> Result<HostConfig> {
    let mut config = match &args.config {
        Some(path) => HostConfig::from_file(path)?,
        None => HostConfig { cache_dir: Some(default_cache_dir()), ..HostConfig::default() },
    };
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(value) = args.$field { config.$field = value; } )* };
    }
    set!(brokers, group_id, metrics_topic, anomalies_topic, dlq_topic, state_topic, partitions, retention_hours);
    set!(batch_records, linger_ms, snapshot_interval_secs, cpu_budget_ms, memory_mib, listen);
    set!(max_upload_mib, quarantine_failures, quarantine_backoff_secs, cache_max_mib, max_snapshot_mib);
    set!(processing_guarantee, incidents_topic, actions_topic, site_topic, site_incidents_topic);
    if args.healing_dry_run {
        config.healing.dry_run = true;
    }
    if args.no_incidents {
        config.incidents = false;
    }
    if args.no_sites {
        config.sites = false;
    }
    if args.classifier.is_some() {
        config.classifier = args.classifier;
    }
    if !args.alertmanager_urls.is_empty() {
        config.alertmanager_urls = args.alertmanager_urls;
    }
    if !args.trusted_keys.is_empty() {
        config.trusted_keys = args.trusted_keys;
    }
    if args.cache_dir.is_some() {
        config.cache_dir = args.cache_dir;
    }
    if args.plugin_dir.is_some() {
        config.plugin_dir = args.plugin_dir;
    }
    if args.api_token.is_some() {
        config.api_token = args.api_token;
    }
    if args.api_token_file.is_some() {
        config.api_token_file = args.api_token_file;
    }
    if !args.plugins.is_empty() {
        config.plugins = args.plugins;
    }
    if args.no_create_topics {
        config.create_topics = false;
    }
    for setting in &args.kafka {
        let Some((key, value)) = setting.split_once('=') else { bail!("--kafka {setting:?} must be KEY=VALUE") };
        config.kafka.insert(key.to_owned(), value.to_owned());
    }
    for (name, json) in parse_configs(&args.plugin_configs)? {
        let value = serde_json::from_str(&json).with_context(|| format!("--plugin-config for {name} is not JSON"))?;
        config.plugin_config.insert(name, value);
    }
    config.validate()?;
    Ok(config)
}

fn run_pipeline(args: RunArgs) -> Result<ExitCode> {
    let config = pipeline_config(args)?;
    let pipeline = Host::start(config)?;
    eprintln!(
        "routewatch: HTTP API on http://{} (/metrics, /api/v1/plugins, /api/v1/anomalies, /healthz)",
        pipeline.http_addr()
    );
    wait_for_signal(&pipeline)?;
    pipeline.shutdown()?;
    Ok(ExitCode::SUCCESS)
}

/// Blocks (or unblocks) SIGINT and SIGTERM for the calling thread and the threads it starts.
pub(crate) fn block_termination_signals(block: bool) {
    // SAFETY: plain libc signal-set calls on a set we own; `pthread_sigmask` affects only the
    // calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let how = if block { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Blocks until SIGINT or SIGTERM, or until the pipeline stops by itself.
fn wait_for_signal(pipeline: &Host) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    block_termination_signals(false);
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tick.tick() => if pipeline.is_finished() { break },
            }
        }
        eprintln!("routewatch: stopping (finishing batches, saving state, committing offsets)");
        Ok(())
    })
}

fn run_replay(args: ReplayArgs) -> Result<ExitCode> {
    let runtime = runtime(&args.sandbox)?;
    let mut configs = parse_configs(&args.configs)?;
    let mut plugins = Vec::new();
    // A plugin that does not load is reported and left out; the others still run.
    let mut not_loaded = Vec::new();
    for path in &args.plugins {
        match runtime.load_file(path) {
            Ok(plugin) => {
                let config = configs.remove(&plugin.info().name);
                plugins.push(ReplayPlugin { plugin, config });
            }
            Err(err) => {
                eprintln!("  {}: FAILED to load: {err}", path.display());
                not_loaded.push(path);
            }
        }
    }
    if plugins.is_empty() {
        bail!("no plugin loaded");
    }
    if let Some(name) = configs.keys().next().filter(|_| not_loaded.is_empty()) {
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
    let mut failed = !not_loaded.is_empty();
    for p in &summary.plugins {
        if !p.ignored.is_empty() {
            eprintln!(
                "  {} {}: ignores {} (it reads only the metrics in its info; scores 0)",
                p.label,
                p.version,
                p.ignored.join(", ")
            );
        }
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
    Ok(Runtime::new(RuntimeConfig { cache_dir, limits, ..RuntimeConfig::default() })?)
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
