//! What a stream's detection state is made of: the router table and every plugin's snapshot,
//! with the position of the first record the state has not seen. How it is stored (the
//! host keeps it in a compacted Kafka topic) is the store's business, not the engine's.

use serde::{Deserialize, Serialize};

/// Layout version of [`PartitionState`].
pub const STATE_VERSION: u32 = 2;

/// A router as a stream's table knows it; its position in the table is its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterInfo {
    /// The router's name, as in its records.
    pub name: String,
    /// Its site (empty when the input does not say).
    pub site: String,
    /// Its role (empty when the input does not say).
    pub role: String,
}

/// One plugin's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginState {
    /// The plugin's name.
    pub name: String,
    /// The version that took the snapshot (empty for a plugin not loaded when it was saved).
    pub version: String,
    /// The snapshot, as the plugin wrote it.
    pub snapshot: Vec<u8>,
}

/// Everything needed to continue a stream (a partition) elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Layout version ([`STATE_VERSION`] when written by this build).
    pub version: u32,
    /// The first offset the state has not seen.
    pub next_offset: i64,
    /// The router table, in id order.
    pub routers: Vec<RouterInfo>,
    /// Every plugin's snapshot.
    pub plugins: Vec<PluginState>,
}

impl PartitionState {
    /// A state of the current layout.
    pub fn new(next_offset: i64, routers: Vec<RouterInfo>, plugins: Vec<PluginState>) -> PartitionState {
        PartitionState { version: STATE_VERSION, next_offset, routers, plugins }
    }
}
