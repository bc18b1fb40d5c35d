//! `routewatch demo`: librdkafka's mock cluster in-process, the simulator as a child process,
//! and the streaming host, with incidents printed as they open, change and resolve (raw
//! anomalies too with `--anomalies`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use rdkafka::mocking::MockCluster;
use routewatch_host::replay::format_ts;
use routewatch_host::{Host, HostConfig};
use routewatch_incidents::{Change, IncidentUpdate, SiteChange, SiteUpdate};
use tokio::sync::broadcast::error::RecvError;

#[derive(Args)]
pub struct DemoArgs {
    /// Detector components to run.
    #[arg(long = "plugin", short = 'p', required = true)]
    plugins: Vec<PathBuf>,
    /// The simulator binary (default: `routewatch-sim` beside this one).
    #[arg(long)]
    simulator: Option<PathBuf>,
    /// Routers in the simulated fleet.
    #[arg(long, default_value_t = 1000)]
    routers: usize,
    /// Random faults per router per day (the demo's fleet is unlucky, so something happens).
    #[arg(long, default_value_t = 20.0)]
    fault_rate: f64,
    /// Partitions of the metrics topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// The host's HTTP API.
    #[arg(long, default_value = "127.0.0.1:9400")]
    listen: SocketAddr,
    /// The simulator's REST API.
    #[arg(long, default_value = "127.0.0.1:8090")]
    simulator_listen: SocketAddr,
    /// Samples before ARIMA's first fit; short, so the demo detects within a minute.
    #[arg(long, default_value_t = 30)]
    warmup: usize,
    /// The cause classifier component (without one, incidents carry no cause).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Print every anomaly as well as the incidents.
    #[arg(long)]
    anomalies: bool,
}

/// The simulator's ground truth, beside the host's own topics.
const FAULTS_TOPIC: &str = "router-faults";

/// The simulator's sampling interval in the demo.
const SAMPLE: Duration = Duration::from_secs(1);

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let cluster = MockCluster::new(1).context("starting librdkafka's mock cluster")?;
    let brokers = cluster.bootstrap_servers();
    let mut config = HostConfig {
        brokers: brokers.clone(),
        group_id: "routewatch-demo".into(),
        create_topics: false,
        partitions: args.partitions,
        plugins: args.plugins.clone(),
        listen: args.listen,
        linger_ms: 100,
        snapshot_interval_secs: 30,
        classifier: args.classifier.clone(),
        // The demo's simulator samples once a second (below): the incident periods count those.
        incident_config: routewatch_incidents::RouterConfig {
            interval_ms: SAMPLE.as_millis() as i64,
            ..routewatch_incidents::RouterConfig::default()
        },
        ..HostConfig::default()
    };
    config
        .plugin_config
        .insert("arima".into(), serde_json::json!({"warmup": args.warmup, "window": (args.warmup * 4).max(120)}));
    // The mock cluster cannot create topics on request: the host's own list, made here.
    let topics = routewatch_host::broker::topics(&config);
    for (name, partitions) in topics.iter().map(|t| (t.name.as_str(), t.partitions)).chain([(FAULTS_TOPIC, 1)]) {
        cluster.create_topic(name, partitions, 1).with_context(|| format!("creating {name}"))?;
    }

    let simulator = args
        .simulator
        .clone()
        .unwrap_or_else(|| std::env::current_exe().expect("own path").with_file_name("routewatch-sim"));
    let mut sim = Simulator::start(&simulator, &brokers, &args)?;
    let pipeline = Host::start(config)?;

    println!("routewatch demo: {} simulated routers, broker {brokers} (librdkafka mock cluster)", args.routers);
    println!("  host       http://{}/metrics  http://{}/anomalies", pipeline.http_addr(), pipeline.http_addr());
    println!("  simulator  http://{}/routers/simulate  http://{}/faults", args.simulator_listen, args.simulator_listen);
    println!(
        "  inject a fault: curl -X POST http://{}/faults -H 'content-type: application/json' \\",
        args.simulator_listen
    );
    println!("                   -d '{FAULT_EXAMPLE}'");
    println!(
        "  or one at every router of a site: curl -X POST http://{}/sites/{SITE_EXAMPLE}/faults \\",
        args.simulator_listen
    );
    println!("                   -H 'content-type: application/json' -d '{SITE_FAULT_EXAMPLE}'");
    println!(
        "  ARIMA warms up for {} s; incidents appear below{}. Ctrl-C stops.\n",
        args.warmup,
        if args.anomalies { ", with every anomaly" } else { " (--anomalies shows every anomaly too)" }
    );
    println!(
        "{:<24} {:<9} {:<12} {:<8} {:<10} cause (confidence), metrics",
        "event time", "change", "router", "site", "severity"
    );

    let started = Instant::now();
    let outcome = print_until_interrupted(&pipeline, &mut sim, args.anomalies);
    println!("\nstopping after {:.0} s", started.elapsed().as_secs_f64());
    sim.stop();
    pipeline.shutdown()?;
    drop(cluster);
    outcome.map(|()| ExitCode::SUCCESS)
}

/// One line per site incident change: when, what, the site, how bad, and its routers.
fn site_line(update: &SiteUpdate) -> String {
    let i = &update.incident;
    let (at, change) = match update.change {
        SiteChange::Opened => (i.opened, "opened"),
        SiteChange::Updated => (i.opened, "updated"),
        SiteChange::Resolved => (i.resolved.unwrap_or(i.opened), "resolved"),
        SiteChange::Reopened => (i.opened, "reopened"),
    };
    let shown = i.routers.iter().take(4).map(String::as_str).collect::<Vec<_>>().join(", ");
    let more = if i.routers.len() > 4 { format!(" and {} more", i.routers.len() - 4) } else { String::new() };
    format!(
        "{:<24} {:<9} {:<12} {:<8} {:<10} {} routers at once ({} still open), likely upstream: {shown}{more}",
        format_ts(at),
        change,
        "SITE",
        i.key,
        i.severity.name(),
        i.routers.len(),
        i.open
    )
}

/// One line per incident change: when, what, where, how bad, the probable cause and how sure.
fn incident_line(update: &IncidentUpdate) -> String {
    let i = &update.incident;
    let at = match update.change {
        Change::Resolved => i.resolved.unwrap_or(i.last_anomaly),
        Change::Withdrawn => i.resolved.unwrap_or(i.last_anomaly),
        Change::Opened | Change::Reopened => i.opened,
        Change::Updated => i.last_anomaly,
    };
    let change = match update.change {
        Change::Opened => "opened",
        Change::Updated => "updated",
        Change::Resolved => "resolved",
        Change::Reopened => "reopened",
        Change::Withdrawn => "withdrawn",
    };
    if let Some(p) = &i.prediction {
        let site = i.site.as_deref().unwrap_or("-");
        return format!("{:<24} {:<9} {:<12} {:<8} predicted  {}", format_ts(at), change, i.router, site, p.summary);
    }
    let cause = match (i.cause.as_deref(), i.causes.first()) {
        (Some(verdict), Some(top)) => format!("{verdict} ({} {:.2})", top.cause, top.probability),
        (Some(verdict), None) => verdict.to_owned(),
        (None, _) => "unclassified".to_owned(),
    };
    format!(
        "{:<24} {:<9} {:<12} {:<8} {:<10} {cause}, {}",
        format_ts(at),
        change,
        i.router,
        i.site.as_deref().unwrap_or("-"),
        i.severity.name(),
        i.metrics.join("+")
    )
}

fn print_until_interrupted(pipeline: &Host, sim: &mut Simulator, anomalies: bool) -> Result<()> {
    let mut live = pipeline.feed().subscribe();
    let mut incidents = pipeline.incidents().subscribe();
    let mut sites = pipeline.incidents().subscribe_sites();
    // A site incident changes once per router that joins or leaves: the demo prints its
    // latest state once a second instead, and its opening and resolution at once.
    let mut site_changes: std::collections::BTreeMap<String, SiteUpdate> = Default::default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    crate::block_termination_signals(false);
    runtime.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // SIGTERM stops the demo as Ctrl-C does, so that its simulator stops with it.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = term.recv() => return Ok(()),
                update = incidents.recv() => match update {
                    Ok(update) => println!("{}", incident_line(&update)),
                    Err(RecvError::Lagged(n)) => println!("... {n} more incident changes"),
                    Err(RecvError::Closed) => return Ok(()),
                },
                update = sites.recv() => match update {
                    Ok(update) if update.change == SiteChange::Updated => {
                        site_changes.insert(update.incident.id.clone(), update);
                    }
                    Ok(update) => {
                        site_changes.remove(&update.incident.id);
                        println!("{}", site_line(&update));
                    }
                    Err(RecvError::Lagged(n)) => println!("... {n} more site incident changes"),
                    Err(RecvError::Closed) => return Ok(()),
                },
                event = live.recv(), if anomalies => match event {
                    Ok(a) => println!(
                        "{:<24} {:<9} {:<12} {:<11} {:<12} {:>5.2}  {}",
                        format_ts(a.ts), "anomaly", a.router, a.metric, a.kind.name(), a.score, a.reason
                    ),
                    Err(RecvError::Lagged(n)) => println!("... {n} more anomalies"),
                    Err(RecvError::Closed) => return Ok(()),
                },
                _ = tick.tick() => {
                    for update in std::mem::take(&mut site_changes).into_values() {
                        println!("{}", site_line(&update));
                    }
                    if let Some(status) = sim.exited() {
                        anyhow::bail!("the simulator stopped ({status}); see its log at {}", sim.log.display());
                    }
                    if pipeline.is_finished() {
                        anyhow::bail!("the host stopped; see the log above");
                    }
                }
            }
        }
    })
}

struct Simulator {
    child: Child,
    log: PathBuf,
}

impl Simulator {
    fn start(binary: &PathBuf, brokers: &str, args: &DemoArgs) -> Result<Simulator> {
        let log = std::env::temp_dir().join("routewatch-demo-simulator.log");
        let file = std::fs::File::create(&log)?;
        let child = Command::new(binary)
            .args(["--brokers", brokers, "--mode", "real-time", "--interval", &format!("{}s", SAMPLE.as_secs())])
            .args(["--routers", &args.routers.to_string(), "--fault-rate", &args.fault_rate.to_string()])
            .args(["--listen", &args.simulator_listen.to_string(), "--no-create-topics"])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| {
                format!("starting the simulator {} (build it with `cargo xtask build`)", binary.display())
            })?;
        Ok(Simulator { child, log })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the simulator (once; stopping a stopped one does nothing).
    fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // SIGTERM lets it flush; it has a few seconds before it is killed.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.exited().is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Simulator {
    /// A demo that fails after starting its simulator (the host refused to start, say) does
    /// not leave it running.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The fault the demo tells a newcomer to inject (the body of the simulator's `POST /faults`).
const FAULT_EXAMPLE: &str = r#"{"kind":"cpu-runaway","router":"rtr-000001","duration_s":120}"#;
/// The site fault it suggests (`POST /sites/{site}/faults`): upstream loss at one site.
const SITE_EXAMPLE: &str = "fra1";
const SITE_FAULT_EXAMPLE: &str = r#"{"kind":"packet-loss","duration_s":120}"#;

#[cfg(test)]
mod tests {
    #[test]
    fn the_printed_fault_command_is_one_the_simulator_accepts() {
        let request: routewatch_simulator::engine::FaultRequest =
            serde_json::from_str(super::FAULT_EXAMPLE).expect("the simulator's own request type parses it");
        assert_eq!(request.duration_s, Some(120.0));
        let request: routewatch_simulator::engine::FaultRequest =
            serde_json::from_str(super::SITE_FAULT_EXAMPLE).expect("the site fault's body parses too");
        assert!(request.router.is_none(), "a site fault names no router");
    }

    #[test]
    fn the_site_the_demo_suggests_has_routers_in_its_fleet() {
        let mut engine = routewatch_simulator::engine::Engine::new(
            1,
            routewatch_simulator::engine::RuntimeConfig { routers: 1000, ..Default::default() },
            0,
        )
        .expect("the demo's fleet");
        let request = serde_json::from_str(super::SITE_FAULT_EXAMPLE).unwrap();
        let faults = engine.inject_site(super::SITE_EXAMPLE, &request).expect("the site exists");
        assert!(faults.len() >= 3, "enough routers for a site incident: {}", faults.len());
    }
}
