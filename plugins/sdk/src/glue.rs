//! The Wasm side: WIT bindings and the adapters between them and [`Detector`].
//! Used through [`crate::export_detector!`]; not a public API.

use crate::{Anomaly, AnomalyKind, Batch, Column, Detector, Level, Output};

#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "detector-plugin",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "routewatch_plugin_sdk::glue::bindings",
    });
}

use bindings::routewatch::detector::{logging, types as wit};

pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => logging::Level::Trace,
        Level::Debug => logging::Level::Debug,
        Level::Info => logging::Level::Info,
        Level::Warn => logging::Level::Warn,
        Level::Error => logging::Level::Error,
    };
    logging::log(level, message);
}

pub fn info<D: Detector>() -> wit::PluginInfo {
    let info = D::info();
    wit::PluginInfo {
        name: info.name,
        version: info.version,
        description: info.description,
        metrics: info.metrics,
        config_schema: info.config_schema,
    }
}

/// The component's one detector plus a reusable output buffer.
#[derive(Default)]
pub struct State<D> {
    detector: D,
    output: Output,
}

impl<D: Detector> State<D> {
    pub fn configure(&mut self, config: &str) -> Result<(), String> {
        self.detector.configure(config)
    }

    pub fn process(&mut self, batch: wit::Batch) -> Result<wit::Output, String> {
        let columns = batch.columns.iter().map(|c| Column { metric: &c.metric, values: &c.values }).collect();
        let view = Batch { routers: &batch.routers, timestamps: &batch.timestamps, columns };
        self.output.clear();
        self.detector.process(&view, &mut self.output)?;
        // The contract, kept for every detector: scores in [0, 1] (NaN is "no opinion", 0)
        // and reasons no longer than the host accepts, cut at a character boundary.
        if !D::RAW_OUTPUT {
            for score in &mut self.output.scores {
                *score = if score.is_nan() { 0.0 } else { score.clamp(0.0, 1.0) };
            }
            for a in &mut self.output.anomalies {
                crate::episode::truncate(&mut a.reason, crate::MAX_REASON_BYTES);
                a.score = if a.score.is_nan() { 0.5 } else { a.score.clamp(0.0, 1.0) };
            }
        }
        Ok(wit::Output {
            scores: std::mem::take(&mut self.output.scores),
            anomalies: self.output.anomalies.drain(..).map(anomaly).collect(),
        })
    }

    pub fn snapshot(&self) -> Vec<u8> {
        self.detector.snapshot()
    }

    pub fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.detector.restore(state)
    }
}

fn anomaly(a: Anomaly) -> wit::Anomaly {
    wit::Anomaly {
        row: a.row,
        column: a.column,
        observed: a.observed,
        expected: a.expected,
        lower: a.lower,
        upper: a.upper,
        score: a.score,
        kind: match a.kind {
            AnomalyKind::Spike => wit::AnomalyKind::Spike,
            AnomalyKind::Dip => wit::AnomalyKind::Dip,
            AnomalyKind::LevelShift => wit::AnomalyKind::LevelShift,
            AnomalyKind::Drift => wit::AnomalyKind::Drift,
            AnomalyKind::Loss => wit::AnomalyKind::Loss,
            AnomalyKind::Hardware => wit::AnomalyKind::Hardware,
            AnomalyKind::Outlier => wit::AnomalyKind::Outlier,
            AnomalyKind::Changepoint => wit::AnomalyKind::Changepoint,
            AnomalyKind::Other => wit::AnomalyKind::Other,
        },
        reason: a.reason,
    }
}
