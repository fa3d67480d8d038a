//! The admin API of the real `netproxy serve` process: token, every route, changes in force
//! when answered, managed constraints, reload, metrics, and no token in any log line.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxy_test_support::{Answer, DnsServer, HttpOrigin};

struct Serve {
    child: Child,
    http: String,
    admin: String,
    dir: tempfile::TempDir,
    /// stderr, read as it comes so that the pipe never fills.
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn config(&self) -> PathBuf {
        self.dir.path().join("netproxy.toml")
    }

    /// Stops the process and returns its stderr.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(30), "no exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stderr.take().unwrap().join().unwrap()
    }
}

fn start(dns: &DnsServer, extra: &[&str], config: &str, env: &[(&str, &str)]) -> Serve {
    start_at(dns, "127.0.0.1:0", extra, config, env)
}

/// `netproxy serve` with its admin API asked for on `admin`.
fn start_at(
    dns: &DnsServer,
    admin: &str,
    extra: &[&str],
    config: &str,
    env: &[(&str, &str)],
) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let cfg = dir.path().join("netproxy.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_netproxy"))
        .args([
            "serve",
            "--no-socks",
            "--http",
            "127.0.0.1:0",
            "--admin",
            admin,
        ])
        .arg("--ready-file")
        .arg(&ready)
        .arg("--config")
        .arg(&cfg)
        .args([
            "-c",
            &format!("dns.nameservers=[\"{}\"]", dns.addr()),
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
        ])
        .args(extra)
        .env_clear()
        .env("NETPROXY_HOME", dir.path().join("home"))
        .env("NETPROXY_SYSTEM_DIR", dir.path().join("system"))
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let begin = Instant::now();
    while !ready.exists() {
        assert!(begin.elapsed() < Duration::from_secs(10), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
        err
    });
    Serve {
        stderr: Some(stderr),
        child,
        http: v["http"].as_str().unwrap().to_owned(),
        admin: v["admin"].as_str().unwrap().to_owned(),
        dir,
    }
}

/// curl against the admin API: (status, body).
fn admin(
    s: &Serve,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "--noproxy",
        "*",
        "--max-time",
        "20",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("http://{}{path}", s.admin))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// curl through the proxy: the status code.
fn through(s: &Serve, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "20",
            "-w",
            "%{http_code}",
            "-x",
        ])
        .arg(format!("http://{}", s.http))
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

async fn world() -> (DnsServer, HttpOrigin) {
    let dns = DnsServer::start().await.unwrap();
    let origin = HttpOrigin::start("origin", "127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    for name in ["api.test", "new.test", "other.test"] {
        dns.set(name, Answer::Addrs(vec!["127.0.0.2".parse().unwrap()]));
    }
    (dns, origin)
}

fn token_file(s: &Serve) -> String {
    let path = s.dir.path().join("home/admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_change_the_running_proxy_and_never_show_the_token() {
    let (dns, origin) = world().await;
    let port = origin.addr().port();
    let s = start(&dns, &["--allow", "api.test"], "", &[]);
    let token = token_file(&s);
    let t = Some(token.as_str());
    let url = |host: &str| format!("http://{host}:{port}/x");

    let (c, body) = admin(&s, None, "GET", "/health", None);
    assert_eq!((c, json(&body)["status"].as_str()), (200, Some("ok")));
    assert_eq!(admin(&s, None, "GET", "/config", None).0, 401);
    assert_eq!(admin(&s, Some("nope"), "GET", "/patterns", None).0, 401);

    assert_eq!(through(&s, &[&url("api.test")]), "200");
    assert_eq!(through(&s, &[&url("new.test")]), "403");

    // /domains: in force when answered.
    let (c, body) = admin(&s, t, "POST", "/domains", Some(r#"{"allow":["new.test"]}"#));
    assert_eq!(c, 200, "{body}");
    assert_eq!(through(&s, &[&url("new.test")]), "200");
    let (c, body) = admin(&s, t, "GET", "/patterns", None);
    assert_eq!(c, 200);
    let p = json(&body);
    assert!(
        p["allowed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "new.test"),
        "{body}"
    );
    // Replaced key by key: the same pattern denied now.
    let (c, _) = admin(&s, t, "POST", "/domains", Some(r#"{"deny":["NEW.test."]}"#));
    assert_eq!(c, 200);
    assert_eq!(through(&s, &[&url("new.test")]), "403");

    // /mode.
    let (c, body) = admin(&s, t, "POST", "/mode", Some(r#"{"mode":"limited"}"#));
    assert_eq!(
        (c, json(&body)["mode"].as_str()),
        (200, Some("limited")),
        "{body}"
    );
    assert_eq!(through(&s, &["-X", "POST", &url("api.test")]), "403");
    assert_eq!(through(&s, &[&url("api.test")]), "200");

    // /config shows the runtime layer.
    let (c, body) = admin(&s, t, "GET", "/config", None);
    assert_eq!(c, 200);
    let cfg = json(&body);
    let mode = cfg["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["key"] == "network.mode")
        .unwrap();
    assert_eq!(
        (mode["value"].as_str(), mode["layer"].as_str()),
        (Some("limited"), Some("runtime"))
    );

    // /reload keeps the runtime layer, takes the file's changes, refuses a bad file.
    std::fs::write(
        s.config(),
        "[network.domains]\n\"other.test\" = \"allow\"\n",
    )
    .unwrap();
    let (c, body) = admin(&s, t, "POST", "/reload", None);
    assert_eq!(
        (c, json(&body)["status"].as_str()),
        (200, Some("reloaded")),
        "{body}"
    );
    assert_eq!(through(&s, &[&url("other.test")]), "200");
    assert_eq!(through(&s, &["-X", "POST", &url("other.test")]), "403");
    std::fs::write(s.config(), "[network\n").unwrap();
    let (c, body) = admin(&s, t, "POST", "/reload", None);
    assert_eq!(c, 409, "{body}");
    assert_eq!(json(&body)["reason"], "invalid_config");
    assert_eq!(through(&s, &[&url("other.test")]), "200");
    std::fs::write(
        s.config(),
        "[network]\nproxy_url = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let (c, body) = admin(&s, t, "POST", "/reload", None);
    assert_eq!(c, 409, "{body}");
    assert!(body.contains("network.proxy_url"), "{body}");
    std::fs::write(s.config(), "").unwrap();

    // Bad input.
    assert_eq!(admin(&s, t, "POST", "/mode", Some("{")).0, 400);
    assert_eq!(
        admin(&s, t, "POST", "/mode", Some(r#"{"mode":"open"}"#)).0,
        400
    );
    assert_eq!(
        admin(&s, t, "POST", "/domains", Some(r#"{"allow":["a?.test"]}"#)).0,
        400
    );
    let big = format!(r#"{{"allow":["{}"]}}"#, "a".repeat(70_000));
    assert_eq!(admin(&s, t, "POST", "/domains", Some(&big)).0, 413);

    // /blocked: drains unless peeking; total counts everything.
    let (c, body) = admin(&s, t, "GET", "/blocked?peek=true", None);
    assert_eq!(c, 200);
    let b = json(&body);
    let total = b["total"].as_u64().unwrap();
    assert!(total >= 3, "{body}");
    let first = &b["blocked"][0];
    for key in [
        "host",
        "port",
        "reason",
        "protocol",
        "method",
        "client",
        "mode",
        "decision",
        "source",
        "timestamp",
    ] {
        assert!(first.get(key).is_some(), "{key}: {first}");
    }
    assert_eq!(first["host"], "new.test");
    let (_, body) = admin(&s, t, "GET", "/blocked", None);
    assert_eq!(
        json(&body)["blocked"].as_array().unwrap().len() as u64,
        total.min(200)
    );
    let (_, body) = admin(&s, t, "GET", "/blocked", None);
    assert_eq!(json(&body)["blocked"].as_array().unwrap().len(), 0);
    assert_eq!(json(&body)["total"].as_u64().unwrap(), total);

    // /check answers like `netproxy check --json`, with the rule and layer.
    let (c, body) = admin(
        &s,
        t,
        "POST",
        "/check",
        Some(&format!(r#"{{"url":"http://new.test:{port}/"}}"#)),
    );
    assert_eq!(c, 200, "{body}");
    let v = json(&body);
    assert_eq!(
        (v["decision"].as_str(), v["reason"].as_str()),
        (Some("deny"), Some("denied"))
    );
    assert_eq!(v["rule"]["layer"], "runtime");
    let (c, body) = admin(
        &s,
        t,
        "POST",
        "/check",
        Some(r#"{"host":"api.test","port":80,"protocol":"http","method":"GET"}"#),
    );
    assert_eq!(c, 200, "{body}");
    assert_eq!(json(&body)["decision"], "allow");
    assert_eq!(
        admin(&s, t, "POST", "/check", Some(r#"{"url":"gopher://x"}"#)).0,
        400
    );

    // /metrics moves when requests flow.
    let count = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("netproxy_requests_total{protocol=\"http\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let (c, before) = admin(&s, t, "GET", "/metrics", None);
    assert_eq!(c, 200);
    assert_eq!(through(&s, &[&url("api.test")]), "200");
    assert_eq!(through(&s, &[&url("evil.test")]), "403");
    let (_, after) = admin(&s, t, "GET", "/metrics", None);
    assert_eq!(count(&after), count(&before) + 2, "{after}");
    assert!(
        after.contains(
            "netproxy_decisions_total{protocol=\"http\",decision=\"deny\",reason=\"not_allowed\"}"
        ),
        "{after}"
    );
    assert!(
        after.contains("netproxy_reloads_total{result=\"failed\"} "),
        "{after}"
    );
    assert!(after.contains("netproxy_dns_lookups_total "), "{after}");

    // The token is in no response and no log line, even at debug level.
    for (m, p) in [
        ("GET", "/config"),
        ("GET", "/metrics"),
        ("GET", "/patterns"),
    ] {
        assert!(!admin(&s, t, m, p, None).1.contains(&token));
    }
    let log = s.stop();
    assert!(log.contains("admin API listening"), "{log}");
    assert!(!log.contains(&token), "the token leaked into the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_constraints_answer_409_and_tokens_come_from_config_or_env() {
    let (dns, _origin) = world().await;
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("requirements.toml");
    std::fs::write(
        &req,
        "[network]\nmode = \"limited\"\nallowed_domains = [\"api.test\"]\nmanaged_allowed_domains_only = true\n",
    )
    .unwrap();
    let s = start(
        &dns,
        &["--requirements", req.to_str().unwrap()],
        "",
        &[("NETPROXY_ADMIN_TOKEN", "from-env-123")],
    );
    let t = Some("from-env-123");
    assert!(!s.dir.path().join("home/admin.token").exists());
    let (c, body) = admin(&s, t, "POST", "/mode", Some(r#"{"mode":"full"}"#));
    assert_eq!(c, 409, "{body}");
    assert_eq!(json(&body)["reason"], "constraint");
    let (c, _) = admin(&s, t, "GET", "/patterns", None);
    assert_eq!(c, 200);
    drop(s);

    let s = start(
        &dns,
        &[],
        "[network]\nadmin_token = \"from-config-456\"\n",
        &[("NETPROXY_ADMIN_TOKEN", "from-env-123")],
    );
    assert_eq!(
        admin(&s, Some("from-env-123"), "GET", "/patterns", None).0,
        401
    );
    assert_eq!(
        admin(&s, Some("from-config-456"), "GET", "/patterns", None).0,
        200
    );
    let (_, body) = admin(&s, Some("from-config-456"), "GET", "/config", None);
    assert!(!body.contains("from-config-456"), "{body}");
}

/// `netproxy serve ARGS` that is expected to fail at start: (exit code, stderr, whether the
/// ready file was written).
fn serve_failing(args: &[String]) -> (Option<i32>, String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let out = Command::new(env!("CARGO_BIN_EXE_netproxy"))
        .args(["serve", "--no-socks", "--http", "127.0.0.1:0"])
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        .env_clear()
        .env("NETPROXY_HOME", dir.path().join("home"))
        .env("NETPROXY_SYSTEM_DIR", dir.path().join("system"))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        ready.exists(),
    )
}

#[test]
fn a_busy_admin_port_stops_the_start() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (code, err, ready) =
        serve_failing(&["--admin".into(), busy.local_addr().unwrap().to_string()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot bind the admin API listener"), "{err}");
    assert!(!ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_has_one_line_per_decision_and_follows_rotation() {
    let (dns, origin) = world().await;
    let port = origin.addr().port();
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("audit.jsonl");
    let s = start(
        &dns,
        &["--allow", "api.test", "--deny", "other.test"],
        &format!("[network]\naudit_log = {:?}\n", path.display().to_string()),
        &[],
    );
    assert_eq!(
        through(&s, &[&format!("http://api.test:{port}/a?secret=1")]),
        "200"
    );
    assert_eq!(
        through(&s, &["-p", &format!("http://api.test:{port}/b")]),
        "200"
    );
    assert_eq!(
        through(&s, &[&format!("http://other.test:{port}/c")]),
        "403"
    );
    assert_eq!(through(&s, &[&format!("http://10.1.2.3:{port}/d")]), "403");
    let read = |p: &std::path::Path, n: usize| -> Vec<serde_json::Value> {
        let begin = Instant::now();
        loop {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(begin.elapsed() < Duration::from_secs(10), "{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let lines = read(&path, 4);
    assert_eq!(lines.len(), 4);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let want = [
        (
            "http",
            "GET",
            "api.test",
            "allow",
            "allow",
            "baseline_policy",
        ),
        (
            "https_connect",
            "CONNECT",
            "api.test",
            "allow",
            "allow",
            "baseline_policy",
        ),
        (
            "http",
            "GET",
            "other.test",
            "deny",
            "denied",
            "baseline_policy",
        ),
        (
            "http",
            "GET",
            "10.1.2.3",
            "deny",
            "not_allowed_local",
            "baseline_policy",
        ),
    ];
    for (line, (proto, method, host, decision, reason, source)) in lines.iter().zip(want) {
        assert_eq!(line["event.name"], "netproxy.policy_decision");
        assert_eq!(line["network.transport.protocol"], proto, "{line}");
        assert_eq!(line["http.request.method"], method, "{line}");
        assert_eq!(line["server.address"], host, "{line}");
        assert_eq!(line["server.port"], port, "{line}");
        assert_eq!(line["network.policy.decision"], decision, "{line}");
        assert_eq!(line["network.policy.reason"], reason, "{line}");
        assert_eq!(line["network.policy.source"], source, "{line}");
        assert_eq!(line["network.policy.scope"], "domain", "{line}");
        assert_eq!(line["network.policy.override"], false, "{line}");
        assert!(
            line["client.address"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{line}"
        );
        assert_eq!(line["event.timestamp"].as_str().unwrap().len(), 24);
    }
    assert_eq!(lines[0]["network.policy.rule"], "api.test");
    assert_eq!(lines[0]["network.policy.layer"], "command-line");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("secret") && !text.contains("/a"), "{text}");

    // Rotation: move the file away, SIGHUP, and a new file is there at once (no event needed),
    // private too; the next decision goes to it.
    let rotated = logs.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    let ok = Command::new("kill")
        .args(["-HUP", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let begin = Instant::now();
    while !path.exists() {
        assert!(begin.elapsed() < Duration::from_secs(10), "not reopened");
        std::thread::sleep(Duration::from_millis(20));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        through(&s, &[&format!("http://other.test:{port}/e")]),
        "403"
    );
    let fresh = read(&path, 1);
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0]["server.address"], "other.test");
    assert_eq!(read(&rotated, 4).len(), 4);
    s.stop();
}

/// A full disk (`/dev/full` fails every write): requests still go through, the lost events
/// are counted in the metrics, and the outage is logged once, not per write.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_on_a_full_disk_counts_its_losses_and_says_so_once() {
    let (dns, origin) = world().await;
    let port = origin.addr().port();
    let s = start(
        &dns,
        &["--allow", "api.test"],
        "[network]\naudit_log = \"/dev/full\"\n",
        &[],
    );
    for _ in 0..5 {
        assert_eq!(through(&s, &[&format!("http://api.test:{port}/")]), "200");
    }
    let token = token_file(&s);
    let begin = Instant::now();
    loop {
        let (_, metrics) = admin(&s, Some(&token), "GET", "/metrics", None);
        if metrics.contains("netproxy_audit_export_dropped_total 5") {
            break;
        }
        assert!(begin.elapsed() < Duration::from_secs(10), "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = s.stop();
    assert_eq!(
        err.matches("audit events are being lost until this sink works again")
            .count(),
        1,
        "{err}"
    );
    assert!(err.contains("sink=/dev/full"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("the audit sink stopped while losing events"),
        "{err}"
    );
}

/// Voluntary context switches of each thread of `pid`, by thread name.
#[cfg(target_os = "linux")]
fn wakeups(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut by_name = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let switches = std::fs::read_to_string(task.join("status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        *by_name.entry(name.trim().to_owned()).or_insert(0) += switches;
    }
    by_name
}

/// An idle proxy leaves its log and audit threads asleep (they used to wake every 20 ms and
/// every 500 ms): a laptop running it all day should not pay for it.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_proxy_does_not_wake_its_log_and_audit_threads() {
    let (dns, origin) = world().await;
    let port = origin.addr().port();
    let logs = tempfile::tempdir().unwrap();
    let (endpoint, _) = collector(false).await;
    let config = format!(
        "[network]\naudit_log = {:?}\n[otel]\nexporter = \"otlp-http\"\nendpoint = {endpoint:?}\n",
        logs.path().join("audit.jsonl").display().to_string()
    );
    let s = start(&dns, &["--allow", "api.test"], &config, &[]);
    // Some work first, so that every thread has run; then quiet: wait until the counts stop
    // moving (a thread that polls never lets them, and fails below).
    assert_eq!(through(&s, &[&format!("http://api.test:{port}/")]), "200");
    // The three threads' wake-ups (thread names are cut to 15 bytes).
    let watched = |pid: u32| -> Vec<(String, u64)> {
        let all = wakeups(pid);
        ["netproxy-log", "netproxy-audit-log", "netproxy-otlp"]
            .iter()
            .map(|t| {
                let name: String = t.chars().take(15).collect();
                let n = *all
                    .get(&name)
                    .unwrap_or_else(|| panic!("no thread {name}: {all:?}"));
                (name, n)
            })
            .collect()
    };
    let begin = Instant::now();
    let mut before = watched(s.child.id());
    while begin.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = watched(s.child.id());
        if now == before {
            break;
        }
        before = now;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = watched(s.child.id());
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        // At most one stray wake-up in two seconds (a 20 ms poll would make a hundred).
        assert!(a - b <= 1, "{name}: {before:?} -> {after:?}");
    }
    s.stop();
}

#[test]
fn an_audit_log_that_cannot_be_opened_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/audit.jsonl");
    let (code, err, ready) = serve_failing(&[
        "--no-admin".into(),
        "-c".into(),
        format!("audit_log={:?}", path.display().to_string()),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot open the audit log"), "{err}");
    assert!(!ready);
}

/// An OTLP/HTTP collector on loopback that decodes each export and records the server
/// address of every log record; with `hang`, it accepts and never answers.
async fn collector(hang: bool) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/v1/logs",
        axum::routing::post(move |body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                let req = <ExportLogsServiceRequest as prost::Message>::decode(body).unwrap();
                for r in &req.resource_logs {
                    let service = r.resource.as_ref().unwrap().attributes.iter().any(|kv| {
                        kv.key == "service.name"
                            && matches!(kv.value.as_ref().and_then(|v| v.value.clone()),
                                    Some(Value::StringValue(ref n)) if n == "netproxy")
                    });
                    assert!(service);
                    for l in r.scope_logs.iter().flat_map(|sl| &sl.log_records) {
                        let host = l.attributes.iter().find(|kv| kv.key == "server.address");
                        if let Some(Value::StringValue(h)) =
                            host.and_then(|kv| kv.value.as_ref().and_then(|v| v.value.clone()))
                        {
                            s.lock().unwrap().push(h);
                        }
                    }
                }
                Vec::<u8>::new()
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_exported_over_otlp_and_a_hung_collector_delays_nothing() {
    let (dns, origin) = world().await;
    let port = origin.addr().port();
    let (endpoint, seen) = collector(false).await;
    let config = format!("[otel]\nexporter = \"otlp-http\"\nendpoint = {endpoint:?}\n");
    let s = start(&dns, &["--allow", "api.test"], &config, &[]);
    for _ in 0..5 {
        assert_eq!(through(&s, &[&format!("http://api.test:{port}/")]), "200");
    }
    assert_eq!(through(&s, &[&format!("http://other.test:{port}/")]), "403");
    let begin = Instant::now();
    while seen.lock().unwrap().len() < 6 {
        assert!(
            begin.elapsed() < Duration::from_secs(30),
            "{:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hosts = seen.lock().unwrap().clone();
    assert_eq!(
        hosts.iter().filter(|h| *h == "api.test").count(),
        5,
        "{hosts:?}"
    );
    assert_eq!(
        hosts.iter().filter(|h| *h == "other.test").count(),
        1,
        "{hosts:?}"
    );
    s.stop();

    // A collector that never answers: requests go through as usual, and the process still
    // stops (its export is bounded).
    let (endpoint, _) = collector(true).await;
    let config = format!("[otel]\nexporter = \"otlp-http\"\nendpoint = {endpoint:?}\n");
    let s = start(&dns, &["--allow", "api.test"], &config, &[]);
    for _ in 0..50 {
        assert_eq!(through(&s, &[&format!("http://api.test:{port}/")]), "200");
    }
    let token = token_file(&s);
    let (_, metrics) = admin(&s, Some(&token), "GET", "/metrics", None);
    assert!(
        metrics.contains("netproxy_audit_export_dropped_total 0"),
        "{metrics}"
    );
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_and_tunnel_metrics_follow_the_traffic() {
    let (dns, origin) = world().await;
    let port = origin.addr().port();
    let s = start(&dns, &["--allow", "api.test"], "", &[]);
    let token = token_file(&s);
    let body = "x".repeat(1000);
    assert_eq!(
        through(&s, &["-d", &body, &format!("http://api.test:{port}/up")]),
        "200"
    );
    assert_eq!(
        through(&s, &[&format!("http://api.test:{port}/bytes/5000")]),
        "200"
    );
    assert_eq!(
        through(&s, &["-p", &format!("http://api.test:{port}/bytes/3000")]),
        "200"
    );
    let value = |text: &str, series: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    };
    // The tunnel's bytes are added when it closes; give it a moment.
    let begin = Instant::now();
    loop {
        let (_, m) = admin(&s, Some(&token), "GET", "/metrics", None);
        let up = value(
            &m,
            "netproxy_bytes_total{protocol=\"http\",direction=\"up\"}",
        );
        let down = value(
            &m,
            "netproxy_bytes_total{protocol=\"http\",direction=\"down\"}",
        );
        if up >= 1000 && down >= 8000 {
            assert_eq!(value(&m, "netproxy_active_tunnels{protocol=\"http\"}"), 0);
            break;
        }
        assert!(
            begin.elapsed() < Duration::from_secs(10),
            "up {up} down {down}\n{m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_stays_on_loopback_unless_dangerously_allowed() {
    let (dns, _origin) = world().await;
    let s = start_at(&dns, "0.0.0.0:0", &[], "", &[]);
    let admin = s.admin.clone();
    let err = s.stop();
    assert!(admin.starts_with("127.0.0.1:"), "{admin}");
    assert!(
        err.contains("dangerously_allow_non_loopback_admin"),
        "{err}"
    );
}
