//! A random-forest cause classifier for routewatch incidents, as a component of the
//! `routewatch:classifier` world (`wit/classifier/classifier.wit`).
//!
//! The forest is scikit-learn's `RandomForestClassifier`, trained by `train/train.py` on the
//! simulator's ground truth and committed as `model/forest.json`; this crate evaluates it the
//! way scikit-learn does (see [`forest`]). It answers the top 3 causes with their
//! probabilities, and the verdict `unknown` when the most likely cause has a probability
//! below `min_confidence` (0.5 by default: a verdict must be more likely than all the other
//! causes together).
//!
//! The forest has one class that is not a cause, [`NO_FAULT`]: incidents of no fault (false,
//! or during a planned change). It is never a verdict nor among the causes; its probability is
//! what the causes' probabilities lack of 1, so an incident that looks like noise is
//! `unknown` instead of a confident cause that a self-healing policy could act on.

pub mod forest;

use std::sync::OnceLock;

use serde::Deserialize;

pub use forest::{Model, ModelError};

/// The committed model.
pub const MODEL_JSON: &str = include_str!("../model/forest.json");
/// Causes returned per incident.
pub const TOP_K: usize = 3;
/// Feature vectors accepted per call.
pub const MAX_BATCH: usize = 1024;
/// The verdict when the classifier is not sure.
pub const UNKNOWN: &str = "unknown";
/// The model's class for incidents of no fault: not a cause (see the crate docs).
pub const NO_FAULT: &str = "none";

/// The causes the model names: its classes but [`NO_FAULT`].
pub fn causes(model: &Model) -> Vec<String> {
    model.classes.iter().filter(|c| *c != NO_FAULT).cloned().collect()
}

/// The JSON Schema of the configuration.
pub const CONFIG_SCHEMA: &str = r#"{"type":"object","additionalProperties":false,"properties":{"min_confidence":{"type":"number","minimum":0,"maximum":1,"default":0.5,"description":"Below this probability of the most likely cause the verdict is unknown."}}}"#;

/// The configuration `configure` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub min_confidence: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config { min_confidence: 0.5 }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        if json.len() > 4096 {
            return Err("configuration over 4096 bytes".into());
        }
        let config: Config = serde_json::from_str(json).map_err(|e| format!("configuration: {e}"))?;
        if !(0.0..=1.0).contains(&config.min_confidence) {
            return Err("min_confidence must be in [0, 1]".into());
        }
        Ok(config)
    }
}

/// One answer: the verdict and the top causes.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub verdict: String,
    pub top: Vec<(String, f64)>,
}

/// The committed model, read once.
pub fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::parse(MODEL_JSON).expect("the committed model is checked by the tests"))
}

/// Classifies feature vectors of layout `(layout, values)`.
pub fn classify(config: &Config, incidents: &[(u32, &[f64])]) -> Result<Vec<Answer>, String> {
    let model = model();
    if incidents.len() > MAX_BATCH {
        return Err(format!("{} incidents in one call, over {MAX_BATCH}", incidents.len()));
    }
    incidents
        .iter()
        .enumerate()
        .map(|(i, (layout, values))| {
            if *layout != model.layout {
                return Err(format!("incident {i}: feature layout {layout}; this model reads {}", model.layout));
            }
            if values.len() != model.n_features {
                return Err(format!(
                    "incident {i}: {} features; layout {layout} has {}",
                    values.len(),
                    model.n_features
                ));
            }
            if let Some(j) = values.iter().position(|v| !v.is_finite()) {
                return Err(format!("incident {i}: feature {j} is not finite"));
            }
            let proba = model.predict_proba(values);
            let top = forest::top(&model.classes, &proba, TOP_K, |c| c != NO_FAULT);
            let verdict = match top.first() {
                Some((cause, p)) if *p >= config.min_confidence => cause.clone(),
                _ => UNKNOWN.to_owned(),
            };
            Ok(Answer { verdict, top })
        })
        .collect()
}

#[cfg(target_arch = "wasm32")]
mod glue {
    use std::cell::Cell;

    wit_bindgen::generate!({ world: "classifier-plugin", path: "../../wit/classifier" });

    use exports::routewatch::classifier::classifier::Guest;
    use routewatch::classifier::types::{Cause, Classification, ClassifierInfo, Features};

    thread_local! {
        static CONFIG: Cell<super::Config> = Cell::new(super::Config::default());
    }

    struct Component;

    impl Guest for Component {
        fn info() -> ClassifierInfo {
            let model = super::model();
            ClassifierInfo {
                name: "forest".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: format!(
                    "Random forest of {} trees (scikit-learn, trained on the simulator's ground truth, incidents of no fault included); top {} causes, `unknown` below min_confidence.",
                    model.trees.len(),
                    super::TOP_K
                ),
                layouts: vec![model.layout],
                causes: super::causes(model),
                config_schema: super::CONFIG_SCHEMA.into(),
            }
        }

        fn configure(config: String) -> Result<(), String> {
            CONFIG.set(super::Config::parse(&config)?);
            Ok(())
        }

        fn classify(incidents: Vec<Features>) -> Result<Vec<Classification>, String> {
            let inputs: Vec<(u32, &[f64])> = incidents.iter().map(|f| (f.layout, f.values.as_slice())).collect();
            let answers = super::classify(&CONFIG.get(), &inputs)?;
            Ok(answers
                .into_iter()
                .map(|a| Classification {
                    verdict: a.verdict,
                    top: a.top.into_iter().map(|(name, probability)| Cause { name, probability }).collect(),
                })
                .collect())
        }
    }

    export!(Component);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_defaults_and_refusals() {
        assert_eq!(Config::parse("{}").unwrap(), Config::default());
        assert_eq!(Config::parse(r#"{"min_confidence":0.8}"#).unwrap().min_confidence, 0.8);
        assert!(Config::parse(r#"{"min_confidence":1.5}"#).is_err());
        assert!(Config::parse(r#"{"other":1}"#).is_err());
        assert!(serde_json::from_str::<serde_json::Value>(CONFIG_SCHEMA).is_ok());
    }

    #[test]
    fn refuses_bad_input_and_says_unknown_when_unsure() {
        let n = model().n_features;
        let zeros = vec![0.0; n];
        assert!(classify(&Config::default(), &[(99, &zeros)]).is_err());
        assert!(classify(&Config::default(), &[(model().layout, &zeros[1..])]).is_err());
        let mut nan = zeros.clone();
        nan[3] = f64::NAN;
        assert!(classify(&Config::default(), &[(model().layout, &nan)]).is_err());
        let many: Vec<(u32, &[f64])> = (0..=MAX_BATCH).map(|_| (model().layout, zeros.as_slice())).collect();
        assert!(classify(&Config::default(), &many).is_err());
        // The verdict is the top cause at or above min_confidence, unknown below it.
        let answer = &classify(&Config::default(), &[(model().layout, &zeros)]).unwrap()[0];
        assert_eq!(answer.top.len(), TOP_K.min(causes(model()).len()));
        assert!(answer.top.windows(2).all(|w| w[0].1 >= w[1].1), "most likely first");
        let p = answer.top[0].1;
        let at = &classify(&Config { min_confidence: p }, &[(model().layout, &zeros)]).unwrap()[0];
        assert_eq!(at.verdict, answer.top[0].0);
        if p < 1.0 {
            let above = Config { min_confidence: (p + 1e-9).min(1.0) };
            assert_eq!(classify(&above, &[(model().layout, &zeros)]).unwrap()[0].verdict, UNKNOWN);
        }
    }

    #[test]
    fn no_fault_is_a_class_of_the_model_but_never_a_cause() {
        assert!(model().classes.iter().any(|c| c == NO_FAULT), "the committed model learnt incidents of no fault");
        assert!(!causes(model()).iter().any(|c| c == NO_FAULT));
        assert_eq!(causes(model()).len(), model().classes.len() - 1);
        // The vectors where the forest is surest there is no fault: the causes' share is
        // what is left, and the verdict is unknown.
        let parity: serde_json::Value = serde_json::from_str(include_str!("../model/parity.json")).unwrap();
        let none = model().classes.iter().position(|c| c == NO_FAULT).unwrap();
        let mut seen = 0;
        for values in parity["features"].as_array().unwrap() {
            let values: Vec<f64> = values.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let proba = model().predict_proba(&values);
            let answer = &classify(&Config::default(), &[(model().layout, &values)]).unwrap()[0];
            assert!(answer.top.iter().all(|(c, _)| c != NO_FAULT) && answer.verdict != NO_FAULT);
            if proba[none] > 0.5 {
                seen += 1;
                assert_eq!(answer.verdict, UNKNOWN);
                let named: f64 = answer.top.iter().map(|(_, p)| p).sum();
                assert!(named <= 1.0 - proba[none] + 1e-9, "the causes get what no-fault leaves");
            }
        }
        assert!(seen > 0, "the parity set has incidents of no fault");
    }
}
