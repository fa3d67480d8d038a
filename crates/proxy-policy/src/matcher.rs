//! A compiled set of patterns: exact names and IPs in hash maps, `*.` / `**.` suffixes in a
//! map keyed by domain (walked label by label from the host), and globset only for the few
//! patterns with a `*` inside a label.

use core::net::IpAddr;
use std::collections::HashMap;
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use proxy_core::Host;

use crate::classify::canonical_ip;
use crate::error::Error;
use crate::pattern::{Pattern, PatternKind};

/// A pattern and the label of where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) pattern: Pattern,
    /// The pattern's text, shared with every decision it makes.
    pub(crate) text: Arc<str>,
    pub(crate) origin: Option<Arc<str>>,
}

/// The name patterns keyed by one domain: `d`, `*.d` and `**.d`.
#[derive(Debug, Default)]
struct ByName {
    exact: Vec<usize>,
    strict: Vec<usize>,
    with_apex: Vec<usize>,
}

/// Hash maps with a fast, per-process seeded hasher: keys come from config, lookups from the
/// network, and a lookup never inserts.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
pub(crate) struct Matcher {
    entries: Vec<Entry>,
    global: Vec<usize>,
    names: Map<Box<str>, ByName>,
    ips: Map<(IpAddr, Option<Box<str>>), Vec<usize>>,
    globs: GlobSet,
    glob_index: Vec<usize>,
    /// Whether IP patterns and hosts are compared in their canonical spelling, NAT64
    /// well-known prefix included (deny lists: a deny entry matches every spelling).
    every_spelling: bool,
}

impl Matcher {
    /// A matcher for an allow list: IP patterns match the address and its IPv4-mapped and
    /// IPv4-compatible spellings.
    pub(crate) fn build(entries: Vec<Entry>) -> Result<Self, Error> {
        Self::build_with(entries, false)
    }

    /// A matcher for a deny list: IP patterns also match the IPv4-translated and NAT64
    /// well-known-prefix spellings (`::ffff:0:a.b.c.d`, `64:ff9b::a.b.c.d`), whichever spelling
    /// the pattern or the host uses; a loopback pattern also matches the unspecified address a
    /// connection reaches it through (`0.0.0.0` for `127.0.0.1`, `::` for `::1`; not the other
    /// way).
    pub(crate) fn build_deny(entries: Vec<Entry>) -> Result<Self, Error> {
        Self::build_with(entries, true)
    }

    fn build_with(entries: Vec<Entry>, every_spelling: bool) -> Result<Self, Error> {
        let mut m = Matcher {
            every_spelling,
            ..Matcher::default()
        };
        let mut globs = GlobSetBuilder::new();
        for (i, e) in entries.iter().enumerate() {
            match e.pattern.kind() {
                PatternKind::Global => m.global.push(i),
                PatternKind::Exact(h) => m.names.entry(name_key(h)).or_default().exact.push(i),
                PatternKind::Subdomains(h) => {
                    m.names.entry(name_key(h)).or_default().strict.push(i);
                }
                PatternKind::ApexAndSubdomains(h) => {
                    m.names.entry(name_key(h)).or_default().with_apex.push(i);
                }
                // A deny entry's zone is not kept: netproxy dials the address without its zone,
                // so `fe80::1%eth0` (deny) must refuse `fe80::1` on every zone and on none.
                PatternKind::Ip { addr, zone } => m
                    .ips
                    .entry((
                        m.spelling(*addr),
                        zone.as_deref().filter(|_| !every_spelling).map(Into::into),
                    ))
                    .or_default()
                    .push(i),
                PatternKind::Glob {
                    glob,
                    subdomains,
                    apex,
                } => {
                    // Labels become path components so that `*` never crosses a dot.
                    let path = glob.replace('.', "/");
                    let mut forms = Vec::new();
                    if *apex {
                        forms.push(path.clone());
                    }
                    if *subdomains {
                        forms.push(format!("*/**/{path}"));
                    }
                    for form in forms {
                        let g = GlobBuilder::new(&form)
                            .literal_separator(true)
                            .backslash_escape(false)
                            .build()
                            .map_err(|err| Error::Glob(format!("{}: {err}", e.pattern)))?;
                        globs.add(g);
                        m.glob_index.push(i);
                    }
                }
            }
        }
        m.globs = globs.build().map_err(|err| Error::Glob(err.to_string()))?;
        m.entries = entries;
        Ok(m)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The first entry (in insertion order) that matches `host` and admits `port`.
    pub(crate) fn find(&self, host: &Host, port: u16) -> Option<&Entry> {
        self.find_where(host, port, |_| true)
    }

    /// The first matching entry that is an explicit literal (no wildcard).
    pub(crate) fn find_explicit(&self, host: &Host, port: u16) -> Option<&Entry> {
        self.find_where(host, port, |e| !e.pattern.is_wildcard())
    }

    fn find_where(&self, host: &Host, port: u16, keep: impl Fn(&Entry) -> bool) -> Option<&Entry> {
        if self.entries.is_empty() {
            return None;
        }
        let mut best: Option<usize> = None;
        let mut consider = |i: usize| {
            let e = &self.entries[i];
            if best.is_none_or(|b| i < b) && e.pattern.admits_port(port) && keep(e) {
                best = Some(i);
            }
        };
        for &i in &self.global {
            consider(i);
        }
        if let Some(raw) = host.policy_ip() {
            let ip = self.spelling(raw);
            let zone = host.zone().map(Into::into);
            let scoped = zone.is_some();
            for &i in self.ips.get(&(ip, zone)).into_iter().flatten() {
                consider(i);
            }
            if scoped {
                for &i in self.ips.get(&(ip, None)).into_iter().flatten() {
                    consider(i);
                }
            }
            // A deny entry for a loopback address also matches the unspecified address, which
            // a connection reaches it through.
            if self.every_spelling
                && let Some(lo) = crate::classify::unspecified_reaches(raw)
            {
                for &i in self.ips.get(&(lo, None)).into_iter().flatten() {
                    consider(i);
                }
            }
            // A deny entry for an IPv4 address also matches the IPv6 addresses that carry it
            // (6to4, Teredo): they reach it through a relay.
            if self.every_spelling
                && let IpAddr::V6(v6) = ip
            {
                for v4 in crate::classify::embedded_v4(v6) {
                    for &i in self.ips.get(&(IpAddr::V4(v4), None)).into_iter().flatten() {
                        consider(i);
                    }
                }
            }
            return best.map(|i| &self.entries[i]);
        }
        let Some(name) = host.as_name() else {
            return best.map(|i| &self.entries[i]);
        };
        if !self.names.is_empty() {
            if let Some(by) = self.names.get(name) {
                by.exact
                    .iter()
                    .chain(&by.with_apex)
                    .for_each(|&i| consider(i));
            }
            let mut rest = name;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(by) = self.names.get(rest) {
                    by.strict
                        .iter()
                        .chain(&by.with_apex)
                        .for_each(|&i| consider(i));
                }
            }
        }
        if !self.glob_index.is_empty() {
            let path = name.replace('.', "/");
            for g in self.globs.matches(&path) {
                consider(self.glob_index[g]);
            }
        }
        best.map(|i| &self.entries[i])
    }
}

impl Matcher {
    fn spelling(&self, ip: IpAddr) -> IpAddr {
        if self.every_spelling {
            canonical_ip(ip)
        } else {
            ip
        }
    }
}

fn name_key(h: &Host) -> Box<str> {
    h.to_string().into_boxed_str()
}

impl Entry {
    pub(crate) fn new(pattern: Pattern, origin: Option<&str>) -> Self {
        Self {
            text: pattern.as_str().into(),
            pattern,
            origin: origin.map(Into::into),
        }
    }
}
