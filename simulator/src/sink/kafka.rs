//! The Kafka producer: records to `router-metrics` keyed by router id, ground truth to
//! `router-faults` keyed by fault id (so a compacted topic keeps each fault's final state).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tracing::{info, warn};

use super::{Sink, SinkError};
use crate::actions::ActionNotice;
use crate::changes::ChangeNotice;
use crate::consequences::ConsequenceNotice;
use crate::encode::EncodedBatch;
use crate::faults::FaultNotice;
use crate::metrics::SimMetrics;

/// Producer settings.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    pub brokers: String,
    pub metrics_topic: String,
    pub faults_topic: String,
    /// librdkafka `compression.type`: none, lz4, zstd, snappy or gzip.
    pub compression: String,
    /// librdkafka `linger.ms`: how long to wait to fill a batch.
    pub linger_ms: u32,
    /// When the producer queue is full: wait for room (true, fast mode) or drop the record
    /// after `drop_after` and count it (false, real time, so the clock is never held up).
    pub block_when_full: bool,
    pub drop_after: Duration,
    /// Extra librdkafka properties, `key=value`.
    pub extra: Vec<(String, String)>,
}

impl KafkaOptions {
    pub fn new(brokers: impl Into<String>) -> KafkaOptions {
        KafkaOptions {
            brokers: brokers.into(),
            metrics_topic: "router-metrics".into(),
            faults_topic: "router-faults".into(),
            compression: "lz4".into(),
            linger_ms: 20,
            block_when_full: true,
            drop_after: Duration::from_millis(500),
            extra: Vec::new(),
        }
    }
}

/// Counts deliveries; logs the first failure and then one in 10,000 so an outage is visible
/// without flooding the log.
struct Deliveries {
    metrics: SimMetrics,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.metrics.delivered.inc();
            }
            Err((err, _)) => {
                let n = self.metrics.delivery_errors.inc();
                if n.is_multiple_of(10_000) {
                    warn!(error = %err, failed_so_far = n + 1, "kafka delivery failed");
                }
            }
        }
    }
}

pub struct KafkaSink {
    producer: BaseProducer<Deliveries>,
    opts: KafkaOptions,
    metrics: SimMetrics,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl KafkaSink {
    pub fn new(opts: KafkaOptions, metrics: SimMetrics) -> Result<KafkaSink, SinkError> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &opts.brokers)
            .set("compression.type", &opts.compression)
            .set("linger.ms", opts.linger_ms.to_string())
            // Large batches and a deep queue: fast mode produces a whole tick at once.
            .set("batch.size", "1000000")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.timeout.ms", "120000");
        for (k, v) in &opts.extra {
            cfg.set(k, v);
        }
        let producer = cfg.create_with_context(Deliveries { metrics: metrics.clone() })?;
        Ok(KafkaSink { producer, opts, metrics })
    }

    /// Sends one message, waiting for room in the queue if it is full (or dropping it, when
    /// configured not to block).
    fn send(&self, topic: &str, key: &[u8], payload: &[u8], headers: Option<OwnedHeaders>) -> Result<(), SinkError> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        let started = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if !self.opts.block_when_full && started.elapsed() >= self.opts.drop_after {
                        self.metrics.dropped.inc();
                        return Ok(());
                    }
                    // Serving delivery reports is what frees queue space.
                    self.producer.poll(Duration::from_millis(5));
                    record = back;
                }
                Err((err, _)) => return Err(err.into()),
            }
        }
    }
}

impl KafkaSink {
    /// A ground-truth message that is not a fault: on the faults topic, keyed by its id, with
    /// `phase` and `type` headers (the payload carries `type` too).
    fn send_typed(&self, id: &str, payload: &[u8], phase: &str, kind: &str) -> Result<(), SinkError> {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "phase", value: Some(phase) })
            .insert(Header { key: "type", value: Some(kind) });
        self.send(&self.opts.faults_topic, id.as_bytes(), payload, Some(headers))
    }
}

impl Sink for KafkaSink {
    fn records(&mut self, batch: &EncodedBatch) -> Result<(), SinkError> {
        for (i, (key, payload)) in batch.iter().enumerate() {
            self.send(&self.opts.metrics_topic, key, payload, None)?;
            // Serve delivery reports now and then so the queue drains without a second thread.
            if i % 4096 == 4095 {
                self.producer.poll(Duration::ZERO);
            }
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn faults(&mut self, notices: &[FaultNotice]) -> Result<(), SinkError> {
        for notice in notices {
            let event = &notice.event;
            let payload = serde_json::to_vec(event).expect("a fault event always serialises");
            let headers = OwnedHeaders::new().insert(Header { key: "phase", value: Some(notice.phase()) });
            self.send(&self.opts.faults_topic, event.id.as_bytes(), &payload, Some(headers))?;
        }
        Ok(())
    }

    /// Planned changes share the faults topic, keyed by change id; the payload's `type` (and
    /// the `type` header) tell them from faults.
    fn changes(&mut self, notices: &[ChangeNotice]) -> Result<(), SinkError> {
        for notice in notices {
            let event = &notice.event;
            let payload = serde_json::to_vec(event).expect("a planned change always serialises");
            let phase = if notice.ended { "ended" } else { "scheduled" };
            self.send_typed(&event.id, &payload, phase, "planned-change")?;
        }
        Ok(())
    }

    /// Consequences share the faults topic, keyed by consequence id, `type` `consequence`.
    fn consequences(&mut self, notices: &[ConsequenceNotice]) -> Result<(), SinkError> {
        for notice in notices {
            let payload = serde_json::to_vec(&notice.event).expect("a consequence always serialises");
            self.send_typed(&notice.event.id, &payload, notice.phase(), "consequence")?;
        }
        Ok(())
    }

    /// Actions share the faults topic, keyed by action id, `type` `action`; published when
    /// requested and again when completed, with the outcome.
    fn actions(&mut self, notices: &[ActionNotice]) -> Result<(), SinkError> {
        for notice in notices {
            let payload = serde_json::to_vec(&notice.record).expect("an action always serialises");
            self.send_typed(&notice.record.id, &payload, notice.phase(), "action")?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.producer.flush(Duration::from_secs(60))?;
        let left = self.producer.in_flight_count();
        if left > 0 {
            return Err(SinkError::FlushTimeout(left as usize));
        }
        Ok(())
    }
}

/// Creates the topics if they do not exist yet (an existing topic is left as it is).
pub async fn ensure_topics(brokers: &str, topics: &[(&str, i32)]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(name) => info!(topic = %name, "created topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                info!(topic = %name, "topic exists")
            }
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| warn!(topic = %name, "cannot create topic"));
            }
        }
    }
    Ok(())
}
