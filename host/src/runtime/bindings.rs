//! Host bindings generated from `wit/detector.wit`.

wasmtime::component::bindgen!({
    world: "detector-plugin",
    path: "../wit",
    additional_derives: [PartialEq],
});

pub use routewatch::detector::types::{Anomaly, AnomalyKind, Batch, Column, Output, PluginInfo};
