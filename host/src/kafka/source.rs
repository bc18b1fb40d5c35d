//! A partition's records as a [`Source`]: what the consumer thread queued for the partition's
//! worker, decoded into rows (or rejected, for the dead-letter topic).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use routewatch_engine::{Intake, Pull, RawRecord, Rejected, Source, SourceError};
use routewatch_telemetry::{DecodeError, Metric, Record};

use super::worker::Incoming;
use crate::broker::PartitionOutput;
use crate::metrics::{Metrics, ReasonLabels};

/// How long an idle worker waits for a record before it looks at the registry again.
const IDLE_TICK: Duration = Duration::from_millis(10);

/// The partition's records, from the consumer thread, as a [`Source`]: a pull ends when the
/// batch is full (`batch_records`) or once its first record has waited `linger_ms`. It says
/// [`Pull::Idle`] once no record came for `linger_ms`: then the engine runs the timestamp it
/// held back (see `routewatch_engine::batch`), so a timestamp's records may arrive over a
/// burst of any length, and the last one waits at most `linger_ms` more.
pub struct PartitionSource {
    pub(super) rx: Receiver<Incoming>,
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) linger: Duration,
    /// When the last record came off the queue.
    pub(super) last_record: Instant,
    pub(super) metrics: Arc<Metrics>,
    /// Once fenced, records are taken off the queue and dropped.
    pub(super) output: Option<Arc<PartitionOutput>>,
    /// Records before this offset are in the restored state already: dropped.
    pub(super) skip_before: Option<i64>,
    /// Set to the first offset taken when no state was restored (see [`WorkerHandle`]).
    pub(super) checkpoint: Arc<AtomicI64>,
}

impl PartitionSource {
    fn take(&self, record: Incoming, intake: &mut Intake<'_>) {
        if self.skip_before.is_some_and(|before| record.offset < before) {
            return;
        }
        // The empty state this worker started with is the state as of its first record.
        let _ = self.checkpoint.compare_exchange(-1, record.offset, Ordering::AcqRel, Ordering::Acquire);
        let decoded = match &record.payload {
            Some(payload) => intake.decode(|| Record::decode(payload)),
            None => Err(DecodeError::Malformed("record has no payload".into())),
        };
        match decoded {
            Ok(r) => intake.row(
                record.offset,
                &r.router,
                Some(&r.site),
                Some(r.role.name()),
                r.ts,
                Metric::ALL.map(|m| r.metrics.get(m)),
            ),
            Err(err) => {
                let reason = match err {
                    DecodeError::Oversized { .. } => "oversized",
                    DecodeError::Malformed(_) => "malformed",
                    DecodeError::UnsupportedSchema { .. } => "unsupported_schema",
                    DecodeError::Invalid { .. } => "invalid",
                };
                self.metrics.decode_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
                intake.reject(Rejected { position: record.offset, reason, message: err.to_string() });
            }
        }
        // Dead letters carry the record as it came.
        intake.keep_raw(RawRecord { position: record.offset, key: record.key, payload: record.payload });
    }
}

impl Source for PartitionSource {
    fn pull(&mut self, intake: &mut Intake<'_>) -> Result<Pull, SourceError> {
        let fenced = self.output.as_ref().is_some_and(|o| o.fenced());
        // What the batch takes, counting records dropped here (fenced, or in the state already).
        let room = intake.room();
        let mut taken = 0;
        let mut disconnected = false;
        // Short, so that an idle partition still takes up a new plugin version promptly.
        match self.rx.recv_timeout(IDLE_TICK) {
            Ok(record) => {
                taken += 1;
                self.last_record = Instant::now();
                if !fenced {
                    self.take(record, intake);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => disconnected = true,
        }
        // Fill the batch until it is full or the first record has waited `linger`.
        let deadline = Instant::now() + self.linger;
        while taken > 0 && taken < room && !self.stop.load(Ordering::Acquire) {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(record) => {
                    taken += 1;
                    self.last_record = Instant::now();
                    if !fenced {
                        self.take(record, intake);
                    }
                }
                Err(_) => break,
            }
        }
        self.queued.fetch_sub(taken, Ordering::AcqRel);
        Ok(if disconnected {
            Pull::End
        } else if taken == 0 && self.last_record.elapsed() >= self.linger {
            Pull::Idle
        } else {
            Pull::More
        })
    }
}
