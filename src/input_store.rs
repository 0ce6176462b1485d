//! Where `--input` lives: a local path, or an object-store prefix (`s3://`, `gs://`,
//! `az://`) read through [`Remote`] with the same credentials chain and `--s3-endpoint`
//! as `--out`.
//!
//! Sources name their files by paths relative to the input root (`annotations/x.json`,
//! `val2017/000000000139.jpg`) and ask this module to list, read or locate them, so a
//! source is the same code for both.
//!
//! Architecture invariants:
//! - Nothing is written to an input store (opened with [`Remote::open_read`]; read-only
//!   credentials suffice).
//! - Memory and disk stay bounded: images are not read here but become
//!   [`ImageRef::Object`] references the loader fetches when the record is processed;
//!   metadata files a parser needs as a file (COCO annotation JSON, LAION metadata
//!   shards) are streamed to one temporary file each ([`Input::local_copy`]), removed
//!   when the copy is dropped.
//! - Listings are in component-wise path order, the order a local directory walk gives,
//!   so the same data locally and remotely yields the same records in the same order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::record::ImageRef;
use crate::sink::remote::{is_url, Remote, RemoteOptions};

/// A file in an object store, loaded by the loader stage ([`crate::load`]).
#[derive(Clone)]
pub struct ObjectRef {
    pub remote: Arc<Remote>,
    /// Relative to the remote's prefix.
    pub rel: String,
}

impl ObjectRef {
    pub fn url(&self) -> String {
        self.remote.url(&self.rel)
    }
}

impl std::fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef({})", self.url())
    }
}

impl PartialEq for ObjectRef {
    fn eq(&self, other: &Self) -> bool {
        self.url() == other.url()
    }
}

/// `--input`: a local path or an object-store prefix.
#[derive(Debug, Clone)]
pub enum Input {
    Local(PathBuf),
    Remote(Arc<Remote>),
}

/// A local file holding an input file's bytes: the file itself, or a temporary download
/// (deleted on drop).
pub struct LocalCopy {
    path: PathBuf,
    _tmp: Option<tempfile::TempPath>,
}

impl LocalCopy {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Sort relative paths as a recursive, per-directory sorted walk would visit them.
fn component_order(names: &mut [String]) {
    names.sort_by(|a, b| a.split('/').cmp(b.split('/')));
}

impl Input {
    /// Open `--input`. A URL is opened for reading and checked to hold at least one
    /// object, so a wrong bucket, prefix or credentials fail here, naming the URL.
    pub fn open(input: &Path, opts: &RemoteOptions) -> Result<Input> {
        Self::open_as(input, opts, "--input")
    }

    /// [`Input::open`] for another argument (`flag` names it in messages).
    pub fn open_as(input: &Path, opts: &RemoteOptions, flag: &str) -> Result<Input> {
        let s = input.to_string_lossy();
        if !is_url(&s) {
            return Ok(Input::Local(input.to_path_buf()));
        }
        let r = Remote::open_read(&s, opts, flag)?;
        let exists = r.head("")?.is_some() || r.any_under("")?;
        if !exists {
            bail!(
                "{flag} {}: no objects at or under this URL; check the bucket and prefix (e.g. list them with your cloud's CLI)",
                r.url("")
            );
        }
        Ok(Input::Remote(Arc::new(r)))
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Input::Remote(_))
    }

    pub fn remote(&self) -> Option<&Arc<Remote>> {
        match self {
            Input::Remote(r) => Some(r),
            Input::Local(_) => None,
        }
    }

    /// `rel` as the user would name it (a path or a URL), for messages.
    pub fn display(&self, rel: &str) -> String {
        match self {
            Input::Local(root) if rel.is_empty() => root.display().to_string(),
            Input::Local(root) => root.join(rel).display().to_string(),
            Input::Remote(r) => r.url(rel),
        }
    }

    /// Is `rel` a directory (remotely: a prefix with at least one object under it)?
    pub fn is_dir(&self, rel: &str) -> Result<bool> {
        match self {
            Input::Local(root) => Ok(root.join(rel).is_dir()),
            Input::Remote(r) => r.any_under(rel),
        }
    }

    /// Is `rel` a file (remotely: an object)?
    pub fn is_file(&self, rel: &str) -> Result<bool> {
        match self {
            Input::Local(root) => Ok(if rel.is_empty() {
                root.is_file()
            } else {
                root.join(rel).is_file()
            }),
            Input::Remote(r) => Ok(r.head(rel)?.is_some()),
        }
    }

    /// Every file under `dir` (recursively, relative to the input root), skipping names
    /// that start with `.` at any level, in component-wise path order.
    pub fn files(&self, dir: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        match self {
            Input::Local(root) => walk(root, &root.join(dir), &mut out)?,
            Input::Remote(r) => {
                for (name, _) in r.list(dir)? {
                    if !name.is_empty()
                        && !name.split('/').any(|c| c.is_empty() || c.starts_with('.'))
                    {
                        out.push(name);
                    }
                }
            }
        }
        component_order(&mut out);
        Ok(out)
    }

    /// The `data/*.parquet` shards of a `prep build` output (directly under `data/`), in
    /// [`Input::files`] order; empty when there are none.
    pub fn data_shards(&self) -> Result<Vec<String>> {
        Ok(self
            .files("data")?
            .into_iter()
            .filter(|f| f.matches('/').count() == 1 && f.ends_with(".parquet"))
            .collect())
    }

    /// The bytes of `rel`, `None` when it does not exist.
    pub fn read_opt(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Input::Local(root) => {
                let p = root.join(rel);
                match std::fs::read(&p) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
                }
            }
            Input::Remote(r) => r.get_blocking(rel),
        }
    }

    /// Several small files (captions) at once; remotely 16 requests in flight.
    pub fn read_many_opt(&self, rels: &[String]) -> Vec<Result<Option<Vec<u8>>>> {
        match self {
            Input::Local(_) => rels.iter().map(|r| self.read_opt(r)).collect(),
            Input::Remote(r) => r.get_many(rels, 16),
        }
    }

    /// A local file with the contents of `rel` (remotely: streamed to a temporary file).
    pub fn local_copy(&self, rel: &str) -> Result<LocalCopy> {
        match self {
            Input::Local(root) => Ok(LocalCopy {
                path: if rel.is_empty() {
                    root.clone()
                } else {
                    root.join(rel)
                },
                _tmp: None,
            }),
            Input::Remote(r) => {
                let name = rel.rsplit('/').next().unwrap_or("input");
                let tmp = tempfile::Builder::new()
                    .prefix("prep-input-")
                    .suffix(&format!("-{name}"))
                    .tempfile()
                    .context("cannot create a temporary file for an --input download")?
                    .into_temp_path();
                if !r.download_to(rel, &tmp)? {
                    bail!(
                        "{} does not exist; check --input and the file layout the source expects",
                        r.url(rel)
                    );
                }
                Ok(LocalCopy {
                    path: tmp.to_path_buf(),
                    _tmp: Some(tmp),
                })
            }
        }
    }

    /// The image (or label map) at `rel`, for the loader.
    pub fn image(&self, rel: &str) -> ImageRef {
        match self {
            Input::Local(root) => ImageRef::Path(root.join(rel)),
            Input::Remote(r) => ImageRef::Object(ObjectRef {
                remote: r.clone(),
                rel: rel.to_string(),
            }),
        }
    }
}

/// A Parquet file to read without downloading it whole: a local file, or an object read
/// by ranged GETs (the footer, then only the column chunks and pages a reader asks for).
pub enum ParquetInput {
    File(std::fs::File),
    Object {
        remote: Arc<Remote>,
        rel: String,
        len: u64,
    },
}

/// Bytes per ranged GET when a Parquet reader streams from an object (page headers).
const READ_AHEAD: u64 = 64 << 10;

impl ParquetInput {
    /// Open `rel` under `input` for a Parquet reader.
    pub fn open(input: &Input, rel: &str) -> Result<Self> {
        match input {
            Input::Local(root) => {
                let p = if rel.is_empty() {
                    root.clone()
                } else {
                    root.join(rel)
                };
                Ok(ParquetInput::File(
                    std::fs::File::open(&p)
                        .with_context(|| format!("cannot open {}", p.display()))?,
                ))
            }
            Input::Remote(r) => {
                let (len, _) = r
                    .head(rel)?
                    .with_context(|| format!("{} does not exist", r.url(rel)))?;
                Ok(ParquetInput::Object {
                    remote: r.clone(),
                    rel: rel.to_string(),
                    len,
                })
            }
        }
    }
}

impl parquet::file::reader::Length for ParquetInput {
    fn len(&self) -> u64 {
        match self {
            ParquetInput::File(f) => parquet::file::reader::Length::len(f),
            ParquetInput::Object { len, .. } => *len,
        }
    }
}

fn pq_err(e: anyhow::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(format!("{e:#}").into())
}

impl parquet::file::reader::ChunkReader for ParquetInput {
    type T = Box<dyn std::io::Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        match self {
            ParquetInput::File(f) => Ok(Box::new(f.get_read(start)?)),
            ParquetInput::Object { remote, rel, len } => Ok(Box::new(ObjectReader {
                remote: remote.clone(),
                rel: rel.clone(),
                pos: start,
                end: *len,
                buf: bytes::Bytes::new(),
            })),
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        match self {
            ParquetInput::File(f) => f.get_bytes(start, length),
            ParquetInput::Object { remote, rel, .. } => remote
                .get_range(rel, start..start + length as u64)
                .map_err(pq_err),
        }
    }
}

/// Sequential reads of an object, [`READ_AHEAD`] bytes per ranged GET.
struct ObjectReader {
    remote: Arc<Remote>,
    rel: String,
    pos: u64,
    end: u64,
    buf: bytes::Bytes,
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            if self.pos >= self.end {
                return Ok(0);
            }
            let to = (self.pos + READ_AHEAD.max(out.len() as u64)).min(self.end);
            self.buf = self
                .remote
                .get_range(&self.rel, self.pos..to)
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            self.pos = to;
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for e in entries {
        let p = e
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, out)?;
        } else {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_order_is_a_sorted_walk() {
        // '.' (0x2e) sorts before '/' (0x2f) as bytes, but a walk visits directory `a`
        // (and all of it) before `a.b`.
        let mut v: Vec<String> = ["a.b/c.jpg", "a/z.jpg", "a/b/c.jpg", "0.jpg"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        component_order(&mut v);
        assert_eq!(v, ["0.jpg", "a/b/c.jpg", "a/z.jpg", "a.b/c.jpg"]);

        let tmp = tempfile::tempdir().unwrap();
        for f in [
            "a.b/c.jpg",
            "a/z.jpg",
            "a/b/c.jpg",
            "0.jpg",
            ".hidden/x.jpg",
            "a/.y.jpg",
        ] {
            let p = tmp.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let input = Input::Local(tmp.path().to_path_buf());
        assert_eq!(
            input.files("").unwrap(),
            ["0.jpg", "a/b/c.jpg", "a/z.jpg", "a.b/c.jpg"]
        );
    }
}
