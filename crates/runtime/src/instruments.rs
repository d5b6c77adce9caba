//! Every OpenTelemetry instrument a duet unit exports, in one catalogue.
//!
//! The services make their instruments from these entries (name,
//! description and unit come from here and nowhere else); the README's
//! list, the shipped dashboard and alert rules are checked against this
//! catalogue by tests, and an end-to-end test checks that a running pair
//! exports every entry with its unit. Names follow OpenTelemetry's
//! conventions: dotted namespaces, no unit in the name, UCUM units
//! (`ms`, `1`) or annotations (`{advert}`) on every instrument.
//!
//! A role is never a bare number: [`ELECTION_ROLE`] is one series per role
//! word (`role` attribute: init, standby, active, pacified, stopping, the
//! words of `duet_carp::Role::as_str` that the logs, duetctl and the hooks
//! use), 1 for the current role and 0 for the others.

/// What kind of instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The word in the README's table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// When a unit exports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// From start.
    Always,
    /// Once the event it counts has happened (a counter made on use).
    OnEvent,
    /// With a `[witness]`.
    Witness,
    /// With `[[track]]` entries.
    Tracks,
    /// With `[hooks]`, once one ran.
    Hooks,
}

/// One instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instrument {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: &'static str,
    pub about: &'static str,
    /// The service that exports it (`duet-election`, ..., `duet-unit`; `*`: every service).
    pub service: &'static str,
    /// Its attributes' keys.
    pub attributes: &'static [&'static str],
    pub when: When,
}

impl Instrument {
    /// Its name as a Prometheus series, as the shipped collector
    /// configuration exports it (`add_metric_suffixes: false`): dots become
    /// underscores, nothing is appended.
    pub fn prometheus(&self) -> String {
        self.name.replace('.', "_")
    }
}

macro_rules! catalogue {
    ($($(#[$doc:meta])* $id:ident = $name:literal, $kind:ident, $unit:literal, $service:literal, [$($attr:literal),*], $when:ident, $about:literal;)*) => {
        $(
            $(#[$doc])*
            pub const $id: Instrument = Instrument {
                name: $name,
                kind: Kind::$kind,
                unit: $unit,
                about: $about,
                service: $service,
                attributes: &[$($attr),*],
                when: When::$when,
            };
        )*
        /// Every instrument, in the README's order.
        pub const ALL: &[Instrument] = &[$($id),*];
    };
}

catalogue! {
    ELECTION_ADVERTS = "duet.election.adverts", Counter, "{advert}", "duet-election", ["direction"], Always,
        "CARP adverts sent and received (valid), by direction";
    ELECTION_DROPPED = "duet.election.packets.dropped", Counter, "{packet}", "duet-election", ["reason"], Always,
        "Received packets dropped, by reason";
    ELECTION_ROLE = "duet.election.role", Gauge, "1", "duet-election", ["role"], Always,
        "The unit's role: 1 on the series of the current role, 0 on the others";
    ELECTION_ROLE_CHANGES = "duet.election.role.changes", Counter, "{change}", "duet-election", ["role"], OnEvent,
        "Role changes, by new role";
    ELECTION_PARTNER_REACHABLE = "duet.election.partner.reachable", Gauge, "1", "duet-election", [], Always,
        "1 while the partner is heard (its adverts or its peer status within the timeout)";
    ELECTION_TIMER_LATENESS = "duet.election.timer.lateness", Gauge, "us", "duet-election", ["quantile"], Always,
        "How late the protocol timer fired lately (p50, p99, max)";
    ELECTION_WITNESS_BEATS = "duet.election.witness.beats", Counter, "{beat}", "duet-election", ["outcome"], Witness,
        "Witness beats (lease-backed key refreshes) sent and acknowledged by etcd";
    ELECTION_WITNESS_FAILURES = "duet.election.witness.failures", Counter, "{failure}", "duet-election", [], Witness,
        "Failed calls to etcd and failed witness sessions";
    ELECTION_WITNESS_DECISIONS = "duet.election.witness.decisions", Counter, "{decision}", "duet-election", ["reason"], Witness,
        "Decisions the witness made, by reason";
    TRACK_RUNS = "duet.track.runs", Counter, "{run}", "duet-election", ["check", "result"], Tracks,
        "Tracked check runs, by check and result (pass, fail)";
    TRACK_DURATION = "duet.track.duration", Histogram, "ms", "duet-election", ["check"], Tracks,
        "How long a tracked check's run took, by check";
    TRACK_STATE = "duet.track.state", Gauge, "1", "duet-election", ["check"], Tracks,
        "A tracked check's state after fall/rise: 1 passing, 0 failing or not run yet, by check";
    TAKEOVER_GARPS = "duet.takeover.garps", Counter, "{frame}", "duet-takeover", [], OnEvent,
        "Gratuitous ARP frames sent";
    TAKEOVER_DRIFT_REPAIRS = "duet.takeover.drift_repairs", Counter, "{repair}", "duet-takeover", [], OnEvent,
        "Shared addresses or virtual MAC devices put right after a change by hand";
    TAKEOVER_FAILSAFE_RELEASES = "duet.takeover.failsafe_releases", Counter, "{release}", "duet-takeover", [], OnEvent,
        "Shared addresses given up because the role stream from the election stayed down";
    TAKEOVER_GARP_LATENCY = "duet.takeover.garp.latency", Histogram, "ms", "duet-takeover", [], OnEvent,
        "From receiving the role event to sending the first gratuitous ARP";
    HOOKS_RUNS = "duet.hooks.runs", Counter, "{run}", "duet-takeover", ["role", "result"], Hooks,
        "Notify hooks run, by role and result (ok, failed, timeout, error)";
    CONFIGSYNC_GENERATION = "duet.configsync.generation", Gauge, "{generation}", "duet-configsync", ["unit"], Always,
        "The configuration generation held: by this unit (unit=local) and by the partner as last heard (unit=partner)";
    CONFIGSYNC_IN_SYNC = "duet.configsync.in_sync", Gauge, "1", "duet-configsync", [], Always,
        "1 while the partner is reachable and holds the same image as this unit";
    CONFIGSYNC_PUSHES = "duet.configsync.pushes", Counter, "{push}", "duet-configsync", ["kind", "result"], OnEvent,
        "Pushes of the image to the partner, by kind (change, full) and result (ok, failed)";
    REPLICATOR_CHANGES = "duet.replicator.changes", Counter, "{change}", "duet-replicator", ["direction"], Always,
        "Changes (upserts and deletions of flows and persistence entries) sent to and received from the partner";
    REPLICATOR_DROPS = "duet.replicator.drops", Counter, "{event}", "duet-replicator", ["reason"], Always,
        "Events and changes lost or refused, by reason";
    REPLICATOR_RESYNCS = "duet.replicator.resyncs", Counter, "{resync}", "duet-replicator", [], Always,
        "Bulk resyncs sent to the partner";
    REPLICATOR_ENTRIES = "duet.replicator.entries", Gauge, "{entry}", "duet-replicator", [], Always,
        "Entries held: the active's tracked flows and persistence, or the standby's replicated table";
    REPLICATOR_LAG = "duet.replicator.lag", Gauge, "ms", "duet-replicator", [], Always,
        "Age of the oldest change the partner has not acknowledged (active unit)";
    REPLICATOR_LINK = "duet.replicator.link.up", Gauge, "1", "duet-replicator", [], Always,
        "1 while the replication link to the partner is up";
    UNIT_SERVICE_STARTS = "duet.unit.service.starts", Counter, "{start}", "duet-unit", ["service"], Always,
        "Starts of each service by the unit supervisor (the first and every restart)";
    UNIT_SERVICE_UP = "duet.unit.service.up", Gauge, "1", "duet-unit", ["service"], Always,
        "1 while the supervisor has the service running";
    ADMIN_REFUSED = "duet.admin.refused", Counter, "{call}", "*", ["reason"], Always,
        "Calls to the unit's gRPC API refused, by reason (no_token, unknown_token, not_allowed)";
}

/// A counter of `i` (name, description and unit from the catalogue).
pub fn counter(i: &Instrument) -> opentelemetry::metrics::Counter<u64> {
    crate::telemetry::meter().u64_counter(i.name).with_description(i.about).with_unit(i.unit).build()
}

/// A gauge of `i` whose value is recorded when it changes.
pub fn gauge(i: &Instrument) -> opentelemetry::metrics::Gauge<u64> {
    crate::telemetry::meter().u64_gauge(i.name).with_description(i.about).with_unit(i.unit).build()
}

/// A histogram of `i` with bucket `boundaries` (none: the SDK's).
pub fn histogram(i: &Instrument, boundaries: Option<Vec<f64>>) -> opentelemetry::metrics::Histogram<f64> {
    let m = crate::telemetry::meter();
    let b = m.f64_histogram(i.name).with_description(i.about).with_unit(i.unit);
    match boundaries {
        Some(v) => b.with_boundaries(v).build(),
        None => b.build(),
    }
}

/// The README's table of instruments (between its `<!-- instruments -->`
/// markers), made from the catalogue.
pub fn markdown_table() -> String {
    let mut t = String::from(
        "| instrument | kind | unit | attributes | service | exported | what |\n|---|---|---|---|---|---|---|\n",
    );
    for i in ALL {
        let when = match i.when {
            When::Always => "always",
            When::OnEvent => "once it happened",
            When::Witness => "with a witness",
            When::Tracks => "with tracked checks",
            When::Hooks => "with hooks",
        };
        t.push_str(&format!(
            "| `{}` | {} | `{}` | {} | {} | {when} | {} |\n",
            i.name,
            i.kind.as_str(),
            i.unit,
            i.attributes.join(", "),
            i.service,
            i.about
        ));
    }
    t
}

/// The catalogue entry named `name`.
pub fn find(name: &str) -> Option<&'static Instrument> {
    ALL.iter().find(|i| i.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_instrument_has_a_unit() {
        for (k, i) in ALL.iter().enumerate() {
            assert!(!i.unit.is_empty(), "{} has no unit", i.name);
            assert!(ALL[..k].iter().all(|o| o.name != i.name), "{} twice", i.name);
            assert!(i.name.starts_with("duet.") && !i.name.contains(' '), "{}", i.name);
        }
        assert_eq!(find("duet.election.role").map(Instrument::prometheus).as_deref(), Some("duet_election_role"));
    }

    /// The README lists exactly the catalogue (regenerate the table with
    /// `DUET_WRITE_README=1 cargo test -p duet-runtime readme`).
    #[test]
    fn the_readme_lists_every_instrument() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).expect("the README");
        let (open, close) = ("<!-- instruments -->\n", "<!-- /instruments -->");
        let a = readme.find(open).expect("the README's instruments marker") + open.len();
        let b = readme[a..].find(close).expect("the closing marker") + a;
        let want = markdown_table();
        if readme[a..b] != want && std::env::var_os("DUET_WRITE_README").is_some() {
            std::fs::write(path, format!("{}{want}{}", &readme[..a], &readme[b..])).expect("writing the README");
            return;
        }
        assert_eq!(readme[a..b], want, "the README's instrument table is out of date (see this test's doc)");
    }
}
