//! Saturating power law metric(N) = a·N^(−b) + c, fitted by Levenberg–Marquardt.
//!
//! Why our own 3-parameter LM instead of the `levenberg-marquardt` crate: that crate works
//! on nalgebra matrices, a second linear-algebra stack beside faer for a 3 × 3 system; the
//! whole algorithm here is ~60 lines and unit-tested on a known answer.
//!
//! - Start: for b on a grid (0.05 … 3), (a, c) by linear least squares (the model is linear
//!   in a and c for fixed b); the best grid point seeds LM. This handles decreasing (a > 0,
//!   FID) and increasing (a < 0, precision) curves alike.
//! - LM (Marquardt's scaling; steps leaving 0 < b ≤ 10 are rejected): solve (JᵀWJ + λ·diag(JᵀWJ)) δ = JᵀW r; accept and λ /= 3 if the
//!   weighted residual sum drops, else λ *= 4; stop when the relative drop < 1e-12 or after
//!   200 iterations. Weights W = 1/σᵢ² with σᵢ from the CI half-width / 1.96 when every
//!   point has a CI, else 1.
//! - Uncertainty: cov = s²·(JᵀWJ)⁻¹ at the optimum with s² = SSR/(n − 3) (scipy's
//!   `curve_fit` with `absolute_sigma=False`); the ± values are √diag(cov). With n = 3 the
//!   fit is exact and no uncertainty is given.
//! - Samples needed for metric ≤ X (lower is better) or ≥ X (higher is better):
//!   N* = ((X − c)/a)^(−1/b) when that is positive and finite; it is reported as "within the
//!   fitted range" only when N* ≤ the largest fitted N, else as an extrapolation. Its ± is
//!   the delta method with a numerical gradient.

use anyhow::{bail, Result};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PowerLaw {
    pub a: f64,
    pub b: f64,
    pub c: f64,
}

impl PowerLaw {
    pub fn eval(&self, n: f64) -> f64 {
        self.a * n.powf(-self.b) + self.c
    }

    /// N where the curve crosses `x` (None: never, for these parameters).
    pub fn crossing(&self, x: f64) -> Option<f64> {
        let r = (x - self.c) / self.a;
        if r.is_nan() || r <= 0.0 || self.b <= 0.0 {
            return None;
        }
        let n = r.powf(-1.0 / self.b);
        (n.is_finite() && n > 0.0).then_some(n)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub params: PowerLaw,
    /// √diag(cov) of (a, b, c); None when n = 3 (exact fit) or the normal matrix is singular.
    pub stderr: Option<[f64; 3]>,
    #[serde(skip)]
    pub cov: Option<[[f64; 3]; 3]>,
    pub n_points: usize,
    pub n_min: f64,
    pub n_max: f64,
    /// Weighted residual sum of squares at the optimum.
    pub ssr: f64,
    pub iterations: usize,
}

/// The answer to "how many samples for metric ≤ X (or ≥ X)".
#[derive(Debug, Clone, Serialize)]
pub struct Needed {
    pub target: f64,
    pub lower_is_better: bool,
    /// Crossing point of the fitted curve, if it crosses at all.
    pub n: Option<f64>,
    pub n_stderr: Option<f64>,
    /// N ≤ the largest fitted N.
    pub within_range: bool,
    /// Already met at the smallest fitted N.
    pub met_at_min: bool,
}

/// Largest exponent the fit may take.
const B_MAX: f64 = 10.0;

fn jac(p: &PowerLaw, n: f64) -> [f64; 3] {
    let t = n.powf(-p.b);
    [t, -p.a * n.ln() * t, 1.0]
}

fn solve3(m: [[f64; 3]; 3], v: [f64; 3]) -> Option<[f64; 3]> {
    // Gaussian elimination with partial pivoting.
    let mut a = [[0.0; 4]; 3];
    for i in 0..3 {
        a[i][..3].copy_from_slice(&m[i]);
        a[i][3] = v[i];
    }
    for col in 0..3 {
        let piv = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, piv);
        for r in 0..3 {
            if r != col {
                let f = a[r][col] / a[col][col];
                let pivot = a[col];
                for (v, p) in a[r].iter_mut().zip(pivot).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    let x = [a[0][3] / a[0][0], a[1][3] / a[1][1], a[2][3] / a[2][2]];
    x.iter().all(|v| v.is_finite()).then_some(x)
}

fn inverse3(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let mut inv = [[0.0; 3]; 3];
    for j in 0..3 {
        let mut e = [0.0; 3];
        e[j] = 1.0;
        let col = solve3(m, e)?;
        for i in 0..3 {
            inv[i][j] = col[i];
        }
    }
    Some(inv)
}

fn ssr(p: &PowerLaw, n: &[f64], y: &[f64], w: &[f64]) -> f64 {
    n.iter()
        .zip(y)
        .zip(w)
        .map(|((&n, &y), &w)| w * (y - p.eval(n)).powi(2))
        .sum()
}

/// Normal matrix JᵀWJ and gradient JᵀW r.
fn normal(p: &PowerLaw, n: &[f64], y: &[f64], w: &[f64]) -> ([[f64; 3]; 3], [f64; 3]) {
    let mut jtj = [[0.0; 3]; 3];
    let mut jtr = [0.0; 3];
    for ((&n, &y), &w) in n.iter().zip(y).zip(w) {
        let j = jac(p, n);
        let r = y - p.eval(n);
        for a in 0..3 {
            jtr[a] += w * j[a] * r;
            for b in 0..3 {
                jtj[a][b] += w * j[a] * j[b];
            }
        }
    }
    (jtj, jtr)
}

/// Fit a·N^(−b) + c to (n, y), with optional standard deviations per point.
pub fn fit(n: &[f64], y: &[f64], sigma: Option<&[f64]>) -> Result<Fit> {
    if n.len() != y.len() {
        bail!("fit: {} N values but {} metric values", n.len(), y.len());
    }
    let mut distinct: Vec<f64> = n.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() < 3 {
        bail!(
            "a power-law fit needs at least 3 distinct training-sample counts N, got {}",
            distinct.len()
        );
    }
    if n.iter().chain(y).any(|v| !v.is_finite()) || n.iter().any(|&v| v <= 0.0) {
        bail!("fit: N must be positive and every value finite");
    }
    let w: Vec<f64> = match sigma {
        Some(s) if s.len() == n.len() && s.iter().all(|v| v.is_finite() && *v > 0.0) => {
            s.iter().map(|s| 1.0 / (s * s)).collect()
        }
        _ => vec![1.0; n.len()],
    };
    // Grid start: linear LS in (a, c) for fixed b.
    let mut best: Option<(f64, PowerLaw)> = None;
    for k in 1..=60 {
        let b = 0.05 * k as f64;
        let (mut s_tt, mut s_t, mut s_1, mut s_ty, mut s_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for ((&n, &y), &w) in n.iter().zip(y).zip(&w) {
            let t = n.powf(-b);
            s_tt += w * t * t;
            s_t += w * t;
            s_1 += w;
            s_ty += w * t * y;
            s_y += w * y;
        }
        let det = s_tt * s_1 - s_t * s_t;
        if det.abs() < 1e-300 {
            continue;
        }
        let a = (s_ty * s_1 - s_t * s_y) / det;
        let c = (s_tt * s_y - s_t * s_ty) / det;
        let p = PowerLaw { a, b, c };
        let e = ssr(&p, n, y, &w);
        if e.is_finite() && best.as_ref().is_none_or(|(be, _)| e < *be) {
            best = Some((e, p));
        }
    }
    let (mut cur, mut p) = best.ok_or_else(|| anyhow::anyhow!("fit: no starting point"))?;
    let mut lambda = 1e-3;
    let mut iterations = 0;
    for _ in 0..200 {
        iterations += 1;
        let (jtj, jtr) = normal(&p, n, y, &w);
        let mut improved = false;
        for _ in 0..30 {
            let mut m = jtj;
            for (i, row) in m.iter_mut().enumerate() {
                row[i] += lambda * jtj[i][i].max(1e-300);
            }
            let Some(d) = solve3(m, jtr) else {
                lambda *= 4.0;
                continue;
            };
            let q = PowerLaw {
                a: p.a + d[0],
                b: p.b + d[1],
                c: p.c + d[2],
            };
            let e = ssr(&q, n, y, &w);
            // b stays in (0, B_MAX]: b ≤ 0 is not a saturating curve.
            if e.is_finite() && e < cur && q.b > 0.0 && q.b <= B_MAX {
                let drop = (cur - e) / cur.max(1e-300);
                p = q;
                cur = e;
                lambda = (lambda / 3.0).max(1e-12);
                improved = drop > 1e-12;
                break;
            }
            lambda *= 4.0;
        }
        if !improved {
            break;
        }
    }
    let dof = n.len() as f64 - 3.0;
    let (jtj, _) = normal(&p, n, y, &w);
    let cov = if dof > 0.0 {
        inverse3(jtj).map(|inv| {
            let s2 = cur / dof;
            let mut c = inv;
            for row in c.iter_mut() {
                for v in row.iter_mut() {
                    *v *= s2;
                }
            }
            c
        })
    } else {
        None
    };
    let stderr = cov.map(|c| {
        [
            c[0][0].max(0.0).sqrt(),
            c[1][1].max(0.0).sqrt(),
            c[2][2].max(0.0).sqrt(),
        ]
    });
    Ok(Fit {
        params: p,
        stderr,
        cov,
        n_points: n.len(),
        n_min: distinct[0],
        n_max: distinct[distinct.len() - 1],
        ssr: cur,
        iterations,
    })
}

impl Fit {
    /// How many samples until the fitted curve reaches `target`.
    pub fn needed(&self, target: f64, lower_is_better: bool) -> Needed {
        let p = self.params;
        let met = |v: f64| {
            if lower_is_better {
                v <= target
            } else {
                v >= target
            }
        };
        let met_at_min = met(p.eval(self.n_min));
        let n = if met_at_min {
            Some(self.n_min)
        } else {
            p.crossing(target)
        };
        // The curve must actually be moving toward the target past the crossing.
        let n = n.filter(|&n| met_at_min || met(p.eval(n * 1.01)));
        let n_stderr = match (n, self.cov) {
            (Some(n0), Some(cov)) if !met_at_min => {
                let f = |q: PowerLaw| q.crossing(target);
                let mut g = [0.0; 3];
                let mut ok = true;
                for (i, gi) in g.iter_mut().enumerate() {
                    let mut q = p;
                    let h = 1e-6 * [p.a, p.b, p.c][i].abs().max(1e-9);
                    match i {
                        0 => q.a += h,
                        1 => q.b += h,
                        _ => q.c += h,
                    }
                    match f(q) {
                        Some(v) => *gi = (v - n0) / h,
                        None => ok = false,
                    }
                }
                ok.then(|| {
                    let mut var = 0.0;
                    for i in 0..3 {
                        for j in 0..3 {
                            var += g[i] * cov[i][j] * g[j];
                        }
                    }
                    var.max(0.0).sqrt()
                })
            }
            _ => None,
        };
        Needed {
            target,
            lower_is_better,
            n,
            n_stderr,
            within_range: n.is_some_and(|n| n <= self.n_max * (1.0 + 1e-9)),
            met_at_min,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::rng::Rng;

    fn noisy(p: PowerLaw, ns: &[f64], rel_noise: f64, seed: u64) -> Vec<f64> {
        let mut r = Rng::new(seed, 0);
        ns.iter()
            .map(|&n| {
                let u = r.below(2_000_001) as f64 / 1e6 - 1.0; // uniform [-1, 1]
                p.eval(n) * (1.0 + rel_noise * u)
            })
            .collect()
    }

    #[test]
    fn recovers_known_parameters_from_a_noisy_series() {
        let truth = PowerLaw {
            a: 400.0,
            b: 0.5,
            c: 12.0,
        };
        let ns: Vec<f64> = (0..12)
            .map(|i| 1000.0 * 2f64.powf(i as f64 * 0.8))
            .collect();
        let y = noisy(truth, &ns, 0.005, 7);
        let f = fit(&ns, &y, None).unwrap();
        let rel = |got: f64, want: f64| (got - want).abs() / want;
        assert!(rel(f.params.a, 400.0) < 0.05, "{:?}", f.params);
        assert!(rel(f.params.b, 0.5) < 0.05, "{:?}", f.params);
        assert!(rel(f.params.c, 12.0) < 0.05, "{:?}", f.params);
        let se = f.stderr.unwrap();
        // The truth lies within 3 standard errors.
        assert!(
            (f.params.b - 0.5).abs() < 3.0 * se[1] + 1e-9,
            "{:?} ± {se:?}",
            f.params
        );
        // Samples needed for FID ≤ 14: truth N = (400 / 2)^(1/0.5) = 40 000.
        let need = f.needed(14.0, true);
        assert!(rel(need.n.unwrap(), 40_000.0) < 0.15, "{need:?}");
        assert!(need.within_range && need.n_stderr.unwrap() > 0.0);
        // Below the asymptote: never reached.
        let never = f.needed(11.0, true);
        assert!(never.n.is_none() && !never.within_range);
    }

    #[test]
    fn increasing_metrics_fit_with_negative_a() {
        // precision(N) = 0.8 − 2·N^(−0.4)
        let truth = PowerLaw {
            a: -2.0,
            b: 0.4,
            c: 0.8,
        };
        let ns: Vec<f64> = (0..12)
            .map(|i| 200.0 * 10f64.powf(i as f64 * 3.0 / 11.0))
            .collect();
        let y = noisy(truth, &ns, 0.001, 3);
        let f = fit(&ns, &y, None).unwrap();
        assert!((f.params.a - -2.0).abs() / 2.0 < 0.05, "{:?}", f.params);
        assert!((f.params.b - 0.4).abs() / 0.4 < 0.05, "{:?}", f.params);
        assert!((f.params.c - 0.8).abs() / 0.8 < 0.05, "{:?}", f.params);
        // Precision ≥ 0.75 needs (2/0.05)^(1/0.4) ≈ 10 119.
        let n = f.needed(0.75, false);
        assert!((n.n.unwrap() / 10_119.0 - 1.0).abs() < 0.1, "{n:?}");
        // ≥ 0.79 needs ≈ 1e7: beyond the data.
        let far = f.needed(0.79, false);
        assert!(far.n.unwrap() > 1e5 && !far.within_range, "{far:?}");
    }

    #[test]
    fn exact_three_points_have_no_uncertainty_and_two_are_refused() {
        let truth = PowerLaw {
            a: 100.0,
            b: 0.7,
            c: 5.0,
        };
        let ns = [1e3, 1e4, 1e5];
        let y: Vec<f64> = ns.iter().map(|&n| truth.eval(n)).collect();
        let f = fit(&ns, &y, None).unwrap();
        assert!(f.stderr.is_none());
        assert!((f.params.b - 0.7).abs() < 1e-3, "{:?}", f.params);
        let e = fit(&[1e3, 1e4, 1e4], &[1.0, 2.0, 2.0], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 3 distinct"), "{e}");
    }
}
