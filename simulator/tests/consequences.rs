//! Faults left alone have consequences, visible in the records the sinks get and published as
//! ground truth; the same seed gives the same consequences; remediation never changes the
//! random fault schedule.

use routewatch_simulator::TelemetryProfile;
use routewatch_simulator::consequences::{self, Consequence, ConsequenceKind};
use routewatch_simulator::engine::{Engine, FaultRequest, RuntimeConfig};
use routewatch_simulator::fleet::Profile;
use routewatch_telemetry::{FaultKind, Record, Role};

const ROUTERS: u32 = 40;

const START: i64 = 1_736_121_600_000;
const MINUTE: i64 = 60_000;

fn engine(seed: u64, routers: u32, fault_rate: f64) -> Engine {
    Engine::new(seed, RuntimeConfig { routers, interval_ms: 60_000, fault_rate, ..Default::default() }, START).unwrap()
}

/// The router with the most BGP sessions (so session drops show).
fn core(e: &Engine) -> Profile {
    e.fleet().profiles().iter().max_by_key(|p| (p.role == Role::Core, p.bgp_sessions)).expect("a router").clone()
}

fn inject(e: &mut Engine, kind: FaultKind, router: &str, hours: f64, magnitude: f64) -> String {
    let req = FaultRequest {
        kind,
        router: Some(router.into()),
        duration_s: Some(hours * 3600.0),
        magnitude: Some(magnitude),
    };
    e.inject(&req).unwrap().event.id
}

/// Ticks once at the next sample time; returns the router's delivered record.
fn step(e: &mut Engine, index: u32) -> Record {
    let ts = e.next_ts();
    e.tick(ts);
    e.delivered()[index as usize].clone()
}

fn of_kind(e: &Engine, kind: ConsequenceKind) -> Vec<Consequence> {
    e.consequences().all().filter(|c| c.kind == kind).cloned().collect()
}

#[test]
fn a_leak_that_reaches_100_percent_crashes_the_router_which_reloads_and_reconverges() {
    let mut e = engine(5, ROUTERS, 0.0);
    let p = core(&e);
    let i = p.index;
    let first = step(&mut e, i);
    let baseline_mem = first.metrics.mem_util;
    let leak = inject(&mut e, FaultKind::MemoryLeak, &p.id, 12.0, 0.5);

    // Leak until the crash shows: memory climbs to about 100% first.
    let mut before = Vec::new();
    let mut counters = Vec::new();
    let crash_sample = loop {
        let r = step(&mut e, i);
        if r.metrics.rx_bps == 0.0 {
            break r;
        }
        before.push(r);
        counters.push(e.fleet().counters(i).unwrap());
        assert!(before.len() < 200, "no crash after {} samples", before.len());
    };
    let last = before.last().unwrap();
    assert!(last.metrics.mem_util >= 0.98, "memory before the crash: {}", last.metrics.mem_util);
    assert!(last.metrics.bgp_up >= f64::from(p.bgp_sessions) - 1.0);
    // Counters as they were before the crash (the sample before the last, whose tick found
    // the crash, already reset them).
    let counters_before = counters[counters.len() - 2];
    assert_eq!(counters_before.booted_at, None, "up since before the simulation");

    let crashes = of_kind(&e, ConsequenceKind::ProcessCrash);
    assert_eq!(crashes.len(), 1, "{crashes:?}");
    let crash = &crashes[0];
    assert_eq!((crash.router.as_str(), crash.fault.as_deref()), (p.id.as_str(), Some(leak.as_str())));
    assert_eq!(crash.fault_kind, Some(FaultKind::MemoryLeak));
    assert_eq!(crash.start, crash_sample.ts, "starts with the first sample that shows it");
    assert_eq!(crash.start, last.ts + MINUTE);
    assert!(crash.trigger.starts_with("mem_util"), "{}", crash.trigger);
    // The reload freed the leak: the fault ended with the crash.
    let fault = e.faults().get(&leak).unwrap();
    assert!(!fault.active);
    assert_eq!(fault.event.end, crash.start);

    // Reloading: nothing forwarded, no sessions, memory back to its baseline at once.
    let reload = consequences::RELOAD_MS;
    let mut r = crash_sample;
    while r.ts < crash.start + reload {
        assert_eq!((r.metrics.rx_bps, r.metrics.tx_bps, r.metrics.bgp_up), (0.0, 0.0, 0.0), "{r:?}");
        assert!((r.metrics.mem_util - baseline_mem).abs() < 0.05, "{} vs {baseline_mem}", r.metrics.mem_util);
        r = step(&mut e, i);
    }
    // Up again: uptime and counters start from the end of the reload; BGP comes back from 0.
    let counters = e.fleet().counters(i).unwrap();
    assert_eq!(counters.booted_at, Some(crash.start + reload));
    assert!(counters.rx_bytes < counters_before.rx_bytes / 10.0, "{counters:?} vs {counters_before:?}");
    assert!(r.metrics.rx_bps > 0.0);
    assert!(
        r.metrics.bgp_up < f64::from(p.bgp_sessions) / 2.0,
        "sessions re-establish gradually: {}",
        r.metrics.bgp_up
    );
    let mut bgp = vec![r.metrics.bgp_up];
    for _ in 0..4 {
        bgp.push(step(&mut e, i).metrics.bgp_up);
    }
    assert!(bgp.windows(2).all(|w| w[1] >= w[0] - 1.0), "{bgp:?}");
    assert!(*bgp.last().unwrap() >= f64::from(p.bgp_sessions) - 1.0, "{bgp:?}");
    // The crash has run its course (reload and reconvergence) and is ended in the ground truth.
    let crash = e.consequences().all().find(|c| c.id == crash.id).unwrap().clone();
    assert_eq!(crash.end, Some(crash.start + reload + 180_000));
    assert!(e.consequences().on_router(i).next().is_none());
    // No other router was touched.
    assert_eq!(e.consequences().all().count(), 1);
}

/// The clean twin of a run: same seed and fleet, no fault.
struct Twin {
    faulted: Engine,
    clean: Engine,
}

impl Twin {
    fn new(seed: u64) -> Twin {
        Twin { faulted: engine(seed, ROUTERS, 0.0), clean: engine(seed, ROUTERS, 0.0) }
    }

    fn step(&mut self, index: u32) -> (Record, Record) {
        (step(&mut self.faulted, index), step(&mut self.clean, index))
    }
}

#[test]
fn overheating_throttles_the_cpu_then_shuts_line_cards_and_both_end_when_it_cools() {
    let mut t = Twin::new(6);
    let p = core(&t.faulted);
    let i = p.index;
    let (_, c) = t.step(i);
    // A heat source that settles the chassis near 88 C: past both limits, slowly enough to
    // see the throttling alone first.
    let fault = inject(&mut t.faulted, FaultKind::HardwareTemperature, &p.id, 4.0, 88.0 - c.metrics.temp_c);
    let mut throttled = 0;
    let mut shut = 0;
    for _ in 0..120 {
        let (f, c) = t.step(i);
        let throttle = t.faulted.consequences().is_active(i, ConsequenceKind::CpuThrottle);
        let shutdown = t.faulted.consequences().is_active(i, ConsequenceKind::LinecardShutdown);
        let throttle_started = of_kind(&t.faulted, ConsequenceKind::CpuThrottle).first().map(|c| c.start);
        if throttle && throttle_started.is_some_and(|s| s <= f.ts) && !shutdown {
            // The same work on a CPU at 60% of its clock: utilisation up by 1 / 0.6.
            let expected = (c.metrics.cpu_util / consequences::THROTTLE_CLOCK).min(1.0);
            assert!((f.metrics.cpu_util - expected).abs() < 1e-3, "{} vs {expected}", f.metrics.cpu_util);
            throttled += 1;
        }
        if of_kind(&t.faulted, ConsequenceKind::LinecardShutdown).first().is_some_and(|s| s.start <= f.ts) {
            // Half the line cards off: half the traffic, half the sessions.
            let share = f.metrics.rx_bps / c.metrics.rx_bps;
            assert!((share - consequences::SHED_SHARE).abs() < 0.1, "rx share {share}");
            assert!(f.metrics.bgp_up <= (f64::from(p.bgp_sessions) * 0.5).ceil(), "{}", f.metrics.bgp_up);
            shut += 1;
        }
    }
    assert!(throttled >= 3 && shut >= 3, "{throttled} throttled, {shut} shut samples");
    let throttle = &of_kind(&t.faulted, ConsequenceKind::CpuThrottle)[0];
    let shutdown = &of_kind(&t.faulted, ConsequenceKind::LinecardShutdown)[0];
    assert!(throttle.start < shutdown.start, "throttling comes first");
    for c in [throttle, shutdown] {
        assert_eq!(c.fault.as_deref(), Some(fault.as_str()));
        assert_eq!(c.fault_kind, Some(FaultKind::HardwareTemperature));
        assert!(c.end.is_none(), "still hot");
    }
    assert!(throttle.trigger.starts_with("temp_c"), "{}", throttle.trigger);
    assert!(!of_kind(&t.faulted, ConsequenceKind::ProcessCrash).iter().any(|_| true));

    // Fixed: the chassis cools, the CPU gets its clock back and the cards power on.
    t.faulted.clear(&fault).unwrap();
    let mut cooled = None;
    for _ in 0..60 {
        let (f, c) = t.step(i);
        if t.faulted.consequences().on_router(i).next().is_none() {
            cooled = Some((f, c));
            break;
        }
    }
    let (f, c) = cooled.expect("cooled down within an hour");
    for kind in [ConsequenceKind::CpuThrottle, ConsequenceKind::LinecardShutdown] {
        let end = of_kind(&t.faulted, kind)[0].end.expect("ended");
        assert_eq!(end, f.ts + MINUTE, "ends with the next sample");
    }
    let (f2, c2) = t.step(i);
    assert!(f.metrics.temp_c < consequences::RECOVER_C, "{}", f.metrics.temp_c);
    assert!((f2.metrics.rx_bps / c2.metrics.rx_bps - 1.0).abs() < 0.05, "{f2:?} vs {c2:?} (before: {c:?})");
}

#[test]
fn a_dead_fan_overheats_a_busy_router_and_is_blamed_for_the_throttling() {
    let mut e = engine(6, ROUTERS, 0.0);
    let p = core(&e);
    let fan = inject(&mut e, FaultKind::HardwareFan, &p.id, 4.0, 1.0);
    let cpu = inject(&mut e, FaultKind::CpuRunaway, &p.id, 4.0, 0.4);
    for _ in 0..90 {
        step(&mut e, p.index);
    }
    let throttles = of_kind(&e, ConsequenceKind::CpuThrottle);
    assert_eq!(throttles.len(), 1, "{throttles:?}");
    assert_eq!(throttles[0].fault.as_deref(), Some(fan.as_str()), "the fan heats more than the CPU ({cpu})");
}

#[test]
fn a_severe_failing_psu_dies_after_half_an_hour_and_sheds_line_cards_until_replaced() {
    let mut e = engine(7, ROUTERS, 0.0);
    let p = core(&e);
    let i = p.index;
    let psu = inject(&mut e, FaultKind::HardwarePsu, &p.id, 2.0, 0.9);
    let mild = format!("rtr-{:06}", (i + 1) % ROUTERS);
    inject(&mut e, FaultKind::HardwarePsu, &mild, 2.0, 0.5);
    let due = START + (consequences::PSU_FAIL_AFTER_S * 1000.0) as i64;
    // The erratic fans of a failing PSU draw extra noise, so compare the router with itself
    // one sample apart rather than with a clean twin.
    let mut rx = Vec::new();
    while e.next_ts() <= due + 10 * MINUTE {
        let r = step(&mut e, i);
        rx.push((r.ts, r.metrics.rx_bps));
    }
    let at = rx.iter().position(|&(ts, _)| ts == due).unwrap();
    // Traffic has its own slow drift (a few percent over minutes), hence the tolerances.
    let ratios: Vec<f64> = rx.windows(2).map(|w| w[1].1 / w[0].1).collect();
    assert!(ratios[..at - 1].iter().all(|r| (r - 1.0).abs() < 0.2), "no shedding before it fails: {ratios:?}");
    let drop = ratios[at - 1];
    assert!((drop - (1.0 - consequences::PSU_SHED_SHARE)).abs() < 0.12, "rx x{drop} when it failed");
    let mean = |xs: &[(i64, f64)]| xs.iter().map(|x| x.1).sum::<f64>() / xs.len() as f64;
    let share = mean(&rx[at..]) / mean(&rx[at - 10..at]);
    assert!((share - (1.0 - consequences::PSU_SHED_SHARE)).abs() < 0.1, "{share}");
    let failures = of_kind(&e, ConsequenceKind::PsuFailure);
    assert_eq!(failures.len(), 1, "only the severe one fails: {failures:?}");
    assert_eq!((failures[0].start, failures[0].fault.as_deref()), (due, Some(psu.as_str())));
    assert_eq!(failures[0].fault_kind, Some(FaultKind::HardwarePsu));
    // Replaced: the cards power on with the next sample.
    e.clear(&psu).unwrap();
    let before = step(&mut e, i);
    let after = step(&mut e, i);
    assert_eq!(of_kind(&e, ConsequenceKind::PsuFailure)[0].end, Some(after.ts));
    let rise = after.metrics.rx_bps / before.metrics.rx_bps;
    assert!((rise - 1.0 / (1.0 - consequences::PSU_SHED_SHARE)).abs() < 0.15, "rx x{rise} when replaced");
}

#[test]
fn a_cpu_pegged_for_the_hold_time_drops_bgp_sessions() {
    let mut t = Twin::new(8);
    let p = core(&t.faulted);
    let i = p.index;
    let runaway = inject(&mut t.faulted, FaultKind::CpuRunaway, &p.id, 2.0, 1.0);
    let mut pegged_at = None;
    for _ in 0..30 {
        let (f, _) = t.step(i);
        if f.metrics.cpu_util >= consequences::PEGGED_CPU && pegged_at.is_none() {
            pegged_at = Some(f.ts);
        }
    }
    let holds = of_kind(&t.faulted, ConsequenceKind::BgpHoldExpiry);
    assert_eq!(holds.len(), 1, "{holds:?}");
    let hold = &holds[0];
    let hold_ms = (consequences::HOLD_TIME_S * 1000.0) as i64;
    // Pegged for the hold time, seen at the sample after, shown from the one after that.
    assert_eq!(hold.start, pegged_at.unwrap() + hold_ms + MINUTE);
    assert_eq!((hold.fault.as_deref(), hold.fault_kind), (Some(runaway.as_str()), Some(FaultKind::CpuRunaway)));
    let (f, c) = t.step(i);
    assert!(f.metrics.bgp_up <= c.metrics.bgp_up - (f64::from(p.bgp_sessions) * 0.4).floor(), "{f:?}");
}

/// Everything published about one run, in order.
fn ground_truth(seed: u64, profile: TelemetryProfile) -> (Vec<Consequence>, Vec<String>) {
    let config = RuntimeConfig { routers: 300, interval_ms: 60_000, fault_rate: 6.0, profile, consequences: true };
    let mut e = Engine::new(seed, config, START).unwrap();
    for _ in 0..24 * 60 {
        let ts = e.next_ts();
        e.tick(ts);
    }
    let faults = e.faults().all().map(|f| serde_json::to_string(&f.event).unwrap()).collect();
    (e.consequences().all().cloned().collect(), faults)
}

#[test]
fn the_same_seed_gives_the_same_consequences() {
    for profile in [TelemetryProfile::Clean, TelemetryProfile::Realistic] {
        let (a, faults) = ground_truth(11, profile);
        assert!(a.len() > 10, "{profile}: {} consequences", a.len());
        let kinds: std::collections::HashSet<_> = a.iter().map(|c| c.kind).collect();
        assert!(kinds.len() >= 4, "{profile}: {kinds:?}");
        assert_eq!(ground_truth(11, profile), (a.clone(), faults), "{profile}");
        assert_ne!(ground_truth(12, profile).0, a, "{profile}");
    }
}

/// The random faults of a run in id order, without their ends (clearing changes those).
fn schedule(e: &Engine) -> Vec<String> {
    let mut faults: Vec<_> = e.faults().all().map(|f| f.event).collect();
    faults.sort_by(|a, b| a.id.cmp(&b.id));
    faults.iter().map(|f| format!("{} {} {} {} {}", f.id, f.kind.name(), f.router, f.start, f.magnitude)).collect()
}

#[test]
fn ending_faults_early_does_not_change_the_random_schedule() {
    let mut left_alone = engine(13, 200, 3.0);
    let mut cleared = engine(13, 200, 3.0);
    let mut cleared_count = 0;
    for _ in 0..12 * 60 {
        let ts = left_alone.next_ts();
        left_alone.tick(ts);
        cleared.tick(ts);
        // Clear every fault (flapping ones included) a few minutes into it.
        let due: Vec<String> = cleared
            .faults()
            .active()
            .iter()
            .filter(|f| ts - f.event.start >= 5 * MINUTE)
            .map(|f| f.event.id.clone())
            .collect();
        for id in due {
            cleared.clear(&id).unwrap();
            cleared_count += 1;
        }
    }
    assert!(cleared_count > 100, "{cleared_count}");
    let (a, b) = (schedule(&left_alone), schedule(&cleared));
    let first_difference = a.iter().zip(&b).find(|(x, y)| x != y);
    assert_eq!(first_difference, None);
    assert_eq!(a.len(), b.len());
    // And the routers whose faults were never touched... are all of them here; a router with
    // no fault at all has the same records either way.
    let faulted: std::collections::BTreeSet<String> = left_alone.faults().all().map(|f| f.event.router).collect();
    let untouched = left_alone.records().iter().zip(cleared.records()).filter(|(a, _)| !faulted.contains(&a.router));
    let mut n = 0;
    for (a, b) in untouched {
        assert_eq!(a, b);
        n += 1;
    }
    assert!(n > 10, "{n} routers without faults");
}

#[test]
fn with_consequences_off_a_leak_runs_its_course_without_a_crash() {
    let config = RuntimeConfig {
        routers: ROUTERS,
        interval_ms: 60_000,
        fault_rate: 0.0,
        consequences: false,
        ..Default::default()
    };
    let mut e = Engine::new(5, config, START).unwrap();
    let p = core(&e);
    inject(&mut e, FaultKind::MemoryLeak, &p.id, 12.0, 0.5);
    let mut top = 0.0_f64;
    for _ in 0..(12 * 60) {
        let r = step(&mut e, p.index);
        top = top.max(r.metrics.mem_util);
        assert!(r.metrics.rx_bps > 0.0, "no reload");
    }
    assert!(top >= 0.99, "the leak filled memory ({top})");
    assert!(e.consequences().all().next().is_none(), "no consequence recorded");
}
