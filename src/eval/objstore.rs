//! Object-store URLs (`s3://`, `gs://`, `az://`) in `prep eval`, `subset` and `report`.
//!
//! - Reading: a `.npy`/`.npz` object (or prompts file, `--pin-val`, history) is streamed to
//!   a temporary file, read, and the file removed (these are read whole anyway); image sets
//!   and build outputs on object stores (`eval features|stats|fid|metrics`, `eval control
//!   --reference/--gen`, `eval text --prompts`, `subset DATASET`) are read by ranged GETs of
//!   the columns needed through [`crate::input_store::ParquetInput`], never downloaded whole.
//! - Writing: `--out s3://…/F.npy` (and metrics.json/csv, index files, subsets.json,
//!   per-sample CSVs) is written to a temporary file and uploaded as one PUT (multipart
//!   above 8 MiB); an object appears whole or not at all.
//! - The feature cache may be a prefix on a store shared by many workers
//!   ([`crate::eval::extract::FeatureCache::open`], `--feature-cache URL`).
//!
//! Arguments that do not take URLs (`build --config`, `eval run --config`, `eval control
//! --keep`) are refused up front by [`refuse_url`], and any other local-only write by
//! [`super::io::write_atomic`], with a message that says so.

use std::path::Path;

use anyhow::{Context, Result};

use crate::input_store::{Input, LocalCopy};
use crate::sink::remote::{is_url, Remote, RemoteOptions};

/// Is `p` an object-store URL?
pub fn is_url_path(p: &Path) -> bool {
    is_url(&p.to_string_lossy())
}

/// A local file with the contents of `path`: the path itself, or a temporary download
/// of the object it names (`flag` names the argument in messages).
pub fn local_file(path: &Path, opts: &RemoteOptions, flag: &str) -> Result<LocalCopy> {
    let input = Input::open_as(path, opts, flag)?;
    input.local_copy("")
}

/// Write `bytes` to `path`: atomically on local disk, or as one object upload.
pub fn write_out(path: &Path, bytes: &[u8], opts: &RemoteOptions) -> Result<()> {
    if !is_url_path(path) {
        return super::io::write_atomic(path, bytes);
    }
    let url = path.to_string_lossy();
    let r = Remote::open_read(&url, opts, "--out")?;
    let mut tmp =
        tempfile::NamedTempFile::new().context("cannot create a temporary file for the upload")?;
    std::io::Write::write_all(&mut tmp, bytes)
        .with_context(|| format!("cannot stage {url} in a temporary file"))?;
    r.upload_file(tmp.path(), "").with_context(|| {
        format!("cannot write {url} (check the bucket exists, the credentials allow writing, and --s3-endpoint)")
    })
}

/// Check an output URL before any work: its scheme, bucket and endpoint, and (one LIST
/// request) that the bucket is there and the credentials can list it. Local paths pass.
pub fn check_out_url(path: &Path, opts: &RemoteOptions, flag: &str) -> Result<()> {
    if !is_url_path(path) {
        return Ok(());
    }
    let url = path.to_string_lossy();
    let r = Remote::open_read(&url, opts, flag)?;
    r.any_under("")
        .with_context(|| format!("{flag} {url}: the object store is not reachable"))?;
    Ok(())
}

/// [`super::io::read_features`] of a local path or an object.
pub fn read_features(path: &Path, opts: &RemoteOptions) -> Result<super::io::Features> {
    if !is_url_path(path) {
        return super::io::read_features(path);
    }
    let copy = local_file(path, opts, "eval input")?;
    let mut f = super::io::read_features(copy.path())
        .with_context(|| format!("{} (read from a temporary download)", path.display()))?;
    f.path = path.to_path_buf();
    Ok(f)
}

/// [`super::io::load_stats`] of a local path or an object.
pub fn load_stats(path: &Path, opts: &RemoteOptions) -> Result<crate::metrics::Stats> {
    if !is_url_path(path) {
        return super::io::load_stats(path);
    }
    let copy = local_file(path, opts, "eval input")?;
    super::io::load_stats(copy.path())
        .with_context(|| format!("{} (read from a temporary download)", path.display()))
}

/// Refuse an object-store URL where `cmd` reads or writes local files only, before any
/// work is done, saying which commands do take URLs.
pub fn refuse_url(cmd: &str, flag: &str, path: &Path) -> Result<()> {
    if is_url_path(path) {
        anyhow::bail!(
            "{cmd} {flag} {}: this argument takes local paths only (object-store URLs are taken by every data, output, feature-cache and report argument: build/fetch --input/--out/--retry-failed, status, finalize, inspect, subset, eval features/stats/fid/metrics/text/control --reference/--gen, eval run --out and report, but not by config files or eval control --keep); copy it to or from local disk with your cloud's CLI",
            path.display()
        );
    }
    Ok(())
}
