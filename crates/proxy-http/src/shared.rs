//! What every request handler of one listener shares.

use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use proxy_io::Limits;

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
    /// Counts the connections, tunnels and upstream connections in flight, so shutdown can wait
    /// for them.
    pub(crate) tracker: Arc<proxy_io::Tracker>,
}

impl<G, D, I> Shared<G, D, I> {
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(fut);
    }
}
