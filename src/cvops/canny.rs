//! `cv2.Canny(img, low, high)` with the defaults `apertureSize=3`,
//! `L2gradient=False`, bit-exact.
//!
//! The steps, as OpenCV 4.x runs them:
//! 1. 3x3 Sobel `dx`, `dy` per channel (integers, `BORDER_REPLICATE`);
//! 2. magnitude `|dx| + |dy|`; with several channels each pixel keeps the
//!    channel of the largest magnitude (the first one on ties) and its `dx, dy`;
//! 3. thresholds floored to integers (swapped if `low > high`); a pixel is a
//!    candidate if its magnitude is `> low` and it is a local maximum across the
//!    gradient direction, quantised with `tan(22.5°)` in Q15 (`TG22 = 13573`):
//!    strictly greater than the "before" neighbour and `>=` the "after" one for
//!    horizontal and vertical gradients, strictly greater than both for diagonal
//!    ones; magnitudes outside the image count as 0;
//! 4. candidates with magnitude `> high` are edges, and so is every candidate
//!    8-connected to an edge through candidates (hysteresis).
//!
//! The result does not depend on IPP or on the number of threads: `cv2` 4.14
//! gives the same edges with IPP on or off and with 1, 2 or 8 threads.

/// `tan(22.5°)` in Q15, rounded.
const TG22: i64 = 13573;
const CANNY_SHIFT: u32 = 15;

/// Map states, as in OpenCV: 0 = candidate not (yet) reached, 1 = not an edge,
/// 2 = edge.
const CANDIDATE: u8 = 0;
const NOT_EDGE: u8 = 1;
const EDGE: u8 = 2;

/// `cv2.Canny(img, low, high)` (aperture 3, L1 gradient) on a `uint8`
/// `h x w x ch` image; `cv2` takes 1 or 3 channels (any count works here, with
/// the same per-pixel channel choice). Returns `h x w` bytes, 255 on edges and 0
/// elsewhere. For 3 channels the per-pixel choice prefers the first channel on
/// ties, so for bit-exactness pass the channels in the order `cv2` saw them
/// (controlnet_aux and T2I-Adapter hand it RGB arrays).
pub fn canny(src: &[u8], w: usize, h: usize, ch: usize, low: f64, high: f64) -> Vec<u8> {
    assert!(ch >= 1, "canny: no channels");
    assert_eq!(src.len(), w * h * ch, "canny: buffer is not {w}x{h}x{ch}");
    if w == 0 || h == 0 {
        return Vec::new();
    }
    let (low, high) = if low > high { (high, low) } else { (low, high) };
    // cvFloor of the thresholds; the float -> int cast saturates like a clamp.
    let low = low.floor() as i64;
    let high = high.floor() as i64;

    let (dx, dy, mag) = gradients(src, w, h, ch);

    // Magnitudes with a zero frame, so that neighbours outside the image are 0.
    let pw = w + 2;
    let mut pmag = vec![0i64; pw * (h + 2)];
    for y in 0..h {
        pmag[(y + 1) * pw + 1..(y + 1) * pw + 1 + w].copy_from_slice(&mag[y * w..(y + 1) * w]);
    }

    // Non-maximum suppression into a map with a NOT_EDGE frame; edges above
    // `high` seed the hysteresis stack.
    let mut map = vec![NOT_EDGE; pw * (h + 2)];
    let mut stack = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let m = mag[y * w + x];
            if m <= low {
                continue;
            }
            let j = (y + 1) * pw + x + 1;
            let (xs, ys) = (dx[y * w + x], dy[y * w + x]);
            let ax = xs.abs();
            let ay = ys.abs() << CANNY_SHIFT;
            let tg22x = ax * TG22;
            let is_max = if ay < tg22x {
                // Mostly horizontal gradient: compare left and right.
                m > pmag[j - 1] && m >= pmag[j + 1]
            } else {
                let tg67x = tg22x + (ax << (CANNY_SHIFT + 1));
                if ay > tg67x {
                    // Mostly vertical gradient: compare above and below.
                    m > pmag[j - pw] && m >= pmag[j + pw]
                } else if (xs < 0) != (ys < 0) {
                    // Diagonal, signs differ: up-right and down-left.
                    m > pmag[j - pw + 1] && m > pmag[j + pw - 1]
                } else {
                    // Diagonal, same signs: up-left and down-right.
                    m > pmag[j - pw - 1] && m > pmag[j + pw + 1]
                }
            };
            if is_max {
                if m > high {
                    map[j] = EDGE;
                    stack.push(j);
                } else {
                    map[j] = CANDIDATE;
                }
            }
        }
    }

    // Hysteresis: grow edges through 8-connected candidates.
    let neighbours = [
        -(pw as isize) - 1,
        -(pw as isize),
        -(pw as isize) + 1,
        -1,
        1,
        pw as isize - 1,
        pw as isize,
        pw as isize + 1,
    ];
    while let Some(j) = stack.pop() {
        for d in neighbours {
            // The NOT_EDGE frame keeps every neighbour of an inner pixel in range.
            let k = j.wrapping_add_signed(d);
            if map[k] == CANDIDATE {
                map[k] = EDGE;
                stack.push(k);
            }
        }
    }

    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let row = &map[(y + 1) * pw + 1..(y + 1) * pw + 1 + w];
        out.extend(row.iter().map(|&v| if v == EDGE { 255u8 } else { 0 }));
    }
    out
}

/// Per pixel `(dx, dy, |dx| + |dy|)` of the channel with the largest magnitude
/// (first on ties), from the 3x3 Sobel kernels with a replicated border.
fn gradients(src: &[u8], w: usize, h: usize, ch: usize) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let n = w * h;
    let (mut gx, mut gy, mut gm) = (vec![0i64; n], vec![0i64; n], vec![-1i64; n]);
    let px = |x: usize, y: usize, c: usize| i64::from(src[(y * w + x) * ch + c]);
    for y in 0..h {
        let (ya, yb) = (y.saturating_sub(1), (y + 1).min(h - 1));
        for x in 0..w {
            let (xa, xb) = (x.saturating_sub(1), (x + 1).min(w - 1));
            let i = y * w + x;
            for c in 0..ch {
                let dx = (px(xb, ya, c) - px(xa, ya, c))
                    + 2 * (px(xb, y, c) - px(xa, y, c))
                    + (px(xb, yb, c) - px(xa, yb, c));
                let dy = (px(xa, yb, c) - px(xa, ya, c))
                    + 2 * (px(x, yb, c) - px(x, ya, c))
                    + (px(xb, yb, c) - px(xb, ya, c));
                let m = dx.abs() + dy.abs();
                if m > gm[i] {
                    (gx[i], gy[i], gm[i]) = (dx, dy, m);
                }
            }
        }
    }
    (gx, gy, gm)
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

    /// Thresholds are written into the file names as given to cv2 ("150.9" ->
    /// "150p9").
    const CASES: &[(&str, f64, f64)] = &[
        ("shapes", 100.0, 200.0),
        ("shapes", 50.0, 150.0),
        ("shapes", 150.9, 75.5),
        ("gray64", 100.0, 200.0),
        ("gray64", 50.0, 150.0),
        ("blur", 100.0, 200.0),
        ("blur", 50.0, 150.0),
        ("blur", 20.0, 40.0),
        ("noise96", 100.0, 200.0),
        ("noise96", 50.0, 150.0),
        ("grad640", 20.0, 60.0),
    ];

    fn label(t: f64) -> String {
        format!("{t}").replace('.', "p")
    }

    #[test]
    fn matches_cv2_goldens() {
        for &(name, lo, hi) in CASES {
            let i = input(name);
            let got = canny(&i.data, i.width, i.height, i.channels, lo, hi);
            let want = png(&format!("canny_{name}_{}_{}.png", label(lo), label(hi)));
            assert_eq!(
                (want.width, want.height, want.channels),
                (i.width, i.height, 1)
            );
            assert_same(&format!("canny {name} {lo}/{hi}"), &got, &want);
        }
    }

    #[test]
    fn step_edge_is_one_pixel_thick() {
        // Columns 0..4 are 10, 4..8 are 200: dx peaks (equally) at x = 3 and 4;
        // "> left, >= right" keeps x = 3 only.
        let (w, h) = (8, 5);
        let src: Vec<u8> = (0..w * h)
            .map(|i| if i % w < 4 { 10 } else { 200 })
            .collect();
        let out = canny(&src, w, h, 1, 100.0, 200.0);
        for y in 0..h {
            let row = &out[y * w..(y + 1) * w];
            assert_eq!(row, &[0, 0, 0, 255, 0, 0, 0, 0], "row {y}");
        }
    }

    #[test]
    fn hysteresis_keeps_weak_pixels_only_when_connected() {
        // A vertical step whose contrast is strong in the top rows and weak
        // below: with thresholds between the two the weak part survives through
        // its connection; alone (strong part removed) it does not.
        let (w, h) = (6, 8);
        let strong: Vec<u8> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                match (x < 3, y < 2) {
                    (true, _) => 0,
                    (false, true) => 100,
                    (false, false) => 40,
                }
            })
            .collect();
        // The weak rows give |dx| = 4 * 40 = 160 (> 100, < 300); the strong rows
        // give 400 (> 300).
        let out = canny(&strong, w, h, 1, 100.0, 300.0);
        for y in 0..h {
            assert!(
                out[y * w..(y + 1) * w].contains(&255),
                "row {y} lost its edge"
            );
        }
        let weak_only: Vec<u8> = (0..w * h).map(|i| if i % w < 3 { 0 } else { 40 }).collect();
        assert!(canny(&weak_only, w, h, 1, 100.0, 300.0)
            .iter()
            .all(|&v| v == 0));
        // And the same weak image passes once `high` drops below 160.
        assert!(canny(&weak_only, w, h, 1, 100.0, 150.0).contains(&255));
    }

    #[test]
    fn colour_image_uses_the_strongest_channel() {
        // Only the blue channel has an edge: same result as its gray version.
        let (w, h) = (10, 6);
        let gray: Vec<u8> = (0..w * h)
            .map(|i| if i % w < 5 { 0 } else { 255 })
            .collect();
        let rgb: Vec<u8> = gray.iter().flat_map(|&v| [7, 7, v]).collect();
        assert_eq!(
            canny(&rgb, w, h, 3, 100.0, 200.0),
            canny(&gray, w, h, 1, 100.0, 200.0)
        );
    }

    #[test]
    fn flat_and_empty_images_have_no_edges() {
        assert!(canny(&[90; 400], 20, 20, 1, 100.0, 200.0)
            .iter()
            .all(|&v| v == 0));
        assert!(canny(&[], 0, 0, 3, 100.0, 200.0).is_empty());
    }
}
