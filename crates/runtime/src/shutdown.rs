//! One shutdown signal for a whole process.
//!
//! [`channel`] gives a [`Trigger`] (kept by whoever decides to stop: the
//! signal handler, a test) and [`Shutdown`] handles (cloned into every task
//! and server). Waiting is cheap and can be done any number of times.

use tokio::sync::watch;

/// Fires the shutdown.
#[derive(Debug, Clone)]
pub struct Trigger(watch::Sender<bool>);

/// Waits for the shutdown.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and its first handle.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Tells every handle to stop.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    /// A new handle.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Resolves once the shutdown fired (at once if it already has).
    pub async fn wait(&mut self) {
        // An error means every trigger is gone: nobody can stop us any
        // more, which is as good as being told to stop.
        let _ = self.0.wait_for(|v| *v).await;
    }

    /// Whether the shutdown fired.
    pub fn fired(&self) -> bool {
        *self.0.borrow()
    }

    /// A future that resolves on shutdown, for `serve_with_shutdown`.
    pub fn future(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut s = self.clone();
        async move { s.wait().await }
    }
}

/// Fires `trigger` on SIGTERM or SIGINT; returns the handler task.
pub fn on_signals(trigger: Trigger) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutting down");
        trigger.fire();
    }))
}

/// The shutdown of a service process: SIGTERM or SIGINT, or (when the
/// unit supervisor started it) the supervisor's exit.
pub fn for_service() -> std::io::Result<Shutdown> {
    let (trigger, shutdown) = channel();
    let _ = on_supervisor_exit(trigger.clone());
    on_signals(trigger)?;
    Ok(shutdown)
}

/// Environment variable the unit supervisor sets for its services: its pid.
pub const SUPERVISOR_ENV: &str = "DUET_SUPERVISOR_PID";

/// For a service started by the unit supervisor (which runs it in its own
/// process group, so that a signal to the supervisor's group reaches the
/// supervisor alone): fires `trigger` when the supervisor is gone, so that
/// no service outlives it and clashes with the ones it starts next time.
/// A thread of its own waits on a pidfd of the supervisor (readable when it
/// exits): no polling, no wakeups while it lives. Does nothing when the
/// service was not started by a supervisor.
pub fn on_supervisor_exit(trigger: Trigger) -> Option<std::thread::JoinHandle<()>> {
    let pid: i32 = std::env::var(SUPERVISOR_ENV).ok()?.parse().ok()?;
    let watched = rustix::process::Pid::from_raw(pid)
        .ok_or(rustix::io::Errno::INVAL)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()));
    let spawned = std::thread::Builder::new().name("supervisor-watch".into()).spawn(move || {
        let gone = |how: &str| {
            tracing::error!(supervisor = pid, "the unit supervisor is gone ({how}): stopping");
            trigger.fire();
        };
        // The pidfd was opened before this check: an exit in between
        // shows here, one after it makes the pidfd readable.
        if nix::unistd::getppid().as_raw() != pid {
            return gone("not the parent");
        }
        match watched {
            Ok(fd) => {
                let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
                loop {
                    match rustix::event::poll(&mut fds, None) {
                        Err(rustix::io::Errno::INTR) => {}
                        Ok(_) => return gone("exited"),
                        Err(e) => {
                            tracing::warn!(supervisor = pid, "cannot wait on the supervisor's pidfd ({e})");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(supervisor = pid, "cannot open a pidfd of the unit supervisor ({e})"),
        }
        tracing::warn!(supervisor = pid, "checking that the unit supervisor lives every 500 ms instead");
        while nix::unistd::getppid().as_raw() == pid {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        gone("not the parent");
    });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!("cannot start the supervisor watch thread ({e}): the service may outlive its supervisor");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_every_handle_once_and_for_all() {
        let (t, s) = channel();
        let mut a = s.clone();
        let mut b = t.subscribe();
        assert!(!a.fired());
        t.fire();
        a.wait().await;
        b.wait().await;
        b.wait().await;
        assert!(s.fired());
    }
}
