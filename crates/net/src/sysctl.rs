//! Reading and writing kernel parameters under `/proc/sys`.
//!
//! Used to set up macvlan VIPs (`arp_ignore`, `arp_announce`,
//! `accept_local` and the like) and to put the old values back. Names are
//! taken in either form `sysctl(8)` accepts: dotted,
//! `net.ipv4.conf.eth0.arp_ignore`, where a `/` stands for a dot inside a
//! component (`net.ipv4.conf.eth0/100.arp_ignore` for VLAN `eth0.100`), or
//! with slashes, `net/ipv4/conf/eth0.100/arp_ignore`, where dots are literal.
//! Whichever separator comes first decides.
//!
//! The `net.*` entries belong to the network namespace of the calling
//! *thread* (the kernel resolves them through the current task), so these
//! calls work from a thread that entered another namespace with `setns`.
//!
//! It is not `sysctl(8)`: no globbing, no `--system` files, no locking. A
//! [`write`] reads the old value and then writes, which is not atomic
//! against another writer.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where the kernel exposes its parameters.
const ROOT: &str = "/proc/sys";

/// Why a kernel parameter could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// Not a parameter name: an empty component, `.` or `..`, a leading
    /// slash, or a NUL.
    #[error("{name:?} is not a sysctl name")]
    InvalidName { name: String },
    /// Reading failed (NotFound: no such parameter, e.g. no such interface).
    #[error("cannot read sysctl {name} ({}): {source}", .path.display())]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing failed (EINVAL: the kernel refused the value).
    #[error("cannot set sysctl {name} to {value:?} ({}): {source}", .path.display())]
    Write {
        name: String,
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
}

/// Parameters the virtual MAC needs on the parent interface while the
/// unit holds with it (T2; why: the takeover's `sysctls` module). `duetctl
/// doctor` checks them too.
pub const VMAC_PARENT: &[(&str, &str)] = &[("arp_ignore", "1"), ("arp_announce", "2")];

/// Parameters the virtual MAC needs on the macvlan itself.
pub const VMAC_DEVICE: &[(&str, &str)] = &[("arp_ignore", "1"), ("arp_announce", "2"), ("rp_filter", "2")];

/// The name of parameter `param` of interface `ifname`, in the slash form
/// (dots in interface names stay literal, e.g. `dv10.eth0`).
pub fn device_name(ifname: &str, param: &str) -> String {
    format!("net/ipv4/conf/{ifname}/{param}")
}

/// The current value of parameter `name`, without surrounding white space.
pub fn read(name: &str) -> Result<String, SysctlError> {
    let path = path_of(name)?;
    read_at(name, &path)
}

/// Sets parameter `name` to `value` and returns the value it had before
/// (trimmed), so the caller can restore it.
pub fn write(name: &str, value: &str) -> Result<String, SysctlError> {
    let path = path_of(name)?;
    let previous = read_at(name, &path)?;
    // Already so: no write, which also works where /proc/sys is read-only
    // and the runtime set the value (a container's sysctls).
    if previous.split_whitespace().eq(value.split_whitespace()) {
        return Ok(previous);
    }
    let write_error =
        |source| SysctlError::Write { name: name.to_owned(), path: path.clone(), value: value.to_owned(), source };
    // One write(2) of the whole value: the kernel parses each write on its
    // own. No create or truncate: these files exist or nothing does.
    let mut file = OpenOptions::new().write(true).open(&path).map_err(write_error)?;
    file.write_all(value.as_bytes()).map_err(write_error)?;
    Ok(previous)
}

fn read_at(name: &str, path: &Path) -> Result<String, SysctlError> {
    fs::read_to_string(path).map(|value| value.trim().to_owned()).map_err(|source| SysctlError::Read {
        name: name.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// The file under [`ROOT`] for a name in either form (see the module doc),
/// checked so that it cannot point anywhere else.
fn path_of(name: &str) -> Result<PathBuf, SysctlError> {
    let invalid = || SysctlError::InvalidName { name: name.to_owned() };
    let slash_form = name.find(['.', '/']).is_some_and(|i| name.as_bytes()[i] == b'/');
    let relative: String = if slash_form {
        name.to_owned()
    } else {
        name.chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect()
    };
    let mut path = PathBuf::from(ROOT);
    for component in relative.split('/') {
        if component.is_empty() || component == "." || component == ".." || component.contains('\0') {
            return Err(invalid());
        }
        path.push(component);
    }
    Ok(path)
}

/// Why a [`SysctlStore`] could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SysctlStoreError {
    /// Reading or writing a parameter failed.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// The file of values to restore cannot be written.
    #[error("cannot record the kernel parameters to restore in {}: {source}", .file.display())]
    Record {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Kernel parameters duet set, with the values they had, to put back: the
/// one store every service uses for its parameters.
///
/// With a file, the value to restore is written there (crash-safe: fsync
/// and rename, see `duet_files`) *before* the parameter changes, so a
/// service that crashes can still restore it when it starts again; a clean
/// [`finish`](Self::finish) removes the file. Values stay remembered from
/// one [`restore`](Self::restore) to the next [`set`](Self::set), so a
/// record is written only when the value to restore changed (an operator
/// set it meanwhile).
#[derive(Debug)]
pub struct SysctlStore {
    file: Option<PathBuf>,
    original: BTreeMap<String, String>,
    /// duet's values may be in force (set and not restored since).
    applied: bool,
}

impl SysctlStore {
    /// A store kept in memory only.
    pub fn in_memory() -> Self {
        Self { file: None, original: BTreeMap::new(), applied: false }
    }

    /// A store recorded in `file`, with what a previous run left there to
    /// restore (after a crash: then [`applied`](Self::applied) is true).
    pub fn persistent(file: PathBuf) -> Self {
        let mut original = BTreeMap::new();
        if let Ok(text) = fs::read_to_string(&file) {
            for line in text.lines() {
                if let Some((n, v)) = line.split_once('=') {
                    original.insert(n.trim().to_owned(), v.trim().to_owned());
                }
            }
        }
        let applied = !original.is_empty();
        Self { file: Some(file), original, applied }
    }

    /// Whether duet's values may be in force, so a release must restore.
    pub fn applied(&self) -> bool {
        self.applied
    }

    /// The parameters remembered, with the values to restore.
    pub fn remembered(&self) -> &BTreeMap<String, String> {
        &self.original
    }

    /// Sets parameter `name` to `value`, remembering (and recording) the
    /// value it had first. Returns whether it had to change.
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool, SysctlStoreError> {
        self.applied = true;
        let now = read(name)?;
        if now.split_whitespace().eq(value.split_whitespace()) {
            return Ok(false);
        }
        // A value other than duet's is the one to restore, recorded before
        // it is changed so that a crash cannot lose it.
        if self.original.get(name) != Some(&now) {
            self.original.insert(name.to_owned(), now);
            self.record()?;
        }
        write(name, value)?;
        Ok(true)
    }

    /// Puts every remembered parameter back, the last set first (they stay
    /// remembered). A parameter that no longer exists (its interface is
    /// gone) is forgotten; the others that fail are returned, and
    /// [`applied`](Self::applied) stays true so the next call tries again.
    pub fn restore(&mut self) -> Vec<SysctlError> {
        let mut failed = Vec::new();
        let mut gone = Vec::new();
        for (n, v) in self.original.iter().rev() {
            match write(n, v) {
                Ok(_) => {}
                Err(SysctlError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    gone.push(n.clone())
                }
                Err(e) => failed.push(e),
            }
        }
        self.applied = !failed.is_empty();
        if !gone.is_empty() {
            self.original.retain(|n, _| !gone.contains(n));
            if let Err(e) = self.record() {
                tracing::warn!("{e}");
            }
        }
        failed
    }

    /// Restores everything and, when that worked, forgets it (a clean
    /// stop: nothing is left to restore later).
    pub fn finish(&mut self) -> Vec<SysctlError> {
        let failed = self.restore();
        if failed.is_empty() {
            self.original.clear();
            if let Err(e) = self.record() {
                tracing::warn!("{e}");
            }
        }
        failed
    }

    fn record(&self) -> Result<(), SysctlStoreError> {
        let Some(file) = &self.file else { return Ok(()) };
        let done = if self.original.is_empty() {
            match fs::remove_file(file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            let text: String = self.original.iter().map(|(n, v)| format!("{n}={v}\n")).collect();
            duet_files::write_atomic(file, text.as_bytes())
        };
        done.map_err(|source| SysctlStoreError::Record { file: file.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> String {
        path_of(name).unwrap().to_str().unwrap().to_owned()
    }

    #[test]
    fn both_forms_name_the_same_file() {
        assert_eq!(path("net.ipv4.conf.eth0.arp_ignore"), "/proc/sys/net/ipv4/conf/eth0/arp_ignore");
        assert_eq!(path("net/ipv4/conf/eth0/arp_ignore"), "/proc/sys/net/ipv4/conf/eth0/arp_ignore");
        assert_eq!(path("kernel"), "/proc/sys/kernel");
    }

    #[test]
    fn dotted_interface_names_work_in_both_forms() {
        assert_eq!(path("net.ipv4.conf.eth0/100.arp_ignore"), "/proc/sys/net/ipv4/conf/eth0.100/arp_ignore");
        assert_eq!(path("net/ipv4/conf/eth0.100/arp_ignore"), "/proc/sys/net/ipv4/conf/eth0.100/arp_ignore");
    }

    #[test]
    fn names_cannot_leave_proc_sys() {
        for bad in ["", ".", "..", "net..ipv4", "net.ipv4.", "/etc/passwd", "net/../../etc", "net/./ipv4", "a\0b"] {
            assert!(matches!(path_of(bad), Err(SysctlError::InvalidName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn values_to_restore_survive_a_restart_and_gone_interfaces_are_forgotten() {
        let dir = std::env::temp_dir().join(format!("duet-sysctl-store-{}", std::process::id()));
        let file = dir.join("saved");
        let mut s = SysctlStore::persistent(file.clone());
        assert!(!s.applied());
        s.original.insert("net/ipv4/conf/no-such-if9/arp_ignore".into(), "0".into());
        s.record().unwrap();
        let mut again = SysctlStore::persistent(file.clone());
        assert!(again.applied(), "values left by a crash must be restored");
        assert_eq!(again.remembered().get("net/ipv4/conf/no-such-if9/arp_ignore").map(String::as_str), Some("0"));
        assert!(again.restore().is_empty());
        assert!(!again.applied());
        assert!(again.remembered().is_empty());
        assert!(!file.exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_parameters_are_read_errors_naming_them() {
        let err = read("net.ipv4.conf.no-such-if0.arp_ignore").unwrap_err();
        assert!(matches!(&err, SysctlError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound));
        assert!(err.to_string().contains("no-such-if0"), "{err}");
    }
}
