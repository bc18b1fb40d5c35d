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
    /// The class of incidents of no fault.
    no_fault: String,
    features: Vec<Vec<f64>>,
    proba: Vec<Vec<f64>>,
}

fn parity() -> Parity {
    let path = common::repo_root().join("plugins/classifier-forest/model/parity.json");
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
    // Every class is a cause but the one of incidents of no fault, which the component never
    // names: its probability is what the causes lack of 1.
    let causes: Vec<usize> = (0..parity.classes.len()).filter(|&i| parity.classes[i] != parity.no_fault).collect();
    assert_eq!(causes.len(), parity.classes.len() - 1, "the model has a no-fault class");
    assert_eq!(plugin.info().causes, causes.iter().map(|&i| parity.classes[i].clone()).collect::<Vec<_>>());
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
        let mut order = causes.clone();
        order.sort_by(|&a, &b| proba[b].total_cmp(&proba[a]).then(a.cmp(&b)));
        assert_eq!(answer.top.len(), 3.min(order.len()), "vector {i}");
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

/// The stub classifier, misbehaving on request: each misbehaviour is a typed failure (so the
/// incident stage counts it under its kind), and the registry quarantines a classifier whose
/// calls keep failing by the detectors' policy, then lets it run again when the backoff is over.
#[test]
fn a_failing_classifier_is_contained_and_quarantined_by_the_detectors_policy() {
    use routewatch_host::metrics::Metrics;
    use routewatch_host::registry::{QuarantinePolicy, Registry};
    use std::time::Duration;

    // The runtime lives as long as its plugins: its epoch ticker is what stops a loop.
    let runtime = common::runtime();
    let stub = classifier::load_file(&runtime, &common::component("routewatch_test_classifier")).unwrap();
    let features = [Features { layout: 1, values: vec![0.0; 115] }];
    let mut instance = stub.instantiate().unwrap();
    instance.configure("{}").unwrap();
    assert_eq!(instance.classify(&features).unwrap()[0].verdict, "stub-cause");
    assert!(instance.configure(r#"{"mode": "nonsense"}"#).is_err(), "an unknown mode is refused");
    let kinds = [("trap", "panic"), ("loop", "cpu_budget"), ("garbage", "invalid_output")];
    for (mode, kind) in kinds {
        let mut instance = stub.instantiate().unwrap();
        instance.configure(&format!(r#"{{"mode": "{mode}"}}"#)).unwrap();
        let err = instance.classify(&features).unwrap_err();
        assert_eq!(err.kind_label(), kind, "{mode}: {err}");
    }

    let policy = QuarantinePolicy {
        max_failures: 3,
        window: Duration::from_secs(60),
        backoff: Duration::from_millis(300),
        max_backoff: Duration::from_secs(60),
    };
    let metrics = std::sync::Arc::new(Metrics::default());
    let registry = Registry::new(common::runtime(), metrics.clone(), policy, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stub.wasm");
    std::fs::copy(common::component("routewatch_test_classifier"), &path).unwrap();
    let status = registry.install_classifier_file(&path).unwrap();
    let generation = registry.classifier_generation();
    for _ in 0..2 {
        registry.report_classifier_failure(&status.sha256, "plugin trapped (panic)");
    }
    assert_eq!(registry.classifier().unwrap().state, "running", "two failures are not a pattern");
    registry.report_classifier_failure("another-version", "plugin trapped (panic)");
    assert_eq!(registry.classifier().unwrap().state, "running", "an old version's failures do not count");
    registry.report_classifier_failure(&status.sha256, "plugin trapped (panic)");
    let quarantined = registry.classifier().unwrap();
    assert_eq!((quarantined.state.as_str(), quarantined.quarantines), ("quarantined", 1));
    assert!(quarantined.quarantine.unwrap().reason.contains("panic"));
    assert!(registry.classifier_generation() > generation, "the stages see it");
    assert!(!registry.classifier_view().live.as_ref().unwrap().runnable);
    let exposition = metrics.encode();
    let state = |state: &str| {
        common::metric_samples(&exposition, "routewatch_plugin_state", &[("plugin", "stub"), ("state", state)])
    };
    assert_eq!((state("quarantined"), state("running")), (vec![1.0], vec![0.0]));

    common::wait_for("the backoff", Duration::from_secs(5), || {
        registry.tick();
        registry.classifier().unwrap().state == "running"
    });
    assert!(registry.classifier_view().live.as_ref().unwrap().runnable);
}
