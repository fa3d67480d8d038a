//! The effective config: layers merged, managed constraints applied, each value with its layer.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use proxy_core::Mode;
use proxy_policy::{Pattern, PatternKind, Policy};
use toml::Value;

use crate::error::{Diagnostic, DiagnosticKind, Error};
use crate::layer::{
    Action, Layer, LayerData, SCALARS, default_value, parse_cidr, parse_nameserver,
};
use crate::listen::{clamp_bind, parse_listen_url};
use crate::managed::Requirements;

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
    scalars: BTreeMap<String, (Value, Layer)>,
    domains: Vec<DomainEntry>,
    unix_sockets: Vec<SocketEntry>,
    dns_hosts: BTreeMap<String, (Vec<IpAddr>, Layer)>,
    ignored_allow: Vec<DomainEntry>,
    warnings: Vec<String>,
    requirements: Vec<Requirements>,
}

impl Config {
    /// Merges parsed layers (lowest first) over the defaults, then applies the managed
    /// requirements. Every violation is reported at once.
    pub(crate) fn from_layers(
        layers: Vec<LayerData>,
        requirements: Vec<Requirements>,
    ) -> Result<Self, Error> {
        let mut scalars = BTreeMap::new();
        for (path, _, _) in SCALARS {
            if let Some(v) = default_value(path) {
                scalars.insert((*path).to_owned(), (v, Layer::Default));
            }
        }
        let mut domains: Vec<DomainEntry> = Vec::new();
        let mut unix_sockets: Vec<SocketEntry> = Vec::new();
        let mut dns_hosts = BTreeMap::new();
        for l in layers {
            for (k, v) in l.scalars {
                scalars.insert(k, (v, l.layer.clone()));
            }
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
            scalars,
            domains,
            unix_sockets,
            dns_hosts,
            ignored_allow: Vec::new(),
            warnings: Vec::new(),
            requirements: Vec::new(),
        };
        let mut diags = Vec::new();
        for r in &requirements {
            config.apply(r, &mut diags);
        }
        config.requirements = requirements;
        if let Err(e) = config.listeners_checked() {
            diags.extend(e.diagnostics);
        }
        if diags.is_empty() {
            Ok(config)
        } else {
            Err(Error { diagnostics: diags })
        }
    }

    fn violation(&self, diags: &mut Vec<Diagnostic>, key: &str, r: &Requirements, message: &str) {
        let origin = self
            .scalars
            .get(key)
            .map_or_else(|| "effective config".to_owned(), |(_, l)| l.to_string());
        diags.push(Diagnostic::new(
            DiagnosticKind::Constraint,
            origin,
            key,
            format!("{message} (constrained by {})", r.origin.display()),
        ));
    }

    /// Applies one requirements file: unset (default) values are pinned to the managed
    /// ceiling, explicit wider values are violations, managed lists are merged in.
    fn apply(&mut self, r: &Requirements, diags: &mut Vec<Diagnostic>) {
        let managed = Layer::Managed(r.origin.clone());
        let ceilings: [(&str, Option<bool>); 7] = [
            ("network.enabled", r.enabled),
            ("network.allow_upstream_proxy", r.allow_upstream_proxy),
            (
                "network.dangerously_allow_non_loopback_proxy",
                r.dangerously_allow_non_loopback_proxy,
            ),
            ("network.allow_local_binding", r.allow_local_binding),
            (
                "network.dangerously_allow_all_unix_sockets",
                self.all_sockets_ceiling(r),
            ),
            (
                "network.dangerously_allow_non_loopback_admin",
                r.dangerously_allow_non_loopback_admin,
            ),
            (
                "network.dangerously_allow_plaintext_credential_injection",
                r.dangerously_allow_plaintext_credential_injection,
            ),
        ];
        for (key, ceiling) in ceilings {
            if ceiling != Some(false) || !self.bool(key) {
                continue;
            }
            if self.layer_of(key).is_user() {
                self.violation(diags, key, r, "true is not allowed: false is required");
            } else {
                self.scalars
                    .insert(key.to_owned(), (Value::Boolean(false), managed.clone()));
            }
        }
        if r.mode == Some(Mode::Limited) && self.mode() == Mode::Full {
            let key = "network.mode";
            if self.layer_of(key).is_user() {
                self.violation(
                    diags,
                    key,
                    r,
                    "\"full\" is not allowed: \"limited\" or more restrictive is required",
                );
            } else {
                self.scalars.insert(
                    key.to_owned(),
                    (Value::String("limited".into()), managed.clone()),
                );
            }
        }
        self.apply_denylist(r, &managed, diags);
        self.apply_allowlist(r, &managed, diags);
        if let Some(allowed) = &r.allow_unix_sockets {
            for e in self
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
                            r.origin.display()
                        ),
                    ));
                }
            }
        }
        self.apply_treat_as_public(r, &managed, diags);
        self.apply_dns(r, &managed, diags);
    }

    /// Managed `[network.dns]`: pinned nameservers, fixed static hosts, and no user static
    /// host for a name the managed allowlist covers (it would point an allowed name at any
    /// address).
    fn apply_dns(&mut self, r: &Requirements, managed: &Layer, diags: &mut Vec<Diagnostic>) {
        let constrained = |what: String| format!("{what} (constrained by {})", r.origin.display());
        if let Some(pinned) = &r.dns_nameservers {
            let key = "network.dns.nameservers";
            let layer = self.layer_of(key);
            let current = self.dns_nameservers();
            let same = current
                .as_ref()
                .is_some_and(|c| same_set(c.as_slice(), pinned.as_slice()));
            if let (Some(_), false) = (&current, same) {
                let why = if layer.is_user() {
                    "the managed nameservers are pinned: a user layer may not change them"
                        .to_owned()
                } else {
                    format!("conflicts with the nameservers pinned by {layer}")
                };
                diags.push(Diagnostic::new(
                    DiagnosticKind::Constraint,
                    layer.to_string(),
                    key,
                    constrained(why),
                ));
            } else {
                let list = pinned
                    .iter()
                    .map(|a| Value::String(a.to_string()))
                    .collect();
                self.scalars
                    .insert(key.to_owned(), (Value::Array(list), managed.clone()));
            }
        }
        for (name, ips) in &r.dns_hosts {
            match self.dns_hosts.get(name) {
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
                    self.dns_hosts
                        .insert(name.clone(), (ips.clone(), managed.clone()));
                }
            }
        }
        let Some(allowed) = &r.allowed_domains else {
            return;
        };
        for (name, (_, layer)) in &self.dns_hosts {
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

    fn all_sockets_ceiling(&self, r: &Requirements) -> Option<bool> {
        match r.dangerously_allow_all_unix_sockets {
            Some(v) => Some(v),
            None if r.allow_unix_sockets.is_some() => Some(false),
            None => None,
        }
    }

    fn apply_denylist(&mut self, r: &Requirements, managed: &Layer, diags: &mut Vec<Diagnostic>) {
        let Some(denied) = &r.denied_domains else {
            return;
        };
        if r.denylist_expansion_enabled == Some(false) {
            for e in self
                .domains
                .iter()
                .filter(|e| e.action == Action::Deny && e.layer.is_user())
            {
                if !denied.iter().any(|d| d.key() == e.pattern.key()) {
                    diags.push(Diagnostic::new(
                        DiagnosticKind::Constraint,
                        e.layer.to_string(),
                        format!("network.domains.{:?}", e.pattern.as_str()),
                        format!(
                            "the managed denied_domains are fixed: deny entries must match them (constrained by {})",
                            r.origin.display()
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
            match self.domains.iter_mut().find(|e| e.pattern.key() == p.key()) {
                Some(e) => {
                    if e.action == Action::Allow {
                        self.warnings.push(format!(
                            "{}: allow entry {} is overridden by the managed deny entry in {}",
                            e.layer,
                            e.pattern,
                            r.origin.display()
                        ));
                    }
                    *e = entry;
                }
                None => self.domains.push(entry),
            }
        }
    }

    fn apply_allowlist(&mut self, r: &Requirements, managed: &Layer, diags: &mut Vec<Diagnostic>) {
        let Some(allowed) = &r.allowed_domains else {
            return;
        };
        let is_managed = |p: &Pattern| allowed.iter().any(|m| m.key() == p.key());
        if r.managed_allowed_domains_only {
            let (keep, ignored): (Vec<_>, Vec<_>) = std::mem::take(&mut self.domains)
                .into_iter()
                .partition(|e| {
                    e.action == Action::Deny || !e.layer.is_user() || is_managed(&e.pattern)
                });
            for e in &ignored {
                self.warnings.push(format!(
                    "{}: allow entry {} is not in force: managed_allowed_domains_only in {} pins the allowlist to the managed entries",
                    e.layer, e.pattern, r.origin.display()
                ));
            }
            self.domains = keep;
            self.ignored_allow.extend(ignored);
        } else {
            for e in self
                .domains
                .iter()
                .filter(|e| e.action == Action::Allow && e.layer.is_user())
            {
                let why = match r.allowlist_expansion_enabled {
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
                        format!("{why} (constrained by {})", r.origin.display()),
                    ));
                }
            }
        }
        for p in allowed {
            if self.domains.iter().any(|e| e.pattern.key() == p.key()) {
                // Already present: a deny for the same key keeps winning; an allow stays.
                continue;
            }
            self.domains.push(DomainEntry {
                pattern: p.clone(),
                action: Action::Allow,
                layer: managed.clone(),
            });
        }
    }

    fn apply_treat_as_public(
        &mut self,
        r: &Requirements,
        managed: &Layer,
        diags: &mut Vec<Diagnostic>,
    ) {
        let managed_nets = r.treat_as_public.clone().unwrap_or_default();
        if r.allow_local_binding == Some(false) {
            for net in self.treat_as_public() {
                if self.layer_of("network.treat_as_public").is_user()
                    && !managed_nets.iter().any(|m| m.contains(&net))
                {
                    let msg = format!(
                        "range {net} is not inside a managed treat_as_public range, and managed allow_local_binding is false"
                    );
                    self.violation(diags, "network.treat_as_public", r, &msg);
                }
            }
        }
        if !managed_nets.is_empty() {
            let mut nets = self.treat_as_public();
            for n in managed_nets {
                if !nets.contains(&n) {
                    nets.push(n);
                }
            }
            let layer = if self.layer_of("network.treat_as_public").is_user() {
                self.layer_of("network.treat_as_public")
            } else {
                managed.clone()
            };
            let list = nets.iter().map(|n| Value::String(n.to_string())).collect();
            self.scalars.insert(
                "network.treat_as_public".into(),
                (Value::Array(list), layer),
            );
        }
    }

    /// The layer that set a scalar key.
    pub fn layer_of(&self, key: &str) -> Layer {
        self.scalars
            .get(key)
            .map_or(Layer::Default, |(_, l)| l.clone())
    }

    fn value(&self, key: &str) -> Option<&Value> {
        self.scalars.get(key).map(|(v, _)| v)
    }

    fn bool(&self, key: &str) -> bool {
        self.value(key).and_then(Value::as_bool).unwrap_or(false)
    }

    fn int(&self, key: &str) -> u64 {
        self.value(key)
            .and_then(Value::as_integer)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.value(key).and_then(Value::as_str)
    }

    /// `enabled`.
    pub fn enabled(&self) -> bool {
        self.bool("network.enabled")
    }
    /// `mode`.
    pub fn mode(&self) -> Mode {
        self.text("network.mode")
            .and_then(|s| s.parse().ok())
            .unwrap_or(Mode::Full)
    }
    /// `enable_socks5`.
    pub fn enable_socks5(&self) -> bool {
        self.bool("network.enable_socks5")
    }
    /// `enable_socks5_udp`.
    pub fn enable_socks5_udp(&self) -> bool {
        self.bool("network.enable_socks5_udp")
    }
    /// `enable_admin`.
    pub fn enable_admin(&self) -> bool {
        self.bool("network.enable_admin")
    }
    /// `admin_token`, if set.
    pub fn admin_token(&self) -> Option<&str> {
        self.text("network.admin_token")
    }
    /// `allow_upstream_proxy`.
    pub fn allow_upstream_proxy(&self) -> bool {
        self.bool("network.allow_upstream_proxy")
    }
    /// `[otel] exporter`, unless `none`: `otlp-http` or `otlp-grpc`.
    pub fn otel_exporter(&self) -> Option<&str> {
        self.text("otel.exporter").filter(|e| *e != "none")
    }
    /// `[otel] endpoint`, if set.
    pub fn otel_endpoint(&self) -> Option<&str> {
        self.text("otel.endpoint")
    }
    /// `[otel] headers`.
    pub fn otel_headers(&self) -> Vec<(String, String)> {
        self.value("otel.headers")
            .and_then(Value::as_table)
            .map(|t| {
                t.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// `audit_log`: the JSON-lines audit file, if set.
    pub fn audit_log(&self) -> Option<&str> {
        self.text("network.audit_log")
    }
    /// `dangerously_allow_non_loopback_admin`.
    pub fn allow_non_loopback_admin(&self) -> bool {
        self.bool("network.dangerously_allow_non_loopback_admin")
    }
    /// `dangerously_allow_non_loopback_proxy`.
    pub fn allow_non_loopback_proxy(&self) -> bool {
        self.bool("network.dangerously_allow_non_loopback_proxy")
    }
    /// `allow_local_binding`.
    pub fn allow_local_binding(&self) -> bool {
        self.bool("network.allow_local_binding")
    }
    /// `dangerously_allow_all_unix_sockets`.
    pub fn allow_all_unix_sockets(&self) -> bool {
        self.bool("network.dangerously_allow_all_unix_sockets")
    }
    /// The items of a list-valued key, each parsed (the key was validated when loaded).
    fn list<T>(&self, key: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<Vec<T>> {
        self.value(key).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().and_then(|s| parse(s).ok()))
                .collect()
        })
    }
    /// `treat_as_public`.
    pub fn treat_as_public(&self) -> Vec<IpNet> {
        self.list("network.treat_as_public", parse_cidr)
            .unwrap_or_default()
    }
    /// `[network.dns] nameservers` (`None`: the system's).
    pub fn dns_nameservers(&self) -> Option<Vec<SocketAddr>> {
        self.list("network.dns.nameservers", parse_nameserver)
    }
    /// `[network.dns] timeout_ms`.
    pub fn dns_timeout(&self) -> Duration {
        Duration::from_millis(self.int("network.dns.timeout_ms"))
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
        self.int("network.limits.max_connections")
    }
    /// `[network.limits] connect_timeout_ms`.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.int("network.limits.connect_timeout_ms"))
    }
    /// `[network.limits] header_timeout_ms`.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.int("network.limits.header_timeout_ms"))
    }
    /// `[network.limits] idle_timeout_s`.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.int("network.limits.idle_timeout_s"))
    }
    /// `[network.limits] max_header_bytes`.
    pub fn max_header_bytes(&self) -> u64 {
        self.int("network.limits.max_header_bytes")
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
                self.layer_of("network.allow_local_binding")
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
        let mut one =
            |key: &str, name: &str, port: u16, flag: &str, allow: bool, force: Option<&str>| {
                let url = self.text(key).unwrap_or_default();
                match parse_listen_url(url, port) {
                    Ok(addr) => {
                        let (addr, w) = clamp_bind(name, addr, allow, flag, force);
                        warnings.extend(w);
                        Some(addr)
                    }
                    Err(e) => {
                        diags.push(Diagnostic::new(
                            DiagnosticKind::InvalidValue,
                            self.layer_of(key).to_string(),
                            key,
                            e,
                        ));
                        None
                    }
                }
            };
        let allow_proxy = self.bool("network.dangerously_allow_non_loopback_proxy");
        let allow_admin = self.bool("network.dangerously_allow_non_loopback_admin");
        let http = one(
            "network.proxy_url",
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
                    "network.socks_url",
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
                    "network.admin_url",
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
        let mut b = Policy::builder();
        let mut diags = Vec::new();
        for e in &self.domains {
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
            .allow_all_unix_sockets(self.allow_all_unix_sockets());
        for n in self.treat_as_public() {
            b.treat_as_public(n);
        }
        if !diags.is_empty() {
            return Err(Error { diagnostics: diags });
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

    /// Every value with the layer that set it, for `config show`.
    pub fn show(&self) -> Vec<ShownValue> {
        let mut out = Vec::new();
        for (path, _, _) in SCALARS {
            let (value, layer) = match self.scalars.get(*path) {
                Some((v, l)) => (Some(v.clone()), l.clone()),
                None => (None, Layer::Default),
            };
            // Never show a secret.
            let value = match (*path, value) {
                ("network.admin_token", Some(_)) => Some(Value::String("<redacted>".into())),
                // Collector headers usually carry an API key: names only.
                ("otel.headers", Some(Value::Table(t))) => Some(Value::Table(
                    t.keys()
                        .map(|k| (k.clone(), Value::String("<redacted>".into())))
                        .collect(),
                )),
                // A collector URL may carry a user and password.
                ("otel.endpoint", Some(Value::String(url))) => {
                    Some(Value::String(proxy_core::redact_userinfo(&url)))
                }
                (_, v) => v,
            };
            out.push(ShownValue {
                key: (*path).to_owned(),
                value,
                layer,
            });
        }
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
        let mut changed = Vec::new();
        for (path, _, _) in SCALARS {
            let restart = path.starts_with("network.dns.")
                || path.starts_with("network.limits.")
                || path.starts_with("otel.")
                || path.ends_with("_url")
                || path.starts_with("network.enable_")
                || *path == "network.audit_log";
            if restart && self.value(path) != next.value(path) {
                changed.push((*path).to_owned());
            }
        }
        if self.dns_hosts() != next.dns_hosts() {
            changed.push("network.dns.hosts".into());
        }
        changed
    }
}
