//! The soak's pure parts: what identifies an audit event ([`EventKey`]), the events an answer
//! on the wire stands for ([`events_for_answer`]), reading an audit line, an OTLP record's
//! attributes and the metrics text, the reconciliation of the decisions the soak caused against
//! those three ([`reconcile`]), the growth judgment on the memory and descriptor samples
//! ([`growth`]) and the config file the soak writes and rewrites ([`config_text`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The host names the soak uses; `[network.dns] hosts` answers every one with 127.0.0.1.
pub(crate) const HTTP_HOST: &str = "http.soak.test";
pub(crate) const ECHO_HOST: &str = "echo.soak.test";
pub(crate) const UDP_HOST: &str = "udp.soak.test";
/// The HTTPS origin's name, with a hook: its tunnels are intercepted.
pub(crate) const TLS_HOST: &str = "tls.soak.test";
/// On the deny list.
pub(crate) const DENIED_HOST: &str = "denied.soak.test";
/// On neither list (refused `not_allowed`).
pub(crate) const UNLISTED_HOST: &str = "unlisted.soak.test";
/// Allowed or not by the user config file, rewritten at each reload.
pub(crate) const TOGGLE_HOST: &str = "toggle.soak.test";
/// Allowed or denied by `POST /domains`.
pub(crate) const ADMIN_HOST: &str = "admin.soak.test";

/// The path prefix the hook on [`TLS_HOST`] admits (with `GET`); other paths are refused
/// `mitm_hook_denied` inside the tunnel.
pub(crate) const HOOK_PREFIX: &str = "/ok/";

/// What the reconciliation tells audit events apart by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct EventKey {
    /// `network.transport.protocol`.
    pub(crate) protocol: String,
    /// `network.policy.decision`.
    pub(crate) decision: String,
    /// `network.policy.reason` (a failure's wire name for a failure).
    pub(crate) reason: String,
    /// `network.policy.revoked`.
    pub(crate) revoked: bool,
}

impl EventKey {
    pub(crate) fn new(protocol: &str, decision: &str, reason: &str, revoked: bool) -> Self {
        Self {
            protocol: protocol.to_owned(),
            decision: decision.to_owned(),
            reason: reason.to_owned(),
            revoked,
        }
    }

    /// An allowed request.
    pub(crate) fn allowed(protocol: &str) -> Self {
        Self::new(protocol, "allow", "allow", false)
    }

    /// A refused request.
    pub(crate) fn refused(protocol: &str, reason: &str) -> Self {
        Self::new(protocol, "deny", reason, false)
    }

    /// An open connection closed by a narrower policy.
    pub(crate) fn revoked(protocol: &str, reason: &str) -> Self {
        Self::new(protocol, "deny", reason, true)
    }

    /// The metrics' labels for it (the metrics do not tell revocations apart).
    fn labels(&self) -> MetricKey {
        (
            self.protocol.clone(),
            self.decision.clone(),
            self.reason.clone(),
        )
    }
}

impl fmt::Display for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.protocol, self.decision, self.reason)?;
        if self.revoked {
            f.write_str(" revoked")?;
        }
        Ok(())
    }
}

/// Events counted by key.
pub(crate) type Counts = BTreeMap<EventKey, u64>;

/// `netproxy_decisions_total`'s labels: protocol, decision, reason.
pub(crate) type MetricKey = (String, String, String);

/// The audit events netproxy records for an HTTP answer (plain HTTP, a `CONNECT`, or a request
/// inside an intercepted tunnel) with `status` and, for netproxy's own JSON answers, the body's
/// `reason` (docs/audit.md, docs/responses.md): an answer from the origin is one `allow`; a
/// `403` one refusal with its reason; a `502`/`504` from netproxy is a failure, which is the
/// request's only event for `dns_failed` and otherwise follows the request's `allow`. Any other
/// answer from netproxy itself (a `400`, a `405`) is not one the soak provokes: `None`.
pub(crate) fn events_for_answer(
    protocol: &str,
    status: u16,
    reason: Option<&str>,
) -> Option<Vec<EventKey>> {
    match (status, reason) {
        (403, Some(r)) => Some(vec![EventKey::refused(protocol, r)]),
        (502 | 504, Some("dns_failed")) => {
            Some(vec![EventKey::new(protocol, "allow", "dns_failed", false)])
        }
        (502 | 504, Some(r)) => Some(vec![
            EventKey::allowed(protocol),
            EventKey::new(protocol, "allow", r, false),
        ]),
        (_, Some(_)) => None,
        (_, None) => Some(vec![EventKey::allowed(protocol)]),
    }
}

/// The `reason` of one of netproxy's JSON answers (`{"status":"blocked","reason":...}` or
/// `{"status":"error","reason":...}`); `None` for any other body (the origin's).
pub(crate) fn answer_reason(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match v["status"].as_str() {
        Some("blocked" | "error") => v["reason"].as_str().map(str::to_owned),
        _ => None,
    }
}

/// One line of the `audit_log` file: its key, or why it is not a decision event.
pub(crate) fn audit_line(line: &str) -> Result<EventKey, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line:.120}"))?;
    if v["event.name"] != "netproxy.policy_decision" {
        return Err(format!("not a policy decision: {line:.120}"));
    }
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no {k}: {line:.120}"))
    };
    Ok(EventKey {
        protocol: field("network.transport.protocol")?,
        decision: field("network.policy.decision")?,
        reason: field("network.policy.reason")?,
        revoked: v["network.policy.revoked"] == true,
    })
}

/// The key of one OTLP log record from its event name and its attributes (name and string or
/// boolean value), or why it is not a decision event.
pub(crate) fn record_key(
    event_name: &str,
    attributes: &[(String, AttrValue)],
) -> Result<EventKey, String> {
    if event_name != "netproxy.policy_decision" {
        return Err(format!("a record named {event_name:?}"));
    }
    let text = |k: &str| {
        attributes
            .iter()
            .find_map(|(name, v)| match v {
                AttrValue::Text(t) if name == k => Some(t.clone()),
                _ => None,
            })
            .ok_or_else(|| format!("a record without {k}"))
    };
    Ok(EventKey {
        protocol: text("network.transport.protocol")?,
        decision: text("network.policy.decision")?,
        reason: text("network.policy.reason")?,
        revoked: attributes
            .iter()
            .any(|(n, v)| n == "network.policy.revoked" && *v == AttrValue::Bool(true)),
    })
}

/// The value of an OTLP attribute, as far as the soak reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttrValue {
    Text(String),
    Bool(bool),
    Other,
}

/// What the soak reads in `GET /metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Metrics {
    /// `netproxy_decisions_total` by label.
    pub(crate) decisions: BTreeMap<MetricKey, u64>,
    /// `netproxy_audit_export_dropped_total`.
    pub(crate) dropped: u64,
    /// `netproxy_reloads_total{result="ok"}` and `{result="failed"}`.
    pub(crate) reloads_ok: u64,
    pub(crate) reloads_failed: u64,
    /// `netproxy_active_connections` plus `netproxy_active_tunnels`: client connections and
    /// tunnels open now.
    pub(crate) active: u64,
}

impl Metrics {
    pub(crate) fn total(&self) -> u64 {
        self.decisions.values().sum()
    }
}

/// Reads the OpenMetrics text of `GET /metrics`.
pub(crate) fn parse_metrics(text: &str) -> Result<Metrics, String> {
    let mut m = Metrics::default();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("bad metrics line {line:?}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (
                n,
                labels(
                    rest.strip_suffix('}')
                        .ok_or_else(|| format!("bad labels in {line:?}"))?,
                )?,
            ),
            None => (series, BTreeMap::new()),
        };
        let count = || -> Result<u64, String> {
            let v: f64 = value
                .parse()
                .map_err(|_| format!("bad value in {line:?}"))?;
            if !(v >= 0.0 && v.fract() == 0.0) {
                return Err(format!("a count that is not a whole number in {line:?}"));
            }
            Ok(v as u64)
        };
        let label = |k: &str| {
            labels
                .get(k)
                .cloned()
                .ok_or_else(|| format!("no label {k} in {line:?}"))
        };
        match name {
            "netproxy_decisions_total" => {
                *m.decisions
                    .entry((label("protocol")?, label("decision")?, label("reason")?))
                    .or_default() += count()?;
            }
            "netproxy_audit_export_dropped_total" => m.dropped += count()?,
            "netproxy_active_connections" | "netproxy_active_tunnels" => m.active += count()?,
            "netproxy_reloads_total" => match label("result")?.as_str() {
                "ok" => m.reloads_ok += count()?,
                _ => m.reloads_failed += count()?,
            },
            _ => {}
        }
    }
    Ok(m)
}

/// `a="x",b="y"` into a map (values without escapes: netproxy's labels are wire names).
fn labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (k, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("bad labels {text:?}"))?;
        let (v, after) = after
            .split_once('"')
            .ok_or_else(|| format!("bad labels {text:?}"))?;
        out.insert(k.to_owned(), v.to_owned());
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    Ok(out)
}

/// One row of the reconciliation: what the soak caused and what each record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) key: EventKey,
    pub(crate) expected: u64,
    pub(crate) file: u64,
    pub(crate) collector: u64,
}

/// The decisions the soak caused against the audit file, the collector and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reconciliation {
    pub(crate) rows: Vec<Row>,
    /// Every difference, in words; empty when every count matches exactly.
    pub(crate) problems: Vec<String>,
}

/// Compares key by key: the audit file and the collector must hold exactly the events the
/// soak caused, and the metrics (which do not tell revocations apart) their sums by label.
pub(crate) fn reconcile(
    expected: &Counts,
    file: &Counts,
    collector: &Counts,
    metrics: &BTreeMap<MetricKey, u64>,
) -> Reconciliation {
    let mut keys: Vec<&EventKey> = expected
        .keys()
        .chain(file.keys())
        .chain(collector.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let get = |c: &Counts, k: &EventKey| c.get(k).copied().unwrap_or(0);
    let mut out = Reconciliation::default();
    for k in keys {
        let row = Row {
            key: k.clone(),
            expected: get(expected, k),
            file: get(file, k),
            collector: get(collector, k),
        };
        for (what, n) in [("audit file", row.file), ("collector", row.collector)] {
            if n != row.expected {
                out.problems.push(format!(
                    "{k}: {} caused, {n} in the {what} ({})",
                    row.expected,
                    difference(row.expected, n)
                ));
            }
        }
        out.rows.push(row);
    }
    let mut by_labels: BTreeMap<MetricKey, u64> = BTreeMap::new();
    for (k, n) in expected {
        *by_labels.entry(k.labels()).or_default() += n;
    }
    let mut labels: Vec<&MetricKey> = by_labels.keys().chain(metrics.keys()).collect();
    labels.sort();
    labels.dedup();
    for l in labels {
        let want = by_labels.get(l).copied().unwrap_or(0);
        let got = metrics.get(l).copied().unwrap_or(0);
        if want != got {
            out.problems.push(format!(
                "{} {} {}: {want} caused, {got} in the metrics ({})",
                l.0,
                l.1,
                l.2,
                difference(want, got)
            ));
        }
    }
    out
}

fn difference(expected: u64, got: u64) -> String {
    if got < expected {
        format!("{} lost", expected - got)
    } else {
        format!("{} more than caused", got - expected)
    }
}

/// The sum of the counts.
pub(crate) fn total(c: &Counts) -> u64 {
    c.values().sum()
}

/// The first and the last quarter's means of a series after its warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Growth {
    pub(crate) first: f64,
    pub(crate) last: f64,
}

impl Growth {
    /// The last quarter's mean over the first's, minus one (0.1 is 10% more).
    pub(crate) fn ratio(&self) -> f64 {
        if self.first <= 0.0 {
            return if self.last <= 0.0 { 0.0 } else { f64::INFINITY };
        }
        self.last / self.first - 1.0
    }

    /// Whether the last quarter is above the first by more than `limit` (0.10: 10%).
    pub(crate) fn exceeds(&self, limit: f64) -> bool {
        self.last > self.first * (1.0 + limit)
    }
}

/// The fewest samples after the warm-up that the growth is judged on (ten per quarter: a
/// connection in flight at one sample moves a quarter's mean of descriptors by a tenth at most).
pub(crate) const MIN_JUDGED: usize = 40;

/// The means of the first and the last quarter of `samples[warmup..]`; `None` when fewer than
/// [`MIN_JUDGED`] samples follow the warm-up.
pub(crate) fn growth(samples: &[f64], warmup: usize) -> Option<Growth> {
    let judged = samples.get(warmup..)?;
    if judged.len() < MIN_JUDGED {
        return None;
    }
    let q = judged.len() / 4;
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    Some(Growth {
        first: mean(&judged[..q]),
        last: mean(&judged[judged.len() - q..]),
    })
}

/// The warm-up left out of the growth judgment: a tenth of the run, at least 20 s and at most
/// 3 minutes (allocator arenas, the leaf cache, the blocked buffer's 200 entries and pooled
/// buffers fill early).
pub(crate) fn warmup_secs(run_secs: f64) -> f64 {
    (run_secs / 10.0).clamp(20.0, 180.0)
}

/// What the soak's config file says beside the toggled domain.
#[derive(Debug, Clone)]
pub(crate) struct ConfigParams {
    pub(crate) audit_log: PathBuf,
    /// The loopback OTLP/HTTP collector.
    pub(crate) collector: SocketAddr,
}

/// The user config file (`$NETPROXY_HOME/config.toml`): full mode, local binding allowed (every
/// name resolves to 127.0.0.1 through `[network.dns] hosts`), no upstream proxy, interception on
/// with one hook on [`TLS_HOST`], the audit to a file and over OTLP/HTTP. `toggle` says whether
/// [`TOGGLE_HOST`] is allowed; nothing else differs between the two texts, so a reload never
/// touches a restart key.
pub(crate) fn config_text(p: &ConfigParams, toggle: bool) -> String {
    let mut allowed = vec![HTTP_HOST, ECHO_HOST, UDP_HOST, TLS_HOST];
    if toggle {
        allowed.push(TOGGLE_HOST);
    }
    let mut s = String::from(
        "# The config of `cargo xtask soak`, rewritten at every reload (only the toggled domain\n\
         # changes).\n[network]\nmode = \"full\"\nallow_local_binding = true\n\
         allow_upstream_proxy = false\n",
    );
    s += &format!(
        "audit_log = {}\n\n[network.domains]\n",
        toml_string(&p.audit_log)
    );
    for h in allowed {
        s += &format!("{h:?} = \"allow\"\n");
    }
    s += &format!("{DENIED_HOST:?} = \"deny\"\n\n[network.dns]\nhosts = {{ ");
    let hosts: Vec<String> = [
        HTTP_HOST,
        ECHO_HOST,
        UDP_HOST,
        TLS_HOST,
        DENIED_HOST,
        UNLISTED_HOST,
        TOGGLE_HOST,
        ADMIN_HOST,
    ]
    .iter()
    .map(|h| format!("{h:?} = [\"127.0.0.1\"]"))
    .collect();
    s += &hosts.join(", ");
    s += &format!(
        " }}\n\n[network.mitm]\nenabled = true\n\n[network.mitm.hooks.soak]\nhost = {TLS_HOST:?}\n\
         methods = [\"GET\"]\npath_prefixes = [{HOOK_PREFIX:?}]\n\n[otel]\nexporter = \"otlp-http\"\n\
         endpoint = \"http://{}\"\n",
        p.collector
    );
    s
}

/// A TOML basic string of a path.
fn toml_string(p: &std::path::Path) -> String {
    let mut s = String::from("\"");
    for c in p.to_string_lossy().chars() {
        match c {
            '"' => s += "\\\"",
            '\\' => s += "\\\\",
            c if c.is_control() => s += &format!("\\u{:04X}", u32::from(c)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn counts(items: &[(EventKey, u64)]) -> Counts {
        items.iter().cloned().collect()
    }

    #[test]
    fn answers_stand_for_their_events() {
        let a = EventKey::allowed;
        assert_eq!(events_for_answer("http", 200, None), Some(vec![a("http")]));
        assert_eq!(
            events_for_answer("https", 403, Some("mitm_hook_denied")),
            Some(vec![EventKey::refused("https", "mitm_hook_denied")])
        );
        assert_eq!(
            events_for_answer("https_connect", 502, Some("dns_failed")),
            Some(vec![EventKey::new(
                "https_connect",
                "allow",
                "dns_failed",
                false
            )])
        );
        assert_eq!(
            events_for_answer("http", 504, Some("upstream_timeout")),
            Some(vec![
                a("http"),
                EventKey::new("http", "allow", "upstream_timeout", false)
            ])
        );
        assert_eq!(
            events_for_answer("https", 405, Some("method_not_allowed")),
            None
        );
        assert_eq!(
            answer_reason(br#"{"status":"blocked","reason":"denied","decision":"deny"}"#),
            Some("denied".into())
        );
        assert_eq!(answer_reason(br#"{"status":"ok","reason":"x"}"#), None);
        assert_eq!(answer_reason(b"xxxx"), None);
    }

    #[test]
    fn audit_lines_are_read_and_other_lines_refused() {
        let line = r#"{"event.name":"netproxy.policy_decision","network.policy.decision":"deny","network.policy.reason":"not_allowed","network.transport.protocol":"https_connect","network.policy.revoked":true,"server.address":"toggle.soak.test"}"#;
        assert_eq!(
            audit_line(line).unwrap(),
            EventKey::revoked("https_connect", "not_allowed")
        );
        let line = r#"{"event.name":"netproxy.policy_decision","network.policy.decision":"allow","network.policy.reason":"allow","network.transport.protocol":"http"}"#;
        assert_eq!(audit_line(line).unwrap(), EventKey::allowed("http"));
        assert!(audit_line(r#"{"event.name":"netproxy.udp_association"}"#).is_err());
        assert!(audit_line(r#"{"event.name":"netproxy.policy_decision"}"#).is_err());
        assert!(audit_line(r#"{"event.name":"netproxy.policy_de"#).is_err());
    }

    #[test]
    fn records_are_keyed_by_their_attributes() {
        let t = |k: &str, v: &str| (k.to_owned(), AttrValue::Text(v.to_owned()));
        let mut attrs = vec![
            t("network.transport.protocol", "socks5_tcp"),
            t("network.policy.decision", "deny"),
            t("network.policy.reason", "denied"),
            ("network.policy.override".to_owned(), AttrValue::Bool(false)),
        ];
        assert_eq!(
            record_key("netproxy.policy_decision", &attrs).unwrap(),
            EventKey::refused("socks5_tcp", "denied")
        );
        attrs.push(("network.policy.revoked".to_owned(), AttrValue::Bool(true)));
        assert_eq!(
            record_key("netproxy.policy_decision", &attrs).unwrap(),
            EventKey::revoked("socks5_tcp", "denied")
        );
        assert!(record_key("other", &attrs).is_err());
        assert!(record_key("netproxy.policy_decision", &attrs[1..]).is_err());
    }

    #[test]
    fn metrics_are_read() {
        let text = "# HELP netproxy_decisions_total Decisions.\n\
# TYPE netproxy_decisions_total counter\n\
netproxy_requests_total{protocol=\"http\"} 12\n\
netproxy_decisions_total{protocol=\"http\",decision=\"allow\",reason=\"allow\"} 10\n\
netproxy_decisions_total{protocol=\"http\",decision=\"deny\",reason=\"denied\"} 2\n\
netproxy_audit_export_dropped_total 0\n\
netproxy_reloads_total{result=\"ok\"} 3\n\
netproxy_reloads_total{result=\"failed\"} 1\n\
netproxy_active_connections{protocol=\"http\"} 2\n\
netproxy_active_connections{protocol=\"socks5\"} 0\n\
netproxy_active_tunnels{protocol=\"https_connect\"} 1\n\
netproxy_dns_lookup_seconds_sum 0.5\n\
# EOF\n";
        let m = parse_metrics(text).unwrap();
        assert_eq!(m.total(), 12);
        assert_eq!(
            m.decisions[&("http".into(), "deny".into(), "denied".into())],
            2
        );
        assert_eq!(
            (m.dropped, m.reloads_ok, m.reloads_failed, m.active),
            (0, 3, 1, 3)
        );
        assert!(parse_metrics("netproxy_decisions_total{protocol=\"http\"} 1").is_err());
        assert!(parse_metrics("netproxy_audit_export_dropped_total x").is_err());
        assert!(parse_metrics("netproxy_audit_export_dropped_total 1.5").is_err());
    }

    #[test]
    fn reconciliation_is_exact_per_key() {
        let allow = EventKey::allowed("http");
        let deny = EventKey::refused("http", "denied");
        let revoked = EventKey::revoked("socks5_tcp", "denied");
        let expected = counts(&[(allow.clone(), 10), (deny.clone(), 2), (revoked.clone(), 1)]);
        let metrics: BTreeMap<MetricKey, u64> = [
            (allow.labels(), 10),
            (deny.labels(), 2),
            (revoked.labels(), 1),
        ]
        .into_iter()
        .collect();
        let r = reconcile(&expected, &expected, &expected, &metrics);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.rows.len(), 3);

        // One allow lost by the collector, one refusal more in the file, a revocation the
        // metrics count as a plain refusal of the same labels too many.
        let collector = counts(&[(allow.clone(), 9), (deny.clone(), 2), (revoked.clone(), 1)]);
        let file = counts(&[(allow.clone(), 10), (deny.clone(), 3), (revoked.clone(), 1)]);
        let mut m = metrics.clone();
        *m.get_mut(&revoked.labels()).unwrap() += 1;
        let r = reconcile(&expected, &file, &collector, &m);
        assert_eq!(
            r.problems,
            vec![
                "http allow allow: 10 caused, 9 in the collector (1 lost)".to_owned(),
                "http deny denied: 2 caused, 3 in the audit file (1 more than caused)".to_owned(),
                "socks5_tcp deny denied: 1 caused, 2 in the metrics (1 more than caused)"
                    .to_owned(),
            ]
        );
        // A key nobody caused is a difference too.
        let stray = EventKey::refused("https", "mitm_hook_denied");
        let mut file = expected.clone();
        file.insert(stray.clone(), 1);
        let r = reconcile(&expected, &file, &expected, &metrics);
        assert_eq!(
            r.problems,
            vec![
                "https deny mitm_hook_denied: 0 caused, 1 in the audit file (1 more than caused)"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn growth_compares_the_last_quarter_with_the_first_after_the_warm_up() {
        // A warm-up climbing from 10 to 100, then flat with noise: no growth.
        let mut s: Vec<f64> = (1..=10).map(|i| f64::from(i) * 10.0).collect();
        s.extend((0..40).map(|i| 100.0 + f64::from(i % 3)));
        assert_eq!(s.len(), 10 + MIN_JUDGED);
        let g = growth(&s, 10).unwrap();
        assert!(!g.exceeds(0.10), "{g:?}");
        // Judged from the start, the warm-up would look like growth.
        assert!(growth(&s, 0).unwrap().exceeds(0.10));
        // A steady leak: 100 to 140 over the judged samples.
        let leak: Vec<f64> = (0..40).map(|i| 100.0 + f64::from(i)).collect();
        let g = growth(&leak, 0).unwrap();
        assert!(g.exceeds(0.10), "{g:?}");
        assert!((g.first - 104.5).abs() < 1e-9 && (g.last - 134.5).abs() < 1e-9);
        // Exactly 10% more is not past the limit.
        let edge = [vec![100.0; 10], vec![105.0; 20], vec![110.0; 10]].concat();
        assert!(!growth(&edge, 0).unwrap().exceeds(0.10));
        // Too few samples after the warm-up: not judged.
        assert!(growth(&s, 11).is_none());
        assert!(growth(&s, 60).is_none());
        // A burst of descriptors at one sample of ten does not pass for growth.
        let mut fds = vec![24.0; 40];
        fds[35] = 32.0;
        assert!(!growth(&fds, 0).unwrap().exceeds(0.10));
        assert_eq!(
            Growth {
                first: 0.0,
                last: 0.0
            }
            .ratio(),
            0.0
        );
        assert!(
            Growth {
                first: 0.0,
                last: 1.0
            }
            .exceeds(0.10)
        );
        assert_eq!(warmup_secs(120.0), 20.0);
        assert_eq!(warmup_secs(1800.0), 180.0);
        assert_eq!(warmup_secs(600.0), 60.0);
    }

    #[test]
    fn the_config_toggles_one_domain_and_nothing_else() {
        let p = ConfigParams {
            audit_log: PathBuf::from("/tmp/soak \"x\"/audit.jsonl"),
            collector: "127.0.0.1:4318".parse().unwrap(),
        };
        let on = config_text(&p, true);
        let off = config_text(&p, false);
        let differ: Vec<&str> = on
            .lines()
            .filter(|l| !off.lines().any(|o| o == *l))
            .collect();
        assert_eq!(differ, vec!["\"toggle.soak.test\" = \"allow\""]);
        assert_eq!(on.lines().count(), off.lines().count() + 1);
        assert!(
            on.contains("audit_log = \"/tmp/soak \\\"x\\\"/audit.jsonl\"\n"),
            "{on}"
        );
        assert!(on.contains("endpoint = \"http://127.0.0.1:4318\"\n"));
        assert!(off.contains("\"admin.soak.test\" = [\"127.0.0.1\"]"));
        assert!(!off.contains("\"admin.soak.test\" = \"allow\""));
        assert!(on.contains("\"denied.soak.test\" = \"deny\"\n"));
    }
}
