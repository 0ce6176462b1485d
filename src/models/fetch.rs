//! `prep models fetch`: download a model file over HTTP(S), hash it while streaming,
//! and commit it into the cache only when it matches the entry's pin.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::{ModelEntry, Registry};

/// What a fetch did.
#[derive(Debug)]
pub struct Fetched {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    /// `true` when the file was already cached and valid.
    pub cached: bool,
    /// `true` when the entry had no pin and was pinned to this download.
    pub pinned_now: bool,
}

/// Fetch `entry` into the cache (no-op when the cached file already matches the pin).
pub fn fetch(reg: &Registry, entry: &ModelEntry, timeout: Duration) -> Result<Fetched> {
    let dest = reg.cached_file(&entry.name);
    if dest.exists() && entry.sha256.is_some() {
        if let Ok(sha) = super::verify_file(entry, &dest) {
            let bytes = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
            return Ok(Fetched {
                path: dest,
                sha256: sha,
                bytes,
                cached: true,
                pinned_now: false,
            });
        }
    }
    if entry.urls.is_empty() {
        bail!(
            "model {} has no download URL (see its manifest); get the file and run `prep models add {} --file F.onnx --like {}`, or pass --model-file {}=F.onnx to prep build",
            entry.name,
            entry.name,
            entry.name,
            entry.name
        );
    }
    super::ensure_cache_dir(&dest)?;
    let mut errors = Vec::new();
    for url in &entry.urls {
        let tmp = dest.with_extension("onnx.part");
        match download(url, &tmp, timeout) {
            Ok((sha, bytes)) => {
                let pinned_now = entry.sha256.is_none();
                if let Some(pin) = &entry.sha256 {
                    if !sha.eq_ignore_ascii_case(pin) {
                        let _ = std::fs::remove_file(&tmp);
                        errors.push(format!(
                            "{url}: downloaded {bytes} bytes with sha256 {sha}, but model {} pins {pin}; refused",
                            entry.name
                        ));
                        continue;
                    }
                }
                std::fs::rename(&tmp, &dest)
                    .with_context(|| format!("cannot write {}", dest.display()))?;
                if pinned_now {
                    // Trust on first use: pin what was downloaded, in the user registry.
                    let mut e = entry.clone();
                    e.sha256 = Some(sha.clone());
                    e.bytes = Some(bytes);
                    reg.save_user_entry(&e)?;
                }
                return Ok(Fetched {
                    path: dest,
                    sha256: sha,
                    bytes,
                    cached: false,
                    pinned_now,
                });
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                errors.push(format!("{url}: {e:#}"));
            }
        }
    }
    bail!(
        "cannot fetch model {}:\n  {}",
        entry.name,
        errors.join("\n  ")
    )
}

fn download(url: &str, dest: &Path, timeout: Duration) -> Result<(String, u64)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .user_agent(concat!("prep/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    rt.block_on(async move {
        use futures_util::StreamExt;
        let resp = client.get(url).send().await.context("request failed")?;
        let status = resp.status();
        if !status.is_success() {
            bail!("HTTP {status}");
        }
        let expected = resp.content_length();
        let mut file = std::fs::File::create(dest)
            .with_context(|| format!("cannot create {}", dest.display()))?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.context("download interrupted")?;
            h.update(&chunk);
            n += chunk.len() as u64;
            file.write_all(&chunk)
                .with_context(|| format!("cannot write {}", dest.display()))?;
        }
        if let Some(len) = expected {
            if len != n {
                bail!("truncated download: {n} of {len} bytes");
            }
        }
        file.sync_all().ok();
        Ok((hex::encode(h.finalize()), n))
    })
}
