//! A bounded queue between the request path and a slow consumer (a file, an exporter): pushing
//! never blocks; when the queue is full the oldest event is dropped and counted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// A bounded, drop-oldest queue.
///
/// ```
/// use proxy_audit::DropOldest;
/// let q = DropOldest::new(2);
/// q.push(1);
/// q.push(2);
/// q.push(3);
/// assert_eq!(q.dropped(), 1);
/// assert_eq!(q.drain(10), vec![2, 3]);
/// ```
#[derive(Debug)]
pub struct DropOldest<T> {
    items: Mutex<Inner<T>>,
    ready: Condvar,
    capacity: usize,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Inner<T> {
    queue: VecDeque<T>,
    closed: bool,
    /// The consumer sleeps on the condvar: the next push wakes it (only that one does, so a
    /// busy producer does not pay a wake-up per item).
    waiting: bool,
    /// [`DropOldest::nudge`] asked the consumer to look up now, items or not.
    nudged: bool,
}

impl<T> DropOldest<T> {
    /// A queue holding at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(Inner {
                queue: VecDeque::new(),
                closed: false,
                waiting: false,
                nudged: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// Adds an item; when full, drops the oldest first. Never blocks on the consumer.
    pub fn push(&self, item: T) {
        let mut g = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        if g.queue.len() >= self.capacity {
            g.queue.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        g.queue.push_back(item);
        let wake = std::mem::take(&mut g.waiting);
        drop(g);
        if wake {
            self.ready.notify_one();
        }
    }

    /// How many items were dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Takes up to `max` items now, oldest first.
    pub fn drain(&self, max: usize) -> Vec<T> {
        let mut g = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let n = g.queue.len().min(max);
        g.queue.drain(..n).collect()
    }

    /// Waits up to `timeout` for items; once there are some but fewer than `max`, lets more
    /// gather for `linger` (so a busy queue is taken in batches); then moves up to `max` of
    /// them, oldest first, into `batch`. When `batch` is empty and can take them all, the
    /// queue's buffer and `batch` are swapped, so the producers wait for no copying: keep
    /// handing the same (emptied) `batch` back. Nothing taken after `close` with nothing left
    /// means the consumer should stop.
    ///
    /// ```
    /// use std::collections::VecDeque;
    /// use std::time::Duration;
    /// use proxy_audit::DropOldest;
    /// let q = DropOldest::new(8);
    /// q.push(1);
    /// q.push(2);
    /// let mut batch = VecDeque::new();
    /// q.wait_into(&mut batch, 10, Duration::ZERO, Duration::from_secs(1));
    /// assert_eq!(batch, [1, 2]);
    /// ```
    pub fn wait_into(
        &self,
        batch: &mut VecDeque<T>,
        max: usize,
        linger: Duration,
        timeout: Duration,
    ) {
        let mut g = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        if g.queue.is_empty() && !g.closed && !g.nudged {
            g.waiting = true;
            let (g2, _) = self
                .ready
                .wait_timeout_while(g, timeout, |i| i.queue.is_empty() && !i.closed && !i.nudged)
                .unwrap_or_else(PoisonError::into_inner);
            g = g2;
            g.waiting = false;
        }
        g.nudged = false;
        if !g.queue.is_empty() && g.queue.len() < max && !g.closed && !linger.is_zero() {
            drop(g);
            std::thread::sleep(linger);
            g = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        }
        if batch.is_empty() && g.queue.len() <= max {
            std::mem::swap(&mut g.queue, batch);
        } else {
            let n = g.queue.len().min(max);
            batch.extend(g.queue.drain(..n));
        }
    }

    /// Wakes the consumer now, even with nothing queued: its `wait_into` returns (with whatever
    /// is there), so it can act on something else it was asked to do.
    pub fn nudge(&self) {
        self.set_and_wake(|i| i.nudged = true);
    }

    /// Marks the queue closed and wakes the consumer (items already queued stay).
    pub fn close(&self) {
        self.set_and_wake(|i| i.closed = true);
    }

    fn set_and_wake(&self, set: impl FnOnce(&mut Inner<T>)) {
        set(&mut self.items.lock().unwrap_or_else(PoisonError::into_inner));
        self.ready.notify_all();
    }

    /// Whether `close` was called and nothing is left.
    pub fn finished(&self) -> bool {
        let g = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        g.closed && g.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nudge_wakes_a_waiting_consumer_with_nothing_queued() {
        let q = std::sync::Arc::new(DropOldest::<u32>::new(8));
        let (tx, rx) = std::sync::mpsc::channel();
        let consumer = q.clone();
        std::thread::spawn(move || {
            let mut batch = VecDeque::new();
            consumer.wait_into(&mut batch, 10, Duration::ZERO, Duration::from_secs(3600));
            let _ = tx.send(batch.len());
        });
        // Whether the nudge comes before or during the wait, the consumer returns.
        q.nudge();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(0));
        // Then items are taken as usual.
        q.push(7);
        let mut batch = VecDeque::new();
        q.wait_into(&mut batch, 10, Duration::ZERO, Duration::from_secs(3600));
        assert_eq!(batch, [7]);
    }

    #[test]
    fn a_batch_takes_at_most_max_oldest_first_and_keeps_what_it_held() {
        let q = DropOldest::new(100);
        for i in 0..10 {
            q.push(i);
        }
        let mut batch = VecDeque::new();
        q.wait_into(&mut batch, 4, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(batch, [0, 1, 2, 3]);
        // A batch not handed back empty is added to, not swapped away.
        q.wait_into(&mut batch, 3, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(batch, [0, 1, 2, 3, 4, 5, 6]);
        batch.clear();
        // The rest fits: the buffers are swapped, and the queue goes on with the empty one.
        q.wait_into(&mut batch, 10, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(batch, [7, 8, 9]);
        q.push(10);
        batch.clear();
        q.wait_into(&mut batch, 10, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(batch, [10]);
        // Closed and empty: nothing, at once.
        q.close();
        batch.clear();
        q.wait_into(&mut batch, 10, Duration::ZERO, Duration::from_secs(30));
        assert!(batch.is_empty() && q.finished());
    }
}
