//! What the interceptor's integration tests share: an interceptor with a fresh CA trusting a
//! test CA upstream, and a connected pair of loopback sockets (the client's end and the one a
//! front-end would hand over).
#![allow(dead_code, missing_docs, clippy::unwrap_used)] // each test binary uses its part

use std::sync::Arc;

use proxy_mitm::{Ca, CertificateDer, LeafCache, MitmInterceptor};
use proxy_test_support::{StubGate, TestCa};
use rustls::pki_types::pem::PemObject;
use tokio::net::{TcpListener, TcpStream};

/// A stub gate, a fresh CA, and an interceptor judging with the gate, issuing leaves from the
/// CA and trusting `upstream` as the origins' CA.
pub(crate) fn interceptor(
    upstream: &TestCa,
) -> (Arc<StubGate>, Arc<Ca>, MitmInterceptor<StubGate>) {
    let gate = Arc::new(StubGate::new());
    let ca = Arc::new(Ca::generate().unwrap());
    let leaves = Arc::new(LeafCache::new(ca.clone(), 16));
    let roots: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(upstream.cert_pem().as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let interceptor = MitmInterceptor::new(gate.clone(), leaves, roots).unwrap();
    (gate, ca, interceptor)
}

/// Two connected loopback sockets: the client's end and the proxy's end.
pub(crate) async fn connected() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    (client, accepted)
}
