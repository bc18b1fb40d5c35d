//! One partition's worker: a thread that owns an instance of every plugin for the partition,
//! turns records into columnar batches, and produces anomalies and dead letters. Between
//! batches it follows the registry: new versions take over their predecessor's state here,
//! so no record is seen by neither version or by both.
//!
//! Progress is reported as the next offset whose record has *not* been fully handled; the
//! consumer stores it for commit only after the batch's anomalies and dead letters are
//! acknowledged by the broker (at-least-once). Exactly-once workers instead send each batch's
//! outputs (and each state) with the partition's next offset in one transaction of their own
//! producer.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use routewatch_telemetry::{AnomalyEvent, DecodeError, Metric, Record};

use super::Shared;
use super::metrics::{AnomalyLabels, PartitionLabels, PluginLabels, ReasonLabels, TrapLabels};
use super::state::{PartitionState, PluginState, RouterInfo};
use super::{kafka, now_ms};
use crate::registry::{Active, PluginCounters};
use crate::replay::event_kind;
use crate::routers::RouterTable;
use crate::runtime::{Batch, CallError, Column, Instance, Output, Plugin};

/// How long an idle worker waits for a record before it looks at the registry again.
const IDLE_TICK: Duration = Duration::from_millis(10);

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
    /// Records sent and not yet taken by the worker.
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl WorkerHandle {
    /// Starts a worker for `partition`, continuing from `restored` if given.
    pub fn spawn(shared: Arc<Shared>, partition: i32, restored: Option<PartitionState>) -> WorkerHandle {
        let (tx, rx) = mpsc::sync_channel(QUEUE_RECORDS);
        let progress = Arc::new(AtomicI64::new(-1));
        let queued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (reported, taken, stopping) = (progress.clone(), queued.clone(), stop.clone());
        // The same flag tells an exactly-once producer that the partition is going away.
        let revoked = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("partition-{partition}"))
            .spawn(move || Worker::new(shared, partition, restored, reported, revoked).run(rx, taken, stopping))
            .expect("spawning a partition worker");
        WorkerHandle { partition, tx, thread: Some(thread), progress, queued, stop }
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

    /// Asks the worker to stop after its current batch; see [`WorkerHandle::join`].
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Waits for a stopping worker: it finishes its batch and saves its state (queued records
    /// are left for the next owner, uncommitted). Returns the next offset to commit.
    pub fn join(mut self) -> Option<i64> {
        self.request_stop();
        let finished = self.thread.take().and_then(|t| t.join().ok()).flatten();
        finished.or_else(|| self.progress())
    }
}

/// One plugin on this partition: the version running here, its instance and its last state.
struct Slot {
    name: String,
    plugin: Plugin,
    labels: PluginLabels,
    config: Option<String>,
    config_rev: u64,
    /// Enabled and not quarantined.
    runnable: bool,
    counters: Arc<PluginCounters>,
    instance: Option<Instance>,
    /// Last state saved, for restarting the instance after a failure.
    snapshot: Vec<u8>,
    /// A version that would not take over here, and whether it was tried without the old
    /// state: not tried again until the operator allows a fresh start.
    refused: Option<(String, bool)>,
}

impl Slot {
    fn new(active: &Active, snapshot: Vec<u8>) -> Slot {
        Slot {
            name: active.name.clone(),
            plugin: active.plugin.clone(),
            labels: labels(&active.plugin),
            config: active.config.clone(),
            config_rev: active.config_rev,
            runnable: active.runnable,
            counters: active.counters.clone(),
            instance: None,
            snapshot,
            refused: None,
        }
    }

    /// A fresh instance of this slot's plugin, configured and given `state`. A plugin that
    /// refuses its state starts empty (a warm-up lost, nothing else), and that is counted.
    fn fresh_instance(&self, state: &[u8], metrics: &super::Metrics) -> Result<Instance, CallError> {
        let mut instance = self.plugin.instantiate()?;
        if let Some(config) = &self.config {
            instance.configure(config)?;
        }
        if !state.is_empty()
            && let Err(err) = instance.restore(state)
        {
            if !err.instance_survives() {
                return Err(err);
            }
            metrics.plugin_restore_failures.get_or_create(&self.labels).inc();
            tracing::warn!(plugin = %self.name, "plugin refused its saved state, starting fresh: {err}");
        }
        Ok(instance)
    }
}

fn labels(plugin: &Plugin) -> PluginLabels {
    PluginLabels { plugin: plugin.info().name.clone(), version: plugin.info().version.clone() }
}

/// What a plugin made of (part of) a batch: outputs by the row they start at.
type Outputs = Vec<(usize, Output)>;

/// A batch run record by record apart, after the plugin failed on the whole of it.
struct Isolated {
    outputs: Outputs,
    /// The instance after the last part that succeeded, if the last part did.
    instance: Option<Instance>,
    /// The plugin's state after everything but the poison record.
    state: Vec<u8>,
    /// The record that makes the plugin trap, and the trap.
    poison: Option<(usize, CallError)>,
}

struct Worker {
    shared: Arc<Shared>,
    partition: i32,
    routers: RouterTable,
    router_info: Vec<RouterInfo>,
    slots: Vec<Slot>,
    /// The registry generation the slots reflect.
    generation: u64,
    /// Saved states of plugins not loaded yet, by name (they may come back).
    restored: HashMap<String, Vec<u8>>,
    next_offset: Option<i64>,
    progress: Arc<AtomicI64>,
    last_save: Instant,
    /// The last save of this partition's state failed (counted in
    /// `routewatch_state_unsaved_partitions`, which `/readyz` reads).
    unsaved: bool,
    /// Exactly-once: this partition's transactional producer.
    txn: Option<kafka::Transactional>,
    /// Exactly-once: the producer was fenced (the partition has another owner), so this
    /// worker produces nothing more and waits to be stopped.
    fenced: bool,
}

/// A decoded row waiting for its batch.
struct Row {
    router: u32,
    ts: i64,
    values: [f64; Metric::ALL.len()],
    /// Index of its record in the batch of records.
    record: usize,
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        partition: i32,
        restored: Option<PartitionState>,
        progress: Arc<AtomicI64>,
        revoked: Arc<AtomicBool>,
    ) -> Worker {
        let mut worker = Worker {
            shared,
            partition,
            routers: RouterTable::default(),
            router_info: Vec::new(),
            slots: Vec::new(),
            generation: 0,
            restored: HashMap::new(),
            next_offset: None,
            progress,
            last_save: Instant::now(),
            unsaved: false,
            txn: None,
            fenced: false,
        };
        if worker.shared.exactly_once() {
            let group = worker.shared.group_metadata.clone();
            match kafka::Transactional::start(&worker.shared.config, partition, group, revoked) {
                Ok(txn) => worker.txn = Some(txn),
                Err(err) => worker.fence(&err),
            }
        }
        if let Some(state) = restored {
            worker.restore(state);
        }
        worker.reconcile();
        worker
    }

    fn restore(&mut self, state: PartitionState) {
        for info in &state.routers {
            self.routers.id(&info.name);
        }
        self.router_info = state.routers;
        self.restored = state.plugins.into_iter().map(|p| (p.name, p.snapshot)).collect();
        self.shared.metrics.state_restores.inc();
        tracing::info!(
            partition = self.partition,
            routers = self.router_info.len(),
            from_offset = state.next_offset,
            "restored partition state"
        );
    }

    /// Brings the slots in line with the registry when it has changed: new plugins get a
    /// slot, removed ones lose theirs, a new version takes over its predecessor's state, and
    /// configuration, enable and quarantine changes apply. Runs between batches only.
    fn reconcile(&mut self) {
        let registry = &self.shared.registry;
        if registry.generation() == self.generation {
            return;
        }
        let view = registry.view();
        self.generation = view.generation;
        let mut old = std::mem::take(&mut self.slots);
        for active in &view.plugins {
            let slot = match old.iter().position(|s| s.name == active.name) {
                Some(i) => {
                    let mut slot = old.swap_remove(i);
                    let sha = active.plugin.sha256();
                    let tried = slot
                        .refused
                        .as_ref()
                        .is_some_and(|(refused, fresh)| refused == sha && (*fresh || !active.start_fresh));
                    if slot.plugin.sha256() != sha && !tried {
                        self.swap(&mut slot, active);
                    }
                    // A configuration applies to the version that really runs here, which the
                    // registry checked it against.
                    if slot.config_rev != active.config_rev {
                        self.reconfigure(&mut slot, active);
                    }
                    slot.runnable = active.runnable;
                    slot
                }
                None => {
                    let snapshot = self.restored.remove(&active.name).unwrap_or_default();
                    Slot::new(active, snapshot)
                }
            };
            registry.report_running(self.partition, &slot.name, Some(&slot.plugin));
            self.slots.push(slot);
        }
        for gone in old {
            registry.report_running(self.partition, &gone.name, None);
            tracing::info!(partition = self.partition, plugin = %gone.name, "plugin unloaded from this partition");
        }
    }

    /// Hands a slot's state to a new version of its plugin. If the new version will not
    /// start, configure or take the state, the old one keeps running here and the registry
    /// hears why.
    fn swap(&self, slot: &mut Slot, active: &Active) {
        let started = Instant::now();
        let state = match slot.instance.as_mut().filter(|i| !i.is_poisoned()).map(Instance::snapshot) {
            Some(Ok(state)) => state,
            Some(Err(err)) => {
                tracing::warn!(plugin = %slot.name, "old version's snapshot failed, handing over the last saved one: {err}");
                slot.snapshot.clone()
            }
            None => slot.snapshot.clone(),
        };
        let version = active.plugin.info().version.clone();
        let started_new = (|| {
            let mut instance = active.plugin.instantiate()?;
            if let Some(config) = &active.config {
                instance.configure(config)?;
            }
            if !state.is_empty()
                && let Err(err) = instance.restore(&state)
            {
                self.shared.metrics.plugin_restore_failures.get_or_create(&labels(&active.plugin)).inc();
                if !active.start_fresh || !err.instance_survives() {
                    return Err(err);
                }
                // The operator chose a fresh start over keeping the old version here.
                tracing::warn!(partition = self.partition, plugin = %slot.name, %version, "new version starts without the old state: {err}");
                // A refused restore leaves the instance as it was: configured, empty.
                return Ok((instance, Vec::new()));
            }
            Ok::<_, CallError>((instance, state.clone()))
        })();
        match started_new {
            Ok((instance, state)) => {
                let pause = started.elapsed();
                tracing::info!(
                    partition = self.partition,
                    plugin = %slot.name,
                    from = %slot.labels.version,
                    to = %version,
                    pause_us = pause.as_micros() as u64,
                    "new plugin version took over"
                );
                *slot = Slot { instance: Some(instance), snapshot: state, ..Slot::new(active, Vec::new()) };
                self.shared.metrics.plugin_swap_pause.get_or_create(&slot.labels).observe(pause.as_secs_f64());
            }
            Err(err) => {
                tracing::error!(partition = self.partition, plugin = %slot.name, %version, "new version refused, the old one stays: {err}");
                self.shared.registry.report_swap_refused(&slot.name, &version, self.partition, &err.to_string());
                slot.refused = Some((active.plugin.sha256().to_owned(), active.start_fresh));
            }
        }
    }

    fn reconfigure(&self, slot: &mut Slot, active: &Active) {
        slot.config = active.config.clone();
        slot.config_rev = active.config_rev;
        if let (Some(instance), Some(config)) = (slot.instance.as_mut(), &slot.config)
            && let Err(err) = instance.configure(config)
        {
            // The registry checked it on a fresh instance; a live one may still object.
            tracing::error!(partition = self.partition, plugin = %slot.name, "configuration refused, restarting: {err}");
            slot.instance = None;
        }
    }

    /// Batches and processes records until told to stop; returns the next offset to commit.
    fn run(mut self, rx: Receiver<Incoming>, queued: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> Option<i64> {
        let max = self.shared.config.batch_records;
        let linger = self.shared.config.linger();
        let mut batch: Vec<Incoming> = Vec::with_capacity(max);
        loop {
            let mut disconnected = false;
            // Short, so that an idle partition still takes up a new plugin version promptly.
            match rx.recv_timeout(IDLE_TICK) {
                Ok(record) => batch.push(record),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
            // Fill the batch until it is full or the first record has waited `linger`.
            let deadline = Instant::now() + linger;
            while !batch.is_empty() && batch.len() < max && !stop.load(Ordering::Acquire) {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
            queued.fetch_sub(batch.len(), Ordering::AcqRel);
            self.reconcile();
            if !batch.is_empty() {
                self.process(&batch);
                batch.clear();
            }
            if stop.load(Ordering::Acquire) || disconnected {
                self.save();
                self.leave();
                return self.next_offset;
            }
            if self.last_save.elapsed() >= self.shared.config.snapshot_interval() {
                self.save();
            }
        }
    }

    /// Stops producing after the transactional producer was fenced.
    fn fence(&mut self, err: &kafka::Fenced) {
        tracing::error!(partition = self.partition, "{err}; the partition's records are left to its next owner");
        self.fenced = true;
    }

    /// Sends a batch's outputs and waits for the broker to acknowledge them; exactly-once
    /// also commits `next` as the partition's offset with them. False when fenced.
    fn deliver(&mut self, records: Vec<kafka::Outgoing>, next: i64) -> bool {
        if self.fenced {
            return false;
        }
        let Some(txn) = &self.txn else {
            kafka::deliver(&self.shared.producer, records);
            return true;
        };
        match txn.commit(&records, next) {
            Ok(()) => true,
            Err(err) => {
                self.fence(&err);
                false
            }
        }
    }

    fn process(&mut self, records: &[Incoming]) {
        if self.fenced {
            return;
        }
        let started = Instant::now();
        let metrics = self.shared.metrics.clone();
        metrics.records.inc_by(records.len() as u64);
        let mut outgoing = Vec::new();
        let mut rows: Vec<Row> = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let decoded = match &record.payload {
                Some(payload) => Record::decode(payload),
                None => Err(DecodeError::Malformed("record has no payload".into())),
            };
            match decoded {
                Ok(decoded) => rows.push(self.row(decoded, index)),
                Err(err) => outgoing.push(self.dead_letter(record, &err)),
            }
        }
        let mut events = Vec::new();
        if !rows.is_empty() {
            let batch = columnar(&rows);
            for slot in 0..self.slots.len() {
                let (outputs, poison) = self.call(slot, &batch);
                if let Some((row, err)) = poison {
                    outgoing.push(self.poison_letter(slot, &records[rows[row].record], &err));
                }
                events.extend(self.events(slot, &rows, &batch, outputs));
            }
            metrics.batches.inc();
        }
        outgoing.extend(events.iter().map(|event| kafka::Outgoing {
            topic: self.shared.config.anomalies_topic.clone(),
            key: Some(event.router.clone().into_bytes()),
            payload: Some(serde_json::to_vec(event).expect("an anomaly always serialises")),
            headers: None,
        }));
        // Only once all of it is acknowledged may the batch's offsets be committed.
        let next = records.last().expect("a batch has records").offset + 1;
        if !self.deliver(outgoing, next) {
            return;
        }
        metrics.records_done.inc_by(records.len() as u64);
        let acknowledged = now_ms();
        for event in &events {
            metrics.detection_latency.observe((acknowledged - event.ts).max(0) as f64 / 1000.0);
        }
        self.shared.feed.publish(events);
        self.next_offset = Some(next);
        self.progress.store(next, Ordering::Release);
        metrics.batch_duration.observe(started.elapsed().as_secs_f64());
    }

    fn row(&mut self, record: Record, index: usize) -> Row {
        let router = self.routers.id(&record.router);
        if router as usize == self.router_info.len() {
            self.router_info.push(RouterInfo {
                name: record.router,
                site: record.site,
                role: record.role.name().to_owned(),
            });
        }
        Row { router, ts: record.ts, values: Metric::ALL.map(|m| record.metrics.get(m)), record: index }
    }

    fn dead_letter(&self, record: &Incoming, err: &DecodeError) -> kafka::Outgoing {
        let reason = match err {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::UnsupportedSchema { .. } => "unsupported_schema",
            DecodeError::Invalid { .. } => "invalid",
        };
        self.shared.metrics.decode_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
        self.letter(record, reason, &err.to_string(), None)
    }

    /// A record that made a plugin trap twice, with the trap in its headers.
    fn poison_letter(&self, slot: usize, record: &Incoming, err: &CallError) -> kafka::Outgoing {
        let slot = &self.slots[slot];
        tracing::warn!(partition = self.partition, plugin = %slot.name, offset = record.offset, "poison record sent to the dead-letter topic: {err}");
        self.shared.metrics.plugin_poison_records.get_or_create(&slot.labels).inc();
        slot.counters.poison_records.fetch_add(1, Ordering::Relaxed);
        let plugin = format!("{}@{}", slot.name, slot.labels.version);
        let reason = if matches!(err, CallError::InvalidOutput(_)) { "plugin_invalid_output" } else { "plugin_trap" };
        self.letter(record, reason, &err.to_string(), Some(&plugin))
    }

    fn letter(&self, record: &Incoming, reason: &str, message: &str, plugin: Option<&str>) -> kafka::Outgoing {
        self.shared.metrics.dead_letters.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
        let source = format!("{}/{}/{}", self.shared.config.metrics_topic, self.partition, record.offset);
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: "routewatch-error", value: Some(message.as_bytes()) })
            .insert(Header { key: "routewatch-error-kind", value: Some(reason.as_bytes()) })
            .insert(Header { key: "routewatch-source", value: Some(source.as_bytes()) });
        if let Some(plugin) = plugin {
            headers = headers.insert(Header { key: "routewatch-plugin", value: Some(plugin.as_bytes()) });
        }
        kafka::Outgoing {
            topic: self.shared.config.dlq_topic.clone(),
            key: record.key.clone(),
            payload: record.payload.clone(),
            headers: Some(headers),
        }
    }

    /// Runs one plugin on the batch, containing whatever it does wrong:
    /// 1. a trap or overrun kills the instance; the batch is retried once on a fresh instance
    ///    restored from the last saved state;
    /// 2. if that fails too, the batch is split in halves to find the one record that makes
    ///    the plugin trap; that record goes to the dead-letter topic and the rest are scored;
    /// 3. if no single record is to blame (both halves fail on their own, or the plugin ran out
    ///    of CPU, where every probe would cost a whole budget), the plugin scores nothing in
    ///    this batch and the registry counts a failure, which may quarantine it.
    ///
    /// Output that breaks the contract is contained like a trap (retried, then isolated to its
    /// record, which goes to the dead-letter topic as `plugin_invalid_output`). A plugin that
    /// returns an error is alive; it is not retried (it would answer the same) but counts a
    /// failure.
    fn call(&mut self, index: usize, batch: &Batch) -> (Outputs, Option<(usize, CallError)>) {
        if !self.slots[index].runnable {
            return (Vec::new(), None);
        }
        let first = match self.slots[index].instance.take() {
            Some(instance) => Ok(instance),
            None => self.slots[index].fresh_instance(&self.slots[index].snapshot.clone(), &self.shared.metrics),
        };
        let err = match first {
            Ok(mut instance) => match self.attempt_with(index, &mut instance, batch, 0..batch.len()) {
                Ok(output) => {
                    self.slots[index].instance = Some(instance);
                    return (vec![(0, output)], None);
                }
                Err(err) => {
                    if err.instance_survives() {
                        self.slots[index].instance = Some(instance);
                    }
                    err
                }
            },
            Err(err) => err,
        };
        if matches!(err, CallError::Plugin(_)) {
            // It answered with an error: it would answer the same again.
            self.fail(index, &err);
            return (Vec::new(), None);
        }
        let saved = self.slots[index].snapshot.clone();
        match self.attempt(index, batch, 0..batch.len(), &saved) {
            Ok((output, instance)) => {
                self.slots[index].instance = Some(instance);
                (vec![(0, output)], None)
            }
            Err(retry) if !isolatable(&retry) => {
                self.fail(index, &retry);
                (Vec::new(), None)
            }
            Err(retry) => match self.isolate(index, batch, 0..batch.len(), saved, Some(retry)) {
                Ok(isolated) => {
                    let slot = &mut self.slots[index];
                    slot.instance = isolated.instance;
                    slot.snapshot = isolated.state;
                    (isolated.outputs, isolated.poison)
                }
                Err(err) => {
                    self.fail(index, &err);
                    (Vec::new(), None)
                }
            },
        }
    }

    /// Finds the one record of `range` that makes the plugin trap (see [`Worker::call`]),
    /// running the parts around it in order from `state`.
    fn isolate(
        &mut self,
        index: usize,
        batch: &Batch,
        range: Range<usize>,
        state: Vec<u8>,
        known_failure: Option<CallError>,
    ) -> Result<Isolated, CallError> {
        let err = match known_failure {
            Some(err) => err,
            None => match self.attempt(index, batch, range.clone(), &state) {
                Ok((output, mut instance)) => {
                    let state = instance.snapshot()?;
                    return Ok(Isolated {
                        outputs: vec![(range.start, output)],
                        instance: Some(instance),
                        state,
                        poison: None,
                    });
                }
                Err(err) => err,
            },
        };
        if !isolatable(&err) {
            return Err(err);
        }
        if range.len() == 1 {
            return Ok(Isolated { outputs: Vec::new(), instance: None, state, poison: Some((range.start, err)) });
        }
        let mid = range.start + range.len() / 2;
        let (left, right) = (range.start..mid, mid..range.end);
        match self.attempt(index, batch, left.clone(), &state) {
            Ok((output, mut instance)) => {
                let after_left = instance.snapshot()?;
                let mut rest = self.isolate(index, batch, right, after_left, None)?;
                rest.outputs.insert(0, (left.start, output));
                Ok(rest)
            }
            Err(left_err) => {
                if self.attempt(index, batch, right.clone(), &state).is_err() {
                    // Each half fails by itself: the plugin is at fault, not one record.
                    return Err(left_err);
                }
                let mut isolated = self.isolate(index, batch, left, state, Some(left_err))?;
                let (output, mut instance) = self.attempt(index, batch, right.clone(), &isolated.state)?;
                isolated.state = instance.snapshot()?;
                isolated.instance = Some(instance);
                isolated.outputs.push((right.start, output));
                Ok(isolated)
            }
        }
    }

    /// Runs `range` of the batch on a fresh instance restored from `state`.
    fn attempt(
        &self,
        index: usize,
        batch: &Batch,
        range: Range<usize>,
        state: &[u8],
    ) -> Result<(Output, Instance), CallError> {
        let mut instance = self.slots[index].fresh_instance(state, &self.shared.metrics)?;
        let output = self.attempt_with(index, &mut instance, batch, range)?;
        Ok((output, instance))
    }

    /// Runs `range` of the batch on `instance` and accounts for the call. After a failure the
    /// instance is of use only if [`CallError::instance_survives`].
    fn attempt_with(
        &self,
        index: usize,
        instance: &mut Instance,
        batch: &Batch,
        range: Range<usize>,
    ) -> Result<Output, CallError> {
        let part;
        let input = if range.len() == batch.len() {
            batch
        } else {
            part = batch.slice(range);
            &part
        };
        let result = instance.process(input);
        let slot = &self.slots[index];
        let metrics = &self.shared.metrics;
        let stats = instance.last_call();
        metrics.plugin_invocations.get_or_create(&slot.labels).inc();
        metrics.plugin_call_duration.get_or_create(&slot.labels).observe(stats.duration.as_secs_f64());
        metrics.plugin_cpu.get_or_create(&slot.labels).inc_by(stats.cpu.as_secs_f64());
        metrics.plugin_memory_high_water.get_or_create(&slot.labels).inner().fetch_max(
            i64::try_from(stats.memory_high_water).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        slot.counters.invocations.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(output) => {
                metrics.plugin_points.get_or_create(&slot.labels).inc_by(output.scores.len() as u64);
                slot.counters.points.fetch_add(output.scores.len() as u64, Ordering::Relaxed);
                Ok(output)
            }
            Err(err) => {
                let labels = TrapLabels {
                    plugin: slot.labels.plugin.clone(),
                    version: slot.labels.version.clone(),
                    kind: err.kind_label().into(),
                };
                metrics.plugin_traps.get_or_create(&labels).inc();
                slot.counters.traps.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(partition = self.partition, plugin = %slot.name, rows = input.len(), "plugin call failed: {err}");
                Err(err)
            }
        }
    }

    /// A batch the plugin could not score: the registry decides whether to quarantine it.
    fn fail(&self, index: usize, err: &CallError) {
        let slot = &self.slots[index];
        self.shared.registry.report_failure(&slot.name, slot.plugin.sha256(), &err.to_string());
    }

    fn events(&self, index: usize, rows: &[Row], batch: &Batch, outputs: Outputs) -> Vec<AnomalyEvent> {
        let slot = &self.slots[index];
        let metrics = &self.shared.metrics;
        let detected_at = now_ms();
        let mut events = Vec::new();
        for (offset, output) in outputs {
            for a in output.anomalies {
                let row = &rows[offset + a.row as usize];
                let info = &self.router_info[row.router as usize];
                let kind = event_kind(a.kind);
                metrics
                    .anomalies
                    .get_or_create(&AnomalyLabels {
                        plugin: slot.labels.plugin.clone(),
                        version: slot.labels.version.clone(),
                        kind: kind.name().into(),
                    })
                    .inc();
                metrics.count_router_anomaly(&info.name, &info.site, &info.role);
                slot.counters.anomalies.fetch_add(1, Ordering::Relaxed);
                events.push(AnomalyEvent {
                    router: info.name.clone(),
                    site: Some(info.site.clone()),
                    role: Some(info.role.clone()),
                    metric: batch.columns[a.column as usize].metric.clone(),
                    plugin: slot.labels.plugin.clone(),
                    plugin_version: slot.labels.version.clone(),
                    ts: row.ts,
                    detected_at: Some(detected_at),
                    value: a.observed,
                    expected: a.expected,
                    lower: AnomalyEvent::bound(a.lower),
                    upper: AnomalyEvent::bound(a.upper),
                    score: a.score,
                    kind,
                    reason: a.reason,
                });
            }
        }
        events
    }

    /// Snapshots every running plugin and writes the partition's state. A snapshot over
    /// `max_snapshot_mib` is that plugin's failure (its previous snapshot is kept); a save the
    /// broker does not take in time is counted and shown in `/readyz`, and tried again at the
    /// next interval.
    fn save(&mut self) {
        self.last_save = Instant::now();
        let Some(next_offset) = self.next_offset else { return };
        let cap = self.shared.config.max_snapshot_mib << 20;
        let mut plugins = Vec::new();
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            if let Some(instance) = slot.instance.as_mut() {
                match instance.snapshot() {
                    Ok(bytes) if bytes.len() > cap => {
                        let reason =
                            format!("snapshot of {} bytes is over max_snapshot_mib ({cap} bytes)", bytes.len());
                        tracing::error!(partition = self.partition, plugin = %slot.name, "{reason}; keeping the previous one");
                        self.shared.metrics.plugin_oversized_snapshots.get_or_create(&slot.labels).inc();
                        let slot = &self.slots[index];
                        self.shared.registry.report_failure(&slot.name, slot.plugin.sha256(), &reason);
                    }
                    Ok(bytes) => slot.snapshot = bytes,
                    Err(err) => {
                        tracing::warn!(plugin = %slot.name, "snapshot failed, keeping the previous one: {err}");
                        slot.instance = None;
                    }
                }
            }
            let slot = &self.slots[index];
            plugins.push(PluginState {
                name: slot.name.clone(),
                version: slot.labels.version.clone(),
                snapshot: slot.snapshot.clone(),
            });
        }
        // States of plugins unloaded for now are kept, so that they resume if they return.
        for (name, snapshot) in &self.restored {
            plugins.push(PluginState { name: name.clone(), version: String::new(), snapshot: snapshot.clone() });
        }
        let state = PartitionState::new(next_offset, self.router_info.clone(), plugins);
        let metrics = self.shared.metrics.clone();
        // Exactly-once: the state goes in a transaction with the partition's offset; else it is
        // saved with a deadline, so that a broker that will not take it stalls nothing.
        let saved = match &self.txn {
            Some(_) => match self.shared.state.prepare(self.partition, &state) {
                Ok(mut write) => {
                    let bytes = write.bytes();
                    let committed = self.deliver(write.take_records(), next_offset);
                    if committed {
                        self.shared.state.committed(&write);
                    }
                    committed.then_some(bytes).ok_or_else(|| "the transaction was fenced".to_owned())
                }
                Err(err) => Err(err.to_string()),
            },
            None => self.shared.state.save(self.partition, &state).map_err(|e| e.to_string()),
        };
        match saved {
            Ok(bytes) => {
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
        self.shared.registry.report_partition_stopped(self.partition);
        if std::mem::take(&mut self.unsaved) {
            self.shared.metrics.state_unsaved_partitions.dec();
        }
        self.shared.metrics.state_bytes.remove(&PartitionLabels { partition: self.partition.to_string() });
    }
}

/// Failures worth splitting a batch for: a trap, memory overrun or output that breaks the
/// contract may be one record's doing and costs little to reproduce. A CPU overrun costs a
/// whole budget per probe.
fn isolatable(err: &CallError) -> bool {
    matches!(err, CallError::Trap { .. } | CallError::MemoryLimitExceeded { .. } | CallError::InvalidOutput(_))
}

fn columnar(rows: &[Row]) -> Batch {
    Batch {
        routers: rows.iter().map(|r| r.router).collect(),
        timestamps: rows.iter().map(|r| r.ts).collect(),
        columns: Metric::ALL
            .iter()
            .enumerate()
            .map(|(c, metric)| Column {
                metric: metric.name().into(),
                values: rows.iter().map(|r| r.values[c]).collect(),
            })
            .collect(),
    }
}
