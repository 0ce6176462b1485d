//! T2I-Adapter's spatial palette (`AddSpatialPalette`, downscale factor 64):
//! `cv2.resize(img, (w//64, h//64), INTER_CUBIC)` then
//! `cv2.resize(small, (w, h), INTER_NEAREST)`.

use image::RgbImage;

use crate::cvops::resize::{resize_cubic_u8, resize_nearest_u8};

pub const DOWNSCALE: u32 = 64;

pub fn spatial_palette(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    // OpenCV refuses a zero-sized target; an image under 64 px keeps one palette cell.
    let sw = (w / DOWNSCALE).max(1);
    let sh = (h / DOWNSCALE).max(1);
    let small = resize_cubic_u8(
        img.as_raw(),
        w as usize,
        h as usize,
        3,
        sw as usize,
        sh as usize,
    );
    let big = resize_nearest_u8(&small, sw as usize, sh as usize, 3, w as usize, h as usize);
    RgbImage::from_raw(w, h, big).expect("nearest resize returns w*h*3 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_cells_are_flat_64px_blocks() {
        // Each 64×64 block a flat colour: cubic downsampling by exactly 64 of flat blocks
        // samples inside each block, so each cell keeps its block's colour exactly.
        let img = RgbImage::from_fn(256, 128, |x, y| {
            let (bx, by) = (x / 64, y / 64);
            image::Rgb([(bx * 60) as u8, (by * 100) as u8, 77])
        });
        let out = spatial_palette(&img);
        assert_eq!(out.dimensions(), (256, 128));
        for (x, y, p) in out.enumerate_pixels() {
            let (bx, by) = (x / 64, y / 64);
            assert_eq!(p.0, [(bx * 60) as u8, (by * 100) as u8, 77], "at {x},{y}");
        }
    }

    #[test]
    fn small_images_keep_one_cell() {
        let img = RgbImage::from_pixel(40, 30, image::Rgb([9, 8, 7]));
        let out = spatial_palette(&img);
        assert_eq!(out.dimensions(), (40, 30));
        assert!(out.pixels().all(|p| p.0 == [9, 8, 7]));
    }
}
