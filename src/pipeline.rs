//! `prep build`: the streaming pipeline.
//!
//! ```text
//! source thread ──(bounded)──▶ loader (tokio, ordered, N in flight) ──(bounded)──▶
//!   CPU stage (rayon: decode → geometry → conditions → encode, chunks in order) ──(bounded)──▶
//!   sink thread (Parquet shard writer, atomic commit)
//! ```
//!
//! Records are numbered in source order and shard `k` holds records
//! `[k·S, (k+1)·S)`. Every channel is bounded, so at most a few chunks of records are in
//! memory whatever the dataset's size. Rows keep source order end to end, so the same
//! inputs and settings give byte-identical Parquet, however many threads run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use image::GrayImage;
use rayon::prelude::*;

mod model_stage;

use crate::condition::model::{ModelSet, Pending};
use crate::condition::{self, ConditionKind, ConditionSettings, Prepared};
use crate::config::{BuildConfig, ShardSelector};
use crate::error::RowFailure;
use crate::imaging::{decode::decode_rgb, encode, geometry::Geometry};
use crate::load::Loader;
use crate::manifest::{self, Manifest, SourceEntry};
use crate::record::{ImageRef, Person, Record};
use crate::sink::{
    self, DatasetSchema, FailureEntry, FileInfo, LocalStore, ParquetSink, Row, ShardStats,
};
use crate::source::{self, SourceInfo};

/// Knobs that do not change the output.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub threads: Option<usize>,
    pub shard: ShardSelector,
    pub dry_run: bool,
    pub progress: bool,
    /// The command line, recorded in dataset.json.
    pub command: Vec<String>,
    /// `--model-file NAME=PATH` overrides (checked against the pins).
    pub model_files: Vec<String>,
    /// Images per inference call (`--batch-size`).
    pub batch_size: Option<usize>,
    pub device: crate::runtime::Device,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct BuildSummary {
    pub num_records: u64,
    pub num_shards: usize,
    /// Shards this run built.
    pub built: Vec<usize>,
    /// Shards this run found complete and skipped.
    pub skipped: Vec<usize>,
    pub rows: usize,
    pub failed: BTreeMap<String, usize>,
    pub complete: bool,
}

/// The outcome of one record.
enum Outcome {
    /// A row; with model-backed conditions still to fill in by the model stage.
    Row(Box<Row>, Option<Box<Pending>>),
    Failed(RowFailure),
    Filtered(String),
}

/// Messages from the source thread (and passed on by the loader).
enum SourceMsg {
    Record(usize, Box<Record>),
    /// Shard `k` has ended with this many input records.
    EndShard(usize, usize),
    /// Records of a shard skipped as complete (for the progress bar).
    Skipped(usize, u64),
    Fatal(anyhow::Error),
}

enum LoadedMsg {
    Record(usize, Box<Record>, Option<Result<Vec<u8>, RowFailure>>),
    EndShard(usize, usize),
    Skipped(usize, u64),
    Fatal(anyhow::Error),
}

/// A record with its loaded bytes (`None` when it was filtered and never loaded).
type Loaded = (usize, Box<Record>, Option<Result<Vec<u8>, RowFailure>>);

enum SinkMsg {
    Begin(usize),
    Rows(Vec<(String, Outcome)>),
    End(usize, usize),
}

fn check_out_dir(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        bail!(
            "--out {} exists and is not a directory; choose another path",
            out.display()
        );
    }
    let ours = ["dataset.json", "data", "stats"]
        .iter()
        .any(|n| out.join(n).exists());
    let empty = std::fs::read_dir(out)
        .with_context(|| format!("cannot list --out {}", out.display()))?
        .next()
        .is_none();
    if !ours && !empty {
        bail!(
            "--out {} is a non-empty directory that prep did not write (no dataset.json, data/ or stats/); \
             choose a new or empty directory so nothing of yours is overwritten",
            out.display()
        );
    }
    Ok(())
}

/// Fail before building anything if the output was started with other settings.
fn check_fingerprint(store: &LocalStore, fingerprint: &str) -> Result<()> {
    if let Some(m) = manifest::read(store)? {
        if m.fingerprint != fingerprint {
            bail!(
                "{} was built with different settings ({}); use a new --out, or delete it to rebuild with these settings",
                store.root().display(),
                describe_diff(&m.config)
            );
        }
    }
    let stats_dir = store.path("stats");
    if let Ok(entries) = std::fs::read_dir(&stats_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(k) = name
                .strip_prefix("part-")
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<usize>().ok())
            {
                sink::shard_complete(store, k, fingerprint)?;
            }
        }
    }
    Ok(())
}

fn describe_diff(old: &BuildConfig) -> String {
    format!(
        "it has source {}, conditions [{}], resolution {}, {:?}, {:?}",
        old.source.name(),
        old.conditions
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(","),
        old.resolution,
        old.resize_mode,
        old.image_format
    )
}

fn dataset_schema(cfg: &BuildConfig, info: &SourceInfo) -> DatasetSchema {
    DatasetSchema {
        source: info.name.to_string(),
        image_ext: cfg.image_format.extension(),
        conditions: cfg.conditions.clone(),
        keypoints: cfg.conditions.contains(&ConditionKind::Keypose),
        meta: info.meta_columns.clone(),
    }
}

fn check_capabilities(cfg: &BuildConfig, info: &SourceInfo) -> Result<()> {
    for c in &cfg.conditions {
        match c {
            ConditionKind::Seg if !info.has_seg => bail!(
                "--condition seg needs COCO-Stuff label maps, which --source {} does not have; use --source coco with stuffthingmaps_trainval2017/ under --input",
                info.name
            ),
            ConditionKind::Keypose
                if !info.has_keypoints && cfg.keypose_from == crate::config::KeyposeFrom::Gt =>
            {
                bail!(
                "--condition keypose from ground truth needs keypoint annotations, which --source {} does not have; use --source coco with person_keypoints_*.json, or --keypose-from model",
                info.name
            )
            }
            _ => {}
        }
    }
    Ok(())
}

pub fn build(cfg: &BuildConfig, out: &Path, opts: &RunOptions) -> Result<BuildSummary> {
    // Everything that can be checked is checked before the output directory is touched.
    let src = source::open(cfg)?;
    let info = src.info().clone();
    check_capabilities(cfg, &info)?;
    check_out_dir(out)?;
    let store = LocalStore::new(out);
    let fingerprint = cfg.fingerprint();
    check_fingerprint(&store, &fingerprint)?;
    let schema = dataset_schema(cfg, &info);
    let models = if opts.dry_run {
        None
    } else {
        ModelSet::open(
            cfg,
            &opts.model_files,
            &crate::runtime::RuntimeOptions {
                threads: opts.threads,
                device: opts.device,
            },
            opts.batch_size.unwrap_or(4),
        )?
        .map(Arc::new)
    };

    if opts.dry_run {
        print_plan(cfg, out, opts, &info, &schema, &store, &fingerprint);
        return Ok(BuildSummary::default());
    }

    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create --out {}", out.display()))?;
    let sink = ParquetSink::new(store.clone(), schema.clone(), cfg.resolution)?;
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads.unwrap_or(0))
            .thread_name(|i| format!("prep-cpu-{i}"))
            .build()
            .context("cannot start the worker threads")?,
    );
    let threads = pool.current_num_threads();
    let loader = Loader::new(
        info.name == "laion",
        Duration::from_secs_f64(cfg.timeout_secs),
        cfg.concurrency,
    )?;

    let progress = make_progress(opts, &info, cfg);
    let stop = Arc::new(AtomicBool::new(false));

    // Stage 1: source → records, assigned to shards; complete or foreign shards skipped.
    let (src_tx, mut src_rx) = tokio::sync::mpsc::channel::<SourceMsg>(256);
    let producer = {
        let store = store.clone();
        let fingerprint = fingerprint.clone();
        let shard_size = cfg.shard_size;
        let limit = cfg.limit;
        let selector = opts.shard;
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("prep-source".into())
            .spawn(move || {
                produce(
                    src,
                    store,
                    fingerprint,
                    shard_size,
                    limit,
                    selector,
                    src_tx,
                    stop,
                )
            })?
    };

    // Stage 2: loader on a tokio runtime, order kept, `concurrency` loads in flight.
    let (load_tx, mut load_rx) = tokio::sync::mpsc::channel::<LoadedMsg>(threads * 8 + 16);
    let loader_thread = {
        let loader = loader.clone();
        std::thread::Builder::new()
            .name("prep-load".into())
            .spawn(move || -> Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .context("cannot start the I/O runtime")?;
                rt.block_on(async move {
                    use futures_util::StreamExt;
                    let input = futures_util::stream::poll_fn(move |cx| src_rx.poll_recv(cx));
                    let l2 = loader.clone();
                    let mut loaded = Box::pin(loader.ordered(input, move |msg| {
                        let l = l2.clone();
                        async move {
                            match msg {
                                SourceMsg::Record(k, rec) => {
                                    let bytes = if rec.filtered.is_some() {
                                        None
                                    } else {
                                        Some(l.load(&rec.image).await)
                                    };
                                    LoadedMsg::Record(k, rec, bytes)
                                }
                                SourceMsg::EndShard(k, n) => LoadedMsg::EndShard(k, n),
                                SourceMsg::Skipped(k, n) => LoadedMsg::Skipped(k, n),
                                SourceMsg::Fatal(e) => LoadedMsg::Fatal(e),
                            }
                        }
                    }));
                    while let Some(m) = loaded.next().await {
                        if load_tx.send(m).await.is_err() {
                            break; // downstream stopped
                        }
                    }
                });
                Ok(())
            })?
    };

    // Stage 4: the sink thread.
    let (sink_tx, sink_rx) = crossbeam_channel::bounded::<SinkMsg>(2);
    let sink_thread = {
        let fingerprint = fingerprint.clone();
        std::thread::Builder::new()
            .name("prep-sink".into())
            .spawn(move || run_sink(sink, sink_rx, fingerprint))?
    };
    // Stage 3b (model-backed conditions): inference on its own thread, then decoding and
    // PNG encoding on the CPU pool, so the network runs while the pool decodes the next
    // chunk and encodes the previous one.
    let (sink_tx, model_threads) = match &models {
        None => (sink_tx, None),
        Some(m) => {
            let (tx, handles) = model_stage::spawn(m.clone(), pool.clone(), sink_tx)?;
            (tx, Some(handles))
        }
    };

    // Stage 3: CPU work on this thread's pool, in chunks that never straddle shards.
    let ctx = Ctx {
        cfg: cfg.clone(),
        settings: ConditionSettings {
            max_persons: cfg.max_persons,
        },
        models: models.clone(),
    };
    let chunk_size = threads * 4;
    let mut chunk: Vec<Loaded> = Vec::new();
    let mut fatal: Option<anyhow::Error> = None;
    let mut skipped = Vec::new();
    let mut current: Option<usize> = None;
    let mut failures = 0usize;
    let flush = |chunk: &mut Vec<Loaded>, failures: &mut usize| -> bool {
        if chunk.is_empty() {
            return true;
        }
        let items = std::mem::take(chunk);
        let outcomes: Vec<(String, Outcome)> = pool.install(|| {
            items
                .into_par_iter()
                .map(|(_, rec, bytes)| {
                    let key = rec.key.clone();
                    (key, ctx.process(&rec, bytes))
                })
                .collect()
        });
        *failures += outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
            .count();
        if let Some(pb) = &progress {
            pb.inc(outcomes.len() as u64);
            if *failures > 0 {
                pb.set_message(format!("{failures} failed"));
            }
        }
        sink_tx.send(SinkMsg::Rows(outcomes)).is_ok()
    };
    while let Some(msg) = load_rx.blocking_recv() {
        match msg {
            LoadedMsg::Record(k, rec, bytes) => {
                if current != Some(k) {
                    current = Some(k);
                    if sink_tx.send(SinkMsg::Begin(k)).is_err() {
                        break;
                    }
                }
                chunk.push((k, rec, bytes));
                if chunk.len() >= chunk_size && !flush(&mut chunk, &mut failures) {
                    break;
                }
            }
            LoadedMsg::EndShard(k, n) => {
                if current != Some(k) && sink_tx.send(SinkMsg::Begin(k)).is_err() {
                    break;
                }
                if !flush(&mut chunk, &mut failures) || sink_tx.send(SinkMsg::End(k, n)).is_err() {
                    break;
                }
                current = None;
            }
            LoadedMsg::Skipped(k, n) => {
                skipped.push(k);
                if let Some(pb) = &progress {
                    pb.inc(n);
                }
            }
            LoadedMsg::Fatal(e) => {
                fatal = Some(e);
                break;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    drop(load_rx);
    drop(sink_tx);
    let model_result = match model_threads {
        Some(h) => h.join(),
        None => Ok(()),
    };
    let sink_result = sink_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the sink thread panicked"))?;
    let _ = loader_thread.join();
    let produced = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the source thread panicked"))?;
    if let Some(pb) = &progress {
        pb.finish_and_clear();
    }
    model_result?;
    if let Some(e) = fatal {
        return Err(e.context("stopped; shards committed before this point are complete and will be skipped on the next run"));
    }
    let built = sink_result?;
    let num_records = produced?;
    if num_records == 0 {
        bail!(
            "the source yielded no records ({}); nothing to build",
            info.description
        );
    }
    let num_shards = (num_records as usize).div_ceil(cfg.shard_size);

    let all = sink::read_all_stats(&store, num_shards)?;
    let complete = all.len() == num_shards;
    let (shards, rows, failed, filtered) = manifest::totals(&all);
    let m = Manifest {
        schema_version: sink::SCHEMA_VERSION,
        prep_version: env!("CARGO_PKG_VERSION").to_string(),
        command: opts.command.clone(),
        config: cfg.clone(),
        fingerprint,
        source: SourceEntry {
            name: info.name.to_string(),
            description: info.description.clone(),
        },
        conditions: cfg
            .conditions
            .iter()
            .map(|c| c.name().to_string())
            .collect(),
        columns: schema
            .arrow_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
        num_records,
        num_shards,
        complete,
        rows,
        failed: failed.clone(),
        filtered,
        shards,
        created_at: manifest::now_rfc3339(),
    };
    manifest::write_if_changed(&store, m)?;
    let mut run_failed = BTreeMap::new();
    let mut run_rows = 0;
    for s in all.iter().filter(|s| built.contains(&s.shard)) {
        run_rows += s.rows;
        for (k, v) in &s.failed {
            *run_failed.entry(k.clone()).or_insert(0) += v;
        }
    }
    Ok(BuildSummary {
        num_records,
        num_shards,
        built,
        skipped,
        rows: run_rows,
        failed: run_failed,
        complete,
    })
}

#[allow(clippy::too_many_arguments)]
fn produce(
    src: Box<dyn source::Source>,
    store: LocalStore,
    fingerprint: String,
    shard_size: usize,
    limit: Option<u64>,
    selector: ShardSelector,
    tx: tokio::sync::mpsc::Sender<SourceMsg>,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let records = match src.records() {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.blocking_send(SourceMsg::Fatal(e));
            return Ok(0);
        }
    };
    let mut n: u64 = 0;
    // Per shard: Some(true) build, Some(false) skip (complete or another process's).
    let mut decision: Option<(usize, bool, bool)> = None; // (shard, build, complete)
    let mut in_shard = 0usize;
    let end = |decision: &Option<(usize, bool, bool)>, in_shard: usize| -> Option<SourceMsg> {
        match decision {
            Some((k, true, _)) => Some(SourceMsg::EndShard(*k, in_shard)),
            Some((k, false, true)) => Some(SourceMsg::Skipped(*k, in_shard as u64)),
            _ => None,
        }
    };
    for item in records {
        if stop.load(Ordering::Relaxed) {
            return Ok(n);
        }
        if limit.is_some_and(|l| n >= l) {
            break;
        }
        let rec = match item {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(SourceMsg::Fatal(e));
                return Ok(n);
            }
        };
        let k = (n as usize) / shard_size;
        if decision.map(|d| d.0) != Some(k) {
            if let Some(msg) = end(&decision, in_shard) {
                if tx.blocking_send(msg).is_err() {
                    return Ok(n);
                }
            }
            let complete = if selector.takes(k) {
                match sink::shard_complete(&store, k, &fingerprint) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.blocking_send(SourceMsg::Fatal(e));
                        return Ok(n);
                    }
                }
            } else {
                false
            };
            decision = Some((k, selector.takes(k) && !complete, complete));
            in_shard = 0;
        }
        in_shard += 1;
        n += 1;
        if let Some((_, true, _)) = decision {
            if tx
                .blocking_send(SourceMsg::Record(k, Box::new(rec)))
                .is_err()
            {
                return Ok(n);
            }
        }
    }
    if let Some(msg) = end(&decision, in_shard) {
        let _ = tx.blocking_send(msg);
    }
    Ok(n)
}

fn run_sink(
    mut sink: ParquetSink,
    rx: crossbeam_channel::Receiver<SinkMsg>,
    fingerprint: String,
) -> Result<Vec<usize>> {
    let mut built = Vec::new();
    let mut stats: Option<(ShardStats, Instant)> = None;
    for msg in rx {
        match msg {
            SinkMsg::Begin(k) => {
                sink.begin_shard(k)?;
                stats = Some((
                    ShardStats {
                        shard: k,
                        prep_version: env!("CARGO_PKG_VERSION").to_string(),
                        fingerprint: fingerprint.clone(),
                        input_rows: 0,
                        rows: 0,
                        failed: BTreeMap::new(),
                        filtered: BTreeMap::new(),
                        failures: Vec::new(),
                        seconds: 0.0,
                        parquet: FileInfo {
                            file: String::new(),
                            bytes: 0,
                            sha256: String::new(),
                        },
                    },
                    Instant::now(),
                ));
            }
            SinkMsg::Rows(outcomes) => {
                let Some((s, _)) = stats.as_mut() else {
                    bail!("internal error: rows before a shard began");
                };
                let mut rows = Vec::new();
                for (key, o) in outcomes {
                    match o {
                        Outcome::Row(r, _) => rows.push(*r),
                        Outcome::Failed(f) => {
                            *s.failed.entry(f.class.clone()).or_insert(0) += 1;
                            s.failures.push(FailureEntry {
                                key,
                                class: f.class,
                                detail: f.detail,
                            });
                        }
                        Outcome::Filtered(reason) => {
                            *s.filtered.entry(reason).or_insert(0) += 1;
                        }
                    }
                }
                sink.write(&rows)?;
            }
            SinkMsg::End(k, n) => {
                let Some((mut s, t0)) = stats.take() else {
                    bail!("internal error: end of shard {k} before it began");
                };
                s.input_rows = n;
                s.seconds = (t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
                sink.commit_shard(s)?;
                built.push(k);
            }
        }
    }
    // Channel closed: an unfinished shard (fatal error, Ctrl-C) is discarded by Drop.
    sink.abort_shard();
    Ok(built)
}

struct Ctx {
    cfg: BuildConfig,
    settings: ConditionSettings,
    models: Option<Arc<ModelSet>>,
}

impl Ctx {
    fn process(&self, rec: &Record, bytes: Option<Result<Vec<u8>, RowFailure>>) -> Outcome {
        if let Some(reason) = &rec.filtered {
            return Outcome::Filtered(reason.clone());
        }
        let Some(bytes) = bytes else {
            return Outcome::Failed(RowFailure::new("internal", "no bytes loaded"));
        };
        match bytes.and_then(|b| self.build_row(rec, &b)) {
            Ok(Some((row, pending))) => Outcome::Row(Box::new(row), pending.map(Box::new)),
            Ok(None) => Outcome::Filtered("min_size".into()),
            Err(f) => Outcome::Failed(f),
        }
    }

    /// `Ok(None)`: dropped by `--min-size` after decoding.
    /// With model-backed conditions, their columns are left empty and the model inputs
    /// returned for the model stage.
    fn build_row(
        &self,
        rec: &Record,
        bytes: &[u8],
    ) -> Result<Option<(Row, Option<Pending>)>, RowFailure> {
        let cfg = &self.cfg;
        let src = decode_rgb(bytes, cfg.max_pixels).map_err(|f| with_where(f, &rec.image))?;
        let (w, h) = src.dimensions();
        if let Some(min) = cfg.filters.min_size {
            if w < min || h < min {
                return Ok(None);
            }
        }
        let geo = Geometry::new(cfg.resize_mode, cfg.resolution, w, h);
        let rgb = geo.apply_rgb(&src);
        drop(src);
        let persons = rec.annotations.persons.as_ref().map(|ps| {
            ps.iter()
                .map(|p| {
                    let mut keypoints = p.keypoints;
                    for kp in keypoints.iter_mut() {
                        if kp[2] > 0.0 {
                            let (x, y) = geo.map_point(kp[0], kp[1]);
                            kp[0] = x;
                            kp[1] = y;
                        }
                    }
                    Person { keypoints }
                })
                .collect::<Vec<_>>()
        });
        let labels = if cfg.conditions.contains(&ConditionKind::Seg) {
            match &rec.annotations.seg_map {
                Some(path) => Some(geo.apply_labels(&load_labels(path)?)),
                None => None,
            }
        } else {
            None
        };
        let prepared = Prepared {
            rgb,
            persons,
            labels,
        };
        let mut conditions = Vec::with_capacity(cfg.conditions.len());
        let pending = self.models.as_ref().map(|m| m.prepare(&prepared.rgb));
        for (slot, &kind) in cfg.conditions.iter().enumerate() {
            if self.models.as_ref().is_some_and(|m| m.handles(slot)) {
                conditions.push(Vec::new());
                continue;
            }
            let map = condition::compute(kind, &prepared, &self.settings)?;
            let (mw, mh) = map.dimensions();
            conditions.push(encode::encode_png(map.as_raw(), mw, mh, map.channels())?);
        }
        let (ow, oh) = prepared.rgb.dimensions();
        let image = encode::encode(
            prepared.rgb.as_raw(),
            ow,
            oh,
            3,
            cfg.image_format,
            cfg.jpeg_quality,
        )?;
        let keypoints = if cfg.conditions.contains(&ConditionKind::Keypose) {
            prepared.persons.as_ref().map(|ps| {
                ps.iter()
                    .map(|p| p.keypoints.iter().flatten().copied().collect())
                    .collect()
            })
        } else {
            None
        };
        Ok(Some((
            Row {
                key: rec.key.clone(),
                image,
                text: rec.text().to_string(),
                captions: rec.captions.clone(),
                conditions,
                width: ow,
                height: oh,
                keypoints,
                meta: rec.meta.clone(),
            },
            pending,
        )))
    }
}

fn with_where(mut f: RowFailure, image: &ImageRef) -> RowFailure {
    let place = image.display();
    if !f.detail.contains(&place) {
        f.detail = format!("{place}: {}", f.detail);
    }
    f
}

/// A COCO-Stuff label map: 8-bit, one channel (values are labels, never colours).
fn load_labels(path: &PathBuf) -> Result<GrayImage, RowFailure> {
    let bytes = std::fs::read(path).map_err(|e| {
        let class = if e.kind() == std::io::ErrorKind::NotFound {
            "seg_map_missing"
        } else {
            "seg_map_unreadable"
        };
        RowFailure::new(class, format!("{}: {e}", path.display()))
    })?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| RowFailure::new("seg_map_unreadable", format!("{}: {e}", path.display())))?;
    match img {
        image::DynamicImage::ImageLuma8(g) => Ok(g),
        other => Err(RowFailure::new(
            "seg_map_unreadable",
            format!(
                "{}: a label map must be 8-bit single-channel (COCO-Stuff stuffthingmaps), got {:?}",
                path.display(),
                other.color()
            ),
        )),
    }
}

fn make_progress(
    opts: &RunOptions,
    info: &SourceInfo,
    cfg: &BuildConfig,
) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !opts.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let total = info.size_hint.map(|n| cfg.limit.map_or(n, |l| n.min(l)));
    let pb = match (total, opts.shard.count) {
        (Some(n), 1) => indicatif::ProgressBar::new(n),
        _ => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} records  {per_sec}  ETA {eta}  {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    pb.enable_steady_tick(Duration::from_millis(200));
    Some(pb)
}

fn print_plan(
    cfg: &BuildConfig,
    out: &Path,
    opts: &RunOptions,
    info: &SourceInfo,
    schema: &DatasetSchema,
    store: &LocalStore,
    fingerprint: &str,
) {
    println!("plan (dry run, nothing written):");
    println!("  source       {}", info.description);
    println!("  output       {}", out.display());
    println!(
        "  conditions   {}",
        if cfg.conditions.is_empty() {
            "(none)".to_string()
        } else {
            cfg.conditions
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "  images       {}px {:?}, {:?}",
        cfg.resolution, cfg.resize_mode, cfg.image_format
    );
    let cols: Vec<String> = schema
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    println!("  columns      {}", cols.join(", "));
    match info.size_hint {
        Some(n) => {
            let n = cfg.limit.map_or(n, |l| n.min(l));
            let shards = (n as usize).div_ceil(cfg.shard_size);
            let mine: Vec<usize> = (0..shards).filter(|&k| opts.shard.takes(k)).collect();
            let done = mine
                .iter()
                .filter(|&&k| sink::shard_complete(store, k, fingerprint).unwrap_or(false))
                .count();
            println!(
                "  records      {n} in {shards} shard(s) of {}; this process takes {} ({} already complete)",
                cfg.shard_size,
                mine.len(),
                done
            );
        }
        None => println!(
            "  records      unknown until read (streamed); shards of {}",
            cfg.shard_size
        ),
    }
    println!("  fingerprint  {}", &fingerprint[..16]);
}
