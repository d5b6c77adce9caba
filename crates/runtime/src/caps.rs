//! The Linux capabilities a service needs, checked before it starts: a
//! missing one stops it with one line that says how to grant it, instead
//! of "Operation not permitted" from deep inside and a restart loop.

use std::fmt;

/// A capability a duet service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cap {
    /// Addresses, macvlan, nftables, sysctls, conntrack (CAP_NET_ADMIN).
    NetAdmin,
    /// Raw CARP sockets and ARP on a packet socket (CAP_NET_RAW).
    NetRaw,
}

impl Cap {
    /// Its bit in the capability sets (linux/capability.h).
    fn bit(self) -> u32 {
        match self {
            Self::NetAdmin => 12,
            Self::NetRaw => 13,
        }
    }

    /// Its name without the `CAP_` prefix, as compose and setcap spell it.
    pub fn short(self) -> &'static str {
        match self {
            Self::NetAdmin => "NET_ADMIN",
            Self::NetRaw => "NET_RAW",
        }
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CAP_{}", self.short())
    }
}

/// What each service needs, by its process name (the services' own
/// `Service::CAPABILITIES` are these; `duetctl doctor` checks the running
/// processes against them).
pub const ELECTION: &[Cap] = &[Cap::NetRaw, Cap::NetAdmin];
pub const TAKEOVER: &[Cap] = &[Cap::NetAdmin, Cap::NetRaw];
pub const REPLICATOR: &[Cap] = &[Cap::NetAdmin];
/// The services with capabilities, by process name.
pub const BY_SERVICE: &[(&str, &[Cap])] =
    &[("duet-election", ELECTION), ("duet-takeover", TAKEOVER), ("duet-replicator", REPLICATOR)];

/// The effective capability set of this process (`CapEff` in
/// /proc/self/status); `None` if it cannot be read.
pub fn effective() -> Option<u64> {
    effective_of("self")
}

/// The effective capability set of process `pid` (`"self"` or a number).
pub fn effective_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_effective(&status)
}

fn parse_effective(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// The capabilities of `needed` the effective set `eff` lacks.
pub fn lacking(eff: u64, needed: &[Cap]) -> Vec<Cap> {
    let mut v: Vec<Cap> = needed.iter().copied().filter(|c| eff & (1 << c.bit()) == 0).collect();
    v.sort();
    v.dedup();
    v
}

/// The capabilities of `needed` this process lacks (none when its set
/// cannot be read: the kernel will say).
pub fn missing(needed: &[Cap]) -> Vec<Cap> {
    effective().map(|eff| lacking(eff, needed)).unwrap_or_default()
}

/// Makes the capabilities this process may have (its permitted set)
/// effective, and passes the network ones on to the programs it runs (its
/// services, `nft`) through the ambient set. For a non-root process whose
/// binary carries them as file capabilities without the effective bit
/// (`setcap cap_net_admin,cap_net_raw+p`, as in the image): a missing one
/// is then reported by [`missing`] with the ways to grant it, not by the
/// kernel refusing to run the program. Does nothing for root.
pub fn raise_permitted() -> std::io::Result<()> {
    use rustix::thread::{CapabilitySet, capabilities, configure_capability_in_ambient_set, set_capabilities};
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let mut sets = capabilities(None)?;
    let net = (CapabilitySet::NET_ADMIN | CapabilitySet::NET_RAW) & sets.permitted;
    if sets.effective.contains(sets.permitted) && sets.inheritable.contains(net) {
        return Ok(());
    }
    sets.effective |= sets.permitted;
    sets.inheritable |= net;
    set_capabilities(None, sets)?;
    for flag in [CapabilitySet::NET_ADMIN, CapabilitySet::NET_RAW] {
        if net.contains(flag) {
            configure_capability_in_ambient_set(flag, true)?;
        }
    }
    Ok(())
}

/// One line: what `who` lacks and the ways to grant it.
pub fn explain(who: &str, missing: &[Cap]) -> String {
    let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
    let short: Vec<&str> = missing.iter().map(|c| c.short()).collect();
    let lower: Vec<String> = missing.iter().map(|c| format!("cap_{}", c.short().to_lowercase())).collect();
    format!(
        "{who} needs {} and this process does not have {}: run it as root, or grant {} \
         (binary: `setcap {}+ep $(command -v duet)`; compose: `cap_add: [{}]`; systemd: `AmbientCapabilities={}`)",
        names.join(" and "),
        if missing.len() == 1 { "it" } else { "them" },
        if missing.len() == 1 { "it" } else { "them" },
        lower.join(","),
        short.join(", "),
        names.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_is_read_and_what_lacks_is_named_with_the_ways_to_grant_it() {
        let status = "Name:\tduet\nCapInh:\t0000000000000000\nCapEff:\t0000000000002000\n";
        let eff = parse_effective(status).unwrap();
        assert_eq!(lacking(eff, &[Cap::NetRaw, Cap::NetAdmin, Cap::NetAdmin]), vec![Cap::NetAdmin]);
        assert_eq!(lacking(u64::MAX, &[Cap::NetRaw, Cap::NetAdmin]), vec![]);
        let line = explain("the takeover", &[Cap::NetAdmin, Cap::NetRaw]);
        for part in
            ["CAP_NET_ADMIN and CAP_NET_RAW", "setcap cap_net_admin,cap_net_raw+ep", "cap_add: [NET_ADMIN, NET_RAW]"]
        {
            assert!(line.contains(part), "{part} missing from: {line}");
        }
        assert!(line.contains("AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW"), "{line}");
        assert!(parse_effective("Name: x\n").is_none());
    }
}
