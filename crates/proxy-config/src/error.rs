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

/// Where in a file a problem is: 1-based line and column (the column counts characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1, in characters.
    pub column: u32,
}

/// One problem in the config.
///
/// ```
/// use proxy_config::{Diagnostic, DiagnosticKind, Position};
/// let mut d = Diagnostic::new(DiagnosticKind::UnknownKey, "/etc/netproxy/config.toml", "network.mdoe", "unknown key (did you mean `network.mode`?)");
/// assert_eq!(d.to_string(), "/etc/netproxy/config.toml: network.mdoe: unknown key (did you mean `network.mode`?)");
/// d.position = Some(Position { line: 3, column: 1 });
/// assert_eq!(d.to_string(), "/etc/netproxy/config.toml:3:1: network.mdoe: unknown key (did you mean `network.mode`?)");
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
    /// Where in the file: the key (or, for a bad value, the value) the problem is about, or
    /// where a file stops being TOML. `None` when the origin is no file or the file does not
    /// write the key (a default that a managed constraint refuses, a file that cannot be read).
    pub position: Option<Position>,
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
            position: None,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
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
