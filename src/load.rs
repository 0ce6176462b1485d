//! The loader stage: image references → bytes, in record order, with bounded concurrency.
//!
//! Local files and HTTP(S) URLs go through one ordered, bounded stream on a tokio
//! runtime (`buffered(concurrency)`), so a slow URL never reorders the output and at most
//! `concurrency` images are in flight. A failed load is a [`RowFailure`] for that row.

use std::time::Duration;

use futures_util::StreamExt;

use crate::error::RowFailure;
use crate::record::ImageRef;

/// Bodies larger than this are refused while streaming (`too_large`).
pub const MAX_BYTES: u64 = 64 << 20;

#[derive(Clone)]
pub struct Loader {
    http: Option<reqwest::Client>,
    concurrency: usize,
}

impl Loader {
    /// `with_http`: build an HTTP client (only sources with URLs need one).
    pub fn new(with_http: bool, timeout: Duration, concurrency: usize) -> anyhow::Result<Self> {
        let http = if with_http {
            // reqwest is built without a bundled TLS crypto provider; use ring's. Installing
            // twice is harmless (the first one stays).
            let _ = rustls::crypto::ring::default_provider().install_default();
            Some(
                reqwest::Client::builder()
                    .user_agent(concat!(
                        "prep/",
                        env!("CARGO_PKG_VERSION"),
                        " (+T2I-Adapter dataset builder)"
                    ))
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .redirect(reqwest::redirect::Policy::limited(5))
                    .build()
                    .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?,
            )
        } else {
            None
        };
        Ok(Loader {
            http,
            concurrency: concurrency.max(1),
        })
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Load one image reference.
    pub async fn load(&self, image: &ImageRef) -> Result<Vec<u8>, RowFailure> {
        match image {
            ImageRef::Path(p) => tokio::fs::read(p).await.map_err(|e| {
                let class = if e.kind() == std::io::ErrorKind::NotFound {
                    "file_not_found"
                } else {
                    "io"
                };
                RowFailure::new(class, format!("{}: {e}", p.display()))
            }),
            ImageRef::Url(url) => match &self.http {
                Some(client) => fetch(client, url).await,
                None => Err(RowFailure::new(
                    "no_http",
                    format!("{url}: this source does not fetch URLs"),
                )),
            },
        }
    }

    /// Run `f` over `items` with this loader's concurrency, yielding results in input order.
    pub fn ordered<I, T, F, Fut>(&self, items: I, f: F) -> impl futures_util::Stream<Item = T>
    where
        I: futures_util::Stream,
        F: FnMut(I::Item) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        items.map(f).buffered(self.concurrency)
    }
}

fn classify(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        return "timeout";
    }
    if e.is_redirect() {
        return "redirect_loop";
    }
    if e.is_connect() {
        let text = format!("{e:?}").to_ascii_lowercase();
        if text.contains("dns") || text.contains("resolve") || text.contains("lookup") {
            return "dns";
        }
        return "connect";
    }
    if e.is_body() || e.is_decode() {
        return "truncated";
    }
    "http_error"
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, RowFailure> {
    let fail = |e: reqwest::Error| RowFailure::new(classify(&e), format!("{url}: {e}"));
    let mut resp = client.get(url).send().await.map_err(fail)?;
    let status = resp.status();
    if !status.is_success() {
        let class = if status.is_server_error() {
            "http_5xx".to_string()
        } else {
            format!("http_{}", status.as_u16())
        };
        return Err(RowFailure::new(class, format!("{url}: HTTP {status}")));
    }
    if let Some(len) = resp.content_length() {
        if len > MAX_BYTES {
            return Err(RowFailure::new(
                "too_large",
                format!("{url}: {len} bytes (limit {MAX_BYTES})"),
            ));
        }
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(fail)? {
        if body.len() as u64 + chunk.len() as u64 > MAX_BYTES {
            return Err(RowFailure::new(
                "too_large",
                format!("{url}: body over {MAX_BYTES} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
