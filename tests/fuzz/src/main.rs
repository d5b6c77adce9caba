//! `duet-fuzz`: every parser of bytes from outside a unit, on mutations of
//! real and emitted inputs (see the library). The long run is
//! `duet-fuzz --inputs 10000000` (a release build); CI runs a short one.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    about = "Mutates inputs of every parser of bytes from outside a duet unit; reports inputs tried and any failure"
)]
struct Args {
    /// Inputs per parser (seeds included).
    #[arg(long, default_value_t = 1_000_000)]
    inputs: u64,
    /// The generator's seed: the same seed replays the same inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only the parser(s) named (carp, arp, peer-status, ctnetlink, peer-link, unit-file, image-json).
    #[arg(long)]
    target: Vec<String>,
    /// Instead of fuzzing: write each chosen parser's seeds as files into DIR/<parser>/ (the
    /// coverage-guided harness's starting corpus).
    #[arg(long, value_name = "DIR")]
    write_seeds: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let chosen = |t: &duet_fuzz::Target| args.target.is_empty() || args.target.iter().any(|n| n == t.name);
    if let Some(dir) = &args.write_seeds {
        for t in duet_fuzz::targets().iter().filter(|t| chosen(t)) {
            let d = dir.join(t.name);
            let written = std::fs::create_dir_all(&d).and_then(|()| {
                (t.seeds)().iter().enumerate().try_for_each(|(i, s)| std::fs::write(d.join(format!("seed-{i:03}")), s))
            });
            if let Err(e) = written {
                eprintln!("writing the seeds of {} into {}: {e}", t.name, d.display());
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    // A caught panic is reported with its input; the default hook's
    // message would only repeat it.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    println!("{:<12} {:>12} {:>10} {:>12}  seeds", "parser", "inputs", "seconds", "inputs/s");
    for t in duet_fuzz::targets().iter().filter(|t| chosen(t)) {
        let o = duet_fuzz::run(t, args.inputs, args.seed);
        let secs = o.took.as_secs_f64();
        println!(
            "{:<12} {:>12} {:>10.1} {:>12.0}  {}",
            o.target,
            o.inputs,
            secs,
            o.inputs as f64 / secs.max(1e-9),
            t.seeds_from
        );
        if let Some((why, input)) = o.failure {
            failed = true;
            println!("  FAILED after {} inputs: {why}\n  input: {input}", o.inputs);
        }
    }
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned())));
    println!("peak memory (VmHWM): {}", peak.unwrap_or_else(|| "?".into()));
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
