//! Where a grant's real value may go: a [`Binding`] of host patterns, one port and optional path
//! prefixes, matched against the [`Destination`] of a request netproxy can read.

use std::fmt;

use proxy_core::Host;

/// The default port of a binding: grants are for HTTPS.
pub const DEFAULT_PORT: u16 = 443;

/// How a request reaches its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Inside TLS that netproxy terminates (an intercepted tunnel).
    Https,
    /// Plain HTTP, readable by anyone on the path.
    Http,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        })
    }
}

/// The destination of one request: its scheme, canonical host, port and path.
///
/// `path` is the path of the request target as the client wrote it (percent escapes kept), without
/// the query; anything from a `?` or `#` on is ignored. `OPTIONS *` has the path `*`.
///
/// ```
/// use proxy_broker::{Destination, Scheme};
/// use proxy_core::Host;
/// let host = Host::parse("API.GitHub.com")?;
/// let dest = Destination::new(Scheme::Https, &host, 443, "/repos/o/r");
/// assert_eq!(dest.to_string(), "https://api.github.com/repos/o/r");
/// # Ok::<(), proxy_core::HostError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination<'a> {
    /// HTTPS inside an intercepted tunnel, or plain HTTP.
    pub scheme: Scheme,
    /// The canonical host.
    pub host: &'a Host,
    /// The port.
    pub port: u16,
    /// The path, as sent.
    pub path: &'a str,
}

impl<'a> Destination<'a> {
    /// A destination.
    pub fn new(scheme: Scheme, host: &'a Host, port: u16, path: &'a str) -> Self {
        Self {
            scheme,
            host,
            port,
            path,
        }
    }

    /// The path without a query or fragment.
    fn bare_path(&self) -> &'a str {
        self.path
            .split_once(['?', '#'])
            .map_or(self.path, |(p, _)| p)
    }
}

impl fmt::Display for Destination<'_> {
    /// `scheme://host[:port]path`, the port omitted when it is the scheme's default. A URL of the
    /// destination, never carrying a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host.to_uri_host())?;
        let default = match self.scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        };
        if self.port != default {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(self.bare_path())
    }
}

/// Why a grant's value is not sent to a destination (the `why` of a `credential_not_bound`
/// refusal, and of `netproxy check --credentials`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unbound {
    /// No host pattern of the grant matches the destination's host.
    Host,
    /// The host is bound, on another port.
    Port {
        /// The grant's port.
        bound: u16,
    },
    /// The host and port are bound, the path is not under any of the grant's prefixes (or it
    /// has a dot segment or an encoded separator, which never match).
    Path,
    /// Bound, but the request is plain HTTP and plaintext injection is not allowed
    /// (`dangerously_allow_plaintext_credential_injection`).
    Plaintext,
    /// The dummy is in a header, or a form, the grant is not sent in (for example a Bearer
    /// dummy of a grant sent only as a named header, or Basic with another user).
    Form,
}

impl fmt::Display for Unbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unbound::Host => f.write_str("the grant is not bound to this host"),
            Unbound::Port { bound } => write!(f, "the grant is bound to port {bound} only"),
            Unbound::Path => f.write_str("the grant is not bound to this path"),
            Unbound::Plaintext => f.write_str(
                "plain HTTP: a credential is injected only inside TLS netproxy terminates \
                 (unless dangerously_allow_plaintext_credential_injection)",
            ),
            Unbound::Form => f.write_str("the dummy is not sent in a form this grant accepts"),
        }
    }
}

impl Unbound {
    /// A short word for the audit and the JSON of `check --credentials`: `host`, `port`,
    /// `path`, `plaintext` or `form`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Unbound::Host => "host",
            Unbound::Port { .. } => "port",
            Unbound::Path => "path",
            Unbound::Plaintext => "plaintext",
            Unbound::Form => "form",
        }
    }
}

/// Why a host pattern, path prefix or port of a binding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// A host pattern that cannot be canonicalised.
    #[error("invalid host {host:?}: {why}")]
    Host {
        /// The pattern as written.
        host: String,
        /// Why.
        why: proxy_core::HostError,
    },
    /// A wildcard other than one leading `*.` on a name of at least two labels.
    #[error(
        "invalid host {0:?}: the only wildcard is a leading `*.` before a name of at least two labels (`*.example.com`)"
    )]
    Wildcard(String),
    /// A host with a port (`api.example.com:8443`): the port is a binding's own.
    #[error("invalid host {0:?}: a host takes no port (the port is given on its own)")]
    HostWithPort(String),
    /// No host at all.
    #[error("a grant needs at least one host")]
    NoHosts,
    /// Port 0.
    #[error("port 0 is not a port")]
    Port,
    /// A path prefix that does not start with `/`, holds a query, a fragment, a dot segment, a
    /// backslash or an encoded separator.
    #[error(
        "invalid path prefix {0:?}: it must start with `/` and hold no query, fragment, dot segment, backslash or encoded separator"
    )]
    PathPrefix(String),
}

/// One host pattern: an exact host, or `*.suffix` for strict subdomains of a name.
///
/// ```
/// use proxy_broker::HostPattern;
/// use proxy_core::Host;
/// let ghe: HostPattern = "*.GHE.com.".parse()?;
/// assert_eq!(ghe.to_string(), "*.ghe.com");
/// assert!(ghe.matches(&Host::parse("api.octo.ghe.com")?));
/// assert!(!ghe.matches(&Host::parse("ghe.com")?));
/// assert!(!ghe.matches(&Host::parse("evilghe.com")?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this host.
    Exact(Host),
    /// Any name ending in `.` followed by this name (the name itself excluded).
    Subdomains(Host),
}

impl HostPattern {
    /// Parses `host` or `*.name`, canonicalised like every host netproxy matches.
    pub fn parse(text: &str) -> Result<Self, BindingError> {
        let host_err = |why| BindingError::Host {
            host: text.to_owned(),
            why,
        };
        match text.strip_prefix("*.") {
            Some(rest) => {
                if rest.contains('*') {
                    return Err(BindingError::Wildcard(text.to_owned()));
                }
                let host = Host::parse(rest).map_err(host_err)?;
                match host.as_name() {
                    Some(name) if name.contains('.') => Ok(HostPattern::Subdomains(host)),
                    _ => Err(BindingError::Wildcard(text.to_owned())),
                }
            }
            None if text.contains('*') => Err(BindingError::Wildcard(text.to_owned())),
            None => Host::parse(text).map(HostPattern::Exact).map_err(|why| {
                match text.rsplit_once(':') {
                    Some((name, port))
                        if !name.contains(':')
                            && !port.is_empty()
                            && port.bytes().all(|b| b.is_ascii_digit())
                            && Host::parse(name).is_ok() =>
                    {
                        BindingError::HostWithPort(text.to_owned())
                    }
                    _ => host_err(why),
                }
            }),
        }
    }

    /// Whether `host` is this pattern's host, or a strict subdomain of its name.
    pub fn matches(&self, host: &Host) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => match (host.as_name(), suffix.as_name()) {
                (Some(name), Some(suffix)) => name
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                _ => false,
            },
        }
    }
}

impl std::str::FromStr for HostPattern {
    type Err = BindingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => write!(f, "{h}"),
            HostPattern::Subdomains(h) => write!(f, "*.{h}"),
        }
    }
}

/// Where a grant's value may be sent: any of its hosts, on its port, under one of its path
/// prefixes (any path when it has none).
///
/// A path prefix matches on a segment boundary (`/v1` matches `/v1`, `/v1/` and `/v1/models`,
/// not `/v10`), compared as sent (case and escapes included), and a path holding a `.` or `..`
/// segment, a backslash or an encoded `/` or `\` (in any spelling, once or twice encoded) never
/// matches: an origin that normalises `/v1/%2e%2e/admin` to `/admin` would otherwise receive the
/// credential outside its prefix.
///
/// ```
/// use proxy_broker::{Binding, Destination, Scheme, Unbound};
/// use proxy_core::Host;
/// let b = Binding::new(["api.example.com"], 443, ["/v1"])?;
/// let host = Host::parse("api.example.com")?;
/// let at = |path| b.check(&Destination::new(Scheme::Https, &host, 443, path), false);
/// assert_eq!(at("/v1/models"), Ok(()));
/// assert_eq!(at("/v10/models"), Err(Unbound::Path));
/// assert_eq!(at("/v1/%2e%2e/private"), Err(Unbound::Path));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    hosts: Vec<HostPattern>,
    port: u16,
    path_prefixes: Vec<String>,
}

impl Binding {
    /// A binding, its hosts canonicalised and its prefixes checked. A trailing `/` of a prefix is
    /// dropped (`/v1/` is `/v1`); the prefix `/` is every path.
    pub fn new<H, P>(
        hosts: impl IntoIterator<Item = H>,
        port: u16,
        path_prefixes: impl IntoIterator<Item = P>,
    ) -> Result<Self, BindingError>
    where
        H: AsRef<str>,
        P: AsRef<str>,
    {
        let mut patterns: Vec<HostPattern> = Vec::new();
        for h in hosts {
            let p = HostPattern::parse(h.as_ref())?;
            if !patterns.contains(&p) {
                patterns.push(p);
            }
        }
        if patterns.is_empty() {
            return Err(BindingError::NoHosts);
        }
        if port == 0 {
            return Err(BindingError::Port);
        }
        let mut prefixes: Vec<String> = Vec::new();
        for p in path_prefixes {
            let raw = p.as_ref();
            if !raw.starts_with('/') || raw.contains(['?', '#']) || !path_is_safe(raw) {
                return Err(BindingError::PathPrefix(raw.to_owned()));
            }
            let trimmed = raw.trim_end_matches('/');
            let prefix = if trimmed.is_empty() { "/" } else { trimmed };
            if !prefixes.iter().any(|q| q == prefix) {
                prefixes.push(prefix.to_owned());
            }
        }
        Ok(Self {
            hosts: patterns,
            port,
            path_prefixes: prefixes,
        })
    }

    /// A binding to nothing.
    pub(crate) fn none() -> Self {
        Self {
            hosts: Vec::new(),
            port: DEFAULT_PORT,
            path_prefixes: Vec::new(),
        }
    }

    /// The host patterns.
    pub fn hosts(&self) -> &[HostPattern] {
        &self.hosts
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path prefixes (empty: any path).
    pub fn path_prefixes(&self) -> &[String] {
        &self.path_prefixes
    }

    /// Whether one of the host patterns matches `host`.
    pub fn binds_host(&self, host: &Host) -> bool {
        self.hosts.iter().any(|p| p.matches(host))
    }

    /// Whether the value may be sent to `dest`: host, then port, then path, then the scheme
    /// (plain HTTP only when `allow_plaintext`). The first that fails says why not.
    pub fn check(&self, dest: &Destination<'_>, allow_plaintext: bool) -> Result<(), Unbound> {
        if !self.binds_host(dest.host) {
            return Err(Unbound::Host);
        }
        if dest.port != self.port {
            return Err(Unbound::Port { bound: self.port });
        }
        if !self.binds_path(dest.bare_path()) {
            return Err(Unbound::Path);
        }
        if dest.scheme == Scheme::Http && !allow_plaintext {
            return Err(Unbound::Plaintext);
        }
        Ok(())
    }

    fn binds_path(&self, path: &str) -> bool {
        if self.path_prefixes.is_empty() {
            return true;
        }
        path_is_safe(path)
            && self.path_prefixes.iter().any(|prefix| {
                prefix == "/"
                    || path
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }
}

impl fmt::Display for Binding {
    /// `host, *.suffix :port [/prefix, /other]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, h) in self.hosts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{h}")?;
        }
        write!(f, " :{}", self.port)?;
        if !self.path_prefixes.is_empty() {
            write!(f, " [{}]", self.path_prefixes.join(", "))?;
        }
        Ok(())
    }
}

/// Whether a path can be compared as written: it starts with `/`; it has no NUL, control
/// character or backslash; no segment is `.` or `..` (a segment's `;parameters` cut first, since
/// some servers drop them); and the same holds once and twice percent-decoded, where no `/` may
/// appear that was not there before (an encoded separator). A malformed escape, or an escape left
/// after two decodings, fails.
pub(crate) fn path_is_safe(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    let slashes = path.bytes().filter(|b| *b == b'/').count();
    let mut text = path.as_bytes().to_vec();
    for _ in 0..3 {
        if text
            .iter()
            .any(|b| *b == b'\\' || b.is_ascii_control() || *b == 0x7f)
        {
            return false;
        }
        if text.iter().filter(|b| **b == b'/').count() != slashes {
            return false;
        }
        let dot_segment = text.split(|b| *b == b'/').any(|segment| {
            let name = segment.split(|b| *b == b';').next().unwrap_or_default();
            name == b"." || name == b".."
        });
        if dot_segment {
            return false;
        }
        if !text.contains(&b'%') {
            return true;
        }
        match percent_decode(&text) {
            Some(decoded) => text = decoded,
            None => return false,
        }
    }
    false
}

/// `%XX` escapes decoded; `None` when one is malformed.
fn percent_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proxy_core::Host;

    use super::{Binding, BindingError, Destination, HostPattern, Scheme, Unbound, path_is_safe};

    fn host(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    #[test]
    fn host_patterns_are_canonical_and_suffixes_strict() {
        let p = HostPattern::parse("API.GitHub.COM.").unwrap();
        assert_eq!(p, HostPattern::Exact(host("api.github.com")));
        assert!(p.matches(&host("api.github.com")));
        assert!(!p.matches(&host("github.com")));
        let s = HostPattern::parse("*.ghe.com").unwrap();
        for yes in ["octo.ghe.com", "api.octo.ghe.com"] {
            assert!(s.matches(&host(yes)), "{yes}");
        }
        for no in ["ghe.com", "xghe.com", "ghe.com.evil.net", "127.0.0.1"] {
            assert!(!s.matches(&host(no)), "{no}");
        }
        let ip = HostPattern::parse("[::ffff:127.0.0.1]").unwrap();
        assert!(ip.matches(&host("127.0.0.1")));
        for bad in [
            "*",
            "*.com",
            "*.127.0.0.1",
            "a.*.com",
            "api*.x.com",
            "*.*.x.com",
        ] {
            assert!(
                matches!(HostPattern::parse(bad), Err(BindingError::Wildcard(_))),
                "{bad}"
            );
        }
        assert_eq!(
            HostPattern::parse("api.x.com:443"),
            Err(BindingError::HostWithPort("api.x.com:443".into()))
        );
        for bad in ["", "a..b", "api.x.com:", "exa mple.com", "*.a..b"] {
            assert!(
                matches!(HostPattern::parse(bad), Err(BindingError::Host { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_binding_needs_hosts_a_port_and_clean_prefixes() {
        assert_eq!(
            Binding::new(Vec::<&str>::new(), 443, Vec::<&str>::new()),
            Err(BindingError::NoHosts)
        );
        assert_eq!(
            Binding::new(["a.example"], 0, Vec::<&str>::new()),
            Err(BindingError::Port)
        );
        for bad in [
            "v1",
            "/v1?x=1",
            "/v1#f",
            "/v1/../v2",
            "/v1/%2e%2e",
            "/a%2fb",
            "/a\\b",
            "",
        ] {
            assert_eq!(
                Binding::new(["a.example"], 443, [bad]),
                Err(BindingError::PathPrefix(bad.to_owned())),
                "{bad}"
            );
        }
        let b = Binding::new(["A.example", "a.example"], 8443, ["/v1/", "/v1", "/"]).unwrap();
        assert_eq!(b.hosts().len(), 1);
        assert_eq!(b.path_prefixes(), ["/v1", "/"]);
        assert_eq!(b.to_string(), "a.example :8443 [/v1, /]");
    }

    #[test]
    fn paths_match_on_a_segment_boundary_and_never_through_traversal() {
        let b = Binding::new(["api.example.com"], 443, ["/v1", "/b/c/"]).unwrap();
        let h = host("api.example.com");
        let at = |path| b.check(&Destination::new(Scheme::Https, &h, 443, path), false);
        for good in [
            "/v1",
            "/v1/",
            "/v1/models",
            "/v1/responses?stream=true",
            "/v1/a..b",
            "/v1/.well-known",
            "/v1/a%20b",
            "/b/c",
            "/b/c/d",
        ] {
            assert_eq!(at(good), Ok(()), "{good}");
        }
        for bad in [
            "*",
            "",
            "/",
            "/v10/models",
            "/v1x",
            "/V1/models",
            "/v1;x/models",
            "/v1/%2e%2e/private",
            "/v1/%2E%2E/private",
            "/v1/../private",
            "/v1/./models",
            "/v1/%252e%252e/private",
            "/v1/.%2e/private",
            "/v1/x%2f..%2fprivate",
            "/v1/x%2F..",
            "/v1/x\\..",
            "/v1/x%5c..",
            "/v1/..;/private",
            "/v1/%2e%2e;x/private",
            "/v1/..%3b/private",
            "/v1/%zz",
            "/v1/%2",
            "/v1/%25252e",
            "/v1/a%00b",
            "/b/cd",
        ] {
            assert_eq!(at(bad), Err(Unbound::Path), "{bad}");
        }
        // No prefix: any path, `*` included.
        let any = Binding::new(["api.example.com"], 443, Vec::<&str>::new()).unwrap();
        assert_eq!(
            any.check(&Destination::new(Scheme::Https, &h, 443, "*"), false),
            Ok(())
        );
    }

    #[test]
    fn host_then_port_then_path_then_plaintext() {
        let b = Binding::new(["api.example.com"], 443, ["/v1"]).unwrap();
        let h = host("api.example.com");
        let other = host("evil.example.com");
        let dest = |scheme, host, port, path| Destination::new(scheme, host, port, path);
        assert_eq!(
            b.check(&dest(Scheme::Http, &other, 80, "/x"), false),
            Err(Unbound::Host)
        );
        assert_eq!(
            b.check(&dest(Scheme::Https, &h, 8443, "/x"), false),
            Err(Unbound::Port { bound: 443 })
        );
        assert_eq!(
            b.check(&dest(Scheme::Http, &h, 443, "/x"), false),
            Err(Unbound::Path)
        );
        assert_eq!(
            b.check(&dest(Scheme::Http, &h, 443, "/v1"), false),
            Err(Unbound::Plaintext)
        );
        assert_eq!(b.check(&dest(Scheme::Http, &h, 443, "/v1"), true), Ok(()));
    }

    #[test]
    fn a_destination_prints_as_a_url() {
        let h = host("::1");
        assert_eq!(
            Destination::new(Scheme::Http, &h, 8080, "/a?q=secret").to_string(),
            "http://[::1]:8080/a"
        );
        let h = host("example.com");
        assert_eq!(
            Destination::new(Scheme::Https, &h, 443, "/").to_string(),
            "https://example.com/"
        );
    }

    #[test]
    fn safe_paths() {
        assert!(path_is_safe("/"));
        assert!(path_is_safe("/a/b%20c/d"));
        assert!(!path_is_safe("a/b"));
        assert!(!path_is_safe("/a/%2e"));
        assert!(!path_is_safe("/a/%%32%65%2e"));
    }
}
