//! The compiled [`Policy`] and its builder.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;
use proxy_core::{
    Decision, Host, InnerVerdict, Mode, Protocol, Reason, RequestHead, RequestMeta, Route, Rule,
    Target,
};

use crate::classify::classify;
use crate::error::{Error, PatternError};
use crate::hooks::{Hook, HookVerdict, Hooks};
use crate::matcher::{Entry, Matcher};
use crate::own::OwnAddrs;
use crate::pattern::{Pattern, PatternKind};

/// Collects rules; [`PolicyBuilder::build`] compiles them into a [`Policy`].
///
/// ```
/// use proxy_policy::Policy;
/// let mut b = Policy::builder();
/// b.allow("**.example.com", Some("user config"))?
///     .deny("ads.example.com", None)?
///     .mode(proxy_core::Mode::Limited);
/// let policy = b.build()?;
/// # Ok::<(), proxy_policy::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    enabled: bool,
    allow: Vec<Entry>,
    deny: Vec<Entry>,
    mode: Mode,
    allow_local_binding: bool,
    treat_as_public: Vec<IpNet>,
    interception: bool,
    unix_sockets: Vec<(String, Option<String>)>,
    allow_all_unix_sockets: bool,
    hooks: Hooks,
    credentials: Vec<Entry>,
    allowlist_fixed_by: Option<String>,
}

impl Default for PolicyBuilder {
    fn default() -> Self {
        Self {
            enabled: true,
            allow: Vec::new(),
            deny: Vec::new(),
            mode: Mode::Full,
            allow_local_binding: false,
            treat_as_public: Vec::new(),
            interception: false,
            unix_sockets: Vec::new(),
            allow_all_unix_sockets: false,
            hooks: Hooks::default(),
            credentials: Vec::new(),
            allowlist_fixed_by: None,
        }
    }
}

impl PolicyBuilder {
    /// Adds an allow pattern; `origin` is an opaque label reported with decisions.
    pub fn allow(&mut self, pattern: &str, origin: Option<&str>) -> Result<&mut Self, Error> {
        let pattern = Pattern::parse(pattern)?;
        self.allow.push(Entry::new(pattern, origin));
        Ok(self)
    }

    /// Adds a deny pattern. The global wildcard `*` is refused in a deny list.
    pub fn deny(&mut self, pattern: &str, origin: Option<&str>) -> Result<&mut Self, Error> {
        let pattern = Pattern::parse(pattern)?;
        if pattern.is_global() {
            return Err(Error::GlobalDeny(pattern.as_str().to_owned()));
        }
        self.deny.push(Entry::new(pattern, origin));
        Ok(self)
    }

    /// Sets the mode (default full).
    pub fn mode(&mut self, mode: Mode) -> &mut Self {
        self.mode = mode;
        self
    }

    /// Turns the proxy off: every request is refused with `proxy_disabled` (default on).
    pub fn enabled(&mut self, enabled: bool) -> &mut Self {
        self.enabled = enabled;
        self
    }

    /// Turns local protection off as a whole (default on): local literals, `localhost` and
    /// names resolving to local addresses (the machine's own included) are judged by the allow
    /// and deny lists like any other target, so `*` admits `127.0.0.1`. A deny entry still
    /// wins, on a name's resolved addresses too.
    pub fn allow_local_binding(&mut self, allow: bool) -> &mut Self {
        self.allow_local_binding = allow;
        self
    }

    /// Exempts a range from local protection (e.g. a fake-IP DNS range).
    pub fn treat_as_public(&mut self, net: IpNet) -> &mut Self {
        self.treat_as_public.push(net);
        self
    }

    /// Declares that HTTPS interception is available, so limited mode can admit `CONNECT` and
    /// SOCKS to port 443 by intercepting them (default off: they are `mitm_required`).
    pub fn interception(&mut self, available: bool) -> &mut Self {
        self.interception = available;
        self
    }

    /// Allows a unix socket path (absolute; compare after canonicalising symlinks).
    pub fn allow_unix_socket(
        &mut self,
        path: &str,
        origin: Option<&str>,
    ) -> Result<&mut Self, Error> {
        if !path.starts_with('/') || path.contains('\0') {
            return Err(Error::UnixPath(path.to_owned()));
        }
        self.unix_sockets
            .push((path.to_owned(), origin.map(str::to_owned)));
        Ok(self)
    }

    /// Allows every absolute unix socket path.
    pub fn allow_all_unix_sockets(&mut self, allow: bool) -> &mut Self {
        self.allow_all_unix_sockets = allow;
        self
    }

    /// Adds a hook (after the hooks of its host already added: the first match wins). A host
    /// with hooks must be intercepted, in any mode: its `CONNECT`s and SOCKS5 connections to
    /// port 443 are routed with `intercept` (or refused `mitm_required` when interception is
    /// not available), anything else to it is refused `mitm_required` (plain HTTP, SOCKS5 to
    /// another port, SOCKS5 UDP), and inside the tunnel a request no hook matches is refused
    /// `mitm_hook_denied`. A hook without methods or path prefixes is refused.
    pub fn hook(&mut self, hook: Hook) -> Result<&mut Self, Error> {
        if !hook.is_complete() {
            return Err(Error::Hook(format!(
                "hook {} needs methods and path_prefixes",
                hook.name()
            )));
        }
        self.hooks.add(hook);
        Ok(self)
    }

    /// Adds a credential destination: a `host:port` pattern in the allowlist's grammar (an
    /// exact host or IP, `*.x` subdomains, `**.x`; a port scope is required, e.g.
    /// `api.github.com:443`) where the credential broker injects real credentials. With
    /// interception available, a `CONNECT` (any mode) or SOCKS5 connection to it that nothing
    /// else intercepts is routed [`Intercept::IfTls`]: intercepted when its first bytes are a
    /// TLS ClientHello, an opaque tunnel otherwise (docs/mitm.md). It admits nothing by itself:
    /// the allowlist still decides.
    ///
    /// ```
    /// use proxy_policy::Policy;
    /// let mut b = Policy::builder();
    /// b.credential_destination("*.ghe.com:443")?;
    /// assert!(b.credential_destination("api.github.com").is_err());
    /// let p = b.build()?;
    /// let host = proxy_core::Host::parse("acme.ghe.com").unwrap();
    /// assert!(p.is_credential_destination(&host, 443));
    /// assert!(!p.is_credential_destination(&host, 22));
    /// # Ok::<(), proxy_policy::Error>(())
    /// ```
    pub fn credential_destination(&mut self, pattern: &str) -> Result<&mut Self, Error> {
        let parsed = Pattern::parse(pattern)?;
        if parsed.ports().is_none() {
            return Err(Error::Pattern(PatternError::new(
                pattern.trim(),
                "a credential destination needs a port, e.g. api.github.com:443",
            )));
        }
        self.credentials.push(Entry::new(parsed, None));
        Ok(self)
    }

    /// Declares the allowlist fixed by managed requirements (`origin` names them): no decider
    /// may turn one of its misses into an allow (`run --learn`, and any embedder's decider),
    /// since what managed constraints refuse stays refused. `None` (the default): a decider
    /// may.
    ///
    /// ```
    /// use proxy_policy::Policy;
    /// let mut b = Policy::builder();
    /// b.allowlist_fixed_by(Some("/etc/netproxy/requirements.toml".into()));
    /// assert_eq!(b.build()?.allowlist_fixed_by(), Some("/etc/netproxy/requirements.toml"));
    /// # Ok::<(), proxy_policy::Error>(())
    /// ```
    pub fn allowlist_fixed_by(&mut self, origin: Option<String>) -> &mut Self {
        self.allowlist_fixed_by = origin;
        self
    }

    /// Compiles the rules.
    pub fn build(&self) -> Result<Policy, Error> {
        Ok(Policy {
            enabled: self.enabled,
            allow: Matcher::build(self.allow.clone())?,
            deny: Matcher::build_deny(self.deny.clone())?,
            mode: self.mode,
            allow_local_binding: self.allow_local_binding,
            treat_as_public: self.treat_as_public.clone(),
            interception: self.interception,
            unix_sockets: self.unix_sockets.clone(),
            allow_all_unix_sockets: self.allow_all_unix_sockets,
            hooks: self.hooks.clone(),
            credentials: Matcher::build(self.credentials.clone())?,
            allowlist_fixed_by: self.allowlist_fixed_by.clone(),
        })
    }
}

/// The first phase's answer.
///
/// ```
/// use proxy_core::{Protocol, RequestMeta, Target};
/// use proxy_policy::{Evaluation, Intercept, Policy};
/// let mut b = Policy::builder();
/// b.allow("1.1.1.1", None)?;
/// let p = b.build()?;
/// let meta = RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority("1.1.1.1:443", 443).unwrap());
/// // A public literal needs no resolution: the answer is final.
/// assert!(matches!(p.evaluate(&meta), Evaluation::Allow { intercept: Intercept::No, .. }));
/// # Ok::<(), proxy_policy::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// Final: allowed (an IP literal, an explicitly allowed local name, or a unix socket).
    /// `intercept` says whether the tunnel is to be intercepted ([`Intercept`]).
    Allow {
        /// The decision.
        decision: Decision,
        /// Whether the tunnel is to be intercepted.
        intercept: Intercept,
    },
    /// Allowed if the name's addresses pass: resolve it once, then call
    /// [`Policy::check_addresses`].
    AllowIfAddressesPass {
        /// The decision, if the addresses pass.
        decision: Decision,
        /// Whether the tunnel is to be intercepted.
        intercept: Intercept,
    },
    /// Final: refused. A `not_allowed` refusal is an allowlist miss, which a caller may put to
    /// its decider.
    Deny(Decision),
}

/// Whether an admitted tunnel is to be intercepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intercept {
    /// Not intercepted: an opaque tunnel (or not a tunnel at all).
    No,
    /// Intercepted, whatever its first bytes (limited mode, a host with hooks): a stream that
    /// is not TLS is closed, never relayed opaque (fail closed).
    Always,
    /// A tunnel to a credential destination ([`PolicyBuilder::credential_destination`]):
    /// intercepted when its first bytes are a TLS ClientHello, an opaque tunnel otherwise
    /// (another protocol, or a client that waits for the server to speak first).
    IfTls,
}

impl Intercept {
    /// Whether the tunnel is handed to the interceptor (`Always` or `IfTls`).
    pub fn is_intercepted(self) -> bool {
        self != Intercept::No
    }
}

impl Evaluation {
    /// The decision carried, whatever the phase.
    pub fn decision(&self) -> &Decision {
        match self {
            Evaluation::Allow { decision, .. }
            | Evaluation::AllowIfAddressesPass { decision, .. }
            | Evaluation::Deny(decision) => decision,
        }
    }
}

/// A compiled policy: immutable, `Send + Sync`, cheap to share behind an `Arc`.
///
/// ```
/// use proxy_core::{Protocol, Reason, RequestMeta, Target};
/// use proxy_policy::{Evaluation, OwnAddrs, Policy};
///
/// let mut b = Policy::builder();
/// b.allow("*.example.com", None)?.deny("evil.example.com", None)?;
/// let policy = b.build()?;
///
/// let req = |host: &str| RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority(host, 443).unwrap());
/// // A name the policy admits must still have its addresses checked.
/// let Evaluation::AllowIfAddressesPass { decision, .. } = policy.evaluate(&req("api.example.com")) else { panic!() };
/// let host = proxy_core::Host::parse("api.example.com").unwrap();
/// let done = policy.check_addresses(&host, decision, 443, &["127.0.0.1".parse().unwrap()], OwnAddrs::none());
/// assert_eq!(done.reason, Some(Reason::NotAllowedLocal));
/// // Deny wins, and a denied name is never resolved.
/// assert_eq!(policy.evaluate(&req("evil.example.com")).decision().reason, Some(Reason::Denied));
/// // Literals are judged at once.
/// assert_eq!(policy.evaluate(&req("0x7f.1")).decision().reason, Some(Reason::NotAllowedLocal));
/// # Ok::<(), proxy_policy::Error>(())
/// ```
#[derive(Debug)]
pub struct Policy {
    enabled: bool,
    allow: Matcher,
    deny: Matcher,
    mode: Mode,
    allow_local_binding: bool,
    treat_as_public: Vec<IpNet>,
    interception: bool,
    unix_sockets: Vec<(String, Option<String>)>,
    allow_all_unix_sockets: bool,
    hooks: Hooks,
    credentials: Matcher,
    allowlist_fixed_by: Option<String>,
}

fn rule_of(e: &Entry) -> Rule {
    Rule::new(e.text.clone(), e.origin.clone())
}

impl Policy {
    /// A builder with the defaults: enabled, full mode, empty lists (which deny everything),
    /// local protection on.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The managed requirements that fix the allowlist, if any
    /// ([`PolicyBuilder::allowlist_fixed_by`]): a decider is then never asked about a miss.
    pub fn allowlist_fixed_by(&self) -> Option<&str> {
        self.allowlist_fixed_by.as_deref()
    }

    /// Whether `host` has hooks (so it is reached only through interception).
    pub fn is_hooked(&self, host: &Host) -> bool {
        self.hooks.is_hooked(host)
    }

    /// Whether `host:port` is a credential destination
    /// ([`PolicyBuilder::credential_destination`]).
    pub fn is_credential_destination(&self, host: &Host, port: u16) -> bool {
        self.credentials.find(host, port).is_some()
    }

    /// Whether any host has hooks.
    pub fn has_hooks(&self) -> bool {
        !self.hooks.is_empty()
    }

    /// What the hooks of `host` say of a request with this head.
    pub fn evaluate_hooks(&self, host: &Host, head: &RequestHead<'_>) -> HookVerdict<'_> {
        self.hooks.evaluate(host, head)
    }

    /// Judges a request inside an intercepted tunnel: it must name the tunnel's target (else
    /// `not_allowed`); when its host has hooks, one must match (else `mitm_hook_denied`, in any
    /// mode); then the mode's method rule ([`proxy_core::judge_inner`]: a matching hook never
    /// lifts limited mode). Allowed, it carries the matching hook's name and actions. Pure.
    ///
    /// ```
    /// use proxy_core::{Decision, Protocol, Reason, RequestHead, RequestMeta, Route, Target};
    /// use proxy_policy::{Hook, Policy};
    /// let mut b = Policy::builder();
    /// b.allow("api.github.com", None)?
    ///     .interception(true)
    ///     .hook(Hook::new("read", "api.github.com")?.methods(["GET"])?.path_prefixes(["/repos/"])?.actions(["auth"]))?;
    /// let policy = b.build()?;
    /// let target = Target::parse_authority("api.github.com:443", 443).unwrap();
    /// let tunnel = RequestMeta::new(Protocol::HttpsConnect, target.clone()).with_method("CONNECT");
    /// let route = Route::direct(vec!["127.0.0.1:443".parse().unwrap()], Decision::allow());
    /// let judge = |method: &str, path: &str| {
    ///     let inner = RequestMeta::new(Protocol::Https, target.clone()).with_method(method);
    ///     let head = RequestHead { method, path, query: None, headers: &[] };
    ///     policy.judge_inner(&tunnel, &route, &inner, &head)
    /// };
    /// let v = judge("GET", "/repos/a/b");
    /// assert!(v.decision.is_allowed());
    /// assert_eq!(v.actions, ["auth"]);
    /// assert_eq!(judge("GET", "/user").decision.reason, Some(Reason::MitmHookDenied));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn judge_inner(
        &self,
        tunnel: &RequestMeta,
        route: &Route,
        inner: &RequestMeta,
        head: &RequestHead<'_>,
    ) -> InnerVerdict {
        let pure = || proxy_core::judge_inner(tunnel, route, inner, self.mode);
        let Some(host) = inner
            .target
            .host()
            .filter(|_| inner.target == tunnel.target)
        else {
            return pure().into();
        };
        match self.hooks.evaluate(host, head) {
            HookVerdict::NoHooks => pure().into(),
            HookVerdict::NoMatch => {
                let refused = Decision::deny(Reason::MitmHookDenied)
                    .with_detail(format!("no hook of {host} matches this request"));
                match &route.decision.rule {
                    Some(rule) => refused.with_rule(rule.clone()),
                    None => refused,
                }
                .into()
            }
            HookVerdict::Matched(hook) => {
                let decision = pure();
                if decision.is_allowed() {
                    InnerVerdict {
                        decision,
                        hook: Some(hook.name().to_owned()),
                        actions: hook.action_names().to_vec(),
                    }
                } else {
                    InnerVerdict {
                        decision,
                        hook: Some(hook.name().to_owned()),
                        actions: Vec::new(),
                    }
                }
            }
        }
    }

    /// The allowed unix socket paths, as written (the caller compares them after resolving
    /// symlinks, which this crate never does: it does no I/O).
    pub fn unix_socket_paths(&self) -> impl Iterator<Item = &str> {
        self.unix_sockets.iter().map(|(p, _)| p.as_str())
    }

    /// Whether every absolute unix socket path is allowed
    /// (`dangerously_allow_all_unix_sockets`).
    pub fn allows_all_unix_sockets(&self) -> bool {
        self.allow_all_unix_sockets
    }

    /// The allow patterns, as written.
    pub fn allowed_patterns(&self) -> impl Iterator<Item = &str> {
        self.allow.entries().iter().map(|e| e.pattern.as_str())
    }

    /// The deny patterns, as written.
    pub fn denied_patterns(&self) -> impl Iterator<Item = &str> {
        self.deny.entries().iter().map(|e| e.pattern.as_str())
    }

    /// The `treat_as_public` ranges in force.
    pub fn treat_as_public(&self) -> &[IpNet] {
        &self.treat_as_public
    }

    /// Whether local protection is on (`allow_local_binding` is off).
    pub fn protects_local(&self) -> bool {
        !self.allow_local_binding
    }

    /// Whether HTTPS interception is available.
    pub fn interception(&self) -> bool {
        self.interception
    }

    /// Why `ip` is refused as a local address while local protection is on (`None` when it is
    /// public, or inside `treat_as_public`): one of the machine's own addresses (`own`, which
    /// `treat_as_public` never exempts), or a local range.
    ///
    /// ```
    /// use proxy_policy::{OwnAddrs, Policy};
    /// let p = Policy::builder().build()?;
    /// assert!(p.local_reason("10.0.0.5".parse().unwrap(), OwnAddrs::none()).is_some());
    /// assert!(p.local_reason("93.184.216.34".parse().unwrap(), OwnAddrs::none()).is_none());
    /// # Ok::<(), proxy_policy::Error>(())
    /// ```
    pub fn local_reason(&self, ip: IpAddr, own: &OwnAddrs) -> Option<String> {
        self.local_address(ip, own)
    }

    /// The `*.NAME` allow pattern that would admit `host:port` but for the apex: `host` is
    /// NAME itself, which `*.NAME` leaves out (`**.NAME` admits both). `None` when there is
    /// none.
    ///
    /// ```
    /// use proxy_core::Host;
    /// use proxy_policy::Policy;
    /// let mut b = Policy::builder();
    /// b.allow("*.example.com", None)?;
    /// let p = b.build()?;
    /// assert_eq!(p.apex_missed_by(&Host::parse("example.com").unwrap(), 443), Some("*.example.com"));
    /// assert_eq!(p.apex_missed_by(&Host::parse("other.com").unwrap(), 443), None);
    /// # Ok::<(), proxy_policy::Error>(())
    /// ```
    pub fn apex_missed_by(&self, host: &Host, port: u16) -> Option<&str> {
        self.allow
            .entries()
            .iter()
            .find(|e| {
                matches!(e.pattern.kind(), PatternKind::Subdomains(h) if h == host)
                    && e.pattern.admits_port(port)
            })
            .map(|e| e.pattern.as_str())
    }

    /// Why a literal address is local while local protection is on: one of the machine's own
    /// addresses (whatever `treat_as_public` says), or a local range outside `treat_as_public`.
    fn local_address(&self, ip: IpAddr, own: &OwnAddrs) -> Option<String> {
        if own.contains(ip) {
            return Some(format!("{ip} is an address of this machine"));
        }
        let canonical = ip.to_canonical();
        if self
            .treat_as_public
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&canonical))
        {
            return None;
        }
        classify(canonical).map(|r| format!("{ip} is a {r} address"))
    }

    /// Whether a host is a local literal: `localhost`, a `*.localhost` name, or a local IP.
    fn local_literal(&self, host: &Host, own: &OwnAddrs) -> Option<String> {
        if let Some(name) = host.as_name() {
            return is_localhost(name).then(|| format!("{name} is a local name"));
        }
        let ip = host.policy_ip()?;
        self.local_address(ip, own).map(|why| match host.ip() {
            // Name the host as requested when the judged address is the IPv4 it carries.
            Some(dialed) if dialed != ip => format!("{host}: {why}"),
            _ => why,
        })
    }

    /// The first phase without the machine's own addresses: the same as
    /// [`Policy::evaluate_with`] given [`OwnAddrs::none`]. Use it to judge a request for
    /// another host, or when the caller has no address set; a proxy uses `evaluate_with`.
    pub fn evaluate(&self, req: &RequestMeta) -> Evaluation {
        self.evaluate_with(req, OwnAddrs::none())
    }

    /// The first phase: deny list → local literal → allowlist → mode. Never resolves anything.
    /// `own` holds the machine's own addresses: while local protection is on, a literal among
    /// them is local (only an explicit literal allow entry admits it). With
    /// `allow_local_binding`, local protection is off as a whole: local literals are judged by
    /// the allow and deny lists like any other target.
    pub fn evaluate_with(&self, req: &RequestMeta, own: &OwnAddrs) -> Evaluation {
        if !self.enabled {
            return Evaluation::Deny(Decision::deny(Reason::ProxyDisabled));
        }
        let (host, port) = match &req.target {
            Target::Net { host, port } => (host, *port),
            Target::Unix(path) => return self.evaluate_unix(req, path),
        };
        if let Some(e) = self.deny.find(host, port) {
            return Evaluation::Deny(Decision::deny(Reason::Denied).with_rule(rule_of(e)));
        }
        let localhost = host.as_name().is_some_and(is_localhost);
        if localhost {
            // `localhost` connects to the loopback addresses without a lookup: an IP deny
            // entry for either of them denies it, as it would a name resolving to it.
            for ip in [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ] {
                if let Some(e) = self.deny.find(&Host::from_ip(ip), port) {
                    return Evaluation::Deny(
                        Decision::deny(Reason::Denied)
                            .with_rule(rule_of(e))
                            .with_detail(format!("{host} connects to {ip}")),
                    );
                }
            }
        }
        let local = if self.allow_local_binding {
            None
        } else {
            self.local_literal(host, own)
        };
        let allowed = match &local {
            Some(why) => match self.allow.find_explicit(host, port) {
                Some(e) => e,
                None => {
                    let detail = match self.allow.find(host, port) {
                        Some(e) => format!(
                            "{why}; the wildcard {} never admits a local target",
                            e.pattern
                        ),
                        None => format!("{why}; only an explicit literal allow entry admits it"),
                    };
                    return Evaluation::Deny(
                        Decision::deny(Reason::NotAllowedLocal).with_detail(detail),
                    );
                }
            },
            None => match self.allow.find(host, port) {
                Some(e) => e,
                None => {
                    let detail = if self.allow.is_empty() {
                        "the allowlist is empty"
                    } else {
                        "no allow pattern matched"
                    };
                    return Evaluation::Deny(
                        Decision::deny(Reason::NotAllowed).with_detail(detail),
                    );
                }
            },
        };
        let decision = Decision::allow().with_rule(rule_of(allowed));
        let intercept = match self.guard(req) {
            Ok(intercept) => intercept,
            Err(refused) => return Evaluation::Deny(refused.with_rule(rule_of(allowed))),
        };
        // A literal, or a `localhost` name (which connects to loopback without a lookup),
        // needs no address check; any other name does: for local protection, and for IP deny
        // entries, which win over the addresses a name resolves to even under local binding.
        if host.is_name() && !localhost {
            Evaluation::AllowIfAddressesPass {
                decision,
                intercept,
            }
        } else {
            Evaluation::Allow {
                decision,
                intercept,
            }
        }
    }

    /// The guards that follow the allowlist, for a request admitted by it or by a decider
    /// (which must not skip them): a hooked host only through interception, then limited mode,
    /// then credential destinations (intercepted if TLS). `Ok(intercept)`: whether the tunnel
    /// is to be intercepted; `Err` the refusal (no rule: the caller adds the one that admitted
    /// the request).
    ///
    /// ```
    /// use proxy_core::{Mode, Protocol, Reason, RequestMeta, Target};
    /// use proxy_policy::Policy;
    /// let mut b = Policy::builder();
    /// b.mode(Mode::Limited);
    /// let policy = b.build()?;
    /// let post = RequestMeta::new(Protocol::Http, Target::parse_authority("x.test:80", 80).unwrap()).with_method("POST");
    /// assert_eq!(policy.guard(&post).unwrap_err().reason, Some(Reason::MethodNotAllowed));
    /// # Ok::<(), proxy_policy::Error>(())
    /// ```
    pub fn guard(&self, req: &RequestMeta) -> Result<Intercept, Decision> {
        let Target::Net { host, port } = &req.target else {
            return Ok(Intercept::No);
        };
        if req.protocol == Protocol::Dns {
            // A name lookup is never a request to admit: netproxy answers no names (`run
            // --isolate` records them as refused), so none is admitted here whatever the lists
            // say.
            return Err(Decision::deny(Reason::DnsNotServed));
        }
        if let Some(ip) = self.hooked_loopback(host) {
            return Err(hooked_address(host, ip, "connects to"));
        }
        match self.hook_guard(req, host, *port) {
            Some(Ok(())) => Ok(Intercept::Always),
            Some(Err(detail)) => Err(Decision::deny(Reason::MitmRequired).with_detail(detail)),
            None => match self.mode_guard(req, *port) {
                Ok(true) => Ok(Intercept::Always),
                Ok(false) => Ok(self.credential_guard(req, host, *port)),
                Err(reason) => Err(Decision::deny(reason)
                    .with_detail(format!("limited mode; {}", reason.message()))),
            },
        }
    }

    /// For a `localhost` name without hooks of its own, the loopback address it connects to
    /// (without a lookup) that has hooks: the name would skip them.
    fn hooked_loopback(&self, host: &Host) -> Option<IpAddr> {
        if self.hooks.is_empty() || !host.as_name().is_some_and(is_localhost) {
            return None;
        }
        if self.hooks.is_hooked(host) {
            return None;
        }
        [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
        .into_iter()
        .find(|ip| self.hooks.is_hooked(&Host::from_ip(*ip)))
    }

    /// A tunnel nothing else intercepts, to a credential destination, with interception
    /// available: intercepted if its first bytes are TLS. Plain HTTP and UDP are left as they
    /// are; without interception the tunnel stays opaque (only the child's worthless dummy
    /// credentials can pass through it).
    fn credential_guard(&self, req: &RequestMeta, host: &Host, port: u16) -> Intercept {
        let tunnel = matches!(req.protocol, Protocol::HttpsConnect | Protocol::Socks5Tcp);
        if tunnel && self.interception && self.is_credential_destination(host, port) {
            Intercept::IfTls
        } else {
            Intercept::No
        }
    }

    /// The guard of a host with hooks, in any mode, after deny, local and allowlist: `None` when
    /// `host` has no hooks; `Some(Ok(()))` for a tunnel that will be intercepted (limited mode
    /// then judges each request inside); `Some(Err(detail))` for what cannot be intercepted.
    fn hook_guard(&self, req: &RequestMeta, host: &Host, port: u16) -> Option<Result<(), String>> {
        if !self.hooks.is_hooked(host) {
            return None;
        }
        let unavailable = || "the host has MITM hooks and HTTPS interception is off".to_owned();
        Some(match req.protocol {
            Protocol::HttpsConnect => {
                if self.interception {
                    Ok(())
                } else {
                    Err(unavailable())
                }
            }
            Protocol::Socks5Tcp if port == 443 => {
                if self.interception {
                    Ok(())
                } else {
                    Err(unavailable())
                }
            }
            Protocol::Socks5Tcp => Err(format!(
                "the host has MITM hooks; SOCKS5 reaches it on port 443 only (asked for {port}), where its TLS can be intercepted"
            )),
            Protocol::Socks5Udp => Err(
                "the host has MITM hooks; UDP to it (HTTP/3) would bypass them".to_owned(),
            ),
            Protocol::Http => Err(
                "the host has MITM hooks, which apply inside intercepted TLS only: use https:// through CONNECT".to_owned(),
            ),
            // Inside an intercepted tunnel (a held websocket re-judged): its hooks were
            // matched by `judge_inner`; the mode still applies.
            Protocol::Https => return None,
            // Refused by `guard` before its hooks are looked at.
            Protocol::Dns => return None,
        })
    }

    /// The limited-mode guard, after deny, local and allowlist: `Ok(intercept)` or the refusal.
    fn mode_guard(&self, req: &RequestMeta, port: u16) -> Result<bool, Reason> {
        if self.mode == Mode::Full {
            return Ok(false);
        }
        match req.protocol {
            // An upgrade becomes an opaque tunnel where methods cannot be enforced.
            Protocol::Http | Protocol::Https if req.upgrade => Err(Reason::MethodNotAllowed),
            Protocol::Http | Protocol::Https if req.methods_allowed_in(self.mode) => Ok(false),
            Protocol::Http | Protocol::Https => Err(Reason::MethodNotAllowed),
            Protocol::HttpsConnect => {
                if self.interception {
                    Ok(true)
                } else {
                    Err(Reason::MitmRequired)
                }
            }
            Protocol::Socks5Tcp if port == 443 => {
                if self.interception {
                    Ok(true)
                } else {
                    Err(Reason::MitmRequired)
                }
            }
            Protocol::Socks5Tcp | Protocol::Socks5Udp => Err(Reason::MethodNotAllowed),
            Protocol::Dns => Err(Reason::DnsNotServed),
        }
    }

    fn evaluate_unix(&self, req: &RequestMeta, path: &Path) -> Evaluation {
        let text = path.to_string_lossy();
        if !path.is_absolute() {
            return Evaluation::Deny(
                Decision::deny(Reason::NotAllowed)
                    .with_detail("unix socket paths must be absolute"),
            );
        }
        let rule = if self.allow_all_unix_sockets {
            Rule::new("dangerously_allow_all_unix_sockets", None)
        } else {
            match self.unix_sockets.iter().find(|(p, _)| *p == text) {
                Some((p, origin)) => Rule::new(p.as_str(), origin.as_deref().map(Into::into)),
                None => {
                    return Evaluation::Deny(
                        Decision::deny(Reason::NotAllowed)
                            .with_detail("unix socket path not in the allowlist"),
                    );
                }
            }
        };
        if self.mode == Mode::Limited && !req.methods_allowed_in(self.mode) {
            return Evaluation::Deny(Decision::deny(Reason::MethodNotAllowed).with_rule(rule));
        }
        Evaluation::Allow {
            decision: Decision::allow().with_rule(rule),
            intercept: Intercept::No,
        }
    }

    /// The second phase, for a name [`Policy::evaluate_with`] answered
    /// [`Evaluation::AllowIfAddressesPass`]: `addrs` are what the name resolved to, `port` the
    /// port requested, `own` the machine's own addresses. Deny wins on addresses too: an
    /// address an IP deny entry matches (in any spelling, at that port) refuses the name as
    /// `denied`, whatever else holds. Then, while local protection is on, every address must be
    /// public or inside `treat_as_public`, and none may be one of the machine's own addresses,
    /// or the name is refused as `not_allowed_local`. Last, an address with MITM hooks refuses a
    /// name `host` that has none (`mitm_hook_denied`): the hooks of an IP literal are not
    /// skipped by asking for a name that resolves to it (hook the name too). An empty list is
    /// refused (fail closed).
    ///
    /// ```
    /// use proxy_core::{Protocol, Reason, RequestMeta, Target};
    /// use proxy_policy::{Evaluation, OwnAddrs, Policy};
    /// let mut b = Policy::builder();
    /// b.allow("*", None)?.deny("10.0.0.1", None)?.allow_local_binding(true);
    /// let p = b.build()?;
    /// let meta = RequestMeta::new(Protocol::Http, Target::parse_authority("intranet.test", 80).unwrap());
    /// let Evaluation::AllowIfAddressesPass { decision, .. } = p.evaluate(&meta) else { panic!() };
    /// let host = proxy_core::Host::parse("intranet.test").unwrap();
    /// let ips = ["10.0.0.2".parse().unwrap()];
    /// assert!(p.check_addresses(&host, decision.clone(), 80, &ips, OwnAddrs::none()).is_allowed());
    /// let ips = ["10.0.0.2".parse().unwrap(), "::ffff:10.0.0.1".parse().unwrap()];
    /// let d = p.check_addresses(&host, decision, 80, &ips, OwnAddrs::none());
    /// assert_eq!(d.reason, Some(Reason::Denied));
    /// # Ok::<(), proxy_policy::Error>(())
    /// ```
    pub fn check_addresses(
        &self,
        host: &Host,
        pending: Decision,
        port: u16,
        addrs: &[IpAddr],
        own: &OwnAddrs,
    ) -> Decision {
        if addrs.is_empty() {
            return Decision::deny(Reason::NotAllowedLocal)
                .with_detail("the name has no addresses");
        }
        for &ip in addrs {
            if let Some(e) = self.deny.find(&Host::from_ip(ip), port) {
                return Decision::deny(Reason::Denied)
                    .with_rule(rule_of(e))
                    .with_detail(format!("resolved to {ip}"));
            }
        }
        if !self.allow_local_binding {
            for &ip in addrs {
                if let Some(why) = self.local_address(ip, own) {
                    // The rule that allowed the name stays: `check` says which one matched.
                    let refused = Decision::deny(Reason::NotAllowedLocal)
                        .with_detail(format!("resolved to {ip}: {why}"));
                    return match pending.rule {
                        Some(rule) => refused.with_rule(rule),
                        None => refused,
                    };
                }
            }
        }
        if !self.hooks.is_empty()
            && !self.hooks.is_hooked(host)
            && let Some(ip) = addrs
                .iter()
                .find(|ip| self.hooks.is_hooked(&Host::from_ip(**ip)))
        {
            let refused = hooked_address(host, *ip, "resolved to");
            return match pending.rule {
                Some(rule) => refused.with_rule(rule),
                None => refused,
            };
        }
        pending
    }
}

/// The refusal of a name without hooks that reaches an address with hooks (`how`: "resolved
/// to", "connects to").
fn hooked_address(host: &Host, ip: IpAddr, how: &str) -> Decision {
    Decision::deny(Reason::MitmHookDenied).with_detail(format!(
        "{host} {how} {ip}, which has MITM hooks; {host} has none (hook {host} too)"
    ))
}

fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}
