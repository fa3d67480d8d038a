//! The body of one OTLP logs export (an encoded `ExportLogsServiceRequest`), written straight
//! from the audit events.
//!
//! The constant parts (the resource, the scope, each record's severity and body, the event
//! name) are encoded once by prost from opentelemetry-proto's generated types. Each event then
//! only adds its record: its timestamp, and its attributes as `KeyValue`/`AnyValue` messages,
//! framed with prost's key, varint and length functions. Filling generated structs first and
//! encoding them afterwards cost about twice as much per event (docs/benchmarks.md). The
//! output is the same bytes prost writes for the equivalent request (a unit test checks it).

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use proxy_core::AuditEvent;

/// The instrumentation scope of the records.
pub(super) const SCOPE: &str = "netproxy.audit";

/// Field numbers of the OTLP messages written here.
mod tag {
    /// `ExportLogsServiceRequest.resource_logs`, `ResourceLogs.resource`, `ScopeLogs.scope`,
    /// `LogRecord.time_unix_nano`, `KeyValue.key`, `AnyValue.string_value`.
    pub(super) const FIRST: u32 = 1;
    /// `ResourceLogs.scope_logs`, `ScopeLogs.log_records`, `KeyValue.value`,
    /// `AnyValue.bool_value`.
    pub(super) const SECOND: u32 = 2;
    /// `AnyValue.int_value`.
    pub(super) const INT_VALUE: u32 = 3;
    /// `LogRecord.attributes`.
    pub(super) const ATTRIBUTES: u32 = 6;
}

/// An attribute's value.
#[derive(Clone, Copy)]
enum Val<'a> {
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
}

/// Length of a length-delimited field holding `len` bytes, key included.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_delimited(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

/// Length of the `AnyValue` message holding `v`.
fn any_len(v: Val<'_>) -> usize {
    match v {
        Val::Str(s) => delimited_len(tag::FIRST, s.len()),
        Val::Bool(_) => key_len(tag::SECOND) + 1,
        // int64 is a varint of the two's complement.
        Val::Int(i) => key_len(tag::INT_VALUE) + encoded_len_varint(i as u64),
    }
}

fn put_any(v: Val<'_>, out: &mut Vec<u8>) {
    match v {
        Val::Str(s) => {
            put_delimited(tag::FIRST, s.len(), out);
            out.extend_from_slice(s);
        }
        Val::Bool(b) => {
            encode_key(tag::SECOND, WireType::Varint, out);
            encode_varint(u64::from(b), out);
        }
        Val::Int(i) => {
            encode_key(tag::INT_VALUE, WireType::Varint, out);
            encode_varint(i as u64, out);
        }
    }
}

/// Length of the `KeyValue` message `key` = `v`.
fn kv_len(key: &str, v: Val<'_>) -> usize {
    delimited_len(tag::FIRST, key.len()) + delimited_len(tag::SECOND, any_len(v))
}

/// The most attributes an event has (all the optional ones at once).
const MAX_ATTRIBUTES: usize = 18;

/// The attributes of an event, in the order they are written: those of every event, then the
/// rule and the layer when known, `network.policy.revoked` on a revocation,
/// `credential.grant` and `credential.injected` for a request that carried a brokered dummy,
/// and `network.policy.learn` in learn mode, and `error.type` for a failure.
fn attributes<'a>(
    ev: &'a AuditEvent,
    client: &'a [u8],
) -> ([(&'static str, Val<'a>); MAX_ATTRIBUTES], usize) {
    let s = |v: &'a str| Val::Str(v.as_bytes());
    let unused = ("", Val::Bool(false));
    let mut all = [
        ("network.policy.scope", s(ev.scope.as_str())),
        ("network.policy.decision", s(ev.decision.as_str())),
        ("network.policy.source", s(ev.source.as_str())),
        ("network.policy.reason", s(ev.reason)),
        ("network.policy.override", Val::Bool(ev.policy_override)),
        ("network.policy.mode", s(ev.mode.as_str())),
        ("network.transport.protocol", s(ev.protocol.as_str())),
        ("server.address", s(&ev.server_address)),
        ("server.port", Val::Int(i64::from(ev.server_port))),
        (
            "http.request.method",
            s(ev.method.as_deref().unwrap_or("none")),
        ),
        ("client.address", Val::Str(client)),
        unused,
        unused,
        unused,
        unused,
        unused,
        unused,
        unused,
    ];
    let mut n = 11;
    let mut push = |key, v| {
        all[n] = (key, v);
        n += 1;
    };
    if let Some(rule) = &ev.rule {
        push("network.policy.rule", s(&rule.pattern));
        if let Some(layer) = &rule.origin {
            push("network.policy.layer", s(layer));
        }
    }
    if ev.revoked {
        push("network.policy.revoked", Val::Bool(true));
    }
    if let Some(c) = &ev.credential {
        push("credential.grant", s(&c.grant));
        push("credential.injected", Val::Bool(c.injected));
    }
    if ev.learn {
        push("network.policy.learn", Val::Bool(true));
    }
    if let Some(f) = &ev.failure {
        push("error.type", s(f.kind.as_str()));
    }
    (all, n)
}

fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Builds export bodies, one batch of events at a time.
#[derive(Debug)]
pub(super) struct Body {
    /// `ResourceLogs.resource`, encoded with its key and length.
    resource: Vec<u8>,
    /// `ScopeLogs.scope`, encoded with its key and length.
    scope: Vec<u8>,
    /// Fields 2, 3 and 5 of every record: severity number and text, and the body.
    prelude: Vec<u8>,
    /// Fields 11 and 12 of the batch's records: the observed time and the event name.
    epilogue: Vec<u8>,
    /// The room left at the start of `out` for the headers.
    headroom: usize,
    /// Headroom, then the records written so far.
    out: Vec<u8>,
    /// The client address text of the event being written.
    client: Vec<u8>,
}

impl Body {
    pub(super) fn new(service_version: &str) -> Self {
        let text = |key: &str, v: &str| KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.to_owned())),
            }),
            ..KeyValue::default()
        };
        let resource = Resource {
            attributes: vec![
                text("service.name", "netproxy"),
                text("service.version", service_version),
            ],
            ..Resource::default()
        };
        let scope = InstrumentationScope {
            name: SCOPE.to_owned(),
            version: service_version.to_owned(),
            ..InstrumentationScope::default()
        };
        let mut resource_field = Vec::new();
        prost::encoding::message::encode(tag::FIRST, &resource, &mut resource_field);
        let mut scope_field = Vec::new();
        prost::encoding::message::encode(tag::FIRST, &scope, &mut scope_field);
        let prelude = LogRecord {
            severity_number: SeverityNumber::Info as i32,
            severity_text: "INFO".to_owned(),
            body: Some(AnyValue {
                value: Some(Value::StringValue("policy decision".to_owned())),
            }),
            ..LogRecord::default()
        }
        .encode_to_vec();
        // The constant parts, two one-byte keys and two length varints (ten bytes at most).
        let headroom = resource_field.len() + scope_field.len() + 2 * (1 + 10);
        Self {
            resource: resource_field,
            scope: scope_field,
            prelude,
            epilogue: Vec::new(),
            headroom,
            out: Vec::new(),
            client: Vec::new(),
        }
    }

    /// Starts a batch whose records were observed at `observed`.
    pub(super) fn start(&mut self, observed: std::time::SystemTime) {
        self.epilogue = LogRecord {
            observed_time_unix_nano: nanos(observed),
            event_name: proxy_core::EVENT_NAME.to_owned(),
            ..LogRecord::default()
        }
        .encode_to_vec();
        self.out.clear();
        self.out.resize(self.headroom, 0);
    }

    /// Adds `ev` as a `LogRecord`.
    pub(super) fn push(&mut self, ev: &AuditEvent) {
        self.client.clear();
        crate::client_address(&mut self.client, ev.client);
        let (attrs, n) = attributes(ev, &self.client);
        let attrs = &attrs[..n];
        let mut lens = [0usize; MAX_ATTRIBUTES];
        let time = nanos(ev.timestamp);
        let mut len = self.prelude.len() + self.epilogue.len();
        if time != 0 {
            len += key_len(tag::FIRST) + 8;
        }
        for ((key, v), l) in attrs.iter().zip(&mut lens) {
            *l = kv_len(key, *v);
            len += delimited_len(tag::ATTRIBUTES, *l);
        }
        let out = &mut self.out;
        out.reserve(delimited_len(tag::SECOND, len));
        put_delimited(tag::SECOND, len, out);
        if time != 0 {
            encode_key(tag::FIRST, WireType::SixtyFourBit, out);
            out.extend_from_slice(&time.to_le_bytes());
        }
        out.extend_from_slice(&self.prelude);
        for ((key, v), l) in attrs.iter().zip(lens) {
            put_delimited(tag::ATTRIBUTES, l, out);
            put_delimited(tag::FIRST, key.len(), out);
            out.extend_from_slice(key.as_bytes());
            put_delimited(tag::SECOND, any_len(*v), out);
            put_any(*v, out);
        }
        out.extend_from_slice(&self.epilogue);
    }

    /// The encoded request holding the batch's records; the next batch needs
    /// [`Body::start`].
    pub(super) fn finish(&mut self) -> Bytes {
        let records_len = self.out.len() - self.headroom;
        let scope_logs = self.scope.len() + records_len;
        let resource_logs = self.resource.len() + delimited_len(tag::SECOND, scope_logs);
        let mut head = Vec::with_capacity(self.headroom);
        put_delimited(tag::FIRST, resource_logs, &mut head);
        head.extend_from_slice(&self.resource);
        put_delimited(tag::SECOND, scope_logs, &mut head);
        head.extend_from_slice(&self.scope);
        let at = self.headroom - head.len();
        self.out[at..self.headroom].copy_from_slice(&head);
        let capacity = self.out.len();
        let out = std::mem::replace(&mut self.out, Vec::with_capacity(capacity));
        Bytes::from(out).slice(at..)
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.to_owned()))
}

/// The request for `events`, built field by field from opentelemetry-proto's generated types:
/// the reference [`Body`]'s bytes must equal once prost encodes it (a unit test and the `otlp`
/// fuzz target check it). Slow (a `String` per key and value); never on the export path.
pub(crate) fn reference(
    service_version: &str,
    events: &[AuditEvent],
    observed: std::time::SystemTime,
) -> ExportLogsServiceRequest {
    let records = events
        .iter()
        .map(|ev| {
            let mut attributes = vec![
                text("network.policy.scope", ev.scope.as_str()),
                text("network.policy.decision", ev.decision.as_str()),
                text("network.policy.source", ev.source.as_str()),
                text("network.policy.reason", ev.reason),
                kv(
                    "network.policy.override",
                    Value::BoolValue(ev.policy_override),
                ),
                text("network.policy.mode", ev.mode.as_str()),
                text("network.transport.protocol", ev.protocol.as_str()),
                text("server.address", &ev.server_address),
                kv("server.port", Value::IntValue(i64::from(ev.server_port))),
                text(
                    "http.request.method",
                    ev.method.as_deref().unwrap_or("none"),
                ),
                text(
                    "client.address",
                    &ev.client
                        .map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
                ),
            ];
            if let Some(rule) = &ev.rule {
                attributes.push(text("network.policy.rule", &rule.pattern));
                if let Some(layer) = &rule.origin {
                    attributes.push(text("network.policy.layer", layer));
                }
            }
            if ev.revoked {
                attributes.push(kv("network.policy.revoked", Value::BoolValue(true)));
            }
            if let Some(c) = &ev.credential {
                attributes.push(text("credential.grant", &c.grant));
                attributes.push(kv("credential.injected", Value::BoolValue(c.injected)));
            }
            if ev.learn {
                attributes.push(kv("network.policy.learn", Value::BoolValue(true)));
            }
            if let Some(f) = &ev.failure {
                attributes.push(text("error.type", f.kind.as_str()));
            }
            LogRecord {
                time_unix_nano: nanos(ev.timestamp),
                observed_time_unix_nano: nanos(observed),
                severity_number: SeverityNumber::Info as i32,
                severity_text: "INFO".to_owned(),
                body: Some(AnyValue {
                    value: Some(Value::StringValue("policy decision".to_owned())),
                }),
                attributes,
                event_name: proxy_core::EVENT_NAME.to_owned(),
                ..LogRecord::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", "netproxy"),
                    text("service.version", service_version),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: SCOPE.to_owned(),
                    version: service_version.to_owned(),
                    ..InstrumentationScope::default()
                }),
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use proxy_core::{Decision, Mode, Protocol, Reason, RequestMeta, Target};

    use super::*;

    fn events() -> Vec<AuditEvent> {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_123);
        let meta = |p: Protocol, host: &str, port: u16| {
            RequestMeta::new(p, Target::parse_authority(host, port).unwrap())
        };
        let at = |meta: RequestMeta, decision: Decision, mode: Mode| {
            let mut ev = AuditEvent::new(&meta, &decision, mode);
            ev.timestamp = t;
            ev
        };
        let with_rule = at(
            meta(Protocol::Http, "a-rather-long-host-name.example", 8080)
                .with_method("POST")
                .with_client("[::1]:4000".parse().unwrap()),
            Decision::deny(Reason::Denied)
                .with_rule(proxy_core::Rule::new("**.example", Some("user".into()))),
            Mode::Limited,
        );
        let bare = at(
            meta(Protocol::Socks5Udp, "b.example", 53),
            Decision::deny(Reason::NotAllowed),
            Mode::Full,
        );
        let mut rule_only = at(
            meta(Protocol::HttpsConnect, "c.example", 443)
                .with_method("CONNECT")
                .with_client("192.168.10.200:65535".parse().unwrap()),
            Decision::allow().with_rule(proxy_core::Rule::new("c.\"odd\u{1}", None)),
            Mode::Full,
        );
        rule_only.policy_override = true;
        // A decision from before 1970 (a broken clock) has no timestamp field at all.
        let mut long = bare.clone();
        long.timestamp = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        long.server_address = "x".repeat(300);
        let mut revoked = with_rule.clone();
        revoked.revoked = true;
        let mut revoked_bare = bare.clone();
        revoked_bare.revoked = true;
        let mut injected = with_rule.clone();
        injected.credential = Some(proxy_core::CredentialField {
            grant: "GH_TOKEN".into(),
            injected: true,
        });
        let mut refused = revoked_bare.clone();
        refused.credential = Some(proxy_core::CredentialField {
            grant: "odd\"grant".into(),
            injected: false,
        });
        // Every attribute at once: a learn-mode revocation of a request with a dummy.
        let mut learned = refused.clone();
        learned.learn = true;
        let mut learned_bare = bare.clone();
        learned_bare.learn = true;
        // A failure, and one with every optional attribute at once.
        let mut failed = AuditEvent::failure(
            &meta(Protocol::HttpsConnect, "gone.example", 443),
            &Decision::allow().with_rule(proxy_core::Rule::new("*.example", None)),
            &proxy_core::Failure::new(proxy_core::UpstreamFailure::DnsFailed, "no such name"),
            Mode::Full,
        );
        failed.timestamp = t;
        let mut everything = injected.clone();
        everything.revoked = true;
        everything.failure = failed.failure.clone();
        vec![
            with_rule,
            bare,
            rule_only,
            long,
            revoked,
            revoked_bare,
            injected,
            refused,
            learned,
            learned_bare,
            failed,
            everything,
        ]
    }

    #[test]
    fn bodies_are_the_bytes_prost_writes_for_the_same_request() {
        let all = events();
        let mut body = Body::new("1.2.3");
        let observed = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_601_123);
        // Batches of different sizes, one after the other, through the same builder.
        for batch in [
            &all[..],
            &all[1..2],
            &all[..0],
            &all[2..],
            &[all[3].clone(), all[0].clone()],
        ] {
            body.start(observed);
            for ev in batch {
                body.push(ev);
            }
            let bytes = body.finish();
            let want = reference("1.2.3", batch, observed);
            assert_eq!(
                ExportLogsServiceRequest::decode(bytes.clone()).unwrap(),
                want
            );
            assert_eq!(bytes, want.encode_to_vec());
        }
    }
}
