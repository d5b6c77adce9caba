//! The replication log of duet's replicator (SPEC R1-R3), as pure logic.
//!
//! The active unit feeds every change of its tables (L4 connection
//! entries, L7 persistence entries) into an [`Outbox`]: changes are
//! numbered, coalesced per key (a flow updated ten times before the
//! standby acknowledges is sent once, with its latest state), batched in
//! order, resent when not acknowledged, and bounded: past `capacity`
//! pending keys the outbox says "too far behind" and the adapter falls back
//! to a bulk resync instead of growing without limit. The standby applies
//! batches to a [`Shadow`] strictly in order, acknowledges them, notices a
//! gap (and asks for a resync), and expires entries on its own clock.
//!
//! Nothing here touches the kernel or the network; keys and values are
//! opaque to it (the adapter chooses what they are), and time is passed in
//! as milliseconds.

pub mod outbox;
pub mod shadow;

pub use outbox::{Batch, Op, Outbox, OutboxFull};
pub use shadow::{Applied, Shadow};
