//! The reconcile pass (T1, T2): interface by interface, look at what the
//! kernel has, ask [`plan::repairs`] what differs from the mode, have it
//! repaired, and count drift only where the kernel confirms a change: the
//! notifications of the service's own changes, which arrive after the
//! fact, find nothing to repair and so never count.
//!
//! ```text
//!   start ─► Observe{0} ─► (repairs?) ─► Repair{0} ─► Observe{1} ─► ... ─► done
//!                              └── none ───────────────┘                   (report if the errors changed)
//! ```

use duet_carp::Time;
use duet_wire::arp::virtual_mac;

use super::{Action, Announce, Mode, Takeover};
use duet_net::netlink::NetlinkError;

use crate::error::KernelError;
use crate::notice::Notice;
use crate::plan::{self, Repair, Seen, Want};

/// A pass under way.
#[derive(Debug, Clone)]
pub(super) struct Pass {
    /// The interface being looked at.
    k: usize,
    hold: bool,
    errors_before: Vec<String>,
    /// The interface had an error before this pass: what goes through now
    /// is a retry, not drift.
    retry: bool,
}

/// The answer to [`Action::Repair`].
#[derive(Debug, Default)]
pub(crate) struct Repaired {
    /// Each repair asked: `Ok(true)` when the kernel confirms it changed
    /// something, `Ok(false)` when it was done already, or why it failed.
    pub outcomes: Vec<(Repair, Result<bool, KernelError>)>,
    /// Kernel parameters of the parent that had to be set back
    /// ("net.ipv4.conf.eth0.arp_ignore=1").
    pub parameters_set: Vec<String>,
    /// What else failed (the parent's parameters, the ARP socket on the
    /// virtual MAC device), naming the device.
    pub error: Option<String>,
}

impl Takeover {
    /// Starts a pass over every interface, unless the role is unknown
    /// (touch nothing) or one is under way.
    pub(super) fn start_pass(&mut self) {
        if self.mode == Mode::Unknown || self.pass.is_some() || self.step.is_some() {
            return;
        }
        if self.ifaces.is_empty() {
            if self.mode != Mode::Hold {
                self.actions.push_back(Action::RestoreParameters);
            }
            return;
        }
        self.pass = Some(Pass { k: 0, hold: self.mode == Mode::Hold, errors_before: self.errors(), retry: false });
        self.observe(0);
    }

    /// The answer to [`Action::Observe`] of interface `k`.
    pub(crate) fn handle_observed(&mut self, now: Time, k: usize, seen: Result<Seen, NetlinkError>) {
        let Some(pass) = self.pass.as_ref().filter(|p| p.k == k) else {
            return;
        };
        let hold = pass.hold;
        match seen {
            Err(e) => {
                // Nothing known about it: its held flag stays as it was.
                self.ifaces[k].error = Some(e.to_string());
                self.next(k);
            }
            Ok(seen) => {
                let (name, shared) = &self.cfg.ifaces[k];
                let vmac = self.vmac_vhid().map(|v| (duet_config::vmac_device(name, v), virtual_mac(v)));
                let want = Want { hold, shared: *shared, vmac };
                let repairs = plan::repairs(&want, &seen);
                if repairs.is_empty() && !(hold && self.cfg.vmac) {
                    self.complete(now, k, Repaired::default());
                    self.next(k);
                } else {
                    let vmac_vhid = self.vmac_vhid();
                    self.actions.push_back(Action::Repair { iface: k, repairs, hold, vmac_vhid });
                }
            }
        }
        self.settle(now);
    }

    /// The answer to [`Action::Repair`] of interface `k`.
    pub(crate) fn handle_repaired(&mut self, now: Time, k: usize, r: Repaired) {
        if self.pass.as_ref().is_none_or(|p| p.k != k) {
            return;
        }
        self.complete(now, k, r);
        self.next(k);
        self.settle(now);
    }

    fn observe(&mut self, k: usize) {
        if let Some(p) = &mut self.pass {
            p.k = k;
            p.retry = self.ifaces[k].error.is_some();
        }
        self.actions.push_back(Action::Observe { iface: k, vmac_vhid: self.vmac_vhid() });
    }

    /// What the repairs of interface `k` mean: drift counted, errors kept,
    /// an announcement when an address came back.
    fn complete(&mut self, now: Time, k: usize, r: Repaired) {
        let Some(Pass { hold, retry, .. }) = self.pass.clone() else {
            return;
        };
        let (name, shared) = self.cfg.ifaces[k].clone();
        let device = self.vmac_vhid().map_or_else(|| name.clone(), |v| duet_config::vmac_device(&name, v));
        let mut announce = false;
        let mut fixed = Vec::new();
        let mut created = false;
        let mut failed = None;
        for (repair, outcome) in r.outcomes {
            let what = repair.describe(&name, shared, &device);
            match outcome {
                Ok(true) => {
                    announce |= repair.needs_announcement();
                    // The address on a device just made is part of that one repair.
                    if !(created && repair == Repair::AddToVmac) {
                        fixed.push(what);
                    }
                    created |= matches!(repair, Repair::CreateVmac | Repair::ReplaceVmac);
                }
                // Someone (the kernel, the operator, an earlier pass) was quicker.
                Ok(false) => {}
                Err(error) => {
                    let error = error.to_string();
                    failed.get_or_insert(format!("{what}: {error}"));
                    self.notice(Notice::RepairFailed { what, error });
                }
            }
        }
        fixed.extend(r.parameters_set.into_iter().map(|c| format!("{c} set back on {name} (changed by hand?)")));
        if let Some(e) = r.error {
            failed.get_or_insert(e);
        }
        for what in fixed {
            if retry {
                self.notice(Notice::AppliedAfterRetry { what });
            } else {
                self.drift_repaired(now, what);
            }
        }
        let i = &mut self.ifaces[k];
        i.error = failed;
        i.held = hold && i.error.is_none();
        if hold && announce {
            self.actions.push_back(Action::Announce { ifaces: vec![k], how: Announce::Burst { supersede: false } });
        }
    }

    /// On to the interface after `k`, or the end of the pass.
    fn next(&mut self, k: usize) {
        if k + 1 < self.ifaces.len() {
            self.observe(k + 1);
            return;
        }
        let Some(pass) = self.pass.take() else {
            return;
        };
        if !pass.hold {
            self.actions.push_back(Action::RestoreParameters);
        }
        if self.errors() != pass.errors_before {
            self.report();
        }
    }

    fn drift_repaired(&mut self, now: Time, what: String) {
        self.drift_repairs += 1;
        if self.recent_repairs.len() == super::RECENT_REPAIRS {
            self.recent_repairs.pop_front();
        }
        self.recent_repairs.push_back((now, what.clone()));
        self.notice(Notice::DriftRepaired { what });
    }
}
