//! Observable instruments over a service's shared state: each one reads the
//! state when the exporter asks, so nothing is done per event. The services
//! make theirs with [`Observed`]; plain counters come from
//! [`crate::telemetry::meter`] directly.

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, AsyncInstrumentBuilder, Meter, ObservableCounter, ObservableGauge};

/// What an instrument reports from the state `S`: its value or values,
/// with their attributes.
pub trait Reading<S, T>: Fn(&S, &dyn AsyncInstrument<T>) + Send + Sync + 'static {}

impl<S, T, F: Fn(&S, &dyn AsyncInstrument<T>) + Send + Sync + 'static> Reading<S, T> for F {}

/// One method of [`Observed`] per kind of instrument: the catalogue's
/// instrument `i` (its name, description and unit,
/// [`crate::instruments`]) reads the state with `r`; finish it with
/// `build()`.
macro_rules! instruments {
    ($($(#[$doc:meta])* $method:ident => $make:ident, $instrument:ident<$t:ty>;)*) => {$(
        $(#[$doc])*
        pub fn $method(
            &self,
            i: &crate::instruments::Instrument,
            r: impl Reading<S, $t>,
        ) -> AsyncInstrumentBuilder<'_, $instrument<$t>, $t> {
            self.meter.$make(i.name).with_description(i.about).with_unit(i.unit).with_callback(self.reading(r))
        }
    )*};
}

/// Makes observable instruments over `S` (with duet's meter, so after
/// telemetry is set up). Dropping an instrument unregisters its callback.
#[derive(Debug)]
pub struct Observed<S> {
    meter: Meter,
    state: Arc<S>,
}

impl<S: Send + Sync + 'static> Observed<S> {
    /// Instruments that read `state`.
    pub fn new(state: &Arc<S>) -> Self {
        Self { meter: crate::telemetry::meter(), state: Arc::clone(state) }
    }

    instruments! {
        /// A counter `name`.
        counter => u64_observable_counter, ObservableCounter<u64>;
        /// A gauge `name`.
        gauge => u64_observable_gauge, ObservableGauge<u64>;
    }

    /// The meter, for instruments that are not observed.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The callback: `r` on the state.
    fn reading<T>(&self, r: impl Reading<S, T>) -> impl Fn(&dyn AsyncInstrument<T>) + Send + Sync + 'static {
        let s = Arc::clone(&self.state);
        move |o| r(&s, o)
    }
}

/// Reports what was sent and what was received, as the `direction`
/// attribute (`sent`, `received`) of one counter.
pub fn observe_directions(o: &dyn AsyncInstrument<u64>, sent: u64, received: u64) {
    o.observe(sent, &[KeyValue::new("direction", "sent")]);
    o.observe(received, &[KeyValue::new("direction", "received")]);
}
