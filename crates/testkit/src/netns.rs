//! Namespace names, entering a namespace from a thread, the processes
//! inside a namespace, and sweeping the leftovers (namespaces, lab
//! directories) of killed runs.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cmd;
use crate::error::{Error, Result, chain};

/// Every namespace the harness creates starts with this, followed by the
/// creating process's pid and a per-process counter in letters, then `-`.
/// The sweep recognises exactly that shape and nothing else.
pub(crate) const MARKER: &str = "dk";

/// A lab directory is `<tmp>/<DIR_PREFIX><lab prefix><random>`.
pub(crate) const DIR_PREFIX: &str = "duet-testkit-";

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Bound for the short `ip` commands the sweep runs.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(10);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh prefix `dk<pid><letters>-<tag>-`, where `tag` is the test name
/// reduced to at most 8 lowercase letters and digits (left out when empty).
/// `exists` is asked whether namespaces with a candidate prefix are already
/// present; that happens when a dead run had our pid, and then the next
/// counter is tried (the sweep will collect those once we are gone too).
pub(crate) fn new_prefix(test: &str, mut exists: impl FnMut(&str) -> bool) -> String {
    let tag: String =
        test.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).take(8).collect();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut prefix = format!("{MARKER}{}{}-", process::id(), letters(n));
        if !tag.is_empty() {
            prefix.push_str(&tag);
            prefix.push('-');
        }
        if !exists(&prefix) {
            return prefix;
        }
    }
}

/// `n` in base 26 with digits `a`..`z`: a letter run keeps the pid and the
/// counter apart without a separator.
fn letters(mut n: u32) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (n % 26) as u8);
        n /= 26;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII letters")
}

/// The pid encoded in a harness namespace name, or `None` if `name` does not
/// have the exact harness shape `dk<digits><letters>-...`.
pub(crate) fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(MARKER)?;
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (pid, rest) = rest.split_at(digits);
    let letters = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_lowercase()).len();
    if pid.is_empty() || pid.starts_with('0') || letters == 0 || !rest[letters..].starts_with('-') {
        return None;
    }
    pid.parse().ok()
}

/// Whether a process with this pid exists (a zombie counts; so does one we
/// may not signal).
fn pid_alive(pid: i32) -> bool {
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// Names of all named network namespaces.
pub(crate) fn list() -> Vec<String> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()
}

pub(crate) fn path(ns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(ns)
}

/// Pids of the processes whose network namespace is `ns` (a name under
/// `/run/netns`, such as [`Lab::ns`](crate::Lab::ns) returns), sorted.
///
/// It looks as `ip netns pids` does, by the namespace file's device and
/// inode, but reads `/proc` itself: no process is started, which matters
/// when a benchmark times a crash. This process is never included, even
/// while some of its threads are inside ([`in_netns`]).
pub fn pids_in(ns: &str) -> Result<Vec<u32>> {
    let target = fs::metadata(path(ns)).map_err(Error::io(format!("looking up namespace {ns}")))?;
    let me = process::id();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").map_err(Error::io("listing /proc"))?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        // A process may exit while we look: skip it.
        if let Ok(m) = fs::metadata(format!("/proc/{pid}/ns/net"))
            && m.dev() == target.dev()
            && m.ino() == target.ino()
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// SIGKILLs every process in namespace `ns` at once (all but this one, see
/// [`pids_in`]), as a host that loses power would stop; returns how many
/// were signalled. Their parents reap them: a [`Proc`](crate::Proc) is
/// still to be killed or dropped.
pub fn kill_all_in(ns: &str) -> Result<usize> {
    let pids = pids_in(ns)?;
    for &pid in &pids {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    Ok(pids.len())
}

/// Deletes namespace `ns`; one that is already gone is not an error.
pub(crate) fn delete(ns: &str, timeout: Duration) -> Result<()> {
    if !path(ns).exists() {
        return Ok(());
    }
    cmd::check(&["ip", "netns", "del", ns], timeout).map(drop)
}

/// Removes the namespaces of earlier runs that died without tearing down:
/// those with the harness shape whose owning pid no longer exists. Their
/// processes are killed first, since a namespace lives on while a process
/// is inside it. Failures are printed, not returned: a sweep is best effort
/// and another process may be sweeping the same names right now.
pub(crate) fn sweep() {
    let stale: Vec<String> =
        list().into_iter().filter(|name| owner_pid(name).is_some_and(|pid| !pid_alive(pid))).collect();
    for ns in &stale {
        if let Err(e) = kill_all_in(ns) {
            eprintln!("duet-testkit: sweeping {ns}: {}", chain(&e));
        }
    }
    for ns in &stale {
        if let Err(e) = delete(ns, SWEEP_TIMEOUT) {
            eprintln!("duet-testkit: sweeping {ns}: {}", chain(&e));
        }
    }
}

/// Removes the lab directories (`<tmp>/<DIR_PREFIX><prefix>...`) of earlier
/// runs whose owning pid no longer exists, as [`sweep`] does for namespaces.
pub(crate) fn sweep_dirs() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = fs::read_dir(&tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let stale = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(owner_pid)
            .is_some_and(|pid| !pid_alive(pid));
        if stale && let Err(e) = fs::remove_dir_all(entry.path()) {
            eprintln!("duet-testkit: sweeping {}: {e}", entry.path().display());
        }
    }
}

/// Runs `f` on a fresh OS thread that has entered network namespace `ns`
/// (a name under `/run/netns`, such as [`Lab::ns`](crate::Lab::ns) returns),
/// and returns its result.
///
/// Only that thread (and threads it starts) is moved; the rest of the process
/// stays where it was. Sockets opened by `f` belong to `ns` and keep working
/// after it returns, e.g. when moved out in `T`. Note that `/proc/net` and
/// `/sys/class/net` follow the process and its mounts, not the thread: read
/// `/proc/thread-self/net/...` instead. A panic in `f` is resumed in the
/// caller, so assertions inside `f` fail the test as usual.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    if ns.is_empty() || ns.contains('/') {
        return Err(Error::InvalidName { kind: "namespace", name: ns.to_owned(), rule: "not empty, no '/'" });
    }
    let path = path(ns);
    let file = File::open(&path).map_err(Error::io(format!("opening {}", path.display())))?;
    let ns_name = ns.to_owned();
    let handle = thread::Builder::new()
        .name(format!("netns {ns}"))
        .spawn(move || -> Result<T> {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| Error::EnterNetns { ns: ns_name, source })?;
            drop(file);
            Ok(f())
        })
        .map_err(Error::io("spawning a thread"))?;
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_unique_and_unpadded() {
        assert_eq!(letters(0), "a");
        assert_eq!(letters(25), "z");
        assert_eq!(letters(26), "ba");
        assert_eq!(letters(27), "bb");
    }

    #[test]
    fn owner_pid_accepts_only_the_harness_shape() {
        assert_eq!(owner_pid("dk1234a-h1"), Some(1234));
        assert_eq!(owner_pid("dk1234ba-ping-switch"), Some(1234));
        assert_eq!(owner_pid("dk1234a-"), Some(1234));
        for other in ["dk", "dka-h1", "dk1234-h1", "dk1234a", "dk1234ah1", "dk01a-x", "xdk1a-", "dk12A-x", "docker"] {
            assert_eq!(owner_pid(other), None, "{other}");
        }
    }

    #[test]
    fn prefixes_carry_pid_counter_and_tag() {
        let a = new_prefix("Ping two-hosts!", |_| false);
        let b = new_prefix("", |_| false);
        assert_eq!(owner_pid(&a), Some(process::id() as i32));
        assert!(a.ends_with("-pingtwoh-"), "{a}");
        assert_eq!(owner_pid(&b), Some(process::id() as i32));
        assert!(b.ends_with('-') && b.matches('-').count() == 1, "{b}");
        assert_ne!(a, b);
        let mut calls = 0;
        let c = new_prefix("t", |_| {
            calls += 1;
            calls == 1
        });
        assert_eq!(owner_pid(&c), Some(process::id() as i32));
    }
}
