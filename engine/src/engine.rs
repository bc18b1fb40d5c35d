//! One stream's detection: its router table, a slot per plugin, and the step that takes a
//! batch from a source through every plugin to the sinks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use routewatch_runtime::{Output, thread_cpu_time};
use routewatch_telemetry::AnomalyEvent;

use crate::batch::{Cut, HARD_CAP_FACTOR, Input, Position};
use crate::events::{event, event_kind};
use crate::forecast::{self, Forecast};
use crate::incidents::{self, IncidentStage};
use crate::metrics::{AnomalyLabels, Metrics, Stage};
use crate::registry::Registry;
use crate::routers::RouterTable;
use crate::sink::{Delivery, Sink, StepError};
use crate::slot::{FixedPlugin, Slot};
use crate::source::{Intake, Pull, Source};
use crate::state::{PartitionState, PluginState};

/// Where a stream's plugins come from.
pub enum Plugins {
    /// The host's registry: plugins come and go, new versions take over their
    /// predecessor's state between batches, and a plugin that fails is contained (retried,
    /// its poison record isolated) and reported, which may quarantine it.
    Registry(Arc<Registry>),
    /// A fixed set, as a replay runs: each plugin starts once, and one that fails is stopped
    /// for good and its failure kept, so that a replay is deterministic and hides nothing.
    Fixed(Vec<FixedPlugin>),
}

/// How an [`Engine`] runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The stream's number (a Kafka partition): in logs, and in what the registry hears.
    pub stream: i32,
    /// The metrics every row carries, in order; each becomes a column of the batches.
    pub columns: Vec<String>,
    /// Largest snapshot a plugin may save; a larger one is the plugin's failure.
    pub max_snapshot_bytes: usize,
    /// Stamp events with the wall-clock time they were detected (a replay does not, so that
    /// its output depends on its input only).
    pub stamp_detection: bool,
    /// Most records a source puts in one batch ([`crate::Intake::full`]); a batch of one
    /// timestamp may grow to [`HARD_CAP_FACTOR`] times this (see [`crate::batch`]).
    pub batch_records: usize,
}

/// A record a plugin could not get past: it made the plugin fail twice, alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Poison {
    /// Where the record was.
    pub position: Position,
    /// The plugin, as `name@version`.
    pub plugin: String,
    /// `plugin_trap` or `plugin_invalid_output`.
    pub reason: &'static str,
    /// The failure.
    pub message: String,
}

/// What one plugin made of (part of) a batch: outputs by the row they start at.
pub(crate) type Outputs = Vec<(usize, Output)>;

/// What the plugins made of a batch.
pub struct Processed {
    /// Every anomaly, as an event.
    pub events: Vec<AnomalyEvent>,
    /// The incidents the batch changed, classified (empty without an incident stage).
    pub incidents: Vec<routewatch_incidents::IncidentUpdate>,
    /// Records that made a plugin fail.
    pub poison: Vec<Poison>,
    /// Per plugin, in [`Engine::plugins`] order: what it returned, by the row each output
    /// starts at (a contained batch comes back in parts).
    pub(crate) outputs: Vec<Outputs>,
}

impl Processed {
    /// How many plugins the outputs are of (every plugin of the engine, in order).
    pub fn plugins(&self) -> usize {
        self.outputs.len()
    }

    /// The score plugin `plugin` gave row `row`, column `column`; `None` where it gave none
    /// (it failed, or the row made it fail).
    pub fn score(&self, plugin: usize, row: usize, column: usize, columns: usize) -> Option<f32> {
        self.outputs[plugin].iter().find_map(|(start, output)| {
            let rows = output.scores.len() / columns.max(1);
            (row >= *start && row < start + rows).then(|| output.scores[column * rows + (row - start)])
        })
    }
}

/// A plugin of the stream, as a report sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginReport {
    /// What its events name as their plugin.
    pub label: String,
    /// Its version.
    pub version: String,
    /// Anomalies it found here.
    pub anomalies: u64,
    /// Time spent inside the plugin.
    pub busy: Duration,
    /// Fixed sets only: the failure that stopped it.
    pub failure: Option<String>,
}

/// One stream's detection engine.
pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) registry: Option<Arc<Registry>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) routers: RouterTable,
    pub(crate) slots: Vec<Slot>,
    /// The registry generation the slots reflect.
    pub(crate) generation: u64,
    /// Saved states of plugins not loaded yet, by name (they may come back).
    pub(crate) restored: HashMap<String, Vec<u8>>,
    /// The batch being filled: reused for every batch, and holding the records a cut held back
    /// (see [`crate::batch`]) between steps.
    input: Input,
    /// Where a cut puts the records it holds back (swapped with `input` after the step).
    held: Input,
    /// The position after the last record every sink acknowledged.
    acknowledged: Option<Position>,
    /// Outputs of records before this position were delivered by a previous owner of the
    /// stream: they are computed again (the detectors must see every record) but not delivered.
    suppress_before: Option<Position>,
    /// CPU spent in plugin calls during the current step (the `plugin` stage).
    plugin_cpu: Duration,
    /// The router incident stage, if the stream has one.
    incidents: Option<IncidentStage>,
    /// The forecast stage, if the stream has one.
    forecast: Option<Forecast>,
}

impl Engine {
    /// An engine for one stream. A registry's plugins are taken up at once (and again at
    /// every step when the registry changes); a fixed set is started at once.
    pub fn new(config: EngineConfig, plugins: Plugins, metrics: Arc<Metrics>) -> Engine {
        let input = Input::new(&config.columns);
        let held = Input::new(&config.columns);
        let mut engine = Engine {
            config,
            registry: None,
            metrics,
            routers: RouterTable::default(),
            slots: Vec::new(),
            generation: 0,
            restored: HashMap::new(),
            input,
            held,
            acknowledged: None,
            suppress_before: None,
            plugin_cpu: Duration::ZERO,
            incidents: None,
            forecast: None,
        };
        match plugins {
            Plugins::Registry(registry) => engine.registry = Some(registry),
            Plugins::Fixed(fixed) => {
                for plugin in fixed {
                    let name = plugin.plugin.info().name.clone();
                    // The same plugin twice (say, with two configurations) gets `name#2` and so on.
                    let same = engine.slots.iter().filter(|s| s.plugin.info().name == name).count();
                    let label = if same == 0 { name } else { format!("{name}#{}", same + 1) };
                    engine.slots.push(Slot::fixed(plugin, label));
                }
            }
        }
        engine
    }

    /// Continues from a saved state: its router table, and its plugins' snapshots (each taken
    /// up when its plugin gets a slot). Call before the first step. Where to resume reading
    /// is the source's business: [`Engine::acknowledged`] stays unset until a batch is.
    pub fn restore(&mut self, state: PartitionState) {
        self.routers = RouterTable::from_infos(state.routers);
        self.restored = state.plugins.into_iter().map(|p| (p.name, p.snapshot)).collect();
        self.restore_incidents();
        self.restore_forecast();
        self.metrics.state_restores.inc();
        tracing::info!(
            stream = self.config.stream,
            routers = self.routers.len(),
            from_offset = state.next_offset,
            "restored partition state"
        );
    }

    /// Adds the router incident stage (see [`crate::incidents`]); a restored state's incidents
    /// are taken up, whichever of this and [`Engine::restore`] comes first.
    pub fn with_incidents(mut self, stage: IncidentStage) -> Engine {
        self.incidents = Some(stage);
        self.restore_incidents();
        self
    }

    /// The router incident stage.
    pub fn incidents(&self) -> Option<&IncidentStage> {
        self.incidents.as_ref()
    }

    /// Adds the forecast stage (see [`crate::forecast`]); a restored state's predictions are
    /// taken up, whichever of this and [`Engine::restore`] comes first.
    pub fn with_forecast(mut self, stage: Forecast) -> Engine {
        self.forecast = Some(stage);
        self.restore_forecast();
        self
    }

    /// The forecast stage.
    pub fn forecast(&self) -> Option<&Forecast> {
        self.forecast.as_ref()
    }

    fn restore_forecast(&mut self) {
        let Some(stage) = self.forecast.as_mut() else { return };
        let Some(bytes) = self.restored.remove(forecast::STATE_NAME) else { return };
        match stage.restore(&bytes) {
            Ok(()) => tracing::info!(
                stream = self.config.stream,
                open = stage.stage().open().count(),
                "restored the forecast stage"
            ),
            Err(err) => {
                tracing::error!(stream = self.config.stream, "forecast state refused, the stage starts empty: {err}")
            }
        }
    }

    fn restore_incidents(&mut self) {
        let Some(stage) = self.incidents.as_mut() else { return };
        let Some(bytes) = self.restored.remove(incidents::STATE_NAME) else { return };
        match stage.restore(&bytes) {
            Ok(()) => tracing::info!(
                stream = self.config.stream,
                open = stage.router_stage().open().count(),
                "restored the incident stage"
            ),
            Err(err) => {
                tracing::error!(stream = self.config.stream, "incident state refused, the stage starts empty: {err}")
            }
        }
    }

    /// Delivers no output (anomalies, poison records, rejected records) of the records before
    /// `position`: a previous owner of the stream delivered them, and this engine runs them
    /// again only to bring its detectors' state up to date (see `Engine::restore`).
    pub fn suppress_output_before(&mut self, position: Position) {
        self.suppress_before = Some(position);
    }

    /// The metrics every row carries.
    pub fn columns(&self) -> &[String] {
        &self.config.columns
    }

    /// The plugins, in slot order.
    pub fn plugins(&self) -> Vec<PluginReport> {
        self.slots
            .iter()
            .map(|s| PluginReport {
                label: s.label.clone(),
                version: s.labels.version.clone(),
                anomalies: s.counters.anomalies.load(Ordering::Relaxed),
                busy: s.busy,
                failure: s.failure.clone(),
            })
            .collect()
    }

    /// The plugin components, in slot order.
    pub fn components(&self) -> impl Iterator<Item = &routewatch_runtime::Plugin> {
        self.slots.iter().map(|s| &s.plugin)
    }

    /// The position after the last record every sink acknowledged (or the restored state's).
    pub fn acknowledged(&self) -> Option<Position> {
        self.acknowledged
    }

    /// Takes the next batch from `source`, follows the registry, runs every plugin on the
    /// batch and hands the outcome to every sink, in order. The batch counts as acknowledged
    /// (see [`Engine::acknowledged`]) only once every sink has taken it; a sink that fails
    /// stops the step, so the sinks after it do not see the batch.
    ///
    /// The batch ends at a timestamp: its trailing timestamp's records are held back for the
    /// next step (see [`crate::batch`]), so a step may run less than its pull brought, or
    /// nothing; they are not acknowledged until a later step runs them.
    pub fn step(&mut self, source: &mut dyn Source, sinks: &mut [Box<dyn Sink>]) -> Result<Pull, StepError> {
        let mut input = std::mem::replace(&mut self.input, Input::new(&[]));
        let cpu_started = thread_cpu_time();
        let batch_records = self.config.batch_records.max(1);
        let hard_cap = batch_records.saturating_mul(HARD_CAP_FACTOR);
        // Held records count toward the batch; a held batch of one timestamp may grow on.
        let limit = if input.records() >= batch_records { hard_cap } else { batch_records };
        let mut intake = Intake::new(&mut input, &mut self.routers, limit);
        let pulled = source.pull(&mut intake);
        let decoding = intake.decoding();
        let cut = match pulled {
            Ok(pull) => input.cut(pull == Pull::More, hard_cap, &mut self.held),
            Err(_) => Cut::Hold,
        };
        let cpu_pulled = thread_cpu_time();
        self.plugin_cpu = Duration::ZERO;
        let started = Instant::now();
        self.reconcile();
        let outcome = match pulled {
            Err(err) => Err(StepError::Source(err)),
            Ok(pull) if input.is_empty() || cut == Cut::Hold => Ok(pull),
            Ok(pull) => {
                let processed = self.process(&input);
                if let Some(before) = self.suppress_before {
                    input.retain_rejected(|r| r.position >= before);
                }
                let delivery = Delivery {
                    stream: self.config.stream,
                    input: &input,
                    processed: &processed,
                    routers: self.routers.infos(),
                    started,
                };
                let delivered = sinks.iter_mut().try_for_each(|sink| {
                    sink.deliver(&delivery).map_err(|source| StepError::Sink { sink: sink.name(), source })
                });
                delivered.map(|()| {
                    self.acknowledged = input.end();
                    pull
                })
            }
        };
        if cut != Cut::Hold {
            // What was run is done with (acknowledged, or left for the next owner); what the cut
            // held back is the next batch's start.
            std::mem::swap(&mut input, &mut self.held);
            self.held.clear();
        }
        self.input = input;
        let cpu_done = thread_cpu_time();
        // Decode is timed inside the pull, by the wall clock: never more than the pull's CPU.
        let pull = cpu_pulled.saturating_sub(cpu_started);
        let decoding = decoding.min(pull);
        self.metrics.add_stage_cpu(Stage::decode, decoding);
        self.metrics.add_stage_cpu(Stage::batch, pull - decoding);
        self.metrics.add_stage_cpu(Stage::plugin, self.plugin_cpu);
        self.metrics.add_stage_cpu(Stage::output, cpu_done.saturating_sub(cpu_pulled + self.plugin_cpu));
        outcome
    }

    /// Runs every plugin on `input` (containing what each does wrong) and builds the events.
    pub fn process(&mut self, input: &Input) -> Processed {
        self.metrics.records.inc_by(input.records() as u64);
        let mut processed =
            Processed { events: Vec::new(), incidents: Vec::new(), poison: Vec::new(), outputs: Vec::new() };
        if input.rows() == 0 {
            processed.outputs = self.slots.iter().map(|_| Vec::new()).collect();
            return processed;
        }
        let batch = input.batch();
        let detected_at = self.config.stamp_detection.then(now_ms);
        let suppress = self.suppress_before;
        let delivered = move |row: usize| suppress.is_some_and(|before| input.position(row) < before);
        // Anomalies of delivered records, for the incident stage to catch up on.
        let mut replayed = Vec::new();
        for index in 0..self.slots.len() {
            let cpu = thread_cpu_time();
            let (outputs, poison) = self.call(index, batch);
            self.plugin_cpu += thread_cpu_time().saturating_sub(cpu);
            let slot = &self.slots[index];
            if let Some((row, err)) = poison.filter(|(row, _)| !delivered(*row)) {
                let position = input.position(row);
                tracing::warn!(stream = self.config.stream, plugin = %slot.name, position, "poison record: {err}");
                self.metrics.plugin_poison_records.get_or_create(&slot.labels).inc();
                slot.counters.poison_records.fetch_add(1, Ordering::Relaxed);
                let invalid = matches!(err, routewatch_runtime::CallError::InvalidOutput(_));
                processed.poison.push(Poison {
                    position,
                    plugin: format!("{}@{}", slot.name, slot.labels.version),
                    reason: if invalid { "plugin_invalid_output" } else { "plugin_trap" },
                    message: err.to_string(),
                });
            }
            for (start, output) in &outputs {
                for a in &output.anomalies {
                    let row = start + a.row as usize;
                    let router = self.routers.info(batch.routers[row]).expect("every row's router is in the table");
                    if delivered(row) {
                        if self.incidents.is_some() {
                            replayed.push(event(a, row, batch, router, &slot.label, &slot.labels.version, detected_at));
                        }
                        continue;
                    }
                    let kind = event_kind(a.kind);
                    self.metrics
                        .anomalies
                        .get_or_create(&AnomalyLabels {
                            plugin: slot.labels.plugin.clone(),
                            version: slot.labels.version.clone(),
                            kind: kind.name().into(),
                        })
                        .inc();
                    self.metrics.count_router_anomaly(&router.name, &router.site, &router.role);
                    slot.counters.anomalies.fetch_add(1, Ordering::Relaxed);
                    processed.events.push(event(a, row, batch, router, &slot.label, &slot.labels.version, detected_at));
                }
            }
            processed.outputs.push(outputs);
        }
        if let Some(stage) = self.incidents.as_mut() {
            // Rows are in record order, so the delivered ones come first.
            let old = (0..input.rows()).take_while(|&row| delivered(row)).count();
            let latest = |rows: &[i64]| rows.iter().copied().max().unwrap_or(i64::MIN);
            if old > 0 {
                stage.take(&replayed, latest(&batch.timestamps[..old]), false);
            }
            if old < input.rows() {
                processed.incidents = stage.take(&processed.events, latest(&batch.timestamps), true);
            }
        }
        if let Some(stage) = self.forecast.as_mut() {
            let old = (0..input.rows()).take_while(|&row| delivered(row)).count();
            stage.take(batch, &self.routers, 0..old, false);
            processed.incidents.extend(stage.take(batch, &self.routers, old..input.rows(), true));
        }
        self.metrics.batches.inc();
        processed
    }

    /// Snapshots every running plugin: the stream's state as of [`Engine::acknowledged`], or
    /// `None` before anything was. A snapshot over `max_snapshot_bytes` is that plugin's
    /// failure (its previous snapshot is kept); a snapshot that fails keeps the previous one
    /// and restarts the instance from it.
    pub fn state(&mut self) -> Option<PartitionState> {
        let next_offset = self.acknowledged?;
        let cap = self.config.max_snapshot_bytes;
        let mut plugins = Vec::new();
        for slot in &mut self.slots {
            if let Some(instance) = slot.instance.as_mut() {
                match instance.snapshot() {
                    Ok(bytes) if bytes.len() > cap => {
                        let reason =
                            format!("snapshot of {} bytes is over max_snapshot_mib ({cap} bytes)", bytes.len());
                        tracing::error!(stream = self.config.stream, plugin = %slot.name, "{reason}; keeping the previous one");
                        self.metrics.plugin_oversized_snapshots.get_or_create(&slot.labels).inc();
                        if let Some(registry) = &self.registry {
                            registry.report_failure(&slot.name, slot.plugin.sha256(), &reason);
                        }
                    }
                    Ok(bytes) => slot.snapshot = bytes,
                    Err(err) => {
                        tracing::warn!(plugin = %slot.name, "snapshot failed, keeping the previous one: {err}");
                        slot.instance = None;
                    }
                }
            }
            plugins.push(PluginState {
                name: slot.name.clone(),
                version: slot.labels.version.clone(),
                snapshot: slot.snapshot.clone(),
            });
        }
        if let Some(stage) = &self.incidents {
            match stage.snapshot() {
                Ok(snapshot) => plugins.push(PluginState {
                    name: incidents::STATE_NAME.into(),
                    version: routewatch_incidents::SNAPSHOT_VERSION.to_string(),
                    snapshot,
                }),
                Err(err) => tracing::error!(stream = self.config.stream, "incident state not saved: {err}"),
            }
        }
        if let Some(stage) = &self.forecast {
            match stage.snapshot() {
                Ok(snapshot) => plugins.push(PluginState {
                    name: forecast::STATE_NAME.into(),
                    version: routewatch_incidents::SNAPSHOT_VERSION.to_string(),
                    snapshot,
                }),
                Err(err) => tracing::error!(stream = self.config.stream, "forecast state not saved: {err}"),
            }
        }
        // States of plugins unloaded for now are kept, so that they resume if they return.
        for (name, snapshot) in &self.restored {
            plugins.push(PluginState { name: name.clone(), version: String::new(), snapshot: snapshot.clone() });
        }
        Some(PartitionState::new(next_offset, self.routers.infos().to_vec(), plugins))
    }

    /// This engine is done with its stream: what it told the registry, and the incidents it
    /// counted, go with it.
    pub fn leave(&mut self) {
        if let Some(stage) = self.incidents.as_mut() {
            stage.leave();
        }
        if let Some(stage) = self.forecast.as_mut() {
            stage.leave();
        }
        if let Some(registry) = &self.registry {
            registry.report_partition_stopped(self.config.stream);
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
