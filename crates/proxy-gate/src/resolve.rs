//! Name resolution for the gate: static `[network.dns] hosts` first, then hickory-resolver
//! with the configured nameservers (or the system's), the whole lookup bounded by `timeout_ms`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::Resolver as Hickory;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The resolver could not be built (e.g. no usable system configuration).
    #[error("cannot build the DNS resolver: {0}")]
    Setup(String),
    /// The lookup failed (NXDOMAIN, SERVFAIL, no answer).
    #[error("lookup of {name} failed: {why}")]
    Lookup {
        /// The name.
        name: String,
        /// Why.
        why: String,
    },
    /// The lookup took longer than the configured timeout.
    #[error("lookup of {name} timed out after {ms} ms")]
    Timeout {
        /// The name.
        name: String,
        /// The timeout.
        ms: u128,
    },
}

/// The gate's resolver.
#[derive(Debug, Clone)]
pub struct Resolver {
    hosts: BTreeMap<String, Vec<IpAddr>>,
    inner: TokioResolver,
    timeout: Duration,
}

impl Resolver {
    /// A resolver for `nameservers` (`None`: the system's, from /etc/resolv.conf), answering
    /// `hosts` itself, with the whole lookup bounded by `timeout`.
    pub fn new(
        nameservers: Option<&[SocketAddr]>,
        hosts: BTreeMap<String, Vec<IpAddr>>,
        timeout: Duration,
    ) -> Result<Self, ResolveError> {
        let mut builder = match nameservers {
            Some(list) => {
                let servers = list
                    .iter()
                    .map(|sa| {
                        let mut ns = NameServerConfig::udp_and_tcp(sa.ip());
                        for c in &mut ns.connections {
                            c.port = sa.port();
                        }
                        ns
                    })
                    .collect();
                Hickory::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    TokioRuntimeProvider::default(),
                )
            }
            None => Hickory::builder_tokio().map_err(|e| ResolveError::Setup(e.to_string()))?,
        };
        let o = builder.options_mut();
        o.timeout = timeout;
        o.attempts = 1;
        o.try_tcp_on_error = true;
        let inner = builder
            .build()
            .map_err(|e| ResolveError::Setup(e.to_string()))?;
        Ok(Self {
            hosts,
            inner,
            timeout,
        })
    }

    /// Resolves a canonical name once. The name is queried as fully qualified, so no search
    /// domain is ever appended.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Some(ips) = self.hosts.get(name) {
            return Ok(ips.clone());
        }
        let fqdn = format!("{name}.");
        let lookup = tokio::time::timeout(self.timeout, self.inner.lookup_ip(fqdn.as_str())).await;
        match lookup {
            Err(_) => Err(ResolveError::Timeout {
                name: name.to_owned(),
                ms: self.timeout.as_millis(),
            }),
            Ok(Err(e)) => Err(ResolveError::Lookup {
                name: name.to_owned(),
                why: e.to_string(),
            }),
            Ok(Ok(l)) => {
                let mut ips: Vec<IpAddr> = Vec::new();
                for ip in l.iter() {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
                if ips.is_empty() {
                    return Err(ResolveError::Lookup {
                        name: name.to_owned(),
                        why: "no addresses".into(),
                    });
                }
                Ok(ips)
            }
        }
    }
}
