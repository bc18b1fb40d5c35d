//! Plugin lifecycle in the streaming host, against a real broker process: a new version swapped
//! in while records flow, and the evil-plugin suite beside a good plugin, ending with a scrape of
//! `/metrics`.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::fleet::{PARTITIONS, T0, await_marked, keys, produce, producer, record, router, topics};
use common::{TEST_TOKEN, component, metric_samples, metric_sum, rebuilt, wait_for};
use routewatch_host::{Host, HostConfig};
use routewatch_telemetry::AnomalyEvent;
use routewatch_testkit::Broker;
use serde_json::json;

/// One test at a time: `evil_plugins_are_contained_while_a_good_one_keeps_its_pace` measures
/// ARIMA's CPU time per point, which a busy neighbour on the other hardware thread inflates.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn config(broker: &Broker, group: &str, dir: &Path) -> HostConfig {
    let mut config = HostConfig {
        brokers: broker.bootstrap(),
        group_id: group.into(),
        partitions: PARTITIONS,
        plugin_dir: Some(dir.into()),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_token: Some(TEST_TOKEN.into()),
        linger_ms: 20,
        snapshot_interval_secs: 1,
        ..HostConfig::default()
    };
    config.kafka.insert("session.timeout.ms".into(), "6000".into());
    config.kafka.insert("heartbeat.interval.ms".into(), "500".into());
    config
}

/// A quiet series with a slow cycle: what ARIMA warms up on.
fn calm(routers: usize, steps: std::ops::Range<i64>, spike: Option<(usize, i64)>) -> Vec<(String, Vec<u8>)> {
    let mut noise = common::Noise::new(steps.start as u64 + 1);
    let mut records = Vec::new();
    for step in steps {
        for r in 0..routers {
            let mut cpu = 0.4 + 0.1 * (step as f64 * std::f64::consts::TAU / 288.0).sin() + 0.01 * noise.gaussian();
            if spike == Some((r, step)) {
                cpu += 0.3;
            }
            records.push((router(r), record(r, step, cpu)));
        }
    }
    records
}

/// A plugin directory holding ARIMA and the evil plugin; also ARIMA's bytes, to rebuild it.
fn arima_and_evil() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let arima = std::fs::read(component("routewatch_arima")).unwrap();
    std::fs::write(dir.path().join("arima.wasm"), &arima).unwrap();
    std::fs::copy(component("routewatch_test_evil"), dir.path().join("evil.wasm")).unwrap();
    (dir, arima)
}

#[test]
fn a_new_version_takes_over_with_its_state_while_records_flow() {
    let _alone = alone();
    let broker = Broker::start();
    topics(&broker);
    let (dir, arima) = arima_and_evil();
    let mut config = config(&broker, "swap", dir.path());
    // The evil plugin marks every record, so the anomalies topic shows what was processed.
    config.plugin_config.insert("evil".into(), json!({"mode": "mark"}));
    let producer = producer(&broker);
    let routers = 8;
    // ARIMA's warm-up is 120 samples: after 200 every series is fitted.
    let warm = calm(routers, 0..200, None);
    produce(&producer, &warm);
    let pipeline = Host::start(config).unwrap();
    await_marked(&broker, &keys(&warm), Duration::from_secs(120));

    // The new version lands while records keep arriving.
    let during = calm(routers, 200..260, None);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (records, producer, stop) = (during.clone(), producer.clone(), stop.clone());
        std::thread::spawn(move || {
            for chunk in records.chunks(routers) {
                produce(&producer, chunk);
                if !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
    };
    let registry = pipeline.registry().clone();
    let old_sha = registry.get("arima").unwrap().sha256;
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(dir.path().join("arima.wasm"), rebuilt(&arima, "v2")).unwrap();
    wait_for("the registry to take the new version", Duration::from_secs(10), || {
        registry.get("arima").is_some_and(|s| s.sha256 != old_sha)
    });
    wait_for("every partition to swap", Duration::from_secs(30), || {
        metric_sum(&pipeline.metrics().encode(), "routewatch_plugin_swap_pause_seconds_count") >= f64::from(PARTITIONS)
    });
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();

    // Ten samples after the swap: a fresh ARIMA would still be warming up and see nothing.
    let after = calm(routers, 260..300, Some((3, 270)));
    produce(&producer, &after);
    let mut spike = None;
    broker.consume_until("router-anomalies", Duration::from_secs(60), |m| {
        let event: AnomalyEvent = serde_json::from_slice(&m.payload).unwrap();
        let hit = event.plugin == "arima" && event.router == router(3) && event.ts == T0 + 270 * 1000;
        if hit {
            spike = Some(event);
        }
        hit
    });
    assert_eq!(spike.expect("the new version flagged the spike").metric, "cpu_util");

    // Every record processed, none twice: each (router, ts) marked exactly once.
    let all: HashSet<(String, i64)> = keys(&warm).into_iter().chain(keys(&during)).chain(keys(&after)).collect();
    await_marked(&broker, &all, Duration::from_secs(60));
    let mut marks: HashMap<(String, i64), usize> = HashMap::new();
    let total = all.len();
    broker.consume_until("router-anomalies", Duration::from_secs(30), |m| {
        let event: AnomalyEvent = serde_json::from_slice(&m.payload).unwrap();
        if event.plugin == "evil" && event.metric == "cpu_util" {
            *marks.entry((event.router, event.ts)).or_default() += 1;
        }
        marks.values().sum::<usize>() >= total
    });
    std::thread::sleep(Duration::from_millis(500));
    let twice: Vec<_> = marks.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "processed twice: {twice:?}");
    assert_eq!(marks.len(), total);

    let status = registry.get("arima").unwrap();
    assert_eq!((status.counters.reloads, status.last_error), (1, None));
    let metrics = pipeline.metrics().encode();
    assert_eq!(metric_sum(&metrics, "routewatch_plugin_reloads_total"), 1.0);
    let pauses = metric_samples(&metrics, "routewatch_plugin_swap_pause_seconds_sum", &[("plugin", "arima")]);
    eprintln!("swap pauses: {} partitions, {:.2} ms in all", PARTITIONS, pauses.iter().sum::<f64>() * 1e3);
    pipeline.shutdown().unwrap();
}

/// ARIMA's CPU time per point so far, and its points.
fn arima_cost(metrics: &str) -> (f64, f64) {
    let cpu = metric_sum_of(metrics, "routewatch_plugin_cpu_seconds_total", "arima");
    let points = metric_sum_of(metrics, "routewatch_plugin_points_total", "arima");
    (cpu, points)
}

fn metric_sum_of(metrics: &str, name: &str, plugin: &str) -> f64 {
    metric_samples(metrics, name, &[("plugin", plugin)]).iter().sum()
}

fn scrape(pipeline: &Host) -> String {
    let url = format!("http://{}/metrics", pipeline.http_addr());
    ureq::get(&url).call().unwrap().body_mut().read_to_string().unwrap()
}

#[test]
fn evil_plugins_are_contained_while_a_good_one_keeps_its_pace() {
    let _alone = alone();
    let broker = Broker::start();
    topics(&broker);
    let (dir, arima) = arima_and_evil();
    let mut config = HostConfig {
        cpu_budget_ms: 100,
        memory_mib: 64,
        batch_records: 500,
        quarantine_failures: 2,
        quarantine_backoff_secs: 600,
        ..config(&broker, "evil", dir.path())
    };
    // ARIMA's periodic refit (every 1440 samples) would land in one measured phase and not the
    // others; the comparison is about the neighbour, not the refit schedule.
    config.plugin_config.insert("arima".into(), json!({"refit_every": 1_000_000}));
    let producer = producer(&broker);
    let routers = 50;
    let pipeline = Host::start(config).unwrap();
    let registry = pipeline.registry().clone();
    let mut step = 0i64;
    // Produces a phase of `steps` samples per router in two halves (so that there are several
    // batches) and waits until ARIMA has scored all of it.
    let mut phase = |steps: i64, poison: bool| {
        let mut records = calm(routers, step..step + steps, Some((7, step + steps / 2)));
        if poison {
            let (_, payload) = &mut records[routers * 3 + 1];
            let text = String::from_utf8(payload.clone()).unwrap().replace("\"fan_rpm\":6000.0", "\"fan_rpm\":666.0");
            *payload = text.into_bytes();
        }
        step += steps;
        let (_, before) = arima_cost(&pipeline.metrics().encode());
        let half = records.len() / 2;
        produce(&producer, &records[..half]);
        std::thread::sleep(Duration::from_millis(200));
        produce(&producer, &records[half..]);
        let expected = before + (records.len() * 10) as f64;
        wait_for("ARIMA to score the phase", Duration::from_secs(60), || {
            arima_cost(&pipeline.metrics().encode()).1 >= expected
        });
    };

    // Warm ARIMA up first, so that the measured phases cost the same (no first fits).
    phase(150, false);
    let cost = |f: &mut dyn FnMut()| {
        let (cpu0, points0) = arima_cost(&pipeline.metrics().encode());
        f();
        let (cpu1, points1) = arima_cost(&pipeline.metrics().encode());
        (cpu1 - cpu0) / (points1 - points0)
    };
    // Phases long enough (150,000 points) that ARIMA's CPU time is tens of milliseconds. The
    // reference is the slowest of three clean phases: one phase alone has run 27% slower than
    // the next on an idle machine, with no neighbour at all.
    let clean: Vec<f64> = (0..3).map(|_| cost(&mut || phase(300, false))).collect();
    let baseline = clean.iter().copied().fold(0.0, f64::max);
    eprintln!("clean phases: {:?} ns/point", clean.iter().map(|c| (c * 1e9).round()).collect::<Vec<_>>());
    assert_eq!(registry.get("evil").unwrap().state, "running");

    for mode in ["panic", "stack", "alloc", "loop", "oversized", "nan"] {
        registry.configure("evil", json!({"mode": mode})).unwrap();
        registry.set_enabled("evil", true).unwrap();
        let per_point = cost(&mut || phase(300, false));
        wait_for("the evil plugin's quarantine", Duration::from_secs(30), || {
            registry.get("evil").unwrap().state == "quarantined"
        });
        let status = registry.get("evil").unwrap();
        let reason = status.quarantine.expect("a quarantine says why").reason;
        eprintln!("{mode}: quarantined ({reason}); ARIMA {:.0} ns/point vs {:.0}", per_point * 1e9, baseline * 1e9);
        // A contained plugin costs ARIMA nothing; the slack covers what a busy neighbour on two
        // cores does to CPU time per point (shared caches), seen up to 12% here.
        assert!(
            per_point <= baseline * 1.25,
            "{mode}: ARIMA slowed from {:.0} to {:.0} ns per point",
            baseline * 1e9,
            per_point * 1e9
        );
    }

    // A record that makes the plugin trap goes to the dead-letter topic; the plugin runs on.
    registry.configure("evil", json!({"mode": "poison"})).unwrap();
    registry.set_enabled("evil", true).unwrap();
    let evil_points = metric_sum_of(&pipeline.metrics().encode(), "routewatch_plugin_points_total", "evil");
    phase(20, true);
    // Earlier modes may have left letters too: a one-record batch that traps is that record's
    // fault as far as the engine can tell. Look for the poison record's.
    let mut found = None;
    broker.consume_until("router-metrics-dlq", Duration::from_secs(30), |letter| {
        let poison = letter.header("routewatch-error").is_some_and(|e| String::from_utf8_lossy(e).contains("666"));
        if poison {
            found = Some(letter);
        }
        poison
    });
    let letter = found.expect("the poison record's dead letter");
    assert_eq!(letter.header("routewatch-error-kind"), Some(&b"plugin_trap"[..]));
    assert_eq!(letter.header("routewatch-plugin"), Some(&b"evil@0.1.0"[..]));
    let error = String::from_utf8_lossy(letter.header("routewatch-error").unwrap()).into_owned();
    assert!(error.contains("poison value 666"), "{error}");
    assert!(String::from_utf8_lossy(&letter.payload).contains("\"fan_rpm\":666.0"), "the original record");
    wait_for("evil to score the rest", Duration::from_secs(30), || {
        let points = metric_sum_of(&pipeline.metrics().encode(), "routewatch_plugin_points_total", "evil");
        points >= evil_points + ((routers * 20 - 1) * 10) as f64
    });
    assert_eq!(registry.get("evil").unwrap().state, "running", "one bad record is not the plugin's fault");

    // Components that are no detector, or of another WIT version, never get in.
    std::fs::copy(component("routewatch_test_wrong_world"), dir.path().join("wrong-world.wasm")).unwrap();
    std::fs::copy(component("routewatch_test_wrong_version"), dir.path().join("wrong-version.wasm")).unwrap();
    wait_for("both to be refused", Duration::from_secs(10), || registry.file_errors().len() == 2);
    assert_eq!(registry.list().len(), 2);

    // And a reload, so that every metric has something to say.
    std::fs::write(dir.path().join("arima.wasm"), rebuilt(&arima, "v2")).unwrap();
    wait_for("the reload on every partition", Duration::from_secs(30), || {
        metric_sum(&pipeline.metrics().encode(), "routewatch_plugin_swap_pause_seconds_count") >= f64::from(PARTITIONS)
    });
    registry.configure("evil", json!({"mode": "nan"})).unwrap();
    phase(10, false);
    wait_for("the last quarantine", Duration::from_secs(30), || registry.get("evil").unwrap().state == "quarantined");

    let m = scrape(&pipeline);
    let arima_points = metric_sum_of(&m, "routewatch_plugin_points_total", "arima");
    assert_eq!(arima_points, (routers as i64 * step * 10) as f64, "ARIMA scored every point");
    assert!(metric_sum_of(&m, "routewatch_plugin_invocations_total", "arima") > 0.0);
    assert!(metric_sum_of(&m, "routewatch_plugin_call_duration_seconds_count", "arima") > 0.0);
    let cpu = metric_sum_of(&m, "routewatch_plugin_cpu_seconds_total", "arima");
    assert!(cpu > 0.0 && cpu < 60.0, "ARIMA CPU {cpu} s");
    let memory = metric_sum_of(&m, "routewatch_plugin_memory_high_water_bytes", "arima");
    assert!(memory > 0.0 && memory <= (64 << 20) as f64, "ARIMA memory {memory}");
    assert!(metric_sum_of(&m, "routewatch_plugin_memory_high_water_bytes", "evil") > (64 << 20) as f64, "the bomb");
    assert!(metric_sum_of(&m, "routewatch_anomalies_total", "arima") >= 1.0, "ARIMA found the spikes");
    assert!(metric_sum(&m, "routewatch_site_anomalies_total") >= 1.0);
    assert!(!metric_samples(&m, "routewatch_router_anomalies_total", &[("router", &router(7))]).is_empty());
    for kind in ["panic", "stack_overflow", "memory_limit", "cpu_budget", "invalid_output"] {
        let traps = metric_samples(&m, "routewatch_plugin_traps_total", &[("plugin", "evil"), ("kind", kind)]);
        assert!(traps.iter().sum::<f64>() >= 1.0, "no {kind} traps counted");
    }
    assert!(metric_sum_of(&m, "routewatch_plugin_quarantines_total", "evil") >= 7.0);
    assert_eq!(metric_sum_of(&m, "routewatch_plugin_poison_records_total", "evil"), 1.0);
    assert_eq!(metric_samples(&m, "routewatch_dead_letters_total", &[("reason", "plugin_trap")]), [1.0]);
    assert_eq!(metric_samples(&m, "routewatch_plugin_reloads_total", &[("plugin", "arima")]), [1.0]);
    assert_eq!(metric_samples(&m, "routewatch_plugin_state", &[("plugin", "evil"), ("state", "quarantined")]), [1.0]);
    assert_eq!(metric_samples(&m, "routewatch_plugin_state", &[("plugin", "evil"), ("state", "running")]), [0.0]);
    assert_eq!(metric_samples(&m, "routewatch_plugin_state", &[("plugin", "arima"), ("state", "running")]), [1.0]);
    assert!(metric_sum(&m, "routewatch_plugin_swap_pause_seconds_count") >= f64::from(PARTITIONS));
    assert_eq!(metric_sum(&m, "routewatch_plugin_load_failures_total"), 2.0);
    pipeline.shutdown().unwrap();
}

/// A new version that refuses the old state where there is some: the API says so per
/// partition, a configuration still reaches the version that really runs, and `start-fresh`
/// finishes the change.
#[test]
fn a_refused_swap_is_shown_per_partition_and_a_fresh_start_completes_it() {
    let _alone = alone();
    let broker = Broker::start();
    topics(&broker);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(component("routewatch_test_evil"), dir.path().join("evil.wasm")).unwrap();
    let mut config = config(&broker, "refused", dir.path());
    config.plugin_config.insert("evil".into(), json!({"mode": "mark"}));
    let producer = producer(&broker);
    // Two routers, so that some partitions hold state and the others none.
    let first = calm(2, 0..5, None);
    produce(&producer, &first);
    let pipeline = Host::start(config).unwrap();
    await_marked(&broker, &keys(&first), Duration::from_secs(120));
    let registry = pipeline.registry().clone();
    let base = format!("http://{}", pipeline.http_addr());
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let auth = format!("Bearer {TEST_TOKEN}");

    // The impostor is `evil` 0.2.0 and refuses any state but its own.
    let impostor = std::fs::read(component("routewatch_test_impostor")).unwrap();
    let response = agent.post(&format!("{base}/api/v1/plugins")).header("Authorization", &auth).send(&impostor[..]);
    assert_eq!(response.unwrap().status().as_u16(), 200);
    wait_for("the partitions with state to refuse the new version", Duration::from_secs(20), || {
        let status = registry.get("evil").unwrap();
        status.state == "partial"
            && status.last_error.is_some()
            && status.partitions.len() == PARTITIONS as usize
            && status.partitions.iter().any(|p| p.version == "0.1.0")
            && status.partitions.iter().any(|p| p.version == "0.2.0")
    });
    let status = registry.get("evil").unwrap();
    assert!(status.last_error.as_deref().is_some_and(|e| e.contains("refusing a foreign state")), "{status:?}");
    let exposition = pipeline.metrics().encode();
    let old_partitions = metric_samples(&exposition, "routewatch_plugin_partitions", &[("version", "0.1.0")]);
    assert!(old_partitions.iter().sum::<f64>() >= 1.0, "{exposition}");

    // A configuration reaches the old version where it still runs: it now marks one-sided.
    let response = agent
        .put(&format!("{base}/api/v1/plugins/evil/config"))
        .header("Authorization", &auth)
        .send_json(json!({"mode": "one-sided"}));
    assert_eq!(response.unwrap().status().as_u16(), 200);
    produce(&producer, &calm(2, 5..8, None));
    let mut reconfigured = false;
    broker.consume_until("router-anomalies", Duration::from_secs(60), |m| {
        let event: AnomalyEvent = serde_json::from_slice(&m.payload).unwrap();
        reconfigured |= event.plugin_version == "0.1.0" && event.reason == "one-sided" && event.lower.is_none();
        reconfigured
    });
    assert!(reconfigured, "the old version never took the new configuration");

    // The operator lets the new version start without the old state.
    let response =
        agent.post(&format!("{base}/api/v1/plugins/evil/start-fresh")).header("Authorization", &auth).send_empty();
    assert_eq!(response.unwrap().status().as_u16(), 200);
    wait_for("every partition to run the new version", Duration::from_secs(20), || {
        let status = registry.get("evil").unwrap();
        status.state == "running" && status.partitions.iter().all(|p| p.version == "0.2.0")
    });
    pipeline.shutdown().unwrap();
}
