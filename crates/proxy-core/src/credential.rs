//! The per-session proxy credential (`netproxy run --proxy-auth`): clients must present it,
//! over HTTP as `Proxy-Authorization: Basic` and over SOCKS5 as username/password (RFC 1929).

use std::fmt;

/// A username and password that clients of a listener must present.
///
/// ```
/// use proxy_core::ProxyCredential;
/// let c = ProxyCredential::new("netproxy", "s3cret");
/// assert!(c.matches(b"netproxy", b"s3cret"));
/// assert!(!c.matches(b"netproxy", b"s3cre"));
/// assert!(!format!("{c:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredential {
    user: String,
    password: String,
}

impl ProxyCredential {
    /// A credential.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The username.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password (never log it).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Whether `user` and `password` are this credential, compared in time that does not
    /// depend on where they differ.
    pub fn matches(&self, user: &[u8], password: &[u8]) -> bool {
        // Both comparisons always run.
        let u = constant_time_eq(self.user.as_bytes(), user);
        let p = constant_time_eq(self.password.as_bytes(), password);
        u & p
    }
}

impl fmt::Debug for ProxyCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyCredential")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Equality of two byte strings in time that depends only on their lengths.
///
/// ```
/// assert!(proxy_core::constant_time_eq(b"abc", b"abc"));
/// assert!(!proxy_core::constant_time_eq(b"abc", b"abd"));
/// assert!(!proxy_core::constant_time_eq(b"abc", b"ab"));
/// ```
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
