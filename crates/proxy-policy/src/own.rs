//! The machine's own addresses: a set the caller keeps current (from the kernel's address
//! events) and hands to [`Policy::evaluate_with`](crate::Policy::evaluate_with) and
//! [`Policy::check_addresses`](crate::Policy::check_addresses) beside the policy. The policy
//! never reads it from the system itself: it stays pure.

use core::net::IpAddr;

use crate::classify::canonical_ip;

/// The addresses configured on the machine's interfaces. While local protection is on, each
/// is treated like loopback: a wildcard, a name's resolution or `treat_as_public` never admits
/// it; only an explicit literal allow entry does.
///
/// Every spelling of an address matches (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64
/// 64:ff9b::/96).
///
/// ```
/// use proxy_policy::OwnAddrs;
/// let own = OwnAddrs::new(["203.0.113.7".parse().unwrap(), "2001:db8::7".parse().unwrap()]);
/// assert!(own.contains("203.0.113.7".parse().unwrap()));
/// assert!(own.contains("::ffff:203.0.113.7".parse().unwrap()));
/// assert!(own.contains("64:ff9b::203.0.113.7".parse().unwrap()));
/// assert!(!own.contains("203.0.113.8".parse().unwrap()));
/// assert!(OwnAddrs::none().is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnAddrs {
    /// Canonical spellings, sorted, without duplicates.
    addrs: Vec<IpAddr>,
}

static NONE: OwnAddrs = OwnAddrs { addrs: Vec::new() };

impl OwnAddrs {
    /// The set of these addresses.
    pub fn new(addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut addrs: Vec<IpAddr> = addrs.into_iter().map(canonical_ip).collect();
        addrs.sort_unstable();
        addrs.dedup();
        Self { addrs }
    }

    /// The empty set (for callers that judge without the machine's addresses, e.g. a policy
    /// evaluated for another host).
    pub fn none() -> &'static OwnAddrs {
        &NONE
    }

    /// Whether `ip`, in any spelling, is one of the addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        !self.addrs.is_empty() && self.addrs.binary_search(&canonical_ip(ip)).is_ok()
    }

    /// How many addresses the set holds.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The addresses, in their canonical spelling, sorted.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs.iter().copied()
    }
}

impl FromIterator<IpAddr> for OwnAddrs {
    fn from_iter<T: IntoIterator<Item = IpAddr>>(iter: T) -> Self {
        Self::new(iter)
    }
}
