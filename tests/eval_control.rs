//! `prep eval control`: conditions re-extracted from "generated" images (here the
//! dataset's own images, then altered ones) with the reference's pipeline and compared
//! with the reference conditions. Needs the ONNX Runtime library (scripts/setup-ort).

mod common;

use std::path::Path;

use common::*;

fn control(cache: &Path, cond: &str, reference: &Path, gen: &Path) -> serde_json::Value {
    let o = ok(prep_in(
        cache,
        &[
            "eval",
            "control",
            "--condition",
            cond,
            "--reference",
            reference.to_str().unwrap(),
            "--gen",
            gen.to_str().unwrap(),
            "--json",
        ],
    ));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Write column `col` of every row of a build output as `KEY.png` (last key segment).
fn export(out: &Path, col: &str, dir: &Path, alter: impl Fn(&mut image::RgbImage)) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(out.join("data")).unwrap() {
        let (rows, _) = read_rows(&e.unwrap().path());
        for r in rows {
            let key = r.key.rsplit('/').next().unwrap().to_string();
            let mut img = image::load_from_memory(&r.images[col].0).unwrap().to_rgb8();
            alter(&mut img);
            img.save(dir.join(format!("{key}.png"))).unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn identical_images_give_perfect_scores_and_altered_ones_do_not() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    for (name, file, like) in [
        ("depth-fx", "depth.onnx", "depth"),
        ("pose-fx", "movenet.onnx", "keypose"),
    ] {
        ok(prep_in(
            &cache,
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
    let reference = t.path().join("ref");
    ok(prep_in(
        &cache,
        &[
            "build",
            "--source",
            "demo",
            "--condition",
            "canny,depth,keypose,seg",
            "--model",
            "depth=depth-fx",
            "--model",
            "keypose=pose-fx",
            "--keypose-from",
            "model",
            "--resolution",
            "96",
            "--image-format",
            "png",
            "--out",
            reference.to_str().unwrap(),
            "--quiet",
        ],
    ));
    let same = t.path().join("same");
    let n = export(&reference, "image", &same, |_| {});
    assert!(n >= 4);

    let j = control(&cache, "canny", &reference, &same);
    assert_eq!(j["n"].as_u64(), Some(n as u64), "{j}");
    assert_eq!(
        (
            j["edge_f1"].as_f64(),
            j["ssim"].as_f64(),
            j["psnr"].as_f64()
        ),
        (Some(1.0), Some(1.0), Some(100.0)),
        "{j}"
    );
    let j = control(&cache, "depth", &reference, &same);
    assert_eq!(j["depth_rmse"].as_f64(), Some(0.0), "{j}");
    let j = control(&cache, "keypose", &reference, &same);
    assert_eq!(j["oks_ap"].as_f64(), Some(1.0), "{j}");

    // Mirrored images: edges and depth move.
    let flipped = t.path().join("flipped");
    export(&reference, "image", &flipped, |im| {
        image::imageops::flip_horizontal_in_place(im)
    });
    let j = control(&cache, "canny", &reference, &flipped);
    let f1 = j["edge_f1"].as_f64().unwrap();
    assert!(f1 < 0.6, "{j}");
    assert!(j["ssim"].as_f64().unwrap() < 0.9, "{j}");
    let j = control(&cache, "depth", &reference, &flipped);
    assert!(j["depth_rmse"].as_f64().unwrap() > 5.0, "{j}");

    // Segmentation: predicted maps named by key.
    let seg = t.path().join("seg");
    export(&reference, "seg", &seg, |_| {});
    let j = control(&cache, "seg", &reference, &seg);
    assert_eq!(j["miou"].as_f64(), Some(1.0), "{j}");
    let seg2 = t.path().join("seg2");
    export(&reference, "seg", &seg2, |im| {
        image::imageops::flip_vertical_in_place(im)
    });
    let j = control(&cache, "seg", &reference, &seg2);
    assert!(j["miou"].as_f64().unwrap() < 1.0, "{j}");

    // No key in common: a clear error.
    let other = t.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    image::RgbImage::new(96, 96)
        .save(other.join("nokey.png"))
        .unwrap();
    let o = prep_in(
        &cache,
        &[
            "eval",
            "control",
            "--condition",
            "canny",
            "--reference",
            reference.to_str().unwrap(),
            "--gen",
            other.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no generated row matches"),
        "{}",
        stderr(&o)
    );
}
