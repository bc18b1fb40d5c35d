//! JSON-lines output for replay and labelled data sets.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use routewatch_telemetry::{FaultEvent, PlannedChange};
use serde::Serialize;

use super::{Sink, SinkError};
use crate::actions::{ActionNotice, ActionRecord, ActionStatus};
use crate::changes::ChangeNotice;
use crate::consequences::{Consequence, ConsequenceNotice};
use crate::encode::EncodedBatch;
use crate::faults::FaultNotice;

/// A JSON-lines file created with its first line, holding each item's final state: items
/// are kept open until they end, then written; those still open at `flush` are written as
/// they are then.
#[derive(Debug)]
struct FinalStates<T> {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    open: BTreeMap<String, T>,
}

impl<T: Serialize + Clone> FinalStates<T> {
    fn new(path: PathBuf) -> Self {
        FinalStates { path, file: None, open: BTreeMap::new() }
    }

    fn update(&mut self, id: &str, item: &T, ended: bool) -> Result<(), SinkError> {
        if ended {
            self.open.remove(id);
            self.write(item)
        } else {
            self.open.insert(id.to_owned(), item.clone());
            Ok(())
        }
    }

    fn write(&mut self, item: &T) -> Result<(), SinkError> {
        let path = self.path.display().to_string();
        let io = |source| SinkError::Io { path: path.clone(), source };
        if self.file.is_none() {
            self.file = Some(File::create(&self.path).map(BufWriter::new).map_err(io)?);
        }
        let out = self.file.as_mut().expect("created above");
        serde_json::to_writer(&mut *out, item).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        for item in std::mem::take(&mut self.open).into_values() {
            self.write(&item)?;
        }
        if let Some(file) = self.file.as_mut() {
            let path = self.path.display().to_string();
            file.flush().map_err(|source| SinkError::Io { path, source })?;
        }
        Ok(())
    }
}

/// Writes records, one JSON object a line, to one file, and the ground truth, one final
/// `FaultEvent` a line (with its real end), to another. Planned changes (realistic profile),
/// consequences and actions go to files of their own next to it (`NAME.changes.jsonl`,
/// `NAME.consequences.jsonl`, `NAME.actions.jsonl`), one final state a line, each created
/// with its first line.
#[derive(Debug)]
pub struct FileSink {
    records: BufWriter<File>,
    records_path: PathBuf,
    truth: BufWriter<File>,
    truth_path: PathBuf,
    /// Faults that have started but not ended; written when they end or at `flush`.
    open: BTreeMap<String, FaultEvent>,
    changes: FinalStates<PlannedChange>,
    consequences: FinalStates<Consequence>,
    actions: FinalStates<ActionRecord>,
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
            changes: FinalStates::new(Self::companion_path(truth_path, "changes")),
            consequences: FinalStates::new(Self::companion_path(truth_path, "consequences")),
            actions: FinalStates::new(Self::companion_path(truth_path, "actions")),
        })
    }

    /// The planned-change file next to a ground-truth file: `x.faults.jsonl` ->
    /// `x.changes.jsonl` (any other name: `NAME.changes.jsonl`).
    pub fn changes_path_for(truth: &Path) -> PathBuf {
        Self::companion_path(truth, "changes")
    }

    /// A ground-truth file next to the faults file: `x.faults.jsonl` -> `x.WHAT.jsonl` (any
    /// other name: `NAME.WHAT.jsonl`). `WHAT` is `changes`, `consequences` or `actions`.
    pub fn companion_path(truth: &Path, what: &str) -> PathBuf {
        let name = truth.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = name.strip_suffix(".faults.jsonl").map_or_else(
            || truth.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            str::to_owned,
        );
        truth.with_file_name(format!("{stem}.{what}.jsonl"))
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
        for n in notices {
            self.changes.update(&n.event.id, &n.event, n.ended)?;
        }
        Ok(())
    }

    fn consequences(&mut self, notices: &[ConsequenceNotice]) -> Result<(), SinkError> {
        for n in notices {
            self.consequences.update(&n.event.id, &n.event, n.ended)?;
        }
        Ok(())
    }

    fn actions(&mut self, notices: &[ActionNotice]) -> Result<(), SinkError> {
        for n in notices {
            self.actions.update(&n.record.id, &n.record, n.record.status == ActionStatus::Completed)?;
        }
        Ok(())
    }

    /// Writes the faults and changes still running with their planned end, the consequences
    /// still lasting without an end and the actions still running without an outcome, then
    /// flushes.
    fn flush(&mut self) -> Result<(), SinkError> {
        for event in std::mem::take(&mut self.open).into_values() {
            self.write_truth(&event)?;
        }
        self.changes.flush()?;
        self.consequences.flush()?;
        self.actions.flush()?;
        let records_path = self.records_path.display().to_string();
        self.records.flush().map_err(|source| SinkError::Io { path: records_path, source })?;
        let truth_path = self.truth_path.display().to_string();
        self.truth.flush().map_err(|source| SinkError::Io { path: truth_path, source })
    }
}
