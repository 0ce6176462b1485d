//! Precision, recall, density and coverage (Naeem et al. 2020), as the `prdc` package
//! computes them: Euclidean distances the way scikit-learn's `pairwise_distances` forms
//! them (d² = (−2 x·y + |x|²) + |y|², clipped at 0, self-distances set to 0, square root),
//! NND_k = the (k+1)-th smallest distance in a row including the point itself, and strict
//! `<` comparisons. When both inputs were float32 files, sklearn keeps its distance matrix
//! in float32; `f32_distances` reproduces that rounding so ties resolve the same way.
//! Blocked over rows: memory is `BLOCK × N` f64, never N × N.

use anyhow::{bail, Result};
use faer::MatRef;

use super::{gram, row_sqnorms, BLOCK};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prdc {
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
}

fn dist(d2: f64, f32_distances: bool) -> f64 {
    let d2 = d2.max(0.0);
    if f32_distances {
        (d2 as f32).sqrt() as f64
    } else {
        d2.sqrt()
    }
}

/// For each block of rows of `a`, the distance block (len × N_b) handed to `f(start, block)`;
/// `same` marks `a` and `b` as one set (diagonal set to 0).
fn for_distance_blocks(
    a: MatRef<'_, f64>,
    b: MatRef<'_, f64>,
    same: bool,
    f32_distances: bool,
    mut f: impl FnMut(usize, &faer::Mat<f64>),
) {
    let sa = row_sqnorms(a);
    let sb = row_sqnorms(b);
    let mut start = 0;
    while start < a.nrows() {
        let len = BLOCK.min(a.nrows() - start);
        let mut g = gram(a.subrows(start, len), b);
        for j in 0..g.ncols() {
            for i in 0..len {
                let v = if same && start + i == j {
                    0.0
                } else {
                    dist((-2.0 * g[(i, j)] + sa[start + i]) + sb[j], f32_distances)
                };
                g[(i, j)] = v;
            }
        }
        f(start, &g);
        start += len;
    }
}

/// Distance from each row of `x` to its k-th nearest neighbour in `x` (itself excluded).
pub fn knn_radii(x: MatRef<'_, f64>, k: usize, f32_distances: bool) -> Vec<f64> {
    let mut radii = vec![0.0; x.nrows()];
    let mut row = Vec::with_capacity(x.nrows());
    for_distance_blocks(x, x, true, f32_distances, |start, g| {
        for i in 0..g.nrows() {
            row.clear();
            row.extend((0..g.ncols()).map(|j| g[(i, j)]));
            let (_, kth, _) = row.select_nth_unstable_by(k, f64::total_cmp);
            radii[start + i] = *kth;
        }
    });
    radii
}

/// PRDC with `k` nearest neighbours (checked inputs, same d; both sets need more than k rows).
pub fn prdc(
    real: MatRef<'_, f64>,
    fake: MatRef<'_, f64>,
    k: usize,
    f32_distances: bool,
) -> Result<Prdc> {
    if k == 0 {
        bail!("PRDC needs k ≥ 1");
    }
    for (n, what) in [(real.nrows(), "real"), (fake.nrows(), "generated")] {
        if n <= k {
            bail!("PRDC with k = {k} needs more than {k} {what} samples (got {n})");
        }
    }
    let r_real = knn_radii(real, k, f32_distances);
    let r_fake = knn_radii(fake, k, f32_distances);
    let nf = fake.nrows();
    let mut fake_in_real = vec![false; nf];
    let mut fake_count = vec![0usize; nf];
    let mut recall_hits = 0usize;
    let mut coverage_hits = 0usize;
    for_distance_blocks(real, fake, false, f32_distances, |start, g| {
        for i in 0..g.nrows() {
            let ri = r_real[start + i];
            let mut recalled = false;
            let mut min = f64::INFINITY;
            for j in 0..nf {
                let dij = g[(i, j)];
                if dij < ri {
                    fake_in_real[j] = true;
                    fake_count[j] += 1;
                }
                if dij < r_fake[j] {
                    recalled = true;
                }
                if dij < min {
                    min = dij;
                }
            }
            recall_hits += recalled as usize;
            coverage_hits += (min < ri) as usize;
        }
    });
    let nr = real.nrows() as f64;
    let nf_f = nf as f64;
    Ok(Prdc {
        precision: fake_in_real.iter().filter(|&&b| b).count() as f64 / nf_f,
        recall: recall_hits as f64 / nr,
        // (1/k) · mean(counts), in prdc's order of operations.
        density: (1.0 / k as f64) * (fake_count.iter().sum::<usize>() as f64 / nf_f),
        coverage: coverage_hits as f64 / nr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;

    fn col(v: &[f64]) -> Mat<f64> {
        Mat::from_fn(v.len(), 1, |i, _| v[i])
    }

    #[test]
    fn hand_set_k1() {
        // 1-D, k = 1. Real {0, 1, 2, 10}: NND₁ = 1, 1, 1, 8.
        // Fake {0.5, 5, 20}: NND₁ = 4.5, 4.5, 15.
        let real = col(&[0.0, 1.0, 2.0, 10.0]);
        let fake = col(&[0.5, 5.0, 20.0]);
        assert_eq!(knn_radii(real.as_ref(), 1, false), vec![1.0, 1.0, 1.0, 8.0]);
        let p = prdc(real.as_ref(), fake.as_ref(), 1, false).unwrap();
        // precision: 0.5 (within 1 of 0 and 1), 5 (within 8 of 10) → 2/3.
        assert!((p.precision - 2.0 / 3.0).abs() < 1e-15);
        // recall: real x recalled if some fake y has |x−y| < NND(y): 0,1 (y=0.5, r 4.5),
        // 2 (y=0.5: 1.5 < 4.5), 10 (y=5: 5 ≥ 4.5; y=20: 10 < 15) → 4/4.
        assert_eq!(p.recall, 1.0);
        // density: counts 0.5→{0,1}=2, 5→{10}=1, 20→0 → 3/(1·3) = 1.
        assert!((p.density - 1.0).abs() < 1e-15);
        // coverage: min fake distance < NND(x): 0 (0.5<1) yes, 1 (0.5<1) yes, 2 (1.5) no,
        // 10 (5<8) yes → 3/4.
        assert_eq!(p.coverage, 0.75);
    }

    #[test]
    fn needs_more_than_k() {
        let real = col(&[0.0, 1.0, 2.0]);
        let e = prdc(real.as_ref(), real.as_ref(), 5, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 5"), "{e}");
    }
}
