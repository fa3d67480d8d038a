//! OTLP export to loopback collectors: an axum stub decoding OTLP/HTTP protobuf, a tonic stub
//! for OTLP/gRPC, and collectors that are down or hang.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use proxy_audit::{OtlpConfig, OtlpProtocol, OtlpSink};
use proxy_core::{AuditEvent, AuditSink, Decision, Mode, Protocol, Reason, RequestMeta, Target};

type Received = Arc<Mutex<Vec<(ExportLogsServiceRequest, Option<String>)>>>;

fn event(i: usize) -> AuditEvent {
    let meta = RequestMeta::new(
        Protocol::HttpsConnect,
        Target::parse_authority(&format!("host{i}.example"), 443).unwrap(),
    )
    .with_method("CONNECT")
    .with_client("127.0.0.1:40000".parse().unwrap());
    AuditEvent::new(&meta, &Decision::deny(Reason::NotAllowed), Mode::Full)
}

/// An OTLP/HTTP collector on loopback: decodes every `POST /v1/logs`.
async fn http_collector() -> (String, Received) {
    let received = Received::default();
    let r = received.clone();
    let app = axum::Router::new().route(
        "/v1/logs",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let r = r.clone();
                async move {
                    let req = <ExportLogsServiceRequest as prost::Message>::decode(body).unwrap();
                    let auth = headers
                        .get("x-collector-key")
                        .map(|v| v.to_str().unwrap().to_owned());
                    r.lock().unwrap().push((req, auth));
                    let resp = prost::Message::encode_to_vec(&ExportLogsServiceResponse::default());
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                        resp,
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), received)
}

fn attrs(req: &ExportLogsServiceRequest) -> Vec<Vec<(String, String)>> {
    let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
        .as_ref()
        .and_then(|v| v.value.clone())
    {
        Some(Value::StringValue(s)) => s,
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    };
    req.resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .map(|l| {
            let mut a: Vec<(String, String)> = l
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), text(&kv.value)))
                .collect();
            a.push(("event_name".into(), l.event_name.clone()));
            a
        })
        .collect()
}

fn count(received: &Received) -> usize {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|(r, _)| attrs(r).len())
        .sum()
}

async fn wait_for(received: &Received, n: usize) {
    let start = Instant::now();
    while count(received) < n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} of {n} events arrived",
            count(received)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_export_reaches_the_collector_with_resource_and_attributes() {
    let (endpoint, received) = http_collector().await;
    let sink = OtlpSink::start(&OtlpConfig {
        protocol: OtlpProtocol::Http,
        endpoint,
        headers: vec![("x-collector-key".into(), "k1".into())],
        service_version: "9.9.9".into(),
    })
    .unwrap();
    for i in 0..1200 {
        sink.record(&event(i));
    }
    wait_for(&received, 1200).await;
    assert_eq!(sink.dropped(), 0);
    let got = received.lock().unwrap().clone();
    let (first, auth) = &got[0];
    assert_eq!(auth.as_deref(), Some("k1"));
    let resource = first.resource_logs[0].resource.as_ref().unwrap();
    let res: Vec<(String, String)> = resource
        .attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                match kv.value.as_ref().and_then(|v| v.value.clone()) {
                    Some(Value::StringValue(s)) => s,
                    other => format!("{other:?}"),
                },
            )
        })
        .collect();
    assert!(
        res.contains(&("service.name".into(), "netproxy".into())),
        "{res:?}"
    );
    assert!(
        res.contains(&("service.version".into(), "9.9.9".into())),
        "{res:?}"
    );
    let a = &attrs(first)[0];
    let get = |k: &str| a.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("event_name"), Some("netproxy.policy_decision"));
    assert_eq!(get("network.policy.decision"), Some("deny"));
    assert_eq!(get("network.policy.reason"), Some("not_allowed"));
    assert_eq!(get("network.transport.protocol"), Some("https_connect"));
    assert_eq!(get("server.address"), Some("host0.example"));
    assert_eq!(get("server.port"), Some("443"));
    assert_eq!(get("client.address"), Some("127.0.0.1:40000"));
    assert_eq!(get("network.policy.override"), Some("false"));
    // Every event, each once.
    let mut hosts: Vec<String> = got
        .iter()
        .flat_map(|(r, _)| attrs(r))
        .map(|a| {
            a.iter()
                .find(|(k, _)| k == "server.address")
                .unwrap()
                .1
                .clone()
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 1200);
    tokio::task::spawn_blocking(move || sink.close())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_reaches_the_collector() {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    #[derive(Clone)]
    struct Collector(Received);
    #[tonic::async_trait]
    impl LogsService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            let key = request
                .metadata()
                .get("x-collector-key")
                .map(|v| v.to_str().unwrap().to_owned());
            self.0.lock().unwrap().push((request.into_inner(), key));
            Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
        }
    }
    let received = Received::default();
    let endpoint = serve_grpc(LogsServiceServer::new(Collector(received.clone()))).await;
    let sink = OtlpSink::start(&OtlpConfig {
        protocol: OtlpProtocol::Grpc,
        endpoint,
        headers: vec![("x-collector-key".into(), "k2".into())],
        service_version: "1.0.0".into(),
    })
    .unwrap();
    for i in 0..10 {
        sink.record(&event(i));
    }
    wait_for(&received, 10).await;
    assert_eq!(received.lock().unwrap()[0].1.as_deref(), Some("k2"));
    tokio::task::spawn_blocking(move || sink.close())
        .await
        .unwrap();
}

trait PipeServe {
    async fn pipe_serve(self, listener: tokio::net::TcpListener);
}

impl PipeServe for axum::Router {
    async fn pipe_serve(self, listener: tokio::net::TcpListener) {
        let _ = axum::serve(listener, self).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_hangs_costs_the_caller_nothing() {
    // Down: a port nothing listens on (bound, then closed).
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // Hangs: accepts and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    for addr in [down, hang_addr] {
        let sink = OtlpSink::start(&OtlpConfig {
            protocol: OtlpProtocol::Http,
            endpoint: format!("http://{addr}"),
            headers: Vec::new(),
            service_version: "0".into(),
        })
        .unwrap();
        // 100,000 events: more than the queue holds; recording never waits for the collector,
        // and what does not fit is dropped oldest-first and counted.
        for i in 0..100_000 {
            sink.record(&event(i % 50));
        }
        assert!(
            sink.dropped() >= 100_000 - 65_536 - 1024,
            "{}",
            sink.dropped()
        );
        // Shutdown is bounded too, and then every event is accounted for as lost.
        let sink = Arc::new(sink);
        let s = sink.clone();
        tokio::task::spawn_blocking(move || s.close())
            .await
            .unwrap();
        assert_eq!(sink.dropped(), 100_000, "{addr}");
    }
}

/// An OTLP/HTTP collector that answers the n-th request (from 0) with `answer(n)`: a status and
/// the number of records it reports as rejected. Returns its endpoint, the requests it saw and
/// the records it accepted.
async fn scripted_collector(
    answer: fn(usize) -> (u16, i64),
) -> (String, Arc<Mutex<usize>>, Arc<Mutex<usize>>) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;
    let requests = Arc::new(Mutex::new(0usize));
    let accepted = Arc::new(Mutex::new(0usize));
    let (rq, ac) = (requests.clone(), accepted.clone());
    let app = axum::Router::new().route(
        "/v1/logs",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (rq, ac) = (rq.clone(), ac.clone());
            async move {
                let req = <ExportLogsServiceRequest as prost::Message>::decode(body).unwrap();
                let n = {
                    let mut g = rq.lock().unwrap();
                    *g += 1;
                    *g - 1
                };
                let (status, rejected) = answer(n);
                let records = attrs(&req).len();
                let status = axum::http::StatusCode::from_u16(status).unwrap();
                if status.is_success() {
                    *ac.lock().unwrap() += records - usize::try_from(rejected).unwrap();
                }
                let resp = ExportLogsServiceResponse {
                    partial_success: (rejected > 0).then(|| ExportLogsPartialSuccess {
                        rejected_log_records: rejected,
                        error_message: "too old".into(),
                    }),
                };
                (status, prost::Message::encode_to_vec(&resp))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), requests, accepted)
}

async fn export_to(protocol: OtlpProtocol, endpoint: String, events: usize) -> OtlpSink {
    let sink = OtlpSink::start(&OtlpConfig {
        protocol,
        endpoint,
        headers: Vec::new(),
        service_version: "0".into(),
    })
    .unwrap();
    for i in 0..events {
        sink.record(&event(i));
    }
    sink
}

async fn closed(sink: OtlpSink) -> u64 {
    let sink = Arc::new(sink);
    let s = sink.clone();
    tokio::task::spawn_blocking(move || s.close())
        .await
        .unwrap();
    sink.dropped()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_collector_gets_the_batch_again_once() {
    // 503 for the first request, then success: the batch is retried and nothing is lost.
    let (endpoint, requests, accepted) =
        scripted_collector(|n| if n == 0 { (503, 0) } else { (200, 0) }).await;
    let sink = export_to(OtlpProtocol::Http, endpoint, 20).await;
    assert_eq!(closed(sink).await, 0);
    assert_eq!(*accepted.lock().unwrap(), 20);
    assert!(*requests.lock().unwrap() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_not_retried_and_counts_as_dropped() {
    // 400 says the request itself is wrong: sending it again would not help.
    let (endpoint, requests, accepted) = scripted_collector(|_| (400, 0)).await;
    let sink = export_to(OtlpProtocol::Http, endpoint, 20).await;
    assert_eq!(closed(sink).await, 20);
    assert_eq!(*accepted.lock().unwrap(), 0);
    assert_eq!(*requests.lock().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_collector_rejects_count_as_dropped() {
    let (endpoint, _, accepted) = scripted_collector(|_| (200, 3)).await;
    let sink = export_to(OtlpProtocol::Http, endpoint, 20).await;
    // Each export (the 20 events may come in one or several) had 3 of its records rejected.
    let dropped = closed(sink).await;
    assert!(dropped >= 3 && dropped % 3 == 0, "{dropped}");
    assert_eq!(*accepted.lock().unwrap() as u64, 20 - dropped);
}

/// An OTLP/gRPC collector that answers the n-th export (from 0) with `answer(n)`: the number of
/// records it reports as rejected, or an error status. Returns its endpoint, the exports it
/// saw and the records it accepted.
async fn scripted_grpc_collector(
    answer: fn(usize) -> Result<i64, tonic::Code>,
) -> (String, Arc<Mutex<usize>>, Arc<Mutex<usize>>) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    struct Collector {
        answer: fn(usize) -> Result<i64, tonic::Code>,
        requests: Arc<Mutex<usize>>,
        accepted: Arc<Mutex<usize>>,
    }
    #[tonic::async_trait]
    impl LogsService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            let n = {
                let mut g = self.requests.lock().unwrap();
                *g += 1;
                *g - 1
            };
            let records = attrs(request.get_ref()).len();
            let rejected = (self.answer)(n).map_err(|code| tonic::Status::new(code, "scripted"))?;
            *self.accepted.lock().unwrap() += records - usize::try_from(rejected).unwrap();
            Ok(tonic::Response::new(ExportLogsServiceResponse {
                partial_success: (rejected > 0).then(|| ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message: "too old".into(),
                }),
            }))
        }
    }
    let requests = Arc::new(Mutex::new(0usize));
    let accepted = Arc::new(Mutex::new(0usize));
    let svc = LogsServiceServer::new(Collector {
        answer,
        requests: requests.clone(),
        accepted: accepted.clone(),
    });
    (serve_grpc(svc).await, requests, accepted)
}

/// Serves a gRPC logs service on a loopback port; returns its endpoint.
async fn serve_grpc<S>(
    svc: opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer<S>,
) -> String
where
    S: opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsService,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::service::Routes::new(svc)
            .into_axum_router()
            .pipe_serve(listener)
            .await;
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_is_retried_once_and_rejected_records_count_as_dropped() {
    // UNAVAILABLE for the first export, then success with 2 records of each export rejected.
    let (endpoint, requests, accepted) = scripted_grpc_collector(|n| {
        if n == 0 {
            Err(tonic::Code::Unavailable)
        } else {
            Ok(2)
        }
    })
    .await;
    let sink = export_to(OtlpProtocol::Grpc, endpoint, 20).await;
    let dropped = closed(sink).await;
    let requests = *requests.lock().unwrap() as u64;
    // Every batch got through, the first one on its second try: only the rejected records
    // are lost (without the retry, the whole first batch would be).
    assert_eq!(
        dropped,
        2 * (requests - 1),
        "{dropped} dropped, {requests} requests"
    );
    assert_eq!(*accepted.lock().unwrap() as u64, 20 - dropped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_export_refused_as_invalid_is_not_retried() {
    let (endpoint, requests, accepted) =
        scripted_grpc_collector(|_| Err(tonic::Code::InvalidArgument)).await;
    let sink = export_to(OtlpProtocol::Grpc, endpoint, 20).await;
    assert_eq!(closed(sink).await, 20);
    assert_eq!(*accepted.lock().unwrap(), 0);
    assert_eq!(*requests.lock().unwrap(), 1);
}
