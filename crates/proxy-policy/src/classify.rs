//! Classification of addresses by value: which ones are local, private or special-use, and so
//! blocked unless explicitly allowed.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::fmt;

/// Why an address counts as local (not public).
///
/// ```
/// use proxy_policy::{classify, LocalRange};
/// assert_eq!(classify("100.100.1.1".parse().unwrap()), Some(LocalRange::SharedCgnat));
/// assert_eq!(LocalRange::Loopback.to_string(), "loopback");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalRange {
    /// 0.0.0.0/8 ("this network") or `::`.
    Unspecified,
    /// 127.0.0.0/8 or `::1`.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16 (RFC 1918) or fc00::/7 (unique local).
    Private,
    /// 100.64.0.0/10 (RFC 6598 shared address space).
    SharedCgnat,
    /// 169.254/16 or fe80::/10.
    LinkLocal,
    /// fec0::/10 (deprecated site-local).
    SiteLocal,
    /// 192.0.0.0/24 (IETF protocol assignments).
    ProtocolAssignments,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32.
    Documentation,
    /// 198.18.0.0/15 (RFC 2544), also used by fake-IP DNS proxies.
    Benchmarking,
    /// 224/4 or ff00::/8.
    Multicast,
    /// 240/4, including 255.255.255.255.
    Reserved,
    /// 100::/64 (discard-only).
    DiscardOnly,
    /// 64:ff9b:1::/48, the local-use NAT64 prefix (RFC 8215): it leads into a local
    /// translator, whatever the layout of the IPv4 address it embeds.
    LocalUseNat64,
}

impl LocalRange {
    /// A short name, e.g. `loopback`.
    pub const fn as_str(self) -> &'static str {
        match self {
            LocalRange::Unspecified => "unspecified",
            LocalRange::Loopback => "loopback",
            LocalRange::Private => "private",
            LocalRange::SharedCgnat => "shared address space (CGNAT)",
            LocalRange::LinkLocal => "link-local",
            LocalRange::SiteLocal => "site-local",
            LocalRange::ProtocolAssignments => "IETF protocol assignments",
            LocalRange::Documentation => "documentation",
            LocalRange::Benchmarking => "benchmarking",
            LocalRange::Multicast => "multicast",
            LocalRange::Reserved => "reserved",
            LocalRange::DiscardOnly => "discard-only",
            LocalRange::LocalUseNat64 => "local-use NAT64",
        }
    }
}

impl fmt::Display for LocalRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies an address: `Some(range)` when it is local, private or special-use, `None` when
/// it is public. IPv6 addresses that embed an IPv4 address (IPv4-mapped, IPv4-compatible,
/// IPv4-translated ::ffff:0:0:0/96, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo 2001::/32) are
/// judged by the IPv4 address they carry; the whole local-use NAT64 prefix 64:ff9b:1::/48 is local.
///
/// ```
/// use proxy_policy::{classify, LocalRange};
/// assert_eq!(classify("127.0.0.2".parse().unwrap()), Some(LocalRange::Loopback));
/// assert_eq!(classify("64:ff9b::10.0.0.1".parse().unwrap()), Some(LocalRange::Private));
/// assert_eq!(classify("::ffff:0:10.0.0.1".parse().unwrap()), Some(LocalRange::Private));
/// assert_eq!(classify("64:ff9b:1::8.8.8.8".parse().unwrap()), Some(LocalRange::LocalUseNat64));
/// assert_eq!(classify("93.184.216.34".parse().unwrap()), None);
/// ```
pub fn classify(ip: IpAddr) -> Option<LocalRange> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<LocalRange> {
    use LocalRange as R;
    const TABLE: &[([u8; 4], u32, LocalRange)] = &[
        ([0, 0, 0, 0], 8, R::Unspecified),
        ([10, 0, 0, 0], 8, R::Private),
        ([100, 64, 0, 0], 10, R::SharedCgnat),
        ([127, 0, 0, 0], 8, R::Loopback),
        ([169, 254, 0, 0], 16, R::LinkLocal),
        ([172, 16, 0, 0], 12, R::Private),
        ([192, 0, 0, 0], 24, R::ProtocolAssignments),
        ([192, 0, 2, 0], 24, R::Documentation),
        ([192, 168, 0, 0], 16, R::Private),
        ([198, 18, 0, 0], 15, R::Benchmarking),
        ([198, 51, 100, 0], 24, R::Documentation),
        ([203, 0, 113, 0], 24, R::Documentation),
        ([224, 0, 0, 0], 4, R::Multicast),
        ([240, 0, 0, 0], 4, R::Reserved),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, r)| *r)
}

fn v4_from(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

/// The IPv4 addresses an IPv6 address carries, by the transition mechanisms netproxy knows.
pub(crate) fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let mut out = Vec::new();
    if let Some(v4) = ip.to_ipv4_mapped() {
        out.push(v4);
    }
    if let Some(v4) = proxy_core::host::ipv4_compatible(ip) {
        out.push(v4);
    }
    // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052), and the IPv4-translated ::ffff:0:0:0/96
    // of stateless translation (RFC 2765): a translator's way to the IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..6] == IPV4_TRANSLATED {
        out.push(v4_from(s[6], s[7]));
    }
    // 6to4 2002::/16: the IPv4 address follows the prefix.
    if s[0] == 0x2002 {
        out.push(v4_from(s[1], s[2]));
    }
    // Teredo 2001::/32: the server address, and the client address stored inverted.
    if s[0] == 0x2001 && s[1] == 0 {
        out.push(v4_from(s[2], s[3]));
        out.push(v4_from(!s[6], !s[7]));
    }
    out
}

/// The loopback address a connection to `ip` reaches when `ip` is the unspecified address as a
/// local `connect` reads it (Linux connects `0.0.0.0`, also IPv4-mapped, to 127.0.0.1 and `::`
/// to `::1`): a deny entry or a hook for that loopback address holds for it too. One way only:
/// an entry for `0.0.0.0` does not cover 127.0.0.1. NAT64 and translated spellings of 0.0.0.0
/// leave through a translator, not to this machine's loopback.
pub(crate) fn unspecified_reaches(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(v6) if v6.is_unspecified() => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_unspecified()) => {
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        }
        _ => None,
    }
}

/// The first six segments of an IPv4-translated address, `::ffff:0:a.b.c.d` (RFC 2765).
const IPV4_TRANSLATED: [u16; 6] = [0, 0, 0, 0, 0xffff, 0];

/// The one spelling of an address that IP deny entries and the machine's own addresses are
/// compared in: an IPv4 address carried IPv4-mapped, IPv4-compatible (`::a.b.c.d`, not `::` or
/// `::1`), IPv4-translated (`::ffff:0:a.b.c.d`) or in the NAT64 well-known prefix
/// 64:ff9b::/96 becomes that IPv4 address; any other address is itself.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    if let Some(v4) = proxy_core::host::ipv4_compatible(v6) {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..6] == IPV4_TRANSLATED {
        return IpAddr::V4(v4_from(s[6], s[7]));
    }
    ip
}

fn classify_v6(ip: Ipv6Addr) -> Option<LocalRange> {
    use LocalRange as R;
    if ip.is_unspecified() {
        return Some(R::Unspecified);
    }
    if ip.is_loopback() {
        return Some(R::Loopback);
    }
    // The local-use NAT64 prefix (RFC 8215) as a whole: its translator is local, and the
    // layout of the embedded address depends on the prefix length it was configured with.
    if ip.segments()[..3] == [0x64, 0xff9b, 1] {
        return Some(R::LocalUseNat64);
    }
    if let Some(r) = embedded_v4(ip).into_iter().find_map(classify_v4) {
        return Some(r);
    }
    let s = ip.segments();
    let table: [(u16, u16, LocalRange); 5] = [
        (0xfe00, 0xfc00, R::Private),       // fc00::/7
        (0xffc0, 0xfe80, R::LinkLocal),     // fe80::/10
        (0xffc0, 0xfec0, R::SiteLocal),     // fec0::/10
        (0xff00, 0xff00, R::Multicast),     // ff00::/8
        (0xffff, 0x2001, R::Documentation), // checked with the second segment below
    ];
    for (mask, value, range) in table {
        if s[0] & mask == value {
            if range == R::Documentation {
                if s[1] == 0x0db8 {
                    return Some(range);
                }
                continue;
            }
            return Some(range);
        }
    }
    if s[..4] == [0x100, 0, 0, 0] {
        return Some(R::DiscardOnly);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(ip: &str, expected: Option<LocalRange>) {
        let addr: IpAddr = ip.parse().unwrap();
        assert_eq!(classify(addr), expected, "{ip}");
    }

    #[test]
    fn ipv4_ranges() {
        use LocalRange as R;
        let table: &[(&str, &str, Option<LocalRange>)] = &[
            ("0.0.0.0", "0.255.255.255", Some(R::Unspecified)),
            ("10.0.0.0", "10.255.255.255", Some(R::Private)),
            ("100.64.0.0", "100.127.255.255", Some(R::SharedCgnat)),
            ("127.0.0.0", "127.255.255.255", Some(R::Loopback)),
            ("169.254.0.0", "169.254.255.255", Some(R::LinkLocal)),
            ("172.16.0.0", "172.31.255.255", Some(R::Private)),
            ("192.0.0.0", "192.0.0.255", Some(R::ProtocolAssignments)),
            ("192.0.2.0", "192.0.2.255", Some(R::Documentation)),
            ("192.168.0.0", "192.168.255.255", Some(R::Private)),
            ("198.18.0.0", "198.19.255.255", Some(R::Benchmarking)),
            ("198.51.100.0", "198.51.100.255", Some(R::Documentation)),
            ("203.0.113.0", "203.0.113.255", Some(R::Documentation)),
            ("224.0.0.0", "239.255.255.255", Some(R::Multicast)),
            ("240.0.0.0", "255.255.255.255", Some(R::Reserved)),
        ];
        for (first, last, range) in table {
            check(first, *range);
            check(last, *range);
            // The neighbours just outside each range are public unless another range starts.
            let before =
                Ipv4Addr::from(u32::from(first.parse::<Ipv4Addr>().unwrap()).wrapping_sub(1));
            let after =
                Ipv4Addr::from(u32::from(last.parse::<Ipv4Addr>().unwrap()).wrapping_add(1));
            for n in [before, after] {
                let inside_another = table.iter().any(|(f, l, _)| {
                    let (f, l) = (
                        f.parse::<Ipv4Addr>().unwrap(),
                        l.parse::<Ipv4Addr>().unwrap(),
                    );
                    f <= n && n <= l
                });
                if !inside_another {
                    check(&n.to_string(), None);
                }
            }
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.1.1",
        ] {
            check(public, None);
        }
    }

    #[test]
    fn ipv6_ranges() {
        use LocalRange as R;
        check("::", Some(R::Unspecified));
        check("::1", Some(R::Loopback));
        check("fc00::1", Some(R::Private));
        check("fdff:ffff::1", Some(R::Private));
        check("fe80::1", Some(R::LinkLocal));
        check("febf::1", Some(R::LinkLocal));
        check("fec0::1", Some(R::SiteLocal));
        check("feff::1", Some(R::SiteLocal));
        check("ff02::1", Some(R::Multicast));
        check("2001:db8::1", Some(R::Documentation));
        check("2001:db8:ffff::1", Some(R::Documentation));
        check("100::1", Some(R::DiscardOnly));
        check("100::ffff:ffff:ffff:ffff", Some(R::DiscardOnly));
        check("100:0:0:1::1", None);
        check("2606:4700::1111", None);
        check("2001:4860:4860::8888", None);
        check("fbff::1", None);
    }

    #[test]
    fn embedded_ipv4_is_judged_as_ipv4() {
        use LocalRange as R;
        check("::ffff:127.0.0.1", Some(R::Loopback));
        check("::ffff:10.1.2.3", Some(R::Private));
        check("::ffff:8.8.8.8", None);
        check("::127.0.0.1", Some(R::Loopback));
        check("::10.0.0.1", Some(R::Private));
        check("::8.8.8.8", None);
        check("64:ff9b::127.0.0.1", Some(R::Loopback));
        check("64:ff9b::192.168.1.1", Some(R::Private));
        check("64:ff9b::8.8.8.8", None);
        check("::ffff:0:127.0.0.1", Some(R::Loopback));
        check("::ffff:0:169.254.169.254", Some(R::LinkLocal));
        check("::ffff:0:8.8.8.8", None);
        // The local-use NAT64 prefix is local whatever it embeds and however: /48 layout
        // (8.8.8.8 around the u octet), /96 layout, and anything else inside the /48.
        check("64:ff9b:1:a00:0:100::", Some(R::LocalUseNat64));
        check("64:ff9b:1:808:8:800::", Some(R::LocalUseNat64));
        check("64:ff9b:1::8.8.8.8", Some(R::LocalUseNat64));
        check("64:ff9b:1::", Some(R::LocalUseNat64));
        check("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some(R::LocalUseNat64));
        check("64:ff9b:2::8.8.8.8", None);
        check("64:ff9b:0:1::8.8.8.8", None);
        check("2002:7f00:1::1", Some(R::Loopback));
        check("2002:c0a8:101::1", Some(R::Private));
        check("2002:808:808::1", None);
        // Teredo: server 65.54.227.120, client 127.0.0.1 inverted (0x80ff:0xfffe).
        check("2001:0:4136:e378:8000:63bf:80ff:fffe", Some(R::Loopback));
        check("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None);
        check("2001:0:a00:1::f7f7:f7f7", Some(R::Private));
    }
}
