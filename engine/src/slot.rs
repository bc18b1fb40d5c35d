//! One plugin in a stream: the version running there, its instance and its last state.

use std::sync::Arc;
use std::time::Duration;

use routewatch_runtime::{CallError, Instance, Plugin};

use crate::metrics::{Metrics, PluginLabels};
use crate::registry::{Active, PluginCounters};

/// A plugin of a fixed set (see [`crate::Plugins::Fixed`]), with its configuration.
#[derive(Clone)]
pub struct FixedPlugin {
    /// The loaded component.
    pub plugin: Plugin,
    /// Its configuration as JSON text; `None` for its defaults.
    pub config: Option<String>,
}

/// One plugin in a stream.
pub(crate) struct Slot {
    /// The registry's name for it, or its label in a fixed set.
    pub name: String,
    /// What its events name as their plugin: the plugin's own name, made unique in a fixed set
    /// (`name#2`) when the same plugin runs twice.
    pub label: String,
    pub plugin: Plugin,
    pub labels: PluginLabels,
    pub config: Option<String>,
    pub config_rev: u64,
    /// Enabled and not quarantined (or, in a fixed set, not failed).
    pub runnable: bool,
    pub counters: Arc<PluginCounters>,
    pub instance: Option<Instance>,
    /// Last state saved, for restarting the instance after a failure.
    pub snapshot: Vec<u8>,
    /// A version that would not take over here, and whether it was tried without the old
    /// state: not tried again until the operator allows a fresh start.
    pub refused: Option<(String, bool)>,
    /// Time spent inside the plugin.
    pub busy: Duration,
    /// Fixed sets only: the failure that stopped the plugin.
    pub failure: Option<String>,
}

impl Slot {
    /// A slot for a registry plugin, to start from `snapshot` on its first batch.
    pub fn from_active(active: &Active, snapshot: Vec<u8>) -> Slot {
        Slot {
            name: active.name.clone(),
            label: active.plugin.info().name.clone(),
            plugin: active.plugin.clone(),
            labels: labels(&active.plugin),
            config: active.config.clone(),
            config_rev: active.config_rev,
            runnable: active.runnable,
            counters: active.counters.clone(),
            instance: None,
            snapshot,
            refused: None,
            busy: Duration::ZERO,
            failure: None,
        }
    }

    /// A slot for a plugin of a fixed set, started at once: one that cannot start or refuses
    /// its configuration is failed from the outset.
    pub fn fixed(fixed: FixedPlugin, label: String) -> Slot {
        let FixedPlugin { plugin, config } = fixed;
        let mut slot = Slot {
            name: label.clone(),
            label,
            labels: labels(&plugin),
            plugin,
            config,
            config_rev: 0,
            runnable: true,
            counters: Arc::default(),
            instance: None,
            snapshot: Vec::new(),
            refused: None,
            busy: Duration::ZERO,
            failure: None,
        };
        match start(&slot.plugin, slot.config.as_deref(), &[]) {
            Ok(instance) => slot.instance = Some(instance),
            Err(Start::Instantiate(err)) => slot.stop(format!("starting: {err}")),
            Err(Start::Configure(err)) => slot.stop(format!("configuring: {err}")),
            Err(Start::Refused { err, .. }) => slot.stop(format!("restoring: {err}")),
        }
        slot
    }

    /// Stops a plugin of a fixed set for good.
    pub fn stop(&mut self, reason: String) {
        tracing::error!(plugin = %self.label, "plugin failed, its scores stay empty from here on: {reason}");
        self.failure = Some(reason);
        self.runnable = false;
        self.instance = None;
    }

    /// A fresh instance of this slot's plugin, configured and given `state`. A plugin that
    /// refuses its state starts empty (a warm-up lost, nothing else), and that is counted.
    pub fn fresh_instance(&self, state: &[u8], metrics: &Metrics) -> Result<Instance, CallError> {
        start(&self.plugin, self.config.as_deref(), state).or_else(|failed| match failed {
            Start::Refused { instance, err } if err.instance_survives() => {
                metrics.plugin_restore_failures.get_or_create(&self.labels).inc();
                tracing::warn!(plugin = %self.name, "plugin refused its saved state, starting fresh: {err}");
                Ok(*instance)
            }
            Start::Refused { err, .. } | Start::Instantiate(err) | Start::Configure(err) => Err(err),
        })
    }
}

/// Why [`start`] gave no instance.
pub(crate) enum Start {
    /// Instantiating failed.
    Instantiate(CallError),
    /// The plugin refused its configuration.
    Configure(CallError),
    /// The instance refused the state; it is configured and empty (of use only if the error
    /// says the instance survives).
    Refused { instance: Box<Instance>, err: CallError },
}

/// Instantiates `plugin`, configures it and restores `state` (none when empty): the one
/// way an instance is started.
pub(crate) fn start(plugin: &Plugin, config: Option<&str>, state: &[u8]) -> Result<Instance, Start> {
    let mut instance = plugin.instantiate().map_err(Start::Instantiate)?;
    if let Some(config) = config {
        instance.configure(config).map_err(Start::Configure)?;
    }
    if !state.is_empty()
        && let Err(err) = instance.restore(state)
    {
        return Err(Start::Refused { instance: Box::new(instance), err });
    }
    Ok(instance)
}

/// A plugin's metric labels.
pub(crate) fn labels(plugin: &Plugin) -> PluginLabels {
    PluginLabels { plugin: plugin.info().name.clone(), version: plugin.info().version.clone() }
}
