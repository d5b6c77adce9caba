//! What the core asks the driver to do, what the driver answers, and the
//! status the core shows.

use std::time::Duration;

use duet_carp::{Role, Time};

use crate::notice::Notice;
use crate::plan::Repair;

/// How to announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announce {
    /// A burst (the first frame at once, the rest on timers); `supersede`
    /// replaces the bursts still running.
    Burst { supersede: bool },
    /// One frame each (the refresh).
    Once,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// R4: ask the replicator whether the partner's state is installed,
    /// waiting at most `timeout`; answer with [`Takeover::handle_state_answer`](super::Takeover::handle_state_answer).
    WaitForState { timeout: Duration, trace: String },
    /// The fast path: every interface's netlink work at once (on the
    /// virtual MAC device of `vmac_vhid` when set, with the parent's kernel
    /// parameters set first), then the first gratuitous ARP of every
    /// interface held, the rest of the bursts on timers. Answer with
    /// [`Takeover::handle_held`](super::Takeover::handle_held).
    HoldAll { vmac_vhid: Option<u8> },
    /// Stop every announcement, give every shared address up (and delete
    /// the virtual MAC devices of `vmac_vhid`), put the kernel parameters
    /// back. Answer with [`Takeover::handle_released`](super::Takeover::handle_released).
    ReleaseAll { vmac_vhid: Option<u8> },
    /// Look at interface `iface` (and its virtual MAC device of
    /// `vmac_vhid`); answer with [`Takeover::handle_observed`](super::Takeover::handle_observed).
    Observe { iface: usize, vmac_vhid: Option<u8> },
    /// Make `repairs` on interface `iface`, in order; when `hold` with a
    /// virtual MAC, also set the parent's kernel parameters and bind the
    /// ARP socket to the device. Answer with [`Takeover::handle_repaired`](super::Takeover::handle_repaired).
    Repair { iface: usize, repairs: Vec<Repair>, hold: bool, vmac_vhid: Option<u8> },
    /// Put the kernel parameters changed for the virtual MAC back, if any
    /// are in force.
    RestoreParameters,
    /// Gratuitous ARPs for the shared addresses of `ifaces`.
    Announce { ifaces: Vec<usize>, how: Announce },
    /// Drop the role stream and open a new one.
    Reconnect,
    /// Tell the election what is applied (ReportApplied).
    Report(Report),
    /// The service's health changed.
    Health { serving: bool },
    /// A line for the operator.
    Notice(Notice),
    /// O3: the span of a role applied by holding the addresses, for the
    /// role change's trace.
    Trace(HoldSpan),
}

/// How a role that holds the addresses was applied, as a span of the role
/// change's trace: from the event's arrival to the first gratuitous ARP
/// (or the addresses in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HoldSpan {
    pub trace: String,
    pub role: Role,
    pub received: Time,
    pub started: Time,
    pub parameters_set: Time,
    pub in_place: Time,
    pub first_garp: Option<Time>,
    pub state_installed: bool,
    pub state_wait: Duration,
    pub addresses: Vec<String>,
}

/// One ReportApplied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub epoch: u64,
    pub seq: u64,
    pub role: Option<Role>,
    pub addresses_at: Option<Time>,
    pub first_garp_at: Option<Time>,
    pub ok: bool,
    pub error: String,
    pub state_installed: bool,
    pub state_wait: Duration,
    /// The service is stopping: send it now and wait for it.
    pub last: bool,
}

/// What became of one interface in a hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The shared address is in place.
    pub held: bool,
    /// What went wrong, if anything (held or not).
    pub error: Option<String>,
}

/// The answer to [`Action::HoldAll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// When the work started, when the kernel parameters were set, and
    /// when every address was in place.
    pub started: Time,
    pub parameters_set: Time,
    pub in_place: Time,
    /// When the first gratuitous ARP left, if one did.
    pub first_garp: Option<Time>,
    /// Per interface.
    pub ifaces: Vec<Applied>,
}

/// The answer to [`Action::ReleaseAll`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Released {
    /// What was actually removed ("198.18.0.10/24 on eth0").
    pub removed: Vec<String>,
    /// Per interface, the first error.
    pub errors: Vec<Option<String>>,
}

/// A snapshot for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub role: Option<Role>,
    pub holding: bool,
    pub following: bool,
    /// Epoch and sequence number of the last message applied.
    pub position: Option<(u64, u64)>,
    pub vhid: u8,
    pub role_received_at: Option<Time>,
    pub addresses_at: Option<Time>,
    pub first_garp_at: Option<Time>,
    pub garp_latency: Option<Duration>,
    pub drift_repairs: u64,
    pub recent_repairs: Vec<(Time, String)>,
    pub stream_lost_at: Option<Time>,
    pub failsafe_releases: u64,
    pub failsafe_after: Duration,
    pub last_error: String,
    pub interface_errors: Vec<String>,
}
