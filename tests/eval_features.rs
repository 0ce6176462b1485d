//! `prep eval` with ONNX feature models (fixtures from make_feature_models.py): features of
//! image directories, Parquet columns and `prep build` outputs; the pytorch-fid, clean-fid
//! and CLIP preprocessing; the feature cache; `--images/--model` in stats, fid and metrics;
//! and the errors. Needs the ONNX Runtime library (scripts/setup-ort).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use image::{Rgb, RgbImage};
use ndarray::Array2;
use ndarray_npy::ReadNpyExt;

fn read_npy(p: &Path) -> Array2<f32> {
    Array2::<f32>::read_npy(std::fs::File::open(p).unwrap()).unwrap()
}

/// Uniform images (names sort in this order) of various sizes and one photo.
fn images(dir: &Path) -> PathBuf {
    let root = dir.join("imgs");
    std::fs::create_dir_all(&root).unwrap();
    RgbImage::from_pixel(64, 48, Rgb([255, 0, 51]))
        .save(root.join("a.png"))
        .unwrap();
    RgbImage::from_pixel(300, 500, Rgb([0, 128, 255]))
        .save(root.join("b.png"))
        .unwrap();
    photo(97, 61, 3).save(root.join("c.png")).unwrap();
    std::fs::write(root.join("notes.txt"), "not an image").unwrap();
    root
}

fn add(cache: &Path, name: &str, file: &str, like: &str) {
    ok(prep_in(
        cache,
        &[
            "models",
            "add",
            name,
            "--file",
            fixture(file).to_str().unwrap(),
            "--like",
            like,
        ],
    ));
}

#[test]
fn inception_contract_features_are_exact_for_uniform_images_and_cached() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let imgs = images(t.path());
    add(&cache, "incfx", "inception_fx.onnx", "inception");
    let out = t.path().join("f.npy");
    let o = ok(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--batch-size",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    ));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["n"].as_u64(), j["d"].as_u64()), (Some(3), Some(1587)));
    assert!(
        stderr(&o).contains("3 computed, 0 from the cache"),
        "{}",
        stderr(&o)
    );
    let f = read_npy(&out);
    assert_eq!(f.dim(), (3, 1587));
    // pytorch-fid: x/255 → bilinear (a uniform image stays uniform) → 2x − 1; the fixture
    // averages 13×13 blocks per channel (529 features each).
    let want = |v: f32| 2.0 * (v / 255.0) - 1.0;
    for (row, rgb) in [(0usize, [255.0, 0.0, 51.0]), (1, [0.0, 128.0, 255.0])] {
        for (c, &v) in rgb.iter().enumerate() {
            for k in 0..529 {
                let got = f[(row, c * 529 + k)];
                assert!(
                    (got - want(v)).abs() < 2e-6,
                    "row {row} c {c}: {got} vs {}",
                    want(v)
                );
            }
        }
    }
    // The photo's features vary (its pixels do).
    let r2: Vec<f32> = f.row(2).to_vec();
    assert!(r2.iter().any(|&v| (v - r2[0]).abs() > 0.05));

    // Again: everything from the cache, identical bytes; --no-cache recomputes the same.
    let out2 = t.path().join("f2.npy");
    let o = ok(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--out",
            out2.to_str().unwrap(),
        ],
    ));
    assert!(
        stderr(&o).contains("0 computed, 3 from the cache"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
    let out3 = t.path().join("f3.npy");
    let o = ok(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--no-cache",
            "--batch-size",
            "3",
            "--out",
            out3.to_str().unwrap(),
        ],
    ));
    assert!(stderr(&o).contains("3 computed, 0 from the cache"));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out3).unwrap());

    // clean-fid's clean mode: (x − 128) / 128 and another cache key.
    let clean = t.path().join("clean.npy");
    let o = ok(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--preprocess",
            "clean",
            "--out",
            clean.to_str().unwrap(),
        ],
    ));
    assert!(stderr(&o).contains("3 computed"));
    let c = read_npy(&clean);
    assert!((c[(0, 0)] - (255.0 - 128.0) / 128.0).abs() < 1e-6);
    assert!((c[(1, 529)] - 0.0).abs() < 1e-6);
    assert!((c[(1, 2 * 529)] - (255.0 - 128.0) / 128.0).abs() < 1e-6);
}

#[test]
fn clip_contract_selects_the_named_output_and_stats_fid_metrics_take_images() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let imgs = images(t.path());
    add(&cache, "clipfx", "clip_fx.onnx", "clip-vit-l14");
    add(&cache, "incfx", "inception_fx.onnx", "inception");
    let out = t.path().join("clip.npy");
    ok(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "clipfx",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let f = read_npy(&out);
    // image_embeds [N, 588, 1, 1], not last_hidden_state [N, 3, 14, 14] (also 588 values,
    // but in another order is not distinguishable by size — check the values): a uniform
    // image gives (v/255 − mean)/std per channel, channel-major (196 values each).
    assert_eq!(f.dim(), (3, 588));
    let mean = [0.48145466f64, 0.4578275, 0.40821073].map(|v| v as f32);
    let std = [0.26862954f64, 0.26130258, 0.27577711].map(|v| v as f32);
    for (c, v) in [255.0f32, 0.0, 51.0].iter().enumerate() {
        let want = (v / 255.0 - mean[c]) / std[c];
        assert!(
            (f[(0, c * 196 + 5)] - want).abs() < 1e-5,
            "c {c}: {} vs {want}",
            f[(0, c * 196 + 5)]
        );
    }

    // stats from images equal stats from the feature file.
    let feat = t.path().join("inc.npy");
    ok(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--out",
            feat.to_str().unwrap(),
        ],
    ));
    let s1 = t.path().join("s1.npz");
    let s2 = t.path().join("s2.npz");
    ok(prep_in(
        &cache,
        &[
            "eval",
            "stats",
            "--features",
            feat.to_str().unwrap(),
            "--out",
            s1.to_str().unwrap(),
        ],
    ));
    ok(prep_in(
        &cache,
        &[
            "eval",
            "stats",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--out",
            s2.to_str().unwrap(),
        ],
    ));
    assert_eq!(std::fs::read(&s1).unwrap(), std::fs::read(&s2).unwrap());

    // FID of a set of images against itself is 0, against its features file too.
    let o = ok(prep_in(
        &cache,
        &[
            "eval",
            "fid",
            "--real",
            imgs.to_str().unwrap(),
            "--gen",
            feat.to_str().unwrap(),
            "--model",
            "incfx",
            "--json",
        ],
    ));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["fid"].as_f64().unwrap().abs() < 1e-6, "{j}");
    let o = ok(prep_in(
        &cache,
        &[
            "eval",
            "metrics",
            "--real",
            imgs.to_str().unwrap(),
            "--gen",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--metrics",
            "kid,cmmd",
            "--clip-model",
            "clipfx",
            "--kid-subset-size",
            "3",
            "--json",
        ],
    ));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["cmmd"].as_f64().unwrap().abs() < 1e-9, "{j}");
    assert!(j["kid"]["mean"].is_number(), "{j}");
}

#[test]
fn parquet_and_build_outputs_are_image_sets() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    add(&cache, "incfx", "inception_fx.onnx", "inception");
    let out = t.path().join("demo");
    ok(prep_in(
        &cache,
        &[
            "build",
            "--source",
            "demo",
            "--condition",
            "color",
            "--resolution",
            "64",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ],
    ));
    let rows = read_rows(
        &std::fs::read_dir(out.join("data"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .0;
    let f1 = t.path().join("img.npy");
    ok(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            out.to_str().unwrap(),
            "--model",
            "incfx",
            "--out",
            f1.to_str().unwrap(),
        ],
    ));
    assert_eq!(read_npy(&f1).nrows(), rows.len());
    // The condition column of the same output, by name; and one shard file with :COLUMN.
    let spec = format!("{}:color", out.display());
    let f2 = t.path().join("cond.npy");
    ok(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            &spec,
            "--model",
            "incfx",
            "--out",
            f2.to_str().unwrap(),
        ],
    ));
    assert_eq!(read_npy(&f2).nrows(), rows.len());
    assert_ne!(read_npy(&f1), read_npy(&f2));
    // Rows decode the same bytes as the image files written out from the Parquet rows.
    let dir = t.path().join("fromparquet");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, r) in rows.iter().enumerate() {
        std::fs::write(dir.join(format!("{i:03}.png")), &r.images["image"].0).unwrap();
    }
    let f3 = t.path().join("files.npy");
    ok(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            dir.to_str().unwrap(),
            "--model",
            "incfx",
            "--out",
            f3.to_str().unwrap(),
        ],
    ));
    assert_eq!(read_npy(&f1), read_npy(&f3));
    let e = err(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            &format!("{}:nope", out.display()),
            "--model",
            "incfx",
            "--out",
            f3.to_str().unwrap(),
        ],
    ));
    assert!(e.contains("no column \"nope\""), "{e}");
}

#[test]
fn feature_commands_explain_bad_input() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let imgs = images(t.path());
    let out = t.path().join("f.npy");
    let o = t.path().join("x.npz");
    // Images without --model.
    let e = err(prep_in(
        &cache,
        &[
            "eval",
            "fid",
            "--real",
            imgs.to_str().unwrap(),
            "--gen",
            imgs.to_str().unwrap(),
        ],
    ));
    assert!(e.contains("pass --model NAME"), "{e}");
    let e = err(prep_in(
        &cache,
        &[
            "eval",
            "stats",
            "--images",
            imgs.to_str().unwrap(),
            "--out",
            o.to_str().unwrap(),
        ],
    ));
    assert!(e.contains("pass --model NAME"), "{e}");
    // A condition model is not a feature model.
    add(&cache, "edge", "edge_nhwc.onnx", "hed");
    let e = err(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "edge",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(e.contains("not a feature model"), "{e}");
    // An unpinned built-in without a file says how to get one.
    let e = err(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "inception",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(e.contains("prep models add inception"), "{e}");
    // A file that is not the pinned one is refused.
    add(&cache, "incfx", "inception_fx.onnx", "inception");
    let e = err(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--model-file",
            fixture("clip_fx.onnx").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(e.contains("sha256"), "{e}");
    // An undecodable image names the file.
    std::fs::write(imgs.join("d.png"), b"not a png").unwrap();
    let e = err(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(e.contains("d.png"), "{e}");
    assert!(!out.exists());
    // --preprocess clean on a short-side (CLIP) model is refused.
    add(&cache, "clipfx", "clip_fx.onnx", "clip-vit-l14");
    std::fs::remove_file(imgs.join("d.png")).unwrap();
    let e = err(prep_in(
        &cache,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "clipfx",
            "--preprocess",
            "clean",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(e.contains("fixed-size"), "{e}");
}

#[test]
fn text_tower_gets_clip_token_ids_and_the_attention_mask() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    add(&cache, "textfx", "text_fx.onnx", "clip-vit-l14-text");
    let tok =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate/pipeline/tokenizer");
    let prompts = ["a photo of a cat", "", &"a cat ".repeat(60)];
    let pf = t.path().join("prompts.txt");
    std::fs::write(&pf, prompts.join("\n")).unwrap();
    let out = t.path().join("t.npy");
    ok(prep_in(
        &cache,
        &[
            "eval",
            "text",
            "--prompts",
            pf.to_str().unwrap(),
            "--model",
            "textfx",
            "--tokenizer",
            tok.to_str().unwrap(),
            "--batch-size",
            "2",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let f = read_npy(&out);
    assert_eq!(f.dim(), (3, 9));
    let tk = prep::tokenize::ClipTokenizer::from_dir(&tok).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let ids = tk.encode(p).unwrap();
        for k in 0..8 {
            assert_eq!(f[(i, k)], ids[k] as f32, "prompt {i} token {k}");
        }
        let end = ids.iter().position(|&v| v == 49407).unwrap();
        assert_eq!(f[(i, 8)], (end + 1) as f32, "prompt {i}: attended tokens");
    }
    assert_eq!(f[(0, 0)], 49406.0);
    assert_eq!((f[(1, 1)], f[(1, 8)]), (49407.0, 2.0)); // empty prompt: bos, eos
    assert_eq!(f[(2, 8)], 77.0); // truncated: the end token is kept in the last slot
                                 // Without a tokenizer the error says where to put one.
    let e = err(prep_in(
        &cache,
        &[
            "eval",
            "text",
            "--prompts",
            pf.to_str().unwrap(),
            "--model",
            "textfx",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(e.contains("--tokenizer"), "{e}");
    // An image model is not a text model.
    add(&cache, "incfx", "inception_fx.onnx", "inception");
    let e = err(prep_in(
        &cache,
        &[
            "eval",
            "text",
            "--prompts",
            pf.to_str().unwrap(),
            "--model",
            "incfx",
            "--tokenizer",
            tok.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(e.contains("not a text model"), "{e}");
}
