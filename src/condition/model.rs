//! Model-backed conditions (`hed`, `sketch`, `depth`, `keypose` from a pose model): the
//! manifest's I/O contract applied to the preprocessed image ([`prepare`]), batched
//! inference through [`crate::runtime::Net`] ([`ModelSet::infer`]) and the decoders that
//! turn a model output into a condition map ([`ModelSet::finish`]).
//!
//! The pipeline calls these in three stages so that inference overlaps decode/encode:
//! `prepare` runs in the CPU stage with the decode, `infer` on a dedicated thread that
//! only runs the network, `finish` (decode the output, encode the PNG) on the CPU pool.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use image::{GrayImage, RgbImage};
use ndarray::{ArrayD, IxDyn};

use super::dwpose::{simcc_keypoints, yolox_persons, PoseCrop, YoloxParams};
use super::fill::{self, Norm};
use super::{draw_keypose, ConditionKind, KeyposeStyle};
use crate::cvops::linear::resize_linear_u8;
use crate::cvops::resize::resize_cubic_u8;
use crate::error::RowFailure;
use crate::models::{
    Align, ChannelOrder, DType, DecoderKind, Fit, InputSpec, Layout, ModelEntry, Resample,
    Rounding, SizePolicy,
};
use crate::record::Person;
use crate::runtime::{Batch, ElemType, Net, RuntimeOptions};

/// Where the image sits in the model input: `content` is the resized image placed at
/// `off` inside the `input`-sized canvas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub orig: (u32, u32),
    pub input: (u32, u32),
    pub content: (u32, u32),
    pub off: (u32, u32),
}

impl Placement {
    pub fn new(size: &SizePolicy, w: u32, h: u32) -> Placement {
        let (input, content, off) = match *size {
            SizePolicy::Any => ((w, h), (w, h), (0, 0)),
            SizePolicy::Fixed { width, height } => ((width, height), (width, height), (0, 0)),
            // Feature models only (refused for conditions by the manifest check); their
            // input is `size × size`, prepared by `eval::preprocess`.
            SizePolicy::ShortSide { size } => ((size, size), (size, size), (0, 0)),
            SizePolicy::Multiple { multiple: m, fit } => match fit {
                Fit::Pad => ((w.div_ceil(m) * m, h.div_ceil(m) * m), (w, h), (0, 0)),
                Fit::Resize => {
                    let r = |v: u32| ((v + m / 2) / m * m).max(m);
                    ((r(w), r(h)), (r(w), r(h)), (0, 0))
                }
            },
            SizePolicy::Letterbox {
                width,
                height,
                align,
                rounding,
            } => {
                let s = (width as f64 / w as f64).min(height as f64 / h as f64);
                let r = |v: f64| match rounding {
                    Rounding::Round => v.round(),
                    Rounding::Floor => v.floor(),
                };
                let cw = (r(w as f64 * s) as u32).clamp(1, width);
                let ch = (r(h as f64 * s) as u32).clamp(1, height);
                let off = match align {
                    Align::Center => ((width - cw) / 2, (height - ch) / 2),
                    Align::TopLeft => (0, 0),
                };
                ((width, height), (cw, ch), off)
            }
        };
        Placement {
            orig: (w, h),
            input,
            content,
            off,
        }
    }

    /// The letterbox scale `min(input_w / w, input_h / h)` (YOLOX's `ratio`).
    pub fn ratio(&self) -> f64 {
        (self.input.0 as f64 / self.orig.0 as f64).min(self.input.1 as f64 / self.orig.1 as f64)
    }

    /// A point in model-input pixels → preprocessed-image pixels.
    pub fn to_image(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.off.0 as f32) * (self.orig.0 as f32 / self.content.0 as f32),
            (y - self.off.1 as f32) * (self.orig.1 as f32 / self.content.1 as f32),
        )
    }
}

/// One image's model input.
pub struct ModelInput {
    pub data: InputData,
    /// Shape without the batch dimension, in the model's layout.
    pub dims: [usize; 3],
    pub place: Placement,
}

pub enum InputData {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

/// Apply an input contract to an RGB image.
pub fn prepare(spec: &InputSpec, rgb: &RgbImage) -> ModelInput {
    prepare_into(spec, rgb, Vec::new())
}

/// [`prepare`] into a recycled float buffer (its contents are overwritten).
pub fn prepare_into(spec: &InputSpec, rgb: &RgbImage, buf: Vec<f32>) -> ModelInput {
    let (w, h) = rgb.dimensions();
    let place = Placement::new(&spec.size, w, h);
    let resized;
    let content: &[u8] = if place.content == (w, h) {
        rgb.as_raw()
    } else {
        // Condition models use the cv2 filters (the manifest check refuses the others).
        let resize = match spec.resample {
            Resample::CvLinear => resize_linear_u8,
            _ => resize_cubic_u8,
        };
        resized = resize(
            rgb.as_raw(),
            w as usize,
            h as usize,
            3,
            place.content.0 as usize,
            place.content.1 as usize,
        );
        &resized
    };
    let (iw, ih) = (place.input.0 as usize, place.input.1 as usize);
    let (cw, ch) = (place.content.0 as usize, place.content.1 as usize);
    let (ox, oy) = (place.off.0 as usize, place.off.1 as usize);
    let order: [usize; 3] = match spec.channels {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    let dims = match spec.layout {
        Layout::Nchw => [3, ih, iw],
        Layout::Nhwc => [ih, iw, 3],
    };
    let index = |c: usize, y: usize, x: usize| match spec.layout {
        Layout::Nchw => (c * ih + y) * iw + x,
        Layout::Nhwc => (y * iw + x) * 3 + c,
    };
    let pixel = |x: usize, y: usize, src_c: usize| -> Option<u8> {
        if x >= ox && x < ox + cw && y >= oy && y < oy + ch {
            Some(content[((y - oy) * cw + (x - ox)) * 3 + src_c])
        } else {
            None
        }
    };
    let data = match spec.dtype {
        DType::F32 => {
            // Every path evaluates the same expression per value (see `fill`), so the
            // results are bit-identical; the padding's value is that of `pad_value`.
            let norm = Norm::new(spec.divide, spec.mean, spec.std);
            let lut = &norm.lut;
            let pad: [f32; 3] = std::array::from_fn(|c| {
                Norm::value(spec.divide, spec.mean[c], spec.std[c], spec.pad_value)
            });
            // Every element is written below: a recycled buffer of the right length is
            // not cleared first.
            let mut v = buf;
            v.truncate(iw * ih * 3);
            v.resize(iw * ih * 3, 0.0);
            match spec.layout {
                Layout::Nchw => {
                    let (p0, rest) = v.split_at_mut(ih * iw);
                    let (p1, p2) = rest.split_at_mut(ih * iw);
                    let canvas = fill::Canvas {
                        size: (iw, ih),
                        content: (cw, ch),
                        off: (ox, oy),
                        pad,
                    };
                    fill::planes(content, &canvas, order, &norm, [p0, p1, p2]);
                }
                Layout::Nhwc => {
                    for y in 0..ih {
                        for x in 0..iw {
                            for (c, &sc) in order.iter().enumerate() {
                                v[index(c, y, x)] =
                                    pixel(x, y, sc).map_or(pad[c], |p| lut[c][p as usize]);
                            }
                        }
                    }
                }
            }
            InputData::F32(v)
        }
        DType::I32 => {
            let mut v = vec![0i32; iw * ih * 3];
            for y in 0..ih {
                for x in 0..iw {
                    for (c, &sc) in order.iter().enumerate() {
                        v[index(c, y, x)] =
                            pixel(x, y, sc).map_or(spec.pad_value as i32, i32::from);
                    }
                }
            }
            InputData::I32(v)
        }
    };
    ModelInput { data, dims, place }
}

/// Squeeze a per-image output to an H×W map.
fn squeeze_map<'a>(
    out: ndarray::ArrayViewD<'a, f32>,
    model: &str,
) -> Result<(usize, usize, Cow<'a, [f32]>), RowFailure> {
    let dims: Vec<usize> = out.shape().iter().copied().filter(|&d| d != 1).collect();
    if dims.len() != 2 {
        return Err(RowFailure::new(
            "model_output",
            format!(
                "model {model}: expected a one-channel map ([1,H,W], [1,1,H,W] or [1,H,W,1]), got shape {:?}",
                out.shape()
            ),
        ));
    }
    let v = match out.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(out.iter().copied().collect()),
    };
    Ok((dims[0], dims[1], v))
}

/// The depth condition's 8-bit map, made on the inference thread straight from ONNX
/// Runtime's output (no copy; the output is still in cache) when the map is already at
/// image size after the padding is cut away; `None` when it needs the bicubic resize,
/// which stays on the CPU pool with the copied output.
fn depth_map_early(
    out: ndarray::ArrayViewD<'_, f32>,
    p: &Placement,
    model: &str,
) -> Option<Result<Vec<u8>, RowFailure>> {
    let map = match squeeze_map(out, model) {
        Ok(m) => m,
        Err(e) => return Some(Err(e)),
    };
    if map_size_after_crop(map.1, map.0, p) != (p.orig.0 as usize, p.orig.1 as usize) {
        return None;
    }
    let (_, _, v) = to_image_map(map, p, true);
    Some(Ok(depth_u8(&v)))
}

/// A W×H model map's size once the padding of `p` is cut away (the content area when the
/// map is at input size).
fn map_size_after_crop(mw: usize, mh: usize, p: &Placement) -> (usize, usize) {
    if (mw, mh) == (p.input.0 as usize, p.input.1 as usize) && p.content != p.input {
        (p.content.0 as usize, p.content.1 as usize)
    } else {
        (mw, mh)
    }
}

/// cv2.resize on one float channel (`INTER_LINEAR` or `INTER_CUBIC`, half-pixel centres,
/// replicated border, no antialias).
pub fn resize_f32(src: &[f32], w: usize, h: usize, dw: usize, dh: usize, cubic: bool) -> Vec<f32> {
    fn taps(n_src: usize, n_dst: usize, cubic: bool) -> Vec<([usize; 4], [f32; 4])> {
        let scale = n_src as f64 / n_dst as f64;
        (0..n_dst)
            .map(|d| {
                let f = (d as f64 + 0.5) * scale - 0.5;
                let s = f.floor();
                let t = (f - s) as f32;
                let s = s as i64;
                let clamp = |i: i64| i.clamp(0, n_src as i64 - 1) as usize;
                if cubic {
                    const A: f32 = -0.75;
                    let w0 =
                        ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
                    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
                    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
                    let w3 = 1.0 - w0 - w1 - w2;
                    (
                        [clamp(s - 1), clamp(s), clamp(s + 1), clamp(s + 2)],
                        [w0, w1, w2, w3],
                    )
                } else {
                    let (s, t) = if s < 0 {
                        (0, 0.0)
                    } else if s >= n_src as i64 - 1 {
                        (n_src as i64 - 1, 0.0)
                    } else {
                        (s, t)
                    };
                    ([clamp(s), clamp(s + 1), 0, 0], [1.0 - t, t, 0.0, 0.0])
                }
            })
            .collect()
    }
    let tx = taps(w, dw, cubic);
    let ty = taps(h, dh, cubic);
    let mut rows = vec![0f32; h * dw];
    for y in 0..h {
        let r = &src[y * w..(y + 1) * w];
        for (x, (ix, wx)) in tx.iter().enumerate() {
            rows[y * dw + x] = (0..4).map(|k| r[ix[k]] * wx[k]).sum();
        }
    }
    let mut out = vec![0f32; dw * dh];
    for (y, (iy, wy)) in ty.iter().enumerate() {
        for x in 0..dw {
            out[y * dw + x] = (0..4).map(|k| rows[iy[k] * dw + x] * wy[k]).sum();
        }
    }
    out
}

/// The map back in image geometry: padding cropped, resized to the image size (borrowed
/// as it is when it already is the image's).
fn to_image_map<'a>(
    map: (usize, usize, Cow<'a, [f32]>),
    p: &Placement,
    cubic: bool,
) -> (usize, usize, Cow<'a, [f32]>) {
    let (mh, mw, mut v) = map;
    let (mut w, mut h) = (mw, mh);
    let (cw, ch) = map_size_after_crop(mw, mh, p);
    if (cw, ch) != (mw, mh) {
        let (ox, oy) = (p.off.0 as usize, p.off.1 as usize);
        let mut c = Vec::with_capacity(cw * ch);
        for y in oy..oy + ch {
            c.extend_from_slice(&v[y * mw + ox..y * mw + ox + cw]);
        }
        v = Cow::Owned(c);
        (w, h) = (cw, ch);
    }
    let (ow, oh) = (p.orig.0 as usize, p.orig.1 as usize);
    if (w, h) != (ow, oh) {
        v = Cow::Owned(resize_f32(&v, w, h, ow, oh, cubic));
    }
    (ow, oh, v)
}

/// HED/softedge: round(clip(p, 0, 1) · 255).
pub fn soft_edges(v: &[f32]) -> Vec<u8> {
    v.iter()
        .map(|&p| (p.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8)
        .collect()
}

/// T2I-Adapter sketch: p > threshold → 255, else 0.
pub fn binary_edges(v: &[f32], threshold: f32) -> Vec<u8> {
    v.iter()
        .map(|&p| if p > threshold { 255 } else { 0 })
        .collect()
}

/// MiDaS: d − min, / max, uint8(clip(d · 255)) (truncating, as NumPy's astype).
/// NaN is skipped by min and max and maps to 0.
pub fn depth_u8(v: &[f32]) -> Vec<u8> {
    // Eight running minima and maxima (f32::min/max skip NaN; both are order-free, so
    // this is the sequential fold's result), in vector instructions.
    const L: usize = 8;
    let (mut lo, mut hi) = ([f32::INFINITY; L], [f32::NEG_INFINITY; L]);
    let chunks = v.chunks_exact(L);
    let tail = chunks.remainder();
    for (i, c) in chunks.enumerate() {
        // The output was just written by ONNX Runtime's threads and is often still in
        // the other core's cache: ask for the lines 4 KiB ahead (0.39 → 0.26 ms for a
        // 512×512 map in the depth bench).
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
        #[cfg(target_arch = "x86_64")]
        if i % 8 == 0 {
            let ahead = c.as_ptr().wrapping_add(1024);
            for line in 0..4 {
                // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        ahead.wrapping_add(16 * line).cast(),
                    )
                };
            }
        }
        for k in 0..L {
            lo[k] = lo[k].min(c[k]);
            hi[k] = hi[k].max(c[k]);
        }
    }
    let min = tail.iter().chain(&lo).fold(f32::INFINITY, |a, &d| a.min(d));
    let max = tail
        .iter()
        .chain(&hi)
        .fold(f32::NEG_INFINITY, |a, &d| a.max(d));
    // The largest d − min, floored at 0 (rounding is monotonic: that is max − min).
    let range = if max.is_finite() && min.is_finite() {
        (max - min).max(0.0)
    } else {
        v.iter().fold(0f32, |m, &d| m.max(d - min))
    };
    if range > 0.0 {
        // clamp(0, 255) as u8 with NaN → 0, written as max/min (which ignore NaN) and an
        // unchecked cast of the in-range result, so that it compiles to vector instructions
        // (the checked cast's NaN and overflow handling keeps it scalar).
        #[allow(clippy::manual_clamp)] // clamp keeps NaN; max/min turn it into 0
        v.iter()
            .map(|&d| {
                let t = (((d - min) / range) * 255.0).max(0.0).min(255.0);
                // SAFETY: t is finite and in [0, 255], so the truncation fits in i32.
                unsafe { t.to_int_unchecked::<i32>() as u8 }
            })
            .collect()
    } else {
        vec![0; v.len()]
    }
}

/// MoveNet: (y, x, score) × 17 normalised to the input → a person in image pixels.
pub fn movenet_person(out: &ArrayD<f32>, p: &Placement, model: &str) -> Result<Person, RowFailure> {
    let v: Vec<f32> = out.iter().copied().collect();
    if v.len() != 17 * 3 {
        return Err(RowFailure::new(
            "model_output",
            format!(
                "model {model}: expected 17 × (y, x, score), got shape {:?}",
                out.shape()
            ),
        ));
    }
    let mut keypoints = [[0f32; 3]; 17];
    for (i, kp) in keypoints.iter_mut().enumerate() {
        let (y, x, s) = (v[3 * i], v[3 * i + 1], v[3 * i + 2]);
        let (ix, iy) = p.to_image(x * p.input.0 as f32, y * p.input.1 as f32);
        *kp = [ix, iy, s];
    }
    Ok(Person { keypoints })
}

/// Which model computes which condition column.
#[derive(Debug, Clone)]
pub struct ModelUse {
    pub kind: ConditionKind,
    /// Index of the condition in the build's condition list (= the row's column slot).
    pub slot: usize,
    /// Index into [`ModelSet::models`].
    pub model: usize,
}

/// A model ready to run: verified file, open session, resolved I/O.
pub struct LoadedModel {
    pub entry: ModelEntry,
    pub sha256: String,
    pub path: PathBuf,
    input_name: String,
    output: usize,
    /// `simcc`: the y output.
    output_y: Option<usize>,
    /// Declared input shape (`-1` dynamic).
    declared: Vec<i64>,
    net: Mutex<Net>,
    /// The reused batch input buffers (f32, i32).
    scratch: Mutex<(Vec<f32>, Vec<i32>)>,
    /// `simcc`: the person detector whose boxes are cropped.
    pub detector: Option<Box<LoadedModel>>,
}

/// An image's model output as the inference stage hands it on.
enum Early {
    Raw(ArrayD<f32>),
    Map(Result<Vec<u8>, RowFailure>),
}

/// The per-row state between the three stages.
pub struct Pending {
    inputs: Vec<Option<ModelInput>>,
    /// Per model: its output, or the depth map already made from it on the inference thread.
    outputs: Vec<Option<Early>>,
    /// Two-stage pose models: the persons found (COCO-17 body keypoints).
    poses: Vec<Option<Vec<Person>>>,
    /// The preprocessed image, kept when a pose model crops it.
    image: Option<RgbImage>,
}

/// Per-run settings of the model conditions.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub sketch_threshold: f32,
    pub max_persons: Option<usize>,
    pub batch_size: usize,
}

/// All models of a run and the conditions they compute.
pub struct ModelSet {
    pub models: Vec<LoadedModel>,
    pub uses: Vec<ModelUse>,
    pub settings: ModelSettings,
    /// Per-image float input buffers handed back by `infer` for the next `prepare`
    /// (bounded by [`POOL_MAX`]): no fresh multi-megabyte allocation per image.
    pub pool: Mutex<Vec<Vec<f32>>>,
}

/// Most recycled input buffers kept.
const POOL_MAX: usize = 64;

impl LoadedModel {
    /// Verify `path` against the entry's pin, open a session and check the I/O contract.
    pub fn open(entry: &ModelEntry, path: PathBuf, opts: &RuntimeOptions) -> Result<LoadedModel> {
        let sha256 = crate::models::verify_file(entry, &path)?;
        let net = Net::open(&entry.name, &path, opts)?;
        let input = net.input(entry.input.name.as_deref())?.clone();
        let (output, output_y) = if entry.output.decoder == DecoderKind::Simcc {
            let x = match entry.output.name.as_deref() {
                Some(n) => net.output_index(Some(n))?,
                None => 0,
            };
            let y = match entry.output.name_y.as_deref() {
                Some(n) => net.output_index(Some(n))?,
                None => x + 1,
            };
            if y >= net.outputs.len() || x == y {
                bail!(
                    "model {}: {} has outputs {:?}, but a simcc model needs two (simcc_x, simcc_y); name them with `name` and `name_y` in [output]",
                    entry.name,
                    path.display(),
                    net.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>()
                );
            }
            (x, Some(y))
        } else {
            (net.output_index(entry.output.name.as_deref())?, None)
        };
        let want = match entry.input.dtype {
            DType::F32 => ElemType::F32,
            DType::I32 => ElemType::I32,
        };
        let what = |m: &str| {
            format!(
                "model {}: {} input {:?} is {:?} {:?}, but its I/O spec feeds {m}; the file does not fit the entry (check `--like` when you added it)",
                entry.name,
                path.display(),
                input.name,
                input.elem,
                input.shape
            )
        };
        // An fp16 export of a float model takes the same data, converted at the boundary.
        let fits = input.elem == want || (want == ElemType::F32 && input.elem == ElemType::F16);
        if !fits {
            bail!(what(&format!("{:?}", entry.input.dtype)));
        }
        if input.shape.len() != 4 {
            bail!(what("a rank-4 tensor (batch, image)"));
        }
        let cdim = match entry.input.layout {
            Layout::Nchw => input.shape[1],
            Layout::Nhwc => input.shape[3],
        };
        if cdim != -1 && cdim != 3 {
            bail!(what(&format!("3 channels ({:?})", entry.input.layout)));
        }
        let fixed = match entry.input.size {
            SizePolicy::Fixed { width, height } | SizePolicy::Letterbox { width, height, .. } => {
                Some((width, height))
            }
            SizePolicy::ShortSide { size } => Some((size, size)),
            SizePolicy::Any | SizePolicy::Multiple { .. } => None,
        };
        if let Some((width, height)) = fixed {
            let (hd, wd) = match entry.input.layout {
                Layout::Nchw => (input.shape[2], input.shape[3]),
                Layout::Nhwc => (input.shape[1], input.shape[2]),
            };
            if (hd != -1 && hd != height as i64) || (wd != -1 && wd != width as i64) {
                bail!(what(&format!("{width}×{height} images")));
            }
        }
        Ok(LoadedModel {
            entry: entry.clone(),
            sha256,
            path,
            input_name: input.name.clone(),
            output,
            output_y,
            declared: input.shape.clone(),
            net: Mutex::new(net),
            scratch: Mutex::new((Vec::new(), Vec::new())),
            detector: None,
        })
    }

    /// Run on a ready batch and discard the result (benchmarks).
    pub fn run_raw(&self, shape: &[usize], data: Batch<'_>) -> Result<()> {
        self.check_shape(shape)?;
        let mut net = self
            .net
            .lock()
            .map_err(|_| anyhow::anyhow!("model {}: session lock poisoned", self.entry.name))?;
        net.run(&self.input_name, shape, data, &[self.output])?;
        Ok(())
    }

    /// Run on a ready batch and return the entry's output (feature models).
    pub fn run_batch(&self, shape: &[usize], data: Batch<'_>) -> Result<ArrayD<f32>> {
        self.check_shape(shape)?;
        let mut net = self
            .net
            .lock()
            .map_err(|_| anyhow::anyhow!("model {}: session lock poisoned", self.entry.name))?;
        let mut out = net.run(&self.input_name, shape, data, &[self.output])?;
        out.pop()
            .with_context(|| format!("model {}: no output", self.entry.name))
    }

    /// Run over `inputs` in batches of consecutive inputs of equal shape (at most
    /// `batch_size`, or the model's fixed batch); each input's `outputs`, split per image.
    fn run_grouped(
        &self,
        inputs: &[Option<&ModelInput>],
        batch_size: usize,
        outputs: &[usize],
    ) -> Result<Vec<Option<Vec<ArrayD<f32>>>>> {
        self.run_grouped_with(inputs, batch_size, outputs, |_, _, a| Ok(a.to_owned()))
    }

    /// [`LoadedModel::run_grouped`] with each image's outputs passed through
    /// `take(index into inputs, output, view)` (see [`crate::runtime::Net::run_split_with`]).
    fn run_grouped_with<T>(
        &self,
        inputs: &[Option<&ModelInput>],
        batch_size: usize,
        outputs: &[usize],
        mut take: impl FnMut(usize, usize, ndarray::ArrayViewD<'_, f32>) -> Result<T>,
    ) -> Result<Vec<Option<Vec<T>>>> {
        let mut res: Vec<Option<Vec<T>>> = inputs.iter().map(|_| None).collect();
        let max_batch = self.max_batch(batch_size);
        let mut net = self
            .net
            .lock()
            .map_err(|_| anyhow::anyhow!("model {}: session lock poisoned", self.entry.name))?;
        let mut i = 0;
        while i < inputs.len() {
            let Some(first) = inputs[i] else {
                i += 1;
                continue;
            };
            let dims = first.dims;
            let mut j = i + 1;
            while j < inputs.len() && j - i < max_batch && inputs[j].is_some_and(|x| x.dims == dims)
            {
                j += 1;
            }
            let n = j - i;
            let shape = [n, dims[0], dims[1], dims[2]];
            self.check_shape(&shape)?;
            let len = n * dims.iter().product::<usize>();
            // One batch buffer per model, reused (no per-batch allocation and page faults).
            let mut scratch = self
                .scratch
                .lock()
                .map_err(|_| anyhow::anyhow!("model {}: buffer lock poisoned", self.entry.name))?;
            let (f, int) = &mut *scratch;
            let at = |k: usize, o: usize, a: ndarray::ArrayViewD<'_, f32>| take(i + k, o, a);
            let outs = match &first.data {
                // A batch of one runs on the image's own buffer (no copy).
                InputData::F32(d) if n == 1 => {
                    net.run_split_with(&self.input_name, &shape, Batch::F32(d), outputs, 1, at)?
                }
                InputData::I32(d) if n == 1 => {
                    net.run_split_with(&self.input_name, &shape, Batch::I32(d), outputs, 1, at)?
                }
                InputData::F32(_) => {
                    f.clear();
                    f.reserve(len);
                    for x in inputs[i..j].iter().flatten() {
                        if let InputData::F32(d) = &x.data {
                            f.extend_from_slice(d);
                        }
                    }
                    net.run_split_with(&self.input_name, &shape, Batch::F32(f), outputs, n, at)?
                }
                InputData::I32(_) => {
                    int.clear();
                    int.reserve(len);
                    for x in inputs[i..j].iter().flatten() {
                        if let InputData::I32(d) = &x.data {
                            int.extend_from_slice(d);
                        }
                    }
                    net.run_split_with(&self.input_name, &shape, Batch::I32(int), outputs, n, at)?
                }
            };
            let mut per_output: Vec<std::vec::IntoIter<T>> =
                outs.into_iter().map(|o| o.into_iter()).collect();
            for slot in res[i..j].iter_mut() {
                *slot = Some(per_output.iter_mut().filter_map(|o| o.next()).collect());
            }
            i = j;
        }
        Ok(res)
    }

    /// The YOLOX decoder settings of a detector entry.
    fn yolox_params(&self) -> YoloxParams {
        let o = &self.entry.output;
        let input = match self.entry.input.size {
            SizePolicy::Letterbox { width, height, .. } | SizePolicy::Fixed { width, height } => {
                (width, height)
            }
            _ => (640, 640),
        };
        YoloxParams {
            input,
            strides: o.strides.clone().unwrap_or_else(|| vec![8, 16, 32]),
            person_class: o.person_class.unwrap_or(0),
            score_threshold: o.score_threshold.unwrap_or(0.3),
            nms_threshold: o.nms_threshold.unwrap_or(0.45),
        }
    }

    pub fn max_batch(&self, wanted: usize) -> usize {
        match self.declared.first() {
            Some(&d) if d > 0 => d as usize,
            _ => wanted.max(1),
        }
    }

    fn check_shape(&self, shape: &[usize]) -> Result<()> {
        let ok = self
            .declared
            .iter()
            .zip(shape)
            .skip(1)
            .all(|(&d, &s)| d == -1 || d == s as i64);
        if !ok {
            bail!(
                "model {}: wrong input shape: {} expects {:?} but the image gives {:?} (I/O spec size {:?}); \
                 use a model with dynamic height/width, or register it with a size policy that produces its fixed size",
                self.entry.name,
                self.path.display(),
                self.declared,
                shape,
                self.entry.input.size
            );
        }
        Ok(())
    }
}

impl ModelSet {
    /// Does this column come from a model?
    pub fn handles(&self, slot: usize) -> bool {
        self.uses.iter().any(|u| u.slot == slot)
    }

    /// CPU stage: the model inputs of one preprocessed image (once per model; for a
    /// two-stage pose model, its detector's input, and the image is kept for the crops).
    pub fn prepare(&self, rgb: &RgbImage) -> Pending {
        let two_stage = self.models.iter().any(|m| m.detector.is_some());
        Pending {
            inputs: self
                .models
                .iter()
                .map(|m| {
                    let spec = match &m.detector {
                        Some(d) => &d.entry.input,
                        None => &m.entry.input,
                    };
                    let buf = self.pool.lock().ok().and_then(|mut p| p.pop());
                    Some(prepare_into(spec, rgb, buf.unwrap_or_default()))
                })
                .collect(),
            outputs: self.models.iter().map(|_| None).collect(),
            poses: self.models.iter().map(|_| None).collect(),
            image: two_stage.then(|| rgb.clone()),
        }
    }

    /// Inference stage: run every model over the chunk, in batches of images of equal
    /// input shape (order kept), and keep each image's output. A two-stage pose model
    /// runs its detector over the chunk, crops every person found and runs the pose
    /// model over all crops of the chunk in batches.
    pub fn infer(&self, rows: &mut [&mut Pending]) -> Result<()> {
        for (mi, m) in self.models.iter().enumerate() {
            if let Some(det) = &m.detector {
                self.infer_two_stage(mi, m, det, rows)?;
                continue;
            }
            let inputs: Vec<Option<&ModelInput>> =
                rows.iter().map(|r| r.inputs[mi].as_ref()).collect();
            let depth = m.entry.output.decoder == DecoderKind::Depth;
            let name = &m.entry.name;
            let outs =
                m.run_grouped_with(&inputs, self.settings.batch_size, &[m.output], |k, _, a| {
                    let early = match inputs[k] {
                        Some(x) if depth => depth_map_early(a.view(), &x.place, name),
                        _ => None,
                    };
                    Ok(match early {
                        Some(map) => Early::Map(map),
                        None => Early::Raw(a.to_owned()),
                    })
                })?;
            let mut pool = self.pool.lock().ok();
            for (r, o) in rows.iter_mut().zip(outs) {
                if let Some(mut o) = o {
                    r.outputs[mi] = o.pop();
                }
                // The input is in the batch now: recycle its buffer.
                if let (
                    Some(pool),
                    Some(ModelInput {
                        data: InputData::F32(v),
                        ..
                    }),
                ) = (pool.as_mut(), r.inputs[mi].as_mut())
                {
                    if pool.len() < POOL_MAX {
                        pool.push(std::mem::take(v));
                    }
                }
            }
        }
        Ok(())
    }

    fn infer_two_stage(
        &self,
        mi: usize,
        m: &LoadedModel,
        det: &LoadedModel,
        rows: &mut [&mut Pending],
    ) -> Result<()> {
        let inputs: Vec<Option<&ModelInput>> = rows.iter().map(|r| r.inputs[mi].as_ref()).collect();
        let dets = det.run_grouped(&inputs, self.settings.batch_size, &[det.output])?;
        let yp = det.yolox_params();
        let out = &m.entry.output;
        let SizePolicy::Fixed { width, height } = m.entry.input.size else {
            bail!(
                "model {}: a simcc model needs a fixed input size",
                m.entry.name
            );
        };
        let padding = out.bbox_padding.unwrap_or(1.25);
        // Every crop of the chunk: (row, crop geometry, model input).
        let mut crops: Vec<(usize, PoseCrop, ModelInput)> = Vec::new();
        for (ri, (r, o)) in rows.iter().zip(dets).enumerate() {
            let (Some(mut o), Some(input), Some(img)) = (o, r.inputs[mi].as_ref(), &r.image) else {
                continue;
            };
            let o = o.pop().context("no detector output")?;
            let cols = *o.shape().last().unwrap_or(&0);
            let v: Vec<f32> = o.iter().copied().collect();
            let ratio = input.place.ratio() as f32;
            let persons = yolox_persons(&v, cols, &yp, ratio).map_err(|e| {
                anyhow::anyhow!(
                    "model {}: output shape {:?}: {e}",
                    det.entry.name,
                    o.shape()
                )
            })?;
            let (w, h) = img.dimensions();
            for d in persons {
                let crop = PoseCrop::new(d.bbox, padding, (width, height));
                let px = crop.warp(img.as_raw(), w as usize, h as usize);
                let cimg = RgbImage::from_raw(width, height, px).context("crop size")?;
                crops.push((ri, crop, prepare(&m.entry.input, &cimg)));
            }
        }
        for r in rows.iter_mut() {
            r.poses[mi] = Some(Vec::new());
        }
        let inputs: Vec<Option<&ModelInput>> = crops.iter().map(|c| Some(&c.2)).collect();
        let oy = m.output_y.context("simcc model without a y output")?;
        let outs = m.run_grouped(&inputs, self.settings.batch_size, &[m.output, oy])?;
        let split = out.split_ratio.unwrap_or(2.0);
        let body: Vec<usize> = out
            .body_keypoints
            .clone()
            .unwrap_or_else(|| (0..17).collect());
        if body.len() != 17 {
            bail!(
                "model {}: body_keypoints must list 17 indices (COCO order), got {}",
                m.entry.name,
                body.len()
            );
        }
        for ((ri, crop, _), o) in crops.iter().zip(outs) {
            let o = o.context("no pose output")?;
            let (x, y) = (&o[0], &o[1]);
            let k = x
                .shape()
                .get(x.ndim().saturating_sub(2))
                .copied()
                .unwrap_or(0);
            if x.ndim() < 2 || y.ndim() < 2 || y.shape()[y.ndim() - 2] != k {
                bail!(
                    "model {}: expected simcc_x [N, K, Wx] and simcc_y [N, K, Wy], got {:?} and {:?}",
                    m.entry.name,
                    x.shape(),
                    y.shape()
                );
            }
            let xs: Vec<f32> = x.iter().copied().collect();
            let ys: Vec<f32> = y.iter().copied().collect();
            let kps = simcc_keypoints(&xs, &ys, k, split, crop);
            let mut keypoints = [[0f32; 3]; 17];
            for (dst, &i) in keypoints.iter_mut().zip(&body) {
                *dst = *kps.get(i).with_context(|| {
                    format!(
                        "model {}: body keypoint {i} of {k} keypoints (body_keypoints)",
                        m.entry.name
                    )
                })?;
            }
            if let Some(p) = rows[*ri].poses[mi].as_mut() {
                p.push(Person { keypoints });
            }
        }
        Ok(())
    }

    /// Decode stage: the condition maps of one row (PNG-encoded into `conditions`) and,
    /// for a pose model, the detected persons.
    pub fn finish(
        &self,
        pending: &Pending,
        conditions: &mut [Vec<u8>],
    ) -> Result<Option<Vec<Person>>, RowFailure> {
        let mut persons = None;
        for u in &self.uses {
            let m = &self.models[u.model];
            let name = &m.entry.name;
            let missing = || {
                RowFailure::new(
                    "internal",
                    format!("model {name} produced no output for this row"),
                )
            };
            let input = pending.inputs[u.model].as_ref().ok_or_else(missing)?;
            let place = &input.place;
            let (w, h) = place.orig;
            if m.detector.is_some() {
                let found = pending.poses[u.model].clone().ok_or_else(missing)?;
                let style = KeyposeStyle {
                    score_threshold: m.entry.output.keypoint_threshold.unwrap_or(0.3),
                    radius: 2,
                    thickness: 2,
                    max_persons: self.settings.max_persons,
                };
                let img = draw_keypose(w, h, &found, &style);
                persons = Some(found);
                conditions[u.slot] = crate::imaging::encode::encode_png(img.as_raw(), w, h, 3)?;
                continue;
            }
            let out = match pending.outputs[u.model].as_ref().ok_or_else(missing)? {
                Early::Raw(out) => out,
                Early::Map(map) => {
                    let map = map.as_ref().map_err(Clone::clone)?;
                    conditions[u.slot] = crate::imaging::encode::encode_png(map, w, h, 1)?;
                    continue;
                }
            };
            let png = match (m.entry.output.decoder, u.kind) {
                (decoder @ (DecoderKind::Edge | DecoderKind::Depth), kind) => {
                    let map = decode_gray(
                        decoder,
                        kind,
                        out,
                        place,
                        self.settings.sketch_threshold,
                        name,
                    )?;
                    crate::imaging::encode::encode_png(map.as_raw(), w, h, 1)?
                }
                (DecoderKind::Movenet, _) => {
                    let person = movenet_person(out, place, name)?;
                    let pt = m.entry.output.person_threshold.unwrap_or(0.0);
                    let mean = person.keypoints.iter().map(|k| k[2]).sum::<f32>() / 17.0;
                    let found: Vec<Person> = if mean >= pt { vec![person] } else { Vec::new() };
                    let style = KeyposeStyle {
                        score_threshold: m.entry.output.keypoint_threshold.unwrap_or(0.1),
                        radius: 2,
                        thickness: 2,
                        max_persons: self.settings.max_persons,
                    };
                    let img = draw_keypose(w, h, &found, &style);
                    persons = Some(found);
                    crate::imaging::encode::encode_png(img.as_raw(), w, h, 3)?
                }
                (DecoderKind::Features | DecoderKind::TextFeatures, kind) => {
                    // `choose_models` only accepts models that serve the condition, and
                    // feature models serve none.
                    return Err(RowFailure::new(
                        "internal",
                        format!(
                            "model {name} is a feature model and cannot compute {}",
                            kind.name()
                        ),
                    ));
                }
                (DecoderKind::Yolox | DecoderKind::Simcc, _) => {
                    return Err(RowFailure::new(
                        "internal",
                        format!("model {name}: a detector or pose model without its pair"),
                    ))
                }
            };
            conditions[u.slot] = png;
        }
        Ok(persons)
    }
}

/// Pick the model of each model-backed condition (`--model CONDITION=NAME` or the
/// condition's default) and check it is pinned. Reads the registry only when needed.
pub fn choose_models(
    conditions: &[ConditionKind],
    keypose_from: crate::config::KeyposeFrom,
    flags: &[String],
) -> Result<Vec<crate::config::ModelChoice>> {
    let wanted: Vec<ConditionKind> = conditions
        .iter()
        .copied()
        .filter(|&k| match k {
            ConditionKind::Keypose => keypose_from == crate::config::KeyposeFrom::Model,
            k => k.needs_model(),
        })
        .collect();
    let mut chosen: Vec<(ConditionKind, String)> = Vec::new();
    for f in flags {
        let (c, name) = f.split_once('=').with_context(|| {
            format!("--model {f:?}: expected CONDITION=NAME, e.g. --model depth=midas-dpt-hybrid")
        })?;
        let kind = ConditionKind::parse_list(c.trim())?
            .first()
            .copied()
            .with_context(|| format!("--model {f:?}: no condition named"))?;
        if !wanted.contains(&kind) {
            bail!(
                "--model {f:?}: condition {} is not computed by a model in this run (conditions: {}{})",
                kind.name(),
                conditions.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
                if kind == ConditionKind::Keypose { "; add --keypose-from model" } else { "" }
            );
        }
        if chosen.iter().any(|(k, _)| *k == kind) {
            bail!(
                "--model {f:?}: condition {} already has a model",
                kind.name()
            );
        }
        chosen.push((kind, name.trim().to_string()));
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let reg = crate::models::Registry::load()?;
    let mut out = Vec::new();
    for kind in wanted {
        let entry = match chosen.iter().find(|(k, _)| *k == kind) {
            Some((_, name)) => reg.get(name)?,
            None => reg.default_for(kind)?,
        };
        if !entry.serves(kind) {
            bail!(
                "model {} computes {} (decoder {:?}), not {}; choose another with --model {}=NAME",
                entry.name,
                entry.conditions.join(", "),
                entry.output.decoder,
                kind.name(),
                kind.name()
            );
        }
        let Some(sha) = &entry.sha256 else {
            bail!(
                "model {} (for {}) has no pinned sha256 and no file of yours yet; register your ONNX export with \
                 `prep models add {} --file F.onnx --like {}`, or pick another model with --model {}=NAME",
                entry.name,
                kind.name(),
                entry.name,
                entry.name,
                kind.name()
            );
        };
        let (detector, detector_sha256) = match reg.detector_of(entry)? {
            Some(d) => {
                let Some(dsha) = &d.sha256 else {
                    bail!(
                        "model {} (the person detector of {}) has no pinned sha256 and no file of yours yet; \
                         download and pin it with `prep models fetch {}`, or register your file with \
                         `prep models add {} --file F.onnx --like {}`",
                        d.name,
                        entry.name,
                        d.name,
                        d.name,
                        d.name
                    );
                };
                (Some(d.name.clone()), Some(dsha.clone()))
            }
            None => (None, None),
        };
        out.push(crate::config::ModelChoice {
            condition: kind.name().to_string(),
            model: entry.name.clone(),
            sha256: sha.clone(),
            detector,
            detector_sha256,
        });
    }
    Ok(out)
}

impl ModelSet {
    /// Open the models of a resolved config. `files`: `--model-file NAME=PATH`, NAME a
    /// model or a condition.
    pub fn open(
        cfg: &crate::config::BuildConfig,
        files: &[String],
        opts: &RuntimeOptions,
        batch_size: usize,
    ) -> Result<Option<ModelSet>> {
        if cfg.models.is_empty() {
            if let Some(f) = files.first() {
                bail!("--model-file {f:?}: no condition of this run uses a model");
            }
            return Ok(None);
        }
        let reg = crate::models::Registry::load()?;
        let mut overrides: Vec<(String, PathBuf)> = Vec::new();
        for f in files {
            let (name, path) = f.split_once('=').with_context(|| {
                format!("--model-file {f:?}: expected NAME=PATH, e.g. --model-file hed=/models/hed.onnx")
            })?;
            let name = name.trim();
            let model = match cfg.models.iter().find(|c| c.condition == name) {
                Some(c) => c.model.clone(),
                None if cfg
                    .models
                    .iter()
                    .any(|c| c.model == name || c.detector.as_deref() == Some(name)) =>
                {
                    name.to_string()
                }
                None => bail!(
                    "--model-file {f:?}: {name} is neither a model of this run ({}) nor one of its model conditions",
                    cfg.models.iter().map(|c| format!("{}={}", c.condition, c.model)).collect::<Vec<_>>().join(", ")
                ),
            };
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!("--model-file {f:?}: {} is not a file", path.display());
            }
            overrides.push((model, path));
        }
        let mut models: Vec<LoadedModel> = Vec::new();
        let mut uses = Vec::new();
        for choice in &cfg.models {
            let kind = ConditionKind::parse_list(&choice.condition)?
                .first()
                .copied()
                .context("empty condition")?;
            let slot = cfg
                .conditions
                .iter()
                .position(|&k| k == kind)
                .context("model condition not in the condition list")?;
            let idx = match models.iter().position(|m| m.entry.name == choice.model) {
                Some(i) => i,
                None => {
                    let mut entry = reg.get(&choice.model)?.clone();
                    if entry.sha256.as_deref() != Some(choice.sha256.as_str()) {
                        // The registry changed since the config was resolved: keep the pin
                        // the output was started with.
                        entry.sha256 = Some(choice.sha256.clone());
                        entry.bytes = None;
                    }
                    let path = match overrides.iter().find(|(n, _)| *n == entry.name) {
                        Some((_, p)) => p.clone(),
                        None => {
                            let p = reg.cached_file(&entry.name);
                            if !p.is_file() {
                                bail!(
                                    "model {} (for {}) is not in the cache ({}); run `prep models fetch {}`, \
                                     register a file with `prep models add {} --file F.onnx --like {}`, or pass --model-file {}=F.onnx",
                                    entry.name, kind.name(), p.display(), entry.name, entry.name, entry.name, entry.name
                                );
                            }
                            p
                        }
                    };
                    let mut loaded = LoadedModel::open(&entry, path, opts)?;
                    if let (Some(dname), Some(dsha)) = (&choice.detector, &choice.detector_sha256) {
                        let mut dentry = reg.get(dname)?.clone();
                        if dentry.sha256.as_deref() != Some(dsha.as_str()) {
                            dentry.sha256 = Some(dsha.clone());
                            dentry.bytes = None;
                        }
                        let dpath = match overrides.iter().find(|(n, _)| n == dname) {
                            Some((_, p)) => p.clone(),
                            None => {
                                let p = reg.cached_file(dname);
                                if !p.is_file() {
                                    bail!(
                                        "model {dname} (the person detector of {}) is not in the cache ({}); run `prep models fetch {dname}`, \
                                         register a file with `prep models add {dname} --file F.onnx --like {dname}`, or pass --model-file {dname}=F.onnx",
                                        entry.name,
                                        p.display()
                                    );
                                }
                                p
                            }
                        };
                        loaded.detector = Some(Box::new(LoadedModel::open(&dentry, dpath, opts)?));
                    } else if entry.output.decoder == DecoderKind::Simcc {
                        bail!(
                            "model {}: a simcc pose model needs its detector; this output was started without one (start a new output)",
                            entry.name
                        );
                    }
                    models.push(loaded);
                    models.len() - 1
                }
            };
            uses.push(ModelUse {
                kind,
                slot,
                model: idx,
            });
        }
        Ok(Some(ModelSet {
            pool: Mutex::new(Vec::new()),
            models,
            uses,
            settings: ModelSettings {
                sketch_threshold: cfg.sketch_threshold.unwrap_or(0.5),
                max_persons: cfg.max_persons,
                batch_size: batch_size.max(1),
            },
        }))
    }
}

/// An edge or depth model's output as the image-sized 8-bit map of its condition (`sketch`:
/// binary edges, `hed`: soft edges, `depth`: bicubic back to image size + min–max).
pub fn decode_gray(
    decoder: DecoderKind,
    kind: ConditionKind,
    out: &ArrayD<f32>,
    place: &Placement,
    sketch_threshold: f32,
    model: &str,
) -> Result<GrayImage, RowFailure> {
    let (w, h) = place.orig;
    let cubic = decoder == DecoderKind::Depth;
    let (_, _, v) = to_image_map(squeeze_map(out.view(), model)?, place, cubic);
    let px = match (decoder, kind) {
        (DecoderKind::Depth, _) => depth_u8(&v),
        (_, ConditionKind::Sketch) => binary_edges(&v, sketch_threshold),
        _ => soft_edges(&v),
    };
    GrayImage::from_raw(w, h, px).ok_or_else(|| RowFailure::new("internal", "map size mismatch"))
}

/// An empty output for shape checks in tests.
pub fn zeros(shape: &[usize]) -> ArrayD<f32> {
    ArrayD::zeros(IxDyn(shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements() {
        let lb = SizePolicy::Letterbox {
            width: 192,
            height: 192,
            align: Align::Center,
            rounding: Rounding::Round,
        };
        let p = Placement::new(&lb, 512, 256);
        assert_eq!(p.content, (192, 96));
        assert_eq!(p.off, (0, 48));
        assert_eq!(p.to_image(96.0, 96.0), (256.0, 128.0));
        let m = SizePolicy::Multiple {
            multiple: 32,
            fit: Fit::Resize,
        };
        assert_eq!(Placement::new(&m, 80, 512).input, (96, 512));
        let m = SizePolicy::Multiple {
            multiple: 32,
            fit: Fit::Pad,
        };
        let p = Placement::new(&m, 80, 64);
        assert_eq!((p.input, p.content), ((96, 64), (80, 64)));
        // YOLOX: top-left, int(w · r): 300×200 → r = 640/300, content 640×426.
        let y = SizePolicy::Letterbox {
            width: 640,
            height: 640,
            align: Align::TopLeft,
            rounding: Rounding::Floor,
        };
        let p = Placement::new(&y, 300, 200);
        assert_eq!((p.content, p.off), ((640, 426), (0, 0)));
        assert_eq!(p.ratio(), 640.0 / 300.0);
    }

    #[test]
    fn decoders() {
        assert_eq!(soft_edges(&[-0.1, 0.5, 1.2, 0.502]), vec![0, 128, 255, 128]);
        assert_eq!(binary_edges(&[0.5, 0.51, 0.0], 0.5), vec![0, 255, 0]);
        assert_eq!(depth_u8(&[2.0, 3.0, 4.0]), vec![0, 127, 255]);
        assert_eq!(depth_u8(&[1.0, 1.0]), vec![0, 0]);
        // The lane-wise min/max equals the sequential definition (NumPy's d − min, / max,
        // uint8), over lengths that are not a multiple of the lanes, NaN and ±inf included.
        let naive = |v: &[f32]| -> Vec<u8> {
            let min = v.iter().copied().fold(f32::INFINITY, f32::min);
            let max = v.iter().fold(0f32, |m, &d| m.max(d - min));
            v.iter()
                .map(|&d| {
                    let d = if max > 0.0 { (d - min) / max } else { 0.0 };
                    (d * 255.0).clamp(0.0, 255.0) as u8
                })
                .collect()
        };
        let mut x = 0x9e37_79b9_u32;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) * 7.0 - 2.0
        };
        for n in [1usize, 7, 8, 9, 31, 1000, 4099] {
            let mut v: Vec<f32> = (0..n).map(|_| rnd()).collect();
            assert_eq!(depth_u8(&v), naive(&v), "n = {n}");
            v[n / 2] = f32::NAN;
            assert_eq!(depth_u8(&v), naive(&v), "n = {n}, NaN");
            v[n - 1] = f32::INFINITY;
            assert_eq!(depth_u8(&v), naive(&v), "n = {n}, inf");
            v[0] = f32::NEG_INFINITY;
            assert_eq!(depth_u8(&v), naive(&v), "n = {n}, -inf");
        }
        assert_eq!(depth_u8(&[f32::NAN; 9]), vec![0; 9]);
        // Resizing a constant map keeps it constant; identity size is the identity.
        let v = resize_f32(&[0.25; 16], 4, 4, 8, 8, true);
        assert!(v.iter().all(|&x| (x - 0.25).abs() < 1e-6));
        let src: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert_eq!(resize_f32(&src, 4, 3, 4, 3, false), src);
    }
}
