//! The real `netproxy` binary: exit codes, output and diagnostics.

use std::path::Path;
use std::process::{Command, Output};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs netproxy in an empty environment of its own (no system or user config).
fn netproxy(home: &Path, args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_netproxy"))
        .args(args)
        .env_clear()
        .env("NETPROXY_HOME", home.join("home"))
        .env("NETPROXY_SYSTEM_DIR", home.join("system"))
        .output()
        .expect("netproxy runs");
    Run {
        code: out.status.code().expect("exited"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn help_lists_every_command_and_no_arguments_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = netproxy(dir.path(), &["--help"]);
    assert_eq!(r.code, 0);
    for cmd in ["serve", "run", "check", "config", "ca", "env"] {
        assert!(
            r.stdout.contains(&format!("  {cmd} ")),
            "{cmd} missing from:\n{}",
            r.stdout
        );
    }
    let r = netproxy(dir.path(), &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("Usage: netproxy"), "{}", r.stderr);
}

#[test]
fn commands_not_built_yet_say_so_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in [&["ca", "init"][..], &["ca", "path"]] {
        let r = netproxy(dir.path(), cmd);
        assert_eq!(r.code, 2, "{cmd:?}");
        assert!(r.stderr.contains("not built yet"), "{cmd:?}: {}", r.stderr);
    }
}

#[test]
fn check_allowed_denied_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let r = netproxy(
        dir.path(),
        &[
            "check",
            "--no-resolve",
            "--allow",
            "**.github.com",
            "https://api.github.com/repos",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .starts_with("allow: api.github.com:443 (https_connect, CONNECT)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("rule: **.github.com (layer command-line)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("addresses are checked when connecting"),
        "{}",
        r.stdout
    );

    let r = netproxy(
        dir.path(),
        &[
            "check",
            "--allow",
            "*",
            "--deny",
            "evil.example",
            "evil.example:443",
        ],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("reason: denied (source baseline_policy)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("rule: evil.example (layer command-line)"),
        "{}",
        r.stdout
    );

    let r = netproxy(
        dir.path(),
        &["check", "--allow", "*", "http://0x7f.1:8080/"],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("deny: 127.0.0.1:8080 (http, GET)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("not_allowed_local"), "{}", r.stdout);

    let r = netproxy(dir.path(), &["check", "example.com"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("reason: not_allowed"), "{}", r.stdout);

    let r = netproxy(
        dir.path(),
        &[
            "check",
            "--allow",
            "x.com",
            "--mode",
            "limited",
            "--protocol",
            "http",
            "--method",
            "POST",
            "x.com",
        ],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("method_not_allowed (source mode_guard)"),
        "{}",
        r.stdout
    );
}

#[test]
fn check_json() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("team.toml");
    std::fs::write(&cfg, "[network.domains]\n\"*.corp.test\" = \"allow\"\n").unwrap();
    let r = netproxy(
        dir.path(),
        &[
            "check",
            "--config",
            cfg.to_str().unwrap(),
            "--json",
            "[::ffff:127.0.0.1]:22",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["reason"], "not_allowed_local");
    assert_eq!(v["source"], "baseline_policy");
    assert_eq!(v["host"], "127.0.0.1");
    assert_eq!(v["port"], 22);
    assert_eq!(v["x_proxy_error"], "blocked-by-allowlist");

    let r = netproxy(
        dir.path(),
        &[
            "check",
            "--no-resolve",
            "--config",
            cfg.to_str().unwrap(),
            "--json",
            "a.corp.test",
        ],
    );
    assert_eq!(r.code, 0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["rule"]["pattern"], "*.corp.test");
    assert_eq!(v["rule"]["layer"], cfg.to_str().unwrap());
    assert_eq!(v["addresses_checked_at_connect"], true);

    let r = netproxy(
        dir.path(),
        &["check", "--json", "--allow", "*", "evil\u{7f}.com"],
    );
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["reason"], "invalid_host");
}

#[test]
fn check_usage_and_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let r = netproxy(dir.path(), &["check", "ftp://x.com"]);
    assert_eq!(r.code, 2);
    let r = netproxy(dir.path(), &["check", "--protocol", "gopher", "x.com"]);
    assert_eq!(r.code, 2);
    let r = netproxy(dir.path(), &["check", "--mode", "readonly", "x.com"]);
    assert_eq!(r.code, 2);
    let r = netproxy(dir.path(), &["check", "-c", "mdoe=\"full\"", "x.com"]);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("did you mean `network.mode`"),
        "{}",
        r.stderr
    );
    let r = netproxy(dir.path(), &["check", "--mitm", "x.com"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("not supported yet"), "{}", r.stderr);
    let r = netproxy(
        dir.path(),
        &["check", "--config", "/nonexistent/netproxy.toml", "x.com"],
    );
    assert_eq!(r.code, 3);
    assert!(
        r.stderr
            .contains("/nonexistent/netproxy.toml: cannot read file"),
        "{}",
        r.stderr
    );
}

#[test]
fn layers_from_the_environment_and_managed_requirements() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("system")).unwrap();
    std::fs::create_dir_all(dir.path().join("home")).unwrap();
    std::fs::write(
        dir.path().join("home/config.toml"),
        "[network]\nmode = \"full\"\nallowed_domains = [\"evil.com\", \"api.corp.test\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("system/requirements.toml"),
        "[network]\nallowed_domains = [\"*.corp.test\"]\n",
    )
    .unwrap();
    let r = netproxy(dir.path(), &["check", "api.corp.test"]);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr
            .contains("network.domains.\"evil.com\": not covered by the managed allowed_domains"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("requirements.toml"), "{}", r.stderr);

    let req = dir.path().join("extra.toml");
    std::fs::write(&req, "[network]\nmode = \"limited\"\n").unwrap();
    std::fs::write(
        dir.path().join("home/config.toml"),
        "[network]\nallowed_domains = [\"api.corp.test\"]\n",
    )
    .unwrap();
    let r = netproxy(
        dir.path(),
        &[
            "check",
            "--requirements",
            req.to_str().unwrap(),
            "--protocol",
            "http",
            "--method",
            "POST",
            "api.corp.test",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.contains("method_not_allowed"), "{}", r.stdout);
}

#[test]
fn config_show_names_layers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[network]\nmode = \"limited\"\nadmin_token = \"hunter2\"\n",
    )
    .unwrap();
    let r = netproxy(
        dir.path(),
        &[
            "config",
            "show",
            "--config",
            cfg.to_str().unwrap(),
            "--allow",
            "a.com",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "network.mode = \"limited\"    # {}",
            cfg.display()
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("network.enabled = true    # default"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("network.domains.\"a.com\" = \"allow\"    # command-line"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("hunter2"));

    let r = netproxy(
        dir.path(),
        &[
            "config",
            "show",
            "--json",
            "-c",
            "proxy_url=\"0.0.0.0:3128\"",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let values = v["values"].as_array().unwrap();
    let mode = values.iter().find(|x| x["key"] == "network.mode").unwrap();
    assert_eq!(mode["value"], "full");
    assert_eq!(mode["layer"], "default");
    let url = values
        .iter()
        .find(|x| x["key"] == "network.proxy_url")
        .unwrap();
    assert_eq!(url["layer"], "command-line");
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("clamping to 127.0.0.1:3128")
    );
    assert!(
        r.stderr
            .contains("warning: HTTP proxy requested non-loopback bind"),
        "{}",
        r.stderr
    );
}

#[test]
fn config_validate_reports_every_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&good, "[network]\nmode = \"limited\"\n").unwrap();
    std::fs::write(
        &bad,
        "[network]\nmdoe = \"full\"\nenabled = \"yes\"\n[network.domains]\n\"*\" = \"deny\"\n",
    )
    .unwrap();
    let r = netproxy(dir.path(), &["config", "validate", good.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = netproxy(
        dir.path(),
        &[
            "config",
            "validate",
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 3);
    let b = bad.display();
    assert!(
        r.stderr.contains(&format!(
            "{b}: network.mdoe: unknown key (did you mean `network.mode`?)"
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains(&format!("{b}: network.enabled: expected true or false")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("global wildcard"), "{}", r.stderr);
    assert!(r.stderr.contains("3 problem(s) found"), "{}", r.stderr);
    let r = netproxy(dir.path(), &["config", "validate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_resolves_an_allowed_name_like_serve() {
    use proxy_test_support::{Answer, DnsServer};
    let dns = DnsServer::start().await.unwrap();
    dns.set(
        "pub.test",
        Answer::Addrs(vec!["127.0.0.2".parse().unwrap()]),
    );
    dns.set(
        "loc.test",
        Answer::Addrs(vec![
            "127.0.0.2".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ]),
    );
    dns.set("gone.test", Answer::NxDomain);
    let ns = format!("dns.nameservers=[\"{}\"]", dns.addr());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let run = move |target: &str| {
        netproxy(
            &path,
            &[
                "check",
                "-c",
                &ns,
                "-c",
                "treat_as_public=[\"127.0.0.2/32\"]",
                "--allow",
                "*.test",
                "--deny",
                "evil.test",
                target,
            ],
        )
    };
    let (r_pub, r_loc, r_gone, r_evil) = tokio::task::spawn_blocking(move || {
        (
            run("pub.test"),
            run("loc.test"),
            run("gone.test"),
            run("evil.test"),
        )
    })
    .await
    .unwrap();
    assert_eq!(r_pub.code, 0, "{}", r_pub.stdout);
    assert!(
        r_pub.stdout.contains("resolved: 127.0.0.2"),
        "{}",
        r_pub.stdout
    );
    assert_eq!(r_loc.code, 1);
    assert!(
        r_loc.stdout.contains("not_allowed_local"),
        "{}",
        r_loc.stdout
    );
    assert!(
        r_loc.stdout.contains("resolved to 127.0.0.1"),
        "{}",
        r_loc.stdout
    );
    assert_eq!(r_gone.code, 1);
    assert!(
        r_gone.stdout.contains("failure: dns_failed"),
        "{}",
        r_gone.stdout
    );
    assert_eq!(r_evil.code, 1);
    // A refused name is never resolved.
    assert_eq!(dns.queries_for("evil.test"), 0);
}

/// Sets `path`'s mode.
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn requirements_files_anyone_can_write_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("managed");
    std::fs::create_dir(&folder).unwrap();
    let req = folder.join("req.toml");
    std::fs::write(&req, "[network]\ndenied_domains = [\"example.com\"]\n").unwrap();
    chmod(&req, 0o644);
    let args = [
        "check",
        "--no-resolve",
        "--requirements",
        req.to_str().unwrap(),
        "--allow",
        "**.example.com",
        "example.com",
    ];
    let r = netproxy(dir.path(), &args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.contains("denied"), "{}", r.stdout);

    chmod(&req, 0o666);
    let r = netproxy(dir.path(), &args);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}: refused: the file is writable by every user (mode 0666)",
            req.display()
        )),
        "{}",
        r.stderr
    );
    chmod(&req, 0o644);

    // A folder anyone can write without the sticky bit: the file can be replaced.
    chmod(&folder, 0o777);
    let r = netproxy(dir.path(), &args);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "it lies in {}, a folder writable by every user without the sticky bit",
            folder.display()
        )),
        "{}",
        r.stderr
    );
    // With the sticky bit, only the owner of the file can replace it.
    chmod(&folder, 0o1777);
    assert_eq!(netproxy(dir.path(), &args).code, 1);

    // $NETPROXY_SYSTEM_DIR/requirements.toml is held to the same rule.
    std::fs::create_dir(dir.path().join("system")).unwrap();
    let system = dir.path().join("system/requirements.toml");
    std::fs::write(&system, "[network]\nmode = \"limited\"\n").unwrap();
    chmod(&system, 0o666);
    let r = netproxy(dir.path(), &["config", "show"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(&system.display().to_string()),
        "{}",
        r.stderr
    );
    chmod(&system, 0o600);

    // Not owned by root: in force, with a warning.
    let r = netproxy(dir.path(), &args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!r.stderr.contains("does not hold"), "{}", r.stderr);
    if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&req).unwrap()) != 0 {
        eprintln!("note: not running as root: the ownership warning is not tested");
        return;
    }
    std::os::unix::fs::chown(&req, Some(65534), Some(65534)).unwrap();
    let r = netproxy(dir.path(), &args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "netproxy: warning: requirements file {} is owned by uid 65534, not root: it does not hold against processes of the same user",
            req.display()
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn a_managed_allowlist_cannot_be_escaped_through_static_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.toml");
    std::fs::write(&req, "[network]\nallowed_domains = [\"*.corp.test\"]\n").unwrap();
    let req = req.to_str().unwrap();
    let r = netproxy(
        dir.path(),
        &[
            "check",
            "--requirements",
            req,
            "-c",
            "dns.hosts={\"api.corp.test\"=[\"93.184.216.34\"]}",
            "api.corp.test",
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "command-line: network.dns.hosts.\"api.corp.test\": a static host entry for a name the managed allowed_domains cover (*.corp.test) would point it at any address; only requirements may set it (constrained by {req})"
        )),
        "{}",
        r.stderr
    );
    // Pinned nameservers cannot be swapped for a resolver of the user's choosing.
    std::fs::write(
        dir.path().join("req.toml"),
        "[network]\nallowed_domains = [\"*.corp.test\"]\n[network.dns]\nnameservers = [\"127.0.0.53\"]\nhosts = { \"db.corp.test\" = [\"127.0.0.1\"] }\n",
    )
    .unwrap();
    let r = netproxy(
        dir.path(),
        &[
            "check",
            "--requirements",
            req,
            "-c",
            "dns.nameservers=[\"127.0.0.1:5353\"]",
            "api.corp.test",
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("network.dns.nameservers: the managed nameservers are pinned"),
        "{}",
        r.stderr
    );
    // The managed values are in the effective config, set by the requirements file.
    let r = netproxy(
        dir.path(),
        &["config", "show", "--json", "--requirements", req],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("127.0.0.53:53"), "{}", r.stdout);
    assert!(r.stdout.contains("db.corp.test"), "{}", r.stdout);
    // The managed static host answers without a lookup.
    let r = netproxy(
        dir.path(),
        &["check", "--requirements", req, "http://db.corp.test/"],
    );
    assert!(
        r.stdout.contains("resolved: 127.0.0.1"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

/// An admin API request with curl: (status, body).
fn admin(addr: &str, token: &str, method: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("a status line");
    (code.parse().expect("a status"), body.to_owned())
}

/// Kills the child it holds when dropped, also when a test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_reload_that_breaks_the_requirements_keeps_the_last_good_policy() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.toml");
    std::fs::write(
        &req,
        "[network]\nallowed_domains = [\"*.corp.test\"]\nallowlist_expansion_enabled = true\n",
    )
    .unwrap();
    let cfg = dir.path().join("netproxy.toml");
    std::fs::write(&cfg, "[network.domains]\n\"one.example\" = \"allow\"\n").unwrap();
    let ready = dir.path().join("ready.json");
    let token = "reload-test-token";
    let mut command = Command::new(env!("CARGO_BIN_EXE_netproxy"));
    command
        .args([
            "serve",
            "--no-socks",
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .arg("--config")
        .arg(&cfg)
        .arg("--requirements")
        .arg(&req)
        .env_clear()
        .env("NETPROXY_HOME", dir.path().join("home"))
        .env("NETPROXY_SYSTEM_DIR", dir.path().join("system"))
        .env("NETPROXY_ADMIN_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = KillOnDrop(command.spawn().unwrap());
    let begin = Instant::now();
    while !ready.exists() {
        assert!(begin.elapsed() < Duration::from_secs(30), "not ready");
        assert!(child.0.try_wait().unwrap().is_none(), "netproxy exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    let addr = v["admin"].as_str().unwrap().to_owned();
    let allowed = || {
        let (code, body) = admin(&addr, token, "GET", "/patterns");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut list: Vec<String> = v["allowed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        list.sort();
        list
    };
    assert_eq!(allowed(), ["*.corp.test", "one.example"]);

    // A file now gives a managed name a static address: refused, the old policy stays.
    std::fs::write(
        &cfg,
        "[network.domains]\n\"two.example\" = \"allow\"\n[network.dns.hosts]\n\"api.corp.test\" = [\"93.184.216.34\"]\n",
    )
    .unwrap();
    let (code, body) = admin(&addr, token, "POST", "/reload");
    assert_eq!(code, 409, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reason"], "constraint", "{body}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("network.dns.hosts.\"api.corp.test\": a static host entry for a name the managed allowed_domains cover"),
        "{body}"
    );
    assert_eq!(allowed(), ["*.corp.test", "one.example"]);

    // The requirements file turns world-writable: refused too.
    std::fs::write(&cfg, "[network.domains]\n\"two.example\" = \"allow\"\n").unwrap();
    chmod(&req, 0o666);
    let (code, body) = admin(&addr, token, "POST", "/reload");
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("the file is writable by every user"),
        "{body}"
    );
    assert_eq!(allowed(), ["*.corp.test", "one.example"]);

    // Fixed, the reload goes through.
    chmod(&req, 0o644);
    let (code, body) = admin(&addr, token, "POST", "/reload");
    assert_eq!(code, 200, "{body}");
    assert_eq!(allowed(), ["*.corp.test", "two.example"]);
}

#[test]
fn ip_shaped_globs_are_refused_and_star_with_local_binding_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    for p in ["10.0.0.*", "*.0.0.1", "10.*.0.1"] {
        let r = netproxy(
            dir.path(),
            &["check", "--no-resolve", "--allow", p, "10.0.0.1"],
        );
        assert_eq!(r.code, 3, "{p}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!("--allow {p}")),
            "{p}: {}",
            r.stderr
        );
    }
    let r = netproxy(
        dir.path(),
        &[
            "check",
            "--no-resolve",
            "--allow",
            "*",
            "--allow-local-binding",
            "example.com",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("netproxy: warning: `*` is allowed (command-line) with allow_local_binding on (command-line): it admits every local address, cloud metadata included (169.254.169.254, and fd00:ec2::254 over IPv6 on AWS); add deny entries for them"),
        "{}",
        r.stderr
    );
    let r = netproxy(
        dir.path(),
        &["check", "--no-resolve", "--allow", "*", "example.com"],
    );
    assert!(!r.stderr.contains("169.254.169.254"), "{}", r.stderr);
}
