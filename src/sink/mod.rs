//! The sink: finished rows → committed shards, their stats, and the dataset manifest.
//!
//! Output layout:
//!
//! ```text
//! OUT/data/part-00000.parquet     rows of shard 0 (HF `datasets` loadable)
//! OUT/stats/part-00000.json       rows, failures by class (with keys), timing, sha256
//! OUT/dataset.json                config, source, columns, per-shard sha256, totals
//! ```
//!
//! Commit protocol per shard: the Parquet file is streamed to a temporary name while its
//! sha256 is computed, then the stats file is committed, then the Parquet file is renamed
//! into place. The Parquet rename is the commit point: a shard is complete when its
//! Parquet file exists, its stats exist with this run's config fingerprint, and the stats'
//! byte count matches the file. Anything else is redone.

pub mod parquet;
pub mod remote;
pub mod store;
pub mod webdataset;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use self::parquet::{DatasetSchema, Row, ShardWriter, StatusRow};
pub use self::store::{Created, LocalStore, OutStore};

/// A shard's commit found it already committed by another worker (its claim was lost or
/// taken over); this worker's copy was discarded and nothing it wrote is referenced.
#[derive(Debug)]
pub struct LostRace {
    pub shard: usize,
    pub by: String,
}

impl std::fmt::Display for LostRace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shard {} was committed by another worker ({}); this worker's copy was discarded",
            self.shard, self.by
        )
    }
}

impl std::error::Error for LostRace {}

pub const SCHEMA_VERSION: u32 = 1;

pub fn data_rel(shard: usize) -> String {
    data_rel_as(shard, OutputFormat::Parquet)
}

/// The data file of shard `shard` in `format`.
pub fn data_rel_as(shard: usize, format: OutputFormat) -> String {
    match format {
        OutputFormat::Parquet => format!("data/part-{shard:05}.parquet"),
        OutputFormat::Webdataset => format!("data/part-{shard:05}.tar"),
    }
}

/// How rows are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// HF `datasets` Parquet (image columns decode to PIL images).
    #[default]
    Parquet,
    /// WebDataset tar shards (`key.jpg`, `key.txt`, `key.json`, `key.COND.png`).
    Webdataset,
}

enum Writer {
    Parquet(Box<ShardWriter>),
    Tar(Box<webdataset::TarShardWriter>),
}

pub fn status_rel(shard: usize) -> String {
    format!("status/part-{shard:05}.parquet")
}

pub fn stats_rel(shard: usize) -> String {
    format!("stats/part-{shard:05}.json")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailureEntry {
    pub key: String,
    pub class: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileInfo {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `stats/part-XXXXX.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardStats {
    pub shard: usize,
    pub prep_version: String,
    pub fingerprint: String,
    /// Input records assigned to this shard (built + failed + filtered).
    pub input_rows: usize,
    /// Rows written to the Parquet file.
    pub rows: usize,
    /// Failures by class.
    pub failed: BTreeMap<String, usize>,
    /// Rows dropped by filters, by reason.
    pub filtered: BTreeMap<String, usize>,
    /// Every failed row with its class and what happened.
    pub failures: Vec<FailureEntry>,
    pub seconds: f64,
    pub parquet: FileInfo,
    pub status_file: FileInfo,
    // img2dataset's stats fields, so existing tooling reads ours.
    pub count: usize,
    pub successes: usize,
    pub failed_to_download: usize,
    pub failed_to_resize: usize,
    pub duration: f64,
    pub start_time: f64,
    pub end_time: f64,
    pub status_dict: BTreeMap<String, usize>,
    /// The worker that committed the shard (host/pid), for per-worker throughput.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// Failure classes that happen before there are bytes to decode.
pub fn is_download_failure(class: &str) -> bool {
    class.starts_with("http_")
        || matches!(
            class,
            "dns"
                | "connect"
                | "timeout"
                | "too_large"
                | "truncated"
                | "redirect_loop"
                | "blocked_address"
                | "opt_out_x_robots_tag"
                | "file_not_found"
                | "io"
                | "unsupported_scheme"
                | "bad_url"
                | "no_http"
        )
}

/// Is shard `k` complete for this fingerprint? `Err` when it was built with other settings.
pub fn shard_complete(store: &OutStore, shard: usize, fingerprint: &str) -> Result<bool> {
    let stats = stats_rel(shard);
    let Some(bytes) = store.read_opt(&stats)? else {
        return Ok(false);
    };
    if !store.exists(&status_rel(shard)) {
        return Ok(false);
    }
    let s: ShardStats = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(_) => return Ok(false), // unreadable stats: redo the shard
    };
    if s.fingerprint != fingerprint {
        bail!(
            "{} was built with different settings (fingerprint {} vs {}); use a new --out, or delete {} to rebuild",
            store.display_rel(&stats),
            &s.fingerprint[..12.min(s.fingerprint.len())],
            &fingerprint[..12],
            store.display()
        );
    }
    // The data file the stats name (Parquet or tar) must be there, whole.
    Ok(store.size(&s.parquet.file) == Some(s.parquet.bytes))
}

/// Writes shards into a [`OutStore`], one at a time.
pub struct ParquetSink {
    store: OutStore,
    schema: DatasetSchema,
    resolution: u32,
    format: OutputFormat,
    current: Option<(usize, PathBuf, Writer)>,
    /// Commit stats with a create that never replaces (several workers share the output).
    exclusive: bool,
    worker: Option<String>,
}

impl ParquetSink {
    pub fn new(
        store: OutStore,
        schema: DatasetSchema,
        resolution: u32,
        format: OutputFormat,
    ) -> Result<Self> {
        store.ensure_dir("data")?;
        store.ensure_dir("stats")?;
        store.ensure_dir("status")?;
        Ok(ParquetSink {
            store,
            schema,
            resolution,
            format,
            current: None,
            exclusive: false,
            worker: None,
        })
    }

    /// Several workers may write this output: commit each shard's stats with a create
    /// that fails when the shard is already committed (always so on an object store).
    pub fn exclusive(mut self, on: bool) -> Self {
        self.exclusive = on || self.store.is_remote();
        self
    }

    /// Record `worker` in every shard's stats.
    pub fn worker(mut self, worker: Option<String>) -> Self {
        self.worker = worker;
        self
    }

    pub fn begin_shard(&mut self, shard: usize) -> Result<()> {
        self.abort_shard();
        let rel = data_rel_as(shard, self.format);
        self.store.clear_stale_temps(&rel);
        self.store.clear_stale_temps(&stats_rel(shard));
        self.store.clear_stale_temps(&status_rel(shard));
        if self.exclusive {
            // This worker holds the shard's claim and found it incomplete: stats left by
            // a worker that died between its stats and its data commit would block ours.
            self.store.delete(&stats_rel(shard))?;
        }
        let tmp = self.store.temp_path(&rel);
        let writer = match self.format {
            OutputFormat::Parquet => Writer::Parquet(Box::new(ShardWriter::create(
                &tmp,
                &self.schema,
                self.resolution,
            )?)),
            OutputFormat::Webdataset => Writer::Tar(Box::new(webdataset::TarShardWriter::create(
                &tmp,
                &self.schema,
            )?)),
        };
        self.current = Some((shard, tmp, writer));
        Ok(())
    }

    pub fn write(&mut self, rows: &[Row]) -> Result<()> {
        match &mut self.current {
            Some((_, _, Writer::Parquet(w))) => w.write(rows),
            Some((_, _, Writer::Tar(w))) => w.write(rows),
            None => bail!("internal error: rows written before a shard began"),
        }
    }
    pub fn write_batch(&mut self, batch: &arrow_array::RecordBatch) -> Result<()> {
        match &mut self.current {
            Some((_, _, Writer::Parquet(w))) => w.write_batch(batch),
            Some((_, _, Writer::Tar(_))) => {
                bail!("Arrow rows cannot be appended to a webdataset shard")
            }
            None => bail!("internal error: rows written before a shard began"),
        }
    }

    /// Finish, hash and commit the current shard with its status rows (one per input
    /// record); returns the stats as committed.
    pub fn commit_shard(
        &mut self,
        mut stats: ShardStats,
        status: &[StatusRow],
    ) -> Result<ShardStats> {
        let Some((shard, tmp, writer)) = self.current.take() else {
            bail!("internal error: commit without a shard");
        };
        debug_assert_eq!(shard, stats.shard);
        let (rows, (bytes, sha256)) = match writer {
            Writer::Parquet(w) => w.finish()?,
            Writer::Tar(w) => w.finish()?,
        };
        stats.rows = rows;
        let rel = data_rel_as(shard, self.format);
        stats.parquet = FileInfo {
            file: rel.clone(),
            bytes,
            sha256,
        };
        let status_rel = status_rel(shard);
        let status_tmp = self.store.temp_path(&status_rel);
        let (bytes, sha256) = self::parquet::write_status(&status_tmp, status)?;
        stats.status_file = FileInfo {
            file: status_rel.clone(),
            bytes,
            sha256,
        };
        stats.worker = self.worker.clone();
        let json = serde_json::to_vec_pretty(&stats)?;
        if !self.exclusive {
            if self.store.is_remote() {
                // A rewrite of a committed shard (`--retry-failed`): objects appear whole,
                // the stats (which name the data's sha256) go last.
                self.store.commit_file(&tmp, &rel)?;
                self.store.commit_file(&status_tmp, &status_rel)?;
                self.store.put_atomic(&stats_rel(shard), &json)?;
                return Ok(stats);
            }
            self.store.commit_file(&status_tmp, &status_rel)?;
            self.store.put_atomic(&stats_rel(shard), &json)?;
            self.store.commit_file(&tmp, &rel)?;
            return Ok(stats);
        }
        let commit_stats = |json: &[u8]| -> Result<()> {
            match self.store.put_create(&stats_rel(shard), json)? {
                Created::Yes => Ok(()),
                Created::AlreadyExists => {
                    let theirs = self.store.read_opt(&stats_rel(shard))?.unwrap_or_default();
                    if theirs == json {
                        return Ok(()); // our own create, retried after a lost response
                    }
                    let by = serde_json::from_slice::<ShardStats>(&theirs)
                        .ok()
                        .and_then(|s| s.worker)
                        .unwrap_or_else(|| "unknown".into());
                    Err(LostRace { shard, by }.into())
                }
            }
        };
        if self.store.is_remote() {
            // Objects appear whole; the stats create is the commit point, so the data
            // and status objects go up first and a shard without stats is not there.
            self.store.commit_file(&status_tmp, &status_rel)?;
            self.store.commit_file(&tmp, &rel)?;
            if let Err(e) = commit_stats(&json) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        } else {
            self.store.commit_file(&status_tmp, &status_rel)?;
            if let Err(e) = commit_stats(&json) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            self.store.commit_file(&tmp, &rel)?;
        }
        Ok(stats)
    }

    /// Drop an unfinished shard's temporary file.
    pub fn abort_shard(&mut self) {
        if let Some((_, tmp, writer)) = self.current.take() {
            drop(writer);
            let _ = std::fs::remove_file(tmp);
        }
    }
}

impl Drop for ParquetSink {
    fn drop(&mut self) {
        self.abort_shard();
    }
}

/// A shard file being written: every byte that reaches the file also goes through
/// SHA-256, so the commit knows the file's size and digest without reading it back (the
/// hash runs while rows stream in, not in a pass over the whole shard at the end).
pub struct HashingFile {
    file: std::fs::File,
    hasher: Sha256,
    bytes: u64,
    /// Bytes whose writeback to disk has been started (see `write`).
    flushing: u64,
}

/// Start the disk writeback of a shard every this many bytes written.
const WRITEBACK_EVERY: u64 = 16 << 20;

impl HashingFile {
    pub fn create(path: &std::path::Path) -> Result<Self> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(HashingFile {
            file,
            hasher: Sha256::new(),
            bytes: 0,
            flushing: 0,
        })
    }

    /// Size and hex SHA-256 of everything written.
    pub fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl std::io::Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if self.bytes - self.flushing >= WRITEBACK_EVERY {
            // Have the kernel start writing what is there to disk now (it does not wait),
            // so the fsync at the commit finds little left: without this, an 80-170 MB
            // shard's whole writeback (~40-80 ms here) ran after the last row.
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd;
                // SAFETY: a plain syscall on our own open descriptor; a failure only
                // means the fsync at the commit does all the work, as before.
                unsafe {
                    libc::sync_file_range(
                        self.file.as_raw_fd(),
                        self.flushing as libc::off64_t,
                        (self.bytes - self.flushing) as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                }
            }
            self.flushing = self.bytes;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Read every committed stats file of shards `0..num_shards` (missing ones are skipped).
pub fn read_all_stats(store: &OutStore, num_shards: usize) -> Result<Vec<ShardStats>> {
    let mut out = Vec::new();
    for k in 0..num_shards {
        let rel = stats_rel(k);
        let Some(bytes) = store.read_opt(&rel)? else {
            continue;
        };
        let s: ShardStats = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a valid stats file", store.display_rel(&rel)))?;
        if store.exists(&s.parquet.file) {
            out.push(s);
        }
    }
    Ok(out)
}
