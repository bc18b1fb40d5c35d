//! Following the registry between batches: new plugins get a slot, removed ones lose theirs,
//! a new version takes over its predecessor's state, and configuration, enable and
//! quarantine changes apply. No record is seen by neither version or by both.

use std::time::Instant;

use routewatch_runtime::{CallError, Instance};

use crate::engine::Engine;
use crate::registry::Active;
use crate::slot::{Slot, Start, labels, start};

impl Engine {
    /// Brings the slots in line with the registry when it has changed. Runs between batches
    /// only; a fixed set of plugins never changes.
    pub fn reconcile(&mut self) {
        let Some(registry) = self.registry.clone() else { return };
        if registry.generation() == self.generation {
            return;
        }
        let view = registry.view();
        self.generation = view.generation;
        let stream = self.config.stream;
        let mut old = std::mem::take(&mut self.slots);
        for active in &view.plugins {
            let slot = match old.iter().position(|s| s.name == active.name) {
                Some(i) => {
                    let mut slot = old.swap_remove(i);
                    let sha = active.plugin.sha256();
                    let tried = slot
                        .refused
                        .as_ref()
                        .is_some_and(|(refused, fresh)| refused == sha && (*fresh || !active.start_fresh));
                    if slot.plugin.sha256() != sha && !tried {
                        self.swap(&mut slot, active);
                    }
                    // A configuration applies to the version that really runs here, which the
                    // registry checked it against.
                    if slot.config_rev != active.config_rev {
                        self.reconfigure(&mut slot, active);
                    }
                    slot.runnable = active.runnable;
                    slot
                }
                None => {
                    let snapshot = self.restored.remove(&active.name).unwrap_or_default();
                    Slot::from_active(active, snapshot)
                }
            };
            registry.report_running(stream, &slot.name, Some(&slot.plugin));
            self.slots.push(slot);
        }
        for gone in old {
            registry.report_running(stream, &gone.name, None);
            tracing::info!(stream, plugin = %gone.name, "plugin unloaded from this partition");
        }
    }

    /// Hands a slot's state to a new version of its plugin. If the new version will not
    /// start, configure or take the state, the old one keeps running here and the registry
    /// hears why.
    fn swap(&self, slot: &mut Slot, active: &Active) {
        let started = Instant::now();
        let stream = self.config.stream;
        let state = match slot.instance.as_mut().filter(|i| !i.is_poisoned()).map(Instance::snapshot) {
            Some(Ok(state)) => state,
            Some(Err(err)) => {
                tracing::warn!(plugin = %slot.name, "old version's snapshot failed, handing over the last saved one: {err}");
                slot.snapshot.clone()
            }
            None => slot.snapshot.clone(),
        };
        let version = active.plugin.info().version.clone();
        let started_new = match start(&active.plugin, active.config.as_deref(), &state) {
            Ok(instance) => Ok((instance, state)),
            Err(Start::Instantiate(err) | Start::Configure(err)) => Err(err),
            Err(Start::Refused { instance, err }) => {
                self.metrics.plugin_restore_failures.get_or_create(&labels(&active.plugin)).inc();
                if active.start_fresh && err.instance_survives() {
                    // The operator chose a fresh start over keeping the old version here. A
                    // refused restore leaves the instance as it was: configured, empty.
                    tracing::warn!(stream, plugin = %slot.name, %version, "new version starts without the old state: {err}");
                    Ok((*instance, Vec::new()))
                } else {
                    Err::<_, CallError>(err)
                }
            }
        };
        match started_new {
            Ok((instance, state)) => {
                let pause = started.elapsed();
                tracing::info!(
                    stream,
                    plugin = %slot.name,
                    from = %slot.labels.version,
                    to = %version,
                    pause_us = pause.as_micros() as u64,
                    "new plugin version took over"
                );
                *slot = Slot { instance: Some(instance), snapshot: state, ..Slot::from_active(active, Vec::new()) };
                self.metrics.plugin_swap_pause.get_or_create(&slot.labels).observe(pause.as_secs_f64());
            }
            Err(err) => {
                tracing::error!(stream, plugin = %slot.name, %version, "new version refused, the old one stays: {err}");
                if let Some(registry) = &self.registry {
                    registry.report_swap_refused(&slot.name, &version, stream, &err.to_string());
                }
                slot.refused = Some((active.plugin.sha256().to_owned(), active.start_fresh));
            }
        }
    }

    fn reconfigure(&self, slot: &mut Slot, active: &Active) {
        slot.config = active.config.clone();
        slot.config_rev = active.config_rev;
        if let (Some(instance), Some(config)) = (slot.instance.as_mut(), &slot.config)
            && let Err(err) = instance.configure(config)
        {
            // The registry checked it on a fresh instance; a live one may still object.
            tracing::error!(stream = self.config.stream, plugin = %slot.name, "configuration refused, restarting: {err}");
            slot.instance = None;
        }
    }
}
