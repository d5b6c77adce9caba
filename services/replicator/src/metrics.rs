//! The replicator's OpenTelemetry instruments (O3): changes sent and
//! received, entries held, lag, drops by reason, resyncs and the link to the
//! partner. All are observable: the exporter's callback reads the shared
//! state; nothing is done per change.

use std::sync::Arc;
use std::sync::atomic::Ordering;

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
        let meter = duet_runtime::telemetry::meter();
        let s = Arc::clone(shared);
        let changes = meter
            .u64_observable_counter("duet.replicator.changes")
            .with_description("Changes (upserts and deletions of flows and persistence entries) sent to and received from the partner")
            .with_callback(move |o| {
                o.observe(s.changes_sent.load(Ordering::Relaxed), &[KeyValue::new("direction", "sent")]);
                o.observe(s.changes_received.load(Ordering::Relaxed), &[KeyValue::new("direction", "received")]);
            })
            .build();
        let s = Arc::clone(shared);
        let drops = meter
            .u64_observable_counter("duet.replicator.drops")
            .with_description("Events and changes lost or refused, by reason")
            .with_callback(move |o| {
                for (reason, n) in s.drops.map() {
                    o.observe(n, &[KeyValue::new("reason", reason)]);
                }
            })
            .build();
        let s = Arc::clone(shared);
        let resyncs = meter
            .u64_observable_counter("duet.replicator.resyncs")
            .with_description("Bulk resyncs sent to the partner")
            .with_callback(move |o| o.observe(lock(&s.send).resyncs, &[]))
            .build();
        let s = Arc::clone(shared);
        let entries = meter
            .u64_observable_gauge("duet.replicator.entries")
            .with_description(
                "Entries held: the active's tracked flows and persistence, or the standby's replicated table",
            )
            .with_callback(move |o| {
                let n = if s.is_active() {
                    let t = lock(&s.tracked);
                    (t.flows.len() + t.persist.len()) as u64
                } else {
                    lock(&s.shadow).len() as u64
                };
                o.observe(n, &[]);
            })
            .build();
        let s = Arc::clone(shared);
        let lag = meter
            .u64_observable_gauge("duet.replicator.lag")
            .with_description("Age in ms of the oldest change the partner has not acknowledged (active unit)")
            .with_unit("ms")
            .with_callback(move |o| o.observe(lock(&s.lag).oldest_ms(), &[]))
            .build();
        let s = Arc::clone(shared);
        let link = meter
            .u64_observable_gauge("duet.replicator.partner_connected")
            .with_description("1 while the replication link to the partner is up")
            .with_callback(move |o| {
                let up = if s.is_active() { lock(&s.send).connected } else { lock(&s.recv).connected };
                o.observe(u64::from(up), &[]);
            })
            .build();
        Self { _counters: [changes, drops, resyncs], _gauges: [entries, lag, link] }
    }
}
