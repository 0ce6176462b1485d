//! Bilinear `uint8` ops as OpenCV 4.x computes them on x86-64, for DWPose's route:
//!
//! - [`resize_linear_u8`]: `cv2.resize(.., INTER_LINEAR)` (YOLOX's letterbox): 11-bit
//!   fixed-point taps from `float` positions (half-pixel centres; x taps clamped at the
//!   borders, y taps not — the row index is clamped instead), the vertical pass of the
//!   SIMD kernel `((S0>>4)·b0 >> 16) + ((S1>>4)·b1 >> 16) + 2 >> 2`, and the exact ×2
//!   downscale that cv2 turns into `INTER_AREA` (2×2 mean, rounded).
//! - [`warp_affine_linear_u8`]: `cv2.warpAffine(.., INTER_LINEAR)` with a constant black
//!   border (RTMPose's crop): the matrix is inverted as cv2 does, source positions in
//!   1/32 pixel from 10-bit fixed-point increments, 15-bit bilinear weights.
//!
//! Both are checked pixel for pixel against goldens made by cv2 4.14
//! (`tests/reference/cv_goldens.py`, `LINEAR_CASES` and `WARP_CASES`).

/// One resize tap: left index and the two 11-bit weights.
fn linear_taps(n_src: usize, n_dst: usize, clamp_weights: bool) -> Vec<(i64, [i32; 2])> {
    let scale = 1.0 / (n_dst as f64 / n_src as f64);
    (0..n_dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut t = f - s as f32;
            if clamp_weights {
                if s < 0 {
                    s = 0;
                    t = 0.0;
                }
                if s >= n_src as i64 - 1 {
                    s = n_src as i64 - 1;
                    t = 0.0;
                }
            }
            let w0 = ((1.0f32 - t) * 2048.0).round_ties_even() as i32;
            let w1 = (t * 2048.0).round_ties_even() as i32;
            (s, [w0, w1])
        })
        .collect()
}

/// `cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)` on interleaved `u8`.
pub fn resize_linear_u8(
    src: &[u8],
    w: usize,
    h: usize,
    ch: usize,
    dw: usize,
    dh: usize,
) -> Vec<u8> {
    if (dw, dh) == (w, h) {
        return src.to_vec();
    }
    if w == 2 * dw && h == 2 * dh {
        // cv2 runs INTER_AREA for an exact ×2 downscale: the rounded 2×2 mean.
        let mut out = vec![0u8; dw * dh * ch];
        for y in 0..dh {
            let r0 = &src[(2 * y) * w * ch..(2 * y + 1) * w * ch];
            let r1 = &src[(2 * y + 1) * w * ch..(2 * y + 2) * w * ch];
            for x in 0..dw {
                for c in 0..ch {
                    let i = 2 * x * ch + c;
                    let s = r0[i] as u32 + r0[i + ch] as u32 + r1[i] as u32 + r1[i + ch] as u32;
                    out[(y * dw + x) * ch + c] = ((s + 2) >> 2) as u8;
                }
            }
        }
        return out;
    }
    let tx = linear_taps(w, dw, true);
    let ty = linear_taps(h, dh, false);
    let last = w as i64 - 1;
    let row_len = dw * ch;
    // Horizontal pass of one source row into 11-bit fixed point.
    let hrow = |y: usize, out: &mut [i32]| {
        let r = &src[y * w * ch..(y + 1) * w * ch];
        for (x, &(s, [a0, a1])) in tx.iter().enumerate() {
            let i0 = s as usize;
            let i1 = (s + 1).min(last) as usize;
            for c in 0..ch {
                out[x * ch + c] = r[i0 * ch + c] as i32 * a0 + r[i1 * ch + c] as i32 * a1;
            }
        }
    };
    let mut rows: Vec<Option<(usize, Vec<i32>)>> = vec![None, None];
    let mut out = vec![0u8; row_len * dh];
    for (y, &(s, [b0, b1])) in ty.iter().enumerate() {
        let y0 = s.clamp(0, h as i64 - 1) as usize;
        let y1 = (s + 1).clamp(0, h as i64 - 1) as usize;
        for (slot, sy) in [y0, y1].into_iter().enumerate() {
            if rows[slot].as_ref().map(|r| r.0) != Some(sy) {
                let reuse = rows.iter().find_map(|r| match r {
                    Some((yy, v)) if *yy == sy => Some(v.clone()),
                    _ => None,
                });
                let v = reuse.unwrap_or_else(|| {
                    let mut v = vec![0i32; row_len];
                    hrow(sy, &mut v);
                    v
                });
                rows[slot] = Some((sy, v));
            }
        }
        let (Some((_, s0)), Some((_, s1))) = (&rows[0], &rows[1]) else {
            unreachable!("both rows were just filled")
        };
        let o = &mut out[y * row_len..(y + 1) * row_len];
        for ((d, &a), &b) in o.iter_mut().zip(s0).zip(s1) {
            let v = (((a >> 4) * b0) >> 16) + (((b >> 4) * b1) >> 16);
            *d = ((v + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    out
}

/// `cv2.warpAffine(src, m, (dw, dh), flags=cv2.INTER_LINEAR)` (border constant 0) on
/// interleaved `u8`; `m` is the forward 2×3 matrix (source → destination), row-major.
pub fn warp_affine_linear_u8(
    src: &[u8],
    w: usize,
    h: usize,
    ch: usize,
    m: [f64; 6],
    dw: usize,
    dh: usize,
) -> Vec<u8> {
    // Invert as cv2 does (without WARP_INVERSE_MAP).
    let mut m = m;
    let d = m[0] * m[4] - m[1] * m[3];
    let d = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (a11, a22) = (m[4] * d, m[0] * d);
    m[0] = a11;
    m[1] *= -d;
    m[3] *= -d;
    m[4] = a22;
    let b1 = -m[0] * m[2] - m[1] * m[5];
    let b2 = -m[3] * m[2] - m[4] * m[5];
    m[2] = b1;
    m[5] = b2;
    const AB_BITS: i32 = 10;
    const AB_SCALE: f64 = (1 << AB_BITS) as f64;
    const INTER_BITS: i32 = 5;
    const TAB: i64 = 1 << INTER_BITS;
    const ROUND_DELTA: i64 = (1 << AB_BITS) / TAB / 2;
    let sat_i32 = |v: f64| v.round_ties_even().clamp(i32::MIN as f64, i32::MAX as f64) as i64;
    let adelta: Vec<i64> = (0..dw)
        .map(|x| sat_i32(m[0] * x as f64 * AB_SCALE))
        .collect();
    let bdelta: Vec<i64> = (0..dw)
        .map(|x| sat_i32(m[3] * x as f64 * AB_SCALE))
        .collect();
    let mut out = vec![0u8; dw * dh * ch];
    let (wi, hi) = (w as i64, h as i64);
    for y in 0..dh {
        let x0 = sat_i32((m[1] * y as f64 + m[2]) * AB_SCALE) + ROUND_DELTA;
        let y0 = sat_i32((m[4] * y as f64 + m[5]) * AB_SCALE) + ROUND_DELTA;
        for x in 0..dw {
            let xx = (x0 + adelta[x]) >> (AB_BITS - INTER_BITS);
            let yy = (y0 + bdelta[x]) >> (AB_BITS - INTER_BITS);
            let sx = (xx >> INTER_BITS).clamp(i16::MIN as i64, i16::MAX as i64);
            let sy = (yy >> INTER_BITS).clamp(i16::MIN as i64, i16::MAX as i64);
            let (fx, fy) = (xx & (TAB - 1), yy & (TAB - 1));
            // 15-bit weights: (1−a)(1−b) etc. in 1/32 steps, exact.
            let wts = [
                (TAB - fy) * (TAB - fx) * 32,
                (TAB - fy) * fx * 32,
                fy * (TAB - fx) * 32,
                fy * fx * 32,
            ];
            let o = &mut out[(y * dw + x) * ch..(y * dw + x + 1) * ch];
            if sx >= wi || sx + 1 < 0 || sy >= hi || sy + 1 < 0 {
                continue; // entirely outside: the border value 0
            }
            for (c, oc) in o.iter_mut().enumerate() {
                let mut acc = 0i64;
                for (k, (dx, dy)) in [(0, 0), (1, 0), (0, 1), (1, 1)].into_iter().enumerate() {
                    let (px, py) = (sx + dx, sy + dy);
                    if px >= 0 && px < wi && py >= 0 && py < hi {
                        acc += src[((py * wi + px) as usize) * ch + c] as i64 * wts[k];
                    }
                }
                *oc = ((acc + (1 << 14)) >> 15).clamp(0, 255) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvops::fixtures::{assert_same, gradient_noise, noise, png, Img};

    fn input(name: &str) -> Img {
        match name {
            "noise96" => noise(4, 96, 64, 3),
            "grad640" => gradient_noise(2, 640, 427, 3),
            _ => png(&format!("in_{name}.png")),
        }
    }

    fn label(v: f64) -> String {
        format!("{v}").replace('.', "p")
    }

    #[test]
    fn resize_linear_matches_cv2_goldens() {
        let cases: &[(&str, usize, usize)] = &[
            ("noise96", 160, 106),
            ("grad640", 150, 100),
            ("up", 23, 17),
            ("half", 32, 24),
            ("tiny", 10, 4),
            ("shapes", 200, 151),
        ];
        for &(name, dw, dh) in cases {
            let i = input(name);
            let got = resize_linear_u8(&i.data, i.width, i.height, i.channels, dw, dh);
            let want = png(&format!("linear_{name}_{dw}x{dh}.png"));
            assert_same(&format!("linear {name} -> {dw}x{dh}"), &got, &want);
        }
    }

    #[test]
    fn warp_affine_matches_cv2_goldens() {
        let cases: &[(&str, u32, u32, f64, f64)] = &[
            ("grad640", 1, 5, 320.0, 213.5),
            ("grad640", 12, 5, 100.25, 400.75),
            ("noise96", 3, 1, 48.0, 32.0),
            ("noise96", 36, 5, 10.5, -3.25),
            ("shapes", 9, 10, 64.0, 48.0),
            ("grad640", 2, 7, 700.0, 50.0),
        ];
        for &(name, num, den, cx, cy) in cases {
            let i = input(name);
            let s = num as f64 / den as f64;
            let m = [s, 0.0, 48.0 - s * cx, 0.0, s, 64.0 - s * cy];
            let got = warp_affine_linear_u8(&i.data, i.width, i.height, i.channels, m, 96, 128);
            let file = format!("warp_{name}_{num}_{den}_{}_{}.png", label(cx), label(cy));
            assert_same(&file, &got, &png(&file));
        }
    }

    #[test]
    fn identity_and_constant_images() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_linear_u8(&src, 5, 4, 3, 5, 4), src);
        let id = warp_affine_linear_u8(&src, 5, 4, 3, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 5, 4);
        assert_eq!(id, src);
        // A constant image stays constant inside, and the border is black.
        let c = vec![200u8; 8 * 8];
        let up = resize_linear_u8(&c, 8, 8, 1, 13, 11);
        assert!(up.iter().all(|&v| v == 200));
        let shifted = warp_affine_linear_u8(&c, 8, 8, 1, [1.0, 0.0, 4.0, 0.0, 1.0, 0.0], 8, 8);
        assert_eq!(&shifted[..4], &[0, 0, 0, 0]);
        assert_eq!(&shifted[4..8], &[200, 200, 200, 200]);
        // Half-pixel shift: the edge between black and 200 is 100.
        let half = warp_affine_linear_u8(&c, 8, 8, 1, [1.0, 0.0, 0.5, 0.0, 1.0, 0.0], 8, 8);
        assert_eq!(&half[..3], &[100, 200, 200]);
        // Exact ×2 downscale is the rounded 2×2 mean.
        assert_eq!(resize_linear_u8(&[0, 1, 2, 3], 2, 2, 1, 1, 1), vec![2]);
    }
}
