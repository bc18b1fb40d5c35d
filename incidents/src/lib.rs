//! Incidents from anomalies: what an operator on call gets instead of a stream of anomaly
//! events.
//!
//! * [`RouterStage`] groups the anomalies of one router, across metrics and detectors, into
//!   one [`Incident`] with a lifecycle: opened, updated, resolved after a quiet period in
//!   event time, reopened (not duplicated) if the router flares up again soon after, and
//!   marked flapping (with a longer quiet period) if it keeps doing so. Every incident has a
//!   [`Severity`] and collects the [`Evidence`] the classifier's feature vector is made from.
//! * [`SiteStage`] groups router incidents by site (or role): when several routers of one
//!   site have incidents that start at about the same time, one [`SiteIncident`] names them,
//!   since the likely cause is upstream.
//! * [`ForecastStage`] sees slow faults coming: per router and watched metric, a robust
//!   linear trend with a prediction interval raises a *predicted* incident (an [`Incident`]
//!   with a [`Prediction`]: ETA and interval) before the metric reaches a level that hurts,
//!   updates its ETA, and withdraws it when the trend goes away.
//! * The stages serialise their whole state as a versioned, size-capped snapshot
//!   ([`RouterStage::snapshot`], [`SiteStage::snapshot`]), so that a stage follows its
//!   partition to a new owner and survives a crash the way detector state does.
//!
//! # Keying: how the stages scale over partitions and hosts
//!
//! The router stage needs every anomaly of a router in one place: it runs per partition of
//! `router-metrics`, which is keyed by router, next to the detectors of that partition. Its
//! state is part of that partition's state and moves with it. The site stage needs every
//! router incident of a site in one place, and a site's routers are spread over partitions
//! and hosts. So the router stage's output is re-keyed by site ([`SiteStage::key`]: the site,
//! or the role, of the incident) into its own topic, and the site stage runs per partition of
//! that topic: all of a site's incidents reach the one consumer that owns the site's
//! partition, whichever host found them. Its state is per partition of that topic.
//!
//! Time is event time throughout: the quiet period is measured on the timestamps of the
//! records ([`RouterStage::advance`]), never on a clock, so a replay gives the same incidents.

mod features;
mod forecast;
mod router;
mod site;
mod snapshot;

pub use features::{
    Evidence, FEATURE_COUNT, FEATURE_LAYOUT_VERSION, GLOBAL, MetricEvidence, PER_METRIC, feature_names,
};
pub use forecast::{FORECAST_DETECTOR, ForecastConfig, ForecastStage, ForecastTarget, Outcome, Prediction, Sample};
pub use router::{Cause, Change, ConfigError, Incident, IncidentUpdate, RouterConfig, RouterStage, Severity, State};
pub use site::{GroupBy, SiteChange, SiteConfig, SiteIncident, SiteStage, SiteUpdate};
pub use snapshot::{MAX_SNAPSHOT_BYTES, SNAPSHOT_VERSION, SnapshotError};

/// Longest router, site, role, metric or detector name an incident keeps, in bytes. Longer
/// names are refused at the door ([`RouterStage::observe`] ignores the event), so a snapshot
/// stays bounded.
pub const MAX_ID_BYTES: usize = 128;
