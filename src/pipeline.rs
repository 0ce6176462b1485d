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
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use image::GrayImage;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

mod model_stage;

use crate::condition::model::{ModelSet, Pending};
use crate::condition::{self, ConditionKind, ConditionSettings, Prepared};
use crate::config::{BuildConfig, ShardSelector};
use crate::error::RowFailure;
use crate::fetch::Fetched;
use crate::imaging::decode::{decode_rgb, decode_rgb_reduced};
use crate::imaging::{encode, geometry::Geometry};
use crate::load::Loader;
use crate::manifest::{self, Manifest, SourceEntry};
use crate::record::{ImageRef, Person, Record};
use crate::sink::{
    self, DatasetSchema, FailureEntry, FileInfo, OutStore, ParquetSink, Row, ShardStats, StatusRow,
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
    /// `--shard auto`: claim shards through leases until none is left.
    pub auto: bool,
    /// `--lease`: how long a claim lives without a heartbeat renewal.
    pub lease: Duration,
    /// `--s3-endpoint`, `--unsafe-no-conditional-put`.
    pub remote: sink::remote::RemoteOptions,
}

/// Default `--lease`: renewed every third of it, so a worker must stall for 40 s before
/// another takes its shard.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

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
    /// Shards left alone because another worker's live claim held them.
    pub busy: Vec<usize>,
    /// Shards this worker built but another worker committed first (discarded).
    pub lost: Vec<usize>,
}

/// The outcome of one record.
enum Outcome {
    /// A row; with model-backed conditions still to fill in by the model stage.
    Row(Box<Row>, Option<Box<Pending>>),
    Failed(RowFailure),
    Filtered(String),
}

/// A record's outcome with what the status table records about it.
struct Processed {
    key: String,
    url: String,
    outcome: Outcome,
    http_status: Option<u16>,
    attempts: u32,
    /// Bytes loaded (downloaded or read) for this record.
    bytes: u64,
}

/// Live counters behind the progress bar and the error-class warnings.
struct Live {
    started: Instant,
    done: u64,
    ok: u64,
    bytes: u64,
    classes: BTreeMap<String, u64>,
    warned: std::collections::HashSet<String>,
}

/// Warn when one failure class reaches this share of the rows seen (after `WARN_MIN` rows).
const WARN_SHARE: f64 = 0.2;
const WARN_MIN: u64 = 50;

impl Live {
    fn new() -> Self {
        Live {
            started: Instant::now(),
            done: 0,
            ok: 0,
            bytes: 0,
            classes: BTreeMap::new(),
            warned: std::collections::HashSet::new(),
        }
    }

    fn update(&mut self, outcomes: &[Processed], pb: Option<&indicatif::ProgressBar>) {
        for p in outcomes {
            self.done += 1;
            self.bytes += p.bytes;
            match &p.outcome {
                Outcome::Row(..) => self.ok += 1,
                Outcome::Failed(f) => *self.classes.entry(f.class.clone()).or_insert(0) += 1,
                Outcome::Filtered(_) => {}
            }
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let mut top: Vec<(&String, &u64)> = self.classes.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = top
            .iter()
            .take(3)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if let Some(pb) = pb {
            pb.inc(outcomes.len() as u64);
            pb.set_message(format!(
                "{:.1} MB/s, {:.1}% ok{}",
                self.bytes as f64 / secs / 1e6,
                100.0 * self.ok as f64 / self.done.max(1) as f64,
                if top.is_empty() {
                    String::new()
                } else {
                    format!(", errors: {}", top.join(", "))
                }
            ));
        }
        if self.done >= WARN_MIN {
            for (class, n) in &self.classes {
                let share = *n as f64 / self.done as f64;
                if share >= WARN_SHARE && self.warned.insert(class.clone()) {
                    let hint = match class.as_str() {
                        "dns" => " — check the resolver (/etc/resolv.conf) or lower --concurrency",
                        "timeout" | "connect" => " — the network or the hosts are slow: raise --timeout or lower --per-host-concurrency",
                        "http_429" | "http_503" => " — hosts are rate limiting: lower --per-host-concurrency",
                        "blocked_address" => " — URLs point at refused addresses (see --allow-network)",
                        _ => "",
                    };
                    let msg = format!(
                        "warning: {:.0}% of the {} rows so far failed with {class}{hint}",
                        share * 100.0,
                        self.done
                    );
                    match pb {
                        Some(pb) => pb.println(msg),
                        None => eprintln!("{msg}"),
                    }
                }
            }
        }
    }
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
    Record(usize, Box<Record>, Option<Fetched>),
    EndShard(usize, usize),
    Skipped(usize, u64),
    Fatal(anyhow::Error),
}

/// A record with its loaded bytes (`None` when it was filtered and never loaded).
type Loaded = (usize, Box<Record>, Option<Fetched>);

enum SinkMsg {
    Begin(usize),
    Rows(Vec<Processed>),
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
/// Remotely, returns the shards whose stats (the commit point) are listed: they are
/// complete without a GET and two HEADs each, which matters at millions of shards.
fn check_fingerprint(
    store: &OutStore,
    fingerprint: &str,
) -> Result<Option<std::collections::HashSet<usize>>> {
    for m in [
        manifest::read(store)?,
        manifest::read_named(store, crate::scaleout::PLAN)?,
    ]
    .into_iter()
    .flatten()
    {
        if m.fingerprint != fingerprint {
            bail!(
                "{} was built with different settings ({}); use a new --out, or delete it to rebuild with these settings",
                store.display(),
                describe_diff(&m.config)
            );
        }
    }
    let listed: Vec<usize> = store
        .list("stats")?
        .iter()
        .filter_map(|name| {
            name.strip_prefix("stats/part-")
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<usize>().ok())
        })
        .collect();
    if !store.is_remote() {
        for &k in &listed {
            sink::shard_complete(store, k, fingerprint)?;
        }
        return Ok(None);
    }
    // Remote: the first and last committed shards stand for the rest (the plan's
    // fingerprint was checked above); every other shard is checked when it comes up.
    let mut done = std::collections::HashSet::new();
    for (i, &k) in listed.iter().enumerate() {
        if (i == 0 || i + 1 == listed.len()) && !sink::shard_complete(store, k, fingerprint)? {
            continue;
        }
        done.insert(k);
    }
    Ok(Some(done))
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

/// `--s3-endpoint` may be there for an object-store `--input` while `--out` is local.
fn out_options(
    cfg: &BuildConfig,
    out: &Path,
    remote: &sink::remote::RemoteOptions,
) -> sink::remote::RemoteOptions {
    let url = |p: &Path| sink::remote::is_url(&p.to_string_lossy());
    let mut o = remote.clone();
    if cfg.input.as_deref().is_some_and(url) && !url(out) {
        o.s3_endpoint = None;
    }
    o
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
    let src = source::open(cfg, &opts.remote)?;
    let info = src.info().clone();
    check_capabilities(cfg, &info)?;
    let store = OutStore::open(out, &out_options(cfg, out, &opts.remote))?;
    if !store.is_remote() {
        check_out_dir(out)?;
    }
    let fingerprint = cfg.fingerprint();
    let committed = check_fingerprint(&store, &fingerprint)?;
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
            opts.batch_size.unwrap_or(match opts.device {
                // On CPU a batch only adds latency and memory: ONNX Runtime's CPU kernels
                // run one image as fast per image (the depth bench: 51 vs 48 images/s).
                crate::runtime::Device::Cpu => 1,
                crate::runtime::Device::Cuda => 4,
            }),
        )?
        .map(Arc::new)
    };

    if opts.dry_run {
        print_plan(cfg, out, opts, &info, &schema, &store, &fingerprint);
        return Ok(BuildSummary::default());
    }

    if !store.is_remote() {
        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create --out {}", out.display()))?;
    }
    // Several workers may share this output: shards are claimed through leases and
    // committed with a create that never replaces.
    let coordinated = store.is_remote() || opts.auto;
    let leases = coordinated.then(|| crate::lease::Leases::new(store.clone(), opts.lease));
    let worker = match &leases {
        Some(l) => l.owner().to_string(),
        None => crate::lease::worker_id().to_string(),
    };
    let sink = ParquetSink::new(
        store.clone(),
        schema.clone(),
        cfg.resolution,
        cfg.output_format,
    )?
    .exclusive(coordinated)
    .worker(Some(worker));
    // With a model on the CPU, inference and the CPU stage share the cores. The model is
    // the bottleneck, so every pipeline thread but inference (source, loader, CPU pool,
    // sink) runs at the lowest scheduling priority: they fill the gaps ONNX Runtime leaves
    // (its threads block, not spin, when idle) instead of preempting its intra-op threads
    // mid-operator, which stalls the whole parallel region.
    let background = models.is_some() && opts.device == crate::runtime::Device::Cpu;
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads.unwrap_or(0))
            .thread_name(|i| format!("prep-cpu-{i}"))
            .start_handler(move |_| {
                if background {
                    crate::runtime::lower_thread_priority();
                }
            })
            .build()
            .context("cannot start the worker threads")?,
    );
    let threads = pool.current_num_threads();
    let has_urls = info.remote;
    let loader = Loader::new(
        if has_urls {
            Some(cfg.fetch.settings()?)
        } else {
            None
        },
        if has_urls {
            cfg.fetch.concurrency
        } else {
            (threads * 4).max(8)
        },
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
        let leases = leases.clone();
        let committed = committed.clone();
        std::thread::Builder::new()
            .name("prep-source".into())
            .spawn(move || {
                if background {
                    crate::runtime::lower_thread_priority();
                }
                produce(
                    src,
                    store,
                    fingerprint,
                    shard_size,
                    limit,
                    selector,
                    leases,
                    committed,
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
                if background {
                    crate::runtime::lower_thread_priority();
                }
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .on_thread_start(move || {
                        if background {
                            crate::runtime::lower_thread_priority();
                        }
                    })
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
                                    let fetched = if rec.filtered.is_some() {
                                        None
                                    } else {
                                        Some(l.load(&rec.image).await)
                                    };
                                    LoadedMsg::Record(k, rec, fetched)
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
        let dedup = cfg.dedup;
        let leases = leases.clone();
        std::thread::Builder::new()
            .name("prep-sink".into())
            .spawn(move || {
                if background {
                    crate::runtime::lower_thread_priority();
                }
                run_sink(sink, sink_rx, fingerprint, dedup, leases)
            })?
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
    // With a model, the first chunk is one batch, so inference starts as early as possible.
    let mut limit = match &models {
        Some(m) => m.settings.batch_size.clamp(1, chunk_size),
        None => chunk_size,
    };
    let mut chunk: Vec<Loaded> = Vec::new();
    let mut fatal: Option<anyhow::Error> = None;
    let mut skipped = Vec::new();
    let mut current: Option<usize> = None;
    let mut live = Live::new();
    let flush = |chunk: &mut Vec<Loaded>, live: &mut Live| -> bool {
        if chunk.is_empty() {
            return true;
        }
        let items = std::mem::take(chunk);
        let outcomes: Vec<Processed> = pool.install(|| {
            items
                .into_par_iter()
                .map(|(_, rec, fetched)| ctx.process(&rec, fetched))
                .collect()
        });
        live.update(&outcomes, progress.as_ref());
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
                if chunk.len() >= limit {
                    limit = chunk_size;
                    if !flush(&mut chunk, &mut live) {
                        break;
                    }
                }
            }
            LoadedMsg::EndShard(k, n) => {
                if current != Some(k) && sink_tx.send(SinkMsg::Begin(k)).is_err() {
                    break;
                }
                if !flush(&mut chunk, &mut live) || sink_tx.send(SinkMsg::End(k, n)).is_err() {
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
    let result = (|| {
        model_result?;
        if let Some(e) = fatal {
            return Err(e.context("stopped; shards committed before this point are complete and will be skipped on the next run"));
        }
        let (built, lost) = sink_result?;
        let (num_records, busy) = produced?;
        Ok((built, lost, num_records, busy))
    })();
    let (built, lost, num_records, busy) = match result {
        Ok(x) => {
            if let Some(l) = &leases {
                l.release_all();
            }
            x
        }
        Err(e) => {
            if let Some(l) = &leases {
                l.fail_all(&format!("{e:#}"));
            }
            return Err(e);
        }
    };
    if num_records == 0 {
        bail!(
            "the source yielded no records ({}); nothing to build",
            info.description
        );
    }
    let num_shards = (num_records as usize).div_ceil(cfg.shard_size);

    // Coordinated: this worker's own shards only, and completeness from one LIST of the
    // stats (the commit point remotely), so the store sees O(own shards) requests per
    // worker, not O(all shards); `finalize` reads everything once, at the end.
    let all = if coordinated {
        let mut own = Vec::new();
        for &k in &built {
            if let Some(b) = store.read_opt(&sink::stats_rel(k))? {
                own.extend(serde_json::from_slice::<ShardStats>(&b).ok());
            }
        }
        own
    } else {
        sink::read_all_stats(&store, num_shards)?
    };
    let complete = if coordinated {
        let listed: std::collections::HashSet<usize> = store
            .list("stats")?
            .iter()
            .filter_map(|n| {
                n.strip_prefix("stats/part-")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .collect();
        let mut all_done = true;
        for k in 0..num_shards {
            let done = listed.contains(&k)
                && (store.is_remote() || sink::shard_complete(&store, k, &fingerprint)?);
            if !done {
                all_done = false;
                break;
            }
        }
        all_done
    } else {
        all.len() == num_shards
    };
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
    if coordinated {
        // Workers never race on dataset.json: the plan is created once, and whoever sees
        // every shard done finalizes (idempotently; `prep finalize` does the same).
        crate::scaleout::write_plan(&store, &m)?;
        let finalized =
            manifest::read(&store)?.is_some_and(|d| d.complete && d.fingerprint == m.fingerprint);
        if complete && !finalized {
            crate::scaleout::finalize(&store)?;
        }
    } else {
        manifest::write_if_changed(&store, m)?;
    }
    if let Some(r) = store.remote() {
        eprintln!(
            "object store {}: {} for {} shard(s) built",
            r.url(""),
            r.requests().describe(),
            built.len()
        );
    }
    if let Some(r) = &info.input_store {
        eprintln!(
            "object store --input {}: {}",
            r.url(""),
            r.requests().describe()
        );
    }
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
        busy,
        lost,
    })
}

#[allow(clippy::too_many_arguments)]
fn produce(
    src: Box<dyn source::Source>,
    store: OutStore,
    fingerprint: String,
    shard_size: usize,
    limit: Option<u64>,
    selector: ShardSelector,
    leases: Option<Arc<crate::lease::Leases>>,
    committed: Option<std::collections::HashSet<usize>>,
    tx: tokio::sync::mpsc::Sender<SourceMsg>,
    stop: Arc<AtomicBool>,
) -> Result<(u64, Vec<usize>)> {
    let mut busy = Vec::new();
    let n = produce_inner(
        src,
        store,
        fingerprint,
        shard_size,
        limit,
        selector,
        leases,
        committed.unwrap_or_default(),
        tx,
        stop,
        &mut busy,
    )?;
    Ok((n, busy))
}

/// Shard `k` is this worker's to build: selected, not complete, and (with leases) claimed.
fn take_shard(
    store: &OutStore,
    k: usize,
    fingerprint: &str,
    leases: Option<&crate::lease::Leases>,
    committed: &std::collections::HashSet<usize>,
    busy: &mut Vec<usize>,
) -> Result<(bool, bool)> {
    if committed.contains(&k) || sink::shard_complete(store, k, fingerprint)? {
        return Ok((false, true));
    }
    let Some(l) = leases else {
        return Ok((true, false));
    };
    match l.claim(k)? {
        crate::lease::ClaimResult::Busy(_) => {
            busy.push(k);
            Ok((false, false))
        }
        crate::lease::ClaimResult::Claimed { taken_over_from } => {
            // Committed by another worker between our check and our claim?
            if sink::shard_complete(store, k, fingerprint)? {
                l.release(k);
                return Ok((false, true));
            }
            if let Some(from) = taken_over_from {
                eprintln!("shard {k}: taking over the expired claim of {from}");
            }
            Ok((true, false))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn produce_inner(
    src: Box<dyn source::Source>,
    store: OutStore,
    fingerprint: String,
    shard_size: usize,
    limit: Option<u64>,
    selector: ShardSelector,
    leases: Option<Arc<crate::lease::Leases>>,
    committed: std::collections::HashSet<usize>,
    tx: tokio::sync::mpsc::Sender<SourceMsg>,
    stop: Arc<AtomicBool>,
    busy: &mut Vec<usize>,
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
            let (build, complete) = if selector.takes(k) {
                match take_shard(&store, k, &fingerprint, leases.as_deref(), &committed, busy) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.blocking_send(SourceMsg::Fatal(e));
                        return Ok(n);
                    }
                }
            } else {
                (false, false)
            };
            decision = Some((k, build, complete));
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

fn empty_stats(shard: usize, fingerprint: &str) -> ShardStats {
    let none = FileInfo {
        file: String::new(),
        bytes: 0,
        sha256: String::new(),
    };
    ShardStats {
        shard,
        prep_version: env!("CARGO_PKG_VERSION").to_string(),
        fingerprint: fingerprint.to_string(),
        input_rows: 0,
        rows: 0,
        failed: BTreeMap::new(),
        filtered: BTreeMap::new(),
        failures: Vec::new(),
        seconds: 0.0,
        parquet: none.clone(),
        status_file: none,
        count: 0,
        successes: 0,
        failed_to_download: 0,
        failed_to_resize: 0,
        duration: 0.0,
        start_time: 0.0,
        end_time: 0.0,
        status_dict: BTreeMap::new(),
        worker: None,
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn run_sink(
    mut sink: ParquetSink,
    rx: crossbeam_channel::Receiver<SinkMsg>,
    fingerprint: String,
    dedup: bool,
    leases: Option<Arc<crate::lease::Leases>>,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut built = Vec::new();
    let mut lost = Vec::new();
    let mut current: Option<(Vec<StatusRow>, Instant)> = None;
    // sha256 of every image kept so far in this run (`--dedup`), checked in row order so
    // the first occurrence always wins.
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for msg in rx {
        match msg {
            SinkMsg::Begin(k) => {
                sink.begin_shard(k)?;
                current = Some((Vec::new(), Instant::now()));
            }
            SinkMsg::Rows(outcomes) => {
                let Some((status, _)) = current.as_mut() else {
                    bail!("internal error: rows before a shard began");
                };
                let mut rows = Vec::new();
                for mut p in outcomes {
                    if dedup {
                        if let Outcome::Row(r, _) = &p.outcome {
                            if !seen.insert(r.sha256.clone()) {
                                p.outcome = Outcome::Filtered("duplicate".into());
                            }
                        }
                    }
                    let (row, st) = p.into_status(None);
                    rows.extend(row);
                    status.push(st);
                }
                sink.write(&rows)?;
            }
            SinkMsg::End(k, n) => {
                let Some((status, t0)) = current.take() else {
                    bail!("internal error: end of shard {k} before it began");
                };
                if status.len() != n {
                    bail!(
                        "internal error: shard {k} has {} status rows for {n} input rows",
                        status.len()
                    );
                }
                let secs = (t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
                if let Some(l) = &leases {
                    if !l.still_held(k) {
                        eprintln!("warning: shard {k}: this worker's claim expired or was taken over before the commit; its copy is discarded");
                        sink.abort_shard();
                        l.release(k);
                        lost.push(k);
                        continue;
                    }
                }
                match sink.commit_shard(stats_from_status(k, &fingerprint, &status, secs), &status)
                {
                    Ok(_) => built.push(k),
                    Err(e) if e.downcast_ref::<sink::LostRace>().is_some() => {
                        eprintln!("warning: {e}");
                        lost.push(k);
                    }
                    Err(e) => return Err(e),
                }
                if let Some(l) = &leases {
                    l.release(k);
                }
            }
        }
    }
    // Channel closed: an unfinished shard (fatal error, Ctrl-C) is discarded.
    sink.abort_shard();
    Ok((built, lost))
}

impl Processed {
    /// The row to write (for a success) and the record's status line. `attempts`
    /// overrides the attempt count (a retry adds its attempts to the earlier ones).
    fn into_status(self, attempts: Option<u32>) -> (Option<Row>, StatusRow) {
        let (row, state, error, detail) = match self.outcome {
            Outcome::Row(r, _) => (Some(*r), "success", None, None),
            Outcome::Failed(f) => (None, "failed", Some(f.class), Some(f.detail)),
            Outcome::Filtered(reason) => (None, "filtered", Some(reason), None),
        };
        let st = StatusRow {
            key: self.key,
            url: self.url,
            status: state,
            error,
            detail,
            http_status: self.http_status,
            attempts: attempts.unwrap_or(self.attempts),
        };
        (row, st)
    }
}

struct Ctx {
    cfg: BuildConfig,
    settings: ConditionSettings,
    models: Option<Arc<ModelSet>>,
}

impl Ctx {
    fn process(&self, rec: &Record, fetched: Option<Fetched>) -> Processed {
        let (http_status, attempts, bytes) = fetched.as_ref().map_or((None, 0, 0), |f| {
            let n = f.result.as_ref().map_or(0, |b| b.len() as u64);
            (f.http_status, f.attempts, n)
        });
        let outcome = if let Some(reason) = &rec.filtered {
            Outcome::Filtered(reason.clone())
        } else {
            match fetched {
                None => Outcome::Failed(RowFailure::new("internal", "no bytes loaded")),
                Some(f) => match f.result.and_then(|b| self.build_row(rec, &b)) {
                    Ok(Ok((row, pending))) => Outcome::Row(Box::new(row), pending.map(Box::new)),
                    Ok(Err(reason)) => Outcome::Filtered(reason),
                    Err(f) => Outcome::Failed(f),
                },
            }
        };
        Processed {
            key: rec.key.clone(),
            url: rec.image.display(),
            outcome,
            http_status,
            attempts,
            bytes,
        }
    }

    /// `Ok(Err(reason))`: dropped by a filter after decoding.
    /// With model-backed conditions, their columns are left empty and the model inputs
    /// returned for the model stage.
    #[allow(clippy::type_complexity)]
    fn build_row(
        &self,
        rec: &Record,
        bytes: &[u8],
    ) -> Result<Result<(Row, Option<Pending>), String>, RowFailure> {
        let cfg = &self.cfg;
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(expected) = &rec.expected_sha256 {
            if *expected != sha256 {
                return Err(RowFailure::new(
                    "hash_mismatch",
                    format!(
                        "{}: sha256 {sha256}, expected {expected}",
                        rec.image.display()
                    ),
                ));
            }
        } // Keypoints and label maps live in the original pixel grid, so records with
          // annotations always decode at full size.
        let exact_grid =
            rec.annotations.persons.is_some() || cfg.conditions.contains(&ConditionKind::Seg);
        let (src, (ow0, oh0)) = if cfg.jpeg_dct_scaling && !exact_grid {
            decode_rgb_reduced(bytes, cfg.max_pixels, cfg.resolution)
        } else {
            decode_rgb(bytes, cfg.max_pixels).map(|img| {
                let d = img.dimensions();
                (img, d)
            })
        }
        .map_err(|f| with_where(f, &rec.image))?;
        if let Some(reason) = size_filter(&cfg.filters, ow0, oh0) {
            return Ok(Err(reason.into()));
        }
        let (w, h) = src.dimensions();
        let geo = Geometry::new(cfg.resize_mode, cfg.resolution, w, h);
        let rgb = geo.apply_rgb(&src);
        crate::imaging::decode::recycle(src);
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
        Ok(Ok((
            Row {
                key: rec.key.clone(),
                sha256,
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

/// The size filters that need the decoded (upright) dimensions.
fn size_filter(f: &crate::config::Filters, w: u32, h: u32) -> Option<&'static str> {
    if f.min_size.is_some_and(|min| w < min || h < min) {
        return Some("min_size");
    }
    let ratio = f64::from(w.max(h)) / f64::from(w.min(h).max(1));
    if f.max_aspect_ratio.is_some_and(|r| ratio > r) {
        return Some("max_aspect_ratio");
    }
    if f.max_area.is_some_and(|a| u64::from(w) * u64::from(h) > a) {
        return Some("max_area");
    }
    None
}

fn with_where(mut f: RowFailure, image: &ImageRef) -> RowFailure {
    let place = image.display();
    if !f.detail.contains(&place) {
        f.detail = format!("{place}: {}", f.detail);
    }
    f
}

/// A COCO-Stuff label map: 8-bit, one channel (values are labels, never colours).
fn load_labels(map: &ImageRef) -> Result<GrayImage, RowFailure> {
    let bytes = match map {
        ImageRef::Path(path) => std::fs::read(path).map_err(|e| {
            let class = if e.kind() == std::io::ErrorKind::NotFound {
                "seg_map_missing"
            } else {
                "seg_map_unreadable"
            };
            RowFailure::new(class, format!("{}: {e}", path.display()))
        })?,
        ImageRef::Object(o) => match o.remote.get_blocking(&o.rel) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(RowFailure::new(
                    "seg_map_missing",
                    format!("{}: no such object", o.url()),
                ))
            }
            Err(e) => return Err(RowFailure::new("seg_map_unreadable", format!("{e:#}"))),
        },
        ImageRef::Url(u) => {
            return Err(RowFailure::new(
                "seg_map_unreadable",
                format!("{u}: label maps are read from --input, not downloaded"),
            ))
        }
    };
    let path = map.display();
    let img = image::load_from_memory(&bytes)
        .map_err(|e| RowFailure::new("seg_map_unreadable", format!("{path}: {e}")))?;
    match img {
        image::DynamicImage::ImageLuma8(g) => Ok(g),
        other => Err(RowFailure::new(
            "seg_map_unreadable",
            format!(
                "{path}: a label map must be 8-bit single-channel (COCO-Stuff stuffthingmaps), got {:?}",
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
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} images  {per_sec}  ETA {eta}  {msg}",
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
    store: &OutStore,
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

/// What `prep fetch --retry-failed` did.
#[derive(Debug, Clone, Default)]
pub struct RetrySummary {
    pub shards: Vec<usize>,
    pub retried: usize,
    pub recovered: usize,
}

/// Stats of a shard recomputed from its status rows (used when a shard is rewritten).
fn stats_from_status(
    shard: usize,
    fingerprint: &str,
    status: &[StatusRow],
    seconds: f64,
) -> ShardStats {
    let mut s = empty_stats(shard, fingerprint);
    s.input_rows = status.len();
    s.count = status.len();
    for r in status {
        let label = r.error.clone().unwrap_or_else(|| "success".into());
        *s.status_dict.entry(label).or_insert(0) += 1;
        match (r.status, &r.error) {
            ("success", _) => s.successes += 1,
            ("filtered", Some(reason)) => *s.filtered.entry(reason.clone()).or_insert(0) += 1,
            (_, error) => {
                let class = error.clone().unwrap_or_else(|| "unknown".into());
                if sink::is_download_failure(&class) {
                    s.failed_to_download += 1;
                } else {
                    s.failed_to_resize += 1;
                }
                *s.failed.entry(class.clone()).or_insert(0) += 1;
                s.failures.push(FailureEntry {
                    key: r.key.clone(),
                    class,
                    detail: r.detail.clone().unwrap_or_default(),
                });
            }
        }
    }
    s.seconds = seconds;
    s.duration = seconds;
    s.end_time = unix_now();
    s.start_time = s.end_time - seconds;
    s
}

/// The default classes `--retry-failed` retries: the transient ones.
pub const RETRYABLE: [&str; 7] = [
    "timeout",
    "connect",
    "dns",
    "http_5xx",
    "http_429",
    "http_503",
    "truncated",
];

/// A local file with the contents of `rel` under `store`: the file itself, or (object
/// store) a temporary download, removed on drop.
fn local_view(
    store: &OutStore,
    rel: &str,
) -> Result<(std::path::PathBuf, Option<tempfile::TempPath>)> {
    let Some(r) = store.remote() else {
        return Ok((store.path(rel), None));
    };
    let tmp = tempfile::Builder::new()
        .prefix("prep-retry-")
        .tempfile()
        .context("cannot create a temporary file for --retry-failed")?
        .into_temp_path();
    if !r.download_to(rel, &tmp)? {
        bail!("{} does not exist", r.url(rel));
    }
    Ok((tmp.to_path_buf(), Some(tmp)))
}

/// Re-try the failed rows (of the given classes) of an earlier run in `out` and merge the
/// successes into their shards, in their original positions. Each affected shard is
/// rewritten whole and committed atomically, as on a first run.
///
/// `out` may be an object-store URL: status and data objects are read through temporary
/// downloads, and a rewritten shard goes up as whole objects, data and status first and
/// its stats last (overwriting: the shard was committed before). Run it once the workers
/// are done (the output has its dataset.json); a reader that lists the shard while it is
/// rewritten may see the new data with the previous stats for that moment.
pub fn retry_failed(out: &Path, classes: &[String], opts: &RunOptions) -> Result<RetrySummary> {
    use futures_util::StreamExt;
    let store = if sink::remote::is_url(&out.to_string_lossy()) {
        OutStore::open(out, &opts.remote)?
    } else {
        OutStore::new(out)
    };
    let m = manifest::read(&store)?.with_context(|| {
        format!("{} has no dataset.json; --retry-failed takes the output directory of an earlier prep fetch/build", out.display())
    })?;
    let cfg = m.config.clone();
    if !cfg.models.is_empty() {
        bail!("--retry-failed re-fetches runs without model-backed conditions; re-run `prep build` for {}", out.display());
    }
    if cfg.output_format != sink::OutputFormat::Parquet {
        bail!("--retry-failed merges rows into Parquet shards; {} holds webdataset shards (re-fetch the failed URLs listed in status/ instead)", out.display());
    }
    let fingerprint = cfg.fingerprint();
    if fingerprint != m.fingerprint {
        bail!("{}: its config fingerprint does not match its settings (written by another prep version?); rebuild it", out.display());
    }
    let wanted = |r: &StatusRow| {
        r.status == "failed"
            && r.error
                .as_deref()
                .is_some_and(|e| classes.iter().any(|c| c == e))
    };
    let mut affected: BTreeMap<usize, Vec<StatusRow>> = BTreeMap::new();
    for k in 0..m.num_shards {
        if !sink::shard_complete(&store, k, &fingerprint)? {
            continue; // an unfinished shard is completed by re-running the original command
        }
        let (path, _tmp) = local_view(&store, &sink::status_rel(k))?;
        let status = sink::parquet::read_status(&path)
            .with_context(|| store.display_rel(&sink::status_rel(k)))?;
        if status.iter().any(wanted) {
            affected.insert(k, status);
        }
    }
    let mut summary = RetrySummary::default();
    if affected.is_empty() {
        return Ok(summary);
    }

    // The affected shards' records, from the same source in the same order.
    let src = source::open(&cfg, &opts.remote)?;
    let info = src.info().clone();
    let mut records: BTreeMap<usize, Vec<Record>> = BTreeMap::new();
    for (n, item) in src.records()?.enumerate() {
        if cfg.limit.is_some_and(|l| n as u64 >= l) {
            break;
        }
        let k = n / cfg.shard_size;
        if k > *affected.keys().last().unwrap_or(&0) {
            break;
        }
        if affected.contains_key(&k) {
            records.entry(k).or_default().push(item?);
        }
    }

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .build()
        .context("cannot start the worker threads")?;
    let loader = Loader::new(
        if info.remote {
            Some(cfg.fetch.settings()?)
        } else {
            None
        },
        cfg.fetch.concurrency,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    let ctx = Ctx {
        cfg: cfg.clone(),
        settings: ConditionSettings {
            max_persons: cfg.max_persons,
        },
        models: None,
    };
    let schema = dataset_schema(&cfg, &info);
    let mut sink = ParquetSink::new(store.clone(), schema, cfg.resolution, cfg.output_format)?;

    for (k, old_status) in affected {
        let t0 = Instant::now();
        let recs = records.remove(&k).unwrap_or_default();
        let same = recs.len() == old_status.len()
            && recs.iter().zip(&old_status).all(|(r, s)| r.key == s.key);
        if !same {
            bail!(
                "shard {k}: the source no longer yields the records it had (was {} rows, keys differ or count changed); \
                 --retry-failed needs the same input as the original run ({})",
                old_status.len(),
                info.description
            );
        }
        let positions: Vec<usize> = (0..recs.len())
            .filter(|&i| wanted(&old_status[i]))
            .collect();
        let fetched: Vec<Fetched> = rt.block_on(
            loader
                .ordered(futures_util::stream::iter(positions.clone()), |i| {
                    loader.load(&recs[i].image)
                })
                .collect(),
        );
        let processed: Vec<Processed> = pool.install(|| {
            positions
                .par_iter()
                .zip(fetched.into_par_iter())
                .map(|(&i, f)| ctx.process(&recs[i], Some(f)))
                .collect()
        });
        let mut retried: BTreeMap<usize, Processed> =
            positions.iter().copied().zip(processed).collect();

        // Old rows by key, as Arrow slices.
        let mut old_rows: std::collections::HashMap<String, arrow_array::RecordBatch> =
            std::collections::HashMap::new();
        {
            use arrow_array::cast::AsArray;
            let (path, _tmp) = local_view(&store, &sink::data_rel(k))?;
            let file = std::fs::File::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
                    .build()?;
            for batch in reader {
                let batch = batch?;
                let keys = batch
                    .column_by_name("key")
                    .context("shard without key column")?
                    .as_string::<i32>()
                    .clone();
                for i in 0..batch.num_rows() {
                    old_rows.insert(keys.value(i).to_string(), batch.slice(i, 1));
                }
            }
        }

        sink.begin_shard(k)?;
        let mut status = Vec::with_capacity(old_status.len());
        for (i, old) in old_status.into_iter().enumerate() {
            match retried.remove(&i) {
                Some(p) => {
                    summary.retried += 1;
                    let attempts = old.attempts + p.attempts;
                    let (row, st) = p.into_status(Some(attempts));
                    if let Some(row) = row {
                        summary.recovered += 1;
                        sink.write(&[row])?;
                    }
                    status.push(st);
                }
                None => {
                    if old.status == "success" {
                        let batch = old_rows
                            .get(&old.key)
                            .with_context(|| format!("shard {k}: row {} is a success in status but missing from the data file", old.key))?;
                        sink.write_batch(batch)?;
                    }
                    status.push(old);
                }
            }
        }
        let stats = stats_from_status(k, &fingerprint, &status, t0.elapsed().as_secs_f64());
        sink.commit_shard(stats, &status)?;
        summary.shards.push(k);
    }

    let all = sink::read_all_stats(&store, m.num_shards)?;
    let (shards, rows, failed, filtered) = manifest::totals(&all);
    let mut m2 = m;
    m2.command = opts.command.clone();
    m2.complete = all.len() == m2.num_shards;
    m2.shards = shards;
    m2.rows = rows;
    m2.failed = failed;
    m2.filtered = filtered;
    manifest::write_if_changed(&store, m2)?;
    Ok(summary)
}
