//! `duet-demo`: a duet pair in network namespaces for a newcomer to watch.
//!
//! Builds two units and a client on a private bridge (198.18.0.0/24),
//! starts the election service on both, shows both units' status, kills
//! the active one, shows the failover, and tears everything down.
//! Needs root (network namespaces). Run it with `scripts/demo.sh`.

use std::time::{Duration, Instant};

use anyhow::Context;
use duet_proto::common::v1::{Role, UnitStatus};
use duet_tests::{PairLab, UnitConfig};

fn square(s: i32) -> &'static str {
    match UnitStatus::try_from(s).unwrap_or(UnitStatus::Unspecified) {
        UnitStatus::Active => "[A] green",
        UnitStatus::Standby => "[ ] green",
        UnitStatus::Unreachable => "[ ] red",
        UnitStatus::Pacified => "[ ] blue",
        UnitStatus::NotSetUp | UnitStatus::Indeterminate => "[ ] gray",
        UnitStatus::Updating => "[?]",
        UnitStatus::Unspecified => "[-]",
    }
}

fn show(l: &PairLab) -> anyhow::Result<()> {
    for (name, host) in [("lb1 (first, 198.18.0.1)", l.a), ("lb2 (second, 198.18.0.2)", l.b)] {
        match l.status(host) {
            Ok(s) => {
                let role = Role::try_from(s.role).map(|r| r.as_str_name()).unwrap_or("?");
                let sq: Vec<&str> = s.squares.iter().map(|q| square(q.status)).collect();
                println!("  {name:<26} {role:<14} squares: HA1 {}  HA2 {}   ({})", sq[0], sq[1], s.role_reason);
            }
            Err(_) => println!("  {name:<26} (not running)"),
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("the demo builds network namespaces: run it as root (sudo scripts/demo.sh)");
    }
    println!("duet demo: two units and a client on a private bridge (198.18.0.0/24), HA timeout 3 s\n");
    let mut l = PairLab::new("demo").context("building the namespaces")?;
    let c1 = UnitConfig::new("lb1", "first", l.lab.dir());
    let c2 = UnitConfig::new("lb2", "second", l.lab.dir());
    let mut p1 = l.election(l.a, &c1)?;
    let _p2 = l.election(l.b, &c2)?;
    println!("started the election service on both units; they listen for 3 s, then elect:");
    l.wait_role(l.a, Role::Active, Duration::from_secs(20))?;
    l.wait_role(l.b, Role::Standby, Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_millis(1500));
    show(&l)?;

    println!("\nkilling lb1 (SIGKILL) ...");
    let t0 = Instant::now();
    p1.kill()?;
    let took = l.wait_role(l.b, Role::Active, Duration::from_secs(10))?;
    println!("lb2 took over {:.2} s after the kill (HA timeout 3 s)", took.as_secs_f64());
    std::thread::sleep(Duration::from_millis(500));
    show(&l)?;

    println!("\nrestarting lb1: it hears lb2 and stays standby (no preferred server) ...");
    let _p1 = l.election(l.a, &c1)?;
    l.wait_role(l.a, Role::Standby, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(1500));
    show(&l)?;
    println!("\ndone in {:.1} s; tearing the namespaces down.", t0.elapsed().as_secs_f64());
    Ok(())
}
