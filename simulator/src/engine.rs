//! The simulation engine: the fleet, its faults, the random fault schedule and event time.
//! Everything that changes the simulation goes through here, so the REST API and the runner
//! share one `Mutex<Engine>`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use routewatch_telemetry::{FaultKind, Record};
use serde::{Deserialize, Serialize};

use crate::actions::{
    ActionBook, ActionKind, ActionNotice, ActionRecord, ActionRequest, ActionSpecs, FixedFault, MAX_REASON_BYTES,
    MAX_REQUESTED_BY_BYTES, NewAction,
};
use crate::changes::{ChangeBook, ChangeNotice};
use crate::consequences::{self, ConsequenceBook, ConsequenceNotice, Crash};
use crate::faults::{self, FaultBook, FaultNotice, FaultView, NewFault, Source};
use crate::fleet::{Fleet, Profile};
use crate::realism::TelemetryProfile;

/// Largest fleet the engine accepts (memory stays around 1 KB per router).
pub const MAX_ROUTERS: u32 = 1_000_000;
/// Interval limits, ms.
pub const MIN_INTERVAL_MS: u64 = 10;
pub const MAX_INTERVAL_MS: u64 = 3_600_000;
/// Upper limit of the random fault rate, faults per router per day.
pub const MAX_FAULT_RATE: f64 = 1_000.0;

/// What can be changed while the simulation runs (`GET|PATCH /config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// Number of routers.
    pub routers: u32,
    /// Sample interval (event time between samples), ms.
    pub interval_ms: u64,
    /// Random faults per router per day (0 disables the schedule).
    pub fault_rate: f64,
    /// The kind of telemetry: `clean` (the default) or `realistic`.
    #[serde(default)]
    pub profile: TelemetryProfile,
    /// Whether faults left alone have consequences (crashes, throttling, shutdowns; on by
    /// default). The quality harness turns them off: its scorer does not yet credit a
    /// consequence's anomalies to the fault behind it.
    #[serde(default = "consequences_on")]
    pub consequences: bool,
}

fn consequences_on() -> bool {
    true
}

impl Default for RuntimeConfig {
    /// The command line's defaults.
    fn default() -> Self {
        RuntimeConfig {
            routers: 1000,
            interval_ms: 1000,
            fault_rate: 0.1,
            profile: TelemetryProfile::Clean,
            consequences: true,
        }
    }
}

/// A partial update of the runtime config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    pub routers: Option<u32>,
    pub interval_ms: Option<u64>,
    pub fault_rate: Option<f64>,
    pub profile: Option<TelemetryProfile>,
    pub consequences: Option<bool>,
}

/// Why the engine refused a request. The API maps each to an HTTP status.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error("router {0:?} does not exist (ids are rtr-000000 to the fleet size - 1)")]
    UnknownRouter(String),
    #[error("fault {0:?} does not exist")]
    UnknownFault(String),
    #[error("site {given:?} has no routers in this fleet (its sites: {sites})")]
    UnknownSite { given: String, sites: String },
    #[error("fault {0} has already ended")]
    FaultEnded(String),
    #[error("{field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("unknown action {given:?}; valid actions: {}", ActionKind::names().join(", "))]
    UnknownAction { given: String },
    #[error("action {0:?} does not exist")]
    UnknownActionId(String),
    /// The router cannot take an action now (it is reloading, or the action is running).
    #[error("router {router} {what} until {until} (event time, ms)")]
    Busy { router: String, what: &'static str, until: i64 },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EngineError {
    EngineError::Invalid { field, reason: reason.into() }
}

/// A requested fault's length (ms) and magnitude, the kind's defaults where absent.
fn checked_strength(req: &FaultRequest) -> Result<(i64, f64), EngineError> {
    let spec = faults::spec(req.kind);
    let duration_s = match req.duration_s {
        Some(d) if !d.is_finite() || d <= 0.0 => {
            return Err(invalid("duration_s", format!("{d} must be a positive number of seconds")));
        }
        Some(d) if d > 7.0 * 86_400.0 => {
            return Err(invalid("duration_s", format!("{d} is over 7 days")));
        }
        Some(d) => d,
        None => (spec.random_duration_s.0 + spec.random_duration_s.1) / 2.0,
    };
    let magnitude = req.magnitude.unwrap_or(spec.default_magnitude);
    let (lo, hi) = spec.magnitude_limits;
    if !(magnitude.is_finite() && magnitude > lo && magnitude <= hi) {
        return Err(invalid(
            "magnitude",
            format!("{magnitude} is outside ({lo}, {hi}] for {} ({})", req.kind.name(), spec.magnitude_unit),
        ));
    }
    Ok(((duration_s * 1000.0) as i64, magnitude))
}

impl RuntimeConfig {
    pub fn validate(&self) -> Result<(), EngineError> {
        if !(1..=MAX_ROUTERS).contains(&self.routers) {
            return Err(invalid("routers", format!("{} is outside 1..={MAX_ROUTERS}", self.routers)));
        }
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.interval_ms) {
            return Err(invalid(
                "interval_ms",
                format!("{} is outside {MIN_INTERVAL_MS}..={MAX_INTERVAL_MS}", self.interval_ms),
            ));
        }
        if !(self.fault_rate.is_finite() && (0.0..=MAX_FAULT_RATE).contains(&self.fault_rate)) {
            return Err(invalid("fault_rate", format!("{} is outside 0..={MAX_FAULT_RATE}", self.fault_rate)));
        }
        Ok(())
    }
}

/// A request to inject a fault (`POST /faults`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    pub kind: FaultKind,
    /// The target router; a random one when absent.
    pub router: Option<String>,
    /// Seconds of event time; the kind's typical length when absent.
    pub duration_s: Option<f64>,
    /// Kind-specific strength (see `faults::spec`); the kind's default when absent.
    pub magnitude: Option<f64>,
}

/// The simulation.
#[derive(Debug)]
pub struct Engine {
    seed: u64,
    config: RuntimeConfig,
    fleet: Fleet,
    faults: FaultBook,
    /// Planned changes (realistic profile only).
    changes: ChangeBook,
    /// What faults left alone led to.
    consequences: ConsequenceBook,
    /// Remediation actions, running and done.
    actions: ActionBook,
    /// Draws the random schedule and the flapping faults' per-sample state.
    rng: ChaCha8Rng,
    /// Draws the planned changes: a stream of its own, so the faults are the same under
    /// either profile.
    change_rng: ChaCha8Rng,
    /// Event time of the first sample.
    start: i64,
    /// Event time of the latest sample, or of the start before the first one.
    now: i64,
    ticks: u64,
}

impl Engine {
    /// A new engine whose first sample will be at `start` (epoch ms).
    pub fn new(seed: u64, config: RuntimeConfig, start: i64) -> Result<Engine, EngineError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(u64::MAX);
        let mut change_rng = ChaCha8Rng::seed_from_u64(seed);
        change_rng.set_stream(u64::MAX - 1);
        Ok(Engine {
            seed,
            fleet: Fleet::new(seed, config.routers, config.profile),
            config,
            faults: FaultBook::default(),
            changes: ChangeBook::default(),
            consequences: ConsequenceBook::default(),
            actions: ActionBook::default(),
            rng,
            change_rng,
            start,
            now: start,
            ticks: 0,
        })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Event time of the latest sample (the start time before the first tick).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Event time of the first sample.
    pub fn started(&self) -> i64 {
        self.start
    }

    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Event time of the next sample.
    pub fn next_ts(&self) -> i64 {
        if self.ticks == 0 { self.now } else { self.now + self.config.interval_ms as i64 }
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    pub fn faults(&self) -> &FaultBook {
        &self.faults
    }

    pub fn changes(&self) -> &ChangeBook {
        &self.changes
    }

    pub fn consequences(&self) -> &ConsequenceBook {
        &self.consequences
    }

    pub fn actions(&self) -> &ActionBook {
        &self.actions
    }

    /// Each router's latest sample.
    pub fn records(&self) -> &[Record] {
        self.fleet.records()
    }

    /// The records the latest tick delivered, what the sinks get: every router's latest
    /// sample under `clean`; under `realistic` less the lost ones and plus late ones from
    /// earlier ticks.
    pub fn delivered(&self) -> &[Record] {
        self.fleet.delivered()
    }

    /// Produces one sample per router at event time `ts`: completes due actions, ends expired
    /// faults, draws new ones from the schedule, steps the fleet, then checks what the new
    /// samples lead to (consequences start with the next sample).
    pub fn tick(&mut self, ts: i64) {
        let dt_ms = if self.ticks == 0 { self.config.interval_ms as i64 } else { (ts - self.now).max(0) };
        self.complete_actions(ts);
        self.faults.expire(ts);
        self.schedule(ts, dt_ms);
        let mut effects = self.faults.effects(ts, &mut self.rng);
        if self.config.profile == TelemetryProfile::Realistic {
            for (index, at) in self.changes.expire(ts) {
                // A maintenance window ends with a reboot.
                self.fleet.restart(index, at);
            }
            self.changes.schedule(&mut self.change_rng, ts, dt_ms, self.fleet.profiles());
            self.changes.effects_into(ts, &mut effects);
        }
        self.consequences.effects_into(ts, &mut effects);
        self.actions.effects_into(ts, &mut effects);
        self.fleet.step(ts, self.config.interval_ms, |i| effects.remove(&i));
        self.now = ts;
        self.ticks += 1;
        let at = self.next_ts();
        if self.config.consequences {
            for crash in self.consequences.update(ts, at, &self.fleet, &self.faults) {
                self.crash(crash);
            }
        }
    }

    /// Carries out a crash: the reload frees the leaked memory and kills a runaway process
    /// (those faults end), and the router is down until the reload is over.
    fn crash(&mut self, Crash { router_index, at }: Crash) {
        let ended: Vec<String> = self
            .faults
            .on_router(router_index)
            .filter(|f| matches!(f.event.kind, FaultKind::MemoryLeak | FaultKind::CpuRunaway))
            .map(|f| f.event.id.clone())
            .collect();
        for id in ended {
            self.faults.end(&id, at);
        }
        self.fleet.restart(router_index, at + consequences::RELOAD_MS);
    }

    /// Completes the actions due by `ts`: each ends the faults it fixes that were active on
    /// its router when it completed.
    fn complete_actions(&mut self, ts: i64) {
        for action in self.actions.due(ts) {
            let done = action.record.completes_at;
            let index = action.router_index;
            let mut fixed = Vec::new();
            if (index as usize) < self.fleet.len() {
                let kind = action.record.action;
                fixed = self
                    .faults
                    .on_router(index)
                    .filter(|f| kind.fixes(f.event.kind) && f.event.start < done && done < f.event.end)
                    .map(|f| FixedFault { id: f.event.id.clone(), kind: f.event.kind })
                    .collect();
                for f in &fixed {
                    self.faults.end(&f.id, done);
                }
                if kind == ActionKind::RestartProcess {
                    self.fleet.reconverge(index, done);
                }
            }
            let record = self.actions.complete(action, fixed);
            tracing::debug!(id = %record.id, outcome = ?record.outcome, "action completed");
        }
    }

    /// Starts a remediation action on a router with the next sample (`POST
    /// /routers/{id}/actions`); it completes after the action's delay.
    pub fn act(&mut self, router: &str, req: &ActionRequest) -> Result<ActionRecord, EngineError> {
        let index = self.lookup(router)?;
        let action = ActionKind::from_name(&req.action)
            .ok_or_else(|| EngineError::UnknownAction { given: req.action.clone() })?;
        for (field, value, max) in
            [("reason", &req.reason, MAX_REASON_BYTES), ("requested_by", &req.requested_by, MAX_REQUESTED_BY_BYTES)]
        {
            if let Some(v) = value.as_ref().filter(|v| v.len() > max) {
                return Err(invalid(field, format!("{} bytes is over {max}", v.len())));
            }
        }
        let at = self.next_ts();
        let busy = |what, until| EngineError::Busy { router: router.to_owned(), what, until };
        if let Some(until) = self.consequences.reload_until(index, at) {
            return Err(busy("is rebooting after a crash", until));
        }
        if let Some(until) = self.actions.restart_until(index, at) {
            return Err(busy("is restarting its routing process", until));
        }
        if let Some(a) = self.actions.running().iter().find(|a| a.router_index == index && a.record.action == action) {
            return Err(busy("is already running this action", a.record.completes_at));
        }
        Ok(self.actions.start(NewAction {
            action,
            router_index: index,
            router: router.to_owned(),
            at,
            reason: req.reason.clone(),
            requested_by: req.requested_by.clone(),
        }))
    }

    /// Draws the faults that start at `ts`: a Poisson number for the fleet over the last step,
    /// each on a uniformly chosen router with a random kind, magnitude and duration.
    fn schedule(&mut self, ts: i64, dt_ms: i64) {
        let expected = self.config.fault_rate * f64::from(self.config.routers) * dt_ms as f64 / 86_400_000.0;
        if expected <= 0.0 {
            return;
        }
        let count = Poisson::new(expected).map(|p| p.sample(&mut self.rng) as u64).unwrap_or(0);
        for _ in 0..count {
            let index = self.rng.random_range(0..self.config.routers);
            let kind = FaultKind::ALL[self.rng.random_range(0..FaultKind::ALL.len())];
            let spec = faults::spec(kind);
            let magnitude = self.rng.random_range(spec.random_magnitude.0..=spec.random_magnitude.1);
            let duration_s = self.rng.random_range(spec.random_duration_s.0..=spec.random_duration_s.1).round();
            // One fault of a kind per router at a time keeps the ground truth unambiguous.
            if self.faults.slot_taken(index, kind) {
                continue;
            }
            self.faults.start(NewFault {
                kind,
                router_index: index,
                router: &self.fleet.profiles()[index as usize].id,
                start: ts,
                duration_ms: (duration_s * 1000.0) as i64,
                magnitude: (magnitude * 1000.0).round() / 1000.0,
                source: Source::Schedule,
            });
        }
    }

    /// Injects a fault that starts with the next sample.
    pub fn inject(&mut self, req: &FaultRequest) -> Result<FaultView, EngineError> {
        let index = match &req.router {
            Some(id) => self.lookup(id)?,
            None => self.rng.random_range(0..self.config.routers),
        };
        let (duration_ms, magnitude) = checked_strength(req)?;
        Ok(self.start_api_fault(req.kind, index, duration_ms, magnitude))
    }

    /// Injects the same fault on every router of `site`, all starting with the next sample:
    /// what a problem the routers share (an upstream link, the site's power or cooling) looks
    /// like. `req.router` must be absent.
    pub fn inject_site(&mut self, site: &str, req: &FaultRequest) -> Result<Vec<FaultView>, EngineError> {
        if req.router.is_some() {
            return Err(invalid("router", "a site fault goes to every router of the site: leave router out"));
        }
        let routers: Vec<u32> = self.fleet.profiles().iter().filter(|p| p.site == site).map(|p| p.index).collect();
        if routers.is_empty() {
            let mut sites: Vec<&str> = self.fleet.profiles().iter().map(|p| p.site).collect();
            sites.sort_unstable();
            sites.dedup();
            return Err(EngineError::UnknownSite { given: site.chars().take(64).collect(), sites: sites.join(", ") });
        }
        let (duration_ms, magnitude) = checked_strength(req)?;
        Ok(routers.into_iter().map(|index| self.start_api_fault(req.kind, index, duration_ms, magnitude)).collect())
    }

    fn start_api_fault(&mut self, kind: FaultKind, index: u32, duration_ms: i64, magnitude: f64) -> FaultView {
        let start = self.next_ts();
        self.faults.start(NewFault {
            kind,
            router_index: index,
            router: &self.fleet.profiles()[index as usize].id,
            start,
            duration_ms,
            magnitude,
            source: Source::Api,
        })
    }

    /// Ends a fault: the next sample is free of it.
    pub fn clear(&mut self, id: &str) -> Result<FaultView, EngineError> {
        let at = self.next_ts();
        match self.faults.end(id, at) {
            Some(view) => Ok(view),
            None if self.faults.get(id).is_some() => Err(EngineError::FaultEnded(id.to_owned())),
            None => Err(EngineError::UnknownFault(id.to_owned())),
        }
    }

    /// Ends every fault on a router.
    pub fn clear_router(&mut self, router: &str) -> Result<Vec<FaultView>, EngineError> {
        let index = self.lookup(router)?;
        let at = self.next_ts();
        Ok(self.faults.end_router(index, at))
    }

    /// Restarts a router: its faults end and its BGP sessions re-establish from zero.
    pub fn restart(&mut self, router: &str) -> Result<(i64, Vec<FaultView>), EngineError> {
        let index = self.lookup(router)?;
        let at = self.next_ts();
        let cleared = self.faults.end_router(index, at);
        self.fleet.restart(index, at);
        Ok((at, cleared))
    }

    /// Applies a config change; a shrinking fleet ends the faults of the routers it drops.
    pub fn reconfigure(&mut self, patch: &ConfigPatch) -> Result<RuntimeConfig, EngineError> {
        let next = RuntimeConfig {
            routers: patch.routers.unwrap_or(self.config.routers),
            interval_ms: patch.interval_ms.unwrap_or(self.config.interval_ms),
            fault_rate: patch.fault_rate.unwrap_or(self.config.fault_rate),
            profile: patch.profile.unwrap_or(self.config.profile),
            consequences: patch.consequences.unwrap_or(self.config.consequences),
        };
        next.validate()?;
        let at = self.next_ts();
        if next.routers < self.config.routers {
            self.faults.end_beyond(next.routers, at);
            self.changes.end_beyond(next.routers, at);
            self.consequences.end_beyond(next.routers, at);
        }
        if next.profile == TelemetryProfile::Clean {
            self.changes.end_beyond(0, at);
        }
        self.fleet.resize(next.routers);
        self.fleet.set_telemetry(next.profile);
        self.config = next.clone();
        Ok(next)
    }

    pub fn lookup(&self, id: &str) -> Result<u32, EngineError> {
        self.fleet.lookup(id).ok_or_else(|| EngineError::UnknownRouter(id.to_owned()))
    }

    pub fn profile(&self, id: &str) -> Result<&Profile, EngineError> {
        let index = self.lookup(id)?;
        Ok(&self.fleet.profiles()[index as usize])
    }

    /// Hands over the ground-truth changes since the last call.
    pub fn take_notices(&mut self) -> Vec<FaultNotice> {
        self.faults.take_notices()
    }

    /// Hands over the planned changes scheduled or ended since the last call.
    pub fn take_change_notices(&mut self) -> Vec<ChangeNotice> {
        self.changes.take_notices()
    }

    /// Hands over the consequences started or ended since the last call.
    pub fn take_consequence_notices(&mut self) -> Vec<ConsequenceNotice> {
        self.consequences.take_notices()
    }

    /// Hands over the actions requested or completed since the last call.
    pub fn take_action_notices(&mut self) -> Vec<ActionNotice> {
        self.actions.take_notices()
    }
}
