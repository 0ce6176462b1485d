//! The rest of prep on object stores, against a real S3-protocol server on loopback
//! (moto_server; skipped without it unless `PREP_REQUIRE_MOTO` is set): the feature cache
//! shared by eval workers, `prep eval run` (plain and study) writing to `s3://`, and the
//! errors for bad URLs. Each output is compared byte for byte with the local run.

mod common;
mod s3;

use std::path::{Path, PathBuf};

use common::*;
use prep::sink::remote::{Remote, RemoteOptions};
use s3::Moto;

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

fn put(r: &Remote, rel: &str, bytes: Vec<u8>) {
    r.put_mode(rel, bytes, object_store::PutMode::Overwrite)
        .unwrap();
}

fn get(r: &Remote, rel: &str) -> Vec<u8> {
    r.get(rel)
        .unwrap()
        .unwrap_or_else(|| panic!("{} missing", r.url(rel)))
        .0
}

/// A fresh eval worker: its own (empty) $PREP_CACHE with the fixture Inception registered.
fn worker(dir: &Path) -> PathBuf {
    ok(prep_in(
        dir,
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
    dir.to_path_buf()
}

#[test]
fn feature_cache_on_s3_is_shared_by_fresh_workers_and_a_corrupt_entry_is_recomputed() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("cache");
    let ep = moto.endpoint.as_str();
    let t = tempfile::tempdir().unwrap();
    let imgs = t.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let mut shas = Vec::new();
    for i in 0..40u32 {
        let p = imgs.join(format!("{i:03}.png"));
        photo(40 + i, 30 + (i * 7) % 23, i).save(&p).unwrap();
        shas.push(prep::eval::extract::sha256_hex(&std::fs::read(&p).unwrap()));
    }
    let features = |cache: &Path, out: &Path, extra: &[&str]| {
        let mut a = vec![
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--batch-size",
            "4",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ];
        a.extend_from_slice(extra);
        ok(prep_in(cache, &a))
    };
    let s3_cache = [
        "--feature-cache",
        "s3://cache/features",
        "--s3-endpoint",
        ep,
    ];

    // The reference: no cache at all.
    let w0 = worker(&t.path().join("w0"));
    let f0 = t.path().join("f0.npy");
    features(&w0, &f0, &["--no-cache"]);
    let want = std::fs::read(&f0).unwrap();

    // Worker 1 computes everything and fills the shared cache: one GET per image (misses),
    // one PUT per computed row; nothing in its local cache.
    let w1 = worker(&t.path().join("w1"));
    let f1 = t.path().join("f1.npy");
    let o = features(&w1, &f1, &s3_cache);
    let e = stderr(&o);
    assert!(e.contains("40 computed, 0 from the cache"), "{e}");
    assert!(
        e.contains("feature cache s3://cache/features: 81 requests: PUT 40, multipart parts 0, GET 40, HEAD 0, LIST 1, DELETE 0"),
        "{e}"
    );
    assert!(std::fs::read(&f1).unwrap() == want);
    assert!(!w1.join("features").exists(), "the local cache stays empty");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let model_dir = j["model_key"].as_str().unwrap().replace(':', "_");

    // The same key layout as the local cache: <model key>/<2 hex>/<image sha>.f32.
    let r = remote(ep, "s3://cache/features");
    let listed = r.list("").unwrap();
    let mut expect: Vec<(String, u64)> = shas
        .iter()
        .map(|s| (format!("{model_dir}/{}/{s}.f32", &s[..2]), 1587 * 4))
        .collect();
    expect.sort();
    assert_eq!(listed, expect);

    // Worker 2, fresh local state, through PREP_FEATURE_CACHE: every row from the store.
    let w2 = worker(&t.path().join("w2"));
    let f2 = t.path().join("f2.npy");
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_prep"));
    c.env("PREP_CACHE", &w2)
        .env("PREP_FEATURE_CACHE", "s3://cache/features")
        .env("PREP_S3_ENDPOINT", ep)
        .args([
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--batch-size",
            "4",
            "--out",
            f2.to_str().unwrap(),
        ]);
    let o = ok(c.output().unwrap());
    let e = stderr(&o);
    assert!(e.contains("0 computed, 40 from the cache"), "{e}");
    assert!(
        e.contains("41 requests: PUT 0, multipart parts 0, GET 40, HEAD 0, LIST 1"),
        "{e}"
    );
    assert!(std::fs::read(&f2).unwrap() == want);

    // A torn entry (foreign length) is a miss: recomputed and replaced; a foreign object
    // of the right length is not detectable and not expected (keys are content hashes).
    let torn = &expect[7].0;
    put(&r, torn, vec![1, 2, 3, 4, 5, 6]);
    let f3 = t.path().join("f3.npy");
    let e = stderr(&features(&w2, &f3, &s3_cache));
    assert!(e.contains("1 computed, 39 from the cache"), "{e}");
    assert!(e.contains("PUT 1, multipart parts 0, GET 40"), "{e}");
    assert!(std::fs::read(&f3).unwrap() == want);
    assert_eq!(get(&r, torn).len(), 1587 * 4, "the torn entry was replaced");
    let e = stderr(&features(&w2, &f3, &s3_cache));
    assert!(e.contains("0 computed, 40 from the cache"), "{e}");

    // Bad locations name the flag or the URL and say what to check.
    let e = err(prep_in(
        &w2,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--out",
            f3.to_str().unwrap(),
            "--feature-cache",
            "s3://",
        ],
    ));
    assert!(
        e.contains("--feature-cache s3://: no bucket name")
            || e.contains("--feature-cache s3://: not a valid URL"),
        "{e}"
    );
    let e = err(prep_in(
        &w2,
        &[
            "eval",
            "features",
            "--images",
            imgs.to_str().unwrap(),
            "--model",
            "incfx",
            "--out",
            f3.to_str().unwrap(),
            "--feature-cache",
            "s3://no-such-bucket/f",
            "--s3-endpoint",
            ep,
        ],
    ));
    assert!(
        e.contains("--feature-cache s3://no-such-bucket/f: the feature cache is not reachable"),
        "{e}"
    );
    assert!(e.contains("check the bucket exists"), "{e}");
    assert!(!e.contains("computed"), "nothing was computed: {e}");
}

/// A float32 .npy of n × d deterministic values.
fn npy(p: &Path, n: usize, d: usize, seed: u64, shift: f64) {
    let mut rng = prep::metrics::rng::Rng::new(seed, 0);
    let x = faer::Mat::from_fn(n, d, |_, _| rng.below(1_000_001) as f64 / 1e6 - 0.5 + shift);
    prep::eval::io::write_features(p, &x, prep::eval::io::Dtype::F32).unwrap();
}

#[test]
fn eval_run_and_a_study_night_write_metrics_and_history_to_s3() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("evals");
    let ep = moto.endpoint.as_str();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    npy(&d.join("real.npy"), 30, 6, 1, 0.0);
    npy(&d.join("g1.npy"), 30, 6, 2, 0.3);
    npy(&d.join("g2.npy"), 30, 6, 3, 0.1);
    let r = remote(ep, "s3://evals");

    // Plain eval run: --out local vs --out s3:// → the same two files.
    let plain = d.join("eval.toml");
    std::fs::write(
        &plain,
        r#"metrics = ["fid", "kid"]
[reference]
features = "real.npy"
[[entry]]
name = "a"
samples = 1000
features = "g1.npy"
[[entry]]
name = "b"
samples = 5000
features = "g2.npy"
"#,
    )
    .unwrap();
    let local = d.join("plain-out");
    run_ok(&[
        "eval",
        "run",
        "--config",
        plain.to_str().unwrap(),
        "--out",
        local.to_str().unwrap(),
    ]);
    run_ok(&[
        "eval",
        "run",
        "--config",
        plain.to_str().unwrap(),
        "--out",
        "s3://evals/plain/",
        "--s3-endpoint",
        ep,
    ]);
    for f in ["metrics.json", "metrics.csv"] {
        assert!(
            get(&r, &format!("plain/{f}")) == std::fs::read(local.join(f)).unwrap(),
            "{f}"
        );
    }

    // A study night: history and out on the store, the same rows as a local history.
    let study = |history: &str, out: &str| {
        format!(
            r#"[study]
name = "s"
history = "{history}"
out = "{out}"
eval_size = 30
metrics = ["fid"]

[reference]
features = "real.npy"

[[checkpoint]]
name = "n1k"
condition = "color"
samples = 1000
features = "g1.npy"

[[checkpoint]]
name = "n5k"
condition = "color"
samples = 5000
features = "g2.npy"
"#
        )
    };
    let remote_cfg = d.join("study-s3.toml");
    std::fs::write(
        &remote_cfg,
        study(
            "s3://evals/study/history.parquet",
            "s3://evals/study/nights",
        ),
    )
    .unwrap();
    let local_cfg = d.join("study-local.toml");
    std::fs::write(&local_cfg, study("history.parquet", "nights")).unwrap();
    let night = |cfg: &Path, n: &str| {
        let o = run_ok(&[
            "eval",
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--night",
            n,
            "--json",
            "--s3-endpoint",
            ep,
        ]);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        j["history_rows"].as_u64().unwrap()
    };
    // fid + fid-inf for two checkpoints: 4 rows a night; a re-run replaces its night.
    assert_eq!(night(&remote_cfg, "2024-05-01"), 4);
    assert_eq!(night(&remote_cfg, "2024-05-02"), 8);
    assert_eq!(night(&remote_cfg, "2024-05-02"), 8);
    assert_eq!(night(&local_cfg, "2024-05-01"), 4);
    assert_eq!(night(&local_cfg, "2024-05-02"), 8);
    let hist = d.join("from-s3.parquet");
    std::fs::write(&hist, get(&r, "study/history.parquet")).unwrap();
    let strip = |rows: Vec<prep::study::history::HistoryRow>| {
        rows.into_iter()
            .map(|mut r| {
                r.config_sha256.clear(); // the two configs differ in their paths only
                serde_json::to_string(&r).unwrap()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(prep::study::history::read(&hist).unwrap()),
        strip(prep::study::history::read(&d.join("history.parquet")).unwrap())
    );
    // The night's files: --out on the store equals --out locally (same config).
    let night_local = d.join("night-local");
    run_ok(&[
        "eval",
        "run",
        "--config",
        remote_cfg.to_str().unwrap(),
        "--night",
        "2024-05-02",
        "--out",
        night_local.to_str().unwrap(),
        "--s3-endpoint",
        ep,
    ]);
    for f in ["metrics.json", "metrics.csv"] {
        assert!(
            get(&r, &format!("study/nights/2024-05-02/{f}"))
                == std::fs::read(night_local.join("2024-05-02").join(f)).unwrap(),
            "{f}"
        );
    }

    // Nights recorded at once by several processes: none is lost. A run either records its
    // night (and it is in the final history) or is told that another run changed the
    // history and to re-run — never a silent overwrite of the other's rows.
    let nights = [
        "2024-06-01",
        "2024-06-02",
        "2024-06-03",
        "2024-06-04",
        "2024-06-05",
    ];
    let children: Vec<_> = nights
        .iter()
        .map(|n| {
            std::process::Command::new(env!("CARGO_BIN_EXE_prep"))
                .env("PREP_CACHE", std::env::temp_dir().join("prep-test-cache"))
                .args([
                    "eval",
                    "run",
                    "--config",
                    remote_cfg.to_str().unwrap(),
                    "--night",
                    n,
                    "--s3-endpoint",
                    ep,
                ])
                .stderr(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let outcomes: Vec<(bool, String)> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            (o.status.success(), stderr(&o))
        })
        .collect();
    std::fs::write(&hist, get(&r, "study/history.parquet")).unwrap();
    let recorded: std::collections::BTreeSet<String> = prep::study::history::read(&hist)
        .unwrap()
        .into_iter()
        .map(|r| r.night)
        .collect();
    for (n, (ok, e)) in nights.iter().zip(&outcomes) {
        if *ok {
            assert!(
                recorded.contains(*n),
                "{n} succeeded but its rows were lost"
            );
        } else {
            assert!(
                e.contains("was changed by another run while night") && e.contains("re-run"),
                "{n}: {e}"
            );
        }
    }
    assert!(outcomes.iter().any(|(ok, _)| *ok));

    // A study scoring images with `[study] feature_cache` on the store: the first worker
    // computes, a fresh one (empty $PREP_CACHE) reads every row, with the same history rows.
    for (set, shift) in [("real", 0u32), ("gen", 60)] {
        std::fs::create_dir_all(d.join(set)).unwrap();
        for i in 0..12u32 {
            photo(40 + i, 44 + shift / 20, i * 3 + shift) // 24 distinct files
                .save(d.join(set).join(format!("{i:03}.png")))
                .unwrap();
        }
    }
    let img_cfg = d.join("study-images.toml");
    std::fs::write(
        &img_cfg,
        format!(
            r#"[study]
name = "img"
history = "s3://evals/img/history.parquet"
eval_size = 12
metrics = ["fid"]
feature_cache = "s3://evals/fc"

[features]
model = "{}"
size = 32
batch = 4

[reference]
images = "real"

[[checkpoint]]
name = "c"
condition = "color"
samples = 10
images = "gen"
"#,
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/models/features_pool.onnx")
                .display()
        ),
    )
    .unwrap();
    let score = |cache: &Path, n: &str| {
        let o = ok(prep_in(
            cache,
            &[
                "eval",
                "run",
                "--config",
                img_cfg.to_str().unwrap(),
                "--night",
                n,
                "--json",
                "--s3-endpoint",
                ep,
            ],
        ));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (stderr(&o), j["rows"].to_string())
    };
    let (e1, rows1) = score(&d.join("w1"), "2024-05-01");
    assert!(
        e1.contains("[reference] images: 12 computed, 0 from the feature cache s3://evals/fc"),
        "{e1}"
    );
    let (e2, rows2) = score(&d.join("w2"), "2024-05-01");
    assert!(
        e2.contains("[reference] images: 0 computed, 12 from the feature cache s3://evals/fc"),
        "{e2}"
    );
    assert!(e2.contains("0 computed, 12 from the feature cache"), "{e2}");
    assert!(!e2.contains(" 12 computed"), "{e2}");
    assert_eq!(rows1, rows2);
    assert_eq!(r.list("fc").unwrap().len(), 24);
    assert!(!d.join("w2/features").exists());
    // An unreachable cache fails before anything is scored or recorded.
    let text = std::fs::read_to_string(&img_cfg).unwrap();
    std::fs::write(
        &img_cfg,
        text.replace("s3://evals/fc", "s3://no-such-bucket/fc")
            .replace("s3://evals/img/", "s3://evals/img2/"),
    )
    .unwrap();
    let e = err(prep_in(
        &d.join("w2"),
        &[
            "eval",
            "run",
            "--config",
            img_cfg.to_str().unwrap(),
            "--night",
            "2024-05-01",
            "--s3-endpoint",
            ep,
        ],
    ));
    assert!(
        e.contains(
            "[study] feature_cache s3://no-such-bucket/fc: the feature cache is not reachable"
        ),
        "{e}"
    );
    assert!(!e.contains("computed"), "{e}");
    assert!(r.list("img2").unwrap().is_empty());

    // Bad URLs fail before anything is scored, naming the setting.
    let bad = d.join("study-bad.toml");
    std::fs::write(&bad, study("s3:///history.parquet", "nights")).unwrap();
    let e = stderr(&run(&[
        "eval",
        "run",
        "--config",
        bad.to_str().unwrap(),
        "--night",
        "2024-05-03",
    ]));
    assert!(e.contains("[study] history s3:///history.parquet"), "{e}");
    assert!(!d.join("nights/2024-05-03").exists());
    let e = stderr(&run(&[
        "eval",
        "run",
        "--config",
        plain.to_str().unwrap(),
        "--out",
        "ftp://host/x",
    ]));
    assert!(
        e.contains("--out ftp://host/x: unsupported scheme ftp://"),
        "{e}"
    );
    let e = stderr(&run(&[
        "eval",
        "run",
        "--config",
        plain.to_str().unwrap(),
        "--out",
        "s3://no-such-bucket/x",
        "--s3-endpoint",
        ep,
    ]));
    assert!(
        e.contains("--out s3://no-such-bucket/x: the object store is not reachable"),
        "{e}"
    );
    assert!(e.contains("check the bucket exists"), "{e}");
}

/// A dataset laid out like `prep build`'s: data/part-NNNNN.parquet with `key` and `source`
/// (70 % "web"), plus a dataset.json.
fn dataset(dir: &Path, shards: &[(usize, usize)]) {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, true),
    ]));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for (shard, &(from, to)) in shards.iter().enumerate() {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                (from..to).map(|i| format!("{i:08}")),
            )),
            Arc::new(StringArray::from_iter_values((from..to).map(|i| {
                if i % 10 < 7 {
                    "web"
                } else {
                    "book"
                }
            }))),
        ];
        let f = std::fs::File::create(dir.join(format!("data/part-{shard:05}.parquet"))).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, schema.clone(), None).unwrap();
        w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
            .unwrap();
        w.close().unwrap();
    }
    std::fs::write(dir.join("dataset.json"), "{\"rows\": 1200}\n").unwrap();
}

#[test]
fn subset_reads_a_dataset_on_s3_and_writes_the_bytes_of_a_local_run() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("evals");
    let ep = moto.endpoint.as_str();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let ds = d.join("ds");
    dataset(&ds, &[(0, 400), (400, 800), (800, 1200)]);
    let r = remote(ep, "s3://evals");
    for (name, bytes, _) in snapshot(&ds) {
        put(&r, &format!("ds/{name}"), bytes);
    }
    let subset = |dataset: &str, out: &str, extra: &[&str]| {
        let mut a = vec![
            "subset",
            dataset,
            "--sizes",
            "100,500,all",
            "--seed",
            "7",
            "--out",
            out,
        ];
        a.extend_from_slice(extra);
        a.extend(["--s3-endpoint", ep]);
        run_ok(&a)
    };
    let strat = ["--val", "50", "--stratify", "source"];
    let local = d.join("local");
    subset(ds.to_str().unwrap(), local.to_str().unwrap(), &strat);
    let o = subset("s3://evals/ds", "s3://evals/sub", &strat);
    assert!(
        stderr(&o).contains("wrote s3://evals/sub/subsets.json"),
        "{}",
        stderr(&o)
    );
    let files = [
        "val.parquet",
        "train-100.parquet",
        "train-500.parquet",
        "train-all.parquet",
    ];
    for f in files {
        assert!(
            get(&r, &format!("sub/{f}")) == std::fs::read(local.join(f)).unwrap(),
            "{f}: the index of the s3 dataset equals the local one"
        );
    }
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
    let mut want = json(&std::fs::read(local.join("subsets.json")).unwrap());
    let mut got = json(&get(&r, "sub/subsets.json"));
    assert_eq!(got["dataset"], "s3://evals/ds");
    assert_eq!(
        got["data_files"],
        serde_json::json!([
            "s3://evals/ds/data/part-00000.parquet",
            "s3://evals/ds/data/part-00001.parquet",
            "s3://evals/ds/data/part-00002.parquet"
        ])
    );
    assert!(want["dataset_manifest_sha256"].is_string());
    for k in ["dataset", "data_files"] {
        got[k] = serde_json::Value::Null;
        want[k] = serde_json::Value::Null;
    }
    assert_eq!(got, want, "the same manifest but for where the data lives");

    // A local dataset into s3: every file, subsets.json included, byte for byte.
    subset(ds.to_str().unwrap(), "s3://evals/sub-local/", &strat);
    for f in files.iter().chain(&["subsets.json"]) {
        assert!(
            get(&r, &format!("sub-local/{f}")) == std::fs::read(local.join(f)).unwrap(),
            "{f}"
        );
    }

    // --pin-val from the store: the same validation split as from a local copy.
    let unstrat = d.join("unstrat");
    subset(
        ds.to_str().unwrap(),
        unstrat.to_str().unwrap(),
        &["--val", "50"],
    );
    put(
        &r,
        "u/subsets.json",
        std::fs::read(unstrat.join("subsets.json")).unwrap(),
    );
    let (pin_local, pin_s3) = (d.join("pin-local"), d.join("pin-s3"));
    let p = unstrat.join("subsets.json");
    subset(
        "s3://evals/ds",
        pin_local.to_str().unwrap(),
        &["--pin-val", p.to_str().unwrap()],
    );
    subset(
        "s3://evals/ds",
        pin_s3.to_str().unwrap(),
        &["--pin-val", "s3://evals/u/subsets.json"],
    );
    assert!(
        std::fs::read(pin_s3.join("val.parquet")).unwrap()
            == std::fs::read(unstrat.join("val.parquet")).unwrap()
    );
    assert!(
        std::fs::read(pin_s3.join("val.parquet")).unwrap()
            == std::fs::read(pin_local.join("val.parquet")).unwrap()
    );

    // Errors name the argument and the URL.
    let e = stderr(&run(&[
        "subset",
        "s3://evals/nope",
        "--sizes",
        "1",
        "--seed",
        "0",
        "--out",
        d.join("x").to_str().unwrap(),
        "--s3-endpoint",
        ep,
    ]));
    assert!(
        e.contains("DATASET s3://evals/nope: no objects at or under this URL"),
        "{e}"
    );
    put(&r, "flat/x.txt", b"x".to_vec());
    let e = stderr(&run(&[
        "subset",
        "s3://evals/flat",
        "--sizes",
        "1",
        "--seed",
        "0",
        "--out",
        d.join("x").to_str().unwrap(),
        "--s3-endpoint",
        ep,
    ]));
    assert!(
        e.contains("s3://evals/flat: no data/ directory; pass the --out directory of `prep build`"),
        "{e}"
    );
    let e = stderr(&run(&[
        "subset",
        ds.to_str().unwrap(),
        "--sizes",
        "1",
        "--seed",
        "0",
        "--out",
        "s3://",
    ]));
    assert!(
        e.contains("--out s3://: no bucket name") || e.contains("--out s3://: not a valid URL"),
        "{e}"
    );
    let e = stderr(&run(&[
        "subset",
        ds.to_str().unwrap(),
        "--sizes",
        "1",
        "--seed",
        "0",
        "--out",
        "s3://no-such-bucket/s",
        "--s3-endpoint",
        ep,
    ]));
    assert!(
        e.contains("--out s3://no-such-bucket/s: the object store is not reachable"),
        "{e}"
    );
    assert!(!d.join("x").exists());
}

/// Column `col` of every row of a local build output as `KEY.png` (last key segment).
fn export(out: &Path, col: &str, dir: &Path) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(out.join("data")).unwrap() {
        let (rows, _) = read_rows(&e.unwrap().path());
        for r in rows {
            let key = r.key.rsplit('/').next().unwrap().to_string();
            std::fs::write(dir.join(format!("{key}.png")), &r.images[col].0).unwrap();
            n += 1;
        }
    }
    n
}

fn upload(r: &Remote, dir: &Path, prefix: &str) {
    for (name, bytes, _) in snapshot(dir) {
        put(r, &format!("{prefix}/{name}"), bytes);
    }
}

#[test]
fn eval_control_and_eval_text_read_their_inputs_from_s3() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("evals");
    let ep = moto.endpoint.as_str();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let r = remote(ep, "s3://evals");

    // Controllability: reference build output, generated images and predicted label maps
    // on the store give the local numbers and the local per-sample CSV.
    let reference = d.join("ref");
    run_ok(&[
        "build",
        "--source",
        "demo",
        "--condition",
        "canny,seg",
        "--resolution",
        "96",
        "--image-format",
        "png",
        "--out",
        reference.to_str().unwrap(),
        "--quiet",
    ]);
    let (gen, seg) = (d.join("gen"), d.join("seg"));
    let n = export(&reference, "image", &gen);
    assert!(n >= 4);
    export(&reference, "seg", &seg);
    upload(&r, &reference, "ref");
    upload(&r, &gen, "gen");
    upload(&r, &seg, "seg");
    let control = |cond: &str, reference: &str, gen: &str, per_sample: &str| {
        let o = run_ok(&[
            "eval",
            "control",
            "--condition",
            cond,
            "--reference",
            reference,
            "--gen",
            gen,
            "--per-sample",
            per_sample,
            "--json",
            "--s3-endpoint",
            ep,
        ]);
        String::from_utf8(o.stdout).unwrap()
    };
    for (cond, local_gen, url_gen) in [
        ("canny", &gen, "s3://evals/gen"),
        ("seg", &seg, "s3://evals/seg"),
    ] {
        let csv = d.join(format!("{cond}.csv"));
        let want = control(
            cond,
            reference.to_str().unwrap(),
            local_gen.to_str().unwrap(),
            csv.to_str().unwrap(),
        );
        let j: serde_json::Value = serde_json::from_str(&want).unwrap();
        assert_eq!(j["n"].as_u64(), Some(n as u64), "{want}");
        let got = control(
            cond,
            "s3://evals/ref",
            url_gen,
            &format!("s3://evals/control/{cond}.csv"),
        );
        assert_eq!(got, want, "{cond}");
        assert!(get(&r, &format!("control/{cond}.csv")) == std::fs::read(&csv).unwrap());
    }
    let e = stderr(&run(&[
        "eval",
        "control",
        "--condition",
        "canny",
        "--reference",
        "s3://evals/nope",
        "--gen",
        "s3://evals/gen",
        "--s3-endpoint",
        ep,
    ]));
    assert!(
        e.contains("--reference s3://evals/nope: no objects at or under this URL"),
        "{e}"
    );
    let e = stderr(&run(&[
        "eval",
        "control",
        "--condition",
        "canny",
        "--reference",
        "s3://evals/gen",
        "--gen",
        "s3://evals/gen",
        "--s3-endpoint",
        ep,
    ]));
    assert!(
        e.contains("s3://evals/gen has no dataset.json: --reference must be a finished `prep build` output"),
        "{e}"
    );
    let e = stderr(&run(&[
        "eval",
        "control",
        "--condition",
        "canny",
        "--reference",
        "s3://evals/ref",
        "--gen",
        "s3://evals/gen",
        "--keep",
        "s3://evals/keep",
        "--s3-endpoint",
        ep,
    ]));
    assert!(
        e.contains(
            "prep eval control --keep s3://evals/keep: this argument takes local paths only"
        ),
        "{e}"
    );

    // Prompts: a text file and a build output (data/*.parquet, `text` column) on the store.
    let cache = d.join("cache");
    ok(prep_in(
        &cache,
        &[
            "models",
            "add",
            "textfx",
            "--file",
            fixture("text_fx.onnx").to_str().unwrap(),
            "--like",
            "clip-vit-l14-text",
        ],
    ));
    let tok =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate/pipeline/tokenizer");
    let pf = d.join("prompts.txt");
    std::fs::write(&pf, "a photo of a cat\n\na red house by the sea\n").unwrap();
    put(&r, "p/prompts.txt", std::fs::read(&pf).unwrap());
    let text = |prompts: &str, out: &str| {
        ok(prep_in(
            &cache,
            &[
                "eval",
                "text",
                "--prompts",
                prompts,
                "--model",
                "textfx",
                "--tokenizer",
                tok.to_str().unwrap(),
                "--out",
                out,
                "--s3-endpoint",
                ep,
            ],
        ))
    };
    for (local, url) in [
        (pf.clone(), "s3://evals/p/prompts.txt".to_string()),
        (reference.clone(), "s3://evals/ref".to_string()),
        (
            PathBuf::from(format!("{}:text", reference.display())),
            "s3://evals/ref:text".to_string(),
        ),
    ] {
        let want = d.join("t.npy");
        text(local.to_str().unwrap(), want.to_str().unwrap());
        text(&url, "s3://evals/t/t.npy");
        assert!(get(&r, "t/t.npy") == std::fs::read(&want).unwrap(), "{url}");
    }
    let e = err(prep_in(
        &cache,
        &[
            "eval",
            "text",
            "--prompts",
            "s3://evals/p/nope.txt",
            "--model",
            "textfx",
            "--tokenizer",
            tok.to_str().unwrap(),
            "--out",
            d.join("x.npy").to_str().unwrap(),
            "--s3-endpoint",
            ep,
        ],
    ));
    assert!(
        e.contains("--prompts s3://evals/p/nope.txt: no objects at or under this URL"),
        "{e}"
    );
}

/// An image server on loopback: `/ok/NAME` serves a JPEG, `/flaky` answers 502 while
/// `broken` is set and the JPEG otherwise, anything else 404.
fn image_server(broken: std::sync::Arc<std::sync::atomic::AtomicBool>) -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let body = jpeg(&photo(80, 60, 5));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let Some(path) = read_request_path(&conn) else {
                continue;
            };
            let ok = path.starts_with("/ok/")
                || (path == "/flaky" && !broken.load(std::sync::atomic::Ordering::SeqCst));
            let (status, b): (&str, &[u8]) = if ok {
                ("200 OK", &body)
            } else if path == "/flaky" {
                ("502 Bad Gateway", b"down")
            } else {
                ("404 Not Found", b"no")
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b.len()
            );
            let _ = conn.write_all(b);
        }
    });
    base
}

#[test]
fn fetch_retry_failed_on_s3_merges_recovered_rows_like_a_local_run() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let Some(moto) = Moto::start() else { return };
    moto.bucket("runs");
    let ep = moto.endpoint.as_str();
    let broken = Arc::new(AtomicBool::new(true));
    let b = image_server(broken.clone());
    let t = tempfile::tempdir().unwrap();
    let meta = t.path().join("meta.parquet");
    {
        use arrow_array::{ArrayRef, RecordBatch, StringArray};
        let urls: Vec<String> = ["/ok/a.jpg", "/flaky", "/404", "/ok/b.jpg"]
            .iter()
            .map(|p| format!("{b}{p}"))
            .collect();
        let caps: Vec<String> = (0..4).map(|i| format!("caption {i}")).collect();
        let batch = RecordBatch::try_from_iter(vec![
            ("URL", Arc::new(StringArray::from(urls)) as ArrayRef),
            ("TEXT", Arc::new(StringArray::from(caps)) as ArrayRef),
        ])
        .unwrap();
        let f = std::fs::File::create(&meta).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let local = t.path().join("local");
    let fetch = |out: &str| {
        let mut a = vec![
            "fetch",
            "--source",
            "laion",
            "--input",
            meta.to_str().unwrap(),
            "--out",
            out,
            "--allow-network",
            "127.0.0.1/32",
            "--retries",
            "0",
            "--quiet",
        ];
        if out.starts_with("s3://") {
            a.extend(["--s3-endpoint", ep]);
        }
        run_ok(&a);
    };
    let retry = |out: &str| {
        let mut a = vec![
            "fetch",
            "--retry-failed",
            out,
            "--errors",
            "http_5xx",
            "--allow-network",
            "127.0.0.1/32",
            "--quiet",
        ];
        if out.starts_with("s3://") {
            a.extend(["--s3-endpoint", ep]);
        }
        stderr(&run_ok(&a))
    };
    let r = remote(ep, "s3://runs/run");
    for out in [local.to_str().unwrap(), "s3://runs/run"] {
        broken.store(true, Ordering::SeqCst);
        fetch(out);
        broken.store(false, Ordering::SeqCst);
        let e = retry(out);
        assert!(e.contains("retried 1 row(s) of classes [http_5xx] in 1 shard(s): 1 recovered, 0 still failing"), "{out}: {e}");
    }
    // The rewritten shard on the store is the local one, byte for byte; status rows and
    // the manifest's totals agree.
    let data = get(&r, "data/part-00000.parquet");
    assert!(data == std::fs::read(local.join("data/part-00000.parquet")).unwrap());
    let p = t.path().join("remote-data.parquet");
    std::fs::write(&p, &data).unwrap();
    let keys: Vec<String> = read_rows(&p).0.into_iter().map(|r| r.key).collect();
    assert_eq!(
        keys,
        ["laion/000000000", "laion/000000001", "laion/000000003"]
    );
    let stats: serde_json::Value =
        serde_json::from_slice(&get(&r, "stats/part-00000.json")).unwrap();
    assert_eq!(stats["rows"], 3);
    assert_eq!(
        stats["parquet"]["sha256"].as_str().unwrap(),
        prep::eval::extract::sha256_hex(&data),
        "the stats name the data that is there"
    );
    let m: serde_json::Value = serde_json::from_slice(&get(&r, "dataset.json")).unwrap();
    assert_eq!(m["rows"], 3);
    // Nothing left to retry: a second pass changes nothing.
    let e = retry("s3://runs/run");
    assert!(e.contains("retried 0 row(s)"), "{e}");
    assert!(get(&r, "data/part-00000.parquet") == data);
    // A URL without a run names it.
    let e = stderr(&run(&[
        "fetch",
        "--retry-failed",
        "s3://runs/nope",
        "--s3-endpoint",
        ep,
    ]));
    assert!(
        e.contains("s3://runs/nope has no dataset.json; --retry-failed takes the output directory of an earlier prep fetch/build"),
        "{e}"
    );
}
