//! The download stage: HTTP(S) image fetching that is fast, polite and safe to run inside
//! a cloud network.
//!
//! - one shared reqwest client (connection reuse) over a caching hickory resolver;
//! - a per-host semaphore (`--per-host-concurrency`) on top of the global in-flight bound;
//! - per request: connect and read-idle timeouts of `--timeout`, and the same as a total
//!   bound per attempt; `--retries` with exponential backoff and jitter for retryable
//!   failures (connect errors, timeouts, 5xx); 429/503 honour `Retry-After`;
//! - at most 5 redirects, loops detected, only http/https, every hop checked by the SSRF
//!   guard (`guard.rs`; names through `dns.rs`);
//! - `--max-bytes` enforced while streaming (reading stops);
//! - `X-Robots-Tag` opt-out (`noai`, `noimageai`, `noindex`, `noimageindex`, unscoped or
//!   scoped to `prep:`) honoured before the body is read.

pub mod dns;
pub mod guard;
pub mod robots;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::Semaphore;

use crate::error::RowFailure;

/// Settings of the download stage.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub timeout: Duration,
    pub retries: u32,
    pub max_bytes: u64,
    pub per_host_concurrency: usize,
    pub allow_networks: Vec<IpNet>,
    /// X-Robots-Tag directives that opt an image out (empty: opt-out not honoured).
    pub opt_out_directives: Vec<String>,
    pub user_agent_token: Option<String>,
    /// Longest `Retry-After` honoured; a longer one fails the row (`http_429`/`http_503`).
    pub max_retry_after: Duration,
    /// First backoff delay; doubled each retry, ±50 % jitter.
    pub backoff_base: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            timeout: Duration::from_secs(10),
            retries: 2,
            max_bytes: 32 << 20,
            per_host_concurrency: 16,
            allow_networks: Vec::new(),
            opt_out_directives: robots::DEFAULT_DIRECTIVES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            user_agent_token: None,
            max_retry_after: Duration::from_secs(60),
            backoff_base: Duration::from_millis(250),
        }
    }
}

/// What one URL gave.
#[derive(Debug)]
pub struct Fetched {
    pub result: Result<Vec<u8>, RowFailure>,
    /// The final HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    pub attempts: u32,
}

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    settings: Arc<FetchSettings>,
    hosts: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

pub fn user_agent(token: Option<&str>) -> String {
    let base = concat!(
        "prep/",
        env!("CARGO_PKG_VERSION"),
        " (T2I-Adapter dataset builder; honours X-Robots-Tag noai)"
    );
    match token {
        Some(t) if !t.is_empty() => format!("{base} {t}"),
        _ => base.to_string(),
    }
}

/// Refuse non-http(s) schemes and refused IP literals in a URL.
pub fn check_url(url: &reqwest::Url, allow: &[IpNet]) -> Result<(), RowFailure> {
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(RowFailure::new(
                "unsupported_scheme",
                format!("{url}: only http and https are fetched, not {other}"),
            ))
        }
    }
    let ip: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        _ => None,
    };
    if let Some(ip) = ip {
        if let Some(why) = guard::refusal(ip, allow) {
            return Err(RowFailure::new(
                "blocked_address",
                format!("{url}: {ip} is a {why}; open it with --allow-network if intended"),
            ));
        }
    }
    Ok(())
}

/// A redirect refused by policy, carried through reqwest's error chain.
#[derive(Debug)]
struct RedirectRefused(RowFailure);
impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.detail)
    }
}
impl std::error::Error for RedirectRefused {}

fn classify(e: &reqwest::Error, url: &str) -> RowFailure {
    // Our own causes first: they sit somewhere in the source chain.
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<RedirectRefused>() {
            return r.0.clone();
        }
        if let Some(b) = s.downcast_ref::<dns::BlockedAddress>() {
            return RowFailure::new("blocked_address", format!("{url}: {b}"));
        }
        if let Some(d) = s.downcast_ref::<dns::DnsFailure>() {
            return RowFailure::new("dns", format!("{url}: {d}"));
        }
        src = s.source();
    }
    let class = if e.is_timeout() {
        "timeout"
    } else if e.is_redirect() {
        "redirect_loop"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "truncated"
    } else if e.is_request() {
        "connect"
    } else {
        "http_error"
    };
    // The full chain says more than the top-level message.
    let mut detail = format!("{url}: {e}");
    let mut s = std::error::Error::source(e);
    while let Some(c) = s {
        detail.push_str(&format!(": {c}"));
        s = c.source();
    }
    RowFailure::new(class, detail)
}

fn retryable(class: &str) -> bool {
    matches!(
        class,
        "timeout" | "connect" | "http_5xx" | "http_429" | "http_503" | "truncated"
    )
}

/// Seconds from a `Retry-After` header (delta-seconds or an HTTP date).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_parse(v)?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(v).ok().or_else(|| {
        // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
        let parts: Vec<&str> = v.split_whitespace().collect();
        if parts.len() != 6 {
            return None;
        }
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|m| *m == parts[2])?
            + 1;
        let s = format!(
            "{}-{:02}-{:02}T{}Z",
            parts[3],
            month,
            parts[1].parse::<u32>().ok()?,
            parts[4]
        );
        humantime::parse_rfc3339(&s).ok()
    })
}

/// Backoff before retry `attempt` (1-based): base·2^(attempt−1), ±50 % jitter.
fn backoff(base: Duration, attempt: u32, url: &str) -> Duration {
    let exp = base.saturating_mul(1u32 << (attempt - 1).min(10));
    // Jitter from a hash of the URL, the attempt and the clock: decorrelates retries
    // without a global RNG.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for b in url
        .bytes()
        .chain(attempt.to_le_bytes())
        .chain(nanos.to_le_bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let f = 0.5 + (h % 1000) as f64 / 1000.0; // 0.5 .. 1.5
    exp.mul_f64(f)
}

impl Fetcher {
    pub fn new(settings: FetchSettings) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let allow = Arc::new(settings.allow_networks.clone());
        let policy_allow = allow.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > 5 {
                let msg = format!("{}: more than 5 redirects", attempt.url());
                return attempt.error(RedirectRefused(RowFailure::new("redirect_loop", msg)));
            }
            if attempt.previous().iter().any(|u| u == attempt.url()) {
                let msg = format!("{}: redirect loop", attempt.url());
                return attempt.error(RedirectRefused(RowFailure::new("redirect_loop", msg)));
            }
            if let Err(f) = check_url(attempt.url(), &policy_allow) {
                let f = RowFailure::new(f.class, format!("redirected to {}", f.detail));
                return attempt.error(RedirectRefused(f));
            }
            attempt.follow()
        });
        let client = reqwest::Client::builder()
            .user_agent(user_agent(settings.user_agent_token.as_deref()))
            .connect_timeout(settings.timeout)
            .read_timeout(settings.timeout)
            .timeout(settings.timeout)
            .redirect(policy)
            .no_proxy()
            .pool_max_idle_per_host(settings.per_host_concurrency.max(1))
            .dns_resolver(Arc::new(dns::GuardedResolver::new(allow)))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
        Ok(Fetcher {
            client,
            settings: Arc::new(settings),
            hosts: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn host_permits(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_host_concurrency.max(1))))
            .clone()
    }

    /// Fetch one URL with retries.
    pub async fn fetch(&self, url: &str) -> Fetched {
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(e) => {
                return Fetched {
                    result: Err(RowFailure::new("bad_url", format!("{url}: {e}"))),
                    http_status: None,
                    attempts: 0,
                }
            }
        };
        if let Err(f) = check_url(&parsed, &self.settings.allow_networks) {
            return Fetched {
                result: Err(f),
                http_status: None,
                attempts: 0,
            };
        }
        let permits = self.host_permits(parsed.host_str().unwrap_or(""));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (result, status, retry_after) = {
                let _permit = permits.acquire().await;
                self.attempt(&parsed).await
            };
            let fail = match &result {
                Ok(_) => None,
                Err(f) => Some(f.class.clone()),
            };
            let Some(class) = fail.filter(|c| retryable(c) && attempts <= self.settings.retries)
            else {
                return Fetched {
                    result,
                    http_status: status,
                    attempts,
                };
            };
            let wait = match retry_after {
                Some(d) if d > self.settings.max_retry_after => {
                    let f = RowFailure::new(
                        class,
                        format!(
                            "{url}: Retry-After {}s is over the {}s limit",
                            d.as_secs(),
                            self.settings.max_retry_after.as_secs()
                        ),
                    );
                    return Fetched {
                        result: Err(f),
                        http_status: status,
                        attempts,
                    };
                }
                Some(d) => d,
                None => backoff(self.settings.backoff_base, attempts, url),
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: (result, HTTP status, Retry-After).
    async fn attempt(
        &self,
        url: &reqwest::Url,
    ) -> (Result<Vec<u8>, RowFailure>, Option<u16>, Option<Duration>) {
        let s = &self.settings;
        let mut resp = match self.client.get(url.clone()).send().await {
            Ok(r) => r,
            Err(e) => return (Err(classify(&e, url.as_str())), None, None),
        };
        let status = resp.status();
        let code = Some(status.as_u16());
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if !status.is_success() {
            let class = match status.as_u16() {
                429 => "http_429".to_string(),
                503 => "http_503".to_string(),
                c if (500..600).contains(&c) => "http_5xx".to_string(),
                c => format!("http_{c}"),
            };
            return (
                Err(RowFailure::new(class, format!("{url}: HTTP {status}"))),
                code,
                retry_after,
            );
        }
        if !s.opt_out_directives.is_empty() {
            let values: Vec<&str> = resp
                .headers()
                .get_all("x-robots-tag")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if let Some(d) = robots::opted_out(&values, "prep", &s.opt_out_directives) {
                return (
                    Err(RowFailure::new(
                        "opt_out_x_robots_tag",
                        format!("{url}: X-Robots-Tag {d}"),
                    )),
                    code,
                    None,
                );
            }
        }
        if let Some(len) = resp.content_length() {
            if len > s.max_bytes {
                return (
                    Err(RowFailure::new(
                        "too_large",
                        format!("{url}: {len} bytes, over --max-bytes {}", s.max_bytes),
                    )),
                    code,
                    None,
                );
            }
        }
        let mut body =
            Vec::with_capacity(resp.content_length().unwrap_or(64 << 10).min(s.max_bytes) as usize);
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > s.max_bytes {
                        return (
                            Err(RowFailure::new(
                                "too_large",
                                format!("{url}: body over --max-bytes {}", s.max_bytes),
                            )),
                            code,
                            None,
                        );
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    let mut f = classify(&e, url.as_str());
                    if f.class == "http_error" || f.class == "connect" {
                        f.class = "truncated".into();
                    }
                    return (Err(f), code, None);
                }
            }
        }
        (Ok(body), code, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert!(parse_retry_after("soon").is_none());
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 1..5 {
            let d = backoff(base, attempt, "http://x/");
            let nominal = 100.0 * f64::from(1u32 << (attempt - 1));
            let ms = d.as_secs_f64() * 1000.0;
            assert!(
                ms >= nominal * 0.5 && ms <= nominal * 1.5,
                "attempt {attempt}: {ms}ms"
            );
        }
    }

    #[test]
    fn urls_are_checked_before_any_connection() {
        let allow = guard::parse_networks(&["127.0.0.1/32".into()]).unwrap();
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_url(&u("http://127.0.0.1:8080/a.jpg"), &allow).is_ok());
        assert_eq!(
            check_url(&u("http://127.0.0.2/a.jpg"), &allow)
                .unwrap_err()
                .class,
            "blocked_address"
        );
        assert_eq!(
            check_url(&u("http://[::1]/a.jpg"), &allow)
                .unwrap_err()
                .class,
            "blocked_address"
        );
        assert_eq!(
            check_url(&u("http://169.254.169.254/latest/meta-data"), &[])
                .unwrap_err()
                .class,
            "blocked_address"
        );
        assert_eq!(
            check_url(&u("ftp://example.com/a.jpg"), &[])
                .unwrap_err()
                .class,
            "unsupported_scheme"
        );
        assert_eq!(
            check_url(&u("file:///etc/passwd"), &[]).unwrap_err().class,
            "unsupported_scheme"
        );
    }
}
