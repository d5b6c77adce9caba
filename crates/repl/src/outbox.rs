//! The active side: numbered, coalesced, batched, acknowledged changes.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use foldhash::fast::RandomState;

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<K, V> {
    /// The entry is now `value`, valid until `expires_ms` (caller's clock).
    Upsert { key: K, value: V, expires_ms: u64 },
    /// The entry is gone.
    Delete { key: K },
}

impl<K, V> Op<K, V> {
    /// The key the change is about.
    pub fn key(&self) -> &K {
        match self {
            Self::Upsert { key, .. } | Self::Delete { key } => key,
        }
    }
}

/// A run of consecutive changes, `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<K, V> {
    /// Sequence number of the first change.
    pub first: u64,
    /// Sequence number of the last change; the standby acknowledges it.
    pub last: u64,
    pub ops: Vec<Op<K, V>>,
}

/// The outbox holds more pending keys than allowed: resync instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxFull {
    pub pending: usize,
}

/// A pending change without its key (the key is the map's): keys are
/// stored once per map, not again inside the change.
#[derive(Debug, Clone)]
enum Pending<V> {
    Upsert { value: V, expires_ms: u64 },
    Delete,
}

impl<V: Clone> Pending<V> {
    fn to_op<K>(&self, key: K) -> Op<K, V> {
        match self {
            Self::Upsert { value, expires_ms } => Op::Upsert { key, value: value.clone(), expires_ms: *expires_ms },
            Self::Delete => Op::Delete { key },
        }
    }
}

/// Changes waiting for the standby.
#[derive(Debug)]
pub struct Outbox<K, V> {
    capacity: usize,
    next_seq: u64,
    acked: u64,
    /// Key -> its newest pending change and that change's number.
    by_key: HashMap<K, (u64, Pending<V>), RandomState>,
    /// Number -> key, for the pending changes, in order.
    by_seq: BTreeMap<u64, K>,
    /// The highest number handed out in a batch not yet acknowledged.
    sent_up_to: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> Outbox<K, V> {
    /// An outbox that keeps at most `capacity` pending keys; numbering
    /// starts after `last_seq` (0 for a fresh stream).
    pub fn new(capacity: usize, last_seq: u64) -> Self {
        Self {
            capacity,
            next_seq: last_seq + 1,
            acked: last_seq,
            by_key: HashMap::default(),
            by_seq: BTreeMap::new(),
            sent_up_to: last_seq,
        }
    }

    /// Records a change. An earlier pending change of the same key is
    /// replaced (the standby only needs the latest). Fails when the outbox
    /// is over capacity: the caller must resync the standby in bulk.
    pub fn push(&mut self, op: Op<K, V>) -> Result<u64, OutboxFull> {
        if !self.by_key.contains_key(op.key()) && self.by_key.len() >= self.capacity {
            return Err(OutboxFull { pending: self.by_key.len() });
        }
        let (key, pending) = match op {
            Op::Upsert { key, value, expires_ms } => (key, Pending::Upsert { value, expires_ms }),
            Op::Delete { key } => (key, Pending::Delete),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some((old, _)) = self.by_key.insert(key.clone(), (seq, pending)) {
            self.by_seq.remove(&old);
        }
        self.by_seq.insert(seq, key);
        Ok(seq)
    }

    /// The next batch of at most `max` changes not yet sent, in order.
    /// Numbering is dense from the standby's point of view: a batch covers
    /// every number from `first` to `last`, coalesced numbers included (the
    /// standby counts them as applied).
    pub fn next_batch(&mut self, max: usize) -> Option<Batch<K, V>> {
        let from = self.sent_up_to + 1;
        let mut ops = Vec::new();
        let mut last = self.sent_up_to;
        for (&seq, key) in self.by_seq.range(from..) {
            if ops.len() >= max {
                break;
            }
            if let Some((_, pending)) = self.by_key.get(key) {
                ops.push(pending.to_op(key.clone()));
            }
            last = seq;
        }
        if ops.is_empty() {
            return None;
        }
        let first = from;
        self.sent_up_to = last;
        Some(Batch { first, last, ops })
    }

    /// The standby has applied everything up to `seq`: those changes are
    /// dropped from the outbox.
    pub fn ack(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        // Cut the acknowledged front off in one go (no removal one by one).
        let rest = self.by_seq.split_off(&(seq + 1));
        let done = std::mem::replace(&mut self.by_seq, rest);
        for (s, k) in done {
            if self.by_key.get(&k).is_some_and(|(ks, _)| *ks == s) {
                self.by_key.remove(&k);
            }
        }
        self.acked = seq;
        self.sent_up_to = self.sent_up_to.max(seq);
    }

    /// Sends again everything not acknowledged (after a lost batch or a
    /// reconnect that kept the stream).
    pub fn rewind(&mut self) {
        self.sent_up_to = self.acked;
    }

    /// Forgets everything pending: the standby is about to be resynced in
    /// bulk from a snapshot taken after `seq` (the last number handed out).
    pub fn reset_after_snapshot(&mut self) -> u64 {
        self.by_key.clear();
        self.by_seq.clear();
        let seq = self.next_seq - 1;
        self.acked = seq;
        self.sent_up_to = seq;
        seq
    }

    /// Pending (unacknowledged) keys.
    pub fn pending(&self) -> usize {
        self.by_key.len()
    }

    /// The last number acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The last number handed out.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// How many numbers the standby is behind.
    pub fn lag(&self) -> u64 {
        self.last_seq() - self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(k: u32, v: u32) -> Op<u32, u32> {
        Op::Upsert { key: k, value: v, expires_ms: 1000 }
    }

    #[test]
    fn coalesces_batches_in_order_and_forgets_on_ack() {
        let mut o = Outbox::new(100, 0);
        o.push(up(1, 1)).unwrap();
        o.push(up(2, 1)).unwrap();
        o.push(up(1, 2)).unwrap(); // replaces seq 1
        let b = o.next_batch(10).unwrap();
        assert_eq!((b.first, b.last), (1, 3));
        assert_eq!(b.ops, vec![up(2, 1), up(1, 2)]);
        assert!(o.next_batch(10).is_none());
        o.ack(3);
        assert_eq!(o.pending(), 0);
        assert_eq!(o.lag(), 0);
    }

    #[test]
    fn unacknowledged_batches_are_sent_again_after_rewind() {
        let mut o = Outbox::new(100, 10);
        for k in 0..5 {
            o.push(up(k, 0)).unwrap();
        }
        let a = o.next_batch(2).unwrap();
        assert_eq!((a.first, a.last), (11, 12));
        let b = o.next_batch(2).unwrap();
        assert_eq!((b.first, b.last), (13, 14));
        o.ack(12);
        o.rewind();
        let again = o.next_batch(10).unwrap();
        assert_eq!((again.first, again.last), (13, 15));
    }

    #[test]
    fn capacity_bounds_memory() {
        let mut o = Outbox::new(3, 0);
        for k in 0..3 {
            o.push(up(k, 0)).unwrap();
        }
        // An update of a pending key is always fine...
        o.push(up(1, 9)).unwrap();
        // ...a new key is not.
        assert_eq!(o.push(up(7, 0)), Err(OutboxFull { pending: 3 }));
        let seq = o.reset_after_snapshot();
        assert_eq!(seq, 4);
        assert_eq!(o.pending(), 0);
        o.push(up(7, 0)).unwrap();
        assert_eq!(o.next_batch(10).unwrap().first, 5);
    }
}
