//! A loopback OTLP/HTTP logs collector that counts what it receives, for the audit export
//! benchmark (docs/benchmarks.md): `otlp_count ADDR OUT` listens on ADDR (loopback only) and
//! rewrites OUT with the number of log records received so far, ten times a second.
//!
//! It counts records by walking the protobuf wire format (ExportLogsServiceRequest →
//! ResourceLogs → ScopeLogs → LogRecord) and skipping everything else, so that the collector,
//! which shares the machine with the proxy in the benchmark, costs as little CPU as it can;
//! `--decode` decodes every record fully with prost instead (and checks it parses).
#![allow(clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let decode = args.iter().any(|a| a == "--decode");
    args.retain(|a| a != "--decode");
    let mut args = args.into_iter();
    let (Some(addr), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: otlp_count [--decode] ADDR OUT");
        std::process::exit(2);
    };
    let addr: std::net::SocketAddr = addr.parse().unwrap_or_else(|e| {
        eprintln!("otlp_count: {addr}: {e}");
        std::process::exit(2);
    });
    if !addr.ip().is_loopback() {
        eprintln!("otlp_count: listens on loopback only");
        std::process::exit(2);
    }
    let total = Arc::new(AtomicU64::new(0));
    // The count goes to OUT ten times a second, not after every export: rewriting a file
    // (truncated, then written) makes ext4 force its data to disk, and doing that a hundred
    // times a second would put the collector's disk traffic on the machine being measured.
    let t = total.clone();
    tokio::spawn(async move {
        let mut written = None;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let now = t.load(Ordering::Relaxed);
            if written != Some(now) {
                if let Err(e) = std::fs::write(&out, format!("{now}\n")) {
                    eprintln!("otlp_count: {out}: {e}");
                }
                written = Some(now);
            }
        }
    });
    let app = axum::Router::new().route(
        "/v1/logs",
        axum::routing::post(move |body: axum::body::Bytes| {
            let total = total.clone();
            async move {
                let n = if decode {
                    let Ok(req) = <ExportLogsServiceRequest as prost::Message>::decode(body) else {
                        return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                    };
                    req.resource_logs
                        .iter()
                        .flat_map(|r| &r.scope_logs)
                        .map(|s| s.log_records.len())
                        .sum()
                } else {
                    match count(&body, 0) {
                        Some(n) => n,
                        None => return (axum::http::StatusCode::BAD_REQUEST, Vec::new()),
                    }
                };
                total.fetch_add(n as u64, Ordering::Relaxed);
                (
                    axum::http::StatusCode::OK,
                    prost::Message::encode_to_vec(&ExportLogsServiceResponse::default()),
                )
            }
        }),
    );
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("otlp_count: {addr}: {e}");
            std::process::exit(1);
        }
    };
    let _ = axum::serve(listener, app).await;
}

/// Counts LogRecords in an encoded message at `depth` (0: the request, 1: ResourceLogs,
/// 2: ScopeLogs), descending only into field 1 / 2 / 2 and skipping everything else.
fn count(mut buf: &[u8], depth: u8) -> Option<usize> {
    let mut n = 0;
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut buf)?;
            }
            1 => buf = buf.get(8..)?,
            5 => buf = buf.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let inner = buf.get(..len)?;
                buf = &buf[len..];
                match (depth, field) {
                    (0, 1) | (1, 2) => n += count(inner, depth + 1)?,
                    (2, 2) => n += 1,
                    _ => {}
                }
            }
            _ => return None,
        }
    }
    Some(n)
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *buf.first()?;
        *buf = &buf[1..];
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}
