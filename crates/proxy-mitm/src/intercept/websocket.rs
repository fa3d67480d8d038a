//! Websocket upgrades inside an intercepted tunnel (docs/mitm.md): an HTTP/1.1 `GET` with
//! `Connection: upgrade` and `Upgrade: websocket`, judged like any request inside, is forwarded
//! with the headers of its handshake; after the origin's `101 Switching Protocols` the session
//! becomes a relay of bytes between the client's upgraded stream and the origin's, until the
//! websocket ends. The upstream HTTP/1.1 connection is taken over by the upgrade, so the session
//! ends with the websocket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use proxy_core::{Failure, Lease, UpstreamFailure};
use proxy_http::Body;
use tokio::sync::Notify;

/// Whether `req` opens a websocket (RFC 6455 §4.1): an HTTP/1.1 `GET` whose `Connection` names
/// `upgrade` and whose `Upgrade` names `websocket`. HTTP/2 has no `Upgrade`; its websockets
/// (extended `CONNECT`, RFC 8441) are not offered to the client.
pub(super) fn is_websocket<B>(req: &Request<B>) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.method() == Method::GET
        && req.version() == http::Version::HTTP_11
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
}

/// What the session knows of its upstream connection: whether it ended, and whether a websocket
/// upgrade is asked on it (then its end is the upgrade's, not the session's). Each change is
/// followed by a wake-up of `changed`, and the session reads the state after each wake-up.
#[derive(Debug, Default)]
pub(super) struct UpstreamWatch {
    ended: AtomicBool,
    upgrading: AtomicBool,
    changed: Notify,
}

impl UpstreamWatch {
    /// The origin's connection ended.
    pub(super) fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// Completes when the state may have changed.
    pub(super) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The origin's connection ended, and not because a websocket took it over: the session
    /// should end after the request in flight.
    pub(super) fn gone(&self) -> bool {
        self.ended.load(Ordering::SeqCst) && !self.upgrading.load(Ordering::SeqCst)
    }
}

/// An upgrade asked of the origin; dropped before its `101` (an error, another answer), it
/// says so, and an end of the upstream connection is the session's again.
struct Attempt(Option<Arc<UpstreamWatch>>);

impl Attempt {
    fn new(watch: &Arc<UpstreamWatch>) -> Self {
        watch.upgrading.store(true, Ordering::SeqCst);
        Self(Some(watch.clone()))
    }

    /// The origin switched: the upstream connection is the websocket's from now on.
    fn switched(mut self) {
        self.0 = None;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(watch) = self.0.take() {
            watch.upgrading.store(false, Ordering::SeqCst);
            watch.changed.notify_one();
        }
    }
}

/// The two upgraded streams of a switched session, relayed once the client's `101` is written
/// (hyper hands the client's stream over when its server connection ends).
pub(super) struct Relay {
    client: OnUpgrade,
    upstream: OnUpgrade,
    /// The websocket's lease: revoked when a narrower policy no longer allows it.
    lease: Lease,
}

impl Relay {
    /// Relays bytes both ways until both sides end, nothing moved either way for `idle`, or the
    /// lease is revoked.
    pub(super) async fn run(self, idle: Duration) {
        let Self {
            client,
            upstream,
            lease,
        } = self;
        // Both are handed over as their connections end (at once, after the `101`).
        let both = async { tokio::join!(client, upstream) };
        match tokio::time::timeout(super::HANDSHAKE_WAIT, both).await {
            Ok((Ok(client), Ok(upstream))) => {
                proxy_io::tunnel_until(TokioIo::new(client), TokioIo::new(upstream), idle, || {
                    lease.revoked()
                })
                .await;
            }
            Ok((client, upstream)) => tracing::debug!(
                client_ok = client.is_ok(),
                upstream_ok = upstream.is_ok(),
                "websocket upgrade inside an intercepted tunnel failed"
            ),
            Err(_) => tracing::debug!("websocket upgrade inside an intercepted tunnel timed out"),
        }
    }
}

/// Where a switched session's [`Relay`] waits for the session to run it.
#[derive(Default)]
pub(super) struct RelaySlot(Mutex<Option<Relay>>);

impl RelaySlot {
    /// The relay, when a websocket took the session over.
    pub(super) fn take(&self) -> Option<Relay> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn put(&self, relay: Relay) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(relay);
    }
}

/// A websocket handshake on its way to the origin: the client's side of the upgrade and the
/// handshake's headers, kept through the removal of hop-by-hop headers.
pub(super) struct Upgrade {
    client: OnUpgrade,
    kept: Vec<(HeaderName, HeaderValue)>,
    /// The client's `Sec-WebSocket-Key`, when it sent exactly one.
    key: Option<HeaderValue>,
    attempt: Attempt,
}

/// The value RFC 6455 §1.3 appends to the key before hashing it.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for `key`: base64 of the SHA-1 of the key and the GUID.
fn accept_value(key: &[u8]) -> String {
    use base64::Engine as _;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(WEBSOCKET_GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

impl Upgrade {
    /// Takes the client's side of the upgrade out of `req` (a request [`is_websocket`]) and
    /// notes the handshake's headers; from now on an end of the upstream connection does not
    /// end the session by itself.
    pub(super) fn take(req: &mut Request<Incoming>, watch: &Arc<UpstreamWatch>) -> Self {
        let mut keys = req.headers().get_all("sec-websocket-key").iter();
        let key = match (keys.next(), keys.next()) {
            (Some(k), None) => Some(k.clone()),
            _ => None,
        };
        Self {
            client: hyper::upgrade::on(&mut *req),
            kept: handshake_headers(req.headers()),
            key,
            attempt: Attempt::new(watch),
        }
    }

    /// Whether the origin's `101` answers this handshake: `Upgrade: websocket` alone, and the
    /// accept value of the client's one key.
    fn accepted(&self, headers: &HeaderMap) -> bool {
        let mut upgrades = headers.get_all(header::UPGRADE).iter();
        let upgrade_ok = matches!(
            (upgrades.next(), upgrades.next()),
            (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket")
        );
        let mut accepts = headers.get_all("sec-websocket-accept").iter();
        let accept_ok = match (&self.key, accepts.next(), accepts.next()) {
            (Some(key), Some(v), None) => {
                v.as_bytes().trim_ascii() == accept_value(key.as_bytes()).as_bytes()
            }
            _ => false,
        };
        upgrade_ok && accept_ok
    }

    /// Puts the handshake's headers back after the hop-by-hop ones were removed: `Connection:
    /// upgrade`, `Upgrade` and every `Sec-WebSocket-*` header, even one `Connection` named.
    pub(super) fn restore(&self, headers: &mut HeaderMap) {
        restore(&self.kept, headers);
        // Only the websocket is asked for, whatever other protocols the client listed.
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }

    /// The origin's answer for the client. A `101` hands both upgraded streams to `relay` and
    /// answers the client `101` with the handshake's headers; any other answer is the client's
    /// as it is (hop-by-hop headers removed), and the upstream connection serves on.
    pub(super) fn answer(
        self,
        mut resp: Response<Incoming>,
        relay: &RelaySlot,
        lease: Lease,
    ) -> Result<Response<Body>, Failure> {
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            super::strip_hop_by_hop(resp.headers_mut());
            return Ok(resp.map(BodyExt::boxed));
        }
        // Only a websocket's answer is relayed (RFC 6455 §4.2.2): `Upgrade: websocket` and the
        // accept value of the client's key; any other switch ends the tunnel with a 502.
        if !self.accepted(resp.headers()) {
            return Err(Failure::new(
                UpstreamFailure::UpstreamError,
                "the origin's 101 is not a websocket handshake's answer",
            ));
        }
        self.attempt.switched();
        relay.put(Relay {
            client: self.client,
            upstream: hyper::upgrade::on(&mut resp),
            lease,
        });
        let kept = handshake_headers(resp.headers());
        super::strip_hop_by_hop(resp.headers_mut());
        restore(&kept, resp.headers_mut());
        Ok(resp.map(BodyExt::boxed))
    }
}

/// The upstream spoke HTTP/2, where a websocket cannot be asked with `Upgrade`.
pub(super) fn needs_http1() -> Failure {
    Failure::new(
        UpstreamFailure::UpstreamError,
        "the origin speaks HTTP/2 on this tunnel, and a websocket upgrade needs HTTP/1.1",
    )
}

/// The origin answered `101` to a request that asked for no websocket.
pub(super) fn unasked_switch() -> Failure {
    Failure::new(
        UpstreamFailure::UpstreamError,
        "the origin switched protocols without being asked",
    )
}

/// `Upgrade` and the `Sec-WebSocket-*` headers, in order.
fn handshake_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter(|(n, _)| *n == header::UPGRADE || n.as_str().starts_with("sec-websocket-"))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

fn restore(kept: &[(HeaderName, HeaderValue)], headers: &mut HeaderMap) {
    for (name, _) in kept {
        headers.remove(name);
    }
    for (name, value) in kept {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::{HeaderMap, HeaderValue, Request};

    use super::{handshake_headers, is_websocket, restore};

    fn request(method: &str, connection: &str, upgrade: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .header("connection", connection)
            .header("upgrade", upgrade)
            .body(())
            .unwrap()
    }

    #[test]
    fn a_websocket_is_an_http11_get_with_both_tokens() {
        assert!(is_websocket(&request("GET", "Upgrade", "websocket")));
        assert!(is_websocket(&request(
            "GET",
            "keep-alive, upgrade",
            "WebSocket"
        )));
        assert!(!is_websocket(&request("POST", "upgrade", "websocket")));
        assert!(!is_websocket(&request("GET", "keep-alive", "websocket")));
        assert!(!is_websocket(&request("GET", "upgrade", "h2c")));
        let mut h2 = request("GET", "upgrade", "websocket");
        *h2.version_mut() = http::Version::HTTP_2;
        assert!(!is_websocket(&h2));
    }

    #[test]
    fn the_handshake_headers_survive_the_hop_by_hop_removal() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("Upgrade, X-Remove, Sec-WebSocket-Key"),
        );
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZQ=="),
        );
        h.insert("sec-websocket-version", HeaderValue::from_static("13"));
        h.append("sec-websocket-protocol", HeaderValue::from_static("chat"));
        h.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("superchat"),
        );
        h.insert("x-remove", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        let kept = handshake_headers(&h);
        super::super::strip_hop_by_hop(&mut h);
        restore(&kept, &mut h);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "dGhlIHNhbXBsZQ==");
        assert_eq!(h["sec-websocket-version"], "13");
        let protocols: Vec<_> = h.get_all("sec-websocket-protocol").iter().collect();
        assert_eq!(protocols, ["chat", "superchat"]);
        assert!(h.contains_key("accept"));
        assert!(!h.contains_key("x-remove") && !h.contains_key("keep-alive"));
        assert_eq!(h.len(), 7, "{h:?}");
    }
}
