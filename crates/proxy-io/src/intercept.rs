//! Serving an intercepted tunnel, as both front-ends do once they answered the client.

use proxy_core::{Intercepted, Interceptor};

use crate::Open;

/// Hands `tunnel` (admitted, dialled, and answered to the client) to `interceptor` and waits
/// until the session ends, or until the tunnel's lease is revoked: then the session is dropped,
/// which closes both streams. `open` counts the tunnel and, when the session ends, the bytes
/// it relayed.
pub async fn intercept<I, C, U>(interceptor: &I, tunnel: Intercepted<C, U>, open: Open)
where
    I: Interceptor<C, U>,
{
    let client = tunnel.meta.client;
    let revoked = tunnel.lease.revoked();
    tokio::select! {
        (up, down) = interceptor.intercept(tunnel) => {
            open.closed(up, down);
            tracing::debug!(client = ?client, up, down, "intercepted tunnel closed");
        }
        () = revoked => {
            tracing::debug!(client = ?client, "intercepted tunnel closed: the policy no longer allows it");
        }
    }
}
