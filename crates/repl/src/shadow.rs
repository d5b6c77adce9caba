//! The standby side: the replicated table, applied strictly in order.

use std::collections::HashMap;
use std::hash::Hash;

use foldhash::fast::RandomState;

use crate::outbox::{Batch, Op};

/// What applying a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied<K> {
    /// Applied; acknowledge `ack`. `removed` lists keys deleted by it.
    Ok { ack: u64, upserted: usize, removed: Vec<K> },
    /// Seen already (a resend): acknowledge `ack` again, nothing changed.
    Duplicate { ack: u64 },
    /// Numbers are missing before this batch: ask for a bulk resync.
    Gap { expected: u64, got: u64 },
}

/// An entry and when it expires (caller's clock, ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held<V> {
    pub value: V,
    pub expires_ms: u64,
}

/// The standby's copy of the active's table.
#[derive(Debug)]
pub struct Shadow<K, V> {
    entries: HashMap<K, Held<V>, RandomState>,
    last_seq: u64,
    /// Keys of one kind counted as they come and go (see [`Shadow::counting`]).
    counter: Option<fn(&K) -> bool>,
    counted: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Default for Shadow<K, V> {
    fn default() -> Self {
        Self { entries: HashMap::default(), last_seq: 0, counter: None, counted: 0 }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Shadow<K, V> {
    /// An empty table that keeps a count of the keys for which `kind`
    /// holds ([`Shadow::counted`]), so asking costs nothing per entry.
    pub fn counting(kind: fn(&K) -> bool) -> Self {
        Self { counter: Some(kind), ..Self::default() }
    }

    /// How many held keys are of the counted kind (0 without a counter).
    pub fn counted(&self) -> usize {
        self.counted
    }

    fn is_counted(&self, key: &K) -> bool {
        self.counter.is_some_and(|f| f(key))
    }

    fn insert(&mut self, key: K, held: Held<V>) {
        let counted = self.is_counted(&key);
        if self.entries.insert(key, held).is_none() && counted {
            self.counted += 1;
        }
    }

    fn remove(&mut self, key: &K) -> bool {
        let gone = self.entries.remove(key).is_some();
        if gone && self.is_counted(key) {
            self.counted -= 1;
        }
        gone
    }

    /// Applies `b` if it follows what was applied; entries already expired
    /// at `now_ms` are not kept.
    pub fn apply(&mut self, b: &Batch<K, V>, now_ms: u64) -> Applied<K> {
        if b.last <= self.last_seq {
            return Applied::Duplicate { ack: self.last_seq };
        }
        if b.first != self.last_seq + 1 {
            return Applied::Gap { expected: self.last_seq + 1, got: b.first };
        }
        let mut upserted = 0;
        let mut removed = Vec::new();
        for op in &b.ops {
            match op {
                Op::Upsert { key, value, expires_ms } => {
                    if *expires_ms > now_ms {
                        self.insert(key.clone(), Held { value: value.clone(), expires_ms: *expires_ms });
                        upserted += 1;
                    } else if self.remove(key) {
                        removed.push(key.clone());
                    }
                }
                Op::Delete { key } => {
                    if self.remove(key) {
                        removed.push(key.clone());
                    }
                }
            }
        }
        self.last_seq = b.last;
        Applied::Ok { ack: b.last, upserted, removed }
    }

    /// Replaces everything with a snapshot taken at sequence `seq`.
    pub fn load_snapshot(&mut self, entries: impl IntoIterator<Item = (K, V, u64)>, seq: u64, now_ms: u64) {
        self.entries = entries
            .into_iter()
            .filter(|(_, _, e)| *e > now_ms)
            .map(|(k, v, e)| (k, Held { value: v, expires_ms: e }))
            .collect();
        self.counted = match self.counter {
            Some(f) => self.entries.keys().filter(|k| f(k)).count(),
            None => 0,
        };
        self.last_seq = seq;
    }

    /// Removes and returns the entries expired at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<K> {
        let gone: Vec<K> =
            self.entries.iter().filter(|(_, h)| h.expires_ms <= now_ms).map(|(k, _)| k.clone()).collect();
        for k in &gone {
            self.remove(k);
        }
        gone
    }

    /// The entry for `key`, if held.
    pub fn get(&self, key: &K) -> Option<&Held<V>> {
        self.entries.get(key)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last sequence number applied.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Every entry (for installing on takeover).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Held<V>)> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(first: u64, last: u64, ops: Vec<Op<u32, u32>>) -> Batch<u32, u32> {
        Batch { first, last, ops }
    }

    #[test]
    fn in_order_duplicates_and_gaps() {
        let mut s = Shadow::default();
        let r = s.apply(&b(1, 2, vec![Op::Upsert { key: 1, value: 5, expires_ms: 100 }]), 0);
        assert_eq!(r, Applied::Ok { ack: 2, upserted: 1, removed: vec![] });
        assert_eq!(s.apply(&b(1, 2, vec![]), 0), Applied::Duplicate { ack: 2 });
        assert_eq!(s.apply(&b(5, 6, vec![]), 0), Applied::Gap { expected: 3, got: 5 });
        let r = s.apply(&b(3, 3, vec![Op::Delete { key: 1 }]), 0);
        assert_eq!(r, Applied::Ok { ack: 3, upserted: 0, removed: vec![1] });
    }

    #[test]
    fn the_counted_kind_follows_inserts_removals_snapshots_and_expiry() {
        let mut s: Shadow<u32, u32> = Shadow::counting(|k| k % 2 == 0);
        let up = |k, e| Op::Upsert { key: k, value: 0, expires_ms: e };
        s.apply(&b(1, 4, vec![up(2, 100), up(3, 100), up(4, 50), up(2, 100)]), 0);
        assert_eq!((s.len(), s.counted()), (3, 2), "a replaced key is counted once");
        s.apply(&b(5, 6, vec![Op::Delete { key: 2 }, Op::Delete { key: 8 }]), 0);
        assert_eq!((s.len(), s.counted()), (2, 1));
        assert_eq!(s.expire(60), vec![4]);
        assert_eq!((s.len(), s.counted()), (1, 0));
        s.load_snapshot(vec![(6, 0, 100), (7, 0, 100), (8, 0, 10)], 9, 20);
        assert_eq!((s.len(), s.counted()), (2, 1), "expired snapshot entries are neither kept nor counted");
    }

    #[test]
    fn expiry_on_both_sides() {
        let mut s = Shadow::default();
        s.apply(
            &b(
                1,
                2,
                vec![Op::Upsert { key: 1, value: 1, expires_ms: 100 }, Op::Upsert { key: 2, value: 2, expires_ms: 50 }],
            ),
            60,
        );
        assert_eq!(s.len(), 1, "an entry already expired on arrival is not kept");
        assert_eq!(s.expire(99), Vec::<u32>::new());
        assert_eq!(s.expire(100), vec![1]);
        assert!(s.is_empty());
    }
}
