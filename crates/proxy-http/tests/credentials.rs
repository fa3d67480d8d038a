//! The credential broker on the plain HTTP path, over real loopback sockets: a dummy in a plain
//! HTTP request is refused `credential_not_bound` unless plaintext injection is allowed and its
//! grant is bound to the destination, which then gets the real value.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use proxy_broker::{GrantSpec, Vault};
use proxy_core::{NoInterception, Reason};
use proxy_http::{Broker, Limits, run_brokered};
use proxy_test_support::{HttpOrigin, RecordingDialer, StubGate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PATIENCE: Duration = Duration::from_secs(10);
const REAL: &str = "plain-real-secret-value";
const GH_REAL: &str = "ghp_RealRealRealRealRealRealRealReal0123";

/// A vault with `GH_TOKEN` (built in, bound to GitHub on 443) and `plain`, bound to
/// `plain.test` on `port`; variables from this lookup, never the process environment.
fn vault(port: u16) -> Arc<Vault> {
    let mut plain = GrantSpec::new("plain", "PLAIN_TOKEN");
    plain.hosts = vec!["plain.test".into()];
    plain.port = Some(port);
    let lookup = |var: &str| match var {
        "GH_TOKEN" => Some(GH_REAL.into()),
        "PLAIN_TOKEN" => Some(REAL.into()),
        _ => None,
    };
    Arc::new(Vault::new(lookup, &[plain]).unwrap())
}

/// A proxy with `broker`, routing `plain.test` to `origin`; its address and gate.
async fn proxy(broker: Broker, origin: SocketAddr) -> (SocketAddr, Arc<StubGate>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gate = Arc::new(StubGate::new());
    gate.route("plain.test", origin);
    tokio::spawn(run_brokered(
        listener,
        gate.clone(),
        Arc::new(RecordingDialer::new()),
        Arc::new(NoInterception),
        Limits::default(),
        Some(broker),
        std::future::pending(),
    ));
    (addr, gate)
}

/// One plain request to `http://plain.test:port/x` with `Authorization: Bearer <token>`; the
/// raw response.
async fn get(proxy: SocketAddr, port: u16, token: &str) -> String {
    let exchange = async {
        let mut tcp = TcpStream::connect(proxy).await.unwrap();
        let head = format!(
            "GET http://plain.test:{port}/x HTTP/1.1\r\nHost: plain.test:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(PATIENCE, exchange).await.unwrap()
}

#[tokio::test]
async fn a_plaintext_dummy_is_refused_without_the_opt_in() {
    let origin = HttpOrigin::start("origin", Ipv4Addr::LOCALHOST.into())
        .await
        .unwrap();
    let port = origin.addr().port();
    let vault = vault(port);
    let dummy = vault.grant("plain").unwrap().dummy().to_owned();
    let broker = Broker {
        vault,
        allow_plaintext: false,
    };
    let (addr, gate) = proxy(broker, origin.addr()).await;
    let resp = get(addr, port, &dummy).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains("\"reason\":\"credential_not_bound\""),
        "{resp}"
    );
    assert!(!resp.contains(REAL), "{resp}");
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
    // The gate was asked once, told of the grant and why it is refused.
    let seen = gate.seen();
    assert_eq!(seen.len(), 1);
    let c = seen[0].credential.as_ref().unwrap();
    assert_eq!(c.grant, "plain");
    assert_eq!(
        seen[0].credential_refusal().unwrap().reason,
        Some(Reason::CredentialNotBound)
    );
    // A request with a credential of its own passes as it is.
    let resp = get(addr, port, "my-own-token").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(
        origin.seen()[0].header("authorization"),
        Some("Bearer my-own-token")
    );
}

#[tokio::test]
async fn with_the_opt_in_a_grant_bound_to_the_port_is_injected_and_others_refused() {
    let origin = HttpOrigin::start("origin", Ipv4Addr::LOCALHOST.into())
        .await
        .unwrap();
    let port = origin.addr().port();
    let vault = vault(port);
    let dummy = vault.grant("plain").unwrap().dummy().to_owned();
    let gh = vault.grant("GH_TOKEN").unwrap().dummy().to_owned();
    let broker = Broker {
        vault,
        allow_plaintext: true,
    };
    let (addr, gate) = proxy(broker, origin.addr()).await;
    let resp = get(addr, port, &dummy).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let expected = format!("Bearer {REAL}");
    assert_eq!(
        origin.seen()[0].header("authorization"),
        Some(expected.as_str())
    );
    let c = gate.seen()[0].credential.clone().unwrap();
    assert_eq!((c.grant.as_str(), c.refused), ("plain", None));
    // GH_TOKEN's dummy: its grant is not bound to plain.test, opt-in or not.
    let resp = get(addr, port, &gh).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains("\"reason\":\"credential_not_bound\""),
        "{resp}"
    );
    assert_eq!(origin.seen().len(), 1, "{:?}", origin.seen());
}
