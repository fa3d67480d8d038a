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

/// `url` for a log line or a config listing: a user and password in its authority are replaced
/// by `<redacted>`; the rest is kept.
///
/// ```
/// use proxy_core::redact_userinfo;
/// assert_eq!(redact_userinfo("http://u:secret@127.0.0.1:4318/v1/logs"), "http://<redacted>@127.0.0.1:4318/v1/logs");
/// assert_eq!(redact_userinfo("http://127.0.0.1:4318/a@b"), "http://127.0.0.1:4318/a@b");
/// assert_eq!(redact_userinfo("u:p@host:1"), "<redacted>@host:1");
/// ```
pub fn redact_userinfo(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}<redacted>{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
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
