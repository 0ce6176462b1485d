//! `prep fetch` against a fault-injection HTTP server on 127.0.0.1: every fault
//! classified, every URL exactly once in status, nothing connects outside the allowed
//! network, bounded time, and a re-run downloads nothing.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use common::*;

struct Server {
    base: String,
    port: u16,
    requests: Arc<AtomicUsize>,
}

fn respond(s: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

fn png_header(w: u32, h: u32) -> Vec<u8> {
    // A PNG signature and an IHDR declaring w×h, then nothing: a decompression bomb's header.
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(&ihdr);
    let mut crc = 0xffff_ffffu32;
    for &b in &ihdr {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    v.extend_from_slice(&(!crc).to_be_bytes());
    v.extend_from_slice(&[0u8; 64]);
    v
}

fn serve() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let requests = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let jpg = Arc::new(jpeg(&photo(400, 300, 5)));
    let req = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            req.fetch_add(1, Ordering::SeqCst);
            let (jpg, seen) = (jpg.clone(), seen.clone());
            std::thread::spawn(move || {
                let Some(path) = read_request_path(&s) else {
                    return;
                };
                let n = {
                    let mut m = seen.lock().unwrap();
                    let c = m.entry(path.clone()).or_insert(0);
                    *c += 1;
                    *c
                };
                let img = [("Content-Type", "image/jpeg".to_string())];
                match path.as_str() {
                    p if p.starts_with("/ok/") => respond(&mut s, "200 OK", &img, &jpg),
                    p if p.starts_with("/slow/") => {
                        std::thread::sleep(Duration::from_millis(40));
                        respond(&mut s, "200 OK", &img, &jpg)
                    }
                    "/404" => respond(&mut s, "404 Not Found", &[], b"no"),
                    "/500" => respond(&mut s, "500 Internal Server Error", &[], b"err"),
                    "/flaky" if n == 1 => respond(&mut s, "502 Bad Gateway", &[], b"later"),
                    "/flaky" => respond(&mut s, "200 OK", &img, &jpg),
                    "/429" if n == 1 => respond(
                        &mut s,
                        "429 Too Many Requests",
                        &[("Retry-After", "1".into())],
                        b"",
                    ),
                    "/429" => respond(&mut s, "200 OK", &img, &jpg),
                    "/trickle" => {
                        let _ = s.write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", jpg.len())
                                .as_bytes(),
                        );
                        for b in jpg.iter().take(20) {
                            std::thread::sleep(Duration::from_millis(1500));
                            if s.write_all(&[*b]).is_err() {
                                return;
                            }
                        }
                    }
                    "/hang" => std::thread::sleep(Duration::from_secs(30)),
                    "/truncated" => {
                        let _ = s.write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", jpg.len())
                                .as_bytes(),
                        );
                        let _ = s.write_all(&jpg[..jpg.len() / 3]);
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    "/html" => respond(
                        &mut s,
                        "200 OK",
                        &img,
                        b"<!doctype html><html><body>hi</body></html>",
                    ),
                    "/corrupt.jpg" => {
                        let mut b = jpg[..600].to_vec();
                        b.extend(std::iter::repeat_n(0x55u8, 3000));
                        respond(&mut s, "200 OK", &img, &b)
                    }
                    "/bomb.png" => respond(
                        &mut s,
                        "200 OK",
                        &[("Content-Type", "image/png".into())],
                        &png_header(50000, 50000),
                    ),
                    "/big" => respond(&mut s, "200 OK", &img, &vec![0xffu8; 3 << 20]),
                    "/loop" => respond(&mut s, "302 Found", &[("Location", "/loop".into())], b""),
                    "/chain/3" => {
                        respond(&mut s, "301 Moved", &[("Location", "/chain/2".into())], b"")
                    }
                    "/chain/2" => {
                        respond(&mut s, "302 Found", &[("Location", "/chain/1".into())], b"")
                    }
                    "/chain/1" => respond(
                        &mut s,
                        "307 Temporary Redirect",
                        &[("Location", "/ok/chained.jpg".into())],
                        b"",
                    ),
                    "/to-blocked" => respond(
                        &mut s,
                        "302 Found",
                        &[("Location", format!("http://127.0.0.2:{port}/ok/secret.jpg"))],
                        b"",
                    ),
                    "/noai" => respond(&mut s, "200 OK", &[("X-Robots-Tag", "noai".into())], &jpg),
                    "/prep-scoped" => respond(
                        &mut s,
                        "200 OK",
                        &[("X-Robots-Tag", "prep: noimageai".into())],
                        &jpg,
                    ),
                    "/other-bot" => respond(
                        &mut s,
                        "200 OK",
                        &[("X-Robots-Tag", "otherbot: noai".into())],
                        &jpg,
                    ),
                    _ => respond(&mut s, "404 Not Found", &[], b""),
                }
                let _ = s.read(&mut [0u8; 1]);
            });
        }
    });
    Server {
        base,
        port,
        requests,
    }
}

/// A listener on 127.0.0.2 (same port) counting connections: none may arrive.
fn trap(port: u16) -> Option<Arc<AtomicUsize>> {
    let l = TcpListener::bind(("127.0.0.2", port)).ok()?;
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            if s.is_ok() {
                h.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    Some(hits)
}

fn write_meta(path: &std::path::Path, urls: &[String]) {
    let caps: Vec<String> = (0..urls.len()).map(|i| format!("caption {i}")).collect();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "URL",
            Arc::new(StringArray::from(urls.to_vec())) as ArrayRef,
        ),
        ("TEXT", Arc::new(StringArray::from(caps)) as ArrayRef),
    ])
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// url → (status, error, attempts), from every status file.
fn read_status(out: &std::path::Path) -> Vec<(String, String, Option<String>, i32)> {
    let mut rows = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(out.join("status"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
    {
        let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(f).unwrap(),
        )
        .unwrap();
        for batch in b.build().unwrap() {
            let batch = batch.unwrap();
            let s = |n: &str| batch.column_by_name(n).unwrap().as_string::<i32>().clone();
            let (url, st, err) = (s("url"), s("status"), s("error"));
            let att = batch
                .column_by_name("attempts")
                .unwrap()
                .as_primitive::<arrow_array::types::Int32Type>()
                .clone();
            for i in 0..batch.num_rows() {
                let e = (!err.is_null(i)).then(|| err.value(i).to_string());
                rows.push((
                    url.value(i).to_string(),
                    st.value(i).to_string(),
                    e,
                    att.value(i),
                ));
            }
        }
    }
    rows
}

#[test]
fn every_fault_is_classified_once_and_nothing_escapes_the_allowed_network() {
    let srv = serve();
    let hits = trap(srv.port);
    let b = &srv.base;
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("/ok/1.jpg", "success", None),
        ("/404", "failed", Some("http_404")),
        ("/500", "failed", Some("http_5xx")),
        ("/flaky", "success", None),
        ("/429", "success", None),
        ("/trickle", "failed", Some("timeout")),
        ("/hang", "failed", Some("timeout")),
        ("/truncated", "failed", Some("truncated")),
        ("/html", "failed", Some("not_an_image")),
        ("/corrupt.jpg", "failed", Some("decode_error")),
        ("/bomb.png", "failed", Some("too_many_pixels")),
        ("/big", "failed", Some("too_large")),
        ("/loop", "failed", Some("redirect_loop")),
        ("/chain/3", "success", None),
        ("/to-blocked", "failed", Some("blocked_address")),
        ("/noai", "failed", Some("opt_out_x_robots_tag")),
        ("/prep-scoped", "failed", Some("opt_out_x_robots_tag")),
        ("/other-bot", "success", None),
    ];
    let mut urls: Vec<String> = cases.iter().map(|(p, _, _)| format!("{b}{p}")).collect();
    // A literal blocked address and a name that resolves to loopback on another port.
    urls.push(format!("http://127.0.0.2:{}/ok/direct.jpg", srv.port));
    urls.push("http://169.254.169.254/latest/meta-data/".into());
    let tmp = tempfile::tempdir().unwrap();
    let meta = tmp.path().join("meta.parquet");
    write_meta(&meta, &urls);
    let out = tmp.path().join("out");
    let args = [
        "fetch",
        "--source",
        "laion",
        "--input",
        meta.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--resolution",
        "256",
        "--allow-network",
        "127.0.0.1/32",
        "--timeout",
        "2",
        "--retries",
        "2",
        "--max-bytes",
        "1048576",
        "--shard-size",
        "8",
        "--quiet",
    ];
    let t0 = Instant::now();
    let o = run_ok(&args);
    let elapsed = t0.elapsed();
    assert!(elapsed < Duration::from_secs(100), "took {elapsed:?}");

    let status = read_status(&out);
    assert_eq!(status.len(), urls.len(), "every URL exactly once");
    let by_url: BTreeMap<&str, (&str, Option<&str>, i32)> = status
        .iter()
        .map(|(u, s, e, a)| (u.as_str(), (s.as_str(), e.as_deref(), *a)))
        .collect();
    assert_eq!(by_url.len(), urls.len(), "no URL twice");
    for (p, want_status, want_error) in &cases {
        let got = by_url[format!("{b}{p}").as_str()];
        assert_eq!((got.0, got.1), (*want_status, *want_error), "{p}");
    }
    assert_eq!(
        by_url[format!("{b}/flaky").as_str()].2,
        2,
        "flaky succeeds on the second attempt"
    );
    assert_eq!(
        by_url[format!("{b}/429").as_str()].2,
        2,
        "429 retried after Retry-After"
    );
    assert_eq!(
        by_url[format!("{b}/404").as_str()].2,
        1,
        "404 is not retried"
    );
    assert_eq!(
        by_url[format!("{b}/500").as_str()].2,
        3,
        "5xx retried --retries times"
    );
    let direct = by_url[format!("http://127.0.0.2:{}/ok/direct.jpg", srv.port).as_str()];
    assert_eq!(direct.1, Some("blocked_address"));
    assert_eq!(
        by_url["http://169.254.169.254/latest/meta-data/"].1,
        Some("blocked_address")
    );
    if let Some(h) = &hits {
        assert_eq!(
            h.load(Ordering::SeqCst),
            0,
            "nothing may connect to 127.0.0.2"
        );
    }

    // data/ holds the successes only, with their sha256.
    let mut ok = 0;
    for e in std::fs::read_dir(out.join("data")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "parquet") {
            ok += read_rows(&p).0.len();
        }
    }
    assert_eq!(ok, cases.iter().filter(|c| c.1 == "success").count());
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("stats/part-00000.json")).unwrap()).unwrap();
    for field in [
        "count",
        "successes",
        "failed_to_download",
        "failed_to_resize",
        "status_dict",
        "duration",
    ] {
        assert!(stats.get(field).is_some(), "img2dataset field {field}");
    }
    assert!(stderr(&o).contains("built 3 shard(s)"), "{}", stderr(&o));

    // A re-run touches nothing and sends no request.
    let before = srv.requests.load(Ordering::SeqCst);
    let o = run_ok(&args);
    assert!(
        stderr(&o).contains("skipped 3 already complete"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        srv.requests.load(Ordering::SeqCst),
        before,
        "a re-run downloads nothing"
    );
}

#[test]
fn names_are_checked_after_resolution_and_retry_failed_merges_in() {
    let srv = serve();
    let tmp = tempfile::tempdir().unwrap();
    // `localhost` resolves to 127.0.0.1, refused without --allow-network: no connection.
    let meta = tmp.path().join("meta.parquet");
    write_meta(&meta, &[format!("http://localhost:{}/ok/1.jpg", srv.port)]);
    let out = tmp.path().join("out");
    run_ok(&[
        "fetch",
        "--source",
        "laion",
        "--input",
        meta.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let status = read_status(&out);
    assert_eq!(status[0].2.as_deref(), Some("blocked_address"));
    assert_eq!(
        srv.requests.load(Ordering::SeqCst),
        0,
        "the guard refused before connecting"
    );

    // --retry-failed: a row that failed (500) becomes a success once the server is fixed;
    // emulate that by retrying a class that now succeeds (/flaky fails once with 502).
    let meta2 = tmp.path().join("meta2.parquet");
    let b = &srv.base;
    write_meta(
        &meta2,
        &[
            format!("{b}/ok/a.jpg"),
            format!("{b}/flaky"),
            format!("{b}/404"),
            format!("{b}/ok/b.jpg"),
        ],
    );
    let out2 = tmp.path().join("out2");
    let common = [
        "--allow-network",
        "127.0.0.1/32",
        "--retries",
        "0",
        "--quiet",
    ];
    let mut args = vec![
        "fetch",
        "--source",
        "laion",
        "--input",
        meta2.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ];
    args.extend_from_slice(&common);
    run_ok(&args);
    let first = read_status(&out2);
    assert_eq!(first[1].2.as_deref(), Some("http_5xx"));
    let data_before = read_rows(&out2.join("data/part-00000.parquet")).0;
    assert_eq!(data_before.len(), 2);
    let o = run_ok(&[
        "fetch",
        "--retry-failed",
        out2.to_str().unwrap(),
        "--errors",
        "http_5xx",
        "--quiet",
    ]);
    assert!(stderr(&o).contains("1 recovered"), "{}", stderr(&o));
    let after = read_status(&out2);
    assert_eq!(after.len(), 4);
    assert_eq!(
        (after[1].1.as_str(), after[1].3),
        ("success", 2),
        "merged in, attempts add up"
    );
    assert_eq!(
        after[2].2.as_deref(),
        Some("http_404"),
        "other classes untouched"
    );
    let rows = read_rows(&out2.join("data/part-00000.parquet")).0;
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        ["laion/000000000", "laion/000000001", "laion/000000003"],
        "in original order"
    );
    assert_eq!(
        rows[0].images["image"].0, data_before[0].images["image"].0,
        "old rows kept byte for byte"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out2.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(m["rows"], 3);
}

#[test]
fn a_dominant_error_class_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let meta = tmp.path().join("meta.parquet");
    let urls: Vec<String> = (0..60)
        .map(|i| format!("http://10.1.2.{i}/x.jpg"))
        .collect();
    write_meta(&meta, &urls);
    let out = tmp.path().join("out");
    let o = run_ok(&[
        "fetch",
        "--source",
        "laion",
        "--input",
        meta.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let err = stderr(&o);
    assert!(err.contains("failed with blocked_address"), "{err}");
    assert!(err.contains("see --allow-network"), "{err}");
    assert_eq!(read_status(&out).len(), 60);
}

#[test]
fn coco_without_local_images_downloads_from_coco_url() {
    let srv = serve();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("coco");
    std::fs::create_dir_all(root.join("annotations")).unwrap();
    let captions = serde_json::json!({
        "images": [
            {"id": 7, "width": 400, "height": 300, "file_name": "000000000007.jpg", "coco_url": format!("{}/ok/7.jpg", srv.base)},
            {"id": 9, "width": 400, "height": 300, "file_name": "000000000009.jpg", "coco_url": format!("{}/404", srv.base)}
        ],
        "annotations": [{"id": 1, "image_id": 7, "caption": "seven"}, {"id": 2, "image_id": 9, "caption": "nine"}]
    });
    std::fs::write(
        root.join("annotations/captions_val2017.json"),
        captions.to_string(),
    )
    .unwrap();
    let out = tmp.path().join("out");
    run_ok(&[
        "fetch",
        "--source",
        "coco",
        "--input",
        root.to_str().unwrap(),
        "--split",
        "val2017",
        "--resolution",
        "128",
        "--allow-network",
        "127.0.0.1/32",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let status = read_status(&out);
    assert_eq!(status.len(), 2);
    assert_eq!(
        (status[0].1.as_str(), status[1].2.as_deref()),
        ("success", Some("http_404"))
    );
    let (rows, _) = read_rows(&out.join("data/part-00000.parquet"));
    assert_eq!(rows[0].key, "coco/val2017/000000000007");
    assert_eq!(rows[0].text, "seven");
}

#[test]
fn kill_9_mid_fetch_then_rerun_accounts_for_every_row_once() {
    let srv = serve();
    let tmp = tempfile::tempdir().unwrap();
    let meta = tmp.path().join("meta.parquet");
    let urls: Vec<String> = (0..48)
        .map(|i| format!("{}/slow/{i}.jpg", srv.base))
        .collect();
    write_meta(&meta, &urls);
    let out = tmp.path().join("out");
    let args = [
        "fetch",
        "--source",
        "laion",
        "--input",
        meta.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--allow-network",
        "127.0.0.1/32",
        "--resolution",
        "64",
        "--shard-size",
        "4",
        "--concurrency",
        "2",
        "--quiet",
    ];
    let mut child = prep().args(args).spawn().unwrap();
    let t0 = Instant::now();
    while !out.join("status/part-00001.parquet").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no shard committed in time"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    run_ok(&args);
    let status = read_status(&out);
    assert_eq!(status.len(), 48, "every input row exactly once");
    let unique: std::collections::HashSet<&str> = status.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(unique.len(), 48);
    assert!(status.iter().all(|s| s.1 == "success"));
    let mut keys = Vec::new();
    for k in 0..12 {
        keys.extend(
            read_rows(&out.join(format!("data/part-{k:05}.parquet")))
                .0
                .into_iter()
                .map(|r| r.key),
        );
    }
    let unique: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!((keys.len(), unique.len()), (48, 48), "no duplicate images");
}
