//! Addresses through the real `netproxy` binary: local binding (`*` admits loopback, deny still
//! wins, on resolved addresses too), and the machine's own addresses, followed live in a
//! network namespace of their own where an address is added to `lo` while netproxy runs.
//!
//! Network safety: traffic goes to 127.0.0.0/8 only. In the namespace test, 203.0.113.7 lives
//! on the namespace's `lo` and is never dialled: only refusals and `check` answers (which never
//! dial) are asserted.
#![allow(clippy::unwrap_used)]
// A skipped test says why on stderr.
#![allow(clippy::print_stderr)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use proxy_test_support::{Answer, DnsServer, HttpOrigin};

/// `netproxy ARGS` with a clean environment and its own home; (exit code, stdout, stderr).
fn netproxy(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_netproxy"))
        .args(args)
        .env_clear()
        .env("NETPROXY_HOME", home.join("home"))
        .env("NETPROXY_SYSTEM_DIR", home.join("system"))
        .output()
        .unwrap();
    text(&out)
}

fn text(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn check_under_local_binding_lets_star_admit_loopback_and_deny_win() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = netproxy(
        dir.path(),
        &[
            "check",
            "--json",
            "--allow",
            "*",
            "--allow-local-binding",
            "http://127.0.0.1:8080/",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["rule"]["pattern"], "*");
    for target in ["http://127.0.0.1:8080/", "http://[::ffff:127.0.0.1]:8080/"] {
        let (code, out, err) = netproxy(
            dir.path(),
            &[
                "check",
                "--json",
                "--allow",
                "*",
                "--deny",
                "127.0.0.1",
                "--allow-local-binding",
                target,
            ],
        );
        assert_eq!(code, 1, "{out}{err}");
        assert_eq!(json(&out)["reason"], "denied", "{target}");
    }
    // Without local binding, `*` never admits a loopback literal.
    let (code, out, _) = netproxy(
        dir.path(),
        &["check", "--json", "--allow", "*", "http://127.0.0.1:8080/"],
    );
    assert_eq!(code, 1);
    assert_eq!(json(&out)["reason"], "not_allowed_local");
}

fn curl(proxy: &str, url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "10", "-x"])
        .arg(format!("http://{proxy}"))
        .args(["-w", "\n%{http_code}", url])
        .env_clear()
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = t.rsplit_once('\n').unwrap_or(("", &t));
    (code.to_owned(), body.to_owned())
}

struct Serve {
    child: Child,
    http: String,
    admin: Option<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `netproxy serve` (through `wrap`, e.g. `nsenter`, when given), waiting for its ready file.
fn serve(wrap: &[String], args: &[&str], config: &str) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let cfg = dir.path().join("netproxy.toml");
    std::fs::write(&cfg, config).unwrap();
    let bin = env!("CARGO_BIN_EXE_netproxy").to_owned();
    let (program, pre): (&str, Vec<String>) = match wrap.split_first() {
        Some((p, rest)) => (p.as_str(), rest.iter().cloned().chain([bin]).collect()),
        None => (bin.as_str(), Vec::new()),
    };
    let mut child = Command::new(program)
        .args(pre)
        .args([
            "serve",
            "--no-socks",
            "--http",
            "127.0.0.1:0",
            "--ready-file",
        ])
        .arg(&ready)
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .env_clear()
        .env("NETPROXY_HOME", dir.path().join("home"))
        .env("NETPROXY_SYSTEM_DIR", dir.path().join("system"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let begin = Instant::now();
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("netproxy serve exited early: {status}");
        }
        assert!(begin.elapsed() < Duration::from_secs(30), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let v = json(&std::fs::read_to_string(&ready).unwrap());
    Serve {
        child,
        http: v["http"].as_str().unwrap().to_owned(),
        admin: v["admin"].as_str().map(str::to_owned),
        _dir: dir,
    }
}

/// Under local binding `*` reaches a loopback origin, by literal and by a name; a deny entry
/// for its address still wins, over the literal and over a name resolving to it (403
/// `denied`), before any dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_under_local_binding_lets_star_reach_loopback_and_deny_wins() {
    let dns = DnsServer::start().await.unwrap();
    let ok = HttpOrigin::start("local-ok", "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let other = HttpOrigin::start("other", "127.0.0.3".parse().unwrap())
        .await
        .unwrap();
    dns.set(
        "dev.test",
        Answer::Addrs(vec!["127.0.0.1".parse().unwrap()]),
    );
    dns.set(
        "other.test",
        Answer::Addrs(vec!["127.0.0.3".parse().unwrap()]),
    );
    let ns = format!("dns.nameservers=[\"{}\"]", dns.addr());
    let (port, other_port) = (ok.addr().port(), other.addr().port());

    let s = tokio::task::spawn_blocking({
        let ns = ns.clone();
        move || {
            serve(
                &[],
                &[
                    "--no-admin",
                    "--allow",
                    "*",
                    "--allow-local-binding",
                    "-c",
                    &ns,
                ],
                "",
            )
        }
    })
    .await
    .unwrap();
    let http = s.http.clone();
    let (code, body) =
        tokio::task::spawn_blocking(move || curl(&http, &format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap();
    assert_eq!(code, "200", "{body}");
    assert_eq!(ok.seen().len(), 1);
    let http = s.http.clone();
    let (code, body) =
        tokio::task::spawn_blocking(move || curl(&http, &format!("http://dev.test:{port}/")))
            .await
            .unwrap();
    assert_eq!(code, "200", "{body}");
    drop(s);

    let s = tokio::task::spawn_blocking(move || {
        serve(
            &[],
            &[
                "--no-admin",
                "--allow",
                "*",
                "--deny",
                "127.0.0.1",
                "--allow-local-binding",
                "-c",
                &ns,
            ],
            "",
        )
    })
    .await
    .unwrap();
    let before = ok.seen().len();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://dev.test:{port}/"),
        format!("http://localhost:{port}/"),
    ] {
        let http = s.http.clone();
        let u = url.clone();
        let (code, body) = tokio::task::spawn_blocking(move || curl(&http, &u))
            .await
            .unwrap();
        assert_eq!(code, "403", "{url}: {body}");
        assert_eq!(json(&body)["reason"], "denied", "{url}: {body}");
    }
    assert_eq!(ok.seen().len(), before, "a denied target was reached");
    let http = s.http.clone();
    let (code, body) = tokio::task::spawn_blocking(move || {
        curl(&http, &format!("http://other.test:{other_port}/"))
    })
    .await
    .unwrap();
    assert_eq!(code, "200", "{body}");
}

/// A network namespace of this test's own, held by a `sleep` that `unshare -n` started in it.
struct Netns {
    holder: Child,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

impl Netns {
    /// A fresh namespace, or `None` (with a note) when this is not root or `unshare` fails.
    fn new() -> Option<Self> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("note: skipped: the namespace test needs root");
            return None;
        }
        let Ok(holder) = Command::new("unshare")
            .args(["-n", "sleep", "600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            eprintln!("note: skipped: unshare is not available");
            return None;
        };
        let mut ns = Self { holder };
        // Never act on the test's own namespace: wait until the holder is in a new one.
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let theirs = format!("/proc/{}/ns/net", ns.holder.id());
        let begin = Instant::now();
        loop {
            if let Some(status) = ns.holder.try_wait().unwrap() {
                eprintln!("note: skipped: unshare -n failed ({status})");
                return None;
            }
            if std::fs::read_link(&theirs).is_ok_and(|l| l != own) {
                break;
            }
            assert!(begin.elapsed() < Duration::from_secs(10), "unshare -n hung");
            std::thread::sleep(Duration::from_millis(5));
        }
        let ok = ns.run(&["ip", "link", "set", "lo", "up"]);
        assert_eq!(ok.0, 0, "ip link set lo up: {}", ok.2);
        Some(ns)
    }

    /// The prefix that runs a program inside the namespace.
    fn enter(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            "-t".into(),
            self.holder.id().to_string(),
            "-n".into(),
            "--".into(),
        ]
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(&self.enter()[1..]).arg(program);
        cmd
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args[0]).args(&args[1..]).output().unwrap();
        text(&out)
    }
}

/// While local protection is on, an address added to one of the machine's interfaces while
/// netproxy runs becomes local at once: `*` and `treat_as_public` no longer admit it, by
/// literal or through a name resolving to it (403 `not_allowed_local`); removed, it is judged
/// as before. Only an explicit literal admits it (`netproxy check`, which never dials).
#[test]
fn an_address_added_to_lo_while_running_is_local() {
    let Some(ns) = Netns::new() else { return };
    let token = "own-addresses-test-token";
    let s = serve(
        &ns.enter(),
        &[
            "--admin",
            "127.0.0.1:0",
            "--allow",
            "*",
            "-c",
            "treat_as_public=[\"203.0.113.0/24\"]",
            "-c",
            "dns.hosts={\"own.test\" = [\"203.0.113.7\"]}",
        ],
        &format!("[network]\nadmin_token = \"{token}\"\n"),
    );
    let admin = s.admin.clone().unwrap();
    // The gate's judgement, from the admin API's /check (which never dials).
    let check = |url: &str| -> serde_json::Value {
        let (code, out, err) = ns.run(&[
            "curl",
            "-s",
            "-S",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "content-type: application/json",
            "--data-binary",
            &format!(r#"{{"url":"{url}"}}"#),
            &format!("http://{admin}/check"),
        ]);
        assert_eq!(code, 0, "{err}");
        json(&out)
    };
    let wait_for = |url: &str, reason: Option<&str>| {
        let begin = Instant::now();
        loop {
            let v = check(url);
            if v["reason"].as_str() == reason {
                return v;
            }
            assert!(
                begin.elapsed() < Duration::from_secs(30),
                "{url} never became {reason:?}: {v}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let literal = "http://203.0.113.7:8080/";
    let name = "http://own.test:8080/";
    // Not an address of the machine yet: treat_as_public admits it (asked, never dialled).
    assert_eq!(check(literal)["decision"], "allow");
    assert_eq!(check(name)["decision"], "allow");

    let added = ns.run(&["ip", "addr", "add", "203.0.113.7/32", "dev", "lo"]);
    assert_eq!(added.0, 0, "ip addr add: {}", added.2);
    let v = wait_for(literal, Some("not_allowed_local"));
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("address of this machine"),
        "{v}"
    );
    assert_eq!(check(name)["reason"], "not_allowed_local");

    // Requests through the proxy are refused before any dial.
    for url in [literal, name] {
        let (code, out, err) = ns.run(&[
            "curl",
            "-s",
            "-S",
            "--max-time",
            "10",
            "-x",
            &format!("http://{}", s.http),
            "-w",
            "\n%{http_code}",
            url,
        ]);
        assert_eq!(code, 0, "{err}");
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, "403", "{url}: {body}");
        let v = json(body);
        assert_eq!(v["reason"], "not_allowed_local", "{url}: {body}");
        assert_eq!(v["status"], "blocked");
    }

    // `netproxy check` judges with the same addresses; only an explicit literal admits one.
    let home = tempfile::tempdir().unwrap();
    let np = env!("CARGO_BIN_EXE_netproxy");
    let env_home = format!("NETPROXY_HOME={}", home.path().join("home").display());
    let env_sys = format!(
        "NETPROXY_SYSTEM_DIR={}",
        home.path().join("system").display()
    );
    let in_ns = |args: &[&str]| {
        let mut all = vec!["env", "-i", env_home.as_str(), env_sys.as_str(), np];
        all.extend_from_slice(args);
        ns.run(&all)
    };
    let (code, out, err) = in_ns(&[
        "check",
        "--json",
        "--allow",
        "*",
        "-c",
        "treat_as_public=[\"203.0.113.0/24\"]",
        literal,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(json(&out)["reason"], "not_allowed_local");
    let (code, out, err) = in_ns(&["check", "--json", "--allow", "203.0.113.7", literal]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["decision"], "allow");

    // Removed from the machine, the address is judged as before.
    let removed = ns.run(&["ip", "addr", "del", "203.0.113.7/32", "dev", "lo"]);
    assert_eq!(removed.0, 0, "ip addr del: {}", removed.2);
    wait_for(literal, Some("allow"));
    assert_eq!(check(name)["decision"], "allow");
}

/// An open tunnel to an address that becomes one of the machine's own while it is open is
/// closed (revoked, `not_allowed_local`): `treat_as_public` admitted 127.0.0.2 while it was not
/// an address of an interface; adding it to `lo` makes it local.
#[test]
fn a_tunnel_to_an_address_that_becomes_the_machines_own_is_closed() {
    let Some(ns) = Netns::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let s = serve(
        &ns.enter(),
        &[
            "--allow",
            "*",
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "-c",
            &format!("audit_log={:?}", audit.to_string_lossy()),
        ],
        "",
    );
    // Inside the namespace: an echo server on 127.0.0.2, a CONNECT tunnel to it through the
    // proxy; after a line on stdin, whether the proxy closes the tunnel.
    let script = r#"
import socket, sys, threading
srv = socket.socket(); srv.bind(("127.0.0.2", 0)); srv.listen(4)
port = srv.getsockname()[1]
def echo():
    while True:
        c, _ = srv.accept()
        def one(c=c):
            while True:
                d = c.recv(4096)
                if not d: break
                c.sendall(d)
        threading.Thread(target=one, daemon=True).start()
threading.Thread(target=echo, daemon=True).start()
host, p = sys.argv[1].rsplit(":", 1)
t = socket.create_connection((host, int(p)))
t.sendall(f"CONNECT 127.0.0.2:{port} HTTP/1.1\r\nHost: 127.0.0.2:{port}\r\n\r\n".encode())
head = b""
while not head.endswith(b"\r\n\r\n"):
    head += t.recv(1)
assert head.startswith(b"HTTP/1.1 200"), head
t.sendall(b"ping"); assert t.recv(4) == b"ping"
print("ready", flush=True)
sys.stdin.readline()
t.settimeout(10)
try:
    print("closed" if t.recv(16) == b"" else "open", flush=True)
except socket.timeout:
    print("open", flush=True)
except ConnectionError:
    print("closed", flush=True)
"#;
    let mut py = ns
        .command("python3")
        .args(["-c", script, &s.http])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let added = ns.run(&["ip", "addr", "add", "127.0.0.2/32", "dev", "lo"]);
    assert_eq!(added.0, 0, "ip addr add: {}", added.2);
    std::io::Write::write_all(py.stdin.as_mut().unwrap(), b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let _ = py.wait();
    assert_eq!(line.trim(), "closed", "the tunnel stayed open");
    let begin = Instant::now();
    let revoked = loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("network.policy.revoked")) {
            break json(l);
        }
        assert!(
            begin.elapsed() < Duration::from_secs(30),
            "no revocation: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(revoked["network.policy.reason"], "not_allowed_local");
    assert_eq!(revoked["server.address"], "127.0.0.2");
}
