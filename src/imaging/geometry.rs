//! The geometric transform from a source image to the output image, applied identically
//! to pixels (antialiased resize), label maps (nearest neighbour, labels never mixed) and
//! keypoints (continuous coordinates), so every condition lines up with the image.
//!
//! `center-crop` follows torchvision's `Resize(R)` + `CenterCrop(R)` as diffusers'
//! T2I-Adapter trainer uses them on PIL images: the short side becomes R, the long side
//! `int(R·long/short)`, and the crop offset is `round((size − R)/2)` with Python's
//! round-half-to-even.

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{GrayImage, RgbImage};

use crate::config::ResizeMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub src_w: u32,
    pub src_h: u32,
    /// Size after the resize step, before cropping.
    pub resized_w: u32,
    pub resized_h: u32,
    pub crop_x: u32,
    pub crop_y: u32,
    pub out_w: u32,
    pub out_h: u32,
}

/// Python's `round()` for a non-negative half-integer or integer: ties to even.
fn round_half_even(x2: u32) -> u32 {
    // x2 is twice the value, so x2 odd means a .5 tie.
    let q = x2 / 2;
    if x2 % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

impl Geometry {
    pub fn new(mode: ResizeMode, resolution: u32, src_w: u32, src_h: u32) -> Geometry {
        let r = resolution;
        let (resized_w, resized_h) = match mode {
            ResizeMode::Stretch => (r, r),
            ResizeMode::CenterCrop | ResizeMode::KeepRatio => {
                let (w, h) = (u64::from(src_w), u64::from(src_h));
                if w <= h {
                    (r, ((u64::from(r) * h / w) as u32).max(1))
                } else {
                    (((u64::from(r) * w / h) as u32).max(1), r)
                }
            }
        };
        let (crop_x, crop_y, out_w, out_h) = match mode {
            ResizeMode::CenterCrop => (
                round_half_even(resized_w - r),
                round_half_even(resized_h - r),
                r,
                r,
            ),
            _ => (0, 0, resized_w, resized_h),
        };
        Geometry {
            src_w,
            src_h,
            resized_w,
            resized_h,
            crop_x,
            crop_y,
            out_w,
            out_h,
        }
    }

    /// Resize (antialiased bilinear, as PIL's BILINEAR that torchvision uses) then crop,
    /// in one pass: only the output pixels are computed. The resizer's crop box keeps the
    /// full-image sampling grid (pixel centres at `(crop + x + 0.5)·scale`, kernels clamped
    /// to the whole source), so this equals resizing the whole image and cropping it up to
    /// ±1 on a few values (0.03 % on a 640×427 test image) where the coefficients' floating
    /// point rounding differs; it is deterministic either way.
    pub fn apply_rgb(&self, img: &RgbImage) -> RgbImage {
        debug_assert_eq!(img.dimensions(), (self.src_w, self.src_h));
        if (self.resized_w, self.resized_h) == (self.src_w, self.src_h) {
            return crop_rows(img, self.crop_x, self.crop_y, self.out_w, self.out_h);
        }
        let sx = f64::from(self.src_w) / f64::from(self.resized_w);
        let sy = f64::from(self.src_h) / f64::from(self.resized_h);
        let mut dst = RgbImage::new(self.out_w, self.out_h);
        let opts = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(
                f64::from(self.crop_x) * sx,
                f64::from(self.crop_y) * sy,
                f64::from(self.out_w) * sx,
                f64::from(self.out_h) * sy,
            );
        // Both images are plain RGB8 buffers of the declared sizes and the crop box lies
        // inside the source, which is all the resizer checks; an error here is a bug.
        thread_local! {
            // One resizer per thread: it keeps its scratch buffer from image to image
            // (a fresh one allocates and zeroes it on every call).
            static RESIZER: std::cell::RefCell<Resizer> = std::cell::RefCell::new(Resizer::new());
        }
        RESIZER.with(|r| {
            r.borrow_mut()
                .resize(img, &mut dst, &opts)
                .expect("RGB8 resize between valid buffers")
        });
        dst
    }

    /// Nearest-neighbour (pixel-centre convention, as PIL NEAREST) resize of a label map
    /// into the resized frame, then the same crop. Works when the map's size differs from
    /// the image's: it is stretched onto the same frame.
    pub fn apply_labels(&self, labels: &GrayImage) -> GrayImage {
        let (lw, lh) = labels.dimensions();
        let xs: Vec<u32> = (0..self.out_w)
            .map(|x| nearest_src(x + self.crop_x, self.resized_w, lw))
            .collect();
        GrayImage::from_fn(self.out_w, self.out_h, |x, y| {
            let sy = nearest_src(y + self.crop_y, self.resized_h, lh);
            *labels.get_pixel(xs[x as usize], sy)
        })
    }

    /// Map a point in source pixel coordinates (continuous: pixel i spans [i, i+1)) to the
    /// output image.
    pub fn map_point(&self, x: f32, y: f32) -> (f32, f32) {
        let sx = self.resized_w as f64 / self.src_w as f64;
        let sy = self.resized_h as f64 / self.src_h as f64;
        (
            (x as f64 * sx - self.crop_x as f64) as f32,
            (y as f64 * sy - self.crop_y as f64) as f32,
        )
    }
}

/// A sub-rectangle, copied row by row.
fn crop_rows(img: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
    if (x, y, w, h) == (0, 0, img.width(), img.height()) {
        return img.clone();
    }
    let stride = img.width() as usize * 3;
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for row in y..y + h {
        let start = row as usize * stride + x as usize * 3;
        out.extend_from_slice(&img.as_raw()[start..start + w as usize * 3]);
    }
    RgbImage::from_raw(w, h, out).expect("w*h*3 bytes")
}

/// Source index of destination index `d` when `src` pixels are stretched over `dst`.
fn nearest_src(d: u32, dst: u32, src: u32) -> u32 {
    let s = ((u64::from(d) * 2 + 1) * u64::from(src)) / (u64::from(dst) * 2);
    (s as u32).min(src - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_crop_matches_torchvision_sizes() {
        // 640×427 landscape at 512: short side 427 → 512, long int(512·640/427) = 767,
        // crop left round((767−512)/2) = round(127.5) = 128 (ties to even).
        let g = Geometry::new(ResizeMode::CenterCrop, 512, 640, 427);
        assert_eq!((g.resized_w, g.resized_h), (767, 512));
        assert_eq!((g.crop_x, g.crop_y, g.out_w, g.out_h), (128, 0, 512, 512));
        // 480×640 portrait: 512×682, top round(85.0) = 85.
        let g = Geometry::new(ResizeMode::CenterCrop, 512, 480, 640);
        assert_eq!(
            (g.resized_w, g.resized_h, g.crop_x, g.crop_y),
            (512, 682, 0, 85)
        );
        // round(0.5) = 0 and round(1.5) = 2 in Python.
        assert_eq!(round_half_even(1), 0);
        assert_eq!(round_half_even(3), 2);
        assert_eq!(round_half_even(5), 2);
        let g = Geometry::new(ResizeMode::KeepRatio, 256, 640, 427);
        assert_eq!((g.out_w, g.out_h), (383, 256));
        let g = Geometry::new(ResizeMode::Stretch, 256, 640, 427);
        assert_eq!((g.out_w, g.out_h, g.crop_x), (256, 256, 0));
    }

    #[test]
    fn points_follow_the_pixels() {
        let g = Geometry::new(ResizeMode::CenterCrop, 100, 400, 200);
        // 400×200 → 200×100, crop 50 px on the left.
        assert_eq!(g.map_point(200.0, 100.0), (50.0, 50.0));
        assert_eq!(g.map_point(0.0, 0.0), (-50.0, 0.0));
    }

    #[test]
    fn labels_use_nearest_and_never_mix() {
        // Left half label 3, right half label 7, upscaled 2→8 wide and cropped.
        let labels = GrayImage::from_fn(2, 2, |x, _| image::Luma([if x == 0 { 3 } else { 7 }]));
        let g = Geometry::new(ResizeMode::Stretch, 8, 2, 2);
        let out = g.apply_labels(&labels);
        let row: Vec<u8> = (0..8).map(|x| out.get_pixel(x, 0)[0]).collect();
        assert_eq!(row, vec![3, 3, 3, 3, 7, 7, 7, 7]);
    }

    #[test]
    fn one_pass_crop_equals_resize_then_crop() {
        let img = RgbImage::from_fn(640, 427, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 13 % 256) as u8,
                ((x * y) % 251) as u8,
            ])
        });
        let g = Geometry::new(ResizeMode::CenterCrop, 512, 640, 427);
        let fast = g.apply_rgb(&img);
        let mut full = RgbImage::new(g.resized_w, g.resized_h);
        Resizer::new()
            .resize(
                &img,
                &mut full,
                &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            )
            .unwrap();
        let slow = image::imageops::crop_imm(&full, g.crop_x, g.crop_y, 512, 512).to_image();
        let diffs: Vec<i32> = fast
            .as_raw()
            .iter()
            .zip(slow.as_raw())
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .filter(|d| *d > 0)
            .collect();
        assert!(
            diffs.iter().all(|d| *d <= 1),
            "only rounding-level differences"
        );
        assert!(
            diffs.len() * 1000 < fast.as_raw().len(),
            "{} values differ",
            diffs.len()
        );
        // No resize needed: a plain crop.
        let g = Geometry::new(ResizeMode::CenterCrop, 427, 640, 427);
        let c = g.apply_rgb(&img);
        assert_eq!(c.get_pixel(0, 0), img.get_pixel(g.crop_x, 0));
    }

    #[test]
    fn resize_keeps_flat_colour_exact() {
        let img = RgbImage::from_pixel(640, 427, image::Rgb([10, 120, 250]));
        let g = Geometry::new(ResizeMode::CenterCrop, 512, 640, 427);
        let out = g.apply_rgb(&img);
        assert_eq!(out.dimensions(), (512, 512));
        assert!(out.pixels().all(|p| p.0 == [10, 120, 250]));
    }
}
