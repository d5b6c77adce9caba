//! The lab's sweep of earlier runs' leftovers, tested on a real kernel.
//!
//! It lives in its own test binary: every `Lab::new` sweeps namespaces whose
//! run is dead, so a lab started by a test running alongside would remove the
//! "stale" namespace this test sets up before the test could fill it (seen in
//! CI: `Cannot open network namespace "dk…-stale"`). Cargo runs test binaries
//! one after another, so nothing else sweeps while this one runs.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::netns_names;
use duet_testkit::{Lab, require_root, wait_for};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn sweep_removes_only_dead_runs_namespaces() {
    if !require_root("sweep_removes_only_dead_runs_namespaces") {
        return;
    }
    // A pid that surely belongs to no one now: a child we started and reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let me = std::process::id();

    let stale = format!("dk{dead}zz-stale");
    let alive = format!("dk{me}zzzzz-alive");
    let foreign = format!("dkx{dead}zz-foreign");
    for ns in [&stale, &alive, &foreign] {
        assert!(Command::new("ip").args(["netns", "add", ns]).status().unwrap().success());
    }
    // A leftover process keeps the stale namespace busy.
    let mut squatter =
        Command::new("ip").args(["netns", "exec", &stale, "sleep", "1000"]).stdout(Stdio::null()).spawn().unwrap();
    wait_for("squatter inside", 5 * SECOND, Duration::from_millis(20), || {
        let out = Command::new("ip").args(["netns", "pids", &stale]).output().ok()?;
        (!out.stdout.is_empty()).then_some(())
    })
    .unwrap();

    let stale_dir = std::env::temp_dir().join(format!("duet-testkit-{stale}x"));
    let alive_dir = std::env::temp_dir().join(format!("duet-testkit-{alive}x"));
    for dir in [&stale_dir, &alive_dir] {
        std::fs::create_dir_all(dir.join("sub")).unwrap();
    }

    let lab = Lab::new("sweep").unwrap();
    let names = netns_names();
    let dirs = (stale_dir.exists(), alive_dir.exists());
    let _ = std::fs::remove_dir_all(&stale_dir);
    let _ = std::fs::remove_dir_all(&alive_dir);
    let killed = wait_for("squatter killed", 5 * SECOND, Duration::from_millis(20), || squatter.try_wait().unwrap());
    for ns in [&stale, &alive, &foreign] {
        if names.contains(ns) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
    let _ = squatter.kill();
    let _ = squatter.wait();
    drop(lab);

    assert!(!names.contains(&stale), "stale namespace survived the sweep");
    assert!(names.contains(&alive), "a live process's namespace was swept");
    assert!(names.contains(&foreign), "a foreign-looking namespace was swept");
    assert!(killed.is_ok(), "process in the stale namespace survived");
    if std::env::var_os("DUET_TESTKIT_KEEP").is_none() {
        assert_eq!(dirs, (false, true), "(stale, live) lab directories after the sweep");
    }
}
