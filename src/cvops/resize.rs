//! `cv2.resize` on interleaved `uint8` images: `INTER_CUBIC` and `INTER_NEAREST`.
//!
//! ## Which `cv2` the cubic resize matches
//!
//! `cv2.resize(.., INTER_CUBIC)` on 8-bit images has two implementations inside
//! OpenCV 4.x, and which one runs depends on the build and on the image:
//!
//! - **IPP** (Intel's library, inside every x86-64 `opencv-python` wheel and on
//!   by default; checked with 4.10, 4.14): used for 1, 3 and 4 channels when
//!   the source is at least 4x4 pixels. It computes the same cubic convolution
//!   (a = -0.75, pixel-centre mapping, replicated border) in `f32` with
//!   unquantised weights and rounds to nearest, ties to even.
//!   [`resize_cubic_u8`] reproduces it: against `cv2` 4.14 on 1,200 random
//!   resizes (8.4 million output values, all sizes 1..800, 1..4 channels) it
//!   differs on 77 values, each by 1. Those are exact ties `k + 0.5` (mostly
//!   from upscales by 1.5, 3, ... of small integer images) that IPP's own
//!   `f32` evaluation order resolves one way or the other; the goldens in
//!   `tests/fixtures/cv` (including 512x512 -> 8x8 and 640x427 -> 10x6) all
//!   match exactly.
//! - **OpenCV's own code** (builds without IPP such as the aarch64 wheels,
//!   `cv2.ipp.setUseIPP(False)`, and always for 2 channels or a source
//!   narrower or shorter than 4 pixels): weights in Q11, two integer passes,
//!   and a final pass that the SIMD loop does in `f32` for each block of 8
//!   output values and the scalar tail in integers. [`resize_cubic_u8_native`]
//!   is this one, bit for bit (0 differences on the same 8.4 million values).
//!   It differs from the IPP result by 1 on about 0.3% to 1.5% of the values of
//!   a generic resize.
//!
//! [`resize_cubic_u8`] falls back to [`resize_cubic_u8_native`] exactly where
//! `cv2` does, so it gives what `pip install opencv-python` gives on x86-64.

/// Fixed-point weight scale of OpenCV's 8-bit resize (`INTER_RESIZE_COEF_BITS`).
const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;
/// Output lanes of OpenCV's 128-bit SIMD vertical cubic pass (`v_int16` lanes).
const SIMD_LANES: usize = 8;

fn check_args(src: &[u8], w: usize, h: usize, ch: usize, dw: usize, dh: usize) {
    assert!(
        (1..=4).contains(&ch),
        "resize: {ch} channels, 1..=4 supported"
    );
    assert!(
        w > 0 && h > 0 && dw > 0 && dh > 0,
        "resize: empty image ({w}x{h} -> {dw}x{dh})"
    );
    assert_eq!(src.len(), w * h * ch, "resize: buffer is not {w}x{h}x{ch}");
}

/// `cv2.resize(img, (dw, dh), interpolation=cv2.INTER_CUBIC)` for a `uint8`
/// `h x w x ch` image (`ch` in 1..=4), as the x86-64 `opencv-python` wheels
/// compute it (with IPP; see the module docs for what that means and for the
/// rare ±1 ties). Returns a `dh x dw x ch` buffer. Panics if the buffer is not
/// `w * h * ch` bytes, a size is 0 or `ch` is not in 1..=4.
pub fn resize_cubic_u8(src: &[u8], w: usize, h: usize, ch: usize, dw: usize, dh: usize) -> Vec<u8> {
    check_args(src, w, h, ch, dw, dh);
    if (w, h) == (dw, dh) {
        return src.to_vec();
    }
    if ch == 2 || w < 4 || h < 4 {
        return resize_cubic_u8_native(src, w, h, ch, dw, dh);
    }
    cubic_f32(src, w, h, ch, dw, dh)
}

/// The cubic kernel with a = -0.75 (IPP's B = 0, C = 0.75) at distance `t`.
fn cubic_kernel(t: f64) -> f64 {
    let t = t.abs();
    if t < 1.0 {
        (1.25 * t - 2.25) * t * t + 1.0
    } else if t < 2.0 {
        ((-0.75 * t + 3.75) * t - 6.0) * t + 3.0
    } else {
        0.0
    }
}

/// Per output index: first of the 4 source taps (may be negative or past the
/// end; callers clamp) and the 4 `f32` weights.
fn float_taps(src_len: usize, dst_len: usize) -> Vec<(isize, [f32; 4])> {
    let scale = src_len as f64 / dst_len as f64;
    (0..dst_len)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let s = f.floor();
            let t = f - s;
            let k = [
                cubic_kernel(t + 1.0) as f32,
                cubic_kernel(t) as f32,
                cubic_kernel(1.0 - t) as f32,
                cubic_kernel(2.0 - t) as f32,
            ];
            (s as isize - 1, k)
        })
        .collect()
}

fn clamp_index(i: isize, len: usize) -> usize {
    i.clamp(0, len as isize - 1) as usize
}

/// The 4 horizontally resized rows (clamped) that output rows starting at tap
/// `sy` read, zipped: one `[row0[x], row1[x], row2[x], row3[x]]` per `x`.
fn taps4<T: Copy>(
    rows: &[Option<Vec<T>>],
    sy: isize,
    h: usize,
) -> impl Iterator<Item = [T; 4]> + '_ {
    let r = [0, 1, 2, 3].map(|k| {
        rows[clamp_index(sy + k, h)]
            .as_deref()
            .expect("every tap row is resized first")
    });
    r[0].iter()
        .zip(r[1])
        .zip(r[2])
        .zip(r[3])
        .map(|(((a, b), c), d)| [*a, *b, *c, *d])
}

/// The IPP-equivalent path: separable `f32` convolution, horizontal first.
fn cubic_f32(src: &[u8], w: usize, h: usize, ch: usize, dw: usize, dh: usize) -> Vec<u8> {
    let xt = float_taps(w, dw);
    let yt = float_taps(h, dh);
    let row_len = dw * ch;
    // Horizontal pass over the source rows that some output row needs.
    let mut rows: Vec<Option<Vec<f32>>> = vec![None; h];
    for &(sy, _) in &yt {
        for k in 0..4 {
            let y = clamp_index(sy + k, h);
            if rows[y].is_some() {
                continue;
            }
            let line = &src[y * w * ch..(y + 1) * w * ch];
            let mut out = Vec::with_capacity(row_len);
            for &(sx, a) in &xt {
                let xs = [0, 1, 2, 3].map(|j| clamp_index(sx + j, w) * ch);
                for c in 0..ch {
                    let p = xs.map(|x| f32::from(line[x + c]));
                    out.push(p[0] * a[0] + p[1] * a[1] + p[2] * a[2] + p[3] * a[3]);
                }
            }
            rows[y] = Some(out);
        }
    }
    let mut dst = Vec::with_capacity(dh * row_len);
    for &(sy, b) in &yt {
        for s in taps4(&rows, sy, h) {
            let v = s[0] * b[0] + s[1] * b[1] + s[2] * b[2] + s[3] * b[3];
            dst.push(v.round_ties_even().clamp(0.0, 255.0) as u8);
        }
    }
    dst
}

/// OpenCV's `interpolateCubic` in `f32`, in its evaluation order.
fn opencv_cubic_coeffs(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    let c3 = 1.0 - c0 - c1 - c2;
    [c0, c1, c2, c3]
}

/// Per output index: first source tap and the 4 weights in Q11, as OpenCV's
/// resize sets them up (`f32` source position, `cvRound`, saturate to `i16`).
fn fixed_taps(src_len: usize, dst_len: usize) -> Vec<(isize, [i32; 4])> {
    // cv::resize passes inv_scale = dst/src and the HAL inverts it again.
    let scale = 1.0 / (dst_len as f64 / src_len as f64);
    (0..dst_len)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let c = opencv_cubic_coeffs(f - s);
            let q = c.map(|v| (v * COEF_SCALE).round_ties_even().clamp(-32768.0, 32767.0) as i32);
            (s as isize - 1, q)
        })
        .collect()
}

/// `cv2.resize(img, (dw, dh), interpolation=cv2.INTER_CUBIC)` as OpenCV's own
/// code computes it, i.e. with IPP off (`cv2.ipp.setUseIPP(False)`, builds
/// without IPP such as the aarch64 wheels). Bit-exact; see the module docs.
/// Same arguments and panics as [`resize_cubic_u8`].
pub fn resize_cubic_u8_native(
    src: &[u8],
    w: usize,
    h: usize,
    ch: usize,
    dw: usize,
    dh: usize,
) -> Vec<u8> {
    check_args(src, w, h, ch, dw, dh);
    if (w, h) == (dw, dh) {
        return src.to_vec();
    }
    let xt = fixed_taps(w, dw);
    let yt = fixed_taps(h, dh);
    let row_len = dw * ch;
    let mut rows: Vec<Option<Vec<i32>>> = vec![None; h];
    for &(sy, _) in &yt {
        for k in 0..4 {
            let y = clamp_index(sy + k, h);
            if rows[y].is_some() {
                continue;
            }
            let line = &src[y * w * ch..(y + 1) * w * ch];
            let mut out = Vec::with_capacity(row_len);
            for &(sx, a) in &xt {
                let xs = [0, 1, 2, 3].map(|j| clamp_index(sx + j, w) * ch);
                for c in 0..ch {
                    out.push((0..4).map(|j| i32::from(line[xs[j] + c]) * a[j]).sum());
                }
            }
            rows[y] = Some(out);
        }
    }
    // The scaled-back vertical weights of the SIMD loop: beta * 2^-22, exact.
    let unscale = 1.0 / (COEF_SCALE * COEF_SCALE);
    let mut dst = Vec::with_capacity(dh * row_len);
    for &(sy, b) in &yt {
        let bf = b.map(|v| v as f32 * unscale);
        let mut column = taps4(&rows, sy, h);
        // Whole blocks of 8 go through the SIMD code: convert to f32 and
        // accumulate as muladd(S0, b0, muladd(S1, b1, muladd(S2, b2, S3 * b3))),
        // round to nearest even, saturate.
        for s in column.by_ref().take(row_len - row_len % SIMD_LANES) {
            let s = s.map(|v| v as f32);
            let mut t = s[3] * bf[3];
            t += s[2] * bf[2];
            t += s[1] * bf[1];
            t += s[0] * bf[0];
            dst.push(t.round_ties_even().clamp(0.0, 255.0) as u8);
        }
        // The tail: integer sum, rounding shift by 22 bits, saturate.
        for s in column {
            let sum: i32 = (0..4).map(|k| s[k] * b[k]).sum();
            let v = (sum + (1 << (2 * COEF_BITS - 1))) >> (2 * COEF_BITS);
            dst.push(v.clamp(0, 255) as u8);
        }
    }
    dst
}

/// `cv2.resize(img, (dw, dh), interpolation=cv2.INTER_NEAREST)` for a `uint8`
/// `h x w x ch` image (`ch` in 1..=4): output pixel `(dx, dy)` copies source
/// pixel `(floor(dx * w / dw), floor(dy * h / dh))`, clamped, with the ratio taken
/// the way OpenCV does (`1 / (dw / w)` in `f64`). Exact for every build (IPP
/// is not used for nearest).
pub fn resize_nearest_u8(
    src: &[u8],
    w: usize,
    h: usize,
    ch: usize,
    dw: usize,
    dh: usize,
) -> Vec<u8> {
    check_args(src, w, h, ch, dw, dh);
    let index = |d: usize, dst_len: usize, src_len: usize| {
        let inv = 1.0 / (dst_len as f64 / src_len as f64);
        ((d as f64 * inv).floor() as usize).min(src_len - 1)
    };
    let xs: Vec<usize> = (0..dw).map(|dx| index(dx, dw, w) * ch).collect();
    let mut dst = Vec::with_capacity(dw * dh * ch);
    for dy in 0..dh {
        let sy = index(dy, dh, h);
        let line = &src[sy * w * ch..(sy + 1) * w * ch];
        for &x in &xs {
            dst.extend_from_slice(&line[x..x + ch]);
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvops::fixtures::{assert_same, gradient_noise, noise, png, Img};

    /// An input from a committed PNG or re-made from the shared generator.
    fn input(name: &str) -> Img {
        match name {
            "noise512" => noise(1, 512, 512, 3),
            "gray512" => noise(3, 512, 512, 1),
            "grad640" => gradient_noise(2, 640, 427, 3),
            _ => png(&format!("in_{name}.png")),
        }
    }

    /// (input, dw, dh): the cases of `CUBIC_CASES` in `cv_goldens.py`.
    const CUBIC: &[(&str, usize, usize)] = &[
        ("noise512", 8, 8),
        ("gray512", 8, 8),
        ("grad640", 10, 6),
        ("up", 23, 17),
        ("gray", 13, 9),
        ("rgba", 11, 13),
        ("half", 32, 24),
        ("twoch", 5, 45),
        ("tiny", 10, 4),
        ("simd", 36, 89),
    ];

    #[test]
    fn cubic_matches_cv2_default_goldens() {
        for &(name, dw, dh) in CUBIC {
            let i = input(name);
            let got = resize_cubic_u8(&i.data, i.width, i.height, i.channels, dw, dh);
            let want = png(&format!("cubic_{name}_{dw}x{dh}_ipp.png"));
            assert_eq!(
                (want.width, want.height, want.channels),
                (dw, dh, i.channels)
            );
            assert_same(&format!("cubic {name} -> {dw}x{dh}"), &got, &want);
        }
    }

    #[test]
    fn cubic_native_matches_cv2_without_ipp_goldens() {
        for &(name, dw, dh) in CUBIC {
            let i = input(name);
            let got = resize_cubic_u8_native(&i.data, i.width, i.height, i.channels, dw, dh);
            let want = png(&format!("cubic_{name}_{dw}x{dh}_noipp.png"));
            assert_same(&format!("cubic native {name} -> {dw}x{dh}"), &got, &want);
        }
    }

    #[test]
    fn the_two_cubic_paths_differ_by_at_most_one() {
        let i = input("grad640");
        for (dw, dh) in [(10, 6), (37, 29), (300, 200)] {
            let a = resize_cubic_u8(&i.data, i.width, i.height, 3, dw, dh);
            let b = resize_cubic_u8_native(&i.data, i.width, i.height, 3, dw, dh);
            let off = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            assert!(a.iter().zip(&b).all(|(x, y)| x.abs_diff(*y) <= 1));
            assert!(off * 10 < a.len(), "{dw}x{dh}: {off} of {} differ", a.len());
        }
    }

    #[test]
    fn cubic_keeps_flat_images_flat_and_same_size_is_a_copy() {
        let flat = vec![77u8; 30 * 20 * 3];
        for (dw, dh) in [(7, 5), (64, 41), (1, 1)] {
            for out in [
                resize_cubic_u8(&flat, 30, 20, 3, dw, dh),
                resize_cubic_u8_native(&flat, 30, 20, 3, dw, dh),
            ] {
                assert_eq!(out, vec![77u8; dw * dh * 3]);
            }
        }
        let i = noise(9, 13, 11, 2);
        assert_eq!(resize_cubic_u8(&i.data, 13, 11, 2, 13, 11), i.data);
    }

    #[test]
    fn cubic_2x_downscale_by_hand() {
        // 4x1 -> 2x1: x = 0 samples at -0.5 (taps -2..1, clamped), weights
        // (-3, 19, 19, -3) / 32 in both implementations.
        let src = [0u8, 64, 128, 255];
        // dst0 = (-3*0 + 19*0 + 19*64 - 3*128) / 32 = 26; dst1 = (-3*64 + 19*128
        // + 19*255 - 3*255) / 32 = 197.5, which the integer tail rounds half up:
        // (6320 * 64 * 2048 + 2^21) >> 22 = 198.
        let r = resize_cubic_u8_native(&src, 4, 1, 1, 2, 1);
        assert_eq!(r, vec![26, 198]);
    }

    #[test]
    fn nearest_by_hand() {
        let src = [1u8, 2, 3, 4];
        assert_eq!(
            resize_nearest_u8(&src, 2, 2, 1, 4, 4),
            vec![1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]
        );
        // Downscale 5 -> 2 takes columns floor(0 * 2.5) = 0 and floor(2.5) = 2.
        assert_eq!(
            resize_nearest_u8(&[10, 20, 30, 40, 50], 5, 1, 1, 2, 1),
            vec![10, 30]
        );
        // Channels travel together.
        assert_eq!(
            resize_nearest_u8(&[1, 2, 3, 4, 5, 6], 2, 1, 3, 3, 1),
            vec![1, 2, 3, 1, 2, 3, 4, 5, 6]
        );
    }

    #[test]
    fn nearest_matches_cv2_goldens() {
        for (name, dw, dh) in [("eight", 512, 512), ("small", 7, 11), ("grad640", 10, 6)] {
            let i = input(name);
            let got = resize_nearest_u8(&i.data, i.width, i.height, i.channels, dw, dh);
            let want = png(&format!("nearest_{name}_{dw}x{dh}.png"));
            assert_same(&format!("nearest {name} -> {dw}x{dh}"), &got, &want);
        }
    }

    #[test]
    #[should_panic(expected = "buffer is not")]
    fn wrong_buffer_size_panics() {
        resize_nearest_u8(&[0; 5], 2, 2, 1, 4, 4);
    }
}
