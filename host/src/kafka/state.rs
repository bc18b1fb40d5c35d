//! Detector state per partition, kept in a compacted topic so it follows the partition to
//! whichever host owns it next.
//!
//! A partition's state can be large (the sum of its plugins' snapshots, each capped by
//! `max_snapshot_mib`), larger than one Kafka record may be. It is written as chunks of at most
//! [`CHUNK_BYTES`], each under its own key (`GROUP/TOPIC/PARTITION#SLOT.INDEX`), followed by a
//! manifest under the partition's key (`GROUP/TOPIC/PARTITION`) that names the slot, the
//! generation and the number of chunks. Saves alternate between two slots, so the chunks of
//! the last complete state are never overwritten by the next save: compaction keeps the newest
//! record of every key, a reader takes the newest manifest and the chunks of its generation,
//! and a save that died half-way leaves the previous state readable. Chunk keys a smaller state
//! no longer uses get tombstones.
//!
//! Saving waits for the broker for at most [`SAVE_DEADLINE`]: a broker that refuses or cannot
//! take the state delays nothing else, and the failure is counted and shown in `/readyz`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use routewatch_engine::state::{PartitionState, PluginState, RouterInfo, STATE_VERSION};

use crate::broker;
use crate::config::HostConfig;

/// The first layout: one record per partition holding a version-1 [`PartitionState`]. Still
/// read, so that an upgrade keeps its state.
pub const LEGACY_STATE_VERSION: u32 = 1;
/// Leads a manifest's payload; a version-1 record starts with the byte 1 instead.
const MANIFEST_MAGIC: &[u8; 4] = b"RWS2";
/// Largest chunk of a partition's state: under every broker's default record limit.
pub const CHUNK_BYTES: usize = 512 << 10;
/// Longest a save waits for the broker before it counts as failed.
pub const SAVE_DEADLINE: Duration = Duration::from_secs(10);

/// The record under a partition's key: which chunks make its newest state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    /// Which of the two chunk slots holds this state.
    slot: u8,
    generation: u64,
    chunks: u32,
    bytes: u64,
    sha256: [u8; 32],
}

/// One chunk of one generation of a partition's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chunk {
    generation: u64,
    index: u32,
    bytes: Vec<u8>,
}

/// Why a save failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("encoding partition state: {0}")]
    Encode(String),
    #[error("the broker did not take the state within {deadline:?}: {reason}")]
    Delivery { deadline: Duration, reason: String },
}

/// The state topic's key of a partition's manifest (or version-1 state): `GROUP/TOPIC/PARTITION`.
/// A tombstone (a record with this key and no value) makes the partition's next owner start
/// fresh.
pub fn state_key(group_id: &str, metrics_topic: &str, partition: i32) -> String {
    format!("{group_id}/{metrics_topic}/{partition}")
}

/// Reads and writes partition states.
pub struct StateStore {
    config: HostConfig,
    /// The topic whose partitions' states this store keeps (part of every key).
    topic: String,
    producer: FutureProducer,
    /// Per partition: the slot of the last complete state, and the chunks each slot last held
    /// (so that a smaller state can tombstone the rest).
    slots: Mutex<HashMap<i32, Slots>>,
}

impl StateStore {
    /// A store writing with its own producer, whose deliveries time out after
    /// [`SAVE_DEADLINE`] (the output producer waits for ever, by design).
    pub fn new(config: &HostConfig) -> anyhow::Result<StateStore> {
        StateStore::for_topic(config, &config.metrics_topic)
    }

    /// A store of the states of another topic's partitions (the site stage's, of the site
    /// topic), in the same state topic under keys of their own.
    pub fn for_topic(config: &HostConfig, topic: &str) -> anyhow::Result<StateStore> {
        let producer = broker::state_producer(config, SAVE_DEADLINE)?;
        Ok(StateStore { config: config.clone(), topic: topic.to_owned(), producer, slots: Mutex::new(HashMap::new()) })
    }

    fn key(&self, partition: i32) -> String {
        state_key(&self.config.group_id, &self.topic, partition)
    }

    /// Where exactly-once transactions write the partition's commit point.
    pub fn delivered_marker(&self, partition: i32) -> broker::DeliveredMarker {
        broker::DeliveredMarker {
            topic: self.config.state_topic.clone(),
            key: marker_key(&self.key(partition)).into_bytes(),
        }
    }

    fn chunk_key(&self, partition: i32, slot: u8, index: u32) -> String {
        chunk_key(&self.key(partition), slot, index)
    }

    /// Encodes a partition's state as the records of one save: its chunks, into the slot the
    /// last complete state is not in, tombstones for that slot's unused chunks, and the
    /// manifest last.
    pub fn prepare(&self, partition: i32, state: &PartitionState) -> Result<StateWrite, SaveError> {
        let bytes = encode(state)?;
        let generation = generation();
        let known = self.slots.lock().expect("state slots lock").get(&partition).copied().unwrap_or_default();
        let slot = known.current.map_or(0, |current| 1 - current);
        let mut records = Vec::new();
        for (index, part) in bytes.chunks(CHUNK_BYTES).enumerate() {
            let chunk = Chunk { generation, index: index as u32, bytes: part.to_vec() };
            records.push(self.record(self.chunk_key(partition, slot, index as u32), Some(encode(&chunk)?)));
        }
        let chunks = records.len() as u32;
        for stale in chunks..known.chunks[usize::from(slot)] {
            records.push(self.record(self.chunk_key(partition, slot, stale), None));
        }
        let manifest =
            Manifest { slot, generation, chunks, bytes: bytes.len() as u64, sha256: Sha256::digest(&bytes).into() };
        let mut payload = MANIFEST_MAGIC.to_vec();
        payload.extend(encode(&manifest)?);
        records.push(self.record(self.key(partition), Some(payload)));
        Ok(StateWrite { partition, slot, chunks, bytes: bytes.len(), records })
    }

    /// Notes that a prepared save is now the partition's complete state.
    pub fn committed(&self, write: &StateWrite) {
        let mut slots = self.slots.lock().expect("state slots lock");
        let known = slots.entry(write.partition).or_default();
        known.current = Some(write.slot);
        known.chunks[usize::from(write.slot)] = write.chunks;
    }

    /// Writes a partition's state, chunks first and manifest last, and waits (at most
    /// [`SAVE_DEADLINE`] each) for the broker to acknowledge all of it. Returns its size.
    pub fn save(&self, partition: i32, state: &PartitionState) -> Result<usize, SaveError> {
        let mut write = self.prepare(partition, state)?;
        // The manifest goes last and alone: a reader that sees it has seen its chunks.
        let mut chunks = write.take_records();
        let manifest = chunks.pop().expect("a save ends with its manifest");
        broker::deliver_within(&self.producer, chunks, SAVE_DEADLINE)
            .and_then(|()| broker::deliver_within(&self.producer, vec![manifest], SAVE_DEADLINE))
            .map_err(|reason| SaveError::Delivery { deadline: SAVE_DEADLINE, reason })?;
        self.committed(&write);
        Ok(write.bytes)
    }

    fn record(&self, key: String, payload: Option<Vec<u8>>) -> broker::Outgoing {
        broker::Outgoing { topic: self.config.state_topic.clone(), key: Some(key.into_bytes()), payload, headers: None }
    }

    /// The latest state of each of `partitions` that has one, and the delivered offset of the
    /// last exactly-once transaction of each: reads the state topic to its end. The newest
    /// record of a key decides, whatever compaction has removed before it: a tombstone (no
    /// payload) or a record of another layout means no state (a warm-up, never a stale state
    /// from before it).
    ///
    /// Under exactly-once, call it after the partitions' transactional producers started: a
    /// transaction a crashed owner left open holds `read_committed` readers back until the
    /// next owner's producer aborts it.
    pub fn load(&self, partitions: &[i32]) -> anyhow::Result<Loaded> {
        let keys: HashMap<String, i32> = partitions.iter().map(|&p| (self.key(p), p)).collect();
        let group = format!("{}-state-reader", self.config.group_id);
        let settings = [
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("fetch.message.max.bytes", "67108864"),
        ];
        let consumer: BaseConsumer =
            broker::client_config(&self.config, &settings).create().context("creating the state reader")?;
        let topic = &self.config.state_topic;
        let (low, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(30))
            .with_context(|| format!("reading the extent of {topic}"))?;
        let mut reading = Reading::default();
        if high > low {
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
            consumer.assign(&assignment)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                anyhow::ensure!(Instant::now() < deadline, "timed out reading {topic} up to offset {high}");
                // The end is where the reader's position reaches the high watermark, not the
                // last message: transaction markers (exactly-once) take offsets no message carries.
                let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                    if position(&consumer, topic)? >= high {
                        break;
                    }
                    continue;
                };
                let message = message.with_context(|| format!("reading {topic}"))?;
                if let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) {
                    reading.take(&keys, key, message.payload());
                }
                if message.offset() + 1 >= high {
                    break;
                }
            }
        }
        let delivered = std::mem::take(&mut reading.delivered);
        let (states, slots) = reading.finish();
        self.slots.lock().expect("state slots lock").extend(slots);
        Ok(Loaded { states, delivered })
    }
}

/// What [`StateStore::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The latest whole state of each partition that has one.
    pub states: HashMap<i32, PartitionState>,
    /// Per partition, the first offset whose outputs the last exactly-once transaction had
    /// not delivered (see [`broker::DeliveredMarker`]).
    pub delivered: HashMap<i32, i64>,
}

/// The records of one save of a partition's state (see [`StateStore::prepare`]).
pub struct StateWrite {
    partition: i32,
    slot: u8,
    chunks: u32,
    bytes: usize,
    records: Vec<broker::Outgoing>,
}

impl StateWrite {
    /// Size of the encoded state.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The records, for a transaction (exactly-once) that commits them together; call
    /// [`StateStore::committed`] once it has.
    pub fn take_records(&mut self) -> Vec<broker::Outgoing> {
        std::mem::take(&mut self.records)
    }
}

/// The reader's next offset in partition 0 of `topic` (0 before it has one).
fn position(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<i64> {
    let list = consumer.position().with_context(|| format!("reading the position in {topic}"))?;
    Ok(list.find_partition(topic, 0).and_then(|e| e.offset().to_raw()).unwrap_or(0))
}

/// What a store knows of one partition's chunk slots.
#[derive(Debug, Clone, Copy, Default)]
struct Slots {
    /// The slot of the last complete state.
    current: Option<u8>,
    /// How many chunks each slot was last written with.
    chunks: [u32; 2],
}

fn marker_key(partition_key: &str) -> String {
    format!("{partition_key}{MARKER_SUFFIX}")
}

/// Ends the key of a partition's delivered marker.
const MARKER_SUFFIX: &str = "@delivered";

fn chunk_key(partition_key: &str, slot: u8, index: u32) -> String {
    format!("{partition_key}#{slot}.{index}")
}

/// Generations only need to differ between saves of one partition and grow over time.
fn generation() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let previous = LAST.fetch_max(now, Ordering::Relaxed);
    if previous >= now { LAST.fetch_add(1, Ordering::Relaxed) + 1 } else { now }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, SaveError> {
    postcard::to_stdvec(value).map_err(|e| SaveError::Encode(e.to_string()))
}

/// What a read of the state topic has found so far: the newest record of every key wins, as
/// compaction would have it.
#[derive(Default)]
struct Reading {
    manifests: HashMap<i32, Option<Manifest>>,
    legacy: HashMap<i32, PartitionState>,
    chunks: HashMap<(i32, u8, u32), Chunk>,
    delivered: HashMap<i32, i64>,
}

impl Reading {
    fn take(&mut self, keys: &HashMap<String, i32>, key: &str, payload: Option<&[u8]>) {
        if let Some(&partition) = keys.get(key) {
            self.partition_record(partition, payload);
        } else if let Some(base) = key.strip_suffix(MARKER_SUFFIX)
            && let Some(&partition) = keys.get(base)
        {
            match payload.map(broker::DeliveredMarker::delivered_from) {
                Some(Some(delivered)) => {
                    self.delivered.insert(partition, delivered);
                }
                Some(None) => tracing::warn!(partition, "ignoring an unreadable delivered marker"),
                None => {
                    self.delivered.remove(&partition);
                }
            }
        } else if let Some((base, place)) = key.rsplit_once('#')
            && let Some(&partition) = keys.get(base)
            && let Some((slot, index)) = place.split_once('.')
            && let (Ok(slot @ 0..=1), Ok(index)) = (slot.parse::<u8>(), index.parse::<u32>())
        {
            match payload.map(postcard::from_bytes::<Chunk>) {
                Some(Ok(chunk)) if chunk.index == index => {
                    self.chunks.insert((partition, slot, index), chunk);
                }
                Some(_) => tracing::warn!(partition, index, "ignoring an unreadable state chunk"),
                None => {
                    self.chunks.remove(&(partition, slot, index));
                }
            }
        }
    }

    fn partition_record(&mut self, partition: i32, payload: Option<&[u8]>) {
        let Some(payload) = payload.filter(|p| !p.is_empty()) else {
            // A tombstone: the partition's state was deleted.
            tracing::info!(partition, "state deleted by a tombstone");
            self.manifests.insert(partition, None);
            self.legacy.remove(&partition);
            return;
        };
        if let Some(body) = payload.strip_prefix(MANIFEST_MAGIC.as_slice()) {
            match postcard::from_bytes::<Manifest>(body) {
                Ok(manifest) => {
                    self.manifests.insert(partition, Some(manifest));
                    self.legacy.remove(&partition);
                }
                Err(err) => {
                    tracing::warn!(partition, "unreadable state manifest: the partition starts fresh: {err}");
                    self.manifests.remove(&partition);
                    self.legacy.remove(&partition);
                }
            }
            return;
        }
        match postcard::from_bytes::<PartitionState>(payload) {
            Ok(state) if state.version == LEGACY_STATE_VERSION => {
                self.manifests.remove(&partition);
                self.legacy.insert(partition, state);
            }
            Ok(state) => {
                tracing::warn!(
                    partition,
                    version = state.version,
                    "state of another layout: the partition starts fresh"
                );
                self.manifests.remove(&partition);
                self.legacy.remove(&partition);
            }
            Err(err) => {
                tracing::warn!(partition, "unreadable state: the partition starts fresh: {err}");
                self.manifests.remove(&partition);
                self.legacy.remove(&partition);
            }
        }
    }

    /// The newest whole state of each partition, and what its slots hold.
    fn finish(mut self) -> (HashMap<i32, PartitionState>, HashMap<i32, Slots>) {
        let mut states = std::mem::take(&mut self.legacy);
        let mut slots: HashMap<i32, Slots> = HashMap::new();
        for &(partition, slot, index) in self.chunks.keys() {
            let known = slots.entry(partition).or_default();
            known.chunks[usize::from(slot)] = known.chunks[usize::from(slot)].max(index + 1);
        }
        for (partition, manifest) in std::mem::take(&mut self.manifests) {
            let Some(manifest) = manifest else { continue };
            slots.entry(partition).or_default().current = Some(manifest.slot);
            match self.assemble(partition, &manifest) {
                Ok(state) => {
                    states.insert(partition, state);
                }
                Err(reason) => {
                    tracing::warn!(partition, generation = manifest.generation, "ignoring saved state: {reason}")
                }
            }
        }
        (states, slots)
    }

    fn assemble(&mut self, partition: i32, manifest: &Manifest) -> Result<PartitionState, String> {
        let mut bytes = Vec::with_capacity(manifest.bytes.min(1 << 30) as usize);
        for index in 0..manifest.chunks {
            match self.chunks.remove(&(partition, manifest.slot, index)) {
                Some(chunk) if chunk.generation == manifest.generation => bytes.extend(chunk.bytes),
                Some(_) => return Err(format!("chunk {index} is of another generation")),
                None => return Err(format!("chunk {index} is missing")),
            }
        }
        if bytes.len() as u64 != manifest.bytes || <[u8; 32]>::from(Sha256::digest(&bytes)) != manifest.sha256 {
            return Err("its chunks do not add up to what the manifest says".into());
        }
        let state: PartitionState = postcard::from_bytes(&bytes).map_err(|e| format!("unreadable: {e}"))?;
        if state.version != STATE_VERSION {
            return Err(format!("layout version {}", state.version));
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> HashMap<String, i32> {
        HashMap::from([("g/t/3".to_owned(), 3)])
    }

    fn state(next_offset: i64, snapshot: usize) -> PartitionState {
        PartitionState::new(
            next_offset,
            vec![RouterInfo { name: "r".into(), site: "s".into(), role: "core".into() }],
            vec![PluginState { name: "p".into(), version: "1".into(), snapshot: vec![7; snapshot] }],
        )
    }

    /// The records `save` would write into `slot`, in order, without a broker.
    fn records(state: &PartitionState, slot: u8, generation: u64) -> Vec<(String, Option<Vec<u8>>)> {
        let bytes = postcard::to_stdvec(state).unwrap();
        let mut out = Vec::new();
        for (index, part) in bytes.chunks(CHUNK_BYTES).enumerate() {
            let chunk = Chunk { generation, index: index as u32, bytes: part.to_vec() };
            out.push((chunk_key("g/t/3", slot, index as u32), Some(postcard::to_stdvec(&chunk).unwrap())));
        }
        let manifest = Manifest {
            slot,
            generation,
            chunks: out.len() as u32,
            bytes: bytes.len() as u64,
            sha256: Sha256::digest(&bytes).into(),
        };
        let mut payload = MANIFEST_MAGIC.to_vec();
        payload.extend(postcard::to_stdvec(&manifest).unwrap());
        out.push(("g/t/3".into(), Some(payload)));
        out
    }

    /// The `next_offset` of the state read back (states are too big to print on a failure).
    fn read(records: &[(String, Option<Vec<u8>>)]) -> Option<i64> {
        let mut reading = Reading::default();
        for (key, payload) in records {
            reading.take(&keys(), key, payload.as_deref());
        }
        reading.finish().0.remove(&3).map(|s| s.next_offset)
    }

    #[test]
    fn a_state_larger_than_a_record_comes_back_whole() {
        let big = state(10, 5 * CHUNK_BYTES + 17);
        let written = records(&big, 0, 1);
        assert_eq!(written.len(), 7, "six chunks and a manifest");
        let mut reading = Reading::default();
        for (key, payload) in &written {
            reading.take(&keys(), key, payload.as_deref());
        }
        assert!(reading.finish().0.remove(&3) == Some(big), "the state read back differs");
    }

    #[test]
    fn the_newest_whole_generation_wins_and_a_half_written_one_is_ignored() {
        let mut log = records(&state(10, 3 * CHUNK_BYTES), 0, 1);
        log.extend(records(&state(20, CHUNK_BYTES / 2), 1, 2));
        assert_eq!(read(&log), Some(20));
        // A third save, into slot 0, died before its manifest: the state in slot 1 stands.
        let mut partial = records(&state(30, 2 * CHUNK_BYTES), 0, 3);
        partial.pop();
        log.extend(partial);
        assert_eq!(read(&log), Some(20), "the last complete state is still read");
    }

    #[test]
    fn legacy_records_are_read_and_tombstones_delete() {
        let legacy = PartitionState { version: LEGACY_STATE_VERSION, ..state(5, 10) };
        let mut log = vec![("g/t/3".to_owned(), Some(postcard::to_stdvec(&legacy).unwrap()))];
        assert_eq!(read(&log), Some(5));
        log.push(("g/t/3".into(), None));
        assert_eq!(read(&log), None);
        log.extend(records(&state(6, 10), 0, 9));
        assert_eq!(read(&log), Some(6));
    }

    #[test]
    fn a_corrupt_chunk_loses_the_state_not_the_host() {
        let mut log = records(&state(10, 2 * CHUNK_BYTES), 0, 1);
        log[1].1.as_mut().unwrap()[20] ^= 0xff;
        assert_eq!(read(&log), None);
    }

    #[test]
    fn the_newest_delivered_marker_wins_beside_the_state_and_a_bad_one_is_ignored() {
        let marker = |delivered: i64| {
            let point = broker::CommitPoint { offset: 0, delivered };
            (marker_key("g/t/3"), Some(point.metadata().into_bytes()))
        };
        let delivered = |log: &[(String, Option<Vec<u8>>)]| {
            let mut reading = Reading::default();
            for (key, payload) in log {
                reading.take(&keys(), key, payload.as_deref());
            }
            let found = reading.delivered.get(&3).copied();
            (found, reading.finish().0.remove(&3).map(|s| s.next_offset))
        };
        let mut log = records(&state(10, 100), 0, 1);
        log.push(marker(40));
        log.push(marker(55));
        // Another partition's marker, and a key that only ends like one, are not partition 3's.
        log.push((marker_key("g/t/4"), Some(b"routewatch:delivered=99".to_vec())));
        log.push(("g/t/3x@delivered".into(), Some(b"routewatch:delivered=98".to_vec())));
        assert_eq!(delivered(&log), (Some(55), Some(10)), "the newest marker, and the state untouched");
        log.push((marker_key("g/t/3"), Some(b"not a marker".to_vec())));
        assert_eq!(delivered(&log), (Some(55), Some(10)), "an unreadable marker changes nothing");
        log.push((marker_key("g/t/3"), None));
        assert_eq!(delivered(&log), (None, Some(10)), "a tombstone forgets the marker");
    }
}
