//! Config layering and managed constraints over in-memory layers: one test (at least) per rule.

use std::path::PathBuf;

use proxy_core::Mode;
use toml::Table;

use crate::config::Config;
use crate::error::{DiagnosticKind, Error};
use crate::layer::{Action, Layer};
use crate::load::{CliOverrides, parse_layer};
use crate::managed::Requirements;

fn doc(text: &str) -> Table {
    toml::from_str(text).unwrap()
}

/// Builds a config from user layers `a.toml`, `b.toml`, ... and requirement files `r0.toml`, ...
fn build(layers: &[&str], requirements: &[&str]) -> Result<Config, Error> {
    let mut diags = Vec::new();
    let mut data = Vec::new();
    for (i, text) in layers.iter().enumerate() {
        let path = PathBuf::from(format!("/cfg/{}.toml", (b'a' + i as u8) as char));
        let origin = path.display().to_string();
        data.push(parse_layer(
            Layer::File(path),
            &origin,
            &doc(text),
            &mut diags,
        ));
    }
    let mut reqs = Vec::new();
    for (i, text) in requirements.iter().enumerate() {
        let path = PathBuf::from(format!("/managed/r{i}.toml"));
        reqs.push(Requirements::parse(&path, &doc(text), &mut diags));
    }
    if !diags.is_empty() {
        return Err(Error { diagnostics: diags });
    }
    let c = Config::from_layers(data, reqs)?;
    c.policy()?;
    Ok(c)
}

fn ok(layers: &[&str], requirements: &[&str]) -> Config {
    build(layers, requirements).unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn err(layers: &[&str], requirements: &[&str], kind: DiagnosticKind, key: &str, contains: &str) {
    let e = build(layers, requirements)
        .err()
        .unwrap_or_else(|| panic!("expected an error containing {contains:?}"));
    assert!(
        e.diagnostics
            .iter()
            .any(|d| d.kind == kind && d.key == key && d.to_string().contains(contains)),
        "wanted {kind:?} at {key:?} containing {contains:?}, got:\n{e}"
    );
}

fn domains(c: &Config) -> Vec<(String, Action, String)> {
    c.domains()
        .iter()
        .map(|e| (e.pattern.as_str().to_owned(), e.action, e.layer.to_string()))
        .collect()
}

#[test]
fn defaults() {
    let c = ok(&[], &[]);
    assert!(c.enabled());
    assert_eq!(c.mode(), Mode::Full);
    assert!(
        c.enable_socks5() && c.enable_socks5_udp() && c.enable_admin() && c.allow_upstream_proxy()
    );
    assert!(!c.allow_local_binding());
    let l = c.listeners();
    assert_eq!(l.http.to_string(), "127.0.0.1:3128");
    assert_eq!(l.socks.unwrap().to_string(), "127.0.0.1:8081");
    assert_eq!(l.admin.unwrap().to_string(), "127.0.0.1:8080");
    assert_eq!(c.dns_timeout().as_millis(), 2000);
    assert_eq!(c.max_connections(), 4096);
    assert_eq!(c.connect_timeout().as_millis(), 10_000);
    assert_eq!(c.header_timeout().as_millis(), 10_000);
    assert_eq!(c.idle_timeout().as_secs(), 300);
    assert_eq!(c.max_header_bytes(), 65536);
    assert!(c.dns_nameservers().is_none());
    assert!(c.domains().is_empty());
    assert_eq!(c.settings().mode.layer, Layer::Default);
}

#[test]
fn scalars_from_a_higher_layer_replace_lower_ones() {
    let c = ok(
        &[
            "[network]\nmode = \"limited\"\nenable_socks5 = false",
            "[network]\nmode = \"full\"",
        ],
        &[],
    );
    assert_eq!(c.mode(), Mode::Full);
    assert_eq!(c.settings().mode.layer.to_string(), "/cfg/b.toml");
    assert!(!c.enable_socks5());
    assert_eq!(c.settings().enable_socks5.layer.to_string(), "/cfg/a.toml");
    assert!(c.listeners().socks.is_none());
}

#[test]
fn domains_overlay_key_by_key() {
    let c = ok(
        &[
            "[network.domains]\nlower = \"allow\"\nblocked = \"deny\"\nshared = \"deny\"",
            "[network.domains]\nhigher = \"allow\"\nshared = \"allow\"\n\"LOWER.\" = \"deny\"",
        ],
        &[],
    );
    assert_eq!(
        domains(&c),
        // In the order written: a key a higher layer sets again keeps its place.
        vec![
            ("LOWER.".into(), Action::Deny, "/cfg/b.toml".into()),
            ("blocked".into(), Action::Deny, "/cfg/a.toml".into()),
            ("shared".into(), Action::Allow, "/cfg/b.toml".into()),
            ("higher".into(), Action::Allow, "/cfg/b.toml".into()),
        ]
    );
}

#[test]
fn deny_beats_allow_within_one_layer() {
    let c = ok(
        &[
            "[network]\nallowed_domains = [\"example.com\", \"x.com\"]\ndenied_domains = [\"Example.com.\"]",
        ],
        &[],
    );
    let d = domains(&c);
    assert_eq!(d[0].1, Action::Deny);
    assert_eq!(d.len(), 2);
}

#[test]
fn the_three_shapes_are_equivalent() {
    let canonical = ok(
        &[
            "[network]\nmode = \"limited\"\ndomains = { \"a.com\" = \"allow\", \"b.com\" = \"deny\" }",
        ],
        &[],
    );
    let profile = ok(
        &[
            "default_permissions = \"dev\"\n[permissions.dev.network]\nmode = \"limited\"\ndomains = { \"a.com\" = \"allow\", \"b.com\" = \"deny\" }",
        ],
        &[],
    );
    let lists = ok(
        &[
            "[network]\nmode = \"limited\"\nallowed_domains = [\"a.com\"]\ndenied_domains = [\"b.com\"]",
        ],
        &[],
    );
    for c in [&profile, &lists] {
        assert_eq!(c.mode(), canonical.mode());
        let strip = |c: &Config| {
            c.domains()
                .iter()
                .map(|e| (e.pattern.key(), e.action))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(c), strip(&canonical));
    }
    err(
        &["default_permissions = \"nope\"\n[permissions.dev.network]\nmode = \"full\""],
        &[],
        DiagnosticKind::InvalidValue,
        "default_permissions",
        "no profile",
    );
    err(
        &["default_permissions = \"dev\"\n[network]\n[permissions.dev.network]"],
        &[],
        DiagnosticKind::InvalidValue,
        "default_permissions",
        "one shape",
    );
    err(
        &["default_permissions = \"dev\"\n[permissions.dev.network]\nmdoe = \"full\""],
        &[],
        DiagnosticKind::UnknownKey,
        "permissions.dev.network.mdoe",
        "network.mode",
    );
}

#[test]
fn unknown_keys_name_the_nearest_known_key() {
    err(
        &["[network]\nmdoe = \"full\""],
        &[],
        DiagnosticKind::UnknownKey,
        "network.mdoe",
        "did you mean `network.mode`",
    );
    err(
        &["[network]\ntimeout_ms = 5"],
        &[],
        DiagnosticKind::UnknownKey,
        "network.timeout_ms",
        "network.dns.timeout_ms",
    );
    err(
        &["[network.limits]\nidle_timeout = 5"],
        &[],
        DiagnosticKind::UnknownKey,
        "network.limits.idle_timeout",
        "network.limits.idle_timeout_s",
    );
    err(
        &["[netwrok]\nmode = \"full\""],
        &[],
        DiagnosticKind::UnknownKey,
        "netwrok",
        "did you mean `network`",
    );
    err(
        &["[network]\ncompletely_unrelated_thing = 1"],
        &[],
        DiagnosticKind::UnknownKey,
        "network.completely_unrelated_thing",
        "unknown key",
    );
    err(
        &["[network.mitm]\nenabeld = false"],
        &[],
        DiagnosticKind::UnknownKey,
        "network.mitm.enabeld",
        "network.mitm.enabled",
    );
}

#[test]
fn wrong_types_are_errors() {
    err(
        &["[network]\nenabled = \"yes\""],
        &[],
        DiagnosticKind::InvalidValue,
        "network.enabled",
        "expected true or false, found string \"yes\"",
    );
    err(
        &["[network]\nmode = \"readonly\""],
        &[],
        DiagnosticKind::InvalidValue,
        "network.mode",
        "\"full\" or \"limited\"",
    );
    err(
        &["[network.limits]\nmax_connections = 0"],
        &[],
        DiagnosticKind::InvalidValue,
        "network.limits.max_connections",
        "from 1 to",
    );
    err(
        &["[network.limits]\nidle_timeout_s = \"300\""],
        &[],
        DiagnosticKind::InvalidValue,
        "network.limits.idle_timeout_s",
        "integer",
    );
    err(
        &["[network]\ntreat_as_public = [\"not-a-cidr\"]"],
        &[],
        DiagnosticKind::InvalidValue,
        "network.treat_as_public[0]",
        "invalid CIDR",
    );
    err(
        &["[network.dns]\nnameservers = [\"dns.example\"]"],
        &[],
        DiagnosticKind::InvalidValue,
        "network.dns.nameservers[0]",
        "invalid nameserver",
    );
    err(
        &["[network.dns.hosts]\n\"a.test\" = [\"nope\"]"],
        &[],
        DiagnosticKind::InvalidValue,
        "network.dns.hosts.\"a.test\"[0]",
        "IP address",
    );
    err(
        &["[network.domains]\n\"example.com\" = \"maybe\""],
        &[],
        DiagnosticKind::InvalidValue,
        "network.domains.\"example.com\"",
        "\"allow\" or \"deny\"",
    );
    err(
        &["[network.domains]\n\"exa mple.com\" = \"allow\""],
        &[],
        DiagnosticKind::InvalidValue,
        "network.domains.\"exa mple.com\"",
        "invalid pattern",
    );
    err(
        &["[network]\nunix_sockets = { \"relative.sock\" = \"allow\" }"],
        &[],
        DiagnosticKind::InvalidValue,
        "network.unix_sockets.\"relative.sock\"",
        "absolute",
    );
    err(
        &["network = 5"],
        &[],
        DiagnosticKind::InvalidValue,
        "network",
        "expected a table",
    );
    // A relative deny entry is never validated.
    ok(
        &["[network]\nunix_sockets = { \"relative.sock\" = \"deny\" }"],
        &[],
    );
}

#[test]
fn every_diagnostic_is_reported_at_once() {
    let e = build(
        &["[network]\nmdoe = 1\nenabled = 3\n[network.limits]\nmax_connections = -1"],
        &[],
    )
    .unwrap_err();
    assert_eq!(e.diagnostics.len(), 3, "{e}");
    assert!(e.diagnostics.iter().all(|d| d.origin == "/cfg/a.toml"));
}

#[test]
fn the_broker_keys_are_accepted() {
    let c = ok(
        &[
            "[network]\ncredential_broker = true\ndangerously_allow_plaintext_credential_injection = true\nmitm = false\nverify_sni = false\n[otel]\nexporter = \"none\"",
        ],
        &[],
    );
    assert!(c.credential_broker() && c.plaintext_credential_injection());
    // Managed requirements can pin the plaintext opt-in to false.
    err(
        &["[network]\ndangerously_allow_plaintext_credential_injection = true"],
        &["[network]\ndangerously_allow_plaintext_credential_injection = false"],
        DiagnosticKind::Constraint,
        "network.dangerously_allow_plaintext_credential_injection",
        "",
    );
}

#[test]
fn global_wildcard_is_refused_in_deny_lists() {
    err(
        &["[network.domains]\n\"*\" = \"deny\""],
        &[],
        DiagnosticKind::InvalidValue,
        "network.domains.\"*\"",
        "global wildcard",
    );
    err(
        &["[network]\ndenied_domains = [\"[*]\"]"],
        &[],
        DiagnosticKind::InvalidValue,
        "network.denied_domains[0]",
        "global wildcard",
    );
    let c = ok(&["[network]\nallowed_domains = [\"*\"]"], &[]);
    assert!(c.domains()[0].pattern.is_global());
}

#[test]
fn listeners_are_validated_and_clamped() {
    err(
        &["[network]\nproxy_url = \"http://proxy.example:3128\""],
        &[],
        DiagnosticKind::InvalidValue,
        "network.proxy_url",
        "never binds by name",
    );
    err(
        &["[network]\nsocks_url = \"\""],
        &[],
        DiagnosticKind::InvalidValue,
        "network.socks_url",
        "missing host",
    );
    let c = ok(
        &["[network]\nproxy_url = \"0.0.0.0:3128\"\nadmin_url = \"0.0.0.0:9000\""],
        &[],
    );
    assert_eq!(c.listeners().http.to_string(), "127.0.0.1:3128");
    assert_eq!(c.listeners().admin.unwrap().to_string(), "127.0.0.1:9000");
    let w = c.warnings().join("\n");
    assert!(
        w.contains(
            "HTTP proxy requested non-loopback bind (0.0.0.0:3128); clamping to 127.0.0.1:3128"
        ),
        "{w}"
    );
    assert!(w.contains("dangerously_allow_non_loopback_admin"), "{w}");
    let c = ok(
        &["[network]\nproxy_url = \"0.0.0.0:3128\"\ndangerously_allow_non_loopback_proxy = true"],
        &[],
    );
    assert_eq!(c.listeners().http.to_string(), "0.0.0.0:3128");
    let c = ok(
        &[
            "[network]\nproxy_url = \"0.0.0.0:3128\"\ndangerously_allow_non_loopback_proxy = true\nunix_sockets = { \"/run/a.sock\" = \"allow\" }",
        ],
        &[],
    );
    assert_eq!(c.listeners().http.to_string(), "127.0.0.1:3128");
    let c = ok(
        &[
            "[network]\nproxy_url = \"0.0.0.0:1\"\ndangerously_allow_non_loopback_proxy = true\ndangerously_allow_all_unix_sockets = true",
        ],
        &[],
    );
    assert_eq!(c.listeners().http.to_string(), "127.0.0.1:1");
}

// === managed constraints ===

#[test]
fn managed_enabled_false() {
    let c = ok(&[], &["[network]\nenabled = false"]);
    assert!(!c.enabled());
    assert_eq!(c.settings().enabled.layer.to_string(), "/managed/r0.toml");
    err(
        &["[network]\nenabled = true"],
        &["[network]\nenabled = false"],
        DiagnosticKind::Constraint,
        "network.enabled",
        "constrained by /managed/r0.toml",
    );
}

#[test]
fn managed_mode_limited() {
    let c = ok(&[], &["[network]\nmode = \"limited\""]);
    assert_eq!(c.mode(), Mode::Limited);
    err(
        &["[network]\nmode = \"full\""],
        &["[network]\nmode = \"limited\""],
        DiagnosticKind::Constraint,
        "network.mode",
        "\"limited\" or more restrictive",
    );
    ok(
        &["[network]\nmode = \"limited\""],
        &["[experimental_network]\nmode = \"limited\""],
    );
    ok(
        &["[network]\nmode = \"limited\""],
        &["[network]\nmode = \"full\""],
    );
}

#[test]
fn managed_booleans_forbid_widening() {
    for key in [
        "allow_upstream_proxy",
        "dangerously_allow_non_loopback_proxy",
        "allow_local_binding",
        "dangerously_allow_all_unix_sockets",
    ] {
        err(
            &[&format!("[network]\n{key} = true")],
            &[&format!("[network]\n{key} = false")],
            DiagnosticKind::Constraint,
            &format!("network.{key}"),
            "false is required",
        );
        ok(
            &[&format!("[network]\n{key} = true")],
            &[&format!("[network]\n{key} = true")],
        );
        ok(
            &[&format!("[network]\n{key} = false")],
            &[&format!("[network]\n{key} = false")],
        );
    }
    // Unset (default true) is pinned, not refused.
    let c = ok(&[], &["[network]\nallow_upstream_proxy = false"]);
    assert!(!c.allow_upstream_proxy());
}

#[test]
fn managed_socket_list_pins_allow_all() {
    err(
        &["[network]\ndangerously_allow_all_unix_sockets = true"],
        &["[network]\nallow_unix_sockets = [\"/run/a.sock\"]"],
        DiagnosticKind::Constraint,
        "network.dangerously_allow_all_unix_sockets",
        "false is required",
    );
    ok(
        &["[network]\ndangerously_allow_all_unix_sockets = true"],
        &[
            "[network]\nallow_unix_sockets = [\"/run/a.sock\"]\ndangerously_allow_all_unix_sockets = true",
        ],
    );
    ok(
        &["[network]\ndangerously_allow_all_unix_sockets = true"],
        &[],
    );
    ok(
        &["[network]\nunix_sockets = { \"/run/a.sock\" = \"allow\" }"],
        &["[network]\nallow_unix_sockets = [\"/run/a.sock\"]"],
    );
    err(
        &["[network]\nunix_sockets = { \"/run/b.sock\" = \"allow\" }"],
        &["[network]\nallow_unix_sockets = [\"/run/a.sock\"]"],
        DiagnosticKind::Constraint,
        "network.unix_sockets.\"/run/b.sock\"",
        "not in the managed allow_unix_sockets",
    );
}

#[test]
fn managed_allowlist_subset_semantics() {
    let managed = "[network]\nallowed_domains = [\"*.example.com\", \"localhost:3000-3999\"]";
    ok(
        &["[network.domains]\n\"api.example.com\" = \"allow\""],
        &[managed],
    );
    ok(
        &["[network.domains]\n\"*.api.example.com\" = \"allow\""],
        &[managed],
    );
    ok(
        &["[network.domains]\n\"localhost:3001\" = \"allow\""],
        &[managed],
    );
    err(
        &["[network.domains]\n\"evil.com\" = \"allow\""],
        &[managed],
        DiagnosticKind::Constraint,
        "network.domains.\"evil.com\"",
        "not covered",
    );
    err(
        &["[network.domains]\n\"**.example.com\" = \"allow\""],
        &[managed],
        DiagnosticKind::Constraint,
        "network.domains.\"**.example.com\"",
        "not covered",
    );
    err(
        &["[network.domains]\n\"localhost\" = \"allow\""],
        &[managed],
        DiagnosticKind::Constraint,
        "network.domains.\"localhost\"",
        "not covered",
    );
    err(
        &["[network.domains]\n\"localhost:4000\" = \"allow\""],
        &[managed],
        DiagnosticKind::Constraint,
        "network.domains.\"localhost:4000\"",
        "not covered",
    );
    // Managed entries are merged in: a user layer need not repeat them.
    let c = ok(&[], &[managed]);
    assert_eq!(
        domains(&c),
        vec![
            (
                "*.example.com".into(),
                Action::Allow,
                "/managed/r0.toml".into()
            ),
            (
                "localhost:3000-3999".into(),
                Action::Allow,
                "/managed/r0.toml".into()
            ),
        ]
    );
    // A user deny of a managed allow entry stays a deny.
    let c = ok(
        &["[network.domains]\n\"*.example.com\" = \"deny\""],
        &[managed],
    );
    assert_eq!(c.domains()[0].action, Action::Deny);
}

#[test]
fn managed_allowlist_expansion() {
    let fixed = "[network]\nallowed_domains = [\"a.com\"]\nallowlist_expansion_enabled = false";
    let open = "[network]\nallowed_domains = [\"a.com\"]\nallowlist_expansion_enabled = true";
    ok(&["[network.domains]\n\"a.com\" = \"allow\""], &[fixed]);
    err(
        &["[network.domains]\n\"b.a.com\" = \"allow\""],
        &[fixed],
        DiagnosticKind::Constraint,
        "network.domains.\"b.a.com\"",
        "are fixed",
    );
    let c = ok(&["[network.domains]\n\"b.com\" = \"allow\""], &[open]);
    assert_eq!(c.domains().len(), 2);
}

#[test]
fn managed_denylist() {
    let managed = "[network]\ndenied_domains = [\"evil.com\"]";
    let c = ok(&[], &[managed]);
    assert_eq!(
        domains(&c),
        vec![("evil.com".into(), Action::Deny, "/managed/r0.toml".into())]
    );
    // A user allow of a managed deny entry is overridden (and warned about).
    let c = ok(&["[network.domains]\n\"evil.com\" = \"allow\""], &[managed]);
    assert_eq!(c.domains()[0].action, Action::Deny);
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.contains("overridden by the managed deny entry"))
    );
    let fixed = "[network]\ndenied_domains = [\"evil.com\"]\ndenylist_expansion_enabled = false";
    err(
        &["[network.domains]\n\"other.com\" = \"deny\""],
        &[fixed],
        DiagnosticKind::Constraint,
        "network.domains.\"other.com\"",
        "are fixed",
    );
    ok(&["[network.domains]\n\"other.com\" = \"deny\""], &[managed]);
    // Another zone or spelling of a fixed address denies the same (a deny entry ignores zones
    // and covers every spelling): the fixed list accepts it, and still refuses another port.
    let fixed_ip = "[network]\ndenied_domains = [\"fd00::1%eth0\", \"64:ff9b::1.2.3.4\"]\ndenylist_expansion_enabled = false";
    ok(
        &["[network.domains]\n\"[fd00::1]\" = \"deny\"\n\"::ffff:1.2.3.4\" = \"deny\""],
        &[fixed_ip],
    );
    err(
        &["[network.domains]\n\"[fd00::1%eth1]:443\" = \"deny\""],
        &[fixed_ip],
        DiagnosticKind::Constraint,
        "network.domains.\"[fd00::1%eth1]:443\"",
        "are fixed",
    );
}

/// A target that a user deny entry and a managed one both deny is refused in the managed
/// entry's name, whatever their order: removing the user entry would change nothing.
#[test]
fn a_refusal_names_the_managed_deny_entry_first() {
    use proxy_core::{Protocol, RequestMeta, Target};
    let c = ok(
        &[
            "[network.domains]\n\"**.evil.example\" = \"deny\"\n\"[fd00::1]\" = \"deny\"\n\"*\" = \"allow\"",
        ],
        &["[network]\ndenied_domains = [\"a.evil.example\", \"fd00::1%eth0\"]"],
    );
    let policy = c.policy().unwrap();
    for target in ["a.evil.example:443", "[fd00::1]:443"] {
        let meta = RequestMeta::new(
            Protocol::HttpsConnect,
            Target::parse_authority(target, 443).unwrap(),
        );
        let eval = policy.evaluate(&meta);
        let rule = eval.decision().rule.clone().expect("a deny rule");
        assert_eq!(rule.origin.as_deref(), Some("/managed/r0.toml"), "{target}");
    }
    // A target only the user denies is still refused in the user's name.
    let meta = RequestMeta::new(
        Protocol::HttpsConnect,
        Target::parse_authority("b.evil.example:443", 443).unwrap(),
    );
    let eval = policy.evaluate(&meta);
    assert_eq!(
        eval.decision().rule.clone().unwrap().origin.as_deref(),
        Some("/cfg/a.toml")
    );
}

#[test]
fn managed_allowed_domains_only() {
    let managed =
        "[network]\nallowed_domains = [\"*.corp.example\"]\nmanaged_allowed_domains_only = true";
    let c = ok(
        &[
            "[network.domains]\n\"github.com\" = \"allow\"\n\"*.corp.example\" = \"allow\"\n\"x.com\" = \"deny\"",
        ],
        &[managed],
    );
    let d = domains(&c);
    assert!(d.iter().all(|(p, _, _)| p != "github.com"), "{d:?}");
    assert!(d.iter().any(|(p, a, _)| p == "x.com" && *a == Action::Deny));
    assert_eq!(c.ignored_allow_entries().len(), 1);
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.contains("github.com is not in force"))
    );
    let policy = c.policy().unwrap();
    assert!(policy.allowed_patterns().all(|p| p != "github.com"));
}

/// A managed allow entry for an IPv4-compatible literal on one zone does not make the bare
/// IPv4 address managed: their keys once agreed (the zone was dropped from the key), and a user
/// allow of the bare address then counted as a managed entry and stayed in force.
#[test]
fn a_zoned_managed_entry_does_not_admit_its_bare_address() {
    let managed = "[network]\nallowed_domains = [\"[::127.0.0.1%eth0]\"]\nmanaged_allowed_domains_only = true";
    let c = ok(
        &["[network.domains]\n\"127.0.0.1\" = \"allow\""],
        &[managed],
    );
    assert_eq!(c.ignored_allow_entries().len(), 1, "{:?}", domains(&c));
    let policy = c.policy().unwrap();
    assert!(policy.allowed_patterns().all(|p| p != "127.0.0.1"));
}

#[test]
fn managed_lists_refuse_the_global_wildcard() {
    for text in [
        "[network]\nallowed_domains = [\"*\"]",
        "[network]\nallowed_domains = [\"[*]\"]",
        "[network]\ndenied_domains = [\"**.[*]\"]",
    ] {
        let e = build(&[], &[text]).unwrap_err();
        assert!(
            e.to_string().contains("not allowed in managed lists"),
            "{e}"
        );
    }
}

#[test]
fn managed_treat_as_public() {
    let managed = "[network]\nallow_local_binding = false\ntreat_as_public = [\"198.18.0.0/15\"]";
    ok(
        &["[network]\ntreat_as_public = [\"198.18.0.0/16\"]"],
        &[managed],
    );
    err(
        &["[network]\ntreat_as_public = [\"10.0.0.0/8\"]"],
        &[managed],
        DiagnosticKind::Constraint,
        "network.treat_as_public",
        "not inside a managed treat_as_public range",
    );
    err(
        &["[network]\ntreat_as_public = [\"10.0.0.0/8\"]"],
        &["[network]\nallow_local_binding = false"],
        DiagnosticKind::Constraint,
        "network.treat_as_public",
        "10.0.0.0/8",
    );
    ok(&["[network]\ntreat_as_public = [\"10.0.0.0/8\"]"], &[]);
    let c = ok(&[], &[managed]);
    assert_eq!(c.treat_as_public(), vec!["198.18.0.0/15".parse().unwrap()]);
}

#[test]
fn every_requirements_file_is_enforced() {
    // A second file can add constraints, never remove the first's.
    err(
        &["[network]\nmode = \"full\""],
        &[
            "[network]\nmode = \"limited\"",
            "[network]\nmode = \"full\"",
        ],
        DiagnosticKind::Constraint,
        "network.mode",
        "/managed/r0.toml",
    );
    let c = ok(
        &[],
        &[
            "[network]\ndenied_domains = [\"a.com\"]",
            "[network]\ndenied_domains = [\"b.com\"]",
        ],
    );
    assert_eq!(c.domains().len(), 2);
}

#[test]
fn requirements_diagnostics() {
    let e = build(&[], &["[network]\nmdoe = \"limited\"\nenabled = 1"]).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("/managed/r0.toml: network.mdoe: unknown key (did you mean `network.mode`?)"),
        "{s}"
    );
    assert!(s.contains("network.enabled: expected true or false"), "{s}");
}

#[test]
fn command_line_layer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[network]\nmode = \"limited\"\n[network.domains]\n\"a.com\" = \"deny\"",
    )
    .unwrap();
    let sources = crate::Sources {
        config_files: vec![file.clone()],
        system_requirements: Some(dir.path().join("absent.toml")),
        cli: CliOverrides {
            set: vec![
                "mode=\"full\"".into(),
                "limits.idle_timeout_s=60".into(),
                "network.domains.\"b.com\"=\"allow\"".into(),
            ],
            allow: vec!["a.com".into(), "c.com:8443".into()],
            deny: vec!["d.com".into()],
            mode: None,
            allow_local_binding: true,
            mitm: false,
        },
        ..Default::default()
    };
    let c = crate::load(&sources).unwrap();
    assert_eq!(c.mode(), Mode::Full);
    assert_eq!(c.settings().mode.layer.to_string(), "command-line");
    assert_eq!(c.idle_timeout().as_secs(), 60);
    assert!(c.allow_local_binding());
    let d = domains(&c);
    assert!(
        d.contains(&("a.com".into(), Action::Allow, "command-line".into())),
        "{d:?}"
    );
    assert!(d.contains(&("c.com:8443".into(), Action::Allow, "command-line".into())));
    assert!(d.contains(&("d.com".into(), Action::Deny, "command-line".into())));
    assert!(d.contains(&("b.com".into(), Action::Allow, "command-line".into())));

    let bad = crate::Sources {
        system_requirements: Some(dir.path().join("absent.toml")),
        cli: CliOverrides {
            set: vec![
                "mode=lim ited".into(),
                "nokey".into(),
                "mdoe=\"full\"".into(),
            ],
            allow: vec!["bad host".into()],
            mitm: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let e = crate::load(&bad).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("command-line: network.mode: cannot tell where the string ends"),
        "{s}"
    );
    assert!(
        s.contains("command-line: nokey: expected -c key=value"),
        "{s}"
    );
    assert!(
        s.contains("network.mdoe: unknown key (did you mean `network.mode`?)"),
        "{s}"
    );
    assert!(s.contains("--allow bad host"), "{s}");
    assert!(!s.contains("network.mitm"), "{s}");
}

/// Loads the command-line layer alone with these `-c` settings.
fn with_set(set: &[&str]) -> Result<Config, Error> {
    let dir = tempfile::tempdir().unwrap();
    crate::load(&crate::Sources {
        system_requirements: Some(dir.path().join("absent.toml")),
        cli: CliOverrides {
            set: set.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        },
        ..Default::default()
    })
}

#[test]
fn set_takes_a_plain_word_for_a_string_key_and_says_how_to_quote_otherwise() {
    let c = with_set(&[
        "mode=limited",
        "audit_log=/tmp/netproxy audit/x.jsonl",
        "proxy_url=http://127.0.0.1:3129",
        "domains.\"*.example.com\"=allow",
        "unix_sockets.\"/run/a.sock\" = allow",
    ]);
    // A value with a space is not a plain word: refused, with the quoting that works.
    let e = c.unwrap_err().to_string();
    assert!(
        e.contains(
            "command-line: network.audit_log: cannot tell where the string ends; quote it as a TOML string: -c 'audit_log=\"/tmp/netproxy audit/x.jsonl\"'"
        ),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");

    let c = with_set(&[
        "mode=limited",
        "network.audit_log=/tmp/x.jsonl",
        "proxy_url=http://127.0.0.1:3129",
        "domains.\"*.example.com\"=allow",
        "unix_sockets.\"/run/a.sock\" = allow",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.mode(), Mode::Limited);
    assert_eq!(c.audit_log(), Some("/tmp/x.jsonl"));
    assert_eq!(c.listeners().http.port(), 3129);
    assert_eq!(
        c.domains()[0].pattern.as_str(),
        "*.example.com",
        "{:?}",
        c.domains()
    );
    assert_eq!(c.unix_sockets()[0].path, "/run/a.sock");

    // TOML still works, and a plain word that TOML reads as another type is the string the
    // key wants.
    let c = with_set(&["mode='limited'", "audit_log=2026-01-01"]).unwrap();
    assert_eq!(c.mode(), Mode::Limited);
    assert_eq!(c.audit_log(), Some("2026-01-01"));

    // Keys of other types still need TOML; a bare word there is not taken as a string.
    let e = with_set(&["limits.idle_timeout_s=soon"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("network.limits.idle_timeout_s: the value must be TOML"),
        "{e}"
    );
    let e = with_set(&["enabled=yes"]).unwrap_err().to_string();
    assert!(e.contains("network.enabled: the value must be TOML"), "{e}");
    // A plain word of the wrong value still gets the key's own message.
    let e = with_set(&["mode=open"]).unwrap_err().to_string();
    assert!(
        e.contains("expected \"full\" or \"limited\", found string \"open\""),
        "{e}"
    );
    // A quote inside: the hint escapes it for TOML and for the shell.
    let e = with_set(&["audit_log=it's"]).unwrap_err().to_string();
    assert!(e.contains("quote it as a TOML string: -c "), "{e}");
    let hint = e.rsplit("-c ").next().unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf %s {hint}")])
        .output()
        .unwrap();
    let word = String::from_utf8(out.stdout).unwrap();
    let c = with_set(&[&word]).unwrap_or_else(|e| panic!("{word}: {e}"));
    assert_eq!(c.audit_log(), Some("it's"));
    // A key that is not a dotted path.
    let e = with_set(&["a b=1"]).unwrap_err().to_string();
    assert!(e.contains("command-line: a b: invalid key"), "{e}");
}

#[test]
fn a_url_as_a_pattern_names_the_host_it_meant() {
    err(
        &["[network]\nallowed_domains = [\"https://github.com/x\"]"],
        &[],
        DiagnosticKind::InvalidValue,
        "network.allowed_domains[0]",
        "a pattern is a host: did you mean github.com?",
    );
    err(
        &["[network.domains]\n\"http://example.com:8080/\" = \"deny\""],
        &[],
        DiagnosticKind::InvalidValue,
        "network.domains.\"http://example.com:8080/\"",
        "did you mean example.com:8080?",
    );
    let dir = tempfile::tempdir().unwrap();
    let e = crate::load(&crate::Sources {
        system_requirements: Some(dir.path().join("absent.toml")),
        cli: CliOverrides {
            allow: vec!["https://github.com/x".into()],
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--allow https://github.com/x: invalid pattern \"https://github.com/x\": a pattern is a host: did you mean github.com?"),
        "{e}"
    );
}

#[test]
fn mitm_is_accepted_and_turns_interception_on() {
    for text in ["[network]\nmitm = true", "[network.mitm]\nenabled = true"] {
        let c = ok(&[text], &[]);
        assert!(c.mitm(), "{text}");
    }
    let c = ok(&["[network]\nmode = \"limited\""], &[]);
    assert!(!c.mitm());
}

#[test]
fn files_are_read_in_order_and_missing_required_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        sys.join("config.toml"),
        "[network]\nmode = \"limited\"\nenable_admin = false",
    )
    .unwrap();
    std::fs::write(home.join("config.toml"), "[network]\nmode = \"full\"").unwrap();
    std::fs::write(
        sys.join("requirements.toml"),
        "[network]\ndenied_domains = [\"evil.com\"]",
    )
    .unwrap();
    let mut sources = crate::Sources {
        system_dir: Some(sys.clone()),
        home_dir: Some(home.clone()),
        system_requirements: Some(dir.path().join("absent.toml")),
        ..Default::default()
    };
    let c = crate::load(&sources).unwrap();
    assert_eq!(c.mode(), Mode::Full);
    assert!(!c.enable_admin());
    assert_eq!(
        c.domains()[0].layer,
        Layer::Managed(sys.join("requirements.toml"))
    );
    // The always-enforced file applies whatever the system dir says.
    let always = dir.path().join("always.toml");
    std::fs::write(&always, "[network]\nmode = \"limited\"").unwrap();
    sources.system_requirements = Some(always);
    let e = crate::load(&sources).unwrap_err();
    assert!(e.to_string().contains("network.mode"), "{e}");
    sources.system_requirements = Some(dir.path().join("absent.toml"));
    sources.config_files = vec![dir.path().join("missing.toml")];
    let e = crate::load(&sources).unwrap_err();
    assert!(
        e.to_string().contains("missing.toml: cannot read file"),
        "{e}"
    );
    sources.config_files = vec![];
    sources.requirement_files = vec![dir.path().join("missing-req.toml")];
    assert!(crate::load(&sources).is_err());
    std::fs::write(home.join("config.toml"), "[network\nmode=").unwrap();
    sources.requirement_files = vec![];
    let e = crate::load(&sources).unwrap_err();
    assert!(e.to_string().contains("invalid TOML"), "{e}");
}

#[test]
fn show_names_each_layer_and_redacts_the_token() {
    let c = ok(
        &[
            "[network]\nadmin_token = \"s3cret\"\nmode = \"limited\"\n[network.domains]\n\"a.com\" = \"allow\"\n[otel]\nendpoint = \"http://collector:pa55@127.0.0.1:4318\"\nheaders = { \"x-api-key\" = \"k3y\" }",
        ],
        &[],
    );
    let shown = c.show();
    let headers = shown
        .iter()
        .find(|s| s.key == "otel.headers")
        .and_then(|s| s.value.clone())
        .unwrap();
    assert_eq!(headers["x-api-key"].as_str(), Some("<redacted>"));
    assert!(!format!("{shown:?}").contains("k3y"));
    assert!(!format!("{shown:?}").contains("pa55"));
    assert_eq!(
        shown
            .iter()
            .find(|s| s.key == "otel.endpoint")
            .and_then(|s| s.value.clone())
            .unwrap()
            .as_str(),
        Some("http://<redacted>@127.0.0.1:4318")
    );
    assert!(!format!("{shown:?}").contains("s3cret"));
    let get = |k: &str| shown.iter().find(|s| s.key == k).unwrap();
    assert_eq!(get("network.mode").layer.to_string(), "/cfg/a.toml");
    assert_eq!(get("network.enabled").layer.to_string(), "default");
    assert_eq!(
        get("network.admin_token").value.as_ref().unwrap().as_str(),
        Some("<redacted>")
    );
    assert_eq!(
        get("network.domains.\"a.com\"")
            .value
            .as_ref()
            .unwrap()
            .as_str(),
        Some("allow")
    );
    assert!(!format!("{shown:?}").contains("s3cret"));
}

#[test]
fn restart_keys() {
    let a = ok(&[], &[]);
    let b = ok(
        &[
            "[network]\nproxy_url = \"127.0.0.1:9\"\nmode = \"limited\"\n[network.dns]\ntimeout_ms = 5",
        ],
        &[],
    );
    assert_eq!(
        a.restart_keys_changed(&b),
        vec![
            "network.proxy_url".to_owned(),
            "network.dns.timeout_ms".to_owned()
        ]
    );
}

/// Managed `ask` is read as a flag (`run --ask` judges it: false forbids the flag), and must
/// be a boolean.
#[test]
fn ask_is_a_managed_flag() {
    let c = ok(&[], &["[network]\nask = false"]);
    assert_eq!(c.requirements()[0].ask, Some(false));
    let c = ok(&[], &["[experimental_network]\nask = true"]);
    assert_eq!(c.requirements()[0].ask, Some(true));
    assert_eq!(
        ok(&[], &["[network]\nmode = \"full\""]).requirements()[0].ask,
        None
    );
    let e = build(&[], &["[network]\nask = \"no\""]).unwrap_err();
    assert!(e.to_string().contains("network.ask"), "{e}");
}

#[test]
fn learn_and_ask_are_requirement_only_keys() {
    // Unset: nothing forbids learn mode.
    let c = ok(&[], &[]);
    assert_eq!(c.learn_forbidden_by(), None);
    assert_eq!(c.ask_forbidden_by(), None);
    // Managed false names its file; true constrains nothing; `ask` is read and kept.
    let c = ok(
        &[],
        &[
            "[network]\nlearn = true",
            "[network]\nlearn = false\nask = false",
        ],
    );
    assert_eq!(
        c.learn_forbidden_by(),
        Some(std::path::Path::new("/managed/r1.toml"))
    );
    assert_eq!(
        c.ask_forbidden_by(),
        Some(std::path::Path::new("/managed/r1.toml"))
    );
    let c = ok(&[], &["[experimental_network]\nlearn = true\nask = true"]);
    assert_eq!((c.learn_forbidden_by(), c.ask_forbidden_by()), (None, None));
    // Not a boolean: an error; and neither is a config key.
    let mut diags = Vec::new();
    Requirements::parse(
        &PathBuf::from("/managed/r0.toml"),
        &doc("[network]\nlearn = \"no\""),
        &mut diags,
    );
    assert!(
        diags
            .iter()
            .any(|d| d.key == "network.learn" && d.to_string().contains("true or false")),
        "{diags:?}"
    );
    err(
        &["[network]\nlearn = true"],
        &[],
        DiagnosticKind::UnknownKey,
        "network.learn",
        "unknown key",
    );
}

#[test]
fn managed_requirements_that_fix_the_allowlist_say_so_in_the_policy() {
    let fixed = |requirements: &[&str]| {
        let c = ok(&[], requirements);
        let policy = c.policy().unwrap();
        assert_eq!(
            c.allowlist_fixed_by().map(|p| p.display().to_string()),
            policy.allowlist_fixed_by().map(str::to_owned)
        );
        policy.allowlist_fixed_by().map(str::to_owned)
    };
    let r0 = Some("/managed/r0.toml".to_owned());
    assert_eq!(fixed(&[]), None);
    // A managed allowlist: fixed whether user entries are ignored, refused, or must be covered.
    assert_eq!(
        fixed(&[
            "[network]\nallowed_domains = [\"a.example\"]\nmanaged_allowed_domains_only = true"
        ]),
        r0
    );
    assert_eq!(
        fixed(&[
            "[network]\nallowed_domains = [\"a.example\"]\nallowlist_expansion_enabled = false"
        ]),
        r0
    );
    assert_eq!(fixed(&["[network]\nallowed_domains = [\"a.example\"]"]), r0);
    // Expansion allowed: users (and so learn mode) may add entries.
    assert_eq!(
        fixed(&[
            "[network]\nallowed_domains = [\"a.example\"]\nallowlist_expansion_enabled = true"
        ]),
        None
    );
    // Without a managed allowlist, the flags constrain nothing.
    assert_eq!(
        fixed(&["[network]\nmanaged_allowed_domains_only = true"]),
        None
    );
}

#[test]
fn isolate_is_a_flag_that_managed_true_pins_on() {
    let c = ok(&[], &[]);
    assert!(!c.isolate());
    assert!(ok(&["[network]\nisolate = true"], &[]).isolate());
    // A later layer wins, as for every scalar.
    let c = ok(
        &["[network]\nisolate = true", "[network]\nisolate = false"],
        &[],
    );
    assert!(!c.isolate());
    assert_eq!(c.settings().isolate.layer.to_string(), "/cfg/b.toml");
    // Managed true: an unset value is pinned on, shown with the requirements file as its layer.
    let c = ok(&[], &["[network]\nisolate = true"]);
    assert!(c.isolate());
    assert_eq!(c.settings().isolate.layer.to_string(), "/managed/r0.toml");
    let c = ok(
        &["[network]\nisolate = true"],
        &["[network]\nisolate = true"],
    );
    assert!(c.isolate());
    assert_eq!(c.settings().isolate.layer.to_string(), "/cfg/a.toml");
    // Managed true and a user false: an error naming the file, the key and the constraint.
    let e = build(
        &["[network]\nisolate = false"],
        &["[network]\nisolate = true"],
    )
    .unwrap_err();
    assert_eq!(e.diagnostics.len(), 1, "{e}");
    let d = &e.diagnostics[0];
    assert_eq!(d.kind, DiagnosticKind::Constraint);
    assert_eq!(
        (d.origin.as_str(), d.key.as_str()),
        ("/cfg/a.toml", "network.isolate")
    );
    let text = d.to_string();
    assert!(
        text.contains("true is required") && text.contains("/managed/r0.toml"),
        "{text}"
    );
    // The experimental table name is accepted too, and a command-line false is refused alike.
    let mut layer = crate::layer::LayerData::new(Layer::CommandLine);
    layer.values.isolate = Some(false);
    let mut diags = Vec::new();
    let r = Requirements::parse(
        &PathBuf::from("/managed/r0.toml"),
        &doc("[experimental_network]\nisolate = true"),
        &mut diags,
    );
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(r.isolate, Some(true));
    let e = Config::from_layers(vec![layer.clone()], vec![r]).unwrap_err();
    assert!(
        e.diagnostics
            .iter()
            .any(|d| d.kind == DiagnosticKind::Constraint
                && d.key == "network.isolate"
                && d.origin == "command-line"),
        "{e}"
    );
    // Managed false constrains nothing: a user may turn isolation on or leave it off.
    assert!(
        ok(
            &["[network]\nisolate = true"],
            &["[network]\nisolate = false"]
        )
        .isolate()
    );
    let c = ok(&[], &["[network]\nisolate = false"]);
    assert!(!c.isolate());
    assert_eq!(c.settings().isolate.layer.to_string(), "default");
    // A value that is not a boolean is refused, in a layer and in a requirements file.
    err(
        &["[network]\nisolate = \"yes\""],
        &[],
        DiagnosticKind::InvalidValue,
        "network.isolate",
        "",
    );
    err(
        &[],
        &["[network]\nisolate = 1"],
        DiagnosticKind::InvalidValue,
        "network.isolate",
        "true or false",
    );
    // Serve ignores it: a change is not a restart key.
    assert!(
        ok(&[], &[])
            .restart_keys_changed(&ok(&["[network]\nisolate = true"], &[]))
            .is_empty()
    );
}

#[test]
fn managed_booleans_pin_the_admin_and_plaintext_flags() {
    let key = "dangerously_allow_non_loopback_admin";
    err(
        &[&format!("[network]\n{key} = true")],
        &[&format!("[network]\n{key} = false")],
        DiagnosticKind::Constraint,
        &format!("network.{key}"),
        "false is required",
    );
    ok(
        &[&format!("[network]\n{key} = true")],
        &[&format!("[network]\n{key} = true")],
    );
    let c = ok(&[], &[&format!("[network]\n{key} = false")]);
    assert!(!c.allow_non_loopback_admin());
    // A layer setting the plaintext flag to true is refused by a managed false.
    let key = "network.dangerously_allow_plaintext_credential_injection";
    let mut layer = crate::layer::LayerData::new(Layer::CommandLine);
    layer
        .values
        .dangerously_allow_plaintext_credential_injection = Some(true);
    let mut diags = Vec::new();
    let r = Requirements::parse(
        &PathBuf::from("/managed/r0.toml"),
        &doc("[network]\ndangerously_allow_plaintext_credential_injection = false"),
        &mut diags,
    );
    assert!(diags.is_empty(), "{diags:?}");
    let e = Config::from_layers(vec![layer.clone()], vec![r.clone()]).unwrap_err();
    assert!(
        e.diagnostics
            .iter()
            .any(|d| d.kind == DiagnosticKind::Constraint
                && d.key == key
                && d.origin == "command-line"),
        "{e}"
    );
    let mut managed_true = r;
    managed_true.dangerously_allow_plaintext_credential_injection = Some(true);
    assert!(Config::from_layers(vec![layer], vec![managed_true]).is_ok());
}

#[test]
fn user_static_hosts_cannot_redirect_a_managed_name() {
    let user = |name: &str| format!("[network.dns.hosts]\n\"{name}\" = [\"93.184.216.34\"]");
    for (managed, name) in [
        ("api.corp.test", "api.corp.test"),
        ("API.corp.test.", "api.corp.test"),
        ("*.corp.test", "api.corp.test"),
        ("**.corp.test", "corp.test"),
        ("**.corp.test", "a.b.corp.test"),
        ("api.corp.test:443", "api.corp.test"),
        ("*.corp.test:8000-8999", "x.corp.test"),
        ("region*.corp.test", "region1.corp.test"),
        ("region*.corp.test", "region.corp.test"),
        ("*.r*n.corp.test", "a.region.corp.test"),
    ] {
        err(
            &[&user(name)],
            &[&format!("[network]\nallowed_domains = [\"{managed}\"]")],
            DiagnosticKind::Constraint,
            &format!("network.dns.hosts.\"{name}\""),
            "managed allowed_domains cover",
        );
    }
    // Names the managed allowlist does not cover may be given static addresses.
    for (managed, name) in [
        ("api.corp.test", "other.corp.test"),
        ("*.corp.test", "corp.test"),
        ("region*.corp.test", "a.region1.corp.test"),
        ("region*.corp.test", "eu.corp.test"),
        ("*.r*n.corp.test", "region.corp.test"),
        ("10.0.0.1", "api.corp.test"),
    ] {
        let c = ok(
            &[&user(name)],
            &[&format!(
                "[network]\nallowed_domains = [\"{managed}\"]\nallowlist_expansion_enabled = true"
            )],
        );
        assert_eq!(c.dns_hosts()[name].len(), 1, "{managed} {name}");
    }
    // Without a managed allowlist, static hosts are the user's business.
    ok(
        &[&user("api.corp.test")],
        &["[network]\nmode = \"limited\""],
    );
    // Every user layer is held to it: the command line and the runtime layer too.
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.toml");
    std::fs::write(&req, "[network]\nallowed_domains = [\"*.corp.test\"]").unwrap();
    let mut sources = crate::Sources {
        requirement_files: vec![req],
        system_requirements: Some(dir.path().join("absent.toml")),
        cli: CliOverrides {
            set: vec!["dns.hosts={\"api.corp.test\"=[\"127.0.0.1\"]}".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let e = crate::load(&sources).unwrap_err();
    assert!(
        e.diagnostics
            .iter()
            .any(|d| d.kind == DiagnosticKind::Constraint
                && d.origin == "command-line"
                && d.key == "network.dns.hosts.\"api.corp.test\""),
        "{e}"
    );
    sources.cli = CliOverrides::default();
    crate::load(&sources).unwrap();
    let runtime = doc("[network.dns.hosts]\n\"x.corp.test\" = [\"127.0.0.1\"]");
    let e = crate::load_with(&sources, &[(Layer::Runtime, runtime)]).unwrap_err();
    assert!(
        e.diagnostics
            .iter()
            .any(|d| d.kind == DiagnosticKind::Constraint && d.origin == "runtime"),
        "{e}"
    );
}

#[test]
fn managed_static_hosts_are_fixed_and_merged() {
    let req = "[network]\nallowed_domains = [\"*.corp.test\"]\n[network.dns.hosts]\n\"API.corp.test.\" = [\"127.0.0.1\", \"::1\"]";
    let c = ok(&[], &[req]);
    let hosts = c.dns_hosts();
    assert_eq!(
        hosts["api.corp.test"],
        vec![
            "127.0.0.1".parse::<std::net::IpAddr>().unwrap(),
            "::1".parse().unwrap()
        ]
    );
    let shown = c.show();
    let entry = shown
        .iter()
        .find(|s| s.key == "network.dns.hosts.\"api.corp.test\"")
        .unwrap();
    assert_eq!(entry.layer.to_string(), "/managed/r0.toml");
    // A user entry for the same name that differs is refused, the same one is harmless.
    err(
        &["[network.dns.hosts]\n\"api.corp.test\" = [\"127.0.0.2\"]"],
        &[req],
        DiagnosticKind::Constraint,
        "network.dns.hosts.\"api.corp.test\"",
        "managed static hosts are fixed",
    );
    let c = ok(
        &["[network.dns.hosts]\n\"api.corp.test\" = [\"::1\", \"127.0.0.1\"]"],
        &[req],
    );
    assert!(matches!(
        c.show()
            .iter()
            .find(|s| s.key == "network.dns.hosts.\"api.corp.test\"")
            .unwrap()
            .layer,
        Layer::Managed(_)
    ));
    // Managed hosts need no managed allowlist, and two managed files must agree.
    let only_hosts = "[network.dns.hosts]\n\"db.corp.test\" = [\"127.0.0.1\"]";
    err(
        &["[network.dns.hosts]\n\"db.corp.test\" = [\"127.0.0.9\"]"],
        &[only_hosts],
        DiagnosticKind::Constraint,
        "network.dns.hosts.\"db.corp.test\"",
        "fixed",
    );
    err(
        &[],
        &[
            only_hosts,
            "[network.dns.hosts]\n\"db.corp.test\" = [\"127.0.0.3\"]",
        ],
        DiagnosticKind::Constraint,
        "network.dns.hosts.\"db.corp.test\"",
        "conflicts with the static host entry of /managed/r0.toml",
    );
}

#[test]
fn managed_nameservers_are_pinned() {
    let req = "[experimental_network.dns]\nnameservers = [\"127.0.0.53\", \"[::1]:5353\"]";
    let c = ok(&[], &[req]);
    assert_eq!(
        c.dns_nameservers().unwrap(),
        vec![
            "127.0.0.53:53".parse::<std::net::SocketAddr>().unwrap(),
            "[::1]:5353".parse().unwrap()
        ]
    );
    assert_eq!(
        c.settings().dns_nameservers.layer.to_string(),
        "/managed/r0.toml"
    );
    err(
        &["[network.dns]\nnameservers = [\"127.0.0.1:5300\"]"],
        &[req],
        DiagnosticKind::Constraint,
        "network.dns.nameservers",
        "managed nameservers are pinned",
    );
    // The same servers (any order, any spelling) change nothing.
    let c = ok(
        &["[network.dns]\nnameservers = [\"[::1]:5353\", \"127.0.0.53:53\"]"],
        &[req],
    );
    assert!(matches!(
        c.settings().dns_nameservers.layer,
        Layer::Managed(_)
    ));
    err(
        &[],
        &[req, "[network.dns]\nnameservers = [\"127.0.0.1\"]"],
        DiagnosticKind::Constraint,
        "network.dns.nameservers",
        "conflicts with the nameservers pinned by /managed/r0.toml",
    );
}

#[test]
fn requirements_dns_table_diagnostics() {
    let e = build(
        &[],
        &["[network.dns]\ntimeout_ms = 5\nnameserver = [\"127.0.0.1\"]\nhosts = { \"a.test\" = [\"nope\"] }"],
    )
    .unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("network.dns.timeout_ms: unknown key (requirements accept only `nameservers` and `hosts` here)"),
        "{s}"
    );
    assert!(
        s.contains("network.dns.nameserver: unknown key (did you mean `network.dns.nameservers`?)"),
        "{s}"
    );
    assert!(
        s.contains("network.dns.hosts.\"a.test\"[0]: expected an IP address string"),
        "{s}"
    );
    err(
        &[],
        &["[network.dns]\nnameservers = []"],
        DiagnosticKind::InvalidValue,
        "network.dns.nameservers",
        "at least one nameserver",
    );
    err(
        &[],
        &["[network]\ndns = 1"],
        DiagnosticKind::InvalidValue,
        "network.dns",
        "expected a table",
    );
}

#[test]
fn star_with_local_binding_is_warned_about() {
    let c = ok(
        &["[network]\nallow_local_binding = true\nallowed_domains = [\"*\"]"],
        &[],
    );
    let w = c.warnings().join("\n");
    assert!(
        w.contains("`*` is allowed (/cfg/a.toml) with allow_local_binding on (/cfg/a.toml)")
            && w.contains("169.254.169.254")
            && w.contains("fd00:ec2::254")
            && w.contains("add deny entries for them"),
        "{w}"
    );
    for layers in [
        &["[network]\nallowed_domains = [\"*\"]"][..],
        &["[network]\nallow_local_binding = true\nallowed_domains = [\"*.example.com\"]"],
    ] {
        let w = ok(layers, &[]).warnings().join("\n");
        assert!(!w.contains("169.254.169.254"), "{layers:?}: {w}");
    }
}

#[test]
fn ip_shaped_globs_are_refused() {
    for p in ["10.0.0.*", "10.*.0.1", "1*.0.0.1", "**.1*.0.0.1"] {
        for action in ["allow", "deny"] {
            err(
                &[&format!("[network.domains]\n\"{p}\" = \"{action}\"")],
                &[],
                DiagnosticKind::InvalidValue,
                &format!("network.domains.\"{p}\""),
                p,
            );
        }
        err(
            &[],
            &[&format!("[network]\nallowed_domains = [\"{p}\"]")],
            DiagnosticKind::InvalidValue,
            "network.allowed_domains[0]",
            p,
        );
    }
    err(
        &["[network]\nallowed_domains = [\"*.0.0.1\"]"],
        &[],
        DiagnosticKind::InvalidValue,
        "network.allowed_domains[0]",
        "*.0.0.1",
    );
    // A glob whose last label is a name stays a name glob.
    ok(&["[network]\nallowed_domains = [\"10*.example.com\"]"], &[]);
}

/// Sets `path`'s mode.
fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Loads with `req` as the `--requirements` file.
fn load_req(req: &std::path::Path) -> Result<Config, Error> {
    let absent = req.with_file_name("absent-system-requirements.toml");
    crate::load(&crate::Sources {
        requirement_files: vec![req.to_owned()],
        system_requirements: Some(absent),
        ..Default::default()
    })
}

#[track_caller]
fn refused(req: &std::path::Path, contains: &str) {
    let e = load_req(req).expect_err("refused");
    assert!(
        e.diagnostics
            .iter()
            .any(|d| d.kind == DiagnosticKind::InsecureFile
                && d.origin == req.display().to_string()
                && d.message.contains(contains)),
        "wanted {contains:?}, got:\n{e}"
    );
}

#[test]
fn requirements_files_others_can_write_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.toml");
    std::fs::write(&req, "[network]\nmode = \"limited\"").unwrap();
    chmod(&req, 0o644);
    let c = load_req(&req).unwrap();
    assert_eq!(c.mode(), Mode::Limited);

    // World-writable file.
    chmod(&req, 0o666);
    refused(&req, "the file is writable by every user (mode 0666)");
    assert!(crate::read_requirements(&req).is_err());
    chmod(&req, 0o644);

    // World-writable folder without the sticky bit.
    chmod(dir.path(), 0o777);
    refused(
        &req,
        "a folder writable by every user without the sticky bit (mode 0777)",
    );
    // With the sticky bit the folder is fine, unless the file itself is writable.
    chmod(dir.path(), 0o1777);
    assert_eq!(load_req(&req).unwrap().mode(), Mode::Limited);
    chmod(&req, 0o646);
    refused(&req, "the file is writable by every user");
    chmod(&req, 0o644);

    // A folder higher up counts as well.
    let nested = dir.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    let deep = nested.join("req.toml");
    std::fs::write(&deep, "[network]\nmode = \"limited\"").unwrap();
    chmod(&dir.path().join("a"), 0o777);
    refused(&deep, "a folder writable by every user");
    chmod(&dir.path().join("a"), 0o755);
    load_req(&deep).unwrap();

    // A symlink is judged by the file it leads to and the folders of both.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    let target = open.join("target.toml");
    std::fs::write(&target, "[network]\nmode = \"limited\"").unwrap();
    let link = nested.join("link.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    load_req(&link).unwrap();
    chmod(&target, 0o666);
    refused(&link, "the file is writable by every user");
    chmod(&target, 0o644);
    chmod(&open, 0o777);
    refused(&link, &format!("it lies in {}", open.display()));
    chmod(&open, 0o755);
    chmod(&nested, 0o777);
    refused(&link, &format!("it lies in {}", nested.display()));
    chmod(&nested, 0o755);
    chmod(dir.path(), 0o700);
}

#[test]
fn requirements_files_a_group_can_write_are_refused() {
    use std::os::unix::fs::chown;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let req = sub.join("req.toml");
    std::fs::write(&req, "[network]\nmode = \"limited\"").unwrap();
    if !rustix::process::geteuid().is_root() {
        eprintln!("note: not running as root: the group cases are not tested");
        return;
    }
    chown(&req, Some(0), Some(0)).unwrap();
    chown(&sub, Some(0), Some(0)).unwrap();
    // Root's group may write: fine.
    chmod(&req, 0o664);
    chmod(&sub, 0o775);
    assert_eq!(load_req(&req).unwrap().mode(), Mode::Limited);
    // Another group may write the file.
    chown(&req, None, Some(65534)).unwrap();
    refused(
        &req,
        "the file is writable by group 65534 (mode 0664), so any member of that group could change the managed constraints",
    );
    chmod(&req, 0o644);
    assert_eq!(load_req(&req).unwrap().mode(), Mode::Limited);
    // ... or a folder on its way, unless the folder has the sticky bit.
    chown(&sub, None, Some(65534)).unwrap();
    refused(
        &req,
        &format!(
            "it lies in {}, a folder writable by group 65534 without the sticky bit (mode 0775), where any member of that group can replace it",
            sub.display()
        ),
    );
    chmod(&sub, 0o1775);
    assert_eq!(load_req(&req).unwrap().mode(), Mode::Limited);
    chmod(&sub, 0o755);
    assert_eq!(load_req(&req).unwrap().mode(), Mode::Limited);
}

/// A POSIX access ACL as the kernel stores it in `system.posix_acl_access`: version 2, then
/// (tag, permissions, id) entries in tag order: the owner rw, user 65534 rw, the group r, the
/// mask rw, others r.
fn acl_granting_nobody_write() -> Vec<u8> {
    const UNDEFINED: u32 = u32::MAX;
    let entries: [(u16, u16, u32); 5] = [
        (0x01, 6, UNDEFINED), // USER_OBJ
        (0x02, 6, 65534),     // USER
        (0x04, 4, UNDEFINED), // GROUP_OBJ
        (0x10, 6, UNDEFINED), // MASK
        (0x20, 4, UNDEFINED), // OTHER
    ];
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn requirements_files_with_an_acl_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let req = sub.join("req.toml");
    std::fs::write(&req, "[network]\nmode = \"limited\"").unwrap();
    chmod(&req, 0o644);
    chmod(&sub, 0o755);
    assert_eq!(load_req(&req).unwrap().mode(), Mode::Limited);
    let acl = acl_granting_nobody_write();
    let set = |path: &std::path::Path| {
        rustix::fs::setxattr(
            path,
            "system.posix_acl_access",
            &acl,
            rustix::fs::XattrFlags::empty(),
        )
    };
    if let Err(e) = set(&req) {
        eprintln!("note: cannot set an ACL here ({e}): the ACL cases are not tested");
        return;
    }
    assert!(rustix::fs::getxattr_query(&req, "system.posix_acl_access").is_ok());
    refused(
        &req,
        "the file has a POSIX ACL (system.posix_acl_access), so its mode bits do not tell who can write it",
    );
    rustix::fs::removexattr(&req, "system.posix_acl_access").unwrap();
    chmod(&req, 0o644);
    assert_eq!(load_req(&req).unwrap().mode(), Mode::Limited);
    // On a folder on its way.
    set(&sub).unwrap();
    refused(
        &req,
        &format!(
            "it lies in {}, a folder that has a POSIX ACL (system.posix_acl_access)",
            sub.display()
        ),
    );
    rustix::fs::removexattr(&sub, "system.posix_acl_access").unwrap();
    chmod(&sub, 0o755);
    assert_eq!(load_req(&req).unwrap().mode(), Mode::Limited);
}

#[test]
fn requirements_files_not_owned_by_root_are_warned_about() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.toml");
    std::fs::write(&req, "[network]\nmode = \"limited\"").unwrap();
    if std::fs::metadata(&req).unwrap().uid() != 0 {
        eprintln!("note: not running as root: the ownership warnings are not tested");
        return;
    }
    let warned = |c: &Config| {
        c.warnings()
            .into_iter()
            .find(|w| w.contains("does not hold against processes of the same user"))
    };
    assert_eq!(warned(&load_req(&req).unwrap()), None);
    std::os::unix::fs::chown(&req, Some(65534), Some(65534)).unwrap();
    let w = warned(&load_req(&req).unwrap()).expect("a warning");
    assert!(
        w.contains(&format!(
            "requirements file {} is owned by uid 65534, not root",
            req.display()
        )),
        "{w}"
    );
    // A root-owned file in a folder another user owns can be replaced by that user.
    std::os::unix::fs::chown(&req, Some(0), Some(0)).unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let inner = sub.join("req.toml");
    std::fs::copy(&req, &inner).unwrap();
    std::os::unix::fs::chown(&sub, Some(65534), Some(65534)).unwrap();
    let w = warned(&load_req(&inner).unwrap()).expect("a warning");
    assert!(
        w.contains(&format!(
            "reached through {}, owned by uid 65534",
            sub.display()
        )),
        "{w}"
    );
    // So can a symlink that user owns.
    std::os::unix::fs::chown(&sub, Some(0), Some(0)).unwrap();
    let link = dir.path().join("link.toml");
    std::os::unix::fs::symlink(&req, &link).unwrap();
    assert_eq!(warned(&load_req(&link).unwrap()), None);
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let w = warned(&load_req(&link).unwrap()).expect("a warning");
    assert!(
        w.contains(&format!("reached through {}", link.display())),
        "{w}"
    );
}

#[test]
fn label_globs() {
    use crate::managed::label_matches;
    for (g, l, m) in [
        ("region*", "region1", true),
        ("region*", "region", true),
        ("region*", "eu", false),
        ("*", "", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("*x", "xxx", true),
        ("a*", "ba", false),
    ] {
        assert_eq!(label_matches(g, l), m, "{g} {l}");
    }
}

// === typed settings ===

/// A file that sets every scalar key to a value other than its default (the flags whose
/// feature is not built can only be written off).
const EVERY_KEY: &str = r#"
[network]
enabled = false
mode = "limited"
proxy_url = "http://127.0.0.1:3129"
enable_socks5 = false
socks_url = "http://127.0.0.1:8082"
enable_socks5_udp = false
admin_url = "http://127.0.0.1:8083"
enable_admin = false
admin_token = "t0ken"
allow_upstream_proxy = false
dangerously_allow_non_loopback_proxy = true
dangerously_allow_non_loopback_admin = true
allow_local_binding = true
dangerously_allow_all_unix_sockets = true
treat_as_public = ["10.0.0.1"]
mitm = { enabled = false }
credential_broker = false
dangerously_allow_plaintext_credential_injection = false
verify_sni = false
isolate = true
audit_log = "/var/log/netproxy.jsonl"
[network.dns]
nameservers = ["127.0.0.53"]
timeout_ms = 1
[network.limits]
max_connections = 2
connect_timeout_ms = 3
header_timeout_ms = 4
idle_timeout_s = 5
max_header_bytes = 2048
[otel]
exporter = "otlp-grpc"
endpoint = "http://u:pa55@127.0.0.1:4317"
headers = { "x-api-key" = "k3y" }
"#;

#[test]
fn every_schema_key_has_a_field_and_a_default() {
    use crate::schema::{FIELDS, SCALARS, Settings};
    let paths: Vec<&str> = SCALARS.iter().map(|(p, _)| *p).collect();
    assert_eq!(paths, FIELDS.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    for (field, path) in FIELDS {
        let named = path
            .strip_prefix("network.")
            .unwrap_or(path)
            .replace('.', "_");
        assert_eq!(*field, named, "the field of {path}");
    }
    // The defaults, as `config show` prints them.
    let defaults: Vec<(String, String, String)> = Settings::defaults()
        .shown()
        .into_iter()
        .map(|s| {
            let v = s
                .value
                .map_or_else(|| "(unset)".to_owned(), |v| v.to_string());
            (s.key, v, s.layer.to_string())
        })
        .collect();
    let expected = [
        ("network.enabled", "true"),
        ("network.mode", "\"full\""),
        ("network.proxy_url", "\"http://127.0.0.1:3128\""),
        ("network.enable_socks5", "true"),
        ("network.socks_url", "\"http://127.0.0.1:8081\""),
        ("network.enable_socks5_udp", "true"),
        ("network.admin_url", "\"http://127.0.0.1:8080\""),
        ("network.enable_admin", "true"),
        ("network.admin_token", "(unset)"),
        ("network.allow_upstream_proxy", "true"),
        ("network.dangerously_allow_non_loopback_proxy", "false"),
        ("network.dangerously_allow_non_loopback_admin", "false"),
        ("network.allow_local_binding", "false"),
        ("network.dangerously_allow_all_unix_sockets", "false"),
        ("network.treat_as_public", "[]"),
        ("network.mitm", "false"),
        ("network.credential_broker", "false"),
        (
            "network.dangerously_allow_plaintext_credential_injection",
            "false",
        ),
        ("network.verify_sni", "false"),
        ("network.isolate", "false"),
        ("network.audit_log", "(unset)"),
        ("network.dns.nameservers", "(unset)"),
        ("network.dns.timeout_ms", "2000"),
        ("network.limits.max_connections", "4096"),
        ("network.limits.connect_timeout_ms", "10000"),
        ("network.limits.header_timeout_ms", "10000"),
        ("network.limits.idle_timeout_s", "300"),
        ("network.limits.max_header_bytes", "65536"),
        ("otel.exporter", "\"none\""),
        ("otel.endpoint", "(unset)"),
        ("otel.headers", "(unset)"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned(), "default".to_owned()));
    assert_eq!(defaults, expected);
    // Every default is a value the parser accepts.
    let mut diags = Vec::new();
    let mut doc = Table::new();
    for s in Settings::defaults().shown() {
        let Some(value) = s.value else { continue };
        let mut path: Vec<&str> = s.key.split('.').collect();
        let last = path.pop().unwrap();
        let mut t = &mut doc;
        for p in path {
            t = t
                .entry(p)
                .or_insert_with(|| toml::Value::Table(Table::new()))
                .as_table_mut()
                .unwrap();
        }
        t.insert(last.to_owned(), value);
    }
    let layer = parse_layer(Layer::CommandLine, "defaults", &doc, &mut diags);
    assert!(diags.is_empty(), "{diags:?}");
    let c = Config::from_layers(vec![layer], Vec::new()).unwrap();
    let values = |s: &Settings| {
        s.shown()
            .into_iter()
            .map(|v| (v.key, v.value))
            .collect::<Vec<_>>()
    };
    assert_eq!(values(c.settings()), values(&Settings::defaults()));
}

#[test]
fn show_lists_every_key_with_the_layer_that_set_it() {
    let c = ok(
        &[EVERY_KEY, "[network.domains]\n\"a.com\" = \"allow\""],
        &[],
    );
    let shown = c.show();
    let scalars = crate::schema::SCALARS;
    assert_eq!(shown.len(), scalars.len() + 1);
    for ((key, _), s) in scalars.iter().zip(&shown) {
        assert_eq!(s.key, *key);
        assert_eq!(s.layer.to_string(), "/cfg/a.toml", "{key}");
    }
    assert_eq!(shown[scalars.len()].key, "network.domains.\"a.com\"");
    assert_eq!(shown[scalars.len()].layer.to_string(), "/cfg/b.toml");
    // The typed values.
    let s = c.settings();
    assert!(!s.enabled.value && !c.enabled());
    assert_eq!(c.admin_token(), Some("t0ken"));
    assert_eq!(c.otel_exporter(), Some("otlp-grpc"));
    assert_eq!(c.otel_endpoint(), Some("http://u:pa55@127.0.0.1:4317"));
    assert_eq!(
        c.otel_headers(),
        vec![("x-api-key".to_owned(), "k3y".to_owned())]
    );
    assert_eq!(c.audit_log(), Some("/var/log/netproxy.jsonl"));
    assert_eq!(c.max_header_bytes(), 2048);
    assert_eq!(c.idle_timeout().as_secs(), 5);
    // Neither `config show` nor a debug print of the config holds a secret.
    for text in [format!("{shown:?}"), format!("{c:?}")] {
        for secret in ["t0ken", "k3y", "pa55"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}

#[test]
fn restart_keys_are_the_listeners_dns_limits_otel_and_audit_log() {
    let a = ok(&[], &[]);
    let b = ok(&[EVERY_KEY], &[]);
    let restart = |k: &str| {
        k.starts_with("network.dns.")
            || k.starts_with("network.limits.")
            || k.starts_with("otel.")
            || k.ends_with("_url")
            || k.starts_with("network.enable_")
            || k == "network.audit_log"
    };
    let expected: Vec<String> = crate::schema::SCALARS
        .iter()
        .map(|(k, _)| (*k).to_owned())
        .filter(|k| restart(k))
        .collect();
    assert_eq!(a.restart_keys_changed(&b), expected);
    assert_eq!(b.restart_keys_changed(&a), expected);
    assert!(b.restart_keys_changed(&b).is_empty());
}

#[test]
fn values_are_shown_as_written_and_typed_as_parsed() {
    let c = ok(
        &[
            "[network]\ntreat_as_public = [\" 10.0.0.1 \"]\nmitm = { enabled = false, hooks = {} }\n[network.dns]\nnameservers = [\"127.0.0.53\"]",
        ],
        &[],
    );
    let s = c.settings();
    assert_eq!(c.treat_as_public(), vec!["10.0.0.1/32".parse().unwrap()]);
    assert_eq!(
        s.treat_as_public.value.written().to_string(),
        "[\" 10.0.0.1 \"]"
    );
    assert_eq!(
        c.dns_nameservers(),
        Some(vec!["127.0.0.53:53".parse().unwrap()])
    );
    assert!(!s.mitm.value.value());
    let shown = |k: &str| {
        c.show()
            .into_iter()
            .find(|v| v.key == k)
            .and_then(|v| v.value)
            .unwrap()
            .to_string()
    };
    assert_eq!(shown("network.dns.nameservers"), "[\"127.0.0.53\"]");
    assert_eq!(shown("network.mitm"), "false");
    // A managed merge writes the merged list anew, keeping the user's layer.
    let c = ok(
        &["[network]\ntreat_as_public = [\"10.0.0.1\"]"],
        &["[network]\ntreat_as_public = [\"100.64.0.0/10\"]"],
    );
    let tap = &c.settings().treat_as_public;
    assert_eq!(
        tap.value.written().to_string(),
        "[\"10.0.0.1/32\", \"100.64.0.0/10\"]"
    );
    assert_eq!(tap.layer.to_string(), "/cfg/a.toml");
    // The same value written differently is a change (as `config show` shows it).
    let a = ok(&["[network.dns]\nnameservers = [\"127.0.0.53\"]"], &[]);
    let b = ok(&["[network.dns]\nnameservers = [\"127.0.0.53:53\"]"], &[]);
    assert_eq!(
        a.restart_keys_changed(&b),
        vec!["network.dns.nameservers".to_owned()]
    );
}

#[test]
fn runtime_layer_edits() {
    use crate::runtime::{DomainEdit, RuntimeLayer};
    use proxy_core::DomainChange;
    let change = |allow: &[&str], deny: &[&str]| DomainChange {
        allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        deny: deny.iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut runtime = RuntimeLayer::default();
    assert!(runtime.is_empty() && runtime.to_layer().is_none());
    runtime.set_mode(Mode::Limited);
    runtime.apply(&DomainEdit::parse(&change(&["b.com", "A.com"], &["c.com"])).unwrap());
    // The same canonical pattern replaces the earlier entry, whatever its spelling.
    runtime.apply(&DomainEdit::parse(&change(&["c.com"], &["a.COM."])).unwrap());
    let entries: Vec<(&str, Action)> = runtime.domains().collect();
    assert_eq!(
        entries,
        vec![
            ("a.COM.", Action::Deny),
            ("b.com", Action::Allow),
            ("c.com", Action::Allow)
        ]
    );
    assert_eq!(runtime.mode(), Some(Mode::Limited));
    // A bad pattern refuses the whole change.
    let e = DomainEdit::parse(&change(&["d.com"], &["bad host"])).unwrap_err();
    assert!(
        e.to_string().starts_with("\"bad host\": invalid pattern"),
        "{e}"
    );
    // The loader reads it as the runtime layer, above the files.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.toml");
    std::fs::write(
        &file,
        "[network]\nmode = \"full\"\n[network.domains]\n\"a.com\" = \"allow\"",
    )
    .unwrap();
    let sources = crate::Sources {
        config_files: vec![file],
        system_requirements: Some(dir.path().join("absent.toml")),
        ..Default::default()
    };
    let c = crate::load_with(&sources, runtime.to_layer().as_slice()).unwrap();
    assert_eq!(c.mode(), Mode::Limited);
    assert_eq!(c.settings().mode.layer, Layer::Runtime);
    let d = domains(&c);
    assert_eq!(d[0], ("a.COM.".into(), Action::Deny, "runtime".into()));
    assert!(d.contains(&("b.com".into(), Action::Allow, "runtime".into())));
}

const HOOKS: &str = r#"
[network.mitm]
enabled = true

[network.mitm.hooks.issues]
host = "API.github.com"
methods = ["get", "POST"]
path_prefixes = ["pattern:/repos/*/codex/issues*", "/user"]
query = { state = ["open", "pattern:tri*"] }
headers = { "x-github-api-version" = ["2022-11-28"], authorization = [] }
action = ["auth"]

[network.mitm.hooks.anything]
host = "api.github.com"
methods = ["GET"]
path_prefixes = ["/"]

[network.mitm.actions.auth]
strip_request_headers = ["authorization", "cookie"]
inject_request_headers = [{ name = "authorization", secret_env_var = "GH_REAL", prefix = "Bearer " }]
"#;

#[test]
fn hooks_and_actions_are_read_in_the_order_written() {
    let c = ok(&[HOOKS], &[]);
    let names: Vec<&str> = c.hooks().iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["issues", "anything"]);
    let h = &c.hooks()[0];
    assert_eq!(h.host, "API.github.com");
    assert_eq!(h.methods, ["get", "POST"]);
    assert_eq!(
        h.query,
        [(
            "state".to_owned(),
            vec!["open".to_owned(), "pattern:tri*".to_owned()]
        )]
    );
    assert_eq!(h.headers.len(), 2);
    assert_eq!(h.actions, ["auth"]);
    assert_eq!(h.layer.to_string(), "/cfg/a.toml");
    let a = &c.hook_actions()[0];
    assert_eq!(a.strip_request_headers, ["authorization", "cookie"]);
    assert_eq!(
        a.inject_request_headers,
        [crate::Injection {
            name: "authorization".into(),
            secret: crate::SecretRef::EnvVar("GH_REAL".into()),
            prefix: "Bearer ".into(),
        }]
    );
    // The policy has them: the hooked host is intercepted in full mode.
    let policy = c.policy().unwrap();
    assert!(policy.is_hooked(&proxy_core::Host::parse("api.github.com").unwrap()));
    // `config show` lists each, with where the secret is and never a value.
    let shown: Vec<String> = c.show().iter().map(|v| v.key.clone()).collect();
    assert!(
        shown.contains(&"network.mitm.hooks.issues".to_owned()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"network.mitm.actions.auth".to_owned()),
        "{shown:?}"
    );
}

#[test]
fn a_higher_layer_replaces_the_hooks_and_overlays_actions_by_name() {
    let upper = r#"
[network.mitm]
enabled = true
[network.mitm.hooks.only]
host = "example.com"
methods = ["GET"]
path_prefixes = ["/"]
action = ["auth", "extra"]
[network.mitm.actions.extra]
strip_request_headers = ["x-debug"]
"#;
    let c = ok(&[HOOKS, upper], &[]);
    let names: Vec<&str> = c.hooks().iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["only"]);
    let actions: Vec<&str> = c.hook_actions().iter().map(|a| a.name.as_str()).collect();
    assert_eq!(actions, ["auth", "extra"]);
    // A layer without hooks keeps the lower ones.
    let c = ok(&[HOOKS, "[network]\nmode = \"limited\""], &[]);
    assert_eq!(c.hooks().len(), 2);
}

#[test]
fn bad_hooks_are_refused_with_their_key() {
    let hook =
        |body: &str| format!("[network.mitm]\nenabled = true\n[network.mitm.hooks.h]\n{body}");
    let base = "host = \"api.github.com\"\nmethods = [\"GET\"]\npath_prefixes = [\"/\"]\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (hook("host = \"*.github.com\"\nmethods = [\"GET\"]\npath_prefixes = [\"/\"]"), "network.mitm.hooks.h", "exact hosts"),
        (hook("methods = [\"GET\"]\npath_prefixes = [\"/\"]"), "network.mitm.hooks.h.host", "exact host"),
        (hook("host = \"a.com\"\npath_prefixes = [\"/\"]"), "network.mitm.hooks.h.methods", "at least one"),
        (hook("host = \"a.com\"\nmethods = []\npath_prefixes = [\"/\"]"), "network.mitm.hooks.h", "methods must not be empty"),
        (hook("host = \"a.com\"\nmethods = [\"GET\"]\npath_prefixes = [\"pattern:/repos/[\"]"), "network.mitm.hooks.h", "invalid glob pattern"),
        (hook(&format!("{base}body = \"x\"")), "network.mitm.hooks.h.body", "cannot match on the request body"),
        (hook(&format!("{base}methds = [\"GET\"]")), "network.mitm.hooks.h.methds", "did you mean `methods`"),
        (hook(&format!("{base}action = [\"nope\"]")), "network.mitm.hooks.h.action", "no action \"nope\""),
        (hook(&format!("{base}query = {{ \"\" = [\"x\"] }}")), "network.mitm.hooks.h", "empty query key"),
        (
            format!("[network.mitm]\nenabled = false\n[network.mitm.hooks.h]\n{base}"),
            "network.mitm.hooks",
            "need HTTPS interception",
        ),
        (
            "[network.mitm.actions.a]\ninject_request_headers = [{ name = \"x\", secret_file = \"rel/path\" }]".to_owned(),
            "network.mitm.actions.a.inject_request_headers[0].secret_file",
            "absolute path",
        ),
        (
            "[network.mitm.actions.a]\ninject_request_headers = [{ name = \"x\", secret_file = \"/p\", secret_env_var = \"V\" }]".to_owned(),
            "network.mitm.actions.a.inject_request_headers[0]",
            "exactly one of secret_env_var or secret_file",
        ),
        (
            "[network.mitm.actions.a]\ninject_request_headers = [{ name = \"bad header\", secret_env_var = \"V\" }]".to_owned(),
            "network.mitm.actions.a.inject_request_headers[0].name",
            "invalid header name",
        ),
        (
            "[network.mitm.actions.a]\ninject_request_headers = [{ name = \"Proxy-Authorization\", secret_env_var = \"V\" }]".to_owned(),
            "network.mitm.actions.a.inject_request_headers[0].name",
            "manages itself",
        ),
        (
            "[network.mitm.actions.a]\nstrip_request_headers = [\"host\"]".to_owned(),
            "network.mitm.actions.a.strip_request_headers[0]",
            "manages itself",
        ),
        (
            "[network.mitm.actions.a]\nstrip_request_headers = [\"a b\"]".to_owned(),
            "network.mitm.actions.a.strip_request_headers[0]",
            "invalid header name",
        ),
    ];
    for (text, key, contains) in cases {
        err(&[&text], &[], DiagnosticKind::InvalidValue, key, contains);
    }
}

#[test]
fn credential_grants_are_read_and_need_the_broker() {
    let grant = r#"
[network]
credential_broker = true
[network.credentials.gitlab]
env = "GITLAB_TOKEN"
hosts = ["gitlab.example.com"]
path_prefixes = ["/api/v4"]
send = ["header", "bearer"]
header = "PRIVATE-TOKEN"
"#;
    let c = ok(&[grant], &[]);
    let g = &c.credentials()[0];
    assert_eq!(g.name, "gitlab");
    assert_eq!(g.env, "GITLAB_TOKEN");
    assert_eq!(g.send, ["header", "bearer"]);
    assert_eq!(g.header.as_deref(), Some("PRIVATE-TOKEN"));
    assert!(
        c.show()
            .iter()
            .any(|v| v.key == "network.credentials.gitlab")
    );
    let bad = |body: &str, key: &str, contains: &str| {
        let text = format!("[network.credentials.g]\n{body}");
        err(&[&text], &[], DiagnosticKind::InvalidValue, key, contains);
    };
    bad(
        "hosts = [\"a.test\"]",
        "network.credentials.g.env",
        "needs `env`",
    );
    bad(
        "env = \"T\"",
        "network.credentials.g.hosts",
        "at least one host",
    );
    bad(
        "env = \"T\"\nhosts = [\"a.test\"]\nsecret_file = \"rel\"",
        "network.credentials.g.secret_file",
        "absolute path",
    );
    bad(
        "env = \"T\"\nhosts = [\"a.test\"]\nport = 0",
        "network.credentials.g.port",
        "expected a port",
    );
    bad(
        "env = \"T\"\nhosts = [\"a.test\"]\nhots = 1",
        "network.credentials.g.hots",
        "did you mean `hosts`",
    );
    // Grants without the broker are refused, not ignored.
    err(
        &["[network.credentials.g]\nenv = \"T\"\nhosts = [\"a.test\"]"],
        &[],
        DiagnosticKind::InvalidValue,
        "network.credentials",
        "need the credential broker",
    );
}

#[test]
fn near_miss_keys_that_differ_by_a_unit_are_suggested() {
    for (text, key, want) in [
        (
            "[network.dns]\ntimeout = 5",
            "network.dns.timeout",
            "network.dns.timeout_ms",
        ),
        (
            "[network.limits]\nidle_timeout_ms = 5",
            "network.limits.idle_timeout_ms",
            "network.limits.idle_timeout_s",
        ),
        (
            "[network.limits]\nconnect_timeout = 5",
            "network.limits.connect_timeout",
            "network.limits.connect_timeout_ms",
        ),
        (
            "[network.limits]\nheader_timeout_secs = 5",
            "network.limits.header_timeout_secs",
            "network.limits.header_timeout_ms",
        ),
        (
            "[network.limits]\nmax_header = 5",
            "network.limits.max_header",
            "network.limits.max_header_bytes",
        ),
        // In another table, with or without the unit.
        (
            "[network]\ntimeout_ms = 5",
            "network.timeout_ms",
            "network.dns.timeout_ms",
        ),
        (
            "[network]\ntimeout = 5",
            "network.timeout",
            "network.dns.timeout_ms",
        ),
        (
            "[network]\nidle_timeout = 5",
            "network.idle_timeout",
            "network.limits.idle_timeout_s",
        ),
        // A profile's table is suggested against the schema's.
        (
            "default_permissions = \"p\"\n[permissions.p.network.dns]\ntimeout = 5",
            "permissions.p.network.dns.timeout",
            "network.dns.timeout_ms",
        ),
    ] {
        err(
            &[text],
            &[],
            DiagnosticKind::UnknownKey,
            key,
            &format!("unknown key (did you mean `{want}`?)"),
        );
    }
}

/// The keys of the diagnostics of one config layer.
fn keys_of(text: &str) -> Vec<String> {
    build(&[text], &[])
        .err()
        .unwrap_or_else(|| panic!("expected errors for {text}"))
        .diagnostics
        .into_iter()
        .map(|d| d.key)
        .collect()
}

#[test]
fn every_bad_entry_of_a_list_is_reported() {
    assert_eq!(
        keys_of("[network]\ntreat_as_public = [\"x\", \"10.0.0.0/8\", 5, \"y\"]"),
        [
            "network.treat_as_public[0]",
            "network.treat_as_public[2]",
            "network.treat_as_public[3]"
        ]
    );
    assert_eq!(
        keys_of("[network.dns]\nnameservers = [\"127.0.0.53\", \"dns.example\", true]"),
        ["network.dns.nameservers[1]", "network.dns.nameservers[2]"]
    );
    assert_eq!(
        keys_of("[network.dns.hosts]\n\"a.test\" = [\"1.2.3.4\", \"nope\", \"no\"]"),
        [
            "network.dns.hosts.\"a.test\"[1]",
            "network.dns.hosts.\"a.test\"[2]"
        ]
    );
    assert_eq!(
        keys_of(
            "[network]\nallowed_domains = [\"a b\", \"ok.test\", \"https://x.test/\", 7]\ndenied_domains = [\"*\", \"10.*.0.1\"]"
        ),
        [
            "network.allowed_domains[0]",
            "network.allowed_domains[2]",
            "network.allowed_domains[3]",
            "network.denied_domains[0]",
            "network.denied_domains[1]"
        ]
    );
    assert_eq!(
        keys_of(
            "[network.mitm]\nenabled = true\n[network.mitm.actions.a]\nstrip_request_headers = [\"host\", \"x-ok\", 5, \"a b\"]"
        ),
        [
            "network.mitm.actions.a.strip_request_headers[2]",
            "network.mitm.actions.a.strip_request_headers[0]",
            "network.mitm.actions.a.strip_request_headers[3]"
        ]
    );
    assert_eq!(
        keys_of(
            "[network]\ncredential_broker = true\n[network.credentials.g]\nenv = \"T\"\nhosts = [\"a.test\", 1, false]"
        ),
        [
            "network.credentials.g.hosts[1]",
            "network.credentials.g.hosts[2]"
        ]
    );
    // Managed lists too.
    let e = build(
        &[],
        &["[network]\ntreat_as_public = [\"x\", \"10.0.0.0/8\", \"y\"]\nallow_unix_sockets = [1, \"/run/a.sock\", []]\nallowed_domains = [\"*\", \"https://a.test\"]"],
    )
    .unwrap_err();
    let keys: Vec<&str> = e.diagnostics.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "network.treat_as_public[0]",
            "network.treat_as_public[2]",
            "network.allow_unix_sockets[0]",
            "network.allow_unix_sockets[2]",
            "network.allowed_domains[0]",
            "network.allowed_domains[1]"
        ],
        "{e}"
    );
}

/// The (line, column) of each diagnostic, by key.
fn positions(e: &Error) -> Vec<(String, Option<(u32, u32)>)> {
    e.diagnostics
        .iter()
        .map(|d| (d.key.clone(), d.position.map(|p| (p.line, p.column))))
        .collect()
}

#[test]
fn validate_gives_every_problem_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("team.toml");
    std::fs::write(
        &file,
        "# team config\n[network]\nmdoe = \"limited\"\nenabled = \"yes\"\ntreat_as_public = [\"10.0.0.0/8\", \"x\"]\n\n[network.dns]\ntimeout = 5\n\n[network.domains]\n\"https://github.com/x\" = \"allow\"\n",
    )
    .unwrap();
    let e = crate::validate_files(std::slice::from_ref(&file)).unwrap_err();
    assert_eq!(
        positions(&e),
        [
            ("network.mdoe".to_owned(), Some((3, 1))),
            ("network.enabled".to_owned(), Some((4, 11))),
            ("network.treat_as_public[1]".to_owned(), Some((5, 34))),
            ("network.dns.timeout".to_owned(), Some((8, 1))),
            (
                "network.domains.\"https://github.com/x\"".to_owned(),
                Some((11, 1))
            ),
        ],
        "{e}"
    );
    let shown = e.to_string();
    assert!(
        shown.contains(&format!(
            "{}:8:1: network.dns.timeout: unknown key (did you mean `network.dns.timeout_ms`?)",
            file.display()
        )),
        "{shown}"
    );

    // Problems found once the layer is typed: grants without the broker, at their table.
    std::fs::write(
        &file,
        "[network]\naudit_log = \"/tmp/a.jsonl\"\n\n[network.credentials.gitlab]\nenv = \"GITLAB_TOKEN\"\nhosts = [\"gitlab.example.com\"]\n",
    )
    .unwrap();
    let e = crate::validate_files(std::slice::from_ref(&file)).unwrap_err();
    assert_eq!(
        positions(&e),
        [("network.credentials".to_owned(), Some((4, 10)))],
        "{e}"
    );

    // A file that is not TOML: where it stops being TOML.
    std::fs::write(&file, "[network]\nmode = \"full\"\nenabled = tru\n").unwrap();
    let e = crate::validate_files(std::slice::from_ref(&file)).unwrap_err();
    assert_eq!(positions(&e), [(String::new(), Some((3, 11)))], "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}:3:11: invalid TOML: ", file.display())),
        "{e}"
    );

    // The profile shape: at the key inside the profile.
    std::fs::write(
        &file,
        "default_permissions = \"ci\"\n\n[permissions.ci.network]\nmode = \"open\"\n",
    )
    .unwrap();
    let e = crate::validate_files(std::slice::from_ref(&file)).unwrap_err();
    assert_eq!(
        positions(&e),
        [("permissions.ci.network.mode".to_owned(), Some((4, 8)))],
        "{e}"
    );
}

#[test]
fn a_load_places_diagnostics_in_config_and_requirements_files() {
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("user.toml");
    let req = dir.path().join("req.toml");
    std::fs::write(&user, "[network]\n\nmode = \"full\"\n").unwrap();
    std::fs::write(
        &req,
        "[network]\nmode = \"limited\"\nallowed_domains = [\"a.test\", \"b c\"]\n",
    )
    .unwrap();
    let sources = crate::Sources {
        config_files: vec![user.clone()],
        requirement_files: vec![req.clone()],
        system_requirements: Some(dir.path().join("absent.toml")),
        ..Default::default()
    };
    let e = crate::load(&sources).unwrap_err();
    assert_eq!(
        positions(&e),
        [("network.allowed_domains[1]".to_owned(), Some((3, 30)))],
        "{e}"
    );
    std::fs::write(&req, "[network]\nmode = \"limited\"\n").unwrap();
    // A constraint violation: at the value in the user's file that widens it.
    let e = crate::load(&sources).unwrap_err();
    assert_eq!(e.diagnostics.len(), 1, "{e}");
    assert_eq!(e.diagnostics[0].origin, user.display().to_string());
    assert_eq!(
        e.diagnostics[0].position.map(|p| (p.line, p.column)),
        Some((3, 8)),
        "{e}"
    );
    // The command line has no position.
    let e = crate::load(&crate::Sources {
        cli: CliOverrides {
            set: vec!["mdoe=1".into()],
            ..Default::default()
        },
        ..sources
    })
    .unwrap_err();
    assert!(
        e.diagnostics
            .iter()
            .any(|d| d.origin == "command-line" && d.position.is_none()),
        "{e}"
    );
}

/// A key set in both `[network]` and `[experimental_network]` of one requirements file is an
/// error: one value would replace the other (a managed deny list, `enabled = false`).
#[test]
fn a_requirement_in_both_tables_of_one_file_is_an_error() {
    let both = "[network]\ndenied_domains = [\"evil.example\"]\nenabled = false\n\
                [experimental_network]\ndenied_domains = [\"other.example\"]\nenabled = true";
    for key in ["denied_domains", "enabled"] {
        err(
            &[],
            &[both],
            DiagnosticKind::InvalidValue,
            &format!("experimental_network.{key}"),
            "also set, to another value, in [network] of this file",
        );
    }
    let dns = "[network.dns]\nnameservers = [\"127.0.0.53\"]\n\
               [experimental_network.dns]\nnameservers = [\"127.0.0.54\"]";
    err(
        &[],
        &[dns],
        DiagnosticKind::InvalidValue,
        "experimental_network.dns",
        "also set, to another value, in [network]",
    );
    // The same value in both is one requirement.
    let c = ok(
        &[],
        &[
            "[network]\nenabled = false\ndenied_domains = [\"evil.example\"]\n\
           [experimental_network]\nenabled = false\ndenied_domains = [\"evil.example\"]",
        ],
    );
    assert!(!c.enabled());
    // Different keys in the two tables are one set of requirements.
    let c = ok(
        &[],
        &["[network]\ndenied_domains = [\"evil.example\"]\n\
           [experimental_network]\nenabled = false"],
    );
    assert!(!c.enabled());
    assert_eq!(
        domains(&c),
        vec![(
            "evil.example".into(),
            Action::Deny,
            "/managed/r0.toml".into()
        )]
    );
}
