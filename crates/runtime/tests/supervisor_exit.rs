//! A service started by the unit supervisor stops when the supervisor is
//! gone, at once (a pidfd, no polling): the test binary runs itself as the
//! "service" under a shell standing in for the supervisor, kills the shell
//! with SIGKILL and times the service's shutdown.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use duet_runtime::shutdown;

const CHILD: &str = "DUET_TEST_SUPERVISOR_CHILD";

/// In the child: watch the supervisor, write `fired` to the marker file
/// when the shutdown fires (within 10 s), else `timeout`.
fn child(marker: PathBuf) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let (trigger, mut stop) = shutdown::channel();
        assert!(shutdown::on_supervisor_exit(trigger).is_some(), "started with the supervisor's pid");
        std::fs::write(marker.with_extension("ready"), b"").expect("ready marker");
        let what = match tokio::time::timeout(Duration::from_secs(10), stop.wait()).await {
            Ok(()) => "fired",
            Err(_) => "timeout",
        };
        std::fs::write(&marker, what).expect("marker");
    });
}

#[test]
fn a_service_stops_when_its_supervisor_is_killed() {
    if let Ok(m) = std::env::var(CHILD) {
        return child(PathBuf::from(m));
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let marker = dir.path().join("child.done");
    let exe = std::env::current_exe().expect("the test binary");
    // The shell is the supervisor: the service is its child and is told
    // the shell's pid, as `duet unit` does.
    let script = format!(
        "DUET_SUPERVISOR_PID=$$ {CHILD}={m} '{exe}' --exact a_service_stops_when_its_supervisor_is_killed --nocapture --test-threads=1 & wait",
        m = marker.display(),
        exe = exe.display(),
    );
    let mut shell = Command::new("sh").arg("-c").arg(script).stdout(Stdio::null()).spawn().expect("sh");
    let ready = marker.with_extension("ready");
    let t = Instant::now();
    while !ready.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "the child did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(!marker.exists(), "the child stopped with its supervisor alive");
    shell.kill().expect("SIGKILL the supervisor");
    let killed = Instant::now();
    let _ = shell.wait();
    while !marker.exists() {
        assert!(killed.elapsed() < Duration::from_secs(10), "the child never stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The write may be in progress: read until it has its content.
    let mut what = String::new();
    while what.is_empty() && killed.elapsed() < Duration::from_secs(10) {
        what = std::fs::read_to_string(&marker).unwrap_or_default();
    }
    let took = killed.elapsed();
    assert_eq!(what, "fired");
    // A pidfd wakes it at once; the old 500 ms poll took up to 500 ms.
    assert!(took < Duration::from_millis(400), "stopped {took:?} after its supervisor died");
}
