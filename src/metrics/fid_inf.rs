//! FID∞ (Chong & Forsyth 2020, `FID_IS_infinity`): FID is biased in N, FID_N ≈ FID∞ + k/N.
//! FID_N is evaluated at 15 sizes `linspace(min(5000, max(N/10, 2)), N, 15)` truncated to
//! integers (as `.astype('int32')`); each size takes the first n rows of a fresh seeded
//! shuffle of the generated features (without replacement) against the full reference
//! statistics; a least-squares line of FID_N against 1/n is fitted and its intercept at
//! 1/n = 0 reported.

use anyhow::{bail, Result};
use faer::MatRef;

use super::rng::Rng;
use super::{finite, gather_rows, FidReference, Stats};

#[derive(Debug, Clone)]
pub struct FidInf {
    pub fid_inf: f64,
    pub slope: f64,
    pub sizes: Vec<usize>,
    pub fids: Vec<f64>,
}

/// The subset sizes for N generated samples (`points` of them).
pub fn subset_sizes(n: usize, points: usize) -> Vec<usize> {
    let nf = n as f64;
    let lo = 5000f64.min((nf / 10.0).max(2.0));
    if points == 1 {
        return vec![lo as usize];
    }
    let step = (nf - lo) / (points - 1) as f64;
    (0..points)
        .map(|i| {
            if i == points - 1 {
                n
            } else {
                (lo + i as f64 * step) as usize
            }
        })
        .collect()
}

/// Intercept and slope of the least-squares line y = a + b x.
pub fn linear_fit(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx) * (a - mx)).sum();
    let b = sxy / sxx;
    (my - b * mx, b)
}

/// FID∞ of `gen` (checked) against `reference`.
pub fn fid_infinity(
    reference: &FidReference,
    gen: MatRef<'_, f64>,
    points: usize,
    rng: &mut Rng,
) -> Result<FidInf> {
    let n = gen.nrows();
    let sizes = subset_sizes(n, points);
    let distinct = {
        let mut s = sizes.clone();
        s.dedup();
        s.len()
    };
    if points < 2 || distinct < 2 {
        bail!("FID∞ needs at least 2 distinct subset sizes; {n} generated samples give {sizes:?} (use more samples)");
    }
    let mut fids = Vec::with_capacity(sizes.len());
    for &m in &sizes {
        let idx = rng.sample(n, m);
        let sub = gather_rows(gen, &idx);
        let stats = Stats::from_checked(sub.as_ref());
        fids.push(reference.distance(&stats)?);
    }
    let inv: Vec<f64> = sizes.iter().map(|&m| 1.0 / m as f64).collect();
    let (a, b) = linear_fit(&inv, &fids);
    Ok(FidInf {
        fid_inf: finite(a, "FID∞")?,
        slope: b,
        sizes,
        fids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_reference() {
        // np.linspace(5000, 50000, 15).astype('int32')
        let s = subset_sizes(50_000, 15);
        assert_eq!(s[0], 5000);
        assert_eq!(s[1], 8214);
        assert_eq!(s[14], 50_000);
        // Small N: start at max(N/10, 2).
        let s = subset_sizes(100, 15);
        assert_eq!(s[0], 10);
        assert_eq!(s[14], 100);
    }

    #[test]
    fn fit_recovers_line() {
        let x = [0.1, 0.2, 0.5, 1.0];
        let y: Vec<f64> = x.iter().map(|v| 3.0 + 7.0 * v).collect();
        let (a, b) = linear_fit(&x, &y);
        assert!((a - 3.0).abs() < 1e-12 && (b - 7.0).abs() < 1e-12);
    }
}
