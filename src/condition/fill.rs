//! A model's NCHW float input written from the RGB image: interleaved 8-bit pixels →
//! three normalised planes, `(p / divide − mean[c]) / std[c]` in f32, bit-identical to
//! evaluating that expression per value (the table [`Norm::lut`] holds it for every level).
//!
//! With AVX2 each row goes 16 pixels at a time: byte shuffles split the channels and the
//! same IEEE operations (convert, divide, subtract, divide; no fused multiply-add, no
//! reciprocal) run eight lanes wide, so the results equal the table's bit for bit. A
//! multiply by a precomputed reciprocal would not: x·(1/127.5) − 1 differs from
//! x/127.5 − 1 in the last bit for 111 of the 256 levels. The planes are written with
//! streaming stores (the network reads them only after other images' inference has gone
//! through the cache). Without AVX2, and for the last pixels of a row, the table is used.

/// The normalisation of one model input.
pub struct Norm {
    pub divide: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The normalised value of each level, per channel.
    pub lut: [[f32; 256]; 3],
}

impl Norm {
    pub fn new(divide: f32, mean: [f32; 3], std: [f32; 3]) -> Norm {
        let lut = std::array::from_fn(|c| {
            std::array::from_fn(|p| Norm::value(divide, mean[c], std[c], p as f32))
        });
        Norm {
            divide,
            mean,
            std,
            lut,
        }
    }

    /// The one expression every path evaluates.
    pub fn value(divide: f32, mean: f32, std: f32, p: f32) -> f32 {
        (p / divide - mean) / std
    }
}

/// Where the image sits in the input canvas, and the padding's value per plane.
pub struct Canvas {
    pub size: (usize, usize),
    pub content: (usize, usize),
    pub off: (usize, usize),
    pub pad: [f32; 3],
}

/// Write the three planes (each `size.0 · size.1` floats) of an NCHW input: plane `c`
/// holds channel `order[c]` of the `content`-sized RGB image `src`, normalised, at `off`,
/// and the padding value around it.
pub fn planes(src: &[u8], canvas: &Canvas, order: [usize; 3], norm: &Norm, dst: [&mut [f32]; 3]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        unsafe { avx2::planes(src, canvas, order, norm, dst) };
        return;
    }
    each_row(src, canvas, dst, |s, d| table_row(s, order, norm, d, 0));
}

/// The loop over the canvas rows: padding rows and borders filled, and `row(src, dst)`
/// for the content part of each content row.
#[inline(always)]
fn each_row(
    src: &[u8],
    canvas: &Canvas,
    dst: [&mut [f32]; 3],
    mut row: impl FnMut(&[u8], [&mut [f32]; 3]),
) {
    let ((iw, _), (cw, ch), (ox, oy), pad) = (canvas.size, canvas.content, canvas.off, canvas.pad);
    let [p0, p1, p2] = dst;
    let rows = p0
        .chunks_exact_mut(iw)
        .zip(p1.chunks_exact_mut(iw))
        .zip(p2.chunks_exact_mut(iw));
    for (y, ((r0, r1), r2)) in rows.enumerate() {
        if y < oy || y >= oy + ch {
            r0.fill(pad[0]);
            r1.fill(pad[1]);
            r2.fill(pad[2]);
            continue;
        }
        for (r, p) in [(&mut *r0, pad[0]), (&mut *r1, pad[1]), (&mut *r2, pad[2])] {
            r[..ox].fill(p);
            r[ox + cw..].fill(p);
        }
        let s = &src[(y - oy) * cw * 3..(y - oy + 1) * cw * 3];
        row(
            s,
            [
                &mut r0[ox..ox + cw],
                &mut r1[ox..ox + cw],
                &mut r2[ox..ox + cw],
            ],
        );
    }
}

/// Pixels `from..` of one row through the table.
#[inline(always)]
fn table_row(src: &[u8], order: [usize; 3], norm: &Norm, dst: [&mut [f32]; 3], from: usize) {
    let [d0, d1, d2] = dst;
    let [s0, s1, s2] = order;
    let [l0, l1, l2] = &norm.lut;
    let tail = d0[from..]
        .iter_mut()
        .zip(&mut d1[from..])
        .zip(&mut d2[from..]);
    for (((a, b), c), px) in tail.zip(src[from * 3..].chunks_exact(3)) {
        *a = l0[px[s0] as usize];
        *b = l1[px[s1] as usize];
        *c = l2[px[s2] as usize];
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{each_row, table_row, Canvas, Norm};
    use std::arch::x86_64::*;

    /// pshufb masks that gather channel `ch` of 16 RGB pixels from the 16-byte register
    /// `reg` (0, 1, 2) of the 48 bytes into its output lanes (0x80 zeroes a lane).
    const fn mask(ch: usize, reg: usize) -> [u8; 16] {
        let mut m = [0x80u8; 16];
        let mut out = 0;
        while out < 16 {
            let pos = 3 * out + ch;
            if pos >= 16 * reg && pos < 16 * (reg + 1) {
                m[out] = (pos - 16 * reg) as u8;
            }
            out += 1;
        }
        m
    }

    const MASKS: [[[u8; 16]; 3]; 3] = {
        let mut m = [[[0u8; 16]; 3]; 3];
        let mut ch = 0;
        while ch < 3 {
            let mut reg = 0;
            while reg < 3 {
                m[ch][reg] = mask(ch, reg);
                reg += 1;
            }
            ch += 1;
        }
        m
    };

    /// [`super::planes`] with 16 pixels at a time.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn planes(
        src: &[u8],
        canvas: &Canvas,
        order: [usize; 3],
        norm: &Norm,
        dst: [&mut [f32]; 3],
    ) {
        // A division by 1 returns its operand exactly: skip it (one loop per case, so
        // that the loop has no branch).
        let std_one = norm.std.iter().all(|&s| s == 1.0);
        match (norm.divide == 1.0, std_one) {
            (false, true) => each::<true, false>(src, canvas, order, norm, dst),
            (false, false) => each::<true, true>(src, canvas, order, norm, dst),
            (true, true) => each::<false, false>(src, canvas, order, norm, dst),
            (true, false) => each::<false, true>(src, canvas, order, norm, dst),
        }
        // Streaming stores are weakly ordered: complete them before the buffer is handed
        // to the inference thread.
        _mm_sfence();
    }

    #[target_feature(enable = "avx2")]
    fn each<const DIVIDE: bool, const STD: bool>(
        src: &[u8],
        canvas: &Canvas,
        order: [usize; 3],
        norm: &Norm,
        dst: [&mut [f32]; 3],
    ) {
        each_row(src, canvas, dst, |s, [d0, d1, d2]| {
            // SAFETY: AVX2 is present (this function requires it).
            let done =
                unsafe { rows::<DIVIDE, STD>(s, order, norm, [&mut *d0, &mut *d1, &mut *d2]) };
            table_row(s, order, norm, [d0, d1, d2], done);
        });
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn rows<const DIVIDE: bool, const STD: bool>(
        src: &[u8],
        order: [usize; 3],
        norm: &Norm,
        dst: [&mut [f32]; 3],
    ) -> usize {
        let n = (src.len() / 3)
            .min(dst[0].len())
            .min(dst[1].len())
            .min(dst[2].len());
        let blocks = n / 16;
        // Per output plane: the shuffles of its source channel, its mean and std.
        let masks: [[__m128i; 3]; 3] = std::array::from_fn(|c| {
            std::array::from_fn(|r| unsafe { _mm_loadu_si128(MASKS[order[c]][r].as_ptr().cast()) })
        });
        let mean: [__m256; 3] = std::array::from_fn(|c| _mm256_set1_ps(norm.mean[c]));
        let std: [__m256; 3] = std::array::from_fn(|c| _mm256_set1_ps(norm.std[c]));
        let divide = _mm256_set1_ps(norm.divide);
        let [d0, d1, d2] = dst;
        let out = [d0.as_mut_ptr(), d1.as_mut_ptr(), d2.as_mut_ptr()];
        // The input is read by the network only after other images' inference has
        // passed through the cache: write it around the cache (no read for ownership,
        // no eviction of the pipeline's hot data) where the rows are 16-byte aligned.
        let streaming = out.iter().all(|p| (*p as usize) % 16 == 0);
        for b in 0..blocks {
            // SAFETY: block b covers bytes 48b..48b+48 of src and floats 16b..16b+16 of
            // each plane, all within bounds since 16·blocks ≤ n.
            unsafe {
                let p = src.as_ptr().add(48 * b);
                let r = [
                    _mm_loadu_si128(p.cast()),
                    _mm_loadu_si128(p.add(16).cast()),
                    _mm_loadu_si128(p.add(32).cast()),
                ];
                for c in 0..3 {
                    let bytes = _mm_or_si128(
                        _mm_or_si128(
                            _mm_shuffle_epi8(r[0], masks[c][0]),
                            _mm_shuffle_epi8(r[1], masks[c][1]),
                        ),
                        _mm_shuffle_epi8(r[2], masks[c][2]),
                    );
                    for (half, v) in [bytes, _mm_srli_si128(bytes, 8)].into_iter().enumerate() {
                        let mut x = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
                        if DIVIDE {
                            x = _mm256_div_ps(x, divide);
                        }
                        x = _mm256_sub_ps(x, mean[c]);
                        if STD {
                            x = _mm256_div_ps(x, std[c]);
                        }
                        let at = out[c].add(16 * b + 8 * half);
                        if streaming {
                            _mm_stream_ps(at, _mm256_castps256_ps128(x));
                            _mm_stream_ps(at.add(4), _mm256_extractf128_ps::<1>(x));
                        } else {
                            _mm256_storeu_ps(at, x);
                        }
                    }
                }
            }
        }
        16 * blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: every value of the canvas evaluated on its own.
    fn expected(src: &[u8], canvas: &Canvas, order: [usize; 3], norm: &Norm) -> Vec<u32> {
        let ((iw, ih), (cw, ch), (ox, oy)) = (canvas.size, canvas.content, canvas.off);
        let mut v = Vec::new();
        for c in 0..3 {
            for y in 0..ih {
                for x in 0..iw {
                    let inside = (ox..ox + cw).contains(&x) && (oy..oy + ch).contains(&y);
                    v.push(if inside {
                        let p = src[((y - oy) * cw + x - ox) * 3 + order[c]];
                        Norm::value(norm.divide, norm.mean[c], norm.std[c], p as f32).to_bits()
                    } else {
                        canvas.pad[c].to_bits()
                    });
                }
            }
        }
        v
    }

    #[test]
    fn planes_equal_the_expression_bit_for_bit() {
        // Every level in every channel position, widths with and without a 16-pixel tail,
        // padding on each side, and the contracts of the bundled manifests (MiDaS,
        // ImageNet, RTMPose, Caffe, none).
        let norms = [
            Norm::new(127.5, [1.0; 3], [1.0; 3]),
            Norm::new(255.0, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            Norm::new(1.0, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),
            Norm::new(1.0, [104.00699, 116.66877, 122.67892], [1.0; 3]),
            Norm::new(255.0, [0.0; 3], [1.0; 3]),
        ];
        let mut seed = 7u32;
        let cases = [
            // (content, canvas, offset)
            ((256, 1), (256, 1), (0, 0)),
            ((1, 2), (1, 2), (0, 0)),
            ((17, 3), (20, 5), (2, 1)),
            ((33, 4), (40, 4), (7, 0)),
            ((517, 2), (520, 3), (0, 1)),
            ((64, 3), (64, 6), (0, 3)),
        ];
        for norm in &norms {
            for order in [[0, 1, 2], [2, 1, 0]] {
                for &((cw, ch), (iw, ih), off) in &cases {
                    let src: Vec<u8> = (0..3 * cw * ch)
                        .map(|i| {
                            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                            if i < 768 {
                                (i / 3) as u8
                            } else {
                                (seed >> 24) as u8
                            }
                        })
                        .collect();
                    let canvas = Canvas {
                        size: (iw, ih),
                        content: (cw, ch),
                        off,
                        pad: [-7.0, 0.5, 3.25],
                    };
                    let mut v = vec![f32::NAN; 3 * iw * ih];
                    let (p0, rest) = v.split_at_mut(iw * ih);
                    let (p1, p2) = rest.split_at_mut(iw * ih);
                    planes(&src, &canvas, order, norm, [p0, p1, p2]);
                    let got: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
                    assert_eq!(
                        got,
                        expected(&src, &canvas, order, norm),
                        "content {cw}x{ch} in {iw}x{ih} at {off:?}, order {order:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_table_is_the_expression() {
        let norm = Norm::new(127.5, [1.0; 3], [1.0; 3]);
        assert_eq!(norm.lut[0][0], -1.0);
        assert_eq!(norm.lut[1][255], 1.0);
        assert_eq!(norm.lut[2][51].to_bits(), (51f32 / 127.5 - 1.0).to_bits());
    }
}
