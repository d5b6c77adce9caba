//! Why a piece of the takeover's kernel work on one interface failed: the
//! netlink requests, the virtual MAC device, its kernel parameters and the
//! gratuitous ARP sockets. The text is what the reports, the status and
//! the log show.

use duet_net::garp::GarpError;
use duet_net::netlink::NetlinkError;
use duet_net::sysctl::{SysctlError, SysctlStoreError};

/// Why the kernel work on an interface failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KernelError {
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A kernel parameter could not be read or set.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// A kernel parameter could not be set, or the value to restore could
    /// not be written down before changing it (see [`crate::sysctls`]).
    #[error(transparent)]
    SysctlStore(#[from] SysctlStoreError),
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
