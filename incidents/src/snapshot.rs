//! The snapshot frame shared by the stages: magic, version, JSON body, size cap. JSON
//! rather than a binary format because the incident types leave absent fields out, which only
//! a self-describing format reads back.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version of the snapshot body this build writes and reads.
pub const SNAPSHOT_VERSION: u16 = 1;
/// Largest snapshot written or read, bytes (a stage at its default `max_incidents` with long
/// names stays well under it).
pub const MAX_SNAPSHOT_BYTES: usize = 64 << 20;

pub(crate) const ROUTER_MAGIC: [u8; 4] = *b"RWIR";
pub(crate) const SITE_MAGIC: [u8; 4] = *b"RWIS";
pub(crate) const FORECAST_MAGIC: [u8; 4] = *b"RWIF";
const HEADER: usize = 6;

/// Why a snapshot was not written or not restored. A refused restore leaves nothing half
/// restored: the caller keeps what it had (or starts fresh and says so).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is shorter than its header")]
    Truncated,
    #[error("not a snapshot of this stage (wrong magic)")]
    NotASnapshot,
    #[error("snapshot version {found}; this build reads version {SNAPSHOT_VERSION}")]
    Version { found: u16 },
    #[error("snapshot is {bytes} bytes, over the cap of {MAX_SNAPSHOT_BYTES}")]
    TooLarge { bytes: usize },
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    #[error("snapshot is inconsistent: {0}")]
    Invalid(String),
}

pub(crate) fn encode<T: Serialize>(magic: [u8; 4], state: &T) -> Result<Vec<u8>, SnapshotError> {
    let mut out = Vec::from(magic);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    serde_json::to_writer(&mut out, state).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    if out.len() > MAX_SNAPSHOT_BYTES {
        return Err(SnapshotError::TooLarge { bytes: out.len() });
    }
    Ok(out)
}

pub(crate) fn decode<T: DeserializeOwned>(magic: [u8; 4], bytes: &[u8]) -> Result<T, SnapshotError> {
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        return Err(SnapshotError::TooLarge { bytes: bytes.len() });
    }
    if bytes.len() < HEADER {
        return Err(SnapshotError::Truncated);
    }
    if bytes[..4] != magic {
        return Err(SnapshotError::NotASnapshot);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::Version { found: version });
    }
    // Trailing bytes are an error too: `from_slice` reads the whole body.
    serde_json::from_slice(&bytes[HEADER..]).map_err(|e| SnapshotError::Decode(e.to_string()))
}
