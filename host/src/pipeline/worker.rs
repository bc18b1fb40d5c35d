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
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use routewatch_telemetry::{AnomalyEvent, DecodeError, Metric, Record};

use super::Shared;
use super::metrics::{AnomalyLabels, PluginLabels, ReasonLabels, TrapLabels};
use super::state::{PartitionState, PluginState, RouterInfo};
use super::{kafka, now_ms};
use crate::registry::{Active, PluginCounters};
use crate::replay::event_kind;
use crate::routers::RouterTable;
use crate::runtime::{Batch, CallError, Column, Instance, Output, Plugin};

/// How long an idle worker waits for a record before it looks at the registry again.
const IDLE_TICK: Duration = Duration::from_millis(10);

/// Records queued for one worker before the consumer waits (back-pressure).
const QUEUE_RECORDS: usize = 50_000;

/// A record as the consumer hands it over.
pub struct Incoming {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

enum Command {
    Record(Incoming),
    /// Finish what is queued, save state, and answer with the next offset to commit.
    Stop(mpsc::Sender<Option<i64>>),
}

/// The consumer's side of a worker.
pub struct WorkerHandle {
    partition: i32,
    tx: SyncSender<Command>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<AtomicI64>,
    revoked: Arc<AtomicBool>,
}

impl WorkerHandle {
    /// Starts a worker for `partition`, continuing from `restored` if given.
    pub fn spawn(shared: Arc<Shared>, partition: i32, restored: Option<PartitionState>) -> WorkerHandle {
        let (tx, rx) = mpsc::sync_channel(QUEUE_RECORDS);
        let progress = Arc::new(AtomicI64::new(-1));
        let revoked = Arc::new(AtomicBool::new(false));
        let (reported, revoking) = (progress.clone(), revoked.clone());
        let thread = std::thread::Builder::new()
            .name(format!("partition-{partition}"))
            .spawn(move || Worker::new(shared, partition, restored, reported, revoking).run(rx))
            .expect("spawning a partition worker");
        WorkerHandle { partition, tx, thread: Some(thread), progress, revoked }
    }

    /// Queues a record, waiting if the worker is behind.
    pub fn send(&self, record: Incoming) {
        if self.tx.send(Command::Record(record)).is_err() {
            tracing::error!(partition = self.partition, "worker is gone; record left for the next owner");
        }
    }

    /// The next offset to commit, once the worker has finished a record.
    pub fn progress(&self) -> Option<i64> {
        let offset = self.progress.load(Ordering::Acquire);
        (offset >= 0).then_some(offset)
    }

    /// Finishes the queued records, saves state, and returns the next offset to commit.
    pub fn stop(mut self) -> Option<i64> {
        self.revoked.store(true, Ordering::Release);
        let (reply, answer) = mpsc::channel();
        let offset = match self.tx.send(Command::Stop(reply)) {
            Ok(()) => answer.recv().ok().flatten(),
            Err(_) => self.progress(),
        };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        offset
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
    /// A version that would not take this partition's state: not tried again.
    refused_sha: Option<String>,
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
            refused_sha: None,
        }
    }

    /// A fresh instance of this slot's plugin, configured and given `state`. A plugin that
    /// refuses its state starts empty (a warm-up lost, nothing else).
    fn fresh_instance(&self, state: &[u8]) -> Result<Instance, CallError> {
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
                    if slot.plugin.sha256() != sha && slot.refused_sha.as_deref() != Some(sha) {
                        self.swap(&mut slot, active);
                    }
                    if slot.config_rev != active.config_rev && slot.plugin.sha256() == sha {
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
            self.slots.push(slot);
        }
        for gone in old {
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
            if !state.is_empty() {
                instance.restore(&state)?;
            }
            Ok::<_, CallError>(instance)
        })();
        match started_new {
            Ok(instance) => {
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
                slot.refused_sha = Some(active.plugin.sha256().to_owned());
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

    fn run(mut self, rx: Receiver<Command>) {
        let max = self.shared.config.batch_records;
        let linger = self.shared.config.linger();
        let mut batch: Vec<Incoming> = Vec::with_capacity(max);
        loop {
            let mut stop = None;
            // Short, so that an idle partition still takes up a new plugin version promptly.
            match rx.recv_timeout(IDLE_TICK) {
                Ok(Command::Record(record)) => batch.push(record),
                Ok(Command::Stop(reply)) => stop = Some(reply),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Fill the batch until it is full or the first record has waited `linger`.
            let deadline = Instant::now() + linger;
            while stop.is_none() && !batch.is_empty() && batch.len() < max {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(Command::Record(record)) => batch.push(record),
                    Ok(Command::Stop(reply)) => stop = Some(reply),
                    Err(_) => break,
                }
            }
            self.reconcile();
            if !batch.is_empty() {
                self.process(&batch);
                batch.clear();
            }
            if let Some(reply) = stop {
                self.save();
                let _ = reply.send(self.next_offset);
                return;
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
            payload: serde_json::to_vec(event).expect("an anomaly always serialises"),
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
        self.letter(record, "plugin_trap", &err.to_string(), Some(&plugin))
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
            payload: record.payload.clone().unwrap_or_default(),
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
    /// A plugin that returns an error or breaks the output contract is alive; it is not
    /// retried (it would answer the same) but counts a failure.
    fn call(&mut self, index: usize, batch: &Batch) -> (Outputs, Option<(usize, CallError)>) {
        if !self.slots[index].runnable {
            return (Vec::new(), None);
        }
        let first = match self.slots[index].instance.take() {
            Some(instance) => Ok(instance),
            None => self.slots[index].fresh_instance(&self.slots[index].snapshot.clone()),
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
        if err.instance_survives() {
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
        let mut instance = self.slots[index].fresh_instance(state)?;
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
                    lower: a.lower,
                    upper: a.upper,
                    score: a.score,
                    kind,
                    reason: a.reason,
                });
            }
        }
        events
    }

    /// Snapshots every running plugin and writes the partition's state.
    fn save(&mut self) {
        self.last_save = Instant::now();
        let Some(next_offset) = self.next_offset else { return };
        let mut plugins = Vec::new();
        for slot in &mut self.slots {
            if let Some(instance) = slot.instance.as_mut() {
                match instance.snapshot() {
                    Ok(bytes) => slot.snapshot = bytes,
                    Err(err) => {
                        tracing::warn!(plugin = %slot.name, "snapshot failed, keeping the previous one: {err}");
                        slot.instance = None;
                    }
                }
            }
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
        let record = match self.shared.state.record(self.partition, &state) {
            Ok(record) => record,
            Err(err) => {
                tracing::error!(partition = self.partition, "{err:#}");
                return;
            }
        };
        let bytes = record.payload.len();
        if self.deliver(vec![record], next_offset) {
            self.shared.metrics.state_snapshots.inc();
            tracing::debug!(partition = self.partition, bytes, "saved partition state");
        }
    }
}

/// Failures worth splitting a batch for: a trap or memory overrun may be one record's doing
/// and costs little to reproduce. A CPU overrun costs a whole budget per probe.
fn isolatable(err: &CallError) -> bool {
    matches!(err, CallError::Trap { .. } | CallError::MemoryLimitExceeded { .. })
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
