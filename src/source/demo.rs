//! The bundled demo dataset: a few public-domain / CC0 photos in the COCO layout (split
//! `demo`), with captions, ground-truth keypoints for the person and COCO-Stuff label
//! maps. The files are embedded in the binary (see build.rs and demo/README.md) and
//! extracted once into the cache directory, so the README's first command runs offline
//! from anywhere.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::CocoSource;
use crate::config::BuildConfig;

include!(concat!(env!("OUT_DIR"), "/demo_files.rs"));

/// The cache directory: `$PREP_CACHE`, else `$XDG_CACHE_HOME/prep`, else `~/.cache/prep`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("PREP_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("prep");
    }
    match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("prep"),
        None => std::env::temp_dir().join("prep-cache"),
    }
}

/// Extract the embedded files (once per content version) and return the COCO root.
pub fn extract() -> Result<PathBuf> {
    if DEMO_FILES.is_empty() {
        bail!(
            "this prep binary was built without the demo/ directory; build it from a full checkout"
        );
    }
    let mut h = Sha256::new();
    for (name, bytes) in DEMO_FILES {
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let version = &hex::encode(h.finalize())[..16];
    let cache = cache_dir();
    let root = cache.join(format!("demo-{version}"));
    if root.is_dir() {
        return Ok(root);
    }
    std::fs::create_dir_all(&cache).with_context(|| {
        format!(
            "cannot create the cache directory {} (set PREP_CACHE to a writable directory)",
            cache.display()
        )
    })?;
    let tmp = cache.join(format!(".demo-{version}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for (name, bytes) in DEMO_FILES {
        let path = tmp.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    match std::fs::rename(&tmp, &root) {
        Ok(()) => Ok(root),
        // Another process extracted the same version first: use theirs.
        Err(_) if root.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(root)
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot move the demo data into {}", root.display()))
        }
    }
}

pub fn open(cfg: &BuildConfig) -> Result<CocoSource> {
    let root = extract()?;
    CocoSource::open(cfg, crate::input_store::Input::Local(root), "demo")
}
