//! Where a request goes and how it arrived: [`Target`], [`Protocol`], [`Mode`], [`RequestMeta`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::host::{Host, HostError};

/// The transport a request arrived on. Its wire name appears in responses and audit events.
///
/// ```
/// use proxy_core::Protocol;
/// assert_eq!(Protocol::HttpsConnect.as_str(), "https_connect");
/// assert_eq!("socks5_udp".parse::<Protocol>(), Ok(Protocol::Socks5Udp));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A plain absolute-form HTTP request (or a websocket upgrade).
    Http,
    /// An HTTP `CONNECT` tunnel.
    HttpsConnect,
    /// A SOCKS5 `CONNECT`.
    Socks5Tcp,
    /// A SOCKS5 `UDP ASSOCIATE` destination.
    Socks5Udp,
    /// A request inside an intercepted tunnel (judged by
    /// [`Gate::admit_inner`](crate::Gate::admit_inner) against its tunnel).
    Https,
    /// A DNS query the child of `run --isolate` sent itself, to a resolver address inside its
    /// namespace where netproxy answers every query `REFUSED` (audit events only, reason
    /// [`Reason::DnsNotServed`](crate::Reason::DnsNotServed); never a request to judge).
    Dns,
}

impl Protocol {
    /// Every protocol, in a stable order.
    pub const ALL: [Protocol; 6] = [
        Protocol::Http,
        Protocol::HttpsConnect,
        Protocol::Socks5Tcp,
        Protocol::Socks5Udp,
        Protocol::Https,
        Protocol::Dns,
    ];

    /// The protocols a request can have on its own, as it arrives at a listener: every one but
    /// [`Protocol::Https`], which exists only inside a tunnel and is judged against it, and
    /// [`Protocol::Dns`], which names refused lookups in audit events and no request at all.
    /// These are the names [`str::parse`] accepts (`netproxy check --protocol`, the admin API's
    /// `POST /check`): a request inside a tunnel cannot be checked without its tunnel.
    ///
    /// ```
    /// use proxy_core::Protocol;
    /// assert!(!Protocol::STANDALONE.contains(&Protocol::Https));
    /// assert!("https".parse::<Protocol>().is_err());
    /// assert_eq!(Protocol::Https.as_str(), "https");
    /// assert!("dns".parse::<Protocol>().is_err());
    /// assert_eq!(Protocol::Dns.as_str(), "dns");
    /// ```
    pub const STANDALONE: [Protocol; 4] = [
        Protocol::Http,
        Protocol::HttpsConnect,
        Protocol::Socks5Tcp,
        Protocol::Socks5Udp,
    ];

    /// The wire name (`http`, `https_connect`, `socks5_tcp`, `socks5_udp`, `https`, `dns`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::HttpsConnect => "https_connect",
            Protocol::Socks5Tcp => "socks5_tcp",
            Protocol::Socks5Udp => "socks5_udp",
            Protocol::Https => "https",
            Protocol::Dns => "dns",
        }
    }

    /// The port a target of this protocol has when none is given.
    pub const fn default_port(self) -> u16 {
        match self {
            Protocol::Http => 80,
            Protocol::Dns => 53,
            _ => 443,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown protocol name (or `https` or `dns`, which name no request on its own: see
/// [`Protocol::STANDALONE`]).
///
/// ```
/// assert!("gopher".parse::<proxy_core::Protocol>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?} (expected http, https_connect, socks5_tcp or socks5_udp)")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::STANDALONE
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownProtocol(s.to_owned()))
    }
}

/// The proxy's mode: `full`, or `limited` (read-only HTTP: GET, HEAD and OPTIONS only).
///
/// ```
/// use proxy_core::Mode;
/// assert!(Mode::Limited.allows_method("HEAD"));
/// assert!(!Mode::Limited.allows_method("POST"));
/// assert!(!Mode::Limited.allows_method("get")); // method tokens are case-sensitive
/// assert!(Mode::Full.allows_method("DELETE"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Mode {
    /// Read-only: GET, HEAD, OPTIONS.
    Limited,
    /// Every method.
    #[default]
    Full,
}

impl Mode {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Limited => "limited",
        }
    }

    /// Whether a request with this method token may pass in this mode.
    pub fn allows_method(self, method: &str) -> bool {
        match self {
            Mode::Full => true,
            Mode::Limited => matches!(method, "GET" | "HEAD" | "OPTIONS"),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown mode name.
///
/// ```
/// let err = "readonly".parse::<proxy_core::Mode>().unwrap_err();
/// assert!(err.to_string().contains("full or limited"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?} (expected full or limited)")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Mode::Full),
            "limited" => Ok(Mode::Limited),
            _ => Err(UnknownMode(s.to_owned())),
        }
    }
}

/// A destination: a canonical host and a port, or a unix socket path.
///
/// ```
/// use proxy_core::Target;
/// let t = Target::parse_authority("[::1]:8443", 443).unwrap();
/// assert_eq!(t.to_string(), "[::1]:8443");
/// let t = Target::parse_authority("Example.com", 443).unwrap();
/// assert_eq!(t.port(), 443);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A TCP or UDP destination.
    Net {
        /// The canonical host.
        host: Host,
        /// The port (0 is allowed only for SOCKS UDP wildcards and never dialled).
        port: u16,
    },
    /// An absolute unix socket path (`x-unix-socket`).
    Unix(PathBuf),
}

/// Why an authority (`host[:port]`) could not be parsed.
///
/// ```
/// use proxy_core::{AuthorityError, Target};
/// assert!(matches!(Target::parse_authority("example.com:0", 443), Err(AuthorityError::Port(_))));
/// assert!(matches!(Target::parse_authority("a..b", 443), Err(AuthorityError::Host(_))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// The host part is invalid.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The port is not a number from 1 to 65535.
    #[error("invalid port {0:?}")]
    Port(String),
}

impl Target {
    /// A network target.
    pub fn net(host: Host, port: u16) -> Self {
        Target::Net { host, port }
    }

    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal (which has no
    /// port), using `default_port` when none is given.
    pub fn parse_authority(authority: &str, default_port: u16) -> Result<Self, AuthorityError> {
        let (host, port) = split_authority(authority)?;
        Ok(Target::Net {
            host: Host::parse(host)?,
            port: port.unwrap_or(default_port),
        })
    }

    /// The host, for a network target.
    pub fn host(&self) -> Option<&Host> {
        match self {
            Target::Net { host, .. } => Some(host),
            Target::Unix(_) => None,
        }
    }

    /// The port (0 for a unix socket).
    pub fn port(&self) -> u16 {
        match self {
            Target::Net { port, .. } => *port,
            Target::Unix(_) => 0,
        }
    }

    /// The `server.address` of audit events: the canonical host, or `unix-socket`.
    pub fn server_address(&self) -> String {
        match self {
            Target::Net { host, .. } => host.to_string(),
            Target::Unix(_) => "unix-socket".to_owned(),
        }
    }
}

/// Splits `host[:port]` into its parts without judging the host. A bare IPv6 literal (two or
/// more colons, no brackets) has no port.
pub fn split_authority(authority: &str) -> Result<(&str, Option<u16>), AuthorityError> {
    let parse_port = |p: &str| -> Result<u16, AuthorityError> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(AuthorityError::Port(p.to_owned())),
        }
    };
    if authority.starts_with('[') {
        if let Some(end) = authority.find(']') {
            let (host, rest) = authority.split_at(end + 1);
            return match rest {
                "" => Ok((host, None)),
                _ => match rest.strip_prefix(':') {
                    Some(p) => Ok((host, Some(parse_port(p)?))),
                    None => Err(AuthorityError::Host(HostError::Brackets)),
                },
            };
        }
        return Err(AuthorityError::Host(HostError::Brackets));
    }
    match authority.matches(':').count() {
        0 => Ok((authority, None)),
        1 => {
            let (h, p) = authority.split_once(':').unwrap_or((authority, ""));
            Ok((h, Some(parse_port(p)?)))
        }
        _ => Ok((authority, None)),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Net { host, port } => write!(f, "{}:{port}", host.to_uri_host()),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The headers some frameworks read to apply another method than the request's own (a `GET`
/// that a server treats as `DELETE`).
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The method a request's override headers ask for, given its headers as (lower-case name,
/// value) pairs: `None` when it has none; the value trimmed when there is one; `"?"` (which no
/// mode's method list holds) when there are several or one is not text, so limited mode refuses
/// what it cannot read.
///
/// ```
/// use proxy_core::method_override;
/// let h = |pairs: &[(&'static str, &'static [u8])]| method_override(pairs.iter().copied());
/// assert_eq!(h(&[("accept", b"*/*")]), None);
/// assert_eq!(h(&[("x-http-method-override", b" DELETE ")]).as_deref(), Some("DELETE"));
/// assert_eq!(h(&[("x-http-method", b"GET"), ("x-method-override", b"PUT")]).as_deref(), Some("?"));
/// assert_eq!(h(&[("x_http_method_override", b"DELETE")]).as_deref(), Some("DELETE"));
/// ```
pub fn method_override<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Option<String> {
    // `_` is read as `-`: stacks that turn headers into CGI-style variables (CGI, WSGI, Rack)
    // give `X_HTTP_Method_Override` the same name as the dashed header.
    let same = |o: &str, n: &str| {
        o.len() == n.len()
            && o.bytes().zip(n.bytes()).all(|(a, b)| {
                let b = if b == b'_' { b'-' } else { b };
                a.eq_ignore_ascii_case(&b)
            })
    };
    let mut found = headers.filter(|(n, _)| METHOD_OVERRIDE_HEADERS.iter().any(|o| same(o, n)));
    let (_, first) = found.next()?;
    if found.next().is_some() {
        return Some("?".to_owned());
    }
    Some(match std::str::from_utf8(first) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => "?".to_owned(),
    })
}

/// One request as a front-end parsed it, ready for the [`Gate`](crate::Gate).
///
/// ```
/// use proxy_core::{Protocol, RequestMeta, Target};
/// let meta = RequestMeta::new(Protocol::Http, Target::parse_authority("example.com", 80).unwrap())
///     .with_method("GET")
///     .with_client("127.0.0.1:50000".parse().unwrap());
/// assert_eq!(meta.method.as_deref(), Some("GET"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    /// The transport the request arrived on.
    pub protocol: Protocol,
    /// Where it wants to go.
    pub target: Target,
    /// The HTTP method, when there is one (`CONNECT` for tunnels).
    pub method: Option<String>,
    /// The client's address, when known.
    pub client: Option<SocketAddr>,
    /// True for a protocol upgrade (a websocket `GET` with `Upgrade`): after the upgrade the
    /// connection is an opaque tunnel, so limited mode refuses it.
    pub upgrade: bool,
    /// The method a method-override header asks the origin to apply instead
    /// (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`; see
    /// [`method_override`]): limited mode judges it as well as the method.
    pub method_override: Option<String>,
    /// For an `x-unix-socket` request, why it may come from a web page rather than a local
    /// client (a Host that is not local, an `Origin` or `Sec-Fetch-*` header): the gate refuses
    /// it as `unix_socket_cross_origin`. `None` when nothing points to a browser.
    pub cross_origin: Option<String>,
    /// The brokered credential whose dummy the request carries, as the front-end found it before
    /// asking the gate (docs/credentials.md, "Injection"): the gate refuses the request
    /// `credential_not_bound` when its grant is not bound to the destination, and the audit
    /// event names the grant. `None` when the request carries no dummy.
    pub credential: Option<BrokeredCredential>,
}

/// A brokered credential's dummy found in a request (see [`RequestMeta::credential`]). Names the
/// grant, never a value.
///
/// ```
/// use proxy_core::{BrokeredCredential, Protocol, Reason, RequestMeta, Target};
/// let meta = RequestMeta::new(Protocol::Http, Target::parse_authority("example.com", 80).unwrap())
///     .with_credential(BrokeredCredential::refused("GH_TOKEN", "plaintext HTTP"));
/// assert_eq!(meta.credential_refusal().unwrap().reason, Some(Reason::CredentialNotBound));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokeredCredential {
    /// The grant's name (several joined by `,`): the audit field `credential.grant`.
    pub grant: String,
    /// Why its real value may not be sent to this request's destination; `None` when it is
    /// injected (if the request is allowed).
    pub refused: Option<String>,
}

impl BrokeredCredential {
    /// A dummy of `grant` whose real value is injected when the request is allowed.
    pub fn bound(grant: impl Into<String>) -> Self {
        Self {
            grant: grant.into(),
            refused: None,
        }
    }

    /// A dummy of `grant` sent where its real value may not go, and why.
    pub fn refused(grant: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            grant: grant.into(),
            refused: Some(why.into()),
        }
    }
}

impl RequestMeta {
    /// A request with no method and no client.
    pub fn new(protocol: Protocol, target: Target) -> Self {
        Self {
            protocol,
            target,
            method: None,
            client: None,
            upgrade: false,
            method_override: None,
            cross_origin: None,
            credential: None,
        }
    }

    /// Whether `mode` allows its method and the method an override header asks for.
    pub fn methods_allowed_in(&self, mode: Mode) -> bool {
        self.method
            .as_deref()
            .is_some_and(|m| mode.allows_method(m))
            && self
                .method_override
                .as_deref()
                .is_none_or(|m| mode.allows_method(m))
    }

    /// Records the method an override header asks for (see [`method_override`]).
    #[must_use]
    pub fn with_method_override(mut self, method: impl Into<String>) -> Self {
        self.method_override = Some(method.into());
        self
    }

    /// Sets the method.
    #[must_use]
    pub fn with_method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Marks the request as a protocol upgrade (websocket).
    #[must_use]
    pub fn with_upgrade(mut self) -> Self {
        self.upgrade = true;
        self
    }

    /// Marks the request as possibly sent by a web page, saying why (see
    /// [`RequestMeta::cross_origin`]).
    #[must_use]
    pub fn with_cross_origin(mut self, why: impl Into<String>) -> Self {
        self.cross_origin = Some(why.into());
        self
    }

    /// Records the brokered credential the request carries (see [`RequestMeta::credential`]).
    #[must_use]
    pub fn with_credential(mut self, credential: BrokeredCredential) -> Self {
        self.credential = Some(credential);
        self
    }

    /// The refusal a gate answers for a request carrying a dummy whose grant is not bound to its
    /// destination (`credential_not_bound`, with the reason as detail); `None` otherwise.
    pub fn credential_refusal(&self) -> Option<crate::Decision> {
        let c = self.credential.as_ref()?;
        // TRACE and TRACK echo the request back: the real value would return to the client.
        let echoes = self
            .method
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("TRACE") || m.eq_ignore_ascii_case("TRACK"));
        let why = match &c.refused {
            Some(why) => why.clone(),
            None if echoes => {
                "a TRACE or TRACK request echoes its headers back, the real value with them"
                    .to_owned()
            }
            None => return None,
        };
        Some(
            crate::Decision::deny(crate::Reason::CredentialNotBound)
                .with_detail(format!("credential grant {}: {why}", c.grant)),
        )
    }

    /// Sets the client address.
    #[must_use]
    pub fn with_client(mut self, client: SocketAddr) -> Self {
        self.client = Some(client);
        self
    }
}
