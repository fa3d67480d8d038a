//! Config layers: where a value came from, and the parsing of one TOML document into a layer,
//! with a diagnostic for every problem (file, key path, why, and the nearest known key).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use proxy_core::{Host, Mode};
use proxy_policy::{Pattern, PatternKind};
use toml::{Table, Value};

use crate::error::{Diagnostic, DiagnosticKind};
use crate::hooks::{HookAction, HookEntry, TableReader};
use crate::schema::{
    Kind, LISTS, LayerValues, MAPS, TABLES, TOP, kind_of, known_paths, parse_cidr, parse_nameserver,
};

/// Where a value came from. Displayed as `default`, the file's path, `command-line` or
/// `runtime`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Built-in defaults.
    Default,
    /// A config file (system, user, or `--config`).
    File(PathBuf),
    /// Command-line options (`-c`, `--allow`, `--deny`, `--mode`, ...).
    CommandLine,
    /// Changes made through the admin API (kept across file reloads, lost at exit).
    Runtime,
    /// A managed requirements file.
    Managed(PathBuf),
}

impl Layer {
    /// Whether a user controls this layer (everything but defaults and managed files).
    pub fn is_user(&self) -> bool {
        matches!(self, Layer::File(_) | Layer::CommandLine | Layer::Runtime)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Default => f.write_str("default"),
            Layer::File(p) | Layer::Managed(p) => write!(f, "{}", p.display()),
            Layer::CommandLine => f.write_str("command-line"),
            Layer::Runtime => f.write_str("runtime"),
        }
    }
}

/// `allow` or `deny`, for a domain or a unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Allowed.
    Allow,
    /// Denied (beats allow for the same key within a layer).
    Deny,
}

impl Action {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// The unit suffixes of key names (`timeout_ms`, `idle_timeout_s`, `max_header_bytes`), and
/// spellings of them that no key uses.
const UNITS: &[&str] = &[
    "_ms",
    "_millis",
    "_milliseconds",
    "_s",
    "_sec",
    "_secs",
    "_seconds",
    "_bytes",
    "_b",
];

/// A key name without its unit suffix.
fn without_unit(name: &str) -> &str {
    UNITS
        .iter()
        .find_map(|u| name.strip_suffix(u).filter(|rest| !rest.is_empty()))
        .unwrap_or(name)
}

/// Whether two key names differ only by a unit suffix (`timeout` and `timeout_ms`,
/// `idle_timeout_ms` and `idle_timeout_s`).
fn differ_by_unit(a: &str, b: &str) -> bool {
    a != b && without_unit(a) == without_unit(b)
}

/// The nearest known key to an unknown one: the same name with a unit suffix in the same
/// table (`dns.timeout` → `dns.timeout_ms`), a close spelling in the same table, or the same
/// name (give or take a unit) in another table.
pub(crate) fn suggest(table: &str, key: &str) -> Option<String> {
    let prefix = if table.is_empty() {
        String::new()
    } else {
        format!("{table}.")
    };
    let siblings: Vec<&str> = if table.is_empty() {
        TOP.to_vec()
    } else {
        known_paths()
            .filter_map(|p| p.strip_prefix(prefix.as_str()))
            .filter(|rest| !rest.contains('.'))
            .collect()
    };
    if let Some(s) = siblings.iter().find(|s| differ_by_unit(key, s)) {
        return Some(format!("{prefix}{s}"));
    }
    let best = siblings
        .iter()
        .map(|s| (strsim::damerau_levenshtein(key, s), *s))
        .min();
    if let Some((dist, s)) = best
        && dist <= (key.len() / 3).max(2)
    {
        return Some(format!("{prefix}{s}"));
    }
    let last = |p: &str| p.rsplit('.').next().unwrap_or_default().to_owned();
    known_paths()
        .find(|p| last(p) == key)
        .or_else(|| known_paths().find(|p| differ_by_unit(key, &last(p))))
        .map(str::to_owned)
}

/// One parsed layer.
#[derive(Debug, Clone)]
pub(crate) struct LayerData {
    pub(crate) layer: Layer,
    /// The scalar keys it sets.
    pub(crate) values: LayerValues,
    /// Domain entries by pattern key, in the order written; deny beats allow for one key.
    pub(crate) domains: Vec<(String, Pattern, Action)>,
    pub(crate) unix_sockets: Vec<(String, Action)>,
    pub(crate) dns_hosts: Vec<(String, Vec<IpAddr>)>,
    /// `[network.mitm.hooks]`, when this layer has the table (it replaces lower layers' hooks).
    pub(crate) hooks: Option<Vec<HookEntry>>,
    /// `[network.mitm.actions.NAME]`, overlaying lower layers' actions by name.
    pub(crate) actions: Vec<HookAction>,
    /// `[network.credentials.NAME]`, overlaying lower layers' grants by name.
    pub(crate) credentials: Vec<crate::CredentialEntry>,
}

impl LayerData {
    pub(crate) fn new(layer: Layer) -> Self {
        Self {
            layer,
            values: LayerValues::default(),
            domains: Vec::new(),
            unix_sockets: Vec::new(),
            dns_hosts: Vec::new(),
            hooks: None,
            actions: Vec::new(),
            credentials: Vec::new(),
        }
    }

    pub(crate) fn add_domain(&mut self, pattern: Pattern, action: Action) {
        let key = pattern.key();
        match self.domains.iter_mut().find(|(k, _, _)| *k == key) {
            Some(entry) => {
                if action == Action::Deny {
                    *entry = (key, pattern, action);
                }
            }
            None => self.domains.push((key, pattern, action)),
        }
    }

    fn add_socket(&mut self, path: String, action: Action) {
        match self.unix_sockets.iter_mut().find(|(p, _)| *p == path) {
            Some(entry) => {
                if action == Action::Deny {
                    entry.1 = action;
                }
            }
            None => self.unix_sockets.push((path, action)),
        }
    }
}

/// Collects the diagnostics of one document.
pub(crate) struct Parser<'a> {
    pub(crate) origin: String,
    pub(crate) data: &'a mut LayerData,
    pub(crate) diags: &'a mut Vec<Diagnostic>,
}

fn type_name(v: &Value) -> &'static str {
    v.type_str()
}

impl Parser<'_> {
    fn diag(&mut self, kind: DiagnosticKind, key: &str, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::new(kind, self.origin.clone(), key, message));
    }

    fn unknown(&mut self, table: &str, key: &str) {
        let path = if table.is_empty() {
            key.to_owned()
        } else {
            format!("{table}.{key}")
        };
        let msg = match suggest(table, key) {
            Some(s) => format!("unknown key (did you mean `{s}`?)"),
            None => "unknown key".to_owned(),
        };
        self.diag(DiagnosticKind::UnknownKey, &path, msg);
    }

    /// A whole document: `[network]`, or `default_permissions` plus `[permissions.NAME.network]`,
    /// and `[otel]`.
    pub(crate) fn document(&mut self, doc: &Table) {
        let mut network_seen = false;
        for (key, value) in doc {
            match key.as_str() {
                "network" => match value.as_table() {
                    Some(t) => {
                        network_seen = true;
                        self.table("network", t);
                    }
                    None => self.diag(
                        DiagnosticKind::InvalidValue,
                        "network",
                        format!("expected a table, found {}", type_name(value)),
                    ),
                },
                "otel" => match value.as_table() {
                    Some(t) => self.table("otel", t),
                    None => self.diag(
                        DiagnosticKind::InvalidValue,
                        "otel",
                        format!("expected a table, found {}", type_name(value)),
                    ),
                },
                "default_permissions" | "permissions" => {}
                other => self.unknown("", other),
            }
        }
        self.profiles(doc, network_seen);
    }

    fn profiles(&mut self, doc: &Table, network_seen: bool) {
        let selected = match doc.get("default_permissions") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                let msg = format!("expected a profile name (string), found {}", type_name(v));
                self.diag(DiagnosticKind::InvalidValue, "default_permissions", msg);
                return;
            }
        };
        let profiles = match doc.get("permissions") {
            None => None,
            Some(Value::Table(t)) => Some(t),
            Some(v) => {
                let msg = format!("expected a table of profiles, found {}", type_name(v));
                self.diag(DiagnosticKind::InvalidValue, "permissions", msg);
                return;
            }
        };
        let Some(name) = selected else {
            if profiles.is_some() {
                self.diag(
                    DiagnosticKind::InvalidValue,
                    "permissions",
                    "profiles are defined but `default_permissions` does not select one",
                );
            }
            return;
        };
        let Some(profile) = profiles.and_then(|p| p.get(&name)) else {
            self.diag(
                DiagnosticKind::InvalidValue,
                "default_permissions",
                format!("no profile `[permissions.{name}]` in this file"),
            );
            return;
        };
        if network_seen {
            self.diag(
                DiagnosticKind::InvalidValue,
                "default_permissions",
                "both `[network]` and a selected profile are set; use one shape per file",
            );
            return;
        }
        let base = format!("permissions.{name}");
        let Some(profile) = profile.as_table() else {
            self.diag(DiagnosticKind::InvalidValue, &base, "expected a table");
            return;
        };
        for (key, value) in profile {
            if key != "network" {
                self.diag(
                    DiagnosticKind::UnknownKey,
                    &format!("{base}.{key}"),
                    "unknown key (a profile holds only `network`)",
                );
                continue;
            }
            match value.as_table() {
                Some(t) => self.table_as("network", &format!("{base}.network"), t),
                None => self.diag(
                    DiagnosticKind::InvalidValue,
                    &format!("{base}.network"),
                    "expected a table",
                ),
            }
        }
    }

    fn table(&mut self, path: &str, t: &Table) {
        self.table_as(path, path, t);
    }

    /// Walks a table whose schema path is `schema` and whose written path is `shown`.
    pub(crate) fn table_as(&mut self, schema: &str, shown: &str, t: &Table) {
        for (key, value) in t {
            let spath = format!("{schema}.{key}");
            let wpath = format!("{shown}.{key}");
            if TABLES.contains(&spath.as_str()) {
                match value.as_table() {
                    Some(inner) => self.table_as(&spath, &wpath, inner),
                    None => self.diag(
                        DiagnosticKind::InvalidValue,
                        &wpath,
                        format!("expected a table, found {}", type_name(value)),
                    ),
                }
            } else if let Some(kind) = kind_of(&spath) {
                self.scalar(&spath, &wpath, kind, value);
            } else if MAPS.contains(&spath.as_str()) {
                self.map(&spath, &wpath, value);
            } else if LISTS.contains(&spath.as_str()) {
                self.list(&spath, &wpath, value);
            } else {
                // Suggest against the schema table, but report the written path.
                let before = self.diags.len();
                self.unknown(schema, key);
                if let Some(d) = self.diags.get_mut(before) {
                    d.key = wpath;
                }
            }
        }
    }

    fn scalar(&mut self, spath: &str, wpath: &str, kind: Kind, value: &Value) {
        // Lists: every bad entry, each at its index.
        let entry: Option<fn(&Value) -> Option<String>> = match (kind, value) {
            (Kind::Cidrs, Value::Array(_)) => Some(|i| match i {
                Value::String(s) => parse_cidr(s).err(),
                other => Some(format!("expected a CIDR string, found {}", describe(other))),
            }),
            (Kind::Nameservers, Value::Array(_)) => Some(|i| match i {
                Value::String(s) => parse_nameserver(s).err(),
                other => Some(format!(
                    "expected an \"IP\" or \"IP:PORT\" string, found {}",
                    describe(other)
                )),
            }),
            _ => None,
        };
        if let (Some(check), Some(items)) = (entry, value.as_array()) {
            let before = self.diags.len();
            for (i, item) in items.iter().enumerate() {
                if let Some(msg) = check(item) {
                    self.diag(DiagnosticKind::InvalidValue, &format!("{wpath}[{i}]"), msg);
                }
            }
            if self.diags.len() > before {
                return;
            }
        }
        let bad = |expected: &str| format!("expected {expected}, found {}", describe(value));
        let invalid = match (kind, value) {
            (Kind::Bool, Value::Boolean(_)) => None,
            (Kind::Bool, _) => Some(bad("true or false")),
            (Kind::Mode, Value::String(s)) if s.parse::<Mode>().is_ok() => None,
            (Kind::Mode, _) => Some(bad("\"full\" or \"limited\"")),
            (Kind::ListenUrl, Value::String(s)) => crate::listen::parse_listen_url(s, 1).err(),
            (Kind::ListenUrl, _) => Some(bad("a listener URL such as \"http://127.0.0.1:3128\"")),
            (Kind::Text, Value::String(s)) if !s.trim().is_empty() => None,
            (Kind::Text, _) => Some(bad("a non-empty string")),
            (Kind::Int { min, max }, Value::Integer(n)) if (min..=max).contains(n) => None,
            (Kind::Int { min, max }, _) => Some(bad(&format!("an integer from {min} to {max}"))),
            (Kind::Cidrs | Kind::Nameservers, Value::Array(_)) => None,
            (Kind::Cidrs, _) => Some(bad("a list of CIDRs such as [\"198.18.0.0/15\"]")),
            (Kind::Nameservers, _) => Some(bad("a list such as [\"127.0.0.53\", \"[::1]:5353\"]")),
            (Kind::Exporter, Value::String(s)) if s == "none" => None,
            (Kind::Exporter, Value::String(s)) if s == "otlp-http" || s == "otlp-grpc" => None,
            (Kind::Exporter, _) => Some(bad("\"none\", \"otlp-http\" or \"otlp-grpc\"")),
            (Kind::Headers, Value::Table(t)) => t
                .iter()
                .find(|(_, v)| !v.is_str())
                .map(|(k, v)| format!("header {k:?}: expected a string, found {}", describe(v))),
            (Kind::Headers, _) => Some(bad("a table of header names to strings")),
            (Kind::Mitm, Value::Boolean(_)) => None,
            (Kind::Mitm, Value::Table(t)) => {
                self.mitm_table(wpath, t);
                None
            }
            (Kind::Mitm, _) => Some(bad("true, false, or a table")),
        };
        if let Some(msg) = invalid {
            self.diag(DiagnosticKind::InvalidValue, wpath, msg);
            return;
        }
        self.check_supported(spath, wpath, value);
        if !self.data.values.store(spath, value) {
            // The checks above accept only values of the key's type.
            self.diag(
                DiagnosticKind::InvalidValue,
                wpath,
                format!(
                    "expected a value of type {kind:?}, found {}",
                    describe(value)
                ),
            );
        }
    }

    /// Values that parse but cannot be used.
    fn check_supported(&mut self, spath: &str, wpath: &str, value: &Value) {
        match spath {
            "otel.endpoint"
                if value
                    .as_str()
                    .is_some_and(|s| !s.trim().to_ascii_lowercase().starts_with("http://")) =>
            {
                self.diag(
                    DiagnosticKind::InvalidValue,
                    wpath,
                    "expected a plain http:// collector URL such as \"http://127.0.0.1:4318\" (TLS to the collector is not supported)",
                );
            }
            "network.audit_log" if value.as_str().is_some_and(str::is_empty) => self.diag(
                DiagnosticKind::InvalidValue,
                wpath,
                "expected the path of the audit file, found an empty string",
            ),
            _ => {}
        }
    }

    fn mitm_table(&mut self, wpath: &str, t: &Table) {
        for (key, value) in t {
            let path = format!("{wpath}.{key}");
            match key.as_str() {
                "enabled" => match value {
                    Value::Boolean(_) => {}
                    other => self.diag(
                        DiagnosticKind::InvalidValue,
                        &path,
                        format!("expected true or false, found {}", describe(other)),
                    ),
                },
                "hooks" => match value.as_table() {
                    Some(hooks) => {
                        let mut entries = Vec::new();
                        for (name, v) in hooks {
                            let hpath = format!("{path}.{}", quote_key(name));
                            let Some(t) = v.as_table() else {
                                self.diag(DiagnosticKind::InvalidValue, &hpath, "expected a table");
                                continue;
                            };
                            let mut reader = TableReader::new(&hpath);
                            let layer = self.data.layer.clone();
                            if let Some(h) = reader.hook(name, t, &layer) {
                                entries.push(h);
                            }
                            for (k, m) in reader.problems {
                                self.diag(DiagnosticKind::InvalidValue, &k, m);
                            }
                        }
                        self.data.hooks = Some(entries);
                    }
                    None => self.diag(DiagnosticKind::InvalidValue, &path, "expected a table"),
                },
                "actions" => match value.as_table() {
                    Some(actions) => {
                        for (name, v) in actions {
                            let apath = format!("{path}.{}", quote_key(name));
                            let Some(t) = v.as_table() else {
                                self.diag(DiagnosticKind::InvalidValue, &apath, "expected a table");
                                continue;
                            };
                            let mut reader = TableReader::new(&apath);
                            let layer = self.data.layer.clone();
                            if let Some(a) = reader.action(name, t, &layer) {
                                self.data.actions.push(a);
                            }
                            for (k, m) in reader.problems {
                                self.diag(DiagnosticKind::InvalidValue, &k, m);
                            }
                        }
                    }
                    None => self.diag(DiagnosticKind::InvalidValue, &path, "expected a table"),
                },
                other => {
                    let near = ["enabled", "hooks", "actions"]
                        .iter()
                        .min_by_key(|k| strsim::damerau_levenshtein(other, k))
                        .map(|k| format!(" (did you mean `{wpath}.{k}`?)"))
                        .unwrap_or_default();
                    self.diag(
                        DiagnosticKind::UnknownKey,
                        &path,
                        format!("unknown key{near}"),
                    );
                }
            }
        }
    }

    fn action(&mut self, path: &str, value: &Value) -> Option<Action> {
        match value.as_str() {
            Some("allow") => Some(Action::Allow),
            Some("deny") => Some(Action::Deny),
            _ => {
                self.diag(
                    DiagnosticKind::InvalidValue,
                    path,
                    format!("expected \"allow\" or \"deny\", found {}", describe(value)),
                );
                None
            }
        }
    }

    fn map(&mut self, spath: &str, wpath: &str, value: &Value) {
        let Some(t) = value.as_table() else {
            self.diag(
                DiagnosticKind::InvalidValue,
                wpath,
                format!("expected a table, found {}", type_name(value)),
            );
            return;
        };
        for (key, v) in t {
            let path = format!("{wpath}.{}", quote_key(key));
            match spath {
                "network.credentials" => {
                    let Some(table) = v.as_table() else {
                        self.diag(DiagnosticKind::InvalidValue, &path, "expected a table");
                        continue;
                    };
                    let layer = self.data.layer.clone();
                    match crate::credentials::read(&path, key, table, &layer) {
                        Ok(entry) => self.data.credentials.push(entry),
                        Err(problems) => {
                            for (k, m) in problems {
                                self.diag(DiagnosticKind::InvalidValue, &k, m);
                            }
                        }
                    }
                }
                "network.domains" => {
                    let Some(action) = self.action(&path, v) else {
                        continue;
                    };
                    self.domain(&path, key, action);
                }
                "network.unix_sockets" => {
                    let Some(action) = self.action(&path, v) else {
                        continue;
                    };
                    self.socket(&path, key, action);
                }
                _ => self.dns_host(&path, key, v),
            }
        }
    }

    fn domain(&mut self, path: &str, pattern: &str, action: Action) {
        match Pattern::parse(pattern) {
            Ok(p) if p.is_global() && action == Action::Deny => self.diag(
                DiagnosticKind::InvalidValue,
                path,
                "the global wildcard `*` cannot be denied; use exact hosts or scoped wildcards like *.example.com or **.example.com",
            ),
            Ok(p) if is_ip_glob(&p) => self.diag(DiagnosticKind::InvalidValue, path, ip_glob_message(&p)),
            Ok(p) => self.data.add_domain(p, action),
            Err(e) => self.diag(DiagnosticKind::InvalidValue, path, e.to_string()),
        }
    }

    fn socket(&mut self, path: &str, socket: &str, action: Action) {
        if action == Action::Allow && (!socket.starts_with('/') || socket.contains('\0')) {
            self.diag(
                DiagnosticKind::InvalidValue,
                path,
                format!("expected a NUL-free absolute path, got {socket:?}"),
            );
            return;
        }
        self.data.add_socket(socket.to_owned(), action);
    }

    fn dns_host(&mut self, path: &str, name: &str, v: &Value) {
        let host = match Host::parse(name) {
            Ok(h) if h.is_name() => h,
            Ok(_) => {
                self.diag(
                    DiagnosticKind::InvalidValue,
                    path,
                    "expected a host name, not an address",
                );
                return;
            }
            Err(e) => {
                self.diag(
                    DiagnosticKind::InvalidValue,
                    path,
                    format!("invalid host name: {e}"),
                );
                return;
            }
        };
        let Some(items) = v.as_array().filter(|a| !a.is_empty()) else {
            self.diag(
                DiagnosticKind::InvalidValue,
                path,
                format!(
                    "expected a non-empty list of IP addresses, found {}",
                    describe(v)
                ),
            );
            return;
        };
        let mut ips = Vec::new();
        let before = self.diags.len();
        for (i, item) in items.iter().enumerate() {
            match item
                .as_str()
                .map(|s| Host::parse(s).ok().and_then(|h| h.ip()))
            {
                Some(Some(ip)) => ips.push(ip),
                _ => self.diag(
                    DiagnosticKind::InvalidValue,
                    &format!("{path}[{i}]"),
                    format!("expected an IP address string, found {}", describe(item)),
                ),
            }
        }
        if self.diags.len() == before {
            self.data.dns_hosts.push((host.to_string(), ips));
        }
    }

    fn list(&mut self, spath: &str, wpath: &str, value: &Value) {
        let Some(items) = value.as_array() else {
            self.diag(
                DiagnosticKind::InvalidValue,
                wpath,
                format!("expected a list of strings, found {}", type_name(value)),
            );
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let path = format!("{wpath}[{i}]");
            let Some(s) = item.as_str() else {
                self.diag(
                    DiagnosticKind::InvalidValue,
                    &path,
                    format!("expected a string, found {}", describe(item)),
                );
                continue;
            };
            match spath {
                "network.allowed_domains" => self.domain(&path, s, Action::Allow),
                "network.denied_domains" => self.domain(&path, s, Action::Deny),
                _ => self.socket(&path, s, Action::Allow),
            }
        }
    }
}

/// Whether a pattern is a glob shaped like an IP address (`10.*.0.1`): its last label is a
/// number, so it names no host name, and wildcards never match addresses.
pub(crate) fn is_ip_glob(p: &Pattern) -> bool {
    match p.kind() {
        PatternKind::Glob { glob, .. } => glob
            .rsplit('.')
            .next()
            .is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())),
        _ => false,
    }
}

/// Why an IP-shaped glob is refused.
pub(crate) fn ip_glob_message(p: &Pattern) -> String {
    format!(
        "invalid pattern {:?}: it looks like an IP address with a wildcard, and wildcards match host names only, never addresses; list each address as a literal",
        p.as_str()
    )
}

fn quote_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// A value for a message: its type and, for short scalars, the value itself.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(n) => format!("integer {n}"),
        Value::Float(f) => format!("float {f}"),
        Value::Boolean(b) => format!("boolean {b}"),
        other => other.type_str().to_owned(),
    }
}
