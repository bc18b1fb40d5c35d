//! A detector that misbehaves on request, for the host's containment tests.
//!
//! `configure({"mode": M})` picks the misbehaviour that `process` shows:
//! `ok` (scores 0, a well-behaved control), `loop` (never returns), `alloc` (allocates until
//! stopped), `panic`, `stack` (unbounded recursion), `oversized` (more output than input),
//! `nan` (NaN scores), `poison` (panics only on batches holding the value 666), and `mark`
//! (well-behaved, but reports every row of the first column as an anomaly: a probe that
//! lets pipeline tests count exactly which records were processed).

use std::hint::black_box;

use routewatch_plugin_sdk::{Anomaly, AnomalyKind, Batch, Detector, Info, Output};

routewatch_plugin_sdk::export_detector!(Evil);

#[derive(Default)]
pub struct Evil {
    mode: String,
    hoard: Vec<Vec<u8>>,
}

const MODES: &[&str] = &["ok", "loop", "alloc", "panic", "stack", "oversized", "nan", "poison", "mark"];

impl Detector for Evil {
    fn info() -> Info {
        let mut info = Info::new("evil", "0.1.0", "misbehaves on purpose; for containment tests only");
        info.config_schema = r#"{"type":"object","properties":{"mode":{"enum":["ok","loop","alloc","panic","stack","oversized","nan","poison","mark"]}},"additionalProperties":false}"#.into();
        info
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let value: serde_json::Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
        let mode = value.get("mode").and_then(|m| m.as_str()).unwrap_or("ok");
        if !MODES.contains(&mode) {
            return Err(format!("unknown mode {mode:?}"));
        }
        self.mode = mode.to_owned();
        Ok(())
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
            "mark" => {
                out.scores.resize(batch.points(), 0.0);
                for (row, &value) in batch.columns.first().map(|c| c.values).unwrap_or_default().iter().enumerate() {
                    out.anomalies.push(Anomaly {
                        row: row as u32,
                        column: 0,
                        observed: value,
                        expected: value,
                        lower: value,
                        upper: value,
                        score: 0.0,
                        kind: AnomalyKind::Other,
                        reason: "marked".into(),
                    });
                }
            }
            _ => out.scores.resize(batch.points(), 0.0),
        }
        Ok(())
    }
}

#[allow(unconditional_recursion)] // the point: it never returns
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 16]);
    black_box(recurse(depth + 1)).wrapping_add(frame[3])
}
