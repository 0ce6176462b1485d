//! Many workers on one object-store output (moto_server on loopback): two concurrent
//! `--shard auto` workers build every shard exactly once; a worker killed with SIGKILL
//! mid-shard loses its shard to another worker once its lease expires, and no partial
//! shard is ever visible; `prep status` and `prep finalize` agree with the data.

mod common;
mod s3;

use std::path::Path;
use std::time::{Duration, Instant};

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

fn folder_of(n: usize, dir: &Path, w: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let name = format!("img{i:03}");
        std::fs::write(
            dir.join(format!("{name}.jpg")),
            jpeg(&photo(w + (i as u32 % 5) * 16, w * 3 / 4, i as u32)),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{name}.txt")), format!("photo number {i}")).unwrap();
    }
}

fn build_args(input: &str, out: &str, resolution: &str, shard_size: &str) -> Vec<String> {
    [
        "build",
        "--source",
        "folder",
        "--input",
        input,
        "--condition",
        "color,canny",
        "--resolution",
        resolution,
        "--shard-size",
        shard_size,
        "--threads",
        "1",
        "--out",
        out,
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn parquet_objects(r: &Remote) -> Vec<(String, Vec<u8>)> {
    r.list("")
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n.ends_with(".parquet"))
        .map(|(n, _)| {
            let b = r.get(&n).unwrap().unwrap().0;
            (n, b)
        })
        .collect()
}

fn parquet_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot(dir)
        .into_iter()
        .filter(|(n, _, _)| n.ends_with(".parquet"))
        .map(|(n, b, _)| (n, b))
        .collect()
}

/// "built N shard(s)" from a worker's summary line.
fn built(msg: &str) -> usize {
    let i = msg.find("built ").expect(msg) + 6;
    msg[i..].split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn two_auto_workers_build_every_shard_exactly_once() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("race");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("photos");
    folder_of(24, &input, 160);
    let inp = input.to_str().unwrap();
    let local = tmp.path().join("local");
    run_ok(
        &build_args(inp, local.to_str().unwrap(), "96", "2")
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
    );

    let mut a = build_args(inp, "s3://race/run", "96", "2");
    a.extend(
        ["--shard", "auto", "--s3-endpoint", &moto.endpoint]
            .iter()
            .map(|s| s.to_string()),
    );
    // Two processes at once, over the same 12 shards.
    let (o1, o2) = std::thread::scope(|s| {
        let h1 = s.spawn(|| prep().args(&a).output().unwrap());
        let h2 = s.spawn(|| prep().args(&a).output().unwrap());
        (h1.join().unwrap(), h2.join().unwrap())
    });
    let (m1, m2) = (stderr(&o1), stderr(&o2));
    assert!(o1.status.success(), "{m1}");
    assert!(o2.status.success(), "{m2}");
    assert_eq!(
        built(&m1) + built(&m2),
        12,
        "each shard built once:\n{m1}\n{m2}"
    );
    assert!(
        !m1.contains("committed by another worker first") || m1.contains("0 built but committed")
    );

    let r = remote(&moto.endpoint, "s3://race/run");
    assert_eq!(
        parquet_objects(&r),
        parquet_files(&local),
        "bytes of a one-process run"
    );
    // Every shard's stats name exactly one of the two workers, and the split matches what
    // each worker reported.
    let mut per_worker = std::collections::BTreeMap::new();
    for k in 0..12 {
        let s: serde_json::Value = serde_json::from_slice(
            &r.get(&format!("stats/part-{k:05}.json"))
                .unwrap()
                .unwrap()
                .0,
        )
        .unwrap();
        *per_worker
            .entry(s["worker"].as_str().unwrap().to_string())
            .or_insert(0usize) += 1;
    }
    let mut counts: Vec<usize> = per_worker.values().copied().collect();
    counts.sort();
    let mut reported = vec![built(&m1), built(&m2)];
    reported.retain(|&n| n > 0);
    reported.sort();
    assert_eq!(counts, reported);
    assert!(r.list("claims").unwrap().is_empty(), "claims released");

    let o = run_ok(&[
        "status",
        "s3://race/run",
        "--json",
        "--s3-endpoint",
        &moto.endpoint,
    ]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["num_shards"], 12);
    assert_eq!(st["done"], 12);
    assert_eq!(
        (
            st["claimed"].clone(),
            st["failed"].clone(),
            st["pending"].clone()
        ),
        (0.into(), 0.into(), 0.into())
    );
    assert_eq!(st["rows"], 24);
    let workers = st["workers"].as_array().unwrap();
    let sum: u64 = workers.iter().map(|w| w["shards"].as_u64().unwrap()).sum();
    assert_eq!(sum, 12);
    for w in workers {
        assert!(w["records_per_second"].as_f64().unwrap() > 0.0, "{w}");
    }
    let o = run_ok(&["status", "s3://race/run", "--s3-endpoint", &moto.endpoint]);
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.contains("12: 12 done, 0 claimed, 0 failed, 0 pending (finalized)"),
        "{table}"
    );

    let o = run_ok(&["finalize", "s3://race/run", "--s3-endpoint", &moto.endpoint]);
    assert!(stderr(&o).contains("12 shards, 24 rows"), "{}", stderr(&o));
    let m: serde_json::Value =
        serde_json::from_slice(&r.get("dataset.json").unwrap().unwrap().0).unwrap();
    let lm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(local.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(m["shards"], lm["shards"]);
    assert_eq!(m["rows"], 24);
    assert_eq!(m["complete"], true);
}

#[test]
fn killed_worker_loses_its_shard_after_the_lease_and_nothing_partial_shows() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("crash");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("photos");
    folder_of(12, &input, 640);
    let inp = input.to_str().unwrap();
    let local = tmp.path().join("local");
    run_ok(
        &build_args(inp, local.to_str().unwrap(), "256", "6")
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
    );

    let mut a = build_args(inp, "s3://crash/run", "256", "6");
    a.extend(
        [
            "--shard",
            "auto",
            "--lease",
            "3s",
            "--s3-endpoint",
            &moto.endpoint,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let r = remote(&moto.endpoint, "s3://crash/run");
    let mut child = prep().args(&a).spawn().unwrap();
    let t0 = Instant::now();
    let claims = |r: &Remote| -> Vec<String> {
        r.list("claims")
            .unwrap()
            .into_iter()
            .map(|c| c.0)
            .filter(|n| n.starts_with("claims/part-"))
            .collect()
    };
    while claims(&r).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no claim in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL, mid-shard
    child.wait().unwrap();
    // The worker holds the shard it builds, and may already hold the next one its source
    // thread has started reading.
    let claimed: Vec<usize> = claims(&r)
        .iter()
        .map(|c| c.trim_start_matches("claims/part-").parse().unwrap())
        .collect();
    assert!(!claimed.is_empty() && claimed.len() <= 2, "{claimed:?}");
    // Nothing of a killed shard is visible: no stats (the commit point), and no data or
    // status object under a final name.
    let visible: Vec<String> = r.list("").unwrap().into_iter().map(|c| c.0).collect();
    for &k in &claimed {
        for name in [
            format!("stats/part-{k:05}.json"),
            format!("data/part-{k:05}.parquet"),
            format!("status/part-{k:05}.parquet"),
        ] {
            assert!(
                !visible.contains(&name),
                "{name} visible after the kill: {visible:?}"
            );
        }
    }
    // status: the dead worker's claims are still live.
    let o = run_ok(&[
        "status",
        "s3://crash/run",
        "--json",
        "--s3-endpoint",
        &moto.endpoint,
    ]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for &k in &claimed {
        assert_eq!(st["shards"][k]["state"], "claimed", "{st}");
    }
    let o = run(&[
        "finalize",
        "s3://crash/run",
        "--s3-endpoint",
        &moto.endpoint,
    ]);
    assert!(!o.status.success());

    // A second worker, started at once: it builds what is free, waits for the dead
    // worker's lease to run out, then takes the shard over.
    let started = Instant::now();
    let o = prep().args(&a).output().unwrap();
    let msg = stderr(&o);
    assert!(o.status.success(), "{msg}");
    for &k in &claimed {
        assert!(
            msg.contains(&format!("shard {k}: taking over the expired claim of")),
            "{msg}"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(
        parquet_objects(&r),
        parquet_files(&local),
        "bytes of a one-process run"
    );
    assert!(r.list("claims").unwrap().is_empty());
    let o = run_ok(&[
        "status",
        "s3://crash/run",
        "--json",
        "--s3-endpoint",
        &moto.endpoint,
    ]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["done"], 2);
    assert_eq!(st["rows"], 12);
    let o = run_ok(&[
        "finalize",
        "s3://crash/run",
        "--s3-endpoint",
        &moto.endpoint,
    ]);
    assert!(stderr(&o).contains("2 shards, 12 rows"), "{}", stderr(&o));
}

#[test]
fn finalize_lists_missing_shards_and_is_idempotent_locally() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("photos");
    folder_of(6, &input, 160);
    let inp = input.to_str().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let mut a = build_args(inp, o, "96", "2");
    a.extend(["--shard", "0/2"].iter().map(|s| s.to_string()));
    run_ok(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let f = run(&["finalize", o]);
    assert!(!f.status.success());
    assert!(
        stderr(&f).contains("1 of 3 shards are not done: part-00001;"),
        "{}",
        stderr(&f)
    );
    let st = run_ok(&["status", o, "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(
        (st["done"].as_u64(), st["pending"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(st["shards"][1]["state"], "pending");

    // The other half, from the scheduler's environment (a Slurm array task 1 of 2).
    let mut b = build_args(inp, o, "96", "2");
    b.extend(["--shard", "env/2"].iter().map(|s| s.to_string()));
    let out2 = prep()
        .args(&b)
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "1")
        .output()
        .unwrap();
    assert!(out2.status.success(), "{}", stderr(&out2));
    assert!(
        stderr(&out2).contains("built 1 shard(s)"),
        "{}",
        stderr(&out2)
    );
    let f = run_ok(&["finalize", o]);
    assert!(stderr(&f).contains("3 shards, 6 rows"), "{}", stderr(&f));
    let before = std::fs::read(out.join("dataset.json")).unwrap();
    let f = run_ok(&["finalize", o]);
    assert!(stderr(&f).contains("already up to date"), "{}", stderr(&f));
    assert_eq!(std::fs::read(out.join("dataset.json")).unwrap(), before);
}
