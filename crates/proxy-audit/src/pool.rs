//! Recycled events for the queueing sinks.
//!
//! An event handed to the file and OTLP sinks is allocated on a worker and freed on a sink
//! thread, after both sinks are done with it. With glibc's allocator such cross-thread frees
//! go back into the worker's arena under its lock, so the workers and the sink threads
//! contend on every event. Instead, the sink that holds an event last returns it here, and the
//! next decision overwrites it in place (its strings keep their capacity): in steady state an
//! audited decision allocates nothing for the sinks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use proxy_core::AuditEvent;

/// The process's pool of spare events.
pub(crate) static EVENTS: EventPool = EventPool::new();

/// Spare events, each held by nobody else.
#[derive(Debug)]
pub(crate) struct EventPool {
    spare: Mutex<Vec<Arc<AuditEvent>>>,
}

/// At most this many spare events are kept (about 1 MiB with typical host names, 3 MiB at
/// worst); the rest are freed.
const MAX_SPARE: usize = 8192;

impl EventPool {
    pub(crate) const fn new() -> Self {
        Self {
            spare: Mutex::new(Vec::new()),
        }
    }

    /// A shared copy of `ev`, in a recycled allocation when there is one.
    pub(crate) fn filled(&self, ev: &AuditEvent) -> Arc<AuditEvent> {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(mut spare) = spare
            && let Some(slot) = Arc::get_mut(&mut spare)
        {
            slot.clone_from(ev);
            return spare;
        }
        Arc::new(ev.clone())
    }

    /// Takes back events a sink is done with, emptying `events`: those nobody else holds
    /// become spares (up to the limit); the others are only released. The pool's lock is held
    /// only to move the spares in.
    pub(crate) fn give_back(&self, events: &mut VecDeque<Arc<AuditEvent>>) {
        events.retain_mut(|ev| Arc::get_mut(ev).is_some());
        {
            let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
            let n = events.len().min(MAX_SPARE.saturating_sub(spare.len()));
            spare.extend(events.drain(..n));
        }
        // The rest is freed outside the lock.
        events.clear();
    }

    #[cfg(test)]
    fn spares(&self) -> usize {
        self.spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use proxy_core::{Decision, Mode, Protocol, Reason, RequestMeta, Target};

    use super::*;

    fn event(host: &str, method: &str) -> AuditEvent {
        let meta = RequestMeta::new(
            Protocol::Http,
            Target::parse_authority(&format!("{host}:80"), 80).unwrap(),
        )
        .with_method(method);
        AuditEvent::new(&meta, &Decision::deny(Reason::Denied), Mode::Full)
    }

    #[test]
    fn a_returned_event_is_reused_with_the_new_contents() {
        let pool = EventPool::new();
        let first = pool.filled(&event("a.example", "GET"));
        let ptr = Arc::as_ptr(&first);
        pool.give_back(&mut VecDeque::from([first]));
        assert_eq!(pool.spares(), 1);
        let second_src = event("b.example.org", "POST");
        let second = pool.filled(&second_src);
        assert_eq!(Arc::as_ptr(&second), ptr, "the spare allocation is reused");
        assert_eq!(*second, second_src);
        assert_eq!(pool.spares(), 0);
    }

    #[test]
    fn an_event_another_sink_still_holds_is_not_reused() {
        let pool = EventPool::new();
        let ev = pool.filled(&event("a.example", "GET"));
        let other = ev.clone();
        pool.give_back(&mut VecDeque::from([ev]));
        assert_eq!(pool.spares(), 0);
        // The other holder is last: now it becomes a spare, contents untouched until reused.
        pool.give_back(&mut VecDeque::from([other]));
        assert_eq!(pool.spares(), 1);
        let fresh = pool.filled(&event("c.example", "HEAD"));
        assert_eq!(fresh.server_address, "c.example");
        assert_eq!(fresh.method.as_deref(), Some("HEAD"));
    }
}
