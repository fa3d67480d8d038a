//! Every route and status through `oneshot`, with a fake `Control`; and one pass over a real
//! socket.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use proxy_core::{
    Answered, Approval, BlockedRecord, BlockedView, CheckQuery, Control, ControlError,
    DomainChange, Mode, PatternLists, PendingDecision, PendingView, Protocol, Source, Verdict,
};
use tower::ServiceExt;

const TOKEN: &str = "t0ken-for-tests";

#[derive(Debug, Default)]
struct Fake {
    mode: Mutex<Option<Mode>>,
    changes: Mutex<Vec<DomainChange>>,
    drained: Mutex<Vec<bool>>,
    reload_fails: Mutex<bool>,
    checks: Mutex<Vec<CheckQuery>>,
    answers: Mutex<Vec<(u64, Approval)>>,
}

impl Control for Fake {
    fn config_json(&self) -> String {
        r#"{"network.mode":{"value":"full","layer":"default"}}"#.into()
    }
    fn patterns(&self) -> PatternLists {
        PatternLists {
            allowed: vec!["**.github.com".into()],
            denied: vec!["gist.github.com".into()],
        }
    }
    fn blocked(&self, drain: bool) -> BlockedView {
        self.drained.lock().unwrap().push(drain);
        BlockedView {
            blocked: vec![BlockedRecord {
                host: "evil.example".into(),
                port: 443,
                reason: "denied",
                protocol: Protocol::HttpsConnect,
                method: Some("CONNECT".into()),
                client: Some("127.0.0.1:5000".parse().unwrap()),
                mode: Mode::Full,
                decision: Verdict::Deny,
                source: Source::BaselinePolicy,
                timestamp: 1_767_225_600,
            }],
            total: 7,
        }
    }
    async fn set_mode(&self, mode: Mode) -> Result<(), ControlError> {
        *self.mode.lock().unwrap() = Some(mode);
        Ok(())
    }
    async fn update_domains(&self, change: DomainChange) -> Result<(), ControlError> {
        if change.allow.iter().any(|p| p == "forbidden.example") {
            return Err(ControlError::Constraint(
                "runtime: network.domains.forbidden.example: not in the managed allowlist".into(),
            ));
        }
        if change.allow.iter().any(|p| p.contains('?')) {
            return Err(ControlError::Invalid("bad pattern".into()));
        }
        self.changes.lock().unwrap().push(change);
        Ok(())
    }
    async fn reload(&self) -> Result<(), ControlError> {
        if *self.reload_fails.lock().unwrap() {
            return Err(ControlError::NeedsRestart(
                "the new config changes network.proxy_url, which needs a restart".into(),
            ));
        }
        Ok(())
    }
    async fn check(&self, query: CheckQuery) -> Result<String, ControlError> {
        let text = serde_json::json!({
            "target": query.target,
            "protocol": query.protocol.map(Protocol::as_str),
            "method": query.method,
            "decision": "deny",
        })
        .to_string();
        self.checks.lock().unwrap().push(query);
        Ok(text)
    }
    fn metrics_text(&self) -> String {
        "# TYPE netproxy_requests counter\nnetproxy_requests_total 3\n".into()
    }
    fn pending(&self) -> Result<PendingView, ControlError> {
        Ok(PendingView {
            pending: vec![PendingDecision {
                id: 4,
                host: "api.test".into(),
                port: 443,
                protocol: Protocol::HttpsConnect,
                method: Some("CONNECT".into()),
                client: Some("127.0.0.1:5000".parse().unwrap()),
                since: 1_767_225_600,
                expires: 1_767_225_660,
                waiting: 2,
            }],
            session: vec!["other.test".into()],
        })
    }
    async fn answer_pending(&self, id: u64, choice: Approval) -> Result<Answered, ControlError> {
        match (id, choice) {
            (4, _) => {}
            (5, Approval::Save) => {
                return Err(ControlError::SaveFailed(
                    "cannot save to /x/config.toml: it is a symlink".into(),
                ));
            }
            _ => return Err(ControlError::NotFound(format!("no pending decision {id}"))),
        }
        self.answers.lock().unwrap().push((id, choice));
        Ok(Answered {
            id,
            choice,
            host: "api.test".into(),
            port: 443,
            released: 2,
            pattern: matches!(choice, Approval::Session | Approval::Save)
                .then(|| "api.test".to_owned()),
            saved: (choice == Approval::Save).then(|| "/x/config.toml".to_owned()),
        })
    }
}

/// A proxy that holds nothing for approval: the trait's defaults.
#[derive(Debug)]
struct Plain;

impl Control for Plain {
    fn config_json(&self) -> String {
        "{}".into()
    }
    fn patterns(&self) -> PatternLists {
        PatternLists::default()
    }
    fn blocked(&self, _drain: bool) -> BlockedView {
        BlockedView::default()
    }
    async fn set_mode(&self, _mode: Mode) -> Result<(), ControlError> {
        Ok(())
    }
    async fn update_domains(&self, _change: DomainChange) -> Result<(), ControlError> {
        Ok(())
    }
    async fn reload(&self) -> Result<(), ControlError> {
        Ok(())
    }
    async fn check(&self, _query: CheckQuery) -> Result<String, ControlError> {
        Ok("{}".into())
    }
    fn metrics_text(&self) -> String {
        String::new()
    }
}

async fn call(
    fake: &Arc<Fake>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String, axum::http::HeaderMap) {
    let app = proxy_admin::router(fake.clone(), TOKEN);
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&bytes).into_owned(),
        headers,
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn health_is_open_and_everything_else_needs_the_token() {
    let fake = Arc::new(Fake::default());
    let (s, body, _) = call(&fake, "GET", "/health", None, "").await;
    assert_eq!(
        (s, json(&body)["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    for (method, path) in [
        ("GET", "/config"),
        ("GET", "/patterns"),
        ("GET", "/blocked"),
        ("POST", "/mode"),
        ("POST", "/domains"),
        ("POST", "/reload"),
        ("POST", "/check"),
        ("GET", "/metrics"),
        ("GET", "/pending"),
        ("POST", "/pending/4"),
    ] {
        for token in [None, Some("wrong"), Some("t0ken-for-test"), Some("")] {
            let (s, body, headers) = call(&fake, method, path, token, "").await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path} {token:?}");
            assert_eq!(headers["www-authenticate"], "Bearer");
            assert!(!body.contains(TOKEN));
            assert_eq!(json(&body)["reason"], "unauthorized");
        }
    }
    // Nothing was changed or drained by the refused calls.
    assert!(fake.mode.lock().unwrap().is_none());
    assert!(fake.answers.lock().unwrap().is_empty());
    assert!(fake.drained.lock().unwrap().is_empty());
    // Other schemes and spellings.
    let app = proxy_admin::router(fake.clone(), TOKEN);
    let resp = app
        .oneshot(
            Request::get("/patterns")
                .header("authorization", format!("Basic {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let app = proxy_admin::router(fake.clone(), TOKEN);
    let resp = app
        .oneshot(
            Request::get("/patterns")
                .header("authorization", format!("bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn read_routes() {
    let fake = Arc::new(Fake::default());
    let t = Some(TOKEN);
    let (s, body, h) = call(&fake, "GET", "/config", t, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(json(&body)["network.mode"]["layer"], "default");

    let (s, body, _) = call(&fake, "GET", "/patterns", t, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        json(&body),
        serde_json::json!({"allowed":["**.github.com"],"denied":["gist.github.com"]})
    );

    let (s, body, _) = call(&fake, "GET", "/blocked", t, "").await;
    assert_eq!(s, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["total"], 7);
    assert_eq!(
        v["blocked"][0],
        serde_json::json!({
            "host": "evil.example", "port": 443, "reason": "denied", "protocol": "https_connect",
            "method": "CONNECT", "client": "127.0.0.1:5000", "mode": "full", "decision": "deny",
            "source": "baseline_policy", "timestamp": 1_767_225_600u64
        })
    );
    let _ = call(&fake, "GET", "/blocked?peek=true", t, "").await;
    let (s, _, _) = call(&fake, "GET", "/blocked?peek=maybe", t, "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(*fake.drained.lock().unwrap(), [true, false]);

    let (s, body, h) = call(&fake, "GET", "/metrics", t, "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(body.contains("netproxy_requests_total 3"));

    let (s, body, _) = call(&fake, "GET", "/nope", t, "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["reason"], "not_found");
    let (s, body, h) = call(&fake, "POST", "/config", t, "").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(json(&body)["reason"], "method_not_allowed");
    assert!(h["allow"].to_str().unwrap().contains("GET"));
    // Without the token, a wrong method is still only 401.
    let (s, _, _) = call(&fake, "POST", "/config", None, "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn changes_and_their_errors() {
    let fake = Arc::new(Fake::default());
    let t = Some(TOKEN);
    let (s, body, _) = call(&fake, "POST", "/mode", t, r#"{"mode":"limited"}"#).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        json(&body),
        serde_json::json!({"status":"ok","mode":"limited"})
    );
    assert_eq!(*fake.mode.lock().unwrap(), Some(Mode::Limited));
    for bad in [
        "",
        "{",
        r#"{"mode":"sideways"}"#,
        r#"{"mode":1}"#,
        r#"{"mod":"full"}"#,
        "[]",
    ] {
        let (s, body, _) = call(&fake, "POST", "/mode", t, bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(json(&body)["status"], "error");
    }

    let (s, body, _) = call(
        &fake,
        "POST",
        "/domains",
        t,
        r#"{"allow":["api.example.com"],"deny":["evil.example"]}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["allow"][0], "api.example.com");
    assert_eq!(fake.changes.lock().unwrap().len(), 1);
    let (s, body, _) = call(
        &fake,
        "POST",
        "/domains",
        t,
        r#"{"allow":["forbidden.example"]}"#,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(json(&body)["reason"], "constraint");
    assert!(json(&body)["message"].as_str().unwrap().contains("managed"));
    let (s, _, _) = call(&fake, "POST", "/domains", t, r#"{"allow":["a?.example"]}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = call(&fake, "POST", "/domains", t, r#"{}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Over 64 KiB: 413, and nothing changed.
    let big = format!(r#"{{"allow":["{}"]}}"#, "a".repeat(70_000));
    let (s, body, _) = call(&fake, "POST", "/domains", t, &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(&body)["reason"], "too_large");
    assert_eq!(fake.changes.lock().unwrap().len(), 1);

    let (s, body, _) = call(&fake, "POST", "/reload", t, "").await;
    assert_eq!(
        (s, json(&body)["status"].as_str()),
        (StatusCode::OK, Some("reloaded"))
    );
    *fake.reload_fails.lock().unwrap() = true;
    let (s, body, _) = call(&fake, "POST", "/reload", t, "").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(json(&body)["reason"], "needs_restart");
}

#[tokio::test]
async fn check_takes_a_url_or_host_and_port() {
    let fake = Arc::new(Fake::default());
    let t = Some(TOKEN);
    let (s, body, _) = call(
        &fake,
        "POST",
        "/check",
        t,
        r#"{"url":"https://api.github.com/x"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&body)["target"], "https://api.github.com/x");
    let (s, body, _) = call(
        &fake,
        "POST",
        "/check",
        t,
        r#"{"host":"::1","port":8080,"method":"POST","protocol":"http"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v = json(&body);
    assert_eq!(
        (
            v["target"].as_str(),
            v["protocol"].as_str(),
            v["method"].as_str()
        ),
        (Some("[::1]:8080"), Some("http"), Some("POST"))
    );
    for bad in [
        r#"{}"#,
        r#"{"url":"x","host":"y"}"#,
        r#"{"host":"a","protocol":"gopher"}"#,
        // Names of no request on its own: inside a tunnel, and refused name lookups.
        r#"{"host":"a","protocol":"https"}"#,
        r#"{"host":"a","protocol":"dns"}"#,
        r#"{"host":"a","port":70000}"#,
        r#"{"url":"x","extra":1}"#,
    ] {
        let (s, _, _) = call(&fake, "POST", "/check", t, bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_a_real_socket() {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(proxy_admin::serve(
        listener,
        proxy_admin::router(fake.clone(), TOKEN),
        async move {
            let _ = rx.await;
        },
    ));
    let out = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| proxy_test_support::Curl::new().args(args).run();
        (
            run(&[&format!("http://{addr}/health")]),
            run(&[&format!("http://{addr}/patterns")]),
            run(&[
                "-H",
                &format!("Authorization: Bearer {TOKEN}"),
                "-d",
                r#"{"mode":"limited"}"#,
                &format!("http://{addr}/mode"),
            ]),
        )
    })
    .await
    .unwrap();
    assert!(
        out.0.status == 200 && out.0.body.contains("\"ok\""),
        "{:?}",
        out.0
    );
    assert_eq!(out.1.status, 401, "{:?}", out.1);
    assert_eq!(out.2.status, 200, "{:?}", out.2);
    assert_eq!(*fake.mode.lock().unwrap(), Some(Mode::Limited));
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_and_connections_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = proxy_admin::ServeLimits {
        max_connections: 2,
        header_timeout: std::time::Duration::from_millis(300),
    };
    tokio::spawn(proxy_admin::serve_with(
        listener,
        proxy_admin::router(fake, TOKEN),
        limits,
        std::future::pending(),
    ));
    // A client that never finishes its head is closed (bound: 3x the timeout, and more).
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(3), slow.read(&mut buf))
        .await
        .expect("the slow client was not closed");
    assert!(matches!(closed, Ok(0) | Err(_)) || buf.starts_with(b"HTTP/1.1 408"));

    // Two idle connections take both slots; a third is not served until one closes.
    let a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = vec![0u8; 512];
    let early = tokio::time::timeout(std::time::Duration::from_millis(150), c.read(&mut got)).await;
    assert!(early.is_err(), "served beyond the connection limit");
    drop((a, b));
    let n = tokio::time::timeout(std::time::Duration::from_secs(3), c.read(&mut got))
        .await
        .expect("not served after a slot freed")
        .unwrap();
    assert!(
        got[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got[..n])
    );
}

/// `GET /pending` lists the held targets; `POST /pending/ID` answers one: 200 with what it
/// did, 404 for an id that is not pending, 400 for a choice that is not one, 409 when saving
/// failed (the decision stays pending) or when nothing is held for approval at all.
#[tokio::test]
async fn pending_decisions_are_listed_and_answered() {
    let fake = Arc::new(Fake::default());
    let t = Some(TOKEN);
    let (s, body, h) = call(&fake, "GET", "/pending", t, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(
        json(&body),
        serde_json::json!({
            "pending": [{"id": 4, "host": "api.test", "port": 443, "protocol": "https_connect",
                "method": "CONNECT", "client": "127.0.0.1:5000", "since": 1_767_225_600u64,
                "expires": 1_767_225_660u64, "waiting": 2}],
            "session": ["other.test"]
        })
    );
    for choice in ["once", "session", "save", "deny"] {
        let (s, body, _) = call(
            &fake,
            "POST",
            "/pending/4",
            t,
            &format!(r#"{{"choice":"{choice}"}}"#),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let v = json(&body);
        assert_eq!(
            (v["status"].as_str(), v["choice"].as_str()),
            (Some("ok"), Some(choice))
        );
        assert_eq!(
            (v["id"].as_u64(), v["released"].as_u64()),
            (Some(4), Some(2))
        );
        assert_eq!(v["host"], "api.test");
        assert_eq!(v["saved"].is_string(), choice == "save", "{v}");
        assert_eq!(
            v["pattern"].is_string(),
            matches!(choice, "session" | "save"),
            "{v}"
        );
    }
    assert_eq!(
        *fake.answers.lock().unwrap(),
        [
            (4, Approval::Once),
            (4, Approval::Session),
            (4, Approval::Save),
            (4, Approval::Deny)
        ]
    );
    let refused = [
        (
            "/pending/9",
            r#"{"choice":"once"}"#,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/pending/x",
            r#"{"choice":"once"}"#,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/pending/-1",
            r#"{"choice":"once"}"#,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/pending/4",
            r#"{"choice":"always"}"#,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "/pending/4",
            r#"{"choice":"ONCE"}"#,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "/pending/4",
            r#"{"choice":"once","file":"/etc/passwd"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "/pending/4",
            r#"{}"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        ("/pending/4", "", StatusCode::BAD_REQUEST, "invalid_json"),
        (
            "/pending/5",
            r#"{"choice":"save"}"#,
            StatusCode::CONFLICT,
            "save_failed",
        ),
    ];
    for (path, body, status, reason) in refused {
        let (s, text, _) = call(&fake, "POST", path, t, body).await;
        assert_eq!(
            (s, json(&text)["reason"].as_str()),
            (status, Some(reason)),
            "{path} {body}: {text}"
        );
    }
    assert_eq!(fake.answers.lock().unwrap().len(), 4);
    let (s, _, h) = call(&fake, "GET", "/pending/4", t, "").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(h["allow"].to_str().unwrap().contains("POST"));

    // A proxy that holds nothing: both routes say so.
    let plain = Arc::new(Plain);
    for (method, path, body) in [
        ("GET", "/pending", ""),
        ("POST", "/pending/1", r#"{"choice":"once"}"#),
    ] {
        let app = proxy_admin::router(plain.clone(), TOKEN);
        let resp = app
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CONFLICT);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = json(&String::from_utf8_lossy(&bytes));
        assert_eq!(v["reason"], "not_available");
        assert!(v["message"].as_str().unwrap().contains("--ask"), "{v}");
    }
}
