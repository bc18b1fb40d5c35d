//! The model as tract runs it must compute what onnxruntime computed for the same inputs
//! (`fixtures/onnx_reference.json`, written by `train/train.py` with the committed model).

use routewatch_lstm::model::{HIDDEN, Model, WIDTH};

#[test]
fn tract_matches_onnxruntime_step_by_step() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/onnx_reference.json")).expect("fixture parses");
    let grid = |name: &str| -> Vec<Vec<Vec<f32>>> { serde_json::from_value(fixture[name].clone()).expect(name) };
    let (x, forecast, h_ref, c_ref) = (grid("x"), grid("forecast"), grid("h"), grid("c"));
    let batch = x[0].len();
    let mut model = Model::load().expect("embedded model loads");
    let mut h = vec![0f32; batch * HIDDEN];
    let mut c = vec![0f32; batch * HIDDEN];
    let mut worst = 0f32;
    for t in 0..x.len() {
        let input: Vec<f32> = x[t].iter().flatten().copied().collect();
        assert_eq!(input.len(), batch * WIDTH);
        let step = model.step(batch, &input, &h, &c).expect("step runs");
        for (ours, theirs) in [(&step.forecast, &forecast[t]), (&step.h, &h_ref[t]), (&step.c, &c_ref[t])] {
            let theirs: Vec<f32> = theirs.iter().flatten().copied().collect();
            assert_eq!(ours.len(), theirs.len());
            for (a, b) in ours.iter().zip(&theirs) {
                worst = worst.max((a - b).abs());
            }
        }
        h = step.h;
        c = step.c;
    }
    assert!(worst < 1e-4, "largest difference from onnxruntime: {worst}");
}

#[test]
fn one_call_for_many_routers_equals_one_call_each() {
    let mut model = Model::load().unwrap();
    let batch = 7;
    let x: Vec<f32> = (0..batch * WIDTH).map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0).collect();
    let h: Vec<f32> = (0..batch * HIDDEN).map(|i| ((i * 13 % 11) as f32 - 5.0) / 10.0).collect();
    let c: Vec<f32> = h.iter().map(|v| -v).collect();
    let all = model.step(batch, &x, &h, &c).unwrap();
    for r in 0..batch {
        let one = model
            .step(1, &x[r * WIDTH..(r + 1) * WIDTH], &h[r * HIDDEN..(r + 1) * HIDDEN], &c[r * HIDDEN..(r + 1) * HIDDEN])
            .unwrap();
        for (a, b) in one.forecast.iter().zip(&all.forecast[r * WIDTH..(r + 1) * WIDTH]) {
            assert!((a - b).abs() < 1e-5, "router {r}: {a} vs {b}");
        }
    }
}
