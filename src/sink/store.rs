//! Where output files live, and how they become visible.
//!
//! Architecture invariant: every file under the output appears through
//! [`OutStore::commit_file`], [`OutStore::put_atomic`] or [`OutStore::put_create`].
//! Locally: written under a temporary name, fsynced, then renamed (or hard-linked, for a
//! create that must not replace) into place. A reader never sees a partial file under a
//! final name, and a crash leaves only `.tmp` files that no glob of `*.parquet`/`*.json`
//! matches. On an object store ([`Remote`]): temporaries live in a local staging
//! directory and go up as one PUT or one multipart upload (visible only when whole); the
//! create that must not replace is a conditional create.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use anyhow::{Context, Result};

use super::remote::{is_url, PutOutcome, Remote, RemoteOptions};

/// The output: a local directory, or an object-store prefix with a local staging
/// directory for temporaries.
#[derive(Debug, Clone)]
pub struct OutStore {
    /// The output directory (local), or the staging directory (remote).
    root: PathBuf,
    remote: Option<Arc<Remote>>,
    /// Keeps the staging directory alive while any clone of this store exists.
    _staging: Option<Arc<Staging>>,
}

#[derive(Debug)]
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Remove staging directories of processes that no longer run (killed workers).
fn clear_dead_staging() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("prep-staging-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The name this type had before object stores: code that only ever writes local
/// directories (eval, inspect) keeps using it.
pub type LocalStore = OutStore;

/// Outcome of [`OutStore::put_create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Yes,
    /// Something was there already; nothing was written.
    AlreadyExists,
}

impl OutStore {
    pub fn new(root: &Path) -> Self {
        OutStore {
            root: root.to_path_buf(),
            remote: None,
            _staging: None,
        }
    }

    /// `--out`: an object-store URL (opened and probed for conditional creates) or a
    /// local directory.
    pub fn open(out: &Path, opts: &RemoteOptions) -> Result<Self> {
        let s = out.to_string_lossy();
        if !is_url(&s) {
            if opts.s3_endpoint.is_some() {
                anyhow::bail!(
                    "--s3-endpoint given but --out {} is a local path; use --out s3://BUCKET/PREFIX",
                    out.display()
                );
            }
            return Ok(Self::new(out));
        }
        let remote = Remote::open(&s, opts)?;
        clear_dead_staging();
        let dir = std::env::temp_dir().join(format!(
            "prep-staging-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the staging directory {}", dir.display()))?;
        Ok(OutStore {
            root: dir.clone(),
            remote: Some(Arc::new(remote)),
            _staging: Some(Arc::new(Staging(dir))),
        })
    }

    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_deref()
    }

    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The output as the user named it (a path, or the URL), for messages.
    pub fn display(&self) -> String {
        match &self.remote {
            Some(r) => r.url(""),
            None => self.root.display().to_string(),
        }
    }

    /// `rel` as the user would name it, for messages.
    pub fn display_rel(&self, rel: &str) -> String {
        match &self.remote {
            Some(r) => r.url(rel),
            None => self.root.join(rel).display().to_string(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local path of `rel` (remote: its place in the staging directory).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Names (relative to the output) of the files directly under `dir`, sorted.
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        if let Some(r) = &self.remote {
            return Ok(r.list(dir)?.into_iter().map(|(n, _)| n).collect());
        }
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.path(dir)) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    out.push(format!("{dir}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Read `rel`, `None` when it does not exist.
    pub fn read_opt(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        if let Some(r) = &self.remote {
            return Ok(r.get(rel)?.map(|(b, _)| b));
        }
        match std::fs::read(self.path(rel)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.path(rel).display())),
        }
    }

    /// Remove `rel` if present.
    pub fn delete(&self, rel: &str) -> Result<()> {
        if let Some(r) = &self.remote {
            return r.delete(rel);
        }
        match std::fs::remove_file(self.path(rel)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", self.path(rel).display())),
        }
    }

    /// Write `bytes` to `rel` only if nothing is there: a conditional create on an object
    /// store; locally a temporary file hard-linked into place (the link fails if the name
    /// exists, so exactly one of several concurrent creators wins).
    pub fn put_create(&self, rel: &str, bytes: &[u8]) -> Result<Created> {
        if let Some(r) = &self.remote {
            return Ok(match r.put_create(rel, bytes.to_vec())? {
                PutOutcome::Written(_) => Created::Yes,
                _ => Created::AlreadyExists,
            });
        }
        if let Some(dir) = self.path(rel).parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = self.temp_path(rel);
        {
            let mut f =
                File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            f.write_all(bytes)
                .and_then(|_| f.sync_all())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
        }
        let dest = self.path(rel);
        let r = std::fs::hard_link(&tmp, &dest);
        let _ = std::fs::remove_file(&tmp);
        match r {
            Ok(()) => Ok(Created::Yes),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Created::AlreadyExists),
            Err(e) => Err(e).with_context(|| format!("cannot create {}", dest.display())),
        }
    }

    /// A temporary path next to `rel` that no output glob matches, unique to this process.
    pub fn temp_path(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        p.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
    }

    /// Remove temporaries left for `rel` by earlier, killed runs.
    pub fn clear_stale_temps(&self, rel: &str) {
        if self.remote.is_some() {
            return; // the staging directory is this process's own
        }
        let p = self.path(rel);
        let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
            return;
        };
        let prefix = format!(".{name}.");
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if n.starts_with(&prefix) && n.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    pub fn ensure_dir(&self, rel: &str) -> Result<()> {
        // Remotely this makes the staging subdirectory temporaries are written in.
        let p = self.path(rel);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.size(rel).is_some()
    }

    /// The size of `rel`, `None` when absent (or, remotely, when the store cannot say).
    pub fn size(&self, rel: &str) -> Option<u64> {
        if let Some(r) = &self.remote {
            return r.head(rel).ok().flatten().map(|(n, _)| n);
        }
        std::fs::metadata(self.path(rel))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    pub fn read(&self, rel: &str) -> Result<Vec<u8>> {
        if let Some(r) = &self.remote {
            return r
                .get(rel)?
                .map(|(b, _)| b)
                .with_context(|| format!("{} does not exist", r.url(rel)));
        }
        let p = self.path(rel);
        std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))
    }

    /// Make a finished temporary file visible as `rel`: fsync, rename, fsync the directory;
    /// remotely, upload it whole (one PUT or one multipart upload) and drop the temporary.
    pub fn commit_file(&self, tmp: &Path, rel: &str) -> Result<()> {
        if let Some(r) = &self.remote {
            r.upload_file(tmp, rel)?;
            let _ = std::fs::remove_file(tmp);
            return Ok(());
        }
        let dest = self.path(rel);
        File::open(tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot flush {}", tmp.display()))?;
        std::fs::rename(tmp, &dest).with_context(|| {
            format!(
                "cannot move {} into place as {}",
                tmp.display(),
                dest.display()
            )
        })?;
        if let Some(dir) = dest.parent() {
            // Persist the rename itself; failure here only weakens durability, not atomicity.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Write `bytes` to `rel` atomically (replacing what is there).
    pub fn put_atomic(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        if let Some(r) = &self.remote {
            r.put_mode(rel, bytes.to_vec(), object_store::PutMode::Overwrite)?;
            return Ok(());
        }
        let tmp = self.temp_path(rel);
        {
            let mut f =
                File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            f.write_all(bytes)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
        }
        self.commit_file(&tmp, rel)
    }
}
