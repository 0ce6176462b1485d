//! `prep report --history H --out reports/DATE/`: the study's nightly report.
//!
//! Writes (each atomically) `OUT/index.html` — one self-contained page: inline SVG charts,
//! inline CSS, sample images as `data:` URIs, no scripts, fonts or external references —
//! plus `OUT/metrics.csv` (tonight's rows) and `OUT/metrics.json` (tonight's rows, fits,
//! samples-needed answers, night-over-night comparisons).
//!
//! Sections: sample-complexity curves (per condition × metric, metric against N on a log
//! axis, CI bands, one line per training step, the power-law fit of the best step per N
//! dashed), fits (a, b, c ± standard errors, samples needed for each `--target`), trends
//! over nights per metric (one line per checkpoint) with regression badges, sample grids
//! (condition | generated | real per N), provenance.
//!
//! Regression: tonight is worse than the previous night with this checkpoint × metric and
//! their CIs do not overlap (lower-is-better metrics: tonight's CI low > last night's CI
//! high; higher-is-better the mirror). Metrics without a CI are compared but never badged.

pub mod html;
pub mod plot;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::eval::io::write_atomic;
use crate::study::fit::{self, Fit, Needed};
use crate::study::history::{self, HistoryRow};
use crate::study::nightly::lower_is_better;

const EXAMPLES: &str = "\
Examples:
  prep report --history out/study/history.parquet --out reports/2026-11-26/ --target fid=25
  prep report --history h.parquet --out r/ --night 2026-11-25 --config pipelines/nightly.toml
  prep report --history s3://evals/study/history.parquet --out s3://evals/reports/latest";

#[derive(Debug, Args, Clone)]
#[command(after_help = EXAMPLES)]
pub struct ReportArgs {
    /// The history store written by `prep eval run` (study configs).
    #[arg(long, value_name = "H.parquet")]
    pub history: PathBuf,
    /// Output directory (index.html, metrics.csv, metrics.json).
    #[arg(long)]
    pub out: PathBuf,
    /// The night to report (default: the latest in the history).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub night: Option<String>,
    /// The study to report when the history holds several.
    #[arg(long)]
    pub study: Option<String>,
    /// "How many samples for METRIC ≤ X" (≥ X for higher-is-better metrics); repeatable.
    #[arg(long, value_name = "METRIC=X")]
    pub target: Vec<String>,
    /// The study config, shown under provenance (its sha256 is checked against the history).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Sample-grid rows per N.
    #[arg(long, default_value_t = 3)]
    pub grid_rows: usize,
    #[command(flatten)]
    pub store: crate::cli::ReadStoreArgs,
}

/// One fitted curve.
#[derive(Debug, Clone, Serialize)]
pub struct CurveFit {
    pub condition: String,
    pub metric: String,
    /// Points fitted: the best step per N.
    pub points: Vec<(u64, f64)>,
    pub fit: Option<Fit>,
    /// Why there is no fit.
    pub note: Option<String>,
    pub needed: Option<Needed>,
}

/// Tonight against the previous night, per checkpoint × metric.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub checkpoint: String,
    pub metric: String,
    pub previous_night: String,
    pub previous: f64,
    pub tonight: f64,
    /// `regression`, `improvement` (beyond the CIs), `within CI`, `no CI`.
    pub verdict: String,
}

#[derive(Debug, Serialize)]
pub struct ReportData {
    pub study: String,
    pub night: String,
    pub nights: Vec<String>,
    pub rows: Vec<HistoryRow>,
    pub fits: Vec<CurveFit>,
    pub comparisons: Vec<Comparison>,
}

/// N → (best value over steps, its CI).
type BestPerN = BTreeMap<u64, (f64, Option<(f64, f64)>)>;

fn parse_targets(t: &[String]) -> Result<BTreeMap<String, f64>> {
    let mut m = BTreeMap::new();
    for s in t {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--target {s:?}: write METRIC=X, e.g. --target fid=25"))?;
        let x: f64 = v
            .trim()
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .with_context(|| format!("--target {s:?}: {v:?} is not a number"))?;
        m.insert(k.trim().to_ascii_lowercase().replace('-', "_"), x);
    }
    Ok(m)
}

/// "Best" of two values of `metric`.
fn better(metric: &str, a: f64, b: f64) -> bool {
    if lower_is_better(metric) {
        a < b
    } else {
        a > b
    }
}

/// Gather everything the page shows.
pub fn analyse(
    all: Vec<HistoryRow>,
    night: Option<&str>,
    study: Option<&str>,
    targets: &BTreeMap<String, f64>,
) -> Result<ReportData> {
    let studies: BTreeSet<&str> = all.iter().map(|r| r.study.as_str()).collect();
    let study = match (study, studies.len()) {
        (Some(s), _) if studies.contains(s) => s.to_string(),
        (Some(s), _) => bail!(
            "--study {s:?}: not in the history (studies: {})",
            studies.into_iter().collect::<Vec<_>>().join(", ")
        ),
        (None, 0) => bail!("the history is empty: run `prep eval run --config STUDY.toml` first"),
        (None, 1) => studies.into_iter().next().expect("one").to_string(),
        (None, _) => bail!(
            "the history holds several studies ({}); pick one with --study",
            studies.into_iter().collect::<Vec<_>>().join(", ")
        ),
    };
    let rows: Vec<HistoryRow> = all.into_iter().filter(|r| r.study == study).collect();
    let nights: Vec<String> = rows
        .iter()
        .map(|r| r.night.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let night = match night {
        Some(n) => {
            if !nights.iter().any(|x| x == n) {
                bail!(
                    "--night {n}: no rows for that night (nights: {})",
                    nights.join(", ")
                );
            }
            n.to_string()
        }
        None => nights.last().expect("non-empty").clone(),
    };
    let tonight: Vec<HistoryRow> = rows.iter().filter(|r| r.night == night).cloned().collect();

    // Fits: per condition × metric, best step per N.
    let mut fits = Vec::new();
    let mut groups: BTreeMap<(String, String), BestPerN> = BTreeMap::new();
    for r in &tonight {
        let e = groups
            .entry((r.condition.clone(), r.metric.clone()))
            .or_default();
        let ci = r.ci_low.zip(r.ci_high);
        match e.get(&r.samples) {
            Some((v, _)) if !better(&r.metric, r.value, *v) => {}
            _ => {
                e.insert(r.samples, (r.value, ci));
            }
        }
    }
    for ((condition, metric), pts) in groups {
        let n: Vec<f64> = pts.keys().map(|&k| k as f64).collect();
        let y: Vec<f64> = pts.values().map(|v| v.0).collect();
        let sigma: Option<Vec<f64>> = pts
            .values()
            .map(|v| v.1.map(|(lo, hi)| (hi - lo) / (2.0 * 1.96)))
            .collect();
        let (f, note) = match fit::fit(&n, &y, sigma.as_deref()) {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let needed = match (&f, targets.get(&metric)) {
            (Some(f), Some(&x)) => Some(f.needed(x, lower_is_better(&metric))),
            _ => None,
        };
        fits.push(CurveFit {
            condition,
            metric,
            points: pts.iter().map(|(k, v)| (*k, v.0)).collect(),
            fit: f,
            note,
            needed,
        });
    }

    // Night over night.
    let mut comparisons = Vec::new();
    for r in &tonight {
        let prev = rows
            .iter()
            .filter(|p| p.checkpoint == r.checkpoint && p.metric == r.metric && p.night < night)
            .max_by(|a, b| a.night.cmp(&b.night));
        let Some(p) = prev else { continue };
        let verdict = match (r.ci_low.zip(r.ci_high), p.ci_low.zip(p.ci_high)) {
            (Some((lo, hi)), Some((plo, phi))) => {
                let (worse, better_) = if lower_is_better(&r.metric) {
                    (lo > phi, hi < plo)
                } else {
                    (hi < plo, lo > phi)
                };
                if worse {
                    "regression"
                } else if better_ {
                    "improvement"
                } else {
                    "within CI"
                }
            }
            _ => "no CI",
        };
        comparisons.push(Comparison {
            checkpoint: r.checkpoint.clone(),
            metric: r.metric.clone(),
            previous_night: p.night.clone(),
            previous: p.value,
            tonight: r.value,
            verdict: verdict.into(),
        });
    }
    Ok(ReportData {
        study,
        night,
        nights,
        rows: tonight,
        fits,
        comparisons,
    })
}

/// Run `prep report`.
/// [`run`] with `--history` and `--out` local paths or object-store URLs. A remote history
/// is read from a temporary download; a remote `--out` is rendered into a temporary
/// directory and its three files are uploaded, each as one whole-object put (a reader sees
/// the previous file or the new one, never part of one).
pub fn run_anywhere(a: &ReportArgs) -> Result<ReportData> {
    use crate::eval::objstore::{is_url_path, local_file, write_out};
    let opts = a.store.options();
    let mut local = a.clone();
    let _history = if is_url_path(&a.history) {
        let copy = local_file(&a.history, &opts, "--history")?;
        local.history = copy.path().to_path_buf();
        Some(copy)
    } else {
        None
    };
    if !is_url_path(&a.out) {
        return run(&local);
    }
    let staging = tempfile::tempdir().context("cannot create a staging directory for --out")?;
    local.out = staging.path().to_path_buf();
    let data = run(&local)?;
    let base = a.out.to_string_lossy().trim_end_matches('/').to_string();
    for name in ["metrics.csv", "metrics.json", "index.html"] {
        let bytes = std::fs::read(staging.path().join(name))
            .with_context(|| format!("cannot read the rendered {name}"))?;
        write_out(Path::new(&format!("{base}/{name}")), &bytes, &opts)?;
    }
    Ok(data)
}

pub fn run(a: &ReportArgs) -> Result<ReportData> {
    if let Some(n) = &a.night {
        history::check_night(n)?;
    }
    if !a.history.exists() {
        bail!(
            "--history {}: no such file; `prep eval run --config STUDY.toml` creates it",
            a.history.display()
        );
    }
    let targets = parse_targets(&a.target)?;
    let all = history::read(&a.history)?;
    let data = analyse(
        all.clone(),
        a.night.as_deref(),
        a.study.as_deref(),
        &targets,
    )?;
    let config = match &a.config {
        Some(p) => Some((
            p.clone(),
            std::fs::read_to_string(p)
                .with_context(|| format!("--config {}: cannot read", p.display()))?,
        )),
        None => None,
    };
    let page = html::page(
        &data,
        &all,
        config.as_ref().map(|(p, t)| (p.as_path(), t.as_str())),
        a.grid_rows,
    )?;
    write_atomic(&a.out.join("index.html"), page.as_bytes())?;
    write_atomic(
        &a.out.join("metrics.csv"),
        &crate::study::nightly::rows_csv(&data.rows)?,
    )?;
    let mut json = serde_json::to_vec_pretty(&data)?;
    json.push(b'\n');
    write_atomic(&a.out.join("metrics.json"), &json)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(night: &str, ck: &str, n: u64, step: u64, metric: &str, v: f64, h: f64) -> HistoryRow {
        HistoryRow {
            night: night.into(),
            study: "s".into(),
            checkpoint: ck.into(),
            condition: "color".into(),
            samples: n,
            step: Some(step),
            metric: metric.into(),
            value: v,
            ci_low: Some(v - h),
            ci_high: Some(v + h),
            n_eval: 100,
            n_reference: Some(100),
            dataset_manifest_sha256: None,
            model_sha256: "features=x".into(),
            prep_version: "0.1.0".into(),
            config_sha256: "c".into(),
            images: None,
            real_images: None,
            condition_images: None,
        }
    }

    #[test]
    fn regressions_need_disjoint_cis_and_fits_use_the_best_step() {
        let mut rows = Vec::new();
        for (i, n) in [1000u64, 4000, 16000, 64000].iter().enumerate() {
            let f = 300.0 * (*n as f64).powf(-0.5) + 5.0;
            rows.push(row("2026-11-25", &format!("n{i}"), *n, 100, "fid", f, 0.1));
            // Tonight: n0 much worse (regression), n1 slightly worse (within CI), n2 better.
            let t = match i {
                0 => f + 2.0,
                1 => f + 0.1,
                2 => f - 1.0,
                _ => f,
            };
            rows.push(row("2026-11-26", &format!("n{i}"), *n, 100, "fid", t, 0.1));
            // A worse, later step at each N: the fit must use the best one.
            rows.push(row(
                "2026-11-26",
                &format!("n{i}-late"),
                *n,
                200,
                "fid",
                t + 3.0,
                0.1,
            ));
        }
        let targets = BTreeMap::from([("fid".to_string(), 6.5)]);
        let d = analyse(rows, None, None, &targets).unwrap();
        assert_eq!(d.night, "2026-11-26");
        let v: BTreeMap<&str, &str> = d
            .comparisons
            .iter()
            .map(|c| (c.checkpoint.as_str(), c.verdict.as_str()))
            .collect();
        assert_eq!(v["n0"], "regression");
        assert_eq!(v["n1"], "within CI");
        assert_eq!(v["n2"], "improvement");
        assert_eq!(v["n3"], "within CI");
        assert!(!v.contains_key("n0-late"), "no previous night for n0-late");
        let f = &d.fits[0];
        assert_eq!(f.points.len(), 4);
        assert!(f
            .points
            .iter()
            .all(|(n, y)| (300.0 * (*n as f64).powf(-0.5) + 5.0 - y).abs() <= 2.0 + 1e-9));
        assert!(f.fit.is_some(), "{:?}", f.note);
        assert!(f.needed.is_some());
        let e = analyse(Vec::new(), None, None, &targets)
            .unwrap_err()
            .to_string();
        assert!(e.contains("history is empty"), "{e}");
    }

    #[test]
    fn targets_parse() {
        let t = parse_targets(&["fid=25".into(), "Precision = 0.6".into()]).unwrap();
        assert_eq!(t["fid"], 25.0);
        assert_eq!(t["precision"], 0.6);
        assert!(parse_targets(&["fid".into()])
            .unwrap_err()
            .to_string()
            .contains("METRIC=X"));
    }
}
