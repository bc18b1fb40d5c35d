//! Host bindings generated from `wit/detector.wit`.

// The generated items carry the WIT's own comments, where it has them.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "detector-plugin",
    path: "../wit",
    additional_derives: [PartialEq],
});

pub use routewatch::detector::types::{Anomaly, AnomalyKind, Batch, Column, Output, PluginInfo};

impl Batch {
    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.routers.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.routers.is_empty()
    }

    /// A copy of some of its rows, every column kept.
    pub fn slice(&self, rows: std::ops::Range<usize>) -> Batch {
        Batch {
            routers: self.routers[rows.clone()].to_vec(),
            timestamps: self.timestamps[rows.clone()].to_vec(),
            columns: self
                .columns
                .iter()
                .map(|c| Column { metric: c.metric.clone(), values: c.values[rows.clone()].to_vec() })
                .collect(),
        }
    }
}
