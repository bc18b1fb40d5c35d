//! A loaded plugin: compiled, checked against the world, ready to instantiate.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, types::ComponentItem};

use super::bindings::{DetectorPluginPre, PluginInfo};
use super::error::LoadError;
use super::instance::{Instance, LogLimiter};
use super::{CallError, InfoCaps, Limits, Runtime, SUPPORTED_WIT_VERSIONS};

/// The interface a detector exports, without its version.
const DETECTOR_INTERFACE: &str = "routewatch:detector/detector";

/// A detector component, compiled and pre-linked. Cheap to clone; instances are independent.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<Inner>,
}

struct Inner {
    info: PluginInfo,
    sha256: String,
    pre: DetectorPluginPre<super::HostState>,
    limits: Limits,
    log: Arc<LogLimiter>,
}

impl Plugin {
    /// Name, version, description, metrics read and configuration schema.
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// Hex SHA-256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// Those of `metrics` the plugin cannot read: its info lists the metrics it reads (an
    /// empty list means all), and it scores the others 0. The host and `routewatch replay`
    /// say so rather than leave a silent column of zeros.
    pub fn ignored<'a>(&self, metrics: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let reads = &self.inner.info.metrics;
        if reads.is_empty() {
            return Vec::new();
        }
        metrics.into_iter().filter(|m| !reads.iter().any(|r| r == m)).map(str::to_owned).collect()
    }

    /// A fresh instance with default configuration and empty state.
    pub fn instantiate(&self) -> Result<Instance, CallError> {
        Instance::new(&self.inner.pre, self.inner.info.name.clone(), self.inner.limits, self.inner.log.clone())
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.info.name)
            .field("version", &self.inner.info.version)
            .finish()
    }
}

pub(super) fn load(runtime: &Runtime, bytes: &[u8]) -> Result<Plugin, LoadError> {
    load_compiled(runtime, compile(runtime, bytes)?)
}

/// A component compiled (or fetched from the runtime's cache), not yet checked against a world.
pub(super) struct Compiled {
    pub(super) component: Component,
    pub(super) sha: [u8; 32],
    pub(super) from_cache: bool,
}

impl Compiled {
    /// The names of the interfaces it exports (`package:name/interface@version`).
    pub(super) fn exported_interfaces(&self, engine: &wasmtime::Engine) -> Vec<String> {
        self.component
            .component_type()
            .exports(engine)
            .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    /// Keeps the compiled component in the cache: only one that loaded is worth keeping (one
    /// that fails to start would be fetched again and fail again).
    pub(super) fn keep(&self, runtime: &Runtime) -> Result<(), LoadError> {
        if let (Some(cache), false) = (&runtime.cache, self.from_cache) {
            cache.put(&self.sha, &self.component)?;
        }
        Ok(())
    }
}

/// Checks the header, then compiles `bytes` or fetches them compiled from the cache.
pub(super) fn compile(runtime: &Runtime, bytes: &[u8]) -> Result<Compiled, LoadError> {
    check_header(bytes)?;
    let sha: [u8; 32] = Sha256::digest(bytes).into();
    let engine = &runtime.engine;
    let cached = runtime.cache.as_ref().and_then(|cache| cache.get(engine, &sha));
    let from_cache = cached.is_some();
    let component = match cached {
        Some(component) => component,
        None => Component::new(engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?,
    };
    Ok(Compiled { component, sha, from_cache })
}

/// Checks a compiled component against the detector world and reads its info.
pub(super) fn load_compiled(runtime: &Runtime, compiled: Compiled) -> Result<Plugin, LoadError> {
    let engine = &runtime.engine;
    let component = &compiled.component;
    check_exports(&compiled.exported_interfaces(engine))?;
    let pre = runtime.linker.instantiate_pre(component).map_err(|e| LoadError::Imports(format!("{e:#}")))?;
    let pre = DetectorPluginPre::new(pre).map_err(|e| LoadError::NotADetector(format!("{e:#}")))?;

    // A first instance tells us who the plugin says it is, and proves it can start.
    let mut probe = Instance::new(&pre, String::from("(loading)"), runtime.limits, runtime.log_limiter("(loading)"))?;
    let info = probe.info()?;
    check_info(&info)?;
    compiled.keep(runtime)?;
    let log = runtime.log_limiter(&info.name);
    Ok(Plugin { inner: Arc::new(Inner { info, sha256: hex::encode(compiled.sha), pre, limits: runtime.limits, log }) })
}

pub(super) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(LoadError::CoreModule),
        Some([0, b'a', b's', b'm', ..]) => Ok(()),
        _ => Err(LoadError::NotWasm),
    }
}

/// Finds the detector export and checks its version before type-checking, so that a plugin
/// built for another WIT version is told so, not handed a list of mismatched types.
fn check_exports(names: &[String]) -> Result<(), LoadError> {
    let detector = names.iter().find_map(|name| {
        let (interface, version) = name.split_once('@').unwrap_or((name, ""));
        (interface == DETECTOR_INTERFACE).then_some(version)
    });
    match detector {
        Some(version) if SUPPORTED_WIT_VERSIONS.contains(&version) => Ok(()),
        Some(version) => Err(LoadError::UnsupportedVersion { found: version.to_owned() }),
        None if names.is_empty() => {
            Err(LoadError::NotADetector(format!("it exports no interfaces; expected {DETECTOR_INTERFACE}")))
        }
        None => Err(LoadError::NotADetector(format!(
            "it exports {}; expected {DETECTOR_INTERFACE}@{}",
            names.join(", "),
            SUPPORTED_WIT_VERSIONS[0]
        ))),
    }
}

fn check_info(info: &PluginInfo) -> Result<(), LoadError> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(LoadError::BadInfo(format!("name {:?} must be 1 to 64 of [a-z0-9_-]", truncated(&info.name))));
    }
    if info.version.is_empty() || info.version.len() > 64 || info.version.chars().any(char::is_control) {
        return Err(LoadError::BadInfo(format!(
            "version {:?} must be 1 to 64 characters, none of them control characters",
            truncated(&info.version)
        )));
    }
    let caps = InfoCaps::DEFAULT;
    if info.description.len() > caps.description_bytes {
        return Err(LoadError::BadInfo(format!(
            "description is {} bytes, over the cap of {}",
            info.description.len(),
            caps.description_bytes
        )));
    }
    if info.metrics.len() > caps.metrics {
        return Err(LoadError::BadInfo(format!(
            "it names {} metrics, over the cap of {}",
            info.metrics.len(),
            caps.metrics
        )));
    }
    if let Some(metric) = info.metrics.iter().find(|m| m.is_empty() || m.len() > caps.metric_name_bytes) {
        return Err(LoadError::BadInfo(format!(
            "metric name {:?} must be 1 to {} bytes",
            truncated(metric),
            caps.metric_name_bytes
        )));
    }
    if info.config_schema.len() > caps.config_schema_bytes {
        return Err(LoadError::BadInfo(format!(
            "config_schema is {} bytes, over the cap of {}",
            info.config_schema.len(),
            caps.config_schema_bytes
        )));
    }
    if serde_json::from_str::<serde_json::Value>(&info.config_schema).is_err() {
        return Err(LoadError::BadInfo("config_schema is not JSON".into()));
    }
    Ok(())
}

/// The start of a plugin-supplied string, for an error message.
fn truncated(text: &str) -> String {
    text.chars().take(80).collect()
}
