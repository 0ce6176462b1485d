//! Mean and covariance of a feature set, in f64, two-pass, divided by N − 1 — what
//! `np.mean(act, axis=0)` and `np.cov(act, rowvar=False)` give (pytorch-fid's statistics).

use anyhow::{bail, Result};
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, Col, Mat, MatRef};

use super::check_features;

/// Rows centred per block in the covariance pass (bounds the scratch at `CHUNK × d` f64).
const CHUNK: usize = 2048;

/// Gaussian statistics of a feature set: `mu` (d) and `sigma` (d × d, symmetric).
#[derive(Debug, Clone)]
pub struct Stats {
    pub mu: Col<f64>,
    pub sigma: Mat<f64>,
    /// Number of samples they were computed from, when known (`.npz` files do not say).
    pub n: Option<usize>,
}

impl Stats {
    pub fn dim(&self) -> usize {
        self.mu.nrows()
    }

    /// Mean and unbiased covariance of the rows of `x` (N ≥ 2; checked, `what` names it).
    ///
    /// Pass 1: column means. Pass 2: blocks of rows are centred and their `Xcᵀ Xc` summed
    /// into the lower triangle (faer's triangular matmul: half the flops of a full
    /// product), then mirrored and divided by N − 1.
    pub fn from_features(x: MatRef<'_, f64>, what: &str) -> Result<Stats> {
        check_features(x, what, 2)?;
        Ok(Self::from_checked(x))
    }

    /// As [`Stats::from_features`], for inputs already checked (N ≥ 2, finite).
    pub fn from_checked(x: MatRef<'_, f64>) -> Stats {
        let (n, d) = (x.nrows(), x.ncols());
        let mut mu = Col::<f64>::zeros(d);
        for j in 0..d {
            let c = x.col(j);
            let s: f64 = match c.try_as_col_major() {
                Some(c) => c.as_slice().iter().sum(),
                None => (0..n).map(|i| c[i]).sum(),
            };
            mu[j] = s / n as f64;
        }
        let mut sigma = Mat::<f64>::zeros(d, d);
        let par = faer::get_global_parallelism();
        let mut start = 0;
        // One scratch block for all chunks (a fresh CHUNK × d buffer per chunk would
        // page-fault ~N·d·8 bytes of memory per covariance).
        let mut buf = Mat::<f64>::zeros(CHUNK.min(n), d);
        while start < n {
            let len = CHUNK.min(n - start);
            let mut xc = buf.as_mut().subrows_mut(0, len);
            for j in 0..d {
                let (src, m) = (x.col(j).subrows(start, len), mu[j]);
                let dst = xc
                    .as_mut()
                    .col_mut(j)
                    .try_as_col_major_mut()
                    .expect("owned column");
                match src.try_as_col_major() {
                    Some(src) => {
                        for (o, &v) in dst.as_slice_mut().iter_mut().zip(src.as_slice()) {
                            *o = v - m;
                        }
                    }
                    None => {
                        for (i, o) in dst.as_slice_mut().iter_mut().enumerate() {
                            *o = src[i] - m;
                        }
                    }
                }
            }
            tri_matmul(
                sigma.as_mut(),
                BlockStructure::TriangularLower,
                Accum::Add,
                xc.as_ref().transpose(),
                BlockStructure::Rectangular,
                xc.as_ref(),
                BlockStructure::Rectangular,
                1.0,
                par,
            );
            start += len;
        }
        let scale = 1.0 / (n as f64 - 1.0);
        for j in 0..d {
            for i in j..d {
                let v = sigma[(i, j)] * scale;
                sigma[(i, j)] = v;
                sigma[(j, i)] = v;
            }
        }
        Stats {
            mu,
            sigma,
            n: Some(n),
        }
    }

    /// Check shapes and values of statistics read from a file (`what` names it).
    pub fn check(&self, what: &str) -> Result<()> {
        let d = self.mu.nrows();
        if d == 0 {
            bail!("{what}: `mu` is empty");
        }
        if self.sigma.nrows() != d || self.sigma.ncols() != d {
            bail!(
                "{what}: `sigma` is {}×{} but `mu` has {d} entries (expected {d}×{d})",
                self.sigma.nrows(),
                self.sigma.ncols()
            );
        }
        for i in 0..d {
            if !self.mu[i].is_finite() {
                bail!("{what}: non-finite value {} in `mu` at {i}", self.mu[i]);
            }
        }
        for j in 0..d {
            for i in 0..d {
                let v = self.sigma[(i, j)];
                if !v.is_finite() {
                    bail!("{what}: non-finite value {v} in `sigma` at ({i}, {j})");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_unbiased_covariance() {
        // x = [[1,2],[3,6],[5,10]]: mean (3,6); cov = [[4,8],[8,16]].
        let x = faer::mat![[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]];
        let s = Stats::from_features(x.as_ref(), "t").unwrap();
        assert_eq!((s.mu[0], s.mu[1]), (3.0, 6.0));
        assert_eq!(s.sigma[(0, 0)], 4.0);
        assert_eq!(s.sigma[(0, 1)], 8.0);
        assert_eq!(s.sigma[(1, 0)], 8.0);
        assert_eq!(s.sigma[(1, 1)], 16.0);
    }

    #[test]
    fn chunked_equals_direct() {
        let n = 2 * CHUNK + 17;
        let x = Mat::from_fn(n, 3, |i, j| ((i * 7 + j * 13) % 11) as f64 + 1e6);
        let s = Stats::from_features(x.as_ref(), "t").unwrap();
        for a in 0..3 {
            for b in 0..3 {
                let ma = s.mu[a];
                let mb = s.mu[b];
                let direct: f64 = (0..n)
                    .map(|i| (x[(i, a)] - ma) * (x[(i, b)] - mb))
                    .sum::<f64>()
                    / (n as f64 - 1.0);
                assert!((s.sigma[(a, b)] - direct).abs() < 1e-9 * direct.abs().max(1.0));
            }
        }
    }

    #[test]
    fn rejects_one_sample_and_nan() {
        let one = Mat::<f64>::zeros(1, 4);
        let e = Stats::from_features(one.as_ref(), "a.npy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.npy") && e.contains("at least 2"), "{e}");
        let mut x = Mat::<f64>::zeros(3, 2);
        x[(1, 1)] = f64::NAN;
        let e = Stats::from_features(x.as_ref(), "b.npy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.npy") && e.contains("non-finite"), "{e}");
    }
}
