//! `routewatch-sim`: the fleet simulator's command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use routewatch_simulator::metrics::{DEFAULT_ROUTER_GAUGES_MAX, SimMetrics};
use routewatch_simulator::runner::{self, Pace, Runner, Stop};
use routewatch_simulator::sink::{self, FileSink, KafkaOptions, KafkaSink, NullSink, Sink};
use routewatch_simulator::{Engine, RuntimeConfig, TelemetryProfile, api, app_state};
use tracing::info;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One sample per router per interval, on the wall clock.
    RealTime,
    /// Event-time samples as fast as the sink takes them.
    Fast,
}

/// Simulates a fleet of routers with faults and ground truth, serving REST and Prometheus and
/// producing to Kafka or to JSON-lines files.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Number of routers.
    #[arg(long, env = "ROUTEWATCH_SIM_ROUTERS", default_value_t = 1000)]
    routers: u32,
    /// Sample interval (event time between samples), e.g. 1s, 60s, 500ms.
    #[arg(long, env = "ROUTEWATCH_SIM_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Random faults per router per day (0 disables the random schedule).
    #[arg(long, env = "ROUTEWATCH_SIM_FAULT_RATE", default_value_t = 0.1)]
    fault_rate: f64,
    /// Faults left alone have no consequences (no crashes, throttling or shutdowns).
    #[arg(long)]
    no_consequences: bool,
    /// Seed: the same seed, size, interval and start give the same records and faults.
    #[arg(long, env = "ROUTEWATCH_SIM_SEED", default_value_t = 1)]
    seed: u64,
    #[arg(long, env = "ROUTEWATCH_SIM_MODE", value_enum, default_value_t = Mode::RealTime)]
    mode: Mode,
    /// Telemetry profile: `clean` (Gaussian noise, smooth cycles) or `realistic` (heavy
    /// tails, bursts, quantised sensors, missing and late samples, planned changes).
    #[arg(long, env = "ROUTEWATCH_SIM_PROFILE", value_enum, default_value_t = TelemetryProfile::Clean)]
    profile: TelemetryProfile,
    /// Fast mode: event time of the first sample (RFC 3339). Real time starts now.
    #[arg(long, env = "ROUTEWATCH_SIM_START", default_value = "2025-01-06T00:00:00Z")]
    start: String,
    /// Stop after this much event time (e.g. 1d, 10m); runs until Ctrl-C when absent.
    #[arg(long, env = "ROUTEWATCH_SIM_DURATION", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,

    /// Kafka bootstrap servers; records go to --metrics-topic and faults to --faults-topic.
    #[arg(long, env = "ROUTEWATCH_BROKERS", conflicts_with = "out")]
    brokers: Option<String>,
    #[arg(long, env = "ROUTEWATCH_METRICS_TOPIC", default_value = "router-metrics")]
    metrics_topic: String,
    #[arg(long, env = "ROUTEWATCH_FAULTS_TOPIC", default_value = "router-faults")]
    faults_topic: String,
    /// Partitions of the metrics topic when the simulator creates it.
    #[arg(long, env = "ROUTEWATCH_SIM_PARTITIONS", default_value_t = 12)]
    partitions: i32,
    /// Producer compression: none, lz4, zstd, snappy or gzip.
    #[arg(long, env = "ROUTEWATCH_SIM_COMPRESSION", default_value = "lz4")]
    compression: String,
    /// Producer linger.ms.
    #[arg(long, env = "ROUTEWATCH_SIM_LINGER_MS", default_value_t = 20)]
    linger_ms: u32,
    /// Extra librdkafka producer property, key=value (repeatable).
    #[arg(long = "kafka-prop", value_parser = parse_kv)]
    kafka_props: Vec<(String, String)>,

    /// Write records as JSON lines to this file instead of Kafka.
    #[arg(long, env = "ROUTEWATCH_SIM_OUT")]
    out: Option<PathBuf>,
    /// Ground-truth file for --out (default: next to it, `NAME.faults.jsonl`); the planned
    /// changes, consequences and actions go next to it (`NAME.changes.jsonl`,
    /// `NAME.consequences.jsonl`, `NAME.actions.jsonl`).
    #[arg(long, env = "ROUTEWATCH_SIM_FAULTS_OUT", requires = "out")]
    faults_out: Option<PathBuf>,

    /// REST and /metrics listen address.
    #[arg(long, env = "ROUTEWATCH_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Do not serve REST (useful for generating data sets).
    #[arg(long, env = "ROUTEWATCH_SIM_NO_API")]
    no_api: bool,
    /// Do not create missing topics (for brokers without the CreateTopics API, such as
    /// librdkafka's mock cluster).
    #[arg(long, env = "ROUTEWATCH_SIM_NO_CREATE_TOPICS")]
    no_create_topics: bool,
    /// Export per-router Prometheus series only while the fleet has at most this many routers.
    #[arg(long, env = "ROUTEWATCH_SIM_ROUTER_GAUGES_MAX", default_value_t = DEFAULT_ROUTER_GAUGES_MAX)]
    router_gauges_max: u32,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not key=value"))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();

    let interval_ms = u64::try_from(cli.interval.as_millis()).context("interval too long")?;
    let config = RuntimeConfig {
        routers: cli.routers,
        interval_ms,
        fault_rate: cli.fault_rate,
        profile: cli.profile,
        consequences: !cli.no_consequences,
    };
    let (pace, start) = match cli.mode {
        Mode::RealTime => (Pace::RealTime, runner::next_aligned(runner::wall_ms(), interval_ms.max(1))),
        Mode::Fast => {
            let start = chrono::DateTime::parse_from_rfc3339(&cli.start)
                .with_context(|| format!("--start {:?} is not an RFC 3339 time", cli.start))?;
            (Pace::Fast, start.timestamp_millis())
        }
    };
    let until = cli.duration.map(|d| start + d.as_millis() as i64);
    if pace == Pace::Fast && until.is_none() && cli.out.is_some() {
        bail!("--out in fast mode needs --duration (otherwise the file grows until the disk is full)");
    }
    let engine = Arc::new(Mutex::new(Engine::new(cli.seed, config, start)?));
    let metrics = SimMetrics::default();

    let (sink, sink_name): (Box<dyn Sink>, &'static str) = if let Some(brokers) = &cli.brokers {
        if !cli.no_create_topics {
            sink::ensure_topics(brokers, &[(&cli.metrics_topic, cli.partitions), (&cli.faults_topic, 1)])
                .await
                .with_context(|| format!("creating topics on {brokers}"))?;
        }
        let mut opts = KafkaOptions::new(brokers);
        opts.metrics_topic = cli.metrics_topic.clone();
        opts.faults_topic = cli.faults_topic.clone();
        opts.compression = cli.compression.clone();
        opts.linger_ms = cli.linger_ms;
        opts.block_when_full = pace == Pace::Fast;
        opts.extra = cli.kafka_props.clone();
        (Box::new(KafkaSink::new(opts, metrics.clone())?), "kafka")
    } else if let Some(out) = &cli.out {
        let truth = cli.faults_out.clone().unwrap_or_else(|| FileSink::truth_path_for(out));
        info!(records = %out.display(), faults = %truth.display(), "writing JSON lines");
        (Box::new(FileSink::create(out, &truth)?), "file")
    } else {
        (Box::new(NullSink), "none")
    };

    let mode = match pace {
        Pace::RealTime => "real-time",
        Pace::Fast => "fast",
    };
    let state = app_state(engine.clone(), &metrics, cli.router_gauges_max, mode, sink_name);

    let stop = Stop::default();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let runner = {
        let stop = stop.clone();
        std::thread::Builder::new().name("sim-runner".into()).spawn(move || {
            let result = Runner::new(engine, sink, metrics).run(pace, until, &stop);
            let _ = done_tx.send(());
            result
        })?
    };

    let server = if cli.no_api {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("binding the REST API to {}", cli.listen))?;
        info!(listen = %listener.local_addr()?, "REST API and /metrics listening");
        let app = api::router(state);
        let stop = stop.clone();
        Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Stop serving once the runner has stopped, however it stopped.
                    while !stop.is_stopped() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                })
                .await
        }))
    };

    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted; stopping"),
        _ = done_rx => {}
    }
    stop.stop();
    let summary = tokio::task::spawn_blocking(move || runner.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the simulation thread panicked"))??;
    if let Some(server) = server {
        server.await??;
    }
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
