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
//! operator set them while the unit stood by); a clean stop removes it. No
//! fsync: kernel parameters do not survive a reboot, so neither need the
//! values to restore; a crash of the process is what the file is for.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use duet_net::sysctl::{self, SysctlError};

use crate::error::KernelError;

/// Parameters set on the parent interface while holding with the virtual MAC.
pub(crate) const PARENT: &[(&str, &str)] = &[("arp_ignore", "1"), ("arp_announce", "2")];

/// Parameters set on the macvlan itself (it is deleted on release, so they
/// need no restoring).
pub(crate) const VMAC_DEVICE: &[(&str, &str)] = &[("arp_ignore", "1"), ("arp_announce", "2"), ("rp_filter", "2")];

/// The name of parameter `param` of interface `ifname`, in the slash form
/// (dots in interface names stay literal, e.g. `dv10.eth0`).
pub(crate) fn name(ifname: &str, param: &str) -> String {
    format!("net/ipv4/conf/{ifname}/{param}")
}

/// Sets `param` of `ifname` to `value` unless it has it already.
pub(crate) fn set_device(ifname: &str, param: &str, value: &str) -> Result<(), SysctlError> {
    let n = name(ifname, param);
    let now = sysctl::read(&n)?;
    if now != value {
        sysctl::write(&n, value)?;
    }
    Ok(())
}

/// Parameters changed on parent interfaces, with the values to restore.
#[derive(Debug)]
pub(crate) struct Saved {
    file: PathBuf,
    original: BTreeMap<String, String>,
    /// duet's values may be in force (set and not restored since).
    applied: bool,
}

impl Saved {
    /// Loads what a previous run left to restore (after a crash).
    pub(crate) fn load(file: PathBuf) -> Self {
        let mut original = BTreeMap::new();
        if let Ok(text) = fs::read_to_string(&file) {
            for line in text.lines() {
                if let Some((n, v)) = line.split_once('=') {
                    original.insert(n.trim().to_owned(), v.trim().to_owned());
                }
            }
            if !original.is_empty() {
                tracing::info!(
                    "kernel parameters changed by an earlier run are still to be restored: {}",
                    original.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(", ")
                );
            }
        }
        // Left by a run that did not stop cleanly: its values may be in force.
        let applied = !original.is_empty();
        Self { file, original, applied }
    }

    /// Whether duet's values may be in force, so a release must restore.
    pub(crate) fn applied(&self) -> bool {
        self.applied
    }

    /// Sets the parent parameters of `ifname` (see [`PARENT`]), remembering
    /// the values they had. Returns the names of those that had to change.
    pub(crate) fn set_parent(&mut self, ifname: &str) -> Result<Vec<String>, KernelError> {
        let mut changed = Vec::new();
        self.applied = true;
        for (param, value) in PARENT {
            let n = name(ifname, param);
            let now = sysctl::read(&n)?;
            if now == *value {
                continue;
            }
            // A value other than duet's is the one to restore (recorded
            // before it is changed, so a crash cannot lose it).
            if self.original.get(&n) != Some(&now) {
                self.original.insert(n.clone(), now);
                self.persist()?;
            }
            sysctl::write(&n, value)?;
            changed.push(format!("{}={value}", n.replace('/', ".")));
        }
        Ok(changed)
    }

    /// Puts every remembered parameter back (they stay remembered for the
    /// next takeover). A failure is logged and tried again on the next
    /// call; a parameter of an interface that is gone is forgotten.
    pub(crate) fn restore(&mut self) {
        let mut failed = false;
        let mut gone = Vec::new();
        for (n, v) in &self.original {
            match sysctl::write(n, v) {
                Ok(_) => tracing::debug!("restored {n}={v}"),
                Err(SysctlError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    gone.push(n.clone());
                }
                Err(e) => {
                    crate::notice::sysctl_restore_failed(&e.to_string());
                    failed = true;
                }
            }
        }
        self.applied = failed;
        if !gone.is_empty() {
            self.original.retain(|n, _| !gone.contains(n));
            if let Err(e) = self.persist() {
                tracing::warn!("{e}");
            }
        }
    }

    /// Restores everything and forgets it (the service stops cleanly:
    /// nothing is left to restore later).
    pub(crate) fn finish(&mut self) {
        self.restore();
        if !self.applied {
            self.original.clear();
            if let Err(e) = self.persist() {
                tracing::warn!("{e}");
            }
        }
    }

    fn persist(&self) -> Result<(), KernelError> {
        let write = || -> std::io::Result<()> {
            if self.original.is_empty() {
                return match fs::remove_file(&self.file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
            }
            if let Some(dir) = self.file.parent() {
                fs::create_dir_all(dir)?;
            }
            let text: String = self.original.iter().map(|(n, v)| format!("{n}={v}\n")).collect();
            // Write and rename, so a crash leaves the old file or the new.
            let tmp = self.file.with_extension("tmp");
            fs::write(&tmp, text)?;
            fs::rename(&tmp, &self.file)
        };
        write().map_err(|source| KernelError::Record { file: self.file.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_dotted_interface_names_whole() {
        assert_eq!(name("dv10.eth0", "arp_ignore"), "net/ipv4/conf/dv10.eth0/arp_ignore");
    }

    #[test]
    fn saved_values_survive_a_restart_of_the_service() {
        let dir = std::env::temp_dir().join(format!("duet-takeover-sysctl-{}", std::process::id()));
        let file = dir.join("takeover-sysctl.saved");
        let mut s = Saved::load(file.clone());
        assert!(!s.applied());
        s.original.insert("net/ipv4/conf/eth9/arp_ignore".into(), "0".into());
        s.persist().unwrap();
        let mut again = Saved::load(file.clone());
        assert!(again.applied(), "values left by a crash must be restored");
        assert_eq!(again.original.get("net/ipv4/conf/eth9/arp_ignore").map(String::as_str), Some("0"));
        // Restoring a parameter of an interface that does not exist drops it.
        again.restore();
        assert!(!again.applied());
        assert!(again.original.is_empty());
        assert!(!file.exists());
        let _ = fs::remove_dir_all(dir);
    }
}
