//! The sample-complexity study end to end on synthetic images: three image-directory
//! "checkpoints" with different N scored by the fixture feature model
//! (tests/fixtures/models/features_pool.onnx), `prep eval run` twice for the same night
//! (one set of rows), a second night with a regression, then `prep report`.
//! Needs the ONNX Runtime library (scripts/setup-ort).
//!
//! With `PREP_KEEP_REPORT=DIR` the report is copied to DIR for the headless-browser check
//! (scripts/test → tests/reference/check_report.py).

mod common;
mod s3;

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use prep::study::history;

const EVAL: usize = 32;

/// A synthetic image: smooth gradient + per-image pattern; `shift` moves its colours
/// (how far a "checkpoint" is from the real distribution).
fn img(i: u32, shift: f32) -> RgbImage {
    RgbImage::from_fn(48, 48, |x, y| {
        let base = |v: u32| v as f32;
        let r = base((x * 5 + i * 17) % 256) * (1.0 - shift) + 255.0 * shift;
        let g = base((y * 5 + i * 29) % 256);
        let b = base(((x + y) * 3 + i * 41) % 256) * (1.0 - shift * 0.5);
        Rgb([r as u8, g as u8, b as u8])
    })
}

fn write_set(dir: &Path, n: u32, shift: f32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        img(i, shift).save(dir.join(format!("{i:04}.png"))).unwrap();
    }
}

fn fixture_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/features_pool.onnx")
}

fn config(dir: &Path, name: &str, sets: &[(&str, u64, &str)]) -> PathBuf {
    let mut t = format!(
        r#"[study]
name = "color-study"
history = "history.parquet"
out = "nights"
eval_size = {EVAL}
metrics = ["fid", "kid", "prdc", "control"]
seed = 0
ci_splits = 4
dataset = "subsets.json"

[features]
model = "{}"
size = 32
batch = 8

[reference]
images = "real"

[validation]
images = "real"
conditions = "conditions"
"#,
        fixture_model().display()
    );
    for (ck, n, set) in sets {
        t.push_str(&format!(
            "\n[[checkpoint]]\nname = \"{ck}\"\ncondition = \"color\"\nsamples = {n}\nstep = 1000\nimages = \"{set}\"\n"
        ));
    }
    let p = dir.join(name);
    std::fs::write(&p, t).unwrap();
    p
}

fn eval(cfg: &Path, night: &str) -> std::process::Output {
    common::run_ok(&[
        "eval",
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--night",
        night,
    ])
}

#[test]
fn two_nights_one_report() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write_set(&d.join("real"), 40, 0.0);
    write_set(&d.join("conditions/color"), 40, 0.0);
    // Farther from the real set at small N.
    write_set(&d.join("gen/n1k"), 40, 0.45);
    write_set(&d.join("gen/n10k"), 40, 0.25);
    write_set(&d.join("gen/n100k"), 40, 0.12);
    write_set(&d.join("gen/n1m"), 40, 0.06);
    write_set(&d.join("gen/n1k-broken"), 40, 0.7);
    std::fs::write(d.join("subsets.json"), b"{\"seed\": 0}\n").unwrap();
    let night1 = config(
        d,
        "nightly.toml",
        &[
            ("color-n1k", 1000, "gen/n1k"),
            ("color-n10k", 10000, "gen/n10k"),
            ("color-n100k", 100000, "gen/n100k"),
            ("color-n1m", 1000000, "gen/n1m"),
        ],
    );
    eval(&night1, "2026-11-25");
    let h = d.join("history.parquet");
    let first = history::read(&h).unwrap();
    // 4 checkpoints × (fid, fid_inf, kid, precision, recall, density, coverage,
    // control_rmse).
    assert_eq!(first.len(), 4 * 8);
    let once = std::fs::read(&h).unwrap();
    // The same night again: still one set of rows, byte-identical file.
    eval(&night1, "2026-11-25");
    assert_eq!(history::read(&h).unwrap(), first);
    assert_eq!(std::fs::read(&h).unwrap(), once);
    let r = &first
        .iter()
        .find(|r| r.checkpoint == "color-n1k" && r.metric == "fid")
        .unwrap();
    assert_eq!(r.n_eval, EVAL as u64);
    assert_eq!(r.n_reference, Some(40));
    assert!(r.ci_low.unwrap() < r.value && r.value < r.ci_high.unwrap());
    assert!(r.model_sha256.starts_with("features="));
    assert_eq!(r.dataset_manifest_sha256.as_deref().map(str::len), Some(64));
    assert!(
        first.iter().any(|r| r.metric == "fid_inf"),
        "FID∞ beside FID"
    );
    // Quality grows with N on this synthetic data.
    let fid = |ck: &str| {
        first
            .iter()
            .find(|r| r.checkpoint == ck && r.metric == "fid")
            .unwrap()
            .value
    };
    assert!(fid("color-n1k") > fid("color-n10k") && fid("color-n10k") > fid("color-n100k"));
    assert!(fid("color-n100k") > fid("color-n1m"));
    // Controllability against the real images' colours: worse far from them.
    let ctl = |ck: &str| {
        first
            .iter()
            .find(|r| r.checkpoint == ck && r.metric == "control_rmse")
            .unwrap()
            .clone()
    };
    assert!(ctl("color-n1k").value > ctl("color-n1m").value);
    let c = ctl("color-n10k");
    assert!(c.ci_low.unwrap() <= c.value && c.value <= c.ci_high.unwrap());
    assert!(d.join("nights/2026-11-25/metrics.csv").exists());

    // Night 2: the 1k checkpoint got much worse.
    let night2 = config(
        d,
        "nightly2.toml",
        &[
            ("color-n1k", 1000, "gen/n1k-broken"),
            ("color-n10k", 10000, "gen/n10k"),
            ("color-n100k", 100000, "gen/n100k"),
            ("color-n1m", 1000000, "gen/n1m"),
        ],
    );
    eval(&night2, "2026-11-26");
    assert_eq!(history::read(&h).unwrap().len(), 2 * 4 * 8);

    let out = d.join("report");
    let o = common::run_ok(&[
        "report",
        "--history",
        h.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--target",
        "fid=0.5",
        "--config",
        night2.to_str().unwrap(),
    ]);
    assert!(
        common::stderr(&o).contains("night 2026-11-26: 32 rows"),
        "{}",
        common::stderr(&o)
    );
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    // 8 curves (one per metric, one condition) + 8 trend charts.
    assert_eq!(html.matches("<svg").count(), 16);
    assert!(
        html.contains("badge regression"),
        "the broken checkpoint is flagged"
    );
    assert!(html.contains("power-law fit"));
    assert!(html.contains("<h2 id=\"fid\">FID and FID∞</h2>"));
    assert!(
        html.contains("data:image/png;base64,"),
        "sample grids are inlined"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no network references"
    );
    assert!(!html.contains("<script"));
    report_on_s3_equals_local(&h, &out, &night2);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let regressed: Vec<(&str, &str)> = json["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "regression")
        .map(|c| {
            (
                c["checkpoint"].as_str().unwrap(),
                c["metric"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(regressed.contains(&("color-n1k", "fid")), "{regressed:?}");
    assert!(
        regressed.iter().all(|(c, _)| *c == "color-n1k"),
        "{regressed:?}"
    );
    // FID falls with N tonight: the fit has a positive exponent and uncertainties.
    let fits = json["fits"].as_array().unwrap();
    let fit = fits.iter().find(|f| f["metric"] == "fid").unwrap();
    assert!(fit["fit"]["params"]["b"].as_f64().unwrap() > 0.0, "{fit}");
    assert!(fit["fit"]["stderr"].is_array(), "{fit}");
    assert_eq!(fit["needed"]["target"], 0.5, "{fit}");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 32);

    if let Ok(keep) = std::env::var("PREP_KEEP_REPORT") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        for f in ["index.html", "metrics.csv", "metrics.json"] {
            std::fs::copy(out.join(f), keep.join(f)).unwrap();
        }
    }
}

#[test]
fn checkpoints_are_generated_with_the_toy_pipeline_then_scored_and_reported() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write_set(&d.join("real"), 8, 0.0);
    // The validation set: a prep-built dataset at the toy pipeline's 64×64.
    common::run_ok(&[
        "build",
        "--source",
        "demo",
        "--condition",
        "color",
        "--resolution",
        "64",
        "--image-format",
        "png",
        "--out",
        d.join("val-dataset").to_str().unwrap(),
        "--quiet",
    ]);
    // Two toy checkpoints (the fixture adapter under two training-sample counts).
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate");
    for n in ["n1000", "n5000"] {
        let dst = d.join("ckpt/color").join(n);
        std::fs::create_dir_all(&dst).unwrap();
        for f in ["model.onnx", "adapter.toml"] {
            std::fs::copy(fx.join("adapters/color").join(f), dst.join(f)).unwrap();
        }
    }
    let cfg = d.join("gen.toml");
    let write_cfg = |eval_size: usize| {
        std::fs::write(
            &cfg,
            format!(
                r#"[study]
name = "s"
history = "history.parquet"
eval_size = {eval_size}

[features]
model = "{}"
size = 32

[reference]
images = "real"

[validation]
dataset = "val-dataset"

[generation]
pipeline = "{}"
steps = 4
guidance = 7.5
seed = 0

[[checkpoint]]
name = "color-n1k"
condition = "color"
samples = 1000
path = "ckpt/color/n1000"

[[checkpoint]]
name = "color-n5k"
condition = "color"
samples = 5000
path = "ckpt/color/n5000"
"#,
                fixture_model().display(),
                fx.join("pipeline").display()
            ),
        )
        .unwrap()
    };
    write_cfg(4);
    let night = [
        "eval",
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--night",
        "2026-11-25",
    ];
    common::run_ok(&night);
    // The adapters ran through prep generate: images and its Parquet exist per checkpoint.
    let gen = |c: &str| d.join("2026-11-25/generated").join(c);
    for c in ["color-n1k", "color-n5k"] {
        assert!(gen(c).join("generated.parquet").is_file(), "{c}");
        let n = std::fs::read_dir(gen(c).join("images")).unwrap().count();
        assert!(n >= 4, "{c}: {n} images");
    }
    let hist = std::fs::read(d.join("history.parquet")).unwrap();
    // Same night again: the generated images are reused and the history is unchanged.
    common::run_ok(&night);
    assert_eq!(hist, std::fs::read(d.join("history.parquet")).unwrap());
    let rep = d.join("report");
    common::run_ok(&[
        "report",
        "--history",
        d.join("history.parquet").to_str().unwrap(),
        "--out",
        rep.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(rep.join("index.html")).unwrap();
    assert!(
        html.contains("color-n1k") && html.contains("<svg"),
        "report lacks the checkpoints"
    );

    // Too few images for the study's eval_size.
    std::fs::write(
        &cfg,
        format!(
            "[study]\nname = \"s\"\nhistory = \"history.parquet\"\neval_size = 20\n[features]\nmodel = \"{}\"\nsize = 32\n[reference]\nimages = \"real\"\n[[checkpoint]]\nname = \"a\"\ncondition = \"color\"\nsamples = 10\nimages = \"real\"\n",
            fixture_model().display()
        ),
    )
    .unwrap();
    let o = common::run(&[
        "eval",
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--night",
        "2026-11-25",
    ]);
    let e = common::stderr(&o);
    assert!(
        e.contains("holds 8 images, fewer than the study's eval_size = 20"),
        "{e}"
    );
    let o = common::run(&[
        "eval",
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--night",
        "2026-13-01",
    ]);
    assert!(common::stderr(&o).contains("expected a date YYYY-MM-DD"));
}

/// `prep report --history s3://… --out s3://…` (moto on loopback) writes the bytes of the
/// local report; skipped without moto unless `PREP_REQUIRE_MOTO` is set.
fn report_on_s3_equals_local(history: &Path, local: &Path, config: &Path) {
    use prep::sink::remote::{Remote, RemoteOptions};
    let Some(moto) = s3::Moto::start() else {
        return;
    };
    moto.bucket("evals");
    let opts = RemoteOptions {
        s3_endpoint: Some(moto.endpoint.clone()),
        unsafe_no_conditional_put: false,
    };
    let r = Remote::open("s3://evals/study", &opts).unwrap();
    r.put_mode(
        "history.parquet",
        std::fs::read(history).unwrap(),
        object_store::PutMode::Overwrite,
    )
    .unwrap();
    let o = common::run_ok(&[
        "report",
        "--history",
        "s3://evals/study/history.parquet",
        "--out",
        "s3://evals/reports/latest/",
        "--target",
        "fid=0.5",
        "--config",
        config.to_str().unwrap(),
        "--s3-endpoint",
        &moto.endpoint,
    ]);
    assert!(
        common::stderr(&o).contains("wrote s3://evals/reports/latest/index.html"),
        "{}",
        common::stderr(&o)
    );
    let rep = Remote::open("s3://evals/reports/latest", &opts).unwrap();
    for name in ["index.html", "metrics.csv", "metrics.json"] {
        let (got, _) = rep
            .get(name)
            .unwrap()
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(got, std::fs::read(local.join(name)).unwrap(), "{name}");
    }
    // A history that is not there names its URL.
    let e = common::stderr(&common::run(&[
        "report",
        "--history",
        "s3://evals/study/nope.parquet",
        "--out",
        "s3://evals/reports/x",
        "--s3-endpoint",
        &moto.endpoint,
    ]));
    assert!(e.contains("s3://evals/study/nope.parquet"), "{e}");
}
