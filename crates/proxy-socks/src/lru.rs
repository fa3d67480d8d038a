//! A small least-recently-used map for the UDP relay's verdicts.
//!
//! Why not a crate: the relay needs only get-and-touch, insert-and-evict (handing the evicted
//! entry back, so its counts can be reported) and draining at the end, for a map of 1,024
//! entries. A hash map plus an ordered index of last-use stamps does that in safe code, in
//! O(log n) per operation, without a new dependency.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A map that keeps at most `capacity` entries, evicting the least recently used one.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    entries: HashMap<K, (V, u64)>,
    /// Each entry's last-use stamp, oldest first.
    order: BTreeMap<u64, K>,
    next: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// An empty map holding at most `capacity` (at least one) entries.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            capacity: capacity.max(1),
        }
    }

    /// The value for `key`, marked as just used.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let (value, stamp) = self.entries.get_mut(key)?;
        if *stamp + 1 != self.next {
            if let Some(k) = self.order.remove(stamp) {
                self.order.insert(self.next, k);
            }
            *stamp = self.next;
            self.next += 1;
        }
        Some(value)
    }

    /// The value for `key`, without marking it as used.
    pub(crate) fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(v, _)| v)
    }

    /// Inserts `key` as the most recently used entry (replacing its value if present); returns
    /// the entry evicted to make room, if any.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some((v, stamp)) = self.entries.get_mut(&key) {
            *v = value;
            if let Some(k) = self.order.remove(stamp) {
                self.order.insert(self.next, k);
            }
            *stamp = self.next;
            self.next += 1;
            return None;
        }
        let evicted = if self.entries.len() >= self.capacity {
            self.order
                .pop_first()
                .and_then(|(_, k)| self.entries.remove_entry(&k))
                .map(|(k, (v, _))| (k, v))
        } else {
            None
        };
        self.order.insert(self.next, key.clone());
        self.entries.insert(key, (value, self.next));
        self.next += 1;
        evicted
    }

    /// The entries, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, (v, _))| (k, v))
    }

    /// How many entries are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn evicts_the_least_recently_used_and_hands_it_back() {
        let mut lru = Lru::new(3);
        assert_eq!(lru.insert("a", 1), None);
        assert_eq!(lru.insert("b", 2), None);
        assert_eq!(lru.insert("c", 3), None);
        // Using "a" makes "b" the oldest.
        assert_eq!(lru.get_mut(&"a").copied(), Some(1));
        assert_eq!(lru.insert("d", 4), Some(("b", 2)));
        assert_eq!(lru.get_mut(&"b"), None);
        // Peeking does not count as a use.
        assert_eq!(lru.peek_mut(&"c").copied(), Some(3));
        assert_eq!(lru.insert("e", 5), Some(("c", 3)));
        // Replacing a value keeps one entry and evicts nothing.
        assert_eq!(lru.insert("a", 10), None);
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.insert("f", 6), Some(("d", 4)));
        let mut all: Vec<_> = lru.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable();
        assert_eq!(all, [("a", 10), ("e", 5), ("f", 6)]);
    }

    #[test]
    fn stays_bounded_under_churn() {
        let mut lru = Lru::new(1024);
        for i in 0..100_000u32 {
            lru.insert(i, i);
            if i % 3 == 0 {
                let _ = lru.get_mut(&(i / 2));
            }
        }
        assert_eq!(lru.len(), 1024);
        assert_eq!(lru.order.len(), 1024);
        assert!(lru.get_mut(&99_999).is_some());
    }
}
