//! The HA parameters the election runs with, and what follows from them:
//! what goes on the wire (advbase, advskew), how often, and how long a
//! standby waits before it takes over.
//!
//! Input validation with operator-facing messages lives in `duet-config`;
//! [`Params::check`] only guards the invariants this crate relies on.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::witness::WitnessParams;

/// HA mode of a unit (SPEC U1), in the unit file's words (`non-ha`,
/// `first`, `second`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HaMode {
    /// A unit without a partner.
    NonHa,
    /// The first unit of a pair.
    First,
    /// The second unit of a pair.
    Second,
}

impl HaMode {
    /// Wire code in the peer-status datagram.
    pub fn code(self) -> u8 {
        match self {
            Self::NonHa => 0,
            Self::First => 1,
            Self::Second => 2,
        }
    }

    /// From the wire code.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Self::NonHa),
            1 => Some(Self::First),
            2 => Some(Self::Second),
            _ => None,
        }
    }

    /// `first`, `second` or `non-ha`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NonHa => "non-ha",
            Self::First => "first",
            Self::Second => "second",
        }
    }
}

/// Switch to preferred server (E5): one of the pair's HA settings, in the
/// unit file's words (`none`, `first`, `second`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preferred {
    /// No failback: the active stays active (the default).
    #[default]
    None,
    /// The `first` unit takes the role back when it returns.
    First,
    /// The `second` unit takes the role back when it returns.
    Second,
}

impl Preferred {
    /// The unit file's word: `none`, `first` or `second`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::First => "first",
            Self::Second => "second",
        }
    }
}

/// How often adverts go out and when a silent active is declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// The reference appliance: an advert every second (advbase 1), the
    /// standby takes over after `timeout` (E3: 3 to 15 s in steps of 3).
    Standard { timeout: Duration },
    /// duet's fast profile (E13): advbase 0 and the interval in advskew
    /// (1/256 s); the standby takes over after `dead_factor` intervals of
    /// the active without an advert.
    Fast { interval: Duration, dead_factor: u32 },
}

/// Where adverts are sent on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 224.0.0.18 (the default).
    Multicast,
    /// 255.255.255.255 ("use broadcast").
    Broadcast,
    /// The partner's unit address only (E13).
    Unicast,
}

/// CARP's multicast group.
pub const CARP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

/// Advert authentication (E2, E13).
#[derive(Clone, PartialEq, Eq)]
pub enum AuthParams {
    /// ucarp-compatible HMAC-SHA1 keyed by the password (may be empty:
    /// then any host can take the role, and the unit says so loudly).
    Ucarp { password: Vec<u8> },
    /// duet-only HMAC-SHA256 with a replay window; every listed key is
    /// accepted, `send_key` signs what this unit sends.
    Sha256 { keys: Vec<(u8, Vec<u8>)>, send_key: u8 },
}

impl std::fmt::Debug for AuthParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ucarp { password } => write!(f, "Ucarp {{ password: {} bytes }}", password.len()),
            Self::Sha256 { keys, send_key } => {
                let ids: Vec<u8> = keys.iter().map(|(id, _)| *id).collect();
                write!(f, "Sha256 {{ keys: {ids:?}, send_key: {send_key} }}")
            }
        }
    }
}

impl AuthParams {
    /// `ucarp-sha1` or `sha256`.
    pub fn mode_name(&self) -> &'static str {
        match self {
            Self::Ucarp { .. } => "ucarp-sha1",
            Self::Sha256 { .. } => "sha256",
        }
    }

    /// True when adverts are signed with an empty password.
    pub fn no_password(&self) -> bool {
        matches!(self, Self::Ucarp { password } if password.is_empty())
    }

    /// The secret the peer-status datagram is signed with.
    pub fn peer_secret(&self) -> &[u8] {
        match self {
            Self::Ucarp { password } => password,
            Self::Sha256 { keys, send_key } => {
                keys.iter().find(|(id, _)| id == send_key).map_or(&[][..], |(_, k)| k.as_slice())
            }
        }
    }
}

/// One interface as the election sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceParams {
    pub name: String,
    /// This unit's own address (source of its adverts).
    pub unit_addr: Ipv4Addr,
    /// The partner's unit address, if it has one (not in non-HA mode).
    pub partner_addr: Option<Ipv4Addr>,
    /// The shared address of this interface (the virtual address in the HMAC).
    pub shared: Ipv4Addr,
    /// "Use for HA checks" (E7): adverts are sent and heard here, and a
    /// link loss demotes the unit.
    pub ha_check: bool,
    pub destination: Destination,
}

impl IfaceParams {
    /// The IPv4 destination of adverts on this interface.
    pub fn advert_destination(&self) -> Ipv4Addr {
        match self.destination {
            Destination::Multicast => CARP_GROUP,
            Destination::Broadcast => Ipv4Addr::BROADCAST,
            Destination::Unicast => self.partner_addr.unwrap_or(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// Everything the election core needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub mode: HaMode,
    pub vhid: u8,
    pub timing: Timing,
    pub preferred: Preferred,
    /// E6: time a unit that hears no partner waits before it becomes active.
    pub initial_wait: Duration,
    pub auth: AuthParams,
    pub interfaces: Vec<IfaceParams>,
    /// Override of the derived advskew (for a ucarp peer with its own skew).
    pub advskew: Option<u8>,
    /// E8: a checked link loss restarts the unit's services.
    pub hard_reboot_on_link_failure: bool,
    /// E14: the witness, when this unit has one (`[witness]`), with the
    /// pair's policy and lease TTL.
    pub witness: Option<WitnessParams>,
}

/// Which invariant of the election core [`Params`] break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// vhid 0 (the wire has no such group).
    #[error("vhid must be 1-255")]
    Vhid,
    /// An HA unit with no interface used for HA checks (E7): it would never
    /// hear its partner.
    #[error("at least one interface must be used for HA checks")]
    NoCheckedInterface,
    /// Unicast adverts on an interface without the partner's address.
    #[error("interface {interface}: unicast adverts need the partner's address")]
    UnicastWithoutPartner { interface: String },
    /// The key that signs adverts is not among the accepted keys.
    #[error("send key {send_key} is not among the keys")]
    UnknownSendKey { send_key: u8 },
    /// A standard HA timeout below 1 s.
    #[error("timeout below 1 s")]
    Timeout,
    /// A fast interval below 4 ms or a dead factor below 2.
    #[error("fast interval below 4 ms or dead factor below 2")]
    FastTiming,
    /// A witness lease TTL below 1 s.
    #[error("witness lease TTL below 1 s")]
    WitnessLeaseTtl,
}

/// advbase/advskew of a resigning unit: "I am going away, take over now".
pub const RESIGN_ADVBASE: u8 = 255;
pub const RESIGN_ADVSKEW: u8 = 255;

impl Params {
    /// Internal invariants (the config crate reports operator errors).
    pub fn check(&self) -> Result<(), ParamsError> {
        if self.vhid == 0 {
            return Err(ParamsError::Vhid);
        }
        if self.mode != HaMode::NonHa && !self.interfaces.iter().any(|i| i.ha_check) {
            return Err(ParamsError::NoCheckedInterface);
        }
        for i in &self.interfaces {
            if i.destination == Destination::Unicast && i.partner_addr.is_none() {
                return Err(ParamsError::UnicastWithoutPartner { interface: i.name.clone() });
            }
        }
        if let AuthParams::Sha256 { keys, send_key } = &self.auth
            && !keys.iter().any(|(id, _)| id == send_key)
        {
            return Err(ParamsError::UnknownSendKey { send_key: *send_key });
        }
        if let Some(w) = &self.witness
            && w.lease_ttl < Duration::from_secs(1)
        {
            return Err(ParamsError::WitnessLeaseTtl);
        }
        match self.timing {
            Timing::Standard { timeout } if timeout < Duration::from_secs(1) => Err(ParamsError::Timeout),
            Timing::Fast { interval, dead_factor } if interval < Duration::from_millis(4) || dead_factor < 2 => {
                Err(ParamsError::FastTiming)
            }
            _ => Ok(()),
        }
    }

    /// The unit that wins ties: the preferred one, or `first` when none is.
    pub fn favoured(&self) -> bool {
        match self.preferred {
            Preferred::None => self.mode == HaMode::First,
            Preferred::First => self.mode == HaMode::First,
            Preferred::Second => self.mode == HaMode::Second,
        }
    }

    /// Whether this unit takes the role back from a healthy partner (E5).
    pub fn preempt(&self) -> bool {
        matches!((self.preferred, self.mode), (Preferred::First, HaMode::First) | (Preferred::Second, HaMode::Second))
    }

    /// advbase on the wire: 1 s (standard) or 0 (fast).
    pub fn advbase(&self) -> u8 {
        match self.timing {
            Timing::Standard { .. } => 1,
            Timing::Fast { .. } => 0,
        }
    }

    /// advskew on the wire. Standard: 0 for the favoured unit, 1 for the
    /// other, so the favoured one advertises slightly more often and wins
    /// CARP's comparison. Fast: the interval in 1/256 s (rounded up), one
    /// more for the other unit.
    pub fn advskew(&self) -> u8 {
        if let Some(s) = self.advskew {
            return s;
        }
        let extra = u8::from(!self.favoured());
        match self.timing {
            Timing::Standard { .. } => extra,
            Timing::Fast { interval, .. } => {
                let us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
                let skew = us.saturating_mul(256).div_ceil(1_000_000).clamp(1, 253);
                u8::try_from(skew).unwrap_or(253) + extra
            }
        }
    }

    /// This unit's advert interval: advbase + advskew/256 s.
    pub fn interval(&self) -> Duration {
        Duration::from_micros(duet_wire::carp::interval_us(self.advbase(), self.advskew()))
    }

    /// The skew as a duration (CARP's tie-breaker between two standbys).
    pub fn skew_delay(&self) -> Duration {
        Duration::from_micros(u64::from(self.advskew()) * 1_000_000 / 256)
    }

    /// How long the standby waits without a valid advert before it takes
    /// over. `partner_interval` is the interval the active advertised.
    /// Standard: the HA timeout plus the skew (0 or 1/256 s, CARP's
    /// tie-break). Fast: `dead_factor` of the active's intervals on the
    /// wire plus the tie-break alone (1/256 s for the unit that does not win
    /// ties, none for the other), not the whole skew: the fast profile's
    /// skew carries the interval, and adding it cost one more interval.
    pub fn down_interval(&self, partner_interval: Option<Duration>) -> Duration {
        match self.timing {
            Timing::Standard { timeout } => timeout + self.skew_delay(),
            Timing::Fast { dead_factor, .. } => {
                partner_interval.unwrap_or_else(|| self.interval()) * dead_factor + self.tie_break()
            }
        }
    }

    /// The fast profile's tie-break between two standbys: 1/256 s for the
    /// unit that does not win ties (the step of advskew on the wire).
    fn tie_break(&self) -> Duration {
        if self.favoured() { Duration::ZERO } else { Duration::from_micros(1_000_000 / 256) }
    }

    /// The HA timeout as configured (standard) or derived (fast).
    pub fn ha_timeout(&self) -> Duration {
        match self.timing {
            Timing::Standard { timeout } => timeout,
            Timing::Fast { dead_factor, .. } => self.interval() * dead_factor,
        }
    }

    /// The wait after start before a unit that hears nobody becomes active.
    /// The unit that does not win ties waits one advert interval more, so
    /// that when both start together the other's first advert reaches it
    /// before its own timer fires, even on a busy machine (the skew alone
    /// gives only 1/256 s).
    pub fn startup_wait(&self) -> Duration {
        let extra = if self.favoured() { Duration::ZERO } else { self.interval() };
        self.initial_wait.max(self.down_interval(None)) + extra
    }

    /// `standard` or `fast`.
    pub fn profile_name(&self) -> &'static str {
        match self.timing {
            Timing::Standard { .. } => "standard",
            Timing::Fast { .. } => "fast",
        }
    }

    /// Index of the first interface used for HA checks.
    pub fn first_checked(&self) -> Option<usize> {
        self.interfaces.iter().position(|i| i.ha_check)
    }
}
