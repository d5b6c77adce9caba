//! End to end: spans and metrics from [`telemetry::init`] reach an OTLP
//! collector over gRPC with mutual TLS (an `https://` endpoint, the
//! collector's CA, a client certificate the collector requires).
//!
//! The collector is a small tonic server built on `opentelemetry-proto`'s
//! stubs that records every request. `init` installs process globals and may
//! run once per process, so this file holds a single test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duet_runtime::telemetry::{self, TelemetryConfig};
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{KeyValue as ProtoKeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// What the collector received.
#[derive(Debug, Default, Clone)]
struct Collector {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

/// Serves a [`Collector`] on 127.0.0.1:0 over TLS (certificate of
/// `localhost` from `certs`, client certificates of the same CA required)
/// until the returned sender fires or is dropped.
async fn start_collector(certs: &std::path::Path) -> (Collector, SocketAddr, oneshot::Sender<()>) {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let collector = Collector::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("localhost.pem"), read("localhost.key")))
        .client_ca_root(Certificate::from_pem(read("ca.pem")));
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .expect("TLS settings")
        .add_service(TraceServiceServer::new(collector.clone()))
        .add_service(MetricsServiceServer::new(collector.clone()))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    tokio::spawn(async move { server.await.expect("collector failed") });
    (collector, addr, stop_tx)
}

fn str_attr<'a>(attrs: &'a [ProtoKeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    })
}

fn int_attr(attrs: &[ProtoKeyValue], key: &str) -> Option<i64> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    })
}

/// (service.name, service.instance.id, span attribute vhid) of every
/// exported span named `name`.
fn spans_named(collector: &Collector, name: &str) -> Vec<(String, String, Option<i64>)> {
    let mut found = Vec::new();
    for request in collector.traces.lock().unwrap().iter() {
        for rs in &request.resource_spans {
            let resource = rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans).filter(|s| s.name == name) {
                found.push((
                    str_attr(resource, "service.name").unwrap_or_default().to_owned(),
                    str_attr(resource, "service.instance.id").unwrap_or_default().to_owned(),
                    int_attr(&span.attributes, "vhid"),
                ));
            }
        }
    }
    found
}

/// (service.name resource attribute, scope name, scope's service.name
/// attribute, summed value) of every exported sum named `name`.
fn sums_named(collector: &Collector, name: &str) -> Vec<(String, String, String, i64)> {
    let mut found = Vec::new();
    for request in collector.metrics.lock().unwrap().iter() {
        for rm in &request.resource_metrics {
            let resource = rm.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
            for sm in &rm.scope_metrics {
                let (scope_name, scope_attrs) =
                    sm.scope.as_ref().map(|s| (s.name.as_str(), s.attributes.as_slice())).unwrap_or_default();
                for metric in sm.metrics.iter().filter(|m| m.name == name) {
                    let Some(metric::Data::Sum(sum)) = &metric.data else { continue };
                    let total = sum
                        .data_points
                        .iter()
                        .map(|p| match p.value {
                            Some(number_data_point::Value::AsInt(v)) => v,
                            Some(number_data_point::Value::AsDouble(v)) => v as i64,
                            None => 0,
                        })
                        .sum();
                    found.push((
                        str_attr(resource, "service.name").unwrap_or_default().to_owned(),
                        scope_name.to_owned(),
                        str_attr(scope_attrs, "service.name").unwrap_or_default().to_owned(),
                        total,
                    ));
                }
            }
        }
    }
    found
}

/// Polls `check` every 50 ms until it is true or `limit` passed.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Multi-thread: the guard's drop blocks its thread while the flush goes
// through the gRPC channel's tasks and the collector, which run on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    duet_testkit::write_certs(dir.path(), &["localhost", "lb1"]).unwrap();
    let (collector, addr, _stop) = start_collector(dir.path()).await;
    let cfg = TelemetryConfig {
        log: "info".to_owned(),
        otlp_endpoint: Some(format!("https://localhost:{}", addr.port())),
        json: false,
        pair: Some("vhid-10".into()),
        tls: telemetry::OtlpTls {
            ca: Some(dir.path().join("ca.pem")),
            cert: Some(dir.path().join("lb1.pem")),
            key: Some(dir.path().join("lb1.key")),
        },
    };

    let guard = telemetry::init("duet-telemetry-test", "unit-a", &cfg).expect("init");
    assert!(guard.exporting());
    let again = telemetry::init("duet-telemetry-test", "unit-a", &cfg);
    assert!(again.is_err(), "a second init must be refused");

    let adverts = telemetry::meter().u64_counter("duet_test_adverts_sent").build();
    adverts.add(2, &[KeyValue::new("vhid", 7)]);
    adverts.add(1, &[KeyValue::new("vhid", 7)]);
    tracing::info_span!("test_election_round", vhid = 7).in_scope(|| tracing::info!("inside the round"));
    // Below the filter: must not be exported.
    tracing::debug_span!("test_filtered_out").in_scope(|| ());

    let started = Instant::now();
    drop(guard);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "guard drop took {took:?}");

    // The drop waits for the final exports, so everything is normally there
    // already; the poll only absorbs a slow machine.
    let spans_arrived =
        eventually(Duration::from_secs(5), || !spans_named(&collector, "test_election_round").is_empty()).await;
    assert!(spans_arrived, "no span arrived: {:?}", collector.traces.lock().unwrap());
    assert_eq!(
        spans_named(&collector, "test_election_round"),
        vec![("duet-telemetry-test".to_owned(), "unit-a".to_owned(), Some(7))]
    );
    assert!(spans_named(&collector, "test_filtered_out").is_empty());

    let metrics_arrived =
        eventually(Duration::from_secs(5), || !sums_named(&collector, "duet_test_adverts_sent").is_empty()).await;
    assert!(metrics_arrived, "no metric arrived: {:?}", collector.metrics.lock().unwrap());
    let sums = sums_named(&collector, "duet_test_adverts_sent");
    let last = sums.last().unwrap();
    assert_eq!(
        last,
        &("duet-telemetry-test".to_owned(), "duet".to_owned(), "duet-telemetry-test".to_owned(), 3),
        "all exported sums: {sums:?}"
    );
}
