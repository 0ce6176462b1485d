//! Many workers, one output: shard selection from the scheduler's environment, the plan
//! that coordinated runs share, `prep status` and `prep finalize`.
//!
//! Architecture invariant: in a coordinated run (object-store output or `--shard auto`)
//! no worker writes `dataset.json` while shards are outstanding. Each worker creates
//! `plan.json` (config, fingerprint, record and shard counts) if absent, or checks that
//! the one there matches; `dataset.json` is written by [`finalize`], only once every shard
//! `0..num_shards` is done, and rewriting it with the same content is a no-op.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::ShardSelector;
use crate::lease::{self, Leases};
use crate::manifest::{self, Manifest};
use crate::sink::{self, Created, OutStore, ShardStats};

pub const PLAN: &str = "plan.json";

/// `--shard env/N`: the index from Slurm's `SLURM_ARRAY_TASK_ID` or Kubernetes'
/// `JOB_COMPLETION_INDEX`, the count given explicitly (a re-submitted Slurm task sees
/// `SLURM_ARRAY_TASK_COUNT=1`, so the environment's count cannot be trusted).
pub fn shard_from_env(spec: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ShardSelector> {
    let count = spec.strip_prefix("env/").with_context(|| {
        format!(
            "--shard {spec:?}: expected env/N with N the total number of tasks, e.g. --shard env/4"
        )
    })?;
    let count: usize = count
        .trim()
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .with_context(|| format!("--shard {spec:?}: N must be a positive integer (the array size, e.g. --shard env/4 for sbatch --array=0-3)"))?;
    let (var, value) = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"]
        .iter()
        .find_map(|v| env(v).map(|x| (*v, x)))
        .with_context(|| {
            format!("--shard {spec}: neither SLURM_ARRAY_TASK_ID (sbatch --array) nor JOB_COMPLETION_INDEX (Kubernetes Indexed Job) is set; use --shard I/N outside a scheduler")
        })?;
    let index: usize = value
        .trim()
        .parse()
        .with_context(|| format!("{var}={value:?} is not a task index"))?;
    if index >= count {
        bail!("{var}={index} but --shard {spec} says there are {count} tasks; submit indices 0..{} (sbatch --array=0-{})", count - 1, count - 1);
    }
    Ok(ShardSelector { index, count })
}

/// Create `plan.json` from this run's manifest, or check the one there agrees.
pub fn write_plan(store: &OutStore, m: &Manifest) -> Result<()> {
    let mut plan = m.clone();
    plan.complete = false;
    plan.rows = 0;
    plan.failed.clear();
    plan.filtered.clear();
    plan.shards.clear();
    let json = serde_json::to_vec_pretty(&plan)?;
    if store.put_create(PLAN, &json)? == Created::AlreadyExists {
        let theirs = manifest::read_named(store, PLAN)?
            .with_context(|| format!("{} vanished while being read", store.display_rel(PLAN)))?;
        if theirs.fingerprint != plan.fingerprint
            || theirs.num_records != plan.num_records
            || theirs.num_shards != plan.num_shards
        {
            bail!(
                "{} says {} records in {} shards (fingerprint {}), but this worker read {} records in {} shards (fingerprint {}): \
                 the workers see different inputs or settings; give every worker the same --input and flags",
                store.display_rel(PLAN),
                theirs.num_records,
                theirs.num_shards,
                &theirs.fingerprint[..12.min(theirs.fingerprint.len())],
                plan.num_records,
                plan.num_shards,
                &plan.fingerprint[..12.min(plan.fingerprint.len())]
            );
        }
    }
    Ok(())
}

/// The plan of an output: `plan.json` (coordinated runs), else `dataset.json`.
pub fn read_plan(store: &OutStore) -> Result<Option<Manifest>> {
    match manifest::read_named(store, PLAN)? {
        Some(p) => Ok(Some(p)),
        None => manifest::read(store),
    }
}

/// What [`finalize`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Finalized {
    pub num_shards: usize,
    pub rows: usize,
    pub failed: BTreeMap<String, usize>,
    /// False when dataset.json already said exactly this.
    pub wrote: bool,
}

/// Merge every shard's stats into `dataset.json` once all shards are done.
pub fn finalize(store: &OutStore) -> Result<Finalized> {
    let plan = read_plan(store)?.with_context(|| {
        format!(
            "{} has neither {PLAN} nor dataset.json: no worker has read the whole source yet; run `prep build` (or wait for a worker to finish its pass)",
            store.display()
        )
    })?;
    let mut missing = Vec::new();
    for k in 0..plan.num_shards {
        if !sink::shard_complete(store, k, &plan.fingerprint)? {
            missing.push(k);
        }
    }
    if !missing.is_empty() {
        let shown: Vec<String> = missing
            .iter()
            .take(20)
            .map(|k| format!("part-{k:05}"))
            .collect();
        bail!(
            "{} of {} shards are not done: {}{}; run more workers (prep build ... --shard auto) or see `prep status {}`",
            missing.len(),
            plan.num_shards,
            shown.join(", "),
            if missing.len() > 20 { ", ..." } else { "" },
            store.display()
        );
    }
    let all = sink::read_all_stats(store, plan.num_shards)?;
    let (shards, rows, failed, filtered) = manifest::totals(&all);
    let mut m = plan;
    m.complete = true;
    m.rows = rows;
    m.failed = failed.clone();
    m.filtered = filtered;
    m.shards = shards;
    let num_shards = m.num_shards;
    let wrote = manifest::write_if_changed(store, m)?;
    Ok(Finalized {
        num_shards,
        rows,
        failed,
        wrote,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardState {
    pub shard: usize,
    /// done | claimed | failed | pending
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerStats {
    pub worker: String,
    pub shards: usize,
    pub input_rows: usize,
    pub rows: usize,
    pub seconds: f64,
    /// Input records per second of shard time.
    pub records_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub out: String,
    /// From plan.json / dataset.json; `None` until a worker has read the whole source.
    pub num_shards: Option<usize>,
    pub done: usize,
    pub claimed: usize,
    pub failed: usize,
    pub pending: usize,
    pub rows: usize,
    pub input_rows: usize,
    pub failures: BTreeMap<String, usize>,
    pub finalized: bool,
    pub workers: Vec<WorkerStats>,
    pub shards: Vec<ShardState>,
}

fn index_of(name: &str, dir: &str, ext: &str) -> Option<usize> {
    name.strip_prefix(dir)?
        .strip_prefix("/part-")?
        .strip_suffix(ext)?
        .parse()
        .ok()
}

/// Every shard's state, read from stats/, claims/ and the plan.
pub fn status(store: &OutStore) -> Result<Status> {
    let plan = read_plan(store)?;
    let stats_names = store.list("stats")?;
    let claim_names = store.list("claims")?;
    let stats_idx: Vec<usize> = stats_names
        .iter()
        .filter_map(|n| index_of(n, "stats", ".json"))
        .collect();
    let claim_idx: Vec<usize> = claim_names
        .iter()
        .filter_map(|n| index_of(n, "claims", ""))
        .collect();
    let num_shards = plan.as_ref().map(|p| p.num_shards);
    let upto = num_shards.unwrap_or_else(|| {
        stats_idx
            .iter()
            .chain(claim_idx.iter())
            .max()
            .map_or(0, |m| m + 1)
    });
    let now = lease::unix_now();
    let mut st = Status {
        out: store.display(),
        num_shards,
        done: 0,
        claimed: 0,
        failed: 0,
        pending: 0,
        rows: 0,
        input_rows: 0,
        failures: BTreeMap::new(),
        finalized: manifest::read(store)?.is_some_and(|m| m.complete),
        workers: Vec::new(),
        shards: Vec::new(),
    };
    let mut workers: BTreeMap<String, WorkerStats> = BTreeMap::new();
    for k in 0..upto {
        let mut state = ShardState {
            shard: k,
            state: "pending",
            rows: None,
            worker: None,
            detail: None,
        };
        let mut done = false;
        if stats_idx.contains(&k) {
            if let Some(bytes) = store.read_opt(&sink::stats_rel(k))? {
                if let Ok(s) = serde_json::from_slice::<ShardStats>(&bytes) {
                    let whole = store.size(&s.parquet.file) == Some(s.parquet.bytes);
                    let same = plan.as_ref().is_none_or(|p| p.fingerprint == s.fingerprint);
                    if whole && same {
                        done = true;
                        let w = s.worker.clone().unwrap_or_else(|| "unknown".into());
                        let e = workers.entry(w.clone()).or_insert(WorkerStats {
                            worker: w.clone(),
                            shards: 0,
                            input_rows: 0,
                            rows: 0,
                            seconds: 0.0,
                            records_per_second: 0.0,
                        });
                        e.shards += 1;
                        e.input_rows += s.input_rows;
                        e.rows += s.rows;
                        e.seconds += s.seconds;
                        st.rows += s.rows;
                        st.input_rows += s.input_rows;
                        for (c, n) in &s.failed {
                            *st.failures.entry(c.clone()).or_insert(0) += n;
                        }
                        state.state = "done";
                        state.rows = Some(s.rows);
                        state.worker = Some(w);
                    } else if !same {
                        state.state = "failed";
                        state.detail =
                            Some("stats from other settings (fingerprint differs)".into());
                    }
                }
            }
        }
        if !done && claim_idx.contains(&k) {
            if let Some((c, _)) = Leases::read(store, k)? {
                state.worker = Some(c.owner.clone());
                if c.live(now) {
                    state.state = "claimed";
                    state.detail = Some(format!(
                        "lease {:.0}s left, {} renewals",
                        c.expires_at - now,
                        c.renewals
                    ));
                } else {
                    state.state = "failed";
                    state.detail = Some(match &c.error {
                        Some(e) => format!("worker failed: {e}"),
                        None => format!(
                            "lease expired {:.0}s ago (worker lost); the next worker takes it over",
                            now - c.expires_at
                        ),
                    });
                }
            }
        }
        match state.state {
            "done" => st.done += 1,
            "claimed" => st.claimed += 1,
            "failed" => st.failed += 1,
            _ => st.pending += 1,
        }
        st.shards.push(state);
    }
    st.workers = workers
        .into_values()
        .map(|mut w| {
            w.records_per_second = if w.seconds > 0.0 {
                (w.input_rows as f64 / w.seconds * 10.0).round() / 10.0
            } else {
                0.0
            };
            w
        })
        .collect();
    Ok(st)
}

/// The human table of `prep status`.
pub fn print_status(s: &Status) {
    let total = match s.num_shards {
        Some(n) => n.to_string(),
        None => format!(
            "{}+ (total unknown until a worker has read the whole source)",
            s.shards.len()
        ),
    };
    println!("output     {}", s.out);
    println!(
        "shards     {total}: {} done, {} claimed, {} failed, {} pending{}",
        s.done,
        s.claimed,
        s.failed,
        s.pending,
        if s.finalized { " (finalized)" } else { "" }
    );
    println!("rows       {} of {} input records", s.rows, s.input_rows);
    if !s.failures.is_empty() {
        let f: Vec<String> = s.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("failures   {}", f.join(", "));
    }
    if !s.workers.is_empty() {
        println!();
        println!(
            "{:<40} {:>6} {:>9} {:>9} {:>9} {:>10}",
            "worker", "shards", "records", "rows", "seconds", "records/s"
        );
        for w in &s.workers {
            println!(
                "{:<40} {:>6} {:>9} {:>9} {:>9.1} {:>10.1}",
                w.worker, w.shards, w.input_rows, w.rows, w.seconds, w.records_per_second
            );
        }
    }
    let notable: Vec<&ShardState> = s.shards.iter().filter(|x| x.state != "done").collect();
    if !notable.is_empty() {
        println!();
        println!("{:<12} {:<8} {:<40} detail", "shard", "state", "worker");
        for x in notable.iter().take(50) {
            println!(
                "part-{:05}   {:<8} {:<40} {}",
                x.shard,
                x.state,
                x.worker.as_deref().unwrap_or("-"),
                x.detail.as_deref().unwrap_or("")
            );
        }
        if notable.len() > 50 {
            println!("... {} more", notable.len() - 50);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_index_from_scheduler_env() {
        let slurm = |v: &str| (v == "SLURM_ARRAY_TASK_ID").then(|| "2".to_string());
        assert_eq!(
            shard_from_env("env/4", &slurm).unwrap(),
            ShardSelector { index: 2, count: 4 }
        );
        let k8s = |v: &str| (v == "JOB_COMPLETION_INDEX").then(|| "0".to_string());
        assert_eq!(
            shard_from_env("env/3", &k8s).unwrap(),
            ShardSelector { index: 0, count: 3 }
        );
        let none = |_: &str| None;
        let e = shard_from_env("env/4", &none).unwrap_err().to_string();
        assert!(e.contains("neither SLURM_ARRAY_TASK_ID"), "{e}");
        let e = shard_from_env("env/2", &slurm).unwrap_err().to_string();
        assert!(
            e.contains("SLURM_ARRAY_TASK_ID=2 but --shard env/2 says there are 2 tasks"),
            "{e}"
        );
        assert!(shard_from_env("env/0", &slurm).is_err());
        assert!(shard_from_env("env", &slurm).is_err());
    }
}
