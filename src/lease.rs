//! Shard leases: `OUT/claims/part-XXXXX` says which worker is building a shard, until when.
//!
//! A worker claims a shard by *creating* its claim (conditional create on an object store,
//! hard link locally), renews it from a heartbeat thread every third of the lease, and
//! deletes it after the shard's commit. A live claim of another worker is skipped; an
//! expired (or failed) one is taken over with a write conditional on the version that was
//! read (`If-Match` on the ETag remotely, an atomic rename of the old claim locally), so of
//! two workers taking over the same claim one wins.
//!
//! Architecture invariant: leases only keep workers from doing the same work twice. Safety
//! does not rest on them (clocks drift, processes pause): the shard's commit is itself a
//! create that fails if the shard is already committed (see `sink::ParquetSink::exclusive`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{Context, Result};
use object_store::{PutMode, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::sink::remote::{hostname, PutOutcome};
use crate::sink::{Created, OutStore};

/// This process's worker name, `host/pid/start-nanos`: stable across `--shard auto`
/// passes, unique across restarts of the same pid.
pub fn worker_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        format!(
            "{}/{}/{}",
            hostname(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() % 1_000_000_000_000)
                .unwrap_or(0)
        )
    })
}

pub fn claim_rel(shard: usize) -> String {
    format!("claims/part-{shard:05}")
}

/// The content of `claims/part-XXXXX`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claim {
    pub shard: usize,
    /// `host/pid/start-nanos`: unique per worker process.
    pub owner: String,
    pub host: String,
    pub pid: u32,
    /// Unix seconds.
    pub claimed_at: f64,
    pub renewed_at: f64,
    pub expires_at: f64,
    pub renewals: u64,
    /// `running`, or `failed` (the worker stopped with `error`; takeable at once).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Claim {
    /// Held by a running worker whose lease has not run out at `now`.
    pub fn live(&self, now: f64) -> bool {
        self.state == "running" && self.expires_at > now
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The result of [`Leases::claim`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimResult {
    /// This worker holds the shard now (freshly, or taken over from `from`).
    Claimed { taken_over_from: Option<String> },
    /// Another worker's live claim.
    Busy(Box<Claim>),
}

struct Held {
    claim: Claim,
    /// The claim's version on an object store (for the conditional renewal).
    version: Option<UpdateVersion>,
    /// Set when a renewal found the claim changed: someone else took the shard over.
    lost: bool,
}

/// This worker's claims, renewed by a heartbeat thread while the value lives.
pub struct Leases {
    store: OutStore,
    owner: String,
    host: String,
    duration: Duration,
    held: Mutex<HashMap<usize, Held>>,
    stop: Arc<AtomicBool>,
    heartbeat: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Leases {
    pub fn new(store: OutStore, duration: Duration) -> Arc<Self> {
        Self::named(store, duration, worker_id().to_string())
    }

    /// Leases under an explicit owner name (tests run several "workers" in one process).
    pub fn named(store: OutStore, duration: Duration, owner: String) -> Arc<Self> {
        let host = hostname();
        let l = Arc::new(Leases {
            store,
            owner,
            host,
            duration,
            held: Mutex::new(HashMap::new()),
            stop: Arc::new(AtomicBool::new(false)),
            heartbeat: Mutex::new(None),
        });
        let weak: Weak<Leases> = Arc::downgrade(&l);
        let stop = l.stop.clone();
        let period = (duration / 3).max(Duration::from_millis(100));
        let h = std::thread::Builder::new()
            .name("prep-lease".into())
            .spawn(move || {
                let tick = Duration::from_millis(50).min(period);
                let mut waited = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    waited += tick;
                    if waited < period {
                        continue;
                    }
                    waited = Duration::ZERO;
                    match weak.upgrade() {
                        Some(l) => l.renew_all(),
                        None => break,
                    }
                }
            })
            .ok();
        *l.heartbeat.lock().unwrap_or_else(|e| e.into_inner()) = h;
        l
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    fn fresh(&self, shard: usize) -> Claim {
        let now = unix_now();
        Claim {
            shard,
            owner: self.owner.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            claimed_at: now,
            renewed_at: now,
            expires_at: now + self.duration.as_secs_f64(),
            renewals: 0,
            state: "running".into(),
            error: None,
        }
    }

    /// Read a claim and its version; `None` when there is none.
    pub fn read(store: &OutStore, shard: usize) -> Result<Option<(Claim, Option<UpdateVersion>)>> {
        let rel = claim_rel(shard);
        let (bytes, version) = match store.remote() {
            Some(r) => match r.get(&rel)? {
                Some((b, v)) => (b, Some(v)),
                None => return Ok(None),
            },
            None => match store.read_opt(&rel)? {
                Some(b) => (b, None),
                None => return Ok(None),
            },
        };
        let c = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a prep claim", store.display_rel(&rel)))?;
        Ok(Some((c, version)))
    }

    /// Claim `shard` for this worker, or report whose live claim it is.
    pub fn claim(&self, shard: usize) -> Result<ClaimResult> {
        let rel = claim_rel(shard);
        for _ in 0..4 {
            let mine = self.fresh(shard);
            let json = serde_json::to_vec_pretty(&mine)?;
            let created = match self.store.remote() {
                Some(r) => match r.put_create(&rel, json.clone())? {
                    PutOutcome::Written(v) => Some(Some(v)),
                    _ => None,
                },
                None => match self.store.put_create(&rel, &json)? {
                    Created::Yes => Some(None),
                    Created::AlreadyExists => None,
                },
            };
            if let Some(version) = created {
                self.hold(mine, version);
                return Ok(ClaimResult::Claimed {
                    taken_over_from: None,
                });
            }
            let Some((theirs, version)) = Self::read(&self.store, shard)? else {
                continue; // released between our create and our read: create again
            };
            if theirs.live(unix_now()) && theirs.owner != self.owner {
                return Ok(ClaimResult::Busy(Box::new(theirs)));
            }
            // Expired or failed: take it over, conditional on the version we read.
            match self.store.remote() {
                Some(r) => {
                    let Some(v) = version else { continue };
                    match r.put_mode(&rel, json, PutMode::Update(v))? {
                        PutOutcome::Written(v) => {
                            self.hold(mine, Some(v));
                            return Ok(ClaimResult::Claimed {
                                taken_over_from: Some(theirs.owner),
                            });
                        }
                        _ => continue, // someone else took it first: look again
                    }
                }
                None => {
                    // Move the expired claim aside atomically: of several workers doing
                    // this at once exactly one rename succeeds, then it creates its own.
                    let from = self.store.path(&rel);
                    let aside = self.store.path(&format!(
                        "claims/.part-{shard:05}.{}.expired",
                        std::process::id()
                    ));
                    if std::fs::rename(&from, &aside).is_err() {
                        continue;
                    }
                    let _ = std::fs::remove_file(&aside);
                    // The next iteration's create decides between concurrent takers.
                    if let Created::Yes = self.store.put_create(&rel, &json)? {
                        self.hold(mine, None);
                        return Ok(ClaimResult::Claimed {
                            taken_over_from: Some(theirs.owner),
                        });
                    }
                }
            }
        }
        // Four rounds of contention: someone else is actively claiming it.
        match Self::read(&self.store, shard)? {
            Some((c, _)) => Ok(ClaimResult::Busy(Box::new(c))),
            None => Ok(ClaimResult::Busy(Box::new(self.fresh(shard)))),
        }
    }

    fn hold(&self, claim: Claim, version: Option<UpdateVersion>) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(
            claim.shard,
            Held {
                claim,
                version,
                lost: false,
            },
        );
    }

    /// Does this worker still hold `shard` (renewed in time, not taken over)?
    pub fn still_held(&self, shard: usize) -> bool {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&shard)
            .is_some_and(|h| !h.lost && h.claim.expires_at > unix_now())
    }

    fn renew_all(&self) {
        let shards: Vec<usize> = {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.iter()
                .filter(|(_, h)| !h.lost)
                .map(|(k, _)| *k)
                .collect()
        };
        for k in shards {
            if let Err(e) = self.renew(k) {
                eprintln!("warning: cannot renew the claim on shard {k}: {e:#}");
            }
        }
    }

    fn renew(&self, shard: usize) -> Result<()> {
        let (mut claim, version) = {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            match held.get(&shard) {
                Some(h) => (h.claim.clone(), h.version.clone()),
                None => return Ok(()),
            }
        };
        let now = unix_now();
        claim.renewed_at = now;
        claim.expires_at = now + self.duration.as_secs_f64();
        claim.renewals += 1;
        let rel = claim_rel(shard);
        let json = serde_json::to_vec_pretty(&claim)?;
        let (ok, new_version) = match self.store.remote() {
            Some(r) => match version {
                Some(v) => match r.put_mode(&rel, json, PutMode::Update(v))? {
                    PutOutcome::Written(v) => (true, Some(v)),
                    _ => (false, None),
                },
                None => (false, None),
            },
            None => match Self::read(&self.store, shard)? {
                Some((c, _)) if c.owner == self.owner => {
                    self.store.put_atomic(&rel, &json)?;
                    (true, None)
                }
                _ => (false, None),
            },
        };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = held.get_mut(&shard) {
            if ok {
                h.claim = claim;
                h.version = new_version;
            } else {
                h.lost = true;
                eprintln!(
                    "warning: the claim on shard {shard} was taken over by another worker; this worker will not commit it"
                );
            }
        }
        Ok(())
    }

    /// The shard is committed (or abandoned): delete the claim if it is still ours.
    pub fn release(&self, shard: usize) {
        let h = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&shard);
        if let Some(h) = h {
            if !h.lost {
                if let Ok(Some((c, _))) = Self::read(&self.store, shard) {
                    if c.owner == self.owner {
                        let _ = self.store.delete(&claim_rel(shard));
                    }
                }
            }
        }
    }

    /// Mark every claim still held as failed with `error` (takeable by others at once).
    pub fn fail_all(&self, error: &str) {
        let all: Vec<Held> = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in all.into_iter().filter(|h| !h.lost) {
            let mut c = h.claim;
            c.state = "failed".into();
            c.error = Some(error.chars().take(500).collect());
            c.expires_at = unix_now();
            let rel = claim_rel(c.shard);
            if let Ok(json) = serde_json::to_vec_pretty(&c) {
                let _ = match (self.store.remote(), h.version) {
                    (Some(r), Some(v)) => r.put_mode(&rel, json, PutMode::Update(v)).map(|_| ()),
                    _ => self.store.put_atomic(&rel, &json),
                };
            }
        }
    }

    /// Release everything still held (end of a run).
    pub fn release_all(&self) {
        let shards: Vec<usize> = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        for k in shards {
            self.release(k);
        }
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self
            .heartbeat
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_claims_exclude_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutStore::new(dir.path());
        let a = Leases::named(store.clone(), Duration::from_millis(400), "a".into());
        let b = Leases::named(store.clone(), Duration::from_millis(400), "b".into());
        assert!(matches!(
            a.claim(3).unwrap(),
            ClaimResult::Claimed {
                taken_over_from: None
            }
        ));
        match b.claim(3).unwrap() {
            ClaimResult::Busy(c) => assert_eq!(c.owner, a.owner()),
            other => panic!("expected busy, got {other:?}"),
        }
        // a's heartbeat keeps the claim alive past the lease duration.
        std::thread::sleep(Duration::from_millis(900));
        assert!(a.still_held(3));
        assert!(matches!(b.claim(3).unwrap(), ClaimResult::Busy(_)));
        // a dies without releasing (heartbeat stops); b takes over once it expires.
        let owner_a = a.owner().to_string();
        a.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(700));
        match b.claim(3).unwrap() {
            ClaimResult::Claimed { taken_over_from } => {
                assert_eq!(taken_over_from.as_deref(), Some(owner_a.as_str()))
            }
            other => panic!("expected a takeover, got {other:?}"),
        }
        let (c, _) = Leases::read(&store, 3).unwrap().unwrap();
        assert_eq!(c.owner, b.owner());
        b.release(3);
        assert!(Leases::read(&store, 3).unwrap().is_none());
    }
}
