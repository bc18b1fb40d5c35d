//! JSON-lines output for replay and labelled data sets.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use routewatch_telemetry::{FaultEvent, PlannedChange};

use super::{Sink, SinkError};
use crate::changes::ChangeNotice;
use crate::encode::EncodedBatch;
use crate::faults::FaultNotice;

/// Writes records, one JSON object a line, to one file, and the ground truth, one final
/// `FaultEvent` a line (with its real end), to another. Planned changes (realistic profile),
/// one final `PlannedChange` a line, go to a third file, created with the first change.
#[derive(Debug)]
pub struct FileSink {
    records: BufWriter<File>,
    records_path: PathBuf,
    truth: BufWriter<File>,
    truth_path: PathBuf,
    /// Faults that have started but not ended; written when they end or at `flush`.
    open: BTreeMap<String, FaultEvent>,
    changes: Option<BufWriter<File>>,
    changes_path: PathBuf,
    open_changes: BTreeMap<String, PlannedChange>,
}

impl FileSink {
    pub fn create(records_path: &Path, truth_path: &Path) -> Result<FileSink, SinkError> {
        let open = |p: &Path| {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|source| SinkError::Io { path: dir.display().to_string(), source })?;
            }
            File::create(p)
                .map(|f| BufWriter::with_capacity(1 << 20, f))
                .map_err(|source| SinkError::Io { path: p.display().to_string(), source })
        };
        Ok(FileSink {
            records: open(records_path)?,
            records_path: records_path.to_owned(),
            truth: open(truth_path)?,
            truth_path: truth_path.to_owned(),
            open: BTreeMap::new(),
            changes: None,
            changes_path: Self::changes_path_for(truth_path),
            open_changes: BTreeMap::new(),
        })
    }

    /// The planned-change file next to a ground-truth file: `x.faults.jsonl` ->
    /// `x.changes.jsonl` (any other name: `NAME.changes.jsonl`).
    pub fn changes_path_for(truth: &Path) -> PathBuf {
        let name = truth.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = name.strip_suffix(".faults.jsonl").map_or_else(
            || truth.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            str::to_owned,
        );
        truth.with_file_name(format!("{stem}.changes.jsonl"))
    }

    fn write_change(&mut self, event: &PlannedChange) -> Result<(), SinkError> {
        let path = self.changes_path.display().to_string();
        let io = |source| SinkError::Io { path: path.clone(), source };
        if self.changes.is_none() {
            self.changes = Some(File::create(&self.changes_path).map(BufWriter::new).map_err(io)?);
        }
        let out = self.changes.as_mut().expect("created above");
        serde_json::to_writer(&mut *out, event).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)
    }

    /// The default ground-truth path next to a records file: `x.jsonl` -> `x.faults.jsonl`.
    pub fn truth_path_for(records: &Path) -> PathBuf {
        let stem = records.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        records.with_file_name(format!("{stem}.faults.jsonl"))
    }

    fn write_truth(&mut self, event: &FaultEvent) -> Result<(), SinkError> {
        let io = |source| SinkError::Io { path: self.truth_path.display().to_string(), source };
        serde_json::to_writer(&mut self.truth, event).map_err(|e| io(e.into()))?;
        self.truth.write_all(b"\n").map_err(io)
    }
}

impl Sink for FileSink {
    fn records(&mut self, batch: &EncodedBatch) -> Result<(), SinkError> {
        let io = |source| SinkError::Io { path: self.records_path.display().to_string(), source };
        for (_, payload) in batch.iter() {
            self.records.write_all(payload).map_err(io)?;
            self.records.write_all(b"\n").map_err(io)?;
        }
        Ok(())
    }

    fn faults(&mut self, notices: &[FaultNotice]) -> Result<(), SinkError> {
        for notice in notices {
            if notice.ended {
                self.open.remove(&notice.event.id);
                self.write_truth(&notice.event)?;
            } else {
                self.open.insert(notice.event.id.clone(), notice.event.clone());
            }
        }
        Ok(())
    }

    fn changes(&mut self, notices: &[ChangeNotice]) -> Result<(), SinkError> {
        for notice in notices {
            if notice.ended {
                self.open_changes.remove(&notice.event.id);
                self.write_change(&notice.event)?;
            } else {
                self.open_changes.insert(notice.event.id.clone(), notice.event.clone());
            }
        }
        Ok(())
    }

    /// Writes the faults and changes still running with their planned end, then flushes.
    fn flush(&mut self) -> Result<(), SinkError> {
        for event in std::mem::take(&mut self.open).into_values() {
            self.write_truth(&event)?;
        }
        for event in std::mem::take(&mut self.open_changes).into_values() {
            self.write_change(&event)?;
        }
        if let Some(changes) = self.changes.as_mut() {
            let path = self.changes_path.display().to_string();
            changes.flush().map_err(|source| SinkError::Io { path, source })?;
        }
        let records_path = self.records_path.display().to_string();
        self.records.flush().map_err(|source| SinkError::Io { path: records_path, source })?;
        let truth_path = self.truth_path.display().to_string();
        self.truth.flush().map_err(|source| SinkError::Io { path: truth_path, source })
    }
}
