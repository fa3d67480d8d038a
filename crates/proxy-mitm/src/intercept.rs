//! The interceptor: a TLS server for the client with the cached leaf of the tunnel's host, a
//! verified TLS client over the tunnel's upstream connection, and every request read inside
//! judged by the gate before it is forwarded (docs/mitm.md).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_core::tls::Hello;
use proxy_core::{
    Failure, Gate, Host, Intercepted, Interceptor, Protocol, Reason, RequestHead, RequestMeta,
    Route, Target, UpstreamFailure,
};
use proxy_http::Body;
use proxy_http::error as error_body;
use quick_cache::sync::Cache;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Mutex;

use proxy_broker::{Destination, Scheme, Vault};
use proxy_core::BrokeredCredential;

use crate::{CaError, HookActions, Leaf, LeafCache};

mod websocket;

use websocket::{RelaySlot, UpstreamWatch};

/// How long a client has to finish its TLS handshake, and the upstream its own.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// How long a tunnel intercepted only if TLS ([`Route::opaque_unless_tls`]) waits for the
/// client's first byte: a client still silent then waits for the server to speak first (SSH
/// sends its banner first), and the tunnel is relayed opaque.
pub const CLIENT_FIRST_WAIT: Duration = Duration::from_secs(1);

/// Why the interceptor could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MitmError {
    /// rustls refused the configuration.
    #[error("cannot configure TLS for interception: {0}")]
    Tls(#[from] rustls::Error),
    /// No usable upstream root certificate was given.
    #[error("no usable root certificate to verify upstream servers")]
    NoRoots,
}

/// Intercepts the tunnels the gate routes with `intercept` (limited mode with `mitm` on): the
/// client's TLS is terminated with a leaf for the tunnel's host signed by netproxy's CA, each
/// request inside is judged by [`Gate::admit_inner`], and allowed ones are forwarded over one
/// verified TLS connection on the tunnel's upstream connection (no new lookup, no new dial).
pub struct MitmInterceptor<G> {
    gate: Arc<G>,
    leaves: Arc<LeafCache>,
    /// Each host's ready server configuration, built from its cached leaf: a second tunnel to
    /// a host parses no key and copies no configuration.
    ready: Cache<Host, Ready>,
    server: Arc<rustls::ServerConfig>,
    /// Upstream TLS offering `h2` and `http/1.1`, for a client that chose `h2`.
    client: Arc<rustls::ClientConfig>,
    /// Upstream TLS offering `http/1.1` only, for a client that chose it or no protocol: its
    /// websockets need an HTTP/1.1 upstream, and it gains nothing from HTTP/2's streams.
    client_h1: Arc<rustls::ClientConfig>,
    /// A session with no byte either way for this long is closed (`idle_timeout_s`).
    idle: Duration,
    /// From the end of one response until the next request head is whole
    /// (`header_timeout_ms`).
    header_timeout: Duration,
    /// The largest request head (`max_header_bytes`).
    max_header_bytes: usize,
    /// The actions hooks name, with their secrets; swapped whole on reload.
    actions: Arc<ArcSwap<HookActions>>,
    /// The credential broker's vault: dummies in inner requests are replaced by real values
    /// where their grants are bound, and refused elsewhere (docs/credentials.md, "Injection").
    vault: Option<Arc<Vault>>,
}

/// HTTP/2 streams a client may have open at once inside one intercepted tunnel.
const MAX_STREAMS: u32 = 32;

impl<G> fmt::Debug for MitmInterceptor<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MitmInterceptor")
            .field("leaves", &self.leaves)
            .finish_non_exhaustive()
    }
}

/// ring's provider with the AES-128-GCM suites first (TLS 1.3's mandatory suite, and what
/// browsers prefer), on both sides of a tunnel: their key schedule hashes with SHA-256, which
/// has hardware instructions, where AES-256-GCM's SHA-384 does not; on the benchmark machine
/// that was 8% of the CPU of a new intercepted tunnel (docs/benchmarks.md). The other suites
/// stay, in ring's order, for peers without AES-128-GCM.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(p)
}

/// The leaf of one tunnel, whatever the client's SNI says (the tunnel's host is what the gate
/// admitted; an IP literal has no SNI at all).
#[derive(Debug)]
struct TunnelCert(Arc<CertifiedKey>);

impl ResolvesServerCert for TunnelCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A host's server configuration and the leaf it presents: used while that leaf is still the
/// one the leaf cache gives for the host (a renewed leaf gets a new configuration).
#[derive(Clone)]
struct Ready {
    leaf: Arc<Leaf>,
    /// ALPN `h2` then `http/1.1`: for an origin that took HTTP/2.
    config: Arc<rustls::ServerConfig>,
    /// ALPN `http/1.1` only: for an origin that speaks HTTP/1.1 (or no ALPN).
    config_h1: Arc<rustls::ServerConfig>,
}

/// The two server configurations of a host (see [`Ready`]).
#[derive(Clone)]
struct HostConfigs {
    h2: Arc<rustls::ServerConfig>,
    h1: Arc<rustls::ServerConfig>,
}

/// No certificate: the template's resolver, replaced for each host.
#[derive(Debug)]
struct NoCert;

impl ResolvesServerCert for NoCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

impl<G: Gate + 'static> MitmInterceptor<G> {
    /// An interceptor judging with `gate`, presenting leaves from `leaves`, and trusting
    /// `roots` upstream (DER certificates: the platform's and any the caller adds; proxy-bin
    /// reads them, as only it reads the environment).
    pub fn new(
        gate: Arc<G>,
        leaves: Arc<LeafCache>,
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, MitmError> {
        let mut store = rustls::RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(roots);
        if added == 0 {
            return Err(MitmError::NoRoots);
        }
        if ignored > 0 {
            tracing::warn!(
                ignored,
                "mitm: upstream root certificates that cannot be parsed are left out"
            );
        }
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NoCert));
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // The server picks the suite by its own order (AES-128-GCM first, above), not by the
        // client's (OpenSSL and rustls clients list AES-256-GCM first).
        server.ignore_client_order = true;
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store)
            .with_no_client_auth();
        let mut client_h1 = client.clone();
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        client_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            gate,
            ready: Cache::new(leaves.capacity()),
            leaves,
            server: Arc::new(server),
            client: Arc::new(client),
            client_h1: Arc::new(client_h1),
            idle: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 65_536,
            actions: Arc::new(ArcSwap::from_pointee(HookActions::default())),
            vault: None,
        })
    }

    /// Injects brokered credentials from `vault` (default none): an inner request carrying a
    /// grant's dummy gets the real value when the grant is bound to the tunnel's host, port and
    /// the request's path, and is refused `credential_not_bound` otherwise. The vault is the
    /// session's: its dummies are in the child's environment, so it is not swapped on reload.
    /// Every inner request is HTTPS, so `dangerously_allow_plaintext_credential_injection` has
    /// no bearing here.
    #[must_use]
    pub fn with_vault(mut self, vault: Arc<Vault>) -> Self {
        self.vault = Some(vault);
        self
    }

    /// Takes the actions that matching hooks apply from `actions` (shared with the caller,
    /// which swaps in a new set on reload; default none).
    #[must_use]
    pub fn with_actions(mut self, actions: Arc<ArcSwap<HookActions>>) -> Self {
        self.actions = actions;
        self
    }

    /// Bounds the requests inside a session like the proxy's own (`header_timeout_ms`,
    /// `max_header_bytes`; defaults 10 s and 64 KiB): a request head not whole in time ends the
    /// session, a larger one is refused.
    #[must_use]
    pub fn with_request_limits(
        mut self,
        header_timeout: Duration,
        max_header_bytes: usize,
    ) -> Self {
        self.header_timeout = header_timeout;
        self.max_header_bytes = max_header_bytes;
        self
    }

    /// Closes a session after `idle` with no byte either way (default 300 s, as
    /// `idle_timeout_s`): measured on the client's side, checked every `idle`, so a quiet
    /// session ends between one and two `idle`s after its last byte.
    #[must_use]
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The leaf cache (how many leaves were signed, for tests and metrics).
    pub fn leaves(&self) -> &Arc<LeafCache> {
        &self.leaves
    }

    /// The server configuration of one tunnel: the template with the host's leaf, built once
    /// per leaf and then shared by every tunnel to the host.
    fn server_for(&self, host: &Host) -> Result<HostConfigs, CaError> {
        let leaf = self.leaves.get(host)?;
        if let Some(ready) = self.ready.get(host)
            && Arc::ptr_eq(&ready.leaf, &leaf)
        {
            return Ok(HostConfigs {
                h2: ready.config,
                h1: ready.config_h1,
            });
        }
        let key = self
            .server
            .crypto_provider()
            .key_provider
            .load_private_key(leaf.key())
            .map_err(|e| CaError::Invalid {
                path: self.leaves.ca().info().subject.clone().into(),
                why: format!("the leaf key cannot sign: {e}"),
            })?;
        let certified = CertifiedKey::new(leaf.chain().to_vec(), key);
        let mut config = (*self.server).clone();
        config.cert_resolver = Arc::new(TunnelCert(Arc::new(certified)));
        let mut config_h1 = config.clone();
        config_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let configs = HostConfigs {
            h2: Arc::new(config),
            h1: Arc::new(config_h1),
        };
        // Two tunnels building at once both insert; either result is right.
        self.ready.insert(
            host.clone(),
            Ready {
                leaf,
                config: configs.h2.clone(),
                config_h1: configs.h1.clone(),
            },
        );
        Ok(configs)
    }
}

impl<G, C, U> Interceptor<C, U> for MitmInterceptor<G>
where
    G: Gate + 'static,
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn accepts(&self, _meta: &RequestMeta, route: &Route) -> Result<(), proxy_core::Decision> {
        if route.intercept {
            Ok(())
        } else {
            Err(proxy_core::Decision::deny(Reason::MitmRequired))
        }
    }

    async fn intercept(&self, tunnel: Intercepted<C, U>) -> (u64, u64) {
        let Intercepted {
            mut client,
            upstream,
            meta,
            route,
            lease: _,
        } = tunnel;
        let counts = Arc::new(Counts::default());
        let Some(host) = meta.target.host().cloned() else {
            return (0, 0);
        };
        let (hello, bytes) = if route.opaque_unless_tls {
            let (hello, bytes) =
                proxy_io::peek_hello(&mut client, Vec::new(), CLIENT_FIRST_WAIT).await;
            match hello {
                // The start of a ClientHello, not whole yet: the handshake's own time.
                Hello::NotTls(_)
                    if !bytes.is_empty()
                        && matches!(proxy_core::tls::client_hello(&bytes), Hello::Incomplete) =>
                {
                    proxy_io::peek_hello(&mut client, bytes, HANDSHAKE_WAIT).await
                }
                hello => (hello, bytes),
            }
        } else {
            proxy_io::peek_hello(&mut client, Vec::new(), HANDSHAKE_WAIT).await
        };
        if !matches!(hello, Hello::ClientHello { .. }) {
            if route.opaque_unless_tls {
                // A credential destination's tunnel that is not TLS (or whose server speaks
                // first) is an opaque tunnel: nothing injected, the bytes read given back.
                // The front-end still drops it when the tunnel's lease is revoked.
                tracing::debug!(target = %meta.target, "tunnel relayed opaque: not TLS");
                return proxy_io::tunnel(proxy_io::Replay::new(bytes, client), upstream, self.idle)
                    .await;
            }
            tracing::debug!(target = %meta.target, "intercepted tunnel closed: not TLS");
            return (bytes.len() as u64, 0);
        }
        let client = Counted {
            inner: proxy_io::Replay::new(bytes, client),
            counts: counts.clone(),
        };
        let server = match self.server_for(&host) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(target = %meta.target, error = %e, "cannot issue a leaf certificate");
                return counts.get();
            }
        };
        // The client's hello first (the handshake waits for the server's choice), to learn
        // which HTTP versions it offers.
        let start = Box::pin(tokio_rustls::LazyConfigAcceptor::new(
            rustls::server::Acceptor::default(),
            client,
        ));
        let Ok(Ok(start)) = tokio::time::timeout(HANDSHAKE_WAIT, start).await else {
            tracing::debug!(target = %meta.target, "intercepted tunnel closed: TLS handshake failed");
            return counts.get();
        };
        let offers_h2 = start
            .client_hello()
            .alpn()
            .is_some_and(|mut p| p.any(|p| p == b"h2"));
        // Told when the origin's connection ends: the session then ends too (unless a websocket
        // took the connection over), so the client's next request comes through a new tunnel
        // instead of failing on this one.
        let watch = Arc::new(UpstreamWatch::default());
        // The origin is offered what the client offers: HTTP/2 and HTTP/1.1 to a client that
        // offers HTTP/2, HTTP/1.1 only otherwise (a websocket needs an HTTP/1.1 upstream).
        // Boxed: the session's task is sized for serving, not for the handshake.
        let client_config = if offers_h2 {
            &self.client
        } else {
            &self.client_h1
        };
        let upstream = Box::pin(connect_upstream(
            client_config,
            &host,
            upstream,
            watch.clone(),
        ))
        .await;
        // Once per tunnel, whatever the client then asks (each request inside is answered
        // 502 with it).
        if let Err(e) = &upstream {
            tracing::debug!(target = %meta.target, error = %e, "intercepted tunnel: upstream TLS failed");
            self.gate.failed(&meta, &route, e);
        }
        // The client is then offered what the origin took: HTTP/2 only when the origin speaks
        // it, so that requests the client would multiplex never queue on an HTTP/1.1 origin
        // that may close after each response.
        let config = match &upstream {
            Ok(Sender::H2(_)) | Err(_) => server.h2,
            Ok(Sender::H1(_)) => server.h1,
        };
        let accept = Box::pin(start.into_stream(config));
        let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_WAIT, accept).await else {
            tracing::debug!(target = %meta.target, "intercepted tunnel closed: TLS handshake failed");
            return counts.get();
        };

        let meta_target = meta.target.clone();
        let inner = Arc::new(Tunnel {
            gate: self.gate.clone(),
            meta,
            route,
            upstream: upstream.map(Mutex::new),
            actions: self.actions.clone(),
            vault: self.vault.clone(),
            watch: watch.clone(),
            relay: RelaySlot::default(),
        });
        let session = inner.clone();
        let service = hyper::service::service_fn(move |req| {
            let inner = inner.clone();
            async move { Ok::<_, std::convert::Infallible>(inner.serve(req).await) }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(self.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS)
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX));
        // Boxed so that it can be dropped before a websocket's relay (which then holds the
        // client's stream alone).
        let mut serve =
            Box::pin(builder.serve_connection_with_upgrades(TokioIo::new(tls), service));
        // Closed when nothing moved either way for a whole `idle` (a request waiting on a
        // silent upstream included, as an opaque tunnel would be).
        let mut last = counts.get();
        let served = loop {
            tokio::select! {
                _ = serve.as_mut() => break true,
                () = watch.changed() => {
                    if !watch.gone() {
                        continue;
                    }
                    // The origin closed its side: finish the request in flight, then close.
                    serve.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(self.idle, serve.as_mut()).await;
                    break false;
                }
                () = tokio::time::sleep(self.idle) => {
                    let now = counts.get();
                    if now == last {
                        tracing::debug!(target = %meta_target, "intercepted session closed: idle");
                        break false;
                    }
                    last = now;
                }
            }
        };
        drop(serve);
        // A websocket took the session over: its bytes are relayed until it ends.
        if served && let Some(relay) = session.relay.take() {
            relay.run(self.idle).await;
        }
        counts.get()
    }
}

/// The upstream side of one tunnel: an HTTP/1.1 or HTTP/2 client connection over verified TLS.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Incoming>),
    H2(hyper::client::conn::http2::SendRequest<Incoming>),
}

/// TLS to the tunnel's host over `io` (SNI the host's name, none for an IP literal; the
/// certificate verified against the roots), then an HTTP client connection by the ALPN the
/// server chose.
async fn connect_upstream<U>(
    config: &Arc<rustls::ClientConfig>,
    host: &Host,
    io: U,
    watch: Arc<UpstreamWatch>,
) -> Result<Sender, Failure>
where
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tls_failed = |why: String| Failure::new(UpstreamFailure::UpstreamTlsFailed, why);
    let name = match host.ip() {
        Some(ip) => ServerName::IpAddress(ip.into()),
        None => ServerName::try_from(host.to_string())
            .map_err(|e| tls_failed(format!("invalid server name: {e}")))?,
    };
    let connect = tokio_rustls::TlsConnector::from(config.clone()).connect(name, io);
    let tls = match tokio::time::timeout(HANDSHAKE_WAIT, connect).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(tls_failed(tls_error_text(host, &e))),
        Err(_) => {
            return Err(Failure::new(
                UpstreamFailure::UpstreamTimeout,
                format!("{host} did not complete the TLS handshake in time"),
            ));
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let broken = |e: hyper::Error| {
        Failure::new(
            UpstreamFailure::UpstreamError,
            format!("the HTTP exchange with {host} broke: {e}"),
        )
    };
    if h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(broken)?;
        tokio::spawn(async move {
            let _ = conn.await;
            watch.end();
        });
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(broken)?;
        tokio::spawn(async move {
            // With upgrades: a websocket's `101` hands the connection over to its relay.
            let _ = conn.with_upgrades().await;
            watch.end();
        });
        Ok(Sender::H1(sender))
    }
}

/// A failed TLS handshake with the origin `host`, in one plain sentence (rustls names some
/// causes by their variant, e.g. `UnknownIssuer`: they are put in words here).
fn tls_error_text(host: &Host, e: &std::io::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) else {
        return format!(
            "the TLS handshake with {host} failed: {}",
            proxy_core::io_error_text(e)
        );
    };
    match tls {
        E::InvalidCertificate(c) => {
            let why = match c {
                C::UnknownIssuer => "is not signed by an authority netproxy trusts".to_owned(),
                C::BadSignature => {
                    "is not signed by the authority it names (bad signature)".to_owned()
                }
                C::Expired | C::ExpiredContext { .. } => "has expired".to_owned(),
                C::NotValidYet | C::NotValidYetContext { .. } => "is not valid yet".to_owned(),
                C::Revoked => "has been revoked".to_owned(),
                C::NotValidForName => format!("is not valid for the name {host}"),
                C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                    "is not meant for a server".to_owned()
                }
                other => format!("was refused: {other}"),
            };
            format!("the certificate of {host} {why}")
        }
        E::AlertReceived(alert) => format!(
            "{host} refused the TLS handshake (alert: {})",
            words(&format!("{alert:?}"))
        ),
        E::NoCertificatesPresented => format!("{host} presented no certificate"),
        other => format!("the TLS handshake with {host} failed: {other}"),
    }
}

/// `HandshakeFailure` as `handshake failure`.
fn words(camel: &str) -> String {
    let mut out = String::new();
    for c in camel.chars() {
        if c.is_ascii_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// What the requests of one tunnel share.
struct Tunnel<G> {
    gate: Arc<G>,
    meta: RequestMeta,
    route: Route,
    upstream: Result<Mutex<Sender>, Failure>,
    actions: Arc<ArcSwap<HookActions>>,
    vault: Option<Arc<Vault>>,
    /// The upstream connection's end, and its websocket upgrade.
    watch: Arc<UpstreamWatch>,
    /// The relay of a websocket that took the session over.
    relay: RelaySlot,
}

/// At most this much of a refused request's body is read (and thrown away) before the refusal is
/// sent, so that a client still sending a small body gets the answer cleanly rather than a
/// reset stream; a larger or slower body is cut short.
const REFUSED_BODY_DRAIN: usize = 64 * 1024;
/// How long a refused request's body is read for, at most.
const REFUSED_BODY_WAIT: Duration = Duration::from_secs(1);

/// Reads and discards a refused request's body, within [`REFUSED_BODY_DRAIN`] and
/// [`REFUSED_BODY_WAIT`]; not when the client waits for `100 Continue` before sending it
/// (reading would send the `100` and invite the upload).
async fn drain(req: Request<Incoming>) {
    use hyper::body::Body as _;
    let waits = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits {
        return;
    }
    let mut body = req.into_body();
    let read = async {
        let mut seen = 0usize;
        while seen <= REFUSED_BODY_DRAIN && !body.is_end_stream() {
            match body.frame().await {
                Some(Ok(frame)) => {
                    seen += frame.data_ref().map_or(0, bytes::Bytes::len);
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSED_BODY_WAIT, read).await;
}

impl<G: Gate> Tunnel<G> {
    async fn serve(&self, req: Request<Incoming>) -> Response<Body> {
        let (inner, verdict) = match self.judge(&req).await {
            Ok(judged) => judged,
            Err(refusal) => {
                drain(req).await;
                return refusal;
            }
        };
        // The actions in force now, all of them there (a reload may have removed one: the
        // request is then refused rather than sent without it).
        let actions = self.actions.load_full();
        if let Some(missing) = verdict.actions.iter().find(|a| !actions.contains(a)) {
            let refused = proxy_core::Decision::deny(Reason::MitmHookDenied).with_detail(format!(
                "the action {missing} of hook {} is not loaded",
                verdict.hook.as_deref().unwrap_or_default()
            ));
            drain(req).await;
            return proxy_http::blocked(&refused, &inner);
        }
        let sender = match &self.upstream {
            Ok(s) => s,
            Err(f) => return proxy_http::failure(f),
        };
        let path = req.uri().path().to_owned();
        let apply = |headers: &mut HeaderMap| {
            for name in &verdict.actions {
                // Checked above; the set cannot change under this `Arc`.
                let _applied = actions.apply(name, headers);
            }
            // Last, on the headers as they will be sent: no dummy leaves unreplaced, whatever
            // the strip and the actions did.
            self.inject(&path, headers)
                .map_err(|refused| Box::new(proxy_http::blocked(&refused, &inner)))
        };
        // A websocket is held like a tunnel: a narrower policy (limited mode, the host no
        // longer allowed) revokes it, and its relay ends.
        let lease = if inner.upgrade {
            self.gate.hold(&inner, &self.route)
        } else {
            proxy_core::Lease::none()
        };
        match self.forward(sender, req, apply, lease).await {
            Ok(resp) => resp,
            Err(f) => {
                self.gate.failed(&inner, &self.route, &f);
                proxy_http::failure(&f)
            }
        }
    }

    /// The brokered credential whose dummy `req` carries (see [`Vault::check_request`]), as the
    /// gate is told of it; `None` without a vault or a dummy.
    fn credential_of(&self, req: &Request<Incoming>) -> Option<BrokeredCredential> {
        let vault = self.vault.as_ref()?;
        let host = self.meta.target.host()?;
        let dest = Destination::new(
            Scheme::Https,
            host,
            self.meta.target.port(),
            req.uri().path(),
        );
        match vault.check_request(&dest, req.headers(), false) {
            Ok(done) => done.audit().map(|a| BrokeredCredential::bound(a.grant)),
            Err(refused) => Some(BrokeredCredential::refused(
                refused.grant.clone(),
                refused.to_string(),
            )),
        }
    }

    /// Replaces the dummies in `headers` (the request to `path`, as it will be sent) by their
    /// real values, or says why the request is refused (`credential_not_bound`).
    fn inject(&self, path: &str, headers: &mut HeaderMap) -> Result<(), proxy_core::Decision> {
        let Some(vault) = &self.vault else {
            return Ok(());
        };
        let refuse =
            |why: String| proxy_core::Decision::deny(Reason::CredentialNotBound).with_detail(why);
        let Some(host) = self.meta.target.host() else {
            return Err(refuse("the tunnel's target is not a host".to_owned()));
        };
        let dest = Destination::new(Scheme::Https, host, self.meta.target.port(), path);
        match vault.inject(&dest, headers, false) {
            Ok(_) => Ok(()),
            Err(refused) => {
                // The gate judged the original request; only what the hooks' actions added
                // can differ, and a dummy there is refused all the same.
                tracing::warn!(target = %self.meta.target, grant = %refused.grant, "intercepted request refused: a dummy credential appeared after the gate's verdict");
                Err(refuse(refused.to_string()))
            }
        }
    }

    /// Judges one request read inside the tunnel: its inner request and verdict, or the
    /// refusal to send (405 for a nested `CONNECT`, 400 for another host, the gate's 403).
    async fn judge(
        &self,
        req: &Request<Incoming>,
    ) -> Result<(RequestMeta, proxy_core::InnerVerdict), Response<Body>> {
        let named = named_target(req);
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
            .collect();
        let head = RequestHead {
            method: req.method().as_str(),
            path: req.uri().path(),
            query: req.uri().query(),
            headers: &headers,
        };
        if req.method() == Method::CONNECT {
            // Recorded like any refusal inside the tunnel (limited mode refuses the method).
            let inner =
                RequestMeta::new(Protocol::Https, self.meta.target.clone()).with_method("CONNECT");
            self.gate
                .admit_inner(&self.meta, &self.route, &inner, &head)
                .await;
            return Err(error_body(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "CONNECT is not supported inside an intercepted tunnel",
            ));
        }
        let target = match named {
            Some(t) if t == self.meta.target => t,
            other => {
                // Another host (domain fronting) is recorded: the gate refuses a request that
                // names another target than its tunnel's.
                if let Some(t) = other {
                    let inner =
                        RequestMeta::new(Protocol::Https, t).with_method(req.method().as_str());
                    self.gate
                        .admit_inner(&self.meta, &self.route, &inner, &head)
                        .await;
                }
                return Err(error_body(
                    StatusCode::BAD_REQUEST,
                    "host_mismatch",
                    "host mismatch: the request's Host must be the tunnel's target",
                ));
            }
        };
        let mut inner =
            RequestMeta::new(Protocol::Https, target).with_method(req.method().as_str());
        if let Some(client) = self.meta.client {
            inner = inner.with_client(client);
        }
        if is_upgrade(req.headers()) {
            inner = inner.with_upgrade();
        }
        inner.method_override = proxy_core::method_override(
            req.headers()
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
        );
        // The dummy the original request carries, and whether its grant is bound here: the
        // gate refuses an unbound one, in its one event, after judging the hooks on the
        // original request.
        if let Some(credential) = self.credential_of(req) {
            inner = inner.with_credential(credential);
        }
        let verdict = self
            .gate
            .admit_inner(&self.meta, &self.route, &inner, &head)
            .await;
        if !verdict.decision.is_allowed() {
            return Err(proxy_http::blocked(&verdict.decision, &inner));
        }
        // A gate that allowed it anyway is not followed: the real value never goes there.
        if let Some(refused) = inner.credential_refusal() {
            return Err(proxy_http::blocked(&refused, &inner));
        }
        Ok((inner, verdict))
    }

    /// Sends `req` upstream: hop-by-hop headers removed (a websocket handshake keeps its own),
    /// then `apply` (the matching hook's actions, after the strip so that a client's
    /// `Connection` header cannot remove what they inject, then the broker's injection); a
    /// refusal from `apply` is answered and nothing is sent.
    async fn forward(
        &self,
        sender: &Mutex<Sender>,
        mut req: Request<Incoming>,
        apply: impl FnOnce(&mut HeaderMap) -> Result<(), Box<Response<Body>>>,
        lease: proxy_core::Lease,
    ) -> Result<Response<Body>, Failure> {
        let authority = authority_of(&self.meta.target);
        // HTTP/2 has no `Connection` header: only an HTTP/1 client is told to close.
        let client_h1 = req.version() < http::Version::HTTP_2;
        let upgrade =
            websocket::is_websocket(&req).then(|| websocket::Upgrade::take(&mut req, &self.watch));
        strip_hop_by_hop(req.headers_mut());
        if let Some(u) = &upgrade {
            u.restore(req.headers_mut());
        }
        if let Err(refused) = apply(req.headers_mut()) {
            // Never sent: the refusal is the answer.
            return Ok(*refused);
        }
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
            .to_owned();
        let broken = |e: hyper::Error| {
            Failure::new(
                UpstreamFailure::UpstreamError,
                format!("HTTP with {authority}: {e}"),
            )
        };
        let mut guard = sender.lock().await;
        let pending = match &mut *guard {
            Sender::H1(s) => {
                *req.version_mut() = http::Version::HTTP_11;
                *req.uri_mut() = path.parse().map_err(|_| bad_uri())?;
                let host = http::HeaderValue::from_str(&authority).map_err(|_| bad_uri())?;
                req.headers_mut().insert(header::HOST, host);
                s.ready().await.map_err(broken)?;
                let fut = s.send_request(req);
                drop(guard);
                fut.await
            }
            Sender::H2(_) if upgrade.is_some() => return Err(websocket::needs_http1()),
            Sender::H2(s) => {
                *req.version_mut() = http::Version::HTTP_2;
                *req.uri_mut() = format!("https://{authority}{path}")
                    .parse()
                    .map_err(|_| bad_uri())?;
                req.headers_mut().remove(header::HOST);
                s.ready().await.map_err(broken)?;
                let fut = s.send_request(req);
                drop(guard);
                fut.await
            }
        };
        let mut resp = pending.map_err(broken)?;
        if let Some(u) = upgrade {
            return u.answer(resp, &self.relay, lease);
        }
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Err(websocket::unasked_switch());
        }
        // An origin that closes after this response (HTTP/1.0 without keep-alive, or
        // `Connection: close`) leaves the tunnel without an upstream: the client is told to
        // close too, so its next request opens a new tunnel instead of meeting a dead one.
        let last = client_h1 && closes_after(&resp);
        strip_hop_by_hop(resp.headers_mut());
        if last {
            resp.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        Ok(resp.map(BodyExt::boxed))
    }
}

/// Whether the origin closes its connection after `resp`: `Connection: close`, or HTTP/1.0
/// without `Connection: keep-alive`.
fn closes_after<B>(resp: &Response<B>) -> bool {
    let has = |token: &str| {
        resp.headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has("close") || (resp.version() == http::Version::HTTP_10 && !has("keep-alive"))
}

fn bad_uri() -> Failure {
    Failure::new(
        UpstreamFailure::UpstreamError,
        "cannot rebuild the request's URI",
    )
}

/// The authority of the upstream request: the host as a URI writes it, the port when not 443.
fn authority_of(target: &Target) -> String {
    match target.host() {
        Some(h) if target.port() == 443 => h.to_uri_host(),
        _ => target.to_string(),
    }
}

/// The target a request names: its Host header and its URI authority (HTTP/2's
/// `:authority`), which must agree when both are there; `None` when neither is, or they
/// differ, or one is not a valid authority.
fn named_target(req: &Request<Incoming>) -> Option<Target> {
    let parse = |s: &str| Target::parse_authority(s, 443).ok();
    let from_uri = req.uri().authority().map(|a| parse(a.as_str()));
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let from_host = hosts.next().map(|v| v.to_str().ok().and_then(parse));
    if hosts.next().is_some() {
        return None;
    }
    match (from_uri, from_host) {
        (Some(a), Some(b)) if a == b => a,
        (Some(_), Some(_)) | (None, None) => None,
        (Some(a), None) | (None, Some(a)) => a,
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1) and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(n);
    }
}

/// Bytes read from and written to the client.
#[derive(Debug, Default)]
struct Counts {
    up: AtomicU64,
    down: AtomicU64,
}

impl Counts {
    fn get(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }
}

/// The client's stream, counting its bytes both ways.
struct Counted<S> {
    inner: S,
    counts: Arc<Counts>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.counts.up.fetch_add(n as u64, Ordering::Relaxed);
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            self.counts.down.fetch_add(*n as u64, Ordering::Relaxed);
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use http::{HeaderMap, HeaderValue};
    use proxy_core::{Host, Target};
    use proxy_test_support::StubGate;

    use super::{MitmInterceptor, authority_of, strip_hop_by_hop};
    use crate::{Ca, LeafCache};

    #[test]
    fn a_host_s_server_configuration_is_built_once_per_leaf() {
        let ca = Arc::new(Ca::generate().unwrap());
        let roots = [ca.cert_der().clone()];
        let leaves = Arc::new(LeafCache::new(ca.clone(), 16));
        let m =
            MitmInterceptor::new(Arc::new(StubGate::new()), leaves.clone(), roots.clone()).unwrap();
        let a = Host::parse("a.example").unwrap();
        let first = m.server_for(&a).unwrap();
        let again = m.server_for(&a).unwrap();
        assert!(
            Arc::ptr_eq(&first.h2, &again.h2) && Arc::ptr_eq(&first.h1, &again.h1),
            "the second tunnel to a host shares the first one's configurations"
        );
        assert_eq!(
            first.h2.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(first.h1.alpn_protocols, [b"http/1.1".to_vec()]);
        let b = m.server_for(&Host::parse("b.example").unwrap()).unwrap();
        assert!(!Arc::ptr_eq(&first.h2, &b.h2), "another host has its own");
        assert_eq!(leaves.issued(), 2);

        // A leaf renewed at every use (margin = validity): a new configuration each time.
        let renewed = Arc::new(
            LeafCache::new(ca, 16).with_validity(Duration::from_secs(60), Duration::from_secs(60)),
        );
        let m = MitmInterceptor::new(Arc::new(StubGate::new()), renewed.clone(), roots).unwrap();
        let first = m.server_for(&a).unwrap();
        assert!(!Arc::ptr_eq(&first.h2, &m.server_for(&a).unwrap().h2));
        assert_eq!(renewed.issued(), 2);
    }

    #[test]
    fn the_server_picks_aes_128_gcm_over_the_client_s_first_choice() {
        use rustls::pki_types::ServerName;
        use rustls::{CipherSuite, ClientConnection, ServerConnection};

        let ca = Arc::new(Ca::generate().unwrap());
        let leaves = Arc::new(LeafCache::new(ca.clone(), 16));
        let m = MitmInterceptor::new(Arc::new(StubGate::new()), leaves, [ca.cert_der().clone()])
            .unwrap();
        let server = m.server_for(&Host::parse("a.example").unwrap()).unwrap();
        // ring's default order, as rustls and OpenSSL clients send it: AES-256-GCM first.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        assert_eq!(
            provider.cipher_suites[0].suite(),
            CipherSuite::TLS13_AES_256_GCM_SHA384
        );
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("a.example").unwrap();
        let mut c = ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = ServerConnection::new(server.h2).unwrap();
        for _ in 0..10 {
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
            let mut wire = Vec::new();
            c.write_tls(&mut wire).unwrap();
            s.read_tls(&mut wire.as_slice()).unwrap();
            s.process_new_packets().unwrap();
            let mut wire = Vec::new();
            s.write_tls(&mut wire).unwrap();
            c.read_tls(&mut wire.as_slice()).unwrap();
            c.process_new_packets().unwrap();
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        assert_eq!(
            s.negotiated_cipher_suite().map(|s| s.suite()),
            Some(CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Remove"),
        );
        h.insert("x-remove", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn an_origin_closing_after_its_response_is_seen() {
        let resp = |version, connection: Option<&'static str>| {
            let mut b = http::Response::builder().version(version);
            if let Some(c) = connection {
                b = b.header("connection", c);
            }
            b.body(()).unwrap()
        };
        use http::Version;
        assert!(super::closes_after(&resp(Version::HTTP_10, None)));
        assert!(!super::closes_after(&resp(
            Version::HTTP_10,
            Some("Keep-Alive")
        )));
        assert!(super::closes_after(&resp(Version::HTTP_11, Some("close"))));
        assert!(super::closes_after(&resp(
            Version::HTTP_11,
            Some("x-a, Close")
        )));
        assert!(!super::closes_after(&resp(Version::HTTP_11, None)));
    }

    #[test]
    fn the_upstream_authority_omits_port_443_and_brackets_ipv6() {
        let a = |s: &str| authority_of(&Target::parse_authority(s, 443).unwrap());
        assert_eq!(a("Example.COM:443"), "example.com");
        assert_eq!(a("example.com:8443"), "example.com:8443");
        assert_eq!(a("[::1]:443"), "[::1]");
        assert_eq!(a("[::1]:8443"), "[::1]:8443");
    }

    /// A failed TLS handshake is said in words: never a variant name or an `(os error N)`.
    #[test]
    fn tls_failures_in_plain_words() {
        use rustls::{AlertDescription, CertificateError, Error};
        let host = Host::parse("origin.test").unwrap();
        let io = |e: Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        for (e, want) in [
            (
                io(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
                "the certificate of origin.test is not signed by an authority netproxy trusts",
            ),
            (
                io(Error::InvalidCertificate(CertificateError::Expired)),
                "the certificate of origin.test has expired",
            ),
            (
                io(Error::AlertReceived(AlertDescription::HandshakeFailure)),
                "origin.test refused the TLS handshake (alert: handshake failure)",
            ),
            (
                std::io::Error::from(std::io::ErrorKind::ConnectionReset),
                "the TLS handshake with origin.test failed: the connection was reset",
            ),
        ] {
            assert_eq!(super::tls_error_text(&host, &e), want);
        }
    }
}
