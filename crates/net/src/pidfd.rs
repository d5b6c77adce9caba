//! A process's exit as an event: a pidfd (Linux 5.3) becomes readable when
//! the process exits, so a watcher learns it at once instead of polling.

use std::io;
use std::os::fd::OwnedFd;

use rustix::process::{Pid, PidfdFlags, pidfd_open};
use tokio::io::unix::AsyncFd;

/// A process being watched.
#[derive(Debug)]
pub struct ProcessWatch {
    pid: i32,
    fd: AsyncFd<OwnedFd>,
}

impl ProcessWatch {
    /// Watches process `pid` (which must exist now). Needs a tokio runtime.
    pub fn open(pid: i32) -> io::Result<Self> {
        let p =
            Pid::from_raw(pid).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid must be positive"))?;
        let fd = pidfd_open(p, PidfdFlags::NONBLOCK)?;
        Ok(Self { pid, fd: crate::timer::register(fd)? })
    }

    /// The process's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the process has exited (a zombie not reaped yet counts).
    pub fn exited(&self) -> bool {
        let mut fds = [rustix::event::PollFd::new(self.fd.get_ref(), rustix::event::PollFlags::IN)];
        matches!(rustix::event::poll(&mut fds, Some(&rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 })), Ok(n) if n > 0)
    }

    /// Returns once the process has exited.
    pub async fn wait(&self) {
        // Readable means exited; it stays readable, so no clearing needed.
        let _ = self.fd.readable().await.map(|mut g| g.retain_ready());
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn the_exit_of_a_process_is_an_event() {
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn().expect("sleep runs");
        let w = ProcessWatch::open(i32::try_from(child.id()).unwrap()).expect("a pidfd");
        assert!(!w.exited());
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), w.wait()).await.expect("the exit arrives");
        assert!(t.elapsed() >= Duration::from_millis(150), "not before it exits");
        assert!(w.exited(), "a zombie counts as exited");
        child.wait().unwrap();
        assert!(ProcessWatch::open(i32::try_from(child.id()).unwrap()).is_err(), "a reaped pid is gone");
    }
}
