//! DWPose's two-stage keypose route: a YOLOX person detector ([`yolox_persons`]) and a
//! top-down RTMPose/DWPose SimCC pose model on an affine crop of each box
//! ([`PoseCrop`], [`simcc_keypoints`]). The arithmetic follows DWPose's NumPy code step
//! by step in `float32` where it computes in `float32` (box decode, NMS, centre/scale,
//! keypoint mapping), so prep's keypoints equal a Python run on the same ONNX files
//! (checked by `tests/reference/model_parity.py`).
//!
//! Differences from DWPose, by design: an image without a detected person yields no
//! person (DWPose then runs the pose model on the whole image); candidates are filtered
//! at the final person score before NMS (DWPose filters at 0.1, runs class-wise NMS, then
//! keeps class 0 above 0.3: a box at or below 0.3 can only suppress boxes scoring even
//! lower, so the kept persons are the same).

use crate::cvops::linear::warp_affine_linear_u8;

/// A detected person in image pixels: `[x1, y1, x2, y2]` and objectness × class score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub bbox: [f32; 4],
    pub score: f32,
}

/// The YOLOX decoder settings (from the manifest).
#[derive(Debug, Clone)]
pub struct YoloxParams {
    /// Model input width × height (the letterbox canvas).
    pub input: (u32, u32),
    pub strides: Vec<u32>,
    pub person_class: usize,
    pub score_threshold: f32,
    pub nms_threshold: f32,
}

/// Decode one image's YOLOX output (`anchors × (5 + classes)`, row-major) into the
/// persons above the score threshold after NMS, best first. `ratio` is the letterbox
/// scale (model pixels per image pixel).
pub fn yolox_persons(
    out: &[f32],
    cols: usize,
    p: &YoloxParams,
    ratio: f32,
) -> Result<Vec<Detection>, String> {
    let (iw, ih) = p.input;
    let grids: Vec<(u32, u32, u32)> = p.strides.iter().map(|&s| (iw / s, ih / s, s)).collect();
    let anchors: usize = grids.iter().map(|&(gw, gh, _)| (gw * gh) as usize).sum();
    if cols < 5 + p.person_class + 1 || out.len() != anchors * cols {
        return Err(format!(
            "expected [{anchors}, 5 + classes] for a {iw}×{ih} input with strides {:?} (person class {}), got {} values in rows of {cols}",
            p.strides,
            p.person_class,
            out.len()
        ));
    }
    let mut cand: Vec<Detection> = Vec::new();
    let mut row = 0usize;
    for &(gw, gh, s) in &grids {
        let sf = s as f32;
        for gy in 0..gh {
            for gx in 0..gw {
                let o = &out[row * cols..(row + 1) * cols];
                row += 1;
                let score = o[4] * o[5 + p.person_class];
                if score <= p.score_threshold {
                    continue;
                }
                let cx = (o[0] + gx as f32) * sf;
                let cy = (o[1] + gy as f32) * sf;
                let w = o[2].exp() * sf;
                let h = o[3].exp() * sf;
                let bbox = [
                    (cx - w / 2.0) / ratio,
                    (cy - h / 2.0) / ratio,
                    (cx + w / 2.0) / ratio,
                    (cy + h / 2.0) / ratio,
                ];
                cand.push(Detection { bbox, score });
            }
        }
    }
    Ok(nms(cand, p.nms_threshold))
}

/// DWPose's NMS: highest score first, areas with the +1 pixel convention, drop boxes
/// whose IoU with a kept box exceeds `thr`.
pub fn nms(mut cand: Vec<Detection>, thr: f32) -> Vec<Detection> {
    // Stable on ties (earlier anchor first).
    cand.sort_by(|a, b| b.score.total_cmp(&a.score));
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut keep: Vec<Detection> = Vec::new();
    let mut alive = vec![true; cand.len()];
    for i in 0..cand.len() {
        if !alive[i] {
            continue;
        }
        let a = cand[i].bbox;
        keep.push(cand[i]);
        for j in i + 1..cand.len() {
            if !alive[j] {
                continue;
            }
            let b = cand[j].bbox;
            let w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
            let h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
            let inter = w * h;
            let ovr = inter / (area(&a) + area(&b) - inter);
            if ovr > thr {
                alive[j] = false;
            }
        }
    }
    keep
}

/// RTMPose's crop of one box: centre, aspect-fixed scale and the input size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoseCrop {
    pub center: [f32; 2],
    pub scale: [f32; 2],
    /// Model input width × height.
    pub size: (u32, u32),
}

impl PoseCrop {
    /// `bbox_xyxy2cs(padding)` then `_fix_aspect_ratio(w / h)`.
    pub fn new(bbox: [f32; 4], padding: f32, size: (u32, u32)) -> PoseCrop {
        let [x1, y1, x2, y2] = bbox;
        let center = [(x1 + x2) * 0.5, (y1 + y2) * 0.5];
        let (w, h) = ((x2 - x1) * padding, (y2 - y1) * padding);
        let aspect = (size.0 as f64 / size.1 as f64) as f32;
        let scale = if w > h * aspect {
            [w, w / aspect]
        } else {
            [h * aspect, h]
        };
        PoseCrop {
            center,
            scale,
            size,
        }
    }

    /// `get_warp_matrix(center, scale, rot=0, output_size)`: the forward affine matrix
    /// (image → crop) that `cv2.getAffineTransform` gives for DWPose's three points.
    pub fn warp_matrix(&self) -> [f64; 6] {
        let (dw, dh) = (self.size.0 as f64, self.size.1 as f64);
        let [cx, cy] = self.center;
        // Source points as DWPose stores them (float32): the centre, the centre moved up
        // by half the box width, and the third point square to them.
        let p1y = cy + self.scale[0] * -0.5;
        let d = cy - p1y; // direction p0 − p1 = (0, d)
        let p2x = cx - d;
        let (cx, cy, p1y, p2x) = (cx as f64, cy as f64, p1y as f64, p2x as f64);
        // Destination: (dw/2, dh/2), (dw/2, dh/2 − dw/2), (0, dh/2 − dw/2).
        let sx = (dw * 0.5) / (cx - p2x);
        let sy = (dw * 0.5) / (cy - p1y);
        [sx, 0.0, dw * 0.5 - sx * cx, 0.0, sy, dh * 0.5 - sy * cy]
    }

    /// The crop of an interleaved RGB image (`cv2.warpAffine`, bilinear, black border).
    pub fn warp(&self, rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
        warp_affine_linear_u8(
            rgb,
            w,
            h,
            3,
            self.warp_matrix(),
            self.size.0 as usize,
            self.size.1 as usize,
        )
    }

    /// A crop-input point (model pixels) → image pixels: `p / size · scale + center −
    /// scale / 2`, in float32 as DWPose.
    pub fn to_image(&self, x: f32, y: f32) -> (f32, f32) {
        (
            x / self.size.0 as f32 * self.scale[0] + self.center[0] - self.scale[0] / 2.0,
            y / self.size.1 as f32 * self.scale[1] + self.center[1] - self.scale[1] / 2.0,
        )
    }
}

/// SimCC decode of one crop: for each keypoint the argmax of its x and y bins (first
/// maximum), divided by `split`; score = min(max_x, max_y); location −1 when the score is
/// ≤ 0; mapped back to image pixels. Returns `(x, y, score)` for every keypoint.
pub fn simcc_keypoints(
    simcc_x: &[f32],
    simcc_y: &[f32],
    k: usize,
    split: f32,
    crop: &PoseCrop,
) -> Vec<[f32; 3]> {
    let (wx, wy) = (simcc_x.len() / k.max(1), simcc_y.len() / k.max(1));
    let argmax = |v: &[f32]| {
        let mut best = (0usize, f32::NEG_INFINITY);
        for (i, &x) in v.iter().enumerate() {
            if x > best.1 {
                best = (i, x);
            }
        }
        best
    };
    (0..k)
        .map(|i| {
            let (lx, mx) = argmax(&simcc_x[i * wx..(i + 1) * wx]);
            let (ly, my) = argmax(&simcc_y[i * wy..(i + 1) * wy]);
            let score = if mx > my { my } else { mx };
            let (lx, ly) = if score <= 0.0 {
                (-1.0f32, -1.0f32)
            } else {
                (lx as f32, ly as f32)
            };
            let (x, y) = crop.to_image(lx / split, ly / split);
            [x, y, score]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let d = |x: f32, s: f32| Detection {
            bbox: [x, 0.0, x + 100.0, 200.0],
            score: s,
        };
        let kept = nms(vec![d(0.0, 0.5), d(10.0, 0.9), d(300.0, 0.4)], 0.45);
        assert_eq!(kept, vec![d(10.0, 0.9), d(300.0, 0.4)]);
    }

    #[test]
    fn crop_geometry_is_dwposes() {
        // A 100×200 box: padded 125×250, aspect 0.75 → (187.5, 250).
        let c = PoseCrop::new([50.0, 20.0, 150.0, 220.0], 1.25, (288, 384));
        assert_eq!(c.center, [100.0, 120.0]);
        assert_eq!(c.scale, [187.5, 250.0]);
        let m = c.warp_matrix();
        let s = 288.0 / 187.5;
        assert!((m[0] - s).abs() < 1e-12 && (m[4] - s).abs() < 1e-12);
        assert!((m[2] - (144.0 - s * 100.0)).abs() < 1e-9);
        assert!((m[5] - (192.0 - s * 120.0)).abs() < 1e-9);
        // The crop centre maps back to the box centre, the crop corner to the corner.
        assert_eq!(c.to_image(144.0, 192.0), (100.0, 120.0));
        assert_eq!(c.to_image(0.0, 0.0), (100.0 - 93.75, 120.0 - 125.0));
    }

    #[test]
    fn simcc_argmax_split_and_min_score() {
        let c = PoseCrop::new([0.0, 0.0, 288.0 / 1.25, 384.0 / 1.25], 1.25, (288, 384));
        // scale (288, 384), centre (115.2, 153.6): crop pixel p → p − 144 + 115.2.
        let mut x = vec![0.0f32; 2 * 576];
        let mut y = vec![0.0f32; 2 * 768];
        x[100] = 0.8;
        y[300] = 0.6;
        x[576 + 10] = -0.1;
        y[768 + 20] = 0.9;
        let k = simcc_keypoints(&x, &y, 2, 2.0, &c);
        assert_eq!(k[0][2], 0.6);
        assert!((k[0][0] - (50.0 - 144.0 + 115.2)).abs() < 1e-4);
        assert!((k[0][1] - (150.0 - 192.0 + 153.6)).abs() < 1e-4);
        // Max of x is 0 (ties → first bin) vs 0.9: score 0 ≤ 0 → location −1.
        assert_eq!(k[1][2], 0.0);
        assert!((k[1][0] - (-0.5 - 144.0 + 115.2)).abs() < 1e-4);
    }
}
