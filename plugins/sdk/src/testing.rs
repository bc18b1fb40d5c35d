//! Checks that every detector's tests share (feature `testing`, for dev-dependencies): state
//! that is exact after a crash, and results that do not depend on how a stream is cut into
//! batches.
//!
//! A host that crashes is replaced by one that restores the last snapshot and runs the records
//! after it, in batches cut wherever its reads happen to end. The README promises that this
//! changes nothing: a detector restored at any sample scores the rest of its stream exactly as
//! the uninterrupted one does. [`assert_restores_anywhere`] and [`assert_batching_is_invisible`]
//! check that promise bit for bit, scores and anomalies alike.
//!
//! ```
//! use routewatch_plugin_sdk::testing::{Batches, Stream, assert_restores_anywhere};
//! # use routewatch_plugin_sdk::{Batch, Detector, Info, Output, SeriesTable, Verdict, snapshot};
//! # /// Scores each sample by how far it is above the series' running maximum.
//! # #[derive(Default)]
//! # struct Max(SeriesTable<f64>);
//! # impl Detector for Max {
//! #     fn info() -> Info { Info::new("max", "0.1.0", "") }
//! #     fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), String> {
//! #         self.0.process(batch, out, |_| Some(()), |max: &mut f64, _, _, v| {
//! #             let score = if v > *max { 1.0 } else { 0.0 };
//! #             *max = max.max(v);
//! #             Verdict { score, anomaly: None }
//! #         })
//! #     }
//! #     fn snapshot(&self) -> Vec<u8> { snapshot::encode(1, &self.0) }
//! #     fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
//! #         self.0 = snapshot::decode(bytes, 1, "max")?;
//! #         Ok(())
//! #     }
//! # }
//!
//! let mut stream = Stream::new(&["cpu_util"]);
//! for t in 0..100 {
//!     for router in 0..3 {
//!         stream.push(router, t * 60_000, &[((t * 7 + i64::from(router)) % 13) as f64]);
//!     }
//! }
//! assert_restores_anywhere(Max::default, &stream, (0..300).step_by(7), Batches::Every(25));
//! ```

use std::ops::Range;

use crate::{Anomaly, Batch, Detector, Output};

/// A stream of rows as a host hands them to a detector: each row is one router's sample of
/// every metric at one timestamp (`NaN` for a gap).
#[derive(Debug, Clone, Default)]
pub struct Stream {
    metrics: Vec<String>,
    routers: Vec<u32>,
    timestamps: Vec<i64>,
    /// `columns[metric][row]`.
    columns: Vec<Vec<f64>>,
}

impl Stream {
    /// An empty stream of these metrics.
    pub fn new(metrics: &[&str]) -> Stream {
        Stream {
            metrics: metrics.iter().map(|m| m.to_string()).collect(),
            columns: vec![Vec::new(); metrics.len()],
            ..Stream::default()
        }
    }

    /// Appends a row: `values` holds one value per metric, in the stream's order.
    ///
    /// # Panics
    /// If `values` does not hold one value per metric.
    pub fn push(&mut self, router: u32, ts: i64, values: &[f64]) {
        assert_eq!(values.len(), self.metrics.len(), "one value per metric");
        self.routers.push(router);
        self.timestamps.push(ts);
        for (column, &v) in self.columns.iter_mut().zip(values) {
            column.push(v);
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.routers.len()
    }

    /// Whether the stream has no rows.
    pub fn is_empty(&self) -> bool {
        self.routers.is_empty()
    }

    /// The batch of `rows`.
    pub fn batch(&self, rows: Range<usize>) -> Batch<'_> {
        let columns = self.metrics.iter().zip(&self.columns).map(|(m, c)| (m.as_str(), &c[rows.clone()])).collect();
        Batch::new(&self.routers[rows.clone()], &self.timestamps[rows], columns)
    }
}

/// What a detector made of a run of rows of a stream: scores row-major (`row * metrics +
/// column`, rows counted from the run's first) and the anomalies, their `row` counted from
/// the start of the stream, in order of row and column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    pub scores: Vec<f32>,
    pub anomalies: Vec<Anomaly>,
}

impl Results {
    /// Appends `later`, the results of the rows that follow.
    pub fn extend(&mut self, later: Results) {
        self.scores.extend(later.scores);
        self.anomalies.extend(later.anomalies);
        self.anomalies.sort_by_key(|a| (a.row, a.column));
    }
}

/// How a run of rows is cut into batches.
#[derive(Debug, Clone, Copy)]
pub enum Batches<'a> {
    /// Batches of this many rows from the run's first (the last shorter), as a host that
    /// (re)starts there reads them.
    Every(usize),
    /// A batch ends before each of these rows (stream rows; those outside the run are
    /// ignored): batches cut at timestamps, say.
    At(&'a [usize]),
}

impl Batches<'_> {
    /// The ends of the batches of `rows`, in order.
    fn ends(&self, rows: Range<usize>) -> Vec<usize> {
        let mut ends: Vec<usize> = match *self {
            Batches::Every(size) => rows.clone().step_by(size.max(1)).skip(1).collect(),
            Batches::At(cuts) => cuts.iter().copied().filter(|&c| c > rows.start && c < rows.end).collect(),
        };
        ends.sort_unstable();
        ends.dedup();
        ends.push(rows.end);
        ends
    }

    /// For failure messages.
    fn describe(&self) -> String {
        match self {
            Batches::Every(size) => format!("batches of {size} rows"),
            Batches::At(cuts) => format!("batches cut before {} given rows", cuts.len()),
        }
    }
}

/// Runs `rows` of `stream` through `detector`, cut into `batches`.
///
/// # Panics
/// If the detector fails a batch or writes the wrong number of scores.
pub fn run<D: Detector>(detector: &mut D, stream: &Stream, rows: Range<usize>, batches: Batches<'_>) -> Results {
    let width = stream.metrics.len();
    let mut results = Results { scores: vec![0.0; rows.len() * width], anomalies: Vec::new() };
    let mut start = rows.start;
    let mut out = Output::default();
    for end in batches.ends(rows.clone()) {
        if end == start {
            continue; // an empty run
        }
        out.clear();
        let batch = stream.batch(start..end);
        detector.process(&batch, &mut out).unwrap_or_else(|e| panic!("batch of rows {start}..{end}: {e}"));
        let n = end - start;
        assert_eq!(out.scores.len(), n * width, "one score per point of rows {start}..{end}");
        for (c, column) in out.scores.chunks(n).enumerate() {
            for (i, &score) in column.iter().enumerate() {
                results.scores[(start - rows.start + i) * width + c] = score;
            }
        }
        results.anomalies.extend(out.anomalies.drain(..).map(|mut a| {
            a.row += start as u32;
            a
        }));
        start = end;
    }
    // Detectors write a batch's anomalies column by column; a stream's are compared in
    // stream order, whatever the batches were.
    results.anomalies.sort_by_key(|a| (a.row, a.column));
    results
}

/// Asserts that `got` equals `expected` (results of the whole `stream`) bit for bit; a
/// failure names `what` was run and the first point or anomaly that differs.
pub fn assert_same(expected: &Results, got: &Results, stream: &Stream, what: &str) {
    let width = stream.metrics.len();
    if let Some(i) = (0..expected.scores.len().max(got.scores.len()))
        .find(|&i| expected.scores.get(i).map(|s| s.to_bits()) != got.scores.get(i).map(|s| s.to_bits()))
    {
        let (row, column) = (i / width, i % width);
        panic!(
            "{what}: first different score at row {row} (router {}, ts {}, {}): {:?} uninterrupted, {:?} here",
            stream.routers.get(row).copied().unwrap_or_default(),
            stream.timestamps.get(row).copied().unwrap_or_default(),
            stream.metrics[column],
            expected.scores.get(i),
            got.scores.get(i),
        );
    }
    if let Some(i) = (0..expected.anomalies.len().max(got.anomalies.len()))
        .find(|&i| expected.anomalies.get(i).map(bits) != got.anomalies.get(i).map(bits))
    {
        panic!(
            "{what}: anomaly {i} differs:\n  uninterrupted {:?}\n  here          {:?}",
            expected.anomalies.get(i),
            got.anomalies.get(i)
        );
    }
}

/// An anomaly with its numbers as bits, so that a NaN equals itself.
fn bits(a: &Anomaly) -> (u32, u32, [u64; 5], crate::AnomalyKind, &str) {
    let numbers = [a.observed, a.expected, a.lower, a.upper, a.score].map(f64::to_bits);
    (a.row, a.column, numbers, a.kind, a.reason.as_str())
}

/// For every row in `cuts`: runs the rows before it through a detector from `make`, snapshots
/// it, restores the snapshot into another from `make` and runs the rest there (cut into
/// `batches` from the cut on, as a restarted host would). Asserts that scores and anomalies
/// equal those of one detector that ran the whole stream cut into `batches`, bit for bit, and
/// that the restored detector snapshots to the bytes it was restored from. Returns the
/// uninterrupted results, so that a test can also check they hold what it meant to test.
pub fn assert_restores_anywhere<D: Detector>(
    make: impl Fn() -> D,
    stream: &Stream,
    cuts: impl IntoIterator<Item = usize>,
    batches: Batches<'_>,
) -> Results {
    let n = stream.len();
    let whole = run(&mut make(), stream, 0..n, batches);
    for cut in cuts {
        let mut before = make();
        let mut results = run(&mut before, stream, 0..cut, batches);
        let snapshot = before.snapshot();
        let mut restored = make();
        restored.restore(&snapshot).unwrap_or_else(|e| panic!("restoring the snapshot taken at row {cut}: {e}"));
        assert!(restored.snapshot() == snapshot, "restored at row {cut}: the restored detector snapshots differently");
        results.extend(run(&mut restored, stream, cut..n, batches));
        assert_same(&whole, &results, stream, &format!("restored at row {cut}"));
    }
    whole
}

/// Asserts that running `stream` cut into each of `batchings` gives the results of the first,
/// bit for bit. Returns those results.
pub fn assert_batching_is_invisible<D: Detector>(
    make: impl Fn() -> D,
    stream: &Stream,
    batchings: &[Batches<'_>],
) -> Results {
    let n = stream.len();
    let (first, rest) = batchings.split_first().expect("at least one way to cut the stream");
    let reference = run(&mut make(), stream, 0..n, *first);
    for batches in rest {
        assert_same(&reference, &run(&mut make(), stream, 0..n, *batches), stream, &batches.describe());
    }
    reference
}

/// A small deterministic generator for test streams (xorshift64), so that every detector's
/// tests draw their noise alike without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced: xorshift would stay at 0).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box and Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}
