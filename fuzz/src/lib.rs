//! What the fuzz targets assert, shared between them: the oracles for records, snapshots and
//! detector output, and the seed snapshots the snapshot targets start from.
//!
//! Every oracle panics on a violation, which libFuzzer reports as a crash with its input.

use std::collections::VecDeque;
use std::path::Path;

use routewatch_runtime as runtime;
use routewatch_plugin_sdk::{AnomalyKind, Batch, Detector, Output, SeriesTable, Verdict, snapshot};
use routewatch_telemetry::{Metric, Metrics, Record, Role, SCHEMA_VERSION};

/// Decodes `bytes` as a record; if it is accepted, checks the documented ranges and that it
/// re-encodes to bytes that decode to the very same record (bit for bit).
pub fn check_record(bytes: &[u8]) {
    let Ok(record) = Record::decode(bytes) else { return };
    assert_eq!(record.schema, SCHEMA_VERSION);
    for (field, id) in
        [("router", &record.router), ("site", &record.site), ("region", &record.region), ("vendor", &record.vendor)]
    {
        let ok = (1..=64).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        assert!(ok, "accepted {field} {id:?}");
    }
    assert!(record.ts >= 0, "accepted ts {}", record.ts);
    for metric in Metric::ALL {
        let value = record.metrics.get(metric);
        assert!(value.is_finite(), "accepted {metric} = {value}");
        if metric.is_ratio() {
            assert!((0.0..=1.0).contains(&value), "accepted ratio {metric} = {value}");
        }
        if metric.is_non_negative() {
            assert!(value >= 0.0, "accepted negative {metric} = {value}");
        }
    }
    let encoded = record.encode();
    let again = Record::decode(&encoded).unwrap_or_else(|e| {
        panic!("the re-encoding of an accepted record is refused: {e}: {}", String::from_utf8_lossy(&encoded))
    });
    assert_eq!(again, record, "re-encoding changed the record");
    for metric in Metric::ALL {
        let (was, is) = (record.metrics.get(metric), again.metrics.get(metric));
        assert_eq!(was.to_bits(), is.to_bits(), "{metric} {was:e} came back as {is:e}");
    }
}

/// Restores `bytes` into `detector` and checks what a restore promises:
/// * a refused snapshot leaves the state as it was;
/// * an accepted one snapshots back to bytes that restore again, into the same bytes;
/// * the restored detector then scores a batch without panicking, and what it returns passes
///   the host's output validation (a snapshot that restores but cannot run is a corrupt one
///   that restore should have refused).
pub fn check_restore<D: Detector>(detector: &mut D, bytes: &[u8]) {
    let before = detector.snapshot();
    if detector.restore(bytes).is_err() {
        assert!(detector.snapshot() == before, "a refused snapshot changed the state");
        return;
    }
    let first = detector.snapshot();
    let mut other = D::default();
    if let Err(e) = other.restore(&first) {
        panic!("the snapshot of a restored detector is refused: {e}");
    }
    assert!(other.snapshot() == first, "snapshot, restore, snapshot changed the bytes");
    for step in 0..2 {
        let sample = Sample::at(1 << 40, step);
        let batch = sample.batch();
        let mut out = Output::default();
        if detector.process(&batch, &mut out).is_ok() {
            check_detector_output(&batch, &out);
        }
    }
}

/// Checks a detector's output with the host's own validation.
pub fn check_detector_output(batch: &Batch<'_>, out: &Output) {
    let host_batch = runtime::Batch {
        routers: batch.routers.to_vec(),
        timestamps: batch.timestamps.to_vec(),
        columns: batch
            .columns
            .iter()
            .map(|c| runtime::Column { metric: c.metric.to_owned(), values: c.values.to_vec() })
            .collect(),
    };
    let host_output = runtime::Output {
        scores: out.scores.clone(),
        anomalies: out
            .anomalies
            .iter()
            .map(|a| runtime::Anomaly {
                row: a.row,
                column: a.column,
                observed: a.observed,
                expected: a.expected,
                lower: a.lower,
                upper: a.upper,
                score: a.score,
                kind: host_kind(a.kind),
                reason: a.reason.clone(),
            })
            .collect(),
    };
    if let Err(e) = runtime::check_output(&host_batch, &host_output) {
        panic!("the detector broke the output contract: {e}");
    }
}

fn host_kind(kind: AnomalyKind) -> runtime::AnomalyKind {
    match kind {
        AnomalyKind::Spike => runtime::AnomalyKind::Spike,
        AnomalyKind::Dip => runtime::AnomalyKind::Dip,
        AnomalyKind::LevelShift => runtime::AnomalyKind::LevelShift,
        AnomalyKind::Drift => runtime::AnomalyKind::Drift,
        AnomalyKind::Loss => runtime::AnomalyKind::Loss,
        AnomalyKind::Hardware => runtime::AnomalyKind::Hardware,
        AnomalyKind::Outlier => runtime::AnomalyKind::Outlier,
        AnomalyKind::Changepoint => runtime::AnomalyKind::Changepoint,
        AnomalyKind::Other => runtime::AnomalyKind::Other,
    }
}

/// Routers in a probe or seed batch: enough peers for the fleet detector's smallest group.
const ROUTERS: u32 = 5;
/// Sample interval of probe and seed batches, ms.
const INTERVAL: i64 = 60_000;

/// A synthetic batch: every metric of [`ROUTERS`] routers at one timestamp, a daily-like
/// cycle with deterministic noise and a spike now and then.
pub struct Sample {
    routers: Vec<u32>,
    timestamps: Vec<i64>,
    /// One column per metric, in [`Metric::ALL`] order.
    values: Vec<Vec<f64>>,
}

impl Sample {
    /// The sample of step `step` of a series that starts at `start` (ms).
    pub fn at(start: i64, step: usize) -> Sample {
        let routers: Vec<u32> = (0..ROUTERS).collect();
        let values =
            Metric::ALL.iter().map(|&metric| routers.iter().map(|&r| sample(metric, r, step)).collect()).collect();
        Sample { timestamps: vec![start + step as i64 * INTERVAL; routers.len()], routers, values }
    }

    /// The sample as a detector batch.
    pub fn batch(&self) -> Batch<'_> {
        let columns = Metric::ALL.iter().zip(&self.values).map(|(m, v)| (m.name(), &v[..])).collect();
        Batch::new(&self.routers, &self.timestamps, columns)
    }
}

/// A plausible value of `metric` for `router` at `step`.
fn sample(metric: Metric, router: u32, step: usize) -> f64 {
    let phase = (step as f64 / 12.0 + f64::from(router)).sin();
    // A small linear congruential generator: deterministic noise in [-0.5, 0.5).
    // Wrapping on purpose: fuzz builds check overflow.
    let mixed = (step as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(u64::from(router).wrapping_mul(1442695040888963407));
    let noise = (mixed >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
    let spike = if step % 37 == 36 && router == 1 { 4.0 } else { 0.0 };
    let unit = phase * 0.1 + noise * 0.02 + spike * 0.1;
    match metric {
        Metric::CpuUtil | Metric::MemUtil => (0.4 + unit).clamp(0.0, 1.0),
        Metric::LossRatio => (0.001 + unit * 0.001).clamp(0.0, 1.0),
        Metric::TempC => 45.0 + unit * 20.0,
        Metric::FanRpm => 6000.0 + unit * 500.0,
        Metric::LatencyMs => 3.0 + unit.abs() * 5.0,
        Metric::RxBps | Metric::TxBps => 4e9 * (1.0 + unit).max(0.0),
        Metric::IfErrors => (unit * 10.0).max(0.0).round(),
        Metric::BgpUp => 4.0,
    }
}

/// Snapshots of a detector configured with `config` and trained on `steps` probe batches,
/// taken at the start, halfway and at the end: valid inputs for the fuzzer to mutate.
pub fn trained_snapshots<D: Detector>(config: &str, steps: usize) -> Vec<Vec<u8>> {
    let mut detector = D::default();
    detector.configure(config).unwrap_or_else(|e| panic!("seed configuration {config}: {e}"));
    let mut snapshots = vec![detector.snapshot()];
    for step in 0..steps {
        let mut out = Output::default();
        detector
            .process(&Sample::at(1_764_000_000_000, step).batch(), &mut out)
            .unwrap_or_else(|e| panic!("seed training: {e}"));
        if step + 1 == steps / 2 || step + 1 == steps {
            snapshots.push(detector.snapshot());
        }
    }
    snapshots
}

/// Writes `seeds` into the corpus directory libFuzzer was given (its first directory
/// argument), so that a run starts from valid inputs generated by the code itself rather than
/// from files kept in git. Does nothing when no directory was given (reproducing a crash).
pub fn write_seeds(seeds: impl IntoIterator<Item = Vec<u8>>) {
    let Some(dir) = std::env::args().skip(1).find(|a| !a.starts_with('-') && Path::new(a).is_dir()) else {
        return;
    };
    for seed in seeds {
        // FNV-1a: a stable name, so repeated runs rewrite the same files.
        let hash = seed.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let path = Path::new(&dir).join(format!("seed-{hash:016x}"));
        if let Err(e) = std::fs::write(&path, &seed) {
            eprintln!("cannot write seed {}: {e}", path.display());
        }
    }
}

/// Records of the synthetic fleet, and one at the edges of every range.
pub fn seed_records() -> Vec<Vec<u8>> {
    let sample = Sample::at(1_764_000_000_000, 5);
    let mut records: Vec<Record> = (0..3)
        .map(|r| Record {
            schema: SCHEMA_VERSION,
            router: format!("rtr-{r:06}"),
            site: "fra1".into(),
            region: "eu-central".into(),
            role: Role::Edge,
            vendor: "acme".into(),
            ts: sample.timestamps[r],
            metrics: metrics_of(|m| sample.values[Metric::ALL.iter().position(|&x| x == m).unwrap()][r]),
        })
        .collect();
    records.push(Record {
        router: "r".repeat(64),
        site: "A.b_c-9".into(),
        role: Role::Core,
        ts: 0,
        metrics: metrics_of(|m| if m.is_ratio() { 1.0 } else { 0.0 }),
        ..records[0].clone()
    });
    records.iter().map(Record::encode).collect()
}

fn metrics_of(value: impl Fn(Metric) -> f64) -> Metrics {
    let mut metrics = Metrics::default();
    for metric in Metric::ALL {
        *metrics.get_mut(metric) = value(metric);
    }
    metrics
}

/// SDK snapshots of a [`SeriesTable`] like the detectors keep (counters, a timestamp, a level
/// and a window per series), filled from the synthetic fleet.
pub fn seed_series_tables() -> Vec<Vec<u8>> {
    type Series = (u64, i64, f64, VecDeque<f64>, Option<Vec<f32>>);
    let mut table: SeriesTable<Series> = SeriesTable::default();
    let mut seeds = vec![snapshot::encode(1, &(vec!["seed".to_owned()], &table))];
    for step in 0..8 {
        let sample = Sample::at(0, step);
        let mut out = Output::default();
        table
            .process(
                &sample.batch(),
                &mut out,
                |_| Some(()),
                |s: &mut Series, _, ts, value| {
                    s.0 += 1;
                    s.1 = ts;
                    s.2 += value;
                    s.3.push_back(value);
                    s.4 = (s.0 % 3 == 0).then(|| vec![value as f32; 2]);
                    Verdict::default()
                },
            )
            .expect("seed batches are valid");
    }
    seeds.push(snapshot::encode(1, &(vec!["seed".to_owned()], &table)));
    seeds
}
