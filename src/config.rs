//! The resolved configuration of a `prep build` run.
//!
//! CLI flags and `pipelines/*.toml` files fill the same [`crate::cli::BuildArgs`] type;
//! [`BuildConfig::resolve`] applies defaults and validates. The resolved config is written
//! into `dataset.json`, so every run can be replayed, and its [`BuildConfig::fingerprint`]
//! guards resumption: an output directory is only ever continued with the settings that
//! started it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cli::BuildArgs;
use crate::condition::ConditionKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// COCO 2017 layout under --input (captions, optional keypoints and COCO-Stuff maps).
    Coco,
    /// A folder of images with same-stem .txt captions or an HF imagefolder metadata.jsonl.
    Folder,
    /// A LAION-style metadata file (parquet, csv, tsv, jsonl) with image URLs.
    Laion,
    /// The small dataset bundled with prep (offline).
    Demo,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Coco => "coco",
            SourceKind::Folder => "folder",
            SourceKind::Laion => "laion",
            SourceKind::Demo => "demo",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// Shortest side to R, then centre crop to R×R (diffusers' trainer).
    CenterCrop,
    /// Shortest side to R, aspect ratio kept, no crop.
    KeepRatio,
    /// Resize to R×R ignoring the aspect ratio.
    Stretch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFormat {
    Jpeg,
    Png,
    /// Lossless WebP.
    Webp,
}

impl ImageFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyposeFrom {
    /// Draw ground-truth keypoints from the source's annotations (COCO person_keypoints).
    Gt,
    /// Detect keypoints with a pose model (needs the ONNX model runtime).
    Model,
}

/// LAION metadata filters; a row failing one is recorded as filtered, not built.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    pub min_aesthetic: Option<f64>,
    pub max_punsafe: Option<f64>,
    pub max_pwatermark: Option<f64>,
    /// Minimum of the original width and height, in pixels.
    pub min_size: Option<u32>,
    /// Largest max(w, h) / min(w, h) of the original image.
    pub max_aspect_ratio: Option<f64>,
    /// Largest original width × height.
    pub max_area: Option<u64>,
}

/// Download settings. They decide which rows succeed, not the bytes of a row, so they are
/// recorded in dataset.json but not fingerprinted: a resumed or retried run may change them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchConfig {
    /// Connect, read-idle and per-attempt total timeout, seconds.
    pub timeout_secs: f64,
    pub retries: u32,
    pub max_bytes: u64,
    /// Downloads in flight.
    pub concurrency: usize,
    pub per_host_concurrency: usize,
    /// CIDR ranges opened in the SSRF guard.
    pub allow_networks: Vec<String>,
    /// X-Robots-Tag directives honoured as opt-out (empty: none).
    pub opt_out_directives: Vec<String>,
    pub user_agent_token: Option<String>,
}

impl FetchConfig {
    pub fn settings(&self) -> Result<crate::fetch::FetchSettings> {
        Ok(crate::fetch::FetchSettings {
            timeout: std::time::Duration::from_secs_f64(self.timeout_secs),
            retries: self.retries,
            max_bytes: self.max_bytes,
            per_host_concurrency: self.per_host_concurrency,
            allow_networks: crate::fetch::guard::parse_networks(&self.allow_networks)?,
            opt_out_directives: self.opt_out_directives.clone(),
            user_agent_token: self.user_agent_token.clone(),
            ..Default::default()
        })
    }
}

/// Everything that determines the bytes of the output. Runtime knobs that do not change
/// the output (threads, `--shard`, `--dry-run`) are not part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildConfig {
    pub source: SourceKind,
    pub input: Option<PathBuf>,
    pub split: String,
    pub url_col: String,
    pub caption_col: String,
    pub filters: Filters,
    pub conditions: Vec<ConditionKind>,
    pub resolution: u32,
    pub resize_mode: ResizeMode,
    pub image_format: ImageFormat,
    /// Parquet (HF datasets) or WebDataset tar shards.
    #[serde(default)]
    pub output_format: crate::sink::OutputFormat,
    pub jpeg_quality: u8,
    pub max_persons: Option<usize>,
    pub keypose_from: KeyposeFrom,
    pub shard_size: usize,
    pub limit: Option<u64>,
    /// Largest image (width × height) decoded; larger ones are per-row failures.
    pub max_pixels: u64,
    /// Decode large JPEGs at 1/2, 1/4 or 1/8 size in the DCT domain when the short side
    /// stays ≥ the resolution (records without keypoints/label maps only).
    #[serde(default)]
    pub jpeg_dct_scaling: bool,
    /// Check the sha256 of each image's original bytes against this metadata column.
    pub verify_hash: Option<String>,
    /// Drop rows whose original bytes repeat an earlier row's (sha256), within a run.
    pub dedup: bool,
    pub fetch: FetchConfig,
    /// Models computing conditions (empty without model-backed conditions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelChoice>,
    /// `sketch`: edge probability above this is white.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sketch_threshold: Option<f32>,
}

/// The model that computes a condition, pinned by sha256 (recorded in dataset.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelChoice {
    pub condition: String,
    pub model: String,
    pub sha256: String,
    /// A two-stage pose model's person detector and its pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector_sha256: Option<String>,
}

/// How this process shares the shard list with others: it takes the shards whose index
/// is ≡ `index` (mod `count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSelector {
    pub index: usize,
    pub count: usize,
}

impl ShardSelector {
    pub const ALL: ShardSelector = ShardSelector { index: 0, count: 1 };

    pub fn parse(s: &str) -> Result<Self> {
        let (i, n) = s
            .split_once('/')
            .with_context(|| format!("--shard {s:?}: expected I/N, e.g. --shard 0/4"))?;
        let index: usize = i
            .trim()
            .parse()
            .with_context(|| format!("--shard {s:?}: I must be a non-negative integer"))?;
        let count: usize = n
            .trim()
            .parse()
            .with_context(|| format!("--shard {s:?}: N must be a positive integer"))?;
        if count == 0 || index >= count {
            bail!("--shard {s:?}: need 0 <= I < N (e.g. --shard 0/2 and --shard 1/2 for two machines)");
        }
        Ok(ShardSelector { index, count })
    }

    pub fn takes(&self, shard: usize) -> bool {
        shard % self.count == self.index
    }
}

impl BuildConfig {
    /// Apply defaults and check flag combinations. `args` is already merged (CLI over TOML).
    pub fn resolve(args: &BuildArgs) -> Result<Self> {
        let source = args
            .source
            .context("no --source given: use --source coco|folder|laion|demo (or set `source` in the --config file)")?;
        let input = args.input.clone();
        if source != SourceKind::Demo && input.is_none() {
            bail!(
                "--source {} needs --input (the {})",
                source.name(),
                match source {
                    SourceKind::Coco =>
                        "COCO root holding annotations/ and the split's image folder",
                    SourceKind::Folder => "folder of images",
                    _ => "metadata file: .parquet, .csv, .tsv or .jsonl",
                }
            );
        }
        if source == SourceKind::Demo && input.is_some() {
            bail!("--source demo uses the bundled data and takes no --input; use --source coco --input DIR for your own COCO-layout data");
        }
        let conditions = match &args.condition {
            Some(list) => ConditionKind::parse_list(list)?,
            None => Vec::new(),
        };
        let resolution = args.resolution.unwrap_or(512);
        if !(8..=8192).contains(&resolution) {
            bail!("--resolution {resolution}: must be between 8 and 8192 pixels");
        }
        let shard_size = args.shard_size.unwrap_or(1000);
        if shard_size == 0 {
            bail!("--shard-size must be at least 1");
        }
        let jpeg_quality = args.jpeg_quality.unwrap_or(95);
        if !(1..=100).contains(&jpeg_quality) {
            bail!("--jpeg-quality {jpeg_quality}: must be 1..=100");
        }
        // COCO (and the demo, in COCO layout) keep ground truth; other sources have none.
        let keypose_from = args.keypose_from.unwrap_or(match source {
            SourceKind::Coco | SourceKind::Demo => KeyposeFrom::Gt,
            _ => KeyposeFrom::Model,
        });
        let models = crate::condition::model::choose_models(
            &conditions,
            keypose_from,
            args.model.as_deref().unwrap_or_default(),
        )?;
        let sketch_threshold = if conditions.contains(&ConditionKind::Sketch) {
            let t = args.sketch_threshold.unwrap_or(0.5);
            if !(0.0..1.0).contains(&t) {
                bail!("--sketch-threshold {t}: must be in [0, 1)");
            }
            Some(t)
        } else {
            None
        };
        let filters = Filters {
            min_aesthetic: args.min_aesthetic,
            max_punsafe: args.max_punsafe,
            max_pwatermark: args.max_pwatermark,
            min_size: args.min_size,
            max_aspect_ratio: args.max_aspect_ratio,
            max_area: args.max_area,
        };
        if filters
            .max_aspect_ratio
            .is_some_and(|r| r.is_nan() || r < 1.0)
        {
            bail!("--max-aspect-ratio must be >= 1 (the ratio of the longer to the shorter side)");
        }
        if source != SourceKind::Laion
            && (filters.min_aesthetic.is_some()
                || filters.max_punsafe.is_some()
                || filters.max_pwatermark.is_some())
        {
            bail!("--min-aesthetic/--max-punsafe/--max-pwatermark filter LAION metadata columns; they need --source laion");
        }
        let timeout_secs = args.timeout.unwrap_or(10.0);
        if timeout_secs.is_nan() || timeout_secs <= 0.0 {
            bail!("--timeout must be a positive number of seconds");
        }
        let fetch = FetchConfig {
            timeout_secs,
            retries: args.retries.unwrap_or(2),
            max_bytes: args.max_bytes.unwrap_or(32 << 20),
            concurrency: args.concurrency.unwrap_or(128).max(1),
            per_host_concurrency: args.per_host_concurrency.unwrap_or(16).max(1),
            allow_networks: args.allow_network.clone().unwrap_or_default(),
            opt_out_directives: match &args.opt_out_directives {
                Some(list) => list
                    .split(',')
                    .map(|d| d.trim().to_ascii_lowercase())
                    .filter(|d| !d.is_empty())
                    .collect(),
                None => crate::fetch::robots::DEFAULT_DIRECTIVES
                    .iter()
                    .map(|d| d.to_string())
                    .collect(),
            },
            user_agent_token: args.user_agent_token.clone(),
        };
        fetch.settings()?; // validates --allow-network
        if args.verify_hash.is_some() && source != SourceKind::Laion {
            bail!(
                "--verify-hash names a metadata column holding sha256 hex; it needs --source laion"
            );
        }
        Ok(BuildConfig {
            source,
            input,
            split: args.split.clone().unwrap_or_else(|| {
                if source == SourceKind::Demo {
                    "demo".into()
                } else {
                    "train2017".into()
                }
            }),
            url_col: args.url_col.clone().unwrap_or_else(|| "URL".into()),
            caption_col: args.caption_col.clone().unwrap_or_else(|| "TEXT".into()),
            filters,
            conditions,
            resolution,
            resize_mode: args.resize_mode.unwrap_or(ResizeMode::CenterCrop),
            image_format: args.image_format.unwrap_or(ImageFormat::Jpeg),
            output_format: args.output_format.unwrap_or_default(),
            jpeg_quality,
            max_persons: args.max_persons,
            keypose_from,
            shard_size,
            limit: args.limit,
            max_pixels: args.max_pixels.unwrap_or(89_478_485),
            jpeg_dct_scaling: args.jpeg_dct_scaling.unwrap_or(false),
            verify_hash: args.verify_hash.clone(),
            dedup: args.dedup.unwrap_or(false),
            fetch,
            models,
            sketch_threshold,
        })
    }

    /// sha256 over the canonical JSON of everything that shapes the output bytes.
    pub fn fingerprint(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        // The input path may be spelled differently across machines (relative vs absolute,
        // another mount point); what it contains is what matters, so it is not part of the
        // fingerprint. Everything else is.
        if let Some(o) = v.as_object_mut() {
            o.remove("input");
            o.remove("fetch");
        }
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_selector_parses_and_partitions() {
        let s = ShardSelector::parse("1/3").unwrap();
        assert_eq!(s, ShardSelector { index: 1, count: 3 });
        let taken: Vec<usize> = (0..7).filter(|&i| s.takes(i)).collect();
        assert_eq!(taken, vec![1, 4]);
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(
                ShardSelector::parse(bad).is_err(),
                "{bad} should be refused"
            );
        }
    }
}
