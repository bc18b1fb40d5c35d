//! Agreement with a reference implementation: statsmodels' ARIMA (exact maximum likelihood)
//! on series simulated and fitted by `reference/make_fixtures.py`, whose output is committed.
//!
//! We fit by conditional sum of squares, which converges to the same estimates as exact
//! likelihood as the series grows; on these 2,000-point series we require coefficients and
//! mean within 0.02, the innovation variance within 2% and the one-step forecast within 0.02
//! innovation standard deviations.

use routewatch_arima::model::{Filter, Order, Precision, fit_order};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixtures {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    order: [usize; 3],
    series: Vec<f64>,
    mean: f64,
    ar: Vec<f64>,
    ma: Vec<f64>,
    sigma2: f64,
    forecast: f64,
}

const COEFFICIENT_TOLERANCE: f64 = 0.02;
const SIGMA2_RELATIVE_TOLERANCE: f64 = 0.02;
const FORECAST_TOLERANCE_SD: f64 = 0.02;

#[test]
fn css_fit_agrees_with_statsmodels() {
    let fixtures: Fixtures =
        serde_json::from_str(include_str!("../reference/fixtures.json")).expect("fixtures.json parses");
    assert!(fixtures.cases.len() >= 4);
    for case in &fixtures.cases {
        let [p, d, q] = case.order;
        let fit = fit_order(&case.series, Order { p, d, q }, Precision::Precise).expect("series is long enough");
        let name = &case.name;
        let close = |ours: f64, theirs: f64, what: &str| {
            assert!((ours - theirs).abs() <= COEFFICIENT_TOLERANCE, "{name}: {what} {ours} vs statsmodels {theirs}");
        };
        close(fit.mean, case.mean, "mean");
        for (i, theirs) in case.ar.iter().enumerate() {
            close(fit.ar[i], *theirs, "ar");
        }
        for (j, theirs) in case.ma.iter().enumerate() {
            close(fit.ma[j], *theirs, "ma");
        }
        let relative = (fit.sigma2 - case.sigma2).abs() / case.sigma2;
        assert!(relative <= SIGMA2_RELATIVE_TOLERANCE, "{name}: sigma2 {} vs {}", fit.sigma2, case.sigma2);
        let forecast = Filter::warm(&fit, case.series.iter().copied()).forecast(&fit).y;
        let off = (forecast - case.forecast).abs() / case.sigma2.sqrt();
        assert!(off <= FORECAST_TOLERANCE_SD, "{name}: forecast {forecast} vs {} ({off:.4} sd)", case.forecast);
    }
}
