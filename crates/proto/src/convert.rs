//! The one conversion between each domain type of the election and its
//! protobuf message, used at the gRPC edges and nowhere else: roles, HA
//! modes, the preferred server, status squares, drop reasons and role
//! events.
//!
//! Protobuf enums travel as `i32`; an unknown or UNSPECIFIED value has no
//! domain meaning and converts to `None` (or an error naming it), never to
//! a default role.

use std::time::{Duration, SystemTime};

use duet_carp::{DropReason, HaMode, Preferred, Role, RoleEvent, RoleEventKind, Square};

use crate::common::v1 as common;
use crate::config::v1 as config;
use crate::election::v1 as election;

impl From<Role> for common::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Init => Self::Init,
            Role::Standby => Self::Standby,
            Role::Active => Self::Active,
            Role::Pacified => Self::Pacified,
            Role::Stopping => Self::Stopping,
        }
    }
}

/// The role as it travels (an `i32` field).
pub fn role_i32(r: Role) -> i32 {
    common::Role::from(r) as i32
}

/// The role of an `i32` field; `None` for UNSPECIFIED or an unknown value.
pub fn role(v: i32) -> Option<Role> {
    match common::Role::try_from(v).ok()? {
        common::Role::Unspecified => None,
        common::Role::Init => Some(Role::Init),
        common::Role::Standby => Some(Role::Standby),
        common::Role::Active => Some(Role::Active),
        common::Role::Pacified => Some(Role::Pacified),
        common::Role::Stopping => Some(Role::Stopping),
    }
}

/// The HA mode as it travels.
pub fn ha_mode_i32(m: HaMode) -> i32 {
    (match m {
        HaMode::NonHa => common::HaMode::NonHa,
        HaMode::First => common::HaMode::First,
        HaMode::Second => common::HaMode::Second,
    }) as i32
}

/// The HA mode of an `i32` field; `None` for UNSPECIFIED or unknown.
pub fn ha_mode(v: i32) -> Option<HaMode> {
    match common::HaMode::try_from(v).ok()? {
        common::HaMode::Unspecified => None,
        common::HaMode::NonHa => Some(HaMode::NonHa),
        common::HaMode::First => Some(HaMode::First),
        common::HaMode::Second => Some(HaMode::Second),
    }
}

impl From<Preferred> for config::PreferredServer {
    fn from(p: Preferred) -> Self {
        match p {
            Preferred::None => Self::None,
            Preferred::First => Self::First,
            Preferred::Second => Self::Second,
        }
    }
}

/// The preferred server of an `i32` field: UNSPECIFIED is `none` (as every
/// reader of the image has always taken it); `None` for an unknown value.
pub fn preferred(v: i32) -> Option<Preferred> {
    match config::PreferredServer::try_from(v).ok()? {
        config::PreferredServer::Unspecified | config::PreferredServer::None => Some(Preferred::None),
        config::PreferredServer::First => Some(Preferred::First),
        config::PreferredServer::Second => Some(Preferred::Second),
    }
}

impl From<Square> for common::UnitStatus {
    fn from(s: Square) -> Self {
        match s {
            Square::Active => Self::Active,
            Square::Standby => Self::Standby,
            Square::Unreachable => Self::Unreachable,
            Square::Pacified => Self::Pacified,
            Square::NotSetUp => Self::NotSetUp,
            Square::Indeterminate => Self::Indeterminate,
            Square::Updating => Self::Updating,
        }
    }
}

/// The square of an `i32` field; `None` for UNSPECIFIED or unknown.
pub fn square(v: i32) -> Option<Square> {
    match common::UnitStatus::try_from(v).ok()? {
        common::UnitStatus::Unspecified => None,
        common::UnitStatus::Active => Some(Square::Active),
        common::UnitStatus::Standby => Some(Square::Standby),
        common::UnitStatus::Unreachable => Some(Square::Unreachable),
        common::UnitStatus::Pacified => Some(Square::Pacified),
        common::UnitStatus::NotSetUp => Some(Square::NotSetUp),
        common::UnitStatus::Indeterminate => Some(Square::Indeterminate),
        common::UnitStatus::Updating => Some(Square::Updating),
    }
}

impl From<DropReason> for election::DropReason {
    fn from(r: DropReason) -> Self {
        match r {
            DropReason::TooShort => Self::TooShort,
            DropReason::BadIpVersion => Self::BadIpVersion,
            DropReason::BadIpChecksum => Self::BadIpChecksum,
            DropReason::BadIpLength => Self::BadIpLength,
            DropReason::NotCarp => Self::NotCarp,
            DropReason::Fragment => Self::Fragment,
            DropReason::BadTtl => Self::BadTtl,
            DropReason::BadVersion => Self::BadVersion,
            DropReason::BadType => Self::BadType,
            DropReason::BadLength => Self::BadLength,
            DropReason::BadChecksum => Self::BadChecksum,
            DropReason::BadDestination => Self::BadDestination,
            DropReason::ForeignVhid => Self::ForeignVhid,
            DropReason::BadDigest => Self::BadDigest,
            DropReason::Replay => Self::Replay,
            DropReason::AuthModeMismatch => Self::AuthModeMismatch,
            DropReason::UnknownKey => Self::UnknownKey,
            DropReason::NotPartner => Self::NotPartner,
            DropReason::OwnAddress => Self::OwnAddress,
            DropReason::WrongInterface => Self::WrongInterface,
            DropReason::Pacified => Self::Pacified,
        }
    }
}

impl From<RoleEventKind> for election::RoleEventKind {
    fn from(k: RoleEventKind) -> Self {
        match k {
            RoleEventKind::Snapshot => Self::Snapshot,
            RoleEventKind::Changed => Self::Changed,
            RoleEventKind::Reannounce => Self::Reannounce,
            RoleEventKind::Parameters => Self::Parameters,
            RoleEventKind::Heartbeat => Self::Heartbeat,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&RoleEvent> for election::WatchRoleResponse {
    fn from(e: &RoleEvent) -> Self {
        Self {
            epoch: e.epoch,
            seq: e.seq,
            kind: election::RoleEventKind::from(e.kind) as i32,
            role: role_i32(e.role),
            previous_role: role_i32(e.previous),
            at: Some(prost_types::Timestamp::from(e.at)),
            reason: e.reason.clone(),
            ha_timeout_ms: ms(e.ha_timeout),
            advert_interval_ms: ms(e.advert_interval),
            vhid: u32::from(e.vhid),
            config_generation: e.config_generation,
            traceparent: e.trace.clone(),
        }
    }
}

/// Why a role stream message cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleEventError {
    /// The role (or previous role) field holds no role.
    #[error("the role stream message has no valid {field} ({value})")]
    BadRole {
        /// `role` or `previous_role`.
        field: &'static str,
        value: i32,
    },
    /// The kind field holds no known kind.
    #[error("the role stream message has an unknown kind ({0})")]
    BadKind(i32),
    /// The vhid is not 0-255.
    #[error("the role stream message has vhid {0}, not 0-255")]
    BadVhid(u32),
}

impl TryFrom<&election::WatchRoleResponse> for RoleEvent {
    type Error = RoleEventError;

    fn try_from(m: &election::WatchRoleResponse) -> Result<Self, Self::Error> {
        let kind = match election::RoleEventKind::try_from(m.kind) {
            Ok(election::RoleEventKind::Snapshot) => RoleEventKind::Snapshot,
            Ok(election::RoleEventKind::Changed) => RoleEventKind::Changed,
            Ok(election::RoleEventKind::Reannounce) => RoleEventKind::Reannounce,
            Ok(election::RoleEventKind::Parameters) => RoleEventKind::Parameters,
            Ok(election::RoleEventKind::Heartbeat) => RoleEventKind::Heartbeat,
            Ok(election::RoleEventKind::Unspecified) | Err(_) => return Err(RoleEventError::BadKind(m.kind)),
        };
        let r = role(m.role).ok_or(RoleEventError::BadRole { field: "role", value: m.role })?;
        let previous = role(m.previous_role).unwrap_or(r);
        Ok(Self {
            epoch: m.epoch,
            seq: m.seq,
            kind,
            role: r,
            previous,
            at: m.at.and_then(|t| SystemTime::try_from(t).ok()).unwrap_or(SystemTime::UNIX_EPOCH),
            reason: m.reason.clone(),
            ha_timeout: Duration::from_millis(m.ha_timeout_ms),
            advert_interval: Duration::from_millis(m.advert_interval_ms),
            vhid: u8::try_from(m.vhid).map_err(|_| RoleEventError::BadVhid(m.vhid))?,
            config_generation: m.config_generation,
            trace: m.traceparent.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_round_trips_and_unspecified_is_none() {
        for r in Role::ALL {
            assert_eq!(role(role_i32(r)), Some(r));
        }
        assert_eq!(role(0), None);
        assert_eq!(role(99), None);
        for m in [HaMode::NonHa, HaMode::First, HaMode::Second] {
            assert_eq!(ha_mode(ha_mode_i32(m)), Some(m));
        }
    }

    #[test]
    fn role_events_round_trip() {
        let e = RoleEvent {
            epoch: 7,
            seq: 3,
            kind: RoleEventKind::Changed,
            role: Role::Active,
            previous: Role::Standby,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            reason: "partner silent".into(),
            ha_timeout: Duration::from_secs(3),
            advert_interval: Duration::from_secs(1),
            vhid: 10,
            config_generation: 4,
            trace: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        };
        let m = election::WatchRoleResponse::from(&e);
        assert_eq!(RoleEvent::try_from(&m), Ok(e));
        let bad = election::WatchRoleResponse { role: 0, kind: 2, ..m };
        assert_eq!(RoleEvent::try_from(&bad), Err(RoleEventError::BadRole { field: "role", value: 0 }));
    }
}
