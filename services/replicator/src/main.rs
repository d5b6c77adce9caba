//! `duet-replicator`: the replicator service of one duet unit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use duet_runtime::telemetry::{self, TelemetryConfig};

/// The replicator of a duet unit: connection and persistence state, kept ready on the standby.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The unit's configuration file.
    #[arg(long, short, env = "DUET_CONFIG")]
    config: PathBuf,
    /// Validate the configuration (including [replicator]) and exit.
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
        return match cfg.replicator() {
            Ok(c) => {
                println!(
                    "{}: OK (listen {}, peer {:?}, l4 {}, l7 {})",
                    args.config.display(),
                    c.listen,
                    c.peer.map(|p| p.partner),
                    c.l4,
                    c.l7
                );
                ExitCode::SUCCESS
            }
            Err(errs) => {
                for e in errs {
                    eprintln!("{e}");
                }
                ExitCode::from(2)
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
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
        let _telemetry = match telemetry::init("duet-replicator", &cfg.raw.unit.name, &tcfg) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("cannot set up telemetry: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = match duet_runtime::shutdown::for_service() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let listen = match cfg.replicator() {
            Ok(c) => c.listen,
            Err(errs) => {
                for e in errs {
                    tracing::error!("{e}");
                }
                return ExitCode::from(2);
            }
        };
        let listener = match duet_runtime::grpc::listen(listen, "replicator.listen").await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e:#}");
                return ExitCode::FAILURE;
            }
        };
        match duet_replicator::run(cfg, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
