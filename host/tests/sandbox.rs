//! Containment: every way a plugin can be wrong or misbehave ends in a clear, typed error,
//! and the host goes on serving the other plugins.

mod common;

use std::time::{Duration, Instant};

use common::{arima, component, runtime, seasonal, series_batch};
use routewatch_host::runtime::{CallError, Instance, LoadError, Runtime, TrapKind};

fn evil(runtime: &Runtime, mode: &str) -> Instance {
    let plugin = runtime.load_file(&component("routewatch_test_evil")).expect("evil component loads");
    let mut instance = plugin.instantiate().unwrap();
    instance.configure(&format!(r#"{{"mode": "{mode}"}}"#)).unwrap();
    instance
}

/// A healthy ARIMA instance that has seen some data, to prove it is unaffected.
fn bystander(runtime: &Runtime) -> Instance {
    let mut instance = arima(runtime).instantiate().unwrap();
    instance.process(&series_batch(&seasonal(300, 1), 0)).unwrap();
    instance
}

fn assert_bystander_serves(instance: &mut Instance) {
    let out = instance.process(&series_batch(&seasonal(300, 1)[..], 300)).expect("the good plugin still serves");
    assert_eq!(out.scores.len(), 300);
}

/// Runs the evil plugin in `mode` beside a good one and returns the evil call's error.
fn misbehave(mode: &str) -> CallError {
    let runtime = runtime();
    let mut good = bystander(&runtime);
    let mut bad = evil(&runtime, mode);
    let err = bad.process(&series_batch(&[1.0, 2.0, 3.0], 0)).expect_err("the evil plugin fails");
    assert_bystander_serves(&mut good);
    // The same runtime still loads and runs plugins.
    assert_bystander_serves(&mut bystander(&runtime));
    if !err.instance_survives() {
        assert!(bad.is_poisoned());
        assert!(matches!(bad.process(&series_batch(&[1.0], 9)), Err(CallError::Poisoned)));
    }
    err
}

#[test]
fn an_infinite_loop_is_stopped_by_the_cpu_budget() {
    let started = Instant::now();
    let err = misbehave("loop");
    assert!(matches!(err, CallError::CpuBudgetExceeded { budget } if budget == Duration::from_millis(200)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "stopped promptly");
}

#[test]
fn a_memory_bomb_is_stopped_by_the_memory_cap() {
    let err = misbehave("alloc");
    let CallError::MemoryLimitExceeded { requested, cap } = err else { panic!("{err}") };
    assert_eq!(cap, 64 << 20);
    assert!(requested > cap);
}

#[test]
fn a_panic_is_a_trap_that_carries_the_panic_message() {
    let err = misbehave("panic");
    let CallError::Trap { kind, message } = &err else { panic!("{err}") };
    assert_eq!(*kind, TrapKind::Panic);
    assert!(message.contains("evil plugin panicked on purpose"), "{message}");
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    let err = misbehave("stack");
    assert!(matches!(err, CallError::Trap { kind: TrapKind::StackOverflow, .. }), "{err}");
}

#[test]
fn oversized_output_is_refused() {
    let err = misbehave("oversized");
    assert!(matches!(&err, CallError::InvalidOutput(m) if m.contains("7 scores for 3 points")), "{err}");
}

#[test]
fn nan_scores_are_refused() {
    let err = misbehave("nan");
    assert!(matches!(&err, CallError::InvalidOutput(m) if m.contains("outside [0, 1]")), "{err}");
}

#[test]
fn a_poisoned_instance_is_replaced_by_a_fresh_one_from_a_snapshot() {
    let runtime = runtime();
    let plugin = arima(&runtime);
    let mut instance = plugin.instantiate().unwrap();
    instance.process(&series_batch(&seasonal(300, 2), 0)).unwrap();
    let snapshot = instance.snapshot().unwrap();
    let mut fresh = plugin.instantiate().unwrap();
    fresh.restore(&snapshot).unwrap();
    let next = series_batch(&seasonal(600, 2)[300..], 300);
    assert_eq!(fresh.process(&next).unwrap(), instance.process(&next).unwrap());
}

#[test]
fn a_bad_snapshot_is_refused_and_the_instance_keeps_its_state() {
    let runtime = runtime();
    let mut instance = bystander(&runtime);
    let before = instance.snapshot().unwrap();
    let err = instance.restore(b"garbage").unwrap_err();
    assert!(matches!(&err, CallError::Plugin(m) if m.contains("snapshot")), "{err}");
    assert_eq!(instance.snapshot().unwrap(), before);
}

fn load_error(bytes: &[u8]) -> LoadError {
    runtime().load(bytes).expect_err("load is refused")
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let err = load_error(b"#!/bin/sh\necho not a plugin\n");
    assert!(matches!(err, LoadError::NotWasm), "{err}");
    assert!(matches!(load_error(b""), LoadError::NotWasm));
}

#[test]
fn a_core_module_is_refused_with_a_hint() {
    let err = load_error(b"\0asm\x01\0\0\0");
    assert!(matches!(err, LoadError::CoreModule), "{err}");
    assert!(err.to_string().contains("wasm32-wasip2"));
}

#[test]
fn a_truncated_component_does_not_compile() {
    let bytes = std::fs::read(component("routewatch_arima")).unwrap();
    let err = load_error(&bytes[..bytes.len() / 2]);
    assert!(matches!(err, LoadError::Compile(_)), "{err}");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let err = load_error(&std::fs::read(component("routewatch_test_wrong_world")).unwrap());
    let LoadError::NotADetector(reason) = &err else { panic!("{err}") };
    assert!(reason.contains("routewatch:not-a-detector/greeter@0.1.0"), "{reason}");
    assert!(reason.contains("routewatch:detector/detector@0.1.0"), "{reason}");
}

#[test]
fn a_component_of_another_wit_version_is_refused_naming_both() {
    let err = load_error(&std::fs::read(component("routewatch_test_wrong_version")).unwrap());
    assert!(matches!(&err, LoadError::UnsupportedVersion { found } if found == "9.9.9"), "{err}");
    assert!(err.to_string().contains("this host serves 0.1.0"), "{err}");
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        || routewatch_host::runtime::RuntimeConfig { cache_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let bytes = std::fs::read(component("routewatch_arima")).unwrap();

    let cold = Instant::now();
    let first = Runtime::new(config()).unwrap().load(&bytes).unwrap();
    let cold = cold.elapsed();
    let entries = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(entries, 1, "one compiled entry written");

    let warm = Instant::now();
    let second = Runtime::new(config()).unwrap().load(&bytes).unwrap();
    let warm = warm.elapsed();
    assert_eq!(first.sha256(), second.sha256());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing recompiled");
    assert!(warm < cold, "cached load ({warm:?}) is faster than compiling ({cold:?})");

    // A corrupt entry is ignored and replaced, not trusted.
    let entry = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&entry, b"corrupt").unwrap();
    let plugin = Runtime::new(config()).unwrap().load(&bytes).expect("recompiles past a corrupt entry");
    assert_eq!(plugin.info().name, "arima");
}
