//! One Stable Diffusion pipeline directory (the contract in README "prep generate") opened
//! as ONNX Runtime sessions, and the sampling loop for one image.
//!
//! Per image: the prompt is encoded (the unconditional "" embedding is computed once per
//! pipeline and reused), every adapter runs **once** on its condition and the weighted sum
//! Σ ωₖ·Fcₖ is kept for all steps, then each step runs the UNet on one batch of 2
//! (unconditional, conditional) when guidance > 1 (diffusers' rule; otherwise a batch of 1,
//! conditional only), combines ε = ε_u + g·(ε_c − ε_u) and calls the scheduler. The VAE
//! decodes latents / scaling_factor; pixels are `clamp(x / 2 + 0.5, 0, 1)`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ndarray::ArrayD;

use super::scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
use crate::runtime::{Batch, ElemType, Net, RuntimeOptions};
use crate::tokenize::{ClipTokenizer, CONTEXT_LEN};

/// Time spent inside ONNX Runtime, by model (for `prep bench generate`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OrtTime {
    pub text: Duration,
    pub adapter: Duration,
    pub unet: Duration,
    pub vae: Duration,
    /// Not ONNX Runtime: the denoising loop's own work (copies, guidance, scheduler),
    /// i.e. the loop's wall time minus the UNet calls.
    pub loop_overhead: Duration,
}

impl OrtTime {
    /// Time inside ONNX Runtime.
    pub fn total(&self) -> Duration {
        self.text + self.adapter + self.unet + self.vae
    }
}

/// Inputs bound to the UNet's I/O binding (for `prep generate`'s summary): the text
/// embeddings and adapter residuals once per image, the sample and timestep per step.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindCount {
    pub per_image: usize,
    pub per_step: usize,
}

/// An adapter directory: `model.onnx` + `adapter.toml`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AdapterMeta {
    /// The dataset column (condition) it was trained on.
    pub condition: String,
    /// 3 (RGB) or 1 (grey, PIL's "L" conversion).
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Default ω when `--adapter NAME=DIR` gives none.
    #[serde(default = "one")]
    pub weight: f32,
}

fn three() -> usize {
    3
}
fn one() -> f32 {
    1.0
}

/// A loaded adapter with its weight ω.
pub struct Adapter {
    pub name: String,
    pub dir: PathBuf,
    pub meta: AdapterMeta,
    pub weight: f32,
    /// The dataset column its condition comes from.
    pub column: String,
    net: Net,
    outputs: Vec<usize>,
    /// How many times the network ran (the tests check: once per image).
    pub calls: usize,
}

impl Adapter {
    pub fn open(
        name: &str,
        dir: &Path,
        weight: Option<f32>,
        opts: &RuntimeOptions,
    ) -> Result<Adapter> {
        let toml_path = dir.join("adapter.toml");
        let text = std::fs::read_to_string(&toml_path).with_context(|| {
            format!(
                "--adapter {name}={}: cannot read {}; an adapter directory holds model.onnx and adapter.toml (condition, in_channels, weight)",
                dir.display(),
                toml_path.display()
            )
        })?;
        let meta: AdapterMeta = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid adapter.toml", toml_path.display()))?;
        if meta.in_channels != 1 && meta.in_channels != 3 {
            bail!(
                "{}: in_channels = {} (must be 1 or 3)",
                toml_path.display(),
                meta.in_channels
            );
        }
        let model = dir.join("model.onnx");
        if !model.is_file() {
            bail!(
                "--adapter {name}={}: {} does not exist",
                dir.display(),
                model.display()
            );
        }
        let net = Net::open(&format!("adapter {name}"), &model, opts)?;
        net.input(Some("condition"))?;
        let outputs = (0..4)
            .map(|k| net.output_index(Some(&format!("features_{k}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Adapter {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            weight: weight.unwrap_or(meta.weight),
            column: meta.condition.clone(),
            meta,
            net,
            outputs,
            calls: 0,
        })
    }

    /// Features Fc¹..Fc⁴ of a condition `[1, in_channels, H, W]` in [0, 1].
    pub fn features(&mut self, cond: &[f32], h: usize, w: usize) -> Result<Vec<ArrayD<f32>>> {
        self.calls += 1;
        let shape = [1, self.meta.in_channels, h, w];
        self.net
            .run_many(&[("condition", &shape, Batch::F32(cond))], &self.outputs)
    }
}

/// A condition image as the adapter input: `[C, H, W]` floats in [0, 1].
pub struct Condition {
    pub data: Vec<f32>,
    pub width: usize,
    pub height: usize,
}

impl Condition {
    /// Decode an encoded image (PNG/JPEG/…) as diffusers' `_preprocess_adapter_image` does
    /// with PIL: `convert("L")` for 1-channel adapters (ITU-R 601-2 luma, PIL's integer
    /// rounding), `convert("RGB")` otherwise, then `/ 255`.
    pub fn decode(bytes: &[u8], channels: usize) -> Result<Condition> {
        let img = image::load_from_memory(bytes).context("cannot decode the condition image")?;
        let rgb = img.into_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let px = rgb.as_raw();
        let mut data = vec![0f32; channels * h * w];
        for i in 0..h * w {
            let (r, g, b) = (px[3 * i] as u32, px[3 * i + 1] as u32, px[3 * i + 2] as u32);
            if channels == 1 {
                let l = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
                data[i] = l as f32 / 255.0;
            } else {
                data[i] = r as f32 / 255.0;
                data[h * w + i] = g as f32 / 255.0;
                data[2 * h * w + i] = b as f32 / 255.0;
            }
        }
        Ok(Condition {
            data,
            width: w,
            height: h,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimestepLayout {
    Scalar,
    One,
    Batch,
}

/// The pipeline's models and settings, opened once and reused for every image.
pub struct Pipeline {
    pub dir: PathBuf,
    tokenizer: ClipTokenizer,
    text: Net,
    text_i32: bool,
    text_out: usize,
    unet: Net,
    unet_out: usize,
    unet_in_channels: usize,
    pub latent_channels: usize,
    timestep_f32: bool,
    timestep_layout: TimestepLayout,
    /// Channels of `adapter_res_0..3` (None: the UNet has no adapter inputs).
    res_channels: Option<[usize; 4]>,
    vae: Net,
    vae_in: String,
    /// `vae_encoder/model.onnx`, opened on first use (inpainting).
    vae_enc: Option<Net>,
    opts: RuntimeOptions,
    pub scheduler_config: SchedulerConfig,
    pub scaling_factor: f32,
    /// Image pixels per latent pixel (8 for SD).
    pub vae_scale: usize,
    uncond: Option<Vec<f32>>,
    pub ort: OrtTime,
    pub binds: BindCount,
}

/// Sampling settings of a run.
#[derive(Debug, Clone, Copy)]
pub struct SampleParams {
    pub scheduler: SchedulerKind,
    pub steps: usize,
    pub guidance: f32,
    pub adapter_conditioning_factor: f32,
}

/// An inpainting request: the source image and where to regenerate.
pub struct Inpaint {
    /// `[3, H, W]` in [−1, 1] (`x / 127.5 − 1`).
    pub image: Vec<f32>,
    /// `[H, W]`, binarised as diffusers does (`≥ 0.5` → 1 = regenerate, else 0 = keep).
    pub mask: Vec<f32>,
    pub width: usize,
    pub height: usize,
}

impl Inpaint {
    /// From encoded source image and mask (grey via PIL's `convert("L")`, / 255).
    pub fn decode(image: &[u8], mask: &[u8]) -> Result<Inpaint> {
        let img = Condition::decode(image, 3).context("cannot decode the source image")?;
        let m = Condition::decode(mask, 1).context("cannot decode the mask")?;
        if (img.width, img.height) != (m.width, m.height) {
            bail!(
                "the mask is {}x{}, the image {}x{}",
                m.width,
                m.height,
                img.width,
                img.height
            );
        }
        Ok(Inpaint {
            image: img.data.iter().map(|&x| x * 2.0 - 1.0).collect(),
            mask: m
                .data
                .iter()
                .map(|&x| if x >= 0.5 { 1.0 } else { 0.0 })
                .collect(),
            width: m.width,
            height: m.height,
        })
    }
}

/// A generated image: `[3, H, W]` floats in [0, 1].
pub struct Generated {
    pub pixels: Vec<f32>,
    pub width: usize,
    pub height: usize,
}

impl Generated {
    /// 8-bit RGB PNG (round to nearest, as `(x * 255).round()`).
    pub fn png(&self) -> Result<Vec<u8>> {
        let (w, h) = (self.width, self.height);
        let mut rgb = vec![0u8; 3 * w * h];
        for i in 0..w * h {
            for c in 0..3 {
                rgb[3 * i + c] = (self.pixels[c * w * h + i] * 255.0)
                    .round()
                    .clamp(0.0, 255.0) as u8;
            }
        }
        let img = image::RgbImage::from_raw(w as u32, h as u32, rgb).context("image size")?;
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .context("cannot encode PNG")?;
        Ok(out)
    }
}

fn dim(p: &crate::runtime::PortInfo, i: usize) -> Option<usize> {
    p.shape
        .get(i)
        .copied()
        .filter(|&d| d > 0)
        .map(|d| d as usize)
}

impl Pipeline {
    pub fn open(dir: &Path, opts: &RuntimeOptions) -> Result<Pipeline> {
        if !dir.is_dir() {
            bail!(
                "--pipeline {}: not a directory; it must hold text_encoder/, unet/, vae_decoder/, tokenizer/, scheduler/ (README \"prep generate\")",
                dir.display()
            );
        }
        let model = |sub: &str| -> Result<PathBuf> {
            let p = dir.join(sub).join("model.onnx");
            if !p.is_file() {
                bail!(
                    "--pipeline {}: {} is missing (the layout optimum exports: {sub}/model.onnx)",
                    dir.display(),
                    p.display()
                );
            }
            Ok(p)
        };
        let tokenizer = ClipTokenizer::from_dir(&dir.join("tokenizer"))?;
        let scheduler_config =
            SchedulerConfig::from_file(&dir.join("scheduler").join("scheduler_config.json"))?;

        let text = Net::open("text_encoder", &model("text_encoder")?, opts)?;
        let ti = text.input(None)?;
        let text_i32 = match ti.elem {
            ElemType::I32 => true,
            ElemType::I64 => false,
            _ => bail!(
                "text_encoder: input {:?} must be int32 or int64 token ids",
                ti.name
            ),
        };
        let text_out = text
            .output_index(Some("last_hidden_state"))
            .or_else(|_| text.output_index(None).map(|_| 0))?;

        let unet = Net::open("unet", &model("unet")?, opts)?;
        let sample = unet.input(Some("sample"))?.clone();
        let ts = unet.input(Some("timestep"))?.clone();
        unet.input(Some("encoder_hidden_states"))?;
        let unet_in_channels = dim(&sample, 1).unwrap_or(4);
        let timestep_f32 = match ts.elem {
            ElemType::F32 | ElemType::F16 => true,
            ElemType::I64 => false,
            _ => bail!("unet: input \"timestep\" must be float32, float16 or int64"),
        };
        let timestep_layout = match ts.shape.as_slice() {
            [] => TimestepLayout::Scalar,
            [1] => TimestepLayout::One,
            _ => TimestepLayout::Batch,
        };
        let res_channels = if unet.inputs.iter().any(|p| p.name == "adapter_res_0") {
            let mut c = [0usize; 4];
            for (k, ck) in c.iter_mut().enumerate() {
                let p = unet.input(Some(&format!("adapter_res_{k}")))?;
                *ck = dim(p, 1).with_context(|| {
                    format!(
                        "unet: input adapter_res_{k} must declare a fixed channel count (dimension 1); it is {:?}",
                        p.shape
                    )
                })?;
            }
            Some(c)
        } else {
            None
        };
        let unet_out = unet
            .output_index(Some("out_sample"))
            .or_else(|_| unet.output_index(None).map(|_| 0))?;

        let vae = Net::open("vae_decoder", &model("vae_decoder")?, opts)?;
        let vae_in = vae.input(None)?.name.clone();
        let latent_channels = dim(vae.input(None)?, 1).unwrap_or(4);
        let (mut scaling_factor, mut vae_scale) = (0.18215f32, 8usize);
        let cfg_path = dir.join("vae_decoder").join("config.json");
        if cfg_path.is_file() {
            let v: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&cfg_path)
                    .with_context(|| format!("cannot read {}", cfg_path.display()))?,
            )
            .with_context(|| format!("{} is not JSON", cfg_path.display()))?;
            if let Some(s) = v.get("scaling_factor").and_then(|s| s.as_f64()) {
                scaling_factor = s as f32;
            }
            if let Some(b) = v.get("block_out_channels").and_then(|b| b.as_array()) {
                vae_scale = 1 << b.len().saturating_sub(1);
            }
        }
        Ok(Pipeline {
            dir: dir.to_path_buf(),
            tokenizer,
            text,
            text_i32,
            text_out,
            unet,
            unet_out,
            unet_in_channels,
            latent_channels,
            timestep_f32,
            timestep_layout,
            res_channels,
            vae,
            vae_in,
            vae_enc: None,
            opts: *opts,
            scheduler_config,
            scaling_factor,
            vae_scale,
            uncond: None,
            ort: OrtTime::default(),
            binds: BindCount::default(),
        })
    }

    pub fn has_adapter_inputs(&self) -> bool {
        self.res_channels.is_some()
    }

    /// `last_hidden_state` of one prompt: `[77, D]` flattened.
    pub fn encode_prompt(&mut self, prompt: &str) -> Result<Vec<f32>> {
        let ids = self.tokenizer.encode(prompt)?;
        let shape = [1, CONTEXT_LEN];
        let t0 = Instant::now();
        let out = if self.text_i32 {
            let v: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
            self.text.run_many(
                &[(&self.text.inputs[0].name.clone(), &shape, Batch::I32(&v))],
                &[self.text_out],
            )?
        } else {
            self.text.run_many(
                &[(&self.text.inputs[0].name.clone(), &shape, Batch::I64(&ids))],
                &[self.text_out],
            )?
        };
        self.ort.text += t0.elapsed();
        let a = &out[0];
        if a.ndim() != 3 || a.shape()[1] != CONTEXT_LEN {
            bail!(
                "text_encoder: last_hidden_state has shape {:?}, expected [1, 77, D]",
                a.shape()
            );
        }
        Ok(a.iter().copied().collect())
    }

    /// `vae_encoder(x).mean · scaling_factor` for `x` `[3, H, W]` in [−1, 1]. The output is
    /// `latent_sample` (C channels) or `latent_parameters` (2C: mean, then log-variance).
    fn encode_image(&mut self, x: &[f32], height: usize, width: usize) -> Result<Vec<f32>> {
        if self.vae_enc.is_none() {
            let p = self.dir.join("vae_encoder").join("model.onnx");
            if !p.is_file() {
                bail!(
                    "--mask needs the pipeline's vae_encoder: {} is missing",
                    p.display()
                );
            }
            self.vae_enc = Some(Net::open("vae_encoder", &p, &self.opts)?);
        }
        let enc = self.vae_enc.as_mut().context("vae_encoder")?;
        let name = enc.input(None)?.name.clone();
        let t0 = Instant::now();
        let out = enc.run_many(&[(&name, &[1, 3, height, width], Batch::F32(x))], &[0])?;
        self.ort.vae += t0.elapsed();
        let o = &out[0];
        let (lc, lh, lw) = (
            self.latent_channels,
            height / self.vae_scale,
            width / self.vae_scale,
        );
        let n = lc * lh * lw;
        let v = o
            .as_slice()
            .context("vae_encoder: output is not contiguous")?;
        if o.ndim() != 4
            || o.shape()[2] != lh
            || o.shape()[3] != lw
            || (v.len() != n && v.len() != 2 * n)
        {
            bail!(
                "vae_encoder: output shape {:?}, expected [1, {lc} or {}, {lh}, {lw}]",
                o.shape(),
                2 * lc
            );
        }
        Ok(v[..n].iter().map(|&x| x * self.scaling_factor).collect())
    }

    /// Generate one image. `conditions[k]` is adapter k's input; `noise` the initial latents
    /// `[1, C, H/8, W/8]` (flattened).
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &mut self,
        prompt: &str,
        adapters: &mut [Adapter],
        conditions: &[Condition],
        noise: &[f32],
        height: usize,
        width: usize,
        params: &SampleParams,
        inpaint: Option<&Inpaint>,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<Generated> {
        let (lh, lw) = (height / self.vae_scale, width / self.vae_scale);
        let lc = self.latent_channels;
        let n = lc * lh * lw;
        if noise.len() != n {
            bail!(
                "initial noise has {} values; a {width}x{height} image needs [1, {lc}, {lh}, {lw}] = {n}",
                noise.len()
            );
        }
        let native = self.unet_in_channels == 2 * lc + 1;
        if self.unet_in_channels != lc && !native {
            bail!(
                "unet: its sample input has {} channels; expected {lc} (text-to-image) or {} (inpainting)",
                self.unet_in_channels,
                2 * lc + 1
            );
        }
        if native && inpaint.is_none() {
            bail!(
                "unet: a {}-channel inpainting UNet needs --mask (and the dataset's source image)",
                self.unet_in_channels
            );
        }
        // Inpainting inputs: the mask at latent size (nearest: every vae_scale-th pixel, as
        // torch's interpolate), the source latents (latent blending) or the masked-image
        // latents (9-channel UNet).
        let mut mask_lat = Vec::new();
        let mut known = Vec::new();
        if let Some(ip) = inpaint {
            if ip.image.len() != 3 * height * width || ip.mask.len() != height * width {
                bail!("--mask: the source image and mask must be {width}x{height}");
            }
            let s = self.vae_scale;
            mask_lat = (0..lh * lw)
                .map(|i| ip.mask[(i / lw) * s * width + (i % lw) * s])
                .collect();
            known = if native {
                let hw = height * width;
                let masked: Vec<f32> = ip
                    .image
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| if ip.mask[i % hw] < 0.5 { x } else { 0.0 })
                    .collect();
                self.encode_image(&masked, height, width)?
            } else {
                self.encode_image(&ip.image, height, width)?
            };
        }
        let cfg = params.guidance > 1.0;
        let b = if cfg { 2 } else { 1 };

        // Text: [b, 77, D] = (uncond, cond) or (cond).
        let cond_emb = self.encode_prompt(prompt)?;
        let mut emb = Vec::with_capacity(b * cond_emb.len());
        if cfg {
            if self.uncond.is_none() {
                self.uncond = Some(self.encode_prompt("")?);
            }
            emb.extend_from_slice(self.uncond.as_deref().unwrap_or_default());
        }
        emb.extend_from_slice(&cond_emb);
        let d = cond_emb.len() / CONTEXT_LEN;

        // Adapters: once per image, Σ ωₖ·Fcₖ, repeated over the batch.
        let mut residuals: Option<Vec<Vec<f32>>> = None;
        let mut res_shapes: Vec<[usize; 4]> = Vec::new();
        if let Some(ch) = self.res_channels {
            for (k, &c) in ch.iter().enumerate() {
                res_shapes.push([b, c, lh >> k, lw >> k]);
            }
        }
        let active: Vec<usize> = (0..adapters.len())
            .filter(|&i| adapters[i].weight != 0.0)
            .collect();
        if !adapters.is_empty() && self.res_channels.is_none() {
            bail!(
                "unet ({}) has no adapter_res_0..3 inputs, so adapters cannot be applied; export the UNet with the adapter inputs (README \"prep generate\")",
                self.unet.path.display()
            );
        }
        if !active.is_empty() {
            let mut acc: Vec<Vec<f32>> = res_shapes
                .iter()
                .map(|s| vec![0f32; s[1] * s[2] * s[3]])
                .collect();
            for &i in &active {
                let a = &mut adapters[i];
                let c = &conditions[i];
                let t0 = Instant::now();
                let feats = a.features(&c.data, c.height, c.width)?;
                self.ort.adapter += t0.elapsed();
                for (k, f) in feats.iter().enumerate() {
                    let want = &res_shapes[k][1..];
                    if f.shape() != [1, want[0], want[1], want[2]] {
                        bail!(
                            "adapter {}: features_{k} has shape {:?}; the UNet's adapter_res_{k} for a {width}x{height} image is [1, {}, {}, {}]",
                            a.name,
                            f.shape(),
                            want[0],
                            want[1],
                            want[2]
                        );
                    }
                    let w = a.weight;
                    let f = f
                        .as_slice()
                        .context("adapter: features are not contiguous")?;
                    for (o, &v) in acc[k].iter_mut().zip(f) {
                        *o += w * v;
                    }
                }
            }
            residuals = Some(
                acc.into_iter()
                    .map(|v| {
                        let mut r = Vec::with_capacity(b * v.len());
                        for _ in 0..b {
                            r.extend_from_slice(&v);
                        }
                        r
                    })
                    .collect(),
            );
        }
        let zeros: Vec<Vec<f32>> = res_shapes
            .iter()
            .map(|s| vec![0f32; s.iter().product()])
            .collect();

        let mut sched = Scheduler::new(params.scheduler, &self.scheduler_config, params.steps)?;
        let timesteps = sched.timesteps().to_vec();
        let init_sigma = sched.init_noise_sigma();
        let mut latents: Vec<f32> = noise.iter().map(|&x| x * init_sigma).collect();
        let n_apply = (timesteps.len() as f64 * params.adapter_conditioning_factor as f64) as usize;
        let uc = self.unet_in_channels;
        let un = uc * lh * lw;
        let sample_shape = [b, uc, lh, lw];
        let emb_shape = [b, CONTEXT_LEN, d];
        let mut input = vec![0f32; b * un];
        if native {
            // [latents | mask | masked-image latents] per batch element; only the first part
            // changes between steps.
            let m = lh * lw;
            for j in 0..b {
                input[j * un + n..j * un + n + m].copy_from_slice(&mask_lat);
                input[j * un + n + m..(j + 1) * un].copy_from_slice(&known);
            }
        }
        let mut noised = vec![0f32; n];
        let mut guided = vec![0f32; n];
        let ts_shape: Vec<usize> = match self.timestep_layout {
            TimestepLayout::Scalar => vec![],
            TimestepLayout::One => vec![1],
            TimestepLayout::Batch => vec![b],
        };
        let ts_len = ts_shape.iter().product::<usize>();
        // I/O binding: the text embeddings and the adapter residuals do not change between
        // steps, so they are bound once (on a GPU: copied to the device once); only the
        // sample and the timestep are bound per step, and the output buffer is reused.
        const NAMES: [&str; 4] = [
            "adapter_res_0",
            "adapter_res_1",
            "adapter_res_2",
            "adapter_res_3",
        ];
        let mut bind = self.unet.binding(&[self.unet_out])?;
        self.unet.bind(
            &mut bind,
            "encoder_hidden_states",
            &emb_shape,
            Batch::F32(&emb),
        )?;
        let mut bound_res: Option<bool> = None; // Some(true): the adapters' residuals
        let mut step_binds = 0;
        let loop_start = Instant::now();
        let unet_before = self.ort.unet;
        for (i, &t) in timesteps.iter().enumerate() {
            let with_adapters = residuals.is_some() && i < n_apply;
            if bound_res != Some(with_adapters) {
                let res = match &residuals {
                    Some(r) if with_adapters => r,
                    _ => &zeros,
                };
                for ((name, shape), r) in NAMES.iter().zip(&res_shapes).zip(res) {
                    self.unet.bind(&mut bind, name, shape, Batch::F32(r))?;
                }
                bound_res = Some(with_adapters);
            }
            let before = bind.bound;
            for j in 0..b {
                input[j * un..j * un + n].copy_from_slice(&latents);
            }
            self.unet
                .bind(&mut bind, "sample", &sample_shape, Batch::F32(&input))?;
            let tf = vec![t as f32; ts_len];
            let ti = vec![t; ts_len];
            let ts_batch = if self.timestep_f32 {
                Batch::F32(&tf)
            } else {
                Batch::I64(&ti)
            };
            self.unet.bind(&mut bind, "timestep", &ts_shape, ts_batch)?;
            step_binds += bind.bound - before;
            let t0 = Instant::now();
            let out = self.unet.run_bound(&bind)?;
            self.ort.unet += t0.elapsed();
            let out = out[0]
                .as_slice()
                .context("unet: output is not contiguous")?;
            if out.len() != b * n {
                bail!(
                    "unet: out_sample has {} values, expected {b}x{lc}x{lh}x{lw}",
                    out.len()
                );
            }
            if cfg {
                let g = params.guidance;
                for ((o, &u), &c) in guided.iter_mut().zip(&out[..n]).zip(&out[n..]) {
                    *o = u + g * (c - u);
                }
                sched.step(&guided, &mut latents)?;
            } else {
                sched.step(out, &mut latents)?;
            }
            if inpaint.is_some() && !native {
                // Latent blending (diffusers' 4-channel inpainting): the known region is the
                // source latents noised to the next timestep (clean after the last step).
                let hw = lh * lw;
                if let Some(&next) = timesteps.get(i + 1) {
                    sched.add_noise(&known, noise, next, &mut noised);
                } else {
                    noised.copy_from_slice(&known);
                }
                for (k, l) in latents.iter_mut().enumerate() {
                    let m = mask_lat[k % hw];
                    *l = (1.0 - m) * noised[k] + m * *l;
                }
            }
            on_step(i + 1);
        }
        self.ort.loop_overhead += loop_start
            .elapsed()
            .saturating_sub(self.ort.unet - unet_before);

        self.binds.per_step += step_binds;
        self.binds.per_image += bind.bound - step_binds;
        let inv = 1.0 / self.scaling_factor;
        let scaled: Vec<f32> = latents.iter().map(|&x| x * inv).collect();
        let t0 = Instant::now();
        let img = self.vae.run_many(
            &[(&self.vae_in.clone(), &[1, lc, lh, lw], Batch::F32(&scaled))],
            &[0],
        )?;
        self.ort.vae += t0.elapsed();
        let img = &img[0];
        if img.shape() != [1, 3, height, width] {
            bail!(
                "vae_decoder: output shape {:?}, expected [1, 3, {height}, {width}]",
                img.shape()
            );
        }
        let pixels = img
            .as_slice()
            .context("vae_decoder: output is not contiguous")?
            .iter()
            .map(|&x| (x / 2.0 + 0.5).clamp(0.0, 1.0))
            .collect();
        Ok(Generated {
            pixels,
            width,
            height,
        })
    }
}
