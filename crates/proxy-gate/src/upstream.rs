//! Chaining through an upstream HTTP proxy named by netproxy's own environment
//! (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY` and their lowercase forms), when
//! `allow_upstream_proxy` is on. The gate still judges and resolves every target first; what the
//! upstream does with the name afterwards is outside netproxy's control (docs/security.md).

use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;

use ipnet::IpNet;
use proxy_core::{Failure, Host, Protocol, UpstreamFailure, Via, split_authority};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::resolve::Resolver;

/// One upstream proxy: `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The proxy's host.
    pub host: Host,
    /// The proxy's port.
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host.to_uri_host(), self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Bypass {
    All,
    Domain(String),
    Net(IpNet),
}

/// The upstream proxies and the hosts that bypass them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamProxies {
    http: Option<Endpoint>,
    https: Option<Endpoint>,
    bypass: Vec<Bypass>,
}

/// Parses `http://host:port` (scheme optional, port 80 by default).
fn parse_endpoint(var: &str, value: &str) -> Result<Endpoint, String> {
    let v = value.trim();
    let rest = match v.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{var}: only http:// upstream proxies are supported, not {scheme}://"
            ));
        }
        None => v,
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.contains('@') {
        return Err(format!(
            "{var}: netproxy cannot authenticate to an upstream proxy: remove the credentials from the URL, or use a proxy that needs none"
        ));
    }
    let (host, port) = split_authority(authority).map_err(|e| format!("{var}: {e}"))?;
    let host = Host::parse(host).map_err(|e| format!("{var}: invalid host: {e}"))?;
    Ok(Endpoint {
        host,
        port: port.unwrap_or(80),
    })
}

impl UpstreamProxies {
    /// Reads the proxies from an environment lookup (uppercase names win over lowercase).
    /// Returns the proxies and a message for each variable that could not be used.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let read = |upper: &str, lower: &str| {
            get(upper)
                .or_else(|| get(lower))
                .filter(|v| !v.trim().is_empty())
        };
        let mut problems = Vec::new();
        let mut endpoint = |upper: &str, lower: &str| {
            read(upper, lower).and_then(|v| match parse_endpoint(upper, &v) {
                Ok(e) => Some(e),
                Err(msg) => {
                    problems.push(msg);
                    None
                }
            })
        };
        let http = endpoint("HTTP_PROXY", "http_proxy");
        let https = endpoint("HTTPS_PROXY", "https_proxy");
        let bypass = read("NO_PROXY", "no_proxy")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(|e| {
                        if e == "*" {
                            return Bypass::All;
                        }
                        if let Ok(net) = e.parse::<IpNet>() {
                            return Bypass::Net(net);
                        }
                        if let Ok(ip) = e.trim_matches(['[', ']']).parse::<IpAddr>() {
                            return Bypass::Net(IpNet::from(ip));
                        }
                        let host = e.split(':').next().unwrap_or(e);
                        Bypass::Domain(host.trim_start_matches('.').to_ascii_lowercase())
                    })
                    .collect()
            })
            .unwrap_or_default();
        (
            Self {
                http,
                https,
                bypass,
            },
            problems,
        )
    }

    /// Whether any upstream proxy is configured.
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The upstream proxy for a target: `HTTP_PROXY` for plain HTTP, `HTTPS_PROXY` for tunnels;
    /// none when `NO_PROXY` names the host.
    pub fn for_target(&self, protocol: Protocol, host: &Host) -> Option<&Endpoint> {
        let endpoint = match protocol {
            Protocol::Http => self.http.as_ref(),
            Protocol::HttpsConnect => self.https.as_ref(),
            // A request inside an intercepted tunnel goes over its tunnel's connection.
            // A name lookup is never dialled (`run --isolate` refuses it).
            Protocol::Socks5Tcp | Protocol::Socks5Udp | Protocol::Https | Protocol::Dns => None,
        }?;
        let bypassed = self.bypass.iter().any(|b| match b {
            Bypass::All => true,
            Bypass::Net(net) => host.policy_ip().is_some_and(|ip| net.contains(&ip)),
            Bypass::Domain(d) => host.as_name().is_some_and(|n| {
                n == d
                    || (n.len() > d.len()
                        && n.ends_with(d.as_str())
                        && n.as_bytes()[n.len() - d.len() - 1] == b'.')
            }),
        });
        (!bypassed).then_some(endpoint)
    }
}

/// The upstream proxies with the loop guard: the part of the gate that picks the route through
/// an upstream proxy. Both ways through one live side by side here: a tunnel (`CONNECT`, asked
/// for by [`connect_through`] when the dialer connects) and a plain HTTP request, which the
/// front-end sends to the upstream in absolute form ([`Via::UpstreamProxy`] with `connect:
/// false`).
#[derive(Debug, Default)]
pub(crate) struct Upstream {
    proxies: UpstreamProxies,
    /// netproxy's own listener addresses: an upstream proxy at one of them is a loop.
    listeners: RwLock<Vec<SocketAddr>>,
}

impl Upstream {
    /// These proxies, with the listener addresses already recorded here (the loop guard
    /// survives whichever of `with_upstream` and `set_listeners` comes first).
    pub(crate) fn with_proxies(&self, proxies: UpstreamProxies) -> Self {
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Self {
            proxies,
            listeners: RwLock::new(listeners),
        }
    }

    /// Records netproxy's own listener addresses, for the loop guard.
    pub(crate) fn set_listeners(&self, addrs: Vec<SocketAddr>) {
        *self
            .listeners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = addrs;
    }

    /// Whether `addr` is one of netproxy's own listeners (an unspecified listener address
    /// matches any local address on its port).
    fn is_self(&self, addr: SocketAddr) -> bool {
        let own = self
            .listeners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        own.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip()
                    || l.ip().is_unspecified()
                    || (l.ip().is_loopback() && addr.ip().is_loopback()))
        })
    }

    /// The upstream proxy that applies to this target, if any.
    pub(crate) fn endpoint(&self, protocol: Protocol, host: &Host) -> Option<&Endpoint> {
        self.proxies.for_target(protocol, host)
    }

    /// The route through `endpoint` to a target whose addresses the gate checked (`checked`);
    /// `Err` for the loop guard or an upstream whose name does not resolve.
    pub(crate) async fn via(
        &self,
        endpoint: &Endpoint,
        protocol: Protocol,
        host: &Host,
        port: u16,
        checked: &[SocketAddr],
        resolver: &Resolver,
    ) -> Result<Via, Failure> {
        let ips = match endpoint.host.ip() {
            Some(ip) => vec![ip],
            None => resolver
                .lookup(endpoint.host.as_name().unwrap_or_default())
                .await
                .map_err(|e| {
                    Failure::new(
                        UpstreamFailure::DnsFailed,
                        format!("the upstream proxy {endpoint} did not resolve: {e}"),
                    )
                })?,
        };
        let proxy: Vec<SocketAddr> = ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, endpoint.port))
            .collect();
        if proxy.iter().any(|a| self.is_self(*a)) {
            return Err(Failure::new(
                UpstreamFailure::ConnectFailed,
                format!("the upstream proxy {endpoint} is netproxy itself (loop refused)"),
            ));
        }
        Ok(Via::UpstreamProxy {
            proxy,
            authority: format!("{}:{port}", host.to_uri_host()),
            connect: protocol != Protocol::Http,
            checked: checked.iter().map(SocketAddr::ip).collect(),
        })
    }
}

/// The longest response head accepted from an upstream proxy's answer to `CONNECT`.
const MAX_CONNECT_HEAD: usize = 16 * 1024;

/// Asks an upstream proxy for a tunnel to `authority` on `stream`; succeeds on a 2xx answer.
/// The head is read byte by byte, so no tunnel byte is consumed.
pub(crate) async fn connect_through<S>(stream: &mut S, authority: &str) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let fail = |m: String| Failure::new(UpstreamFailure::ConnectFailed, m);
    let io_fail = |e: std::io::Error| {
        Failure::new(
            UpstreamFailure::of_connect_error(&e),
            format!(
                "the upstream proxy's connection failed: {}",
                proxy_core::io_error_text(&e)
            ),
        )
    };
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_fail)?;
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_HEAD {
            return Err(fail(
                "the upstream proxy's answer to CONNECT is too long".into(),
            ));
        }
        let mut b = [0u8; 1];
        match stream.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            Ok(_) => {
                return Err(fail(
                    "the upstream proxy closed the connection during CONNECT".into(),
                ));
            }
            Err(e) => return Err(io_fail(e)),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.split_whitespace().nth(1).unwrap_or_default();
    if status.starts_with('2') && status.len() == 3 {
        Ok(())
    } else {
        let first = line.lines().next().unwrap_or_default().to_owned();
        Err(Failure::new(
            UpstreamFailure::ConnectRefused,
            format!("the upstream proxy refused the tunnel ({first})"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn host(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    #[test]
    fn proxies_per_protocol_and_no_proxy() {
        let (p, problems) = UpstreamProxies::from_env(env(&[
            ("http_proxy", "http://127.0.0.1:3129"),
            ("HTTPS_PROXY", "corp-proxy.test:8080"),
            ("NO_PROXY", "internal.test, .corp.test,10.0.0.0/8,::1"),
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            p.for_target(Protocol::Http, &host("a.example"))
                .unwrap()
                .to_string(),
            "127.0.0.1:3129"
        );
        assert_eq!(
            p.for_target(Protocol::HttpsConnect, &host("a.example"))
                .unwrap()
                .to_string(),
            "corp-proxy.test:8080"
        );
        assert!(
            p.for_target(Protocol::HttpsConnect, &host("internal.test"))
                .is_none()
        );
        assert!(
            p.for_target(Protocol::HttpsConnect, &host("x.internal.test"))
                .is_none()
        );
        assert!(
            p.for_target(Protocol::HttpsConnect, &host("notinternal.test"))
                .is_some()
        );
        assert!(
            p.for_target(Protocol::HttpsConnect, &host("a.corp.test"))
                .is_none()
        );
        assert!(p.for_target(Protocol::Http, &host("10.1.2.3")).is_none());
        assert!(p.for_target(Protocol::Http, &host("::1")).is_none());
        assert!(
            p.for_target(Protocol::Socks5Tcp, &host("a.example"))
                .is_none()
        );
        let (p, _) =
            UpstreamProxies::from_env(env(&[("HTTP_PROXY", "127.0.0.1:1"), ("no_proxy", "*")]));
        assert!(p.for_target(Protocol::Http, &host("a.example")).is_none());
    }

    #[test]
    fn unusable_variables_are_reported() {
        let (p, problems) = UpstreamProxies::from_env(env(&[
            ("HTTP_PROXY", "socks5://127.0.0.1:1080"),
            ("HTTPS_PROXY", "http://user:pw@127.0.0.1:3128"),
        ]));
        assert!(p.is_empty());
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("only http://"), "{problems:?}");
        assert_eq!(
            problems[1],
            "HTTPS_PROXY: netproxy cannot authenticate to an upstream proxy: remove the credentials from the URL, or use a proxy that needs none"
        );
        // Never the credentials themselves.
        assert!(!problems.iter().any(|p| p.contains("pw")), "{problems:?}");
    }
}
