//! Kafka plumbing: client settings, topic creation, producing with acknowledgement, and the
//! transactional producer of exactly-once output.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::HostConfig;

/// A client's settings: the brokers, then the client's own `settings`, then the operator's
/// `kafka` table from the configuration, which has the last word.
pub fn client_config(config: &HostConfig, settings: &[(&str, &str)]) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (key, value) in settings {
        client.set(*key, *value);
    }
    for (key, value) in &config.kafka {
        client.set(key, value);
    }
    client
}

/// A group consumer's settings, as [`client_config`]: under the consumer group protocol
/// (KIP-848, `group.protocol=consumer` in the `kafka` table) the broker sets sessions and
/// heartbeats, and librdkafka refuses a client that sets them, so they are left out then.
pub fn group_consumer_config(config: &HostConfig, settings: &[(&str, &str)]) -> ClientConfig {
    let classic = config.kafka.get("group.protocol").is_none_or(|p| p == "classic");
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .copied()
        .filter(|(key, _)| classic || !matches!(*key, "session.timeout.ms" | "heartbeat.interval.ms"))
        .collect();
    client_config(config, &settings)
}

/// The producer for anomalies, dead letters and state: idempotent, acknowledged by all
/// replicas, and retrying for ever, so a broker outage delays output but never drops it.
pub fn producer(config: &HostConfig) -> anyhow::Result<FutureProducer> {
    client_config(config, &PRODUCER).create().context("creating the Kafka producer")
}

const PRODUCER: [(&str, &str); 6] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("message.timeout.ms", "0"),
    ("linger.ms", "5"),
    ("compression.type", "lz4"),
    ("message.max.bytes", "67108864"),
];

/// The producer for partition state: like [`producer`], but a delivery that the broker has not
/// acknowledged within `timeout` fails instead of waiting for ever.
pub fn state_producer(config: &HostConfig, timeout: Duration) -> anyhow::Result<FutureProducer> {
    let timeout = timeout.as_millis().to_string();
    let mut client = client_config(config, &PRODUCER);
    client
        .set("message.timeout.ms", timeout.as_str())
        // One record per batch: a state reader stops at the topic's high watermark, and some
        // Kafka-compatible brokers (Tansu) count a batch as one offset there.
        .set("linger.ms", "0")
        .set("batch.num.messages", "1");
    for (key, value) in &config.kafka {
        client.set(key, value);
    }
    client.create().context("creating the Kafka state producer")
}

/// A topic this host uses: its name, partition count and topic-level settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub settings: Vec<(&'static str, String)>,
}

impl TopicSpec {
    fn new(name: &str, partitions: i32) -> TopicSpec {
        TopicSpec { name: name.to_owned(), partitions, settings: Vec::new() }
    }

    fn set(mut self, key: &'static str, value: impl Into<String>) -> TopicSpec {
        self.settings.push((key, value.into()));
        self
    }
}

/// Every topic `config` makes this host read or write: the one list that topic creation
/// (here) and the demo's in-process cluster both take.
pub fn topics(config: &HostConfig) -> Vec<TopicSpec> {
    let retention = (config.retention_hours * 3_600_000).to_string();
    let stream = |name: &str| TopicSpec::new(name, config.partitions).set("retention.ms", &retention);
    let mut topics = vec![
        stream(&config.metrics_topic),
        stream(&config.anomalies_topic),
        stream(&config.dlq_topic),
        // The latest state of each incident, by id: compaction keeps it and drops the rest.
        TopicSpec::new(&config.incidents_topic, config.partitions).set("cleanup.policy", "compact"),
        // Training data: kept for good.
        TopicSpec::new(&config.feedback_topic, 1).set("retention.ms", "-1"),
        // Acknowledgements: the latest of each incident's.
        TopicSpec::new(&config.acks_topic, 1).set("cleanup.policy", "compact"),
        // The self-healing audit trail: kept for good, every change of every action.
        TopicSpec::new(&config.actions_topic, 1).set("retention.ms", "-1"),
        // One compacted record per partition, possibly large (a partition's detector state).
        // Hourly segments, so that compaction (which never touches the active segment) keeps
        // the topic near one record per partition rather than a week of snapshots.
        TopicSpec::new(&config.state_topic, 1)
            .set("cleanup.policy", "compact")
            .set("max.message.bytes", "67108864")
            .set("segment.ms", "3600000"),
    ];
    if config.runs_sites() {
        // Router incidents by site: a stream, kept like the metrics.
        topics.push(stream(&config.site_topic));
        // The latest state of each site incident, by id.
        topics.push(TopicSpec::new(&config.site_incidents_topic, config.partitions).set("cleanup.policy", "compact"));
    }
    topics
}

/// Creates the topics this host uses ([`topics`]) if they are missing.
pub fn ensure_topics(config: &HostConfig) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(config, &[]).create().context("creating the admin client")?;
    let specs = topics(config);
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            let topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(config.replication));
            spec.settings.iter().fold(topic, |topic, (key, value)| topic.set(key, value))
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics(&topics, &options)).context("creating topics")?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// What to commit for a partition, under either guarantee: the offset of the state last
/// saved, so that the next owner restores that state and reads on from where it was taken,
/// and (in the commit's metadata) how far outputs were delivered, so that it delivers nothing
/// twice. At-least-once commits it from the consumer; exactly-once in each transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitPoint {
    /// The offset the saved state continues from (the committed consumer offset).
    pub offset: i64,
    /// The first offset whose outputs have not been delivered.
    pub delivered: i64,
}

/// Leads the commit metadata that carries [`CommitPoint::delivered`].
const DELIVERED_METADATA: &str = "routewatch:delivered=";

impl CommitPoint {
    /// The commit's metadata.
    pub fn metadata(&self) -> String {
        format!("{DELIVERED_METADATA}{}", self.delivered)
    }

    /// The delivered offset a commit's metadata carries, if it is ours.
    pub fn delivered_from(metadata: &str) -> Option<i64> {
        metadata.strip_prefix(DELIVERED_METADATA)?.parse().ok()
    }
}

/// Where an exactly-once partition's transactions also write their commit point: a record in
/// the (compacted) state topic, under the partition's own key, read back with its state
/// ([`crate::kafka::StateStore::load`]), and committed or aborted with the outputs it speaks
/// for. The offset commit's metadata carries the same point, but on Apache Kafka 4.4 with
/// librdkafka the next owner read back the offset of a transactional commit without its
/// metadata (so every output since the restored state was delivered twice): the record does
/// not depend on that.
#[derive(Debug, Clone)]
pub struct DeliveredMarker {
    /// The state topic.
    pub topic: String,
    /// The partition's marker key.
    pub key: Vec<u8>,
}

impl DeliveredMarker {
    /// The marker record of `point`.
    pub fn record(&self, point: CommitPoint) -> Outgoing {
        Outgoing {
            topic: self.topic.clone(),
            key: Some(self.key.clone()),
            payload: Some(point.metadata().into_bytes()),
            headers: None,
        }
    }

    /// The delivered offset a marker record's payload carries.
    pub fn delivered_from(payload: &[u8]) -> Option<i64> {
        CommitPoint::delivered_from(std::str::from_utf8(payload).ok()?)
    }
}

/// Adds a partition's commit point: its offset, with the delivered offset as metadata.
pub fn add_commit_point(list: &mut TopicPartitionList, topic: &str, partition: i32, point: CommitPoint) {
    match list.add_partition_offset(topic, partition, Offset::Offset(point.offset)) {
        Ok(()) => {
            if let Some(mut element) = list.find_partition(topic, partition) {
                element.set_metadata(point.metadata());
            }
        }
        Err(err) => tracing::warn!(partition, offset = point.offset, "committing: {err}"),
    }
}

/// A record to produce; no payload is a tombstone.
pub struct Outgoing {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<OwnedHeaders>,
}

/// Produces every record and returns once the broker has acknowledged all of them. The
/// producer retries transient failures itself; a record it gives up on is sent again after a
/// pause, so the caller may count on delivery (possibly twice: at-least-once).
pub fn deliver(producer: &FutureProducer, records: Vec<Outgoing>) {
    let mut pending = records;
    let mut backoff = Duration::from_millis(100);
    while !pending.is_empty() {
        let deliveries: Vec<DeliveryFuture> = pending
            .iter()
            .map(|r| send(producer, r, None).expect("without a deadline, sending waits until the record is queued"))
            .collect();
        let results = futures::executor::block_on(futures::future::join_all(deliveries));
        let mut failed = Vec::new();
        for (record, result) in pending.into_iter().zip(results) {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((err, _))) => {
                    tracing::warn!(topic = %record.topic, "delivery failed, sending again: {err}");
                    failed.push(record);
                }
                Err(_) => failed.push(record),
            }
        }
        if !failed.is_empty() {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        pending = failed;
    }
}

/// The consumer group's metadata (member and generation) as of the last rebalance, which a
/// transaction's offsets carry so that the group coordinator refuses them from a host that
/// has lost the partition (KIP-447).
pub type GroupMetadata = Arc<Mutex<Option<Arc<ConsumerGroupMetadata>>>>;

/// One partition's transactional producer (exactly-once). Its `transactional.id` is
/// `GROUP-TOPIC-PARTITION`, so the partition's next owner fences this one and aborts whatever
/// transaction it left open.
pub struct Transactional {
    producer: FutureProducer,
    group: GroupMetadata,
    topic: String,
    partition: i32,
    /// Where each transaction also writes its commit point (see [`DeliveredMarker`]).
    marker: DeliveredMarker,
    /// Set when the partition is being revoked: a transaction that keeps failing is then
    /// given up (left to the next owner) instead of holding up the rebalance.
    revoked: Arc<AtomicBool>,
}

/// A transaction this producer can never commit: another producer took over its
/// `transactional.id` (the partition has a new owner), or the broker ended it.
#[derive(Debug, thiserror::Error)]
#[error("the transactional producer of partition {partition} is fenced: {reason}")]
pub struct Fenced {
    pub partition: i32,
    pub reason: String,
}

/// How a transaction step failed.
enum StepError {
    /// Abort the transaction and run it again.
    Abort(String),
    Fatal(String),
}

/// How long one transaction call may block before it is tried again.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Transactional {
    /// Creates the producer and fences its predecessors, waiting out broker outages.
    pub fn start(
        config: &HostConfig,
        partition: i32,
        group: GroupMetadata,
        marker: DeliveredMarker,
        revoked: Arc<AtomicBool>,
    ) -> Result<Transactional, Fenced> {
        let id = format!("{}-{}-{partition}", config.group_id, config.metrics_topic);
        let fenced = |reason: String| Fenced { partition, reason };
        // A transaction left open by a crash is aborted at once by the partition's next owner,
        // so its timeout can be long: a broker outage shorter than that keeps the transaction.
        // librdkafka wants a record's timeout within it; a record that times out aborts the
        // transaction, which is then sent again.
        let producer: FutureProducer = client_config(config, &PRODUCER)
            .set("transactional.id", &id)
            .set("transaction.timeout.ms", "300000")
            .set("message.timeout.ms", "300000")
            .create()
            .map_err(|e| fenced(format!("creating the producer: {e}")))?;
        let txn = Transactional { producer, group, topic: config.metrics_topic.clone(), partition, marker, revoked };
        txn.step("init_transactions", || txn.producer.init_transactions(TXN_CALL_TIMEOUT)).map_err(|e| match e {
            StepError::Abort(reason) | StepError::Fatal(reason) => fenced(reason),
        })?;
        tracing::info!(partition, transactional_id = %id, "transactional producer ready");
        Ok(txn)
    }

    /// Sends `records` and commits `point` as the partition's consumer offset (with how far
    /// outputs were delivered in its metadata), in one transaction. Retries through outages
    /// and aborts until it commits.
    pub fn commit(&self, records: &[Outgoing], point: CommitPoint) -> Result<(), Fenced> {
        let fenced = |reason: String| Fenced { partition: self.partition, reason };
        loop {
            match self.try_commit(records, point) {
                Ok(()) => return Ok(()),
                Err(StepError::Fatal(reason)) => return Err(fenced(reason)),
                Err(StepError::Abort(reason)) => {
                    tracing::warn!(partition = self.partition, "transaction aborted, running it again: {reason}");
                    match self.step("abort_transaction", || self.producer.abort_transaction(TXN_CALL_TIMEOUT)) {
                        Ok(()) | Err(StepError::Abort(_)) => {}
                        Err(StepError::Fatal(reason)) => return Err(fenced(reason)),
                    }
                    if self.revoked.load(Ordering::Acquire) {
                        return Err(fenced(format!(
                            "the partition was revoked while its transaction failed: {reason}"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn try_commit(&self, records: &[Outgoing], point: CommitPoint) -> Result<(), StepError> {
        self.step("begin_transaction", || self.producer.begin_transaction())?;
        // Delivery is confirmed by the commit, which flushes and fails if any record failed.
        for record in records.iter().chain([&self.marker.record(point)]) {
            drop(
                send(&self.producer, record, None)
                    .expect("without a deadline, sending waits until the record is queued"),
            );
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&self.topic, self.partition, Offset::Offset(point.offset))
            .map_err(|e| StepError::Fatal(e.to_string()))?;
        if let Some(mut element) = offsets.find_partition(&self.topic, self.partition) {
            element.set_metadata(point.metadata());
        }
        let group = self.group.lock().expect("group metadata lock").clone();
        let group = group.ok_or_else(|| StepError::Abort("no consumer group metadata yet".into()))?;
        self.step("send_offsets_to_transaction", || {
            self.producer.send_offsets_to_transaction(&offsets, &group, TXN_CALL_TIMEOUT)
        })?;
        self.step("commit_transaction", || self.producer.commit_transaction(TXN_CALL_TIMEOUT))
    }

    /// Runs one transaction call, again while its error is retriable (a broker away).
    fn step(&self, what: &str, call: impl Fn() -> KafkaResult<()>) -> Result<(), StepError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match call() {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(err)) if err.is_fatal() => {
                    return Err(StepError::Fatal(format!("{what}: {err}")));
                }
                Err(KafkaError::Transaction(err)) if err.txn_requires_abort() => {
                    return Err(StepError::Abort(format!("{what}: {err}")));
                }
                Err(KafkaError::Transaction(err)) if err.is_retriable() => {
                    if self.revoked.load(Ordering::Acquire) {
                        return Err(StepError::Fatal(format!("{what}: {err}, and the partition was revoked")));
                    }
                    tracing::warn!(partition = self.partition, "{what}: {err}; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(err) => return Err(StepError::Abort(format!("{what}: {err}"))),
            }
        }
    }
}

/// Produces every record once and waits for the broker's answers, giving up on the first
/// failure or when `limit` has passed (the producer's own delivery timeout must not be longer).
pub fn deliver_within(producer: &FutureProducer, records: Vec<Outgoing>, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut deliveries = Vec::with_capacity(records.len());
    for record in &records {
        deliveries.push(send(producer, record, Some(deadline))?);
    }
    for (record, result) in records.iter().zip(futures::executor::block_on(futures::future::join_all(deliveries))) {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err((err, _))) => return Err(format!("{}: {err}", record.topic)),
            Err(_) => return Err(format!("{}: the producer went away", record.topic)),
        }
    }
    Ok(())
}

/// Queues one record, waiting while the local queue is full: for ever without a deadline,
/// else until the deadline.
fn send(producer: &FutureProducer, record: &Outgoing, deadline: Option<Instant>) -> Result<DeliveryFuture, String> {
    loop {
        let mut future: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic);
        if let Some(payload) = &record.payload {
            future = future.payload(payload);
        }
        if let Some(key) = &record.key {
            future = future.key(key);
        }
        if let Some(headers) = &record.headers {
            future = future.headers(headers.clone());
        }
        let pause = match producer.send_result(future) {
            Ok(delivery) => return Ok(delivery),
            // The broker is slow or away: let librdkafka drain its queue.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Duration::from_millis(5),
            Err((err, _)) if deadline.is_some() => return Err(format!("producing to {}: {err}", record.topic)),
            Err((err, _)) => {
                tracing::error!(topic = %record.topic, "producing: {err}; retrying");
                Duration::from_millis(100)
            }
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(format!("producing to {}: the local queue stayed full", record.topic));
        }
        std::thread::sleep(pause);
    }
}

/// Where a partition's outputs go to Kafka: the shared producer, or (exactly-once) the
/// partition's own transactional producer, which the Kafka sink and state saves share.
pub struct PartitionOutput {
    partition: i32,
    producer: FutureProducer,
    txn: Option<Transactional>,
    /// Exactly-once: the producer was fenced (the partition has another owner), so this
    /// worker produces nothing more and waits to be stopped.
    fenced: AtomicBool,
    /// The offset the partition's last saved state continues from (the worker's: the first
    /// offset taken while no state was restored or saved; -1 before either). Exactly-once
    /// transactions commit it as the consumer offset (see [`CommitPoint`]).
    checkpoint: Arc<AtomicI64>,
}

impl PartitionOutput {
    /// The output of `partition`: through `producer`, or (exactly-once) through the
    /// partition's transactional producer, if it started (else it is fenced from the outset).
    pub fn new(
        partition: i32,
        producer: FutureProducer,
        txn: Option<Result<Transactional, Fenced>>,
        checkpoint: Arc<AtomicI64>,
    ) -> PartitionOutput {
        let output = PartitionOutput { partition, producer, txn: None, fenced: AtomicBool::new(false), checkpoint };
        match txn {
            Some(Ok(txn)) => PartitionOutput { txn: Some(txn), ..output },
            Some(Err(err)) => {
                output.fence(&err);
                output
            }
            None => output,
        }
    }

    /// Whether nothing more may be produced for this partition.
    pub fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    fn fence(&self, err: &Fenced) {
        tracing::error!(partition = self.partition, "{err}; the partition's records are left to its next owner");
        self.fenced.store(true, Ordering::Release);
    }

    /// Whether outputs go in transactions.
    pub fn transactional(&self) -> bool {
        self.txn.is_some()
    }

    /// Sends records and waits for the broker to acknowledge them. Exactly-once also commits,
    /// in the same transaction, the commit point: the offset of the last saved state, with the
    /// outputs delivered up to `next` (before any state is saved, `next` itself, so a crash
    /// then costs the detectors a warm-up, never a duplicate). False when fenced.
    pub fn deliver(&self, records: Vec<Outgoing>, next: i64) -> bool {
        if self.fenced() {
            return false;
        }
        let Some(txn) = &self.txn else {
            deliver(&self.producer, records);
            return true;
        };
        let checkpoint = self.checkpoint.load(Ordering::Acquire);
        let point = CommitPoint { offset: if checkpoint >= 0 { checkpoint.min(next) } else { next }, delivered: next };
        match txn.commit(&records, point) {
            Ok(()) => true,
            Err(err) => {
                self.fence(&err);
                false
            }
        }
    }
}
