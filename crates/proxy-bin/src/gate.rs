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
    Admission, AuditEvent, AuditSink, Decision, Failure, Gate, Host, Lease, Reason, RequestMeta,
    Route, Source, Target, UpstreamFailure, Verdict, Via,
};
use proxy_policy::{Evaluation, OwnAddrs, Policy};

use crate::leases::Leases;
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
    /// Each allowed unix socket entry (as written) with its canonical path, resolved once: when
    /// the service started ([`Snapshot::new`]) or when the entry first appeared in the config
    /// ([`Snapshot::renewed`]). The socket a request may reach through that entry is the one at
    /// the canonical path, which must still resolve with no symlink in any component.
    pub unix_sockets: Vec<(String, PathBuf)>,
}

impl Snapshot {
    /// A snapshot of `config` and its `policy`, resolving each allowed unix socket entry to its
    /// canonical path now (the policy itself never touches the filesystem). An entry that does
    /// not exist yet keeps the canonical path of its nearest existing folder and the rest of
    /// its path as written.
    pub fn new(config: Config, policy: Policy) -> Self {
        let unix_sockets = policy
            .unix_socket_paths()
            .map(|entry| (entry.to_owned(), canonical_entry(Path::new(entry))))
            .collect();
        Self {
            config,
            policy,
            unix_sockets,
        }
    }

    /// The snapshot that follows `previous` (a reload or an admin change): an allowed unix
    /// socket entry that `previous` already had, written the same, keeps the canonical path it
    /// was resolved to then; only an entry new to the config is resolved now. Re-resolving on
    /// every change would let whoever can swap a folder of an allowed path for a symlink
    /// re-point the entry at the next unrelated change. Returns a warning for each kept entry
    /// that would now resolve elsewhere (to re-point an entry, restart the service).
    pub fn renewed(config: Config, policy: Policy, previous: &Snapshot) -> (Self, Vec<String>) {
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
            config,
            policy,
            unix_sockets,
        };
        (snap, warnings)
    }

    /// The canonical path of an allowed unix socket entry.
    fn canonical_unix_socket(&self, entry: &str) -> Option<&Path> {
        self.unix_sockets
            .iter()
            .find(|(e, _)| e == entry)
            .map(|(_, c)| c.as_path())
    }
}

/// An allowed entry's canonical path: symlinks resolved when it exists; otherwise the canonical
/// path of its nearest existing folder joined with the rest of the entry (plain names only);
/// otherwise the entry as written.
fn canonical_entry(entry: &Path) -> PathBuf {
    use std::path::Component;
    if let Ok(real) = std::fs::canonicalize(entry) {
        return real;
    }
    for dir in entry.ancestors().skip(1) {
        if let Ok(real) = std::fs::canonicalize(dir) {
            let Ok(rest) = entry.strip_prefix(dir) else {
                break;
            };
            if rest.components().all(|c| matches!(c, Component::Normal(_))) {
                return real.join(rest);
            }
            break;
        }
    }
    entry.to_path_buf()
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
    /// The admitted connections that stay open, re-judged when the policy narrows.
    leases: Arc<Leases>,
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
            leases: Arc::default(),
            own: Arc::new(arc_swap::ArcSwap::from_pointee(own)),
        }
    }

    /// Judges every open connection again under `snap` (the new policy, with the addresses
    /// already connected and no new lookup), closes those it refuses, and records each with
    /// `revoked: true` and the new policy's reason. Returns how many were revoked.
    pub fn revoke_disallowed(&self, snap: &Snapshot) -> usize {
        let revoked = self.leases.rejudge(&snap.policy, &self.own_addrs());
        for (meta, decision) in &revoked {
            tracing::info!(
                target = %meta.target,
                reason = decision.reason_str(),
                "closing a connection the new policy refuses"
            );
            self.audit
                .record(&AuditEvent::revocation(meta, decision, snap.policy.mode()));
        }
        revoked.len()
    }

    /// How many admitted connections are open and held (tunnels, kept-alive upstream
    /// connections, UDP verdicts).
    pub fn held(&self) -> usize {
        self.leases.len()
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
        checked: &[SocketAddr],
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
            checked: checked.iter().map(SocketAddr::ip).collect(),
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
    /// A unix socket request (`x-unix-socket`). A request that may come from a web page is
    /// refused (`unix_socket_cross_origin`). Otherwise the path must be allowed as written, or
    /// be the same socket (device and inode) as an allowed entry's canonical path. The path is
    /// opened once (`O_PATH`); the socket it reaches must be the socket now at the canonical path
    /// of the entry that allowed it, and that path must still resolve with no symlink in any
    /// component (a daemon that recreated its socket is fine, a path or one of its folders
    /// swapped for a symlink is not). The route
    /// carries that descriptor, so the connection goes to the socket that was judged. Domain
    /// policy and the decider are not consulted.
    async fn admit_unix(&self, meta: &RequestMeta, path: &Path, snap: &Snapshot) -> Admission {
        let policy = &snap.policy;
        let evaluation = policy.evaluate(meta);
        if let Some(why) = &meta.cross_origin
            && !matches!(&evaluation, Evaluation::Deny(d) if d.reason == Some(Reason::ProxyDisabled))
        {
            let d = Decision::deny(Reason::UnixSocketCrossOrigin).with_detail(why.clone());
            self.record(meta, &d, snap);
            return Admission::Deny(d);
        }
        let allow_all = policy.allows_all_unix_sockets();
        // The entries an opened socket may be matched against: the entry the path is allowed as
        // (`Some` of one), every entry when the path is not allowed as written (`Some` of all,
        // then judged as the entry it matches), or none when every socket is allowed.
        let (decision, entries) = match evaluation {
            Evaluation::Allow { decision, .. }
            | Evaluation::AllowIfAddressesPass { decision, .. } => {
                let entries = if allow_all {
                    None
                } else {
                    let written = path.to_string_lossy();
                    match snap.canonical_unix_socket(&written) {
                        Some(c) => Some(vec![(written.into_owned(), c.to_path_buf())]),
                        None => {
                            let d = Decision::deny(Reason::NotAllowed)
                                .with_detail("unix socket path not in the allowlist");
                            self.record(meta, &d, snap);
                            return Admission::Deny(d);
                        }
                    }
                };
                (Ok(decision), entries)
            }
            Evaluation::Deny(d)
                if d.reason == Some(Reason::NotAllowed)
                    && path.is_absolute()
                    && !allow_all
                    && !snap.unix_sockets.is_empty() =>
            {
                (Err(d), Some(snap.unix_sockets.clone()))
            }
            Evaluation::Deny(d) => {
                self.record(meta, &d, snap);
                return Admission::Deny(d);
            }
        };
        let requested = path.to_path_buf();
        let check = tokio::task::spawn_blocking(move || open_checked(&requested, entries)).await;
        let check = check.unwrap_or_else(|e| Checked::Failed(format!("the check failed: {e}")));
        match (decision, check) {
            (Ok(decision), Checked::Socket(socket, _)) => {
                self.record(meta, &decision, snap);
                Admission::Allow(Route {
                    via: Via::Unix(socket),
                    intercept: false,
                    decision,
                })
            }
            // Not allowed as written, but the same socket as an allowed entry: judged as that
            // entry (limited mode still applies).
            (Err(_), Checked::Socket(socket, Some(entry))) => {
                let mut judged = meta.clone();
                judged.target = Target::Unix(PathBuf::from(entry));
                match policy.evaluate(&judged) {
                    Evaluation::Allow { decision, .. }
                    | Evaluation::AllowIfAddressesPass { decision, .. } => {
                        self.record(meta, &decision, snap);
                        Admission::Allow(Route {
                            via: Via::Unix(socket),
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
            (Err(d), _) => {
                self.record(meta, &d, snap);
                Admission::Deny(d)
            }
            (Ok(decision), Checked::Swapped(detail)) => {
                let d = Decision::deny(Reason::NotAllowed).with_detail(detail);
                let d = match decision.rule {
                    Some(rule) => d.with_rule(rule),
                    None => d,
                };
                self.record(meta, &d, snap);
                Admission::Deny(d)
            }
            (Ok(_), Checked::Failed(message)) => self.fail(
                meta,
                snap,
                Failure::new(
                    UpstreamFailure::ConnectFailed,
                    format!("{}: {message}", path.display()),
                ),
            ),
        }
    }
}

/// What opening a requested unix socket path found.
enum Checked {
    /// The socket, opened, and the allowed entry it matched (`None` when every socket is
    /// allowed).
    Socket(proxy_core::UnixSocket, Option<String>),
    /// The path reaches something other than the allowed socket (a refusal, with its detail).
    Swapped(String),
    /// The path could not be opened or examined.
    Failed(String),
}

/// Opens `path` once (`O_PATH`) and checks that it is a socket and, unless `entries` is `None`
/// (every socket allowed), the same device and inode as the socket now at one entry's
/// canonical path, which must resolve with no symlink in any component
/// ([`socket_without_symlinks`]).
#[cfg(target_os = "linux")]
fn open_checked(path: &Path, entries: Option<Vec<(String, PathBuf)>>) -> Checked {
    use rustix::fs::{FileType, Mode, OFlags};
    let fd = match rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => return Checked::Failed(std::io::Error::from(e).to_string()),
    };
    let st = match rustix::fs::fstat(&fd) {
        Ok(st) => st,
        Err(e) => return Checked::Failed(std::io::Error::from(e).to_string()),
    };
    let (dev, ino) = (st.st_dev, st.st_ino);
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Checked::Swapped(format!("{} is not a socket", path.display()));
    }
    let socket = |entry| {
        Checked::Socket(
            proxy_core::UnixSocket::new(path.to_path_buf(), fd, dev, ino),
            entry,
        )
    };
    let Some(entries) = entries else {
        return socket(None);
    };
    let matched = entries
        .into_iter()
        .find(|(_, canonical)| socket_without_symlinks(canonical, dev, ino));
    match matched {
        Some((entry, _)) => socket(Some(entry)),
        None => Checked::Swapped(format!(
            "the socket at {} is no longer the allowed socket",
            path.display()
        )),
    }
}

/// Whether `canonical` still resolves with no symlink in any component (a folder swapped for
/// a symlink, or the socket itself, is refused) to a socket with device `dev` and inode `ino`.
/// The path is opened with `openat2(RESOLVE_NO_SYMLINKS)`; where that system call is missing
/// (Linux before 5.6, or filtered), [`socket_without_symlinks_fallback`] judges instead.
#[cfg(target_os = "linux")]
fn socket_without_symlinks(canonical: &Path, dev: u64, ino: u64) -> bool {
    use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
    use rustix::io::Errno;
    match rustix::fs::openat2(
        CWD,
        canonical,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    ) {
        Ok(fd) => rustix::fs::fstat(&fd).is_ok_and(|st| is_socket(&st, dev, ino)),
        Err(Errno::NOSYS | Errno::PERM) => socket_without_symlinks_fallback(canonical, dev, ino),
        Err(_) => false,
    }
}

/// [`socket_without_symlinks`] without `openat2`: `canonical` must be its own canonical path
/// (no symlink in any component) and, not followed, the socket with device `dev` and inode
/// `ino`.
#[cfg(target_os = "linux")]
fn socket_without_symlinks_fallback(canonical: &Path, dev: u64, ino: u64) -> bool {
    std::fs::canonicalize(canonical).is_ok_and(|real| real == canonical)
        && rustix::fs::lstat(canonical).is_ok_and(|st| is_socket(&st, dev, ino))
}

/// Whether `st` is a socket with device `dev` and inode `ino`.
#[cfg(target_os = "linux")]
fn is_socket(st: &rustix::fs::Stat, dev: u64, ino: u64) -> bool {
    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket
        && st.st_dev == dev
        && st.st_ino == ino
}

/// Both ways of judging a canonical path, on real sockets: the `openat2` one and the one used
/// where `openat2` is missing refuse a folder swapped for a symlink, and the socket itself
/// swapped for one.
#[cfg(all(test, target_os = "linux"))]
mod symlink_tests {
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::os::unix::net::UnixListener;
    use std::path::Path;

    use super::{canonical_entry, socket_without_symlinks, socket_without_symlinks_fallback};

    fn id(path: &Path) -> (u64, u64) {
        let m = std::fs::metadata(path).expect("the socket is there");
        (m.dev(), m.ino())
    }

    #[test]
    fn a_symlink_in_any_component_is_refused_with_and_without_openat2() {
        let dir = tempfile::tempdir().unwrap();
        let t = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(t.join("base/d")).unwrap();
        std::fs::create_dir(t.join("secretdir")).unwrap();
        let allowed = t.join("base/d/allowed.sock");
        let _a = UnixListener::bind(&allowed).unwrap();
        let _s = UnixListener::bind(t.join("secretdir/allowed.sock")).unwrap();
        let canonical = canonical_entry(&allowed);
        assert_eq!(canonical, allowed);
        let (dev, ino) = id(&allowed);
        for judge in [socket_without_symlinks, socket_without_symlinks_fallback] {
            assert!(judge(&canonical, dev, ino));
        }

        // A folder swapped for a symlink: the path reaches SECRET, and is refused.
        std::fs::rename(t.join("base/d"), t.join("base/d.real")).unwrap();
        symlink(t.join("secretdir"), t.join("base/d")).unwrap();
        let (sdev, sino) = id(&allowed);
        assert_ne!((sdev, sino), (dev, ino));
        for judge in [socket_without_symlinks, socket_without_symlinks_fallback] {
            assert!(!judge(&canonical, sdev, sino));
            assert!(!judge(&canonical, dev, ino));
        }

        // The socket itself swapped for a symlink to SECRET: refused too.
        std::fs::remove_file(t.join("base/d")).unwrap();
        std::fs::rename(t.join("base/d.real"), t.join("base/d")).unwrap();
        std::fs::rename(&allowed, t.join("base/d/old.sock")).unwrap();
        symlink(t.join("secretdir/allowed.sock"), &allowed).unwrap();
        for judge in [socket_without_symlinks, socket_without_symlinks_fallback] {
            assert!(!judge(&canonical, sdev, sino));
        }
    }

    #[test]
    fn a_missing_entry_keeps_its_nearest_existing_folder_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let t = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(t.join("run")).unwrap();
        symlink(t.join("run"), t.join("var-run")).unwrap();
        assert_eq!(
            canonical_entry(&t.join("var-run/docker.sock")),
            t.join("run/docker.sock")
        );
        assert_eq!(
            canonical_entry(&t.join("var-run/user/1000/podman.sock")),
            t.join("run/user/1000/podman.sock")
        );
        let odd = t.join("var-run/missing/../x.sock");
        assert_eq!(canonical_entry(&odd), odd);
    }
}

/// Unix sockets are reached through `/proc/self/fd`, which only Linux has.
#[cfg(not(target_os = "linux"))]
fn open_checked(_path: &Path, _entries: Option<Vec<(String, PathBuf)>>) -> Checked {
    Checked::Failed("unix socket requests are supported on Linux only".to_owned())
}

impl Gate for PolicyGate {
    async fn admit_inner(
        &self,
        tunnel: &RequestMeta,
        route: &Route,
        inner: &RequestMeta,
    ) -> Decision {
        self.judge_inner(tunnel, route, inner)
    }

    fn hold(&self, meta: &RequestMeta, route: &Route) -> Lease {
        let addrs = match &route.via {
            Via::Direct(addrs) => addrs.iter().map(SocketAddr::ip).collect(),
            Via::UpstreamProxy { checked, .. } => checked.clone(),
            // A unix socket's permission is not re-judged here.
            Via::Unix(..) => return Lease::none(),
        };
        let lease = self.leases.hold(meta, addrs, &route.decision);
        // A policy change between this connection's admission and now re-judged the held
        // connections without it: judge it against the policy in force now. (A change after
        // the lease was registered sees it.)
        let snap = self.state.load();
        if let Some(d) = self.leases.judge(&lease, &snap.policy, &self.own_addrs()) {
            tracing::info!(
                target = %meta.target,
                reason = d.reason_str(),
                "closing a connection the new policy refuses"
            );
            self.audit
                .record(&AuditEvent::revocation(meta, &d, snap.policy.mode()));
        }
        lease
    }

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
            // Unix targets never get here (`admit_unix` above).
            Target::Unix(_) => {
                let d = Decision::deny(Reason::NotAllowed);
                self.record(meta, &d, &snap);
                return Admission::Deny(d);
            }
        };
        match self
            .addresses(host, port, check, decision, &snap, &own)
            .await
        {
            Ok((addrs, decision)) => {
                let via = match self.via_upstream(meta, host, port, &addrs, &snap).await {
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

/// Requests inside intercepted tunnels.
impl PolicyGate {
    /// [`Gate::admit_inner`]: judges `inner` against its tunnel with
    /// [`proxy_core::judge_inner`] under the mode in force now (the inner Host must be the
    /// tunnel's target; limited mode allows GET, HEAD and OPTIONS), resolving nothing, and
    /// records one audit event about `inner` (protocol `https`).
    pub fn judge_inner(
        &self,
        tunnel: &RequestMeta,
        route: &Route,
        inner: &RequestMeta,
    ) -> Decision {
        let snap = self.state.load();
        let decision = proxy_core::judge_inner(tunnel, route, inner, snap.policy.mode());
        self.record(inner, &decision, &snap);
        decision
    }
}

#[cfg(test)]
mod inner_tests {
    use std::sync::{Arc, Mutex};

    use proxy_core::{
        AuditEvent, AuditSink, Decision, Gate, Mode, Protocol, Reason, RequestMeta, Target,
    };

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
        Snapshot::new(config, policy)
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
        let resolver = crate::resolve::Resolver::new(
            Some(&[]),
            std::collections::BTreeMap::new(),
            std::time::Duration::from_millis(100),
        )
        .expect("a resolver");
        let gate = PolicyGate::new(state.clone(), resolver, events.clone());
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
            async move { gate.admit_inner(tunnel, route, &inner).await }
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
}
