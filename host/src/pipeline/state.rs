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
const STATE_VERSION: u32 = 1;

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
        format!("{}/{}/{partition}", self.config.group_id, self.config.metrics_topic)
    }

    /// Writes a partition's state and waits for the broker to acknowledge it.
    pub fn save(&self, partition: i32, state: &PartitionState) -> anyhow::Result<usize> {
        let bytes = postcard::to_stdvec(state).context("encoding partition state")?;
        let size = bytes.len();
        let record = kafka::Outgoing {
            topic: self.config.state_topic.clone(),
            key: Some(self.key(partition).into_bytes()),
            payload: bytes,
            headers: None,
        };
        kafka::deliver(&self.producer, vec![record]);
        Ok(size)
    }

    /// The latest state of each of `partitions` that has one: reads the state topic to its end.
    pub fn load(&self, partitions: &[i32]) -> anyhow::Result<HashMap<i32, PartitionState>> {
        let wanted: HashMap<String, i32> = partitions.iter().map(|&p| (self.key(p), p)).collect();
        let group = format!("{}-state-reader", self.config.group_id);
        let settings =
            [("group.id", group.as_str()), ("enable.auto.commit", "false"), ("fetch.message.max.bytes", "67108864")];
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
            let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
            let message = message.with_context(|| format!("reading {topic}"))?;
            let partition = message.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| wanted.get(k));
            if let (Some(&partition), Some(payload)) = (partition, message.payload()) {
                match postcard::from_bytes::<PartitionState>(payload) {
                    Ok(state) if state.version == STATE_VERSION => {
                        found.insert(partition, state);
                    }
                    Ok(state) => tracing::warn!(partition, version = state.version, "ignoring state of another layout"),
                    Err(err) => tracing::warn!(partition, "ignoring unreadable state: {err}"),
                }
            }
            if message.offset() + 1 >= high {
                return Ok(found);
            }
        }
    }
}
