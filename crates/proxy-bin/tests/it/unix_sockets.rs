//! `x-unix-socket` requests through the real `netproxy serve` process: only allowed sockets are
//! reached, the socket connected is the socket judged (symlinks, swapped folders, restarts),
//! and a web page rebound to 127.0.0.1 cannot reach one.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proxy_test_support::{Curl, CurlOutput, DnsServer};

use crate::support::{Serve, serve, wait_audit_line};

/// An HTTP/1.1 server on a unix socket that counts the requests it reads and answers each
/// (closing after the response) with `answer`, or, without one, with the request line and
/// whether an `x-unix-socket` header reached it.
struct UnixServer {
    requests: Arc<AtomicUsize>,
}

impl UnixServer {
    fn start(path: &Path, answer: Option<&'static str>) -> Self {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream);
                let mut head = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                    head.push(h);
                }
                count.fetch_add(1, Ordering::SeqCst);
                let body = answer.map_or_else(
                    || {
                        let line = head.first().map_or("", |l| l.trim_end());
                        let leaked = head
                            .iter()
                            .skip(1)
                            .any(|h| h.to_ascii_lowercase().starts_with("x-unix-socket"));
                        format!("{line} leaked={leaked}")
                    },
                    str::to_owned,
                );
                let _ = write!(
                    reader.into_inner(),
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// An `x-unix-socket: SOCKET` request for `url` through the proxy.
fn ask(s: &Serve, socket: &str, url: &str) -> CurlOutput {
    s.curl().header(format!("x-unix-socket: {socket}")).get(url)
}

/// An `x-unix-socket` request for `socket` through the proxy: status and everything curl said.
fn ask_unix(s: &Serve, socket: &Path) -> (u16, String) {
    let r = ask(s, &socket.display().to_string(), "http://localhost/");
    (r.status, r.text())
}

/// The config that allows `sockets`.
fn unix_socket_config(sockets: &[&Path]) -> String {
    let mut config = "[network.unix_sockets]\n".to_owned();
    for s in sockets {
        config.push_str(&format!("{:?} = \"allow\"\n", s.display().to_string()));
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_unix_socket_requests_reach_allowed_sockets_only() {
    let dns = DnsServer::start().await.unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let real = sockets.path().join("api.sock");
    let _origin = UnixServer::start(&real, None);
    let other = sockets.path().join("other.sock");
    let _other = UnixServer::start(&other, None);
    // A symlink to the allowed socket, and an allowed symlink to the other one.
    let link = sockets.path().join("link.sock");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let allowed_link = sockets.path().join("allowed-link.sock");
    std::os::unix::fs::symlink(&other, &allowed_link).unwrap();
    let missing = sockets.path().join("missing.sock");
    let config = unix_socket_config(&[&real, &allowed_link, &missing]);
    let s = serve().dns(&dns).config(&config).start();
    let shown = |p: &Path| p.display().to_string();

    // Allowed as written: origin-form, the header removed.
    let r = ask(&s, &shown(&real), "http://localhost/v1.41/info?all=1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "GET /v1.41/info?all=1 HTTP/1.1 leaked=false");
    // Through a symlink to an allowed socket, and to the target of an allowed symlink.
    let r = ask(&s, &shown(&link), "http://localhost/via-link");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("GET /via-link "), "{}", r.text());
    let r = ask(&s, &shown(&other), "http://localhost/real-of-allowed-link");
    assert_eq!(r.status, 200, "{}", r.text());
    // Not allowed, relative, and allowed but missing.
    let stranger = sockets.path().join("stranger.sock");
    let _stranger = UnixServer::start(&stranger, None);
    for (socket, want, reason) in [
        (shown(&stranger), 403, "not_allowed"),
        ("api.sock".to_owned(), 403, "not_allowed"),
        (shown(&missing), 502, "connect_failed"),
    ] {
        let r = ask(&s, &socket, "http://localhost/");
        let body = r.text();
        assert_eq!(r.status, want, "{socket}: {body}");
        assert!(
            body.contains(&format!("\"reason\":\"{reason}\"")),
            "{socket}: {body}"
        );
        if want == 403 {
            assert!(body.contains("\"host\":\"unix-socket\""), "{body}");
        }
    }
    // Limited mode judges the method first.
    drop(s);
    let s = serve()
        .dns(&dns)
        .args(&["--mode", "limited"])
        .config(&config)
        .start();
    let r = s
        .curl()
        .args(["-X", "POST"])
        .header(format!("x-unix-socket: {}", shown(&real)))
        .get("http://localhost/");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("\"reason\":\"method_not_allowed\""),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_web_page_cannot_reach_an_allowed_unix_socket() {
    let dns = DnsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let server = UnixServer::start(&socket, Some("A"));
    let audit = dir.path().join("audit.jsonl");
    let config = format!(
        "[network]\naudit_log = {:?}\n{}",
        audit.display().to_string(),
        unix_socket_config(&[&socket]),
    );
    let s = serve().dns(&dns).config(&config).start();
    let port = s.http.rsplit_once(':').unwrap().1.to_owned();
    let unix = format!("x-unix-socket: {}", socket.display());
    // curl straight at the proxy's port (origin-form, no `-x`), the way a web page whose name
    // was rebound to 127.0.0.1 reaches it: the status and the response head and body.
    let ask = |headers: &[&str]| {
        let mut curl = Curl::new().arg("-i").header(&unix);
        for h in headers {
            curl = curl.header(h);
        }
        let r = curl.get(format!("http://{}/v1.41/containers/json", s.http));
        (r.status, r.text())
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
        assert_eq!(code, 403, "{headers:?}: {text}");
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
    let line = wait_audit_line(&audit, "the refusal's audit line", |v| {
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
        assert_eq!(code, 200, "{headers:?}: {text}");
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
    let a = UnixServer::start(&allowed, Some("A"));
    let b_path = d.join("b.sock");
    let b = UnixServer::start(&b_path, Some("B"));
    std::fs::create_dir(d.join("run")).unwrap();
    std::os::unix::fs::symlink(d.join("run"), d.join("var-run")).unwrap();
    let c_path = d.join("run").join("docker.sock");
    let c = UnixServer::start(&c_path, Some("C"));
    let c_entry = d.join("docker.sock");
    std::os::unix::fs::symlink(d.join("var-run").join("docker.sock"), &c_entry).unwrap();
    let s = serve()
        .dns(&dns)
        .config(&unix_socket_config(&[&allowed, &c_entry]))
        .start();
    let answer = |body: &str| (200, body.to_owned());

    assert_eq!(ask_unix(&s, &allowed), answer("A"));
    // The symlinked entry keeps working, as written and by its real path.
    assert_eq!(ask_unix(&s, &c_entry), answer("C"));
    assert_eq!(ask_unix(&s, &c_path), answer("C"));
    // B is not allowed.
    let (code, body) = ask_unix(&s, &b_path);
    assert_eq!(code, 403, "{body}");

    // The daemon restarts: its socket is recreated at the same path (a new inode).
    std::fs::remove_file(&c_path).unwrap();
    let c2 = UnixServer::start(&c_path, Some("C2"));
    assert_eq!(ask_unix(&s, &c_entry), answer("C2"));
    assert_eq!(c.requests() + c2.requests(), 3);

    // The child swaps the allowed path for a symlink to B: refused, through the allowed path
    // and directly, and nothing reaches B.
    std::fs::remove_file(&allowed).unwrap();
    std::os::unix::fs::symlink(&b_path, &allowed).unwrap();
    assert_not_allowed(&s, &[&allowed, &b_path]);
    // The same through the symlinked entry: pointed at B, it is no longer the allowed socket.
    std::fs::remove_file(&c_entry).unwrap();
    std::os::unix::fs::symlink(&b_path, &c_entry).unwrap();
    let (code, body) = ask_unix(&s, &c_entry);
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        b.requests(),
        0,
        "a request reached the socket that is not allowed"
    );
    assert_eq!(a.requests(), 1);
    // A regular file where the socket was is refused too.
    std::fs::remove_file(&allowed).unwrap();
    std::fs::write(&allowed, "not a socket").unwrap();
    let (code, body) = ask_unix(&s, &allowed);
    assert_eq!(code, 403, "{body}");
}

/// Requests for each of `sockets` are refused as `not_allowed`.
fn assert_not_allowed(s: &Serve, sockets: &[&Path]) {
    for socket in sockets {
        let (code, body) = ask_unix(s, socket);
        assert_eq!(code, 403, "{}: {body}", socket.display());
        assert!(body.contains("\"reason\":\"not_allowed\""), "{body}");
    }
}

/// A folder `T/base/d` holding the allowed socket ("A", at `T/base/d/allowed.sock`), a socket
/// of the same name the child should never reach ("SECRET", at `T/secretdir/allowed.sock`),
/// and `netproxy serve` (`args` added) allowing the first, which it reaches.
struct Swap {
    _dns: DnsServer,
    dir: tempfile::TempDir,
    allowed: PathBuf,
    a: UnixServer,
    secret: UnixServer,
    s: Serve,
}

impl Swap {
    async fn start(args: &[&str]) -> Self {
        let dns = DnsServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        std::fs::create_dir_all(t.join("base").join("d")).unwrap();
        std::fs::create_dir(t.join("secretdir")).unwrap();
        let allowed = t.join("base").join("d").join("allowed.sock");
        let a = UnixServer::start(&allowed, Some("A"));
        let secret = UnixServer::start(&t.join("secretdir").join("allowed.sock"), Some("SECRET"));
        let s = serve()
            .dns(&dns)
            .args(args)
            .config(&unix_socket_config(&[&allowed]))
            .start();
        assert_eq!(ask_unix(&s, &allowed), (200, "A".to_owned()));
        Self {
            _dns: dns,
            dir,
            allowed,
            a,
            secret,
            s,
        }
    }

    /// What a child that can write `T/base` does: `mv base/d base/d.real; ln -s T/secretdir
    /// base/d`, so that the allowed path now leads, through its folder, to SECRET.
    fn swap_folder_for_symlink(&self) {
        let base = self.dir.path().join("base");
        std::fs::rename(base.join("d"), base.join("d.real")).unwrap();
        std::os::unix::fs::symlink(self.dir.path().join("secretdir"), base.join("d")).unwrap();
    }

    /// Requests for the allowed path and for SECRET directly are refused, and none reached
    /// SECRET.
    fn assert_secret_unreached(&self) {
        let direct = self.dir.path().join("secretdir").join("allowed.sock");
        assert_not_allowed(&self.s, &[&self.allowed, &direct]);
        assert_eq!(
            self.secret.requests(),
            0,
            "a request reached the socket that is not allowed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_of_an_allowed_socket_swapped_for_a_symlink_is_refused() {
    let w = Swap::start(&[]).await;
    // The last component is still a socket, not a symlink; a folder above it now is.
    w.swap_folder_for_symlink();
    w.assert_secret_unreached();

    // The folder put back: the allowed socket is reached again.
    let base = w.dir.path().join("base");
    std::fs::remove_file(base.join("d")).unwrap();
    std::fs::rename(base.join("d.real"), base.join("d")).unwrap();
    assert_eq!(ask_unix(&w.s, &w.allowed), (200, "A".to_owned()));
    assert_eq!(w.a.requests(), 2);
    assert_eq!(w.secret.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unrelated_admin_change_does_not_re_resolve_an_allowed_socket() {
    let w = Swap::start(&["--admin", "127.0.0.1:0"]).await;
    w.swap_folder_for_symlink();
    let (code, body) = ask_unix(&w.s, &w.allowed);
    assert_eq!(code, 403, "{body}");

    // The operator's next change has nothing to do with unix sockets; the files are re-read
    // with it, and the entry now leads to SECRET. It stays resolved where it was.
    let (code, body) =
        w.s.api(Some(&w.s.token()))
            .post("/domains", r#"{"allow":["unrelated.test"]}"#);
    assert_eq!(code, 200, "{body}");
    w.assert_secret_unreached();
    assert_eq!(w.a.requests(), 1);

    // The operator is told, once the change is made, that the entry would now resolve
    // elsewhere and was kept.
    let kept = std::fs::canonicalize(w.allowed.parent().unwrap().parent().unwrap())
        .unwrap()
        .join("d")
        .join("allowed.sock");
    let stderr = w.s.stop();
    let warning = stderr
        .lines()
        .find(|l| l.contains("now resolves to"))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(
        warning.contains("secretdir") && warning.contains(&kept.display().to_string()),
        "{warning}"
    );
}
