//! The operator's log lines of the takeover service, in one place, worded
//! for the network engineer who runs the pair: what the unit holds, what
//! it gave up and why, what was repaired.
//!
//! The core says what happened as a [`Notice`]; [`log`] writes it. The
//! kernel-side helpers (gratuitous ARP, kernel parameters) have their own
//! two lines at the end.

use std::time::Duration;

use duet_carp::Role;

const TARGET: &str = "duet::takeover";

/// Something the operator should read in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The shared addresses are held (T1): how long the netlink work took
    /// and, when a gratuitous ARP left, how long after the role event.
    Holding { what: Vec<String>, role: Role, applied: Duration, first_garp: Option<Duration> },
    /// Where the time between the role event and the addresses went.
    HoldTiming { waited: Duration, parameters: Duration, netlink: Duration },
    /// The shared addresses were given up (`why`: "role Standby", ...).
    Released { what: Vec<String>, why: String },
    /// The first role says release and nothing was held.
    NotHolding { role: Role },
    /// Applying the role failed on some interface.
    ApplyFailed { what: String },
    /// A failed apply went through on a later pass.
    AppliedAfterRetry { what: String },
    /// Drift (a change by hand) was repaired; counted.
    DriftRepaired { what: String },
    /// Drift was found and could not be repaired.
    RepairFailed { what: String, error: String },
    /// The first message of a stream was applied (`after`: the stream had
    /// been down this long).
    Following { url: String, role: Role, epoch: u64, seq: u64, after: Option<Duration> },
    /// Another election process (a new epoch).
    NewEpoch { previous: u64, epoch: u64 },
    /// Role events were missed; the newest is the truth.
    Gap { missed: u64, seq: u64, role: Role },
    /// A message seen already.
    Duplicate { epoch: u64, seq: u64 },
    /// The stream followed was lost.
    StreamLost { why: String, holding: bool, window: Duration },
    /// A stream ended before its first message.
    StreamEndedEarly { why: String },
    /// Opening a stream failed (`first`: the first failure in a row).
    CannotConnect { url: String, why: String, first: bool },
    /// T4: the fail-safe gave the addresses up.
    Failsafe { down: Duration, ha_timeout: Duration, what: Vec<String> },
    /// The fail-safe window passed before any role arrived; nothing was held.
    NoRoleYet { down: Duration },
    /// New HA timing from the election: the fail-safe window follows.
    ParametersChanged { ha_timeout: Duration, advert_interval: Duration, window: Duration },
    /// A fresh burst after an active-active episode (T3).
    Reannounce { why: String, what: Vec<String> },
    /// A held interface's link is back: announced again.
    LinkBack { ifname: String },
    /// R4: the replicator did not confirm the state in time.
    StateNotConfirmed { waited: Duration },
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn us(d: Duration) -> u128 {
    d.as_micros()
}

/// "198.18.0.10/24 on eth0, 10.0.0.10/24 on eth1".
pub(crate) fn list(items: &[String]) -> String {
    if items.is_empty() { "none configured".into() } else { items.join(", ") }
}

/// Writes `n` to the log.
pub(crate) fn log(n: &Notice) {
    match n {
        Notice::Holding { what, role, applied, first_garp: Some(g) } => tracing::info!(
            target: TARGET,
            "holding shared addresses: {} (role {}; addresses in place after {} us, first gratuitous ARP {} us after the role event)",
            list(what),
            role.display_name(),
            us(*applied),
            us(*g)
        ),
        Notice::Holding { what, role, applied, first_garp: None } => tracing::info!(
            target: TARGET,
            "holding shared addresses: {} (role {}; addresses in place after {} us)",
            list(what),
            role.display_name(),
            us(*applied)
        ),
        Notice::HoldTiming { waited, parameters, netlink } => tracing::debug!(
            target: TARGET,
            waited_us = waited.as_micros(),
            parameters_us = parameters.as_micros(),
            netlink_us = netlink.as_micros(),
            "takeover timing"
        ),
        Notice::Released { what, why } => {
            tracing::info!(target: TARGET, "released shared addresses: {} ({why})", list(what));
        }
        Notice::NotHolding { role } => {
            tracing::info!(target: TARGET, "not holding the shared addresses (role {})", role.display_name());
        }
        Notice::ApplyFailed { what } => {
            tracing::error!(target: TARGET, "cannot apply the role: {what}; retrying on every reconcile pass");
        }
        Notice::AppliedAfterRetry { what } => tracing::info!(target: TARGET, "applied after a retry: {what}"),
        Notice::DriftRepaired { what } => tracing::warn!(target: TARGET, "drift repaired: {what}"),
        Notice::RepairFailed { what, error } => {
            tracing::error!(target: TARGET, "drift found but not repaired ({what}): {error}");
        }
        Notice::Following { url, role, epoch, seq, after: Some(down) } => tracing::info!(
            target: TARGET,
            "role stream from the election at {url} is back after {} ms: role {} (epoch {epoch:016x}, seq {seq})",
            ms(*down),
            role.display_name()
        ),
        Notice::Following { url, role, epoch, seq, after: None } => tracing::info!(
            target: TARGET,
            "following the election's role stream at {url}: role {} (epoch {epoch:016x}, seq {seq})",
            role.display_name()
        ),
        Notice::NewEpoch { previous, epoch } => tracing::info!(
            target: TARGET,
            "the election restarted (epoch {previous:016x} -> {epoch:016x}); its current role is the truth"
        ),
        Notice::Gap { missed, seq, role } => tracing::warn!(
            target: TARGET,
            "missed {missed} role event(s) before seq {seq}; taking the newest (role {}) as the truth",
            role.display_name()
        ),
        Notice::Duplicate { epoch, seq } => {
            tracing::debug!(target: TARGET, epoch, seq, "role event seen already; ignored");
        }
        Notice::StreamLost { why, holding: true, window } => tracing::warn!(
            target: TARGET,
            "role stream from the election lost ({why}); keeping the shared addresses for at most {} ms unless it returns (fail-safe)",
            ms(*window)
        ),
        Notice::StreamLost { why, holding: false, .. } => {
            tracing::warn!(target: TARGET, "role stream from the election lost ({why}); reconnecting");
        }
        Notice::StreamEndedEarly { why } => {
            tracing::debug!(target: TARGET, "role stream ended before its first message: {why}");
        }
        Notice::CannotConnect { url, why, first: true } => {
            tracing::warn!(target: TARGET, "cannot follow the election's role stream at {url}: {why}; retrying");
        }
        Notice::CannotConnect { url, why, first: false } => {
            tracing::debug!(target: TARGET, "still cannot follow the election's role stream at {url}: {why}");
        }
        Notice::Failsafe { down, ha_timeout, what } => tracing::error!(
            target: TARGET,
            "fail-safe: no role stream from the election for {} ms (HA timeout {} ms): released shared addresses {} so the partner can take them over without a conflict",
            ms(*down),
            ms(*ha_timeout),
            list(what)
        ),
        Notice::NoRoleYet { down } => tracing::info!(
            target: TARGET,
            "no role from the election after {} ms: the shared addresses are not held until it says so",
            ms(*down)
        ),
        Notice::ParametersChanged { ha_timeout, advert_interval, window } => tracing::info!(
            target: TARGET,
            "HA timeout {} ms, adverts every {} ms: the fail-safe gives the addresses up after {} ms without the role stream",
            ms(*ha_timeout),
            ms(*advert_interval),
            ms(*window)
        ),
        Notice::Reannounce { why, what } => {
            tracing::info!(target: TARGET, "re-announcing shared addresses ({why}): {}", list(what));
        }
        Notice::LinkBack { ifname } => tracing::info!(
            target: TARGET,
            "link on {ifname} is up again while active: re-announcing its shared address"
        ),
        Notice::StateNotConfirmed { waited } => tracing::warn!(
            target: TARGET,
            waited_ms = waited.as_millis() as u64,
            "the replicator did not confirm the partner's state installed in time: taking the addresses anyway"
        ),
    }
}

pub(crate) fn garp_failed(error: &str) {
    tracing::warn!(target: TARGET, "gratuitous ARP not sent: {error}");
}

pub(crate) fn sysctl_restore_failed(error: &str) {
    tracing::error!(target: TARGET, "cannot restore a kernel parameter changed for the virtual MAC: {error}");
}
