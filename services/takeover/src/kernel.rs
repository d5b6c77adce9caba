//! The kernel side of the takeover: what the driver does for the core's
//! actions on the interfaces (netlink, the virtual MAC devices and their
//! kernel parameters, the gratuitous ARP sockets), and what a netlink
//! event means for the core. Nothing here decides anything: the core says
//! what to hold, release, look at, repair and announce.

use std::sync::Arc;
use std::time::Instant;

use duet_config::Cidr;
use duet_net::garp::GarpSender;
use duet_net::netlink::{LinkInfo, NetEvent, Netlink, NetlinkError};
use duet_runtime::clock::Clock;

use crate::devices::{self, VmacSpec};
use crate::error::KernelError;
use crate::garp::{Announcer, Target};
use crate::machine::{Announce, Applied, Held, Released, Repaired};
use crate::plan::{Repair, Seen};
use crate::sysctls::Saved;

/// The virtual MAC device this service made on an interface.
#[derive(Debug)]
struct VmacDevice {
    name: String,
    vhid: u8,
    index: u32,
    sender: Arc<GarpSender>,
}

/// One interface with a shared address.
#[derive(Debug)]
struct Iface {
    name: String,
    shared: Cidr,
    /// The interface as last seen.
    link: Option<LinkInfo>,
    /// Socket for gratuitous ARPs from the interface itself (without VMAC).
    sender: Option<Arc<GarpSender>>,
    /// The virtual MAC device carrying the address (with VMAC).
    vmac: Option<VmacDevice>,
    /// The virtual MAC device's index as last observed.
    seen_vmac_index: Option<u32>,
}

impl Iface {
    /// Opens the ARP socket on the interface itself; why not, if it fails.
    fn open_sender(&mut self) -> Option<String> {
        self.sender = None;
        let l = self.link.as_ref()?;
        match GarpSender::open(&self.name, l.index) {
            Ok(s) => {
                self.sender = Some(Arc::new(s));
                None
            }
            Err(e) => Some(e.to_string()),
        }
    }
}

/// What a batch of netlink events means for the core.
#[derive(Debug, Default)]
pub(crate) struct Meaning {
    /// Something about the shared addresses or their devices changed.
    pub look_again: bool,
    /// Interfaces whose link came up.
    pub links_up: Vec<usize>,
    /// Interfaces that cannot be used now, and why.
    pub unusable: Vec<(usize, String)>,
}

/// The interfaces, as the kernel has them.
#[derive(Debug)]
pub(crate) struct Kernel {
    ifaces: Vec<Iface>,
    vmac: bool,
    nl: Arc<Netlink>,
    sysctls: Saved,
    announcer: Announcer,
}

impl Kernel {
    /// Looks the interfaces up and opens their ARP sockets. A missing
    /// interface is not fatal: it is returned (with why) to be reported
    /// and looked for again on every pass.
    pub(crate) async fn open(
        ifaces: &[(String, Cidr)],
        vmac: bool,
        nl: Arc<Netlink>,
        sysctls: Saved,
        announcer: Announcer,
    ) -> (Self, Vec<(usize, String)>) {
        let mut unusable = Vec::new();
        let mut list = Vec::new();
        for (k, (name, shared)) in ifaces.iter().enumerate() {
            let mut i = Iface {
                name: name.clone(),
                shared: *shared,
                link: None,
                sender: None,
                vmac: None,
                seen_vmac_index: None,
            };
            match nl.link(name).await {
                Ok(l) => {
                    i.link = Some(l);
                    if !vmac && let Some(e) = i.open_sender() {
                        unusable.push((k, e));
                    }
                }
                Err(e) => {
                    tracing::error!("{e}; its shared address {shared} cannot be held until it exists");
                    unusable.push((k, e.to_string()));
                }
            }
            list.push(i);
        }
        (Self { ifaces: list, vmac, nl, sysctls, announcer }, unusable)
    }

    /// The fast path ([`crate::machine::Action::HoldAll`]): the parents'
    /// kernel parameters (VMAC), every interface's netlink work at once,
    /// then the first gratuitous ARP of each interface held; the rest of
    /// the bursts run on timers. No sleep and no shell-out between the
    /// call and the first frame, only the netlink requests themselves.
    pub(crate) async fn hold_all(&mut self, vmac_vhid: Option<u8>, clock: &Clock) -> Held {
        let started = Instant::now();
        let mut sysctl_errors: Vec<Option<String>> = vec![None; self.ifaces.len()];
        if vmac_vhid.is_some() {
            // Before the address exists anywhere: the parent must never
            // answer for it with its own MAC.
            for (k, i) in self.ifaces.iter().enumerate() {
                if let Err(e) = self.sysctls.set_parent(&i.name) {
                    sysctl_errors[k] = Some(format!("{}: {e}", i.name));
                }
            }
        }
        let parameters_set = Instant::now();
        let nl = &*self.nl;
        let jobs = self.ifaces.iter().map(|i| {
            let (name, shared, index) = (i.name.clone(), i.shared, i.link.as_ref().map(|l| l.index));
            async move {
                match vmac_vhid {
                    Some(vhid) => {
                        let spec = VmacSpec::new(&name, vhid);
                        devices::hold_vmac(nl, &name, &spec, shared).await.map(|index| Some((spec.device, index)))
                    }
                    None => {
                        devices::hold_plain(nl, &name, index, shared).await.map(|()| None).map_err(KernelError::from)
                    }
                }
            }
        });
        let results = futures::future::join_all(jobs).await;
        let in_place = Instant::now();
        let mut applied = Vec::with_capacity(self.ifaces.len());
        for ((i, r), error) in self.ifaces.iter_mut().zip(results).zip(sysctl_errors) {
            let mut a = Applied { held: false, error };
            match r {
                Ok(None) => a.held = true,
                Ok(Some((name, index))) => {
                    a.held = true;
                    match GarpSender::open(&name, index) {
                        Ok(s) => {
                            let vhid = vmac_vhid.unwrap_or_default();
                            i.vmac = Some(VmacDevice { name, vhid, index, sender: Arc::new(s) });
                        }
                        Err(e) => {
                            a.error.get_or_insert(e.to_string());
                        }
                    }
                }
                Err(e) => a.error = Some(e.to_string()),
            }
            applied.push(a);
        }
        let held: Vec<usize> = applied.iter().enumerate().filter(|(_, a)| a.held).map(|(k, _)| k).collect();
        let targets = self.targets(&held);
        let first_garp = self.announcer.burst(&targets, true);
        Held {
            started: clock.time_of(started),
            parameters_set: clock.time_of(parameters_set),
            in_place: clock.time_of(in_place),
            first_garp: first_garp.map(|t| clock.time_of(t)),
            ifaces: applied,
        }
    }

    /// Gives every shared address up ([`crate::machine::Action::ReleaseAll`]):
    /// announcements stopped first (never announce an address being given
    /// up), every interface at once, the virtual MAC devices deleted, the
    /// kernel parameters put back.
    pub(crate) async fn release_all(&mut self, vmac_vhid: Option<u8>) -> Released {
        self.announcer.stop();
        let nl = &*self.nl;
        let jobs = self.ifaces.iter().map(|i| {
            let device = i
                .vmac
                .as_ref()
                .map(|v| v.name.clone())
                .or_else(|| vmac_vhid.map(|v| duet_config::vmac_device(&i.name, v)));
            let (name, shared) = (i.name.clone(), i.shared);
            async move { devices::release(nl, &name, shared, device.as_deref()).await }
        });
        let results = futures::future::join_all(jobs).await;
        let mut r = Released::default();
        for (i, (gone, error)) in self.ifaces.iter_mut().zip(results) {
            r.removed.extend(gone);
            r.errors.push(error);
            i.vmac = None;
        }
        self.restore_parameters();
        r
    }

    /// What the kernel shows for interface `k` ([`crate::machine::Action::Observe`]).
    pub(crate) async fn observe(&mut self, k: usize, vmac_vhid: Option<u8>) -> Result<Seen, NetlinkError> {
        let vmac = self.vmac;
        let i = &mut self.ifaces[k];
        if i.link.is_none() {
            let l = self.nl.link(&i.name).await?;
            i.link = Some(l);
            if !vmac {
                // A failure shows in the pass's answer (no target to announce).
                let _ = i.open_sender();
            }
        }
        let spec = vmac_vhid.map(|v| VmacSpec::new(&i.name, v));
        let seen = devices::observe(&self.nl, &i.name, spec.as_ref().map(|s| s.device.as_str())).await?;
        i.seen_vmac_index = seen.vmac.as_ref().map(|v| v.index);
        Ok(seen)
    }

    /// Makes `repairs` on interface `k` ([`crate::machine::Action::Repair`]).
    pub(crate) async fn repair(&mut self, k: usize, repairs: &[Repair], hold: bool, vmac_vhid: Option<u8>) -> Repaired {
        let (name, shared) = (self.ifaces[k].name.clone(), self.ifaces[k].shared);
        let spec = vmac_vhid.map(|v| VmacSpec::new(&name, v));
        let mut r = Repaired::default();
        for &repair in repairs {
            let outcome = self.execute(&name, shared, spec.as_ref(), repair).await;
            r.outcomes.push((repair, outcome));
        }
        let created = r
            .outcomes
            .iter()
            .any(|(x, o)| matches!(x, Repair::CreateVmac | Repair::ReplaceVmac) && matches!(o, Ok(true)));
        let repair_failed = r.outcomes.iter().any(|(_, o)| o.is_err());
        if hold && let (Some(s), Some(vhid)) = (&spec, vmac_vhid) {
            match self.sysctls.set_parent(&name) {
                Ok(changed) => r.parameters_set = changed,
                Err(e) => r.error = Some(format!("{name}: {e}")),
            }
            if !repair_failed
                && r.error.is_none()
                && let Err(e) = self.ensure_vmac_sender(k, s, vhid, created).await
            {
                r.error = Some(format!("{}: {e}", s.device));
            }
        }
        r
    }

    /// With VMAC, holding: the ARP socket must be bound to the device as it
    /// is now (a recreated device has a new index).
    async fn ensure_vmac_sender(
        &mut self,
        k: usize,
        spec: &VmacSpec,
        vhid: u8,
        recreated: bool,
    ) -> Result<(), KernelError> {
        let known = self.ifaces[k].vmac.as_ref().map(|v| v.index);
        if !recreated && known.is_some() && self.ifaces[k].seen_vmac_index == known {
            return Ok(());
        }
        let index = self.nl.link(&spec.device).await?.index;
        let sender = GarpSender::open(&spec.device, index)?;
        self.ifaces[k].vmac = Some(VmacDevice { name: spec.device.clone(), vhid, index, sender: Arc::new(sender) });
        Ok(())
    }

    /// Makes one repair; `Ok(true)` when the kernel confirms a change.
    async fn execute(&self, name: &str, shared: Cidr, spec: Option<&VmacSpec>, r: Repair) -> Result<bool, KernelError> {
        let nl = &*self.nl;
        let spec = || spec.ok_or(KernelError::NoVmac);
        Ok(match r {
            Repair::AddToInterface => nl.add_address(name, shared.addr, shared.prefix).await?,
            Repair::RemoveFromInterface { prefix } => nl.del_address(name, shared.addr, prefix).await?,
            Repair::CreateVmac => {
                devices::create_vmac(nl, name, spec()?).await?;
                true
            }
            Repair::ReplaceVmac => {
                let v = spec()?;
                let l = nl.link(&v.device).await?;
                if l.kind.as_deref() != Some("macvlan") {
                    return Err(KernelError::NotMacvlan { device: v.device.clone(), parent: None });
                }
                nl.delete_link(&v.device).await?;
                devices::create_vmac(nl, name, v).await?;
                true
            }
            Repair::SetVmacUp => {
                nl.set_up(&spec()?.device, true).await?;
                true
            }
            Repair::AddToVmac => nl.add_address(&spec()?.device, shared.addr, shared.prefix).await?,
            Repair::DeleteVmac => nl.delete_link(&spec()?.device).await?,
        })
    }

    /// Puts back the kernel parameters changed for the virtual MAC, if any
    /// may be in force.
    pub(crate) fn restore_parameters(&mut self) {
        if self.sysctls.applied() {
            self.sysctls.restore();
        }
    }

    /// The service stops cleanly: everything put back and forgotten.
    pub(crate) fn finish_parameters(&mut self) {
        self.sysctls.finish();
    }

    /// Gratuitous ARPs for the addresses of `ifaces`.
    pub(crate) fn announce(&mut self, ifaces: &[usize], how: Announce) {
        let targets = self.targets(ifaces);
        match how {
            Announce::Burst { supersede } => {
                self.announcer.burst(&targets, supersede);
            }
            Announce::Once => {
                tracing::debug!(frames = targets.len(), "gratuitous ARP refresh");
                self.announcer.once(&targets);
            }
        }
    }

    /// Where to announce the addresses of `ifaces`: the device carrying
    /// each and the MAC to announce it at.
    fn targets(&self, ifaces: &[usize]) -> Vec<Target> {
        ifaces
            .iter()
            .filter_map(|&k| {
                let i = self.ifaces.get(k)?;
                if self.vmac {
                    let v = i.vmac.as_ref()?;
                    Some(Target {
                        sender: Arc::clone(&v.sender),
                        mac: duet_wire::arp::virtual_mac(v.vhid),
                        ip: i.shared.addr,
                    })
                } else {
                    Some(Target {
                        sender: Arc::clone(i.sender.as_ref()?),
                        mac: i.link.as_ref()?.mac?,
                        ip: i.shared.addr,
                    })
                }
            })
            .collect()
    }

    /// Takes one netlink event into account; what it means for the core
    /// is added to `m`.
    pub(crate) fn on_event(&mut self, ev: NetEvent, m: &mut Meaning) {
        let ours = |addr| self.ifaces.iter().any(|i| i.shared.addr == addr);
        match ev {
            NetEvent::AddressAdded { addr, .. } | NetEvent::AddressRemoved { addr, .. } if ours(addr) => {
                m.look_again = true;
            }
            NetEvent::LinkRemoved { name, .. } => {
                if let Some(i) = self.ifaces.iter_mut().find(|i| i.name == name) {
                    tracing::error!("interface {name} is gone; its shared address cannot be held until it is back");
                    i.link = None;
                    i.sender = None;
                    m.look_again = true;
                } else if self.ifaces.iter().any(|i| i.vmac.as_ref().is_some_and(|v| v.name == name)) {
                    m.look_again = true;
                }
            }
            NetEvent::Link(info) => {
                let vmac = self.vmac;
                if let Some(k) = self.ifaces.iter().position(|i| i.name == info.name) {
                    let i = &mut self.ifaces[k];
                    let before = i.link.replace(info.clone());
                    let changed = before.as_ref().is_none_or(|b| b.index != info.index || b.mac != info.mac);
                    if changed {
                        if !vmac && let Some(e) = i.open_sender() {
                            m.unusable.push((k, e));
                        }
                        m.look_again = true;
                    }
                    if before.as_ref().is_some_and(|b| !b.up) && info.up {
                        m.links_up.push(k);
                    }
                } else if let Some(i) =
                    self.ifaces.iter().find(|i| i.vmac.as_ref().is_some_and(|v| v.name == info.name))
                {
                    let v = i.vmac.as_ref().map(|v| (v.index, duet_wire::arp::virtual_mac(v.vhid)));
                    if !info.admin_up || v.is_some_and(|(index, mac)| index != info.index || info.mac != Some(mac)) {
                        m.look_again = true;
                    }
                }
            }
            _ => {}
        }
    }
}
