//! `policy`: pattern parsing, policy building, [`Policy::evaluate_with`] and
//! [`Policy::check_addresses`] on arbitrary rules, requests and resolved addresses.
//!
//! The invariants are the policy's promises (docs/policy.md), with "local" judged by this
//! target's own oracle ([`must_be_local`]: std's address checks and the ranges the policy
//! documents, through every IPv6 spelling of an IPv4 address), not by the classifier under test:
//! - while local protection is on, a local or private target is never allowed: a literal one
//!   only by an explicit literal allow entry (never a wildcard), a name never when any of its
//!   addresses is local;
//! - a name with no address is never allowed;
//! - deny wins: what the deny list alone refuses (judged by a policy with the same deny list
//!   that allows everything), the full policy refuses too, for the target and for each of its
//!   addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proxy_core::{Host, Mode, Protocol, Reason, RequestMeta, Target, Verdict};
use proxy_policy::{Evaluation, Hook, Intercept, OwnAddrs, Pattern, Policy};

use crate::input::Input;

/// Address prefixes the addresses are drawn near, so the local ranges are met often.
const NEAR: &[[u8; 4]] = &[
    [127, 0, 0, 0],
    [10, 0, 0, 0],
    [172, 16, 0, 0],
    [192, 168, 0, 0],
    [169, 254, 0, 0],
    [100, 64, 0, 0],
    [0, 0, 0, 0],
    [224, 0, 0, 0],
    [255, 255, 255, 255],
    [93, 184, 216, 34],
];

/// One address: IPv4 near a prefix, any IPv4, any IPv6, or an IPv6 spelling of an IPv4
/// (mapped, compatible, translated), link-local or unique-local IPv6.
pub(crate) fn address(input: &mut Input<'_>) -> IpAddr {
    let v4 = |input: &mut Input<'_>| {
        let base = input.pick(NEAR);
        let tail = [input.byte(), input.byte()];
        Ipv4Addr::new(base[0], base[1], tail[0], tail[1])
    };
    match input.below(7) {
        0 => IpAddr::V4(v4(input)),
        1 => IpAddr::V4(Ipv4Addr::from(u32::from_be_bytes([
            input.byte(),
            input.byte(),
            input.byte(),
            input.byte(),
        ]))),
        2 => IpAddr::V6(v4(input).to_ipv6_mapped()),
        3 if input.bool() => IpAddr::V6(v4(input).to_ipv6_compatible()),
        3 => {
            let [a, b, c, d] = v4(input).octets();
            let hi = u16::from_be_bytes([a, b]);
            let lo = u16::from_be_bytes([c, d]);
            IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo))
        }
        4 => IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, input.u16())),
        5 => IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            input.u16(),
            0,
            0,
            0,
            0,
            0,
            input.u16(),
        )),
        _ => {
            let mut b = [0u8; 16];
            for x in &mut b {
                *x = input.byte();
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
    }
}

/// The pattern texts, each up to 40 bytes of the input.
fn patterns(input: &mut Input<'_>, max: usize) -> Vec<String> {
    (0..input.below(max + 1))
        .map(|_| input.string(40))
        .collect()
}

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let allow = patterns(&mut input, 5);
    let deny = patterns(&mut input, 3);
    for p in allow.iter().chain(&deny) {
        if let Ok(pattern) = Pattern::parse(p) {
            // A pattern's text parses again to the same pattern.
            let again = Pattern::parse(pattern.as_str()).unwrap_or_else(|e| {
                panic!("{:?} (from {p:?}) does not parse: {e}", pattern.as_str())
            });
            assert_eq!(again, pattern, "{p:?} does not round-trip");
        }
    }
    let local_binding = input.bool();
    let mode = if input.bool() {
        Mode::Limited
    } else {
        Mode::Full
    };
    let public: Vec<IpNet> = (0..input.below(3))
        .filter_map(|_| {
            let ip = address(&mut input);
            let len = input.byte();
            IpNet::new(ip, len).ok()
        })
        .collect();
    let own = OwnAddrs::new((0..input.below(3)).map(|_| address(&mut input)));
    // Sometimes one address has MITM hooks (interception on).
    let hooked = input.bool().then(|| address(&mut input));

    let mut builder = Policy::builder();
    builder.allow_local_binding(local_binding).mode(mode);
    if let Some(ip) = hooked {
        let hook = Hook::new("fuzz", &ip.to_string())
            .and_then(|h| h.methods(["GET"]))
            .and_then(|h| h.path_prefixes(["/"]))
            .unwrap_or_else(|e| panic!("a hook on {ip}: {e}"));
        builder.interception(true);
        if let Err(e) = builder.hook(hook) {
            panic!("a hook on {ip} refused: {e}");
        }
    }
    for net in &public {
        builder.treat_as_public(*net);
    }
    for p in &allow {
        if builder.allow(p, Some("fuzz")).is_err() {
            return;
        }
    }
    for p in &deny {
        if builder.deny(p, Some("fuzz")).is_err() {
            return;
        }
    }
    let Ok(policy) = builder.build() else {
        return;
    };
    // The same deny list in front of an allowlist that admits everything, local protection off.
    let mut deny_only = Policy::builder();
    deny_only.allow_local_binding(true);
    let reference = deny_only
        .allow("*", None)
        .and_then(|b| deny.iter().try_fold(b, |b, p| b.deny(p, None)))
        .and_then(|b| b.build())
        .unwrap_or_else(|e| panic!("the deny list built once, not twice: {e}"));

    let protocol = input.pick(&[
        Protocol::Http,
        Protocol::HttpsConnect,
        Protocol::Socks5Tcp,
        Protocol::Socks5Udp,
    ]);
    let host_text = input.string(60);
    let port = input.u16();
    let method = input.pick(&["GET", "POST", "HEAD", "OPTIONS", "DELETE", "get"]);
    let addrs: Vec<IpAddr> = (0..input.below(5)).map(|_| address(&mut input)).collect();
    let Ok(target) = Target::parse_authority(&host_text, port.max(1)) else {
        return;
    };
    let Some(host) = target.host().cloned() else {
        return;
    };
    let port = target.port();
    let mut meta = RequestMeta::new(protocol, target);
    if matches!(protocol, Protocol::Http) {
        meta = meta.with_method(method);
    }

    let evaluation = policy.evaluate_with(&meta, &own);
    let denied_alone = reference.evaluate(&meta).decision().reason == Some(Reason::Denied);
    if denied_alone {
        assert!(
            matches!(evaluation, Evaluation::Deny(_)),
            "{host}:{port} is denied by the deny list, yet {evaluation:?}"
        );
    }
    let local = |ip: IpAddr| {
        !local_binding && (own.contains(ip) || (must_be_local(ip) && !exempt(ip, &public)))
    };
    let local_literal = match host.policy_ip() {
        Some(ip) => local(ip) || policy.local_reason(ip, &own).is_some(),
        None => host
            .as_name()
            .is_some_and(|n| n == "localhost" || n.ends_with(".localhost")),
    };
    // A hooked host is never reached as an opaque tunnel (or by plain HTTP, or UDP).
    if let Evaluation::Allow { intercept, .. } | Evaluation::AllowIfAddressesPass { intercept, .. } =
        &evaluation
        && policy.is_hooked(&host)
    {
        assert_eq!(
            *intercept,
            Intercept::Always,
            "hooked {host} allowed without interception"
        );
    }
    match evaluation {
        Evaluation::Allow { decision, .. } => {
            assert_eq!(decision.verdict, Verdict::Allow);
            // A `localhost` name connects to loopback: it skips no hook there.
            if host
                .as_name()
                .is_some_and(|n| n == "localhost" || n.ends_with(".localhost"))
                && !policy.is_hooked(&host)
            {
                for ip in [Ipv4Addr::LOCALHOST.into(), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
                    assert!(
                        !policy.is_hooked(&Host::from_ip(ip)),
                        "{host} allowed though {ip} has hooks"
                    );
                }
            }
            if policy.protects_local() && local_literal {
                let rule = decision
                    .rule
                    .as_ref()
                    .unwrap_or_else(|| panic!("{host} allowed by no rule"));
                let pattern = Pattern::parse(&rule.pattern)
                    .unwrap_or_else(|e| panic!("the rule {:?} does not parse: {e}", rule.pattern));
                assert!(
                    !pattern.is_wildcard(),
                    "local {host} allowed by the wildcard {}",
                    rule.pattern
                );
            }
        }
        Evaluation::AllowIfAddressesPass { decision, .. } => {
            assert!(host.is_name(), "a literal {host} needs no address check");
            let done = policy.check_addresses(&host, decision, port, &addrs, &own);
            if done.verdict == Verdict::Allow {
                assert!(!addrs.is_empty(), "{host} allowed with no address");
                // A name without hooks never reaches an address with hooks.
                if !policy.is_hooked(&host) {
                    for ip in &addrs {
                        assert!(
                            !policy.is_hooked(&Host::from_ip(*ip)),
                            "{host} allowed though it resolved to the hooked {ip}"
                        );
                    }
                }
                if policy.protects_local() {
                    for ip in &addrs {
                        assert!(
                            !local(*ip) && policy.local_reason(*ip, &own).is_none(),
                            "{host} allowed though it resolved to the local {ip}"
                        );
                    }
                }
                let alone = reference.check_addresses(
                    &host,
                    proxy_core::Decision::allow(),
                    port,
                    &addrs,
                    OwnAddrs::none(),
                );
                assert_ne!(
                    alone.reason,
                    Some(Reason::Denied),
                    "{host} allowed though an address is denied: {addrs:?}"
                );
            }
        }
        Evaluation::Deny(decision) => {
            assert_eq!(decision.verdict, Verdict::Deny);
            assert!(decision.reason.is_some(), "a refusal without a reason");
        }
    }
}

/// The IPv4 addresses an address stands for: itself, or the IPv4 address an IPv6 address
/// carries (mapped, compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`).
fn as_v4(ip: IpAddr) -> Vec<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => vec![v4],
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let from = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            let mut out = Vec::new();
            if let Some(v4) = v6.to_ipv4() {
                out.push(v4);
            }
            // NAT64's well-known prefix, and the IPv4-translated ::ffff:0:0:0/96.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..6] == [0, 0, 0, 0, 0xffff, 0] {
                out.push(from(s[6], s[7]));
            }
            if s[0] == 0x2002 {
                out.push(from(s[1], s[2]));
            }
            out
        }
    }
}

/// Whether an address must count as local while local protection is on, by an oracle
/// independent of the classifier: loopback, private, link-local, unspecified, CGNAT
/// (`100.64.0.0/10`), broadcast, IPv6 unique-local and link-local, in any IPv6 spelling of an
/// IPv4 address. (The classifier refuses more: documentation, benchmarking, multicast and
/// reserved ranges; the oracle asks only for the core.)
pub fn must_be_local(ip: IpAddr) -> bool {
    let v6_local = match ip {
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
        }
        IpAddr::V4(_) => false,
    };
    v6_local
        || as_v4(ip).into_iter().any(|v4| {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        })
}

/// Whether `treat_as_public` exempts the address (in any of its spellings).
fn exempt(ip: IpAddr, public: &[IpNet]) -> bool {
    public
        .iter()
        .any(|n| n.contains(&ip) || as_v4(ip).into_iter().any(|v4| n.contains(&IpAddr::V4(v4))))
}
