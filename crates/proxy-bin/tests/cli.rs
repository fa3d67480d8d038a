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
