//! Managed constraints: `requirements.toml` files that no user layer can widen.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use proxy_core::Mode;
use proxy_policy::Pattern;
use toml::{Table, Value};

use crate::error::{Diagnostic, DiagnosticKind};
use crate::layer::{
    Layer, LayerData, Parser, describe, ip_glob_message, is_ip_glob, parse_cidr, parse_nameserver,
};

/// The constraints of one managed requirements file (table `[network]`, or
/// `[experimental_network]`). Every field is optional; an unset field constrains nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    /// The file.
    pub origin: PathBuf,
    /// `false` keeps the proxy disabled.
    pub enabled: Option<bool>,
    /// `limited` keeps the proxy limited.
    pub mode: Option<Mode>,
    /// Managed allow patterns (merged into the effective allowlist).
    pub allowed_domains: Option<Vec<Pattern>>,
    /// Managed deny patterns (merged into the effective denylist).
    pub denied_domains: Option<Vec<Pattern>>,
    /// `true`: users may add allow entries; `false`: the allowlist is fixed; unset: user entries
    /// must be covered by a managed pattern.
    pub allowlist_expansion_enabled: Option<bool>,
    /// `false`: the denylist is fixed; otherwise users may add deny entries.
    pub denylist_expansion_enabled: Option<bool>,
    /// Only managed allow entries are in force; user allow entries are ignored (with a warning).
    pub managed_allowed_domains_only: bool,
    /// `false` forbids `allow_local_binding` (and pins `treat_as_public` to managed ranges).
    pub allow_local_binding: Option<bool>,
    /// `false` forbids chaining through an upstream proxy.
    pub allow_upstream_proxy: Option<bool>,
    /// `false` forbids non-loopback listeners.
    pub dangerously_allow_non_loopback_proxy: Option<bool>,
    /// `false` forbids allowing every unix socket.
    pub dangerously_allow_all_unix_sockets: Option<bool>,
    /// The unix socket paths a user may allow.
    pub allow_unix_sockets: Option<Vec<String>>,
    /// Ranges exempt from local protection (merged into the effective list).
    pub treat_as_public: Option<Vec<IpNet>>,
    /// `false` forbids a non-loopback admin listener.
    pub dangerously_allow_non_loopback_admin: Option<bool>,
    /// `false` forbids injecting brokered credentials over plaintext.
    pub dangerously_allow_plaintext_credential_injection: Option<bool>,
    /// `[network.dns] nameservers`: pinned; a user layer may not set others.
    pub dns_nameservers: Option<Vec<SocketAddr>>,
    /// `[network.dns] hosts`: fixed entries (canonical name → addresses), merged into the
    /// effective static hosts; a user entry for the same name may not differ.
    pub dns_hosts: BTreeMap<String, Vec<IpAddr>>,
}

const KEYS: &[&str] = &[
    "enabled",
    "mode",
    "allowed_domains",
    "denied_domains",
    "allowlist_expansion_enabled",
    "denylist_expansion_enabled",
    "managed_allowed_domains_only",
    "allow_local_binding",
    "allow_upstream_proxy",
    "dangerously_allow_non_loopback_proxy",
    "dangerously_allow_all_unix_sockets",
    "allow_unix_sockets",
    "treat_as_public",
    "dangerously_allow_non_loopback_admin",
    "dangerously_allow_plaintext_credential_injection",
    "dns",
];

/// The keys of a requirements file's `[network.dns]`.
const DNS_KEYS: &[&str] = &["nameservers", "hosts"];

impl Requirements {
    /// Sets one of the boolean constraints by its key.
    fn set_flag(&mut self, key: &str, value: bool) {
        let slot = match key {
            "enabled" => &mut self.enabled,
            "allowlist_expansion_enabled" => &mut self.allowlist_expansion_enabled,
            "denylist_expansion_enabled" => &mut self.denylist_expansion_enabled,
            "allow_local_binding" => &mut self.allow_local_binding,
            "allow_upstream_proxy" => &mut self.allow_upstream_proxy,
            "dangerously_allow_non_loopback_proxy" => {
                &mut self.dangerously_allow_non_loopback_proxy
            }
            "dangerously_allow_all_unix_sockets" => &mut self.dangerously_allow_all_unix_sockets,
            "dangerously_allow_non_loopback_admin" => {
                &mut self.dangerously_allow_non_loopback_admin
            }
            "dangerously_allow_plaintext_credential_injection" => {
                &mut self.dangerously_allow_plaintext_credential_injection
            }
            _ => {
                self.managed_allowed_domains_only = value;
                return;
            }
        };
        *slot = Some(value);
    }

    /// Parses a requirements document; problems are appended to `diags`.
    pub(crate) fn parse(origin: &Path, doc: &Table, diags: &mut Vec<Diagnostic>) -> Self {
        let file = origin.display().to_string();
        let mut r = Requirements {
            origin: origin.to_owned(),
            ..Default::default()
        };
        let mut diag = |kind, key: &str, msg: String| {
            diags.push(Diagnostic::new(kind, file.clone(), key, msg));
        };
        let mut tables = Vec::new();
        for (key, value) in doc {
            match (key.as_str(), value.as_table()) {
                ("network" | "experimental_network", Some(t)) => tables.push((key.clone(), t)),
                ("network" | "experimental_network", None) => {
                    diag(DiagnosticKind::InvalidValue, key, "expected a table".into());
                }
                (other, _) => {
                    let near = ["network", "experimental_network"]
                        .iter()
                        .find(|k| strsim::damerau_levenshtein(other, k) <= 3)
                        .map(|k| format!(" (did you mean `{k}`?)"))
                        .unwrap_or_default();
                    diag(
                        DiagnosticKind::UnknownKey,
                        other,
                        format!("unknown key{near}"),
                    );
                }
            }
        }
        let mut dns = Vec::new();
        for (table, t) in tables {
            for (key, value) in t {
                let path = format!("{table}.{key}");
                let as_bool = |v: &Value| v.as_bool();
                let mut bad = |expected: &str| {
                    diag(
                        DiagnosticKind::InvalidValue,
                        &path,
                        format!("expected {expected}, found {}", describe(value)),
                    );
                };
                match key.as_str() {
                    "mode" => match value.as_str().and_then(|s| s.parse().ok()) {
                        Some(m) => r.mode = Some(m),
                        None => bad("\"full\" or \"limited\""),
                    },
                    "enabled"
                    | "allowlist_expansion_enabled"
                    | "denylist_expansion_enabled"
                    | "managed_allowed_domains_only"
                    | "allow_local_binding"
                    | "allow_upstream_proxy"
                    | "dangerously_allow_non_loopback_proxy"
                    | "dangerously_allow_all_unix_sockets"
                    | "dangerously_allow_non_loopback_admin"
                    | "dangerously_allow_plaintext_credential_injection" => match as_bool(value) {
                        Some(b) => r.set_flag(key, b),
                        None => bad("true or false"),
                    },
                    "allowed_domains" | "denied_domains" => {
                        let Some(items) = value.as_array() else {
                            bad("a list of patterns");
                            continue;
                        };
                        let mut patterns = Vec::new();
                        for (i, item) in items.iter().enumerate() {
                            let ipath = format!("{path}[{i}]");
                            match item.as_str().map(Pattern::parse) {
                                Some(Ok(p)) if p.is_global() => diag(
                                    DiagnosticKind::InvalidValue,
                                    &ipath,
                                    "the global wildcard `*` is not allowed in managed lists; use exact hosts or scoped wildcards like *.example.com or **.example.com".into(),
                                ),
                                Some(Ok(p)) if is_ip_glob(&p) => diag(
                                    DiagnosticKind::InvalidValue,
                                    &ipath,
                                    ip_glob_message(&p),
                                ),
                                Some(Ok(p)) => patterns.push(p),
                                Some(Err(e)) => diag(DiagnosticKind::InvalidValue, &ipath, e.to_string()),
                                None => diag(
                                    DiagnosticKind::InvalidValue,
                                    &ipath,
                                    format!("expected a string, found {}", describe(item)),
                                ),
                            }
                        }
                        if key == "allowed_domains" {
                            r.allowed_domains = Some(patterns);
                        } else {
                            r.denied_domains = Some(patterns);
                        }
                    }
                    "allow_unix_sockets" => {
                        match value.as_array().and_then(|a| {
                            a.iter()
                                .map(|v| v.as_str().map(str::to_owned))
                                .collect::<Option<Vec<_>>>()
                        }) {
                            Some(paths) => r.allow_unix_sockets = Some(paths),
                            None => bad("a list of absolute paths"),
                        }
                    }
                    "treat_as_public" => {
                        let parsed = value.as_array().map(|a| {
                            a.iter()
                                .map(|v| {
                                    v.as_str()
                                        .ok_or_else(|| "expected CIDR strings".to_owned())
                                        .and_then(parse_cidr)
                                })
                                .collect::<Result<Vec<_>, _>>()
                        });
                        match parsed {
                            Some(Ok(nets)) => r.treat_as_public = Some(nets),
                            Some(Err(e)) => diag(DiagnosticKind::InvalidValue, &path, e),
                            None => bad("a list of CIDRs"),
                        }
                    }
                    "dns" => match value.as_table() {
                        Some(t) => dns.push((path, t)),
                        None => bad("a table"),
                    },
                    other => {
                        let near = KEYS
                            .iter()
                            .map(|k| (strsim::damerau_levenshtein(other, k), *k))
                            .min()
                            .filter(|(d, _)| *d <= (other.len() / 3).max(2))
                            .map(|(_, k)| format!(" (did you mean `{table}.{k}`?)"))
                            .unwrap_or_default();
                        diag(
                            DiagnosticKind::UnknownKey,
                            &path,
                            format!("unknown key{near}"),
                        );
                    }
                }
            }
        }
        for (path, t) in dns {
            r.parse_dns(&file, &path, t, diags);
        }
        r
    }

    /// Parses `[network.dns]` of a requirements file: `nameservers` and `hosts`, validated
    /// as in a config file.
    fn parse_dns(&mut self, file: &str, path: &str, t: &Table, diags: &mut Vec<Diagnostic>) {
        let mut known = Table::new();
        for (key, value) in t {
            if DNS_KEYS.contains(&key.as_str()) {
                known.insert(key.clone(), value.clone());
            } else {
                let near = DNS_KEYS
                    .iter()
                    .map(|k| (strsim::damerau_levenshtein(key, k), *k))
                    .min()
                    .filter(|(d, _)| *d <= (key.len() / 3).max(2))
                    .map(|(_, k)| format!(" (did you mean `{path}.{k}`?)"))
                    .unwrap_or_default();
                let why = if near.is_empty() {
                    " (requirements accept only `nameservers` and `hosts` here)".to_owned()
                } else {
                    near
                };
                diags.push(Diagnostic::new(
                    DiagnosticKind::UnknownKey,
                    file,
                    format!("{path}.{key}"),
                    format!("unknown key{why}"),
                ));
            }
        }
        let mut data = LayerData::new(Layer::Managed(self.origin.clone()));
        let before = diags.len();
        Parser {
            origin: file.to_owned(),
            data: &mut data,
            diags,
        }
        .table_as("network.dns", path, &known);
        if diags.len() > before {
            return;
        }
        if let Some(list) = data
            .scalars
            .get("network.dns.nameservers")
            .and_then(Value::as_array)
        {
            if list.is_empty() {
                diags.push(Diagnostic::new(
                    DiagnosticKind::InvalidValue,
                    file,
                    format!("{path}.nameservers"),
                    "expected at least one nameserver (leave the key out to use the system's)",
                ));
                return;
            }
            self.dns_nameservers = Some(
                list.iter()
                    .filter_map(|v| v.as_str().and_then(|s| parse_nameserver(s).ok()))
                    .collect(),
            );
        }
        for (name, ips) in data.dns_hosts {
            self.dns_hosts.insert(name, ips);
        }
    }
}
