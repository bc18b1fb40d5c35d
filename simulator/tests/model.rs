//! The fleet model and fault injection: determinism, effects, correlations, cycles, validity.

use routewatch_simulator::engine::{ConfigPatch, Engine, FaultRequest, RuntimeConfig};
use routewatch_simulator::faults;
use routewatch_telemetry::{FaultKind, Metric, Record, Role};

/// Monday 2025-01-06 00:00 UTC.
const START: i64 = 1_736_121_600_000;
const MINUTE: i64 = 60_000;

fn engine(seed: u64, routers: u32, fault_rate: f64) -> Engine {
    Engine::new(seed, RuntimeConfig { routers, interval_ms: 60_000, fault_rate, ..Default::default() }, START).unwrap()
}

/// Runs `ticks` one-minute steps, returning every record.
fn run(e: &mut Engine, ticks: i64) -> Vec<Record> {
    let mut out = Vec::new();
    for i in 0..ticks {
        e.tick(START + i * MINUTE);
        out.extend_from_slice(e.records());
    }
    out
}

fn series(records: &[Record], router: &str, metric: Metric) -> Vec<f64> {
    records.iter().filter(|r| r.router == router).map(|r| r.metrics.get(metric)).collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

#[test]
fn same_seed_same_records_and_faults_other_seed_differs() {
    let (mut a, mut b, mut c) = (engine(7, 200, 20.0), engine(7, 200, 20.0), engine(8, 200, 20.0));
    let (ra, rb, rc) = (run(&mut a, 120), run(&mut b, 120), run(&mut c, 120));
    assert_eq!(ra, rb);
    let fa: Vec<_> = a.faults().all().map(|f| f.event).collect();
    let fb: Vec<_> = b.faults().all().map(|f| f.event).collect();
    assert!(!fa.is_empty(), "a fault rate of 20/router/day over 2 h should start faults");
    assert_eq!(fa, fb);
    assert_ne!(ra, rc);
}

#[test]
fn resizing_keeps_the_routers_that_stay() {
    let big = engine(3, 500, 0.0);
    let mut small = engine(3, 100, 0.0);
    small.reconfigure(&ConfigPatch { routers: Some(300), ..Default::default() }).unwrap();
    for (x, y) in small.fleet().profiles().iter().zip(big.fleet().profiles()) {
        assert_eq!((x.id.as_str(), x.role, x.site, x.vendor), (y.id.as_str(), y.role, y.site, y.vendor));
    }
    assert_eq!(small.fleet().len(), 300);
}

#[test]
fn fleet_has_every_role_and_plausible_mix() {
    let e = engine(1, 1000, 0.0);
    let count = |role| e.fleet().profiles().iter().filter(|p| p.role == role).count();
    let (core, edge, access) = (count(Role::Core), count(Role::Edge), count(Role::Access));
    assert!(core > 20 && core < 90, "core {core}");
    assert!(edge > 180 && edge < 320, "edge {edge}");
    assert!(access > 600, "access {access}");
    let sites: std::collections::BTreeSet<_> = e.fleet().profiles().iter().map(|p| p.site).collect();
    assert!(sites.len() > 20, "sites {sites:?}");
}

#[test]
fn every_record_validates_even_under_heavy_faults() {
    let mut e = engine(11, 300, 200.0);
    let records = run(&mut e, 24 * 60);
    for r in &records {
        r.validate().unwrap_or_else(|err| panic!("{err}: {r:?}"));
        Record::decode(&r.encode()).unwrap();
    }
    assert!(e.faults().all().count() > 100);
}

#[test]
fn random_schedule_follows_the_rate_and_covers_every_kind() {
    // 1000 routers x 1 day x 0.5/router/day: about 500 faults.
    let mut e = engine(5, 1000, 0.5);
    for i in 0..24 * 60 {
        e.tick(START + i * MINUTE);
    }
    let faults: Vec<_> = e.faults().all().collect();
    assert!((380..=620).contains(&faults.len()), "{} faults", faults.len());
    for kind in FaultKind::ALL {
        assert!(faults.iter().any(|f| f.event.kind == kind), "no {kind:?}");
    }
    for f in &faults {
        let spec = faults::spec(f.event.kind);
        assert!(f.event.end > f.event.start);
        assert!(f.event.magnitude >= spec.random_magnitude.0 && f.event.magnitude <= spec.random_magnitude.1);
        let listed: Vec<_> = spec.metrics.iter().map(|m| m.name()).collect();
        assert_eq!(f.event.metrics, listed);
    }
}

/// For every kind, the metrics it lists move materially on the faulted router, in the
/// expected direction where there is one, and no other router changes at all.
#[test]
fn every_fault_kind_moves_the_metrics_it_lists_and_only_on_its_router() {
    // A core router: it has enough BGP sessions for a route flap to show.
    let base = engine(21, 50, 0.0);
    let target = base.fleet().profiles().iter().find(|p| p.role == Role::Core).expect("a core router").id.clone();
    let ticks = 120;
    let mut baseline = engine(21, 50, 0.0);
    let clean = run(&mut baseline, ticks);
    for kind in FaultKind::ALL {
        let mut e = engine(21, 50, 0.0);
        let view = e
            .inject(&FaultRequest {
                kind,
                router: Some(target.clone()),
                duration_s: Some(ticks as f64 * 60.0),
                magnitude: None,
            })
            .unwrap();
        assert_eq!(view.event.start, START);
        let faulted = run(&mut e, ticks);
        for (x, y) in faulted.iter().zip(&clean) {
            if x.router != target {
                assert_eq!(x, y, "{kind:?} changed another router");
            }
        }
        for metric in faults::spec(kind).metrics {
            let f = mean(&series(&faulted, &target, *metric));
            let b = mean(&series(&clean, &target, *metric));
            // Counts and tiny ratios need an absolute floor for "material".
            let floor = match metric {
                Metric::IfErrors | Metric::BgpUp => 1.0,
                Metric::LossRatio => 0.01,
                _ => 1e-9,
            };
            let change = (f - b).abs() / b.abs().max(floor);
            assert!(change > 0.05, "{kind:?} barely moved {metric}: {b} -> {f}");
        }
        let m = |metric| (mean(&series(&clean, &target, metric)), mean(&series(&faulted, &target, metric)));
        let up = |metric| {
            let (b, f) = m(metric);
            assert!(f > b, "{kind:?} should raise {metric}: {b} -> {f}");
        };
        let down = |metric| {
            let (b, f) = m(metric);
            assert!(f < b, "{kind:?} should lower {metric}: {b} -> {f}");
        };
        let (ups, downs): (&[Metric], &[Metric]) = match kind {
            FaultKind::TrafficSpike => (&[Metric::RxBps, Metric::CpuUtil, Metric::LatencyMs], &[]),
            FaultKind::PacketLoss => (&[Metric::LossRatio], &[]),
            FaultKind::HardwareTemperature => (&[Metric::TempC, Metric::FanRpm], &[]),
            FaultKind::HardwareFan => (&[Metric::TempC], &[Metric::FanRpm]),
            FaultKind::HardwarePsu => (&[Metric::TempC, Metric::IfErrors], &[]),
            FaultKind::LinkFlap => (&[Metric::IfErrors], &[Metric::RxBps, Metric::BgpUp]),
            FaultKind::MemoryLeak => (&[Metric::MemUtil], &[]),
            FaultKind::CpuRunaway => (&[Metric::CpuUtil, Metric::TempC], &[]),
            FaultKind::RouteFlap => (&[Metric::LatencyMs], &[Metric::BgpUp]),
        };
        ups.iter().for_each(|m| up(*m));
        downs.iter().for_each(|m| down(*m));
    }
}

#[test]
fn injected_fault_applies_from_the_next_sample_and_clearing_stops_it() {
    let mut e = engine(2, 10, 0.0);
    let mut clean = engine(2, 10, 0.0);
    e.tick(START);
    clean.tick(START);
    let view = e
        .inject(&FaultRequest {
            kind: FaultKind::CpuRunaway,
            router: Some("rtr-000003".into()),
            duration_s: Some(3600.0),
            magnitude: Some(0.6),
        })
        .unwrap();
    assert_eq!(view.event.start, START + MINUTE);
    assert!(view.active);
    for i in 1..=10 {
        e.tick(START + i * MINUTE);
        clean.tick(START + i * MINUTE);
    }
    let cpu = |e: &Engine| e.records()[3].metrics.cpu_util;
    assert!(cpu(&e) > cpu(&clean) + 0.3, "{} vs {}", cpu(&e), cpu(&clean));
    let ended = e.clear(&view.event.id).unwrap();
    assert_eq!(ended.event.end, START + 11 * MINUTE);
    assert!(!ended.active);
    assert!(e.clear(&view.event.id).is_err(), "clearing twice");
    let notices = e.take_notices();
    assert_eq!(notices.iter().map(|n| n.phase()).collect::<Vec<_>>(), ["started", "ended"]);
    // CPU has no memory of the fault: the first sample after the clear is back to normal.
    e.tick(START + 11 * MINUTE);
    clean.tick(START + 11 * MINUTE);
    assert!((cpu(&e) - cpu(&clean)).abs() < 0.1, "{} vs {}", cpu(&e), cpu(&clean));
}

#[test]
fn restart_clears_faults_and_bgp_reconverges() {
    let mut e = engine(4, 50, 0.0);
    let core = e.fleet().profiles().iter().find(|p| p.role == Role::Core).unwrap().clone();
    e.tick(START);
    e.inject(&FaultRequest {
        kind: FaultKind::MemoryLeak,
        router: Some(core.id.clone()),
        duration_s: None,
        magnitude: None,
    })
    .unwrap();
    let (at, cleared) = e.restart(&core.id).unwrap();
    assert_eq!(at, START + MINUTE);
    assert_eq!(cleared.len(), 1);
    e.tick(START + MINUTE);
    let bgp_after = e.records()[core.index as usize].metrics.bgp_up;
    assert_eq!(bgp_after, 0.0, "sessions start down after a restart");
    for i in 2..=5 {
        e.tick(START + i * MINUTE);
    }
    assert!(e.records()[core.index as usize].metrics.bgp_up >= f64::from(core.bgp_sessions) - 1.0);
}

#[test]
fn traffic_drives_cpu_temperature_latency_and_loss() {
    let mut e = engine(9, 200, 0.0);
    let records = run(&mut e, 24 * 60);
    let (mut rx_cpu, mut cpu_temp, mut rx_latency) = (Vec::new(), Vec::new(), Vec::new());
    for p in e.fleet().profiles().iter().take(40) {
        let rx = series(&records, &p.id, Metric::RxBps);
        let cpu = series(&records, &p.id, Metric::CpuUtil);
        let temp = series(&records, &p.id, Metric::TempC);
        let latency = series(&records, &p.id, Metric::LatencyMs);
        rx_cpu.push(correlation(&rx, &cpu));
        cpu_temp.push(correlation(&cpu, &temp));
        rx_latency.push(correlation(&rx, &latency));
    }
    // Noise blurs single routers; every one still correlates, and strongly on average.
    for (name, c, each, avg) in
        [("rx~cpu", &rx_cpu, 0.35, 0.6), ("cpu~temp", &cpu_temp, 0.3, 0.5), ("rx~latency", &rx_latency, 0.1, 0.3)]
    {
        let worst = c.iter().cloned().fold(f64::MAX, f64::min);
        assert!(worst > each, "{name}: weakest router {worst}");
        assert!(mean(c) > avg, "{name}: mean {}", mean(c));
    }

    // Congestion: a big traffic spike saturates the links and shows as loss.
    let mut e = engine(9, 20, 0.0);
    let id = "rtr-000001";
    let clean_loss = {
        let mut c = engine(9, 20, 0.0);
        mean(&series(&run(&mut c, 60), id, Metric::LossRatio))
    };
    e.inject(&FaultRequest {
        kind: FaultKind::TrafficSpike,
        router: Some(id.into()),
        duration_s: Some(3600.0),
        magnitude: Some(10.0),
    })
    .unwrap();
    let loss = mean(&series(&run(&mut e, 60), id, Metric::LossRatio));
    assert!(loss > clean_loss + 0.1, "saturated loss {loss} vs {clean_loss}");
}

#[test]
fn daily_and_weekly_cycles_show_in_traffic() {
    // Hourly samples over two weeks.
    let mut e = Engine::new(
        13,
        RuntimeConfig { routers: 300, interval_ms: 3_600_000, fault_rate: 0.0, ..Default::default() },
        START,
    )
    .unwrap();
    let mut by_hour = vec![Vec::new(); 24];
    let (mut weekday, mut weekend) = (Vec::new(), Vec::new());
    for h in 0..14 * 24 {
        e.tick(START + h * 3_600_000);
        // Europe/London routers only, so local time is UTC.
        let edge: Vec<f64> = e
            .records()
            .iter()
            .filter(|r| r.region == "eu-west" && r.role == Role::Edge)
            .map(|r| r.metrics.rx_bps)
            .collect();
        let m = mean(&edge);
        by_hour[(h % 24) as usize].push(m);
        if (h / 24) % 7 >= 5 { weekend.push(m) } else { weekday.push(m) }
    }
    let afternoon = mean(&by_hour[15]);
    let night = mean(&by_hour[3]);
    assert!(afternoon > 1.5 * night, "edge traffic at 15h {afternoon} vs 3h {night}");
    assert!(mean(&weekend) < 0.9 * mean(&weekday), "business traffic falls at weekends");
}
