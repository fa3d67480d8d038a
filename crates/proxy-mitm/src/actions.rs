//! The actions a matching hook applies to a request before it is sent upstream: headers
//! stripped, then headers injected with a secret (replacing any value the client sent).

use std::collections::HashMap;
use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};
use proxy_broker::Secret;

/// Why an action could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// A header name is not valid.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// The prefix and the secret do not make a valid header value (the secret is not shown).
    #[error(
        "the value of header {header} (prefix {prefix:?} and the secret from {from}) is not a valid header value"
    )]
    HeaderValue {
        /// The header.
        header: String,
        /// The prefix.
        prefix: String,
        /// Where the secret came from.
        from: proxy_broker::SecretSource,
    },
}

/// One header injected with a secret.
struct Injection {
    name: HeaderName,
    /// `prefix` + the secret, marked sensitive (never indexed by HTTP/2's HPACK table).
    value: HeaderValue,
    /// Kept so the value's origin can be named.
    secret: Secret,
}

impl fmt::Debug for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Injection")
            .field("name", &self.name)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// One named action: headers to strip, then headers to inject.
#[derive(Debug, Default)]
pub struct Action {
    strip: Vec<HeaderName>,
    inject: Vec<Injection>,
}

impl Action {
    /// An action that does nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Strips the header `name` from the request.
    pub fn strip(mut self, name: &str) -> Result<Self, ActionError> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ActionError::HeaderName(name.to_owned()))?;
        self.strip.push(name);
        Ok(self)
    }

    /// Sets the header `name` to `prefix` followed by the secret, replacing what the client
    /// sent.
    pub fn inject(mut self, name: &str, prefix: &str, secret: Secret) -> Result<Self, ActionError> {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ActionError::HeaderName(name.to_owned()))?;
        let mut value =
            HeaderValue::from_str(&format!("{prefix}{}", secret.expose())).map_err(|_| {
                ActionError::HeaderValue {
                    header: name.to_owned(),
                    prefix: prefix.to_owned(),
                    from: secret.source().clone(),
                }
            })?;
        value.set_sensitive(true);
        self.inject.push(Injection {
            name: header,
            value,
            secret,
        });
        Ok(self)
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.strip {
            headers.remove(name);
        }
        for i in &self.inject {
            headers.insert(i.name.clone(), i.value.clone());
        }
    }
}

/// The actions hooks name, by name. Built by the caller from the config with the secrets it
/// read; [`MitmInterceptor::with_actions`](crate::MitmInterceptor::with_actions) shares it.
#[derive(Debug, Default)]
pub struct HookActions {
    by_name: HashMap<String, Action>,
}

impl HookActions {
    /// No actions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the action `name`.
    pub fn insert(&mut self, name: &str, action: Action) {
        self.by_name.insert(name.to_owned(), action);
    }

    /// Whether an action of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Applies the action `name` to `headers`; false (and nothing done) when there is none
    /// of that name.
    #[must_use]
    pub fn apply(&self, name: &str, headers: &mut HeaderMap) -> bool {
        match self.by_name.get(name) {
            Some(action) => {
                action.apply(headers);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::{HeaderMap, HeaderValue};
    use proxy_broker::Secret;

    use super::{Action, HookActions};

    #[test]
    fn strip_then_inject_replaces_the_authorization_header_and_keeps_the_rest() {
        let secret = Secret::from_env("GH", Some("ghp-secret".into())).unwrap();
        let action = Action::new()
            .strip("authorization")
            .unwrap()
            .strip("x-remove")
            .unwrap()
            .inject("Authorization", "Bearer ", secret)
            .unwrap();
        let mut actions = HookActions::new();
        actions.insert("auth", action);
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer dummy"));
        h.append("authorization", HeaderValue::from_static("Basic other"));
        h.insert("x-remove", HeaderValue::from_static("1"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        assert!(actions.apply("auth", &mut h));
        let auth: Vec<_> = h.get_all("authorization").iter().collect();
        assert_eq!(auth, ["Bearer ghp-secret"]);
        assert!(auth[0].is_sensitive());
        assert!(!h.contains_key("x-remove"));
        assert_eq!(h["accept"], "*/*");
        assert!(!actions.apply("missing", &mut h));
        assert!(!format!("{actions:?}").contains("ghp-secret"));
    }

    #[test]
    fn a_secret_that_makes_an_invalid_header_is_refused_without_showing_it() {
        let secret = Secret::from_env("GH", Some("line\nbreak".into())).unwrap();
        let e = Action::new().inject("x-token", "", secret).unwrap_err();
        assert!(!e.to_string().contains("line"), "{e}");
        assert!(Action::new().strip("bad header").is_err());
    }
}
