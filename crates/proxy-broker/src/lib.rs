//! netproxy's secrets and its credential broker.
//!
//! **Secrets.** A [`Secret`] is a value hook actions inject into intercepted requests, or the real
//! token of a brokered credential. It is read once from netproxy's own environment or from a file,
//! held in a [`secrecy::SecretString`] (zeroed when dropped), and shown nowhere: its `Debug`
//! output is a placeholder, it has no `Display`, and the errors about it name where it came from,
//! never its value.
//!
//! **The credential broker** (docs/credentials.md). A child of `netproxy run` that inherits
//! `GH_TOKEN` could send it anywhere its policy allows. With the broker, the child gets a *dummy*
//! instead: a look-alike of the same shape, unique to the session and worth nothing outside
//! netproxy. The real value stays in a [`Vault`], as one [`Grant`] per credential, bound to the
//! hosts, port and path prefixes it belongs to ([`Binding`]). In a request netproxy can read
//! (inside TLS it terminates), [`Vault::inject`] replaces each dummy by its real value when the
//! grant is bound to the [`Destination`], and refuses the request ([`CredentialNotBound`],
//! reason `credential_not_bound`) when it is not: the real value never goes where it does not
//! belong, and a dummy that leaks elsewhere is worthless.
//!
//! The key decision: a dummy selects its grant. Nothing is injected into a request that carries
//! no dummy, so a request with a credential of its own keeps it, and `GH_TOKEN` and
//! `GITHUB_TOKEN` holding different tokens are told apart by the dummy presented.
//!
//! This crate is pure apart from reading secret files: it does not read the environment (the
//! caller, proxy-bin, looks variables up and hands a lookup over), has no runtime, and logs
//! nothing.
//!
//! ```
//! use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
//! use proxy_broker::{Destination, Scheme, Vault};
//! use proxy_core::Host;
//!
//! let real = "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
//! let vault = Vault::new(|var| (var == "GH_TOKEN").then(|| real.into()), &[])?;
//! // The child's environment gets the dummy in GH_TOKEN.
//! let (var, dummy) = vault.child_env().set.remove(0);
//! assert_eq!(var, "GH_TOKEN");
//! // The child sends it; inside intercepted TLS to api.github.com it becomes the real token.
//! let mut headers = HeaderMap::new();
//! headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("token {dummy}"))?);
//! let api = Host::parse("api.github.com")?;
//! let done = vault.inject(&Destination::new(Scheme::Https, &api, 443, "/user"), &mut headers, false)?;
//! assert_eq!(done.audit().map(|a| a.grant), Some("GH_TOKEN".to_owned()));
//! assert_eq!(headers[AUTHORIZATION], format!("token {real}").as_str());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

mod binding;
mod dummy;
mod grant;
mod inject;
mod vault;

pub use binding::{Binding, BindingError, DEFAULT_PORT, Destination, HostPattern, Scheme, Unbound};
pub use grant::{DEFAULT_BASIC_USER, Form, Grant};
pub use inject::{CredentialAudit, CredentialNotBound, Injected};
pub use vault::{
    ChildEnv, Explained, Explanation, GrantSpec, SendStyle, SpecError, UnknownSendStyle, Vault,
    VaultError, Verdict, Withheld, WithheldWhy, builtin_vars, dummy_env_keys,
};

/// The largest secret file read (a token or a key, not a document).
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Where a secret comes from, as a config names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretSource {
    /// A variable of netproxy's own environment (`secret_env_var`).
    EnvVar(String),
    /// An absolute path to a file holding the value (`secret_file`), read whole and trimmed.
    File(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::EnvVar(name) => write!(f, "environment variable {name}"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// Why a secret could not be read. Never carries the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The variable is not set in netproxy's environment.
    #[error("missing required environment variable {0}")]
    MissingVar(String),
    /// The variable is set but not valid UTF-8.
    #[error("environment variable {0} is not valid UTF-8")]
    NotUtf8Var(String),
    /// A `secret_file` path that is not absolute.
    #[error("secret_file must be an absolute path, found {}", .0.display())]
    RelativeFile(PathBuf),
    /// The file could not be read.
    #[error("cannot read secret_file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_SECRET_FILE`], or not a regular file.
    #[error("secret_file {} is not a regular file of at most {MAX_SECRET_FILE} bytes", .0.display())]
    NotASecretFile(PathBuf),
    /// The file is not valid UTF-8.
    #[error("secret_file {} is not valid UTF-8", .0.display())]
    NotUtf8File(PathBuf),
    /// The value is empty (after trimming, for a file).
    #[error("the secret in {0} is empty")]
    Empty(SecretSource),
}

/// A secret value. `Debug` prints a placeholder; the value is reachable only through
/// [`Secret::expose`], at the place that sends it.
#[derive(Clone)]
pub struct Secret {
    value: SecretString,
    source: SecretSource,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("source", &self.source)
            .field("value", &"[redacted]")
            .finish()
    }
}

impl Secret {
    /// The secret held by the variable `name`, given the value netproxy's environment holds
    /// for it (`None` when unset). An empty value is refused.
    pub fn from_env(name: &str, value: Option<std::ffi::OsString>) -> Result<Self, SecretError> {
        let source = SecretSource::EnvVar(name.to_owned());
        let value = value
            .ok_or_else(|| SecretError::MissingVar(name.to_owned()))?
            .into_string()
            .map_err(|_| SecretError::NotUtf8Var(name.to_owned()))?;
        Self::new(value, source)
    }

    /// The secret in the file at `path` (absolute), read whole (at most
    /// [`MAX_SECRET_FILE`] bytes) and trimmed of surrounding whitespace.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        if !path.is_absolute() {
            return Err(SecretError::RelativeFile(path.to_owned()));
        }
        let io = |source| SecretError::Io {
            path: path.to_owned(),
            source,
        };
        // Non-blocking, so a FIFO (or a device) named as the secret cannot hang a start or a
        // reload: it is opened at once, then refused as not a regular file.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits().cast_signed())
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() || meta.len() > MAX_SECRET_FILE {
            return Err(SecretError::NotASecretFile(path.to_owned()));
        }
        let mut bytes = Vec::new();
        file.take(MAX_SECRET_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_SECRET_FILE {
            return Err(SecretError::NotASecretFile(path.to_owned()));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            // The bytes may be the secret: wipe them rather than drop them as they are.
            let mut bytes = e.into_bytes();
            bytes.fill(0);
            SecretError::NotUtf8File(path.to_owned())
        })?;
        let trimmed = text.trim().to_owned();
        let mut text = text;
        // The untrimmed copy is wiped, not just dropped.
        wipe(&mut text);
        Self::new(trimmed, SecretSource::File(path.to_owned()))
    }

    /// Reads the secret from where `source` says; `env` answers a variable's value (netproxy's
    /// environment, looked up by the caller).
    pub fn load(
        source: &SecretSource,
        env: impl FnOnce(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, SecretError> {
        match source {
            SecretSource::EnvVar(name) => Self::from_env(name, env(name)),
            SecretSource::File(path) => Self::from_file(path),
        }
    }

    fn new(value: String, source: SecretSource) -> Result<Self, SecretError> {
        if value.is_empty() {
            return Err(SecretError::Empty(source));
        }
        Ok(Self {
            value: SecretString::from(value),
            source,
        })
    }

    /// Where the value came from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }
}

/// Overwrites a string's bytes with zeros before it is dropped.
fn wipe(s: &mut String) {
    let mut bytes = std::mem::take(s).into_bytes();
    bytes.fill(0);
    drop(std::hint::black_box(bytes));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;

    use super::{Secret, SecretError, SecretSource};

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let s = Secret::from_env("TOKEN", Some("ghp-secret-value".into())).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("ghp-secret-value"), "{shown}");
        assert!(shown.contains("TOKEN"), "{shown}");
        assert_eq!(s.expose(), "ghp-secret-value");
    }

    #[test]
    fn an_unset_or_empty_variable_is_refused_by_name() {
        let e = Secret::from_env("NOPE", None).unwrap_err();
        assert_eq!(e.to_string(), "missing required environment variable NOPE");
        let e = Secret::from_env("EMPTY", Some("".into())).unwrap_err();
        assert!(matches!(e, SecretError::Empty(_)), "{e}");
    }

    #[test]
    fn a_file_secret_is_trimmed_and_a_relative_path_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"  ghp-file-secret\n")
            .unwrap();
        let s = Secret::from_file(&path).unwrap();
        assert_eq!(s.expose(), "ghp-file-secret");
        assert_eq!(s.source(), &SecretSource::File(path.clone()));
        let e = Secret::from_file(std::path::Path::new("relative/token")).unwrap_err();
        assert!(e.to_string().contains("must be an absolute path"), "{e}");
        let e = Secret::from_file(dir.path()).unwrap_err();
        assert!(matches!(e, SecretError::NotASecretFile(_)), "{e}");
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let e = Secret::from_file(&path).unwrap_err();
        assert!(matches!(e, SecretError::NotASecretFile(_)), "{e}");
    }

    #[test]
    fn errors_about_a_file_never_carry_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, b"\xffsecret-bytes").unwrap();
        let e = Secret::from_file(&path).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("secret-bytes"));
    }
}
