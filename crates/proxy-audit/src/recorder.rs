//! What `netproxy run` remembers of a session: the blocked targets for the summary printed at
//! exit, and, with `--report FILE`, every decision written to that file as it happens.
//!
//! The report is one JSON object, streamed so that a long session does not hold its decisions
//! in memory: `{"decisions":[{...},...],"blocked_total":N,"blocked_targets":[...],
//! "blocked_targets_folded":N,"exit_code":N}`. Each decision has `timestamp`, `decision`,
//! `reason`, `source`, `protocol`, `host`, `port`, `method`, `client`, `mode`, `rule` and
//! `layer`, and `learn: true` in learn mode (never a URL path, a query or a credential).
//! `blocked_targets` counts the refused requests of each target and reason
//! (`{"target","reason","count"}`, in the order first seen) for the first [`REPORT_TARGETS`]
//! of them; `blocked_targets_folded` counts the refused requests to targets past that bound.
//! Memory stays bounded whatever the number of targets.
//!
//! ```
//! use proxy_audit::RunRecorder;
//! use proxy_core::{AuditEvent, AuditSink, Decision, Mode, Protocol, Reason, RequestMeta, Target};
//! let rec = RunRecorder::new();
//! let meta = RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority("evil.example:443", 443).unwrap());
//! rec.record(&AuditEvent::new(&meta, &Decision::deny(Reason::Denied), Mode::Full));
//! rec.record(&AuditEvent::new(&meta, &Decision::deny(Reason::Denied), Mode::Full));
//! assert_eq!(
//!     rec.summary().as_deref(),
//!     Some("netproxy: blocked 2 requests: evil.example:443 (denied)")
//! );
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use proxy_core::{AuditEvent, AuditSink, Verdict};

/// How many blocked targets the summary names; it counts the rest.
pub const SUMMARY_TARGETS: usize = 20;

/// How many distinct blocked targets (with their reason) are counted one by one; refusals of
/// further targets are only counted together.
pub const REPORT_TARGETS: usize = 10_000;

/// Records a `run` session's decisions.
#[derive(Debug, Default)]
pub struct RunRecorder {
    inner: Mutex<Inner>,
}

/// A blocked target and the reason it was refused for.
type TargetKey = (String, &'static str);

#[derive(Debug, Default)]
struct Inner {
    blocked_total: u64,
    /// Blocked targets with their reason and count, in the order first seen; at most
    /// [`REPORT_TARGETS`].
    targets: Vec<(TargetKey, u64)>,
    /// Index of each target in `targets`.
    index: HashMap<TargetKey, usize>,
    /// Refused requests to targets past [`REPORT_TARGETS`].
    folded: u64,
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

/// Why the report could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the report {}: {source}", path.display())]
pub struct ReportError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many requests were refused.
    pub fn blocked_total(&self) -> u64 {
        self.lock().blocked_total
    }

    /// The line printed at exit when anything was blocked (docs/run.md): the count, then
    /// each blocked target once with its reason, the first [`SUMMARY_TARGETS`] by name and the
    /// rest counted (`..., and 9980 more targets`; `and over N more targets` when some were
    /// past [`REPORT_TARGETS`] and not told apart).
    pub fn summary(&self) -> Option<String> {
        let g = self.lock();
        if g.blocked_total == 0 {
            return None;
        }
        let noun = if g.blocked_total == 1 {
            "request"
        } else {
            "requests"
        };
        let mut list = g
            .targets
            .iter()
            .take(SUMMARY_TARGETS)
            .map(|((t, r), _)| format!("{t} ({r})"))
            .collect::<Vec<String>>()
            .join(", ");
        let rest = g.targets.len().saturating_sub(SUMMARY_TARGETS);
        if g.folded > 0 {
            list.push_str(&format!(", and over {rest} more targets"));
        } else if rest > 0 {
            let noun = if rest == 1 { "target" } else { "targets" };
            list.push_str(&format!(", and {rest} more {noun}"));
        }
        Some(format!(
            "netproxy: blocked {} {noun}: {list}",
            g.blocked_total
        ))
    }

    /// Closes the report with the totals and the child's exit code, and flushes it.
    pub fn finish(&self, exit_code: i32) -> Result<(), ReportError> {
        let mut g = self.lock();
        let total = g.blocked_total;
        let Some(mut r) = g.report.take() else {
            return Ok(());
        };
        r.write(format!("],\"blocked_total\":{total},\"blocked_targets\":[").as_bytes());
        for (i, ((target, reason), count)) in g.targets.iter().enumerate() {
            if i > 0 {
                r.write(b",");
            }
            r.write(b"\n");
            let entry = serde_json::json!({"target": target, "reason": reason, "count": count});
            r.write(entry.to_string().as_bytes());
        }
        let tail = format!(
            "],\"blocked_targets_folded\":{},\"exit_code\":{exit_code}}}\n",
            g.folded
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
    v
}

impl AuditSink for RunRecorder {
    fn record(&self, ev: &AuditEvent) {
        let mut g = self.lock();
        if ev.decision != Verdict::Allow {
            g.blocked_total = g.blocked_total.saturating_add(1);
            let key = (target_of(ev), ev.reason);
            if let Some(&i) = g.index.get(&key) {
                g.targets[i].1 += 1;
            } else if g.targets.len() < REPORT_TARGETS {
                let i = g.targets.len();
                g.index.insert(key.clone(), i);
                g.targets.push((key, 1));
            } else {
                g.folded = g.folded.saturating_add(1);
            }
        }
        if let Some(r) = g.report.as_mut() {
            let line = decision_json(ev).to_string();
            if !r.first {
                r.write(b",");
            }
            r.first = false;
            r.write(b"\n");
            r.write(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use proxy_core::{Decision, Mode, Protocol, Reason, RequestMeta, Target};

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
            serde_json::json!([{"target": "evil.example:80", "reason": "denied", "count": 1}])
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
            serde_json::json!({"target": "example.com:53", "reason": "dns_not_served", "count": 2})
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
            assert_eq!(g.targets.len(), REPORT_TARGETS);
            assert_eq!(g.index.len(), REPORT_TARGETS);
            assert_eq!(g.folded, u64::from(n) - REPORT_TARGETS as u64);
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
            serde_json::json!({"target": "10.0.0.0:9", "reason": "not_allowed_local", "count": 2})
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
