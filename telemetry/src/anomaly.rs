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
    /// The observed value; always finite.
    pub value: f64,
    /// What the detector expected; always finite.
    pub expected: f64,
    /// The lower end of the range the detector found normal; absent when it has none (a
    /// one-sided test), never NaN or infinite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    /// The upper end of that range; absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    /// 0..=1; the detector's decision threshold maps to 0.5 for the shipped detectors.
    pub score: f64,
    pub kind: AnomalyKind,
    pub reason: String,
}

impl AnomalyEvent {
    /// A detector's bound as an event carries it: an infinite bound means "no bound on that
    /// side" and becomes `None`, so that every event is plain JSON and reads back as written.
    ///
    /// ```
    /// use routewatch_telemetry::AnomalyEvent;
    /// assert_eq!(AnomalyEvent::bound(f64::NEG_INFINITY), None);
    /// assert_eq!(AnomalyEvent::bound(2.5), Some(2.5));
    /// ```
    pub fn bound(value: f64) -> Option<f64> {
        value.is_finite().then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(lower: f64, upper: f64) -> AnomalyEvent {
        AnomalyEvent {
            router: "rtr-000001".into(),
            site: None,
            role: None,
            metric: "bgp_up".into(),
            plugin: "p".into(),
            plugin_version: "1".into(),
            ts: 1,
            detected_at: None,
            value: 14.0,
            expected: 8.0,
            lower: AnomalyEvent::bound(lower),
            upper: AnomalyEvent::bound(upper),
            score: 0.9,
            kind: AnomalyKind::Spike,
            reason: "8 → 14 sessions".into(),
        }
    }

    #[test]
    fn every_event_reads_back_as_written_one_sided_bounds_included() {
        for (lower, upper) in [(1.0, 2.0), (f64::NEG_INFINITY, 9.5), (3.0, f64::INFINITY), (f64::MIN, f64::MAX)] {
            let event = event(lower, upper);
            let json = serde_json::to_string(&event).unwrap();
            assert!(!json.contains("null"), "{json}");
            let back: AnomalyEvent = serde_json::from_str(&json).unwrap();
            assert_eq!(back, event, "{json}");
        }
        let open = event(f64::NEG_INFINITY, f64::INFINITY);
        assert_eq!((open.lower, open.upper), (None, None));
    }

    #[test]
    fn a_null_bound_from_an_older_writer_reads_as_no_bound() {
        let json = serde_json::to_string(&event(1.0, 2.0)).unwrap().replace("\"lower\":1.0", "\"lower\":null");
        let back: AnomalyEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back.lower, None);
    }
}
