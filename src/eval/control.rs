//! `prep eval control`: controllability — re-extract the condition from generated images
//! with the reference dataset's own condition pipeline, and compare it with the input
//! condition the images were generated from (metrics in [`crate::metrics::control`]).
//!
//! The reference is a `prep build` output (its `dataset.json` records the conditions,
//! the resolution and resize mode, and each model with its sha256). The generated side is
//! either a directory of generated images — then `prep build --source folder` runs on it
//! in-process with the reference's config (same models, same pins) — or a `prep build`
//! output made from them already, or (segmentation, which prep computes from ground truth
//! only) a directory of predicted label maps. Rows pair up by the last path segment of
//! their key (file stem for image folders), so `prep generate`'s `KEY.png` files match.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arrow_array::{cast::AsArray, Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::cli::EvalControlArgs;
use crate::condition::{seg_palette, ConditionKind};
use crate::config::{KeyposeFrom, SourceKind};
use crate::input_store::{Input, ParquetInput};
use crate::metrics::control::{self, IouAccumulator, Keypoints, PoseImage};
use crate::pipeline::{self, RunOptions};

/// One row's condition map (encoded) and persons.
struct CondRow {
    map: Option<Vec<u8>>,
    persons: Option<Vec<Keypoints>>,
}

#[derive(Debug, Serialize, Default)]
pub struct ControlReport {
    pub condition: String,
    /// Pairs compared.
    pub n: usize,
    /// Generated rows without a reference row of the same key (and vice versa).
    pub unmatched_generated: usize,
    pub unmatched_reference: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth_rmse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssim: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psnr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miou: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oks_ap: Option<f64>,
    /// Where the re-extracted conditions of the generated images are (kept with --keep).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extracted: Option<PathBuf>,
}

fn match_key(key: &str) -> String {
    let last = key.rsplit('/').next().unwrap_or(key);
    match last.rfind('.') {
        Some(i) if i > 0 => last[..i].to_string(),
        _ => last.to_string(),
    }
}

/// The data shards of a build output (local or on an object store), sorted.
fn shards(dir: &Input) -> Result<Vec<String>> {
    let files = dir.data_shards()?;
    if files.is_empty() {
        bail!(
            "{}: no Parquet shards (data/*.parquet); pass a `prep build` output",
            dir.display("data")
        );
    }
    Ok(files)
}

/// key → row of a build output's `column` (and `keypoints` when asked). Only those columns
/// (and `key`) are read: on an object store, by ranged GETs of their column chunks.
fn read_build(dir: &Input, column: &str, persons: bool) -> Result<BTreeMap<String, CondRow>> {
    let mut rows = BTreeMap::new();
    for rel in shards(dir)? {
        let f = PathBuf::from(dir.display(&rel));
        let b = ParquetRecordBatchReaderBuilder::try_new(ParquetInput::open(dir, &rel)?)
            .with_context(|| format!("{}: not a readable Parquet file", f.display()))?;
        let want: Vec<&str> = ["key", column]
            .into_iter()
            .chain(persons.then_some("keypoints"))
            .collect();
        let roots: Vec<usize> = b
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, fd)| want.contains(&fd.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), roots);
        let reader = b.with_projection(mask).build()?;
        for batch in reader {
            let batch = batch.with_context(|| format!("cannot read {}", f.display()))?;
            let keys = batch
                .column_by_name("key")
                .with_context(|| format!("{}: no key column", f.display()))?
                .as_string::<i32>()
                .clone();
            let col = batch.column_by_name(column).with_context(|| {
                format!(
                    "{}: no {column:?} column; was it built with --condition {column}?",
                    f.display()
                )
            })?;
            let bytes = col
                .as_struct()
                .column_by_name("bytes")
                .with_context(|| format!("{}: {column:?} is not an image column", f.display()))?
                .as_binary::<i32>()
                .clone();
            let kp = if persons {
                Some(
                    batch
                        .column_by_name("keypoints")
                        .with_context(|| format!("{}: no keypoints column", f.display()))?
                        .as_list::<i32>()
                        .clone(),
                )
            } else {
                None
            };
            for i in 0..batch.num_rows() {
                let map = (!bytes.is_null(i)).then(|| bytes.value(i).to_vec());
                let persons = match &kp {
                    Some(l) if !l.is_null(i) => {
                        let people = l.value(i);
                        let people = people.as_list::<i32>();
                        let mut v = Vec::new();
                        for p in 0..people.len() {
                            let flat = people.value(p);
                            let flat = flat.as_primitive::<arrow_array::types::Float32Type>();
                            if flat.len() != 51 {
                                bail!(
                                    "{}: row {}: a person with {} keypoint values, expected 51",
                                    f.display(),
                                    keys.value(i),
                                    flat.len()
                                );
                            }
                            v.push(std::array::from_fn(|k| {
                                [
                                    flat.value(3 * k),
                                    flat.value(3 * k + 1),
                                    flat.value(3 * k + 2),
                                ]
                            }));
                        }
                        Some(v)
                    }
                    _ => None,
                };
                rows.insert(match_key(keys.value(i)), CondRow { map, persons });
            }
        }
    }
    Ok(rows)
}

/// key → map of a directory (or prefix) of label/colour maps (segmentation predictions):
/// the `*.png` directly in it.
fn read_map_dir(dir: &Input) -> Result<BTreeMap<String, CondRow>> {
    let mut rows = BTreeMap::new();
    let files: Vec<String> = dir
        .files("")?
        .into_iter()
        .filter(|f| !f.contains('/') && f.to_ascii_lowercase().ends_with(".png"))
        .collect();
    // 16 requests in flight on an object store.
    for (rel, bytes) in files.iter().zip(dir.read_many_opt(&files)) {
        let bytes = bytes?.with_context(|| format!("{} vanished while read", dir.display(rel)))?;
        let stem = Path::new(rel)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        rows.insert(
            stem,
            CondRow {
                map: Some(bytes),
                persons: None,
            },
        );
    }
    Ok(rows)
}

fn gray(bytes: &[u8], what: &str) -> Result<image::GrayImage> {
    Ok(image::load_from_memory(bytes)
        .with_context(|| format!("cannot decode the condition map of {what}"))?
        .to_luma8())
}

/// Label ids of a segmentation map: grey images are ids; colour images are inverted
/// through prep's palette (black and unknown colours → 255, unlabelled).
fn labels(bytes: &[u8], what: &str) -> Result<(u32, u32, Vec<u8>)> {
    let img = image::load_from_memory(bytes)
        .with_context(|| format!("cannot decode the label map of {what}"))?;
    let (w, h) = (img.width(), img.height());
    if matches!(img.color(), image::ColorType::L8 | image::ColorType::L16) {
        return Ok((w, h, img.to_luma8().into_raw()));
    }
    let mut lut: std::collections::HashMap<[u8; 3], u8> = std::collections::HashMap::new();
    for (l, c) in seg_palette().iter().enumerate() {
        if *c != [0, 0, 0] {
            lut.entry(*c).or_insert(l as u8);
        }
    }
    let rgb = img.to_rgb8();
    Ok((
        w,
        h,
        rgb.pixels()
            .map(|p| *lut.get(&p.0).unwrap_or(&255))
            .collect(),
    ))
}

/// Re-extract `kind` from the generated images with the reference's build config.
fn extract(
    a: &EvalControlArgs,
    reference: &crate::manifest::Manifest,
    kind: ConditionKind,
    out: &Path,
) -> Result<()> {
    let mut cfg = reference.config.clone();
    cfg.source = SourceKind::Folder;
    cfg.input = Some(a.gen.clone());
    cfg.conditions = vec![kind];
    cfg.limit = None;
    cfg.filters = Default::default();
    cfg.verify_hash = None;
    cfg.dedup = false;
    cfg.jpeg_dct_scaling = false;
    cfg.models.retain(|m| m.condition == kind.name());
    if kind == ConditionKind::Keypose {
        // Generated images have no ground truth: a pose model finds the people.
        cfg.keypose_from = KeyposeFrom::Model;
        if cfg.models.is_empty() {
            cfg.models =
                crate::condition::model::choose_models(&[kind], KeyposeFrom::Model, &a.model)?;
        }
    } else if !a.model.is_empty() {
        bail!("--model applies to keypose re-extraction only; other conditions use the reference's own models (dataset.json)");
    }
    let opts = RunOptions {
        threads: a.threads,
        shard: crate::config::ShardSelector::ALL,
        dry_run: false,
        progress: !a.json,
        command: std::env::args().collect(),
        model_files: a.model_file.clone(),
        batch_size: Some(a.batch_size),
        device: a.device,
        auto: false,
        lease: pipeline::DEFAULT_LEASE,
        // The images are read from --gen (maybe a URL); the output is a local directory.
        remote: if super::objstore::is_url_path(&a.gen) {
            a.store.options()
        } else {
            Default::default()
        },
    };
    let s = pipeline::build(&cfg, out, &opts)
        .with_context(|| format!("re-extracting {} from {}", kind.name(), a.gen.display()))?;
    let failed: usize = s.failed.values().sum();
    if failed > 0 {
        eprintln!(
            "warning: {failed} generated image(s) could not be processed ({:?}); they are left out",
            s.failed
        );
    }
    Ok(())
}

pub fn run(a: &EvalControlArgs) -> Result<ControlReport> {
    let kind = *ConditionKind::parse_list(&a.condition)?
        .first()
        .context("--condition is empty")?;
    if matches!(kind, ConditionKind::Color) {
        bail!("--condition color: controllability is defined for depth, hed, sketch, canny, keypose and seg");
    }
    let opts = a.store.options();
    let ref_dir = Input::open_as(&a.reference, &opts, "--reference")?;
    let gen_dir = Input::open_as(&a.gen, &opts, "--gen")?;
    let manifest = ref_dir.read_opt("dataset.json")?.with_context(|| {
        format!(
            "{} has no dataset.json: --reference must be a finished `prep build` output",
            a.reference.display()
        )
    })?;
    let reference: crate::manifest::Manifest =
        serde_json::from_slice(&manifest).with_context(|| {
            format!(
                "{} is not a prep dataset manifest; --reference must be a `prep build` output",
                ref_dir.display("dataset.json")
            )
        })?;
    if !reference.config.conditions.contains(&kind) {
        bail!(
            "{} was built without --condition {} (it has {})",
            a.reference.display(),
            kind.name(),
            reference.conditions.join(", ")
        );
    }
    let persons = kind == ConditionKind::Keypose;
    let mut report = ControlReport {
        condition: kind.name().to_string(),
        ..Default::default()
    };
    let mut temp: Option<PathBuf> = None;
    let gen_rows = if gen_dir.is_dir("data")? {
        read_build(&gen_dir, kind.name(), persons)?
    } else if kind == ConditionKind::Seg {
        read_map_dir(&gen_dir)?
    } else {
        let out = match &a.keep {
            Some(p) => p.clone(),
            None => {
                let p = std::env::temp_dir().join(format!(
                    "prep-control-{}-{}",
                    kind.name(),
                    std::process::id()
                ));
                temp = Some(p.clone());
                p
            }
        };
        extract(a, &reference, kind, &out)?;
        report.extracted = a.keep.clone();
        read_build(&Input::Local(out), kind.name(), persons)?
    };
    if let Some(t) = temp {
        let _ = std::fs::remove_dir_all(t);
    }
    let ref_rows = read_build(&ref_dir, kind.name(), persons)?;
    report.unmatched_reference = ref_rows
        .keys()
        .filter(|k| !gen_rows.contains_key(*k))
        .count();

    let (mut rmse, mut f1, mut ssim, mut psnr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut iou = IouAccumulator::new(Some(255));
    let mut poses: Vec<PoseImage> = Vec::new();
    let gt_labelled = if reference.config.keypose_from == KeyposeFrom::Gt {
        0.0
    } else {
        a.keypoint_threshold
    };
    let mut per_sample = csv::Writer::from_writer(Vec::new());
    for (key, g) in &gen_rows {
        let Some(r) = ref_rows.get(key) else {
            report.unmatched_generated += 1;
            continue;
        };
        match kind {
            ConditionKind::Keypose => {
                let gt: Vec<Keypoints> = r
                    .persons
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| p.map(|k| [k[0], k[1], if k[2] > gt_labelled { 2.0 } else { 0.0 }]))
                    .collect();
                let det: Vec<(Keypoints, f64)> = g
                    .persons
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| {
                        let s = p.iter().map(|k| k[2] as f64).sum::<f64>() / 17.0;
                        (p, s)
                    })
                    .collect();
                per_sample.write_record([
                    key.as_str(),
                    &gt.len().to_string(),
                    &det.len().to_string(),
                ])?;
                poses.push(PoseImage { gt, det });
            }
            _ => {
                let (Some(rm), Some(gm)) = (&r.map, &g.map) else {
                    continue;
                };
                if kind == ConditionKind::Seg {
                    let (rw, rh, rl) = labels(rm, key)?;
                    let (gw, gh, gl) = labels(gm, key)?;
                    if (rw, rh) != (gw, gh) {
                        bail!("{key}: label maps differ in size ({rw}×{rh} reference, {gw}×{gh} generated)");
                    }
                    iou.add(&rl, &gl);
                    per_sample.write_record([key.as_str(), "", ""])?;
                } else {
                    let (ri, gi) = (gray(rm, key)?, gray(gm, key)?);
                    if ri.dimensions() != gi.dimensions() {
                        bail!(
                            "{key}: condition maps differ in size ({:?} reference, {:?} generated); generate and extract at the reference's resolution",
                            ri.dimensions(),
                            gi.dimensions()
                        );
                    }
                    let (w, h) = (ri.width() as usize, ri.height() as usize);
                    if kind == ConditionKind::Depth {
                        let v = control::depth_rmse(ri.as_raw(), gi.as_raw());
                        per_sample.write_record([key.as_str(), &v.to_string(), ""])?;
                        rmse.push(v);
                    } else {
                        let v = control::edge_f1(ri.as_raw(), gi.as_raw(), a.edge_threshold);
                        let s = control::ssim(ri.as_raw(), gi.as_raw(), w, h);
                        let p = control::psnr(ri.as_raw(), gi.as_raw());
                        per_sample.write_record([
                            key.as_str(),
                            &v.to_string(),
                            &s.map(|s| s.to_string()).unwrap_or_default(),
                        ])?;
                        f1.push(v);
                        psnr.push(p);
                        if let Some(s) = s {
                            ssim.push(s);
                        }
                    }
                }
            }
        }
        report.n += 1;
    }
    if report.n == 0 {
        bail!(
            "no generated row matches a reference row by key ({} generated, {} reference); name generated images KEY.png after the reference keys",
            gen_rows.len(),
            ref_rows.len()
        );
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    report.depth_rmse = mean(&rmse);
    report.edge_f1 = mean(&f1);
    report.ssim = mean(&ssim);
    report.psnr = mean(&psnr);
    report.miou = if kind == ConditionKind::Seg {
        iou.miou()
    } else {
        None
    };
    report.oks_ap = if persons {
        control::keypoint_ap(&poses)
    } else {
        None
    };
    if let Some(p) = &a.per_sample {
        let bytes = per_sample
            .into_inner()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        super::objstore::write_out(p, &bytes, &opts)?;
    }
    Ok(report)
}
