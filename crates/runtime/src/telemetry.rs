//! Logging, traces and metrics for one service process.
//!
//! [`init`] installs, once per process:
//! - a `tracing` fmt layer writing compact lines (timestamp, level, target)
//!   to stderr, filtered by the unit config's `[telemetry] log` directive or,
//!   when set, by the `DUET_LOG` environment variable;
//! - when an OTLP endpoint is configured (`[telemetry] otlp_endpoint`, else
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`): a `tracing-opentelemetry` layer whose
//!   spans are batched and exported over OTLP/gRPC, and a global
//!   `MeterProvider` that exports every instrument made with [`meter`]
//!   periodically (10 s, or `OTEL_METRIC_EXPORT_INTERVAL` in ms).
//!
//! A collector that is down or unreachable never stops the service: exports
//! run on the SDK's own threads, failures are logged here (one warning per
//! outage, then debug lines) and dropped, and [`TelemetryGuard`]'s drop gives
//! the final flush a bounded time.
//!
//! This module is not a place for the services' own instruments or log
//! lines; they use [`meter`] and `tracing` directly.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use opentelemetry::metrics::Meter;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue, global};
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Environment variable that, when set and not empty, replaces
/// [`TelemetryConfig::log`].
pub const LOG_ENV: &str = "DUET_LOG";

/// Standard OTLP variable read when the config names no endpoint.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Standard variable for the metric export period, in milliseconds.
pub const METRIC_INTERVAL_ENV: &str = "OTEL_METRIC_EXPORT_INTERVAL";

/// Metric export period when [`METRIC_INTERVAL_ENV`] is unset or invalid.
pub const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_secs(10);

/// Name of the meter and tracer scope every duet service reports under.
pub const SCOPE_NAME: &str = "duet";

/// The most [`TelemetryGuard`]'s drop waits for the final flush, in all.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(2);

/// What the trace pipeline itself is given to shut down; a little under
/// [`SHUTDOWN_BUDGET`] so it usually reports back before we stop waiting.
const TRACE_SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(1800);

/// Targets whose spans and events never go to the OpenTelemetry layer: the
/// exporter's own gRPC stack and the SDK. Their spans would otherwise be
/// exported by the very export that made them, a loop that never settles
/// once `DUET_LOG` turns on debug.
const NOT_EXPORTED: &[&str] =
    &["h2", "hyper", "hyper_util", "tonic", "tower", "opentelemetry", "opentelemetry_sdk", "opentelemetry_otlp"];

/// Set by the first [`init`]; a second one is refused, because the global
/// subscriber and providers can be installed only once.
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// The service name given to [`init`], for [`meter`]'s scope attribute.
static SERVICE: OnceLock<&'static str> = OnceLock::new();

/// What the unit config's `[telemetry]` section says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// A `tracing` env-filter directive, e.g. `"info"` or
    /// `"info,duet_carp=debug"`. `DUET_LOG`, when set, replaces it.
    pub log: String,
    /// The OTLP/gRPC collector, e.g. `"http://127.0.0.1:4317"` (without a
    /// scheme, `http://` is assumed; `https://` talks TLS with [`Self::tls`]).
    /// When `None` (or empty), `OTEL_EXPORTER_OTLP_ENDPOINT` is used if set;
    /// otherwise nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// TLS towards an `https://` collector.
    pub tls: OtlpTls,
    /// One JSON object per log line instead of text (`telemetry.log_format`).
    pub json: bool,
    /// The pair the unit belongs to: the `duet.pair` resource attribute of
    /// everything exported (dashboards and alerts group by it).
    pub pair: Option<String>,
}

/// The files of TLS towards the collector (PEM). Unset, each falls back to
/// the standard variable: `OTEL_EXPORTER_OTLP_CERTIFICATE`,
/// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_KEY`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpTls {
    /// The CA that signed the collector's certificate.
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate and its key (mutual TLS).
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl OtlpTls {
    /// With the standard variables for what is unset.
    fn or_env(&self) -> Self {
        let env = |k: &str| non_empty(std::env::var(k).ok()).map(std::path::PathBuf::from);
        Self {
            ca: self.ca.clone().or_else(|| env("OTEL_EXPORTER_OTLP_CERTIFICATE")),
            cert: self.cert.clone().or_else(|| env("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")),
            key: self.key.clone().or_else(|| env("OTEL_EXPORTER_OTLP_CLIENT_KEY")),
        }
    }

    /// tonic's TLS settings for `endpoint` (its host is the name checked).
    fn client_config(&self, endpoint: &str) -> Result<tonic::transport::ClientTlsConfig, TelemetryError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| TelemetryError::Tls(format!("cannot read {}: {e}", p.display())))
        };
        let Some(ca) = &self.ca else {
            return Err(TelemetryError::Tls(
                "an https:// collector needs the CA of its certificate: telemetry.otlp_ca or \
                 OTEL_EXPORTER_OTLP_CERTIFICATE"
                    .into(),
            ));
        };
        let host = endpoint
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| TelemetryError::Tls(format!("no host in {endpoint:?}")))?;
        let mut c = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?))
            .domain_name(host);
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                c = c.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => return Err(TelemetryError::Tls("a client certificate needs its key, and the reverse".into())),
        }
        Ok(c)
    }
}

impl TelemetryConfig {
    /// The unit file's `[telemetry]`, for a unit of the pair `cfg` names.
    pub fn for_unit(cfg: &duet_config::Validated) -> Self {
        let t = &cfg.raw.telemetry;
        Self {
            log: t.log.clone(),
            otlp_endpoint: t.otlp_endpoint.clone(),
            tls: OtlpTls { ca: t.otlp_ca.clone(), cert: t.otlp_cert.clone(), key: t.otlp_key.clone() },
            json: t.log_format == duet_config::LogFormat::Json,
            pair: Some(cfg.pair_name()),
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { log: "info".to_owned(), otlp_endpoint: None, tls: OtlpTls::default(), json: false, pair: None }
    }
}

/// Keeps the export pipelines of [`init`]; flushes and shuts them down on
/// drop.
///
/// The drop blocks for at most [`SHUTDOWN_BUDGET`], even when the collector
/// is gone; what could not be sent by then is lost. The exporters talk gRPC
/// through tasks on the tokio runtime that was current in [`init`], so drop
/// the guard while that runtime still runs, and not on the only thread of a
/// current-thread runtime (there the flush cannot progress and simply runs
/// out of time): at the end of a `#[tokio::main]` (multi-thread) `main`, or
/// through `spawn_blocking`.
#[must_use = "dropping the guard shuts telemetry export down"]
#[derive(Debug)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// Whether spans and metrics are being exported (an OTLP endpoint was
    /// configured).
    pub fn exporting(&self) -> bool {
        self.tracer_provider.is_some() || self.meter_provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Both shutdowns block (each flushes through its SDK worker thread)
        // and the meter provider ignores any timeout we pass (5 s inside the
        // SDK). So each runs on a thread of its own, in parallel, and we wait
        // for their reports only until the budget is spent; a thread still
        // stuck then is left behind and dies with the process.
        let deadline = Instant::now() + SHUTDOWN_BUDGET;
        let (done_tx, done_rx) = mpsc::channel::<(&'static str, OTelSdkResult)>();
        let mut pending = 0usize;
        if let Some(provider) = self.tracer_provider.take() {
            pending += spawn_shutdown("traces", done_tx.clone(), move || {
                provider.shutdown_with_timeout(TRACE_SHUTDOWN_TIMEOUT)
            });
        }
        if let Some(provider) = self.meter_provider.take() {
            pending += spawn_shutdown("metrics", done_tx.clone(), move || provider.shutdown());
        }
        drop(done_tx);
        while pending > 0 {
            match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((signal, Ok(()))) => {
                    tracing::debug!(signal, "telemetry export shut down");
                    pending -= 1;
                }
                Ok((signal, Err(error))) => {
                    tracing::debug!(signal, %error, "telemetry export shut down with an error");
                    pending -= 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    tracing::warn!(
                        budget_ms = millis(SHUTDOWN_BUDGET),
                        "telemetry flush did not finish in time; the rest is dropped"
                    );
                    break;
                }
                // Every sender is gone: a shutdown thread panicked.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
}

/// Runs `shutdown` on a new thread that reports to `done`; returns how many
/// reports to wait for (0 when the thread could not be started).
fn spawn_shutdown(
    signal: &'static str,
    done: mpsc::Sender<(&'static str, OTelSdkResult)>,
    shutdown: impl FnOnce() -> OTelSdkResult + Send + 'static,
) -> usize {
    let spawned = std::thread::Builder::new().name(format!("duet-otel-{signal}-shutdown")).spawn(move || {
        let _ = done.send((signal, shutdown()));
    });
    match spawned {
        Ok(_) => 1,
        Err(error) => {
            tracing::warn!(signal, %error, "cannot start the telemetry shutdown thread; not flushing");
            0
        }
    }
}

/// Why telemetry could not be set up; nothing global was installed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `init` was called twice in one process.
    #[error("telemetry is already initialised in this process")]
    AlreadyInitialised,
    /// The log filter does not parse.
    #[error("invalid log filter {directive:?} (from {from}): {source}")]
    LogFilter {
        directive: String,
        /// Where it came from (the environment variable or the setting).
        from: &'static str,
        source: tracing_subscriber::filter::ParseError,
    },
    /// An OTLP endpoint was given outside a tokio runtime.
    #[error("telemetry::init with an OTLP endpoint must run inside a tokio runtime")]
    NoRuntime,
    /// The OTLP exporter cannot be built for the endpoint.
    #[error("OTLP {what} exporter for {endpoint:?}: {source}")]
    Exporter {
        /// `span` or `metric`.
        what: &'static str,
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// Someone else installed a global tracing subscriber.
    #[error("a global tracing subscriber is already installed")]
    SubscriberInstalled,
    /// TLS towards an `https://` collector cannot be set up.
    #[error("OTLP over TLS: {0}")]
    Tls(String),
}

/// Sets up logging, and export when configured, for one service process.
///
/// `service` becomes the resource's `service.name` and [`meter`]'s scope
/// attribute, `instance` (the unit name) `service.instance.id`;
/// `service.version` is this crate's version (the workspace's).
///
/// Must be called inside a tokio runtime when an endpoint is configured
/// (the gRPC channel spawns its tasks there), and only once per process.
///
/// # Errors
///
/// A second call in the same process; a log directive that does not parse;
/// an endpoint that is not a URI; an `https` endpoint without the
/// collector's CA, or with files that cannot be read; an endpoint but no
/// current tokio runtime; a global `tracing`
/// subscriber that someone else installed. After an error nothing global
/// was installed, so a corrected call may follow. An unreachable collector
/// is never an error.
pub fn init(service: &'static str, instance: &str, cfg: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    if INITIALISED.swap(true, Ordering::SeqCst) {
        return Err(TelemetryError::AlreadyInitialised);
    }
    let result = install(service, instance, cfg);
    if result.is_err() {
        // Nothing global was installed (see `install`), so a corrected
        // retry may go ahead.
        INITIALISED.store(false, Ordering::SeqCst);
    }
    result
}

/// [`init`]'s work. Everything fallible comes before the first global is
/// set, so that an error leaves the process as it was.
fn install(service: &'static str, instance: &str, cfg: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let (directive, directive_source) = match non_empty(std::env::var(LOG_ENV).ok()) {
        Some(directive) => (directive, LOG_ENV),
        None => (cfg.log.clone(), "[telemetry] log"),
    };
    let filter = EnvFilter::builder().parse(&directive).map_err(|source| TelemetryError::LogFilter {
        directive: directive.clone(),
        from: directive_source,
        source,
    })?;

    let endpoint = otlp_endpoint(cfg.otlp_endpoint.clone(), std::env::var(OTLP_ENDPOINT_ENV).ok());
    let interval_env = non_empty(std::env::var(METRIC_INTERVAL_ENV).ok());
    let interval = interval_env.as_deref().and_then(parse_interval);
    let bad_interval = interval_env.filter(|_| interval.is_none());
    let interval = interval.unwrap_or(DEFAULT_METRIC_INTERVAL);

    let providers = match &endpoint {
        Some(endpoint) => {
            let tls = endpoint.starts_with("https://").then(|| cfg.tls.or_env().client_config(endpoint)).transpose()?;
            Some(build_providers(service, instance, cfg.pair.as_deref(), endpoint, tls, interval)?)
        }
        None => None,
    };
    let (tracer_provider, meter_provider) = providers.unzip();

    let otel_layer = tracer_provider.as_ref().map(|provider| {
        let tracer = provider.tracer_with_scope(scope(service));
        tracing_opentelemetry::layer().with_tracer(tracer).with_filter(filter_fn(|meta| exported(meta.target())))
    });
    let text_layer = (!cfg.json).then(|| {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_target(true)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
    });
    // One object per line: timestamp, level, target, fields (the message
    // among them) and the spans it is in.
    let json_layer =
        cfg.json.then(|| tracing_subscriber::fmt::layer().json().with_target(true).with_writer(std::io::stderr));

    // The filter is global (not per layer), so that what it turns off is
    // never even built; the OpenTelemetry layer additionally skips the
    // exporter's own stack (`NOT_EXPORTED`).
    tracing_subscriber::registry()
        .with(filter)
        .with(text_layer)
        .with(json_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::SubscriberInstalled)?;

    // From here on nothing fails.
    let _ = SERVICE.set(service);
    if let Some(provider) = &tracer_provider {
        global::set_tracer_provider(provider.clone());
        global::set_text_map_propagator(TraceContextPropagator::new());
    }
    if let Some(provider) = &meter_provider {
        global::set_meter_provider(provider.clone());
        let _ = METRIC_INTERVAL.set(interval);
    }

    match &endpoint {
        Some(endpoint) => tracing::info!(
            service,
            instance,
            endpoint = endpoint.as_str(),
            metric_interval_ms = millis(interval),
            log = directive.as_str(),
            "telemetry exporting over OTLP/gRPC"
        ),
        None => {
            tracing::info!(service, instance, log = directive.as_str(), "telemetry: logging only, no OTLP endpoint")
        }
    }
    if let Some(value) = bad_interval {
        tracing::warn!(value, "{METRIC_INTERVAL_ENV} is not a positive number of milliseconds; using 10 s");
    }

    Ok(TelemetryGuard { tracer_provider, meter_provider })
}

/// Builds the span and metric pipelines towards `endpoint`.
fn build_providers(
    service: &'static str,
    instance: &str,
    pair: Option<&str>,
    endpoint: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
    interval: Duration,
) -> Result<(SdkTracerProvider, SdkMeterProvider), TelemetryError> {
    // `connect_lazy` spawns the channel's worker on the current runtime and
    // panics without one: say so as an error instead.
    tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;

    let mut attributes = vec![
        KeyValue::new("service.instance.id", instance.to_owned()),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ];
    if let Some(p) = pair {
        attributes.push(KeyValue::new("duet.pair", p.to_owned()));
    }
    let resource = Resource::builder().with_service_name(service).with_attributes(attributes).build();

    let span_exporter = SpanExporter::builder().with_tonic().with_endpoint(endpoint);
    let span_exporter = match &tls {
        Some(t) => span_exporter.with_tls_config(t.clone()),
        None => span_exporter,
    };
    let span_exporter = span_exporter.build().map_err(|source| TelemetryError::Exporter {
        what: "span",
        endpoint: endpoint.to_owned(),
        source,
    })?;
    let metric_exporter =
        MetricExporter::builder().with_tonic().with_endpoint(endpoint).with_temporality(Temporality::Cumulative);
    let metric_exporter = match tls {
        Some(t) => metric_exporter.with_tls_config(t),
        None => metric_exporter,
    };
    let metric_exporter = metric_exporter.build().map_err(|source| TelemetryError::Exporter {
        what: "metric",
        endpoint: endpoint.to_owned(),
        source,
    })?;

    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(Reported::new("traces", span_exporter))
        .build();
    let reader = PeriodicReader::builder(Reported::new("metrics", metric_exporter)).with_interval(interval).build();
    let meter_provider = SdkMeterProvider::builder().with_resource(resource).with_reader(reader).build();
    Ok((tracer_provider, meter_provider))
}

/// How often metrics are exported, once [`init`] set up an exporter;
/// `None` without one. A service that copies its figures into observable
/// instruments does it this often, and not at all without an exporter.
pub fn metric_interval() -> Option<Duration> {
    METRIC_INTERVAL.get().copied()
}

static METRIC_INTERVAL: OnceLock<Duration> = OnceLock::new();

/// The meter services make their instruments with: the global meter named
/// `duet`, with the service name (once [`init`] ran) as the `service.name`
/// scope attribute.
///
/// Without an exporter, or before [`init`], it is a no-op meter. Instruments
/// stay bound to the provider that was global when they were made, so make
/// them after [`init`].
pub fn meter() -> Meter {
    global::meter_with_scope(scope(SERVICE.get().copied().unwrap_or_default()))
}

/// The instrumentation scope of duet's meter and tracer.
fn scope(service: &'static str) -> InstrumentationScope {
    let builder = InstrumentationScope::builder(SCOPE_NAME).with_version(env!("CARGO_PKG_VERSION"));
    if service.is_empty() {
        builder.build()
    } else {
        builder.with_attributes([KeyValue::new("service.name", service)]).build()
    }
}

/// Whether spans and events of `target` may go to the OpenTelemetry layer.
fn exported(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    !NOT_EXPORTED.contains(&krate)
}

/// The configured endpoint, else the environment's; empty counts as unset.
/// One without a scheme gets `http://` (TLS is asked for by writing
/// `https://`, and needs the collector's CA).
fn otlp_endpoint(configured: Option<String>, from_env: Option<String>) -> Option<String> {
    let endpoint = non_empty(configured).or_else(|| non_empty(from_env))?;
    Some(if endpoint.contains("://") { endpoint } else { format!("http://{endpoint}") })
}

/// The metric export period from [`METRIC_INTERVAL_ENV`]'s value, if that
/// is a positive number of milliseconds.
fn parse_interval(env_value: &str) -> Option<Duration> {
    env_value.trim().parse::<u64>().ok().filter(|&ms| ms > 0).map(Duration::from_millis)
}

/// `d` in whole milliseconds, for log fields.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Wraps an exporter to log its failures, which the SDK (without its
/// `internal-logs` feature) would swallow: a warning when an outage starts,
/// debug lines while it lasts, an info line when exports succeed again.
///
/// These events come from the SDK's export threads, where no span is
/// current, so the OpenTelemetry layer does not turn them into telemetry.
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    signal: &'static str,
    failing: AtomicBool,
}

impl<E> Reported<E> {
    fn new(signal: &'static str, inner: E) -> Self {
        Self { inner, signal, failing: AtomicBool::new(false) }
    }

    fn note(&self, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(signal = self.signal, "telemetry export works again");
                }
            }
            Err(error) => {
                if self.failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(signal = self.signal, %error, "telemetry export failed again");
                } else {
                    tracing::warn!(
                        signal = self.signal,
                        %error,
                        "telemetry export failed (collector down?); data is dropped, further failures at debug"
                    );
                }
            }
        }
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.note(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Reported<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.note(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_prefers_config_and_ignores_empty() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(otlp_endpoint(s("http://a:1"), s("http://b:2")), s("http://a:1"));
        assert_eq!(otlp_endpoint(None, s("http://b:2")), s("http://b:2"));
        assert_eq!(otlp_endpoint(s(" "), s("http://b:2")), s("http://b:2"));
        assert_eq!(otlp_endpoint(None, s("")), None);
        assert_eq!(otlp_endpoint(None, None), None);
        assert_eq!(otlp_endpoint(s("127.0.0.1:4317"), None), s("http://127.0.0.1:4317"));
    }

    /// Failed inits install nothing and do not trip the once-only guard
    /// (this test binary has no successful init).
    #[test]
    fn config_errors_are_errors() {
        let cfg = |endpoint: &str| TelemetryConfig {
            pair: None,
            tls: OtlpTls::default(),
            log: "info".to_owned(),
            otlp_endpoint: Some(endpoint.to_owned()),
            json: false,
        };

        let outside = init("duet-test", "unit-a", &cfg("http://127.0.0.1:4317")).unwrap_err();
        assert!(format!("{outside:#}").contains("tokio runtime"), "{outside:#}");

        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async {
            assert!(init("duet-test", "unit-a", &cfg("http://not a uri")).is_err());
            assert!(init("duet-test", "unit-a", &cfg("https://127.0.0.1:4317")).is_err());
        });
        assert!(!INITIALISED.load(Ordering::SeqCst));
    }

    #[test]
    fn metric_interval_from_env() {
        assert_eq!(parse_interval("2500"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_interval(" 10000 "), Some(Duration::from_secs(10)));
        assert_eq!(parse_interval("0"), None);
        assert_eq!(parse_interval("ten"), None);
    }

    #[test]
    fn exporter_stack_is_not_exported() {
        assert!(!exported("h2::proto::connection"));
        assert!(!exported("tonic"));
        assert!(!exported("opentelemetry_sdk"));
        assert!(exported("tower_http::trace"));
        assert!(exported("duet_election::role"));
    }
}
