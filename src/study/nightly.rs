//! `prep eval run --config pipelines/nightly.toml [--night YYYY-MM-DD]`: a study config
//! (one with a `[study]` table) scores every checkpoint and records the night in
//! `history.parquet`.
//!
//! Per checkpoint the generated set is one of: `features` (.npy), `images` (a directory or
//! `FILE.parquet[:COLUMN]`, scored with the `[features]` model, rows cached by image
//! sha256), or `path` (an adapter checkpoint → generation, see [`super::generation`]). The
//! first `eval_size` images/rows are scored; a set with fewer is an error, because FID
//! depends on the set size and nights must stay comparable. `fid-inf` is always computed
//! beside `fid`.
//!
//! CIs (stored as `ci_low`/`ci_high`): FID and CMMD ± 1.96·s/√K from K = `ci_splits`
//! disjoint splits (s: their standard deviation; the spread of a full-size estimate is
//! ≈ s/√K), KID ± 1 standard deviation over its subsets (clean-fid's convention), CLIP
//! score ± 1.96·s/√n over per-image scores; PRDC and FID∞ have none. `control` in
//! `metrics` adds controllability ([`super::control`]: `control_f1` for canny,
//! `control_rmse` for color, ± 1.96·s/√n over images) for image checkpoints, scored on the
//! same streamed pass as the features (one batch of decoded images in memory at a time).
//!
//! Architecture invariant: the whole config (every entry's shape, files that must exist,
//! the night id, eval_size) is checked before any feature is read or anything is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::control::{self, Control};
use super::generation::{self, GenerateRequest, GenerationSpec};
use super::history::{self, HistoryRow};
use super::images::{self, FeatureModelSpec, OnnxFeatures};
use crate::eval::compute::{self, Inputs, Metric, MetricOptions, MetricValues};
use crate::eval::extract::FeatureCache;
use crate::eval::io::{self, Dtype, Features};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    pub study: StudySpec,
    pub features: Option<FeatureModelSpec>,
    pub reference: SetSpec,
    #[serde(default)]
    pub validation: ValidationSpec,
    pub generation: Option<GenerationSpec>,
    #[serde(rename = "checkpoint", default)]
    pub checkpoints: Vec<CheckpointSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    pub name: String,
    /// The history store (created on the first night).
    pub history: PathBuf,
    /// Per-night metrics.json / metrics.csv go to OUT/NIGHT/ (a directory or an
    /// object-store URL, like `history`).
    pub out: Option<PathBuf>,
    /// The feature cache (a directory or an s3://, gs://, az:// prefix shared by workers);
    /// `--feature-cache` / `PREP_FEATURE_CACHE` override it [default: $PREP_CACHE/features].
    pub feature_cache: Option<PathBuf>,
    /// Generated images scored per checkpoint, fixed for the study.
    pub eval_size: usize,
    #[serde(default = "default_metrics")]
    pub metrics: Vec<String>,
    #[serde(default)]
    pub seed: u64,
    pub ci_splits: Option<usize>,
    /// The subset manifest (subsets.json) or dataset.json the checkpoints were trained on.
    pub dataset: Option<PathBuf>,
}

fn default_metrics() -> Vec<String> {
    vec!["fid".into(), "kid".into()]
}

/// The reference (real) set: exactly one of features / images.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSpec {
    pub features: Option<PathBuf>,
    pub images: Option<PathBuf>,
    pub clip: Option<PathBuf>,
}

/// The validation set the checkpoints are generated from (grids, generation input).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    /// Real images (matched to generated ones by file stem in the report's grids).
    pub images: Option<PathBuf>,
    /// Condition maps: `conditions/<condition>/<stem>.png` (grids).
    pub conditions: Option<PathBuf>,
    /// A prep-built Parquet dataset of the validation split (captions + condition
    /// columns): the input of generation.
    pub dataset: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    pub name: String,
    pub condition: String,
    /// Training-sample count N.
    pub samples: u64,
    pub step: Option<u64>,
    pub features: Option<PathBuf>,
    pub clip: Option<PathBuf>,
    pub text: Option<PathBuf>,
    pub images: Option<PathBuf>,
    /// Adapter checkpoint directory (generate issue layout) → generation.
    pub path: Option<PathBuf>,
    /// Subset manifest of this checkpoint (overrides `[study] dataset`).
    pub dataset: Option<PathBuf>,
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// [`resolve`] for the settings that may be object-store URLs (history, out, feature cache).
fn resolve_loc(base: &Path, p: &Path) -> PathBuf {
    if crate::eval::objstore::is_url_path(p) {
        p.to_path_buf()
    } else {
        resolve(base, p)
    }
}

/// Where a night's results and cache live, beyond the config (`prep eval run` flags).
#[derive(Debug, Clone, Default)]
pub struct RunPlaces {
    /// `--out`: overrides `[study] out`.
    pub out: Option<PathBuf>,
    /// `--feature-cache` / `PREP_FEATURE_CACHE`: overrides `[study] feature_cache`.
    pub feature_cache: Option<PathBuf>,
    /// How object-store URLs are reached (`--s3-endpoint`).
    pub remote: crate::sink::remote::RemoteOptions,
}

/// The config's text if it describes a study (has a `[study]` table); `None` otherwise
/// (an unreadable file is left to the plain `eval run` path, which reports it).
pub fn study_text(config: &Path) -> Result<Option<String>> {
    let Ok(text) = std::fs::read_to_string(config) else {
        return Ok(None);
    };
    let is = toml::from_str::<toml::Table>(&text)
        .map(|t| t.contains_key("study"))
        .unwrap_or(false);
    Ok(is.then_some(text))
}

fn abs(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

fn sha_file(p: &Path) -> Result<String> {
    let b = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok(hex::encode(Sha256::digest(&b)))
}

/// Which metrics are better when lower.
pub fn lower_is_better(metric: &str) -> bool {
    matches!(metric, "fid" | "fid_inf" | "kid" | "cmmd" | "control_rmse")
}

/// MetricValues → (metric, value, ci) rows.
/// (metric, value, CI).
type MetricRow = (String, f64, Option<(f64, f64)>);

fn metric_rows(v: &MetricValues, clip_per_sample: Option<&[f64]>) -> Vec<MetricRow> {
    let mut out = Vec::new();
    let split_ci = |x: f64, s: &Option<crate::metrics::splits::SplitSummary>| {
        s.as_ref().map(|s| {
            let h = 1.96 * s.std / (s.splits as f64).sqrt();
            (x - h, x + h)
        })
    };
    if let Some(x) = v.fid {
        out.push(("fid".into(), x, split_ci(x, &v.fid_splits)));
    }
    if let Some(x) = v.fid_inf {
        out.push(("fid_inf".into(), x, None));
    }
    if let Some(k) = v.kid {
        out.push(("kid".into(), k.mean, Some((k.mean - k.std, k.mean + k.std))));
    }
    if let Some(x) = v.cmmd {
        out.push(("cmmd".into(), x, split_ci(x, &v.cmmd_splits)));
    }
    for (n, x) in [
        ("precision", v.precision),
        ("recall", v.recall),
        ("density", v.density),
        ("coverage", v.coverage),
    ] {
        if let Some(x) = x {
            out.push((n.into(), x, None));
        }
    }
    if let Some(x) = v.clip_score {
        let ci = clip_per_sample.filter(|s| s.len() > 1).map(|s| {
            let n = s.len() as f64;
            let m = s.iter().sum::<f64>() / n;
            let sd = (s.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            let h = 1.96 * sd / n.sqrt();
            (x - h, x + h)
        });
        out.push(("clip_score".into(), x, ci));
    }
    out
}

fn take_rows(f: Features, n: usize, what: &str) -> Result<Features> {
    if f.x.nrows() < n {
        bail!(
            "{what}: {} has {} rows, fewer than the study's eval_size = {n}; every checkpoint is scored on exactly eval_size samples",
            f.path.display(),
            f.x.nrows()
        );
    }
    let x = f.x.as_ref().subrows(0, n).to_owned();
    Ok(Features {
        x,
        dtype: f.dtype,
        path: f.path,
    })
}

/// What one night produced.
#[derive(Debug, Serialize)]
pub struct NightReport {
    pub night: String,
    pub history: PathBuf,
    pub rows_written: usize,
    pub history_rows: usize,
    pub rows: Vec<HistoryRow>,
}

/// Run a study config for `night` (default: today UTC).
pub fn run(
    config: &Path,
    text: &str,
    night: Option<&str>,
    places: &RunPlaces,
) -> Result<NightReport> {
    let out_override = places.out.as_deref();
    let cfg: StudyConfig = toml::from_str(text)
        .with_context(|| format!("{}: invalid study config", config.display()))?;
    let night = night.map(str::to_string).unwrap_or_else(history::today_utc);
    history::check_night(&night)?;
    let base = config.parent().unwrap_or(Path::new("."));
    let st = &cfg.study;
    let cname = config.display();
    if st.eval_size < 2 {
        bail!(
            "{cname}: [study] eval_size = {} is too small (at least 2; e.g. 5000)",
            st.eval_size
        );
    }
    if st.name.trim().is_empty() {
        bail!("{cname}: [study] name is empty");
    }
    // `control` (controllability) is scored here, not by eval::compute.
    let want_control = st.metrics.iter().any(|m| m.eq_ignore_ascii_case("control"));
    let mut metric_list: Vec<String> = st
        .metrics
        .iter()
        .filter(|m| !m.eq_ignore_ascii_case("control"))
        .cloned()
        .collect();
    if metric_list.iter().any(|m| m.eq_ignore_ascii_case("fid"))
        && !metric_list
            .iter()
            .any(|m| m.to_ascii_lowercase().replace('_', "-") == "fid-inf")
    {
        metric_list.push("fid-inf".into()); // FID∞ beside FID, always.
    }
    let which = compute::parse_metrics(&metric_list.join(","))
        .with_context(|| format!("{cname}: [study] metrics"))?;
    if cfg.checkpoints.is_empty() {
        bail!("{cname}: no [[checkpoint]] tables");
    }
    // --- check everything before reading features or writing ---
    let needs_model = cfg.reference.images.is_some()
        || cfg
            .checkpoints
            .iter()
            .any(|c| c.images.is_some() || c.path.is_some());
    if needs_model && cfg.features.is_none() {
        bail!("{cname}: image sets need a feature model: add [features] model = \"inception.onnx\" (size, sha256)");
    }
    match (&cfg.reference.features, &cfg.reference.images) {
        (Some(_), None) | (None, Some(_)) => {}
        _ => bail!("{cname}: [reference] needs exactly one of `features` (.npy) or `images` (DIR or FILE.parquet[:COLUMN])"),
    }
    if want_control && cfg.validation.conditions.is_none() {
        bail!("{cname}: metric control needs [validation] conditions = \"DIR\" (condition maps in DIR/<condition>/<stem>.png)");
    }
    let mut seen = std::collections::HashSet::new();
    for c in &cfg.checkpoints {
        if want_control {
            control::metric_for(&c.condition)
                .with_context(|| format!("{cname}: checkpoint {:?}", c.name))?;
            if c.features.is_some() {
                bail!("{cname}: checkpoint {:?}: metric control needs the generated images (`images` or `path`), not `features`", c.name);
            }
        }
        if !seen.insert(c.name.as_str()) {
            bail!("{cname}: checkpoint name {:?} is used twice", c.name);
        }
        let n = [c.features.is_some(), c.images.is_some(), c.path.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if n != 1 {
            bail!(
                "{cname}: checkpoint {:?} needs exactly one of `features` (.npy), `images` (DIR or FILE.parquet[:COLUMN]) or `path` (an adapter checkpoint to generate from)",
                c.name
            );
        }
        if c.path.is_some() {
            if cfg.generation.is_none() {
                bail!("{cname}: checkpoint {:?} gives `path`, which needs a [generation] table (base, steps, guidance, seed …)", c.name);
            }
            if cfg.validation.dataset.is_none() {
                bail!("{cname}: checkpoint {:?} gives `path`; generation needs [validation] dataset (a prep-built Parquet with captions and the condition column)", c.name);
            }
        }
        if which.contains(&Metric::Clip) && c.text.is_none() {
            bail!(
                "{cname}: metric clip needs `text` (CLIP text embeddings .npy) on checkpoint {:?}",
                c.name
            );
        }
        if (which.contains(&Metric::Clip) || which.contains(&Metric::Cmmd)) && c.features.is_none()
        {
            bail!(
                "{cname}: checkpoint {:?}: cmmd/clip need CLIP embeddings, which come with `features` + `clip` (.npy) until the CLIP feature model lands (issue 4)",
                c.name
            );
        }
    }
    let config_sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    let dataset_sha = |p: Option<&PathBuf>| -> Result<Option<String>> {
        p.map(|p| sha_file(&resolve(base, p))).transpose()
    };
    let study_dataset =
        dataset_sha(st.dataset.as_ref()).with_context(|| format!("{cname}: [study] dataset"))?;
    let opts = MetricOptions {
        seed: st.seed,
        ci_splits: st.ci_splits,
        ..MetricOptions::default()
    };

    if let Some(o) = st
        .out
        .as_ref()
        .filter(|o| crate::eval::objstore::is_url_path(o))
    {
        if let Some(c) = cfg.checkpoints.iter().find(|c| c.path.is_some()) {
            bail!(
                "{cname}: [study] out = {}: checkpoint {:?} is generated, and generated images are written under OUT/NIGHT/generated on local disk; keep `out` a local directory and pass --out URL for the night's metrics",
                o.display(),
                c.name
            );
        }
    }

    // URLs are checked (scheme, bucket, endpoint, reachable) before anything is scored.
    for (what, loc) in [
        ("[study] history", Some(&st.history)),
        (
            "--out / [study] out",
            places.out.as_ref().or(st.out.as_ref()),
        ),
    ] {
        if let Some(l) = loc {
            crate::eval::objstore::check_out_url(l, &places.remote, what)
                .with_context(|| cname.to_string())?;
        }
    }

    // --- feature model, reference ---
    let cache = match (&places.feature_cache, &st.feature_cache) {
        (Some(loc), _) => FeatureCache::open(loc, &places.remote, "--feature-cache")?,
        (None, Some(loc)) => FeatureCache::open(
            &resolve_loc(base, loc),
            &places.remote,
            "[study] feature_cache",
        )
        .with_context(|| cname.to_string())?,
        (None, None) => FeatureCache::default_location(),
    };
    let mut model = match &cfg.features {
        Some(f) if needs_model => Some(OnnxFeatures::open(f, &resolve(base, &f.model))?),
        _ => None,
    };
    let mut models: BTreeMap<String, String> = BTreeMap::new();
    if let Some(m) = &model {
        models.insert("features".into(), m.sha256().to_string());
    }
    // Features of an image set, streamed; controllability scored on the same pass.
    let image_features = |model: &mut Option<OnnxFeatures>,
                          spec: &Path,
                          limit: Option<usize>,
                          what: &str,
                          control: Option<&mut Control>|
     -> Result<Features> {
        let m = model
            .as_mut()
            .expect("checked: a feature model is configured");
        let mut control = control;
        let mut also = |b: &images::Blob| -> Result<()> {
            match control.as_deref_mut() {
                Some(c) => c.add(b),
                None => Ok(()),
            }
        };
        let (x, got) = images::features(m, &cache, spec, limit, what, &mut also)
            .with_context(|| what.to_string())?;
        eprintln!(
            "{what}: {} computed, {} from the feature cache {}",
            got.computed,
            got.hits,
            cache.location()
        );
        Ok(Features {
            x,
            dtype: Dtype::F32,
            path: spec.to_path_buf(),
        })
    };
    let real = match (&cfg.reference.features, &cfg.reference.images) {
        (Some(f), _) => io::read_features(&resolve(base, f))?,
        (None, Some(d)) => image_features(
            &mut model,
            &resolve(base, d),
            None,
            "[reference] images",
            None,
        )?,
        _ => unreachable!("checked above"),
    };
    let real_clip = cfg
        .reference
        .clip
        .as_ref()
        .map(|p| io::read_features(&resolve(base, p)))
        .transpose()?;
    let n_reference = Some(real.x.nrows() as u64);

    let mut rows = Vec::new();
    for c in &cfg.checkpoints {
        let what = format!("checkpoint {:?}", c.name);
        let mut ck_models = models.clone();
        let mut control = match (want_control, &cfg.validation.conditions) {
            (true, Some(dir)) => Some(
                Control::new(&c.condition, &resolve(base, dir).join(&c.condition))
                    .with_context(|| what.clone())?,
            ),
            _ => None,
        };
        let (gen, images_at) = match (&c.features, &c.images, &c.path) {
            (Some(f), _, _) => (
                take_rows(
                    io::read_features(&resolve(base, f)).with_context(|| what.clone())?,
                    st.eval_size,
                    &what,
                )?,
                None,
            ),
            (None, Some(d), _) => {
                let spec = resolve(base, d);
                let f = image_features(
                    &mut model,
                    &spec,
                    Some(st.eval_size),
                    &what,
                    control.as_mut(),
                )?;
                if f.x.nrows() < st.eval_size {
                    bail!(
                        "{what}: {} holds {} images, fewer than the study's eval_size = {}; every checkpoint is scored on exactly eval_size images",
                        spec.display(),
                        f.x.nrows(),
                        st.eval_size
                    );
                }
                (f, Some(spec))
            }
            (None, None, Some(p)) => {
                let adapter = resolve(base, p);
                ck_models.insert(
                    "adapter".into(),
                    sha_file(&adapter.join("model.onnx")).unwrap_or_default(),
                );
                let v = &cfg.validation;
                let req = GenerateRequest {
                    name: c.name.clone(),
                    adapter,
                    condition: c.condition.clone(),
                    input: resolve(base, v.dataset.as_ref().expect("checked")),
                    count: st.eval_size,
                    settings: cfg.generation.clone().expect("checked"),
                    out: st
                        .out
                        .as_ref()
                        .map(|o| resolve(base, o))
                        .unwrap_or_else(|| base.to_path_buf())
                        .join(&night)
                        .join("generated")
                        .join(&c.name),
                };
                let dir = generation::generate(&req)?;
                (
                    image_features(
                        &mut model,
                        &dir,
                        Some(st.eval_size),
                        &what,
                        control.as_mut(),
                    )?,
                    Some(dir),
                )
            }
            _ => unreachable!("checked above"),
        };
        let load = |p: &Option<PathBuf>| -> Result<Option<Features>> {
            p.as_ref()
                .map(|p| {
                    io::read_features(&resolve(base, p))
                        .and_then(|f| take_rows(f, st.eval_size, &what))
                })
                .transpose()
        };
        let gen_clip = load(&c.clip)?;
        let gen_text = load(&c.text)?;
        let inputs = Inputs {
            real: &real,
            gen: &gen,
            real_clip: real_clip.as_ref(),
            gen_clip: gen_clip.as_ref(),
            gen_text: gen_text.as_ref(),
        };
        let (values, per_sample) =
            compute::compute(&inputs, &which, &opts).with_context(|| what.clone())?;
        let dataset = match &c.dataset {
            Some(p) => dataset_sha(Some(p)).with_context(|| what.clone())?,
            None => study_dataset.clone(),
        };
        let model_sha256 = ck_models
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let mut mrows = metric_rows(&values, per_sample.as_deref());
        if let Some(ctl) = control {
            let (m, v, ci) = ctl.finish().with_context(|| what.clone())?;
            mrows.push((m, v, Some(ci)));
        }
        for (metric, value, ci) in mrows {
            rows.push(HistoryRow {
                night: night.clone(),
                study: st.name.clone(),
                checkpoint: c.name.clone(),
                condition: c.condition.clone(),
                samples: c.samples,
                step: c.step,
                metric,
                value,
                ci_low: ci.map(|c| c.0),
                ci_high: ci.map(|c| c.1),
                n_eval: st.eval_size as u64,
                n_reference,
                dataset_manifest_sha256: dataset.clone(),
                model_sha256: model_sha256.clone(),
                prep_version: env!("CARGO_PKG_VERSION").to_string(),
                config_sha256: config_sha256.clone(),
                images: images_at.as_ref().map(|p| abs(p)),
                real_images: cfg
                    .validation
                    .images
                    .as_ref()
                    .map(|p| abs(&resolve(base, p))),
                condition_images: cfg
                    .validation
                    .conditions
                    .as_ref()
                    .map(|p| abs(&resolve(base, p).join(&c.condition))),
            });
        }
        eprintln!(
            "scored {} (N = {}{}) on {} samples",
            c.name,
            c.samples,
            c.step.map(|s| format!(", step {s}")).unwrap_or_default(),
            st.eval_size
        );
    }
    let hist = resolve_loc(base, &st.history);
    let total = history::record_anywhere(&hist, &night, &st.name, &rows, &places.remote)?;
    if let Some(out) = out_override
        .map(Path::to_path_buf)
        .or_else(|| st.out.as_ref().map(|o| resolve_loc(base, o)))
    {
        // Locally written atomically; on an object store each file is one whole object.
        let dir = out.join(&night);
        let mut json = serde_json::to_vec_pretty(&rows)?;
        json.push(b'\n');
        crate::eval::objstore::write_out(&dir.join("metrics.json"), &json, &places.remote)?;
        crate::eval::objstore::write_out(
            &dir.join("metrics.csv"),
            &rows_csv(&rows)?,
            &places.remote,
        )?;
    }
    eprintln!("{}: night {night}: {} rows (replacing any earlier run of this night); {total} rows in the history", hist.display(), rows.len());
    Ok(NightReport {
        night,
        history: hist,
        rows_written: rows.len(),
        history_rows: total,
        rows,
    })
}

/// History rows as CSV (the same columns as history.parquet).
pub fn rows_csv(rows: &[HistoryRow]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::compute::KidValue;
    use crate::metrics::splits::summarize;

    #[test]
    fn the_example_nightly_config_parses() {
        let text = include_str!("../../pipelines/nightly.toml");
        let cfg: StudyConfig = toml::from_str(text).unwrap();
        assert_eq!(cfg.study.eval_size, 5000);
        assert_eq!(cfg.checkpoints.len(), 3);
        assert!(cfg
            .checkpoints
            .iter()
            .all(|c| c.images.is_some() && c.step == Some(5000)));
        assert_eq!(cfg.generation.unwrap().steps, 30);
    }

    #[test]
    fn cis_follow_the_documented_rules() {
        let v = MetricValues {
            fid: Some(10.0),
            fid_splits: Some(summarize(vec![11.0, 13.0, 12.0, 14.0], 100)),
            kid: Some(KidValue {
                mean: 0.5,
                std: 0.1,
            }),
            precision: Some(0.7),
            ..MetricValues::default()
        };
        let rows = metric_rows(&v, None);
        let get = |m: &str| rows.iter().find(|r| r.0 == m).unwrap().clone();
        // s = std(11, 13, 12, 14) = 1.2910 (ddof 1); ± 1.96 · s / √4.
        let h = 1.96 * 1.2909944487358056 / 2.0;
        let (lo, hi) = get("fid").2.unwrap();
        assert!((hi - (10.0 + h)).abs() < 1e-12 && (lo - (10.0 - h)).abs() < 1e-12);
        assert_eq!(get("kid").2, Some((0.4, 0.6)));
        assert_eq!(get("precision").2, None);
        assert!(lower_is_better("fid") && !lower_is_better("precision"));
    }
}
