//! Ground truth: benign changes that operators make on purpose. They move metrics as much as
//! some faults do, but nobody should be paged for them, so quality scoring counts alarms on
//! them apart from both true and false alarms.

use serde::{Deserialize, Serialize};

/// The planned changes the simulator's realistic profile makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// Traffic engineering moves load onto or off the router for hours.
    TrafficMigration,
    /// A maintenance window: the router is drained, its sessions shut, and it reboots at the end.
    Maintenance,
    /// A configuration push: the control plane is busy and some BGP sessions are reset.
    ConfigPush,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 3] = [ChangeKind::TrafficMigration, ChangeKind::Maintenance, ChangeKind::ConfigPush];

    pub const fn name(self) -> &'static str {
        match self {
            ChangeKind::TrafficMigration => "traffic-migration",
            ChangeKind::Maintenance => "maintenance",
            ChangeKind::ConfigPush => "config-push",
        }
    }
}

/// One planned change, published when it is scheduled (which can be before `start`) and
/// again when it ends. Beside [`crate::FaultEvent`] in the ground truth; `type` tells the two
/// apart on a shared topic (a fault event has no `type` field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "planned-change")]
pub struct PlannedChange {
    /// Unique id, stable for the change's life (`chg-000001`).
    pub id: String,
    pub kind: ChangeKind,
    pub router: String,
    /// Event time the change begins, ms since the Unix epoch.
    pub start: i64,
    /// Event time it ends (a maintenance window ends with the reboot), ms since the Unix epoch.
    pub end: i64,
    /// Kind-specific strength: the traffic multiplier of a migration, the drained share of
    /// traffic in maintenance, the share of sessions a config push resets.
    pub magnitude: f64,
    /// Wire names of the metrics the change moves.
    pub metrics: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_its_type_tag_and_round_trips() {
        let change = PlannedChange {
            id: "chg-000001".into(),
            kind: ChangeKind::ConfigPush,
            router: "rtr-000001".into(),
            start: 1,
            end: 2,
            magnitude: 0.2,
            metrics: vec!["cpu_util".into()],
        };
        let json = serde_json::to_string(&change).unwrap();
        assert!(json.starts_with(r#"{"type":"planned-change","id":"chg-000001","kind":"config-push""#), "{json}");
        assert_eq!(serde_json::from_str::<PlannedChange>(&json).unwrap(), change);
        // A fault event is not a planned change.
        let fault =
            r#"{"id":"flt-000001","kind":"cpu-runaway","router":"r","start":1,"end":2,"magnitude":0.5,"metrics":[]}"#;
        assert!(serde_json::from_str::<PlannedChange>(fault).is_err());
    }
}
