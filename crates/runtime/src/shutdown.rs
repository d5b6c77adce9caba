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
/// Does nothing when the service was not started by a supervisor.
pub fn on_supervisor_exit(trigger: Trigger) -> Option<tokio::task::JoinHandle<()>> {
    let pid: i32 = std::env::var(SUPERVISOR_ENV).ok()?.parse().ok()?;
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if nix::unistd::getppid().as_raw() != pid {
                tracing::error!(supervisor = pid, "the unit supervisor is gone: stopping");
                trigger.fire();
                return;
            }
        }
    }))
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
