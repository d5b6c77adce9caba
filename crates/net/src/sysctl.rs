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
    fn missing_parameters_are_read_errors_naming_them() {
        let err = read("net.ipv4.conf.no-such-if0.arp_ignore").unwrap_err();
        assert!(matches!(&err, SysctlError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound));
        assert!(err.to_string().contains("no-such-if0"), "{err}");
    }
}
