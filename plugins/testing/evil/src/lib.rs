//! A detector that misbehaves on request, for the host's containment tests.
//!
//! `configure({"mode": M})` picks the misbehaviour that `process` shows:
//! `ok` (scores 0, a well-behaved control), `loop` (never returns), `alloc` (allocates until
//! stopped), `panic`, `stack` (unbounded recursion), `oversized` (more output than input),
//! `nan` (NaN scores), `poison` (panics only on batches holding the value 666), `mark`
//! (well-behaved, but reports every row of the first column as an anomaly: a probe that
//! lets pipeline tests count exactly which records were processed), `busy` (spins `spins`
//! times, on every batch or only on those holding the value `marker`, then marks like `mark`), `log-flood` (100 log
//! lines a call, each trying to forge a host line), `big-snapshot` (a snapshot of
//! `snapshot_mib` MiB), `one-sided` (marks every row with an anomaly whose lower bound is
//! minus infinity), `bad-bounds` (an anomaly with a NaN bound), `long-reason` (a 1 KiB reason)
//! and `configure-loop` (never returns from `configure`).
//!
//! Its snapshot is `evil:` and the mode (or `snapshot_mib` MiB of it), so that a successor
//! version has state to refuse.

use std::hint::black_box;

use routewatch_plugin_sdk::{Anomaly, AnomalyKind, Batch, Detector, Info, Output};

routewatch_plugin_sdk::export_detector!(Evil);

#[derive(Default)]
pub struct Evil {
    mode: String,
    hoard: Vec<Vec<u8>>,
    spins: u64,
    marker: Option<f64>,
    snapshot_mib: usize,
}

const MODES: &[&str] = &[
    "ok",
    "loop",
    "alloc",
    "panic",
    "stack",
    "oversized",
    "nan",
    "poison",
    "mark",
    "busy",
    "log-flood",
    "big-snapshot",
    "one-sided",
    "bad-bounds",
    "long-reason",
    "configure-loop",
];

impl Detector for Evil {
    // It breaks the output contract on purpose, to test the host's checks.
    const RAW_OUTPUT: bool = true;

    fn info() -> Info {
        let mut info = Info::new("evil", "0.1.0", "misbehaves on purpose; for containment tests only");
        let modes = serde_json::to_string(MODES).expect("a list of names");
        info.config_schema = format!(
            r#"{{"type":"object","properties":{{"mode":{{"enum":{modes}}},"spins":{{"type":"integer","minimum":0}},"marker":{{"type":"number"}},"snapshot_mib":{{"type":"integer","minimum":0}}}},"additionalProperties":false}}"#
        );
        info
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let value: serde_json::Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
        let mode = value.get("mode").and_then(|m| m.as_str()).unwrap_or("ok");
        if !MODES.contains(&mode) {
            return Err(format!("unknown mode {mode:?}"));
        }
        if mode == "configure-loop" {
            let mut spins = 0u64;
            loop {
                spins = black_box(spins.wrapping_add(1));
            }
        }
        self.mode = mode.to_owned();
        self.spins = value.get("spins").and_then(|v| v.as_u64()).unwrap_or(0);
        self.marker = value.get("marker").and_then(|v| v.as_f64());
        self.snapshot_mib = value.get("snapshot_mib").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut state = format!("evil:{}", self.mode).into_bytes();
        if self.mode == "big-snapshot" {
            state.resize(self.snapshot_mib << 20, b'.');
        }
        state
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() || state.starts_with(b"evil:") { Ok(()) } else { Err("not an evil snapshot".into()) }
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), String> {
        match self.mode.as_str() {
            "loop" => {
                let mut spins = 0u64;
                loop {
                    spins = black_box(spins.wrapping_add(1));
                }
            }
            "alloc" => loop {
                self.hoard.push(black_box(vec![1u8; 1 << 20]));
            },
            "panic" => panic!("evil plugin panicked on purpose"),
            "stack" => {
                black_box(recurse(black_box(1)));
            }
            "oversized" => out.scores.resize(batch.points() * 2 + 1, 0.0),
            "nan" => out.scores.resize(batch.points(), f32::NAN),
            "poison" => {
                if batch.columns.iter().any(|c| c.values.contains(&666.0)) {
                    panic!("evil plugin choked on the poison value 666");
                }
                out.scores.resize(batch.points(), 0.0);
            }
            "mark" => mark(batch, out, f64::NAN, "marked"),
            "one-sided" => mark(batch, out, f64::NEG_INFINITY, "one-sided"),
            "bad-bounds" => {
                mark(batch, out, f64::NAN, "bad bounds");
                if let Some(first) = out.anomalies.first_mut() {
                    first.lower = f64::NAN;
                }
            }
            "long-reason" => mark(batch, out, f64::NAN, &"x".repeat(1024)),
            "busy" => {
                let marked = self.marker.is_none_or(|m| batch.columns.iter().any(|c| c.values.contains(&m)));
                if marked {
                    let mut spins = 0u64;
                    while spins < self.spins {
                        spins = black_box(spins + 1);
                    }
                }
                mark(batch, out, f64::NAN, "busy");
            }
            "log-flood" => {
                for i in 0..100 {
                    routewatch_plugin_sdk::log(
                        routewatch_plugin_sdk::Level::Error,
                        &format!(
                            "line {i}\n2026-12-01T03:00:00.000000Z ERROR routewatch_host::registry: plugin quarantined: arima\r\x1b[2K"
                        ),
                    );
                }
                out.scores.resize(batch.points(), 0.0);
            }
            _ => out.scores.resize(batch.points(), 0.0),
        }
        Ok(())
    }
}

/// Scores 0 and reports every row of the first column as an anomaly, with `lower` as its lower
/// bound (`NaN`: the value itself) and `reason`.
fn mark(batch: &Batch<'_>, out: &mut Output, lower: f64, reason: &str) {
    out.scores.resize(batch.points(), 0.0);
    for (row, &value) in batch.columns.first().map(|c| c.values).unwrap_or_default().iter().enumerate() {
        if value.is_nan() {
            continue; // a missing value is not a point to mark
        }
        out.anomalies.push(Anomaly {
            row: row as u32,
            column: 0,
            observed: value,
            expected: value,
            lower: if lower.is_nan() { value } else { lower },
            upper: value,
            score: 0.0,
            kind: AnomalyKind::Other,
            reason: reason.into(),
        });
    }
}

#[allow(unconditional_recursion)] // the point: it never returns
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 16]);
    black_box(recurse(depth + 1)).wrapping_add(frame[3])
}
