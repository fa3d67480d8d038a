//! `netproxy run --learn FILE` and `netproxy suggest`: a scripted child (sh and curl over
//! HTTP, CONNECT and SOCKS5) touches several hosts and subdomains under learn mode; the
//! suggestion it writes then lets the same child through without learn mode, and refuses a
//! new host.

use std::path::Path;
use std::process::Command;

use proxy_test_support::{DnsServer, HttpOrigin};

use crate::support::{
    Home, audit_lines, json, mode, planted_symlink, public_origin, ran, resolves,
};

/// Names that resolve to the "public" origin on 127.0.0.2 (see [`World::run`]).
const NAMES: &[&str] = &[
    "example.test",
    "a.example.test",
    "b.example.test",
    "api.other.test",
    "alice.github.io",
    "bob.github.io",
    "evil.test",
    "new.test",
];

struct World {
    dns: DnsServer,
    origin: HttpOrigin,
    home: Home,
}

impl World {
    async fn new() -> Self {
        let (dns, origin) = public_origin(NAMES).await;
        // A name that resolves to loopback: local protection refuses it in learn mode too.
        resolves(&dns, "local.test", "127.0.0.1");
        Self {
            dns,
            origin,
            home: Home::new(),
        }
    }

    fn port(&self) -> u16 {
        self.origin.addr().port()
    }

    /// `netproxy run` with the test's DNS server, 127.0.0.2 public, `evil.test` denied, the
    /// options `extra`, and `sh -c script`.
    fn run(&self, extra: &[&str], script: &str) -> Command {
        let dns = format!("dns.nameservers=[\"{}\"]", self.dns.addr());
        let mut args = vec![
            "run",
            "-c",
            &dns,
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "--deny",
            "evil.test",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        self.home.command(&args)
    }

    fn path(&self, name: &str) -> String {
        self.home.path().join(name).to_str().unwrap().to_owned()
    }
}

/// The child: each name once, over plain HTTP, a CONNECT tunnel or SOCKS5, printing
/// `NAME CODE` for each (`CONNECT:CODE` through a tunnel; curl prints 000 for a response that
/// never came, as where SOCKS5 refuses).
fn script(port: u16, names: &[(&str, &str)]) -> String {
    names
        .iter()
        .map(|(name, how)| {
            // Through a tunnel: the proxy's answer to CONNECT, then the origin's.
            let (via, code) = match *how {
                "http" => ("", "%{http_code}"),
                "connect" => ("-p", "%{http_connect}:%{http_code}"),
                "socks" => ("-x \"$ALL_PROXY\"", "%{http_code}"),
                other => panic!("{other}"),
            };
            format!(
                "echo \"{name} $(curl -s -o /dev/null -w '{code}' --max-time 20 {via} http://{name}:{port}/{name})\"\n"
            )
        })
        .collect()
}

/// What the child touches in learn mode.
const USED: &[(&str, &str)] = &[
    ("example.test", "http"),
    ("a.example.test", "connect"),
    ("b.example.test", "socks"),
    ("api.other.test", "http"),
    ("alice.github.io", "connect"),
    ("bob.github.io", "http"),
    ("evil.test", "http"),
    ("local.test", "http"),
];

fn lines_of(stdout: &str) -> Vec<&str> {
    stdout.lines().collect()
}

/// The TOML table of a suggestion, as `--config` reads it.
fn domains(text: &str) -> Vec<String> {
    let v: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    v["network"]["domains"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// The suggestion without its first line (which says where it comes from).
fn body(text: &str) -> &str {
    text.split_once('\n').unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_policy_lets_the_same_child_through_and_refuses_a_new_host() {
    let w = World::new().await;
    let port = w.port();
    let (file, report, audit) = (
        w.path("suggested.toml"),
        w.path("report.json"),
        w.path("audit.jsonl"),
    );
    let audit_log = format!("audit_log={audit:?}");
    let out = ran(w.run(
        &["--learn", &file, "--report", &report, "-c", &audit_log],
        &script(port, USED),
    ));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // Names outside the allowlist (empty here) went through; the deny entry and local
    // protection still refused.
    assert_eq!(
        lines_of(&out.stdout),
        [
            "example.test 200",
            "a.example.test 200:200",
            "b.example.test 200",
            "api.other.test 200",
            "alice.github.io 200:200",
            "bob.github.io 200",
            "evil.test 403",
            "local.test 403",
        ]
    );
    // Loud: a banner at start, a line at exit.
    assert!(
        out.stderr.contains(&format!(
            "netproxy: learn mode: names outside the allowlist are allowed and recorded; the suggestion goes to {file}\n"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "netproxy: learn mode: wrote a suggested policy with 4 patterns to {file}\n"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "netproxy: blocked 2 requests: evil.test:{port} (denied; drop --deny evil.test), local.test:{port} (not_allowed_local; --allow-local-binding)"
        )),
        "{}",
        out.stderr
    );
    let suggestion = std::fs::read_to_string(&file).unwrap();
    assert_eq!(mode(Path::new(&file)), 0o600);
    // The fewest patterns: one wildcard for the apex and two subdomains; github.io is a
    // public suffix, so its sites stay exact; every name used on the origin's port only.
    let mut want = vec![
        format!("**.example.test:{port}"),
        format!("api.other.test:{port}"),
        format!("alice.github.io:{port}"),
        format!("bob.github.io:{port}"),
    ];
    want.sort();
    let mut got = domains(&suggestion);
    got.sort();
    assert_eq!(got, want, "{suggestion}");
    assert!(!suggestion.contains("**.github.io"), "{suggestion}");
    for needle in [
        "3 names (example.test, a.example.test, b.example.test): 3 requests, http, https_connect, socks5_tcp",
        &format!("evil.test:{port}  1 request, http: 1 denied by evil.test (command-line)"),
        &format!("local.test:{port}  1 request, http: 1 not_allowed_local"),
    ] {
        assert!(suggestion.contains(needle), "{needle}\n{suggestion}");
    }
    // Every decision of the session says learn mode, in the report and the audit log.
    let r = json(&std::fs::read_to_string(&report).unwrap());
    let decisions = r["decisions"].as_array().unwrap();
    assert!(!decisions.is_empty());
    assert!(decisions.iter().all(|d| d["learn"] == true), "{r}");
    let allowed: Vec<&serde_json::Value> = decisions
        .iter()
        .filter(|d| d["decision"] == "allow")
        .collect();
    assert!(allowed.iter().all(|d| d["source"] == "decider"), "{r}");
    let lines = audit_lines(Path::new(&audit));
    assert_eq!(lines.len(), decisions.len());
    assert!(
        lines.iter().all(|l| l["network.policy.learn"] == true),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l["network.policy.decision"] == "allow")
            .all(
                |l| l["network.policy.override"] == true && l["network.policy.source"] == "decider"
            ),
        "{lines:?}"
    );

    // `netproxy suggest` gives the same suggestion from the report and from the audit log.
    for from in [&report, &audit] {
        let out = ran(w.home.command(&["suggest", from.as_str()]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(body(&out.stdout), body(&suggestion), "from {from}");
        assert!(
            out.stdout
                .starts_with(&format!("# A policy suggested by netproxy from {from}."))
        );
    }

    // The same child under the suggestion, without learn mode: everything that was allowed is
    // allowed (the deny entry and local protection refuse as before).
    let out = ran(w.run(&["--config", &file], &script(port, USED)));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        lines_of(&out.stdout)[..6],
        [
            "example.test 200",
            "a.example.test 200:200",
            "b.example.test 200",
            "api.other.test 200",
            "alice.github.io 200:200",
            "bob.github.io 200",
        ]
    );
    assert!(!out.stderr.contains("learn mode"), "{}", out.stderr);
    // A new host is refused.
    let out = ran(w.run(
        &["--config", &file],
        &script(
            port,
            &[("new.test", "http"), ("carol.github.io", "connect")],
        ),
    ));
    assert_eq!(
        lines_of(&out.stdout),
        ["new.test 403", "carol.github.io 403:000"]
    );
    assert!(
        out.stderr
            .contains(&format!("new.test:{port} (not_allowed; --allow new.test)")),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_requirements_forbid_learn_mode_or_keep_their_allowlist() {
    let w = World::new().await;
    let port = w.port();
    let file = w.path("suggested.toml");
    let marker = w.path("ran");
    // learn = false: exit 3 naming the file, and the command never runs.
    let forbid = w.path("forbid.toml");
    std::fs::write(&forbid, "[network]\nlearn = false\nask = false\n").unwrap();
    let out = ran(w.run(
        &["--requirements", &forbid, "--learn", &file],
        &format!("touch {marker}"),
    ));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "netproxy run: --learn is not allowed: the managed requirements {forbid} set learn = false"
        )),
        "{}",
        out.stderr
    );
    assert!(!Path::new(&marker).exists() && !Path::new(&file).exists());
    // The same requirements leave a run without --learn alone (`ask` is only read).
    let out = ran(w.run(&["--requirements", &forbid], "true"));
    assert_eq!(out.code, 0, "{}", out.stderr);

    // A managed allowlist that user entries may not widen: learn mode records, but a name
    // outside it stays refused, and what it allows needs no entry.
    let fixed = w.path("fixed.toml");
    std::fs::write(
        &fixed,
        "[network]\nallowed_domains = [\"api.other.test\"]\nmanaged_allowed_domains_only = true\n",
    )
    .unwrap();
    let out = ran(w.run(
        &["--requirements", &fixed, "--learn", &file],
        &script(
            port,
            &[("api.other.test", "http"), ("a.example.test", "connect")],
        ),
    ));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        lines_of(&out.stdout),
        ["api.other.test 200", "a.example.test 403:000"]
    );
    assert!(
        out.stderr.contains(&format!(
            "netproxy: learn mode: the managed requirements {fixed} fix the allowlist: names outside it stay refused"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("learn mode: wrote a suggested policy with 0 patterns"),
        "{}",
        out.stderr
    );
    let suggestion = std::fs::read_to_string(&file).unwrap();
    assert!(domains(&suggestion).is_empty(), "{suggestion}");
    for needle in [
        &format!(
            "a.example.test:{port}  1 request, https_connect: 1 not_allowed: outside an allowlist that managed requirements fix"
        ),
        &format!("api.other.test:{port}  1 request: api.other.test ({fixed})"),
    ] {
        assert!(
            suggestion.contains(needle.as_str()),
            "{needle}\n{suggestion}"
        );
    }
}

#[test]
fn the_suggestion_file_is_written_safely_or_the_run_stops_before_the_command() {
    let home = Home::new();
    // A symlink at the name is replaced, never followed.
    let (victim, link) = planted_symlink(home.path(), "suggested.toml");
    let out = ran(home.command(&["run", "--learn", link.to_str().unwrap(), "--", "true"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(mode(&link), 0o600);
    let text = std::fs::read_to_string(&link).unwrap();
    assert!(domains(&text).is_empty(), "{text}");
    assert!(
        out.stderr
            .contains("learn mode: wrote a suggested policy with 0 patterns"),
        "{}",
        out.stderr
    );
    // A folder that is not there: exit 1 before the command starts; so for a folder as FILE.
    let marker = home.path().join("ran");
    for file in [
        home.path().join("no/such/folder/s.toml"),
        home.path().to_owned(),
    ] {
        let out = ran(home.command(&[
            "run",
            "--learn",
            file.to_str().unwrap(),
            "--",
            "touch",
            marker.to_str().unwrap(),
        ]));
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(
            out.stderr.contains("cannot write the suggestion there"),
            "{}",
            out.stderr
        );
        assert!(!marker.exists());
    }
    // Only files netproxy made for the check are gone: nothing but the link's file is left.
    let mut left: Vec<String> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    left.sort();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn suggest_says_clearly_what_it_cannot_read() {
    let home = Home::new();
    let file = home.path().join("notes.txt");
    std::fs::write(&file, "hello\n").unwrap();
    let out = ran(home.command(&["suggest", file.to_str().unwrap()]));
    out.assert_err(
        1,
        &[&format!(
            "netproxy suggest: {} is neither a --report file",
            file.display()
        )],
    );
    assert!(out.stdout.is_empty());
    let out = ran(home.command(&["suggest", "/nonexistent/report.json"]));
    out.assert_err(
        1,
        &["netproxy suggest: cannot read /nonexistent/report.json"],
    );
    // No file: a usage error.
    assert_eq!(ran(home.command(&["suggest"])).code, 2);
}
