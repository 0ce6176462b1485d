//! Where output files live, and how they become visible.
//!
//! Architecture invariant: every file under the output directory appears through
//! [`LocalStore::commit_file`] or [`LocalStore::put_atomic`]: written under a temporary
//! name, fsynced, then renamed into place. A reader never sees a partial file under a final
//! name, and a crash leaves only `.tmp` files that no glob of `*.parquet`/`*.json` matches.
//! (The object-store backend will commit with a conditional create instead of a rename.)

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: &Path) -> Self {
        LocalStore {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A temporary path next to `rel` that no output glob matches, unique to this process.
    pub fn temp_path(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        p.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
    }

    /// Remove temporaries left for `rel` by earlier, killed runs.
    pub fn clear_stale_temps(&self, rel: &str) {
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
        let p = self.path(rel);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).is_file()
    }

    pub fn size(&self, rel: &str) -> Option<u64> {
        std::fs::metadata(self.path(rel)).ok().map(|m| m.len())
    }

    pub fn read(&self, rel: &str) -> Result<Vec<u8>> {
        let p = self.path(rel);
        std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))
    }

    /// Make a finished temporary file visible as `rel`: fsync, rename, fsync the directory.
    pub fn commit_file(&self, tmp: &Path, rel: &str) -> Result<()> {
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

    /// Write `bytes` to `rel` atomically.
    pub fn put_atomic(&self, rel: &str, bytes: &[u8]) -> Result<()> {
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
