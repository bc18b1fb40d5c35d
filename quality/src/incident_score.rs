//! Incident quality: the incidents of a run (see [`crate::incidents`]) and the classifier
//! component's verdicts, scored against the ground truth of the last `eval_days`.
//!
//! * A fault **has an incident** when at least one incident is labelled with it (see
//!   [`crate::incidents::label`]). A fault whose router already had an incident open for an
//!   earlier fault is counted as **absorbed** instead: the operator is already looking at
//!   that router.
//! * **Incidents per fault**: incidents labelled with a fault over the faults that have one.
//! * **False incidents per router-day**: incidents labelled `none` over routers x scored days.
//!   Incidents during a planned change (`planned:<kind>`) are counted apart.
//! * **Top-1 accuracy** of a kind: incidents labelled with the kind whose verdict (the
//!   classifier's most likely cause, or `unknown` below its confidence threshold) is that
//!   kind. `unknown` counts as wrong.
//! * **Incidents of no fault named a cause**: false incidents and incidents during planned
//!   changes whose verdict is a cause, not `unknown`: what a self-healing policy would act on.
//! * **Top-1 at the opening**: the same, with the verdict on the evidence the incident had when
//!   it opened: the cause its first alert names (the host classifies again as evidence grows).
//! * **Time to incident**: samples from the fault's start to the opening of its first
//!   incident (0 if the incident opened on the first faulty sample or just before it).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use routewatch_incidents::FEATURE_LAYOUT_VERSION;
use routewatch_runtime::classifier::{self, Features};
use routewatch_runtime::{Runtime, RuntimeConfig};
use routewatch_telemetry::FaultKind;

use crate::incidents::{self, IncidentArgs, Run};

/// Targets of issue 16.
const PER_FAULT_TARGET: f64 = 1.1;
const COVERAGE_TARGET: f64 = 0.97;
const FALSE_TARGET: f64 = 0.1;
const ACCURACY_TARGET: f64 = 0.9;
const DELAY_TARGET: f64 = 2.0;

#[derive(clap::Args, Debug, Clone)]
pub struct QualityArgs {
    #[command(flatten)]
    pub run: IncidentArgs,
    /// The classifier component; default `<plugin dir>/routewatch_classifier_forest.wasm`.
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Replace the "## Incident quality, PROFILE profile" section of this file (BENCHMARKS.md).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

#[derive(Debug, Default, Clone)]
struct Kind {
    faults: usize,
    with_incident: usize,
    absorbed: usize,
    incidents: usize,
    correct: usize,
    /// Right on the evidence at the opening, and `unknown` there.
    correct_at_opening: usize,
    unknown_at_opening: usize,
    unknown: usize,
    delays: Vec<i64>,
}

fn median(v: &[i64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut d = v.to_vec();
    d.sort_unstable();
    let n = d.len();
    Some(if n % 2 == 1 { d[n / 2] as f64 } else { (d[n / 2 - 1] + d[n / 2]) as f64 / 2.0 })
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

pub fn run(args: &QualityArgs) -> Result<()> {
    let run = incidents::build(&args.run)?;
    let path = match &args.classifier {
        Some(path) => path.clone(),
        None => match &args.run.plugins {
            Some(dir) => dir.join("routewatch_classifier_forest.wasm"),
            None => crate::default_plugin_dir()?.join("routewatch_classifier_forest.wasm"),
        },
    };
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let plugin = classifier::load_file(&runtime, &path)
        .with_context(|| format!("loading {} (build the plugins first: cargo xtask build)", path.display()))?;
    let mut instance = plugin.instantiate()?;
    instance.configure("{}")?;
    // Each incident twice: on its final evidence, and on its evidence at the opening (the
    // cause its first alert names).
    let mut classify = |evidence: &dyn Fn(&incidents::Row) -> &[f64]| -> Result<Vec<String>> {
        let mut verdicts = Vec::with_capacity(run.rows.len());
        for chunk in run.rows.chunks(classifier::MAX_CLASSIFY_BATCH) {
            let inputs: Vec<Features> = chunk
                .iter()
                .map(|r| Features { layout: FEATURE_LAYOUT_VERSION, values: evidence(r).to_vec() })
                .collect();
            verdicts.extend(instance.classify(&inputs)?.into_iter().map(|c| c.verdict));
        }
        Ok(verdicts)
    };
    let verdicts = classify(&|r| &r.features)?;
    let first_verdicts = classify(&|r| r.at_opening())?;
    let name = format!("{} {}", plugin.info().name, plugin.info().version);
    let text = report(args, &run, &verdicts, &first_verdicts, &name);
    println!("{text}");
    if let Some(path) = &args.write {
        crate::report::replace_section(path, &heading(args), &text)?;
        tracing::info!("wrote the incident table to {}", path.display());
    }
    Ok(())
}

fn heading(args: &QualityArgs) -> String {
    format!("## Incident quality, {} profile", args.run.profile)
}

fn report(
    args: &QualityArgs,
    run: &Run,
    verdicts: &[String],
    first_verdicts: &[String],
    classifier_name: &str,
) -> String {
    let interval = run.interval_ms;
    let mut kinds: BTreeMap<&'static str, Kind> = FaultKind::ALL.iter().map(|k| (k.name(), Kind::default())).collect();
    let in_window: Vec<_> = run.faults.iter().filter(|f| f.start >= run.from && f.start < run.to).collect();
    let mut first_incident: HashMap<&str, i64> = HashMap::new();
    let mut per_fault: HashMap<&str, usize> = HashMap::new();
    let mut confusion: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let (mut false_incidents, mut planned, mut named_without_fault) = (0usize, 0usize, 0usize);
    for ((row, verdict), first_verdict) in run.rows.iter().zip(verdicts).zip(first_verdicts) {
        match &row.fault {
            Some(id) => {
                *per_fault.entry(id.as_str()).or_default() += 1;
                let first = first_incident.entry(id.as_str()).or_insert(row.incident.opened);
                *first = (*first).min(row.incident.opened);
                if let Some(k) = kinds.get_mut(row.label.as_str()) {
                    k.incidents += 1;
                    k.correct += usize::from(verdict == &row.label);
                    k.correct_at_opening += usize::from(first_verdict == &row.label);
                    k.unknown_at_opening += usize::from(first_verdict == classifier::UNKNOWN);
                    k.unknown += usize::from(verdict == classifier::UNKNOWN);
                }
                if let Some((kind, _)) = kinds.get_key_value(row.label.as_str()) {
                    let predicted =
                        FaultKind::ALL.iter().map(|k| k.name()).find(|k| k == verdict).unwrap_or(classifier::UNKNOWN);
                    *confusion.entry((*kind, predicted)).or_default() += 1;
                }
            }
            None if row.label.starts_with("planned:") => planned += 1,
            None => false_incidents += 1,
        }
        if row.fault.is_none() {
            // An incident of no fault with a cause: what a self-healing policy would act on.
            named_without_fault += usize::from(verdict != classifier::UNKNOWN);
        }
    }
    let grace = args.run.grace * interval;
    for f in &in_window {
        let k = kinds.get_mut(f.kind.name()).expect("every kind has a row");
        k.faults += 1;
        if let Some(&opened) = first_incident.get(f.id.as_str()) {
            k.with_incident += 1;
            k.delays.push(((opened - f.start) / interval).max(0));
        } else {
            // The router's incident for an earlier fault was open through this one's start.
            let absorbed = run.all.iter().any(|(i, fault)| {
                i.router == f.router
                    && fault.as_deref().is_some_and(|id| id != f.id)
                    && i.opened <= f.start
                    && i.resolved.unwrap_or(i64::MAX) >= f.start
                    && i.last_anomaly + grace >= f.start
            });
            k.absorbed += usize::from(absorbed);
        }
    }
    let total = kinds.values().fold(Kind::default(), |mut t, k| {
        t.faults += k.faults;
        t.with_incident += k.with_incident;
        t.absorbed += k.absorbed;
        t.incidents += k.incidents;
        t.correct += k.correct;
        t.correct_at_opening += k.correct_at_opening;
        t.unknown_at_opening += k.unknown_at_opening;
        t.unknown += k.unknown;
        t.delays.extend(&k.delays);
        t
    });
    let router_days = f64::from(run.routers) * f64::from(args.run.eval_days);
    let incidents_per_fault = ratio(total.incidents, total.with_incident);
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", heading(args));
    let _ = writeln!(
        out,
        "Command: `routewatch-quality {}` (crate `quality/`, after `cargo xtask build`)  \n\
         Machine: {}  \n\
         Data: the simulator's engine, `{}` profile, {} routers x {} days at {} s, seed {} ({}: the shipped model is \
         trained on seed 1, see `plugins/classifier-forest/README.md`), {} random faults per router per day; {} ({}) anomalies \
         grouped by `routewatch-incidents` (quiet period {} samples, reopen {} samples, recall {} samples, feature window {} \
         samples), classified by the `{classifier_name}` component with its default configuration. Scored: the last {} day(s), \
         {} faults start there, {} incidents open there.  \n\
         Matching and figures: see `quality/README.md`, \"Incidents\".\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        crate::machine(),
        args.run.profile,
        run.routers,
        args.run.days,
        args.run.interval_s,
        args.run.seed,
        if args.run.seed == 1 { "the training seed" } else { "not used for training" },
        args.run.fault_rate,
        run.anomalies,
        args.run.detectors.join(" + "),
        run.config.quiet_samples,
        run.config.reopen_samples,
        run.config.recall_samples,
        run.config.feature_window_samples,
        args.run.eval_days,
        total.faults,
        run.rows.len(),
    );
    let met = |ok: bool| if ok { "met" } else { "**not met**" };
    let coverage = ratio(total.with_incident, total.faults);
    let false_rate = false_incidents as f64 / router_days;
    let delay = median(&total.delays);
    let _ = writeln!(out, "| figure | value | target |");
    let _ = writeln!(out, "|---|---:|---|");
    let _ = writeln!(
        out,
        "| incidents per fault (with an incident) | {incidents_per_fault:.3} | <= {PER_FAULT_TARGET} ({}) |",
        met(incidents_per_fault <= PER_FAULT_TARGET)
    );
    let _ = writeln!(
        out,
        "| faults with an incident | {coverage:.3} ({} of {}; {} more absorbed by an open incident of an earlier fault) | >= {COVERAGE_TARGET} ({}) |",
        total.with_incident,
        total.faults,
        total.absorbed,
        met(coverage >= COVERAGE_TARGET)
    );
    let _ = writeln!(
        out,
        "| false incidents per router-day | {false_rate:.3} ({false_incidents}) | <= {FALSE_TARGET} ({}) |",
        met(false_rate <= FALSE_TARGET)
    );
    let _ = writeln!(
        out,
        "| incidents during planned changes, per router-day | {:.3} ({planned}) | - |",
        planned as f64 / router_days
    );
    let _ = writeln!(
        out,
        "| incidents of no fault (false or planned) named a cause, not `unknown` | {:.3} ({named_without_fault} of {}) | - |",
        ratio(named_without_fault, false_incidents + planned),
        false_incidents + planned
    );
    let _ = writeln!(
        out,
        "| top-1 cause accuracy, all kinds | {:.3} (unknown: {:.3}) | >= {ACCURACY_TARGET} per kind (see below) |",
        ratio(total.correct, total.incidents),
        ratio(total.unknown, total.incidents)
    );
    let _ = writeln!(
        out,
        "| top-1 cause accuracy at the opening (the first alert's cause), all kinds | {:.3} (unknown: {:.3}) | - |",
        ratio(total.correct_at_opening, total.incidents),
        ratio(total.unknown_at_opening, total.incidents)
    );
    let _ = writeln!(
        out,
        "| median time to incident (samples) | {} | <= {DELAY_TARGET} ({}) |\n",
        delay.map_or("-".into(), |d| format!("{d:.1}")),
        met(delay.is_some_and(|d| d <= DELAY_TARGET))
    );
    let _ = writeln!(
        out,
        "| fault kind | faults | with an incident | absorbed | incidents per fault | top-1 accuracy | unknown | top-1 at the opening (unknown) | median time to incident |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, k) in &kinds {
        let accuracy = ratio(k.correct, k.incidents);
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {:.2} | {accuracy:.3}{} | {:.3} | {:.3} ({:.3}) | {} |",
            k.faults,
            k.with_incident,
            k.absorbed,
            ratio(k.incidents, k.with_incident),
            if k.incidents > 0 && accuracy < ACCURACY_TARGET { " (**not met**)" } else { "" },
            ratio(k.unknown, k.incidents),
            ratio(k.correct_at_opening, k.incidents),
            ratio(k.unknown_at_opening, k.incidents),
            median(&k.delays).map_or("-".into(), |d| format!("{d:.1}")),
        );
    }
    let _ = writeln!(out, "\nConfusion matrix (rows: the fault an incident belongs to; columns: the verdict):\n");
    let columns: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).chain([classifier::UNKNOWN]).collect();
    let short = |c: &str| c.replace("hardware-", "hw-");
    let _ = writeln!(out, "| true \\ verdict | {} |", columns.iter().map(|c| short(c)).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(columns.len()));
    for kind in FaultKind::ALL.iter().map(|k| k.name()) {
        let cells: Vec<String> =
            columns.iter().map(|c| confusion.get(&(kind, *c)).copied().unwrap_or(0).to_string()).collect();
        let _ = writeln!(out, "| {} | {} |", short(kind), cells.join(" | "));
    }
    out
}
