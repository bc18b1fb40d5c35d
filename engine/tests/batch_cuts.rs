//! Batches end at timestamps, whatever the source's cuts: the fleet-outlier detector, which
//! judges each timestamp's cross-section within one batch, scores a stream fed through the
//! engine in pulls of any sizes (and any `batch_records`) exactly as it scores the stream run
//! one whole timestamp at a time. Records out of timestamp order keep every timestamp's
//! on-time rows in one batch, and every record is run once and acknowledged in order.
//!
//! Needs the fleet-outlier component (`cargo xtask build`, or `cargo build --profile plugin
//! --target wasm32-wasip2 -p routewatch-fleet-outlier`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use routewatch_engine::metrics::Metrics;
use routewatch_engine::{
    Delivery, Engine, EngineConfig, FixedPlugin, Intake, Plugins, Pull, Sink, SinkError, Source, SourceError,
};
use routewatch_runtime::{Plugin, Runtime, RuntimeConfig};

const COLUMNS: [&str; 2] = ["cpu_util", "temp_c"];
const ROUTERS: u32 = 30;
const TICKS: i64 = 220;

/// `<target>/wasm32-wasip2/plugin/routewatch_fleet_outlier.wasm`, found from this test
/// binary's path (`<target>/release/deps/<test>`).
fn fleet_outlier() -> Plugin {
    let exe = std::env::current_exe().expect("test binary path");
    let target: PathBuf = exe.ancestors().nth(3).expect("<target>/<profile>/deps").into();
    let path = target.join("wasm32-wasip2/plugin/routewatch_fleet_outlier.wasm");
    assert!(path.is_file(), "{} is missing: build the plugins first (`cargo xtask build`)", path.display());
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime starts");
    runtime.load_file(&path).expect("fleet-outlier loads")
}

/// xorshift64*: the same numbers on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A record: position, router, timestamp, values.
type Row = (i64, u32, i64, [f64; 2]);

/// Thirty routers a minute apart: a CPU spike on one, an overheating on another, a router away
/// for a while, gaps, and a fleet-wide swing (not an outlier). With `late`, some records come
/// after the next timestamp's first records (up to 40 rows late).
fn fleet(seed: u64, late: bool) -> Vec<Row> {
    let mut rng = Rng(seed | 1);
    let mut rows: Vec<(f64, u32, i64, [f64; 2])> = Vec::new();
    for t in 0..TICKS {
        let swing = if (150..160).contains(&t) { 0.2 } else { 0.0 };
        for r in 0..ROUTERS {
            if r == 11 && (90..110).contains(&t) {
                continue;
            }
            let size = 1.0 + f64::from(r % 4);
            let mut cpu = 0.2 + 0.05 * size + swing + 0.02 * (rng.uniform() - 0.5);
            let mut temp = 40.0 + size + (rng.uniform() - 0.5);
            if r == 5 && (120..126).contains(&t) {
                cpu += 0.5;
            }
            if r == 9 && t >= 170 {
                temp += 12.0;
            }
            if r == 17 && t % 41 == 3 {
                cpu = f64::NAN;
            }
            // Where the record comes in the stream: in its tick, or late by up to 40 rows.
            let order = (t * i64::from(ROUTERS) + i64::from(r)) as f64;
            let delay = if late && rng.below(10) == 0 { 1.0 + rng.below(40) as f64 } else { 0.0 };
            rows.push((order + delay + 0.5 * f64::from(u8::from(delay > 0.0)), r, t * 60_000, [cpu, temp]));
        }
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    rows.into_iter().enumerate().map(|(i, (_, r, ts, values))| (i as i64 * 3, r, ts, values)).collect()
}

/// Hands the rows out in pulls: of the given sizes (each at most what the batch takes), or
/// (`None`) one whole timestamp a pull, as a source that knows its ticks.
struct Pulls {
    rows: Vec<Row>,
    next: usize,
    sizes: Option<Rng>,
}

impl Source for Pulls {
    fn pull(&mut self, intake: &mut Intake<'_>) -> Result<Pull, SourceError> {
        let end = match &mut self.sizes {
            Some(rng) => self.next + (1 + rng.below(260) as usize).min(intake.room()),
            None => {
                let ts = self.rows.get(self.next).map(|r| r.2);
                self.next + self.rows[self.next..].iter().take_while(|r| Some(r.2) == ts).count()
            }
        };
        let end = end.min(self.rows.len());
        for &(position, router, ts, values) in &self.rows[self.next..end] {
            intake.row(position, &format!("rtr-{router:02}"), Some("lon1"), None, ts, values);
        }
        self.next = end;
        Ok(match (end == self.rows.len(), self.sizes.is_some()) {
            (true, _) => Pull::End,
            (false, true) => Pull::More,
            (false, false) => Pull::Idle,
        })
    }
}

/// What the engine delivered: every score by the record's position, the anomalies, which batch
/// each record was run in, and the acknowledged position after each batch.
#[derive(Default)]
struct Seen {
    scores: BTreeMap<i64, Vec<u32>>,
    anomalies: Vec<(String, String, i64, u64)>,
    batch_of: BTreeMap<i64, usize>,
    batches: usize,
}

struct Keep(Arc<Mutex<Seen>>);

impl Sink for Keep {
    fn name(&self) -> &'static str {
        "keep"
    }

    fn deliver(&mut self, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        let mut seen = self.0.lock().unwrap();
        let (input, processed) = (delivery.input, delivery.processed);
        let batch = seen.batches;
        for row in 0..input.rows() {
            let scores = (0..COLUMNS.len())
                .map(|c| processed.score(0, row, c, COLUMNS.len()).expect("scored").to_bits())
                .collect();
            let position = input.position(row);
            assert!(seen.scores.insert(position, scores).is_none(), "record {position} run twice");
            seen.batch_of.insert(position, batch);
        }
        for e in &processed.events {
            seen.anomalies.push((e.router.clone(), e.metric.clone(), e.ts, e.score.to_bits()));
        }
        seen.batches += 1;
        Ok(())
    }
}

/// Runs `rows` through fleet-outlier, pulled as `sizes` says, in batches of `batch_records`.
fn run(plugin: &Plugin, rows: &[Row], batch_records: usize, sizes: Option<u64>) -> Seen {
    let columns: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    let config =
        EngineConfig { stream: 0, columns, max_snapshot_bytes: 1 << 24, stamp_detection: false, batch_records };
    let fixed = FixedPlugin { plugin: plugin.clone(), config: Some(r#"{"min_peers": 10, "warmup": 30}"#.into()) };
    let mut engine = Engine::new(config, Plugins::Fixed(vec![fixed]), Arc::new(Metrics::default()));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(Keep(seen.clone()))];
    let mut source = Pulls { rows: rows.to_vec(), next: 0, sizes: sizes.map(Rng) };
    let mut acknowledged = None;
    loop {
        let pull = engine.step(&mut source, &mut sinks).expect("a step");
        assert!(engine.acknowledged() >= acknowledged, "acknowledged only forwards");
        acknowledged = engine.acknowledged();
        if let Some(upto) = acknowledged {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.scores.range(upto..).count(), 0, "nothing after the acknowledged position was run");
            assert_eq!(seen.scores.len(), rows.iter().take_while(|r| r.0 < upto).count(), "all before it was");
        }
        if pull == Pull::End {
            break;
        }
    }
    assert!(engine.plugins()[0].failure.is_none(), "{:?}", engine.plugins()[0].failure);
    assert_eq!(acknowledged, Some(rows.last().unwrap().0 + 1), "every record acknowledged at the end");
    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.scores.len(), rows.len(), "every record run once");
    seen.anomalies.sort();
    seen
}

#[test]
fn any_cuts_score_as_one_batch_a_timestamp() {
    let plugin = fleet_outlier();
    let rows = fleet(7, false);
    let whole = run(&plugin, &rows, 100_000, None);
    let outliers = whole.anomalies.iter().filter(|a| a.0 == "rtr-05" || a.0 == "rtr-09").count();
    assert!(outliers >= 2, "the stream has outliers to find: {:?}", whole.anomalies);
    assert_eq!(whole.batches, TICKS as usize, "one batch a timestamp");
    let mut sizes = Rng(99);
    for case in 0..12 {
        // From a quarter of a timestamp (30 rows; the hard cap, 4 x batch_records, must hold a
        // timestamp) to many timestamps a batch.
        let batch_records = [8, 29, 30, 31, 45, 150][case % 6] * if case < 6 { 1 } else { 11 };
        let cut = run(&plugin, &rows, batch_records, Some(sizes.next()));
        let differ = whole.scores.iter().filter(|(p, s)| cut.scores.get(p) != Some(s)).count();
        assert_eq!(differ, 0, "batch_records {batch_records}: {differ} of {} scores differ", rows.len());
        assert_eq!(cut.anomalies, whole.anomalies, "batch_records {batch_records}");
    }
}

#[test]
fn out_of_order_records_keep_each_timestamps_on_time_rows_in_one_batch() {
    let plugin = fleet_outlier();
    let rows = fleet(8, true);
    let late = rows.windows(2).filter(|w| w[1].2 < w[0].2).count();
    assert!(late > 100, "the stream has late records: {late}");
    let mut sizes = Rng(5);
    for batch_records in [31, 64, 150, 333] {
        let cut = run(&plugin, &rows, batch_records, Some(sizes.next()));
        // A timestamp's on-time rows: those before the first row of any later timestamp.
        let mut high = i64::MIN;
        let mut on_time: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for row in &rows {
            high = high.max(row.2);
            if row.2 == high {
                on_time.entry(row.2).or_default().push(cut.batch_of[&row.0]);
            }
        }
        for (ts, batches) in on_time {
            assert!(batches.iter().all(|&b| b == batches[0]), "batch_records {batch_records}: ts {ts} split");
        }
    }
}
