//! Addresses through the real `netproxy` binary: local binding (`*` admits loopback, deny still
//! wins, on resolved addresses too), and the machine's own addresses, followed live in a
//! network namespace of their own where an address is added to `lo` while netproxy runs.
//!
//! Network safety: traffic goes to 127.0.0.0/8 only. In the namespace test, 203.0.113.7 lives
//! on the namespace's `lo` and is never dialled: only refusals and `check` answers (which never
//! dial) are asserted.

use std::process::{Child, Command, Stdio};

use proxy_test_support::{Curl, DnsServer, HttpOrigin, wait_for};

use crate::support::{Home, Ran, json, ran, resolves, serve, wait_audit_line, wrapped};

#[test]
fn check_under_local_binding_lets_star_admit_loopback_and_deny_win() {
    let home = Home::new();
    let check = |args: &[&str]| {
        let r = home.run(args);
        (r.code, r.stdout, r.stderr)
    };
    let (code, out, err) = check(&[
        "check",
        "--json",
        "--allow",
        "*",
        "--allow-local-binding",
        "http://127.0.0.1:8080/",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["rule"]["pattern"], "*");
    for target in ["http://127.0.0.1:8080/", "http://[::ffff:127.0.0.1]:8080/"] {
        let (code, out, err) = check(&[
            "check",
            "--json",
            "--allow",
            "*",
            "--deny",
            "127.0.0.1",
            "--allow-local-binding",
            target,
        ]);
        assert_eq!(code, 1, "{out}{err}");
        assert_eq!(json(&out)["reason"], "denied", "{target}");
    }
    // Without local binding, `*` never admits a loopback literal.
    let (code, out, _) = check(&["check", "--json", "--allow", "*", "http://127.0.0.1:8080/"]);
    assert_eq!(code, 1);
    assert_eq!(json(&out)["reason"], "not_allowed_local");
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
    resolves(&dns, "dev.test", "127.0.0.1");
    resolves(&dns, "other.test", "127.0.0.3");
    let (port, other_port) = (ok.addr().port(), other.addr().port());

    let s = serve()
        .dns(&dns)
        .args(&["--no-admin", "--allow", "*", "--allow-local-binding"])
        .start();
    let r = s.get(&format!("http://127.0.0.1:{port}/"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ok.seen().len(), 1);
    let r = s.get(&format!("http://dev.test:{port}/"));
    assert_eq!(r.status, 200, "{}", r.body);
    drop(s);

    let s = serve()
        .dns(&dns)
        .args(&[
            "--no-admin",
            "--allow",
            "*",
            "--deny",
            "127.0.0.1",
            "--allow-local-binding",
        ])
        .start();
    let before = ok.seen().len();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://dev.test:{port}/"),
        format!("http://localhost:{port}/"),
    ] {
        let r = s.get(&url);
        assert_eq!(r.status, 403, "{url}: {}", r.body);
        assert_eq!(json(&r.body)["reason"], "denied", "{url}: {}", r.body);
    }
    assert_eq!(ok.seen().len(), before, "a denied target was reached");
    let r = s.get(&format!("http://other.test:{other_port}/"));
    assert_eq!(r.status, 200, "{}", r.body);
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
        let entered = wait_for("unshare -n", || {
            if let Some(status) = ns.holder.try_wait().unwrap() {
                return Ok(Err(status));
            }
            match std::fs::read_link(&theirs) {
                Ok(l) if l != own => Ok(Ok(())),
                other => Err(format!("{other:?}")),
            }
        });
        if let Err(status) = entered {
            eprintln!("note: skipped: unshare -n failed ({status})");
            return None;
        }
        let ok = ns.run(&["ip", "link", "set", "lo", "up"]);
        assert_eq!(ok.code, 0, "ip link set lo up: {}", ok.stderr);
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

    fn run(&self, args: &[&str]) -> Ran {
        let mut cmd = self.command(args[0]);
        cmd.args(&args[1..]);
        ran(cmd)
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
    let s = serve()
        .wrap(ns.enter())
        .admin()
        .args(&[
            "--allow",
            "*",
            "-c",
            "treat_as_public=[\"203.0.113.0/24\"]",
            "-c",
            "dns.hosts={\"own.test\" = [\"203.0.113.7\"]}",
        ])
        .config(&format!("[network]\nadmin_token = \"{token}\"\n"))
        .start();
    let api = s.api(Some(token));
    // The gate's judgement, from the admin API's /check (which never dials).
    let check = |url: &str| -> serde_json::Value {
        let body = format!(r#"{{"url":"{url}"}}"#);
        let r = api
            .curl_inside(&ns.enter(), "POST", "/check", Some(&body))
            .run();
        assert_eq!(r.status, 200, "{}", r.text());
        json(&r.body)
    };
    let judged = |url: &str, reason: Option<&str>| {
        wait_for(&format!("{url} judged {reason:?}"), || {
            let v = check(url);
            if v["reason"].as_str() == reason {
                Ok(v)
            } else {
                Err(v)
            }
        })
    };
    let literal = "http://203.0.113.7:8080/";
    let name = "http://own.test:8080/";
    // Not an address of the machine yet: treat_as_public admits it (asked, never dialled).
    assert_eq!(check(literal)["decision"], "allow");
    assert_eq!(check(name)["decision"], "allow");

    let added = ns.run(&["ip", "addr", "add", "203.0.113.7/32", "dev", "lo"]);
    assert_eq!(added.code, 0, "ip addr add: {}", added.stderr);
    let v = judged(literal, Some("not_allowed_local"));
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
        let r = Curl::inside(&ns.enter())
            .arg("-x")
            .arg(format!("http://{}", s.http))
            .get(url);
        assert_eq!(r.status, 403, "{url}: {}", r.text());
        let v = json(&r.body);
        assert_eq!(v["reason"], "not_allowed_local", "{url}: {}", r.body);
        assert_eq!(v["status"], "blocked");
    }

    // `netproxy check` judges with the same addresses; only an explicit literal admits one.
    let home = Home::new();
    let in_ns = |args: &[&str]| ran(wrapped(&ns.enter(), &home.command(args)));
    let r = in_ns(&[
        "check",
        "--json",
        "--allow",
        "*",
        "-c",
        "treat_as_public=[\"203.0.113.0/24\"]",
        literal,
    ]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(json(&r.stdout)["reason"], "not_allowed_local");
    let r = in_ns(&["check", "--json", "--allow", "203.0.113.7", literal]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(json(&r.stdout)["decision"], "allow");

    // Removed from the machine, the address is judged as before.
    let removed = ns.run(&["ip", "addr", "del", "203.0.113.7/32", "dev", "lo"]);
    assert_eq!(removed.code, 0, "ip addr del: {}", removed.stderr);
    judged(literal, Some("allow"));
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
    let s = serve()
        .wrap(ns.enter())
        .args(&[
            "--allow",
            "*",
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "-c",
            &format!("audit_log={:?}", audit.to_string_lossy()),
        ])
        .start();
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
    assert_eq!(added.code, 0, "ip addr add: {}", added.stderr);
    std::io::Write::write_all(py.stdin.as_mut().unwrap(), b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let _ = py.wait();
    assert_eq!(line.trim(), "closed", "the tunnel stayed open");
    let revoked = wait_audit_line(&audit, "the revocation", |v| {
        v.get("network.policy.revoked").is_some()
    });
    assert_eq!(revoked["network.policy.reason"], "not_allowed_local");
    assert_eq!(revoked["server.address"], "127.0.0.2");
}
