//! `prep generate`: Stable Diffusion + T2I-Adapters through ONNX Runtime, over a prep-built
//! Parquet dataset (captions in `text`, conditions in their columns).
//!
//! - [`pipeline`]: the models (one session each, opened once), the sampling loop.
//! - [`scheduler`]: DDIM and DPM-Solver++(2M) from diffusers' `scheduler_config.json`.
//! - [`noise`]: the documented seeded Gaussian generator and `--init-noise`.
//!
//! Output (`--out GEN`): `images/KEY.png`, `generated.parquet` (key, image as an HF image
//! struct, prompt, seed, adapters, scheduler, steps, guidance) and `generate.json` (the run's
//! settings). With `--save-pixels`, `pixels/KEY.npy` (float32 `[3, H, W]` in [0, 1], before
//! 8-bit rounding) and `noise/KEY.npy` (the initial latents) for parity checks. Every file
//! is written to a temporary name and renamed.

pub mod cli;
pub mod noise;
pub mod pipeline;
pub mod scheduler;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::runtime::RuntimeOptions;
pub use pipeline::{
    Adapter, BindCount, Condition, Generated, Inpaint, OrtTime, Pipeline, SampleParams,
};
pub use scheduler::SchedulerKind;

/// `--adapter NAME=DIR[:ω]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterArg {
    pub name: String,
    pub dir: PathBuf,
    pub weight: Option<f32>,
}

impl AdapterArg {
    pub fn parse(s: &str) -> Result<AdapterArg> {
        let (name, rest) = s.split_once('=').with_context(|| {
            format!("--adapter {s:?}: expected NAME=DIR[:WEIGHT], e.g. depth=ckpt/depth:1.0")
        })?;
        if name.is_empty() || rest.is_empty() {
            bail!("--adapter {s:?}: expected NAME=DIR[:WEIGHT], e.g. depth=ckpt/depth:1.0");
        }
        let (dir, weight) = match rest.rsplit_once(':') {
            Some((d, w)) if !d.is_empty() && w.parse::<f32>().is_ok() => {
                (d, Some(w.parse::<f32>().unwrap_or(1.0)))
            }
            _ => (rest, None),
        };
        if let Some(w) = weight {
            if !w.is_finite() {
                bail!("--adapter {s:?}: the weight must be a finite number");
            }
        }
        Ok(AdapterArg {
            name: name.to_string(),
            dir: PathBuf::from(dir),
            weight,
        })
    }
}

/// Everything `prep generate` needs (the CLI and `prep eval run` build one).
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub pipeline: PathBuf,
    pub adapters: Vec<AdapterArg>,
    /// A prep-built dataset directory (`data/part-*.parquet`) or one Parquet file.
    pub input: PathBuf,
    /// `--condition COLUMN` (every adapter) or `NAME=COLUMN` (one adapter); default: the
    /// adapter.toml's `condition`.
    pub conditions: Vec<String>,
    pub steps: usize,
    pub guidance: f32,
    pub seed: u64,
    pub scheduler: SchedulerKind,
    pub adapter_conditioning_factor: f32,
    pub init_noise: Option<PathBuf>,
    /// Inpainting: a mask per row (white = regenerate), from a dataset image column of
    /// this name, or from `DIR/KEY.png` when it names a directory; the source image is the
    /// dataset's `image` column.
    pub mask: Option<String>,
    pub out: PathBuf,
    pub limit: Option<usize>,
    /// Image size when no adapter gives one (default 512).
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub save_pixels: bool,
    pub progress: bool,
    pub runtime: RuntimeOptions,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct GenerateSummary {
    pub images: usize,
    /// Adapter network runs, per adapter (equals `images` for ω ≠ 0).
    pub adapter_calls: Vec<(String, usize)>,
    pub wall: Duration,
    /// Time in the sampling loop (per image: text, adapters, steps, VAE), and within it
    /// the time inside ONNX Runtime.
    pub generate: Duration,
    pub ort: OrtTime,
    /// Inputs bound to the UNet (once per image vs per step).
    pub binds: BindCount,
    /// PNG encoding (part of `generate`, outside ONNX Runtime).
    pub png: Duration,
    pub steps_per_image: usize,
    pub out: PathBuf,
}

/// One input row.
struct InputRow {
    key: String,
    text: String,
    conditions: Vec<Option<Vec<u8>>>,
}

fn input_files(input: &Path) -> Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    let data = input.join("data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .with_context(|| {
            format!(
                "--input {}: not a Parquet file and has no data/ directory; give a `prep build` output",
                input.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "--input {}: data/ holds no part-*.parquet shards",
            input.display()
        );
    }
    Ok(files)
}

/// Streams key, text and the condition columns (image structs) in dataset order, one
/// record batch (64 rows) at a time.
struct RowReader {
    files: Vec<PathBuf>,
    next_file: usize,
    reader: Option<(
        PathBuf,
        parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    )>,
    pending: std::collections::VecDeque<InputRow>,
    columns: Vec<String>,
    limit: Option<usize>,
    produced: usize,
    /// Rows that will be produced (file metadata, capped by the limit).
    total: usize,
}

impl RowReader {
    fn open(input: &Path, columns: &[String], limit: Option<usize>) -> Result<RowReader> {
        let files = input_files(input)?;
        let mut total = 0usize;
        for f in &files {
            let file = File::open(f).with_context(|| format!("cannot open {}", f.display()))?;
            let b = ParquetRecordBatchReaderBuilder::try_new(file)
                .with_context(|| format!("{} is not a Parquet file", f.display()))?;
            total += b.metadata().file_metadata().num_rows().max(0) as usize;
        }
        Ok(RowReader {
            files,
            next_file: 0,
            reader: None,
            pending: Default::default(),
            columns: columns.to_vec(),
            limit,
            produced: 0,
            total: limit.map_or(total, |l| total.min(l)),
        })
    }

    fn next_row(&mut self) -> Result<Option<InputRow>> {
        loop {
            if self.limit.is_some_and(|l| self.produced >= l) {
                return Ok(None);
            }
            if let Some(r) = self.pending.pop_front() {
                self.produced += 1;
                return Ok(Some(r));
            }
            if let Some((f, reader)) = &mut self.reader {
                match reader.next() {
                    Some(batch) => {
                        let batch =
                            batch.with_context(|| format!("cannot read {}", f.display()))?;
                        let start = self.produced;
                        self.pending = batch_rows(f, &batch, &self.columns, start)?.into();
                        continue;
                    }
                    None => self.reader = None,
                }
            }
            let Some(f) = self.files.get(self.next_file).cloned() else {
                return Ok(None);
            };
            self.next_file += 1;
            let file = File::open(&f).with_context(|| format!("cannot open {}", f.display()))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .with_context(|| format!("{} is not a Parquet file", f.display()))?
                .with_batch_size(64)
                .build()?;
            self.reader = Some((f, reader));
        }
    }
}

fn batch_rows(
    f: &Path,
    batch: &RecordBatch,
    columns: &[String],
    start: usize,
) -> Result<Vec<InputRow>> {
    let col = |name: &str| {
        batch.column_by_name(name).with_context(|| {
            format!(
                "{}: no column {name:?} (columns: {}); pick the condition with --condition",
                f.display(),
                batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|x| x.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    };
    let key = col("key")?
        .as_string_opt::<i32>()
        .context("column key is not a string")?;
    let text = col("text")?
        .as_string_opt::<i32>()
        .context("column text is not a string")?;
    let mut conds = Vec::new();
    for c in columns {
        let s = col(c)?
            .as_struct_opt()
            .with_context(|| format!("{}: column {c:?} is not an image struct", f.display()))?;
        let bytes = s
            .column_by_name("bytes")
            .with_context(|| format!("{}: image column {c:?} has no bytes", f.display()))?
            .as_binary_opt::<i32>()
            .with_context(|| format!("{}: {c}.bytes is not binary", f.display()))?
            .clone();
        conds.push(bytes);
    }
    Ok((0..batch.num_rows())
        .map(|i| InputRow {
            key: if key.is_null(i) {
                format!("row{}", start + i)
            } else {
                key.value(i).to_string()
            },
            text: if text.is_null(i) {
                String::new()
            } else {
                text.value(i).to_string()
            },
            conditions: conds
                .iter()
                .map(|b| (!b.is_null(i)).then(|| b.value(i).to_vec()))
                .collect(),
        })
        .collect())
}

fn image_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]))
}

/// The output Parquet's schema (HF `datasets` metadata: `image` is an Image feature).
pub fn output_schema() -> Schema {
    let fields = vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("image", image_type(), true),
        Field::new("prompt", DataType::Utf8, false),
        Field::new("seed", DataType::Int64, true),
        Field::new("adapters", DataType::Utf8, false),
        Field::new("scheduler", DataType::Utf8, false),
        Field::new("steps", DataType::Int32, false),
        Field::new("guidance", DataType::Float32, false),
    ];
    let value = |d: &str| serde_json::json!({"dtype": d, "_type": "Value"});
    let features = serde_json::json!({
        "key": value("string"), "image": {"_type": "Image"}, "prompt": value("string"),
        "seed": value("int64"), "adapters": value("string"), "scheduler": value("string"),
        "steps": value("int32"), "guidance": value("float32"),
    });
    let mut md = std::collections::HashMap::new();
    md.insert(
        "huggingface".to_string(),
        serde_json::json!({"info": {"features": features}}).to_string(),
    );
    Schema::new(fields).with_metadata(md)
}

struct OutRow {
    key: String,
    png: Vec<u8>,
    prompt: String,
    seed: Option<u64>,
}

/// The output Parquet, streamed: rows are written in row groups of [`ROW_GROUP`] to a
/// temporary file that `finish` renames into place.
struct OutWriter {
    store: crate::sink::store::LocalStore,
    tmp: PathBuf,
    writer: parquet::arrow::ArrowWriter<File>,
    pending: Vec<OutRow>,
    adapters: String,
    scheduler: &'static str,
    steps: i32,
    guidance: f32,
}

const ROW_GROUP: usize = 16;
const OUT_PARQUET: &str = "generated.parquet";

impl OutWriter {
    fn create(out: &Path, adapters: String, cfg: &GenerateConfig) -> Result<OutWriter> {
        let store = crate::sink::store::LocalStore::new(out);
        store.clear_stale_temps(OUT_PARQUET);
        let tmp = store.temp_path(OUT_PARQUET);
        let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let props = parquet::file::properties::WriterProperties::builder()
            .set_created_by(concat!("prep ", env!("CARGO_PKG_VERSION")).to_string())
            .set_max_row_group_row_count(Some(ROW_GROUP))
            .build();
        let writer =
            parquet::arrow::ArrowWriter::try_new(f, Arc::new(output_schema()), Some(props))?;
        Ok(OutWriter {
            store,
            tmp,
            writer,
            pending: Vec::new(),
            adapters,
            scheduler: cfg.scheduler.name(),
            steps: cfg.steps as i32,
            guidance: cfg.guidance,
        })
    }

    fn push(&mut self, row: OutRow) -> Result<()> {
        self.pending.push(row);
        if self.pending.len() >= ROW_GROUP {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        use arrow_array::builder::{
            BinaryBuilder, Float32Builder, Int32Builder, Int64Builder, StringBuilder,
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut key = StringBuilder::new();
        let mut bytes = BinaryBuilder::new();
        let mut pathb = StringBuilder::new();
        let mut prompt = StringBuilder::new();
        let mut seed = Int64Builder::new();
        let mut ad = StringBuilder::new();
        let mut sch = StringBuilder::new();
        let mut steps = Int32Builder::new();
        let mut g = Float32Builder::new();
        for r in self.pending.drain(..) {
            key.append_value(&r.key);
            bytes.append_value(&r.png);
            pathb.append_value(format!("images/{}.png", file_stem(&r.key)));
            prompt.append_value(&r.prompt);
            seed.append_option(r.seed.map(|s| s as i64));
            ad.append_value(&self.adapters);
            sch.append_value(self.scheduler);
            steps.append_value(self.steps);
            g.append_value(self.guidance);
        }
        let DataType::Struct(fields) = image_type() else {
            unreachable!("image_type is a struct")
        };
        let img = StructArray::new(
            fields,
            vec![
                Arc::new(bytes.finish()) as ArrayRef,
                Arc::new(pathb.finish()),
            ],
            None,
        );
        let cols: Vec<ArrayRef> = vec![
            Arc::new(key.finish()),
            Arc::new(img),
            Arc::new(prompt.finish()),
            Arc::new(seed.finish()),
            Arc::new(ad.finish()),
            Arc::new(sch.finish()),
            Arc::new(steps.finish()),
            Arc::new(g.finish()),
        ];
        let batch = RecordBatch::try_new(Arc::new(output_schema()), cols)?;
        self.writer
            .write(&batch)
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.writer
            .close()
            .with_context(|| format!("cannot finish {}", self.tmp.display()))?;
        self.store.commit_file(&self.tmp, OUT_PARQUET)
    }
}

/// Per-image files are committed (temp + fsync + rename) on a thread of their own, so the
/// next image's sampling does not wait for the disk; at most 8 files are in flight.
struct FileWriter {
    tx: Option<crossbeam_channel::Sender<(String, Vec<u8>)>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl FileWriter {
    fn start(out: &Path) -> FileWriter {
        let (tx, rx) = crossbeam_channel::bounded::<(String, Vec<u8>)>(8);
        let store = crate::sink::store::LocalStore::new(out);
        let thread = std::thread::spawn(move || -> Result<()> {
            for (rel, bytes) in rx {
                store.put_atomic(&rel, &bytes)?;
            }
            Ok(())
        });
        FileWriter {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn send(&mut self, rel: String, bytes: Vec<u8>) -> Result<()> {
        let sent = self.tx.as_ref().map(|tx| tx.send((rel, bytes)).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The thread stopped: report its error.
        self.finish()?;
        bail!("the file writer stopped")
    }

    fn finish(&mut self) -> Result<()> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the file writer thread panicked"))?,
            None => Ok(()),
        }
    }
}

fn npy_bytes(data: &[f32], shape: &[usize]) -> Result<Vec<u8>> {
    let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), data.to_vec())?;
    let mut buf = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(&arr, &mut buf)?;
    Ok(buf)
}

/// Keys become file names: keep `[A-Za-z0-9._-]`, replace the rest.
fn file_stem(key: &str) -> String {
    let s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Run `prep generate`.
pub fn run(cfg: &GenerateConfig) -> Result<GenerateSummary> {
    let t_start = Instant::now();
    if cfg.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if !(0.0..=1.0).contains(&cfg.adapter_conditioning_factor) {
        bail!("--adapter-conditioning-factor must be in [0, 1]");
    }
    // Open and check everything before writing anything.
    let mut pipe = Pipeline::open(&cfg.pipeline, &cfg.runtime)?;
    let mut adapters = Vec::new();
    for a in &cfg.adapters {
        adapters.push(Adapter::open(&a.name, &a.dir, a.weight, &cfg.runtime)?);
    }
    for c in &cfg.conditions {
        match c.split_once('=') {
            Some((name, col)) => {
                let a = adapters
                    .iter_mut()
                    .find(|a| a.name == name)
                    .with_context(|| format!("--condition {c}: no --adapter named {name:?}"))?;
                a.column = col.to_string();
            }
            None => adapters.iter_mut().for_each(|a| a.column = c.clone()),
        }
    }
    let mut columns: Vec<String> = adapters.iter().map(|a| a.column.clone()).collect();
    let mask_dir = cfg.mask.as_ref().map(PathBuf::from).filter(|p| p.is_dir());
    if let Some(m) = &cfg.mask {
        columns.push("image".into());
        if mask_dir.is_none() {
            columns.push(m.clone());
        }
    }
    let mut rows = RowReader::open(&cfg.input, &columns, cfg.limit)?;
    // The first row is read before anything is written: missing columns fail here.
    let mut next = rows.next_row()?;
    if next.is_none() {
        bail!("--input {}: no rows", cfg.input.display());
    }
    let init_noise = match &cfg.init_noise {
        Some(p) => Some(noise::read_init_noise(p)?),
        None => None,
    };
    // Sampler settings are checked here too (unsupported config keys, step counts).
    scheduler::Scheduler::new(cfg.scheduler, &pipe.scheduler_config, cfg.steps)?;
    let params = SampleParams {
        scheduler: cfg.scheduler,
        steps: cfg.steps,
        guidance: cfg.guidance,
        adapter_conditioning_factor: cfg.adapter_conditioning_factor,
    };
    let adapters_json = serde_json::to_string(
        &adapters
            .iter()
            .map(|a| {
                serde_json::json!({"name": a.name, "weight": a.weight, "checkpoint": a.dir.display().to_string(),
                                   "condition": a.column})
            })
            .collect::<Vec<_>>(),
    )?;

    let out = &cfg.out;
    std::fs::create_dir_all(out.join("images"))
        .with_context(|| format!("cannot create {}", out.display()))?;
    if cfg.save_pixels {
        std::fs::create_dir_all(out.join("pixels"))?;
        std::fs::create_dir_all(out.join("noise"))?;
    }
    let mp = indicatif::MultiProgress::new();
    if !cfg.progress {
        mp.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let bar_images = mp.add(indicatif::ProgressBar::new(rows.total as u64));
    bar_images.set_style(
        indicatif::ProgressStyle::with_template("images {bar:30} {pos}/{len} {elapsed} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let bar_steps = mp.add(indicatif::ProgressBar::new(cfg.steps as u64));
    bar_steps.set_style(
        indicatif::ProgressStyle::with_template("steps  {bar:30} {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );

    let mut writer = OutWriter::create(out, adapters_json, cfg)?;
    let mut files = FileWriter::start(out);
    let mut images = 0usize;
    let mut generate_time = Duration::ZERO;
    let mut png_time = Duration::ZERO;
    let mut i = 0usize;
    while let Some(row) = next.take() {
        let t0 = Instant::now();
        let mut conds = Vec::new();
        for (a, bytes) in adapters.iter().zip(&row.conditions) {
            let b = bytes.as_ref().with_context(|| {
                format!(
                    "--input row {i} (key {}): condition {:?} is empty",
                    row.key, a.column
                )
            })?;
            conds.push(Condition::decode(b, a.meta.in_channels).with_context(|| {
                format!("--input row {i} (key {}): column {:?}", row.key, a.column)
            })?);
        }
        let inpaint = match &cfg.mask {
            None => None,
            Some(m) => {
                let na = adapters.len();
                let image = row.conditions[na]
                    .as_ref()
                    .with_context(|| format!("--mask: row {i} (key {}) has no image", row.key))?;
                let mask_bytes = match &mask_dir {
                    Some(d) => {
                        let p = d.join(format!("{}.png", file_stem(&row.key)));
                        std::fs::read(&p).with_context(|| {
                            format!(
                                "--mask {m}: cannot read {} for key {}",
                                p.display(),
                                row.key
                            )
                        })?
                    }
                    None => row.conditions[na + 1].clone().with_context(|| {
                        format!("--mask {m}: row {i} (key {}) has no mask", row.key)
                    })?,
                };
                Some(
                    Inpaint::decode(image, &mask_bytes)
                        .with_context(|| format!("--mask {m}: row {i} (key {})", row.key))?,
                )
            }
        };
        let (h, w) = match (conds.first(), &inpaint) {
            (Some(c), _) => (c.height, c.width),
            (None, Some(ip)) => (ip.height, ip.width),
            (None, None) => (cfg.height.unwrap_or(512), cfg.width.unwrap_or(512)),
        };
        if let Some(c) = conds.iter().find(|c| (c.height, c.width) != (h, w)) {
            bail!(
                "row {} (key {}): conditions differ in size ({}x{} vs {}x{}); all adapters need the same size",
                i, row.key, c.width, c.height, w, h
            );
        }
        if h % pipe.vae_scale != 0 || w % pipe.vae_scale != 0 {
            bail!(
                "row {} (key {}): image size {w}x{h} is not a multiple of {}; build the dataset at such a --resolution",
                i, row.key, pipe.vae_scale
            );
        }
        let shape = [
            1,
            pipe.latent_channels,
            h / pipe.vae_scale,
            w / pipe.vae_scale,
        ];
        let (noise_v, seed) = match &init_noise {
            Some(n) => (n.for_row(i, &shape)?, None),
            None => {
                let s = cfg.seed.wrapping_add(i as u64);
                (noise::gaussian(s, shape.iter().product()), Some(s))
            }
        };
        bar_steps.reset();
        let img = pipe.generate(
            &row.text,
            &mut adapters,
            &conds,
            &noise_v,
            h,
            w,
            &params,
            inpaint.as_ref(),
            &mut |s| bar_steps.set_position(s as u64),
        )?;
        let stem = file_stem(&row.key);
        let t_png = Instant::now();
        let png = img.png()?;
        png_time += t_png.elapsed();
        files.send(format!("images/{stem}.png"), png.clone())?;
        if cfg.save_pixels {
            files.send(
                format!("pixels/{stem}.npy"),
                npy_bytes(&img.pixels, &[3, h, w])?,
            )?;
            files.send(format!("noise/{stem}.npy"), npy_bytes(&noise_v, &shape)?)?;
        }
        writer.push(OutRow {
            key: row.key.clone(),
            png,
            prompt: row.text.clone(),
            seed,
        })?;
        images += 1;
        generate_time += t0.elapsed();
        bar_images.inc(1);
        i += 1;
        next = rows.next_row()?;
    }
    bar_steps.finish_and_clear();
    bar_images.finish_and_clear();
    files.finish()?;
    writer.finish()?;
    let manifest = serde_json::json!({
        "pipeline": cfg.pipeline.display().to_string(),
        "adapters": adapters.iter().map(|a| serde_json::json!({
            "name": a.name, "dir": a.dir.display().to_string(), "weight": a.weight,
            "condition": a.column, "in_channels": a.meta.in_channels})).collect::<Vec<_>>(),
        "input": cfg.input.display().to_string(),
        "scheduler": cfg.scheduler.name(),
        "steps": cfg.steps,
        "guidance": cfg.guidance,
        "adapter_conditioning_factor": cfg.adapter_conditioning_factor,
        "seed": cfg.seed,
        "init_noise": cfg.init_noise.as_ref().map(|p| p.display().to_string()),
        "mask": cfg.mask,
        "noise": noise::DESCRIPTION,
        "images": images,
    });
    crate::sink::store::LocalStore::new(out).put_atomic(
        "generate.json",
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    Ok(GenerateSummary {
        images,
        adapter_calls: adapters.iter().map(|a| (a.name.clone(), a.calls)).collect(),
        wall: t_start.elapsed(),
        generate: generate_time,
        ort: pipe.ort,
        binds: pipe.binds,
        png: png_time,
        steps_per_image: cfg.steps,
        out: out.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_args() {
        let a = AdapterArg::parse("depth=ckpt/d:0.5").unwrap();
        assert_eq!(
            (a.name.as_str(), a.dir.as_path(), a.weight),
            ("depth", Path::new("ckpt/d"), Some(0.5))
        );
        let a = AdapterArg::parse("x=/a/b").unwrap();
        assert_eq!(a.weight, None);
        let a = AdapterArg::parse("x=C:/dir:2").unwrap();
        assert_eq!(
            (a.dir.as_path(), a.weight),
            (Path::new("C:/dir"), Some(2.0))
        );
        assert!(AdapterArg::parse("nodir")
            .unwrap_err()
            .to_string()
            .contains("NAME=DIR"));
        assert!(AdapterArg::parse("x=").is_err());
    }

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(file_stem("000123"), "000123");
        assert_eq!(file_stem("a/b c"), "a_b_c");
        assert_eq!(file_stem("../x"), "_.._x");
    }
}
