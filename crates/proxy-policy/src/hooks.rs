//! Hooks: per-host request matchers for requests inside intercepted tunnels. A host with hooks
//! admits only the requests one of its hooks matches (method, path, query and headers all
//! matching); the first match wins and names the actions to apply. docs/mitm.md has the
//! grammar.

use core::net::IpAddr;

use globset::{GlobBuilder, GlobMatcher};
use proxy_core::{Host, RequestHead};

use crate::classify::{canonical_ip, embedded_v4, unspecified_reaches};

/// Why a hook could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The host is empty, has a wildcard, or is not a valid host.
    #[error("MITM hook hosts must be exact hosts (no wildcards): {0}")]
    Host(String),
    /// A required list is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A method is not an HTTP method token.
    #[error("invalid method {0:?}")]
    Method(String),
    /// A value is empty (a literal, or the glob after `pattern:`).
    #[error("empty {0} value")]
    EmptyValue(&'static str),
    /// A glob does not compile.
    #[error("invalid glob pattern {pattern:?}: {why}")]
    Glob {
        /// The glob.
        pattern: String,
        /// What is wrong with it.
        why: String,
    },
    /// A header name is not a valid header name.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// A query key is empty.
    #[error("empty query key")]
    QueryKey,
}

/// A value to match: literal unless written `pattern:GLOB`; `literal:TEXT` forces a literal
/// (for a text that starts with `pattern:`).
#[derive(Debug, Clone)]
enum Value {
    Literal(String),
    Glob(GlobMatcher),
}

impl Value {
    /// `separator`: `/` is a separator in the glob (`*` stays within a segment, `**` crosses).
    fn parse(text: &str, what: &'static str, separator: bool) -> Result<Self, HookError> {
        if let Some(glob) = text.strip_prefix("pattern:") {
            if glob.is_empty() {
                return Err(HookError::EmptyValue(what));
            }
            let matcher = GlobBuilder::new(glob)
                .literal_separator(separator)
                .backslash_escape(true)
                .build()
                .map_err(|e| HookError::Glob {
                    pattern: glob.to_owned(),
                    why: e.kind().to_string(),
                })?
                .compile_matcher();
            return Ok(Value::Glob(matcher));
        }
        let literal = text.strip_prefix("literal:").unwrap_or(text);
        if literal.is_empty() {
            return Err(HookError::EmptyValue(what));
        }
        Ok(Value::Literal(literal.to_owned()))
    }

    /// Exact equality, or the whole text matching the glob.
    fn matches(&self, text: &str) -> bool {
        match self {
            Value::Literal(l) => l == text,
            Value::Glob(g) => g.is_match(text),
        }
    }

    /// For a path: a literal is a prefix, a glob matches the whole path.
    fn matches_path(&self, path: &str) -> bool {
        match self {
            Value::Literal(l) => path.starts_with(l.as_str()),
            Value::Glob(g) => g.is_match(path),
        }
    }
}

/// One hook: the requests to `host` it matches, and the names of the actions to apply to them.
///
/// ```
/// use proxy_core::RequestHead;
/// use proxy_policy::Hook;
/// let hook = Hook::new("issues", "api.github.com")?
///     .methods(["GET", "post"])?
///     .path_prefixes(["pattern:/repos/*/codex/issues*"])?
///     .query("state", ["open", "triage"])?
///     .actions(["github-auth"]);
/// let head = |path, query| RequestHead { method: "POST", path, query, headers: &[] };
/// assert!(hook.matches(&head("/repos/openai/codex/issues", Some("state=open"))));
/// assert!(!hook.matches(&head("/repos/openai/codex/issues", Some("state=closed"))));
/// assert!(!hook.matches(&head("/repos/openai/private/codex/issues", Some("state=open"))));
/// # Ok::<(), proxy_policy::HookError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Hook {
    name: String,
    host: Host,
    methods: Vec<String>,
    paths: Vec<Value>,
    query: Vec<(String, Vec<Value>)>,
    headers: Vec<(String, Vec<Value>)>,
    actions: Vec<String>,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Hook {
    /// A hook named `name` for the exact host `host` (canonicalised; no wildcard). It matches
    /// nothing until it has methods and path prefixes.
    pub fn new(name: &str, host: &str) -> Result<Self, HookError> {
        if host.contains('*') {
            return Err(HookError::Host(host.to_owned()));
        }
        let host = Host::parse(host).map_err(|_| HookError::Host(host.to_owned()))?;
        Ok(Self {
            name: name.to_owned(),
            host,
            methods: Vec::new(),
            paths: Vec::new(),
            query: Vec::new(),
            headers: Vec::new(),
            actions: Vec::new(),
        })
    }

    /// The methods it matches (upper-cased; at least one).
    pub fn methods<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        methods: I,
    ) -> Result<Self, HookError> {
        for m in methods {
            let m = m.as_ref().trim().to_ascii_uppercase();
            if !is_token(&m) {
                return Err(HookError::Method(m));
            }
            self.methods.push(m);
        }
        if self.methods.is_empty() {
            return Err(HookError::Empty("methods"));
        }
        Ok(self)
    }

    /// The paths it matches (at least one): a literal is a prefix of the path as sent, a
    /// `pattern:` glob matches the whole path with `/` as a separator.
    pub fn path_prefixes<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        prefixes: I,
    ) -> Result<Self, HookError> {
        for p in prefixes {
            self.paths
                .push(Value::parse(p.as_ref(), "path prefix", true)?);
        }
        if self.paths.is_empty() {
            return Err(HookError::Empty("path_prefixes"));
        }
        Ok(self)
    }

    /// A query parameter that must be present with one of `values` (at least one; literal or
    /// `pattern:` globs, matched against the decoded value).
    pub fn query<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        key: &str,
        values: I,
    ) -> Result<Self, HookError> {
        if key.is_empty() {
            return Err(HookError::QueryKey);
        }
        let values = values
            .into_iter()
            .map(|v| Value::parse(v.as_ref(), "query", false))
            .collect::<Result<Vec<_>, _>>()?;
        if values.is_empty() {
            return Err(HookError::Empty("query values"));
        }
        self.query.push((key.to_owned(), values));
        Ok(self)
    }

    /// A header that must be present, with one of `values` (literal or `pattern:` globs), or
    /// with any value when `values` is empty.
    pub fn header<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        name: &str,
        values: I,
    ) -> Result<Self, HookError> {
        if !is_token(name) {
            return Err(HookError::HeaderName(name.to_owned()));
        }
        let values = values
            .into_iter()
            .map(|v| Value::parse(v.as_ref(), "header", false))
            .collect::<Result<Vec<_>, _>>()?;
        self.headers.push((name.to_ascii_lowercase(), values));
        Ok(self)
    }

    /// The names of the actions a match applies, in order.
    #[must_use]
    pub fn actions<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, actions: I) -> Self {
        self.actions = actions.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The names of its actions.
    pub fn action_names(&self) -> &[String] {
        &self.actions
    }

    /// Whether it is complete (methods and path prefixes given).
    pub(crate) fn is_complete(&self) -> bool {
        !self.methods.is_empty() && !self.paths.is_empty()
    }

    /// Whether `head` matches it: method, then path (never a path with a dot segment or an
    /// encoded separator, in any spelling), then every query and header constraint.
    pub fn matches(&self, head: &RequestHead<'_>) -> bool {
        // A method-override header asks the origin for another method: it must be one of the
        // hook's methods too.
        let overridden =
            proxy_core::method_override(head.headers.iter().map(|(n, v)| (*n, v.as_bytes())));
        if !self.methods.iter().any(|m| m == head.method)
            || overridden.is_some_and(|o| !self.methods.contains(&o))
        {
            return false;
        }
        if !path_is_plain(head.path) || !self.paths.iter().any(|p| p.matches_path(head.path)) {
            return false;
        }
        // A constrained key or header must be there, and every occurrence of it must match:
        // an origin may read the first, the last or all of them.
        let query: Vec<(String, String)> = head.query.map(decode_form).unwrap_or_default();
        let query_ok = self.query.iter().all(|(key, allowed)| {
            let mut values = query.iter().filter(|(k, _)| k == key).peekable();
            values.peek().is_some() && values.all(|(_, v)| allowed.iter().any(|a| a.matches(v)))
        });
        if !query_ok {
            return false;
        }
        self.headers.iter().all(|(name, allowed)| {
            let mut values = head.header_values(name).peekable();
            values.peek().is_some()
                && (allowed.is_empty() || values.all(|v| allowed.iter().any(|a| a.matches(v))))
        })
    }
}

/// What the hooks of a request's host say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HookVerdict<'a> {
    /// The host has no hooks: they say nothing.
    NoHooks,
    /// The first hook of the host that matched.
    Matched(&'a Hook),
    /// The host has hooks and none matched: the request is refused (`mitm_hook_denied`).
    NoMatch,
}

impl PartialEq for Hook {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.host == other.host
    }
}

/// The hooks of a policy, by host in the order given.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hooks {
    by_host: Vec<(Host, Vec<Hook>)>,
}

/// The host a hook is filed under: an IP literal by the address it reaches, in the one spelling
/// deny entries are compared in (without its zone, which netproxy does not dial with; an
/// IPv4-mapped, IPv4-compatible, IPv4-translated or NAT64 literal as its IPv4 address).
fn hook_host(host: &Host) -> Host {
    host.policy_ip()
        .map_or_else(|| host.clone(), |ip| Host::from_ip(canonical_ip(ip)))
}

/// The hooks of a host: its own, another address's reached through a relay, or none.
enum Lookup<'a> {
    /// The hooks filed under the target's own [`hook_host`].
    Own(&'a [Hook]),
    /// None of its own, but the target is an IPv6 address that carries a hooked IPv4 address
    /// for a relay (6to4, Teredo; as deny entries match them): hooked, and no hook matches. The
    /// hooked address's hooks (and their actions, a credential among them) are never applied to
    /// a connection that goes elsewhere: a Teredo address carries two IPv4 addresses, and the
    /// relay delivers to only one of them.
    Relayed,
    None,
}

impl Hooks {
    /// Files `hook` under its host; a hook on `localhost` also under 127.0.0.1 and ::1, where
    /// that name connects, so no other spelling of the loopback service skips it. An address's
    /// own hooks stay ahead of those filed from `localhost` (each group in the order written).
    /// (A `*.localhost` name is hooked alone: several such names may share loopback.)
    pub(crate) fn add(&mut self, hook: Hook) {
        let own = hook_host(&hook.host);
        let mut keys = vec![own.clone()];
        if hook.host.as_name() == Some("localhost") {
            keys.push(Host::from_ip(IpAddr::V4(core::net::Ipv4Addr::LOCALHOST)));
            keys.push(Host::from_ip(IpAddr::V6(core::net::Ipv6Addr::LOCALHOST)));
        }
        for key in keys {
            let Some((_, hooks)) = self.by_host.iter_mut().find(|(h, _)| *h == key) else {
                self.by_host.push((key, vec![hook.clone()]));
                continue;
            };
            if key == own {
                let at = hooks
                    .iter()
                    .position(|h| hook_host(&h.host) != key)
                    .unwrap_or(hooks.len());
                hooks.insert(at, hook.clone());
            } else {
                hooks.push(hook.clone());
            }
        }
    }

    fn filed(&self, key: &Host) -> Option<&[Hook]> {
        self.by_host
            .iter()
            .find(|(h, _)| h == key)
            .map(|(_, hooks)| hooks.as_slice())
    }

    /// Looks `host` up: `[fd00::1%25eth0]`, `[::10.0.0.5]` or `[64:ff9b::10.0.0.5]` find the
    /// hooks of `fd00::1` or `10.0.0.5`; `[2002:a00:5::1]` is [`Lookup::Relayed`] to a hook on
    /// `10.0.0.5`. None of them slips past a hook as an opaque tunnel.
    fn lookup(&self, host: &Host) -> Lookup<'_> {
        if self.by_host.is_empty() {
            return Lookup::None;
        }
        // The unspecified address reaches loopback: the service there, whose hooks win over
        // any filed under the unspecified address itself.
        if let Some(lo) = host.policy_ip().and_then(unspecified_reaches)
            && let Some(hooks) = self.filed(&Host::from_ip(lo))
        {
            return Lookup::Own(hooks);
        }
        let key = hook_host(host);
        if let Some(hooks) = self.filed(&key) {
            return Lookup::Own(hooks);
        }
        if let Some(IpAddr::V6(v6)) = key.policy_ip()
            && embedded_v4(v6)
                .into_iter()
                .any(|v4| self.filed(&Host::from_ip(IpAddr::V4(v4))).is_some())
        {
            return Lookup::Relayed;
        }
        Lookup::None
    }

    pub(crate) fn is_hooked(&self, host: &Host) -> bool {
        !matches!(self.lookup(host), Lookup::None)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }

    pub(crate) fn evaluate(&self, host: &Host, head: &RequestHead<'_>) -> HookVerdict<'_> {
        match self.lookup(host) {
            Lookup::None => HookVerdict::NoHooks,
            Lookup::Relayed => HookVerdict::NoMatch,
            Lookup::Own(hooks) => hooks
                .iter()
                .find(|h| h.matches(head))
                .map_or(HookVerdict::NoMatch, HookVerdict::Matched),
        }
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus`); `None` for a malformed escape.
fn percent_decode(s: &str, plus: bool) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// A query string decoded as a form (`application/x-www-form-urlencoded`): `+` is a space,
/// escapes decoded, invalid UTF-8 replaced; a malformed escape is kept as written. Pairs are
/// split at `&` and at `;` (which some servers also take as a separator), so a pair hidden
/// behind a `;` still counts.
fn decode_form(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| match percent_decode(s, true) {
        Some(b) => String::from_utf8_lossy(&b).into_owned(),
        None => s.to_owned(),
    };
    query
        .split(['&', ';'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Whether a path can be matched as written: no `.` or `..` segment (its `;parameters` cut)
/// and no backslash, in its
/// raw form or once or twice percent-decoded, no encoded `/`, and no malformed escape. A path
/// that fails matches no hook, so a hooked host refuses it (an origin that normalises
/// `/a/%2e%2e/b` to `/b` would otherwise see a path no hook admitted).
fn path_is_plain(path: &str) -> bool {
    let mut text = path.as_bytes().to_vec();
    for round in 0..3 {
        if text.contains(&b'\\') || text.contains(&0) {
            return false;
        }
        // Segment checks on the raw path; from the first decoding on, an encoded `/` shows.
        if round > 0 && text.contains(&b'/') && !path_has_same_slashes(path, &text) {
            return false;
        }
        // A segment's `;parameters` are cut first: servers that drop them (Tomcat, Jetty,
        // Spring) read `..;x` as `..`.
        if text.split(|b| *b == b'/').any(|seg| {
            let seg = seg.split(|b| *b == b';').next().unwrap_or_default();
            seg == b"." || seg == b".."
        }) {
            return false;
        }
        if !text.contains(&b'%') {
            return true;
        }
        let Ok(s) = std::str::from_utf8(&text) else {
            return false;
        };
        match percent_decode(s, false) {
            Some(decoded) => text = decoded,
            None => return false,
        }
    }
    false
}

/// Whether decoding added no `/`: the decoded text has as many slashes as the raw path.
fn path_has_same_slashes(raw: &str, decoded: &[u8]) -> bool {
    raw.bytes().filter(|b| *b == b'/').count() == decoded.iter().filter(|b| **b == b'/').count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proxy_core::{Host, RequestHead};

    use super::{Hook, HookError, HookVerdict, Hooks, path_is_plain};

    fn head<'a>(
        method: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a [(&'a str, &'a str)],
    ) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            query,
            headers,
        }
    }

    fn hook(name: &str, paths: &[&str]) -> Hook {
        Hook::new(name, "api.github.com")
            .unwrap()
            .methods(["get", " POST "])
            .unwrap()
            .path_prefixes(paths)
            .unwrap()
    }

    #[test]
    fn the_first_matching_hook_wins_and_a_host_without_hooks_is_not_judged() {
        let mut hooks = Hooks::default();
        hooks.add(hook("first", &["/repos"]).actions(["a"]));
        hooks.add(hook("second", &["/repos/x"]).actions(["b"]));
        let host = Host::parse("API.github.com").unwrap();
        let HookVerdict::Matched(h) = hooks.evaluate(&host, &head("GET", "/repos/x", None, &[]))
        else {
            panic!("a match")
        };
        assert_eq!(h.name(), "first");
        assert_eq!(h.action_names(), ["a"]);
        assert_eq!(
            hooks.evaluate(&host, &head("DELETE", "/repos/x", None, &[])),
            HookVerdict::NoMatch
        );
        let other = Host::parse("example.com").unwrap();
        assert_eq!(
            hooks.evaluate(&other, &head("GET", "/", None, &[])),
            HookVerdict::NoHooks
        );
        assert!(hooks.is_hooked(&host) && !hooks.is_hooked(&other));
    }

    /// Loopback's own hooks come before those filed from `localhost`, whatever the order
    /// written; the unspecified address is judged by loopback's hooks, not by its own.
    #[test]
    fn loopback_is_judged_by_its_own_hooks_first() {
        let hook = |name: &str, host: &str, path: &str| {
            Hook::new(name, host)
                .unwrap()
                .methods(["GET"])
                .unwrap()
                .path_prefixes([path])
                .unwrap()
        };
        let mut hooks = Hooks::default();
        hooks.add(hook("name", "localhost", "/both"));
        hooks.add(hook("ip", "127.0.0.1", "/"));
        hooks.add(hook("any", "0.0.0.0", "/"));
        let named = |host: &str, path: &str| match hooks
            .evaluate(&Host::parse(host).unwrap(), &head("GET", path, None, &[]))
        {
            HookVerdict::Matched(h) => h.name().to_owned(),
            other => format!("{other:?}"),
        };
        assert_eq!(named("127.0.0.1", "/both"), "ip");
        assert_eq!(named("0.0.0.0", "/both"), "ip");
        assert_eq!(named("localhost", "/both"), "name");
        assert_eq!(named("localhost", "/other"), "NoMatch");
        assert_eq!(named("[::1]", "/both"), "name");
        assert_eq!(named("[::1]", "/other"), "NoMatch");
    }

    /// Another spelling of a hooked address uses its hooks; an address that carries a hooked
    /// address for a relay (6to4, Teredo) is hooked but never takes its hooks or actions: a
    /// Teredo address carries a server and a client address, and goes to only one.
    #[test]
    fn a_relayed_spelling_is_hooked_but_takes_no_other_hosts_hooks() {
        let mut hooks = Hooks::default();
        let any = |name: &str, host: &str| {
            Hook::new(name, host)
                .unwrap()
                .methods(["GET", "POST"])
                .unwrap()
                .path_prefixes(["/"])
                .unwrap()
        };
        hooks.add(any("s", "1.2.3.4").actions(["inject-s-token"]));
        hooks.add(any("own", "2001:0:102:304::1"));
        let get = head("GET", "/", None, &[]);
        for same in [
            "[::ffff:0:1.2.3.4]",
            "[64:ff9b::1.2.3.4]",
            "[::1.2.3.4%25x]",
        ] {
            let host = Host::parse(same).unwrap();
            assert!(
                matches!(hooks.evaluate(&host, &get), HookVerdict::Matched(h) if h.name() == "s"),
                "{same}"
            );
        }
        // Teredo with 1.2.3.4 as its server (the client field is 9.9.9.9), and 6to4.
        for relayed in ["[2001:0:102:304::f6f6:f6f6]", "[2002:102:304::1]"] {
            let host = Host::parse(relayed).unwrap();
            assert!(hooks.is_hooked(&host), "{relayed}");
            assert_eq!(
                hooks.evaluate(&host, &get),
                HookVerdict::NoMatch,
                "{relayed}"
            );
        }
        // A hook filed under the relayed address itself is its own.
        let own = Host::parse("[2001:0:102:304::1]").unwrap();
        assert!(matches!(hooks.evaluate(&own, &get), HookVerdict::Matched(h) if h.name() == "own"));
    }

    #[test]
    fn a_method_override_must_be_one_of_the_hooks_methods() {
        let h = Hook::new("r", "api.github.com")
            .unwrap()
            .methods(["GET"])
            .unwrap()
            .path_prefixes(["/"])
            .unwrap();
        assert!(h.matches(&head("GET", "/x", None, &[])));
        assert!(h.matches(&head(
            "GET",
            "/x",
            None,
            &[("x-http-method-override", "GET")]
        )));
        assert!(!h.matches(&head(
            "GET",
            "/x",
            None,
            &[("x-http-method-override", "DELETE")]
        )));
        assert!(!h.matches(&head("GET", "/x", None, &[("x_http_method", "PUT")])));
    }

    #[test]
    fn query_and_header_constraints_must_all_hold() {
        let h = hook("q", &["/repos/"])
            .query("state", ["open", "triage"])
            .unwrap()
            .header("X-GitHub-Api-Version", ["2022-11-28"])
            .unwrap()
            .header("authorization", Vec::<String>::new())
            .unwrap();
        let version = ("x-github-api-version", "2022-11-28");
        let auth = ("authorization", "Bearer x");
        assert!(h.matches(&head(
            "GET",
            "/repos/a",
            Some("state=open"),
            &[version, auth]
        )));
        assert!(h.matches(&head(
            "GET",
            "/repos/a",
            Some("per_page=5&state=triage"),
            &[auth, version]
        )));
        assert!(!h.matches(&head(
            "GET",
            "/repos/a",
            Some("state=closed"),
            &[version, auth]
        )));
        assert!(!h.matches(&head("GET", "/repos/a", None, &[version, auth])));
        assert!(!h.matches(&head("GET", "/repos/a", Some("state=open"), &[version])));
        assert!(!h.matches(&head(
            "GET",
            "/repos/a",
            Some("state=open"),
            &[("x-github-api-version", "2023"), auth]
        )));
        // Every occurrence of a constrained key or header must match, in any order, and a
        // pair behind a `;` counts.
        for q in [
            "state=closed&state=open",
            "state=open&state=closed",
            "x=1;state=closed&state=open",
        ] {
            assert!(
                !h.matches(&head("GET", "/repos/a", Some(q), &[version, auth])),
                "{q}"
            );
        }
        assert!(h.matches(&head(
            "GET",
            "/repos/a",
            Some("state=open&state=triage"),
            &[version, auth]
        )));
        assert!(!h.matches(&head(
            "GET",
            "/repos/a",
            Some("state=open"),
            &[version, ("x-github-api-version", "2099"), auth]
        )));
        // Form decoding: `+` and escapes.
        let h = hook("q", &["/"]).query("q", ["a b/c"]).unwrap();
        assert!(h.matches(&head("GET", "/s", Some("q=a+b%2Fc"), &[])));
    }

    #[test]
    fn globs_in_paths_stay_within_segments_and_values_glob_freely() {
        let h = hook("g", &["pattern:/repos/*/codex/issues*"])
            .query("state", ["pattern:op*"])
            .unwrap()
            .header("x-version", ["pattern:2022-*"])
            .unwrap();
        let v = [("x-version", "2022-11-28")];
        assert!(h.matches(&head(
            "GET",
            "/repos/openai/codex/issues",
            Some("state=open"),
            &v
        )));
        assert!(!h.matches(&head(
            "GET",
            "/repos/openai/codex/issues/3",
            Some("state=opened"),
            &v
        )));
        assert!(!h.matches(&head(
            "GET",
            "/repos/openai/private/codex/issues",
            Some("state=open"),
            &v
        )));
        let deep = hook("d", &["pattern:/openai/openai/**"]);
        assert!(deep.matches(&head("GET", "/openai/openai/issues/1", None, &[])));
        assert!(!deep.matches(&head("GET", "/openai/codex", None, &[])));
    }

    #[test]
    fn glob_characters_are_literal_without_the_pattern_prefix() {
        let h = hook("l", &["/drafts/[draft]"]).query("q", ["op*"]).unwrap();
        assert!(h.matches(&head("GET", "/drafts/[draft]/x", Some("q=op*"), &[])));
        assert!(!h.matches(&head("GET", "/drafts/d/x", Some("q=op*"), &[])));
        assert!(!h.matches(&head("GET", "/drafts/[draft]/x", Some("q=open"), &[])));
        let h = hook("r", &["literal:pattern:*"]);
        assert!(h.matches(&head("GET", "pattern:*", None, &[])));
        assert!(!h.matches(&head("GET", "pattern:x", None, &[])));
    }

    #[test]
    fn encoded_traversal_never_matches() {
        let h = hook("t", &["pattern:/openai/openai/**", "/v2/"]);
        for bad in [
            "/openai/openai/%2e%2e/codex",
            "/openai/openai/%2E%2E/codex",
            "/openai/openai/../codex",
            "/openai/openai/./x",
            "/openai/openai/%252e%252e/codex",
            "/openai/openai/.%2e/codex",
            "/openai/openai/x%2f..%2fcodex",
            "/openai/openai/x%2F..",
            "/openai/openai/x\\..\\codex",
            "/openai/openai/x%5c..",
            "/v2/../admin",
            "/v2/%zz",
            "/v2/%+9",
            "/openai/openai/..;/codex",
            "/openai/openai/..;x=1/..;/codex",
            "/openai/openai/%2e%2e;/codex",
            "/openai/openai/..%3b/codex",
            "/openai/openai/.;/x",
        ] {
            assert!(!path_is_plain(bad), "{bad}");
            assert!(!h.matches(&head("GET", bad, None, &[])), "{bad}");
        }
        for good in [
            "/openai/openai/issues",
            "/v2/a%20b",
            "/v2/.well",
            "/v2/a..b",
        ] {
            assert!(h.matches(&head("GET", good, None, &[])), "{good}");
        }
    }

    #[test]
    fn bad_hooks_are_refused_with_the_reason() {
        assert!(matches!(
            Hook::new("w", "*.github.com"),
            Err(HookError::Host(_))
        ));
        assert!(matches!(Hook::new("e", ""), Err(HookError::Host(_))));
        let h = Hook::new("x", "api.github.com").unwrap();
        assert!(matches!(
            h.clone().methods(Vec::<String>::new()),
            Err(HookError::Empty("methods"))
        ));
        assert!(matches!(
            h.clone().methods(["GE T"]),
            Err(HookError::Method(_))
        ));
        assert!(matches!(
            h.clone().path_prefixes(Vec::<String>::new()),
            Err(HookError::Empty("path_prefixes"))
        ));
        let e = h.clone().path_prefixes(["pattern:/repos/["]).unwrap_err();
        assert!(e.to_string().starts_with("invalid glob pattern"), "{e}");
        assert!(matches!(
            h.clone().path_prefixes([""]),
            Err(HookError::EmptyValue(_))
        ));
        assert!(matches!(
            h.clone().path_prefixes(["literal:"]),
            Err(HookError::EmptyValue(_))
        ));
        assert!(matches!(
            h.clone().query("", ["x"]),
            Err(HookError::QueryKey)
        ));
        assert!(matches!(
            h.clone().query("k", Vec::<String>::new()),
            Err(HookError::Empty(_))
        ));
        assert!(matches!(
            h.header("bad header", ["x"]),
            Err(HookError::HeaderName(_))
        ));
    }
}
