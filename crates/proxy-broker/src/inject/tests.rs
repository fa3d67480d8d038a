#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::vault::tests::{GH_CLASSIC, GH_OTHER, GHE, OPENAI, env_of, host, vault};
use crate::{
    CredentialAudit, CredentialNotBound, Destination, GrantSpec, Scheme, SendStyle, Unbound, Vault,
};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn dummy(v: &Vault, grant: &str) -> String {
    v.grant(grant).unwrap().dummy().to_owned()
}

/// Injects into `h` for `scheme://host:port path`.
fn inject(
    v: &Vault,
    scheme: Scheme,
    to: &str,
    port: u16,
    path: &str,
    h: &mut HeaderMap,
    plaintext: bool,
) -> Result<Vec<String>, CredentialNotBound> {
    let host = host(to);
    v.inject(&Destination::new(scheme, &host, port, path), h, plaintext)
        .map(|i| i.grants().to_vec())
}

fn https(v: &Vault, to: &str, h: &mut HeaderMap) -> Result<Vec<String>, CredentialNotBound> {
    inject(v, Scheme::Https, to, 443, "/", h, false)
}

fn values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_request_without_a_dummy_is_left_alone() {
    let v = vault(&[("GH_TOKEN", GH_CLASSIC), ("OPENAI_API_KEY", OPENAI)]);
    // No credential at all: a child without the dummy cannot use the real token.
    let mut h = headers(&[("accept", "*/*")]);
    assert_eq!(
        https(&v, "api.github.com", &mut h).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(h, headers(&[("accept", "*/*")]));
    // A credential of its own, to a bound host or anywhere else: untouched.
    for (to, auth) in [
        ("api.openai.com", "Bearer sk-explicit"),
        ("api.github.com", "token ghp_mine"),
        ("attacker.example", "Bearer ghp_mine"),
        ("api.github.com", "Basic eC1hY2Nlc3MtdG9rZW46Z2hwX21pbmU="),
        ("api.github.com", "Basic !!not-base64!!"),
        ("api.github.com", "Bearer"),
    ] {
        let mut h = headers(&[("authorization", auth)]);
        let done = v
            .inject(
                &Destination::new(Scheme::Https, &host(to), 443, "/"),
                &mut h,
                false,
            )
            .unwrap();
        assert!(done.is_empty() && done.audit().is_none(), "{auth}");
        assert_eq!(values(&h, "authorization"), [auth]);
    }
    // Another session's dummy is someone else's: nothing to do with it here.
    let other = vault(&[("GH_TOKEN", GH_CLASSIC)]);
    let mut h = headers(&[(
        "authorization",
        &format!("Bearer {}", dummy(&other, "GH_TOKEN")),
    )]);
    assert!(https(&v, "api.github.com", &mut h).unwrap().is_empty());
}

#[test]
fn the_presented_dummy_selects_the_grant() {
    // GH_TOKEN and GITHUB_TOKEN hold different tokens and both bind api.github.com.
    let v = vault(&[("GH_TOKEN", GH_CLASSIC), ("GITHUB_TOKEN", GH_OTHER)]);
    let mut h = headers(&[]);
    assert!(https(&v, "api.github.com", &mut h).unwrap().is_empty());
    for (grant, real) in [("GITHUB_TOKEN", GH_OTHER), ("GH_TOKEN", GH_CLASSIC)] {
        let mut h = headers(&[("authorization", &format!("Bearer {}", dummy(&v, grant)))]);
        assert_eq!(https(&v, "api.github.com", &mut h).unwrap(), [grant]);
        assert_eq!(values(&h, "authorization"), [format!("Bearer {real}")]);
        assert!(h[AUTHORIZATION].is_sensitive());
    }
}

#[test]
fn each_form_is_put_back_as_it_came() {
    let v = vault(&[("GH_TOKEN", GH_CLASSIC)]);
    let d = dummy(&v, "GH_TOKEN");
    let basic =
        |user: &str, pass: &str| format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")));
    for (sent, expected) in [
        (format!("Bearer {d}"), format!("Bearer {GH_CLASSIC}")),
        (format!("bearer  {d} "), format!("bearer {GH_CLASSIC}")),
        (format!("token {d}"), format!("token {GH_CLASSIC}")),
        (format!("TOKEN {d}"), format!("TOKEN {GH_CLASSIC}")),
        (
            basic("x-access-token", &d),
            basic("x-access-token", GH_CLASSIC),
        ),
        // Basic without padding, as some clients write it.
        (
            format!(
                "basic {}",
                STANDARD_NO_PAD.encode(format!("x-access-token:{d}"))
            ),
            basic("x-access-token", GH_CLASSIC).replacen("Basic", "basic", 1),
        ),
    ] {
        let mut h = headers(&[("authorization", &sent)]);
        assert_eq!(
            https(&v, "github.com", &mut h).unwrap(),
            ["GH_TOKEN"],
            "{sent}"
        );
        assert_eq!(values(&h, "authorization"), [expected], "{sent}");
    }
}

#[test]
fn a_dummy_in_a_form_its_grant_does_not_take_is_refused() {
    let v = vault(&[("GH_TOKEN", GH_CLASSIC), ("GITHUB_TOKEN", GH_OTHER)]);
    let d = dummy(&v, "GH_TOKEN");
    let e = dummy(&v, "GITHUB_TOKEN");
    for sent in [
        // Basic with another user, or the dummy as the user.
        format!("Basic {}", STANDARD.encode(format!("alice:{d}"))),
        format!("Basic {}", STANDARD.encode(format!("{d}:"))),
        // Another scheme, text around it, two dummies in one value.
        format!("Digest {d}"),
        format!("Bearer {d}x"),
        format!("Bearer {d} {e}"),
        d.clone(),
    ] {
        let mut h = headers(&[("authorization", &sent)]);
        let before = h.clone();
        let refused = https(&v, "api.github.com", &mut h).unwrap_err();
        assert_eq!(refused.grant, "GH_TOKEN", "{sent}");
        assert_eq!(refused.why, Unbound::Form, "{sent}");
        assert_eq!(h, before);
    }
}

#[test]
fn a_dummy_where_its_grant_is_not_bound_is_refused_and_nothing_changes() {
    let v = vault(&[
        ("GH_TOKEN", GH_CLASSIC),
        ("GH_ENTERPRISE_TOKEN", GHE),
        ("GH_HOST", "ghes.corp.example"),
    ]);
    let d = dummy(&v, "GH_TOKEN");
    let auth = format!("Bearer {d}");
    for (scheme, to, port, expected) in [
        (Scheme::Https, "attacker.example", 443, Unbound::Host),
        (Scheme::Https, "ghes.corp.example", 443, Unbound::Host),
        (
            Scheme::Https,
            "api.github.com",
            8443,
            Unbound::Port { bound: 443 },
        ),
        (Scheme::Http, "api.github.com", 443, Unbound::Plaintext),
    ] {
        let mut h = headers(&[("authorization", &auth)]);
        let refused = inject(&v, scheme, to, port, "/", &mut h, false).unwrap_err();
        assert_eq!(refused.why, expected, "{to}");
        assert_eq!(refused.reason(), proxy_core::Reason::CredentialNotBound);
        assert_eq!(
            refused.audit(),
            CredentialAudit {
                grant: "GH_TOKEN".into(),
                injected: false
            }
        );
        assert_eq!(values(&h, "authorization"), std::slice::from_ref(&auth));
        assert!(!h[AUTHORIZATION].is_sensitive());
        let text = format!("{refused} {refused:?}");
        assert!(!text.contains(GH_CLASSIC) && !text.contains(&d), "{text}");
    }
    let refused = https(
        &v,
        "attacker.example",
        &mut headers(&[("authorization", &auth)]),
    );
    assert_eq!(
        refused.unwrap_err().to_string(),
        "credential grant GH_TOKEN is not bound to attacker.example:443: the grant is not bound to this host"
    );
    // The enterprise token goes to GH_HOST only.
    let g = format!("token {}", dummy(&v, "GH_ENTERPRISE_TOKEN"));
    let mut h = headers(&[("authorization", &g)]);
    assert_eq!(
        https(&v, "ghes.corp.example", &mut h).unwrap(),
        ["GH_ENTERPRISE_TOKEN"]
    );
    assert_eq!(values(&h, "authorization"), [format!("token {GHE}")]);
    let mut h = headers(&[("authorization", &g)]);
    assert_eq!(
        https(&v, "api.github.com", &mut h).unwrap_err().why,
        Unbound::Host
    );
}

#[test]
fn plaintext_injection_needs_the_explicit_flag() {
    let mut local = GrantSpec::new("local", "LOCAL_KEY");
    local.hosts = vec!["127.0.0.1".into()];
    local.port = Some(8080);
    let v = Vault::new(env_of(&[("LOCAL_KEY", "local-real-0123456789")]), &[local]).unwrap();
    let auth = format!("Bearer {}", dummy(&v, "local"));
    let mut h = headers(&[("authorization", &auth)]);
    let refused = inject(&v, Scheme::Http, "127.0.0.1", 8080, "/", &mut h, false).unwrap_err();
    assert_eq!(refused.why, Unbound::Plaintext);
    assert_eq!(values(&h, "authorization"), [auth]);
    assert_eq!(
        inject(&v, Scheme::Http, "127.0.0.1", 8080, "/", &mut h, true).unwrap(),
        ["local"]
    );
    assert_eq!(
        values(&h, "authorization"),
        ["Bearer local-real-0123456789"]
    );
}

#[test]
fn only_the_bound_path_prefix_gets_the_real_value() {
    let mut api = GrantSpec::new("api", "API_KEY");
    api.hosts = vec!["api.example.com".into()];
    api.path_prefixes = vec!["/v1".into()];
    let v = Vault::new(env_of(&[("API_KEY", "api-real-0123456789ab")]), &[api]).unwrap();
    let auth = format!("Bearer {}", dummy(&v, "api"));
    for path in ["/v1/models", "/v1/responses", "/v1", "/v1/models?limit=1"] {
        let mut h = headers(&[("authorization", &auth)]);
        assert_eq!(
            inject(
                &v,
                Scheme::Https,
                "api.example.com",
                443,
                path,
                &mut h,
                false
            )
            .unwrap(),
            ["api"],
            "{path}"
        );
    }
    for path in [
        "*",
        "/v10/models",
        "/v1/%2e%2e/private",
        "/v1/../private",
        "/",
        "/v1x",
    ] {
        let mut h = headers(&[("authorization", &auth)]);
        let refused = inject(
            &v,
            Scheme::Https,
            "api.example.com",
            443,
            path,
            &mut h,
            false,
        )
        .unwrap_err();
        assert_eq!(refused.why, Unbound::Path, "{path}");
        assert_eq!(values(&h, "authorization"), std::slice::from_ref(&auth));
    }
}

#[test]
fn named_headers_carry_their_grants_only() {
    let mut key = GrantSpec::new("key", "KEY_TOKEN");
    key.hosts = vec!["api.example.com".into()];
    key.send = vec![SendStyle::Header];
    key.header = Some("X-Api-Key".into());
    let mut pfx = GrantSpec::new("pfx", "PFX_TOKEN");
    pfx.hosts = vec!["api.example.com".into()];
    pfx.send = vec![SendStyle::Header, SendStyle::Bearer];
    pfx.header = Some("authorization".into());
    pfx.prefix = Some("Key ".into());
    let v = Vault::new(
        env_of(&[
            ("KEY_TOKEN", "key-real-0123456789abcd"),
            ("PFX_TOKEN", "pfx-real-0123456789abcd"),
            ("OPENAI_API_KEY", OPENAI),
        ]),
        &[key, pfx],
    )
    .unwrap();
    let k = dummy(&v, "key");
    let p = dummy(&v, "pfx");
    let mut h = headers(&[("x-api-key", &k)]);
    assert_eq!(https(&v, "api.example.com", &mut h).unwrap(), ["key"]);
    assert_eq!(values(&h, "x-api-key"), ["key-real-0123456789abcd"]);
    assert!(h["x-api-key"].is_sensitive());
    // The prefix is compared ignoring case and kept as sent; the same grant also as Bearer.
    for (sent, expected) in [
        (format!("KEY {p}"), "KEY pfx-real-0123456789abcd"),
        (format!("Bearer {p}"), "Bearer pfx-real-0123456789abcd"),
    ] {
        let mut h = headers(&[("authorization", &sent)]);
        assert_eq!(https(&v, "api.example.com", &mut h).unwrap(), ["pfx"]);
        assert_eq!(values(&h, "authorization"), [expected]);
    }
    // A dummy in a header its grant is not sent in; where it is not bound, that is the reason.
    for (name, value, grant, why) in [
        ("authorization", format!("Bearer {k}"), "key", Unbound::Form),
        ("x-api-key", format!("Key {p}"), "pfx", Unbound::Form),
        (
            "x-api-key",
            dummy(&v, "OPENAI_API_KEY"),
            "OPENAI_API_KEY",
            Unbound::Host,
        ),
    ] {
        let mut h = headers(&[(name, &value)]);
        let refused = https(&v, "api.example.com", &mut h).unwrap_err();
        assert_eq!((refused.grant.as_str(), refused.why), (grant, why));
        assert_eq!(values(&h, name), [value]);
    }
    // The same OpenAI dummy in the wrong header to its own host: its form.
    let mut h = headers(&[("x-api-key", &dummy(&v, "OPENAI_API_KEY"))]);
    let refused = https(&v, "api.openai.com", &mut h).unwrap_err();
    assert_eq!(refused.why, Unbound::Form);
    // Elsewhere a dummy is not looked for: it passes, worthless.
    let mut h = headers(&[("x-other", &k)]);
    assert!(https(&v, "attacker.example", &mut h).unwrap().is_empty());
}

#[test]
fn several_dummies_are_injected_only_when_every_one_is_bound_here() {
    let mut key = GrantSpec::new("key", "KEY_TOKEN");
    key.hosts = vec!["api.github.com".into()];
    key.send = vec![SendStyle::Header];
    key.header = Some("x-api-key".into());
    let v = Vault::new(
        env_of(&[
            ("GH_TOKEN", GH_CLASSIC),
            ("OPENAI_API_KEY", OPENAI),
            ("KEY_TOKEN", "key-real-0123456789abcd"),
        ]),
        &[key],
    )
    .unwrap();
    let gh = format!("Bearer {}", dummy(&v, "GH_TOKEN"));
    let key = dummy(&v, "key");
    // Both bound: both injected, reported once each, in the order found.
    let mut h = headers(&[
        ("x-api-key", &key),
        ("authorization", &gh),
        ("authorization", &gh),
    ]);
    let done = v
        .inject(
            &Destination::new(Scheme::Https, &host("api.github.com"), 443, "/"),
            &mut h,
            false,
        )
        .unwrap();
    assert_eq!(done.grants(), ["GH_TOKEN", "key"]);
    assert_eq!(
        done.audit(),
        Some(CredentialAudit {
            grant: "GH_TOKEN,key".into(),
            injected: true
        })
    );
    assert_eq!(
        values(&h, "authorization"),
        vec![format!("Bearer {GH_CLASSIC}"); 2]
    );
    assert_eq!(values(&h, "x-api-key"), ["key-real-0123456789abcd"]);
    // One of them not bound here: refused as a whole, nothing replaced.
    let oa = format!("Bearer {}", dummy(&v, "OPENAI_API_KEY"));
    let mut h = headers(&[
        ("x-api-key", &key),
        ("authorization", &gh),
        ("authorization", &oa),
    ]);
    let before = h.clone();
    let refused = https(&v, "api.github.com", &mut h).unwrap_err();
    assert_eq!(
        (refused.grant.as_str(), refused.why),
        ("OPENAI_API_KEY", Unbound::Host)
    );
    assert_eq!(h, before);
    // A dummy beside a credential of the request's own: the dummy only is replaced, the order
    // of the values kept.
    let mut h = headers(&[("authorization", "Bearer mine"), ("authorization", &gh)]);
    assert_eq!(https(&v, "github.com", &mut h).unwrap(), ["GH_TOKEN"]);
    assert_eq!(
        values(&h, "authorization"),
        ["Bearer mine".to_owned(), format!("Bearer {GH_CLASSIC}")]
    );
    assert!(
        !h.get_all("authorization")
            .iter()
            .next()
            .unwrap()
            .is_sensitive()
    );
}

#[test]
fn an_empty_vault_injects_nothing() {
    let v = Vault::default();
    let mut h = headers(&[("authorization", "Bearer x")]);
    assert!(https(&v, "api.github.com", &mut h).unwrap().is_empty());
}
