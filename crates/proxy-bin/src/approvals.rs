//! Approvals (`netproxy run --ask`, docs/run.md "Approvals"): the table of requests held for
//! a person's answer, and the gate's [`Decider`] that fills it.
//!
//! The gate asks a decider about allowlist misses only (`not_allowed`); what a deny entry,
//! local protection or a managed constraint refuses never reaches it. [`Approvals`] holds such
//! a miss until someone answers, through the terminal (`run --ask`) or the admin API
//! (`GET /pending`, `POST /pending/ID`), or until its timeout, and then lets it through or
//! refuses it:
//!
//! - one pending entry per target (`host:port`): requests to a target that already waits join
//!   it and get the same answer;
//! - `once` lets the requests waiting now through, and the next one asks again; `deny`
//!   refuses them (`policy_denied`), and the next one asks again;
//! - `session` allows the target for the rest of the run (the host, or `host:port` for a port
//!   other than 80 and 443), releasing every waiting request it covers; `save` does the same
//!   and adds the pattern to a config file ([`save_allow`]), so that later runs allow it;
//! - nobody answers within the timeout: refused with `approval_timeout`;
//! - a request whose client gave up stops waiting; a target nobody waits for any more is no
//!   longer pending;
//! - SOCKS5 UDP datagrams are never held: a miss is refused at once (`not_allowed`), unless
//!   an answer allowed the target for the session.
//!
//! The dry run (`netproxy check`, `POST /check`) never holds anything: a miss there is an
//! `ask` verdict ([`Decider::explain`]).
//!
//! Approvals widen the allowlist, so they must not be offered where managed constraints fix
//! it: [`managed_refusal`] says when.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use proxy_core::{
    Answered, Approval, Decision, Host, PendingDecision, PendingView, Protocol, Reason,
    RequestMeta, Rule, Target,
};
use proxy_gate::{Decider, DeciderFuture};
use tokio::sync::watch;

/// How long a request waits for an answer by default before it is refused with
/// `approval_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The rule origin of what an answer allowed for the session (`--report`'s `layer`).
const ORIGIN: &str = "approval";

/// The largest config file [`save_allow`] reads.
const MAX_SAVED_FILE: u64 = 1024 * 1024;

/// The table of requests held for an answer, and the gate's [`Decider`] for `run --ask`.
/// Clones share the table.
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

struct Inner {
    timeout: Duration,
    /// Where `save` writes when the caller names no file.
    save_to: Option<PathBuf>,
    state: Mutex<State>,
    /// Told whenever a target starts or stops waiting.
    listeners: Mutex<Vec<Listener>>,
}

type Listener = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct State {
    next_id: u64,
    /// By id: oldest first.
    pending: BTreeMap<u64, Entry>,
    /// What answers allowed for the rest of the session.
    session: Vec<SessionEntry>,
}

/// One target whose requests wait for an answer.
struct Entry {
    host: Host,
    port: u16,
    protocol: Protocol,
    method: Option<String>,
    client: Option<std::net::SocketAddr>,
    since: SystemTime,
    deadline: tokio::time::Instant,
    waiting: usize,
    answer: watch::Sender<Option<Outcome>>,
}

/// A pattern an answer allowed for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SessionEntry {
    host: Host,
    /// `None`: every port.
    port: Option<u16>,
    pattern: String,
    /// Whether a `save` wrote it to a config file.
    saved: bool,
}

impl SessionEntry {
    fn covers(&self, host: &Host, port: u16) -> bool {
        self.host == *host && self.port.is_none_or(|p| p == port)
    }
}

/// What the requests waiting for one entry get.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Let through (by `once`, or by `session`/`save` with its pattern).
    Allowed(Option<String>),
    /// Refused by a `deny`.
    Denied,
    /// Nobody answered in time.
    TimedOut,
}

/// Why an answer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// No such pending decision (answered already, timed out, or abandoned).
    #[error("no pending decision {0} (answered already, timed out, or no request waits for it)")]
    NotFound(u64),
    /// `save` could not write its file; nothing changed and the decision stays pending.
    #[error("{0}")]
    Save(#[from] SaveError),
    /// `save` without a file, and no default file (neither `NETPROXY_HOME` nor `HOME` is
    /// set); the decision stays pending.
    #[error("no config file to save to (neither NETPROXY_HOME nor HOME is set)")]
    NoFile,
}

/// Why [`save_allow`] could not add a pattern to a config file. The file is left as it was.
#[derive(Debug, thiserror::Error)]
#[error("cannot save to {path}: {why}")]
pub struct SaveError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub why: String,
}

impl fmt::Debug for Approvals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Approvals")
            .field("timeout", &self.inner.timeout)
            .field("save_to", &self.inner.save_to)
            .finish_non_exhaustive()
    }
}

impl Approvals {
    /// A table whose requests wait at most `timeout`, and whose `save` writes to `save_to`
    /// unless the caller names a file (`None`: it must).
    pub fn new(timeout: Duration, save_to: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                timeout,
                save_to,
                state: Mutex::default(),
                listeners: Mutex::default(),
            }),
        }
    }

    /// How long a request waits for an answer.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Where `save` writes when no file is named.
    pub fn save_to(&self) -> Option<&Path> {
        self.inner.save_to.as_deref()
    }

    /// Calls `f` whenever a target starts or stops waiting (from the thread that changed
    /// the table; `f` must not block).
    pub fn on_change(&self, f: impl Fn() + Send + Sync + 'static) {
        lock(&self.inner.listeners).push(Box::new(f));
    }

    fn changed(&self) {
        for f in lock(&self.inner.listeners).iter() {
            f();
        }
    }

    /// The targets waiting now (oldest first), and what answers allowed for the session.
    pub fn view(&self) -> PendingView {
        let state = lock(&self.inner.state);
        let now = tokio::time::Instant::now();
        let pending = state
            .pending
            .iter()
            .map(|(id, e)| {
                let since = unix_seconds(e.since);
                let left = e.deadline.saturating_duration_since(now);
                PendingDecision {
                    id: *id,
                    host: e.host.to_string(),
                    port: e.port,
                    protocol: e.protocol,
                    method: e.method.clone(),
                    client: e.client,
                    since,
                    expires: unix_seconds(SystemTime::now() + left),
                    waiting: e.waiting,
                }
            })
            .collect();
        let session = state.session.iter().map(|s| s.pattern.clone()).collect();
        PendingView { pending, session }
    }

    /// The patterns answers allowed for this session only: never saved to a file.
    pub fn unsaved(&self) -> Vec<String> {
        lock(&self.inner.state)
            .session
            .iter()
            .filter(|s| !s.saved)
            .map(|s| s.pattern.clone())
            .collect()
    }

    /// Whether `id` still waits for an answer.
    pub fn is_pending(&self, id: u64) -> bool {
        lock(&self.inner.state).pending.contains_key(&id)
    }

    /// The pattern `session` and `save` would allow for a target: the host, or `host:port`
    /// for a port other than 80 and 443.
    pub fn pattern_for(host: &Host, port: u16) -> String {
        session_entry(host, port).pattern
    }

    /// Answers pending decision `id`; with `save`, the pattern goes to `file`, or to the
    /// default file ([`Approvals::save_to`]). A `save` that cannot write changes nothing: the
    /// decision stays pending. Blocks while it writes the file.
    pub fn answer(
        &self,
        id: u64,
        choice: Approval,
        file: Option<&Path>,
    ) -> Result<Answered, AnswerError> {
        let (host, port) = {
            let state = lock(&self.inner.state);
            let e = state.pending.get(&id).ok_or(AnswerError::NotFound(id))?;
            (e.host.clone(), e.port)
        };
        let allowed = session_entry(&host, port);
        let saved = if choice == Approval::Save {
            let path = file
                .or(self.inner.save_to.as_deref())
                .ok_or(AnswerError::NoFile)?;
            save_allow(path, &allowed.pattern)?;
            Some(path.display().to_string())
        } else {
            None
        };
        let released = {
            let mut state = lock(&self.inner.state);
            match choice {
                Approval::Once | Approval::Deny => {
                    // Timed out or abandoned since: there is nothing left to answer.
                    let e = state.pending.remove(&id).ok_or(AnswerError::NotFound(id))?;
                    let outcome = if choice == Approval::Once {
                        Outcome::Allowed(None)
                    } else {
                        Outcome::Denied
                    };
                    e.answer.send_replace(Some(outcome));
                    e.waiting
                }
                Approval::Session | Approval::Save => {
                    let saved = choice == Approval::Save;
                    match state
                        .session
                        .iter_mut()
                        .find(|s| s.pattern == allowed.pattern)
                    {
                        Some(s) => s.saved |= saved,
                        None => state.session.push(SessionEntry {
                            saved,
                            ..allowed.clone()
                        }),
                    }
                    // Every target the pattern covers is answered, this one included.
                    let covered: Vec<u64> = state
                        .pending
                        .iter()
                        .filter(|(_, e)| allowed.covers(&e.host, e.port))
                        .map(|(id, _)| *id)
                        .collect();
                    let mut released = 0;
                    for id in covered {
                        if let Some(e) = state.pending.remove(&id) {
                            e.answer.send_replace(Some(Outcome::Allowed(Some(
                                allowed.pattern.clone(),
                            ))));
                            released += e.waiting;
                        }
                    }
                    released
                }
            }
        };
        self.changed();
        Ok(Answered {
            id,
            choice,
            host: host.to_string(),
            port,
            released,
            pattern: matches!(choice, Approval::Session | Approval::Save)
                .then_some(allowed.pattern),
            saved,
        })
    }

    /// The pattern an answer allowed for the session that covers the target, if any.
    fn in_session(&self, host: &Host, port: u16) -> Option<String> {
        lock(&self.inner.state)
            .session
            .iter()
            .find(|s| s.covers(host, port))
            .map(|s| s.pattern.clone())
    }

    /// Holds a request to `host:port`: joins the target's pending entry, or makes one.
    fn hold(&self, meta: &RequestMeta, host: &Host, port: u16) -> Waiter {
        let mut state = lock(&self.inner.state);
        let joined = state
            .pending
            .iter_mut()
            .find(|(_, e)| e.host == *host && e.port == port);
        let (id, rx, deadline, new) = match joined {
            Some((id, e)) => {
                e.waiting += 1;
                (*id, e.answer.subscribe(), e.deadline, false)
            }
            None => {
                state.next_id += 1;
                let id = state.next_id;
                let (tx, rx) = watch::channel(None);
                let deadline = tokio::time::Instant::now() + self.inner.timeout;
                state.pending.insert(
                    id,
                    Entry {
                        host: host.clone(),
                        port,
                        protocol: meta.protocol,
                        method: meta.method.clone(),
                        client: meta.client,
                        since: SystemTime::now(),
                        deadline,
                        waiting: 1,
                        answer: tx,
                    },
                );
                (id, rx, deadline, true)
            }
        };
        drop(state);
        if new {
            self.changed();
        }
        Waiter {
            approvals: self.clone(),
            id,
            rx,
            deadline,
            done: false,
        }
    }
}

/// One held request. Dropped before it has its answer (its client gave up), it stops
/// waiting; the last one to go takes the target off the table.
struct Waiter {
    approvals: Approvals,
    id: u64,
    rx: watch::Receiver<Option<Outcome>>,
    deadline: tokio::time::Instant,
    done: bool,
}

impl Waiter {
    async fn outcome(mut self) -> Outcome {
        let answered = tokio::time::timeout_at(self.deadline, async {
            self.rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|o| o.clone())
        })
        .await;
        let outcome = match answered {
            Ok(Some(outcome)) => outcome,
            // The entry went without an answer: never happens while a request waits on it;
            // refused as unanswered.
            Ok(None) => Outcome::TimedOut,
            Err(_) => {
                let mut state = lock(&self.approvals.inner.state);
                // An answer may have come just now: it wins.
                let given = self.rx.borrow().clone();
                match given {
                    Some(outcome) => outcome,
                    None => {
                        if let Some(e) = state.pending.remove(&self.id) {
                            e.answer.send_replace(Some(Outcome::TimedOut));
                        }
                        drop(state);
                        self.approvals.changed();
                        Outcome::TimedOut
                    }
                }
            }
        };
        self.done = true;
        outcome
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = lock(&self.approvals.inner.state);
        let Some(e) = state.pending.get_mut(&self.id) else {
            return;
        };
        e.waiting = e.waiting.saturating_sub(1);
        if e.waiting > 0 {
            return;
        }
        state.pending.remove(&self.id);
        drop(state);
        self.approvals.changed();
    }
}

impl Decider for Approvals {
    fn decide<'a>(&'a self, meta: &'a RequestMeta) -> DeciderFuture<'a> {
        Box::pin(async move {
            let Target::Net { host, port } = &meta.target else {
                return Decision::deny(Reason::NotAllowed);
            };
            if let Some(pattern) = self.in_session(host, *port) {
                return allowed(Some(pattern));
            }
            if meta.protocol == Protocol::Socks5Udp {
                return udp_refusal();
            }
            match self.hold(meta, host, *port).outcome().await {
                Outcome::Allowed(pattern) => allowed(pattern),
                Outcome::Denied => Decision::deny(Reason::PolicyDenied)
                    .with_detail("refused by an answer to the approval request"),
                Outcome::TimedOut => Decision::deny(Reason::ApprovalTimeout).with_detail(format!(
                    "nobody answered the approval request within {} s",
                    self.inner.timeout.as_secs_f64()
                )),
            }
        })
    }

    fn explain<'a>(&'a self, meta: &'a RequestMeta) -> DeciderFuture<'a> {
        Box::pin(async move {
            let Target::Net { host, port } = &meta.target else {
                return Decision::deny(Reason::NotAllowed);
            };
            if let Some(pattern) = self.in_session(host, *port) {
                return allowed(Some(pattern));
            }
            if meta.protocol == Protocol::Socks5Udp {
                return udp_refusal();
            }
            Decision::ask(Reason::NotAllowed)
                .with_detail("not in the allowlist: a request would wait for an approval (--ask)")
        })
    }
}

/// What an answer let through: with `session`/`save`, the pattern it allowed.
fn allowed(pattern: Option<String>) -> Decision {
    match pattern {
        Some(p) => Decision::allow().with_rule(Rule::new(p, Some(ORIGIN.into()))),
        None => Decision::allow().with_detail("allowed once by an answer to the approval request"),
    }
}

fn udp_refusal() -> Decision {
    Decision::deny(Reason::NotAllowed)
        .with_detail("not in the allowlist; UDP datagrams are never held for approval")
}

/// The session entry for a target: its host on every port for 80 and 443, else `host:port`.
fn session_entry(host: &Host, port: u16) -> SessionEntry {
    if matches!(port, 80 | 443) {
        SessionEntry {
            host: host.clone(),
            port: None,
            pattern: host.to_string(),
            saved: false,
        }
    } else {
        SessionEntry {
            host: host.clone(),
            port: Some(port),
            pattern: format!("{}:{port}", host.to_uri_host()),
            saved: false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why approvals must not be offered under `config`'s managed constraints, naming the
/// requirements file and key: a managed-only allowlist (`managed_allowed_domains_only`), or
/// managed `allowed_domains` that users may not extend (`allowlist_expansion_enabled` not
/// `true`). What the managed constraints refuse is refused, without asking.
pub fn managed_refusal(config: &proxy_config::Config) -> Option<String> {
    config.requirements().iter().find_map(|r| {
        let file = r.origin.display();
        if r.managed_allowed_domains_only {
            Some(format!(
                "managed_allowed_domains_only in {file} pins the allowlist to the managed entries"
            ))
        } else if r.allowed_domains.is_some() && r.allowlist_expansion_enabled != Some(true) {
            Some(format!(
                "the managed allowed_domains in {file} cannot be extended (allowlist_expansion_enabled is not true)"
            ))
        } else {
            None
        }
    })
}

/// Adds `"PATTERN" = "allow"` to the `[network.domains]` table of the config file `path`
/// (of `[permissions.NAME.network.domains]` when the file selects a profile with
/// `default_permissions`), keeping the rest of the file as it is (comments and layout
/// included). A file that does not exist is created (mode 0600, its folder 0700 if missing).
///
/// The file is opened without following a symlink, must be a regular file, and is replaced
/// atomically by a new file written beside it, which must be a valid config file; its mode is
/// kept. A file that denies the pattern is left alone (an error says so); one that allows it
/// already is left as it is.
pub fn save_allow(path: &Path, pattern: &str) -> Result<(), SaveError> {
    let fail = |why: String| SaveError {
        path: path.to_owned(),
        why,
    };
    let (text, mode) = read_config(path).map_err(fail)?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        fail(format!("it is not valid TOML: {}", e.message()))
    })?;
    if !add_allow(&mut doc, pattern).map_err(fail)? {
        return Ok(());
    }
    write_replacing(path, &doc.to_string(), mode).map_err(fail)
}

/// The file's text and permission bits; empty text and 0600 when it does not exist.
fn read_config(path: &Path) -> Result<(String, u32), String> {
    use rustix::fs::{Mode, OFlags};
    let opened = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    );
    let fd = match opened {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok((String::new(), 0o600)),
        Err(rustix::io::Errno::LOOP) => {
            return Err("it is a symbolic link, which is not followed".to_owned());
        }
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("cannot stat it: {e}"))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err("it is not a regular file".to_owned());
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_SAVED_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if text.len() as u64 > MAX_SAVED_FILE {
        return Err(format!("it is over {} KiB", MAX_SAVED_FILE / 1024));
    }
    Ok((text, st.st_mode & 0o7777))
}

/// Adds the allow entry to `doc`: `Ok(false)` when it is there already.
fn add_allow(doc: &mut toml_edit::DocumentMut, pattern: &str) -> Result<bool, String> {
    let wanted = proxy_policy::Pattern::parse(pattern)
        .map_err(|e| format!("{pattern:?} is not a pattern: {e}"))?
        .key();
    let same = |key: &str| proxy_policy::Pattern::parse(key).is_ok_and(|p| p.key() == wanted);
    let profile = doc
        .get("default_permissions")
        .and_then(toml_edit::Item::as_str)
        .map(str::to_owned);
    let mut table: &mut dyn toml_edit::TableLike = doc.as_table_mut();
    let path: Vec<String> = match &profile {
        Some(name) => vec!["permissions".into(), name.clone(), "network".into()],
        None => vec!["network".into()],
    };
    for key in &path {
        if table.get(key).is_none() {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            table.insert(key, toml_edit::Item::Table(t));
        }
        table = table
            .get_mut(key)
            .and_then(toml_edit::Item::as_table_like_mut)
            .ok_or_else(|| format!("`{}` is not a table", path.join(".")))?;
    }
    let where_ = format!("{}.domains", path.join("."));
    // The list shapes: a deny there wins over the new entry; an allow there is enough.
    for (list, denies) in [("denied_domains", true), ("allowed_domains", false)] {
        let listed = table
            .get(list)
            .and_then(toml_edit::Item::as_array)
            .is_some_and(|a| a.iter().any(|v| v.as_str().is_some_and(same)));
        match (listed, denies) {
            (true, true) => {
                return Err(format!(
                    "it denies {pattern} (in {}.{list}): remove that entry to allow it",
                    path.join(".")
                ));
            }
            (true, false) => return Ok(false),
            _ => {}
        }
    }
    if table.get("domains").is_none() {
        table.insert("domains", toml_edit::Item::Table(toml_edit::Table::new()));
    }
    let domains = table
        .get_mut("domains")
        .and_then(toml_edit::Item::as_table_like_mut)
        .ok_or_else(|| format!("`{where_}` is not a table"))?;
    let existing: Vec<(String, Option<String>)> = domains
        .iter()
        .filter(|(k, _)| same(k))
        .map(|(k, v)| (k.to_owned(), v.as_str().map(str::to_owned)))
        .collect();
    if let Some((key, _)) = existing.iter().find(|(_, a)| a.as_deref() != Some("allow")) {
        return Err(format!(
            "it denies {pattern} ({where_}.{key:?}): remove that entry to allow it"
        ));
    }
    if !existing.is_empty() {
        return Ok(false);
    }
    domains.insert(pattern, toml_edit::value("allow"));
    Ok(true)
}

/// Writes `text` to a new file beside `path` (mode `mode`), checks that it is a valid config
/// file, and renames it over `path` (a symlink there is replaced, never followed).
fn write_replacing(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use rustix::fs::{Mode, OFlags};
    let name = path
        .file_name()
        .ok_or_else(|| "it names no file".to_owned())?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create its folder: {e}"))?;
    }
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| format!("no random bytes for a file name: {e}"))?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{}.netproxy-{suffix}", name.to_string_lossy()));
    let fd = rustix::fs::open(
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode & 0o777),
    )
    .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let written = (|| {
        // The mode asked for, whatever the umask took away.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))
            .map_err(|e| format!("cannot set the mode of {}: {e}", tmp.display()))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        proxy_config::validate_files(std::slice::from_ref(&tmp)).map_err(|e| {
            let shown = tmp.display().to_string();
            format!(
                "the file would not be a valid config ({})",
                e.to_string().replace(&shown, &path.display().to_string())
            )
        })?;
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace it: {e}"))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests;
