//! Controllability: does the generated image follow its condition? The condition is
//! re-extracted from each generated image with prep's own condition code and compared with
//! the input condition map (ControlNet++'s protocol):
//!
//! - `canny` → `control_f1`: F1 of the generated image's edges (`cv2.Canny(img, 100, 200)`,
//!   [`crate::condition::canny::canny_map`]) against the condition's edges (pixels ≥ 128),
//!   exact pixel matches; higher is better.
//! - `color` → `control_rmse`: RMSE over pixels and channels (0–255) between the generated
//!   image's spatial palette ([`crate::condition::color::spatial_palette`]) and the
//!   condition map; lower is better.
//!
//! Condition maps are `conditions/<condition>/<stem>.*`, matched to generated images by
//! file stem (nearest-neighbour resized to the generated size if they differ). The value is
//! the mean over images, the CI ± 1.96·s/√n over per-image values. Conditions that need a
//! model to re-extract (depth, seg, keypose, hed, sketch) are refused with that reason.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use image::imageops::FilterType;

use super::images::{self, Blob};

/// The metric name for a condition, or why there is none.
pub fn metric_for(condition: &str) -> Result<&'static str> {
    match condition {
        "canny" => Ok("control_f1"),
        "color" => Ok("control_rmse"),
        other => bail!(
            "controllability for condition {other:?} needs its condition model to re-extract the condition from generated images (issue 4); supported: canny, color"
        ),
    }
}

/// Scores generated images one at a time (bounded memory), then summarises.
pub struct Control {
    metric: &'static str,
    dir: std::path::PathBuf,
    by_stem: HashMap<String, std::path::PathBuf>,
    vals: Vec<f64>,
}

impl Control {
    pub fn new(condition: &str, conditions_dir: &Path) -> Result<Self> {
        let metric = metric_for(condition)?;
        let files = images::list_dir(conditions_dir)
            .with_context(|| format!("controllability: condition maps for {condition}"))?;
        let by_stem = files
            .into_iter()
            .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p.clone())))
            .collect();
        Ok(Control {
            metric,
            dir: conditions_dir.to_path_buf(),
            by_stem,
            vals: Vec::new(),
        })
    }

    pub fn add(&mut self, g: &Blob) -> Result<()> {
        let cpath = self.by_stem.get(&g.name).with_context(|| {
            format!(
                "controllability: no condition map for generated image {:?} in {} (maps are matched by file stem)",
                g.name,
                self.dir.display()
            )
        })?;
        let gen = image::load_from_memory(&g.bytes)
            .with_context(|| format!("controllability: cannot decode generated image {}", g.name))?
            .to_rgb8();
        let cond = image::open(cpath)
            .with_context(|| format!("cannot read condition map {}", cpath.display()))?;
        let (w, h) = gen.dimensions();
        let cond = if cond.width() != w || cond.height() != h {
            cond.resize_exact(w, h, FilterType::Nearest)
        } else {
            cond
        };
        let v = match self.metric {
            "control_f1" => {
                let got = crate::condition::canny::canny_map(&gen);
                f1(got.as_raw(), cond.to_luma8().as_raw())
            }
            _ => {
                let got = crate::condition::color::spatial_palette(&gen);
                rmse(got.as_raw(), cond.to_rgb8().as_raw())
            }
        };
        self.vals.push(v);
        Ok(())
    }

    /// (metric, mean, CI).
    pub fn finish(self) -> Result<(String, f64, (f64, f64))> {
        let vals = self.vals;
        if vals.len() < 2 {
            bail!(
                "controllability needs at least 2 generated images, got {}",
                vals.len()
            );
        }
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let h = 1.96 * sd / n.sqrt();
        Ok((self.metric.to_string(), mean, (mean - h, mean + h)))
    }
}

/// (metric, mean, CI) over `generated`.
pub fn score(
    condition: &str,
    generated: &[Blob],
    conditions_dir: &Path,
) -> Result<(String, f64, (f64, f64))> {
    let mut c = Control::new(condition, conditions_dir)?;
    for g in generated {
        c.add(g)?;
    }
    c.finish()
}

/// F1 of two binary maps (≥ 128 = edge). Both empty: 1 (nothing to miss).
pub fn f1(got: &[u8], want: &[u8]) -> f64 {
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    for (&g, &w) in got.iter().zip(want) {
        match (g >= 128, w >= 128) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            _ => {}
        }
    }
    if tp + fp + fn_ == 0 {
        return 1.0;
    }
    2.0 * tp as f64 / (2 * tp + fp + fn_) as f64
}

/// Root mean square difference of two equally long byte buffers.
pub fn rmse(a: &[u8], b: &[u8]) -> f64 {
    let s: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    (s / a.len().max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut b = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png)
            .unwrap();
        b
    }

    #[test]
    fn f1_and_rmse_by_hand() {
        // got: 3 edges, want: 2 edges, overlap 1 → tp 1, fp 2, fn 1 → F1 = 2/5.
        assert_eq!(f1(&[255, 255, 255, 0, 0], &[255, 0, 0, 255, 0]), 0.4);
        assert_eq!(f1(&[0, 0], &[0, 0]), 1.0);
        assert_eq!(rmse(&[0, 10], &[0, 0]), (50.0f64).sqrt());
    }

    #[test]
    fn canny_of_the_image_itself_scores_one_and_a_blank_image_zero() {
        let t = tempfile::tempdir().unwrap();
        let step = |x: u32| {
            if (x / 8) % 2 == 0 {
                Rgb([0, 0, 0])
            } else {
                Rgb([255, 255, 255])
            }
        };
        let mut gen = Vec::new();
        for i in 0..3u32 {
            let img = RgbImage::from_fn(64, 64, |x, y| step(x + y * i));
            let edges = crate::condition::canny::canny_map(&img);
            edges.save(t.path().join(format!("{i}.png"))).unwrap();
            gen.push(Blob {
                name: i.to_string(),
                bytes: png(&img),
            });
        }
        let (m, v, (lo, hi)) = score("canny", &gen, t.path()).unwrap();
        assert_eq!((m.as_str(), v, lo, hi), ("control_f1", 1.0, 1.0, 1.0));
        let blank: Vec<Blob> = (0..3)
            .map(|i| Blob {
                name: i.to_string(),
                bytes: png(&RgbImage::new(64, 64)),
            })
            .collect();
        assert_eq!(score("canny", &blank, t.path()).unwrap().1, 0.0);
        let e = score("depth", &gen, t.path()).unwrap_err().to_string();
        assert!(e.contains("needs its condition model"), "{e}");
        let missing = [Blob {
            name: "nope".into(),
            bytes: png(&RgbImage::new(8, 8)),
        }];
        let e = score("canny", &missing, t.path()).unwrap_err().to_string();
        assert!(
            e.contains("no condition map for generated image \"nope\""),
            "{e}"
        );
    }
}
