//! `prep generate` flags (clap) → [`GenerateConfig`], and the command's report.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::{AdapterArg, GenerateConfig, SchedulerKind};
use crate::runtime::{Device, RuntimeOptions};

pub const EXAMPLES: &str = "\
Examples:
  prep generate --pipeline sd15-onnx --adapter depth=ckpt/depth-5k:1.0 --input out/coco-val \\
      --condition depth --steps 20 --guidance 7.5 --seed 42 --out gen/depth-5k
  prep generate --pipeline sd15-onnx --adapter depth=ckpt/depth:0.8 --adapter color=ckpt/color:0.4 \\
      --condition depth=depth --condition color=color --input out/coco-val --scheduler dpm++2m --out gen/multi
  prep generate ... --init-noise latents.npy --save-pixels   (parity checks against a reference)";

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Stable Diffusion pipeline directory (README "prep generate": text_encoder/, unet/,
    /// vae_decoder/, tokenizer/, scheduler/).
    #[arg(long)]
    pub pipeline: PathBuf,
    /// NAME=DIR[:WEIGHT]: a T2I-Adapter directory (model.onnx + adapter.toml) and its
    /// weight ω (default: the adapter.toml's). Repeat to compose: Σ ωₖ·Fcₖ.
    #[arg(long = "adapter")]
    pub adapters: Vec<String>,
    /// A `prep build` dataset (or one Parquet file): captions in `text`, conditions in
    /// their columns.
    #[arg(long)]
    pub input: PathBuf,
    /// The condition column: COLUMN for every adapter, or NAME=COLUMN for one (repeatable)
    /// [default: each adapter.toml's `condition`].
    #[arg(long = "condition")]
    pub conditions: Vec<String>,
    /// Denoising steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 runs the conditional branch only.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f32,
    /// Seed of the initial noise; row i uses seed + i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "ddim")]
    pub scheduler: SchedulerKind,
    /// Apply the adapters only during the first fraction f of the steps (diffusers'
    /// adapter_conditioning_factor).
    #[arg(long, default_value_t = 1.0)]
    pub adapter_conditioning_factor: f32,
    /// Initial latents (.npy float32, [C,h,w], [1,C,h,w] for every row or [N,C,h,w] one per
    /// row) instead of seeded noise.
    #[arg(long)]
    pub init_noise: Option<PathBuf>,
    /// Inpainting: the mask (white = regenerate) from this dataset image column, or
    /// DIR/KEY.png when it names a directory; the source is the dataset's `image`. A
    /// 9-channel UNet gets its native inputs, a 4-channel one latent blending.
    #[arg(long)]
    pub mask: Option<String>,
    /// Output directory: images/, generated.parquet, generate.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Generate only the first N rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Image width without adapters [default: 512].
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height without adapters [default: 512].
    #[arg(long)]
    pub height: Option<usize>,
    /// Also write pixels/KEY.npy (float [3,H,W] in [0,1], before 8-bit rounding) and
    /// noise/KEY.npy (the initial latents).
    #[arg(long)]
    pub save_pixels: bool,
    /// ONNX Runtime intra-op threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

impl GenerateArgs {
    pub fn config(&self) -> Result<GenerateConfig> {
        Ok(GenerateConfig {
            pipeline: self.pipeline.clone(),
            adapters: self
                .adapters
                .iter()
                .map(|a| AdapterArg::parse(a))
                .collect::<Result<_>>()?,
            input: self.input.clone(),
            conditions: self.conditions.clone(),
            steps: self.steps,
            guidance: self.guidance,
            seed: self.seed,
            scheduler: self.scheduler,
            adapter_conditioning_factor: self.adapter_conditioning_factor,
            init_noise: self.init_noise.clone(),
            mask: self.mask.clone(),
            out: self.out.clone(),
            limit: self.limit,
            width: self.width,
            height: self.height,
            save_pixels: self.save_pixels,
            progress: !self.quiet,
            runtime: RuntimeOptions {
                threads: self.threads,
                device: self.device,
            },
        })
    }
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let s = super::run(&args.config()?)?;
    let per = |d: std::time::Duration| d.as_secs_f64() / s.images.max(1) as f64;
    eprintln!(
        "generated {} image(s) in {:.2}s ({:.3} images/s); per image: {:.3}s sampling, of which ONNX Runtime {:.3}s (unet {:.3}s, text {:.3}s, adapters {:.3}s, vae {:.3}s)",
        s.images,
        s.wall.as_secs_f64(),
        s.images as f64 / s.generate.as_secs_f64().max(1e-9),
        per(s.generate),
        per(s.ort.total()),
        per(s.ort.unet),
        per(s.ort.text),
        per(s.ort.adapter),
        per(s.ort.vae),
    );
    // Per denoising step: the UNet inside ONNX Runtime vs everything prep does outside it
    // (tokenize, scheduler math, guidance, copies, PNG/npy encoding, amortised per step).
    let steps = (s.images * s.steps_per_image).max(1) as f64;
    let unet_step = s.ort.unet.as_secs_f64() / steps;
    let outside = (s.generate.as_secs_f64() - s.ort.total().as_secs_f64()).max(0.0) / steps;
    let in_loop = s.ort.loop_overhead.as_secs_f64() / steps;
    eprintln!(
        "per step: unet (ONNX Runtime) {:.2} ms; outside ONNX Runtime {:.3} ms = {:.2}% of a step \
         (in the step loop {:.3} ms = {:.2}%, per-image work amortised {:.3} ms, of which PNG encoding {:.3} ms)",
        unet_step * 1e3,
        outside * 1e3,
        100.0 * outside / unet_step.max(1e-12),
        in_loop * 1e3,
        100.0 * in_loop / unet_step.max(1e-12),
        (outside - in_loop).max(0.0) * 1e3,
        s.png.as_secs_f64() / steps * 1e3,
    );
    if s.images > 0 {
        eprintln!(
            "unet I/O binding: {} input(s) bound once per image (text, adapter residuals), {} per step (sample, timestep)",
            s.binds.per_image as f64 / s.images as f64,
            s.binds.per_step as f64 / steps,
        );
    }
    for (name, calls) in &s.adapter_calls {
        eprintln!("adapter {name}: {calls} run(s)");
    }
    eprintln!("output: {}", s.out.display());
    Ok(())
}
