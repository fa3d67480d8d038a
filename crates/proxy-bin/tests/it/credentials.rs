//! The credential broker through `netproxy run` (docs/credentials.md): the child sees dummies
//! of the real tokens' shape, a dummy sent inside intercepted TLS to a host its grant is bound
//! to arrives as the real token, and anywhere else it is refused or passes worthless; the real
//! value never shows in a log line, the report, the admin API or `config show`.

use std::process::Command;

use proxy_test_support::{DnsServer, HttpOrigin, TestCa, TlsOrigin};

use crate::support::{Home, json, ran, resolves};

/// The real tokens netproxy holds.
const GH: &str = "ghp_RealGitHubToken0123456789abcdefABCDE";
const OPENAI: &str = "sk-proj-RealOpenAiKey_0123456789-abcdefghijklmnopqrstuvwxyzAB";

/// `netproxy run` with the broker on, GH_TOKEN and OPENAI_API_KEY in its environment, names
/// from the test DNS, the test CA trusted upstream; `script` runs in the child.
fn run(
    home: &Home,
    dns: &DnsServer,
    ca_file: &std::path::Path,
    extra: &[&str],
    script: &str,
) -> Command {
    let ns = format!("dns.nameservers=[\"{}\"]", dns.addr());
    let mut args = vec![
        "run",
        "-c",
        &ns,
        "-c",
        "treat_as_public=[\"127.0.0.2/32\", \"127.0.0.47/32\"]",
        "-c",
        "credential_broker=true",
        "--allow",
        "api.github.com",
        "--allow",
        "other.test",
        "--allow",
        "plain.test",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let mut cmd = home.command(&args);
    cmd.current_dir(home.path())
        .env("SSL_CERT_FILE", ca_file)
        .env("GH_TOKEN", GH)
        .env("OPENAI_API_KEY", OPENAI);
    cmd
}

/// The child's dummies have the real values' shape and are not them; curl's Bearer, `token`
/// and Basic forms reach a bound host (api.github.com on port 443, through intercepted TLS)
/// as the real token; the dummy to an unbound host passes worthless through an opaque tunnel,
/// and is refused in plain HTTP; an unrelated Authorization passes untouched; no log line,
/// report, admin answer or `config show` holds a real value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_holds_dummies_and_only_bound_hosts_get_the_real_token() {
    let home = Home::new();
    let dns = DnsServer::start().await.unwrap();
    let ca = TestCa::new().unwrap();
    let ca_file = home.path().join("test-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    // api.github.com on port 443 (the built-in binding), one test at a time on this address.
    let github = TlsOrigin::start_at(
        "github",
        "127.0.0.47:443".parse().unwrap(),
        &ca,
        &["api.github.com"],
    )
    .await
    .unwrap();
    let other = TlsOrigin::start("other", "127.0.0.2".parse().unwrap(), &ca, &["other.test"])
        .await
        .unwrap();
    let plain = HttpOrigin::start("plain", "127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    resolves(&dns, "api.github.com", "127.0.0.47");
    resolves(&dns, "other.test", "127.0.0.2");
    resolves(&dns, "plain.test", "127.0.0.2");

    let report = home.path().join("report.json");
    let script = format!(
        "echo \"gh=$GH_TOKEN\"; echo \"openai=$OPENAI_API_KEY\"; \
         curl -sS -o /dev/null -w 'bearer %{{http_code}}\\n' -H \"Authorization: Bearer $GH_TOKEN\" https://api.github.com/user; \
         curl -sS -o /dev/null -w 'token %{{http_code}}\\n' -H \"Authorization: token $GH_TOKEN\" https://api.github.com/repos; \
         curl -sS -o /dev/null -w 'basic %{{http_code}}\\n' -u \"x-access-token:$GH_TOKEN\" https://api.github.com/basic; \
         curl -sS -o /dev/null -w 'own %{{http_code}}\\n' -H 'Authorization: Bearer my-own-token' https://api.github.com/own; \
         curl -sS -o /dev/null -w 'trace %{{http_code}}\\n' -X TRACE -H \"Authorization: Bearer $GH_TOKEN\" https://api.github.com/trace; \
         curl -sS -o /dev/null -w 'opaque %{{http_code}}\\n' -H \"Authorization: Bearer $GH_TOKEN\" https://other.test:{other}/leak; \
         curl -sS -o plain.json -w 'plain %{{http_code}}\\n' -H \"Authorization: Bearer $GH_TOKEN\" http://plain.test:{plain}/leak",
        other = other.addr().port(),
        plain = plain.addr().port(),
    );
    let out = ran(run(
        &home,
        &dns,
        &ca_file,
        &["--report", report.to_str().unwrap()],
        &script,
    ));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let var = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name}: {}", out.stdout))
            .to_owned()
    };
    // Dummies of the real shape: gh's format check and OpenAI's prefix and length hold.
    let gh = var("gh");
    assert_ne!(gh, GH);
    assert!(gh.starts_with("ghp_") && gh.len() == GH.len(), "{gh}");
    assert!(gh[4..].bytes().all(|b| b.is_ascii_alphanumeric()), "{gh}");
    let openai = var("openai");
    assert_ne!(openai, OPENAI);
    assert!(
        openai.starts_with("sk-proj-") && openai.len() == OPENAI.len(),
        "{openai}"
    );
    for line in [
        "bearer 200",
        "token 200",
        "basic 200",
        "own 200",
        "opaque 200",
        "plain 403",
    ] {
        assert!(
            out.stdout.contains(line),
            "{line}: {}{}",
            out.stdout,
            out.stderr
        );
    }
    // The bound host got the real token in each form; the unrelated token untouched.
    let auth: Vec<String> = github
        .seen()
        .iter()
        .map(|s| s.header("authorization").unwrap_or_default().to_owned())
        .collect();
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{GH}"));
    assert_eq!(
        auth,
        [
            format!("Bearer {GH}"),
            format!("token {GH}"),
            format!("Basic {basic}"),
            "Bearer my-own-token".to_owned(),
        ]
    );
    // The unbound host behind an opaque tunnel saw only the worthless dummy; the plain one
    // saw nothing, and the child got the refusal.
    assert_eq!(
        other.seen()[0].header("authorization"),
        Some(format!("Bearer {gh}").as_str())
    );
    assert!(plain.seen().is_empty());
    let refusal = json(&std::fs::read_to_string(home.path().join("plain.json")).unwrap());
    assert_eq!(refusal["reason"], "credential_not_bound");
    // No real value anywhere netproxy wrote.
    let report = std::fs::read_to_string(&report).unwrap();
    for text in [&out.stdout, &out.stderr, &report] {
        assert!(!text.contains(GH) && !text.contains(OPENAI), "{text}");
    }
    assert!(report.contains("credential_not_bound"), "{report}");

    // The same dummy to an intercepted host its grant is not bound to (limited mode intercepts
    // every tunnel): refused inside TLS, and the origin sees nothing.
    let before = other.seen().len();
    let script = format!(
        "curl -sS -o refused.json -w 'intercepted %{{http_code}}\\n' -H \"Authorization: Bearer $GH_TOKEN\" https://other.test:{}/leak",
        other.addr().port()
    );
    let out = ran(run(&home, &dns, &ca_file, &["--mode", "limited"], &script));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("intercepted 403"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let refusal = json(&std::fs::read_to_string(home.path().join("refused.json")).unwrap());
    assert_eq!(refusal["reason"], "credential_not_bound");
    assert_eq!(other.seen().len(), before);
    assert!(!out.stderr.contains(GH));
}

/// `config show` and `check --credentials` with the broker: where the values come from, never
/// the values.
#[test]
fn check_credentials_and_config_show_name_grants_never_values() {
    let home = Home::new();
    let cmd = |args: &[&str]| {
        let mut c = home.command(args);
        c.env("GH_TOKEN", GH);
        ran(c)
    };
    let r = cmd(&[
        "check",
        "-c",
        "credential_broker=true",
        "--credentials",
        "https://api.github.com/user",
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("GH_TOKEN: injected"), "{}", r.stdout);
    let r = cmd(&[
        "check",
        "-c",
        "credential_broker=true",
        "--credentials",
        "http://api.github.com/user",
    ]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("GH_TOKEN: not injected"), "{}", r.stdout);
    let r = cmd(&[
        "check",
        "-c",
        "credential_broker=true",
        "--credentials",
        "https://example.org/",
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("no credential grant is bound"),
        "{}",
        r.stdout
    );
    let r = cmd(&["config", "show", "-c", "credential_broker=true"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for text in [&r.stdout, &r.stderr] {
        assert!(!text.contains(GH));
    }
}

/// A shell that started netproxy without `exec` keeps the real token in its environment, where
/// the child (same user) could read it: `run` warns, naming the grant, never the value; the
/// child still gets only the dummy.
#[test]
fn a_parent_holding_the_real_value_is_warned_about() {
    let home = Home::new();
    let mut inner = home.command(&[
        "run",
        "-c",
        "credential_broker=true",
        "--",
        "sh",
        "-c",
        "echo \"child=$GH_TOKEN\"",
    ]);
    inner.env("GH_TOKEN", GH);
    // `; :` keeps the shell alive around netproxy (no exec of the last command).
    let out = ran(crate::support::wrapped(
        &["sh", "-c", "\"$0\" \"$@\"; :"],
        &inner,
    ));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("holds the real value of GH_TOKEN"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(GH) && !out.stdout.contains(GH));
    assert!(out.stdout.contains("child=ghp_"), "{}", out.stdout);
}

/// `netproxy env` cannot know a running proxy's dummies: with the broker on it says so, and
/// prints no real value.
#[test]
fn env_says_brokered_credentials_need_run() {
    let home = Home::new();
    let mut c = home.command(&[
        "env",
        "-c",
        "credential_broker=true",
        "--http",
        "127.0.0.1:3128",
    ]);
    c.env("GH_TOKEN", GH);
    let out = ran(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("brokered credentials need `netproxy run`"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains(GH) && !out.stderr.contains(GH));
}
