//! The host's output validation (`runtime::check_output`) on arbitrary batches and outputs,
//! mostly near-valid ones: it never panics, and whatever it accepts meets the contract in
//! `wit/detector.wit`, checked here independently of the host's code.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use routewatch_runtime::{Anomaly, AnomalyKind, Batch, Column, Output, check_output};

/// The WIT's `reason`: "a short human explanation, at most 200 bytes".
const MAX_REASON_BYTES: usize = 200;

const KINDS: [AnomalyKind; 9] = [
    AnomalyKind::Spike,
    AnomalyKind::Dip,
    AnomalyKind::LevelShift,
    AnomalyKind::Drift,
    AnomalyKind::Loss,
    AnomalyKind::Hardware,
    AnomalyKind::Outlier,
    AnomalyKind::Changepoint,
    AnomalyKind::Other,
];

/// A value that is usually in range, sometimes anything at all.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Unit {
    /// `n / u16::MAX`: in [0, 1], both ends included.
    In(u16),
    Edge(u8),
    Any(f64),
}

impl Unit {
    fn value(self) -> f64 {
        const EDGES: [f64; 10] = [
            0.0,
            -0.0,
            1.0,
            0.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1.0 + f64::EPSILON,
            -f64::MIN_POSITIVE,
            2.0,
        ];
        match self {
            Unit::In(n) => f64::from(n) / f64::from(u16::MAX),
            Unit::Edge(i) => EDGES[usize::from(i) % EDGES.len()],
            Unit::Any(v) => v,
        }
    }
}

/// An index that is usually inside the batch.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Index {
    In(u16),
    Any(u32),
}

impl Index {
    fn value(self, len: usize) -> u32 {
        match self {
            Index::In(i) if len > 0 => u32::from(i) % len as u32,
            Index::In(i) => u32::from(i),
            Index::Any(i) => i,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct AnomalyInput {
    row: Index,
    column: Index,
    bounds: [f64; 4],
    score: Unit,
    kind: u8,
    /// A reason of this many copies of `unit`, a one- to four-byte character.
    reason_len: u8,
    unit: char,
}

#[derive(Arbitrary, Debug)]
struct Input {
    rows: u8,
    columns: u8,
    /// Scores beyond (or short of) one per point.
    extra_scores: i8,
    scores: Vec<Unit>,
    anomalies: Vec<AnomalyInput>,
    values: Vec<f64>,
}

fn build(input: &Input) -> (Batch, Output) {
    let rows = usize::from(input.rows % 65);
    let columns = usize::from(input.columns % 12);
    let value = |i: usize| input.values.get(i % input.values.len().max(1)).copied().unwrap_or(f64::NAN);
    let batch = Batch {
        routers: (0..rows as u32).collect(),
        timestamps: (0..rows as i64).collect(),
        columns: (0..columns)
            .map(|c| Column { metric: format!("m{c}"), values: (0..rows).map(|r| value(c * rows + r)).collect() })
            .collect(),
    };
    let points = rows * columns;
    // Mostly the right number of scores.
    let count =
        if input.extra_scores % 4 == 0 { points } else { points.saturating_add_signed(input.extra_scores.into()) };
    let scores =
        (0..count).map(|i| input.scores.get(i % input.scores.len().max(1)).map_or(0.5, |u| u.value()) as f32).collect();
    let anomalies = input
        .anomalies
        .iter()
        .map(|a| Anomaly {
            row: a.row.value(rows),
            column: a.column.value(columns),
            observed: a.bounds[0],
            expected: a.bounds[1],
            lower: a.bounds[2],
            upper: a.bounds[3],
            score: a.score.value(),
            kind: KINDS[usize::from(a.kind) % KINDS.len()],
            reason: std::iter::repeat_n(a.unit, usize::from(a.reason_len)).collect(),
        })
        .collect();
    (batch, Output { scores, anomalies })
}

fuzz_target!(|input: Input| {
    let (batch, output) = build(&input);
    if check_output(&batch, &output).is_err() {
        return;
    }
    let rows = batch.routers.len();
    let points = rows * batch.columns.len();
    assert_eq!(output.scores.len(), points, "accepted the wrong number of scores");
    for (i, s) in output.scores.iter().enumerate() {
        assert!((0.0..=1.0).contains(s), "accepted score {s} at point {i}");
    }
    for a in &output.anomalies {
        assert!((a.row as usize) < rows, "accepted an anomaly at row {} of {rows}", a.row);
        assert!((a.column as usize) < batch.columns.len(), "accepted an anomaly at column {}", a.column);
        assert!((0.0..=1.0).contains(&a.score), "accepted anomaly score {}", a.score);
        assert!(a.reason.len() <= MAX_REASON_BYTES, "accepted a reason of {} bytes", a.reason.len());
    }
});
