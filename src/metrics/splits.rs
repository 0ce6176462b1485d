//! Confidence intervals for FID and CMMD from K disjoint subsets of the generated set
//! (a seeded permutation cut into K equal parts, the remainder dropped), each scored
//! against the full reference. Never a bootstrap with replacement: duplicated samples
//! shrink the covariance's rank and inflate FID.

use anyhow::{bail, Result};

use super::rng::Rng;

#[derive(Debug, Clone, serde::Serialize)]
pub struct SplitSummary {
    pub splits: usize,
    pub split_size: usize,
    pub mean: f64,
    /// Sample standard deviation over splits (ddof = 1).
    pub std: f64,
    pub values: Vec<f64>,
}

/// K disjoint index sets of equal size from `0..n`.
pub fn disjoint_splits(
    n: usize,
    k: usize,
    min_size: usize,
    rng: &mut Rng,
) -> Result<Vec<Vec<usize>>> {
    if k < 2 {
        bail!("--ci-splits needs at least 2 splits");
    }
    let size = n / k;
    if size < min_size {
        bail!("{n} generated samples cut into {k} splits give {size} per split; at least {min_size} are needed");
    }
    let perm = rng.permutation(n);
    Ok((0..k)
        .map(|i| perm[i * size..(i + 1) * size].to_vec())
        .collect())
}

pub fn summarize(values: Vec<f64>, split_size: usize) -> SplitSummary {
    let k = values.len() as f64;
    let mean = values.iter().sum::<f64>() / k;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (k - 1.0);
    SplitSummary {
        splits: values.len(),
        split_size,
        mean,
        std: var.sqrt(),
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_disjoint() {
        let s = disjoint_splits(103, 4, 2, &mut Rng::new(0, 3)).unwrap();
        assert_eq!(s.len(), 4);
        let mut all: Vec<usize> = s.concat();
        assert_eq!(all.len(), 100);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 100);
    }
}
