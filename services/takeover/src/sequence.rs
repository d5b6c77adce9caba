//! The sequence rules of the election's role stream, apart from any I/O.
//!
//! Every message carries the election process's random `epoch` and a
//! sequence number one higher than the message before it in that epoch.
//! [`Sequence::accept`] says what a message means for the follower:
//!
//! | message                                   | verdict                 | apply it? |
//! |-------------------------------------------|-------------------------|-----------|
//! | first of a stream (a snapshot)            | [`Verdict::Snapshot`]   | yes: the truth now |
//! | another epoch (the election restarted)    | [`Verdict::NewEpoch`]   | yes |
//! | same epoch, `seq == last + 1`             | [`Verdict::InOrder`]    | yes |
//! | same epoch, `seq > last + 1` (a gap)      | [`Verdict::Gap`]        | yes: the newest is the truth |
//! | same epoch, `seq <= last`                 | [`Verdict::Duplicate`]  | no |
//!
//! A gap is never ignored: whatever was missed, the newest message carries
//! the role as it is now. The first message of a stream is applied even when
//! its number was seen before: after the fail-safe gave the addresses up
//! (T4), the snapshot of the returning stream must put them back.

/// What a message of the role stream means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The first message of a (re)connected stream, same epoch as before.
    Snapshot,
    /// The first message of another election process (or the first ever).
    NewEpoch { previous: Option<u64> },
    /// The next message.
    InOrder,
    /// Messages were missed; this one is the truth.
    Gap { missed: u64 },
    /// Seen already; ignore.
    Duplicate,
}

impl Verdict {
    /// Whether the message is to be applied.
    pub fn applies(self) -> bool {
        self != Self::Duplicate
    }
}

/// The position of the follower in the role stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequence {
    epoch: Option<u64>,
    last: u64,
}

impl Sequence {
    /// A follower that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Judges message `(epoch, seq)`; `first_of_stream` is true for the
    /// first message received on a newly opened stream.
    pub fn accept(&mut self, epoch: u64, seq: u64, first_of_stream: bool) -> Verdict {
        let verdict = match self.epoch {
            Some(e) if e != epoch => Verdict::NewEpoch { previous: Some(e) },
            None => Verdict::NewEpoch { previous: None },
            Some(_) if first_of_stream => Verdict::Snapshot,
            Some(_) if seq == self.last.wrapping_add(1) => Verdict::InOrder,
            Some(_) if seq > self.last => Verdict::Gap { missed: seq - self.last - 1 },
            Some(_) => Verdict::Duplicate,
        };
        if verdict.applies() {
            self.epoch = Some(epoch);
            self.last = seq;
        }
        verdict
    }

    /// The epoch and sequence number of the last message applied.
    pub fn position(&self) -> Option<(u64, u64)> {
        self.epoch.map(|e| (e, self.last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_followed_in_order() {
        let mut s = Sequence::new();
        assert_eq!(s.accept(7, 3, true), Verdict::NewEpoch { previous: None });
        assert_eq!(s.accept(7, 4, false), Verdict::InOrder);
        assert_eq!(s.accept(7, 5, false), Verdict::InOrder);
        assert_eq!(s.position(), Some((7, 5)));
    }

    #[test]
    fn a_gap_makes_the_newest_message_the_truth() {
        let mut s = Sequence::new();
        s.accept(7, 1, true);
        assert_eq!(s.accept(7, 5, false), Verdict::Gap { missed: 3 });
        assert!(Verdict::Gap { missed: 3 }.applies());
        assert_eq!(s.accept(7, 6, false), Verdict::InOrder);
    }

    #[test]
    fn duplicates_and_old_messages_are_ignored() {
        let mut s = Sequence::new();
        s.accept(7, 4, true);
        assert_eq!(s.accept(7, 4, false), Verdict::Duplicate);
        assert_eq!(s.accept(7, 2, false), Verdict::Duplicate);
        assert!(!Verdict::Duplicate.applies());
        assert_eq!(s.position(), Some((7, 4)));
    }

    #[test]
    fn a_new_epoch_restarts_the_count() {
        let mut s = Sequence::new();
        s.accept(7, 40, true);
        assert_eq!(s.accept(9, 0, false), Verdict::NewEpoch { previous: Some(7) });
        assert_eq!(s.accept(9, 1, false), Verdict::InOrder);
        // The old epoch's messages are not duplicates: another process.
        assert_eq!(s.accept(7, 41, false), Verdict::NewEpoch { previous: Some(9) });
    }

    #[test]
    fn the_first_message_of_a_reconnected_stream_is_always_applied() {
        let mut s = Sequence::new();
        s.accept(7, 4, true);
        // Same epoch, nothing changed meanwhile: still applied (after a
        // fail-safe release it puts the addresses back).
        assert_eq!(s.accept(7, 4, true), Verdict::Snapshot);
        assert_eq!(s.accept(7, 9, true), Verdict::Snapshot);
        assert_eq!(s.accept(7, 10, false), Verdict::InOrder);
    }
}
