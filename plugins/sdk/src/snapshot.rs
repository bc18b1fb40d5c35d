//! Versioned snapshots: a version byte, then the state in postcard.
//!
//! A detector bumps its version whenever the shape or the meaning of its state changes; a
//! host that hands an old snapshot to a new build then gets a clear error instead of state
//! that deserialises into nonsense.
//!
//! ```
//! use routewatch_plugin_sdk::snapshot;
//!
//! let bytes = snapshot::encode(3, &(1.5f64, vec![1u32, 2]));
//! let state: (f64, Vec<u32>) = snapshot::decode(&bytes, 3, "example").unwrap();
//! assert_eq!(state, (1.5, vec![1, 2]));
//! let err = snapshot::decode::<(f64, Vec<u32>)>(&bytes, 4, "example").unwrap_err();
//! assert_eq!(err, "example snapshot version 3 is not supported (this build reads 4)");
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// `version`, then `state` in postcard.
pub fn encode<T: Serialize + ?Sized>(version: u8, state: &T) -> Vec<u8> {
    let mut bytes = vec![version];
    bytes.extend(postcard::to_allocvec(state).expect("detector state always serialises"));
    bytes
}

/// The state in `bytes`, if they carry `version`; errors name the `detector`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], version: u8, detector: &str) -> Result<T, String> {
    match bytes.split_first() {
        Some((&v, body)) if v == version => {
            postcard::from_bytes(body).map_err(|e| format!("corrupt {detector} snapshot: {e}"))
        }
        Some((v, _)) => Err(format!("{detector} snapshot version {v} is not supported (this build reads {version})")),
        None => Err(format!("empty {detector} snapshot")),
    }
}
