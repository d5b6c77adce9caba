//! `duet-conns`: an echo server, and a client that keeps K TCP connections
//! busy through a load balancer and reports which survived (see
//! `duet_tests::conns`). Run inside namespaces by the tests and benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use duet_tests::conns::{ClientOptions, run_client, serve};

#[derive(Debug, Parser)]
#[command(about = "Long-lived TCP connections through a load balancer, watched one by one")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Echo server.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Keep connections to TARGET, then print a JSON report.
    Client {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 100)]
        conns: usize,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// Seconds the connections are kept once all are open.
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
        /// Milliseconds over which the connections are opened.
        #[arg(long, default_value_t = 1000)]
        ramp_ms: u64,
        /// No answer for this long at the end: hung.
        #[arg(long, default_value_t = 3000)]
        hung_ms: u64,
        /// Created once every connection is open and answered.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Stop early, and report, once this file exists (checked every 100 ms).
        #[arg(long)]
        stop_file: Option<PathBuf>,
        /// Where to write the report (also printed).
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async move {
        match args.cmd {
            Cmd::Serve { listen } => serve(listen).await,
            Cmd::Client { target, conns, interval_ms, duration_s, ramp_ms, hung_ms, ready_file, stop_file, json } => {
                let r = run_client(ClientOptions {
                    target,
                    conns,
                    interval: Duration::from_millis(interval_ms),
                    duration: Duration::from_secs(duration_s),
                    ramp: Duration::from_millis(ramp_ms),
                    hung_after: Duration::from_millis(hung_ms),
                    ready_file,
                    stop_file,
                })
                .await?;
                let text = serde_json::to_string(&r)?;
                println!("{text}");
                if let Some(p) = json {
                    std::fs::write(p, text)?;
                }
                Ok(())
            }
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duet-conns: {e:#}");
            ExitCode::FAILURE
        }
    }
}
