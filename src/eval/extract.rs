//! The seam where feature models plug in, and the on-disk feature cache.
//!
//! A [`FeatureExtractor`] turns a batch of decoded RGB images into one feature row each
//! (its own preprocessing included: resize, normalisation, layout). The ONNX Runtime
//! models of issue 4 (Inception, CLIP image tower, DINOv2 …) implement it; nothing in the
//! metrics knows about models.
//!
//! [`FeatureCache`] stores one feature row per (image sha256, model key) under
//! `ROOT/<model key>/<first 2 hex of image sha>/<image sha>.f32` (raw little-endian f32,
//! written atomically), so re-scoring after one new checkpoint only runs the model on images
//! it has not seen. The model key is the sha256 of the model file, suffixed with the
//! preprocessing variant when a model has several (e.g. `…:clean`), so a cached row is
//! always the output of exactly these weights and this preprocessing.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use faer::Mat;
use sha2::{Digest, Sha256};

use crate::eval::io::write_atomic;

/// Image batch → features. Implementations must be deterministic and batch-size
/// independent (the same image gives the same row in any batch).
pub trait FeatureExtractor {
    /// Cache identity: sha256 of the model file, plus `:variant` if preprocessing varies.
    fn model_key(&self) -> String;
    /// Feature dimension d.
    fn dim(&self) -> usize;
    /// Preferred batch size.
    fn batch_size(&self) -> usize {
        32
    }
    /// One row of `dim()` values per image, in order.
    fn extract(&mut self, images: &[image::RgbImage]) -> Result<Vec<Vec<f32>>>;
}

/// Feature rows on disk, keyed by (model key, image sha256).
#[derive(Debug, Clone)]
pub struct FeatureCache {
    root: PathBuf,
}

/// What [`features_for_images`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheReport {
    pub hits: usize,
    pub computed: usize,
}

fn check_key(key: &str, what: &str) -> Result<()> {
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '-' || c == '_')
    {
        bail!("invalid {what} for the feature cache: {key:?}");
    }
    Ok(())
}

impl FeatureCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FeatureCache { root: root.into() }
    }

    /// `$PREP_CACHE/features` (or the XDG cache), next to the models.
    pub fn default_location() -> Self {
        Self::new(crate::source::cache_dir().join("features"))
    }

    fn entry(&self, model_key: &str, image_sha: &str) -> Result<PathBuf> {
        check_key(model_key, "model key")?;
        check_key(image_sha, "image sha256")?;
        let model_dir = model_key.replace(':', "_");
        let prefix = image_sha.get(..2).unwrap_or(image_sha);
        Ok(self
            .root
            .join(model_dir)
            .join(prefix)
            .join(format!("{image_sha}.f32")))
    }

    /// The cached row, if present and of length `dim` (a torn or foreign entry is a miss).
    pub fn get(&self, model_key: &str, image_sha: &str, dim: usize) -> Result<Option<Vec<f32>>> {
        let p = self.entry(model_key, image_sha)?;
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read cache entry {}", p.display()))
            }
        };
        if bytes.len() != dim * 4 {
            return Ok(None);
        }
        Ok(Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }

    pub fn put(&self, model_key: &str, image_sha: &str, row: &[f32]) -> Result<()> {
        let p = self.entry(model_key, image_sha)?;
        let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_atomic(&p, &bytes)
    }
}

/// sha256 of a file's bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Features of `images` (files), in order: cached rows are read, the rest decoded and run
/// through `extractor` in batches, then cached.
pub fn features_for_images(
    extractor: &mut dyn FeatureExtractor,
    cache: &FeatureCache,
    images: &[PathBuf],
) -> Result<(Mat<f64>, CacheReport)> {
    let key = extractor.model_key();
    let dim = extractor.dim();
    let mut rows: Vec<Option<Vec<f32>>> = Vec::with_capacity(images.len());
    let mut todo: Vec<(usize, String)> = Vec::new();
    let mut report = CacheReport::default();
    for (i, p) in images.iter().enumerate() {
        let bytes =
            std::fs::read(p).with_context(|| format!("cannot read image {}", p.display()))?;
        let sha = sha256_hex(&bytes);
        match cache.get(&key, &sha, dim)? {
            Some(r) => {
                report.hits += 1;
                rows.push(Some(r));
            }
            None => {
                rows.push(None);
                todo.push((i, sha));
            }
        }
    }
    for chunk in todo.chunks(extractor.batch_size().max(1)) {
        let batch = chunk
            .iter()
            .map(|(i, _)| decode(&images[*i]))
            .collect::<Result<Vec<_>>>()?;
        let out = extractor.extract(&batch)?;
        if out.len() != chunk.len() {
            bail!(
                "feature model returned {} rows for {} images",
                out.len(),
                chunk.len()
            );
        }
        for ((i, sha), row) in chunk.iter().zip(out) {
            if row.len() != dim {
                bail!(
                    "feature model returned a row of {} values, expected {dim}",
                    row.len()
                );
            }
            if let Some(v) = row.iter().find(|v| !v.is_finite()) {
                bail!(
                    "feature model returned a non-finite value {v} for {}",
                    images[*i].display()
                );
            }
            cache.put(&key, sha, &row)?;
            rows[*i] = Some(row);
            report.computed += 1;
        }
    }
    let mut m = Mat::<f64>::zeros(images.len(), dim);
    for (i, r) in rows.into_iter().enumerate() {
        let r = r.with_context(|| format!("no features for {}", images[i].display()))?;
        for (j, v) in r.into_iter().enumerate() {
            m[(i, j)] = v as f64;
        }
    }
    Ok((m, report))
}

fn decode(path: &Path) -> Result<image::RgbImage> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    Ok(image::load_from_memory(&bytes)
        .with_context(|| format!("cannot decode image {}", path.display()))?
        .to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean R, G, B of the image, scaled to [0, 1].
    struct MeanRgb {
        calls: usize,
        images: usize,
    }

    impl FeatureExtractor for MeanRgb {
        fn model_key(&self) -> String {
            sha256_hex(b"mean-rgb-v1")
        }
        fn dim(&self) -> usize {
            3
        }
        fn batch_size(&self) -> usize {
            2
        }
        fn extract(&mut self, images: &[image::RgbImage]) -> Result<Vec<Vec<f32>>> {
            self.calls += 1;
            self.images += images.len();
            Ok(images
                .iter()
                .map(|im| {
                    let mut s = [0f64; 3];
                    for p in im.pixels() {
                        for c in 0..3 {
                            s[c] += p[c] as f64;
                        }
                    }
                    let n = (im.width() * im.height()) as f64 * 255.0;
                    s.iter().map(|v| (v / n) as f32).collect()
                })
                .collect())
        }
    }

    #[test]
    fn cache_computes_only_new_images() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (i, c) in [[255u8, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]
            .iter()
            .enumerate()
        {
            let p = dir.path().join(format!("{i}.png"));
            image::RgbImage::from_pixel(4, 3, image::Rgb(*c))
                .save(&p)
                .unwrap();
            paths.push(p);
        }
        let cache = FeatureCache::new(dir.path().join("cache"));
        let mut ex = MeanRgb {
            calls: 0,
            images: 0,
        };
        let (a, r) = features_for_images(&mut ex, &cache, &paths[..3]).unwrap();
        assert_eq!(
            r,
            CacheReport {
                hits: 0,
                computed: 3
            }
        );
        assert_eq!(ex.calls, 2); // batches of 2
        assert_eq!(
            (a[(0, 0)], a[(1, 1)], a[(2, 2)], a[(0, 1)]),
            (1.0, 1.0, 1.0, 0.0)
        );
        // A fourth image: only it is computed; the others come from disk, in order.
        let (b, r) = features_for_images(&mut ex, &cache, &paths).unwrap();
        assert_eq!(
            r,
            CacheReport {
                hits: 3,
                computed: 1
            }
        );
        assert_eq!(ex.images, 4);
        assert_eq!(b.as_ref().subrows(0, 3), a.as_ref());
        assert_eq!((b[(3, 0)], b[(3, 1)], b[(3, 2)]), (1.0, 1.0, 1.0));
        // Same bytes under another name hit the cache (keyed by content, not path).
        let copy = dir.path().join("copy.png");
        std::fs::copy(&paths[1], &copy).unwrap();
        let (_, r) = features_for_images(&mut ex, &cache, &[copy]).unwrap();
        assert_eq!(
            r,
            CacheReport {
                hits: 1,
                computed: 0
            }
        );
    }
}
