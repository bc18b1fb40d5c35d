//! Time to repair, with and without self-healing: the simulator runs the same fleet with the
//! same random faults twice, in a closed loop with detection. Each tick, its records go
//! through the default detectors and the incident stage (with the forest classifier), and the
//! incident updates through a [`Healer`]: once with every policy `off`, once with the
//! recommended policies in `auto`, whose actions the simulator carries out (as its
//! `POST /routers/{id}/actions` would, in-process). The simulator's remediation keeps the
//! random schedule as it was (a fault ended early keeps its slot), so both runs get the same
//! faults, and consequences are on, so a leak left alone crashes its router.
//!
//! Per fault kind: the mean time to repair each way (a fault's start to its end: its planned
//! end, a crash, or the action that fixed it), the share fixed by an action, the actions that
//! did not help, and the consequences (crashes, throttling, shutdowns) each run had.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use routewatch_engine::metrics::Metrics;
use routewatch_engine::{
    Classifier, Delivery, Engine, EngineConfig, FixedPlugin, IncidentStage, Intake, Plugins, Pull, Sink, SinkError,
    Source, SourceError,
};
use routewatch_incidents::{Incident, RouterConfig};
use routewatch_remediation::{Healer, HealingConfig, Mode, Policy, Sent, Status};
use routewatch_runtime::Runtime;
use routewatch_simulator::actions::{ActionRequest, Outcome};
use routewatch_simulator::{Engine as Simulator, RuntimeConfig as SimConfig, TelemetryProfile};
use routewatch_telemetry::{Action, FaultKind, Metric, Record};

use crate::dataset::START_MS;
use crate::report::replace_section;

/// What to simulate.
#[derive(clap::Args, Debug, Clone)]
pub struct RepairArgs {
    #[arg(long, default_value_t = 400)]
    pub routers: u32,
    /// Days simulated; the first is warm-up (its faults are not scored).
    #[arg(long, default_value_t = 3)]
    pub days: u32,
    #[arg(long, default_value_t = 60)]
    pub interval_s: u64,
    /// Random faults per router per day.
    #[arg(long, default_value_t = 0.5)]
    pub fault_rate: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = TelemetryProfile::Realistic)]
    pub profile: TelemetryProfile,
    /// The policies' least confidence in the cause.
    #[arg(long, default_value_t = 0.5)]
    pub min_confidence: f64,
    /// Directory of the components (default: next to this binary's target).
    #[arg(long)]
    pub plugins: Option<PathBuf>,
    /// Replace the "Time to repair" section of this file (BENCHMARKS.md).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

/// The recommended policy of each fault kind: the action that fixes it (the simulator's
/// table; a real fleet's runbooks would say the same).
pub fn recommended(kind: FaultKind) -> Action {
    match kind {
        FaultKind::MemoryLeak | FaultKind::CpuRunaway => Action::RestartProcess,
        FaultKind::LinkFlap => Action::ResetInterface,
        FaultKind::RouteFlap => Action::DampenPeer,
        FaultKind::HardwarePsu => Action::FailoverPsu,
        FaultKind::TrafficSpike | FaultKind::PacketLoss => Action::RerouteTraffic,
        FaultKind::HardwareTemperature => Action::BoostFans,
        FaultKind::HardwareFan => Action::ReplaceFanTray,
    }
}

/// The guard rails of the auto run: the defaults but two. The blast radius, which the
/// simulated sites (a few routers each at this size) would otherwise hold at zero; and the
/// verification window, which at one sample a minute must outlast the incident's quiet period
/// (10 samples) and the detector's return to the new normal after a fix, or the breakers open
/// on policies that work.
fn guard_rails(policies: Vec<Policy>) -> HealingConfig {
    HealingConfig { blast_radius: 0.5, verify_secs: 3600, policies, ..HealingConfig::default() }
}

/// One tick's records, as a source (also the prediction run's).
pub(crate) struct Tick {
    pub(crate) records: Vec<Record>,
    pub(crate) next: i64,
    pub(crate) taken: bool,
}

impl Source for Tick {
    fn pull(&mut self, intake: &mut Intake<'_>) -> Result<Pull, SourceError> {
        if std::mem::replace(&mut self.taken, true) {
            return Ok(Pull::Idle);
        }
        for record in &self.records {
            let values = Metric::ALL.map(|m| record.metrics.get(m));
            intake.row(self.next, &record.router, Some(&record.site), Some(record.role.name()), record.ts, values);
            self.next += 1;
        }
        // A whole tick, and nothing more until the next: run it now.
        Ok(Pull::Idle)
    }
}

/// Keeps the incident updates of each batch.
pub(crate) struct Updates(pub(crate) Arc<Mutex<Vec<Incident>>>);

impl Sink for Updates {
    fn name(&self) -> &'static str {
        "repair"
    }

    fn deliver(&mut self, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        let mut kept = self.0.lock().expect("updates lock");
        kept.extend(delivery.processed.incidents.iter().map(|u| u.incident.clone()));
        Ok(())
    }
}

/// What one run did.
#[derive(Default)]
struct Run {
    /// Per fault kind: repair times (minutes) of the scored faults, and how many an action fixed.
    repairs: std::collections::HashMap<FaultKind, (Vec<f64>, usize)>,
    /// Actions by kind: (sent, fixed something).
    actions: BTreeMap<Action, (usize, usize)>,
    consequences: BTreeMap<String, usize>,
    /// Healing records by status.
    statuses: BTreeMap<&'static str, usize>,
}

fn simulate(args: &RepairArgs, heal: bool, runtime: &Runtime, dir: &std::path::Path) -> Result<Run> {
    let interval_ms = args.interval_s * 1000;
    let config = SimConfig {
        routers: args.routers,
        interval_ms,
        fault_rate: args.fault_rate,
        profile: args.profile,
        consequences: true,
    };
    let mut sim = Simulator::new(args.seed, config, START_MS).map_err(|e| anyhow::anyhow!("{e}"))?;
    let metrics = Arc::new(Metrics::default());
    let plugins = crate::default_set()
        .into_iter()
        .map(|stem| Ok(FixedPlugin { plugin: crate::load_component(runtime, dir, stem)?, config: None }))
        .collect::<Result<Vec<_>>>()?;
    let forest = routewatch_runtime::classifier::load_file(runtime, &dir.join("routewatch_classifier_forest.wasm"))
        .context("loading the forest classifier")?;
    let causes = forest.info().causes.clone();
    let stage = IncidentStage::new(
        RouterConfig { interval_ms: interval_ms as i64, ..RouterConfig::default() },
        Some(Classifier::new(forest, "{}".into())),
        metrics.clone(),
        0,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let columns = Metric::ALL.iter().map(|m| m.name().to_owned()).collect();
    let engine_config = EngineConfig {
        stream: 0,
        columns,
        max_snapshot_bytes: 64 << 20,
        stamp_detection: false,
        batch_records: args.routers as usize,
    };
    let mut engine = Engine::new(engine_config, Plugins::Fixed(plugins), metrics).with_incidents(stage);
    let policies = FaultKind::ALL
        .into_iter()
        .filter(|k| causes.iter().any(|c| c == k.name()))
        .map(|kind| Policy {
            name: format!("fix-{}", kind.name()),
            cause: kind.name().into(),
            min_confidence: args.min_confidence,
            action: recommended(kind),
            mode: if heal { Mode::Auto } else { Mode::Off },
            target: "http://simulator.invalid".into(),
            timeout_secs: 10.0,
            retries: 0,
        })
        .collect();
    let mut healer = Healer::new(guard_rails(policies), causes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let updates = Arc::new(Mutex::new(Vec::new()));
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(Updates(updates.clone()))];
    let ticks = i64::from(args.days) * 86_400_000 / interval_ms as i64;
    let mut run = Run::default();
    let mut next = 0;
    for t in 0..ticks {
        let ts = START_MS + t * interval_ms as i64;
        sim.tick(ts);
        let mut source = Tick { records: sim.delivered().to_vec(), next, taken: false };
        next += source.records.len() as i64;
        engine.step(&mut source, &mut sinks).map_err(|e| anyhow::anyhow!("{e}"))?;
        let incidents = std::mem::take(&mut *updates.lock().expect("updates lock"));
        let mut effects = healer.tick(ts);
        for incident in &incidents {
            let more = healer.on_incident(incident, ts);
            effects.records.extend(more.records);
            effects.executions.extend(more.executions);
        }
        for execution in effects.executions {
            let request = ActionRequest {
                action: execution.action.name().into(),
                reason: Some(format!("incident {}", execution.incident)),
                requested_by: Some(format!("routewatch:{}", execution.policy)),
            };
            let sent = match sim.act(&execution.router, &request) {
                Ok(record) => Sent { ok: true, attempts: 1, detail: record.id },
                Err(err) => Sent { ok: false, attempts: 1, detail: err.to_string() },
            };
            effects.records.extend(healer.executed(&execution.id, sent, ts).records);
        }
        for record in effects.records {
            if record.status != Status::Executing {
                *run.statuses.entry(record.status.name()).or_default() += 1;
            }
        }
    }
    // Scored: faults that started after the first day (the detectors' warm-up) and ended
    // within the run.
    let scored_from = START_MS + 86_400_000;
    let end = START_MS + ticks * interval_ms as i64;
    let fixed_by_action: std::collections::HashSet<String> =
        sim.actions().all().flat_map(|a| a.fixed.iter().map(|f| f.id.clone())).collect();
    for fault in sim.faults().all() {
        let f = &fault.event;
        if f.start < scored_from || f.end > end {
            continue;
        }
        let entry = run.repairs.entry(f.kind).or_default();
        entry.0.push((f.end - f.start) as f64 / 60_000.0);
        entry.1 += usize::from(fixed_by_action.contains(&f.id));
    }
    for action in sim.actions().all() {
        let entry = run.actions.entry(action.action).or_default();
        entry.0 += 1;
        entry.1 += usize::from(action.outcome == Some(Outcome::Fixed));
    }
    for c in sim.consequences().all().filter(|c| c.start >= scored_from) {
        *run.consequences.entry(c.kind.name().to_owned()).or_default() += 1;
    }
    Ok(run)
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 }
}

/// Runs both ways and reports.
pub fn run(args: &RepairArgs) -> Result<()> {
    let dir = crate::speed::plugin_dir(args.plugins.as_ref())?;
    let runtime = crate::speed::bench_runtime()?;
    let started = std::time::Instant::now();
    let off = simulate(args, false, &runtime, &dir)?;
    let auto = simulate(args, true, &runtime, &dir)?;
    let mut table = String::from(
        "| fault kind | faults | MTTR, remediation off (min) | MTTR, auto (min) | fixed by an action |\n|---|---:|---:|---:|---:|\n",
    );
    for kind in FaultKind::ALL {
        let (Some((off_times, _)), Some((auto_times, fixed))) = (off.repairs.get(&kind), auto.repairs.get(&kind))
        else {
            continue;
        };
        let _ = writeln!(
            table,
            "| {} | {} | {:.1} | {:.1} | {:.2} |",
            kind.name(),
            auto_times.len(),
            mean(off_times),
            mean(auto_times),
            *fixed as f64 / auto_times.len().max(1) as f64
        );
    }
    let mut actions = String::from("| action | sent | fixed a fault | did not help |\n|---|---:|---:|---:|\n");
    for (action, (sent, fixed)) in &auto.actions {
        let _ = writeln!(actions, "| {action} | {sent} | {fixed} | {} |", sent - fixed);
    }
    let mut consequences = String::from("| consequence | remediation off | auto | avoided |\n|---|---:|---:|---:|\n");
    let kinds: std::collections::BTreeSet<&String> = off.consequences.keys().chain(auto.consequences.keys()).collect();
    for kind in kinds {
        let (o, a) =
            (off.consequences.get(kind).copied().unwrap_or(0), auto.consequences.get(kind).copied().unwrap_or(0));
        let _ = writeln!(consequences, "| {kind} | {o} | {a} | {} |", o as i64 - a as i64);
    }
    let statuses: Vec<String> = auto.statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
    let text = format!(
        "## Time to repair\n\n\
         Command: `cargo xtask quality`, or `routewatch-quality repair --routers {routers} --days {days} --seed {seed} --profile {profile} \
         --min-confidence {conf}`  \n\
         Machine: {machine}; both runs took {secs:.0} s.  \n\
         Setup: the simulator ({routers} routers, {days} days at {interval} s, {rate} random faults per router per \
         day, consequences on, seed {seed}) in a closed loop with the default detectors, the incident stage and \
         the forest classifier; the same faults both runs. Remediation off: every policy `off`. Auto: one policy \
         per cause, the action that fixes it (`restart-process` for leaks and runaways, `reset-interface`, \
         `dampen-peer`, `failover-psu`, `reroute-traffic` for spikes and loss, `boost-fans`, `replace-fan-tray`), \
         `min_confidence` {conf}, the default guard rails but a blast radius of 0.5 and a verification window \
         of an hour (at one sample a minute the default 15 minutes is shorter than an incident takes to \
         resolve after a fix, so breakers opened on policies that worked). Faults that started on the \
         first day (warm-up) or ended after the run are not scored; a fault's repair time is its start to its \
         end (its planned end, a crash, or the fix). Nothing was tuned on this seed: the policies are the \
         simulator's fixes and 0.5 is the classifier's own verdict threshold (the forest was trained on seed 1 \
         and validated on seed 2).\n\n\
         {table}\n\
         Actions in the auto run (an action that did not help was sent for a cause the fault did not have, or \
         after the fault had ended):\n\n{actions}\n\
         Consequences (started after the first day):\n\n{consequences}\n\
         Self-healing records in the auto run, by status (an executed action counts again when it is \
         settled): {statuses}.\n",
        routers = args.routers,
        days = args.days,
        seed = args.seed,
        profile = format!("{:?}", args.profile).to_lowercase(),
        conf = args.min_confidence,
        machine = crate::machine(),
        secs = started.elapsed().as_secs_f64(),
        interval = args.interval_s,
        rate = args.fault_rate,
        statuses = statuses.join(", "),
    );
    println!("{text}");
    if let Some(path) = &args.write {
        replace_section(path, "## Time to repair", &text)?;
    }
    Ok(())
}
