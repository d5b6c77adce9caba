//! Every operator-facing log line of the election, in one place.
//!
//! The wording of the reference appliance is kept where it has one
//! ("Switching to state: Active", "Bad digest - Check vhid, password and
//! virtual IP address", "[CRITICAL] Detected Active - Active re-arping",
//! "HA Config file has changed - reloading", "Bad TTL"). The adapter maps
//! [`Level`] to its logger.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::drops::{DropCounters, DropReason};
use crate::role::Role;
use crate::witness::{Decision, StepDown};

/// Severity of a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warning,
    Error,
    Critical,
}

/// Something the operator should read in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// E12: every role change.
    SwitchingTo(Role),
    /// E12: a changed HA parameter was applied live.
    ConfigReloaded,
    /// E10: both units were active; this one stays and re-announces.
    ActiveActive { partner: Ipv4Addr },
    /// This unit gave way to a better active.
    PreferredMasterAdvertised { partner: Ipv4Addr },
    /// A packet was dropped.
    Dropped { reason: DropReason, src: Ipv4Addr, iface: String, detail: String },
    /// Drops whose lines were suppressed in the last window.
    DropSummary { window: Duration, counts: DropCounters },
    /// U1: both units are configured with the same HA mode.
    SameMode { mode: &'static str, local: Ipv4Addr, partner: Ipv4Addr },
    /// No password: any host on the segment can take the role.
    NoPassword,
    /// Both units are active and none of the partner's adverts arrive.
    BothActiveBlind { partner: Ipv4Addr },
    /// E7: a checked interface lost its link.
    LinkLost { iface: String },
    /// A checked interface has its link back.
    LinkRestored { iface: String },
    /// T4: the takeover service stopped following while active.
    TakeoverGone { resigning: bool },
    /// The active unit woke up so long after its advert was due (its process
    /// stopped, its machine suspended or starved) that the partner may have
    /// taken the role: it listens first.
    Overslept { silent: Duration },
    /// The standby's takeover timer fired this late (its process stopped
    /// or starved): it listens one more interval for adverts first.
    WokeLate { late: Duration },
    /// The last run of this election ended while it held the role; it
    /// resigned so that the partner takes the role at once.
    ResignedAfterRestart,
    /// The partner advertises at another pace than this unit expects.
    ProfileMismatch { partner: Ipv4Addr, partner_interval: Duration, own_interval: Duration },
    /// E9.
    Pacified { starts: u32, window: Duration },
    /// The operator cleared the pacified state.
    PacifiedCleared,
    /// A planned handover started or ended.
    Handover { partner: Option<Ipv4Addr>, outcome: &'static str },
    /// R4: a component of the unit says its state is ready, or why not.
    Readiness { component: String, ready: bool, reason: String },
    /// R4: a component stopped reporting its readiness.
    ReadinessStale { component: String },
    /// E14: the partner is silent but holds the witness and beats.
    WitnessPartnerAlive { partner: String, since_beat: Duration },
    /// E14: the witness was acquired and the unit takes over.
    WitnessAcquired { decision: Decision },
    /// E14: etcd out of reach for the lease TTL, policy prefer: plain CARP.
    WitnessFallback { unreachable_for: Duration },
    /// E14: etcd out of reach, policy required: no takeover without it.
    WitnessHolding { unreachable_for: Duration },
    /// E14: an active unit steps down.
    WitnessStepDown(StepDown),
    /// E16: a tracked check changed state (after fall/rise).
    Check { name: String, healthy: bool, output: String },
    /// E16: the active hands the role over because of its checks.
    HealthHandover { why: String },
    /// E16: a check fails but no partner can take the role.
    HealthKept { why: String },
}

impl Notice {
    /// How loud. A role change is news, not a warning (the reference
    /// prints it as one; an operator's log filter should not have to).
    pub fn level(&self) -> Level {
        match self {
            Self::SwitchingTo(_) => Level::Info,
            Self::ConfigReloaded | Self::PreferredMasterAdvertised { .. } | Self::LinkRestored { .. } => Level::Warning,
            Self::ActiveActive { .. } | Self::BothActiveBlind { .. } => Level::Critical,
            Self::Dropped { reason, .. } => match reason {
                DropReason::AuthModeMismatch | DropReason::Replay => Level::Error,
                _ => Level::Warning,
            },
            Self::DropSummary { .. } => Level::Warning,
            Self::SameMode { .. } | Self::NoPassword | Self::Pacified { .. } => Level::Error,
            Self::LinkLost { .. } | Self::TakeoverGone { .. } | Self::ProfileMismatch { .. } => Level::Error,
            Self::Overslept { .. } | Self::WokeLate { .. } => Level::Error,
            Self::ResignedAfterRestart => Level::Warning,
            Self::PacifiedCleared | Self::Handover { .. } => Level::Info,
            Self::Readiness { ready: true, .. } => Level::Info,
            Self::Readiness { ready: false, .. } | Self::ReadinessStale { .. } => Level::Warning,
            Self::WitnessAcquired { .. } => Level::Warning,
            Self::Check { healthy: true, .. } => Level::Info,
            Self::Check { healthy: false, .. } | Self::HealthHandover { .. } => Level::Warning,
            Self::HealthKept { .. } => Level::Error,
            Self::WitnessPartnerAlive { .. } | Self::WitnessHolding { .. } => Level::Error,
            Self::WitnessStepDown(StepDown::Unconfirmed { .. }) => Level::Error,
            Self::WitnessFallback { .. } | Self::WitnessStepDown(StepDown::PartnerHolds { .. }) => Level::Critical,
        }
    }

    /// The component a readiness line is about (logged as a field of the
    /// line rather than in its text).
    pub fn component(&self) -> Option<&str> {
        match self {
            Self::Readiness { component, .. } | Self::ReadinessStale { component } => Some(component),
            Self::Check { name, .. } => Some(name),
            _ => None,
        }
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SwitchingTo(r) => write!(f, "Switching to state: {}", r.display_name()),
            Self::ConfigReloaded => f.write_str("HA Config file has changed - reloading"),
            Self::ActiveActive { partner } => {
                write!(f, "[CRITICAL] Detected Active - Active re-arping (partner {partner} also claims the role; it gives way)")
            }
            Self::PreferredMasterAdvertised { partner } => {
                write!(f, "Preferred master advertised by {partner}: going back to standby")
            }
            Self::Dropped { reason, src, iface, detail } => match reason {
                DropReason::BadDigest => {
                    write!(f, "Bad digest - Check vhid, password and virtual IP address (from {src} on {iface}{detail})")
                }
                DropReason::BadTtl => write!(f, "Bad TTL: [{detail}] from {src} on {iface} (sender is not on this segment)"),
                DropReason::AuthModeMismatch => write!(
                    f,
                    "Authentication mode mismatch: {src} on {iface} {detail}; set the same ha.auth.mode on both units"
                ),
                DropReason::ForeignVhid => write!(f, "Ignoring vhid: [{detail}] from {src} on {iface} (another CARP/VRRP group on this segment)"),
                DropReason::Replay => write!(f, "Replayed advert dropped: {src} on {iface} {detail}"),
                other => write!(f, "Dropped packet ({}) from {src} on {iface}{detail}", other.as_str()),
            },
            Self::DropSummary { window, counts } => {
                write!(f, "Suppressed drop log lines in the last {} s:", window.as_secs())?;
                for (r, c) in counts.nonzero() {
                    write!(f, " {}={c}", r.as_str())?;
                }
                Ok(())
            }
            Self::SameMode { mode, local, partner } => write!(
                f,
                "Both units are in HA mode {mode}: this unit {local} and partner {partner}; one must be first and the other second \
                 (resolving to one active by address until fixed)"
            ),
            Self::BothActiveBlind { partner } => write!(
                f,
                "[CRITICAL] Both units are active: partner {partner} reports active but none of its adverts arrive; \
                 multicast or broadcast is probably filtered between the units: allow it or set ha.unicast = true on both"
            ),
            Self::NoPassword => f.write_str(
                "No HA password set (ha.password): any host on the segment can take the active role; set the same password on both units",
            ),
            Self::LinkLost { iface } => write!(f, "Link lost on HA-check interface {iface}: demoting this unit"),
            Self::LinkRestored { iface } => write!(f, "Link restored on HA-check interface {iface}"),
            Self::TakeoverGone { resigning: true } => {
                f.write_str("Takeover service gone while active: removing shared addresses and handing over to the partner")
            }
            Self::TakeoverGone { resigning: false } => f.write_str(
                "Takeover service gone while active and the partner is not reachable: staying active with the addresses as they are",
            ),
            Self::Overslept { silent } => write!(
                f,
                "This unit sent no advert for {} ms while active (its process stopped, or the machine suspended or \
                 starved): the partner may have taken over; standing by to listen first",
                silent.as_millis()
            ),
            Self::ResignedAfterRestart => f.write_str(
                "The last run of this unit's election ended while it was active (killed or crashed): resigning, so \
                 that the partner takes the role now rather than after the HA timeout",
            ),
            Self::WokeLate { late } => write!(
                f,
                "This unit's takeover timer fired {} ms late (its process stopped, or the machine suspended or \
                 starved): listening one more advert interval before taking over, for adverts that may be waiting",
                late.as_millis()
            ),
            Self::ProfileMismatch { partner, partner_interval, own_interval } => write!(
                f,
                "Partner {partner} advertises every {} ms, this unit every {} ms: set the same ha.profile on both units",
                partner_interval.as_millis(),
                own_interval.as_millis()
            ),
            Self::Pacified { starts, window } => write!(
                f,
                "Pacified: {starts} starts within {} s; taking no part in HA until cleared (duetctl clear-pacified)",
                window.as_secs()
            ),
            Self::PacifiedCleared => f.write_str("Pacified state cleared by the operator"),
            Self::Handover { partner, outcome } => match partner {
                Some(p) => write!(f, "Handover to {p}: {outcome}"),
                None => write!(f, "Handover: {outcome}"),
            },
            Self::Readiness { ready: true, reason, .. } => write!(f, "ready: {reason}"),
            Self::Readiness { ready: false, reason, .. } => {
                write!(f, "not ready to take over from a healthy partner: {reason}")
            }
            Self::Check { name, healthy: true, .. } => write!(f, "tracked check {name} passes again"),
            Self::Check { name, healthy: false, output } if output.is_empty() => {
                write!(f, "tracked check {name} fails")
            }
            Self::Check { name, healthy: false, output } => write!(f, "tracked check {name} fails: {output}"),
            Self::HealthHandover { why } => write!(f, "{why}: handing the role to the partner"),
            Self::HealthKept { why } => f.write_str(why),
            Self::ReadinessStale { .. } => write!(
                f,
                "no readiness report for {} s: no longer holding the unit back",
                crate::readiness::READINESS_STALE.as_secs()
            ),
            Self::WitnessPartnerAlive { partner, since_beat } => write!(
                f,
                "Partner silent, but {partner} holds the witness and beat {} ms ago: it is alive behind a partition; \
                 staying standby (looking again when its beats stop)",
                since_beat.as_millis()
            ),
            Self::WitnessAcquired { decision } => {
                let how = match decision {
                    Decision::AcquiredAbsent => "the key was free",
                    Decision::AcquiredOwn => "the key named this unit",
                    _ => "the partner's beats had stopped",
                };
                write!(f, "Witness acquired ({how}): taking over")
            }
            Self::WitnessFallback { unreachable_for } => write!(
                f,
                "[WARNING] Witness (etcd) unreachable for {} ms, longer than the lease TTL: policy prefer, taking over by \
                 plain CARP; a partition can now leave two actives",
                unreachable_for.as_millis()
            ),
            Self::WitnessHolding { unreachable_for } => write!(
                f,
                "Witness (etcd) unreachable for {} ms: policy required, not taking over without it",
                unreachable_for.as_millis()
            ),
            Self::WitnessStepDown(StepDown::Unconfirmed { unconfirmed_for }) => write!(
                f,
                "No witness beat acknowledged for {} ms and the partner does not hear this unit: stepping down so that \
                 only one unit can be active",
                unconfirmed_for.as_millis()
            ),
            Self::WitnessStepDown(StepDown::PartnerHolds { partner }) => write!(
                f,
                "[CRITICAL] {partner} holds the witness and beats while this unit is active too: stepping down \
                 (dual-active healed)"
            ),
        }
    }
}
