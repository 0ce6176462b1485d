//! Object-store output (`--out s3://…`, `gs://…`, `az://…`) over the `object_store` crate.
//!
//! Architecture invariant: an object becomes visible whole or not at all. Small files are
//! one PUT, large ones one multipart upload (parts are invisible until the upload
//! completes). The commit point of a shard is its stats object, written with a
//! conditional create (`PutMode::Create`, `If-None-Match: *` on S3): of two workers that
//! finish the same shard exactly one commits. A store that silently overwrites on a
//! conditional create is refused at open unless `--unsafe-no-conditional-put`.
//!
//! The crate is async; prep's stages are threads. [`Remote`] owns a small tokio runtime and
//! blocks on it, so any stage thread can call it (never from inside another runtime).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use object_store::path::Path as ObjPath;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, UpdateVersion,
    WriteMultipart,
};

/// How `--out` URLs are opened (flags that do not change output bytes).
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// `--s3-endpoint`: an S3-compatible endpoint (http only on loopback).
    pub s3_endpoint: Option<String>,
    /// `--unsafe-no-conditional-put`: accept a store that cannot create conditionally.
    pub unsafe_no_conditional_put: bool,
}

/// Is `out` an object-store URL rather than a local path?
pub fn is_url(out: &str) -> bool {
    ["s3://", "gs://", "az://", "abfs://", "abfss://"]
        .iter()
        .any(|p| out.starts_with(p))
        || out.contains("://")
}

/// Files at least this big go up as multipart uploads of this part size, at most
/// [`MAX_PARTS_IN_FLIGHT`] parts buffered: memory per upload ≤ (1 + that) × part size.
pub const PART_SIZE: usize = 8 << 20;
pub const MAX_PARTS_IN_FLIGHT: usize = 4;

/// What a conditional write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written; the new version (for a later conditional update).
    Written(UpdateVersion),
    /// `Create` found an object there already.
    Exists,
    /// `Update` found a different version (or no object).
    Conflict,
}

/// Requests this process sent, by kind (logical operations; the crate's internal
/// retries of a throttled request are not counted again).
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub put: AtomicU64,
    pub multipart_parts: AtomicU64,
    pub get: AtomicU64,
    pub head: AtomicU64,
    pub list: AtomicU64,
    pub delete: AtomicU64,
}

impl RequestCounts {
    pub fn total(&self) -> u64 {
        [
            &self.put,
            &self.multipart_parts,
            &self.get,
            &self.head,
            &self.list,
            &self.delete,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    pub fn describe(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} requests: PUT {}, multipart parts {}, GET {}, HEAD {}, LIST {}, DELETE {}",
            self.total(),
            g(&self.put),
            g(&self.multipart_parts),
            g(&self.get),
            g(&self.head),
            g(&self.list),
            g(&self.delete)
        )
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub struct Remote {
    store: Arc<dyn ObjectStore>,
    counts: RequestCounts,
    prefix: ObjPath,
    url: String,
    rt: tokio::runtime::Runtime,
    conditional: bool,
    part_size: usize,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 12,
        retry_timeout: Duration::from_secs(300),
    }
}

fn loopback_http(endpoint: &str) -> bool {
    url::Url::parse(endpoint).is_ok_and(|u| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                None => false,
            }
    })
}

impl Remote {
    /// Open `url` (`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`),
    /// credentials from each cloud's standard environment chain, and check that the store
    /// creates conditionally.
    pub fn open(url: &str, opts: &RemoteOptions) -> Result<Self> {
        let mut r = Self::connect(url, opts, "--out")?;
        r.conditional = r.probe_conditional()?;
        if !r.conditional && !opts.unsafe_no_conditional_put {
            bail!(
                "{}: this store does not honour conditional creates (If-None-Match: *), so two workers could both commit a shard; \
                 use a store that does (AWS S3, GCS, Azure, MinIO, R2 all do), or pass --unsafe-no-conditional-put if only one worker writes here",
                r.url
            );
        }
        Ok(r)
    }

    /// Open `url` for reading only (`--input`, `prep inspect`, eval inputs): the same
    /// credentials and endpoint handling as [`Remote::open`], but nothing is written (no
    /// conditional-create probe), so read-only credentials suffice. `flag` names the
    /// option in messages.
    pub fn open_read(url: &str, opts: &RemoteOptions, flag: &str) -> Result<Self> {
        Self::connect(url, opts, flag)
    }

    fn connect(url: &str, opts: &RemoteOptions, flag: &str) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let parsed = url::Url::parse(url).with_context(|| {
            format!("{flag} {url}: not a valid URL; use s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX or a local path")
        })?;
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .with_context(|| format!("{flag} {url}: no bucket name (expected s3://BUCKET/PREFIX)"))?
            .to_string();
        let prefix = ObjPath::from(parsed.path().trim_matches('/'));
        if opts.s3_endpoint.is_some() && parsed.scheme() != "s3" {
            bail!("--s3-endpoint applies to s3:// URLs only, and {flag} is {url}");
        }
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(retry_config())
                    .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
                if std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none()
                {
                    b = b.with_region("us-east-1");
                }
                if let Some(ep) = &opts.s3_endpoint {
                    let u = url::Url::parse(ep).with_context(|| {
                        format!("--s3-endpoint {ep}: not a URL (e.g. https://s3.example.org)")
                    })?;
                    if u.scheme() == "http" && !loopback_http(ep) {
                        bail!("--s3-endpoint {ep}: plain http is allowed only on loopback (127.0.0.1, ::1, localhost); use https");
                    }
                    b = b
                        .with_endpoint(ep.trim_end_matches('/'))
                        .with_allow_http(u.scheme() == "http")
                        .with_virtual_hosted_style_request(false);
                }
                Arc::new(b.build().with_context(|| {
                    format!("{flag} {url}: cannot configure S3 (credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE-less web identity or instance metadata)")
                })?)
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(retry_config())
                    .build()
                    .with_context(|| format!("{flag} {url}: cannot configure Google Cloud Storage (credentials from GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT, else the metadata server)"))?,
            ),
            "az" | "abfs" | "abfss" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(&bucket)
                    .with_retry(retry_config())
                    .build()
                    .with_context(|| format!("{flag} {url}: cannot configure Azure Blob Storage (set AZURE_STORAGE_ACCOUNT_NAME and a key, SAS or AZURE_CLIENT_ID/SECRET/TENANT_ID)"))?,
            ),
            other => bail!(
                "{flag} {url}: unsupported scheme {other}://; use s3://, gs://, az:// or a local path"
            ),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("prep-objstore")
            .enable_all()
            .build()
            .context("cannot start the object-store runtime")?;
        Ok(Remote {
            store,
            counts: RequestCounts::default(),
            prefix,
            url: url.trim_end_matches('/').to_string(),
            rt,
            conditional: true,
            part_size: PART_SIZE,
        })
    }

    /// Create a probe object twice: the second create must be refused.
    fn probe_conditional(&self) -> Result<bool> {
        let rel = format!(
            ".prep-probe-{}-{}-{}",
            hostname(),
            std::process::id(),
            unix_nanos()
        );
        let first = self.put_mode(&rel, b"probe".to_vec(), PutMode::Create);
        let ok = match first {
            Ok(PutOutcome::Written(_)) => matches!(
                self.put_mode(&rel, b"probe".to_vec(), PutMode::Create),
                Ok(PutOutcome::Exists)
            ),
            Ok(_) => false,
            Err(e) => {
                let unsupported = e.chain().any(|c| {
                    c.downcast_ref::<object_store::Error>().is_some_and(|oe| {
                        matches!(
                            oe,
                            object_store::Error::NotImplemented { .. }
                                | object_store::Error::NotSupported { .. }
                        )
                    })
                });
                if !unsupported {
                    return Err(e.context(format!(
                        "cannot write to {} (check the bucket exists, the credentials, and --s3-endpoint)",
                        self.url
                    )));
                }
                false
            }
        };
        let _ = self.delete(&rel);
        Ok(ok)
    }

    pub fn url(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{rel}", self.url)
        }
    }

    pub fn conditional(&self) -> bool {
        self.conditional
    }

    pub fn requests(&self) -> &RequestCounts {
        &self.counts
    }

    fn key(&self, rel: &str) -> ObjPath {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// Size and version of `rel`, `None` when absent.
    pub fn head(&self, rel: &str) -> Result<Option<(u64, UpdateVersion)>> {
        let key = self.key(rel);
        if key.as_ref().is_empty() {
            return Ok(None); // the bucket itself is not an object
        }
        bump(&self.counts.head);
        match self.rt.block_on(self.store.head(&key)) {
            Ok(m) => Ok(Some((
                m.size,
                UpdateVersion {
                    e_tag: m.e_tag,
                    version: m.version,
                },
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot stat {}", self.url(rel))),
        }
    }

    /// Contents and version of `rel`, `None` when absent.
    pub fn get(&self, rel: &str) -> Result<Option<(Vec<u8>, UpdateVersion)>> {
        let key = self.key(rel);
        bump(&self.counts.get);
        let r = self.rt.block_on(async {
            let g = self.store.get(&key).await?;
            let v = UpdateVersion {
                e_tag: g.meta.e_tag.clone(),
                version: g.meta.version.clone(),
            };
            Ok::<_, object_store::Error>((g.bytes().await?.to_vec(), v))
        });
        match r {
            Ok(x) => Ok(Some(x)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.url(rel))),
        }
    }

    /// [`Remote::get`] from any thread, also one inside another tokio runtime (the
    /// loader's): the request runs on this store's own runtime and the caller waits.
    pub fn get_blocking(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let store = self.store.clone();
        let key = self.key(rel);
        bump(&self.counts.get);
        self.rt.spawn(async move {
            let r = async { store.get(&key).await?.bytes().await }.await;
            let _ = tx.send(r);
        });
        let r = rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the object-store runtime stopped"))?;
        self.read_result(rel, r.map(|b| b.to_vec()))
    }

    /// Bytes `range` of `rel` (one ranged GET), from any thread.
    pub fn get_range(&self, rel: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes> {
        let (tx, rx) = std::sync::mpsc::channel();
        let store = self.store.clone();
        let key = self.key(rel);
        bump(&self.counts.get);
        let r2 = range.clone();
        self.rt.spawn(async move {
            let _ = tx.send(store.get_range(&key, r2).await);
        });
        let r = rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the object-store runtime stopped"))?;
        r.with_context(|| {
            format!(
                "cannot read bytes {}..{} of {}",
                range.start,
                range.end,
                self.url(rel)
            )
        })
    }

    /// The contents of `rel` (`None` when absent), awaited from another runtime: the
    /// request runs on this store's runtime, so its connections stay there.
    pub async fn get_async(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let store = self.store.clone();
        let key = self.key(rel);
        bump(&self.counts.get);
        let r = self
            .rt
            .spawn(async move { store.get(&key).await?.bytes().await })
            .await
            .map_err(|e| anyhow::anyhow!("the object-store task failed: {e}"))?;
        self.read_result(rel, r.map(|b| b.to_vec()))
    }

    /// Many small objects at once (`concurrency` requests in flight), in order.
    pub fn get_many(&self, rels: &[String], concurrency: usize) -> Vec<Result<Option<Vec<u8>>>> {
        use futures_util::StreamExt;
        let rs: Vec<_> = self.rt.block_on(
            futures_util::stream::iter(rels.iter().map(|rel| {
                let key = self.key(rel);
                bump(&self.counts.get);
                async move { async { self.store.get(&key).await?.bytes().await }.await }
            }))
            .buffered(concurrency.max(1))
            .collect(),
        );
        rels.iter()
            .zip(rs)
            .map(|(rel, r)| self.read_result(rel, r.map(|b| b.to_vec())))
            .collect()
    }

    /// Many small objects written at once, each one whole-object PUT overwriting whatever
    /// is there, at most `concurrency` requests in flight. The first failure is returned
    /// (naming its URL) after the requests already started have finished.
    pub fn put_many(&self, items: Vec<(String, Vec<u8>)>, concurrency: usize) -> Result<()> {
        use futures_util::StreamExt;
        let rs: Vec<(String, object_store::Result<object_store::PutResult>)> = self.rt.block_on(
            futures_util::stream::iter(items.into_iter().map(|(rel, bytes)| {
                let key = self.key(&rel);
                bump(&self.counts.put);
                async move { (rel, self.store.put(&key, PutPayload::from(bytes)).await) }
            }))
            .buffer_unordered(concurrency.max(1))
            .collect(),
        );
        for (rel, r) in rs {
            r.with_context(|| {
                format!(
                    "cannot write {} (check the bucket exists, the credentials allow writing, and --s3-endpoint)",
                    self.url(&rel)
                )
            })?;
        }
        Ok(())
    }

    fn read_result<T>(&self, rel: &str, r: object_store::Result<T>) -> Result<Option<T>> {
        match r {
            Ok(x) => Ok(Some(x)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot read {} (check the bucket exists, the credentials, and --s3-endpoint)",
                    self.url(rel)
                )
            }),
        }
    }

    /// Stream `rel` into the local file `dest` (bounded memory: one response chunk at a
    /// time); `false` when the object does not exist.
    pub fn download_to(&self, rel: &str, dest: &Path) -> Result<bool> {
        use futures_util::StreamExt;
        use std::io::Write;
        let key = self.key(rel);
        bump(&self.counts.get);
        let r: Result<bool> = self.rt.block_on(async {
            let g = match self.store.get(&key).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?,
            );
            let mut stream = g.into_stream();
            while let Some(chunk) = stream.next().await {
                f.write_all(&chunk?)
                    .with_context(|| format!("cannot write {}", dest.display()))?;
            }
            f.flush()
                .with_context(|| format!("cannot write {}", dest.display()))?;
            Ok(true)
        });
        r.with_context(|| {
            format!(
                "cannot download {} (check the bucket exists, the credentials, and --s3-endpoint)",
                self.url(rel)
            )
        })
    }

    /// Is there at least one object under `dir/` (one LIST request, first page only)?
    pub fn any_under(&self, dir: &str) -> Result<bool> {
        use futures_util::StreamExt;
        let key = self.key(dir);
        bump(&self.counts.list);
        let first = self
            .rt
            .block_on(async { self.store.list(Some(&key)).next().await });
        match first {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(e).with_context(|| {
                format!(
                    "cannot list {} (check the bucket exists, the credentials, and --s3-endpoint)",
                    self.url(dir)
                )
            }),
        }
    }

    /// Write `bytes` to `rel` with `mode`; conflicts are outcomes, not errors.
    pub fn put_mode(&self, rel: &str, bytes: Vec<u8>, mode: PutMode) -> Result<PutOutcome> {
        let key = self.key(rel);
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        bump(&self.counts.put);
        match self
            .rt
            .block_on(self.store.put_opts(&key, PutPayload::from(bytes), opts))
        {
            Ok(r) => Ok(PutOutcome::Written(UpdateVersion {
                e_tag: r.e_tag,
                version: r.version,
            })),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::Exists),
            Err(object_store::Error::Precondition { .. }) => Ok(PutOutcome::Conflict),
            Err(e) => Err(anyhow::Error::new(e).context(format!("cannot write {}", self.url(rel)))),
        }
    }

    /// Create `rel` only if absent (plain overwrite under `--unsafe-no-conditional-put`).
    pub fn put_create(&self, rel: &str, bytes: Vec<u8>) -> Result<PutOutcome> {
        let mode = if self.conditional {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        self.put_mode(rel, bytes, mode)
    }

    /// Upload a finished local file to `rel`, overwriting: one PUT when small, otherwise
    /// a multipart upload streamed from disk with bounded memory.
    pub fn upload_file(&self, path: &Path, rel: &str) -> Result<()> {
        let len = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if len < self.part_size as u64 {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            self.put_mode(rel, bytes, PutMode::Overwrite)?;
            return Ok(());
        }
        let key = self.key(rel);
        let part = self.part_size;
        self.rt
            .block_on(async {
                use std::io::Read;
                bump(&self.counts.put); // create + complete are two more requests
                bump(&self.counts.put);
                let upload = self.store.put_multipart(&key).await?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, part);
                let mut f =
                    std::fs::File::open(path).map_err(|e| object_store::Error::Generic {
                        store: "prep",
                        source: Box::new(e),
                    })?;
                let mut buf = vec![0u8; part];
                loop {
                    let n = f.read(&mut buf).map_err(|e| object_store::Error::Generic {
                        store: "prep",
                        source: Box::new(e),
                    })?;
                    if n == 0 {
                        break;
                    }
                    w.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await?;
                    w.write(&buf[..n]);
                    bump(&self.counts.multipart_parts);
                }
                w.finish().await
            })
            .with_context(|| {
                format!(
                    "cannot upload {} to {} (multipart, {len} bytes)",
                    path.display(),
                    self.url(rel)
                )
            })?;
        Ok(())
    }

    pub fn delete(&self, rel: &str) -> Result<()> {
        let key = self.key(rel);
        bump(&self.counts.delete);
        match self.rt.block_on(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete {}", self.url(rel))),
        }
    }

    /// Objects under `dir` (relative names and sizes), sorted.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        use futures_util::TryStreamExt;
        let key = self.key(dir);
        bump(&self.counts.list);
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.store.list(Some(&key)).try_collect())
            .with_context(|| format!("cannot list {}", self.url(dir)))?;
        let base = self.prefix.as_ref().len();
        let mut out: Vec<(String, u64)> = metas
            .into_iter()
            .map(|m| {
                let full = m.location.as_ref();
                let rel = if base == 0 {
                    full.to_string()
                } else {
                    full.get(base + 1..).unwrap_or("").to_string()
                };
                (rel, m.size)
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_loopback() {
        assert!(is_url("s3://b/p"));
        assert!(is_url("gs://b"));
        assert!(!is_url("out/demo"));
        assert!(loopback_http("http://127.0.0.1:9000"));
        assert!(loopback_http("http://localhost:9000"));
        assert!(!loopback_http("http://10.0.0.1:9000"));
        assert!(!loopback_http("https://127.0.0.1:9000"));
    }

    #[test]
    fn plain_http_refused_off_loopback() {
        let e = Remote::open(
            "s3://b/p",
            &RemoteOptions {
                s3_endpoint: Some("http://192.0.2.1:9000".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("plain http is allowed only on loopback"),
            "{e}"
        );
    }
}
