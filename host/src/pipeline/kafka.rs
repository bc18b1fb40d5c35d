//! Kafka plumbing: client settings, topic creation, producing with acknowledgement.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::config::PipelineConfig;

/// A client's settings: the brokers, then the client's own `settings`, then the operator's
/// `kafka` table from the configuration, which has the last word.
pub fn client_config(config: &PipelineConfig, settings: &[(&str, &str)]) -> ClientConfig {
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

/// The producer for anomalies, dead letters and state: idempotent, acknowledged by all
/// replicas, and retrying for ever, so a broker outage delays output but never drops it.
pub fn producer(config: &PipelineConfig) -> anyhow::Result<FutureProducer> {
    client_config(
        config,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.timeout.ms", "0"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
            ("message.max.bytes", "67108864"),
        ],
    )
    .create()
    .context("creating the Kafka producer")
}

/// The producer for partition state: like [`producer`], but a delivery that the broker has not
/// acknowledged within `timeout` fails instead of waiting for ever.
pub fn state_producer(config: &PipelineConfig, timeout: Duration) -> anyhow::Result<FutureProducer> {
    let timeout = timeout.as_millis().to_string();
    client_config(
        config,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.timeout.ms", timeout.as_str()),
            // One record per batch: a state reader stops at the topic's high watermark, and
            // some Kafka-compatible brokers (Tansu) count a batch as one offset there.
            ("linger.ms", "0"),
            ("batch.num.messages", "1"),
            ("compression.type", "lz4"),
            ("message.max.bytes", "67108864"),
        ],
    )
    .create()
    .context("creating the Kafka state producer")
}

/// Creates the topics this host uses if they are missing.
pub fn ensure_topics(config: &PipelineConfig) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(config, &[]).create().context("creating the admin client")?;
    let retention = (config.retention_hours * 3_600_000).to_string();
    let replication = || TopicReplication::Fixed(config.replication);
    let topics = [
        NewTopic::new(&config.metrics_topic, config.partitions, replication()).set("retention.ms", &retention),
        NewTopic::new(&config.anomalies_topic, config.partitions, replication()).set("retention.ms", &retention),
        NewTopic::new(&config.dlq_topic, config.partitions, replication()).set("retention.ms", &retention),
        // One compacted record per partition, possibly large (a partition's detector state).
        NewTopic::new(&config.state_topic, 1, replication())
            .set("cleanup.policy", "compact")
            .set("max.message.bytes", "67108864"),
    ];
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
