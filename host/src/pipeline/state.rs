//! Detector state per partition, kept in a compacted topic so it follows the partition to
//! whichever host owns it next.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::config::PipelineConfig;
use super::kafka;

/// Layout version of [`PartitionState`]; a record of another version is ignored with a warning.
pub const STATE_VERSION: u32 = 1;

/// A router as the partition's table knows it; its position is its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterInfo {
    pub name: String,
    pub site: String,
    pub role: String,
}

/// One plugin's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginState {
    pub name: String,
    pub version: String,
    pub snapshot: Vec<u8>,
}

/// Everything needed to continue a partition elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    pub version: u32,
    /// The first offset the state has not seen.
    pub next_offset: i64,
    pub routers: Vec<RouterInfo>,
    pub plugins: Vec<PluginState>,
}

impl PartitionState {
    pub fn new(next_offset: i64, routers: Vec<RouterInfo>, plugins: Vec<PluginState>) -> PartitionState {
        PartitionState { version: STATE_VERSION, next_offset, routers, plugins }
    }
}

/// The state topic's key of a partition's state: `GROUP/TOPIC/PARTITION`. A tombstone (a
/// record with this key and no value) makes the partition's next owner start fresh.
pub fn state_key(group_id: &str, metrics_topic: &str, partition: i32) -> String {
    format!("{group_id}/{metrics_topic}/{partition}")
}

/// Reads and writes partition states.
pub struct StateStore {
    config: PipelineConfig,
    producer: FutureProducer,
}

impl StateStore {
    pub fn new(config: &PipelineConfig, producer: FutureProducer) -> StateStore {
        StateStore { config: config.clone(), producer }
    }

    fn key(&self, partition: i32) -> String {
        state_key(&self.config.group_id, &self.config.metrics_topic, partition)
    }

    /// Writes a partition's state and waits for the broker to acknowledge it.
    pub fn save(&self, partition: i32, state: &PartitionState) -> anyhow::Result<usize> {
        let record = self.record(partition, state)?;
        let size = record.payload.len();
        kafka::deliver(&self.producer, vec![record]);
        Ok(size)
    }

    /// A partition's state as the record [`StateStore::save`] writes (exactly-once workers
    /// send it in their own transaction).
    pub fn record(&self, partition: i32, state: &PartitionState) -> anyhow::Result<kafka::Outgoing> {
        let bytes = postcard::to_stdvec(state).context("encoding partition state")?;
        Ok(kafka::Outgoing {
            topic: self.config.state_topic.clone(),
            key: Some(self.key(partition).into_bytes()),
            payload: bytes,
            headers: None,
        })
    }

    /// The latest state of each of `partitions` that has one: reads the state topic to its end.
    /// The newest record of a key decides, whatever compaction has removed before it: a
    /// tombstone (no payload) or a record of another layout means no state (a warm-up, never a
    /// stale state from before it).
    pub fn load(&self, partitions: &[i32]) -> anyhow::Result<HashMap<i32, PartitionState>> {
        let wanted: HashMap<String, i32> = partitions.iter().map(|&p| (self.key(p), p)).collect();
        let group = format!("{}-state-reader", self.config.group_id);
        let settings = [
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("fetch.message.max.bytes", "67108864"),
        ];
        let consumer: BaseConsumer =
            kafka::client_config(&self.config, &settings).create().context("creating the state reader")?;
        let topic = &self.config.state_topic;
        let (low, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(30))
            .with_context(|| format!("reading the extent of {topic}"))?;
        let mut found = HashMap::new();
        if high <= low {
            return Ok(found);
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            anyhow::ensure!(Instant::now() < deadline, "timed out reading {topic} up to offset {high}");
            // The end is where the reader's position reaches the high watermark, not the last
            // message: transaction markers (exactly-once) take offsets no message carries.
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                if position(&consumer, topic)? >= high {
                    return Ok(found);
                }
                continue;
            };
            let message = message.with_context(|| format!("reading {topic}"))?;
            let last = message.offset() + 1 >= high;
            let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
            if let Some(&partition) = key.and_then(|k| wanted.get(k)) {
                match message.payload().map(postcard::from_bytes::<PartitionState>) {
                    Some(Ok(state)) if state.version == STATE_VERSION => {
                        found.insert(partition, state);
                    }
                    None => {
                        tracing::info!(partition, offset = message.offset(), "state deleted by a tombstone");
                        found.remove(&partition);
                    }
                    Some(Ok(state)) => {
                        tracing::warn!(partition, version = state.version, "ignoring state of another layout");
                        found.remove(&partition);
                    }
                    Some(Err(err)) => {
                        tracing::warn!(partition, "ignoring unreadable state: {err}");
                        found.remove(&partition);
                    }
                }
            }
            if last {
                return Ok(found);
            }
        }
    }
}

/// The reader's next offset in partition 0 of `topic` (0 before it has one).
fn position(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<i64> {
    let list = consumer.position().with_context(|| format!("reading the position in {topic}"))?;
    Ok(list.find_partition(topic, 0).and_then(|e| e.offset().to_raw()).unwrap_or(0))
}
