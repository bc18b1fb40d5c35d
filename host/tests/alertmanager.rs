//! Incident alerts against Debian's real Alertmanager (`ROUTEWATCH_ALERTMANAGER`, set by
//! `cargo xtask test`), started with the shipped `deploy/alertmanager/alertmanager.yml`: the
//! host's sender posts router incidents and a site incident; `GET /api/v2/alerts` shows them
//! with the right labels and annotations, the site's router alerts inhibited by its site
//! incident, grouped by site and cause, and then resolved by `endsAt`. A predicted incident is
//! an alert of its own (`RouterPrediction`), on its own route, resolved when withdrawn.

mod common;

use std::time::{Duration, Instant};

use common::alertmanager::{alerts, get, start};

use routewatch_host::alertmanager::{AlertCounters, Alertmanager, AlertmanagerConfig};
use routewatch_incidents::{
    Cause, Change, ForecastConfig, ForecastStage, Incident, IncidentUpdate, RouterConfig, RouterStage, Sample,
    SiteConfig, SiteStage,
};
use routewatch_telemetry::{AnomalyEvent, AnomalyKind};
use serde_json::Value;

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An hour ago, on a minute: Alertmanager takes alerts of any age, but not from the future.
fn t0() -> i64 {
    let now = routewatch_engine::now_ms();
    (now - 3_600_000) / 60_000 * 60_000
}

fn event(router: &str, site: &str, minute: i64) -> AnomalyEvent {
    AnomalyEvent {
        router: router.into(),
        site: Some(site.into()),
        role: None,
        metric: "bgp_up".into(),
        plugin: "arima".into(),
        plugin_version: "1".into(),
        ts: t0() + minute * 60_000,
        detected_at: None,
        value: 0.0,
        expected: 4.0,
        lower: None,
        upper: None,
        score: 0.99,
        kind: AnomalyKind::LevelShift,
        reason: String::new(),
    }
}

fn alert_of<'a>(alerts: &'a [Value], incident: &Incident) -> Option<&'a Value> {
    alerts.iter().find(|a| a["labels"]["incident"] == incident.id.as_str())
}

#[test]
fn incidents_reach_alertmanager_grouped_inhibited_by_their_site_and_then_resolved() {
    let daemon = start();
    let sender = Alertmanager::start(
        AlertmanagerConfig {
            urls: vec![daemon.base.clone()],
            runbook_url: "https://runbooks.example/{cause}".into(),
            api: Some("http://127.0.0.1:9400".into()),
        },
        AlertCounters::default(),
    );
    // Three routers of fra1 lose their BGP sessions within three minutes; one of ams2 too.
    let mut stage = RouterStage::new(RouterConfig::default()).unwrap();
    let events = [event("r1", "fra1", 0), event("r2", "fra1", 1), event("r3", "fra1", 2), event("r4", "ams2", 2)];
    let mut updates = stage.take(&events, t0() + 3 * 60_000);
    let ids: Vec<String> = stage.open().map(|i| i.id.clone()).collect();
    for id in &ids {
        let cause = vec![Cause { cause: "link-flap".into(), probability: 0.8 }];
        updates.extend(stage.set_causes(id, "link-flap", cause));
    }
    let mut sites = SiteStage::new(SiteConfig::default()).unwrap();
    let site_updates: Vec<_> = updates.iter().flat_map(|u| sites.observe(u)).collect();
    assert_eq!(site_updates.len(), 1, "fra1 has a site incident: {site_updates:?}");
    let latest: Vec<Incident> = stage.open().cloned().collect();
    sender.post(&latest.iter().collect::<Vec<_>>());
    sender.post_sites(&[&site_updates[0].incident]);

    let by_router = |r: &str| latest.iter().find(|i| i.router == r).unwrap().clone();
    let (r1, r4) = (by_router("r1"), by_router("r4"));
    let mut seen = Vec::new();
    wait_for("five alerts, the inhibition applied", || {
        seen = alerts(&daemon);
        seen.len() == 5 && alert_of(&seen, &r1).is_some_and(|a| a["status"]["state"] == "suppressed")
    });
    let a1 = alert_of(&seen, &r1).unwrap();
    for (label, value) in [
        ("alertname", "RouterIncident"),
        ("router", "r1"),
        ("site", "fra1"),
        ("cause", "link-flap"),
        ("severity", "critical"),
    ] {
        assert_eq!(a1["labels"][label], value, "{label} of {a1}");
    }
    assert_eq!(a1["annotations"]["runbook_url"], "https://runbooks.example/link-flap");
    assert!(a1["annotations"]["summary"].as_str().unwrap().contains("r1"), "{a1}");
    assert!(a1["annotations"]["description"].as_str().unwrap().contains("link-flap (80%)"), "{a1}");
    assert_eq!(a1["generatorURL"], format!("http://127.0.0.1:9400/api/v1/incidents/{}", r1.id));
    for router in ["r1", "r2", "r3"] {
        let alert = alert_of(&seen, &by_router(router)).unwrap();
        assert_eq!(alert["status"]["state"], "suppressed", "{router} is under its site incident: {alert}");
        assert!(!alert["status"]["inhibitedBy"].as_array().unwrap().is_empty());
    }
    let a4 = alert_of(&seen, &r4).unwrap();
    assert_eq!(a4["status"]["state"], "active", "ams2 has no site incident: {a4}");
    let site = seen.iter().find(|a| a["labels"]["alertname"] == "SiteIncident").unwrap();
    assert_eq!((&site["labels"]["site"], &site["status"]["state"]), (&Value::from("fra1"), &Value::from("active")));

    // Grouped by site and cause: fra1's three router alerts are one group.
    let groups = get(&daemon, "/api/v2/alerts/groups").unwrap();
    let fra1 = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["labels"]["alertname"] == "RouterIncident" && g["labels"]["site"] == "fra1")
        .unwrap_or_else(|| panic!("no fra1 group: {groups}"));
    assert_eq!(fra1["labels"]["cause"], "link-flap");
    assert_eq!(fra1["alerts"].as_array().unwrap().len(), 3, "{fra1}");

    // Quiet for the quiet period: every incident resolves, and the site incident with them.
    let resolved: Vec<IncidentUpdate> = stage.take(&[], t0() + 30 * 60_000);
    assert_eq!(resolved.len(), 4);
    let site_resolved: Vec<_> = resolved.iter().flat_map(|u| sites.observe(u)).collect();
    sender.post(&resolved.iter().map(|u| &u.incident).collect::<Vec<_>>());
    sender.post_sites(&site_resolved.iter().map(|u| &u.incident).collect::<Vec<_>>());
    wait_for("every alert resolved", || alerts(&daemon).is_empty());
}

/// A router's memory, a minute a sample up to now: flat, then leaking 0.08 an hour from
/// sample 1440, fixed (back to its baseline) at sample 1700.
fn leaking_then_fixed() -> Vec<(i64, f64)> {
    let start = routewatch_engine::now_ms() - 2000 * 60_000;
    (0..2000)
        .map(|i| {
            let wobble = 0.002 * ((i * 7919 % 13) as f64 / 13.0 - 0.5);
            let leaked = if (1440..1700).contains(&i) { 0.08 * (i - 1440) as f64 / 60.0 } else { 0.0 };
            (start + i * 60_000, 0.5 + wobble + leaked)
        })
        .collect()
}

#[test]
fn a_predicted_incident_is_an_alert_of_its_own_until_it_is_withdrawn() {
    let daemon = start();
    let sender = Alertmanager::start(
        AlertmanagerConfig {
            urls: vec![daemon.base.clone()],
            runbook_url: "https://runbooks.example/{cause}".into(),
            api: None,
        },
        AlertCounters::default(),
    );
    let mut stage = ForecastStage::new(ForecastConfig::default()).unwrap();
    let target = stage.target("mem_util").unwrap();
    let mut updates = Vec::new();
    for (ts, value) in leaking_then_fixed() {
        let sample = Sample { router: "r9", site: Some("lon1"), role: None, metric: "mem_util", ts, value };
        updates.extend(stage.observe(target, sample));
    }
    let opened = updates.iter().find(|u| u.change == Change::Opened).expect("the leak is predicted").incident.clone();
    let withdrawn = updates.iter().find(|u| u.change == Change::Withdrawn).expect("and withdrawn").incident.clone();
    assert_eq!(opened.id, withdrawn.id);

    sender.post(&[&opened]);
    let mut seen = Vec::new();
    wait_for("the prediction's alert", || {
        seen = alerts(&daemon);
        seen.len() == 1
    });
    let alert = &seen[0];
    for (label, value) in [
        ("alertname", "RouterPrediction"),
        ("router", "r9"),
        ("site", "lon1"),
        ("cause", "predicted"),
        ("metric", "mem_util"),
        ("severity", "warning"),
    ] {
        assert_eq!(alert["labels"][label], value, "{label} of {alert}");
    }
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(summary.contains("mem_util reaches 0.98 in about "), "{summary}");
    assert_eq!(alert["status"]["state"], "active");
    // Its own route: grouped by site and metric.
    let groups = get(&daemon, "/api/v2/alerts/groups").unwrap();
    let group = groups.as_array().unwrap().iter().find(|g| g["labels"]["alertname"] == "RouterPrediction").unwrap();
    assert_eq!(
        (&group["labels"]["site"], &group["labels"]["metric"]),
        (&Value::from("lon1"), &Value::from("mem_util"))
    );
    assert_eq!(group["receiver"]["name"], "team");

    sender.post(&[&withdrawn]);
    wait_for("the withdrawn prediction resolved", || alerts(&daemon).is_empty());
}
