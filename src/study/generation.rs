//! The study's call into generation: a checkpoint entry (`path = …`) is turned into a
//! [`GenerateRequest`] — the adapter directory in the generate issue's ONNX layout, the
//! pipeline (base model) directory, the validation dataset (a prep-built Parquet with
//! captions and the condition column), the study's generation settings, and where the
//! images go — the arguments of `prep generate --pipeline P --adapter COND=DIR:ω --input D
//! --condition COND --steps S --guidance G --seed X --out GEN`, and handed to [`generate`].
//!
//! [`generate`] calls `crate::generate::run` (the same code as `prep generate`) and returns
//! the directory of the generated `KEY.png` images, which the study then scores.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// `[generation]` of a study config: fixed for the study so nights are comparable.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenerationSpec {
    /// The pipeline (base model) in the generate issue's ONNX layout (text_encoder/, unet/,
    /// vae_decoder/, vae_encoder/, tokenizer/, scheduler/).
    pub pipeline: PathBuf,
    #[serde(default = "default_steps")]
    pub steps: u32,
    #[serde(default = "default_guidance")]
    pub guidance: f64,
    /// Adapter weight ω.
    #[serde(default = "default_scale")]
    pub adapter_scale: f64,
    /// Apply the adapter only for the first fraction f of the steps (diffusers' factor).
    #[serde(default = "default_scale")]
    pub conditioning_factor: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_resolution")]
    pub resolution: u32,
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// `cpu` or `cuda`.
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_steps() -> u32 {
    30
}
fn default_guidance() -> f64 {
    7.5
}
fn default_scale() -> f64 {
    1.0
}
fn default_resolution() -> u32 {
    1024
}
fn default_batch() -> usize {
    4
}
fn default_device() -> String {
    "cpu".into()
}

/// Everything one checkpoint's generation needs.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateRequest {
    /// Entry name (for messages).
    pub name: String,
    /// The adapter checkpoint directory (model.onnx + adapter.toml).
    pub adapter: PathBuf,
    pub condition: String,
    /// The validation dataset: a prep-built Parquet (captions + the condition column).
    pub input: PathBuf,
    /// How many images (the study's eval-set size).
    pub count: usize,
    pub settings: GenerationSpec,
    /// Where the images go (PNGs + the Parquet `prep generate` writes).
    pub out: PathBuf,
}

/// Generate the request's images into `req.out` (resumable: `prep generate` skips nothing,
/// so an existing complete output is reused) and return the directory of its images.
pub fn generate(req: &GenerateRequest) -> Result<PathBuf> {
    let s = &req.settings;
    let device = match s.device.as_str() {
        "cpu" => crate::runtime::Device::Cpu,
        "cuda" => crate::runtime::Device::Cuda,
        other => bail!("[generation] device {other:?}: use \"cpu\" or \"cuda\""),
    };
    let images = req.out.join("images");
    if req.out.join("generated.parquet").is_file() && images.is_dir() {
        return Ok(images);
    }
    let cfg = crate::generate::GenerateConfig {
        pipeline: s.pipeline.clone(),
        adapters: vec![crate::generate::AdapterArg {
            name: req.condition.clone(),
            dir: req.adapter.clone(),
            weight: Some(s.adapter_scale as f32),
        }],
        input: req.input.clone(),
        conditions: vec![req.condition.clone()],
        steps: s.steps as usize,
        guidance: s.guidance as f32,
        seed: s.seed,
        scheduler: crate::generate::scheduler::SchedulerKind::Ddim,
        adapter_conditioning_factor: s.conditioning_factor as f32,
        init_noise: None,
        mask: None,
        out: req.out.clone(),
        limit: Some(req.count),
        width: None,
        height: None,
        save_pixels: false,
        progress: false,
        runtime: crate::runtime::RuntimeOptions {
            threads: None,
            device,
        },
    };
    crate::generate::run(&cfg).with_context(|| {
        format!(
            "checkpoint {:?}: generating from {}",
            req.name,
            req.adapter.display()
        )
    })?;
    Ok(images)
}
