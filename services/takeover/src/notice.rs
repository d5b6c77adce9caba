//! The operator's log lines of the takeover service, in one place, worded
//! for the network engineer who runs the pair: what the unit holds, what
//! it gave up and why, what was repaired.

use std::time::Duration;

use duet_proto::common::v1::Role;

const TARGET: &str = "duet::takeover";

/// "Active", "Standby", ... as the election logs them.
pub(crate) fn role_name(r: Role) -> &'static str {
    match r {
        Role::Unspecified => "Unknown",
        Role::Init => "Init",
        Role::Standby => "Standby",
        Role::Active => "Active",
        Role::Pacified => "Pacified",
        Role::Stopping => "Stopping",
    }
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

pub(crate) fn holding(what: &[String], role: Role, applied: Duration, first_garp: Option<Duration>) {
    match first_garp {
        Some(g) => tracing::info!(
            target: TARGET,
            "holding shared addresses: {} (role {}; addresses in place after {} us, first gratuitous ARP {} us after the role event)",
            list(what),
            role_name(role),
            us(applied),
            us(g)
        ),
        None => tracing::info!(
            target: TARGET,
            "holding shared addresses: {} (role {}; addresses in place after {} us)",
            list(what),
            role_name(role),
            us(applied)
        ),
    }
}

pub(crate) fn released(what: &[String], why: &str) {
    tracing::info!(target: TARGET, "released shared addresses: {} ({why})", list(what));
}

pub(crate) fn not_holding(role: Role) {
    tracing::info!(target: TARGET, "not holding the shared addresses (role {})", role_name(role));
}

pub(crate) fn apply_failed(what: &str) {
    tracing::error!(target: TARGET, "cannot apply the role: {what}; retrying on every reconcile pass");
}

pub(crate) fn applied_after_retry(what: &str) {
    tracing::info!(target: TARGET, "applied after a retry: {what}");
}

pub(crate) fn drift_repaired(what: &str) {
    tracing::warn!(target: TARGET, "drift repaired: {what}");
}

pub(crate) fn repair_failed(what: &str, error: &str) {
    tracing::error!(target: TARGET, "drift found but not repaired ({what}): {error}");
}

pub(crate) fn following(url: &str, role: Role, epoch: u64, seq: u64, after: Option<Duration>) {
    match after {
        Some(down) => tracing::info!(
            target: TARGET,
            "role stream from the election at {url} is back after {} ms: role {} (epoch {epoch:016x}, seq {seq})",
            ms(down),
            role_name(role)
        ),
        None => tracing::info!(
            target: TARGET,
            "following the election's role stream at {url}: role {} (epoch {epoch:016x}, seq {seq})",
            role_name(role)
        ),
    }
}

pub(crate) fn new_epoch(previous: u64, epoch: u64) {
    tracing::info!(
        target: TARGET,
        "the election restarted (epoch {previous:016x} -> {epoch:016x}); its current role is the truth"
    );
}

pub(crate) fn gap(missed: u64, seq: u64, role: Role) {
    tracing::warn!(
        target: TARGET,
        "missed {missed} role event(s) before seq {seq}; taking the newest (role {}) as the truth",
        role_name(role)
    );
}

pub(crate) fn stream_lost(why: &str, holding: bool, window: Duration) {
    if holding {
        tracing::warn!(
            target: TARGET,
            "role stream from the election lost ({why}); keeping the shared addresses for at most {} ms unless it returns (fail-safe)",
            ms(window)
        );
    } else {
        tracing::warn!(target: TARGET, "role stream from the election lost ({why}); reconnecting");
    }
}

pub(crate) fn cannot_connect(url: &str, why: &str, first: bool) {
    if first {
        tracing::warn!(target: TARGET, "cannot follow the election's role stream at {url}: {why}; retrying");
    } else {
        tracing::debug!(target: TARGET, "still cannot follow the election's role stream at {url}: {why}");
    }
}

pub(crate) fn failsafe(down: Duration, ha_timeout: Duration, what: &[String]) {
    tracing::error!(
        target: TARGET,
        "fail-safe: no role stream from the election for {} ms (HA timeout {} ms): released shared addresses {} so the partner can take them over without a conflict",
        ms(down),
        ms(ha_timeout),
        list(what)
    );
}

pub(crate) fn reannounce(why: &str, what: &[String]) {
    tracing::info!(target: TARGET, "re-announcing shared addresses ({why}): {}", list(what));
}

pub(crate) fn link_back(ifname: &str) {
    tracing::info!(target: TARGET, "link on {ifname} is up again while active: re-announcing its shared address");
}

pub(crate) fn garp_failed(error: &str) {
    tracing::warn!(target: TARGET, "gratuitous ARP not sent: {error}");
}

pub(crate) fn sysctl_restore_failed(error: &str) {
    tracing::error!(target: TARGET, "cannot restore a kernel parameter changed for the virtual MAC: {error}");
}
