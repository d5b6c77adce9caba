//! The unit's role, and what each role means for every service of the
//! unit. This is the one place those meanings are written: the takeover,
//! configsync and replicator services ask these methods instead of
//! matching roles themselves.
//!
//! | role     | adverts on the wire | holds the shared addresses | takes configuration writes | its state is the pair's (streams it) |
//! |----------|---------------------|----------------------------|----------------------------|--------------------------------------|
//! | Init     | no                  | no                         | no                         | no                                   |
//! | Standby  | no                  | no                         | no                         | no                                   |
//! | Active   | yes                 | **yes**                    | **yes**                    | **yes**                              |
//! | Stopping | yes (resigning)     | no: released first         | no: handing over           | yes, until the partner confirms      |
//! | Pacified | no                  | no                         | no                         | no                                   |
//!
//! STOPPING is a planned handover in progress: the unit gives the shared
//! addresses up *first* (so the two units never hold them together), then
//! sends resigning adverts; it returns to ACTIVE if the partner does not
//! confirm in time. Meanwhile its configuration and connection state are
//! still the pair's newest, so the replicator keeps streaming them, but no
//! new configuration is taken (write to the new active instead).
//!
//! A non-HA unit is always ACTIVE.

use std::time::{Duration, SystemTime};

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
    /// Handing over (see the module documentation).
    Stopping,
}

impl Role {
    /// Every role, in wire-code order.
    pub const ALL: [Self; 5] = [Self::Init, Self::Standby, Self::Active, Self::Pacified, Self::Stopping];

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

    /// The role's word for operators, logs, metrics and `duetctl`:
    /// `init`, `standby`, `active`, `pacified`, `stopping`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Standby => "standby",
            Self::Active => "active",
            Self::Pacified => "pacified",
            Self::Stopping => "stopping",
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
        Self::ALL.into_iter().find(|r| r.code() == c)
    }

    /// Whether the unit sends adverts (resigning ones when stopping) and
    /// claims the role on the wire.
    pub fn advertises(self) -> bool {
        matches!(self, Self::Active | Self::Stopping)
    }

    /// Whether a unit in this role holds the shared addresses (T1): the
    /// active one only. A stopping unit has released them.
    pub fn holds_addresses(self) -> bool {
        matches!(self, Self::Active)
    }

    /// Whether configuration writes are taken in this role (S2): the
    /// active only. A stopping unit is handing over; writers go to the
    /// partner once it has taken over.
    pub fn takes_writes(self) -> bool {
        matches!(self, Self::Active)
    }

    /// Whether this unit's configuration and connection state are the
    /// pair's newest: the replicator streams them, and a push from the
    /// partner means both units claim the role.
    pub fn is_authoritative(self) -> bool {
        matches!(self, Self::Active | Self::Stopping)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a message of the election's role stream is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleEventKind {
    /// The first message of every stream: the role as it is now.
    Snapshot,
    /// The role changed.
    Changed,
    /// Still active after an active-active episode: re-announce (E10, T3).
    Reannounce,
    /// A parameter the followers use changed (e.g. the HA timeout).
    Parameters,
    /// Nothing changed: the election is alive. Not part of the sequence.
    Heartbeat,
}

/// One message of the election's role stream (`WatchRole`), as the
/// election publishes it and every follower reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleEvent {
    /// Random per election process start; a new epoch restarts `seq`.
    pub epoch: u64,
    /// One higher than the previous message of this epoch (heartbeats
    /// repeat the newest).
    pub seq: u64,
    pub kind: RoleEventKind,
    pub role: Role,
    pub previous: Role,
    /// When the election published it (wall clock, for operators).
    pub at: SystemTime,
    pub reason: String,
    /// The HA timeout in force (a follower that loses the stream for
    /// longer must give up the shared addresses, T4).
    pub ha_timeout: Duration,
    pub advert_interval: Duration,
    pub vhid: u8,
    /// The configuration generation the parameters came from (0: the
    /// unit file).
    pub config_generation: u64,
    /// The W3C `traceparent` of the role change's trace ("" when none):
    /// an opaque correlation for the followers' spans.
    pub trace: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_words_are_lower_case() {
        for r in Role::ALL {
            assert_eq!(Role::from_code(r.code()), Some(r));
            assert_eq!(r.as_str(), r.display_name().to_lowercase());
        }
        assert_eq!(Role::from_code(0), None);
    }

    #[test]
    fn only_the_active_unit_holds_addresses_and_takes_writes() {
        for r in Role::ALL {
            assert_eq!(r.holds_addresses(), r == Role::Active, "{r}");
            assert_eq!(r.takes_writes(), r == Role::Active, "{r}");
            assert_eq!(r.is_authoritative(), matches!(r, Role::Active | Role::Stopping), "{r}");
            assert_eq!(r.advertises(), r.is_authoritative(), "{r}");
        }
    }
}
