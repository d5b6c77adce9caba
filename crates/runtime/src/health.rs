//! Health that tells the truth: the rule a service's `grpc.health.v1`
//! status follows, apart from the service's own conditions.
//!
//! A service is NOT_SERVING while any of these holds, and SERVING again as
//! soon as none does:
//! - one of its tasks ended (a task that is not meant to end did);
//! - one of its tasks failed less than [`AFTER_FAILURE`] ago (it restarts
//!   on its own; a flapping task keeps the service unhealthy);
//! - a condition of the service's own says so (its follower of the
//!   election's role is stale, its store cannot be written, ...).
//!
//! [`Verdict`] is the pure rule; [`HealthKeeper`] applies it to the
//! service's health reporter, logging every change with the reason.

use std::time::{Duration, Instant};

use crate::grpc::Health;
use crate::tasks::{Failure, TaskError};

/// How long a failed (and restarted) task keeps the service NOT_SERVING.
pub const AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Why a service is not serving, or that it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Serving,
    /// Every reason, for the log and the status.
    NotServing(Vec<String>),
}

impl Verdict {
    /// The rule: `dead` tasks that ended, recent `failures`, and the
    /// service's own `conditions` (each `Some(reason)` when not met).
    pub fn of(now: Instant, dead: &[String], failures: &[Failure], conditions: &[Option<String>]) -> Self {
        let mut why: Vec<String> = dead.iter().map(|d| format!("task {d} ended")).collect();
        why.extend(failures.iter().filter(|f| now.saturating_duration_since(f.at) < AFTER_FAILURE).map(|f| {
            format!("task {} failed {} s ago: {}", f.task, now.saturating_duration_since(f.at).as_secs(), f.error)
        }));
        why.extend(conditions.iter().flatten().cloned());
        if why.is_empty() { Self::Serving } else { Self::NotServing(why) }
    }

    /// Whether this is serving.
    pub fn serving(&self) -> bool {
        matches!(self, Self::Serving)
    }
}

/// Applies [`Verdict`]s to a health reporter.
#[derive(Debug)]
pub struct HealthKeeper {
    health: Health,
    dead: Vec<String>,
    last: Option<Verdict>,
}

impl HealthKeeper {
    /// Starts NOT_SERVING (as the reporter does) until the first update.
    pub fn new(health: Health) -> Self {
        Self { health, dead: Vec::new(), last: None }
    }

    /// A task ended (with `outcome`); a task that ends is dead for health.
    pub fn task_ended(&mut self, name: &str, outcome: &Result<(), TaskError>) {
        match outcome {
            Ok(()) => tracing::error!(task = name, "task ended"),
            Err(e) => tracing::error!(task = name, "task stopped: {e}"),
        }
        self.dead.push(name.to_owned());
    }

    /// When the verdict may change by itself: the end of the unhealthy
    /// period of the latest recent failure (`None`: only an event can).
    pub fn next_change(failures: &[Failure]) -> Option<Instant> {
        let now = Instant::now();
        failures.iter().map(|f| f.at + AFTER_FAILURE).filter(|t| *t > now).max()
    }

    /// Applies the rule now; logs a change with its reasons.
    pub async fn update(&mut self, failures: &[Failure], conditions: &[Option<String>]) -> &Verdict {
        let v = Verdict::of(Instant::now(), &self.dead, failures, conditions);
        if self.last.as_ref() != Some(&v) {
            match &v {
                Verdict::Serving => tracing::info!("health: serving"),
                Verdict::NotServing(why) => tracing::warn!("health: not serving: {}", why.join("; ")),
            }
            if self.last.as_ref().is_none_or(|l| l.serving() != v.serving()) {
                self.health.set(v.serving()).await;
            }
            self.last = Some(v);
        }
        self.last.as_ref().unwrap_or(&Verdict::Serving)
    }
}

/// Runs a service's health until `shutdown` fires: NOT_SERVING while a task
/// of `tasks` ended or failed recently, or while `role` (the service's
/// follower of the election, when it has one) knows no role; SERVING as
/// soon as none holds. Wakes only on events (a task ending or failing, the
/// role stream coming or going) and at the end of an unhealthy period.
pub async fn keep_until(
    health: Health,
    tasks: &mut crate::tasks::Tasks,
    mut shutdown: crate::shutdown::Shutdown,
    mut role: Option<tokio::sync::watch::Receiver<Option<duet_carp::Role>>>,
) {
    let mut keeper = HealthKeeper::new(health);
    let log = tasks.failure_log();
    let mut failed = tasks.watch_failures();
    loop {
        let failures = crate::sync::lock(&log).clone();
        let stale = role.as_mut().and_then(|r| {
            r.borrow_and_update()
                .is_none()
                .then(|| "not following the election's role (no role stream from duet-election)".to_owned())
        });
        keeper.update(&failures, &[stale]).await;
        let until = HealthKeeper::next_change(&failures);
        tokio::select! {
            () = shutdown.wait() => return,
            Some((name, outcome)) = tasks.next() => keeper.task_ended(&name, &outcome),
            r = failed.changed() => if r.is_err() { return },
            () = changed(role.as_mut()) => {}
            () = sleep_until(until) => {}
        }
    }
}

async fn changed<T>(rx: Option<&mut tokio::sync::watch::Receiver<T>>) {
    if let Some(rx) = rx
        && rx.changed().await.is_ok()
    {
        return;
    }
    // No follower, or it is gone (shutdown): nothing more to wait for.
    std::future::pending().await
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(at: Instant) -> Failure {
        Failure { task: "pusher".into(), error: TaskError::Failed("boom".into()), at }
    }

    #[test]
    fn a_failed_task_keeps_the_service_unhealthy_for_a_while_then_it_recovers() {
        let t0 = Instant::now();
        let f = [failure(t0)];
        assert!(!Verdict::of(t0 + Duration::from_secs(1), &[], &f, &[]).serving());
        assert!(!Verdict::of(t0 + AFTER_FAILURE - Duration::from_millis(1), &[], &f, &[]).serving());
        assert_eq!(Verdict::of(t0 + AFTER_FAILURE, &[], &f, &[]), Verdict::Serving);
    }

    #[test]
    fn a_dead_task_or_a_condition_says_why() {
        let now = Instant::now();
        let v = Verdict::of(now, &["peer link server".into()], &[], &[None, Some("role unknown".into())]);
        assert_eq!(v, Verdict::NotServing(vec!["task peer link server ended".into(), "role unknown".into()]),);
        assert_eq!(Verdict::of(now, &[], &[], &[None]), Verdict::Serving);
    }
}
