//! What should be where, apart from any I/O: how long a lost role stream
//! may be tolerated (T4), and which repairs turn what the kernel shows
//! into what the role asks for (T1, T2). Which roles hold the shared
//! addresses is written once, in `duet_carp::Role::holds_addresses`.
//!
//! The core ([`crate::machine`]) has the kernel observed, asks [`repairs`]
//! what to change, has the changes made and counts a repair only when the
//! kernel confirms that it changed something; so the service's own
//! changes, whose notifications arrive after the fact, never count as
//! drift.

use std::net::Ipv4Addr;
use std::time::Duration;

use duet_config::Cidr;

/// Headroom taken off the fail-safe window: 5 % of it, at most 100 ms.
///
/// The partner takes over `ha_timeout` (plus its skew) after the last
/// advert it received, and the last advert left at most one interval
/// before the stream went down, so the window below ends at the earliest
/// moment the partner may hold the addresses too. Timer granularity (1 ms)
/// and an advert sent a little late would eat the rest of that race; the
/// headroom makes sure the addresses are gone first.
pub(crate) fn headroom(window: Duration) -> Duration {
    (window / 20).min(Duration::from_millis(100))
}

/// How long the election may stay silent (no message, not even a
/// heartbeat) on a live stream while the unit advertises before it is
/// judged hung: `STALE_BEATS` beats of `beat`, but never past
/// `ha_timeout` less [`headroom`]. The partner takes over `ha_timeout`
/// (plus its skew) after the last advert it received, and the last beat
/// left after that advert, so a judgement at the HA timeout itself raced
/// the partner's (the fault lab's seed 12: an active election frozen 3.2 s,
/// its addresses given up 1.9 ms after the partner had taken them); never
/// under `floor` either (a scheduling delay is not a hang).
pub fn hung_after(beat: Duration, beats: u32, ha_timeout: Duration, floor: Duration) -> Duration {
    (beat * beats).min(ha_timeout.saturating_sub(headroom(ha_timeout))).max(floor)
}

/// How long the role stream may stay down while this unit holds the
/// shared addresses: `max(ha_timeout - advert_interval, advert_interval)`,
/// less a little headroom (see [`headroom`]).
pub fn failsafe_window(ha_timeout: Duration, advert_interval: Duration) -> Duration {
    let window = ha_timeout.saturating_sub(advert_interval).max(advert_interval);
    window - headroom(window)
}

/// What one interface should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub hold: bool,
    pub shared: Cidr,
    /// With the virtual MAC option: the macvlan's name and MAC.
    pub vmac: Option<(String, [u8; 6])>,
}

/// The virtual MAC device as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenVmac {
    /// The device is a macvlan.
    pub is_macvlan: bool,
    pub mac: Option<[u8; 6]>,
    pub admin_up: bool,
    /// Its interface index (for the ARP socket).
    pub index: u32,
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

/// What the kernel shows for one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// IPv4 addresses of the interface itself.
    pub parent_addrs: Vec<(Ipv4Addr, u8)>,
    /// The virtual MAC device of this interface, if one exists.
    pub vmac: Option<SeenVmac>,
}

/// One change that brings an interface back to what its role asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Holding without virtual MAC, the address is missing on the interface.
    AddToInterface,
    /// The shared address (with this prefix) is on the interface although
    /// the unit does not hold it there: not active, or the virtual MAC
    /// device carries it.
    RemoveFromInterface { prefix: u8 },
    /// Holding with virtual MAC, the device is missing.
    CreateVmac,
    /// A device by that name exists but is not a macvlan with the virtual MAC.
    ReplaceVmac,
    /// The virtual MAC device is administratively down.
    SetVmacUp,
    /// The virtual MAC device lacks the shared address.
    AddToVmac,
    /// Not holding, but the virtual MAC device exists.
    DeleteVmac,
}

impl Repair {
    /// Whether neighbours must be told again (a gratuitous ARP burst) once
    /// this repair is done.
    pub fn needs_announcement(self) -> bool {
        matches!(self, Self::AddToInterface | Self::CreateVmac | Self::ReplaceVmac | Self::SetVmacUp | Self::AddToVmac)
    }

    /// The operator's description, for "drift repaired: ..." log lines
    /// and the status.
    pub fn describe(self, ifname: &str, shared: Cidr, vmac_dev: &str) -> String {
        match self {
            Self::AddToInterface => format!("{shared} re-added on {ifname} (removed by hand?)"),
            Self::RemoveFromInterface { prefix } if prefix == shared.prefix => {
                format!("{shared} removed from {ifname} (added by hand while this unit does not hold it there?)")
            }
            Self::RemoveFromInterface { prefix } => format!(
                "{}/{prefix} removed from {ifname} (the shared address with another prefix, added by hand?)",
                shared.addr
            ),
            Self::CreateVmac => format!("virtual MAC device {vmac_dev} recreated on {ifname} (deleted by hand?)"),
            Self::ReplaceVmac => {
                format!("{vmac_dev} on {ifname} replaced: it was not a macvlan with the virtual MAC (changed by hand?)")
            }
            Self::SetVmacUp => format!("virtual MAC device {vmac_dev} set up again (set down by hand?)"),
            Self::AddToVmac => format!("{shared} re-added on {vmac_dev} (removed by hand?)"),
            Self::DeleteVmac => format!("virtual MAC device {vmac_dev} removed (this unit is not active)"),
        }
    }
}

/// The repairs that make `seen` what `want` asks for, in the order to make
/// them (the device before its address).
pub fn repairs(want: &Want, seen: &Seen) -> Vec<Repair> {
    let mut out = Vec::new();
    let ours = |&(a, p): &(Ipv4Addr, u8)| a == want.shared.addr && p == want.shared.prefix;
    let on_parent: Vec<u8> =
        seen.parent_addrs.iter().filter(|(a, _)| *a == want.shared.addr).map(|&(_, p)| p).collect();
    match (&want.vmac, want.hold) {
        (None, true) => {
            if !seen.parent_addrs.iter().any(ours) {
                out.push(Repair::AddToInterface);
            }
        }
        (Some((_, mac)), true) => {
            match &seen.vmac {
                None => out.extend([Repair::CreateVmac, Repair::AddToVmac]),
                Some(v) if !v.is_macvlan || v.mac != Some(*mac) => out.extend([Repair::ReplaceVmac, Repair::AddToVmac]),
                Some(v) => {
                    if !v.admin_up {
                        out.push(Repair::SetVmacUp);
                    }
                    if !v.addrs.iter().any(ours) {
                        out.push(Repair::AddToVmac);
                    }
                }
            }
            // On the interface itself it would be answered with the
            // interface's own MAC: it belongs on the virtual MAC device only.
            out.extend(on_parent.iter().map(|&prefix| Repair::RemoveFromInterface { prefix }));
        }
        (vmac, false) => {
            out.extend(on_parent.iter().map(|&prefix| Repair::RemoveFromInterface { prefix }));
            if vmac.is_some() && seen.vmac.as_ref().is_some_and(|v| v.is_macvlan) {
                out.push(Repair::DeleteVmac);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const UNIT: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 1), 24);
    const VMAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 10];

    fn want(hold: bool, vmac: bool) -> Want {
        Want { hold, shared: Cidr { addr: ADDR, prefix: 24 }, vmac: vmac.then(|| ("dv10.eth0".into(), VMAC)) }
    }

    fn seen(parent: &[(Ipv4Addr, u8)], vmac: Option<SeenVmac>) -> Seen {
        Seen { parent_addrs: parent.to_vec(), vmac }
    }

    fn good_vmac(addrs: &[(Ipv4Addr, u8)]) -> SeenVmac {
        SeenVmac { is_macvlan: true, mac: Some(VMAC), admin_up: true, index: 9, addrs: addrs.to_vec() }
    }

    #[test]
    fn failsafe_window_follows_the_ha_timeout() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // 3 s timeout, 1 s adverts: 2 s, less 100 ms headroom.
        assert_eq!(failsafe_window(s(3), s(1)), ms(1900));
        assert_eq!(failsafe_window(s(9), s(1)), ms(7900));
        // Never below one interval (less headroom).
        assert_eq!(failsafe_window(ms(1500), s(1)), ms(950));
        // Fast profile: 80 ms timeout, 20 ms adverts.
        assert_eq!(failsafe_window(ms(80), ms(20)), ms(57));
    }

    #[test]
    fn holding_plain_adds_only_what_is_missing() {
        assert_eq!(repairs(&want(true, false), &seen(&[UNIT], None)), vec![Repair::AddToInterface]);
        assert_eq!(repairs(&want(true, false), &seen(&[UNIT, (ADDR, 24)], None)), vec![]);
        // Another prefix does not count as ours; it is left alone while holding.
        assert_eq!(repairs(&want(true, false), &seen(&[(ADDR, 32)], None)), vec![Repair::AddToInterface]);
    }

    #[test]
    fn not_holding_removes_every_copy_and_the_vmac_device() {
        let w = want(false, false);
        assert_eq!(repairs(&w, &seen(&[UNIT], None)), vec![]);
        assert_eq!(
            repairs(&w, &seen(&[UNIT, (ADDR, 24), (ADDR, 32)], None)),
            vec![Repair::RemoveFromInterface { prefix: 24 }, Repair::RemoveFromInterface { prefix: 32 }]
        );
        let w = want(false, true);
        assert_eq!(repairs(&w, &seen(&[UNIT], Some(good_vmac(&[(ADDR, 24)])))), vec![Repair::DeleteVmac]);
        // Someone else's device of that name is not ours to delete.
        let foreign = SeenVmac { is_macvlan: false, mac: None, admin_up: true, index: 9, addrs: vec![] };
        assert_eq!(repairs(&w, &seen(&[UNIT], Some(foreign))), vec![]);
    }

    #[test]
    fn holding_with_vmac_puts_the_address_on_the_device_only() {
        let w = want(true, true);
        assert_eq!(repairs(&w, &seen(&[UNIT], None)), vec![Repair::CreateVmac, Repair::AddToVmac]);
        assert_eq!(repairs(&w, &seen(&[UNIT], Some(good_vmac(&[(ADDR, 24)])))), vec![]);
        assert_eq!(repairs(&w, &seen(&[UNIT], Some(good_vmac(&[])))), vec![Repair::AddToVmac]);
        assert_eq!(
            repairs(&w, &seen(&[UNIT, (ADDR, 24)], Some(good_vmac(&[(ADDR, 24)])))),
            vec![Repair::RemoveFromInterface { prefix: 24 }]
        );
        let down = SeenVmac { admin_up: false, ..good_vmac(&[(ADDR, 24)]) };
        assert_eq!(repairs(&w, &seen(&[UNIT], Some(down))), vec![Repair::SetVmacUp]);
        let wrong_mac = SeenVmac { mac: Some([2, 0, 0, 0, 0, 1]), ..good_vmac(&[(ADDR, 24)]) };
        assert_eq!(repairs(&w, &seen(&[UNIT], Some(wrong_mac))), vec![Repair::ReplaceVmac, Repair::AddToVmac]);
    }

    #[test]
    fn descriptions_name_the_address_and_the_interface() {
        let c = Cidr { addr: ADDR, prefix: 24 };
        assert_eq!(
            Repair::AddToInterface.describe("eth0", c, "dv10.eth0"),
            "198.18.0.10/24 re-added on eth0 (removed by hand?)"
        );
        assert!(
            Repair::RemoveFromInterface { prefix: 32 }.describe("eth0", c, "x").starts_with("198.18.0.10/32 removed")
        );
        assert!(Repair::CreateVmac.describe("eth0", c, "dv10.eth0").contains("dv10.eth0 recreated on eth0"));
        assert!(Repair::AddToInterface.needs_announcement() && !Repair::DeleteVmac.needs_announcement());
    }
}
