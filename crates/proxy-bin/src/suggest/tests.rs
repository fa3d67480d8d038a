#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use super::*;

use proxy_core::{Protocol, Target};
use proxy_policy::{Evaluation, Policy};

/// The usage of `allowed` targets (`host:port`, CONNECT) and `refused` ones (`host:port`,
/// reason), in learn mode.
fn usage(allowed: &[&str], refused: &[(&str, &str)]) -> Usage {
    let mut u = Usage::new(vec!["/etc/netproxy/requirements.toml".into()]);
    for t in allowed {
        let (h, p) = split(t);
        u.add(&Seen::allowed(h, p, "https_connect"));
    }
    for (t, reason) in refused {
        let (h, p) = split(t);
        u.add(&Seen {
            learn: true,
            ..Seen::refused(h, p, "https_connect", reason)
        });
    }
    u
}

fn split(target: &str) -> (&str, u16) {
    let (h, p) = target.rsplit_once(':').unwrap();
    (
        h.trim_start_matches('[').trim_end_matches(']'),
        p.parse().unwrap(),
    )
}

/// The patterns of a suggestion, in order, as its TOML table holds them.
fn patterns(s: &Suggestion) -> Vec<String> {
    let v: toml::Table = toml::from_str(&s.toml).unwrap_or_else(|e| panic!("{e}\n{}", s.toml));
    let domains = v["network"]["domains"].as_table().unwrap();
    assert!(domains.values().all(|a| a.as_str() == Some("allow")));
    let keys: Vec<String> = domains.keys().cloned().collect();
    assert_eq!(keys.len(), s.patterns, "{}", s.toml);
    keys
}

fn suggested(allowed: &[&str], refused: &[(&str, &str)]) -> Vec<String> {
    patterns(&suggest(&usage(allowed, refused), "a test"))
}

#[test]
fn two_subdomains_of_one_registrable_domain_become_one_wildcard() {
    assert_eq!(
        suggested(&["a.example.com:443", "b.example.com:443"], &[]),
        ["**.example.com"]
    );
    // One subdomain is not enough, with or without the apex.
    assert_eq!(
        suggested(&["a.example.com:443", "example.com:443"], &[]),
        ["example.com", "a.example.com"]
    );
    // The apex and two subdomains: the wildcard covers the apex too.
    assert_eq!(
        suggested(
            &["example.com:443", "a.example.com:443", "b.example.com:80"],
            &[]
        ),
        ["**.example.com"]
    );
    // The longest common parent, not the registrable domain, when all share it.
    assert_eq!(
        suggested(&["a.svc.example.com:443", "b.svc.example.com:443"], &[]),
        ["**.svc.example.com"]
    );
    // Names of other registrable domains stay apart.
    assert_eq!(
        suggested(
            &[
                "a.example.com:443",
                "b.example.com:443",
                "api.example.org:443"
            ],
            &[]
        ),
        ["**.example.com", "api.example.org"]
    );
}

#[test]
fn never_a_wildcard_at_or_above_a_public_suffix() {
    // github.io is a public suffix (the list's private section): each site is its own
    // registrable domain, so its subdomains stay exact.
    assert_eq!(
        suggested(&["alice.github.io:443", "bob.github.io:443"], &[]),
        ["alice.github.io", "bob.github.io"]
    );
    assert_eq!(
        suggested(&["a.alice.github.io:443", "b.alice.github.io:443"], &[]),
        ["**.alice.github.io"]
    );
    // co.uk likewise: no `**.co.uk`, but `**.example.co.uk` for two of its subdomains.
    assert_eq!(
        suggested(&["example.co.uk:443", "other.co.uk:443"], &[]),
        ["example.co.uk", "other.co.uk"]
    );
    assert_eq!(
        suggested(&["a.example.co.uk:443", "b.example.co.uk:443"], &[]),
        ["**.example.co.uk"]
    );
    // A suffix itself, and a single label, stay exact.
    assert_eq!(
        suggested(&["github.io:443", "intranet:443"], &[]),
        ["intranet", "github.io"]
    );
}

#[test]
fn ports_are_written_where_they_matter() {
    // Only on a port other than 80 and 443: the port is part of the entry, one per port.
    assert_eq!(
        suggested(&["api.example.org:8443", "api.example.org:9000"], &[]),
        ["api.example.org:8443", "api.example.org:9000"]
    );
    // Also on 443: one entry for any port.
    assert_eq!(
        suggested(&["api.example.org:8443", "api.example.org:443"], &[]),
        ["api.example.org"]
    );
    // Folding keeps the port scope.
    assert_eq!(
        suggested(&["a.example.test:8080", "b.example.test:8080"], &[]),
        ["**.example.test:8080"]
    );
    // A refusal on another port does not stop a port-scoped wildcard; one on its port does.
    assert_eq!(
        suggested(
            &["a.example.test:8080", "b.example.test:8080"],
            &[("c.example.test:9090", "denied")]
        ),
        ["**.example.test:8080"]
    );
    assert_eq!(
        suggested(
            &["a.example.test:8080", "b.example.test:8080"],
            &[("c.example.test:8080", "denied")]
        ),
        ["a.example.test:8080", "b.example.test:8080"]
    );
    // A port-scoped name that a wildcard for any port covers needs no entry of its own.
    assert_eq!(
        suggested(
            &[
                "a.example.com:443",
                "b.example.com:443",
                "c.example.com:8443"
            ],
            &[]
        ),
        ["**.example.com"]
    );
}

#[test]
fn ip_literals_are_exact_entries_with_a_comment() {
    let s = suggest(
        &usage(
            &["93.184.216.34:443", "[2001:db8::1]:8080", "2001:db8::2:443"],
            &[],
        ),
        "a test",
    );
    assert_eq!(
        patterns(&s),
        ["[2001:db8::1]:8080", "2001:db8::2", "93.184.216.34"]
    );
    assert!(
        s.toml
            .contains("\"93.184.216.34\" = \"allow\"  # IP literal: 1 request, https_connect\n"),
        "{}",
        s.toml
    );
}

#[test]
fn refused_targets_are_comments_with_why_and_block_a_wildcard() {
    let s = suggest(
        &usage(
            &["a.example.com:443", "b.example.com:443", "ok.test:443"],
            &[
                ("gist.example.com:443", "denied"),
                ("10.0.0.5:80", "not_allowed_local"),
                ("fixed.test:443", "not_allowed"),
            ],
        ),
        "a test",
    );
    // The wildcard would have allowed the denied name: the names stay exact.
    assert_eq!(patterns(&s), ["a.example.com", "b.example.com", "ok.test"]);
    let comments = s.toml.split("# Refused").nth(1).unwrap();
    for needle in [
        "gist.example.com:443  1 request, https_connect: 1 denied",
        "10.0.0.5:80  1 request, https_connect: 1 not_allowed_local: a local or private address",
        "fixed.test:443  1 request, https_connect: 1 not_allowed: outside an allowlist that managed requirements fix",
    ] {
        assert!(comments.contains(needle), "{needle}\n{}", s.toml);
    }
    // A refusal elsewhere in the domain, but not under the wildcard's parent, does not block.
    assert_eq!(
        suggested(
            &["a.svc.example.com:443", "b.svc.example.com:443"],
            &[("other.example.com:443", "denied")]
        ),
        ["**.svc.example.com"]
    );
}

#[test]
fn outside_learn_mode_a_name_refused_not_allowed_is_what_the_command_needed() {
    let mut u = usage(&["api.test:443"], &[]);
    u.add(&Seen::refused(
        "missing.test",
        443,
        "https_connect",
        "not_allowed",
    ));
    let s = suggest(&u, "a test");
    assert_eq!(patterns(&s), ["api.test", "missing.test"]);
    assert!(
        s.toml.contains(
            "\"missing.test\" = \"allow\"  # 1 request, https_connect; refused: not_allowed 1"
        ),
        "{}",
        s.toml
    );
}

#[test]
fn what_managed_requirements_allowed_needs_no_entry_and_failures_are_allowed() {
    let mut u = usage(&[], &[]);
    u.add(&Seen {
        rule: Some("**.corp.example"),
        layer: Some("/etc/netproxy/requirements.toml"),
        ..Seen::allowed("git.corp.example", 443, "https_connect")
    });
    // A user layer's rule is not managed.
    u.add(&Seen {
        rule: Some("api.test"),
        layer: Some("/home/u/.netproxy/config.toml"),
        ..Seen::allowed("api.test", 443, "http")
    });
    // Allowed, then the name did not resolve: the policy allowed it, so it is suggested.
    u.add(&Seen::refused(
        "gone.test",
        443,
        "https_connect",
        "dns_failed",
    ));
    let s = suggest(&u, "a test");
    assert_eq!(patterns(&s), ["api.test", "gone.test"]);
    assert!(s.toml.contains("failed: dns_failed 1"), "{}", s.toml);
    assert!(
        s.toml.contains(
            "#   git.corp.example:443  1 request: **.corp.example (/etc/netproxy/requirements.toml)"
        ),
        "{}",
        s.toml
    );
}

#[test]
fn lookups_sockets_and_invalid_hosts_are_comments_only_and_escaped() {
    let mut u = usage(&["api.test:443"], &[]);
    u.add(&Seen {
        learn: true,
        ..Seen::refused("example.com", 53, "dns", "dns_not_served")
    });
    u.add(&Seen::allowed("unix-socket", 0, "http"));
    // A host no request could have: newlines and quotes stay inside one comment line.
    u.add(&Seen::allowed(
        "evil\n[network]\nmode = \"full\"",
        443,
        "http",
    ));
    u.add(&Seen::allowed("x", 443, "odd\nprotocol"));
    let s = suggest(&u, "a test");
    assert_eq!(patterns(&s), ["api.test", "x"]);
    let v: toml::Table = toml::from_str(&s.toml).unwrap();
    assert_eq!(v.keys().collect::<Vec<_>>(), ["network"]);
    assert_eq!(v["network"].as_table().unwrap().len(), 1, "{}", s.toml);
    for needle in [
        "#   example.com:53  1 lookup",
        "# 1 request through x-unix-socket",
        "#   evil\\u{a}[network]\\u{a}mode = \"full\":443  1 request",
        "odd\\u{a}protocol",
    ] {
        assert!(s.toml.contains(needle), "{needle}\n{}", s.toml);
    }
}

#[test]
fn an_empty_session_suggests_an_empty_table() {
    let s = suggest(&Usage::new(Vec::new()), "a test");
    assert_eq!(s.patterns, 0);
    assert!(patterns(&s).is_empty());
    assert!(s.toml.contains("# (no target to allow)"), "{}", s.toml);
}

#[test]
fn targets_past_the_bound_are_counted_and_said() {
    let mut u = Usage::new(Vec::new());
    let n = u32::try_from(MAX_TARGETS).unwrap() + 5;
    for i in 0..n {
        let [_, b, c, d] = i.to_be_bytes();
        u.add(&Seen::allowed(
            &format!("93.{b}.{c}.{d}"),
            443,
            "socks5_tcp",
        ));
    }
    let s = suggest(&u, "a test");
    assert_eq!(s.folded, 5);
    assert_eq!(s.patterns, MAX_TARGETS);
    assert!(
        s.toml.contains("# INCOMPLETE: 5 decisions"),
        "{}",
        &s.toml[..400]
    );
}

/// The policy the suggestion is, as `--config` loads it.
fn loaded(s: &Suggestion) -> Policy {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("suggested.toml");
    std::fs::write(&file, &s.toml).unwrap();
    let sources = proxy_config::Sources {
        config_files: vec![file],
        system_requirements: Some(dir.path().join("none.toml")),
        ..Default::default()
    };
    proxy_config::load(&sources)
        .unwrap_or_else(|e| panic!("{e}\n{}", s.toml))
        .policy()
        .unwrap()
}

fn admits(policy: &Policy, target: &str) -> bool {
    let meta = proxy_core::RequestMeta::new(
        Protocol::HttpsConnect,
        Target::parse_authority(target, 443).unwrap(),
    );
    !matches!(policy.evaluate(&meta), Evaluation::Deny(_))
}

#[test]
fn the_suggestion_loads_as_a_config_and_allows_what_was_used_and_no_more() {
    let used = [
        "api.github.com:443",
        "files.example.com:443",
        "www.example.com:443",
        // githubusercontent.com is a public suffix: these two stay exact.
        "objects.githubusercontent.com:443",
        "raw.githubusercontent.com:443",
        "alice.github.io:443",
        "registry.example.org:8443",
        "93.184.216.34:443",
        "[2001:db8::1]:8080",
    ];
    let s = suggest(
        &usage(&used, &[("gist.github.com:443", "denied")]),
        "a test",
    );
    let policy = loaded(&s);
    for t in used {
        assert!(admits(&policy, t), "{t} refused by\n{}", s.toml);
    }
    for t in [
        "gist.github.com:443",
        "bob.github.io:443",
        "registry.example.org:443",
        "other.example:443",
        "93.184.216.35:443",
        "[2001:db8::1]:8081",
        "cdn.githubusercontent.com:443",
    ] {
        assert!(!admits(&policy, t), "{t} allowed by\n{}", s.toml);
    }
    // The wildcard of two subdomains admits their siblings and the apex.
    assert!(admits(&policy, "cdn.example.com:443") && admits(&policy, "example.com:443"));
}

#[test]
fn a_report_and_an_audit_log_give_the_same_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    std::fs::write(
        &report,
        concat!(
            "{\"decisions\":[\n",
            "{\"client\":\"127.0.0.1:1\",\"decision\":\"allow\",\"host\":\"a.example.com\",\"layer\":null,\"method\":\"CONNECT\",\"mode\":\"full\",\"port\":443,\"protocol\":\"https_connect\",\"reason\":\"not_allowed\",\"rule\":null,\"source\":\"decider\",\"timestamp\":\"2026-12-06T00:00:00.000Z\",\"learn\":true},\n",
            "{\"decision\":\"allow\",\"host\":\"b.example.com\",\"port\":443,\"protocol\":\"http\",\"reason\":\"allow\",\"rule\":\"b.example.com\",\"layer\":\"command-line\"},\n",
            "{\"decision\":\"deny\",\"host\":\"10.0.0.5\",\"port\":80,\"protocol\":\"http\",\"reason\":\"not_allowed_local\",\"rule\":null,\"layer\":null,\"learn\":true}],",
            "\"blocked_total\":1,\"blocked_targets\":[],\"blocked_targets_folded\":0,\"exit_code\":0}\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("audit.jsonl");
    std::fs::write(
        &log,
        concat!(
            "{\"event.name\":\"netproxy.policy_decision\",\"network.policy.decision\":\"allow\",\"network.policy.reason\":\"not_allowed\",\"network.policy.rule\":null,\"network.policy.layer\":null,\"network.transport.protocol\":\"https_connect\",\"server.address\":\"a.example.com\",\"server.port\":443,\"network.policy.learn\":true}\n",
            "\n",
            "{\"event.name\":\"netproxy.udp_association\",\"sent\":1}\n",
            "{\"event.name\":\"netproxy.policy_decision\",\"network.policy.decision\":\"allow\",\"network.policy.reason\":\"allow\",\"network.policy.rule\":\"b.example.com\",\"network.policy.layer\":\"command-line\",\"network.transport.protocol\":\"http\",\"server.address\":\"b.example.com\",\"server.port\":443}\n",
            "{\"event.name\":\"netproxy.policy_decision\",\"network.policy.dec",
            "\n{\"event.name\":\"netproxy.policy_decision\",\"network.policy.decision\":\"deny\",\"network.policy.reason\":\"not_allowed_local\",\"network.transport.protocol\":\"http\",\"server.address\":\"10.0.0.5\",\"server.port\":80,\"network.policy.learn\":true}\n",
        ),
    )
    .unwrap();
    let (from_report, w) = Usage::read(&report, Vec::new()).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let (from_log, w) = Usage::read(&log, Vec::new()).unwrap();
    // The line cut short is skipped, and said.
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("skipped 1 line that is not JSON") && w[0].contains("line 5"),
        "{w:?}"
    );
    let (a, b) = (suggest(&from_report, "x"), suggest(&from_log, "x"));
    assert_eq!(a, b);
    assert_eq!(patterns(&a), ["**.example.com"]);
    assert!(
        a.toml
            .contains("#   10.0.0.5:80  1 request, http: 1 not_allowed_local"),
        "{}",
        a.toml
    );

    // A report whose run never finished: the decisions before its end.
    let body = std::fs::read_to_string(&report).unwrap();
    let cut = &body[..body.find("\n{\"decision\":\"deny\"").unwrap()];
    std::fs::write(&report, cut).unwrap();
    let (u, w) = Usage::read(&report, Vec::new()).unwrap();
    assert_eq!(u.decisions(), 2);
    assert!(w[0].contains("ends early"), "{w:?}");
}

#[test]
fn a_file_of_another_shape_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    let error = |text: &str| {
        std::fs::write(&file, text).unwrap();
        Usage::read(&file, Vec::new()).unwrap_err().to_string()
    };
    for (text, why) in [
        ("", "the file is empty"),
        ("\n\n", "the file is empty"),
        ("hello", "expected value"),
        ("{\"x\":1}", "no \"decisions\" list"),
        ("[1,2]", "invalid type"),
        ("{\"decisions\":[{\"host\":\"a\"}]}", "missing field"),
        ("{\"decisions\":[]} trailing", "trailing characters"),
        (
            "{\"event.name\":\"netproxy.policy_decision\",\"server.port\":1}",
            "line 1: no server.address",
        ),
    ] {
        let e = error(text);
        assert!(
            e.contains("is neither a --report file") && e.contains(why),
            "{text:?}: {e}"
        );
    }
    let missing = dir.path().join("missing");
    let e = Usage::read(&missing, Vec::new()).unwrap_err().to_string();
    assert!(
        e.starts_with("cannot read ") && e.contains("No such file"),
        "{e}"
    );
}
