//! `cv2.circle` (filled) and `cv2.line` with `lineType=LINE_8` and `shift=0`,
//! bit-exact to OpenCV 4.13+ (checked against 4.14), on an interleaved `u8`
//! canvas.
//!
//! The rasterisers follow OpenCV's `drawing.cpp`:
//! - a filled circle is the integer midpoint circle, drawn as horizontal spans
//!   clipped to the canvas (radius 2 gives 13 pixels: 1 + 3 + 5 + 3 + 1);
//! - a 1-pixel line is the 8-connected Bresenham walk of `LineIterator`,
//!   left to right, after clipping the segment to the canvas;
//! - a thicker line is first clipped to the canvas grown by `thickness` on
//!   each side (if an end point is outside the canvas), then drawn as a
//!   quadrilateral around the segment, filled by the 16.16 fixed-point
//!   convex-polygon scan converter (whose outline is also traced, with the
//!   fixed-point line `Line2`), plus a filled circle of radius
//!   `(thickness + 1) / 2` at each end.
//!
//! OpenCV 4.12 and older do not pre-clip thick lines. That changes a few pixels
//! only when an end point lies outside the canvas: on 3,000 random thickness
//! 2..4 lines with both ends inside (the pose-drawing case) 4.12 and 4.14 give
//! identical images.
//!
//! Coordinates are `i32` like `cv::Point`; the arithmetic is done in `i64`.

/// Fractional bits of OpenCV's fixed-point drawing coordinates (`XY_SHIFT`).
const XY_SHIFT: u32 = 16;
const XY_ONE: i64 = 1 << XY_SHIFT;
/// OpenCV's upper bound on line thickness (`MAX_THICKNESS`).
const MAX_THICKNESS: i32 = 32767;

/// A `height x width x channels` interleaved `u8` image to draw on.
pub struct Canvas<'a> {
    pub data: &'a mut [u8],
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

impl Canvas<'_> {
    fn check(&self, color: &[u8]) {
        assert_eq!(
            self.data.len(),
            self.width * self.height * self.channels,
            "canvas buffer is not {}x{}x{}",
            self.width,
            self.height,
            self.channels
        );
        assert_eq!(
            color.len(),
            self.channels,
            "colour has {} values for {} channels",
            color.len(),
            self.channels
        );
    }

    fn w(&self) -> i64 {
        self.width as i64
    }

    fn h(&self) -> i64 {
        self.height as i64
    }

    /// Sets one pixel; points outside the canvas are ignored.
    fn put(&mut self, x: i64, y: i64, color: &[u8]) {
        if (0..self.w()).contains(&x) && (0..self.h()).contains(&y) {
            let i = (y as usize * self.width + x as usize) * self.channels;
            self.data[i..i + self.channels].copy_from_slice(color);
        }
    }

    /// Fills row `y` from `x1` to `x2` inclusive, clipped to the canvas.
    fn hline(&mut self, y: i64, x1: i64, x2: i64, color: &[u8]) {
        if !(0..self.h()).contains(&y) {
            return;
        }
        let (x1, x2) = (x1.max(0), x2.min(self.w() - 1));
        for x in x1..=x2 {
            self.put(x, y, color);
        }
    }
}

/// `cv2.circle(img, (cx, cy), radius, color, -1)` (filled, `LINE_8`,
/// `shift=0`). Parts outside the canvas are clipped. Panics if `radius < 0`
/// (cv2 refuses it too) or if `color` does not have one value per channel.
pub fn circle_filled(c: &mut Canvas, cx: i32, cy: i32, radius: i32, color: &[u8]) {
    c.check(color);
    assert!(radius >= 0, "circle radius {radius} < 0");
    fill_circle(c, i64::from(cx), i64::from(cy), i64::from(radius), color);
}

/// OpenCV's integer `Circle(.., fill=1)`: for each midpoint step the four
/// spans `cy ± dy: cx ± dx` and `cy ± dx: cx ± dy`.
fn fill_circle(c: &mut Canvas, cx: i64, cy: i64, radius: i64, color: &[u8]) {
    let (mut err, mut dx, mut dy) = (0i64, radius, 0i64);
    let (mut plus, mut minus) = (1i64, (radius << 1) - 1);
    while dx >= dy {
        c.hline(cy - dy, cx - dx, cx + dx, color);
        c.hline(cy + dy, cx - dx, cx + dx, color);
        c.hline(cy - dx, cx - dy, cx + dy, color);
        c.hline(cy + dx, cx - dy, cx + dy, color);
        dy += 1;
        err += plus;
        plus += 2;
        if err > 0 {
            err -= minus;
            dx -= 1;
            minus -= 2;
        }
    }
}

/// `cv2.line(img, p1, p2, color, thickness)` (`LINE_8`, `shift=0`). Thickness 1
/// is the 8-connected Bresenham line; thicker lines are OpenCV's filled
/// quadrilateral with round caps. Parts outside the canvas are clipped. Panics
/// if `thickness` is not in `1..=32767` (cv2 refuses those too) or if `color`
/// does not have one value per channel.
pub fn line(c: &mut Canvas, p1: (i32, i32), p2: (i32, i32), color: &[u8], thickness: i32) {
    c.check(color);
    assert!(
        (1..=MAX_THICKNESS).contains(&thickness),
        "line thickness {thickness} not in 1..={MAX_THICKNESS}"
    );
    let p0 = (i64::from(p1.0), i64::from(p1.1));
    let p1 = (i64::from(p2.0), i64::from(p2.1));
    if thickness == 1 {
        line8(c, p0, p1, color);
    } else {
        thick_line(c, p0, p1, color, i64::from(thickness));
    }
}

/// OpenCV's `clipLine` (Cohen-Sutherland in `int64`, intersections computed in
/// `f64` and truncated) against `[0, w-1] x [0, h-1]`. Returns false when
/// nothing of the segment is inside.
fn clip_line(w: i64, h: i64, a: &mut (i64, i64), b: &mut (i64, i64)) -> bool {
    if w <= 0 || h <= 0 {
        return false;
    }
    let (right, bottom) = (w - 1, h - 1);
    let (x1, y1) = (&mut a.0, &mut a.1);
    let (x2, y2) = (&mut b.0, &mut b.1);
    let code = |x: i64, y: i64| {
        i32::from(x < 0)
            + i32::from(x > right) * 2
            + i32::from(y < 0) * 4
            + i32::from(y > bottom) * 8
    };
    let mut c1 = code(*x1, *y1);
    let mut c2 = code(*x2, *y2);
    if (c1 & c2) == 0 && (c1 | c2) != 0 {
        if c1 & 12 != 0 {
            let edge = if c1 < 8 { 0 } else { bottom };
            *x1 += ((edge - *y1) as f64 * (*x2 - *x1) as f64 / (*y2 - *y1) as f64) as i64;
            *y1 = edge;
            c1 = i32::from(*x1 < 0) + i32::from(*x1 > right) * 2;
        }
        if c2 & 12 != 0 {
            let edge = if c2 < 8 { 0 } else { bottom };
            *x2 += ((edge - *y2) as f64 * (*x2 - *x1) as f64 / (*y2 - *y1) as f64) as i64;
            *y2 = edge;
            c2 = i32::from(*x2 < 0) + i32::from(*x2 > right) * 2;
        }
        if (c1 & c2) == 0 && (c1 | c2) != 0 {
            if c1 != 0 {
                let edge = if c1 == 1 { 0 } else { right };
                *y1 += ((edge - *x1) as f64 * (*y2 - *y1) as f64 / (*x2 - *x1) as f64) as i64;
                *x1 = edge;
                c1 = 0;
            }
            if c2 != 0 {
                let edge = if c2 == 1 { 0 } else { right };
                *y2 += ((edge - *x2) as f64 * (*y2 - *y1) as f64 / (*x2 - *x1) as f64) as i64;
                *x2 = edge;
                c2 = 0;
            }
        }
    }
    (c1 | c2) == 0
}

/// The 1-pixel line: `LineIterator(img, p0, p1, 8, leftToRight=true)`.
fn line8(c: &mut Canvas, mut p0: (i64, i64), mut p1: (i64, i64), color: &[u8]) {
    let (w, h) = (c.w(), c.h());
    let inside = |p: (i64, i64)| (0..w).contains(&p.0) && (0..h).contains(&p.1);
    let both_inside = inside(p0) && inside(p1);
    if !both_inside && !clip_line(w, h, &mut p0, &mut p1) {
        return;
    }
    if p1.0 < p0.0 {
        std::mem::swap(&mut p0, &mut p1);
    }
    let (mut dx, mut dy) = (p1.0 - p0.0, p1.1 - p0.1);
    let (mut step_major, mut step_minor) = ((1i64, 0i64), (0i64, 1i64));
    if dy < 0 {
        dy = -dy;
        step_minor.1 = -1;
    }
    if dy > dx {
        std::mem::swap(&mut dx, &mut dy);
        // Major axis is y (in the direction of p1), minor is x (always +1).
        step_major = (0, step_minor.1);
        step_minor = (1, 0);
    }
    let mut err = dx - 2 * dy;
    let mut p = p0;
    for _ in 0..=dx {
        c.put(p.0, p.1, color);
        if err < 0 {
            err += 2 * dx;
            p = (p.0 + step_minor.0, p.1 + step_minor.1);
        }
        err -= 2 * dy;
        p = (p.0 + step_major.0, p.1 + step_major.1);
    }
}

/// OpenCV's `Line2`: a line between 16.16 fixed-point points, clipped in fixed
/// point, stepped once per pixel along the major axis (in the increasing
/// direction) with a fixed-point slope, plus the rounded far end point.
fn line_fixed(c: &mut Canvas, mut p1: (i64, i64), mut p2: (i64, i64), color: &[u8]) {
    let (w, h) = (c.w() << XY_SHIFT, c.h() << XY_SHIFT);
    if !clip_line(w, h, &mut p1, &mut p2) {
        return;
    }
    let (mut dx, mut dy) = (p2.0 - p1.0, p2.1 - p1.1);
    let x_major = dx.abs() > dy.abs();
    // Walk along the major axis in the increasing direction.
    if (x_major && dx < 0) || (!x_major && dy < 0) {
        std::mem::swap(&mut p1, &mut p2);
        (dx, dy) = (-dx, -dy);
    }
    let half = XY_ONE >> 1;
    // The far end point is rounded and drawn on its own.
    c.put((p2.0 + half) >> XY_SHIFT, (p2.1 + half) >> XY_SHIFT, color);
    if x_major {
        let y_step = (dy << XY_SHIFT) / (dx | 1);
        let x0 = (p1.0 + half) >> XY_SHIFT;
        let mut y = p1.1 + half;
        for x in x0..=x0 + ((p2.0 - p1.0) >> XY_SHIFT) {
            c.put(x, y >> XY_SHIFT, color);
            y += y_step;
        }
    } else {
        let x_step = (dx << XY_SHIFT) / (dy | 1);
        let y0 = (p1.1 + half) >> XY_SHIFT;
        let mut x = p1.0 + half;
        for y in y0..=y0 + ((p2.1 - p1.1) >> XY_SHIFT) {
            c.put(x >> XY_SHIFT, y, color);
            x += x_step;
        }
    }
}

/// OpenCV's `FillConvexPoly` for 16.16 fixed-point vertices with `LINE_8`:
/// the outline with [`line_fixed`], then scanlines between a left and a right
/// edge walked with fixed-point slopes.
fn fill_convex_fixed(c: &mut Canvas, v: &[(i64, i64)], color: &[u8]) {
    let n = v.len();
    let delta = XY_ONE >> 1;
    let round = |v: i64| (v + delta) >> XY_SHIFT;
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (v[0].0, v[0].0, v[0].1, v[0].1);
    let mut imin = 0;
    let mut prev = v[n - 1];
    for (i, &p) in v.iter().enumerate() {
        if p.1 < ymin {
            ymin = p.1;
            imin = i;
        }
        ymax = ymax.max(p.1);
        xmax = xmax.max(p.0);
        xmin = xmin.min(p.0);
        line_fixed(c, prev, p, color);
        prev = p;
    }
    let (xmin, xmax, ymin, ymax) = (round(xmin), round(xmax), round(ymin), round(ymax));
    if n < 3 || xmax < 0 || ymax < 0 || xmin >= c.w() || ymin >= c.h() {
        return;
    }
    let ymax = ymax.min(c.h() - 1);

    #[derive(Clone, Copy)]
    struct Edge {
        idx: usize,
        di: usize,
        x: i64,
        dx: i64,
        ye: i64,
    }
    let mut edge = [
        Edge {
            idx: imin,
            di: 1,
            x: -XY_ONE,
            dx: 0,
            ye: ymin,
        },
        Edge {
            idx: imin,
            di: n - 1,
            x: -XY_ONE,
            dx: 0,
            ye: ymin,
        },
    ];
    let mut edges_left = n as i64;
    let mut y = ymin;
    loop {
        for e in edge.iter_mut() {
            if y < e.ye {
                continue;
            }
            let mut idx0 = e.idx;
            let mut idx = (idx0 + e.di) % n;
            loop {
                let more = edges_left > 0;
                edges_left -= 1;
                if !more {
                    break;
                }
                let ty = round(v[idx].1);
                if ty > y {
                    let (xs, xe) = (v[idx0].0, v[idx].0);
                    e.ye = ty;
                    e.dx = ((xe - xs) * 2 + (ty - y)) / (2 * (ty - y));
                    e.x = xs;
                    e.idx = idx;
                    break;
                }
                idx0 = idx;
                idx = (idx + e.di) % n;
            }
        }
        if edges_left < 0 {
            break;
        }
        if y >= 0 {
            let (l, r) = if edge[0].x > edge[1].x {
                (1, 0)
            } else {
                (0, 1)
            };
            let x1 = (edge[l].x + delta) >> XY_SHIFT;
            let x2 = (edge[r].x + delta) >> XY_SHIFT;
            if x2 >= 0 && x1 < c.w() {
                c.hline(y, x1, x2, color);
            }
        }
        edge[0].x += edge[0].dx;
        edge[1].x += edge[1].dx;
        y += 1;
        if y > ymax {
            break;
        }
    }
}

/// OpenCV's `ThickLine` for `LINE_8`, `shift=0`, thickness >= 2.
fn thick_line(
    c: &mut Canvas,
    mut p0: (i64, i64),
    mut p1: (i64, i64),
    color: &[u8],
    thickness: i64,
) {
    let (w, h) = (c.w(), c.h());
    let inside = |p: (i64, i64)| (0..w).contains(&p.0) && (0..h).contains(&p.1);
    if !(inside(p0) && inside(p1)) {
        // OpenCV >= 4.13 first clips the segment to the canvas grown by
        // `thickness` on every side (so that the caps there stay outside).
        // A segment that misses that margin cannot reach the canvas.
        let m = thickness;
        let (mut a, mut b) = ((p0.0 + m, p0.1 + m), (p1.0 + m, p1.1 + m));
        if !clip_line(w + 2 * m, h + 2 * m, &mut a, &mut b) {
            return;
        }
        (p0, p1) = ((a.0 - m, a.1 - m), (b.0 - m, b.1 - m));
    }
    let inv_one = 1.0 / XY_ONE as f64;
    let (q0, q1) = (
        (p0.0 << XY_SHIFT, p0.1 << XY_SHIFT),
        (p1.0 << XY_SHIFT, p1.1 << XY_SHIFT),
    );
    let dx = (q0.0 - q1.0) as f64 * inv_one;
    let dy = (q1.1 - q0.1) as f64 * inv_one;
    let r2 = dx * dx + dy * dy;
    let odd = thickness & 1;
    // Half the thickness in 16.16, plus half a pixel for odd thicknesses.
    let half_t = thickness << (XY_SHIFT - 1);
    if r2.abs() > f64::EPSILON {
        let r = (half_t as f64 + odd as f64 * XY_ONE as f64 * 0.5) / r2.sqrt();
        let dpx = (dy * r).round_ties_even() as i64;
        let dpy = (dx * r).round_ties_even() as i64;
        let quad = [
            (q0.0 + dpx, q0.1 + dpy),
            (q0.0 - dpx, q0.1 - dpy),
            (q1.0 - dpx, q1.1 - dpy),
            (q1.0 + dpx, q1.1 + dpy),
        ];
        fill_convex_fixed(c, &quad, color);
    }
    let cap = (half_t + (XY_ONE >> 1)) >> XY_SHIFT;
    fill_circle(c, p0.0, p0.1, cap, color);
    fill_circle(c, p1.0, p1.1, cap, color);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvops::fixtures::{assert_same, int_table, png, Img};

    fn blank(w: usize, h: usize, ch: usize) -> Vec<u8> {
        vec![0; w * h * ch]
    }

    fn set_pixels(buf: &[u8], w: usize) -> Vec<(usize, usize)> {
        buf.iter()
            .enumerate()
            .filter(|(_, &v)| v != 0)
            .map(|(i, _)| (i % w, i / w))
            .collect()
    }

    #[test]
    fn circle_radius_2_is_13_pixels() {
        let mut buf = blank(7, 7, 1);
        circle_filled(
            &mut Canvas {
                data: &mut buf,
                width: 7,
                height: 7,
                channels: 1,
            },
            3,
            3,
            2,
            &[1],
        );
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 1, 0, 0, 0,
            0, 0, 1, 1, 1, 0, 0,
            0, 1, 1, 1, 1, 1, 0,
            0, 0, 1, 1, 1, 0, 0,
            0, 0, 0, 1, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(buf, want);
    }

    #[test]
    fn circle_radius_0_and_1_and_clipping() {
        let mut buf = blank(5, 5, 1);
        let mut c = Canvas {
            data: &mut buf,
            width: 5,
            height: 5,
            channels: 1,
        };
        circle_filled(&mut c, 2, 2, 0, &[1]);
        assert_eq!(set_pixels(&buf, 5), vec![(2, 2)]);
        let mut buf = blank(5, 5, 1);
        let mut c = Canvas {
            data: &mut buf,
            width: 5,
            height: 5,
            channels: 1,
        };
        circle_filled(&mut c, 2, 2, 1, &[1]);
        assert_eq!(
            set_pixels(&buf, 5),
            vec![(2, 1), (1, 2), (2, 2), (3, 2), (2, 3)]
        );
        // Centre on the corner: only the quarter inside is drawn.
        let mut buf = blank(5, 5, 1);
        let mut c = Canvas {
            data: &mut buf,
            width: 5,
            height: 5,
            channels: 1,
        };
        circle_filled(&mut c, 0, 0, 2, &[1]);
        assert_eq!(
            set_pixels(&buf, 5),
            vec![(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (0, 2)]
        );
        // Entirely outside: nothing.
        let mut buf = blank(5, 5, 1);
        let mut c = Canvas {
            data: &mut buf,
            width: 5,
            height: 5,
            channels: 1,
        };
        circle_filled(&mut c, -3, 2, 2, &[1]);
        assert!(buf.iter().all(|&v| v == 0));
    }

    #[test]
    fn thin_line_is_bresenham() {
        let mut buf = blank(6, 3, 1);
        line(
            &mut Canvas {
                data: &mut buf,
                width: 6,
                height: 3,
                channels: 1,
            },
            (0, 0),
            (5, 2),
            &[1],
            1,
        );
        // err starts at 5 - 4 = 1: steps right, then diagonal when err < 0.
        assert_eq!(
            set_pixels(&buf, 6),
            vec![(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2)]
        );
        // Same pixels drawn right to left.
        let mut back = blank(6, 3, 1);
        line(
            &mut Canvas {
                data: &mut back,
                width: 6,
                height: 3,
                channels: 1,
            },
            (5, 2),
            (0, 0),
            &[1],
            1,
        );
        assert_eq!(back, buf);
    }

    #[test]
    fn thickness_2_horizontal_line_is_3_rows_with_round_caps() {
        // cv2.line(np.zeros((7, 12)), (3, 3), (8, 3), 1, 2): the quadrilateral
        // spans rows 2..=4 (half-width 1), columns 3..=8, and the radius-1 caps
        // add (2, 3) and (9, 3).
        let mut buf = blank(12, 7, 1);
        line(
            &mut Canvas {
                data: &mut buf,
                width: 12,
                height: 7,
                channels: 1,
            },
            (3, 3),
            (8, 3),
            &[1],
            2,
        );
        let mut want = Vec::new();
        for y in 2..=4 {
            let (x0, x1) = if y == 3 { (2, 9) } else { (3, 8) };
            want.extend((x0..=x1).map(|x| (x, y)));
        }
        assert_eq!(set_pixels(&buf, 12), want);
    }

    /// Puts the `index`-th `w x h` tile of a mosaic (`cols` tiles per row).
    fn tile(m: &Img, index: usize, cols: usize, w: usize, h: usize) -> Img {
        let (tx, ty) = (index % cols * w, index / cols * h);
        let mut data = Vec::with_capacity(w * h * m.channels);
        for y in ty..ty + h {
            let row = (y * m.width + tx) * m.channels;
            data.extend_from_slice(&m.data[row..row + w * m.channels]);
        }
        Img {
            data,
            width: w,
            height: h,
            channels: m.channels,
        }
    }

    const TILE_W: usize = 64;
    const TILE_H: usize = 48;
    const TILE_COLS: usize = 10;

    #[test]
    fn circles_match_cv2_goldens() {
        let cases = int_table("draw_circles.txt");
        let mosaic = png("draw_circles.png");
        assert!(cases.len() >= 200);
        for (i, p) in cases.iter().enumerate() {
            let [cx, cy, r, c0, c1, c2] = p[..] else {
                panic!("bad circle row {p:?}")
            };
            let mut buf = blank(TILE_W, TILE_H, 3);
            let color = [c0 as u8, c1 as u8, c2 as u8];
            circle_filled(
                &mut Canvas {
                    data: &mut buf,
                    width: TILE_W,
                    height: TILE_H,
                    channels: 3,
                },
                cx,
                cy,
                r,
                &color,
            );
            let want = tile(&mosaic, i, TILE_COLS, TILE_W, TILE_H);
            assert_same(&format!("circle #{i} {p:?}"), &buf, &want);
        }
    }

    #[test]
    fn lines_match_cv2_goldens() {
        let cases = int_table("draw_lines.txt");
        let mosaic = png("draw_lines.png");
        assert!(cases.len() >= 300);
        for (i, p) in cases.iter().enumerate() {
            let [x1, y1, x2, y2, t, c0, c1, c2] = p[..] else {
                panic!("bad line row {p:?}")
            };
            let mut buf = blank(TILE_W, TILE_H, 3);
            let color = [c0 as u8, c1 as u8, c2 as u8];
            line(
                &mut Canvas {
                    data: &mut buf,
                    width: TILE_W,
                    height: TILE_H,
                    channels: 3,
                },
                (x1, y1),
                (x2, y2),
                &color,
                t,
            );
            let want = tile(&mosaic, i, TILE_COLS, TILE_W, TILE_H);
            assert_same(&format!("line #{i} {p:?}"), &buf, &want);
        }
    }

    #[test]
    fn pose_drawing_matches_cv2_goldens() {
        // Rows: `kp set x y c0 c1 c2` then `link set a b c0 c1 c2` are encoded
        // as `0 set x y c0 c1 c2` and `1 set a b c0 c1 c2`.
        let rows = int_table("pose.txt");
        let sets = rows.iter().map(|r| r[1]).max().map_or(0, |m| m + 1);
        assert!(sets >= 3);
        for set in 0..sets {
            let (w, h) = (512, 512);
            let mut buf = blank(w, h, 3);
            let mut canvas = Canvas {
                data: &mut buf,
                width: w,
                height: h,
                channels: 3,
            };
            let kps: Vec<&Vec<i32>> = rows.iter().filter(|r| r[0] == 0 && r[1] == set).collect();
            assert_eq!(kps.len(), 17);
            for k in &kps {
                circle_filled(
                    &mut canvas,
                    k[2],
                    k[3],
                    2,
                    &[k[4] as u8, k[5] as u8, k[6] as u8],
                );
            }
            let links: Vec<&Vec<i32>> = rows.iter().filter(|r| r[0] == 1 && r[1] == set).collect();
            assert_eq!(links.len(), 19);
            for l in links {
                let (a, b) = (kps[l[2] as usize], kps[l[3] as usize]);
                line(
                    &mut canvas,
                    (a[2], a[3]),
                    (b[2], b[3]),
                    &[l[4] as u8, l[5] as u8, l[6] as u8],
                    2,
                );
            }
            let want = png(&format!("pose_{set}.png"));
            assert_same(&format!("pose set {set}"), &buf, &want);
        }
    }

    #[test]
    #[should_panic(expected = "thickness")]
    fn zero_thickness_panics() {
        let mut buf = blank(4, 4, 1);
        line(
            &mut Canvas {
                data: &mut buf,
                width: 4,
                height: 4,
                channels: 1,
            },
            (0, 0),
            (3, 3),
            &[1],
            0,
        );
    }
}
