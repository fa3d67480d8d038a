//! A [`Grant`]: one brokered credential, its real value, the dummy the child gets in its place,
//! where the real value may go ([`Binding`]) and how it is sent ([`Form`]).

use std::fmt;

use http::HeaderName;

use crate::{Binding, Destination, Secret, SecretSource, Unbound};

/// The user of a Basic credential when a grant does not name one (GitHub's convention for a token
/// sent as a password).
pub const DEFAULT_BASIC_USER: &str = "x-access-token";

/// One way a credential is sent in a request. The dummy is recognised in this form and the real
/// value put back in the same form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// `Authorization: Bearer <value>` (the scheme's spelling as the client sent it).
    Bearer,
    /// `Authorization: token <value>` (GitHub's older scheme).
    Token,
    /// `Authorization: Basic base64(<user>:<value>)`.
    Basic {
        /// The user the client sends with the value.
        user: String,
    },
    /// `<name>: <prefix><value>`.
    Header {
        /// The header.
        name: HeaderName,
        /// What precedes the value (compared ignoring ASCII case).
        prefix: String,
    },
}

impl fmt::Display for Form {
    /// `bearer`, `token`, `basic (user x-access-token)`, `header x-api-key` or
    /// `header x-api-key (prefix "Key ")`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Form::Bearer => f.write_str("bearer"),
            Form::Token => f.write_str("token"),
            Form::Basic { user } => write!(f, "basic (user {user})"),
            Form::Header { name, prefix } if prefix.is_empty() => write!(f, "header {name}"),
            Form::Header { name, prefix } => write!(f, "header {name} (prefix {prefix:?})"),
        }
    }
}

impl Form {
    /// A short word for listings: `bearer`, `token`, `basic` or `header`.
    pub fn kind(&self) -> &'static str {
        match self {
            Form::Bearer => "bearer",
            Form::Token => "token",
            Form::Basic { .. } => "basic",
            Form::Header { .. } => "header",
        }
    }
}

/// A session's dummy value. Worth nothing outside netproxy, but whoever presents it through
/// netproxy gets the real value injected, so it stays out of `Debug` output too.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Dummy(pub(crate) String);

impl fmt::Debug for Dummy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[dummy]")
    }
}

/// One brokered credential of a session: the real value (kept in this crate), the dummy the child
/// gets in its variable [`env`](Grant::env), where the real value may go and how it is sent.
///
/// Built by [`Vault::new`](crate::Vault::new); listed by [`Vault::grants`](crate::Vault::grants)
/// for `GET /credentials` and `netproxy check --credentials`. `Debug` shows neither the real value
/// nor the dummy.
#[derive(Debug, Clone)]
pub struct Grant {
    pub(crate) name: String,
    pub(crate) env: String,
    pub(crate) secret: Secret,
    pub(crate) dummy: Dummy,
    pub(crate) binding: Binding,
    pub(crate) forms: Vec<Form>,
    pub(crate) builtin: bool,
    /// The family of the value, which shapes the dummy.
    pub(crate) shape: crate::dummy::Shape,
}

impl Grant {
    /// The grant's name: the variable for a built-in (`GH_TOKEN`), the table's name for a
    /// configured one. This is what audit events (`credential.grant`) and refusals name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's variable that holds the dummy.
    pub fn env(&self) -> &str {
        &self.env
    }

    /// Where the real value was read from (a variable or a file of netproxy's), never the value.
    pub fn source(&self) -> &SecretSource {
        self.secret.source()
    }

    /// Where the real value may be sent.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// The forms the dummy is recognised in (and the real value put back in).
    pub fn forms(&self) -> &[Form] {
        &self.forms
    }

    /// Whether it is one of the built-in providers (docs/credentials.md, "Built-in grants").
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// This session's dummy: what the child gets in [`env`](Grant::env).
    pub fn dummy(&self) -> &str {
        &self.dummy.0
    }

    /// Whether the real value may go to `dest` (see [`Binding::check`]).
    pub fn check(&self, dest: &Destination<'_>, allow_plaintext: bool) -> Result<(), Unbound> {
        self.binding.check(dest, allow_plaintext)
    }

    /// The real value, for the one place that sends it.
    pub(crate) fn real(&self) -> &str {
        self.secret.expose()
    }
}
