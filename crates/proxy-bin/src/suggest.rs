//! Learn mode's suggested policy (docs/run.md, "Learn mode"): what a session used, gathered
//! from its decisions ([`Usage`]), and the smallest `[network.domains]` table that allows it
//! again ([`suggest`]). `netproxy run --learn FILE` gathers the decisions as they are made
//! ([`Learner`], an audit sink) and writes the suggestion at exit; `netproxy suggest FILE`
//! reads them back from a `--report` file or an `audit_log` ([`Usage::read`]) and prints the
//! same suggestion.
//!
//! It lives here, not in proxy-policy, which holds the pure policy and does no I/O: a
//! suggestion reads report and audit files, writes TOML, and needs the Public Suffix List
//! (the `psl` crate) to know where a wildcard would reach too far.
//!
//! The rules, in short: every target allowed (or allowed and then failed) gets an entry; an
//! exact name, an IP literal as it is, `name:port` for a name used only on ports other than
//! 80 and 443; `**.P` in place of the names of one registrable domain when two or more of its
//! subdomains were used (P their longest common parent, never a public suffix, and never over
//! a name that stayed refused). Refused targets are comments, with why; so are the names the
//! command looked up itself under `--isolate` (`dns`), which no entry can allow.
//!
//! ```
//! use netproxy::suggest::{Seen, Usage, suggest};
//! let mut usage = Usage::new(Vec::new());
//! for host in ["a.example.com", "b.example.com", "x.github.io", "y.github.io"] {
//!     usage.add(&Seen::allowed(host, 443, "https_connect"));
//! }
//! let s = suggest(&usage, "an example");
//! assert_eq!(s.patterns, 3);
//! assert!(s.toml.contains("\n\"**.example.com\" = \"allow\""));
//! assert!(s.toml.contains("\n\"x.github.io\" = \"allow\""));
//! assert!(!s.toml.contains("**.github.io\""));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use proxy_core::{AuditEvent, AuditSink, Decision, Host, RequestMeta, Verdict};
use proxy_gate::{Decider, DeciderFuture};

/// The most distinct targets told apart; decisions about further targets are only counted
/// (and the suggestion says it is incomplete).
pub const MAX_TARGETS: usize = 10_000;

/// The most distinct reasons, and protocols, kept for one target.
const MAX_KINDS: usize = 8;

/// The most names a folded entry's comment lists.
const NAMES_SHOWN: usize = 5;

/// The reasons of failures: the policy allowed the target, then it could not be reached
/// (docs/responses.md).
const FAILURES: &[&str] = &[
    "dns_failed",
    "connect_failed",
    "upstream_tls_failed",
    "upstream_timeout",
    "upstream_error",
];

/// One decision, as an audit event, a `--report` decision or an `audit_log` line holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen<'a> {
    /// The canonical host (`server.address`).
    pub host: &'a str,
    /// The port.
    pub port: u16,
    /// The protocol's wire name.
    pub protocol: &'a str,
    /// Whether the decision was `allow`.
    pub allowed: bool,
    /// The reason's wire name (`allow`, `denied`, `dns_failed`, ...).
    pub reason: &'a str,
    /// The pattern that decided, if any.
    pub rule: Option<&'a str>,
    /// The layer of that pattern (a file, `command-line`, ...), if any.
    pub layer: Option<&'a str>,
    /// Made in learn mode (`network.policy.learn`).
    pub learn: bool,
}

impl<'a> Seen<'a> {
    /// An allowed decision with no rule (as a decider's).
    pub fn allowed(host: &'a str, port: u16, protocol: &'a str) -> Self {
        Self {
            host,
            port,
            protocol,
            allowed: true,
            reason: "allow",
            rule: None,
            layer: None,
            learn: false,
        }
    }

    /// A refusal (or a failure) for `reason`.
    pub fn refused(host: &'a str, port: u16, protocol: &'a str, reason: &'a str) -> Self {
        Self {
            allowed: false,
            reason,
            ..Self::allowed(host, port, protocol)
        }
    }

    /// The decision of an audit event.
    pub fn of(ev: &'a AuditEvent) -> Self {
        Self {
            host: &ev.server_address,
            port: ev.server_port,
            protocol: ev.protocol.as_str(),
            allowed: ev.decision == Verdict::Allow,
            reason: ev.reason,
            rule: ev.rule.as_ref().map(|r| &*r.pattern),
            layer: ev.rule.as_ref().and_then(|r| r.origin.as_deref()),
            learn: ev.learn,
        }
    }
}

/// What kind of target a decision was about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A host and port the proxy was asked for.
    Net,
    /// A name the command looked up itself under `--isolate` (protocol `dns`).
    Dns,
    /// An `x-unix-socket` request (`unix-socket`, port 0).
    Unix,
    /// A host that is not a valid host (kept escaped, for a comment).
    Invalid,
}

/// A target: its kind, its host (canonical for [`Kind::Net`], escaped otherwise), its port.
type Key = (Kind, String, u16);

/// A refusal reason with its count and the first rule (and layer) that gave it.
#[derive(Debug, Clone, Default)]
struct Refusal {
    count: u64,
    rule: Option<(String, Option<String>)>,
    /// Refused in learn mode.
    learn: bool,
}

/// What one target saw.
#[derive(Debug, Clone, Default)]
struct Use {
    /// Allowed by a rule of a user layer, by the decider, or without a rule.
    allowed: u64,
    /// Allowed by a rule of managed requirements.
    managed: u64,
    /// The first managed rule that allowed it, with its layer.
    managed_rule: Option<(String, String)>,
    /// Failures (the policy had allowed the target), by reason.
    failed: BTreeMap<String, u64>,
    /// Refusals, by reason.
    refused: BTreeMap<String, Refusal>,
    /// Refused `not_allowed` outside learn mode: a name outside the allowlist that the command
    /// tried, which the suggestion allows (as audit2allow does).
    missed: u64,
    /// The protocols it was reached with.
    protocols: BTreeSet<String>,
    /// Reasons or protocols past [`MAX_KINDS`], counted together.
    other: u64,
}

impl Use {
    fn requests(&self) -> u64 {
        self.allowed
            .saturating_add(self.managed)
            .saturating_add(self.failed.values().sum())
            .saturating_add(self.refused.values().map(|r| r.count).sum())
            .saturating_add(self.other)
    }

    /// Whether the suggestion writes an entry for it: allowed by the user's policy (or the
    /// decider), tried outside the allowlist in a run without learn mode, or failed after an
    /// allow that was not the managed requirements'.
    fn wants_entry(&self) -> bool {
        self.allowed > 0
            || self.missed > 0
            || (!self.failed.is_empty() && self.managed == 0 && self.managed_rule.is_none())
    }
}

/// What a session used: each target with its counts, from its decisions.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// The layers (paths) of managed requirements: what they allow needs no entry.
    managed: Vec<String>,
    targets: BTreeMap<Key, Use>,
    decisions: u64,
    /// Decisions about targets past [`MAX_TARGETS`].
    folded: u64,
}

impl Usage {
    /// No decision yet. `managed` are the paths of the managed requirements files: a target
    /// a pattern of theirs allowed gets no entry (they allow it anyway, and a user entry might
    /// violate them).
    pub fn new(managed: Vec<String>) -> Self {
        Self {
            managed,
            ..Self::default()
        }
    }

    /// How many decisions were added.
    pub fn decisions(&self) -> u64 {
        self.decisions
    }

    /// Adds the decision of an audit event.
    pub fn add_event(&mut self, ev: &AuditEvent) {
        self.add(&Seen::of(ev));
    }

    /// Adds one decision.
    pub fn add(&mut self, seen: &Seen<'_>) {
        self.decisions = self.decisions.saturating_add(1);
        let key = key_of(seen);
        if !self.targets.contains_key(&key) && self.targets.len() >= MAX_TARGETS {
            self.folded = self.folded.saturating_add(1);
            return;
        }
        let managed_layer = seen.layer.filter(|l| self.managed.iter().any(|m| m == l));
        let u = self.targets.entry(key).or_default();
        if u.protocols.len() < MAX_KINDS || u.protocols.contains(seen.protocol) {
            u.protocols.insert(seen.protocol.to_owned());
        }
        let managed_rule = || {
            managed_layer
                .zip(seen.rule)
                .map(|(l, r)| (r.to_owned(), l.to_owned()))
        };
        if FAILURES.contains(&seen.reason) {
            if managed_layer.is_some() {
                u.managed_rule = u.managed_rule.take().or_else(managed_rule);
            }
            bump(&mut u.failed, seen.reason, &mut u.other);
        } else if seen.allowed {
            if managed_layer.is_some() {
                u.managed = u.managed.saturating_add(1);
                u.managed_rule = u.managed_rule.take().or_else(managed_rule);
            } else {
                u.allowed = u.allowed.saturating_add(1);
            }
        } else {
            if seen.reason == "not_allowed" && !seen.learn {
                u.missed = u.missed.saturating_add(1);
            }
            if u.refused.len() < MAX_KINDS || u.refused.contains_key(seen.reason) {
                let r = u.refused.entry(seen.reason.to_owned()).or_default();
                r.count = r.count.saturating_add(1);
                r.learn |= seen.learn;
                if r.rule.is_none() {
                    r.rule = seen
                        .rule
                        .map(|p| (p.to_owned(), seen.layer.map(str::to_owned)));
                }
            } else {
                u.other = u.other.saturating_add(1);
            }
        }
    }
}

/// Adds one to `reason`'s count, or to `other` past [`MAX_KINDS`] reasons.
fn bump(counts: &mut BTreeMap<String, u64>, reason: &str, other: &mut u64) {
    if let Some(n) = counts.get_mut(reason) {
        *n = n.saturating_add(1);
    } else if counts.len() < MAX_KINDS {
        counts.insert(reason.to_owned(), 1);
    } else {
        *other = other.saturating_add(1);
    }
}

/// The target a decision was about.
fn key_of(seen: &Seen<'_>) -> Key {
    if seen.protocol == "dns" || seen.reason == "dns_not_served" {
        return (Kind::Dns, escaped(seen.host), seen.port);
    }
    if seen.port == 0 && seen.host == "unix-socket" {
        return (Kind::Unix, String::new(), 0);
    }
    match Host::parse(seen.host) {
        Ok(h) => (Kind::Net, h.to_string(), seen.port),
        Err(_) => (Kind::Invalid, escaped(seen.host), seen.port),
    }
}

/// `text` safe in a TOML comment and on a terminal: printable ASCII as it is, every other
/// character as `\u{..}`, at most 300 characters.
fn escaped(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 300 {
            out.push_str("...");
            break;
        }
        if c == ' ' || c.is_ascii_graphic() {
            out.push(c);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    out
}

/// The suggested policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    /// The config file: comments and a `[network.domains]` table that `--config` loads.
    pub toml: String,
    /// How many patterns it allows.
    pub patterns: usize,
    /// Decisions about targets past [`MAX_TARGETS`], which it does not cover.
    pub folded: u64,
}

/// One line of the table: a pattern and what it covers.
#[derive(Debug, Clone)]
struct Entry {
    /// The host part: a name, `**.P`, or an IP literal as a pattern writes it.
    host: String,
    /// The port scope (`None`: any port, for a target used on 80 or 443).
    port: Option<u16>,
    /// The names it stands for (more than one when folded).
    names: Vec<String>,
    /// Whether the host is an IP literal.
    literal: bool,
    requests: u64,
    protocols: BTreeSet<String>,
    failed: BTreeMap<String, u64>,
    refused: BTreeMap<String, u64>,
}

impl Entry {
    fn new(host: String, port: Option<u16>, literal: bool) -> Self {
        Self {
            names: vec![host.clone()],
            host,
            port,
            literal,
            requests: 0,
            protocols: BTreeSet::new(),
            failed: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    /// Adds the counts of `other`, which it now covers.
    fn merge(&mut self, other: &Entry) {
        self.requests = self.requests.saturating_add(other.requests);
        self.protocols.extend(other.protocols.iter().cloned());
        for (r, n) in &other.failed {
            let c = self.failed.entry(r.clone()).or_default();
            *c = c.saturating_add(*n);
        }
        for (r, n) in &other.refused {
            let c = self.refused.entry(r.clone()).or_default();
            *c = c.saturating_add(*n);
        }
    }

    fn pattern(&self) -> String {
        match self.port {
            None => self.host.clone(),
            Some(p) if self.host.contains(':') => format!("[{}]:{p}", self.host),
            Some(p) => format!("{}:{p}", self.host),
        }
    }

    fn absorb(&mut self, u: &Use) {
        self.requests = self.requests.saturating_add(u.requests());
        self.protocols.extend(u.protocols.iter().cloned());
        for (r, n) in &u.failed {
            let c = self.failed.entry(r.clone()).or_default();
            *c = c.saturating_add(*n);
        }
        for (r, refusal) in &u.refused {
            let c = self.refused.entry(r.clone()).or_default();
            *c = c.saturating_add(refusal.count);
        }
    }

    fn comment(&self) -> String {
        let mut c = String::new();
        if self.literal {
            c.push_str("IP literal: ");
        }
        if self.names.len() > 1 {
            let shown: Vec<&str> = self
                .names
                .iter()
                .take(NAMES_SHOWN)
                .map(String::as_str)
                .collect();
            let more = self.names.len().saturating_sub(NAMES_SHOWN);
            let _ = write!(c, "{} names ({}", self.names.len(), shown.join(", "));
            if more > 0 {
                let _ = write!(c, ", and {more} more");
            }
            c.push_str("): ");
        }
        let _ = write!(
            c,
            "{}, {}",
            plural(self.requests, "request"),
            self.protocols
                .iter()
                .map(|p| escaped(p))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (what, counts) in [("failed", &self.failed), ("refused", &self.refused)] {
            if !counts.is_empty() {
                let list: Vec<String> = counts
                    .iter()
                    .map(|(r, n)| format!("{} {n}", escaped(r)))
                    .collect();
                let _ = write!(c, "; {what}: {}", list.join(", "));
            }
        }
        c
    }
}

/// `n thing` or `n things`.
fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// Whether `name` is `parent` or a name below it.
fn under(name: &str, parent: &str) -> bool {
    name == parent
        || name
            .strip_suffix(parent)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// `name` and each name above it (`a.b.c`, `b.c`, `c`).
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(name), |n| n.split_once('.').map(|(_, rest)| rest))
}

/// The longest common parent of `names` (whole labels), all of which end with `floor`.
fn common_parent<'a>(names: &[&'a str], floor: &'a str) -> &'a str {
    let Some(first) = names.first() else {
        return floor;
    };
    let mut parent: &str = first;
    loop {
        if names.iter().all(|n| under(n, parent)) || parent == floor {
            return parent;
        }
        parent = match parent.split_once('.') {
            Some((_, rest)) => rest,
            None => return floor,
        };
    }
}

/// The suggestion for `usage`; `origin` says where it comes from, in its first comment line.
pub fn suggest(usage: &Usage, origin: &str) -> Suggestion {
    // The targets the suggestion allows, by host and port scope.
    let mut items: BTreeMap<(String, Option<u16>), Entry> = BTreeMap::new();
    // The hosts used on a default port get one entry for any port.
    let on_default: BTreeSet<&str> = usage
        .targets
        .iter()
        .filter(|((k, _, p), u)| *k == Kind::Net && matches!(p, 80 | 443) && u.wants_entry())
        .map(|((_, h, _), _)| h.as_str())
        .collect();
    for ((kind, host, port), u) in &usage.targets {
        if *kind != Kind::Net || !u.wants_entry() {
            continue;
        }
        let Ok(parsed) = Host::parse(host) else {
            continue;
        };
        let scope = (!on_default.contains(host.as_str())).then_some(*port);
        items
            .entry((host.clone(), scope))
            .or_insert_with(|| Entry::new(host.clone(), scope, !parsed.is_name()))
            .absorb(u);
    }
    // The names that stayed refused: no wildcard may cover one.
    let blockers: Vec<(&str, u16)> = usage
        .targets
        .iter()
        .filter(|((k, _, _), u)| *k == Kind::Net && !u.wants_entry() && !u.refused.is_empty())
        .map(|((_, h, p), _)| (h.as_str(), *p))
        .collect();
    let entries = fold(items, &blockers);
    render(usage, origin, entries)
}

/// Folds the names of one registrable domain into `**.P` where two or more of its subdomains
/// were used with the same port scope; then drops port-scoped entries that an entry for any
/// port covers.
fn fold(items: BTreeMap<(String, Option<u16>), Entry>, blockers: &[(&str, u16)]) -> Vec<Entry> {
    // Per port scope and registrable domain, the names (IP literals and names without a
    // registrable domain stay as they are).
    // Each group's names in the order of the table: parents before their subdomains.
    let mut groups: BTreeMap<(Option<u16>, String), Vec<String>> = BTreeMap::new();
    for ((host, scope), e) in &items {
        if e.literal {
            continue;
        }
        if let Some(r) = psl::domain_str(host) {
            groups
                .entry((*scope, r.to_owned()))
                .or_default()
                .push(host.clone());
        }
    }
    for names in groups.values_mut() {
        names.sort_by_key(|n| labels_from_right(n));
    }
    // Each name that stayed refused, under every parent of its own, with its ports.
    let mut refused_under: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
    for (name, port) in blockers {
        for parent in ancestors(name) {
            refused_under.entry(parent).or_default().insert(*port);
        }
    }
    let mut out: Vec<Entry> = Vec::new();
    let mut folded: BTreeSet<(String, Option<u16>)> = BTreeSet::new();
    for ((scope, domain), names) in &groups {
        let subdomains = names.iter().filter(|n| *n != domain).count();
        if subdomains < 2 {
            continue;
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let parent = common_parent(&refs, domain);
        // Never at or above a public suffix (the registrable domain is below one; checked
        // again, in case the list says otherwise of the parent).
        if psl::suffix_str(parent) == Some(parent) {
            continue;
        }
        // Never over a name that stayed refused (on the scope's port).
        let blocked = refused_under
            .get(parent)
            .is_some_and(|ports| scope.is_none_or(|s| ports.contains(&s)));
        if blocked {
            continue;
        }
        let mut entry = Entry::new(format!("**.{parent}"), *scope, false);
        entry.names = names.clone();
        for n in names {
            if let Some(e) = items.get(&(n.clone(), *scope)) {
                entry.merge(e);
            }
            folded.insert((n.clone(), *scope));
        }
        out.push(entry);
    }
    for (key, e) in items {
        if !folded.contains(&key) {
            out.push(e);
        }
    }
    // A port-scoped entry whose names an entry for any port covers is dropped, its counts
    // given to that entry.
    let mut exact: BTreeMap<String, usize> = BTreeMap::new();
    let mut wild: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in out.iter().enumerate().filter(|(_, e)| e.port.is_none()) {
        match e.host.strip_prefix("**.") {
            Some(parent) => wild.insert(parent.to_owned(), i),
            None => exact.insert(e.host.clone(), i),
        };
    }
    let cover = |name: &str| {
        exact
            .get(name)
            .or_else(|| ancestors(name).find_map(|a| wild.get(a)))
            .copied()
    };
    let mut into: Vec<Option<usize>> = Vec::with_capacity(out.len());
    for e in &out {
        let all = e.port.is_some() && !e.literal && e.names.iter().all(|n| cover(n).is_some());
        into.push(if all {
            e.names.first().and_then(|n| cover(n))
        } else {
            None
        });
    }
    for (i, target) in into.iter().enumerate() {
        if let Some(t) = *target {
            let dropped = out[i].clone();
            out[t].merge(&dropped);
        }
    }
    let mut kept: Vec<Entry> = out
        .into_iter()
        .zip(into)
        .filter(|(_, target)| target.is_none())
        .map(|(e, _)| e)
        .collect();
    // Names together, parents before their subdomains (by the host's labels read from the
    // right), then IP literals; then the port.
    kept.sort_by_key(|e| {
        let bare = e.host.trim_start_matches("**.");
        let labels = if e.literal {
            vec![bare.to_owned()]
        } else {
            labels_from_right(bare)
        };
        (e.literal, labels, e.port)
    });
    kept
}

/// A name's labels read from the right: sorted by it, names of one domain come together,
/// each parent before its subdomains.
fn labels_from_right(name: &str) -> Vec<String> {
    name.rsplit('.').map(str::to_owned).collect()
}

/// Why a refused target stayed refused, in words.
fn why_refused(reason: &str, r: &Refusal) -> String {
    let rule = r
        .rule
        .as_ref()
        .map(|(p, l)| match l {
            Some(l) => format!(" by {} ({})", escaped(p), escaped(l)),
            None => format!(" by {}", escaped(p)),
        })
        .unwrap_or_default();
    match reason {
        "denied" => format!("denied{rule}: a deny pattern wins in learn mode too"),
        "not_allowed_local" => "not_allowed_local: a local or private address, which netproxy allows only through an explicit literal entry (or treat_as_public)".to_owned(),
        "not_allowed" if r.learn => {
            "not_allowed: outside an allowlist that managed requirements fix (not the user's to widen)".to_owned()
        }
        "not_allowed" => "not_allowed".to_owned(),
        "method_not_allowed" | "mitm_required" => format!("{reason}{rule}: refused by the mode, not for its name"),
        other => format!("{}{rule}", escaped(other)),
    }
}

/// The config file.
fn render(usage: &Usage, origin: &str, entries: Vec<Entry>) -> Suggestion {
    let mut t = String::new();
    let _ = writeln!(t, "# A policy suggested by netproxy {}.", escaped(origin));
    let _ = writeln!(
        t,
        "# From {} about {}. Review it before use;",
        plural(usage.decisions, "decision"),
        plural(
            u64::try_from(usage.targets.len()).unwrap_or(u64::MAX),
            "target"
        )
    );
    t.push_str(
        "# load it with `netproxy run --config FILE -- CMD` (docs/run.md, \"Learn mode\").\n",
    );
    if usage.folded > 0 {
        let _ = writeln!(
            t,
            "# INCOMPLETE: {} about targets past the first {MAX_TARGETS} are not covered.",
            plural(usage.folded, "decision")
        );
    }
    t.push_str("\n[network.domains]\n");
    let mut patterns = 0;
    let mut unwritable = Vec::new();
    for e in &entries {
        let pattern = e.pattern();
        if proxy_policy::Pattern::parse(&pattern).is_err() {
            unwritable.push(pattern);
            continue;
        }
        let key = toml::Value::String(pattern).to_string();
        let _ = writeln!(t, "{key} = \"allow\"  # {}", e.comment());
        patterns += 1;
    }
    if patterns == 0 {
        t.push_str("# (no target to allow)\n");
    }
    let mut refused = Vec::new();
    let mut managed = Vec::new();
    let mut dns = Vec::new();
    let mut invalid = Vec::new();
    let mut unix = 0u64;
    for ((kind, host, port), u) in &usage.targets {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        match kind {
            Kind::Dns => dns.push(format!("{target}  {}", plural(u.requests(), "lookup"))),
            Kind::Unix => unix = unix.saturating_add(u.requests()),
            Kind::Invalid => invalid.push(format!("{target}  {}", plural(u.requests(), "request"))),
            Kind::Net if u.wants_entry() => {}
            Kind::Net if u.managed > 0 || u.managed_rule.is_some() => {
                let (rule, layer) = u.managed_rule.clone().unwrap_or_default();
                managed.push(format!(
                    "{target}  {}: {} ({})",
                    plural(u.requests(), "request"),
                    escaped(&rule),
                    escaped(&layer)
                ));
            }
            Kind::Net => {
                let why: Vec<String> = u
                    .refused
                    .iter()
                    .map(|(reason, r)| format!("{} {}", r.count, why_refused(reason, r)))
                    .collect();
                refused.push(format!(
                    "{target}  {}, {}: {}",
                    plural(u.requests(), "request"),
                    u.protocols
                        .iter()
                        .map(|p| escaped(p))
                        .collect::<Vec<_>>()
                        .join(", "),
                    why.join("; ")
                ));
            }
        }
    }
    let section = |t: &mut String, title: &str, lines: &[String]| {
        if lines.is_empty() {
            return;
        }
        let _ = writeln!(t, "\n# {title}");
        for l in lines {
            let _ = writeln!(t, "#   {l}");
        }
    };
    section(
        &mut t,
        "Refused, and left out (allowing them is a decision of its own):",
        &refused,
    );
    section(
        &mut t,
        "Allowed by managed requirements, which need no entry here:",
        &managed,
    );
    section(
        &mut t,
        "Names the command looked up itself under --isolate; no entry allows a lookup (programs that go through the proxy need none):",
        &dns,
    );
    section(&mut t, "Hosts that are not valid hosts:", &invalid);
    section(&mut t, "Targets that no pattern can write:", &unwritable);
    if unix > 0 {
        let _ = writeln!(
            t,
            "\n# {} through x-unix-socket: sockets are allowed by unix_sockets entries, which this file does not suggest.",
            plural(unix, "request")
        );
    }
    Suggestion {
        toml: t,
        patterns,
        folded: usage.folded,
    }
}

/// Learn mode's decider: every allowlist miss is allowed, to be recorded (the gate labels it
/// source `decider`, `network.policy.override: true`). Deny entries, local protection, the
/// mode and an allowlist fixed by managed requirements still refuse: the gate never asks it
/// about those.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowMisses;

impl Decider for AllowMisses {
    fn decide<'a>(&'a self, _meta: &'a RequestMeta) -> DeciderFuture<'a> {
        Box::pin(std::future::ready(Decision::allow()))
    }
}

/// Learn mode's audit sink: gathers the session's decisions into a [`Usage`].
#[derive(Debug, Default)]
pub struct Learner(Mutex<Usage>);

impl Learner {
    /// A learner; `managed` as for [`Usage::new`].
    pub fn new(managed: Vec<String>) -> Self {
        Self(Mutex::new(Usage::new(managed)))
    }

    /// Sets the layers of managed requirements, as [`Usage::new`] takes them (once the config
    /// is known, before any decision).
    pub fn set_managed(&self, managed: Vec<String>) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .managed = managed;
    }

    /// The suggestion for what was recorded so far.
    pub fn suggestion(&self, origin: &str) -> Suggestion {
        suggest(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            origin,
        )
    }
}

impl AuditSink for Learner {
    fn record(&self, event: &AuditEvent) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .add_event(event);
    }
}

/// Why a file could not be read as decisions.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is neither a `--report` file nor an `audit_log`.
    #[error(
        "{} is neither a --report file (one JSON object with a \"decisions\" list) nor an audit log (JSON lines of netproxy.policy_decision events): {why}",
        path.display()
    )]
    Shape {
        /// The file.
        path: PathBuf,
        /// What was wrong, and where.
        why: String,
    },
}

impl Usage {
    /// Reads the decisions of a `--report` file or an `audit_log` (JSON lines) at `path`,
    /// streamed (a long session's file is never held whole). Returns warnings too: the lines
    /// of an audit log that are not JSON (a line a failing disk cut short) are skipped and
    /// counted, and a report that ends early (a run that never finished) gives the decisions
    /// before its end.
    pub fn read(path: &Path, managed: Vec<String>) -> Result<(Self, Vec<String>), ReadError> {
        let io = |source| ReadError::Io {
            path: path.to_owned(),
            source,
        };
        let shape = |why: String| ReadError::Shape {
            path: path.to_owned(),
            why,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut reader = std::io::BufReader::new(file);
        // The first line that is not blank: an audit event starts an audit log.
        let mut first = String::new();
        let mut skipped = 0usize;
        loop {
            first.clear();
            if reader.read_line(&mut first).map_err(io)? == 0 {
                return Err(shape("the file is empty".to_owned()));
            }
            if !first.trim().is_empty() {
                break;
            }
            skipped += 1;
        }
        let mut usage = Usage::new(managed);
        let is_event = serde_json::from_str::<serde_json::Value>(&first)
            .ok()
            .is_some_and(|v| v.get("event.name").is_some());
        if is_event {
            let warnings = usage
                .read_audit_log(&first, skipped, reader)
                .map_err(|e| match e {
                    LogError::Io(e) => io(e),
                    LogError::Shape(why) => shape(why),
                })?;
            return Ok((usage, warnings));
        }
        // A report: streamed from its start.
        let text = std::io::Read::chain(std::io::Cursor::new(first.into_bytes()), reader);
        let mut de = serde_json::Deserializer::from_reader(text);
        let parsed = serde::de::DeserializeSeed::deserialize(ReportSeed(&mut usage), &mut de)
            .and_then(|()| de.end());
        let mut warnings = Vec::new();
        match parsed {
            Ok(()) => {}
            Err(e) if e.is_eof() && usage.decisions > 0 => warnings.push(format!(
                "{} ends early (its run did not finish): using the {} before the end",
                path.display(),
                plural(usage.decisions, "decision")
            )),
            Err(e) if e.is_io() => {
                return Err(io(std::io::Error::other(e.to_string())));
            }
            Err(e) => return Err(shape(e.to_string())),
        }
        Ok((usage, warnings))
    }

    /// The rest of an audit log whose first event line is `first`.
    fn read_audit_log(
        &mut self,
        first: &str,
        blank: usize,
        reader: impl BufRead,
    ) -> Result<Vec<String>, LogError> {
        let mut bad: Vec<usize> = Vec::new();
        let mut number = blank + 1;
        self.add_line(first, number).map_err(LogError::Shape)?;
        for line in reader.lines() {
            let line = line.map_err(LogError::Io)?;
            number += 1;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(_) => self.add_line(&line, number).map_err(LogError::Shape)?,
                Err(_) => bad.push(number),
            }
        }
        Ok(if bad.is_empty() {
            Vec::new()
        } else {
            let shown: Vec<String> = bad.iter().take(5).map(ToString::to_string).collect();
            vec![format!(
                "skipped {} that {} not JSON (a line cut short by a failed write?): line {}",
                plural(u64::try_from(bad.len()).unwrap_or(u64::MAX), "line"),
                if bad.len() == 1 { "is" } else { "are" },
                shown.join(", ")
            )]
        })
    }

    /// One audit log line: a policy decision is added; another event (a UDP association's
    /// totals) is skipped; anything else is an error naming the line.
    fn add_line(&mut self, line: &str, number: usize) -> Result<(), String> {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {number}: {e}"))?;
        let at = |why: &str| format!("line {number}: {why}");
        let name = v
            .get("event.name")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| at("not an audit event (no event.name)"))?;
        if name != proxy_core::EVENT_NAME {
            return Ok(());
        }
        let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
        let host = text("server.address").ok_or_else(|| at("no server.address"))?;
        let port = v
            .get("server.port")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| at("no server.port (a number)"))?;
        let decision =
            text("network.policy.decision").ok_or_else(|| at("no network.policy.decision"))?;
        self.add(&Seen {
            host,
            port,
            protocol: text("network.transport.protocol").unwrap_or("unknown"),
            allowed: decision == "allow",
            reason: text("network.policy.reason").unwrap_or("unknown"),
            rule: text("network.policy.rule"),
            layer: text("network.policy.layer"),
            learn: v
                .get("network.policy.learn")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        });
        Ok(())
    }
}

/// Why an audit log could not be read.
enum LogError {
    Io(std::io::Error),
    Shape(String),
}

/// A report: an object whose `decisions` list is added one decision at a time.
struct ReportSeed<'u>(&'u mut Usage);

impl<'de> serde::de::DeserializeSeed<'de> for ReportSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ReportSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object with a \"decisions\" list")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "decisions" {
                map.next_value_seed(DecisionsSeed(&mut *self.0))?;
                seen = true;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        if seen {
            Ok(())
        } else {
            Err(serde::de::Error::custom("no \"decisions\" list"))
        }
    }
}

/// The `decisions` list of a report.
struct DecisionsSeed<'u>(&'u mut Usage);

impl<'de> serde::de::DeserializeSeed<'de> for DecisionsSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DecisionsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of decisions")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(d) = seq.next_element::<ReportDecision>()? {
            self.0.add(&Seen {
                host: &d.host,
                port: d.port,
                protocol: d.protocol.as_deref().unwrap_or("unknown"),
                allowed: d.decision == "allow",
                reason: d.reason.as_deref().unwrap_or("unknown"),
                rule: d.rule.as_deref(),
                layer: d.layer.as_deref(),
                learn: d.learn,
            });
        }
        Ok(())
    }
}

/// One decision of a report (docs/run.md); other fields are ignored.
#[derive(serde::Deserialize)]
struct ReportDecision {
    host: String,
    port: u16,
    decision: String,
    reason: Option<String>,
    protocol: Option<String>,
    rule: Option<String>,
    layer: Option<String>,
    #[serde(default)]
    learn: bool,
}

#[cfg(test)]
mod tests;
