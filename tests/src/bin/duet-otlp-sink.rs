//! `duet-otlp-sink`: an OTLP/gRPC receiver that writes every metric data
//! point and span it receives as a JSON line (see `duet_tests::otlp`). Run
//! inside a namespace by the telemetry tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "An OTLP/gRPC receiver writing what it receives as JSON lines")]
struct Args {
    /// Where to listen, e.g. 198.18.0.100:4317.
    #[arg(long)]
    listen: SocketAddr,
    /// The file the lines are appended to.
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let sink = match duet_tests::otlp::Sink::open(args.out.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open {}: {e}", args.out.display());
            return ExitCode::FAILURE;
        }
    };
    match sink.serve(args.listen).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot serve on {}: {e}", args.listen);
            ExitCode::FAILURE
        }
    }
}
