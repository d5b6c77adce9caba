//! With a collector that is not there, [`telemetry::init`] still succeeds,
//! logging still works (and says the export failed), and dropping the guard
//! is bounded.
//!
//! `init` sets process globals and reads the environment (`DUET_LOG`,
//! `OTEL_METRIC_EXPORT_INTERVAL`), and what it logs goes to stderr; so the
//! parent test runs the real work in a child process (this test binary again,
//! running only the ignored `child_*` test) with a controlled environment,
//! then reads the child's stderr. The collector is either absent or hung.

use std::fs::File;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use duet_runtime::telemetry::{self, TelemetryConfig};

/// Where the child is told to export to.
const ENDPOINT_ENV: &str = "DUET_TEST_DEAD_ENDPOINT";

/// How long the whole child may take before it counts as hung.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// Runs [`child_with_collector_down`] in a child process exporting to
/// `endpoint`; returns its stderr once it passed.
fn run_child(endpoint: &str) -> String {
    let stderr_path = std::env::temp_dir().join(format!(
        "duet-telemetry-down-{}-{}.stderr",
        std::process::id(),
        endpoint.rsplit(':').next().unwrap_or_default()
    ));
    let stderr = File::create(&stderr_path).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_with_collector_down", "--nocapture", "--test-threads=1"])
        .env(ENDPOINT_ENV, endpoint)
        // Overrides the config's "error": the child's info line shows it.
        .env("DUET_LOG", "info")
        // Exports fail during the child's life, not only at shutdown.
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TIMEOUT")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();

    let deadline = Instant::now() + CHILD_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child still running after {CHILD_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    let _ = std::fs::remove_file(&stderr_path);
    assert!(status.success(), "child failed ({status}); its stderr:\n{log}");
    assert!(log.contains("guard dropped in"), "child did not finish; its stderr:\n{log}");

    // Logging works, in the compact format: timestamp, level, target, message.
    let line = log
        .lines()
        .find(|l| l.contains("hello from the child"))
        .unwrap_or_else(|| panic!("no log line from the child; its stderr:\n{log}"));
    assert!(line.starts_with(|c: char| c.is_ascii_digit()), "no leading timestamp: {line}");
    assert!(line.contains("INFO"), "no level: {line}");
    assert!(line.contains("telemetry_down:"), "no target: {line}");
    assert!(line.contains("vhid=7"), "no field: {line}");
    log
}

/// Nothing listens: every connection is refused at once.
#[test]
fn collector_refusing_is_harmless() {
    // A port where nothing listens: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = run_child(&format!("http://127.0.0.1:{port}"));

    // The failed exports were reported as a warning, once per signal and
    // outage.
    let warnings: Vec<_> =
        log.lines().filter(|l| l.contains("WARN") && l.contains("telemetry export failed")).collect();
    assert!(!warnings.is_empty(), "no export-failure warning; the child's stderr:\n{log}");
    assert!(warnings.len() <= 2, "one warning per signal at most, got:\n{warnings:#?}");
}

/// Something accepts the TCP connection (the kernel does, from the backlog)
/// but never answers: exports hang until their own timeout, longer than the
/// guard may wait.
#[test]
fn collector_hanging_is_harmless() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    run_child(&format!("http://127.0.0.1:{port}"));
    drop(listener);
}

#[test]
#[ignore = "run as a child process by the other tests"]
fn child_with_collector_down() {
    let endpoint = std::env::var(ENDPOINT_ENV).expect("run by the other tests");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let cfg = TelemetryConfig {
            log: "error".to_owned(),
            otlp_endpoint: Some(endpoint),
            json: false,
            pair: Some("vhid-10".into()),
            tls: telemetry::OtlpTls::default(),
        };
        let guard = telemetry::init("duet-telemetry-down", "unit-b", &cfg).expect("init with the collector down");
        assert!(guard.exporting());

        tracing::info!(vhid = 7, "hello from the child");
        let adverts = telemetry::meter().u64_counter("duet_test_adverts_sent").build();
        adverts.add(1, &[]);
        tracing::info_span!("test_election_round").in_scope(|| ());
        // Long enough for a periodic metric export (every 200 ms) and its
        // retries to fail.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tracing::info!("still alive");

        let started = Instant::now();
        drop(guard);
        let took = started.elapsed();
        eprintln!("guard dropped in {} ms", took.as_millis());
        assert!(took < Duration::from_secs(3), "guard drop took {took:?}");
    });
}
