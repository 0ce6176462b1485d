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
//! it has not seen. ROOT is a local directory (`$PREP_CACHE/features` by default) or an
//! object-store prefix (`--feature-cache s3://…`, `PREP_FEATURE_CACHE`, `[study]
//! feature_cache`) that many eval workers share: per chunk of images the lookups go out
//! together and the computed rows go up together, [`CACHE_REQUESTS_IN_FLIGHT`] requests in
//! flight, each row one whole-object PUT (entries are content-addressed, so two workers
//! writing one entry write the same bytes; no conditional create is needed). The model key is the sha256 of the model file, suffixed with the
//! preprocessing variant when a model has several (e.g. `…:clean`), so a cached row is
//! always the output of exactly these weights and this preprocessing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use faer::Mat;
use sha2::{Digest, Sha256};

use rayon::prelude::*;

use crate::eval::images::ImageSet;
use crate::eval::io::write_atomic;
use crate::sink::remote::{is_url, Remote, RemoteOptions};

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

/// Feature rows keyed by (model key, image sha256): a local directory, or a prefix on an
/// object store that a fleet of eval workers shares.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    root: CacheRoot,
}

#[derive(Debug, Clone)]
enum CacheRoot {
    Dir(PathBuf),
    Store(Arc<Remote>),
}

/// Requests in flight per chunk when the cache is on an object store (lookups, then
/// uploads of the rows computed): per-image requests are latency-bound, not bandwidth-bound.
pub const CACHE_REQUESTS_IN_FLIGHT: usize = 32;

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

/// A cached row's bytes → the row, if it holds exactly `dim` values (a torn or foreign
/// entry is a miss).
fn row_of(bytes: &[u8], dim: usize) -> Option<Vec<f32>> {
    (bytes.len() == dim * 4).then(|| {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

impl FeatureCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FeatureCache {
            root: CacheRoot::Dir(root.into()),
        }
    }

    /// `$PREP_CACHE/features` (or the XDG cache), next to the models.
    pub fn default_location() -> Self {
        Self::new(crate::source::cache_dir().join("features"))
    }

    /// A cache directory, or an `s3://`, `gs://`, `az://` prefix (`flag` names the
    /// setting in messages). A URL costs one LIST request at open, so that a missing
    /// bucket or wrong credentials fail before any feature is computed (a missing object
    /// is a miss, and some stores answer a GET in a missing bucket that way too).
    pub fn open(location: &Path, opts: &RemoteOptions, flag: &str) -> Result<Self> {
        let s = location.to_string_lossy();
        if !is_url(&s) {
            return Ok(Self::new(location));
        }
        let r = Remote::open_read(&s, opts, flag)?;
        r.any_under("")
            .with_context(|| format!("{flag} {s}: the feature cache is not reachable"))?;
        Ok(FeatureCache {
            root: CacheRoot::Store(Arc::new(r)),
        })
    }

    /// Where the cache is, as the user named it.
    pub fn location(&self) -> String {
        match &self.root {
            CacheRoot::Dir(d) => d.display().to_string(),
            CacheRoot::Store(r) => r.url(""),
        }
    }

    /// The object store's request counts, when the cache is on one.
    pub fn requests(&self) -> Option<&crate::sink::remote::RequestCounts> {
        match &self.root {
            CacheRoot::Dir(_) => None,
            CacheRoot::Store(r) => Some(r.requests()),
        }
    }

    /// `<model key>/<first 2 hex>/<image sha>.f32` (`:` in the key becomes `_`).
    fn rel(model_key: &str, image_sha: &str) -> Result<String> {
        check_key(model_key, "model key")?;
        check_key(image_sha, "image sha256")?;
        let model_dir = model_key.replace(':', "_");
        let prefix = image_sha.get(..2).unwrap_or(image_sha);
        Ok(format!("{model_dir}/{prefix}/{image_sha}.f32"))
    }

    /// The cached row, if present and of length `dim` (a torn or foreign entry is a miss).
    pub fn get(&self, model_key: &str, image_sha: &str, dim: usize) -> Result<Option<Vec<f32>>> {
        let mut v = self.get_many(model_key, &[image_sha.to_string()], dim)?;
        Ok(v.pop().flatten())
    }

    /// [`FeatureCache::get`] of many images, in order; on an object store the lookups run
    /// concurrently ([`CACHE_REQUESTS_IN_FLIGHT`] in flight).
    pub fn get_many(
        &self,
        model_key: &str,
        image_shas: &[String],
        dim: usize,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let rels = image_shas
            .iter()
            .map(|sha| Self::rel(model_key, sha))
            .collect::<Result<Vec<_>>>()?;
        match &self.root {
            CacheRoot::Dir(root) => rels
                .iter()
                .map(|rel| {
                    let p = root.join(rel);
                    match std::fs::read(&p) {
                        Ok(b) => Ok(row_of(&b, dim)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                        Err(e) => Err(e)
                            .with_context(|| format!("cannot read cache entry {}", p.display())),
                    }
                })
                .collect(),
            CacheRoot::Store(r) => r
                .get_many(&rels, CACHE_REQUESTS_IN_FLIGHT)
                .into_iter()
                .map(|got| {
                    Ok(got
                        .context("feature cache lookup")?
                        .and_then(|b| row_of(&b, dim)))
                })
                .collect(),
        }
    }

    pub fn put(&self, model_key: &str, image_sha: &str, row: &[f32]) -> Result<()> {
        self.put_many(model_key, &[(image_sha.to_string(), row.to_vec())])
    }

    /// Store rows (image sha, row): locally each written atomically (temp + rename); on an
    /// object store each one whole-object PUT, [`CACHE_REQUESTS_IN_FLIGHT`] in flight. The
    /// key is the content, so concurrent writers of one entry write the same bytes, and a
    /// PUT replaces a torn or foreign entry that read as a miss.
    pub fn put_many(&self, model_key: &str, rows: &[(String, Vec<f32>)]) -> Result<()> {
        let items = rows
            .iter()
            .map(|(sha, row)| {
                let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
                Ok((Self::rel(model_key, sha)?, bytes))
            })
            .collect::<Result<Vec<_>>>()?;
        match &self.root {
            CacheRoot::Dir(root) => {
                for (rel, bytes) in items {
                    write_atomic(&root.join(rel), &bytes)?;
                }
                Ok(())
            }
            CacheRoot::Store(r) => r
                .put_many(items, CACHE_REQUESTS_IN_FLIGHT)
                .context("cannot store computed features in the feature cache"),
        }
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
        // One concurrent lookup of the whole chunk (latency-bound on an object store).
        let hits = match cache {
            Some(c) => c.get_many(&key, &shas, dim)?,
            None => vec![None; shas.len()],
        };
        for (j, hit) in hits.into_iter().enumerate() {
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
        let mut fresh: Vec<(String, Vec<f32>)> = Vec::new();
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
                put_row(&mut m, next + j, &row)?;
                if cache.is_some() {
                    fresh.push((shas[j].clone(), row));
                }
                report.computed += 1;
            }
        }
        // The chunk's new rows go up together (concurrently on an object store).
        if let Some(c) = cache {
            c.put_many(&key, &fresh)?;
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
    if let Some(img) = crate::imaging::decode::decode_jpeg_libjpeg_turbo(bytes) {
        return Ok(img);
    }
    Ok(image::load_from_memory(bytes)
        .with_context(|| format!("cannot decode image {name}"))?
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
