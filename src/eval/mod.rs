//! `prep eval`: feature files in, metrics out.
//!
//! - [`io`]: `.npy` features and `.npz` statistics (read, write atomically).
//! - [`compute`]: which metrics, on which inputs → [`MetricValues`] (the JSON object).
//! - [`run`]: `prep eval run --config`: many entries against one reference → metrics.json/csv.
//! - [`extract`]: the `FeatureExtractor` seam for models (issue 4's runtime) and the
//!   feature cache keyed by (image sha256, model key).
//!
//! The math lives in `crate::metrics`; this module reads files, checks them (every error
//! names the file) and formats results.

pub mod compute;
pub mod extract;
pub mod io;
pub mod preprocess;
pub mod run;

use anyhow::{bail, Result};

use crate::cli::{EvalCommand, EvalFidArgs, EvalMetricsArgs, EvalStatsArgs};
use crate::metrics::{frechet_distance, Stats};

pub use compute::{Metric, MetricOptions, MetricValues};

/// The message for every path that needs a feature model before the runtime lands.
pub const NEEDS_RUNTIME: &str = "needs the model runtime (issue 4): computing features from images with --model is not available yet; pass .npy feature files (or .npz statistics) instead";

/// Dispatch `prep eval …`.
pub fn run(cmd: EvalCommand) -> Result<()> {
    match cmd {
        EvalCommand::Stats(a) => stats(&a),
        EvalCommand::Metrics(a) => metrics(&a),
        EvalCommand::Fid(a) => fid(&a),
        EvalCommand::Run(a) => {
            if let Some(text) = crate::study::nightly::study_text(&a.config)? {
                let r = crate::study::nightly::run(
                    &a.config,
                    &text,
                    a.night.as_deref(),
                    a.out.as_deref(),
                )?;
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                }
                return Ok(());
            }
            if let Some(n) = &a.night {
                bail!("--night {n}: {} is not a study config (no [study] table); only studies keep a history", a.config.display());
            }
            let rows = run::run_config(&a.config, a.out.as_deref())?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            }
            Ok(())
        }
        EvalCommand::Features(a) => bail!(
            "prep eval features --images {} --model {}: {NEEDS_RUNTIME}",
            a.images.display(),
            a.model
        ),
    }
}

fn stats(a: &EvalStatsArgs) -> Result<()> {
    let features = match (&a.features, &a.images, &a.model) {
        (Some(f), None, None) => f,
        (None, Some(_), _) | (_, _, Some(_)) => {
            bail!("prep eval stats --images/--model: {NEEDS_RUNTIME}")
        }
        (Some(_), Some(_), _) => bail!("give either --features or --images, not both"),
        (None, None, None) => bail!("prep eval stats needs --features F.npy"),
    };
    let f = io::read_features(features)?;
    let s = Stats::from_features(f.x.as_ref(), &f.what())?;
    io::write_stats_npz(&a.out, &s, a.compressed)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"out": a.out, "n": f.x.nrows(), "d": f.x.ncols()})
        );
    } else {
        eprintln!(
            "wrote {} (mu, sigma of {} samples × {} dims)",
            a.out.display(),
            f.x.nrows(),
            f.x.ncols()
        );
    }
    Ok(())
}

fn fid(a: &EvalFidArgs) -> Result<()> {
    if a.model.is_some() {
        bail!("prep eval fid --model: {NEEDS_RUNTIME}");
    }
    let real = io::load_stats(&a.real)?;
    let gen = io::load_stats(&a.gen)?;
    if real.dim() != gen.dim() {
        bail!(
            "dimensions differ: {} has d = {}, {} has d = {}",
            a.real.display(),
            real.dim(),
            a.gen.display(),
            gen.dim()
        );
    }
    let v = frechet_distance(&real, &gen)?;
    if a.json {
        println!("{}", serde_json::json!({ "fid": v }));
    } else {
        println!("{:<10} {:>14}", "metric", "value");
        println!("{:<10} {:>14.6}", "fid", v);
    }
    Ok(())
}

fn metrics(a: &EvalMetricsArgs) -> Result<()> {
    if a.model.is_some() {
        bail!("prep eval metrics --model: {NEEDS_RUNTIME}");
    }
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
    let real = io::read_features(&a.real)?;
    let gen = io::read_features(&a.gen)?;
    let load = |p: &Option<std::path::PathBuf>| p.as_deref().map(io::read_features).transpose();
    let real_clip = load(&a.real_clip)?;
    let gen_clip = load(&a.gen_clip)?;
    let gen_text = load(&a.gen_text)?;
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
        io::write_atomic(p, &buf)?;
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
