//! ARIMA anomaly detector: one ARIMA(p,d,q) model per (router, metric) series.
//!
//! Each series collects a warm-up window, then:
//! 1. chooses `d` by KPSS tests and `p`, `q` by AICc over a small grid (Hannan-Rissanen
//!    screening), and fits the chosen order by conditional sum of squares (Nelder-Mead);
//! 2. forecasts every next sample one step ahead and scores the residual with the SDK's
//!    calibrator ([`routewatch_plugin_sdk::calibrate`]): how unlikely it is under the series'
//!    own recent errors, 0.5 at the decision, with `threshold` robust sd as the least
//!    single-error threshold;
//! 3. reports the onset of a departure (a spike, a dip, or a level shift when a run of errors
//!    decided) and updates under the SDK's hold-off; once `level_shift_after` anomalies in a
//!    row sit on one side it follows the new level;
//! 4. refits every `refit_every` samples on a window in which anomalies were replaced by
//!    their forecasts.
//!
//! The detector code is plain Rust: the same [`Arima`] type runs natively in tests and
//! benchmarks, and as a Wasm component through [`routewatch_plugin_sdk::export_detector!`].

mod config;
pub mod model;
mod optimize;
mod series;
mod window;

use routewatch_plugin_sdk::{Batch, Detector, Info, Output, SeriesKey};

pub use config::Config;
use series::{Series, SeriesV4};

routewatch_plugin_sdk::export_detector!(Arima);

/// Snapshot layout version; bump when [`State`] changes shape. 2: series carry the SDK's
/// calibrator and episode instead of their own scale. 4: series carry their window (in single
/// precision), so that a restored series refits as the uninterrupted one would. 5: the window
/// on a 16-bit grid (see `window`), half the bytes; version 4 is still read.
const SNAPSHOT_VERSION: u8 = 5;
/// The last version with the window in single precision.
const SNAPSHOT_VERSION_F32: u8 = 4;

/// Largest router id accepted; ids index arrays, so an absurd one must not allocate gigabytes.
const MAX_ROUTER_ID: u32 = (1 << 24) - 1;

/// The ARIMA detector.
#[derive(Debug, Default)]
pub struct Arima {
    state: State,
}

/// Everything a snapshot carries, plus an index rebuilt from it.
#[derive(Debug, Default, Clone)]
struct State {
    config: Config,
    /// Metric names seen so far, in order of first sight; a metric's id is its position.
    metrics: Vec<String>,
    /// Every series, in order of first sight, with its (router, metric id).
    series: Vec<(u32, u32, Series)>,
    /// `index[metric][router]` is 1 + the series' position in `series`, or 0 for none.
    /// Router ids are dense (see the WIT contract), so arrays beat hashing here.
    index: Vec<Vec<u32>>,
}

impl State {
    fn metric_id(&mut self, name: &str) -> usize {
        match self.metrics.iter().position(|m| m == name) {
            Some(id) => id,
            None => {
                self.metrics.push(name.to_owned());
                self.index.push(Vec::new());
                self.metrics.len() - 1
            }
        }
    }

    fn rebuild_index(&mut self) {
        self.index = vec![Vec::new(); self.metrics.len()];
        for (position, (router, metric, _)) in self.series.iter().enumerate() {
            *slot(&mut self.index[*metric as usize], *router) = position as u32 + 1;
        }
    }
}

/// The index entry of `router`, growing the index as needed.
fn slot(index: &mut Vec<u32>, router: u32) -> &mut u32 {
    let at = router as usize;
    if at >= index.len() {
        index.resize(at + 1, 0);
    }
    &mut index[at]
}

impl Detector for Arima {
    fn info() -> Info {
        Info {
            name: "arima".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Per-series ARIMA(p,d,q) one-step forecasts; flags residuals beyond a robust \
                          threshold as spikes, dips and level shifts"
                .into(),
            metrics: Vec::new(),
            config_schema: Config::SCHEMA.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.state.config = Config::parse(config)?;
        Ok(())
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), String> {
        let state = &mut self.state;
        out.scores.reserve(batch.points());
        for (column_index, column) in batch.columns.iter().enumerate() {
            let watched = state.config.metrics.is_empty() || state.config.metrics.iter().any(|m| m == column.metric);
            if !watched {
                out.scores.extend(std::iter::repeat_n(0.0, batch.rows()));
                continue;
            }
            let metric = state.metric_id(column.metric);
            let min_deviation = state.config.min_deviation.get(column.metric).copied().unwrap_or(0.0);
            let index = &mut state.index[metric];
            for (row, ((&router, &ts), &value)) in
                batch.routers.iter().zip(batch.timestamps).zip(column.values).enumerate()
            {
                if router > MAX_ROUTER_ID {
                    return Err(format!("router id {router} is over {MAX_ROUTER_ID}; ids must be dense"));
                }
                let entry = slot(index, router);
                if *entry == 0 {
                    state.series.push((router, metric as u32, Series::default()));
                    *entry = state.series.len() as u32;
                }
                let series = &mut state.series[*entry as usize - 1].2;
                let key = SeriesKey { router, metric: metric as u32 };
                let verdict = series.observe(ts, value, &state.config, column.metric, min_deviation, key);
                out.scores.push(verdict.score as f32);
                if let Some(mut anomaly) = verdict.anomaly {
                    anomaly.row = row as u32;
                    anomaly.column = column_index as u32;
                    out.anomalies.push(anomaly);
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = vec![SNAPSHOT_VERSION];
        let body = (&self.state.config, &self.state.metrics, &self.state.series);
        bytes.extend(postcard::to_allocvec(&body).expect("state always serialises"));
        bytes
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let corrupt = |e: postcard::Error| format!("corrupt ARIMA snapshot: {e}");
        let (config, metrics, series): (Config, Vec<String>, Vec<(u32, u32, Series)>) = match bytes.split_first() {
            Some((&SNAPSHOT_VERSION, body)) => postcard::from_bytes(body).map_err(corrupt)?,
            Some((&SNAPSHOT_VERSION_F32, body)) => {
                let (config, metrics, series): (Config, Vec<String>, Vec<(u32, u32, SeriesV4)>) =
                    postcard::from_bytes(body).map_err(corrupt)?;
                (config, metrics, series.into_iter().map(|(router, metric, s)| (router, metric, s.into())).collect())
            }
            Some((version, _)) => {
                return Err(format!(
                    "ARIMA snapshot version {version} is not supported (this build reads {SNAPSHOT_VERSION_F32} and {SNAPSHOT_VERSION})"
                ));
            }
            None => return Err("empty ARIMA snapshot".into()),
        };
        // A snapshot's configuration passes the checks `configure` makes.
        config.check().map_err(|e| format!("corrupt ARIMA snapshot: {e}"))?;
        if series.iter().any(|(router, metric, _)| *router > MAX_ROUTER_ID || *metric as usize >= metrics.len()) {
            return Err("corrupt ARIMA snapshot: a series refers to an unknown router or metric".into());
        }
        if !series.iter().all(|(_, _, s)| s.is_sound()) {
            return Err("corrupt ARIMA snapshot: a series' window or level is not finite".into());
        }
        self.state = State { config, metrics, series, index: Vec::new() };
        self.state.rebuild_index();
        Ok(())
    }
}
