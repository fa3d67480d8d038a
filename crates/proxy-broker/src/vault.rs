//! The [`Vault`]: a session's grants, built from netproxy's environment (the built-in providers)
//! and the configured grants ([`GrantSpec`]), each with its own dummy.

use std::ffi::OsString;
use std::fmt;

use http::HeaderName;
use proxy_core::Host;

use crate::binding::{BindingError, DEFAULT_PORT};
use crate::dummy::{Plan, Shape};
use crate::grant::{DEFAULT_BASIC_USER, Dummy};
use crate::{Binding, Destination, Form, Grant, Secret, SecretError, SecretSource, Unbound};

/// How a configured grant is sent, as the config names it (`send = "bearer"` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendStyle {
    /// `Authorization: Bearer <value>`.
    Bearer,
    /// `Authorization: token <value>`.
    Token,
    /// `Authorization: Basic base64(<basic_user>:<value>)`.
    Basic,
    /// `<header>: <prefix><value>`.
    Header,
}

/// A `send` value that is not one of `bearer`, `token`, `basic`, `header`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown send style {0:?} (expected bearer, token, basic or header)")]
pub struct UnknownSendStyle(pub String);

impl std::str::FromStr for SendStyle {
    type Err = UnknownSendStyle;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bearer" => Ok(SendStyle::Bearer),
            "token" => Ok(SendStyle::Token),
            "basic" => Ok(SendStyle::Basic),
            "header" => Ok(SendStyle::Header),
            _ => Err(UnknownSendStyle(s.to_owned())),
        }
    }
}

impl fmt::Display for SendStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendStyle::Bearer => "bearer",
            SendStyle::Token => "token",
            SendStyle::Basic => "basic",
            SendStyle::Header => "header",
        })
    }
}

/// A configured grant as the config layer reads it from `[network.credentials.NAME]`
/// (docs/credentials.md, "Configured grants"). Checked by [`Vault::new`].
///
/// ```
/// use proxy_broker::{GrantSpec, SendStyle};
/// let mut spec = GrantSpec::new("gitlab", "GITLAB_TOKEN");
/// spec.hosts = vec!["gitlab.example.com".into()];
/// spec.path_prefixes = vec!["/api/v4".into()];
/// spec.send = vec![SendStyle::Header];
/// spec.header = Some("PRIVATE-TOKEN".into());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrantSpec {
    /// The grant's name (the table's key): letters, digits, `_`, `-` and `.`, at most 64.
    pub name: String,
    /// The child's variable that gets the dummy (`env`).
    pub env: String,
    /// Where the real value is (`secret_env_var` or `secret_file`); `None`: netproxy's own
    /// variable [`env`](GrantSpec::env).
    pub secret: Option<SecretSource>,
    /// `hosts`: exact hosts or `*.suffix` (strict subdomains); at least one.
    pub hosts: Vec<String>,
    /// `port`; `None`: 443.
    pub port: Option<u16>,
    /// `path_prefixes`; empty: any path.
    pub path_prefixes: Vec<String>,
    /// `send`; empty: bearer.
    pub send: Vec<SendStyle>,
    /// `basic_user`, with `send` basic only; `None`: `x-access-token`.
    pub basic_user: Option<String>,
    /// `header`, required with `send` header and only with it.
    pub header: Option<String>,
    /// `prefix`, with `send` header only; `None`: nothing.
    pub prefix: Option<String>,
}

impl GrantSpec {
    /// A spec with the name and the child's variable, everything else at its default (no host
    /// yet: one must be added).
    pub fn new(name: impl Into<String>, env: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            env: env.into(),
            secret: None,
            hosts: Vec::new(),
            port: None,
            path_prefixes: Vec::new(),
            send: Vec::new(),
            basic_user: None,
            header: None,
            prefix: None,
        }
    }

    /// Where the real value is read from.
    pub fn source(&self) -> SecretSource {
        self.secret
            .clone()
            .unwrap_or_else(|| SecretSource::EnvVar(self.env.clone()))
    }
}

/// What is wrong with one configured grant. Never carries a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// A name that is empty, too long or holds other characters than letters, digits, `_`, `-`
    /// and `.`.
    #[error("invalid grant name (letters, digits, `_`, `-` and `.`, at most 64)")]
    Name,
    /// A variable name that is not `[A-Za-z_][A-Za-z0-9_]*`, or a `NETPROXY_*` variable.
    #[error("invalid variable name {0:?} (expected [A-Za-z_][A-Za-z0-9_]*, not NETPROXY_*)")]
    VarName(String),
    /// A host, port or path prefix.
    #[error(transparent)]
    Binding(#[from] BindingError),
    /// `send` names `header` without a `header`.
    #[error("send = \"header\" needs `header` (the header's name)")]
    HeaderMissing,
    /// `header` or `prefix` without `send` header.
    #[error("`header` and `prefix` are only for send = \"header\"")]
    HeaderUnused,
    /// `basic_user` without `send` basic.
    #[error("`basic_user` is only for send = \"basic\"")]
    BasicUserUnused,
    /// A header name that is not valid, or one netproxy manages itself.
    #[error(
        "header {0:?} cannot carry a credential (not a valid header name, or one of host, content-length, transfer-encoding, connection, keep-alive, te, trailer, upgrade, proxy-authorization, proxy-authenticate, proxy-connection)"
    )]
    HeaderName(String),
    /// A prefix with characters other than printable ASCII and spaces.
    #[error("prefix {0:?} must be printable ASCII")]
    Prefix(String),
    /// A Basic user with `:` or characters other than printable ASCII.
    #[error("basic_user {0:?} must be printable ASCII without `:`")]
    BasicUser(String),
    /// The secret could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The secret has characters a header cannot carry.
    #[error(
        "the secret in {0} cannot be sent in a header (it must be printable ASCII without spaces)"
    )]
    Unusable(SecretSource),
    /// Another grant has this name.
    #[error("another grant has this name")]
    DuplicateName,
    /// Another grant gives the child this variable.
    #[error("grant {other} already gives the child variable {env}")]
    DuplicateEnv {
        /// The variable.
        env: String,
        /// The other grant.
        other: String,
    },
}

/// Why a vault could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// A configured grant is wrong.
    #[error("credential grant {grant}: {why}")]
    Spec {
        /// The grant's name.
        grant: String,
        /// What is wrong.
        #[source]
        why: SpecError,
    },
    /// The system's random source failed.
    #[error("cannot draw dummy credentials: {0}")]
    Random(String),
}

/// Why a built-in provider's variable is withheld from the child without being brokered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WithheldWhy {
    /// A GitHub Enterprise token and `GH_HOST` is unset or empty.
    GhHostUnset,
    /// A GitHub Enterprise token and `GH_HOST` names a GitHub cloud host.
    GhHostCloud(String),
    /// A GitHub Enterprise token and `GH_HOST` is not a host name.
    GhHostInvalid(String),
    /// The value is not valid UTF-8.
    NotUtf8,
    /// The value has characters a header cannot carry.
    Unusable,
}

impl fmt::Display for WithheldWhy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WithheldWhy::GhHostUnset => f.write_str(
                "GH_HOST is unset, and an enterprise token is bound only to the GitHub Enterprise Server host GH_HOST names",
            ),
            WithheldWhy::GhHostCloud(h) => write!(
                f,
                "GH_HOST {h:?} is a GitHub cloud host, and an enterprise token is bound only to a GitHub Enterprise Server host"
            ),
            WithheldWhy::GhHostInvalid(h) => write!(f, "GH_HOST {h:?} is not a host name"),
            WithheldWhy::NotUtf8 => f.write_str("its value is not valid UTF-8"),
            WithheldWhy::Unusable => f.write_str(
                "its value cannot be sent in a header (it must be printable ASCII without spaces)",
            ),
        }
    }
}

/// A built-in provider's variable that is set in netproxy's environment but neither brokered nor
/// given to the child: its [`Display`](fmt::Display) is the warning netproxy prints at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    /// The variable.
    pub var: String,
    /// Why.
    pub why: WithheldWhy,
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is withheld from the child and not brokered: {}",
            self.var, self.why
        )
    }
}

/// The GitHub cloud hosts a cloud token is bound to.
const GITHUB_CLOUD_HOSTS: &[&str] = &["github.com", "api.github.com", "*.ghe.com"];

/// Where a built-in provider's grant is bound.
#[derive(Debug, Clone, Copy)]
enum BuiltinHosts {
    GitHubCloud,
    /// The non-cloud host of `GH_HOST`.
    GhHost,
    OpenAi,
}

/// A built-in provider: its variable, its dummy's shape and its hosts.
#[derive(Debug, Clone, Copy)]
struct Builtin {
    var: &'static str,
    shape: Shape,
    hosts: BuiltinHosts,
}

/// The built-in providers (docs/credentials.md, "Built-in grants"), in the order they are listed.
const BUILTINS: &[Builtin] = &[
    Builtin {
        var: "GH_TOKEN",
        shape: Shape::GitHub,
        hosts: BuiltinHosts::GitHubCloud,
    },
    Builtin {
        var: "GITHUB_TOKEN",
        shape: Shape::GitHub,
        hosts: BuiltinHosts::GitHubCloud,
    },
    Builtin {
        var: "GH_ENTERPRISE_TOKEN",
        shape: Shape::GitHub,
        hosts: BuiltinHosts::GhHost,
    },
    Builtin {
        var: "GITHUB_ENTERPRISE_TOKEN",
        shape: Shape::GitHub,
        hosts: BuiltinHosts::GhHost,
    },
    Builtin {
        var: "OPENAI_API_KEY",
        shape: Shape::OpenAi,
        hosts: BuiltinHosts::OpenAi,
    },
];

/// The variables of the built-in providers (`GH_TOKEN`, `GITHUB_TOKEN`, `GH_ENTERPRISE_TOKEN`,
/// `GITHUB_ENTERPRISE_TOKEN`, `OPENAI_API_KEY`).
pub fn builtin_vars() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.var)
}

/// The forms every built-in grant is recognised in: Bearer, `token` and Basic with the user
/// `x-access-token`.
fn builtin_forms() -> Vec<Form> {
    vec![
        Form::Bearer,
        Form::Token,
        Form::Basic {
            user: DEFAULT_BASIC_USER.to_owned(),
        },
    ]
}

/// A built-in whose variable is unset (or empty): nothing to broker, but `explain` says so.
#[derive(Debug, Clone)]
struct Unset {
    var: &'static str,
    binding: Binding,
}

/// A session's brokered credentials.
///
/// Built once at start from netproxy's environment (looked up by the caller: this crate never
/// reads it) and the configured grants. Each grant gets a fresh dummy, unique in the session and
/// never equal to (or inside) a real value. The child's variables come from
/// [`child_env`](Vault::child_env); requests are rewritten by [`inject`](Vault::inject).
///
/// ```
/// use proxy_broker::{Destination, Scheme, Vault};
/// use proxy_core::Host;
/// let vault = Vault::new(
///     |var| (var == "GH_TOKEN").then(|| "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789".into()),
///     &[],
/// )?;
/// let child = vault.child_env();
/// let (key, dummy) = &child.set[0];
/// assert_eq!(key, "GH_TOKEN");
/// assert!(dummy.starts_with("ghp_") && dummy.len() == 40);
/// assert_ne!(dummy, "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789");
/// let api = Host::parse("api.github.com")?;
/// assert!(vault.binds(&api, 443));
/// let why = vault.explain(&Destination::new(Scheme::Https, &api, 443, "/user"), false);
/// assert_eq!(why.injected().collect::<Vec<_>>(), ["GH_TOKEN"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Vault {
    grants: Vec<Grant>,
    unset: Vec<Unset>,
    withheld: Vec<Withheld>,
    /// Variables the child must not get: withheld ones and configured secret variables.
    remove: Vec<String>,
    /// The headers a dummy is looked for in: `Authorization`, then each grant's named header.
    pub(crate) scanned: Vec<HeaderName>,
}

impl Vault {
    /// A vault of the built-in providers found by `env` (netproxy's environment: the value of a
    /// variable, `None` when unset) and of the configured grants `specs`.
    ///
    /// A built-in whose variable is unset or empty is not a grant. A GitHub Enterprise token
    /// without a usable `GH_HOST`, or a built-in value that is not printable ASCII, is withheld
    /// (see [`withheld`](Vault::withheld)). A configured grant whose `env` is a built-in's variable
    /// replaces that built-in. A configured grant that is wrong, or whose secret cannot be read,
    /// is an error naming the grant, never the value.
    pub fn new(
        env: impl Fn(&str) -> Option<OsString>,
        specs: &[GrantSpec],
    ) -> Result<Self, VaultError> {
        let mut vault = Vault::default();
        let mut configured = Vec::with_capacity(specs.len());
        for spec in specs {
            let fail = |why| VaultError::Spec {
                grant: spec.name.clone(),
                why,
            };
            let (binding, forms) = check_spec(spec).map_err(fail)?;
            configured.push((spec, binding, forms));
        }
        let replaced = |var: &str| specs.iter().any(|s| s.env == var);
        let gh_host = env("GH_HOST");
        for b in BUILTINS.iter().filter(|b| !replaced(b.var)) {
            let binding_of = || match b.hosts {
                BuiltinHosts::GitHubCloud => Ok(builtin_binding(GITHUB_CLOUD_HOSTS)),
                BuiltinHosts::OpenAi => Ok(builtin_binding(&["api.openai.com"])),
                BuiltinHosts::GhHost => enterprise_host(gh_host.as_ref()),
            };
            let value = env(b.var).map(OsString::into_string);
            let trimmed = match &value {
                Some(Ok(text)) => Some(text.trim()).filter(|t| !t.is_empty()),
                _ => None,
            };
            let withheld = match (&value, trimmed, binding_of()) {
                // Unset or empty: nothing secret, nothing to do (the child keeps an empty one).
                (None, ..) | (Some(Ok(_)), None, _) => {
                    if let Ok(binding) = binding_of() {
                        vault.unset.push(Unset {
                            var: b.var,
                            binding,
                        });
                    }
                    continue;
                }
                (Some(Err(_)), ..) => WithheldWhy::NotUtf8,
                (_, Some(t), _) if !is_header_safe(t) => WithheldWhy::Unusable,
                (_, Some(_), Err(why)) => why,
                (_, Some(t), Ok(binding)) => {
                    let secret = Secret::new(t.to_owned(), SecretSource::EnvVar(b.var.to_owned()))
                        .map_err(|e| VaultError::Spec {
                            grant: b.var.to_owned(),
                            why: SpecError::Secret(e),
                        })?;
                    vault.grants.push(Grant {
                        name: b.var.to_owned(),
                        env: b.var.to_owned(),
                        secret,
                        dummy: Dummy(String::new()),
                        binding,
                        forms: builtin_forms(),
                        builtin: true,
                        shape: b.shape,
                    });
                    continue;
                }
            };
            vault.withheld.push(Withheld {
                var: b.var.to_owned(),
                why: withheld,
            });
            vault.remove.push(b.var.to_owned());
        }
        for (spec, binding, forms) in configured {
            let fail = |why| VaultError::Spec {
                grant: spec.name.clone(),
                why,
            };
            if vault.grants.iter().any(|g| g.name == spec.name) {
                return Err(fail(SpecError::DuplicateName));
            }
            if let Some(other) = vault.grants.iter().find(|g| g.env == spec.env) {
                return Err(fail(SpecError::DuplicateEnv {
                    env: spec.env.clone(),
                    other: other.name.clone(),
                }));
            }
            let source = spec.source();
            let secret = Secret::load(&source, &env).map_err(|e| fail(SpecError::Secret(e)))?;
            if !is_header_safe(secret.expose()) {
                return Err(fail(SpecError::Unusable(source)));
            }
            vault.grants.push(Grant {
                name: spec.name.clone(),
                env: spec.env.clone(),
                secret,
                dummy: Dummy(String::new()),
                binding,
                forms,
                builtin: false,
                shape: Shape::Generic,
            });
        }
        for g in &vault.grants {
            // A secret variable that another grant gives a dummy is not removed: the child gets
            // the dummy there.
            if let SecretSource::EnvVar(var) = g.source()
                && !vault.grants.iter().any(|o| o.env == *var)
                && !vault.remove.contains(var)
            {
                vault.remove.push(var.clone());
            }
        }
        vault.scanned = vec![http::header::AUTHORIZATION];
        for g in &vault.grants {
            for f in &g.forms {
                if let Form::Header { name, .. } = f
                    && !vault.scanned.contains(name)
                {
                    vault.scanned.push(name.clone());
                }
            }
        }
        vault.draw_dummies(getrandom::fill)?;
        Ok(vault)
    }

    /// Gives every grant a dummy of its shape, unique in the session: no dummy equals, contains
    /// or is contained in another dummy or a real value.
    pub(crate) fn draw_dummies(
        &mut self,
        mut random: impl FnMut(&mut [u8]) -> Result<(), getrandom::Error>,
    ) -> Result<(), VaultError> {
        /// Draws per grant before giving up; a clash is a one-in-62^16 event.
        const ATTEMPTS: usize = 8;
        for i in 0..self.grants.len() {
            let plan = Plan::new(self.grants[i].shape, self.grants[i].real());
            let mut drawn = None;
            for _ in 0..ATTEMPTS {
                let d = plan
                    .draw(&mut random)
                    .map_err(|e| VaultError::Random(e.to_string()))?;
                let clash = self.grants.iter().enumerate().any(|(j, g)| {
                    let real = g.real();
                    let overlaps = |a: &str, b: &str| a.contains(b) || b.contains(a);
                    overlaps(&d, real) || (j < i && overlaps(&d, g.dummy()))
                });
                if !clash {
                    drawn = Some(d);
                    break;
                }
            }
            let Some(d) = drawn else {
                return Err(VaultError::Random(format!(
                    "no dummy for {} unlike every other value after {ATTEMPTS} draws",
                    self.grants[i].name
                )));
            };
            self.grants[i].dummy = Dummy(d);
        }
        Ok(())
    }

    /// The session's grants, built-ins first, then configured ones in the order given.
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// The grant named `name`.
    pub fn grant(&self, name: &str) -> Option<&Grant> {
        self.grants.iter().find(|g| g.name == name)
    }

    /// Whether there is no grant.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The built-in variables withheld from the child without a grant; each is a warning to
    /// print at start.
    pub fn withheld(&self) -> &[Withheld] {
        &self.withheld
    }

    /// Whether a grant is bound to `host` on `port`: such a tunnel is intercepted when its first
    /// bytes are a TLS ClientHello, so a dummy in it can be replaced (or refused).
    pub fn binds(&self, host: &Host, port: u16) -> bool {
        self.grants
            .iter()
            .any(|g| g.binding.port() == port && g.binding.binds_host(host))
    }

    /// The changes to make to the child's environment: each grant's variable set to its dummy,
    /// and the variables to remove (withheld built-ins, and configured secret variables other
    /// than a grant's own `env`). The caller applies `remove` first, then `set`.
    pub fn child_env(&self) -> ChildEnv {
        ChildEnv {
            set: self
                .grants
                .iter()
                .map(|g| (g.env.clone(), g.dummy().to_owned()))
                .collect(),
            remove: self.remove.clone(),
        }
    }

    /// The name of the first grant whose real value `bytes` contain (another process's
    /// environment, say), without exposing the value.
    pub fn grant_with_value_in(&self, bytes: &[u8]) -> Option<&str> {
        self.grants
            .iter()
            .find(|g| {
                let real = g.secret.expose().as_bytes();
                !real.is_empty() && bytes.windows(real.len()).any(|w| w == real)
            })
            .map(|g| g.name.as_str())
    }

    /// The grant whose dummy is `value`.
    pub fn grant_of_dummy(&self, value: &str) -> Option<&Grant> {
        self.grants.iter().find(|g| g.dummy() == value)
    }

    /// What would happen to a dummy sent to `dest`: for each grant bound to its host (and each
    /// built-in whose variable is unset there), whether its real value would be injected, or why
    /// not; and the withheld variables when nothing would be injected. `allow_plaintext` is
    /// `dangerously_allow_plaintext_credential_injection`. Whether the tunnel is intercepted at
    /// all is the caller's to add.
    pub fn explain(&self, dest: &Destination<'_>, allow_plaintext: bool) -> Explanation {
        let mut entries: Vec<Explained> = self
            .grants
            .iter()
            .filter(|g| g.binding.binds_host(dest.host))
            .map(|g| Explained {
                grant: g.name.clone(),
                env: g.env.clone(),
                verdict: match g.check(dest, allow_plaintext) {
                    Ok(()) => Verdict::Injected,
                    Err(why) => Verdict::NotBound(why),
                },
            })
            .collect();
        entries.extend(
            self.unset
                .iter()
                .filter(|u| u.binding.binds_host(dest.host))
                .map(|u| Explained {
                    grant: u.var.to_owned(),
                    env: u.var.to_owned(),
                    verdict: Verdict::Unset,
                }),
        );
        if !entries.iter().any(|e| e.verdict == Verdict::Injected) {
            entries.extend(self.withheld.iter().map(|w| Explained {
                grant: w.var.clone(),
                env: w.var.clone(),
                verdict: Verdict::Withheld(w.why.clone()),
            }));
        }
        Explanation {
            destination: dest.to_string(),
            host: dest.host.to_string(),
            entries,
        }
    }
}

/// A built-in binding (the hosts are constants).
fn builtin_binding(hosts: &[&str]) -> Binding {
    // The constants are valid hosts; were one not, the grant would bind nothing rather than panic.
    Binding::new(hosts, DEFAULT_PORT, Vec::<&str>::new()).unwrap_or_else(|_| Binding::none())
}

/// The binding of a GitHub Enterprise token: the host of `GH_HOST` (`host`, or `https://host/`),
/// when it is set and not a GitHub cloud host.
fn enterprise_host(gh_host: Option<&OsString>) -> Result<Binding, WithheldWhy> {
    let raw = gh_host
        .map(|v| v.to_string_lossy().trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or(WithheldWhy::GhHostUnset)?;
    let lower = raw.to_ascii_lowercase();
    let bare = ["https://", "http://"]
        .iter()
        .find_map(|s| lower.strip_prefix(s))
        .unwrap_or(&lower);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    let host = Host::parse(bare).map_err(|_| WithheldWhy::GhHostInvalid(raw.clone()))?;
    let name = host.as_name().unwrap_or_default();
    let cloud = ["github.com", "ghe.com"]
        .iter()
        .any(|c| name == *c || name.strip_suffix(c).is_some_and(|h| h.ends_with('.')));
    if cloud {
        return Err(WithheldWhy::GhHostCloud(host.to_string()));
    }
    Binding::new([host.to_string()], DEFAULT_PORT, Vec::<&str>::new())
        .map_err(|_| WithheldWhy::GhHostInvalid(raw))
}

/// Printable ASCII without spaces: fits every form (a header value, a Basic password).
fn is_header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether a variable name is `[A-Za-z_][A-Za-z0-9_]*` and not one of netproxy's own.
fn is_var_name(var: &str) -> bool {
    let mut bytes = var.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !var.to_ascii_uppercase().starts_with("NETPROXY_")
}

/// Headers that netproxy manages itself, or that frame the message: never a credential's.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
];

/// Checks a configured grant: its binding and forms.
fn check_spec(spec: &GrantSpec) -> Result<(Binding, Vec<Form>), SpecError> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 64
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !name_ok {
        return Err(SpecError::Name);
    }
    if !is_var_name(&spec.env) {
        return Err(SpecError::VarName(spec.env.clone()));
    }
    if let Some(SecretSource::EnvVar(var)) = &spec.secret
        && !is_var_name(var)
    {
        return Err(SpecError::VarName(var.clone()));
    }
    let binding = Binding::new(
        &spec.hosts,
        spec.port.unwrap_or(DEFAULT_PORT),
        &spec.path_prefixes,
    )?;
    let send = if spec.send.is_empty() {
        vec![SendStyle::Bearer]
    } else {
        spec.send.clone()
    };
    let has = |s| send.contains(&s);
    if !has(SendStyle::Header) && (spec.header.is_some() || spec.prefix.is_some()) {
        return Err(SpecError::HeaderUnused);
    }
    if !has(SendStyle::Basic) && spec.basic_user.is_some() {
        return Err(SpecError::BasicUserUnused);
    }
    let mut forms = Vec::new();
    for style in send {
        let form = match style {
            SendStyle::Bearer => Form::Bearer,
            SendStyle::Token => Form::Token,
            SendStyle::Basic => {
                let user = spec.basic_user.as_deref().unwrap_or(DEFAULT_BASIC_USER);
                if user.contains(':') || !user.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(SpecError::BasicUser(user.to_owned()));
                }
                Form::Basic {
                    user: user.to_owned(),
                }
            }
            SendStyle::Header => {
                let header = spec.header.as_deref().ok_or(SpecError::HeaderMissing)?;
                let name = HeaderName::from_bytes(header.as_bytes())
                    .ok()
                    .filter(|n| !RESERVED_HEADERS.contains(&n.as_str()))
                    .ok_or_else(|| SpecError::HeaderName(header.to_owned()))?;
                let prefix = spec.prefix.clone().unwrap_or_default();
                if !prefix.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                    return Err(SpecError::Prefix(prefix));
                }
                Form::Header { name, prefix }
            }
        };
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    Ok((binding, forms))
}

/// The changes [`Vault::child_env`] asks for. `Debug` lists the keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChildEnv {
    /// Variables to set: each grant's `env` and its dummy.
    pub set: Vec<(String, String)>,
    /// Variables to remove.
    pub remove: Vec<String>,
}

impl fmt::Debug for ChildEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildEnv")
            .field("set", &self.set.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("remove", &self.remove)
            .finish()
    }
}

/// The keys of `env` whose value is, exactly, one of this session's dummies, in `env`'s order.
/// Changes nothing: a key the user set to something else since (or never had a dummy) is not
/// listed.
///
/// ```
/// use proxy_broker::{Vault, dummy_env_keys};
/// let vault = Vault::new(|v| (v == "OPENAI_API_KEY").then(|| "sk-real".into()), &[])?;
/// let child = vault.child_env();
/// let mut env = child.set.clone();
/// assert_eq!(dummy_env_keys(&env, &vault), ["OPENAI_API_KEY"]);
/// env[0].1 = "sk-mine".into();
/// assert!(dummy_env_keys(&env, &vault).is_empty());
/// # Ok::<(), proxy_broker::VaultError>(())
/// ```
pub fn dummy_env_keys<K, V>(env: &[(K, V)], vault: &Vault) -> Vec<String>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    env.iter()
        .filter(|(_, v)| vault.grant_of_dummy(v.as_ref()).is_some())
        .map(|(k, _)| k.as_ref().to_owned())
        .collect()
}

/// What [`Vault::explain`] says of one grant at a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// A request carrying the grant's dummy gets its real value here.
    Injected,
    /// The grant is bound to the host, not to this destination: its dummy is refused here.
    NotBound(Unbound),
    /// A built-in bound here whose variable is unset (or empty) in netproxy's environment.
    Unset,
    /// A built-in whose variable is withheld (see [`Withheld`]).
    Withheld(WithheldWhy),
}

/// One grant in an [`Explanation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// The grant's name.
    pub grant: String,
    /// The child's variable of the grant.
    pub env: String,
    /// What happens here.
    pub verdict: Verdict,
}

/// The answer of [`Vault::explain`] (`netproxy check --credentials URL`). Its `Display` is the
/// text `check` prints, one line per grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The destination, as a URL without a query.
    pub destination: String,
    /// Its host.
    pub host: String,
    /// The grants bound to the host (and the withheld variables when none is injected); empty
    /// when no grant is bound to the host.
    pub entries: Vec<Explained>,
}

impl Explanation {
    /// The grants whose real value a request carrying their dummy gets here.
    pub fn injected(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|e| e.verdict == Verdict::Injected)
            .map(|e| e.grant.as_str())
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "credentials for {}:", self.destination)?;
        if !self
            .entries
            .iter()
            .any(|e| !matches!(e.verdict, Verdict::Withheld(_)))
        {
            writeln!(f, "  none: no credential grant is bound to {}", self.host)?;
        }
        for e in &self.entries {
            match &e.verdict {
                Verdict::Injected => writeln!(
                    f,
                    "  {}: injected when the request carries the dummy of ${}",
                    e.grant, e.env
                )?,
                Verdict::NotBound(why) => {
                    writeln!(f, "  {}: not injected, refused: {why}", e.grant)?;
                }
                Verdict::Unset => writeln!(
                    f,
                    "  {}: not injected: {} is unset or empty in netproxy's environment",
                    e.grant, e.env
                )?,
                Verdict::Withheld(why) => writeln!(f, "  {}: withheld: {why}", e.grant)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
