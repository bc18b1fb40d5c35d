//! Where records come from. A source fills one batch at a time; the engine runs the batch and
//! tells the source nothing: a source that must not lose records resumes from
//! [`crate::Engine::acknowledged`], which advances only once every sink took a batch.
//!
//! Sources today: a Kafka partition (in the host binary) and a recorded file
//! ([`crate::replay::FileSource`]). A new one (gNMI, OTLP, ...) is a type implementing
//! [`Source`]; nothing else in the engine changes.

use std::time::{Duration, Instant};

use crate::batch::{Input, Position, RawRecord, Rejected};
use crate::routers::RouterTable;

/// What a pull found. It decides where the engine cuts the batch (see [`crate::batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    /// There may be more right away (the batch is full, or it lingered while records kept
    /// coming): the engine holds the batch's trailing timestamp back for the next batch.
    More,
    /// Nothing more for now (a live source that waited its linger in vain, or one that hands
    /// out whole timestamps): the engine runs everything it holds.
    Idle,
    /// The input is over; a driver stops after this batch.
    End,
}

/// Why a source could not go on.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A row that does not parse, where the source was told to stop at one.
    #[error("stopping at a bad row (use --skip-invalid to skip such rows): {0}")]
    BadRow(#[from] crate::replay::BadRow),
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A source of telemetry rows.
pub trait Source {
    /// Adds the next records to `intake`: until [`Intake::full`], or fewer (a live source's
    /// linger), possibly none. Where the batch ends is the engine's business (see
    /// [`crate::batch`]): a source only says whether more may follow right away.
    fn pull(&mut self, intake: &mut Intake<'_>) -> Result<Pull, SourceError>;
}

/// The batch being filled, as a source sees it.
pub struct Intake<'a> {
    input: &'a mut Input,
    routers: &'a mut RouterTable,
    /// Records the batch takes in all (records held from the last batch count).
    limit: usize,
    /// Time spent in [`Intake::decode`].
    decoding: Duration,
}

impl<'a> Intake<'a> {
    pub(crate) fn new(input: &'a mut Input, routers: &'a mut RouterTable, limit: usize) -> Intake<'a> {
        Intake { input, routers, limit, decoding: Duration::ZERO }
    }

    /// The batch has its records ([`crate::EngineConfig::batch_records`], counting the records
    /// held back from the last batch): a source stops adding.
    pub fn full(&self) -> bool {
        self.input.records() >= self.limit
    }

    /// How many more records the batch takes.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.input.records())
    }

    /// Runs a source's decoding of one record, timing it: the `decode` stage of
    /// `routewatch_stage_cpu_seconds_total` (the rest of a pull counts as `batch`).
    pub fn decode<T>(&mut self, decode: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let decoded = decode();
        self.decoding += started.elapsed();
        decoded
    }

    /// Time spent decoding so far.
    pub(crate) fn decoding(&self) -> Duration {
        self.decoding
    }

    /// Adds a row of `router` at `ts`, with a value per column (see
    /// [`crate::EngineConfig::columns`]); `site` and `role` are kept on the router's first row.
    pub fn row(
        &mut self,
        position: Position,
        router: &str,
        site: Option<&str>,
        role: Option<&str>,
        ts: i64,
        values: impl IntoIterator<Item = f64>,
    ) {
        let id = self.routers.id_with(router, site, role);
        self.input.push(position, id, ts, values);
    }

    /// Adds a record that could not be made a row.
    pub fn reject(&mut self, rejected: Rejected) {
        self.input.reject(rejected);
    }

    /// Keeps a record as it was read, for sinks that forward records (dead letters).
    pub fn keep_raw(&mut self, raw: RawRecord) {
        self.input.keep_raw(raw);
    }

    /// Records taken so far.
    pub fn records(&self) -> usize {
        self.input.records()
    }
}
