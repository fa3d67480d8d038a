//! Decisions and the reasons that explain them (docs/policy.md, "Reasons").

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Allow, deny, or deny-and-ask (the embedding UI may prompt the user; the request is still
/// refused).
///
/// ```
/// use proxy_core::Verdict;
/// assert_eq!(Verdict::Ask.as_str(), "ask");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The request may proceed.
    Allow,
    /// The request is refused.
    Deny,
    /// The request is refused, and the user may be asked to allow it in future.
    Ask,
}

impl Verdict {
    /// The wire name: `allow`, `deny` or `ask`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Ask => "ask",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who decided: the baseline policy, the mode guard, the proxy's state, or a decider hook.
///
/// ```
/// use proxy_core::{Reason, Source};
/// assert_eq!(Reason::MitmRequired.source(), Source::ModeGuard);
/// assert_eq!(Source::ModeGuard.to_string(), "mode_guard");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The allow/deny lists and local protection.
    BaselinePolicy,
    /// Limited mode.
    ModeGuard,
    /// The proxy itself (disabled, or a name lookup inside the isolated namespace).
    ProxyState,
    /// The embedding program's decider hook.
    Decider,
}

impl Source {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::BaselinePolicy => "baseline_policy",
            Source::ModeGuard => "mode_guard",
            Source::ProxyState => "proxy_state",
            Source::Decider => "decider",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request was refused. Each reason has a wire name, a default source, an
/// `x-proxy-error` header value, an HTTP status and a short human message.
///
/// ```
/// use proxy_core::{Reason, Source};
/// let r = Reason::NotAllowedLocal;
/// assert_eq!(r.as_str(), "not_allowed_local");
/// assert_eq!(r.source(), Source::BaselinePolicy);
/// assert_eq!(r.x_proxy_error(), Some("blocked-by-allowlist"));
/// assert_eq!(r.http_status(), 403);
/// assert_eq!("denied".parse::<Reason>(), Ok(Reason::Denied));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A deny pattern matched.
    Denied,
    /// No allow pattern matched (or the allowlist is empty).
    NotAllowed,
    /// A local or private target (literal or resolved) that is not explicitly allowed.
    NotAllowedLocal,
    /// The host cannot be canonicalised.
    InvalidHost,
    /// Limited mode and a method other than GET, HEAD or OPTIONS.
    MethodNotAllowed,
    /// Limited mode (or a hooked host) needs interception, and interception is off.
    MitmRequired,
    /// A hooked host, and no hook matched.
    MitmHookDenied,
    /// The proxy is disabled (`enabled = false`).
    ProxyDisabled,
    /// A brokered dummy credential sent where its grant is not bound, or over plaintext.
    CredentialNotBound,
    /// `verify_sni` and the ClientHello names another host.
    SniMismatch,
    /// Any other refusal (a decider's).
    PolicyDenied,
    /// An `x-unix-socket` request that may come from a web page (DNS rebinding): its Host is
    /// not `localhost`, `*.localhost` or a loopback literal, or it carries `Origin` or a
    /// `Sec-Fetch-*` header.
    UnixSocketCrossOrigin,
    /// `run --isolate`: a DNS query the child sent to a resolver of its `/etc/resolv.conf`
    /// itself (instead of leaving the name to the proxy); netproxy answers no names there.
    /// Audit only: it is never the answer to a proxied request.
    DnsNotServed,
    /// `run --ask`: an allowlist miss was held for a person's answer, and nobody answered
    /// within the timeout (docs/run.md, "Approvals").
    ApprovalTimeout,
}

impl Reason {
    /// Every reason, in the order of docs/policy.md, "Reasons".
    pub const ALL: [Reason; 14] = [
        Reason::Denied,
        Reason::NotAllowed,
        Reason::NotAllowedLocal,
        Reason::InvalidHost,
        Reason::MethodNotAllowed,
        Reason::MitmRequired,
        Reason::MitmHookDenied,
        Reason::ProxyDisabled,
        Reason::CredentialNotBound,
        Reason::SniMismatch,
        Reason::PolicyDenied,
        Reason::UnixSocketCrossOrigin,
        Reason::DnsNotServed,
        Reason::ApprovalTimeout,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Denied => "denied",
            Reason::NotAllowed => "not_allowed",
            Reason::NotAllowedLocal => "not_allowed_local",
            Reason::InvalidHost => "invalid_host",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::MitmRequired => "mitm_required",
            Reason::MitmHookDenied => "mitm_hook_denied",
            Reason::ProxyDisabled => "proxy_disabled",
            Reason::CredentialNotBound => "credential_not_bound",
            Reason::SniMismatch => "sni_mismatch",
            Reason::PolicyDenied => "policy_denied",
            Reason::UnixSocketCrossOrigin => "unix_socket_cross_origin",
            Reason::DnsNotServed => "dns_not_served",
            Reason::ApprovalTimeout => "approval_timeout",
        }
    }

    /// The source a refusal for this reason has unless a decider gave it.
    pub const fn source(self) -> Source {
        match self {
            Reason::MethodNotAllowed | Reason::MitmRequired => Source::ModeGuard,
            Reason::ProxyDisabled | Reason::DnsNotServed => Source::ProxyState,
            Reason::PolicyDenied | Reason::ApprovalTimeout => Source::Decider,
            _ => Source::BaselinePolicy,
        }
    }

    /// The `x-proxy-error` header value; `None` for `proxy_disabled`, which is a 503 without it,
    /// and for `dns_not_served`, which is never sent on the wire (a DNS query is answered
    /// `REFUSED`, docs/audit.md).
    pub const fn x_proxy_error(self) -> Option<&'static str> {
        Some(match self {
            Reason::Denied => "blocked-by-denylist",
            Reason::NotAllowed | Reason::NotAllowedLocal => "blocked-by-allowlist",
            Reason::InvalidHost
            | Reason::PolicyDenied
            | Reason::UnixSocketCrossOrigin
            | Reason::ApprovalTimeout => "blocked-by-policy",
            Reason::MethodNotAllowed => "blocked-by-method-policy",
            Reason::MitmRequired => "blocked-by-mitm-required",
            Reason::MitmHookDenied => "blocked-by-mitm-hook",
            Reason::CredentialNotBound => "blocked-by-credential-policy",
            Reason::SniMismatch => "blocked-by-sni-policy",
            Reason::ProxyDisabled | Reason::DnsNotServed => return None,
        })
    }

    /// The HTTP status of a refusal for this reason.
    pub const fn http_status(self) -> u16 {
        match self {
            Reason::ProxyDisabled => 503,
            _ => 403,
        }
    }

    /// A short human message.
    pub const fn message(self) -> &'static str {
        match self {
            Reason::Denied => "Domain denied by the proxy policy.",
            Reason::NotAllowed => "Domain not in allowlist.",
            Reason::NotAllowedLocal => "Policy blocks local/private network addresses.",
            Reason::InvalidHost => "Invalid host.",
            Reason::MethodNotAllowed => "Method not allowed in limited mode.",
            Reason::MitmRequired => "MITM required for limited HTTPS.",
            Reason::MitmHookDenied => "HTTPS request denied by MITM hook policy.",
            Reason::ProxyDisabled => "network proxy is disabled",
            Reason::CredentialNotBound => "Credential is not bound to this destination.",
            Reason::SniMismatch => "TLS server name does not match the CONNECT host.",
            Reason::PolicyDenied => "Request blocked by network policy.",
            Reason::UnixSocketCrossOrigin => {
                "Unix socket requests are served only to local clients (Host localhost, *.localhost or a loopback address; no Origin or Sec-Fetch-* header)."
            }
            Reason::DnsNotServed => {
                "Name lookups are not served inside the isolated namespace; the proxy resolves names."
            }
            Reason::ApprovalTimeout => {
                "Not in the allowlist, and nobody answered the approval request in time."
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown reason name.
///
/// ```
/// assert!("nope".parse::<proxy_core::Reason>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reason {0:?}")]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

/// The rule that decided: the pattern as written and an opaque label of where it came from
/// (for netproxy, its config layer).
///
/// ```
/// use proxy_core::Rule;
/// let r = Rule::new("*.example.com", Some("/etc/netproxy/config.toml".into()));
/// assert_eq!(r.to_string(), "*.example.com (from /etc/netproxy/config.toml)");
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The pattern, as written.
    pub pattern: Arc<str>,
    /// Where it came from, if the embedder labelled it.
    pub origin: Option<Arc<str>>,
}

impl Clone for Rule {
    fn clone(&self) -> Self {
        Self {
            pattern: self.pattern.clone(),
            origin: self.origin.clone(),
        }
    }

    /// Leaves the shared texts alone when they are already the same ones (most decisions are
    /// made by the same few rules), so that their reference counts are not touched.
    fn clone_from(&mut self, source: &Self) {
        if !Arc::ptr_eq(&self.pattern, &source.pattern) {
            self.pattern = source.pattern.clone();
        }
        match (&mut self.origin, &source.origin) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => {}
            (origin, b) => *origin = b.clone(),
        }
    }
}

impl Rule {
    /// A rule. Cloning a rule is cheap (its text is shared).
    pub fn new(pattern: impl Into<Arc<str>>, origin: Option<Arc<str>>) -> Self {
        Self {
            pattern: pattern.into(),
            origin,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(o) => write!(f, "{} (from {o})", self.pattern),
            None => f.write_str(&self.pattern),
        }
    }
}

/// A decision that explains itself: verdict, reason (for refusals), source, and the rule that
/// decided (or `None` when no rule matched, e.g. `not_allowed`).
///
/// ```
/// use proxy_core::{Decision, Reason, Rule, Source, Verdict};
/// let d = Decision::deny(Reason::Denied).with_rule(Rule::new("evil.example", None));
/// assert_eq!(d.verdict, Verdict::Deny);
/// assert_eq!(d.source, Source::BaselinePolicy);
/// assert!(!d.is_allowed());
/// assert_eq!(d.reason_str(), "denied");
/// let a = Decision::allow();
/// assert_eq!(a.reason_str(), "allow");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow, deny or ask.
    pub verdict: Verdict,
    /// Why it was refused; `None` for an allow.
    pub reason: Option<Reason>,
    /// Who decided.
    pub source: Source,
    /// The rule that decided, if one did.
    pub rule: Option<Rule>,
    /// True when a decider turned an allowlist miss into an allow.
    pub policy_override: bool,
    /// A human detail, e.g. which resolved address was refused and why.
    pub detail: Option<Cow<'static, str>>,
}

impl Decision {
    /// An allow by the baseline policy.
    pub fn allow() -> Self {
        Self {
            verdict: Verdict::Allow,
            reason: None,
            source: Source::BaselinePolicy,
            rule: None,
            policy_override: false,
            detail: None,
        }
    }

    /// A refusal for `reason`, with the reason's default source.
    pub fn deny(reason: Reason) -> Self {
        Self {
            verdict: Verdict::Deny,
            reason: Some(reason),
            source: reason.source(),
            rule: None,
            policy_override: false,
            detail: None,
        }
    }

    /// An "ask" refusal (from a decider).
    pub fn ask(reason: Reason) -> Self {
        Self {
            verdict: Verdict::Ask,
            reason: Some(reason),
            source: Source::Decider,
            rule: None,
            policy_override: false,
            detail: None,
        }
    }

    /// Sets the rule that decided.
    #[must_use]
    pub fn with_rule(mut self, rule: Rule) -> Self {
        self.rule = Some(rule);
        self
    }

    /// Sets the detail.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets the source.
    #[must_use]
    pub fn with_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// The reason's wire name, `allow` for a baseline allow, or `not_allowed` for a decider's
    /// override (the audit field `network.policy.reason`).
    pub fn reason_str(&self) -> &'static str {
        match (self.reason, self.policy_override) {
            (Some(r), _) => r.as_str(),
            (None, true) => Reason::NotAllowed.as_str(),
            (None, false) => "allow",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_socket_cross_origin_is_a_baseline_policy_refusal() {
        let r = Reason::UnixSocketCrossOrigin;
        assert_eq!(r.as_str(), "unix_socket_cross_origin");
        assert_eq!(r.source(), Source::BaselinePolicy);
        assert_eq!(r.x_proxy_error(), Some("blocked-by-policy"));
        assert_eq!(r.http_status(), 403);
        assert_eq!("unix_socket_cross_origin".parse::<Reason>(), Ok(r));
        assert!(r.message().contains("Origin"));
    }

    #[test]
    fn dns_not_served_is_the_proxy_state_and_never_a_header() {
        let r = Reason::DnsNotServed;
        assert_eq!(r.as_str(), "dns_not_served");
        assert_eq!(r.source(), Source::ProxyState);
        assert_eq!(Decision::deny(r).source, Source::ProxyState);
        assert_eq!(r.x_proxy_error(), None);
        assert_eq!("dns_not_served".parse::<Reason>(), Ok(r));
        assert!(Reason::ALL.contains(&r));
    }

    #[test]
    fn approval_timeout_is_the_deciders_and_blocked_by_policy() {
        let r = Reason::ApprovalTimeout;
        assert_eq!(r.as_str(), "approval_timeout");
        assert_eq!(r.source(), Source::Decider);
        assert_eq!(Decision::deny(r).source, Source::Decider);
        assert_eq!(r.x_proxy_error(), Some("blocked-by-policy"));
        assert_eq!(r.http_status(), 403);
        assert_eq!("approval_timeout".parse::<Reason>(), Ok(r));
        assert!(Reason::ALL.contains(&r));
    }

    #[test]
    fn clone_from_takes_the_source_and_keeps_what_is_shared_already() {
        let a = Rule::new("**.a.example", Some("user".into()));
        let mut into = a.clone();
        into.clone_from(&a);
        assert!(Arc::ptr_eq(&into.pattern, &a.pattern));
        assert_eq!(Arc::strong_count(&a.pattern), 2);
        let b = Rule::new("*.b.example", None);
        into.clone_from(&b);
        assert_eq!(into, b);
        assert_eq!(Arc::strong_count(&a.pattern), 1);
        let c = Rule::new("c.example", Some("managed".into()));
        into.clone_from(&c);
        assert_eq!(into, c);
    }
}
