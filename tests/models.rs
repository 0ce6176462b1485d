//! Model-backed conditions with the fixture models of tests/fixtures/models (made by
//! make_models.py, outputs known in closed form): exact maps and keypoints, batch sizes
//! 1 and > 1 identical, and the errors (sha mismatch, truncated / invalid ONNX, wrong
//! input shape, missing model). Needs the ONNX Runtime library (scripts/setup-ort).
//! Tests with the real HED / MoveNet files run when PREP_REAL_MODELS is set.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use common::*;
use image::{Rgb, RgbImage};

/// A folder of PNG photos at exactly `side`×`side` (so the preprocessed image is the
/// photo itself); photo 0 is white-ish, photo 3 black.
fn folder(dir: &Path, side: u32, n: u32) -> PathBuf {
    let root = dir.join("photos");
    std::fs::create_dir_all(&root).unwrap();
    for i in 0..n {
        let img = match i {
            0 => RgbImage::from_pixel(side, side, Rgb([250, 250, 250])),
            3 => RgbImage::new(side, side),
            _ => photo(side, side, i * 5 + 1),
        };
        img.save(root.join(format!("p{i}.png"))).unwrap();
        std::fs::write(root.join(format!("p{i}.txt")), format!("photo {i}")).unwrap();
    }
    root
}

fn rows(out: &Path) -> Vec<TestRow> {
    read_rows(&out.join("data/part-00000.parquet")).0
}

#[test]
fn edge_and_depth_maps_are_exact_and_batching_does_not_change_them() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = folder(dir.path(), 64, 5);
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "edge-fx",
            "--file",
            fixture("edge_nhwc.onnx").to_str().unwrap(),
            "--like",
            "hed",
        ],
    ));
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "pidi-fx",
            "--file",
            fixture("edge_pidinet.onnx").to_str().unwrap(),
            "--like",
            "sketch",
        ],
    ));
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "depth-fx",
            "--file",
            fixture("depth.onnx").to_str().unwrap(),
            "--like",
            "depth",
        ],
    ));
    let build = |out: &Path, batch: &str, hed_model: &str| {
        ok(prep_in(
            &cache,
            &[
                "build",
                "--source",
                "folder",
                "--input",
                input.to_str().unwrap(),
                "--condition",
                "hed,sketch,depth",
                "--model",
                &format!("hed={hed_model}"),
                "--model",
                "sketch=edge-fx",
                "--model",
                "depth=depth-fx",
                "--resolution",
                "64",
                "--image-format",
                "png",
                "--batch-size",
                batch,
                "--threads",
                "2",
                "--quiet",
                "--out",
                out.to_str().unwrap(),
            ],
        ));
    };
    let a = dir.path().join("b1");
    let b = dir.path().join("b3");
    build(&a, "1", "edge-fx");
    build(&b, "3", "edge-fx");
    let pa = std::fs::read(a.join("data/part-00000.parquet")).unwrap();
    let pb = std::fs::read(b.join("data/part-00000.parquet")).unwrap();
    assert!(pa == pb, "batch size 1 and 3 must give identical shards");
    let rs = rows(&a);
    assert_eq!(rs.len(), 5);
    for r in &rs {
        let img = decode_rgb(&r.images["image"].0);
        let hed = decode_gray(&r.images["hed"].0);
        let sketch = decode_gray(&r.images["sketch"].0);
        let depth = decode_gray(&r.images["depth"].0);
        // Fused map = blue / 255: hed is the blue channel, sketch blue >= 128.
        for (x, y, p) in img.enumerate_pixels() {
            assert_eq!(hed.get_pixel(x, y).0[0], p.0[2], "{} hed at {x},{y}", r.key);
            let s = if p.0[2] >= 128 { 255 } else { 0 };
            assert_eq!(
                sketch.get_pixel(x, y).0[0],
                s,
                "{} sketch at {x},{y}",
                r.key
            );
        }
        // Depth output = red / 127.5 − 1, min–max normalised, truncated to uint8.
        let d: Vec<f32> = img.pixels().map(|p| p.0[0] as f32 / 127.5 - 1.0).collect();
        let min = d.iter().copied().fold(f32::INFINITY, f32::min);
        let max = d.iter().map(|v| v - min).fold(0f32, f32::max);
        let want: Vec<u8> = d
            .iter()
            .map(|v| {
                if max > 0.0 {
                    (((v - min) / max) * 255.0).clamp(0.0, 255.0) as u8
                } else {
                    0
                }
            })
            .collect();
        assert_eq!(depth.as_raw(), &want, "{} depth", r.key);
    }
    let ds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("dataset.json")).unwrap()).unwrap();
    let models = ds["config"]["models"].as_array().unwrap();
    assert_eq!(models.len(), 3);
    assert_eq!(models[2]["model"], "depth-fx");
    assert_eq!(models[2]["sha256"].as_str().unwrap().len(), 64);

    // An fp16 export of the depth model (float16 input and output) registered with the
    // same contract: prep feeds the normalised image rounded to float16 (nearest even)
    // and reads the float16 map back, so depth = minmax of f16(red / 127.5 − 1).
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "depth-fp16",
            "--file",
            fixture("depth_fp16.onnx").to_str().unwrap(),
            "--like",
            "depth",
        ],
    ));
    let h = dir.path().join("fp16");
    ok(prep_in(
        &cache,
        &[
            "build",
            "--source",
            "folder",
            "--input",
            input.to_str().unwrap(),
            "--condition",
            "depth",
            "--model",
            "depth=depth-fp16",
            "--resolution",
            "64",
            "--image-format",
            "png",
            "--batch-size",
            "2",
            "--quiet",
            "--out",
            h.to_str().unwrap(),
        ],
    ));
    for r in rows(&h) {
        let img = decode_rgb(&r.images["image"].0);
        let depth = decode_gray(&r.images["depth"].0);
        let d: Vec<f32> = img
            .pixels()
            .map(|p| half::f16::from_f32(p.0[0] as f32 / 127.5 - 1.0).to_f32())
            .collect();
        let min = d.iter().copied().fold(f32::INFINITY, f32::min);
        let max = d.iter().map(|v| v - min).fold(0f32, f32::max);
        let want: Vec<u8> = d
            .iter()
            .map(|v| {
                if max > 0.0 {
                    (((v - min) / max) * 255.0).clamp(0.0, 255.0) as u8
                } else {
                    0
                }
            })
            .collect();
        assert_eq!(depth.as_raw(), &want, "{} fp16 depth", r.key);
    }

    // PiDiNet contract (NCHW RGB / 255, last output fused = green / 255): hed = green.
    let c = dir.path().join("pidi");
    build(&c, "2", "pidi-fx");
    for r in rows(&c) {
        let img = decode_rgb(&r.images["image"].0);
        let hed = decode_gray(&r.images["hed"].0);
        assert!(img
            .enumerate_pixels()
            .all(|(x, y, p)| hed.get_pixel(x, y).0[0] == p.0[1]));
    }
}

#[test]
fn movenet_keypoints_are_exact_and_empty_without_people() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = folder(dir.path(), 64, 4);
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "pose-fx",
            "--file",
            fixture("movenet.onnx").to_str().unwrap(),
            "--like",
            "keypose",
        ],
    ));
    let out = dir.path().join("out");
    ok(prep_in(
        &cache,
        &[
            "build",
            "--source",
            "folder",
            "--input",
            input.to_str().unwrap(),
            "--condition",
            "keypose",
            "--model",
            "keypose=pose-fx",
            "--keypose-from",
            "model",
            "--resolution",
            "64",
            "--image-format",
            "png",
            "--batch-size",
            "4",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let rs = rows(&out);
    let white = rs.iter().find(|r| r.key.ends_with("p0")).unwrap();
    let black = rs.iter().find(|r| r.key.ends_with("p3")).unwrap();
    // White image: scores = base · 250/255; 64 px letterboxed ×3 into 192, no padding, so
    // image x = kx · 192 / 3 = kx · 64.
    let kps = white.keypoints.as_ref().unwrap();
    assert_eq!(kps.len(), 1);
    let mut persons = Vec::new();
    let mut k17 = [[0f32; 3]; 17];
    for i in 0..17 {
        let (ky, kx) = (0.20 + 0.035 * i as f32, 0.30 + 0.025 * i as f32);
        let base = if i % 3 != 0 { 0.9 } else { 0.2 };
        let got = &kps[0][3 * i..3 * i + 3];
        assert!((got[0] - kx * 64.0).abs() < 1e-3, "kp {i} x {got:?}");
        assert!((got[1] - ky * 64.0).abs() < 1e-3, "kp {i} y {got:?}");
        assert!(
            (got[2] - base * 250.0 / 255.0).abs() < 1e-4,
            "kp {i} score {got:?}"
        );
        k17[i] = [got[0], got[1], got[2]];
    }
    persons.push(prep::record::Person { keypoints: k17 });
    let style = prep::condition::KeyposeStyle {
        score_threshold: 0.3,
        radius: 2,
        thickness: 2,
        max_persons: None,
    };
    let want = prep::condition::draw_keypose(64, 64, &persons, &style);
    let got = decode_rgb(&white.images["keypose"].0);
    assert_eq!(got, want);
    assert!(got.pixels().any(|p| p.0 != [0, 0, 0]));
    // Keypoints scored 0.2·250/255 < 0.3 (index 0, 3, …) are not drawn: the nose disc.
    let nose = (k17[0][0] as u32, k17[0][1] as u32);
    assert_eq!(got.get_pixel(nose.0, nose.1).0, [0, 0, 0]);
    // Black image: mean score 0 → no person, an all-black map.
    assert_eq!(black.keypoints.as_ref().map(|k| k.len()), Some(0));
    assert!(decode_rgb(&black.images["keypose"].0)
        .pixels()
        .all(|p| p.0 == [0, 0, 0]));
}

#[test]
fn refuses_bad_model_files_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = folder(dir.path(), 64, 2);
    let inp = input.to_str().unwrap();
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "edge-fx",
            "--file",
            fixture("edge_nhwc.onnx").to_str().unwrap(),
            "--like",
            "hed",
        ],
    ));
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    // sha256 mismatch: another file for a pinned entry.
    let e = err(prep_in(
        &cache,
        &[
            "build",
            "--source",
            "folder",
            "--input",
            inp,
            "--condition",
            "hed",
            "--model",
            "hed=edge-fx",
            "--model-file",
            &format!("hed={}", fixture("depth.onnx").display()),
            "--out",
            o,
        ],
    ));
    assert!(
        e.contains("model edge-fx") && e.contains("depth.onnx") && e.contains("refusing"),
        "{e}"
    );
    assert!(!out.exists(), "nothing written on a refused model");
    // The real HED pin against a fixture file.
    let e = err(prep_in(
        &cache,
        &[
            "build",
            "--source",
            "folder",
            "--input",
            inp,
            "--condition",
            "hed",
            "--model-file",
            &format!("hed={}", fixture("edge_nhwc.onnx").display()),
            "--out",
            o,
        ],
    ));
    assert!(e.contains("ee29740190f2") && e.contains("refusing"), "{e}");
    // Truncated ONNX.
    let bytes = std::fs::read(fixture("edge_nhwc.onnx")).unwrap();
    let trunc = dir.path().join("trunc.onnx");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(prep_in(
        &cache,
        &[
            "models",
            "add",
            "bad",
            "--file",
            trunc.to_str().unwrap(),
            "--like",
            "hed",
        ],
    ));
    assert!(
        e.contains("model bad") && e.contains("not a valid ONNX model"),
        "{e}"
    );
    // Not ONNX at all.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"hello").unwrap();
    let e = err(prep_in(
        &cache,
        &[
            "models",
            "add",
            "junk",
            "--file",
            junk.to_str().unwrap(),
            "--like",
            "depth",
        ],
    ));
    assert!(e.contains("not a valid ONNX model"), "{e}");
    // Wrong dtype for the contract (float edge model as the int32 MoveNet contract).
    let e = err(prep_in(
        &cache,
        &[
            "models",
            "add",
            "wrong",
            "--file",
            fixture("edge_nhwc.onnx").to_str().unwrap(),
            "--like",
            "keypose",
        ],
    ));
    assert!(
        e.contains("model wrong") && e.contains("does not fit"),
        "{e}"
    );
    // Wrong input shape at run time: a fixed 64×64 model fed 96×96 images.
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "fixed",
            "--file",
            fixture("fixed64.onnx").to_str().unwrap(),
            "--like",
            "depth",
        ],
    ));
    let e = err(prep_in(
        &cache,
        &[
            "build",
            "--source",
            "folder",
            "--input",
            inp,
            "--condition",
            "depth",
            "--model",
            "depth=fixed",
            "--resolution",
            "96",
            "--quiet",
            "--out",
            o,
        ],
    ));
    assert!(
        e.contains("model fixed") && e.contains("wrong input shape"),
        "{e}"
    );
    // A model that is neither cached nor given.
    let e = err(prep_in(
        &cache,
        &[
            "build",
            "--source",
            "folder",
            "--input",
            inp,
            "--condition",
            "hed",
            "--out",
            dir.path().join("o2").to_str().unwrap(),
        ],
    ));
    assert!(
        e.contains("prep models fetch hed") && e.contains("--model-file"),
        "{e}"
    );
    // An unpinned default model.
    let e = err(prep_in(
        &cache,
        &[
            "build",
            "--source",
            "folder",
            "--input",
            inp,
            "--condition",
            "depth",
            "--out",
            dir.path().join("o3").to_str().unwrap(),
        ],
    ));
    assert!(
        e.contains("midas-dpt-hybrid") && e.contains("prep models add"),
        "{e}"
    );
}

/// Serve `body` once per connection on a loopback port (HTTP/1.0 style).
fn serve(body: Vec<u8>) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten().take(8) {
            let mut s = s;
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let req = String::from_utf8_lossy(&buf);
            let resp = if req.starts_with("GET /model.onnx") {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(&body);
                r
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = s.write_all(&resp);
        }
    });
    format!("http://{addr}")
}

#[test]
fn fetch_downloads_verifies_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let body = std::fs::read(fixture("depth.onnx")).unwrap();
    let sha = prep::models::sha256_file(&fixture("depth.onnx")).unwrap().0;
    let base = serve(body.clone());
    let reg = cache.join("models/registry");
    std::fs::create_dir_all(&reg).unwrap();
    let entry = |name: &str, url: &str, sha: &str| {
        format!(
            "name = \"{name}\"\nconditions = [\"depth\"]\nurls = [\"{url}\"]\nsha256 = \"{sha}\"\n\
             [input]\nlayout = \"nchw\"\nchannels = \"rgb\"\ndtype = \"f32\"\nsize = {{ policy = \"any\" }}\n\
             [output]\ndecoder = \"depth\"\n"
        )
    };
    std::fs::write(
        reg.join("d.toml"),
        entry("d", &format!("{base}/model.onnx"), &sha),
    )
    .unwrap();
    std::fs::write(
        reg.join("bad.toml"),
        entry("bad", &format!("{base}/model.onnx"), &"0".repeat(64)),
    )
    .unwrap();
    std::fs::write(
        reg.join("gone.toml"),
        entry("gone", &format!("{base}/missing.onnx"), &sha),
    )
    .unwrap();
    ok(prep_in(&cache, &["models", "fetch", "d"]));
    assert_eq!(
        std::fs::read(cache.join("models/files/d.onnx")).unwrap(),
        body
    );
    let o = ok(prep_in(&cache, &["models", "verify", "d"]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok"));
    let e = err(prep_in(&cache, &["models", "fetch", "bad"]));
    assert!(e.contains("refused") && e.contains(&sha), "{e}");
    assert!(!cache.join("models/files/bad.onnx").exists());
    let e = err(prep_in(&cache, &["models", "fetch", "gone"]));
    assert!(e.contains("404"), "{e}");
    // A cached file that was altered is reported by verify.
    std::fs::write(cache.join("models/files/d.onnx"), b"tampered").unwrap();
    let o = prep_in(&cache, &["models", "verify"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("BAD"));
}

/// Real HED and MoveNet on the bundled demo photos (PREP_REAL_MODELS=../shared/models).
#[test]
fn real_models_on_real_photos() {
    let Some(dir) = std::env::var_os("PREP_REAL_MODELS") else {
        eprintln!("PREP_REAL_MODELS not set: skipping the real-model test");
        return;
    };
    let real = PathBuf::from(dir);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    ok(prep_in(
        &cache,
        &[
            "build",
            "--source",
            "demo",
            "--condition",
            "hed,sketch,keypose",
            "--model",
            "sketch=hed",
            "--keypose-from",
            "model",
            "--model-file",
            &format!("hed={}", real.join("hed_bsds500.onnx").display()),
            "--model-file",
            &format!(
                "movenet-lightning={}",
                real.join("movenet-lightning.onnx").display()
            ),
            "--resolution",
            "256",
            "--image-format",
            "png",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let rs = rows(&out);
    let astronaut = rs.iter().find(|r| r.key.ends_with("000000000001")).unwrap();
    let cup = rs.iter().find(|r| r.key.ends_with("000000000002")).unwrap();
    // The astronaut: a person whose nose lies on the face (upper middle of the image).
    let kp = &astronaut.keypoints.as_ref().unwrap()[0];
    let (nx, ny, ns) = (kp[0], kp[1], kp[2]);
    assert!(
        ns > 0.3 && (60.0..160.0).contains(&nx) && (20.0..110.0).contains(&ny),
        "nose {nx},{ny},{ns}"
    );
    // The cup: nobody, a black keypose map.
    assert_eq!(cup.keypoints.as_ref().map(|k| k.len()), Some(0));
    assert!(decode_rgb(&cup.images["keypose"].0)
        .pixels()
        .all(|p| p.0 == [0, 0, 0]));
    // Edges on object boundaries: the cup's rim is strong, the flat saucer interior weak.
    let hed = decode_gray(&cup.images["hed"].0);
    let strong = hed.pixels().filter(|p| p.0[0] > 128).count();
    assert!(
        strong > 500 && strong < 256 * 256 / 3,
        "{strong} strong edge pixels"
    );
    let sketch = decode_gray(&cup.images["sketch"].0);
    assert!(sketch.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
}
