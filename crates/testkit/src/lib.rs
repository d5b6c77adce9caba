//! Network-namespace test harness: hosts on a bridge, processes inside
//! namespaces, fault injection, teardown.
//!
//! A [`Lab`] is a small throw-away network built from Linux network
//! namespaces. Each host is a namespace with `lo` up; each layer-2 segment is
//! a bridge in one "switch" namespace per lab; [`Lab::attach`] wires a host to
//! a segment with a veth pair. Tests run commands in hosts ([`Lab::run`]),
//! spawn long-running daemons whose output goes to a per-lab log directory
//! ([`Lab::spawn`], [`Proc`]), open sockets inside a host from the test
//! process itself ([`in_netns`]) and inject faults: interface down, a host cut
//! off at the switch, random loss and arbitrary nftables rules on the bridge.
//! Every name the lab creates starts with a per-lab prefix (`dk<pid><n>-...`),
//! every external command and every wait is bounded by a timeout, and dropping
//! the lab (also while a panic unwinds) kills its processes and deletes its
//! namespaces. Leftovers of runs that were killed outright are swept by the
//! next [`Lab::new`].
//!
//! It is not a network emulator: there is no delay, rate limiting or
//! reordering (no netem), only loss and filtering through nftables on the
//! switch. It is not fast or quiet either: it shells out to `ip` and `nft`,
//! needs root, and is meant for end-to-end tests and benchmarks only, never
//! for production code. Test traffic should stay in 198.18.0.0/15, inside the
//! lab's namespaces.
//!
//! Beside the lab it makes throw-away certificates for the peer links'
//! mutual TLS ([`write_certs`]) and runs an etcd cluster in the lab for the
//! witness's tests ([`EtcdCluster`]), and a scripted election for the
//! services' in-process tests ([`ScriptedElection`], [`loopback_pair`]). Its errors are one [`Error`] enum;
//! tests may wrap them in `anyhow` as they like.

mod certs;
mod cmd;
mod error;
mod etcd;
mod lab;
mod netns;
mod process;
mod rng;
mod scripted;

use std::thread;
use std::time::{Duration, Instant};

pub use certs::write_certs;
pub use error::{Error, Result};
pub use etcd::EtcdCluster;
pub use lab::{HostId, Lab, RuleId, SegmentId};
pub use netns::{in_netns, kill_all_in, pids_in};
pub use process::Proc;
pub use rng::Rng;
pub use scripted::{LoopbackPair, ScriptedElection, eventually, grpc_health, loopback_pair};

/// Checks that the test can build a lab.
///
/// Returns `true` when running as root. Otherwise prints why `test` is being
/// skipped and returns `false`, so the caller can `return` early; but if the
/// `CI` environment variable is set, a missing privilege is a setup error and
/// this panics instead, so a CI run never passes by skipping everything.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root to create network namespaces, and CI is set so it may not be skipped");
    }
    eprintln!("skipping {test}: needs root to create network namespaces (set CI to make this a failure)");
    false
}

/// A test's set-up, made by `build` when the test can run (as root, see
/// [`require_root`]); `None` when `test` is skipped.
pub fn when_root<T, E>(
    test: &str,
    build: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<Option<T>, E> {
    if require_root(test) { build().map(Some) } else { Ok(None) }
}

/// Bounded polling.
///
/// Calls `f` at once and then every `every` until it returns `Some(v)`, and
/// returns `v`. Once `timeout` has passed (with `f` called at least once more
/// at the deadline) it gives up with an error naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout { what: what.to_owned(), timeout });
        }
        thread::sleep(every.min(deadline - now));
    }
}
