//! The takeover core: every rule of the service, apart from any I/O.
//!
//! [`Takeover`] is a plain struct. The driver feeds it what the role
//! follower heard, what the kernel shows and what became of the actions it
//! asked for, always with the current [`Time`]; it drains the actions with
//! [`Takeover::poll_action`] and sleeps until [`Takeover::poll_timeout`].
//! It never reads a clock, opens a socket or spawns a task.
//!
//! ```text
//!   Unknown ── role holds ──► [WaitForState (R4)] ──► HoldAll ──► Hold
//!      │ (touch nothing)                                         │  ▲
//!      │ role releases,             role releases, fail-safe,   │  │ role holds
//!      │ fail-safe                  stop                        ▼  │
//!      └──────────────────────────────► ReleaseAll ──────────► Release
//! ```
//!
//! Rules kept here: who holds ([`Role::holds_addresses`]), the sequence
//! verdicts ([`crate::sequence`]), the stale stream (no message, not even a
//! heartbeat, for three beats, never past the HA timeout less its headroom,
//! [`crate::plan::hung_after`]: lost, reconnect), the fail-safe (T4: counted
//! from the last sign of life, [`crate::plan::failsafe_window`]), the
//! release the fail-safe made and the snapshot that undoes it, R4 (the
//! state before the addresses), the gratuitous ARP refresh, the reconcile
//! pass and what counts as drift ([`crate::plan::repairs`], counted only
//! when the kernel confirms a change), and health.
//!
//! The actions that ask for a result ([`Action::WaitForState`],
//! [`Action::HoldAll`], [`Action::ReleaseAll`], [`Action::Observe`],
//! [`Action::Repair`]) are answered, in order, before the core is fed
//! anything else: the driver carries each out and feeds its result at
//! once. That keeps a role change and the netlink work it asks for one
//! uninterrupted step, as the fail-safe and the reports assume.
//!
//! Here: the state and the inputs. The actions and their answers are in
//! [`actions`], the rules that apply a role in [`rules`], the reconcile
//! pass in [`reconcile`]; the tests in `tests.rs`.

mod actions;
mod reconcile;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use duet_carp::{Role, RoleEvent, RoleEventKind, Time};
use duet_config::Cidr;

use crate::notice::Notice;
use crate::plan;
use crate::sequence::{Sequence, Verdict};

pub(crate) use actions::{Action, Announce, Applied, Held, HoldSpan, Released, Report, Status};
pub(crate) use reconcile::Repaired;

/// Health stays NOT_SERVING this long after a task failed (and restarted).
pub(crate) const FAILURE_UNHEALTHY: Duration = Duration::from_secs(30);

/// How many drift repairs the status lists.
pub(crate) const RECENT_REPAIRS: usize = 20;

/// The election sends a heartbeat every advert interval, at most every
/// [`BEAT_MAX`] and at least `ADVERT_BEAT_MIN` (100 ms) apart, on a quiet
/// stream while the unit advertises; [`STALE_BEATS`] missed ones (and never
/// less than [`STALE_MIN`]) mean it hangs even if its connection is up.
const BEAT_MAX: Duration = Duration::from_secs(1);
const STALE_BEATS: u32 = 3;
const STALE_MIN: Duration = duet_runtime::follow::ADVERT_BEAT_MIN.saturating_mul(STALE_BEATS);

/// What the core is built from.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Per interface, its shared address.
    pub ifaces: Vec<(String, Cidr)>,
    /// The shared addresses live on virtual MAC devices (T2).
    pub vmac: bool,
    /// The vhid until the election says otherwise.
    pub vhid: u8,
    /// `None`: no gratuitous ARP refresh.
    pub garp_refresh: Option<Duration>,
    pub reconcile_interval: Duration,
    /// HA timeout and advert interval until the election says otherwise.
    pub ha_timeout: Duration,
    pub advert_interval: Duration,
    /// The election followed (for the operator's lines).
    pub election_url: String,
    /// R4: how long to wait for the replicator before adding the
    /// addresses; `None` when no replicator runs.
    pub state_wait: Option<Duration>,
}

/// What the driver makes true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No role received yet: touch nothing (a restarted service must not
    /// drop addresses the election still wants held) until the role
    /// arrives or the fail-safe window passes.
    Unknown,
    Hold,
    Release,
}

#[derive(Debug, Clone, Default)]
struct Iface {
    /// The shared address is in place here (as far as the core knows).
    held: bool,
    /// Why the last apply or repair failed; retried on every pass.
    error: Option<String>,
}

/// What was last applied, for the report.
#[derive(Debug, Clone, Copy, Default)]
struct Stamps {
    addresses_at: Option<Time>,
    first_garp_at: Option<Time>,
    state_installed: bool,
    state_wait: Duration,
}

/// What a role event left to do once the addresses are where it wants.
#[derive(Debug, Clone)]
struct Then {
    verdict: Verdict,
    first: bool,
    /// How long the stream was down, for the first message of a stream.
    down: Option<Duration>,
    params_changed: bool,
    kind: RoleEventKind,
    reason: String,
    epoch: u64,
    seq: u64,
    role: Role,
    /// The role change's trace (O3), "" when none.
    trace: String,
}

/// Why the addresses are being released.
#[derive(Debug, Clone)]
enum Why {
    /// The role says so.
    Role(Then),
    /// The vhid changed while holding with a virtual MAC: the old device
    /// goes first, then the hold goes on.
    Revhid { received: Time, then: Then },
    /// T4.
    Failsafe { down: Duration },
    /// The service stops.
    Stop,
}

/// An action whose answer the core is waiting for.
#[derive(Debug, Clone)]
enum Step {
    State { received: Time, then: Then },
    Hold { received: Time, then: Then },
    Release { why: Why, was: Mode },
}

/// The takeover of one unit.
#[derive(Debug)]
pub(crate) struct Takeover {
    cfg: Config,
    vhid: u8,
    ha_timeout: Duration,
    advert_interval: Duration,
    ifaces: Vec<Iface>,
    /// The vhid of the virtual MAC devices in place (holding with VMAC).
    held_vhid: Option<u8>,
    seq: Sequence,
    role: Option<Role>,
    mode: Mode,
    /// The addresses were given up by the fail-safe, not by the role.
    failsafe_released: bool,
    /// The stream delivered its first message and is still open.
    following: bool,
    /// A stream delivered a message once (so a new one is a return).
    ever_followed: bool,
    /// A reconnect was asked: what the old stream still delivers, up to
    /// its end, is ignored.
    discarding: bool,
    /// Since when the role stream is down (`None` while following).
    stream_lost_at: Option<Time>,
    /// The last message of any kind (heartbeats included).
    last_message_at: Option<Time>,
    role_received_at: Option<Time>,
    stamps: Stamps,
    garp_latency: Option<Duration>,
    next_refresh: Option<Time>,
    next_pass: Time,
    pass: Option<reconcile::Pass>,
    step: Option<Step>,
    drift_repairs: u64,
    recent_repairs: VecDeque<(Time, String)>,
    failsafe_releases: u64,
    last_error: String,
    /// Tasks that ended for good; a restarting task's last failure.
    dead_tasks: u32,
    failure_at: Option<Time>,
    serving: Option<bool>,
    actions: VecDeque<Action>,
}

impl Takeover {
    /// A core at `now` that has heard nothing yet: the fail-safe window
    /// runs from here (a role stream that never comes is a lost one).
    pub(crate) fn new(cfg: Config, now: Time) -> Self {
        let mut t = Self {
            vhid: cfg.vhid,
            ha_timeout: cfg.ha_timeout,
            advert_interval: cfg.advert_interval,
            ifaces: vec![Iface::default(); cfg.ifaces.len()],
            held_vhid: None,
            seq: Sequence::new(),
            role: None,
            mode: Mode::Unknown,
            failsafe_released: false,
            following: false,
            ever_followed: false,
            discarding: false,
            stream_lost_at: Some(now),
            last_message_at: None,
            role_received_at: None,
            stamps: Stamps::default(),
            garp_latency: None,
            next_refresh: None,
            next_pass: now,
            pass: None,
            step: None,
            drift_repairs: 0,
            recent_repairs: VecDeque::new(),
            failsafe_releases: 0,
            last_error: String::new(),
            dead_tasks: 0,
            failure_at: None,
            serving: None,
            actions: VecDeque::new(),
            cfg,
        };
        t.settle(now);
        t
    }

    // ----- inputs: the role stream ---------------------------------------

    /// A message of the role stream, received at `received`;
    /// `first_of_stream` for the first message of a newly opened stream.
    pub(crate) fn handle_role_event(&mut self, now: Time, received: Time, first_of_stream: bool, ev: RoleEvent) {
        debug_assert!(self.step.is_none(), "fed a role event before the answer to {:?}", self.step);
        if self.discarding {
            if !first_of_stream {
                return;
            }
            self.discarding = false;
        }
        self.last_message_at = Some(received);
        if ev.kind == RoleEventKind::Heartbeat && !first_of_stream {
            // Liveness only: not part of the sequence, changes nothing.
            self.settle(now);
            return;
        }
        let verdict = self.seq.accept(ev.epoch, ev.seq, first_of_stream);
        if !verdict.applies() {
            self.notice(Notice::Duplicate { epoch: ev.epoch, seq: ev.seq });
            self.settle(now);
            return;
        }
        let params_changed = self.take_parameters(&ev);
        if ev.vhid != 0 {
            self.vhid = ev.vhid;
        }
        self.role = Some(ev.role);
        self.role_received_at = Some(received);
        let down = if first_of_stream { self.stream_lost_at.take().map(|s| now.since(s)) } else { None };
        let then = Then {
            verdict,
            first: first_of_stream,
            down,
            params_changed,
            kind: ev.kind,
            reason: ev.reason,
            epoch: ev.epoch,
            seq: ev.seq,
            role: ev.role,
            trace: ev.trace,
        };
        // Apply first; what the operator is told waits until the addresses
        // are where the role wants them (see `finish`).
        if ev.role.holds_addresses() {
            self.hold(received, then);
        } else {
            self.release_for_role(then);
        }
        self.settle(now);
    }

    /// The stream ended or failed.
    pub(crate) fn handle_stream_lost(&mut self, now: Time, why: String) {
        if std::mem::take(&mut self.discarding) {
            // Declared lost already (no heartbeat), this is its end.
        } else {
            self.stream_down(now, why);
        }
        self.settle(now);
    }

    /// Opening a stream failed (`attempt` in a row).
    pub(crate) fn handle_connect_failed(&mut self, now: Time, why: String, attempt: u32) {
        self.last_error = format!("cannot follow the election's role stream at {}: {why}", self.cfg.election_url);
        self.notice(Notice::CannotConnect { url: self.cfg.election_url.clone(), why, first: attempt <= 1 });
        self.settle(now);
    }

    // ----- inputs: answers to actions -------------------------------------

    /// The answer to [`Action::WaitForState`].
    pub(crate) fn handle_state_answer(&mut self, now: Time, installed: bool, waited: Duration) {
        let Some(Step::State { received, then }) = self.step.take() else {
            return;
        };
        self.stamps.state_installed = installed;
        self.stamps.state_wait = waited;
        if !installed {
            self.notice(Notice::StateNotConfirmed { waited });
        }
        self.actions.push_back(Action::HoldAll { vmac_vhid: self.vmac_vhid() });
        self.step = Some(Step::Hold { received, then });
        self.settle(now);
    }

    /// The answer to [`Action::HoldAll`].
    pub(crate) fn handle_held(&mut self, now: Time, h: Held) {
        let Some(Step::Hold { received, then }) = self.step.take() else {
            return;
        };
        for (i, a) in self.ifaces.iter_mut().zip(h.ifaces) {
            i.held = a.held;
            i.error = a.error;
        }
        self.mode = Mode::Hold;
        self.failsafe_released = false;
        self.held_vhid = self.vmac_vhid();
        self.stamps.addresses_at = Some(h.in_place);
        self.stamps.first_garp_at = h.first_garp;
        self.next_refresh = self.cfg.garp_refresh.map(|r| now + r);
        let latency = h.first_garp.map(|g| g.since(received));
        if latency.is_some() {
            self.garp_latency = latency;
        }
        self.notice(Notice::Holding {
            what: self.held_list(),
            role: then.role,
            applied: h.in_place.since(h.started),
            first_garp: latency,
        });
        self.notice(Notice::HoldTiming {
            waited: h.started.since(received),
            parameters: h.parameters_set.since(h.started),
            netlink: h.in_place.since(h.parameters_set),
        });
        if !then.trace.is_empty() {
            self.actions.push_back(Action::Trace(HoldSpan {
                trace: then.trace.clone(),
                role: then.role,
                received,
                started: h.started,
                parameters_set: h.parameters_set,
                in_place: h.in_place,
                first_garp: h.first_garp,
                state_installed: self.stamps.state_installed,
                state_wait: self.stamps.state_wait,
                addresses: self.held_list(),
            }));
        }
        self.apply_failed();
        self.finish(then, h.first_garp.is_some());
        self.settle(now);
    }

    /// The answer to [`Action::ReleaseAll`].
    pub(crate) fn handle_released(&mut self, now: Time, r: Released) {
        let Some(Step::Release { why, was }) = self.step.take() else {
            return;
        };
        for (i, e) in self.ifaces.iter_mut().zip(r.errors) {
            i.held = false;
            i.error = e;
        }
        self.held_vhid = None;
        self.next_refresh = None;
        self.mode = Mode::Release;
        if let Why::Revhid { received, then } = why {
            self.hold(received, then);
            self.settle(now);
            return;
        }
        self.stamps.addresses_at = Some(now);
        self.stamps.first_garp_at = None;
        let removed = r.removed;
        match why {
            Why::Role(then) => {
                if was == Mode::Hold || !removed.is_empty() {
                    let why = format!("role {}", then.role.display_name());
                    self.notice(Notice::Released { what: removed, why });
                } else if was == Mode::Unknown {
                    self.notice(Notice::NotHolding { role: then.role });
                }
                self.apply_failed();
                self.finish(then, false);
            }
            Why::Failsafe { down } => {
                if was == Mode::Hold || !removed.is_empty() {
                    self.failsafe_released = true;
                    self.failsafe_releases += 1;
                    self.notice(Notice::Failsafe { down, ha_timeout: self.ha_timeout, what: removed });
                    self.report();
                } else {
                    self.notice(Notice::NoRoleYet { down });
                }
            }
            Why::Stop => {
                if was == Mode::Hold || !removed.is_empty() {
                    let why = "takeover service stopping".to_owned();
                    self.notice(Notice::Released { what: removed, why });
                }
                self.stopped(now);
            }
            Why::Revhid { .. } => unreachable!("handled above"),
        }
        self.settle(now);
    }

    /// The release asked when stopping did not finish in time (the driver
    /// bounds it); what it did is unknown.
    pub(crate) fn handle_release_timed_out(&mut self, now: Time) {
        if matches!(self.step, Some(Step::Release { why: Why::Stop, .. })) {
            self.step = None;
            self.stopped(now);
            self.settle(now);
        }
    }

    // ----- inputs: the kernel, the tasks, shutdown ------------------------

    /// The kernel changed something about the shared addresses or the
    /// devices carrying them: look again.
    pub(crate) fn handle_kernel_changed(&mut self, now: Time) {
        self.start_pass();
        self.settle(now);
    }

    /// The link of interface `k` came up: a held address is announced
    /// again (the segment may have forgotten where it lives).
    pub(crate) fn handle_link_up(&mut self, now: Time, k: usize) {
        if self.mode == Mode::Hold && self.ifaces.get(k).is_some_and(|i| i.held) {
            self.notice(Notice::LinkBack { ifname: self.cfg.ifaces[k].0.clone() });
            self.actions.push_back(Action::Announce { ifaces: vec![k], how: Announce::Burst { supersede: false } });
        }
        self.settle(now);
    }

    /// Interface `k` cannot be used (gone, no ARP socket): its error until
    /// the next apply or pass says otherwise.
    pub(crate) fn handle_unusable(&mut self, now: Time, k: usize, why: String) {
        if let Some(i) = self.ifaces.get_mut(k) {
            i.error = Some(why);
        }
        self.settle(now);
    }

    /// A supervised task failed (it restarts).
    pub(crate) fn handle_task_failed(&mut self, now: Time) {
        self.failure_at = Some(now);
        self.settle(now);
    }

    /// A supervised task ended for good.
    pub(crate) fn handle_task_ended(&mut self, now: Time) {
        self.dead_tasks += 1;
        self.settle(now);
    }

    /// The service stops: give everything up, then the last report.
    pub(crate) fn handle_stop(&mut self, now: Time) {
        debug_assert!(self.step.is_none(), "stopped before the answer to {:?}", self.step);
        self.step = Some(Step::Release { why: Why::Stop, was: self.mode });
        self.actions.push_back(Action::ReleaseAll { vmac_vhid: self.release_vhid() });
        self.settle(now);
    }

    /// Timers: call when [`poll_timeout`](Self::poll_timeout) is reached.
    pub(crate) fn handle_timeout(&mut self, now: Time) {
        debug_assert!(self.step.is_none(), "timers handled before the answer to {:?}", self.step);
        if self.stale_at().is_some_and(|t| t <= now) {
            let quiet = self.last_message_at.map_or(Duration::ZERO, |t| now.since(t));
            let why = format!("no message, not even a heartbeat, for {} ms (the election hangs?)", quiet.as_millis());
            self.stream_down(now, why);
            self.discarding = true;
            self.actions.push_back(Action::Reconnect);
        }
        if self.failsafe_at().is_some_and(|t| t <= now) {
            self.failsafe(now);
            self.settle(now);
            // The rest waits for the release.
            return;
        }
        if let Some(t) = self.next_refresh
            && t <= now
        {
            // T3: one frame per held address every `garp_refresh`.
            self.next_refresh = self.cfg.garp_refresh.map(|r| now + r);
            if self.mode == Mode::Hold {
                self.actions.push_back(Action::Announce { ifaces: self.held_ifaces(), how: Announce::Once });
            }
        }
        if self.next_pass <= now {
            // A pass every `reconcile_interval`; a late one delays the next.
            let next = self.next_pass + self.cfg.reconcile_interval;
            self.next_pass = if next > now { next } else { now + self.cfg.reconcile_interval };
            self.start_pass();
        }
        self.settle(now);
    }

    // ----- outputs --------------------------------------------------------

    /// The next action to carry out.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub(crate) fn poll_timeout(&self) -> Option<Time> {
        let health = self.failure_at.map(|t| t + FAILURE_UNHEALTHY + Duration::from_micros(1));
        let health = health.filter(|_| self.serving == Some(false));
        [self.stale_at(), self.failsafe_at(), self.next_refresh, Some(self.next_pass), health]
            .into_iter()
            .flatten()
            .min()
    }

    /// The fail-safe window in force.
    pub(crate) fn window(&self) -> Duration {
        plan::failsafe_window(self.ha_timeout, self.advert_interval)
    }

    /// A snapshot for the API.
    pub(crate) fn status(&self) -> Status {
        Status {
            role: self.role,
            holding: self.mode == Mode::Hold && self.ifaces.iter().any(|i| i.held),
            following: self.following,
            position: self.seq.position(),
            vhid: self.vhid,
            role_received_at: self.role_received_at,
            addresses_at: self.stamps.addresses_at,
            first_garp_at: self.stamps.first_garp_at,
            garp_latency: self.garp_latency,
            drift_repairs: self.drift_repairs,
            recent_repairs: self.recent_repairs.iter().cloned().collect(),
            stream_lost_at: self.stream_lost_at,
            failsafe_releases: self.failsafe_releases,
            failsafe_after: self.window(),
            last_error: self.last_error.clone(),
            interface_errors: self.errors(),
        }
    }
}
