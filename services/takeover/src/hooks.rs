//! Notify hooks (O6): the unit file's `[hooks]` commands, run when the
//! takeover has applied a role (so `on_active` runs with the addresses
//! up). One runs at a time, in the order the roles came, each bounded by
//! the timeout (then its process group is killed); a queue that is full
//! drops the hook and says so. Nothing here waits on the takeover's loop.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duet_config::{HookKind, Hooks};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Hooks queued while one runs.
const QUEUE: usize = 16;

/// One hook to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fire {
    pub kind: HookKind,
    /// The role before (its word, as `DUET_PREVIOUS`).
    pub previous: &'static str,
    pub reason: String,
}

/// The runner's end in the takeover.
#[derive(Debug)]
pub(crate) struct Runner {
    tx: Option<mpsc::Sender<Fire>>,
    task: Option<JoinHandle<()>>,
    last: Option<HookKind>,
}

impl Runner {
    /// Starts the runner for `hooks` of `unit`; without hooks it does nothing.
    pub(crate) fn spawn(hooks: Hooks, unit: String) -> Self {
        if !hooks.any() {
            return Self { tx: None, task: None, last: None };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let runs = duet_runtime::instruments::counter(&duet_runtime::instruments::HOOKS_RUNS);
        let task = tokio::spawn(run(rx, Arc::new(hooks), unit, runs));
        Self { tx: Some(tx), task: Some(task), last: None }
    }

    /// Queues the hook of `kind` unless it is the one that ran last (a role
    /// applied again, as after a reconnect, is not news).
    pub(crate) fn fire(&mut self, kind: HookKind, previous: &'static str, reason: &str) {
        let Some(tx) = &self.tx else { return };
        if self.last == Some(kind) {
            return;
        }
        self.last = Some(kind);
        if tx.try_send(Fire { kind, previous, reason: reason.to_owned() }).is_err() {
            tracing::warn!(role = kind.as_str(), "notify hook skipped: {QUEUE} hooks are already waiting");
        }
    }

    /// The role word of the last hook queued (`DUET_PREVIOUS` of the next).
    pub(crate) fn last(&self) -> &'static str {
        self.last.map_or("starting", HookKind::as_str)
    }

    /// Lets queued hooks finish within `grace`, then kills what runs.
    pub(crate) async fn stop(&mut self, grace: Duration) {
        drop(self.tx.take());
        if let Some(mut t) = self.task.take()
            && tokio::time::timeout(grace, &mut t).await.is_err()
        {
            tracing::warn!("notify hooks still running at stop: killed");
            t.abort();
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Fire>, hooks: Arc<Hooks>, unit: String, runs: Counter<u64>) {
    while let Some(f) = rx.recv().await {
        let Some(cmd) = hooks.command(f.kind) else { continue };
        let result = run_one(cmd, &f, &unit, hooks.timeout).await;
        runs.add(1, &[KeyValue::new("role", f.kind.as_str()), KeyValue::new("result", result)]);
    }
}

/// Runs one hook; its result's word.
async fn run_one(cmd: &[String], f: &Fire, unit: &str, timeout: Duration) -> &'static str {
    let (program, args) = cmd.split_first().expect("checked: a hook has a program");
    let start = Instant::now();
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("DUET_ROLE", f.kind.as_str())
        .env("DUET_PREVIOUS", f.previous)
        .env("DUET_REASON", &f.reason)
        .env("DUET_UNIT", unit)
        .stdin(Stdio::null())
        // Its own group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(role = f.kind.as_str(), "notify hook {program} could not start: {e}");
            return "error";
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) if s.success() => {
            tracing::info!(
                role = f.kind.as_str(),
                took_ms = start.elapsed().as_millis() as u64,
                "notify hook {program} done"
            );
            "ok"
        }
        Ok(Ok(s)) => {
            tracing::warn!(role = f.kind.as_str(), "notify hook {program} failed: {s}");
            "failed"
        }
        Ok(Err(e)) => {
            tracing::error!(role = f.kind.as_str(), "notify hook {program}: {e}");
            "error"
        }
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait().await;
            tracing::warn!(
                role = f.kind.as_str(),
                "notify hook {program} still running after {} ms: killed (hooks.timeout_ms)",
                timeout.as_millis()
            );
            "timeout"
        }
    }
}
