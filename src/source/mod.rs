//! Sources: where records come from.
//!
//! Architecture invariant: a source reads metadata and annotations only. It never reads
//! or decodes image bytes (the loader stage does), and it yields records in a
//! deterministic order, so shard `k` always holds the same records.

mod coco;
pub(crate) mod demo;
/// The cache directory shared by the demo data, models and feature cache.
pub use demo::cache_dir;
mod folder;
mod laion;

use anyhow::Result;

use crate::config::{BuildConfig, SourceKind};
use crate::input_store::Input;
use crate::record::{MetaType, Record};
use crate::sink::remote::RemoteOptions;

pub use coco::CocoSource;
pub use folder::FolderSource;
pub use laion::LaionSource;

/// What a source provides, known before any record is read.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// `coco`, `folder`, `laion` or `demo`: the `source` column.
    pub name: &'static str,
    /// Extra columns every record carries, in order (see [`Record::meta`]).
    pub meta_columns: Vec<(String, MetaType)>,
    /// Records carry ground-truth keypoints ([`crate::record::Annotations::persons`]).
    pub has_keypoints: bool,
    /// Records carry COCO-Stuff label maps.
    pub has_seg: bool,
    /// Images come over HTTP(S): the loader uses the download stage.
    pub remote: bool,
    /// The number of records, when cheap to know.
    pub size_hint: Option<u64>,
    /// A one-line description for the plan and dataset.json.
    pub description: String,
    /// The object store `--input` is read from, if any (its request counts are reported).
    pub input_store: Option<std::sync::Arc<crate::sink::remote::Remote>>,
}

pub type RecordIter = Box<dyn Iterator<Item = Result<Record>> + Send>;

pub trait Source: Send {
    fn info(&self) -> &SourceInfo;
    /// Consume the source into its record stream. An `Err` item is a fatal input error
    /// (a malformed metadata row, an unreadable file) and stops the run.
    fn records(self: Box<Self>) -> Result<RecordIter>;
}

/// Open the source a config names. Fails fast, before any output is written, when the
/// input is missing or malformed or cannot serve the requested conditions.
/// `--input` may be a local path or an object-store URL (`remote`: how URLs are opened).
pub fn open(cfg: &BuildConfig, remote: &RemoteOptions) -> Result<Box<dyn Source>> {
    let src: Box<dyn Source> = match cfg.source {
        SourceKind::Coco => Box::new(CocoSource::open(cfg, required_input(cfg, remote)?, "coco")?),
        SourceKind::Demo => Box::new(demo::open(cfg)?),
        SourceKind::Folder => Box::new(FolderSource::open(required_input(cfg, remote)?)?),
        SourceKind::Laion => Box::new(LaionSource::open(cfg, required_input(cfg, remote)?)?),
    };
    Ok(src)
}

fn required_input(cfg: &BuildConfig, remote: &RemoteOptions) -> Result<Input> {
    let p = cfg
        .input
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--source {} needs --input", cfg.source.name()))?;
    Input::open(p, remote)
}
