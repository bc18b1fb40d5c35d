//! One partition's worker: a thread running the partition's detection [`Engine`], with the
//! partition's records as its [`Source`] and the registered sinks ([`crate::sinks`]) as its
//! sinks. Between batches the engine follows the registry (see `routewatch_engine::reconcile`).
//!
//! Progress is reported as the next offset whose record has *not* been fully handled; the
//! consumer stores it for commit only after every sink acknowledged the batch (at-least-once).
//! Exactly-once workers instead send each batch's outputs (and each state) in one transaction
//! of their own producer, with the same commit point as at-least-once (the last saved state's
//! offset, and how far outputs were delivered: [`crate::broker::CommitPoint`]), so that under
//! either guarantee a next owner restores, reads on from the state's own offset and delivers
//! nothing twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Instant;

use routewatch_engine::{Classifier, Engine, EngineConfig, Forecast, IncidentStage, Plugins, Pull, Sink, StepError};
use routewatch_telemetry::Metric;

use super::source::PartitionSource;

use super::Shared;
use super::state::PartitionState;
use crate::broker::{self, CommitPoint, PartitionOutput};
use crate::metrics::PartitionLabels;
use crate::sinks::{self, SinkContext};

/// Records queued for one worker; past this the consumer pauses that partition alone.
pub const QUEUE_RECORDS: usize = 50_000;

/// A record as the consumer hands it over.
pub struct Incoming {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// The consumer's side of a worker.
pub struct WorkerHandle {
    partition: i32,
    tx: SyncSender<Incoming>,
    thread: Option<JoinHandle<Option<i64>>>,
    progress: Arc<AtomicI64>,
    /// The offset the last saved state continues from (or the first offset taken, while no
    /// state was restored or saved); -1 before either.
    checkpoint: Arc<AtomicI64>,
    /// Outputs before this offset were delivered by the partition's previous owner.
    delivered_before: i64,
    /// Records sent and not yet taken by the worker.
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

/// What a partition's worker starts from.
#[derive(Default)]
pub struct WorkerStart {
    /// The partition's saved state, if it has one.
    pub restored: Option<PartitionState>,
    /// The previous owner's [`CommitPoint::delivered`], if known.
    pub delivered: Option<i64>,
    /// Exactly-once: the partition's transactional producer, already started.
    pub txn: Option<Result<broker::Transactional, broker::Fenced>>,
    /// Set when the partition is to be stopped (and given to `txn`, which then stops retrying).
    pub stop: Arc<AtomicBool>,
}

impl WorkerHandle {
    /// Starts a worker for `partition`, continuing from `start.restored` if given. Records
    /// before the state's offset are skipped (the state has seen them); the outputs of records
    /// before `start.delivered` are not delivered again.
    pub fn spawn(shared: Arc<Shared>, partition: i32, start: WorkerStart) -> WorkerHandle {
        let WorkerStart { restored, delivered, txn, stop } = start;
        let (tx, rx) = mpsc::sync_channel(QUEUE_RECORDS);
        let progress = Arc::new(AtomicI64::new(-1));
        let skip_before = restored.as_ref().map(|s| s.next_offset);
        let checkpoint = Arc::new(AtomicI64::new(skip_before.unwrap_or(-1)));
        let delivered_before = delivered.unwrap_or(-1);
        let saved = checkpoint.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        let (reported, taken, stopping) = (progress.clone(), queued.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("partition-{partition}"))
            .spawn(move || {
                let source = PartitionSource {
                    rx,
                    queued: taken,
                    stop: stopping.clone(),
                    linger: shared.config.linger(),
                    last_record: Instant::now(),
                    metrics: shared.metrics.clone(),
                    output: None,
                    skip_before,
                    checkpoint: saved.clone(),
                };
                let mut worker = Worker::new(shared, partition, restored, txn, reported, stopping, saved);
                if delivered_before > skip_before.unwrap_or(0) {
                    worker.engine.suppress_output_before(delivered_before);
                }
                worker.run(source)
            })
            .expect("spawning a partition worker");
        WorkerHandle { partition, tx, thread: Some(thread), progress, checkpoint, delivered_before, queued, stop }
    }

    /// Queues a record without waiting; a full queue hands it back (the caller pauses the
    /// partition, so that one slow partition never holds up the others).
    pub fn try_send(&self, record: Incoming) -> Result<(), Incoming> {
        match self.tx.try_send(record) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Err(TrySendError::Full(record)) => Err(record),
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!(partition = self.partition, "worker is gone; record left for the next owner");
                Ok(())
            }
        }
    }

    /// Records waiting in the worker's queue.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The next offset to commit, once the worker has finished a record.
    pub fn progress(&self) -> Option<i64> {
        let offset = self.progress.load(Ordering::Acquire);
        (offset >= 0).then_some(offset)
    }

    /// What to commit now (at-least-once), once there is a state or a first record.
    pub fn commit_point(&self) -> Option<CommitPoint> {
        let offset = self.checkpoint.load(Ordering::Acquire);
        let delivered = self.progress().unwrap_or(-1).max(self.delivered_before).max(offset);
        (offset >= 0).then_some(CommitPoint { offset, delivered })
    }

    /// Asks the worker to stop after its current batch; see [`WorkerHandle::join`].
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Waits for a stopping worker: it finishes its batch and saves its state (queued records
    /// are left for the next owner, uncommitted). Returns the next offset to commit
    /// (exactly-once workers commit their own) and the commit point (at-least-once).
    pub fn join(mut self) -> (Option<i64>, Option<CommitPoint>) {
        self.request_stop();
        let finished = self.thread.take().and_then(|t| t.join().ok()).flatten();
        if let Some(next) = finished {
            self.progress.fetch_max(next, Ordering::AcqRel);
        }
        (self.progress(), self.commit_point())
    }
}

struct Worker {
    shared: Arc<Shared>,
    partition: i32,
    engine: Engine,
    sinks: Vec<Box<dyn Sink>>,
    output: Arc<PartitionOutput>,
    progress: Arc<AtomicI64>,
    /// Set to the state's offset after each save.
    checkpoint: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    last_save: Instant,
    /// The last save of this partition's state failed (counted in
    /// `routewatch_state_unsaved_partitions`, which `/readyz` reads).
    unsaved: bool,
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        partition: i32,
        restored: Option<PartitionState>,
        txn: Option<Result<broker::Transactional, broker::Fenced>>,
        progress: Arc<AtomicI64>,
        stop: Arc<AtomicBool>,
        checkpoint: Arc<AtomicI64>,
    ) -> Worker {
        let output = Arc::new(PartitionOutput::new(partition, shared.producer.clone(), txn, checkpoint.clone()));
        let config = EngineConfig {
            stream: partition,
            columns: Metric::ALL.iter().map(|m| m.name().to_owned()).collect(),
            max_snapshot_bytes: shared.config.max_snapshot_mib << 20,
            stamp_detection: true,
            batch_records: shared.config.batch_records,
        };
        let mut engine = Engine::new(config, Plugins::Registry(shared.registry.clone()), shared.metrics.clone());
        if shared.config.incidents {
            let stage = IncidentStage::new(
                shared.config.incident_config.clone(),
                Some(Classifier::live(shared.registry.clone())),
                shared.metrics.clone(),
                partition,
            )
            .expect("the configuration was validated at start");
            engine = engine.with_incidents(stage);
            if shared.config.forecast {
                let columns: Vec<String> = Metric::ALL.iter().map(|m| m.name().to_owned()).collect();
                let forecast =
                    Forecast::new(shared.config.forecast_settings(), &columns, shared.metrics.clone(), partition)
                        .expect("the configuration was validated at start");
                engine = engine.with_forecast(forecast);
            }
        }
        if let Some(state) = restored {
            engine.restore(state);
        }
        engine.reconcile();
        let sinks = sinks::build(&SinkContext {
            config: &shared.config,
            metrics: &shared.metrics,
            feed: &shared.feed,
            incidents: &shared.incidents,
            alertmanager: shared.alertmanager.as_ref(),
            healing: shared.healing.as_ref(),
            partition,
            output: &output,
        });
        Worker {
            shared,
            partition,
            engine,
            sinks,
            output,
            progress,
            checkpoint,
            stop,
            last_save: Instant::now(),
            unsaved: false,
        }
    }

    /// Batches and processes records until told to stop; returns the next offset to commit.
    fn run(mut self, mut source: PartitionSource) -> Option<i64> {
        source.output = Some(self.output.clone());
        loop {
            let pull = match self.engine.step(&mut source, &mut self.sinks) {
                Ok(pull) => pull,
                // Fenced: already said; the records are the next owner's.
                Err(StepError::Sink { source: routewatch_engine::SinkError::Closed(_), .. }) => Pull::More,
                Err(err) => {
                    tracing::error!(
                        partition = self.partition,
                        "batch not acknowledged, left for the next owner: {err}"
                    );
                    Pull::More
                }
            };
            if let Some(next) = self.engine.acknowledged() {
                self.progress.store(next, Ordering::Release);
            }
            if self.stop.load(Ordering::Acquire) || pull == Pull::End {
                self.save();
                self.leave();
                return self.engine.acknowledged();
            }
            if self.last_save.elapsed() >= self.shared.config.snapshot_interval() {
                self.save();
            }
        }
    }

    /// Writes the partition's state (see [`Engine::state`]). A save the broker does not take
    /// in time is counted and shown in `/readyz`, and tried again at the next interval.
    fn save(&mut self) {
        self.last_save = Instant::now();
        let Some(state) = self.engine.state() else { return };
        let next_offset = state.next_offset;
        let metrics = self.shared.metrics.clone();
        // Exactly-once: the state goes in a transaction with the partition's offset; else it is
        // saved with a deadline, so that a broker that will not take it stalls nothing.
        let saved = if self.output.transactional() {
            match self.shared.state.prepare(self.partition, &state) {
                Ok(mut write) => {
                    let bytes = write.bytes();
                    let committed = self.output.deliver(write.take_records(), next_offset);
                    if committed {
                        self.shared.state.committed(&write);
                    }
                    committed.then_some(bytes).ok_or_else(|| "the transaction was fenced".to_owned())
                }
                Err(err) => Err(err.to_string()),
            }
        } else {
            self.shared.state.save(self.partition, &state).map_err(|e| e.to_string())
        };
        match saved {
            Ok(bytes) => {
                self.checkpoint.store(next_offset, Ordering::Release);
                metrics.state_snapshots.inc();
                metrics
                    .state_bytes
                    .get_or_create(&PartitionLabels { partition: self.partition.to_string() })
                    .set(bytes as i64);
                if std::mem::take(&mut self.unsaved) {
                    metrics.state_unsaved_partitions.dec();
                }
                tracing::debug!(partition = self.partition, bytes, "saved partition state");
            }
            Err(err) => {
                metrics.state_save_failures.inc();
                if !std::mem::replace(&mut self.unsaved, true) {
                    metrics.state_unsaved_partitions.inc();
                }
                tracing::error!(partition = self.partition, "saving partition state: {err}");
            }
        }
    }

    /// This worker is done with its partition: what it reported goes with it.
    fn leave(&mut self) {
        self.engine.leave();
        self.shared.incidents.forget_partition(self.partition);
        if std::mem::take(&mut self.unsaved) {
            self.shared.metrics.state_unsaved_partitions.dec();
        }
        self.shared.metrics.state_bytes.remove(&PartitionLabels { partition: self.partition.to_string() });
    }
}
