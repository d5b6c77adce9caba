//! Long-running processes inside a lab host.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::error::{Error, Result, chain};

/// How many log lines an error message or a panic dump shows.
const TAIL_LINES: usize = 30;

/// A spawned child and, once reaped, its exit status.
///
/// The child leads its own process group (pgid = its pid). The kernel keeps
/// a pid from being reused while it names a live process, a zombie or a
/// non-empty process group, so signalling the group is safe until the leader
/// is reaped. Hence the rule here: look at the leader with `WNOWAIT` (which
/// leaves the zombie in place), signal the group while the leader is
/// unreaped, and reap only as the very last step; after that the group is
/// never signalled again.
#[derive(Debug)]
pub(crate) struct Reaper {
    child: Child,
    status: Option<ExitStatus>,
}

/// A child shared between its [`Proc`] and the lab that must stop it.
pub(crate) type Shared = Arc<Mutex<Reaper>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Reaper> {
    // A panic while holding the lock leaves the state consistent (every
    // field is updated in one assignment), so poisoning is ignored.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reaper {
    fn pgid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Whether the leader has exited, without reaping it.
    fn exited(&self) -> Result<bool> {
        if self.status.is_some() {
            return Ok(true);
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(self.pgid()), flags) {
            Ok(WaitStatus::StillAlive) => Ok(false),
            Ok(_) => Ok(true),
            Err(source) => Err(Error::Wait { pid: self.child.id(), source }),
        }
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        if self.status.is_some() {
            return Err(Error::Reaped { pid: self.child.id() });
        }
        match killpg(self.pgid(), sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(Error::Signal { signal: sig, pgid: self.pgid().as_raw(), source }),
        }
    }

    /// SIGKILLs the whole group (the leader too, if still running), then
    /// reaps the leader. Idempotent.
    fn reap(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        let status = self.child.wait().map_err(Error::io(format!("reaping process {}", self.child.id())))?;
        self.status = Some(status);
        Ok(status)
    }
}

/// Stops all `children` together: SIGTERM to each group, wait until every
/// leader has exited or `grace` has passed, then SIGKILL what is left of each
/// group and reap. Per child: `Some(status)` if it exited within the grace
/// period (or before), `None` if it had to be killed.
pub(crate) fn stop(children: &[Shared], grace: Duration) -> Vec<Result<Option<ExitStatus>>> {
    let deadline = Instant::now() + grace;
    for child in children {
        let child = lock(child);
        if !child.exited().unwrap_or(true) {
            let _ = child.signal(Signal::SIGTERM);
        }
    }
    // An error from `exited` counts as exited: `reap` will report it.
    let mut gone: Vec<bool> = vec![false; children.len()];
    loop {
        for (child, gone) in children.iter().zip(gone.iter_mut()) {
            *gone = *gone || lock(child).exited().unwrap_or(true);
        }
        let now = Instant::now();
        if gone.iter().all(|g| *g) || now >= deadline {
            break;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(10)));
    }
    children.iter().zip(gone).map(|(child, gone)| Ok(gone.then_some(lock(child).reap()?))).collect()
}

/// Starts `argv` in namespace `ns` (through `ip netns exec`) in its own
/// process group, appending stdout and stderr to `log_path`.
pub(crate) fn spawn(ns: &str, label: &str, log_path: PathBuf, argv: &[&str], env: &[(&str, &str)]) -> Result<Proc> {
    if argv.is_empty() {
        return Err(Error::EmptyCommand);
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(Error::io(format!("opening {}", log_path.display())))?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(Error::io(format!("duplicating {}", log_path.display())))?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|source| Error::Spawn { command: format!("ip netns exec {ns} {}", argv.join(" ")), source })?;
    Ok(Proc {
        label: label.to_owned(),
        pid: child.id(),
        log_path,
        child: Arc::new(Mutex::new(Reaper { child, status: None })),
    })
}

/// A process spawned by [`Lab::spawn`](crate::Lab::spawn).
///
/// It leads its own process group, and signals go to the whole group, so
/// helpers it starts are reached too. Dropping the `Proc`, or tearing down
/// its lab, stops it: SIGTERM, then SIGKILL to whatever of the group is left
/// after 2 s, then reap. Reaping always SIGKILLs the rest of the group.
#[derive(Debug)]
pub struct Proc {
    label: String,
    pid: u32,
    log_path: PathBuf,
    child: Shared,
}

impl Proc {
    /// The grace period between SIGTERM and SIGKILL when a `Proc` or its lab
    /// is dropped.
    pub const DROP_GRACE: Duration = Duration::from_secs(2);

    pub(crate) fn shared(&self) -> Shared {
        Arc::clone(&self.child)
    }

    /// The label given to [`Lab::spawn`](crate::Lab::spawn).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Pid of the process (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `<lab dir>/<label>.log`, where its stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Current contents of its log (lossily decoded; empty if unreadable).
    pub fn log(&self) -> String {
        fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Sends `sig` to its process group. Fails once it has been reaped.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        lock(&self.child).signal(sig)
    }

    /// SIGKILLs its process group and reaps it. Idempotent.
    pub fn kill(&mut self) -> Result<()> {
        lock(&self.child).reap().map(drop)
    }

    /// SIGTERM, wait up to `grace` for it to exit, then SIGKILL (the rest of
    /// the group always) and reap. Returns `Some(status)` if it exited within
    /// `grace` (or had before), `None` if it had to be killed.
    pub fn terminate(&mut self, grace: Duration) -> Result<Option<ExitStatus>> {
        stop(&[self.shared()], grace).pop().expect("one result per child")
    }

    /// `Some(status)` once it has exited (reaping it), `None` while running.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let mut child = lock(&self.child);
        if child.exited()? { child.reap().map(Some) } else { Ok(None) }
    }

    /// Waits until its log contains `needle`. Fails after `timeout`, or as
    /// soon as the process has exited without logging it; the error shows the
    /// tail of the log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if lock(&self.child).exited().unwrap_or(false) {
                // It may have written the line just before exiting.
                if self.log().contains(needle) {
                    return Ok(());
                }
                return Err(Error::ExitedBeforeLog {
                    label: self.label.clone(),
                    pid: self.pid,
                    needle: needle.to_owned(),
                    tail: self.log_tail(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::LogTimeout {
                    label: self.label.clone(),
                    pid: self.pid,
                    needle: needle.to_owned(),
                    timeout,
                    tail: self.log_tail(),
                });
            }
            thread::sleep((deadline - now).min(Duration::from_millis(50)));
        }
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Err(e) = self.terminate(Self::DROP_GRACE) {
            eprintln!("duet-testkit: stopping {} (pid {}): {}", self.label, self.pid, chain(&e));
        }
    }
}

/// The last lines of a log file, with a heading naming it.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
    format!("last {} lines of {}:\n{}", tail.len(), path.display(), tail.join("\n"))
}
