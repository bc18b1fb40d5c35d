//! The anomaly event: a detector's decision, enriched by the host.

use serde::{Deserialize, Serialize};

/// What kind of departure a detector saw. Mirrors `anomaly-kind` in the WIT package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnomalyKind {
    /// A sudden rise that does not persist.
    Spike,
    /// A sudden fall that does not persist.
    Dip,
    /// The series moved to a new level and stayed there.
    LevelShift,
    /// A slow, sustained departure (a leak).
    Drift,
    /// Packet loss or a link going away.
    Loss,
    /// A hardware symptom (temperature, fans, power).
    Hardware,
    /// Departs from its peers rather than from its own past.
    Outlier,
    /// A change in the series' regime found by a changepoint method.
    Changepoint,
    Other,
}

impl AnomalyKind {
    pub const fn name(self) -> &'static str {
        match self {
            AnomalyKind::Spike => "spike",
            AnomalyKind::Dip => "dip",
            AnomalyKind::LevelShift => "level-shift",
            AnomalyKind::Drift => "drift",
            AnomalyKind::Loss => "loss",
            AnomalyKind::Hardware => "hardware",
            AnomalyKind::Outlier => "outlier",
            AnomalyKind::Changepoint => "changepoint",
            AnomalyKind::Other => "other",
        }
    }
}

/// One anomaly, as written to `router-anomalies` and to `routewatch replay --anomalies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyEvent {
    pub router: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub metric: String,
    pub plugin: String,
    pub plugin_version: String,
    /// Event time of the anomalous sample, ms since the Unix epoch.
    pub ts: i64,
    /// When the host decided, ms since the Unix epoch; absent in replays, which are timeless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<i64>,
    pub value: f64,
    pub expected: f64,
    pub lower: f64,
    pub upper: f64,
    /// 0..=1; the detector's decision threshold maps to 0.5 for the shipped detectors.
    pub score: f64,
    pub kind: AnomalyKind,
    pub reason: String,
}
