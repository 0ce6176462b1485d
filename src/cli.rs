//! Command-line definitions (clap derive). This layer only parses flags into plain
//! structs; the work lives in `pipeline`, `inspect` and the stage modules.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::config::{ImageFormat, KeyposeFrom, ResizeMode, SourceKind};

const ABOUT: &str = "Turn public image datasets into training data for controllable diffusion \
adapters (T2I-Adapter style): images, captions and condition maps in Parquet shards that \
HF `datasets` and diffusers' trainers load directly.";

const MODELS_EXAMPLES: &str = "\
Examples:
  prep models list
  prep models add depth-standin --file depth.onnx --like depth
  prep models verify
  prep build --source demo --condition hed,sketch --model sketch=hed \\
      --model-file hed=../shared/models/hed_bsds500.onnx --out out/edges";

const EVAL_EXAMPLES: &str = "\
Examples:
  prep eval stats --features real.npy --out real.npz
  prep eval fid --real real.npz --gen gen.npy --json
  prep eval metrics --real real.npy --gen gen.npy --metrics fid,kid,prdc,fid-inf --json
  prep eval run --config pipelines/eval-example.toml";

const MAIN_EXAMPLES: &str = "\
Examples:
  # The bundled demo data, offline:
  prep build --source demo --condition color,keypose,seg,canny --out out/demo
  prep inspect out/demo --grid out/demo-grid.png

  # COCO 2017 with ground-truth keypoints and COCO-Stuff maps:
  prep build --source coco --input /data/coco --split val2017 \\
      --condition color,keypose,seg --image-format png --out out/coco-val

  # Download LAION-style metadata's images (SSRF-guarded, resumable), then score:
  prep fetch --source laion --input meta.parquet --out out/laion --resolution 512
  prep eval fid --real real.npz --gen gen.npy --json
";

#[derive(Debug, Parser)]
#[command(name = "prep", version, about = ABOUT, after_help = MAIN_EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per process; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Build a dataset: source -> decode -> preprocess -> conditions -> Parquet shards.
    #[command(after_help = BUILD_EXAMPLES)]
    Build(BuildCommand),
    /// Download only: images + metadata to Parquet, every input row in status/.
    #[command(after_help = FETCH_EXAMPLES)]
    Fetch(FetchCommand),
    /// Summarise a built dataset; optionally write a contact sheet of a few rows.
    #[command(after_help = INSPECT_EXAMPLES)]
    Inspect(InspectArgs),
    /// Model registry and cache: list, fetch, verify, add; `bench` times a model alone.
    #[command(after_help = MODELS_EXAMPLES)]
    Models(crate::models_cmd::ModelsArgs),
    /// Shards of an output across all workers: done / claimed / failed / pending, rows,
    /// failure classes, throughput per worker.
    Status(StatusArgs),
    /// Once every shard is done: merge the stats and write dataset.json (idempotent).
    Finalize(FinalizeArgs),
    /// Evaluate generated images: statistics, FID, KID, CMMD, CLIP score, PRDC, FID∞.
    #[command(subcommand, after_help = EVAL_EXAMPLES)]
    Eval(EvalCommand),
    /// Generate images with Stable Diffusion + T2I-Adapters (ONNX) over a built dataset.
    #[command(after_help = crate::generate::cli::EXAMPLES)]
    Generate(crate::generate::cli::GenerateArgs),
    /// Nested, seeded training subsets + a disjoint validation split of a built dataset
    /// (index files only, no data copied).
    Subset(crate::subset::SubsetArgs),
    /// The study's nightly report: static index.html (inline SVG) + metrics.csv/json.
    Report(crate::report::ReportArgs),
}

const BUILD_EXAMPLES: &str = "\
Examples:
  prep build --source demo --condition color,keypose,seg,canny --out out/demo
  prep build --source coco --input /data/coco --split val2017 \\
      --condition color,keypose,seg --resolution 512 --image-format png --out out/coco-val
  prep build --source folder --input ./photos --condition canny,color --out out/photos
  prep build --source laion --input laion-aesthetics.parquet --min-aesthetic 6 \\
      --max-punsafe 0.5 --max-pwatermark 0.8 --condition color --out out/laion
  prep build --config pipelines/coco-val.toml --shard 0/4     # one of four machines
  prep build --config pipelines/coco-val.toml --dry-run       # print the plan only

Re-running a command skips shards that are already complete; an interrupted run
resumes where it stopped.";

const FETCH_EXAMPLES: &str = "\
Examples:
  prep fetch --source laion --input laion-aesthetics.parquet --out out/laion \\
      --resolution 256 --timeout 10 --retries 2 --min-aesthetic 6
  prep fetch --source coco --input /data/coco --split val2017 --out out/coco-val   # from coco_url
  prep fetch --retry-failed out/laion --errors timeout,http_5xx,dns

The SSRF guard refuses loopback, private, link-local and other non-public addresses;
open a range with --allow-network CIDR. X-Robots-Tag noai/noimageai/noindex/noimageindex
is honoured (--opt-out-directives to change).";

const INSPECT_EXAMPLES: &str = "\
Examples:
  prep inspect out/demo
  prep inspect out/demo --grid grid.png --rows 4";

#[derive(Debug, Args)]
pub struct BuildCommand {
    #[command(flatten)]
    pub args: BuildArgs,

    /// Read settings from a pipeline TOML file (keys as the long flags, with `_` or `-`);
    /// flags given on the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Output directory (data/, stats/, dataset.json), or an object store:
    /// s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX (credentials from
    /// each cloud's standard environment variables / metadata service).
    #[arg(long, value_name = "DIR|URL")]
    pub out: Option<PathBuf>,

    /// Which shards this process builds: I/N (index ≡ I mod N); env/N (I from
    /// SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX); auto (claim shards through leases
    /// until none is left, for any number of workers).
    #[arg(long, value_name = "I/N|env/N|auto")]
    pub shard: Option<String>,

    /// Lease of a claimed shard (renewed every third of it); a worker silent for this
    /// long loses its shards to others [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub lease: Option<humantime::Duration>,

    #[command(flatten)]
    pub store: StoreArgs,

    /// Worker threads for decoding, conditions and encoding (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Print the plan (source, shards, columns, what is already done) and exit.
    #[arg(long)]
    pub dry_run: bool,

    /// No progress bar (also off when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,

    /// Use this ONNX file for a model (NAME a model or a condition); it must still match
    /// the entry's pinned sha256. Repeatable.
    #[arg(long, value_name = "NAME=PATH")]
    pub model_file: Vec<String>,

    /// Images per inference call of the model-backed conditions [default: 1 on CPU, 4 with
    /// --device cuda].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Where models run.
    #[arg(long, value_enum, default_value_t = crate::runtime::Device::Cpu)]
    pub device: crate::runtime::Device,
}

/// Settings that shape the output. Also the schema of `pipelines/*.toml`.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BuildArgs {
    /// Where records come from.
    #[arg(long, value_enum)]
    pub source: Option<SourceKind>,

    /// COCO root, image folder, or LAION metadata file (not for --source demo).
    #[arg(long, value_name = "PATH")]
    pub input: Option<PathBuf>,

    /// COCO split [default: train2017; demo for --source demo].
    #[arg(long)]
    pub split: Option<String>,

    /// Conditions to compute, comma separated: color, keypose, seg, canny, and the
    /// model-backed sketch, hed, depth (see `prep models list`).
    #[arg(long, value_name = "LIST")]
    #[serde(deserialize_with = "string_or_list")]
    pub condition: Option<String>,

    /// Output side length in pixels [default: 512].
    #[arg(long, value_name = "PX")]
    pub resolution: Option<u32>,

    /// How images are fitted to the resolution [default: center-crop].
    #[arg(long, value_enum)]
    pub resize_mode: Option<ResizeMode>,

    /// Encoding of the `image` column; condition maps are always PNG [default: jpeg].
    #[arg(long, value_enum)]
    pub image_format: Option<ImageFormat>,
    /// How rows are stored: HF-loadable Parquet, or WebDataset tar shards [default: parquet].
    #[arg(long, value_enum)]
    pub output_format: Option<crate::sink::OutputFormat>,

    /// JPEG quality [default: 95].
    #[arg(long, value_name = "Q")]
    pub jpeg_quality: Option<u8>,

    /// Draw at most this many persons per image for keypose [default: all].
    #[arg(long, value_name = "N")]
    pub max_persons: Option<usize>,

    /// Keypoints from ground truth or from a pose model [default: gt].
    #[arg(long, value_enum)]
    pub keypose_from: Option<KeyposeFrom>,

    /// The model computing a condition, e.g. --model depth=midas-dpt-hybrid. Repeatable.
    #[arg(long, value_name = "CONDITION=NAME")]
    pub model: Option<Vec<String>>,

    /// sketch: edge probability above this becomes white [default: 0.5].
    #[arg(long, value_name = "T")]
    pub sketch_threshold: Option<f32>,

    /// Records per shard [default: 1000].
    #[arg(long, value_name = "N")]
    pub shard_size: Option<usize>,

    /// Use only the first N records of the source.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,

    /// LAION: column holding the image URL [default: URL].
    #[arg(long, value_name = "NAME")]
    pub url_col: Option<String>,

    /// LAION: column holding the caption [default: TEXT].
    #[arg(long, value_name = "NAME")]
    pub caption_col: Option<String>,

    /// LAION: keep rows with aesthetic score >= X.
    #[arg(long, value_name = "X")]
    pub min_aesthetic: Option<f64>,

    /// LAION: keep rows with punsafe <= X.
    #[arg(long, value_name = "X")]
    pub max_punsafe: Option<f64>,

    /// LAION: keep rows with pwatermark <= X.
    #[arg(long, value_name = "X")]
    pub max_pwatermark: Option<f64>,

    /// Keep images whose original width and height are both >= PX.
    #[arg(long, value_name = "PX")]
    pub min_size: Option<u32>,

    /// Refuse images with more pixels than this before decoding [default: 89478485].
    #[arg(long, value_name = "N")]
    pub max_pixels: Option<u64>,

    /// Refuse images whose longer/shorter side ratio is above X (original size).
    #[arg(long, value_name = "X")]
    pub max_aspect_ratio: Option<f64>,

    /// Refuse images with more than N pixels of original area.
    #[arg(long, value_name = "N")]
    pub max_area: Option<u64>,

    /// LAION: verify the sha256 of each image's bytes against this column (hex).
    #[arg(long, value_name = "COL")]
    pub verify_hash: Option<String>,
    /// Decode large JPEGs at 1/2, 1/4 or 1/8 size (DCT-domain scaling) before the exact
    /// resize, when the short side stays >= the resolution [default: true for fetch,
    /// false for build].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub jpeg_dct_scaling: Option<bool>,

    /// Drop images whose bytes (sha256) repeat an earlier row's within the run.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub dedup: Option<bool>,

    /// HTTP: connect, read-idle and per-attempt timeout in seconds [default: 10].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,

    /// HTTP: retries for connect errors, timeouts, 5xx, 429/503 [default: 2].
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// HTTP: largest body read, in bytes; reading stops there [default: 33554432].
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,

    /// HTTP: downloads in flight [default: 128].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,

    /// HTTP: downloads in flight per host [default: 16].
    #[arg(long, value_name = "N")]
    pub per_host_concurrency: Option<usize>,

    /// HTTP: open a CIDR range that the SSRF guard refuses by default (repeatable),
    /// e.g. --allow-network 10.0.0.0/8.
    #[arg(long, value_name = "CIDR")]
    pub allow_network: Option<Vec<String>>,

    /// HTTP: X-Robots-Tag directives honoured as opt-out, comma separated; "" honours
    /// none [default: noai,noimageai,noindex,noimageindex].
    #[arg(long, value_name = "LIST")]
    pub opt_out_directives: Option<String>,

    /// HTTP: a token appended to prep's User-Agent (e.g. your project's contact URL).
    #[arg(long, value_name = "TOKEN")]
    pub user_agent_token: Option<String>,
}

/// `condition = "a,b"` and `condition = ["a", "b"]` are both accepted in TOML.
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        None => None,
        Some(Either::One(s)) => Some(s),
        Some(Either::Many(v)) => Some(v.join(",")),
    })
}

/// A pipeline file: the build settings plus where the output goes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PipelineFile {
    #[serde(default)]
    out: Option<PathBuf>,
    #[serde(flatten)]
    build: BuildArgs,
}

impl BuildCommand {
    /// Merge the `--config` file under the command-line flags. Returns the merged settings
    /// and the output directory.
    pub fn merged(&self) -> Result<(BuildArgs, PathBuf)> {
        let file = match &self.config {
            None => PipelineFile::default(),
            Some(path) => {
                crate::eval::objstore::refuse_url("prep build", "--config", path)?;
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read pipeline file {}", path.display()))?;
                let mut file: PipelineFile = toml::from_str(&normalise_keys(&text)).with_context(|| {
                    format!(
                        "{} is not a valid pipeline file (keys are the long flags of `prep build`, e.g. source = \"coco\")",
                        path.display()
                    )
                })?;
                // Relative paths in a pipeline file are relative to the file itself.
                let base = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
                if let Some(i) = &file.build.input {
                    if i.is_relative() && !i.to_string_lossy().contains("://") {
                        file.build.input = Some(base.join(i));
                    }
                }
                if let Some(o) = &file.out {
                    if o.is_relative() && !o.to_string_lossy().contains("://") {
                        file.out = Some(base.join(o));
                    }
                }
                file
            }
        };
        let a = &self.args;
        let f = file.build;
        let merged = BuildArgs {
            source: a.source.or(f.source),
            input: a.input.clone().or(f.input),
            split: a.split.clone().or(f.split),
            condition: a.condition.clone().or(f.condition),
            resolution: a.resolution.or(f.resolution),
            resize_mode: a.resize_mode.or(f.resize_mode),
            image_format: a.image_format.or(f.image_format),
            output_format: a.output_format.or(f.output_format),
            jpeg_quality: a.jpeg_quality.or(f.jpeg_quality),
            max_persons: a.max_persons.or(f.max_persons),
            keypose_from: a.keypose_from.or(f.keypose_from),
            model: a.model.clone().or(f.model),
            sketch_threshold: a.sketch_threshold.or(f.sketch_threshold),
            shard_size: a.shard_size.or(f.shard_size),
            limit: a.limit.or(f.limit),
            url_col: a.url_col.clone().or(f.url_col),
            caption_col: a.caption_col.clone().or(f.caption_col),
            min_aesthetic: a.min_aesthetic.or(f.min_aesthetic),
            max_punsafe: a.max_punsafe.or(f.max_punsafe),
            max_pwatermark: a.max_pwatermark.or(f.max_pwatermark),
            min_size: a.min_size.or(f.min_size),
            max_pixels: a.max_pixels.or(f.max_pixels),
            max_aspect_ratio: a.max_aspect_ratio.or(f.max_aspect_ratio),
            max_area: a.max_area.or(f.max_area),
            verify_hash: a.verify_hash.clone().or(f.verify_hash),
            dedup: a.dedup.or(f.dedup),
            jpeg_dct_scaling: a.jpeg_dct_scaling.or(f.jpeg_dct_scaling),
            timeout: a.timeout.or(f.timeout),
            retries: a.retries.or(f.retries),
            max_bytes: a.max_bytes.or(f.max_bytes),
            concurrency: a.concurrency.or(f.concurrency),
            per_host_concurrency: a.per_host_concurrency.or(f.per_host_concurrency),
            allow_network: a.allow_network.clone().or(f.allow_network),
            opt_out_directives: a.opt_out_directives.clone().or(f.opt_out_directives),
            user_agent_token: a.user_agent_token.clone().or(f.user_agent_token),
        };
        let out = self
            .out
            .clone()
            .or(file.out)
            .context("no --out given: name the output directory, e.g. --out out/demo")?;
        Ok((merged, out))
    }
}

/// Turn `snake_case` keys at the start of TOML lines into `kebab-case` so both spellings work.
fn normalise_keys(text: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            match trimmed.split_once('=') {
                Some((key, rest)) if !trimmed.starts_with('#') && !key.contains('"') => {
                    let indent = &line[..line.len() - trimmed.len()];
                    format!("{indent}{}={rest}", key.replace('_', "-"))
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Args)]
pub struct FetchCommand {
    #[command(flatten)]
    pub build: BuildCommand,

    /// Re-try only the failed rows of an earlier run in DIR and merge them in.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "source", "input", "config"])]
    pub retry_failed: Option<PathBuf>,

    /// With --retry-failed: the failure classes to retry, comma separated
    /// [default: timeout,connect,dns,http_5xx,http_429,http_503,truncated].
    #[arg(long, value_name = "LIST", requires = "retry_failed")]
    pub errors: Option<String>,
}

/// How object-store outputs are reached.
#[derive(Debug, Args, Clone, Default)]
pub struct StoreArgs {
    /// An S3-compatible endpoint for s3:// outputs (MinIO, Ceph, R2...); plain http only
    /// on loopback.
    #[arg(long, value_name = "URL", env = "PREP_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Accept a store that cannot create objects conditionally. Only safe when a single
    /// worker writes the output.
    #[arg(long)]
    pub unsafe_no_conditional_put: bool,
}

impl StoreArgs {
    pub fn options(&self) -> crate::sink::remote::RemoteOptions {
        crate::sink::remote::RemoteOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            unsafe_no_conditional_put: self.unsafe_no_conditional_put,
        }
    }
}

/// How object-store inputs are reached (read only: no conditional-write flags).
#[derive(Debug, Args, Clone, Default)]
pub struct ReadStoreArgs {
    /// An S3-compatible endpoint for s3:// URLs (MinIO, Ceph, R2...); plain http only on
    /// loopback.
    #[arg(long, value_name = "URL", env = "PREP_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
}

impl ReadStoreArgs {
    pub fn options(&self) -> crate::sink::remote::RemoteOptions {
        crate::sink::remote::RemoteOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            unsafe_no_conditional_put: false,
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// An output of `prep build` (directory or s3://, gs://, az:// URL).
    pub out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// An output of `prep build` (directory or s3://, gs://, az:// URL).
    pub out: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// An output of `prep build` (directory or s3://, gs://, az:// URL).
    pub dir: PathBuf,
    #[command(flatten)]
    pub store: ReadStoreArgs,
    /// Write a contact sheet (image | conditions, one row per record) to this PNG.
    #[arg(long, value_name = "FILE.png")]
    pub grid: Option<PathBuf>,
    /// Records in the contact sheet.
    #[arg(long, default_value_t = 4)]
    pub rows: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

const EVAL_METRICS_EXAMPLES: &str = "\
Examples:
  prep eval metrics --real real.npy --gen gen.npy --metrics fid,kid,prdc,fid-inf --json
  prep eval metrics --real real.npy --gen gen.npy --metrics fid,cmmd,clip \\
      --real-clip real_clip.npy --gen-clip gen_clip.npy --gen-text prompts_clip.npy
  prep eval metrics --real real.npy --gen gen.npy --metrics fid,cmmd --ci-splits 5 --seed 1

Feature files are .npy arrays N × d (float32 or float64), one row per image.";

/// `prep eval …` subcommands.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Mean and covariance of a feature file, written as a .npz with `mu` and `sigma`
    /// (pytorch-fid / clean-fid format).
    Stats(EvalStatsArgs),
    /// Metrics between a real and a generated feature set.
    #[command(after_help = EVAL_METRICS_EXAMPLES)]
    Metrics(EvalMetricsArgs),
    /// FID between two statistics (.npz) or feature (.npy) files.
    Fid(EvalFidArgs),
    /// Score a list of entries against one reference set → metrics.json + metrics.csv.
    Run(EvalRunArgs),
    /// Extract features from images with a feature model.
    Features(EvalFeaturesArgs),
    /// CLIP text embeddings of prompts (for the CLIP score's --gen-text).
    Text(EvalTextArgs),
    /// Controllability: re-extract a condition from generated images and compare it with
    /// the input condition (depth RMSE, edge F1/SSIM/PSNR, seg mIoU, pose OKS AP).
    Control(EvalControlArgs),
}

#[derive(Debug, Args)]
pub struct EvalTextArgs {
    /// Prompts: a text file (one per line), or PARQUET|DIR[:COLUMN] (default column `text`,
    /// else `prompt`: a `prep build` or `prep generate` output).
    #[arg(long, value_name = "FILE|PARQUET[:COLUMN]")]
    pub prompts: PathBuf,
    /// Text model (e.g. clip-vit-l14-text, or one added --like clip-vit-l14-text).
    #[arg(long, value_name = "NAME")]
    pub model: String,
    /// Use this ONNX file for --model (still checked against the entry's sha256 pin).
    #[arg(long, value_name = "PATH")]
    pub model_file: Option<PathBuf>,
    /// CLIP tokenizer directory (vocab.json + merges.txt; default: beside the cached model).
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: crate::runtime::Device,
    /// Output .npy (N × d, float32); a local path or an s3://, gs://, az:// URL.
    #[arg(long, value_name = "T.npy")]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: ReadStoreArgs,
}

#[derive(Debug, Args)]
pub struct EvalControlArgs {
    /// Condition: depth, hed, sketch, canny, keypose or seg.
    #[arg(long)]
    pub condition: String,
    /// The `prep build` output the generation was conditioned on (a directory or an
    /// s3://, gs://, az:// URL).
    #[arg(long, value_name = "DIR|URL")]
    pub reference: PathBuf,
    /// Generated images (KEY.png, re-extracted with the reference's pipeline), a `prep build`
    /// output of them, or (seg) a directory of predicted label maps.
    #[arg(long, value_name = "DIR")]
    pub gen: PathBuf,
    /// keypose: the pose model for re-extraction (CONDITION=NAME), when the reference used
    /// ground truth.
    #[arg(long, value_name = "CONDITION=NAME")]
    pub model: Vec<String>,
    /// Use this file for a model (NAME=PATH), still checked against its sha256 pin.
    #[arg(long, value_name = "NAME=PATH")]
    pub model_file: Vec<String>,
    /// Edge maps are binarised at value ≥ this (0–255) for F1.
    #[arg(long, default_value_t = 128)]
    pub edge_threshold: u8,
    /// keypose from a model reference: keypoints scoring at least this count as labelled.
    #[arg(long, default_value_t = 0.3)]
    pub keypoint_threshold: f32,
    /// Keep the re-extracted conditions here, a local directory (default: a temporary
    /// directory, removed).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Per-sample values as CSV (key, value, ssim); a local path or an object-store URL.
    #[arg(long, value_name = "F.csv")]
    pub per_sample: Option<PathBuf>,
    /// For --reference, --gen and --per-sample on object stores.
    #[command(flatten)]
    pub store: ReadStoreArgs,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: crate::runtime::Device,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalStatsArgs {
    /// Feature file (.npy, N × d).
    #[arg(long, value_name = "F.npy")]
    pub features: Option<PathBuf>,
    /// Images: a directory, F.parquet[:COLUMN] or a `prep build` output[:COLUMN] (needs --model).
    #[arg(long, value_name = "DIR|PARQUET[:COLUMN]")]
    pub images: Option<PathBuf>,
    #[command(flatten)]
    pub fm: FeatureModelArgs,
    /// Output statistics file.
    #[arg(long, value_name = "S.npz")]
    pub out: PathBuf,
    /// Deflate the .npz entries (np.savez_compressed) instead of storing them (np.savez).
    #[arg(long)]
    pub compressed: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalMetricsArgs {
    /// Real (reference) features, .npy N × d, or images (DIR|PARQUET[:COLUMN], with --model).
    #[arg(long, value_name = "R.npy|DIR")]
    pub real: PathBuf,
    /// Generated features, .npy N × d, or images (DIR|PARQUET[:COLUMN], with --model).
    #[arg(long, value_name = "G.npy|DIR")]
    pub gen: PathBuf,
    /// Comma-separated: fid, kid, cmmd, prdc, clip, fid-inf.
    #[arg(long, value_name = "LIST", default_value = "fid")]
    pub metrics: String,
    #[command(flatten)]
    pub fm: FeatureModelArgs,
    /// CLIP image embeddings of the real set for cmmd (.npy, or images with --clip-model;
    /// default: --real, or --real's images through --clip-model).
    #[arg(long, value_name = "F.npy|DIR")]
    pub real_clip: Option<PathBuf>,
    /// CLIP image embeddings of the generated set for cmmd and clip (.npy, or images with
    /// --clip-model; default: --gen, or --gen's images through --clip-model).
    #[arg(long, value_name = "F.npy|DIR")]
    pub gen_clip: Option<PathBuf>,
    /// CLIP image model for image inputs of cmmd/clip (CMMD's is clip-vit-l14-336).
    #[arg(long, value_name = "NAME")]
    pub clip_model: Option<String>,
    /// CLIP text embeddings of the prompts, row i paired with generated image i (for clip).
    #[arg(long, value_name = "T.npy")]
    pub gen_text: Option<PathBuf>,
    /// Write the per-sample CLIP scores to this .npy (float64, N).
    #[arg(long, value_name = "OUT.npy")]
    pub clip_per_sample: Option<PathBuf>,
    /// Seed of every random draw (KID subsets, FID∞ subsets, CI splits).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// KID: number of subsets.
    #[arg(long, default_value_t = 100)]
    pub kid_subsets: usize,
    /// KID: largest subset size.
    #[arg(long, default_value_t = 1000)]
    pub kid_subset_size: usize,
    /// PRDC: nearest neighbours k.
    #[arg(long, default_value_t = 5)]
    pub prdc_k: usize,
    /// FID∞: number of subset sizes.
    #[arg(long, default_value_t = 15)]
    pub fid_inf_points: usize,
    /// Confidence intervals for FID/CMMD from this many disjoint splits of the generated set.
    #[arg(long, value_name = "K")]
    pub ci_splits: Option<usize>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalFidArgs {
    /// Reference: .npz statistics, .npy features, or images (DIR|PARQUET[:COLUMN], with --model).
    #[arg(long, value_name = "A.npz|A.npy|DIR")]
    pub real: PathBuf,
    /// Generated: .npz statistics, .npy features, or images (with --model).
    #[arg(long, value_name = "B.npz|B.npy|DIR")]
    pub gen: PathBuf,
    #[command(flatten)]
    pub fm: FeatureModelArgs,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalRunArgs {
    /// Evaluation config (pipelines/eval-*.toml).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Output directory or s3://, gs://, az:// prefix (overrides the config's `out`).
    #[arg(long, value_name = "DIR|URL")]
    pub out: Option<PathBuf>,
    /// Print the result rows as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Study configs ([study] table): the night these results belong to (default: today,
    /// UTC). Re-running a night replaces its rows in the history.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub night: Option<String>,
    /// Study configs: the feature cache, a directory or an s3://, gs://, az:// prefix
    /// (overrides `[study] feature_cache`) [default: $PREP_CACHE/features].
    #[arg(long, value_name = "DIR|URL", env = "PREP_FEATURE_CACHE")]
    pub feature_cache: Option<PathBuf>,
    /// For --out, the history and the feature cache on object stores.
    #[command(flatten)]
    pub store: ReadStoreArgs,
}

#[derive(Debug, Args)]
pub struct EvalFeaturesArgs {
    /// Images: a directory (sorted by name), F.parquet[:COLUMN] or a `prep build`
    /// output[:COLUMN] (default column `image`).
    #[arg(long, value_name = "DIR|PARQUET[:COLUMN]")]
    pub images: PathBuf,
    #[command(flatten)]
    pub fm: FeatureModelArgs,
    /// Output feature file (.npy, N × d, rows in image order).
    #[arg(long, value_name = "F.npy")]
    pub out: PathBuf,
    /// Element type of the .npy (pytorch-fid stores float64 activations).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: crate::eval::io::Dtype,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The feature model of `prep eval` commands that read images.
#[derive(Debug, Args, Clone)]
pub struct FeatureModelArgs {
    /// Feature model (a registry name: inception, clip-vit-l14, dinov2-vitl14, or one added
    /// with `prep models add NAME --file F.onnx --like inception`).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Use this ONNX file for --model (still checked against the entry's sha256 pin).
    #[arg(long, value_name = "PATH")]
    pub model_file: Option<PathBuf>,
    /// Input preprocessing: the model's own spec, pytorch-fid's (legacy) or clean-fid's (clean).
    #[arg(long, value_enum, default_value = "model")]
    pub preprocess: crate::eval::onnx_features::Preprocess,
    /// Images per inference batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the model runs.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: crate::runtime::Device,
    /// Do not read or write the feature cache.
    #[arg(long)]
    pub no_cache: bool,
    /// The feature cache: a directory, or an s3://, gs://, az:// prefix shared by many eval
    /// workers [default: $PREP_CACHE/features].
    #[arg(long, value_name = "DIR|URL", env = "PREP_FEATURE_CACHE")]
    pub feature_cache: Option<PathBuf>,
    /// For s3:// inputs, --out and --feature-cache (eval features/stats/fid/metrics).
    #[command(flatten)]
    pub store: ReadStoreArgs,
}
