//! duet's benchmarks, each comparing duet with its open-source peers in
//! the same run, in network namespaces on one host (`duet-bench`, the
//! command line, needs root):
//!
//! - [`failover`]: duet against keepalived (VRRPv2 and VRRPv3) and ucarp.
//!   A client namespace probes the shared address every millisecond over
//!   UDP ([`probe`]); each unit runs a responder that says which unit
//!   answered. For every system, scenario ([`Scenario`]: crash, link down,
//!   graceful stop) and repetition, a fresh pair starts, settles, the
//!   active unit is faulted, and the run records the client's longest gap,
//!   the time from the old active's last advert (seen by a tcpdump in the
//!   client) to the new unit's first answer, answers from the old unit
//!   after the new one answered (must be 0), gratuitous ARPs seen, and for
//!   duet the time from role change to address added and to the first GARP
//!   on the wire.
//! - [`idle`]: what a settled, idle unit costs (CPU, wakeups, PSS, CPU per
//!   advert), duet as election + takeover or as the whole unit.
//! - [`loss`]: false failovers of duet's fast profile under advert loss.
//! - [`replication`]: duet's replicator against keepalived + conntrackd
//!   ([`conntrackd`]): connections surviving a crash of the active,
//!   throughput and cost of replication, and the time from role active to
//!   state usable.
//! - [`configsync`]: commit on the active to applied on the standby, and a
//!   full sync of a large image.
//! - [`conntrack`]: throughput of duet's ctnetlink layer alone.
//! - [`partition`]: the witness's figure (E14): how long the shared address
//!   is on both units while their adverts are dropped both ways, with and
//!   without the witness (the failover benchmark also runs duet with a
//!   witness: `duet-witness`, `duet-fast-witness`).
//! - [`tracked`]: issue 18's figure: a real HAProxy in each unit, the
//!   active's killed; how soon the client is served by the other unit,
//!   duet's `[[track]]` process check against keepalived's `vrrp_script`.
//! - [`chaos`]: issue 17's fault lab: a whole pair through a seeded
//!   schedule of faults (crashes, killed and frozen services, link flaps,
//!   partitions, advert loss, handovers racing configuration writes), with
//!   the pair's invariants checked over the whole schedule.
//! - [`fleet`]: issue 13's figure: pairs of whole units keeping their
//!   images in a real etcd; from a write through etcd to the standby's
//!   generation, and `duetctl fleet status`.
//!
//! It is a measurement harness, not a test oracle: only correctness
//! failures (two units answering, a client left unserved, a change that
//! never reached the standby) or runs that could not be measured count as
//! failures; slow figures are reported against the goals ([`report`]) and
//! never fail a run. The latest tables and the commands that made them are
//! in `tests/bench/README.md`. The lab itself and the pair's helpers come
//! from `duet-tests` and `duet-testkit`.

pub mod capture;
pub mod chaos;
pub mod configsync;
pub mod conntrack;
pub mod conntrackd;
pub mod failover;
pub mod fleet;
pub mod idle;
pub mod loss;
pub mod partition;
pub mod probe;
pub mod procfs;
pub mod replication;
pub mod report;
pub mod system;
pub mod tracked;

pub use failover::{Bench, FailoverOptions, PROBE_PORT, RepResult, Scenario, run_failover};
pub use idle::{IdleCost, IdleOptions, run_idle};
pub use replication::{ReplSystem, ReplicationOptions, ReplicationReport, run_survival, run_throughput};
pub use report::{FailoverReport, Goal, Summary, goals, summarize};
pub use system::{DuetLaunch, DuetUnit, System, SystemKind, Unit};
