//! Detector output to anomaly events: the one place an anomaly gets its router, metric and
//! plugin.

use routewatch_runtime::{Anomaly, AnomalyKind, Batch};
use routewatch_telemetry::{AnomalyEvent, AnomalyKind as EventKind};

use crate::state::RouterInfo;

/// The wire form of a detector's anomaly kind.
pub fn event_kind(kind: AnomalyKind) -> EventKind {
    match kind {
        AnomalyKind::Spike => EventKind::Spike,
        AnomalyKind::Dip => EventKind::Dip,
        AnomalyKind::LevelShift => EventKind::LevelShift,
        AnomalyKind::Drift => EventKind::Drift,
        AnomalyKind::Loss => EventKind::Loss,
        AnomalyKind::Hardware => EventKind::Hardware,
        AnomalyKind::Outlier => EventKind::Outlier,
        AnomalyKind::Changepoint => EventKind::Changepoint,
        AnomalyKind::Other => EventKind::Other,
    }
}

/// The event for anomaly `a`, which a plugin reported at row `row` of `batch` (the row's
/// index in the whole batch). Sites and roles the input did not give are left out.
pub fn event(
    a: &Anomaly,
    row: usize,
    batch: &Batch,
    router: &RouterInfo,
    plugin: &str,
    version: &str,
    detected_at: Option<i64>,
) -> AnomalyEvent {
    let known = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    AnomalyEvent {
        router: router.name.clone(),
        site: known(&router.site),
        role: known(&router.role),
        metric: batch.columns[a.column as usize].metric.clone(),
        plugin: plugin.to_owned(),
        plugin_version: version.to_owned(),
        ts: batch.timestamps[row],
        detected_at,
        value: a.observed,
        expected: a.expected,
        lower: AnomalyEvent::bound(a.lower),
        upper: AnomalyEvent::bound(a.upper),
        score: a.score,
        kind: event_kind(a.kind),
        reason: a.reason.clone(),
    }
}
