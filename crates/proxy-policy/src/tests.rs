//! Policy semantics, table-driven through one `check(rules, request, expected)` helper.
//!
//! Rules: space-separated `allow=P,P`, `deny=P,P`, `mode=limited`, `local` (allow_local_binding),
//! `public=CIDR,CIDR`, `mitm` (interception available), `disabled`, `sock=/path`, `allsocks`,
//! `own=IP,IP` (the machine's own addresses, passed beside the policy), `hook=HOST,HOST` (a
//! hook admitting `GET /` on each host), `cred=HOST:PORT,HOST:PORT` (credential destinations).
//! Request: `PROTOCOL METHOD AUTHORITY [ADDR,ADDR]` (`-` for no method; the addresses are what
//! the name resolved to). Expected: `allow`, `resolve` (allowed if its addresses pass, no
//! addresses given; `resolve+intercept-if-tls` for a credential destination's tunnel),
//! `intercept`, `intercept-if-tls`, or a reason's wire name, optionally `@pattern` for the rule
//! that decided.

use core::net::IpAddr;
use std::path::PathBuf;

use proptest::prelude::*;
use proxy_core::{Mode, Protocol, Reason, RequestMeta, Target, Verdict};

use crate::{Evaluation, Intercept, OwnAddrs, Policy};

fn policy(rules: &str) -> Policy {
    let mut b = Policy::builder();
    for word in rules.split_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let list = || value.split(',').filter(|s| !s.is_empty());
        match key {
            "allow" => list().for_each(|p| {
                b.allow(p, Some("test")).unwrap();
            }),
            "deny" => list().for_each(|p| {
                b.deny(p, Some("test")).unwrap();
            }),
            "mode" => {
                b.mode(value.parse().unwrap());
            }
            "local" => {
                b.allow_local_binding(true);
            }
            "public" => list().for_each(|n| {
                b.treat_as_public(n.parse().unwrap());
            }),
            "mitm" => {
                b.interception(true);
            }
            "disabled" => {
                b.enabled(false);
            }
            "sock" => {
                b.allow_unix_socket(value, None).unwrap();
            }
            "allsocks" => {
                b.allow_all_unix_sockets(true);
            }
            "hook" => list().for_each(|h| {
                let hook = crate::Hook::new("h", h)
                    .unwrap()
                    .methods(["GET"])
                    .unwrap()
                    .path_prefixes(["/"])
                    .unwrap();
                b.hook(hook).unwrap();
            }),
            "cred" => list().for_each(|p| {
                b.credential_destination(p).unwrap();
            }),
            "own" => {}
            other => panic!("unknown rule word {other}"),
        }
    }
    b.build().unwrap()
}

fn own(rules: &str) -> OwnAddrs {
    rules
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("own="))
        .flat_map(|v| v.split(','))
        .map(|ip| ip.parse::<IpAddr>().unwrap())
        .collect()
}

fn port_of(meta: &RequestMeta) -> u16 {
    match &meta.target {
        Target::Net { port, .. } => *port,
        Target::Unix(_) => 0,
    }
}

fn request(text: &str) -> (RequestMeta, Option<Vec<IpAddr>>) {
    let mut parts = text.split_whitespace();
    let protocol: Protocol = parts.next().unwrap().parse().unwrap();
    let method = parts.next().unwrap();
    let authority = parts.next().unwrap();
    let target = match authority.strip_prefix("unix:") {
        Some(path) => Target::Unix(PathBuf::from(path)),
        None => Target::parse_authority(authority, protocol.default_port()).unwrap(),
    };
    let mut meta = RequestMeta::new(protocol, target);
    if method != "-" {
        meta = meta.with_method(method);
    }
    let addrs = parts
        .next()
        .map(|a| a.split(',').map(|s| s.parse().unwrap()).collect());
    (meta, addrs)
}

#[track_caller]
fn check(rules: &str, req: &str, expected: &str) {
    let policy = policy(rules);
    let own = own(rules);
    let (meta, addrs) = request(req);
    let (want, want_rule) = match expected.split_once('@') {
        Some((w, r)) => (w, Some(r)),
        None => (expected, None),
    };
    let eval = policy.evaluate_with(&meta, &own);
    let (got, decision) = match (&eval, addrs) {
        (Evaluation::AllowIfAddressesPass { decision, .. }, Some(addrs)) => {
            let Target::Net { host, .. } = &meta.target else {
                panic!("a pending allow for a unix socket")
            };
            let d = policy.check_addresses(host, decision.clone(), port_of(&meta), &addrs, &own);
            let name = d.reason.map_or("allow", Reason::as_str);
            (name.to_owned(), d)
        }
        (
            Evaluation::AllowIfAddressesPass {
                decision,
                intercept,
            },
            None,
        ) => (
            if *intercept == Intercept::IfTls {
                "resolve+intercept-if-tls"
            } else {
                "resolve"
            }
            .to_owned(),
            decision.clone(),
        ),
        (
            Evaluation::Allow {
                decision,
                intercept,
            },
            _,
        ) => (
            match intercept {
                Intercept::No => "allow",
                Intercept::Always => "intercept",
                Intercept::IfTls => "intercept-if-tls",
            }
            .to_owned(),
            decision.clone(),
        ),
        (Evaluation::Deny(d), _) => (d.reason.map_or("?", Reason::as_str).to_owned(), d.clone()),
    };
    assert_eq!(got, want, "rules [{rules}] request [{req}]: {decision:?}");
    if let Some(r) = want_rule {
        assert_eq!(
            decision.rule.as_ref().map(|r| &*r.pattern),
            Some(r),
            "rules [{rules}] request [{req}]"
        );
    }
    // Every refusal carries the reason's own source, every allow none.
    match decision.verdict {
        Verdict::Allow => assert!(decision.reason.is_none()),
        _ => assert_eq!(decision.source, decision.reason.unwrap().source()),
    }
}

#[test]
fn empty_allowlist_denies_everything() {
    check("", "http GET example.com", "not_allowed");
    check("", "https_connect CONNECT example.com:443", "not_allowed");
    check("", "http GET 127.0.0.1", "not_allowed_local");
    check("", "http GET 8.8.8.8", "not_allowed");
}

/// A name lookup (`run --isolate` records one per query) is never admitted, whatever the lists
/// and the mode say; deny and local protection keep their order before it.
#[test]
fn a_dns_query_is_never_admitted() {
    for rules in [
        "allow=*",
        "allow=*,a.test mode=limited mitm",
        "allow=a.test local",
    ] {
        let p = policy(rules);
        let meta = RequestMeta::new(
            Protocol::Dns,
            Target::parse_authority("a.test:53", 53).unwrap(),
        );
        let Evaluation::Deny(d) = p.evaluate(&meta) else {
            panic!("[{rules}] admitted a dns query");
        };
        assert_eq!(d.reason, Some(Reason::DnsNotServed), "[{rules}]");
        assert_eq!(d.source, Reason::DnsNotServed.source());
        assert!(p.guard(&meta).is_err());
    }
    let p = policy("allow=* deny=a.test");
    let meta = RequestMeta::new(
        Protocol::Dns,
        Target::parse_authority("a.test:53", 53).unwrap(),
    );
    assert!(matches!(p.evaluate(&meta), Evaluation::Deny(d) if d.reason == Some(Reason::Denied)));
}

#[test]
fn deny_wins() {
    check(
        "allow=example.com deny=example.com",
        "http GET example.com",
        "denied@example.com",
    );
    check(
        "allow=* deny=evil.com",
        "http GET evil.com",
        "denied@evil.com",
    );
    check("allow=* deny=evil.com", "http GET good.com", "resolve@*");
    check(
        "allow=127.0.0.1 deny=127.0.0.1",
        "http GET 127.0.0.1",
        "denied",
    );
    check(
        "allow=**.example.com deny=*.example.com",
        "http GET a.example.com",
        "denied@*.example.com",
    );
    check(
        "allow=**.example.com deny=*.example.com",
        "http GET example.com",
        "resolve@**.example.com",
    );
    check(
        "local allow=10.0.0.1 deny=10.0.0.1",
        "http GET 10.0.0.1",
        "denied",
    );
    check(
        "mode=limited allow=x.com deny=x.com",
        "http POST x.com",
        "denied",
    );
    // A deny pattern for an IPv4 address matches every spelling of it.
    for spelling in [
        "8.8.8.8",
        "0x8.8.8.8",
        "134744072",
        "[::ffff:8.8.8.8]",
        "[::8.8.8.8]",
        "010.010.010.010",
    ] {
        check(
            "allow=* deny=8.8.8.8",
            &format!("http GET {spelling}"),
            "denied@8.8.8.8",
        );
    }
}

#[test]
fn wildcard_patterns() {
    check("allow=*.openai.com", "http GET api.openai.com", "resolve");
    check("allow=*.openai.com", "http GET a.b.openai.com", "resolve");
    check("allow=*.openai.com", "http GET openai.com", "not_allowed");
    check(
        "allow=*.openai.com",
        "http GET evilopenai.com",
        "not_allowed",
    );
    check("allow=**.openai.com", "http GET openai.com", "resolve");
    check("allow=**.openai.com", "http GET api.openai.com", "resolve");
    check(
        "allow=**.openai.com",
        "http GET evilopenai.com",
        "not_allowed",
    );
    check(
        "allow=*.Example.COM.",
        "http GET API.example.com.",
        "resolve",
    );
    check("allow=Example.COM.", "http GET example.com", "resolve");
    check(
        "allow=Example.COM.",
        "http GET api.example.com",
        "not_allowed",
    );
    check(
        "allow=region*.v2.argotunnel.com",
        "http GET region1.v2.argotunnel.com",
        "resolve",
    );
    check(
        "allow=region*.v2.argotunnel.com",
        "http GET region.v2.argotunnel.com",
        "resolve",
    );
    check(
        "allow=region*.v2.argotunnel.com",
        "http GET xregion1.v2.argotunnel.com",
        "not_allowed",
    );
    check(
        "allow=region*.v2.argotunnel.com",
        "http GET foo.region1.v2.argotunnel.com",
        "not_allowed",
    );
    check(
        "allow=region*.v2.argotunnel.com",
        "http GET region1.x.v2.argotunnel.com",
        "not_allowed",
    );
    check(
        "allow=*.region*.example.com",
        "http GET a.region1.example.com",
        "resolve",
    );
    check(
        "allow=*.region*.example.com",
        "http GET region1.example.com",
        "not_allowed",
    );
    check(
        "allow=**.region*.example.com",
        "http GET region1.example.com",
        "resolve",
    );
    check(
        "allow=a*b.example.com",
        "http GET A1B.example.com",
        "resolve",
    );
    check(
        "allow=bücher.example",
        "http GET xn--bcher-kva.example",
        "resolve",
    );
    check("allow=*", "http GET anything.example", "resolve@*");
    check("allow=[*]", "http GET anything.example", "resolve");
}

#[test]
fn port_scopes() {
    check(
        "allow=example.com:8443",
        "https_connect CONNECT example.com:8443",
        "resolve",
    );
    check(
        "allow=example.com:8443",
        "https_connect CONNECT example.com:443",
        "not_allowed",
    );
    check(
        "allow=localhost:3000-3999",
        "http GET localhost:3000",
        "allow",
    );
    check(
        "allow=localhost:3000-3999",
        "http GET localhost:3999",
        "allow",
    );
    check(
        "allow=localhost:3000-3999",
        "http GET localhost:4000",
        "not_allowed_local",
    );
    check("allow=[::1]:8080", "http GET [::1]:8080", "allow");
    check(
        "allow=[::1]:8080",
        "http GET [::1]:8081",
        "not_allowed_local",
    );
    check(
        "allow=* deny=example.com:25",
        "http GET example.com:25",
        "denied",
    );
    check(
        "allow=* deny=example.com:25",
        "http GET example.com:80",
        "resolve",
    );
    check(
        "allow=*.example.com:443",
        "https_connect CONNECT a.example.com:443",
        "resolve",
    );
    check(
        "allow=*.example.com:443",
        "https_connect CONNECT a.example.com:22",
        "not_allowed",
    );
}

#[test]
fn local_literals_need_an_explicit_literal() {
    for host in [
        "127.0.0.1",
        "127.1",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "2130706433",
        "0x7f000001",
        "127.0.0.1.",
        "[::1]",
        "::1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
        "localhost",
        "LOCALHOST.",
        "foo.localhost",
        "0.0.0.0",
        "0",
        "10.0.0.1",
        "10.1",
        "192.168.1.1",
        "172.16.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "[fe80::1%25lo0]",
        "[fc00::1]",
        "[64:ff9b::127.0.0.1]",
        "[::ffff:0:127.0.0.1]",
        "[::ffff:0:a9fe:a9fe]",
        "[2002:7f00:1::1]",
        "198.18.0.1",
        "224.0.0.1",
        "255.255.255.255",
    ] {
        check("allow=*", &format!("http GET {host}"), "not_allowed_local");
        check(
            "allow=*.com,**.localhost",
            &format!("http GET {host}"),
            "not_allowed_local",
        );
        check(
            "",
            &format!("https_connect CONNECT {host}"),
            "not_allowed_local",
        );
        // Local binding turns local protection off as a whole (docs/policy.md): the
        // allowlist judges a local literal like any other target, and deny still wins.
        check("allow=* local", &format!("http GET {host}"), "allow@*");
        check(
            "allow=*.com local",
            &format!("http GET {host}"),
            "not_allowed",
        );
    }
    check("allow=localhost", "http GET localhost", "allow@localhost");
    check("allow=localhost", "http GET LOCALHOST.", "allow");
    check("allow=localhost", "http GET 127.0.0.1", "not_allowed_local");
    check("allow=127.0.0.1", "http GET 127.1", "allow@127.0.0.1");
    check("allow=127.0.0.1", "http GET [::ffff:127.0.0.1]", "allow");
    check("allow=127.0.0.1", "http GET [::127.0.0.1]", "allow");
    check("allow=127.0.0.1", "http GET 127.0.0.2", "not_allowed_local");
    check("allow=::ffff:127.0.0.1", "http GET 127.0.0.1", "allow");
    check("allow=10.0.0.1", "http GET 10.0.0.1", "allow");
    check("allow=fe80::1", "http GET [fe80::1%25lo0]", "allow");
    check("allow=fe80::1%eth0", "http GET [fe80::1%25eth0]", "allow");
    check(
        "allow=fe80::1%eth0",
        "http GET [fe80::1%25eth1]",
        "not_allowed_local",
    );
    check(
        "local allow=fe80::1%eth0",
        "http GET [fe80::1%25eth1]",
        "not_allowed",
    );
    check("allow=fe80::1", "http GET fe80::2", "not_allowed_local");
}

#[test]
fn scoped_ipv6_deny_entries() {
    for host in [
        "fd00::1",
        "[fd00::1]",
        "fd00::1%eth0",
        "[fd00::1%25eth0]",
        "[fd00::1%eth0]",
    ] {
        check(
            "local allow=* deny=fd00::1",
            &format!("http GET {host}"),
            "denied",
        );
    }
    check(
        "local allow=* deny=fd00::1%eth0",
        "http GET [fd00::1%25eth0]",
        "denied",
    );
    // A deny entry's zone does not narrow it (the reference keeps `%eth1` allowed here): netproxy
    // dials the address without its zone, so `%eth1`, or no zone, reaches what the entry denies.
    for host in ["[fd00::1%25eth1]", "[fd00::1]", "fd00::1"] {
        check(
            "local allow=fd00::1 deny=fd00::1%eth0",
            &format!("http GET {host}"),
            "denied",
        );
    }
    check(
        "local allow=127.0.0.1 deny=[::127.0.0.1%eth0]",
        "http GET [::127.0.0.1]",
        "denied",
    );
    // Allow entries keep their zone: they only narrow.
    check(
        "local allow=fd00::1%eth0",
        "http GET [fd00::1%25eth1]",
        "not_allowed",
    );
}

#[test]
fn treat_as_public_exempts_ranges() {
    check(
        "allow=* public=198.18.0.0/15",
        "http GET 198.18.0.5",
        "allow",
    );
    check(
        "allow=* public=198.18.0.0/15",
        "http GET 198.20.0.5",
        "allow",
    );
    check(
        "allow=* public=198.18.0.0/15",
        "http GET 10.0.0.1",
        "not_allowed_local",
    );
    check(
        "allow=*.test public=127.0.0.0/8",
        "http GET a.test 127.0.0.1",
        "allow",
    );
    check(
        "allow=*.test public=127.0.0.0/8",
        "http GET a.test 127.0.0.1,::1",
        "not_allowed_local",
    );
    check("allow=* public=::1/128", "http GET [::1]", "allow");
}

#[test]
fn resolved_addresses_must_all_pass() {
    check(
        "allow=example.com",
        "http GET example.com 93.184.216.34",
        "allow",
    );
    check(
        "allow=example.com",
        "http GET example.com 93.184.216.34,10.0.0.1",
        "not_allowed_local",
    );
    check(
        "allow=example.com",
        "http GET example.com 127.0.0.1",
        "not_allowed_local",
    );
    check(
        "allow=example.com",
        "http GET example.com ::ffff:127.0.0.1",
        "not_allowed_local",
    );
    check(
        "allow=example.com",
        "http GET example.com 64:ff9b::a00:1",
        "not_allowed_local",
    );
    check(
        "allow=example.com",
        "http GET example.com 2606:4700::1",
        "allow",
    );
    // Local binding: a name's resolved addresses are judged by the deny list only.
    check("allow=example.com local", "http GET example.com", "resolve");
    check(
        "allow=example.com local",
        "http GET example.com 127.0.0.1,10.0.0.1",
        "allow",
    );
    check(
        "allow=*.test local",
        "http GET a.test 169.254.169.254",
        "allow",
    );
    // An explicitly allowlisted name that resolves locally is still refused.
    check(
        "allow=internal.example",
        "http GET internal.example 192.168.0.10",
        "not_allowed_local",
    );
    for rules in ["allow=example.com", "allow=example.com local"] {
        let p = policy(rules);
        let host = proxy_core::Host::parse("example.com").unwrap();
        let d = p.check_addresses(
            &host,
            proxy_core::Decision::allow(),
            80,
            &[],
            OwnAddrs::none(),
        );
        assert_eq!(d.reason, Some(Reason::NotAllowedLocal), "{rules}");
    }
}

#[test]
fn limited_mode() {
    check("mode=limited allow=x.com", "http GET x.com", "resolve");
    check("mode=limited allow=x.com", "http HEAD x.com", "resolve");
    check("mode=limited allow=x.com", "http OPTIONS x.com", "resolve");
    check(
        "mode=limited allow=x.com",
        "http POST x.com",
        "method_not_allowed",
    );
    check(
        "mode=limited allow=x.com",
        "http get x.com",
        "method_not_allowed",
    );
    check(
        "mode=limited allow=x.com",
        "http - x.com",
        "method_not_allowed",
    );
    check(
        "mode=limited allow=x.com",
        "http CONNECT x.com",
        "method_not_allowed",
    );
    check(
        "mode=limited allow=x.com",
        "https_connect CONNECT x.com:443",
        "mitm_required",
    );
    check(
        "mode=limited allow=x.com",
        "https_connect CONNECT x.com:8443",
        "mitm_required",
    );
    check(
        "mode=limited allow=x.com",
        "socks5_tcp - x.com:443",
        "mitm_required",
    );
    check(
        "mode=limited allow=x.com",
        "socks5_tcp - x.com:22",
        "method_not_allowed",
    );
    check(
        "mode=limited allow=x.com",
        "socks5_udp - x.com:53",
        "method_not_allowed",
    );
    check(
        "mode=limited allow=x.com mitm",
        "https_connect CONNECT x.com:443",
        "resolve",
    );
    check(
        "mode=limited allow=1.2.3.4 mitm",
        "https_connect CONNECT 1.2.3.4:443",
        "intercept",
    );
    // Limited mode comes after deny, local and allowlist.
    check("mode=limited", "http POST x.com", "not_allowed");
    check(
        "mode=limited allow=x.com deny=x.com",
        "https_connect CONNECT x.com:443",
        "denied",
    );
    check(
        "mode=limited allow=*",
        "http POST 127.0.0.1",
        "not_allowed_local",
    );
    check("mode=full allow=x.com", "http DELETE x.com", "resolve");
}

/// A method-override header asks the origin for another method: limited mode judges it too.
#[test]
fn limited_mode_judges_a_method_override() {
    let policy = policy("mode=limited allow=1.2.3.4");
    let get = |over: Option<&str>| {
        let mut m = RequestMeta::new(
            Protocol::Http,
            Target::parse_authority("1.2.3.4:80", 80).unwrap(),
        )
        .with_method("GET");
        m.method_override = over.map(str::to_owned);
        policy.evaluate(&m).decision().reason
    };
    assert_eq!(get(None), None);
    assert_eq!(get(Some("HEAD")), None);
    assert_eq!(get(Some("DELETE")), Some(Reason::MethodNotAllowed));
    assert_eq!(get(Some("?")), Some(Reason::MethodNotAllowed));
    // Full mode allows any method, overridden or not.
    let m = RequestMeta::new(
        Protocol::Http,
        Target::parse_authority("1.2.3.4:80", 80).unwrap(),
    )
    .with_method("GET")
    .with_method_override("DELETE");
    assert_eq!(
        super::tests::policy("allow=1.2.3.4")
            .evaluate(&m)
            .decision()
            .reason,
        None
    );
}

/// A hook on an IP literal covers the address on any zone and in every spelling a deny entry
/// covers (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo): none may skip the hook as an
/// opaque tunnel.
#[test]
fn a_hook_on_an_address_covers_its_other_spellings() {
    for (hook, target) in [
        ("fd00::1", "[fd00::1%25eth0]:443"),
        ("fd00::1%eth0", "[fd00::1]:443"),
        ("1.2.3.4", "[::1.2.3.4]:443"),
        ("1.2.3.4", "[::1.2.3.4%25x]:443"),
        ("1.2.3.4", "[::ffff:1.2.3.4]:443"),
        ("1.2.3.4", "[64:ff9b::1.2.3.4]:443"),
        ("1.2.3.4", "[::ffff:0:1.2.3.4]:443"),
        ("64:ff9b::1.2.3.4", "1.2.3.4:443"),
        ("1.2.3.4", "[2002:102:304::1]:443"),
        ("1.2.3.4", "[2001:0:102:304::fefd:fcfb]:443"),
    ] {
        check(
            &format!("local allow=* mitm hook={hook}"),
            &format!("https_connect CONNECT {target}"),
            "intercept",
        );
    }
}

/// A name that resolves to a hooked address is refused unless the name has hooks of its own:
/// it would reach the address as an opaque tunnel (or, intercepted, judged by nobody's hooks).
#[test]
fn a_name_resolving_to_a_hooked_address_needs_hooks_of_its_own() {
    for req in [
        "https_connect CONNECT alias.test:443 93.184.216.34",
        "https_connect CONNECT alias.test:443 1.1.1.1,93.184.216.34",
        "https_connect CONNECT alias.test:443 64:ff9b::93.184.216.34",
        "socks5_tcp CONNECT alias.test:443 93.184.216.34",
        "http GET alias.test 93.184.216.34",
    ] {
        for mode in ["", "mode=limited"] {
            check(
                &format!("allow=* mitm {mode} hook=93.184.216.34"),
                req,
                "mitm_hook_denied",
            );
        }
    }
    check(
        "allow=* mitm hook=93.184.216.34",
        "https_connect CONNECT alias.test:443 1.1.1.1",
        "allow",
    );
    // Hooked itself, the name is intercepted and judged by its own hooks.
    check(
        "allow=* mitm hook=93.184.216.34,alias.test",
        "https_connect CONNECT alias.test:443 93.184.216.34",
        "allow",
    );
}

/// `localhost` connects to loopback without a lookup: a hook on 127.0.0.1 or ::1 holds for it
/// as for a name resolving there.
#[test]
fn a_localhost_name_cannot_skip_a_hook_on_loopback() {
    for host in ["localhost:8443", "x.localhost:8443"] {
        for rules in [
            "local allow=* mitm hook=127.0.0.1",
            "local allow=* mitm hook=::1",
            "allow=localhost,x.localhost mitm hook=::1",
        ] {
            check(
                rules,
                &format!("https_connect CONNECT {host}"),
                "mitm_hook_denied",
            );
            check(
                rules,
                &format!("socks5_tcp CONNECT {host}"),
                "mitm_hook_denied",
            );
        }
    }
    check(
        "local allow=* mitm hook=127.0.0.1,localhost",
        "https_connect CONNECT localhost:8443",
        "intercept",
    );
}

/// A connection to the unspecified address reaches loopback (Linux): a deny entry or a hook
/// for 127.0.0.1 or ::1 holds for 0.0.0.0 and `::`, literal or resolved, with local binding on.
#[test]
fn the_unspecified_address_is_judged_as_the_loopback_it_reaches() {
    for (deny, target) in [
        ("127.0.0.1", "0.0.0.0"),
        ("127.0.0.1", "0"),
        ("127.0.0.1", "[::ffff:0.0.0.0]"),
        ("::1", "[::]"),
    ] {
        check(
            &format!("local allow=* deny={deny}"),
            &format!("http GET {target}"),
            "denied",
        );
    }
    check(
        "local allow=* deny=127.0.0.1",
        "http GET a.test 0.0.0.0",
        "denied",
    );
    check("local allow=* deny=::1", "http GET a.test ::", "denied");
    check(
        "local allow=* mitm hook=127.0.0.1",
        "https_connect CONNECT 0.0.0.0:8443",
        "intercept",
    );
    check(
        "local allow=* mitm hook=127.0.0.1",
        "https_connect CONNECT a.test:8443 0.0.0.0",
        "mitm_hook_denied",
    );
    // One way only: an entry for the unspecified address does not cover loopback, and NAT64 or
    // translated spellings of 0.0.0.0 (which leave through a translator) are not loopback.
    for target in ["127.0.0.1", "localhost", "[::1]"] {
        check(
            "local allow=* deny=0.0.0.0,::",
            &format!("http GET {target}"),
            "allow",
        );
    }
    check(
        "local allow=* mitm hook=0.0.0.0",
        "https_connect CONNECT localhost:8443",
        "allow",
    );
    for target in ["[64:ff9b::]:443", "[::ffff:0:0:0]:443"] {
        check(
            "local allow=* mitm hook=127.0.0.1",
            &format!("https_connect CONNECT {target}"),
            "allow",
        );
    }
}

/// A hook on `localhost` holds for every spelling of the loopback service: the other names
/// are refused, the addresses intercepted.
#[test]
fn a_hook_on_localhost_covers_the_loopback_addresses() {
    for target in [
        "127.0.0.1:8443",
        "[::1]:8443",
        "0.0.0.0:8443",
        "localhost:8443",
    ] {
        check(
            "local allow=* mitm hook=localhost",
            &format!("https_connect CONNECT {target}"),
            "intercept",
        );
    }
    check(
        "local allow=* mitm hook=localhost",
        "https_connect CONNECT x.localhost:8443",
        "mitm_hook_denied",
    );
    // A `*.localhost` name is hooked alone.
    for target in ["127.0.0.1:8443", "localhost:8443", "b.localhost:8443"] {
        check(
            "local allow=* mitm hook=a.localhost",
            &format!("https_connect CONNECT {target}"),
            "allow",
        );
    }
}

#[test]
fn a_hooked_host_is_reached_only_through_interception_in_any_mode() {
    // Full mode: tunnels to it are intercepted, at any CONNECT port, and SOCKS to 443.
    check(
        "allow=* mitm hook=1.2.3.4",
        "https_connect CONNECT 1.2.3.4:443",
        "intercept",
    );
    check(
        "allow=* mitm hook=1.2.3.4",
        "https_connect CONNECT 1.2.3.4:8443",
        "intercept",
    );
    check(
        "allow=* mitm hook=1.2.3.4",
        "socks5_tcp - 1.2.3.4:443",
        "intercept",
    );
    check(
        "allow=* mitm hook=1.2.3.4",
        "https_connect CONNECT 1.2.3.5:443",
        "allow",
    );
    // What cannot be intercepted is refused, before any lookup of a name.
    check(
        "allow=* mitm hook=1.2.3.4",
        "socks5_tcp - 1.2.3.4:80",
        "mitm_required",
    );
    check(
        "allow=* mitm hook=x.com",
        "socks5_tcp - x.com:22",
        "mitm_required",
    );
    check(
        "allow=* mitm hook=x.com",
        "socks5_udp - x.com:443",
        "mitm_required",
    );
    check(
        "allow=* mitm hook=x.com",
        "socks5_udp - x.com:8443",
        "mitm_required",
    );
    check("allow=* mitm hook=x.com", "http GET x.com", "mitm_required");
    check(
        "allow=* mitm hook=x.com",
        "http GET x.com:443",
        "mitm_required",
    );
    check(
        "allow=* mitm hook=x.com",
        "https_connect CONNECT x.com:443",
        "resolve",
    );
    check("allow=* mitm hook=x.com", "http GET y.com", "resolve");
    // Without interception a hooked host is never an opaque tunnel.
    check(
        "allow=* hook=1.2.3.4",
        "https_connect CONNECT 1.2.3.4:443",
        "mitm_required",
    );
    check(
        "allow=* hook=1.2.3.4",
        "socks5_tcp - 1.2.3.4:443",
        "mitm_required",
    );
    // Deny, local and the allowlist come first.
    check(
        "allow=y.com mitm hook=x.com",
        "https_connect CONNECT x.com:443",
        "not_allowed",
    );
    check(
        "allow=* deny=x.com mitm hook=x.com",
        "http GET x.com",
        "denied",
    );
    // Limited mode intercepts it too, and refuses its plain HTTP all the same.
    check(
        "mode=limited allow=* mitm hook=1.2.3.4",
        "socks5_tcp - 1.2.3.4:443",
        "intercept",
    );
    check(
        "mode=limited allow=* mitm hook=x.com",
        "http GET x.com",
        "mitm_required",
    );
}

/// A tunnel to a credential destination is intercepted if TLS, in any mode, when nothing
/// intercepts it always; limited mode and hooks keep `intercept` (fail closed).
#[test]
fn a_credential_destination_is_intercepted_if_tls() {
    let cred = "allow=* mitm cred=1.2.3.4:443,x.com:443,*.ghe.com:443";
    check(
        cred,
        "https_connect CONNECT 1.2.3.4:443",
        "intercept-if-tls@*",
    );
    check(cred, "socks5_tcp - 1.2.3.4:443", "intercept-if-tls");
    check(
        cred,
        "https_connect CONNECT x.com:443",
        "resolve+intercept-if-tls",
    );
    check(
        cred,
        "https_connect CONNECT a.ghe.com:443",
        "resolve+intercept-if-tls",
    );
    // The port is part of the destination; the apex is not a subdomain.
    check(cred, "https_connect CONNECT 1.2.3.4:22", "allow");
    check(cred, "https_connect CONNECT x.com:22", "resolve");
    check(cred, "https_connect CONNECT ghe.com:443", "resolve");
    // Plain HTTP and UDP are left as they are.
    check(cred, "http GET 1.2.3.4:443", "allow");
    check(cred, "socks5_udp - 1.2.3.4:443", "allow");
    // Without interception, an opaque tunnel (only a worthless dummy can pass through it).
    check(
        "allow=* cred=1.2.3.4:443",
        "https_connect CONNECT 1.2.3.4:443",
        "allow",
    );
    // It admits nothing by itself: deny and the allowlist come first.
    check(
        "allow=y.com mitm cred=x.com:443",
        "https_connect CONNECT x.com:443",
        "not_allowed",
    );
    check(
        "allow=* deny=x.com mitm cred=x.com:443",
        "https_connect CONNECT x.com:443",
        "denied",
    );
    // Limited mode and hooks intercept it always.
    check(
        "mode=limited allow=* mitm cred=1.2.3.4:443",
        "https_connect CONNECT 1.2.3.4:443",
        "intercept",
    );
    check(
        "allow=* mitm hook=1.2.3.4 cred=1.2.3.4:443",
        "socks5_tcp - 1.2.3.4:443",
        "intercept",
    );
    // The decider's path applies the same guard.
    let p = policy("mitm cred=1.2.3.4:443");
    let (meta, _) = request("https_connect CONNECT 1.2.3.4:443");
    assert_eq!(p.guard(&meta), Ok(Intercept::IfTls));
    let (meta, _) = request("socks5_tcp - 1.2.3.5:443");
    assert_eq!(p.guard(&meta), Ok(Intercept::No));
}

#[test]
fn a_credential_destination_needs_a_port() {
    let mut b = Policy::builder();
    let err = b.credential_destination("api.github.com").unwrap_err();
    assert!(err.to_string().contains("needs a port"), "{err}");
    assert!(b.credential_destination("*").is_err());
    assert!(b.credential_destination("*.ghe.com:443").is_ok());
}

#[test]
fn disabled_proxy_refuses_everything() {
    check("disabled allow=*", "http GET x.com", "proxy_disabled");
    check(
        "disabled allow=*",
        "socks5_udp - 1.2.3.4:53",
        "proxy_disabled",
    );
}

#[test]
fn unix_sockets() {
    check(
        "sock=/run/docker.sock",
        "http GET unix:/run/docker.sock",
        "allow@/run/docker.sock",
    );
    check(
        "sock=/run/docker.sock",
        "http GET unix:/run/other.sock",
        "not_allowed",
    );
    check("allsocks", "http GET unix:/any/path.sock", "allow");
    check("allsocks", "http GET unix:relative.sock", "not_allowed");
    check(
        "allsocks mode=limited",
        "http POST unix:/a.sock",
        "method_not_allowed",
    );
    assert!(
        Policy::builder()
            .allow_unix_socket("relative", None)
            .is_err()
    );
}

#[test]
fn invalid_patterns_are_errors_that_name_them() {
    for (pattern, why) in [
        ("", "empty"),
        ("exa mple.com", "forbidden character"),
        ("example.com:0", "invalid port"),
        ("example.com:99999", "invalid port"),
        ("example.com:20-10", "empty port range"),
        ("*:80", "no port scope"),
        ("*.1.2.3.4", "needs a domain name"),
        ("[::1", "unclosed"),
        ("[::1]x", "after `]`"),
        ("a..b", "empty label"),
        ("ex?mple.com", "forbidden character"),
        ("region*", "fixed label"),
        ("a.b*", "last label"),
        ("a**b.example.com", "`**`"),
        ("foo.bar.256", "IPv4"),
        ("[example.com]", "IPv6"),
    ] {
        let err = crate::Pattern::parse(pattern).unwrap_err();
        assert_eq!(err.pattern(), pattern.trim());
        assert!(err.to_string().contains(why), "{pattern:?}: {err}");
    }
    let err = Policy::builder().deny("*", None).unwrap_err();
    assert!(err.to_string().contains("global wildcard"), "{err}");
    assert!(Policy::builder().deny("[*]", None).is_err());
    assert!(Policy::builder().deny("**.[*]", None).is_err());
}

#[test]
fn a_url_or_a_path_as_a_pattern_names_the_host_it_meant() {
    for (pattern, why) in [
        (
            "https://github.com/x",
            "a pattern is a host: did you mean github.com?",
        ),
        (
            "https://github.com",
            "a pattern is a host: did you mean github.com?",
        ),
        (
            "http://GitHub.com/",
            "a pattern is a host: did you mean GitHub.com?",
        ),
        (
            "github.com/org/repo",
            "a pattern is a host: did you mean github.com?",
        ),
        (
            "https://user:secret@api.example.com:8443/v1?q=1#top",
            "a pattern is a host: did you mean api.example.com:8443?",
        ),
        (
            "wss://[::1]:9000/socket",
            "a pattern is a host: did you mean [::1]:9000?",
        ),
        (
            "http://*.example.com/",
            "a pattern is a host: did you mean *.example.com?",
        ),
        ("https://", "not a URL or a path"),
        ("https://exa mple.com/", "not a URL or a path"),
        ("/var/run/docker.sock", "not a URL or a path"),
    ] {
        let err = crate::Pattern::parse(pattern).unwrap_err();
        assert_eq!(err.pattern(), pattern);
        assert!(err.why().contains(why), "{pattern:?}: {err}");
        assert!(
            !err.why().contains("secret"),
            "{pattern:?}: a password stays out of the message: {err}"
        );
    }
    // The builder refuses the same, in allow and deny lists.
    let err = Policy::builder()
        .allow("https://github.com/x", None)
        .unwrap_err();
    assert!(
        err.to_string().contains("did you mean github.com?"),
        "{err}"
    );
    // Ordinary patterns are untouched.
    for ok in [
        "github.com",
        "github.com:443",
        "*.github.com",
        "[::1]:80",
        "fd00::1",
    ] {
        assert!(crate::Pattern::parse(ok).is_ok(), "{ok}");
    }
}

#[test]
fn decisions_explain_themselves() {
    let mut b = Policy::builder();
    b.allow("*.example.com", Some("/etc/netproxy/config.toml"))
        .unwrap();
    let p = b.build().unwrap();
    let (meta, _) = request("https_connect CONNECT api.example.com:443");
    let d = p.evaluate(&meta).decision().clone();
    let rule = d.rule.unwrap();
    assert_eq!(&*rule.pattern, "*.example.com");
    assert_eq!(rule.origin.as_deref(), Some("/etc/netproxy/config.toml"));
    let (meta, _) = request("http GET 127.0.0.1");
    let d = p.evaluate(&meta).decision().clone();
    assert!(d.detail.unwrap().contains("loopback"));
}

fn any_local_spelling() -> impl Strategy<Value = String> {
    let local_v4 = prop_oneof![
        (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(b, c, d)| [127, b, c, d]),
        (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(b, c, d)| [10, b, c, d]),
        (any::<u8>(), any::<u8>()).prop_map(|(c, d)| [192, 168, c, d]),
        (any::<u8>(), any::<u8>()).prop_map(|(c, d)| [169, 254, c, d]),
        (16u8..32, any::<u8>(), any::<u8>()).prop_map(|(b, c, d)| [172, b, c, d]),
        (64u8..128, any::<u8>(), any::<u8>()).prop_map(|(b, c, d)| [100, b, c, d]),
        (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(b, c, d)| [0, b, c, d]),
    ];
    (local_v4, 0u8..9).prop_map(|([a, b, c, d], style)| {
        let bits = u32::from_be_bytes([a, b, c, d]);
        match style {
            0 => format!("{a}.{b}.{c}.{d}"),
            1 => format!("{bits}"),
            2 => format!("0x{bits:x}"),
            3 => format!("0{bits:o}"),
            4 => format!("{a}.{}", bits & 0xff_ffff),
            5 => format!("0x{a:x}.{b}.0{c:o}.{d}."),
            6 => format!("[::ffff:{a}.{b}.{c}.{d}]"),
            7 => format!("[::ffff:{:x}:{:x}]", bits >> 16, bits & 0xffff),
            _ => format!("[64:ff9b::{a}.{b}.{c}.{d}]"),
        }
    })
}

proptest! {
    #[test]
    fn deny_wins_whatever_else_the_policy_holds(
        host in "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}",
        extra in proptest::collection::vec("(\\*\\.|\\*\\*\\.)?[a-z]{1,8}(\\.[a-z]{1,8}){0,2}", 0..6),
        limited: bool, local: bool, star: bool,
    ) {
        let mut b = Policy::builder();
        for p in &extra { b.allow(p, None).unwrap(); }
        if star { b.allow("*", None).unwrap(); }
        b.allow(&host, None).unwrap();
        b.allow(&format!("**.{host}"), None).unwrap();
        b.deny(&host, None).unwrap();
        b.mode(if limited { Mode::Limited } else { Mode::Full }).allow_local_binding(local);
        let p = b.build().unwrap();
        for protocol in Protocol::ALL {
            let meta = RequestMeta::new(protocol, Target::parse_authority(&host, 443).unwrap()).with_method("GET");
            let eval = p.evaluate(&meta);
            prop_assert_eq!(eval.decision().reason, Some(Reason::Denied));
        }
    }

    #[test]
    fn no_spelling_of_a_local_address_is_allowed_without_an_explicit_literal(
        spelling in any_local_spelling(),
        wildcards in proptest::collection::vec(prop_oneof![
            Just("*".to_owned()),
            Just("*.example.com".to_owned()),
            Just("**.localhost".to_owned()),
            Just("region*.example.com".to_owned()),
            Just("8.8.8.8".to_owned()),
            Just("localhost".to_owned()),
        ], 0..4),
        port in 1u16..,
    ) {
        let mut b = Policy::builder();
        for w in &wildcards { b.allow(w, None).unwrap(); }
        let p = b.build().unwrap();
        for protocol in Protocol::ALL {
            let meta = RequestMeta::new(protocol, Target::parse_authority(&spelling, port).unwrap())
                .with_method("GET");
            let eval = p.evaluate(&meta);
            prop_assert_eq!(eval.decision().reason, Some(Reason::NotAllowedLocal), "{}", spelling);
        }
    }

    /// With `allow_local_binding`, local protection is off as a whole: every spelling of a
    /// local address is judged by the allowlist (`*` admits it), and a deny entry for the
    /// address still wins over every spelling.
    #[test]
    fn local_binding_judges_every_local_spelling_by_the_lists(
        spelling in any_local_spelling(),
        patterns in proptest::collection::vec(prop_oneof![
            Just("*".to_owned()),
            Just("*.example.com".to_owned()),
            Just("**.localhost".to_owned()),
            Just("8.8.8.8".to_owned()),
            Just("localhost".to_owned()),
        ], 0..4),
        deny: bool,
        port in 1u16..,
    ) {
        let ip = proxy_core::Host::parse(&spelling).unwrap().policy_ip().unwrap();
        let mut b = Policy::builder();
        for w in &patterns { b.allow(w, None).unwrap(); }
        if deny { b.deny(&ip.to_string(), None).unwrap(); }
        b.allow_local_binding(true);
        let p = b.build().unwrap();
        let meta = RequestMeta::new(Protocol::Http, Target::parse_authority(&spelling, port).unwrap())
            .with_method("GET");
        let want = if deny {
            Some(Reason::Denied)
        } else if patterns.iter().any(|w| w == "*") {
            None
        } else {
            Some(Reason::NotAllowed)
        };
        prop_assert_eq!(p.evaluate(&meta).decision().reason, want, "{}", spelling);
    }

    /// An IP deny entry wins over every address a name resolves to, in any spelling, whether
    /// local protection is on or off and whatever `treat_as_public` says.
    #[test]
    fn an_ip_deny_entry_wins_over_resolved_addresses(
        octets in any::<[u8; 4]>(),
        style in 0u8..4,
        others in proptest::collection::vec(any::<[u8; 4]>().prop_map(|o| IpAddr::from([8, o[1], o[2], o[3]])), 0..3),
        local: bool, public: bool,
    ) {
        let v4 = core::net::Ipv4Addr::from(octets);
        let resolved: IpAddr = match style {
            0 => v4.into(),
            1 => v4.to_ipv6_mapped().into(),
            2 => v4.to_ipv6_compatible().into(),
            _ => core::net::Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(u32::from(v4))).into(),
        };
        prop_assume!(u32::from(v4) > 1 || style != 2);
        let mut b = Policy::builder();
        b.allow("*", None).unwrap().deny(&v4.to_string(), None).unwrap();
        b.allow_local_binding(local);
        if public { b.treat_as_public("0.0.0.0/0".parse().unwrap()).treat_as_public("::/0".parse().unwrap()); }
        let p = b.build().unwrap();
        let meta = RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority("example.com", 443).unwrap());
        let Evaluation::AllowIfAddressesPass { decision, .. } = p.evaluate(&meta) else { panic!("expected a pending allow") };
        let mut all = others.clone();
        all.push(resolved);
        let host = proxy_core::Host::parse("example.com").unwrap();
        let d = p.check_addresses(&host, decision, 443, &all, OwnAddrs::none());
        prop_assert_eq!(d.reason, Some(Reason::Denied), "{}", resolved);
    }

    /// While local protection is on, an address of the machine is never admitted by a
    /// wildcard, by treat_as_public or through a name, in any spelling; an explicit literal
    /// admits it.
    #[test]
    fn the_machines_own_addresses_need_an_explicit_literal(
        octets in any::<[u8; 4]>(),
        style in 0u8..4,
        port in 1u16..,
    ) {
        let v4 = core::net::Ipv4Addr::from(octets);
        prop_assume!(u32::from(v4) > 1);
        let own = OwnAddrs::new([IpAddr::V4(v4)]);
        let spelling = match style {
            0 => v4.to_string(),
            1 => format!("[::ffff:{v4}]"),
            2 => format!("[::{v4}]"),
            _ => format!("[64:ff9b::{v4}]"),
        };
        let mut b = Policy::builder();
        b.allow("*", None).unwrap().allow("**.example.com", None).unwrap();
        b.treat_as_public("0.0.0.0/0".parse().unwrap()).treat_as_public("::/0".parse().unwrap());
        let p = b.build().unwrap();
        let meta = RequestMeta::new(Protocol::Http, Target::parse_authority(&spelling, port).unwrap())
            .with_method("GET");
        prop_assert_eq!(p.evaluate_with(&meta, &own).decision().reason, Some(Reason::NotAllowedLocal), "{}", spelling);
        let name = RequestMeta::new(Protocol::Http, Target::parse_authority("a.example.com", port).unwrap());
        let Evaluation::AllowIfAddressesPass { decision, .. } = p.evaluate_with(&name, &own) else { panic!("expected a pending allow") };
        let resolved = proxy_core::Host::parse(&spelling).unwrap().ip().unwrap();
        let host = proxy_core::Host::parse("a.example.com").unwrap();
        let d = p.check_addresses(&host, decision, port, &[resolved], &own);
        prop_assert_eq!(d.reason, Some(Reason::NotAllowedLocal), "{}", spelling);
        if style == 0 {
            let mut b = Policy::builder();
            b.allow(&v4.to_string(), None).unwrap();
            let p = b.build().unwrap();
            let admitted = matches!(p.evaluate_with(&meta, &own), Evaluation::Allow { .. });
            prop_assert!(admitted, "{}", spelling);
        }
    }

    #[test]
    fn an_allowed_name_never_passes_with_a_local_address(
        addrs in proptest::collection::vec(any_local_spelling(), 1..3),
        public in proptest::collection::vec(any::<[u8; 4]>().prop_map(|o| IpAddr::from([8, o[1], o[2], o[3]])), 0..3),
    ) {
        let mut b = Policy::builder();
        b.allow("*", None).unwrap();
        let p = b.build().unwrap();
        let meta = RequestMeta::new(Protocol::Http, Target::parse_authority("example.com", 80).unwrap()).with_method("GET");
        let Evaluation::AllowIfAddressesPass { decision, .. } = p.evaluate(&meta) else { panic!("expected a pending allow") };
        let mut all: Vec<IpAddr> = public.clone();
        for a in &addrs {
            let host = proxy_core::Host::parse(a).unwrap();
            all.push(host.ip().unwrap());
        }
        let name = proxy_core::Host::parse("a.example.com").unwrap();
        let d = p.check_addresses(&name, decision, 80, &all, OwnAddrs::none());
        prop_assert_eq!(d.reason, Some(Reason::NotAllowedLocal));
    }
}

#[test]
fn local_binding_turns_local_protection_off_as_a_whole() {
    check("local allow=10.0.0.1", "http GET 10.0.0.1", "allow");
    check("local allow=10.0.0.1", "http GET 10.0.0.2", "not_allowed");
    check("local allow=*", "http GET 10.0.0.2", "allow@*");
    check("local allow=*", "http GET 127.0.0.1:8080", "allow@*");
    check("local allow=*", "http GET 169.254.169.254", "allow@*");
    check("local allow=*", "http GET localhost", "allow@*");
    check("local allow=**.localhost", "http GET a.localhost", "allow");
    check("local allow=localhost", "http GET localhost", "allow");
    check("local allow=*.test", "http GET 127.0.0.1", "not_allowed");
    // A name's resolved addresses pass unless a deny entry matches one of them.
    check("local allow=*.test", "http GET a.test 127.0.0.1", "allow");
    check(
        "allow=*.test",
        "http GET a.test 127.0.0.1",
        "not_allowed_local",
    );
    // The machine's own addresses are not special either.
    check(
        "local allow=* own=203.0.113.7",
        "http GET 203.0.113.7",
        "allow",
    );
    check(
        "local allow=* own=203.0.113.7",
        "http GET a.test 203.0.113.7",
        "allow",
    );
    // Deny still wins: on the literal, on `localhost` (which connects to loopback), and on
    // every address a name resolves to.
    for host in ["127.0.0.1", "127.1", "[::ffff:127.0.0.1]", "[::127.0.0.1]"] {
        check(
            "local allow=* deny=127.0.0.1",
            &format!("http GET {host}"),
            "denied@127.0.0.1",
        );
    }
    check(
        "local allow=* deny=127.0.0.1",
        "http GET 127.0.0.2",
        "allow",
    );
    check(
        "local allow=* deny=127.0.0.1",
        "http GET localhost",
        "denied@127.0.0.1",
    );
    check(
        "local allow=* deny=::1",
        "http GET foo.localhost",
        "denied@::1",
    );
    check(
        "local allow=* deny=127.0.0.1",
        "http GET a.test 93.184.216.34,127.0.0.1",
        "denied@127.0.0.1",
    );
    check(
        "local allow=* deny=127.0.0.1:8080",
        "http GET a.test:8080 127.0.0.1",
        "denied",
    );
    check(
        "local allow=* deny=127.0.0.1:8080",
        "http GET a.test:8081 127.0.0.1",
        "allow",
    );
    check(
        "local allow=* deny=169.254.169.254",
        "http GET 169.254.169.254",
        "denied",
    );
}

#[test]
fn deny_wins_on_resolved_addresses() {
    // Whatever else holds: local protection on or off, treat_as_public, an explicit name.
    for rules in [
        "allow=* deny=93.184.216.34",
        "allow=* local deny=93.184.216.34",
        "allow=a.test deny=93.184.216.34",
        "allow=* public=93.184.216.0/24 deny=93.184.216.34",
        "allow=* deny=[::ffff:93.184.216.34]",
        "allow=* deny=[64:ff9b::93.184.216.34]",
    ] {
        for addrs in [
            "93.184.216.34",
            "1.1.1.1,93.184.216.34",
            "::ffff:93.184.216.34",
            "::93.184.216.34",
            "64:ff9b::5db8:d822",
            "2606:4700::1,64:ff9b::93.184.216.34",
        ] {
            check(rules, &format!("http GET a.test {addrs}"), "denied");
        }
        check(rules, "http GET a.test 1.1.1.1", "allow");
    }
    // Deny beats a local refusal: the reason is `denied`.
    check(
        "allow=* deny=10.0.0.1",
        "http GET a.test 10.0.0.1",
        "denied@10.0.0.1",
    );
    check(
        "allow=* deny=fd00::1",
        "http GET a.test 10.0.0.5,fd00::1",
        "denied@fd00::1",
    );
}

#[test]
fn ip_deny_entries_match_every_spelling() {
    for deny in [
        "8.8.8.8",
        "::ffff:8.8.8.8",
        "[::ffff:808:808]",
        "::8.8.8.8",
        "64:ff9b::8.8.8.8",
        "[64:ff9b::808:808]",
        "::ffff:0:8.8.8.8",
    ] {
        for spelling in [
            "8.8.8.8",
            "0x8.8.8.8",
            "134744072",
            "[::ffff:8.8.8.8]",
            "[::8.8.8.8]",
            "[64:ff9b::8.8.8.8]",
            "[64:ff9b::808:808]",
            "[::ffff:0:8.8.8.8]",
            "[::ffff:0:808:808]",
            // 6to4, and Teredo (client address stored inverted).
            "[2002:808:808::1]",
            "[2001:0:4136:e378:8000:63bf:f7f7:f7f7]",
        ] {
            check(
                &format!("allow=* deny={deny}"),
                &format!("http GET {spelling}"),
                "denied",
            );
        }
        check(&format!("allow=* deny={deny}"), "http GET 8.8.4.4", "allow");
    }
    // The NAT64 spelling is a deny-side equivalence only: an allow entry for the IPv4 address
    // does not admit the NAT64 literal.
    check(
        "allow=8.8.8.8",
        "http GET [64:ff9b::8.8.8.8]",
        "not_allowed",
    );
}

#[test]
fn local_use_nat64_is_never_public() {
    for host in [
        "[64:ff9b:1::8.8.8.8]",
        "[64:ff9b:1:808:8:800::]",
        "[64:ff9b:1:ffff::1]",
    ] {
        check("allow=*", &format!("http GET {host}"), "not_allowed_local");
    }
    check(
        "allow=a.test",
        "http GET a.test 64:ff9b:1:808:8:800::",
        "not_allowed_local",
    );
    check(
        "allow=64:ff9b:1::8.8.8.8",
        "http GET [64:ff9b:1::8.8.8.8]",
        "allow",
    );
}

#[test]
fn the_machines_own_addresses_are_local() {
    let mine = "own=203.0.113.7,2001:db8:1::7,93.184.216.34";
    for host in [
        "203.0.113.7",
        "[::ffff:203.0.113.7]",
        "[::203.0.113.7]",
        "[64:ff9b::203.0.113.7]",
        "[2001:db8:1::7]",
        "93.184.216.34",
    ] {
        // Not by a wildcard, not by treat_as_public.
        check(
            &format!("allow=* {mine}"),
            &format!("http GET {host}"),
            "not_allowed_local",
        );
        check(
            &format!("allow=* public=0.0.0.0/0,::/0 {mine}"),
            &format!("http GET {host}"),
            "not_allowed_local",
        );
    }
    // Not by a name's resolution, even an explicitly allowed name, even treat_as_public.
    for addrs in [
        "203.0.113.7",
        "1.1.1.1,93.184.216.34",
        "::ffff:93.184.216.34",
        "2001:db8:1::7",
    ] {
        for rules in [
            "allow=* public=203.0.113.0/24,2001:db8::/32",
            "allow=a.test public=0.0.0.0/0,::/0",
        ] {
            check(
                &format!("{rules} {mine}"),
                &format!("http GET a.test {addrs}"),
                "not_allowed_local",
            );
        }
    }
    // Only an explicit literal admits one.
    check(
        &format!("allow=203.0.113.7 {mine}"),
        "http GET 203.0.113.7",
        "allow@203.0.113.7",
    );
    check(
        &format!("allow=[2001:db8:1::7]:8080 {mine}"),
        "http GET [2001:db8:1::7]:8080",
        "allow",
    );
    // Other addresses of the same ranges keep their usual treatment.
    check(
        &format!("allow=* public=203.0.113.0/24 {mine}"),
        "http GET 203.0.113.8",
        "allow",
    );
    check(
        &format!("allow=* {mine}"),
        "http GET a.test 93.184.216.35",
        "allow",
    );
    let p = policy("allow=*");
    let (meta, _) = request("http GET 93.184.216.34");
    let d = p
        .evaluate_with(&meta, &own("own=93.184.216.34"))
        .decision()
        .clone();
    assert!(
        d.detail
            .as_deref()
            .unwrap()
            .contains("address of this machine"),
        "{d:?}"
    );
    // Without the set, the same policy judges the address as public.
    assert!(matches!(p.evaluate(&meta), Evaluation::Allow { .. }));
}

#[test]
fn limited_mode_refuses_upgrades() {
    let p = policy("mode=limited allow=1.1.1.1");
    let meta = RequestMeta::new(
        Protocol::Http,
        Target::parse_authority("1.1.1.1", 80).unwrap(),
    )
    .with_method("GET")
    .with_upgrade();
    assert_eq!(
        p.evaluate(&meta).decision().reason,
        Some(Reason::MethodNotAllowed)
    );
    let p = policy("allow=1.1.1.1");
    assert!(matches!(p.evaluate(&meta), Evaluation::Allow { .. }));
}

/// A pattern's key is a pattern that reads back with the same key, and two patterns share a
/// key only when they match the same hosts: zones keep their `%25` separator (a zone starting
/// with "25" would otherwise read back as another zone), and an IPv4-compatible literal with a
/// zone keeps its zone (it covers only that zone, not the bare IPv4 address).
#[test]
fn zoned_pattern_keys_read_back_as_themselves() {
    use crate::Pattern;
    for (text, key) in [
        ("[fe80::1%25eth0]", "[fe80::1%25eth0]"),
        ("fe80::1%eth0", "[fe80::1%25eth0]"),
        ("[fe80::1%2525x]", "[fe80::1%2525x]"),
        ("[::127.0.0.1%eth0]", "[::127.0.0.1%25eth0]"),
        ("::127.0.0.1", "127.0.0.1"),
        ("fe80::1", "[fe80::1]"),
    ] {
        let p = Pattern::parse(text).unwrap();
        assert_eq!(p.key(), key, "{text}");
        assert_eq!(Pattern::parse(&p.key()).unwrap().key(), key, "{text}");
        let again = Pattern::parse(&p.key()).unwrap();
        assert!(again.covers(&p) && p.covers(&again), "{text}");
    }
    let (zoned, bare) = (
        Pattern::parse("[::127.0.0.1%eth0]").unwrap(),
        Pattern::parse("127.0.0.1").unwrap(),
    );
    assert!(!zoned.covers(&bare));
    assert_ne!(zoned.key(), bare.key());
}
