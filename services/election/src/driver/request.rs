//! Requests from the gRPC API: what they are, and how the driver answers
//! them (or hands them to the core). No sockets here: the tests below drive
//! a driver that never opened any.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use duet_carp::params::Params;
use duet_carp::{Command, CommandError, Role};
use duet_runtime::clock::Clock;
use duet_runtime::stats::Samples;
use tokio::sync::oneshot;

use super::Driver;

/// The result of a planned handover.
#[derive(Debug, Clone)]
pub(crate) struct HandoverOutcome {
    pub confirmed: bool,
    pub partner: Option<Ipv4Addr>,
    pub took: Duration,
}

/// What the gRPC API asks the driver.
#[derive(Debug)]
pub(crate) enum Request {
    Status(oneshot::Sender<Snapshot>),
    Handover {
        timeout: Duration,
        reply: oneshot::Sender<Result<HandoverOutcome, CommandError>>,
    },
    ClearPacified(oneshot::Sender<Result<Role, CommandError>>),
    Follower {
        attached: bool,
    },
    TakeoverReport(TakeoverReport),
    /// New parameters (E12) and the configuration generation they came
    /// from (0: the unit file).
    Reload {
        params: Box<Params>,
        generation: u64,
    },
    /// A component's readiness (R4); answered with the unit's readiness.
    Readiness {
        component: String,
        ready: bool,
        reason: String,
        reply: oneshot::Sender<bool>,
    },
}

/// The takeover service's last report (T4).
#[derive(Debug, Clone)]
pub(crate) struct TakeoverReport {
    pub epoch: u64,
    pub seq: u64,
    /// The role applied (`None`: the report named none).
    pub role: Option<Role>,
    pub ok: bool,
    pub error: String,
    pub addresses_at: Option<SystemTime>,
    pub first_garp_at: Option<SystemTime>,
    pub state_installed: bool,
    pub state_wait_us: u64,
}

/// Everything GetStatus shows.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub status: duet_carp::Status,
    pub params: Params,
    /// The configuration generation the parameters came from (0: the unit file).
    pub config_generation: u64,
    pub epoch: u64,
    pub seq: u64,
    /// Maps the core's times in `status` to wall-clock times.
    pub clock: Clock,
    pub takeover: Option<TakeoverReport>,
    pub queue_full: u64,
    pub send_errors: u64,
    pub timer_lateness: Samples,
    pub receive_delay: Samples,
    /// E14: the witness's adapter as the status shows it.
    pub witness: Option<super::WitnessLinkView>,
}

impl Driver {
    /// Answers one request of the API (or hands it to the core).
    pub(super) fn request(&mut self, r: Request) {
        let now = self.clock.now();
        match r {
            Request::Status(reply) => {
                let _ = reply.send(Snapshot {
                    status: self.election.status(now),
                    params: self.election.params().clone(),
                    config_generation: self.config_generation,
                    epoch: self.shared.epoch,
                    seq: self.seq,
                    clock: self.clock,
                    takeover: self.takeover.clone(),
                    queue_full: self.shared.queue_full.load(Ordering::Relaxed),
                    send_errors: self.send_errors,
                    timer_lateness: self.timer_lateness.clone(),
                    receive_delay: self.receive_delay.clone(),
                    witness: self.witness.as_ref().map(|w| w.view.clone()),
                });
            }
            Request::Handover { timeout, reply } => {
                match self.election.handle_command(now, Command::Handover { timeout }) {
                    Ok(()) => self.pending_handovers.push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::ClearPacified(reply) => {
                let r = self.election.handle_command(now, Command::ClearPacified);
                if r.is_ok() {
                    match self.state.clear_starts() {
                        // The core counts from the cleared history at once.
                        Ok(()) => self.check_history(),
                        Err(e) => tracing::error!("cannot record the cleared start history: {e:#}"),
                    }
                }
                let _ = reply.send(r.map(|()| self.election.role()));
            }
            Request::Follower { attached } => {
                let before = self.followers;
                self.followers = if attached { self.followers + 1 } else { self.followers.saturating_sub(1) };
                let cmd = match (before, self.followers) {
                    (0, 1..) => Some(Command::FollowerAttached),
                    (1.., 0) => Some(Command::FollowerDetached),
                    _ => None,
                };
                if let Some(c) = cmd {
                    let _ = self.election.handle_command(now, c);
                }
            }
            Request::TakeoverReport(rep) => {
                // A report about an earlier election process's role stream
                // says nothing about this one.
                let current = rep.epoch == self.shared.epoch;
                let ok = rep.ok;
                let released = rep.role == Some(Role::Stopping);
                self.takeover = Some(rep);
                if current {
                    let _ = self.election.handle_command(now, Command::TakeoverReport { ok });
                    if ok && released {
                        let _ = self.election.handle_command(now, Command::TakeoverReleased);
                    }
                }
            }
            Request::Readiness { component, ready, reason, reply } => {
                let _ = self.election.handle_command(now, Command::SetReadiness { component, ready, reason });
                let _ = reply.send(self.election.ready());
            }
            Request::Reload { params, generation } => {
                match self.election.handle_command(now, Command::Reload(params)) {
                    Ok(()) => {
                        self.config_generation = generation;
                        let _ = self.election.handle_command(now, Command::SetGeneration(generation));
                    }
                    Err(e) => tracing::error!("HA configuration change not applied: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use duet_carp::Role;
    use tokio::sync::oneshot;

    use super::super::test_support::driver;
    use super::*;
    use crate::state::StateDir;

    /// Sends a request whose answer comes on a oneshot, and takes the answer.
    fn ask<T>(d: &mut Driver, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> T {
        let (tx, mut rx) = oneshot::channel();
        d.request(make(tx));
        rx.try_recv().expect("answered at once")
    }

    fn readiness(d: &mut Driver, component: &str, ready: bool) -> bool {
        ask(d, |reply| Request::Readiness { component: component.into(), ready, reason: "why".into(), reply })
    }

    #[test]
    fn readiness_is_answered_with_the_units_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _h) = driver(dir.path());
        assert!(readiness(&mut d, "health", true));
        assert!(!readiness(&mut d, "replicator", false), "one component not ready: the unit is not");
        assert!(!readiness(&mut d, "health", true));
        assert!(readiness(&mut d, "replicator", true));
        assert!(ask(&mut d, Request::Status).status.ready);
    }

    #[test]
    fn a_pacified_unit_is_cleared_on_request_and_the_history_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        for _ in 0..4 {
            state.record_start("election").unwrap();
        }
        let (mut d, _h) = driver(dir.path());
        let s = ask(&mut d, Request::Status);
        assert_eq!((s.status.role, s.status.recent_starts), (Role::Pacified, 4));
        assert_eq!(ask(&mut d, Request::ClearPacified), Ok(Role::Init));
        assert!(state.start_history().unwrap().cleared_at.is_some(), "the clear is on disk");
        assert_eq!(ask(&mut d, Request::Status).status.recent_starts, 0, "counted from the cleared history");
        assert_eq!(ask(&mut d, Request::ClearPacified), Err(CommandError::NotPacified));
    }

    #[test]
    fn the_start_history_is_checked_against_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.record_start("election").unwrap();
        let (mut d, _h) = driver(dir.path());
        assert_eq!(ask(&mut d, Request::Status).status.recent_starts, 1);
        for what in ["takeover", "takeover", "takeover"] {
            state.record_start(what).unwrap();
        }
        d.check_history();
        let s = ask(&mut d, Request::Status);
        assert_eq!((s.status.role, s.status.recent_starts), (Role::Pacified, 4));
    }

    #[test]
    fn a_handover_is_refused_by_a_unit_that_is_not_active() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _h) = driver(dir.path());
        let (tx, mut rx) = oneshot::channel();
        d.request(Request::Handover { timeout: Duration::from_secs(1), reply: tx });
        let e = rx.try_recv().expect("refused at once").expect_err("not active");
        assert!(matches!(e, CommandError::NotActive(_)), "{e}");
    }

    #[test]
    fn followers_are_counted_and_reports_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _h) = driver(dir.path());
        let following = |d: &mut Driver| ask(d, Request::Status).status.follower_attached;
        assert!(!following(&mut d));
        d.request(Request::Follower { attached: true });
        d.request(Request::Follower { attached: true });
        d.request(Request::Follower { attached: false });
        assert!(following(&mut d), "one of two followers is still there");
        d.request(Request::Follower { attached: false });
        assert!(!following(&mut d));
        let report = TakeoverReport {
            epoch: 99,
            seq: 3,
            role: Some(Role::Standby),
            ok: true,
            error: String::new(),
            addresses_at: None,
            first_garp_at: None,
            state_installed: true,
            state_wait_us: 5,
        };
        d.request(Request::TakeoverReport(report));
        let s = ask(&mut d, Request::Status);
        assert_eq!(s.takeover.map(|t| (t.epoch, t.seq)), Some((99, 3)), "kept for the status, whatever its epoch");
        assert_eq!((s.epoch, s.seq), (7, 0));
    }

    #[test]
    fn a_reload_that_changes_the_mode_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _h) = driver(dir.path());
        let mut p = super::super::test_support::params(duet_carp::HaMode::Second);
        d.request(Request::Reload { params: Box::new(p.clone()), generation: 3 });
        assert_eq!(ask(&mut d, Request::Status).params.mode, duet_carp::HaMode::First);
        p = super::super::test_support::params(duet_carp::HaMode::First);
        p.vhid = 11;
        d.request(Request::Reload { params: Box::new(p), generation: 4 });
        let s = ask(&mut d, Request::Status);
        assert_eq!((s.params.vhid, s.config_generation), (11, 4), "a live change is applied");
    }
}
