//! configsync's OpenTelemetry instruments (O3): the generation held here
//! and by the partner, whether the two are in sync, and the pushes by kind
//! and result. The gauges read the shared state when the exporter asks.

use std::sync::Arc;

use duet_runtime::instruments;
use duet_runtime::metrics::Observed;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, ObservableGauge};

use crate::{Shared, lock};

/// The instruments; dropping them unregisters the callbacks.
#[derive(Debug)]
pub(crate) struct Metrics {
    _gauges: [ObservableGauge<u64>; 2],
}

impl Metrics {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        let observed = Observed::new(shared);
        let generation = observed
            .gauge(&instruments::CONFIGSYNC_GENERATION, |s, o| {
                o.observe(lock(&s.held).0, &[KeyValue::new("unit", "local")]);
                if let Some(g) = lock(&s.partner).generation {
                    o.observe(g, &[KeyValue::new("unit", "partner")]);
                }
            })
            .build();
        let in_sync = observed
            .gauge(&instruments::CONFIGSYNC_IN_SYNC, |s, o| {
                let (g, h) = lock(&s.held).clone();
                o.observe(u64::from(lock(&s.partner).in_sync(g, &h)), &[]);
            })
            .build();
        Self { _gauges: [generation, in_sync] }
    }
}

/// The pushes' counter (made on the pusher's first push).
pub(crate) fn pushes() -> Counter<u64> {
    instruments::counter(&instruments::CONFIGSYNC_PUSHES)
}

/// Counts one push of `kind` (`change` or `full`) that went through or not.
pub(crate) fn pushed(c: &Counter<u64>, full: bool, ok: bool) {
    let kind = KeyValue::new("kind", if full { "full" } else { "change" });
    c.add(1, &[kind, KeyValue::new("result", if ok { "ok" } else { "failed" })]);
}
