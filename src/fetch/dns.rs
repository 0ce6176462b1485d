//! A shared, caching DNS resolver (hickory) that applies the SSRF guard to every answer.
//!
//! reqwest connects only to the addresses this resolver returns, so the guard is applied
//! to the address actually connected to: a name that resolves to a refused address (DNS
//! rebinding included) never gets a connection. IP-literal URLs skip DNS and are checked
//! in `fetch::check_url`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::guard;

/// The name resolved only to refused addresses.
#[derive(Debug)]
pub struct BlockedAddress(pub String);

impl std::fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "blocked address: {} (open it with --allow-network if intended)",
            self.0
        )
    }
}
impl std::error::Error for BlockedAddress {}

/// The name could not be resolved.
#[derive(Debug)]
pub struct DnsFailure(pub String);

impl std::fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dns: {}", self.0)
    }
}
impl std::error::Error for DnsFailure {}

pub struct GuardedResolver {
    inner: TokioResolver,
    allow: Arc<Vec<IpNet>>,
}

impl GuardedResolver {
    pub fn new(allow: Arc<Vec<IpNet>>) -> Self {
        // The system configuration (/etc/resolv.conf, /etc/hosts); hickory caches answers
        // for their TTL, shared by every request of the run.
        let inner = match TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(_) => TokioResolver::builder_with_config(
                hickory_resolver::config::ResolverConfig::default(),
                hickory_resolver::name_server::TokioConnectionProvider::default(),
            ),
        };
        let mut inner = inner;
        inner.options_mut().cache_size = 64 * 1024;
        GuardedResolver {
            inner: inner.build(),
            allow,
        }
    }
}

/// Keep the allowed addresses; error naming the refused ones when none is left.
pub fn filter(
    name: &str,
    ips: Vec<IpAddr>,
    allow: &[IpNet],
) -> Result<Vec<IpAddr>, BlockedAddress> {
    let mut refused = Vec::new();
    let ok: Vec<IpAddr> = ips
        .into_iter()
        .filter(|ip| match guard::refusal(*ip, allow) {
            None => true,
            Some(why) => {
                refused.push(format!("{ip} ({why})"));
                false
            }
        })
        .collect();
    if ok.is_empty() {
        return Err(BlockedAddress(format!(
            "{name} resolves to {}",
            refused.join(", ")
        )));
    }
    Ok(ok)
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.inner.clone();
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let lookup = resolver.lookup_ip(host.as_str()).await.map_err(|e| {
                Box::new(DnsFailure(format!("{host}: {e}")))
                    as Box<dyn std::error::Error + Send + Sync>
            })?;
            let ips: Vec<IpAddr> = lookup.iter().collect();
            let ok = filter(&host, ips, &allow)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let addrs: Addrs = Box::new(ok.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
