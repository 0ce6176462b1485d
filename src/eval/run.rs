//! `prep eval run --config pipelines/eval-*.toml`: score many entries (a checkpoint's
//! generated features, or its statistics) against one reference set and write
//! `metrics.json` and `metrics.csv` (one row per entry), both atomically.
//!
//! Relative paths in the config are relative to the config file's directory. An entry given
//! as `stats` (a `.npz`) can only be scored with `fid`; every other metric needs `features`.
//! Later (issue 4 + the generate issue) an entry may name a checkpoint or an image directory;
//! the row schema stays the same.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::compute::{self, Inputs, Metric, MetricOptions, MetricValues};
use super::io;
use crate::metrics::{FidReference, Stats};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Output directory for metrics.json and metrics.csv.
    pub out: Option<PathBuf>,
    /// Metric names as for `--metrics`.
    #[serde(default = "default_metrics")]
    pub metrics: Vec<String>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub ci_splits: Option<usize>,
    pub reference: SetSpec,
    #[serde(rename = "entry")]
    pub entries: Vec<EntrySpec>,
}

fn default_metrics() -> Vec<String> {
    vec!["fid".into()]
}

/// A feature set: `features` (.npy) or `stats` (.npz), optional CLIP embeddings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSpec {
    pub features: Option<PathBuf>,
    pub stats: Option<PathBuf>,
    /// CLIP image embeddings (.npy) for cmmd / clip.
    pub clip: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    pub name: String,
    #[serde(default)]
    pub condition: Option<String>,
    /// Training-sample count N of the checkpoint.
    pub samples: u64,
    /// Training step of the checkpoint.
    #[serde(default)]
    pub step: Option<u64>,
    pub features: Option<PathBuf>,
    pub stats: Option<PathBuf>,
    pub clip: Option<PathBuf>,
    /// CLIP text embeddings of the prompts (.npy), row i for generated image i.
    pub text: Option<PathBuf>,
}

/// One row of metrics.json / metrics.csv.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub condition: Option<String>,
    pub samples: u64,
    pub step: Option<u64>,
    /// Generated samples scored (unknown for a stats entry).
    pub n_eval: Option<usize>,
    #[serde(flatten)]
    pub values: MetricValues,
}

#[derive(Serialize)]
struct Report<'a> {
    config: String,
    metrics: &'a [String],
    seed: u64,
    reference: String,
    n_reference: Option<usize>,
    entries: &'a [Row],
}

const CSV_HEADER: [&str; 15] = [
    "name",
    "condition",
    "samples",
    "step",
    "n_eval",
    "fid",
    "kid_mean",
    "kid_std",
    "cmmd",
    "precision",
    "recall",
    "density",
    "coverage",
    "clip_score",
    "fid_inf",
];

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Run the config; returns the rows (also written to OUT/metrics.json and OUT/metrics.csv).
pub fn run_config(
    config: &Path,
    out_override: Option<&Path>,
    remote: &crate::sink::remote::RemoteOptions,
) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let cfg: EvalConfig = toml::from_str(&text)
        .with_context(|| format!("{}: invalid eval config", config.display()))?;
    let base = config.parent().unwrap_or(Path::new("."));
    let out = match (out_override, &cfg.out) {
        (Some(o), _) => o.to_path_buf(),
        (None, Some(o)) if super::objstore::is_url_path(o) => o.clone(),
        (None, Some(o)) => resolve(base, o),
        (None, None) => bail!(
            "{}: no `out` directory (or pass --out DIR)",
            config.display()
        ),
    };
    // Scheme, bucket, endpoint and reachability checked before anything is computed.
    super::objstore::check_out_url(&out, remote, "--out")?;
    let which = compute::parse_metrics(&cfg.metrics.join(","))
        .with_context(|| format!("{}: `metrics`", config.display()))?;
    if cfg.entries.is_empty() {
        bail!("{}: no [[entry]] tables", config.display());
    }
    let opts = MetricOptions {
        seed: cfg.seed,
        ci_splits: cfg.ci_splits,
        ..MetricOptions::default()
    };
    let only_fid = which == [Metric::Fid];
    // Check every entry's shape before computing anything.
    let rf = &cfg.reference;
    match (&rf.features, &rf.stats) {
        (Some(_), None) => {}
        (None, Some(_)) if only_fid => {}
        (None, Some(_)) => bail!(
            "{}: the reference is given as `stats`, which only supports metrics = [\"fid\"]; give `features` for {}",
            config.display(),
            cfg.metrics.join(",")
        ),
        _ => bail!("{}: [reference] needs exactly one of `features` or `stats`", config.display()),
    }
    for e in &cfg.entries {
        match (&e.features, &e.stats) {
            (Some(_), None) => {}
            (None, Some(_)) if only_fid => {}
            (None, Some(_)) => bail!(
                "{}: entry {:?} is given as `stats`, which only supports metrics = [\"fid\"]",
                config.display(),
                e.name
            ),
            _ => bail!(
                "{}: entry {:?} needs exactly one of `features` or `stats`",
                config.display(),
                e.name
            ),
        }
    }

    let (ref_path, ref_features, ref_stats) = match (&rf.features, &rf.stats) {
        (Some(f), _) => {
            let p = resolve(base, f);
            let feats = io::read_features(&p)?;
            let s = Stats::from_features(feats.x.as_ref(), &feats.what())?;
            (p, Some(feats), s)
        }
        (None, Some(s)) => {
            let p = resolve(base, s);
            let st = io::read_stats_npz(&p)?;
            (p, None, st)
        }
        (None, None) => unreachable!("checked above"),
    };
    let ref_clip = rf
        .clip
        .as_ref()
        .map(|p| io::read_features(&resolve(base, p)))
        .transpose()?;
    let reference = FidReference::new(&ref_stats)?;

    let mut rows = Vec::with_capacity(cfg.entries.len());
    for e in &cfg.entries {
        let ctx = || format!("entry {:?}", e.name);
        let (values, n_eval) = match (&e.features, &e.stats) {
            (Some(f), _) => {
                let gen = io::read_features(&resolve(base, f)).with_context(ctx)?;
                let clip = e
                    .clip
                    .as_ref()
                    .map(|p| io::read_features(&resolve(base, p)))
                    .transpose()
                    .with_context(ctx)?;
                let txt = e
                    .text
                    .as_ref()
                    .map(|p| io::read_features(&resolve(base, p)))
                    .transpose()
                    .with_context(ctx)?;
                let real = ref_features.as_ref().expect("checked: features reference");
                let inputs = Inputs {
                    real,
                    gen: &gen,
                    real_clip: ref_clip.as_ref(),
                    gen_clip: clip.as_ref(),
                    gen_text: txt.as_ref(),
                };
                let (v, _) = compute::compute(&inputs, &which, &opts).with_context(ctx)?;
                (v, Some(gen.x.nrows()))
            }
            (None, Some(s)) => {
                let p = resolve(base, s);
                let st = io::read_stats_npz(&p).with_context(ctx)?;
                if st.dim() != reference.dim() {
                    bail!(
                        "entry {:?}: {} has d = {}, the reference {} has d = {}",
                        e.name,
                        p.display(),
                        st.dim(),
                        ref_path.display(),
                        reference.dim()
                    );
                }
                let v = MetricValues {
                    fid: Some(reference.distance(&st).with_context(ctx)?),
                    ..MetricValues::default()
                };
                (v, None)
            }
            (None, None) => unreachable!("checked above"),
        };
        eprintln!(
            "scored {} ({} samples{})",
            e.name,
            e.samples,
            e.step.map(|s| format!(", step {s}")).unwrap_or_default()
        );
        rows.push(Row {
            name: e.name.clone(),
            condition: e.condition.clone(),
            samples: e.samples,
            step: e.step,
            n_eval,
            values,
        });
    }

    let report = Report {
        config: config.display().to_string(),
        metrics: &cfg.metrics,
        seed: cfg.seed,
        reference: ref_path.display().to_string(),
        n_reference: ref_features.as_ref().map(|f| f.x.nrows()),
        entries: &rows,
    };
    let mut json = serde_json::to_vec_pretty(&report)?;
    json.push(b'\n');
    // Locally atomic (temp + rename); on an object store each file is one whole object.
    super::objstore::write_out(&out.join("metrics.json"), &json, remote)?;
    super::objstore::write_out(&out.join("metrics.csv"), &csv_bytes(&rows)?, remote)?;
    eprintln!(
        "wrote {} and metrics.csv ({} rows)",
        out.join("metrics.json").display(),
        rows.len()
    );
    Ok(rows)
}

fn csv_bytes(rows: &[Row]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    let f = |x: Option<f64>| x.map(|v| format!("{v}")).unwrap_or_default();
    for r in rows {
        let v = &r.values;
        w.write_record([
            r.name.clone(),
            r.condition.clone().unwrap_or_default(),
            r.samples.to_string(),
            r.step.map(|s| s.to_string()).unwrap_or_default(),
            r.n_eval.map(|s| s.to_string()).unwrap_or_default(),
            f(v.fid),
            f(v.kid.map(|k| k.mean)),
            f(v.kid.map(|k| k.std)),
            f(v.cmmd),
            f(v.precision),
            f(v.recall),
            f(v.density),
            f(v.coverage),
            f(v.clip_score),
            f(v.fid_inf),
        ])?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))
}
