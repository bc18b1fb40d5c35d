//! The embedded ONNX forecaster, run by tract: one step for a batch of routers at a time.

use tract_onnx::prelude::*;

/// The trained model (see `train/`), built into the component.
pub const ONNX: &[u8] = include_bytes!("../model/lstm.onnx");
/// Features the model reads, in its input order (shared with `train/train.py`).
pub const FEATURES: [&str; 10] = [
    "cpu_util",
    "mem_util",
    "temp_c",
    "fan_rpm",
    "latency_ms",
    "loss_ratio",
    "rx_bps",
    "tx_bps",
    "if_errors",
    "bgp_up",
];
/// Width of the recurrent state (h and c each).
pub const HIDDEN: usize = 32;
/// Number of input (and forecast) features.
pub const WIDTH: usize = FEATURES.len();

/// The optimised, runnable model. Optimising takes milliseconds, so it is built once per
/// instance and reused for every batch.
pub struct Model {
    plan: TypedSimpleState,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Model")
    }
}

/// One step's outputs for every router of the call, row-major (`[batch][WIDTH]`, `[batch][HIDDEN]`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Step {
    pub forecast: Vec<f32>,
    pub h: Vec<f32>,
    pub c: Vec<f32>,
}

impl Model {
    /// Parses and optimises the embedded model; the batch dimension stays symbolic.
    pub fn load() -> Result<Model, String> {
        Model::from_bytes(ONNX)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Model, String> {
        let build = || -> TractResult<TypedSimpleState> {
            let model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
            let plan = model.into_optimized()?.into_runnable()?;
            plan.spawn()
        };
        Ok(Model { plan: build().map_err(|e| format!("loading the LSTM model: {e:#}"))? })
    }

    /// Runs one step for `batch` routers: inputs `x` (`batch * WIDTH`), `h` and `c`
    /// (`batch * HIDDEN` each).
    pub fn step(&mut self, batch: usize, x: &[f32], h: &[f32], c: &[f32]) -> Result<Step, String> {
        debug_assert_eq!(x.len(), batch * WIDTH);
        debug_assert_eq!(h.len(), batch * HIDDEN);
        let run = |plan: &mut TypedSimpleState| -> TractResult<Step> {
            let inputs = tvec![
                Tensor::from_shape(&[1, batch, WIDTH], x)?.into_tvalue(),
                Tensor::from_shape(&[1, batch, HIDDEN], h)?.into_tvalue(),
                Tensor::from_shape(&[1, batch, HIDDEN], c)?.into_tvalue(),
            ];
            let out = plan.run(inputs)?;
            Ok(Step {
                forecast: out[0].to_plain_array_view::<f32>()?.iter().copied().collect(),
                h: out[1].to_plain_array_view::<f32>()?.iter().copied().collect(),
                c: out[2].to_plain_array_view::<f32>()?.iter().copied().collect(),
            })
        };
        run(&mut self.plan).map_err(|e| format!("running the LSTM model: {e:#}"))
    }
}
