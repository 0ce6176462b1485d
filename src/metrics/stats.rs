//! Mean and covariance of a feature set, in f64, two-pass, divided by N − 1 — what
//! `np.mean(act, axis=0)` and `np.cov(act, rowvar=False)` give (pytorch-fid's statistics).

use anyhow::{bail, Result};
use faer::linalg::matmul::matmul;
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
    /// into the lower triangle (see `CovAccumulator`), then mirrored and divided by N − 1.
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
        let mut acc = CovAccumulator::new(mu, CHUNK.min(n));
        let mut start = 0;
        while start < n {
            let len = CHUNK.min(n - start);
            acc.add(x.subrows(start, len));
            start += len;
        }
        acc.finish()
    }

    /// Mean and covariance of N rows delivered in blocks, for data too large to hold at
    /// once: `read(start, block)` fills `block` (len × d) with rows `start..start+len`. It
    /// is called twice per block (pass 1: means; pass 2: centred products), so memory is
    /// O(block × d) whatever N is. Rows are checked finite (`what` names the input).
    pub fn from_row_blocks(
        n: usize,
        d: usize,
        what: &str,
        mut read: impl FnMut(usize, faer::MatMut<'_, f64>) -> Result<()>,
    ) -> Result<Stats> {
        if n == 0 || d == 0 {
            bail!("{what}: the feature set is empty ({n} × {d})");
        }
        if n < 2 {
            bail!("{what}: {n} sample(s), this needs at least 2");
        }
        let rows = CHUNK.min(n);
        let mut buf = Mat::<f64>::zeros(rows, d);
        let mut sum = vec![0.0f64; d];
        let mut start = 0;
        while start < n {
            let len = rows.min(n - start);
            let mut b = buf.as_mut().subrows_mut(0, len);
            read(start, b.as_mut())?;
            for (j, s) in sum.iter_mut().enumerate() {
                let col = b.as_ref().col(j);
                let col = col.try_as_col_major().expect("owned column").as_slice();
                let mut t = 0.0;
                for (i, &v) in col.iter().enumerate() {
                    if !v.is_finite() {
                        bail!(
                            "{what}: non-finite feature value {v} at row {}, column {j}",
                            start + i
                        );
                    }
                    t += v;
                }
                *s += t;
            }
            start += len;
        }
        let mu = Col::from_fn(d, |j| sum[j] / n as f64);
        let mut acc = CovAccumulator::new(mu, rows);
        let mut start = 0;
        while start < n {
            let len = rows.min(n - start);
            read(start, buf.as_mut().subrows_mut(0, len))?;
            acc.add(buf.as_ref().subrows(0, len));
            start += len;
        }
        Ok(acc.finish())
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

/// Pass 2 of the covariance: blocks of rows are centred (one reused scratch block) and
/// their `Xcᵀ Xc` summed into the lower triangle of Σ, column panel by column panel with
/// plain GEMMs (`Σ[j.., j..j+w] += Xc[:, j..]ᵀ Xc[:, j..j+w]`): about half the flops of a
/// full product, at GEMM speed (faer's triangular-destination product measured slower).
struct CovAccumulator {
    mu: Col<f64>,
    sigma: Mat<f64>,
    xc: Mat<f64>,
    n: usize,
}

/// Column panel width of the covariance update.
const PANEL: usize = 256;

impl CovAccumulator {
    fn new(mu: Col<f64>, rows: usize) -> Self {
        let d = mu.nrows();
        CovAccumulator {
            mu,
            sigma: Mat::zeros(d, d),
            xc: Mat::zeros(rows.max(1), d),
            n: 0,
        }
    }

    fn add(&mut self, x: MatRef<'_, f64>) {
        let (len, d) = (x.nrows(), x.ncols());
        let mut xc = self.xc.as_mut().subrows_mut(0, len);
        for j in 0..d {
            let (src, m) = (x.col(j), self.mu[j]);
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
        let par = faer::get_global_parallelism();
        let xc = self.xc.as_ref().subrows(0, len);
        let mut j = 0;
        while j < d {
            let w = PANEL.min(d - j);
            matmul(
                self.sigma.as_mut().submatrix_mut(j, j, d - j, w),
                Accum::Add,
                xc.subcols(j, d - j).transpose(),
                xc.subcols(j, w),
                1.0,
                par,
            );
            j += w;
        }
        self.n += len;
    }

    fn finish(self) -> Stats {
        let CovAccumulator {
            mu, mut sigma, n, ..
        } = self;
        let d = mu.nrows();
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
    fn row_blocks_equal_the_whole_matrix_across_panels_and_blocks() {
        // d > PANEL (two column panels), N spanning three row blocks.
        let (n, d) = (2 * CHUNK + 17, PANEL + 9);
        let x = Mat::from_fn(n, d, |i, j| {
            ((i * 7 + j * 13) % 11) as f64 + 0.25 * j as f64
        });
        let whole = Stats::from_features(x.as_ref(), "t").unwrap();
        let mut calls = 0;
        let streamed = Stats::from_row_blocks(n, d, "t", |start, mut b| {
            calls += 1;
            let len = b.nrows();
            b.copy_from(x.as_ref().subrows(start, len));
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 6, "two passes over three blocks");
        assert_eq!(streamed.n, Some(n));
        for j in 0..d {
            assert!((whole.mu[j] - streamed.mu[j]).abs() < 1e-12);
            for i in 0..d {
                let (a, b) = (whole.sigma[(i, j)], streamed.sigma[(i, j)]);
                assert!((a - b).abs() < 1e-9, "({i}, {j}): {a} vs {b}");
                assert_eq!(streamed.sigma[(i, j)], streamed.sigma[(j, i)]);
            }
        }
        let mut bad = x.clone();
        bad[(CHUNK + 3, 5)] = f64::INFINITY;
        let e = Stats::from_row_blocks(n, d, "f.npy", |start, mut b| {
            let len = b.nrows();
            b.copy_from(bad.as_ref().subrows(start, len));
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains(&format!("row {}, column 5", CHUNK + 3)), "{e}");
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
