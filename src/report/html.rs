//! The report page: one HTML string, everything inline (CSS, SVG, `data:` images).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use sha2::{Digest, Sha256};

use super::plot::{self, Chart, Point, Series};
use super::ReportData;
use crate::study::history::HistoryRow;
use crate::study::images;
use crate::study::nightly::lower_is_better;

/// HTML-escape text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(data.len().div_ceil(3) * 4);
    for ch in data.chunks(3) {
        let b = [ch[0], *ch.get(1).unwrap_or(&0), *ch.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= ch.len() {
                o.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

const CSS: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}\
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f3f3f3}td.l,th.l{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:12px}\
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;color:#fff}\
.regression{background:#c62828}.improvement{background:#2e7d32}.within{background:#757575}.noci{background:#9e9e9e}\
.grid img{width:128px;height:128px;object-fit:contain;background:#eee;display:block}.grid td{text-align:center}\
figure{margin:0}pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}.muted{color:#777}";

fn fmt(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 0.01 && v.abs() < 1e5) {
        format!("{v:.4}")
    } else {
        format!("{v:.4e}")
    }
}

fn step_label(s: Option<u64>) -> String {
    s.map(|s| format!("step {s}"))
        .unwrap_or_else(|| "step ?".into())
}

/// A downscaled PNG thumbnail as a data: URI (None if the image cannot be read).
fn thumb(bytes: &[u8]) -> Option<String> {
    let img = image::load_from_memory(bytes).ok()?.to_rgb8();
    let (w, h) = img.dimensions();
    let scale = (128.0 / w.max(h) as f64).min(1.0);
    let tw = ((w as f64 * scale).round() as u32).max(1);
    let th = ((h as f64 * scale).round() as u32).max(1);
    let t = image::imageops::thumbnail(&img, tw, th);
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(t)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .ok()?;
    Some(format!("data:image/png;base64,{}", base64(&png)))
}

/// Images of a set keyed by file stem / key (first `n` of the generated set).
fn stems(spec: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    images::load(Path::new(spec), Some(n))
        .map(|v| v.into_iter().map(|b| (b.name, b.bytes)).collect())
        .unwrap_or_default()
}

fn find_stem(dir: Option<&str>, stem: &str) -> Option<Vec<u8>> {
    let dir = dir?;
    let files = images::list_dir(Path::new(dir)).ok()?;
    let p = files
        .into_iter()
        .find(|p| p.file_stem().and_then(|s| s.to_str()) == Some(stem))?;
    std::fs::read(p).ok()
}

fn img_cell(bytes: Option<Vec<u8>>) -> String {
    match bytes.as_deref().and_then(thumb) {
        Some(uri) => format!("<td><img alt=\"\" src=\"{uri}\"></td>"),
        None => "<td class=\"muted\">—</td>".into(),
    }
}

/// The whole page.
pub fn page(
    d: &ReportData,
    all: &[HistoryRow],
    config: Option<(&Path, &str)>,
    grid_rows: usize,
) -> Result<String> {
    let mut h = String::new();
    let title = format!("{} — nightly report {}", d.study, d.night);
    write!(h, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body>", esc(&title))?;
    write!(h, "<h1>{}</h1>", esc(&title))?;
    let regressions = d
        .comparisons
        .iter()
        .filter(|c| c.verdict == "regression")
        .count();
    write!(
        h,
        "<p>{} checkpoints, {} rows tonight; nights in the history: {} (first {}, last {}). Regressions since the previous night: <b>{regressions}</b>.</p>",
        d.rows.iter().map(|r| &r.checkpoint).collect::<BTreeSet<_>>().len(),
        d.rows.len(),
        d.nights.len(),
        esc(d.nights.first().map(String::as_str).unwrap_or("")),
        esc(d.nights.last().map(String::as_str).unwrap_or(""))
    )?;

    // --- sample-complexity curves ---
    h.push_str("<h2 id=\"curves\">Sample-complexity curves</h2><p>Metric against the training-sample count N (log axis) for tonight's checkpoints; one line per training step with its CI band; dashed: the power-law fit a·N<sup>−b</sup> + c of the best step per N.</p>");
    let conditions: BTreeSet<&str> = d.rows.iter().map(|r| r.condition.as_str()).collect();
    for cond in &conditions {
        write!(h, "<h3>condition: {}</h3><div class=\"charts\">", esc(cond))?;
        let metrics: BTreeSet<&str> = d
            .rows
            .iter()
            .filter(|r| r.condition == *cond)
            .map(|r| r.metric.as_str())
            .collect();
        for m in metrics {
            let mut by_step: BTreeMap<Option<u64>, Vec<Point>> = BTreeMap::new();
            for r in d
                .rows
                .iter()
                .filter(|r| r.condition == *cond && r.metric == m)
            {
                by_step.entry(r.step).or_default().push((
                    r.samples as f64,
                    r.value,
                    r.ci_low.zip(r.ci_high),
                ));
            }
            let mut series: Vec<Series> = by_step
                .into_iter()
                .map(|(s, points)| Series {
                    label: step_label(s),
                    points,
                    dashed: false,
                })
                .collect();
            if let Some(f) = d
                .fits
                .iter()
                .find(|f| f.condition == *cond && f.metric == m)
                .and_then(|f| f.fit.as_ref())
            {
                let k = 40;
                let (lo, hi) = (f.n_min.ln(), f.n_max.ln());
                let points = (0..=k)
                    .map(|i| {
                        let n = (lo + (hi - lo) * i as f64 / k as f64).exp();
                        (n, f.params.eval(n), None)
                    })
                    .collect();
                series.push(Series {
                    label: "power-law fit".into(),
                    points,
                    dashed: true,
                });
            }
            let dir = if lower_is_better(m) {
                "lower is better"
            } else {
                "higher is better"
            };
            let svg = plot::svg(
                &Chart {
                    title: &format!("{cond}: {m} vs N"),
                    x_desc: "training samples N",
                    y_desc: &format!("{m} ({dir})"),
                    log_x: true,
                    x_labels: None,
                },
                &series,
            )?;
            write!(h, "<figure class=\"curve\">{svg}</figure>")?;
        }
        h.push_str("</div>");
    }

    // --- fits ---
    h.push_str("<h2 id=\"fits\">Power-law fits</h2><table><tr><th class=\"l\">condition</th><th class=\"l\">metric</th><th>points</th><th>a</th><th>b</th><th>c (asymptote)</th><th class=\"l\">samples needed</th></tr>");
    for f in &d.fits {
        let pm = |v: f64, s: Option<f64>| match s {
            Some(s) => format!("{} ± {}", fmt(v), fmt(s)),
            None => fmt(v),
        };
        let (a, b, c) = match &f.fit {
            // Exact through 3 points: nothing to estimate an uncertainty from.
            Some(x) if x.n_points == 3 => (
                format!("{} (exact: 3 points)", fmt(x.params.a)),
                fmt(x.params.b),
                fmt(x.params.c),
            ),
            Some(x) => {
                let se = x.stderr;
                (
                    pm(x.params.a, se.map(|s| s[0])),
                    pm(x.params.b, se.map(|s| s[1])),
                    pm(x.params.c, se.map(|s| s[2])),
                )
            }
            None => ("—".into(), "—".into(), "—".into()),
        };
        let need = match (&f.fit, &f.needed) {
            (None, _) => format!("no fit: {}", f.note.as_deref().unwrap_or("")),
            (Some(_), None) => "no target (prep report --target METRIC=X)".into(),
            (Some(x), Some(n)) => {
                let op = if n.lower_is_better { "≤" } else { "≥" };
                let q = format!("{} {op} {}", f.metric, fmt(n.target));
                match n.n {
                    _ if n.met_at_min => format!("{q}: already met at the smallest N = {}", plot::fmt_n(x.n_min)),
                    Some(v) if n.within_range => format!(
                        "{q}: N ≈ {}{}",
                        plot::fmt_n(v),
                        n.n_stderr.map(|s| format!(" ± {}", plot::fmt_n(s))).unwrap_or_default()
                    ),
                    Some(v) => format!(
                        "{q}: not reached within the fitted range (N ≤ {}); extrapolated N ≈ {}",
                        plot::fmt_n(x.n_max),
                        plot::fmt_n(v)
                    ),
                    None => format!("{q}: not reached within the fitted range (N ≤ {}); the fitted asymptote c = {} never gets there", plot::fmt_n(x.n_max), fmt(x.params.c)),
                }
            }
        };
        write!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{a}</td><td>{b}</td><td>{c}</td><td class=\"l\">{}</td></tr>",
            esc(&f.condition),
            esc(&f.metric),
            f.points.len(),
            esc(&need)
        )?;
    }
    h.push_str("</table>");

    // --- trends ---
    h.push_str("<h2 id=\"trends\">Trends over nights</h2>");
    h.push_str("<table><tr><th class=\"l\">checkpoint</th><th class=\"l\">metric</th><th>previous night</th><th>previous</th><th>tonight</th><th class=\"l\">verdict</th></tr>");
    for c in &d.comparisons {
        let class = match c.verdict.as_str() {
            "regression" => "regression",
            "improvement" => "improvement",
            "within CI" => "within",
            _ => "noci",
        };
        write!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\"><span class=\"badge {class}\">{}</span></td></tr>",
            esc(&c.checkpoint),
            esc(&c.metric),
            esc(&c.previous_night),
            fmt(c.previous),
            fmt(c.tonight),
            esc(&c.verdict)
        )?;
    }
    if d.comparisons.is_empty() {
        h.push_str("<tr><td class=\"l\" colspan=\"6\">no earlier night to compare with</td></tr>");
    }
    h.push_str("</table><div class=\"charts\">");
    let study_rows: Vec<&HistoryRow> = all
        .iter()
        .filter(|r| r.study == d.study && r.night <= d.night)
        .collect();
    let nights: Vec<String> = study_rows
        .iter()
        .map(|r| r.night.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let metrics: BTreeSet<&str> = d.rows.iter().map(|r| r.metric.as_str()).collect();
    for m in metrics {
        let mut by_ck: BTreeMap<&str, Vec<Point>> = BTreeMap::new();
        for r in study_rows.iter().filter(|r| r.metric == m) {
            let x = nights.iter().position(|n| *n == r.night).unwrap_or(0) as f64;
            by_ck.entry(r.checkpoint.as_str()).or_default().push((
                x,
                r.value,
                r.ci_low.zip(r.ci_high),
            ));
        }
        let series: Vec<Series> = by_ck
            .into_iter()
            .map(|(c, points)| Series {
                label: c.to_string(),
                points,
                dashed: false,
            })
            .collect();
        let svg = plot::svg(
            &Chart {
                title: &format!("{m} by night"),
                x_desc: "night",
                y_desc: m,
                log_x: false,
                x_labels: Some(&nights),
            },
            &series,
        )?;
        write!(h, "<figure class=\"trend\">{svg}</figure>")?;
    }
    h.push_str("</div>");

    // --- sample grids ---
    h.push_str("<h2 id=\"grids\">Sample grids</h2><p>Per condition and N (the latest step): condition | generated | real, matched by file name.</p>");
    for cond in &conditions {
        let mut by_n: BTreeMap<u64, &HistoryRow> = BTreeMap::new();
        for r in d
            .rows
            .iter()
            .filter(|r| r.condition == *cond && r.images.is_some())
        {
            let e = by_n.entry(r.samples).or_insert(r);
            if r.step > e.step {
                *e = r;
            }
        }
        if by_n.is_empty() {
            write!(h, "<p class=\"muted\">{}: no image sets recorded (feature-file checkpoints have no images).</p>", esc(cond))?;
            continue;
        }
        write!(h, "<h3>condition: {}</h3><div class=\"charts\">", esc(cond))?;
        for (n, r) in by_n {
            write!(h, "<table class=\"grid\"><tr><th colspan=\"3\">N = {} ({}, {})</th></tr><tr><th>condition</th><th>generated</th><th>real</th></tr>", plot::fmt_n(n as f64), esc(&r.checkpoint), esc(&step_label(r.step)))?;
            for (stem, bytes) in stems(r.images.as_deref().unwrap_or(""), grid_rows) {
                write!(
                    h,
                    "<tr>{}{}{}</tr>",
                    img_cell(find_stem(r.condition_images.as_deref(), &stem)),
                    img_cell(Some(bytes)),
                    img_cell(find_stem(r.real_images.as_deref(), &stem))
                )?;
            }
            h.push_str("</table>");
        }
        h.push_str("</div>");
    }

    // --- FID beside FID∞ ---
    let fid_rows: Vec<&HistoryRow> = d.rows.iter().filter(|r| r.metric == "fid").collect();
    if !fid_rows.is_empty() {
        h.push_str("<h2 id=\"fid\">FID and FID∞</h2><p>FID is biased by the eval-set size (fixed for this study); FID∞ extrapolates it to an infinite set (linear fit of FID against 1/N over subsets, intercept).</p><table><tr><th class=\"l\">checkpoint</th><th>N</th><th>step</th><th>eval-set size</th><th>FID</th><th>FID CI</th><th>FID∞</th></tr>");
        for r in fid_rows {
            let inf = d
                .rows
                .iter()
                .find(|x| x.checkpoint == r.checkpoint && x.metric == "fid_inf")
                .map(|x| fmt(x.value))
                .unwrap_or_else(|| "—".into());
            let ci = r
                .ci_low
                .zip(r.ci_high)
                .map(|(a, b)| format!("[{}, {}]", fmt(a), fmt(b)))
                .unwrap_or_else(|| "—".into());
            write!(
                h,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{ci}</td><td>{inf}</td></tr>",
                esc(&r.checkpoint),
                plot::fmt_n(r.samples as f64),
                r.step.map(|s| s.to_string()).unwrap_or_default(),
                r.n_eval,
                fmt(r.value)
            )?;
        }
        h.push_str("</table>");
    }

    // --- metrics table + provenance ---
    h.push_str("<h2 id=\"metrics\">Tonight's metrics</h2><table><tr><th class=\"l\">checkpoint</th><th class=\"l\">condition</th><th>N</th><th>step</th><th class=\"l\">metric</th><th>value</th><th>CI</th><th>eval-set size</th></tr>");
    for r in &d.rows {
        let ci = r
            .ci_low
            .zip(r.ci_high)
            .map(|(a, b)| format!("[{}, {}]", fmt(a), fmt(b)))
            .unwrap_or_else(|| "—".into());
        write!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{ci}</td><td>{}</td></tr>",
            esc(&r.checkpoint),
            esc(&r.condition),
            r.samples,
            r.step.map(|s| s.to_string()).unwrap_or_default(),
            esc(&r.metric),
            fmt(r.value),
            r.n_eval
        )?;
    }
    h.push_str("</table><p class=\"muted\">FID depends on the eval-set size (fixed per study); fid_inf is FID extrapolated to an infinite set (linear fit of FID against 1/N).</p>");
    h.push_str("<h2 id=\"provenance\">Provenance</h2><table><tr><th class=\"l\">checkpoint</th><th class=\"l\">dataset manifest sha256</th><th class=\"l\">model sha256</th><th class=\"l\">prep</th><th class=\"l\">config sha256</th></tr>");
    let mut seen = BTreeSet::new();
    for r in &d.rows {
        if !seen.insert(&r.checkpoint) {
            continue;
        }
        write!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            esc(&r.checkpoint),
            esc(r.dataset_manifest_sha256.as_deref().unwrap_or("—")),
            esc(&r.model_sha256.replace(';', "; ")),
            esc(&r.prep_version),
            esc(&r.config_sha256)
        )?;
    }
    h.push_str("</table>");
    if let Some((p, text)) = config {
        let sha = hex::encode(Sha256::digest(text.as_bytes()));
        let matches = d.rows.iter().all(|r| r.config_sha256 == sha);
        write!(
            h,
            "<p>Config {} (sha256 {sha}{}):</p><pre>{}</pre>",
            esc(&p.display().to_string()),
            if matches {
                ", matches tonight's rows"
            } else {
                ", <b>differs from the config recorded with tonight's rows</b>"
            },
            esc(text)
        )?;
    }
    writeln!(h, "<p class=\"muted\">prep {} — generated offline; no scripts or external resources.</p></body></html>", env!("CARGO_PKG_VERSION"))?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
