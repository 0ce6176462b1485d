//! The folder and laion sources, and image edge cases (alpha, EXIF orientation).

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use common::*;
use image::{ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};

/// A JPEG whose stored pixels are `img`, tagged with EXIF orientation `o`.
fn jpeg_with_orientation(img: &RgbImage, o: u16) -> Vec<u8> {
    let mut exif = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01".to_vec();
    exif.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01]);
    exif.extend_from_slice(&o.to_be_bytes());
    exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
    enc.set_exif_metadata(exif).unwrap();
    enc.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    out
}

#[test]
fn folder_source_txt_captions_alpha_and_exif() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("photos");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    // a.png: left half transparent (→ white), right half opaque blue.
    let a = RgbaImage::from_fn(64, 64, |x, _| {
        if x < 32 {
            Rgba([0, 0, 0, 0])
        } else {
            Rgba([0, 0, 255, 255])
        }
    });
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(a.as_raw(), 64, 64, image::ExtendedColorType::Rgba8)
        .unwrap();
    std::fs::write(dir.join("a.png"), bytes).unwrap();
    std::fs::write(dir.join("a.txt"), "  a blue half \n").unwrap();
    // sub/b.jpg: stored 80×40 with its top half red, bottom half green, orientation 6
    // (rotate 90° clockwise to view): upright it is 40×80 with red on the right.
    let b = RgbImage::from_fn(80, 40, |_, y| {
        if y < 20 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 255, 0])
        }
    });
    std::fs::write(dir.join("sub/b.jpg"), jpeg_with_orientation(&b, 6)).unwrap();
    // c.jpg without a caption file.
    std::fs::write(dir.join("c.jpg"), jpeg(&photo(50, 50, 3))).unwrap();
    std::fs::write(dir.join("notes.md"), "not an image").unwrap();

    let out = tmp.path().join("out");
    run_ok(&[
        "build",
        "--source",
        "folder",
        "--input",
        dir.to_str().unwrap(),
        "--resolution",
        "40",
        "--resize-mode",
        "keep-ratio",
        "--image-format",
        "png",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let (rows, _) = read_rows(&out.join("data/part-00000.parquet"));
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["folder/a", "folder/c", "folder/sub/b"]);
    assert_eq!(rows[0].text, "a blue half");
    assert_eq!(rows[1].text, "");
    assert!(rows[1].captions.is_empty());

    let a = decode_rgb(&rows[0].images["image"].0);
    assert_eq!(a.dimensions(), (40, 40));
    assert_eq!(
        a.get_pixel(5, 20).0,
        [255, 255, 255],
        "transparent composited on white"
    );
    assert_eq!(a.get_pixel(35, 20).0, [0, 0, 255]);

    let b = decode_rgb(&rows[2].images["image"].0);
    assert_eq!(
        b.dimensions(),
        (40, 80),
        "EXIF orientation 6 applied: portrait"
    );
    let right = b.get_pixel(35, 40).0;
    let left = b.get_pixel(4, 40).0;
    assert!(
        right[0] > 200 && right[1] < 60,
        "red on the right after rotation, got {right:?}"
    );
    assert!(
        left[1] > 200 && left[0] < 60,
        "green on the left, got {left:?}"
    );
}

#[test]
fn folder_source_metadata_jsonl_and_bad_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("photos");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x.jpg"), jpeg(&photo(60, 40, 1))).unwrap();
    std::fs::write(dir.join("y.jpg"), jpeg(&photo(60, 40, 2))).unwrap();
    std::fs::write(
        dir.join("metadata.jsonl"),
        "{\"file_name\": \"y.jpg\", \"text\": \"second first\"}\n{\"file_name\": \"x.jpg\", \"text\": \"then x\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    run_ok(&[
        "build",
        "--source",
        "folder",
        "--input",
        dir.to_str().unwrap(),
        "--resolution",
        "32",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let (rows, _) = read_rows(&out.join("data/part-00000.parquet"));
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.key.as_str(), r.text.as_str()))
        .collect();
    assert_eq!(got, [("folder/y", "second first"), ("folder/x", "then x")]);
    assert!(rows[0].images["image"].1.ends_with(".jpg"));

    std::fs::write(
        dir.join("metadata.jsonl"),
        "{\"file_name\": \"y.jpg\"}\n{oops\n",
    )
    .unwrap();
    let o = run(&[
        "build",
        "--source",
        "folder",
        "--input",
        dir.to_str().unwrap(),
        "--out",
        tmp.path().join("o2").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("metadata.jsonl line 2: not valid JSON"),
        "{}",
        stderr(&o)
    );
}

/// A tiny HTTP/1.1 server on 127.0.0.1 for the laion source: `/ok/N.jpg` serves a JPEG,
/// `/missing` 404s, `/html` serves HTML, `/boom` 500s.
fn serve() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let jpg = Arc::new(jpeg(&photo(320, 240, 9)));
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let jpg = jpg.clone();
            std::thread::spawn(move || {
                let Some(path) = read_request_path(&s) else {
                    return;
                };
                let (status, ctype, body): (&str, &str, Vec<u8>) = if path.starts_with("/ok/") {
                    ("200 OK", "image/jpeg", jpg.to_vec())
                } else if path == "/html" {
                    ("200 OK", "image/jpeg", b"<html>hello</html>".to_vec())
                } else if path == "/boom" {
                    ("500 Internal Server Error", "text/plain", b"boom".to_vec())
                } else if path == "/quit" {
                    ("200 OK", "text/plain", Vec::new())
                } else {
                    ("404 Not Found", "text/plain", b"nope".to_vec())
                };
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = s.write_all(&body);
            });
        }
    });
    (format!("http://{addr}"), handle)
}

fn laion_batch(base: &str) -> RecordBatch {
    let urls = vec![
        format!("{base}/ok/1.jpg"),
        format!("{base}/missing"),
        format!("{base}/ok/2.jpg"),
        format!("{base}/html"),
        format!("{base}/boom"),
        format!("{base}/ok/3.jpg"),
    ];
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("URL", Arc::new(StringArray::from(urls))),
        (
            "TEXT",
            Arc::new(StringArray::from(vec![
                "one", "two", "three", "four", "five", "six",
            ])),
        ),
        (
            "WIDTH",
            Arc::new(Int64Array::from(vec![320, 320, 320, 320, 320, 100])),
        ),
        ("HEIGHT", Arc::new(Int64Array::from(vec![240; 6]))),
        (
            "punsafe",
            Arc::new(Float64Array::from(vec![0.1, 0.1, 0.9, 0.1, 0.1, 0.1])),
        ),
        (
            "AESTHETIC_SCORE",
            Arc::new(Float64Array::from(vec![6.5, 6.5, 6.5, 6.5, 6.5, 6.5])),
        ),
        (
            "hash",
            Arc::new(Int64Array::from(vec![11, 12, 13, 14, 15, 16])),
        ),
    ];
    RecordBatch::try_from_iter(cols).unwrap()
}

#[test]
fn laion_parquet_over_http_with_filters_and_failures() {
    let (base, _server) = serve();
    let tmp = tempfile::tempdir().unwrap();
    let meta = tmp.path().join("meta.parquet");
    let batch = laion_batch(&base);
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&meta).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let out = tmp.path().join("out");
    run_ok(&[
        "build",
        "--allow-network",
        "127.0.0.1/32",
        "--source",
        "laion",
        "--input",
        meta.to_str().unwrap(),
        "--max-punsafe",
        "0.5",
        "--min-size",
        "200",
        "--condition",
        "color",
        "--resolution",
        "128",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
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
            "width",
            "height",
            "source",
            "sha256",
            "url",
            "WIDTH",
            "HEIGHT",
            "punsafe",
            "AESTHETIC_SCORE",
            "hash"
        ]
    );
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.key.as_str(), r.text.as_str()))
        .collect();
    assert_eq!(got, [("laion/000000000", "one")]);
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("stats/part-00000.json")).unwrap()).unwrap();
    assert_eq!(stats["input_rows"], 6);
    assert_eq!(
        stats["failed"],
        serde_json::json!({"http_404": 1, "not_an_image": 1, "http_5xx": 1})
    );
    assert_eq!(
        stats["filtered"],
        serde_json::json!({"max_punsafe": 1, "min_size": 1})
    );
}

#[test]
fn laion_csv_and_jsonl_and_missing_column() {
    let (base, _server) = serve();
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("meta.csv");
    std::fs::write(&csv, format!("URL,TEXT,aesthetic\n{base}/ok/1.jpg,\"a, quoted caption\",7.0\n{base}/ok/2.jpg,low,3.0\n")).unwrap();
    let out = tmp.path().join("out");
    run_ok(&[
        "build",
        "--allow-network",
        "127.0.0.1/32",
        "--source",
        "laion",
        "--input",
        csv.to_str().unwrap(),
        "--min-aesthetic",
        "5",
        "--resolution",
        "64",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let (rows, _) = read_rows(&out.join("data/part-00000.parquet"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].text, "a, quoted caption");

    let jsonl = tmp.path().join("meta.jsonl");
    std::fs::write(
        &jsonl,
        format!("{{\"url\": \"{base}/ok/1.jpg\", \"caption\": \"j\"}}\n"),
    )
    .unwrap();
    let out2 = tmp.path().join("out2");
    run_ok(&[
        "build",
        "--allow-network",
        "127.0.0.1/32",
        "--source",
        "laion",
        "--input",
        jsonl.to_str().unwrap(),
        "--url-col",
        "url",
        "--caption-col",
        "caption",
        "--resolution",
        "64",
        "--out",
        out2.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(read_rows(&out2.join("data/part-00000.parquet")).0.len(), 1);

    let o = run(&[
        "build",
        "--allow-network",
        "127.0.0.1/32",
        "--source",
        "laion",
        "--input",
        jsonl.to_str().unwrap(),
        "--out",
        tmp.path().join("o3").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("no column \"URL\" (set --url-col)"), "{err}");
    assert!(err.contains("the file has columns: caption, url"), "{err}");

    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        format!("URL,TEXT\n{base}/ok/1.jpg,fine\n{base}/ok/2.jpg,too,many,fields\n"),
    )
    .unwrap();
    let o = run(&[
        "build",
        "--allow-network",
        "127.0.0.1/32",
        "--source",
        "laion",
        "--input",
        bad.to_str().unwrap(),
        "--out",
        tmp.path().join("o4").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("bad.csv line 3: malformed CSV row"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn webdataset_output_writes_tar_shards_with_jpg_txt_json() {
    let (base, _server) = serve();
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("meta.csv");
    std::fs::write(
        &csv,
        format!("URL,TEXT\n{base}/ok/1.jpg,first\n{base}/missing,gone\n{base}/ok/2.jpg,second\n"),
    )
    .unwrap();
    let out = tmp.path().join("wds");
    let args = [
        "fetch",
        "--allow-network",
        "127.0.0.1/32",
        "--source",
        "laion",
        "--input",
        csv.to_str().unwrap(),
        "--output-format",
        "webdataset",
        "--resolution",
        "64",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    run_ok(&args);
    let tar_path = out.join("data/part-00000.tar");
    let mut names = Vec::new();
    let mut json = None;
    let mut ar = tar::Archive::new(std::fs::File::open(&tar_path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().to_string();
        if name == "laion_000000000.json" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            json = Some(serde_json::from_str::<serde_json::Value>(&s).unwrap());
        }
        names.push(name);
    }
    assert_eq!(
        names,
        [
            "laion_000000000.jpg",
            "laion_000000000.txt",
            "laion_000000000.json",
            "laion_000000002.jpg",
            "laion_000000002.txt",
            "laion_000000002.json"
        ]
    );
    let json = json.unwrap();
    assert_eq!(json["key"], "laion/000000000");
    assert_eq!(json["url"], format!("{base}/ok/1.jpg"));
    assert_eq!(json["sha256"].as_str().unwrap().len(), 64);
    // Resume works the same way for tar shards.
    let before = std::fs::read(&tar_path).unwrap();
    let o = run_ok(&args);
    assert!(
        stderr(&o).contains("skipped 1 already complete"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&tar_path).unwrap(), before);
}
