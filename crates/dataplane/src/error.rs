//! Why the kernel side of the data plane failed.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use duet_net::sysctl::SysctlError;

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
    #[error("cannot read the output of `nft {command}`: {detail}")]
    Output { command: String, detail: String },
    /// A kernel parameter could not be read or set.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
}
