//! The fleet model: who the routers are (profiles) and how their metrics move (dynamics).
//!
//! Every router owns a random stream derived from `(seed, index)`, so a router's profile and
//! series depend only on the seed, its index and the sample times: growing or shrinking the
//! fleet never changes the routers that stay.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};
use routewatch_telemetry::{Metrics, Record, Role, SCHEMA_VERSION};

use crate::faults::Effects;
use crate::realism::{self, Delivery, Realism, TelemetryProfile};

/// Regions with their UTC offset in hours (which shifts the daily cycle) and their sites.
const REGIONS: &[(&str, f64, &[&str])] = &[
    ("eu-central", 1.0, &["fra1", "fra2", "muc1", "zrh1", "vie1"]),
    ("eu-west", 0.0, &["lon1", "lon2", "ams1", "dub1", "par1"]),
    ("us-east", -5.0, &["nyc1", "iad1", "atl1", "bos1", "mia1"]),
    ("us-west", -8.0, &["sjc1", "lax1", "sea1", "pdx1"]),
    ("ap-southeast", 8.0, &["sin1", "kul1", "jkt1", "syd1"]),
    ("ap-northeast", 9.0, &["tyo1", "osa1", "icn1", "hkg1"]),
    ("sa-east", -3.0, &["gru1", "eze1", "scl1"]),
];

const VENDORS: &[&str] = &["cisco", "juniper", "arista", "nokia"];

/// Time constant of the slow traffic fluctuation (AR(1) in log space), seconds.
const TRAFFIC_TAU_S: f64 = 900.0;
/// Thermal time constant of a chassis, seconds.
const THERMAL_TAU_S: f64 = 180.0;
/// Idle chassis sensor temperature above the room's.
const CHASSIS_RISE_C: f64 = 10.0;
/// How long BGP takes to re-establish every session after a restart, seconds.
pub const BGP_CONVERGENCE_S: f64 = 180.0;

/// The static description of one router, fixed by `(seed, index)`.
#[derive(Debug, Clone)]
pub struct Profile {
    pub index: u32,
    pub id: String,
    pub role: Role,
    pub site: &'static str,
    pub region: &'static str,
    pub vendor: &'static str,
    /// Local time offset from UTC, hours (drives the phase of the daily cycle).
    pub utc_offset_h: f64,
    /// Aggregate interface capacity, bits per second.
    pub capacity_bps: f64,
    /// Mean link utilisation (ratio of capacity) at the daily mean.
    pub base_util: f64,
    /// tx/rx ratio (access routers mostly deliver downstream).
    pub tx_ratio: f64,
    pub cpu_idle: f64,
    pub cpu_per_util: f64,
    pub mem_base: f64,
    pub ambient_c: f64,
    pub temp_per_cpu: f64,
    pub fan_base_rpm: f64,
    pub latency_base_ms: f64,
    pub loss_base: f64,
    pub bgp_sessions: u32,
    pub errors_per_min: f64,
}

impl Profile {
    /// The router's profile: the clean one, with its scales spread out under `realistic`.
    fn for_telemetry(seed: u64, index: u32, telemetry: TelemetryProfile) -> Profile {
        let mut profile = Profile::generate(seed, index);
        if telemetry == TelemetryProfile::Realistic {
            realism::rescale(&mut profile, &mut stream(seed, index, 3));
        }
        profile
    }

    fn generate(seed: u64, index: u32) -> Profile {
        let mut rng = stream(seed, index, 0);
        let role = match rng.random::<f64>() {
            x if x < 0.05 => Role::Core,
            x if x < 0.30 => Role::Edge,
            _ => Role::Access,
        };
        let (region, utc_offset_h, sites) = REGIONS[rng.random_range(0..REGIONS.len())];
        let site = sites[rng.random_range(0..sites.len())];
        let vendor = VENDORS[rng.random_range(0..VENDORS.len())];
        let (capacity_bps, tx_ratio, latency_base_ms, bgp_sessions) = match role {
            Role::Core => (400e9, rng.random_range(0.9..1.1), rng.random_range(0.4..2.0), rng.random_range(8..=32)),
            Role::Edge => (100e9, rng.random_range(0.6..1.0), rng.random_range(2.0..8.0), rng.random_range(4..=16)),
            Role::Access => (10e9, rng.random_range(0.25..0.6), rng.random_range(5.0..20.0), rng.random_range(1..=4)),
        };
        // Vendors differ in idle CPU, memory footprint and cooling.
        let vendor_ix = VENDORS.iter().position(|v| *v == vendor).unwrap_or(0) as f64;
        Profile {
            index,
            id: router_id(index),
            role,
            site,
            region,
            vendor,
            utc_offset_h,
            capacity_bps,
            base_util: rng.random_range(0.15..0.45),
            tx_ratio,
            cpu_idle: 0.05 + 0.02 * vendor_ix + rng.random_range(0.0..0.05),
            cpu_per_util: rng.random_range(0.3..0.5),
            mem_base: 0.30 + 0.05 * vendor_ix + rng.random_range(0.0..0.15),
            ambient_c: rng.random_range(22.0..28.0),
            temp_per_cpu: rng.random_range(15.0..25.0),
            fan_base_rpm: 5000.0 + 600.0 * vendor_ix + rng.random_range(-300.0..300.0),
            latency_base_ms,
            loss_base: 10f64.powf(rng.random_range(-5.5..-4.0)),
            bgp_sessions,
            errors_per_min: rng.random_range(0.0..0.2),
        }
    }

    /// The mean daily-cycle peak hour and amplitude, and the weekend level, by role:
    /// residential access peaks in the evening and rises at weekends; business and transit
    /// traffic peaks in the afternoon and falls at weekends.
    fn cycle(&self) -> (f64, f64, f64) {
        match self.role {
            Role::Access => (21.0, 0.45, 1.10),
            Role::Edge => (15.0, 0.35, 0.80),
            Role::Core => (16.0, 0.25, 0.90),
        }
    }
}

/// The router id for a fleet index: `rtr-000042`.
pub fn router_id(index: u32) -> String {
    format!("rtr-{index:06}")
}

/// The fleet index for a router id, if the id is well-formed (the fleet checks the range).
pub fn parse_router_id(id: &str) -> Option<u32> {
    let digits = id.strip_prefix("rtr-")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index = digits.parse().ok()?;
    (router_id(index) == id).then_some(index)
}

/// A random stream per (seed, router, purpose): purpose 0 draws the profile, 1 the dynamics,
/// 2 the realistic profile's dynamics and 3 its scales.
fn stream(seed: u64, index: u32, purpose: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((u64::from(index) << 2) | purpose);
    rng
}

/// What changes from sample to sample.
#[derive(Debug, Clone)]
struct State {
    rng: ChaCha8Rng,
    /// Slow traffic deviation, log space.
    traffic_ar: f64,
    /// Slow CPU deviation, ratio.
    cpu_ar: f64,
    /// Chassis temperature, lags its target.
    temp_c: f64,
    /// Event time of the previous sample, to scale the dynamics by the real step.
    last_ts: Option<i64>,
    /// Event time of the last restart (BGP converges and CPU is busy for a while after it).
    restarted_at: Option<i64>,
    /// The latest sample's memory and CPU before they were clipped to 0..1 (what the
    /// consequences watch: a leak that reaches 100% crashes the routing process).
    mem: f64,
    cpu: f64,
    /// Since the last reboot (or the start of the simulation).
    counters: Counters,
}

/// A router's interface counters since it booted, as SNMP's `ifHCInOctets` and friends count
/// them: a reboot resets them.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Counters {
    /// Event time the router came up, ms; absent when it has been up since before the
    /// simulation started.
    pub booted_at: Option<i64>,
    pub rx_bytes: f64,
    pub tx_bytes: f64,
    pub if_errors: f64,
}

/// What the consequences watch on a router after each sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vitals {
    /// Memory in use, ratio, before clipping (at or above 1 the process is out of memory).
    pub mem: f64,
    /// CPU in use, ratio of the (possibly throttled) CPU, before clipping.
    pub cpu: f64,
    /// Chassis temperature, degrees C (the model's, before sensor quantisation).
    pub temp_c: f64,
}

/// The fleet: profiles, dynamic state and each router's latest sample.
#[derive(Debug)]
pub struct Fleet {
    seed: u64,
    telemetry: TelemetryProfile,
    profiles: Vec<Profile>,
    states: Vec<State>,
    records: Vec<Record>,
    /// Realistic profile only: per-router state, the records delivered by the latest step
    /// (on time or late), and the late ones still held back with the step they are due at.
    realism: Vec<Realism>,
    outbox: Vec<Record>,
    held: Vec<(u64, Record)>,
    steps: u64,
}

impl Fleet {
    pub fn new(seed: u64, size: u32, telemetry: TelemetryProfile) -> Fleet {
        let mut fleet = Fleet {
            seed,
            telemetry,
            profiles: Vec::new(),
            states: Vec::new(),
            records: Vec::new(),
            realism: Vec::new(),
            outbox: Vec::new(),
            held: Vec::new(),
            steps: 0,
        };
        fleet.resize(size);
        fleet
    }

    pub fn telemetry(&self) -> TelemetryProfile {
        self.telemetry
    }

    /// Switches the telemetry profile: the profiles' scales are redrawn for it, the dynamic
    /// state carries on.
    pub fn set_telemetry(&mut self, telemetry: TelemetryProfile) {
        if telemetry == self.telemetry {
            return;
        }
        self.telemetry = telemetry;
        for (index, profile) in self.profiles.iter_mut().enumerate() {
            *profile = Profile::for_telemetry(self.seed, index as u32, telemetry);
        }
        self.realism.clear();
        self.outbox.clear();
        self.held.clear();
        if telemetry == TelemetryProfile::Realistic {
            self.realism = (0..self.profiles.len() as u32).map(|i| Realism::new(stream(self.seed, i, 2))).collect();
        }
    }

    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// Grows (new routers get the next indices) or shrinks (the highest indices go).
    pub fn resize(&mut self, size: u32) {
        let size = size as usize;
        self.profiles.truncate(size);
        self.states.truncate(size);
        self.records.truncate(size);
        self.realism.truncate(size);
        self.held.retain(|(_, r)| parse_router_id(&r.router).is_some_and(|i| (i as usize) < size));
        for index in self.profiles.len()..size {
            let profile = Profile::for_telemetry(self.seed, index as u32, self.telemetry);
            if self.telemetry == TelemetryProfile::Realistic {
                self.realism.push(Realism::new(stream(self.seed, index as u32, 2)));
            }
            let state = State {
                rng: stream(self.seed, index as u32, 1),
                traffic_ar: 0.0,
                cpu_ar: 0.0,
                temp_c: profile.ambient_c + CHASSIS_RISE_C + 4.0,
                last_ts: None,
                restarted_at: None,
                mem: 0.0,
                cpu: 0.0,
                counters: Counters::default(),
            };
            let record = Record {
                schema: SCHEMA_VERSION,
                router: profile.id.clone(),
                site: profile.site.to_owned(),
                region: profile.region.to_owned(),
                role: profile.role,
                vendor: profile.vendor.to_owned(),
                ts: 0,
                metrics: Metrics::default(),
            };
            self.profiles.push(profile);
            self.states.push(state);
            self.records.push(record);
        }
    }

    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    pub fn profile(&self, index: u32) -> Option<&Profile> {
        self.profiles.get(index as usize)
    }

    /// The index of a router id in this fleet.
    pub fn lookup(&self, id: &str) -> Option<u32> {
        parse_router_id(id).filter(|&i| (i as usize) < self.profiles.len())
    }

    /// Each router's latest sample (`ts` is 0 before the first step).
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The records the latest step delivered: under `clean` every router's latest sample;
    /// under `realistic` without the lost ones, and with late ones from earlier steps after
    /// the on-time ones (so out of order for their router).
    pub fn delivered(&self) -> &[Record] {
        match self.telemetry {
            TelemetryProfile::Clean => &self.records,
            TelemetryProfile::Realistic => &self.outbox,
        }
    }

    /// Marks a router as rebooted, up again at `ts`: its BGP sessions re-establish from zero
    /// and its counters start again. A `ts` in the future means it is down until then.
    pub fn restart(&mut self, index: u32, ts: i64) {
        self.reconverge(index, ts);
        if let Some(state) = self.states.get_mut(index as usize) {
            state.counters = Counters { booted_at: Some(ts), ..Counters::default() };
        }
    }

    /// Marks the routing process as restarted at `ts` (the router stays up, its counters
    /// count on): its BGP sessions re-establish from zero.
    pub fn reconverge(&mut self, index: u32, ts: i64) {
        if let Some(state) = self.states.get_mut(index as usize) {
            state.restarted_at = Some(ts);
            state.traffic_ar = 0.0;
            state.cpu_ar = 0.0;
        }
    }

    /// What the consequences watch, after the latest sample.
    pub fn vitals(&self, index: u32) -> Option<Vitals> {
        self.states.get(index as usize).map(|s| Vitals { mem: s.mem, cpu: s.cpu, temp_c: s.temp_c })
    }

    /// The router's counters since it booted.
    pub fn counters(&self, index: u32) -> Option<Counters> {
        self.states.get(index as usize).map(|s| s.counters)
    }

    /// Advances every router to event time `ts`, applying `effects(index)` (the faults active
    /// on that router, if any), and rewrites each router's latest record in place.
    pub fn step(&mut self, ts: i64, interval_ms: u64, mut effects: impl FnMut(u32) -> Option<Effects>) {
        if self.telemetry == TelemetryProfile::Realistic {
            return self.step_realistic(ts, interval_ms, effects);
        }
        let neutral = Effects::default();
        for ((profile, state), record) in self.profiles.iter().zip(&mut self.states).zip(&mut self.records) {
            let fx = effects(profile.index);
            let dt_s = step_s(state, ts, interval_ms);
            record.ts = ts;
            record.metrics = sample(profile, state, ts, dt_s, fx.as_ref().unwrap_or(&neutral));
        }
    }

    /// The realistic step: the same dynamics between the realistic pre- and post-processing,
    /// then delivery (on time, lost or held back).
    fn step_realistic(&mut self, ts: i64, interval_ms: u64, mut effects: impl FnMut(u32) -> Option<Effects>) {
        self.steps += 1;
        let mut delivered = 0;
        let parts = self.profiles.iter().zip(&mut self.states).zip(&mut self.records).zip(&mut self.realism);
        for (((profile, state), record), real) in parts {
            let mut fx = effects(profile.index).unwrap_or_default();
            let dt_s = step_s(state, ts, interval_ms);
            real.before(profile, ts, dt_s, &mut fx);
            let mut metrics = sample(profile, state, ts, dt_s, &fx);
            real.after(profile, ts, dt_s, &mut metrics);
            record.ts = ts;
            record.metrics = metrics;
            match real.delivery() {
                Delivery::OnTime => {
                    copy_into(&mut self.outbox, delivered, record);
                    delivered += 1;
                }
                Delivery::Missing => {}
                Delivery::Late(ticks) => self.held.push((self.steps + ticks, record.clone())),
            }
        }
        let steps = self.steps;
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].0 <= steps {
                let (_, record) = self.held.swap_remove(i);
                copy_into(&mut self.outbox, delivered, &record);
                delivered += 1;
            } else {
                i += 1;
            }
        }
        self.outbox.truncate(delivered);
    }
}

/// Seconds since the router's previous sample (the interval before the first).
fn step_s(state: &mut State, ts: i64, interval_ms: u64) -> f64 {
    let dt_s = match state.last_ts {
        Some(last) if ts > last => (ts - last) as f64 / 1000.0,
        _ => interval_ms as f64 / 1000.0,
    };
    state.last_ts = Some(ts);
    dt_s
}

/// Writes `record` into slot `at` of `out`, reusing the slot's strings (no allocation per
/// record once the buffer has grown).
fn copy_into(out: &mut Vec<Record>, at: usize, record: &Record) {
    match out.get_mut(at) {
        Some(slot) => {
            slot.schema = record.schema;
            slot.router.clone_from(&record.router);
            slot.site.clone_from(&record.site);
            slot.region.clone_from(&record.region);
            slot.role = record.role;
            slot.vendor.clone_from(&record.vendor);
            slot.ts = record.ts;
            slot.metrics = record.metrics;
        }
        None => out.push(record.clone()),
    }
}

/// One sample of one router. The causal chain is: time of day and week -> traffic ->
/// link utilisation -> CPU, queueing latency and congestion loss; CPU and cooling ->
/// temperature (with thermal lag); temperature -> fan speed (the fan controller).
fn sample(p: &Profile, s: &mut State, ts: i64, dt_s: f64, fx: &Effects) -> Metrics {
    let rng = &mut s.rng;
    let mut normal = || -> f64 { StandardNormal.sample(rng) };

    // Daily and weekly cycles in local time.
    let local_h = ts as f64 / 3_600_000.0 + p.utc_offset_h;
    let hour = local_h.rem_euclid(24.0);
    let (peak_h, daily_amp, weekend_level) = p.cycle();
    let phase = std::f64::consts::TAU * (hour - peak_h) / 24.0;
    let daily = 1.0 + daily_amp * (phase.cos() + 0.25 * (2.0 * phase).cos()) / 1.25;
    // 1970-01-01 was a Thursday: shift so that day 0 is a Monday.
    let day = (local_h / 24.0 + 3.0).rem_euclid(7.0);
    let weekly = 1.0 + (weekend_level - 1.0) * weekend_weight(day);

    // Slow fluctuation (AR(1) whose variance does not depend on the step) plus fast noise.
    let phi = (-dt_s / TRAFFIC_TAU_S).exp();
    s.traffic_ar = phi * s.traffic_ar + 0.08 * (1.0 - phi * phi).sqrt() * normal();
    let since_restart = s.restarted_at.map(|r| (ts - r) as f64 / 1000.0);
    let offered_util = p.base_util * daily * weekly * (s.traffic_ar + 0.03 * normal()).exp() * fx.traffic_mul;
    let util = offered_util.min(0.995);
    // What the links could not carry is dropped.
    let overflow_loss = if offered_util > util { 1.0 - util / offered_util } else { 0.0 };
    let rx_bps = p.capacity_bps * util;
    let tx_bps = (rx_bps * p.tx_ratio * (0.02 * normal()).exp()).min(p.capacity_bps * 0.995);

    let cpu_phi = (-dt_s / 600.0).exp();
    s.cpu_ar = cpu_phi * s.cpu_ar + 0.02 * (1.0 - cpu_phi * cpu_phi).sqrt() * normal();
    // Route recomputation after a restart or during a route flap keeps the control plane busy.
    let converging = since_restart.is_some_and(|t| t < BGP_CONVERGENCE_S);
    let control_plane = if converging { 0.25 } else { 0.0 } + 0.15 * fx.bgp_down_frac;
    let demand = p.cpu_idle + p.cpu_per_util * util + s.cpu_ar + 0.01 * normal() + control_plane + fx.cpu_add;
    // The work done at full clock; a throttled CPU (`cpu_clock` < 1) needs a larger share of
    // itself for it, and makes proportionally less heat.
    let work = demand.clamp(0.005, 1.0);
    let cpu = (work / fx.cpu_clock).min(1.0);
    s.cpu = demand / fx.cpu_clock;

    let mem_used = p.mem_base + 0.05 * util + 0.003 * normal() + fx.mem_add;
    s.mem = mem_used;
    let mem = mem_used.clamp(0.01, 0.995);

    // The fan controller reacts to the temperature it last saw; a fault can cut or upset it.
    let nominal_c = p.ambient_c + CHASSIS_RISE_C + 4.0;
    let fan_demand = (1.0 + 0.04 * (s.temp_c - nominal_c)).clamp(0.7, 1.8);
    let fan_jitter = if fx.fan_jitter > 0.0 { 1.0 + fx.fan_jitter * (2.0 * normal().tanh()) } else { 1.0 };
    let fan_rpm = (p.fan_base_rpm * fan_demand * fx.fan_mul * fan_jitter * (1.0 + 0.01 * normal())).max(0.0);
    // Less air than the controller asked for means less cooling.
    let cooling_deficit = (1.0 - fx.fan_mul * fan_jitter.min(1.0)).max(0.0);
    let ambient = p.ambient_c + 1.5 * (phase.cos());
    let temp_target = ambient
        + CHASSIS_RISE_C
        + p.temp_per_cpu * work * fx.cpu_clock
        + 4.0 * util
        + 30.0 * cooling_deficit
        + fx.temp_add;
    let alpha = 1.0 - (-dt_s / THERMAL_TAU_S).exp();
    s.temp_c += (temp_target - s.temp_c) * alpha + 0.15 * normal();

    // Queueing delay grows as utilisation approaches 1 (M/M/1-like), plus jitter.
    let queueing = 0.2 * util / (1.0 - util.min(0.99));
    let latency_ms =
        ((p.latency_base_ms * (1.0 + queueing) * (0.05 * normal()).exp()) * fx.latency_mul + fx.latency_add).max(0.01);

    let congestion_loss = 0.02 * ((util - 0.9).max(0.0) / 0.1).powi(2);
    let loss = (p.loss_base * (0.3 * normal()).exp() + congestion_loss + overflow_loss + fx.loss_add).clamp(0.0, 1.0);

    let lambda = (p.errors_per_min + fx.errors_per_min) * dt_s / 60.0;
    let if_errors = if lambda > 0.0 { Poisson::new(lambda).map(|d| d.sample(&mut s.rng)).unwrap_or(0.0) } else { 0.0 };

    let sessions = f64::from(p.bgp_sessions);
    let mut bgp_up = sessions - (sessions * fx.bgp_down_frac).round();
    if let Some(t) = since_restart.filter(|t| *t < BGP_CONVERGENCE_S) {
        bgp_up = bgp_up.min((sessions * t / BGP_CONVERGENCE_S).floor());
    }
    // A lone session bounces now and then on a healthy router too.
    if bgp_up >= 1.0 && s.rng.random::<f64>() < 0.0005 {
        bgp_up -= 1.0;
    }

    s.counters.rx_bytes += rx_bps * dt_s / 8.0;
    s.counters.tx_bytes += tx_bps * dt_s / 8.0;
    s.counters.if_errors += if_errors;

    Metrics {
        cpu_util: round(cpu, 1e4),
        mem_util: round(mem, 1e4),
        temp_c: round(s.temp_c, 1e2),
        fan_rpm: fan_rpm.round(),
        latency_ms: round(latency_ms, 1e3),
        loss_ratio: round(loss, 1e7),
        rx_bps: rx_bps.round(),
        tx_bps: tx_bps.round(),
        if_errors,
        bgp_up: bgp_up.max(0.0),
    }
}

/// 1 from Saturday to Sunday, 0 on weekdays, with three-hour smooth transitions at midnight.
pub(crate) fn weekend_weight(day: f64) -> f64 {
    let edge = 0.125;
    let smooth = |x: f64| {
        let x = x.clamp(0.0, 1.0);
        x * x * (3.0 - 2.0 * x)
    };
    // Unwrap the week so that the weekend and both of its edges are contiguous.
    let d = if day < 3.5 { day + 7.0 } else { day };
    smooth((d - 5.0 + edge) / (2.0 * edge)) * (1.0 - smooth((d - 7.0 + edge) / (2.0 * edge)))
}

/// Rounds to a fixed number of decimals so records stay short (the noise is far coarser).
fn round(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_lookalikes() {
        assert_eq!(router_id(42), "rtr-000042");
        assert_eq!(parse_router_id("rtr-000042"), Some(42));
        assert_eq!(parse_router_id("rtr-1234567"), Some(1_234_567));
        for bad in ["rtr-42", "rtr-0000042", "router-000042", "rtr-00004x", "", "rtr-"] {
            assert_eq!(parse_router_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn weekend_weight_is_one_at_weekends_and_zero_midweek() {
        assert_eq!(weekend_weight(2.5), 0.0);
        assert_eq!(weekend_weight(5.5), 1.0);
        assert_eq!(weekend_weight(6.5), 1.0);
        assert_eq!(weekend_weight(0.5), 0.0);
        // Continuous across Monday midnight.
        assert!((weekend_weight(6.999_999) - weekend_weight(0.0)).abs() < 1e-3);
        let near_monday = weekend_weight(0.05);
        assert!(near_monday > 0.0 && near_monday < 1.0);
    }
}
