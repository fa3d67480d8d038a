//! Real TLS on loopback: a tokio-rustls server presenting a cached leaf, a rustls client that
//! trusts only the CA.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proxy_core::Host;
use proxy_mitm::{Ca, LEAF_VALIDITY, LeafCache};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One TLS session on 127.0.0.1: the server presents the cache's leaf for `host`, the client
/// (trusting `client_ca`) asks for `server_name`; what the server said, or why it failed.
async fn handshake(
    cache: &LeafCache,
    client_ca: &Ca,
    host: &str,
    server_name: &str,
) -> Result<String, std::io::Error> {
    let leaf = cache.get(&Host::parse(host).unwrap()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain().to_vec(), leaf.key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await?;
        tls.write_all(b"hello from the leaf").await?;
        tls.shutdown().await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let result = async {
        let mut tls = proxy_test_support::tls_client(&[client_ca.cert_der().clone()])
            .connect(name, tcp)
            .await?;
        let mut text = String::new();
        tls.read_to_string(&mut text).await?;
        Ok(text)
    }
    .await;
    let _ = server.await.unwrap();
    result
}

fn cache() -> LeafCache {
    LeafCache::new(Arc::new(Ca::generate().unwrap()), 64)
}

#[tokio::test]
async fn a_dns_name_is_served_and_its_second_session_signs_nothing() {
    let cache = cache();
    let ca = cache.ca().clone();
    let text = handshake(&cache, &ca, "Example.TEST.", "example.test")
        .await
        .unwrap();
    assert_eq!(text, "hello from the leaf");
    assert_eq!(cache.issued(), 1);
    handshake(&cache, &ca, "example.test", "example.test")
        .await
        .unwrap();
    assert_eq!(cache.issued(), 1, "the second session reuses the leaf");
    assert_eq!(cache.len(), 1);
    handshake(&cache, &ca, "other.test", "other.test")
        .await
        .unwrap();
    assert_eq!(cache.issued(), 2);
}

#[tokio::test]
async fn ip_literals_get_an_ip_address_name() {
    let cache = cache();
    let ca = cache.ca().clone();
    handshake(&cache, &ca, "127.0.0.1", "127.0.0.1")
        .await
        .unwrap();
    handshake(&cache, &ca, "[2001:db8::1]", "2001:db8::1")
        .await
        .unwrap();
    // A name is not an address: the leaf for 10.1.2.3 does not cover "10.1.2.4".
    let err = handshake(&cache, &ca, "10.1.2.3", "10.1.2.4")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(cache.issued(), 3);
}

#[tokio::test]
async fn the_leaf_covers_its_host_only_and_only_for_clients_trusting_the_ca() {
    let cache = cache();
    let ca = cache.ca().clone();
    let err = handshake(&cache, &ca, "example.test", "www.example.test")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let stranger = Ca::generate().unwrap();
    let err = handshake(&cache, &stranger, "example.test", "example.test")
        .await
        .unwrap_err();
    // The stranger has the same subject, so the leaf's signature is what fails.
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn a_name_longer_than_a_common_name_allows_is_served() {
    let cache = cache();
    let ca = cache.ca().clone();
    let long = format!("{}.{}.example.test", "a".repeat(60), "b".repeat(60));
    handshake(&cache, &ca, &long, &long).await.unwrap();
}

#[tokio::test]
async fn a_leaf_near_its_end_is_issued_again() {
    // Valid 2 h, renewed when less than 2 h - 10 s are left: stale 10 s after its issuance.
    let cache = cache().with_validity(Duration::from_secs(7200), Duration::from_secs(7200 - 10));
    let ca = cache.ca().clone();
    let host = Host::parse("renew.test").unwrap();
    let now = SystemTime::now();
    let first = cache.get_at(&host, now).unwrap();
    let again = cache.get_at(&host, now + Duration::from_secs(5)).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(cache.issued(), 1);
    let renewed = cache.get_at(&host, now + Duration::from_secs(11)).unwrap();
    assert!(!Arc::ptr_eq(&first, &renewed));
    assert!(renewed.not_after() > first.not_after());
    assert_eq!(cache.issued(), 2);
    // The renewed leaf is what is served now, and a client accepts it.
    let served = cache.get_at(&host, now + Duration::from_secs(12)).unwrap();
    assert!(Arc::ptr_eq(&served, &renewed));
    handshake(&cache, &ca, "renew.test", "renew.test")
        .await
        .unwrap();
}

#[test]
fn the_default_validity_is_renewed_an_hour_before_its_end() {
    let cache = cache();
    let host = Host::parse("day.test").unwrap();
    let now = SystemTime::now();
    let leaf = cache.get_at(&host, now).unwrap();
    assert_eq!(leaf.not_after(), now + LEAF_VALIDITY);
    cache
        .get_at(&host, now + Duration::from_secs(22 * 3600))
        .unwrap();
    assert_eq!(cache.issued(), 1);
    cache
        .get_at(&host, now + Duration::from_secs(23 * 3600 + 1))
        .unwrap();
    assert_eq!(cache.issued(), 2);
}

#[test]
fn the_cache_is_bounded() {
    let cache = LeafCache::new(Arc::new(Ca::generate().unwrap()), 8);
    for i in 0..40 {
        cache
            .get(&Host::parse(&format!("h{i}.test")).unwrap())
            .unwrap();
    }
    assert_eq!(cache.issued(), 40);
    assert!(cache.len() <= 8, "{}", cache.len());
}

#[test]
fn a_leaf_shows_no_key() {
    let cache = cache();
    let leaf = cache.get(&Host::parse("x.test").unwrap()).unwrap();
    assert_eq!(leaf.chain().len(), 2);
    assert_eq!(&leaf.chain()[1], cache.ca().cert_der());
    let text = format!("{leaf:?} {cache:?}");
    assert!(
        text.contains("redacted") && !text.contains("PRIVATE"),
        "{text}"
    );
}

/// curl (OpenSSL or whichever TLS library it has) accepts the leaf when told to trust the CA's
/// PEM file, for a name and for an IP literal, and refuses it without.
#[tokio::test]
async fn curl_trusts_a_leaf_through_the_ca_pem() {
    let cache = Arc::new(cache());
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, cache.ca().cert_pem()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let c = cache.clone();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                // The leaf is chosen by the SNI (none for an IP literal: the dialled address).
                let start =
                    tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
                        .await?;
                let host: String = start
                    .client_hello()
                    .server_name()
                    .unwrap_or("127.0.0.1")
                    .to_owned();
                let leaf = c.get(&Host::parse(&host).unwrap()).unwrap();
                let config = rustls::ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(leaf.chain().to_vec(), leaf.key())
                    .unwrap();
                let mut tls = start.into_stream(Arc::new(config)).await?;
                let mut head = Vec::new();
                let mut buf = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tls.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                tls.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                )
                .await?;
                tls.shutdown().await
            });
        }
    });
    let curl = move |url: String, trust: Option<std::path::PathBuf>| {
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new("curl");
            cmd.args(["-sS", "--max-time", "10", "--noproxy", "*"])
                .arg("--resolve")
                .arg(format!("example.test:{port}:127.0.0.1"));
            match trust {
                Some(pem) => cmd.arg("--cacert").arg(pem),
                // A CA file that does not hold netproxy's CA.
                None => cmd.arg("--cacert").arg("/dev/null"),
            };
            cmd.arg(url).output().unwrap()
        })
    };
    for url in [
        format!("https://example.test:{port}/"),
        format!("https://127.0.0.1:{port}/"),
    ] {
        let out = curl(url.clone(), Some(pem.clone())).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text == "hello",
            "{url}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = curl(url.clone(), None).await.unwrap();
        assert!(!out.status.success(), "{url} without the CA");
    }
    assert_eq!(cache.issued(), 2);
    server.abort();
}
