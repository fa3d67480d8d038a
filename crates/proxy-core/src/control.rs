//! [`Control`]: what the admin API may ask of the running proxy.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::audit::BlockedRecord;
use crate::gate::Failure;
use crate::target::{Mode, Protocol};

/// Why a control request failed; each kind has the admin API's status code.
///
/// ```
/// use proxy_core::ControlError;
/// assert_eq!(ControlError::Constraint("mode".into()).http_status(), 409);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The change would widen a managed constraint.
    #[error("{0}")]
    Constraint(String),
    /// The change itself is invalid (bad pattern, bad config file).
    #[error("{0}")]
    Invalid(String),
    /// The config files are invalid (a reload that was refused; the previous config stays).
    #[error("{0}")]
    InvalidConfig(String),
    /// The change needs a restart (a listener, `enable_*`, DNS, limits or otel key).
    #[error("{0}")]
    NeedsRestart(String),
    /// A reload was asked of a proxy whose config files are read once (`netproxy run`): nothing
    /// was re-read.
    #[error("{0}")]
    ReadOnce(String),
    /// The target could not be checked.
    #[error(transparent)]
    Failure(#[from] Failure),
    /// No such item (a pending decision that is not pending, or never was).
    #[error("{0}")]
    NotFound(String),
    /// The route needs a feature this proxy does not run with (pending decisions without
    /// `run --ask`).
    #[error("{0}")]
    NotAvailable(String),
    /// An approval could not be saved to its config file; the decision stays pending.
    #[error("{0}")]
    SaveFailed(String),
}

impl ControlError {
    /// The admin API's status code for this error.
    pub const fn http_status(&self) -> u16 {
        match self {
            ControlError::Constraint(_)
            | ControlError::NeedsRestart(_)
            | ControlError::ReadOnce(_)
            | ControlError::InvalidConfig(_)
            | ControlError::NotAvailable(_)
            | ControlError::SaveFailed(_) => 409,
            ControlError::Invalid(_) => 400,
            ControlError::NotFound(_) => 404,
            ControlError::Failure(f) => f.kind.http_status(),
        }
    }
}

/// The effective allow and deny patterns (`GET /patterns`).
///
/// ```
/// use proxy_core::PatternLists;
/// let p = PatternLists { allowed: vec!["**.github.com".into()], denied: vec![] };
/// assert_eq!(p.allowed.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternLists {
    /// Allow patterns, as written.
    pub allowed: Vec<String>,
    /// Deny patterns, as written.
    pub denied: Vec<String>,
}

/// A change to the runtime layer's domains: entries are added, or replace the same key.
///
/// ```
/// use proxy_core::DomainChange;
/// let c = DomainChange { allow: vec!["api.example.com".into()], ..Default::default() };
/// assert!(c.deny.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainChange {
    /// Patterns to allow.
    pub allow: Vec<String>,
    /// Patterns to deny.
    pub deny: Vec<String>,
}

/// The blocked-request buffer's content (`GET /blocked`).
///
/// ```
/// use proxy_core::BlockedView;
/// let v = BlockedView::default();
/// assert_eq!((v.blocked.len(), v.total), (0, 0));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockedView {
    /// The buffered refusals, oldest first.
    pub blocked: Vec<BlockedRecord>,
    /// Every refusal since start.
    pub total: u64,
}

/// One request to explain (`POST /check`): a URL, `host`, `host:port` or `[v6]:port`, with an
/// optional protocol and method (the defaults of `netproxy check`).
///
/// ```
/// use proxy_core::CheckQuery;
/// let q = CheckQuery { target: "https://api.github.com/".into(), ..Default::default() };
/// assert!(q.protocol.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckQuery {
    /// What to check.
    pub target: String,
    /// The protocol, when not the target's default.
    pub protocol: Option<Protocol>,
    /// The method, when not the protocol's default.
    pub method: Option<String>,
}

/// A person's answer to a request held for approval (`POST /pending/ID`, `run --ask`).
///
/// ```
/// use proxy_core::Approval;
/// assert_eq!("save".parse::<Approval>(), Ok(Approval::Save));
/// assert_eq!(Approval::Session.as_str(), "session");
/// assert!("always".parse::<Approval>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Approval {
    /// Allow the requests waiting now, and ask again next time.
    Once,
    /// Allow the target for the rest of the session.
    Session,
    /// Allow it for the session and add it to a config file.
    Save,
    /// Refuse the requests waiting now (`policy_denied`), and ask again next time.
    Deny,
}

impl Approval {
    /// Every answer.
    pub const ALL: [Approval; 4] = [
        Approval::Once,
        Approval::Session,
        Approval::Save,
        Approval::Deny,
    ];

    /// The wire name: `once`, `session`, `save` or `deny`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Approval::Once => "once",
            Approval::Session => "session",
            Approval::Save => "save",
            Approval::Deny => "deny",
        }
    }

    /// Whether the requests waiting get through.
    pub const fn allows(self) -> bool {
        !matches!(self, Approval::Deny)
    }
}

impl fmt::Display for Approval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown answer name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown choice {0:?} (expected once, session, save or deny)")]
pub struct UnknownApproval(pub String);

impl FromStr for Approval {
    type Err = UnknownApproval;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Approval::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownApproval(s.to_owned()))
    }
}

/// One target whose requests are held for an answer (`GET /pending`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDecision {
    /// The number to answer it by (`POST /pending/ID`).
    pub id: u64,
    /// The host, as canonicalised.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The protocol of the first request held.
    pub protocol: Protocol,
    /// Its method, if it has one.
    pub method: Option<String>,
    /// Its client.
    pub client: Option<SocketAddr>,
    /// When the first request was held, in seconds since the Unix epoch.
    pub since: u64,
    /// When the held requests are refused (`approval_timeout`) unless answered, in seconds
    /// since the Unix epoch.
    pub expires: u64,
    /// How many requests wait for this answer.
    pub waiting: usize,
}

/// The pending decisions and what was allowed for the session (`GET /pending`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingView {
    /// The targets waiting for an answer, oldest first.
    pub pending: Vec<PendingDecision>,
    /// The patterns allowed for the rest of the session by an answer (`session` or `save`).
    pub session: Vec<String>,
}

/// What an answer did (`POST /pending/ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The pending decision answered.
    pub id: u64,
    /// The answer.
    pub choice: Approval,
    /// Its host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// How many held requests the answer released (allowed or refused).
    pub released: usize,
    /// With `session` or `save`: the pattern allowed for the session.
    pub pattern: Option<String>,
    /// With `save`: the config file the pattern was added to.
    pub saved: Option<String>,
}

/// What the admin API may ask of the running proxy. Implemented by the proxy's assembly;
/// the admin API reaches the proxy through nothing else. A change is in force when its future
/// completes.
///
/// ```
/// use proxy_core::*;
/// /// A proxy whose config cannot change.
/// #[derive(Debug)]
/// struct Frozen;
/// impl Control for Frozen {
///     fn config_json(&self) -> String { "{}".into() }
///     fn patterns(&self) -> PatternLists { PatternLists::default() }
///     fn blocked(&self, _drain: bool) -> BlockedView { BlockedView::default() }
///     async fn set_mode(&self, _m: Mode) -> Result<(), ControlError> {
///         Err(ControlError::Constraint("mode is fixed".into()))
///     }
///     async fn update_domains(&self, _c: DomainChange) -> Result<(), ControlError> {
///         Err(ControlError::Constraint("domains are fixed".into()))
///     }
///     async fn reload(&self) -> Result<(), ControlError> { Ok(()) }
///     async fn check(&self, _q: CheckQuery) -> Result<String, ControlError> {
///         Ok(r#"{"decision":"deny"}"#.into())
///     }
///     fn metrics_text(&self) -> String { String::new() }
/// }
/// ```
pub trait Control: Send + Sync {
    /// The effective config as a JSON document, each value with its layer.
    fn config_json(&self) -> String;
    /// The credential broker's grants as a JSON document: by name and binding, never a value
    /// (`GET /credentials`). By default, a broker that is off.
    fn credentials_json(&self) -> String {
        r#"{"broker":false,"grants":[]}"#.to_owned()
    }
    /// The effective patterns.
    fn patterns(&self) -> PatternLists;
    /// The blocked-request buffer; `drain` empties it.
    fn blocked(&self, drain: bool) -> BlockedView;
    /// Sets the mode in the runtime layer.
    fn set_mode(&self, mode: Mode) -> impl Future<Output = Result<(), ControlError>> + Send;
    /// Adds or replaces domain entries in the runtime layer.
    fn update_domains(
        &self,
        change: DomainChange,
    ) -> impl Future<Output = Result<(), ControlError>> + Send;
    /// Re-reads the config files.
    fn reload(&self) -> impl Future<Output = Result<(), ControlError>> + Send;
    /// Explains the decision for one request without serving it, as the JSON document of
    /// `netproxy check --json` (the decision, reason, source, rule and layer). A target that
    /// cannot be parsed is [`ControlError::Invalid`].
    fn check(&self, query: CheckQuery)
    -> impl Future<Output = Result<String, ControlError>> + Send;
    /// The metrics in Prometheus text format.
    fn metrics_text(&self) -> String;
    /// The requests held for an answer (`GET /pending`). By default there are none to hold:
    /// [`ControlError::NotAvailable`].
    fn pending(&self) -> Result<PendingView, ControlError> {
        Err(ControlError::NotAvailable(NO_APPROVALS.to_owned()))
    }
    /// Answers a pending decision (`POST /pending/ID`): [`ControlError::NotFound`] when `id`
    /// is not pending. By default there are none: [`ControlError::NotAvailable`].
    fn answer_pending(
        &self,
        id: u64,
        choice: Approval,
    ) -> impl Future<Output = Result<Answered, ControlError>> + Send {
        let _ = (id, choice);
        std::future::ready(Err(ControlError::NotAvailable(NO_APPROVALS.to_owned())))
    }
}

/// Why a proxy without approvals has no pending decisions.
const NO_APPROVALS: &str =
    "no request is held for approval: pending decisions exist only under `netproxy run --ask`";
