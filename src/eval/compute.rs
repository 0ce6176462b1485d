//! Which metrics to compute on which feature sets, and the result object.
//!
//! FID's Σ₁ is always the real set's, so its eigendecomposition is done once and shared by
//! FID, FID∞ and the split CIs. CMMD runs on the CLIP embeddings (`--real-clip`/`--gen-clip`,
//! else the main feature files); CLIP score pairs `--gen-clip` (else `--gen`) with
//! `--gen-text` row by row.

use anyhow::{bail, Result};
use serde::Serialize;

use super::io::{Dtype, Features};
use crate::metrics::rng::{stream, Rng};
use crate::metrics::splits::{self, SplitSummary};
use crate::metrics::{
    check_features, check_same_dim, clip, cmmd, fid_inf, kid, prdc, FidReference, Stats,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Fid,
    Kid,
    Cmmd,
    Prdc,
    Clip,
    FidInf,
}

impl Metric {
    pub const ALL: [(&'static str, Metric); 6] = [
        ("fid", Metric::Fid),
        ("kid", Metric::Kid),
        ("cmmd", Metric::Cmmd),
        ("prdc", Metric::Prdc),
        ("clip", Metric::Clip),
        ("fid-inf", Metric::FidInf),
    ];
}

pub fn parse_metrics(s: &str) -> Result<Vec<Metric>> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let name = name.to_ascii_lowercase().replace('_', "-");
        let Some((_, m)) = Metric::ALL.iter().find(|(n, _)| *n == name) else {
            bail!(
                "unknown metric {name:?}; known: {}",
                Metric::ALL
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if !out.contains(m) {
            out.push(*m);
        }
    }
    if out.is_empty() {
        bail!("no metrics requested (--metrics fid,kid,cmmd,prdc,clip,fid-inf)");
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct MetricOptions {
    pub seed: u64,
    pub kid_subsets: usize,
    pub kid_subset_size: usize,
    pub prdc_k: usize,
    pub fid_inf_points: usize,
    pub ci_splits: Option<usize>,
}

impl Default for MetricOptions {
    fn default() -> Self {
        MetricOptions {
            seed: 0,
            kid_subsets: 100,
            kid_subset_size: 1000,
            prdc_k: 5,
            fid_inf_points: 15,
            ci_splits: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct KidValue {
    pub mean: f64,
    pub std: f64,
}

/// The JSON object of `prep eval metrics --json`: only the requested keys appear.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MetricValues {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fid: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<KidValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmmd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fid_inf: Option<f64>,
    /// With `--ci-splits K`: FID of K disjoint generated splits against the full reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fid_splits: Option<SplitSummary>,
    /// With `--ci-splits K`: CMMD of K disjoint generated splits against the full reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmmd_splits: Option<SplitSummary>,
}

pub struct Inputs<'a> {
    pub real: &'a Features,
    pub gen: &'a Features,
    pub real_clip: Option<&'a Features>,
    pub gen_clip: Option<&'a Features>,
    pub gen_text: Option<&'a Features>,
}

/// Compute `which` on `inputs`; also returns the per-sample CLIP scores when `clip` ran.
pub fn compute(
    inputs: &Inputs<'_>,
    which: &[Metric],
    opts: &MetricOptions,
) -> Result<(MetricValues, Option<Vec<f64>>)> {
    let (real, gen) = (inputs.real, inputs.gen);
    let (rw, gw) = (real.what(), gen.what());
    check_features(real.x.as_ref(), &rw, 2)?;
    check_features(gen.x.as_ref(), &gw, 2)?;
    check_same_dim(real.x.as_ref(), &rw, gen.x.as_ref(), &gw)?;
    let has = |m| which.contains(&m);
    let mut v = MetricValues::default();
    let mut per_sample = None;

    let needs_ref = has(Metric::Fid) || has(Metric::FidInf);
    let reference = if needs_ref {
        Some(FidReference::new(&Stats::from_checked(real.x.as_ref()))?)
    } else {
        None
    };
    if let Some(r) = &reference {
        if has(Metric::Fid) {
            let gs = Stats::from_checked(gen.x.as_ref());
            v.fid = Some(r.distance(&gs)?);
        }
        if has(Metric::FidInf) {
            let mut rng = Rng::new(opts.seed, stream::FID_INF);
            v.fid_inf = Some(
                fid_inf::fid_infinity(r, gen.x.as_ref(), opts.fid_inf_points, &mut rng)?.fid_inf,
            );
        }
    }
    if has(Metric::Kid) {
        let mut rng = Rng::new(opts.seed, stream::KID);
        let k = kid::kid(
            real.x.as_ref(),
            gen.x.as_ref(),
            opts.kid_subsets,
            opts.kid_subset_size,
            &mut rng,
        )?;
        v.kid = Some(KidValue {
            mean: k.mean,
            std: k.std,
        });
    }
    if has(Metric::Prdc) {
        let f32d = real.dtype == Dtype::F32 && gen.dtype == Dtype::F32;
        let p = prdc::prdc(real.x.as_ref(), gen.x.as_ref(), opts.prdc_k, f32d)?;
        v.precision = Some(p.precision);
        v.recall = Some(p.recall);
        v.density = Some(p.density);
        v.coverage = Some(p.coverage);
    }
    let real_clip = inputs.real_clip.unwrap_or(real);
    let gen_clip = inputs.gen_clip.unwrap_or(gen);
    if has(Metric::Cmmd) {
        for f in [real_clip, gen_clip] {
            check_features(f.x.as_ref(), &f.what(), 1)?;
        }
        check_same_dim(
            real_clip.x.as_ref(),
            &real_clip.what(),
            gen_clip.x.as_ref(),
            &gen_clip.what(),
        )?;
        v.cmmd = Some(cmmd::cmmd(real_clip.x.as_ref(), gen_clip.x.as_ref())?);
    }
    if has(Metric::Clip) {
        let Some(text) = inputs.gen_text else {
            bail!("--metrics clip needs --gen-text T.npy: the CLIP text embeddings of the prompts, row i for generated image i");
        };
        check_features(gen_clip.x.as_ref(), &gen_clip.what(), 1)?;
        check_features(text.x.as_ref(), &text.what(), 1)?;
        let c = clip::clip_score(
            gen_clip.x.as_ref(),
            &gen_clip.what(),
            text.x.as_ref(),
            &text.what(),
        )?;
        v.clip_score = Some(c.score);
        per_sample = Some(c.per_sample);
    }
    if let Some(k) = opts.ci_splits {
        if has(Metric::Fid) {
            let mut rng = Rng::new(opts.seed, stream::SPLITS);
            let parts = splits::disjoint_splits(gen.x.nrows(), k, 2, &mut rng)?;
            let r = reference.as_ref().expect("reference built for fid");
            let mut vals = Vec::new();
            for idx in &parts {
                let sub = crate::metrics::gather_rows(gen.x.as_ref(), idx);
                vals.push(r.distance(&Stats::from_checked(sub.as_ref()))?);
            }
            v.fid_splits = Some(splits::summarize(vals, parts[0].len()));
        }
        if has(Metric::Cmmd) {
            let mut rng = Rng::new(opts.seed, stream::SPLITS);
            let parts = splits::disjoint_splits(gen_clip.x.nrows(), k, 1, &mut rng)?;
            let mut vals = Vec::new();
            for idx in &parts {
                let sub = crate::metrics::gather_rows(gen_clip.x.as_ref(), idx);
                vals.push(cmmd::cmmd(real_clip.x.as_ref(), sub.as_ref())?);
            }
            v.cmmd_splits = Some(splits::summarize(vals, parts[0].len()));
        }
    }
    Ok((v, per_sample))
}

/// A readable two-column table on stdout.
pub fn print_table(v: &MetricValues) {
    println!("{:<12} {:>14}", "metric", "value");
    let row = |name: &str, x: Option<f64>| {
        if let Some(x) = x {
            println!("{name:<12} {x:>14.6}");
        }
    };
    row("fid", v.fid);
    if let Some(k) = v.kid {
        println!("{:<12} {:>14.6e} ± {:.3e}", "kid", k.mean, k.std);
    }
    row("cmmd", v.cmmd);
    row("precision", v.precision);
    row("recall", v.recall);
    row("density", v.density);
    row("coverage", v.coverage);
    row("clip_score", v.clip_score);
    row("fid_inf", v.fid_inf);
    for (name, s) in [("fid", &v.fid_splits), ("cmmd", &v.cmmd_splits)] {
        if let Some(s) = s {
            println!(
                "{name} over {} disjoint splits of {}: {:.6} ± {:.6} (std)",
                s.splits, s.split_size, s.mean, s.std
            );
        }
    }
}
