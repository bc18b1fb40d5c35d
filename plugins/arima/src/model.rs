//! ARIMA(p, d, q) fitting by conditional sum of squares, order selection by AICc, and the
//! one-step forecast filter.
//!
//! Conventions follow statsmodels and R: with `w` the `d`-times differenced series,
//! `w[t] - mean = sum(ar[i] * (w[t-1-i] - mean)) + e[t] + sum(ma[j] * e[t-1-j])`, and a mean
//! is estimated only when `d == 0`.

use serde::{Deserialize, Serialize};

use crate::optimize::{least_squares, levinson_durbin, nelder_mead};

/// Largest AR and MA orders supported (the closed-form stationarity checks cover order 2).
pub const MAX_ORDER: usize = 2;

/// Largest degree of differencing supported.
pub const MAX_D: usize = 1;

/// The 5% critical value of the KPSS level-stationarity statistic.
const KPSS_CRITICAL_5PCT: f64 = 0.463;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub p: usize,
    pub d: usize,
    pub q: usize,
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ARIMA({},{},{})", self.p, self.d, self.q)
    }
}

/// A fitted model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub order: Order,
    /// Mean of the differenced series; always 0 when `d > 0`.
    pub mean: f64,
    pub ar: [f64; MAX_ORDER],
    pub ma: [f64; MAX_ORDER],
    /// Innovation variance: conditional sum of squares over the residuals used.
    pub sigma2: f64,
    /// Corrected Akaike information criterion of the conditional likelihood.
    pub aicc: f64,
}

/// Differences a series `d` times.
pub fn difference(y: &[f64], d: usize) -> Vec<f64> {
    let mut w = y.to_vec();
    for _ in 0..d {
        w = w.windows(2).map(|pair| pair[1] - pair[0]).collect();
    }
    w
}

/// Largest modulus allowed for the inverse roots of the AR polynomial (stationarity).
const AR_ROOT_LIMIT: f64 = 0.999;
/// Largest modulus allowed for the inverse roots of the MA polynomial (invertibility). Kept
/// well inside the unit circle: an MA model near the boundary remembers every innovation for
/// hundreds of steps, so one outlier would echo through the forecasts long after it passed.
const MA_ROOT_LIMIT: f64 = 0.95;

/// Whether the inverse roots of `1 - a[0] z - a[1] z^2` (the roots of `x^2 - a[0] x - a[1]`)
/// all lie within `limit` of the origin.
fn roots_within(a: &[f64], limit: f64) -> bool {
    match *a {
        [] => true,
        [a1] => a1.abs() <= limit,
        [a1, a2] => {
            let disc = a1 * a1 + 4.0 * a2;
            if disc < 0.0 {
                // Complex pair: modulus squared is the constant term.
                -a2 <= limit * limit
            } else {
                (a1.abs() + disc.sqrt()) / 2.0 <= limit
            }
        }
        _ => unreachable!("orders above {MAX_ORDER} are refused by the config"),
    }
}

fn stationary(ar: &[f64]) -> bool {
    roots_within(ar, AR_ROOT_LIMIT)
}

/// Whether the MA polynomial `1 + ma[0] z + ma[1] z^2` is safely invertible.
fn invertible(ma: &[f64]) -> bool {
    let negated: Vec<f64> = ma.iter().map(|m| -m).collect();
    roots_within(&negated, MA_ROOT_LIMIT)
}

/// Conditional sum of squares: residuals from `t = p` on, with earlier residuals taken as 0.
/// Writes the residuals into `resid` (zeros for `t < p`) when given one.
///
/// Coefficients past the order must be zero; the recursion then always runs with two lags of
/// each kind, branch-free, which is what makes refitting cheap.
pub fn css(
    w: &[f64],
    p: usize,
    q: usize,
    mean: f64,
    ar: &[f64; MAX_ORDER],
    ma: &[f64; MAX_ORDER],
    mut resid: Option<&mut Vec<f64>>,
) -> f64 {
    debug_assert!(ar[p..].iter().chain(&ma[q..]).all(|c| *c == 0.0), "coefficients past the order");
    if let Some(r) = resid.as_deref_mut() {
        r.clear();
        r.resize(p.min(w.len()), 0.0);
    }
    if w.len() <= p {
        return 0.0;
    }
    let lag = |i: usize| if p > i { w[p - 1 - i] - mean } else { 0.0 };
    let (mut w1, mut w2) = (lag(0), lag(1));
    let (mut e1, mut e2) = (0.0, 0.0);
    let mut ss = 0.0;
    let mut step = |value: f64| {
        let centred = value - mean;
        let err = centred - (ar[0] * w1 + ar[1] * w2 + ma[0] * e1 + ma[1] * e2);
        ss += err * err;
        (w2, w1) = (w1, centred);
        (e2, e1) = (e1, err);
        err
    };
    match resid {
        Some(r) => r.extend(w[p..].iter().map(|&v| step(v))),
        None => {
            // Four steps per loop turn: a sandboxed plugin pays an interruption check on every
            // loop turn, and this loop is where refits spend their time.
            let mut quads = w[p..].chunks_exact(4);
            for quad in &mut quads {
                step(quad[0]);
                step(quad[1]);
                step(quad[2]);
                step(quad[3]);
            }
            quads.remainder().iter().for_each(|&v| {
                step(v);
            });
        }
    }
    ss
}

/// Whether a series is level-stationary by the KPSS test at 5%, with the lag truncation
/// R's `forecast::ndiffs` uses (`trunc(3 * sqrt(n) / 13)`).
pub fn kpss_stationary(y: &[f64]) -> bool {
    let n = y.len();
    if n < 8 {
        return true;
    }
    let mean = y.iter().sum::<f64>() / n as f64;
    let e: Vec<f64> = y.iter().map(|v| v - mean).collect();
    let gamma = |lag: usize| e[lag..].iter().zip(&e).map(|(a, b)| a * b).sum::<f64>() / n as f64;
    let lags = (3.0 * (n as f64).sqrt() / 13.0) as usize;
    let mut long_run = gamma(0);
    for lag in 1..=lags {
        long_run += 2.0 * (1.0 - lag as f64 / (lags as f64 + 1.0)) * gamma(lag);
    }
    if long_run <= 0.0 {
        return true;
    }
    let mut partial = 0.0;
    let mut sum_sq = 0.0;
    for v in &e {
        partial += v;
        sum_sq += partial * partial;
    }
    sum_sq / (n as f64 * n as f64 * long_run) <= KPSS_CRITICAL_5PCT
}

/// How hard [`fit_order`] works on the CSS optimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// The Hannan-Rissanen linear estimate only: cheap, for screening orders.
    Screen,
    /// Nelder-Mead to a relative CSS change of 1e-8: what online refits use.
    Online,
    /// Nelder-Mead to 1e-13: for comparisons with reference implementations.
    Precise,
}

/// Chooses `d` by repeated KPSS tests, then `p` and `q` by AICc over the grid up to the given
/// maxima, and returns the chosen model fitted by CSS. `None` if the series is too short.
pub fn auto_fit(y: &[f64], max_p: usize, max_d: usize, max_q: usize) -> Option<Fit> {
    let mut d = 0;
    while d < max_d.min(MAX_D) && !kpss_stationary(&difference(y, d)) {
        d += 1;
    }
    let mut best: Option<Fit> = None;
    for p in 0..=max_p.min(MAX_ORDER) {
        for q in 0..=max_q.min(MAX_ORDER) {
            // Screen each order with a cheap Hannan-Rissanen fit; refine only the winner.
            let Some(candidate) = fit_order(y, Order { p, d, q }, Precision::Screen) else { continue };
            if best.as_ref().is_none_or(|b| candidate.aicc < b.aicc) {
                best = Some(candidate);
            }
        }
    }
    fit_order(y, best?.order, Precision::Online)
}

/// Fits one order: a Hannan-Rissanen estimate, polished (unless screening) by minimising the
/// CSS with Nelder-Mead.
pub fn fit_order(y: &[f64], order: Order, precision: Precision) -> Option<Fit> {
    let Order { p, d, q } = order;
    let w = difference(y, d);
    let n = w.len();
    let k = p + q + usize::from(d == 0) + 1;
    if n < (p + q + 1) * 4 + k + 2 {
        return None;
    }
    // Work on a standardised series so the optimiser's steps suit every metric's units.
    // Without a mean term (d > 0) the series is only scaled, not centred.
    let with_mean = d == 0;
    let centre = if with_mean { w.iter().sum::<f64>() / n as f64 } else { 0.0 };
    let spread = (w.iter().map(|v| (v - centre).powi(2)).sum::<f64>() / n as f64).sqrt();
    if spread <= 1e-12 * (1.0 + centre.abs()) {
        // A constant series: nothing to model but its level.
        let mean = if d == 0 { centre } else { 0.0 };
        return Some(Fit { order, mean, ar: [0.0; 2], ma: [0.0; 2], sigma2: 0.0, aicc: f64::NEG_INFINITY });
    }
    let z: Vec<f64> = w.iter().map(|v| (v - centre) / spread).collect();

    let (mut ar, mut ma) = hannan_rissanen(&z, p, q);
    shrink_until(&mut ar[..p], stationary);
    shrink_until(&mut ma[..q], invertible);
    let mut mean_z = 0.0;

    let tolerance = match precision {
        Precision::Screen => None,
        Precision::Online => Some((1e-8, 150)),
        Precision::Precise => Some((1e-13, 400)),
    };
    if let Some((ftol, iterations_per_parameter)) = tolerance {
        let pack = |m: f64, ar: &[f64], ma: &[f64]| -> Vec<f64> {
            let mut x = Vec::with_capacity(k);
            if with_mean {
                x.push(m);
            }
            x.extend_from_slice(&ar[..p]);
            x.extend_from_slice(&ma[..q]);
            x
        };
        let unpack = |x: &[f64]| -> (f64, [f64; 2], [f64; 2]) {
            let (m, rest) = if with_mean { (x[0], &x[1..]) } else { (0.0, x) };
            let mut a = [0.0; 2];
            let mut b = [0.0; 2];
            a[..p].copy_from_slice(&rest[..p]);
            b[..q].copy_from_slice(&rest[p..p + q]);
            (m, a, b)
        };
        let objective = |x: &[f64]| {
            let (m, a, b) = unpack(x);
            if !stationary(&a[..p]) || !invertible(&b[..q]) {
                return f64::INFINITY;
            }
            css(&z, p, q, m, &a, &b, None)
        };
        let start = pack(0.0, &ar, &ma);
        if !start.is_empty() {
            let (x, _) = nelder_mead(objective, &start, 0.1, iterations_per_parameter * start.len(), ftol);
            (mean_z, ar, ma) = unpack(&x);
        }
    }

    let ss = css(&z, p, q, mean_z, &ar, &ma, None);
    let used = (n - p) as f64;
    let sigma2_z = ss / used;
    let sigma2 = sigma2_z * spread * spread;
    let log_lik = -0.5 * used * ((std::f64::consts::TAU * sigma2).ln() + 1.0);
    let k = k as f64;
    let aicc = -2.0 * log_lik + 2.0 * k + 2.0 * k * (k + 1.0) / (used - k - 1.0).max(1.0);
    let mean = if with_mean { centre + spread * mean_z } else { 0.0 };
    Some(Fit { order, mean, ar, ma, sigma2, aicc })
}

/// Hannan-Rissanen: estimate innovations with a long AR, then regress on lags of the series
/// and of those innovations. `z` is standardised (mean 0).
fn hannan_rissanen(z: &[f64], p: usize, q: usize) -> ([f64; 2], [f64; 2]) {
    let mut ar = [0.0; 2];
    let mut ma = [0.0; 2];
    if p + q == 0 {
        return (ar, ma);
    }
    let n = z.len();
    let gamma = |lag: usize| z[lag..].iter().zip(z).map(|(a, b)| a * b).sum::<f64>() / n as f64;
    let innovations: Vec<f64> = if q > 0 {
        let m = (2 * (p + q)).max(6).min(n / 4);
        let acov: Vec<f64> = (0..=m).map(gamma).collect();
        let long_ar = levinson_durbin(&acov, m);
        (0..n)
            .map(|t| if t < m { 0.0 } else { z[t] - (0..m).map(|i| long_ar[i] * z[t - 1 - i]).sum::<f64>() })
            .collect()
    } else {
        Vec::new()
    };
    let start = if q > 0 { (2 * (p + q)).max(6).min(n / 4) + q } else { p };
    let rows: Vec<Vec<f64>> = (start..n)
        .map(|t| (0..p).map(|i| z[t - 1 - i]).chain((0..q).map(|j| innovations[t - 1 - j])).collect())
        .collect();
    if let Some(beta) = least_squares(&rows, &z[start..]) {
        ar[..p].copy_from_slice(&beta[..p]);
        ma[..q].copy_from_slice(&beta[p..p + q]);
    }
    (ar, ma)
}

/// Pulls coefficients towards zero until `ok` holds (it always does at zero).
fn shrink_until(coef: &mut [f64], ok: fn(&[f64]) -> bool) {
    for _ in 0..64 {
        if ok(coef) {
            return;
        }
        coef.iter_mut().for_each(|c| *c *= 0.9);
    }
    coef.iter_mut().for_each(|c| *c = 0.0);
}

/// The one-step forecast state of a fitted model: recent values and innovations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Recent differenced values, newest first.
    w_lags: [f64; MAX_ORDER],
    /// Recent innovations, newest first.
    e_lags: [f64; MAX_ORDER],
    /// Last level (undifferenced), for `d = 1`.
    last: f64,
}

/// A one-step forecast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Forecast of the differenced value.
    pub w: f64,
    /// Forecast of the value itself.
    pub y: f64,
}

impl Filter {
    /// Runs the model over `history` (oldest first) to reach its state at the end.
    pub fn warm(fit: &Fit, history: impl Iterator<Item = f64>) -> Filter {
        let mut filter = Filter { w_lags: [0.0; 2], e_lags: [0.0; 2], last: f64::NAN };
        let mut seen = 0usize;
        for y in history {
            if fit.order.d == 1 && seen == 0 {
                filter.last = y;
                seen += 1;
                continue;
            }
            let forecast = filter.forecast(fit);
            // Innovations are conditioned on zero before `p` observations exist, as in CSS.
            let enough = seen - fit.order.d >= fit.order.p;
            let w = if fit.order.d == 1 { y - filter.last } else { y };
            let e = if enough { w - forecast.w } else { 0.0 };
            filter.push(w, e, y);
            seen += 1;
        }
        filter
    }

    pub fn forecast(&self, fit: &Fit) -> Forecast {
        // Coefficients past the order are zero, so all lags can take part.
        let [w1, w2] = self.w_lags;
        let [e1, e2] = self.e_lags;
        let w = fit.mean + fit.ar[0] * (w1 - fit.mean) + fit.ar[1] * (w2 - fit.mean) + fit.ma[0] * e1 + fit.ma[1] * e2;
        let y = if fit.order.d == 1 { self.last + w } else { w };
        Forecast { w, y }
    }

    /// Advances the state by one observation `y` whose differenced value is `w` and whose
    /// innovation was `e`.
    pub fn push(&mut self, w: f64, e: f64, y: f64) {
        self.w_lags = [w, self.w_lags[0]];
        self.e_lags = [e, self.e_lags[0]];
        self.last = y;
    }

    /// The differenced value of a new level `y`.
    pub fn differenced(&self, fit: &Fit, y: f64) -> f64 {
        if fit.order.d == 1 { y - self.last } else { y }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, Normal};

    fn arma(n: usize, mean: f64, ar: &[f64], ma: &[f64], seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let noise = Normal::new(0.0, 1.0).unwrap();
        let burn = 200;
        let mut e = vec![0.0; n + burn];
        let mut w = vec![0.0; n + burn];
        for t in 0..n + burn {
            e[t] = noise.sample(&mut rng);
            w[t] = e[t];
            for (i, a) in ar.iter().enumerate() {
                if t > i {
                    w[t] += a * w[t - 1 - i];
                }
            }
            for (j, m) in ma.iter().enumerate() {
                if t > j {
                    w[t] += m * e[t - 1 - j];
                }
            }
        }
        w[burn..].iter().map(|v| v + mean).collect()
    }

    #[test]
    fn recovers_arma_coefficients() {
        let y = arma(3000, 5.0, &[0.6, -0.2], &[0.3], 7);
        let fit = fit_order(&y, Order { p: 2, d: 0, q: 1 }, Precision::Precise).unwrap();
        assert!((fit.ar[0] - 0.6).abs() < 0.08, "{fit:?}");
        assert!((fit.ar[1] + 0.2).abs() < 0.08, "{fit:?}");
        assert!((fit.ma[0] - 0.3).abs() < 0.08, "{fit:?}");
        assert!((fit.mean - 5.0).abs() < 0.15, "{fit:?}");
        assert!((fit.sigma2 - 1.0).abs() < 0.08, "{fit:?}");
    }

    #[test]
    fn auto_fit_differences_a_random_walk_and_not_noise() {
        let steps = arma(500, 0.0, &[], &[], 3);
        let walk: Vec<f64> = steps
            .iter()
            .scan(0.0, |s, v| {
                *s += v;
                Some(*s)
            })
            .collect();
        assert_eq!(auto_fit(&walk, 2, 1, 2).unwrap().order.d, 1);
        assert_eq!(auto_fit(&steps, 2, 1, 2).unwrap().order.d, 0);
    }

    #[test]
    fn auto_fit_prefers_the_true_order_family() {
        let y = arma(2000, 0.0, &[0.7], &[], 11);
        let fit = auto_fit(&y, 2, 1, 2).unwrap();
        assert!(fit.order.p >= 1, "{fit:?}");
        assert!((fit.ar[0] - 0.7).abs() < 0.15 || fit.order.p + fit.order.q > 1, "{fit:?}");
    }

    #[test]
    fn filter_matches_css_residuals() {
        let y = arma(400, 2.0, &[0.5], &[0.4], 5);
        let fit = fit_order(&y, Order { p: 1, d: 0, q: 1 }, Precision::Precise).unwrap();
        let mut resid = Vec::new();
        css(&y, 1, 1, fit.mean, &fit.ar, &fit.ma, Some(&mut resid));
        let filter = Filter::warm(&fit, y[..399].iter().copied());
        let forecast = filter.forecast(&fit);
        assert!((y[399] - forecast.y - resid[399]).abs() < 1e-9);
    }

    #[test]
    fn root_limits_match_known_polynomials() {
        assert!(stationary(&[0.5, 0.3]));
        assert!(!stationary(&[1.2, -0.2])); // a unit root: (1 - z)(1 - 0.2z)
        assert!(stationary(&[1.6, -0.8])); // complex pair of modulus sqrt(0.8)
        assert!(!stationary(&[1.9, -1.0])); // complex pair on the unit circle
        assert!(invertible(&[0.5]) && !invertible(&[-0.97]));
        assert!(!invertible(&[2.0, 1.0])); // (1 + z)^2
    }

    #[test]
    fn constant_series_fit_is_degenerate_but_usable() {
        let fit = auto_fit(&[4.0; 100], 2, 1, 2).unwrap();
        assert_eq!(fit.sigma2, 0.0);
        let filter = Filter::warm(&fit, [4.0; 100].into_iter());
        assert_eq!(filter.forecast(&fit).y, 4.0);
    }
}
