//! The detector components, loaded by the host's runtime and fed simulator data: each finds
//! the fault kinds it is meant for and stays quiet on a fault-free fleet.
//!
//! The components are found in `<target>/wasm32-wasip2/plugin` (build them first with
//! `cargo xtask build`), relative to this test binary, so any `CARGO_TARGET_DIR` works.

use std::path::PathBuf;
use std::time::Duration;

use routewatch_runtime::{AnomalyKind, Batch, Column, Instance, Limits, Plugin, Runtime, RuntimeConfig};
use routewatch_simulator::engine::FaultRequest;
use routewatch_simulator::{Engine, RuntimeConfig as SimConfig};
use routewatch_telemetry::{FaultKind, Metric};

const START: i64 = 1_736_121_600_000;
const MINUTE: i64 = 60_000;

fn component(stem: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe.ancestors().nth(3).expect("test binary lives in <target>/<profile>/deps");
    let path = target.join("wasm32-wasip2").join("plugin").join(format!("{stem}.wasm"));
    assert!(path.is_file(), "{} is missing: build the plugins first with `cargo xtask build`", path.display());
    path
}

fn runtime() -> Runtime {
    let limits = Limits { cpu_budget: Duration::from_secs(60), memory_bytes: 512 << 20, ..Limits::default() };
    Runtime::new(RuntimeConfig { limits, ..RuntimeConfig::default() }).expect("runtime starts")
}

fn load(runtime: &Runtime, stem: &str, name: &str) -> Plugin {
    let plugin = runtime.load_file(&component(stem)).expect("component loads");
    assert_eq!(plugin.info().name, name);
    plugin
}

/// One batch per tick: every router's sample, all ten metrics.
struct Fleet {
    engine: Engine,
    routers: u32,
    tick: i64,
}

impl Fleet {
    fn new(routers: u32, seed: u64) -> Fleet {
        let config = SimConfig { routers, interval_ms: MINUTE as u64, fault_rate: 0.0, ..Default::default() };
        Fleet { engine: Engine::new(seed, config, START).expect("engine"), routers, tick: 0 }
    }

    fn next(&mut self) -> Batch {
        let ts = START + self.tick * MINUTE;
        self.tick += 1;
        self.engine.tick(ts);
        let records = self.engine.records();
        Batch {
            routers: (0..self.routers).collect(),
            timestamps: vec![ts; records.len()],
            columns: Metric::ALL
                .iter()
                .map(|&m| Column {
                    metric: m.name().into(),
                    values: records.iter().map(|r| r.metrics.get(m)).collect(),
                })
                .collect(),
        }
    }

    fn inject(&mut self, kind: FaultKind, router: u32, minutes: f64) {
        let req = FaultRequest {
            kind,
            router: Some(format!("rtr-{router:06}")),
            duration_s: Some(minutes * 60.0),
            magnitude: None,
        };
        self.engine.inject(&req).expect("fault injected");
    }
}

/// (tick, router, metric, kind) of every anomaly over `ticks` ticks.
type Found = Vec<(i64, u32, String, AnomalyKind)>;

fn run(instance: &mut Instance, fleet: &mut Fleet, ticks: usize) -> Found {
    let mut found = Vec::new();
    for _ in 0..ticks {
        let batch = fleet.next();
        let out = instance.process(&batch).expect("batch is processed");
        assert_eq!(out.scores.len(), batch.routers.len() * batch.columns.len(), "one score per point");
        for a in &out.anomalies {
            let tick = (batch.timestamps[a.row as usize] - START) / MINUTE;
            found.push((tick, batch.routers[a.row as usize], batch.columns[a.column as usize].metric.clone(), a.kind));
        }
    }
    found
}

/// Anomalies on `router` from `from` to `from + within` ticks, on any of `metrics`.
fn hits(found: &Found, router: u32, from: i64, within: i64, metrics: &[&str]) -> usize {
    found
        .iter()
        .filter(|(t, r, m, _)| *r == router && (from..=from + within).contains(t) && metrics.contains(&m.as_str()))
        .count()
}

/// Alarms (anomalies of one router and metric at most ten ticks apart) per router-day.
fn alarms_per_router_day(found: &Found, routers: u32, ticks: usize) -> f64 {
    let mut keys: Vec<(u32, &str, i64)> = found.iter().map(|(t, r, m, _)| (*r, m.as_str(), *t)).collect();
    keys.sort_unstable();
    let mut alarms = 0;
    for (i, k) in keys.iter().enumerate() {
        if i == 0 || keys[i - 1].0 != k.0 || keys[i - 1].1 != k.1 || k.2 - keys[i - 1].2 > 10 {
            alarms += 1;
        }
    }
    alarms as f64 / (f64::from(routers) * ticks as f64 / 1440.0)
}

/// Runs a fault-free fleet past warm-up, then one with faults on chosen routers.
fn scenario(
    plugin: &Plugin,
    config: Option<&str>,
    routers: u32,
    warmup: usize,
    faults: &[(FaultKind, u32)],
    after: usize,
) -> (Found, i64) {
    let mut instance = plugin.instantiate().unwrap();
    if let Some(config) = config {
        instance.configure(config).expect("configuration accepted");
    }
    let mut fleet = Fleet::new(routers, 11);
    run(&mut instance, &mut fleet, warmup);
    let onset = fleet.tick;
    for &(kind, router) in faults {
        fleet.inject(kind, router, 20.0);
    }
    (run(&mut instance, &mut fleet, after), onset)
}

#[test]
fn lstm_finds_spikes_runaways_and_loss_within_two_samples() {
    let runtime = runtime();
    let plugin = load(&runtime, "routewatch_lstm", "lstm");
    let faults = [
        (FaultKind::CpuRunaway, 3),
        (FaultKind::PacketLoss, 5),
        (FaultKind::TrafficSpike, 9),
        (FaultKind::LinkFlap, 12),
    ];
    let (found, onset) = scenario(&plugin, None, 60, 300, &faults, 30);
    assert!(hits(&found, 3, onset, 2, &["cpu_util"]) > 0, "cpu-runaway: {found:?}");
    assert!(hits(&found, 5, onset, 2, &["loss_ratio", "latency_ms"]) > 0, "packet-loss: {found:?}");
    assert!(hits(&found, 9, onset, 2, &["rx_bps", "tx_bps", "cpu_util"]) > 0, "traffic-spike: {found:?}");
    assert!(hits(&found, 12, onset, 2, &["rx_bps", "tx_bps", "bgp_up", "if_errors"]) > 0, "link-flap: {found:?}");
}

#[test]
fn lstm_is_quiet_on_a_fault_free_fleet() {
    let runtime = runtime();
    let plugin = load(&runtime, "routewatch_lstm", "lstm");
    let mut instance = plugin.instantiate().unwrap();
    let mut fleet = Fleet::new(100, 5);
    run(&mut instance, &mut fleet, 200);
    let found = run(&mut instance, &mut fleet, 600);
    let rate = alarms_per_router_day(&found, 100, 600);
    assert!(rate <= 2.0, "{rate:.2} alarms per router-day on a fault-free fleet: {:?}", &found[..found.len().min(20)]);
}

#[test]
fn lstm_component_matches_the_native_detector_and_keeps_state_across_instances() {
    use routewatch_plugin_sdk::Detector as _;
    let runtime = runtime();
    let plugin = load(&runtime, "routewatch_lstm", "lstm");
    let config = r#"{"min_deviation": {}}"#;
    let mut wasm = plugin.instantiate().unwrap();
    wasm.configure(config).unwrap();
    let mut native = routewatch_lstm::Lstm::default();
    native.configure(config).unwrap();
    let mut fleet = Fleet::new(20, 9);
    let mut compared = 0;
    for tick in 0..160 {
        let batch = fleet.next();
        let ours = wasm.process(&batch).unwrap();
        let columns: Vec<(&str, &[f64])> = batch.columns.iter().map(|c| (c.metric.as_str(), &c.values[..])).collect();
        let view = routewatch_plugin_sdk::Batch::new(&batch.routers, &batch.timestamps, columns);
        let mut theirs = routewatch_plugin_sdk::Output::default();
        native.process(&view, &mut theirs).unwrap();
        // tract's matrix kernels differ between x86-64 and Wasm SIMD, so the last bits of a
        // forecast may too: the calibrated scores agree closely, not bit for bit.
        assert_eq!(ours.scores.len(), theirs.scores.len());
        for (i, (a, b)) in ours.scores.iter().zip(&theirs.scores).enumerate() {
            assert!((a - b).abs() <= 1e-3, "tick {tick}, point {i}: score {a} vs {b}");
            compared += usize::from(*b > 0.0);
        }
        for a in &ours.anomalies {
            if let Some(b) = theirs.anomalies.iter().find(|b| (b.row, b.column) == (a.row, a.column)) {
                let tolerance = 1e-5 * (1.0 + b.expected.abs().max(b.observed.abs()));
                assert!(
                    (a.expected - b.expected).abs() <= tolerance,
                    "tick {tick}: forecast {} vs {}",
                    a.expected,
                    b.expected
                );
            }
        }
    }
    assert!(compared > 1000, "compared {compared} scores");

    // Snapshot and restore: a fresh instance continues exactly where the first one was.
    let snapshot = wasm.snapshot().unwrap();
    let mut second = plugin.instantiate().unwrap();
    second.restore(&snapshot).unwrap();
    let batch = fleet.next();
    assert_eq!(wasm.process(&batch).unwrap().scores, second.process(&batch).unwrap().scores);
}

#[test]
fn fleet_outlier_finds_a_router_leaving_its_peers_and_is_quiet_otherwise() {
    let runtime = runtime();
    let plugin = load(&runtime, "routewatch_fleet_outlier", "fleet-outlier");
    let faults = [(FaultKind::HardwareTemperature, 4), (FaultKind::CpuRunaway, 8), (FaultKind::HardwareFan, 15)];
    let (found, onset) = scenario(&plugin, None, 80, 120, &faults, 40);
    assert!(hits(&found, 4, onset, 20, &["temp_c", "fan_rpm"]) > 0, "hardware-temperature: {found:?}");
    assert!(hits(&found, 8, onset, 2, &["cpu_util"]) > 0, "cpu-runaway: {found:?}");
    assert!(hits(&found, 15, onset, 20, &["fan_rpm", "temp_c"]) > 0, "hardware-fan: {found:?}");
    assert!(
        found.iter().all(|(_, r, _, k)| [4, 8, 15].contains(r) && *k == AnomalyKind::Outlier),
        "only the faulty routers: {found:?}"
    );

    // DBSCAN (and MAD agreeing) through configuration.
    let (found, onset) = scenario(&plugin, Some(r#"{"method": "both"}"#), 80, 120, &faults[1..2], 20);
    assert!(hits(&found, 8, onset, 2, &["cpu_util"]) > 0, "both methods agree on a runaway: {found:?}");
}

#[test]
fn changepoint_finds_level_shifts() {
    let runtime = runtime();
    let plugin = load(&runtime, "routewatch_changepoint", "changepoint");
    let faults = [(FaultKind::CpuRunaway, 2), (FaultKind::HardwareFan, 6)];
    let (found, onset) = scenario(&plugin, None, 40, 200, &faults, 30);
    assert!(hits(&found, 2, onset, 12, &["cpu_util"]) > 0, "cpu-runaway is a level shift: {found:?}");
    assert!(hits(&found, 6, onset, 12, &["fan_rpm"]) > 0, "a failed fan drops the fan speed: {found:?}");
    assert!(found.iter().all(|(_, _, _, k)| *k == AnomalyKind::LevelShift));
}

#[test]
fn changepoint_is_quiet_on_healthy_routers() {
    let runtime = runtime();
    let plugin = load(&runtime, "routewatch_changepoint", "changepoint");
    let (found, _) = scenario(&plugin, None, 40, 200, &[], 30);
    assert!(found.len() <= 2, "quiet on a fault-free fleet: {found:?}");
}

#[test]
fn seasonal_scores_outside_its_interval_and_is_quiet_otherwise() {
    let runtime = runtime();
    let plugin = load(&runtime, "routewatch_seasonal", "seasonal");
    // The default configuration: a daily season, fitted on two days (each series after its
    // share of up to a quarter day more), then four hours scored.
    let faults = [(FaultKind::CpuRunaway, 3), (FaultKind::TrafficSpike, 7)];
    let (found, onset) = scenario(&plugin, None, 20, 2 * 1440 + 360 + 10, &faults, 240);
    assert!(hits(&found, 3, onset, 2, &["cpu_util", "temp_c"]) > 0, "cpu-runaway: {found:?}");
    assert!(hits(&found, 7, onset, 2, &["rx_bps", "tx_bps", "cpu_util"]) > 0, "traffic-spike: {found:?}");
    // 18 healthy routers for four hours are three router-days: at most one alarm per router-day.
    let elsewhere: Found = found.iter().filter(|(_, r, _, _)| ![3, 7].contains(r)).cloned().collect();
    assert!(alarms_per_router_day(&elsewhere, 18, 240) <= 1.0, "quiet on the healthy routers: {elsewhere:?}");
}
