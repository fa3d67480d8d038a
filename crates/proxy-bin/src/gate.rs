//! The gate: proxy-core's [`Gate`] from the compiled policy, the resolver and the audit sink.
//!
//! For each request it evaluates the policy (deny → local literal → allowlist → mode); for an
//! allowlist miss it may ask the embedder's [`Decider`]; for an allowed name it resolves the name
//! once and checks every address. The route carries exactly the addresses it checked, so the
//! dialer never resolves again. It records exactly one audit event per call.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use proxy_config::Config;
use proxy_core::{
    Admission, AuditEvent, AuditSink, Decision, Failure, Gate, Host, Reason, RequestMeta, Route,
    Source, Target, UpstreamFailure, Verdict, Via,
};
use proxy_policy::{Evaluation, OwnAddrs, Policy};

use crate::own_addrs::SharedOwnAddrs;
use crate::resolve::Resolver;
use crate::upstream::UpstreamProxies;

/// One consistent view of the config and the policy compiled from it. Requests take a snapshot
/// when they start and keep it, whatever reloads happen meanwhile.
#[derive(Debug)]
pub struct Snapshot {
    /// The effective config.
    pub config: Config,
    /// The policy compiled from it.
    pub policy: Policy,
}

/// The live snapshot, swapped atomically on reload.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// A future returned by a [`Decider`].
pub type DeciderFuture<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;

/// The embedder's hook for allowlist misses (`not_allowed` only; `denied` and
/// `not_allowed_local` are final). Whatever it returns is labelled with source `decider`; an
/// allow is a policy override, and an allowed name's addresses are still checked.
pub trait Decider: Send + Sync + fmt::Debug {
    /// Decides one allowlist miss.
    fn decide<'a>(&'a self, meta: &'a RequestMeta) -> DeciderFuture<'a>;
}

/// The gate.
#[derive(Clone)]
pub struct PolicyGate {
    state: SharedSnapshot,
    resolver: Resolver,
    audit: Arc<dyn AuditSink>,
    decider: Option<Arc<dyn Decider>>,
    upstream: Arc<UpstreamProxies>,
    /// netproxy's own listener addresses: an upstream proxy at one of them is a loop.
    listeners: Arc<std::sync::RwLock<Vec<SocketAddr>>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The machine's own addresses, judged like loopback while local protection is on.
    own: SharedOwnAddrs,
}

impl fmt::Debug for PolicyGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyGate")
            .field("resolver", &self.resolver)
            .field("decider", &self.decider)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl PolicyGate {
    /// A gate over the live snapshot. It judges with the machine's own addresses as one
    /// rtnetlink dump found them now; [`PolicyGate::with_own_addrs`] gives it a live set
    /// (as `Service` does). When the dump fails, the gate starts with an empty set and says so.
    pub fn new(state: SharedSnapshot, resolver: Resolver, audit: Arc<dyn AuditSink>) -> Self {
        let own = crate::own_addrs::dump().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list the machine's own addresses");
            OwnAddrs::default()
        });
        Self {
            state,
            resolver,
            audit,
            decider: None,
            upstream: Arc::default(),
            listeners: Arc::default(),
            metrics: None,
            own: Arc::new(arc_swap::ArcSwap::from_pointee(own)),
        }
    }

    /// Judges with this live set of the machine's own addresses (kept current by
    /// [`crate::own_addrs::OwnAddrsWatch`]).
    #[must_use]
    pub fn with_own_addrs(mut self, own: SharedOwnAddrs) -> Self {
        self.own = own;
        self
    }

    /// The machine's own addresses the gate judges with now.
    pub fn own_addrs(&self) -> Arc<OwnAddrs> {
        self.own.load_full()
    }

    /// Counts DNS lookups and their latency in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The resolver (for `POST /check`, which resolves like a request would).
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Chains through these upstream proxies when `allow_upstream_proxy` is on.
    #[must_use]
    pub fn with_upstream(mut self, upstream: UpstreamProxies) -> Self {
        self.upstream = Arc::new(upstream);
        self
    }

    /// Records netproxy's own listener addresses, for the loop guard.
    pub fn set_listeners(&self, addrs: Vec<SocketAddr>) {
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

    /// The route through an upstream proxy, when one applies to this target; `Err` for the
    /// loop guard or an upstream whose name does not resolve.
    async fn via_upstream(
        &self,
        meta: &RequestMeta,
        host: &Host,
        port: u16,
        snap: &Snapshot,
    ) -> Result<Option<Via>, Failure> {
        if !snap.config.allow_upstream_proxy() {
            return Ok(None);
        }
        let Some(endpoint) = self.upstream.for_target(meta.protocol, host) else {
            return Ok(None);
        };
        let ips = match endpoint.host.ip() {
            Some(ip) => vec![ip],
            None => self
                .resolver
                .lookup(endpoint.host.as_name().unwrap_or_default())
                .await
                .map_err(|e| {
                    Failure::new(
                        UpstreamFailure::DnsFailed,
                        format!("upstream proxy {endpoint}: {e}"),
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
        Ok(Some(Via::UpstreamProxy {
            proxy,
            authority: format!("{}:{port}", host.to_uri_host()),
            connect: meta.protocol != proxy_core::Protocol::Http,
        }))
    }

    /// Adds a decider for allowlist misses.
    #[must_use]
    pub fn with_decider(mut self, decider: Arc<dyn Decider>) -> Self {
        self.decider = Some(decider);
        self
    }

    fn record(&self, meta: &RequestMeta, decision: &Decision, snap: &Snapshot) {
        self.audit
            .record(&AuditEvent::new(meta, decision, snap.policy.mode()));
    }

    fn fail(&self, meta: &RequestMeta, snap: &Snapshot, failure: Failure) -> Admission {
        let mut ev = AuditEvent::new(
            meta,
            &Decision::deny(Reason::NotAllowedLocal),
            snap.policy.mode(),
        );
        ev.reason = failure.kind.as_str();
        self.audit.record(&ev);
        Admission::Fail(failure)
    }

    /// Resolves and checks an allowed name; `check` is false when the policy's answer is
    /// final (a literal, or a `localhost` name, which connects to loopback without a lookup).
    async fn addresses(
        &self,
        host: &Host,
        port: u16,
        check: bool,
        decision: Decision,
        snap: &Snapshot,
        own: &OwnAddrs,
    ) -> Result<(Vec<SocketAddr>, Decision), Result<Decision, Failure>> {
        if let Some(ip) = host.ip() {
            return Ok((vec![SocketAddr::new(ip, port)], decision));
        }
        let name = host.as_name().unwrap_or_default();
        let ips = if name == "localhost" || name.ends_with(".localhost") {
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
        } else {
            let started = std::time::Instant::now();
            let looked_up = self.resolver.lookup(name).await;
            if let Some(m) = &self.metrics {
                m.dns_lookup(started.elapsed(), looked_up.is_ok());
            }
            looked_up.map_err(|e| Err(Failure::new(UpstreamFailure::DnsFailed, e.to_string())))?
        };
        let decision = if check {
            snap.policy.check_addresses(decision, port, &ips, own)
        } else {
            decision
        };
        if !decision.is_allowed() {
            return Err(Ok(decision));
        }
        Ok((
            ips.into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            decision,
        ))
    }
}

impl PolicyGate {
    /// A unix socket request (`x-unix-socket`): the path must be allowed as written, or be the
    /// same socket as an allowed path once symlinks are resolved on both sides; then the
    /// connection goes to the path that was checked. Domain policy and the decider are not
    /// consulted.
    async fn admit_unix(&self, meta: &RequestMeta, path: &Path, snap: &Snapshot) -> Admission {
        let policy = &snap.policy;
        let mut judged = meta.clone();
        let mut connect_to = path.to_path_buf();
        let as_written = path.to_string_lossy();
        if path.is_absolute()
            && !policy.allows_all_unix_sockets()
            && !policy.unix_socket_paths().any(|p| p == as_written)
            && let Ok(real) = tokio::fs::canonicalize(path).await
        {
            for entry in policy.unix_socket_paths() {
                if tokio::fs::canonicalize(entry)
                    .await
                    .is_ok_and(|e| e == real)
                {
                    judged.target = Target::Unix(PathBuf::from(entry));
                    connect_to = real;
                    break;
                }
            }
        }
        match policy.evaluate(&judged) {
            Evaluation::Allow { decision, .. }
            | Evaluation::AllowIfAddressesPass { decision, .. } => {
                self.record(meta, &decision, snap);
                Admission::Allow(Route {
                    via: Via::Unix(connect_to),
                    intercept: false,
                    decision,
                })
            }
            Evaluation::Deny(d) => {
                self.record(meta, &d, snap);
                Admission::Deny(d)
            }
        }
    }
}

impl Gate for PolicyGate {
    async fn admit(&self, meta: &RequestMeta) -> Admission {
        let snap = self.state.load_full();
        if let Target::Unix(path) = &meta.target {
            return self.admit_unix(meta, path, &snap).await;
        }
        let own = self.own.load_full();
        let (decision, intercept, check) = match snap.policy.evaluate_with(meta, &own) {
            Evaluation::Allow {
                decision,
                intercept,
            } => (decision, intercept, false),
            Evaluation::AllowIfAddressesPass {
                decision,
                intercept,
            } => (decision, intercept, true),
            Evaluation::Deny(d) => match (&self.decider, d.reason) {
                (Some(decider), Some(Reason::NotAllowed)) => {
                    let mut dd = decider.decide(meta).await.with_source(Source::Decider);
                    if dd.verdict == Verdict::Allow {
                        dd.policy_override = true;
                        // The addresses of a name the decider allowed are checked like any
                        // other: deny entries, and local protection while it is on.
                        (dd, false, true)
                    } else {
                        if dd.reason.is_none() {
                            dd.reason = Some(Reason::PolicyDenied);
                        }
                        self.record(meta, &dd, &snap);
                        return Admission::Deny(dd);
                    }
                }
                _ => {
                    self.record(meta, &d, &snap);
                    return Admission::Deny(d);
                }
            },
        };
        let (host, port) = match &meta.target {
            Target::Net { host, port } => (host, *port),
            Target::Unix(path) => {
                self.record(meta, &decision, &snap);
                return Admission::Allow(Route {
                    via: Via::Unix(path.clone()),
                    intercept: false,
                    decision,
                });
            }
        };
        match self
            .addresses(host, port, check, decision, &snap, &own)
            .await
        {
            Ok((addrs, decision)) => {
                let via = match self.via_upstream(meta, host, port, &snap).await {
                    Ok(Some(via)) => via,
                    Ok(None) => Via::Direct(addrs),
                    Err(failure) => return self.fail(meta, &snap, failure),
                };
                self.record(meta, &decision, &snap);
                Admission::Allow(Route {
                    via,
                    intercept,
                    decision,
                })
            }
            Err(Ok(denied)) => {
                self.record(meta, &denied, &snap);
                Admission::Deny(denied)
            }
            Err(Err(failure)) => self.fail(meta, &snap, failure),
        }
    }
}
