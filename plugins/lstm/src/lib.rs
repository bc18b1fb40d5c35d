//! LSTM anomaly detector: a small recurrent forecaster, run by tract-onnx inside the component.
//!
//! Per router, the ten metrics are normalised by running statistics ([`normalize::Norm`]) and
//! fed, one sample at a time, to an LSTM that forecasts the next sample of each. The recurrent
//! state (h, c) of every router is kept between batches and in snapshots. All routers that have
//! a sample in a batch go through the model in one call (the batch dimension), so a batch of a
//! thousand routers costs one inference, not a thousand.
//!
//! Each (router, metric) compares the sample with its forecast, and the SDK's calibrator scores
//! the error: how unlikely it is under that series' own recent errors, both as a single error
//! and as a run of errors on one side, so a sharp spike and a sustained moderate departure both
//! reach the decision. Anomalies mark the onset of a departure and its updates. Anomalous
//! samples enter the model and the statistics as their forecasts, until `level_shift_after` in
//! a row on one side make a level shift, which is then accepted as the new normal.
//!
//! The model reads only its ten trained inputs ([`model::FEATURES`]); its info says so, and
//! other metrics of a batch score 0.

mod config;
pub mod model;
pub mod normalize;

use routewatch_plugin_sdk::{Batch, Detector, Info, Judge, MAX_ROUTER_ID, Output, snapshot};
use serde::{Deserialize, Serialize};

pub use config::Config;
use model::{FEATURES, HIDDEN, Model, WIDTH};
use normalize::{CLIP, Norm};

routewatch_plugin_sdk::export_detector!(Lstm);

/// Snapshot layout version; bump when [`RouterState`] or the snapshot body changes shape.
/// 2: error tracks carry the SDK's calibrator and episode.
const SNAPSHOT_VERSION: u8 = 3;

/// The LSTM detector.
#[derive(Debug, Default)]
pub struct Lstm {
    config: Config,
    /// Per router id (dense), its state once seen.
    routers: Vec<Option<RouterState>>,
    /// Built on first use: parsing and optimising the model is not free.
    model: Option<Model>,
}

/// Forecast-error tracking of one (router, metric).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ErrorTrack {
    /// Calibrated scores of the forecast errors (metric units) and onsets of departures.
    judge: Judge,
    /// Consecutive anomalies on one side: sign and length.
    run_side: i8,
    run_len: u32,
}

/// Everything the detector remembers about one router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RouterState {
    last_ts: i64,
    /// Samples seen.
    seen: u64,
    h: Vec<f32>,
    c: Vec<f32>,
    /// The model's forecast of this router's next sample (normalised), once it has one.
    forecast: Option<Vec<f32>>,
    norms: Vec<Norm>,
    errors: Vec<ErrorTrack>,
}

impl RouterState {
    fn new() -> RouterState {
        RouterState {
            last_ts: i64::MIN,
            seen: 0,
            h: vec![0.0; HIDDEN],
            c: vec![0.0; HIDDEN],
            forecast: None,
            norms: vec![Norm::default(); WIDTH],
            errors: vec![ErrorTrack::default(); WIDTH],
        }
    }
}

/// A row waiting for its model step.
struct Pending {
    router: usize,
    x: [f32; WIDTH],
}

impl Detector for Lstm {
    fn info() -> Info {
        Info {
            name: "lstm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Per-router LSTM one-step forecasts of all ten metrics (tract-onnx); flags errors beyond \
                          a dynamic threshold on raw and smoothed forecast errors"
                .into(),
            metrics: FEATURES.iter().map(|m| m.to_string()).collect(),
            config_schema: Config::SCHEMA.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = Config::parse(config)?;
        Ok(())
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), String> {
        let rows = batch.rows();
        out.scores.resize(batch.points(), 0.0);
        if self.model.is_none() {
            self.model = Some(Model::load()?);
        }
        // Which batch column carries each model feature, and whether it is reported.
        let mut column_of = [None; WIDTH];
        for (c, column) in batch.columns.iter().enumerate() {
            if let Some(f) = FEATURES.iter().position(|&name| name == column.metric) {
                column_of[f] = Some(c);
            }
        }
        let min_dev: [f64; WIDTH] =
            std::array::from_fn(|f| self.config.min_deviation.get(FEATURES[f]).copied().unwrap_or(0.0));
        let reported: [bool; WIDTH] = std::array::from_fn(|f| {
            self.config.metrics.is_empty() || self.config.metrics.iter().any(|m| m == FEATURES[f])
        });

        // Rows of one router must go through the model in order, so the batch is cut into
        // waves: wave k holds each router's k-th row. A streaming batch is a single wave.
        let mut wave_of_row = vec![0u32; rows];
        let mut next_wave: Vec<u32> = Vec::new();
        let mut waves = 0u32;
        for (row, &router) in batch.routers.iter().enumerate() {
            if router > MAX_ROUTER_ID {
                return Err(format!("router id {router} is over {MAX_ROUTER_ID}; ids must be dense"));
            }
            let r = router as usize;
            if r >= next_wave.len() {
                next_wave.resize(r + 1, 0);
            }
            wave_of_row[row] = next_wave[r];
            next_wave[r] += 1;
            waves = waves.max(next_wave[r]);
        }
        let mut order: Vec<usize> = (0..rows).collect();
        if waves > 1 {
            order.sort_by_key(|&row| wave_of_row[row]);
        }

        let mut pending: Vec<Pending> = Vec::with_capacity(rows.min(next_wave.len()));
        let mut start = 0;
        while start < rows {
            let wave = wave_of_row[order[start]];
            let end = order[start..].iter().position(|&row| wave_of_row[row] != wave).map_or(rows, |n| start + n);
            pending.clear();
            for &row in &order[start..end] {
                let values: [f64; WIDTH] =
                    std::array::from_fn(|f| column_of[f].map_or(f64::NAN, |c| batch.columns[c].values[row]));
                if let Some(p) = self.observe(row, batch, &values, &column_of, &reported, &min_dev, out) {
                    pending.push(p);
                }
            }
            self.step(&pending)?;
            start = end;
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        let routers: Vec<(u32, &RouterState)> =
            self.routers.iter().enumerate().filter_map(|(id, s)| s.as_ref().map(|s| (id as u32, s))).collect();
        snapshot::encode(SNAPSHOT_VERSION, &(&self.config, routers))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (config, routers): (Config, Vec<(u32, RouterState)>) = snapshot::decode(bytes, SNAPSHOT_VERSION, "LSTM")?;
        // A snapshot's configuration passes the checks `configure` makes.
        config.check().map_err(|e| format!("corrupt LSTM snapshot: {e}"))?;
        let bad = |s: &RouterState| {
            s.h.len() != HIDDEN
                || s.c.len() != HIDDEN
                || s.norms.len() != WIDTH
                || s.errors.len() != WIDTH
                || s.forecast.as_ref().is_some_and(|f| f.len() != WIDTH)
        };
        if routers.iter().any(|(id, s)| *id > MAX_ROUTER_ID || bad(s)) {
            return Err("corrupt LSTM snapshot: a router's state has the wrong shape".into());
        }
        let mut table = Vec::new();
        for (id, state) in routers {
            if id as usize >= table.len() {
                table.resize(id as usize + 1, None);
            }
            table[id as usize] = Some(state);
        }
        self.config = config;
        self.routers = table;
        Ok(())
    }
}

impl Lstm {
    /// Scores one row against the router's last forecast and prepares its model input.
    /// Returns `None` for a row that must not move the model (out of order or repeated).
    #[allow(clippy::too_many_arguments)] // per-batch lookups, passed down rather than recomputed per row
    fn observe(
        &mut self,
        row: usize,
        batch: &Batch<'_>,
        values: &[f64; WIDTH],
        column_of: &[Option<usize>; WIDTH],
        reported: &[bool; WIDTH],
        min_dev: &[f64; WIDTH],
        out: &mut Output,
    ) -> Option<Pending> {
        let config = &self.config;
        let router = batch.routers[row] as usize;
        let ts = batch.timestamps[row];
        if router >= self.routers.len() {
            self.routers.resize(router + 1, None);
        }
        let state = self.routers[router].get_or_insert_with(RouterState::new);
        if ts <= state.last_ts {
            return None;
        }
        state.last_ts = ts;
        state.seen += 1;
        let rows = batch.rows();
        let scoring = state.seen > config.warmup;
        let learning_scale = state.seen > normalize::WARMUP;
        let mut x = [0f32; WIDTH];
        for f in 0..WIDTH {
            let norm = state.norms[f];
            let value = values[f];
            let forecast = state.forecast.as_ref().map(|fc| f64::from(fc[f]));
            if !value.is_finite() {
                // A gap: the model continues on its own forecast; nothing is learnt or scored.
                x[f] = forecast.unwrap_or(0.0) as f32;
                continue;
            }
            let z = norm.z(value);
            let mut accept = true;
            if let (Some(expected_z), true) = (forecast, learning_scale) {
                let track = &mut state.errors[f];
                let expected = norm.denormalise(expected_z);
                if !scoring {
                    // The calibrator learns the errors while the model settles.
                    track.judge.calibrator.observe(value, expected, config.threshold);
                } else {
                    let judgement = track.judge.judge(FEATURES[f], value, expected, config.threshold, min_dev[f]);
                    if judgement.calibration.anomalous() {
                        let side: i8 = if value > expected { 1 } else { -1 };
                        if track.run_side != side {
                            track.run_side = side;
                            track.run_len = 0;
                        }
                        track.run_len += 1;
                        // Until the departure has lasted, do not let it bend the model or the
                        // statistics.
                        accept = track.run_len >= config.level_shift_after;
                        if accept {
                            track.run_len = 0;
                            track.run_side = 0;
                        }
                    } else if track.run_len > 0 {
                        track.run_len = 0;
                        track.run_side = 0;
                    }
                    if let (Some(c), true) = (column_of[f], reported[f]) {
                        out.scores[c * rows + row] = judgement.calibration.score as f32;
                        if let Some(mut anomaly) = judgement.anomaly {
                            anomaly.row = row as u32;
                            anomaly.column = c as u32;
                            out.anomalies.push(anomaly);
                        }
                    }
                }
            }
            if accept {
                state.norms[f].update(value);
                x[f] = z.clamp(-CLIP, CLIP) as f32;
            } else {
                x[f] = forecast.unwrap_or(0.0) as f32;
            }
        }
        Some(Pending { router, x })
    }

    /// One model call for a wave of routers: new forecasts and recurrent states.
    fn step(&mut self, pending: &[Pending]) -> Result<(), String> {
        if pending.is_empty() {
            return Ok(());
        }
        let n = pending.len();
        let mut x = Vec::with_capacity(n * WIDTH);
        let mut h = Vec::with_capacity(n * HIDDEN);
        let mut c = Vec::with_capacity(n * HIDDEN);
        for p in pending {
            let state = self.routers[p.router].as_ref().expect("observed routers have state");
            x.extend_from_slice(&p.x);
            h.extend_from_slice(&state.h);
            c.extend_from_slice(&state.c);
        }
        let model = self.model.as_mut().expect("model loaded before stepping");
        let step = model.step(n, &x, &h, &c)?;
        for (i, p) in pending.iter().enumerate() {
            let state = self.routers[p.router].as_mut().expect("observed routers have state");
            state.h.copy_from_slice(&step.h[i * HIDDEN..(i + 1) * HIDDEN]);
            state.c.copy_from_slice(&step.c[i * HIDDEN..(i + 1) * HIDDEN]);
            match &mut state.forecast {
                Some(f) => f.copy_from_slice(&step.forecast[i * WIDTH..(i + 1) * WIDTH]),
                None => state.forecast = Some(step.forecast[i * WIDTH..(i + 1) * WIDTH].to_vec()),
            }
        }
        Ok(())
    }
}
