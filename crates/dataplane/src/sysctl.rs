//! The kernel parameters a load balancer needs, set and put back.

use duet_net::sysctl::SysctlStore;

use crate::error::DataplaneError;

/// What [`set_sysctls`] sets, in order:
///
/// - `net.ipv4.ip_forward=1`: the unit routes between clients and servers.
/// - `net.netfilter.nf_conntrack_tcp_loose=0`: a TCP segment other than a
///   SYN without a conntrack entry is INVALID (and dropped by duet's
///   chains). With the default 1 conntrack "picks up" such a segment as a
///   new connection, so after a failover without replicated state a
///   mid-stream packet would be DNATed to a server chosen afresh, which
///   answers with a reset.
pub const SYSCTLS: [(&str, &str); 2] = [("net.ipv4.ip_forward", "1"), ("net.netfilter.nf_conntrack_tcp_loose", "0")];

/// The values [`set_sysctls`] replaced, to put back with
/// [`restore`](Self::restore) (the one store of kernel parameters, in
/// memory: the data plane keeps its values while the unit runs).
///
/// Not restored on drop: the `net.*` parameters belong to the network
/// namespace of the calling thread, and a drop may happen on another.
#[derive(Debug)]
#[must_use = "keep it to restore the old values at teardown"]
pub struct Sysctls(SysctlStore);

impl Sysctls {
    /// Each parameter changed and the value it had before.
    pub fn previous(&self) -> Vec<(String, String)> {
        self.0.remembered().iter().map(|(n, v)| (n.clone(), v.clone())).collect()
    }

    /// Puts the old values back (in the calling thread's namespace), last
    /// set first. Tries all and returns the first error.
    pub fn restore(mut self) -> Result<(), DataplaneError> {
        self.0.finish().into_iter().next().map_or(Ok(()), |e| Err(e.into()))
    }
}

/// Sets [`SYSCTLS`] in the calling thread's network namespace and returns
/// the old values.
///
/// `nf_conntrack_tcp_loose` exists only once the conntrack module is
/// loaded; [`crate::apply`] loads it (its rules use `ct`), so call this
/// after the first apply. On failure the parameters already set are put
/// back.
pub fn set_sysctls() -> Result<Sysctls, DataplaneError> {
    let mut store = SysctlStore::in_memory();
    for (name, value) in SYSCTLS {
        if let Err(e) = store.set(name, value) {
            let _ = store.finish();
            return Err(e.into());
        }
    }
    Ok(Sysctls(store))
}
