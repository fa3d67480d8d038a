//! The benchmark's HTTPS origin on loopback: a test CA made for the run, a certificate for
//! `127.0.0.1` (an IP address name) signed by it, and an HTTP/1.1 server over TLS that answers
//! every request with a fixed body. Two listeners: one keeps connections alive, the other
//! closes each connection after its response (so the server side closes first and no client
//! port is left in TIME_WAIT, as the shared kit's rate workloads do).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::http::Reader;

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The run's test CA (its certificate in PEM, what netproxy and mitmproxy trust upstream) and
/// the origin's certificate and key.
pub(crate) struct OriginCerts {
    pub(crate) ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl OriginCerts {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Self::for_name("127.0.0.1")
    }

    /// A test CA and a certificate for `name` (an IP address or a DNS name) signed by it.
    pub(crate) fn for_name(name: &str) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "netproxy bench origin CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params.self_signed(&ca_key)?;
        let issuer = Issuer::new(params, ca_key);
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(vec![name.to_owned()])?;
        leaf.distinguished_name.push(DnType::CommonName, name);
        let cert = leaf.signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

/// The origin's two listeners.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    /// Keeps connections alive.
    pub(crate) keep: SocketAddr,
    /// Closes each connection after its first response.
    pub(crate) close: SocketAddr,
}

/// Starts the origin on a thread of its own (one Tokio thread, as the kit's origin), for the
/// life of the process; every response carries `body` bytes.
pub(crate) fn start(certs: &OriginCerts, body: usize) -> anyhow::Result<Origin> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![certs.cert.clone()], certs.key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let keep = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let close = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let origin = Origin {
        keep: keep.local_addr()?,
        close: close.local_addr()?,
    };
    let response = |close: bool| -> Arc<[u8]> {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {body}\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        r.resize(r.len() + body, b'x');
        r.into()
    };
    let (keep_resp, close_resp) = (response(false), response(true));
    std::thread::Builder::new()
        .name("bench-origin".into())
        .spawn(move || {
            rt.block_on(async move {
                let a = tokio::spawn(accept(keep, acceptor.clone(), keep_resp, false));
                let b = tokio::spawn(accept(close, acceptor, close_resp, true));
                let _ = tokio::join!(a, b);
            });
        })
        .context("cannot start the origin's thread")?;
    Ok(origin)
}

async fn accept(listener: TcpListener, acceptor: TlsAcceptor, response: Arc<[u8]>, close: bool) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: wait instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(serve(stream, acceptor.clone(), response.clone(), close));
    }
}

async fn serve(stream: TcpStream, acceptor: TlsAcceptor, response: Arc<[u8]>, close: bool) {
    let _ = stream.set_nodelay(true);
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let mut r = Reader::new(tls);
    loop {
        let Ok(Some(head)) = r.head().await else {
            return;
        };
        if r.body(&head).await.is_err() {
            return;
        }
        let io = r.get_mut();
        if io.write_all(&response).await.is_err() || io.flush().await.is_err() {
            return;
        }
        if close || head.close {
            let _ = io.shutdown().await;
            return;
        }
    }
}
