//! `netproxy run -- CMD` and `netproxy env` with real children: the environment, curl over
//! HTTP, CONNECT and SOCKS5, git over HTTP, exit codes, signals, stdin and stdout.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use proxy_test_support::{DnsServer, HttpOrigin, Process};

use crate::support::{
    AdminApi, Home, inotify_watches, json, public_origin, ran, resolves, wrapped,
};

/// `netproxy ARGS` run from `home`, with `env` added.
fn netproxy(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = home.command(args);
    cmd.envs(env.iter().copied());
    cmd
}

fn env_of(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn the_child_gets_the_proxy_environment_and_keeps_the_rest() {
    let home = Home::new();
    let out = ran(netproxy(
        &home,
        &["run", "--", "sh", "-c", "env"],
        &[
            ("HTTPS_PROXY", "http://corp.invalid:1"),
            ("no_proxy", "*"),
            ("Http_Proxy", "http://corp.invalid:2"),
            ("KEEP_ME", "yes"),
            ("NETPROXY_ADMIN_TOKEN", "secret"),
            ("NETPROXY_WORKER_THREADS", "1"),
            ("netproxy_active", "0"),
        ],
    ));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let env = env_of(&out.stdout);
    let http = get(&env, "HTTP_PROXY").unwrap().to_owned();
    assert!(http.starts_with("http://127.0.0.1:"), "{http}");
    for key in [
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "WS_PROXY",
        "WSS_PROXY",
        "npm_config_proxy",
        "YARN_HTTPS_PROXY",
        "PIP_PROXY",
        "BUNDLE_HTTP_PROXY",
        "DOCKER_HTTPS_PROXY",
    ] {
        assert_eq!(get(&env, key), Some(http.as_str()), "{key}");
    }
    let all = get(&env, "ALL_PROXY").unwrap();
    assert!(all.starts_with("socks5h://127.0.0.1:"), "{all}");
    assert_ne!(&all["socks5h://".len()..], &http["http://".len()..]);
    assert_eq!(get(&env, "all_proxy"), Some(all));
    assert_eq!(get(&env, "FTP_PROXY"), Some(all));
    assert_eq!(get(&env, "NO_PROXY"), Some(""));
    assert_eq!(get(&env, "no_proxy"), Some(""));
    assert_eq!(get(&env, "NODE_USE_ENV_PROXY"), Some("1"));
    assert_eq!(get(&env, "ELECTRON_GET_USE_PROXY"), Some("true"));
    assert_eq!(get(&env, "NETPROXY_ACTIVE"), Some("1"));
    assert_eq!(get(&env, "KEEP_ME"), Some("yes"));
    assert_eq!(get(&env, "Http_Proxy"), None);
    // netproxy's own configuration never reaches the child; only what netproxy sets does.
    let mut own: Vec<&str> = env
        .iter()
        .filter(|(k, _)| k.to_ascii_uppercase().starts_with("NETPROXY_"))
        .map(|(k, _)| k.as_str())
        .collect();
    own.sort_unstable();
    assert_eq!(own, ["NETPROXY_ACTIVE", "NETPROXY_ALLOW_LOCAL_BINDING"]);

    // With local binding, local targets bypass the proxy; without SOCKS, ALL_PROXY is HTTP.
    let out = ran(netproxy(
        &home,
        &[
            "run",
            "--allow-local-binding",
            "-c",
            "enable_socks5=false",
            "--",
            "sh",
            "-c",
            "env",
        ],
        &[],
    ));
    let env = env_of(&out.stdout);
    assert_eq!(get(&env, "ALL_PROXY"), get(&env, "HTTP_PROXY"));
    assert_eq!(
        get(&env, "NO_PROXY"),
        Some("localhost,127.0.0.1,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16")
    );
    assert_eq!(get(&env, "NETPROXY_ALLOW_LOCAL_BINDING"), Some("1"));
}

#[test]
fn two_runs_side_by_side_get_their_own_ports() {
    let home = Home::new();
    // Each child says where its proxies are, then waits for its stdin to close: both run at
    // once.
    let spawn = || {
        let mut cmd = netproxy(
            &home,
            &[
                "run",
                "--",
                "sh",
                "-c",
                "echo $HTTP_PROXY $ALL_PROXY; read line; true",
            ],
            &[],
        );
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        Process::spawn(cmd)
    };
    let (mut a, mut b) = (spawn(), spawn());
    let (a_said, b_said) = (stdout_lines(&mut a)(), stdout_lines(&mut b)());
    assert!(
        a_said.contains("127.0.0.1:") && b_said.contains("127.0.0.1:"),
        "{a_said} {b_said}"
    );
    assert_ne!(a_said, b_said);
    for mut p in [a, b] {
        drop(p.child().stdin.take());
        assert_eq!(p.finish().0, Some(0));
    }
}

#[test]
fn exit_codes_follow_the_child() {
    let home = Home::new();
    let code = |args: &[&str]| {
        let out = ran(netproxy(&home, args, &[]));
        (Some(out.code), out.stderr)
    };
    assert_eq!(code(&["run", "--", "sh", "-c", "exit 7"]).0, Some(7));
    assert_eq!(code(&["run", "true"]).0, Some(0));
    // Killed by a signal: 128 + N.
    assert_eq!(
        code(&["run", "--", "sh", "-c", "kill -TERM $$"]).0,
        Some(128 + 15)
    );
    assert_eq!(
        code(&["run", "--", "sh", "-c", "kill -KILL $$"]).0,
        Some(128 + 9)
    );
    let (c, err) = code(&["run", "--", "/nonexistent/command"]);
    assert_eq!(c, Some(127));
    assert!(err.contains("cannot start `/nonexistent/command`"), "{err}");
    // No command, or an unknown option before it: usage errors.
    assert_eq!(code(&["run"]).0, Some(2));
    assert_eq!(code(&["run", "--no-such-option", "true"]).0, Some(2));
    // A bad config: 3, and the command never runs.
    let marker = home.path().join("ran");
    let (c, err) = code(&[
        "run",
        "-c",
        "mode=\"sideways\"",
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(c, Some(3), "{err}");
    assert!(!marker.exists());
}

#[test]
fn stdin_and_stdout_pass_through() {
    let home = Home::new();
    let mut child = netproxy(&home, &["run", "--allow", "a.test", "--", "cat"], &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut stdin = child.stdin.take().unwrap();
    let p = payload.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&p).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == payload, "stdout differs from stdin");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `netproxy run` with a child that traps SIGINT, SIGTERM and SIGHUP, and waits for it
/// to say it is ready.
fn trapping_child(home: &Home) -> (Process, BufReader<std::process::ChildStdout>) {
    let script = "trap 'echo got INT; exit 11' INT; \
                  trap 'echo got TERM; exit 12' TERM; \
                  trap 'echo got HUP; exit 13' HUP; \
                  echo ready; \
                  while :; do sleep 0.05; done";
    let mut cmd = netproxy(home, &["run", "--", "sh", "-c", script], &[]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut p = Process::spawn(cmd);
    let mut out = BufReader::new(p.child().stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (p, out)
}

/// Whether this process was started with signal `signo` ignored (a background job of a
/// shell without job control ignores SIGINT). The child inherits that, and `sh` cannot trap a
/// signal ignored on entry, so such a signal cannot be checked here.
fn ignored_on_entry(signo: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signo - 1)) != 0)
}

#[test]
fn signals_are_forwarded_to_the_child() {
    let home = Home::new();
    for (signo, name, code) in [(2, "INT", 11), (15, "TERM", 12), (1, "HUP", 13)] {
        if ignored_on_entry(signo) {
            eprintln!(
                "SIG{name} is ignored in this test process (and so in the child): not checked"
            );
            continue;
        }
        let (mut p, out) = trapping_child(&home);
        p.signal(name);
        // The child's answer, within a bound: a signal that is not forwarded fails the test
        // instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = out;
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(proxy_test_support::PATIENCE)
            .unwrap_or_else(|_| panic!("SIG{name} did not reach the child"));
        assert_eq!(line, format!("got {name}\n"));
        assert_eq!(p.wait_exit(), Some(code), "{name}");
    }
}

/// Names from the in-process DNS server that resolve to 127.0.0.2, treated as public, where
/// an HTTP origin listens.
struct World {
    dns: DnsServer,
    origin: HttpOrigin,
    home: Home,
}

async fn world() -> World {
    let (dns, origin) = public_origin(&["api.test", "evil.test"]).await;
    World {
        dns,
        origin,
        home: Home::new(),
    }
}

impl World {
    /// The paths the origin was asked for.
    fn paths(&self) -> Vec<String> {
        self.origin.seen().into_iter().map(|s| s.target).collect()
    }

    fn run(&self, extra: &[&str], script: &str) -> Command {
        let dns = format!("dns.nameservers=[\"{}\"]", self.dns.addr());
        let mut args = vec![
            "run",
            "-c",
            &dns,
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--allow",
            "api.test",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        netproxy(&self.home, &args, &[])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_in_the_child_goes_through_the_proxy_over_http_connect_and_socks() {
    let w = world().await;
    let port = w.origin.addr().port();
    let script = format!(
        "curl -s -o /dev/null -w 'http %{{http_code}}\\n' http://api.test:{port}/plain; \
         curl -s -o /dev/null -w 'connect %{{http_code}}\\n' -p http://api.test:{port}/tunnel; \
         curl -s -o /dev/null -w 'socks %{{http_code}}\\n' -x \"$ALL_PROXY\" http://api.test:{port}/socks; \
         curl -s -o /dev/null -w 'denied %{{http_code}}\\n' http://evil.test:{port}/secret?token=x; \
         curl -s -o /dev/null -w 'denied-connect %{{http_connect}}\\n' -p http://evil.test:{port}/; \
         curl -s -o /dev/null -w 'denied-socks %{{http_code}}\\n' -x \"$ALL_PROXY\" http://evil.test:{port}/; \
         exit 5"
    );
    let report = w.home.path().join("report.json");
    let cmd = w.run(&["--report", report.to_str().unwrap()], &script);
    let out = ran(cmd);
    let stdout = out.stdout;
    let stderr = out.stderr;
    assert_eq!(out.code, 5, "{stdout}{stderr}");
    has_lines(
        &stdout,
        &[
            "http 200",
            "connect 200",
            "socks 200",
            "denied 403",
            "denied-connect 403",
            "denied-socks 000",
        ],
    );
    assert_eq!(w.paths(), ["/plain", "/tunnel", "/socks"]);
    // The summary: every refusal counted, each target once, with its reason.
    assert!(
        stderr.contains(&format!(
            "netproxy: blocked 3 requests: evil.test:{port} (not_allowed; --allow evil.test)\n"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("token=x"), "{stderr}");
    assert_eq!(w.dns.queries_for("evil.test"), 0);
    // The report has every decision, and no path or query.
    let body = std::fs::read_to_string(&report).unwrap();
    assert!(
        !body.contains("secret") && !body.contains("token"),
        "{body}"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let d = v["decisions"].as_array().unwrap();
    let protocols: Vec<(&str, &str)> = d
        .iter()
        .map(|e| {
            (
                e["protocol"].as_str().unwrap(),
                e["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        protocols,
        [
            ("http", "allow"),
            ("https_connect", "allow"),
            ("socks5_tcp", "allow"),
            ("http", "deny"),
            ("https_connect", "deny"),
            ("socks5_tcp", "deny"),
        ]
    );
    assert_eq!(d[0]["rule"], "api.test");
    assert_eq!(d[3]["host"], "evil.test");
    assert_eq!(d[3]["reason"], "not_allowed");
    assert_eq!(v["blocked_total"], 3);
    assert_eq!(v["exit_code"], 5);

    // --quiet: no notice, the summary stays.
    let cmd = w.run(
        &["--quiet"],
        &format!("curl -s -o /dev/null http://evil.test:{port}/"),
    );
    let out = ran(cmd);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stderr,
        format!("netproxy: blocked 1 request: evil.test:{port} (not_allowed; --allow evil.test)\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_over_http_when_allowed_and_not_otherwise() {
    let w = world().await;
    // A dumb-HTTP repository served by a static file server on 127.0.0.2.
    let repo = w.home.path().join("www/repo.git");
    crate::support::dumb_http_repo(w.home.path(), &repo, "hello through netproxy\n");
    let server = crate::support::FileServer::start(&w.home.path().join("www"));
    let port = server.port;

    let clone = |name: &str, into: &str| {
        format!(
            "GIT_CONFIG_NOSYSTEM=1 git clone -q http://{name}:{port}/repo.git {}",
            w.home.path().join(into).display()
        )
    };
    let cmd = w.run(&[], &clone("api.test", "allowed"));
    let out = ran(cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(w.home.path().join("allowed/hello.txt")).unwrap(),
        "hello through netproxy\n"
    );
    let cmd = w.run(&[], &clone("evil.test", "denied"));
    let out = ran(cmd);
    let stderr = out.stderr;
    assert_eq!(out.code, 128, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "netproxy: blocked 1 request: evil.test:{port} (not_allowed; --allow evil.test)"
        )),
        "{stderr}"
    );
    assert!(!w.home.path().join("denied/hello.txt").exists());
    drop(server);
}

#[test]
fn env_prints_a_sourceable_environment_and_json() {
    let home = Home::new();
    let out = ran(netproxy(
        &home,
        &[
            "env",
            "--http",
            "127.0.0.1:3128",
            "--socks",
            "127.0.0.1:8081",
        ],
        &[],
    ));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let script = format!(
        "{}\necho \"$https_proxy|$ALL_PROXY|$NO_PROXY|$NETPROXY_ACTIVE\"",
        out.stdout
    );
    let sh = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sh.stdout),
        "http://127.0.0.1:3128|socks5h://127.0.0.1:8081||1\n"
    );

    let out = ran(netproxy(
        &home,
        &["env", "--format", "json", "--http", "127.0.0.1:3128"],
        &[],
    ));
    let v = json(&out.stdout);
    assert_eq!(v["HTTP_PROXY"], "http://127.0.0.1:3128");
    assert_eq!(v["ALL_PROXY"], "http://127.0.0.1:3128");
    assert_eq!(v["NODE_USE_ENV_PROXY"], "1");

    // Bad input: usage errors.
    for args in [
        &["env"][..],
        &["env", "--http", "not an address"][..],
        &["env", "--http", "127.0.0.1:0"][..],
        &["env", "--http", "127.0.0.1:3128", "--format", "xml"][..],
    ] {
        let out = ran(netproxy(&home, args, &[]));
        assert_eq!(out.code, 2, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_reads_the_addresses_of_a_running_serve_from_its_ready_file() {
    let w = crate::support::World::new(&["api.test"]).await;
    let port = w.origin.addr().port();
    let s = w.serve().socks().args(&["--allow", "api.test"]).start();
    let ready = s.path().join("ready.json");
    let ready = ready.to_str().unwrap();
    let home = Home::new();

    // A shell that sources what `env --ready-file` prints, then reaches the origin through
    // both proxies it names.
    let script = format!(
        "eval \"$(\"$@\")\" && curl -sS -o /dev/null -w 'http %{{http_code}}\\n' http://api.test:{port}/via-http \
         && curl -sS -o /dev/null -w 'socks %{{http_code}}\\n' -x \"$ALL_PROXY\" http://api.test:{port}/via-socks"
    );
    let out = ran(wrapped(
        &["sh", "-c", &script, "sh"],
        &home.command(&["env", "--ready-file", ready]),
    ));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "http 200\nsocks 200\n", "{}", out.stderr);
    let targets: Vec<String> = w.origin.seen().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/via-http", "/via-socks"]);

    let out = ran(home.command(&["env", "--format", "json", "--ready-file", ready]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = json(&out.stdout);
    assert_eq!(v["HTTPS_PROXY"], format!("http://{}", s.http));
    assert_eq!(
        v["ALL_PROXY"],
        format!("socks5h://{}", s.socks.as_deref().unwrap())
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);

    // Without SOCKS (`"socks":null`), ALL_PROXY is the HTTP proxy.
    let plain = crate::support::serve().start();
    let plain_ready = plain.path().join("ready.json");
    let out = ran(home.command(&[
        "env",
        "--format",
        "json",
        "--ready-file",
        plain_ready.to_str().unwrap(),
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = json(&out.stdout);
    assert_eq!(v["ALL_PROXY"], format!("http://{}", plain.http));
    plain.stop();
    s.stop();
}

#[test]
fn env_ready_file_problems_are_clear_errors_naming_the_file() {
    let home = Home::new();
    let dir = home.path();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let missing = dir.join("missing.json");
    let missing = missing.to_str().unwrap();
    let out = ran(home.command(&["env", "--ready-file", missing]));
    out.assert_err(
        1,
        &[
            &format!("cannot read the ready file {missing}"),
            "No such file",
        ],
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);

    let unreadable = dir.to_str().unwrap();
    ran(home.command(&["env", "--ready-file", unreadable]))
        .assert_err(1, &[&format!("cannot read the ready file {unreadable}")]);

    for (name, text, why) in [
        ("garbage.json", "http=127.0.0.1:3128\n", "not JSON"),
        ("list.json", "[\"127.0.0.1:3128\"]", "not a JSON object"),
        (
            "nohttp.json",
            "{\"socks\":\"127.0.0.1:1080\"}",
            "no \"http\" address",
        ),
        (
            "badhttp.json",
            "{\"http\":\"localhost:3128\"}",
            "\"http\" is \"localhost:3128\", not an IP:PORT address",
        ),
        (
            "zero.json",
            "{\"http\":\"127.0.0.1:0\"}",
            "not an IP:PORT address",
        ),
        (
            "badsocks.json",
            "{\"http\":\"127.0.0.1:3128\",\"socks\":1080}",
            "\"socks\" is 1080, not an address",
        ),
    ] {
        let path = file(name, text);
        let out = ran(home.command(&["env", "--ready-file", &path]));
        out.assert_err(
            1,
            &[
                &format!("{path} is not a ready file of `netproxy serve`"),
                why,
            ],
        );
        assert!(out.stdout.is_empty(), "{name}: {}", out.stdout);
    }

    // A ready file left behind by a process that has exited: the addresses, with a warning.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let stale = file(
        "stale.json",
        &format!("{{\"http\":\"127.0.0.1:3128\",\"socks\":null,\"admin\":null,\"pid\":{pid}}}"),
    );
    let out = ran(home.command(&["env", "--ready-file", &stale]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("export HTTP_PROXY='http://127.0.0.1:3128'"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains(&format!(
            "process {pid} that wrote {stale} is no longer running"
        )),
        "{}",
        out.stderr
    );

    // Exactly one of --http and --ready-file; --socks goes with --http.
    let good = file("good.json", "{\"http\":\"127.0.0.1:3128\",\"socks\":null}");
    for args in [
        &["env", "--http", "127.0.0.1:3128", "--ready-file", &good][..],
        &["env", "--socks", "127.0.0.1:1080", "--ready-file", &good][..],
        &["env", "--format", "json"][..],
    ] {
        assert_eq!(ran(home.command(args)).code, 2, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_auth_admits_the_child_and_refuses_other_clients() {
    let w = world().await;
    let port = w.origin.addr().port();
    // `${VAR#*@}` strips the credential: that is what another local process would know.
    let script = format!(
        "case \"$HTTP_PROXY\" in http://netproxy:*@127.0.0.1:*) ;; *) echo \"bad url $HTTP_PROXY\";; esac; \
         case \"$ALL_PROXY\" in socks5h://netproxy:*@127.0.0.1:*) ;; *) echo \"bad url $ALL_PROXY\";; esac; \
         curl -s -o /dev/null -w 'http %{{http_code}}\\n' http://api.test:{port}/a; \
         curl -s -o /dev/null -w 'connect %{{http_code}}\\n' -p http://api.test:{port}/b; \
         curl -s -o /dev/null -w 'socks %{{http_code}}\\n' -x \"$ALL_PROXY\" http://api.test:{port}/c; \
         python3 -c \"import urllib.request; print('urllib', urllib.request.urlopen('http://api.test:{port}/d').status)\"; \
         curl -s -o /dev/null -D - -w 'stranger %{{http_code}}\\n' -x \"http://${{HTTP_PROXY#*@}}\" http://api.test:{port}/x \
           | tr -d '\\r' | grep -i -E '^stranger|^proxy-authenticate'; \
         curl -s -o /dev/null -w 'stranger-connect %{{http_connect}}\\n' -p -x \"http://${{HTTP_PROXY#*@}}\" http://api.test:{port}/y; \
         curl -s -o /dev/null -w 'stranger-socks %{{http_code}}\\n' -x \"socks5h://${{ALL_PROXY#*@}}\" http://api.test:{port}/z; \
         curl -s -o /dev/null -w 'wrong %{{http_code}}\\n' -x \"http://netproxy:guess@${{HTTP_PROXY#*@}}\" http://api.test:{port}/w"
    );
    let cmd = w.run(&["--proxy-auth"], &script);
    let out = ran(cmd);
    let stdout = out.stdout;
    assert_eq!(out.code, 0, "{stdout}{}", out.stderr);
    assert!(!stdout.contains("bad url"), "{stdout}");
    has_lines(
        &stdout,
        &[
            "http 200",
            "connect 200",
            "socks 200",
            "urllib 200",
            "proxy-authenticate: Basic realm=\"netproxy\"",
            "stranger 407",
            "stranger-connect 407",
            "stranger-socks 000",
            "wrong 407",
        ],
    );
    assert_eq!(w.paths(), ["/a", "/b", "/c", "/d"]);
    // The credential never reaches the origin.
    assert!(
        w.origin
            .seen()
            .iter()
            .all(|s| s.header("proxy-authorization").is_none())
    );
}

/// The README's opening example, against loopback names: `api.test` stands for api.github.com
/// (a TLS origin on 127.0.0.2 with a test CA) and `example.test` for example.com. The README
/// shows this output with the real names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_run_example() {
    let w = world().await;
    let ca = proxy_test_support::TestCa::new().unwrap();
    let origin = proxy_test_support::TlsOrigin::start(
        "api",
        "127.0.0.2".parse().unwrap(),
        &ca,
        &["api.test", "example.test"],
    )
    .await
    .unwrap();
    resolves(&w.dns, "example.test", "127.0.0.2");
    let port = origin.addr().port();
    let ca_file = w.home.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let curl = |url: String, extra: &[&str]| {
        let mut s = format!("curl --cacert {} ", ca_file.display());
        for e in extra {
            s.push_str(e);
            s.push(' ');
        }
        s + &url
    };

    let cmd = w.run(
        &[],
        &curl(
            format!("https://api.test:{port}/zen"),
            &["-s", "-o", "/dev/null", "-w", "'%{http_code}\\n'"],
        ),
    );
    let out = ran(cmd);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, "200\n");
    assert_eq!(out.stderr, "");

    let cmd = w.run(
        &[],
        &curl(format!("https://example.test:{port}/"), &["-sS"]),
    );
    let out = ran(cmd);
    assert_eq!(out.code, 56);
    assert_eq!(out.stdout, "");
    // curl's line and netproxy's notice come from two processes at about the same time: in
    // either order; the summary last.
    let mut lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.pop(),
        Some(
            format!(
                "netproxy: blocked 1 request: example.test:{port} (not_allowed; --allow example.test)"
            )
            .as_str()
        ),
        "{}",
        out.stderr
    );
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "curl: (56) CONNECT tunnel failed, response 403".to_owned(),
            format!(
                "netproxy: refused example.test:{port} (not in allowlist) \u{2014} allow with --allow example.test"
            )
        ],
        "{}",
        out.stderr
    );
}

/// The status of `METHOD PATH` (with `body`) on the admin API at `addr`, called with `token`.
fn admin_status(addr: &str, token: &str, method: &str, path: &str, body: Option<&str>) -> u16 {
    AdminApi::new(addr, Some(token)).call(method, path, body).0
}

/// Asserts that each of `lines` is a line of `stdout`.
fn has_lines(stdout: &str, lines: &[&str]) {
    for line in lines {
        assert!(stdout.lines().any(|l| l == *line), "{line}: {stdout}");
    }
}

/// `netproxy ARGS` started through `sh` with descriptor 3 open for appending to `token_file`
/// (as a caller passes `--admin-token-fd 3`); `wrap` goes before the binary (e.g. `setpriv`).
fn with_fd3(
    home: &Home,
    token_file: &Path,
    wrap: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let mut prefix: Vec<&OsStr> = ["sh", "-c", r#"f=$1; shift; exec "$@" 3>>"$f""#, "sh"]
        .map(OsStr::new)
        .to_vec();
    prefix.push(token_file.as_os_str());
    prefix.extend(wrap.iter().map(OsStr::new));
    wrapped(&prefix, &netproxy(home, args, env))
}

/// `inner` started through `sh` with the descriptors `redirect` opens (`3>&1`, `5</dev/null`).
fn redirected(inner: &Command, redirect: &str) -> Command {
    wrapped(
        &["sh", "-c", &format!(r#"exec "$@" {redirect}"#), "sh"],
        inner,
    )
}

/// An empty file of mode 0600 (root's, in the tests that run as root).
fn private_file(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
}

/// netproxy's line `netproxy: admin API on ...` from its stderr (warnings may come first).
fn admin_line(p: &Process) -> String {
    p.wait_line("the admin API line", |l| l.contains("admin API on"))
}

/// The admin address from netproxy's line `netproxy: admin API on http://ADDR (token: ...)`.
fn admin_addr(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned()
}

/// `netproxy run ARGS --admin 127.0.0.1:0 --admin-token-fd 3 -- sh -c SCRIPT` through
/// [`with_fd3`], stdin and stdout piped; once its admin API is up: the process, the line that
/// says so, and the API's address.
fn run_with_admin(
    home: &Home,
    token_file: &Path,
    wrap: &[&str],
    args: &[&str],
    script: &str,
    env: &[(&str, &str)],
) -> (Process, String, String) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "--admin",
        "127.0.0.1:0",
        "--admin-token-fd",
        "3",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let mut cmd = with_fd3(home, token_file, wrap, &all, env);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let p = Process::spawn(cmd);
    let line = admin_line(&p);
    let addr = admin_addr(&line);
    (p, line, addr)
}

/// Writes `text` to the process's stdin.
fn say(p: &mut Process, text: &str) {
    let stdin = p.child().stdin.as_mut().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
}

/// Reads the lines the process writes on stdout, one a call (with its newline).
fn stdout_lines(p: &mut Process) -> impl FnMut() -> String + use<> {
    let mut out = BufReader::new(p.child().stdout.take().unwrap());
    move || {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line
    }
}

#[test]
fn run_opens_the_admin_api_only_when_asked() {
    let home = Home::new();
    // Without --admin: no admin line, no token file.
    let out = ran(netproxy(&home, &["run", "true"], &[]));
    assert_eq!(out.code, 0);
    assert!(!out.stderr.contains("admin API"));
    assert!(!home.user_dir().join("admin.token").exists());

    // With --admin, a fresh token for the session, given only to --admin-token-fd: never
    // NETPROXY_ADMIN_TOKEN, admin_token or the token file.
    let token_file = home.path().join("token");
    private_file(&token_file);
    let cfg = home.path().join("cfg.toml");
    std::fs::write(&cfg, "[network]\nadmin_token = \"configured\"\n").unwrap();
    let (mut child, line, addr) = run_with_admin(
        &home,
        &token_file,
        &[],
        &["--config", cfg.to_str().unwrap()],
        "read line",
        &[("NETPROXY_ADMIN_TOKEN", "secret")],
    );
    assert!(
        line.contains("(token: written to --admin-token-fd 3)"),
        "{line}"
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 65, "{token:?}");
    assert!(token.ends_with('\n'));
    let token = token.trim();
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!home.user_dir().join("admin.token").exists());
    assert_eq!(admin_status(&addr, "wrong", "GET", "/patterns", None), 401);
    assert_eq!(admin_status(&addr, "secret", "GET", "/patterns", None), 401);
    assert_eq!(
        admin_status(&addr, "configured", "GET", "/patterns", None),
        401
    );
    assert_eq!(admin_status(&addr, token, "GET", "/patterns", None), 200);
    // The child ends; so does the admin API.
    say(&mut child, "\n");
    assert_eq!(child.wait_exit(), Some(0));
    assert_eq!(admin_status(&addr, token, "GET", "/patterns", None), 0);

    // Without --admin-token-fd, and stderr not a terminal, the token is nowhere.
    let out = ran(netproxy(
        &home,
        &["run", "--admin", "127.0.0.1:0", "--", "true"],
        &[("NETPROXY_ADMIN_TOKEN", "secret")],
    ));
    assert_eq!(out.code, 0);
    let err = out.stderr;
    assert!(
        err.contains("(token: available only through --admin-token-fd, which was not given)"),
        "{err}"
    );
    assert!(!home.user_dir().join("admin.token").exists());
}

#[test]
fn a_bad_admin_token_fd_is_a_usage_error() {
    let home = Home::new();
    let run = |fd: &str, redirect: &str| {
        let inner = netproxy(
            &home,
            &[
                "run",
                "--admin",
                "127.0.0.1:0",
                "--admin-token-fd",
                fd,
                "--",
                "sh",
                "-c",
                "echo started",
            ],
            &[],
        );
        ran(redirected(&inner, redirect))
    };
    for (fd, redirect, why) in [
        ("9", "", "descriptor 9 is not open"),
        ("1", "", "give a descriptor of 3 or more"),
        ("5", "5</dev/null", "descriptor 5 is not open for writing"),
    ] {
        let out = run(fd, redirect);
        assert_eq!(out.code, 2, "{fd}: {}", out.stderr);
        let err = out.stderr;
        assert!(
            err.contains(&format!("--admin-token-fd {fd}: {why}")),
            "{err}"
        );
        assert_eq!(out.stdout, "", "CMD must not start");
    }
    // --admin-token-fd without --admin: clap's usage error.
    let out = ran(netproxy(
        &home,
        &["run", "--admin-token-fd", "3", "--", "true"],
        &[],
    ));
    assert_eq!(out.code, 2);
}

/// A file given as `--admin-token-fd` that CMD (the same user) can read gets a warning at start
/// naming it; a pipe gets none, and the caller reads the token from it.
#[test]
fn a_token_fd_that_is_a_readable_file_is_warned_about_and_a_pipe_is_not() {
    let home = Home::new();
    let args = [
        "run",
        "--allow",
        "a.test",
        "--admin",
        "127.0.0.1:0",
        "--admin-token-fd",
        "3",
        "--",
        "true",
    ];
    let warning = "netproxy: warning: --admin-token-fd 3 is the file ";
    let token_file = home.path().join("session.token");
    private_file(&token_file);
    let out = ran(with_fd3(&home, &token_file, &[], &args, &[]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let err = out.stderr;
    assert!(
        err.contains(&format!(
            "{warning}{}, which CMD, running as the same user, can read",
            token_file.display()
        )) && err.contains("pass a pipe that the caller reads instead"),
        "{err}"
    );
    // The warning comes at start, before the admin line.
    assert!(err.find(warning) < err.find("admin API on"), "{err}");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().len(), 65);

    // Descriptor 3 the caller's pipe (here netproxy's stdout, read by this test).
    let out = ran(redirected(&netproxy(&home, &args, &[]), "3>&1"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let err = out.stderr;
    assert!(!err.contains("warning"), "{err}");
    assert!(
        err.contains("(token: written to --admin-token-fd 3)"),
        "{err}"
    );
    let token = out.stdout;
    assert_eq!(token.len(), 65, "{token:?}");
    assert!(token.trim().bytes().all(|b| b.is_ascii_hexdigit()));
}

/// Item 1 of the containment issue: a child that writes its `--config` file and
/// `$NETPROXY_HOME/config.toml` does not widen its policy; `POST /reload` answers 409; the
/// runtime layer still changes the policy, over the files as they were read at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_cannot_widen_its_policy_through_config_files() {
    let origin = HttpOrigin::start("local", "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let port = origin.addr().port();
    let home = Home::new();
    let cfg = home.path().join("cfg.toml");
    std::fs::write(&cfg, "").unwrap();
    let user_cfg = home.user_dir().join("config.toml");
    let token_file = home.path().join("token");
    private_file(&token_file);
    let allow = format!(
        "[network.domains]\n\"127.0.0.1:{port}\" = \"allow\"\n\"files.example\" = \"allow\"\n"
    );
    // The child writes the files and asks again at once: what says that nothing reacts to the
    // change is that nothing watches the files (below), not a wait.
    let script = format!(
        r#"c() {{ curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 http://127.0.0.1:{port}/; }}
echo "before $(c)"
printf '%s' '{allow}' >> '{cfg}'
mkdir -p '{home}' && printf '%s' '{allow}' > '{user}'
echo "after $(c)"
read line
echo "runtime $(c)"
"#,
        cfg = cfg.display(),
        home = user_cfg.parent().unwrap().display(),
        user = user_cfg.display(),
    );
    let (mut child, _, addr) = run_with_admin(
        &home,
        &token_file,
        &[],
        &["--config", cfg.to_str().unwrap()],
        &script,
        &[],
    );
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let mut next = stdout_lines(&mut child);
    assert_eq!(next(), "before 403\n");
    assert_eq!(next(), "after 403\n");
    assert!(
        std::fs::read_to_string(&cfg)
            .unwrap()
            .contains("files.example")
    );
    assert!(user_cfg.exists());
    // `run` reads its files once: it watches none of them (`serve`, which does, holds watches:
    // reload.rs), so their change is never acted on.
    assert_eq!(inotify_watches(child.id()), 0);
    // Nothing is re-read on request either.
    let api = AdminApi::new(&addr, Some(&token));
    let (code, body) = api.call("POST", "/reload", None);
    assert_eq!(code, 409);
    let body = json(&body);
    assert_eq!(body["reason"], "read_once", "{body}");
    // The runtime layer changes the policy, over the files as read at start.
    let change = format!(r#"{{"allow":["127.0.0.1:{port}"]}}"#);
    assert_eq!(api.post("/domains", &change).0, 200);
    let patterns = json(&api.get("/patterns").1);
    assert_eq!(
        patterns["allowed"],
        serde_json::json!([format!("127.0.0.1:{port}")])
    );
    say(&mut child, "\n");
    assert_eq!(next(), "runtime 200\n");
    assert_eq!(child.wait_exit(), Some(0));

    // The files the child wrote do allow the origin: a new run reads them.
    let cmd = netproxy(
        &home,
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &format!("curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/"),
        ],
        &[],
    );
    let out = ran(cmd);
    assert_eq!(out.stdout, "200", "{}", out.stderr);
}

/// Item 3 of the containment issue, with a real child of the same non-root user as netproxy:
/// no NETPROXY_* configuration in its environment, `/proc/<netproxy>/environ` unreadable, the
/// inherited NETPROXY_ADMIN_TOKEN refused by the admin API, and the session token (given to
/// the caller's descriptor only) working while the child runs.
#[test]
fn a_same_user_child_cannot_reach_the_admin_token() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run netproxy as another user (uid 65534)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let np_home = home.user_dir();
    std::fs::create_dir(&np_home).unwrap();
    std::os::unix::fs::chown(&np_home, Some(65534), Some(65534)).unwrap();
    // The caller's file, root's and private: the child cannot read it.
    let token_file = home.path().join("token");
    private_file(&token_file);
    let script = r#"env | grep -i '^netproxy_' | sort | tr '
' ' '; echo
if cat /proc/$PPID/environ >/dev/null 2>&1; then echo "environ readable"; else echo "environ refused"; fi
if cat /proc/$PPID/cmdline >/dev/null 2>&1; then echo "cmdline readable"; else echo "cmdline refused"; fi
read addr
echo "old token $(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer secret' -H 'Content-Type: application/json' -d '{"allow":["evil.example"]}' "http://$addr/domains")"
echo "token file $(cat /work/does-not-matter 2>/dev/null; if cat "$TOKEN_FILE" 2>/dev/null; then echo readable; else echo refused; fi)"
read done
"#;
    let (mut child, _, addr) = run_with_admin(
        &home,
        &token_file,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &[],
        script,
        &[
            ("NETPROXY_ADMIN_TOKEN", "secret"),
            ("NETPROXY_WORKER_THREADS", "1"),
            ("TOKEN_FILE", token_file.to_str().unwrap()),
        ],
    );
    let mut next = stdout_lines(&mut child);
    assert_eq!(
        next(),
        "NETPROXY_ACTIVE=1 NETPROXY_ALLOW_LOCAL_BINDING=0 \n"
    );
    assert_eq!(next(), "environ refused\n");
    // The same process's world-readable files stay readable: the refusal is non-dumpability.
    assert_eq!(next(), "cmdline readable\n");
    say(&mut child, &format!("{addr}\n"));
    assert_eq!(next(), "old token 401\n");
    assert_eq!(next(), "token file refused\n");
    // While the child runs, the caller's token works.
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 65, "{token:?}");
    let change = r#"{"allow":["good.example"]}"#;
    assert_eq!(
        admin_status(&addr, token.trim(), "POST", "/domains", Some(change)),
        200
    );
    assert_eq!(admin_status(&addr, "secret", "GET", "/patterns", None), 401);
    say(&mut child, "\n");
    let (code, stderr) = child.finish();
    assert_eq!(code, Some(0));
    assert!(!stderr.contains(token.trim()));
}

/// Past twenty refused targets, the summary names twenty and counts the rest.
#[test]
fn the_summary_names_twenty_targets_and_counts_the_rest() {
    let home = Home::new();
    let urls: Vec<String> = (1..=25).map(|p| format!("http://127.0.0.1:{p}/")).collect();
    let script = format!("curl -s -o /dev/null {}; true", urls.join(" "));
    let out = ran(netproxy(
        &home,
        &[
            "run", "--quiet", "--allow", "a.test", "--", "sh", "-c", &script,
        ],
        &[],
    ));
    assert_eq!(out.code, 0);
    let named: Vec<String> = (1..=20)
        .map(|p| format!("127.0.0.1:{p} (not_allowed_local; --allow 127.0.0.1)"))
        .collect();
    assert_eq!(
        out.stderr,
        format!(
            "netproxy: blocked 25 requests: {}, and 5 more targets\n",
            named.join(", ")
        )
    );
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the child's clients show of a refusal and of a failure: the status line names netproxy
/// and the reason (curl -v, Python's urllib), and the JSON body names netproxy and ends with a
/// newline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_failures_name_netproxy_on_the_wire() {
    let w = world().await;
    let port = w.origin.addr().port();
    let closed = closed_port();
    let dir = w.home.path();
    let py = dir.join("fetch.py");
    std::fs::write(
        &py,
        format!(
            "import urllib.request, urllib.error\n\
             for url in ['http://evil.test:{port}/', 'http://127.0.0.1:{closed}/']:\n\
             \x20   try:\n\
             \x20       urllib.request.urlopen(url)\n\
             \x20   except urllib.error.HTTPError as e:\n\
             \x20       print('urllib', e.code, e.reason)\n"
        ),
    )
    .unwrap();
    let script = format!(
        "curl -sv -o {dir}/refused.json http://evil.test:{port}/ 2>&1 | grep '^< HTTP' | tr -d '\\r'; \
         curl -sv -o {dir}/failed.json http://127.0.0.1:{closed}/ 2>&1 | grep '^< HTTP' | tr -d '\\r'; \
         python3 {py}",
        dir = dir.display(),
        py = py.display(),
    );
    let allow = format!("127.0.0.1:{closed}");
    let out = ran(w.run(&["--allow", &allow], &script));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    has_lines(
        &out.stdout,
        &[
            "< HTTP/1.1 403 Blocked by netproxy (not_allowed)",
            "< HTTP/1.1 502 Bad Gateway (netproxy: connect_failed)",
            "urllib 403 Blocked by netproxy (not_allowed)",
            "urllib 502 Bad Gateway (netproxy: connect_failed)",
        ],
    );
    let refused = std::fs::read_to_string(dir.join("refused.json")).unwrap();
    assert!(refused.ends_with("}\n"), "{refused:?}");
    let v = json(&refused);
    assert_eq!(v["reason"], "not_allowed");
    assert_eq!(
        v["message"],
        "Blocked by netproxy: Domain not in allowlist."
    );
    let failed = std::fs::read_to_string(dir.join("failed.json")).unwrap();
    assert!(failed.ends_with("}\n"), "{failed:?}");
    let v = json(&failed);
    assert_eq!(v["reason"], "connect_failed");
    assert!(
        v["message"].as_str().unwrap().starts_with("netproxy: "),
        "{v}"
    );
}

/// Refused is not failed: a name the DNS server does not know (`dns_failed`) and a closed port
/// the policy allows (`connect_failed`, over HTTP, CONNECT and SOCKS5) are summarised on a line
/// of their own, apart from the refusal; the report and the audit log tell them apart too; and
/// nothing else of netproxy's reaches the child's terminal (no log line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_reported_apart_from_refusals() {
    let w = world().await;
    let port = w.origin.addr().port();
    let closed = closed_port();
    let report = w.home.path().join("report.json");
    let audit = w.home.path().join("audit.jsonl");
    let script = format!(
        "curl -s -o /dev/null -w 'refused %{{http_code}}\\n' http://evil.test:{port}/; \
         curl -s -o /dev/null -w 'dns %{{http_code}}\\n' http://gone.test/; \
         curl -s -o /dev/null -w 'connect %{{http_code}}\\n' http://127.0.0.1:{closed}/; \
         curl -s -o /dev/null -w 'tunnel %{{http_connect}}\\n' -p http://127.0.0.1:{closed}/; \
         curl -s -o /dev/null -w 'socks %{{http_code}}\\n' -x \"$ALL_PROXY\" http://127.0.0.1:{closed}/; \
         exit 3"
    );
    let allow = format!("127.0.0.1:{closed}");
    let log = format!("audit_log=\"{}\"", audit.display());
    let out = ran(w.run(
        &[
            "--allow",
            "gone.test",
            "--allow",
            &allow,
            "-c",
            &log,
            "--report",
            report.to_str().unwrap(),
        ],
        &script,
    ));
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    has_lines(
        &out.stdout,
        &[
            "refused 403",
            "dns 502",
            "connect 502",
            "tunnel 502",
            "socks 000",
        ],
    );
    assert_eq!(
        out.stderr,
        format!(
            "netproxy: refused evil.test:{port} (not in allowlist) \u{2014} allow with --allow evil.test\n\
             netproxy: failed gone.test:80 (name not resolved) \u{2014} the name gone.test does not exist (NXDOMAIN)\n\
             netproxy: failed 127.0.0.1:{closed} (connection failed) \u{2014} could not connect to 127.0.0.1:{closed} (the connection was refused)\n\
             netproxy: blocked 1 request: evil.test:{port} (not_allowed; --allow evil.test)\n\
             netproxy: failed 4 requests: gone.test:80 (dns_failed), 127.0.0.1:{closed} (connect_failed)\n"
        )
    );
    let v = json(&std::fs::read_to_string(&report).unwrap());
    assert_eq!(
        (&v["blocked_total"], &v["failed_total"]),
        (&1.into(), &4.into())
    );
    assert_eq!(
        v["failed_targets"][0],
        serde_json::json!({"target": "gone.test:80", "reason": "dns_failed", "count": 1,
                           "message": "the name gone.test does not exist (NXDOMAIN)"})
    );
    let connect = &v["failed_targets"][1];
    assert_eq!(connect["count"], 3, "{connect}");
    assert_eq!(
        connect["message"],
        format!("could not connect to 127.0.0.1:{closed} (the connection was refused)")
    );
    let totals = v["targets"].as_array().unwrap();
    assert!(
        totals.contains(&serde_json::json!({"target": format!("127.0.0.1:{closed}"), "allowed": 3, "blocked": 0, "failed": 3})),
        "{totals:?}"
    );
    // The program, and how many arguments (never the arguments: URLs, credentials).
    assert_eq!((&v["command"], &v["arguments"]), (&"sh".into(), &2.into()));
    assert!(v["duration_ms"].is_u64(), "{v}");
    // The audit log: each failure an event of its own, the policy's allow with `error.type`;
    // the refusal a deny without it.
    let lines = crate::support::wait_audit(&audit, "the failures", |l| {
        l.iter().filter(|e| e.get("error.type").is_some()).count() == 4
    });
    for e in lines.iter().filter(|e| e.get("error.type").is_some()) {
        assert_eq!(e["network.policy.decision"], "allow", "{e}");
        assert_eq!(e["network.policy.reason"], e["error.type"], "{e}");
    }
    let refused: Vec<_> = lines
        .iter()
        .filter(|e| e["network.policy.decision"] == "deny")
        .collect();
    assert_eq!(refused.len(), 1, "{lines:?}");
    assert!(refused[0].get("error.type").is_none());
}

/// A report that cannot be written is said so on stderr; the exit code stays the command's.
#[cfg(target_os = "linux")]
#[test]
fn a_report_write_failure_is_said_and_the_exit_code_stays() {
    let home = Home::new();
    let out = ran(netproxy(
        &home,
        &[
            "run",
            "--report",
            "/dev/full",
            "--",
            "sh",
            "-c",
            "curl -s -o /dev/null http://127.0.0.1:9/; exit 4",
        ],
        &[],
    ));
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "netproxy: error: the report /dev/full could not be written (no space left on device): it is incomplete\n"
        ),
        "{}",
        out.stderr
    );
    // A report that cannot be created stops the run before the command starts.
    let out = ran(netproxy(
        &home,
        &[
            "run",
            "--report",
            "/nonexistent/dir/r.json",
            "--",
            "sh",
            "-c",
            "echo ran",
        ],
        &[],
    ));
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .contains("cannot create the report /nonexistent/dir/r.json (it does not exist)"),
        "{}",
        out.stderr
    );
}

/// Each kind of refusal is told once, as it happens, with the smallest change that would allow
/// it (the same as the summary's); and that change, made, does allow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_is_noticed_once_with_its_remedy() {
    let w = world().await;
    let port = w.origin.addr().port();
    for name in ["other.test", "example.test", "a.example.test"] {
        resolves(&w.dns, name, "127.0.0.2");
    }
    // A name that resolves to a loopback address (not one of this machine's own).
    resolves(&w.dns, "near.test", "127.0.0.3");
    let get = |name: &str| {
        format!("curl -s -o /dev/null -w '{name} %{{http_code}}\\n' http://{name}:{port}/; ")
    };
    let mut script = String::new();
    // Twice each: noticed once.
    for _ in 0..2 {
        script.push_str(&format!(
            "curl -s -o /dev/null -w 'post %{{http_code}}\\n' -d x=1 http://api.test:{port}/; "
        ));
        for name in ["other.test", "evil.test", "near.test", "example.test"] {
            script.push_str(&get(name));
        }
    }
    script.push_str(&get("a.example.test"));
    let limited = [
        "--mode",
        "limited",
        "--deny",
        "evil.test",
        "--allow",
        "near.test",
        "--allow",
        "*.example.test",
    ];
    let out = ran(w.run(&limited, &script));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    has_lines(
        &out.stdout,
        &[
            "post 403",
            "other.test 403",
            "evil.test 403",
            "near.test 403",
            "example.test 403",
            "a.example.test 200",
        ],
    );
    let treat = r#"-c 'treat_as_public=["127.0.0.2/32","127.0.0.3/32"]'"#;
    let expected = [
        // Limited mode without --mitm: said at start.
        "netproxy: warning: limited mode without HTTPS interception refuses every HTTPS request (CONNECT, and SOCKS5 to port 443): add --mitm to judge them inside TLS, or use --mode full".to_owned(),
        format!(
            "netproxy: refused api.test:{port} (method not allowed in limited mode) \u{2014} limited mode allows GET, HEAD and OPTIONS only: allow with --mode full"
        ),
        format!(
            "netproxy: refused other.test:{port} (not in allowlist) \u{2014} allow with --allow other.test"
        ),
        format!(
            "netproxy: refused evil.test:{port} (denied) \u{2014} a deny entry refuses it: drop --deny evil.test"
        ),
        format!(
            "netproxy: refused near.test:{port} (local address) \u{2014} it resolved to 127.0.0.3, a local address: treat it as public with {treat}, or use the address itself (--allow 127.0.0.3)"
        ),
        format!(
            "netproxy: refused example.test:{port} (not in allowlist) \u{2014} *.example.test matches only the subdomains: allow with --allow '**.example.test'"
        ),
        format!(
            "netproxy: blocked 10 requests: api.test:{port} (method_not_allowed; --mode full), \
             other.test:{port} (not_allowed; --allow other.test), evil.test:{port} (denied; drop --deny evil.test), \
             near.test:{port} (not_allowed_local; {treat}), example.test:{port} (not_allowed; --allow '**.example.test')"
        ),
    ];
    assert_eq!(
        out.stderr.lines().collect::<Vec<_>>(),
        expected,
        "{}",
        out.stderr
    );

    // Each remedy, made, allows its target.
    let mut remedied = vec![
        "--mode",
        "full",
        "--allow",
        "other.test",
        "--allow",
        "**.example.test",
    ];
    remedied.extend_from_slice(&["-c", r#"treat_as_public=["127.0.0.2/32","127.0.0.3/32"]"#]);
    remedied.extend_from_slice(&["--allow", "near.test", "--allow", "evil.test"]);
    // The origin listens on 127.0.0.2 only: near.test (127.0.0.3) is then allowed, and fails
    // to connect.
    let out = ran(w.run(&remedied, &script));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    has_lines(
        &out.stdout,
        &[
            "post 200",
            "other.test 200",
            "evil.test 200",
            "near.test 502",
            "example.test 200",
        ],
    );
    assert!(!out.stderr.contains("netproxy: refused"), "{}", out.stderr);
    assert!(
        out.stderr.ends_with(&format!(
            "netproxy: failed 2 requests: near.test:{port} (connect_failed)\n"
        )),
        "{}",
        out.stderr
    );
}

/// `--notices FILE` writes the notices there while the child runs (the child reads them), not
/// on stderr; `--quiet` silences them and keeps the summary; the two together are a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_go_to_a_file_as_they_happen_or_nowhere_with_quiet() {
    let w = world().await;
    let port = w.origin.addr().port();
    let file = w.home.path().join("notices.log");
    // The child waits (bounded) for its refusal's notice to be in the file before going on.
    let script = format!(
        "curl -s -o /dev/null http://evil.test:{port}/; \
         i=0; while [ $i -lt 100 ] && ! grep -q 'refused evil.test' '{f}' 2>/dev/null; do sleep 0.05; i=$((i+1)); done; \
         echo \"seen $(grep -c 'refused evil.test' '{f}')\"",
        f = file.display()
    );
    let out = ran(w.run(&["--notices", file.to_str().unwrap()], &script));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "seen 1\n");
    let line = format!(
        "netproxy: refused evil.test:{port} (not in allowlist) \u{2014} allow with --allow evil.test\n"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), line);
    assert_eq!(crate::support::mode(&file), 0o600);
    // On stderr, only the summary.
    assert_eq!(
        out.stderr,
        format!("netproxy: blocked 1 request: evil.test:{port} (not_allowed; --allow evil.test)\n")
    );
    let out = ran(w.run(&["--quiet", "--notices", file.to_str().unwrap()], "true"));
    assert_eq!(out.code, 2, "{}", out.stderr);
}

/// A child that puts its terminal in raw mode (a full-screen program) never gets a notice in
/// the middle of its screen: the notice waits, and comes with the summary after it exits. On
/// the same terminal in canonical mode, the notice comes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_wait_while_the_terminal_is_raw() {
    let w = world().await;
    let port = w.origin.addr().port();
    let on_a_terminal = |stty: &str| {
        // The child's script on a pseudo-terminal (`script`), netproxy's stderr on it too.
        let inner = w.run(
            &[],
            &format!("{stty} curl -s -o /dev/null http://evil.test:{port}/; sleep 1; echo MARKER"),
        );
        let line = std::iter::once(inner.get_program())
            .chain(inner.get_args())
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .env_clear()
            .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
        let out = ran(cmd);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        out.stdout
    };
    let notice = format!("netproxy: refused evil.test:{port} (not in allowlist)");
    let summary = format!("netproxy: blocked 1 request: evil.test:{port}");
    // Raw: the notice after the child's last line, with the summary.
    let seen = on_a_terminal("stty raw -echo;");
    let (marker, notice_at, summary_at) = (
        seen.find("MARKER").unwrap_or_else(|| panic!("{seen:?}")),
        seen.find(&notice).unwrap_or_else(|| panic!("{seen:?}")),
        seen.find(&summary).unwrap_or_else(|| panic!("{seen:?}")),
    );
    assert!(marker < notice_at && notice_at < summary_at, "{seen:?}");
    // Lines end with CR LF on a raw terminal, whose driver adds no CR.
    assert!(
        seen[notice_at..].contains("\r\nnetproxy: blocked"),
        "{seen:?}"
    );
    // Canonical: at once, before the child's next line.
    let seen = on_a_terminal("");
    let (marker, notice_at) = (
        seen.find("MARKER").unwrap_or_else(|| panic!("{seen:?}")),
        seen.find(&notice).unwrap_or_else(|| panic!("{seen:?}")),
    );
    assert!(notice_at < marker, "{seen:?}");
}

/// `text` as one POSIX shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What netproxy still says under `run` at the default level (a warning at start) is a plain
/// line of netproxy's, never a log line with a timestamp and a module path; `RUST_LOG` gives
/// the log.
#[test]
fn run_says_its_warnings_as_plain_lines() {
    let home = Home::new();
    let args = ["run", "--allow", "*", "--allow-local-binding", "--", "true"];
    let out = ran(netproxy(&home, &args, &[]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(
            "netproxy: warning: `*` is allowed (command-line) with allow_local_binding on"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(" WARN "), "{}", out.stderr);
    let out = ran(netproxy(&home, &args, &[("RUST_LOG", "warn")]));
    assert!(out.stderr.contains(" WARN "), "{}", out.stderr);
}

/// At start, `run` says when the session cannot go as expected: an allowlist that allows
/// nothing, limited mode without interception; never under `--learn`, and nothing when the
/// allowlist allows something.
#[test]
fn run_warns_at_start_about_a_session_that_refuses_everything() {
    let home = Home::new();
    let out = ran(netproxy(&home, &["run", "--", "true"], &[]));
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stderr,
        "netproxy: warning: the allowlist is empty: every request will be refused (allow with --allow HOST, or find out what the command needs with --learn FILE)\n"
    );
    let out = ran(netproxy(
        &home,
        &[
            "run", "--allow", "a.test", "--mode", "limited", "--", "true",
        ],
        &[],
    ));
    assert!(
        out.stderr.contains(
            "netproxy: warning: limited mode without HTTPS interception refuses every HTTPS request"
        ),
        "{}",
        out.stderr
    );
    let out = ran(netproxy(
        &home,
        &["run", "--allow", "a.test", "--", "true"],
        &[],
    ));
    assert_eq!(out.stderr, "");
    let out = ran(netproxy(
        &home,
        &[
            "run",
            "--allow",
            "a.test",
            "-c",
            "enabled=false",
            "--",
            "true",
        ],
        &[],
    ));
    assert_eq!(
        out.stderr,
        "netproxy: warning: the proxy is disabled (enabled = false): every request will be refused (503 proxy_disabled)\n"
    );
    let suggestion = home.path().join("s.toml");
    let out = ran(netproxy(
        &home,
        &["run", "--learn", suggestion.to_str().unwrap(), "--", "true"],
        &[],
    ));
    assert!(!out.stderr.contains("allowlist is empty"), "{}", out.stderr);
}

/// npm reads the proxy keys the child gets (`proxy`, `https-proxy`), and is never handed an
/// `http-proxy` it warns about on every call, not even an inherited one.
#[test]
fn npm_reads_its_proxy_keys_without_a_warning() {
    if Command::new("npm").arg("--version").output().is_err() {
        eprintln!("note: no npm here: its keys are not checked");
        return;
    }
    let home = Home::new();
    let out = ran(netproxy(
        &home,
        &[
            "run",
            "--allow",
            "registry.test",
            "--",
            "sh",
            "-c",
            "npm config get proxy; npm config get https-proxy; echo \"$HTTP_PROXY\"",
        ],
        &[("npm_config_http_proxy", "http://corp.invalid:1")],
    ));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[2].starts_with("http://127.0.0.1:"), "{}", out.stdout);
    assert_eq!(lines[0], lines[2], "{}", out.stdout);
    assert_eq!(lines[1], lines[2], "{}", out.stdout);
    assert!(!out.stderr.contains("Unknown env config"), "{}", out.stderr);
    assert_eq!(out.stderr, "", "{}", out.stderr);
}

/// `node` 20 or older as the command gets a warning (its fetch ignores the proxy variables).
/// Its version is asked with nothing of netproxy's environment but `PATH`, and not at all
/// under `--isolate` (it would run outside the namespace).
#[test]
fn an_old_node_is_warned_about_and_asked_its_version_without_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let bin = home.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let seen = home.path().join("probe-env");
    let node = bin.join("node");
    std::fs::write(
        &node,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then env > {}; echo v20.20.2; fi\nexit 0\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PATH", path.as_str()),
        ("NETPROXY_ADMIN_TOKEN", "admin-secret"),
        ("GH_TOKEN", "ghp_realrealrealrealrealrealrealrealreal"),
    ];
    let out = ran(netproxy(
        &home,
        &["run", "--allow", "a.test", "--", "node", "script.js"],
        &env,
    ));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("netproxy: warning: Node 20's built-in fetch ignores the proxy variables"),
        "{}",
        out.stderr
    );
    let probe_env = std::fs::read_to_string(&seen).unwrap();
    assert!(!probe_env.contains("admin-secret"), "{probe_env}");
    assert!(!probe_env.contains("ghp_"), "{probe_env}");
    assert!(!probe_env.contains("HOME="), "{probe_env}");
    // Under --isolate, no probe at all.
    std::fs::remove_file(&seen).unwrap();
    if rustix::process::geteuid().is_root() {
        let out = ran(netproxy(
            &home,
            &[
                "run",
                "--isolate",
                "--allow",
                "a.test",
                "--",
                "node",
                "script.js",
            ],
            &env,
        ));
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(!seen.exists(), "node --version ran under --isolate");
        assert!(!out.stderr.contains("Node 20"), "{}", out.stderr);
    }
}
