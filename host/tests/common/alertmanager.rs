//! Debian's real Alertmanager (`ROUTEWATCH_ALERTMANAGER`, set by `cargo xtask test`), started
//! with the shipped `deploy/alertmanager/alertmanager.yml`, for the tests that post to it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running Alertmanager, stopped when dropped.
pub struct Daemon {
    child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    let path = std::env::var_os("ROUTEWATCH_ALERTMANAGER").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "ROUTEWATCH_ALERTMANAGER is not set: run this test through `cargo xtask test`, which installs \
             Debian's prometheus-alertmanager, or set it to the prometheus-alertmanager binary"
        )
    });
    assert!(path.is_file(), "ROUTEWATCH_ALERTMANAGER={} is not a file", path.display());
    path
}

/// Starts one on a free port with the shipped configuration, and waits until it is ready.
pub fn start() -> Daemon {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = super::repo_root().join("deploy/alertmanager/alertmanager.yml");
    let config = config.display();
    let child = Command::new(binary())
        .arg(format!("--config.file={config}"))
        .arg(format!("--storage.path={}", dir.path().display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager starts");
    let daemon = Daemon { child, base: format!("http://127.0.0.1:{port}"), _dir: dir };
    wait_for("Alertmanager to be ready", || get(&daemon, "/-/ready").is_some());
    daemon
}

/// `GET` of a path as JSON (or the text, if it is not JSON); `None` if the request failed.
pub fn get(daemon: &Daemon, path: &str) -> Option<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(2))).build().into();
    let mut response = agent.get(format!("{}{path}", daemon.base)).call().ok()?;
    let text = response.body_mut().read_to_string().ok()?;
    Some(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The alerts Alertmanager holds (`GET /api/v2/alerts`): active, suppressed and unprocessed.
pub fn alerts(daemon: &Daemon) -> Vec<Value> {
    get(daemon, "/api/v2/alerts").and_then(|v| v.as_array().cloned()).unwrap_or_default()
}
