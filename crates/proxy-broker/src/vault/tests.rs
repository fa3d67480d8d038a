#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use proxy_core::Host;

use crate::{
    Destination, Form, GrantSpec, Scheme, SecretSource, SendStyle, SpecError, Unbound, Vault,
    VaultError, Verdict, WithheldWhy, dummy_env_keys,
};

pub(crate) const GH_PAT: &str =
    "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghi";
pub(crate) const GH_CLASSIC: &str = "ghp_RealRealRealRealRealRealReal01234567";
pub(crate) const GH_OTHER: &str = "ghp_OtherOtherOtherOtherOtherOther012345";
pub(crate) const GHE: &str = "ghp_EnterpriseEnterpriseEnterprise012345";
pub(crate) const OPENAI: &str =
    "sk-proj-RealKeyRealKey_RealKeyRealKey-RealKeyRealKey0123456789RealKeyRealKey0123";

/// netproxy's environment made of `pairs`.
pub(crate) fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |var| pairs.iter().find(|(k, _)| k == var).map(|(_, v)| v.into())
}

pub(crate) fn vault(pairs: &[(&str, &str)]) -> Vault {
    Vault::new(env_of(pairs), &[]).unwrap()
}

pub(crate) fn host(s: &str) -> Host {
    Host::parse(s).unwrap()
}

fn spec(name: &str, env: &str, hosts: &[&str]) -> GrantSpec {
    let mut s = GrantSpec::new(name, env);
    s.hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
    s
}

fn spec_error(pairs: &[(&str, &str)], specs: &[GrantSpec]) -> String {
    match Vault::new(env_of(pairs), specs) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn set<'a>(v: &'a Vault, key: &str) -> Option<&'a str> {
    v.grants()
        .iter()
        .find(|g| g.env() == key)
        .map(crate::Grant::dummy)
}

/// The dummy contract (docs/credentials.md, "Dummies"): same prefix, same length for a long
/// value, punctuation at the same places, letters and digits elsewhere, never the real value.
fn assert_look_alike(real: &str, dummy: &str, prefix: &str) {
    assert_ne!(real, dummy);
    assert!(dummy.starts_with(prefix), "{dummy}");
    assert_eq!(real.len(), dummy.len());
    for (r, d) in real.bytes().zip(dummy.bytes()) {
        if r.is_ascii_alphanumeric() {
            assert!(d.is_ascii_alphanumeric());
        } else {
            assert_eq!(r, d);
        }
    }
}

#[test]
fn the_child_gets_look_alike_dummies_and_the_enterprise_token_without_gh_host_is_withheld() {
    let v = vault(&[
        ("GH_TOKEN", GH_PAT),
        ("OPENAI_API_KEY", OPENAI),
        ("GH_ENTERPRISE_TOKEN", GHE),
        ("PATH", "/usr/bin"),
    ]);
    let child = v.child_env();
    let keys: Vec<&str> = child.set.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["GH_TOKEN", "OPENAI_API_KEY"]);
    assert_look_alike(GH_PAT, &child.set[0].1, "github_pat_");
    assert_look_alike(OPENAI, &child.set[1].1, "sk-proj-");
    // Unlike the reference (which leaves it real), the enterprise token never reaches the child.
    assert_eq!(child.remove, ["GH_ENTERPRISE_TOKEN"]);
    assert_eq!(v.withheld().len(), 1);
    assert_eq!(v.withheld()[0].why, WithheldWhy::GhHostUnset);
    let warning = v.withheld()[0].to_string();
    assert!(
        warning.starts_with(
            "GH_ENTERPRISE_TOKEN is withheld from the child and not brokered: GH_HOST is unset"
        ),
        "{warning}"
    );
    assert!(!warning.contains(GHE));

    // The keys that still hold a dummy: the user's own OPENAI_API_KEY is not one.
    let mut env = child.set.clone();
    env.push(("PATH".into(), "/usr/bin".into()));
    assert_eq!(dummy_env_keys(&env, &v), ["GH_TOKEN", "OPENAI_API_KEY"]);
    env[1].1 = "sk-mine".into();
    assert_eq!(dummy_env_keys(&env, &v), ["GH_TOKEN"]);
    // Nothing was changed by asking.
    assert_eq!(env[1].1, "sk-mine");
    // A dummy copied under another key is a dummy too; another session's dummy is not.
    env.push(("COPY".into(), child.set[0].1.clone()));
    let other = vault(&[("GH_TOKEN", GH_PAT)]);
    env.push(("OTHER".into(), other.child_env().set[0].1.clone()));
    assert_eq!(dummy_env_keys(&env, &v), ["GH_TOKEN", "COPY"]);
}

#[test]
fn github_and_openai_dummies_pass_a_format_check() {
    let v = vault(&[
        ("GH_TOKEN", GH_CLASSIC),
        ("GITHUB_TOKEN", "gho_16C7e42F292c6912E7710c838347Ae178B4a"),
        (
            "OPENAI_API_KEY",
            "sk-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKl",
        ),
    ]);
    let is = |s: &str, prefix: &str, len: usize| {
        s.len() == len
            && s.strip_prefix(prefix)
                .is_some_and(|t| t.bytes().all(|b| b.is_ascii_alphanumeric()))
    };
    // `gh` and GitHub's secret scanning: ghp_/gho_ followed by 36 of [A-Za-z0-9].
    assert!(is(set(&v, "GH_TOKEN").unwrap(), "ghp_", 40));
    assert!(is(set(&v, "GITHUB_TOKEN").unwrap(), "gho_", 40));
    // OpenAI's SDKs: sk- and at least 48 more.
    assert!(is(set(&v, "OPENAI_API_KEY").unwrap(), "sk-", 51));
}

#[test]
fn dummies_are_unique_per_session_and_differ_between_sessions() {
    let same = [("GH_TOKEN", GH_CLASSIC), ("GITHUB_TOKEN", GH_CLASSIC)];
    let a = vault(&same);
    let b = vault(&same);
    let (a1, a2) = (
        set(&a, "GH_TOKEN").unwrap(),
        set(&a, "GITHUB_TOKEN").unwrap(),
    );
    assert_ne!(a1, a2, "one secret in two variables: two dummies");
    assert_ne!(
        a1,
        set(&b, "GH_TOKEN").unwrap(),
        "another session: another dummy"
    );
    assert_ne!(a1, GH_CLASSIC);
}

#[test]
fn a_dummy_is_never_the_real_value_nor_inside_another() {
    // A random source that yields only zeros draws `ghp_000…`: the real value itself. It is
    // drawn again, and given up with an error naming the grant, never returned.
    let real = format!("ghp_{}", "0".repeat(36));
    let mut v = Vault::new(env_of(&[("GH_TOKEN", &real)]), &[]).unwrap();
    let zeros = |buf: &mut [u8]| {
        buf.fill(0);
        Ok(())
    };
    let e = v.draw_dummies(zeros).unwrap_err();
    assert!(matches!(e, VaultError::Random(_)), "{e}");
    assert!(e.to_string().contains("GH_TOKEN") && !e.to_string().contains(&real));
    // Two grants and a source that repeats itself: the second dummy would equal the first.
    let mut v = vault(&[("GH_TOKEN", GH_CLASSIC), ("GITHUB_TOKEN", GH_OTHER)]);
    let e = v.draw_dummies(zeros).unwrap_err();
    assert!(e.to_string().contains("GITHUB_TOKEN"), "{e}");
}

#[test]
fn unset_empty_and_unusable_builtins() {
    // Unset or empty: no grant, nothing removed (an empty variable holds nothing secret).
    let v = vault(&[("GH_TOKEN", "  "), ("OPENAI_API_KEY", "")]);
    assert!(v.is_empty());
    assert_eq!(v.child_env(), crate::ChildEnv::default());
    // Surrounding whitespace is not part of the token.
    let v = vault(&[("GH_TOKEN", &format!(" {GH_CLASSIC}\n"))]);
    assert_eq!(v.grants()[0].real(), GH_CLASSIC);
    // Not UTF-8, or not sendable in a header: withheld, with a warning.
    let env = |var: &str| match var {
        "GH_TOKEN" => Some(OsString::from_vec(b"ghp_\xffbad".to_vec())),
        "GITHUB_TOKEN" => Some("ghp_two words".into()),
        _ => None,
    };
    let v = Vault::new(env, &[]).unwrap();
    assert!(v.is_empty());
    assert_eq!(v.child_env().remove, ["GH_TOKEN", "GITHUB_TOKEN"]);
    let why: Vec<_> = v.withheld().iter().map(|w| w.why.clone()).collect();
    assert_eq!(why, [WithheldWhy::NotUtf8, WithheldWhy::Unusable]);
    assert!(!v.withheld()[1].to_string().contains("words"));
}

#[test]
fn cloud_tokens_are_bound_to_github_cloud_hosts_only() {
    let v = vault(&[("GH_TOKEN", GH_CLASSIC), ("GH_HOST", "ghes.corp.example")]);
    for yes in [
        "github.com",
        "api.github.com",
        "octo.ghe.com",
        "api.octo.ghe.com",
    ] {
        assert!(v.binds(&host(yes), 443), "{yes}");
        assert!(!v.binds(&host(yes), 80), "{yes}");
    }
    // A GH_HOST naming an enterprise server does not re-bind the cloud token.
    for no in [
        "ghes.corp.example",
        "ghe.com",
        "gist.github.com",
        "evil.example",
    ] {
        assert!(!v.binds(&host(no), 443), "{no}");
    }
    let ghes = host("ghes.corp.example");
    let e = v.explain(
        &Destination::new(Scheme::Https, &ghes, 443, "/api/v3"),
        false,
    );
    // Only the enterprise variables would be bound there, and they are unset.
    let bound: Vec<_> = e
        .entries
        .iter()
        .map(|e| (e.grant.as_str(), &e.verdict))
        .collect();
    assert_eq!(
        bound,
        [
            ("GH_ENTERPRISE_TOKEN", &Verdict::Unset),
            ("GITHUB_ENTERPRISE_TOKEN", &Verdict::Unset)
        ]
    );
}

#[test]
fn enterprise_tokens_are_bound_to_the_gh_host_only() {
    for gh_host in [
        "ghes.corp.example",
        "GHES.Corp.Example.",
        "https://ghes.corp.example/",
    ] {
        let v = vault(&[("GH_ENTERPRISE_TOKEN", GHE), ("GH_HOST", gh_host)]);
        assert_eq!(v.grants().len(), 1, "{gh_host}");
        assert!(v.binds(&host("ghes.corp.example"), 443), "{gh_host}");
        assert!(!v.binds(&host("api.github.com"), 443));
        assert!(!v.binds(&host("api.ghes.corp.example"), 443));
        assert!(v.withheld().is_empty());
    }
    // GITHUB_ENTERPRISE_TOKEN likewise.
    let v = vault(&[
        ("GITHUB_ENTERPRISE_TOKEN", GHE),
        ("GH_HOST", "ghes.corp.example"),
    ]);
    assert_eq!(v.grants()[0].name(), "GITHUB_ENTERPRISE_TOKEN");
    // A cloud GH_HOST, or one that is not a host: withheld, with the reason.
    for (gh_host, why) in [
        (
            "github.com",
            WithheldWhy::GhHostCloud("github.com".to_owned()),
        ),
        (
            "api.GitHub.com",
            WithheldWhy::GhHostCloud("api.github.com".to_owned()),
        ),
        (
            "astemu.ghe.com",
            WithheldWhy::GhHostCloud("astemu.ghe.com".to_owned()),
        ),
        (
            "ghes.corp.example:8443",
            WithheldWhy::GhHostInvalid("ghes.corp.example:8443".to_owned()),
        ),
        ("", WithheldWhy::GhHostUnset),
    ] {
        let v = vault(&[("GH_ENTERPRISE_TOKEN", GHE), ("GH_HOST", gh_host)]);
        assert!(v.is_empty(), "{gh_host}");
        assert_eq!(v.withheld()[0].why, why, "{gh_host}");
        assert_eq!(v.child_env().remove, ["GH_ENTERPRISE_TOKEN"]);
    }
    // GH_HOST on ghe.com: the cloud token covers it.
    let v = vault(&[("GH_TOKEN", GH_CLASSIC), ("GH_HOST", "astemu.ghe.com")]);
    assert!(v.binds(&host("api.astemu.ghe.com"), 443));
}

#[test]
fn configured_grants_bind_what_they_say_and_are_sent_how_they_say() {
    let mut gitlab = spec(
        "gitlab",
        "GITLAB_TOKEN",
        &["GitLab.Example.com.", "*.gitlab.example.com"],
    );
    gitlab.path_prefixes = vec!["/api/v4/".into()];
    gitlab.send = vec![SendStyle::Header, SendStyle::Basic];
    gitlab.header = Some("PRIVATE-TOKEN".into());
    gitlab.basic_user = Some("oauth2".into());
    let mut local = spec("local", "LOCAL_KEY", &["127.0.0.1"]);
    local.port = Some(8080);
    local.secret = Some(SecretSource::EnvVar("LOCAL_KEY_REAL".into()));
    let v = Vault::new(
        env_of(&[
            ("GITLAB_TOKEN", "glpat-AbCdEfGhIjKlMnOpQrSt"),
            ("LOCAL_KEY_REAL", "0123456789abcdef0123456789abcdef"),
        ]),
        &[gitlab, local],
    )
    .unwrap();
    let g = v.grant("gitlab").unwrap();
    assert!(!g.is_builtin());
    assert_eq!(g.env(), "GITLAB_TOKEN");
    assert_eq!(g.source(), &SecretSource::EnvVar("GITLAB_TOKEN".into()));
    assert_eq!(
        g.binding().to_string(),
        "gitlab.example.com, *.gitlab.example.com :443 [/api/v4]"
    );
    let forms: Vec<String> = g.forms().iter().map(ToString::to_string).collect();
    assert_eq!(forms, ["header private-token", "basic (user oauth2)"]);
    assert!(g.dummy().starts_with("glpat-") && g.dummy().len() == 26);
    let l = v.grant("local").unwrap();
    assert_eq!(l.forms(), [Form::Bearer]);
    assert_eq!(l.binding().port(), 8080);
    assert!(l.dummy().bytes().all(|b| b.is_ascii_hexdigit()));
    // The child gets both dummies; the local grant's real variable is removed.
    let child = v.child_env();
    assert_eq!(child.set.len(), 2);
    assert_eq!(child.remove, ["LOCAL_KEY_REAL"]);
    assert!(v.binds(&host("127.0.0.1"), 8080));
    assert!(!v.binds(&host("127.0.0.1"), 443));
}

#[test]
fn a_configured_grant_reads_a_file_and_replaces_a_builtin_of_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{GH_OTHER}\n")).unwrap();
    let mut mine = spec(
        "my-github",
        "GH_TOKEN",
        &["uploads.github.com", "api.github.com"],
    );
    mine.secret = Some(SecretSource::File(path.clone()));
    let v = Vault::new(
        env_of(&[("GH_TOKEN", GH_CLASSIC), ("GITHUB_TOKEN", GH_CLASSIC)]),
        &[mine],
    )
    .unwrap();
    let names: Vec<&str> = v.grants().iter().map(crate::Grant::name).collect();
    assert_eq!(names, ["GITHUB_TOKEN", "my-github"]);
    let g = v.grant("my-github").unwrap();
    assert_eq!(g.real(), GH_OTHER);
    assert_eq!(g.source(), &SecretSource::File(path));
    assert!(v.binds(&host("uploads.github.com"), 443));
    // GH_TOKEN is the configured grant's: its dummy, and the built-in's real value nowhere.
    let child = v.child_env();
    assert!(
        child
            .set
            .iter()
            .any(|(k, d)| k == "GH_TOKEN" && d == g.dummy())
    );
    assert!(child.remove.is_empty());
}

#[test]
fn bad_configured_grants_are_refused_with_a_clear_error() {
    let with = |f: &dyn Fn(&mut GrantSpec)| {
        let mut s = spec("g", "G_TOKEN", &["api.example.com"]);
        f(&mut s);
        s
    };
    let env = [("G_TOKEN", "secret-value-0123456789")];
    for (s, expected) in [
        (
            with(&|s| s.hosts.clear()),
            "credential grant g: a grant needs at least one host",
        ),
        (
            with(&|s| s.hosts = vec!["*.com".into()]),
            "the only wildcard is a leading `*.`",
        ),
        (
            with(&|s| s.hosts = vec!["api.example.com:443".into()]),
            "invalid host \"api.example.com:443\": a host takes no port",
        ),
        (with(&|s| s.port = Some(0)), "port 0 is not a port"),
        (
            with(&|s| s.path_prefixes = vec!["/v1/../admin".into()]),
            "invalid path prefix \"/v1/../admin\"",
        ),
        (
            with(&|s| s.path_prefixes = vec!["v1".into()]),
            "must start with `/`",
        ),
        (
            with(&|s| s.send = vec![SendStyle::Header]),
            "send = \"header\" needs `header`",
        ),
        (
            with(&|s| s.header = Some("x-key".into())),
            "`header` and `prefix` are only for send = \"header\"",
        ),
        (
            with(&|s| s.prefix = Some("Key ".into())),
            "`header` and `prefix` are only for send = \"header\"",
        ),
        (
            with(&|s| s.basic_user = Some("me".into())),
            "`basic_user` is only for send = \"basic\"",
        ),
        (
            with(&|s| {
                s.send = vec![SendStyle::Header];
                s.header = Some("Host".into());
            }),
            "header \"Host\" cannot carry a credential",
        ),
        (
            with(&|s| {
                s.send = vec![SendStyle::Header];
                s.header = Some("x key".into());
            }),
            "header \"x key\" cannot carry a credential",
        ),
        (
            with(&|s| {
                s.send = vec![SendStyle::Header];
                s.header = Some("x-key".into());
                s.prefix = Some("Key\r\n".into());
            }),
            "prefix \"Key\\r\\n\" must be printable ASCII",
        ),
        (
            with(&|s| {
                s.send = vec![SendStyle::Basic];
                s.basic_user = Some("a:b".into());
            }),
            "basic_user \"a:b\" must be printable ASCII without `:`",
        ),
        (with(&|s| s.name = "a b".into()), "invalid grant name"),
        (with(&|s| s.name = String::new()), "invalid grant name"),
        (
            with(&|s| s.env = "1TOKEN".into()),
            "invalid variable name \"1TOKEN\"",
        ),
        (
            with(&|s| s.env = "NETPROXY_ADMIN_TOKEN".into()),
            "not NETPROXY_*",
        ),
        (
            with(&|s| s.secret = Some(SecretSource::EnvVar("BAD-NAME".into()))),
            "invalid variable name \"BAD-NAME\"",
        ),
        (
            with(&|s| s.secret = Some(SecretSource::EnvVar("UNSET".into()))),
            "credential grant g: missing required environment variable UNSET",
        ),
        (
            with(&|s| s.secret = Some(SecretSource::File("relative".into()))),
            "secret_file must be an absolute path",
        ),
        (
            with(&|s| s.name = "GH_TOKEN".into()),
            "credential grant GH_TOKEN: another grant has this name",
        ),
    ] {
        let e = spec_error(&[env[0], ("GH_TOKEN", GH_CLASSIC)], &[s]);
        assert!(e.contains(expected), "{e} should say {expected}");
        assert!(
            !e.contains("secret-value") && !e.contains(GH_CLASSIC),
            "{e}"
        );
    }
    // Two grants giving the child one variable.
    let e = spec_error(
        &env,
        &[
            spec("a", "G_TOKEN", &["a.example"]),
            spec("b", "G_TOKEN", &["b.example"]),
        ],
    );
    assert!(
        e.contains("credential grant b: grant a already gives the child variable G_TOKEN"),
        "{e}"
    );
    // One secret for two grants, read from a variable that is also one's child variable: the
    // child gets the dummy there, and the real value nowhere.
    let mut b = spec("b", "B_TOKEN", &["b.example"]);
    b.secret = Some(SecretSource::EnvVar("G_TOKEN".into()));
    let v = Vault::new(env_of(&env), &[spec("a", "G_TOKEN", &["a.example"]), b]).unwrap();
    let child = v.child_env();
    assert_eq!(child.set.len(), 2);
    assert!(child.remove.is_empty());
    assert!(child.set.iter().all(|(_, d)| !d.contains("secret-value")));
    // A secret a header cannot carry.
    let e = spec_error(
        &[("G_TOKEN", "secret value\n")],
        &[spec("g", "G_TOKEN", &["a.example"])],
    );
    assert!(
        e.contains("the secret in environment variable G_TOKEN cannot be sent in a header"),
        "{e}"
    );
    assert!(!e.contains("secret value"));
    let e = Vault::new(env_of(&[]), &[spec("g", "G_TOKEN", &["a.example"])]).unwrap_err();
    assert!(matches!(
        e,
        VaultError::Spec {
            why: SpecError::Secret(_),
            ..
        }
    ));
}

#[test]
fn send_styles_parse_from_their_config_names() {
    for s in ["bearer", "token", "basic", "header"] {
        assert_eq!(s.parse::<SendStyle>().unwrap().to_string(), s);
    }
    let e = "Bearer".parse::<SendStyle>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown send style \"Bearer\" (expected bearer, token, basic or header)"
    );
}

#[test]
fn explain_says_which_grant_is_injected_or_why_none() {
    let mut local = spec("local", "LOCAL_KEY", &["api.example.com"]);
    local.path_prefixes = vec!["/v1".into()];
    let v = Vault::new(
        env_of(&[
            ("GITHUB_TOKEN", GH_CLASSIC),
            ("GH_ENTERPRISE_TOKEN", GHE),
            ("LOCAL_KEY", "local-0123456789abcdef"),
        ]),
        &[local],
    )
    .unwrap();
    let api = host("api.github.com");
    let e = v.explain(
        &Destination::new(Scheme::Https, &api, 443, "/user?x=1"),
        false,
    );
    assert_eq!(e.injected().collect::<Vec<_>>(), ["GITHUB_TOKEN"]);
    assert_eq!(
        e.to_string(),
        "credentials for https://api.github.com/user:\n  \
         GITHUB_TOKEN: injected when the request carries the dummy of $GITHUB_TOKEN\n  \
         GH_TOKEN: not injected: GH_TOKEN is unset or empty in netproxy's environment\n"
    );
    // Plaintext, another port: not injected, and the withheld token is mentioned.
    let e = v.explain(&Destination::new(Scheme::Http, &api, 443, "/"), false);
    assert_eq!(e.entries[0].verdict, Verdict::NotBound(Unbound::Plaintext));
    assert!(
        e.to_string()
            .contains("GITHUB_TOKEN: not injected, refused: plain HTTP"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("GH_ENTERPRISE_TOKEN: withheld: GH_HOST is unset"),
        "{e}"
    );
    let e = v.explain(&Destination::new(Scheme::Http, &api, 443, "/"), true);
    assert_eq!(e.injected().collect::<Vec<_>>(), ["GITHUB_TOKEN"]);
    let e = v.explain(&Destination::new(Scheme::Https, &api, 8443, "/"), false);
    assert_eq!(
        e.entries[0].verdict,
        Verdict::NotBound(Unbound::Port { bound: 443 })
    );
    // The path of a configured grant.
    let ex = host("api.example.com");
    let e = v.explain(&Destination::new(Scheme::Https, &ex, 443, "/v10"), false);
    assert_eq!(e.entries[0].verdict, Verdict::NotBound(Unbound::Path));
    assert!(
        e.to_string()
            .contains("local: not injected, refused: the grant is not bound to this path")
    );
    // No grant for the host.
    let other = host("example.org");
    let e = v.explain(&Destination::new(Scheme::Https, &other, 443, "/"), false);
    assert!(
        e.to_string().starts_with(
            "credentials for https://example.org/:\n  none: no credential grant is bound to example.org\n"
        ),
        "{e}"
    );
    assert!(!format!("{e} {e:?}").contains(GH_CLASSIC));
}

#[test]
fn no_real_value_in_debug_output_listings_or_errors() {
    let mut hdr = spec("hdr", "HDR_TOKEN", &["api.example.com"]);
    hdr.send = vec![SendStyle::Header];
    hdr.header = Some("x-api-key".into());
    let v = Vault::new(
        env_of(&[
            ("GH_TOKEN", GH_PAT),
            ("OPENAI_API_KEY", OPENAI),
            ("GH_ENTERPRISE_TOKEN", GHE),
            ("HDR_TOKEN", "hdr-real-value-0123456789"),
        ]),
        &[hdr],
    )
    .unwrap();
    let api = host("api.github.com");
    let dest = Destination::new(Scheme::Https, &api, 443, "/");
    let mut shown = format!("{v:?} {:?} {:?}", v.grants(), v.child_env());
    for g in v.grants() {
        shown += &format!(
            "{g:?} {} {} {}",
            g.binding(),
            g.source(),
            g.forms()
                .iter()
                .map(ToString::to_string)
                .collect::<String>()
        );
    }
    for w in v.withheld() {
        shown += &format!("{w} {w:?}");
    }
    let e = v.explain(&dest, false);
    shown += &format!("{e} {e:?}");
    for real in [GH_PAT, OPENAI, GHE, "hdr-real-value-0123456789"] {
        assert!(!shown.contains(real), "{real} in {shown}");
    }
    // Dummies are worth something through netproxy: not in Debug output either.
    for g in v.grants() {
        assert!(!format!("{v:?} {:?}", v.child_env()).contains(g.dummy()));
    }
}
