//! Hostile plugins against the runtime, one guarantee per test: each fails when the guarantee
//! it names is broken. (Pipeline and API abuse: `hostile_clients.rs` and `pipeline.rs`.)

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{component, runtime, series_batch};
use routewatch_host::runtime::{CallError, Instance, LOG_LINES_PER_SECOND, LoadError, Runtime, RuntimeConfig};

fn evil(runtime: &Runtime, config: &str) -> Instance {
    let plugin = runtime.load_file(&component("routewatch_test_evil")).expect("evil component loads");
    let mut instance = plugin.instantiate().unwrap();
    instance.configure(config).unwrap();
    instance
}

/// The budget counts the plugin's own CPU time: a plugin that needs half its budget is never
/// stopped because it had to wait for a core. Six busy threads on this machine's two cores
/// each get about a third of a core, so every call takes well over its budget in wall time.
#[test]
fn the_cpu_budget_counts_cpu_time_not_waiting_for_a_core() {
    let runtime = Arc::new(runtime()); // a 200 ms budget
    // Calibrate: spins that cost about 100 ms of CPU, half the budget.
    let mut probe = evil(&runtime, r#"{"mode": "busy", "spins": 10000000}"#);
    probe.process(&series_batch(&[1.0], 0)).unwrap();
    let per_spin = probe.last_call().cpu.as_secs_f64() / 1e7;
    let spins = (0.1 / per_spin) as u64;
    let config = format!(r#"{{"mode": "busy", "spins": {spins}}}"#);
    let threads = 6;
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (runtime, config, slowest) = (runtime.clone(), config.clone(), slowest.clone());
            std::thread::spawn(move || {
                let mut instance = evil(&runtime, &config);
                for i in 0..4 {
                    instance.process(&series_batch(&[1.0], i)).expect("half a budget of CPU is within it");
                    let wall = instance.last_call().duration;
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(wall);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("no call was stopped");
    }
    // The test means something only if calls really outlasted the budget in wall time.
    let slowest = *slowest.lock().unwrap();
    assert!(slowest > Duration::from_millis(200), "calls took at most {slowest:?}: the machine was not contended");
}

#[test]
fn a_cpu_bound_loop_is_still_stopped_by_its_cpu_budget() {
    let runtime = runtime();
    let mut instance = evil(&runtime, r#"{"mode": "loop"}"#);
    let started = Instant::now();
    let err = instance.process(&series_batch(&[1.0], 0)).unwrap_err();
    assert!(matches!(err, CallError::CpuBudgetExceeded { .. }), "{err}");
    let cpu = instance.last_call().cpu;
    assert!(cpu >= Duration::from_millis(190) && cpu < Duration::from_millis(400), "used {cpu:?} of CPU");
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// A log sink that keeps what was written, for one thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn plugin_logs_are_limited_per_plugin_across_instances_and_cannot_forge_host_lines() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || sink.clone()).with_ansi(false).finish();
    let runtime = runtime();
    let plugin = runtime.load_file(&component("routewatch_test_evil")).unwrap();
    let flood = || {
        let mut instance = plugin.instantiate().unwrap();
        instance.configure(r#"{"mode": "log-flood"}"#).unwrap();
        instance
    };
    // Four instances (four partitions, say), and one started later (a restart).
    let mut instances: Vec<Instance> = (0..5).map(|_| flood()).collect();
    let started = Instant::now();
    tracing::subscriber::with_default(subscriber, || {
        // Each logs 100 lines a call; four of them twice.
        for round in 0..2 {
            for instance in &mut instances[..4] {
                instance.process(&series_batch(&[1.0], round)).unwrap();
            }
        }
        instances[4].process(&series_batch(&[1.0], 9)).unwrap();
    });
    assert!(started.elapsed() < Duration::from_secs(1), "the test must run within one window of the limit");
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let plugin_lines: Vec<&str> = text.lines().filter(|l| l.contains("line ")).collect();
    assert_eq!(plugin_lines.len(), LOG_LINES_PER_SECOND as usize, "{text}");
    // The forged text stays inside its own line, escaped.
    assert!(plugin_lines.iter().all(|l| l.contains(r"\n2026-12-01T03:00:00") && l.contains(r"\u{1b}")), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("2026-12-01T03:00:00")), "a plugin forged a host line:\n{text}");
}

#[test]
fn info_over_its_caps_is_refused_at_load() {
    let runtime = runtime();
    let err = runtime.load_file(&component("routewatch_test_bloated")).unwrap_err();
    assert!(
        matches!(&err, LoadError::BadInfo(m) if m.contains("description is") && m.contains("over the cap")),
        "{err}"
    );
    // The reason itself is short: it does not echo the description.
    assert!(err.to_string().len() < 200, "{err}");
}

#[test]
fn only_components_that_loaded_are_cached_and_the_cache_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let entries = || std::fs::read_dir(dir.path()).unwrap().filter_map(Result::ok).count();
    let cached = |max: u64| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.path().to_path_buf()),
            cache_max_bytes: max,
            ..RuntimeConfig::default()
        })
        .unwrap()
    };
    let runtime = cached(u64::MAX);
    runtime.load_file(&component("routewatch_test_bloated")).unwrap_err();
    assert_eq!(entries(), 0, "a component that failed to load was cached");
    runtime.load_file(&component("routewatch_test_evil")).unwrap();
    assert_eq!(entries(), 1);
    // A cap below two entries keeps only the newest.
    let size = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().metadata().unwrap().len();
    let runtime = cached(size + 1);
    runtime.load_file(&component("routewatch_test_impostor")).unwrap();
    assert_eq!(entries(), 1, "the cache grew past its cap");
    // What is left is the newest: loading it again needs no compilation, and still works.
    runtime.load_file(&component("routewatch_test_impostor")).unwrap();
}

#[test]
fn bounds_are_finite_or_open_on_their_own_side() {
    let runtime = runtime();
    let out = evil(&runtime, r#"{"mode": "one-sided"}"#).process(&series_batch(&[1.0, 2.0], 0)).unwrap();
    assert!(out.anomalies.iter().all(|a| a.lower == f64::NEG_INFINITY));
    let err = evil(&runtime, r#"{"mode": "bad-bounds"}"#).process(&series_batch(&[1.0, 2.0], 0)).unwrap_err();
    assert!(matches!(&err, CallError::InvalidOutput(m) if m.contains("bounds")), "{err}");
    let err = evil(&runtime, r#"{"mode": "long-reason"}"#).process(&series_batch(&[1.0], 0)).unwrap_err();
    assert!(matches!(&err, CallError::InvalidOutput(m) if m.contains("reason")), "{err}");
}
