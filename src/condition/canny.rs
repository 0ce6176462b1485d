//! Canny edges as `cv2.Canny(img, 100, 200)` on the RGB image (controlnet_aux's
//! CannyDetector and T2I-Adapter's canny condition): one channel, 0 or 255.

use image::{GrayImage, RgbImage};

pub const LOW: f64 = 100.0;
pub const HIGH: f64 = 200.0;

pub fn canny_map(img: &RgbImage) -> GrayImage {
    let (w, h) = img.dimensions();
    let edges = crate::cvops::canny::canny(img.as_raw(), w as usize, h as usize, 3, LOW, HIGH);
    GrayImage::from_raw(w, h, edges).expect("canny returns w*h bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_edge_gives_one_thin_line() {
        // Left half black, right half white: one vertical edge, nothing elsewhere.
        let img = RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        let out = canny_map(&img);
        for y in 0..16 {
            let row: Vec<u32> = (0..32).filter(|&x| out.get_pixel(x, y)[0] == 255).collect();
            assert_eq!(row.len(), 1, "row {y}: one edge pixel, got {row:?}");
            assert!(
                row[0] == 15 || row[0] == 16,
                "row {y}: edge at the step, got {row:?}"
            );
        }
        assert!(out.pixels().all(|p| p[0] == 0 || p[0] == 255));
    }

    #[test]
    fn flat_image_has_no_edges() {
        let img = RgbImage::from_pixel(20, 20, image::Rgb([90, 90, 90]));
        assert!(canny_map(&img).pixels().all(|p| p[0] == 0));
    }
}
