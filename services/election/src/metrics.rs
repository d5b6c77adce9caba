//! The election's OpenTelemetry instruments (O3): adverts sent and
//! received, dropped packets by reason, role changes and the current role.
//!
//! The core keeps the counters; the driver copies them here once a second,
//! and observable instruments report the copies when the exporter asks. No
//! work is done per packet.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use duet_carp::{DropReason, Role};
use duet_runtime::metrics::{Observed, observe_directions};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, ObservableCounter, ObservableGauge};

#[derive(Debug, Default)]
struct Values {
    sent: AtomicU64,
    received: AtomicU64,
    queue_full: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    role: AtomicI64,
}

/// The instruments; dropping them unregisters the callbacks.
#[derive(Debug)]
pub(crate) struct Metrics {
    values: Arc<Values>,
    role_changes: Counter<u64>,
    _observers: (ObservableCounter<u64>, ObservableCounter<u64>, ObservableGauge<i64>),
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
        Self { values, role_changes, _observers: (adverts, dropped, role) }
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
    }

    /// A role change happened.
    pub(crate) fn role_changed(&self, to: Role) {
        self.values.role.store(role_code(to), Ordering::Relaxed);
        self.role_changes.add(1, &[KeyValue::new("role", to.display_name())]);
    }
}
