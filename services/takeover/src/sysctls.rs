//! The kernel parameters the virtual MAC needs (T2), set while holding and
//! put back afterwards.
//!
//! With the shared address on a macvlan whose MAC is the virtual one,
//! neighbours must learn that address at the virtual MAC only:
//!
//! - on the parent interface, `arp_ignore = 1` (answer only for addresses
//!   of the interface the request came in on: otherwise the parent answers
//!   for the shared address with its own MAC, since Linux answers for any
//!   local address by default) and `arp_announce = 2` (ARP requests leaving
//!   the parent use the parent's own address as sender, never the shared
//!   one, which would teach neighbours the shared address at the parent's
//!   MAC);
//! - on the macvlan, `arp_ignore = 1` (it receives every broadcast of the
//!   segment and would otherwise answer for the parent's own address with
//!   the virtual MAC), `arp_announce = 2`, and `rp_filter = 2` (loose:
//!   packets to the shared address come in on the macvlan while the route
//!   back to their source may be the parent's, which strict reverse-path
//!   filtering would drop; the kernel applies the larger of `all` and the
//!   device's value, so 2 works whatever `all` is).
//!
//! The parent's previous values are restored on release. They are also
//! written to a small file in the state directory before the first change,
//! so a restarted service can still restore them after a crash. They are
//! kept (in memory and in the file) from one takeover to the next, so a
//! takeover writes the file only when the values to restore changed (an
//! operator set them while the unit stood by); a clean stop removes it.
//! The store is `duet_net::sysctl::SysctlStore`, shared with the data plane.

use std::path::PathBuf;

use duet_net::sysctl::{self, SysctlError, SysctlStore};

use crate::error::KernelError;

pub(crate) use duet_net::sysctl::{VMAC_DEVICE, VMAC_PARENT as PARENT, device_name as name};

/// Sets `param` of `ifname` to `value` unless it has it already.
pub(crate) fn set_device(ifname: &str, param: &str, value: &str) -> Result<(), SysctlError> {
    let n = name(ifname, param);
    let now = sysctl::read(&n)?;
    if now != value {
        sysctl::write(&n, value)?;
    }
    Ok(())
}

/// Parameters changed on parent interfaces, with the values to restore
/// (the one store of kernel parameters, recorded in a file of the state
/// directory).
#[derive(Debug)]
pub(crate) struct Saved(SysctlStore);

impl Saved {
    /// Loads what a previous run left to restore (after a crash).
    pub(crate) fn load(file: PathBuf) -> Self {
        let store = SysctlStore::persistent(file);
        if store.applied() {
            tracing::info!(
                "kernel parameters changed by an earlier run are still to be restored: {}",
                store.remembered().iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(", ")
            );
        }
        Self(store)
    }

    /// Whether duet's values may be in force, so a release must restore.
    pub(crate) fn applied(&self) -> bool {
        self.0.applied()
    }

    /// Sets the parent parameters of `ifname` (see [`PARENT`]), remembering
    /// the values they had. Returns the names of those that had to change.
    pub(crate) fn set_parent(&mut self, ifname: &str) -> Result<Vec<String>, KernelError> {
        let mut changed = Vec::new();
        for (param, value) in PARENT {
            let n = name(ifname, param);
            if self.0.set(&n, value)? {
                changed.push(format!("{}={value}", n.replace('/', ".")));
            }
        }
        Ok(changed)
    }

    /// Puts every remembered parameter back (they stay remembered for the
    /// next takeover). A failure is logged and tried again on the next
    /// call; a parameter of an interface that is gone is forgotten.
    pub(crate) fn restore(&mut self) {
        for e in self.0.restore() {
            crate::notice::sysctl_restore_failed(&e.to_string());
        }
    }

    /// Restores everything and forgets it (the service stops cleanly:
    /// nothing is left to restore later).
    pub(crate) fn finish(&mut self) {
        for e in self.0.finish() {
            crate::notice::sysctl_restore_failed(&e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_dotted_interface_names_whole() {
        assert_eq!(name("dv10.eth0", "arp_ignore"), "net/ipv4/conf/dv10.eth0/arp_ignore");
    }
}
