//! The SDK's calibration alone: every series is forecast as its previous value (a subtraction)
//! and judged by the SDK's [`Judge`] exactly as ARIMA judges its forecasts. Timed beside ARIMA
//! by `host/benches/arima_throughput.rs`, it shows what calibration costs per point in Wasm.

use routewatch_plugin_sdk::{Batch, Detector, Info, Judge, Output, SeriesTable, Verdict};

routewatch_plugin_sdk::export_detector!(CalibrateOnly);

/// A naive forecaster with the SDK's calibration.
#[derive(Default)]
pub struct CalibrateOnly {
    series: SeriesTable<(Option<f64>, Judge)>,
}

impl Detector for CalibrateOnly {
    fn info() -> Info {
        Info::new(
            "calibrate-only",
            env!("CARGO_PKG_VERSION"),
            "the SDK's calibration behind a naive forecast (benchmark)",
        )
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), String> {
        self.series.process_named(
            batch,
            out,
            |_| Some(()),
            |(last, judge), metric, _, _, value| {
                let expected = last.unwrap_or(value);
                *last = Some(value);
                let judgement = judge.judge(metric, value, expected, 6.0, 0.0);
                Verdict { score: judgement.calibration.score, anomaly: judgement.anomaly }
            },
        )
    }
}
