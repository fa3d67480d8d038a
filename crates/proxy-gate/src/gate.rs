//! The gate: proxy-core's [`Gate`] from the compiled policy, the resolver and the audit sink.
//!
//! For each request it evaluates the policy (deny → local literal → allowlist → mode); for an
//! allowlist miss it may ask the embedder's [`Decider`]; for an allowed name it resolves the name
//! once and checks every address. The route carries exactly the addresses it checked, so the
//! dialer never resolves again.
//!
//! One function judges ([`PolicyGate::judge`]); [`Gate::admit`] records its outcome as exactly
//! one audit event, in one place, and [`PolicyGate::explain`] (the dry run `netproxy check` and
//! the admin API's `POST /check` use) returns it without recording, so a check and a request
//! cannot be judged differently.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use proxy_core::tls::Hello;
use proxy_core::{
    Admission, AuditEvent, AuditSink, Decision, Failure, Gate, Host, InnerVerdict, Lease, Mode,
    Protocol, Reason, RequestHead, RequestMeta, Route, Source, Target, UpstreamFailure, Verdict,
    Via,
};
use proxy_policy::{Evaluation, Intercept, OwnAddrs, Policy};

use crate::leases::Leases;
use crate::own_addrs::SharedOwnAddrs;
use crate::remedy::{Managed, Remedy};
use crate::resolve::Resolver;
use crate::unix::canonical_entry;
use crate::upstream::{Upstream, UpstreamProxies};

/// The settings the gate reads besides the policy (typed; the caller builds them from its
/// configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// Chain through the upstream proxies given to [`PolicyGate::with_upstream`]
    /// (`allow_upstream_proxy`).
    pub allow_upstream_proxy: bool,
    /// Check the TLS server name of every opaque tunnel (`verify_sni`): its routes say so, and
    /// [`Gate::admit_hello`] judges the ClientHello.
    pub verify_sni: bool,
}

/// One consistent view of the compiled policy and the gate's settings. Requests take a snapshot
/// when they start and keep it, whatever reloads happen meanwhile.
#[derive(Debug)]
pub struct Snapshot {
    /// The compiled policy.
    pub policy: Policy,
    /// The gate's other settings.
    pub settings: Settings,
    /// Each allowed unix socket entry (as written) with its canonical path, resolved once: when
    /// the service started ([`Snapshot::new`]) or when the entry first appeared in the config
    /// ([`Snapshot::renewed`]). The socket a request may reach through that entry is the one at
    /// the canonical path, which must still resolve with no symlink in any component.
    pub unix_sockets: Vec<(String, PathBuf)>,
    /// What managed requirements leave to the user, for the remedies of refusals
    /// ([`crate::remedy`]).
    pub managed: Managed,
}

impl Snapshot {
    /// With what the managed requirements leave to the user ([`Managed`]).
    #[must_use]
    pub fn with_managed(mut self, managed: Managed) -> Self {
        self.managed = managed;
        self
    }

    /// A snapshot of `policy` and `settings`, resolving each allowed unix socket entry to its
    /// canonical path now (the policy itself never touches the filesystem). An entry that does
    /// not exist yet keeps the canonical path of its nearest existing folder and the rest of
    /// its path as written.
    pub fn new(policy: Policy, settings: Settings) -> Self {
        let unix_sockets = policy
            .unix_socket_paths()
            .map(|entry| (entry.to_owned(), canonical_entry(Path::new(entry))))
            .collect();
        Self {
            policy,
            settings,
            unix_sockets,
            managed: Managed::default(),
        }
    }

    /// The snapshot that follows `previous` (a reload or an admin change): an allowed unix
    /// socket entry that `previous` already had, written the same, keeps the canonical path it
    /// was resolved to then; only an entry new to the config is resolved now. Re-resolving on
    /// every change would let whoever can swap a folder of an allowed path for a symlink
    /// re-point the entry at the next unrelated change. Returns a warning for each kept entry
    /// that would now resolve elsewhere (to re-point an entry, restart the service).
    pub fn renewed(policy: Policy, settings: Settings, previous: &Snapshot) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let unix_sockets = policy
            .unix_socket_paths()
            .map(|entry| {
                let now = canonical_entry(Path::new(entry));
                let Some(kept) = previous.canonical_unix_socket(entry) else {
                    return (entry.to_owned(), now);
                };
                if kept != now {
                    warnings.push(format!(
                        "unix socket {entry:?} now resolves to {}; it stays resolved to {} \
                         (restart netproxy to re-point it)",
                        now.display(),
                        kept.display()
                    ));
                }
                (entry.to_owned(), kept.to_path_buf())
            })
            .collect();
        let snap = Self {
            policy,
            settings,
            unix_sockets,
            managed: previous.managed.clone(),
        };
        (snap, warnings)
    }

    /// The canonical path of an allowed unix socket entry.
    pub(crate) fn canonical_unix_socket(&self, entry: &str) -> Option<&Path> {
        self.unix_sockets
            .iter()
            .find(|(e, _)| e == entry)
            .map(|(_, c)| c.as_path())
    }
}

/// The live snapshot, swapped atomically on reload.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// A future returned by a [`Decider`].
pub type DeciderFuture<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;

/// The embedder's hook for allowlist misses (`not_allowed` only; `denied` and
/// `not_allowed_local` are final, and so is a miss of an allowlist that managed requirements
/// fix, [`proxy_policy::Policy::allowlist_fixed_by`]). Whatever it returns is labelled with source `decider`; an
/// allow is a policy override, and an allowed name's addresses are still checked. The dry run
/// ([`PolicyGate::explain`]) consults it too, like a request would.
pub trait Decider: Send + Sync + fmt::Debug {
    /// Decides one allowlist miss.
    fn decide<'a>(&'a self, meta: &'a RequestMeta) -> DeciderFuture<'a>;

    /// Decides one allowlist miss for the dry run ([`PolicyGate::explain`]: `netproxy check`,
    /// the admin API's `POST /check`), which serves nothing: what [`Decider::decide`] would
    /// answer, without its side effects. By default, `decide` itself; a decider that holds
    /// the request to ask a person answers at once instead (an `ask` verdict, say).
    fn explain<'a>(&'a self, meta: &'a RequestMeta) -> DeciderFuture<'a> {
        self.decide(meta)
    }
}

/// Told of every DNS lookup the gate makes: how long it took and whether it answered.
pub type LookupObserver = Arc<dyn Fn(Duration, bool) + Send + Sync>;

/// Whether judging may look a name up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Resolve an allowed name and check every address, as a request does.
    Resolve,
    /// Stop before the lookup: an allowed name is reported as allowed if its addresses pass
    /// ([`Explanation::pending`]).
    Skip,
}

/// What judging one request found: [`Gate::admit`] turns it into an [`Admission`] (and one
/// audit event); [`PolicyGate::explain`] returns it whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The decision. For a failure, the policy's decision before the target failed.
    pub decision: Decision,
    /// True when judging stopped before looking an allowed name up ([`Lookup::Skip`]): the
    /// decision stands if the name's addresses pass when connecting.
    pub pending: bool,
    /// Whether the tunnel would be intercepted.
    pub intercept: bool,
    /// With `intercept`: only if its first bytes are TLS, an opaque tunnel otherwise (a
    /// credential destination; [`Route::opaque_unless_tls`]).
    pub opaque_unless_tls: bool,
    /// Whether the front-end checks the tunnel's TLS server name before relaying
    /// (`verify_sni`, opaque tunnels only).
    pub verify_sni: bool,
    /// The addresses the name resolved to, when it was looked up.
    pub resolved: Option<Vec<IpAddr>>,
    /// How an allowed target is reached (`None` when refused, failed or pending).
    pub via: Option<Via>,
    /// Why the target could not be checked or routed (the proxy answers 502).
    pub failure: Option<Failure>,
    /// The upstream proxy (`host:port`) an allowed target is reached through, if any.
    pub upstream: Option<String>,
    /// For a refusal: the smallest change that would allow it ([`crate::remedy`]).
    pub remedy: Option<Remedy>,
}

impl Explanation {
    /// A refusal.
    pub(crate) fn denied(decision: Decision) -> Self {
        Self {
            decision,
            pending: false,
            intercept: false,
            opaque_unless_tls: false,
            verify_sni: false,
            resolved: None,
            via: None,
            failure: None,
            upstream: None,
            remedy: None,
        }
    }

    /// An admission along `via`.
    pub(crate) fn allowed(decision: Decision, via: Via, intercept: Intercept) -> Self {
        Self {
            via: Some(via),
            ..Self::admitted(decision, intercept)
        }
    }

    /// An admitted `decision` not routed yet, to be intercepted as `intercept` says.
    fn admitted(decision: Decision, intercept: Intercept) -> Self {
        Self {
            intercept: intercept.is_intercepted(),
            opaque_unless_tls: intercept == Intercept::IfTls,
            ..Self::denied(decision)
        }
    }

    /// A target that failed after the policy's `decision`.
    pub(crate) fn failed(decision: Decision, failure: Failure) -> Self {
        Self {
            failure: Some(failure),
            ..Self::denied(decision)
        }
    }

    /// The gate's answer. A pending explanation (never produced with [`Lookup::Resolve`])
    /// fails closed.
    pub fn admission(self) -> Admission {
        if let Some(failure) = self.failure {
            return Admission::Fail(failure);
        }
        if !self.decision.is_allowed() {
            return Admission::Deny(self.decision);
        }
        match self.via {
            Some(via) => Admission::Allow(Route {
                via,
                intercept: self.intercept,
                opaque_unless_tls: self.intercept && self.opaque_unless_tls,
                verify_sni: self.verify_sni,
                decision: self.decision,
            }),
            None => Admission::Fail(Failure::new(
                UpstreamFailure::ConnectFailed,
                "the target's addresses were not checked",
            )),
        }
    }
}

/// The audit event of one admission; `policy` is the policy's decision, which a failure's
/// event carries (the policy allowed the target; reaching it failed).
fn audit_event(
    meta: &RequestMeta,
    admission: &Admission,
    policy: &Decision,
    mode: Mode,
) -> AuditEvent {
    match admission {
        Admission::Allow(route) => AuditEvent::new(meta, &route.decision, mode),
        Admission::Deny(decision) => AuditEvent::new(meta, decision, mode),
        Admission::Fail(failure) => AuditEvent::failure(meta, policy, failure, mode),
    }
}

/// The gate.
#[derive(Clone)]
pub struct PolicyGate {
    state: SharedSnapshot,
    resolver: Resolver,
    audit: Arc<dyn AuditSink>,
    decider: Option<Arc<dyn Decider>>,
    upstream: Arc<Upstream>,
    lookups: Option<LookupObserver>,
    /// The admitted connections that stay open, re-judged when the policy narrows.
    leases: Arc<Leases>,
    /// The machine's own addresses, judged like loopback while local protection is on.
    own: SharedOwnAddrs,
    /// The dry run's copy ([`PolicyGate::explain`]): the decider is asked through
    /// [`Decider::explain`].
    dry_run: bool,
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
    /// A gate over the live snapshot, judging with `own`, the machine's own addresses (a live
    /// set from [`crate::OwnAddrsWatch::shared`], or one dump from [`crate::dump_own_addrs`]).
    pub fn new(
        state: SharedSnapshot,
        resolver: Resolver,
        audit: Arc<dyn AuditSink>,
        own: SharedOwnAddrs,
    ) -> Self {
        Self {
            state,
            resolver,
            audit,
            decider: None,
            upstream: Arc::default(),
            lookups: None,
            leases: Arc::default(),
            own,
            dry_run: false,
        }
    }

    /// Judges every open connection again under `snap` (the new policy, with the addresses
    /// already connected and no new lookup), closes those it refuses, and records each with
    /// `revoked: true` and the new policy's reason. Returns how many were revoked.
    pub fn revoke_disallowed(&self, snap: &Snapshot) -> usize {
        let revoked = self.leases.rejudge(&snap.policy, &self.own_addrs());
        for (meta, decision) in &revoked {
            self.record_revocation(meta, decision, snap.policy.mode());
        }
        revoked.len()
    }

    fn record_revocation(&self, meta: &RequestMeta, decision: &Decision, mode: Mode) {
        tracing::info!(
            target = %meta.target,
            reason = decision.reason_str(),
            "closing a connection the new policy refuses"
        );
        self.audit
            .record(&AuditEvent::revocation(meta, decision, mode));
    }

    /// How many admitted connections are open and held (tunnels, kept-alive upstream
    /// connections, UDP verdicts, `x-unix-socket` exchanges).
    pub fn held(&self) -> usize {
        self.leases.len()
    }

    /// Judges with this set of the machine's own addresses instead.
    #[must_use]
    pub fn with_own_addrs(mut self, own: SharedOwnAddrs) -> Self {
        self.own = own;
        self
    }

    /// Whether `host` has MITM hooks under the policy in force (`netproxy check` says so).
    pub fn is_hooked(&self, host: &Host) -> bool {
        self.state.load().policy.is_hooked(host)
    }

    /// The machine's own addresses the gate judges with now.
    pub fn own_addrs(&self) -> Arc<OwnAddrs> {
        self.own.load_full()
    }

    /// Tells `observer` of every DNS lookup (its latency and whether it answered).
    #[must_use]
    pub fn with_lookup_observer(mut self, observer: LookupObserver) -> Self {
        self.lookups = Some(observer);
        self
    }

    /// Chains through these upstream proxies when `allow_upstream_proxy` is on.
    #[must_use]
    pub fn with_upstream(mut self, upstream: UpstreamProxies) -> Self {
        self.upstream = Arc::new(self.upstream.with_proxies(upstream));
        self
    }

    /// Records netproxy's own listener addresses, for the upstream loop guard.
    pub fn set_listeners(&self, addrs: Vec<SocketAddr>) {
        self.upstream.set_listeners(addrs);
    }

    /// Adds a decider for allowlist misses.
    #[must_use]
    pub fn with_decider(mut self, decider: Arc<dyn Decider>) -> Self {
        self.decider = Some(decider);
        self
    }

    /// The dry run: judges `meta` under the policy in force exactly as [`Gate::admit`] would
    /// (the decider, the lookup and the check of every address, the upstream route), but
    /// records nothing and holds nothing. With [`Lookup::Skip`] it stops before looking an
    /// allowed name up.
    pub async fn explain(&self, meta: &RequestMeta, lookup: Lookup) -> Explanation {
        let snap = self.state.load_full();
        let own = self.own.load_full();
        // Its lookups are not the proxy's traffic: the lookup observer is not told of them.
        let quiet = Self {
            lookups: None,
            dry_run: true,
            ..self.clone()
        };
        quiet.judge(meta, &snap, &own, lookup).await
    }

    /// Judges one request: the one code path behind [`Gate::admit`] and
    /// [`PolicyGate::explain`]; a refusal gets its remedy.
    async fn judge(
        &self,
        meta: &RequestMeta,
        snap: &Snapshot,
        own: &OwnAddrs,
        lookup: Lookup,
    ) -> Explanation {
        let mut seen = self.judge_routed(meta, snap, own, lookup).await;
        if seen.failure.is_none() {
            seen.remedy =
                crate::remedy::remedy(meta, &seen.decision, seen.resolved.as_deref(), snap, own);
        }
        seen
    }

    /// [`PolicyGate::judge`] without the remedy.
    async fn judge_routed(
        &self,
        meta: &RequestMeta,
        snap: &Snapshot,
        own: &OwnAddrs,
        lookup: Lookup,
    ) -> Explanation {
        let mut seen = self.judge_target(meta, snap, own, lookup).await;
        if !snap.settings.verify_sni {
            return seen;
        }
        // An opaque tunnel's TLS server name is checked before anything is relayed.
        seen.verify_sni = !seen.intercept
            && matches!(meta.protocol, Protocol::HttpsConnect | Protocol::Socks5Tcp);
        // Under `verify_sni` tunnels carry TLS only: a credential destination's tunnel that is
        // not TLS is closed, not relayed opaque with its server name unchecked.
        seen.opaque_unless_tls = false;
        // QUIC (UDP to port 443) carries its server name where netproxy does not read it: under
        // `verify_sni` it would be a way around the check.
        if meta.protocol == Protocol::Socks5Udp
            && meta.target.port() == 443
            && seen.decision.is_allowed()
            && seen.failure.is_none()
        {
            let refused = Decision::deny(Reason::SniMismatch).with_detail(
                "UDP to port 443 (QUIC) is refused under verify_sni: its server name cannot be checked",
            );
            return Explanation {
                resolved: seen.resolved,
                ..Explanation::denied(match seen.decision.rule {
                    Some(rule) => refused.with_rule(rule),
                    None => refused,
                })
            };
        }
        seen
    }

    /// [`PolicyGate::judge`] up to the route.
    async fn judge_target(
        &self,
        meta: &RequestMeta,
        snap: &Snapshot,
        own: &OwnAddrs,
        lookup: Lookup,
    ) -> Explanation {
        if let Target::Unix(path) = &meta.target {
            return self.judge_unix(meta, path, snap).await;
        }
        let (decision, intercept, check) = match snap.policy.evaluate_with(meta, own) {
            Evaluation::Allow {
                decision,
                intercept,
            } => (decision, intercept, false),
            Evaluation::AllowIfAddressesPass {
                decision,
                intercept,
            } => (decision, intercept, true),
            Evaluation::Deny(d) => match (&self.decider, d.reason) {
                // Managed requirements fix the allowlist: its misses are not the decider's to
                // allow (what managed constraints refuse stays refused).
                (Some(_), Some(Reason::NotAllowed))
                    if snap.policy.allowlist_fixed_by().is_some() =>
                {
                    let by = snap.policy.allowlist_fixed_by().unwrap_or_default();
                    return Explanation::denied(d.with_detail(format!(
                        "not in the allowlist fixed by the managed requirements {by}"
                    )));
                }
                (Some(decider), Some(Reason::NotAllowed)) => {
                    let answer = if self.dry_run {
                        decider.explain(meta)
                    } else {
                        decider.decide(meta)
                    };
                    let mut dd = answer.await.with_source(Source::Decider);
                    if dd.verdict != Verdict::Allow {
                        if dd.reason.is_none() {
                            dd.reason = Some(Reason::PolicyDenied);
                        }
                        return Explanation::denied(dd);
                    }
                    dd.policy_override = true;
                    // What follows the allowlist holds for the decider's allows too: a
                    // hooked host only through interception, limited mode's methods.
                    let intercept = match snap.policy.guard(meta) {
                        Ok(intercept) => intercept,
                        Err(refused) => {
                            let refused = match dd.rule.clone() {
                                Some(rule) => refused.with_rule(rule),
                                None => refused,
                            };
                            return Explanation::denied(refused);
                        }
                    };
                    // The addresses of a name the decider allowed are checked like any
                    // other: deny entries, and local protection while it is on.
                    (dd, intercept, true)
                }
                _ => return Explanation::denied(d),
            },
        };
        let Target::Net { host, port } = &meta.target else {
            // Unix targets were judged above.
            return Explanation::denied(Decision::deny(Reason::NotAllowed));
        };
        let port = *port;
        let addrs = match host.ip() {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => {
                let name = host.as_name().unwrap_or_default();
                // A `localhost` name connects to loopback without a lookup.
                let ips = if name == "localhost" || name.ends_with(".localhost") {
                    vec![
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ]
                } else if lookup == Lookup::Skip {
                    return Explanation {
                        pending: check,
                        ..Explanation::admitted(decision, intercept)
                    };
                } else {
                    match self.lookup(name).await {
                        Ok(ips) => ips,
                        Err(e) => {
                            let failure = Failure::new(UpstreamFailure::DnsFailed, e.to_string());
                            return Explanation::failed(decision, failure);
                        }
                    }
                };
                let looked_up = !(name == "localhost" || name.ends_with(".localhost"));
                let decision = if check {
                    snap.policy.check_addresses(host, decision, port, &ips, own)
                } else {
                    decision
                };
                let resolved = looked_up.then(|| ips.clone());
                if !decision.is_allowed() {
                    return Explanation {
                        resolved,
                        ..Explanation::denied(decision)
                    };
                }
                let addrs = ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect();
                return Explanation {
                    resolved,
                    ..self
                        .route(meta, host, port, addrs, decision, intercept, snap, lookup)
                        .await
                };
            }
        };
        self.route(meta, host, port, addrs, decision, intercept, snap, lookup)
            .await
    }

    /// The route to an allowed target's checked addresses: directly, or through the upstream
    /// proxy that applies to it (with [`Lookup::Skip`], an upstream proxy given by name is
    /// named but not looked up, and no route is given).
    #[allow(clippy::too_many_arguments)]
    async fn route(
        &self,
        meta: &RequestMeta,
        host: &Host,
        port: u16,
        addrs: Vec<SocketAddr>,
        decision: Decision,
        intercept: Intercept,
        snap: &Snapshot,
        lookup: Lookup,
    ) -> Explanation {
        let endpoint = snap
            .settings
            .allow_upstream_proxy
            .then(|| self.upstream.endpoint(meta.protocol, host))
            .flatten();
        let Some(endpoint) = endpoint else {
            return Explanation::allowed(decision, Via::Direct(addrs), intercept);
        };
        let upstream = Some(endpoint.to_string());
        if lookup == Lookup::Skip && endpoint.host.ip().is_none() {
            return Explanation {
                upstream,
                ..Explanation::admitted(decision, intercept)
            };
        }
        let via = self
            .upstream
            .via(endpoint, meta.protocol, host, port, &addrs, &self.resolver)
            .await;
        let seen = match via {
            Ok(via) => Explanation::allowed(decision, via, intercept),
            Err(failure) => Explanation::failed(decision, failure),
        };
        Explanation { upstream, ..seen }
    }

    /// Looks a canonical name up once, telling the observer.
    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, crate::ResolveError> {
        let started = Instant::now();
        let looked_up = self.resolver.lookup(name).await;
        if let Some(observe) = &self.lookups {
            observe(started.elapsed(), looked_up.is_ok());
        }
        looked_up
    }
}

impl Gate for PolicyGate {
    fn hold(&self, meta: &RequestMeta, route: &Route) -> Lease {
        let addrs = match &route.via {
            Via::Direct(addrs) => Some(addrs.iter().map(SocketAddr::ip).collect()),
            Via::UpstreamProxy { checked, .. } => Some(checked.clone()),
            // A unix socket exchange: judged again as the allowed entry that admitted it.
            Via::Unix(..) => None,
        };
        let lease = match addrs {
            // A tunnel intercepted only if TLS may be relayed opaque: held as not intercepted.
            Some(addrs) => self.leases.hold(
                meta,
                addrs,
                &route.decision,
                route.intercept && !route.opaque_unless_tls,
            ),
            None => self.leases.hold_unix(meta, &route.decision),
        };
        // A policy change between this connection's admission and now re-judged the held
        // connections without it: judge it against the policy in force now. (A change after
        // the lease was registered sees it.)
        let snap = self.state.load();
        if let Some(d) = self.leases.judge(&lease, &snap.policy, &self.own_addrs()) {
            self.record_revocation(meta, &d, snap.policy.mode());
        }
        lease
    }

    async fn admit_inner(
        &self,
        tunnel: &RequestMeta,
        route: &Route,
        inner: &RequestMeta,
        head: &RequestHead<'_>,
    ) -> InnerVerdict {
        self.judge_inner(tunnel, route, inner, head)
    }

    /// [`proxy_core::judge_hello`]; a refusal is recorded (with the tunnel's request), an allow
    /// is not (the tunnel's admission was).
    async fn admit_hello(&self, tunnel: &RequestMeta, route: &Route, hello: &Hello) -> Decision {
        let decision = proxy_core::judge_hello(tunnel, route, hello);
        if !decision.is_allowed() {
            tracing::info!(
                target = %tunnel.target,
                detail = decision.detail.as_deref().unwrap_or_default(),
                "refusing a tunnel whose TLS server name is not its host"
            );
            let mode = self.state.load().policy.mode();
            self.audit.record(&AuditEvent::new(tunnel, &decision, mode));
        }
        decision
    }

    async fn admit(&self, meta: &RequestMeta) -> Admission {
        let snap = self.state.load_full();
        let own = self.own.load_full();
        let seen = self.judge(meta, &snap, &own, Lookup::Resolve).await;
        let policy = seen.decision.clone();
        let remedy = seen.remedy.clone();
        let admission = seen.admission();
        // A brokered dummy sent where its grant is not bound (a plain HTTP request): refused
        // once the policy allows the target, in this call's one event.
        let admission = match (admission, meta.credential_refusal()) {
            (Admission::Allow(route), Some(refused)) => {
                Admission::Deny(match route.decision.rule {
                    Some(rule) => refused.with_rule(rule),
                    None => refused,
                })
            }
            (admission, _) => admission,
        };
        // The one audit event of this call (a refusal with its remedy).
        let mut event = audit_event(meta, &admission, &policy, snap.policy.mode());
        if matches!(admission, Admission::Deny(_)) && event.reason == policy.reason_str() {
            event.remedy = remedy;
        }
        self.audit.record(&event);
        admission
    }

    /// Records the failure as an event of its own, apart from refusals (docs/audit.md,
    /// "Failures").
    fn failed(&self, meta: &RequestMeta, route: &Route, failure: &Failure) {
        tracing::debug!(target = %meta.target, error = %failure, "an admitted request failed");
        let mode = self.state.load().policy.mode();
        self.audit
            .record(&AuditEvent::failure(meta, &route.decision, failure, mode));
    }
}

/// Requests inside intercepted tunnels.
impl PolicyGate {
    /// [`Gate::admit_inner`]: judges `inner` against its tunnel with
    /// [`Policy::judge_inner`](proxy_policy::Policy::judge_inner) under the policy in force
    /// now (the inner Host must be the tunnel's target; a hooked host's hooks must match;
    /// limited mode allows GET, HEAD and OPTIONS), resolving nothing, and records one audit
    /// event about `inner` (protocol `https`).
    pub fn judge_inner(
        &self,
        tunnel: &RequestMeta,
        route: &Route,
        inner: &RequestMeta,
        head: &RequestHead<'_>,
    ) -> InnerVerdict {
        let snap = self.state.load();
        let verdict = snap.policy.judge_inner(tunnel, route, inner, head);
        let mut event = AuditEvent::new(inner, &verdict.decision, snap.policy.mode());
        event.remedy =
            crate::remedy::remedy(inner, &verdict.decision, None, &snap, &self.own_addrs());
        self.audit.record(&event);
        verdict
    }
}

#[cfg(test)]
mod inner_tests {
    use std::sync::{Arc, Mutex};

    use proxy_core::{
        Admission, AuditEvent, AuditSink, Decision, Gate, Mode, Protocol, Reason, RequestMeta,
        Target,
    };
    use proxy_policy::{OwnAddrs, Policy};

    use super::{PolicyGate, SharedSnapshot, Snapshot};

    #[derive(Debug, Default)]
    struct Events(Mutex<Vec<AuditEvent>>);

    impl AuditSink for Events {
        fn record(&self, event: &AuditEvent) {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(event.clone());
        }
    }

    fn snapshot(mode: Mode) -> Snapshot {
        let sources = proxy_config::Sources {
            system_requirements: Some("/nonexistent/requirements.toml".into()),
            cli: proxy_config::CliOverrides {
                allow: vec!["api.example.com".to_owned()],
                mode: Some(mode),
                ..Default::default()
            },
            ..Default::default()
        };
        let config = proxy_config::load(&sources).expect("the config loads");
        let policy = config.policy().expect("the policy compiles");
        Snapshot::new(policy, super::Settings::default())
    }

    fn meta(protocol: Protocol, authority: &str, method: &str) -> RequestMeta {
        RequestMeta::new(
            protocol,
            Target::parse_authority(authority, 443).expect("a valid authority"),
        )
        .with_method(method)
        .with_client("127.0.0.1:50000".parse().expect("an address"))
    }

    /// The Host against the tunnel's target and the method against the mode in force now,
    /// with one audit event (protocol `https`) per request and no lookup.
    #[tokio::test]
    async fn a_request_inside_a_tunnel_is_judged_by_its_host_and_the_mode_in_force() {
        let state: SharedSnapshot = Arc::new(arc_swap::ArcSwap::from_pointee(snapshot(Mode::Full)));
        let events = Arc::new(Events::default());
        // No nameserver answers: a lookup would fail.
        let resolver = crate::Resolver::new(
            Some(&[]),
            std::collections::BTreeMap::new(),
            std::time::Duration::from_millis(100),
        )
        .expect("a resolver");
        let own = Arc::new(arc_swap::ArcSwap::from_pointee(
            proxy_policy::OwnAddrs::default(),
        ));
        let gate = PolicyGate::new(state.clone(), resolver, events.clone(), own);
        let tunnel = meta(Protocol::HttpsConnect, "api.example.com:443", "CONNECT");
        let route = proxy_core::Route {
            intercept: true,
            ..proxy_core::Route::direct(
                vec!["127.0.0.1:443".parse().expect("an address")],
                Decision::allow(),
            )
        };
        let judge = |authority: &str, method: &str| {
            let inner = meta(Protocol::Https, authority, method);
            let gate = &gate;
            let (tunnel, route) = (&tunnel, &route);
            let method = method.to_owned();
            async move {
                let head = proxy_core::RequestHead {
                    method: &method,
                    path: "/",
                    query: None,
                    headers: &[],
                };
                gate.admit_inner(tunnel, route, &inner, &head)
                    .await
                    .decision
            }
        };
        assert!(judge("api.example.com", "POST").await.is_allowed());
        let d = judge("other.example.com", "GET").await;
        assert_eq!(d.reason, Some(Reason::NotAllowed));
        let d = judge("api.example.com:8443", "GET").await;
        assert_eq!(d.reason, Some(Reason::NotAllowed));
        state.store(Arc::new(snapshot(Mode::Limited)));
        assert!(judge("api.example.com", "GET").await.is_allowed());
        let d = judge("api.example.com", "POST").await;
        assert_eq!(d.reason, Some(Reason::MethodNotAllowed));

        let events = events
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.protocol, e.reason, e.mode, e.method.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                (Protocol::Https, "allow", Mode::Full, Some("POST")),
                (Protocol::Https, "not_allowed", Mode::Full, Some("GET")),
                (Protocol::Https, "not_allowed", Mode::Full, Some("GET")),
                (Protocol::Https, "allow", Mode::Limited, Some("GET")),
                (
                    Protocol::Https,
                    "method_not_allowed",
                    Mode::Limited,
                    Some("POST")
                ),
            ]
        );
    }

    /// A credential destination's tunnel is routed intercept-if-TLS (held as possibly opaque:
    /// a reload to limited mode closes it), except under `verify_sni`, where tunnels carry TLS
    /// only and it is intercepted always.
    #[tokio::test]
    async fn a_credential_destination_is_routed_intercept_if_tls() {
        let credential = |mode: Mode, verify_sni: bool| {
            let mut b = Policy::builder();
            b.allow("1.2.3.4", None).expect("a pattern");
            b.credential_destination("1.2.3.4:443")
                .expect("a destination");
            b.interception(true).mode(mode);
            let settings = super::Settings {
                verify_sni,
                ..super::Settings::default()
            };
            Snapshot::new(b.build().expect("a policy"), settings)
        };
        let state: SharedSnapshot = Arc::new(arc_swap::ArcSwap::from_pointee(credential(
            Mode::Full,
            false,
        )));
        let resolver = crate::Resolver::new(
            Some(&[]),
            std::collections::BTreeMap::new(),
            std::time::Duration::from_millis(100),
        )
        .expect("a resolver");
        let own = Arc::new(arc_swap::ArcSwap::from_pointee(OwnAddrs::default()));
        let gate = PolicyGate::new(state.clone(), resolver, Arc::new(Events::default()), own);
        let tunnel = meta(Protocol::HttpsConnect, "1.2.3.4:443", "CONNECT");
        let Admission::Allow(route) = gate.admit(&tunnel).await else {
            panic!("admitted")
        };
        assert!(route.intercept && route.opaque_unless_tls && !route.verify_sni);
        let lease = gate.hold(&tunnel, &route);
        assert_eq!(gate.revoke_disallowed(&credential(Mode::Full, false)), 0);
        assert!(!lease.is_revoked());
        assert_eq!(gate.revoke_disallowed(&credential(Mode::Limited, false)), 1);
        assert!(lease.is_revoked());

        state.store(Arc::new(credential(Mode::Full, true)));
        let Admission::Allow(route) = gate.admit(&tunnel).await else {
            panic!("admitted")
        };
        assert!(route.intercept && !route.opaque_unless_tls && !route.verify_sni);
    }
}
