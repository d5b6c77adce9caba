//! The tracked checks' probes (E16): one task per `[[track]]` entry, each
//! running its probe every interval (one run at a time, bounded by the
//! check's timeout) and handing the result to the driver, which hands it
//! to the core (fall/rise and what the role does are the core's).
//!
//! A process check does not poll a process it has found: it holds a
//! pidfd, and the process's exit wakes the task at once. Finding the
//! process (by name or pidfile) is a look at `/proc` per interval until it
//! is there. A command runs in its own process group as the configured
//! unprivileged user (when duet is root), in the normal scheduling policy
//! even when the election runs real-time, and is killed with its group at
//! the timeout.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use duet_config::{Probe, ProcessBy, RunAs, Track};
use duet_net::pidfd::ProcessWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Largest HTTP answer read (status line and the body searched).
const HTTP_MAX: usize = 64 * 1024;

/// One result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub output: String,
    pub took: Duration,
}

/// Runs the check `track` every interval, sending each result to `tx`,
/// until `tx`'s receiver is gone.
pub(crate) async fn run(track: Track, tx: mpsc::Sender<CheckResult>) {
    let mut watch: Option<ProcessWatch> = None;
    loop {
        let start = Instant::now();
        // A command bounds itself (it kills its process group at the
        // timeout); every other probe is cut off here.
        let bounded = matches!(track.probe, Probe::Command { .. });
        let (ok, output) = if bounded {
            probe(&track, &mut watch).await
        } else {
            match tokio::time::timeout(track.timeout, probe(&track, &mut watch)).await {
                Ok(r) => r,
                Err(_) => (false, format!("no answer within {} ms (timeout_ms)", track.timeout.as_millis())),
            }
        };
        let result = CheckResult { name: track.name.clone(), ok, output, took: start.elapsed() };
        if tx.send(result).await.is_err() {
            return;
        }
        let next = tokio::time::Instant::from_std(start + track.interval);
        match &watch {
            // The process's exit is looked at at once.
            Some(w) => {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    () = w.wait() => {}
                }
            }
            None => tokio::time::sleep_until(next).await,
        }
    }
}

/// Runs the check's probe once: whether it passed, and what it said.
pub(crate) async fn probe(track: &Track, watch: &mut Option<ProcessWatch>) -> (bool, String) {
    match &track.probe {
        Probe::Process(by) => process(by, watch),
        Probe::Command { argv, run_as } => command(&track.name, argv, run_as, track.timeout).await,
        Probe::Tcp(addr) => match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => (true, format!("{addr} accepts connections")),
            Err(e) => (false, format!("{addr}: {e}")),
        },
        Probe::Http { address, path, expect_status, expect_body } => {
            http(*address, path, *expect_status, expect_body.as_deref()).await
        }
        Probe::Interface { name, has_address } => interface(name, *has_address),
        Probe::File(path) => file(path),
        Probe::Dataplane => match tokio::task::spawn_blocking(|| {
            (duet_dataplane::table_exists(), duet_net::sysctl::read(CONNTRACK_EVENTS).ok())
        })
        .await
        {
            Ok((table, events)) => dataplane(table, events.as_deref()),
            Err(e) => (false, format!("the data plane's check did not finish: {e}")),
        },
    }
}

/// The kernel's switch for connection-tracking events: the replicator hears
/// new and changed connections through them (0: off; 1: on; 2: on while a
/// listener is subscribed).
const CONNTRACK_EVENTS: &str = "net.netfilter.nf_conntrack_events";

/// The data plane's verdict: duet's nftables table in place, and conntrack
/// events not switched off (`events` is the sysctl's value; `None` when
/// conntrack is not loaded, which the replicator loads when it starts).
fn dataplane(table: Result<bool, duet_dataplane::DataplaneError>, events: Option<&str>) -> (bool, String) {
    match (table, events) {
        (Err(e), _) => (false, format!("cannot list nftables tables: {e}")),
        (Ok(false), _) => (false, "duet's nftables table is missing".into()),
        (Ok(true), Some("0")) => (
            false,
            format!(
                "{CONNTRACK_EVENTS} = 0: the kernel sends no connection events, so the replicator hears no \
                 connection; set it to 1"
            ),
        ),
        (Ok(true), Some(v)) => (true, format!("duet's nftables table is in place; conntrack events on ({v})")),
        (Ok(true), None) => (true, "duet's nftables table is in place (conntrack not loaded yet)".into()),
    }
}

/// A process check: the watched process is still there, or one is found
/// (and watched from now on).
fn process(by: &ProcessBy, watch: &mut Option<ProcessWatch>) -> (bool, String) {
    if let Some(w) = watch {
        if !w.exited() {
            return (true, format!("pid {} running", w.pid()));
        }
        let gone = w.pid();
        *watch = None;
        if let Some((pid, _)) = find(by) {
            return adopt(pid, watch).unwrap_or_else(|| (false, format!("pid {gone} exited")));
        }
        return (false, format!("pid {gone} exited"));
    }
    match find(by) {
        Some((pid, _)) => adopt(pid, watch).unwrap_or_else(|| (false, format!("pid {pid} exited"))),
        None => (
            false,
            match by {
                ProcessBy::Name(n) => format!("no process named {n}"),
                ProcessBy::Pidfile(p) => format!("no running process in {}", p.display()),
            },
        ),
    }
}

/// Watches `pid`; `None` when it is gone already.
fn adopt(pid: i32, watch: &mut Option<ProcessWatch>) -> Option<(bool, String)> {
    match ProcessWatch::open(pid) {
        Ok(w) => {
            *watch = Some(w);
            Some((true, format!("pid {pid} running")))
        }
        Err(e) if e.raw_os_error() == Some(3) => None,
        // No pidfd (an old kernel): the process is there now; it is looked
        // at again next interval.
        Err(_) => Some((true, format!("pid {pid} running"))),
    }
}

/// The process `by` names: its pid and name. A name matches a process of
/// this network namespace (units in one pid namespace, as in a lab, each
/// see their own), not a zombie.
pub(crate) fn find(by: &ProcessBy) -> Option<(i32, String)> {
    match by {
        ProcessBy::Pidfile(p) => {
            let pid: i32 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
            alive(pid).then(|| (pid, comm(pid).unwrap_or_default()))
        }
        ProcessBy::Name(name) => {
            let own_ns = std::fs::read_link("/proc/self/ns/net").ok();
            let me = std::process::id();
            std::fs::read_dir("/proc").ok()?.flatten().find_map(|d| {
                let pid: i32 = d.file_name().to_str()?.parse().ok()?;
                if u32::try_from(pid).ok() == Some(me) || !matches_name(pid, name) || !alive(pid) {
                    return None;
                }
                // A process whose namespace cannot be read (not ours to
                // look at) is taken at its name.
                let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
                if let (Some(a), Some(b)) = (&own_ns, &ns)
                    && a != b
                {
                    return None;
                }
                Some((pid, name.clone()))
            })
        }
    }
}

fn comm(pid: i32) -> Option<String> {
    Some(std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim_end().to_owned())
}

/// The kernel's short name (15 bytes) or the program's base name.
fn matches_name(pid: i32, name: &str) -> bool {
    let short = &name.as_bytes()[..name.len().min(15)];
    if comm(pid).is_some_and(|c| c.as_bytes() == short) {
        return true;
    }
    std::fs::read(format!("/proc/{pid}/cmdline")).ok().is_some_and(|c| {
        let argv0 = c.split(|b| *b == 0).next().unwrap_or_default();
        argv0.rsplit(|b| *b == b'/').next() == Some(name.as_bytes())
    })
}

/// Exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next()))
        .is_some_and(|state| !matches!(state, Some('Z' | 'X')))
}

/// A command check: exit status 0 passes; its first output line is kept.
async fn command(name: &str, argv: &[String], run_as: &RunAs, timeout: Duration) -> (bool, String) {
    let (program, args) = argv.split_first().expect("checked: a command has a program");
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("DUET_CHECK", name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    if nix::unistd::geteuid().is_root() {
        // std drops the supplementary groups when it changes the uid.
        cmd.uid(run_as.uid).gid(run_as.gid);
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run {program} as {}: {e}", run_as.name)),
    };
    // A run cut short (the timeout, or the task dropped) takes its group
    // with it; a command that ended is reaped, and its group id may be
    // anyone's soon, so it is left alone.
    let mut group = GroupKill(child.id().and_then(|p| i32::try_from(p).ok()));
    let done = tokio::time::timeout(timeout, child.wait_with_output()).await;
    if done.is_ok() {
        group.0 = None;
    }
    match done {
        Ok(Ok(out)) => {
            let text = if out.stdout.iter().any(|b| !b.is_ascii_whitespace()) { &out.stdout } else { &out.stderr };
            let line = String::from_utf8_lossy(text).trim().lines().next().unwrap_or("").to_owned();
            let said = if line.is_empty() { out.status.to_string() } else { format!("{}: {line}", out.status) };
            (out.status.success(), said)
        }
        Ok(Err(e)) => (false, format!("{program}: {e}")),
        Err(_) => {
            drop(group);
            (false, format!("still running after {} ms: killed (timeout_ms)", timeout.as_millis()))
        }
    }
}

/// Kills a command's process group when dropped, unless disarmed (`None`).
struct GroupKill(Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// An HTTP check: `GET path` over HTTP/1.0 answers `expect` (and the
/// body holds `body`).
async fn http(addr: SocketAddr, path: &str, expect: u16, body: Option<&str>) -> (bool, String) {
    let mut s = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return (false, format!("{addr}: {e}")),
    };
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: duet-track\r\nConnection: close\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return (false, format!("{addr}: {e}"));
    }
    let mut answer = Vec::new();
    if let Err(e) = (&mut s).take(HTTP_MAX as u64).read_to_end(&mut answer).await {
        return (false, format!("{addr}: {e}"));
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse::<u16>().ok());
    let Some(status) = status else {
        return (false, format!("{addr}{path}: not an HTTP answer"));
    };
    if status != expect {
        return (false, format!("{addr}{path}: HTTP {status}, expected {expect}"));
    }
    let content = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    match body {
        Some(want) if !content.contains(want) => (false, format!("{addr}{path}: HTTP {status}, body lacks \"{want}\"")),
        _ => (true, format!("{addr}{path}: HTTP {status}")),
    }
}

/// An interface check: the link up with carrier (and the address on it).
fn interface(name: &str, has_address: Option<std::net::Ipv4Addr>) -> (bool, String) {
    let dir = Path::new("/sys/class/net").join(name);
    let Ok(oper) = std::fs::read_to_string(dir.join("operstate")) else {
        return (false, format!("no interface {name}"));
    };
    let oper = oper.trim();
    // A device without carrier reporting (loopback, dummy) says "unknown".
    let carrier = std::fs::read_to_string(dir.join("carrier")).is_ok_and(|c| c.trim() == "1");
    if !carrier || !matches!(oper, "up" | "unknown") {
        return (false, format!("{name} is {oper}{}", if carrier { "" } else { ", no carrier" }));
    }
    if let Some(want) = has_address {
        let present = nix::ifaddrs::getifaddrs().is_ok_and(|mut a| {
            a.any(|i| {
                i.interface_name == name && i.address.and_then(|s| s.as_sockaddr_in().map(|v4| v4.ip())) == Some(want)
            })
        });
        if !present {
            return (false, format!("{name} is up without {want}"));
        }
    }
    (true, format!("{name} is up"))
}

/// A file check: the file holds the number 0.
fn file(path: &Path) -> (bool, String) {
    match std::fs::read_to_string(path) {
        Ok(s) => match s.trim().parse::<i64>() {
            Ok(0) => (true, format!("{}: 0", path.display())),
            Ok(n) => (false, format!("{}: {n}", path.display())),
            Err(_) => (false, format!("{}: \"{}\" is not a number", path.display(), s.trim())),
        },
        Err(e) => (false, format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use duet_carp::Effect;

    use super::*;

    fn track(probe: Probe, interval_ms: u64, timeout_ms: u64) -> Track {
        Track {
            name: "t".into(),
            probe,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            fall: 1,
            rise: 1,
            effect: Effect::Demote,
        }
    }

    fn me() -> RunAs {
        let name = if nix::unistd::geteuid().is_root() { "nobody" } else { "self" };
        let u = nix::unistd::User::from_name(name).ok().flatten();
        RunAs {
            name: name.into(),
            uid: u.as_ref().map_or(nix::unistd::geteuid().as_raw(), |u| u.uid.as_raw()),
            gid: u.as_ref().map_or(nix::unistd::getegid().as_raw(), |u| u.gid.as_raw()),
        }
    }

    fn sh(script: &str) -> Probe {
        Probe::Command { argv: vec!["/bin/sh".into(), "-c".into(), script.into()], run_as: me() }
    }

    #[tokio::test]
    async fn commands_pass_on_exit_zero_and_say_their_first_line() {
        let mut w = None;
        let (ok, out) = probe(&track(sh("echo fine; echo more"), 1000, 1000), &mut w).await;
        assert!(ok && out.ends_with("fine"), "{out}");
        let (ok, out) = probe(&track(sh("echo broken >&2; exit 3"), 1000, 1000), &mut w).await;
        assert!(!ok && out.contains("exit status: 3") && out.ends_with("broken"), "{out}");
        if nix::unistd::geteuid().is_root() {
            let (ok, out) = probe(&track(sh("id -u"), 1000, 1000), &mut w).await;
            assert!(ok && !out.ends_with(": 0"), "a check never runs as root: {out}");
        }
    }

    fn spawn(tracks: Vec<Track>, tx: mpsc::Sender<CheckResult>) -> Vec<tokio::task::JoinHandle<()>> {
        tracks.into_iter().map(|t| tokio::spawn(run(t, tx.clone()))).collect()
    }

    /// A check that hangs is killed at its timeout with what it started,
    /// counts as a failure, and never piles up: one instance at a time
    /// over 100 intervals.
    #[tokio::test]
    async fn a_hanging_command_is_killed_at_its_timeout_and_never_piles_up() {
        let dir = tempfile::tempdir().unwrap();
        // The check runs as nobody when the test is root.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let marker = dir.path().join("running");
        let nap = format!("29.{}", std::process::id());
        let script = format!(
            "if [ -e {m} ]; then echo overlap; exit 9; fi; touch {m}; trap 'rm -f {m}' EXIT; sleep {nap} & wait",
            m = marker.display()
        );
        let (tx, mut rx) = mpsc::channel(16);
        let mut t = track(sh(&script), 100, 60);
        t.name = "hang".into();
        let tasks = spawn(vec![t], tx);
        let start = Instant::now();
        for _ in 0..100 {
            let r = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
            assert!(!r.ok && r.output.contains("killed (timeout_ms)"), "{r:?}");
            assert!(r.took < Duration::from_millis(100), "{r:?}");
            // SIGKILL leaves no trap to run: clear the marker for the next.
            let _ = std::fs::remove_file(&marker);
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(9_900), "one run per interval, {took:?}");
        for t in tasks {
            t.abort();
        }
        // No sleep of any run is left.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left = std::process::Command::new("pgrep").args(["-fx", &format!("sleep {nap}")]).output().unwrap();
        let mine = String::from_utf8_lossy(&left.stdout).trim().to_owned();
        assert!(mine.is_empty(), "left running: {mine:?}");
    }

    #[tokio::test]
    async fn a_process_exit_is_seen_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("lb.pid");
        let mut child = std::process::Command::new("sleep").arg("0.3").spawn().unwrap();
        std::fs::write(&pidfile, format!("{}\n", child.id())).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let tasks = spawn(vec![track(Probe::Process(ProcessBy::Pidfile(pidfile)), 10_000, 1000)], tx);
        let first = rx.recv().await.unwrap();
        assert!(first.ok, "{first:?}");
        let t = Instant::now();
        let exited = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await.unwrap().unwrap();
        assert!(!exited.ok, "{exited:?}");
        assert!(t.elapsed() < Duration::from_secs(2), "the exit, not the 10 s interval: {:?}", t.elapsed());
        child.wait().unwrap();
        for t in tasks {
            t.abort();
        }
        let by_name = find(&ProcessBy::Name("no-such-program-here".into()));
        assert!(by_name.is_none());
    }

    #[tokio::test]
    async fn tcp_http_file_and_interface_probes() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let answer = if req.starts_with("GET /health ") {
                    "HTTP/1.0 200 OK\r\n\r\nall good"
                } else {
                    "HTTP/1.0 503 Busy\r\n\r\nno"
                };
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        let mut w = None;
        let http = |path: &str, body: Option<&str>| {
            track(
                Probe::Http { address: addr, path: path.into(), expect_status: 200, expect_body: body.map(Into::into) },
                1000,
                1000,
            )
        };
        assert!(probe(&track(Probe::Tcp(addr), 1000, 1000), &mut w).await.0);
        assert!(probe(&http("/health", Some("good")), &mut w).await.0);
        let (ok, out) = probe(&http("/other", None), &mut w).await;
        assert!(!ok && out.contains("HTTP 503, expected 200"), "{out}");
        let (ok, out) = probe(&http("/health", Some("great")), &mut w).await;
        assert!(!ok && out.contains("body lacks"), "{out}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("health");
        std::fs::write(&f, "0\n").unwrap();
        assert!(probe(&track(Probe::File(f.clone()), 1000, 1000), &mut w).await.0);
        std::fs::write(&f, "2").unwrap();
        assert!(!probe(&track(Probe::File(f), 1000, 1000), &mut w).await.0);
        let lo = |a: [u8; 4]| track(Probe::Interface { name: "lo".into(), has_address: Some(a.into()) }, 1000, 1000);
        assert!(probe(&lo([127, 0, 0, 1]), &mut w).await.0);
        let (ok, out) = probe(&lo([198, 18, 9, 9]), &mut w).await;
        assert!(!ok && out.contains("without 198.18.9.9"), "{out}");
        let none = track(Probe::Interface { name: "nosuch0".into(), has_address: None }, 1000, 1000);
        assert!(!probe(&none, &mut w).await.0);
    }
}
