//! `--out s3://…` against a real S3-protocol server on loopback (moto_server): the object
//! layer (put/get/list, multipart, conditional create) and whole builds whose objects equal
//! a local run's bytes; a store that ignores conditional creates is refused; a throttling
//! store is survived.

mod common;
mod s3;

use std::path::Path;

use common::*;
use prep::sink::remote::{PutOutcome, Remote, RemoteOptions};
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

pub fn folder_of(n: usize, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let name = format!("img{i:03}");
        std::fs::write(
            dir.join(format!("{name}.jpg")),
            jpeg(&photo(160 + (i as u32 % 5) * 16, 120, i as u32)),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{name}.txt")), format!("photo number {i}")).unwrap();
    }
}

fn build_args<'a>(input: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "build",
        "--source",
        "folder",
        "--input",
        input,
        "--condition",
        "color,canny",
        "--resolution",
        "96",
        "--shard-size",
        "4",
        "--threads",
        "1",
        "--out",
        out,
        "--quiet",
    ]
}

/// Every object under the remote prefix: relative name → bytes.
fn objects(r: &Remote) -> Vec<(String, Vec<u8>)> {
    r.list("")
        .unwrap()
        .into_iter()
        .map(|(n, _)| {
            let b = r.get(&n).unwrap().unwrap().0;
            (n, b)
        })
        .collect()
}

fn local_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot(dir).into_iter().map(|(n, b, _)| (n, b)).collect()
}

fn parquet_only(v: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    v.into_iter()
        .filter(|(n, _)| n.ends_with(".parquet"))
        .collect()
}

#[test]
fn put_get_list_multipart_and_conditional_create() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("objects");
    let r = remote(&moto.endpoint, "s3://objects/run");
    assert!(r.conditional());

    // Conditional create: the first wins, the second is told the object exists.
    let v1 = match r.put_create("claims/part-00000", b"one".to_vec()).unwrap() {
        PutOutcome::Written(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        r.put_create("claims/part-00000", b"two".to_vec()).unwrap(),
        PutOutcome::Exists
    );
    assert_eq!(r.get("claims/part-00000").unwrap().unwrap().0, b"one");
    // Conditional update on the version read: succeeds once, then the old version is stale.
    let v2 = match r
        .put_mode(
            "claims/part-00000",
            b"three".to_vec(),
            object_store::PutMode::Update(v1.clone()),
        )
        .unwrap()
    {
        PutOutcome::Written(v) => v,
        other => panic!("If-Match on the current ETag must succeed: {other:?}"),
    };
    assert_ne!(v1, v2);
    assert_eq!(
        r.put_mode(
            "claims/part-00000",
            b"four".to_vec(),
            object_store::PutMode::Update(v1)
        )
        .unwrap(),
        PutOutcome::Conflict
    );
    assert_eq!(r.get("claims/part-00000").unwrap().unwrap().0, b"three");
    assert!(r.get("claims/part-00001").unwrap().is_none());

    // Races: of 16 concurrent creates of one key exactly one wins, every time.
    for round in 0..5 {
        let key = format!("race/{round}");
        let winners: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|i| {
                    let (r, key) = (&r, &key);
                    s.spawn(move || {
                        matches!(
                            r.put_create(key, format!("{i}").into_bytes()).unwrap(),
                            PutOutcome::Written(_)
                        )
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap() as usize).sum()
        });
        assert_eq!(winners, 1, "round {round}");
    }

    // Multipart: 21 MiB goes up in 8 MiB parts and comes back byte for byte.
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.bin");
    let data: Vec<u8> = (0..21 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    r.upload_file(&big, "data/big.bin").unwrap();
    let (back, _) = r.get("data/big.bin").unwrap().unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "multipart upload must round-trip");
    let small = tmp.path().join("small.bin");
    std::fs::write(&small, b"small").unwrap();
    r.upload_file(&small, "data/small.bin").unwrap();

    let names: Vec<(String, u64)> = r.list("data").unwrap();
    assert_eq!(
        names,
        vec![
            ("data/big.bin".to_string(), data.len() as u64),
            ("data/small.bin".to_string(), 5)
        ]
    );
    assert_eq!(r.head("data/small.bin").unwrap().map(|h| h.0), Some(5));
    r.delete("data/small.bin").unwrap();
    assert!(r.head("data/small.bin").unwrap().is_none());
    // Another prefix of the same bucket is not listed.
    let other = remote(&moto.endpoint, "s3://objects/other");
    assert!(other.list("").unwrap().is_empty());
}

#[test]
fn build_to_s3_writes_the_bytes_of_a_local_build() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("bucket");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("photos");
    folder_of(10, &input);
    let inp = input.to_str().unwrap();

    let local = tmp.path().join("local");
    run_ok(&build_args(inp, local.to_str().unwrap()));

    let mut a = build_args(inp, "s3://bucket/run");
    a.extend(["--s3-endpoint", &moto.endpoint]);
    let o = run_ok(&a);
    let msg = stderr(&o);
    assert!(msg.contains("built 3 shard(s) (10 rows"), "{msg}");
    assert!(msg.contains("complete"), "{msg}");

    let r = remote(&moto.endpoint, "s3://bucket/run");
    let objs = objects(&r);
    let names: Vec<&str> = objs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "data/part-00000.parquet",
            "data/part-00001.parquet",
            "data/part-00002.parquet",
            "dataset.json",
            "plan.json",
            "stats/part-00000.json",
            "stats/part-00001.json",
            "stats/part-00002.json",
            "status/part-00000.parquet",
            "status/part-00001.parquet",
            "status/part-00002.parquet",
        ],
        "no claims or probes left behind"
    );
    assert_eq!(
        parquet_only(objs.clone()),
        parquet_only(local_files(&local)),
        "data and status objects equal the local build byte for byte"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&r.get("dataset.json").unwrap().unwrap().0).unwrap();
    let lm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(local.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(m["complete"], true);
    assert_eq!(m["rows"], 10);
    assert_eq!(
        m["shards"], lm["shards"],
        "same shard list, sizes and sha256"
    );
    assert_eq!(m["fingerprint"], lm["fingerprint"]);

    // A re-run skips every shard and writes nothing new.
    let o = run_ok(&a);
    assert!(stderr(&o).contains("built 0 shard(s)"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("skipped 3 already complete"),
        "{}",
        stderr(&o)
    );

    // status and finalize read the object store.
    let o = run_ok(&[
        "status",
        "s3://bucket/run",
        "--json",
        "--s3-endpoint",
        &moto.endpoint,
    ]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["num_shards"], 3);
    assert_eq!(st["done"], 3);
    assert_eq!(st["pending"], 0);
    assert_eq!(st["rows"], 10);
    assert_eq!(st["finalized"], true);
    let o = run_ok(&[
        "finalize",
        "s3://bucket/run",
        "--s3-endpoint",
        &moto.endpoint,
    ]);
    assert!(
        stderr(&o).contains("3 shards, 10 rows; dataset.json already up to date"),
        "{}",
        stderr(&o)
    );

    // `prep inspect`-style readers load the same bytes: HF-loadable Parquet unchanged.
    let (rows, _) = read_rows_bytes(&r.get("data/part-00000.parquet").unwrap().unwrap().0);
    assert_eq!(rows, 4);
}

fn read_rows_bytes(b: &[u8]) -> (usize, usize) {
    let f = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut &f, b).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(f).unwrap();
    use parquet::file::reader::FileReader;
    let md = reader.metadata();
    (
        md.file_metadata().num_rows() as usize,
        md.file_metadata().schema_descr().num_columns(),
    )
}

#[test]
fn a_store_that_ignores_conditional_creates_is_refused() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("lax");
    let proxy = Proxy::start(moto.port, Mode::StripConditional);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("photos");
    folder_of(2, &input);
    let mut a = build_args(input.to_str().unwrap(), "s3://lax/run");
    a.extend(["--s3-endpoint", &proxy.endpoint]);
    let o = run(&a);
    assert!(!o.status.success());
    let msg = stderr(&o);
    assert!(
        msg.contains("does not honour conditional creates (If-None-Match: *)")
            && msg.contains("--unsafe-no-conditional-put"),
        "{msg}"
    );
    // With the explicit opt-out a single worker may write there.
    a.push("--unsafe-no-conditional-put");
    let o = run_ok(&a);
    assert!(
        stderr(&o).contains("built 1 shard(s) (2 rows"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_throttling_store_is_survived() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("busy");
    // The first 12 requests are answered 503/429 SlowDown: the probe, the first checks
    // and the first uploads all have to back off and retry.
    let proxy = Proxy::start(moto.port, Mode::Throttle(12));
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("photos");
    folder_of(6, &input);
    let inp = input.to_str().unwrap();
    let local = tmp.path().join("local");
    run_ok(&build_args(inp, local.to_str().unwrap()));
    let mut a = build_args(inp, "s3://busy/run");
    a.extend(["--s3-endpoint", &proxy.endpoint]);
    let o = run_ok(&a);
    assert!(
        stderr(&o).contains("built 2 shard(s) (6 rows"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        proxy.throttled.load(std::sync::atomic::Ordering::SeqCst),
        12
    );
    let r = remote(&moto.endpoint, "s3://busy/run");
    assert_eq!(parquet_only(objects(&r)), parquet_only(local_files(&local)));
}

#[test]
fn plain_http_endpoint_off_loopback_and_bad_urls_are_refused() {
    let o = run(&[
        "status",
        "s3://b/run",
        "--s3-endpoint",
        "http://192.0.2.7:9000",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("plain http is allowed only on loopback"),
        "{}",
        stderr(&o)
    );
    let o = run(&["status", "ftp://b/run"]);
    assert!(
        stderr(&o).contains("unsupported scheme ftp://"),
        "{}",
        stderr(&o)
    );
}
