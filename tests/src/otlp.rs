//! A real OTLP/gRPC receiver for the end-to-end tests, built on the official
//! `opentelemetry-proto` messages: it records every metric data point and
//! span the units export, one JSON line each, in a file the test reads
//! ([`Received`]). `duet-otlp-sink` runs it inside a namespace.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

/// One line of the sink's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Line {
    /// One data point of a metric.
    Metric {
        service: String,
        instance: String,
        /// The `duet.pair` resource attribute.
        pair: String,
        name: String,
        unit: String,
        /// counter, gauge, histogram, ...
        shape: String,
        attributes: BTreeMap<String, String>,
        value: f64,
    },
    /// One span.
    Span {
        service: String,
        instance: String,
        pair: String,
        name: String,
        trace_id: String,
        span_id: String,
        parent_span_id: String,
        start_ns: u64,
        end_ns: u64,
        attributes: BTreeMap<String, String>,
    },
}

/// What a sink received, read from its file.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub lines: Vec<Line>,
}

impl Received {
    /// Reads the sink's file (lines not yet whole are skipped).
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Self { lines: text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect() }
    }

    /// The metric data points named `name`.
    pub fn metric(&self, name: &str) -> Vec<&Line> {
        self.lines.iter().filter(|l| matches!(l, Line::Metric { name: n, .. } if n == name)).collect()
    }

    /// The spans, in the order received.
    pub fn spans(&self) -> Vec<&Line> {
        self.lines.iter().filter(|l| matches!(l, Line::Span { .. })).collect()
    }
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kv: &[KeyValue]) -> BTreeMap<String, String> {
    kv.iter().map(|k| (k.key.clone(), text(k.value.as_ref()))).collect()
}

/// The exporting service, its unit and its pair (resource attributes).
fn who(r: Option<&Resource>) -> (String, String, String) {
    let a = r.map(|r| attrs(&r.attributes)).unwrap_or_default();
    let get = |k: &str| a.get(k).cloned().unwrap_or_default();
    (get("service.name"), get("service.instance.id"), get("duet.pair"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The receiver: appends every line to its file.
#[derive(Debug, Clone)]
pub struct Sink {
    out: Arc<Mutex<std::fs::File>>,
}

impl Sink {
    /// A sink writing to `path` (created or appended to).
    pub fn open(path: PathBuf) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { out: Arc::new(Mutex::new(f)) })
    }

    fn write(&self, lines: Vec<Line>) {
        let mut f = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut buf = String::new();
        for l in lines {
            if let Ok(s) = serde_json::to_string(&l) {
                buf.push_str(&s);
                buf.push('\n');
            }
        }
        let _ = f.write_all(buf.as_bytes());
    }

    /// Serves OTLP/gRPC (metrics and traces) on `addr` until the process ends.
    pub async fn serve(self, addr: SocketAddr) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(self.clone()))
            .add_service(TraceServiceServer::new(self))
            .serve(addr)
            .await
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut lines = Vec::new();
        for rm in request.into_inner().resource_metrics {
            let (service, instance, pair) = who(rm.resource.as_ref());
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let mut point = |shape: &str, a: &[KeyValue], value: f64| {
                        lines.push(Line::Metric {
                            service: service.clone(),
                            instance: instance.clone(),
                            pair: pair.clone(),
                            name: m.name.clone(),
                            unit: m.unit.clone(),
                            shape: shape.to_owned(),
                            attributes: attrs(a),
                            value,
                        });
                    };
                    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
                    let num = |v: Option<Value>| match v {
                        Some(Value::AsDouble(d)) => d,
                        Some(Value::AsInt(i)) => i as f64,
                        None => 0.0,
                    };
                    match &m.data {
                        Some(Data::Sum(s)) => {
                            s.data_points.iter().for_each(|p| point("counter", &p.attributes, num(p.value)))
                        }
                        Some(Data::Gauge(g)) => {
                            g.data_points.iter().for_each(|p| point("gauge", &p.attributes, num(p.value)))
                        }
                        Some(Data::Histogram(h)) => {
                            h.data_points.iter().for_each(|p| point("histogram", &p.attributes, p.count as f64));
                        }
                        Some(other) => point(&format!("{other:?}").chars().take(20).collect::<String>(), &[], 0.0),
                        None => {}
                    }
                }
            }
        }
        self.write(lines);
        Ok(Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut lines = Vec::new();
        for rs in request.into_inner().resource_spans {
            let (service, instance, pair) = who(rs.resource.as_ref());
            for ss in rs.scope_spans {
                for s in ss.spans {
                    lines.push(Line::Span {
                        service: service.clone(),
                        instance: instance.clone(),
                        pair: pair.clone(),
                        name: s.name.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        start_ns: s.start_time_unix_nano,
                        end_ns: s.end_time_unix_nano,
                        attributes: attrs(&s.attributes),
                    });
                }
            }
        }
        self.write(lines);
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}
