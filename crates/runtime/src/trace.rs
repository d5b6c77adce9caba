//! The stories the units tell as traces (O3): one trace per role change
//! (the election's decision, the takeover applying it, the replicator's
//! state) and one per configuration commit (commit, push, the partner
//! adopting it, each unit's election and data plane applying it).
//!
//! Spans are made with OpenTelemetry's API, with the exact times the
//! services measured (a takeover knows when the role event arrived, when
//! the addresses were in place and when the first gratuitous ARP left), and
//! cross processes as W3C `traceparent` strings: in gRPC metadata for a
//! call, in the message itself for a stream that carries many events (the
//! role stream, the generations stream). Without an exporter every span is
//! a no-op and every `traceparent` is empty.

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The metadata key and the field name of a W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

fn tracer() -> global::BoxedTracer {
    global::tracer(crate::telemetry::SCOPE_NAME)
}

/// The context `traceparent` names (none: a new trace).
fn parent(traceparent: &str) -> Context {
    if traceparent.is_empty() {
        return Context::new();
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The `traceparent` of `cx`'s span ("" when it is not sampled or a no-op).
fn traceparent_of(cx: &Context) -> String {
    if !cx.span().span_context().is_valid() {
        return String::new();
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT).unwrap_or_default()
}

/// A span that is running: ended by [`Running::end`] (or on drop, then).
#[derive(Debug)]
pub struct Running {
    cx: Context,
}

impl Running {
    /// Its `traceparent`, for what it causes elsewhere.
    pub fn traceparent(&self) -> String {
        traceparent_of(&self.cx)
    }

    /// Adds attributes.
    pub fn set(&self, attrs: Vec<KeyValue>) {
        self.cx.span().set_attributes(attrs);
    }

    /// Ends the span now.
    pub fn end(self) {
        self.cx.span().end();
    }
}

/// Starts the span `name` now, under `parent` (a `traceparent`; empty: a
/// new trace).
pub fn start(name: &'static str, parent_tp: &str, kind: SpanKind, attrs: Vec<KeyValue>) -> Running {
    let p = parent(parent_tp);
    let span = tracer().span_builder(name).with_kind(kind).with_attributes(attrs).start_with_context(&tracer(), &p);
    Running { cx: p.with_span(span) }
}

/// Records the span `name` that ran from `start` to `end` under `parent`;
/// returns its `traceparent`.
pub fn record(name: &'static str, parent_tp: &str, start: SystemTime, end: SystemTime, attrs: Vec<KeyValue>) -> String {
    let p = parent(parent_tp);
    let span = tracer()
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attrs)
        .start_with_context(&tracer(), &p);
    let cx = p.with_span(span);
    let tp = traceparent_of(&cx);
    cx.span().end_with_timestamp(end.max(start));
    tp
}

/// Puts `traceparent` into a call's metadata (nothing when it is empty).
pub fn inject(traceparent: &str, md: &mut tonic::metadata::MetadataMap) {
    if let Ok(v) = traceparent.parse()
        && !traceparent.is_empty()
    {
        md.insert(TRACEPARENT, v);
    }
}

/// The `traceparent` a call carries ("" when none).
pub fn extract(md: &tonic::metadata::MetadataMap) -> String {
    md.get(TRACEPARENT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_spans_are_no_ops_and_carry_nothing() {
        let r = start("test", "", SpanKind::Internal, vec![]);
        assert_eq!(r.traceparent(), "");
        r.end();
        let now = SystemTime::now();
        assert_eq!(record("test", "", now, now, vec![]), "");
        let mut md = tonic::metadata::MetadataMap::new();
        inject("", &mut md);
        assert_eq!(extract(&md), "");
        inject("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &mut md);
        assert_eq!(extract(&md), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    }

    #[test]
    fn a_traceparent_round_trips_through_a_context() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent_of(&parent(tp)), tp);
        assert_eq!(traceparent_of(&parent("garbage")), "");
    }
}
