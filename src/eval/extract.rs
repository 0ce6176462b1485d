//! The seam where feature models plug in, and the on-disk feature cache.
//!
//! A [`FeatureExtractor`] turns a batch of decoded RGB images into one feature row each
//! (its own preprocessing included: resize, normalisation, layout). The ONNX Runtime
//! feature models ([`super::onnx_features`]: Inception, CLIP image tower, DINOv2 …) implement it; nothing in the
//! metrics knows about models.
//!
//! [`FeatureCache`] stores one feature row per (image sha256, model key) under
//! `ROOT/<model key>/<first 2 hex of image sha>/<image sha>.f32` (raw little-endian f32,
//! written atomically), so re-scoring after one new checkpoint only runs the model on images
//! it has not seen. The model key is the sha256 of the model file, suffixed with the
//! preprocessing variant when a model has several (e.g. `…:clean`), so a cached row is
//! always the output of exactly these weights and this preprocessing.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use faer::Mat;
use sha2::{Digest, Sha256};

use rayon::prelude::*;

use crate::eval::images::ImageSet;
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

/// Features of `images` (files), in order; see [`features_for_set`].
pub fn features_for_images(
    extractor: &mut dyn FeatureExtractor,
    cache: &FeatureCache,
    images: &[PathBuf],
) -> Result<(Mat<f64>, CacheReport)> {
    features_for_set(
        extractor,
        Some(cache),
        &ImageSet::Files(images.to_vec()),
        &mut |_| {},
    )
}

/// Features of every image of `set`, in order: per chunk, cached rows are read, the rest
/// decoded (`Image.open(…).convert("RGB")` semantics: no EXIF rotation, alpha dropped) and
/// run through `extractor`, then cached (no cache: everything is computed). `progress`
/// gets the number of images done.
pub fn features_for_set(
    extractor: &mut dyn FeatureExtractor,
    cache: Option<&FeatureCache>,
    set: &ImageSet,
    progress: &mut dyn FnMut(usize),
) -> Result<(Mat<f64>, CacheReport)> {
    let key = extractor.model_key();
    let dim = extractor.dim();
    let mut m = Mat::<f64>::zeros(set.len(), dim);
    let mut report = CacheReport::default();
    let mut next = 0usize;
    let chunk = extractor.batch_size().max(1) * 4;
    set.for_each_chunk(chunk, |items| {
        let shas: Vec<String> = items.iter().map(|it| sha256_hex(&it.bytes)).collect();
        let mut todo: Vec<usize> = Vec::new();
        for (j, sha) in shas.iter().enumerate() {
            let hit = match cache {
                Some(c) => c.get(&key, sha, dim)?,
                None => None,
            };
            match hit {
                Some(r) => {
                    report.hits += 1;
                    put_row(&mut m, next + j, &r)?;
                }
                None => todo.push(j),
            }
        }
        // Decoding of batch k + 1 runs on a helper thread (at lower priority, so inference
        // keeps the cores) while the model runs batch k.
        let parts: Vec<&[usize]> = todo.chunks(extractor.batch_size().max(1)).collect();
        let decode_part = |part: &[usize]| -> Result<Vec<image::RgbImage>> {
            part.iter()
                .map(|&j| decode(&items[j].bytes, &items[j].name))
                .collect()
        };
        let mut ready: Option<Result<Vec<image::RgbImage>>> = parts.first().map(|p| {
            p.par_iter()
                .map(|&j| decode(&items[j].bytes, &items[j].name))
                .collect()
        });
        for (pi, part) in parts.iter().enumerate() {
            let batch = match ready.take() {
                Some(b) => b?,
                None => bail!("internal: batch {pi} was not decoded"),
            };
            let following = parts.get(pi + 1).copied();
            let (out, decoded) = std::thread::scope(|sc| {
                let h = following.map(|p| {
                    sc.spawn(move || {
                        crate::runtime::lower_thread_priority();
                        decode_part(p)
                    })
                });
                let out = extractor.extract(&batch);
                let decoded = h.map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("image decoding panicked")))
                });
                (out, decoded)
            });
            ready = decoded;
            let out = out?;
            if out.len() != part.len() {
                bail!(
                    "feature model returned {} rows for {} images",
                    out.len(),
                    part.len()
                );
            }
            for (&j, row) in part.iter().zip(out) {
                if row.len() != dim {
                    bail!(
                        "feature model returned a row of {} values for {}, expected {dim}",
                        row.len(),
                        items[j].name
                    );
                }
                if let Some(v) = row.iter().find(|v| !v.is_finite()) {
                    bail!(
                        "feature model returned a non-finite value {v} for {}",
                        items[j].name
                    );
                }
                if let Some(c) = cache {
                    c.put(&key, &shas[j], &row)?;
                }
                put_row(&mut m, next + j, &row)?;
                report.computed += 1;
            }
        }
        next += items.len();
        progress(next);
        Ok(())
    })?;
    if next != set.len() {
        bail!(
            "the image set changed while it was read ({} images listed, {next} read)",
            set.len()
        );
    }
    Ok((m, report))
}

fn put_row(m: &mut Mat<f64>, i: usize, row: &[f32]) -> Result<()> {
    if i >= m.nrows() {
        bail!("the image set grew while it was read");
    }
    for (j, &v) in row.iter().enumerate() {
        m[(i, j)] = v as f64;
    }
    Ok(())
}

/// Decode as PIL's `Image.open(f).convert("RGB")` does: no EXIF rotation, alpha dropped,
/// grey replicated. JPEGs go through libjpeg-turbo's decoder (as in Pillow: ISLOW IDCT,
/// fancy upsampling), because other decoders differ by a few levels on many pixels and
/// feature models amplify that; CMYK JPEGs and other formats use the `image` crate.
pub fn decode(bytes: &[u8], name: &str) -> Result<image::RgbImage> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        if let Some(img) = decode_jpeg_like_pil(bytes) {
            return Ok(img);
        }
    }
    Ok(image::load_from_memory(bytes)
        .with_context(|| format!("cannot decode image {name}"))?
        .to_rgb8())
}

/// libjpeg-turbo (mozjpeg's decoder is libjpeg-turbo's) to RGB; `None` for colour spaces
/// Pillow converts itself (CMYK, YCCK) or on any decoder error (the caller falls back).
fn decode_jpeg_like_pil(bytes: &[u8]) -> Option<image::RgbImage> {
    use mozjpeg::ColorSpace;
    let d = mozjpeg::Decompress::new_mem(bytes).ok()?;
    if !matches!(
        d.color_space(),
        ColorSpace::JCS_YCbCr | ColorSpace::JCS_GRAYSCALE | ColorSpace::JCS_RGB
    ) {
        return None;
    }
    let (w, h) = (d.width() as u32, d.height() as u32);
    let mut started = d.rgb().ok()?;
    let px: Vec<[u8; 3]> = started.read_scanlines().ok()?;
    started.finish().ok()?;
    image::RgbImage::from_raw(w, h, px.into_iter().flatten().collect())
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
