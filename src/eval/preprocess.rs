//! Feature-model input preprocessing, matching the reference implementations:
//!
//! - `Resample::TorchBilinear`: pytorch-fid's Inception input — RGB → [0, 1] → bilinear
//!   resize (`F.interpolate(mode="bilinear", align_corners=False)`, no antialias) → 2x − 1.
//! - [`pil_resize_u8`] / [`pil_resize_f32`]: Pillow's `Image.resize(…, BICUBIC)` (Resample.c:
//!   antialiased convolution, horizontal pass then vertical; 22-bit fixed point with uint8
//!   rounding between the passes for 8-bit images, double accumulation for "F" images).
//! - [`prepare`]: a manifest's [`InputSpec`] applied to an image (size policy, resample
//!   filter, normalisation, channel order, layout) — what `prep eval features` feeds a model.

use anyhow::{bail, Result};
use image::RgbImage;

use crate::cvops::resize::resize_cubic_u8;
use crate::models::{ChannelOrder, DType, InputSpec, Layout, Resample, SizePolicy};

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

/// Pillow's bicubic kernel (a = −0.5).
fn pil_bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` for the whole input range: per output pixel, the first
/// input index and its normalised weights.
fn pil_coeffs(input: usize, output: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ss = 1.0 / filterscale;
    (0..output)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let mut k: Vec<f64> = (xmin..xmax)
                .map(|x| pil_bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|w| *w /= ww);
            }
            (xmin, k)
        })
        .collect()
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `normalize_coeffs_8bpc`: round half away from zero to 22-bit fixed point.
fn fixed(k: &[f64]) -> Vec<i32> {
    let one = (1u32 << PRECISION_BITS) as f64;
    k.iter()
        .map(|&w| {
            if w < 0.0 {
                (-0.5 + w * one) as i32
            } else {
                (0.5 + w * one) as i32
            }
        })
        .collect()
}

fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow `Image.resize((w, h), BICUBIC)` of an 8-bit image with `c` interleaved channels.
pub fn pil_resize_u8(src: &[u8], w: usize, h: usize, c: usize, ow: usize, oh: usize) -> Vec<u8> {
    if (w, h) == (ow, oh) {
        return src.to_vec();
    }
    let hc = pil_coeffs(w, ow);
    let vc = pil_coeffs(h, oh);
    // Horizontal pass over the rows the vertical pass reads (all of them here).
    let tmp: Vec<u8> = if ow != w {
        let hk: Vec<(usize, Vec<i32>)> = hc.iter().map(|(x0, k)| (*x0, fixed(k))).collect();
        let mut t = vec![0u8; ow * h * c];
        for y in 0..h {
            let row = &src[y * w * c..(y + 1) * w * c];
            for (xx, (x0, k)) in hk.iter().enumerate() {
                for ch in 0..c {
                    let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                    for (j, &kw) in k.iter().enumerate() {
                        ss += row[(x0 + j) * c + ch] as i32 * kw;
                    }
                    t[(y * ow + xx) * c + ch] = clip8(ss);
                }
            }
        }
        t
    } else {
        src.to_vec()
    };
    if oh == h {
        return tmp;
    }
    let vk: Vec<(usize, Vec<i32>)> = vc.iter().map(|(y0, k)| (*y0, fixed(k))).collect();
    let mut out = vec![0u8; ow * oh * c];
    for (yy, (y0, k)) in vk.iter().enumerate() {
        for x in 0..ow * c {
            let mut ss: i32 = 1 << (PRECISION_BITS - 1);
            for (j, &kw) in k.iter().enumerate() {
                ss += tmp[(y0 + j) * ow * c + x] as i32 * kw;
            }
            out[yy * ow * c + x] = clip8(ss);
        }
    }
    out
}

/// Pillow `Image.resize((w, h), BICUBIC)` of one float ("F" mode) plane: double
/// accumulation, float32 between and after the passes.
pub fn pil_resize_f32(src: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    if (w, h) == (ow, oh) {
        return src.to_vec();
    }
    let tmp: Vec<f32> = if ow != w {
        let hc = pil_coeffs(w, ow);
        let mut t = vec![0f32; ow * h];
        for y in 0..h {
            let row = &src[y * w..(y + 1) * w];
            for (xx, (x0, k)) in hc.iter().enumerate() {
                let ss: f64 = k
                    .iter()
                    .enumerate()
                    .map(|(j, &kw)| row[x0 + j] as f64 * kw)
                    .sum();
                t[y * ow + xx] = ss as f32;
            }
        }
        t
    } else {
        src.to_vec()
    };
    if oh == h {
        return tmp;
    }
    let vc = pil_coeffs(h, oh);
    let mut out = vec![0f32; ow * oh];
    for (yy, (y0, k)) in vc.iter().enumerate() {
        for x in 0..ow {
            let ss: f64 = k
                .iter()
                .enumerate()
                .map(|(j, &kw)| tmp[(y0 + j) * ow + x] as f64 * kw)
                .sum();
            out[yy * ow + x] = ss as f32;
        }
    }
    out
}

/// PyTorch bilinear (align_corners=False, no antialias) of an 8-bit RGB image to
/// `ow × oh`, in pixel units (0..255), interleaved.
fn torch_bilinear(img: &RgbImage, ow: u32, oh: u32) -> Vec<f32> {
    let (w, _) = img.dimensions();
    let xs = taps(w, ow);
    let ys = taps(img.height(), oh);
    let px = img.as_raw();
    let row = w as usize * 3;
    // v / 255 for each level, looked up (the same division, without one per tap).
    let unit: [f32; 256] = std::array::from_fn(|v| v as f32 / 255.0);
    let mut out = Vec::with_capacity((ow * oh * 3) as usize);
    for &(y0, y1, ly) in &ys {
        let (r0, r1) = (&px[y0 * row..(y0 + 1) * row], &px[y1 * row..(y1 + 1) * row]);
        for &(x0, x1, lx) in &xs {
            let (a0, a1) = (&r0[x0 * 3..x0 * 3 + 3], &r0[x1 * 3..x1 * 3 + 3]);
            let (b0, b1) = (&r1[x0 * 3..x0 * 3 + 3], &r1[x1 * 3..x1 * 3 + 3]);
            for c in 0..3 {
                let top = (1.0 - lx) * unit[a0[c] as usize] + lx * unit[a1[c] as usize];
                let bot = (1.0 - lx) * unit[b0[c] as usize] + lx * unit[b1[c] as usize];
                out.push(((1.0 - ly) * top + ly * bot) * 255.0);
            }
        }
    }
    out
}

/// torchvision `Resize(size)` on a (w, h) image: the shorter side becomes `size`, the
/// longer `int(size · long / short)`.
pub fn short_side_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((size as u64 * long as u64) as f64 / short as f64) as u32;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision `CenterCrop`: offset `int(round((side − crop) / 2))`, half to even.
fn center_offset(side: u32, crop: u32) -> usize {
    let d = side.saturating_sub(crop) as f64 / 2.0;
    d.round_ties_even() as usize
}

/// Resize an RGB image to (ow, oh) with `filter`; values in pixel units, interleaved.
fn resample(img: &RgbImage, filter: Resample, ow: u32, oh: u32) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ow_, oh_) = (ow as usize, oh as usize);
    match filter {
        Resample::CvCubic => resize_cubic_u8(img.as_raw(), w, h, 3, ow_, oh_)
            .into_iter()
            .map(f32::from)
            .collect(),
        Resample::CvLinear => {
            crate::cvops::linear::resize_linear_u8(img.as_raw(), w, h, 3, ow_, oh_)
                .into_iter()
                .map(f32::from)
                .collect()
        }
        Resample::PilBicubic => pil_resize_u8(img.as_raw(), w, h, 3, ow_, oh_)
            .into_iter()
            .map(f32::from)
            .collect(),
        Resample::TorchBilinear => torch_bilinear(img, ow, oh),
        Resample::PilBicubicFloat => {
            let planes: Vec<Vec<f32>> = (0..3)
                .map(|c| {
                    let plane: Vec<f32> = img.as_raw()[c..]
                        .iter()
                        .step_by(3)
                        .map(|&v| f32::from(v))
                        .collect();
                    pil_resize_f32(&plane, w, h, ow_, oh_)
                })
                .collect();
            let mut out = Vec::with_capacity(ow_ * oh_ * 3);
            for i in 0..ow_ * oh_ {
                for p in &planes {
                    out.push(p[i].clamp(0.0, 255.0));
                }
            }
            out
        }
    }
}

/// The model input of one image under a feature model's [`InputSpec`]: `3 × H × W` (NCHW)
/// or `H × W × 3` (NHWC) float32 values, and the (H, W) it has.
pub fn prepare(spec: &InputSpec, img: &RgbImage) -> Result<(Vec<f32>, (usize, usize))> {
    if spec.dtype != DType::F32 {
        bail!(
            "feature models take float32 input; the I/O spec says {:?}",
            spec.dtype
        );
    }
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        bail!("empty image ({w}×{h})");
    }
    // Resized pixels (interleaved RGB, pixel units) and their size.
    let (pixels, pw, ph) = match spec.size {
        SizePolicy::Any => (resample(img, spec.resample, w, h), w, h),
        SizePolicy::Fixed { width, height } => {
            (resample(img, spec.resample, width, height), width, height)
        }
        SizePolicy::ShortSide { size } => {
            let (rw, rh) = short_side_size(w, h, size);
            let full = resample(img, spec.resample, rw, rh);
            let (ox, oy) = (center_offset(rw, size), center_offset(rh, size));
            let s = size as usize;
            let mut crop = Vec::with_capacity(s * s * 3);
            for y in oy..oy + s {
                let row = (y * rw as usize + ox) * 3;
                crop.extend_from_slice(&full[row..row + s * 3]);
            }
            (crop, size, size)
        }
        SizePolicy::Multiple { .. } | SizePolicy::Letterbox { .. } => bail!(
            "size policy {:?} is for condition models; feature models use fixed, short-side or any",
            spec.size
        ),
    };
    let (pw, ph) = (pw as usize, ph as usize);
    let order: [usize; 3] = match spec.channels {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    let norm = |c: usize, p: f32| (p / spec.divide - spec.mean[c]) / spec.std[c];
    let mut out = vec![0f32; pw * ph * 3];
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        for (c, &sc) in order.iter().enumerate() {
            let v = norm(c, px[sc]);
            match spec.layout {
                Layout::Nchw => out[c * pw * ph + i] = v,
                Layout::Nhwc => out[i * 3 + c] = v,
            }
        }
    }
    Ok((out, (ph, pw)))
}

/// pytorch-fid's Inception input for one image at `size`² (CHW, in [−1, 1]): [`prepare`]
/// with the `inception` entry's spec.
pub fn pytorch_fid(img: &RgbImage, size: u32) -> Vec<f32> {
    let spec = InputSpec {
        name: None,
        layout: Layout::Nchw,
        channels: ChannelOrder::Rgb,
        dtype: DType::F32,
        size: SizePolicy::Fixed {
            width: size,
            height: size,
        },
        resample: Resample::TorchBilinear,
        divide: 127.5,
        mean: [1.0; 3],
        std: [1.0; 3],
        pad_value: 0.0,
    };
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 || size == 0 {
        return Vec::new();
    }
    // The spec is valid and the image non-empty, so `prepare` cannot fail.
    prepare(&spec, img).map(|(v, _)| v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_bilinear_equals_the_per_tap_formula_bit_for_bit() {
        // The definition, one division per tap: the row-sliced, table-driven version must
        // give the same f32 bits.
        let naive = |img: &RgbImage, ow: u32, oh: u32| -> Vec<f32> {
            let (w, _) = img.dimensions();
            let (xs, ys) = (taps(w, ow), taps(img.height(), oh));
            let px = img.as_raw();
            let at = |x: usize, y: usize, c: usize| px[(y * w as usize + x) * 3 + c] as f32 / 255.0;
            let mut out = Vec::new();
            for &(y0, y1, ly) in &ys {
                for &(x0, x1, lx) in &xs {
                    for c in 0..3 {
                        let top = (1.0 - lx) * at(x0, y0, c) + lx * at(x1, y0, c);
                        let bot = (1.0 - lx) * at(x0, y1, c) + lx * at(x1, y1, c);
                        out.push(((1.0 - ly) * top + ly * bot) * 255.0);
                    }
                }
            }
            out
        };
        let img = RgbImage::from_fn(97, 61, |x, y| {
            image::Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (255 - x - y) as u8])
        });
        for (ow, oh) in [(299, 299), (40, 23), (97, 61), (13, 150)] {
            let (a, b) = (torch_bilinear(&img, ow, oh), naive(&img, ow, oh));
            assert_eq!(a.len(), b.len());
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{ow}×{oh}"
            );
        }
    }

    #[test]
    fn pil_bicubic_of_a_uniform_image_is_uniform_and_short_side_is_torchvision() {
        let img = RgbImage::from_pixel(37, 90, image::Rgb([7, 200, 255]));
        let out = pil_resize_u8(img.as_raw(), 37, 90, 3, 11, 29);
        assert!(out.chunks(3).all(|p| p == [7, 200, 255]));
        assert_eq!(short_side_size(64, 48, 224), (298, 224));
        assert_eq!(short_side_size(33, 250, 224), (224, 1696));
        assert_eq!((center_offset(298, 224), center_offset(225, 224)), (37, 0));
        assert_eq!(center_offset(227, 224), 2); // round(1.5) = 2 (half to even)
        assert_eq!(center_offset(229, 224), 2); // round(2.5) = 2
    }

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
