//! The canonical [`Host`]: one spelling per destination, used for everything downstream.
//!
//! Canonicalisation rules (docs/policy.md, "Hosts"):
//! - names are lowercased, one trailing dot is removed, IDNA names become their ASCII form;
//! - NUL, CR, LF, whitespace, control characters, `%` escapes, empty labels, labels over 63 bytes
//!   and names over 253 bytes are rejected;
//! - legacy IPv4 spellings the C resolver accepts (`127.1`, `0x7f.0.0.1`, `0177.0.0.1`,
//!   `2130706433`) become the dotted quad they mean: a name whose last label is a number is an
//!   address or it is invalid, never a name;
//! - IPv6 literals may be bracketed (exactly one pair) and carry a zone id (`%lo0` or the
//!   URI form `%25lo0`); IPv4-mapped literals become the IPv4 address they carry;
//!   IPv4-compatible literals (`::a.b.c.d`, not `::` or `::1`) keep their literal for dialing,
//!   while [`Host::policy_ip`] returns the embedded IPv4 address for matching and classification.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Longest host name accepted, in bytes, without the trailing dot (RFC 1035).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label accepted, in bytes (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;
/// Longest IPv6 zone id accepted, in bytes.
pub const MAX_ZONE_LEN: usize = 64;

/// Why a host could not be canonicalised. Every variant maps to the reason `invalid_host`.
///
/// ```
/// use proxy_core::{Host, HostError};
/// assert_eq!(Host::parse("a..b"), Err(HostError::EmptyLabel));
/// assert_eq!(Host::parse("exa mple.com"), Err(HostError::ForbiddenChar(' ')));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The host is empty (or only a dot).
    #[error("empty host")]
    Empty,
    /// A character that never appears in a host (NUL, CR, LF, whitespace, controls, `/`, `@` ...).
    #[error("forbidden character {0:?} in host")]
    ForbiddenChar(char),
    /// A `%` escape outside an IPv6 zone id.
    #[error("percent escapes are not allowed in a host")]
    PercentEscape,
    /// Two dots in a row, a leading dot, or two trailing dots.
    #[error("empty label in host")]
    EmptyLabel,
    /// A label longer than 63 bytes.
    #[error("label longer than 63 bytes")]
    LabelTooLong,
    /// A name longer than 253 bytes.
    #[error("host name longer than 253 bytes")]
    NameTooLong,
    /// Brackets that are not exactly one pair around an IPv6 literal.
    #[error("brackets must enclose exactly one IPv6 literal")]
    Brackets,
    /// Something that looked like an IPv6 literal but did not parse.
    #[error("invalid IPv6 literal")]
    InvalidIpv6,
    /// A bad IPv6 zone id.
    #[error("invalid IPv6 zone id")]
    InvalidZone,
    /// The last label is a number, so the host must be an IPv4 address, and it is not one.
    #[error("invalid IPv4 address (a host ending in a number must be an address)")]
    InvalidIpv4,
    /// An internationalised name that IDNA processing refused.
    #[error("invalid internationalised domain name")]
    InvalidIdna,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Name(Box<str>),
    V4(Ipv4Addr),
    V6 {
        addr: Ipv6Addr,
        zone: Option<Box<str>>,
    },
}

/// A canonical destination host: a lowercase ASCII name, an IPv4 address, or an IPv6 address
/// with an optional zone id.
///
/// Two spellings of the same destination give equal `Host`s, so a `Host` can be compared,
/// hashed and matched without further normalisation.
///
/// ```
/// use proxy_core::Host;
/// # fn main() -> Result<(), proxy_core::HostError> {
/// assert_eq!(Host::parse("Example.COM.")?.to_string(), "example.com");
/// assert_eq!(Host::parse("0x7f.1")?.to_string(), "127.0.0.1");
/// assert_eq!(Host::parse("[::ffff:127.0.0.1]")?.to_string(), "127.0.0.1");
/// assert_eq!(Host::parse("bücher.example")?.to_string(), "xn--bcher-kva.example");
/// assert_eq!(Host::parse("[fe80::1%25Eth0]")?.to_string(), "fe80::1%eth0");
/// assert!(Host::parse("evil.com\0.example.com").is_err());
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host(Repr);

impl Host {
    /// Canonicalises a host as it appears in a URL authority, a `CONNECT` line or a SOCKS
    /// request, without its port. IPv6 literals may be bracketed or bare.
    pub fn parse(input: &str) -> Result<Self, HostError> {
        if input.is_empty() {
            return Err(HostError::Empty);
        }
        if let Some(c) = input.chars().find(|&c| is_forbidden(c)) {
            return Err(HostError::ForbiddenChar(c));
        }
        if let Some(rest) = input.strip_prefix('[') {
            let inner = rest.strip_suffix(']').ok_or(HostError::Brackets)?;
            if inner.contains(['[', ']']) {
                return Err(HostError::Brackets);
            }
            return parse_ipv6(inner);
        }
        if input.contains(['[', ']']) {
            return Err(HostError::Brackets);
        }
        if input.contains(':') {
            return parse_ipv6(input);
        }
        if input.contains('%') {
            return Err(HostError::PercentEscape);
        }
        parse_name(input)
    }

    /// The host for an IP address, canonicalised (an IPv4-mapped IPv6 address becomes IPv4).
    ///
    /// ```
    /// use proxy_core::Host;
    /// let h = Host::from_ip("::ffff:10.0.0.1".parse().unwrap());
    /// assert_eq!(h.to_string(), "10.0.0.1");
    /// ```
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(Repr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(Repr::V4(v4)),
                None => Self(Repr::V6 {
                    addr: v6,
                    zone: None,
                }),
            },
        }
    }

    /// The name, when the host is not an IP literal.
    pub fn as_name(&self) -> Option<&str> {
        match &self.0 {
            Repr::Name(n) => Some(n),
            _ => None,
        }
    }

    /// Whether the host is a name (as opposed to an IP literal).
    pub fn is_name(&self) -> bool {
        matches!(self.0, Repr::Name(_))
    }

    /// The literal address to dial, when the host is an IP literal (zone id not included).
    pub fn ip(&self) -> Option<IpAddr> {
        match &self.0 {
            Repr::Name(_) => None,
            Repr::V4(v4) => Some(IpAddr::V4(*v4)),
            Repr::V6 { addr, .. } => Some(IpAddr::V6(*addr)),
        }
    }

    /// The IPv6 zone id, if any.
    pub fn zone(&self) -> Option<&str> {
        match &self.0 {
            Repr::V6 { zone: Some(z), .. } => Some(z),
            _ => None,
        }
    }

    /// The address that policy matches and classifies: the literal address, except for an
    /// IPv4-compatible IPv6 literal (`::a.b.c.d`), which is judged by its embedded IPv4 address.
    ///
    /// ```
    /// use proxy_core::Host;
    /// let h = Host::parse("::127.0.0.1").unwrap();
    /// assert_eq!(h.ip(), Some("::7f00:1".parse().unwrap()));
    /// assert_eq!(h.policy_ip(), Some("127.0.0.1".parse().unwrap()));
    /// ```
    pub fn policy_ip(&self) -> Option<IpAddr> {
        match &self.0 {
            Repr::Name(_) => None,
            Repr::V4(v4) => Some(IpAddr::V4(*v4)),
            Repr::V6 { addr, .. } => Some(match ipv4_compatible(*addr) {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(*addr),
            }),
        }
    }

    /// The same host without its zone id (used to match zone-scoped literals against
    /// unscoped patterns).
    pub fn without_zone(&self) -> Option<Host> {
        match &self.0 {
            Repr::V6 {
                addr,
                zone: Some(_),
            } => Some(Self(Repr::V6 {
                addr: *addr,
                zone: None,
            })),
            _ => None,
        }
    }

    /// The host as it is written in a URI authority: IPv6 literals in brackets, with a zone id
    /// escaped as `%25`.
    pub fn to_uri_host(&self) -> String {
        match &self.0 {
            Repr::V6 { addr, zone } => match zone {
                Some(z) => format!("[{addr}%25{z}]"),
                None => format!("[{addr}]"),
            },
            _ => self.to_string(),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Name(n) => f.write_str(n),
            Repr::V4(v4) => write!(f, "{v4}"),
            Repr::V6 { addr, zone: None } => write!(f, "{addr}"),
            // A zone id that starts with "25" (and is longer) would read back without those
            // two characters (the parser takes a leading "%25" for RFC 6874's separator), so
            // it is written with that separator: the canonical form reads back as itself.
            Repr::V6 {
                addr,
                zone: Some(z),
            } if z.len() > 2 && z.starts_with("25") => write!(f, "{addr}%25{z}"),
            Repr::V6 {
                addr,
                zone: Some(z),
            } => write!(f, "{addr}%{z}"),
        }
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Host({self})")
    }
}

impl FromStr for Host {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn is_forbidden(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '/' | '\\' | '@' | '?' | '#' | '<' | '>' | '^' | '|' | '"' | '\'' | '`' | '{' | '}'
        )
}

/// The IPv4 address embedded in an IPv4-compatible IPv6 address (`::a.b.c.d`), excluding `::`
/// and `::1`, which are themselves.
pub fn ipv4_compatible(addr: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = addr.segments();
    if s[..6].iter().all(|&x| x == 0) {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        let bits = u32::from(v4);
        if bits > 1 {
            return Some(v4);
        }
    }
    None
}

fn parse_ipv6(text: &str) -> Result<Host, HostError> {
    let (addr_text, zone) = match text.split_once('%') {
        None => (text, None),
        Some((a, z)) => {
            // RFC 6874 writes the zone separator as "%25" inside a URI.
            let z = z.strip_prefix("25").filter(|r| !r.is_empty()).unwrap_or(z);
            if z.is_empty()
                || z.len() > MAX_ZONE_LEN
                || !z
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(if z.contains('%') {
                    HostError::PercentEscape
                } else {
                    HostError::InvalidZone
                });
            }
            (a, Some(z.to_ascii_lowercase().into_boxed_str()))
        }
    };
    let addr = Ipv6Addr::from_str(addr_text).map_err(|_| HostError::InvalidIpv6)?;
    if let Some(v4) = addr.to_ipv4_mapped() {
        return Ok(Host(Repr::V4(v4)));
    }
    Ok(Host(Repr::V6 { addr, zone }))
}

fn parse_name(input: &str) -> Result<Host, HostError> {
    let name = input.strip_suffix('.').unwrap_or(input);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    let lowered = if !name.is_ascii() || has_ace_label(name) {
        let ascii = idna::domain_to_ascii(name).map_err(|_| HostError::InvalidIdna)?;
        if ascii.ends_with('.') || ascii.is_empty() {
            return Err(HostError::EmptyLabel);
        }
        ascii
    } else {
        name.to_ascii_lowercase()
    };
    let labels: Vec<&str> = lowered.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Err(HostError::EmptyLabel);
    }
    if labels.last().is_some_and(|l| is_number_label(l)) {
        return parse_legacy_ipv4(&labels)
            .map(|v4| Host(Repr::V4(v4)))
            .ok_or(HostError::InvalidIpv4);
    }
    for label in &labels {
        if label.len() > MAX_LABEL_LEN {
            return Err(HostError::LabelTooLong);
        }
        if let Some(c) = label
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(if c == '%' {
                HostError::PercentEscape
            } else {
                HostError::ForbiddenChar(c)
            });
        }
    }
    if lowered.len() > MAX_NAME_LEN {
        return Err(HostError::NameTooLong);
    }
    Ok(Host(Repr::Name(lowered.into_boxed_str())))
}

fn has_ace_label(name: &str) -> bool {
    name.split('.')
        .any(|l| l.len() >= 4 && l[..4].eq_ignore_ascii_case("xn--"))
}

/// A label that the C resolver (and the URL standard) read as a number: decimal digits, or
/// `0x` followed by hex digits.
fn is_number_label(label: &str) -> bool {
    if let Some(hex) = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        return hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit())
}

/// One part of an `inet_aton` address: `0x` hex, a leading `0` octal, otherwise decimal.
fn parse_ipv4_part(part: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        // "0x" alone is zero, as in glibc and the URL standard.
        return (radix == 16).then_some(0);
    }
    // Leading zeros cannot overflow, but a long run of significant digits can.
    let significant = digits.trim_start_matches('0');
    if significant.len() > 12 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Parses the 1- to 4-part IPv4 forms that `inet_aton` accepts.
fn parse_legacy_ipv4(labels: &[&str]) -> Option<Ipv4Addr> {
    if labels.is_empty() || labels.len() > 4 {
        return None;
    }
    let mut parts = Vec::with_capacity(4);
    for l in labels {
        parts.push(parse_ipv4_part(l)?);
    }
    let (last, init) = parts.split_last()?;
    if init.iter().any(|&p| p > 255) {
        return None;
    }
    let last_max: u64 = (1u64 << (8 * (5 - parts.len()))) - 1;
    if *last > last_max {
        return None;
    }
    let mut value: u64 = 0;
    for (i, p) in init.iter().enumerate() {
        value |= p << (24 - 8 * i);
    }
    value |= last;
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests;
