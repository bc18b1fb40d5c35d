//! The random forest: a scikit-learn `RandomForestClassifier` exported as data by
//! `train/train.py` and evaluated exactly as scikit-learn evaluates it.

use serde::Deserialize;

/// Version of the model file format below.
pub const MODEL_FORMAT: u32 = 1;
/// Caps on a model, checked when it is read: a classifier component must stay small.
pub const MAX_TREES: usize = 100;
pub const MAX_DEPTH: usize = 12;
pub const MAX_MODEL_BYTES: usize = 4 << 20;
pub const MAX_CLASSES: usize = 64;
pub const MAX_NODES_PER_TREE: usize = 1 << (MAX_DEPTH + 1);

/// One fitted tree, scikit-learn's `tree_` arrays: node `i` splits on `feature[i]` at
/// `threshold[i]` (go `left[i]` when the value is at most the threshold, else `right[i]`); a
/// node with `left[i] == -1` is a leaf whose class probabilities are `value[i]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Tree {
    pub feature: Vec<i32>,
    pub threshold: Vec<f64>,
    pub left: Vec<i32>,
    pub right: Vec<i32>,
    /// Per node: the leaf's class distribution (normalised), empty for split nodes.
    pub value: Vec<Vec<f64>>,
}

/// A model file (`model/forest.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct Model {
    pub format: u32,
    /// Feature layout of the routewatch-incidents crate the model was trained on.
    pub layout: u32,
    pub n_features: usize,
    /// Class names in scikit-learn's `classes_` order.
    pub classes: Vec<String>,
    pub trees: Vec<Tree>,
}

/// Why a model cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelError(pub String);

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid forest model: {}", self.0)
    }
}

impl Model {
    /// Reads and checks a model: format, caps, and every index in range, so that evaluation
    /// cannot go out of bounds or loop.
    pub fn parse(json: &str) -> Result<Model, ModelError> {
        let bad = |m: String| Err(ModelError(m));
        if json.len() > MAX_MODEL_BYTES {
            return bad(format!("{} bytes, over the cap of {MAX_MODEL_BYTES}", json.len()));
        }
        let model: Model = serde_json::from_str(json).map_err(|e| ModelError(e.to_string()))?;
        if model.format != MODEL_FORMAT {
            return bad(format!("format {}, this build reads {MODEL_FORMAT}", model.format));
        }
        if model.trees.is_empty() || model.trees.len() > MAX_TREES {
            return bad(format!("{} trees; 1 to {MAX_TREES} allowed", model.trees.len()));
        }
        if model.classes.is_empty() || model.classes.len() > MAX_CLASSES || model.classes.iter().any(|c| c.len() > 64) {
            return bad("1 to 64 classes of at most 64 bytes".into());
        }
        for (t, tree) in model.trees.iter().enumerate() {
            let n = tree.feature.len();
            if n == 0
                || n > MAX_NODES_PER_TREE
                || [tree.threshold.len(), tree.left.len(), tree.right.len(), tree.value.len()] != [n; 4]
            {
                return bad(format!("tree {t}: node arrays of different lengths or over the cap"));
            }
            // Children always come after their parent in scikit-learn's depth-first layout;
            // requiring it rules out cycles. Depth is checked on the way.
            let mut depth = vec![0usize; n];
            for i in 0..n {
                if tree.left[i] == -1 {
                    if tree.value[i].len() != model.classes.len() || tree.value[i].iter().any(|p| !p.is_finite()) {
                        return bad(format!("tree {t} leaf {i}: not one finite probability per class"));
                    }
                    continue;
                }
                let (l, r) = (tree.left[i], tree.right[i]);
                let f = tree.feature[i];
                if l <= i as i32 || r <= i as i32 || l as usize >= n || r as usize >= n {
                    return bad(format!("tree {t} node {i}: children out of order or range"));
                }
                if f < 0 || f as usize >= model.n_features || !tree.threshold[i].is_finite() {
                    return bad(format!("tree {t} node {i}: feature or threshold out of range"));
                }
                for c in [l as usize, r as usize] {
                    depth[c] = depth[i] + 1;
                    if depth[c] > MAX_DEPTH {
                        return bad(format!("tree {t}: deeper than {MAX_DEPTH}"));
                    }
                }
            }
        }
        Ok(model)
    }

    /// Class probabilities for one feature vector (length `n_features`), as scikit-learn's
    /// `predict_proba`: the mean of the trees' leaf distributions. Values are compared as
    /// scikit-learn compares them, after rounding to `f32`.
    pub fn predict_proba(&self, x: &[f64]) -> Vec<f64> {
        let mut sum = vec![0.0; self.classes.len()];
        for tree in &self.trees {
            let mut i = 0usize;
            while tree.left[i] != -1 {
                let value = f64::from(x[tree.feature[i] as usize] as f32);
                i = if value <= tree.threshold[i] { tree.left[i] } else { tree.right[i] } as usize;
            }
            for (s, p) in sum.iter_mut().zip(&tree.value[i]) {
                *s += p;
            }
        }
        let n = self.trees.len() as f64;
        sum.iter_mut().for_each(|s| *s /= n);
        sum
    }
}

/// The top `k` of the classes that `keep` accepts, most likely first; ties go to the class
/// that comes first.
pub fn top(classes: &[String], proba: &[f64], k: usize, keep: impl Fn(&str) -> bool) -> Vec<(String, f64)> {
    let mut order: Vec<usize> = (0..proba.len()).filter(|&i| keep(&classes[i])).collect();
    order.sort_by(|&a, &b| proba[b].total_cmp(&proba[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|i| (classes[i].clone(), proba[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stump() -> String {
        // One split on feature 1 at 0.5, two classes.
        r#"{"format":1,"layout":1,"n_features":2,"classes":["a","b"],"trees":[
            {"feature":[1,-2,-2],"threshold":[0.5,-2,-2],"left":[1,-1,-1],"right":[2,-1,-1],
             "value":[[],[0.75,0.25],[0,1]]}]}"#
            .into()
    }

    #[test]
    fn evaluates_like_scikit_learn() {
        let m = Model::parse(&stump()).unwrap();
        assert_eq!(m.predict_proba(&[9.0, 0.5]), [0.75, 0.25], "at the threshold goes left");
        assert_eq!(m.predict_proba(&[9.0, 0.6]), [0.0, 1.0]);
        // 0.50000001 rounds to 0.5 in f32, as scikit-learn's float32 input does.
        assert_eq!(m.predict_proba(&[0.0, 0.500_000_01]), [0.75, 0.25]);
        let t = top(&m.classes, &[0.2, 0.2], 3, |_| true);
        assert_eq!(t, [("a".to_string(), 0.2), ("b".to_string(), 0.2)], "ties go to the first class");
        assert_eq!(top(&m.classes, &[0.7, 0.3], 3, |c| c != "a"), [("b".to_string(), 0.3)], "a class left out");
    }

    #[test]
    fn refuses_broken_models() {
        let broken = [
            stump().replace(r#""format":1"#, r#""format":2"#),
            stump().replace(r#""left":[1,-1,-1]"#, r#""left":[0,-1,-1]"#),
            stump().replace(r#""feature":[1,"#, r#""feature":[7,"#),
            stump().replace("[0.75,0.25]", "[0.75]"),
            stump().replace(r#""left":[1,-1,-1]"#, r#""left":[1,-1]"#),
            r#"{"format":1,"layout":1,"n_features":2,"classes":["a"],"trees":[]}"#.into(),
            "x".repeat(MAX_MODEL_BYTES + 1),
        ];
        for json in &broken {
            assert!(Model::parse(json).is_err(), "{}", &json[..json.len().min(80)]);
        }
    }

    /// The native build of the component's forest, every class: the parity set's
    /// probabilities within 1e-6 (the Wasm build is checked in host/tests/classifier_component.rs).
    #[test]
    fn matches_scikit_learn_on_the_parity_set_natively() {
        #[derive(Deserialize)]
        struct Parity {
            features: Vec<Vec<f64>>,
            proba: Vec<Vec<f64>>,
        }
        // At run time first: clones sharing a target directory share this compiled test.
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        let path = format!("{dir}/model/parity.json");
        let parity: Parity = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let m = Model::parse(crate::MODEL_JSON).unwrap();
        for (x, expected) in parity.features.iter().zip(&parity.proba) {
            let got = m.predict_proba(x);
            assert!(got.iter().zip(expected).all(|(a, b)| (a - b).abs() <= 1e-6), "{got:?} vs {expected:?}");
        }
    }

    #[test]
    fn the_committed_model_is_within_the_caps() {
        let m = Model::parse(crate::MODEL_JSON).expect("model/forest.json");
        assert!(m.trees.len() <= MAX_TREES);
        assert_eq!(m.n_features, routewatch_incidents::FEATURE_COUNT);
        assert_eq!(m.layout, routewatch_incidents::FEATURE_LAYOUT_VERSION);
    }
}
