//! Shared by the host's integration tests: where the plugin components are, and series to
//! feed them.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod alertmanager;
pub mod fleet;

use std::path::PathBuf;
use std::time::Duration;

use routewatch_host::runtime::{Batch, Column, Limits, Plugin, Runtime, RuntimeConfig};

/// The directory `cargo xtask build` puts components in: `<target>/wasm32-wasip2/plugin`,
/// found from this test binary's own path (`<target>/release/deps/<test>`), so it works
/// whatever `CARGO_TARGET_DIR` is.
pub fn plugin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe.ancestors().nth(3).expect("test binary lives in <target>/<profile>/deps");
    target.join("wasm32-wasip2").join("plugin")
}

/// The repository root, from `CARGO_MANIFEST_DIR` as cargo sets it when it runs the tests
/// (the path compiled in is a fallback only: clones that share a target directory share the
/// compiled tests, and that path is the other clone's).
pub fn repo_root() -> PathBuf {
    let host =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    host.parent().expect("host/ lives in the repository").to_path_buf()
}

/// Path of a built component, by crate name with underscores (e.g. `routewatch_arima`).
pub fn component(name: &str) -> PathBuf {
    let path = plugin_dir().join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: build the plugins first with `cargo xtask build`", path.display());
    path
}

/// A runtime with small limits, so that evil plugins are stopped quickly.
pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: None,
        limits: Limits { cpu_budget: Duration::from_millis(200), memory_bytes: 64 << 20, ..Limits::default() },
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

pub fn arima(runtime: &Runtime) -> Plugin {
    runtime.load_file(&component("routewatch_arima")).expect("ARIMA component loads")
}

/// One series as a batch of one router and one metric, timestamps a minute apart.
pub fn series_batch(values: &[f64], first_index: usize) -> Batch {
    Batch {
        routers: vec![7; values.len()],
        timestamps: (first_index..first_index + values.len()).map(|i| i as i64 * 60_000).collect(),
        columns: vec![Column { metric: "cpu_util".into(), values: values.to_vec() }],
    }
}

/// Deterministic Gaussian noise (Box-Muller over a xorshift generator).
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn gaussian(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// A daily cycle sampled every 5 minutes (288 samples a day) with noise of sd 0.2 around an
/// amplitude of 3: the shape of a router's traffic or CPU.
pub fn seasonal(n: usize, seed: u64) -> Vec<f64> {
    let mut noise = Noise::new(seed);
    (0..n).map(|t| 10.0 + 3.0 * (t as f64 * std::f64::consts::TAU / 288.0).sin() + 0.2 * noise.gaussian()).collect()
}

/// The same component with a custom section appended: new bytes (a new sha256), the same
/// code. It stands in for a rebuilt plugin.
pub fn rebuilt(component: &[u8], tag: &str) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let name = b"routewatch-test-build";
    let mut payload = Vec::new();
    leb128(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut bytes = component.to_vec();
    bytes.push(0); // custom section
    leb128(payload.len(), &mut bytes);
    bytes.extend_from_slice(&payload);
    bytes
}

/// Sum of every sample of a metric family (all label sets) in a Prometheus text exposition.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    metric_samples(exposition, name, &[]).iter().sum()
}

/// Values of the samples of `name` whose labels include every `key="value"` in `labels`.
pub fn metric_samples(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse().ok())?
        })
        .collect()
}

/// A token for the hosts under test, so that none writes one into the home directory.
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

/// Waits until `condition` holds, polling; fails the test with `what` after `timeout`.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a `routewatch run` child with SIGKILL (a crash, not a shutdown) and reaps it.
pub fn kill(mut host: std::process::Child) {
    host.kill().expect("SIGKILL");
    host.wait().unwrap();
}
