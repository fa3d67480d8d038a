//! `peek_hello` and `Replay` with real rustls clients on loopback: the server name of a real
//! ClientHello is read, and the TLS handshake then completes over the replayed bytes.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use proxy_core::tls::Hello;
use proxy_io::{Replay, peek_hello};
use proxy_test_support::{TestCa, tls_client_pem};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client asks for `name` (a DNS name or an IP literal); the server peeks, then completes
/// the handshake over the replayed bytes and echoes one message. Returns what the peek saw.
async fn round_trip(name: &str) -> Hello {
    let ca = TestCa::new().unwrap();
    let (cert, key) = ca.issue(&[name]).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let (hello, bytes) = peek_hello(&mut stream, Vec::new(), Duration::from_secs(10)).await;
        let mut tls = acceptor.accept(Replay::new(bytes, stream)).await.unwrap();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(&buf).await.unwrap();
        tls.flush().await.unwrap();
        hello
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut tls = tls_client_pem(ca.cert_pem().as_bytes())
        .connect(server_name, tcp)
        .await
        .unwrap();
    tls.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    server.await.unwrap()
}

#[tokio::test]
async fn a_real_hello_names_its_host_and_the_handshake_completes_over_the_replay() {
    assert_eq!(
        round_trip("api.example.test").await,
        Hello::ClientHello {
            sni: Some("api.example.test".to_owned())
        }
    );
}

#[tokio::test]
async fn a_hello_to_an_ip_literal_carries_no_server_name() {
    assert_eq!(
        round_trip("127.0.0.1").await,
        Hello::ClientHello { sni: None }
    );
}

#[tokio::test]
async fn silence_a_server_first_protocol_and_plain_http_are_not_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Silence: the client connects and waits for the server (as an SSH client would).
    let _quiet = TcpStream::connect(addr).await.unwrap();
    let (mut s, _) = listener.accept().await.unwrap();
    let (hello, bytes) = peek_hello(&mut s, Vec::new(), Duration::from_millis(200)).await;
    assert!(matches!(hello, Hello::NotTls(_)));
    assert!(bytes.is_empty());
    // Plain HTTP: refused at once, and its bytes are given back whole.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (mut s, _) = listener.accept().await.unwrap();
    let (hello, bytes) = peek_hello(&mut s, Vec::new(), Duration::from_secs(10)).await;
    assert!(matches!(hello, Hello::NotTls(_)));
    let mut replay = Replay::new(bytes, s);
    let mut line = [0u8; 14];
    replay.read_exact(&mut line).await.unwrap();
    assert_eq!(&line, b"GET / HTTP/1.1");
    // A client that closes before a whole hello.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"\x16\x03\x01\x00\x10\x01").await.unwrap();
    drop(c);
    let (mut s, _) = listener.accept().await.unwrap();
    let (hello, bytes) = peek_hello(&mut s, Vec::new(), Duration::from_secs(10)).await;
    assert!(matches!(hello, Hello::NotTls(_)));
    assert_eq!(bytes.len(), 6);
}
