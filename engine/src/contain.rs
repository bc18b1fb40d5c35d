//! Fault containment: a plugin that traps, overruns or breaks the output contract costs its
//! own output for the batch at most, and a record that makes it fail is found by bisection.

use std::ops::Range;
use std::sync::atomic::Ordering;

use routewatch_runtime::{Batch, CallError, Instance, Output};

use crate::engine::{Engine, Outputs};
use crate::metrics::TrapLabels;

/// A batch run record by record apart, after the plugin failed on the whole of it.
struct Isolated {
    outputs: Outputs,
    /// The instance after the last part that succeeded, if the last part did.
    instance: Option<Instance>,
    /// The plugin's state after everything but the poison record.
    state: Vec<u8>,
    /// The record that makes the plugin trap, and the trap.
    poison: Option<(usize, CallError)>,
}

impl Engine {
    /// Runs one plugin on the batch, containing whatever it does wrong:
    /// 1. a trap or overrun kills the instance; the batch is retried once on a fresh instance
    ///    restored from the last saved state;
    /// 2. if that fails too, the batch is split in halves to find the one record that makes
    ///    the plugin trap; that record is reported as poison and the rest are scored;
    /// 3. if no single record is to blame (both halves fail on their own, or the plugin ran out
    ///    of CPU, where every probe would cost a whole budget), the plugin scores nothing in
    ///    this batch and the registry counts a failure, which may quarantine it.
    ///
    /// Output that breaks the contract is contained like a trap (retried, then isolated to its
    /// record, reported as `plugin_invalid_output`). A plugin that returns an error is alive;
    /// it is not retried (it would answer the same) but counts a failure.
    ///
    /// A fixed set's plugin is not contained: its first failure stops it (see
    /// [`crate::Plugins::Fixed`]).
    pub(crate) fn call(&mut self, index: usize, batch: &Batch) -> (Outputs, Option<(usize, CallError)>) {
        if !self.slots[index].runnable {
            return (Vec::new(), None);
        }
        if self.registry.is_none() {
            return self.call_fixed(index, batch);
        }
        let first = match self.slots[index].instance.take() {
            Some(instance) => Ok(instance),
            None => self.slots[index].fresh_instance(&self.slots[index].snapshot.clone(), &self.metrics),
        };
        let err = match first {
            Ok(mut instance) => match self.attempt_with(index, &mut instance, batch, 0..batch.len()) {
                Ok(output) => {
                    self.slots[index].instance = Some(instance);
                    return (vec![(0, output)], None);
                }
                Err(err) => {
                    if err.instance_survives() {
                        self.slots[index].instance = Some(instance);
                    }
                    err
                }
            },
            Err(err) => err,
        };
        if matches!(err, CallError::Plugin(_)) {
            // It answered with an error: it would answer the same again.
            self.fail(index, &err);
            return (Vec::new(), None);
        }
        let saved = self.slots[index].snapshot.clone();
        match self.attempt(index, batch, 0..batch.len(), &saved) {
            Ok((output, instance)) => {
                self.slots[index].instance = Some(instance);
                (vec![(0, output)], None)
            }
            Err(retry) if !isolatable(&retry) => {
                self.fail(index, &retry);
                (Vec::new(), None)
            }
            Err(retry) => match self.isolate(index, batch, 0..batch.len(), saved, Some(retry)) {
                Ok(isolated) => {
                    let slot = &mut self.slots[index];
                    slot.instance = isolated.instance;
                    slot.snapshot = isolated.state;
                    (isolated.outputs, isolated.poison)
                }
                Err(err) => {
                    self.fail(index, &err);
                    (Vec::new(), None)
                }
            },
        }
    }

    /// A fixed set's plugin on the whole batch; a failure stops it.
    fn call_fixed(&mut self, index: usize, batch: &Batch) -> (Outputs, Option<(usize, CallError)>) {
        let Some(mut instance) = self.slots[index].instance.take() else { return (Vec::new(), None) };
        match self.attempt_with(index, &mut instance, batch, 0..batch.len()) {
            Ok(output) => {
                self.slots[index].instance = Some(instance);
                (vec![(0, output)], None)
            }
            Err(err) => {
                self.slots[index].stop(err.to_string());
                (Vec::new(), None)
            }
        }
    }

    /// Finds the one record of `range` that makes the plugin trap (see [`Engine::call`]),
    /// running the parts around it in order from `state`.
    fn isolate(
        &mut self,
        index: usize,
        batch: &Batch,
        range: Range<usize>,
        state: Vec<u8>,
        known_failure: Option<CallError>,
    ) -> Result<Isolated, CallError> {
        let err = match known_failure {
            Some(err) => err,
            None => match self.attempt(index, batch, range.clone(), &state) {
                Ok((output, mut instance)) => {
                    let state = instance.snapshot()?;
                    return Ok(Isolated {
                        outputs: vec![(range.start, output)],
                        instance: Some(instance),
                        state,
                        poison: None,
                    });
                }
                Err(err) => err,
            },
        };
        if !isolatable(&err) {
            return Err(err);
        }
        if range.len() == 1 {
            return Ok(Isolated { outputs: Vec::new(), instance: None, state, poison: Some((range.start, err)) });
        }
        let mid = range.start + range.len() / 2;
        let (left, right) = (range.start..mid, mid..range.end);
        match self.attempt(index, batch, left.clone(), &state) {
            Ok((output, mut instance)) => {
                let after_left = instance.snapshot()?;
                let mut rest = self.isolate(index, batch, right, after_left, None)?;
                rest.outputs.insert(0, (left.start, output));
                Ok(rest)
            }
            Err(left_err) => {
                if self.attempt(index, batch, right.clone(), &state).is_err() {
                    // Each half fails by itself: the plugin is at fault, not one record.
                    return Err(left_err);
                }
                let mut isolated = self.isolate(index, batch, left, state, Some(left_err))?;
                let (output, mut instance) = self.attempt(index, batch, right.clone(), &isolated.state)?;
                isolated.state = instance.snapshot()?;
                isolated.instance = Some(instance);
                isolated.outputs.push((right.start, output));
                Ok(isolated)
            }
        }
    }

    /// Runs `range` of the batch on a fresh instance restored from `state`.
    fn attempt(
        &mut self,
        index: usize,
        batch: &Batch,
        range: Range<usize>,
        state: &[u8],
    ) -> Result<(Output, Instance), CallError> {
        let mut instance = self.slots[index].fresh_instance(state, &self.metrics)?;
        let output = self.attempt_with(index, &mut instance, batch, range)?;
        Ok((output, instance))
    }

    /// Runs `range` of the batch on `instance` and accounts for the call. After a failure the
    /// instance is of use only if [`CallError::instance_survives`].
    fn attempt_with(
        &mut self,
        index: usize,
        instance: &mut Instance,
        batch: &Batch,
        range: Range<usize>,
    ) -> Result<Output, CallError> {
        let part;
        let input = if range.len() == batch.len() {
            batch
        } else {
            part = batch.slice(range);
            &part
        };
        let result = instance.process(input);
        let stream = self.config.stream;
        let metrics = &self.metrics;
        let slot = &mut self.slots[index];
        let stats = instance.last_call();
        slot.busy += stats.duration;
        metrics.plugin_invocations.get_or_create(&slot.labels).inc();
        metrics.plugin_call_duration.get_or_create(&slot.labels).observe(stats.duration.as_secs_f64());
        metrics.plugin_cpu.get_or_create(&slot.labels).inc_by(stats.cpu.as_secs_f64());
        metrics
            .plugin_memory_high_water
            .get_or_create(&slot.labels)
            .inner()
            .fetch_max(i64::try_from(stats.memory_high_water).unwrap_or(i64::MAX), Ordering::Relaxed);
        slot.counters.invocations.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(output) => {
                metrics.plugin_points.get_or_create(&slot.labels).inc_by(output.scores.len() as u64);
                slot.counters.points.fetch_add(output.scores.len() as u64, Ordering::Relaxed);
                Ok(output)
            }
            Err(err) => {
                let labels = TrapLabels {
                    plugin: slot.labels.plugin.clone(),
                    version: slot.labels.version.clone(),
                    kind: err.kind_label().into(),
                };
                metrics.plugin_traps.get_or_create(&labels).inc();
                slot.counters.traps.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(stream, plugin = %slot.name, rows = input.len(), "plugin call failed: {err}");
                Err(err)
            }
        }
    }

    /// A batch the plugin could not score: the registry decides whether to quarantine it.
    fn fail(&self, index: usize, err: &CallError) {
        let slot = &self.slots[index];
        if let Some(registry) = &self.registry {
            registry.report_failure(&slot.name, slot.plugin.sha256(), &err.to_string());
        }
    }
}

/// Failures worth splitting a batch for: a trap, memory overrun or output that breaks the
/// contract may be one record's doing and costs little to reproduce. A CPU overrun costs a
/// whole budget per probe.
fn isolatable(err: &CallError) -> bool {
    matches!(err, CallError::Trap { .. } | CallError::MemoryLimitExceeded { .. } | CallError::InvalidOutput(_))
}
