//! Crash safety: kill -9 in the middle of a build, then re-run.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn folder_of(n: usize, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let name = format!("img{i:03}");
        std::fs::write(
            dir.join(format!("{name}.jpg")),
            jpeg(&photo(400 + (i as u32 % 5) * 40, 300, i as u32)),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{name}.txt")), format!("photo number {i}")).unwrap();
    }
}

fn args<'a>(input: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "build",
        "--source",
        "folder",
        "--input",
        input,
        "--condition",
        "color,canny",
        "--resolution",
        "256",
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
fn kill_9_mid_run_then_rerun_completes_with_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("photos");
    folder_of(40, &input);
    let inp = input.to_str().unwrap();

    let clean = tmp.path().join("clean");
    run_ok(&args(inp, clean.to_str().unwrap()));

    let out = tmp.path().join("killed");
    let mut child = prep()
        .args(args(inp, out.to_str().unwrap()))
        .spawn()
        .unwrap();
    // Wait for the first committed shard, then kill without warning.
    let t0 = Instant::now();
    while !out.join("data/part-00000.parquet").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no shard committed in time"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    let killed_early = !status.success();

    // Every Parquet file visible under its final name is complete and has its stats.
    let visible: Vec<String> = std::fs::read_dir(out.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    assert!(!visible.is_empty());
    for name in &visible {
        let (rows, _) = read_rows(&out.join("data").join(name));
        assert_eq!(rows.len(), 4, "{name} must be whole");
    }
    if killed_early {
        assert!(visible.len() < 10, "the kill should land mid-run");
    }

    let o = run_ok(&args(inp, out.to_str().unwrap()));
    let msg = stderr(&o);
    assert!(msg.contains("already complete"), "{msg}");
    let data = |d: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        snapshot(d)
            .into_iter()
            .filter(|(n, _, _)| n.starts_with("data/") && n.ends_with(".parquet"))
            .map(|(n, b, _)| (n, b))
            .collect()
    };
    assert_eq!(
        data(&out),
        data(&clean),
        "resumed output equals a clean run"
    );
    assert_eq!(data(&out).len(), 10);
    // No temporaries left once the shard they belonged to is redone.
    let leftovers: Vec<_> = snapshot(&out)
        .into_iter()
        .filter(|(n, _, _)| n.ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "{:?}",
        leftovers.iter().map(|l| &l.0).collect::<Vec<_>>()
    );
}
