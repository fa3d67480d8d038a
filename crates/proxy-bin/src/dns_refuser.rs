//! The DNS refuser of `run --isolate` (docs/audit.md, "Name lookups under `run --isolate`").
//!
//! Inside the isolated namespace, netproxy listens on the resolver addresses of the child's
//! `/etc/resolv.conf` and serves no names: every query is answered at once with `REFUSED`
//! (same ID, the question echoed), so a lookup the child makes itself fails fast instead of
//! waiting for its timeout, and every query is one audit event (protocol `dns`, reason
//! `dns_not_served`). A program that uses the proxy never needs a lookup of its own: the proxy
//! resolves the names it is asked for, outside the namespace.
//!
//! The work is bounded whatever a child sends: one receive buffer for the UDP socket, at most
//! [`TCP_CONNECTIONS`] TCP connections at once (one buffer each, at most 64 KiB: a DNS message's
//! length prefix is 16 bits), each dropped when a message does not arrive, or its answer cannot
//! be written, within [`TCP_TIMEOUT`]. An answer holds the header, the first question (a name
//! of at most 255 bytes) and, for a query with EDNS, an OPT record: under 300 bytes, whatever
//! the query held. Only the first question is echoed (RFC 9619: a query has one).
//! Input that is not a DNS query is dropped (a response: never answered, so two refusers cannot
//! talk to each other forever); a query whose header parses but whose question does not is
//! answered `FORMERR`, without an audit event (there is no name to show).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use proxy_core::{AuditEvent, AuditSink, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How many TCP connections are served at once; a connection past this is closed at once.
pub const TCP_CONNECTIONS: usize = 64;

/// How long a TCP connection may take to send each whole message (its length prefix and its
/// bytes), or to take each answer: a silent or stalled client is dropped after it.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// The UDP receive buffer: the largest datagram a DNS client can send (EDNS allows up to
/// 65,535 bytes), so no query is cut.
const UDP_BUFFER: usize = 65_535;

/// The UDP payload size an answer's OPT record announces (the size the DNS flag day of 2020
/// settled on).
const EDNS_PAYLOAD: u16 = 1232;

/// How long to wait before receiving again after a socket error (a descriptor shortage on
/// `accept`, an error reported on the UDP socket), so a persistent error does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Answers every query `REFUSED` and records it.
struct Refuser {
    audit: Arc<dyn AuditSink>,
    mode: Box<dyn Fn() -> Mode + Send + Sync>,
}

impl Refuser {
    /// The answer to the DNS message `query` that `peer` sent to port `port`, recording a
    /// query as an audit event; `None` when nothing is to be sent back.
    fn answer(&self, query: &[u8], port: u16, peer: SocketAddr) -> Option<Vec<u8>> {
        let Ok(msg) = Message::from_vec(query) else {
            return format_error(query);
        };
        if msg.metadata.message_type != MessageType::Query {
            return None;
        }
        let Some(first) = msg.queries.first() else {
            return format_error(query);
        };
        self.audit.record(&AuditEvent::dns_not_served(
            first.name().iter(),
            port,
            peer,
            (self.mode)(),
        ));
        let mut metadata = Metadata::response_from_request(&msg.metadata);
        metadata.response_code = ResponseCode::Refused;
        let mut reply = Message::response(metadata.id, metadata.op_code);
        reply.metadata = metadata;
        reply.add_query(first.clone());
        if msg.edns.is_some() {
            // RFC 6891: a query with an OPT record gets one back.
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            reply.set_edns(edns);
        }
        reply.to_vec().ok()
    }
}

/// `FORMERR` for a query whose header parses but whose body does not; `None` for anything
/// else (too short for a header, or a response).
fn format_error(query: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(query)).ok()?;
    if header.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = ResponseCode::FormErr;
    let mut reply = Message::response(metadata.id, metadata.op_code);
    reply.metadata = metadata;
    reply.to_vec().ok()
}

/// Answers every DNS query that arrives on `udp` (datagrams) and on `tcp` (connections, each
/// carrying any number of queries, each with its 2-byte length prefix) with `REFUSED`, and
/// records each one in `audit` as protocol `dns`, reason `dns_not_served`, `server.address` the
/// first question's name, `server.port` the socket's local port, `client.address` the sender,
/// and the mode `mode` gives at that moment. Runs until `shutdown` completes; then the open
/// TCP connections are closed.
pub async fn serve(
    udp: UdpSocket,
    tcp: Option<TcpListener>,
    audit: Arc<dyn AuditSink>,
    mode: impl Fn() -> Mode + Send + Sync + 'static,
    shutdown: impl Future<Output = ()>,
) {
    let refuser = Arc::new(Refuser {
        audit,
        mode: Box::new(mode),
    });
    let udp_loop = serve_udp(&udp, &refuser);
    let tcp_loop = async {
        match tcp {
            Some(listener) => serve_tcp(listener, refuser.clone()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = udp_loop => {}
        () = tcp_loop => {}
    }
}

/// Receives and answers datagrams, one at a time, in one buffer. Never returns.
async fn serve_udp(udp: &UdpSocket, refuser: &Refuser) {
    let port = udp.local_addr().map_or(0, |a| a.port());
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let (n, peer) = match udp.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "dns refuser: receive failed");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(reply) = refuser.answer(&buf[..n], port, peer) else {
            continue;
        };
        // A datagram that cannot be sent now (a full send buffer) is lost, as UDP may lose
        // it anyway; the loop never waits on one client.
        if let Err(e) = udp.try_send_to(&reply, peer) {
            tracing::debug!(error = %e, %peer, "dns refuser: answer not sent");
        }
    }
}

/// Accepts connections, at most [`TCP_CONNECTIONS`] served at once. Never returns; dropping
/// it closes every connection.
async fn serve_tcp(listener: TcpListener, refuser: Arc<Refuser>) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let slots = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "dns refuser: accept failed");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: closed at once rather than queued, so a flood of connections holds
            // nothing.
            drop(stream);
            continue;
        };
        let refuser = refuser.clone();
        conns.spawn(async move {
            serve_connection(stream, &refuser, port, peer).await;
            drop(slot);
        });
    }
}

/// Answers the queries of one TCP connection until it closes, stalls or sends something that
/// is not a query.
async fn serve_connection(mut stream: TcpStream, refuser: &Refuser, port: u16, peer: SocketAddr) {
    let mut buf = Vec::new();
    loop {
        let read = async {
            let len = usize::from(stream.read_u16().await?);
            buf.resize(len, 0);
            stream.read_exact(&mut buf).await
        };
        match tokio::time::timeout(TCP_TIMEOUT, read).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        let Some(reply) = refuser.answer(&buf, port, peer) else {
            return;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(2 + reply.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        match tokio::time::timeout(TCP_TIMEOUT, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use proxy_audit::{Audit, RunRecorder};
    use proxy_core::{BlockedRecord, Protocol, Source, Verdict};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;

    /// The bound on anything the tests wait for (never a performance assertion).
    const BOUND: Duration = Duration::from_secs(3);

    /// A refuser on loopback, recording into an [`Audit`] (whose blocked-request buffer the
    /// tests read) with `run`'s recorder and its report behind it.
    struct Refusing {
        udp: SocketAddr,
        tcp: SocketAddr,
        audit: Arc<Audit>,
        recorder: Arc<RunRecorder>,
        report: PathBuf,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    impl Refusing {
        async fn start() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let report = dir.path().join("report.json");
            let recorder = Arc::new(RunRecorder::with_report(&report).unwrap());
            let audit = Arc::new(Audit::default().with_sink(recorder.clone()));
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(
                udp,
                Some(tcp),
                audit.clone(),
                || Mode::Limited,
                async move {
                    let _ = stopped.await;
                },
            ));
            Self {
                udp: udp_addr,
                tcp: tcp_addr,
                audit,
                recorder,
                report,
                stop: Some(stop),
                task,
                _dir: dir,
            }
        }

        fn blocked(&self) -> Vec<BlockedRecord> {
            self.audit.blocked().snapshot().blocked
        }

        /// Stops the refuser and waits for `serve` to return.
        async fn stop(&mut self) {
            let _ = self.stop.take().unwrap().send(());
            tokio::time::timeout(BOUND, &mut self.task)
                .await
                .expect("serve returns after shutdown")
                .unwrap();
        }
    }

    fn query(id: u16, name: Name, edns: bool) -> Message {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name, RecordType::AAAA));
        if edns {
            m.set_edns(Edns::new());
        }
        m
    }

    async fn recv(client: &UdpSocket) -> Message {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(BOUND, client.recv(&mut buf))
            .await
            .expect("an answer within the bound")
            .unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    /// The answer to `sent`: a response with its ID, `REFUSED`, its question, no records.
    #[track_caller]
    fn assert_refused(answer: &Message, sent: &Message) {
        assert_eq!(answer.metadata.id, sent.metadata.id);
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
        assert!(answer.metadata.recursion_desired && !answer.metadata.recursion_available);
        assert_eq!(answer.queries, sent.queries);
        assert!(answer.answers.is_empty() && answer.authorities.is_empty());
        assert_eq!(answer.edns.is_some(), sent.edns.is_some());
    }

    #[track_caller]
    fn assert_event(rec: &BlockedRecord, host: &str, port: u16, client: SocketAddr) {
        assert_eq!(
            (rec.host.as_str(), rec.port, rec.client),
            (host, port, Some(client))
        );
        assert_eq!(rec.protocol, Protocol::Dns);
        assert_eq!(rec.reason, "dns_not_served");
        assert_eq!(rec.source, Source::ProxyState);
        assert_eq!(rec.decision, Verdict::Deny);
        assert_eq!(rec.mode, Mode::Limited);
        assert_eq!(rec.method, None);
    }

    #[tokio::test]
    async fn a_udp_query_is_refused_and_is_one_audit_event() {
        let mut r = Refusing::start().await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(r.udp).await.unwrap();
        let me = client.local_addr().unwrap();
        let sent = query(0x1234, Name::from_ascii("Example.TEST.").unwrap(), false);
        client.send(&sent.to_vec().unwrap()).await.unwrap();
        assert_refused(&recv(&client).await, &sent);
        // With EDNS, and a name whose labels hold a dot, a control byte and non-ASCII bytes:
        // echoed as sent, shown escaped.
        let odd = Name::from_labels([b"a.b\x01".as_slice(), "\u{e9}".as_bytes(), b"test"]).unwrap();
        let sent = query(7, odd, true);
        client.send(&sent.to_vec().unwrap()).await.unwrap();
        let answer = recv(&client).await;
        assert_refused(&answer, &sent);
        assert_eq!(answer.edns.as_ref().unwrap().max_payload(), EDNS_PAYLOAD);
        let blocked = r.blocked();
        assert_eq!(blocked.len(), 2, "{blocked:?}");
        assert_event(&blocked[0], "example.test", r.udp.port(), me);
        assert_event(
            &blocked[1],
            "a\\046b\\001.\\195\\169.test",
            r.udp.port(),
            me,
        );
        // `run`'s summary and report hold them as blocked targets.
        let port = r.udp.port();
        assert_eq!(
            r.recorder.summary().unwrap(),
            format!(
                "netproxy: blocked 2 requests: example.test:{port} (dns_not_served), \
                 a\\046b\\001.\\195\\169.test:{port} (dns_not_served)"
            )
        );
        r.stop().await;
        r.recorder.finish(0).unwrap();
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&r.report).unwrap()).unwrap();
        let d = &report["decisions"][0];
        assert_eq!(
            (&d["protocol"], &d["reason"], &d["host"], &d["port"]),
            (
                &serde_json::json!("dns"),
                &serde_json::json!("dns_not_served"),
                &serde_json::json!("example.test"),
                &serde_json::json!(port)
            )
        );
        assert_eq!(d["client"], me.to_string());
        assert_eq!(report["blocked_total"], 2);
        assert_eq!(
            report["blocked_targets"][0],
            serde_json::json!({"target": format!("example.test:{port}"), "reason": "dns_not_served", "count": 1, "remedy": null})
        );
    }

    async fn send_framed(stream: &mut TcpStream, msg: &Message) {
        let bytes = msg.to_vec().unwrap();
        let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await.unwrap();
    }

    async fn recv_framed(stream: &mut TcpStream) -> Message {
        let read = async {
            let len = stream.read_u16().await.unwrap();
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await.unwrap();
            buf
        };
        let buf = tokio::time::timeout(BOUND, read)
            .await
            .expect("an answer within the bound");
        Message::from_vec(&buf).unwrap()
    }

    /// Whether the server closed `stream` within `bound` (end of stream or a reset).
    async fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(bound, stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn tcp_queries_are_refused_several_on_one_connection() {
        let mut r = Refusing::start().await;
        let mut stream = TcpStream::connect(r.tcp).await.unwrap();
        let me = stream.local_addr().unwrap();
        let first = query(1, Name::from_ascii("a.test.").unwrap(), false);
        let second = query(2, Name::from_ascii("b.test.").unwrap(), true);
        // Both written before either answer is read.
        send_framed(&mut stream, &first).await;
        send_framed(&mut stream, &second).await;
        assert_refused(&recv_framed(&mut stream).await, &first);
        assert_refused(&recv_framed(&mut stream).await, &second);
        let blocked = r.blocked();
        assert_eq!(blocked.len(), 2, "{blocked:?}");
        assert_event(&blocked[0], "a.test", r.tcp.port(), me);
        assert_event(&blocked[1], "b.test", r.tcp.port(), me);
        // Shutdown closes the open connection.
        r.stop().await;
        assert!(closed_within(&mut stream, BOUND).await);
    }

    #[tokio::test]
    async fn what_is_not_a_query_is_dropped_or_answered_formerr() {
        let r = Refusing::start().await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(r.udp).await.unwrap();
        let good = query(9, Name::from_ascii("c.test.").unwrap(), false);
        let mut response = good.clone();
        response.metadata.message_type = MessageType::Response;
        let bytes = good.to_vec().unwrap();
        // A header that parses (ID 8, one question) and a question cut short.
        let mut cut = bytes[..bytes.len() - 3].to_vec();
        cut[..2].copy_from_slice(&8u16.to_be_bytes());
        for datagram in [
            &b""[..],
            &b"\x00\x01\x02"[..],
            &response.to_vec().unwrap(),
            &cut,
            &bytes,
        ] {
            client.send(datagram).await.unwrap();
        }
        // Datagrams on loopback arrive in order: only the cut query and the good one are
        // answered.
        let formerr = recv(&client).await;
        assert_eq!(formerr.metadata.id, 8);
        assert_eq!(formerr.metadata.message_type, MessageType::Response);
        assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
        assert!(formerr.queries.is_empty());
        assert_refused(&recv(&client).await, &good);
        assert_eq!(r.blocked().len(), 1);
        // Over TCP, a message that is not a query closes the connection.
        let mut stream = TcpStream::connect(r.tcp).await.unwrap();
        stream.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
        assert!(closed_within(&mut stream, BOUND).await);
        let mut stream = TcpStream::connect(r.tcp).await.unwrap();
        send_framed(&mut stream, &response).await;
        assert!(closed_within(&mut stream, BOUND).await);
        assert_eq!(r.blocked().len(), 1);
    }

    #[tokio::test]
    async fn tcp_connections_are_bounded_and_silent_ones_dropped() {
        let r = Refusing::start().await;
        // The first connection is served; with it, TCP_CONNECTIONS are held open and silent.
        let mut first = TcpStream::connect(r.tcp).await.unwrap();
        let q = query(3, Name::from_ascii("d.test.").unwrap(), false);
        send_framed(&mut first, &q).await;
        assert_refused(&recv_framed(&mut first).await, &q);
        let mut held = vec![first];
        for _ in 1..TCP_CONNECTIONS {
            held.push(TcpStream::connect(r.tcp).await.unwrap());
        }
        // One more is closed at once, well before the held ones time out.
        let mut extra = TcpStream::connect(r.tcp).await.unwrap();
        assert!(closed_within(&mut extra, BOUND).await);
        // A silent connection is dropped after TCP_TIMEOUT.
        assert!(closed_within(&mut held[1], TCP_TIMEOUT * 3).await);
        assert_eq!(r.blocked().len(), 1);
    }
}

#[cfg(test)]
mod service_tests {
    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use proxy_config::{CliOverrides, Sources};
    use proxy_core::Protocol;

    use super::*;
    use crate::{Files, Service};

    /// `Service::serve_dns` records into the service's own audit (its blocked buffer and
    /// metrics), with the mode in force when each query arrives.
    #[tokio::test]
    async fn the_service_records_refused_lookups_with_the_mode_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            system_dir: Some(dir.path().join("system")),
            home_dir: Some(dir.path().join("home")),
            system_requirements: Some(dir.path().join("none.toml")),
            cli: CliOverrides {
                mode: Some(Mode::Limited),
                ..Default::default()
            },
            ..Default::default()
        };
        let service = Arc::new(
            Service::with_audit(sources, |_| None, Default::default(), Files::ReadOnce).unwrap(),
        );
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = service.clone();
        let task = tokio::spawn(async move {
            s.serve_dns(udp, None, async move {
                let _ = stopped.await;
            })
            .await;
        });
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(addr).await.unwrap();
        let mut buf = vec![0u8; 512];
        for (id, name) in [(1u16, "one.test."), (2, "two.test.")] {
            if id == 2 {
                service.set_mode(Mode::Full).unwrap();
            }
            let mut q = Message::new(id, MessageType::Query, OpCode::Query);
            q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            client.send(&q.to_vec().unwrap()).await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(3), client.recv(&mut buf))
                .await
                .expect("an answer within the bound")
                .unwrap();
            let answer = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(answer.metadata.id, id);
            assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
        }
        let blocked = service.audit().blocked().snapshot().blocked;
        let seen: Vec<_> = blocked
            .iter()
            .map(|b| (b.protocol, b.host.as_str(), b.port, b.mode))
            .collect();
        assert_eq!(
            seen,
            [
                (Protocol::Dns, "one.test", addr.port(), Mode::Limited),
                (Protocol::Dns, "two.test", addr.port(), Mode::Full)
            ]
        );
        let metrics = service.metrics().render();
        assert!(
            metrics.contains(
                "netproxy_decisions_total{protocol=\"dns\",decision=\"deny\",reason=\"dns_not_served\"} 2"
            ),
            "{metrics}"
        );
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("serve_dns returns after shutdown")
            .unwrap();
    }
}
