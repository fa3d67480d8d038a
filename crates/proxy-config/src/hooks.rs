//! `[network.mitm.hooks.NAME]` and `[network.mitm.actions.NAME]`: hooks match requests inside
//! intercepted tunnels to one host, and name the actions (headers stripped, headers injected
//! with a secret) applied to the requests they match. docs/mitm.md has the grammar.

use std::path::PathBuf;

use proxy_policy::Hook;
use toml::{Table, Value};

use crate::layer::Layer;

/// One hook as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEntry {
    /// Its name (the table's key).
    pub name: String,
    /// The exact host it applies to.
    pub host: String,
    /// The methods it matches.
    pub methods: Vec<String>,
    /// The path prefixes (literal, `literal:`, or `pattern:` globs).
    pub path_prefixes: Vec<String>,
    /// Query parameters and their allowed values, in the order written.
    pub query: Vec<(String, Vec<String>)>,
    /// Headers and their allowed values (empty: any value), in the order written.
    pub headers: Vec<(String, Vec<String>)>,
    /// The names of the actions it applies, in order.
    pub actions: Vec<String>,
    /// The layer that set it.
    pub layer: Layer,
}

impl HookEntry {
    /// The hook for the policy (the config was checked when loaded, so this fails only on an
    /// entry built by hand).
    pub fn compile(&self) -> Result<Hook, proxy_policy::HookError> {
        let mut hook = Hook::new(&self.name, &self.host)?
            .methods(&self.methods)?
            .path_prefixes(&self.path_prefixes)?;
        for (k, v) in &self.query {
            hook = hook.query(k, v)?;
        }
        for (k, v) in &self.headers {
            hook = hook.header(k, v)?;
        }
        Ok(hook.actions(&self.actions))
    }
}

/// Where an injected header's secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// A variable of netproxy's environment (`secret_env_var`), removed from `run`'s child.
    EnvVar(String),
    /// An absolute file path (`secret_file`), read whole and trimmed.
    File(PathBuf),
}

/// One header an action injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The header's name.
    pub name: String,
    /// Where its secret comes from.
    pub secret: SecretRef,
    /// Written before the secret (e.g. `"Bearer "`).
    pub prefix: String,
}

/// One action as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookAction {
    /// Its name (the table's key).
    pub name: String,
    /// Headers removed from the request.
    pub strip_request_headers: Vec<String>,
    /// Headers set from secrets (after the strips; replacing what the client sent).
    pub inject_request_headers: Vec<Injection>,
    /// The layer that set it.
    pub layer: Layer,
}

/// Headers an action may neither strip nor inject: those of the connection and of the message's
/// framing, which netproxy sets itself (injecting one would break the request or be dropped).
pub(crate) const RESERVED_HEADERS: [&str; 11] = [
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_reserved(name: &str) -> bool {
    RESERVED_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// A header name: an RFC 9110 token.
pub(crate) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Collects what one hook or action table says, or the problems with it (key path, message).
pub(crate) struct TableReader<'a> {
    path: &'a str,
    pub(crate) problems: Vec<(String, String)>,
}

impl<'a> TableReader<'a> {
    pub(crate) fn new(path: &'a str) -> Self {
        Self {
            path,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, key: &str, msg: impl Into<String>) {
        self.problems
            .push((format!("{}.{key}", self.path), msg.into()));
    }

    /// A list of strings; each entry that is not one is a problem of its own.
    fn strings(&mut self, key: &str, v: &Value) -> Vec<String> {
        let Some(items) = v.as_array() else {
            self.problem(key, "expected a list of strings");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push(s.to_owned()),
                None => self.problem(
                    &format!("{key}[{i}]"),
                    format!("expected a string, found {}", item.type_str()),
                ),
            }
        }
        out
    }

    fn string_map(&mut self, key: &str, v: &Value) -> Vec<(String, Vec<String>)> {
        let Some(t) = v.as_table() else {
            self.problem(key, "expected a table of names to lists of strings");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, values) in t {
            let values = self.strings(&format!("{key}.{name}"), values);
            out.push((name.clone(), values));
        }
        out
    }

    /// A `[network.mitm.hooks.NAME]` table.
    pub(crate) fn hook(&mut self, name: &str, t: &Table, layer: &Layer) -> Option<HookEntry> {
        let mut entry = HookEntry {
            name: name.to_owned(),
            host: String::new(),
            methods: Vec::new(),
            path_prefixes: Vec::new(),
            query: Vec::new(),
            headers: Vec::new(),
            actions: Vec::new(),
            layer: layer.clone(),
        };
        let before = self.problems.len();
        for (key, v) in t {
            match key.as_str() {
                "host" => match v.as_str() {
                    Some(h) => entry.host = h.to_owned(),
                    None => self.problem(key, "expected an exact host name"),
                },
                "methods" => entry.methods = self.strings(key, v),
                "path_prefixes" => entry.path_prefixes = self.strings(key, v),
                "query" => entry.query = self.string_map(key, v),
                "headers" => entry.headers = self.string_map(key, v),
                "action" => entry.actions = self.strings(key, v),
                "body" => self.problem(
                    key,
                    "a hook cannot match on the request body: it matches methods, path_prefixes, query and headers",
                ),
                other => {
                    let near = [
                        "host",
                        "methods",
                        "path_prefixes",
                        "query",
                        "headers",
                        "action",
                    ]
                    .iter()
                    .min_by_key(|k| strsim::damerau_levenshtein(other, k))
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                    self.problem(key, format!("unknown key{near}"));
                }
            }
        }
        if !t.contains_key("host") {
            self.problem("host", "a hook needs the exact host it applies to");
        }
        for required in ["methods", "path_prefixes"] {
            if !t.contains_key(required) {
                self.problem(required, "a hook needs at least one");
            }
        }
        if self.problems.len() > before {
            return None;
        }
        if let Err(e) = entry.compile() {
            self.problem("", e.to_string());
            if let Some(last) = self.problems.last_mut() {
                last.0 = self.path.to_owned();
            }
            return None;
        }
        Some(entry)
    }

    /// A `[network.mitm.actions.NAME]` table.
    pub(crate) fn action(&mut self, name: &str, t: &Table, layer: &Layer) -> Option<HookAction> {
        let mut action = HookAction {
            name: name.to_owned(),
            strip_request_headers: Vec::new(),
            inject_request_headers: Vec::new(),
            layer: layer.clone(),
        };
        let before = self.problems.len();
        for (key, v) in t {
            match key.as_str() {
                "strip_request_headers" => {
                    action.strip_request_headers = self.strings(key, v);
                    let named: Vec<(usize, String)> = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .filter_map(|(i, h)| Some((i, h.as_str()?.to_owned())))
                        .collect();
                    for (i, h) in named {
                        let at = format!("{key}[{i}]");
                        if !is_header_name(&h) {
                            self.problem(&at, format!("invalid header name {h:?}"));
                        } else if is_reserved(&h) {
                            self.problem(
                                &at,
                                format!(
                                    "{h} is a connection or framing header netproxy manages itself"
                                ),
                            );
                        }
                    }
                }
                "inject_request_headers" => match v.as_array() {
                    Some(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let key = format!("{key}[{i}]");
                            if let Some(inj) = self.injection(&key, item) {
                                action.inject_request_headers.push(inj);
                            }
                        }
                    }
                    None => self.problem(
                        key,
                        "expected a list of { name, secret_env_var | secret_file, prefix }",
                    ),
                },
                other => {
                    let near = if other.starts_with("inject") {
                        " (did you mean `inject_request_headers`?)"
                    } else if other.starts_with("strip") {
                        " (did you mean `strip_request_headers`?)"
                    } else {
                        ""
                    };
                    self.problem(key, format!("unknown key{near}"));
                }
            }
        }
        (self.problems.len() == before).then_some(action)
    }

    fn injection(&mut self, key: &str, v: &Value) -> Option<Injection> {
        let Some(t) = v.as_table() else {
            self.problem(
                key,
                "expected { name, secret_env_var | secret_file, prefix }",
            );
            return None;
        };
        let before = self.problems.len();
        let text = |k: &str| t.get(k).map(|v| v.as_str().map(str::to_owned));
        let name = match text("name") {
            Some(Some(n)) if is_header_name(&n) && is_reserved(&n) => {
                self.problem(
                    &format!("{key}.name"),
                    format!("{n} is a connection or framing header netproxy manages itself"),
                );
                None
            }
            Some(Some(n)) if is_header_name(&n) => Some(n),
            Some(Some(n)) => {
                self.problem(&format!("{key}.name"), format!("invalid header name {n:?}"));
                None
            }
            Some(None) => {
                self.problem(&format!("{key}.name"), "expected a header name");
                None
            }
            None => {
                self.problem(key, "missing `name`, the header to set");
                None
            }
        };
        let prefix = match text("prefix") {
            None => String::new(),
            Some(Some(p)) if !p.contains(['\r', '\n', '\0']) => p,
            Some(_) => {
                self.problem(
                    &format!("{key}.prefix"),
                    "expected a string without line breaks",
                );
                String::new()
            }
        };
        let secret = match (text("secret_env_var"), text("secret_file")) {
            (Some(Some(var)), None) if !var.is_empty() && !var.contains(['=', '\0']) => {
                Some(SecretRef::EnvVar(var))
            }
            (Some(_), None) => {
                self.problem(
                    &format!("{key}.secret_env_var"),
                    "expected the name of an environment variable",
                );
                None
            }
            (None, Some(Some(file))) if std::path::Path::new(&file).is_absolute() => {
                Some(SecretRef::File(file.into()))
            }
            (None, Some(_)) => {
                self.problem(
                    &format!("{key}.secret_file"),
                    "secret_file must be an absolute path",
                );
                None
            }
            (Some(_), Some(_)) | (None, None) => {
                self.problem(key, "expected exactly one of secret_env_var or secret_file");
                None
            }
        };
        for k in t.keys() {
            if !["name", "prefix", "secret_env_var", "secret_file"].contains(&k.as_str()) {
                self.problem(
                    &format!("{key}.{k}"),
                    "unknown key (expected name, secret_env_var, secret_file, prefix)",
                );
            }
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Injection {
            name: name?,
            secret: secret?,
            prefix,
        })
    }
}
