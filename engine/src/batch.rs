//! Records gathered into the columnar batch detectors take: the one place rows become columns,
//! and the one place a batch is cut.
//!
//! # Where batches end
//!
//! A detector that compares routers at the same timestamp (fleet-outlier) sees a timestamp's
//! cross-section only within one batch, so a batch must not end inside a timestamp. A source
//! fills a batch up to [`crate::EngineConfig::batch_records`] records, or until it has waited
//! its linger; then the engine cuts it ([`Input::cut`]):
//!
//! * **The trailing timestamp is held back.** Unless the source said it has nothing more for
//!   now ([`crate::Pull::Idle`]) or the input is over ([`crate::Pull::End`]), the rows of the
//!   batch's highest timestamp go to the next batch, with every record read after the first of
//!   them. The trailing timestamp is the *highest* one, not the last row's: a late record
//!   (of an earlier timestamp) at the end of a batch does not make the engine cut the current
//!   timestamp in two. What is held is a suffix of the records in the order read, so a batch
//!   still covers every record before its [`Input::end`] and nothing after it: the commit
//!   point and the exactly-once transactions are unchanged in meaning.
//! * **A batch of one timestamp** (nothing before its trailing timestamp) is held whole and
//!   grows, up to [`HARD_CAP_FACTOR`] times `batch_records` records; there it is cut as is, so
//!   a timestamp with more rows than that is split, and memory stays bounded.
//! * **Idle or at the end, everything is cut.** A live source says [`crate::Pull::Idle`] once
//!   no record arrived for its linger, so a timestamp's rows wait that long at most after the
//!   last of them arrived.
//!
//! For records in timestamp order, every batch is then a run of whole timestamps, whatever the
//! source's counts and lingers: the count cut never splits a timestamp, and neither does a
//! linger cut while records keep coming. What remains inexact: a timestamp whose records arrive
//! with a pause longer than the linger between them (a slow producer, a record later than the
//! linger), a late record whose timestamp's batch was already cut (it is judged with the batch
//! it arrives in), a timestamp of more than the hard cap, and the halves of a batch that the
//! engine splits to find a record that traps a plugin (see [`crate::contain`]).

use routewatch_runtime::{Batch, Column};

/// A batch of one timestamp grows up to this many times `batch_records` records before it is
/// cut inside the timestamp.
pub const HARD_CAP_FACTOR: usize = 4;

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

    /// The first row of the batch's trailing timestamp: the first row of its highest timestamp
    /// (see the [module documentation](self)); `None` without rows.
    pub fn trailing_timestamp(&self) -> Option<usize> {
        let timestamps = &self.batch.timestamps;
        let mut first = 0;
        for (row, &ts) in timestamps.iter().enumerate().skip(1) {
            if ts > timestamps[first] {
                first = row;
            }
        }
        (!timestamps.is_empty()).then_some(first)
    }

    /// Cuts the batch where it may end (see the [module documentation](self)): moves the
    /// records it holds back into `held` (emptied first) and says what to do with the rest.
    /// `more` is whether the source may have more right away, `hard_cap` the most records a
    /// batch of one timestamp grows to. Only the held records are moved (a suffix of the
    /// batch), never the batch.
    pub fn cut(&mut self, more: bool, hard_cap: usize, held: &mut Input) -> Cut {
        held.clear();
        let Some(first) = self.trailing_timestamp().filter(|_| more) else { return Cut::All };
        if first > 0 {
            self.split_off(first, held);
            Cut::Before
        } else if self.records() < hard_cap {
            Cut::Hold
        } else {
            Cut::All
        }
    }

    /// Moves row `row` and every record read after it (rows, rejected and raw records alike)
    /// into `into`, which must be empty and have the same columns.
    fn split_off(&mut self, row: usize, into: &mut Input) {
        let from = self.positions[row];
        into.batch.routers.extend(self.batch.routers.drain(row..));
        into.batch.timestamps.extend(self.batch.timestamps.drain(row..));
        for (column, to) in self.batch.columns.iter_mut().zip(&mut into.batch.columns) {
            to.values.extend(column.values.drain(row..));
        }
        into.positions.extend(self.positions.drain(row..));
        // Both kept in the order read, which is position order.
        let rejected = self.rejected.partition_point(|r| r.position < from);
        into.rejected.extend(self.rejected.drain(rejected..));
        let raw = self.raw.partition_point(|r| r.position < from);
        into.raw.extend(self.raw.drain(raw..));
        into.end = self.end;
        self.end = Some(from);
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

/// What [`Input::cut`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Run the whole batch.
    All,
    /// Run the batch; its trailing timestamp was moved to the held records.
    Before,
    /// Run nothing yet: the batch is one timestamp, which may go on.
    Hold,
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

    fn input_of(timestamps: &[i64]) -> Input {
        let mut input = Input::new(&["a".into()]);
        for (i, &ts) in timestamps.iter().enumerate() {
            input.push(i as i64 * 2, i as u32, ts, [ts as f64]);
        }
        input
    }

    #[test]
    fn a_cut_holds_the_highest_timestamp_and_every_record_after_its_first_row() {
        // Two late records (timestamp 1) after the trailing timestamp's first row, and a
        // rejected record and a raw one on each side of the cut.
        let mut input = input_of(&[1, 1, 2, 2, 1, 2, 1]);
        input.reject(Rejected { position: 3, reason: "malformed", message: "no".into() });
        input.keep_raw(RawRecord { position: 3, key: None, payload: None });
        input.keep_raw(RawRecord { position: 9, key: None, payload: None });
        input.reject(Rejected { position: 13, reason: "malformed", message: "no".into() });
        let mut held = Input::new(&["a".into()]);
        assert_eq!(input.trailing_timestamp(), Some(2));
        assert_eq!(input.cut(true, 100, &mut held), Cut::Before);
        assert_eq!((input.batch().timestamps.as_slice(), input.end()), (&[1, 1][..], Some(4)));
        assert_eq!(input.rejected().len(), 1);
        assert!(input.raw(3).is_some() && input.raw(9).is_none());
        assert_eq!(held.batch().timestamps, [2, 2, 1, 2, 1]);
        assert_eq!(held.batch().columns[0].values, [2.0, 2.0, 1.0, 2.0, 1.0]);
        assert_eq!((held.position(0), held.end(), held.rejected().len()), (4, Some(14), 1));
        assert!(held.raw(9).is_some());
    }

    #[test]
    fn a_late_record_at_the_end_does_not_cut_the_current_timestamp() {
        // The last row is late: the trailing timestamp is still 5, not 4.
        let mut input = input_of(&[4, 4, 5, 5, 5, 4]);
        let mut held = Input::new(&["a".into()]);
        assert_eq!(input.cut(true, 100, &mut held), Cut::Before);
        assert_eq!((input.rows(), held.batch().timestamps.as_slice()), (2, &[5, 5, 5, 4][..]));
    }

    #[test]
    fn one_timestamp_is_held_up_to_the_hard_cap_and_idle_or_end_cuts_everything() {
        let mut held = Input::new(&["a".into()]);
        let mut one = input_of(&[7, 7, 7, 3]);
        assert_eq!(one.cut(true, 5, &mut held), Cut::Hold);
        assert_eq!((one.rows(), held.rows()), (4, 0), "nothing moved");
        one.push(8, 9, 7, [7.0]);
        assert_eq!(one.cut(true, 5, &mut held), Cut::All, "at the hard cap, cut as is");
        let mut two = input_of(&[1, 2]);
        assert_eq!(two.cut(false, 100, &mut held), Cut::All, "the source is idle or at its end");
        assert_eq!((two.rows(), held.rows()), (2, 0));
        let mut none = Input::new(&["a".into()]);
        none.reject(Rejected { position: 0, reason: "malformed", message: "no".into() });
        assert_eq!(none.cut(true, 100, &mut held), Cut::All, "no rows, nothing to hold");
    }
}
