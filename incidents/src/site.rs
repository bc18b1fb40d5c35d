//! The site stage: router incidents of one site (or role) that start together become one
//! site incident, whose likely cause is upstream of the routers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::router::{Incident, IncidentUpdate, Severity, State};
use crate::snapshot::{self, SnapshotError};
use crate::{MAX_ID_BYTES, router::ConfigError};

/// What router incidents are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupBy {
    Site,
    Role,
}

/// When router incidents make a site incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteConfig {
    pub group_by: GroupBy,
    /// Routers with open incidents, their onsets within `onset_window_samples` of each other,
    /// that make a site incident.
    pub min_routers: usize,
    /// How close the onsets must be, in samples of `interval_ms`: "at once".
    pub onset_window_samples: u32,
    pub interval_ms: i64,
    /// A resolved site incident comes back, the same incident, when one of its own router
    /// incidents reopens within this many samples of its resolution (the router stage reopens
    /// an incident within its reopen or recall period): a fault that goes quiet and then ends
    /// is one site incident, not two.
    pub reopen_samples: u32,
    /// Groups (sites) the stage tracks at once; router incidents of further groups are not
    /// grouped (counted in [`SiteStage::refused`]).
    pub max_groups: usize,
    /// Open router incidents tracked per group, and routers a site incident lists.
    pub max_members: usize,
}

impl Default for SiteConfig {
    fn default() -> SiteConfig {
        SiteConfig {
            group_by: GroupBy::Site,
            min_routers: 3,
            onset_window_samples: 10,
            interval_ms: 60_000,
            // The router stage's default recall period.
            reopen_samples: 480,
            max_groups: 100_000,
            max_members: 10_000,
        }
    }
}

impl SiteConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_routers < 2 || self.min_routers > self.max_members {
            return Err(ConfigError("min_routers must be 2 to max_members".into()));
        }
        if self.interval_ms <= 0 || self.onset_window_samples == 0 {
            return Err(ConfigError("interval_ms and onset_window_samples must be positive".into()));
        }
        if self.max_groups == 0 || self.max_members > 1_000_000 || self.max_groups > 10_000_000 {
            return Err(ConfigError("max_groups must be 1 to 10,000,000 and max_members at most 1,000,000".into()));
        }
        Ok(())
    }

    fn window_ms(&self) -> i64 {
        i64::from(self.onset_window_samples).saturating_mul(self.interval_ms)
    }

    fn reopen_ms(&self) -> i64 {
        i64::from(self.reopen_samples).saturating_mul(self.interval_ms)
    }
}

/// Several routers of one site (or role) in trouble at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteIncident {
    /// `site-{key}-{opened}` (or `role-...`).
    pub id: String,
    pub group_by: GroupBy,
    /// The site (or role).
    pub key: String,
    pub state: State,
    /// The highest of its routers' severities, at least warning.
    pub severity: Severity,
    /// Earliest onset among the router incidents that opened it.
    pub opened: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<i64>,
    /// The router incidents it groups (ids), in the order they joined.
    pub incidents: Vec<String>,
    pub routers: Vec<String>,
    /// How many of them are still open.
    pub open: usize,
}

/// What happened to a site incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SiteChange {
    Opened,
    /// A router joined or left, or the severity rose.
    Updated,
    /// Every router incident in it resolved.
    Resolved,
    /// Resolved, and back within `reopen_samples` because one of its router incidents
    /// reopened: the same id, open again.
    Reopened,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteUpdate {
    pub change: SiteChange,
    pub incident: SiteIncident,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    router: String,
    opened: i64,
    severity: Severity,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Group {
    /// Open router incidents, by id.
    members: BTreeMap<String, Member>,
    incident: Option<SiteIncident>,
    /// The group's last resolved site incident, while it may still reopen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolved: Option<SiteIncident>,
}

/// The site stage of one partition of the site-keyed topic (see the crate docs).
#[derive(Debug, Clone, PartialEq)]
pub struct SiteStage {
    config: SiteConfig,
    groups: BTreeMap<String, Group>,
    refused: u64,
}

#[derive(Serialize, Deserialize)]
struct State1 {
    groups: Vec<(String, Group)>,
    refused: u64,
}

impl SiteStage {
    pub fn new(config: SiteConfig) -> Result<SiteStage, ConfigError> {
        config.validate()?;
        Ok(SiteStage { config, groups: BTreeMap::new(), refused: 0 })
    }

    /// The key a router incident is grouped (and its topic partitioned) by: its site or its
    /// role; `None` when the incident does not carry it.
    pub fn key(group_by: GroupBy, incident: &Incident) -> Option<&str> {
        match group_by {
            GroupBy::Site => incident.site.as_deref(),
            GroupBy::Role => incident.role.as_deref(),
        }
    }

    /// The open site incidents.
    pub fn open(&self) -> impl Iterator<Item = &SiteIncident> {
        self.groups.values().filter_map(|g| g.incident.as_ref())
    }

    /// Router incidents not grouped because the stage tracked `max_groups` groups.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Takes one router incident update, from any partition or host, in any order.
    pub fn observe(&mut self, update: &IncidentUpdate) -> Vec<SiteUpdate> {
        let inc = &update.incident;
        if inc.prediction.is_some() {
            // A warning of what may come is not a router in trouble.
            return Vec::new();
        }
        let Some(key) = SiteStage::key(self.config.group_by, inc).filter(|k| k.len() <= MAX_ID_BYTES) else {
            return Vec::new();
        };
        if !self.groups.contains_key(key) {
            if inc.state != State::Open {
                return Vec::new();
            }
            if self.groups.len() >= self.config.max_groups && !self.forget_a_resolved_group() {
                self.refused += 1;
                return Vec::new();
            }
        }
        let config = &self.config;
        let group = self.groups.entry(key.to_owned()).or_default();
        let mut updates = Vec::new();
        match inc.state {
            State::Open => {
                if group.members.len() >= config.max_members && !group.members.contains_key(&inc.id) {
                    // A lost resolution must not fill the group: the oldest onset goes.
                    if let Some(oldest) = group.members.iter().min_by_key(|(_, m)| m.opened).map(|(k, _)| k.clone()) {
                        group.members.remove(&oldest);
                    }
                }
                let member = Member { router: inc.router.clone(), opened: inc.opened, severity: inc.severity };
                let joined = group.members.insert(inc.id.clone(), member).is_none();
                match &mut group.incident {
                    Some(site) => {
                        let mut changed = false;
                        if joined && !site.incidents.contains(&inc.id) && site.incidents.len() < config.max_members {
                            site.incidents.push(inc.id.clone());
                            if !site.routers.contains(&inc.router) {
                                site.routers.push(inc.router.clone());
                            }
                            changed = true;
                        }
                        if site.incidents.contains(&inc.id) {
                            let severity = site.severity.max(inc.severity);
                            let open = count_open(site, &group.members);
                            // A router incident of its own that reopened is back in it.
                            changed |= severity != site.severity || open != site.open;
                            site.severity = severity;
                            site.open = open;
                        }
                        if changed {
                            updates.push(SiteUpdate { change: SiteChange::Updated, incident: site.clone() });
                        }
                    }
                    None => {
                        let now = inc.last_anomaly.max(inc.opened);
                        let until = |site: &SiteIncident| {
                            site.resolved.unwrap_or(site.opened).saturating_add(config.reopen_ms())
                        };
                        if group.resolved.as_ref().is_some_and(|site| now > until(site)) {
                            group.resolved = None;
                        }
                        let back = group.resolved.as_ref().is_some_and(|site| site.incidents.contains(&inc.id));
                        if let Some(mut site) = back.then(|| group.resolved.take()).flatten() {
                            site.state = State::Open;
                            site.resolved = None;
                            site.severity = site.severity.max(inc.severity);
                            site.open = count_open(&site, &group.members);
                            updates.push(SiteUpdate { change: SiteChange::Reopened, incident: site.clone() });
                            group.incident = Some(site);
                        } else if let Some(site) = together(config, key, &group.members) {
                            updates.push(SiteUpdate { change: SiteChange::Opened, incident: site.clone() });
                            group.incident = Some(site);
                            group.resolved = None;
                        }
                    }
                }
            }
            State::Resolved => {
                group.members.remove(&inc.id);
                if let Some(site) = &mut group.incident
                    && site.incidents.contains(&inc.id)
                {
                    site.open = count_open(site, &group.members);
                    if site.open == 0 {
                        site.state = State::Resolved;
                        site.resolved = Some(inc.resolved.unwrap_or(inc.last_anomaly));
                        updates.push(SiteUpdate { change: SiteChange::Resolved, incident: site.clone() });
                        group.resolved = group.incident.take();
                    } else {
                        updates.push(SiteUpdate { change: SiteChange::Updated, incident: site.clone() });
                    }
                }
            }
        }
        if group.members.is_empty() && group.incident.is_none() && group.resolved.is_none() {
            self.groups.remove(key);
        }
        updates
    }

    /// Makes room for a new group: forgets the group whose site incident resolved longest
    /// ago, if one holds nothing else (it would no longer reopen). Whether one was forgotten.
    fn forget_a_resolved_group(&mut self) -> bool {
        let idle = self
            .groups
            .iter()
            .filter(|(_, g)| g.members.is_empty() && g.incident.is_none())
            .min_by_key(|(_, g)| g.resolved.as_ref().and_then(|s| s.resolved))
            .map(|(key, _)| key.clone());
        idle.is_some_and(|key| self.groups.remove(&key).is_some())
    }

    /// The whole state, framed and versioned.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let state =
            State1 { groups: self.groups.iter().map(|(k, g)| (k.clone(), g.clone())).collect(), refused: self.refused };
        snapshot::encode(snapshot::SITE_MAGIC, &state)
    }

    /// A stage with `config` and the state of `bytes`.
    pub fn restore(config: SiteConfig, bytes: &[u8]) -> Result<SiteStage, SnapshotError> {
        let mut stage = SiteStage::new(config).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        let state: State1 = snapshot::decode(snapshot::SITE_MAGIC, bytes)?;
        if state.groups.len() > stage.config.max_groups {
            return Err(SnapshotError::Invalid(format!("{} groups, over max_groups", state.groups.len())));
        }
        let short = |s: &str| s.len() <= MAX_ID_BYTES + 32;
        for (key, group) in state.groups {
            let max = stage.config.max_members;
            let bounded = short(&key)
                && group.members.len() <= max
                && group.members.iter().all(|(id, m)| short(id) && short(&m.router))
                && [(&group.incident, State::Open), (&group.resolved, State::Resolved)].iter().all(|(site, state)| {
                    site.as_ref().is_none_or(|s| {
                        s.incidents.len() <= max
                            && s.routers.len() <= max
                            && s.incidents.iter().chain(&s.routers).all(|x| short(x))
                            && s.state == *state
                            && s.key == key
                    })
                });
            if !bounded || stage.groups.insert(key, group).is_some() {
                return Err(SnapshotError::Invalid("a group is out of bounds, resolved or twice".into()));
            }
        }
        stage.refused = state.refused;
        Ok(stage)
    }
}

fn count_open(site: &SiteIncident, members: &BTreeMap<String, Member>) -> usize {
    site.incidents.iter().filter(|id| members.contains_key(*id)).count()
}

/// A site incident if at least `min_routers` routers have open incidents whose onsets lie
/// within the onset window of each other (the earliest such run).
fn together(config: &SiteConfig, key: &str, members: &BTreeMap<String, Member>) -> Option<SiteIncident> {
    let mut onsets: Vec<(&String, &Member)> = members.iter().collect();
    onsets.sort_by_key(|(id, m)| (m.opened, *id));
    let window = config.window_ms();
    for start in 0..onsets.len() {
        let run: Vec<&(&String, &Member)> =
            onsets[start..].iter().take_while(|(_, m)| m.opened - onsets[start].1.opened <= window).collect();
        let mut routers: Vec<String> = run.iter().map(|(_, m)| m.router.clone()).collect();
        routers.sort();
        routers.dedup();
        if routers.len() >= config.min_routers {
            let opened = onsets[start].1.opened;
            let prefix = match config.group_by {
                GroupBy::Site => "site",
                GroupBy::Role => "role",
            };
            let severity =
                run.iter().map(|(_, m)| m.severity).max().unwrap_or(Severity::Warning).max(Severity::Warning);
            return Some(SiteIncident {
                id: format!("{prefix}-{key}-{opened}"),
                group_by: config.group_by,
                key: key.to_owned(),
                state: State::Open,
                severity,
                opened,
                resolved: None,
                incidents: run.iter().map(|(id, _)| (*id).clone()).collect(),
                routers: run.iter().map(|(_, m)| m.router.clone()).fold(Vec::new(), |mut v, r| {
                    if !v.contains(&r) {
                        v.push(r);
                    }
                    v
                }),
                open: run.len(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RouterConfig, RouterStage};
    use routewatch_telemetry::{AnomalyEvent, AnomalyKind};

    const M: i64 = 60_000;

    fn ev(router: &str, site: &str, metric: &str, minute: i64) -> AnomalyEvent {
        AnomalyEvent {
            router: router.into(),
            site: Some(site.into()),
            role: Some("edge".into()),
            metric: metric.into(),
            plugin: "arima".into(),
            plugin_version: "1".into(),
            ts: minute * M,
            detected_at: None,
            value: 0.2,
            expected: 0.0,
            lower: None,
            upper: Some(0.01),
            score: 0.9,
            kind: AnomalyKind::Loss,
            reason: String::new(),
        }
    }

    fn changes(updates: &[SiteUpdate]) -> Vec<SiteChange> {
        updates.iter().map(|u| u.change).collect()
    }

    /// Two hosts, each the router stage of its own partitions; their updates reach the one
    /// site stage that owns the site's partition of the site-keyed topic, interleaved.
    #[test]
    fn routers_of_one_site_on_two_hosts_make_one_site_incident() {
        let mut host_a = RouterStage::new(RouterConfig::default()).unwrap();
        let mut host_b = RouterStage::new(RouterConfig::default()).unwrap();
        let mut site = SiteStage::new(SiteConfig::default()).unwrap();
        let mut out = Vec::new();
        out.extend(host_a.observe(&ev("r1", "fra1", "loss_ratio", 100)).iter().flat_map(|u| site.observe(u)));
        // Another site's router at the same time does not count for fra1.
        out.extend(host_b.observe(&ev("r9", "lon1", "loss_ratio", 100)).iter().flat_map(|u| site.observe(u)));
        out.extend(host_b.observe(&ev("r2", "fra1", "loss_ratio", 103)).iter().flat_map(|u| site.observe(u)));
        assert!(out.is_empty(), "two routers are not a site incident");
        out.extend(host_a.observe(&ev("r3", "fra1", "loss_ratio", 108)).iter().flat_map(|u| site.observe(u)));
        assert_eq!(changes(&out), [SiteChange::Opened]);
        let opened = &out[0].incident;
        assert_eq!((opened.key.as_str(), opened.opened, opened.open), ("fra1", 100 * M, 3));
        assert_eq!(opened.routers, ["r1", "r2", "r3"]);
        assert_eq!(opened.severity, Severity::Critical, "loss is critical on the routers");
        // A fourth router joins.
        let u: Vec<_> =
            host_b.observe(&ev("r4", "fra1", "loss_ratio", 130)).iter().flat_map(|u| site.observe(u)).collect();
        assert_eq!(changes(&u), [SiteChange::Updated]);
        assert_eq!(u[0].incident.open, 4);
        // The routers resolve one by one; the site incident resolves with the last.
        let mut resolved: Vec<SiteUpdate> = Vec::new();
        for ts in [120 * M, 150 * M] {
            for host in [&mut host_a, &mut host_b] {
                resolved.extend(host.advance(ts).iter().flat_map(|u| site.observe(u)));
            }
        }
        assert_eq!(resolved.last().unwrap().change, SiteChange::Resolved);
        assert!(resolved[..resolved.len() - 1].iter().all(|u| u.change == SiteChange::Updated));
        // The last router (r4, last anomaly at 130) resolved when its quiet period passed.
        assert_eq!(resolved.last().unwrap().incident.resolved, Some(140 * M));
        assert_eq!(site.open().count(), 0);
    }

    /// A site's routers go quiet mid-fault (their incidents resolve), then one comes back:
    /// the same site incident reopens, also after a restore, and not once its period passed.
    #[test]
    fn a_site_incident_whose_router_incident_reopens_comes_back_under_the_same_id() {
        let run = |config: SiteConfig, restore_between: bool| {
            let mut routers = RouterStage::new(RouterConfig::default()).unwrap();
            let mut site = SiteStage::new(config.clone()).unwrap();
            let mut out: Vec<SiteUpdate> = Vec::new();
            for (router, minute) in [("r1", 100), ("r2", 101), ("r3", 102)] {
                out.extend(
                    routers.observe(&ev(router, "fra1", "loss_ratio", minute)).iter().flat_map(|u| site.observe(u)),
                );
            }
            out.extend(routers.advance(150 * M).iter().flat_map(|u| site.observe(u)));
            assert_eq!(out.first().map(|u| u.change), Some(SiteChange::Opened));
            assert_eq!(out.last().map(|u| u.change), Some(SiteChange::Resolved));
            if restore_between {
                site = SiteStage::restore(config, &site.snapshot().unwrap()).unwrap();
            }
            // r2's incident resolved at 111; an anomaly at 125 is within its reopen period.
            let back: Vec<SiteUpdate> =
                routers.observe(&ev("r2", "fra1", "loss_ratio", 125)).iter().flat_map(|u| site.observe(u)).collect();
            (out[0].incident.id.clone(), back)
        };
        for restore_between in [false, true] {
            let (id, back) = run(SiteConfig::default(), restore_between);
            assert_eq!(changes(&back), [SiteChange::Reopened], "restored between: {restore_between}");
            let again = &back[0].incident;
            assert_eq!(
                (again.id.as_str(), again.state, again.resolved, again.open),
                (id.as_str(), State::Open, None, 1)
            );
            assert_eq!(again.routers, ["r1", "r2", "r3"]);
        }
        // Past the site's reopen period the router's incident still reopens, alone: no site incident.
        let (_, back) = run(SiteConfig { reopen_samples: 5, ..SiteConfig::default() }, false);
        assert!(back.is_empty(), "{back:?}");
    }

    #[test]
    fn routers_far_apart_in_time_are_not_a_site_incident_and_roles_group_too() {
        let mut routers = RouterStage::new(RouterConfig::default()).unwrap();
        let mut site = SiteStage::new(SiteConfig::default()).unwrap();
        let mut by_role = SiteStage::new(SiteConfig { group_by: GroupBy::Role, ..SiteConfig::default() }).unwrap();
        let mut out = Vec::new();
        let mut roles = Vec::new();
        for (router, s, minute) in [("r1", "fra1", 0), ("r2", "fra1", 20), ("r3", "fra1", 40), ("r4", "lon1", 41)] {
            for u in routers.observe(&ev(router, s, "cpu_util", minute)) {
                out.extend(site.observe(&u));
                roles.extend(by_role.observe(&u));
            }
        }
        assert!(out.is_empty(), "onsets 20 samples apart are not at once");
        // By role (no advance: every incident is still open) r3 and r4 start within the
        // window, r2 20 samples before them: still only two.
        assert!(roles.is_empty());
        let u = routers.observe(&ev("r5", "par1", "cpu_util", 45));
        let roles: Vec<_> = u.iter().flat_map(|u| by_role.observe(u)).collect();
        assert_eq!(changes(&roles), [SiteChange::Opened]);
        assert_eq!(roles[0].incident.id, format!("role-edge-{}", 40 * M));
        assert_eq!(roles[0].incident.routers, ["r3", "r4", "r5"]);
    }

    #[test]
    fn snapshot_round_trip_and_bad_snapshots() {
        let mut routers = RouterStage::new(RouterConfig::default()).unwrap();
        let mut site = SiteStage::new(SiteConfig::default()).unwrap();
        for (r, minute) in [("r1", 0), ("r2", 1), ("r3", 2)] {
            for u in routers.observe(&ev(r, "fra1", "loss_ratio", minute)) {
                site.observe(&u);
            }
        }
        assert_eq!(site.open().count(), 1);
        let bytes = site.snapshot().unwrap();
        let mut restored = SiteStage::restore(SiteConfig::default(), &bytes).unwrap();
        assert_eq!(restored, site);
        // After a crash the new owner resolves the site incident as the old one would have.
        let updates = routers.advance(100 * M);
        assert!(updates.iter().all(|u| u.incident.state == State::Resolved));
        let a: Vec<_> = updates.iter().flat_map(|u| site.observe(u)).collect();
        let b: Vec<_> = updates.iter().flat_map(|u| restored.observe(u)).collect();
        assert_eq!(a, b);
        assert_eq!(b.last().unwrap().change, SiteChange::Resolved);

        assert!(matches!(SiteStage::restore(SiteConfig::default(), &bytes[..3]), Err(SnapshotError::Truncated)));
        let router_snapshot = routers.snapshot().unwrap();
        assert!(matches!(
            SiteStage::restore(SiteConfig::default(), &router_snapshot),
            Err(SnapshotError::NotASnapshot)
        ));
        let mut garbage = bytes.clone();
        garbage.truncate(8);
        assert!(matches!(SiteStage::restore(SiteConfig::default(), &garbage), Err(SnapshotError::Decode(_))));
        let tiny = SiteConfig { max_groups: 1, ..SiteConfig::default() };
        let mut two = SiteStage::new(SiteConfig::default()).unwrap();
        for (r, s) in [("x1", "a"), ("x2", "b")] {
            for u in routers.observe(&ev(r, s, "cpu_util", 200)) {
                two.observe(&u);
            }
        }
        assert!(matches!(SiteStage::restore(tiny, &two.snapshot().unwrap()), Err(SnapshotError::Invalid(_))));
    }
}
