//! `routewatch replay`: runs detectors over a recorded file, deterministically.
//!
//! Rows are read in order, gathered into columnar batches, and handed to every plugin; each
//! plugin keeps its state across batches exactly as it would on a live stream. The same input
//! always gives byte-identical outputs.

mod input;
mod output;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use routewatch_telemetry::{AnomalyEvent, AnomalyKind as EventKind};

pub use input::{BadRow, InputFormat, Row, RowReader, parse_timestamp};
pub use output::format_ts;

use crate::routers::RouterTable;
use crate::runtime::{AnomalyKind, Batch, CallError, Column, Instance, Output, Plugin};
use output::{AnomalyWriter, ScoreWriter};

/// What to replay and where the results go.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub input: PathBuf,
    pub format: InputFormat,
    /// Score rows (CSV); `-` for standard output.
    pub scores: Option<PathBuf>,
    /// Anomalies (JSON lines); `-` for standard output.
    pub anomalies: Option<PathBuf>,
    /// Rows per batch handed to the plugins.
    pub batch_rows: usize,
    /// Router name for the rows of a CSV input.
    pub csv_router: String,
    /// Metric name for the values of a CSV input.
    pub csv_metric: String,
    /// Skip (and count) rows that do not parse, instead of stopping at the first.
    pub skip_invalid: bool,
    pub progress: bool,
}

/// A plugin to replay, with its configuration (JSON; `None` for defaults).
pub struct ReplayPlugin {
    pub plugin: Plugin,
    pub config: Option<String>,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub rows: u64,
    pub points: u64,
    pub skipped_rows: u64,
    pub elapsed: Duration,
    pub plugins: Vec<PluginSummary>,
}

#[derive(Debug, Clone, Default)]
pub struct PluginSummary {
    /// Column name in the scores file (the plugin name, made unique).
    pub label: String,
    pub version: String,
    pub anomalies: u64,
    /// Time spent inside the plugin.
    pub busy: Duration,
    /// The failure that stopped this plugin, if one did; the others carry on.
    pub failure: Option<String>,
    /// Metrics of the input the plugin cannot read (its info lists what it reads): their
    /// scores are 0 in its column.
    pub ignored: Vec<String>,
}

/// One plugin's instance during a replay.
struct Runner {
    /// `None` when the plugin could not start; its failure is in the summary.
    instance: Option<Instance>,
    plugin: Plugin,
    summary: PluginSummary,
}

/// Runs the plugins over the input. Fails on I/O errors and (unless `skip_invalid`) on the
/// first bad row; a failing plugin is recorded in the summary and the others go on.
pub fn replay(plugins: Vec<ReplayPlugin>, options: &ReplayOptions) -> anyhow::Result<Summary> {
    anyhow::ensure!(!plugins.is_empty(), "replay needs at least one plugin");
    anyhow::ensure!(options.batch_rows > 0, "batch size must be at least one row");
    let started = Instant::now();
    let mut runners = start_plugins(plugins)?;
    let labels: Vec<String> = runners.iter().map(|r| r.summary.label.clone()).collect();

    let mut reader = RowReader::open(&options.input, options.format, &options.csv_router)?;
    let columns = reader.columns(&options.csv_metric);
    for runner in &mut runners {
        runner.summary.ignored = runner.plugin.ignored(columns.iter().map(String::as_str));
        if !runner.summary.ignored.is_empty() {
            tracing::warn!(
                plugin = %runner.summary.label,
                reads = ?runner.plugin.info().metrics,
                ignored = ?runner.summary.ignored,
                "the plugin cannot read these metrics of the input: it scores them 0"
            );
        }
    }
    let mut scores =
        options.scores.as_deref().map(|p| output::create(p).and_then(|w| ScoreWriter::new(w, &labels))).transpose()?;
    let mut anomalies = options.anomalies.as_deref().map(|p| output::create(p).map(AnomalyWriter::new)).transpose()?;
    let progress = progress_bar(options);

    let mut routers = RouterTable::default();
    let mut summary = Summary::default();
    let mut rows: Vec<Row> = Vec::with_capacity(options.batch_rows);
    loop {
        let row = reader.next_row();
        let at_end = row.is_none();
        match row {
            Some(Ok(row)) => rows.push(row),
            Some(Err(bad)) if options.skip_invalid => {
                tracing::warn!("skipping {bad}");
                summary.skipped_rows += 1;
            }
            Some(Err(bad)) => return Err(bad).context("stopping at a bad row (use --skip-invalid to skip such rows)"),
            None => {}
        }
        if rows.len() == options.batch_rows || (at_end && !rows.is_empty()) {
            let batch = columnar(&rows, &columns, &mut routers);
            let outputs: Vec<Option<Output>> = runners.iter_mut().map(|r| r.process(&batch)).collect();
            emit(&rows, &batch, &outputs, &runners, scores.as_mut(), anomalies.as_mut())?;
            for (runner, out) in runners.iter_mut().zip(&outputs) {
                runner.summary.anomalies += out.as_ref().map_or(0, |o| o.anomalies.len() as u64);
            }
            summary.rows += rows.len() as u64;
            summary.points += (rows.len() * columns.len()) as u64;
            progress.set_position(summary.rows);
            rows.clear();
        }
        if at_end {
            break;
        }
    }
    if let Some(w) = scores {
        w.finish()?;
    }
    if let Some(w) = anomalies {
        w.finish()?;
    }
    progress.finish_and_clear();
    summary.elapsed = started.elapsed();
    summary.plugins = runners.into_iter().map(|r| r.summary).collect();
    Ok(summary)
}

/// Starts every plugin. One that cannot start or refuses its configuration is reported as
/// failed (empty scores) and the others go on.
fn start_plugins(plugins: Vec<ReplayPlugin>) -> anyhow::Result<Vec<Runner>> {
    let mut runners: Vec<Runner> = Vec::with_capacity(plugins.len());
    for ReplayPlugin { plugin, config } in plugins {
        let name = plugin.info().name.clone();
        // The same plugin twice (say, with two configurations) gets `name#2` and so on.
        let same = runners.iter().filter(|r| r.plugin.info().name == name).count();
        let label = if same == 0 { name.clone() } else { format!("{name}#{}", same + 1) };
        let mut summary = PluginSummary { label, version: plugin.info().version.clone(), ..Default::default() };
        let started = plugin.instantiate().map_err(|e| format!("starting: {e}")).and_then(|mut instance| {
            if let Some(config) = &config {
                instance.configure(config).map_err(|e| format!("configuring: {e}"))?;
            }
            Ok(instance)
        });
        let instance = match started {
            Ok(instance) => Some(instance),
            Err(reason) => {
                tracing::error!(plugin = %summary.label, "plugin failed, its scores stay empty: {reason}");
                summary.failure = Some(reason);
                None
            }
        };
        runners.push(Runner { instance, plugin, summary });
    }
    Ok(runners)
}

impl Runner {
    /// Runs one batch; on failure records why and produces no output from then on.
    fn process(&mut self, batch: &Batch) -> Option<Output> {
        let instance = self.instance.as_mut().filter(|_| self.summary.failure.is_none())?;
        let result = instance.process(batch);
        self.summary.busy += instance.last_call().duration;
        match result {
            Ok(output) => Some(output),
            Err(err) => {
                self.fail(&err);
                None
            }
        }
    }

    fn fail(&mut self, err: &CallError) {
        tracing::error!(plugin = %self.summary.label, "plugin failed, its scores stay empty from here on: {err}");
        self.summary.failure = Some(err.to_string());
    }
}

/// Gathers rows into the columnar batch detectors take.
fn columnar(rows: &[Row], columns: &[String], routers: &mut RouterTable) -> Batch {
    Batch {
        routers: rows.iter().map(|r| routers.id(&r.router)).collect(),
        timestamps: rows.iter().map(|r| r.ts).collect(),
        columns: columns
            .iter()
            .enumerate()
            .map(|(c, metric)| Column { metric: metric.clone(), values: rows.iter().map(|r| r.values[c]).collect() })
            .collect(),
    }
}

fn emit(
    rows: &[Row],
    batch: &Batch,
    outputs: &[Option<Output>],
    runners: &[Runner],
    scores: Option<&mut ScoreWriter>,
    anomalies: Option<&mut AnomalyWriter>,
) -> anyhow::Result<()> {
    if let Some(w) = scores {
        let n = rows.len();
        for (i, row) in rows.iter().enumerate() {
            for (c, column) in batch.columns.iter().enumerate() {
                let per_plugin = outputs.iter().map(|o| o.as_ref().map(|o| o.scores[c * n + i]));
                w.row(row.ts, &row.router, &column.metric, column.values[i], per_plugin)?;
            }
        }
    }
    if let Some(w) = anomalies {
        for (runner, out) in runners.iter().zip(outputs) {
            for a in out.iter().flat_map(|o| &o.anomalies) {
                let row = &rows[a.row as usize];
                w.write(&AnomalyEvent {
                    router: row.router.clone(),
                    site: row.site.clone(),
                    role: row.role.clone(),
                    metric: batch.columns[a.column as usize].metric.clone(),
                    plugin: runner.summary.label.clone(),
                    plugin_version: runner.summary.version.clone(),
                    ts: row.ts,
                    detected_at: None,
                    value: a.observed,
                    expected: a.expected,
                    lower: AnomalyEvent::bound(a.lower),
                    upper: AnomalyEvent::bound(a.upper),
                    score: a.score,
                    kind: event_kind(a.kind),
                    reason: a.reason.clone(),
                })?;
            }
        }
    }
    Ok(())
}

/// The wire form of a detector's anomaly kind.
pub fn event_kind(kind: AnomalyKind) -> EventKind {
    match kind {
        AnomalyKind::Spike => EventKind::Spike,
        AnomalyKind::Dip => EventKind::Dip,
        AnomalyKind::LevelShift => EventKind::LevelShift,
        AnomalyKind::Drift => EventKind::Drift,
        AnomalyKind::Loss => EventKind::Loss,
        AnomalyKind::Hardware => EventKind::Hardware,
        AnomalyKind::Outlier => EventKind::Outlier,
        AnomalyKind::Changepoint => EventKind::Changepoint,
        AnomalyKind::Other => EventKind::Other,
    }
}

fn progress_bar(options: &ReplayOptions) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    // indicatif draws only when stderr is a terminal.
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {human_pos} rows replayed ({per_sec}) {elapsed}")
            .expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
