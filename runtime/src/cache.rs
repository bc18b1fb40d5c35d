//! On-disk cache of compiled components, so a restart does not recompile.
//!
//! Entries are named by the SHA-256 of the engine's compatibility hash and the component's
//! bytes: a new wasmtime version or different engine settings never load a stale entry.
//! Only components that loaded are stored (see `plugin::load`), and the directory is kept
//! under a size cap by evicting the least recently used entries. Entries are native code:
//! the directory must be writable by the host alone.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::{LoadError, RuntimeError};

/// Extension of cache entries; nothing else in the directory is touched.
const ENTRY_EXTENSION: &str = "cwasm";

pub struct ComponentCache {
    dir: PathBuf,
    engine_tag: [u8; 32],
    max_bytes: u64,
}

/// Feeds `Hash` output into SHA-256, so the engine's compatibility hash keys the cache.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only used for its bytes")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl ComponentCache {
    pub fn open(dir: PathBuf, engine: &Engine, max_bytes: u64) -> Result<ComponentCache, RuntimeError> {
        std::fs::create_dir_all(&dir)
            .map_err(|source| RuntimeError::Cache { path: dir.display().to_string(), source })?;
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ComponentCache { dir, engine_tag: hasher.0.finalize().into(), max_bytes })
    }

    fn path(&self, component_sha: &[u8; 32]) -> PathBuf {
        let key = Sha256::new().chain_update(self.engine_tag).chain_update(component_sha).finalize();
        self.dir.join(format!("{}.{ENTRY_EXTENSION}", hex::encode(key)))
    }

    /// The compiled component, if the cache has a readable entry for it.
    pub fn get(&self, engine: &Engine, component_sha: &[u8; 32]) -> Option<Component> {
        let path = self.path(component_sha);
        // Read into memory rather than map the file: a mapped entry truncated under a running
        // host would kill it with SIGBUS.
        let bytes = std::fs::read(&path).ok()?;
        // SAFETY: the entry was written by `put` below, into a directory only this host
        // writes, under a name that pins the engine configuration; wasmtime still checks its
        // header and refuses a foreign or damaged one.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(component) => {
                // Its modification time is its last use, for eviction.
                let _ =
                    std::fs::File::options().append(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
                Some(component)
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), "removing an unreadable cache entry: {err:#}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compiled component, then evicts old entries while the cache is over its cap.
    pub fn put(&self, component_sha: &[u8; 32], component: &Component) -> Result<(), LoadError> {
        let path = self.path(component_sha);
        let bytes = component.serialize().map_err(|e| LoadError::Cache(format!("{e:#}")))?;
        // Write then rename, so a reader never sees half an entry.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| LoadError::Cache(format!("writing {}: {e}", path.display())))?;
        self.evict(&path);
        Ok(())
    }

    /// Removes the least recently used entries until the cache fits its cap, never `keep`.
    fn evict(&self, keep: &Path) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = dir
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == ENTRY_EXTENSION))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    tracing::info!(path = %path.display(), bytes = len, "evicted a compiled component from the cache");
                }
                Err(err) => tracing::warn!(path = %path.display(), "could not evict a cache entry: {err}"),
            }
        }
    }
}
