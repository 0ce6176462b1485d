//! Feature-model input preprocessing that must match the reference implementations
//! bit-for-bit in spirit (f32 rounding aside).
//!
//! - [`pytorch_fid`]: pytorch-fid's Inception input — RGB → [0, 1] → bilinear resize
//!   (`F.interpolate(mode="bilinear", align_corners=False)`, no antialias) → 2x − 1, CHW.

use image::RgbImage;

/// Source taps of one output coordinate of PyTorch's bilinear resize, align_corners=False:
/// `src = max((o + 0.5) · in/out − 0.5, 0)`, `i0 = ⌊src⌋`, `i1 = min(i0 + 1, in − 1)`,
/// weights `(1 − λ, λ)` with `λ = src − i0`.
fn taps(input: u32, output: u32) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input as usize - 1);
            let i1 = (i0 + 1).min(input as usize - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// pytorch-fid's Inception input for one image: `3 × size × size` f32 values in CHW order,
/// in [−1, 1].
pub fn pytorch_fid(img: &RgbImage, size: u32) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let xs = taps(w, size);
    let ys = taps(h, size);
    let s = size as usize;
    let plane = s * s;
    let px = img.as_raw();
    let at = |x: usize, y: usize, c: usize| px[(y * w as usize + x) * 3 + c] as f32 / 255.0;
    let mut out = vec![0f32; 3 * plane];
    for (oy, &(y0, y1, ly)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, lx)) in xs.iter().enumerate() {
            for c in 0..3 {
                let top = (1.0 - lx) * at(x0, y0, c) + lx * at(x1, y0, c);
                let bot = (1.0 - lx) * at(x0, y1, c) + lx * at(x1, y1, c);
                let v = (1.0 - ly) * top + ly * bot;
                out[c * plane + oy * s + ox] = 2.0 * v - 1.0;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_rescale() {
        let img = RgbImage::from_fn(4, 3, |x, y| {
            image::Rgb([(x * 60) as u8, (y * 100) as u8, 255])
        });
        let v = pytorch_fid(&img, 4);
        // 4×3 → 4×4: columns are exact (scale 1); check a pixel value of the red plane.
        assert!((v[0] - -1.0).abs() < 1e-6);
        assert!((v[3] - (2.0 * 180.0 / 255.0 - 1.0)).abs() < 1e-6);
        // blue is 255 everywhere → 1.
        assert!(v[32..48].iter().all(|&b| (b - 1.0).abs() < 1e-6));
    }

    #[test]
    fn downscale_by_two_averages_pairs_without_antialias() {
        // in/out = 2: src = 2o + 0.5 → the mean of pixels 2o and 2o + 1 (no wider filter).
        let img = RgbImage::from_fn(4, 4, |x, _| {
            image::Rgb([[0, 100, 200, 50][x as usize], 0, 0])
        });
        let v = pytorch_fid(&img, 2);
        let want = |a: f32, b: f32| 2.0 * ((a + b) / 2.0 / 255.0) - 1.0;
        assert!((v[0] - want(0.0, 100.0)).abs() < 1e-6, "{}", v[0]);
        assert!((v[1] - want(200.0, 50.0)).abs() < 1e-6, "{}", v[1]);
    }

    #[test]
    fn upscale_clamps_at_the_borders() {
        // 2 → 4: src = (o + 0.5)/2 − 0.5 = −0.25 (clamped to 0), 0.25, 0.75, 1.25 (i1 clamped).
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([[0, 255][x as usize], 0, 0]));
        let v = pytorch_fid(&img, 4);
        let want = [0.0, 0.25, 0.75, 1.0].map(|t: f32| 2.0 * t - 1.0);
        for (g, w) in v[..4].iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
