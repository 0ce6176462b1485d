//! `prep build --source coco` end to end on a synthetic COCO root whose expected outputs
//! are known: rows, columns, condition pixels, failures, resume, sharding, bad input.

mod common;

use std::collections::HashSet;

use common::*;

const COND: &str = "color,keypose,seg,canny";

fn build(root: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "build",
        "--source",
        "coco",
        "--input",
        root.to_str().unwrap(),
        "--split",
        "val2017",
        "--condition",
        COND,
        "--resolution",
        "512",
        "--image-format",
        "png",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn coco_build_rows_columns_and_conditions() {
    let tmp = tempfile::tempdir().unwrap();
    let root = make_coco(&tmp.path().join("coco"), "val2017");
    let out = tmp.path().join("out");
    let o = build(&root, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let (rows, schema) = read_rows(&out.join("data/part-00000.parquet"));
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "key",
            "image",
            "text",
            "captions",
            "color",
            "keypose",
            "seg",
            "canny",
            "width",
            "height",
            "source",
            "sha256",
            "keypoints",
            "image_id",
            "original_width",
            "original_height"
        ]
    );
    let hf: serde_json::Value = serde_json::from_str(&schema.metadata()["huggingface"]).unwrap();
    for col in ["image", "color", "keypose", "seg", "canny"] {
        assert_eq!(hf["info"]["features"][col]["_type"], "Image", "{col}");
    }

    // Images 3 (missing) and 4 (not an image) fail; 1 and 2 are built, in id order.
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        ["coco/val2017/000000000001", "coco/val2017/000000000002"]
    );
    let r1 = &rows[0];
    assert_eq!(r1.text, "A person standing under a blue sky.");
    assert_eq!(
        r1.captions,
        ["A person standing under a blue sky.", "Someone outdoors."]
    );
    assert_eq!((r1.width, r1.height), (512, 512));
    assert_eq!(r1.images["image"].1, "coco_val2017_000000000001.png");

    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("stats/part-00000.json")).unwrap()).unwrap();
    assert_eq!(stats["input_rows"], 4);
    assert_eq!(stats["rows"], 2);
    assert_eq!(stats["failed"]["file_not_found"], 1);
    assert_eq!(stats["failed"]["not_an_image"], 1);
    let failures = stats["failures"].as_array().unwrap();
    assert_eq!(failures[0]["key"], "coco/val2017/000000000003");
    assert!(failures[0]["detail"]
        .as_str()
        .unwrap()
        .contains("000000000003.jpg"));

    let img = decode_rgb(&r1.images["image"].0);
    assert_eq!(img.dimensions(), (512, 512));

    // seg: 640×480 → 682×512, crop x 85. Source x 320 (person | sky) lands at 341 − 85 = 256.
    let seg = decode_rgb(&r1.images["seg"].0);
    let palette = prep::condition::seg_palette();
    assert_eq!(seg.get_pixel(100, 300).0, palette[0], "person");
    assert_eq!(seg.get_pixel(400, 100).0, palette[156], "sky-other");
    // Unlabelled block (40..140, 40..100) → x (42.6−85 …) clipped: (0..64, 43..106) area.
    assert_eq!(seg.get_pixel(20, 70).0, [0, 0, 0], "unlabelled is black");
    // Cat block (400..560, 300..420) → x 341..511, y 320..448.
    assert_eq!(seg.get_pixel(420, 380).0, palette[16], "cat");
    let colours: HashSet<[u8; 3]> = seg.pixels().map(|p| p.0).collect();
    let allowed: HashSet<[u8; 3]> = [palette[0], palette[156], palette[16], [0, 0, 0]]
        .into_iter()
        .collect();
    assert_eq!(
        colours, allowed,
        "only label colours, never interpolated ones"
    );
    // The boundary column: nearest neighbour puts it exactly at 256.
    assert_eq!(seg.get_pixel(255, 300).0, palette[0]);
    assert_eq!(seg.get_pixel(256, 300).0, palette[156]);

    // keypose: the nose (320, 100) → (341 − 85, 106.67) = (256, 106): a 13-px disc.
    let kp = decode_rgb(&r1.images["keypose"].0);
    assert_eq!(kp.get_pixel(256, 106).0, [255, 153, 51]);
    assert_eq!(kp.get_pixel(258, 106).0, [255, 153, 51]);
    assert_eq!(kp.get_pixel(256, 108).0, [255, 153, 51]);
    assert_eq!(kp.get_pixel(258, 108).0, [0, 0, 0]);
    // Left shoulder (360,160) → (299, 170); left elbow (380,230) → (320, 245): link [5,7] green.
    let mid = kp.get_pixel(309, 207).0;
    assert_eq!(mid, [0, 255, 0], "shoulder–elbow link");
    // The left knee (630, 470) → (586, 501) is outside the 512 crop: the hip–knee link is skipped.
    let keypoints = r1.keypoints.as_ref().unwrap();
    assert_eq!(keypoints.len(), 1);
    assert_eq!(keypoints[0].len(), 51);
    assert_eq!(
        &keypoints[0][0..3],
        &[256.0, (100.0f64 * 512.0 / 480.0) as f32, 2.0][..]
    );
    assert!(keypoints[0][13 * 3] > 512.0);
    // Unlabelled keypoints stay (0, 0, 0).
    assert_eq!(&keypoints[0][3 * 3..3 * 3 + 3], &[0.0, 0.0, 0.0]);
    // Image 2 has no person: the map is all black and its keypoints list is empty.
    let kp2 = decode_rgb(&rows[1].images["keypose"].0);
    assert!(kp2.pixels().all(|p| p.0 == [0, 0, 0]));
    assert_eq!(rows[1].keypoints.as_deref(), Some(&[][..]));

    // color: equal to the cvops reference applied to the stored (lossless) image, and
    // flat 64×64 cells.
    let color = decode_rgb(&r1.images["color"].0);
    let expect = {
        let small = prep::cvops::resize::resize_cubic_u8(img.as_raw(), 512, 512, 3, 8, 8);
        prep::cvops::resize::resize_nearest_u8(&small, 8, 8, 3, 512, 512)
    };
    assert_eq!(color.as_raw(), &expect);
    for cy in 0..8 {
        for cx in 0..8 {
            let c0 = color.get_pixel(cx * 64, cy * 64).0;
            assert_eq!(color.get_pixel(cx * 64 + 63, cy * 64 + 63).0, c0);
        }
    }

    // canny: one channel, binary, equal to cvops on the stored image.
    let canny = decode_gray(&r1.images["canny"].0);
    assert!(canny.pixels().all(|p| p[0] == 0 || p[0] == 255));
    let expect = prep::cvops::canny::canny(img.as_raw(), 512, 512, 3, 100.0, 200.0);
    assert_eq!(canny.as_raw(), &expect);
    assert!(
        canny.pixels().any(|p| p[0] == 255),
        "the test photo has edges"
    );

    // dataset.json
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(m["complete"], true);
    assert_eq!(m["num_records"], 4);
    assert_eq!(m["rows"], 2);
    assert_eq!(m["shards"][0]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        m["config"]["conditions"],
        serde_json::json!(["color", "keypose", "seg", "canny"])
    );
}

#[test]
fn rerun_rewrites_nothing_and_shards_split_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let root = make_coco(&tmp.path().join("coco"), "val2017");
    let full = tmp.path().join("full");
    let o = build(&root, &full, &["--shard-size", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = snapshot(&full);
    let data_files = before
        .iter()
        .filter(|(n, _, _)| n.starts_with("data/"))
        .count();
    assert_eq!(data_files, 4);
    let status_files = before
        .iter()
        .filter(|(n, _, _)| n.starts_with("status/"))
        .count();
    assert_eq!(status_files, 4);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let o = build(&root, &full, &["--shard-size", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("skipped 4 already complete"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        snapshot(&full),
        before,
        "a re-run must not rewrite any file"
    );

    let split = tmp.path().join("split");
    for s in ["0/2", "1/2"] {
        let o = build(&root, &split, &["--shard-size", "1", "--shard", s]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let a: Vec<_> = snapshot(&full)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("data/"))
        .map(|(n, b, _)| (n, b))
        .collect();
    let b: Vec<_> = snapshot(&split)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("data/"))
        .map(|(n, b, _)| (n, b))
        .collect();
    assert_eq!(
        a, b,
        "--shard 0/2 + 1/2 must give the same Parquet bytes as one run"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(split.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(m["complete"], true);
}

#[test]
fn same_inputs_give_identical_bytes_whatever_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let root = make_coco(&tmp.path().join("coco"), "val2017");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    assert!(build(&root, &a, &["--threads", "1"]).status.success());
    assert!(build(&root, &b, &["--threads", "3"]).status.success());
    assert_eq!(
        std::fs::read(a.join("data/part-00000.parquet")).unwrap(),
        std::fs::read(b.join("data/part-00000.parquet")).unwrap()
    );
}

#[test]
fn malformed_captions_fail_naming_the_file_and_leave_output_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let root = make_coco(&tmp.path().join("coco"), "val2017");
    let out = tmp.path().join("out");
    assert!(build(&root, &out, &[]).status.success());
    let before = snapshot(&out);
    let captions = root.join("annotations/captions_val2017.json");
    std::fs::write(&captions, b"{\"images\": [ {\"id\": 1, ").unwrap();
    let o = build(&root, &out, &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("captions_val2017.json"), "{err}");
    assert!(err.contains("not a valid COCO captions file"), "{err}");
    assert_eq!(snapshot(&out), before, "existing output must be untouched");
}

#[test]
fn bad_flags_and_missing_inputs_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let root = make_coco(&tmp.path().join("coco"), "val2017");
    let out = tmp.path().join("out");
    let r = root.to_str().unwrap();
    let o = out.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "build",
                "--source",
                "coco",
                "--input",
                r,
                "--split",
                "val2017",
                "--condition",
                "colour,edges",
                "--out",
                o,
            ],
            "unknown condition \"edges\"",
        ),
        (
            &[
                "build",
                "--source",
                "coco",
                "--input",
                r,
                "--split",
                "train2017",
                "--out",
                o,
            ],
            "captions_train2017.json not found",
        ),
        (
            &[
                "build", "--source", "coco", "--split", "val2017", "--out", o,
            ],
            "needs --input",
        ),
        (
            &[
                "build", "--source", "coco", "--input", r, "--split", "val2017", "--shard", "2/2",
                "--out", o,
            ],
            "0 <= I < N",
        ),
        (
            &[
                "build",
                "--source",
                "folder",
                "--input",
                r,
                "--condition",
                "seg",
                "--out",
                o,
            ],
            "seg needs COCO-Stuff",
        ),
        (
            &["build", "--source", "demo", "--input", r, "--out", o],
            "takes no --input",
        ),
    ];
    for (args, needle) in cases {
        let res = run(args);
        assert!(!res.status.success(), "{args:?} should fail");
        assert!(
            stderr(&res).contains(needle),
            "{args:?}: expected {needle:?} in:\n{}",
            stderr(&res)
        );
    }
    assert!(
        !out.exists(),
        "failed runs must not create the output directory"
    );

    // A different configuration into an existing output is refused, not mixed in.
    assert!(build(&root, &out, &[]).status.success());
    let before = snapshot(&out);
    let res = build(&root, &out, &["--resize-mode", "stretch"]);
    assert!(!res.status.success());
    assert!(
        stderr(&res).contains("built with different settings"),
        "{}",
        stderr(&res)
    );
    assert_eq!(snapshot(&out), before);

    // A non-empty directory prep did not write is refused.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), b"precious").unwrap();
    let res = build(&root, &foreign, &[]);
    assert!(
        stderr(&res).contains("prep did not write"),
        "{}",
        stderr(&res)
    );
    assert_eq!(
        std::fs::read(foreign.join("thesis.tex")).unwrap(),
        b"precious"
    );
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = make_coco(&tmp.path().join("coco"), "val2017");
    let out = tmp.path().join("out");
    let o = build(&root, &out, &["--dry-run", "--shard-size", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(plan.contains("4 in 2 shard(s) of 3"), "{plan}");
    assert!(
        plan.contains("key, image, text, captions, color, keypose, seg, canny"),
        "{plan}"
    );
    assert!(!out.exists());
}
