//! The admin API's bearer token: where it comes from, and a generated one's file.
//!
//! The caller reads the environment and passes the values in; nothing here looks a variable up.

use std::path::{Path, PathBuf};

/// Where the admin token came from (never the token itself: it is not logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `admin_token` in the config.
    Config,
    /// `NETPROXY_ADMIN_TOKEN`.
    Environment,
    /// Generated at start and written to this file (mode 0600).
    Generated(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Config => f.write_str("admin_token in the config"),
            TokenSource::Environment => f.write_str("NETPROXY_ADMIN_TOKEN"),
            TokenSource::Generated(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why there is no usable admin token (the admin API then does not start).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No place to write a generated token.
    #[error(
        "no admin token: set admin_token or NETPROXY_ADMIN_TOKEN, or NETPROXY_HOME (or HOME) for the generated one; --no-admin turns the admin API off"
    )]
    NoHome,
    /// The generated token could not be written.
    #[error("cannot write the admin token to {}: {source} (--no-admin turns the admin API off)", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No randomness for a token.
    #[error("cannot generate an admin token: {0}")]
    Random(String),
    /// A configured token that is empty or has characters a header cannot carry.
    #[error("{0} is not a usable token (it must be non-empty printable ASCII without spaces)")]
    BadToken(TokenSource),
}

/// The admin API's token: `configured` (`admin_token`), else `env` (the value of
/// `NETPROXY_ADMIN_TOKEN`, ignored when empty), else a new random one written to
/// `home/admin.token` with mode 0600 (replacing an older one).
pub fn token(
    configured: Option<&str>,
    env: Option<String>,
    home: Option<&Path>,
) -> Result<(String, TokenSource), TokenError> {
    let usable = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic());
    if let Some(t) = configured {
        return if usable(t) {
            Ok((t.to_owned(), TokenSource::Config))
        } else {
            Err(TokenError::BadToken(TokenSource::Config))
        };
    }
    if let Some(t) = env.filter(|t| !t.is_empty()) {
        return if usable(&t) {
            Ok((t, TokenSource::Environment))
        } else {
            Err(TokenError::BadToken(TokenSource::Environment))
        };
    }
    let home = home.ok_or(TokenError::NoHome)?;
    let token = random_token()?;
    let path = home.join("admin.token");
    write_private(home, &path, &token).map_err(|source| TokenError::Write {
        path: path.clone(),
        source,
    })?;
    Ok((token, TokenSource::Generated(path)))
}

/// A new random token: 256 bits, hex. `run --admin` draws one per session and ignores
/// `admin_token`, `NETPROXY_ADMIN_TOKEN` and the token file.
pub fn random_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `text` to `path` with mode 0600, atomically (a private temporary file renamed over
/// it), creating `dir` (mode 0700) when missing.
fn write_private(dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        b.mode(0o700);
        b.create(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let _ = std::fs::remove_file(&tmp);
    let mut f = opts.open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_then_environment_then_a_generated_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        assert_eq!(
            token(Some("abc"), Some("env".into()), Some(&home)).unwrap(),
            ("abc".into(), TokenSource::Config)
        );
        assert_eq!(
            token(None, Some("env".into()), Some(&home)).unwrap(),
            ("env".into(), TokenSource::Environment)
        );
        let (t, src) = token(None, None, Some(&home)).unwrap();
        assert_eq!(t.len(), 64);
        let path = home.join("admin.token");
        assert_eq!(src, TokenSource::Generated(path.clone()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{t}\n"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A new start, a new token.
        let (t2, _) = token(None, None, Some(&home)).unwrap();
        assert_ne!(t, t2);
        assert!(matches!(
            token(Some("a b"), None, None),
            Err(TokenError::BadToken(_))
        ));
        assert!(matches!(token(None, None, None), Err(TokenError::NoHome)));
    }
}
