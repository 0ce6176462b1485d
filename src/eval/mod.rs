//! `prep eval`: feature files in, metrics out.
//!
//! - [`io`]: `.npy` features and `.npz` statistics (read, write atomically).
//! - [`compute`]: which metrics, on which inputs → [`MetricValues`] (the JSON object).
//! - [`run`]: `prep eval run --config`: many entries against one reference → metrics.json/csv.
//! - [`extract`]: the `FeatureExtractor` seam and the feature cache keyed by (image sha256,
//!   model key); [`onnx_features`]: the ONNX feature models of the registry behind it;
//!   [`preprocess`]: their reference-exact input preprocessing; [`images`]: image sets
//!   (directory, Parquet column, `prep build` output).
//!
//! The math lives in `crate::metrics`; this module reads files, checks them (every error
//! names the file) and formats results.

pub mod compute;
pub mod control;
pub mod extract;
pub mod images;
pub mod io;
pub mod objstore;
pub mod onnx_features;
pub mod preprocess;
pub mod run;
pub mod text;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cli::{
    EvalCommand, EvalFeaturesArgs, EvalFidArgs, EvalMetricsArgs, EvalStatsArgs, FeatureModelArgs,
};
use crate::metrics::{frechet_distance, FidReference, Stats};
use crate::runtime::RuntimeOptions;

pub use compute::{Metric, MetricOptions, MetricValues};

/// Whether a path names images (a directory, `.parquet`, or either with `:COLUMN`) rather
/// than a `.npy`/`.npz` file.
pub fn is_image_input(path: &Path) -> bool {
    let (base, _) = images::split_column(path);
    if objstore::is_url_path(&base) {
        // A URL is arrays only when it names an .npy/.npz object.
        return !base.extension().is_some_and(|x| x == "npy" || x == "npz");
    }
    base.is_dir() || base.extension().is_some_and(|x| x == "parquet")
}

/// A feature model opened once for a command, with its cache.
pub struct FeatureModel {
    extractor: onnx_features::OnnxExtractor,
    cache: Option<extract::FeatureCache>,
    pub name: String,
    pub sha256: String,
    remote: crate::sink::remote::RemoteOptions,
}

impl FeatureModel {
    pub fn open(name: &str, fm: &FeatureModelArgs) -> Result<FeatureModel> {
        let reg = crate::models::Registry::load()?;
        let entry = reg.get(name)?;
        let path = fm
            .model_file
            .clone()
            .unwrap_or_else(|| reg.cached_file(name));
        if !path.is_file() {
            bail!(
                "model {name}: {} does not exist; run `prep models fetch {name}`, register a file with `prep models add {name} --file F.onnx --like {name}`, or pass --model-file PATH",
                path.display()
            );
        }
        let opts = RuntimeOptions {
            threads: fm.threads,
            device: fm.device,
        };
        let extractor =
            onnx_features::OnnxExtractor::open(entry, path, &opts, fm.preprocess, fm.batch_size)?;
        let sha256 = extract::FeatureExtractor::model_key(&extractor);
        let cache = match (&fm.feature_cache, fm.no_cache) {
            (_, true) => None,
            (Some(loc), false) => Some(extract::FeatureCache::open(
                loc,
                &fm.store.options(),
                "--feature-cache",
            )?),
            (None, false) => Some(extract::FeatureCache::default_location()),
        };
        Ok(FeatureModel {
            extractor,
            cache,
            name: name.to_string(),
            sha256,
            remote: fm.store.options(),
        })
    }

    /// Features of an image set (directory, Parquet[:COLUMN], build output[:COLUMN]).
    pub fn features(&mut self, images: &Path) -> Result<io::Features> {
        let set = images::ImageSet::open(images, &self.remote)?;
        let bar = indicatif::ProgressBar::new(set.len() as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {wide_bar} {pos}/{len} images ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("features ({})", self.name));
        let (x, report) = extract::features_for_set(
            &mut self.extractor,
            self.cache.as_ref(),
            &set,
            &mut |done| bar.set_position(done as u64),
        )
        .with_context(|| format!("features of {} with model {}", images.display(), self.name))?;
        bar.finish_and_clear();
        eprintln!(
            "{}: {} images, {} computed, {} from the cache ({} × {})",
            images.display(),
            set.len(),
            report.computed,
            report.hits,
            x.nrows(),
            x.ncols()
        );
        if let Some(c) = &self.cache {
            if let Some(n) = c.requests() {
                eprintln!("feature cache {}: {}", c.location(), n.describe());
            }
        }
        Ok(io::Features {
            x,
            dtype: io::Dtype::F32,
            path: images.to_path_buf(),
        })
    }
}

/// The feature model named by `--model`, opened on first use.
struct LazyModel<'a> {
    fm: &'a FeatureModelArgs,
    name: Option<String>,
    flag: &'static str,
    model: Option<FeatureModel>,
}

impl<'a> LazyModel<'a> {
    fn new(fm: &'a FeatureModelArgs, name: Option<String>, flag: &'static str) -> Self {
        LazyModel {
            fm,
            name,
            flag,
            model: None,
        }
    }

    /// `.npy` features are read; images go through the model.
    fn features(&mut self, path: &Path) -> Result<io::Features> {
        if !is_image_input(path) {
            return objstore::read_features(path, &self.fm.store.options());
        }
        self.model_mut(path)?.features(path)
    }

    fn model_mut(&mut self, path: &Path) -> Result<&mut FeatureModel> {
        if self.model.is_none() {
            let name = self.name.as_deref().with_context(|| {
                format!(
                    "{} holds images: pass {} NAME (a feature model, e.g. inception) to compute their features",
                    path.display(),
                    self.flag
                )
            })?;
            self.model = Some(FeatureModel::open(name, self.fm)?);
        }
        self.model.as_mut().context("feature model was not opened")
    }

    /// Statistics: `.npz` read, `.npy` or images → features → mean/covariance.
    fn stats(&mut self, path: &Path) -> Result<Stats> {
        if !is_image_input(path) {
            return objstore::load_stats(path, &self.fm.store.options());
        }
        let f = self.features(path)?;
        Stats::from_features(f.x.as_ref(), &f.what())
    }
}

/// Dispatch `prep eval …`.
pub fn run(cmd: EvalCommand) -> Result<()> {
    match cmd {
        EvalCommand::Stats(a) => stats(&a),
        EvalCommand::Metrics(a) => metrics(&a),
        EvalCommand::Fid(a) => fid(&a),
        EvalCommand::Run(a) => {
            objstore::refuse_url("prep eval run", "--config", &a.config)?;
            if let Some(text) = crate::study::nightly::study_text(&a.config)? {
                let places = crate::study::nightly::RunPlaces {
                    out: a.out.clone(),
                    feature_cache: a.feature_cache.clone(),
                    remote: a.store.options(),
                };
                let r = crate::study::nightly::run(&a.config, &text, a.night.as_deref(), &places)?;
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                }
                return Ok(());
            }
            if let Some(n) = &a.night {
                bail!("--night {n}: {} is not a study config (no [study] table); only studies keep a history", a.config.display());
            }
            let rows = run::run_config(&a.config, a.out.as_deref(), &a.store.options())?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            }
            Ok(())
        }
        EvalCommand::Features(a) => features(&a),
        EvalCommand::Text(a) => {
            let reg = crate::models::Registry::load()?;
            let entry = reg.get(&a.model)?;
            let path = a
                .model_file
                .clone()
                .unwrap_or_else(|| reg.cached_file(&a.model));
            let cache_dir = reg.cached_file(&a.model);
            let cache_dir = cache_dir.parent().unwrap_or(Path::new("."));
            let opts = RuntimeOptions {
                threads: a.threads,
                device: a.device,
            };
            let mut enc =
                text::TextEncoder::open(entry, &path, a.tokenizer.as_deref(), cache_dir, &opts)?;
            let prompts = text::read_prompts(&a.prompts, &a.store.options())?;
            if prompts.is_empty() {
                bail!("{}: no prompts", a.prompts.display());
            }
            let x = enc.encode(&prompts, a.batch_size)?;
            objstore::write_out(
                &a.out,
                &io::npy_bytes(&x, io::Dtype::F32)?,
                &a.store.options(),
            )?;
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"out": a.out, "n": x.nrows(), "d": x.ncols(), "model": a.model})
                );
            } else {
                eprintln!(
                    "wrote {} ({} prompts × {})",
                    a.out.display(),
                    x.nrows(),
                    x.ncols()
                );
            }
            Ok(())
        }
        EvalCommand::Control(a) => {
            if let Some(p) = &a.keep {
                objstore::refuse_url("prep eval control", "--keep", p)?;
            }
            let r = control::run(&a)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let v = serde_json::to_value(&r)?;
                if let Some(o) = v.as_object() {
                    for (k, v) in o {
                        println!("{k:<22} {v}");
                    }
                }
            }
            Ok(())
        }
    }
}

fn features(a: &EvalFeaturesArgs) -> Result<()> {
    let name =
        a.fm.model
            .as_deref()
            .context("prep eval features needs --model NAME (a feature model, e.g. inception)")?;
    let mut m = FeatureModel::open(name, &a.fm)?;
    let f = m.features(&a.images)?;
    objstore::write_out(
        &a.out,
        &io::npy_bytes(&f.x, a.dtype)?,
        &a.fm.store.options(),
    )?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"out": a.out, "n": f.x.nrows(), "d": f.x.ncols(),
                "model": m.name, "model_key": m.sha256})
        );
    } else {
        eprintln!(
            "wrote {} ({} × {}, model {})",
            a.out.display(),
            f.x.nrows(),
            f.x.ncols(),
            m.name
        );
    }
    Ok(())
}

fn stats(a: &EvalStatsArgs) -> Result<()> {
    let f = match (&a.features, &a.images) {
        (Some(f), None) => {
            if a.fm.model.is_some() {
                bail!(
                    "--model computes features from --images; with --features F.npy leave it out"
                );
            }
            // A local .npy is streamed: never held whole for its statistics.
            if !objstore::is_url_path(f) {
                if let Some(s) = io::stats_from_npy_streamed(f)? {
                    let (n, d) = (s.n.unwrap_or(0), s.dim());
                    return write_stats(a, &s, n, d);
                }
            }
            objstore::read_features(f, &a.fm.store.options())?
        }
        (None, Some(images)) => {
            let name = a.fm.model.as_deref().with_context(|| {
                format!(
                    "--images {}: pass --model NAME (a feature model, e.g. inception)",
                    images.display()
                )
            })?;
            FeatureModel::open(name, &a.fm)?.features(images)?
        }
        (Some(_), Some(_)) => bail!("give either --features or --images, not both"),
        (None, None) => {
            bail!("prep eval stats needs --features F.npy or --images DIR --model NAME")
        }
    };
    let s = Stats::from_features(f.x.as_ref(), &f.what())?;
    write_stats(a, &s, f.x.nrows(), f.x.ncols())
}

fn write_stats(a: &EvalStatsArgs, s: &Stats, n: usize, d: usize) -> Result<()> {
    objstore::write_out(
        &a.out,
        &io::stats_npz_bytes(&a.out, s, a.compressed)?,
        &a.fm.store.options(),
    )?;
    if a.json {
        println!("{}", serde_json::json!({"out": a.out, "n": n, "d": d}));
    } else {
        eprintln!(
            "wrote {} (mu, sigma of {} samples × {} dims)",
            a.out.display(),
            n,
            d
        );
    }
    Ok(())
}

fn fid(a: &EvalFidArgs) -> Result<()> {
    let files = !is_image_input(&a.real) && !is_image_input(&a.gen);
    let (real, gen, reference) = if files {
        // Two statistics/feature files: read the second while the first is factored.
        let opts = a.fm.store.options();
        std::thread::scope(|scope| -> Result<_> {
            let gen = scope.spawn(|| objstore::load_stats(&a.gen, &opts));
            let real = objstore::load_stats(&a.real, &opts)?;
            let reference = FidReference::new(&real);
            let gen = gen
                .join()
                .map_err(|_| anyhow::anyhow!("reading {} panicked", a.gen.display()))??;
            Ok((real, gen, Some(reference)))
        })?
    } else {
        let mut model = LazyModel::new(&a.fm, a.fm.model.clone(), "--model");
        let real = model.stats(&a.real)?;
        let gen = model.stats(&a.gen)?;
        (real, gen, None)
    };
    if real.dim() != gen.dim() {
        bail!(
            "dimensions differ: {} has d = {}, {} has d = {}",
            a.real.display(),
            real.dim(),
            a.gen.display(),
            gen.dim()
        );
    }
    let v = match reference {
        Some(r) => r?.distance(&gen)?,
        None => frechet_distance(&real, &gen)?,
    };
    if a.json {
        println!("{}", serde_json::json!({ "fid": v }));
    } else {
        println!("{:<10} {:>14}", "metric", "value");
        println!("{:<10} {:>14.6}", "fid", v);
    }
    Ok(())
}

fn metrics(a: &EvalMetricsArgs) -> Result<()> {
    let which = compute::parse_metrics(&a.metrics)?;
    let opts = MetricOptions {
        seed: a.seed,
        kid_subsets: a.kid_subsets,
        kid_subset_size: a.kid_subset_size,
        prdc_k: a.prdc_k,
        fid_inf_points: a.fid_inf_points,
        ci_splits: a.ci_splits,
    };
    if which.contains(&Metric::Clip) && a.gen_text.is_none() {
        bail!("--metrics clip needs --gen-text T.npy: the CLIP text embeddings of the prompts, row i for generated image i");
    }
    let mut model = LazyModel::new(&a.fm, a.fm.model.clone(), "--model");
    let real = model.features(&a.real)?;
    let gen = model.features(&a.gen)?;
    // CLIP embeddings: given files or images through --clip-model; by default the images
    // of --real/--gen when they are images and --clip-model is given.
    let needs_clip = which
        .iter()
        .any(|m| matches!(m, Metric::Cmmd | Metric::Clip));
    let mut clip = LazyModel::new(&a.fm, a.clip_model.clone(), "--clip-model");
    let mut clip_of = |given: &Option<PathBuf>, images: &Path| -> Result<Option<io::Features>> {
        match given {
            Some(p) => clip.features(p).map(Some),
            None if needs_clip && a.clip_model.is_some() && is_image_input(images) => {
                clip.features(images).map(Some)
            }
            None => Ok(None),
        }
    };
    let real_clip = clip_of(&a.real_clip, &a.real)?;
    let gen_clip = clip_of(&a.gen_clip, &a.gen)?;
    let gen_text = a
        .gen_text
        .as_deref()
        .map(|p| objstore::read_features(p, &a.fm.store.options()))
        .transpose()?;
    let inputs = compute::Inputs {
        real: &real,
        gen: &gen,
        real_clip: real_clip.as_ref(),
        gen_clip: gen_clip.as_ref(),
        gen_text: gen_text.as_ref(),
    };
    let (values, per_sample) = compute::compute(&inputs, &which, &opts)?;
    if let (Some(p), Some(s)) = (&a.clip_per_sample, &per_sample) {
        let m = faer::Mat::from_fn(s.len(), 1, |i, _| s[i]);
        // Written as a 1-D float64 array.
        let arr = ndarray::Array1::from_shape_fn(s.len(), |i| m[(i, 0)]);
        let mut buf = Vec::new();
        ndarray_npy::WriteNpyExt::write_npy(&arr, &mut buf)?;
        objstore::write_out(p, &buf, &a.fm.store.options())?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&values)?);
    } else {
        eprintln!(
            "real: {} ({} × {}), generated: {} ({} × {}), seed {}",
            a.real.display(),
            real.x.nrows(),
            real.x.ncols(),
            a.gen.display(),
            gen.x.nrows(),
            gen.x.ncols(),
            a.seed
        );
        compute::print_table(&values);
    }
    Ok(())
}
