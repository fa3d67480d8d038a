//! A [`Gate`] for the front-ends' tests: it admits what it was told to, refuses the rest, and
//! records every request it was asked about.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use proxy_core::{
    Admission, Decision, Gate, InnerVerdict, Lease, LeaseHolder, Mode, Reason, RequestHead,
    RequestMeta, Revoker, Route, judge_inner,
};

/// Answers each request by its host (`server_address`: the canonical host, or `unix-socket`):
/// the admission it was given for that host, else the one for every other host, else a
/// refusal (`not_allowed`). Requests inside intercepted tunnels are judged by
/// [`proxy_core::judge_inner`] under the mode it was given (full by default). It records every
/// request, and each inner request with its decision.
///
/// ```
/// use proxy_core::{Admission, Gate, Protocol, Reason, RequestMeta, Target};
/// use proxy_test_support::StubGate;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let gate = StubGate::new();
/// gate.route("origin.test", "127.0.0.1:8080".parse().unwrap());
/// let meta = |host| RequestMeta::new(Protocol::Http, Target::parse_authority(host, 80).unwrap());
/// assert!(matches!(gate.admit(&meta("origin.test")).await, Admission::Allow(_)));
/// let Admission::Deny(d) = gate.admit(&meta("other.test")).await else { panic!() };
/// assert_eq!(d.reason, Some(Reason::NotAllowed));
/// assert_eq!(gate.seen().len(), 2);
/// # }
/// ```
#[derive(Debug, Default)]
pub struct StubGate {
    routes: Mutex<HashMap<String, Admission>>,
    others: Mutex<Option<Admission>>,
    mode: Mutex<Mode>,
    seen: Mutex<Vec<RequestMeta>>,
    inner: Mutex<Vec<(RequestMeta, Decision)>>,
    /// The leases [`Gate::hold`] gave, with their revokers, and the holder they refer to.
    leases: Mutex<Vec<(RequestMeta, Revoker)>>,
    holder: std::sync::OnceLock<Arc<NoHolder>>,
    /// The failures [`Gate::failed`] was told of.
    failures: Mutex<Vec<(RequestMeta, proxy_core::Failure)>>,
}

/// Holds nothing: the stub's leases are only revoked, never released to anyone.
#[derive(Debug)]
struct NoHolder;

impl LeaseHolder for NoHolder {
    fn release(&self, _id: u64) {}
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StubGate {
    /// A gate that refuses everything until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits `host`, routed directly to `to`.
    pub fn route(&self, host: &str, to: SocketAddr) {
        self.answer(
            host,
            Admission::Allow(Route::direct(vec![to], Decision::allow())),
        );
    }

    /// Admits `host` routed directly to `to`, to be intercepted.
    pub fn intercept(&self, host: &str, to: SocketAddr) {
        let mut route = Route::direct(vec![to], Decision::allow());
        route.intercept = true;
        self.answer(host, Admission::Allow(route));
    }

    /// Answers `a` for `host`.
    pub fn answer(&self, host: &str, a: Admission) {
        lock(&self.routes).insert(host.to_owned(), a);
    }

    /// Answers `a` for every host it was not told about.
    pub fn answer_others(&self, a: Admission) {
        *lock(&self.others) = Some(a);
    }

    /// Revokes every lease [`Gate::hold`] gave for a request `matching`; how many.
    pub fn revoke(&self, matching: impl Fn(&RequestMeta) -> bool) -> usize {
        lock(&self.leases)
            .iter()
            .filter(|(m, r)| matching(m) && r.revoke())
            .count()
    }

    /// The requests [`Gate::hold`] gave a lease, in order.
    pub fn held(&self) -> Vec<RequestMeta> {
        lock(&self.leases).iter().map(|(m, _)| m.clone()).collect()
    }

    /// Judges requests inside intercepted tunnels in `mode`.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.mode) = mode;
    }

    /// Every request [`Gate::admit`] was asked about, in order.
    pub fn seen(&self) -> Vec<RequestMeta> {
        lock(&self.seen).clone()
    }

    /// Every request inside an intercepted tunnel [`Gate::admit_inner`] judged, with its
    /// decision, in order.
    pub fn inner_seen(&self) -> Vec<(RequestMeta, Decision)> {
        lock(&self.inner).clone()
    }

    /// Every failure [`Gate::failed`] recorded, in order.
    pub fn failures(&self) -> Vec<(RequestMeta, proxy_core::Failure)> {
        lock(&self.failures).clone()
    }
}

impl Gate for StubGate {
    fn failed(&self, meta: &RequestMeta, _route: &Route, failure: &proxy_core::Failure) {
        lock(&self.failures).push((meta.clone(), failure.clone()));
    }

    /// A lease [`StubGate::revoke`] can revoke.
    fn hold(&self, meta: &RequestMeta, _route: &Route) -> Lease {
        let holder: Arc<dyn LeaseHolder> = self.holder.get_or_init(|| Arc::new(NoHolder)).clone();
        let mut leases = lock(&self.leases);
        let id = leases.len() as u64;
        let (lease, revoker) = Lease::new(id, Arc::downgrade(&holder));
        leases.push((meta.clone(), revoker));
        lease
    }

    async fn admit(&self, meta: &RequestMeta) -> Admission {
        lock(&self.seen).push(meta.clone());
        let host = meta.target.server_address();
        lock(&self.routes)
            .get(&host)
            .cloned()
            .or_else(|| lock(&self.others).clone())
            .map(|a| match (a, meta.credential_refusal()) {
                // As the real gate: a dummy sent where its grant is not bound is refused.
                (Admission::Allow(_), Some(refused)) => Admission::Deny(refused),
                (a, _) => a,
            })
            .unwrap_or_else(|| Admission::Deny(Decision::deny(Reason::NotAllowed)))
    }

    async fn admit_inner(
        &self,
        tunnel: &RequestMeta,
        route: &Route,
        inner: &RequestMeta,
        _head: &RequestHead<'_>,
    ) -> InnerVerdict {
        let mode = *lock(&self.mode);
        let decision = judge_inner(tunnel, route, inner, mode);
        lock(&self.inner).push((inner.clone(), decision.clone()));
        decision.into()
    }
}
