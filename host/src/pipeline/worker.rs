//! One partition's worker: a thread that owns an instance of every plugin for the partition,
//! turns records into columnar batches, and produces anomalies and dead letters.
//!
//! Progress is reported as the next offset whose record has *not* been fully handled; the
//! consumer stores it for commit only after the batch's anomalies and dead letters are
//! acknowledged by the broker (at-least-once).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use routewatch_telemetry::{AnomalyEvent, DecodeError, Metric, Record};

use super::Shared;
use super::metrics::{AnomalyLabels, FailureLabels, PluginLabels, ReasonLabels};
use super::state::{PartitionState, PluginState, RouterInfo};
use super::{kafka, now_ms};
use crate::replay::event_kind;
use crate::routers::RouterTable;
use crate::runtime::{Batch, CallError, Column, Instance, Output};

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
}

impl WorkerHandle {
    /// Starts a worker for `partition`, continuing from `restored` if given.
    pub fn spawn(shared: Arc<Shared>, partition: i32, restored: Option<PartitionState>) -> WorkerHandle {
        let (tx, rx) = mpsc::sync_channel(QUEUE_RECORDS);
        let progress = Arc::new(AtomicI64::new(-1));
        let reported = progress.clone();
        let thread = std::thread::Builder::new()
            .name(format!("partition-{partition}"))
            .spawn(move || Worker::new(shared, partition, restored, reported).run(rx))
            .expect("spawning a partition worker");
        WorkerHandle { partition, tx, thread: Some(thread), progress }
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

/// One plugin on this partition.
struct Slot {
    index: usize,
    labels: PluginLabels,
    instance: Option<Instance>,
    /// Last state saved, for restarting the instance after a failure.
    snapshot: Vec<u8>,
    /// Why the plugin stopped running on this partition, if it did.
    disabled: Option<String>,
}

struct Worker {
    shared: Arc<Shared>,
    partition: i32,
    routers: RouterTable,
    router_info: Vec<RouterInfo>,
    slots: Vec<Slot>,
    next_offset: Option<i64>,
    progress: Arc<AtomicI64>,
    last_save: Instant,
}

/// A decoded row waiting for its batch.
struct Row {
    router: u32,
    ts: i64,
    values: [f64; Metric::ALL.len()],
}

impl Worker {
    fn new(shared: Arc<Shared>, partition: i32, restored: Option<PartitionState>, progress: Arc<AtomicI64>) -> Worker {
        let slots = shared
            .plugins
            .iter()
            .enumerate()
            .map(|(index, p)| Slot {
                index,
                labels: PluginLabels { plugin: p.plugin.info().name.clone(), version: p.plugin.info().version.clone() },
                instance: None,
                snapshot: Vec::new(),
                disabled: None,
            })
            .collect();
        let mut worker = Worker {
            shared,
            partition,
            routers: RouterTable::default(),
            router_info: Vec::new(),
            slots,
            next_offset: None,
            progress,
            last_save: Instant::now(),
        };
        if let Some(state) = restored {
            worker.restore(state);
        }
        worker
    }

    fn restore(&mut self, state: PartitionState) {
        for info in &state.routers {
            self.routers.id(&info.name);
        }
        self.router_info = state.routers;
        for saved in state.plugins {
            if let Some(slot) = self.slots.iter_mut().find(|s| s.labels.plugin == saved.name) {
                slot.snapshot = saved.snapshot;
            }
        }
        self.shared.metrics.state_restores.inc();
        tracing::info!(
            partition = self.partition,
            routers = self.router_info.len(),
            from_offset = state.next_offset,
            "restored partition state"
        );
    }

    fn run(mut self, rx: Receiver<Command>) {
        let max = self.shared.config.batch_records;
        let linger = self.shared.config.linger();
        let mut batch: Vec<Incoming> = Vec::with_capacity(max);
        loop {
            let mut stop = None;
            match rx.recv_timeout(Duration::from_secs(1)) {
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

    fn process(&mut self, records: &[Incoming]) {
        let started = Instant::now();
        let metrics = self.shared.metrics.clone();
        metrics.records.inc_by(records.len() as u64);
        let mut outgoing = Vec::new();
        let mut rows: Vec<Row> = Vec::with_capacity(records.len());
        for record in records {
            let decoded = match &record.payload {
                Some(payload) => Record::decode(payload),
                None => Err(DecodeError::Malformed("record has no payload".into())),
            };
            match decoded {
                Ok(decoded) => rows.push(self.row(decoded)),
                Err(err) => outgoing.push(self.dead_letter(record, &err)),
            }
        }
        let mut events = Vec::new();
        if !rows.is_empty() {
            let batch = columnar(&rows);
            for slot in 0..self.slots.len() {
                if let Some(output) = self.call(slot, &batch) {
                    events.extend(self.events(slot, &rows, &batch, output));
                }
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
        kafka::deliver(&self.shared.producer, outgoing);
        metrics.records_done.inc_by(records.len() as u64);
        let acknowledged = now_ms();
        for event in &events {
            metrics.detection_latency.observe((acknowledged - event.ts).max(0) as f64 / 1000.0);
        }
        self.shared.feed.publish(events);
        let next = records.last().expect("a batch has records").offset + 1;
        self.next_offset = Some(next);
        self.progress.store(next, Ordering::Release);
        metrics.batch_duration.observe(started.elapsed().as_secs_f64());
    }

    fn row(&mut self, record: Record) -> Row {
        let router = self.routers.id(&record.router);
        if router as usize == self.router_info.len() {
            self.router_info.push(RouterInfo {
                name: record.router,
                site: record.site,
                role: record.role.name().to_owned(),
            });
        }
        Row { router, ts: record.ts, values: Metric::ALL.map(|m| record.metrics.get(m)) }
    }

    fn dead_letter(&self, record: &Incoming, err: &DecodeError) -> kafka::Outgoing {
        let reason = match err {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::UnsupportedSchema { .. } => "unsupported_schema",
            DecodeError::Invalid { .. } => "invalid",
        };
        self.shared.metrics.decode_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
        self.shared.metrics.dead_letters.inc();
        let source = format!("{}/{}/{}", self.shared.config.metrics_topic, self.partition, record.offset);
        let message = err.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "routewatch-error", value: Some(message.as_bytes()) })
            .insert(Header { key: "routewatch-error-kind", value: Some(reason.as_bytes()) })
            .insert(Header { key: "routewatch-source", value: Some(source.as_bytes()) });
        kafka::Outgoing {
            topic: self.shared.config.dlq_topic.clone(),
            key: record.key.clone(),
            payload: record.payload.clone().unwrap_or_default(),
            headers: Some(headers),
        }
    }

    /// Runs one plugin on the batch. A dead instance is replaced by a fresh one restored from
    /// the last saved state and the batch tried once more; a second failure stops the plugin
    /// on this partition, and the other plugins carry on.
    fn call(&mut self, index: usize, batch: &Batch) -> Option<Output> {
        for attempt in 0..2 {
            let slot = &mut self.slots[index];
            if slot.disabled.is_some() {
                return None;
            }
            let instance = match slot.instance.as_mut() {
                Some(instance) => instance,
                None => match start_instance(&self.shared, slot) {
                    Ok(instance) => slot.instance.insert(instance),
                    Err(err) => {
                        self.disable(index, format!("cannot start: {err}"));
                        return None;
                    }
                },
            };
            let result = instance.process(batch);
            let metrics = &self.shared.metrics;
            metrics.plugin_invocations.get_or_create(&slot.labels).inc();
            metrics
                .plugin_call_duration
                .get_or_create(&slot.labels)
                .observe(instance.last_call().duration.as_secs_f64());
            match result {
                Ok(output) => {
                    metrics.plugin_points.get_or_create(&slot.labels).inc_by(output.scores.len() as u64);
                    return Some(output);
                }
                Err(err) => {
                    let labels = FailureLabels {
                        plugin: slot.labels.plugin.clone(),
                        version: slot.labels.version.clone(),
                        kind: err.kind_label().into(),
                    };
                    metrics.plugin_failures.get_or_create(&labels).inc();
                    tracing::warn!(partition = self.partition, plugin = %slot.labels.plugin, attempt, "plugin call failed: {err}");
                    if err.instance_survives() {
                        return None;
                    }
                    slot.instance = None;
                    if attempt == 1 {
                        self.disable(index, err.to_string());
                    }
                }
            }
        }
        None
    }

    fn disable(&mut self, index: usize, reason: String) {
        let slot = &mut self.slots[index];
        tracing::error!(partition = self.partition, plugin = %slot.labels.plugin, "plugin stopped on this partition: {reason}");
        slot.instance = None;
        slot.disabled = Some(reason);
    }

    fn events(&self, index: usize, rows: &[Row], batch: &Batch, output: Output) -> Vec<AnomalyEvent> {
        let slot = &self.slots[index];
        let detected_at = now_ms();
        output
            .anomalies
            .into_iter()
            .map(|a| {
                let row = &rows[a.row as usize];
                let info = &self.router_info[row.router as usize];
                let kind = event_kind(a.kind);
                self.shared
                    .metrics
                    .anomalies
                    .get_or_create(&AnomalyLabels {
                        plugin: slot.labels.plugin.clone(),
                        version: slot.labels.version.clone(),
                        kind: kind.name().into(),
                    })
                    .inc();
                AnomalyEvent {
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
                }
            })
            .collect()
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
                        tracing::warn!(plugin = %slot.labels.plugin, "snapshot failed, keeping the previous one: {err}");
                        slot.instance = None;
                    }
                }
            }
            plugins.push(PluginState {
                name: slot.labels.plugin.clone(),
                version: slot.labels.version.clone(),
                snapshot: slot.snapshot.clone(),
            });
        }
        let state = PartitionState::new(next_offset, self.router_info.clone(), plugins);
        match self.shared.state.save(self.partition, &state) {
            Ok(bytes) => {
                self.shared.metrics.state_snapshots.inc();
                tracing::debug!(partition = self.partition, bytes, "saved partition state");
            }
            Err(err) => tracing::error!(partition = self.partition, "{err:#}"),
        }
    }
}

/// A fresh instance of a slot's plugin, configured and given the slot's last snapshot.
fn start_instance(shared: &Shared, slot: &Slot) -> Result<Instance, CallError> {
    let loaded = &shared.plugins[slot.index];
    let mut instance = loaded.plugin.instantiate()?;
    if let Some(config) = &loaded.config {
        instance.configure(config)?;
    }
    if !slot.snapshot.is_empty()
        && let Err(err) = instance.restore(&slot.snapshot)
    {
        if !err.instance_survives() {
            return Err(err);
        }
        tracing::warn!(plugin = %slot.labels.plugin, "plugin refused its saved state, starting fresh: {err}");
    }
    Ok(instance)
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
