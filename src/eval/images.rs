//! Image sets for `prep eval`: a directory of image files, one Parquet file's image column
//! (`F.parquet[:COLUMN]`), or a `prep build` output (`OUT[:COLUMN]`, every `data/` shard).
//! Read in chunks, in a fixed order, so memory holds one chunk of encoded images.
//! Each may be an object-store URL (`s3://bucket/run[:COLUMN]`): Parquet is read by
//! ranged GETs, image objects a chunk at a time.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arrow_array::{cast::AsArray, Array, ArrayRef};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::input_store::{Input, ParquetInput};
use crate::sink::remote::RemoteOptions;

/// File extensions read from an image directory (pytorch-fid's list).
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp",
];

/// Where the images of a set come from.
#[derive(Debug, Clone)]
pub enum ImageSet {
    /// Image files, sorted by name.
    Files(Vec<PathBuf>),
    /// Image objects directly under an object-store prefix, sorted by name.
    Objects { input: Input, files: Vec<String> },
    /// An image column (HF `{bytes, path}` struct or binary) of Parquet files, in order
    /// (relative to `input`; `""` when `input` is the file itself).
    Parquet {
        input: Input,
        files: Vec<String>,
        column: String,
        rows: usize,
    },
}

/// One encoded image: a name for messages (file path or `file#row`) and its bytes.
pub struct EncodedImage {
    pub name: String,
    pub bytes: Vec<u8>,
}

fn is_image_file(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// `PATH:COLUMN` → (`PATH`, `Some(COLUMN)`) when `PATH` exists and `COLUMN` has no `/`;
/// otherwise the whole spec as a path.
pub fn split_column(spec: &Path) -> (PathBuf, Option<String>) {
    let s = spec.to_string_lossy();
    if crate::sink::remote::is_url(&s) {
        // `s3://bucket/run:image`: the column follows the last ':' after the scheme.
        return match s.rsplit_once(':') {
            Some((p, c)) if p.contains("://") && !c.is_empty() && !c.contains('/') => {
                (PathBuf::from(p), Some(c.to_string()))
            }
            _ => (spec.to_path_buf(), None),
        };
    }
    match s.rsplit_once(':') {
        Some((p, c)) if !p.is_empty() && !c.contains('/') && Path::new(p).exists() => {
            (PathBuf::from(p), Some(c.to_string()))
        }
        _ => (spec.to_path_buf(), None),
    }
}

/// The `data/*.parquet` shards of a `prep build` output, sorted.
pub fn parquet_shards(dir: &Path) -> Result<Vec<PathBuf>> {
    let data = dir.join("data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .with_context(|| format!("cannot list {}", data.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    Ok(files)
}

impl ImageSet {
    /// `DIR` (image files, or a `prep build` output), `F.parquet`, each optionally
    /// followed by `:COLUMN` for Parquet (default column `image`).
    /// A URL is opened with `remote` (credentials chain, `--s3-endpoint`).
    pub fn open(spec: &Path, remote: &RemoteOptions) -> Result<ImageSet> {
        let (path, column) = split_column(spec);
        if crate::sink::remote::is_url(&path.to_string_lossy()) {
            return Self::open_remote(&path, column, remote);
        }
        if !path.exists() {
            bail!(
                "{}: no such file or directory (expected an image directory, a .parquet file or a `prep build` output, optionally with :COLUMN)",
                path.display()
            );
        }
        let parquet = if path.is_dir() {
            if path.join("data").is_dir() {
                let shards = parquet_shards(&path)?;
                let rels = shards
                    .iter()
                    .filter_map(|f| f.file_name().and_then(|n| n.to_str()))
                    .map(|n| format!("data/{n}"))
                    .collect();
                Some((Input::Local(path.clone()), rels))
            } else {
                None
            }
        } else if path.extension().is_some_and(|x| x == "parquet") {
            Some((Input::Local(path.clone()), vec![String::new()]))
        } else {
            bail!(
                "{}: not an image directory, a .parquet file or a `prep build` output",
                path.display()
            );
        };
        match parquet {
            Some((input, files)) => {
                Self::parquet(input, files, column, &path.display().to_string())
            }
            None => {
                if let Some(c) = column {
                    bail!(
                        "{}:{c}: a column can only be named for Parquet input",
                        path.display()
                    );
                }
                let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                    .with_context(|| format!("cannot list {}", path.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| is_image_file(p))
                    .collect();
                files.sort();
                if files.is_empty() {
                    bail!(
                        "{}: no image files ({})",
                        path.display(),
                        IMAGE_EXTENSIONS.join(", ")
                    );
                }
                Ok(ImageSet::Files(files))
            }
        }
    }

    fn open_remote(
        path: &Path,
        column: Option<String>,
        remote: &RemoteOptions,
    ) -> Result<ImageSet> {
        let input = Input::open_as(path, remote, "--images")?;
        let spec = input.display("");
        if input.is_file("")? {
            if !spec.ends_with(".parquet") {
                bail!("{spec}: not a .parquet object, a `prep build` output or a prefix of image objects");
            }
            return Self::parquet(input, vec![String::new()], column, &spec);
        }
        if input.is_dir("data")? {
            let files = input.data_shards()?;
            return Self::parquet(input, files, column, &spec);
        }
        if let Some(c) = column {
            bail!("{spec}:{c}: a column can only be named for Parquet input");
        }
        let files: Vec<String> = input
            .files("")?
            .into_iter()
            .filter(|f| {
                !f.contains('/')
                    && f.rsplit_once('.').is_some_and(|(_, e)| {
                        IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                    })
            })
            .collect();
        if files.is_empty() {
            bail!("{spec}: no image objects ({})", IMAGE_EXTENSIONS.join(", "));
        }
        Ok(ImageSet::Objects { input, files })
    }

    /// Check that every file has an image column `column` (default `image`); count rows.
    fn parquet(
        input: Input,
        files: Vec<String>,
        column: Option<String>,
        spec: &str,
    ) -> Result<ImageSet> {
        if files.is_empty() {
            bail!("{spec}: data/ holds no .parquet shards");
        }
        let column = column.unwrap_or_else(|| "image".to_string());
        let mut rows = 0usize;
        for f in &files {
            let name = input.display(f);
            let b = ParquetRecordBatchReaderBuilder::try_new(ParquetInput::open(&input, f)?)
                .with_context(|| format!("{name}: not a readable Parquet file"))?;
            let schema = b.schema();
            let field = schema.field_with_name(&column).map_err(|_| {
                anyhow::anyhow!(
                    "{name}: no column {column:?} (columns: {}); name one with {spec}:COLUMN",
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })?;
            if !is_image_type(field.data_type()) {
                bail!(
                    "{name}: column {column:?} is {}, not an image column (a {{bytes, path}} struct or binary)",
                    field.data_type()
                );
            }
            rows += b.metadata().file_metadata().num_rows() as usize;
        }
        Ok(ImageSet::Parquet {
            input,
            files,
            column,
            rows,
        })
    }

    pub fn len(&self) -> usize {
        match self {
            ImageSet::Files(f) => f.len(),
            ImageSet::Objects { files, .. } => files.len(),
            ImageSet::Parquet { rows, .. } => *rows,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Call `f` on consecutive chunks of at most `chunk` images, in order.
    pub fn for_each_chunk(
        &self,
        chunk: usize,
        mut f: impl FnMut(Vec<EncodedImage>) -> Result<()>,
    ) -> Result<()> {
        let chunk = chunk.max(1);
        match self {
            ImageSet::Files(files) => {
                for part in files.chunks(chunk) {
                    let items = part
                        .iter()
                        .map(|p| {
                            Ok(EncodedImage {
                                name: p.display().to_string(),
                                bytes: std::fs::read(p)
                                    .with_context(|| format!("cannot read {}", p.display()))?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    f(items)?;
                }
            }
            ImageSet::Objects { input, files } => {
                for part in files.chunks(chunk) {
                    let items = part
                        .iter()
                        .zip(input.read_many_opt(part))
                        .map(|(rel, bytes)| {
                            let name = input.display(rel);
                            let bytes = bytes?
                                .with_context(|| format!("{name} does not exist (any more)"))?;
                            Ok(EncodedImage { name, bytes })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    f(items)?;
                }
            }
            ImageSet::Parquet {
                input,
                files,
                column,
                ..
            } => {
                let mut pending: Vec<EncodedImage> = Vec::with_capacity(chunk);
                for rel in files {
                    let file_path = input.display(rel);
                    let b =
                        ParquetRecordBatchReaderBuilder::try_new(ParquetInput::open(input, rel)?)
                            .with_context(|| format!("{file_path}: not a readable Parquet file"))?;
                    let idx = b
                        .schema()
                        .index_of(column)
                        .with_context(|| format!("{file_path}: no column {column:?}"))?;
                    let mask = ProjectionMask::roots(b.parquet_schema(), [idx]);
                    let reader = b.with_projection(mask).with_batch_size(chunk).build()?;
                    let mut row = 0usize;
                    for batch in reader {
                        let batch = batch.with_context(|| format!("cannot read {file_path}"))?;
                        let col = batch.column(0);
                        for i in 0..batch.num_rows() {
                            let name = format!("{file_path}#{row}");
                            let bytes = image_bytes(col, i).with_context(|| {
                                format!("{name}: column {column:?} has no image in this row")
                            })?;
                            pending.push(EncodedImage {
                                name,
                                bytes: bytes.to_vec(),
                            });
                            row += 1;
                            if pending.len() == chunk {
                                f(std::mem::take(&mut pending))?;
                            }
                        }
                    }
                }
                if !pending.is_empty() {
                    f(pending)?;
                }
            }
        }
        Ok(())
    }
}

fn is_image_type(t: &DataType) -> bool {
    match t {
        DataType::Struct(fields) => fields
            .iter()
            .any(|f| f.name() == "bytes" && is_image_type(f.data_type())),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => true,
        _ => false,
    }
}

/// Row `i`'s encoded bytes of an image column, `None` when null.
fn image_bytes(col: &ArrayRef, i: usize) -> Option<&[u8]> {
    if col.is_null(i) {
        return None;
    }
    match col.data_type() {
        DataType::Struct(_) => {
            let s = col.as_struct();
            image_bytes(s.column_by_name("bytes")?, i)
        }
        DataType::Binary => Some(col.as_binary::<i32>().value(i)),
        DataType::LargeBinary => Some(col.as_binary::<i64>().value(i)),
        DataType::BinaryView => Some(col.as_binary_view().value(i)),
        _ => None,
    }
}
