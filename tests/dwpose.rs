//! DWPose's two-stage keypose route (`--keypose-from model` with a yolox detector and a
//! simcc pose model) on the fixture models of tests/fixtures/models (yolox.onnx,
//! simcc.onnx; outputs known in closed form, see make_models.py): exact boxes, exact
//! keypoints and maps, batch sizes 1 and > 1 identical, no people → all black.
//! Needs the ONNX Runtime library (scripts/setup-ort).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use image::{Rgb, RgbImage};
use prep::condition::dwpose::{yolox_persons, YoloxParams};
use prep::record::Person;

fn fill(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, c: [u8; 3]) {
    for y in y0..y1 {
        for x in x0..x1 {
            img.put_pixel(x, y, Rgb(c));
        }
    }
}

/// 640×640 (the detector's input, so the letterbox ratio is 1): a light top-left 8×8
/// patch (the fixture detector's objectness), a red and a blue blob in person A's crop,
/// a green blob in person C's crop.
fn people() -> RgbImage {
    let mut img = RgbImage::new(640, 640);
    fill(&mut img, 0, 0, 8, 8, [250, 250, 250]);
    fill(&mut img, 150, 130, 162, 150, [255, 0, 0]);
    fill(&mut img, 200, 260, 215, 290, [0, 0, 255]);
    fill(&mut img, 470, 450, 490, 480, [0, 255, 0]);
    img
}

fn photos(dir: &Path) -> PathBuf {
    let root = dir.join("photos");
    std::fs::create_dir_all(&root).unwrap();
    let imgs = [
        people(),
        RgbImage::new(640, 640),
        photo(640, 640, 3),
        people(),
    ];
    for (i, img) in imgs.iter().enumerate() {
        img.save(root.join(format!("p{i}.png"))).unwrap();
        std::fs::write(root.join(format!("p{i}.txt")), format!("photo {i}")).unwrap();
    }
    root
}

#[test]
fn yolox_boxes_are_exact() {
    let opts = prep::runtime::RuntimeOptions::default();
    let mut net = prep::runtime::Net::open("det-fx", &fixture("yolox.onnx"), &opts).unwrap();
    let mut x = vec![0f32; 2 * 3 * 640 * 640];
    for c in 0..3 {
        for y in 0..8 {
            for xx in 0..8 {
                x[(c * 640 + y) * 640 + xx] = 250.0;
            }
        }
    }
    let out = net
        .run(
            "images",
            &[2, 3, 640, 640],
            prep::runtime::Batch::F32(&x),
            &[0],
        )
        .unwrap();
    assert_eq!(out[0].shape(), &[2, 8400, 7]);
    let v: Vec<f32> = out[0].iter().copied().collect();
    let p = YoloxParams {
        input: (640, 640),
        strides: vec![8, 16, 32],
        person_class: 0,
        score_threshold: 0.3,
        nms_threshold: 0.45,
    };
    let m = 250.0f32 / 255.0;
    let found = yolox_persons(&v[..8400 * 7], 7, &p, 1.0).unwrap();
    // A (score 0.72 m) and C (0.6 m); B = A's box at 0.56 m is suppressed, D is class 1,
    // E scores 0.25 m ≤ 0.3.
    assert_eq!(found.len(), 2, "{found:?}");
    let want = [
        ([112.0, 80.0, 240.0, 336.0], 0.9 * m * 0.8),
        ([444.0, 404.0, 524.0, 564.0], 0.75 * m * 0.8),
    ];
    for (d, (b, s)) in found.iter().zip(want) {
        for k in 0..4 {
            assert!((d.bbox[k] - b[k]).abs() < 1e-3, "{d:?} vs {b:?}");
        }
        assert!((d.score - s).abs() < 1e-6, "{d:?} vs {s}");
    }
    // Halving the ratio (image twice the letterbox) doubles the boxes.
    let half = yolox_persons(&v[..8400 * 7], 7, &p, 0.5).unwrap();
    assert!((half[0].bbox[2] - 480.0).abs() < 1e-3);
    // The second image (black patch) has no person.
    assert!(yolox_persons(&v[8400 * 7..], 7, &p, 1.0)
        .unwrap()
        .is_empty());
    // A wrong output size is an error naming the expected shape.
    let err = yolox_persons(&v[..100], 7, &p, 1.0).unwrap_err();
    assert!(err.contains("[8400, 5 + classes]"), "{err}");
}

/// The expected body keypoints (COCO-17) of the fixture pose model on `people()`.
fn expected_persons() -> Vec<Person> {
    // Normalised full intensity of R, G, B, and of black.
    let full = [
        (255.0 - 123.675) / 58.395f32,
        (255.0 - 116.28) / 57.12f32,
        (255.0 - 103.53) / 57.375f32,
    ];
    let black = [
        -123.675 / 58.395f32,
        -116.28 / 57.12f32,
        -103.53 / 57.375f32,
    ];
    // Person A: box 112,80-240,336 → centre (176, 208), scale (240, 320) after padding
    // 1.25 and the 288/384 aspect; crop pixel (j, i) ↔ image (j/1.2 + 56, i/1.2 + 48).
    // First full-intensity crop column/row: red blob x ≥ 150 → j 113, y ≥ 130 → i 99;
    // blue x ≥ 200 → j 173, y ≥ 260 → i 255. No green: score < 0, location −1.
    // Person C: box 444,404-524,564 → centre (484, 484), scale (150, 200); crop pixel
    // (j, i) ↔ (j/1.92 + 409, i/1.92 + 384); green x ≥ 470 → j 118, y ≥ 450 → i 127.
    let a: [Option<(f32, f32)>; 3] = [Some((113.0, 99.0)), None, Some((173.0, 255.0))];
    let c: [Option<(f32, f32)>; 3] = [None, Some((118.0, 127.0)), None];
    let person = |locs: [Option<(f32, f32)>; 3], center: [f32; 2], scale: [f32; 2]| {
        let mut keypoints = [[0f32; 3]; 17];
        for (k, kp) in keypoints.iter_mut().enumerate() {
            let ch = k % 3;
            let gain = if k % 5 == 4 { 0.1 } else { 1.0 };
            let ((j, i), s) = match locs[ch] {
                Some(l) => (l, full[ch] * gain),
                None => ((-0.5, -0.5), black[ch] * gain),
            };
            *kp = [
                j / 288.0 * scale[0] + center[0] - scale[0] / 2.0,
                i / 384.0 * scale[1] + center[1] - scale[1] / 2.0,
                s,
            ];
        }
        Person { keypoints }
    };
    vec![
        person(a, [176.0, 208.0], [240.0, 320.0]),
        person(c, [484.0, 484.0], [150.0, 200.0]),
    ]
}

#[test]
fn dwpose_route_keypoints_and_maps_are_exact_and_batching_does_not_change_them() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = photos(dir.path());
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "det-fx",
            "--file",
            fixture("yolox.onnx").to_str().unwrap(),
            "--like",
            "yolox-l",
        ],
    ));
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "pose-fx",
            "--file",
            fixture("simcc.onnx").to_str().unwrap(),
            "--like",
            "dwpose-ll",
            "--detector",
            "det-fx",
        ],
    ));
    let build = |batch: &str, name: &str| {
        let out = dir.path().join(name);
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
                "640",
                "--image-format",
                "png",
                "--batch-size",
                batch,
                "--quiet",
                "--out",
                out.to_str().unwrap(),
            ],
        ));
        let mut rs = read_rows(&out.join("data/part-00000.parquet")).0;
        rs.sort_by(|a, b| a.key.cmp(&b.key));
        (out, rs)
    };
    let (out1, one) = build("1", "b1");
    let (_, three) = build("3", "b3");
    // The dataset manifest records the pose model and its detector with their pins.
    let manifest = std::fs::read_to_string(out1.join("dataset.json")).unwrap();
    assert!(
        manifest.contains("\"detector\": \"det-fx\"")
            || manifest.contains("\"detector\":\"det-fx\""),
        "{manifest}"
    );
    assert_eq!(one.len(), 4);
    for (a, b) in one.iter().zip(&three) {
        assert_eq!(a.key, b.key);
        assert_eq!(a.keypoints, b.keypoints, "{}: batch 1 vs 3", a.key);
        assert_eq!(
            decode_rgb(&a.images["keypose"].0),
            decode_rgb(&b.images["keypose"].0),
            "{}: batch 1 vs 3",
            a.key
        );
    }
    let want = expected_persons();
    let style = prep::condition::KeyposeStyle {
        score_threshold: 0.3,
        radius: 2,
        thickness: 2,
        max_persons: None,
    };
    let want_map = prep::condition::draw_keypose(640, 640, &want, &style);
    for key in ["p0", "p3"] {
        let r = one.iter().find(|r| r.key.ends_with(key)).unwrap();
        let kps = r.keypoints.as_ref().unwrap();
        assert_eq!(kps.len(), 2, "{key}: persons A and C, best first");
        for (got, want) in kps.iter().zip(&want) {
            for k in 0..17 {
                let g = &got[3 * k..3 * k + 3];
                let w = want.keypoints[k];
                assert!(
                    (g[0] - w[0]).abs() < 1e-3 && (g[1] - w[1]).abs() < 1e-3,
                    "{key} kp {k}: {g:?} vs {w:?}"
                );
                assert!((g[2] - w[2]).abs() < 1e-4, "{key} kp {k}: {g:?} vs {w:?}");
            }
        }
        let got = decode_rgb(&r.images["keypose"].0);
        assert_eq!(got, want_map, "{key}: keypose map");
        // Keypoints at full score are drawn (red blob corner of A), those under 0.3 are
        // not (k 9: red at 0.22, same place — covered by k 0; k 14: blue at 0.26).
        assert_ne!(got.get_pixel(150, 130).0, [0, 0, 0]);
    }
    // A black photo: the detector finds nobody → no persons, an all-black map.
    let black = one.iter().find(|r| r.key.ends_with("p1")).unwrap();
    assert_eq!(black.keypoints.as_ref().map(|k| k.len()), Some(0));
    assert!(decode_rgb(&black.images["keypose"].0)
        .pixels()
        .all(|p| p.0 == [0, 0, 0]));
}

#[test]
fn dwpose_entries_need_their_detector() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // The built-in dwpose-ll names yolox-l, which is not pinned until fetched or added.
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "pose-fx",
            "--file",
            fixture("simcc.onnx").to_str().unwrap(),
            "--like",
            "dwpose-ll",
        ],
    ));
    let input = photos(dir.path());
    let o = prep_in(
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
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("yolox-l") && err.contains("prep models fetch yolox-l"),
        "{err}"
    );
    // With the pair registered, a --model-file for the detector is checked against the
    // detector's pin: another file is refused, naming the detector.
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "det-fx",
            "--file",
            fixture("yolox.onnx").to_str().unwrap(),
            "--like",
            "yolox-l",
        ],
    ));
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "pose-ok",
            "--file",
            fixture("simcc.onnx").to_str().unwrap(),
            "--like",
            "dwpose-ll",
            "--detector",
            "det-fx",
        ],
    ));
    let o = prep_in(
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
            "keypose=pose-ok",
            "--keypose-from",
            "model",
            "--model-file",
            &format!("det-fx={}", fixture("simcc.onnx").display()),
            "--out",
            dir.path().join("o2").to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("model det-fx") && err.contains("refusing to load"),
        "{err}"
    );
    // --detector must name a yolox entry.
    let o = prep_in(
        &cache,
        &[
            "models",
            "add",
            "pose-2",
            "--file",
            fixture("simcc.onnx").to_str().unwrap(),
            "--like",
            "dwpose-ll",
            "--detector",
            "hed",
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not yolox"), "{err}");
}
