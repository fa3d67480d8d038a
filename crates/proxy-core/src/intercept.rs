//! The seam for interception: a front-end hands a tunnel the gate routed with `intercept` to an
//! [`Interceptor`] instead of copying its bytes.
//!
//! The order is fixed by the front-ends: the gate admits the tunnel, the interceptor says
//! whether it takes it ([`Interceptor::accepts`]), the front-end dials the route (a `CONNECT` is
//! answered `200` only once the upstream is connected), answers the client (the HTTP `200`, the
//! SOCKS success reply), and only then calls [`Interceptor::intercept`] with the client's
//! stream, the upstream connection, the request, the route and the tunnel's lease. A route
//! with `intercept` never becomes an opaque tunnel: an interceptor that declines it makes the
//! front-end refuse it.
//!
//! The trait is generic over the two stream types, so this crate names no runtime: an
//! implementation adds the I/O bounds it needs (a TLS server on the client, a TLS client on
//! the upstream).

use std::future::Future;

use crate::decision::{Decision, Reason};
use crate::gate::Route;
use crate::lease::Lease;
use crate::target::RequestMeta;

/// One intercepted tunnel, as a front-end hands it over.
#[derive(Debug)]
pub struct Intercepted<C, U> {
    /// The client's stream, after the front-end's success answer: its next bytes are the
    /// client's own (a TLS `ClientHello`, for HTTPS), including any the client sent before the
    /// answer reached it.
    pub client: C,
    /// The connection to the target (or, through an upstream proxy, the tunnel it opened),
    /// already established.
    pub upstream: U,
    /// The tunnel's request as the gate admitted it (`https_connect` or `socks5_tcp`).
    pub meta: RequestMeta,
    /// The route the gate gave it (`intercept` is true); the requests read inside the tunnel
    /// are judged against it ([`Gate::admit_inner`](crate::Gate::admit_inner)).
    pub route: Route,
    /// The tunnel's lease, revoked when a narrower policy no longer allows the target. The
    /// front-end ends the session then (it drops the future of [`Interceptor::intercept`],
    /// which closes both streams); the interceptor may watch it too.
    pub lease: Lease,
}

/// Serves the tunnels the gate routes with `intercept`: `C` is the client's stream type and `U`
/// the upstream connection's (the front-end's and the dialer's).
///
/// ```
/// use proxy_core::{Decision, Intercepted, Interceptor, Reason, RequestMeta, Route};
/// /// Takes every tunnel and closes it at once.
/// #[derive(Debug)]
/// struct Close;
/// impl<C: Send + 'static, U: Send + 'static> Interceptor<C, U> for Close {
///     fn accepts(&self, _meta: &RequestMeta, _route: &Route) -> Result<(), Decision> {
///         Ok(())
///     }
///     async fn intercept(&self, tunnel: Intercepted<C, U>) -> (u64, u64) {
///         drop(tunnel);
///         (0, 0)
///     }
/// }
/// ```
pub trait Interceptor<C, U>: Send + Sync {
    /// Whether it takes the tunnel `meta` the gate routed along `route`, asked before anything
    /// is dialled. `Err` carries the refusal the front-end answers instead (a `403` with its
    /// reason, or the SOCKS reply `0x02`); the gate's audit event for the admission stands.
    fn accepts(&self, meta: &RequestMeta, route: &Route) -> Result<(), Decision>;

    /// Serves one tunnel until it ends. Returns the bytes it relayed from the client to the
    /// upstream and back, for the front-end's counts.
    fn intercept(&self, tunnel: Intercepted<C, U>) -> impl Future<Output = (u64, u64)> + Send;
}

/// No interception: every tunnel that needs it is refused as `mitm_required`, as when HTTPS
/// interception is not built or not configured.
///
/// ```
/// use proxy_core::{Decision, Interceptor, NoInterception, Protocol, Reason, RequestMeta, Route, Target};
/// let meta = RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority("example.com:443", 443).unwrap());
/// let route = Route::direct(vec!["127.0.0.1:443".parse().unwrap()], Decision::allow());
/// let refused = Interceptor::<(), ()>::accepts(&NoInterception, &meta, &route).unwrap_err();
/// assert_eq!(refused.reason, Some(Reason::MitmRequired));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoInterception;

impl<C: Send + 'static, U: Send + 'static> Interceptor<C, U> for NoInterception {
    fn accepts(&self, _meta: &RequestMeta, _route: &Route) -> Result<(), Decision> {
        Err(Decision::deny(Reason::MitmRequired))
    }

    /// Never called, as it accepts nothing; a tunnel handed over anyway is closed.
    async fn intercept(&self, tunnel: Intercepted<C, U>) -> (u64, u64) {
        drop(tunnel);
        (0, 0)
    }
}
