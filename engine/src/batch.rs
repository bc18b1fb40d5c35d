//! Records gathered into the columnar batch detectors take: the one place rows become columns.

use routewatch_runtime::{Batch, Column};

/// Where a record was in its source: an offset for Kafka, a row number for a file.
pub type Position = i64;

/// A record the source could not make a row of (it does not decode, it is oversized, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Where the record was.
    pub position: Position,
    /// A short label, fit for a metric label value (`malformed`, `oversized`, ...).
    pub reason: &'static str,
    /// What was wrong, for people.
    pub message: String,
}

/// A record as its source read it, kept for sinks that forward records (dead letters).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// Where the record was.
    pub position: Position,
    /// Its key, if it had one.
    pub key: Option<Vec<u8>>,
    /// Its bytes, if it had any.
    pub payload: Option<Vec<u8>>,
}

/// One batch of input: the rows in columnar form, where each came from, and the records that
/// could not be made rows.
#[derive(Debug, Clone)]
pub struct Input {
    batch: Batch,
    positions: Vec<Position>,
    rejected: Vec<Rejected>,
    raw: Vec<RawRecord>,
    /// The position after the last record taken (rows and rejected alike).
    end: Option<Position>,
}

impl Input {
    /// An empty batch whose rows carry a value for each of `columns`.
    pub fn new(columns: &[String]) -> Input {
        Input {
            batch: Batch {
                routers: Vec::new(),
                timestamps: Vec::new(),
                columns: columns.iter().map(|metric| Column { metric: metric.clone(), values: Vec::new() }).collect(),
            },
            positions: Vec::new(),
            rejected: Vec::new(),
            raw: Vec::new(),
            end: None,
        }
    }

    /// Adds a row: `router` is the router's id in the stream's table (sources add rows with
    /// [`crate::Intake::row`], which gives routers their ids), `values` one per column, in
    /// column order; missing values are gaps (NaN).
    pub fn push(&mut self, position: Position, router: u32, ts: i64, values: impl IntoIterator<Item = f64>) {
        self.batch.routers.push(router);
        self.batch.timestamps.push(ts);
        let mut values = values.into_iter();
        for column in &mut self.batch.columns {
            column.values.push(values.next().unwrap_or(f64::NAN));
        }
        self.positions.push(position);
        self.taken(position);
    }

    /// Adds a record that could not be made a row.
    pub fn reject(&mut self, rejected: Rejected) {
        self.taken(rejected.position);
        self.rejected.push(rejected);
    }

    /// Keeps only the rejected records that pass `keep`.
    pub fn retain_rejected(&mut self, keep: impl FnMut(&Rejected) -> bool) {
        self.rejected.retain(keep);
    }

    /// Keeps a record as it was read, for sinks that forward records.
    pub fn keep_raw(&mut self, raw: RawRecord) {
        self.taken(raw.position);
        self.raw.push(raw);
    }

    fn taken(&mut self, position: Position) {
        self.end = Some(self.end.map_or(position + 1, |end| end.max(position + 1)));
    }

    /// The rows, as detectors take them.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.batch.routers.len()
    }

    /// Records taken: rows and rejected.
    pub fn records(&self) -> usize {
        self.rows() + self.rejected.len()
    }

    /// No record at all.
    pub fn is_empty(&self) -> bool {
        self.end.is_none()
    }

    /// Where row `row` came from.
    pub fn position(&self, row: usize) -> Position {
        self.positions[row]
    }

    /// Records that could not be made rows.
    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// The record at `position` as read, if the source kept it.
    pub fn raw(&self, position: Position) -> Option<&RawRecord> {
        // Kept in the order read, which is position order.
        self.raw.binary_search_by_key(&position, |r| r.position).ok().map(|i| &self.raw[i])
    }

    /// The position after the last record taken: what to commit once the batch is acknowledged.
    pub fn end(&self) -> Option<Position> {
        self.end
    }

    /// Empties the batch for reuse, keeping its columns and allocations.
    pub fn clear(&mut self) {
        self.batch.routers.clear();
        self.batch.timestamps.clear();
        for column in &mut self.batch.columns {
            column.values.clear();
        }
        self.positions.clear();
        self.rejected.clear();
        self.raw.clear();
        self.end = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_columns_and_the_end_follows_every_record() {
        let mut input = Input::new(&["a".into(), "b".into()]);
        assert!(input.is_empty());
        input.push(10, 0, 1000, [1.0, 2.0]);
        input.reject(Rejected { position: 11, reason: "malformed", message: "no".into() });
        input.push(12, 1, 2000, [3.0]);
        let batch = input.batch();
        assert_eq!(batch.routers, [0, 1]);
        assert_eq!(batch.timestamps, [1000, 2000]);
        assert_eq!(batch.columns[0].values, [1.0, 3.0]);
        assert!(batch.columns[1].values[1].is_nan(), "a missing value is a gap");
        assert_eq!((input.rows(), input.records(), input.end()), (2, 3, Some(13)));
        assert_eq!(input.position(1), 12);
        input.clear();
        assert!(input.is_empty() && input.batch().columns[0].values.is_empty());
    }
}
