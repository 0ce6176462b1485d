//! `OUT/dataset.json`: what was built, how, and from what.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::BuildConfig;
use crate::sink::{FileInfo, OutStore, ShardStats};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardEntry {
    pub index: usize,
    pub rows: usize,
    #[serde(flatten)]
    pub file: FileInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceEntry {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub schema_version: u32,
    pub prep_version: String,
    /// The command line of the run that last wrote this file.
    pub command: Vec<String>,
    pub config: BuildConfig,
    pub fingerprint: String,
    pub source: SourceEntry,
    pub conditions: Vec<String>,
    pub columns: Vec<String>,
    /// Input records seen (after `--limit`).
    pub num_records: u64,
    pub num_shards: usize,
    /// Every shard `0..num_shards` is committed.
    pub complete: bool,
    pub rows: usize,
    pub failed: BTreeMap<String, usize>,
    pub filtered: BTreeMap<String, usize>,
    pub shards: Vec<ShardEntry>,
    /// When this output directory was first written (RFC 3339, UTC).
    pub created_at: String,
}

pub const MANIFEST: &str = "dataset.json";

pub fn read(store: &OutStore) -> Result<Option<Manifest>> {
    read_named(store, MANIFEST)
}

/// Read a manifest-shaped file (`dataset.json`, or `plan.json` written by coordinated runs).
pub fn read_named(store: &OutStore, name: &str) -> Result<Option<Manifest>> {
    let Some(bytes) = store.read_opt(name)? else {
        return Ok(None);
    };
    let m = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a prep dataset manifest; is --out pointing at the right directory?",
            store.display_rel(name)
        )
    })?;
    Ok(Some(m))
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Sum the stats into shard entries and totals.
pub fn totals(
    stats: &[ShardStats],
) -> (
    Vec<ShardEntry>,
    usize,
    BTreeMap<String, usize>,
    BTreeMap<String, usize>,
) {
    let mut failed = BTreeMap::new();
    let mut filtered = BTreeMap::new();
    let mut rows = 0;
    let mut shards = Vec::new();
    for s in stats {
        rows += s.rows;
        for (k, v) in &s.failed {
            *failed.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &s.filtered {
            *filtered.entry(k.clone()).or_insert(0) += v;
        }
        shards.push(ShardEntry {
            index: s.shard,
            rows: s.rows,
            file: s.parquet.clone(),
        });
    }
    (shards, rows, failed, filtered)
}

/// Write the manifest unless an identical one (ignoring `created_at` and `command`) is
/// already there, so a re-run that builds nothing rewrites nothing. Returns whether it wrote.
pub fn write_if_changed(store: &OutStore, mut m: Manifest) -> Result<bool> {
    if let Some(old) = read(store).ok().flatten() {
        m.created_at = old.created_at.clone();
        let mut cmp = m.clone();
        cmp.command = old.command.clone();
        if cmp == old {
            return Ok(false);
        }
    }
    let json = serde_json::to_vec_pretty(&m)?;
    store.put_atomic(MANIFEST, &json)?;
    Ok(true)
}
