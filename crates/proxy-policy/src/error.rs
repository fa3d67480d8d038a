//! The policy crate's error.

/// An invalid pattern: names the pattern and says why.
///
/// ```
/// use proxy_policy::Pattern;
/// let err = Pattern::parse("example.com:0").unwrap_err();
/// assert_eq!(err.pattern(), "example.com:0");
/// assert!(err.to_string().contains("invalid port"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {why}")]
pub struct PatternError {
    pattern: String,
    why: String,
}

impl PatternError {
    pub(crate) fn new(pattern: &str, why: impl Into<String>) -> Self {
        Self {
            pattern: pattern.to_owned(),
            why: why.into(),
        }
    }

    /// The pattern, as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Why it is invalid.
    pub fn why(&self) -> &str {
        &self.why
    }
}

/// The policy crate's error.
///
/// ```
/// use proxy_policy::{Error, Policy};
/// assert!(matches!(Policy::builder().deny("*", None), Err(Error::GlobalDeny(_))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A pattern that does not parse.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// The global wildcard in a deny list.
    #[error(
        "unsupported global wildcard domain pattern {0:?} in a deny list; use exact hosts or scoped wildcards like *.example.com or **.example.com"
    )]
    GlobalDeny(String),
    /// The glob set could not be built.
    #[error("cannot compile patterns: {0}")]
    Glob(String),
    /// A unix socket path that is not absolute.
    #[error("unix socket path {0:?} must be absolute and free of NUL")]
    UnixPath(String),
    /// A hook that cannot be used.
    #[error("invalid MITM hook: {0}")]
    Hook(String),
}
