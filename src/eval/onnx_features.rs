//! [`FeatureExtractor`] over an ONNX feature model of the registry (decoder `features`):
//! the entry's [`InputSpec`] applied on the rayon pool ([`preprocess::prepare`]), batches
//! run through the shared runtime ([`LoadedModel`]), one row per image.

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::extract::FeatureExtractor;
use super::preprocess;
use crate::condition::model::LoadedModel;
use crate::models::{DecoderKind, InputSpec, ModelEntry, Resample, SizePolicy};
use crate::runtime::{Batch, RuntimeOptions};

/// Preprocessing variant of `prep eval … --preprocess`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preprocess {
    /// The model entry's own I/O spec.
    Model,
    /// pytorch-fid: bilinear (align_corners=False, no antialias), 2x − 1.
    Legacy,
    /// clean-fid "clean": PIL bicubic per channel on float, (x − 128) / 128.
    Clean,
}

impl Preprocess {
    /// The spec to feed, and the suffix that keeps cache entries of variants apart.
    pub fn apply(self, spec: &InputSpec) -> Result<(InputSpec, &'static str)> {
        let mut s = spec.clone();
        match self {
            Preprocess::Model => return Ok((s, "")),
            Preprocess::Legacy => {
                s.resample = Resample::TorchBilinear;
                s.divide = 127.5;
                s.mean = [1.0; 3];
                s.std = [1.0; 3];
            }
            Preprocess::Clean => {
                s.resample = Resample::PilBicubicFloat;
                s.divide = 1.0;
                s.mean = [128.0; 3];
                s.std = [128.0; 3];
            }
        }
        if !matches!(s.size, SizePolicy::Fixed { .. }) {
            bail!(
                "--preprocess {:?} is for fixed-size Inception-style models (size policy \"fixed\"); this model's is {:?}",
                self,
                spec.size
            );
        }
        Ok((
            s,
            if self == Preprocess::Legacy {
                ":legacy"
            } else {
                ":clean"
            },
        ))
    }
}

pub struct OnnxExtractor {
    model: LoadedModel,
    spec: InputSpec,
    key: String,
    dim: usize,
    batch: usize,
}

impl OnnxExtractor {
    /// Open a feature model; `dim` is found by one run on a black image when the output
    /// shape does not declare it.
    pub fn open(
        entry: &ModelEntry,
        path: std::path::PathBuf,
        opts: &RuntimeOptions,
        preprocess: Preprocess,
        batch: usize,
    ) -> Result<OnnxExtractor> {
        if entry.output.decoder != DecoderKind::Features {
            bail!(
                "model {} is a {:?} model (conditions {}), not a feature model; use a model registered with --like inception (or clip-vit-l14, dinov2-vitl14)",
                entry.name,
                entry.output.decoder,
                entry.conditions.join(",")
            );
        }
        let (spec, suffix) = preprocess.apply(&entry.input)?;
        let model = LoadedModel::open(entry, path, opts)?;
        let key = format!("{}{suffix}", model.sha256);
        let batch = model.max_batch(batch.max(1));
        let mut ex = OnnxExtractor {
            model,
            spec,
            key,
            dim: 0,
            batch,
        };
        let probe = image::RgbImage::new(8, 8);
        let row = ex
            .run(std::slice::from_ref(&probe))
            .with_context(|| format!("model {}: a trial run failed", entry.name))?;
        ex.dim = row.first().map_or(0, Vec::len);
        if ex.dim == 0 {
            bail!("model {}: the feature output is empty", entry.name);
        }
        Ok(ex)
    }

    fn run(&self, images: &[image::RgbImage]) -> Result<Vec<Vec<f32>>> {
        let prepared = images
            .par_iter()
            .map(|im| preprocess::prepare(&self.spec, im))
            .collect::<Result<Vec<_>>>()?;
        let (_, (h, w)) = prepared[0];
        let mut data = Vec::with_capacity(prepared.len() * prepared[0].0.len());
        for (v, _) in &prepared {
            data.extend_from_slice(v);
        }
        let shape = match self.spec.layout {
            crate::models::Layout::Nchw => [prepared.len(), 3, h, w],
            crate::models::Layout::Nhwc => [prepared.len(), h, w, 3],
        };
        let out = self.model.run_batch(&shape, Batch::F32(&data))?;
        let n = images.len();
        let name = &self.model.entry.name;
        if out.shape().first() != Some(&n) {
            bail!(
                "model {name}: output shape {:?} does not start with the batch size {n}",
                out.shape()
            );
        }
        let per = out.len() / n;
        // [N, d] or [N, d, 1, 1]: anything but the batch dimension must be d.
        let extra: Vec<usize> = out.shape()[1..]
            .iter()
            .copied()
            .filter(|&d| d != 1)
            .collect();
        if extra.len() > 1 {
            bail!(
                "model {name}: output shape {:?} is not one feature vector per image ([N, d] or [N, d, 1, 1]); name the pooled output in the manifest's [output] name",
                out.shape()
            );
        }
        let flat = out
            .as_slice()
            .map(<[f32]>::to_vec)
            .unwrap_or_else(|| out.iter().copied().collect());
        Ok(flat.chunks_exact(per).map(<[f32]>::to_vec).collect())
    }
}

impl FeatureExtractor for OnnxExtractor {
    fn model_key(&self) -> String {
        self.key.clone()
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn batch_size(&self) -> usize {
        self.batch
    }
    fn extract(&mut self, images: &[image::RgbImage]) -> Result<Vec<Vec<f32>>> {
        let mut rows = Vec::with_capacity(images.len());
        // Equal-shape inputs per run: fixed-size policies always are; `any` runs one by one.
        let step = if matches!(self.spec.size, SizePolicy::Any) {
            1
        } else {
            self.batch
        };
        for part in images.chunks(step.max(1)) {
            rows.extend(self.run(part)?);
        }
        Ok(rows)
    }
}
