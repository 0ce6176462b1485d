//! Pure-Rust ports of the few OpenCV (4.x) operations that the reference
//! condition extractors (T2I-Adapter, controlnet_aux) run through `cv2`, written
//! to give the same pixels as `cv2`:
//!
//! - [`resize`]: `cv2.resize` with `INTER_CUBIC` and `INTER_NEAREST` on `uint8`;
//! - [`canny`]: `cv2.Canny(img, low, high)` (aperture 3, L1 gradient);
//! - [`draw`]: `cv2.circle(.., -1)` and `cv2.line` with `LINE_8`, `shift=0`.
//!
//! Images are interleaved `u8` buffers, row-major, `width * height * channels`
//! bytes, in whatever channel order the caller uses (these ops treat every channel
//! alike, except Canny's per-pixel channel choice, which is order-independent up
//! to ties, see [`canny::canny`]).
//!
//! The golden files under `tests/fixtures/cv/` come from the real `cv2`; they are
//! made and re-checked by `python3 tests/reference/cv_goldens.py [--check]`.

pub mod canny;
pub mod draw;
pub mod linear;
pub mod resize;

/// Test support: loading the `cv2` goldens and re-making their generated inputs.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::PathBuf;

    /// An interleaved 8-bit image read from a fixture.
    pub struct Img {
        pub data: Vec<u8>,
        pub width: usize,
        pub height: usize,
        pub channels: usize,
    }

    pub fn path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cv")
            .join(name)
    }

    /// Reads `tests/fixtures/cv/<name>`, a PNG whose channels (gray, gray+alpha,
    /// RGB, RGBA) are the array's channels in their stored order.
    pub fn png(name: &str) -> Img {
        let p = path(name);
        let img = image::open(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        let (width, height) = (img.width() as usize, img.height() as usize);
        let (data, channels) = match img {
            image::DynamicImage::ImageLuma8(b) => (b.into_raw(), 1),
            image::DynamicImage::ImageLumaA8(b) => (b.into_raw(), 2),
            image::DynamicImage::ImageRgb8(b) => (b.into_raw(), 3),
            image::DynamicImage::ImageRgba8(b) => (b.into_raw(), 4),
            other => panic!("{}: unexpected PNG type {:?}", p.display(), other.color()),
        };
        Img {
            data,
            width,
            height,
            channels,
        }
    }

    /// Reads a whitespace-separated table of integers, one record per line.
    pub fn int_table(name: &str) -> Vec<Vec<i32>> {
        let p = path(name);
        let text =
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                l.split_whitespace()
                    .map(|v| {
                        v.parse()
                            .unwrap_or_else(|e| panic!("{}: {v:?}: {e}", p.display()))
                    })
                    .collect()
            })
            .collect()
    }

    /// `n` bytes of splitmix64 (the top byte of each output), the same generator
    /// as `prng_bytes` in `tests/reference/cv_goldens.py`: large noise inputs are
    /// re-made from it instead of being stored.
    pub fn prng_bytes(seed: u64, n: usize) -> Vec<u8> {
        (1..=n as u64)
            .map(|i| {
                let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                (z >> 56) as u8
            })
            .collect()
    }

    /// Uniform noise, `h x w x ch`.
    pub fn noise(seed: u64, w: usize, h: usize, ch: usize) -> Img {
        Img {
            data: prng_bytes(seed, w * h * ch),
            width: w,
            height: h,
            channels: ch,
        }
    }

    /// A smooth per-channel gradient plus noise in -10..=10 (`gradient_noise` in
    /// the Python script).
    pub fn gradient_noise(seed: u64, w: usize, h: usize, ch: usize) -> Img {
        let n = prng_bytes(seed, w * h * ch);
        let mut data = Vec::with_capacity(w * h * ch);
        for y in 0..h {
            for x in 0..w {
                for c in 0..ch {
                    let base = (x * 200 / (w - 1) + y * 55 / (h - 1) + 60 * c) % 256;
                    let noise = i64::from(n[(y * w + x) * ch + c] % 21) - 10;
                    data.push((base as i64 + noise).clamp(0, 255) as u8);
                }
            }
        }
        Img {
            data,
            width: w,
            height: h,
            channels: ch,
        }
    }

    /// Asserts equal buffers, naming the first few differing pixels.
    pub fn assert_same(case: &str, got: &[u8], want: &Img) {
        assert_eq!(got.len(), want.data.len(), "{case}: output size");
        let ch = want.channels;
        let bad: Vec<String> = got
            .iter()
            .zip(&want.data)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(10)
            .map(|(i, (a, b))| {
                let p = i / ch;
                format!(
                    "(x={}, y={}, c={}): got {a}, cv2 {b}",
                    p % want.width,
                    p / want.width,
                    i % ch
                )
            })
            .collect();
        let n = got.iter().zip(&want.data).filter(|(a, b)| a != b).count();
        assert!(n == 0, "{case}: {n} bytes differ from cv2, e.g. {bad:?}");
    }
}
