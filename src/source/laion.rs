//! LAION-style metadata: one row per image URL, in Parquet (read one row group at a time),
//! CSV, TSV or JSON Lines (read line by line): a 100M-row file is never loaded whole.
//! `--input` is one metadata file, or a directory / object-store prefix of `*.parquet`
//! shards read in sorted path order as one table. Remote metadata files are streamed to
//! a temporary file one at a time, when the iteration reaches them.
//!
//! Kept as columns when present: WIDTH, HEIGHT, similarity, punsafe, pwatermark,
//! AESTHETIC_SCORE or aesthetic, hash (plus `url`). Rows failing `--min-aesthetic`,
//! `--max-punsafe`, `--max-pwatermark` or `--min-size` (on WIDTH/HEIGHT) are recorded as
//! filtered, with the reason.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use arrow_array::{cast::AsArray, types, Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{RecordIter, Source, SourceInfo};
use crate::config::{BuildConfig, Filters};
use crate::input_store::{Input, LocalCopy, ParquetInput};
use crate::record::{Annotations, ImageRef, MetaType, MetaValue, Record};

/// Optional LAION columns kept verbatim, with their type.
const KEPT: [(&str, MetaType); 8] = [
    ("WIDTH", MetaType::Int),
    ("HEIGHT", MetaType::Int),
    ("similarity", MetaType::Float),
    ("punsafe", MetaType::Float),
    ("pwatermark", MetaType::Float),
    ("AESTHETIC_SCORE", MetaType::Float),
    ("aesthetic", MetaType::Float),
    ("hash", MetaType::Str),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Parquet,
    Csv,
    Tsv,
    Jsonl,
}

/// A cell of a metadata row, before typing.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
}

pub struct LaionSource {
    info: SourceInfo,
    input: Input,
    /// Metadata files relative to the input (`""`: the input is the file itself).
    files: Vec<String>,
    /// The first file, opened (remotely: downloaded) at open to read its columns.
    first: LocalCopy,
    format: Format,
    url_col: String,
    caption_col: String,
    /// Kept columns present in the file (name, type).
    kept: Vec<(String, MetaType)>,
    filters: Filters,
    verify_col: Option<String>,
}

fn detect_format(display: &str) -> Result<Format> {
    let name = display
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if name.ends_with(".gz") || name.ends_with(".zst") {
        bail!(
            "{display}: compressed metadata is not read directly; decompress it first (e.g. gunzip)",
        );
    }
    Ok(if name.ends_with(".parquet") {
        Format::Parquet
    } else if name.ends_with(".csv") {
        Format::Csv
    } else if name.ends_with(".tsv") {
        Format::Tsv
    } else if name.ends_with(".jsonl") || name.ends_with(".json") {
        Format::Jsonl
    } else {
        bail!("{display}: unknown metadata format; use a .parquet, .csv, .tsv or .jsonl file")
    })
}

/// The column names of the file (first line / schema / first JSON object); `name` is
/// the file as the user knows it (path or URL), for messages.
fn header(path: &Path, name: &str, format: Format) -> Result<Vec<String>> {
    Ok(match format {
        Format::Parquet => {
            let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
            let b = ParquetRecordBatchReaderBuilder::try_new(file)
                .with_context(|| format!("{name} is not a readable Parquet file"))?;
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        }
        Format::Csv | Format::Tsv => {
            let mut r = csv_reader(path, name, format)?;
            r.headers()
                .with_context(|| format!("cannot read the header line of {name}"))?
                .iter()
                .map(str::to_string)
                .collect()
        }
        Format::Jsonl => {
            let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
            let mut keys = Vec::new();
            for line in BufReader::new(file).lines() {
                let line = line.with_context(|| format!("cannot read {name}"))?;
                if line.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(&line)
                    .with_context(|| format!("{name} line 1: not valid JSON"))?;
                if let Some(o) = v.as_object() {
                    keys = o.keys().cloned().collect();
                }
                break;
            }
            keys
        }
    })
}

fn csv_reader(path: &Path, name: &str, format: Format) -> Result<csv::Reader<File>> {
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    Ok(csv::ReaderBuilder::new()
        .delimiter(if format == Format::Tsv { b'\t' } else { b',' })
        .flexible(false)
        .from_reader(file))
}

impl LaionSource {
    pub fn open(cfg: &BuildConfig, input: Input) -> Result<Self> {
        let files: Vec<String> = if input.is_file("")? {
            vec![String::new()]
        } else if input.is_dir("")? {
            let shards: Vec<String> = input
                .files("")?
                .into_iter()
                .filter(|f| f.to_ascii_lowercase().ends_with(".parquet"))
                .collect();
            if shards.is_empty() {
                bail!(
                    "--input {}: no *.parquet metadata shards in this directory; --source laion expects a metadata file (.parquet, .csv, .tsv, .jsonl) or a directory/prefix of .parquet shards",
                    input.display("")
                );
            }
            shards
        } else {
            bail!("--input {}: no such file; --source laion expects a metadata file (.parquet, .csv, .tsv, .jsonl) or a directory/prefix of .parquet shards", input.display(""));
        };
        let display = input.display(&files[0]);
        let format = detect_format(&display)?;
        let first = input.local_copy(&files[0])?;
        let columns = header(first.path(), &display, format)?;
        let path = display.as_str();
        for (flag, col) in [
            ("--url-col", &cfg.url_col),
            ("--caption-col", &cfg.caption_col),
        ] {
            if !columns.iter().any(|c| c == col) {
                bail!(
                    "{path}: no column {col:?} (set {flag}); the file has columns: {}",
                    columns.join(", ")
                );
            }
        }
        let kept: Vec<(String, MetaType)> = KEPT
            .iter()
            .filter(|(name, _)| columns.iter().any(|c| c == name))
            .map(|(n, t)| (n.to_string(), *t))
            .collect();
        let has = |n: &str| kept.iter().any(|(k, _)| k == n);
        if let Some(col) = &cfg.verify_hash {
            if !columns.iter().any(|c| c == col) {
                bail!(
                    "--verify-hash {col}: {path} has no such column (columns: {})",
                    columns.join(", ")
                );
            }
        }
        let f = &cfg.filters;
        if f.min_aesthetic.is_some() && !has("AESTHETIC_SCORE") && !has("aesthetic") {
            bail!(
                "--min-aesthetic: {path} has no AESTHETIC_SCORE or aesthetic column (columns: {})",
                columns.join(", ")
            );
        }
        if f.max_punsafe.is_some() && !has("punsafe") {
            bail!(
                "--max-punsafe: {path} has no punsafe column (columns: {})",
                columns.join(", ")
            );
        }
        if f.max_pwatermark.is_some() && !has("pwatermark") {
            bail!(
                "--max-pwatermark: {path} has no pwatermark column (columns: {})",
                columns.join(", ")
            );
        }
        // Parquet footers give the row count: local files opened, remote ones read by
        // ranged GETs (the footer only; HEAD + 2 GETs per shard).
        let size_hint = if format == Format::Parquet {
            let rows =
                |b: parquet::errors::Result<ParquetRecordBatchReaderBuilder<ParquetInput>>| {
                    b.ok()
                        .map(|b| b.metadata().file_metadata().num_rows() as u64)
                };
            let mut total = Some(0u64);
            for (i, f) in files.iter().enumerate() {
                let n = if i == 0 {
                    File::open(first.path())
                        .ok()
                        .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).ok())
                        .map(|b| b.metadata().file_metadata().num_rows() as u64)
                } else {
                    ParquetInput::open(&input, f)
                        .ok()
                        .and_then(|p| rows(ParquetRecordBatchReaderBuilder::try_new(p)))
                };
                total = total.zip(n).map(|(a, b)| a + b);
            }
            total
        } else {
            None
        };
        let mut meta_columns = vec![("url".to_string(), MetaType::Str)];
        meta_columns.extend(kept.iter().cloned());
        let info = SourceInfo {
            name: "laion",
            meta_columns,
            has_keypoints: false,
            has_seg: false,
            remote: true,
            size_hint,
            description: if files.len() == 1 {
                format!("LAION metadata {path}")
            } else {
                format!(
                    "LAION metadata {} ({} parquet files)",
                    input.display(""),
                    files.len()
                )
            },
            input_store: input.remote().cloned(),
        };
        Ok(LaionSource {
            info,
            input,
            files,
            first,
            format,
            url_col: cfg.url_col.clone(),
            caption_col: cfg.caption_col.clone(),
            kept,
            filters: cfg.filters.clone(),
            verify_col: cfg.verify_hash.clone(),
        })
    }
}

/// Rows as (1-based line/row number for messages, cells in `wanted` order).
type RowIter = Box<dyn Iterator<Item = Result<(u64, Vec<Cell>)>> + Send>;
/// Rows of several files, each with its file's name (path or URL) for messages.
type NamedRows = Box<dyn Iterator<Item = Result<(Arc<str>, u64, Vec<Cell>)>> + Send>;

fn parquet_rows(path: &Path, name: Arc<str>, wanted: Vec<String>) -> Result<RowIter> {
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{name} is not a readable Parquet file"))?
        .with_batch_size(4096)
        .build()
        .with_context(|| format!("cannot read {name}"))?;
    let mut row_no = 0u64;
    let it = reader.flat_map(move |batch| -> Vec<Result<(u64, Vec<Cell>)>> {
        let batch: RecordBatch = match batch {
            Ok(b) => b,
            Err(e) => return vec![Err(anyhow!("{name}: corrupt Parquet data: {e}"))],
        };
        let cols: Vec<ArrayRef> = wanted
            .iter()
            .map(|w| {
                batch
                    .column_by_name(w)
                    .cloned()
                    .expect("column checked at open")
            })
            .collect();
        (0..batch.num_rows())
            .map(|i| {
                row_no += 1;
                let cells = cols
                    .iter()
                    .zip(&wanted)
                    .map(|(c, col)| {
                        arrow_cell(c, i)
                            .with_context(|| format!("{} row {row_no}: column {col:?}", name))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((row_no, cells))
            })
            .collect()
    });
    Ok(Box::new(it))
}

fn arrow_cell(col: &ArrayRef, i: usize) -> Result<Cell> {
    if col.is_null(i) {
        return Ok(Cell::Null);
    }
    Ok(match col.data_type() {
        DataType::Utf8 => Cell::Str(col.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Cell::Str(col.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Cell::Str(col.as_string_view().value(i).to_string()),
        DataType::Int8 => Cell::Int(col.as_primitive::<types::Int8Type>().value(i).into()),
        DataType::Int16 => Cell::Int(col.as_primitive::<types::Int16Type>().value(i).into()),
        DataType::Int32 => Cell::Int(col.as_primitive::<types::Int32Type>().value(i).into()),
        DataType::Int64 => Cell::Int(col.as_primitive::<types::Int64Type>().value(i)),
        DataType::UInt8 => Cell::Int(col.as_primitive::<types::UInt8Type>().value(i).into()),
        DataType::UInt16 => Cell::Int(col.as_primitive::<types::UInt16Type>().value(i).into()),
        DataType::UInt32 => Cell::Int(col.as_primitive::<types::UInt32Type>().value(i).into()),
        DataType::UInt64 => Cell::Int(col.as_primitive::<types::UInt64Type>().value(i) as i64),
        DataType::Float32 => Cell::Float(col.as_primitive::<types::Float32Type>().value(i).into()),
        DataType::Float64 => Cell::Float(col.as_primitive::<types::Float64Type>().value(i)),
        other => bail!("unsupported column type {other}"),
    })
}

fn csv_rows(path: &Path, name: Arc<str>, format: Format, wanted: Vec<String>) -> Result<RowIter> {
    let mut reader = csv_reader(path, &name, format)?;
    let headers = reader.headers()?.clone();
    let idx: Vec<usize> = wanted
        .iter()
        .map(|w| {
            headers
                .iter()
                .position(|h| h == w)
                .expect("column checked at open")
        })
        .collect();
    let it = reader.into_records().map(move |rec| {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            anyhow!(
                "{name} line {line}: malformed {} row: {e}",
                if format == Format::Tsv { "TSV" } else { "CSV" }
            )
        })?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let cells = idx
            .iter()
            .map(|&i| match rec.get(i) {
                None | Some("") => Cell::Null,
                Some(s) => Cell::Str(s.to_string()),
            })
            .collect();
        Ok((line, cells))
    });
    Ok(Box::new(it))
}

fn jsonl_rows(path: &Path, name: Arc<str>, wanted: Vec<String>) -> Result<RowIter> {
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let it = BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map(|l| !l.trim().is_empty()).unwrap_or(true))
        .map(move |(i, line)| {
            let line_no = i as u64 + 1;
            let line = line.with_context(|| format!("cannot read {name}"))?;
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{name} line {line_no}: not valid JSON"))?;
            let cells = wanted
                .iter()
                .map(|w| match v.get(w) {
                    None | Some(serde_json::Value::Null) => Cell::Null,
                    Some(serde_json::Value::String(s)) => Cell::Str(s.clone()),
                    Some(serde_json::Value::Number(n)) => match n.as_i64() {
                        Some(i) => Cell::Int(i),
                        None => Cell::Float(n.as_f64().unwrap_or(f64::NAN)),
                    },
                    Some(other) => Cell::Str(other.to_string()),
                })
                .collect();
            Ok((line_no, cells))
        });
    Ok(Box::new(it))
}

fn to_meta(cell: &Cell, ty: MetaType) -> std::result::Result<MetaValue, String> {
    Ok(match (ty, cell) {
        (MetaType::Int, Cell::Null) => MetaValue::Int(None),
        (MetaType::Float, Cell::Null) => MetaValue::Float(None),
        (MetaType::Str, Cell::Null) => MetaValue::Str(None),
        (MetaType::Int, Cell::Int(i)) => MetaValue::Int(Some(*i)),
        (MetaType::Int, Cell::Float(f)) if f.fract() == 0.0 => MetaValue::Int(Some(*f as i64)),
        (MetaType::Int, Cell::Str(s)) => match s.trim().parse::<i64>() {
            Ok(i) => MetaValue::Int(Some(i)),
            Err(_) => match s.trim().parse::<f64>() {
                Ok(f) if f.fract() == 0.0 => MetaValue::Int(Some(f as i64)),
                _ => return Err(format!("{s:?} is not an integer")),
            },
        },
        (MetaType::Float, Cell::Int(i)) => MetaValue::Float(Some(*i as f64)),
        (MetaType::Float, Cell::Float(f)) => MetaValue::Float(Some(*f)),
        (MetaType::Float, Cell::Str(s)) => match s.trim().parse::<f64>() {
            Ok(f) => MetaValue::Float(Some(f)),
            Err(_) => return Err(format!("{s:?} is not a number")),
        },
        (MetaType::Str, Cell::Str(s)) => MetaValue::Str(Some(s.clone())),
        (MetaType::Str, Cell::Int(i)) => MetaValue::Str(Some(i.to_string())),
        (MetaType::Str, Cell::Float(f)) => MetaValue::Str(Some(f.to_string())),
        (MetaType::Int, Cell::Float(f)) => return Err(format!("{f} is not an integer")),
    })
}

fn float_of(meta: &[(String, MetaType)], values: &[MetaValue], names: &[&str]) -> Option<f64> {
    names.iter().find_map(|n| {
        let i = meta.iter().position(|(k, _)| k == n)?;
        match &values[i] {
            MetaValue::Float(v) => *v,
            MetaValue::Int(v) => v.map(|v| v as f64),
            MetaValue::Str(_) => None,
        }
    })
}

/// The first filter a row fails, if any.
fn filter_reason(
    filters: &Filters,
    kept: &[(String, MetaType)],
    values: &[MetaValue],
) -> Option<String> {
    if let Some(min) = filters.min_aesthetic {
        match float_of(kept, values, &["AESTHETIC_SCORE", "aesthetic"]) {
            Some(a) if a >= min => {}
            Some(_) => return Some("min_aesthetic".into()),
            None => return Some("aesthetic_missing".into()),
        }
    }
    if let Some(max) = filters.max_punsafe {
        match float_of(kept, values, &["punsafe"]) {
            Some(p) if p <= max => {}
            Some(_) => return Some("max_punsafe".into()),
            None => return Some("punsafe_missing".into()),
        }
    }
    if let Some(max) = filters.max_pwatermark {
        match float_of(kept, values, &["pwatermark"]) {
            Some(p) if p <= max => {}
            Some(_) => return Some("max_pwatermark".into()),
            None => return Some("pwatermark_missing".into()),
        }
    }
    if let Some(min) = filters.min_size {
        let w = float_of(kept, values, &["WIDTH"]);
        let h = float_of(kept, values, &["HEIGHT"]);
        if let (Some(w), Some(h)) = (w, h) {
            if w < f64::from(min) || h < f64::from(min) {
                return Some("min_size".into());
            }
        }
    }
    None
}

impl Source for LaionSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn records(self: Box<Self>) -> Result<RecordIter> {
        let s = *self;
        let mut wanted = vec![s.url_col.clone(), s.caption_col.clone()];
        wanted.extend(s.kept.iter().map(|(n, _)| n.clone()));
        let has_verify = s.verify_col.is_some();
        if let Some(c) = &s.verify_col {
            wanted.push(c.clone());
        }
        // One file after the other; a remote file is downloaded when the iteration
        // reaches it and its temporary copy removed when its rows are done.
        let LaionSource {
            input,
            files,
            first,
            format,
            kept,
            filters,
            ..
        } = s;
        let required = wanted.clone();
        let mut first = Some(first);
        let rows = files.into_iter().flat_map(move |rel| -> NamedRows {
            let name: Arc<str> = input.display(&rel).into();
            let opened = (|| -> Result<RowIter> {
                let copy = match first.take() {
                    Some(c) => c,
                    None => input.local_copy(&rel)?,
                };
                let columns = header(copy.path(), &name, format)?;
                if let Some(missing) = required.iter().find(|c| !columns.contains(c)) {
                    bail!(
                        "{name}: no column {missing:?}, which the first metadata file has; every shard under --input needs the same columns (this one has: {})",
                        columns.join(", ")
                    );
                }
                let it = match format {
                    Format::Parquet => parquet_rows(copy.path(), name.clone(), required.clone())?,
                    Format::Csv | Format::Tsv => {
                        csv_rows(copy.path(), name.clone(), format, required.clone())?
                    }
                    Format::Jsonl => jsonl_rows(copy.path(), name.clone(), required.clone())?,
                };
                // The (temporary) copy lives as long as its rows are read.
                Ok(Box::new(it.inspect(move |_| {
                    let _ = &copy;
                })))
            })();
            match opened {
                Ok(it) => Box::new(it.map(move |r| r.map(|(line, cells)| (name.clone(), line, cells)))),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        });
        let mut index = 0u64;
        Ok(Box::new(rows.map(move |row| {
            let (path, line, cells) = row?;
            let key = format!("laion/{index:09}");
            index += 1;
            let url = match &cells[0] {
                Cell::Str(u) => u.trim().to_string(),
                Cell::Null => String::new(),
                other => bail!("{path} row {line}: the URL column holds {other:?}, not text"),
            };
            let caption = match &cells[1] {
                Cell::Str(c) => Some(c.clone()),
                Cell::Null => None,
                Cell::Int(i) => Some(i.to_string()),
                Cell::Float(f) => Some(f.to_string()),
            };
            let mut meta = vec![MetaValue::Str(Some(url.clone()))];
            let expected_sha256 = if has_verify {
                match cells.last() {
                    Some(Cell::Str(h)) => Some(h.trim().to_ascii_lowercase()),
                    _ => None,
                }
            } else {
                None
            };
            for ((name, ty), cell) in kept.iter().zip(&cells[2..]) {
                let v = to_meta(cell, *ty)
                    .map_err(|e| anyhow!("{path} row {line}: column {name:?}: {e}"))?;
                meta.push(v);
            }
            let mut filtered = filter_reason(&filters, &kept, &meta[1..]);
            if filtered.is_none() && url.is_empty() {
                filtered = Some("no_url".into());
            }
            let image =
                if url.starts_with("http://") || url.starts_with("https://") || url.is_empty() {
                    ImageRef::Url(url)
                } else if let Some(p) = url.strip_prefix("file://") {
                    ImageRef::Path(PathBuf::from(p))
                } else {
                    if filtered.is_none() {
                        filtered = Some("unsupported_url_scheme".into());
                    }
                    ImageRef::Url(url)
                };
            Ok(Record {
                key,
                captions: caption.into_iter().collect(),
                image,
                annotations: Annotations::default(),
                meta,
                filtered,
                expected_sha256,
            })
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_cells() {
        assert_eq!(
            to_meta(&Cell::Str("640".into()), MetaType::Int),
            Ok(MetaValue::Int(Some(640)))
        );
        assert_eq!(
            to_meta(&Cell::Str("640.0".into()), MetaType::Int),
            Ok(MetaValue::Int(Some(640)))
        );
        assert!(to_meta(&Cell::Str("wide".into()), MetaType::Int).is_err());
        assert_eq!(
            to_meta(&Cell::Int(7), MetaType::Float),
            Ok(MetaValue::Float(Some(7.0)))
        );
        assert_eq!(
            to_meta(&Cell::Null, MetaType::Str),
            Ok(MetaValue::Str(None))
        );
    }

    #[test]
    fn filters_name_their_reason() {
        let kept = vec![
            ("WIDTH".to_string(), MetaType::Int),
            ("HEIGHT".to_string(), MetaType::Int),
            ("punsafe".to_string(), MetaType::Float),
            ("AESTHETIC_SCORE".to_string(), MetaType::Float),
        ];
        let row = |w, h, p, a| {
            vec![
                MetaValue::Int(Some(w)),
                MetaValue::Int(Some(h)),
                MetaValue::Float(Some(p)),
                MetaValue::Float(a),
            ]
        };
        let f = Filters {
            min_aesthetic: Some(6.0),
            max_punsafe: Some(0.5),
            max_pwatermark: None,
            min_size: Some(256),
            ..Default::default()
        };
        assert_eq!(
            filter_reason(&f, &kept, &row(512, 512, 0.1, Some(6.5))),
            None
        );
        assert_eq!(
            filter_reason(&f, &kept, &row(512, 512, 0.1, Some(5.9))).as_deref(),
            Some("min_aesthetic")
        );
        assert_eq!(
            filter_reason(&f, &kept, &row(512, 512, 0.9, Some(7.0))).as_deref(),
            Some("max_punsafe")
        );
        assert_eq!(
            filter_reason(&f, &kept, &row(512, 100, 0.1, Some(7.0))).as_deref(),
            Some("min_size")
        );
        assert_eq!(
            filter_reason(&f, &kept, &row(512, 512, 0.1, None)).as_deref(),
            Some("aesthetic_missing")
        );
    }
}
