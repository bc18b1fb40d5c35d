//! The robustness suite: every shipped detector that judges single series, through its real
//! Wasm component, on seeded series no one tuned it on (issue 12, item 5), and on extreme but
//! valid values (issue 14, item 7).
//!
//! Detectors: `arima`, `seasonal` (configured with the series' period, 288) and `changepoint`
//! (which judges level shifts only, so a lone spike is checked to be *not* called one).
//! `lstm` forecasts a router's ten metrics together, and `fleet-outlier` compares a router with
//! its peers: neither judges a single series, and both are in the extreme-values test only.
//! (Fed one series as `cpu_util` with the other nine missing, the LSTM runs outside what it
//! was trained on and fails the noiseless, spike and shift cases: see plugins/lstm/README.md.)

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use routewatch_host::runtime::{Batch, Column, Limits, Output, Plugin, Runtime, RuntimeConfig};

const N: usize = 10_000;
const CHUNK: usize = 500;
const PERIOD: f64 = 288.0;
/// The robust sd of Student-t(3): its MAD / 0.6745.
const T3_ROBUST_SD: f64 = 1.134;

struct Detector {
    name: &'static str,
    plugin: Plugin,
    config: Option<&'static str>,
    /// Whether a lone spike is this detector's business.
    spikes: bool,
    /// Samples from a shift's onset within which it must be found (3, the target; changepoint
    /// confirms with three samples after the change and is allowed 5: a known shortfall).
    shift_delay: usize,
}

fn detectors() -> &'static [Detector] {
    static DETECTORS: OnceLock<Vec<Detector>> = OnceLock::new();
    DETECTORS.get_or_init(|| {
        let runtime = runtime();
        let load = |stem: &str| runtime.load_file(&common::component(stem)).expect("component loads");
        vec![
            Detector { name: "arima", plugin: load("routewatch_arima"), config: None, spikes: true, shift_delay: 3 },
            Detector {
                name: "seasonal",
                plugin: load("routewatch_seasonal"),
                config: Some(r#"{"period": 288, "window": 576, "refit_every": 288}"#),
                spikes: true,
                shift_delay: 3,
            },
            Detector {
                name: "changepoint",
                plugin: load("routewatch_changepoint"),
                config: None,
                spikes: false,
                shift_delay: 5,
            },
        ]
    })
}

fn runtime() -> Runtime {
    let limits = Limits { cpu_budget: Duration::from_secs(60), memory_bytes: 512 << 20, ..Limits::default() };
    Runtime::new(RuntimeConfig { cache_dir: None, limits, ..RuntimeConfig::default() }).expect("runtime starts")
}

/// Scores and anomaly rows of one series run through a fresh instance of `detector`.
struct Run {
    scores: Vec<f32>,
    anomalies: Vec<usize>,
}

fn run(detector: &Detector, values: &[f64]) -> Run {
    run_plugin(&detector.plugin, detector.config, "cpu_util", values)
}

fn run_plugin(plugin: &Plugin, config: Option<&str>, metric: &str, values: &[f64]) -> Run {
    let mut instance = plugin.instantiate().unwrap();
    if let Some(config) = config {
        instance.configure(config).unwrap();
    }
    let mut result = Run { scores: Vec::new(), anomalies: Vec::new() };
    for (c, chunk) in values.chunks(CHUNK).enumerate() {
        let start = c * CHUNK;
        let batch = Batch {
            routers: vec![0; chunk.len()],
            timestamps: (start..start + chunk.len()).map(|i| i as i64 * 60_000).collect(),
            columns: vec![Column { metric: metric.into(), values: chunk.to_vec() }],
        };
        let out: Output = instance.process(&batch).expect("batch is processed");
        result.scores.extend(&out.scores);
        result.anomalies.extend(out.anomalies.iter().map(|a| start + a.row as usize));
    }
    result
}

/// Seeded generator: xorshift, Box-Muller, Student-t(3) as a normal over a chi.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn gaussian(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    fn student3(&mut self) -> f64 {
        let z = self.gaussian();
        let chi: f64 = (0..3).map(|_| self.gaussian().powi(2)).sum();
        z / (chi / 3.0).sqrt()
    }
}

/// 50 plus Student-t(3) noise of robust sd 2.
fn heavy_tailed(seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..N).map(|_| 50.0 + 2.0 / T3_ROBUST_SD * rng.student3()).collect()
}

fn periodic() -> Vec<f64> {
    (0..N).map(|t| 100.0 + 10.0 * (t as f64 * std::f64::consts::TAU / PERIOD).sin()).collect()
}

/// Collects every detector's failure, then fails with all of them.
fn check(failures: Vec<String>) {
    let failures: Vec<String> = failures.into_iter().map(|f| f.chars().take(400).collect()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn heavy_tailed_noise_scores_at_most_three_points_at_the_decision() {
    let values = heavy_tailed(1);
    let mut failures = Vec::new();
    for d in detectors() {
        let r = run(d, &values);
        let high = r.scores.iter().filter(|&&s| s >= 0.5).count();
        if high > 3 {
            failures.push(format!("{}: {high} points of Student-t(3) noise score 0.5 or more", d.name));
        }
        if r.scores.iter().all(|&s| s == 0.0) {
            failures.push(format!("{}: no score at all (the series was not judged)", d.name));
        }
    }
    check(failures);
}

#[test]
fn noiseless_periodic_and_constant_series_score_nothing_at_the_decision() {
    let mut failures = Vec::new();
    for (label, values) in [("periodic", periodic()), ("constant", vec![42.0; N]), ("constant 0.35", vec![0.35; N])] {
        for d in detectors() {
            let r = run(d, &values);
            let high = r.scores.iter().filter(|&&s| s >= 0.5).count();
            if high > 0 || !r.anomalies.is_empty() {
                failures
                    .push(format!("{}: {label}: {high} points at 0.5 or more, anomalies at {:?}", d.name, r.anomalies));
            }
        }
    }
    check(failures);
}

#[test]
fn a_level_shift_of_five_robust_sd_in_heavy_tails_is_found_within_three_samples() {
    const AT: usize = 6000;
    let mut failures = Vec::new();
    for seed in [2, 3] {
        let mut values = heavy_tailed(seed);
        values[AT..].iter_mut().for_each(|v| *v += 5.0 * 2.0);
        for d in detectors() {
            let r = run(d, &values);
            if !r.anomalies.iter().any(|&i| (AT..=AT + d.shift_delay).contains(&i)) {
                let near: Vec<usize> = r.anomalies.iter().copied().filter(|i| i.abs_diff(AT) < 50).collect();
                failures.push(format!(
                    "{}: seed {seed}: no anomaly in samples {AT}..={}; near: {near:?}",
                    d.name,
                    AT + d.shift_delay
                ));
            }
        }
    }
    check(failures);
}

#[test]
fn a_spike_of_ten_sd_in_a_noiseless_series_is_found_on_that_sample() {
    const AT: usize = 6000;
    let mut values = periodic();
    // The series' own sd is 10 / sqrt(2).
    values[AT] += 10.0 * 10.0 / 2f64.sqrt();
    let mut failures = Vec::new();
    for d in detectors() {
        let r = run(d, &values);
        if d.spikes {
            if !r.anomalies.contains(&AT) || r.scores[AT] < 0.5 {
                failures
                    .push(format!("{}: spike missed (score {}, anomalies {:?})", d.name, r.scores[AT], r.anomalies));
            }
        } else if !r.anomalies.is_empty() {
            failures.push(format!("{}: a lone spike is not a level shift, anomalies at {:?}", d.name, r.anomalies));
        }
    }
    check(failures);
}

/// A recurring spike (a nightly job, say) in noise whose errors alternate (MA(1), theta -0.6,
/// as quantised utilisation often is) must not echo: once the spikes are ordinary, the
/// samples after one are not anomalies. (ARIMA once fed each spike whole into its MA term and
/// forecast the next sample far below the level: a false level shift after every spike, seen
/// on public CloudWatch CPU series.)
#[test]
fn a_recurring_spike_leaves_no_echo_in_the_samples_after_it() {
    const EVERY: usize = 288;
    let mut failures = Vec::new();
    for seed in [1, 2] {
        let mut rng = Rng::new(seed);
        let mut previous = 0.0;
        let values: Vec<f64> = (0..N)
            .map(|t| {
                let e = rng.gaussian();
                let noise = e - 0.6 * previous;
                previous = e;
                10.0 + noise + if t % EVERY == 100 { 15.0 } else { 0.0 }
            })
            .collect();
        for d in detectors() {
            let r = run(d, &values);
            let echoes: Vec<usize> =
                r.anomalies.iter().copied().filter(|&i| i % EVERY == 101 || i % EVERY == 102).collect();
            if !echoes.is_empty() {
                failures.push(format!("{}: seed {seed}: anomalies just after a spike at {echoes:?}", d.name));
            }
        }
    }
    check(failures);
}

#[test]
fn a_counter_at_zero_with_blips_of_one_or_two_raises_nothing() {
    let mut rng = Rng::new(4);
    let values: Vec<f64> = (0..N)
        .map(|_| {
            let u = rng.uniform();
            if u < 0.01 {
                1.0
            } else if u < 0.02 {
                2.0
            } else {
                0.0
            }
        })
        .collect();
    let mut failures = Vec::new();
    for d in detectors() {
        let r = run(d, &values);
        let blips: Vec<usize> = r.anomalies.iter().copied().filter(|&i| values[i] > 0.0).collect();
        if !blips.is_empty() {
            failures.push(format!("{}: anomalies on blips at {blips:?}", d.name));
        }
    }
    check(failures);
}

#[test]
fn ten_percent_missing_values_leave_scores_and_raise_no_anomaly_at_the_gaps() {
    let mut rng = Rng::new(5);
    let values: Vec<f64> = (0..N)
        .map(|t| {
            let v = 100.0 + 10.0 * (t as f64 * std::f64::consts::TAU / PERIOD).sin() + rng.gaussian();
            if rng.uniform() < 0.1 { f64::NAN } else { v }
        })
        .collect();
    let mut failures = Vec::new();
    for d in detectors() {
        let r = run(d, &values);
        let scored = (N / 2..N).filter(|&i| values[i].is_finite() && r.scores[i] > 0.0).count();
        let present = (N / 2..N).filter(|&i| values[i].is_finite()).count();
        if scored * 2 < present {
            failures.push(format!("{}: only {scored} of {present} present values scored in the second half", d.name));
        }
        let at_gaps: Vec<usize> = r
            .anomalies
            .iter()
            .copied()
            .filter(|&i| !values[i].is_finite() || (i > 0 && !values[i - 1].is_finite()))
            .collect();
        if !at_gaps.is_empty() || r.anomalies.len() > 3 {
            failures.push(format!(
                "{}: anomalies {:?} ({} at or just after a gap)",
                d.name,
                r.anomalies,
                at_gaps.len()
            ));
        }
    }
    check(failures);
}

#[test]
fn extreme_but_valid_values_break_no_detector() {
    let runtime = runtime();
    let fleet = runtime.load_file(&common::component("routewatch_fleet_outlier")).expect("component loads");
    let lstm = Detector {
        name: "lstm",
        plugin: runtime.load_file(&common::component("routewatch_lstm")).expect("component loads"),
        config: None,
        spikes: true,
        shift_delay: 3,
    };
    let extremes = [1.7e308, -1e308, f64::MAX, -f64::MAX, 5e-324, -5e-324, 1e-310, 0.0, -0.0, 1e300, -1e300, 3.0];
    let mut rng = Rng::new(6);
    // Ordinary values, then extremes and huge jumps between them.
    let mut values: Vec<f64> = (0..400).map(|_| 10.0 + rng.gaussian()).collect();
    for i in 0..2000 {
        let pick = (rng.uniform() * extremes.len() as f64) as usize % extremes.len();
        values.push(if i % 3 == 0 { 10.0 + rng.gaussian() } else { extremes[pick] });
    }
    let mut failures = Vec::new();
    for d in detectors().iter().chain([&lstm]) {
        for metric in ["cpu_util", "some_new_metric", "if_errors"] {
            let mut instance = d.plugin.instantiate().unwrap();
            if let Some(config) = d.config {
                instance.configure(config).unwrap();
            }
            for (c, chunk) in values.chunks(CHUNK).enumerate() {
                let start = c * CHUNK;
                let batch = Batch {
                    routers: vec![0; chunk.len()],
                    timestamps: (start..start + chunk.len()).map(|i| i as i64 * 60_000).collect(),
                    columns: vec![Column { metric: metric.into(), values: chunk.to_vec() }],
                };
                match instance.process(&batch) {
                    Ok(out) => failures.extend(non_finite(d.name, &out)),
                    Err(e) => {
                        failures.push(format!("{} on {metric}: {e}", d.name));
                        break;
                    }
                }
            }
            // The state is still whole: it snapshots and restores.
            if let Ok(snapshot) = instance.snapshot() {
                let mut fresh = d.plugin.instantiate().unwrap();
                if let Err(e) = fresh.restore(&snapshot) {
                    failures.push(format!("{} on {metric}: restore after extremes: {e}", d.name));
                }
            }
        }
    }
    // Fleet outlier: 30 routers, a few of them extreme at every timestamp.
    let mut instance = fleet.instantiate().unwrap();
    for t in 0..300usize {
        let routers: Vec<u32> = (0..30).collect();
        let values: Vec<f64> = routers
            .iter()
            .map(|&r| {
                if t > 80 && r as usize % 7 == t % 7 {
                    extremes[(t + r as usize) % extremes.len()]
                } else {
                    10.0 + rng.gaussian()
                }
            })
            .collect();
        let batch = Batch {
            routers,
            timestamps: vec![t as i64 * 60_000; 30],
            columns: vec![Column { metric: "some_new_metric".into(), values }],
        };
        match instance.process(&batch) {
            Ok(out) => failures.extend(non_finite("fleet-outlier", &out)),
            Err(e) => {
                failures.push(format!("fleet-outlier at tick {t}: {e}"));
                break;
            }
        }
    }
    check(failures);
}

/// Anomalies with a non-finite number (the host checks scores and reasons itself).
fn non_finite(name: &str, out: &Output) -> Vec<String> {
    out.anomalies
        .iter()
        .filter(|a| ![a.observed, a.expected, a.lower, a.upper, a.score].iter().all(|v| v.is_finite()))
        .map(|a| format!("{name}: non-finite anomaly {a:?}"))
        .collect()
}
