//! `prep inspect OUT`: rows, columns and failures of a built dataset, and a contact sheet.
//! `OUT` may be an object-store URL: Parquet footers and the pages the contact sheet
//! needs are read with ranged GETs ([`ParquetInput`]), never whole shards.

use std::path::Path;

use anyhow::{bail, Context, Result};
use arrow_array::{cast::AsArray, Array, StructArray};
use arrow_schema::DataType;
use image::{imageops, Rgb, RgbImage};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::input_store::{Input, ParquetInput};
use crate::manifest::Manifest;
use crate::sink::remote::RemoteOptions;
use crate::sink::ShardStats;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub dir: String,
    pub shards: usize,
    pub rows: u64,
    pub columns: Vec<(String, String)>,
    pub failed: std::collections::BTreeMap<String, usize>,
    pub filtered: std::collections::BTreeMap<String, usize>,
    /// A few failed rows (key, class, detail).
    pub failure_examples: Vec<(String, String, String)>,
    pub complete: Option<bool>,
}

fn shard_files(out: &Input) -> Result<Vec<String>> {
    if !out.is_dir("data")? {
        bail!(
            "{} has no data/ directory; is it a `prep build` output?",
            out.display("")
        );
    }
    Ok(out
        .files("data")?
        .into_iter()
        .filter(|p| {
            p.strip_prefix("data/").is_some_and(|n| {
                n.starts_with("part-") && n.ends_with(".parquet") && !n.contains('/')
            })
        })
        .collect())
}

fn open_shard(out: &Input, rel: &str) -> Result<ParquetRecordBatchReaderBuilder<ParquetInput>> {
    ParquetRecordBatchReaderBuilder::try_new(ParquetInput::open(out, rel)?)
        .with_context(|| format!("{} is not a readable Parquet file", out.display(rel)))
}

fn type_name(t: &DataType) -> String {
    match t {
        DataType::Struct(f) if f.iter().any(|x| x.name() == "bytes") => "image".into(),
        DataType::List(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::Utf8 => "string".into(),
        other => other.to_string().to_lowercase(),
    }
}

pub fn summarize(dir: &Path, remote: &RemoteOptions) -> Result<Summary> {
    let out = Input::open_as(dir, remote, "prep inspect")?;
    let files = shard_files(&out)?;
    let mut rows = 0u64;
    let mut columns = Vec::new();
    for f in &files {
        let b = open_shard(&out, f)?;
        rows += b.metadata().file_metadata().num_rows() as u64;
        if columns.is_empty() {
            columns = b
                .schema()
                .fields()
                .iter()
                .map(|fl| (fl.name().clone(), type_name(fl.data_type())))
                .collect();
        }
    }
    let mut failed = std::collections::BTreeMap::new();
    let mut filtered = std::collections::BTreeMap::new();
    let mut failure_examples = Vec::new();
    let stats: Vec<String> = if out.is_dir("stats")? {
        out.files("stats")?
            .into_iter()
            .filter(|p| p.ends_with(".json") && !p["stats/".len()..].contains('/'))
            .collect()
    } else {
        Vec::new()
    };
    for p in &stats {
        let Some(bytes) = out.read_opt(p)? else {
            continue;
        };
        let Ok(s) = serde_json::from_slice::<ShardStats>(&bytes) else {
            continue;
        };
        for (k, v) in s.failed {
            *failed.entry(k).or_insert(0) += v;
        }
        for (k, v) in s.filtered {
            *filtered.entry(k).or_insert(0) += v;
        }
        for f in s
            .failures
            .into_iter()
            .take(5usize.saturating_sub(failure_examples.len()))
        {
            failure_examples.push((f.key, f.class, f.detail));
        }
    }
    let complete = out
        .read_opt("dataset.json")?
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .map(|m| m.complete);
    Ok(Summary {
        dir: out.display(""),
        shards: files.len(),
        rows,
        columns,
        failed,
        filtered,
        failure_examples,
        complete,
    })
}

pub fn print(s: &Summary) {
    println!("{}", s.dir);
    println!(
        "  rows      {} in {} shard(s){}",
        s.rows,
        s.shards,
        match s.complete {
            Some(true) => ", complete",
            Some(false) => ", INCOMPLETE (re-run the build to finish it)",
            None => "",
        }
    );
    println!("  columns");
    for (n, t) in &s.columns {
        println!("    {n:<18} {t}");
    }
    if s.failed.is_empty() {
        println!("  failures  none");
    } else {
        let total: usize = s.failed.values().sum();
        println!("  failures  {total}");
        for (k, v) in &s.failed {
            println!("    {k:<18} {v}");
        }
        for (key, class, detail) in &s.failure_examples {
            println!("    e.g. {key} [{class}] {detail}");
        }
    }
    if !s.filtered.is_empty() {
        println!("  filtered");
        for (k, v) in &s.filtered {
            println!("    {k:<18} {v}");
        }
    }
}

/// Image-typed columns (struct with `bytes`), `image` first.
fn image_columns(schema: &arrow_schema::Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Struct(c) if c.iter().any(|x| x.name() == "bytes")))
        .map(|f| f.name().clone())
        .collect()
}

/// Write a contact sheet: one row per record, columns `image | condition…`, each cell
/// `cell`×`cell` px (aspect kept, centred on grey). Returns the column names in order.
pub fn grid(
    dir: &Path,
    remote: &RemoteOptions,
    out: &Path,
    rows: usize,
    cell: u32,
) -> Result<Vec<String>> {
    if crate::sink::remote::is_url(&out.to_string_lossy()) {
        bail!(
            "--grid {}: the contact sheet is written to a local file; give a local path (and copy it with your cloud's CLI)",
            out.display()
        );
    }
    let src = Input::open_as(dir, remote, "prep inspect")?;
    let files = shard_files(&src)?;
    let mut cells: Vec<Vec<RgbImage>> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    'files: for f in &files {
        let reader = open_shard(&src, f)?.with_batch_size(rows.max(1)).build()?;
        let f = src.display(f);
        for batch in reader {
            let batch = batch.with_context(|| format!("cannot read {f}"))?;
            if names.is_empty() {
                names = image_columns(&batch.schema());
            }
            for i in 0..batch.num_rows() {
                if cells.len() >= rows {
                    break 'files;
                }
                let mut row = Vec::new();
                for n in &names {
                    let col = batch.column_by_name(n).context("column vanished")?;
                    let s: &StructArray = col.as_struct();
                    let bytes = s
                        .column_by_name("bytes")
                        .context("image column without bytes")?;
                    let bytes = bytes.as_binary::<i32>();
                    let thumb = if bytes.is_null(i) {
                        RgbImage::from_pixel(cell, cell, Rgb([90, 0, 0]))
                    } else {
                        match image::load_from_memory(bytes.value(i)) {
                            Ok(img) => fit(&img.into_rgb8(), cell),
                            Err(_) => RgbImage::from_pixel(cell, cell, Rgb([160, 0, 0])),
                        }
                    };
                    row.push(thumb);
                }
                cells.push(row);
            }
        }
    }
    if cells.is_empty() {
        bail!("{} has no rows to show", src.display(""));
    }
    let gap = 4u32;
    let ncols = names.len() as u32;
    let width = ncols * cell + (ncols + 1) * gap;
    let height = cells.len() as u32 * cell + (cells.len() as u32 + 1) * gap;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([40, 40, 40]));
    for (r, row) in cells.iter().enumerate() {
        for (c, thumb) in row.iter().enumerate() {
            let x = gap + c as u32 * (cell + gap);
            let y = gap + r as u32 * (cell + gap);
            imageops::replace(&mut sheet, thumb, x.into(), y.into());
        }
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    sheet
        .save_with_format(out, image::ImageFormat::Png)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(names)
}

/// Scale to fit `cell`×`cell`, centred on grey.
fn fit(img: &RgbImage, cell: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let s = cell as f64 / w.max(h) as f64;
    let (tw, th) = (
        ((w as f64 * s).round() as u32).max(1),
        ((h as f64 * s).round() as u32).max(1),
    );
    let small = imageops::resize(img, tw, th, imageops::FilterType::Triangle);
    let mut out = RgbImage::from_pixel(cell, cell, Rgb([128, 128, 128]));
    imageops::replace(
        &mut out,
        &small,
        ((cell - tw) / 2).into(),
        ((cell - th) / 2).into(),
    );
    out
}
