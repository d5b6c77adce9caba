//! `duet-takeover`: the takeover service of one duet unit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use duet_runtime::telemetry::{self, TelemetryConfig};

/// The takeover service of a duet unit: shared addresses, gratuitous ARP
/// and the virtual MAC, following the election's role.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The unit's configuration file.
    #[arg(long, short, env = "DUET_CONFIG")]
    config: PathBuf,
    /// Validate the configuration, print what the service would do and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match duet_config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!(
            "{}: OK (unit {}, takeover listening on {}; {})",
            args.config.display(),
            cfg.raw.unit.name,
            cfg.takeover_listen,
            duet_takeover::describe(&cfg)
        );
        for w in &cfg.warnings {
            println!("warning: {w}");
        }
        return ExitCode::SUCCESS;
    }
    // One thread: the service waits on the kernel and the election, it
    // does not compute. On one thread, a role event, the netlink requests
    // it makes and their answers pass from task to task without waking
    // another thread, which keeps the takeover's latency low on a busy box.
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let tcfg = TelemetryConfig {
            log: cfg.raw.telemetry.log.clone(),
            otlp_endpoint: cfg.raw.telemetry.otlp_endpoint.clone(),
        };
        let telemetry = match telemetry::init("duet-takeover", &cfg.raw.unit.name, &tcfg) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("cannot set up telemetry: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let code = serve(cfg).await;
        // The final export flush needs this runtime to make progress, and
        // its only thread is this one: let go of the guard elsewhere.
        let _ = tokio::task::spawn_blocking(move || drop(telemetry)).await;
        code
    })
}

async fn serve(cfg: duet_config::Validated) -> ExitCode {
    let shutdown = match duet_runtime::shutdown::for_service() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match duet_runtime::grpc::listen(cfg.takeover_listen, "takeover.listen").await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    match duet_takeover::run(cfg, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
