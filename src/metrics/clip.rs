//! CLIP score as torchmetrics' `CLIPScore`: each image and text embedding L2-normalised,
//! per-sample score 100 · cos(e_I, e_T) (not clamped), reported score max(mean, 0).

use anyhow::{bail, Result};
use faer::MatRef;

use super::finite;

#[derive(Debug, Clone)]
pub struct ClipScore {
    /// max(mean of the per-sample scores, 0).
    pub score: f64,
    pub per_sample: Vec<f64>,
}

/// `images` and `texts`: N × d each, row i of one paired with row i of the other.
pub fn clip_score(
    images: MatRef<'_, f64>,
    img_what: &str,
    texts: MatRef<'_, f64>,
    txt_what: &str,
) -> Result<ClipScore> {
    if images.nrows() != texts.nrows() {
        bail!(
            "CLIP score pairs image and text embeddings row by row: {img_what} has {} rows, {txt_what} has {}",
            images.nrows(),
            texts.nrows()
        );
    }
    if images.ncols() != texts.ncols() {
        bail!(
            "CLIP image embeddings ({img_what}, d = {}) and text embeddings ({txt_what}, d = {}) differ in dimension",
            images.ncols(),
            texts.ncols()
        );
    }
    let d = images.ncols();
    let mut per_sample = Vec::with_capacity(images.nrows());
    for i in 0..images.nrows() {
        let (mut ii, mut tt, mut it) = (0.0, 0.0, 0.0);
        for t in 0..d {
            let (a, b) = (images[(i, t)], texts[(i, t)]);
            ii += a * a;
            tt += b * b;
            it += a * b;
        }
        if ii == 0.0 {
            bail!("{img_what}: row {i} is an all-zero embedding (cosine undefined)");
        }
        if tt == 0.0 {
            bail!("{txt_what}: row {i} is an all-zero embedding (cosine undefined)");
        }
        per_sample.push(100.0 * it / (ii.sqrt() * tt.sqrt()));
    }
    let mean = per_sample.iter().sum::<f64>() / per_sample.len() as f64;
    Ok(ClipScore {
        score: finite(mean, "CLIP score")?.max(0.0),
        per_sample,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosines_and_clamp() {
        let img = faer::mat![[1.0, 0.0], [0.0, 2.0]];
        let txt = faer::mat![[3.0, 0.0], [0.0, -1.0]];
        let s = clip_score(img.as_ref(), "i", txt.as_ref(), "t").unwrap();
        assert_eq!(s.per_sample, vec![100.0, -100.0]);
        assert_eq!(s.score, 0.0);
        let txt2 = faer::mat![[1.0, 1.0], [0.0, 5.0]];
        let s = clip_score(img.as_ref(), "i", txt2.as_ref(), "t").unwrap();
        let want = (100.0 / 2f64.sqrt() + 100.0) / 2.0;
        assert!((s.score - want).abs() < 1e-12);
    }
}
