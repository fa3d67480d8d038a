//! `config`: config loading on arbitrary layers, a requirements file and `-c` values
//! ([`proxy_config::load_texts`]). The input is split at `0xff` bytes (never part of UTF-8
//! text): the first part is the user's config file, the second a second config file, the third
//! a requirements file, the rest `-c` values. Whatever the input: a clear error or a config,
//! never a panic; an error's positions lie inside the text they point into; and a config that
//! loads keeps the requirements' pins (`enabled = false`, `mode = "limited"`, `isolate = true`,
//! every `false` switch), its policy refuses a target of every managed deny entry as denied, and, where the
//! requirements set `allowed_domains` without `allowlist_expansion_enabled = true`, every target
//! of an allow entry in force that the policy admits is one a managed allow entry admits. The
//! managed entries are read from the requirements text with `toml` (not the loader under test);
//! whether a pattern matches a target is judged by a policy of that pattern alone.

use std::net::IpAddr;

use proxy_config::{Action, CliOverrides, Config, load_texts};
use proxy_core::{Host, Mode, Protocol, Reason, RequestMeta, Target};
use proxy_policy::{Evaluation, Pattern, PatternKind, Policy};

/// The requirement pins checked on every config that loads: (key under `[network]`, value).
const PINS: &[(&str, &str)] = &[
    ("enabled", "false"),
    ("mode", "limited"),
    ("allow_local_binding", "false"),
    ("allow_upstream_proxy", "false"),
    ("dangerously_allow_all_unix_sockets", "false"),
    ("dangerously_allow_non_loopback_proxy", "false"),
    ("dangerously_allow_non_loopback_admin", "false"),
    ("dangerously_allow_plaintext_credential_injection", "false"),
    ("isolate", "true"),
];

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let parts: Vec<String> = data
        .split(|b| *b == 0xff)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let part = |i: usize| parts.get(i).map(String::as_str);
    let mut configs = vec![("user.toml", part(0).unwrap_or_default())];
    if let Some(second) = part(1) {
        configs.push(("second.toml", second));
    }
    let requirements: Vec<(&str, &str)> = part(2)
        .map(|r| ("requirements.toml", r))
        .into_iter()
        .collect();
    let cli = CliOverrides {
        set: parts.iter().skip(3).take(4).cloned().collect(),
        ..CliOverrides::default()
    };
    let texts: Vec<(&str, &str)> = configs.iter().chain(&requirements).copied().collect();
    match load_texts(&configs, &requirements, &cli) {
        Err(e) => {
            assert!(!e.diagnostics.is_empty(), "an error without a diagnostic");
            for d in &e.diagnostics {
                assert!(
                    !d.message.is_empty(),
                    "a diagnostic without a message: {d:?}"
                );
                let (Some(pos), Some((_, text))) =
                    (d.position, texts.iter().find(|(o, _)| *o == d.origin))
                else {
                    continue;
                };
                let lines = text.split('\n').count();
                assert!(
                    pos.line >= 1 && pos.column >= 1 && pos.line as usize <= lines,
                    "{d:?} points outside its text of {lines} lines"
                );
            }
        }
        Ok(config) => {
            let Some(required) = part(2).and_then(|r| r.parse::<toml::Table>().ok()) else {
                return;
            };
            let network = required
                .get("network")
                .or_else(|| required.get("experimental_network"))
                .and_then(toml::Value::as_table);
            let Some(network) = network else {
                return;
            };
            managed_lists_hold(&config, &required);
            for (key, value) in PINS {
                let pinned = match network.get(*key) {
                    Some(toml::Value::Boolean(b)) => b.to_string() == *value,
                    Some(toml::Value::String(s)) => s == value,
                    _ => false,
                };
                if !pinned {
                    continue;
                }
                let holds = match *key {
                    "enabled" => !config.enabled(),
                    "mode" => config.mode() == Mode::Limited,
                    "allow_local_binding" => !config.allow_local_binding(),
                    "allow_upstream_proxy" => !config.allow_upstream_proxy(),
                    "dangerously_allow_all_unix_sockets" => !config.allow_all_unix_sockets(),
                    "dangerously_allow_non_loopback_proxy" => !config.allow_non_loopback_proxy(),
                    "dangerously_allow_non_loopback_admin" => !config.allow_non_loopback_admin(),
                    "dangerously_allow_plaintext_credential_injection" => {
                        !config.plaintext_credential_injection()
                    }
                    "isolate" => config.isolate(),
                    _ => true,
                };
                assert!(holds, "the requirement {key} = {value} does not hold");
            }
        }
    }
}

/// The string entries of `key` in the requirements' `[network]` and `[experimental_network]`
/// tables, and whether either table has the key at all.
fn managed_list(required: &toml::Table, key: &str) -> (Vec<String>, bool) {
    let mut found = false;
    let mut entries = Vec::new();
    for table in ["network", "experimental_network"] {
        let Some(list) = required
            .get(table)
            .and_then(toml::Value::as_table)
            .and_then(|t| t.get(key))
        else {
            continue;
        };
        found = true;
        if let Some(list) = list.as_array() {
            entries.extend(list.iter().filter_map(|v| v.as_str().map(str::to_owned)));
        }
    }
    (entries, found)
}

/// A target `pattern` matches, when one is easy to name: the name itself, a subdomain, a glob
/// with each `*` as a letter, the literal; on the first port of its scope.
fn sample(pattern: &Pattern) -> Option<Target> {
    let port = pattern.ports().map_or(443, |r| r.lo).max(1);
    let host = match pattern.kind() {
        PatternKind::Exact(h) | PatternKind::ApexAndSubdomains(h) => h.clone(),
        PatternKind::Subdomains(h) => Host::parse(&format!("x.{h}")).ok()?,
        PatternKind::Glob { glob, apex, .. } => {
            let name = glob.replace('*', "a");
            Host::parse(&if *apex { name } else { format!("x.{name}") }).ok()?
        }
        // With its zone, when it has one (spelled so that it reads back as that zone).
        PatternKind::Ip { addr, zone } => {
            let bare = Host::from_ip(*addr);
            let zoned = zone.as_ref().and_then(|z| match addr {
                IpAddr::V6(a) => Host::parse(&format!("{a}%25{z}")).ok(),
                IpAddr::V4(a) => Host::parse(&format!("::{a}%25{z}")).ok(),
            });
            zoned.unwrap_or(bare)
        }
        _ => return None,
    };
    Some(Target::net(host, port))
}

/// Whether a policy of `patterns` alone (allow entries, local protection off) admits `target`.
fn admitted_by(patterns: &[String], target: &Target) -> bool {
    let mut b = Policy::builder();
    b.allow_local_binding(true);
    for p in patterns {
        if b.allow(p, None).is_err() {
            return false;
        }
    }
    let Ok(policy) = b.build() else {
        return false;
    };
    let meta = RequestMeta::new(Protocol::HttpsConnect, target.clone());
    !matches!(policy.evaluate(&meta), Evaluation::Deny(_))
}

/// Whether `pattern` (a deny entry) matches `target`: a policy that allows everything but it
/// refuses `target` as denied.
fn denied_by(pattern: &str, target: &Target) -> bool {
    let mut b = Policy::builder();
    b.allow_local_binding(true);
    let Ok(policy) = b
        .allow("*", None)
        .and_then(|b| b.deny(pattern, None))
        .and_then(|b| b.build())
    else {
        return false;
    };
    let meta = RequestMeta::new(Protocol::HttpsConnect, target.clone());
    policy.evaluate(&meta).decision().reason == Some(Reason::Denied)
}

/// The managed allow and deny lists hold in the loaded config's policy.
fn managed_lists_hold(config: &Config, required: &toml::Table) {
    let Ok(policy) = config.policy() else {
        return;
    };
    let judged = |target: &Target| {
        policy.evaluate(&RequestMeta::new(Protocol::HttpsConnect, target.clone()))
    };
    let (denied, _) = managed_list(required, "denied_domains");
    // A zoned deny entry is probed on its zone and without it (netproxy dials an address
    // without its zone, so a deny entry's zone must not narrow it).
    let probes = denied.iter().flat_map(|entry| {
        let target = Pattern::parse(entry).ok().as_ref().and_then(sample);
        let bare = target.as_ref().and_then(|t| {
            let host = t.host()?.without_zone()?;
            (host != *t.host()?).then(|| Target::net(host, t.port()))
        });
        [target, bare]
            .into_iter()
            .flatten()
            .map(move |t| (entry, t))
    });
    for (entry, target) in probes {
        if denied_by(entry, &target) {
            // Refused as denied (the deny list comes first), or because the proxy is off.
            let verdict = judged(&target);
            assert!(
                matches!(&verdict, Evaluation::Deny(d)
                    if matches!(d.reason, Some(Reason::Denied | Reason::ProxyDisabled))),
                "the managed deny entry {entry:?} does not refuse {target} as denied: {verdict:?}"
            );
        }
    }
    let (allowed, set) = managed_list(required, "allowed_domains");
    let expansion = ["network", "experimental_network"].iter().any(|t| {
        required
            .get(*t)
            .and_then(toml::Value::as_table)
            .and_then(|t| t.get("allowlist_expansion_enabled"))
            .and_then(toml::Value::as_bool)
            == Some(true)
    });
    if !set || expansion {
        return;
    }
    for entry in config.domains() {
        if entry.action != Action::Allow {
            continue;
        }
        let Some(target) = sample(&entry.pattern) else {
            continue;
        };
        if !matches!(judged(&target), Evaluation::Deny(_)) {
            assert!(
                admitted_by(&allowed, &target),
                "{target} is admitted through the allow entry {:?} of {:?}, which no managed \
                 allow entry admits",
                entry.pattern.as_str(),
                entry.layer
            );
        }
    }
}
