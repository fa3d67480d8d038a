//! What `netproxy run` remembers of a session: the refused and the failed targets for the
//! summary printed at exit, and, with `--report FILE`, every decision written to that file as
//! it happens.
//!
//! Refused is not failed: a refusal is the policy's (`decision` deny or ask), a failure is a
//! target the policy allowed that could not be reached (an event with a `failure`,
//! [`AuditEvent::failure`]). They are counted, summarised and reported apart.
//!
//! The report is one JSON object, streamed so that a long session does not hold its decisions
//! in memory: `{"decisions":[{...},...],"blocked_total":N,"blocked_targets":[...],
//! "blocked_targets_folded":N,"failed_total":N,"failed_targets":[...],
//! "failed_targets_folded":N,"targets":[...],"targets_folded":N,"command":P,"arguments":N,
//! "started":T,"duration_ms":N,"exit_code":N}`: `command` is the program run, `arguments` how
//! many arguments it was given (they are left out: they may hold URLs and credentials). Each decision has `timestamp`, `decision`,
//! `reason`, `source`, `protocol`, `host`, `port`, `method`, `client`, `mode`, `rule` and
//! `layer`, and `learn: true` in learn mode (never a URL path, a query or a credential), and a
//! failure also `failure` (`{"reason","message"}`). `blocked_targets` counts the refused
//! requests of each target and reason (`{"target","reason","count","remedy"}`, in the order
//! first seen; `remedy` the smallest change that would allow it, on the command line, or null)
//! for the first [`REPORT_TARGETS`] of them; `failed_targets` the failed ones (with the first
//! failure's `message`); the `_folded` counts are the requests to targets past that bound.
//! `targets` counts each target's requests (`{"target","allowed","blocked","failed"}`:
//! `allowed` the requests admitted, a connection then attempted; `failed` those that failed,
//! before or after admission). Memory stays bounded whatever the number of targets.
//!
//! ```
//! use proxy_audit::RunRecorder;
//! use proxy_core::{AuditEvent, AuditSink, Decision, Failure, Mode, Protocol, Reason, RequestMeta, Target, UpstreamFailure};
//! let rec = RunRecorder::new();
//! let meta = RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority("evil.example:443", 443).unwrap());
//! rec.record(&AuditEvent::new(&meta, &Decision::deny(Reason::Denied), Mode::Full));
//! rec.record(&AuditEvent::new(&meta, &Decision::deny(Reason::Denied), Mode::Full));
//! let gone = RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority("api.example.com:443", 443).unwrap());
//! let f = Failure::new(UpstreamFailure::DnsFailed, "the name api.example.com does not exist (NXDOMAIN)");
//! rec.record(&AuditEvent::failure(&gone, &Decision::allow(), &f, Mode::Full));
//! assert_eq!(
//!     rec.summary().as_deref(),
//!     Some("netproxy: blocked 2 requests: evil.example:443 (denied)\n\
//!           netproxy: failed 1 request: api.example.com:443 (dns_failed)")
//! );
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use proxy_core::{AuditEvent, AuditSink, Verdict};

/// How many blocked (and how many failed) targets the summary names; it counts the rest.
pub const SUMMARY_TARGETS: usize = 20;

/// How many distinct blocked targets (with their reason) are counted one by one; refusals of
/// further targets are only counted together. The same bound holds for failed targets and for
/// the per-target totals.
pub const REPORT_TARGETS: usize = 10_000;

/// Where the live notices go ([`RunRecorder::with_notices`]).
type NoticeSink = Box<dyn Fn(String) + Send + Sync>;

/// Records a `run` session's decisions.
pub struct RunRecorder {
    inner: Mutex<Inner>,
    started: (Instant, SystemTime),
    notices: Option<NoticeSink>,
}

impl std::fmt::Debug for RunRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunRecorder")
            .field("inner", &self.inner)
            .field("notices", &self.notices.is_some())
            .finish()
    }
}

impl Default for RunRecorder {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            started: (Instant::now(), SystemTime::now()),
            notices: None,
        }
    }
}

/// A short phrase for a refusal's reason, as a notice says it (`not in allowlist`).
fn reason_phrase(reason: &str) -> &str {
    use proxy_core::Reason as R;
    match reason.parse::<R>() {
        Ok(R::Denied) => "denied",
        Ok(R::NotAllowed) => "not in allowlist",
        Ok(R::NotAllowedLocal) => "local address",
        Ok(R::InvalidHost) => "invalid host",
        Ok(R::MethodNotAllowed) => "method not allowed in limited mode",
        Ok(R::MitmRequired) => "needs HTTPS interception",
        Ok(R::MitmHookDenied) => "refused by MITM hooks",
        Ok(R::ProxyDisabled) => "proxy disabled",
        Ok(R::CredentialNotBound) => "credential not bound here",
        Ok(R::SniMismatch) => "TLS server name differs",
        Ok(R::PolicyDenied) => "refused by policy",
        Ok(R::UnixSocketCrossOrigin) => "not from a local client",
        Ok(R::DnsNotServed) => "name lookup not served",
        Ok(R::ApprovalTimeout) => "nobody answered in time",
        Err(_) => reason,
    }
}

/// A short phrase for a failure, as a notice says it (`name not resolved`).
fn failure_phrase(kind: proxy_core::UpstreamFailure) -> &'static str {
    use proxy_core::UpstreamFailure as F;
    match kind {
        F::DnsFailed => "name not resolved",
        F::ConnectFailed | F::ConnectRefused => "connection failed",
        F::UpstreamTlsFailed => "TLS failed",
        F::UpstreamTimeout => "no answer in time",
        F::UpstreamError => "broken answer",
    }
}

/// The live notice of a refusal or a failure, the first time its target is seen (docs/run.md,
/// "Notices"): `netproxy: refused other.test:443 (not in allowlist) — allow with --allow
/// other.test`, `netproxy: failed gone.test:80 (name not resolved) — the name gone.test does
/// not exist (NXDOMAIN)`.
fn notice(ev: &AuditEvent, target: &str) -> String {
    match &ev.failure {
        Some(f) => format!(
            "netproxy: failed {target} ({}) \u{2014} {}",
            failure_phrase(f.kind),
            f.message
        ),
        None => {
            let why = reason_phrase(ev.reason);
            match &ev.remedy {
                Some(remedy) => format!("netproxy: refused {target} ({why}) \u{2014} {remedy}"),
                None => format!("netproxy: refused {target} ({why})"),
            }
        }
    }
}

/// A target and the reason it was refused or failed for.
type TargetKey = (String, &'static str);

/// One refused or failed target: how many requests, and the note the summary and the report
/// give it (a refusal's remedy on the command line, a failure's first message).
#[derive(Debug)]
struct Seen {
    count: u64,
    note: Option<String>,
}

/// The refused (or the failed) requests: a total, and each target with its reason, in the
/// order first seen, for the first [`REPORT_TARGETS`].
#[derive(Debug, Default)]
struct Tally {
    total: u64,
    targets: Vec<(TargetKey, Seen)>,
    /// Index of each target in `targets`.
    index: HashMap<TargetKey, usize>,
    /// Requests to targets past [`REPORT_TARGETS`].
    folded: u64,
}

impl Tally {
    /// Counts one request to `key`; `note` is kept for a target seen the first time. Returns
    /// whether the target was new (and counted one by one).
    fn add(&mut self, key: TargetKey, note: impl FnOnce() -> Option<String>) -> bool {
        self.total = self.total.saturating_add(1);
        if let Some(&i) = self.index.get(&key) {
            self.targets[i].1.count += 1;
            false
        } else if self.targets.len() < REPORT_TARGETS {
            let i = self.targets.len();
            self.index.insert(key.clone(), i);
            self.targets.push((
                key,
                Seen {
                    count: 1,
                    note: note(),
                },
            ));
            true
        } else {
            self.folded = self.folded.saturating_add(1);
            false
        }
    }

    /// The summary's line: `netproxy: VERB N requests: TARGET (REASON), ...`, the first
    /// [`SUMMARY_TARGETS`] by name and the rest counted; `None` when nothing was counted.
    fn line(&self, verb: &str, shown: impl Fn(&TargetKey, &Seen) -> String) -> Option<String> {
        if self.total == 0 {
            return None;
        }
        let noun = if self.total == 1 {
            "request"
        } else {
            "requests"
        };
        let mut list = self
            .targets
            .iter()
            .take(SUMMARY_TARGETS)
            .map(|(k, seen)| shown(k, seen))
            .collect::<Vec<String>>()
            .join(", ");
        let rest = self.targets.len().saturating_sub(SUMMARY_TARGETS);
        if self.folded > 0 {
            list.push_str(&format!(", and over {rest} more targets"));
        } else if rest > 0 {
            let noun = if rest == 1 { "target" } else { "targets" };
            list.push_str(&format!(", and {rest} more {noun}"));
        }
        Some(format!("netproxy: {verb} {} {noun}: {list}", self.total))
    }
}

/// Each target's requests: admitted, refused, failed.
#[derive(Debug, Default)]
struct Totals {
    targets: Vec<(String, [u64; 3])>,
    index: HashMap<String, usize>,
    /// Requests to targets past [`REPORT_TARGETS`].
    folded: u64,
}

impl Totals {
    const ALLOWED: usize = 0;
    const BLOCKED: usize = 1;
    const FAILED: usize = 2;

    fn add(&mut self, target: &str, which: usize) {
        if let Some(&i) = self.index.get(target) {
            self.targets[i].1[which] += 1;
        } else if self.targets.len() < REPORT_TARGETS {
            let mut counts = [0; 3];
            counts[which] = 1;
            self.index.insert(target.to_owned(), self.targets.len());
            self.targets.push((target.to_owned(), counts));
        } else {
            self.folded = self.folded.saturating_add(1);
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    blocked: Tally,
    failed: Tally,
    /// Kept only for the report.
    totals: Totals,
    /// The program run and how many arguments it got, for the report.
    command: Option<(String, usize)>,
    report: Option<Report>,
}

#[derive(Debug)]
struct Report {
    path: PathBuf,
    out: BufWriter<File>,
    first: bool,
    error: Option<std::io::Error>,
}

impl Report {
    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(bytes)
        {
            self.error = Some(e);
        }
    }
}

/// Why the report could not be created, or written to the end.
#[derive(Debug)]
pub struct ReportError {
    path: PathBuf,
    /// False when the file could not even be created.
    created: bool,
    source: std::io::Error,
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (path, why) = (self.path.display(), proxy_core::io_error_text(&self.source));
        if self.created {
            write!(
                f,
                "the report {path} could not be written ({why}): it is incomplete"
            )
        } else {
            write!(f, "cannot create the report {path} ({why})")
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl RunRecorder {
    /// A recorder without a report file.
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorder that also writes every decision to `path`, created (or truncated) now with
    /// mode 0600; an error names the file.
    pub fn with_report(path: &Path) -> Result<Self, ReportError> {
        let rec = Self::new();
        let err = |source| ReportError {
            path: path.to_path_buf(),
            created: false,
            source,
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(path).map_err(err)?;
        let mut r = Report {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            first: true,
            error: None,
        };
        r.write(b"{\"decisions\":[");
        rec.lock().report = Some(r);
        Ok(rec)
    }

    /// Also tells `sink` of each refused or failed target the first time it is seen, as the
    /// one line of its live notice (docs/run.md, "Notices"): at most one a target and reason,
    /// and none past the [`REPORT_TARGETS`] targets counted one by one. `sink` is called on the
    /// request path, outside the recorder's lock: it must not block (hand the line to a
    /// thread).
    #[must_use]
    pub fn with_notices(mut self, sink: impl Fn(String) + Send + Sync + 'static) -> Self {
        self.notices = Some(Box::new(sink));
        self
    }

    /// The command the session runs: the report gives its program (`command`) and the number
    /// of its arguments (`arguments`), never the arguments themselves, which may hold URLs and
    /// credentials.
    pub fn set_command(&self, program: &str, arguments: usize) {
        self.lock().command = Some((program.to_owned(), arguments));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many requests were refused.
    pub fn blocked_total(&self) -> u64 {
        self.lock().blocked.total
    }

    /// How many requests failed (their target could not be reached).
    pub fn failed_total(&self) -> u64 {
        self.lock().failed.total
    }

    /// What is printed at exit (docs/run.md, "What was blocked or failed"), one line for the
    /// refused requests and one for the failed ones, each only when there were any: the count,
    /// then each target once with its reason (and for a refusal, the smallest change that
    /// would allow it, when there is one: `other.test:443 (not_allowed; --allow other.test)`),
    /// the first [`SUMMARY_TARGETS`] by name and the
    /// rest counted (`..., and 9980 more targets`; `and over N more targets` when some were
    /// past [`REPORT_TARGETS`] and not told apart). `None` when nothing was refused or failed.
    pub fn summary(&self) -> Option<String> {
        let g = self.lock();
        let blocked = g.blocked.line("blocked", |(t, r), seen| match &seen.note {
            Some(remedy) => format!("{t} ({r}; {remedy})"),
            None => format!("{t} ({r})"),
        });
        let failed = g.failed.line("failed", |(t, r), _| format!("{t} ({r})"));
        match (blocked, failed) {
            (Some(b), Some(f)) => Some(format!("{b}\n{f}")),
            (b, f) => b.or(f),
        }
    }

    /// Closes the report with the totals, the command, the session's duration and the
    /// child's exit code, and flushes it.
    pub fn finish(&self, exit_code: i32) -> Result<(), ReportError> {
        let mut g = self.lock();
        let Some(mut r) = g.report.take() else {
            return Ok(());
        };
        let list = |r: &mut Report, entries: &mut dyn Iterator<Item = serde_json::Value>| {
            for (i, entry) in entries.enumerate() {
                if i > 0 {
                    r.write(b",");
                }
                r.write(b"\n");
                r.write(entry.to_string().as_bytes());
            }
        };
        r.write(
            format!(
                "],\"blocked_total\":{},\"blocked_targets\":[",
                g.blocked.total
            )
            .as_bytes(),
        );
        list(
            &mut r,
            &mut g.blocked.targets.iter().map(|((target, reason), seen)| {
                serde_json::json!({"target": target, "reason": reason, "count": seen.count, "remedy": seen.note})
            }),
        );
        r.write(
            format!(
                "],\"blocked_targets_folded\":{},\"failed_total\":{},\"failed_targets\":[",
                g.blocked.folded, g.failed.total
            )
            .as_bytes(),
        );
        list(
            &mut r,
            &mut g.failed.targets.iter().map(|((target, reason), seen)| {
                serde_json::json!({"target": target, "reason": reason, "count": seen.count, "message": seen.note})
            }),
        );
        r.write(
            format!(
                "],\"failed_targets_folded\":{},\"targets\":[",
                g.failed.folded
            )
            .as_bytes(),
        );
        list(
            &mut r,
            &mut g.totals.targets.iter().map(|(target, [allowed, blocked, failed])| {
                serde_json::json!({"target": target, "allowed": allowed, "blocked": blocked, "failed": failed})
            }),
        );
        let tail = serde_json::json!({
            "command": g.command.as_ref().map(|(p, _)| p),
            "arguments": g.command.as_ref().map(|(_, n)| n),
            "started": crate::rfc3339_millis(self.started.1),
            "duration_ms": u64::try_from(self.started.0.elapsed().as_millis()).unwrap_or(u64::MAX),
            "exit_code": exit_code,
        })
        .to_string();
        // `{"command":...}` without its braces, after the lists.
        let tail = format!(
            "],\"targets_folded\":{},{}}}\n",
            g.totals.folded,
            &tail[1..tail.len() - 1]
        );
        r.write(tail.as_bytes());
        if r.error.is_none()
            && let Err(e) = r.out.flush()
        {
            r.error = Some(e);
        }
        match r.error {
            Some(source) => Err(ReportError {
                path: r.path,
                created: true,
                source,
            }),
            None => Ok(()),
        }
    }
}

/// `host:port`, with an IPv6 host in brackets.
fn target_of(ev: &AuditEvent) -> String {
    if ev.server_address.contains(':') {
        format!("[{}]:{}", ev.server_address, ev.server_port)
    } else {
        format!("{}:{}", ev.server_address, ev.server_port)
    }
}

fn decision_json(ev: &AuditEvent) -> serde_json::Value {
    let mut v = serde_json::json!({
        "timestamp": crate::rfc3339_millis(ev.timestamp),
        "decision": ev.decision.as_str(),
        "reason": ev.reason,
        "source": ev.source.as_str(),
        "protocol": ev.protocol.as_str(),
        "host": ev.server_address,
        "port": ev.server_port,
        "method": ev.method,
        "client": ev.client.map(|c| c.to_string()),
        "mode": ev.mode.as_str(),
        "rule": ev.rule.as_ref().map(|r| r.pattern.to_string()),
        "layer": ev.rule.as_ref().and_then(|r| r.origin.as_ref().map(ToString::to_string)),
    });
    // Only in learn mode (`netproxy suggest` reads it back).
    if ev.learn {
        v["learn"] = serde_json::Value::Bool(true);
    }
    if let (Some(f), Some(map)) = (&ev.failure, v.as_object_mut()) {
        map.insert(
            "failure".to_owned(),
            serde_json::json!({"reason": f.kind.as_str(), "message": f.message}),
        );
    }
    v
}

impl AuditSink for RunRecorder {
    fn record(&self, ev: &AuditEvent) {
        let mut g = self.lock();
        let target = target_of(ev);
        let first = if let Some(f) = &ev.failure {
            g.totals.add(&target, Totals::FAILED);
            g.failed
                .add((target.clone(), ev.reason), || Some(f.message.clone()))
        } else if ev.decision != Verdict::Allow {
            g.totals.add(&target, Totals::BLOCKED);
            g.blocked.add((target.clone(), ev.reason), || {
                ev.remedy.as_ref().map(proxy_core::Remedy::command_line)
            })
        } else {
            g.totals.add(&target, Totals::ALLOWED);
            false
        };
        if let Some(r) = g.report.as_mut() {
            let line = decision_json(ev).to_string();
            if !r.first {
                r.write(b",");
            }
            r.first = false;
            r.write(b"\n");
            r.write(line.as_bytes());
        }
        drop(g);
        if first && let Some(sink) = &self.notices {
            sink(notice(ev, &target));
        }
    }
}

#[cfg(test)]
mod tests {
    use proxy_core::{
        Decision, Failure, Mode, Protocol, Reason, RequestMeta, Target, UpstreamFailure,
    };

    use super::*;

    fn ev(authority: &str, d: &Decision) -> AuditEvent {
        let meta = RequestMeta::new(
            Protocol::Http,
            Target::parse_authority(authority, 80).unwrap(),
        )
        .with_method("GET");
        AuditEvent::new(&meta, d, Mode::Full)
    }

    #[test]
    fn nothing_blocked_means_no_summary() {
        let rec = RunRecorder::new();
        rec.record(&ev("ok.example", &Decision::allow()));
        assert_eq!(rec.summary(), None);
    }

    #[test]
    fn the_summary_lists_each_target_once_in_order() {
        let rec = RunRecorder::new();
        rec.record(&ev("evil.example:443", &Decision::deny(Reason::Denied)));
        rec.record(&ev("10.0.0.5:80", &Decision::deny(Reason::NotAllowedLocal)));
        rec.record(&ev("evil.example:443", &Decision::deny(Reason::Denied)));
        rec.record(&ev("[::1]:8080", &Decision::deny(Reason::NotAllowedLocal)));
        assert_eq!(
            rec.summary().unwrap(),
            "netproxy: blocked 4 requests: evil.example:443 (denied), 10.0.0.5:80 \
             (not_allowed_local), [::1]:8080 (not_allowed_local)"
        );
        let one = RunRecorder::new();
        one.record(&ev("evil.example", &Decision::deny(Reason::Denied)));
        assert_eq!(
            one.summary().unwrap(),
            "netproxy: blocked 1 request: evil.example:80 (denied)"
        );
    }

    #[test]
    fn the_report_is_one_json_document_with_every_decision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let rec = RunRecorder::with_report(&path).unwrap();
        rec.record(&ev("ok.example", &Decision::allow()));
        rec.record(&ev("evil.example", &Decision::deny(Reason::Denied)));
        rec.finish(3).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let d = v["decisions"].as_array().unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0]["decision"], "allow");
        assert_eq!(d[1]["host"], "evil.example");
        assert_eq!(d[1]["reason"], "denied");
        assert_eq!(d[1]["method"], "GET");
        assert_eq!(v["blocked_total"], 1);
        assert_eq!(v["exit_code"], 3);
        assert_eq!(
            v["blocked_targets"],
            serde_json::json!([{"target": "evil.example:80", "reason": "denied", "count": 1, "remedy": null}])
        );
        assert_eq!(v["blocked_targets_folded"], 0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn refused_name_lookups_are_blocked_targets_in_the_summary_and_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let rec = RunRecorder::with_report(&path).unwrap();
        let client = "127.0.0.1:40000".parse().unwrap();
        let lookup = |name: &str| {
            AuditEvent::dns_not_served(name.split('.').map(str::as_bytes), 53, client, Mode::Full)
        };
        rec.record(&lookup("Example.COM"));
        rec.record(&ev("evil.example:443", &Decision::deny(Reason::Denied)));
        rec.record(&lookup("example.com"));
        assert_eq!(
            rec.summary().unwrap(),
            "netproxy: blocked 3 requests: example.com:53 (dns_not_served), evil.example:443 (denied)"
        );
        rec.finish(0).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let d = &v["decisions"][0];
        assert_eq!(
            (
                &d["protocol"],
                &d["decision"],
                &d["reason"],
                &d["source"],
                &d["host"],
                &d["port"],
                &d["client"],
                &d["method"]
            ),
            (
                &serde_json::json!("dns"),
                &serde_json::json!("deny"),
                &serde_json::json!("dns_not_served"),
                &serde_json::json!("proxy_state"),
                &serde_json::json!("example.com"),
                &serde_json::json!(53),
                &serde_json::json!("127.0.0.1:40000"),
                &serde_json::Value::Null
            )
        );
        assert_eq!(
            v["blocked_targets"][0],
            serde_json::json!({"target": "example.com:53", "reason": "dns_not_served", "count": 2, "remedy": null})
        );
    }

    fn failed(authority: &str, kind: UpstreamFailure, message: &str) -> AuditEvent {
        let meta = RequestMeta::new(
            Protocol::HttpsConnect,
            Target::parse_authority(authority, 443).unwrap(),
        )
        .with_method("CONNECT");
        let allowed = Decision::allow().with_rule(proxy_core::Rule::new("*.test", None));
        AuditEvent::failure(&meta, &allowed, &Failure::new(kind, message), Mode::Full)
    }

    /// A failure is never a refusal: its own line, its own list in the report, and its own
    /// count per target.
    #[test]
    fn failures_are_counted_and_reported_apart_from_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let rec = RunRecorder::with_report(&path).unwrap();
        rec.set_command("curl", 2);
        let nx = "the name gone.test does not exist (NXDOMAIN)";
        rec.record(&failed("gone.test:443", UpstreamFailure::DnsFailed, nx));
        rec.record(&ev("evil.test:80", &Decision::deny(Reason::NotAllowed)));
        rec.record(&ev("closed.test:1", &Decision::allow()));
        rec.record(&failed(
            "closed.test:1",
            UpstreamFailure::ConnectRefused,
            "could not connect to 127.0.0.2:1 (the connection was refused)",
        ));
        rec.record(&failed(
            "gone.test:443",
            UpstreamFailure::DnsFailed,
            "again",
        ));
        assert_eq!((rec.blocked_total(), rec.failed_total()), (1, 3));
        assert_eq!(
            rec.summary().unwrap(),
            "netproxy: blocked 1 request: evil.test:80 (not_allowed)\n\
             netproxy: failed 3 requests: gone.test:443 (dns_failed), closed.test:1 (connect_failed)"
        );
        // Failures alone: one line.
        let only = RunRecorder::new();
        only.record(&failed("gone.test:443", UpstreamFailure::DnsFailed, nx));
        assert_eq!(
            only.summary().unwrap(),
            "netproxy: failed 1 request: gone.test:443 (dns_failed)"
        );
        rec.finish(7).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["blocked_total"], 1);
        assert_eq!(v["failed_total"], 3);
        assert_eq!(
            v["failed_targets"],
            serde_json::json!([
                {"target": "gone.test:443", "reason": "dns_failed", "count": 2, "message": nx},
                {"target": "closed.test:1", "reason": "connect_failed", "count": 1,
                 "message": "could not connect to 127.0.0.2:1 (the connection was refused)"},
            ])
        );
        assert_eq!(v["failed_targets_folded"], 0);
        assert_eq!(
            v["targets"],
            serde_json::json!([
                {"target": "gone.test:443", "allowed": 0, "blocked": 0, "failed": 2},
                {"target": "evil.test:80", "allowed": 0, "blocked": 1, "failed": 0},
                {"target": "closed.test:1", "allowed": 1, "blocked": 0, "failed": 1},
            ])
        );
        assert_eq!(v["targets_folded"], 0);
        assert_eq!(
            (&v["command"], &v["arguments"]),
            (&"curl".into(), &2.into())
        );
        assert!(v["duration_ms"].is_u64(), "{v}");
        assert!(v["started"].as_str().unwrap().ends_with('Z'), "{v}");
        assert_eq!(v["exit_code"], 7);
        let d = v["decisions"].as_array().unwrap();
        assert_eq!(d.len(), 5);
        assert_eq!(
            (&d[0]["decision"], &d[0]["reason"], &d[0]["rule"]),
            (
                &serde_json::json!("allow"),
                &serde_json::json!("dns_failed"),
                &serde_json::json!("*.test")
            )
        );
        assert_eq!(
            d[0]["failure"],
            serde_json::json!({"reason": "dns_failed", "message": nx})
        );
        assert!(d[1].get("failure").is_none(), "{}", d[1]);
    }

    /// A refusal's remedy (the first seen for its target) follows its reason in the summary
    /// and is in the report.
    #[test]
    fn refusals_name_their_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let rec = RunRecorder::with_report(&path).unwrap();
        let mut refused = ev("other.test:443", &Decision::deny(Reason::NotAllowed));
        refused.remedy = Some(proxy_core::Remedy::Allow {
            pattern: "other.test".into(),
        });
        rec.record(&refused);
        rec.record(&refused);
        rec.record(&ev("10.0.0.5:80", &Decision::deny(Reason::InvalidHost)));
        assert_eq!(
            rec.summary().unwrap(),
            "netproxy: blocked 3 requests: other.test:443 (not_allowed; --allow other.test), 10.0.0.5:80 (invalid_host)"
        );
        rec.finish(0).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["blocked_targets"][0]["remedy"], "--allow other.test");
        assert!(v["blocked_targets"][1]["remedy"].is_null());
    }

    /// Each refused or failed target is told once, as it happens, with its remedy or what
    /// failed.
    #[test]
    fn each_refused_or_failed_target_is_noticed_once() {
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let rec = RunRecorder::new().with_notices(move |line| seen.lock().unwrap().push(line));
        let mut refused = ev("other.test:443", &Decision::deny(Reason::NotAllowed));
        refused.remedy = Some(proxy_core::Remedy::Allow {
            pattern: "other.test".into(),
        });
        rec.record(&refused);
        rec.record(&refused);
        rec.record(&ev("ok.test:80", &Decision::allow()));
        rec.record(&ev("[::1]:80", &Decision::deny(Reason::InvalidHost)));
        let nx = "the name gone.test does not exist (NXDOMAIN)";
        rec.record(&failed("gone.test:443", UpstreamFailure::DnsFailed, nx));
        rec.record(&failed("gone.test:443", UpstreamFailure::DnsFailed, nx));
        assert_eq!(
            *lines.lock().unwrap(),
            [
                "netproxy: refused other.test:443 (not in allowlist) \u{2014} allow with --allow other.test",
                "netproxy: refused [::1]:80 (invalid host)",
                "netproxy: failed gone.test:443 (name not resolved) \u{2014} the name gone.test does not exist (NXDOMAIN)",
            ]
        );
    }

    /// A report that cannot be written says so, naming the file and why in plain words.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_report_that_cannot_be_written_says_so() {
        let rec = RunRecorder::with_report(Path::new("/dev/full")).unwrap();
        rec.record(&ev("evil.test:80", &Decision::deny(Reason::NotAllowed)));
        let e = rec.finish(0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the report /dev/full could not be written (no space left on device): it is incomplete"
        );
    }

    #[test]
    fn past_twenty_targets_the_summary_counts_the_rest() {
        let rec = RunRecorder::new();
        for i in 0..25 {
            rec.record(&ev(
                &format!("t{i}.example:1"),
                &Decision::deny(Reason::Denied),
            ));
        }
        rec.record(&ev("t0.example:1", &Decision::deny(Reason::Denied)));
        let s = rec.summary().unwrap();
        let named: Vec<String> = (0..20)
            .map(|i| format!("t{i}.example:1 (denied)"))
            .collect();
        assert_eq!(
            s,
            format!(
                "netproxy: blocked 26 requests: {}, and 5 more targets",
                named.join(", ")
            )
        );
        let rec = RunRecorder::new();
        for i in 0..21 {
            rec.record(&ev(
                &format!("t{i}.example:1"),
                &Decision::deny(Reason::Denied),
            ));
        }
        assert!(rec.summary().unwrap().ends_with(", and 1 more target"));
    }

    #[test]
    fn a_hundred_thousand_targets_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let rec = RunRecorder::with_report(&path).unwrap();
        let n: u32 = 100_000;
        for i in 0..n {
            let [a, b, c, d] = (0x0a00_0000 + i).to_be_bytes();
            rec.record(&ev(
                &format!("{a}.{b}.{c}.{d}:9"),
                &Decision::deny(Reason::NotAllowedLocal),
            ));
        }
        // The first target again: still counted one by one.
        rec.record(&ev("10.0.0.0:9", &Decision::deny(Reason::NotAllowedLocal)));
        {
            let g = rec.lock();
            assert_eq!(g.blocked.targets.len(), REPORT_TARGETS);
            assert_eq!(g.blocked.index.len(), REPORT_TARGETS);
            assert_eq!(g.blocked.folded, u64::from(n) - REPORT_TARGETS as u64);
            assert_eq!(g.totals.targets.len(), REPORT_TARGETS);
            assert_eq!(g.totals.folded, u64::from(n) - REPORT_TARGETS as u64);
        }
        let s = rec.summary().unwrap();
        assert!(
            s.starts_with(
                "netproxy: blocked 100001 requests: 10.0.0.0:9 (not_allowed_local), 10.0.0.1:9"
            ),
            "{s}"
        );
        assert!(s.ends_with(", and over 9980 more targets"), "{s}");
        assert!(s.len() < 1000, "{}", s.len());
        rec.finish(0).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["decisions"].as_array().unwrap().len(), 100_001);
        assert_eq!(v["blocked_total"], 100_001);
        let targets = v["blocked_targets"].as_array().unwrap();
        assert_eq!(targets.len(), REPORT_TARGETS);
        assert_eq!(
            targets[0],
            serde_json::json!({"target": "10.0.0.0:9", "reason": "not_allowed_local", "count": 2, "remedy": null})
        );
        assert_eq!(targets[REPORT_TARGETS - 1]["count"], 1);
        assert_eq!(
            v["blocked_targets_folded"],
            u64::from(n) - REPORT_TARGETS as u64
        );
    }

    #[test]
    fn an_empty_report_is_still_valid_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let rec = RunRecorder::with_report(&path).unwrap();
        rec.finish(0).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["decisions"].as_array().unwrap().len(), 0);
    }
}
