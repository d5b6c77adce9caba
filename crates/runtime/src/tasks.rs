//! Supervised tasks: each has a name; its failure (an error or a panic) is
//! logged and recorded, so health can report it; all are aborted when the
//! [`Tasks`] is dropped, so nothing outlives its owner.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// How a task failed. The text is what the log and health show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The task returned an error: its text in the alternate form (`{:#}`,
    /// which for error chains such as anyhow's includes the causes).
    #[error("{0}")]
    Failed(String),
    /// The task panicked, with this message (empty when it was not text).
    #[error("panicked: {0}")]
    Panicked(String),
    /// The task was cancelled from outside (its runtime shut down).
    #[error("cancelled: {0}")]
    Cancelled(String),
}

impl TaskError {
    /// A task's own error, in its alternate form.
    fn failed<E: std::fmt::Display>(e: E) -> Self {
        Self::Failed(format!("{e:#}"))
    }

    /// The outcome of a run spawned on its own (so that a panic is caught).
    fn joined(r: Result<Result<(), Self>, tokio::task::JoinError>) -> Result<(), Self> {
        match r {
            Ok(outcome) => outcome,
            Err(j) if j.is_panic() => Err(Self::Panicked(panic_message(j))),
            Err(j) => Err(Self::Cancelled(j.to_string())),
        }
    }
}

/// Runs `fut` on a task of its own (so that its panic is caught as a join
/// error) that is aborted when the caller's future is dropped: aborting a
/// [`Tasks`] ends the work itself, not only its supervisor.
async fn run_caught<F>(fut: F) -> Result<Result<(), TaskError>, tokio::task::JoinError>
where
    F: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let handle = tokio::spawn(fut);
    let _guard = AbortOnDrop(handle.abort_handle());
    handle.await
}

/// A failed task: its name, what happened and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub task: String,
    pub error: TaskError,
    pub at: std::time::Instant,
}

/// A set of named tasks.
#[derive(Debug)]
pub struct Tasks {
    set: JoinSet<(String, Result<(), TaskError>)>,
    failures: Arc<Mutex<Vec<Failure>>>,
    /// The number of failures so far, for those who wait on a new one.
    count: Arc<watch::Sender<usize>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self { set: JoinSet::new(), failures: Arc::default(), count: Arc::new(watch::channel(0).0) }
    }
}

/// Records a failure and tells those waiting on [`Tasks::watch_failures`].
fn record(failures: &Mutex<Vec<Failure>>, count: &watch::Sender<usize>, task: String, error: TaskError) {
    lock(failures).push(Failure { task, error, at: std::time::Instant::now() });
    count.send_modify(|c| *c += 1);
}

impl Tasks {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes whenever a task fails (the number of failures so far).
    pub fn watch_failures(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Spawns a task that runs once. An error or a panic ends it and is
    /// recorded as a failure (the error's alternate form, `{:#}`, which
    /// for error chains such as anyhow's includes the causes).
    pub fn spawn<F, E>(&mut self, name: &str, fut: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.supervise(name, async move { fut.await.map_err(TaskError::failed) });
    }

    /// Spawns a task built by `make` and builds it again after an error or
    /// a panic (logged and recorded), waiting `backoff` (doubling up to 16
    /// times it) between attempts. It ends only when a run returns `Ok`.
    pub fn spawn_restarting<M, F, E>(&mut self, name: &str, backoff: Duration, mut make: M)
    where
        M: FnMut() -> F + Send + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let failures = Arc::clone(&self.failures);
        let count = Arc::clone(&self.count);
        let task = name.to_string();
        self.supervise(name, async move {
            let mut delay = backoff;
            loop {
                let run = make();
                let e = match TaskError::joined(run_caught(async move { run.await.map_err(TaskError::failed) }).await) {
                    Ok(()) => return Ok(()),
                    Err(e @ TaskError::Cancelled(_)) => return Err(e),
                    Err(e) => e,
                };
                tracing::error!(task = %task, error = %e, retry_in_ms = delay.as_millis() as u64, "task failed; restarting");
                record(&failures, &count, task.clone(), e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(backoff * 16);
            }
        });
    }

    /// Runs `fut` as task `name`, on a task of its own so that a panic is
    /// caught; a failure is logged and recorded.
    fn supervise<F>(&mut self, name: &str, fut: F)
    where
        F: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let name = name.to_string();
        let failures = Arc::clone(&self.failures);
        let count = Arc::clone(&self.count);
        self.set.spawn(async move {
            let outcome = TaskError::joined(run_caught(fut).await);
            if let Err(e) = &outcome {
                tracing::error!(task = %name, error = %e, "task failed");
                record(&failures, &count, name.clone(), e.clone());
            }
            (name, outcome)
        });
    }

    /// Waits for the next task to end; `None` when none is left.
    pub async fn next(&mut self) -> Option<(String, Result<(), TaskError>)> {
        loop {
            match self.set.join_next().await? {
                Ok(r) => return Some(r),
                // The wrapper itself never panics; an abort is ours.
                Err(_) => continue,
            }
        }
    }

    /// Failures so far (most recent last).
    pub fn failures(&self) -> Vec<Failure> {
        lock(&self.failures).clone()
    }

    /// A handle to read failures from elsewhere (health, status).
    pub fn failure_log(&self) -> Arc<Mutex<Vec<Failure>>> {
        Arc::clone(&self.failures)
    }

    /// Waits up to `grace` for all tasks to end, then aborts the rest.
    pub async fn shutdown(mut self, grace: Duration) {
        let all = async { while self.next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(left = self.set.len(), "tasks did not stop in time; aborting them");
            self.set.abort_all();
        }
    }

    /// Aborts every task now (for tasks that hold no state, such as
    /// receive loops), and waits for them to be gone.
    pub async fn abort(mut self) {
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
    }

    /// Number of tasks still running.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when no task is running.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

use crate::sync::lock;

fn panic_message(j: tokio::task::JoinError) -> String {
    let p = j.into_panic();
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn failures_are_recorded_and_named() {
        let mut t = Tasks::new();
        t.spawn("ok", async { Ok::<(), String>(()) });
        t.spawn("err", async { Err("boom".to_owned()) });
        t.spawn::<_, String>("panic", async { panic!("kaboom") });
        let mut ended = Vec::new();
        while let Some((name, r)) = t.next().await {
            ended.push((name, r.is_ok()));
        }
        ended.sort();
        assert_eq!(ended, vec![("err".into(), false), ("ok".into(), true), ("panic".into(), false)]);
        let f = t.failures();
        assert!(f.iter().any(|f| f.task == "panic" && f.error == TaskError::Panicked("kaboom".into())));
    }

    #[tokio::test]
    async fn restarting_task_comes_back_after_a_panic() {
        let runs = Arc::new(AtomicU32::new(0));
        let r = Arc::clone(&runs);
        let mut t = Tasks::new();
        t.spawn_restarting("loop", Duration::from_millis(1), move || {
            let r = Arc::clone(&r);
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("receive loop hit a bug");
                }
                Ok::<(), String>(())
            }
        });
        let (name, outcome) = t.next().await.unwrap();
        assert_eq!((name.as_str(), outcome.is_ok()), ("loop", true));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(t.failures().len(), 2);
    }

    #[tokio::test]
    async fn aborting_the_set_ends_the_work_itself() {
        let alive = Arc::new(());
        let held = Arc::clone(&alive);
        let mut t = Tasks::new();
        t.spawn("holder", async move {
            let _held = held;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<(), String>(())
        });
        tokio::task::yield_now().await;
        t.abort().await;
        for _ in 0..100 {
            if Arc::strong_count(&alive) == 1 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the task's future outlived the aborted set");
    }

    #[tokio::test]
    async fn shutdown_aborts_what_does_not_stop() {
        let mut t = Tasks::new();
        t.spawn("forever", async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<(), String>(())
        });
        let start = std::time::Instant::now();
        t.shutdown(Duration::from_millis(50)).await;
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
