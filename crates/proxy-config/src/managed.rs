//! Managed constraints: `requirements.toml` files that no user layer can widen, read and
//! applied to the effective config.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use proxy_core::Mode;
use proxy_policy::{Pattern, PatternKind};
use toml::{Table, Value};

use crate::config::{Config, DomainEntry};
use crate::error::{Diagnostic, DiagnosticKind};
use crate::layer::{Action, Layer, LayerData, Parser, describe, ip_glob_message, is_ip_glob};
use crate::schema::{Setting, Written, parse_cidr};

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
    /// `true` keeps `run`'s child isolated (`isolate`); `false` constrains nothing.
    pub isolate: Option<bool>,
    /// `false` forbids `run --learn` (docs/run.md, "Learn mode"); `true` constrains nothing.
    /// A requirement only: no config key turns learn mode on.
    pub learn: Option<bool>,
    /// `false` forbids `run --ask` (holding allowlist misses for a person's answer); `true`
    /// constrains nothing.
    pub ask: Option<bool>,
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
    "isolate",
    "learn",
    "ask",
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
            "isolate" => &mut self.isolate,
            "learn" => &mut self.learn,
            "ask" => &mut self.ask,
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
        // Both tables in one file: a key in both with two values would have one silently
        // replace the other (a managed deny list, `enabled = false`), so it is an error; the
        // same value twice is one requirement.
        if let [(first, a), (second, b)] = tables.as_slice() {
            for key in b.keys().filter(|k| {
                a.get(k.as_str())
                    .is_some_and(|v| Some(v) != b.get(k.as_str()))
            }) {
                diag(
                    DiagnosticKind::InvalidValue,
                    &format!("{second}.{key}"),
                    format!(
                        "also set, to another value, in [{first}] of this file: set each \
                         requirement in one of the two tables"
                    ),
                );
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
                    | "dangerously_allow_plaintext_credential_injection"
                    | "isolate"
                    | "learn"
                    | "ask" => match as_bool(value) {
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
                        let Some(items) = value.as_array() else {
                            bad("a list of absolute paths");
                            continue;
                        };
                        let mut paths = Vec::new();
                        for (i, item) in items.iter().enumerate() {
                            match item.as_str() {
                                Some(p) => paths.push(p.to_owned()),
                                None => diag(
                                    DiagnosticKind::InvalidValue,
                                    &format!("{path}[{i}]"),
                                    format!("expected an absolute path, found {}", describe(item)),
                                ),
                            }
                        }
                        if paths.len() == items.len() {
                            r.allow_unix_sockets = Some(paths);
                        }
                    }
                    "treat_as_public" => {
                        let Some(items) = value.as_array() else {
                            bad("a list of CIDRs");
                            continue;
                        };
                        let mut nets = Vec::new();
                        for (i, item) in items.iter().enumerate() {
                            let parsed = match item.as_str() {
                                Some(s) => parse_cidr(s),
                                None => {
                                    Err(format!("expected a CIDR string, found {}", describe(item)))
                                }
                            };
                            match parsed {
                                Ok(n) => nets.push(n),
                                Err(e) => {
                                    diag(DiagnosticKind::InvalidValue, &format!("{path}[{i}]"), e);
                                }
                            }
                        }
                        if nets.len() == items.len() {
                            r.treat_as_public = Some(nets);
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
        if let Some(list) = data.values.dns_nameservers.flatten() {
            if list.value().is_empty() {
                diags.push(Diagnostic::new(
                    DiagnosticKind::InvalidValue,
                    file,
                    format!("{path}.nameservers"),
                    "expected at least one nameserver (leave the key out to use the system's)",
                ));
                return;
            }
            self.dns_nameservers = Some(list.value().clone());
        }
        for (name, ips) in data.dns_hosts {
            self.dns_hosts.insert(name, ips);
        }
    }
}

/// A managed violation of `setting`: reported against the layer that set it.
fn violation<T>(
    diags: &mut Vec<Diagnostic>,
    setting: &Setting<T>,
    r: &Requirements,
    message: &str,
) {
    diags.push(Diagnostic::new(
        DiagnosticKind::Constraint,
        setting.layer.to_string(),
        setting.key,
        format!("{message} (constrained by {})", r.origin.display()),
    ));
}

impl Requirements {
    /// Applies this requirements file to `config`: unset (default) values are pinned to the
    /// managed ceiling, explicit wider values are violations, managed lists are merged in.
    pub(crate) fn apply(&self, config: &mut Config, diags: &mut Vec<Diagnostic>) {
        let managed = Layer::Managed(self.origin.clone());
        let all_sockets = self.all_sockets_ceiling();
        let s = &mut config.settings;
        let ceilings = [
            (&mut s.enabled, self.enabled),
            (&mut s.allow_upstream_proxy, self.allow_upstream_proxy),
            (
                &mut s.dangerously_allow_non_loopback_proxy,
                self.dangerously_allow_non_loopback_proxy,
            ),
            (&mut s.allow_local_binding, self.allow_local_binding),
            (&mut s.dangerously_allow_all_unix_sockets, all_sockets),
            (
                &mut s.dangerously_allow_non_loopback_admin,
                self.dangerously_allow_non_loopback_admin,
            ),
            (
                &mut s.dangerously_allow_plaintext_credential_injection,
                self.dangerously_allow_plaintext_credential_injection,
            ),
        ];
        for (setting, ceiling) in ceilings {
            if ceiling != Some(false) || !setting.value {
                continue;
            }
            if setting.layer.is_user() {
                violation(
                    diags,
                    setting,
                    self,
                    "true is not allowed: false is required",
                );
            } else {
                setting.set(false, managed.clone());
            }
        }
        // A floor: managed `isolate = true` keeps `run`'s child isolated.
        let isolate = &mut config.settings.isolate;
        if self.isolate == Some(true) && !isolate.value {
            if isolate.layer.is_user() {
                violation(
                    diags,
                    isolate,
                    self,
                    "false is not allowed: true is required",
                );
            } else {
                isolate.set(true, managed.clone());
            }
        }
        let mode = &mut config.settings.mode;
        if self.mode == Some(Mode::Limited) && mode.value == Mode::Full {
            if mode.layer.is_user() {
                violation(
                    diags,
                    mode,
                    self,
                    "\"full\" is not allowed: \"limited\" or more restrictive is required",
                );
            } else {
                mode.set(Mode::Limited, managed.clone());
            }
        }
        self.apply_denylist(config, &managed, diags);
        self.apply_allowlist(config, &managed, diags);
        if let Some(allowed) = &self.allow_unix_sockets {
            for e in config
                .unix_sockets
                .iter()
                .filter(|e| e.action == Action::Allow && e.layer.is_user())
            {
                if !allowed.iter().any(|a| a == &e.path) {
                    diags.push(Diagnostic::new(
                        DiagnosticKind::Constraint,
                        e.layer.to_string(),
                        format!("network.unix_sockets.{:?}", e.path),
                        format!(
                            "not in the managed allow_unix_sockets (constrained by {})",
                            self.origin.display()
                        ),
                    ));
                }
            }
        }
        self.apply_treat_as_public(config, &managed, diags);
        self.apply_dns(config, &managed, diags);
    }

    /// Managed `[network.dns]`: pinned nameservers, fixed static hosts, and no user static
    /// host for a name the managed allowlist covers (it would point an allowed name at any
    /// address).
    fn apply_dns(&self, config: &mut Config, managed: &Layer, diags: &mut Vec<Diagnostic>) {
        let constrained =
            |what: String| format!("{what} (constrained by {})", self.origin.display());
        if let Some(pinned) = &self.dns_nameservers {
            let setting = &mut config.settings.dns_nameservers;
            let layer = setting.layer.clone();
            let same = setting
                .value
                .as_ref()
                .is_some_and(|c| same_set(c.value(), pinned));
            if let (Some(_), false) = (&setting.value, same) {
                let why = if layer.is_user() {
                    "the managed nameservers are pinned: a user layer may not change them"
                        .to_owned()
                } else {
                    format!("conflicts with the nameservers pinned by {layer}")
                };
                diags.push(Diagnostic::new(
                    DiagnosticKind::Constraint,
                    layer.to_string(),
                    setting.key,
                    constrained(why),
                ));
            } else {
                setting.set(Some(Written::list(pinned.clone())), managed.clone());
            }
        }
        for (name, ips) in &self.dns_hosts {
            match config.dns_hosts.get(name) {
                Some((current, layer)) if !same_set(current, ips) => {
                    let why = if layer.is_user() {
                        "the managed static hosts are fixed: a user layer may not give this name other addresses".to_owned()
                    } else {
                        format!("conflicts with the static host entry of {layer}")
                    };
                    diags.push(Diagnostic::new(
                        DiagnosticKind::Constraint,
                        layer.to_string(),
                        format!("network.dns.hosts.{name:?}"),
                        constrained(why),
                    ));
                }
                _ => {
                    config
                        .dns_hosts
                        .insert(name.clone(), (ips.clone(), managed.clone()));
                }
            }
        }
        let Some(allowed) = &self.allowed_domains else {
            return;
        };
        for (name, (_, layer)) in &config.dns_hosts {
            if !layer.is_user() {
                continue;
            }
            if let Some(p) = allowed.iter().find(|p| covers_name(p, name)) {
                diags.push(Diagnostic::new(
                    DiagnosticKind::Constraint,
                    layer.to_string(),
                    format!("network.dns.hosts.{name:?}"),
                    constrained(format!(
                        "a static host entry for a name the managed allowed_domains cover ({p}) would point it at any address; only requirements may set it"
                    )),
                ));
            }
        }
    }

    /// `dangerously_allow_all_unix_sockets`'s ceiling: a managed list of sockets forbids
    /// allowing them all unless the flag itself is managed.
    fn all_sockets_ceiling(&self) -> Option<bool> {
        match self.dangerously_allow_all_unix_sockets {
            Some(v) => Some(v),
            None if self.allow_unix_sockets.is_some() => Some(false),
            None => None,
        }
    }

    fn apply_denylist(&self, config: &mut Config, managed: &Layer, diags: &mut Vec<Diagnostic>) {
        let Some(denied) = &self.denied_domains else {
            return;
        };
        if self.denylist_expansion_enabled == Some(false) {
            for e in config
                .domains
                .iter()
                .filter(|e| e.action == Action::Deny && e.layer.is_user())
            {
                if !denied.iter().any(|d| d.deny_key() == e.pattern.deny_key()) {
                    diags.push(Diagnostic::new(
                        DiagnosticKind::Constraint,
                        e.layer.to_string(),
                        format!("network.domains.{:?}", e.pattern.as_str()),
                        format!(
                            "the managed denied_domains are fixed: deny entries must match them (constrained by {})",
                            self.origin.display()
                        ),
                    ));
                }
            }
        }
        for p in denied {
            let entry = DomainEntry {
                pattern: p.clone(),
                action: Action::Deny,
                layer: managed.clone(),
            };
            match config
                .domains
                .iter_mut()
                .find(|e| e.pattern.key() == p.key())
            {
                Some(e) => {
                    if e.action == Action::Allow {
                        config.warnings.push(format!(
                            "{}: allow entry {} is overridden by the managed deny entry in {}",
                            e.layer,
                            e.pattern,
                            self.origin.display()
                        ));
                    }
                    *e = entry;
                }
                None => config.domains.push(entry),
            }
        }
    }

    fn apply_allowlist(&self, config: &mut Config, managed: &Layer, diags: &mut Vec<Diagnostic>) {
        let Some(allowed) = &self.allowed_domains else {
            return;
        };
        let is_managed = |p: &Pattern| allowed.iter().any(|m| m.key() == p.key());
        if self.managed_allowed_domains_only {
            let (keep, ignored): (Vec<_>, Vec<_>) = std::mem::take(&mut config.domains)
                .into_iter()
                .partition(|e| {
                    e.action == Action::Deny || !e.layer.is_user() || is_managed(&e.pattern)
                });
            for e in &ignored {
                config.warnings.push(format!(
                    "{}: allow entry {} is not in force: managed_allowed_domains_only in {} pins the allowlist to the managed entries",
                    e.layer, e.pattern, self.origin.display()
                ));
            }
            config.domains = keep;
            config.ignored_allow.extend(ignored);
        } else {
            for e in config
                .domains
                .iter()
                .filter(|e| e.action == Action::Allow && e.layer.is_user())
            {
                let why = match self.allowlist_expansion_enabled {
                    Some(true) => None,
                    Some(false) => (!is_managed(&e.pattern)).then(|| "the managed allowed_domains are fixed: allow entries must match them".to_owned()),
                    None => (!allowed.iter().any(|m| m.covers(&e.pattern))).then(|| {
                        "not covered by the managed allowed_domains (allow entries must be a subset of them)".to_owned()
                    }),
                };
                if let Some(why) = why {
                    diags.push(Diagnostic::new(
                        DiagnosticKind::Constraint,
                        e.layer.to_string(),
                        format!("network.domains.{:?}", e.pattern.as_str()),
                        format!("{why} (constrained by {})", self.origin.display()),
                    ));
                }
            }
        }
        for p in allowed {
            if config.domains.iter().any(|e| e.pattern.key() == p.key()) {
                // Already present: a deny for the same key keeps winning; an allow stays.
                continue;
            }
            config.domains.push(DomainEntry {
                pattern: p.clone(),
                action: Action::Allow,
                layer: managed.clone(),
            });
        }
    }

    fn apply_treat_as_public(
        &self,
        config: &mut Config,
        managed: &Layer,
        diags: &mut Vec<Diagnostic>,
    ) {
        let managed_nets = self.treat_as_public.clone().unwrap_or_default();
        let setting = &mut config.settings.treat_as_public;
        if self.allow_local_binding == Some(false) && setting.layer.is_user() {
            for net in setting.value.value() {
                if !managed_nets.iter().any(|m| m.contains(net)) {
                    let msg = format!(
                        "range {net} is not inside a managed treat_as_public range, and managed allow_local_binding is false"
                    );
                    violation(diags, setting, self, &msg);
                }
            }
        }
        if !managed_nets.is_empty() {
            let mut nets = setting.value.value().clone();
            for n in managed_nets {
                if !nets.contains(&n) {
                    nets.push(n);
                }
            }
            let layer = if setting.layer.is_user() {
                setting.layer.clone()
            } else {
                managed.clone()
            };
            setting.set(Written::list(nets), layer);
        }
    }
}

/// Whether two lists hold the same items, in any order.
fn same_set<T: Ord + Clone>(a: &[T], b: &[T]) -> bool {
    let sorted = |x: &[T]| {
        let mut v = x.to_vec();
        v.sort();
        v.dedup();
        v
    };
    sorted(a) == sorted(b)
}

/// Whether `pattern` matches the host name `name` (canonical) on some port.
fn covers_name(pattern: &Pattern, name: &str) -> bool {
    match pattern.kind() {
        PatternKind::Global => true,
        PatternKind::Ip { .. } => false,
        PatternKind::Glob {
            glob,
            subdomains,
            apex,
        } => {
            let globs: Vec<&str> = glob.split('.').collect();
            let labels: Vec<&str> = name.split('.').collect();
            let fits = |extra: usize| {
                labels[extra..]
                    .iter()
                    .zip(&globs)
                    .all(|(l, g)| label_matches(g, l))
            };
            (*apex && labels.len() == globs.len() && fits(0))
                || (*subdomains && labels.len() > globs.len() && fits(labels.len() - globs.len()))
        }
        PatternKind::Exact(_) | PatternKind::Subdomains(_) | PatternKind::ApexAndSubdomains(_) => {
            // The name with the pattern's own port scope: coverage then depends on the host
            // part alone.
            let scoped = match pattern.ports() {
                Some(r) => format!("{name}:{r}"),
                None => name.to_owned(),
            };
            Pattern::parse(&scoped).is_ok_and(|n| pattern.covers(&n))
        }
    }
}

/// Whether one label matches a label glob (`*` stands for any run of characters, none
/// included).
pub(crate) fn label_matches(glob: &str, label: &str) -> bool {
    let (g, l) = (glob.as_bytes(), label.as_bytes());
    let (mut gi, mut li) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while li < l.len() {
        if gi < g.len() && g[gi] == b'*' {
            back = Some((gi, li));
            gi += 1;
        } else if gi < g.len() && g[gi] == l[li] {
            gi += 1;
            li += 1;
        } else if let Some((bg, bl)) = back {
            gi = bg + 1;
            li = bl + 1;
            back = Some((bg, bl + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}
