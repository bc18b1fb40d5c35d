//! The labelled data set: the simulator's engine, run in-process, written as the simulator's
//! own JSON lines plus its ground truth.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use routewatch_simulator::{Engine, RuntimeConfig, TelemetryProfile};
use routewatch_telemetry::{FaultEvent, PlannedChange};

/// 2025-01-06T00:00:00Z, the simulator's default start (a Monday).
pub const START_MS: i64 = 1_736_121_600_000;

pub struct Dataset {
    pub records: PathBuf,
    pub faults: Vec<FaultEvent>,
    /// Planned changes (realistic profile; empty under clean).
    pub changes: Vec<PlannedChange>,
    pub profile: TelemetryProfile,
    pub end: i64,
    pub interval_ms: i64,
    pub routers: u32,
}

/// What to simulate.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub routers: u32,
    pub days: u32,
    pub interval_s: u64,
    pub fault_rate: f64,
    pub seed: u64,
    pub profile: TelemetryProfile,
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    std::fs::read_to_string(path)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<T>, _>>()
        .with_context(|| format!("reading {}", path.display()))
}

fn write_lines<T: serde::Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    for item in items {
        serde_json::to_writer(&mut w, item)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// Simulates the fleet and writes `fleet.jsonl` (the records as delivered: under the
/// realistic profile some are missing and some late), `fleet.faults.jsonl` and
/// `fleet.changes.jsonl` to `dir`. With `reuse`, an existing set made with the same
/// parameters is kept.
pub fn make(dir: &Path, p: Params, reuse: bool) -> Result<Dataset> {
    let Params { routers, days, interval_s, fault_rate, seed, profile } = p;
    std::fs::create_dir_all(dir)?;
    let records = dir.join("fleet.jsonl");
    let truth = dir.join("fleet.faults.jsonl");
    let changes_path = dir.join("fleet.changes.jsonl");
    let stamp = dir.join("fleet.params");
    let params = format!(
        "routers={routers} days={days} interval_s={interval_s} fault_rate={fault_rate} seed={seed} profile={profile}"
    );
    let interval_ms = (interval_s * 1000) as i64;
    let ticks = i64::from(days) * 86_400_000 / interval_ms;
    let end = START_MS + ticks * interval_ms;
    let same = std::fs::read_to_string(&stamp).is_ok_and(|s| s == params);
    if reuse && same && records.is_file() && truth.is_file() {
        tracing::info!("reusing the data set in {} ({params})", dir.display());
        let faults = read_lines(&truth)?;
        let changes = read_lines(&changes_path)?;
        return Ok(Dataset { records, faults, changes, profile, end, interval_ms, routers });
    }
    tracing::info!("simulating {params}");
    // The stamp goes first and comes back last: a run stopped halfway leaves no stamp, so the
    // next `--reuse` simulates again instead of scoring a half-written set against the wrong
    // ground truth.
    match std::fs::remove_file(&stamp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    // Without consequences: the scorer does not yet credit a crash's anomalies to the leak
    // behind it, and would count them as false alarms.
    let config = RuntimeConfig { routers, interval_ms: interval_ms as u64, fault_rate, profile, consequences: false };
    let mut engine = Engine::new(seed, config, START_MS).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&records)?);
    for tick in 0..ticks {
        engine.tick(START_MS + tick * interval_ms);
        for record in engine.delivered() {
            out.write_all(&record.encode())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    let mut faults: Vec<FaultEvent> = engine.faults().all().map(|f| f.event).collect();
    faults.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
    write_lines(&truth, &faults)?;
    let mut changes: Vec<PlannedChange> = engine.changes().all().cloned().collect();
    changes.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
    write_lines(&changes_path, &changes)?;
    std::fs::write(&stamp, params)?;
    Ok(Dataset { records, faults, changes, profile, end, interval_ms, routers })
}
