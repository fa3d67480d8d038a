//! `proxy-admin`: netproxy's admin API (docs/admin-api.md), an axum router over anything that
//! implements [`proxy_core::Control`].
//!
//! `GET /health` is open; every other route needs `Authorization: Bearer TOKEN`, compared in
//! constant time (401 otherwise). Request bodies are JSON, at most 64 KiB (413 beyond); a body
//! that is not the expected JSON is 400. A change that would widen a managed constraint, or that
//! needs a restart, is 409 with the reason. Errors are JSON:
//! `{"status":"error","reason":R,"message":M}`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | `{"status":"ok"}` |
//! | `GET /config` | the effective config, each value with its layer |
//! | `GET /patterns` | `{"allowed":[...],"denied":[...]}` |
//! | `GET /blocked[?peek=true]` | `{"blocked":[...],"total":N}`; drains unless `peek` |
//! | `POST /mode` `{"mode":"limited"}` | `{"status":"ok","mode":"limited"}` |
//! | `POST /domains` `{"allow":[...],"deny":[...]}` | `{"status":"ok","allow":[...],"deny":[...]}` |
//! | `POST /reload` | `{"status":"reloaded"}` |
//! | `POST /check` `{"url":...}` or `{"host","port","method","protocol"}` | the decision |
//! | `GET /metrics` | Prometheus text |
//! | `GET /pending` | `{"pending":[...],"session":[...]}` (`run --ask`) |
//! | `POST /pending/ID` `{"choice":"once"\|"session"\|"save"\|"deny"}` | what the answer did |
//!
//! The crate reaches the proxy only through `Control`; it never names the policy or the config.
//!
//! The bearer token is chosen by [`token`] (the configured one, else the environment's value
//! the caller passes in, else a generated one in a private file) or drawn by [`random_token`].
#![forbid(unsafe_code)]
// Handlers answer with a ready response on their error paths; boxing them buys nothing here.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use proxy_core::{Approval, CheckQuery, Control, ControlError, DomainChange, Mode, Protocol};
use serde::Deserialize;
use serde_json::{Value, json};

mod token;

pub use token::{TokenError, TokenSource, random_token, token};

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

struct AppState<C> {
    control: Arc<C>,
    token: Arc<str>,
}

impl<C> Clone for AppState<C> {
    fn clone(&self) -> Self {
        Self {
            control: self.control.clone(),
            token: self.token.clone(),
        }
    }
}

/// The admin API's router. `token` is the bearer token every route but `/health` requires.
pub fn router<C: Control + 'static>(control: Arc<C>, token: &str) -> Router {
    let state = AppState {
        control,
        token: Arc::from(token),
    };
    let protected = Router::new()
        .route("/config", get(config::<C>))
        .route("/credentials", get(credentials::<C>))
        .route("/patterns", get(patterns::<C>))
        .route("/blocked", get(blocked::<C>))
        .route("/mode", post(mode::<C>))
        .route("/domains", post(domains::<C>))
        .route("/reload", post(reload::<C>))
        .route("/check", post(check::<C>))
        .route("/metrics", get(metrics::<C>))
        .route("/pending", get(pending::<C>))
        .route("/pending/{id}", post(answer::<C>))
        // Set before the token check is layered on, so that it runs first: without the
        // token, a wrong method is 401 like everything else.
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            authorize::<C>,
        ));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Connections served at once; more wait in the accept backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send a complete request head within this time (also between requests on a
/// kept-alive connection).
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How many clients the admin API serves at once, and how long a request head may take.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections served at once; more wait in the accept backlog.
    pub max_connections: usize,
    /// A request head must arrive within this time.
    pub header_timeout: std::time::Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, with the default [`ServeLimits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, ServeLimits::default(), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` completes: at most `limits.max_connections`
/// at once, each closed when a request head takes longer than `limits.header_timeout`. At
/// shutdown it stops accepting and gives open connections up to 5 s to finish.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tracker = Arc::new(proxy_io::Tracker::default());
    proxy_io::accept_loop(
        listener,
        limits.max_connections,
        &tracker,
        shutdown,
        |stream, _peer, permit| {
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let mut stop = stop_rx.clone();
            async move {
                let _permit = permit;
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "admin API connection ended with an error");
                        }
                    }
                    () = async { let _ = stop.wait_for(|s| *s).await; } => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
        },
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tracker.idle()).await;
    Ok(())
}

fn error(status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({"status": "error", "reason": reason, "message": message.into()});
    (status, json_value(&body)).into_response()
}

fn control_error(e: &ControlError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::CONFLICT);
    let reason = match e {
        ControlError::Constraint(_) => "constraint",
        ControlError::Invalid(_) => "invalid",
        ControlError::NeedsRestart(_) => "needs_restart",
        ControlError::ReadOnce(_) => "read_once",
        ControlError::InvalidConfig(_) => "invalid_config",
        ControlError::Failure(f) => f.kind.as_str(),
        ControlError::NotFound(_) => "not_found",
        ControlError::NotAvailable(_) => "not_available",
        ControlError::SaveFailed(_) => "save_failed",
    };
    error(status, reason, e.to_string())
}

async fn authorize<C: Control + 'static>(
    State(state): State<AppState<C>>,
    request: Request,
    next: Next,
) -> Response {
    if bearer_matches(request.headers(), &state.token) {
        return next.run(request).await;
    }
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this route needs Authorization: Bearer TOKEN (admin_token, NETPROXY_ADMIN_TOKEN, or $NETPROXY_HOME/admin.token)",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let Some((scheme, given)) = value.as_bytes().split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ")
        && proxy_core::constant_time_eq(given.trim_ascii(), token.as_bytes())
}

async fn health() -> Response {
    json_value(&json!({"status": "ok"}))
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// A known route asked with another method (axum adds the `Allow` header).
async fn method_not_allowed(method: axum::http::Method) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route does not take {method}"),
    )
}

fn json_value(v: &Value) -> Response {
    json_text(v.to_string())
}

fn json_text(text: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response()
}

async fn config<C: Control>(State(s): State<AppState<C>>) -> Response {
    json_text(s.control.config_json())
}

async fn credentials<C: Control>(State(s): State<AppState<C>>) -> Response {
    json_text(s.control.credentials_json())
}

async fn patterns<C: Control>(State(s): State<AppState<C>>) -> Response {
    let p = s.control.patterns();
    json_value(&json!({"allowed": p.allowed, "denied": p.denied}))
}

#[derive(Debug, Deserialize)]
struct BlockedParams {
    #[serde(default)]
    peek: Option<String>,
}

async fn blocked<C: Control>(
    State(s): State<AppState<C>>,
    params: Result<Query<BlockedParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let peek = match params {
        Ok(Query(p)) => match p.peek.as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1" | "") => true,
            Some(other) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("peek must be true or false, not {other:?}"),
                );
            }
        },
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", e.body_text()),
    };
    let view = s.control.blocked(!peek);
    let entries: Vec<Value> = view
        .blocked
        .iter()
        .map(|b| {
            json!({
                "host": b.host,
                "port": b.port,
                "reason": b.reason,
                "protocol": b.protocol.as_str(),
                "method": b.method,
                "client": b.client.map(|c| c.to_string()),
                "mode": b.mode.as_str(),
                "decision": b.decision.as_str(),
                "source": b.source.as_str(),
                "timestamp": b.timestamp,
            })
        })
        .collect();
    json_value(&json!({"blocked": entries, "total": view.total}))
}

/// A request body, or why it could not be read (413 when over [`MAX_BODY`]).
type Body = Result<Bytes, axum::extract::rejection::BytesRejection>;

/// Parses a JSON body, or answers 400 (413 for a body over [`MAX_BODY`]) saying why.
fn parse<T: serde::de::DeserializeOwned>(body: &Body) -> Result<T, Response> {
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {} KiB", MAX_BODY / 1024),
            ));
        }
        Err(e) => return Err(error(e.status(), "invalid_body", e.body_text())),
    };
    if body.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "missing body",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid JSON: {e}"),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: String,
}

async fn mode<C: Control>(State(s): State<AppState<C>>, body: Body) -> Response {
    let b: ModeBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let m: Mode = match b.mode.parse() {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", format!("{e}")),
    };
    match s.control.set_mode(m).await {
        Ok(()) => json_value(&json!({"status": "ok", "mode": m.as_str()})),
        Err(e) => control_error(&e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainsBody {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

async fn domains<C: Control>(State(s): State<AppState<C>>, body: Body) -> Response {
    let b: DomainsBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if b.allow.is_empty() && b.deny.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "give at least one pattern in \"allow\" or \"deny\"",
        );
    }
    let change = DomainChange {
        allow: b.allow.clone(),
        deny: b.deny.clone(),
    };
    match s.control.update_domains(change).await {
        Ok(()) => json_value(&json!({"status": "ok", "allow": b.allow, "deny": b.deny})),
        Err(e) => control_error(&e),
    }
}

async fn reload<C: Control>(State(s): State<AppState<C>>) -> Response {
    match s.control.reload().await {
        Ok(()) => json_value(&json!({"status": "reloaded"})),
        Err(e) => control_error(&e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    url: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    method: Option<String>,
    protocol: Option<String>,
}

async fn check<C: Control>(State(s): State<AppState<C>>, body: Body) -> Response {
    let b: CheckBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let target = match (b.url, b.host, b.port) {
        (Some(url), None, None) => url,
        (None, Some(host), port) => {
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            match port {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        }
        (Some(_), _, _) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "give either \"url\" or \"host\" (and \"port\"), not both",
            );
        }
        (None, None, _) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "give \"url\", or \"host\" (and \"port\")",
            );
        }
    };
    let protocol = match b.protocol.as_deref().map(str::parse::<Protocol>) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, "invalid", format!("{e}")),
    };
    let query = CheckQuery {
        target,
        protocol,
        method: b.method,
    };
    match s.control.check(query).await {
        Ok(text) => json_text(text),
        Err(e) => control_error(&e),
    }
}

async fn metrics<C: Control>(State(s): State<AppState<C>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        s.control.metrics_text(),
    )
        .into_response()
}

async fn pending<C: Control>(State(s): State<AppState<C>>) -> Response {
    let view = match s.control.pending() {
        Ok(v) => v,
        Err(e) => return control_error(&e),
    };
    let pending: Vec<Value> = view
        .pending
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "host": p.host,
                "port": p.port,
                "protocol": p.protocol.as_str(),
                "method": p.method,
                "client": p.client.map(|c| c.to_string()),
                "since": p.since,
                "expires": p.expires,
                "waiting": p.waiting,
            })
        })
        .collect();
    json_value(&json!({"pending": pending, "session": view.session}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    choice: String,
}

async fn answer<C: Control>(
    State(s): State<AppState<C>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    // Ids are numbers: anything else names no pending decision.
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no pending decision {id:?}"),
        );
    };
    let b: AnswerBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let choice: Approval = match b.choice.parse() {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", format!("{e}")),
    };
    match s.control.answer_pending(id, choice).await {
        Ok(a) => json_value(&json!({
            "status": "ok",
            "id": a.id,
            "choice": a.choice.as_str(),
            "host": a.host,
            "port": a.port,
            "released": a.released,
            "pattern": a.pattern,
            "saved": a.saved,
        })),
        Err(e) => control_error(&e),
    }
}
