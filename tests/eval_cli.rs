//! `prep eval` end to end on synthetic feature files: `eval run` writes metrics.json and
//! metrics.csv with one row per entry; image paths say they need the model runtime.

use std::path::Path;
use std::process::Command;

use faer::Mat;
use prep::eval::io::{write_features, write_stats_npz, Dtype};
use prep::metrics::Stats;

fn prep() -> Command {
    Command::new(env!("CARGO_BIN_EXE_prep"))
}

fn features(n: usize, d: usize, seed: u64, shift: f64) -> Mat<f64> {
    let mut r = prep::metrics::rng::Rng::new(seed, 0);
    Mat::from_fn(n, d, |_, _| r.below(1_000_001) as f64 / 1e6 - 0.5 + shift)
}

fn write(dir: &Path, name: &str, x: &Mat<f64>) {
    write_features(&dir.join(name), x, Dtype::F32).unwrap();
}

#[test]
fn eval_run_writes_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "real.npy", &features(60, 8, 1, 0.0));
    write(d, "gen_a.npy", &features(50, 8, 2, 0.2));
    write(d, "gen_b.npy", &features(40, 8, 3, 0.05));
    std::fs::write(
        d.join("eval.toml"),
        r#"
out = "result"
metrics = ["fid", "kid", "prdc", "fid-inf"]
seed = 3
[reference]
features = "real.npy"
[[entry]]
name = "a"
condition = "color"
samples = 1000
step = 10
features = "gen_a.npy"
[[entry]]
name = "b"
samples = 5000
features = "gen_b.npy"
"#,
    )
    .unwrap();
    let out = prep()
        .args(["eval", "run", "--config"])
        .arg(d.join("eval.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("result/metrics.json")).unwrap()).unwrap();
    let rows = json["entries"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["name"], "a");
    assert_eq!(rows[0]["samples"], 1000);
    assert_eq!(rows[0]["n_eval"], 50);
    for k in [
        "fid",
        "precision",
        "recall",
        "density",
        "coverage",
        "fid_inf",
    ] {
        assert!(rows[1][k].as_f64().unwrap().is_finite(), "{k}");
    }
    assert!(rows[0]["kid"]["mean"].as_f64().is_some());
    // The farther set scores worse.
    assert!(rows[0]["fid"].as_f64().unwrap() > rows[1]["fid"].as_f64().unwrap());
    let csv = std::fs::read_to_string(d.join("result/metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("name,condition,samples,step,n_eval,fid,kid_mean,kid_std,cmmd"));
    assert!(lines[1].starts_with("a,color,1000,10,50,"));
    assert!(lines[2].starts_with("b,,5000,,40,"));
    // Same seed, same numbers.
    let again = prep()
        .args(["eval", "run", "--json", "--config"])
        .arg(d.join("eval.toml"))
        .output()
        .unwrap();
    assert!(again.status.success());
    let json2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("result/metrics.json")).unwrap()).unwrap();
    assert_eq!(json, json2);
}

#[test]
fn eval_run_with_stats_entries_and_fid_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let real = Stats::from_features(features(30, 4, 1, 0.0).as_ref(), "r").unwrap();
    let gen = Stats::from_features(features(30, 4, 2, 0.3).as_ref(), "g").unwrap();
    write_stats_npz(&d.join("real.npz"), &real, false).unwrap();
    write_stats_npz(&d.join("gen.npz"), &gen, true).unwrap();
    std::fs::write(
        d.join("e.toml"),
        "metrics = [\"fid\"]\n[reference]\nstats = \"real.npz\"\n[[entry]]\nname = \"g\"\nsamples = 1\nstats = \"gen.npz\"\n",
    )
    .unwrap();
    let out = prep()
        .args(["eval", "run", "--config"])
        .arg(d.join("e.toml"))
        .arg("--out")
        .arg(d.join("o"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = prep::metrics::frechet_distance(&real, &gen).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("o/metrics.json")).unwrap()).unwrap();
    let got = json["entries"][0]["fid"].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-12 * want.abs(), "{got} {want}");
    // KID needs features: a stats entry is refused before anything is computed.
    std::fs::write(
        d.join("k.toml"),
        "metrics = [\"fid\", \"kid\"]\nout = \"o2\"\n[reference]\nstats = \"real.npz\"\n[[entry]]\nname = \"g\"\nsamples = 1\nstats = \"gen.npz\"\n",
    )
    .unwrap();
    let out = prep()
        .args(["eval", "run", "--config"])
        .arg(d.join("k.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("k.toml"));
    assert!(!d.join("o2").exists());
}

#[test]
fn image_inputs_need_a_feature_model_that_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let imgs = dir.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    image::RgbImage::new(8, 8).save(imgs.join("a.png")).unwrap();
    // Images without --model: say which flag computes their features.
    let out = prep()
        .env("PREP_CACHE", &cache)
        .args(["eval", "metrics", "--gen"])
        .arg(&imgs)
        .arg("--real")
        .arg(&imgs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --model NAME"));
    // The built-in inception entry without a file: say how to get one.
    let out = prep()
        .env("PREP_CACHE", &cache)
        .args(["eval", "features", "--images"])
        .arg(&imgs)
        .args(["--model", "inception", "--out", "x.npy"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("prep models add inception --file F.onnx --like inception"));
    // An empty directory is no image set.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = prep()
        .env("PREP_CACHE", &cache)
        .args(["eval", "fid", "--real"])
        .arg(&empty)
        .arg("--gen")
        .arg(&imgs)
        .args(["--model", "inception"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
