//! Corpus mode: every detector over a folder of labelled single-series CSVs, scored by
//! events (precision, recall, F1, delay) and by the NAB score (Lavin and Ahmad 2015), which
//! rewards early detection inside a labelled window and charges each false positive.
//! `generate` writes such a corpus from the simulator. The formulas are in quality/README.md.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use routewatch_engine::replay::{InputFormat, ReplayOptions, RowReader, format_ts, parse_timestamp, replay};
use routewatch_runtime::{Limits, Runtime, RuntimeConfig};
use routewatch_simulator::{Engine, RuntimeConfig as SimConfig, TelemetryProfile};
use routewatch_telemetry::{AnomalyEvent, Metric};
use serde::Serialize;

use crate::DetectorArgs;
use crate::dataset::START_MS;

/// A labels file larger than this is refused (a label is a few dozen bytes).
pub const MAX_LABELS_BYTES: u64 = 64 << 20;

#[derive(clap::Args, Debug, Clone)]
pub struct CorpusArgs {
    /// Folder of single-series CSVs, each with a `timestamp,value` header (as `routewatch
    /// replay` reads them).
    pub dir: PathBuf,
    /// Labels: a JSON object mapping each CSV's file name to its anomaly windows,
    /// `[[start, end], ...]`, timestamps as in the CSVs (ISO-8601 or epoch numbers).
    #[arg(long)]
    pub labels: PathBuf,
    /// The metric name the detectors are given for every series.
    #[arg(long, default_value = "value")]
    pub metric: String,
    /// Take each series' metric name from its file name instead: the part of the stem after
    /// its last dot (`rtr-000001.cpu_util.csv` is `cpu_util`), as `generate-corpus` names them.
    #[arg(long, conflicts_with = "metric")]
    pub metric_from_name: bool,
    /// Detections of one series at most this many rows apart form one alarm.
    #[arg(long, default_value_t = 10)]
    pub merge_gap: usize,
    /// Share of each series' first rows that is warm-up: detections there are not scored, and
    /// neither are windows that start there (NAB's probationary period is 0.15).
    #[arg(long, default_value_t = 0.15)]
    pub probation: f64,
    /// Where the anomalies per file and the compiled-component cache go.
    #[arg(long, default_value = "target/quality/corpus-run")]
    pub out_dir: PathBuf,
    /// Replace the "## Corpus mode" section of this file (BENCHMARKS.md).
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub detectors: DetectorArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Folder to write `<router>.<metric>.csv` files and `labels.json` into.
    pub dir: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub routers: u32,
    #[arg(long, default_value_t = 2)]
    pub days: u32,
    #[arg(long, default_value_t = 60)]
    pub interval_s: u64,
    /// Random faults per router per day; each fault labels the series of the metrics it moves.
    #[arg(long, default_value_t = 2.0)]
    pub fault_rate: f64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = TelemetryProfile::Realistic)]
    pub profile: TelemetryProfile,
    /// Metrics to write a series for (comma-separated wire names).
    #[arg(long, value_delimiter = ',', default_values = ["cpu_util", "temp_c", "rx_bps", "bgp_up"])]
    pub metrics: Vec<String>,
}

/// One labelled series in row terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub rows: usize,
    /// Rows before this one are warm-up.
    pub probation: usize,
    /// Scored windows, as inclusive row ranges, in order and disjoint.
    pub windows: Vec<(usize, usize)>,
}

impl Labelled {
    /// Maps time windows onto the rows of a series with increasing `timestamps`. Windows with
    /// no row, and windows that start in the warm-up, are dropped; overlapping ones merge.
    pub fn new(timestamps: &[i64], windows: &[(i64, i64)], probation_share: f64) -> Labelled {
        let rows = timestamps.len();
        let probation = (probation_share * rows as f64).floor() as usize;
        let mut mapped: Vec<(usize, usize)> = windows
            .iter()
            .filter_map(|&(t1, t2)| {
                let first = timestamps.partition_point(|&t| t < t1);
                let end = timestamps.partition_point(|&t| t <= t2);
                (end > first).then(|| (first, end - 1))
            })
            .filter(|&(first, _)| first >= probation)
            .collect();
        mapped.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (a, b) in mapped {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Labelled { rows, probation, windows: merged }
    }

    fn window_of(&self, row: usize) -> Option<usize> {
        let i = self.windows.partition_point(|&(_, end)| end < row);
        self.windows.get(i).filter(|&&(start, _)| start <= row).map(|_| i)
    }
}

/// Event-level counts for one detector, summed over series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Events {
    pub windows: usize,
    pub detected: usize,
    pub alarms: usize,
    pub true_alarms: usize,
    /// Rows from a window's first row to its first detection, per detected window.
    pub delays: Vec<usize>,
}

impl Events {
    pub fn add(&mut self, other: &Events) {
        self.windows += other.windows;
        self.detected += other.detected;
        self.alarms += other.alarms;
        self.true_alarms += other.true_alarms;
        self.delays.extend_from_slice(&other.delays);
    }
    pub fn precision(&self) -> f64 {
        ratio(self.true_alarms, self.alarms)
    }
    pub fn recall(&self) -> f64 {
        ratio(self.detected, self.windows)
    }
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
    }
    pub fn median_delay(&self) -> Option<f64> {
        let mut d = self.delays.clone();
        d.sort_unstable();
        let n = d.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(d[n / 2] as f64),
            _ => Some((d[n / 2 - 1] + d[n / 2]) as f64 / 2.0),
        }
    }
    pub fn mean_delay(&self) -> Option<f64> {
        (!self.delays.is_empty()).then(|| self.delays.iter().sum::<usize>() as f64 / self.delays.len() as f64)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Scores detections (rows, any order, duplicates allowed) on one series by events: detections
/// at most `merge_gap` rows apart form an alarm; an alarm with a detection inside a window is
/// true; a window is detected by any detection inside it; its delay is from its first row.
pub fn events(l: &Labelled, detections: &[usize], merge_gap: usize) -> Events {
    let mut rows: Vec<usize> = detections.iter().copied().filter(|&r| r >= l.probation && r < l.rows).collect();
    rows.sort_unstable();
    rows.dedup();
    let mut out = Events { windows: l.windows.len(), ..Events::default() };
    let mut first_in: Vec<Option<usize>> = vec![None; l.windows.len()];
    let mut alarm_true = false;
    for (i, &row) in rows.iter().enumerate() {
        if i == 0 || row - rows[i - 1] > merge_gap {
            if i > 0 && alarm_true {
                out.true_alarms += 1;
            }
            out.alarms += 1;
            alarm_true = false;
        }
        if let Some(w) = l.window_of(row) {
            alarm_true = true;
            first_in[w].get_or_insert(row);
        }
    }
    if alarm_true {
        out.true_alarms += 1;
    }
    for (w, first) in first_in.iter().enumerate() {
        if let Some(row) = first {
            out.detected += 1;
            out.delays.push(row - l.windows[w].0);
        }
    }
    out
}

/// The weights of a NAB application profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NabCosts {
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

/// NAB's standard profile.
pub const NAB_STANDARD: NabCosts = NabCosts { tp: 1.0, fp: 0.11, fn_: 1.0 };

/// NAB's scaled sigmoid of the relative position `y` of a detection: `2 / (1 + e^(5y)) - 1`,
/// so 0.987 at a window's first row (`y = -1`), 0 at its last (`y = 0`), towards -1 after it;
/// -1 beyond `y = 3` and 1 below `y = -3`.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else if y < -3.0 {
        1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// A NAB score: the raw sum, and what a detector that never fires (`null`) and a perfect one
/// (each window flagged on its first row, nothing else) would get on the same series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Nab {
    pub raw: f64,
    pub null: f64,
    pub perfect: f64,
}

impl Nab {
    pub fn add(&mut self, other: &Nab) {
        self.raw += other.raw;
        self.null += other.null;
        self.perfect += other.perfect;
    }

    /// `100 (raw - null) / (perfect - null)`: 100 is perfect, 0 is never firing.
    pub fn normalised(&self) -> f64 {
        if self.perfect == self.null { 0.0 } else { 100.0 * (self.raw - self.null) / (self.perfect - self.null) }
    }
}

/// Relative position of `row` in the window `(start, end)` (-1 at its first row, 0 at its
/// last) or after it (1 one window length past its end).
fn position(row: usize, (start, end): (usize, usize)) -> f64 {
    let span = end - start;
    if span == 0 {
        // NAB's rule for a one-row window: well inside it, or well past it.
        return if row <= end { -2.0 } else { 2.0 };
    }
    (row as f64 - end as f64) / span as f64
}

/// The NAB score of detections on one series (Lavin and Ahmad 2015, as NAB's scorer computes
/// it): the first detection in each window scores `tp x sigmoid(position)`; a window without
/// one costs `fn`; every detection outside the windows scores `fp x sigmoid(position after the
/// window before it)` (a negative number), or `-fp` if no window precedes it. Later detections
/// inside a window neither add nor cost.
pub fn nab(l: &Labelled, detections: &[usize], c: &NabCosts) -> Nab {
    let mut rows: Vec<usize> = detections.iter().copied().filter(|&r| r >= l.probation && r < l.rows).collect();
    rows.sort_unstable();
    rows.dedup();
    let mut raw = 0.0;
    let mut first_in: Vec<Option<usize>> = vec![None; l.windows.len()];
    for &row in &rows {
        match l.window_of(row) {
            Some(w) => {
                first_in[w].get_or_insert(row);
            }
            None => {
                let before = l.windows.partition_point(|&(_, end)| end < row);
                raw += match before.checked_sub(1) {
                    Some(w) => c.fp * scaled_sigmoid(position(row, l.windows[w])),
                    None => -c.fp,
                };
            }
        }
    }
    for (w, first) in first_in.iter().enumerate() {
        raw += match first {
            Some(row) => c.tp * scaled_sigmoid(position(*row, l.windows[w])),
            None => -c.fn_,
        };
    }
    let null = -c.fn_ * l.windows.len() as f64;
    let perfect = l.windows.iter().map(|&w| c.tp * scaled_sigmoid(position(w.0, w))).sum();
    Nab { raw, null, perfect }
}

/// One detector's figures over the corpus.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DetectorFigures {
    pub detector: String,
    pub detections: usize,
    pub events: Events,
    pub nab: Nab,
    pub nab_standard: f64,
    pub failure: Option<String>,
}

/// Reads a labels file: file name -> windows in epoch ms.
pub fn read_labels(path: &Path) -> Result<BTreeMap<String, Vec<(i64, i64)>>> {
    let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    ensure!(size <= MAX_LABELS_BYTES, "{} is {size} bytes, over the limit of {MAX_LABELS_BYTES}", path.display());
    let text = std::fs::read_to_string(path)?;
    let raw: BTreeMap<String, Vec<[serde_json::Value; 2]>> = serde_json::from_str(&text)
        .with_context(|| format!("{}: expected {{\"file.csv\": [[start, end], ...], ...}}", path.display()))?;
    let time = |file: &str, v: &serde_json::Value| -> Result<i64> {
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => bail!("{file}: a window bound must be a timestamp string or number, found {other}"),
        };
        parse_timestamp(&text).map_err(|e| anyhow::anyhow!("{file}: {e}"))
    };
    let mut labels = BTreeMap::new();
    for (file, windows) in raw {
        let mut out = Vec::with_capacity(windows.len());
        for [a, b] in &windows {
            let (start, end) = (time(&file, a)?, time(&file, b)?);
            ensure!(start <= end, "{file}: window [{a}, {b}] ends before it starts");
            out.push((start, end));
        }
        labels.insert(file, out);
    }
    Ok(labels)
}

/// The timestamps of a CSV series, read with the replay's own parser, and how many rows repeat
/// the timestamp of the row before. Timestamps must not decrease: a window is a range of rows,
/// which only holds in time order. Repeats are kept (real exports have them: NAB's
/// realTraffic files do); the rows are replayed in file order, as any source would deliver them.
fn timestamps(path: &Path) -> Result<(Vec<i64>, usize)> {
    let mut reader = RowReader::open(path, InputFormat::Csv, "series")?;
    let mut out = Vec::new();
    let mut repeated = 0;
    while let Some(row) = reader.next_row() {
        let ts = row?.ts;
        if let Some(&last) = out.last() {
            ensure!(
                ts >= last,
                "{}: timestamps must not decrease (row {} has {} after {}); sort the file by time",
                path.display(),
                out.len() + 1,
                format_ts(ts),
                format_ts(last)
            );
            repeated += usize::from(ts == last);
        }
        out.push(ts);
    }
    Ok((out, repeated))
}

pub fn run(args: &CorpusArgs) -> Result<()> {
    ensure!((0.0..1.0).contains(&args.probation), "--probation must be in [0, 1)");
    let labels = read_labels(&args.labels)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.dir)
        .with_context(|| format!("reading {}", args.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no .csv files in {}", args.dir.display());
    let names: Vec<String> =
        files.iter().map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).collect();
    let unlabelled: Vec<&String> = names.iter().filter(|n| !labels.contains_key(*n)).collect();
    ensure!(unlabelled.is_empty(), "no labels for {unlabelled:?} (give an empty list for a series with no anomaly)");
    let missing: Vec<&String> = labels.keys().filter(|k| !names.contains(k)).collect();
    ensure!(missing.is_empty(), "labelled files not in {}: {missing:?}", args.dir.display());

    std::fs::create_dir_all(&args.out_dir)?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(args.out_dir.join("components")),
        limits: Limits { cpu_budget: std::time::Duration::from_secs(600), memory_bytes: 2 << 30, ..Limits::default() },
        ..RuntimeConfig::default()
    })?;
    let loaded = args.detectors.load(&runtime)?;
    let mut figures: Vec<DetectorFigures> =
        loaded.iter().map(|(name, _)| DetectorFigures { detector: (*name).to_owned(), ..Default::default() }).collect();
    let mut rows_total = 0;
    let mut repeated_total = 0;

    for (path, name) in files.iter().zip(&names) {
        let (ts, repeated) = timestamps(path)?;
        rows_total += ts.len();
        repeated_total += repeated;
        let labelled = Labelled::new(&ts, &labels[name], args.probation);
        // An anomaly at a repeated timestamp counts at the first row of that timestamp.
        let mut row_of: HashMap<i64, usize> = HashMap::with_capacity(ts.len());
        for (i, &t) in ts.iter().enumerate() {
            row_of.entry(t).or_insert(i);
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let metric = if args.metric_from_name {
            stem.rsplit_once('.')
                .map(|(_, m)| m.to_owned())
                .with_context(|| format!("{name}: no metric in the name"))?
        } else {
            args.metric.clone()
        };
        let anomalies = args.out_dir.join(format!("{name}.anomalies.jsonl"));
        let options = ReplayOptions {
            input: path.clone(),
            format: InputFormat::Csv,
            scores: None,
            anomalies: Some(anomalies.clone()),
            batch_rows: 1024,
            csv_router: stem,
            csv_metric: metric,
            skip_invalid: false,
            progress: false,
        };
        let plugins = loaded
            .iter()
            .map(|(_, p)| routewatch_engine::replay::ReplayPlugin {
                plugin: p.plugin.clone(),
                config: p.config.clone(),
            })
            .collect();
        let summary = replay(plugins, &options).with_context(|| format!("replaying {name}"))?;
        let mut rows: HashMap<String, Vec<usize>> = HashMap::new();
        for line in std::io::BufReader::new(std::fs::File::open(&anomalies)?).lines() {
            let event: AnomalyEvent = serde_json::from_str(&line?).context("reading the anomalies")?;
            let row = *row_of.get(&event.ts).context("an anomaly at a time that is not in the series")?;
            rows.entry(event.plugin).or_default().push(row);
        }
        for (f, p) in figures.iter_mut().zip(&summary.plugins) {
            let detections = rows.get(&p.label).map(Vec::as_slice).unwrap_or(&[]);
            f.detections += detections.len();
            f.events.add(&events(&labelled, detections, args.merge_gap));
            f.nab.add(&nab(&labelled, detections, &NAB_STANDARD));
            if let Some(failure) = &p.failure {
                f.failure.get_or_insert_with(|| format!("{name}: {failure}"));
            }
        }
    }
    for f in &mut figures {
        f.nab_standard = f.nab.normalised();
    }
    let text = report(args, files.len(), rows_total, repeated_total, &figures);
    println!("{text}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)?;
    }
    if let Some(path) = &args.write {
        crate::report::replace_section(path, "## Corpus mode", &text)?;
    }
    Ok(())
}

fn report(args: &CorpusArgs, files: usize, rows: usize, repeated: usize, figures: &[DetectorFigures]) -> String {
    let mut out = String::from("## Corpus mode\n\n");
    let _ = writeln!(
        out,
        "Command: `routewatch-quality {}`  \nMachine: {}  \n\
         Corpus: {files} series, {rows} rows ({repeated} repeating the timestamp of the row before, kept), \
         {} scored windows; the first {:.0}% of each series is warm-up. \
         Detections at most {} rows apart form an alarm. NAB score: standard profile (TP 1, FP 0.11, FN 1), \
         normalised so that 100 is perfect and 0 is a detector that never fires (see quality/README.md).\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        crate::machine(),
        figures.first().map_or(0, |f| f.events.windows),
        args.probation * 100.0,
        args.merge_gap,
    );
    let _ = writeln!(
        out,
        "| detector | detections | alarms true / all | precision | recall | F1 | delay median / mean (rows) | NAB standard |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for f in figures {
        let e = &f.events;
        let delay = match (e.median_delay(), e.mean_delay()) {
            (Some(m), Some(a)) => format!("{m:.1} / {a:.1}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} | {:.2} | {:.2} | {:.2} | {delay} | {:.1} |",
            f.detector,
            f.detections,
            e.true_alarms,
            e.alarms,
            e.precision(),
            e.recall(),
            e.f1(),
            f.nab_standard
        );
    }
    for f in figures.iter().filter(|f| f.failure.is_some()) {
        let _ = writeln!(out, "\n**{} failed**: {}", f.detector, f.failure.as_deref().unwrap_or(""));
    }
    out
}

/// Writes a labelled corpus from the simulator: one CSV per (router, metric) with the samples
/// as delivered (under the realistic profile some are missing; late ones are put back in time
/// order, as an exported series would be), and `labels.json` with, for each file, the faults on
/// that router that move that metric, as `[start, end]` in the CSVs' RFC 3339 form (the
/// fault's last affected millisecond: it affects samples before its `end`).
pub fn generate(args: &GenerateArgs) -> Result<()> {
    let metrics: Vec<Metric> = args
        .metrics
        .iter()
        .map(|m| Metric::from_name(m).with_context(|| format!("{m:?} is not a metric")))
        .collect::<Result<_>>()?;
    ensure!(args.days >= 1 && args.routers >= 1, "at least one router and one day");
    std::fs::create_dir_all(&args.dir)?;
    let interval_ms = args.interval_s as i64 * 1000;
    let config = SimConfig {
        routers: args.routers,
        interval_ms: interval_ms as u64,
        fault_rate: args.fault_rate,
        profile: args.profile,
        // Labelled by faults alone: a consequence would be an unlabelled departure.
        consequences: false,
    };
    let mut engine = Engine::new(args.seed, config, START_MS).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ticks = i64::from(args.days) * 86_400_000 / interval_ms;
    // series[router][metric] = (ts, value)
    let mut series: Vec<Vec<Vec<(i64, f64)>>> = vec![vec![Vec::new(); metrics.len()]; args.routers as usize];
    for tick in 0..ticks {
        engine.tick(START_MS + tick * interval_ms);
        for record in engine.delivered() {
            let index = engine.lookup(&record.router).map_err(|e| anyhow::anyhow!("{e}"))? as usize;
            for (m, &metric) in metrics.iter().enumerate() {
                series[index][m].push((record.ts, record.metrics.get(metric)));
            }
        }
    }
    let end = START_MS + ticks * interval_ms;
    let mut labels: BTreeMap<String, Vec<[String; 2]>> = BTreeMap::new();
    for (index, per_metric) in series.iter_mut().enumerate() {
        let router = routewatch_simulator::fleet::router_id(index as u32);
        for (m, points) in per_metric.iter_mut().enumerate() {
            points.sort_by_key(|p| p.0);
            points.dedup_by_key(|p| p.0);
            let name = format!("{router}.{}.csv", metrics[m].name());
            let mut w = std::io::BufWriter::new(std::fs::File::create(args.dir.join(&name))?);
            writeln!(w, "timestamp,value")?;
            for (ts, value) in points.iter() {
                writeln!(w, "{},{value}", format_ts(*ts))?;
            }
            w.flush()?;
            let windows = engine
                .faults()
                .all()
                .filter(|f| f.event.router == router && f.event.metrics.iter().any(|x| x == metrics[m].name()))
                .filter(|f| f.event.start < end)
                .map(|f| [format_ts(f.event.start), format_ts(f.event.end.min(end) - 1)])
                .collect();
            labels.insert(name, windows);
        }
    }
    std::fs::write(args.dir.join("labels.json"), serde_json::to_vec_pretty(&labels)?)?;
    let windows: usize = labels.values().map(Vec::len).sum();
    tracing::info!(files = labels.len(), windows, "wrote the corpus to {}", args.dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(rows: usize, windows: &[(usize, usize)]) -> Labelled {
        Labelled { rows, probation: 0, windows: windows.to_vec() }
    }

    #[test]
    fn windows_map_to_rows_merge_and_skip_the_warm_up() {
        let ts: Vec<i64> = (0..100).map(|i| i * 60).collect();
        let l = Labelled::new(&ts, &[(600, 900), (870, 1200), (5, 50), (3000, 3300), (6001, 7000)], 0.2);
        // Rows 10..=15 and 15..=20 merge into one that starts in the warm-up and goes, as does
        // a window with no row.
        assert_eq!(l.probation, 20);
        assert_eq!(l.windows, vec![(50, 55)]);
        let l = Labelled::new(&ts, &[(600, 900), (870, 1200)], 0.0);
        assert_eq!(l.windows, vec![(10, 20)]);
    }

    #[test]
    fn events_count_alarms_windows_and_delays() {
        let l = series(200, &[(50, 59), (100, 109), (150, 159)]);
        // Window 1 flagged at 53 (and again at 57, same alarm) and its alarm runs on past the
        // window; window 2 is missed; window 3 on its first row. Two false alarms.
        let e = events(&l, &[53, 57, 62, 10, 130, 150, 150], 5);
        assert_eq!(e.windows, 3);
        assert_eq!(e.detected, 2);
        assert_eq!(e.alarms, 4, "10; 53-62; 130; 150");
        assert_eq!(e.true_alarms, 2);
        assert_eq!(e.delays, vec![3, 0]);
        assert!((e.precision() - 0.5).abs() < 1e-12);
        assert!((e.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert!((e.f1() - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(e.median_delay(), Some(1.5));
        // Nothing flagged: no alarms, nothing detected.
        assert_eq!(events(&l, &[], 5), Events { windows: 3, ..Default::default() });
    }

    #[test]
    fn the_scaled_sigmoid_matches_nab() {
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298).abs() < 1e-9);
        assert!((scaled_sigmoid(-0.5) - 0.848_283_639).abs() < 1e-9);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(1.0) + 0.986_614_298).abs() < 1e-9);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
        assert_eq!(scaled_sigmoid(-3.5), 1.0);
    }

    #[test]
    fn nab_rewards_early_detection_and_charges_false_positives() {
        // One window of 11 rows, 100..=110.
        let l = series(300, &[(100, 110)]);
        let perfect = nab(&l, &[100], &NAB_STANDARD);
        assert!((perfect.raw - scaled_sigmoid(-1.0)).abs() < 1e-12);
        assert_eq!(perfect.normalised(), 100.0);
        assert_eq!(nab(&l, &[], &NAB_STANDARD).normalised(), 0.0);
        // Halfway in: position -0.5.
        let half = nab(&l, &[105], &NAB_STANDARD);
        assert!((half.raw - scaled_sigmoid(-0.5)).abs() < 1e-12);
        // Only the first detection in the window counts.
        assert_eq!(nab(&l, &[105, 106, 110], &NAB_STANDARD).raw, half.raw);
        // Later is worse; the last row scores 0.
        assert!(nab(&l, &[108], &NAB_STANDARD).raw < half.raw);
        assert_eq!(nab(&l, &[110], &NAB_STANDARD).raw, 0.0);
        // A false positive before any window costs the full FP weight; one just after the
        // window costs little, one a window length after costs nearly the full weight.
        let early_fp = nab(&l, &[100, 20], &NAB_STANDARD);
        assert!((early_fp.raw - (scaled_sigmoid(-1.0) - 0.11)).abs() < 1e-12);
        let just_after = nab(&l, &[100, 111], &NAB_STANDARD).raw - perfect.raw;
        assert!(
            (just_after - 0.11 * scaled_sigmoid(0.1)).abs() < 1e-12 && just_after < 0.0 && just_after > -0.11 * 0.3
        );
        let far_after = nab(&l, &[100, 200], &NAB_STANDARD).raw - perfect.raw;
        assert!((far_after + 0.11).abs() < 1e-12, "beyond 3 window lengths: the full weight");
        // Missing the window costs the FN weight; normalised against null and perfect.
        let missed = nab(&l, &[20], &NAB_STANDARD);
        assert!((missed.raw - (-1.0 - 0.11)).abs() < 1e-12);
        assert!((missed.normalised() - 100.0 * (-0.11) / (scaled_sigmoid(-1.0) + 1.0)).abs() < 1e-9);
        // Warm-up detections are ignored.
        let warm = Labelled { probation: 50, ..l.clone() };
        assert_eq!(nab(&warm, &[20, 100], &NAB_STANDARD).raw, perfect.raw);
    }

    #[test]
    fn labels_read_iso_and_epoch_bounds_and_refuse_reversed_windows() {
        let dir = std::env::temp_dir().join(format!("rw-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("labels.json");
        std::fs::write(&path, r#"{"a.csv": [["2025-01-06T00:00:00Z", 1736121660]], "b.csv": []}"#).unwrap();
        let labels = read_labels(&path).unwrap();
        assert_eq!(labels["a.csv"], vec![(1_736_121_600_000, 1_736_121_660_000)]);
        assert!(labels["b.csv"].is_empty());
        std::fs::write(&path, r#"{"a.csv": [[1736121660, 1736121600]]}"#).unwrap();
        assert!(read_labels(&path).unwrap_err().to_string().contains("ends before it starts"));
        std::fs::write(&path, r#"{"a.csv": [[true, 1]]}"#).unwrap();
        assert!(read_labels(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
