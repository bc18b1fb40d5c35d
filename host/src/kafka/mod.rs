//! The Kafka service of `routewatch run`: a consumer-group member on the metrics topic.
//!
//! Each assigned partition gets a worker thread ([`worker`]) running its own detection
//! [`Engine`](routewatch_engine::Engine), with the partition as its [`Source`]
//! (routewatch_engine::Source) and the registered [`crate::sinks`] as its sinks. The consumer
//! thread routes records to workers and stores each worker's progress for commit only after
//! every sink acknowledged that worker's batch. On revoke and shutdown, workers finish what
//! they hold, save their state to the compacted state topic ([`state`]), and offsets are
//! committed; on assign, state is read back before the first record is processed.

pub mod sites;
mod source;
pub mod state;
pub(crate) mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, TopicPartitionList};

pub use state::{
    LEGACY_STATE_VERSION, Loaded, PartitionState, PluginState, RouterInfo, STATE_VERSION, StateStore, state_key,
};

use crate::broker::{self, CommitPoint, add_commit_point, ensure_topics};
use crate::config::{HostConfig, ProcessingGuarantee};
use crate::feed::AnomalyFeed;
use crate::incidents::IncidentBook;
use crate::metrics::{Metrics, PartitionLabels};
use crate::registry::Registry;
use worker::{Incoming, WorkerHandle, WorkerStart};

/// What every worker shares.
pub struct Shared {
    pub(crate) config: HostConfig,
    /// The consumer group's metadata, for exactly-once transactions.
    pub(crate) group_metadata: broker::GroupMetadata,
    pub(crate) registry: Arc<Registry>,
    pub(crate) producer: FutureProducer,
    pub(crate) state: StateStore,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) feed: Arc<AnomalyFeed>,
    pub(crate) incidents: Arc<IncidentBook>,
    pub(crate) alertmanager: Option<Arc<crate::alertmanager::Alertmanager>>,
    pub(crate) healing: Option<Arc<crate::healing::Healing>>,
}

impl Shared {
    pub(crate) fn exactly_once(&self) -> bool {
        self.config.processing_guarantee == ProcessingGuarantee::ExactlyOnce
    }
}

/// What the partitions' outputs go to besides Kafka (the classifier they run is the registry's).
pub struct Outputs {
    /// Recent anomalies.
    pub feed: Arc<AnomalyFeed>,
    /// Recent incidents.
    pub incidents: Arc<IncidentBook>,
    /// Where incidents are posted as alerts.
    pub alertmanager: Option<Arc<crate::alertmanager::Alertmanager>>,
    /// Self-healing, if configured.
    pub healing: Option<Arc<crate::healing::Healing>>,
}

/// The running Kafka service: the consumer thread and, through it, the partition workers.
pub struct KafkaService {
    stop: Arc<AtomicBool>,
    consumer: Option<JoinHandle<anyhow::Result<()>>>,
}

impl KafkaService {
    /// Creates missing topics (if configured), the producer and the state store, and starts the
    /// consumer thread, which sets `ready` once it has subscribed.
    pub fn start(
        config: HostConfig,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        outputs: Outputs,
        ready: Arc<AtomicBool>,
    ) -> anyhow::Result<KafkaService> {
        if config.create_topics {
            ensure_topics(&config)?;
        }
        let producer = broker::producer(&config)?;
        let shared = Arc::new(Shared {
            state: StateStore::new(&config)?,
            config,
            group_metadata: broker::GroupMetadata::default(),
            registry,
            producer,
            metrics,
            feed: outputs.feed,
            incidents: outputs.incidents,
            alertmanager: outputs.alertmanager,
            healing: outputs.healing,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let consumer = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("consumer".into())
                .spawn(move || consume(shared, stop, ready))
                .context("spawning the consumer thread")?
        };
        Ok(KafkaService { stop, consumer: Some(consumer) })
    }

    /// Whether the consumer thread has stopped (by itself only on a fatal error).
    pub fn is_finished(&self) -> bool {
        self.consumer.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Finishes in-flight batches, saves state, commits offsets and leaves the group, giving
    /// up after `grace`.
    pub fn shutdown(mut self, grace: Duration) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        let Some(consumer) = self.consumer.take() else { return Ok(()) };
        let deadline = Instant::now() + grace;
        while !consumer.is_finished() {
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "could not finish within {grace:?} (is the broker reachable?); \
                     offsets not committed since the last commit will be processed again"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        match consumer.join() {
            Ok(result) => result,
            Err(_) => anyhow::bail!("the consumer thread panicked"),
        }
    }
}

impl Drop for KafkaService {
    fn drop(&mut self) {
        // Signal the consumer thread; it finishes on its own (see `shutdown` for waiting).
        self.stop.store(true, Ordering::Release);
    }
}

/// A partition this host holds: its worker, and the records it could not take yet.
struct Assigned {
    worker: WorkerHandle,
    /// Records fetched while the worker's queue was full, in order; the partition is paused
    /// meanwhile, so this holds at most what was already fetched.
    overflow: VecDeque<Incoming>,
    paused: bool,
}

/// The consumer's rebalance handling: workers start on assign and stop on revoke.
struct HostContext {
    shared: Arc<Shared>,
    workers: Mutex<HashMap<i32, Assigned>>,
}

impl ClientContext for HostContext {}

impl ConsumerContext for HostContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            self.revoke(consumer, &partitions);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                // Before the workers start: their first transaction carries the new generation.
                *self.shared.group_metadata.lock().expect("group metadata lock") =
                    consumer.group_metadata().map(Arc::new);
                let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                self.assign(consumer, &partitions);
            }
            Rebalance::Error(err) => tracing::error!("rebalance failed: {err}"),
            Rebalance::Revoke(_) => {}
        }
    }
}

impl HostContext {
    fn assign(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) {
        // Exactly-once: the producers start first, since starting one aborts what a crashed
        // owner left open, which would otherwise hold back the state reader below.
        let mut starts: HashMap<i32, WorkerStart> = partitions.iter().map(|&p| (p, WorkerStart::default())).collect();
        if self.shared.exactly_once() {
            std::thread::scope(|scope| {
                for (&partition, start) in &mut starts {
                    let shared = &self.shared;
                    scope.spawn(move || {
                        start.txn = Some(broker::Transactional::start(
                            &shared.config,
                            partition,
                            shared.group_metadata.clone(),
                            shared.state.delivered_marker(partition),
                            start.stop.clone(),
                        ));
                    });
                }
            });
        }
        let loaded = self.shared.state.load(partitions).unwrap_or_else(|err| {
            // Losing state costs a warm-up, not records: go on without it.
            tracing::error!("could not read saved state, starting partitions fresh: {err:#}");
            Loaded::default()
        });
        let Loaded { mut states, delivered } = loaded;
        // How far the previous owners delivered: exactly-once wrote it beside the state, in
        // its transactions; at-least-once in the metadata of its offset commits.
        let delivered = if self.shared.exactly_once() { delivered } else { self.delivered(consumer, partitions) };
        let mut workers = self.workers.lock().expect("workers lock");
        for &partition in partitions {
            let mut start = starts.remove(&partition).unwrap_or_default();
            start.restored = states.remove(&partition);
            start.delivered = delivered.get(&partition).copied();
            let from = start.restored.as_ref().map(|s| s.next_offset);
            tracing::info!(partition, state_from = ?from, delivered = ?start.delivered, "starting the partition's worker");
            if start.delivered.is_none() && from.is_some() {
                tracing::warn!(
                    partition,
                    "no record of how far the previous owner delivered: outputs since the restored state may be delivered again"
                );
            }
            let worker = WorkerHandle::spawn(self.shared.clone(), partition, start);
            workers.insert(partition, Assigned { worker, overflow: VecDeque::new(), paused: false });
        }
        self.shared.metrics.assigned_partitions.set(workers.len() as i64);
        tracing::info!(?partitions, "partitions assigned");
    }

    /// How far the previous (at-least-once) owners of `partitions` delivered outputs, from the
    /// metadata of their last commits (see [`CommitPoint`]). None known means none
    /// suppressed: the records between the restored state and the last commit are delivered
    /// again, which at-least-once allows, and a warning says so.
    fn delivered(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) -> HashMap<i32, i64> {
        let mut list = TopicPartitionList::new();
        for &partition in partitions {
            list.add_partition(&self.shared.config.metrics_topic, partition);
        }
        match consumer.committed_offsets(list, Duration::from_secs(10)) {
            Ok(committed) => committed
                .elements()
                .iter()
                .filter_map(|e| CommitPoint::delivered_from(e.metadata()).map(|d| (e.partition(), d)))
                .collect(),
            Err(err) => {
                tracing::warn!("reading the committed offsets: {err}; outputs may be delivered twice");
                HashMap::new()
            }
        }
    }

    /// Stops the workers of `partitions` (all at once: each finishes its batch and saves),
    /// and commits their final commit points before the partitions go elsewhere.
    /// Records still queued or parked are left to the next owner, uncommitted.
    fn revoke(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) {
        let topic = &self.shared.config.metrics_topic;
        let mut workers = self.workers.lock().expect("workers lock");
        let stopping: Vec<(i32, Assigned)> =
            partitions.iter().filter_map(|p| workers.remove(p).map(|a| (*p, a))).collect();
        for (_, assigned) in &stopping {
            assigned.worker.request_stop();
        }
        let mut points = TopicPartitionList::new();
        for (partition, assigned) in stopping {
            // Exactly-once workers commit their offsets in their own transactions.
            if let (_, Some(point)) = assigned.worker.join()
                && !self.shared.exactly_once()
            {
                add_commit_point(&mut points, topic, partition, point);
            }
            self.shared.metrics.consumer_lag.remove(&PartitionLabels { partition: partition.to_string() });
        }
        self.shared.metrics.assigned_partitions.set(workers.len() as i64);
        drop(workers);
        commit(consumer, &points, CommitMode::Sync);
        tracing::info!(?partitions, "partitions revoked");
    }
}

/// Pauses or resumes fetching one partition.
fn set_paused(consumer: &BaseConsumer<HostContext>, topic: &str, partition: i32, pause: bool) {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    let result = if pause { consumer.pause(&list) } else { consumer.resume(&list) };
    match result {
        Ok(()) => tracing::debug!(partition, pause, "partition fetch {}", if pause { "paused" } else { "resumed" }),
        Err(err) => tracing::warn!(partition, "changing the partition's pause: {err}"),
    }
}

/// Hands a fetched record to its partition's worker without ever waiting: when the worker's
/// queue is full the record is parked and the partition paused.
fn route(consumer: &BaseConsumer<HostContext>, topic: &str, partition: i32, incoming: Incoming) {
    let mut workers = consumer.context().workers.lock().expect("workers lock");
    let Some(assigned) = workers.get_mut(&partition) else {
        tracing::warn!(partition, "record for a partition without a worker");
        return;
    };
    if !assigned.overflow.is_empty() {
        assigned.overflow.push_back(incoming);
        return;
    }
    if let Err(incoming) = assigned.worker.try_send(incoming) {
        assigned.overflow.push_back(incoming);
        if !assigned.paused {
            assigned.paused = true;
            consumer.context().shared.metrics.partition_pauses.inc();
            set_paused(consumer, topic, partition, true);
        }
    }
}

/// Moves parked records into workers that have room, and resumes a partition once its worker
/// has worked its queue down to half (so that pause and resume do not alternate per record).
fn drain_overflow(consumer: &BaseConsumer<HostContext>, topic: &str) {
    let mut workers = consumer.context().workers.lock().expect("workers lock");
    for (&partition, assigned) in workers.iter_mut().filter(|(_, a)| a.paused) {
        while let Some(incoming) = assigned.overflow.pop_front() {
            if let Err(incoming) = assigned.worker.try_send(incoming) {
                assigned.overflow.push_front(incoming);
                break;
            }
        }
        if assigned.overflow.is_empty() && assigned.worker.queued() <= worker::QUEUE_RECORDS / 2 {
            assigned.paused = false;
            set_paused(consumer, topic, partition, false);
        }
    }
}

/// Commits exactly `points` (never what librdkafka stored by itself).
fn commit(consumer: &BaseConsumer<HostContext>, points: &TopicPartitionList, mode: CommitMode) {
    if points.count() == 0 {
        return;
    }
    match consumer.commit(points, mode) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(err) => tracing::warn!("committing offsets: {err}"),
    }
}

/// How often commit points are committed (at-least-once): outputs delivered within this
/// (and the commit's round trip) before a crash are the ones the next owner delivers again.
const COMMIT_INTERVAL: Duration = Duration::from_millis(20);

/// The consumer thread: routes records to workers until told to stop.
fn consume(shared: Arc<Shared>, stop: Arc<AtomicBool>, ready: Arc<AtomicBool>) -> anyhow::Result<()> {
    let config = &shared.config;
    let context = HostContext { shared: shared.clone(), workers: Mutex::new(HashMap::new()) };
    let exactly_once = shared.exactly_once();
    let settings = [
        ("group.id", config.group_id.as_str()),
        // Offsets are committed by us: at-least-once, each partition's commit point (the offset
        // of its last saved state, with how far outputs were delivered as metadata);
        // exactly-once, with each transaction, never by themselves.
        ("enable.auto.commit", "false"),
        ("isolation.level", "read_committed"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "1000"),
        // Detection latency over idle fetch traffic: a broker that holds a fetch open for the
        // default 500 ms when little data waits would add that to every anomaly.
        ("fetch.wait.max.ms", "10"),
    ];
    let consumer: BaseConsumer<HostContext> = broker::group_consumer_config(config, &settings)
        .create_with_context(context)
        .context("creating the Kafka consumer")?;
    consumer.subscribe(&[&config.metrics_topic]).context("subscribing to the metrics topic")?;
    ready.store(true, Ordering::Release);
    tracing::info!(topic = %config.metrics_topic, group = %config.group_id, brokers = %config.brokers, "consuming");

    let lag = LagMonitor::start(&shared)?;
    let mut committed: HashMap<i32, CommitPoint> = HashMap::new();
    let (mut last_tick, mut last_commit) = (Instant::now(), Instant::now());
    while !stop.load(Ordering::Acquire) {
        // Short, so that commit points follow deliveries closely even when nothing arrives.
        match consumer.poll(COMMIT_INTERVAL) {
            Some(Ok(message)) => {
                let incoming = Incoming {
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                };
                route(&consumer, &config.metrics_topic, message.partition(), incoming);
            }
            Some(Err(err)) => tracing::warn!("consumer: {err}"),
            None => {}
        }
        drain_overflow(&consumer, &config.metrics_topic);
        if !exactly_once && last_commit.elapsed() >= COMMIT_INTERVAL {
            last_commit = Instant::now();
            let workers = consumer.context().workers.lock().expect("workers lock");
            let mut points = TopicPartitionList::new();
            for (&partition, assigned) in workers.iter() {
                if let Some(point) = assigned.worker.commit_point()
                    && committed.get(&partition) != Some(&point)
                {
                    add_commit_point(&mut points, &config.metrics_topic, partition, point);
                    committed.insert(partition, point);
                }
            }
            drop(workers);
            commit(&consumer, &points, CommitMode::Async);
        }
        if last_tick.elapsed() >= Duration::from_millis(200) {
            last_tick = Instant::now();
            shared.registry.tick();
            let workers = consumer.context().workers.lock().expect("workers lock");
            let progress = workers.iter().filter_map(|(&p, a)| a.worker.progress().map(|o| (p, o))).collect();
            drop(workers);
            lag.update(progress);
        }
    }

    tracing::info!("shutting down: finishing batches, saving state, committing offsets");
    let partitions: Vec<i32> = consumer.context().workers.lock().expect("workers lock").keys().copied().collect();
    consumer.context().revoke(&consumer, &partitions);
    consumer.unsubscribe();
    Ok(())
}

/// Measures consumer lag from the partitions' high watermarks, off the consumer thread so a
/// slow broker never stalls consumption.
struct LagMonitor {
    progress: Arc<Mutex<HashMap<i32, i64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LagMonitor {
    fn start(shared: &Arc<Shared>) -> anyhow::Result<LagMonitor> {
        let group = format!("{}-lag", shared.config.group_id);
        let client: BaseConsumer = broker::client_config(&shared.config, &[("group.id", group.as_str())])
            .create()
            .context("creating the lag monitor")?;
        let progress: Arc<Mutex<HashMap<i32, i64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (progress2, stop2, shared) = (progress.clone(), stop.clone(), shared.clone());
        let thread = std::thread::Builder::new().name("lag".into()).spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                let snapshot = progress2.lock().expect("lag lock").clone();
                for (partition, offset) in snapshot {
                    let topic = &shared.config.metrics_topic;
                    if let Ok((_, high)) = client.fetch_watermarks(topic, partition, Duration::from_secs(2)) {
                        let labels = PartitionLabels { partition: partition.to_string() };
                        shared.metrics.consumer_lag.get_or_create(&labels).set((high - offset).max(0));
                    }
                }
                for _ in 0..50 {
                    if stop2.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })?;
        Ok(LagMonitor { progress, stop, thread: Some(thread) })
    }

    fn update(&self, progress: HashMap<i32, i64>) {
        *self.progress.lock().expect("lag lock") = progress;
    }
}

impl Drop for LagMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
