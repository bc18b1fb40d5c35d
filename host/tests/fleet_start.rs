//! A fleet that starts together: every series of a partition reaches its warm-up at the same
//! timestamp (a new host, a new detector, a replay). A detector that fitted them all there did
//! it in one call, and 1,000 routers x 10 metrics took longer than the sandbox's CPU budget for
//! a call, so the detector was stopped at warm-up. Each test runs such a fleet through the real
//! component at a budget of 200 ms a call, one timestamp a batch, and fails on a detector that
//! does not spread its first fits (`SeriesKey::share` in the SDK).

mod common;

use std::time::Duration;

use common::{Noise, component};
use routewatch_host::runtime::{Batch, Column, Instance, Limits, Runtime, RuntimeConfig};
use routewatch_telemetry::Metric;

fn instance(name: &str, config: Option<&str>) -> Instance {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        limits: Limits { cpu_budget: Duration::from_millis(200), memory_bytes: 1 << 30, ..Limits::default() },
        ..RuntimeConfig::default()
    })
    .unwrap();
    let mut instance = runtime.load_file(&component(name)).unwrap().instantiate().unwrap();
    if let Some(config) = config {
        instance.configure(config).unwrap();
    }
    instance
}

/// Runs `ticks` timestamps of a fleet of `routers`, a minute apart, and returns, per timestamp,
/// how many series scored for the first time (a series that has not fitted scores exactly 0; a
/// fitted one above 0 almost surely).
fn run_fleet(instance: &mut Instance, routers: u32, ticks: i64) -> Vec<usize> {
    let mut noise = Noise::new(11);
    let mut scored = vec![false; routers as usize * Metric::ALL.len()];
    let mut first_scored = Vec::new();
    for tick in 0..ticks {
        let columns = Metric::ALL
            .iter()
            .enumerate()
            .map(|(m, metric)| Column {
                metric: metric.name().into(),
                values: (0..routers)
                    .map(|r| {
                        let cycle = (tick as f64 * std::f64::consts::TAU / 60.0).sin();
                        10.0 * (m + 1) as f64 + f64::from(r % 7) + cycle + noise.gaussian()
                    })
                    .collect(),
            })
            .collect();
        let batch =
            Batch { routers: (0..routers).collect(), timestamps: vec![tick * 60_000; routers as usize], columns };
        let out = instance.process(&batch).unwrap_or_else(|e| panic!("timestamp {tick}: {e}"));
        let mut new = 0;
        for (seen, &score) in scored.iter_mut().zip(&out.scores) {
            if !*seen && score != 0.0 {
                *seen = true;
                new += 1;
            }
        }
        first_scored.push(new);
    }
    first_scored
}

/// The series' first scores fall on `from..=to` (all but `slack` of them), no more than twice
/// an even share on any one timestamp.
fn assert_spread(first_scored: &[usize], from: usize, to: usize, series: usize, slack: usize) {
    let first_scored: Vec<(usize, usize)> = first_scored.iter().copied().enumerate().filter(|&(_, n)| n > 0).collect();
    let first_scored = &first_scored;
    let inside: usize = first_scored.iter().filter(|(t, _)| (from..=to).contains(t)).map(|(_, n)| n).sum();
    assert!(
        inside + slack >= series,
        "{inside} of {series} series first scored in {from}..={to}: (timestamp, series) {first_scored:?}"
    );
    let even = series / (to - from + 1);
    let most = first_scored.iter().map(|&(_, n)| n).max().unwrap_or(0);
    assert!(most <= 2 * even, "{most} series first scored at one timestamp, against an even {even}: {first_scored:?}");
}

#[test]
fn arima_spreads_the_first_fits_of_a_fleet() {
    // 10,000 series in the budget of 200 ms a call (all their first fits in one call took a
    // second); warm-up 120 samples, plus each series' share of up to 60 more.
    let first_scored = run_fleet(&mut instance("routewatch_arima", None), 1000, 200);
    assert_spread(&first_scored, 120, 180, 10_000, 100);
}

#[test]
fn seasonal_spreads_the_first_fits_of_a_fleet() {
    // A period of 60 samples: the first fit after two periods plus each series' share of up to
    // a quarter of one more (15 samples).
    let config = r#"{"period": 60, "window": 120, "refit_every": 60}"#;
    let first_scored = run_fleet(&mut instance("routewatch_seasonal", Some(config)), 1000, 150);
    assert_spread(&first_scored, 120, 135, 10_000, 100);
}
