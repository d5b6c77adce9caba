//! The takeover service's OpenTelemetry instruments (O3). Made once, after
//! telemetry is set up, and cloned into whoever records.

use duet_runtime::telemetry;
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
        let m = telemetry::meter();
        Self {
            garps_sent: m
                .u64_counter("duet.takeover.garps_sent")
                .with_description("Gratuitous ARP frames sent")
                .build(),
            drift_repairs: m
                .u64_counter("duet.takeover.drift_repairs")
                .with_description("Shared addresses or virtual MAC devices put right after a change by hand")
                .build(),
            failsafe_releases: m
                .u64_counter("duet.takeover.failsafe_releases")
                .with_description("Shared addresses given up because the role stream from the election stayed down")
                .build(),
            garp_latency_ms: m
                .f64_histogram("duet.takeover.garp_latency")
                .with_description("From receiving the role event to sending the first gratuitous ARP")
                .with_unit("ms")
                .with_boundaries(vec![0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 100.0])
                .build(),
        }
    }
}
