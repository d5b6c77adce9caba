//! The takeover service's OpenTelemetry instruments (O3). Made once, after
//! telemetry is set up, and cloned into whoever records.

use duet_runtime::instruments;
use opentelemetry::metrics::{Counter, Histogram};

/// Every instrument of the service.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    /// Gratuitous ARP frames sent (bursts and refreshes).
    pub garps_sent: Counter<u64>,
    /// Drift repaired (an address or device changed by hand).
    pub drift_repairs: Counter<u64>,
    /// Shared addresses given up because the role stream stayed down (T4).
    pub failsafe_releases: Counter<u64>,
    /// Role event received to first gratuitous ARP sent, in milliseconds.
    pub garp_latency_ms: Histogram<f64>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            garps_sent: instruments::counter(&instruments::TAKEOVER_GARPS),
            drift_repairs: instruments::counter(&instruments::TAKEOVER_DRIFT_REPAIRS),
            failsafe_releases: instruments::counter(&instruments::TAKEOVER_FAILSAFE_RELEASES),
            garp_latency_ms: instruments::histogram(
                &instruments::TAKEOVER_GARP_LATENCY,
                Some(vec![0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 100.0]),
            ),
        }
    }
}
