//! COCO-Stuff label maps coloured with a fixed palette.
//!
//! Label `l` (0..181, COCO-Stuff id − 1) gets colour `voc(l + 1)`, where `voc(i)` is the
//! PASCAL VOC colour map (the bits of `i` spread over R, G and B from the top bit down):
//!
//! ```text
//! def voc(i):
//!     r = g = b = 0
//!     for j in range(8):
//!         r |= ((i >> 0) & 1) << (7 - j); g |= ((i >> 1) & 1) << (7 - j); b |= ((i >> 2) & 1) << (7 - j)
//!         i >>= 3
//!     return r, g, b
//! ```
//!
//! so person (0) is (128, 0, 0) and no label gets black; 255 (unlabelled) is black.
//! Labels are never interpolated: the map is resized with nearest neighbour before this.

use image::{GrayImage, Rgb, RgbImage};

pub const UNLABELED: u8 = 255;

fn voc(mut i: u32) -> [u8; 3] {
    let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
    for j in 0..8 {
        r |= ((i & 1) as u8) << (7 - j);
        g |= (((i >> 1) & 1) as u8) << (7 - j);
        b |= (((i >> 2) & 1) as u8) << (7 - j);
        i >>= 3;
    }
    [r, g, b]
}

/// The colour of every label value (index 255 is black).
pub fn seg_palette() -> [[u8; 3]; 256] {
    let mut p = [[0u8; 3]; 256];
    for (l, c) in p.iter_mut().enumerate() {
        *c = if l == UNLABELED as usize {
            [0, 0, 0]
        } else {
            voc(l as u32 + 1)
        };
    }
    p
}

pub fn colorize(labels: &GrayImage) -> RgbImage {
    let palette = seg_palette();
    let (w, h) = labels.dimensions();
    let mut out = RgbImage::new(w, h);
    for (src, dst) in labels.pixels().zip(out.pixels_mut()) {
        *dst = Rgb(palette[src[0] as usize]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_is_voc_and_injective() {
        let p = seg_palette();
        assert_eq!(p[0], [128, 0, 0]); // person
        assert_eq!(p[1], [0, 128, 0]);
        assert_eq!(p[2], [128, 128, 0]);
        assert_eq!(p[16], [128, 64, 0]); // cat: voc(17)
        assert_eq!(p[255], [0, 0, 0]);
        let mut seen = std::collections::HashSet::new();
        for c in &p[..255] {
            assert_ne!(*c, [0, 0, 0]);
            assert!(seen.insert(*c), "colour {c:?} used twice");
        }
    }

    #[test]
    fn colorize_maps_each_label() {
        let labels = GrayImage::from_raw(3, 1, vec![0, 255, 16]).unwrap();
        let out = colorize(&labels);
        assert_eq!(out.as_raw(), &vec![128, 0, 0, 0, 0, 0, 128, 64, 0]);
    }
}
