//! The election's OpenTelemetry instruments (O3): adverts sent and
//! received, dropped packets by reason, role changes and the current role
//! (one series per role word, 1 on the current), the timer's lateness;
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
use duet_runtime::instruments;
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
    /// Timer lateness p50, p99, max (µs).
    lateness: [AtomicU64; 3],
    partner_reachable: AtomicU64,
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
    _counters: [ObservableCounter<u64>; 2],
    _gauges: [ObservableGauge<u64>; 3],
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

/// Every role, in code order (1 init ... 5 stopping).
fn roles() -> impl Iterator<Item = Role> {
    (1..=5).filter_map(Role::from_code)
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let values = Arc::new(Values::default());
        let observed = Observed::new(&values);
        let adverts = observed
            .counter(&instruments::ELECTION_ADVERTS, |v, o| {
                observe_directions(o, v.sent.load(Ordering::Relaxed), v.received.load(Ordering::Relaxed));
            })
            .build();
        let dropped = observed
            .counter(&instruments::ELECTION_DROPPED, |v, o| {
                for (k, r) in DropReason::ALL.iter().enumerate() {
                    o.observe(v.drops[k].load(Ordering::Relaxed), &[KeyValue::new("reason", r.as_str())]);
                }
                o.observe(v.queue_full.load(Ordering::Relaxed), &[KeyValue::new("reason", "queue_full")]);
            })
            .build();
        let role = observed
            .gauge(&instruments::ELECTION_ROLE, |v, o| {
                let current = v.role.load(Ordering::Relaxed);
                for r in roles() {
                    o.observe(u64::from(role_code(r) == current), &[KeyValue::new("role", r.as_str())]);
                }
            })
            .build();
        let lateness = observed
            .gauge(&instruments::ELECTION_TIMER_LATENESS, |v, o| {
                for (k, q) in ["p50", "p99", "max"].into_iter().enumerate() {
                    o.observe(v.lateness[k].load(Ordering::Relaxed), &[KeyValue::new("quantile", q)]);
                }
            })
            .build();
        let reachable = observed
            .gauge(&instruments::ELECTION_PARTNER_REACHABLE, |v, o| {
                o.observe(v.partner_reachable.load(Ordering::Relaxed), &[]);
            })
            .build();
        let role_changes = instruments::counter(&instruments::ELECTION_ROLE_CHANGES);
        let beats = observed
            .counter(&instruments::ELECTION_WITNESS_BEATS, |v, o| {
                o.observe(v.beats_sent.load(Ordering::Relaxed), &[KeyValue::new("outcome", "sent")]);
                o.observe(v.beats_acked.load(Ordering::Relaxed), &[KeyValue::new("outcome", "acknowledged")]);
            })
            .build();
        let failures = observed
            .counter(&instruments::ELECTION_WITNESS_FAILURES, |v, o| {
                o.observe(v.witness_failures.load(Ordering::Relaxed), &[]);
            })
            .build();
        let decisions = observed
            .counter(&instruments::ELECTION_WITNESS_DECISIONS, |v, o| {
                for (k, d) in Decision::ALL.iter().enumerate() {
                    o.observe(v.decisions[k].load(Ordering::Relaxed), &[KeyValue::new("reason", d.as_str())]);
                }
            })
            .build();
        let checks = CheckInstruments {
            runs: instruments::counter(&instruments::TRACK_RUNS),
            duration: instruments::histogram(&instruments::TRACK_DURATION, None),
            state: instruments::gauge(&instruments::TRACK_STATE),
        };
        Self {
            values,
            role_changes,
            _counters: [adverts, dropped],
            _gauges: [role, lateness, reachable],
            _witness: (beats, failures, decisions),
            checks,
        }
    }

    /// Copies the core's counters and the timer's lateness.
    pub(crate) fn update(
        &self,
        s: &duet_carp::Status,
        drops: &duet_carp::DropCounters,
        queue_full: u64,
        lateness: duet_runtime::stats::Summary,
    ) {
        let v = &self.values;
        for (k, x) in [lateness.p50, lateness.p99, lateness.max].into_iter().enumerate() {
            v.lateness[k].store(x, Ordering::Relaxed);
        }
        v.sent.store(s.adverts_sent, Ordering::Relaxed);
        v.received.store(s.adverts_received, Ordering::Relaxed);
        v.queue_full.store(queue_full, Ordering::Relaxed);
        for (k, r) in DropReason::ALL.iter().enumerate() {
            v.drops[k].store(drops.get(*r), Ordering::Relaxed);
        }
        v.role.store(role_code(s.role), Ordering::Relaxed);
        v.partner_reachable.store(u64::from(s.partner_reachable), Ordering::Relaxed);
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
        self.role_changes.add(1, &[KeyValue::new("role", to.as_str())]);
    }
}
