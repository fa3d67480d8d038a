//! The real `netproxy` binary: exit codes, output and diagnostics of `check` and `config`.

use std::process::Command;

use crate::support::{Home, chmod, json, ran, resolves};

#[test]
fn help_lists_every_command_and_no_arguments_is_a_usage_error() {
    let home = Home::new();
    let r = home.run(&["--help"]);
    assert_eq!(r.code, 0);
    for cmd in [
        "serve",
        "run",
        "check",
        "config",
        "ca",
        "env",
        "completions",
        "man",
    ] {
        assert!(
            r.stdout.contains(&format!("  {cmd} ")),
            "{cmd} missing from:\n{}",
            r.stdout
        );
    }
    let r = home.run(&[]);
    r.assert_err(2, &["Usage: netproxy"]);
}

#[test]
fn check_credentials_takes_a_url_and_says_when_the_broker_is_off() {
    let home = Home::new();
    let r = home.run(&["check", "--credentials", "example.com"]);
    r.assert_err(2, &["give an http:// or https:// URL"]);
    let r = home.run(&["check", "--credentials", "https://api.github.com/user"]);
    r.assert_out(1, &["the credential broker is off"]);
    let r = home.run(&[
        "check",
        "--credentials",
        "--json",
        "https://api.github.com/user",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["broker"], false);
}

/// The mode bits of `path`.
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn ca_init_creates_the_ca_once_and_path_and_show_describe_it() {
    let home = Home::new();
    let dir = home.user_dir().join("ca");
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    for cmd in [&["ca", "path"][..], &["ca", "show"]] {
        home.run(cmd)
            .assert_err(1, &["there is no MITM CA in", "netproxy ca init"]);
    }
    assert!(!dir.exists(), "path and show create nothing");

    let r = home.run(&["ca", "init"]);
    r.assert_out(0, &["created the MITM CA", &cert.display().to_string()]);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&cert), 0o644);
    assert_eq!(mode(&key), 0o600);
    let (pem, key_bytes) = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    assert!(!r.stdout.contains("PRIVATE") && !r.stderr.contains("PRIVATE"));

    let again = home.run(&["ca", "init"]);
    again.assert_out(0, &["exists already; left as it is"]);
    assert_eq!(std::fs::read(&cert).unwrap(), pem);
    assert_eq!(std::fs::read(&key).unwrap(), key_bytes);

    let r = home.run(&["ca", "path"]);
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, cert.display().to_string().as_str())
    );

    // The fingerprint is the SHA-256 of the certificate's DER, as `openssl x509 -fingerprint`
    // prints it.
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    let expected: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let expected = expected.join(":");
    let r = home.run(&["ca", "show"]);
    r.assert_out(
        0,
        &[
            "subject:     CN=netproxy MITM CA\n",
            &format!("sha256:      {expected}\n"),
            "not before:  20",
            "not after:   20",
            &format!("certificate: {}\n", cert.display()),
        ],
    );
    assert!(again.stdout.contains(&expected), "{}", again.stdout);
    // Valid for ten years (RFC 3339 dates: the year comes first).
    let year = |label: &str| -> i32 {
        let line = r.stdout.lines().find(|l| l.starts_with(label)).unwrap();
        line[label.len()..].trim()[..4].parse().unwrap()
    };
    assert!(
        year("not after:") - year("not before:") >= 9,
        "{}",
        r.stdout
    );
}

#[test]
fn ca_files_that_break_the_rules_are_refused() {
    let prepare = || {
        let home = Home::new();
        home.run(&["ca", "init"]).assert_out(0, &["created"]);
        let dir = home.user_dir().join("ca");
        (home, dir.join("ca.pem"), dir.join("ca.key"))
    };
    let refused = |home: &Home, needles: &[&str]| {
        for cmd in [&["ca", "init"][..], &["ca", "show"], &["ca", "path"]] {
            let r = home.run(cmd);
            r.assert_err(1, needles);
            assert!(r.stdout.is_empty(), "{cmd:?}: {}", r.stdout);
        }
    };

    // A symlinked key.
    let (home, _, key) = prepare();
    let moved = home.path().join("moved.key");
    std::fs::rename(&key, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &key).unwrap();
    refused(
        &home,
        &[
            "refusing to use symlink for the MITM CA key",
            &key.display().to_string(),
        ],
    );

    // A key its group can read.
    let (home, _, key) = prepare();
    chmod(&key, 0o640);
    refused(
        &home,
        &[
            &key.display().to_string(),
            "must not be group/world accessible (mode=0640; expected <= 0600)",
        ],
    );
    assert_eq!(mode(&key), 0o640, "left as it was");

    // Only one of the two files.
    for missing in [0, 1] {
        let (home, cert, key) = prepare();
        let (gone, kept) = if missing == 0 {
            (&cert, &key)
        } else {
            (&key, &cert)
        };
        let before = std::fs::read(kept).unwrap();
        std::fs::remove_file(gone).unwrap();
        refused(
            &home,
            &[
                "both MITM CA files must exist",
                &format!("cert={}", cert.display()),
                &format!("key={}", key.display()),
            ],
        );
        assert!(!gone.exists(), "init does not recreate the missing one");
        assert_eq!(std::fs::read(kept).unwrap(), before);
    }
}

#[test]
fn check_allowed_denied_and_explained() {
    let home = Home::new();
    let r = home.run(&[
        "check",
        "--no-resolve",
        "--allow",
        "**.github.com",
        "https://api.github.com/repos",
    ]);
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

    let r = home.run(&[
        "check",
        "--allow",
        "*",
        "--deny",
        "evil.example",
        "evil.example:443",
    ]);
    r.assert_out(
        1,
        &[
            "reason: denied (source baseline_policy)",
            "rule: evil.example (layer command-line)",
        ],
    );

    let r = home.run(&["check", "--allow", "*", "http://0x7f.1:8080/"]);
    r.assert_out(
        1,
        &["deny: 127.0.0.1:8080 (http, GET)", "not_allowed_local"],
    );

    let r = home.run(&["check", "example.com"]);
    r.assert_out(1, &["reason: not_allowed"]);

    let r = home.run(&[
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
    ]);
    r.assert_out(1, &["method_not_allowed (source mode_guard)"]);
}

#[test]
fn check_json() {
    let home = Home::new();
    let cfg = home.path().join("team.toml");
    std::fs::write(&cfg, "[network.domains]\n\"*.corp.test\" = \"allow\"\n").unwrap();
    let r = home.run(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--json",
        "[::ffff:127.0.0.1]:22",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["reason"], "not_allowed_local");
    assert_eq!(v["source"], "baseline_policy");
    assert_eq!(v["host"], "127.0.0.1");
    assert_eq!(v["port"], 22);
    assert_eq!(v["x_proxy_error"], "blocked-by-allowlist");

    let r = home.run(&[
        "check",
        "--no-resolve",
        "--config",
        cfg.to_str().unwrap(),
        "--json",
        "a.corp.test",
    ]);
    assert_eq!(r.code, 0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["rule"]["pattern"], "*.corp.test");
    assert_eq!(v["rule"]["layer"], cfg.to_str().unwrap());
    assert_eq!(v["addresses_checked_at_connect"], true);

    let r = home.run(&["check", "--json", "--allow", "*", "evil\u{7f}.com"]);
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["reason"], "invalid_host");
}

#[test]
fn check_usage_and_config_errors() {
    let home = Home::new();
    let r = home.run(&["check", "ftp://x.com"]);
    assert_eq!(r.code, 2);
    let r = home.run(&["check", "--protocol", "gopher", "x.com"]);
    assert_eq!(r.code, 2);
    // `dns` names refused lookups in audit events (`run --isolate`), no request to check.
    let r = home.run(&["check", "--protocol", "dns", "x.com"]);
    r.assert_err(2, &["unknown protocol \"dns\""]);
    let r = home.run(&["check", "--mode", "readonly", "x.com"]);
    assert_eq!(r.code, 2);
    let r = home.run(&["check", "-c", "mdoe=\"full\"", "x.com"]);
    r.assert_err(3, &["did you mean `network.mode`"]);
    // A grant without the broker is a config error, not ignored.
    let r = home.run(&[
        "check",
        "-c",
        "credentials.g.env=\"T\"",
        "-c",
        "credentials.g.hosts=[\"a.test\"]",
        "x.com",
    ]);
    r.assert_err(3, &["need the credential broker"]);
    let r = home.run(&["check", "--mitm", "--mode", "limited", "192.0.2.1:443"]);
    assert_eq!(
        r.code, 1,
        "a policy answer, not a config error: {}",
        r.stderr
    );
    assert!(r.stdout.contains("not_allowed"), "{}", r.stdout);
    let r = home.run(&["check", "--config", "/nonexistent/netproxy.toml", "x.com"]);
    r.assert_err(3, &["/nonexistent/netproxy.toml: cannot read file"]);
}

#[test]
fn layers_from_the_environment_and_managed_requirements() {
    let home = Home::new();
    std::fs::create_dir_all(home.system_dir()).unwrap();
    std::fs::create_dir_all(home.user_dir()).unwrap();
    std::fs::write(
        home.user_dir().join("config.toml"),
        "[network]\nmode = \"full\"\nallowed_domains = [\"evil.com\", \"api.corp.test\"]\n",
    )
    .unwrap();
    std::fs::write(
        home.system_dir().join("requirements.toml"),
        "[network]\nallowed_domains = [\"*.corp.test\"]\n",
    )
    .unwrap();
    let r = home.run(&["check", "api.corp.test"]);
    r.assert_err(
        3,
        &[
            "network.domains.\"evil.com\": not covered by the managed allowed_domains",
            "requirements.toml",
        ],
    );

    let req = home.path().join("extra.toml");
    std::fs::write(&req, "[network]\nmode = \"limited\"\n").unwrap();
    std::fs::write(
        home.user_dir().join("config.toml"),
        "[network]\nallowed_domains = [\"api.corp.test\"]\n",
    )
    .unwrap();
    let r = home.run(&[
        "check",
        "--requirements",
        req.to_str().unwrap(),
        "--protocol",
        "http",
        "--method",
        "POST",
        "api.corp.test",
    ]);
    r.assert_out(1, &["method_not_allowed"]);
}

#[test]
fn config_show_names_layers() {
    let home = Home::new();
    let cfg = home.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[network]\nmode = \"limited\"\nadmin_token = \"hunter2\"\n",
    )
    .unwrap();
    let r = home.run(&[
        "config",
        "show",
        "--config",
        cfg.to_str().unwrap(),
        "--allow",
        "a.com",
    ]);
    r.assert_out(
        0,
        &[
            &format!("network.mode = \"limited\"    # {}", cfg.display()),
            "network.enabled = true    # default",
            "network.domains.\"a.com\" = \"allow\"    # command-line",
        ],
    );
    assert!(!r.stdout.contains("hunter2"));

    let r = home.run(&[
        "config",
        "show",
        "--json",
        "-c",
        "proxy_url=\"0.0.0.0:3128\"",
    ]);
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
    let home = Home::new();
    let good = home.path().join("good.toml");
    let bad = home.path().join("bad.toml");
    std::fs::write(&good, "[network]\nmode = \"limited\"\n").unwrap();
    std::fs::write(
        &bad,
        "[network]\nmdoe = \"full\"\nenabled = \"yes\"\n[network.domains]\n\"*\" = \"deny\"\n",
    )
    .unwrap();
    let r = home.run(&["config", "validate", good.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = home.run(&[
        "config",
        "validate",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 3);
    let b = bad.display();
    assert_eq!(
        r.stderr,
        format!(
            "{b}:2:1: network.mdoe: unknown key (did you mean `network.mode`?)\n\
             {b}:3:11: network.enabled: expected true or false, found string \"yes\"\n\
             {b}:5:1: network.domains.\"*\": the global wildcard `*` cannot be denied; use exact hosts or scoped wildcards like *.example.com or **.example.com\n\
             netproxy: 3 problems found\n"
        )
    );
    let r = home.run(&["config", "validate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // One problem: singular. A near miss by a unit suffix is suggested; every bad entry of a
    // list is reported.
    std::fs::write(&bad, "[network.dns]\ntimeout = 500\n").unwrap();
    let r = home.run(&["config", "validate", bad.to_str().unwrap()]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            3,
            format!(
                "{b}:2:1: network.dns.timeout: unknown key (did you mean `network.dns.timeout_ms`?)\n\
                 netproxy: 1 problem found\n"
            )
            .as_str()
        )
    );
    std::fs::write(
        &bad,
        "[network]\nallowed_domains = [\"https://github.com/x\", \"ok.test\", \"a b\"]\n",
    )
    .unwrap();
    let r = home.run(&["config", "validate", bad.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    for needle in [
        format!(
            "{b}:2:20: network.allowed_domains[0]: invalid pattern \"https://github.com/x\": a pattern is a host: did you mean github.com?"
        ),
        format!("{b}:2:55: network.allowed_domains[2]: invalid pattern \"a b\""),
        "netproxy: 2 problems found".to_owned(),
    ] {
        assert!(
            r.stderr.contains(&needle),
            "no {needle:?} in:\n{}",
            r.stderr
        );
    }
    // Starting with a bad file names the same places.
    let r = home.run(&["check", "--config", bad.to_str().unwrap(), "ok.test"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "netproxy: config error: {b}:2:20: network.allowed_domains[0]"
        )),
        "{}",
        r.stderr
    );
}

/// `check` judges through the gate `serve` builds, the upstream route included: with
/// `allow_upstream_proxy` and netproxy's own `HTTPS_PROXY`, an allowed target is reported
/// through the upstream proxy, a `NO_PROXY` host directly, and an upstream proxy whose name
/// does not resolve as the failure `serve` would answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_takes_the_upstream_route_like_serve() {
    use proxy_test_support::{Answer, DnsServer};
    let dns = DnsServer::start().await.unwrap();
    resolves(&dns, "pub.test", "127.0.0.2");
    resolves(&dns, "direct.test", "127.0.0.2");
    dns.set("gone-proxy.test", Answer::NxDomain);
    let ns = format!("dns.nameservers=[\"{}\"]", dns.addr());
    let home = Home::new();
    let run = |proxy: &str, target: &str| {
        let mut cmd = home.command(&[
            "check",
            "--json",
            "-c",
            &ns,
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
            "-c",
            "allow_upstream_proxy=true",
            "--allow",
            "*.test",
            target,
        ]);
        cmd.env("HTTPS_PROXY", proxy).env("NO_PROXY", "direct.test");
        ran(cmd)
    };
    let r = run("http://127.0.0.9:3129", "https://pub.test/");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json(&r.stdout);
    assert_eq!(v["upstream_proxy"], "127.0.0.9:3129", "{v}");
    assert_eq!(v["allowed"], true);
    let r = run("http://127.0.0.9:3129", "https://direct.test/");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(json(&r.stdout)["upstream_proxy"].is_null());
    let r = run("http://gone-proxy.test:3129", "https://pub.test/");
    assert_eq!(r.code, 1, "{}", r.stdout);
    let v = json(&r.stdout);
    assert_eq!(v["failure"]["reason"], "dns_failed", "{v}");
    assert_eq!(v["upstream_proxy"], "gone-proxy.test:3129");
    // The text names the upstream proxy too.
    let mut cmd = home.command(&[
        "check",
        "--no-resolve",
        "-c",
        "allow_upstream_proxy=true",
        "--allow",
        "127.0.0.2",
        "https://127.0.0.2/",
    ]);
    cmd.env("HTTPS_PROXY", "http://127.0.0.9:3129");
    let r = ran(cmd);
    r.assert_out(0, &["upstream proxy: 127.0.0.9:3129"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_resolves_an_allowed_name_like_serve() {
    use proxy_test_support::{Answer, DnsServer};
    let dns = DnsServer::start().await.unwrap();
    resolves(&dns, "pub.test", "127.0.0.2");
    dns.set(
        "loc.test",
        Answer::Addrs(vec![
            "127.0.0.2".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ]),
    );
    dns.set("gone.test", Answer::NxDomain);
    let ns = format!("dns.nameservers=[\"{}\"]", dns.addr());
    let home = Home::new();
    let run = |target: &str| {
        home.run(&[
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
        ])
    };
    let (r_pub, r_loc, r_gone, r_evil) = (
        run("pub.test"),
        run("loc.test"),
        run("gone.test"),
        run("evil.test"),
    );
    r_pub.assert_out(0, &["resolved: 127.0.0.2"]);
    r_loc.assert_out(1, &["not_allowed_local", "resolved to 127.0.0.1"]);
    let nx = "the name gone.test does not exist (NXDOMAIN)";
    r_gone.assert_out(
        1,
        &[
            "fail: gone.test:443",
            &format!(
                "reason: dns_failed (a failure: the policy allows it, reaching it failed): {nx}\n"
            ),
            &format!("failure: dns_failed: {nx} (the proxy answers 502)\n"),
            "rule: *.test (layer command-line) matched\n",
        ],
    );
    assert!(
        !r_gone.stdout.contains("reason: allow"),
        "{}",
        r_gone.stdout
    );
    assert_eq!(r_evil.code, 1);
    // JSON says the failure the same way everywhere: decision, reason, message and failure.
    let r = home.run(&[
        "check",
        "--json",
        "-c",
        &ns,
        "--allow",
        "*.test",
        "gone.test",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = json(&r.stdout);
    assert_eq!(
        (&v["decision"], &v["reason"], &v["message"], &v["allowed"]),
        (
            &"fail".into(),
            &"dns_failed".into(),
            &nx.into(),
            &false.into()
        ),
        "{v}"
    );
    assert_eq!(
        v["failure"],
        serde_json::json!({"reason": "dns_failed", "message": nx})
    );
    assert!(v["x_proxy_error"].is_null(), "{v}");
    assert!(v["remedy"].is_null(), "{v}");
    // A refused name is never resolved.
    assert_eq!(dns.queries_for("evil.test"), 0);
}

#[test]
fn requirements_files_anyone_can_write_are_refused() {
    let home = Home::new();
    let folder = home.path().join("managed");
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
    let r = home.run(&args);
    r.assert_out(1, &["denied"]);

    chmod(&req, 0o666);
    let r = home.run(&args);
    r.assert_err(
        3,
        &[&format!(
            "{}: refused: the file is writable by every user (mode 0666)",
            req.display()
        )],
    );
    chmod(&req, 0o644);

    // A folder anyone can write without the sticky bit: the file can be replaced.
    chmod(&folder, 0o777);
    let r = home.run(&args);
    r.assert_err(
        3,
        &[&format!(
            "it lies in {}, a folder writable by every user without the sticky bit",
            folder.display()
        )],
    );
    // With the sticky bit, only the owner of the file can replace it.
    chmod(&folder, 0o1777);
    assert_eq!(home.run(&args).code, 1);

    // $NETPROXY_SYSTEM_DIR/requirements.toml is held to the same rule.
    std::fs::create_dir(home.system_dir()).unwrap();
    let system = home.system_dir().join("requirements.toml");
    std::fs::write(&system, "[network]\nmode = \"limited\"\n").unwrap();
    chmod(&system, 0o666);
    let r = home.run(&["config", "show"]);
    r.assert_err(3, &[&system.display().to_string()]);
    chmod(&system, 0o600);

    // Not owned by root: in force, with a warning.
    let r = home.run(&args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!r.stderr.contains("does not hold"), "{}", r.stderr);
    if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&req).unwrap()) != 0 {
        eprintln!("note: not running as root: the ownership warning is not tested");
        return;
    }
    std::os::unix::fs::chown(&req, Some(65534), Some(65534)).unwrap();
    let r = home.run(&args);
    r.assert_err(1, &[&format!(
            "netproxy: warning: requirements file {} is owned by uid 65534, not root: it does not hold against processes of the same user",
            req.display()
        )]);
}

#[test]
fn a_managed_allowlist_cannot_be_escaped_through_static_hosts() {
    let home = Home::new();
    let req = home.path().join("req.toml");
    std::fs::write(&req, "[network]\nallowed_domains = [\"*.corp.test\"]\n").unwrap();
    let req = req.to_str().unwrap();
    let r = home.run(&[
        "check",
        "--requirements",
        req,
        "-c",
        "dns.hosts={\"api.corp.test\"=[\"93.184.216.34\"]}",
        "api.corp.test",
    ]);
    r.assert_err(3, &[&format!(
            "command-line: network.dns.hosts.\"api.corp.test\": a static host entry for a name the managed allowed_domains cover (*.corp.test) would point it at any address; only requirements may set it (constrained by {req})"
        )]);
    // Pinned nameservers cannot be swapped for a resolver of the user's choosing.
    std::fs::write(
        home.path().join("req.toml"),
        "[network]\nallowed_domains = [\"*.corp.test\"]\n[network.dns]\nnameservers = [\"127.0.0.53\"]\nhosts = { \"db.corp.test\" = [\"127.0.0.1\"] }\n",
    )
    .unwrap();
    let r = home.run(&[
        "check",
        "--requirements",
        req,
        "-c",
        "dns.nameservers=[\"127.0.0.1:5353\"]",
        "api.corp.test",
    ]);
    r.assert_err(
        3,
        &["network.dns.nameservers: the managed nameservers are pinned"],
    );
    // The managed values are in the effective config, set by the requirements file.
    let r = home.run(&["config", "show", "--json", "--requirements", req]);
    r.assert_out(0, &["127.0.0.53:53", "db.corp.test"]);
    // The managed static host answers without a lookup.
    let r = home.run(&["check", "--requirements", req, "http://db.corp.test/"]);
    assert!(
        r.stdout.contains("resolved: 127.0.0.1"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn ip_shaped_globs_are_refused_and_star_with_local_binding_is_warned_about() {
    let home = Home::new();
    for p in ["10.0.0.*", "*.0.0.1", "10.*.0.1"] {
        let r = home.run(&["check", "--no-resolve", "--allow", p, "10.0.0.1"]);
        assert_eq!(r.code, 3, "{p}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!("--allow {p}")),
            "{p}: {}",
            r.stderr
        );
    }
    let r = home.run(&[
        "check",
        "--no-resolve",
        "--allow",
        "*",
        "--allow-local-binding",
        "example.com",
    ]);
    r.assert_err(0, &["netproxy: warning: `*` is allowed (command-line) with allow_local_binding on (command-line): it admits every local address, cloud metadata included (169.254.169.254, and fd00:ec2::254 over IPv6 on AWS); add deny entries for them"]);
    let r = home.run(&["check", "--no-resolve", "--allow", "*", "example.com"]);
    assert!(!r.stderr.contains("169.254.169.254"), "{}", r.stderr);
}

#[test]
fn completions_for_each_shell_name_the_commands() {
    let home = Home::new();
    let r = home.run(&["completions", "bash"]);
    r.assert_out(
        0,
        &[
            "_netproxy()",
            "complete -F _netproxy",
            "serve",
            "--ready-file",
        ],
    );
    let r = home.run(&["completions", "zsh"]);
    assert!(r.stdout.starts_with("#compdef netproxy"), "{}", r.stdout);
    r.assert_out(0, &["'serve:", "config validate", "--allow"]);
    home.run(&["completions", "fish"]).assert_out(
        0,
        &["complete -c netproxy", "-f -a \"serve\"", "-l ready-file"],
    );
    home.run(&["completions", "tcsh"])
        .assert_err(2, &["invalid value 'tcsh'", "bash", "zsh", "fish"]);
    assert_eq!(home.run(&["completions"]).code, 2);

    // The bash completion loads in bash and completes a subcommand.
    let script = format!(
        "source /dev/stdin <<'EOF'\n{}\nEOF\nCOMP_WORDS=(netproxy ser); COMP_CWORD=1; _netproxy netproxy ser netproxy; echo \"${{COMPREPLY[@]}}\"",
        home.run(&["completions", "bash"]).stdout
    );
    match Command::new("bash").args(["-c", &script]).output() {
        Ok(out) => assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "serve",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("note: no bash ({e}): the completion is not loaded"),
    }
}

#[test]
fn man_prints_the_page_and_writes_one_per_command() {
    let home = Home::new();
    let r = home.run(&["man"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with(&format!(
            ".TH netproxy 1  \"netproxy {}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        r.stdout
    );
    for needle in [
        ".SH NAME",
        ".SH SYNOPSIS",
        "netproxy\\-serve(1)",
        "netproxy\\-completions(1)",
    ] {
        assert!(r.stdout.contains(needle), "no {needle:?} in:\n{}", r.stdout);
    }
    // Reproducible: neither the commit nor the build profile.
    assert!(!r.stdout.contains(env!("NETPROXY_COMMIT")), "{}", r.stdout);

    let dir = home.path().join("man1");
    home.run(&["man", "--out-dir", dir.to_str().unwrap()])
        .assert_out(0, &[]);
    for name in [
        "netproxy.1",
        "netproxy-serve.1",
        "netproxy-run.1",
        "netproxy-env.1",
        "netproxy-config-validate.1",
        "netproxy-ca-init.1",
        "netproxy-completions.1",
        "netproxy-man.1",
    ] {
        let page =
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let title = name.trim_end_matches(".1");
        assert!(
            page.starts_with(&format!(".TH {title} 1 ")),
            "{name}: {page}"
        );
    }
    let env = std::fs::read_to_string(dir.join("netproxy-env.1")).unwrap();
    assert!(env.contains("\\-\\-ready\\-file"), "{env}");
}

#[test]
fn version_names_the_commit_and_the_build_profile() {
    let r = Home::new().run(&["--version"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = r.stdout.trim_end();
    let rest = line
        .strip_prefix(&format!("netproxy {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `netproxy X.Y.Z (COMMIT, PROFILE)`: {line:?}"));
    let (commit, profile) = rest.split_once(", ").unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{line:?}"
    );
    assert!(matches!(profile, "debug" | "release"), "{line:?}");
    assert_eq!(commit, env!("NETPROXY_COMMIT"), "{line:?}");
    // The commit the source is at, when git can tell.
    let git = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match git {
        Ok(out) if out.status.success() => {
            assert_eq!(
                commit,
                String::from_utf8_lossy(&out.stdout).trim(),
                "{line:?}"
            );
        }
        _ => eprintln!("note: git cannot tell the commit here: {line:?} not compared"),
    }
}

/// `netproxy ARGS` on a pseudo-terminal (util-linux `script`), with `env` added to the
/// home's; what the terminal showed (stdout and stderr). `None` without `script`.
fn on_terminal(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Option<String> {
    let inner = home.command(args);
    let quoted: Vec<String> = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &quoted.join(" "), "/dev/null"])
        .env_clear()
        .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .env("TERM", "xterm")
        .envs(env.iter().copied());
    match cmd.output() {
        Ok(out) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(e) => {
            eprintln!("note: no `script` ({e}): colour on a terminal is not tested");
            None
        }
    }
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let home = Home::new();
    const ESC: &str = "\u{1b}[";
    // Help and usage errors (clap).
    for args in [&["--help"][..], &["completions", "tcsh"][..]] {
        let Some(shown) = on_terminal(&home, args, &[]) else {
            return;
        };
        assert!(
            shown.contains(ESC),
            "{args:?}: no colour on a terminal: {shown:?}"
        );
        let shown = on_terminal(&home, args, &[("NO_COLOR", "1")]).unwrap();
        assert!(
            shown.contains("Usage:") || shown.contains("error:"),
            "{shown:?}"
        );
        assert!(
            !shown.contains(ESC),
            "{args:?}: colour despite NO_COLOR: {shown:?}"
        );
        let r = home.run(args);
        assert!(
            !r.stdout.contains(ESC) && !r.stderr.contains(ESC),
            "{args:?}: colour into a pipe"
        );
    }
    // The log: one decision at info level, refused without a lookup.
    let args = [
        "run",
        "--",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "http://127.0.0.1:9/",
    ];
    let log = |env: &[(&str, &str)]| {
        let mut env = env.to_vec();
        env.push(("RUST_LOG", "info"));
        let shown = on_terminal(&home, &args, &env).unwrap();
        assert!(shown.contains("netproxy::audit"), "{shown:?}");
        shown
    };
    assert!(log(&[]).contains(ESC));
    assert!(
        log(&[("NO_COLOR", "")]).contains(ESC),
        "an empty NO_COLOR is unset"
    );
    assert!(!log(&[("NO_COLOR", "1")]).contains(ESC));
    let mut cmd = home.command(&args);
    cmd.env("RUST_LOG", "info");
    let r = ran(cmd);
    assert!(r.stderr.contains("netproxy::audit"), "{}", r.stderr);
    assert!(!r.stderr.contains(ESC), "colour into a pipe: {}", r.stderr);
}

/// `check` names the smallest change that would allow a refused target, on the command line
/// and as the line of a config file; which rule matched even when the addresses then failed;
/// and, under managed requirements, that the change is not the user's to make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_remedy_of_each_refusal() {
    use proxy_test_support::DnsServer;
    let dns = DnsServer::start().await.unwrap();
    resolves(&dns, "near.test", "127.0.0.3");
    let ns = format!("dns.nameservers=[\"{}\"]", dns.addr());
    let home = Home::new();
    let check = |extra: &[&str], target: &str| {
        let mut args = vec!["check", "-c", &ns, "--allow", "*.example.test"];
        args.extend_from_slice(extra);
        args.push(target);
        home.run(&args)
    };
    check(&[], "other.test").assert_out(
        1,
        &[
            "remedy: allow with --allow other.test\n",
            "remedy in a config file, under [network.domains]: \"other.test\" = \"allow\"\n",
        ],
    );
    check(&[], "example.test").assert_out(
        1,
        &[
            "remedy: *.example.test matches only the subdomains: allow with --allow '**.example.test'\n",
            "\"**.example.test\" = \"allow\"",
        ],
    );
    check(&[], "http://10.0.0.5/").assert_out(
        1,
        &["not_allowed_local", "remedy: allow with --allow 10.0.0.5\n"],
    );
    // A name allowed by its rule, then refused by its address: the rule is said.
    check(&["--allow", "near.test"], "near.test").assert_out(
        1,
        &[
            "rule: near.test (layer command-line) matched; its addresses were then refused\n",
            "resolved: 127.0.0.3\n",
            "remedy: it resolved to 127.0.0.3, a local address: treat it as public with -c 'treat_as_public=[\"127.0.0.3/32\"]', or use the address itself (--allow 127.0.0.3)\n",
            "remedy in a config file, under [network]: treat_as_public = [\"127.0.0.3/32\"]\n",
        ],
    );
    check(&["--deny", "evil.test"], "evil.test").assert_out(
        1,
        &["remedy: a deny entry refuses it: drop --deny evil.test\n"],
    );
    check(
        &["--mode", "limited", "--allow", "x.test", "--method", "POST"],
        "http://x.test/",
    )
    .assert_out(
        1,
        &["remedy: limited mode allows GET, HEAD and OPTIONS only: allow with --mode full\n"],
    );
    check(
        &["--mode", "limited", "--allow", "x.test"],
        "https://x.test/",
    )
    .assert_out(
        1,
        &[
            "mitm_required",
            "remedy: it needs HTTPS interception: allow with --mitm\n",
        ],
    );
    // An allowed target has no remedy.
    let r = check(&["--no-resolve"], "api.example.test");
    r.assert_out(0, &[]);
    assert!(!r.stdout.contains("remedy"), "{}", r.stdout);
    // JSON: the same remedy.
    let v = json(&check(&["--json"], "other.test").stdout);
    assert_eq!(
        v["remedy"],
        serde_json::json!({
            "text": "allow with --allow other.test",
            "command_line": "--allow other.test",
            "config": {"table": "network.domains", "line": "\"other.test\" = \"allow\""},
            "managed": false,
        })
    );
    // Under managed requirements: not the user's to change.
    let req = home.path().join("req.toml");
    std::fs::write(
        &req,
        "[network]\nallowed_domains = [\"**.corp.test\"]\ndenied_domains = [\"bad.corp.test\"]\nmanaged_allowed_domains_only = true\n",
    )
    .unwrap();
    let req = req.to_str().unwrap();
    let managed = format!("remedy: not yours to change: the requirements file {req} decides\n");
    for target in ["other.test", "bad.corp.test"] {
        let r = home.run(&["check", "--requirements", req, target]);
        r.assert_out(1, &[&managed]);
        assert!(!r.stdout.contains("config file"), "{}", r.stdout);
    }
    let v = json(
        &home
            .run(&["check", "--json", "--requirements", req, "other.test"])
            .stdout,
    );
    assert_eq!(v["remedy"]["managed"], true, "{v}");
    assert!(v["remedy"]["config"].is_null(), "{v}");
}
