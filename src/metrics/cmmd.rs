//! CMMD (Jayasumana et al. 2024), as google-research `cmmd/distance.py`:
//! Gaussian RBF kernel K(a, b) = exp(−γ |a − b|²), σ = 10, γ = 1/(2σ²), scale 1000,
//! CMMD = 1000 · [mean K(x, x') + mean K(y, y') − 2 mean K(x, y)], means over all pairs
//! including the diagonal. |a − b|² is expanded as −2 a·b + |a|² + |b|² exactly as the
//! reference writes it. Inputs are CLIP image embeddings, L2-normalised by the extractor
//! (the reference normalises in its embedding model, not in `mmd`; neither do we here).
//! Blocked over rows so memory stays at `BLOCK × N`; everything in f64.

use anyhow::Result;
use faer::MatRef;

use super::{finite, gram, row_sqnorms, BLOCK};

pub const SIGMA: f64 = 10.0;
pub const SCALE: f64 = 1000.0;

/// mean over all (i, j) of exp(−γ(−2 aᵢ·bⱼ + |aᵢ|² + |bⱼ|²)).
fn mean_rbf(a: MatRef<'_, f64>, b: MatRef<'_, f64>, gamma: f64) -> f64 {
    let sa = row_sqnorms(a);
    let sb = row_sqnorms(b);
    let mut total = 0.0;
    let mut start = 0;
    while start < a.nrows() {
        let len = BLOCK.min(a.nrows() - start);
        let g = gram(a.subrows(start, len), b);
        for (j, &sbj) in sb.iter().enumerate() {
            let col = g.col(j);
            let mut s = 0.0;
            for i in 0..len {
                s += (-gamma * (-2.0 * col[i] + sa[start + i] + sbj)).exp();
            }
            total += s;
        }
        start += len;
    }
    total / (a.nrows() as f64 * b.nrows() as f64)
}

/// CMMD between `real` and `gen` (checked, same d, N ≥ 1 each).
pub fn cmmd(real: MatRef<'_, f64>, gen: MatRef<'_, f64>) -> Result<f64> {
    let gamma = 1.0 / (2.0 * SIGMA * SIGMA);
    let kxx = mean_rbf(real, real, gamma);
    let kyy = mean_rbf(gen, gen, gamma);
    let kxy = mean_rbf(real, gen, gamma);
    finite(SCALE * (kxx + kyy - 2.0 * kxy), "CMMD")
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;

    #[test]
    fn identical_sets_zero_and_closed_form() {
        let x = Mat::from_fn(5, 3, |i, j| (i + j) as f64 * 0.1);
        assert!(cmmd(x.as_ref(), x.as_ref()).unwrap().abs() < 1e-12);
        // One point each at distance r: 1000 · (1 + 1 − 2 e^{−r²/200}).
        let a = faer::mat![[0.0, 0.0]];
        let b = faer::mat![[3.0, 4.0]];
        let want = 1000.0 * (2.0 - 2.0 * (-25.0f64 / 200.0).exp());
        let got = cmmd(a.as_ref(), b.as_ref()).unwrap();
        assert!((got - want).abs() < 1e-9, "{got} {want}");
    }

    #[test]
    fn blocked_equals_unblocked() {
        let n = BLOCK + 33;
        let x = Mat::from_fn(n, 2, |i, j| ((i * 7 + j) % 17) as f64 * 0.05);
        let y = Mat::from_fn(9, 2, |i, j| ((i + j * 3) % 5) as f64 * 0.07);
        let gamma = 1.0 / 200.0;
        let mut naive = 0.0;
        for i in 0..n {
            for j in 0..9 {
                let d2: f64 = (0..2).map(|t| (x[(i, t)] - y[(j, t)]).powi(2)).sum();
                naive += (-gamma * d2).exp();
            }
        }
        naive /= (n * 9) as f64;
        let got = mean_rbf(x.as_ref(), y.as_ref(), gamma);
        assert!((got - naive).abs() < 1e-12);
    }
}
