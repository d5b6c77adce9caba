//! The replicator's OpenTelemetry instruments (O3): changes sent and
//! received, entries held, lag, drops by reason, resyncs and the link to the
//! partner. All are observable: the exporter's callback reads the shared
//! state; nothing is done per change.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use duet_runtime::instruments;
use duet_runtime::metrics::{Observed, observe_directions};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{ObservableCounter, ObservableGauge};

use crate::state::{Shared, lock};

/// The instruments; dropping them unregisters the callbacks.
#[derive(Debug)]
pub(crate) struct Metrics {
    _counters: [ObservableCounter<u64>; 3],
    _gauges: [ObservableGauge<u64>; 3],
}

impl Metrics {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        let observed = Observed::new(shared);
        let changes = observed
            .counter(&instruments::REPLICATOR_CHANGES, |s, o| {
                observe_directions(
                    o,
                    s.changes_sent.load(Ordering::Relaxed),
                    s.changes_received.load(Ordering::Relaxed),
                );
            })
            .build();
        let drops = observed
            .counter(&instruments::REPLICATOR_DROPS, |s, o| {
                for (reason, n) in s.drops.map(s.tls.as_ref()) {
                    o.observe(n, &[KeyValue::new("reason", reason)]);
                }
            })
            .build();
        let resyncs = observed
            .counter(&instruments::REPLICATOR_RESYNCS, |s, o| {
                o.observe(lock(&s.send).resyncs, &[]);
            })
            .build();
        let entries = observed
            .gauge(&instruments::REPLICATOR_ENTRIES, |s, o| {
                let n = if s.is_active() {
                    let t = lock(&s.tracked);
                    (t.flows.len() + t.persist.len()) as u64
                } else {
                    lock(&s.shadow).len() as u64
                };
                o.observe(n, &[]);
            })
            .build();
        let lag = observed.gauge(&instruments::REPLICATOR_LAG, |s, o| o.observe(lock(&s.lag).oldest_ms(), &[])).build();
        let link = observed
            .gauge(&instruments::REPLICATOR_LINK, |s, o| {
                let up = if s.is_active() { lock(&s.send).connected } else { lock(&s.recv).connected };
                o.observe(u64::from(up), &[]);
            })
            .build();
        Self { _counters: [changes, drops, resyncs], _gauges: [entries, lag, link] }
    }
}
