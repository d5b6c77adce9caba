//! The supervisor's OpenTelemetry instruments (O3): each service's starts
//! (the first and every restart) and whether it runs now, read by the
//! exporter from counters the supervisor keeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use duet_runtime::instruments;
use duet_runtime::metrics::Observed;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{ObservableCounter, ObservableGauge};

/// One service's figures.
#[derive(Debug)]
struct Service {
    name: &'static str,
    starts: AtomicU64,
    up: AtomicBool,
}

/// The services' figures and their instruments (dropping them unregisters
/// the callbacks).
#[derive(Debug)]
pub(crate) struct Metrics {
    services: Arc<Vec<Service>>,
    _instruments: (ObservableCounter<u64>, ObservableGauge<u64>),
}

impl Metrics {
    /// Figures for the services `names`, in the supervisor's order.
    pub(crate) fn new(names: Vec<&'static str>) -> Self {
        let services: Arc<Vec<Service>> = Arc::new(
            names
                .into_iter()
                .map(|name| Service { name, starts: AtomicU64::new(0), up: AtomicBool::new(false) })
                .collect(),
        );
        let observed = Observed::new(&services);
        let starts = observed
            .counter(&instruments::UNIT_SERVICE_STARTS, |v, o| {
                for s in v.iter() {
                    o.observe(s.starts.load(Ordering::Relaxed), &[KeyValue::new("service", s.name)]);
                }
            })
            .build();
        let up = observed
            .gauge(&instruments::UNIT_SERVICE_UP, |v, o| {
                for s in v.iter() {
                    o.observe(u64::from(s.up.load(Ordering::Relaxed)), &[KeyValue::new("service", s.name)]);
                }
            })
            .build();
        Self { services, _instruments: (starts, up) }
    }

    /// Service `k` was started.
    pub(crate) fn started(&self, k: usize) {
        if let Some(s) = self.services.get(k) {
            s.starts.fetch_add(1, Ordering::Relaxed);
            s.up.store(true, Ordering::Relaxed);
        }
    }

    /// Service `k` exited or was stopped.
    pub(crate) fn stopped(&self, k: usize) {
        if let Some(s) = self.services.get(k) {
            s.up.store(false, Ordering::Relaxed);
        }
    }
}
