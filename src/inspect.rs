//! `prep inspect OUT`: rows, columns and failures of a built dataset, and a contact sheet.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arrow_array::{cast::AsArray, Array, StructArray};
use arrow_schema::DataType;
use image::{imageops, Rgb, RgbImage};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::manifest;
use crate::sink::{LocalStore, ShardStats};

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

fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let data = dir.join("data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .with_context(|| {
            format!(
                "{} has no data/ directory; is it a `prep build` output?",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn type_name(t: &DataType) -> String {
    match t {
        DataType::Struct(f) if f.iter().any(|x| x.name() == "bytes") => "image".into(),
        DataType::List(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::Utf8 => "string".into(),
        other => other.to_string().to_lowercase(),
    }
}

pub fn summarize(dir: &Path) -> Result<Summary> {
    let files = shard_files(dir)?;
    let mut rows = 0u64;
    let mut columns = Vec::new();
    for f in &files {
        let file = File::open(f).with_context(|| format!("cannot open {}", f.display()))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{} is not a readable Parquet file", f.display()))?;
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
    let store = LocalStore::new(dir);
    let mut failed = std::collections::BTreeMap::new();
    let mut filtered = std::collections::BTreeMap::new();
    let mut failure_examples = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir.join("stats")) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
        {
            let Ok(s) = serde_json::from_slice::<ShardStats>(&std::fs::read(p)?) else {
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
    }
    let complete = manifest::read(&store).ok().flatten().map(|m| m.complete);
    Ok(Summary {
        dir: dir.display().to_string(),
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
pub fn grid(dir: &Path, out: &Path, rows: usize, cell: u32) -> Result<Vec<String>> {
    let files = shard_files(dir)?;
    let mut cells: Vec<Vec<RgbImage>> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    'files: for f in &files {
        let file = File::open(f).with_context(|| format!("cannot open {}", f.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
            .with_batch_size(rows.max(1))
            .build()?;
        for batch in reader {
            let batch = batch.with_context(|| format!("cannot read {}", f.display()))?;
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
        bail!("{} has no rows to show", dir.display());
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
