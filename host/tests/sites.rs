//! Site incidents on a real broker (Apache Kafka, `ROUTEWATCH_KAFKA_HOME`, as the other broker
//! tests), across two hosts of one group: the routers of one site are spread over the metrics
//! partitions, and so over both hosts, yet their incidents, which start together, make one site
//! incident, found by whichever host holds that site's partition of the site topic. Both hosts
//! post to Debian's real Alertmanager (`ROUTEWATCH_ALERTMANAGER`) with the shipped
//! configuration: the site incident's alert inhibits its routers' alerts, and all resolve. A
//! record on the site topic that is no incident update is skipped and counted, and changes
//! nothing. A host killed (SIGKILL) while it holds an open site incident is replaced by one that
//! continues it from the saved site stage: it resolves, and is never opened twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::alertmanager::{Daemon, alerts};
use common::fleet::{PARTITIONS, T0, config, host_process, produce, producer, router, topics};
use common::{component, kill};
use rdkafka::producer::FutureRecord;
use routewatch_host::{Host, HostConfig};
use routewatch_incidents::{SiteChange, SiteUpdate, State};
use routewatch_testkit::Broker;

const ROUTERS: usize = 24;
const STEPS: i64 = 300;
/// The routers of `site0` (every third) jump here for three samples; the others do not.
const WAVE: i64 = 200;

fn records() -> Vec<(String, Vec<u8>)> {
    common::fleet::cpu_curves(ROUTERS, STEPS, 11, |step, r| {
        if r % 3 == 0 && (WAVE..WAVE + 3).contains(&step) { 0.45 } else { 0.0 }
    })
}

fn host_config(broker: &Broker, alertmanager: &Daemon) -> HostConfig {
    let mut config = config(broker, "sites", "routewatch_arima", None);
    config.alertmanager_urls = vec![alertmanager.base.clone()];
    config.classifier = Some(component("routewatch_classifier_forest"));
    // Records a second apart; incidents resolve after 20 quiet samples.
    config.incident_config.interval_ms = 1000;
    config.incident_config.quiet_samples = 20;
    config.batch_records = 100;
    config
}

fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_routers_of_one_site_on_two_hosts_make_one_site_incident() {
    let broker = Broker::start();
    topics(&broker);
    let alertmanager = common::alertmanager::start();
    let a = Host::start(host_config(&broker, &alertmanager)).unwrap();
    let b = Host::start(host_config(&broker, &alertmanager)).unwrap();
    wait_for("the hosts split the partitions", Duration::from_secs(120), || {
        let (x, y) = (a.metrics().assigned_partitions.get(), b.metrics().assigned_partitions.get());
        x > 0 && y > 0 && x + y == i64::from(PARTITIONS)
    });

    // A record on the site topic that no host wrote: skipped, counted, harmless.
    let producer = producer(&broker);
    futures::executor::block_on(
        producer.send(FutureRecord::to("router-incidents-by-site").key("site0").payload("{not an update"), None),
    )
    .expect("delivered");
    // Up to a few samples after the wave: the incidents are open.
    let all = records();
    let (before, after) = all.split_at((WAVE + 8) as usize * ROUTERS);
    produce(&producer, before);
    let mut seen = Vec::new();
    wait_for("site0's alert, inhibiting its routers' alerts", Duration::from_secs(240), || {
        seen = alerts(&alertmanager);
        let site = seen.iter().any(|a| a["labels"]["alertname"] == "SiteIncident" && a["labels"]["site"] == "site0");
        let routers: Vec<_> = seen.iter().filter(|a| a["labels"]["alertname"] == "RouterIncident").collect();
        site && routers.len() >= 3 && routers.iter().all(|a| a["status"]["state"] == "suppressed")
    });
    for alert in seen.iter().filter(|a| a["labels"]["alertname"] == "RouterIncident") {
        assert_eq!(alert["labels"]["site"], "site0", "only site0's routers are in trouble: {alert}");
        assert!(!alert["status"]["inhibitedBy"].as_array().unwrap().is_empty(), "{alert}");
    }
    let site = seen.iter().find(|a| a["labels"]["alertname"] == "SiteIncident").unwrap();
    assert_eq!((&site["labels"]["cause"], &site["status"]["state"]), (&"upstream".into(), &"active".into()));
    produce(&producer, after);

    let mut updates = Vec::new();
    wait_for("the site incident resolves", Duration::from_secs(240), || {
        updates = site_updates(&broker);
        updates.iter().any(|u| u.change == SiteChange::Resolved)
    });

    // One site incident, of site0, made of site0's routers only.
    let ids: BTreeSet<&str> = updates.iter().map(|u| u.incident.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one site incident: {updates:#?}");
    let last = updates.last().unwrap();
    assert_eq!(last.incident.key, "site0");
    assert_eq!(last.incident.state, State::Resolved);
    assert_eq!(updates[0].change, SiteChange::Opened);
    let site0: BTreeSet<String> = (0..ROUTERS).filter(|r| r % 3 == 0).map(router).collect();
    let routers: BTreeSet<String> = last.incident.routers.iter().cloned().collect();
    assert!(routers.len() >= 3 && routers.is_subset(&site0), "site0's routers: {routers:?}");
    let opened_at = T0 + WAVE * 1000;
    assert!((opened_at..opened_at + 3000).contains(&last.incident.opened), "opened with the wave");

    // Its routers' incidents were found on both hosts: no one partition saw the whole site.
    let holders: BTreeMap<&str, usize> = [("a", &a), ("b", &b)]
        .into_iter()
        .map(|(name, host)| {
            let held = host.incidents().list(usize::MAX, |e| last.incident.incidents.contains(&e.incident.id));
            (name, held.len())
        })
        .collect();
    assert!(holders.values().all(|&n| n > 0), "router incidents of site0 on both hosts: {holders:?}");
    assert_eq!(holders.values().sum::<usize>(), last.incident.incidents.len(), "{holders:?}");

    // One host holds site0's partition of the site topic, and lists the site incident.
    let listed: Vec<usize> = [&a, &b].iter().map(|h| h.incidents().list_sites(10, |_| true).len()).collect();
    assert_eq!(listed.iter().sum::<usize>(), 1, "listed by the one host that found it: {listed:?}");
    let opened: u64 = [&a, &b].iter().map(|h| h.metrics().site_incidents_opened.get()).sum();
    let resolved: u64 = [&a, &b].iter().map(|h| h.metrics().site_incidents_resolved.get()).sum();
    assert_eq!((opened, resolved), (1, 1));
    assert_eq!(a.metrics().site_incidents_open.get() + b.metrics().site_incidents_open.get(), 0);
    let rejected = |h: &Host| {
        h.metrics()
            .site_records_rejected
            .get_or_create(&routewatch_host::metrics::ReasonLabels { reason: "malformed".into() })
            .get()
    };
    assert_eq!(rejected(&a) + rejected(&b), 1, "the bad record was skipped and counted");
    wait_for("every alert resolved", Duration::from_secs(60), || alerts(&alertmanager).is_empty());
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

/// A `routewatch run` process of the crash test: ARIMA and the forest, records a second apart.
fn crash_host(broker: &Broker) -> std::process::Child {
    let config = std::env::temp_dir().join(format!("routewatch-sites-test-{}.toml", std::process::id()));
    std::fs::write(&config, "[incident_config]\ninterval_ms = 1000\nquiet_samples = 20\n").expect("config file");
    let (arima, forest) = (component("routewatch_arima"), component("routewatch_classifier_forest"));
    host_process(
        broker,
        "crash",
        &[
            "--config",
            config.to_str().unwrap(),
            "--plugin",
            arima.to_str().unwrap(),
            "--classifier",
            forest.to_str().unwrap(),
        ],
    )
}

/// Every record of `site-incidents`, in order; checks each key.
fn site_updates(broker: &Broker) -> Vec<SiteUpdate> {
    broker
        .read_all("site-incidents", false)
        .into_iter()
        .map(|m| {
            let update: SiteUpdate = serde_json::from_slice(&m.payload).expect("site incidents are JSON");
            assert_eq!(m.key.as_deref(), Some(update.incident.id.as_bytes()), "keyed by site incident id");
            update
        })
        .collect()
}

#[test]
fn a_site_incident_open_when_its_host_is_killed_is_continued_by_the_next() {
    let broker = Broker::start();
    topics(&broker);
    let producer = producer(&broker);
    let all = records();
    let (before, after) = all.split_at((WAVE + 8) as usize * ROUTERS);
    let first = crash_host(&broker);
    produce(&producer, before);
    let mut updates = Vec::new();
    wait_for("site0's incident opens", Duration::from_secs(240), || {
        updates = site_updates(&broker);
        !updates.is_empty()
    });
    // Past a save of the site stage (every second), so that the next host restores it.
    std::thread::sleep(Duration::from_secs(3));
    kill(first);

    let second = crash_host(&broker);
    produce(&producer, after);
    wait_for("the site incident resolves", Duration::from_secs(240), || {
        updates = site_updates(&broker);
        updates.iter().any(|u| u.change == SiteChange::Resolved)
    });
    kill(second);
    let ids: BTreeSet<&str> = updates.iter().map(|u| u.incident.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one site incident: {updates:#?}");
    let opened = updates.iter().filter(|u| u.change == SiteChange::Opened).count();
    assert_eq!(opened, 1, "opened once, continued after the kill: {updates:#?}");
    let last = updates.last().unwrap();
    assert_eq!((last.change, last.incident.state), (SiteChange::Resolved, State::Resolved));
    assert_eq!(last.incident.open, 0);
}
