//! The metric engine of `prep eval`: statistics, FID, KID, CMMD, CLIP score, PRDC, FID∞
//! and the disjoint-split confidence intervals, all on feature matrices in f64.
//!
//! A feature matrix is a `faer::Mat<f64>` with one row per sample (N × d). Every entry
//! point checks its inputs ([`check_features`]) and its result: a metric either returns a
//! finite number or an error that says what was wrong, never a silent NaN.
//!
//! Architecture invariant: this module is pure computation — no file or network I/O, no
//! global state except faer's thread pool setting; randomness only through [`rng::Rng`],
//! seeded by the caller.

pub mod clip;
pub mod cmmd;
pub mod control;
pub mod eigvalsh;
pub mod fid;
pub mod fid_inf;
pub mod kid;
pub mod prdc;
pub mod rng;
pub mod splits;
pub mod stats;

use anyhow::{bail, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};

pub use fid::{frechet_distance, FidReference};
pub use stats::Stats;

/// Rows of features processed at once by the blocked kernels (bounds memory at
/// `BLOCK × N` f64 per kernel block).
pub(crate) const BLOCK: usize = 1024;

/// Check a feature matrix: at least `min_rows` rows, at least one column, every value
/// finite. `what` names the input (usually the file) in the error.
pub fn check_features(x: MatRef<'_, f64>, what: &str, min_rows: usize) -> Result<()> {
    if x.nrows() == 0 {
        bail!("{what}: the feature set is empty (0 samples)");
    }
    if x.ncols() == 0 {
        bail!("{what}: the features have 0 dimensions");
    }
    if x.nrows() < min_rows {
        bail!(
            "{what}: {} sample(s), this needs at least {min_rows}",
            x.nrows()
        );
    }
    for j in 0..x.ncols() {
        for i in 0..x.nrows() {
            let v = x[(i, j)];
            if !v.is_finite() {
                bail!("{what}: non-finite feature value {v} at row {i}, column {j}");
            }
        }
    }
    Ok(())
}

/// Check that two feature sets have the same dimension.
pub fn check_same_dim(
    a: MatRef<'_, f64>,
    a_what: &str,
    b: MatRef<'_, f64>,
    b_what: &str,
) -> Result<()> {
    if a.ncols() != b.ncols() {
        bail!(
            "feature dimensions differ: {a_what} has d = {}, {b_what} has d = {} (were they made by the same model?)",
            a.ncols(),
            b.ncols()
        );
    }
    Ok(())
}

/// `a · bᵀ` (rows of `a` against rows of `b`), faer's parallel matmul.
pub(crate) fn gram(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(a.nrows(), b.nrows());
    matmul(
        out.as_mut(),
        Accum::Replace,
        a,
        b.transpose(),
        1.0,
        faer::get_global_parallelism(),
    );
    out
}

/// Squared L2 norm of each row.
pub(crate) fn row_sqnorms(x: MatRef<'_, f64>) -> Vec<f64> {
    let mut out = vec![0.0; x.nrows()];
    for j in 0..x.ncols() {
        let col = x.col(j);
        for (i, o) in out.iter_mut().enumerate() {
            let v = col[i];
            *o += v * v;
        }
    }
    out
}

/// The rows `idx` of `x`, in that order.
pub fn gather_rows(x: MatRef<'_, f64>, idx: &[usize]) -> Mat<f64> {
    Mat::from_fn(idx.len(), x.ncols(), |i, j| x[(idx[i], j)])
}

/// Mean and population standard deviation (ddof = 0, as `np.std`) of `v`.
pub(crate) fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// `Ok(v)` if finite, else an error naming the metric.
pub(crate) fn finite(v: f64, metric: &str) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        bail!("{metric} came out non-finite ({v}); the inputs are degenerate (constant or overflowing features?)")
    }
}
