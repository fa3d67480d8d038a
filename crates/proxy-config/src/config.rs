//! The effective config: layers merged, managed constraints applied, each value with its layer.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use proxy_core::Mode;
use proxy_policy::{Pattern, Policy};
use toml::Value;

use crate::credentials::CredentialEntry;
use crate::error::{Diagnostic, DiagnosticKind, Error};
use crate::hooks::{HookAction, HookEntry, SecretRef};
use crate::layer::{Action, Layer, LayerData};
use crate::listen::{clamp_bind, parse_listen_url};
use crate::managed::Requirements;
use crate::schema::{Exporter, Setting, Settings};

/// One effective domain entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEntry {
    /// The pattern.
    pub pattern: Pattern,
    /// Allow or deny.
    pub action: Action,
    /// The layer that set it.
    pub layer: Layer,
}

/// One effective unix socket entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEntry {
    /// The absolute path.
    pub path: String,
    /// Allow or deny.
    pub action: Action,
    /// The layer that set it.
    pub layer: Layer,
}

/// A value shown by `config show`: its key path, value and layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownValue {
    /// The key path, e.g. `network.mode` or `network.domains."*.example.com"`.
    pub key: String,
    /// The value (`None` when unset).
    pub value: Option<Value>,
    /// The layer that set it.
    pub layer: Layer,
}

/// The listener addresses after parsing and clamping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listeners {
    /// The HTTP proxy.
    pub http: SocketAddr,
    /// The SOCKS5 proxy, when enabled.
    pub socks: Option<SocketAddr>,
    /// The admin API, when enabled.
    pub admin: Option<SocketAddr>,
}

/// The effective config, built by [`crate::load`]: layers merged, managed requirements applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) settings: Settings,
    pub(crate) domains: Vec<DomainEntry>,
    pub(crate) unix_sockets: Vec<SocketEntry>,
    pub(crate) dns_hosts: BTreeMap<String, (Vec<IpAddr>, Layer)>,
    pub(crate) ignored_allow: Vec<DomainEntry>,
    pub(crate) warnings: Vec<String>,
    pub(crate) hooks: Vec<HookEntry>,
    pub(crate) hook_actions: Vec<HookAction>,
    pub(crate) credentials: Vec<crate::CredentialEntry>,
    requirements: Vec<Requirements>,
}

impl Config {
    /// Merges parsed layers (lowest first) over the defaults, then applies the managed
    /// requirements. Every violation is reported at once.
    pub(crate) fn from_layers(
        layers: Vec<LayerData>,
        requirements: Vec<Requirements>,
    ) -> Result<Self, Error> {
        let mut settings = Settings::defaults();
        let mut domains: Vec<DomainEntry> = Vec::new();
        let mut unix_sockets: Vec<SocketEntry> = Vec::new();
        let mut dns_hosts = BTreeMap::new();
        let mut hooks = Vec::new();
        let mut hook_actions: Vec<HookAction> = Vec::new();
        let mut credentials: Vec<crate::CredentialEntry> = Vec::new();
        for l in layers {
            for c in l.credentials {
                match credentials.iter_mut().find(|e| e.name == c.name) {
                    Some(e) => *e = c,
                    None => credentials.push(c),
                }
            }
            if let Some(h) = l.hooks {
                hooks = h;
            }
            for a in l.actions {
                match hook_actions.iter_mut().find(|e| e.name == a.name) {
                    Some(e) => *e = a,
                    None => hook_actions.push(a),
                }
            }
            settings.overlay(l.values, &l.layer);
            for (key, pattern, action) in l.domains {
                let entry = DomainEntry {
                    pattern,
                    action,
                    layer: l.layer.clone(),
                };
                match domains.iter_mut().find(|e| e.pattern.key() == key) {
                    Some(e) => *e = entry,
                    None => domains.push(entry),
                }
            }
            for (path, action) in l.unix_sockets {
                let entry = SocketEntry {
                    path,
                    action,
                    layer: l.layer.clone(),
                };
                match unix_sockets.iter_mut().find(|e| e.path == entry.path) {
                    Some(e) => *e = entry,
                    None => unix_sockets.push(entry),
                }
            }
            for (name, ips) in l.dns_hosts {
                dns_hosts.insert(name, (ips, l.layer.clone()));
            }
        }
        let mut config = Config {
            settings,
            domains,
            unix_sockets,
            dns_hosts,
            ignored_allow: Vec::new(),
            warnings: Vec::new(),
            hooks,
            hook_actions,
            credentials,
            requirements: Vec::new(),
        };
        let mut diags = Vec::new();
        for r in &requirements {
            r.apply(&mut config, &mut diags);
        }
        config.requirements = requirements;
        if let Err(e) = config.listeners_checked() {
            diags.extend(e.diagnostics);
        }
        config.check_hooks(&mut diags);
        if diags.is_empty() {
            Ok(config)
        } else {
            Err(Error { diagnostics: diags })
        }
    }

    /// Hooks need interception, and every action a hook names must exist; grants need the
    /// broker.
    fn check_hooks(&self, diags: &mut Vec<Diagnostic>) {
        if let Some(first) = self.credentials.first()
            && !self.settings.credential_broker.value
        {
            diags.push(Diagnostic::new(
                DiagnosticKind::InvalidValue,
                first.layer.to_string(),
                "network.credentials",
                "grants need the credential broker: set `credential_broker = true`",
            ));
        }
        if let Some(first) = self.hooks.first()
            && !self.mitm()
        {
            diags.push(Diagnostic::new(
                DiagnosticKind::InvalidValue,
                first.layer.to_string(),
                "network.mitm.hooks",
                "hooks need HTTPS interception: set `[network.mitm] enabled = true` (or `--mitm`)",
            ));
        }
        for h in &self.hooks {
            for a in &h.actions {
                if !self.hook_actions.iter().any(|e| &e.name == a) {
                    diags.push(Diagnostic::new(
                        DiagnosticKind::InvalidValue,
                        h.layer.to_string(),
                        format!("network.mitm.hooks.{}.action", h.name),
                        format!("no action {a:?}: define it as [network.mitm.actions.{a}]"),
                    ));
                }
            }
        }
    }

    /// The configured grants of the credential broker (`[network.credentials.NAME]`), by name
    /// across layers (a higher layer's grant replaces a lower one of the same name).
    pub fn credentials(&self) -> &[crate::CredentialEntry] {
        &self.credentials
    }

    /// The hooks, in the order written (the first match wins), from the highest layer that
    /// has `[network.mitm.hooks]`.
    pub fn hooks(&self) -> &[HookEntry] {
        &self.hooks
    }

    /// The variables of netproxy's environment that hold hook secrets (`secret_env_var`):
    /// `run` removes them from its child's environment.
    pub fn secret_env_vars(&self) -> Vec<&str> {
        self.hook_actions
            .iter()
            .flat_map(|a| &a.inject_request_headers)
            .filter_map(|i| match &i.secret {
                SecretRef::EnvVar(v) => Some(v.as_str()),
                SecretRef::File(_) => None,
            })
            .collect()
    }

    /// The actions hooks may name.
    pub fn hook_actions(&self) -> &[HookAction] {
        &self.hook_actions
    }

    /// The scalar settings, each with the layer that set it.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `enabled`.
    pub fn enabled(&self) -> bool {
        self.settings.enabled.value
    }
    /// `mode`.
    pub fn mode(&self) -> Mode {
        self.settings.mode.value
    }
    /// `enable_socks5`.
    pub fn enable_socks5(&self) -> bool {
        self.settings.enable_socks5.value
    }
    /// `enable_socks5_udp`.
    pub fn enable_socks5_udp(&self) -> bool {
        self.settings.enable_socks5_udp.value
    }
    /// `enable_admin`.
    pub fn enable_admin(&self) -> bool {
        self.settings.enable_admin.value
    }
    /// `admin_token`, if set.
    pub fn admin_token(&self) -> Option<&str> {
        self.settings
            .admin_token
            .value
            .as_ref()
            .map(crate::Secret::expose)
    }
    /// `allow_upstream_proxy`.
    pub fn allow_upstream_proxy(&self) -> bool {
        self.settings.allow_upstream_proxy.value
    }
    /// `mitm`: HTTPS interception on (limited mode's `CONNECT`s are intercepted and their
    /// requests judged inside TLS, docs/mitm.md).
    pub fn mitm(&self) -> bool {
        *self.settings.mitm.value.value()
    }
    /// `credential_broker`: the credential broker (docs/credentials.md).
    pub fn credential_broker(&self) -> bool {
        self.settings.credential_broker.value
    }
    /// `dangerously_allow_plaintext_credential_injection`.
    pub fn plaintext_credential_injection(&self) -> bool {
        self.settings
            .dangerously_allow_plaintext_credential_injection
            .value
    }
    /// `verify_sni`.
    pub fn verify_sni(&self) -> bool {
        self.settings.verify_sni.value
    }
    /// `isolate`: `run` isolates its child as with `--isolate` (a managed `isolate = true`
    /// makes it true whatever the user layers say, or refuses a user layer's `false`).
    pub fn isolate(&self) -> bool {
        self.settings.isolate.value
    }
    /// `[otel] exporter`, unless `none`: `otlp-http` or `otlp-grpc`.
    pub fn otel_exporter(&self) -> Option<&str> {
        match self.settings.otel_exporter.value {
            Exporter::Off => None,
            e => Some(e.as_str()),
        }
    }
    /// `[otel] endpoint`, if set.
    pub fn otel_endpoint(&self) -> Option<&str> {
        self.settings
            .otel_endpoint
            .value
            .as_ref()
            .map(crate::CollectorUrl::as_str)
    }
    /// `[otel] headers`.
    pub fn otel_headers(&self) -> Vec<(String, String)> {
        self.settings
            .otel_headers
            .value
            .iter()
            .flat_map(crate::Headers::iter)
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
    /// `audit_log`: the JSON-lines audit file, if set.
    pub fn audit_log(&self) -> Option<&str> {
        self.settings.audit_log.value.as_deref()
    }
    /// `dangerously_allow_non_loopback_admin`.
    pub fn allow_non_loopback_admin(&self) -> bool {
        self.settings.dangerously_allow_non_loopback_admin.value
    }
    /// `dangerously_allow_non_loopback_proxy`.
    pub fn allow_non_loopback_proxy(&self) -> bool {
        self.settings.dangerously_allow_non_loopback_proxy.value
    }
    /// `allow_local_binding`.
    pub fn allow_local_binding(&self) -> bool {
        self.settings.allow_local_binding.value
    }
    /// `dangerously_allow_all_unix_sockets`.
    pub fn allow_all_unix_sockets(&self) -> bool {
        self.settings.dangerously_allow_all_unix_sockets.value
    }
    /// `treat_as_public`.
    pub fn treat_as_public(&self) -> Vec<IpNet> {
        self.settings.treat_as_public.value.value().clone()
    }
    /// `[network.dns] nameservers` (`None`: the system's).
    pub fn dns_nameservers(&self) -> Option<Vec<SocketAddr>> {
        self.settings
            .dns_nameservers
            .value
            .as_ref()
            .map(|w| w.value().clone())
    }
    /// `[network.dns] timeout_ms`.
    pub fn dns_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.dns_timeout_ms.value.into())
    }
    /// `[network.dns] hosts`: canonical name → addresses.
    pub fn dns_hosts(&self) -> BTreeMap<String, Vec<IpAddr>> {
        self.dns_hosts
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }
    /// `[network.limits] max_connections`.
    pub fn max_connections(&self) -> u64 {
        self.settings.limits_max_connections.value.into()
    }
    /// `[network.limits] connect_timeout_ms`.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.limits_connect_timeout_ms.value.into())
    }
    /// `[network.limits] header_timeout_ms`.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.limits_header_timeout_ms.value.into())
    }
    /// `[network.limits] idle_timeout_s`.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.limits_idle_timeout_s.value.into())
    }
    /// `[network.limits] max_header_bytes`.
    pub fn max_header_bytes(&self) -> u64 {
        self.settings.limits_max_header_bytes.value.into()
    }
    /// The effective domain entries, in first-seen order.
    pub fn domains(&self) -> &[DomainEntry] {
        &self.domains
    }
    /// User allow entries that are not in force (`managed_allowed_domains_only`).
    pub fn ignored_allow_entries(&self) -> &[DomainEntry] {
        &self.ignored_allow
    }
    /// The effective unix socket entries.
    pub fn unix_sockets(&self) -> &[SocketEntry] {
        &self.unix_sockets
    }
    /// The managed requirements in force.
    pub fn requirements(&self) -> &[Requirements] {
        &self.requirements
    }

    /// The requirements file that forbids `run --learn` (`learn = false`), if any.
    pub fn learn_forbidden_by(&self) -> Option<&Path> {
        self.requirements
            .iter()
            .find(|r| r.learn == Some(false))
            .map(|r| r.origin.as_path())
    }

    /// The requirements file that says `ask = false`, if any: it forbids `run --ask`.
    pub fn ask_forbidden_by(&self) -> Option<&Path> {
        self.requirements
            .iter()
            .find(|r| r.ask == Some(false))
            .map(|r| r.origin.as_path())
    }

    /// The requirements file that fixes the allowlist, if any: it manages `allowed_domains`
    /// and lets no user allow entry outside them be in force (`managed_allowed_domains_only`,
    /// `allowlist_expansion_enabled = false`, or unset, under which a user entry must be
    /// covered by a managed one, so that it allows nothing more). No decider (learn mode) may
    /// then allow a miss ([`proxy_policy::PolicyBuilder::allowlist_fixed_by`]).
    pub fn allowlist_fixed_by(&self) -> Option<&Path> {
        self.requirements
            .iter()
            .find(|r| {
                r.allowed_domains.is_some()
                    && (r.managed_allowed_domains_only
                        || r.allowlist_expansion_enabled != Some(true))
            })
            .map(|r| r.origin.as_path())
    }
    /// Adds warnings found while reading the files (e.g. a requirements file not owned by root).
    pub(crate) fn add_warnings(&mut self, warnings: impl IntoIterator<Item = String>) {
        self.warnings.extend(warnings);
    }

    /// Warnings to print at start (clamped listeners, overridden or ignored entries,
    /// requirements files a user could rewrite, `*` with local binding).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.warnings.clone();
        if self.allow_local_binding()
            && let Some(e) = self
                .domains
                .iter()
                .find(|e| e.action == Action::Allow && e.pattern.is_global())
        {
            w.push(format!(
                "`*` is allowed ({}) with allow_local_binding on ({}): it admits every local address, cloud metadata included (169.254.169.254, and fd00:ec2::254 over IPv6 on AWS); add deny entries for them (`--deny 169.254.169.254 --deny fd00:ec2::254`, or `denied_domains`)",
                e.layer,
                self.settings.allow_local_binding.layer
            ));
        }
        if let Ok((_, clamps)) = self.listeners_and_warnings() {
            w.extend(clamps);
        }
        w
    }

    /// Whether any unix socket permission is on (which forces loopback listeners).
    pub fn unix_sockets_enabled(&self) -> bool {
        self.allow_all_unix_sockets() || self.unix_sockets.iter().any(|e| e.action == Action::Allow)
    }

    fn listeners_checked(&self) -> Result<Listeners, Error> {
        self.listeners_and_warnings().map(|(l, _)| l)
    }

    /// The listener addresses, clamped to loopback unless the `dangerously_*` flags allow
    /// otherwise.
    pub fn listeners(&self) -> Listeners {
        // Validated when the config was built.
        self.listeners_checked().unwrap_or(Listeners {
            http: SocketAddr::from(([127, 0, 0, 1], 3128)),
            socks: None,
            admin: None,
        })
    }

    fn listeners_and_warnings(&self) -> Result<(Listeners, Vec<String>), Error> {
        let mut warnings = Vec::new();
        let mut diags = Vec::new();
        let force = self
            .unix_sockets_enabled()
            .then_some("unix socket proxying is enabled");
        let proxy_flag = "dangerously_allow_non_loopback_proxy";
        let s = &self.settings;
        let mut one = |url: &Setting<String>,
                       name: &str,
                       port: u16,
                       flag: &str,
                       allow: bool,
                       force: Option<&str>| {
            match parse_listen_url(&url.value, port) {
                Ok(addr) => {
                    let (addr, w) = clamp_bind(name, addr, allow, flag, force);
                    warnings.extend(w);
                    Some(addr)
                }
                Err(e) => {
                    diags.push(Diagnostic::new(
                        DiagnosticKind::InvalidValue,
                        url.layer.to_string(),
                        url.key,
                        e,
                    ));
                    None
                }
            }
        };
        let allow_proxy = s.dangerously_allow_non_loopback_proxy.value;
        let allow_admin = s.dangerously_allow_non_loopback_admin.value;
        let http = one(
            &s.proxy_url,
            "HTTP proxy",
            3128,
            proxy_flag,
            allow_proxy,
            force,
        );
        let socks = self
            .enable_socks5()
            .then(|| {
                one(
                    &s.socks_url,
                    "SOCKS5 proxy",
                    8081,
                    proxy_flag,
                    allow_proxy,
                    force,
                )
            })
            .flatten();
        let admin = self
            .enable_admin()
            .then(|| {
                one(
                    &s.admin_url,
                    "admin API",
                    8080,
                    "dangerously_allow_non_loopback_admin",
                    allow_admin,
                    force,
                )
            })
            .flatten();
        if !diags.is_empty() {
            return Err(Error { diagnostics: diags });
        }
        let http = http.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3128)));
        Ok((Listeners { http, socks, admin }, warnings))
    }

    /// Compiles the policy: each pattern's origin is the label of its layer.
    pub fn policy(&self) -> Result<Policy, Error> {
        self.policy_with(|_| Ok(()))
    }

    /// [`Config::policy`], with `extra` adding what the config does not hold before the build
    /// (the credential broker's destinations, known once its grants are made).
    pub fn policy_with(
        &self,
        extra: impl FnOnce(&mut proxy_policy::PolicyBuilder) -> Result<(), proxy_policy::Error>,
    ) -> Result<Policy, Error> {
        let mut b = Policy::builder();
        let mut diags = Vec::new();
        // A refusal names the first deny entry that matched: the managed ones go first, so a
        // request that a managed and a user entry both deny names the entry the user cannot
        // remove (and the remedy says so) rather than one whose removal changes nothing.
        let user_deny = |e: &&DomainEntry| e.action == Action::Deny && e.layer.is_user();
        let managed_first = self
            .domains
            .iter()
            .filter(|e| !user_deny(e))
            .chain(self.domains.iter().filter(user_deny));
        for e in managed_first {
            let origin = e.layer.to_string();
            let res = match e.action {
                Action::Allow => b.allow(e.pattern.as_str(), Some(&origin)).map(|_| ()),
                Action::Deny => b.deny(e.pattern.as_str(), Some(&origin)).map(|_| ()),
            };
            if let Err(err) = res {
                diags.push(Diagnostic::new(
                    DiagnosticKind::InvalidValue,
                    origin,
                    "network.domains",
                    err.to_string(),
                ));
            }
        }
        for s in self
            .unix_sockets
            .iter()
            .filter(|s| s.action == Action::Allow)
        {
            if let Err(err) = b.allow_unix_socket(&s.path, Some(&s.layer.to_string())) {
                diags.push(Diagnostic::new(
                    DiagnosticKind::InvalidValue,
                    s.layer.to_string(),
                    "network.unix_sockets",
                    err.to_string(),
                ));
            }
        }
        b.enabled(self.enabled())
            .mode(self.mode())
            .allow_local_binding(self.allow_local_binding())
            .allow_all_unix_sockets(self.allow_all_unix_sockets())
            .interception(self.mitm() || self.credential_broker())
            .allowlist_fixed_by(self.allowlist_fixed_by().map(|p| p.display().to_string()));
        for n in self.treat_as_public() {
            b.treat_as_public(n);
        }
        for h in &self.hooks {
            let added = h
                .compile()
                .map_err(|e| proxy_policy::Error::Hook(format!("{}: {e}", h.name)))
                .and_then(|hook| b.hook(hook).map(|_| ()));
            if let Err(e) = added {
                diags.push(Diagnostic::new(
                    DiagnosticKind::InvalidValue,
                    h.layer.to_string(),
                    format!("network.mitm.hooks.{}", h.name),
                    e.to_string(),
                ));
            }
        }
        if !diags.is_empty() {
            return Err(Error { diagnostics: diags });
        }
        if let Err(e) = extra(&mut b) {
            return Err(Error::one(Diagnostic::new(
                DiagnosticKind::InvalidValue,
                "effective config",
                "network.credentials",
                e.to_string(),
            )));
        }
        b.build().map_err(|e| {
            Error::one(Diagnostic::new(
                DiagnosticKind::InvalidValue,
                "effective config",
                "network.domains",
                e.to_string(),
            ))
        })
    }

    /// Every value with the layer that set it, for `config show`: the scalar keys in schema
    /// order (secrets redacted), then the domain entries, the unix socket entries and the
    /// static hosts.
    pub fn show(&self) -> Vec<ShownValue> {
        let mut out = self.settings.shown();
        for e in &self.domains {
            out.push(ShownValue {
                key: format!("network.domains.{:?}", e.pattern.as_str()),
                value: Some(Value::String(e.action.as_str().into())),
                layer: e.layer.clone(),
            });
        }
        for e in &self.unix_sockets {
            out.push(ShownValue {
                key: format!("network.unix_sockets.{:?}", e.path),
                value: Some(Value::String(e.action.as_str().into())),
                layer: e.layer.clone(),
            });
        }
        for h in &self.hooks {
            let list =
                |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
            let map = |m: &[(String, Vec<String>)]| {
                Value::Table(m.iter().map(|(k, v)| (k.clone(), list(v))).collect())
            };
            let mut t = toml::Table::new();
            t.insert("host".into(), Value::String(h.host.clone()));
            t.insert("methods".into(), list(&h.methods));
            t.insert("path_prefixes".into(), list(&h.path_prefixes));
            if !h.query.is_empty() {
                t.insert("query".into(), map(&h.query));
            }
            if !h.headers.is_empty() {
                t.insert("headers".into(), map(&h.headers));
            }
            t.insert("action".into(), list(&h.actions));
            out.push(ShownValue {
                key: format!("network.mitm.hooks.{}", h.name),
                value: Some(Value::Table(t)),
                layer: h.layer.clone(),
            });
        }
        for a in &self.hook_actions {
            let mut t = toml::Table::new();
            t.insert(
                "strip_request_headers".into(),
                Value::Array(
                    a.strip_request_headers
                        .iter()
                        .map(|s| Value::String(s.clone()))
                        .collect(),
                ),
            );
            let injected = a
                .inject_request_headers
                .iter()
                .map(|i| {
                    let mut e = toml::Table::new();
                    e.insert("name".into(), Value::String(i.name.clone()));
                    // Where the secret is, never its value.
                    match &i.secret {
                        SecretRef::EnvVar(v) => {
                            e.insert("secret_env_var".into(), Value::String(v.clone()))
                        }
                        SecretRef::File(f) => {
                            e.insert("secret_file".into(), Value::String(f.display().to_string()))
                        }
                    };
                    if !i.prefix.is_empty() {
                        e.insert("prefix".into(), Value::String(i.prefix.clone()));
                    }
                    Value::Table(e)
                })
                .collect();
            t.insert("inject_request_headers".into(), Value::Array(injected));
            out.push(ShownValue {
                key: format!("network.mitm.actions.{}", a.name),
                value: Some(Value::Table(t)),
                layer: a.layer.clone(),
            });
        }
        for c in &self.credentials {
            let list =
                |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
            let mut t = toml::Table::new();
            t.insert("env".into(), Value::String(c.env.clone()));
            // Where the secret is, never its value.
            match &c.secret {
                Some(SecretRef::EnvVar(v)) => {
                    t.insert("secret_env_var".into(), Value::String(v.clone()));
                }
                Some(SecretRef::File(f)) => {
                    t.insert("secret_file".into(), Value::String(f.display().to_string()));
                }
                None => {}
            }
            t.insert("hosts".into(), list(&c.hosts));
            if let Some(p) = c.port {
                t.insert("port".into(), Value::Integer(i64::from(p)));
            }
            if !c.path_prefixes.is_empty() {
                t.insert("path_prefixes".into(), list(&c.path_prefixes));
            }
            if !c.send.is_empty() {
                t.insert("send".into(), list(&c.send));
            }
            for (k, v) in [
                ("basic_user", &c.basic_user),
                ("header", &c.header),
                ("prefix", &c.prefix),
            ] {
                if let Some(v) = v {
                    t.insert(k.into(), Value::String(v.clone()));
                }
            }
            out.push(ShownValue {
                key: format!("network.credentials.{}", c.name),
                value: Some(Value::Table(t)),
                layer: c.layer.clone(),
            });
        }
        for (name, (ips, layer)) in &self.dns_hosts {
            out.push(ShownValue {
                key: format!("network.dns.hosts.{name:?}"),
                value: Some(Value::Array(
                    ips.iter().map(|i| Value::String(i.to_string())).collect(),
                )),
                layer: layer.clone(),
            });
        }
        out
    }

    /// The keys whose change needs a restart and differ between `self` and `next`.
    pub fn restart_keys_changed(&self, next: &Config) -> Vec<String> {
        let mut changed: Vec<String> = self
            .settings
            .restart_keys_changed(&next.settings)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if self.dns_hosts() != next.dns_hosts() {
            changed.push("network.dns.hosts".into());
        }
        // Grants and their dummies are made at start (the child holds the dummies).
        let grants = |c: &Config| {
            c.credentials
                .iter()
                .map(|e| CredentialEntry {
                    layer: Layer::Default,
                    ..e.clone()
                })
                .collect::<Vec<_>>()
        };
        if grants(self) != grants(next) {
            changed.push("network.credentials".into());
        }
        changed
    }
}
