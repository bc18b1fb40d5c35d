//! `routewatch replay`: runs detectors over a recorded file, deterministically.
//!
//! A [`FileSource`] reads the rows in order and the [`Engine`] runs them in batches through a
//! fixed set of plugins, exactly as a live stream is run; each plugin keeps its state across
//! batches. Scores and anomalies go to file sinks. The same input always gives byte-identical
//! outputs.

mod input;
mod output;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub use input::{BadRow, InputFormat, Row, RowReader, parse_timestamp};
pub use output::{AnomalyWriter, ScoreWriter, format_ts};

use crate::batch::Position;
use crate::engine::{Engine, EngineConfig, Plugins};
use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError, StepError};
use crate::slot::FixedPlugin;
use crate::source::{Intake, Pull, Source, SourceError};

/// What to replay and where the results go.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The recorded file.
    pub input: PathBuf,
    /// Its format.
    pub format: InputFormat,
    /// Score rows (CSV); `-` for standard output.
    pub scores: Option<PathBuf>,
    /// Anomalies (JSON lines); `-` for standard output.
    pub anomalies: Option<PathBuf>,
    /// Rows per batch handed to the plugins (cut at a timestamp: see [`crate::batch`]).
    pub batch_rows: usize,
    /// Router name for the rows of a CSV input.
    pub csv_router: String,
    /// Metric name for the values of a CSV input.
    pub csv_metric: String,
    /// Skip (and count) rows that do not parse, instead of stopping at the first.
    pub skip_invalid: bool,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
}

/// A plugin to replay, with its configuration (JSON; `None` for defaults).
pub type ReplayPlugin = FixedPlugin;

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Rows replayed.
    pub rows: u64,
    /// Points replayed (rows times columns).
    pub points: u64,
    /// Bad rows skipped.
    pub skipped_rows: u64,
    /// How long the replay took.
    pub elapsed: Duration,
    /// Each plugin's summary, in order.
    pub plugins: Vec<PluginSummary>,
}

/// What one plugin did in a replay.
#[derive(Debug, Clone, Default)]
pub struct PluginSummary {
    /// Column name in the scores file (the plugin name, made unique).
    pub label: String,
    /// Its version.
    pub version: String,
    /// Anomalies it found.
    pub anomalies: u64,
    /// Time spent inside the plugin.
    pub busy: Duration,
    /// The failure that stopped this plugin, if one did; the others carry on.
    pub failure: Option<String>,
    /// Metrics of the input the plugin cannot read (its info lists what it reads): their
    /// scores are 0 in its column.
    pub ignored: Vec<String>,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No plugin to replay.
    #[error("replay needs at least one plugin")]
    NoPlugins,
    /// A batch of no rows.
    #[error("batch size must be at least one row")]
    EmptyBatch,
    /// The input does not open.
    #[error("opening {path}: {source}")]
    Open {
        /// The input.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A CSV input without the columns it needs.
    #[error("{path}: {reason}")]
    CsvHeader {
        /// The input.
        path: String,
        /// What is wrong with its header.
        reason: String,
    },
    /// An output file cannot be created.
    #[error("creating {path}: {source}")]
    Create {
        /// The output.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Writing an output failed.
    #[error("writing: {0}")]
    Write(#[from] std::io::Error),
    /// Reading or writing failed mid-way (or a bad row stopped the replay).
    #[error(transparent)]
    Step(#[from] StepError),
    /// Flushing an output failed.
    #[error("finishing the output: {0}")]
    Finish(#[from] SinkError),
}

/// A recorded file as a [`Source`]: rows in order, as many as a batch takes (the engine's
/// `batch_records`; it cuts them at a timestamp). A row that does not parse stops the replay,
/// or (with `skip_invalid`) is logged, counted and skipped.
pub struct FileSource {
    reader: RowReader,
    skip_invalid: bool,
    /// The next row's number (rows and bad rows alike).
    next: Position,
    rows: u64,
    skipped: u64,
}

impl FileSource {
    /// Reads `reader`.
    pub fn new(reader: RowReader, skip_invalid: bool) -> FileSource {
        FileSource { reader, skip_invalid, next: 0, rows: 0, skipped: 0 }
    }

    /// Rows read so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bad rows skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl Source for FileSource {
    fn pull(&mut self, intake: &mut Intake<'_>) -> Result<Pull, SourceError> {
        while !intake.full() {
            let position = self.next;
            self.next += 1;
            match intake.decode(|| self.reader.next_row()) {
                None => return Ok(Pull::End),
                Some(Ok(row)) => {
                    let Row { router, site, role, ts, values } = row;
                    intake.row(position, &router, site.as_deref(), role.as_deref(), ts, values);
                    self.rows += 1;
                }
                Some(Err(bad)) if self.skip_invalid => {
                    tracing::warn!("skipping {bad}");
                    self.skipped += 1;
                }
                Some(Err(bad)) => return Err(SourceError::BadRow(bad)),
            }
        }
        Ok(Pull::More)
    }
}

/// Runs the plugins over the input. Fails on I/O errors and (unless `skip_invalid`) on the
/// first bad row; a failing plugin is recorded in the summary and the others go on.
pub fn replay(plugins: Vec<ReplayPlugin>, options: &ReplayOptions) -> Result<Summary, ReplayError> {
    if plugins.is_empty() {
        return Err(ReplayError::NoPlugins);
    }
    if options.batch_rows == 0 {
        return Err(ReplayError::EmptyBatch);
    }
    let started = Instant::now();
    let reader = RowReader::open(&options.input, options.format, &options.csv_router)?;
    let columns = reader.columns(&options.csv_metric);
    let config = EngineConfig {
        stream: 0,
        columns: columns.clone(),
        max_snapshot_bytes: usize::MAX,
        stamp_detection: false,
        batch_records: options.batch_rows,
    };
    let mut engine = Engine::new(config, Plugins::Fixed(plugins), Arc::new(Metrics::default()));
    let ignored: Vec<Vec<String>> =
        engine.components().map(|p| p.ignored(columns.iter().map(String::as_str))).collect();
    for (report, (ignored, plugin)) in engine.plugins().iter().zip(ignored.iter().zip(engine.components())) {
        if !ignored.is_empty() {
            tracing::warn!(
                plugin = %report.label,
                reads = ?plugin.info().metrics,
                ignored = ?ignored,
                "the plugin cannot read these metrics of the input: it scores them 0"
            );
        }
    }
    let labels: Vec<String> = engine.plugins().into_iter().map(|p| p.label).collect();
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = &options.scores {
        sinks.push(Box::new(ScoreWriter::new(output::create(path)?, &labels)?));
    }
    if let Some(path) = &options.anomalies {
        sinks.push(Box::new(AnomalyWriter::new(output::create(path)?)));
    }
    let progress = progress_bar(options);
    let mut source = FileSource::new(reader, options.skip_invalid);
    while engine.step(&mut source, &mut sinks)? != Pull::End {
        progress.set_position(source.rows());
    }
    for sink in &mut sinks {
        sink.finish()?;
    }
    progress.finish_and_clear();
    Ok(Summary {
        rows: source.rows(),
        points: source.rows() * columns.len() as u64,
        skipped_rows: source.skipped(),
        elapsed: started.elapsed(),
        plugins: engine
            .plugins()
            .into_iter()
            .zip(ignored)
            .map(|(p, ignored)| PluginSummary {
                label: p.label,
                version: p.version,
                anomalies: p.anomalies,
                busy: p.busy,
                failure: p.failure,
                ignored,
            })
            .collect(),
    })
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
