//! Diagnostics: every problem names its file (or layer), its key path and why.

use std::fmt;

/// What kind of problem a diagnostic reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiagnosticKind {
    /// The file cannot be read or is not TOML.
    Syntax,
    /// An unknown key (with the nearest known key when there is one).
    UnknownKey,
    /// A value of the wrong type or out of range.
    InvalidValue,
    /// A key whose feature has not been built yet.
    NotSupported,
    /// A value that widens a managed constraint.
    Constraint,
    /// A managed requirements file that every user could change (world-writable, or in a
    /// world-writable folder without the sticky bit).
    InsecureFile,
}

/// One problem in the config.
///
/// ```
/// use proxy_config::{Diagnostic, DiagnosticKind};
/// let d = Diagnostic::new(DiagnosticKind::UnknownKey, "/etc/netproxy/config.toml", "network.mdoe", "unknown key (did you mean `network.mode`?)");
/// assert_eq!(d.to_string(), "/etc/netproxy/config.toml: network.mdoe: unknown key (did you mean `network.mode`?)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The kind of problem.
    pub kind: DiagnosticKind,
    /// The file path, or a layer name such as `command-line`.
    pub origin: String,
    /// The key path, e.g. `network.limits.idle_timeout_s` (empty for a whole-file problem).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic.
    pub fn new(
        kind: DiagnosticKind,
        origin: impl Into<String>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            origin: origin.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// The config crate's error: every diagnostic found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    /// The problems, in the order found.
    pub diagnostics: Vec<Diagnostic>,
}

impl Error {
    pub(crate) fn one(d: Diagnostic) -> Self {
        Self {
            diagnostics: vec![d],
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}
