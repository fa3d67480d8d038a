//! `http_wire`: the real HTTP front-end ([`proxy_http::serve_stream`]) serving one connection
//! whose client sends arbitrary bytes (requests built from pieces, or raw), in chunks with
//! pauses, under small limits, with or without the proxy credential, whatever the gate answers
//! and whatever the upstream does ([`crate::wire`]). Besides the harness's own checks (no
//! panic in any task; the connection ends in time):
//! - it ends within three times the time its timeouts allow: per request head, the header
//!   timeout, twice the idle timeout (the upstream's response head, then a body or tunnel
//!   that goes quiet) and the ClientHello wait of `verify_sni`, plus the client's own pauses;
//! - it writes back a bounded amount: a fixed size per request head the client sent, plus
//!   twice what the client sent (a refusal may quote the target), plus what the upstream sent;
//! - what it writes is HTTP: the first bytes are a status line;
//! - nothing is dialled unless the gate admits it, and nothing reaches the gate without the
//!   credential when one is required.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proxy_core::ProxyCredential;
use proxy_io::{HELLO_WAIT, Limits};

use crate::input::Input;
use crate::wire::{self, Greeter, Origin, Pacing, Upstreams, Verdict};

/// The credential a client must present when proxy authentication is on.
const USER: &str = "netproxy";
const PASSWORD: &str = "s3cret";
/// `Basic` and the base64 of `netproxy:s3cret`.
const TOKEN: &str = "bmV0cHJveHk6czNjcmV0";

/// The most netproxy writes for one request head, beside what it quotes of the request.
const PER_HEAD: u64 = 2048;

const METHODS: &[&str] = &[
    "GET", "POST", "CONNECT", "HEAD", "OPTIONS", "PUT", "G T", "", "get",
];
const TARGETS: &[&str] = &[
    "http://a.test/",
    "http://a.test:8080/p?q=1",
    "a.test:443",
    "/",
    "http://[::1]:80/",
    "http://a..b/",
    "https://a.test/",
    "http://u:p@a.test/",
    "*",
    "http://%ff/",
    "ws://a.test/chat",
    "a.test:0",
    "[::1]:443",
    "http://localhost/v1.41/info",
    ":443",
];
const VERSIONS: &[&str] = &["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "", "HTTP/1.1 x"];
const HEADERS: &[&str] = &[
    "Host: a.test",
    "Host: other.test",
    "Host: localhost",
    "Content-Length: 5",
    "Content-Length: 70000",
    "Transfer-Encoding: chunked",
    "Connection: close",
    "Connection: upgrade",
    "Upgrade: websocket",
    "Proxy-Authorization: Basic bmV0cHJveHk6czNjcmV0",
    "Proxy-Authorization: Basic Zm9vOmJhcg==",
    "x-unix-socket: /run/a.sock",
    "x-unix-socket: a.sock",
    "Expect: 100-continue",
    "Origin: http://x.test",
    "X-HTTP-Method-Override: DELETE",
    "Content-Length: 5\r\nContent-Length: 6",
    "X: \u{ff}",
];
const BODIES: &[&[u8]] = &[
    b"",
    b"hello",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"ffffffffffffffffff\r\n",
    b"\x16\x03\x01\x00\x05hello",
];

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let header_timeout = Duration::from_secs(input.pick(&[1, 2, 5]));
    let idle_timeout = Duration::from_secs(input.pick(&[1, 3, 10]));
    let max_header_bytes = input.pick(&[512, 8192, 9000, 65536]);
    let auth = input.bool();
    let limits = Limits {
        header_timeout,
        idle_timeout,
        max_header_bytes,
        max_connections: 1,
        proxy_auth: auth.then(|| Arc::new(ProxyCredential::new(USER, PASSWORD))),
        ..Limits::default()
    };
    let verdict = Verdict::read(&mut input);
    let origin = Origin::read(&mut input);
    let interceptor = Arc::new(Greeter {
        accepts: input.bool(),
    });
    let pacing = Pacing::read(&mut input);
    let bytes = if input.bool() {
        input.rest().to_vec()
    } else {
        client_bytes(&mut input)
    };
    let heads = heads(&bytes);
    let per_head = header_timeout + idle_timeout * 2 + HELLO_WAIT;
    let bound = pacing.time()
        + per_head
            .saturating_mul(3)
            .saturating_mul(heads.saturating_add(1));
    let gate = Arc::new(verdict.gate());
    let dialer = Arc::new(Upstreams::new(origin));
    let outcome = wire::drive(&bytes, &pacing, bound, false, |stream| {
        let peer = "127.0.0.1:40000".parse().unwrap_or_else(|e| panic!("{e}"));
        proxy_http::serve_stream(
            stream,
            peer,
            gate.clone(),
            dialer.clone(),
            interceptor,
            limits,
        )
    });
    let dials = dialer.dials.load(Ordering::SeqCst);
    let upstream_wrote = dialer.written.load(Ordering::SeqCst);
    let most = PER_HEAD * (u64::from(heads) + 1) + 2 * bytes.len() as u64 + upstream_wrote;
    assert!(
        outcome.total <= most,
        "wrote {} bytes back for {} bytes and {heads} heads (the upstream wrote {upstream_wrote})",
        outcome.total,
        bytes.len()
    );
    assert!(
        outcome.written.is_empty() || outcome.written.starts_with(b"HTTP/1."),
        "not an HTTP response: {:?}",
        String::from_utf8_lossy(&outcome.written)
    );
    if !verdict.admits() {
        assert_eq!(dials, 0, "dialled though the gate admits nothing");
    }
    if auth && !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()) {
        assert!(
            gate.seen().is_empty(),
            "a request reached the gate without the credential: {:?}",
            gate.seen()
        );
        assert_eq!(dials, 0, "dialled without the credential");
    }
}

/// An upper bound of the request heads in `bytes`: each ends with an empty line, its line
/// ends `\n` or `\r\n`.
fn heads(bytes: &[u8]) -> u32 {
    let ends = bytes.windows(2).filter(|w| *w == b"\n\n").count()
        + bytes.windows(3).filter(|w| *w == b"\n\r\n").count();
    u32::try_from(ends).unwrap_or(u32::MAX)
}

/// Requests built from pieces, one after another, then maybe bytes for a tunnel.
fn client_bytes(input: &mut Input<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..=input.below(3) {
        let eol: &[u8] = if input.below(8) == 0 { b"\n" } else { b"\r\n" };
        out.extend_from_slice(input.pick(METHODS).as_bytes());
        out.push(b' ');
        if input.below(8) == 0 {
            out.extend_from_slice(input.bytes(40));
        } else {
            out.extend_from_slice(input.pick(TARGETS).as_bytes());
        }
        out.push(b' ');
        out.extend_from_slice(input.pick(VERSIONS).as_bytes());
        out.extend_from_slice(eol);
        for _ in 0..input.below(5) {
            match input.below(10) {
                0 => out.extend_from_slice(input.bytes(30)),
                1 => {
                    // A header larger than the small limits.
                    out.extend_from_slice(b"X-Big: ");
                    out.resize(out.len() + 600 + 100 * input.below(100), b'a');
                }
                _ => out.extend_from_slice(input.pick(HEADERS).as_bytes()),
            }
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(eol);
        out.extend_from_slice(input.pick(BODIES));
    }
    out.extend_from_slice(input.bytes(64));
    out
}
