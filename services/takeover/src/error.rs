//! Why a piece of the takeover's kernel work on one interface failed: the
//! netlink requests, the virtual MAC device, its kernel parameters and the
//! gratuitous ARP sockets. The text is what the reports, the status and
//! the log show.

use std::io;
use std::path::PathBuf;

use duet_net::garp::GarpError;
use duet_net::netlink::NetlinkError;
use duet_net::sysctl::SysctlError;

/// Why the kernel work on an interface failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KernelError {
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A kernel parameter could not be read or set.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// The values of the kernel parameters to restore could not be
    /// written down before changing them (see [`crate::sysctls`]).
    #[error("cannot record kernel parameters to restore in {}: {source}", .file.display())]
    Record {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An interface has the virtual MAC device's name and is not a macvlan:
    /// it is not ours to delete. `parent` is the interface whose virtual
    /// MAC needs the name, when creating.
    #[error(
        "{device}: an interface of that name exists and is not a macvlan; rename or remove it{}",
        parent.as_ref().map(|p| format!(", duet needs the name for the virtual MAC of {p}")).unwrap_or_default()
    )]
    NotMacvlan { device: String, parent: Option<String> },
    /// A repair of the virtual MAC device was asked without one configured.
    #[error("no virtual MAC configured")]
    NoVmac,
    /// The gratuitous ARP socket on a device could not be opened.
    #[error(transparent)]
    Garp(#[from] GarpError),
}
