//! Kernel Inception Distance (clean-fid / torch-fidelity definition).
//!
//! Polynomial kernel k(x, y) = (x·y/d + 1)³. For each of `subsets` subsets, m rows of each
//! set drawn without replacement (m = min(N₁, N₂, max_subset_size)), the unbiased MMD²:
//! (Σ_{i≠j} Kxx + Σ_{i≠j} Kyy) / (m(m − 1)) − 2 Σ Kxy / m². Reported: mean and population
//! std (ddof = 0, as torch-fidelity's `kernel_inception_distance_std`) over subsets.
//! A subset of the full size is the full set (MMD² is permutation invariant), so when
//! N₁ = N₂ ≤ max_subset_size the result is exact and does not depend on the seed.

use anyhow::{bail, Result};
use faer::MatRef;

use super::rng::Rng;
use super::{finite, gather_rows, gram, mean_std};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    pub mean: f64,
    pub std: f64,
    pub subsets: usize,
    pub subset_size: usize,
}

fn poly_sum(g: MatRef<'_, f64>, d: f64, skip_diag: bool) -> f64 {
    let mut total = 0.0;
    for j in 0..g.ncols() {
        let col = g.col(j);
        let mut s = 0.0;
        for i in 0..g.nrows() {
            if skip_diag && i == j {
                continue;
            }
            let k = col[i] / d + 1.0;
            s += k * k * k;
        }
        total += s;
    }
    total
}

/// Unbiased MMD² with the cubic polynomial kernel between the rows of `x` and `y`
/// (both m × d, m ≥ 2).
pub fn poly_mmd2(x: MatRef<'_, f64>, y: MatRef<'_, f64>) -> f64 {
    let m = x.nrows() as f64;
    let d = x.ncols() as f64;
    let kxx = poly_sum(gram(x, x).as_ref(), d, true);
    let kyy = poly_sum(gram(y, y).as_ref(), d, true);
    let kxy = poly_sum(gram(x, y).as_ref(), d, false);
    (kxx + kyy) / (m * (m - 1.0)) - 2.0 * kxy / (m * m)
}

/// KID between `real` and `gen` (checked, same d).
pub fn kid(
    real: MatRef<'_, f64>,
    gen: MatRef<'_, f64>,
    subsets: usize,
    max_subset_size: usize,
    rng: &mut Rng,
) -> Result<Kid> {
    let m = real.nrows().min(gen.nrows()).min(max_subset_size);
    if m < 2 {
        bail!("KID needs subsets of at least 2 samples (got m = {m})");
    }
    if subsets == 0 {
        bail!("KID needs at least one subset");
    }
    let full = m == real.nrows() && m == gen.nrows();
    let mut values = Vec::with_capacity(subsets);
    if full {
        let v = poly_mmd2(gen, real);
        values.resize(subsets, v);
    } else {
        for _ in 0..subsets {
            let gi = rng.sample(gen.nrows(), m);
            let ri = rng.sample(real.nrows(), m);
            let x = gather_rows(gen, &gi);
            let y = gather_rows(real, &ri);
            values.push(poly_mmd2(x.as_ref(), y.as_ref()));
        }
    }
    let (mean, std) = mean_std(&values);
    Ok(Kid {
        mean: finite(mean, "KID")?,
        std: finite(std, "KID std")?,
        subsets,
        subset_size: m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::rng::stream;
    use faer::Mat;

    fn naive(x: &Mat<f64>, y: &Mat<f64>) -> f64 {
        let (m, d) = (x.nrows(), x.ncols());
        let k = |a: &Mat<f64>, i: usize, b: &Mat<f64>, j: usize| {
            let dot: f64 = (0..d).map(|t| a[(i, t)] * b[(j, t)]).sum();
            (dot / d as f64 + 1.0).powi(3)
        };
        let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
        for i in 0..m {
            for j in 0..m {
                if i != j {
                    xx += k(x, i, x, j);
                    yy += k(y, i, y, j);
                }
                xy += k(x, i, y, j);
            }
        }
        let mf = m as f64;
        (xx + yy) / (mf * (mf - 1.0)) - 2.0 * xy / (mf * mf)
    }

    #[test]
    fn matches_naive_definition() {
        let x = Mat::from_fn(7, 3, |i, j| ((i * 3 + j) % 5) as f64 * 0.3 - 0.5);
        let y = Mat::from_fn(7, 3, |i, j| ((i * 2 + j * 5) % 7) as f64 * 0.2);
        let got = poly_mmd2(x.as_ref(), y.as_ref());
        let want = naive(&x, &y);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn identical_sets_near_zero_and_full_set_exact() {
        let x = Mat::from_fn(50, 4, |i, j| ((i * 7 + j * 3) % 11) as f64 * 0.1);
        let mut r = Rng::new(0, stream::KID);
        let k = kid(x.as_ref(), x.as_ref(), 100, 1000, &mut r).unwrap();
        // Unbiased estimator on identical sets: (2 Σ_{i≠j} K)/(m(m−1)) − 2 Σ K/m², small but
        // not exactly 0 (the diagonal terms).
        let diag: f64 = (0..50)
            .map(|i| {
                let dot: f64 = (0..4).map(|t| x[(i, t)] * x[(i, t)]).sum();
                (dot / 4.0 + 1.0).powi(3)
            })
            .sum();
        let all = poly_sum(gram(x.as_ref(), x.as_ref()).as_ref(), 4.0, false);
        let want = 2.0 * (all - diag) / (50.0 * 49.0) - 2.0 * all / 2500.0;
        assert!(
            (k.mean - want).abs() < 1e-12 && k.std == 0.0,
            "{k:?} {want}"
        );
    }

    #[test]
    fn subsets_seeded() {
        let x = Mat::from_fn(40, 3, |i, j| ((i * 7 + j * 3) % 11) as f64 * 0.1);
        let y = Mat::from_fn(30, 3, |i, j| ((i * 5 + j) % 13) as f64 * 0.1 + 0.2);
        let a = kid(
            x.as_ref(),
            y.as_ref(),
            10,
            20,
            &mut Rng::new(3, stream::KID),
        )
        .unwrap();
        let b = kid(
            x.as_ref(),
            y.as_ref(),
            10,
            20,
            &mut Rng::new(3, stream::KID),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.subset_size, 20);
        assert!(a.std > 0.0 && a.mean > 0.0);
    }
}
