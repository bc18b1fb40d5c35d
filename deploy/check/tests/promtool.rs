//! The Prometheus configuration, rules and rule unit tests through Debian's promtool, and the
//! Alertmanager configuration through amtool; plus the bookkeeping promtool cannot do: every
//! alert has a firing and a quiet unit test and a runbook entry in the README.

use std::collections::BTreeSet;
use std::process::Command;

use routewatch_deploy_check::{
    alert_names, deploy, files, grafana_alert_groups, output, prometheus_rules, read, repo_root, to_json, tool, yaml,
};

fn promtool() -> Command {
    Command::new(tool("promtool", "ROUTEWATCH_PROMTOOL"))
}

#[test]
fn promtool_checks_the_configuration_and_its_rule_files() {
    let out = output(promtool().args(["check", "config"]).arg(deploy("prometheus/prometheus.yml")));
    // The config names the rule files by glob: a glob that matched nothing would pass silently.
    let rule_files = files("prometheus/rules", &["yml", "yaml"]);
    for file in &rule_files {
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(out.contains(&*name), "prometheus.yml does not load {name}:\n{out}");
    }
}

#[test]
fn promtool_checks_the_rules() {
    let out = output(promtool().args(["check", "rules"]).args(files("prometheus/rules", &["yml", "yaml"])));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_unit_tests_pass() {
    let out = output(promtool().args(["test", "rules"]).args(files("prometheus/tests", &["yml", "yaml"])));
    assert!(out.contains("SUCCESS") && !out.contains("FAILED"), "{out}");
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let alerts: BTreeSet<String> = alert_names().into_iter().collect();
    assert!(alerts.len() >= 8, "expected the full set of alerts, found {alerts:?}");
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for path in files("prometheus/tests", &["yml", "yaml"]) {
        let doc = to_json(&yaml(&path));
        for test in doc["tests"].as_array().into_iter().flatten() {
            for case in test["alert_rule_test"].as_array().into_iter().flatten() {
                let name = case["alertname"].as_str().expect("alertname").to_owned();
                assert!(alerts.contains(&name), "{}: tests {name}, which is not an alert", path.display());
                let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
                if expected > 0 { &mut firing } else { &mut quiet }.insert(name);
            }
        }
    }
    let no_firing: Vec<_> = alerts.difference(&firing).collect();
    let no_quiet: Vec<_> = alerts.difference(&quiet).collect();
    assert!(no_firing.is_empty(), "alerts without a test in which they fire: {no_firing:?}");
    assert!(no_quiet.is_empty(), "alerts without a test in which they stay quiet: {no_quiet:?}");
}

/// GitHub's anchor for a heading: lower case, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_links_to_its_runbook_entry_in_the_readme() {
    let readme = read(&repo_root().join("README.md"));
    let anchors: BTreeSet<String> =
        readme.lines().filter_map(|l| l.strip_prefix('#')).map(|h| anchor(h.trim_start_matches('#'))).collect();
    let mut links = Vec::new();
    for (_, rule) in prometheus_rules() {
        if let Some(alert) = rule["alert"].as_str() {
            let runbook = rule["annotations"]["runbook"].as_str().unwrap_or_else(|| panic!("{alert} has no runbook"));
            assert_eq!(runbook, format!("README.md#{}", alert.to_lowercase()), "{alert}'s runbook link");
            links.push((alert.to_owned(), runbook.to_owned()));
        }
    }
    for (_, group) in grafana_alert_groups() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let uid = rule["uid"].as_str().unwrap_or("?");
            let runbook = rule["annotations"]["runbook"].as_str().unwrap_or_else(|| panic!("{uid} has no runbook"));
            links.push((uid.to_owned(), runbook.to_owned()));
        }
    }
    for (alert, link) in links {
        let target = link.strip_prefix("README.md#").unwrap_or_else(|| panic!("{alert}: {link} is not in the README"));
        assert!(anchors.contains(target), "{alert}: README.md has no heading for #{target}");
    }
}

#[test]
fn amtool_checks_the_alertmanager_configuration() {
    let path = deploy("alertmanager/alertmanager.yml");
    let out = output(Command::new(tool("amtool", "ROUTEWATCH_AMTOOL")).args(["check-config"]).arg(&path));
    assert!(out.contains("SUCCESS"), "{out}");
    // Inhibitions name alerts by string: a renamed alert would silently stop inhibiting.
    let alerts: BTreeSet<String> = alert_names().into_iter().collect();
    let text = read(&path);
    let named: BTreeSet<&str> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| word.starts_with("Routewatch") && word.len() > "Routewatch".len())
        .collect();
    assert!(!named.is_empty());
    for name in named {
        assert!(alerts.contains(name), "alertmanager.yml names {name}, which is not an alert");
    }
}
