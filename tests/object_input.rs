//! `--input s3://…` against a real S3-protocol server on loopback (moto_server): every
//! source (folder, coco, laion) builds the same Parquet bytes from a bucket as from a
//! local copy of the same files; errors name the URL; a throttling store is survived.
//! And the readers of build outputs and eval arrays on object stores (`prep inspect`,
//! `prep eval`).

mod common;
mod s3;

use std::path::Path;

use common::*;
use prep::sink::remote::{Remote, RemoteOptions};
use s3::{Mode, Moto, Proxy};

fn remote(endpoint: &str, url: &str) -> Remote {
    Remote::open(
        url,
        &RemoteOptions {
            s3_endpoint: Some(endpoint.to_string()),
            unsafe_no_conditional_put: false,
        },
    )
    .unwrap()
}

/// Upload every file under `dir` to `url` (same relative names).
fn upload_dir(endpoint: &str, dir: &Path, url: &str) {
    let r = remote(endpoint, url);
    for (name, bytes, _) in snapshot(dir) {
        r.put_mode(&name, bytes, object_store::PutMode::Overwrite)
            .unwrap();
    }
}

/// The data shards of a local output: relative name → bytes.
fn data_files(out: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot(out)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("data/"))
        .map(|(n, b, _)| (n, b))
        .collect()
}

fn stats(out: &Path, k: usize) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join(format!("stats/part-{k:05}.json"))).unwrap())
        .unwrap()
}

/// A folder with nested directories, captions for most images, one image without a
/// caption, a hidden file and a non-image.
fn photos(dir: &Path) {
    for (i, rel) in [
        "a.jpg",
        "sub/b.jpg",
        "sub/deeper/c.png",
        "sub.d/d.jpg",
        "e.jpeg",
        "f.jpg",
    ]
    .iter()
    .enumerate()
    {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let img = photo(120 + 8 * i as u32, 96, i as u32);
        if rel.ends_with(".png") {
            img.save(&p).unwrap();
        } else {
            std::fs::write(&p, jpeg(&img)).unwrap();
        }
        if *rel != "e.jpeg" {
            std::fs::write(p.with_extension("txt"), format!(" caption of {rel}\n")).unwrap();
        }
    }
    std::fs::write(dir.join(".hidden.jpg"), b"not read").unwrap();
    std::fs::write(dir.join("notes.md"), b"not an image").unwrap();
}

fn folder_args<'a>(input: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "build",
        "--source",
        "folder",
        "--input",
        input,
        "--condition",
        "canny,color",
        "--resolution",
        "64",
        "--shard-size",
        "4",
        "--threads",
        "1",
        "--out",
        out,
        "--quiet",
    ]
}

#[test]
fn folder_from_s3_builds_the_bytes_of_a_local_folder() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("inputs");
    let tmp = tempfile::tempdir().unwrap();
    let local_in = tmp.path().join("photos");
    photos(&local_in);
    upload_dir(&moto.endpoint, &local_in, "s3://inputs/photos");

    let local_out = tmp.path().join("local");
    run_ok(&folder_args(
        local_in.to_str().unwrap(),
        local_out.to_str().unwrap(),
    ));
    let s3_out = tmp.path().join("from-s3");
    let mut a = folder_args("s3://inputs/photos", s3_out.to_str().unwrap());
    a.extend(["--s3-endpoint", &moto.endpoint]);
    let o = run_ok(&a);
    assert!(
        stderr(&o).contains("built 2 shard(s) (6 rows"),
        "{}",
        stderr(&o)
    );
    // Open: HEAD + LIST (is there anything), LIST (is it a folder), GET metadata.jsonl
    // (absent), LIST (the files); then 5 captions and 6 images, one GET each.
    assert!(
        stderr(&o).contains("object store --input s3://inputs/photos: 16 requests: PUT 0, multipart parts 0, GET 12, HEAD 1, LIST 3, DELETE 0"),
        "{}",
        stderr(&o)
    );
    let local = data_files(&local_out);
    assert_eq!(
        local.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["data/part-00000.parquet", "data/part-00001.parquet"]
    );
    assert!(
        data_files(&s3_out) == local,
        "Parquet from s3:// input equals the local build byte for byte"
    );
    let (rows, _) = read_rows(&s3_out.join("data/part-00000.parquet"));
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.key.as_str(), r.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("folder/a", "caption of a.jpg"),
            ("folder/e", ""),
            ("folder/f", "caption of f.jpg"),
            ("folder/sub/b", "caption of sub/b.jpg"),
        ],
        "walk order, .txt captions trimmed, no caption without a .txt"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s3_out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(
        m["source"]["description"],
        "folder s3://inputs/photos (6 images)"
    );

    // The same input written to an object store as well.
    let mut a = folder_args("s3://inputs/photos", "s3://inputs/run");
    a.extend(["--s3-endpoint", &moto.endpoint]);
    run_ok(&a);
    let r = remote(&moto.endpoint, "s3://inputs/run");
    for (name, bytes) in &local {
        assert!(
            r.get(name).unwrap().unwrap().0 == *bytes,
            "{name} on s3 equals the local build"
        );
    }

    // prep inspect reads the remote output (footers and pages by ranged GETs) and says
    // what it says about the local one; the contact sheet is the same PNG.
    let inspect = |dir: &str, grid: &Path| -> serde_json::Value {
        let o = run_ok(&[
            "inspect",
            dir,
            "--json",
            "--grid",
            grid.to_str().unwrap(),
            "--rows",
            "5",
            "--s3-endpoint",
            &moto.endpoint,
        ]);
        let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_object_mut().unwrap().remove("dir");
        v
    };
    let (g_local, g_s3) = (tmp.path().join("local.png"), tmp.path().join("s3.png"));
    let want = inspect(local_out.to_str().unwrap(), &g_local);
    assert_eq!(want["rows"], 6);
    assert_eq!(want["complete"], true);
    assert_eq!(inspect("s3://inputs/run", &g_s3), want);
    assert!(std::fs::read(&g_s3).unwrap() == std::fs::read(&g_local).unwrap());
    let o = run(&[
        "inspect",
        "s3://inputs/nope",
        "--s3-endpoint",
        &moto.endpoint,
    ]);
    assert!(
        stderr(&o).contains("prep inspect s3://inputs/nope: no objects at or under this URL"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn coco_from_s3_builds_the_bytes_of_a_local_copy_and_fetch_reads_it_too() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("data");
    let tmp = tempfile::tempdir().unwrap();
    let local_in = make_coco(&tmp.path().join("coco"), "val2017");
    upload_dir(&moto.endpoint, &local_in, "s3://data/coco");
    let args = |input: &str, out: &str| -> Vec<String> {
        [
            "build",
            "--source",
            "coco",
            "--input",
            input,
            "--split",
            "val2017",
            "--condition",
            "seg,keypose,canny",
            "--resolution",
            "128",
            "--threads",
            "1",
            "--out",
            out,
            "--quiet",
            "--s3-endpoint",
            &moto.endpoint,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let local_out = tmp.path().join("local");
    let a = args(local_in.to_str().unwrap(), local_out.to_str().unwrap());
    // --s3-endpoint with local --input and --out is refused; drop it for the local run.
    let a: Vec<&str> = a[..a.len() - 2].iter().map(String::as_str).collect();
    run_ok(&a);
    let s3_out = tmp.path().join("from-s3");
    let a = args("s3://data/coco", s3_out.to_str().unwrap());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    run_ok(&a);
    let local = data_files(&local_out);
    assert_eq!(local.len(), 1);
    assert!(
        data_files(&s3_out) == local,
        "images, label maps and keypoints from s3:// give the local bytes"
    );
    let st = stats(&s3_out, 0);
    assert_eq!(st["rows"], 2);
    assert_eq!(st["failed"], stats(&local_out, 0)["failed"]);
    assert_eq!(st["failed"]["file_not_found"], 1, "{st}");

    // prep fetch (download only) reads the same input.
    let f_local = tmp.path().join("f-local");
    let f_s3 = tmp.path().join("f-s3");
    let fa = |input: &str, out: &str| -> Vec<String> {
        [
            "fetch", "--source", "coco", "--input", input, "--split", "val2017", "--out", out,
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = fa(local_in.to_str().unwrap(), f_local.to_str().unwrap());
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut a = fa("s3://data/coco", f_s3.to_str().unwrap());
    a.extend(["--s3-endpoint".to_string(), moto.endpoint.clone()]);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(data_files(&f_s3) == data_files(&f_local));

    // A missing split names the object and the flags to check.
    let a = args("s3://data/coco", tmp.path().join("x").to_str().unwrap());
    let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
    a[6] = "train2017";
    let o = run(&a);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("s3://data/coco/annotations/captions_train2017.json not found; --source coco needs the COCO captions for split \"train2017\" (check --input and --split)"),
        "{}",
        stderr(&o)
    );
}

fn laion_shard(path: &Path, base: usize, images: &Path) {
    use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let n = 3;
    let urls: Vec<String> = (0..n)
        .map(|i| {
            let p = images.join(format!("{}.jpg", base + i));
            std::fs::write(&p, jpeg(&photo(100 + 10 * i as u32, 80, (base + i) as u32))).unwrap();
            format!("file://{}", p.display())
        })
        .collect();
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("URL", Arc::new(StringArray::from(urls))),
        (
            "TEXT",
            Arc::new(StringArray::from(
                (0..n)
                    .map(|i| format!("row {}", base + i))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "AESTHETIC_SCORE",
            Arc::new(Float64Array::from(vec![6.5, 5.0, 7.0])),
        ),
    ];
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn laion_metadata_shards_under_an_s3_prefix_read_as_one_table() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("meta");
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let meta = tmp.path().join("meta");
    std::fs::create_dir_all(&meta).unwrap();
    laion_shard(&meta.join("part-0.parquet"), 0, &images);
    laion_shard(&meta.join("part-1.parquet"), 3, &images);
    std::fs::write(meta.join("README.txt"), b"not metadata").unwrap();
    upload_dir(&moto.endpoint, &meta, "s3://meta/laion");
    let args = |input: &str, out: &str| -> Vec<String> {
        [
            "build",
            "--source",
            "laion",
            "--input",
            input,
            "--min-aesthetic",
            "6",
            "--condition",
            "color",
            "--resolution",
            "64",
            "--shard-size",
            "4",
            "--threads",
            "1",
            "--out",
            out,
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let local_out = tmp.path().join("local");
    let a = args(meta.to_str().unwrap(), local_out.to_str().unwrap());
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let s3_out = tmp.path().join("from-s3");
    let mut a = args("s3://meta/laion/", s3_out.to_str().unwrap());
    a.extend(["--s3-endpoint".to_string(), moto.endpoint.clone()]);
    let o = run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        stderr(&o).contains("built 2 shard(s) (4 rows"),
        "{}",
        stderr(&o)
    );
    let local = data_files(&local_out);
    assert_eq!(local.len(), 2);
    assert!(data_files(&s3_out) == local);
    let (rows, _) = read_rows(&s3_out.join("data/part-00000.parquet"));
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.key.as_str(), r.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("laion/000000000", "row 0"),
            ("laion/000000002", "row 2"),
            ("laion/000000003", "row 3")
        ],
        "keys run on across shards; row 1 filtered (aesthetic 5.0)"
    );
    assert_eq!(stats(&s3_out, 0)["filtered"]["min_aesthetic"], 1);

    // The plan counts the rows of every shard from their footers (ranged GETs).
    let mut a = args("s3://meta/laion", tmp.path().join("dry").to_str().unwrap());
    a.extend([
        "--s3-endpoint".to_string(),
        moto.endpoint.clone(),
        "--dry-run".to_string(),
    ]);
    let o = run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(plan.contains("records      6 in 2 shard(s) of 4"), "{plan}");

    // One object as --input.
    let one = tmp.path().join("one");
    let mut a = args("s3://meta/laion/part-1.parquet", one.to_str().unwrap());
    a.extend(["--s3-endpoint".to_string(), moto.endpoint.clone()]);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (rows, _) = read_rows(&one.join("data/part-00000.parquet"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].text, "row 3");
}

#[test]
fn missing_bucket_and_prefix_name_the_url() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("there");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = run(&folder_args("s3://absent/photos", out.to_str().unwrap())
        .into_iter()
        .chain(["--s3-endpoint", &moto.endpoint])
        .collect::<Vec<_>>());
    assert!(!o.status.success());
    let msg = stderr(&o);
    assert!(
        msg.contains("s3://absent/photos")
            && msg.contains("check the bucket exists, the credentials, and --s3-endpoint"),
        "{msg}"
    );
    let o = run(&folder_args("s3://there/nothing", out.to_str().unwrap())
        .into_iter()
        .chain(["--s3-endpoint", &moto.endpoint])
        .collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--input s3://there/nothing: no objects at or under this URL"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "nothing written before the input is checked");

    // Arguments that take local paths only say so instead of "file not found".
    let o = run(&["build", "--config", "s3://there/p.toml", "--out", "x"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(
            "prep build --config s3://there/p.toml: this argument takes local paths only"
        ),
        "{}",
        stderr(&o)
    );

    // A whole bucket as --input, captions from metadata.jsonl.
    moto.bucket("rootbucket");
    let dir = tmp.path().join("meta-photos");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x.jpg"), jpeg(&photo(100, 80, 1))).unwrap();
    std::fs::write(dir.join("y.jpg"), jpeg(&photo(90, 80, 2))).unwrap();
    std::fs::write(dir.join("y.txt"), "from the txt").unwrap();
    std::fs::write(
        dir.join("metadata.jsonl"),
        "{\"file_name\": \"y.jpg\"}\n{\"file_name\": \"x.jpg\", \"text\": \"from jsonl\"}\n",
    )
    .unwrap();
    upload_dir(&moto.endpoint, &dir, "s3://rootbucket");
    let (a_out, b_out) = (tmp.path().join("a"), tmp.path().join("b"));
    run_ok(&folder_args(dir.to_str().unwrap(), a_out.to_str().unwrap()));
    let mut a = folder_args("s3://rootbucket", b_out.to_str().unwrap());
    a.extend(["--s3-endpoint", &moto.endpoint]);
    run_ok(&a);
    assert!(data_files(&a_out) == data_files(&b_out));
    let (rows, _) = read_rows(&b_out.join("data/part-00000.parquet"));
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.key.as_str(), r.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [("folder/y", "from the txt"), ("folder/x", "from jsonl")]
    );
}

#[test]
fn a_throttling_input_store_is_survived() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("busy");
    let tmp = tempfile::tempdir().unwrap();
    let local_in = tmp.path().join("photos");
    photos(&local_in);
    upload_dir(&moto.endpoint, &local_in, "s3://busy/photos");
    // The first 10 requests (the listing, captions and the first images) get 503/429.
    let proxy = Proxy::start(moto.port, Mode::Throttle(10));
    let local_out = tmp.path().join("local");
    run_ok(&folder_args(
        local_in.to_str().unwrap(),
        local_out.to_str().unwrap(),
    ));
    let s3_out = tmp.path().join("from-s3");
    let mut a = folder_args("s3://busy/photos", s3_out.to_str().unwrap());
    a.extend(["--s3-endpoint", &proxy.endpoint]);
    run_ok(&a);
    assert_eq!(
        proxy.throttled.load(std::sync::atomic::Ordering::SeqCst),
        10
    );
    assert!(data_files(&s3_out) == data_files(&local_out));
}

/// `prep` with its own cache directory and the moto endpoint.
fn eval_ok(cache: &Path, args: &[&str]) -> std::process::Output {
    ok(prep_in(cache, args))
}

#[test]
fn eval_reads_build_outputs_and_arrays_from_s3_and_writes_there() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("evals");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "incfx",
            "--file",
            fixture("inception_fx.onnx").to_str().unwrap(),
            "--like",
            "inception",
        ],
    ));
    let photos_dir = tmp.path().join("photos");
    photos(&photos_dir);
    let out = tmp.path().join("run");
    run_ok(&folder_args(
        photos_dir.to_str().unwrap(),
        out.to_str().unwrap(),
    ));
    upload_dir(&moto.endpoint, &out, "s3://evals/run");
    let ep = moto.endpoint.as_str();
    let r = remote(ep, "s3://evals");
    let get = |rel: &str| r.get(rel).unwrap().unwrap().0;

    // features: build output (ranged GETs) in, .npy out, for the image and a condition.
    let f_local = tmp.path().join("real.npy");
    let c_local = tmp.path().join("cond.npy");
    let (o, c) = (out.to_str().unwrap(), format!("{}:color", out.display()));
    for (images, dest) in [(o, &f_local), (c.as_str(), &c_local)] {
        eval_ok(
            &cache,
            &[
                "eval",
                "features",
                "--images",
                images,
                "--model",
                "incfx",
                "--no-cache",
                "--out",
                dest.to_str().unwrap(),
            ],
        );
    }
    for (images, dest) in [
        ("s3://evals/run", "s3://evals/f/real.npy"),
        ("s3://evals/run:color", "s3://evals/f/cond.npy"),
    ] {
        eval_ok(
            &cache,
            &[
                "eval",
                "features",
                "--images",
                images,
                "--model",
                "incfx",
                "--no-cache",
                "--out",
                dest,
                "--s3-endpoint",
                ep,
            ],
        );
    }
    assert!(get("f/real.npy") == std::fs::read(&f_local).unwrap());
    assert!(get("f/cond.npy") == std::fs::read(&c_local).unwrap());

    // stats: .npy object in, .npz object out; the same bytes as locally.
    let s_local = tmp.path().join("real.npz");
    eval_ok(
        &cache,
        &[
            "eval",
            "stats",
            "--features",
            f_local.to_str().unwrap(),
            "--out",
            s_local.to_str().unwrap(),
        ],
    );
    eval_ok(
        &cache,
        &[
            "eval",
            "stats",
            "--features",
            "s3://evals/f/real.npy",
            "--out",
            "s3://evals/f/real.npz",
            "--s3-endpoint",
            ep,
        ],
    );
    assert!(get("f/real.npz") == std::fs::read(&s_local).unwrap());

    // fid and metrics read arrays from the store and print what they print locally
    // (small synthetic arrays: the math on 1587 dims is slow in a debug build).
    let arr = |name: &str, seed: u64, shift: f64| {
        let mut rng = prep::metrics::rng::Rng::new(seed, 0);
        let x = faer::Mat::from_fn(40, 8, |_, _| {
            rng.below(1_000_001) as f64 / 1e6 - 0.5 + shift
        });
        let p = tmp.path().join(name);
        prep::eval::io::write_features(&p, &x, prep::eval::io::Dtype::F32).unwrap();
        r.put_mode(
            &format!("a/{name}"),
            std::fs::read(&p).unwrap(),
            object_store::PutMode::Overwrite,
        )
        .unwrap();
        p
    };
    let (real8, gen8) = (arr("real8.npy", 1, 0.0), arr("gen8.npy", 2, 0.2));
    let s8 = tmp.path().join("real8.npz");
    eval_ok(
        &cache,
        &[
            "eval",
            "stats",
            "--features",
            real8.to_str().unwrap(),
            "--out",
            s8.to_str().unwrap(),
        ],
    );
    r.put_mode(
        "a/real8.npz",
        std::fs::read(&s8).unwrap(),
        object_store::PutMode::Overwrite,
    )
    .unwrap();
    let fid = |real: &str, gen: &str| {
        let o = eval_ok(
            &cache,
            &[
                "eval",
                "fid",
                "--real",
                real,
                "--gen",
                gen,
                "--json",
                "--s3-endpoint",
                ep,
            ],
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let want = fid(s8.to_str().unwrap(), gen8.to_str().unwrap());
    assert!(want.contains("\"fid\""), "{want}");
    assert_eq!(fid("s3://evals/a/real8.npz", "s3://evals/a/gen8.npy"), want);
    let metrics = |real: &str, gen: &str| {
        let o = eval_ok(
            &cache,
            &[
                "eval",
                "metrics",
                "--real",
                real,
                "--gen",
                gen,
                "--metrics",
                "fid,kid",
                "--kid-subset-size",
                "10",
                "--json",
                "--s3-endpoint",
                ep,
            ],
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let want = metrics(real8.to_str().unwrap(), gen8.to_str().unwrap());
    assert!(want.contains("\"kid\""), "{want}");
    assert_eq!(
        metrics("s3://evals/a/real8.npy", "s3://evals/a/gen8.npy"),
        want
    );

    // Errors: a missing object names its URL; commands without URL support say so.
    let e = err(prep_in(
        &cache,
        &[
            "eval",
            "fid",
            "--real",
            "s3://evals/f/nope.npz",
            "--gen",
            "s3://evals/a/gen8.npy",
            "--s3-endpoint",
            ep,
        ],
    ));
    assert!(
        e.contains("s3://evals/f/nope.npz: no objects at or under this URL"),
        "{e}"
    );
    let e = err(prep_in(
        &cache,
        &["eval", "run", "--config", "s3://evals/eval.toml"],
    ));
    assert!(
        e.contains("prep eval run --config s3://evals/eval.toml"),
        "{e}"
    );
    assert!(e.contains("this argument takes local paths only"), "{e}");
}

/// Azurite's blob service on loopback (npm `azurite`; `scripts/test` installs it), or
/// `None` with the reason when it is not installed and `PREP_REQUIRE_AZURITE` is unset.
struct Azurite {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Azurite {
    fn start() -> Option<Azurite> {
        let bin = std::env::var("AZURITE_BLOB").unwrap_or_else(|_| "azurite-blob".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = match std::process::Command::new(&bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--skipApiVersionCheck",
                "--loose",
                "--location",
            ])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                if std::env::var_os("PREP_REQUIRE_AZURITE").is_some() {
                    panic!("{bin} cannot be started ({e}) but PREP_REQUIRE_AZURITE is set");
                }
                eprintln!("SKIPPED: azurite is not installed ({e}); `npm install -g azurite` (scripts/test does) to run the az:// test");
                return None;
            }
        };
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed().as_secs() < 60,
                "azurite did not listen on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // object_store's Azure builder reads these (the emulator's well-known account).
        std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
        std::env::set_var(
            "AZURITE_BLOB_STORAGE_URL",
            format!("http://127.0.0.1:{port}"),
        );
        Some(Azurite {
            child,
            port,
            _dir: dir,
        })
    }

    /// Create a container (a SharedKey-signed PUT with the emulator's well-known key).
    fn container(&self, name: &str) {
        let script = r#"
import base64, email.utils, hashlib, hmac, sys, urllib.request
port, c, acct = sys.argv[1], sys.argv[2], "devstoreaccount1"
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
date, ver, ct = email.utils.formatdate(usegmt=True), "2021-08-06", "application/octet-stream"
sts = f"PUT\n\n\n\n\n{ct}\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{ver}\n/{acct}/{acct}/{c}\nrestype:container"
sig = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/{acct}/{c}?restype=container", method="PUT", data=b"",
    headers={"x-ms-date": date, "x-ms-version": ver, "Authorization": f"SharedKey {acct}:{sig}", "Content-Type": ct})
assert urllib.request.urlopen(req).status == 201
"#;
        let o = std::process::Command::new("python3")
            .args(["-c", script, &self.port.to_string(), name])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn folder_from_azure_blob_builds_the_bytes_of_a_local_folder() {
    let Some(az) = Azurite::start() else { return };
    az.container("photos");
    let tmp = tempfile::tempdir().unwrap();
    let local_in = tmp.path().join("photos");
    photos(&local_in);
    let r = Remote::open_read("az://photos/in", &RemoteOptions::default(), "test").unwrap();
    for (name, bytes, _) in snapshot(&local_in) {
        r.put_mode(&name, bytes, object_store::PutMode::Overwrite)
            .unwrap();
    }
    let local_out = tmp.path().join("local");
    run_ok(&folder_args(
        local_in.to_str().unwrap(),
        local_out.to_str().unwrap(),
    ));
    // From az:// to a local output, and to az:// (conditional commits on Azure).
    let az_out = tmp.path().join("from-az");
    let o = run_ok(&folder_args("az://photos/in", az_out.to_str().unwrap()));
    assert!(
        stderr(&o).contains("object store --input az://photos/in: 16 requests"),
        "{}",
        stderr(&o)
    );
    assert!(data_files(&az_out) == data_files(&local_out));
    run_ok(&folder_args("az://photos/in", "az://photos/run"));
    let o = run_ok(&["inspect", "az://photos/run", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rows"], 6);
    assert_eq!(v["complete"], true);
    let out = Remote::open_read("az://photos/run", &RemoteOptions::default(), "test").unwrap();
    for (name, bytes) in data_files(&local_out) {
        assert!(out.get(&name).unwrap().unwrap().0 == bytes, "{name}");
    }
}
