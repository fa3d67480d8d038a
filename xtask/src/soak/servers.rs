//! The soak's loopback servers, on a thread of their own: a plain HTTP origin (keep-alive, a
//! fixed body), a TCP echo, a UDP echo, and the OTLP/HTTP collector that decodes every
//! exported record and counts it by [`EventKey`](super::judge::EventKey). The HTTPS origin
//! is the TLS benchmark's (`mitm::origin`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::judge::{AttrValue, Counts, record_key};
use crate::mitm::http::Reader;

/// The length of the plain HTTP origin's body.
pub(crate) const HTTP_BODY: usize = 512;

/// What the collector received.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    /// Decision records by key.
    pub(crate) counts: Counts,
    /// Export requests received.
    pub(crate) exports: u64,
    /// What could not be counted (a body that does not decode, a record that is not a
    /// decision), in words; the first few only, with their number.
    pub(crate) bad: Vec<String>,
    pub(crate) bad_count: u64,
}

impl Collected {
    pub(crate) fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    fn bad(&mut self, why: String) {
        self.bad_count += 1;
        if self.bad.len() < 10 {
            self.bad.push(why);
        }
    }
}

/// The servers' addresses and the collector's counts.
#[derive(Debug, Clone)]
pub(crate) struct Servers {
    pub(crate) http: SocketAddr,
    pub(crate) echo: SocketAddr,
    pub(crate) udp: SocketAddr,
    pub(crate) collector: SocketAddr,
    pub(crate) collected: Arc<Mutex<Collected>>,
}

/// Starts every server on one Tokio thread for the life of the process.
pub(crate) fn start() -> anyhow::Result<Servers> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (http, echo, udp, collector_listener) = rt.block_on(async {
        anyhow::Ok((
            TcpListener::bind("127.0.0.1:0").await?,
            TcpListener::bind("127.0.0.1:0").await?,
            UdpSocket::bind("127.0.0.1:0").await?,
            TcpListener::bind("127.0.0.1:0").await?,
        ))
    })?;
    let collected = Arc::new(Mutex::new(Collected::default()));
    let servers = Servers {
        http: http.local_addr()?,
        echo: echo.local_addr()?,
        udp: udp.local_addr()?,
        collector: collector_listener.local_addr()?,
        collected: collected.clone(),
    };
    std::thread::Builder::new()
        .name("soak-servers".into())
        .spawn(move || {
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/v1/logs",
                    axum::routing::post(move |body: axum::body::Bytes| {
                        let c = collected.clone();
                        async move { export(&c, &body) }
                    }),
                );
                let _ = tokio::join!(
                    accept(http, serve_http),
                    accept(echo, serve_echo),
                    udp_echo(udp),
                    axum::serve(collector_listener, app),
                );
            });
        })
        .context("cannot start the servers' thread")?;
    Ok(servers)
}

/// One OTLP/HTTP export: every record decoded and counted.
fn export(c: &Mutex<Collected>, body: &[u8]) -> (axum::http::StatusCode, Vec<u8>) {
    let mut c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    c.exports += 1;
    let req = match <ExportLogsServiceRequest as prost::Message>::decode(body) {
        Ok(r) => r,
        Err(e) => {
            c.bad(format!("an export that does not decode: {e}"));
            return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
        }
    };
    for record in req
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
    {
        let attrs: Vec<(String, AttrValue)> = record
            .attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => AttrValue::Text(s.clone()),
                    Some(Value::BoolValue(b)) => AttrValue::Bool(*b),
                    _ => AttrValue::Other,
                };
                (kv.key.clone(), v)
            })
            .collect();
        match record_key(&record.event_name, &attrs) {
            Ok(k) => *c.counts.entry(k).or_default() += 1,
            Err(e) => c.bad(e),
        }
    }
    (
        axum::http::StatusCode::OK,
        prost::Message::encode_to_vec(&ExportLogsServiceResponse::default()),
    )
}

async fn accept<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream));
    }
}

/// The plain HTTP origin: `200` with [`HTTP_BODY`] bytes to every request, kept alive unless
/// the request says `Connection: close`.
async fn serve_http(stream: TcpStream) {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {HTTP_BODY}\r\n\r\n"
    )
    .into_bytes();
    response.resize(response.len() + HTTP_BODY, b's');
    let mut r = Reader::new(stream);
    loop {
        let Ok(Some(head)) = r.head().await else {
            return;
        };
        if r.body(&head).await.is_err() {
            return;
        }
        let io = r.get_mut();
        if io.write_all(&response).await.is_err() {
            return;
        }
        if head.close {
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// Echoes every byte until the client closes.
async fn serve_echo(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Echoes every datagram to its sender.
async fn udp_echo(socket: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        if let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    }
}
