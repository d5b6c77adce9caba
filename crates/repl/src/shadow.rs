//! The standby side: the replicated table, applied strictly in order.

use std::collections::HashMap;
use std::hash::Hash;

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
    entries: HashMap<K, Held<V>>,
    last_seq: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> Default for Shadow<K, V> {
    fn default() -> Self {
        Self { entries: HashMap::new(), last_seq: 0 }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Shadow<K, V> {
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
                        self.entries.insert(key.clone(), Held { value: value.clone(), expires_ms: *expires_ms });
                        upserted += 1;
                    } else if self.entries.remove(key).is_some() {
                        removed.push(key.clone());
                    }
                }
                Op::Delete { key } => {
                    if self.entries.remove(key).is_some() {
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
        self.last_seq = seq;
    }

    /// Removes and returns the entries expired at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<K> {
        let gone: Vec<K> =
            self.entries.iter().filter(|(_, h)| h.expires_ms <= now_ms).map(|(k, _)| k.clone()).collect();
        for k in &gone {
            self.entries.remove(k);
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
