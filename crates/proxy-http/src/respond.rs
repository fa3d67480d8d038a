//! The responses netproxy writes itself (docs/responses.md).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use proxy_core::{Decision, Failure, Reason, RequestMeta};
use serde_json::json;

/// The body type of every response the proxy sends.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn empty() -> Body {
    full(Bytes::new())
}

/// A JSON response: `value` and a newline, `content-type: application/json`.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut text = value.to_string();
    text.push('\n');
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A refusal: 403 JSON with `x-proxy-error` (503 without it for a disabled proxy), its status
/// line naming the reason (docs/responses.md). The interceptor answers refusals inside TLS with
/// it too, so they read the same as the proxy's own.
pub fn blocked(decision: &Decision, meta: &RequestMeta) -> Response<Body> {
    let reason = decision.reason.unwrap_or(Reason::PolicyDenied);
    let status = StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    let host = meta.target.server_address();
    let body = json!({
        "status": "blocked",
        "reason": reason.as_str(),
        "decision": decision.verdict.as_str(),
        "source": decision.source.as_str(),
        "protocol": meta.protocol.as_str(),
        "host": host,
        "port": meta.target.port(),
        "message": blocked_message(reason),
    });
    let mut r = json_response(status, &body);
    if let Some(v) = reason.x_proxy_error() {
        r.headers_mut()
            .insert("x-proxy-error", HeaderValue::from_static(v));
    }
    name_the_block(&mut r, reason);
    r
}

/// The status line of a refusal names netproxy and the reason (`403 Blocked by netproxy
/// (not_allowed)`), which clients such as Python and wget print (docs/responses.md).
fn name_the_block(r: &mut Response<Body>, reason: Reason) {
    set_phrase(r, format!("Blocked by netproxy ({})", reason.as_str()));
}

/// The body's message of a refusal: it names netproxy, then the reason's message.
fn blocked_message(reason: Reason) -> String {
    format!("Blocked by netproxy: {}", reason.message())
}

/// Sets the status line's reason phrase (HTTP/1 only: HTTP/2 has none).
fn set_phrase(r: &mut Response<Body>, phrase: String) {
    if let Ok(p) = hyper::ext::ReasonPhrase::try_from(phrase.into_bytes()) {
        r.extensions_mut().insert(p);
    }
}

/// An answer of netproxy's own that is not a refusal (an error or a failure): the status's
/// usual phrase, then netproxy and the reason (`502 Bad Gateway (netproxy: dns_failed)`), and
/// a message that names netproxy.
fn error_response(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let mut r = json_response(
        status,
        &json!({"status": "error", "reason": reason, "message": format!("netproxy: {message}")}),
    );
    let canonical = status.canonical_reason().unwrap_or("Error");
    set_phrase(&mut r, format!("{canonical} (netproxy: {reason})"));
    r
}

/// A refusal for a host that cannot be canonicalised: 403 `invalid_host`.
pub(crate) fn invalid_host(raw: &str, port: u16, protocol: proxy_core::Protocol) -> Response<Body> {
    let reason = Reason::InvalidHost;
    let body = json!({
        "status": "blocked",
        "reason": reason.as_str(),
        "decision": "deny",
        "source": reason.source().as_str(),
        "protocol": protocol.as_str(),
        "host": raw,
        "port": port,
        "message": blocked_message(reason),
    });
    let mut r = json_response(StatusCode::FORBIDDEN, &body);
    if let Some(v) = reason.x_proxy_error() {
        r.headers_mut()
            .insert("x-proxy-error", HeaderValue::from_static(v));
    }
    name_the_block(&mut r, reason);
    r
}

/// An upstream failure: 502 JSON (504 for a timeout), `502 Bad Gateway (netproxy:
/// dns_failed)` in the status line.
pub fn failure(f: &Failure) -> Response<Body> {
    let status = StatusCode::from_u16(f.kind.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
    error_response(status, f.kind.as_str(), &f.message)
}

/// An error netproxy answers itself: `{"status":"error","reason":REASON,"message":MESSAGE}`
/// with `status` (docs/responses.md); the message and the status line name netproxy.
pub fn error(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    error_response(status, reason, message)
}

/// `407`: the listener needs the session's credential (`netproxy run --proxy-auth`).
pub(crate) fn proxy_auth_required() -> Response<Body> {
    let mut r = error_response(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "proxy_auth_required",
        "this proxy needs the session's credential (Proxy-Authorization: Basic)",
    );
    r.headers_mut().insert(
        hyper::header::PROXY_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Basic realm=\"netproxy\""),
    );
    r
}

/// A malformed request: 400 JSON.
pub(crate) fn bad_request(message: &str) -> Response<Body> {
    error_response(StatusCode::BAD_REQUEST, "bad_request", message)
}
