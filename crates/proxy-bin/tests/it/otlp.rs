//! OTLP export of the audit events from the real `netproxy serve` process, to a loopback
//! collector: every decision arrives, and a collector that never answers delays nothing.

use std::sync::{Arc, Mutex};

use proxy_test_support::wait_for;

use crate::support::{Serve, World};

/// An OTLP/HTTP collector on loopback that decodes each export and records the server
/// address of every log record; with `hang`, it accepts and never answers.
pub(crate) async fn collector(hang: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/v1/logs",
        axum::routing::post(move |body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                let req = <ExportLogsServiceRequest as prost::Message>::decode(body).unwrap();
                for r in &req.resource_logs {
                    let service = r.resource.as_ref().unwrap().attributes.iter().any(|kv| {
                        kv.key == "service.name"
                            && matches!(kv.value.as_ref().and_then(|v| v.value.clone()),
                                    Some(Value::StringValue(ref n)) if n == "netproxy")
                    });
                    assert!(service);
                    for l in r.scope_logs.iter().flat_map(|sl| &sl.log_records) {
                        let host = l.attributes.iter().find(|kv| kv.key == "server.address");
                        if let Some(Value::StringValue(h)) =
                            host.and_then(|kv| kv.value.as_ref().and_then(|v| v.value.clone()))
                        {
                            s.lock().unwrap().push(h);
                        }
                    }
                }
                Vec::<u8>::new()
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

/// The `[otel]` section exporting to `endpoint` over OTLP/HTTP.
pub(crate) fn otel(endpoint: &str) -> String {
    format!("[otel]\nexporter = \"otlp-http\"\nendpoint = {endpoint:?}\n")
}

/// `netproxy serve` allowing api.test and exporting to `endpoint`.
fn start(w: &World, endpoint: &str) -> Serve {
    w.serve()
        .admin()
        .args(&["--allow", "api.test"])
        .config(&otel(endpoint))
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_exported_over_otlp_and_a_hung_collector_delays_nothing() {
    let w = World::new(&["api.test", "other.test"]).await;
    let (endpoint, seen) = collector(false).await;
    let s = start(&w, &endpoint);
    for _ in 0..5 {
        assert_eq!(s.get(&w.url("api.test", "")).status, 200);
    }
    assert_eq!(s.get(&w.url("other.test", "")).status, 403);
    let hosts = wait_for("six exported decisions", || {
        let hosts = seen.lock().unwrap().clone();
        if hosts.len() >= 6 {
            Ok(hosts)
        } else {
            Err(format!("{hosts:?}"))
        }
    });
    assert_eq!(
        hosts.iter().filter(|h| *h == "api.test").count(),
        5,
        "{hosts:?}"
    );
    assert_eq!(
        hosts.iter().filter(|h| *h == "other.test").count(),
        1,
        "{hosts:?}"
    );
    s.stop();

    // A collector that never answers: requests go through as usual, and the process still
    // stops (its export is bounded).
    let (endpoint, _) = collector(true).await;
    let s = start(&w, &endpoint);
    for _ in 0..50 {
        assert_eq!(s.get(&w.url("api.test", "")).status, 200);
    }
    let (_, metrics) = s.api(Some(&s.token())).get("/metrics");
    assert!(
        metrics.contains("netproxy_audit_export_dropped_total 0"),
        "{metrics}"
    );
    s.stop();
}
