//! Small numerical tools the fit needs: Nelder-Mead, a dense solver, Levinson-Durbin.

/// Minimises `f` from `start` with the Nelder-Mead simplex method (standard coefficients).
/// Returns the best point and its value. `f` may return infinity to mark infeasible points.
pub fn nelder_mead(f: impl Fn(&[f64]) -> f64, start: &[f64], step: f64, max_iter: usize, ftol: f64) -> (Vec<f64>, f64) {
    let n = start.len();
    if n == 0 {
        return (Vec::new(), f(start));
    }
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(n + 1);
    simplex.push((start.to_vec(), f(start)));
    for i in 0..n {
        let mut x = start.to_vec();
        x[i] += step;
        let fx = f(&x);
        simplex.push((x, fx));
    }
    let mut centroid = vec![0.0; n];
    let mut trial = vec![0.0; n];
    for _ in 0..max_iter {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (best, worst) = (simplex[0].1, simplex[n].1);
        if worst.is_finite() && (worst - best).abs() <= ftol * (best.abs() + 1e-300) {
            break;
        }
        centroid.iter_mut().for_each(|c| *c = 0.0);
        for (x, _) in &simplex[..n] {
            for (c, xi) in centroid.iter_mut().zip(x) {
                *c += xi / n as f64;
            }
        }
        let point = |coef: f64, trial: &mut Vec<f64>| {
            for ((t, c), w) in trial.iter_mut().zip(&centroid).zip(&simplex[n].0) {
                *t = c + coef * (w - c);
            }
        };
        point(-1.0, &mut trial);
        let reflected = f(&trial);
        if reflected < simplex[0].1 {
            let reflected_point = trial.clone();
            point(-2.0, &mut trial);
            let expanded = f(&trial);
            simplex[n] = if expanded < reflected { (trial.clone(), expanded) } else { (reflected_point, reflected) };
        } else if reflected < simplex[n - 1].1 {
            simplex[n] = (trial.clone(), reflected);
        } else {
            // Contract towards the better of the worst point and its reflection.
            let outside = reflected < simplex[n].1;
            point(if outside { -0.5 } else { 0.5 }, &mut trial);
            let contracted = f(&trial);
            if contracted < reflected.min(simplex[n].1) {
                simplex[n] = (trial.clone(), contracted);
            } else {
                let best = simplex[0].0.clone();
                for (x, fx) in simplex.iter_mut().skip(1) {
                    for (xi, bi) in x.iter_mut().zip(&best) {
                        *xi = bi + 0.5 * (*xi - bi);
                    }
                    *fx = f(x);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex.swap_remove(0)
}

/// Solves `a x = b` for a small dense system by Gaussian elimination with partial pivoting.
/// `a` is row-major `n x n`. Returns `None` if the system is singular.
pub fn solve(mut a: Vec<f64>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))?;
        if a[pivot * n + col].abs() < 1e-12 {
            return None;
        }
        if pivot != col {
            for k in 0..n {
                a.swap(pivot * n + k, col * n + k);
            }
            b.swap(pivot, col);
        }
        for row in col + 1..n {
            let factor = a[row * n + col] / a[col * n + col];
            for k in col..n {
                a[row * n + k] -= factor * a[col * n + k];
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row * n + k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row * n + row];
    }
    Some(x)
}

/// Least squares `min |X b - y|` through the normal equations, with a whisper of ridge so a
/// collinear design still gives an answer. `x` holds one row per observation.
pub fn least_squares(x: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let k = x.first()?.len();
    let mut xtx = vec![0.0; k * k];
    let mut xty = vec![0.0; k];
    for (row, &target) in x.iter().zip(y) {
        for i in 0..k {
            xty[i] += row[i] * target;
            for j in 0..k {
                xtx[i * k + j] += row[i] * row[j];
            }
        }
    }
    for i in 0..k {
        xtx[i * k + i] += 1e-9 * (1.0 + xtx[i * k + i]);
    }
    solve(xtx, xty)
}

/// AR coefficients of order `m` from autocovariances `acov[0..=m]` (Levinson-Durbin).
/// The result is always stationary when `acov` comes from a real series.
pub fn levinson_durbin(acov: &[f64], m: usize) -> Vec<f64> {
    let mut phi = vec![0.0; m];
    let mut prev = vec![0.0; m];
    let mut err = acov[0];
    for k in 0..m {
        if err <= 0.0 {
            break;
        }
        let acc: f64 = (0..k).map(|j| prev[j] * acov[k - j]).sum();
        let reflection = (acov[k + 1] - acc) / err;
        phi[k] = reflection;
        for j in 0..k {
            phi[j] = prev[j] - reflection * prev[k - 1 - j];
        }
        err *= 1.0 - reflection * reflection;
        prev[..=k].copy_from_slice(&phi[..=k]);
    }
    phi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nelder_mead_finds_the_rosenbrock_minimum() {
        let rosen = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let (x, fx) = nelder_mead(rosen, &[-1.2, 1.0], 0.1, 5000, 1e-14);
        assert!(fx < 1e-8, "{fx}");
        assert!((x[0] - 1.0).abs() < 1e-3 && (x[1] - 1.0).abs() < 1e-3, "{x:?}");
    }

    #[test]
    fn solve_and_least_squares_recover_known_coefficients() {
        let x = solve(vec![2.0, 1.0, 1.0, 3.0], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
        let rows: Vec<Vec<f64>> = (0..10).map(|i| vec![1.0, i as f64]).collect();
        let y: Vec<f64> = (0..10).map(|i| 2.0 + 0.5 * i as f64).collect();
        let b = least_squares(&rows, &y).unwrap();
        assert!((b[0] - 2.0).abs() < 1e-6 && (b[1] - 0.5).abs() < 1e-6, "{b:?}");
    }

    #[test]
    fn levinson_durbin_inverts_ar1_autocovariances() {
        // AR(1) with phi 0.6 has autocovariances proportional to 0.6^k.
        let acov: Vec<f64> = (0..4).map(|k| 0.6f64.powi(k)).collect();
        let phi = levinson_durbin(&acov, 3);
        assert!((phi[0] - 0.6).abs() < 1e-12 && phi[1].abs() < 1e-12 && phi[2].abs() < 1e-12, "{phi:?}");
    }
}
