//! `netproxy serve` as a real process: the in-process DNS server, loopback origins, real curl,
//! ready file, exit codes, upstream chaining, limited mode, TLS through CONNECT, the JSON log.

use std::time::Duration;

use proxy_test_support::{Answer, DnsServer, HttpOrigin};

use crate::support::{World, json, mode, planted_symlink, resolves, serve, tls_origin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_allowed_names_and_refuses_the_rest() {
    let w = World::new(&["api.test"]).await;
    resolves(&w.dns, "local.test", "127.0.0.1");
    w.dns.set("gone.test", Answer::NxDomain);
    w.dns.set("silent.test", Answer::Drop);
    let s = w
        .serve()
        .args(&["--allow", "*.test", "--deny", "evil.test"])
        .start();
    let r = s.get(&w.url("api.test", "hi"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("GET /hi 0"), "{}", r.text());
    for (host, want, reason) in [
        ("evil.test", 403, "denied"),
        ("other.example", 403, "not_allowed"),
        ("local.test", 403, "not_allowed_local"),
        ("gone.test", 502, "dns_failed"),
        // No answer at all: dns.timeout_ms is 500, so 502 well within 3x, not a hang.
        ("silent.test", 502, "dns_failed"),
    ] {
        let r = s.get(&w.url(host, ""));
        assert_eq!(r.status, want, "{host}: {}", r.text());
        assert!(
            r.text().contains(&format!("\"reason\":\"{reason}\"")),
            "{host}: {}",
            r.text()
        );
    }
    // CONNECT through curl -p to the same origin (plain HTTP inside the tunnel).
    let r = s.curl().arg("-p").get(w.url("api.test", "tunnelled"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.dns.queries_for("evil.test"), 0);
    assert_eq!(w.origin.seen().len(), 2);
}

#[test]
fn a_bad_config_exits_3_and_a_busy_port_exits_1() {
    serve()
        .args(&["-c", "mdoe=1"])
        .start_fails()
        .assert_err(3, &[]);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    serve()
        .args(&["--http", &busy.local_addr().unwrap().to_string()])
        .start_fails()
        .assert_err(1, &["cannot bind"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_through_the_upstream_proxy_after_judging_and_refuses_a_loop() {
    let dns = DnsServer::start().await.unwrap();
    let origin = HttpOrigin::start("behind-upstream", "127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    let port = origin.addr().port();
    resolves(&dns, "api.test", "127.0.0.2");
    // An upstream proxy: proxy-http with a gate that sends every request to the origin,
    // recording what it was asked.
    let gate = std::sync::Arc::new(proxy_test_support::StubGate::new());
    gate.answer_others(proxy_core::Admission::Allow(proxy_core::Route::direct(
        vec![origin.addr()],
        proxy_core::Decision::allow(),
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(proxy_http::run(
        listener,
        gate.clone(),
        std::sync::Arc::new(proxy_gate::TcpDialer::new(Duration::from_secs(2))),
        std::sync::Arc::new(proxy_core::NoInterception),
        proxy_http::Limits::default(),
        std::future::pending(),
    ));
    let s = serve()
        .dns(&dns)
        .public()
        .args(&["--allow", "*.test", "--deny", "evil.test"])
        .env("HTTP_PROXY", &upstream)
        .env("HTTPS_PROXY", &upstream)
        .env("NO_PROXY", "bypass.test")
        .start();
    let r = s.get(&format!("http://api.test:{port}/plain"));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s
        .curl()
        .arg("-p")
        .get(format!("http://api.test:{port}/tunnel"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.get(&format!("http://evil.test:{port}/")).status, 403);
    let seen = gate.seen();
    assert_eq!(
        seen.len(),
        2,
        "the upstream saw {seen:?}; netproxy said:\n{}",
        s.process.stderr()
    );
    assert_eq!(seen[0].protocol, proxy_core::Protocol::Http);
    assert_eq!(seen[0].target.to_string(), format!("api.test:{port}"));
    assert_eq!(seen[1].protocol, proxy_core::Protocol::HttpsConnect);
    assert_eq!(origin.seen().len(), 2);
    drop(s);

    // An upstream proxy that is netproxy itself is refused.
    let port_self = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let own = format!("127.0.0.1:{port_self}");
    let s = serve()
        .dns(&dns)
        .public()
        .args(&["--http", &own, "--allow", "*.test"])
        .env("HTTP_PROXY", &format!("http://{own}"))
        .start();
    let r = s.get(&format!("http://api.test:{port}/"));
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("loop refused"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_and_a_disabled_proxy_on_the_wire() {
    let w = World::new(&["api.test"]).await;
    let s = w
        .serve()
        .args(&["--allow", "*.test", "--mode", "limited"])
        .start();
    assert_eq!(s.get(&w.url("api.test", "read")).status, 200);
    let r = s
        .curl()
        .args(["-X", "POST", "-d", "x"])
        .get(w.url("api.test", "write"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("\"reason\":\"method_not_allowed\"")
            && r.text().contains("\"source\":\"mode_guard\""),
        "{}",
        r.text()
    );
    let r = s.curl().args(["-p", "-v"]).get(w.url("api.test", ""));
    assert!(
        r.text().contains("x-proxy-error: blocked-by-mitm-required"),
        "{}",
        r.text()
    );
    // Only the GET reached the origin.
    assert_eq!(w.origin.seen().len(), 1);
    drop(s);
    let before = w.dns.queries_for("api.test");

    let s = serve()
        .dns(&w.dns)
        .args(&["-c", "enabled=false", "--allow", "*.test"])
        .start();
    let r = s.get(&w.url("api.test", ""));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("\"reason\":\"proxy_disabled\""),
        "{}",
        r.text()
    );
    assert_eq!(
        w.dns.queries_for("api.test"),
        before,
        "a disabled proxy resolves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_a_connect_tunnel_with_real_tls() {
    let dns = DnsServer::start().await.unwrap();
    let s = serve()
        .dns(&dns)
        .public()
        .args(&["--allow", "secure.test"])
        .start();
    let ca_file = s.path().join("ca.pem");
    let origin = tls_origin(&dns, &["secure.test"], &ca_file).await;
    let port = origin.addr().port();
    let r = s
        .curl()
        .arg("--cacert")
        .arg(&ca_file)
        .get(format!("https://secure.test:{port}/over-tls"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("GET /over-tls 0"), "{}", r.text());
    assert_eq!(origin.seen().len(), 1);
    // A name the policy refuses never gets a tunnel.
    let r = s
        .curl()
        .arg("--cacert")
        .arg(&ca_file)
        .get("https://other.test:1/");
    assert_ne!(r.status, 200);
}

/// `verify_sni`: an opaque tunnel whose ClientHello names another host than its `CONNECT` is
/// closed before a byte reaches the origin, over HTTP `CONNECT` and SOCKS5 alike, and recorded
/// as `sni_mismatch`; the matching name goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_sni_refuses_a_tunnel_whose_server_name_is_another_host() {
    let dns = DnsServer::start().await.unwrap();
    let s = serve()
        .dns(&dns)
        .public()
        .socks()
        .args(&["--allow", "secure.test", "-c", "verify_sni=true"])
        .start();
    let ca_file = s.path().join("ca.pem");
    let origin = tls_origin(&dns, &["secure.test", "other.test"], &ca_file).await;
    let port = origin.addr().port();
    let socks = format!("socks5h://{}", s.socks.as_deref().unwrap());
    for proxy in [format!("http://{}", s.http), socks] {
        let r = proxy_test_support::Curl::via(proxy.clone())
            .arg("--cacert")
            .arg(&ca_file)
            .get(format!("https://secure.test:{port}/named"));
        assert_eq!(r.status, 200, "{proxy}: {}", r.text());
        // The tunnel goes to secure.test (allowed), the ClientHello names other.test.
        let before = origin.seen().len();
        let r = proxy_test_support::Curl::via(proxy.clone())
            .arg("--cacert")
            .arg(&ca_file)
            .arg("--connect-to")
            .arg(format!("other.test:{port}:secure.test:{port}"))
            .get(format!("https://other.test:{port}/fronted"));
        assert_eq!(r.status, 0, "{proxy}: {}", r.text());
        assert_eq!(origin.seen().len(), before, "{proxy}");
    }
    // A ClientHello sent in the same write as the CONNECT head (read by the HTTP parser before
    // the tunnel starts) is judged too: nothing reaches the origin.
    let hello = {
        use tokio::io::AsyncReadExt;
        let (client, mut wire) = tokio::io::duplex(64 * 1024);
        let name = rustls::pki_types::ServerName::try_from("other.test").unwrap();
        let connector = proxy_test_support::tls_client_pem(&std::fs::read(&ca_file).unwrap());
        let handshake = tokio::spawn(async move { connector.connect(name, client).await });
        let mut buf = vec![0u8; 64 * 1024];
        let n = wire.read(&mut buf).await.unwrap();
        handshake.abort();
        buf.truncate(n);
        buf
    };
    let before = origin.seen().len();
    let mut tcp = tokio::net::TcpStream::connect(&s.http).await.unwrap();
    let mut bytes =
        format!("CONNECT secure.test:{port} HTTP/1.1\r\nHost: secure.test:{port}\r\n\r\n")
            .into_bytes();
    bytes.extend(&hello);
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &bytes)
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut answer),
    )
    .await;
    assert!(read.is_ok(), "the refused tunnel was not closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.contains("\x16"),
        "no TLS answer came back: {answer}"
    );
    assert_eq!(origin.seen().len(), before);
    let stderr = s.stop();
    let refusals = stderr
        .lines()
        .filter(|l| l.contains("sni_mismatch") && l.contains("secure.test"))
        .count();
    assert_eq!(refusals, 3, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_reach_the_json_log_at_info_and_not_at_warn() {
    let w = World::new(&["api.test"]).await;
    for (level, logged) in [("info", true), ("warn", false)] {
        let s = w
            .serve()
            .args(&["--log-format", "json", "--allow", "api.test"])
            .env("RUST_LOG", level)
            .start();
        let codes = [
            s.get(&w.url("api.test", "hi?token=secret")).status,
            s.get(&w.url("evil.test", "")).status,
        ];
        assert_eq!(codes, [200, 403]);
        let stderr = s.stop();
        let decisions: Vec<serde_json::Value> = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.to_string().contains("network.policy.decision"))
            .collect();
        if !logged {
            assert!(decisions.is_empty(), "{stderr}");
            continue;
        }
        let text: Vec<String> = decisions.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{stderr}");
        for (i, part) in [
            (0, r#""network.policy.decision":"allow""#),
            (0, r#""server.address":"api.test""#),
            (0, r#""client.address":"127.0.0.1:"#),
            (1, r#""network.policy.decision":"deny""#),
            (1, r#""network.policy.reason":"not_allowed""#),
        ] {
            assert!(text[i].contains(part), "{}", text[i]);
        }
        assert!(!stderr.contains("secret"), "no query string in the log");
    }
}

/// The ready file: a symlink planted at its path is replaced, never followed, and no temporary
/// file is left beside it.
#[test]
fn the_ready_file_replaces_a_planted_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let (victim, ready) = planted_symlink(dir.path(), "ready.json");
    // Ready once the file there is a regular file (the pid in it is checked too).
    let s = serve().ready_file(&ready).start();
    assert_eq!(
        json(&std::fs::read_to_string(&ready).unwrap())["pid"],
        s.process.id()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ready.json", "victim"]);
    assert_eq!(mode(&ready), 0o644);
    s.stop();
}
