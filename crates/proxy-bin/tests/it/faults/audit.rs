//! The OTLP collector down, hung, or answering 500, one outage after the other against one
//! `netproxy serve`: requests are never refused or held back by it, the lost events are counted
//! (`netproxy_audit_export_dropped_total`), each outage is logged once when it begins and once
//! when the collector works again, and the decisions made after that reach it. (The audit file
//! on a full disk is `audit::an_audit_log_on_a_full_disk_counts_its_losses_and_says_so_once`.)

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_test_support::wait_for;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{bounded, exchange, vacant_addr};
use crate::otlp::otel;
use crate::support::{AdminApi, Serve, World};

/// How a collector answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Decodes the export, records its records' hosts, answers 200.
    Ok,
    /// Answers `500 Internal Server Error`.
    Fail,
    /// Holds every export without an answer until the mode changes.
    Hang,
}

/// The OTLP export timeout of docs/audit.md.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// An OTLP/HTTP collector on a fixed loopback address that can be stopped (its connections
/// closed with it) and started again on the same address.
struct Collector {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    hosts: Arc<Mutex<Vec<String>>>,
    server: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Collector {
    /// A collector on `addr`, not yet started.
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            mode: watch::channel(Mode::Ok).0,
            hosts: Arc::default(),
            server: None,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Listens (again) on its address.
    async fn start(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        let (mode, hosts) = (self.mode.subscribe(), self.hosts.clone());
        let app = axum::Router::new().route(
            "/v1/logs",
            axum::routing::post(move |body: axum::body::Bytes| {
                answer(body, mode.clone(), hosts.clone())
            }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        self.server = Some((stop, task));
    }

    /// Stops listening and closes its connections: the collector is down.
    async fn stop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            bounded("the collector to stop", task).await.unwrap();
        }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// How many records about `host` it received.
    fn received(&self, host: &str) -> usize {
        self.hosts
            .lock()
            .unwrap()
            .iter()
            .filter(|h| *h == host)
            .count()
    }
}

async fn answer(
    body: axum::body::Bytes,
    mut mode: watch::Receiver<Mode>,
    hosts: Arc<Mutex<Vec<String>>>,
) -> (axum::http::StatusCode, Vec<u8>) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let _ = mode.wait_for(|m| *m != Mode::Hang).await;
    if *mode.borrow() != Mode::Ok {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, Vec::new());
    }
    let export = <ExportLogsServiceRequest as prost::Message>::decode(body).unwrap();
    let records = export
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records);
    for r in records {
        for kv in &r.attributes {
            if let (true, Some(Value::StringValue(h))) = (
                kv.key == "server.address",
                kv.value.as_ref().and_then(|v| v.value.clone()),
            ) {
                hosts.lock().unwrap().push(h);
            }
        }
    }
    (axum::http::StatusCode::OK, Vec::new())
}

/// `netproxy_audit_export_dropped_total`.
fn dropped(api: &AdminApi) -> u64 {
    let (_, m) = api.get("/metrics");
    m.lines()
        .find_map(|l| l.strip_prefix("netproxy_audit_export_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped count in\n{m}"))
}

const LOSING: &str = "audit events are being lost until this sink works again";
const BACK: &str = "the audit sink works again";

/// How many lines of netproxy's stderr so far hold `text`.
fn lines_with(s: &Serve, text: &str) -> usize {
    s.process
        .stderr()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

/// `n` plain requests to api.test on one kept-alive connection: each is answered 200, and
/// sooner than an export could time out (a request that waited for the collector would take
/// that long at least).
async fn requests(s: &Serve, w: &World, n: usize) {
    let mut c = TcpStream::connect(&s.http).await.unwrap();
    for _ in 0..n {
        let begin = Instant::now();
        assert_eq!(exchange(&mut c, &w.url("api.test", "")).await.0, 200);
        assert!(begin.elapsed() < EXPORT_TIMEOUT, "{:?}", begin.elapsed());
    }
}

/// How a collector fails.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// Nothing listens.
    Down,
    /// It answers `mode`.
    Answers(Mode),
}

/// The `n`-th outage: the collector fails, requests go on, the losses are counted over several
/// exports and logged once, with `why`; the collector comes back, the recovery is logged once,
/// and new decisions reach it.
async fn outage(
    s: &Serve,
    w: &World,
    c: &mut Collector,
    api: &AdminApi,
    n: usize,
    failure: Failure,
    why: &str,
) {
    match failure {
        Failure::Down => c.stop().await,
        Failure::Answers(mode) => c.set(mode),
    }
    // Two rounds of requests, each lost in its own export: still one line for the outage.
    for round in 1..=2u64 {
        let before = dropped(api);
        requests(s, w, 5).await;
        wait_for("the lost events counted", || {
            let now = dropped(api);
            if now >= before + 5 {
                Ok(())
            } else {
                Err(format!("round {round}: {before} -> {now}"))
            }
        });
    }
    wait_for("the outage's line", || {
        (lines_with(s, LOSING) >= n)
            .then_some(())
            .ok_or_else(|| s.process.stderr())
    });
    assert_eq!(lines_with(s, LOSING), n, "{}", s.process.stderr());
    let last = s
        .process
        .stderr()
        .lines()
        .rfind(|l| l.contains(LOSING))
        .unwrap()
        .to_owned();
    assert!(last.contains(why), "{last}");
    assert!(last.contains(&c.endpoint()), "{last}");
    assert_eq!(lines_with(s, BACK), n - 1);

    // Back: the next export goes through, the recovery is logged once, and the decisions made
    // now arrive.
    c.set(Mode::Ok);
    if c.server.is_none() {
        c.start().await;
    }
    let before = c.received("api.test");
    requests(s, w, 3).await;
    wait_for("decisions delivered again", || {
        let now = c.received("api.test");
        if now >= before + 3 {
            Ok(())
        } else {
            Err(format!("{before} -> {now}"))
        }
    });
    wait_for("the recovery's line", || {
        (lines_with(s, BACK) >= n)
            .then_some(())
            .ok_or_else(|| s.process.stderr())
    });
    assert_eq!(lines_with(s, BACK), n, "{}", s.process.stderr());
    assert_eq!(lines_with(s, LOSING), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_fails_or_hangs_costs_requests_nothing_and_is_caught_up_with() {
    let w = World::new(&["api.test"]).await;
    let mut c = Collector::new(vacant_addr());
    c.start().await;
    let s = w
        .serve()
        .admin()
        .args(&["--allow", "api.test"])
        .config(&otel(&c.endpoint()))
        .start();
    let api = s.api(Some(&s.token()));
    requests(&s, &w, 1).await;
    wait_for("the first decision exported", || {
        (c.received("api.test") == 1).then_some(()).ok_or("")
    });
    assert_eq!(dropped(&api), 0);

    let refused = "Connection refused";
    outage(&s, &w, &mut c, &api, 1, Failure::Down, refused).await;
    let failed = "the collector answered 500";
    outage(
        &s,
        &w,
        &mut c,
        &api,
        2,
        Failure::Answers(Mode::Fail),
        failed,
    )
    .await;
    let hung = "no answer from the collector within 3s";
    outage(&s, &w, &mut c, &api, 3, Failure::Answers(Mode::Hang), hung).await;

    let stderr = s.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("stopped while losing events"), "{stderr}");
}
