//! `netproxy serve` as a real process: the in-process DNS server, loopback origins, real curl,
//! ready file, SIGHUP reload, SIGTERM.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxy_test_support::{Answer, DnsServer, HttpOrigin};

struct Serve {
    child: Child,
    http: String,
    socks: Option<String>,
    /// The admin API's address, when `--admin` was asked for.
    admin: Option<String>,
    dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dns: &DnsServer, extra: &[&str], config: Option<&str>) -> Serve {
    start_with_env(dns, extra, config, &[])
}

fn start_with_env(
    dns: &DnsServer,
    extra: &[&str],
    config: Option<&str>,
    env: &[(&str, String)],
) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let cfg = dir.path().join("netproxy.toml");
    std::fs::write(&cfg, config.unwrap_or("")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netproxy"));
    cmd.arg("serve")
        .args(if extra.contains(&"--admin") {
            &[][..]
        } else {
            &["--no-admin"][..]
        })
        .arg("--ready-file")
        .arg(&ready)
        .arg("--config")
        .arg(&cfg)
        .args([
            "-c",
            &format!("dns.nameservers=[\"{}\"]", dns.addr()),
            "-c",
            "dns.timeout_ms=500",
        ])
        .args(extra)
        .args(if extra.contains(&"--http") {
            &[][..]
        } else {
            &["--http", "127.0.0.1:0"][..]
        })
        .args(if extra.contains(&"--socks") {
            &[][..]
        } else {
            &["--no-socks"][..]
        })
        .env_clear()
        .env("NETPROXY_HOME", dir.path().join("home"))
        .env("NETPROXY_SYSTEM_DIR", dir.path().join("system"))
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "netproxy did not become ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    assert_eq!(v["admin"].is_null(), !extra.contains(&"--admin"));
    assert_eq!(v["socks"].is_null(), !extra.contains(&"--socks"));
    assert_eq!(v["pid"], child.id());
    Serve {
        child,
        http: v["http"].as_str().unwrap().to_owned(),
        socks: v["socks"].as_str().map(str::to_owned),
        admin: v["admin"].as_str().map(str::to_owned),
        dir,
    }
}

/// The in-process DNS server, and an HTTP origin on 127.0.0.2 (answering `public`) that each of
/// `names` resolves to: a "public" host once 127.0.0.2 is `treat_as_public`.
async fn public_origin(names: &[&str]) -> (DnsServer, HttpOrigin, u16) {
    let dns = DnsServer::start().await.unwrap();
    let origin = HttpOrigin::start("public", "127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    for name in names {
        dns.set(name, Answer::Addrs(vec!["127.0.0.2".parse().unwrap()]));
    }
    let port = origin.addr().port();
    (dns, origin, port)
}

fn curl(proxy: &str, args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "10",
            "-x",
            &format!("http://{proxy}"),
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        code.to_owned(),
        body.to_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(start.elapsed() < within, "netproxy did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn config_path(s: &Serve) -> PathBuf {
    s.dir.path().join("netproxy.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_allowed_names_and_refuses_the_rest() {
    let (dns, origin, port) = public_origin(&["api.test"]).await;
    dns.set(
        "local.test",
        Answer::Addrs(vec!["127.0.0.1".parse().unwrap()]),
    );
    dns.set("gone.test", Answer::NxDomain);
    dns.set("silent.test", Answer::Drop);
    let s = start(
        &dns,
        &[
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--allow",
            "*.test",
            "--deny",
            "evil.test",
        ],
        None,
    );
    let http = s.http.clone();
    let (code, body) =
        tokio::task::spawn_blocking(move || curl(&http, &[&format!("http://api.test:{port}/hi")]))
            .await
            .unwrap();
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("GET /hi 0"), "{body}");
    for (host, want, reason) in [
        ("evil.test", "403", "denied"),
        ("other.example", "403", "not_allowed"),
        ("local.test", "403", "not_allowed_local"),
        ("gone.test", "502", "dns_failed"),
        // No answer at all: dns.timeout_ms is 500, so 502 well within 3x, not a hang.
        ("silent.test", "502", "dns_failed"),
    ] {
        let http = s.http.clone();
        let url = format!("http://{host}:{port}/");
        let (code, body) = tokio::task::spawn_blocking(move || curl(&http, &[&url]))
            .await
            .unwrap();
        assert_eq!(code, want, "{host}: {body}");
        assert!(
            body.contains(&format!("\"reason\":\"{reason}\"")),
            "{host}: {body}"
        );
    }
    // CONNECT through curl -p to the same origin (plain HTTP inside the tunnel).
    let http = s.http.clone();
    let (code, body) = tokio::task::spawn_blocking(move || {
        curl(&http, &["-p", &format!("http://api.test:{port}/tunnelled")])
    })
    .await
    .unwrap();
    assert_eq!(code, "200", "{body}");
    assert_eq!(dns.queries_for("evil.test"), 0);
    assert_eq!(origin.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_good_files_and_keeps_the_last_good_policy() {
    let (dns, _origin, port) = public_origin(&["a.test", "b.test"]).await;
    let req = std::env::temp_dir().join(format!("netproxy-req-{}.toml", std::process::id()));
    write(&req, "[network]\nmode = \"limited\"\n");
    let mut s = start(
        &dns,
        &[
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--requirements",
            req.to_str().unwrap(),
        ],
        Some("[network.domains]\n\"a.test\" = \"allow\"\n"),
    );
    let get = |host: &str, s: &Serve| {
        let (http, url) = (s.http.clone(), format!("http://{host}:{port}/"));
        std::thread::spawn(move || curl(&http, &[&url]).0)
            .join()
            .unwrap()
    };
    assert_eq!(get("a.test", &s), "200");
    assert_eq!(get("b.test", &s), "403");

    let reload_and_wait = |s: &Serve, host: &str, want: &str| {
        signal(&s.child, "-HUP");
        let start = Instant::now();
        while get(host, s) != want {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{host} never became {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // A good file: b.test becomes allowed.
    write(
        &config_path(&s),
        "[network.domains]\n\"b.test\" = \"allow\"\n",
    );
    reload_and_wait(&s, "b.test", "200");
    assert_eq!(get("a.test", &s), "403");
    // A bad file: the last good policy stays.
    write(
        &config_path(&s),
        "[network.domains]\n\"a.test\" = \"maybe\"\n",
    );
    signal(&s.child, "-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get("b.test", &s), "200");
    // A file that violates the managed constraints: refused too.
    write(
        &config_path(&s),
        "[network]\nmode = \"full\"\n[network.domains]\n\"a.test\" = \"allow\"\n",
    );
    signal(&s.child, "-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get("b.test", &s), "200");
    // A key that needs a restart: refused as a whole.
    write(
        &config_path(&s),
        "[network]\nproxy_url = \"127.0.0.1:1\"\n[network.domains]\n\"a.test\" = \"allow\"\n",
    );
    signal(&s.child, "-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get("a.test", &s), "403");

    signal(&s.child, "-TERM");
    assert_eq!(wait_exit(&mut s.child, Duration::from_secs(12)), 0);
    let mut stderr = String::new();
    std::io::Read::read_to_string(s.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("reload refused"), "{stderr}");
    assert!(stderr.contains("network.proxy_url"), "{stderr}");
    assert!(stderr.contains("config reloaded"), "{stderr}");
    let _ = std::fs::remove_file(&req);
}

#[test]
fn a_bad_config_exits_3_and_a_busy_port_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_netproxy"))
            .arg("serve")
            .args(args)
            .env_clear()
            .env("NETPROXY_HOME", dir.path())
            .env("NETPROXY_SYSTEM_DIR", dir.path())
            .output()
            .unwrap()
    };
    let out = run(&["--no-socks", "--no-admin", "-c", "mdoe=1"]);
    assert_eq!(out.status.code(), Some(3));
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = run(&[
        "--no-socks",
        "--no-admin",
        "--http",
        &busy.local_addr().unwrap().to_string(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot bind"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_file_is_reloaded_without_a_signal() {
    let (dns, _origin, port) = public_origin(&["a.test"]).await;
    let s = start(
        &dns,
        &["-c", "treat_as_public=[\"127.0.0.2/32\"]"],
        Some(""),
    );
    let get = |s: &Serve| {
        let (http, url) = (s.http.clone(), format!("http://a.test:{port}/"));
        std::thread::spawn(move || curl(&http, &[&url]).0)
            .join()
            .unwrap()
    };
    assert_eq!(get(&s), "403");
    // Replace the file the way editors do: write a new file, rename it over the old one.
    let tmp = s.dir.path().join("netproxy.toml.new");
    write(&tmp, "[network.domains]\n\"a.test\" = \"allow\"\n");
    std::fs::rename(&tmp, config_path(&s)).unwrap();
    let start = Instant::now();
    while get(&s) != "200" {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the change was not picked up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_through_the_upstream_proxy_after_judging_and_refuses_a_loop() {
    let dns = DnsServer::start().await.unwrap();
    let origin = HttpOrigin::start("behind-upstream", "127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    let port = origin.addr().port();
    dns.set(
        "api.test",
        Answer::Addrs(vec!["127.0.0.2".parse().unwrap()]),
    );
    // An upstream proxy: proxy-http with a gate that sends every request to the origin,
    // recording what it was asked.
    let gate = std::sync::Arc::new(proxy_test_support::StubGate::new());
    gate.answer_others(proxy_core::Admission::Allow(proxy_core::Route::direct(
        vec![origin.addr()],
        proxy_core::Decision::allow(),
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(proxy_http::run(
        listener,
        gate.clone(),
        std::sync::Arc::new(proxy_gate::TcpDialer::new(Duration::from_secs(2))),
        std::sync::Arc::new(proxy_core::NoInterception),
        proxy_http::Limits::default(),
        std::future::pending(),
    ));
    let env = [
        ("HTTP_PROXY", format!("http://{upstream}")),
        ("HTTPS_PROXY", format!("http://{upstream}")),
        ("NO_PROXY", "bypass.test".to_owned()),
    ];
    let s = start_with_env(
        &dns,
        &[
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--allow",
            "*.test",
            "--deny",
            "evil.test",
        ],
        None,
        &env,
    );
    let run = |args: Vec<String>| {
        let http = s.http.clone();
        std::thread::spawn(move || {
            curl(&http, &args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .join()
        .unwrap()
    };
    let (code, body) = run(vec![format!("http://api.test:{port}/plain")]);
    assert_eq!(code, "200", "{body}");
    let (code, body) = run(vec!["-p".into(), format!("http://api.test:{port}/tunnel")]);
    assert_eq!(code, "200", "{body}");
    let (code, _) = run(vec![format!("http://evil.test:{port}/")]);
    assert_eq!(code, "403");
    let seen = gate.seen();
    if seen.len() != 2 {
        let mut s = s;
        let _ = s.child.kill();
        let mut stderr = String::new();
        std::io::Read::read_to_string(s.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        panic!("the upstream saw {seen:?}; netproxy said:\n{stderr}");
    }
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
    let env = [("HTTP_PROXY", format!("http://127.0.0.1:{port_self}"))];
    let own = format!("127.0.0.1:{port_self}");
    let s = start_with_env(
        &dns,
        &[
            "--http",
            &own,
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--allow",
            "*.test",
        ],
        None,
        &env,
    );
    let http = s.http.clone();
    let (code, body) =
        std::thread::spawn(move || curl(&http, &[&format!("http://api.test:{port}/")]))
            .join()
            .unwrap();
    assert_eq!(code, "502", "{body}");
    assert!(body.contains("loop refused"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_and_a_disabled_proxy_on_the_wire() {
    let (dns, origin, port) = public_origin(&["api.test"]).await;
    let s = start(
        &dns,
        &[
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--allow",
            "*.test",
            "--mode",
            "limited",
        ],
        None,
    );
    let run = |args: Vec<String>| {
        let http = s.http.clone();
        std::thread::spawn(move || {
            curl(&http, &args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .join()
        .unwrap()
    };
    let (code, _) = run(vec![format!("http://api.test:{port}/read")]);
    assert_eq!(code, "200");
    let (code, body) = run(vec![
        "-X".into(),
        "POST".into(),
        "-d".into(),
        "x".into(),
        format!("http://api.test:{port}/write"),
    ]);
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains("\"reason\":\"method_not_allowed\"")
            && body.contains("\"source\":\"mode_guard\""),
        "{body}"
    );
    let (_, body) = run(vec![
        "-p".into(),
        "-v".into(),
        format!("http://api.test:{port}/"),
    ]);
    assert!(
        body.contains("x-proxy-error: blocked-by-mitm-required"),
        "{body}"
    );
    // Only the GET reached the origin.
    assert_eq!(origin.seen().len(), 1);
    drop(s);
    let before = dns.queries_for("api.test");

    let s = start(&dns, &["-c", "enabled=false", "--allow", "*.test"], None);
    let http = s.http.clone();
    let (code, body) =
        std::thread::spawn(move || curl(&http, &[&format!("http://api.test:{port}/")]))
            .join()
            .unwrap();
    assert_eq!(code, "503", "{body}");
    assert!(body.contains("\"reason\":\"proxy_disabled\""), "{body}");
    assert_eq!(
        dns.queries_for("api.test"),
        before,
        "a disabled proxy resolves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_a_connect_tunnel_with_real_tls() {
    let dns = DnsServer::start().await.unwrap();
    let ca = proxy_test_support::TestCa::new().unwrap();
    let origin = proxy_test_support::TlsOrigin::start(
        "tls",
        "127.0.0.2".parse().unwrap(),
        &ca,
        &["secure.test"],
    )
    .await
    .unwrap();
    let port = origin.addr().port();
    dns.set(
        "secure.test",
        Answer::Addrs(vec!["127.0.0.2".parse().unwrap()]),
    );
    let s = start(
        &dns,
        &[
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--allow",
            "secure.test",
        ],
        None,
    );
    let ca_file = s.dir.path().join("ca.pem");
    write(&ca_file, ca.cert_pem());
    let http = s.http.clone();
    let url = format!("https://secure.test:{port}/over-tls");
    let cacert = ca_file.to_str().unwrap().to_owned();
    let (code, body) = std::thread::spawn(move || curl(&http, &["--cacert", &cacert, &url]))
        .join()
        .unwrap();
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("GET /over-tls 0"), "{body}");
    assert_eq!(origin.seen().len(), 1);
    // A name the policy refuses never gets a tunnel.
    let http = s.http.clone();
    let (code, _) = std::thread::spawn(move || {
        curl(
            &http,
            &[
                "--cacert",
                &ca_file.to_string_lossy(),
                "https://other.test:1/",
            ],
        )
    })
    .join()
    .unwrap();
    assert_ne!(code, "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_with_curl_by_name_and_by_address() {
    let (dns, origin, port) = public_origin(&["api.test"]).await;
    let s = start(
        &dns,
        &[
            "--socks",
            "127.0.0.1:0",
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--allow",
            "*.test",
            "--allow",
            "127.0.0.2",
            "--deny",
            "evil.test",
        ],
        None,
    );
    let socks = s.socks.clone().unwrap();
    let get = move |proxy_flag: &str, url: String| {
        let (flag, socks) = (proxy_flag.to_owned(), socks.clone());
        std::thread::spawn(move || {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-S",
                    "--max-time",
                    "10",
                    &flag,
                    &socks,
                    "-w",
                    "\n%{http_code}",
                    &url,
                ])
                .env_clear()
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let code = text.rsplit('\n').next().unwrap_or_default().to_owned();
            (code, text + &String::from_utf8_lossy(&out.stderr))
        })
        .join()
        .unwrap()
    };
    // socks5h: the name goes to netproxy, which judges and resolves it.
    let (code, body) = get(
        "--socks5-hostname",
        format!("http://api.test:{port}/by-name"),
    );
    assert_eq!(code, "200", "{body}");
    // socks5 with an address: judged as that address.
    let (code, body) = get("--socks5", format!("http://127.0.0.2:{port}/by-address"));
    assert_eq!(code, "200", "{body}");
    let (code, _) = get("--socks5-hostname", format!("http://evil.test:{port}/"));
    assert_eq!(code, "000");
    assert_eq!(origin.seen().len(), 2);
    assert_eq!(dns.queries_for("evil.test"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_udp_by_name_through_the_real_gate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dns = DnsServer::start().await.unwrap();
    let echo_sock = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let echo = echo_sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = echo_sock.recv_from(&mut buf).await {
            let _ = echo_sock.send_to(&buf[..n], from).await;
        }
    });
    dns.set(
        "udp.test",
        Answer::Addrs(vec!["127.0.0.2".parse().unwrap()]),
    );
    dns.set(
        "local.test",
        Answer::Addrs(vec!["127.0.0.1".parse().unwrap()]),
    );
    let s = start(
        &dns,
        &[
            "--socks",
            "127.0.0.1:0",
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--allow",
            "*.test",
        ],
        None,
    );
    let socks: std::net::SocketAddr = s.socks.clone().unwrap().parse().unwrap();
    let mut c = tokio::net::TcpStream::connect(socks).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    c.read_exact(&mut m).await.unwrap();
    c.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
    let mut reply = [0u8; 10];
    c.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 0);
    let relay = std::net::SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let send = |name: &str, payload: &[u8]| {
        let mut d = vec![0, 0, 0, 3, u8::try_from(name.len()).unwrap()];
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&echo.port().to_be_bytes());
        d.extend_from_slice(payload);
        d
    };
    let mut buf = vec![0u8; 2048];
    client
        .send_to(&send("udp.test", b"hello udp"), relay)
        .await
        .unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].ends_with(b"hello udp"));
    // A name that resolves locally is refused and dropped; the association stays up.
    client
        .send_to(&send("local.test", b"no"), relay)
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf))
            .await
            .is_err()
    );
    client
        .send_to(&send("udp.test", b"again"), relay)
        .await
        .unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].ends_with(b"again"));
    // Resolved once per association and destination.
    assert!(dns.queries_for("udp.test") <= 2, "{:?}", dns.queries());
}

/// netproxy's resident memory, from /proc.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_association_flooded_with_refused_destinations_stays_small() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dns = DnsServer::start().await.unwrap();
    let echo_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo = echo_sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = echo_sock.recv_from(&mut buf).await {
            let _ = echo_sock.send_to(&buf[..n], from).await;
        }
    });
    // Only the echo is allowed: every other loopback destination is refused by policy
    // (not_allowed_local), so nothing is sent on.
    let s = start(
        &dns,
        &["--socks", "127.0.0.1:0", "--allow", "127.0.0.1"],
        None,
    );
    let socks: std::net::SocketAddr = s.socks.clone().unwrap().parse().unwrap();
    let mut c = tokio::net::TcpStream::connect(socks).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    c.read_exact(&mut m).await.unwrap();
    c.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
    let mut reply = [0u8; 10];
    c.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 0);
    let relay = std::net::SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let datagram = |ip: [u8; 4], port: u16| {
        let mut d = vec![0, 0, 0, 1];
        d.extend_from_slice(&ip);
        d.extend_from_slice(&port.to_be_bytes());
        d.extend_from_slice(b"x");
        d
    };
    // Distinct refused destinations: 127.0.0.3 on every port, then 127.x.y.z addresses.
    let refused = |i: u32| {
        if i < 65_000 {
            datagram([127, 0, 0, 3], u16::try_from(i + 1).unwrap())
        } else {
            let [_, x, y, z] = (i - 65_000 + (1 << 16)).to_be_bytes();
            datagram([127, x, y, z], 9)
        }
    };
    // Batches small enough for the relay's receive buffer, each followed by an echo round
    // trip: the relay handles datagrams in order, so the batch has been judged by then.
    let mut buf = vec![0u8; 2048];
    let mut flood = async |from: u32, to: u32| {
        for start in (from..to).step_by(100) {
            for i in start..(start + 100).min(to) {
                client.send_to(&refused(i), relay).await.unwrap();
            }
            client
                .send_to(&datagram([127, 0, 0, 1], echo.port()), relay)
                .await
                .unwrap();
            let (n, _) = tokio::time::timeout(Duration::from_secs(10), client.recv_from(&mut buf))
                .await
                .expect("the relay stopped answering")
                .unwrap();
            assert!(buf[..n].ends_with(b"x"));
        }
    };
    let pid = s.child.id();
    // Warm-up: the verdict table full, the allocator and the log buffers in use.
    flood(0, 20_000).await;
    let before = vm_rss_kib(pid);
    flood(20_000, 320_000).await;
    let after = vm_rss_kib(pid);
    let grown = after.saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "300,000 refused destinations grew netproxy by {grown} KiB ({before} -> {after} KiB)"
    );
    drop(c);
}

/// A tiny HTTP/1.1 server on a unix socket: answers each request with its request line and
/// whether an `x-unix-socket` header reached it; closes after one response.
fn unix_origin(path: &Path) -> std::thread::JoinHandle<()> {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut leaked = false;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
                leaked |= h.to_ascii_lowercase().starts_with("x-unix-socket");
            }
            let body = format!("{} leaked={leaked}", line.trim_end());
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_unix_socket_requests_reach_allowed_sockets_only() {
    let dns = DnsServer::start().await.unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let real = sockets.path().join("api.sock");
    let _origin = unix_origin(&real);
    let other = sockets.path().join("other.sock");
    let _other = unix_origin(&other);
    // A symlink to the allowed socket, and an allowed symlink to the other one.
    let link = sockets.path().join("link.sock");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let allowed_link = sockets.path().join("allowed-link.sock");
    std::os::unix::fs::symlink(&other, &allowed_link).unwrap();
    let missing = sockets.path().join("missing.sock");
    let config = format!(
        "[network.unix_sockets]\n{:?} = \"allow\"\n{:?} = \"allow\"\n{:?} = \"allow\"\n",
        real.display().to_string(),
        allowed_link.display().to_string(),
        missing.display().to_string(),
    );
    let s = start(&dns, &[], Some(&config));
    let ask = |socket: String, url: &str| {
        let (http, url) = (s.http.clone(), url.to_owned());
        std::thread::spawn(move || curl(&http, &["-H", &format!("x-unix-socket: {socket}"), &url]))
            .join()
            .unwrap()
    };
    let shown = |p: &Path| p.display().to_string();

    // Allowed as written: origin-form, the header removed.
    let (code, body) = ask(shown(&real), "http://localhost/v1.41/info?all=1");
    assert_eq!(code, "200", "{body}");
    assert_eq!(body, "GET /v1.41/info?all=1 HTTP/1.1 leaked=false");
    // Through a symlink to an allowed socket, and to the target of an allowed symlink.
    let (code, body) = ask(shown(&link), "http://localhost/via-link");
    assert_eq!(code, "200", "{body}");
    assert!(body.starts_with("GET /via-link "), "{body}");
    let (code, body) = ask(shown(&other), "http://localhost/real-of-allowed-link");
    assert_eq!(code, "200", "{body}");
    // Not allowed, relative, and allowed but missing.
    let stranger = sockets.path().join("stranger.sock");
    let _stranger = unix_origin(&stranger);
    for (socket, want, reason) in [
        (shown(&stranger), "403", "not_allowed"),
        ("api.sock".to_owned(), "403", "not_allowed"),
        (shown(&missing), "502", "connect_failed"),
    ] {
        let (code, body) = ask(socket.clone(), "http://localhost/");
        assert_eq!(code, want, "{socket}: {body}");
        assert!(
            body.contains(&format!("\"reason\":\"{reason}\"")),
            "{socket}: {body}"
        );
        if want == "403" {
            assert!(body.contains("\"host\":\"unix-socket\""), "{body}");
        }
    }
    // Limited mode judges the method first.
    drop(s);
    let s = start(&dns, &["--mode", "limited"], Some(&config));
    let (http, socket) = (s.http.clone(), shown(&real));
    let (code, body) = std::thread::spawn(move || {
        curl(
            &http,
            &[
                "-X",
                "POST",
                "-H",
                &format!("x-unix-socket: {socket}"),
                "http://localhost/",
            ],
        )
    })
    .join()
    .unwrap();
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("\"reason\":\"method_not_allowed\""), "{body}");
}

/// A unix socket HTTP server answering every request with `answer`; counts the requests it
/// read. Stops (and removes nothing) when the returned flag is set and a connection arrives.
struct UnixServer {
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl UnixServer {
    fn start(path: &Path, answer: &'static str) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = write!(
                    reader.into_inner(),
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        Self { requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// curl straight at the proxy's port (origin-form, no `-x`), the way a web page whose name was
/// rebound to 127.0.0.1 reaches it; returns the status and the response head and body.
fn curl_origin_form(proxy: &str, headers: &[String]) -> (String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-i", "--max-time", "10", "-w", "\n%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("http://{proxy}/v1.41/containers/json"))
        .env_clear()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        code.to_owned(),
        body.to_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Waits (bounded) until the audit file has a line for which `pred` holds.
fn audit_line(path: &Path, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(v) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| pred(v))
        {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no such audit line in {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_web_page_cannot_reach_an_allowed_unix_socket() {
    let dns = DnsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let server = UnixServer::start(&socket, "A");
    let audit = dir.path().join("audit.jsonl");
    let config = format!(
        "[network]\naudit_log = {:?}\n[network.unix_sockets]\n{:?} = \"allow\"\n",
        audit.display().to_string(),
        socket.display().to_string(),
    );
    let s = start(&dns, &[], Some(&config));
    let port = s.http.rsplit_once(':').unwrap().1.to_owned();
    let unix = format!("x-unix-socket: {}", socket.display());
    let ask = |headers: &[&str]| {
        let mut all: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
        all.push(unix.clone());
        let http = s.http.clone();
        std::thread::spawn(move || curl_origin_form(&http, &all))
            .join()
            .unwrap()
    };

    // What a page on rebind.attacker.example, rebound to 127.0.0.1, sends: refused, and
    // nothing reaches the socket.
    let rebind_host = format!("Host: rebind.attacker.example:{port}");
    let rebind_origin = format!("Origin: http://rebind.attacker.example:{port}");
    for headers in [
        vec![
            rebind_host.as_str(),
            rebind_origin.as_str(),
            "Sec-Fetch-Mode: no-cors",
        ],
        vec![rebind_host.as_str()],
        vec!["Host: localhost", rebind_origin.as_str()],
        vec!["Host: localhost", "Sec-Fetch-Site: cross-site"],
        vec!["Host: 10.1.2.3:2375"],
    ] {
        let (code, text) = ask(&headers);
        assert_eq!(code, "403", "{headers:?}: {text}");
        let lower = text.to_ascii_lowercase();
        assert!(lower.contains("x-proxy-error: blocked-by-policy"), "{text}");
        assert!(
            text.contains("\"reason\":\"unix_socket_cross_origin\""),
            "{text}"
        );
        assert!(text.contains("\"source\":\"baseline_policy\""), "{text}");
        assert!(text.contains("\"host\":\"unix-socket\""), "{text}");
    }
    assert_eq!(server.requests(), 0, "a refused request reached the socket");
    // Audited like any refusal.
    let line = audit_line(&audit, |v| {
        v["network.policy.reason"] == "unix_socket_cross_origin"
    });
    assert_eq!(line["network.policy.decision"], "deny");
    assert_eq!(line["network.policy.source"], "baseline_policy");
    assert_eq!(line["server.address"], "unix-socket");

    // Local clients: Docker's `api.moby.localhost`, `localhost`, loopback literals.
    let mut served = 0;
    for headers in [
        vec!["Host: api.moby.localhost"],
        vec!["Host: localhost:2375"],
        vec![],
        vec!["Host: [::1]:2375"],
        vec!["Host: 127.0.0.1"],
    ] {
        let (code, text) = ask(&headers);
        assert_eq!(code, "200", "{headers:?}: {text}");
        assert!(text.ends_with("\r\n\r\nA"), "{text}");
        served += 1;
        assert_eq!(server.requests(), served);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_connected_is_the_socket_judged() {
    let dns = DnsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The allowed socket ("A"), a socket the child should never reach ("B"), and an allowed
    // entry that is a symlink into a symlinked folder, like /var/run/docker.sock ->
    // /run/docker.sock ("C").
    let allowed = d.join("api.sock");
    let a = UnixServer::start(&allowed, "A");
    let b_path = d.join("b.sock");
    let b = UnixServer::start(&b_path, "B");
    std::fs::create_dir(d.join("run")).unwrap();
    std::os::unix::fs::symlink(d.join("run"), d.join("var-run")).unwrap();
    let c_path = d.join("run").join("docker.sock");
    let c = UnixServer::start(&c_path, "C");
    let c_entry = d.join("docker.sock");
    std::os::unix::fs::symlink(d.join("var-run").join("docker.sock"), &c_entry).unwrap();
    let config = format!(
        "[network.unix_sockets]\n{:?} = \"allow\"\n{:?} = \"allow\"\n",
        allowed.display().to_string(),
        c_entry.display().to_string(),
    );
    let s = start(&dns, &[], Some(&config));
    let ask = |socket: &Path| {
        let (http, socket) = (s.http.clone(), socket.display().to_string());
        std::thread::spawn(move || {
            curl(
                &http,
                &[
                    "-H",
                    &format!("x-unix-socket: {socket}"),
                    "http://localhost/",
                ],
            )
        })
        .join()
        .unwrap()
    };

    assert_eq!(ask(&allowed), ("200".to_owned(), "A".to_owned()));
    // The symlinked entry keeps working, as written and by its real path.
    assert_eq!(ask(&c_entry), ("200".to_owned(), "C".to_owned()));
    assert_eq!(ask(&c_path), ("200".to_owned(), "C".to_owned()));
    // B is not allowed.
    let (code, body) = ask(&b_path);
    assert_eq!(code, "403", "{body}");

    // The daemon restarts: its socket is recreated at the same path (a new inode).
    std::fs::remove_file(&c_path).unwrap();
    let c2 = UnixServer::start(&c_path, "C2");
    assert_eq!(ask(&c_entry), ("200".to_owned(), "C2".to_owned()));
    assert_eq!(c.requests() + c2.requests(), 3);

    // The child swaps the allowed path for a symlink to B: refused, through the allowed path
    // and directly, and nothing reaches B.
    std::fs::remove_file(&allowed).unwrap();
    std::os::unix::fs::symlink(&b_path, &allowed).unwrap();
    for socket in [&allowed, &b_path] {
        let (code, body) = ask(socket);
        assert_eq!(code, "403", "{}: {body}", socket.display());
        assert!(body.contains("\"reason\":\"not_allowed\""), "{body}");
    }
    // The same through the symlinked entry: pointed at B, it is no longer the allowed socket.
    std::fs::remove_file(&c_entry).unwrap();
    std::os::unix::fs::symlink(&b_path, &c_entry).unwrap();
    let (code, body) = ask(&c_entry);
    assert_eq!(code, "403", "{body}");
    assert_eq!(
        b.requests(),
        0,
        "a request reached the socket that is not allowed"
    );
    assert_eq!(a.requests(), 1);
    // A regular file where the socket was is refused too.
    std::fs::remove_file(&allowed).unwrap();
    std::fs::write(&allowed, "not a socket").unwrap();
    let (code, body) = ask(&allowed);
    assert_eq!(code, "403", "{body}");
}

/// An `x-unix-socket` request for `socket` through the proxy at `http`: status and body.
fn ask_unix(http: &str, socket: &Path) -> (String, String) {
    let (http, socket) = (http.to_owned(), socket.display().to_string());
    std::thread::spawn(move || {
        curl(
            &http,
            &[
                "-H",
                &format!("x-unix-socket: {socket}"),
                "http://localhost/",
            ],
        )
    })
    .join()
    .unwrap()
}

/// A folder `T/base/d` holding the allowed socket ("A", at `T/base/d/allowed.sock`) and a
/// socket of the same name the child should never reach ("SECRET", at
/// `T/secretdir/allowed.sock`). Returns the temporary folder, the allowed path and the servers.
fn allowed_and_secret() -> (tempfile::TempDir, PathBuf, UnixServer, UnixServer) {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    std::fs::create_dir_all(t.join("base").join("d")).unwrap();
    std::fs::create_dir(t.join("secretdir")).unwrap();
    let allowed = t.join("base").join("d").join("allowed.sock");
    let a = UnixServer::start(&allowed, "A");
    let secret = UnixServer::start(&t.join("secretdir").join("allowed.sock"), "SECRET");
    (dir, allowed, a, secret)
}

/// What a child that can write `T/base` does: `mv base/d base/d.real; ln -s T/secretdir base/d`,
/// so that the allowed path now leads, through its folder, to SECRET.
fn swap_folder_for_symlink(t: &Path) {
    let base = t.join("base");
    std::fs::rename(base.join("d"), base.join("d.real")).unwrap();
    std::os::unix::fs::symlink(t.join("secretdir"), base.join("d")).unwrap();
}

fn unix_socket_config(allowed: &Path) -> String {
    format!(
        "[network.unix_sockets]\n{:?} = \"allow\"\n",
        allowed.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_of_an_allowed_socket_swapped_for_a_symlink_is_refused() {
    let dns = DnsServer::start().await.unwrap();
    let (dir, allowed, a, secret) = allowed_and_secret();
    let t = dir.path();
    let s = start(&dns, &[], Some(&unix_socket_config(&allowed)));
    assert_eq!(
        ask_unix(&s.http, &allowed),
        ("200".to_owned(), "A".to_owned())
    );

    // The last component is still a socket, not a symlink; a folder above it now is.
    swap_folder_for_symlink(t);
    let direct = t.join("secretdir").join("allowed.sock");
    for socket in [&allowed, &direct] {
        let (code, body) = ask_unix(&s.http, socket);
        assert_eq!(code, "403", "{}: {body}", socket.display());
        assert!(body.contains("\"reason\":\"not_allowed\""), "{body}");
    }
    assert_eq!(
        secret.requests(),
        0,
        "a request reached the socket that is not allowed"
    );

    // The folder put back: the allowed socket is reached again.
    let base = t.join("base");
    std::fs::remove_file(base.join("d")).unwrap();
    std::fs::rename(base.join("d.real"), base.join("d")).unwrap();
    assert_eq!(
        ask_unix(&s.http, &allowed),
        ("200".to_owned(), "A".to_owned())
    );
    assert_eq!(a.requests(), 2);
    assert_eq!(secret.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unrelated_admin_change_does_not_re_resolve_an_allowed_socket() {
    let dns = DnsServer::start().await.unwrap();
    let (dir, allowed, a, secret) = allowed_and_secret();
    let t = dir.path();
    let mut s = start(
        &dns,
        &["--admin", "127.0.0.1:0"],
        Some(&unix_socket_config(&allowed)),
    );
    assert_eq!(
        ask_unix(&s.http, &allowed),
        ("200".to_owned(), "A".to_owned())
    );

    swap_folder_for_symlink(t);
    let (code, body) = ask_unix(&s.http, &allowed);
    assert_eq!(code, "403", "{body}");

    // The operator's next change has nothing to do with unix sockets; the files are re-read
    // with it, and the entry now leads to SECRET. It stays resolved where it was.
    let token = std::fs::read_to_string(s.dir.path().join("home").join("admin.token")).unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
        ])
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args(["-H", "content-type: application/json"])
        .args(["--data-binary", r#"{"allow":["unrelated.test"]}"#])
        .arg(format!("http://{}/domains", s.admin.as_deref().unwrap()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.ends_with("\n200"), "{text}");

    let direct = t.join("secretdir").join("allowed.sock");
    for socket in [&allowed, &direct] {
        let (code, body) = ask_unix(&s.http, socket);
        assert_eq!(code, "403", "{}: {body}", socket.display());
        assert!(body.contains("\"reason\":\"not_allowed\""), "{body}");
    }
    assert_eq!(
        secret.requests(),
        0,
        "a request reached the socket that is not allowed"
    );
    assert_eq!(a.requests(), 1);

    // The operator is told, once the change is made, that the entry would now resolve
    // elsewhere and was kept.
    signal(&s.child, "-TERM");
    assert_eq!(wait_exit(&mut s.child, Duration::from_secs(10)), 0);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut s.child.stderr.take().unwrap(), &mut stderr).unwrap();
    let kept = std::fs::canonicalize(allowed.parent().unwrap().parent().unwrap())
        .unwrap()
        .join("d")
        .join("allowed.sock");
    let warning = stderr
        .lines()
        .find(|l| l.contains("now resolves to"))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(
        warning.contains("secretdir") && warning.contains(&kept.display().to_string()),
        "{warning}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_reach_the_json_log_at_info_and_not_at_warn() {
    let (dns, _origin, port) = public_origin(&["api.test"]).await;
    for (level, logged) in [("info", true), ("warn", false)] {
        let mut s = start_with_env(
            &dns,
            &[
                "--log-format",
                "json",
                "-c",
                "treat_as_public=[\"127.0.0.2/32\"]",
                "--allow",
                "api.test",
            ],
            None,
            &[("RUST_LOG", level.to_owned())],
        );
        let http = s.http.clone();
        let codes = tokio::task::spawn_blocking(move || {
            [
                curl(&http, &[&format!("http://api.test:{port}/hi?token=secret")]).0,
                curl(&http, &[&format!("http://evil.test:{port}/")]).0,
            ]
        })
        .await
        .unwrap();
        assert_eq!(codes, ["200".to_owned(), "403".to_owned()]);
        signal(&s.child, "-TERM");
        assert_eq!(wait_exit(&mut s.child, Duration::from_secs(10)), 0);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut s.child.stderr.take().unwrap(), &mut stderr).unwrap();
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
        assert!(
            text[0].contains(r#""network.policy.decision":"allow""#),
            "{}",
            text[0]
        );
        assert!(
            text[0].contains(r#""server.address":"api.test""#),
            "{}",
            text[0]
        );
        assert!(
            text[0].contains(r#""client.address":"127.0.0.1:"#),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains(r#""network.policy.decision":"deny""#),
            "{}",
            text[1]
        );
        assert!(
            text[1].contains(r#""network.policy.reason":"not_allowed""#),
            "{}",
            text[1]
        );
        assert!(!stderr.contains("secret"), "no query string in the log");
    }
}

/// The ready file: a symlink planted at its path is replaced, never followed, and no temporary
/// file is left beside it.
#[test]
fn the_ready_file_replaces_a_planted_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let ready = dir.path().join("ready.json");
    std::os::unix::fs::symlink(&victim, &ready).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_netproxy"))
        .args(["serve", "--no-admin", "--no-socks", "--http", "127.0.0.1:0"])
        .arg("--ready-file")
        .arg(&ready)
        .env_clear()
        .env("NETPROXY_HOME", dir.path().join("home"))
        .env("NETPROXY_SYSTEM_DIR", dir.path().join("system"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::symlink_metadata(&ready)
        .unwrap()
        .file_type()
        .is_symlink()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "netproxy did not become ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    assert_eq!(v["pid"], child.id());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ready.json", "victim"]);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ready).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), 0);
}

/// The audit log: a named pipe (nobody reading it) or a hard link to another file at its path
/// stops the start at once (exit 1, naming the path); the linked file is left untouched.
#[test]
fn the_audit_log_refuses_a_named_pipe_and_a_hard_link() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let serve = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_netproxy"))
            .args(["serve", "--no-admin", "--no-socks", "--http", "127.0.0.1:0"])
            .args(["-c", &format!("audit_log={:?}", log.display().to_string())])
            .env_clear()
            .env("NETPROXY_HOME", dir.path().join("home"))
            .env("NETPROXY_SYSTEM_DIR", dir.path().join("system"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("netproxy serve hung at the start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let opened = format!("cannot open the audit log {}", log.display());

    rustix::fs::mknodat(
        rustix::fs::CWD,
        &log,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let (code, err) = serve();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&opened) && err.contains("named pipe"), "{err}");
    std::fs::remove_file(&log).unwrap();

    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::hard_link(&victim, &log).unwrap();
    let (code, err) = serve();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&opened) && err.contains("hard links"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
}

/// The audit log: a symlink at its path stops the start (exit 1, naming the path); a file open
/// to others is narrowed to 0600 with a warning.
#[test]
fn the_audit_log_refuses_a_symlink_and_narrows_a_wide_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let log = dir.path().join("audit.jsonl");
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let serve = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netproxy"));
        cmd.args(["serve", "--no-admin", "--no-socks", "--http", "127.0.0.1:0"])
            .args(["-c", &format!("audit_log={:?}", log.display().to_string())])
            .args(extra)
            .env_clear()
            .env("NETPROXY_HOME", dir.path().join("home"))
            .env("NETPROXY_SYSTEM_DIR", dir.path().join("system"));
        cmd
    };
    let out = serve(&[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot open the audit log {}", log.display()))
            && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

    std::fs::remove_file(&log).unwrap();
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ready = dir.path().join("ready.json");
    let mut child = serve(&["--ready-file", ready.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "netproxy did not become ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&log).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), 0);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("WARN")
            && stderr.contains("mode 0644")
            && stderr.contains("narrowed to 0600"),
        "{stderr}"
    );
}
