//! Audit events (docs/audit.md) and the sink they are written to.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::decision::{Decision, Rule, Source, Verdict};
use crate::gate::Failure;
use crate::remedy::Remedy;
use crate::target::{Mode, Protocol, RequestMeta};

/// The tracing target of audit events.
pub const AUDIT_TARGET: &str = "netproxy::audit";
/// The `event.name` of a policy decision.
pub const EVENT_NAME: &str = "netproxy.policy_decision";

/// What a decision was about: a destination host (`domain`), or something else such as the mode
/// guard, the proxy's state or a unix socket (`non_domain`).
///
/// ```
/// use proxy_core::Scope;
/// assert_eq!(Scope::NonDomain.as_str(), "non_domain");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Host policy.
    Domain,
    /// Mode guard, proxy state, unix socket, interception guard.
    NonDomain,
}

impl Scope {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Domain => "domain",
            Scope::NonDomain => "non_domain",
        }
    }
}

/// One policy decision, as recorded. It never holds a full URL, a query string or a credential:
/// only the canonical host, the port, the method and the client's address.
///
/// ```
/// use proxy_core::{AuditEvent, Decision, Mode, Protocol, Reason, RequestMeta, Target};
/// let meta = RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority("evil.example:443", 443).unwrap())
///     .with_method("CONNECT");
/// let ev = AuditEvent::new(&meta, &Decision::deny(Reason::Denied), Mode::Full);
/// let fields = ev.fields();
/// assert!(fields.contains(&("network.policy.reason", "denied".to_string())));
/// assert!(fields.contains(&("server.address", "evil.example".to_string())));
/// assert!(fields.contains(&("client.address", "unknown".to_string())));
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// When the decision was made.
    pub timestamp: SystemTime,
    /// Domain or non-domain.
    pub scope: Scope,
    /// Allow, deny or ask.
    pub decision: Verdict,
    /// Who decided.
    pub source: Source,
    /// The reason's wire name (`allow` for a baseline allow).
    pub reason: &'static str,
    /// True when a decider overrode an allowlist miss.
    pub policy_override: bool,
    /// The transport.
    pub protocol: Protocol,
    /// The canonical host, or `unix-socket`.
    pub server_address: String,
    /// The port (0 for a unix socket).
    pub server_port: u16,
    /// The HTTP method, if any.
    pub method: Option<String>,
    /// The client's `ip:port`, if known.
    pub client: Option<SocketAddr>,
    /// The mode in force.
    pub mode: Mode,
    /// The rule that decided, if any.
    pub rule: Option<Rule>,
    /// True when a connection admitted earlier was closed because a narrower policy no longer
    /// allows it; the decision is then the new policy's refusal.
    pub revoked: bool,
    /// The brokered credential the request carried (`credential.grant`), and whether its real
    /// value was injected (`credential.injected`: the request was allowed and the grant is bound
    /// to its destination). Never a value.
    pub credential: Option<CredentialField>,
    /// True for every event of a `netproxy run --learn` session (`network.policy.learn`):
    /// names outside the allowlist were allowed there to be recorded (docs/run.md).
    pub learn: bool,
    /// For a failure ([`AuditEvent::failure`]): the target the policy allowed could not be
    /// reached (its name did not resolve, the connection or the upstream's TLS failed, no
    /// answer came in time). A failure is not a refusal: the decision is the policy's
    /// (`allow`), `reason` and the field `error.type` are the failure's wire name.
    pub failure: Option<Failure>,
    /// For a refusal: the smallest change that would allow it, when the gate found one (for
    /// `run`'s notices and summary; the audit sinks do not write it).
    pub remedy: Option<Remedy>,
}

/// The audit fields of a request that carried a brokered credential's dummy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialField {
    /// `credential.grant`: the grant's name.
    pub grant: String,
    /// `credential.injected`.
    pub injected: bool,
}

impl Clone for AuditEvent {
    fn clone(&self) -> Self {
        Self {
            timestamp: self.timestamp,
            scope: self.scope,
            decision: self.decision,
            source: self.source,
            reason: self.reason,
            policy_override: self.policy_override,
            protocol: self.protocol,
            server_address: self.server_address.clone(),
            server_port: self.server_port,
            method: self.method.clone(),
            client: self.client,
            mode: self.mode,
            rule: self.rule.clone(),
            revoked: self.revoked,
            credential: self.credential.clone(),
            learn: self.learn,
            failure: self.failure.clone(),
            remedy: self.remedy.clone(),
        }
    }

    /// Field by field, so that the strings keep their allocations (sinks recycle events).
    fn clone_from(&mut self, source: &Self) {
        self.timestamp = source.timestamp;
        self.scope = source.scope;
        self.decision = source.decision;
        self.source = source.source;
        self.reason = source.reason;
        self.policy_override = source.policy_override;
        self.protocol = source.protocol;
        self.server_address.clone_from(&source.server_address);
        self.server_port = source.server_port;
        self.method.clone_from(&source.method);
        self.client = source.client;
        self.mode = source.mode;
        self.rule.clone_from(&source.rule);
        self.revoked = source.revoked;
        self.credential.clone_from(&source.credential);
        self.learn = source.learn;
        self.failure.clone_from(&source.failure);
        self.remedy.clone_from(&source.remedy);
    }
}

impl AuditEvent {
    /// The event for `decision` about `meta`, stamped now.
    pub fn new(meta: &RequestMeta, decision: &Decision, mode: Mode) -> Self {
        let scope = match decision.source {
            Source::ModeGuard | Source::ProxyState => Scope::NonDomain,
            _ if matches!(meta.target, crate::Target::Unix(_)) => Scope::NonDomain,
            _ => Scope::Domain,
        };
        Self {
            timestamp: SystemTime::now(),
            scope,
            decision: decision.verdict,
            source: decision.source,
            reason: decision.reason_str(),
            policy_override: decision.policy_override,
            protocol: meta.protocol,
            server_address: meta.target.server_address(),
            server_port: meta.target.port(),
            method: meta.method.clone(),
            client: meta.client,
            mode,
            rule: decision.rule.clone(),
            revoked: false,
            credential: meta.credential.as_ref().map(|c| CredentialField {
                grant: c.grant.clone(),
                injected: c.refused.is_none() && decision.is_allowed(),
            }),
            learn: false,
            failure: None,
            remedy: None,
        }
    }

    /// The event of a failure: `meta`, which the policy's `decision` allowed, could not be
    /// reached (docs/audit.md, "Failures"). The decision, its source and rule are the policy's;
    /// the reason is the failure's wire name (`dns_failed`, `connect_failed`, ...), also given
    /// as `error.type`. A failure is never counted as a refusal.
    ///
    /// ```
    /// use proxy_core::{AuditEvent, Decision, Failure, Mode, Protocol, RequestMeta, Target, UpstreamFailure, Verdict};
    /// let meta = RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority("gone.test:443", 443).unwrap());
    /// let f = Failure::new(UpstreamFailure::DnsFailed, "the name gone.test does not exist (NXDOMAIN)");
    /// let ev = AuditEvent::failure(&meta, &Decision::allow(), &f, Mode::Full);
    /// assert_eq!((ev.decision, ev.reason), (Verdict::Allow, "dns_failed"));
    /// assert!(ev.fields().contains(&("error.type", "dns_failed".to_owned())));
    /// ```
    pub fn failure(meta: &RequestMeta, decision: &Decision, failure: &Failure, mode: Mode) -> Self {
        let mut ev = Self::new(meta, decision, mode);
        ev.reason = failure.kind.as_str();
        ev.failure = Some(failure.clone());
        ev
    }

    /// The event for a DNS query the child of `run --isolate` sent to a resolver address
    /// inside its namespace, which netproxy answers `REFUSED` (docs/audit.md): protocol `dns`,
    /// decision deny, reason `dns_not_served`, source `proxy_state`, stamped now.
    /// `server.address` is the queried name in the presentation form of [`dns_name_text`]
    /// (a DNS name may hold any bytes, so the name is given as its labels, never trusted as
    /// text); `port` is the port the query arrived on and `client` its sender.
    ///
    /// ```
    /// use proxy_core::{AuditEvent, Mode, Protocol};
    /// let client = "127.0.0.1:40000".parse().unwrap();
    /// let labels: [&[u8]; 2] = [b"Example", b"com"];
    /// let ev = AuditEvent::dns_not_served(labels, 53, client, Mode::Full);
    /// assert_eq!((ev.protocol, ev.server_address.as_str(), ev.server_port), (Protocol::Dns, "example.com", 53));
    /// assert_eq!((ev.reason, ev.source.as_str()), ("dns_not_served", "proxy_state"));
    /// ```
    pub fn dns_not_served<'a>(
        labels: impl IntoIterator<Item = &'a [u8]>,
        port: u16,
        client: SocketAddr,
        mode: Mode,
    ) -> Self {
        let decision = Decision::deny(crate::Reason::DnsNotServed);
        Self {
            timestamp: SystemTime::now(),
            scope: Scope::NonDomain,
            decision: decision.verdict,
            source: decision.source,
            reason: decision.reason_str(),
            policy_override: false,
            protocol: Protocol::Dns,
            server_address: dns_name_text(labels),
            server_port: port,
            method: None,
            client: Some(client),
            mode,
            rule: None,
            revoked: false,
            credential: None,
            learn: false,
            failure: None,
            remedy: None,
        }
    }

    /// The event for a connection admitted as `meta` and closed because the new policy's
    /// `decision` refuses it.
    pub fn revocation(meta: &RequestMeta, decision: &Decision, mode: Mode) -> Self {
        let mut ev = Self::new(meta, decision, mode);
        ev.revoked = true;
        ev
    }

    /// The fields of docs/audit.md with their values, in a stable order (the timestamp is
    /// left to the sink, which formats it); `network.policy.revoked` only on a revocation;
    /// `credential.grant` and `credential.injected` only for a request carrying a dummy;
    /// `network.policy.learn` only in learn mode; `error.type` only for a failure.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("network.policy.scope", self.scope.as_str().to_owned()),
            ("network.policy.decision", self.decision.as_str().to_owned()),
            ("network.policy.source", self.source.as_str().to_owned()),
            ("network.policy.reason", self.reason.to_owned()),
            ("network.policy.override", self.policy_override.to_string()),
            (
                "network.transport.protocol",
                self.protocol.as_str().to_owned(),
            ),
            ("server.address", self.server_address.clone()),
            ("server.port", self.server_port.to_string()),
            (
                "http.request.method",
                self.method.clone().unwrap_or_else(|| "none".to_owned()),
            ),
            (
                "client.address",
                self.client
                    .map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
            ),
        ];
        if self.revoked {
            fields.push(("network.policy.revoked", "true".to_owned()));
        }
        if let Some(c) = &self.credential {
            fields.push(("credential.grant", c.grant.clone()));
            fields.push(("credential.injected", c.injected.to_string()));
        }
        if self.learn {
            fields.push(("network.policy.learn", "true".to_owned()));
        }
        if let Some(f) = &self.failure {
            fields.push(("error.type", f.kind.as_str().to_owned()));
        }
        fields
    }
}

/// Where audit events go. `record` is called once per decision on the request path, so it
/// must return quickly and never block: a sink that exports queues the event and drops (and
/// counts) when its queue is full.
///
/// ```
/// use std::sync::Mutex;
/// use proxy_core::{AuditEvent, AuditSink};
/// #[derive(Debug, Default)]
/// struct Memory(Mutex<Vec<AuditEvent>>);
/// impl AuditSink for Memory {
///     fn record(&self, event: &AuditEvent) {
///         self.0.lock().unwrap().push(event.clone());
///     }
/// }
/// ```
pub trait AuditSink: Send + Sync {
    /// Records one decision.
    fn record(&self, event: &AuditEvent);

    /// Records one decision shared with other sinks: a sink that keeps the event (a queue)
    /// can keep this `Arc` instead of a copy. By default, [`AuditSink::record`].
    fn record_shared(&self, event: &std::sync::Arc<AuditEvent>) {
        self.record(event);
    }

    /// Whether this sink keeps events (and so prefers [`AuditSink::record_shared`]); a sink
    /// that only looks at them says no, and is given a borrow.
    fn keeps_events(&self) -> bool {
        false
    }
}

/// The most a DNS name holds on the wire (RFC 1035: 255 bytes, length octets included).
const DNS_NAME_MAX: usize = 255;

/// A DNS name, given as its labels, in a presentation form that is safe in every log, report
/// and summary: ASCII letters lowercased (DNS names are case-insensitive), digits, `-`, `_`
/// and `*` as they are, every other byte of a label (a `.` or a space inside a label, a
/// backslash, a control character, any non-ASCII byte) as `\DDD` (its decimal value, as in
/// RFC 1035's master files); labels joined by `.`, no trailing dot; the root name is `.`.
/// Labels past 255 bytes of name (more than the wire allows) are left out and the text ends
/// with `...`, so the result is at most about 1 KiB.
///
/// ```
/// use proxy_core::dns_name_text;
/// let labels: [&[u8]; 3] = [b"_DMARC", b"a.b c", b"\x00\xff"];
/// assert_eq!(dns_name_text(labels), "_dmarc.a\\046b\\032c.\\000\\255");
/// assert_eq!(dns_name_text(std::iter::empty::<&[u8]>()), ".");
/// ```
pub fn dns_name_text<'a>(labels: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut out = String::new();
    let mut wire = 1; // the root label's length octet
    for label in labels {
        wire += 1 + label.len();
        if wire > DNS_NAME_MAX {
            out.push_str("...");
            break;
        }
        if !out.is_empty() {
            out.push('.');
        }
        for &b in label {
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'*' => out.push(char::from(b)),
                b'A'..=b'Z' => out.push(char::from(b.to_ascii_lowercase())),
                _ => {
                    let _ = write!(out, "\\{b:03}");
                }
            }
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// One refused request as kept in the blocked-request buffer and shown by `GET /blocked`.
///
/// ```
/// use proxy_core::{AuditEvent, BlockedRecord, Decision, Mode, Protocol, Reason, RequestMeta, Target};
/// let meta = RequestMeta::new(Protocol::Socks5Tcp, Target::parse_authority("10.0.0.5:22", 22).unwrap());
/// let ev = AuditEvent::new(&meta, &Decision::deny(Reason::NotAllowedLocal), Mode::Full);
/// let rec = BlockedRecord::from_event(&ev);
/// assert_eq!((rec.host.as_str(), rec.port, rec.reason), ("10.0.0.5", 22, "not_allowed_local"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedRecord {
    /// The canonical host, or `unix-socket`.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The reason's wire name.
    pub reason: &'static str,
    /// The transport.
    pub protocol: Protocol,
    /// The method, if any.
    pub method: Option<String>,
    /// The client's address, if known.
    pub client: Option<SocketAddr>,
    /// The mode in force.
    pub mode: Mode,
    /// Deny or ask.
    pub decision: Verdict,
    /// Who decided.
    pub source: Source,
    /// When, in seconds since the Unix epoch.
    pub timestamp: u64,
}

impl BlockedRecord {
    /// The record of a refusal, from its audit event.
    pub fn from_event(ev: &AuditEvent) -> Self {
        Self {
            host: ev.server_address.clone(),
            port: ev.server_port,
            reason: ev.reason,
            protocol: ev.protocol,
            method: ev.method.clone(),
            client: ev.client,
            mode: ev.mode,
            decision: ev.decision,
            source: ev.source,
            timestamp: ev
                .timestamp
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_name_is_shown_in_safe_ascii_and_bounded() {
        let labels: [&[u8]; 4] = [b"WWW", b"ex\nample", b"\xe4\xbd\xa0", b"com"];
        let text = dns_name_text(labels);
        assert_eq!(text, "www.ex\\010ample.\\228\\189\\160.com");
        assert!(text.bytes().all(|b| b.is_ascii_graphic()));
        // A name longer than the wire allows is cut after whole labels and says so.
        let long = [b"a".repeat(63)];
        let text = dns_name_text(std::iter::repeat_n(long[0].as_slice(), 10));
        assert!(text.ends_with("..."), "{text}");
        assert_eq!(text.len(), 3 * 63 + 2 + 3);
        // The worst case (every byte escaped) stays about 1 KiB.
        let evil = [0u8; 63];
        let text = dns_name_text(std::iter::repeat_n(evil.as_slice(), 10));
        assert!(text.len() <= 4 * 255 + 3, "{}", text.len());
        let ev = AuditEvent::dns_not_served(
            [b"A".as_slice(), b"test".as_slice()],
            5353,
            "[::1]:9".parse().unwrap(),
            Mode::Limited,
        );
        assert_eq!(ev.scope, Scope::NonDomain);
        assert_eq!(ev.decision, Verdict::Deny);
        let fields = ev.fields();
        for (k, v) in [
            ("network.transport.protocol", "dns"),
            ("network.policy.reason", "dns_not_served"),
            ("network.policy.source", "proxy_state"),
            ("network.policy.decision", "deny"),
            ("server.address", "a.test"),
            ("server.port", "5353"),
            ("http.request.method", "none"),
            ("client.address", "[::1]:9"),
        ] {
            assert!(fields.contains(&(k, v.to_owned())), "{k} in {fields:?}");
        }
    }
}
