//! Initial latents: the seeded generator, and `--init-noise F.npy`.
//!
//! The generator (the same numbers on every platform): ChaCha8 (`rand_chacha::ChaCha8Rng`)
//! seeded with `seed_from_u64(seed)`, stream 0. Each pair of standard normals comes from two
//! 64-bit words `a`, `b`: `u1 = ((a >> 11) + 1) · 2⁻⁵³` (in (0, 1]), `u2 = (b >> 11) · 2⁻⁵³`,
//! `z0 = √(−2 ln u1) · cos(2π u2)`, `z1 = √(−2 ln u1) · sin(2π u2)` (Box–Muller, in f64,
//! rounded to f32), filling the latents `[1, C, h, w]` in row-major order. Row i of a run
//! uses seed `--seed + i` (recorded in the output's `seed` column).

use std::path::Path;

use anyhow::{bail, Context, Result};
use rand_chacha::rand_core::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How the noise was made (written into generate.json).
pub const DESCRIPTION: &str =
    "ChaCha8 seed_from_u64(seed + row), Box-Muller over 53-bit uniforms, f32, row-major [1,C,h,w]";

/// `n` standard normal values from `seed`.
pub fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scale = 1.0 / (1u64 << 53) as f64;
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = ((rng.next_u64() >> 11) + 1) as f64 * scale;
        let u2 = (rng.next_u64() >> 11) as f64 * scale;
        let r = (-2.0 * u1.ln()).sqrt();
        let th = 2.0 * std::f64::consts::PI * u2;
        out.push((r * th.cos()) as f32);
        out.push((r * th.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// `--init-noise`: `[C, h, w]` or `[1, C, h, w]` (every row) or `[N, C, h, w]` (row i).
pub struct InitNoise {
    path: String,
    data: Vec<f32>,
    shape: Vec<usize>,
}

pub fn read_init_noise(path: &Path) -> Result<InitNoise> {
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .with_context(|| format!("--init-noise {}: cannot open", path.display()))
    };
    let arr: ndarray::ArrayD<f32> = match ndarray_npy::ReadNpyExt::read_npy(open()?) {
        Ok(a) => a,
        Err(_) => {
            let a: ndarray::ArrayD<f64> = ndarray_npy::ReadNpyExt::read_npy(open()?)
                .with_context(|| {
                    format!(
                        "--init-noise {}: not a float32/float64 .npy array (save it with np.save(path, x.astype(np.float32)))",
                        path.display()
                    )
                })?;
            a.mapv(|x| x as f32)
        }
    };
    let mut shape = arr.shape().to_vec();
    if shape.len() == 3 {
        shape.insert(0, 1);
    }
    if shape.len() != 4 {
        bail!(
            "--init-noise {}: shape {:?}; expected [N, C, h, w] or [C, h, w]",
            path.display(),
            arr.shape()
        );
    }
    Ok(InitNoise {
        path: path.display().to_string(),
        data: arr.iter().copied().collect(),
        shape,
    })
}

impl InitNoise {
    /// The latents of row `i`, checked against the shape the image needs.
    pub fn for_row(&self, i: usize, want: &[usize; 4]) -> Result<Vec<f32>> {
        if self.shape[1..] != want[1..] {
            bail!(
                "--init-noise {}: latents of shape {:?} do not fit the image, which needs [{}, {}, {}]",
                self.path,
                &self.shape[1..],
                want[1],
                want[2],
                want[3]
            );
        }
        let n = want[1] * want[2] * want[3];
        let j = if self.shape[0] == 1 {
            0
        } else if i < self.shape[0] {
            i
        } else {
            bail!(
                "--init-noise {}: has {} rows of latents, the input has more rows (row {i}); give one per row or one for all",
                self.path,
                self.shape[0]
            );
        };
        Ok(self.data[j * n..(j + 1) * n].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_standard_normal() {
        let a = gaussian(42, 10001);
        assert_eq!(a, gaussian(42, 10001));
        assert_ne!(a[..8], gaussian(43, 8)[..]);
        assert_eq!(a[..7], gaussian(42, 7)[..]);
        let n = a.len() as f64;
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        assert!(a.iter().all(|x| x.is_finite()));
    }
}
