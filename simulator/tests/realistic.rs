//! The realistic telemetry profile: each of its traits is present, its planned changes are
//! published and move their metrics, it is deterministic, and its faults are the clean
//! profile's.

use std::collections::HashMap;

use routewatch_simulator::engine::{Engine, RuntimeConfig};
use routewatch_simulator::{TelemetryProfile, changes};
use routewatch_telemetry::{ChangeKind, Metric, Record, Role};

/// Monday 2025-01-06 00:00 UTC.
const START: i64 = 1_736_121_600_000;
const MINUTE: i64 = 60_000;

fn engine(profile: TelemetryProfile, routers: u32, interval_ms: u64, fault_rate: f64) -> Engine {
    Engine::new(21, RuntimeConfig { routers, interval_ms, fault_rate, profile, consequences: true }, START).unwrap()
}

/// Every delivered record over `ticks` ticks.
fn run(e: &mut Engine, ticks: i64) -> Vec<Record> {
    let interval = e.config().interval_ms as i64;
    let mut out = Vec::new();
    for i in 0..ticks {
        e.tick(START + i * interval);
        out.extend_from_slice(e.delivered());
    }
    out
}

/// The share of robust z-scores of first differences beyond 6, over every router's series.
fn far_tail(records: &[Record], metric: Metric) -> f64 {
    let mut by_router: HashMap<&str, Vec<(i64, f64)>> = HashMap::new();
    for r in records {
        by_router.entry(&r.router).or_default().push((r.ts, r.metrics.get(metric)));
    }
    let (mut far, mut all) = (0usize, 0usize);
    for points in by_router.values_mut() {
        points.sort_by_key(|p| p.0);
        let diffs: Vec<f64> = points.windows(2).map(|w| w[1].1 - w[0].1).collect();
        let mut abs: Vec<f64> = diffs.iter().map(|d| d.abs()).collect();
        abs.sort_by(f64::total_cmp);
        let mad = abs[abs.len() / 2].max(1e-12);
        far += diffs.iter().filter(|d| d.abs() / (1.4826 * mad) > 6.0).count();
        all += diffs.len();
    }
    far as f64 / all as f64
}

#[test]
fn realistic_is_deterministic_and_keeps_the_clean_faults() {
    let (mut a, mut b) =
        (engine(TelemetryProfile::Realistic, 300, 60_000, 5.0), engine(TelemetryProfile::Realistic, 300, 60_000, 5.0));
    let mut clean = engine(TelemetryProfile::Clean, 300, 60_000, 5.0);
    assert_eq!(run(&mut a, 240), run(&mut b, 240));
    run(&mut clean, 240);
    let faults = |e: &Engine| e.faults().all().map(|f| f.event).collect::<Vec<_>>();
    assert!(!faults(&a).is_empty());
    assert_eq!(faults(&a), faults(&clean), "the same seed draws the same faults under either profile");
    let changes = |e: &Engine| e.changes().all().cloned().collect::<Vec<_>>();
    assert_eq!(changes(&a), changes(&b));
    assert!(changes(&clean).is_empty(), "clean makes no planned changes");
}

#[test]
fn sensors_are_quantised_and_counters_are_integers() {
    let mut e = engine(TelemetryProfile::Realistic, 200, 60_000, 2.0);
    let records = run(&mut e, 600);
    for r in &records {
        let m = &r.metrics;
        assert_eq!((m.temp_c / 0.5).fract(), 0.0, "temperature in 0.5 C steps: {}", m.temp_c);
        assert_eq!((m.fan_rpm / 60.0).fract(), 0.0, "fan in 60 rpm steps: {}", m.fan_rpm);
        assert_eq!(m.bgp_up.fract(), 0.0, "integer sessions: {}", m.bgp_up);
        assert_eq!(m.if_errors.fract(), 0.0, "integer errors: {}", m.if_errors);
        r.validate().expect("every realistic record is valid");
    }
    // Error bursts: some samples count tens of errors, while most count none.
    let errors: Vec<f64> = records.iter().map(|r| r.metrics.if_errors).collect();
    let zero = errors.iter().filter(|&&x| x == 0.0).count() as f64 / errors.len() as f64;
    let bursts = errors.iter().filter(|&&x| x >= 10.0).count();
    assert!(zero > 0.8, "most samples have no error: {zero}");
    assert!(bursts > 20, "error bursts: {bursts} samples with 10 or more errors");
}

#[test]
fn noise_is_heavy_tailed_where_clean_is_gaussian() {
    let mut realistic = engine(TelemetryProfile::Realistic, 100, 60_000, 0.0);
    let mut clean = engine(TelemetryProfile::Clean, 100, 60_000, 0.0);
    let (r, c) = (run(&mut realistic, 720), run(&mut clean, 720));
    for metric in [Metric::CpuUtil, Metric::LatencyMs] {
        let (tail_r, tail_c) = (far_tail(&r, metric), far_tail(&c, metric));
        // A Gaussian puts 2e-9 of its mass beyond 6 sd.
        assert!(tail_c < 1e-3, "{metric}: clean tail {tail_c}");
        assert!(tail_r > 5.0 * tail_c.max(1e-4), "{metric}: realistic tail {tail_r} vs clean {tail_c}");
    }
}

#[test]
fn samples_go_missing_and_arrive_late_out_of_order() {
    let routers = 500;
    let ticks = 1440;
    let mut e = engine(TelemetryProfile::Realistic, routers, 60_000, 0.0);
    let records = run(&mut e, ticks);
    let expected = (routers as i64 * ticks) as f64;
    // Late ones still held at the end count as delivered later; the loss is about 0.6%.
    let missing = 1.0 - records.len() as f64 / expected;
    assert!((0.003..0.015).contains(&missing), "missing share {missing}");
    let mut newest: HashMap<&str, i64> = HashMap::new();
    let mut late = 0;
    for r in &records {
        let seen = newest.entry(&r.router).or_insert(i64::MIN);
        if r.ts < *seen {
            late += 1;
        }
        *seen = (*seen).max(r.ts);
    }
    let late_share = late as f64 / expected;
    assert!((0.002..0.01).contains(&late_share), "late, out-of-order share {late_share}");
    // Outages: some router misses a run of at least five samples in a row.
    let mut by_router: HashMap<&str, Vec<i64>> = HashMap::new();
    for r in &records {
        by_router.entry(&r.router).or_default().push(r.ts);
    }
    let longest_gap = by_router
        .values_mut()
        .map(|ts| {
            ts.sort_unstable();
            ts.windows(2).map(|w| (w[1] - w[0]) / MINUTE).max().unwrap_or(0)
        })
        .max()
        .unwrap();
    assert!(longest_gap >= 6, "an outage of several samples: longest gap {longest_gap} min");
}

#[test]
fn scales_differ_by_orders_of_magnitude() {
    let e = engine(TelemetryProfile::Realistic, 2000, 60_000, 0.0);
    let clean = engine(TelemetryProfile::Clean, 2000, 60_000, 0.0);
    let spread = |e: &Engine, f: &dyn Fn(&routewatch_simulator::fleet::Profile) -> f64, role: Role| {
        let xs: Vec<f64> = e.fleet().profiles().iter().filter(|p| p.role == role).map(f).collect();
        xs.iter().cloned().fold(f64::MIN, f64::max) / xs.iter().cloned().fold(f64::MAX, f64::min)
    };
    let capacity = |p: &routewatch_simulator::fleet::Profile| p.capacity_bps;
    let sessions = |p: &routewatch_simulator::fleet::Profile| f64::from(p.bgp_sessions);
    assert_eq!(spread(&clean, &capacity, Role::Access), 1.0, "clean: one capacity per role");
    assert!(spread(&e, &capacity, Role::Access) > 50.0);
    assert!(spread(&e, &sessions, Role::Core) > 20.0);
    let all_capacity: Vec<f64> = e.fleet().profiles().iter().map(|p| p.capacity_bps).collect();
    let ratio =
        all_capacity.iter().cloned().fold(f64::MIN, f64::max) / all_capacity.iter().cloned().fold(f64::MAX, f64::min);
    assert!(ratio > 1000.0, "capacities across the fleet span {ratio:.0}x");
    // The same routers (role, site, vendor), only their scales redrawn.
    for (a, b) in e.fleet().profiles().iter().zip(clean.fleet().profiles()) {
        assert_eq!((a.role, a.site, a.vendor), (b.role, b.site, b.vendor));
    }
}

#[test]
fn business_traffic_has_a_day_of_week_shape() {
    // One week of hourly samples: edge (business) traffic is higher on Monday than on Friday.
    let mut e = engine(TelemetryProfile::Realistic, 600, 3_600_000, 0.0);
    let records = run(&mut e, 7 * 24);
    let utilisation = |day: i64| -> f64 {
        let xs: Vec<f64> = records
            .iter()
            .filter(|r| r.role == Role::Edge && (r.ts - START) / 86_400_000 == day)
            .map(|r| {
                let p = e.profile(&r.router).unwrap();
                r.metrics.rx_bps / p.capacity_bps / p.base_util
            })
            .collect();
        xs.iter().sum::<f64>() / xs.len() as f64
    };
    let (monday, friday) = (utilisation(0), utilisation(4));
    assert!(monday > friday * 1.03, "Monday {monday:.3} vs Friday {friday:.3}");
}

#[test]
fn planned_changes_are_published_and_move_their_metrics() {
    let routers = 3000;
    let mut e = engine(TelemetryProfile::Realistic, routers, 60_000, 0.0);
    let mut notices = Vec::new();
    // bgp_up and rx_bps of every router at every tick (the true state, lost or not).
    let mut truth: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); routers as usize];
    for i in 0..(36 * 60) {
        e.tick(START + i * MINUTE);
        notices.extend(e.take_change_notices());
        for (j, r) in e.records().iter().enumerate() {
            truth[j].push((r.metrics.bgp_up, r.metrics.rx_bps, r.metrics.cpu_util));
        }
    }
    let all: Vec<_> = e.changes().all().cloned().collect();
    for kind in ChangeKind::ALL {
        assert!(all.iter().any(|c| c.kind == kind), "no {} in 36 h of {routers} routers", kind.name());
    }
    // Every change is announced when scheduled and again when it ends.
    for c in all.iter().filter(|c| c.end < e.now()) {
        assert!(notices.iter().any(|n| !n.ended && n.event.id == c.id), "{} not announced", c.id);
        assert!(notices.iter().any(|n| n.ended && n.event.id == c.id), "{} not ended", c.id);
        let metrics: Vec<&str> = changes::spec(c.kind).metrics.iter().map(|m| m.name()).collect();
        assert_eq!(c.metrics, metrics);
    }
    let tick_of = |ts: i64| ((ts - START) / MINUTE) as usize;
    let mut checked = 0;
    for c in all.iter().filter(|c| c.kind == ChangeKind::Maintenance && c.end < e.now()) {
        let p = e.profile(&c.router).unwrap();
        let local_h = ((c.start as f64 / 3_600_000.0 + p.utc_offset_h).rem_euclid(24.0)).floor();
        assert!((1.0..4.0).contains(&local_h), "maintenance at {local_h}:00 local");
        let index = e.lookup(&c.router).unwrap() as usize;
        let (start, end) = (tick_of(c.start) + 1, tick_of(c.end));
        if start < 10 || end <= start {
            continue;
        }
        let during = &truth[index][start..end];
        assert!(during.iter().all(|x| x.0 == 0.0), "sessions are down in maintenance");
        let before: f64 = truth[index][start - 10..start - 1].iter().map(|x| x.1).sum::<f64>() / 9.0;
        let inside: f64 = during.iter().map(|x| x.1).sum::<f64>() / during.len() as f64;
        assert!(inside < 0.3 * before, "drained: {inside} vs {before}");
        checked += 1;
    }
    assert!(checked > 0, "no finished maintenance window to check");
    let pushes: Vec<_> = all
        .iter()
        .filter(|c| c.kind == ChangeKind::ConfigPush && c.start > START + 10 * MINUTE && c.end < e.now())
        .collect();
    let lift: f64 = pushes
        .iter()
        .map(|c| {
            let index = e.lookup(&c.router).unwrap() as usize;
            let t = tick_of(c.start);
            truth[index][t + 1].2 - truth[index][t - 5].2
        })
        .sum::<f64>()
        / pushes.len() as f64;
    assert!(lift > 0.08, "a config push lifts CPU by about 0.15: {lift}");
}
