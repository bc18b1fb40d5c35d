//! The `routewatch-sim` binary end to end: the data-set command, and the acceptance path
//! (fault injected by HTTP shows in the next samples, in `GET /faults` and on `router-faults`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use routewatch_telemetry::{FaultEvent, Record};
use routewatch_testkit::Broker;
use serde_json::Value;

const SIM: &str = env!("CARGO_BIN_EXE_routewatch-sim");

#[test]
fn generates_a_labelled_data_set_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let generate = |name: &str| {
        let out = dir.path().join(name).join("fleet.jsonl");
        let status = Command::new(SIM)
            .args(["--mode", "fast", "--routers", "50", "--interval", "60s", "--duration", "6h"])
            .args(["--fault-rate", "4", "--seed", "9", "--no-api", "--out"])
            .arg(&out)
            .env_remove("ROUTEWATCH_BROKERS")
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let records = std::fs::read_to_string(&out).unwrap();
        let faults = std::fs::read_to_string(out.with_file_name("fleet.faults.jsonl")).unwrap();
        (records, faults)
    };
    let (records, faults) = generate("a");
    let lines: Vec<Record> = records.lines().map(|l| Record::decode(l.as_bytes()).unwrap()).collect();
    assert_eq!(lines.len(), 50 * 6 * 60);
    let start = 1_736_121_600_000; // the default --start, 2025-01-06T00:00:00Z
    assert_eq!(lines[0].ts, start);
    assert_eq!(lines.last().unwrap().ts, start + (6 * 60 - 1) * 60_000);

    let events: Vec<FaultEvent> = faults.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // 50 routers x 0.25 day x 4 per router-day: about 50.
    assert!(events.len() > 25, "{} faults", events.len());
    let ids: std::collections::BTreeSet<_> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "one line per fault");
    assert!(events.iter().all(|e| e.end > e.start && !e.metrics.is_empty()));

    assert_eq!(generate("b"), (records, faults), "same seed, same data set");
}

#[test]
fn bad_flags_fail_with_a_message() {
    let out = Command::new(SIM).args(["--interval", "soon"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interval"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.jsonl");
    let out = Command::new(SIM).args(["--mode", "fast", "--no-api", "--out"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration"));
    assert!(!file.exists(), "refused before creating the file");
    let out = Command::new(SIM).args(["--routers", "0", "--no-api"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("routers"));
}

/// A minimal HTTP/1.1 client: enough for a test, without another dependency.
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split(' ').nth(1)?.parse().ok()?;
    let (_, payload) = resp.split_once("\r\n\r\n")?;
    Some((status, serde_json::from_str(payload).ok()?))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fault_injected_over_http_changes_the_next_samples_and_is_published() {
    let broker = Broker::tansu();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(SIM)
        .args(["--routers", "50", "--interval", "100ms", "--fault-rate", "0", "--partitions", "2"])
        .args(["--brokers", &broker.bootstrap(), "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut sim = Killed(child);

    // Up once /healthz answers and a few samples have been taken.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, v)) = http(port, "GET", "/healthz", None)
            && v["ticks"].as_u64() >= Some(5)
        {
            break;
        }
        assert!(Instant::now() < deadline, "simulator did not come up");
        assert!(sim.0.try_wait().unwrap().is_none(), "simulator exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, fault) = http(
        port,
        "POST",
        "/faults",
        Some(r#"{"kind":"cpu-runaway","router":"rtr-000007","duration_s":600,"magnitude":0.6}"#),
    )
    .unwrap();
    assert_eq!(status, 201, "{fault}");
    let id = fault["id"].as_str().unwrap().to_owned();
    let start = fault["start"].as_i64().unwrap();
    let (_, list) = http(port, "GET", "/faults?active=true", None).unwrap();
    assert_eq!(list["faults"][0]["id"], id.as_str());

    // On router-faults...
    broker.consume_until("router-faults", Duration::from_secs(60), |m| {
        let e: FaultEvent = serde_json::from_slice(&m.payload).unwrap();
        e.id == id && m.header("phase") == Some(b"started")
    });
    // ...and in the samples: CPU of rtr-000007 jumps from the fault's start on.
    let (mut before, mut after) = (Vec::new(), Vec::new());
    broker.consume_until("router-metrics", Duration::from_secs(60), |m| {
        let r = Record::decode(&m.payload).unwrap();
        if r.router == "rtr-000007" {
            if r.ts < start { before.push(r.metrics.cpu_util) } else { after.push(r.metrics.cpu_util) }
        }
        after.len() >= 5
    });
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(!before.is_empty());
    assert!(mean(&after) > mean(&before) + 0.3, "cpu {} -> {}", mean(&before), mean(&after));

    // Ctrl-C stops it cleanly.
    let pid = sim.0.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = sim.0.wait().unwrap();
    assert!(status.success(), "exit {status}");
}
