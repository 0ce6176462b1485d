//! Keypoints drawn as T2I-Adapter draws MMPose results (`imshow_keypoints` in
//! `ldm/modules/extra_condition/utils.py`, called with radius 2 and thickness 2):
//!
//! - a black canvas; persons drawn in order, each: first its keypoints as filled circles
//!   (only those whose score/visibility ≥ the threshold), then its 19 skeleton links as
//!   lines, a link skipped when either endpoint is under the threshold or outside the
//!   image (`x <= 0 || x >= w || y <= 0 || y >= h`, with coordinates truncated by `int()`);
//! - the reference's colours are BGR tuples on a BGR canvas that is then converted to RGB,
//!   so here they are stored already swapped: the head is RGB (255, 153, 51).
//!
//! Rasterisation is OpenCV's (`cv2.circle` filled, `cv2.line` LINE_8), ported in
//! [`crate::cvops::draw`], so the map equals the reference pixel for pixel.

use image::RgbImage;

use crate::cvops::draw::{circle_filled, line, Canvas};
use crate::record::Person;

/// The 19 COCO skeleton links, 0-based (COCO's `skeleton` shifted by one).
pub const SKELETON: [[usize; 2]; 19] = [
    [15, 13],
    [13, 11],
    [16, 14],
    [14, 12],
    [11, 12],
    [5, 11],
    [6, 12],
    [5, 6],
    [5, 7],
    [6, 8],
    [7, 9],
    [8, 10],
    [1, 2],
    [0, 1],
    [0, 2],
    [1, 3],
    [2, 4],
    [3, 5],
    [4, 6],
];

// mmpose palette entries as RGB (reference BGR (51,153,255), (0,255,0), (255,128,0)).
const BLUE: [u8; 3] = [255, 153, 51];
const GREEN: [u8; 3] = [0, 255, 0];
const ORANGE: [u8; 3] = [0, 128, 255];

/// Per-keypoint colours (RGB).
pub const KPT_COLOR: [[u8; 3]; 17] = [
    BLUE, BLUE, BLUE, BLUE, BLUE, GREEN, ORANGE, GREEN, ORANGE, GREEN, ORANGE, GREEN, ORANGE,
    GREEN, ORANGE, GREEN, ORANGE,
];

/// Per-link colours (RGB), in [`SKELETON`] order.
pub const LINK_COLOR: [[u8; 3]; 19] = [
    GREEN, GREEN, ORANGE, ORANGE, BLUE, BLUE, BLUE, BLUE, GREEN, ORANGE, GREEN, ORANGE, BLUE, BLUE,
    BLUE, BLUE, BLUE, BLUE, BLUE,
];

#[derive(Debug, Clone)]
pub struct KeyposeStyle {
    /// Keypoints with score (or COCO visibility) below this are not drawn.
    pub score_threshold: f32,
    pub radius: i32,
    pub thickness: i32,
    /// Draw at most this many persons (the reference draws two; prep draws all by default).
    pub max_persons: Option<usize>,
}

impl KeyposeStyle {
    /// Ground truth: labelled keypoints (v ≥ 1) are drawn, with the reference's geometry.
    pub fn t2i_adapter_gt(max_persons: Option<usize>) -> Self {
        KeyposeStyle {
            score_threshold: 0.1,
            radius: 2,
            thickness: 2,
            max_persons,
        }
    }
}

/// Python's `int()` on a float: truncation toward zero.
fn py_int(v: f32) -> i32 {
    v.trunc() as i32
}

pub fn draw_keypose(width: u32, height: u32, persons: &[Person], style: &KeyposeStyle) -> RgbImage {
    let mut img = RgbImage::new(width, height);
    let (w, h) = (width as i32, height as i32);
    {
        let mut canvas = Canvas {
            data: &mut img,
            width: width as usize,
            height: height as usize,
            channels: 3,
        };
        let n = style.max_persons.unwrap_or(usize::MAX);
        for person in persons.iter().take(n) {
            let k = &person.keypoints;
            for (i, kp) in k.iter().enumerate() {
                if kp[2] < style.score_threshold {
                    continue;
                }
                circle_filled(
                    &mut canvas,
                    py_int(kp[0]),
                    py_int(kp[1]),
                    style.radius,
                    &KPT_COLOR[i],
                );
            }
            for (link, color) in SKELETON.iter().zip(LINK_COLOR.iter()) {
                let (a, b) = (&k[link[0]], &k[link[1]]);
                let p1 = (py_int(a[0]), py_int(a[1]));
                let p2 = (py_int(b[0]), py_int(b[1]));
                let outside = |p: (i32, i32)| p.0 <= 0 || p.0 >= w || p.1 <= 0 || p.1 >= h;
                if outside(p1)
                    || outside(p2)
                    || a[2] < style.score_threshold
                    || b[2] < style.score_threshold
                {
                    continue;
                }
                line(&mut canvas, p1, p2, color, style.thickness);
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(points: &[(usize, f32, f32, f32)]) -> Person {
        let mut keypoints = [[0.0f32; 3]; 17];
        for &(i, x, y, v) in points {
            keypoints[i] = [x, y, v];
        }
        Person { keypoints }
    }

    #[test]
    fn nose_is_a_13_pixel_disc_in_head_colour() {
        let p = person(&[(0, 10.7, 10.2, 2.0)]);
        let img = draw_keypose(21, 21, &[p], &KeyposeStyle::t2i_adapter_gt(None));
        let lit: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, px)| px.0 != [0, 0, 0])
            .map(|(x, y, _)| (x, y))
            .collect();
        assert_eq!(lit.len(), 13, "{lit:?}");
        // int(10.7) = 10: centre (10, 10); row 10 spans 8..=12, rows 8 and 12 only x = 10.
        assert!(lit.contains(&(8, 10)) && lit.contains(&(12, 10)));
        assert!(lit.contains(&(10, 8)) && lit.contains(&(10, 12)));
        assert!(!lit.contains(&(9, 8)));
        assert!(img
            .pixels()
            .all(|p| p.0 == [0, 0, 0] || p.0 == [255, 153, 51]));
    }

    #[test]
    fn links_need_both_ends_labelled_and_inside() {
        // Left shoulder (5) and left elbow (7): link [5,7] is green.
        let both = person(&[(5, 10.0, 10.0, 2.0), (7, 30.0, 10.0, 1.0)]);
        let img = draw_keypose(40, 20, &[both], &KeyposeStyle::t2i_adapter_gt(None));
        assert_eq!(img.get_pixel(20, 10).0, GREEN, "the link between them");
        // Elbow unlabelled: no link, only the shoulder's disc.
        let one = person(&[(5, 10.0, 10.0, 2.0), (7, 30.0, 10.0, 0.0)]);
        let img = draw_keypose(40, 20, &[one], &KeyposeStyle::t2i_adapter_gt(None));
        assert_eq!(img.get_pixel(20, 10).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(10, 10).0, GREEN);
        assert_eq!(img.get_pixel(30, 10).0, [0, 0, 0]);
        // Elbow at x = 0 counts as outside (the reference tests `<= 0`): disc, no link.
        let edge = person(&[(5, 10.0, 10.0, 2.0), (7, 0.0, 10.0, 2.0)]);
        let img = draw_keypose(40, 20, &[edge], &KeyposeStyle::t2i_adapter_gt(None));
        assert_eq!(img.get_pixel(5, 10).0, [0, 0, 0]);
        assert_eq!(
            img.get_pixel(0, 10).0,
            GREEN,
            "the elbow disc (left side: green)"
        );
    }

    #[test]
    fn max_persons_limits_drawing() {
        let a = person(&[(0, 5.0, 5.0, 2.0)]);
        let b = person(&[(0, 15.0, 5.0, 2.0)]);
        let all = draw_keypose(
            20,
            10,
            &[a.clone(), b.clone()],
            &KeyposeStyle::t2i_adapter_gt(None),
        );
        let one = draw_keypose(20, 10, &[a, b], &KeyposeStyle::t2i_adapter_gt(Some(1)));
        assert_eq!(all.get_pixel(15, 5).0, BLUE);
        assert_eq!(one.get_pixel(15, 5).0, [0, 0, 0]);
        assert_eq!(one.get_pixel(5, 5).0, BLUE);
    }
}
