//! OTLP logs export of audit events (`[otel] exporter = "otlp-http" | "otlp-grpc"`).
//!
//! The request path only pushes the event into our bounded, drop-oldest queue ([`DropOldest`],
//! drops counted). A pump thread takes up to 512 events at a time, makes them SDK log records,
//! and hands them as one batch to opentelemetry-otlp's exporter, running the export on the
//! Tokio runtime and waiting for it before taking more. Our queue is the only queue: there is no
//! SDK batch processor in between (the thread-based default panics with async exporters; the
//! async-runtime one drops the newest records silently when its queue is full, and copying each
//! record into it cost 3.6 µs of CPU per event: docs/benchmarks.md). A collector that is down
//! or hangs only fills our queue; requests never wait for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider, Severity};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use proxy_core::{AuditEvent, AuditSink};

use crate::queue::DropOldest;

/// Events waiting for export; beyond this the oldest are dropped and counted.
const QUEUE: usize = 65_536;
/// Events per export.
const BATCH: usize = 512;
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown keeps exporting what is queued.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(3);

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
    /// The exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Build(String),
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

fn logs_url(endpoint: &str) -> Result<String, OtlpError> {
    let e = endpoint.trim().trim_end_matches('/');
    if !e.to_ascii_lowercase().starts_with("http://") {
        return Err(OtlpError::Config(format!(
            "otel.endpoint {endpoint:?}: only plain http:// collectors are supported"
        )));
    }
    Ok(if e.ends_with("/v1/logs") {
        e.to_owned()
    } else {
        format!("{e}/v1/logs")
    })
}

impl OtlpSink {
    /// Builds the exporter and starts exporting. Call it inside a Tokio runtime (the SDK's
    /// batch processor runs on it).
    pub fn start(config: &OtlpConfig) -> Result<Self, OtlpError> {
        let build = |e: opentelemetry_otlp::ExporterBuildError| OtlpError::Build(e.to_string());
        let exporter = match config.protocol {
            OtlpProtocol::Http => {
                let headers: HashMap<String, String> = config.headers.iter().cloned().collect();
                opentelemetry_otlp::LogExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(logs_url(&config.endpoint)?)
                    .with_timeout(EXPORT_TIMEOUT)
                    .with_retry_policy(
                        opentelemetry_otlp::RetryPolicy::default().with_max_retries(1),
                    )
                    .with_headers(headers)
                    .build()
                    .map_err(build)?
            }
            OtlpProtocol::Grpc => {
                if !config.endpoint.to_ascii_lowercase().starts_with("http://") {
                    return Err(OtlpError::Config(format!(
                        "otel.endpoint {:?}: only plain http:// collectors are supported",
                        config.endpoint
                    )));
                }
                let mut map = http::HeaderMap::new();
                for (k, v) in &config.headers {
                    let name = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| OtlpError::Config(format!("otel.headers.{k}: {e}")))?;
                    let value = http::HeaderValue::from_str(v)
                        .map_err(|e| OtlpError::Config(format!("otel.headers.{k}: {e}")))?;
                    map.insert(name, value);
                }
                opentelemetry_otlp::LogExporter::builder()
                    .with_tonic()
                    .with_endpoint(config.endpoint.clone())
                    .with_timeout(EXPORT_TIMEOUT)
                    .with_metadata(
                        opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map),
                    )
                    .build()
                    .map_err(build)?
            }
        };
        let resource = Resource::builder()
            .with_service_name("netproxy")
            .with_attribute(KeyValue::new(
                "service.version",
                config.service_version.clone(),
            ))
            .build();
        let mut exporter = exporter;
        opentelemetry_sdk::logs::LogExporter::set_resource(&mut exporter, &resource);
        let provider = SdkLoggerProvider::builder().with_resource(resource).build();
        let handle = tokio::runtime::Handle::current();
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
                pump(&s, &provider, &exporter, &handle);
                let _ = done_tx.send(());
            })?;
        Ok(Self {
            shared,
            pump: std::sync::Mutex::new(Some(pump)),
            done: std::sync::Mutex::new(done_rx),
        })
    }

    /// Events lost: dropped by a full queue, in a failed export, or left over when shutdown's
    /// budget ran out.
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
    provider: &SdkLoggerProvider,
    exporter: &opentelemetry_otlp::LogExporter,
    handle: &tokio::runtime::Handle,
) {
    let logger = provider.logger("netproxy.audit");
    let scope = opentelemetry::InstrumentationScope::builder("netproxy.audit").build();
    let mut records = Vec::with_capacity(BATCH);
    loop {
        let batch = shared.queue.wait(
            BATCH,
            Duration::from_millis(100),
            Duration::from_millis(500),
        );
        if batch.is_empty() {
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
            let rest = batch.len() + shared.queue.drain(usize::MAX).len();
            shared
                .expired
                .fetch_add(rest as u64, std::sync::atomic::Ordering::Relaxed);
            break;
        }
        let observed = std::time::SystemTime::now();
        // The records' buffer is kept from batch to batch (a large allocation each time costs
        // glibc's allocator a consolidation of its small free chunks).
        records.clear();
        records.extend(batch.iter().map(|ev| {
            let mut record = logger.create_log_record();
            fill(&mut record, ev, observed);
            record
        }));
        let refs: Vec<_> = records.iter().map(|r| (r, &scope)).collect();
        let done = handle.block_on(opentelemetry_sdk::logs::LogExporter::export(
            exporter,
            opentelemetry_sdk::logs::LogBatch::new(&refs),
        ));
        if let Err(e) = done {
            shared
                .expired
                .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(target: "netproxy::otlp", error = %e, lost = batch.len(), "OTLP export failed");
        }
        drop(refs);
        crate::pool::EVENTS.give_back(batch);
    }
    if let Err(e) = opentelemetry_sdk::logs::LogExporter::shutdown(exporter) {
        tracing::debug!(target: "netproxy::otlp", error = %e, "OTLP shutdown");
    }
}

fn fill<R: LogRecord>(record: &mut R, ev: &AuditEvent, observed: std::time::SystemTime) {
    record.set_event_name(proxy_core::EVENT_NAME);
    record.set_timestamp(ev.timestamp);
    record.set_observed_timestamp(observed);
    record.set_severity_number(Severity::Info);
    record.set_severity_text("INFO");
    record.set_body(AnyValue::from("policy decision"));
    // Static keys and values where the value is one of a few names: no allocation for them.
    // The event name and timestamp are the record's own fields.
    record.add_attribute("network.policy.scope", ev.scope.as_str());
    record.add_attribute("network.policy.decision", ev.decision.as_str());
    record.add_attribute("network.policy.source", ev.source.as_str());
    record.add_attribute("network.policy.reason", ev.reason);
    record.add_attribute("network.policy.override", ev.policy_override);
    record.add_attribute("network.policy.mode", ev.mode.as_str());
    if let Some(rule) = &ev.rule {
        record.add_attribute(
            "network.policy.rule",
            AnyValue::String(rule.pattern.clone().into()),
        );
        if let Some(layer) = &rule.origin {
            record.add_attribute(
                "network.policy.layer",
                AnyValue::String(layer.clone().into()),
            );
        }
    }
    record.add_attribute("network.transport.protocol", ev.protocol.as_str());
    record.add_attribute("server.address", ev.server_address.clone());
    record.add_attribute("server.port", i64::from(ev.server_port));
    record.add_attribute(
        "http.request.method",
        ev.method.clone().unwrap_or_else(|| "none".to_owned()),
    );
    record.add_attribute(
        "client.address",
        ev.client
            .map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
    );
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
            logs_url("http://127.0.0.1:4318/v1/logs").unwrap(),
            "http://127.0.0.1:4318/v1/logs"
        );
        assert!(logs_url("https://collector:4318").is_err());
    }
}
