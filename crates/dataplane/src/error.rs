//! Why the kernel side of the data plane failed.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use duet_net::sysctl::{SysctlError, SysctlStoreError};

/// Why the JSON listing of duet's table (`nft -j list table ip duet`)
/// cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// It is not JSON.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// It has no top-level `nftables` array.
    #[error("no \"nftables\" array")]
    NoItems,
    /// A named counter without its name.
    #[error("a counter without a name")]
    CounterName,
    /// A named counter without its packet count.
    #[error("a counter without packets")]
    CounterPackets,
    /// An element of a persistence set that is not an IPv4 address.
    #[error("set {set}: element {element} is not an IPv4 address")]
    Element { set: String, element: String },
}

/// Why a call that talks to the kernel (through `nft` or `/proc/sys`) failed.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The `nft` binary could not be started (not installed, not in `PATH`)
    /// or its pipes failed.
    #[error("cannot run `nft` (is nftables installed and in PATH?): {source}")]
    Spawn {
        #[source]
        source: io::Error,
    },
    /// `nft` did not finish in time and was killed. For a transaction the
    /// kernel either committed all of it or none; [`crate::apply`] does not
    /// know which.
    #[error("`nft {command}` did not finish within {after:?} and was killed")]
    Timeout { command: String, after: Duration },
    /// `nft` refused the command. For a transaction ([`crate::apply`],
    /// [`crate::install_persistence`], [`crate::remove`]) this means nothing
    /// changed: nft sends the whole input as one netlink batch and the kernel
    /// aborts all of it on the first error.
    #[error("`nft {command}` failed ({status}): {stderr}")]
    Nft { command: String, status: ExitStatus, stderr: String },
    /// `nft -j` printed something this crate cannot read.
    #[error("cannot read the output of `nft {command}`: {source}")]
    Output {
        command: String,
        #[source]
        source: ListingError,
    },
    /// A kernel parameter could not be read or set.
    #[error(transparent)]
    Sysctl(#[from] SysctlStoreError),
}

impl From<SysctlError> for DataplaneError {
    fn from(e: SysctlError) -> Self {
        Self::Sysctl(e.into())
    }
}
