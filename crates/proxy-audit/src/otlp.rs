//! OTLP logs export of audit events (`[otel] exporter = "otlp-http" | "otlp-grpc"`).
//!
//! The request path only pushes the event into our bounded, drop-oldest queue ([`DropOldest`],
//! drops counted). A pump thread takes up to 512 events at a time and writes them into an
//! `ExportLogsServiceRequest` of opentelemetry-proto's generated types, which it keeps from
//! batch to batch: each record's attribute keys are written once, and later events only
//! overwrite the values in place, so a steady stream of events allocates almost nothing. prost
//! encodes the request; hyper posts it to `/v1/logs` (OTLP/HTTP, protobuf), or the generated
//! tonic client sends it (OTLP/gRPC). The pump waits for that export before taking more.
//!
//! There is no OpenTelemetry SDK in between: going through SDK log records and
//! opentelemetry-otlp's exporter, which converts every record again and allocates a `String`
//! for every attribute key and value, cost 3.6 µs of CPU per event, the largest part of the
//! audit's cost (docs/benchmarks.md). A collector that is down or hangs only fills our queue;
//! requests never wait for it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proxy_core::{AuditEvent, AuditSink};

use crate::queue::DropOldest;

/// Events waiting for export; beyond this the oldest are dropped and counted.
const QUEUE: usize = 65_536;
/// Events per export.
const BATCH: usize = 512;
/// How long one export may take, its retry included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// The pause before the one retry of an export that failed in a way worth retrying.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long shutdown keeps exporting what is queued.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(3);
/// The most of a collector's answer that is read.
const RESPONSE_LIMIT: usize = 64 * 1024;
/// The instrumentation scope of the records.
const SCOPE: &str = "netproxy.audit";

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (`otlp-http`).
    Http,
    /// OTLP/gRPC (`otlp-grpc`).
    Grpc,
}

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The transport.
    pub protocol: OtlpProtocol,
    /// The collector: for HTTP a base URL (`/v1/logs` is appended unless already there), for
    /// gRPC the server URL. Plain `http://` only.
    pub endpoint: String,
    /// Extra headers (gRPC metadata).
    pub headers: Vec<(String, String)>,
    /// `service.version` of the resource.
    pub service_version: String,
}

/// Why export could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The endpoint or a header is not usable.
    #[error("{0}")]
    Config(String),
    /// The pump thread could not start.
    #[error("cannot start the OTLP export thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The audit sink that exports over OTLP.
#[derive(Debug)]
pub struct OtlpSink {
    shared: Arc<Shared>,
    pump: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Receives once the pump thread has finished.
    done: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

#[derive(Debug)]
struct Shared {
    queue: DropOldest<Arc<AuditEvent>>,
    /// Set by `close`: after it, export stops at this instant and the rest is dropped.
    deadline: std::sync::Mutex<Option<Instant>>,
    expired: std::sync::atomic::AtomicU64,
}

fn plain_http(endpoint: &str) -> Result<&str, OtlpError> {
    let e = endpoint.trim().trim_end_matches('/');
    if e.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
    {
        Ok(e)
    } else {
        Err(OtlpError::Config(format!(
            "otel.endpoint {endpoint:?}: only plain http:// collectors are supported"
        )))
    }
}

fn logs_url(endpoint: &str) -> Result<String, OtlpError> {
    let e = plain_http(endpoint)?;
    Ok(if e.ends_with("/v1/logs") {
        e.to_owned()
    } else {
        format!("{e}/v1/logs")
    })
}

fn header_map(headers: &[(String, String)]) -> Result<http::HeaderMap, OtlpError> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| OtlpError::Config(format!("otel.headers.{k}: {e}")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|e| OtlpError::Config(format!("otel.headers.{k}: {e}")))?;
        map.append(name, value);
    }
    Ok(map)
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// How a batch reaches the collector.
#[derive(Debug)]
enum Transport {
    Http {
        client: HttpClient,
        uri: http::Uri,
        headers: http::HeaderMap,
    },
    Grpc {
        client: LogsServiceClient<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
}

/// An export that did not succeed.
#[derive(Debug)]
struct Failed {
    reason: String,
    /// Worth one more try (the collector was unreachable, busy or restarting).
    transient: bool,
}

impl Transport {
    fn new(config: &OtlpConfig) -> Result<Self, OtlpError> {
        let headers = header_map(&config.headers)?;
        match config.protocol {
            OtlpProtocol::Http => {
                let url = logs_url(&config.endpoint)?;
                let uri: http::Uri = url.parse().map_err(|e| {
                    OtlpError::Config(format!("otel.endpoint {:?}: {e}", config.endpoint))
                })?;
                let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(EXPORT_TIMEOUT));
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector);
                Ok(Self::Http {
                    client,
                    uri,
                    headers,
                })
            }
            OtlpProtocol::Grpc => {
                let endpoint = plain_http(&config.endpoint)?;
                let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
                    .map_err(|e| {
                        OtlpError::Config(format!("otel.endpoint {:?}: {e}", config.endpoint))
                    })?
                    .connect_timeout(EXPORT_TIMEOUT)
                    .timeout(EXPORT_TIMEOUT)
                    .connect_lazy();
                Ok(Self::Grpc {
                    client: LogsServiceClient::new(channel),
                    metadata: tonic::metadata::MetadataMap::from_headers(headers),
                })
            }
        }
    }

    /// Sends one request; on success, how many records the collector said it rejected.
    async fn send(&mut self, request: &ExportLogsServiceRequest) -> Result<i64, Failed> {
        match self {
            Self::Http {
                client,
                uri,
                headers,
            } => {
                let body = Bytes::from(prost::Message::encode_to_vec(request));
                let mut req = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .header(http::header::USER_AGENT, USER_AGENT)
                    .body(Full::new(body))
                    .map_err(|e| Failed {
                        reason: e.to_string(),
                        transient: false,
                    })?;
                req.headers_mut()
                    .extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
                let resp = client.request(req).await.map_err(|e| Failed {
                    reason: format!("{e}"),
                    transient: true,
                })?;
                let status = resp.status();
                // The answer is small; a collector that sends more is cut off.
                let body = http_body_util::Limited::new(resp.into_body(), RESPONSE_LIMIT)
                    .collect()
                    .await
                    .map_err(|e| Failed {
                        reason: format!("reading the response: {e}"),
                        transient: true,
                    })?
                    .to_bytes();
                if !status.is_success() {
                    return Err(Failed {
                        reason: format!("the collector answered {status}"),
                        transient: matches!(status.as_u16(), 429 | 502 | 503 | 504),
                    });
                }
                // The body is an ExportLogsServiceResponse; a collector may leave it empty.
                Ok(<ExportLogsServiceResponse as prost::Message>::decode(body)
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map_or(0, |p| p.rejected_log_records))
            }
            Self::Grpc { client, metadata } => {
                // The generated client takes the request by value: a copy goes, and the
                // records are kept for the next batch (and a retry).
                let mut req = tonic::Request::new(request.clone());
                *req.metadata_mut() = metadata.clone();
                req.set_timeout(EXPORT_TIMEOUT);
                let resp = client.export(req).await.map_err(|s| Failed {
                    transient: matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                    ),
                    reason: format!("{s}"),
                })?;
                Ok(resp
                    .into_inner()
                    .partial_success
                    .map_or(0, |p| p.rejected_log_records))
            }
        }
    }

    /// Exports one batch, retrying once after a transient failure, within [`EXPORT_TIMEOUT`].
    async fn export(&mut self, batch: &Batch) -> Result<i64, String> {
        let attempt = async {
            let mut retried = false;
            loop {
                match self.send(&batch.request).await {
                    Ok(rejected) => return Ok(rejected),
                    Err(f) if f.transient && !retried => {
                        retried = true;
                        tracing::debug!(target: "netproxy::otlp", error = %f.reason, "OTLP export failed; retrying once");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Err(f) => return Err(f.reason),
                }
            }
        };
        match tokio::time::timeout(EXPORT_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer from the collector within {EXPORT_TIMEOUT:?}"
            )),
        }
    }
}

const USER_AGENT: &str = concat!("netproxy/", env!("CARGO_PKG_VERSION"));

/// The request the pump fills, kept between batches with its records.
#[derive(Debug)]
struct Batch {
    /// The resource and scope, and the records of the batch being exported.
    request: ExportLogsServiceRequest,
    /// Records of earlier, larger batches, kept for their allocations.
    spare: Vec<LogRecord>,
}

/// The attributes every record has, in this order, followed by the rule and the layer when
/// they are known.
const KEYS: [&str; 11] = [
    "network.policy.scope",
    "network.policy.decision",
    "network.policy.source",
    "network.policy.reason",
    "network.policy.override",
    "network.policy.mode",
    "network.transport.protocol",
    "server.address",
    "server.port",
    "http.request.method",
    "client.address",
];
const RULE: usize = KEYS.len();
const LAYER: usize = RULE + 1;
const RULE_KEY: &str = "network.policy.rule";
const LAYER_KEY: &str = "network.policy.layer";

fn string(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(s.to_owned())),
    })
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: string(value),
        ..KeyValue::default()
    }
}

/// Rewrites the string value of `kv` with `write`, in the allocation it already has.
fn set_text(kv: &mut KeyValue, write: impl FnOnce(&mut String)) {
    let mut text = match kv.value.take() {
        Some(AnyValue {
            value: Some(Value::StringValue(s)),
        }) => s,
        _ => String::new(),
    };
    text.clear();
    write(&mut text);
    kv.value = Some(AnyValue {
        value: Some(Value::StringValue(text)),
    });
}

fn set_str(kv: &mut KeyValue, v: &str) {
    set_text(kv, |s| s.push_str(v));
}

fn set(kv: &mut KeyValue, v: Value) {
    kv.value = Some(AnyValue { value: Some(v) });
}

/// The rule or the layer at `at`: overwritten in place, added, or removed with what follows.
fn set_optional(attributes: &mut Vec<KeyValue>, at: usize, key: &str, v: Option<&str>) {
    match v {
        Some(v) if attributes.len() > at => set_str(&mut attributes[at], v),
        Some(v) => {
            attributes.push(kv(key, v));
        }
        None => attributes.truncate(at),
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn new_record() -> LogRecord {
    LogRecord {
        severity_number: SeverityNumber::Info as i32,
        severity_text: "INFO".to_owned(),
        event_name: proxy_core::EVENT_NAME.to_owned(),
        body: string("policy decision"),
        attributes: {
            let mut a = Vec::with_capacity(KEYS.len() + 2);
            a.extend(KEYS.iter().map(|k| kv(k, "")));
            a
        },
        ..LogRecord::default()
    }
}

/// Writes `ev` into a record made by [`new_record`].
fn fill(r: &mut LogRecord, ev: &AuditEvent, observed: u64) {
    use std::fmt::Write as _;
    r.time_unix_nano = nanos(ev.timestamp);
    r.observed_time_unix_nano = observed;
    let a = &mut r.attributes;
    set_str(&mut a[0], ev.scope.as_str());
    set_str(&mut a[1], ev.decision.as_str());
    set_str(&mut a[2], ev.source.as_str());
    set_str(&mut a[3], ev.reason);
    set(&mut a[4], Value::BoolValue(ev.policy_override));
    set_str(&mut a[5], ev.mode.as_str());
    set_str(&mut a[6], ev.protocol.as_str());
    set_str(&mut a[7], &ev.server_address);
    set(&mut a[8], Value::IntValue(i64::from(ev.server_port)));
    set_str(&mut a[9], ev.method.as_deref().unwrap_or("none"));
    match ev.client {
        Some(c) => {
            set_text(&mut a[10], |s| {
                let _ = write!(s, "{c}");
            });
        }
        None => set_str(&mut a[10], "unknown"),
    }
    let rule = ev.rule.as_ref();
    set_optional(a, RULE, RULE_KEY, rule.map(|r| &*r.pattern));
    if rule.is_some() {
        set_optional(a, LAYER, LAYER_KEY, rule.and_then(|r| r.origin.as_deref()));
    }
}

impl Batch {
    fn new(service_version: &str) -> Self {
        let resource = Resource {
            attributes: vec![
                kv("service.name", "netproxy"),
                kv("service.version", service_version),
            ],
            ..Resource::default()
        };
        let scope = InstrumentationScope {
            name: SCOPE.to_owned(),
            version: service_version.to_owned(),
            ..InstrumentationScope::default()
        };
        Self {
            request: ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(resource),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope),
                        log_records: Vec::with_capacity(BATCH),
                        ..ScopeLogs::default()
                    }],
                    ..ResourceLogs::default()
                }],
            },
            spare: Vec::new(),
        }
    }

    /// Makes the request hold `events`.
    fn fill(&mut self, events: &[Arc<AuditEvent>], observed: SystemTime) {
        let observed = nanos(observed);
        let mut spare = std::mem::take(&mut self.spare);
        let records = &mut self.request.resource_logs[0].scope_logs[0].log_records;
        while records.len() > events.len() {
            if let Some(r) = records.pop() {
                spare.push(r);
            }
        }
        while records.len() < events.len() {
            records.push(spare.pop().unwrap_or_else(new_record));
        }
        for (r, ev) in records.iter_mut().zip(events) {
            fill(r, ev, observed);
        }
        self.spare = spare;
    }
}

impl OtlpSink {
    /// Checks the configuration and starts exporting. Call it inside a Tokio runtime: the
    /// exports run on it.
    pub fn start(config: &OtlpConfig) -> Result<Self, OtlpError> {
        let handle = tokio::runtime::Handle::current();
        let transport = {
            // The gRPC channel's background task is spawned on the runtime.
            let _guard = handle.enter();
            Transport::new(config)?
        };
        let batch = Batch::new(&config.service_version);
        let shared = Arc::new(Shared {
            queue: DropOldest::new(QUEUE),
            deadline: std::sync::Mutex::new(None),
            expired: std::sync::atomic::AtomicU64::new(0),
        });
        let s = shared.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let pump = std::thread::Builder::new()
            .name("netproxy-otlp".into())
            .spawn(move || {
                pump(&s, transport, batch, &handle);
                let _ = done_tx.send(());
            })?;
        Ok(Self {
            shared,
            pump: std::sync::Mutex::new(Some(pump)),
            done: std::sync::Mutex::new(done_rx),
        })
    }

    /// Events lost: dropped by a full queue, in a failed export, rejected by the collector,
    /// or left over when shutdown's budget ran out.
    pub fn dropped(&self) -> u64 {
        self.shared.queue.dropped()
            + self
                .shared
                .expired
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Exports what is queued (for at most a few seconds), then stops; events it could not
    /// export in that time count as dropped. Blocks: call it off the async workers.
    pub fn close(&self) {
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Instant::now() + SHUTDOWN_BUDGET);
        self.shared.queue.close();
        let handle = self
            .pump
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(handle) = handle else { return };
        let finished = self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv_timeout(SHUTDOWN_BUDGET + EXPORT_TIMEOUT);
        if finished.is_ok() {
            let _ = handle.join();
        } else {
            // The pump is stuck in an export to a collector that does not answer: leave it,
            // and count what it could not send.
            let rest = self.shared.queue.drain(usize::MAX).len();
            self.shared
                .expired
                .fetch_add(rest as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn pump(
    shared: &Shared,
    mut transport: Transport,
    mut batch: Batch,
    handle: &tokio::runtime::Handle,
) {
    let lost = |n: u64| {
        shared
            .expired
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    };
    let mut events = std::collections::VecDeque::new();
    loop {
        shared.queue.wait_into(
            &mut events,
            BATCH,
            Duration::from_millis(100),
            Duration::from_millis(500),
        );
        if events.is_empty() {
            if shared.queue.finished() {
                break;
            }
            continue;
        }
        let late = shared
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|d| Instant::now() >= d);
        if late {
            lost((events.len() + shared.queue.drain(usize::MAX).len()) as u64);
            break;
        }
        batch.fill(events.make_contiguous(), SystemTime::now());
        match handle.block_on(transport.export(&batch)) {
            Ok(0) => {}
            Ok(rejected) => {
                let rejected = u64::try_from(rejected)
                    .unwrap_or(0)
                    .min(events.len() as u64);
                lost(rejected);
                tracing::debug!(target: "netproxy::otlp", rejected, "the collector rejected records");
            }
            Err(e) => {
                lost(events.len() as u64);
                tracing::debug!(target: "netproxy::otlp", error = %e, lost = events.len(), "OTLP export failed");
            }
        }
        crate::pool::EVENTS.give_back(&mut events);
    }
}

impl AuditSink for OtlpSink {
    fn record(&self, event: &AuditEvent) {
        self.shared.queue.push(Arc::new(event.clone()));
    }

    fn record_shared(&self, event: &Arc<AuditEvent>) {
        self.shared.queue.push(event.clone());
    }

    fn keeps_events(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::{Decision, Mode, Protocol, Reason, RequestMeta, Target};

    #[test]
    fn endpoints() {
        assert_eq!(
            logs_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/logs"
        );
        assert_eq!(
            logs_url("http://127.0.0.1:4318/").unwrap(),
            "http://127.0.0.1:4318/v1/logs"
        );
        assert_eq!(
            logs_url("HTTP://127.0.0.1:4318/v1/logs").unwrap(),
            "HTTP://127.0.0.1:4318/v1/logs"
        );
        assert!(logs_url("https://collector:4318").is_err());
        assert!(logs_url("collector:4318").is_err());
        assert!(header_map(&[("bad name".into(), "v".into())]).is_err());
        assert!(header_map(&[("x-key".into(), "line\nbreak".into())]).is_err());
    }

    fn attrs(r: &LogRecord) -> Vec<(String, String)> {
        r.attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    Some(Value::IntValue(i)) => i.to_string(),
                    Some(Value::BoolValue(b)) => b.to_string(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    #[test]
    fn records_are_overwritten_in_place_and_follow_each_event() {
        let with_rule = {
            let meta = RequestMeta::new(
                Protocol::Http,
                Target::parse_authority("a-rather-long-host-name.example", 8080).unwrap(),
            )
            .with_method("POST")
            .with_client("[::1]:4000".parse().unwrap());
            let mut ev = AuditEvent::new(&meta, &Decision::deny(Reason::Denied), Mode::Limited);
            ev.rule = Some(proxy_core::Rule {
                pattern: "**.example".into(),
                origin: Some("user".into()),
            });
            ev
        };
        let bare = {
            let meta = RequestMeta::new(
                Protocol::Socks5Udp,
                Target::parse_authority("b.example", 53).unwrap(),
            );
            AuditEvent::new(&meta, &Decision::deny(Reason::NotAllowed), Mode::Full)
        };
        let mut batch = Batch::new("1.2.3");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_123);
        for round in 0..3 {
            let events: Vec<Arc<AuditEvent>> = match round {
                0 => vec![Arc::new(with_rule.clone()), Arc::new(bare.clone())],
                1 => vec![Arc::new(bare.clone()), Arc::new(with_rule.clone())],
                _ => vec![Arc::new(bare.clone())],
            };
            let mut events = events;
            for e in &mut events {
                Arc::get_mut(e).unwrap().timestamp = t;
            }
            batch.fill(&events, t + Duration::from_secs(1));
            let bytes = prost::Message::encode_to_vec(&batch.request);
            let req = <ExportLogsServiceRequest as prost::Message>::decode(&bytes[..]).unwrap();
            let rl = &req.resource_logs[0];
            assert_eq!(rl.scope_logs[0].scope.as_ref().unwrap().name, SCOPE);
            let records = &rl.scope_logs[0].log_records;
            assert_eq!(records.len(), events.len(), "round {round}");
            for (r, ev) in records.iter().zip(&events) {
                assert_eq!(r.event_name, proxy_core::EVENT_NAME);
                assert_eq!(r.time_unix_nano, 1_767_225_600_123_000_000);
                assert_eq!(r.observed_time_unix_nano, 1_767_225_601_123_000_000);
                assert_eq!(r.severity_number, SeverityNumber::Info as i32);
                let got = attrs(r);
                let mut want: Vec<(String, String)> = vec![
                    ("network.policy.scope".into(), "domain".into()),
                    ("network.policy.decision".into(), "deny".into()),
                    ("network.policy.source".into(), "baseline_policy".into()),
                    ("network.policy.reason".into(), ev.reason.into()),
                    ("network.policy.override".into(), "false".into()),
                    ("network.policy.mode".into(), ev.mode.as_str().into()),
                    (
                        "network.transport.protocol".into(),
                        ev.protocol.as_str().into(),
                    ),
                    ("server.address".into(), ev.server_address.clone()),
                    ("server.port".into(), ev.server_port.to_string()),
                    (
                        "http.request.method".into(),
                        ev.method.clone().unwrap_or_else(|| "none".into()),
                    ),
                    (
                        "client.address".into(),
                        ev.client
                            .map_or_else(|| "unknown".into(), |c| c.to_string()),
                    ),
                ];
                if ev.rule.is_some() {
                    want.push(("network.policy.rule".into(), "**.example".into()));
                    want.push(("network.policy.layer".into(), "user".into()));
                }
                assert_eq!(got, want, "round {round}");
            }
        }
        // The record dropped from the last batch is kept for its allocations.
        assert_eq!(batch.spare.len(), 1);
    }
}
