//! Domain patterns as written in config: parsing, port scopes, and coverage (whether one
//! pattern admits everything another does, for managed constraints).

use core::net::IpAddr;
use std::fmt;

use proxy_core::{Host, HostError};

use crate::error::PatternError;

/// What a pattern matches, before its port scope.
///
/// ```
/// use proxy_policy::{Pattern, PatternKind};
/// assert!(matches!(Pattern::parse("**.example.com").unwrap().kind(), PatternKind::ApexAndSubdomains(_)));
/// assert!(matches!(Pattern::parse("::ffff:10.0.0.1").unwrap().kind(), PatternKind::Ip { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternKind {
    /// `*`: every host (allow lists only).
    Global,
    /// `example.com`: exactly that name.
    Exact(Host),
    /// `*.example.com`: strict subdomains of the name.
    Subdomains(Host),
    /// `**.example.com`: the name and its subdomains.
    ApexAndSubdomains(Host),
    /// `region*.example.com`: an anchored whole-name glob; `*` stays inside one label.
    /// The text is lowercase, without a trailing dot; `subdomains` and `apex` record a
    /// `*.` / `**.` prefix in front of it.
    Glob {
        /// The glob without any `*.` / `**.` prefix.
        glob: String,
        /// Whether subdomains of a match also match (`*.` or `**.` prefix).
        subdomains: bool,
        /// Whether the glob itself matches (no prefix, or `**.`).
        apex: bool,
    },
    /// An IP literal (IPv6 possibly with a zone id). IPv4-mapped and IPv4-compatible forms are
    /// stored as the IPv4 address they carry, so they match every spelling.
    Ip {
        /// The address matched (the embedded IPv4 address for IPv4-compatible literals).
        addr: IpAddr,
        /// The zone id, if the pattern names one.
        zone: Option<String>,
    },
}

/// An inclusive port range.
///
/// ```
/// use proxy_policy::PortRange;
/// let r = PortRange { lo: 3000, hi: 3999 };
/// assert!(r.contains(3500) && !r.contains(4000));
/// assert_eq!(r.to_string(), "3000-3999");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// One domain pattern: what it matches and an optional port scope.
///
/// ```
/// use proxy_policy::Pattern;
/// let p = Pattern::parse("*.Example.com.:8443").unwrap();
/// assert!(p.is_wildcard());
/// assert_eq!(p.ports().map(|r| (r.lo, r.hi)), Some((8443, 8443)));
/// assert!(Pattern::parse("exa mple.com").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    kind: PatternKind,
    ports: Option<PortRange>,
}

impl Pattern {
    /// Parses a pattern (surrounding whitespace is ignored).
    pub fn parse(input: &str) -> Result<Self, PatternError> {
        let text = input.trim();
        let err = |why: String| PatternError::new(text, why);
        if text.is_empty() {
            return Err(err("empty pattern".into()));
        }
        if let Some(why) = url_hint(text) {
            return Err(err(why));
        }
        let (host_part, ports) = split_port_scope(text).map_err(err)?;
        let kind = parse_kind(host_part).map_err(err)?;
        if kind == PatternKind::Global && ports.is_some() {
            return Err(err("the global wildcard `*` takes no port scope".into()));
        }
        Ok(Self {
            text: text.to_owned(),
            kind,
            ports,
        })
    }

    /// The pattern as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What it matches.
    pub fn kind(&self) -> &PatternKind {
        &self.kind
    }

    /// Its port scope, if any.
    pub fn ports(&self) -> Option<PortRange> {
        self.ports
    }

    /// Whether the pattern contains a wildcard (`*`, `*.`, `**.`, or `*` inside a label).
    /// A wildcard never admits a local or private target.
    pub fn is_wildcard(&self) -> bool {
        !matches!(self.kind, PatternKind::Exact(_) | PatternKind::Ip { .. })
    }

    /// A canonical spelling: two patterns with the same key match the same hosts and ports
    /// (`Example.COM.` and `example.com` share the key `example.com`). Config layers overlay
    /// domain entries by this key.
    ///
    /// ```
    /// use proxy_policy::Pattern;
    /// assert_eq!(Pattern::parse("*.Example.COM.:443").unwrap().key(), "*.example.com:443");
    /// assert_eq!(Pattern::parse("[::ffff:127.0.0.1]").unwrap().key(), "127.0.0.1");
    /// ```
    pub fn key(&self) -> String {
        let host = match &self.kind {
            PatternKind::Global => "*".to_owned(),
            PatternKind::Exact(h) => h.to_string(),
            PatternKind::Subdomains(h) => format!("*.{h}"),
            PatternKind::ApexAndSubdomains(h) => format!("**.{h}"),
            PatternKind::Glob {
                glob,
                subdomains,
                apex,
            } => match (subdomains, apex) {
                (true, true) => format!("**.{glob}"),
                (true, false) => format!("*.{glob}"),
                _ => glob.clone(),
            },
            // A zone is written with RFC 6874's `%25` separator, which reads back as the same
            // zone whatever it starts with; an IPv4-compatible literal with a zone (matched by
            // its IPv4 address, on that zone only) keeps both.
            PatternKind::Ip { addr, zone } => match (addr, zone) {
                (IpAddr::V6(a), Some(z)) => format!("[{a}%25{z}]"),
                (IpAddr::V6(a), None) => format!("[{a}]"),
                (IpAddr::V4(a), Some(z)) => format!("[::{a}%25{z}]"),
                (IpAddr::V4(a), None) => a.to_string(),
            },
        };
        match self.ports {
            Some(r) => format!("{host}:{r}"),
            None => host,
        }
    }

    /// What this pattern denies as a deny entry, as a key two deny entries that deny the same
    /// targets share: [`key`](Self::key), except that an IP literal is written in the one
    /// spelling deny entries are compared in (an IPv4 address carried IPv4-mapped,
    /// IPv4-compatible, IPv4-translated or NAT64 as that address) and without its zone, which
    /// a deny entry ignores (netproxy dials an address without its zone).
    ///
    /// ```
    /// use proxy_policy::Pattern;
    /// let key = |p: &str| Pattern::parse(p).unwrap().deny_key();
    /// assert_eq!(key("fd00::1%eth0"), key("[fd00::1]"));
    /// assert_eq!(key("64:ff9b::1.2.3.4"), key("1.2.3.4"));
    /// assert_ne!(key("1.2.3.4:443"), key("1.2.3.4"));
    /// ```
    pub fn deny_key(&self) -> String {
        let PatternKind::Ip { addr, .. } = &self.kind else {
            return self.key();
        };
        let host = match crate::classify::canonical_ip(*addr) {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        };
        match self.ports {
            Some(r) => format!("{host}:{r}"),
            None => host,
        }
    }

    /// Whether this is the global wildcard `*`.
    pub fn is_global(&self) -> bool {
        self.kind == PatternKind::Global
    }

    /// Whether the port scope admits `port`.
    pub fn admits_port(&self, port: u16) -> bool {
        self.ports.is_none_or(|r| r.contains(port))
    }

    /// Whether every host and port this pattern matches is also matched by `self`, the
    /// managed pattern (used to check that a user allow entry stays inside the managed list).
    ///
    /// ```
    /// use proxy_policy::Pattern;
    /// let p = |s| Pattern::parse(s).unwrap();
    /// assert!(p("*.example.com").covers(&p("api.example.com")));
    /// assert!(!p("*.example.com").covers(&p("**.example.com")));
    /// assert!(p("**.example.com").covers(&p("*.api.example.com:443")));
    /// assert!(p("localhost:3000-3999").covers(&p("localhost:3000")));
    /// assert!(!p("localhost:3000").covers(&p("localhost")));
    /// ```
    pub fn covers(&self, other: &Pattern) -> bool {
        let ports_ok = match (self.ports, other.ports) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(m), Some(o)) => m.lo <= o.lo && o.hi <= m.hi,
        };
        ports_ok && kind_covers(&self.kind, &other.kind)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn kind_covers(managed: &PatternKind, user: &PatternKind) -> bool {
    use PatternKind as K;
    // `d` is under `base` (or equal when `or_equal`).
    let under = |d: &Host, base: &Host, or_equal: bool| -> bool {
        match (d.as_name(), base.as_name()) {
            (Some(d), Some(b)) => {
                (or_equal && d == b)
                    || (d.len() > b.len()
                        && d.ends_with(b)
                        && d.as_bytes()[d.len() - b.len() - 1] == b'.')
            }
            _ => false,
        }
    };
    match (managed, user) {
        (K::Global, _) => true,
        (_, K::Global) => false,
        (K::Exact(m), K::Exact(u)) => m == u,
        (K::Ip { addr, zone }, K::Ip { addr: a, zone: z }) => {
            addr == a && (zone.is_none() || zone == z)
        }
        (K::Subdomains(d), K::Exact(x)) => under(x, d, false),
        (K::Subdomains(d), K::Subdomains(x)) => under(x, d, true),
        (K::Subdomains(d), K::ApexAndSubdomains(x)) => under(x, d, false),
        (K::ApexAndSubdomains(d), K::Exact(x)) => under(x, d, true),
        (K::ApexAndSubdomains(d), K::Subdomains(x) | K::ApexAndSubdomains(x)) => under(x, d, true),
        (K::Subdomains(d) | K::ApexAndSubdomains(d), K::Glob { glob, .. }) => {
            // Every name a glob matches ends with its fixed labels (those after the last label
            // holding a `*`) and has at least one label in front of them, so the glob is
            // covered when that fixed suffix is the managed domain or lies under it.
            let mut fixed: Vec<&str> = glob.rsplit('.').take_while(|l| !l.contains('*')).collect();
            fixed.reverse();
            Host::parse(&fixed.join(".")).is_ok_and(|suffix| under(&suffix, d, true))
        }
        (K::Glob { .. }, K::Glob { .. }) => managed == user,
        _ => false,
    }
}

/// Splits an optional `:port` or `:lo-hi` scope off a pattern. A bare IPv6 literal (two or
/// more colons, no brackets) has no port scope.
fn split_port_scope(text: &str) -> Result<(&str, Option<PortRange>), String> {
    let (host, port) = if text.starts_with('[') || text.contains(".[") {
        match text.rfind(']') {
            Some(end) => {
                let (h, rest) = text.split_at(end + 1);
                match rest {
                    "" => (h, None),
                    _ => match rest.strip_prefix(':') {
                        Some(p) => (h, Some(p)),
                        None => return Err("unexpected text after `]`".into()),
                    },
                }
            }
            None => return Err("unclosed `[`".into()),
        }
    } else {
        match text.matches(':').count() {
            0 | 2.. => (text, None),
            _ => {
                let (h, p) = text.split_once(':').unwrap_or((text, ""));
                (h, Some(p))
            }
        }
    };
    let Some(port) = port else {
        return Ok((host, None));
    };
    let num = |s: &str| -> Result<u16, String> {
        match s.parse::<u16>() {
            Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(format!("invalid port {s:?} (expected 1-65535)")),
        }
    };
    let range = match port.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (num(lo)?, num(hi)?);
            if lo > hi {
                return Err(format!("empty port range {port:?}"));
            }
            PortRange { lo, hi }
        }
        None => {
            let n = num(port)?;
            PortRange { lo: n, hi: n }
        }
    };
    Ok((host, Some(range)))
}

fn parse_kind(host: &str) -> Result<PatternKind, String> {
    if matches!(host, "*" | "[*]" | "*.[*]" | "**.[*]") {
        return Ok(PatternKind::Global);
    }
    let (rest, subdomains, apex) = if let Some(r) = host.strip_prefix("**.") {
        (r, true, true)
    } else if let Some(r) = host.strip_prefix("*.") {
        (r, true, false)
    } else {
        (host, false, true)
    };
    if rest.contains('*') {
        return parse_glob(rest, subdomains, apex);
    }
    let h = Host::parse(rest).map_err(|e| describe_host_error(&e))?;
    if subdomains && !h.is_name() {
        return Err("a `*.` or `**.` prefix needs a domain name, not an IP address".into());
    }
    if !subdomains {
        if let Some(ip) = h.policy_ip() {
            return Ok(PatternKind::Ip {
                addr: ip,
                zone: h.zone().map(str::to_owned),
            });
        }
        return Ok(PatternKind::Exact(h));
    }
    Ok(if apex {
        PatternKind::ApexAndSubdomains(h)
    } else {
        PatternKind::Subdomains(h)
    })
}

fn parse_glob(rest: &str, subdomains: bool, apex: bool) -> Result<PatternKind, String> {
    let glob = rest.strip_suffix('.').unwrap_or(rest).to_ascii_lowercase();
    let labels: Vec<&str> = glob.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Err("empty label".into());
    }
    for label in &labels {
        if label.contains("**") {
            return Err("`**` is only allowed as a `**.` prefix".into());
        }
        if label.len() > proxy_core::host::MAX_LABEL_LEN {
            return Err("label longer than 63 bytes".into());
        }
        if let Some(c) = label
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*')))
        {
            return Err(format!(
                "character {c:?} is not allowed in a pattern (only `*` is a wildcard)"
            ));
        }
    }
    if labels.len() < 2 {
        return Err("a wildcard inside a label needs at least one fixed label after it (e.g. `region*.example.com`)".into());
    }
    if labels.last().is_some_and(|l| l.contains('*')) {
        return Err("the last label of a pattern cannot contain `*`".into());
    }
    Ok(PatternKind::Glob {
        glob,
        subdomains,
        apex,
    })
}

/// Why a pattern written as a URL (`https://github.com/x`) or with a path (`github.com/x`) is
/// refused, with the host part as the pattern meant when it is one (`github.com`; an explicit
/// port is kept: `https://a.test:8443/` means `a.test:8443`). `None` for anything without a
/// scheme or a `/`, which no pattern has.
///
/// ```
/// use proxy_policy::Pattern;
/// let e = Pattern::parse("https://github.com/x").unwrap_err();
/// assert_eq!(e.why(), "a pattern is a host: did you mean github.com?");
/// ```
fn url_hint(text: &str) -> Option<String> {
    let rest = match text.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            rest
        }
        _ if text.contains('/') => text,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // user:password@host: only the host is a pattern.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match Pattern::parse(host) {
        Ok(p) if !host.is_empty() => Some(format!(
            "a pattern is a host: did you mean {}?",
            p.as_str()
        )),
        _ => Some(
            "a pattern is a host (such as example.com, *.example.com or example.com:8443), not a URL or a path"
                .into(),
        ),
    }
}

fn describe_host_error(e: &HostError) -> String {
    e.to_string()
}
