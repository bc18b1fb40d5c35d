//! `routewatch replay` as an operator runs it: files in, files out, clear errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{component, seasonal};
use routewatch_telemetry::{AnomalyEvent, Metrics, Record, Role, SCHEMA_VERSION};

fn routewatch(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_routewatch"))
        .args(args)
        .env("ROUTEWATCH_CACHE_DIR", dir.join("cache"))
        .current_dir(dir)
        .output()
        .expect("routewatch runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn arima() -> String {
    component("routewatch_arima").display().to_string()
}

/// 100,000 points of a seasonal series with a spike, as `timestamp,value` with epoch seconds.
fn write_series(path: &Path) {
    let mut values = seasonal(100_000, 5);
    values[60_000] += 4.0;
    let mut csv = String::from("timestamp,value\n");
    for (i, v) in values.iter().enumerate() {
        csv.push_str(&format!("{},{v:.5}\n", 1_764_000_000 + i as i64 * 300));
    }
    std::fs::write(path, csv).unwrap();
}

#[test]
fn a_hundred_thousand_point_csv_gives_one_score_row_per_point_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    write_series(&dir.path().join("series.csv"));
    let run = |tag: &str| {
        let (scores, anomalies) = (format!("scores-{tag}.csv"), format!("anomalies-{tag}.jsonl"));
        let args = ["replay", "-p", &arima(), "-i", "series.csv", "--scores", &scores, "--anomalies", &anomalies];
        let out = routewatch(&args, dir.path());
        assert!(out.status.success(), "{}", stderr(&out));
        (
            std::fs::read_to_string(dir.path().join(scores)).unwrap(),
            std::fs::read_to_string(dir.path().join(anomalies)).unwrap(),
        )
    };
    let (scores, anomalies) = run("a");
    let lines: Vec<&str> = scores.lines().collect();
    assert_eq!(lines.len(), 100_001, "header plus one row per point");
    assert_eq!(lines[0], "timestamp,router,metric,value,arima");
    assert!(lines[1].starts_with("2025-11-24T16:00:00.000Z,series,value,"), "{}", lines[1]);

    let events: Vec<AnomalyEvent> = anomalies.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let spike = events.iter().find(|e| e.ts == (1_764_000_000 + 60_000 * 300) * 1000).expect("the spike is reported");
    assert_eq!((spike.plugin.as_str(), spike.router.as_str(), spike.metric.as_str()), ("arima", "series", "value"));
    assert!(
        spike.score > 0.5
            && spike.lower.is_some_and(|lower| lower < spike.expected)
            && spike.upper.is_some_and(|upper| spike.expected < upper && spike.value > upper)
    );

    assert_eq!(run("b"), (scores, anomalies), "same input, same bytes out");
}

fn record(router: &str, ts: i64, cpu: f64) -> String {
    let metrics =
        Metrics { cpu_util: cpu, mem_util: 0.5, temp_c: 40.0, fan_rpm: 6000.0, bgp_up: 4.0, ..Default::default() };
    let record = Record {
        schema: SCHEMA_VERSION,
        router: router.into(),
        site: "fra1".into(),
        region: "eu-central".into(),
        role: Role::Edge,
        vendor: "acme".into(),
        ts,
        metrics,
    };
    String::from_utf8(record.encode()).unwrap()
}

fn write_records(path: &Path, bad_line: Option<&str>) {
    let mut lines = Vec::new();
    for i in 0..400 {
        for router in ["rtr-a", "rtr-b"] {
            let cpu = 0.4 + 0.05 * ((i as f64) / 20.0).sin() + if router == "rtr-b" && i == 300 { 0.4 } else { 0.0 };
            lines.push(record(router, 1_764_000_000_000 + i * 60_000, cpu));
        }
        if i == 200
            && let Some(bad) = bad_line
        {
            lines.push(bad.to_owned());
        }
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn telemetry_json_lines_are_scored_per_router_and_metric() {
    let dir = tempfile::tempdir().unwrap();
    write_records(&dir.path().join("fleet.jsonl"), None);
    let args = ["replay", "-p", &arima(), "-i", "fleet.jsonl", "--scores", "scores.csv", "--anomalies", "-"];
    let out = routewatch(&args, dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let scores = std::fs::read_to_string(dir.path().join("scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 1 + 800 * 10, "a row per record and metric");
    let events: Vec<AnomalyEvent> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let cpu: Vec<&AnomalyEvent> = events.iter().filter(|e| e.metric == "cpu_util").collect();
    assert_eq!(cpu.len(), 1, "{events:?}");
    assert_eq!((cpu[0].router.as_str(), cpu[0].ts), ("rtr-b", 1_764_000_000_000 + 300 * 60_000));
    assert_eq!((cpu[0].site.as_deref(), cpu[0].role.as_deref()), (Some("fra1"), Some("edge")));
}

#[test]
fn a_bad_row_stops_the_replay_with_its_line_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let bad = record("rtr-a", 1, 0.5).replace("\"schema\":1", "\"schema\":7");
    write_records(&dir.path().join("fleet.jsonl"), Some(&bad));
    let args = ["replay", "-p", &arima(), "-i", "fleet.jsonl", "--scores", "scores.csv"];
    let out = routewatch(&args, dir.path());
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("fleet.jsonl:403: unsupported schema version 7"), "{err}");
    assert!(err.contains("--skip-invalid"), "{err}");

    let out = routewatch(&[&args[..], &["--skip-invalid"]].concat(), dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped 1 bad rows"), "{}", stderr(&out));
    let scores = std::fs::read_to_string(dir.path().join("scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 1 + 800 * 10, "every good row still scored");
}

/// Every default detector, by component name.
const DETECTORS: [&str; 5] = [
    "routewatch_arima",
    "routewatch_seasonal",
    "routewatch_fleet_outlier",
    "routewatch_changepoint",
    "routewatch_lstm",
];

#[test]
fn batch_sizes_change_nothing_every_detector_scores_alike() {
    // Forty routers a tick (fleet-outlier's cross-sections) on a daily curve, one overheating
    // for ten ticks.
    let dir = tempfile::tempdir().unwrap();
    let mut noise = common::Noise::new(3);
    let mut lines = Vec::new();
    for step in 0..300 {
        for r in 0..40 {
            let cpu = 0.4 + 0.1 * (step as f64 * std::f64::consts::TAU / 288.0 + r as f64 * 0.3).sin();
            let hot = if r == 7 && (200..210).contains(&step) { 15.0 } else { 0.0 };
            let metrics = Metrics {
                cpu_util: cpu + 0.01 * noise.gaussian(),
                mem_util: 0.5,
                temp_c: 40.0 + f64::from(r % 5) + 0.5 * noise.gaussian() + hot,
                fan_rpm: 6000.0,
                bgp_up: 4.0,
                ..Default::default()
            };
            let record = Record {
                schema: SCHEMA_VERSION,
                router: format!("rtr-{r:02}"),
                site: "fra1".into(),
                region: "eu-central".into(),
                role: Role::Edge,
                vendor: "acme".into(),
                ts: 1_764_000_000_000 + step * 60_000,
                metrics,
            };
            lines.push(String::from_utf8(record.encode()).unwrap());
        }
    }
    std::fs::write(dir.path().join("fleet.jsonl"), lines.join("\n") + "\n").unwrap();
    let plugins: Vec<String> = DETECTORS.iter().map(|d| component(d).display().to_string()).collect();
    let run = |batch: &str| {
        let (scores, anomalies) = (format!("scores-{batch}.csv"), format!("anomalies-{batch}.jsonl"));
        let mut args = vec!["replay", "-i", "fleet.jsonl", "--scores", &scores, "--anomalies", &anomalies];
        args.extend(["--batch-rows", batch]);
        for plugin in &plugins {
            args.extend(["-p", plugin.as_str()]);
        }
        let out = routewatch(&args, dir.path());
        assert!(out.status.success(), "{}", stderr(&out));
        let mut events: Vec<String> =
            std::fs::read_to_string(dir.path().join(anomalies)).unwrap().lines().map(str::to_owned).collect();
        // Each batch lists its anomalies plugin by plugin: the order, not the set, follows the cuts.
        events.sort();
        (std::fs::read_to_string(dir.path().join(scores)).unwrap(), events)
    };
    let (scores, anomalies) = run("4096");
    let outliers =
        anomalies.iter().filter(|a| a.contains(r#""plugin":"fleet-outlier""#) && a.contains("rtr-07")).count();
    assert!(outliers >= 1, "fleet-outlier finds the hot router: {anomalies:?}");
    for batch in ["150", "61", "40"] {
        let (cut_scores, cut_anomalies) = run(batch);
        let differ = scores.lines().zip(cut_scores.lines()).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "--batch-rows {batch}: {differ} score rows differ");
        assert_eq!(cut_anomalies, anomalies, "--batch-rows {batch}");
    }
}

#[test]
fn csv_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("time,v\n1,2\n", "must name `timestamp` and `value`"),
        ("timestamp,value\n1764000000,0.5\nlater,0.6\n", "bad.csv:3: timestamp \"later\""),
        ("timestamp,value\n1764000000,high\n", "bad.csv:2: value \"high\" is not a number"),
    ];
    for (csv, expected) in cases {
        std::fs::write(dir.path().join("bad.csv"), csv).unwrap();
        let out = routewatch(&["replay", "-p", &arima(), "-i", "bad.csv", "--scores", "s.csv"], dir.path());
        assert!(!out.status.success());
        assert!(stderr(&out).contains(expected), "{csv:?}: {}", stderr(&out));
    }
}

#[test]
fn bad_plugins_and_configs_are_reported_and_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("not.wasm"), "hello").unwrap();
    std::fs::write(dir.path().join("s.csv"), "timestamp,value\n1,1\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-p".into(), "not.wasm".into()], "not a WebAssembly file"),
        (vec!["-p".into(), "missing.wasm".into()], "missing.wasm"),
        (vec!["-p".into(), arima(), "-c".into(), "arima={\"threshold\":0}".into()], "threshold must be a positive"),
        (vec!["-p".into(), arima(), "-c".into(), "lstm={}".into()], "not among the loaded plugins"),
        (vec!["-p".into(), component("routewatch_test_wrong_world").display().to_string()], "does not implement"),
    ];
    for (plugin_args, expected) in cases {
        let mut args = vec!["replay".to_owned(), "-i".into(), "s.csv".into()];
        args.extend(plugin_args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = routewatch(&args, dir.path());
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_failing_plugin_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.csv"), "timestamp,value\n1,1\n2,2\n").unwrap();
    let evil = component("routewatch_test_evil").display().to_string();
    let args = [
        "replay",
        "-p",
        &arima(),
        "-p",
        &evil,
        "-c",
        r#"evil={"mode":"panic"}"#,
        "-i",
        "s.csv",
        "--scores",
        "s-out.csv",
    ];
    let out = routewatch(&args, dir.path());
    assert!(!out.status.success(), "a failed plugin makes the exit status non-zero");
    assert!(stderr(&out).contains("evil 0.1.0: FAILED: plugin trapped (panic)"), "{}", stderr(&out));
    let scores = std::fs::read_to_string(dir.path().join("s-out.csv")).unwrap();
    assert_eq!(
        scores.lines().collect::<Vec<_>>()[1..],
        ["1970-01-01T00:00:01.000Z,series,value,1,0,", "1970-01-01T00:00:02.000Z,series,value,2,0,"]
    );
}

#[test]
fn lines_after_invalid_utf8_keep_their_own_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = record("rtr-a", 1, 0.5).into_bytes();
    bytes.extend_from_slice(b"\n\xff\xfe not text\n\xc3\x28\n");
    bytes.extend_from_slice(record("rtr-a", 2, 0.5).replace("\"schema\":1", "\"schema\":7").as_bytes());
    bytes.extend_from_slice(format!("\n{}\n", record("rtr-a", 3, 0.5)).as_bytes());
    std::fs::write(dir.path().join("fleet.jsonl"), bytes).unwrap();
    let args = ["replay", "-p", &arima(), "-i", "fleet.jsonl", "--scores", "s.csv", "--skip-invalid"];
    let out = routewatch(&args, dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for line in ["fleet.jsonl:2: ", "fleet.jsonl:3: ", "fleet.jsonl:4: unsupported schema version 7"] {
        assert!(err.contains(line), "{line:?} missing in:\n{err}");
    }
    assert!(err.contains("skipped 3 bad rows"), "{err}");
}

#[test]
fn a_plugin_that_does_not_load_or_configure_leaves_the_others_running() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.csv"), "timestamp,value\n1,1\n2,2\n").unwrap();
    let evil = component("routewatch_test_evil").display().to_string();
    let wrong = component("routewatch_test_wrong_world").display().to_string();
    let args = [
        "replay",
        "-p",
        &wrong,
        "-p",
        &evil,
        "-p",
        &arima(),
        "-c",
        r#"evil={"mode":"nope"}"#,
        "-i",
        "s.csv",
        "--scores",
        "o.csv",
    ];
    let out = routewatch(&args, dir.path());
    assert!(!out.status.success(), "failures make the exit status non-zero");
    let err = stderr(&out);
    assert!(err.contains("FAILED to load") && err.contains("does not implement"), "{err}");
    assert!(err.contains("evil 0.1.0: FAILED: configuring"), "{err}");
    let scores = std::fs::read_to_string(dir.path().join("o.csv")).unwrap();
    let rows: Vec<&str> = scores.lines().collect();
    assert_eq!(rows.len(), 3, "{scores}");
    // Columns: timestamp, router, metric, value, evil, arima. ARIMA's is filled, evil's empty.
    for row in &rows[1..] {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), 6, "{scores}");
        assert_eq!(fields[4], "", "{scores}");
        assert!(fields[5].parse::<f64>().is_ok(), "{scores}");
    }
}

#[test]
fn one_sided_bounds_round_trip_through_the_anomaly_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.csv"), "timestamp,value\n1,1\n2,2\n").unwrap();
    let evil = component("routewatch_test_evil").display().to_string();
    let args = ["replay", "-p", &evil, "-c", r#"evil={"mode":"one-sided"}"#, "-i", "s.csv", "--anomalies", "a.jsonl"];
    let out = routewatch(&args, dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("a.jsonl")).unwrap();
    let events: Vec<AnomalyEvent> =
        text.lines().map(|l| serde_json::from_str(l).expect("every event reads back")).collect();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.lower.is_none() && e.upper == Some(e.value)), "{text}");
    assert!(!text.contains("null"), "{text}");
}
