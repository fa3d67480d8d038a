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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use proxy_core::{
        Decision, Intercepted, Interceptor, Lease, LeaseHolder, Protocol, RequestMeta, Route,
        Target,
    };
    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::intercept;
    use crate::Stats;

    /// Holds both streams until dropped; or, with `done`, returns at once with these counts.
    struct Session {
        done: Option<(u64, u64)>,
    }

    impl Interceptor<DuplexStream, DuplexStream> for Session {
        fn accepts(&self, _meta: &RequestMeta, _route: &Route) -> Result<(), Decision> {
            Ok(())
        }

        async fn intercept(&self, tunnel: Intercepted<DuplexStream, DuplexStream>) -> (u64, u64) {
            match self.done {
                Some(counts) => counts,
                None => {
                    let _held = tunnel;
                    std::future::pending().await
                }
            }
        }
    }

    struct Nobody;

    impl LeaseHolder for Nobody {
        fn release(&self, _id: u64) {}
    }

    fn tunnel(
        lease: Lease,
    ) -> (
        Intercepted<DuplexStream, DuplexStream>,
        DuplexStream,
        DuplexStream,
    ) {
        let (client, client_end) = tokio::io::duplex(64);
        let (upstream_end, server) = tokio::io::duplex(64);
        let target =
            Target::parse_authority("example.com:443", 443).unwrap_or_else(|e| panic!("{e}"));
        let tunnel = Intercepted {
            client: client_end,
            upstream: upstream_end,
            meta: RequestMeta::new(Protocol::HttpsConnect, target),
            route: Route::direct(Vec::new(), Decision::allow()),
            lease,
        };
        (tunnel, client, server)
    }

    #[tokio::test]
    async fn a_session_that_ends_counts_its_bytes() {
        let stats = Arc::new(Stats::default());
        let (t, _client, _server) = tunnel(Lease::none());
        intercept(&Session { done: Some((3, 4)) }, t, stats.tunnel()).await;
        assert_eq!((stats.bytes_up(), stats.bytes_down()), (3, 4));
        assert_eq!(stats.tunnels(), 0);
    }

    #[tokio::test]
    async fn a_revoked_lease_ends_the_session_and_closes_both_ends() {
        let holder: Arc<dyn LeaseHolder> = Arc::new(Nobody);
        let (lease, revoker) = Lease::new(1, Arc::downgrade(&holder));
        let stats = Arc::new(Stats::default());
        let (t, mut client, mut server) = tunnel(lease);
        let open = stats.tunnel();
        let session =
            tokio::spawn(async move { intercept(&Session { done: None }, t, open).await });
        assert!(revoker.revoke());
        tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .unwrap_or_else(|_| panic!("the revoked session ended"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap_or(1), 0);
        assert_eq!(server.read_to_end(&mut rest).await.unwrap_or(1), 0);
        assert_eq!(stats.tunnels(), 0);
    }
}
