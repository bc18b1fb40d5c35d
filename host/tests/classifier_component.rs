//! The forest classifier component through the host's runtime: it predicts what scikit-learn
//! predicted on the committed parity set (`plugins/classifier-forest/model/parity.json`,
//! written by `train/train.py` with the model), within 1e-6; the host holds it to the
//! classifier world's contract and tells classifiers and detectors apart.

mod common;

use routewatch_host::runtime::classifier::{self, ClassifierLoadError, Features, UNKNOWN};
use routewatch_host::runtime::{CallError, LoadError};

#[derive(serde::Deserialize)]
struct Parity {
    layout: u32,
    classes: Vec<String>,
    features: Vec<Vec<f64>>,
    proba: Vec<Vec<f64>>,
}

fn parity() -> Parity {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/classifier-forest/model/parity.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the committed parity set")).expect("parity JSON")
}

fn forest() -> classifier::ClassifierPlugin {
    let runtime = common::runtime();
    classifier::load_file(&runtime, &common::component("routewatch_classifier_forest")).expect("the classifier loads")
}

#[test]
fn predicts_what_scikit_learn_predicts() {
    let parity = parity();
    assert!(parity.features.len() > 100, "a parity set worth the name");
    let plugin = forest();
    assert_eq!(plugin.info().name, "forest");
    assert_eq!(plugin.info().causes, parity.classes);
    assert_eq!(plugin.info().layouts, [parity.layout]);
    let mut instance = plugin.instantiate().unwrap();
    instance.configure("{}").unwrap();
    let inputs: Vec<Features> =
        parity.features.iter().map(|v| Features { layout: parity.layout, values: v.clone() }).collect();
    let answers = instance.classify(&inputs).unwrap();
    assert_eq!(answers.len(), inputs.len());
    let mut unknown = 0;
    for (i, (answer, proba)) in answers.iter().zip(&parity.proba).enumerate() {
        // scikit-learn's top 3, ties to the class that comes first, as the component orders them.
        let mut order: Vec<usize> = (0..proba.len()).collect();
        order.sort_by(|&a, &b| proba[b].total_cmp(&proba[a]).then(a.cmp(&b)));
        assert_eq!(answer.top.len(), 3.min(proba.len()), "vector {i}");
        for (cause, &k) in answer.top.iter().zip(&order) {
            assert!(
                (cause.probability - proba[k]).abs() <= 1e-6,
                "vector {i}: {} {} vs scikit-learn {}",
                cause.name,
                cause.probability,
                proba[k]
            );
            // A tie within the tolerance may order two classes either way.
            let tied = order.iter().any(|&j| parity.classes[j] == cause.name && (proba[j] - proba[k]).abs() <= 1e-6);
            assert!(tied, "vector {i}: {} where scikit-learn has {}", cause.name, parity.classes[k]);
        }
        let top = proba[order[0]];
        if top < 0.5 - 1e-6 {
            assert_eq!(answer.verdict, UNKNOWN, "vector {i}");
            unknown += 1;
        } else if top >= 0.5 + 1e-6 {
            assert_eq!(answer.verdict, answer.top[0].name, "vector {i}");
        }
    }
    eprintln!("{} vectors, {unknown} unknown", answers.len());
}

#[test]
fn bad_input_is_refused_and_the_instance_lives_on() {
    let parity = parity();
    let mut instance = forest().instantiate().unwrap();
    let good = Features { layout: parity.layout, values: parity.features[0].clone() };
    let refusals = [
        Features { layout: parity.layout + 1, values: good.values.clone() },
        Features { layout: parity.layout, values: good.values[1..].to_vec() },
        Features { layout: parity.layout, values: vec![f64::NAN; good.values.len()] },
    ];
    for bad in refusals {
        assert!(matches!(instance.classify(&[good.clone(), bad]), Err(CallError::Plugin(_))));
    }
    let many = vec![good.clone(); classifier::MAX_CLASSIFY_BATCH + 1];
    assert!(matches!(instance.classify(&many), Err(CallError::Plugin(_))), "the host caps a call");
    assert!(matches!(instance.configure(r#"{"min_confidence": 2}"#), Err(CallError::Plugin(_))));
    // Nothing above killed it; a sure-of-nothing configuration makes every verdict unknown.
    instance.configure(r#"{"min_confidence": 1}"#).unwrap();
    let answers = instance.classify(&[good]).unwrap();
    assert!(answers[0].top[0].probability == 1.0 || answers[0].verdict == UNKNOWN);
    assert!(!instance.is_poisoned());
}

#[test]
fn classifiers_and_detectors_are_told_apart() {
    let runtime = common::runtime();
    let detector = classifier::load_file(&runtime, &common::component("routewatch_arima"));
    assert!(matches!(detector, Err(ClassifierLoadError::NotAClassifier(_))), "{detector:?}");
    let not_a_detector = runtime.load_file(&common::component("routewatch_classifier_forest"));
    assert!(matches!(not_a_detector, Err(LoadError::NotADetector(_))), "{not_a_detector:?}");
    assert!(matches!(classifier::load(&runtime, b"not wasm"), Err(ClassifierLoadError::Load(LoadError::NotWasm))));
}
