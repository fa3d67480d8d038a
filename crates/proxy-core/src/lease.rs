//! Leases: what a front-end holds while an admitted connection stays open, so that a narrower
//! policy can close it (docs/audit.md: an audit event with `revoked: true`).
//!
//! The gate hands out a [`Lease`] for a connection that outlives its admission (a tunnel, a
//! kept-alive upstream connection, a UDP association's cached verdict) and keeps a [`Revoker`]
//! for it. When the policy changes, the gate re-judges what it holds and revokes what the new
//! policy refuses; the front-end waits on [`Lease::revoked`] beside its I/O and closes the
//! connection when it completes. Dropping the last clone of a lease tells its [`LeaseHolder`],
//! so the gate forgets connections as they close.
//!
//! This is runtime-agnostic: the future is woken through `std::task::Waker`.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

/// Told when a lease is dropped by every holder (the connection closed), to forget it.
pub trait LeaseHolder: Send + Sync {
    /// The lease `id` is gone.
    fn release(&self, id: u64);
}

/// A lease's state, shared by its clones, its futures and (weakly) its revoker; `data` is the
/// holder's record of what the lease is for, kept in the same allocation.
struct Shared<T: ?Sized> {
    id: u64,
    revoked: AtomicBool,
    wakers: Mutex<Wakers>,
    holder: Weak<dyn LeaseHolder>,
    data: T,
}

/// A lease's state with its data's type erased.
type Erased = Shared<dyn Any + Send + Sync>;

/// Who waits: almost always one task, kept without an allocation.
#[derive(Default)]
enum Wakers {
    #[default]
    None,
    One(Waker),
    Many(Vec<Waker>),
}

impl Wakers {
    fn add(&mut self, waker: &Waker) {
        match self {
            Wakers::None => *self = Wakers::One(waker.clone()),
            Wakers::One(w) if w.will_wake(waker) => {}
            Wakers::One(w) => {
                let first = w.clone();
                *self = Wakers::Many(vec![first, waker.clone()]);
            }
            Wakers::Many(all) => {
                if !all.iter().any(|w| w.will_wake(waker)) {
                    all.push(waker.clone());
                }
            }
        }
    }

    fn wake(self) {
        match self {
            Wakers::None => {}
            Wakers::One(w) => w.wake(),
            Wakers::Many(all) => all.into_iter().for_each(Waker::wake),
        }
    }
}

impl<T: ?Sized> Drop for Shared<T> {
    fn drop(&mut self) {
        if let Some(h) = self.holder.upgrade() {
            h.release(self.id);
        }
    }
}

/// What a front-end holds for an open connection: [`Lease::revoked`] completes when the gate
/// revokes it. A lease from [`Lease::none`] is never revoked.
///
/// ```
/// use proxy_core::Lease;
/// let lease = Lease::none();
/// assert!(!lease.is_revoked());
/// ```
#[derive(Clone, Default)]
pub struct Lease(Option<Arc<Erased>>);

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.0.as_ref().map(|s| s.id))
            .field("revoked", &self.is_revoked())
            .finish()
    }
}

/// The gate's side of a [`Lease`]: it revokes the lease, if the lease is still held.
#[derive(Clone)]
pub struct Revoker(Weak<Erased>);

impl fmt::Debug for Revoker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revoker").finish_non_exhaustive()
    }
}

impl Lease {
    /// A lease nothing can revoke.
    pub fn none() -> Self {
        Self(None)
    }

    /// A new lease `id`, and its revoker; `holder` is told when the last clone of the lease is
    /// dropped.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex, Weak};
    /// use proxy_core::{Lease, LeaseHolder};
    /// #[derive(Default)]
    /// struct Released(Mutex<Vec<u64>>);
    /// impl LeaseHolder for Released {
    ///     fn release(&self, id: u64) { self.0.lock().unwrap().push(id); }
    /// }
    /// let holder = Arc::new(Released::default());
    /// let weak: Weak<dyn LeaseHolder> = Arc::downgrade(&(holder.clone() as Arc<dyn LeaseHolder>));
    /// let (lease, revoker) = Lease::new(7, weak);
    /// assert!(revoker.revoke());
    /// assert!(lease.is_revoked());
    /// drop(lease);
    /// assert_eq!(*holder.0.lock().unwrap(), vec![7]);
    /// assert!(!revoker.revoke(), "nothing left to revoke");
    /// ```
    pub fn new(id: u64, holder: Weak<dyn LeaseHolder>) -> (Self, Revoker) {
        Self::with_data(id, holder, ())
    }

    /// Like [`Lease::new`], keeping `data` (what the holder needs to judge the lease again)
    /// in the lease's own allocation; [`Revoker::upgrade`] gives it back.
    pub fn with_data<T: Any + Send + Sync>(
        id: u64,
        holder: Weak<dyn LeaseHolder>,
        data: T,
    ) -> (Self, Revoker) {
        let shared: Arc<Erased> = Arc::new(Shared {
            id,
            revoked: AtomicBool::new(false),
            wakers: Mutex::new(Wakers::None),
            holder,
            data,
        });
        let revoker = Revoker(Arc::downgrade(&shared));
        (Self(Some(shared)), revoker)
    }

    /// Whether the lease was revoked.
    pub fn is_revoked(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|s| s.revoked.load(Ordering::Acquire))
    }

    /// The lease as its revoker sees it (its data, its revocation); `None` for
    /// [`Lease::none`].
    pub fn held(&self) -> Option<HeldLease> {
        self.0.clone().map(HeldLease)
    }

    /// Completes when the lease is revoked (never, for [`Lease::none`]).
    pub fn revoked(&self) -> Revoked {
        Revoked(self.0.clone())
    }
}

impl Revoker {
    /// Revokes the lease and wakes whoever waits on it; false when the lease is gone already
    /// or was revoked before.
    pub fn revoke(&self) -> bool {
        self.upgrade().is_some_and(|held| held.revoke())
    }

    /// The lease, while a connection still holds it. Dropping the returned value may be what
    /// releases the lease (when the connection let go meanwhile): do not drop it while holding
    /// a lock that [`LeaseHolder::release`] takes.
    pub fn upgrade(&self) -> Option<HeldLease> {
        self.0.upgrade().map(HeldLease)
    }

    /// Whether the lease is still held by a connection.
    pub fn is_held(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// A lease seen from its revoker while a connection holds it: its data, and the revocation.
pub struct HeldLease(Arc<Erased>);

impl fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldLease")
            .field("id", &self.0.id)
            .finish_non_exhaustive()
    }
}

impl HeldLease {
    /// The lease's id.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The data the lease was made with, if it is a `T`.
    pub fn data<T: Any>(&self) -> Option<&T> {
        let data: &dyn Any = &self.0.data;
        data.downcast_ref()
    }

    /// Revokes the lease and wakes whoever waits on it; false when it was revoked before.
    pub fn revoke(&self) -> bool {
        if self.0.revoked.swap(true, Ordering::AcqRel) {
            return false;
        }
        let wakers = std::mem::take(
            &mut *self
                .0
                .wakers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        wakers.wake();
        true
    }
}

/// The future of [`Lease::revoked`].
#[must_use = "a future does nothing unless polled"]
pub struct Revoked(Option<Arc<Erased>>);

impl fmt::Debug for Revoked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revoked").finish_non_exhaustive()
    }
}

impl Future for Revoked {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(shared) = &self.0 else {
            return Poll::Pending;
        };
        if shared.revoked.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        shared
            .wakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .add(cx.waker());
        // Revoked between the first look and the registration: the waker may have been missed.
        if shared.revoked.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Nobody;
    impl LeaseHolder for Nobody {
        fn release(&self, _: u64) {}
    }

    #[test]
    fn revoking_wakes_the_waiter_once_and_completes_the_future() {
        let holder: Arc<dyn LeaseHolder> = Arc::new(Nobody);
        let (lease, revoker) = Lease::new(1, Arc::downgrade(&holder));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = lease.revoked();
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert!(revoker.is_held());
        assert!(revoker.revoke());
        assert!(!revoker.revoke());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
        drop((fut, lease));
        assert!(!revoker.is_held());
    }

    #[test]
    fn two_waiters_are_both_woken() {
        let holder: Arc<dyn LeaseHolder> = Arc::new(Nobody);
        let (lease, revoker) = Lease::new(2, Arc::downgrade(&holder));
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let (mut fa, mut fb) = (lease.revoked(), lease.clone().revoked());
        assert!(
            Pin::new(&mut fa)
                .poll(&mut Context::from_waker(&wa))
                .is_pending()
        );
        assert!(
            Pin::new(&mut fb)
                .poll(&mut Context::from_waker(&wb))
                .is_pending()
        );
        assert!(revoker.revoke());
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_none_lease_never_completes() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count);
        let mut cx = Context::from_waker(&waker);
        let mut fut = Lease::none().revoked();
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
    }
}
