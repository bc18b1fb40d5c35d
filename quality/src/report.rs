//! Markdown for BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use routewatch_engine::replay::Summary;
use routewatch_telemetry::FaultKind;

use crate::QualityArgs;
use crate::dataset::Dataset;
use crate::score::{Evaluation, Figures};

/// Targets for the default set (issue 6).
const F1_TARGET: f64 = 0.9;
const DELAY_TARGET: f64 = 2.0;
const FALSE_TARGET: f64 = 1.0;

fn row(out: &mut String, label: &str, f: &Figures) {
    let delay = f.median_delay().map_or("-".into(), |d| format!("{d:.1}"));
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {:.2} | {:.2} | {:.2} | {delay} |",
        f.faults,
        f.detected,
        f.precision(),
        f.recall(),
        f.f1()
    );
}

/// The BENCHMARKS.md heading of a profile's quality table.
pub fn heading(profile: routewatch_simulator::TelemetryProfile) -> String {
    format!("## Detection quality, {profile} profile")
}

pub fn quality(args: &QualityArgs, data: &Dataset, summary: &Summary, evaluations: &[Evaluation]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", heading(data.profile));
    let _ = writeln!(
        out,
        "Command: `cargo xtask quality` (runs `routewatch-quality {}`; crate `quality/`)  \n\
         Machine: {}  \n\
         Data: the simulator's engine, `{}` telemetry profile, {} routers x {} days at {} s, seed {}, {} random faults per router per day \
         (all nine kinds), {} faults and {} planned changes in all; every detector with its default configuration replays all of it \
         (one fleet tick per batch) and is scored on the last {} day(s) ({} faults start there).  \n\
         Matching (see `quality/README.md`): an anomaly matches a fault on the same router, on a metric the fault \
         moves, between its start and {} samples after its end. Anomalies of one (router, metric) at most {} samples \
         apart form one alarm. Precision per kind = true alarms / (true alarms + false alarms on the kind's metrics); \
         recall = faults with a matching anomaly / faults; delay = samples from the fault's start to its first \
         matching anomaly (median over detected faults). An alarm that matches no fault but falls in a planned \
         change on its router (start to end + grace, on a metric the change moves) is counted apart, under \
         \"planned\": neither true nor false.\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        crate::machine(),
        data.profile,
        data.routers,
        args.days,
        args.interval_s,
        args.seed,
        args.fault_rate,
        data.faults.len(),
        data.changes.len(),
        args.eval_days,
        evaluations.first().map_or(0, |e| e.overall.faults),
        args.grace,
        args.merge_gap,
    );
    let _ = writeln!(
        out,
        "Summary (all kinds; targets for the default set: F1 >= {F1_TARGET} per kind, median delay <= {DELAY_TARGET} samples, <= {FALSE_TARGET} false alarm per router-day):\n"
    );
    let _ = writeln!(
        out,
        "| detector | anomalies | alarms true / false / planned | precision | recall | F1 | median delay (samples) | false alarms per router-day | planned-change alarms per router-day | time in plugin (s) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for e in evaluations {
        let busy = summary
            .plugins
            .iter()
            .find(|p| p.label == e.name)
            .map_or("-".into(), |p| format!("{:.1}", p.busy.as_secs_f64()));
        let delay = e.overall.median_delay().map_or("-".into(), |d| format!("{d:.1}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} / {} | {:.2} | {:.2} | {:.2} | {delay} | {:.2} | {:.2} | {busy} |",
            e.name,
            e.anomalies,
            e.overall.true_alarms,
            e.overall.false_alarms,
            e.planned_alarms(),
            e.overall.precision(),
            e.overall.recall(),
            e.overall.f1(),
            e.false_per_router_day,
            e.planned_per_router_day
        );
    }
    if let Some(failed) = summary.plugins.iter().find(|p| p.failure.is_some()) {
        let _ = writeln!(
            out,
            "\n**{} failed during the replay**: {}",
            failed.label,
            failed.failure.as_deref().unwrap_or("")
        );
    }
    for e in evaluations {
        let _ = writeln!(out, "\n### {}\n", e.name);
        let _ = writeln!(out, "| fault kind | faults | detected | precision | recall | F1 | median delay |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for (kind, f) in &e.per_kind {
            row(&mut out, kind, f);
        }
        if !data.changes.is_empty() {
            let _ = writeln!(out, "\n| planned change | changes | changes with an alarm | alarms on them |");
            let _ = writeln!(out, "|---|---:|---:|---:|");
            for (kind, p) in &e.planned {
                let _ = writeln!(out, "| {kind} | {} | {} | {} |", p.changes, p.alarmed, p.alarms);
            }
        }
    }
    if let Some(default) = evaluations.first() {
        let _ = writeln!(out, "\n### Targets (default set)\n");
        for (kind, f) in &default.per_kind {
            let f1 = f.f1() >= F1_TARGET;
            let delay = f.median_delay().is_some_and(|d| d <= DELAY_TARGET);
            let _ = writeln!(
                out,
                "- {kind}: F1 {:.2} {}, median delay {} {}",
                f.f1(),
                if f1 { "(met)" } else { "(**not met**)" },
                f.median_delay().map_or("-".into(), |d| format!("{d:.1}")),
                if delay { "(met)" } else { "(**not met**)" }
            );
            if *kind == FaultKind::MemoryLeak.name() && !delay {
                let _ = writeln!(
                    out,
                    "  (out of reach for any detector: a leak grows by 0.0003 to 0.0017 a sample against a noise sd of \
                     0.003, and even an oracle that knows the onset and the rate needs about 7 samples for half of \
                     them; see quality/README.md, \"Memory leaks and the delay target\")"
                );
            }
        }
        let fa = default.false_per_router_day <= FALSE_TARGET;
        let _ = writeln!(
            out,
            "- false alarms per router-day: {:.2} {}",
            default.false_per_router_day,
            if fa { "(met)" } else { "(**not met**)" }
        );
    }
    out
}

/// Replaces the section starting at `heading` (up to the next `## ` heading) in `path`, or
/// appends it.
pub fn replace_section(path: &Path, heading: &str, body: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let body = format!("{}\n", body.trim_end());
    let new = match text.find(&format!("{heading}\n")) {
        Some(start) => {
            let rest = &text[start + heading.len()..];
            let end = rest.find("\n## ").map_or(text.len(), |i| start + heading.len() + i + 1);
            format!(
                "{}{}{}",
                &text[..start],
                body,
                if end < text.len() { format!("\n{}", &text[end..]) } else { String::new() }
            )
        }
        None => format!("{}\n{}", text.trim_end_matches('\n').to_owned() + "\n", body),
    };
    std::fs::write(path, new)?;
    Ok(())
}
