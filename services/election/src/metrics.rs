//! The election's OpenTelemetry instruments (O3): adverts sent and
//! received, dropped packets by reason, role changes and the current role;
//! with a witness (E14), its beats (lease refreshes), failures and
//! decisions by reason; with tracked checks (E16), each check's runs by
//! result, their duration and its state.
//!
//! The core keeps the counters; the driver copies them here once a second,
//! and observable instruments report the copies when the exporter asks. No
//! work is done per packet.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use duet_carp::witness::Decision;
use duet_carp::{DropReason, Role};
use duet_runtime::metrics::{Observed, observe_directions};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, ObservableCounter, ObservableGauge};

#[derive(Debug, Default)]
struct Values {
    sent: AtomicU64,
    received: AtomicU64,
    queue_full: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    role: AtomicI64,
    beats_sent: AtomicU64,
    beats_acked: AtomicU64,
    witness_failures: AtomicU64,
    decisions: [AtomicU64; Decision::ALL.len()],
}

/// The instruments; dropping them unregisters the callbacks.
#[derive(Debug)]
pub(crate) struct Metrics {
    values: Arc<Values>,
    role_changes: Counter<u64>,
    _observers: (ObservableCounter<u64>, ObservableCounter<u64>, ObservableGauge<i64>),
    _witness: (ObservableCounter<u64>, ObservableCounter<u64>, ObservableCounter<u64>),
    checks: CheckInstruments,
}

/// E16: the tracked checks' instruments.
#[derive(Debug)]
struct CheckInstruments {
    runs: Counter<u64>,
    duration: Histogram<f64>,
    state: Gauge<u64>,
}

fn role_code(r: Role) -> i64 {
    i64::from(r.code())
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let values = Arc::new(Values::default());
        let observed = Observed::new(&values);
        let adverts = observed
            .counter("duet.election.adverts", "CARP adverts sent and received (valid)", |v, o| {
                observe_directions(o, v.sent.load(Ordering::Relaxed), v.received.load(Ordering::Relaxed));
            })
            .build();
        let dropped = observed
            .counter("duet.election.packets.dropped", "Received packets dropped, by reason", |v, o| {
                for (k, r) in DropReason::ALL.iter().enumerate() {
                    o.observe(v.drops[k].load(Ordering::Relaxed), &[KeyValue::new("reason", r.as_str())]);
                }
                o.observe(v.queue_full.load(Ordering::Relaxed), &[KeyValue::new("reason", "queue_full")]);
            })
            .build();
        let role = observed
            .gauge_i64(
                "duet.election.role",
                "Current role: 1 init, 2 standby, 3 active, 4 pacified, 5 stopping",
                |v, o| o.observe(v.role.load(Ordering::Relaxed), &[]),
            )
            .build();
        let role_changes = observed
            .meter()
            .u64_counter("duet.election.role_changes")
            .with_description("Role changes, by new role")
            .build();
        let beats = observed
            .counter(
                "duet.election.witness.beats",
                "Witness beats (lease-backed key refreshes) sent and acknowledged by etcd",
                |v, o| {
                    o.observe(v.beats_sent.load(Ordering::Relaxed), &[KeyValue::new("outcome", "sent")]);
                    o.observe(v.beats_acked.load(Ordering::Relaxed), &[KeyValue::new("outcome", "acknowledged")]);
                },
            )
            .build();
        let failures = observed
            .counter("duet.election.witness.failures", "Failed calls to etcd and failed witness sessions", |v, o| {
                o.observe(v.witness_failures.load(Ordering::Relaxed), &[]);
            })
            .build();
        let decisions = observed
            .counter("duet.election.witness.decisions", "Decisions the witness made, by reason", |v, o| {
                for (k, d) in Decision::ALL.iter().enumerate() {
                    o.observe(v.decisions[k].load(Ordering::Relaxed), &[KeyValue::new("reason", d.as_str())]);
                }
            })
            .build();
        let meter = observed.meter();
        let checks = CheckInstruments {
            runs: meter
                .u64_counter("duet.track.runs")
                .with_description("Tracked check runs, by check and result (pass, fail)")
                .with_unit("{run}")
                .build(),
            duration: meter
                .f64_histogram("duet.track.duration")
                .with_description("How long a tracked check's run took, by check")
                .with_unit("ms")
                .build(),
            state: meter
                .u64_gauge("duet.track.state")
                .with_description(
                    "A tracked check's state after fall/rise: 1 passing, 0 failing or not run yet, by check",
                )
                .with_unit("1")
                .build(),
        };
        Self {
            values,
            role_changes,
            _observers: (adverts, dropped, role),
            _witness: (beats, failures, decisions),
            checks,
        }
    }

    /// Copies the core's counters.
    pub(crate) fn update(&self, s: &duet_carp::Status, drops: &duet_carp::DropCounters, queue_full: u64) {
        let v = &self.values;
        v.sent.store(s.adverts_sent, Ordering::Relaxed);
        v.received.store(s.adverts_received, Ordering::Relaxed);
        v.queue_full.store(queue_full, Ordering::Relaxed);
        for (k, r) in DropReason::ALL.iter().enumerate() {
            v.drops[k].store(drops.get(*r), Ordering::Relaxed);
        }
        v.role.store(role_code(s.role), Ordering::Relaxed);
        if let Some(w) = &s.witness {
            v.beats_sent.store(w.beats_sent, Ordering::Relaxed);
            v.beats_acked.store(w.beats_acked, Ordering::Relaxed);
            v.witness_failures.store(w.failures, Ordering::Relaxed);
            for (k, d) in Decision::ALL.iter().enumerate() {
                let n = w.decisions.iter().find(|(x, _)| x == d).map_or(0, |(_, n)| *n);
                v.decisions[k].store(n, Ordering::Relaxed);
            }
        }
    }

    /// A tracked check ran; `passing` is its state after fall/rise.
    pub(crate) fn check(&self, r: &crate::track::CheckResult, passing: bool) {
        let name = KeyValue::new("check", r.name.clone());
        let result = KeyValue::new("result", if r.ok { "pass" } else { "fail" });
        self.checks.runs.add(1, &[name.clone(), result]);
        self.checks.duration.record(r.took.as_secs_f64() * 1e3, std::slice::from_ref(&name));
        self.checks.state.record(u64::from(passing), &[name]);
    }

    /// A role change happened.
    pub(crate) fn role_changed(&self, to: Role) {
        self.values.role.store(role_code(to), Ordering::Relaxed);
        self.role_changes.add(1, &[KeyValue::new("role", to.display_name())]);
    }
}
