//! An in-process DNS server over real UDP and TCP sockets on loopback, with programmable
//! answers: addresses, CNAMEs, answers that change from one query to the next (rebinding),
//! NXDOMAIN, SERVFAIL, dropped queries and answers truncated over UDP. It records every question
//! it is asked, and which came over TCP.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// What the server answers for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// These addresses (A for IPv4, AAAA for IPv6), with TTL 0.
    Addrs(Vec<IpAddr>),
    /// A CNAME to another name, whose own answer follows it.
    Cname(String),
    /// A different answer for each A query, in order; the last one repeats (DNS rebinding).
    Sequence(Vec<Vec<IpAddr>>),
    /// The name does not exist.
    NxDomain,
    /// The server fails.
    ServFail,
    /// No response at all (the client times out).
    Drop,
    /// Over UDP an empty answer with the TC (truncated) bit set, as a server whose answer does
    /// not fit a datagram sends; over TCP these addresses. A resolver gets them only by asking
    /// again over TCP.
    Truncated(Vec<IpAddr>),
}

#[derive(Debug, Default)]
struct Zone {
    answers: HashMap<String, Answer>,
    /// How many A queries each `Sequence` name has had.
    step: HashMap<String, usize>,
    /// Every question asked, as `name TYPE`.
    log: Vec<String>,
    /// The questions asked over TCP, the same way.
    tcp_log: Vec<String>,
}

/// The server. Dropping it stops it.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Starts a server on 127.0.0.1, UDP and TCP on the same ephemeral port.
    pub async fn start() -> std::io::Result<Self> {
        // The TCP and UDP ports must match; retry until a free pair is found.
        let mut last_err = None;
        for _ in 0..50 {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok(Self::run(addr, udp, tcp)),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("no free port pair")))
    }

    fn run(addr: SocketAddr, udp: UdpSocket, tcp: TcpListener) -> Self {
        let zone = Arc::new(Mutex::new(Zone::default()));
        let udp = Arc::new(udp);
        let z = zone.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    return;
                };
                if let Some(reply) = respond(&z, &buf[..n], Transport::Udp) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        let z = zone.clone();
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    return;
                };
                tokio::spawn(serve_tcp(stream, z.clone()));
            }
        });
        Self {
            addr,
            zone,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// The address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the answer for a name (case-insensitive, trailing dot ignored).
    pub fn set(&self, name: &str, answer: Answer) {
        let mut z = self
            .zone
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        z.step.remove(&key(name));
        z.answers.insert(key(name), answer);
    }

    /// Every question asked so far, as `name TYPE` (e.g. `a.test A`).
    pub fn queries(&self) -> Vec<String> {
        self.zone
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .log
            .clone()
    }

    /// How many questions were asked about `name` (any type).
    pub fn queries_for(&self, name: &str) -> usize {
        count_for(&self.queries(), name)
    }

    /// How many questions about `name` (any type) came over TCP.
    pub fn tcp_queries_for(&self, name: &str) -> usize {
        let log = self
            .zone
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tcp_log
            .clone();
        count_for(&log, name)
    }
}

/// How many of `log`'s questions (`name TYPE`) are about `name`.
fn count_for(log: &[String], name: &str) -> usize {
    let k = key(name);
    log.iter()
        .filter(|q| q.split(' ').next() == Some(k.as_str()))
        .count()
}

/// How a query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

async fn serve_tcp(mut stream: TcpStream, zone: Arc<Mutex<Zone>>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut buf = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Some(reply) = respond(&zone, &buf, Transport::Tcp) else {
            continue;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_u16(len).await.is_err() || stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// Builds the reply to one query that came over `transport`; `None` drops it.
fn respond(zone: &Mutex<Zone>, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut reply = Message::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    let q = request.queries.first()?.clone();
    let qtype = q.query_type();
    let mut z = zone
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let asked = format!("{} {qtype}", key(&q.name().to_ascii()));
    if transport == Transport::Tcp {
        z.tcp_log.push(asked.clone());
    }
    z.log.push(asked);
    let mut name = q.name().clone();
    // Follow CNAMEs (at most 8) and collect the records.
    for _ in 0..8 {
        let k = key(&name.to_ascii());
        let answer = z.answers.get(&k).cloned();
        match answer {
            None | Some(Answer::NxDomain) => {
                reply.metadata.response_code = ResponseCode::NXDomain;
                break;
            }
            Some(Answer::ServFail) => {
                reply.metadata.response_code = ResponseCode::ServFail;
                break;
            }
            Some(Answer::Drop) => return None,
            Some(Answer::Cname(target)) => {
                let target = Name::from_ascii(format!("{}.", key(&target))).ok()?;
                reply.add_answer(Record::from_rdata(
                    name.clone(),
                    0,
                    RData::CNAME(CNAME(target.clone())),
                ));
                name = target;
            }
            Some(Answer::Addrs(addrs)) => {
                add_addrs(&mut reply, &name, qtype, &addrs);
                break;
            }
            Some(Answer::Truncated(_)) if transport == Transport::Udp => {
                reply.answers.clear();
                reply.metadata.truncation = true;
                break;
            }
            Some(Answer::Truncated(addrs)) => {
                add_addrs(&mut reply, &name, qtype, &addrs);
                break;
            }
            Some(Answer::Sequence(steps)) => {
                let step = z.step.entry(k).or_insert(0);
                let i = (*step).min(steps.len().saturating_sub(1));
                if qtype == RecordType::A {
                    *step += 1;
                }
                if let Some(addrs) = steps.get(i) {
                    add_addrs(&mut reply, &name, qtype, addrs);
                }
                break;
            }
        }
    }
    reply.add_query(q);
    reply.to_vec().ok()
}

fn add_addrs(reply: &mut Message, name: &Name, qtype: RecordType, addrs: &[IpAddr]) {
    for ip in addrs {
        let rdata = match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        reply.add_answer(Record::from_rdata(name.clone(), 0, rdata));
    }
}
