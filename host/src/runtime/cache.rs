//! On-disk cache of compiled components, so a restart does not recompile.
//!
//! Entries are named by the SHA-256 of the engine's compatibility hash and the component's
//! bytes: a new wasmtime version or different engine settings never load a stale entry.
//! Entries are native code: the directory must be writable by the host alone.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::{LoadError, RuntimeError};

pub struct ComponentCache {
    dir: PathBuf,
    engine_tag: [u8; 32],
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
    pub fn open(dir: PathBuf, engine: &Engine) -> Result<ComponentCache, RuntimeError> {
        std::fs::create_dir_all(&dir)
            .map_err(|source| RuntimeError::Cache { path: dir.display().to_string(), source })?;
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ComponentCache { dir, engine_tag: hasher.0.finalize().into() })
    }

    fn path(&self, component_sha: &[u8; 32]) -> PathBuf {
        let key = Sha256::new().chain_update(self.engine_tag).chain_update(component_sha).finalize();
        self.dir.join(format!("{}.cwasm", hex::encode(key)))
    }

    /// The compiled component, from the cache if present, else compiled and stored.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        component_sha: &[u8; 32],
        compile: impl FnOnce() -> Result<Component, LoadError>,
    ) -> Result<Component, LoadError> {
        let path = self.path(component_sha);
        // Read into memory rather than map the file: a mapped entry truncated under a running
        // host would kill it with SIGBUS.
        if let Ok(bytes) = std::fs::read(&path) {
            // SAFETY: the entry was written by `serialize` below, into a directory only this
            // host writes, under a name that pins the engine configuration; wasmtime still
            // checks its header and refuses a foreign or damaged one.
            match unsafe { Component::deserialize(engine, &bytes) } {
                Ok(component) => return Ok(component),
                Err(err) => tracing::warn!(path = %path.display(), "ignoring unreadable cache entry: {err:#}"),
            }
        }
        let component = compile()?;
        let bytes = component.serialize().map_err(|e| LoadError::Cache(format!("{e:#}")))?;
        // Write then rename, so a reader never sees half an entry.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| LoadError::Cache(format!("writing {}: {e}", path.display())))?;
        Ok(component)
    }
}
