//! Generated or real images for the study: an image directory or a Parquet image column,
//! and a generic ONNX feature model to score them with.
//!
//! Image sets: `DIR` (files with an image extension, sorted by name) or
//! `FILE.parquet[:COLUMN]` (default column `image`; binary, or HF `datasets`' image struct
//! `{bytes, path}`), ordered as stored. The first `eval_size` images are used.
//!
//! [`OnnxFeatures`] is the study's feature model until issue 4's registry models land:
//! any ONNX file with one NCHW float input of a fixed `size` and one output of shape
//! `[batch, …]` (flattened to one row per image). The input is pytorch-fid's Inception
//! preprocessing (`eval::preprocess::pytorch_fid`). Its sha256 is checked against the
//! config's pin (when given) before ONNX Runtime opens it, and is the feature-cache key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::Array;
use arrow_schema::DataType;
use faer::Mat;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::eval::extract::{sha256_hex, CacheReport, FeatureCache, FeatureExtractor};
use crate::eval::preprocess;
use crate::runtime::{Batch, Net, RuntimeOptions};

const EXTS: [&str; 6] = ["png", "jpg", "jpeg", "webp", "bmp", "tiff"];

/// One image: a name (file stem or Parquet row key) and its encoded bytes.
pub struct Blob {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Is `spec` a Parquet image set (`X.parquet` or `X.parquet:COLUMN`)?
fn parquet_spec(spec: &Path) -> Option<(PathBuf, String)> {
    let s = spec.to_str()?;
    let (file, col) = match s.rsplit_once(".parquet:") {
        Some((f, c)) => (format!("{f}.parquet"), c.to_string()),
        None if s.ends_with(".parquet") => (s.to_string(), "image".to_string()),
        None => return None,
    };
    Some((PathBuf::from(file), col))
}

/// The image files of a directory, sorted by name.
pub fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).with_context(|| {
        format!(
            "cannot read image directory {} (give a directory of images or FILE.parquet[:COLUMN])",
            dir.display()
        )
    })?;
    let mut v = Vec::new();
    for e in rd {
        let p = e
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        let ext = p
            .extension()
            .and_then(|x| x.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if p.is_file() && EXTS.contains(&ext.as_str()) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// The first `limit` images of `spec` (all with `None`), all in memory: for a few images
/// (the report's grids). Scoring streams with [`visit`].
pub fn load(spec: &Path, limit: Option<usize>) -> Result<Vec<Blob>> {
    let mut v = Vec::new();
    visit(spec, limit, &mut |b| {
        v.push(b);
        Ok(())
    })?;
    Ok(v)
}

/// Hand the first `limit` images of `spec` to `f`, one at a time; returns how many.
pub fn visit(
    spec: &Path,
    limit: Option<usize>,
    f: &mut dyn FnMut(Blob) -> Result<()>,
) -> Result<usize> {
    let limit = limit.unwrap_or(usize::MAX);
    if let Some((file, col)) = parquet_spec(spec) {
        return visit_parquet(&file, &col, limit, f);
    }
    let mut n = 0;
    for p in list_dir(spec)?.into_iter().take(limit) {
        let bytes =
            std::fs::read(&p).with_context(|| format!("cannot read image {}", p.display()))?;
        let name = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        f(Blob { name, bytes })?;
        n += 1;
    }
    Ok(n)
}

fn visit_parquet(
    file: &Path,
    col: &str,
    limit: usize,
    f: &mut dyn FnMut(Blob) -> Result<()>,
) -> Result<usize> {
    let handle =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(handle)
        .with_context(|| format!("{}: not a readable Parquet file", file.display()))?;
    let schema = b.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let ci = schema.index_of(col).map_err(|_| {
        anyhow::anyhow!(
            "{}: no column {col:?} (columns: {}); write FILE.parquet:COLUMN",
            file.display(),
            names.join(", ")
        )
    })?;
    let mut proj = vec![ci];
    let ki = schema.index_of("key").ok();
    if let Some(k) = ki {
        proj.push(k);
    }
    let mask = ProjectionMask::roots(b.parquet_schema(), proj);
    let reader = b.with_projection(mask).with_batch_size(64).build()?;
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.with_context(|| format!("{}: cannot read", file.display()))?;
        let c = batch.column_by_name(col).expect("projected");
        let keys = batch
            .column_by_name("key")
            .map(|k| k.as_string::<i32>().clone());
        let bin = match c.data_type() {
            DataType::Binary => c.as_binary::<i32>().clone(),
            DataType::Struct(_) => c
                .as_struct()
                .column_by_name("bytes")
                .with_context(|| {
                    format!(
                        "{}: column {col:?} is a struct without `bytes`",
                        file.display()
                    )
                })?
                .as_binary::<i32>()
                .clone(),
            t => bail!(
                "{}: column {col:?} is {t}; expected encoded images (binary or an image struct)",
                file.display()
            ),
        };
        for i in 0..bin.len() {
            if row >= limit {
                return Ok(row);
            }
            if bin.is_null(i) {
                bail!(
                    "{}: row {row} of column {col:?} has no image",
                    file.display()
                );
            }
            let name = keys
                .as_ref()
                .map(|k| k.value(i).to_string())
                .unwrap_or_else(|| format!("{row:08}"));
            f(Blob {
                name,
                bytes: bin.value(i).to_vec(),
            })?;
            row += 1;
        }
    }
    Ok(row)
}

/// `[features]` of a study config.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureModelSpec {
    /// ONNX file: NCHW float input `size × size`, output `[batch, …]`.
    pub model: PathBuf,
    /// Expected sha256 of the model file (checked before loading).
    pub sha256: Option<String>,
    #[serde(default = "default_size")]
    pub size: u32,
    /// Output name (default: the last output).
    pub output: Option<String>,
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_size() -> u32 {
    299
}
fn default_batch() -> usize {
    16
}

/// pytorch-fid's Inception input at `size`²: NCHW RGB, torch bilinear (no antialias),
/// x / 127.5 − 1.
fn pytorch_fid_spec(size: u32) -> crate::models::InputSpec {
    use crate::models::{ChannelOrder, DType, InputSpec, Layout, Resample, SizePolicy};
    InputSpec {
        name: None,
        layout: Layout::Nchw,
        channels: ChannelOrder::Rgb,
        dtype: DType::F32,
        size: SizePolicy::Fixed {
            width: size,
            height: size,
        },
        resample: Resample::TorchBilinear,
        divide: 127.5,
        mean: [1.0; 3],
        std: [1.0; 3],
        pad_value: 0.0,
    }
}

/// A generic ONNX image-feature model (see the module docs).
pub struct OnnxFeatures {
    net: Net,
    input: String,
    output: usize,
    size: u32,
    dim: usize,
    batch: usize,
    sha: String,
}

/// sha256 of `path`, checked against `pin` when given.
pub fn verified_sha(path: &Path, pin: Option<&str>) -> Result<String> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read feature model {}", path.display()))?;
    let sha = sha256_hex(&bytes);
    if let Some(p) = pin {
        if !p.eq_ignore_ascii_case(&sha) {
            bail!(
                "feature model {}: sha256 is {sha}, the config pins {p}; the file changed — restore it or update `sha256` in [features]",
                path.display()
            );
        }
    }
    Ok(sha)
}

impl OnnxFeatures {
    pub fn open(spec: &FeatureModelSpec, path: &Path) -> Result<Self> {
        let sha = verified_sha(path, spec.sha256.as_deref())?;
        let mut net = Net::open("features", path, &RuntimeOptions::default())?;
        let input = net.input(None)?.name.clone();
        let output = net.output_index(spec.output.as_deref())?;
        // Probe the output dimension with one blank image.
        let s = spec.size as usize;
        let probe = vec![0f32; 3 * s * s];
        let out = net.run(&input, &[1, 3, s, s], Batch::F32(&probe), &[output])?;
        let dim = out[0].len();
        if dim == 0 {
            bail!("feature model {}: empty output", path.display());
        }
        Ok(OnnxFeatures {
            net,
            input,
            output,
            size: spec.size,
            dim,
            batch: spec.batch.max(1),
            sha,
        })
    }

    pub fn sha256(&self) -> &str {
        &self.sha
    }
}

impl FeatureExtractor for OnnxFeatures {
    fn model_key(&self) -> String {
        format!("{}:pytorch-fid-{}", self.sha, self.size)
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn batch_size(&self) -> usize {
        self.batch
    }
    fn extract(&mut self, images: &[image::RgbImage]) -> Result<Vec<Vec<f32>>> {
        let s = self.size as usize;
        let mut data = Vec::with_capacity(images.len() * 3 * s * s);
        for im in images {
            data.extend(preprocess::prepare(&pytorch_fid_spec(self.size), im)?.0);
        }
        let out = self.net.run(
            &self.input,
            &[images.len(), 3, s, s],
            Batch::F32(&data),
            &[self.output],
        )?;
        let flat: Vec<f32> = out[0].iter().copied().collect();
        if flat.len() != images.len() * self.dim {
            bail!(
                "feature model returned {} values for {} images of {} features",
                flat.len(),
                images.len(),
                self.dim
            );
        }
        Ok(flat.chunks(self.dim).map(|c| c.to_vec()).collect())
    }
}

/// Features of the first `limit` images of `spec` (cached by image sha256 and model key),
/// streamed: at most one window of `4 × batch` encoded images and one batch of decoded
/// images in memory. Each window's cache lookups go out together (concurrently when the
/// cache is on an object store), and the rows computed for it go up together. Every image
/// is also handed to `also` (e.g. controllability). Returns the feature matrix (one row per
/// image, in order) and what came from the cache.
pub fn features(
    ex: &mut dyn FeatureExtractor,
    cache: &FeatureCache,
    spec: &Path,
    limit: Option<usize>,
    what: &str,
    also: &mut dyn FnMut(&Blob) -> Result<()>,
) -> Result<(Mat<f64>, CacheReport)> {
    let key = ex.model_key();
    let dim = ex.dim();
    let batch = ex.batch_size().max(1);
    let mut rows: Vec<Option<Vec<f32>>> = Vec::new();
    let mut report = CacheReport::default();
    // (row index, sha, image) awaiting a cache lookup
    let mut window: Vec<(usize, String, Blob)> = Vec::new();
    let mut resolve = |ex: &mut dyn FeatureExtractor,
                       window: &mut Vec<(usize, String, Blob)>,
                       rows: &mut Vec<Option<Vec<f32>>>|
     -> Result<()> {
        if window.is_empty() {
            return Ok(());
        }
        let shas: Vec<String> = window.iter().map(|w| w.1.clone()).collect();
        let hits = cache.get_many(&key, &shas, dim)?;
        let mut fresh: Vec<(String, Vec<f32>)> = Vec::new();
        let mut pending: Vec<(usize, String, String, image::RgbImage)> = Vec::new();
        let mut flush = |ex: &mut dyn FeatureExtractor,
                         pending: &mut Vec<(usize, String, String, image::RgbImage)>,
                         rows: &mut Vec<Option<Vec<f32>>>|
         -> Result<()> {
            if pending.is_empty() {
                return Ok(());
            }
            let imgs: Vec<image::RgbImage> = pending.iter().map(|p| p.3.clone()).collect();
            let out = ex.extract(&imgs)?;
            if out.len() != pending.len() {
                bail!(
                    "{what}: feature model returned {} rows for {} images",
                    out.len(),
                    pending.len()
                );
            }
            for ((i, sha, name, _), row) in pending.drain(..).zip(out) {
                if let Some(v) = row.iter().find(|v| !v.is_finite()) {
                    bail!("{what}: feature model returned {v} for image {name}");
                }
                fresh.push((sha, row.clone()));
                rows[i] = Some(row);
            }
            Ok(())
        };
        for ((i, sha, b), hit) in window.drain(..).zip(hits) {
            match hit {
                Some(r) => {
                    report.hits += 1;
                    rows[i] = Some(r);
                }
                None => {
                    report.computed += 1;
                    // Pillow's decoding (libjpeg-turbo for JPEGs), as every eval feature model.
                    let img = crate::eval::extract::decode(&b.bytes, &b.name)
                        .with_context(|| what.to_string())?;
                    pending.push((i, sha, b.name, img));
                    if pending.len() >= batch {
                        flush(ex, &mut pending, rows)?;
                    }
                }
            }
        }
        flush(ex, &mut pending, rows)?;
        cache.put_many(&key, &fresh)
    };
    visit(spec, limit, &mut |b: Blob| {
        also(&b)?;
        let sha = sha256_hex(&b.bytes);
        window.push((rows.len(), sha, b));
        rows.push(None);
        if window.len() >= 4 * batch {
            resolve(ex, &mut window, &mut rows)?;
        }
        Ok(())
    })?;
    resolve(ex, &mut window, &mut rows)?;
    let mut m = Mat::<f64>::zeros(rows.len(), dim);
    for (i, r) in rows.into_iter().enumerate() {
        let r = r.with_context(|| format!("{what}: no features for image {i}"))?;
        for (j, v) in r.into_iter().enumerate() {
            m[(i, j)] = v as f64;
        }
    }
    Ok((m, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_specs() {
        assert_eq!(
            parquet_spec(Path::new("a/b.parquet")),
            Some((PathBuf::from("a/b.parquet"), "image".into()))
        );
        assert_eq!(
            parquet_spec(Path::new("b.parquet:color")),
            Some((PathBuf::from("b.parquet"), "color".into()))
        );
        assert_eq!(parquet_spec(Path::new("gen/dir")), None);
    }
}
