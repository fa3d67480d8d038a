//! `netproxy run --ask` with real children and curl: answered through the admin API (once,
//! session, save, deny, one question for concurrent requests, the timeout) and on a
//! pseudo-terminal (`script`), where the child's output and terminal settings come through
//! unharmed; refusals to start; managed constraints never asked about.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use proxy_test_support::{DnsServer, HttpOrigin, Process, wait_for};

use crate::support::{AdminApi, Home, json, public_origin, ran, wrapped};

/// Names that resolve to the origin on 127.0.0.2 (public here); none is allowed but `ok.test`.
const NAMES: &[&str] = &[
    "ok.test",
    "once.test",
    "sess.test",
    "save.test",
    "deny.test",
    "multi.test",
    "slow.test",
];

struct World {
    dns: DnsServer,
    origin: HttpOrigin,
    home: Home,
}

async fn world() -> World {
    let (dns, origin) = public_origin(NAMES).await;
    World {
        dns,
        origin,
        home: Home::new(),
    }
}

impl World {
    fn port(&self) -> u16 {
        self.origin.addr().port()
    }

    /// `run ARGS --ask [extra] -- sh -c SCRIPT`'s arguments, resolving through the DNS server,
    /// 127.0.0.2 public, `ok.test` allowed.
    fn args(&self, extra: &[&str], script: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--ask",
            "-c",
            &format!("dns.nameservers=[\"{}\"]", self.dns.addr()),
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--allow",
            "ok.test",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.extend(["--", "sh", "-c", script].map(str::to_owned));
        args
    }

    /// netproxy with `args`, without a controlling terminal (`setsid`), `env` added.
    fn detached(&self, args: &[String], env: &[(&str, &str)]) -> Command {
        let mut cmd = wrapped(&["setsid"], &self.home.command(args));
        cmd.envs(env.iter().copied());
        cmd
    }
}

/// Reads a pipe as it comes, for a test to wait for what it holds.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<String>>);

impl Collected {
    fn from(mut pipe: impl std::io::Read + Send + 'static) -> Self {
        let c = Self::default();
        let text = c.0.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                let mut t = text.lock().unwrap();
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        c
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().replace('\r', "")
    }

    /// Waits until the text holds `needle` `n` times.
    fn wait_count(&self, needle: &str, n: usize) -> String {
        wait_for(&format!("{n} × {needle:?}"), || {
            let t = self.text();
            if t.matches(needle).count() >= n {
                Ok(t)
            } else {
                Err(t)
            }
        })
    }

    /// Waits until a line equal to `line` is there.
    fn wait_line(&self, line: &str) {
        wait_for(&format!("the line {line:?}"), || {
            let t = self.text();
            if t.lines().any(|l| l == line) {
                Ok(())
            } else {
                Err(t)
            }
        });
    }
}

/// The one pending decision for `host`, once `waiting` requests wait for it.
fn pending(api: &AdminApi, host: &str, waiting: u64) -> serde_json::Value {
    wait_for(&format!("{waiting} waiting for {host}"), || {
        let (code, body) = api.get("/pending");
        if code != 200 {
            return Err(format!("{code} {body}"));
        }
        let v = json(&body);
        v["pending"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["host"] == host && p["waiting"] == waiting)
            .cloned()
            .ok_or(body)
    })
}

fn answer(api: &AdminApi, id: &serde_json::Value, choice: &str) -> serde_json::Value {
    let (code, body) = api.post(
        &format!("/pending/{id}"),
        &format!(r#"{{"choice":"{choice}"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    json(&body)
}

/// `run --ask --admin 127.0.0.1:0 --admin-token-fd 3` without a terminal: the token from
/// descriptor 3, the admin address from stderr.
fn start_with_admin(
    w: &World,
    args: &[String],
    env: &[(&str, &str)],
) -> (Process, Collected, AdminApi) {
    let token_file = w.home.path().join("token");
    let _ = std::fs::remove_file(&token_file);
    let mut all = args.to_vec();
    let at = all.iter().position(|a| a == "--").unwrap();
    all.splice(
        at..at,
        ["--admin", "127.0.0.1:0", "--admin-token-fd", "3"].map(str::to_owned),
    );
    let inner = w.detached(&all, env);
    let prefix = [
        "sh".as_ref(),
        "-c".as_ref(),
        r#"f=$1; shift; exec "$@" 3>>"$f""#.as_ref(),
        "sh".as_ref(),
        token_file.as_os_str(),
    ];
    let mut cmd = wrapped(&prefix, &inner);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut p = Process::spawn(cmd);
    let line = p.wait_line("the admin API line", |l| l.contains("admin API on"));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_owned();
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let out = Collected::from(p.child().stdout.take().unwrap());
    (p, out, AdminApi::new(&addr, Some(&token)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_decisions_are_answered_through_the_admin_api() {
    let w = world().await;
    let port = w.port();
    let script = format!(
        r#"c() {{ curl -s -o /dev/null -w "$1 %{{http_code}}\n" --max-time 60 $3 "http://$2:{port}/$1"; }}
c allowed ok.test
c once once.test
c once-again once.test
c session sess.test
c session-again sess.test
c save save.test -p
c deny deny.test
c multi-a multi.test & c multi-b multi.test & wait
"#
    );
    let (mut p, out, api) = start_with_admin(&w, &w.args(&[], &script), &[]);
    out.wait_line("allowed 200");
    let asked = |host: &str, waiting: u64| pending(&api, host, waiting);

    // once: this request; the next one asks again.
    let p1 = asked("once.test", 1);
    assert_eq!(p1["port"], port);
    assert_eq!(p1["protocol"], "http");
    assert_eq!(p1["method"], "GET");
    assert!(p1["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(p1["expires"].as_u64() >= p1["since"].as_u64().map(|s| s + 50));
    // Under --ask, the dry run says a miss would be asked about, and holds nothing.
    let (code, body) = api.post(
        "/check",
        &format!(r#"{{"url":"http://other.test:{port}/"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    let check = json(&body);
    assert_eq!(
        (check["decision"].as_str(), check["source"].as_str()),
        (Some("ask"), Some("decider"))
    );
    let a = answer(&api, &p1["id"], "once");
    assert_eq!(
        (a["released"].as_u64(), a["pattern"].as_str()),
        (Some(1), None)
    );
    out.wait_line("once 200");
    let p2 = asked("once.test", 1);
    assert_ne!(p2["id"], p1["id"]);
    // A wrong choice or id changes nothing.
    assert_eq!(
        api.post(&format!("/pending/{}", p2["id"]), r#"{"choice":"always"}"#)
            .0,
        400
    );
    assert_eq!(api.post("/pending/999", r#"{"choice":"once"}"#).0, 404);
    answer(&api, &p2["id"], "once");
    out.wait_line("once-again 200");

    // session: allowed for the rest of the run, without asking again.
    let p3 = asked("sess.test", 1);
    let a = answer(&api, &p3["id"], "session");
    assert_eq!(a["pattern"], format!("sess.test:{port}"));
    out.wait_line("session 200");
    out.wait_line("session-again 200");

    // save: for the session, and in $NETPROXY_HOME/config.toml (a CONNECT here).
    let p4 = asked("save.test", 1);
    assert_eq!(p4["protocol"], "https_connect");
    let a = answer(&api, &p4["id"], "save");
    let saved = w.home.user_dir().join("config.toml");
    assert_eq!(a["saved"], saved.to_str().unwrap());
    out.wait_line("save 200");
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        format!("[network.domains]\n\"save.test:{port}\" = \"allow\"\n")
    );

    // deny: refused, policy_denied.
    let p5 = asked("deny.test", 1);
    answer(&api, &p5["id"], "deny");
    out.wait_line("deny 403");

    // Two requests at once to one target: one question, one answer for both.
    let p6 = asked("multi.test", 2);
    let a = answer(&api, &p6["id"], "once");
    assert_eq!(a["released"], 2);
    out.wait_line("multi-a 200");
    out.wait_line("multi-b 200");
    assert_eq!(p.wait_exit(), Some(0), "{}", out.text());
    let view = api.get("/pending");
    assert_ne!(view.0, 200, "the API closed with the run");
    let (_, stderr) = p.finish();
    assert!(
        stderr.contains(&format!(
            "netproxy: allowed for this session only, not saved: sess.test:{port} (--allow sess.test:{port} allows it next time)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("deny.test:{port} (policy_denied)")),
        "{stderr}"
    );

    // The saved file is read by the next run: save.test is allowed without asking.
    let cmd = w.home.command(&[
        "run",
        "-c",
        &format!("dns.nameservers=[\"{}\"]", w.dns.addr()),
        "-c",
        "treat_as_public=[\"127.0.0.2/32\"]",
        "--",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://save.test:{port}/"),
    ]);
    assert_eq!(ran(cmd).stdout, "200");
}

/// Nobody answers: refused with `approval_timeout` (source `decider`, `blocked-by-policy`)
/// once the timeout passes (shortened for the test through `NETPROXY_ASK_TIMEOUT_MS`, read by
/// debug builds only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_answers_is_refused_approval_timeout() {
    let w = world().await;
    let script = format!(
        "curl -s -D /dev/stderr -w '\\n%{{http_code}}\\n' http://slow.test:{}/; echo end",
        w.port()
    );
    let begin = std::time::Instant::now();
    let (mut p, out, api) = start_with_admin(
        &w,
        &w.args(&[], &script),
        &[("NETPROXY_ASK_TIMEOUT_MS", "1000")],
    );
    let asked = pending(&api, "slow.test", 1);
    out.wait_line("end");
    assert!(begin.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(p.wait_exit(), Some(0));
    let text = out.text();
    let body = text.lines().find(|l| l.starts_with('{')).unwrap();
    let v = json(body);
    assert_eq!(v["reason"], "approval_timeout");
    assert_eq!(v["source"], "decider");
    assert_eq!(v["host"], "slow.test");
    assert!(text.lines().any(|l| l == "403"), "{text}");
    let (_, stderr) = p.finish();
    assert!(
        stderr
            .to_ascii_lowercase()
            .contains("x-proxy-error: blocked-by-policy"),
        "{stderr}"
    );
    assert!(stderr.contains("(approval_timeout)"), "{stderr}");
    // It was asked about, with its short deadline.
    let since = asked["since"].as_u64().unwrap();
    assert!(asked["expires"].as_u64().unwrap() <= since + 2, "{asked}");
    drop(api);
}

/// `--ask` cannot ask anyone: no terminal and no `--admin` (2); a managed `ask = false`
/// forbids it (3); the command never starts.
#[test]
fn ask_refuses_to_start_when_it_cannot_ask() {
    let home = Home::new();
    let marker = home.path().join("ran");
    let touch = ["--", "touch", marker.to_str().unwrap()];
    let mut args = vec!["run", "--ask"];
    args.extend_from_slice(&touch);
    let out = ran(wrapped(&["setsid"], &home.command(&args)));
    out.assert_err(2, &["--ask asks on the terminal", "--admin"]);
    assert!(!marker.exists());

    let req = home.path().join("requirements.toml");
    std::fs::write(&req, "[network]\nask = false\n").unwrap();
    let mut args = vec![
        "run",
        "--ask",
        "--admin",
        "127.0.0.1:0",
        "--requirements",
        req.to_str().unwrap(),
    ];
    args.extend_from_slice(&touch);
    let out = ran(wrapped(&["setsid"], &home.command(&args)));
    out.assert_err(3, &[req.to_str().unwrap(), "network.ask", "forbids --ask"]);
    assert!(!marker.exists());
}

/// Managed constraints are never asked about: with a managed-only allowlist, a miss is refused
/// at once (`not_allowed`, by the baseline policy), and nothing is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_only_allowlist_is_never_widened_by_asking() {
    let w = world().await;
    let req = w.home.path().join("requirements.toml");
    std::fs::write(
        &req,
        "[network]\nallowed_domains = [\"ok.test\"]\nmanaged_allowed_domains_only = true\n",
    )
    .unwrap();
    let script = format!(
        "curl -s -w '\\n' http://once.test:{}/; curl -s -o /dev/null -w 'ok %{{http_code}}\\n' http://ok.test:{}/",
        w.port(),
        w.port()
    );
    let (mut p, out, api) = start_with_admin(
        &w,
        &w.args(&["--requirements", req.to_str().unwrap()], &script),
        &[],
    );
    out.wait_line("ok 200");
    assert_eq!(p.wait_exit(), Some(0));
    let text = out.text();
    let v = json(text.lines().find(|l| l.starts_with('{')).unwrap());
    assert_eq!(v["reason"], "not_allowed");
    assert_eq!(v["source"], "baseline_policy");
    drop(api);
    let (_, stderr) = p.finish();
    assert!(
        stderr.contains("refused without asking")
            && stderr.contains("managed_allowed_domains_only"),
        "{stderr}"
    );
}

/// A command line for `sh -c`, each argument quoted.
fn shell_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_str().unwrap().replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// netproxy with `args` on a pseudo-terminal of its own (`script`): its stdin is the
/// terminal's keyboard, its stdout the screen.
fn on_a_terminal(w: &World, args: &[String], env: &[(&str, &str)]) -> (Process, Collected) {
    let mut inner = w.home.command(args);
    inner.envs(env.iter().copied());
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &shell_line(&inner), "/dev/null"])
        .env_clear()
        .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut p = Process::spawn(cmd);
    let screen = Collected::from(p.child().stdout.take().unwrap());
    (p, screen)
}

fn type_in(p: &mut Process, text: &str) {
    let stdin = p.child().stdin.as_mut().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.flush().unwrap();
}

const QUESTION: &str = "or [d]eny? ";

/// The questions on the terminal, answered with the keyboard: once, session, save (to a file
/// named at the prompt), deny, and Ctrl-C (a refusal). The child's output comes through whole
/// and in order, and its terminal settings (raw mode included) are as it left them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_on_the_terminal_are_answered_with_the_keyboard() {
    let w = world().await;
    let port = w.port();
    let saved = w.home.path().join("agent.toml");
    std::fs::write(&saved, "# the agent's policy\n[network]\nmode = \"full\"\n").unwrap();
    let script = format!(
        r#"c() {{ curl -s -o /dev/null -w "$1 %{{http_code}}\n" --max-time 60 "http://$2:{port}/"; }}
seq 1 300
before=$(stty -g)
c once once.test
c session sess.test
c session-again sess.test
c save save.test
c deny deny.test
c interrupted deny.test
[ "$(stty -g)" = "$before" ] && echo settings-kept
stty raw -echo
raw=$(stty -g)
c raw once.test
[ "$(stty -g)" = "$raw" ] && echo raw-kept
stty "$before"
seq 301 600
"#
    );
    let (mut p, screen) = on_a_terminal(&w, &w.args(&[], &script), &[]);
    // The n-th question, answered with `keys`.
    let answer = |p: &mut Process, n: usize, keys: &str| {
        screen.wait_count(QUESTION, n);
        type_in(p, keys);
    };
    answer(&mut p, 1, "o\n");
    screen.wait_line("once 200");
    answer(&mut p, 2, "s\n");
    screen.wait_line("session-again 200");
    answer(&mut p, 3, "a\n");
    screen.wait_count("save to which config file?", 1);
    type_in(&mut p, &format!("{}\n", saved.display()));
    screen.wait_line("save 200");
    answer(&mut p, 4, "d\n");
    screen.wait_line("deny 403");
    answer(&mut p, 5, "\x03");
    screen.wait_line("interrupted 403");
    screen.wait_line("settings-kept");
    answer(&mut p, 6, "o\n");
    screen.wait_line("raw-kept");
    assert_eq!(p.wait_exit(), Some(0), "{}", screen.text());
    let text = screen.text();
    // The child's output, whole and in order.
    let numbers: Vec<u32> = text.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(numbers, (1..=600).collect::<Vec<_>>(), "{text}");
    for line in [
        format!("netproxy: allowed once.test:{port} once."),
        format!("netproxy: allowed sess.test:{port} for this session."),
        format!(
            "netproxy: allowed save.test:{port} for this session and saved it to {}.",
            saved.display()
        ),
        format!("netproxy: denied deny.test:{port}."),
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
    // Each question came once: session-again was not asked.
    assert_eq!(text.matches(QUESTION).count(), 6, "{text}");
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        format!(
            "# the agent's policy\n[network]\nmode = \"full\"\n\n[network.domains]\n\"save.test:{port}\" = \"allow\"\n"
        )
    );
}

/// Nobody at the keyboard: the question goes away at the timeout and the request is refused
/// `approval_timeout`; the terminal is the child's again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_nobody_answers_on_the_terminal_times_out() {
    let w = world().await;
    let script = format!(
        "curl -s -o /dev/null -w 'slow %{{http_code}}\\n' http://slow.test:{}/; read line; echo \"read $line\"",
        w.port()
    );
    let (mut p, screen) = on_a_terminal(
        &w,
        &w.args(&[], &script),
        &[("NETPROXY_ASK_TIMEOUT_MS", "1000")],
    );
    screen.wait_count(QUESTION, 1);
    screen.wait_line("slow 403");
    // The keyboard is the child's again.
    type_in(&mut p, "typed\n");
    screen.wait_line("read typed");
    assert_eq!(p.wait_exit(), Some(0));
    let text = screen.text();
    assert!(text.contains("timed out"), "{text}");
    let (_, _) = p.finish();
}

/// The process ids of `pid`'s descendants whose command is `comm` (from `/proc`).
fn descendants_named(pid: u32, comm: &str) -> Vec<u32> {
    let stat = |p: u32| std::fs::read_to_string(format!("/proc/{p}/stat")).ok();
    let all: Vec<(u32, u32, String)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let s = stat(p)?;
            let name = s[s.find('(')? + 1..s.rfind(')')?].to_owned();
            let ppid = s[s.rfind(')')? + 1..]
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((p, ppid, name))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, ppid, name) in &all {
            if *ppid == parent {
                frontier.push(*p);
                if name == comm {
                    found.push(*p);
                }
            }
        }
    }
    found
}

/// Under `--ask` CMD has a process group of its own and the terminal: a Ctrl-C typed there
/// reaches it, and a SIGTERM sent to netproxy is still passed on to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_the_child_under_ask() {
    let w = world().await;
    let script = "trap 'echo got INT' INT; trap 'echo got TERM; exit 12' TERM; echo ready; \
                  while :; do sleep 0.05; done";
    let (mut p, screen) = on_a_terminal(&w, &w.args(&[], script), &[]);
    screen.wait_line("ready");
    type_in(&mut p, "\x03");
    // After the terminal's echo of the Ctrl-C (`^C`).
    screen.wait_count("got INT\n", 1);
    let netproxy = wait_for("netproxy's process", || {
        match descendants_named(p.id(), "netproxy").as_slice() {
            [one] => Ok(*one),
            other => Err(format!("{other:?}")),
        }
    });
    let ok = Command::new("kill")
        .args(["-TERM", &netproxy.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    screen.wait_line("got TERM");
    assert_eq!(p.wait_exit(), Some(12), "{}", screen.text());
}
