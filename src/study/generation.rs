//! The study's call into generation: a checkpoint entry (`path = …`) is turned into a
//! [`GenerateRequest`] — the adapter directory in the generate issue's ONNX layout, the
//! pipeline (base model) directory, the validation dataset (a prep-built Parquet with
//! captions and the condition column), the study's generation settings, and where the
//! images go — the arguments of `prep generate --pipeline P --adapter COND=DIR:ω --input D
//! --condition COND --steps S --guidance G --seed X --out GEN`, and handed to [`generate`].
//!
//! `prep generate` (issue 6, `crate::generate::run`) is not part of this build yet, so
//! [`generate`] refuses with [`NOT_AVAILABLE`]; after merging it becomes a call into
//! `generate::run`. Nothing here ever produces stand-in images.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `true` once `prep generate` is merged and wired into [`generate`].
pub const AVAILABLE: bool = false;

/// The message for a checkpoint entry while generation is not in the build.
pub const NOT_AVAILABLE: &str = "generating images from a checkpoint needs `prep generate` (issue 6), which is not available in this build; \
until it is merged, generate the checkpoint's images elsewhere and give them as `images = \"DIR\"` (or PARQUET[:COLUMN]) instead of `path`";

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

/// Generate the request's images into `req.out` and return that directory.
pub fn generate(req: &GenerateRequest) -> Result<PathBuf> {
    bail!(
        "checkpoint {:?} ({}): {NOT_AVAILABLE}",
        req.name,
        req.adapter.display()
    )
}
