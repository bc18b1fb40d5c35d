//! `cargo xtask fuzz`: every cargo-fuzz target in `fuzz/`, each for a bounded time.
//!
//! It runs on stable Rust: AddressSanitizer needs `-Zsanitizer`, which stable rustc accepts
//! with `RUSTC_BOOTSTRAP=1` (set here); `--sanitizer none` needs no unstable flag at all. The
//! instrumented build has its own target directory (`$CARGO_TARGET_DIR/fuzz`), so it never
//! invalidates the normal build.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// libFuzzer's limits for every run: memory per process, and time per input (a slow input is
/// a finding too: the host would spend a CPU budget on it).
const LIBFUZZER_LIMITS: &[&str] = &["-rss_limit_mb=2048", "-malloc_limit_mb=2048", "-timeout=30"];

/// What one target's run came to.
struct Outcome {
    target: String,
    execs: u64,
    per_second: u64,
    failure: Option<String>,
}

/// Builds every target, then runs each (or those named in `only`) for `seconds`.
pub fn run(root: &Path, seconds: u64, sanitizer: &str, only: &[String]) -> Result<()> {
    ensure_cargo_fuzz()?;
    let target_dir = super::target_dir()?.join("fuzz");
    let fuzz = |args: &[&str]| {
        let mut cmd = super::cargo(&["fuzz"]);
        cmd.args(args).arg("--sanitizer").arg(sanitizer).arg("--target-dir").arg(&target_dir);
        cmd.env("RUSTC_BOOTSTRAP", "1").current_dir(root);
        cmd
    };
    super::run(&mut fuzz(&["build"]))?;
    let listed = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["fuzz", "list"])
        .current_dir(root)
        .output()
        .context("listing the fuzz targets")?;
    let targets: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty() && (only.is_empty() || only.iter().any(|o| o == t)))
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("no fuzz target matches {only:?}");
    }
    let logs = root.join("fuzz").join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut outcomes = Vec::new();
    for target in &targets {
        let log = logs.join(format!("{target}.log"));
        println!("fuzzing {target} for {seconds} s (log: {})", log.display());
        let max_time = format!("-max_total_time={seconds}");
        // cargo-fuzz's own flags (added by `fuzz`) must come before `--`; libFuzzer's after it.
        let mut cmd = fuzz(&["run", target]);
        cmd.arg("--").arg(&max_time).args(LIBFUZZER_LIMITS).arg("-print_final_stats=1");
        let file = std::fs::File::create(&log)?;
        let status = cmd.stdout(Stdio::from(file.try_clone()?)).stderr(Stdio::from(file)).status()?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let failure =
            (!status.success()).then(|| reproducer(&text).unwrap_or_else(|| format!("see {}", log.display())));
        outcomes.push(Outcome {
            target: target.clone(),
            execs: stat(&text, "stat::number_of_executed_units"),
            per_second: stat(&text, "stat::average_exec_per_sec"),
            failure,
        });
    }
    println!("\n{:<24} {:>12} {:>10}  result", "target", "executions", "exec/s");
    for o in &outcomes {
        let result = o.failure.as_deref().map_or("ok".to_owned(), |f| format!("FAILED: {f}"));
        println!("{:<24} {:>12} {:>10}  {result}", o.target, o.execs, o.per_second);
    }
    let failed: Vec<&str> = outcomes.iter().filter(|o| o.failure.is_some()).map(|o| o.target.as_str()).collect();
    if !failed.is_empty() {
        bail!(
            "fuzzing found crashes in {}; reproduce with `cargo fuzz run -s {sanitizer} TARGET FILE`, then add a \
             regression test",
            failed.join(", ")
        );
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let found = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Ok(());
    }
    super::run(&mut super::cargo(&["install", "cargo-fuzz", "--locked"]))
}

/// The crashing input libFuzzer wrote, from its "Test unit written to PATH" line.
fn reproducer(log: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains("Test unit written to "))?;
    let path = PathBuf::from(line.split("Test unit written to ").nth(1)?.trim());
    Some(path.display().to_string())
}

/// A `stat::NAME: VALUE` line of `-print_final_stats`.
fn stat(log: &str, name: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.strip_prefix(name)?.trim_start_matches(':').trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}
