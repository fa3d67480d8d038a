//! The admin API's runtime layer (docs/admin-api.md): the mode and the domain entries changed
//! through `POST /mode` and `POST /domains`. It sits above the command line, is kept across
//! file reloads and is lost at exit; the loader reads it like any other layer.

use std::collections::BTreeMap;

use proxy_core::{DomainChange, Mode};
use proxy_policy::{Pattern, PatternError};
use toml::{Table, Value};

use crate::layer::{Action, Layer};

/// Why a `POST /domains` change was refused: one of its patterns does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pattern:?}: {error}")]
pub struct InvalidPattern {
    /// The pattern as sent.
    pub pattern: String,
    /// Why it does not parse.
    pub error: PatternError,
}

/// A `POST /domains` change whose patterns all parse: the allow entries, then the deny
/// entries, each with its canonical key.
///
/// ```
/// use proxy_config::DomainEdit;
/// use proxy_core::DomainChange;
/// let bad = DomainChange { allow: vec!["a.com".into(), "bad host".into()], deny: vec![] };
/// assert!(DomainEdit::parse(&bad).unwrap_err().to_string().starts_with("\"bad host\": "));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEdit {
    /// (pattern as sent, canonical key, action), in the order they apply.
    entries: Vec<(String, String, Action)>,
}

impl DomainEdit {
    /// Parses every pattern of `change`; the first that does not parse refuses the whole
    /// change.
    pub fn parse(change: &DomainChange) -> Result<Self, InvalidPattern> {
        let mut entries = Vec::new();
        for (list, action) in [(&change.allow, Action::Allow), (&change.deny, Action::Deny)] {
            for p in list {
                let key = Pattern::parse(p)
                    .map_err(|error| InvalidPattern {
                        pattern: p.clone(),
                        error,
                    })?
                    .key();
                entries.push((p.clone(), key, action));
            }
        }
        Ok(Self { entries })
    }
}

/// The runtime layer: what the admin API changed, rendered for the loader by
/// [`RuntimeLayer::to_layer`].
///
/// ```
/// use proxy_config::{DomainEdit, Layer, RuntimeLayer};
/// use proxy_core::{DomainChange, Mode};
/// let mut runtime = RuntimeLayer::default();
/// assert!(runtime.to_layer().is_none());
/// runtime.set_mode(Mode::Limited);
/// let change = DomainChange { allow: vec!["a.com".into()], deny: vec!["A.COM.".into()] };
/// runtime.apply(&DomainEdit::parse(&change).unwrap());
/// let (layer, doc) = runtime.to_layer().unwrap();
/// assert_eq!(layer, Layer::Runtime);
/// assert_eq!(doc.to_string(), "[network]\nmode = \"limited\"\n\n[network.domains]\n\"A.COM.\" = \"deny\"\n");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeLayer {
    /// `POST /mode`.
    mode: Option<Mode>,
    /// `POST /domains`: action and canonical key by pattern as sent, in the order the loader
    /// reads a table's keys.
    domains: BTreeMap<String, (String, Action)>,
}

impl RuntimeLayer {
    /// Sets `mode` (`POST /mode`).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = Some(mode);
    }

    /// Adds or replaces domain entries (`POST /domains`): an entry replaces an earlier runtime
    /// entry with the same canonical pattern.
    pub fn apply(&mut self, edit: &DomainEdit) {
        for (pattern, key, action) in &edit.entries {
            self.domains.retain(|_, (existing, _)| existing != key);
            self.domains.insert(pattern.clone(), (key.clone(), *action));
        }
    }

    /// The mode set, if any.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// The domain entries, by pattern as sent.
    pub fn domains(&self) -> impl Iterator<Item = (&str, Action)> {
        self.domains.iter().map(|(p, (_, a))| (p.as_str(), *a))
    }

    /// Whether nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.domains.is_empty()
    }

    /// The layer as [`crate::load_with`] reads it, `[network]` with `mode` and `domains`;
    /// `None` when nothing was changed.
    pub fn to_layer(&self) -> Option<(Layer, Table)> {
        if self.is_empty() {
            return None;
        }
        let mut network = Table::new();
        if let Some(mode) = self.mode {
            network.insert("mode".into(), Value::String(mode.as_str().into()));
        }
        if !self.domains.is_empty() {
            let domains = self
                .domains
                .iter()
                .map(|(p, (_, a))| (p.clone(), Value::String(a.as_str().into())))
                .collect();
            network.insert("domains".into(), Value::Table(domains));
        }
        let mut doc = Table::new();
        doc.insert("network".into(), Value::Table(network));
        Some((Layer::Runtime, doc))
    }
}
