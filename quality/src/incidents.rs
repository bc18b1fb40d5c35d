//! Incidents on a simulated labelled fleet: the shipped detectors' anomalies grouped by the
//! incidents crate, each incident labelled with the fault it belongs to.
//!
//! * `incident-dataset` writes one CSV row per evidence state of each incident: its id, router,
//!   opening time, label, the state's age and whether it is the final one, and the feature
//!   vector (layout `routewatch_incidents::FEATURE_LAYOUT_VERSION`). The classifier's training
//!   script (`plugins/classifier-forest/train/`) reads it.
//! * `incident-quality` runs the classifier component over the incidents too, and scores them
//!   (see [`crate::incident_score`]).
//!
//! **Labels.** An incident belongs to a fault on its router when the incident's span (first to
//! last anomaly) overlaps the fault's window (start to end + `grace` samples). Of several, it
//! is the one that started last at or before the incident opened (else the first to start):
//! the fault the incident opened for. An incident of no fault that overlaps a planned change
//! on its router is labelled `planned:<kind>`; any other is `none` (a false incident).
//!
//! **Replay.** Anomalies are fed in the order the replay wrote them (batch order), and event
//! time is advanced tick by tick up to each anomaly's timestamp, as the engine advances it
//! after each batch, so the quiet period runs on record time.
//!
//! **Evidence states.** The host names an incident's cause whenever the incident changes, on
//! the evidence it holds at the end of that batch: first when it opens, with every anomaly of
//! the batch it opened in (a record holds all metrics of a router's sample, so a batch holds
//! whole samples), and last when its feature window closes. So the harness keeps the evidence
//! each time the stream's event time moves past a sample, one state per distinct vector: the
//! classifier is trained on each (a forest trained on final evidence only named the first
//! alert's cause wrongly a third of the time) and scored on the first and the last. A replay
//! batch reaches into the next sample or two and lists its anomalies metric by metric, so an
//! incident can open after event time already moved on: its first state is then 1 or 2
//! samples old, as the host's first verdict is when a batch spans samples.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use routewatch_engine::replay::{InputFormat, ReplayOptions, replay};
use routewatch_incidents::{Change, FEATURE_LAYOUT_VERSION, Incident, RouterConfig, RouterStage, feature_names};
use routewatch_runtime::{Limits, Runtime, RuntimeConfig};
use routewatch_simulator::TelemetryProfile;
use routewatch_telemetry::{AnomalyEvent, FaultEvent, PlannedChange};

use crate::{DETECTORS, dataset};

/// What to simulate and which detectors feed the incidents.
#[derive(clap::Args, Debug, Clone)]
pub struct IncidentArgs {
    #[arg(long, default_value_t = 1000)]
    pub routers: u32,
    /// Days simulated; all but the last `eval_days` are warm-up.
    #[arg(long, default_value_t = 3)]
    pub days: u32,
    /// Days at the end whose incidents (and faults) are kept.
    #[arg(long, default_value_t = 1)]
    pub eval_days: u32,
    #[arg(long, default_value_t = 60)]
    pub interval_s: u64,
    /// Random faults per router per day.
    #[arg(long, default_value_t = 0.5)]
    pub fault_rate: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = TelemetryProfile::Clean)]
    pub profile: TelemetryProfile,
    /// Samples after a fault's end that still belong to it.
    #[arg(long, default_value_t = 5)]
    pub grace: i64,
    /// Reopen period of the router stage, samples (`RouterConfig::reopen_samples`).
    #[arg(long, default_value_t = RouterConfig::default().reopen_samples)]
    pub reopen_samples: u32,
    /// Recall period of the router stage, samples (`RouterConfig::recall_samples`; 0 off).
    #[arg(long, default_value_t = RouterConfig::default().recall_samples)]
    pub recall_samples: u32,
    /// Score that opens an incident (`RouterConfig::open_score`).
    #[arg(long, default_value_t = RouterConfig::default().open_score)]
    pub open_score: f64,
    /// Feature window of the router stage, samples (`RouterConfig::feature_window_samples`);
    /// a classifier is trained on one window.
    #[arg(long, default_value_t = RouterConfig::default().feature_window_samples)]
    pub feature_window_samples: u32,
    /// Detectors whose anomalies make the incidents; by default the default set
    /// (`deploy/default-detectors.txt`), which the shipped classifier was trained on.
    #[arg(long, value_delimiter = ',', default_values_t = crate::default_set_names().into_iter().map(String::from).collect::<Vec<_>>())]
    pub detectors: Vec<String>,
    /// Directory of the components; default `<target>/wasm32-wasip2/plugin`.
    #[arg(long)]
    pub plugins: Option<PathBuf>,
    /// Where the data sets (one folder per profile and seed) and anomalies go.
    #[arg(long, default_value = "target/quality")]
    pub out_dir: PathBuf,
    /// Reuse an existing data set and its anomalies in `out_dir` if their parameters match.
    #[arg(long)]
    pub reuse: bool,
}

/// One incident with its label and features.
#[derive(Debug, Clone)]
pub struct Row {
    pub incident: Incident,
    /// A fault kind, `planned:<kind>` or `none`.
    pub label: String,
    pub fault: Option<String>,
    /// The evidence the classifier judges once the feature window closed.
    pub features: Vec<f64>,
    /// Every distinct evidence state of the window, oldest first (see the module docs).
    pub states: Vec<State>,
}

impl Row {
    /// The evidence the incident opened with (its first state): what the host's first verdict
    /// (the first alert's cause) rests on.
    pub fn at_opening(&self) -> &[f64] {
        &self.states[0].features
    }
}

/// The evidence of an incident when event time moved past one sample of its feature window.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// Samples from the incident's opening to the latest sample seen when this was taken.
    pub age: u32,
    pub features: Vec<f64>,
}

/// The incidents of a run and the ground truth they are scored against.
pub struct Run {
    /// The incidents that open in the scored window.
    pub rows: Vec<Row>,
    /// Every incident of the run, with the fault it belongs to.
    pub all: Vec<(Incident, Option<String>)>,
    pub faults: Vec<FaultEvent>,
    /// Scored window, event time.
    pub from: i64,
    pub to: i64,
    pub interval_ms: i64,
    pub routers: u32,
    pub anomalies: usize,
    pub config: RouterConfig,
}

/// Simulates (or reuses), replays the detectors, groups their anomalies into incidents and
/// labels those that open in the last `eval_days`.
pub fn build(args: &IncidentArgs) -> Result<Run> {
    anyhow::ensure!(args.eval_days >= 1 && args.eval_days < args.days, "eval_days must be 1 to days - 1");
    let dir = args.out_dir.join(format!("{}-seed{}", args.profile.name(), args.seed));
    let params = dataset::Params {
        routers: args.routers,
        days: args.days,
        interval_s: args.interval_s,
        fault_rate: args.fault_rate,
        seed: args.seed,
        profile: args.profile,
    };
    let data = dataset::make(&dir, params, args.reuse)?;
    let anomalies_path = dir.join(format!("anomalies-{}.jsonl", args.detectors.join("+")));
    let stamp = dir.join(format!("anomalies-{}.params", args.detectors.join("+")));
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(args.out_dir.join("components")),
        limits: Limits { cpu_budget: std::time::Duration::from_secs(600), memory_bytes: 2 << 30, ..Limits::default() },
        ..RuntimeConfig::default()
    })?;
    let plugins = load_detectors(args, &runtime)?;
    // The anomalies are those of this data and of these builds of the detectors: a rebuilt
    // component replays again.
    let mut anomalies_stamp = std::fs::read_to_string(dir.join("fleet.params")).unwrap_or_default();
    for (name, p) in args.detectors.iter().zip(&plugins) {
        anomalies_stamp.push_str(&format!("\n{name} {}", p.plugin.sha256()));
    }
    let fresh =
        args.reuse && anomalies_path.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == anomalies_stamp);
    if fresh {
        tracing::info!("reusing {}", anomalies_path.display());
    } else {
        let _ = std::fs::remove_file(&stamp);
        replay_detectors(args, plugins, &data, &anomalies_path)?;
        std::fs::write(&stamp, &anomalies_stamp)?;
    }
    let events = read_events(&anomalies_path)?;
    let config = RouterConfig {
        interval_ms: data.interval_ms,
        reopen_samples: args.reopen_samples,
        recall_samples: args.recall_samples,
        feature_window_samples: args.feature_window_samples,
        open_score: args.open_score,
        ..RouterConfig::default()
    };
    let from = data.end - i64::from(args.eval_days) * 86_400_000;
    let incidents = group(&config, &events, dataset::START_MS, data.end)?;
    let grace_ms = args.grace * data.interval_ms;
    let mut all = Vec::with_capacity(incidents.len());
    let mut rows = Vec::new();
    for Grouped { incident, features, states } in incidents {
        let (label, fault) = label(&incident, &data.faults, &data.changes, grace_ms);
        all.push((incident.clone(), fault.clone()));
        if incident.opened >= from && incident.opened < data.end {
            rows.push(Row { incident, label, fault, features, states });
        }
    }
    Ok(Run {
        rows,
        all,
        faults: data.faults,
        from,
        to: data.end,
        interval_ms: data.interval_ms,
        routers: data.routers,
        anomalies: events.len(),
        config,
    })
}

/// The components of `args.detectors`, loaded from `--plugins` (the runtime must outlive
/// their calls: its epoch ticker enforces the CPU budget).
fn load_detectors(args: &IncidentArgs, runtime: &Runtime) -> Result<Vec<routewatch_engine::replay::ReplayPlugin>> {
    let dir = match &args.plugins {
        Some(dir) => dir.clone(),
        None => crate::default_plugin_dir()?,
    };
    let mut plugins = Vec::new();
    for name in &args.detectors {
        let (stem, _) = DETECTORS
            .iter()
            .find(|(_, n)| n == name)
            .with_context(|| format!("unknown detector {name}; known: {:?}", DETECTORS.map(|d| d.1)))?;
        let plugin = crate::load_component(runtime, &dir, stem)?;
        plugins.push(routewatch_engine::replay::ReplayPlugin { plugin, config: None });
    }
    Ok(plugins)
}

fn replay_detectors(
    args: &IncidentArgs,
    plugins: Vec<routewatch_engine::replay::ReplayPlugin>,
    data: &dataset::Dataset,
    out: &Path,
) -> Result<()> {
    let options = ReplayOptions {
        input: data.records.clone(),
        format: InputFormat::Jsonl,
        scores: None,
        anomalies: Some(out.to_path_buf()),
        batch_rows: data.routers as usize,
        csv_router: "series".into(),
        csv_metric: "value".into(),
        skip_invalid: false,
        progress: false,
    };
    tracing::info!("replaying {} through {}", data.records.display(), args.detectors.join(", "));
    let summary = replay(plugins, &options)?;
    for p in &summary.plugins {
        tracing::info!(plugin = %p.label, anomalies = p.anomalies, busy_s = p.busy.as_secs_f64(), failure = ?p.failure);
        anyhow::ensure!(p.failure.is_none(), "detector {} failed: {:?}", p.label, p.failure);
    }
    Ok(())
}

fn read_events(path: &Path) -> Result<Vec<AnomalyEvent>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::BufReader::new(file)
        .lines()
        .map(|line| Ok(serde_json::from_str(&line?)?))
        .collect::<Result<Vec<_>>>()
        .context("reading the anomalies")
}

/// One incident of a run: its final state and its evidence.
pub struct Grouped {
    pub incident: Incident,
    /// The feature vector as it was when the feature window closed.
    pub features: Vec<f64>,
    /// The distinct evidence states of the window, oldest first: the first is what the
    /// incident opened with, the last equals `features`.
    pub states: Vec<State>,
}

/// Feeds the anomalies, in order, to a router stage, advancing event time one tick at a time
/// from `start`, and returns every incident (final state) with its evidence.
pub fn group(config: &RouterConfig, events: &[AnomalyEvent], start: i64, end: i64) -> Result<Vec<Grouped>> {
    let mut stage = RouterStage::new(config.clone())?;
    let mut features: HashMap<String, Vec<f64>> = HashMap::new();
    let mut states = States::new();
    let mut growing = Growing::new();
    let mut last: BTreeMap<String, Incident> = BTreeMap::new();
    let mut tick = start;
    let age = |stage: &RouterStage, opened: i64| {
        u32::try_from((stage.watermark() - opened) / config.interval_ms).unwrap_or(u32::MAX)
    };
    // Event time passed a sample: every growing incident's evidence, if it changed.
    let sample_ends = |stage: &RouterStage, growing: &Growing, states: &mut States| {
        for (id, (router, opened)) in growing {
            if let Some(f) = stage.features_of(router, id) {
                add_state(states, id, age(stage, *opened), f);
            }
        }
    };
    let mut take = |stage: &RouterStage,
                    updates: Vec<routewatch_incidents::IncidentUpdate>,
                    growing: &mut Growing,
                    states: &mut States| {
        for u in updates {
            if u.change == Change::Opened {
                growing.insert(u.incident.id.clone(), (u.incident.router.clone(), u.incident.opened));
            }
            if u.incident.features_final && !features.contains_key(&u.incident.id) {
                // The window closed (or the incident resolved first): the evidence is frozen.
                let f = stage.features(&u.incident.router).expect("the incident is still held");
                if growing.remove(&u.incident.id).is_some() {
                    add_state(states, &u.incident.id, age(stage, u.incident.opened), f.clone());
                }
                features.insert(u.incident.id.clone(), f);
            }
            debug_assert!(u.change != Change::Opened || !last.contains_key(&u.incident.id));
            last.insert(u.incident.id.clone(), u.incident);
        }
    };
    for event in events {
        if tick + config.interval_ms <= event.ts {
            sample_ends(&stage, &growing, &mut states);
        }
        while tick + config.interval_ms <= event.ts {
            tick += config.interval_ms;
            let updates = stage.advance(tick);
            take(&stage, updates, &mut growing, &mut states);
        }
        let updates = stage.observe(event);
        take(&stage, updates, &mut growing, &mut states);
    }
    sample_ends(&stage, &growing, &mut states);
    while tick < end + config.interval_ms * i64::from(config.quiet_samples * config.flap_quiet_factor) {
        tick += config.interval_ms;
        let updates = stage.advance(tick);
        take(&stage, updates, &mut growing, &mut states);
    }
    let mut out: Vec<Grouped> = last
        .into_values()
        .map(|incident| {
            let features = features.remove(&incident.id).expect("every incident resolved, so its features are final");
            let states = states.remove(&incident.id).expect("every incident ended a sample");
            Grouped { incident, features, states }
        })
        .collect();
    out.sort_by(|a, b| (a.incident.opened, &a.incident.id).cmp(&(b.incident.opened, &b.incident.id)));
    Ok(out)
}

/// Incidents whose feature window is open: id -> (router, opening time).
type Growing = BTreeMap<String, (String, i64)>;
/// Each incident's evidence states so far, by id.
type States = HashMap<String, Vec<State>>;

/// Adds `features` as the newest state of incident `id`, unless its evidence did not change.
fn add_state(states: &mut States, id: &str, age: u32, features: Vec<f64>) {
    let list = states.entry(id.to_owned()).or_default();
    if list.last().is_none_or(|s| s.features != features) {
        list.push(State { age, features });
    }
}

/// The label of an incident (see the module docs) and the fault id.
pub fn label(
    incident: &Incident,
    faults: &[FaultEvent],
    changes: &[PlannedChange],
    grace_ms: i64,
) -> (String, Option<String>) {
    let overlaps = |start: i64, end: i64| incident.opened <= end + grace_ms && incident.last_anomaly >= start;
    let mine: Vec<&FaultEvent> =
        faults.iter().filter(|f| f.router == incident.router && overlaps(f.start, f.end)).collect();
    let best = mine
        .iter()
        .filter(|f| f.start <= incident.opened)
        .max_by_key(|f| (f.start, &f.id))
        .or_else(|| mine.iter().min_by_key(|f| (f.start, &f.id)));
    if let Some(f) = best {
        return (f.kind.name().to_owned(), Some(f.id.clone()));
    }
    match changes.iter().find(|c| c.router == incident.router && overlaps(c.start, c.end)) {
        Some(c) => (format!("planned:{}", c.kind.name()), None),
        None => ("none".to_owned(), None),
    }
}

/// Writes the rows as CSV, one line per evidence state:
/// `id,router,opened,label,fault,age,final,<feature names>` (`final` 1 on the state the window
/// closed with, else 0).
pub fn write_csv(path: &Path, rows: &[Row]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut w = BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    write!(w, "id,router,opened,label,fault,age,final")?;
    for name in feature_names() {
        write!(w, ",{name}")?;
    }
    writeln!(w)?;
    for row in rows {
        for (i, state) in row.states.iter().enumerate() {
            write!(
                w,
                "{},{},{},{},{},{},{}",
                row.incident.id,
                row.incident.router,
                row.incident.opened,
                row.label,
                row.fault.as_deref().unwrap_or(""),
                state.age,
                u8::from(i + 1 == row.states.len())
            )?;
            // `{}` prints the shortest text that reads back as the same f64.
            for x in &state.features {
                write!(w, ",{x}")?;
            }
            writeln!(w)?;
        }
    }
    w.flush()?;
    Ok(())
}

/// `incident-dataset`: the CSV for the classifier's training script.
#[derive(clap::Args, Debug, Clone)]
pub struct DatasetArgs {
    #[command(flatten)]
    pub run: IncidentArgs,
    /// Where the CSV goes.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn dataset(args: &DatasetArgs) -> Result<()> {
    let run = build(&args.run)?;
    write_csv(&args.out, &run.rows)?;
    let mut by_label: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &run.rows {
        *by_label.entry(row.label.as_str()).or_default() += 1;
    }
    tracing::info!(
        incidents = run.rows.len(),
        states = run.rows.iter().map(|r| r.states.len()).sum::<usize>(),
        anomalies = run.anomalies,
        layout = FEATURE_LAYOUT_VERSION,
        "wrote {}: {by_label:?}",
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use routewatch_telemetry::{AnomalyKind, FaultKind};

    const M: i64 = 60_000;

    /// An anomaly of ARIMA on `metric` at `minute`, score 0.9.
    fn ev(router: &str, metric: &str, minute: i64) -> AnomalyEvent {
        AnomalyEvent {
            router: router.into(),
            site: None,
            role: None,
            metric: metric.into(),
            plugin: "arima".into(),
            plugin_version: "1".into(),
            ts: minute * M,
            detected_at: None,
            value: 1.0,
            expected: 0.5,
            lower: None,
            upper: None,
            score: 0.9,
            kind: AnomalyKind::Spike,
            reason: String::new(),
        }
    }

    fn incident(router: &str, opened: i64, last: i64) -> Incident {
        let mut stage = RouterStage::new(RouterConfig::default()).unwrap();
        stage.observe(&ev(router, "cpu_util", opened));
        stage.observe(&ev(router, "cpu_util", last));
        stage.open().next().unwrap().clone()
    }

    fn fault(id: &str, kind: FaultKind, router: &str, start: i64, end: i64) -> FaultEvent {
        FaultEvent {
            id: id.into(),
            kind,
            router: router.into(),
            start: start * M,
            end: end * M,
            magnitude: 1.0,
            metrics: vec![],
        }
    }

    #[test]
    fn an_incident_belongs_to_the_fault_it_opened_for() {
        let faults = vec![
            fault("a", FaultKind::MemoryLeak, "r1", 0, 500),
            fault("b", FaultKind::CpuRunaway, "r1", 100, 130),
            fault("c", FaultKind::LinkFlap, "r2", 100, 130),
        ];
        let label = |i: &Incident| super::label(i, &faults, &[], 5 * M);
        // Opened during both a and b: b started last before it opened.
        assert_eq!(label(&incident("r1", 101, 105)), ("cpu-runaway".into(), Some("b".into())));
        assert_eq!(label(&incident("r1", 50, 60)), ("memory-leak".into(), Some("a".into())));
        // Opened just before c and running into it: c.
        assert_eq!(label(&incident("r2", 98, 102)), ("link-flap".into(), Some("c".into())));
        // Within the grace after c's end, and after it: none.
        assert_eq!(label(&incident("r2", 134, 134)).0, "link-flap");
        assert_eq!(label(&incident("r2", 136, 140)), ("none".into(), None));
    }

    #[test]
    fn grouping_resolves_everything_and_freezes_features() {
        let events = vec![
            ev("r1", "cpu_util", 1),
            ev("r1", "temp_c", 12),
            ev("r2", "cpu_util", 3),
            ev("r1", "cpu_util", 60),
            ev("r3", "cpu_util", 70),
            ev("r3", "mem_util", 71),
        ];
        let out = group(&RouterConfig::default(), &events, 0, 100 * M).unwrap();
        // r1 resolves at 11, reopens at 12 (the same incident), resolves at 22; at 60 it is
        // past the reopen period: a second incident.
        assert_eq!(out.len(), 4, "r1 twice, r2 and r3 once");
        assert_eq!((out[0].incident.router.as_str(), out[0].incident.reopened), ("r1", 1));
        assert_eq!((out[2].incident.router.as_str(), out[2].incident.opened), ("r1", 60 * M));
        let Grouped { incident: first, features: f, states } = &out[0];
        assert_eq!(first.metrics, ["cpu_util", "temp_c"]);
        assert!(first.resolved.is_some());
        // temp_c came after the feature window: not in the features.
        let temp = routewatch_incidents::PER_METRIC * 2;
        assert_eq!(f[temp], 0.0);
        // Its first anomaly was all the evidence in its window: one state, at the opening.
        assert_eq!(states.len(), 1);
        assert_eq!((states[0].age, &states[0].features), (0, f));
        // r3's memory moved a sample after it opened: a second state, the final one.
        let r3 = &out[3];
        assert_eq!(r3.incident.router, "r3");
        assert_eq!(r3.states.iter().map(|s| s.age).collect::<Vec<_>>(), [0, 1]);
        assert_ne!(r3.states[0].features, r3.features, "the final evidence has mem_util, the opening's not");
        assert_eq!(r3.states[1].features, r3.features);
    }

    #[test]
    fn the_opening_state_holds_the_whole_opening_sample() {
        let by = |router: &str, metric: &str, plugin: &str, minute: i64| AnomalyEvent {
            plugin: plugin.into(),
            ..ev(router, metric, minute)
        };
        // A replay batch lists one sample's anomalies detector by detector: r1's temperature
        // comes after another router's, and the second detector's after both.
        let events = vec![
            by("r1", "fan_rpm", "arima", 5),
            by("r2", "cpu_util", "arima", 5),
            by("r1", "temp_c", "arima", 5),
            by("r1", "fan_rpm", "seasonal", 5),
            by("r1", "temp_c", "arima", 7),
        ];
        let out = group(&RouterConfig::default(), &events, 0, 40 * M).unwrap();
        let r1 = out.iter().find(|g| g.incident.router == "r1").unwrap();
        let at_opening = &r1.states[0].features;
        let value = |metric: usize, offset: usize| at_opening[metric * routewatch_incidents::PER_METRIC + offset];
        // fan_rpm (3) and temp_c (2) both present, and two detectors, at the opening already.
        assert_eq!((value(3, 0), value(2, 0)), (1.0, 1.0));
        assert_eq!(at_opening[routewatch_incidents::FEATURE_COUNT - 1], 2.0);
        // Minute 7 adds a second temperature anomaly: the final state, two samples in.
        assert_eq!(r1.states.iter().map(|s| s.age).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(r1.states[1].features, r1.features);
    }

    #[test]
    fn the_csv_has_a_line_per_state() {
        let events = vec![ev("r1", "cpu_util", 10), ev("r1", "mem_util", 11)];
        let grouped = group(&RouterConfig::default(), &events, 0, 40 * M).unwrap();
        let rows: Vec<Row> = grouped
            .into_iter()
            .map(|g| Row {
                incident: g.incident,
                label: "memory-leak".into(),
                fault: Some("f1".into()),
                features: g.features,
                states: g.states,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.csv");
        write_csv(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
        assert_eq!(lines[0][..7], ["id", "router", "opened", "label", "fault", "age", "final"]);
        assert_eq!(lines[0].len(), 7 + routewatch_incidents::FEATURE_COUNT);
        assert_eq!(lines.len(), 3, "a header and two states");
        assert_eq!((lines[1][5], lines[1][6]), ("0", "0"));
        assert_eq!((lines[2][5], lines[2][6]), ("1", "1"));
        assert_eq!(lines[1][0], lines[2][0], "both of one incident");
    }
}
