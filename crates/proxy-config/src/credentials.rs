//! `[network.credentials.NAME]`: the credential broker's configured grants (docs/credentials.md).
//! Read here as data; the broker (proxy-broker's `GrantSpec`, built by proxy-bin) checks the
//! hosts, forms and header names, and reads the secrets.

use std::path::PathBuf;

use toml::{Table, Value};

use crate::hooks::SecretRef;
use crate::layer::Layer;

/// One configured grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialEntry {
    /// Its name (the table's key).
    pub name: String,
    /// The child's variable that gets the dummy.
    pub env: String,
    /// Where the real value is; `None`: netproxy's own variable `env`.
    pub secret: Option<SecretRef>,
    /// Exact hosts or `*.suffix`.
    pub hosts: Vec<String>,
    /// The port (443 when unset).
    pub port: Option<u16>,
    /// Path prefixes (segment boundary); empty: any path.
    pub path_prefixes: Vec<String>,
    /// The forms: `bearer`, `token`, `basic`, `header` (empty: bearer).
    pub send: Vec<String>,
    /// The Basic user (with `basic`).
    pub basic_user: Option<String>,
    /// The header's name (with `header`).
    pub header: Option<String>,
    /// What precedes the value in that header.
    pub prefix: Option<String>,
    /// The layer that set it.
    pub layer: Layer,
}

/// The keys of a grant's table.
const KEYS: [&str; 10] = [
    "env",
    "secret_env_var",
    "secret_file",
    "hosts",
    "port",
    "path_prefixes",
    "send",
    "basic_user",
    "header",
    "prefix",
];

/// Collects the problems of one table.
struct Reader<'a> {
    path: &'a str,
    t: &'a Table,
    problems: Vec<(String, String)>,
}

impl Reader<'_> {
    fn problem(&mut self, key: &str, msg: impl Into<String>) {
        self.problems
            .push((format!("{}.{key}", self.path), msg.into()));
    }

    fn text(&mut self, key: &str) -> Option<String> {
        match self.t.get(key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            other => {
                let found = other.type_str();
                self.problem(key, format!("expected a non-empty string, found {found}"));
                None
            }
        }
    }

    fn list(&mut self, key: &str) -> Vec<String> {
        match self.t.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) if items.iter().all(Value::is_str) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) if key == "send" => vec![s.clone()],
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate().filter(|(_, v)| !v.is_str()) {
                    let found = item.type_str();
                    self.problem(
                        &format!("{key}[{i}]"),
                        format!("expected a string, found {found}"),
                    );
                }
                Vec::new()
            }
            Some(_) => {
                self.problem(key, "expected a list of strings");
                Vec::new()
            }
        }
    }
}

/// Reads one `[network.credentials.NAME]` table; the problems as (key path, message).
pub(crate) fn read(
    path: &str,
    name: &str,
    t: &Table,
    layer: &Layer,
) -> Result<CredentialEntry, Vec<(String, String)>> {
    let mut r = Reader {
        path,
        t,
        problems: Vec::new(),
    };
    for key in t.keys() {
        if !KEYS.contains(&key.as_str()) {
            let near = KEYS
                .iter()
                .min_by_key(|k| strsim::damerau_levenshtein(key, k))
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            r.problem(key, format!("unknown key{near}"));
        }
    }
    if !t.contains_key("env") {
        r.problem(
            "env",
            "a grant needs `env`, the child's variable that gets the dummy",
        );
    }
    let env = r.text("env");
    let secret = match (r.text("secret_env_var"), r.text("secret_file")) {
        (Some(_), Some(_)) => {
            r.problem(
                "secret_file",
                "at most one of secret_env_var and secret_file",
            );
            None
        }
        (Some(v), None) => Some(SecretRef::EnvVar(v)),
        (None, Some(f)) if std::path::Path::new(&f).is_absolute() => {
            Some(SecretRef::File(PathBuf::from(f)))
        }
        (None, Some(_)) => {
            r.problem("secret_file", "secret_file must be an absolute path");
            None
        }
        (None, None) => None,
    };
    if !t.contains_key("hosts") {
        r.problem("hosts", "a grant needs at least one host");
    }
    let hosts = r.list("hosts");
    let port = match t.get("port") {
        None => None,
        Some(Value::Integer(p)) if (1..=65_535).contains(p) => u16::try_from(*p).ok(),
        Some(other) => {
            r.problem(
                "port",
                format!("expected a port from 1 to 65535, found {other}"),
            );
            None
        }
    };
    let prefix = match t.get("prefix") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            let found = other.type_str();
            r.problem("prefix", format!("expected a string, found {found}"));
            None
        }
    };
    let entry = CredentialEntry {
        name: name.to_owned(),
        env: env.unwrap_or_default(),
        secret,
        hosts,
        port,
        path_prefixes: r.list("path_prefixes"),
        send: r.list("send"),
        basic_user: r.text("basic_user"),
        header: r.text("header"),
        prefix,
        layer: layer.clone(),
    };
    if r.problems.is_empty() {
        Ok(entry)
    } else {
        Err(r.problems)
    }
}
