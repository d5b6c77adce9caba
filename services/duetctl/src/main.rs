//! `duetctl`: the admin CLI of a duet pair.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Administer a duet pair.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Make a CA and one certificate per unit for the peer links (a test pair).
    Certs {
        /// Directory to write ca.pem, <unit>.pem and <unit>.key into.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Name of the pair (goes into the CA's name).
        #[arg(long, default_value = "duet")]
        pair: String,
        /// Unit names (their `unit.name`).
        #[arg(long, value_delimiter = ',', default_value = "lb1,lb2")]
        units: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Certs { out, pair, units, days } => {
            let names: Vec<&str> = units.iter().map(String::as_str).collect();
            duet_ctl::certs::generate(&out, &pair, &names, days).map(|w| {
                println!("CA: {}", w.ca.display());
                for (u, c, k) in w.units {
                    println!("{u}: {} {}", c.display(), k.display());
                }
            })
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duetctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
