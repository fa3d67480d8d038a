//! HTTPS interception (`--mitm`) through the real binary: limited mode judged inside TLS,
//! over HTTP `CONNECT` and SOCKS5, with real curl trusting netproxy's CA and a loopback TLS
//! origin whose certificate comes from a test CA netproxy trusts (its own `SSL_CERT_FILE`).

use std::path::PathBuf;

use proxy_test_support::{Curl, CurlOutput, DnsServer, TestCa, TlsOrigin};

use crate::support::{Serve, reply, resolves, serve, udp_associate, udp_echo};

/// The origins, their CAs and a limited-mode `serve --mitm` that trusts `good` only.
struct Setup {
    _dns: DnsServer,
    good: TlsOrigin,
    /// The same origin's answers on port 443 (SOCKS5 is intercepted on that port only).
    good443: Option<TlsOrigin>,
    bad: TlsOrigin,
    s: Serve,
    ca: PathBuf,
}

/// With `socks443`, also the origin on 127.0.0.44:443 (one test at a time may bind it);
/// `extra`: more `serve` arguments.
async fn setup(socks443: bool, extra: &[&str]) -> Setup {
    let dns = DnsServer::start().await.unwrap();
    let trusted = TestCa::new().unwrap();
    let untrusted = TestCa::new().unwrap();
    let ip = "127.0.0.2".parse().unwrap();
    let good = TlsOrigin::start("good", ip, &trusted, &["secure.test"])
        .await
        .unwrap();
    let bad = TlsOrigin::start("bad", ip, &untrusted, &["untrusted.test"])
        .await
        .unwrap();
    let good443 = if socks443 {
        Some(
            TlsOrigin::start_at(
                "good443",
                "127.0.0.44:443".parse().unwrap(),
                &trusted,
                &["socks.test"],
            )
            .await
            .unwrap(),
        )
    } else {
        None
    };
    resolves(&dns, "secure.test", "127.0.0.2");
    resolves(&dns, "untrusted.test", "127.0.0.2");
    resolves(&dns, "socks.test", "127.0.0.44");
    let b = serve()
        .dns(&dns)
        .args(&[
            "-c",
            "treat_as_public=[\"127.0.0.2/32\", \"127.0.0.44/32\"]",
        ])
        .socks();
    let roots = b.path().join("upstream-roots.pem");
    std::fs::write(&roots, trusted.cert_pem()).unwrap();
    let s = b
        .env("SSL_CERT_FILE", &roots.display().to_string())
        .args(&[
            "--mode",
            "limited",
            "--mitm",
            "--allow",
            "secure.test",
            "--allow",
            "untrusted.test",
            "--allow",
            "socks.test",
        ])
        .args(extra)
        .start();
    let ca = s.path().join("home").join("ca").join("ca.pem");
    assert!(ca.exists(), "the CA is created on first use");
    Setup {
        _dns: dns,
        good,
        good443,
        bad,
        s,
        ca,
    }
}

impl Setup {
    fn http(&self) -> Curl {
        Curl::via(format!("http://{}", self.s.http))
            .arg("--cacert")
            .arg(&self.ca)
    }

    fn socks(&self) -> Curl {
        Curl::via(format!("socks5h://{}", self.s.socks.as_deref().unwrap()))
            .arg("--cacert")
            .arg(&self.ca)
    }

    fn url(&self, path: &str) -> String {
        format!("https://secure.test:{}/{path}", self.good.addr().port())
    }
}

fn json_of(r: &CurlOutput) -> serde_json::Value {
    serde_json::from_str(r.body.trim()).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_is_judged_inside_tls() {
    let t = setup(true, &[]).await;
    // GET goes through, over HTTP/1.1 and HTTP/2 inside the tunnel.
    let r = t.http().arg("--http1.1").get(t.url("read"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("GET /read 0"), "{}", r.text());
    let r = t.http().arg("--http2").arg("-v").get(t.url("read2"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.stderr.contains("ALPN: server accepted h2"),
        "{}",
        r.stderr
    );
    assert!(r.text().contains("GET /read2 0"), "{}", r.text());
    assert_eq!(t.good.seen().len(), 2);

    // POST is refused inside TLS, with the proxy's JSON; the origin never sees it.
    let r = t
        .http()
        .args(["-X", "POST", "-d", "x=1", "-i"])
        .get(t.url("write"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.body.contains("Blocked by netproxy (method_not_allowed)")
            || r.body.contains("HTTP/2 403"),
        "{}",
        r.body
    );
    assert!(
        r.body.to_ascii_lowercase().contains("x-proxy-error"),
        "{}",
        r.body
    );
    let body = r.body.rsplit("\r\n\r\n").next().unwrap();
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["status"], "blocked");
    assert_eq!(v["reason"], "method_not_allowed");
    assert_eq!(v["protocol"], "https");
    assert_eq!(v["host"], "secure.test");
    assert_eq!(t.good.seen().len(), 2, "the origin never saw the POST");
    // A GET that asks the origin to apply DELETE instead is refused the same way.
    let r = t
        .http()
        .header("X-HTTP-Method-Override: DELETE")
        .get(t.url("override"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(json_of(&r)["reason"], "method_not_allowed");
    assert_eq!(t.good.seen().len(), 2, "the origin never saw it");

    // A Host that is not the tunnel's target: 400, never forwarded.
    let r = t
        .http()
        .arg("--http1.1")
        .header("Host: other.test")
        .get(t.url("fronted"));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        json_of(&r)["message"]
            .as_str()
            .unwrap()
            .contains("host mismatch")
    );
    assert_eq!(
        t.good.seen().len(),
        2,
        "the origin never saw the fronted request"
    );

    // An upstream whose certificate netproxy does not trust: 502, never a downgrade.
    let url = format!("https://untrusted.test:{}/x", t.bad.addr().port());
    let r = t.http().get(&url);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(json_of(&r)["reason"], "upstream_tls_failed");
    // Said in words, not as the TLS library's variant name (the test's untrusted origin names
    // an issuer it was not signed by).
    assert_eq!(
        json_of(&r)["message"],
        "netproxy: the certificate of untrusted.test is not signed by the authority it names (bad signature)"
    );
    assert!(t.bad.seen().is_empty());

    // SOCKS5 CONNECT to port 443 in limited mode is intercepted the same way.
    let r = t.socks().get("https://socks.test/by-socks");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("GET /by-socks 0"), "{}", r.text());
    let r = t
        .socks()
        .args(["-X", "POST", "-d", "x=1"])
        .get("https://socks.test/w");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(json_of(&r)["reason"], "method_not_allowed");
    assert_eq!(t.good443.as_ref().unwrap().seen().len(), 1);
    assert_eq!(t.good.seen().len(), 2);

    // A client that speaks something else than TLS on an intercepted tunnel is closed:
    // nothing is passed through to the origin.
    let r = t
        .http()
        .arg("--proxytunnel")
        .get(format!("http://secure.test:{}/plain", t.good.addr().port()));
    assert_ne!(r.status, 200, "{}", r.text());
    assert_eq!(t.good.seen().len(), 2);

    // Each inner request is recorded with protocol https.
    let stderr = t.s.stop();
    let inner = stderr
        .lines()
        .filter(|l| {
            l.contains("network.policy.decision")
                && l.contains("https")
                && !l.contains("https_connect")
        })
        .count();
    assert!(inner >= 5, "{stderr}");
    // The fronted request is among them, refused as naming another host.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("other.test") && l.contains("not_allowed")),
        "{stderr}"
    );
}

/// Without `--mitm`, limited mode still refuses `CONNECT` (`mitm_required`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mitm_limited_mode_refuses_connect() {
    let dns = DnsServer::start().await.unwrap();
    resolves(&dns, "secure.test", "127.0.0.2");
    let s = serve()
        .dns(&dns)
        .public()
        .args(&["--mode", "limited", "--allow", "secure.test"])
        .start();
    let r = Curl::via(format!("http://{}", s.http))
        .arg("-k")
        .get("https://secure.test:1/");
    assert!(r.stderr.contains("403"), "{}", r.text());
    assert!(
        !s.path().join("home").join("ca").exists(),
        "no CA without mitm"
    );
}

/// A TLS session through [`setup`]'s `serve --mitm` (with `limits`, `-c` values) to the good
/// origin, trusting netproxy's CA: the setup (which keeps the proxy running) and the stream.
async fn session(
    limits: &[&str],
) -> (
    Setup,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let extra: Vec<&str> = limits.iter().flat_map(|l| ["-c", l]).collect();
    let t = setup(false, &extra).await;
    let port = t.good.addr().port();
    let mut tcp = tokio::net::TcpStream::connect(&t.s.http).await.unwrap();
    tcp.write_all(
        format!("CONNECT secure.test:{port} HTTP/1.1\r\nHost: secure.test:{port}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 64];
    let n = tcp.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    let name = rustls::pki_types::ServerName::try_from("secure.test").unwrap();
    let tls = proxy_test_support::tls_client_pem(&std::fs::read(&t.ca).unwrap())
        .connect(name, tcp)
        .await
        .expect("the leaf of netproxy's CA is trusted");
    (t, tls)
}

/// Whether the session ends (EOF or an error) within `secs`.
async fn ends_within(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    secs: u64,
) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    let ended =
        tokio::time::timeout(std::time::Duration::from_secs(secs), tls.read(&mut buf)).await;
    matches!(ended, Ok(Ok(0) | Err(_)))
}

/// An intercepted session with no byte either way for `idle_timeout_s` is closed, like an
/// opaque tunnel (asserted within three times the timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_intercepted_session_is_closed() {
    let (_t, mut tls) = session(&["limits.idle_timeout_s=1"]).await;
    assert!(
        ends_within(&mut tls, 3).await,
        "the idle session was not closed"
    );
}

/// Inside an intercepted session a request head must be whole within `header_timeout_ms`, as
/// on the proxy itself (asserted within three times the timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_head_inside_tls_is_closed() {
    use tokio::io::AsyncWriteExt;
    let (_t, mut tls) = session(&["limits.header_timeout_ms=1000"]).await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: secure.test\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    assert!(
        ends_within(&mut tls, 3).await,
        "the slow request head was not cut off"
    );
}

/// When the origin closes its connection (here after each response), the intercepted session
/// ends with it, so the client's next request opens a new tunnel and succeeds instead of
/// failing on a dead upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_closes_ends_the_session_and_the_next_request_succeeds() {
    let t = setup(false, &[]).await;
    let r = t
        .http()
        .arg("--http1.1")
        .arg(t.url("close-1"))
        .get(t.url("close-2"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("GET /close-1 0"), "{}", r.text());
    assert!(r.text().contains("GET /close-2 0"), "{}", r.text());
    assert_eq!(t.good.seen().len(), 2);
}

/// The hooks of the end-to-end tests: `secure.test` admits GET and POST under `/repos/` and
/// `pattern:/api/*/items`, with its Authorization replaced from `HOOK_SECRET` and `X-Debug`
/// stripped.
const HOOKS: &str = r#"
[network.mitm]
enabled = true

[network.mitm.hooks.repos]
host = "secure.test"
methods = ["GET", "POST"]
path_prefixes = ["/repos/", "pattern:/api/*/items"]
action = ["auth"]

[network.mitm.hooks.socks-read]
host = "hooked-socks.test"
methods = ["GET"]
path_prefixes = ["/read"]

[network.mitm.actions.auth]
strip_request_headers = ["x-debug"]
inject_request_headers = [{ name = "authorization", secret_env_var = "HOOK_SECRET", prefix = "Bearer " }]
"#;

/// In full mode a hooked host is intercepted: a request a hook matches goes through with the
/// hook's actions applied (even a POST), anything else to that host is refused, inside TLS
/// (`mitm_hook_denied`) or before any connection (plain HTTP, SOCKS5 UDP: `mitm_required`),
/// and the secret never shows in a log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_in_full_mode_admit_what_they_match_and_apply_their_actions() {
    let dns = DnsServer::start().await.unwrap();
    let trusted = TestCa::new().unwrap();
    let ip = "127.0.0.2".parse().unwrap();
    let good = TlsOrigin::start("good", ip, &trusted, &["secure.test"])
        .await
        .unwrap();
    // SOCKS5 reaches a hooked host on port 443 only (one test at a time may bind this one).
    let socks443 = TlsOrigin::start_at(
        "hooked443",
        "127.0.0.45:443".parse().unwrap(),
        &trusted,
        &["hooked-socks.test"],
    )
    .await
    .unwrap();
    resolves(&dns, "secure.test", "127.0.0.2");
    resolves(&dns, "udp.test", "127.0.0.2");
    resolves(&dns, "hooked-socks.test", "127.0.0.45");
    let b = serve()
        .dns(&dns)
        .args(&[
            "-c",
            "treat_as_public=[\"127.0.0.2/32\", \"127.0.0.45/32\"]",
        ])
        .socks()
        .admin()
        .config(HOOKS);
    let roots = b.path().join("upstream-roots.pem");
    std::fs::write(&roots, trusted.cert_pem()).unwrap();
    let s = b
        .env("SSL_CERT_FILE", &roots.display().to_string())
        .env("HOOK_SECRET", "real-hook-secret-value")
        .args(&[
            "--allow",
            "secure.test",
            "--allow",
            "udp.test",
            "--allow",
            "hooked-socks.test",
        ])
        .start();
    let ca = s.path().join("home").join("ca").join("ca.pem");
    let curl = || {
        Curl::via(format!("http://{}", s.http))
            .arg("--cacert")
            .arg(&ca)
    };
    let url = |path: &str| format!("https://secure.test:{}{path}", good.addr().port());

    // A matching GET: the client's Authorization is replaced, X-Debug stripped.
    let r = curl()
        .header("Authorization: Bearer dummy")
        .header("X-Debug: 1")
        .header("X-Keep: 1")
        .get(url("/repos/a/b"));
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = good.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer real-hook-secret-value")
    );
    assert_eq!(seen[0].header("x-debug"), None);
    assert_eq!(seen[0].header("x-keep"), Some("1"));
    // A client's `Connection` header naming the injected one cannot remove it.
    let r = curl()
        .arg("--http1.1")
        .header("Connection: authorization")
        .get(url("/repos/c"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        good.seen()[1].header("authorization"),
        Some("Bearer real-hook-secret-value")
    );
    // A matching POST goes through in full mode, over HTTP/2 too; a glob path matches.
    let r = curl()
        .arg("--http2")
        .args(["-X", "POST", "-d", "x=1"])
        .get(url("/api/v1/items"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(good.seen().len(), 3);
    assert_eq!(
        good.seen()[2].header("authorization"),
        Some("Bearer real-hook-secret-value")
    );

    // No hook matches: refused inside TLS, never forwarded; encoded traversal included.
    for path in [
        "/user",
        "/api/v1/x/items",
        "/repos/%2e%2e/admin",
        "/repos/a/%2E%2E/%2E%2E/admin",
        "/repos/a/..;/..;/admin",
    ] {
        let r = curl().arg("--path-as-is").get(url(path));
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert_eq!(json_of(&r)["reason"], "mitm_hook_denied", "{path}");
    }
    let r = curl().args(["-X", "DELETE"]).get(url("/repos/a/b"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(json_of(&r)["reason"], "mitm_hook_denied");
    assert_eq!(
        good.seen().len(),
        3,
        "no refused request reached the origin"
    );

    // SOCKS5 to a hooked host's port 443 is intercepted the same way, in full mode.
    let socks = || {
        Curl::via(format!("socks5h://{}", s.socks.as_deref().unwrap()))
            .arg("--cacert")
            .arg(&ca)
    };
    let r = socks().get("https://hooked-socks.test/read/1");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = socks().get("https://hooked-socks.test/write");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(json_of(&r)["reason"], "mitm_hook_denied");
    assert_eq!(socks443.seen().len(), 1);
    // Another port of it cannot be intercepted: refused before any connection.
    let r = socks().get("http://hooked-socks.test:80/read/2");
    assert_ne!(r.status, 200, "{}", r.text());
    assert_eq!(socks443.seen().len(), 1);

    // Plain HTTP to a hooked host is refused before any connection.
    let r = curl().get(format!("http://secure.test:{}/repos/a", good.addr().port()));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(json_of(&r)["reason"], "mitm_required");

    // SOCKS5 UDP to a hooked host (HTTP/3 would bypass the hooks) is refused; to another
    // allowed host on the same address it goes through.
    let (echo, echoed) = udp_echo("127.0.0.2:0").await;
    let (_control, relay) =
        udp_associate(s.socks.as_deref().unwrap(), "0.0.0.0:0".parse().unwrap()).await;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let send = |name: &str, payload: &[u8]| {
        let mut d = vec![0, 0, 0, 3, u8::try_from(name.len()).unwrap()];
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&echo.port().to_be_bytes());
        d.extend_from_slice(payload);
        d
    };
    client
        .send_to(&send("secure.test", b"quic"), relay)
        .await
        .unwrap();
    client
        .send_to(&send("udp.test", b"other"), relay)
        .await
        .unwrap();
    let answer = reply(&client).await;
    assert!(answer.ends_with(b"other"), "{answer:?}");
    assert_eq!(echoed.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Limited mode (set at runtime) still refuses a matching POST: hooks never lift it.
    let api = s.api(Some(&s.token()));
    let (code, body) = api.post("/mode", r#"{"mode":"limited"}"#);
    assert_eq!(code, 200, "{body}");
    let r = curl()
        .args(["-X", "POST", "-d", "x=1"])
        .get(url("/repos/a/b"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(json_of(&r)["reason"], "method_not_allowed");
    let r = curl().get(url("/repos/a/c"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(good.seen().len(), 4);

    let stderr = s.stop();
    assert!(!stderr.contains("real-hook-secret-value"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("mitm_hook_denied") && l.contains("secure.test")),
        "{stderr}"
    );
}

/// A hook whose secret variable is unset stops the start with a config error naming the
/// action and the variable (exit 3); `config show` lists hooks and actions without values.
#[test]
fn a_hook_secret_that_cannot_be_read_stops_the_start() {
    let ran = serve().config(HOOKS).start_fails();
    ran.assert_err(
        3,
        &[
            "network.mitm.actions.auth",
            "missing required environment variable HOOK_SECRET",
        ],
    );
}

/// A websocket handshake inside TLS is refused in limited mode (any `Upgrade` is), with the
/// proxy's JSON inside TLS, and the origin never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_refuses_a_websocket_inside_tls() {
    let t = setup(false, &[]).await;
    let r = t
        .http()
        .arg("--http1.1")
        .header("Connection: Upgrade")
        .header("Upgrade: websocket")
        .header("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Version: 13")
        .get(t.url("socket"));
    assert_eq!(r.status, 403, "{}", r.text());
    let v = json_of(&r);
    assert_eq!(v["reason"], "method_not_allowed");
    assert_eq!(v["protocol"], "https");
    assert_eq!(v["host"], "secure.test");
    assert!(
        t.good.seen().is_empty(),
        "the origin never saw the handshake"
    );
}

/// `netproxy check` says a hooked host is reached only through interception, and refuses its
/// plain HTTP as `serve` does.
#[test]
fn check_explains_a_hooked_host() {
    let home = crate::support::Home::new();
    let cfg = home.path().join("hooks.toml");
    std::fs::write(&cfg, HOOKS).unwrap();
    let cfg = cfg.to_str().unwrap();
    let r = home.run(&[
        "check",
        "--no-resolve",
        "--config",
        cfg,
        "--allow",
        "secure.test",
        "https://secure.test/repos/a",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("secure.test has MITM hooks"),
        "{}",
        r.stdout
    );
    let r = home.run(&[
        "check",
        "--no-resolve",
        "--json",
        "--config",
        cfg,
        "--allow",
        "secure.test",
        "http://secure.test/repos/a",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["reason"], "mitm_required");
    assert_eq!(v["hooked"], true);
}

/// A hook on an address also holds for the names that resolve to it: a `CONNECT` to such a name
/// without hooks of its own is refused (`mitm_hook_denied`) before any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_a_hooked_address_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dns = DnsServer::start().await.unwrap();
    resolves(&dns, "alias.test", "127.0.0.47");
    let config = "[network.mitm]\nenabled = true\n\
                  [network.mitm.hooks.read]\nhost = \"127.0.0.47\"\nmethods = [\"GET\"]\n\
                  path_prefixes = [\"/read\"]\n";
    let s = serve()
        .dns(&dns)
        .args(&[
            "-c",
            "treat_as_public=[\"127.0.0.47/32\"]",
            "--allow",
            "alias.test",
            "--allow",
            "127.0.0.47",
        ])
        .config(config)
        .start();
    let mut c = tokio::net::TcpStream::connect(&s.http).await.unwrap();
    c.write_all(
        b"CONNECT alias.test:443 HTTP/1.1\r\nHost: alias.test:443\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        c.read_to_end(&mut answer),
    )
    .await
    .expect("an answer")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("mitm_hook_denied"), "{answer}");
    drop(s);
}
