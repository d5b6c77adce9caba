//! What GetStatus shows: the role, the partner, counters and both squares.

use std::net::Ipv4Addr;

use crate::drops::DropReason;
use crate::machine::{Foreign, Heard, Reported};
use crate::role::Role;
use crate::time::Time;
use crate::witness::WitnessView;

/// One of the reference appliance's status squares (SPEC U3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Square {
    /// Green with "A".
    Active,
    /// Green.
    Standby,
    /// Red: partner not heard.
    Unreachable,
    /// Blue.
    Pacified,
    /// Gray: HA not set up.
    NotSetUp,
    /// Gray: indeterminate, both active, or both in the same mode.
    Indeterminate,
    /// Question marks.
    Updating,
}

impl Square {
    /// The colour as the reference names it.
    pub fn colour(self) -> &'static str {
        match self {
            Self::Active => "green A",
            Self::Standby => "green",
            Self::Unreachable => "red",
            Self::Pacified => "blue",
            Self::NotSetUp | Self::Indeterminate => "gray",
            Self::Updating => "??",
        }
    }

    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Standby => "standby",
            Self::Unreachable => "unreachable",
            Self::Pacified => "pacified",
            Self::NotSetUp => "not-set-up",
            Self::Indeterminate => "indeterminate",
            Self::Updating => "updating",
        }
    }
}

/// One interface in the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceView {
    pub name: String,
    pub link_up: bool,
    pub ha_check: bool,
    pub unit_addr: Ipv4Addr,
    pub shared: Ipv4Addr,
    pub sent: u64,
    pub received: u64,
}

/// A snapshot of the election.
#[derive(Debug, Clone)]
pub struct Status {
    pub role: Role,
    pub role_reason: String,
    pub role_since: Time,
    /// The partner's last valid advert.
    pub heard: Option<Heard>,
    /// The partner's last peer-status datagram.
    pub reported: Option<Reported>,
    pub partner_reachable: bool,
    /// This unit's square and why.
    pub local_square: (Square, String),
    /// The partner's square as this unit sees it, and why.
    pub partner_square: (Square, String),
    pub interfaces: Vec<IfaceView>,
    pub drops: Vec<(DropReason, u64)>,
    pub peer_drops: u64,
    pub foreign: Vec<(u8, Ipv4Addr, Foreign)>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub warnings: Vec<String>,
    pub follower_attached: bool,
    pub same_mode: bool,
    /// R4: every component reporting readiness lately is ready.
    pub ready: bool,
    /// Starts within the pacify window, as last counted (E9).
    pub recent_starts: u32,
    /// E14: the witness, when this unit has one.
    pub witness: Option<WitnessView>,
    /// E16: the tracked checks (the partner's summary is in `reported`).
    pub checks: Vec<crate::health::CheckView>,
    /// E16: the sum of the weights of this unit's failing checks.
    pub penalty: u16,
    /// The partner's last peer status says it hears this unit's adverts.
    pub partner_hears_adverts: bool,
}
