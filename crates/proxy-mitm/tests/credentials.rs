//! The credential broker inside intercepted tunnels, through real sockets and real TLS: a client
//! trusting netproxy's CA sends a session's dummy, the [`MitmInterceptor`] (driven directly, with
//! a vault and a stub gate) puts the real value in its place where the grant is bound, and a
//! loopback TLS origin records what it received.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use proxy_broker::{GrantSpec, Vault};
use proxy_core::{
    Decision, Intercepted, Interceptor, Lease, Protocol, Reason, RequestMeta, Route, Target,
};
use proxy_mitm::{Ca, MitmInterceptor};
use proxy_test_support::{Seen, StubGate, TestCa, TlsOrigin, tls_client};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for what should happen at once (never a performance assertion).
const PATIENCE: Duration = Duration::from_secs(10);
const REAL: &str = "ghp_RealRealRealRealRealRealRealReal0123";
const REAL_CUSTOM: &str = "custom-real-secret-value";

/// The session's vault: `GH_TOKEN` (built in: github.com, api.github.com, `*.ghe.com` on 443)
/// and a configured grant `custom` sent in `X-Api-Key: Key <value>` to `custom.test`, under
/// `/v1` only. Variables come from this lookup, never the process environment.
fn vault() -> Arc<Vault> {
    let mut custom = GrantSpec::new("custom", "CUSTOM_KEY");
    custom.hosts = vec!["custom.test".into()];
    custom.path_prefixes = vec!["/v1".into()];
    custom.send = vec![proxy_broker::SendStyle::Header];
    custom.header = Some("x-api-key".into());
    custom.prefix = Some("Key ".into());
    let lookup = |var: &str| match var {
        "GH_TOKEN" => Some(REAL.into()),
        "CUSTOM_KEY" => Some(REAL_CUSTOM.into()),
        _ => None,
    };
    Arc::new(Vault::new(lookup, &[custom]).unwrap())
}

struct Mitm {
    gate: Arc<StubGate>,
    ca: Arc<Ca>,
    interceptor: Arc<MitmInterceptor<StubGate>>,
}

impl Mitm {
    fn new(upstream: &TestCa, vault: Arc<Vault>) -> Self {
        let (gate, ca, interceptor) = common::interceptor(upstream);
        let interceptor = interceptor.with_vault(vault);
        Self {
            gate,
            ca,
            interceptor: Arc::new(interceptor),
        }
    }

    /// One HTTP/1.1 request with `headers` to `path` through an intercepted tunnel to
    /// `host:443` routed to `origin`; the raw response.
    async fn request(
        &self,
        host: &str,
        origin: SocketAddr,
        path: &str,
        headers: &[&str],
    ) -> String {
        let (client, accepted) = common::connected().await;
        let upstream = TcpStream::connect(origin).await.unwrap();
        let meta = RequestMeta::new(
            Protocol::HttpsConnect,
            Target::parse_authority(&format!("{host}:443"), 443).unwrap(),
        );
        let mut route = Route::direct(vec![origin], Decision::allow());
        route.intercept = true;
        let interceptor = self.interceptor.clone();
        let session = tokio::spawn(async move {
            interceptor
                .intercept(Intercepted {
                    client: accepted,
                    upstream,
                    meta,
                    route,
                    lease: Lease::none(),
                })
                .await
        });
        let exchange = async {
            let mut tls = tls_client(&[self.ca.cert_der().clone()])
                .connect(ServerName::try_from(host.to_owned()).unwrap(), client)
                .await
                .unwrap();
            let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
            for h in headers {
                head.push_str(h);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            tls.write_all(head.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let _ = tls.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        };
        let text = tokio::time::timeout(PATIENCE, exchange).await.unwrap();
        session.abort();
        text
    }
}

async fn origin(ca: &TestCa, names: &[&str]) -> TlsOrigin {
    TlsOrigin::start("origin", Ipv4Addr::LOCALHOST.into(), ca, names)
        .await
        .unwrap()
}

fn only(seen: &[Seen]) -> &Seen {
    assert_eq!(seen.len(), 1, "{seen:?}");
    &seen[0]
}

#[tokio::test]
async fn a_bound_host_gets_the_real_token_in_the_client_s_form() {
    let upstream = TestCa::new().unwrap();
    let vault = vault();
    let dummy = vault.grant("GH_TOKEN").unwrap().dummy().to_owned();
    let basic = |user: &str, pass: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    };
    let mitm = Mitm::new(&upstream, vault.clone());
    let cases = [
        (format!("Bearer {dummy}"), format!("Bearer {REAL}")),
        (format!("token {dummy}"), format!("token {REAL}")),
        (
            format!("Basic {}", basic("x-access-token", &dummy)),
            format!("Basic {}", basic("x-access-token", REAL)),
        ),
    ];
    for (sent, expected) in cases {
        let o = origin(&upstream, &["api.github.com"]).await;
        let auth = format!("Authorization: {sent}");
        let resp = mitm
            .request("api.github.com", o.addr(), "/user", &[&auth])
            .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let seen = o.seen();
        assert_eq!(only(&seen).header("authorization"), Some(expected.as_str()));
    }
    // A named header with a prefix, under the grant's path prefix.
    let custom = vault.grant("custom").unwrap().dummy().to_owned();
    let o = origin(&upstream, &["custom.test"]).await;
    let key = format!("X-Api-Key: Key {custom}");
    let resp = mitm
        .request("custom.test", o.addr(), "/v1/items", &[&key])
        .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let expected = format!("Key {REAL_CUSTOM}");
    assert_eq!(only(&o.seen()).header("x-api-key"), Some(expected.as_str()));
    // Each inner request was one decision, allowed, naming the grant.
    let inner = mitm.gate.inner_seen();
    assert_eq!(inner.len(), 4);
    for (meta, decision) in &inner {
        assert!(decision.is_allowed(), "{decision:?}");
        let c = meta.credential.as_ref().unwrap();
        assert!(c.refused.is_none(), "{c:?}");
    }
    assert_eq!(inner[0].0.credential.as_ref().unwrap().grant, "GH_TOKEN");
    assert_eq!(inner[3].0.credential.as_ref().unwrap().grant, "custom");
}

#[tokio::test]
async fn a_dummy_sent_where_its_grant_is_not_bound_is_refused_and_nothing_reaches_the_origin() {
    let upstream = TestCa::new().unwrap();
    let vault = vault();
    let dummy = vault.grant("GH_TOKEN").unwrap().dummy().to_owned();
    let custom = vault.grant("custom").unwrap().dummy().to_owned();
    let mitm = Mitm::new(&upstream, vault);
    let auth = format!("Authorization: Bearer {dummy}");
    // Another intercepted host.
    let o = origin(&upstream, &["evil.test"]).await;
    let resp = mitm.request("evil.test", o.addr(), "/", &[&auth]).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains("\"reason\":\"credential_not_bound\""),
        "{resp}"
    );
    assert!(!resp.contains(REAL), "{resp}");
    assert!(o.seen().is_empty(), "{:?}", o.seen());
    // The bound host, outside the grant's path prefix.
    let o = origin(&upstream, &["custom.test"]).await;
    let key = format!("X-Api-Key: Key {custom}");
    let resp = mitm
        .request("custom.test", o.addr(), "/v2/items", &[&key])
        .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains("\"reason\":\"credential_not_bound\""),
        "{resp}"
    );
    assert!(o.seen().is_empty(), "{:?}", o.seen());
    // Each refusal was the gate's one decision about the request.
    let inner = mitm.gate.inner_seen();
    assert_eq!(inner.len(), 2);
    for ((meta, decision), grant) in inner.iter().zip(["GH_TOKEN", "custom"]) {
        assert_eq!(decision.reason, Some(Reason::CredentialNotBound));
        let c = meta.credential.as_ref().unwrap();
        assert_eq!(c.grant, grant);
        assert!(c.refused.is_some());
        let ev = proxy_core::AuditEvent::new(meta, decision, proxy_core::Mode::Full);
        let fields = ev.fields();
        assert!(fields.contains(&("credential.grant", grant.to_owned())));
        assert!(fields.contains(&("credential.injected", "false".to_owned())));
        assert!(!format!("{fields:?}").contains(REAL));
    }
}

#[tokio::test]
async fn an_unrelated_authorization_passes_untouched_and_names_no_grant() {
    let upstream = TestCa::new().unwrap();
    let mitm = Mitm::new(&upstream, vault());
    for host in ["api.github.com", "evil.test"] {
        let o = origin(&upstream, &[host]).await;
        let resp = mitm
            .request(host, o.addr(), "/", &["Authorization: Bearer my-own-token"])
            .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert_eq!(
            only(&o.seen()).header("authorization"),
            Some("Bearer my-own-token")
        );
    }
    assert!(
        mitm.gate
            .inner_seen()
            .iter()
            .all(|(m, d)| d.is_allowed() && m.credential.is_none())
    );
}
