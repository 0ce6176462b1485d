//! The loader stage: image references → bytes, in record order, with bounded concurrency.
//!
//! Local files, objects under an object-store `--input` and HTTP(S) URLs go through one
//! ordered, bounded stream on a tokio runtime (`buffered(concurrency)`; objects are
//! fetched on the object store's own runtime), so a slow URL never reorders the output
//! and at most `concurrency` images are in flight. URLs go through the download stage
//! ([`crate::fetch::Fetcher`]: retries, SSRF guard, opt-out, size cap). A failed load is a
//! [`RowFailure`] for that row, with the HTTP status and the number of attempts.

use futures_util::StreamExt;

use crate::error::RowFailure;
use crate::fetch::{FetchSettings, Fetched, Fetcher};
use crate::record::ImageRef;

#[derive(Clone)]
pub struct Loader {
    http: Option<Fetcher>,
    concurrency: usize,
}

impl Loader {
    /// `http`: the download settings when the source has URLs.
    pub fn new(http: Option<FetchSettings>, concurrency: usize) -> anyhow::Result<Self> {
        let http = http.map(Fetcher::new).transpose()?;
        Ok(Loader {
            http,
            concurrency: concurrency.max(1),
        })
    }

    /// Load one image reference.
    pub async fn load(&self, image: &ImageRef) -> Fetched {
        match image {
            ImageRef::Path(p) => Fetched {
                result: tokio::fs::read(p).await.map_err(|e| {
                    let class = if e.kind() == std::io::ErrorKind::NotFound {
                        "file_not_found"
                    } else {
                        "io"
                    };
                    RowFailure::new(class, format!("{}: {e}", p.display()))
                }),
                http_status: None,
                attempts: 1,
            },
            ImageRef::Object(o) => Fetched {
                result: match o.remote.get_async(&o.rel).await {
                    Ok(Some(b)) => Ok(b),
                    Ok(None) => Err(RowFailure::new(
                        "file_not_found",
                        format!("{}: no such object under --input", o.url()),
                    )),
                    Err(e) => Err(RowFailure::new("object_store", format!("{e:#}"))),
                },
                http_status: None,
                attempts: 1,
            },
            ImageRef::Url(url) => match &self.http {
                Some(f) => f.fetch(url).await,
                None => Fetched {
                    result: Err(RowFailure::new(
                        "no_http",
                        format!("{url}: this source does not fetch URLs"),
                    )),
                    http_status: None,
                    attempts: 0,
                },
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
