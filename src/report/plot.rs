//! Inline SVG charts (plotters, SVG backend only: text is emitted as SVG `<text>` with a
//! generic `sans-serif` family, so no font file is read or referenced).

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// (x, y, optional CI (low, high)).
pub type Point = (f64, f64, Option<(f64, f64)>);

/// One series: points (x, y, optional CI) drawn as a line with markers and a CI band.
pub struct Series {
    pub label: String,
    pub points: Vec<Point>,
    pub dashed: bool,
}

/// Chart-wide settings.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub log_x: bool,
    /// Labels for integer x positions (trend charts: night ids); `None`: numbers.
    pub x_labels: Option<&'a [String]>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

fn bounds(series: &[Series], log_x: bool) -> ((f64, f64), (f64, f64)) {
    let mut xs = (f64::INFINITY, f64::NEG_INFINITY);
    let mut ys = (f64::INFINITY, f64::NEG_INFINITY);
    for s in series {
        for &(x, y, ci) in &s.points {
            xs = (xs.0.min(x), xs.1.max(x));
            let (lo, hi) = ci.unwrap_or((y, y));
            ys = (ys.0.min(y.min(lo)), ys.1.max(y.max(hi)));
        }
    }
    if !xs.0.is_finite() {
        xs = (1.0, 10.0);
        ys = (0.0, 1.0);
    }
    let xs = if log_x {
        (xs.0 / 1.6, xs.1 * 1.6)
    } else {
        let pad = ((xs.1 - xs.0) * 0.05).max(0.5);
        (xs.0 - pad, xs.1 + pad)
    };
    let pad = ((ys.1 - ys.0) * 0.08).max(ys.1.abs() * 0.02).max(1e-9);
    (xs, (ys.0 - pad, ys.1 + pad))
}

/// Render `series` as an SVG document (a string starting with `<svg`).
pub fn svg(chart: &Chart<'_>, series: &[Series]) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (640, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let ((x0, x1), (y0, y1)) = bounds(series, chart.log_x);
        let mut b = ChartBuilder::on(&root);
        b.caption(chart.title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64);
        if chart.log_x {
            let mut c = b
                .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                .map_err(err)?;
            c.configure_mesh()
                .x_desc(chart.x_desc)
                .y_desc(chart.y_desc)
                .x_label_formatter(&|v| fmt_n(*v))
                .draw()
                .map_err(err)?;
            draw(&mut c, series)?;
        } else {
            let labels = chart.x_labels;
            let fmt = move |v: &f64| -> String {
                match labels {
                    Some(l) if (v - v.round()).abs() < 1e-9 && *v >= 0.0 => {
                        l.get(v.round() as usize).cloned().unwrap_or_default()
                    }
                    Some(_) => String::new(),
                    None => format!("{v}"),
                }
            };
            let mut c = b.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
            c.configure_mesh()
                .x_desc(chart.x_desc)
                .y_desc(chart.y_desc)
                .x_labels(labels.map(|l| l.len().clamp(2, 10)).unwrap_or(8))
                .x_label_formatter(&fmt)
                .draw()
                .map_err(err)?;
            draw(&mut c, series)?;
        }
        root.present().map_err(err)?;
    }
    // Inline SVG in HTML needs no namespace declaration; dropping it keeps the page free
    // of any http(s) string (the offline check asserts that).
    Ok(out.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1))
}

fn draw<'a, X, Y>(
    c: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    series: &[Series],
) -> Result<()>
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut pts = s.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        // CI band: upper edge left→right, lower edge right→left.
        let with_ci: Vec<_> = pts
            .iter()
            .filter_map(|&(x, _, ci)| ci.map(|(lo, hi)| (x, lo, hi)))
            .collect();
        if with_ci.len() >= 2 {
            let mut poly: Vec<(f64, f64)> = with_ci.iter().map(|&(x, _, hi)| (x, hi)).collect();
            poly.extend(with_ci.iter().rev().map(|&(x, lo, _)| (x, lo)));
            c.draw_series(std::iter::once(Polygon::new(
                poly,
                color.mix(0.18).filled(),
            )))
            .map_err(err)?;
        }
        for &(x, lo, hi) in &with_ci {
            c.draw_series(std::iter::once(PathElement::new(
                vec![(x, lo), (x, hi)],
                color.stroke_width(1),
            )))
            .map_err(err)?;
        }
        let line: Vec<(f64, f64)> = pts.iter().map(|&(x, y, _)| (x, y)).collect();
        let style = color.stroke_width(2);
        let anno = if s.dashed {
            c.draw_series(DashedLineSeries::new(line.clone(), 6, 4, style))
                .map_err(err)?
        } else {
            c.draw_series(LineSeries::new(line.clone(), style))
                .map_err(err)?
        };
        anno.label(s.label.clone()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
        });
        if !s.dashed {
            c.draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
    }
    if !series.is_empty() {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 12))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// 1000 → "1k", 2500000 → "2.5M".
pub fn fmt_n(v: f64) -> String {
    let (d, s) = if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    if (x - x.round()).abs() < 0.05 {
        format!("{}{s}", x.round())
    } else {
        format!("{x:.1}{s}")
    }
}
