//! OTLP logs export of audit events (`[otel] exporter = "otlp-http" | "otlp-grpc"`).
//!
//! The request path only pushes the event into our bounded, drop-oldest queue ([`DropOldest`],
//! drops counted). A pump thread takes up to 512 events at a time and encodes them as one
//! `ExportLogsServiceRequest` (`wire`: the constant parts encoded once by prost from
//! opentelemetry-proto's generated types, each event's record written straight from the
//! event); hyper posts it to `/v1/logs` (OTLP/HTTP, protobuf), or tonic sends it to the
//! generated service's `Export` method (OTLP/gRPC). The pump waits for that export before
//! taking more.
//!
//! There is no OpenTelemetry SDK in between: going through SDK log records and
//! opentelemetry-otlp's exporter, which converts every record again and allocates a `String`
//! for every attribute key and value, cost 3.6 µs of CPU per event, the largest part of the
//! audit's cost (docs/benchmarks.md). A collector that is down or hangs only fills our queue;
//! requests never wait for it.

mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use proxy_core::{AuditEvent, AuditSink};

use crate::queue::DropOldest;

/// The body of one OTLP logs export (an encoded `ExportLogsServiceRequest`) holding `events`,
/// byte for byte as [`OtlpSink`] sends it; `observed` is the batch's observation time.
pub fn encode_logs(service_version: &str, events: &[AuditEvent], observed: SystemTime) -> Bytes {
    let mut body = wire::Body::new(service_version);
    body.start(observed);
    for ev in events {
        body.push(ev);
    }
    body.finish()
}

/// The same request as [`encode_logs`], built from opentelemetry-proto's generated types and
/// encoded by prost: the reference the fast writer must equal byte for byte (its unit test and
/// the `otlp` fuzz target, docs/fuzzing.md). Slow; for tests and tools.
pub fn encode_logs_reference(
    service_version: &str,
    events: &[AuditEvent],
    observed: SystemTime,
) -> Vec<u8> {
    use prost::Message as _;
    wire::reference(service_version, events, observed).encode_to_vec()
}

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
/// The gRPC method of OTLP logs export.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

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
            "otel.endpoint {:?}: only plain http:// collectors are supported",
            proxy_core::redact_userinfo(endpoint)
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
        client: tonic::client::Grpc<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
}

/// Sends an already encoded request as the gRPC message, and decodes the answer with prost.
#[derive(Debug, Clone, Copy, Default)]
struct EncodedCodec;

impl tonic::codec::Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = ExportLogsServiceResponse;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl tonic::codec::Encoder for EncodedCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for EncodedCodec {
    type Item = ExportLogsServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportLogsServiceResponse>, tonic::Status> {
        <ExportLogsServiceResponse as prost::Message>::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("a bad answer from the collector: {e}")))
    }
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
                    OtlpError::Config(format!(
                        "otel.endpoint {:?}: {e}",
                        proxy_core::redact_userinfo(&config.endpoint)
                    ))
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
                        OtlpError::Config(format!(
                            "otel.endpoint {:?}: {e}",
                            proxy_core::redact_userinfo(&config.endpoint)
                        ))
                    })?
                    .connect_timeout(EXPORT_TIMEOUT)
                    .timeout(EXPORT_TIMEOUT)
                    .connect_lazy();
                Ok(Self::Grpc {
                    client: tonic::client::Grpc::new(channel),
                    metadata: tonic::metadata::MetadataMap::from_headers(headers),
                })
            }
        }
    }

    /// Sends one request; on success, how many records the collector said it rejected.
    async fn send(&mut self, body: &Bytes) -> Result<i64, Failed> {
        match self {
            Self::Http {
                client,
                uri,
                headers,
            } => {
                let mut req = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .header(http::header::USER_AGENT, USER_AGENT)
                    .body(Full::new(body.clone()))
                    .map_err(|e| Failed {
                        reason: e.to_string(),
                        transient: false,
                    })?;
                req.headers_mut()
                    .extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
                let resp = client.request(req).await.map_err(|e| Failed {
                    reason: with_sources(&e),
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
                client.ready().await.map_err(|e| Failed {
                    reason: format!("{e}"),
                    transient: true,
                })?;
                let mut req = tonic::Request::new(body.clone());
                *req.metadata_mut() = metadata.clone();
                req.set_timeout(EXPORT_TIMEOUT);
                let path = http::uri::PathAndQuery::from_static(GRPC_EXPORT);
                let resp = client
                    .unary::<_, ExportLogsServiceResponse, _>(req, path, EncodedCodec)
                    .await
                    .map_err(|s| Failed {
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
    async fn export(&mut self, body: &Bytes) -> Result<i64, String> {
        let attempt = async {
            let mut retried = false;
            loop {
                match self.send(body).await {
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

/// An error with the errors it wraps (hyper's client says only "client error (Connect)").
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

const USER_AGENT: &str = concat!("netproxy/", env!("CARGO_PKG_VERSION"));

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
        let body = wire::Body::new(&config.service_version);
        let outage = crate::Outage::new(format!(
            "OTLP export to {}",
            proxy_core::redact_userinfo(config.endpoint.trim())
        ));
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
                pump(&s, transport, body, outage, &handle);
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
    mut body: wire::Body,
    mut outage: crate::Outage,
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
            crate::IDLE_WAIT,
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
            let n = (events.len() + shared.queue.drain(usize::MAX).len()) as u64;
            lost(n);
            outage.report(
                Some((&"shutdown's export budget ran out", n)),
                shared.queue.dropped(),
            );
            break;
        }
        body.start(SystemTime::now());
        for ev in &events {
            body.push(ev);
        }
        let n = events.len();
        crate::pool::EVENTS.give_back(&mut events);
        match handle.block_on(transport.export(&body.finish())) {
            Ok(0) => outage.report(None, shared.queue.dropped()),
            Ok(rejected) => {
                let rejected = u64::try_from(rejected).unwrap_or(0).min(n as u64);
                lost(rejected);
                outage.report(
                    Some((&"the collector rejected records", rejected)),
                    shared.queue.dropped(),
                );
            }
            Err(e) => {
                lost(n as u64);
                outage.report(Some((&e, n as u64)), shared.queue.dropped());
            }
        }
    }
    outage.finish(shared.queue.dropped());
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
}
