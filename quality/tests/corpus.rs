//! Corpus mode end to end: `generate-corpus` writes a labelled corpus from the realistic
//! profile, and `corpus` replays it through the real Wasm components and scores them.
//!
//! The components are found in `<target>/wasm32-wasip2/plugin` next to the binary (build them
//! first with `cargo xtask build`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_routewatch-quality");

fn quality(args: &[&str], dir: &Path) {
    let out = Command::new(BIN).args(args).current_dir(dir).output().expect("routewatch-quality runs");
    assert!(
        out.status.success(),
        "routewatch-quality {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn generate(dir: &Path, into: &str) {
    let args =
        ["generate-corpus", into, "--routers", "3", "--days", "1", "--fault-rate", "6", "--metrics", "cpu_util,rx_bps"];
    quality(&args, dir);
}

#[test]
fn corpus_mode_scores_every_detector_on_a_generated_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path(), "corpus");
    let corpus = tmp.path().join("corpus");
    let labels: BTreeMap<String, Vec<[String; 2]>> =
        serde_json::from_slice(&std::fs::read(corpus.join("labels.json")).unwrap()).unwrap();
    assert_eq!(labels.len(), 6, "3 routers x 2 metrics: {:?}", labels.keys());
    let windows: usize = labels.values().map(Vec::len).sum();
    assert!(windows >= 4, "the corpus has anomaly windows: {labels:?}");
    for name in labels.keys() {
        let csv = std::fs::read_to_string(corpus.join(name)).unwrap();
        assert!(csv.starts_with("timestamp,value\n"));
        let rows = csv.lines().count() - 1;
        // One day at 60 s, less the realistic profile's lost samples.
        assert!((1380..1440).contains(&rows), "{name}: {rows} rows");
    }

    // The same seed writes the same corpus.
    generate(tmp.path(), "again");
    for name in labels.keys().chain(std::iter::once(&"labels.json".to_owned())) {
        assert_eq!(
            std::fs::read(corpus.join(name)).unwrap(),
            std::fs::read(tmp.path().join("again").join(name)).unwrap()
        );
    }

    let results = tmp.path().join("results.json");
    let write = tmp.path().join("BENCHMARKS.md");
    quality(
        &[
            "corpus",
            "corpus",
            "--labels",
            "corpus/labels.json",
            "--metric-from-name",
            "--out-dir",
            "run",
            "--json",
            results.to_str().unwrap(),
            "--write",
            write.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let figures: Vec<Value> = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    let names: Vec<&str> = figures.iter().map(|f| f["detector"].as_str().unwrap()).collect();
    assert_eq!(names, ["arima", "lstm", "seasonal", "fleet-outlier", "changepoint"]);

    // Detections as scored are the anomalies the components wrote, plugin by plugin.
    let mut written: BTreeMap<String, u64> = BTreeMap::new();
    for name in labels.keys() {
        let text = std::fs::read_to_string(tmp.path().join("run").join(format!("{name}.anomalies.jsonl"))).unwrap();
        for line in text.lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            *written.entry(event["plugin"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    let scored_windows = figures[0]["events"]["windows"].as_u64().unwrap();
    assert!(scored_windows >= 1 && scored_windows as usize <= windows);
    for f in &figures {
        let name = f["detector"].as_str().unwrap();
        assert!(f["failure"].is_null(), "{name} failed: {}", f["failure"]);
        assert_eq!(f["detections"].as_u64().unwrap(), written.get(name).copied().unwrap_or(0), "{name}");
        let events = &f["events"];
        assert_eq!(events["windows"].as_u64().unwrap(), scored_windows, "{name}: every detector sees every window");
        let (detected, alarms, true_alarms) = (
            events["detected"].as_u64().unwrap(),
            events["alarms"].as_u64().unwrap(),
            events["true_alarms"].as_u64().unwrap(),
        );
        assert!(detected <= scored_windows && true_alarms <= alarms, "{name}: {events}");
        assert_eq!(events["delays"].as_array().unwrap().len() as u64, detected);
        // The NAB score: perfect is 100, never firing is 0, and with no detection at all it is 0.
        let nab = f["nab_standard"].as_f64().unwrap();
        assert!(nab <= 100.0, "{name}: {nab}");
        if f["detections"] == 0 {
            assert_eq!(nab, 0.0);
        }
    }
    assert!(
        figures.iter().any(|f| f["events"]["detected"].as_u64().unwrap() > 0),
        "some detector finds some labelled fault: {figures:?}"
    );
    let md = std::fs::read_to_string(&write).unwrap();
    assert!(md.contains("## Corpus mode") && md.contains("| arima |"), "{md}");
}

#[test]
fn corpus_mode_refuses_files_without_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.csv"), "timestamp,value\n2025-01-06T00:00:00Z,1\n").unwrap();
    std::fs::write(dir.join("b.csv"), "timestamp,value\n2025-01-06T00:00:00Z,1\n").unwrap();
    std::fs::write(tmp.path().join("labels.json"), r#"{"a.csv": []}"#).unwrap();
    let out = Command::new(BIN)
        .args(["corpus", "c", "--labels", "labels.json", "--skip", "lstm"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no labels for [\"b.csv\"]"), "{stderr}");
}

/// Writes `c/a.csv` (600 samples at 5 minutes of seeded noise, with a spike at row 400) and its
/// labels; `edit` may change the rows first.
fn one_series(dir: &Path, edit: impl FnOnce(&mut Vec<(i64, f64)>)) {
    let mut state = 7u64;
    let mut rows: Vec<(i64, f64)> = (0..600)
        .map(|i| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let spike = if i == 400 { 40.0 } else { 0.0 };
            (1_736_121_600 + i * 300, 50.0 + noise + spike)
        })
        .collect();
    edit(&mut rows);
    let mut csv = String::from("timestamp,value\n");
    for (ts, v) in &rows {
        csv.push_str(&format!("{ts},{v:.4}\n"));
    }
    std::fs::create_dir_all(dir.join("c")).unwrap();
    std::fs::write(dir.join("c/a.csv"), csv).unwrap();
    let window = [1_736_121_600 + 398 * 300, 1_736_121_600 + 404 * 300];
    std::fs::write(dir.join("labels.json"), format!(r#"{{"a.csv": [{window:?}]}}"#)).unwrap();
}

const ARIMA_ONLY: [&str; 8] =
    ["--skip", "lstm", "--skip", "seasonal", "--skip", "fleet-outlier", "--skip", "changepoint"];

#[test]
fn corpus_mode_keeps_rows_that_repeat_a_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    // Real exports repeat a timestamp now and then (NAB's realTraffic files do).
    one_series(tmp.path(), |rows| {
        rows.insert(201, rows[200]);
        rows.insert(402, (rows[401].0, rows[401].1 + 0.1));
    });
    let results = tmp.path().join("results.json");
    let write = tmp.path().join("BENCHMARKS.md");
    let mut args = vec!["corpus", "c", "--labels", "labels.json", "--out-dir", "run"];
    args.extend(["--json", results.to_str().unwrap(), "--write", write.to_str().unwrap()]);
    args.extend(ARIMA_ONLY);
    quality(&args, tmp.path());
    let md = std::fs::read_to_string(&write).unwrap();
    assert!(md.contains("602 rows (2 repeating the timestamp of the row before, kept)"), "{md}");
    let figures: Vec<Value> = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    let events = &figures[0]["events"];
    assert_eq!(events["windows"], 1, "{events}");
    assert_eq!(events["detected"], 1, "the spike after the repeated rows is still found: {events}");
}

#[test]
fn corpus_mode_refuses_a_series_out_of_time_order() {
    let tmp = tempfile::tempdir().unwrap();
    one_series(tmp.path(), |rows| rows.swap(100, 101));
    let mut args = vec!["corpus", "c", "--labels", "labels.json", "--out-dir", "run"];
    args.extend(ARIMA_ONLY);
    let out = Command::new(BIN).args(&args).current_dir(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "timestamps must not decrease (row 102 has 2025-01-06T08:20:00.000Z after 2025-01-06T08:25:00.000Z)"
        ),
        "{stderr}"
    );
}
