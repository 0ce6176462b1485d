//! Fréchet distance between two Gaussians, by the symmetric eigen route (f64, faer):
//!
//! FID = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 Σᵢ √λᵢ(M),  M = Σ₁^½ Σ₂ Σ₁^½.
//!
//! 1. `eigh(Σ₁) = V L Vᵀ`, eigenvalues clipped at 0, so `Σ₁^½ = V L^½ Vᵀ` exists also when
//!    Σ₁ is rank-deficient (N ≤ d).
//! 2. `M` is formed in V's basis: `M̃ = Vᵀ M V = L^½ (Vᵀ Σ₂ V) L^½`, orthogonally similar to M
//!    (same eigenvalues, two matmuls instead of three), then symmetrised `(M̃ + M̃ᵀ)/2`.
//! 3. `eigvalsh(M̃)`, clipped at 0, `Σ √λ` = tr √(Σ₁Σ₂).
//!
//! Equals pytorch-fid's `calculate_frechet_distance` (scipy `sqrtm` of Σ₁Σ₂) to ≤ 1e-6
//! relative, without its complex arithmetic. [`FidReference`] keeps step 1 for a fixed
//! reference set, so FID∞ and split CIs pay it once.

use anyhow::{anyhow, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, Col, Mat, Side};

use super::{finite, Stats};

/// A reference set's statistics with the eigendecomposition of its covariance.
pub struct FidReference {
    mu: Col<f64>,
    trace: f64,
    v: Mat<f64>,
    sqrt_l: Vec<f64>,
}

impl FidReference {
    pub fn new(s: &Stats) -> Result<FidReference> {
        let d = s.dim();
        let evd = s
            .sigma
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| anyhow!("eigendecomposition of the reference covariance failed: {e:?}"))?;
        let l = evd.S().column_vector();
        let sqrt_l = (0..d).map(|i| l[i].max(0.0).sqrt()).collect();
        Ok(FidReference {
            mu: s.mu.clone(),
            trace: (0..d).map(|i| s.sigma[(i, i)]).sum(),
            v: evd.U().to_owned(),
            sqrt_l,
        })
    }

    pub fn dim(&self) -> usize {
        self.mu.nrows()
    }

    /// FID between this reference and `other` (same dimension; checked).
    pub fn distance(&self, other: &Stats) -> Result<f64> {
        let d = self.dim();
        if other.dim() != d {
            anyhow::bail!(
                "statistics dimensions differ: reference d = {d}, other d = {}",
                other.dim()
            );
        }
        let par = faer::get_global_parallelism();
        let mut diff = 0.0;
        for i in 0..d {
            let t = self.mu[i] - other.mu[i];
            diff += t * t;
        }
        let trace2: f64 = (0..d).map(|i| other.sigma[(i, i)]).sum();
        // C = Vᵀ Σ₂ V
        let mut b = Mat::<f64>::zeros(d, d);
        matmul(
            b.as_mut(),
            Accum::Replace,
            other.sigma.as_ref(),
            self.v.as_ref(),
            1.0,
            par,
        );
        let mut c = Mat::<f64>::zeros(d, d);
        matmul(
            c.as_mut(),
            Accum::Replace,
            self.v.transpose(),
            b.as_ref(),
            1.0,
            par,
        );
        drop(b);
        // M̃ = L^½ C L^½, symmetrised.
        let s = &self.sqrt_l;
        let m = Mat::from_fn(d, d, |i, j| 0.5 * (c[(i, j)] + c[(j, i)]) * s[i] * s[j]);
        drop(c);
        let lam = m
            .self_adjoint_eigenvalues(Side::Lower)
            .map_err(|e| anyhow!("eigenvalues of Σ₁^½ Σ₂ Σ₁^½ failed: {e:?}"))?;
        let tr_covmean: f64 = lam.iter().map(|&x| x.max(0.0).sqrt()).sum();
        finite(diff + self.trace + trace2 - 2.0 * tr_covmean, "FID")
    }
}

/// FID between two sets of statistics.
pub fn frechet_distance(a: &Stats, b: &Stats) -> Result<f64> {
    FidReference::new(a)?.distance(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::rng::Rng;

    fn stats(mu: Vec<f64>, sigma: Mat<f64>) -> Stats {
        Stats {
            mu: Col::from_fn(mu.len(), |i| mu[i]),
            sigma,
            n: None,
        }
    }

    fn random_features(n: usize, d: usize, seed: u64, scale: f64, shift: f64) -> Mat<f64> {
        let mut r = Rng::new(seed, 0);
        Mat::from_fn(n, d, |_, _| {
            (r.below(1_000_001) as f64 / 1e6 - 0.5) * scale + shift
        })
    }

    #[test]
    fn identical_sets_give_zero() {
        let x = random_features(200, 16, 1, 2.0, 0.3);
        let s = Stats::from_features(x.as_ref(), "x").unwrap();
        let f = frechet_distance(&s, &s).unwrap();
        assert!(f.abs() < 1e-9, "{f}");
    }

    #[test]
    fn rank_deficient_identical_sets_give_zero() {
        let x = random_features(10, 40, 2, 1.0, 0.0); // N < d
        let s = Stats::from_features(x.as_ref(), "x").unwrap();
        let f = frechet_distance(&s, &s).unwrap();
        // The 31 zero eigenvalues come out as ±1e-17 and their square roots as ~1e-9:
        // relative to the traces that is rounding, as in every f64 route.
        let tr: f64 = (0..40).map(|i| s.sigma[(i, i)]).sum();
        assert!(f.abs() < 1e-6 * tr, "{f} vs trace {tr}");
    }

    #[test]
    fn closed_form_diagonal_gaussians() {
        // Σ₁ = diag(a), Σ₂ = diag(b): FID = |Δμ|² + Σ (√aᵢ − √bᵢ)².
        let a = [1.0, 4.0, 9.0, 0.25];
        let b = [4.0, 1.0, 9.0, 1.0];
        let s1 = stats(
            vec![0.0, 1.0, 2.0, 3.0],
            Mat::from_fn(4, 4, |i, j| if i == j { a[i] } else { 0.0 }),
        );
        let s2 = stats(
            vec![1.0, 1.0, 0.0, 3.0],
            Mat::from_fn(4, 4, |i, j| if i == j { b[i] } else { 0.0 }),
        );
        let want = 1.0
            + 4.0
            + (1.0f64 - 2.0).powi(2)
            + (2.0f64 - 1.0).powi(2)
            + 0.0
            + (0.5f64 - 1.0).powi(2);
        let got = frechet_distance(&s1, &s2).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        let back = frechet_distance(&s2, &s1).unwrap();
        assert!((back - want).abs() < 1e-12);
    }

    #[test]
    fn closed_form_rotated_and_commuting() {
        // Σ₁ = Q diag(a) Qᵀ, Σ₂ = Q diag(b) Qᵀ with a 2×2 rotation Q: same closed form.
        let (c, s) = (0.6f64, 0.8f64);
        let q = faer::mat![[c, -s], [s, c]];
        let mk = |l: [f64; 2]| {
            let dl = Mat::from_fn(2, 2, |i, j| if i == j { l[i] } else { 0.0 });
            &q * &dl * q.transpose()
        };
        let s1 = stats(vec![0.0, 0.0], mk([2.0, 0.5]));
        let s2 = stats(vec![0.0, 0.0], mk([8.0, 0.0])); // singular Σ₂
        let want = (2f64.sqrt() - 8f64.sqrt()).powi(2) + (0.5f64.sqrt() - 0.0).powi(2);
        let got = frechet_distance(&s1, &s2).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn dimension_mismatch_is_an_error() {
        let s1 = stats(vec![0.0; 2], Mat::identity(2, 2));
        let s2 = stats(vec![0.0; 3], Mat::identity(3, 3));
        assert!(frechet_distance(&s1, &s2)
            .unwrap_err()
            .to_string()
            .contains("differ"));
    }
}
