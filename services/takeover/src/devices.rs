//! The kernel side of holding and releasing one interface's shared
//! address: netlink requests (never a shell-out to `ip`), the virtual MAC
//! macvlan and its ARP parameters. Each function is one interface's part;
//! the driver runs them for all interfaces at once.

use std::net::Ipv4Addr;

use duet_config::Cidr;
use duet_net::netlink::{Netlink, NetlinkError};

use crate::error::KernelError;
use crate::plan::{Seen, SeenVmac};
use crate::sysctls;

/// The virtual MAC device of an interface: its name and MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VmacSpec {
    pub device: String,
    pub mac: [u8; 6],
}

impl VmacSpec {
    pub(crate) fn new(parent: &str, vhid: u8) -> Self {
        Self { device: duet_config::vmac_device(parent, vhid), mac: duet_wire::arp::virtual_mac(vhid) }
    }
}

/// Creates the virtual MAC device of `parent` (up, with the virtual MAC),
/// or takes over one that exists with the right MAC, and sets its ARP
/// parameters. A device of that name that is not a macvlan is left alone
/// and reported: it is not ours to delete.
pub(crate) async fn create_vmac(nl: &Netlink, parent: &str, v: &VmacSpec) -> Result<(), KernelError> {
    match nl.create_macvlan(parent, &v.device, v.mac).await {
        Ok(()) => {}
        Err(NetlinkError::AlreadyExists { .. }) => {
            let l = nl.link(&v.device).await?;
            if l.kind.as_deref() != Some("macvlan") {
                return Err(KernelError::NotMacvlan { device: v.device.clone(), parent: Some(parent.to_owned()) });
            }
            if l.mac != Some(v.mac) {
                nl.delete_link(&v.device).await?;
                nl.create_macvlan(parent, &v.device, v.mac).await?;
            } else if !l.admin_up {
                nl.set_up(&v.device, true).await?;
            }
        }
        Err(e) => return Err(e.into()),
    }
    for (param, value) in sysctls::VMAC_DEVICE {
        sysctls::set_device(&v.device, param, value)?;
    }
    Ok(())
}

/// Holds `shared` on the virtual MAC device of `parent`, creating the
/// device first. Returns the device's index, for the ARP socket.
pub(crate) async fn hold_vmac(nl: &Netlink, parent: &str, v: &VmacSpec, shared: Cidr) -> Result<u32, KernelError> {
    create_vmac(nl, parent, v).await?;
    // The index lookup and the address go to the kernel together.
    let (link, added) = futures::join!(nl.link(&v.device), nl.add_address(&v.device, shared.addr, shared.prefix));
    added?;
    Ok(link?.index)
}

/// Holds `shared` on `ifname` itself. With the interface's index known
/// (the usual case) this is one netlink request.
pub(crate) async fn hold_plain(
    nl: &Netlink,
    ifname: &str,
    index: Option<u32>,
    shared: Cidr,
) -> Result<(), NetlinkError> {
    let r = match index {
        Some(i) => nl.add_address_at(ifname, i, shared.addr, shared.prefix).await,
        None => nl.add_address(ifname, shared.addr, shared.prefix).await,
    };
    match r {
        Ok(_) => Ok(()),
        // The interface was recreated under the same name: look it up.
        Err(NetlinkError::NotFound { .. }) if index.is_some() => {
            nl.add_address(ifname, shared.addr, shared.prefix).await.map(drop)
        }
        Err(e) => Err(e),
    }
}

/// Gives `shared` up on `ifname`, and deletes `vmac_device` (with the
/// address on it) when given. Returns what was removed ("198.18.0.10/24
/// on eth0"), and the first error.
pub(crate) async fn release(
    nl: &Netlink,
    ifname: &str,
    shared: Cidr,
    vmac_device: Option<&str>,
) -> (Vec<String>, Option<String>) {
    let from_device = async {
        match vmac_device {
            Some(dev) => nl.delete_link(dev).await.map(|gone| gone.then(|| format!("{shared} on {dev}"))),
            None => Ok(None),
        }
    };
    let from_interface = async {
        match nl.del_address(ifname, shared.addr, shared.prefix).await {
            Ok(gone) => Ok(gone.then(|| format!("{shared} on {ifname}"))),
            // Nothing can be held on an interface that is gone.
            Err(NetlinkError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let (a, b) = futures::join!(from_device, from_interface);
    let mut removed = Vec::new();
    let mut error = None;
    for r in [a, b] {
        match r {
            Ok(Some(what)) => removed.push(what),
            Ok(None) => {}
            Err(e) => {
                error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (removed, error)
}

/// What the kernel shows for `ifname` and its virtual MAC device.
pub(crate) async fn observe(nl: &Netlink, ifname: &str, vmac_device: Option<&str>) -> Result<Seen, NetlinkError> {
    let parent_addrs = nl.addresses(ifname).await?;
    let vmac = match vmac_device {
        None => None,
        Some(dev) => match nl.link(dev).await {
            Ok(l) => {
                let addrs: Vec<(Ipv4Addr, u8)> = match nl.addresses(dev).await {
                    Ok(a) => a,
                    // Deleted between the two requests.
                    Err(NetlinkError::NotFound { .. }) => Vec::new(),
                    Err(e) => return Err(e),
                };
                Some(SeenVmac {
                    is_macvlan: l.kind.as_deref() == Some("macvlan"),
                    mac: l.mac,
                    admin_up: l.admin_up,
                    index: l.index,
                    addrs,
                })
            }
            Err(NetlinkError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        },
    };
    Ok(Seen { parent_addrs, vmac })
}
