//! The unit's role.

/// The role the election gives the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Listening during the initial wait.
    Init,
    /// Watching the active partner.
    Standby,
    /// Owns the shared addresses and advertises.
    Active,
    /// Too many starts: out of HA until cleared (E9).
    Pacified,
    /// Handing over: the addresses are released, the resigning advert tells
    /// the partner to take over, and the role returns to Active if it does
    /// not confirm in time.
    Stopping,
}

impl Role {
    /// The name used in "Switching to state: <Role>".
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Init => "Init",
            Self::Standby => "Standby",
            Self::Active => "Active",
            Self::Pacified => "Pacified",
            Self::Stopping => "Stopping",
        }
    }

    /// Wire code in the peer-status datagram.
    pub fn code(self) -> u8 {
        match self {
            Self::Init => 1,
            Self::Standby => 2,
            Self::Active => 3,
            Self::Pacified => 4,
            Self::Stopping => 5,
        }
    }

    /// From the wire code.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Self::Init),
            2 => Some(Self::Standby),
            3 => Some(Self::Active),
            4 => Some(Self::Pacified),
            5 => Some(Self::Stopping),
            _ => None,
        }
    }

    /// Whether a unit in this role holds the shared addresses.
    pub fn holds_addresses(self) -> bool {
        matches!(self, Self::Active | Self::Stopping)
    }
}
