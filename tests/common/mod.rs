//! Shared helpers for the integration tests: a synthetic COCO-layout dataset whose
//! expected outputs are computable, and a runner for the `prep` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{ImageEncoder, Rgb, RgbImage};

pub fn prep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_prep"));
    c.env("PREP_CACHE", std::env::temp_dir().join("prep-test-cache"));
    c
}

pub fn run(args: &[&str]) -> Output {
    let out = prep().args(args).output().expect("run prep");
    out
}

pub fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "prep {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A smooth, textured test photo.
pub fn photo(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let r = ((x * 255) / w.max(1)) as u8;
        let g = ((y * 255) / h.max(1)) as u8;
        let b = (((x / 37 + y / 23 + seed) % 7) * 36) as u8;
        Rgb([r, g, b])
    })
}

pub fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

pub fn png_gray(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), w, h, image::ExtendedColorType::L8)
        .unwrap();
    out
}

/// Label of the synthetic COCO-Stuff map of image 1 at source pixel (x, y):
/// left half person (0), right half sky-other (156), a 100×60 unlabelled block at
/// (40..140, 40..100), a cat (16) block at (400..560, 300..420).
pub fn label_1(x: u32, y: u32) -> u8 {
    if (40..140).contains(&x) && (40..100).contains(&y) {
        255
    } else if (400..560).contains(&x) && (300..420).contains(&y) {
        16
    } else if x < 320 {
        0
    } else {
        156
    }
}

/// Keypoints of the one person in image 1 (source coordinates, 17 × [x, y, v]).
pub fn person_1() -> Vec<f32> {
    let mut k = vec![0f32; 51];
    let mut set = |i: usize, x: f32, y: f32, v: f32| {
        k[i * 3] = x;
        k[i * 3 + 1] = y;
        k[i * 3 + 2] = v;
    };
    set(0, 320.0, 100.0, 2.0); // nose
    set(1, 330.0, 90.0, 2.0); // left eye
    set(2, 310.0, 90.0, 2.0); // right eye
    set(5, 360.0, 160.0, 2.0); // left shoulder
    set(6, 280.0, 160.0, 1.0); // right shoulder (labelled, not visible)
    set(7, 380.0, 230.0, 2.0); // left elbow
    set(11, 350.0, 300.0, 2.0); // left hip
    set(12, 290.0, 300.0, 2.0); // right hip
    set(13, 630.0, 470.0, 2.0); // left knee: outside the crop after center-crop? no: x 630 → 586 > 512
    k
}

/// Write a COCO-layout root with 4 images in `split`:
/// 1: 640×480 JPEG, captions ×2, one person, seg map;
/// 2: 480×640 JPEG, one caption, no person, seg map;
/// 3: listed but its file is missing (a per-row failure);
/// 4: a file that is not an image (a per-row failure).
pub fn make_coco(root: &Path, split: &str) -> PathBuf {
    let ann = root.join("annotations");
    let imgs = root.join(split);
    let seg = root.join("stuffthingmaps_trainval2017").join(split);
    for d in [&ann, &imgs, &seg] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(imgs.join("000000000001.jpg"), jpeg(&photo(640, 480, 1))).unwrap();
    std::fs::write(imgs.join("000000000002.jpg"), jpeg(&photo(480, 640, 2))).unwrap();
    std::fs::write(imgs.join("000000000004.jpg"), b"<html>not an image</html>").unwrap();
    std::fs::write(seg.join("000000000001.png"), png_gray(640, 480, label_1)).unwrap();
    std::fs::write(
        seg.join("000000000002.png"),
        png_gray(480, 640, |_, y| if y < 320 { 156 } else { 123 }),
    )
    .unwrap();
    let images = serde_json::json!([
        {"id": 1, "width": 640, "height": 480, "file_name": "000000000001.jpg"},
        {"id": 2, "width": 480, "height": 640, "file_name": "000000000002.jpg"},
        {"id": 3, "width": 640, "height": 480, "file_name": "000000000003.jpg"},
        {"id": 4, "width": 640, "height": 480, "file_name": "000000000004.jpg"}
    ]);
    let captions = serde_json::json!({
        "info": {}, "licenses": [],
        "images": images,
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "A person standing under a blue sky."},
            {"id": 11, "image_id": 2, "caption": "A tall gradient."},
            {"id": 12, "image_id": 1, "caption": "Someone outdoors."},
            {"id": 13, "image_id": 3, "caption": "Missing."},
            {"id": 14, "image_id": 4, "caption": "Broken."}
        ]
    });
    std::fs::write(
        ann.join(format!("captions_{split}.json")),
        serde_json::to_vec(&captions).unwrap(),
    )
    .unwrap();
    let kp = serde_json::json!({
        "images": images,
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": 100, "image_id": 1, "category_id": 1, "num_keypoints": 9, "keypoints": person_1(),
             "bbox": [270, 80, 120, 240], "area": 100.0, "iscrowd": 0}
        ]
    });
    std::fs::write(
        ann.join(format!("person_keypoints_{split}.json")),
        serde_json::to_vec(&kp).unwrap(),
    )
    .unwrap();
    root.to_path_buf()
}

/// All regular files under `dir` with their bytes, relative paths sorted.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    let mut out = Vec::new();
    fn walk(d: &Path, root: &Path, out: &mut Vec<(String, Vec<u8>, std::time::SystemTime)>) {
        let mut entries: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
                out.push((rel, std::fs::read(&p).unwrap(), mtime));
            }
        }
    }
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// One row of an output shard, decoded for assertions.
#[derive(Debug, Clone)]
pub struct TestRow {
    pub key: String,
    pub text: String,
    pub captions: Vec<String>,
    pub width: i32,
    pub height: i32,
    /// Image-typed columns: name → (bytes, path).
    pub images: std::collections::BTreeMap<String, (Vec<u8>, String)>,
    pub keypoints: Option<Vec<Vec<f32>>>,
}

pub fn read_rows(path: &Path) -> (Vec<TestRow>, arrow_schema::SchemaRef) {
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    let file = std::fs::File::open(path).unwrap();
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = b.schema().clone();
    let mut rows = Vec::new();
    for batch in b.build().unwrap() {
        let batch = batch.unwrap();
        for i in 0..batch.num_rows() {
            let s = |n: &str| {
                batch
                    .column_by_name(n)
                    .unwrap()
                    .as_string::<i32>()
                    .value(i)
                    .to_string()
            };
            let mut images = std::collections::BTreeMap::new();
            for f in schema.fields() {
                if let arrow_schema::DataType::Struct(_) = f.data_type() {
                    let st = batch.column_by_name(f.name()).unwrap().as_struct();
                    let bytes = st
                        .column_by_name("bytes")
                        .unwrap()
                        .as_binary::<i32>()
                        .value(i)
                        .to_vec();
                    let p = st
                        .column_by_name("path")
                        .unwrap()
                        .as_string::<i32>()
                        .value(i)
                        .to_string();
                    images.insert(f.name().clone(), (bytes, p));
                }
            }
            let caps = batch
                .column_by_name("captions")
                .unwrap()
                .as_list::<i32>()
                .value(i);
            let caps = caps.as_string::<i32>();
            let captions = (0..caps.len()).map(|j| caps.value(j).to_string()).collect();
            let keypoints = batch.column_by_name("keypoints").and_then(|c| {
                let l = c.as_list::<i32>();
                if l.is_null(i) {
                    return None;
                }
                let persons = l.value(i);
                let persons = persons.as_list::<i32>();
                Some(
                    (0..persons.len())
                        .map(|p| {
                            let v = persons.value(p);
                            v.as_primitive::<arrow_array::types::Float32Type>()
                                .values()
                                .to_vec()
                        })
                        .collect(),
                )
            });
            let int = |n: &str| {
                batch
                    .column_by_name(n)
                    .unwrap()
                    .as_primitive::<arrow_array::types::Int32Type>()
                    .value(i)
            };
            rows.push(TestRow {
                key: s("key"),
                text: s("text"),
                captions,
                width: int("width"),
                height: int("height"),
                images,
                keypoints,
            });
        }
    }
    (rows, schema)
}

pub fn decode_rgb(bytes: &[u8]) -> RgbImage {
    image::load_from_memory(bytes).unwrap().into_rgb8()
}

pub fn decode_gray(bytes: &[u8]) -> image::GrayImage {
    let img = image::load_from_memory(bytes).unwrap();
    assert!(
        matches!(img, image::DynamicImage::ImageLuma8(_)),
        "expected a 1-channel PNG, got {:?}",
        img.color()
    );
    img.into_luma8()
}

/// A fixture model of tests/fixtures/models.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

/// `prep` with its own cache directory.
pub fn prep_in(cache: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_prep"));
    c.env("PREP_CACHE", cache);
    c.args(args).output().expect("run prep")
}

/// The output of a run that must succeed (its stdout and stderr in the panic otherwise).
pub fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "prep failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The stderr of a run that must fail.
pub fn err(o: Output) -> String {
    assert!(!o.status.success(), "prep should have failed");
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The front half of the loopback HTTP test servers: read one HTTP/1.1 request's line and
/// headers from `s` and return its path ("/" when the line has none); `None` when the
/// request line cannot be read.
pub fn read_request_path(s: &std::net::TcpStream) -> Option<String> {
    use std::io::{BufRead, BufReader};
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    Some(line.split_whitespace().nth(1).unwrap_or("/").to_string())
}
