//! `proxy-audit` records netproxy's decisions: exactly one [`AuditEvent`] per decision goes to
//! the [`Audit`] sink, which emits it as a tracing event (target `netproxy::audit`, name
//! `netproxy.policy_decision`, the fields of docs/audit.md) and keeps the last 200 refusals in
//! a [`BlockedBuffer`] for the admin API.
//!
//! The other sinks an [`Audit`] can feed live here too: the JSON lines file
//! ([`JsonLinesFile`]), OTLP export ([`OtlpSink`]), the metrics behind `GET /metrics`
//! ([`Metrics`]) and `netproxy run`'s session recorder ([`RunRecorder`]).
//!
//! It is not a logger setup: the binary installs the subscriber that decides where tracing
//! events go. Recording never blocks: the buffer is a short critical section, and tracing
//! subscribers must not block either.
//!
//! ```
//! use proxy_audit::Audit;
//! use proxy_core::{AuditEvent, AuditSink, Decision, Mode, Protocol, Reason, RequestMeta, Target};
//! let audit = Audit::default();
//! let meta = RequestMeta::new(Protocol::Http, Target::parse_authority("evil.example", 80).unwrap());
//! audit.record(&AuditEvent::new(&meta, &Decision::deny(Reason::Denied), Mode::Full));
//! let view = audit.blocked().snapshot();
//! assert_eq!((view.blocked.len(), view.total), (1, 1));
//! ```
#![forbid(unsafe_code)]

mod file;
mod metrics;
mod otlp;
mod pool;
mod queue;
mod recorder;

pub use file::JsonLinesFile;
pub use metrics::{DropSource, FrontEndCounts, Metrics};
pub use otlp::{OtlpConfig, OtlpError, OtlpProtocol, OtlpSink, encode_logs, encode_logs_reference};
pub use queue::DropOldest;
pub use recorder::{REPORT_TARGETS, ReportError, RunRecorder, SUMMARY_TARGETS};

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use proxy_core::{AuditEvent, AuditSink, BlockedRecord, BlockedView, Verdict};

/// How long a sink's thread sleeps when there is nothing to do, unless woken by an event or by
/// shutdown (which always wake it): an idle proxy wakes it about once a minute.
pub(crate) const IDLE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How many refusals the buffer keeps.
pub const BLOCKED_CAPACITY: usize = 200;

/// The last [`BLOCKED_CAPACITY`] refusals, oldest dropped first, and a count of every refusal.
#[derive(Debug, Default)]
pub struct BlockedBuffer {
    inner: Mutex<(VecDeque<BlockedRecord>, u64)>,
}

impl BlockedBuffer {
    /// Adds a refusal.
    pub fn push(&self, record: BlockedRecord) {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.0.len() == BLOCKED_CAPACITY {
            g.0.pop_front();
        }
        g.0.push_back(record);
        g.1 = g.1.saturating_add(1);
    }

    /// The buffered refusals without removing them.
    pub fn snapshot(&self) -> BlockedView {
        let g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        BlockedView {
            blocked: g.0.iter().cloned().collect(),
            total: g.1,
        }
    }

    /// The buffered refusals, emptying the buffer (the total is kept).
    pub fn drain(&self) -> BlockedView {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        BlockedView {
            blocked: g.0.drain(..).collect(),
            total: g.1,
        }
    }
}

/// Logs a sink's failures once per outage, not once per failed write or export: an error when
/// the sink begins to lose events, and a warning with the number lost when it works again.
/// Events its queue dropped because the sink fell behind count as lost too.
#[derive(Debug)]
pub(crate) struct Outage {
    /// The sink, as the log lines name it (the file's path, the collector's URL).
    sink: String,
    /// Events lost since the outage began (`None`: no outage).
    lost: Option<u64>,
    /// The queue's drop count when last reported.
    queue_drops: u64,
}

impl Outage {
    pub(crate) fn new(sink: String) -> Self {
        Self {
            sink,
            lost: None,
            queue_drops: 0,
        }
    }

    /// The outcome of one write or export: `failure` (why, and how many events it lost) or
    /// success, and the queue's total of dropped events so far.
    pub(crate) fn report(
        &mut self,
        failure: Option<(&dyn std::fmt::Display, u64)>,
        queue_drops: u64,
    ) {
        let behind = queue_drops.saturating_sub(self.queue_drops);
        self.queue_drops = queue_drops;
        match failure {
            Some((error, lost)) => self.failed(error, lost.saturating_add(behind)),
            None if behind > 0 => self.failed(
                &"the sink fell behind: its full queue dropped the oldest events",
                behind,
            ),
            None => self.recovered(),
        }
    }

    fn failed(&mut self, error: &dyn std::fmt::Display, lost: u64) {
        match &mut self.lost {
            Some(total) => *total = total.saturating_add(lost),
            None => {
                tracing::error!(
                    sink = %self.sink,
                    %error,
                    lost,
                    "audit events are being lost until this sink works again"
                );
                self.lost = Some(lost);
            }
        }
    }

    fn recovered(&mut self) {
        if let Some(lost) = self.lost.take() {
            tracing::warn!(sink = %self.sink, lost, "the audit sink works again");
        }
    }

    /// The sink stops: an outage still going on is logged with its total.
    pub(crate) fn finish(&mut self, queue_drops: u64) {
        let behind = queue_drops.saturating_sub(self.queue_drops);
        self.queue_drops = queue_drops;
        let lost = match self.lost.take() {
            Some(lost) => lost.saturating_add(behind),
            None if behind > 0 => behind,
            None => return,
        };
        tracing::error!(sink = %self.sink, lost, "the audit sink stopped while losing events");
    }

    #[cfg(test)]
    pub(crate) fn lost(&self) -> Option<u64> {
        self.lost
    }
}

/// Formats timestamps, reusing the date and time of day while the second stays the same.
#[derive(Debug, Default)]
pub(crate) struct TimestampCache {
    second: Option<u64>,
    text: String,
}

impl TimestampCache {
    /// `t` as [`rfc3339_millis`] formats it.
    pub(crate) fn format(&mut self, t: SystemTime) -> &str {
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let (secs, millis) = (since.as_secs(), since.subsec_millis());
        if self.second != Some(secs) || self.text.len() != 24 {
            self.text = rfc3339_millis(t);
            self.second = Some(secs);
        } else {
            // "YYYY-MM-DDTHH:MM:SS." is kept; the milliseconds and "Z" are rewritten.
            self.text.truncate(20);
            use std::fmt::Write as _;
            let _ = write!(self.text, "{millis:03}Z");
        }
        &self.text
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-01-01T00:00:00.000Z`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_millis(1_767_225_600_123);
/// assert_eq!(proxy_audit::rfc3339_millis(t), "2026-01-01T00:00:00.123Z");
/// ```
pub fn rfc3339_millis(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    dt.format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// One decision as the JSON object of an `audit_log` line (and of OTLP log attributes): the
/// fields of docs/audit.md with `event.name` and `event.timestamp`, plus the rule and layer
/// that decided.
///
/// ```
/// use proxy_core::{AuditEvent, Decision, Mode, Protocol, Reason, RequestMeta, Target};
/// let meta = RequestMeta::new(Protocol::Http, Target::parse_authority("evil.example", 80).unwrap())
///     .with_method("GET");
/// let v = proxy_audit::event_json(&AuditEvent::new(&meta, &Decision::deny(Reason::Denied), Mode::Full));
/// assert_eq!(v["event.name"], "netproxy.policy_decision");
/// assert_eq!(v["server.port"], 80);
/// assert_eq!(v["network.policy.reason"], "denied");
/// ```
pub fn event_json(ev: &AuditEvent) -> serde_json::Value {
    serde_json::to_value(Line::of(ev)).unwrap_or(serde_json::Value::Null)
}

/// One `audit_log` line, serialised without building a JSON tree.
#[derive(serde::Serialize)]
pub(crate) struct Line<'a> {
    #[serde(rename = "event.name")]
    name: &'static str,
    #[serde(rename = "event.timestamp")]
    timestamp: std::borrow::Cow<'a, str>,
    #[serde(rename = "network.policy.scope")]
    scope: &'static str,
    #[serde(rename = "network.policy.decision")]
    decision: &'static str,
    #[serde(rename = "network.policy.source")]
    source: &'static str,
    #[serde(rename = "network.policy.reason")]
    reason: &'static str,
    #[serde(rename = "network.policy.override")]
    policy_override: bool,
    #[serde(rename = "network.policy.mode")]
    mode: &'static str,
    #[serde(rename = "network.policy.rule")]
    rule: Option<&'a str>,
    #[serde(rename = "network.policy.layer")]
    layer: Option<&'a str>,
    #[serde(rename = "network.transport.protocol")]
    protocol: &'static str,
    #[serde(rename = "server.address")]
    server_address: &'a str,
    #[serde(rename = "server.port")]
    server_port: u16,
    #[serde(rename = "http.request.method")]
    method: &'a str,
    #[serde(rename = "client.address")]
    client: Client,
    #[serde(
        rename = "network.policy.revoked",
        skip_serializing_if = "std::ops::Not::not"
    )]
    revoked: bool,
    #[serde(rename = "credential.grant", skip_serializing_if = "Option::is_none")]
    credential_grant: Option<&'a str>,
    #[serde(
        rename = "credential.injected",
        skip_serializing_if = "Option::is_none"
    )]
    credential_injected: Option<bool>,
    #[serde(
        rename = "network.policy.learn",
        skip_serializing_if = "std::ops::Not::not"
    )]
    learn: bool,
    #[serde(rename = "error.type", skip_serializing_if = "Option::is_none")]
    error_type: Option<&'static str>,
}

/// A client address serialised straight into the output (`unknown` when not known).
struct Client(Option<std::net::SocketAddr>);

impl serde::Serialize for Client {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(a) => s.collect_str(&a),
            None => s.serialize_str("unknown"),
        }
    }
}

impl<'a> Line<'a> {
    pub(crate) fn of(ev: &'a AuditEvent) -> Self {
        Self::at(ev, std::borrow::Cow::Owned(rfc3339_millis(ev.timestamp)))
    }

    /// With the timestamp already formatted.
    pub(crate) fn at(ev: &'a AuditEvent, timestamp: std::borrow::Cow<'a, str>) -> Self {
        Self {
            name: proxy_core::EVENT_NAME,
            timestamp,
            scope: ev.scope.as_str(),
            decision: ev.decision.as_str(),
            source: ev.source.as_str(),
            reason: ev.reason,
            policy_override: ev.policy_override,
            mode: ev.mode.as_str(),
            rule: ev.rule.as_ref().map(|r| &*r.pattern),
            layer: ev.rule.as_ref().and_then(|r| r.origin.as_deref()),
            protocol: ev.protocol.as_str(),
            server_address: &ev.server_address,
            server_port: ev.server_port,
            method: ev.method.as_deref().unwrap_or("none"),
            client: Client(ev.client),
            revoked: ev.revoked,
            credential_grant: ev.credential.as_ref().map(|c| c.grant.as_str()),
            credential_injected: ev.credential.as_ref().map(|c| c.injected),
            learn: ev.learn,
            error_type: ev.failure.as_ref().map(|f| f.kind.as_str()),
        }
    }
}

/// Appends `ev` as one `audit_log` line (with its newline) to `out`: the same object as
/// [`Line`] serialises, written field by field. Keys and enumerated values are known to need no
/// escaping; the strings that come from requests or config go through serde_json's escaping.
pub(crate) fn write_line(out: &mut Vec<u8>, ev: &AuditEvent, timestamp: &str) {
    fn text(out: &mut Vec<u8>, key: &str, value: &str) {
        out.extend_from_slice(key.as_bytes());
        // Writing a `str` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }
    fn known(out: &mut Vec<u8>, key: &str, value: &str) {
        out.extend_from_slice(key.as_bytes());
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    }
    known(out, "{\"event.name\":", proxy_core::EVENT_NAME);
    known(out, ",\"event.timestamp\":", timestamp);
    known(out, ",\"network.policy.scope\":", ev.scope.as_str());
    known(out, ",\"network.policy.decision\":", ev.decision.as_str());
    known(out, ",\"network.policy.source\":", ev.source.as_str());
    known(out, ",\"network.policy.reason\":", ev.reason);
    out.extend_from_slice(if ev.policy_override {
        b",\"network.policy.override\":true"
    } else {
        b",\"network.policy.override\":false"
    });
    known(out, ",\"network.policy.mode\":", ev.mode.as_str());
    match &ev.rule {
        Some(rule) => {
            text(out, ",\"network.policy.rule\":", &rule.pattern);
            match &rule.origin {
                Some(layer) => text(out, ",\"network.policy.layer\":", layer),
                None => out.extend_from_slice(b",\"network.policy.layer\":null"),
            }
        }
        None => {
            out.extend_from_slice(b",\"network.policy.rule\":null,\"network.policy.layer\":null");
        }
    }
    known(
        out,
        ",\"network.transport.protocol\":",
        ev.protocol.as_str(),
    );
    text(out, ",\"server.address\":", &ev.server_address);
    out.extend_from_slice(b",\"server.port\":");
    let _ = serde_json::to_writer(&mut *out, &ev.server_port);
    text(
        out,
        ",\"http.request.method\":",
        ev.method.as_deref().unwrap_or("none"),
    );
    out.extend_from_slice(b",\"client.address\":\"");
    client_address(out, ev.client);
    out.push(b'"');
    if ev.revoked {
        out.extend_from_slice(b",\"network.policy.revoked\":true");
    }
    if let Some(c) = &ev.credential {
        text(out, ",\"credential.grant\":", &c.grant);
        out.extend_from_slice(if c.injected {
            b",\"credential.injected\":true"
        } else {
            b",\"credential.injected\":false"
        });
    }
    if ev.learn {
        out.extend_from_slice(b",\"network.policy.learn\":true");
    }
    if let Some(f) = &ev.failure {
        known(out, ",\"error.type\":", f.kind.as_str());
    }
    out.extend_from_slice(b"}\n");
}

/// Appends the `client.address` text: `ip:port`, or `unknown` (no JSON escaping needed).
pub(crate) fn client_address(out: &mut Vec<u8>, client: Option<std::net::SocketAddr>) {
    match client {
        Some(std::net::SocketAddr::V4(a)) => {
            for (i, octet) in a.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                let _ = serde_json::to_writer(&mut *out, octet);
            }
            out.push(b':');
            let _ = serde_json::to_writer(&mut *out, &a.port());
        }
        Some(a) => {
            use std::io::Write as _;
            let _ = write!(out, "{a}");
        }
        None => out.extend_from_slice(b"unknown"),
    }
}

/// The audit sink: a tracing event per decision, refusals into the buffer, and every event to
/// the extra sinks added with [`Audit::with_sink`].
#[derive(Default)]
pub struct Audit {
    blocked: BlockedBuffer,
    extra: Vec<std::sync::Arc<dyn AuditSink>>,
    /// Learn mode: every event is marked `network.policy.learn` ([`Audit::learning`]).
    learn: bool,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("blocked", &self.blocked)
            .field("extra_sinks", &self.extra.len())
            .field("learn", &self.learn)
            .finish()
    }
}

impl Audit {
    /// The blocked-request buffer.
    pub fn blocked(&self) -> &BlockedBuffer {
        &self.blocked
    }

    /// Also sends every event to `sink` (which must not block either).
    #[must_use]
    pub fn with_sink(mut self, sink: std::sync::Arc<dyn AuditSink>) -> Self {
        self.extra.push(sink);
        self
    }

    /// Learn mode (`netproxy run --learn`, docs/run.md): every event recorded from now on is
    /// marked `network.policy.learn: true` before it reaches the log and every sink, whoever
    /// made it (the gate, the DNS refuser of `--isolate`, a revocation).
    #[must_use]
    pub fn learning(mut self) -> Self {
        self.learn = true;
        self
    }
}

impl AuditSink for Audit {
    fn record(&self, ev: &AuditEvent) {
        if self.learn && !ev.learn {
            // A copy per event, in learn mode only: the makers of events know nothing of it.
            let mut marked = ev.clone();
            marked.learn = true;
            return self.record(&marked);
        }
        // The log line's values are formatted only when the line is wanted.
        if tracing::enabled!(target: "netproxy::audit", tracing::Level::INFO) {
            log_event(ev);
        }
        if ev.decision != Verdict::Allow {
            self.blocked.push(BlockedRecord::from_event(ev));
        }
        let mut shared: Option<std::sync::Arc<AuditEvent>> = None;
        for sink in &self.extra {
            if sink.keeps_events() {
                let ev = shared.get_or_insert_with(|| pool::EVENTS.filled(ev));
                sink.record_shared(ev);
            } else {
                sink.record(ev);
            }
        }
    }
}

/// The audit event as a tracing event (the stderr log).
fn log_event(ev: &AuditEvent) {
    let client = ev
        .client
        .map_or_else(|| "unknown".to_owned(), |c| c.to_string());
    let method = ev.method.as_deref().unwrap_or("none");
    let rule = ev.rule.as_ref().map(|r| &*r.pattern).unwrap_or("");
    let timestamp = rfc3339_millis(ev.timestamp);
    // Only for a request that carried a brokered dummy (`None` records nothing).
    let grant = ev.credential.as_ref().map(|c| c.grant.as_str());
    let injected = ev.credential.as_ref().map(|c| c.injected);
    // Only in learn mode (`None` records nothing).
    let learn = ev.learn.then_some(true);
    // Only for a failure.
    let error_type = ev.failure.as_ref().map(|f| f.kind.as_str());
    // Every decision at INFO, as the reference does; a refusal is not an error of netproxy's.
    // A revocation carries one more field.
    macro_rules! event {
        ($($extra:tt)*) => {
            tracing::event!(
                target: "netproxy::audit",
                tracing::Level::INFO,
                network.policy.scope = ev.scope.as_str(),
                network.policy.decision = ev.decision.as_str(),
                network.policy.source = ev.source.as_str(),
                network.policy.reason = ev.reason,
                network.policy.override = ev.policy_override,
                network.policy.rule = rule,
                network.transport.protocol = ev.protocol.as_str(),
                server.address = %ev.server_address,
                server.port = ev.server_port,
                http.request.method = method,
                client.address = %client,
                credential.grant = grant,
                credential.injected = injected,
                network.policy.learn = learn,
                error.type = error_type,
                $($extra)*
                "event.name" = proxy_core::EVENT_NAME,
                "event.timestamp" = %timestamp,
                "policy decision"
            )
        };
    }
    if ev.revoked {
        event!(network.policy.revoked = true,);
    } else {
        event!();
    }
}

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Arc, Mutex};

    /// A log writer that keeps what is written, for a test's tracing subscriber.
    #[derive(Clone, Default)]
    pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Capture {
        /// Everything written so far.
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use proxy_core::{Decision, Mode, Protocol, Reason, RequestMeta, Target};

    use super::*;

    #[test]
    fn a_written_line_is_the_serialised_line() {
        let mut events = Vec::new();
        let net = |a: &str, p: Protocol| {
            RequestMeta::new(p, Target::parse_authority(a, 443).unwrap()).with_method("CONNECT")
        };
        events.push(AuditEvent::new(
            &net("evil.example:443", Protocol::HttpsConnect),
            &Decision::deny(Reason::Denied),
            Mode::Full,
        ));
        events.push(AuditEvent::new(
            &net("[::1]:8443", Protocol::HttpsConnect).with_client("[::1]:40000".parse().unwrap()),
            &Decision::allow().with_rule(proxy_core::Rule::new(
                "**.odd\"pattern\\",
                Some("managed \u{1}".into()),
            )),
            Mode::Limited,
        ));
        let mut with_rule_only = AuditEvent::new(
            &RequestMeta::new(
                Protocol::Http,
                Target::parse_authority("a.example", 80).unwrap(),
            )
            .with_client("192.168.10.200:65535".parse().unwrap()),
            &Decision::allow().with_rule(proxy_core::Rule::new("a.example", None)),
            Mode::Full,
        );
        with_rule_only.policy_override = true;
        events.push(with_rule_only);
        let mut revoked = AuditEvent::revocation(
            &net("evil.example:443", Protocol::Socks5Tcp),
            &Decision::deny(Reason::Denied),
            Mode::Full,
        );
        revoked.client = Some("127.0.0.1:1".parse().unwrap());
        events.push(revoked.clone());
        // A request that carried a brokered dummy: its grant and whether it was injected, after
        // a revocation's key too.
        events.push(AuditEvent::new(
            &net("api.github.com:443", Protocol::Https)
                .with_credential(proxy_core::BrokeredCredential::bound("GH_TOKEN")),
            &Decision::allow(),
            Mode::Full,
        ));
        revoked.credential = Some(proxy_core::CredentialField {
            grant: "odd\"grant".into(),
            injected: false,
        });
        events.push(revoked);
        // A refused name lookup of `run --isolate`, with a label that holds a quote and a
        // control byte: escaped by the event, so the line stays one plain JSON object.
        events.push(AuditEvent::dns_not_served(
            [b"odd\"\n".as_slice(), b"Example".as_slice()],
            53,
            "127.0.0.1:5353".parse().unwrap(),
            Mode::Full,
        ));
        // Learn mode: the last key of all.
        let mut learned = events[events.len() - 2].clone();
        learned.learn = true;
        events.push(learned);
        // A failure: its wire name as `error.type`.
        events.push(AuditEvent::failure(
            &net("gone.example:443", Protocol::HttpsConnect),
            &Decision::allow(),
            &proxy_core::Failure::new(proxy_core::UpstreamFailure::DnsFailed, "no such name"),
            Mode::Full,
        ));
        for ev in &events {
            let mut written = Vec::new();
            write_line(&mut written, ev, "2026-01-01T00:00:00.123Z");
            let mut expected =
                serde_json::to_vec(&Line::at(ev, "2026-01-01T00:00:00.123Z".into())).unwrap();
            expected.push(b'\n');
            assert_eq!(
                String::from_utf8(written.clone()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
            let v: serde_json::Value = serde_json::from_slice(&written).unwrap();
            assert_eq!(v["server.port"], ev.server_port);
            assert_eq!(v["network.transport.protocol"], ev.protocol.as_str());
            // Only a revocation carries the key.
            assert_eq!(
                v.get("network.policy.revoked").cloned(),
                ev.revoked.then_some(serde_json::Value::Bool(true))
            );
            // Only a request with a dummy carries the credential keys.
            assert_eq!(
                v.get("credential.grant").and_then(|g| g.as_str()),
                ev.credential.as_ref().map(|c| c.grant.as_str())
            );
            assert_eq!(
                v.get("credential.injected")
                    .and_then(serde_json::Value::as_bool),
                ev.credential.as_ref().map(|c| c.injected)
            );
            // Only a learn-mode event carries `network.policy.learn`.
            assert_eq!(
                v.get("network.policy.learn").cloned(),
                ev.learn.then_some(serde_json::Value::Bool(true))
            );
            // Only a failure carries `error.type`.
            assert_eq!(
                v.get("error.type").and_then(|t| t.as_str()),
                ev.failure.as_ref().map(|f| f.kind.as_str())
            );
        }
    }

    /// In learn mode every event is marked, in the stderr log and for every sink, whoever made
    /// it; otherwise none is.
    #[test]
    fn learn_mode_marks_every_event_for_the_log_and_every_sink() {
        #[derive(Debug, Default)]
        struct Kept(std::sync::Mutex<Vec<AuditEvent>>);
        impl AuditSink for Kept {
            fn record(&self, ev: &AuditEvent) {
                self.0.lock().unwrap().push(ev.clone());
            }
        }
        let cap = crate::testing::Capture::default();
        let c2 = cap.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || c2.clone())
            .finish();
        let kept = std::sync::Arc::new(Kept::default());
        let plain = std::sync::Arc::new(Kept::default());
        let learning = Audit::default().with_sink(kept.clone()).learning();
        let audit = Audit::default().with_sink(plain.clone());
        tracing::subscriber::with_default(subscriber, || {
            learning.record(&event("a.example", &Decision::allow()));
            learning.record(&AuditEvent::dns_not_served(
                [b"b".as_slice(), b"example".as_slice()],
                53,
                "127.0.0.1:5353".parse().unwrap(),
                Mode::Full,
            ));
            audit.record(&event("c.example", &Decision::allow()));
        });
        let kept = kept.0.lock().unwrap();
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|e| e.learn), "{kept:?}");
        assert!(plain.0.lock().unwrap().iter().all(|e| !e.learn));
        let text = cap.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("\"network.policy.learn\":true"), "{text}");
        assert!(lines[1].contains("\"network.policy.learn\":true"), "{text}");
        assert!(!lines[2].contains("network.policy.learn"), "{text}");
    }

    #[test]
    fn a_dns_event_is_written_with_its_escaped_name() {
        let ev = AuditEvent::dns_not_served(
            [b"odd\"\n".as_slice(), b"Example".as_slice()],
            53,
            "127.0.0.1:5353".parse().unwrap(),
            Mode::Full,
        );
        let mut written = Vec::new();
        write_line(&mut written, &ev, "2026-01-01T00:00:00.123Z");
        let text = String::from_utf8(written).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (k, want) in [
            ("network.transport.protocol", "dns"),
            ("network.policy.decision", "deny"),
            ("network.policy.reason", "dns_not_served"),
            ("network.policy.source", "proxy_state"),
            ("network.policy.scope", "non_domain"),
            ("server.address", "odd\\034\\010.example"),
            ("client.address", "127.0.0.1:5353"),
        ] {
            assert_eq!(v[k], want, "{k} in {text}");
        }
        assert_eq!(v["server.port"], 53);
        assert_eq!(v["http.request.method"], "none");
    }

    #[test]
    fn the_timestamp_cache_formats_like_rfc3339_millis() {
        use std::time::{Duration, UNIX_EPOCH};
        let mut cache = TimestampCache::default();
        for ms in [
            1_767_225_600_000u64,
            1_767_225_600_001,
            1_767_225_600_999,
            1_767_225_601_000,
            1_767_225_601_500,
            1_767_225_599_999,
            1_767_225_601_007,
        ] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(cache.format(t), rfc3339_millis(t), "{ms}");
        }
    }

    fn event(host: &str, decision: &Decision) -> AuditEvent {
        let meta = RequestMeta::new(
            Protocol::HttpsConnect,
            Target::parse_authority(host, 443).unwrap(),
        )
        .with_method("CONNECT")
        .with_client("127.0.0.1:40000".parse().unwrap());
        AuditEvent::new(&meta, decision, Mode::Full)
    }

    fn buffer_keeps_the_last_200_and_counts_all() {
        let audit = Audit::default();
        for i in 0..205 {
            audit.record(&event(
                &format!("example{i}.com"),
                &Decision::deny(Reason::NotAllowed),
            ));
        }
        audit.record(&event("allowed.com", &Decision::allow()));
        let snap = audit.blocked().snapshot();
        assert_eq!(snap.total, 205);
        assert_eq!(snap.blocked.len(), 200);
        assert_eq!(snap.blocked[0].host, "example5.com");
        let drained = audit.blocked().drain();
        assert_eq!(drained, snap);
        let after = audit.blocked().snapshot();
        assert_eq!((after.blocked.len(), after.total), (0, 205));
    }

    /// One test, so that the two parts never race on the callsite's cached interest (tracing
    /// caches it per callsite across threads).
    #[test]
    fn audit_events_and_the_blocked_buffer() {
        one_tracing_event_per_decision_with_the_interface_fields();
        buffer_keeps_the_last_200_and_counts_all();
    }

    fn one_tracing_event_per_decision_with_the_interface_fields() {
        let cap = crate::testing::Capture::default();
        let c2 = cap.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || c2.clone())
            .finish();
        let audit = Audit::default();
        tracing::subscriber::with_default(subscriber, || {
            audit.record(&event("evil.example", &Decision::deny(Reason::Denied)));
        });
        let text = cap.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        for needle in [
            "\"target\":\"netproxy::audit\"",
            "\"event.name\":\"netproxy.policy_decision\"",
            "\"network.policy.decision\":\"deny\"",
            "\"network.policy.reason\":\"denied\"",
            "\"network.policy.source\":\"baseline_policy\"",
            "\"network.transport.protocol\":\"https_connect\"",
            "\"server.address\":\"evil.example\"",
            "\"server.port\":443",
            "\"http.request.method\":\"CONNECT\"",
            "\"client.address\":\"127.0.0.1:40000\"",
            "\"network.policy.override\":false",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(!text.contains("credential."), "{text}");
    }

    #[test]
    fn the_stderr_event_names_a_brokered_credential_s_grant() {
        let cap = crate::testing::Capture::default();
        let c2 = cap.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || c2.clone())
            .finish();
        let audit = Audit::default();
        let meta = RequestMeta::new(
            Protocol::Https,
            Target::parse_authority("evil.example", 443).unwrap(),
        )
        .with_credential(proxy_core::BrokeredCredential::refused(
            "GH_TOKEN",
            "not bound",
        ));
        let refused = meta.credential_refusal().unwrap();
        tracing::subscriber::with_default(subscriber, || {
            audit.record(&AuditEvent::new(&meta, &refused, Mode::Full));
        });
        let text = cap.text();
        for needle in [
            "\"network.policy.reason\":\"credential_not_bound\"",
            "\"credential.grant\":\"GH_TOKEN\"",
            "\"credential.injected\":false",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
