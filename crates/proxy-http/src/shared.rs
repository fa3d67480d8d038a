//! What every request handler of one listener shares.

use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use proxy_broker::Vault;
use proxy_io::Limits;

/// The credential broker as the plain HTTP path uses it (docs/credentials.md, "Injection").
#[derive(Debug, Clone)]
pub struct Broker {
    /// The session's vault.
    pub vault: Arc<Vault>,
    /// `dangerously_allow_plaintext_credential_injection`: a dummy in a plain HTTP request
    /// gets its real value when its grant is bound to the destination's host, port and path;
    /// without it such a request is refused `credential_not_bound`.
    pub allow_plaintext: bool,
}

/// The client side of an intercepted `CONNECT`, as the [`Interceptor`](proxy_core::Interceptor)
/// gets it after the `200`: hyper's upgraded connection, which first gives back any bytes the
/// client sent right behind its `CONNECT` head.
pub type TunnelClient = TokioIo<hyper::upgrade::Upgraded>;

/// The gate, the dialer, the interceptor and the limits of one listener, and its tasks.
pub(crate) struct Shared<G, D, I> {
    pub(crate) gate: Arc<G>,
    pub(crate) dialer: Arc<D>,
    pub(crate) interceptor: Arc<I>,
    pub(crate) limits: Limits,
    /// The credential broker, when `credential_broker` is on.
    pub(crate) broker: Option<Broker>,
    /// Counts the connections, tunnels and upstream connections in flight, so shutdown can wait
    /// for them.
    pub(crate) tracker: Arc<proxy_io::Tracker>,
}

impl<G, D, I> Shared<G, D, I> {
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(fut);
    }
}
