//! The telemetry profiles. `clean` is the original model: Gaussian noise, smooth cycles,
//! every router of a role on one scale, every sample on time. `realistic` adds what real
//! router telemetry has (see `simulator/README.md`, "Telemetry profiles", for the sources of
//! the parameters):
//!
//! * heavy-tailed (Student-t, 3 degrees of freedom) measurement noise;
//! * bursty traffic: a share of each router's traffic comes from ON/OFF sources with Pareto
//!   period lengths, whose superposition is self-similar;
//! * quantised sensors (0.5 degree C, 60 rpm), error counters that come in bursts, BGP
//!   sessions that flap one by one for heavy-tailed lengths of time;
//! * missing samples (single drops and outages) and late, out-of-order records;
//! * a day-of-week shape on top of the weekend, different for every router;
//! * scales (capacity, utilisation, sessions, error rates, latency) that differ by orders of
//!   magnitude between routers.
//!
//! Everything realistic draws from its own random streams, so the clean profile's draws, and
//! so its records, are the same with or without this module.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use routewatch_telemetry::{Metrics, Role};
use serde::{Deserialize, Serialize};

use crate::faults::Effects;
use crate::fleet::{Profile, weekend_weight};

/// Which kind of telemetry the fleet produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TelemetryProfile {
    /// Gaussian noise, smooth cycles, one scale per role, every sample on time.
    #[default]
    Clean,
    /// Heavy tails, bursts, quantised sensors, real counters, missing and late samples,
    /// weekly shapes, very different scales, and benign planned changes.
    Realistic,
}

impl TelemetryProfile {
    pub const fn name(self) -> &'static str {
        match self {
            TelemetryProfile::Clean => "clean",
            TelemetryProfile::Realistic => "realistic",
        }
    }
}

impl std::fmt::Display for TelemetryProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// ON/OFF sources per router whose superposition makes the bursty share of its traffic.
pub const SOURCES: usize = 16;
/// Pareto shape of the ON and OFF period lengths. Willinger et al. 1997 measured 1.2 to 1.7 on
/// Ethernet sources; 1.4 gives a Hurst parameter H = (3 - 1.4) / 2 = 0.8, the value Leland et
/// al. 1994 measured on aggregate LAN traffic.
pub const ONOFF_ALPHA: f64 = 1.4;
/// Shortest ON or OFF period, seconds (the mean is 1.4 / 0.4 x 60 = 210 s).
pub const ONOFF_MIN_S: f64 = 60.0;
/// Share of a router's traffic that is bursty, drawn per router from this range.
pub const BURST_SHARE: (f64, f64) = (0.15, 0.45);
/// Degrees of freedom of the Student-t measurement noise (finite variance, infinite kurtosis).
pub const NOISE_DF: f64 = 3.0;
/// Temperature sensors report in steps of this many degrees C.
pub const TEMP_STEP_C: f64 = 0.5;
/// Fan tachometers report in steps of this many rpm.
pub const FAN_STEP_RPM: f64 = 60.0;
/// Chance that a sample is lost on its own (a dropped poll or export).
pub const DROP_P: f64 = 0.005;
/// Chance per sample that an outage of the telemetry path starts.
pub const OUTAGE_P: f64 = 0.000_5;
/// Outage lengths in samples: Pareto with this shape from 2 samples, capped.
pub const OUTAGE_ALPHA: f64 = 1.5;
pub const OUTAGE_MAX: u32 = 240;
/// Chance that a sample arrives late, and the most ticks it can be late by (it is then out of
/// order behind newer samples of the same router).
pub const LATE_P: f64 = 0.005;
pub const LATE_MAX_TICKS: u64 = 5;
/// Error bursts: started at this share of the router's background error rate, lasting a
/// geometric number of samples with this mean, each sample counting a Pareto number of errors
/// (shape 1.5, at least 5).
pub const ERROR_BURST_SHARE: f64 = 0.2;
pub const ERROR_BURST_MEAN_SAMPLES: f64 = 3.0;
/// Each BGP session flaps this often per day on a healthy router, and stays down for a
/// Pareto time (shape 1.5, at least 30 s, at most an hour).
pub const SESSION_FLAPS_PER_DAY: f64 = 0.05;
pub const SESSION_DOWN_MIN_S: f64 = 30.0;

/// A Pareto draw: `min x U^(-1/alpha)`.
pub fn pareto(rng: &mut ChaCha8Rng, min: f64, alpha: f64) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    min * u.powf(-1.0 / alpha)
}

/// A Student-t draw with `NOISE_DF` (3) degrees of freedom, scaled to unit variance.
pub fn student_t3(rng: &mut ChaCha8Rng) -> f64 {
    let mut normal = || -> f64 { StandardNormal.sample(rng) };
    let z = normal();
    let chi2 = normal().powi(2) + normal().powi(2) + normal().powi(2);
    // t_3 has variance 3; divide by sqrt(3) so the scale compares with a unit Gaussian.
    z / (chi2 / NOISE_DF).sqrt().max(1e-12) / NOISE_DF.sqrt()
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (rng.random_range(lo.ln()..hi.ln())).exp()
}

/// Spreads a router's scales over orders of magnitude (drawn from its own stream, so the
/// clean profile's fields are drawn exactly as before and then replaced).
pub fn rescale(p: &mut Profile, rng: &mut ChaCha8Rng) {
    let (capacity, sessions) = match p.role {
        Role::Access => ((3e8, 4e10), (1.0, 4.0)),
        Role::Edge => ((1e10, 4e11), (4.0, 300.0)),
        Role::Core => ((1e11, 1.6e12), (10.0, 2000.0)),
    };
    p.capacity_bps = log_uniform(rng, capacity.0, capacity.1);
    p.bgp_sessions = log_uniform(rng, sessions.0, sessions.1 + 0.999).floor() as u32;
    p.base_util = log_uniform(rng, 0.02, 0.55);
    p.errors_per_min = log_uniform(rng, 1e-3, 1.0);
    p.latency_base_ms = log_uniform(rng, 0.2, 80.0);
    p.loss_base = 10f64.powf(rng.random_range(-7.0..-3.5));
}

/// Whether and when a sample is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    OnTime,
    Missing,
    /// This many ticks late.
    Late(u64),
}

/// A router's realistic state: its own random stream, the ON/OFF sources, the outage, error
/// burst and session flaps in progress.
#[derive(Debug, Clone)]
pub struct Realism {
    rng: ChaCha8Rng,
    /// Bit i set: source i is ON.
    on: u32,
    left_s: [f32; SOURCES],
    burst_share: f64,
    /// Scales the role's day-of-week shape and weekend dip or rise.
    weekly_amp: f64,
    outage_left: u32,
    error_burst_left: u32,
    /// Event times at which each flapped session comes back.
    sessions_back_at: Vec<i64>,
}

impl Realism {
    pub fn new(mut rng: ChaCha8Rng) -> Realism {
        let mut on = 0;
        let mut left_s = [0.0; SOURCES];
        for (i, left) in left_s.iter_mut().enumerate() {
            if rng.random::<bool>() {
                on |= 1 << i;
            }
            *left = pareto(&mut rng, ONOFF_MIN_S, ONOFF_ALPHA) as f32;
        }
        let burst_share = rng.random_range(BURST_SHARE.0..BURST_SHARE.1);
        let weekly_amp = rng.random_range(0.5..2.0);
        Realism {
            rng,
            on,
            left_s,
            burst_share,
            weekly_amp,
            outage_left: 0,
            error_burst_left: 0,
            sessions_back_at: Vec::new(),
        }
    }

    /// Before the sample: bursts and the weekly shape multiply the offered traffic.
    pub fn before(&mut self, p: &Profile, ts: i64, dt_s: f64, fx: &mut Effects) {
        fx.traffic_mul *= self.burst(dt_s);
        fx.traffic_mul *= self.weekly(p, ts);
    }

    /// Advances the ON/OFF sources by `dt_s`; the traffic factor of the bursty share, mean 1.
    fn burst(&mut self, dt_s: f64) -> f64 {
        for i in 0..SOURCES {
            let mut left = f64::from(self.left_s[i]) - dt_s;
            while left <= 0.0 {
                self.on ^= 1 << i;
                left += pareto(&mut self.rng, ONOFF_MIN_S, ONOFF_ALPHA).min(86_400.0);
            }
            self.left_s[i] = left as f32;
        }
        // Half the sources are ON on average, so the bursty share keeps its mean.
        let on_share = f64::from(self.on.count_ones()) / (SOURCES as f64 / 2.0);
        (1.0 - self.burst_share) + self.burst_share * on_share
    }

    /// The day-of-week factor: business traffic (edge, core) is highest early in the week and
    /// falls on Friday; residential (access) rises towards the weekend. Interpolated between
    /// the middles of the days, so it has no step at midnight; the clean model's weekend level
    /// is deepened or softened by the router's own amplitude.
    fn weekly(&self, p: &Profile, ts: i64) -> f64 {
        const BUSINESS: [f64; 7] = [0.04, 0.03, 0.02, 0.0, -0.05, 0.0, 0.0];
        const RESIDENTIAL: [f64; 7] = [-0.02, -0.02, -0.01, 0.0, 0.03, 0.0, 0.0];
        let shape = if p.role == Role::Access { &RESIDENTIAL } else { &BUSINESS };
        let local_h = ts as f64 / 3_600_000.0 + p.utc_offset_h;
        let day = (local_h / 24.0 + 3.0).rem_euclid(7.0);
        let x = (day - 0.5).rem_euclid(7.0);
        let (i, frac) = (x.floor() as usize % 7, x.fract());
        let dow = shape[i] * (1.0 - frac) + shape[(i + 1) % 7] * frac;
        let weekend_level = match p.role {
            Role::Access => 1.10,
            Role::Edge => 0.80,
            Role::Core => 0.90,
        };
        let weekend = 1.0 + (self.weekly_amp - 1.0) * (weekend_level - 1.0) * weekend_weight(day);
        (1.0 + self.weekly_amp * dow) * weekend
    }

    /// After the sample: measurement noise, sensor steps, error bursts, session flaps.
    pub fn after(&mut self, p: &Profile, ts: i64, dt_s: f64, m: &mut Metrics) {
        let rng = &mut self.rng;
        // Counter-derived rates carry heavy-tailed measurement error (Roughan 2010).
        let rx = m.rx_bps * (0.02 * student_t3(rng)).exp();
        m.rx_bps = rx.min(p.capacity_bps).round();
        m.tx_bps = (m.tx_bps * (0.02 * student_t3(rng)).exp()).min(p.capacity_bps).round();
        m.cpu_util = round(m.cpu_util + 0.01 * student_t3(rng), 1e4).clamp(0.005, 1.0);
        m.mem_util = round(m.mem_util + 0.001 * student_t3(rng), 1e4).clamp(0.01, 0.995);
        m.latency_ms = round(m.latency_ms * (0.08 * student_t3(rng)).exp(), 1e3).max(0.01);
        m.temp_c = (m.temp_c / TEMP_STEP_C).round() * TEMP_STEP_C;
        m.fan_rpm = ((m.fan_rpm / FAN_STEP_RPM).round() * FAN_STEP_RPM).max(0.0);

        // Errors come in bursts on top of the background Poisson count.
        if self.error_burst_left == 0 && rng.random::<f64>() < ERROR_BURST_SHARE * p.errors_per_min * dt_s / 60.0 {
            self.error_burst_left = 1 + (-(1.0 - rng.random::<f64>()).ln() * ERROR_BURST_MEAN_SAMPLES) as u32;
        }
        if self.error_burst_left > 0 {
            self.error_burst_left -= 1;
            m.if_errors += pareto(rng, 5.0, 1.5).floor().min(1e6);
        }

        // Sessions flap one at a time and stay down for heavy-tailed times.
        self.sessions_back_at.retain(|&back| back > ts);
        let flap_p = f64::from(p.bgp_sessions) * SESSION_FLAPS_PER_DAY * dt_s / 86_400.0;
        if rng.random::<f64>() < flap_p {
            let down_s = pareto(rng, SESSION_DOWN_MIN_S, 1.5).min(3600.0);
            self.sessions_back_at.push(ts + (down_s * 1000.0) as i64);
        }
        m.bgp_up = (m.bgp_up - self.sessions_back_at.len() as f64).max(0.0);
    }

    /// Whether this sample is delivered, lost, or late.
    pub fn delivery(&mut self) -> Delivery {
        if self.outage_left > 0 {
            self.outage_left -= 1;
            return Delivery::Missing;
        }
        let u: f64 = self.rng.random();
        if u < OUTAGE_P {
            self.outage_left = (pareto(&mut self.rng, 2.0, OUTAGE_ALPHA) as u32).min(OUTAGE_MAX) - 1;
            Delivery::Missing
        } else if u < OUTAGE_P + DROP_P {
            Delivery::Missing
        } else if u < OUTAGE_P + DROP_P + LATE_P {
            Delivery::Late(self.rng.random_range(1..=LATE_MAX_TICKS))
        } else {
            Delivery::OnTime
        }
    }
}

fn round(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn pareto_has_its_minimum_and_its_tail() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let xs: Vec<f64> = (0..100_000).map(|_| pareto(&mut rng, 60.0, 1.4)).collect();
        assert!(xs.iter().all(|&x| x >= 60.0));
        // P(X > 10 min) = (60 / 600)^1.4 = 0.040.
        let tail = xs.iter().filter(|&&x| x > 600.0).count() as f64 / xs.len() as f64;
        assert!((tail - 0.040).abs() < 0.004, "{tail}");
    }

    /// The aggregated-variance estimate of the Hurst parameter of the burst factor: the
    /// variance of block means of size m falls as m^(2H - 2).
    #[test]
    fn bursts_are_self_similar_with_a_hurst_parameter_near_0_8() {
        let mut real = Realism::new(ChaCha8Rng::seed_from_u64(3));
        let xs: Vec<f64> = (0..1 << 18).map(|_| real.burst(60.0)).collect();
        let (mut sx, mut sy, mut sxx, mut sxy, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for k in 4..=10 {
            let m = 1usize << k;
            let means: Vec<f64> = xs.chunks_exact(m).map(|c| c.iter().sum::<f64>() / m as f64).collect();
            let mean = means.iter().sum::<f64>() / means.len() as f64;
            let var = means.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / means.len() as f64;
            let (x, y) = ((m as f64).ln(), var.ln());
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
            n += 1.0;
        }
        let slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
        let hurst = 1.0 + slope / 2.0;
        // Short-range (Poisson-like) traffic has H = 0.5; the theory for Pareto 1.4 gives 0.8.
        assert!((0.7..0.95).contains(&hurst), "H = {hurst:.3}");
    }

    #[test]
    fn student_t_has_unit_variance_and_heavy_tails() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let xs: Vec<f64> = (0..200_000).map(|_| student_t3(&mut rng)).collect();
        // Beyond 5 sd: a Gaussian has 6e-7 of its mass there; t_3 scaled to unit variance has
        // P(|T| > 5 sqrt 3) = 0.0032.
        let far = xs.iter().filter(|x| x.abs() > 5.0).count() as f64 / xs.len() as f64;
        assert!(far > 0.0025 && far < 0.004, "{far}");
        let median_abs = {
            let mut a: Vec<f64> = xs.iter().map(|x| x.abs()).collect();
            a.sort_by(f64::total_cmp);
            a[a.len() / 2]
        };
        // Median |t_3| = 0.765, over sqrt 3.
        assert!((median_abs - 0.765 / 3f64.sqrt()).abs() < 0.01, "{median_abs}");
    }
}
