//! The failover benchmark: duet against keepalived (VRRPv2 and VRRPv3) and
//! ucarp in the same lab, in one run.
//!
//! A client namespace probes the shared address every millisecond over UDP
//! ([`crate::probe`]); each unit runs a responder that says which unit
//! answered. For every system, scenario ([`Scenario`]: crash, link down,
//! graceful stop) and repetition, a fresh pair starts, settles, the active
//! unit is faulted, and the run records the client's longest gap, the time
//! from the old active's last advert (seen by a tcpdump in the client) to
//! the new unit's first answer, answers from the old unit after the new one
//! answered (must be 0), gratuitous ARPs seen, and for duet the time from
//! role change to address added and to the first GARP on the wire.
//! [`idle`] measures what a settled, idle unit costs (CPU and PSS).
//!
//! It is a measurement harness, not a test oracle: only answers from two
//! units, a client left unserved, or a repetition that could not be
//! measured count as failures; slow figures are reported against the goals
//! and never fail a run. `duet-bench` is the command line; the latest table
//! and the command that made it are in `tests/src/bench/README.md`.
//!
//! [`replication`] is the replication benchmark (duet's replicator against
//! keepalived + conntrackd, [`conntrackd`]): connections surviving a crash
//! of the active, throughput and cost of replication, and the time from
//! role active to state usable.

pub mod capture;
pub mod conntrackd;
pub mod failover;
pub mod idle;
pub mod loss;
pub mod procfs;
pub mod replication;
pub mod report;
pub mod system;

pub use failover::{Bench, FailoverOptions, PROBE_PORT, RepResult, Scenario, run_failover};
pub use idle::{IdleCost, IdleOptions, run_idle};
pub use replication::{ReplSystem, ReplicationOptions, ReplicationReport, run_survival, run_throughput};
pub use report::{FailoverReport, Goal, Summary, goals, summarize};
pub use system::{DuetLaunch, DuetUnit, System, SystemKind, Unit};
