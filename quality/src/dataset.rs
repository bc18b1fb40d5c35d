//! The labelled data set: the simulator's engine, run in-process, written as the simulator's
//! own JSON lines plus its ground truth.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use routewatch_simulator::{Engine, RuntimeConfig};
use routewatch_telemetry::FaultEvent;

/// 2025-01-06T00:00:00Z, the simulator's default start (a Monday).
pub const START_MS: i64 = 1_736_121_600_000;

pub struct Dataset {
    pub records: PathBuf,
    pub faults: Vec<FaultEvent>,
    pub end: i64,
    pub interval_ms: i64,
    pub routers: u32,
}

/// Simulates `routers` for `days` and writes `fleet.jsonl` and `fleet.faults.jsonl` to `dir`.
/// With `reuse`, an existing pair made with the same parameters is kept.
pub fn make(
    dir: &Path,
    routers: u32,
    days: u32,
    interval_s: u64,
    fault_rate: f64,
    seed: u64,
    reuse: bool,
) -> Result<Dataset> {
    std::fs::create_dir_all(dir)?;
    let records = dir.join("fleet.jsonl");
    let truth = dir.join("fleet.faults.jsonl");
    let stamp = dir.join("fleet.params");
    let params = format!("routers={routers} days={days} interval_s={interval_s} fault_rate={fault_rate} seed={seed}");
    let interval_ms = (interval_s * 1000) as i64;
    let ticks = i64::from(days) * 86_400_000 / interval_ms;
    let end = START_MS + ticks * interval_ms;
    let same = std::fs::read_to_string(&stamp).is_ok_and(|s| s == params);
    if reuse && same && records.is_file() && truth.is_file() {
        tracing::info!("reusing the data set in {} ({params})", dir.display());
        let faults = std::fs::read_to_string(&truth)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<FaultEvent>, _>>()
            .context("reading the ground truth")?;
        return Ok(Dataset { records, faults, end, interval_ms, routers });
    }
    tracing::info!("simulating {params}");
    let config = RuntimeConfig { routers, interval_ms: interval_ms as u64, fault_rate, ..Default::default() };
    let mut engine = Engine::new(seed, config, START_MS).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&records)?);
    for tick in 0..ticks {
        engine.tick(START_MS + tick * interval_ms);
        for record in engine.records() {
            out.write_all(&record.encode())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    let mut faults: Vec<FaultEvent> = engine.faults().all().map(|f| f.event).collect();
    faults.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
    let mut w = BufWriter::new(std::fs::File::create(&truth)?);
    for f in &faults {
        serde_json::to_writer(&mut w, f)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    std::fs::write(&stamp, params)?;
    Ok(Dataset { records, faults, end, interval_ms, routers })
}
