//! Name resolution for the gate: static `[network.dns] hosts` first, then hickory-resolver
//! with the configured nameservers (or the system's), the whole lookup bounded by `timeout_ms`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::Resolver as Hickory;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// Why a name did not resolve. Each is one plain sentence (the text of a `dns_failed`
/// failure, docs/responses.md), never a resolver's debug dump.
///
/// ```
/// use proxy_gate::ResolveError;
/// let e = ResolveError::NoSuchName { name: "gone.test".into() };
/// assert_eq!(e.to_string(), "the name gone.test does not exist (NXDOMAIN)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The resolver could not be built (e.g. no usable system configuration).
    #[error("cannot build the DNS resolver: {0}")]
    Setup(String),
    /// The DNS server says the name does not exist.
    #[error("the name {name} does not exist (NXDOMAIN)")]
    NoSuchName {
        /// The name.
        name: String,
    },
    /// The name exists but has no address.
    #[error("the name {name} has no address (no A or AAAA record)")]
    NoAddress {
        /// The name.
        name: String,
    },
    /// The DNS server answered with an error code (`SERVFAIL`, `REFUSED`, ...).
    #[error("the DNS server could not answer for {name} ({code})")]
    Answered {
        /// The name.
        name: String,
        /// The response code's mnemonic.
        code: String,
    },
    /// The lookup failed otherwise (no DNS server could be reached, a broken answer).
    #[error("the lookup of {name} failed: {why}")]
    Lookup {
        /// The name.
        name: String,
        /// Why, in plain words.
        why: String,
    },
    /// The lookup took longer than the configured timeout.
    #[error("no DNS server answered for {name} within {ms} ms")]
    Timeout {
        /// The name.
        name: String,
        /// The timeout.
        ms: u128,
    },
}

impl ResolveError {
    /// The error of a failed lookup of `name`, from the resolver's (`timeout` the configured
    /// bound, which the resolver's own timeout is).
    fn of(name: &str, e: &hickory_resolver::net::NetError, timeout: Duration) -> Self {
        use hickory_resolver::net::{DnsError, NetError};
        use hickory_resolver::proto::op::ResponseCode;
        let name = name.to_owned();
        let code_text = |code: ResponseCode| match code {
            ResponseCode::ServFail => "SERVFAIL".to_owned(),
            ResponseCode::Refused => "REFUSED".to_owned(),
            ResponseCode::FormErr => "FORMERR".to_owned(),
            ResponseCode::NotImp => "NOTIMP".to_owned(),
            ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
            other => format!("response code {}", u16::from(other)),
        };
        match e {
            NetError::Dns(DnsError::NoRecordsFound(none)) => match none.response_code {
                ResponseCode::NXDomain => Self::NoSuchName { name },
                ResponseCode::NoError => Self::NoAddress { name },
                code => Self::Answered {
                    name,
                    code: code_text(code),
                },
            },
            NetError::Dns(DnsError::ResponseCode(code)) => Self::Answered {
                name,
                code: code_text(*code),
            },
            NetError::Timeout => Self::Timeout {
                name,
                ms: timeout.as_millis(),
            },
            NetError::NoConnections => Self::Lookup {
                name,
                why: "no DNS server could be reached".to_owned(),
            },
            NetError::Io(io) => Self::Lookup {
                name,
                why: format!(
                    "the DNS server could not be reached ({})",
                    proxy_core::io_error_text(io)
                ),
            },
            other => Self::Lookup {
                name,
                why: other.to_string(),
            },
        }
    }
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
            Ok(Err(e)) => Err(ResolveError::of(name, &e, self.timeout)),
            Ok(Ok(l)) => {
                let mut ips: Vec<IpAddr> = Vec::new();
                for ip in l.iter() {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
                if ips.is_empty() {
                    return Err(ResolveError::NoAddress {
                        name: name.to_owned(),
                    });
                }
                Ok(ips)
            }
        }
    }
}
