//! The adapter around the election core: one task owns the [`Election`],
//! waits on its timer, the sockets, link events and requests from the gRPC
//! API, feeds the core and carries out what it returns.
//!
//! ```text
//!  recv task (per interface) ──┐ bounded queue
//!  peer-status task ───────────┼──────────────►┌───────────┐── adverts ──► raw socket
//!  link watcher ───────────────┘               │  driver   │── role events ──► WatchRole streams
//!  gRPC API ──────── requests (bounded) ──────►│  (core)   │── logs, state files
//!  witness adapter ── reports (bounded) ──────►│           │── witness requests (bounded) ──► witness adapter
//!                                              └───────────┘
//! ```
//!
//! The witness's adapter (`duet-witness`, E14) runs in its own task and
//! talks to etcd; its reports carry the `Instant` each request was sent,
//! which the driver turns into the core's time.
//!
//! The select loop is biased towards the timer: a flood of packets can
//! delay an advert by at most one packet's processing (microseconds), never
//! starve it. Receive tasks never block: when the queue is full the packet
//! is dropped and counted.
//!
//! Every rule is the core's (roles, readiness, pacified); the driver reads
//! and writes the state files and hands the core what they say. Requests
//! from the API are handled in [`request`], the sockets opened in
//! [`sockets`].
//!
//! Over 600 lines: one task owns the core and every source of its inputs;
//! request handling and sockets are split out (`driver/`), the witness's
//! etcd adapter is its own crate; what is left is the loop, the carrying
//! out of actions and the witness's reports.

mod request;
mod sockets;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use duet_carp::params::Params;
use duet_carp::{
    Action, Command, CommandError, Election, Level, Notice, PacifyRule, Role, RoleEvent, RoleEventKind, WitnessEvent,
    WitnessRequest,
};
use duet_net::netlink::Netlink;
use duet_runtime::clock::Clock;
use duet_runtime::shutdown::Shutdown;
use duet_runtime::stats::Samples;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::state::{Durability, StateDir};

pub(crate) use request::{HandoverOutcome, Request, Snapshot, TakeoverReport};

/// Scheduling delays kept for the percentiles in the status.
/// A timer this late means the process was stopped or starved: packets
/// that arrived meanwhile are handled before it.
const LISTEN_FIRST_WHEN_LATE: Duration = Duration::from_millis(20);

const DELAY_SAMPLES: usize = 4096;

/// The replay windows are written at most this often ([`Driver::save_state`]):
/// a write replaces a file, which on ext4 blocks the thread twice (two of
/// a standby's three wakeups a second when written on every advert).
const REPLAY_SAVE_EVERY: Duration = Duration::from_secs(5);
/// ... and durably at most this often.
const REPLAY_SYNC_EVERY: Duration = Duration::from_secs(10);
/// The driver pulses ([`Shared::pulse`]) at least this often, adverts or
/// not. Longer than the standard advert interval, so that a standby woken
/// by each advert a second apart is not also woken by this timer when an
/// advert comes a little late; no follower needs beats more often without
/// adverts (an active unit sends them at least every second, and a unit
/// that does not advertise is beaten every 5 s).
pub(crate) const PULSE_MAX: Duration = Duration::from_millis(1500);
/// A stop within this long of an unconfirmed planned handover does not
/// try another (the supervisor hands over before it stops the election).
const HANDOVER_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Adverts sent between two saves of the SHA-256 counter's ceiling.
const COUNTER_RESERVE: u64 = 1 << 20;

/// What the receive side hands the driver.
#[derive(Debug)]
pub(crate) enum Inbound {
    Packet { iface: usize, bytes: Vec<u8>, at: Instant },
    Peer { iface: usize, src: Ipv4Addr, bytes: Vec<u8> },
    Link { name: String, up: bool },
}

/// State shared between the driver and the gRPC handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub epoch: u64,
    pub requests: mpsc::Sender<Request>,
    /// The newest event; a new stream starts from it.
    pub current: Mutex<RoleEvent>,
    /// A receiver to `resubscribe` from; the driver owns the sender, so
    /// every stream ends when the driver does.
    pub events: Mutex<broadcast::Receiver<RoleEvent>>,
    pub queue_full: AtomicU64,
    /// Bumped by the driver after each turn of its loop that did protocol
    /// work (an advert sent or received, a timer), and at least every
    /// [`PULSE_MAX`]: the role streams' heartbeats ride on it, so they cost
    /// no wakeup of their own and stop when the driver hangs.
    pub pulse: watch::Sender<u64>,
    /// When the driver last pulsed: a role snapshot taken long after it
    /// may be a role the driver, stopped meanwhile, is about to leave.
    pub pulsed_at: Mutex<Instant>,
}

impl Shared {
    pub(crate) fn current(&self) -> RoleEvent {
        lock(&self.current).clone()
    }
}

pub(crate) use duet_runtime::sync::lock;

/// What made the driver stop: shutdown, or a checked link lost with hard
/// reboot on (E8: restart the services).
pub use duet_runtime::service::Exit;

/// Inputs the driver is built from.
pub(crate) struct Setup {
    pub params: Params,
    /// The configuration generation `params` came from (0: the unit file).
    pub config_generation: u64,
    pub state: StateDir,
    pub status_port: u16,
    pub handover_timeout: Duration,
    pub pacify: PacifyRule,
    pub shared_addrs: Vec<(String, Ipv4Addr, u8)>,
    /// The takeover service puts the shared addresses on VMAC macvlans.
    pub vmac: bool,
    pub drop_log_window: Duration,
    /// E14: the witness's adapter settings, when the unit has a witness.
    pub witness: Option<WitnessSetup>,
    /// E16: the tracked checks as the core knows them.
    pub tracks: Vec<duet_carp::TrackParams>,
}

/// What the witness's adapter starts with.
pub(crate) struct WitnessSetup {
    pub settings: duet_witness::Settings,
    /// `witness.insecure_plaintext` (a warning in the status).
    pub insecure: bool,
}

/// The driver's end of the witness's adapter.
struct WitnessLink {
    requests: mpsc::Sender<WitnessRequest>,
    reports: mpsc::Receiver<duet_witness::Report>,
    view: WitnessLinkView,
    /// Failures are logged once until etcd answers again.
    failing: bool,
}

/// What the status shows of the adapter (the rest is the core's).
#[derive(Debug, Clone, Default)]
pub(crate) struct WitnessLinkView {
    pub endpoint: Option<String>,
    pub holder_ttl: Option<Duration>,
    pub key: String,
    pub insecure: bool,
}

pub(crate) struct Driver {
    election: Election,
    clock: Clock,
    sockets: Vec<Option<Arc<duet_net::carp_socket::CarpSocket>>>,
    peer_sockets: Vec<Option<Arc<UdpSocket>>>,
    shared: Arc<Shared>,
    events: broadcast::Sender<RoleEvent>,
    inbound: mpsc::Receiver<Inbound>,
    requests: mpsc::Receiver<Request>,
    state: StateDir,
    seq: u64,
    pending_handovers: Vec<oneshot::Sender<Result<HandoverOutcome, CommandError>>>,
    followers: u32,
    takeover: Option<TakeoverReport>,
    send_errors: u64,
    status_port: u16,
    handover_timeout: Duration,
    shared_addrs: Vec<(String, Ipv4Addr, u8)>,
    vmac: bool,
    exit: Option<Exit>,
    last_replay_save: Instant,
    last_replay_sync: Instant,
    /// No counter at or above it has been sent; saved (SHA-256 mode).
    counter_ceiling: u64,
    health: duet_runtime::grpc::Health,
    serving: Option<bool>,
    link_up: Vec<bool>,
    metrics: crate::metrics::Metrics,
    timer_lateness: Samples,
    receive_delay: Samples,
    /// The configuration generation the parameters in force came from.
    config_generation: u64,
    witness: Option<WitnessLink>,
    /// When the last planned handover ended unconfirmed.
    handover_unconfirmed: Option<Instant>,
    /// The loop's one timer: the core's next deadline, the pulse's, or
    /// the stop's, whichever comes first (a timerfd: exact, one wakeup).
    timer: duet_net::timer::Timer,
    /// E16: the tracked checks' results.
    checks: Option<mpsc::Receiver<crate::track::CheckResult>>,
}

pub(crate) struct Handles {
    pub shared: Arc<Shared>,
    pub inbound: mpsc::Sender<Inbound>,
}

impl Driver {
    /// Builds the core from the saved state and opens nothing yet.
    pub(crate) fn new(setup: Setup, epoch: u64, health: duet_runtime::grpc::Health) -> anyhow::Result<(Self, Handles)> {
        let starts = setup.state.starts()?;
        let replay = setup.state.replay()?;
        let counter_seed = match &setup.params.auth {
            duet_carp::AuthParams::Sha256 { .. } => {
                duet_carp::machine::sha256_counter_seed(crate::state::unix_ms(), setup.state.last_counter()?)
            }
            duet_carp::AuthParams::Ucarp { .. } => rand::random(),
        };
        let clock = Clock::new();
        let init = duet_carp::Init {
            counter_seed,
            peer_counter_seed: crate::state::unix_ms() << 16,
            replay,
            pacify: setup.pacify,
            starts: Some(starts),
            drop_log_window: setup.drop_log_window,
            tracks: setup.tracks,
            health_handover_timeout: setup.handover_timeout,
            was_active: setup.state.was_active().unwrap_or_else(|e| {
                tracing::error!("cannot read whether the last run was active: {e:#}");
                false
            }),
        };
        if init.was_active {
            tracing::warn!("the last run of the election ended while active (killed or crashed)");
        }
        if let Err(e) = setup.state.mark_active(false) {
            tracing::error!("cannot clear the active mark in the state directory: {e:#}");
        }
        let mut election = Election::new(setup.params.clone(), clock.now(), init);
        let _ = election.handle_command(clock.now(), Command::SetGeneration(setup.config_generation));
        let (events, events_rx) = broadcast::channel(1024);
        let (req_tx, req_rx) = mpsc::channel(256);
        let (in_tx, in_rx) = mpsc::channel(4096);
        let first = RoleEvent {
            epoch,
            seq: 0,
            kind: RoleEventKind::Snapshot,
            role: election.role(),
            previous: election.role(),
            at: SystemTime::now(),
            reason: "starting".into(),
            ha_timeout: setup.params.ha_timeout(),
            advert_interval: setup.params.interval(),
            vhid: setup.params.vhid,
            config_generation: setup.config_generation,
            trace: String::new(),
        };
        let shared = Arc::new(Shared {
            epoch,
            requests: req_tx,
            current: Mutex::new(first),
            events: Mutex::new(events_rx),
            queue_full: AtomicU64::new(0),
            pulse: watch::Sender::new(0),
            pulsed_at: Mutex::new(Instant::now()),
        });
        let n = setup.params.interfaces.len();
        let witness = setup.witness.map(|w| {
            let (req_tx, req_rx) = mpsc::channel(64);
            let (rep_tx, rep_rx) = mpsc::channel(256);
            let view =
                WitnessLinkView { endpoint: None, holder_ttl: None, key: w.settings.key.clone(), insecure: w.insecure };
            // It stops once the driver (the requests' sender) is gone.
            duet_witness::spawn(w.settings, req_rx, rep_tx);
            WitnessLink { requests: req_tx, reports: rep_rx, view, failing: false }
        });
        let d = Self {
            election,
            clock,
            sockets: (0..n).map(|_| None).collect(),
            peer_sockets: (0..n).map(|_| None).collect(),
            shared: Arc::clone(&shared),
            events,
            inbound: in_rx,
            requests: req_rx,
            state: setup.state,
            seq: 0,
            pending_handovers: Vec::new(),
            followers: 0,
            takeover: None,
            send_errors: 0,
            status_port: setup.status_port,
            handover_timeout: setup.handover_timeout,
            shared_addrs: setup.shared_addrs,
            vmac: setup.vmac,
            exit: None,
            last_replay_save: Instant::now(),
            last_replay_sync: Instant::now(),
            // Saved at the first advert round.
            counter_ceiling: 0,
            health,
            serving: None,
            link_up: vec![true; n],
            metrics: crate::metrics::Metrics::new(),
            timer_lateness: Samples::new(DELAY_SAMPLES),
            receive_delay: Samples::new(DELAY_SAMPLES),
            config_generation: setup.config_generation,
            witness,
            handover_unconfirmed: None,
            timer: duet_net::timer::Timer::new(),
            checks: None,
        };
        Ok((d, Handles { shared, inbound: in_tx }))
    }

    /// Takes the tracked checks' results from `rx` (E16).
    pub(crate) fn follow_checks(&mut self, rx: mpsc::Receiver<crate::track::CheckResult>) {
        self.checks = Some(rx);
    }

    /// Hands a check's result to the core and the exporter.
    fn check_result(&mut self, r: crate::track::CheckResult) {
        let now = self.clock.now();
        let cmd = Command::CheckResult { name: r.name.clone(), ok: r.ok, output: r.output.clone(), took: r.took };
        let _ = self.election.handle_command(now, cmd);
        self.metrics.check(&r, self.election.check_passing(&r.name));
    }

    /// Runs until shutdown (after a planned handover when active) or a
    /// hard-reboot exit.
    pub(crate) async fn run(mut self, mut shutdown: Shutdown) -> Exit {
        self.act().await;
        let mut stopping: Option<Instant> = None;
        // The unit supervisor records restarts of the other services in the
        // same start history (E9): looked at when it is replaced, or every
        // 2 s if the directory cannot be watched.
        let mut history = match self.state.watch_starts() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("cannot watch the state directory ({e}): reading the start history every 2 s");
                None
            }
        };
        let mut history_poll = tokio::time::interval(Duration::from_secs(2));
        history_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The core's counters are copied for the exporter only when there
        // is one, as often as it exports.
        let mut metrics_copy = duet_runtime::telemetry::metric_interval().map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut last_pulse = Instant::now();
        loop {
            let deadline = self.election.poll_timeout().map(|t| self.clock.to_instant(t));
            let stop_deadline = stopping.map(|s| s + self.handover_timeout + Duration::from_millis(200));
            let pulse_deadline = last_pulse + PULSE_MAX;
            let wake = [deadline, stop_deadline].into_iter().flatten().fold(pulse_deadline, Instant::min);
            self.timer.set(Some(wake));
            let mut pulse = false;
            tokio::select! {
                biased;
                () = self.timer.fired() => {
                    let now = Instant::now();
                    if stop_deadline.is_some_and(|s| now >= s) {
                        break;
                    }
                    if let Some(d) = deadline.filter(|d| now >= *d) {
                        let late = d.elapsed();
                        self.timer_lateness.record(late);
                        if late >= LISTEN_FIRST_WHEN_LATE {
                            // Woken late (the process was stopped or
                            // starved): what arrived meanwhile comes first,
                            // so that a standby hears the active's waiting
                            // adverts before its takeover timer acts. The
                            // yield lets the receive tasks read their sockets.
                            tokio::task::yield_now().await;
                            tokio::task::yield_now().await;
                            while let Ok(i) = self.inbound.try_recv() {
                                self.inbound_one(i);
                            }
                        }
                        let now = self.clock.now();
                        self.election.handle_timeout(now);
                    }
                    pulse = true;
                }
                () = shutdown.wait(), if stopping.is_none() => {
                    stopping = Some(Instant::now());
                    let failed_lately = self.handover_unconfirmed.is_some_and(|t| t.elapsed() < HANDOVER_RETRY_AFTER);
                    if self.election.role() == Role::Active && failed_lately {
                        // The supervisor's handover before this stop, most
                        // likely: the partner did not take the role then.
                        tracing::info!("stopping without a second planned handover: the last one was not confirmed");
                        break;
                    }
                    if self.election.role() == Role::Active {
                        let now = self.clock.now();
                        if let Err(e) = self.election.handle_command(now, Command::Handover { timeout: self.handover_timeout }) {
                            tracing::warn!("no planned handover before stopping: {e}");
                            break;
                        }
                    } else {
                        break;
                    }
                }
                Some(r) = self.requests.recv() => self.request(r),
                Some(r) = next_report(self.witness.as_mut()) => self.witness_report(r),
                Some(r) = next_check(self.checks.as_mut()) => self.check_result(r),
                r = history_changed(history.as_mut(), &mut history_poll) => {
                    if let Err(e) = r {
                        tracing::warn!("the state directory's watch failed ({e}): reading the start history every 2 s");
                        history = None;
                    }
                    self.check_history();
                }
                () = tick(metrics_copy.as_mut()) => {
                    let now = self.clock.now();
                    self.metrics.update(
                        &self.election.status(now),
                        self.election.drops(),
                        self.shared.queue_full.load(Ordering::Relaxed),
                        self.timer_lateness.recent(),
                    );
                }
                Some(first) = self.inbound.recv() => {
                    pulse = true;
                    self.inbound_one(first);
                    // Drain what is queued without yielding to the timer
                    // for too long: at most 64 packets per turn.
                    for _ in 0..64 {
                        match self.inbound.try_recv() {
                            Ok(i) => self.inbound_one(i),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.act().await;
            if pulse {
                last_pulse = Instant::now();
                *lock(&self.shared.pulsed_at) = last_pulse;
                self.shared.pulse.send_modify(|n| *n = n.wrapping_add(1));
            }
            if let Some(e) = self.exit {
                self.finish().await;
                return e;
            }
            if stopping.is_some() && self.election.role() != Role::Stopping {
                break;
            }
        }
        self.finish().await;
        Exit::Shutdown
    }

    /// The last words: the takeover told the role is going (when this unit
    /// advertises), the partner told this unit is leaving (when it does
    /// not), the replay windows saved.
    async fn finish(&mut self) {
        if !self.election.role().advertises() {
            let now = self.clock.now();
            let _ = self.election.handle_command(now, Command::Leaving);
            self.act().await;
        }
        if self.election.role().advertises() {
            let ev = self.next_event(
                RoleEventKind::Changed,
                Role::Stopping,
                self.election.role(),
                "election service stopping".into(),
            );
            self.publish(ev);
        }
        self.save_state(true);
    }

    /// Hands the core the start history as it is on disk now (E9): the
    /// unit supervisor records the other services' restarts there too.
    fn check_history(&mut self) {
        if self.election.role() == Role::Pacified {
            return;
        }
        match self.state.starts() {
            Ok(s) => {
                let now = self.clock.now();
                let _ = self.election.handle_command(now, Command::CheckStarts(s));
            }
            Err(e) => tracing::warn!("cannot read the start history: {e:#}"),
        }
    }

    fn inbound_one(&mut self, i: Inbound) {
        let now = self.clock.now();
        match i {
            Inbound::Packet { iface, bytes, at } => {
                self.receive_delay.record(at.elapsed());
                let _ = self.election.handle_packet(now, iface, &bytes);
            }
            Inbound::Peer { iface, src, bytes } => {
                self.election.handle_peer_datagram(now, iface, src, &bytes);
            }
            Inbound::Link { name, up } => {
                if let Some(k) = self.election.params().interfaces.iter().position(|i| i.name == name)
                    && self.link_up[k] != up
                {
                    self.link_up[k] = up;
                    self.election.handle_link(now, k, up);
                }
            }
        }
    }

    /// Carries out everything the core asked for.
    async fn act(&mut self) {
        while let Some(a) = self.election.poll_action() {
            match a {
                Action::SendAdvert { iface, dst, payload } => {
                    if let Some(s) = &self.sockets[iface]
                        && let Err(e) = s.send(dst, &payload)
                    {
                        self.send_errors += 1;
                        if self.send_errors.is_power_of_two() {
                            tracing::warn!(errors = self.send_errors, "{e}");
                        }
                    }
                }
                Action::SendPeerStatus { iface, dst, payload } => {
                    if let Some(s) = &self.peer_sockets[iface] {
                        let _ = s.try_send_to(&payload, (dst, self.status_port).into());
                    }
                }
                Action::RoleChanged { from, to, reason } => {
                    self.metrics.role_changed(to);
                    // Whether this run holds the role, for the next run to
                    // know if it died active.
                    if (to == Role::Active) != (from == Role::Active)
                        && let Err(e) = self.state.mark_active(to == Role::Active)
                    {
                        tracing::error!("cannot record the role in the state directory: {e:#}");
                    }
                    // O3: the root of the role change's trace; the
                    // followers' spans join it through the event.
                    let span = duet_runtime::trace::start(
                        "duet.election.role_change",
                        "",
                        opentelemetry::trace::SpanKind::Internal,
                        vec![
                            opentelemetry::KeyValue::new("duet.role", to.as_str()),
                            opentelemetry::KeyValue::new("duet.previous_role", from.as_str()),
                            opentelemetry::KeyValue::new("duet.reason", reason.clone()),
                        ],
                    );
                    let mut ev = self.next_event(RoleEventKind::Changed, to, from, reason);
                    ev.trace = span.traceparent();
                    self.publish(ev);
                    span.end();
                }
                Action::Reannounce { reason } => {
                    let role = self.election.role();
                    let ev = self.next_event(RoleEventKind::Reannounce, role, role, reason);
                    self.publish(ev);
                }
                Action::ParametersChanged => {
                    let role = self.election.role();
                    let ev = self.next_event(RoleEventKind::Parameters, role, role, "HA parameters changed".into());
                    self.publish(ev);
                }
                Action::Log(n) => log_notice(&n),
                Action::LinkLostRestart { iface } => {
                    tracing::error!(
                        "hard reboot on link failure: restarting the unit's services (link lost on {})",
                        self.election.params().interfaces[iface].name
                    );
                    self.exit = Some(Exit::RestartServices);
                }
                // Awaited before the resign advert that follows it goes
                // out, so the partner never finds the addresses still here.
                Action::ScrubAddresses => self.scrub().await,
                Action::HandoverFinished { confirmed, partner, took } => {
                    self.handover_unconfirmed = (!confirmed).then(Instant::now);
                    for r in self.pending_handovers.drain(..) {
                        let _ = r.send(Ok(HandoverOutcome { confirmed, partner, took }));
                    }
                }
                Action::Witness(req) => {
                    let sent = self.witness.as_ref().map(|w| w.requests.try_send(req));
                    if !matches!(sent, Some(Ok(()))) {
                        // Nobody to ask, or too many asked: the core hears
                        // at once that the request failed and retries.
                        let error = if sent.is_none() { "no witness adapter" } else { "witness adapter busy" };
                        let now = self.clock.now();
                        let ev = WitnessEvent::Failed { request: Some(req.kind()), error: error.into() };
                        self.election.handle_witness(now, ev);
                    }
                }
            }
        }
        self.save_state(false);
        self.update_health();
    }

    /// A report of the witness's adapter: events go to the core (with the
    /// send times on its clock), the rest to the status.
    fn witness_report(&mut self, r: duet_witness::Report) {
        let Some(link) = self.witness.as_mut() else { return };
        match r {
            duet_witness::Report::Event(ev) => {
                match &ev {
                    WitnessEvent::Failed { request, error } if !link.failing => {
                        link.failing = true;
                        let what = request.map_or("session", |k| k.as_str());
                        tracing::warn!(target: "duet::election", "witness (etcd) {what} failed: {error}");
                    }
                    WitnessEvent::Failed { .. } => {}
                    _ if link.failing => {
                        link.failing = false;
                        tracing::info!(target: "duet::election", "witness (etcd) answers again");
                    }
                    _ => {}
                }
                let clock = self.clock;
                let now = clock.now();
                self.election.handle_witness(now, ev.map_time(|i| clock.time_of(i)));
            }
            duet_witness::Report::Connected { endpoint } => link.view.endpoint = Some(endpoint),
            duet_witness::Report::HolderTtl(t) => link.view.holder_ttl = t,
        }
    }

    fn next_event(&mut self, kind: RoleEventKind, role: Role, previous: Role, reason: String) -> RoleEvent {
        self.seq += 1;
        let p = self.election.params();
        RoleEvent {
            epoch: self.shared.epoch,
            seq: self.seq,
            kind,
            role,
            previous,
            at: SystemTime::now(),
            reason,
            ha_timeout: p.ha_timeout(),
            advert_interval: p.interval(),
            vhid: p.vhid,
            config_generation: self.config_generation,
            trace: String::new(),
        }
    }

    fn publish(&mut self, ev: RoleEvent) {
        // Update `current` and broadcast under one lock, so a stream that
        // subscribes and then reads `current` can neither miss nor repeat it.
        let mut cur = lock(&self.shared.current);
        *cur = ev.clone();
        let _ = self.events.send(ev);
    }

    /// T4: the takeover service is gone while this unit held the shared
    /// addresses; remove them before the partner takes them over.
    async fn scrub(&self) {
        let addrs = self.shared_addrs.clone();
        let vmacs: Vec<String> = if self.vmac {
            let vhid = self.election.params().vhid;
            addrs.iter().map(|(i, _, _)| duet_config::vmac_device(i, vhid)).collect()
        } else {
            Vec::new()
        };
        let work = async move {
            let nl = match Netlink::new() {
                Ok(nl) => nl,
                Err(e) => {
                    tracing::error!("cannot remove the shared addresses: {e}");
                    return;
                }
            };
            // Deleting a macvlan takes its addresses with it.
            for dev in vmacs {
                match nl.delete_link(&dev).await {
                    Ok(true) => tracing::warn!(%dev, "removed the virtual MAC device (takeover service gone)"),
                    Ok(false) => {}
                    Err(e) => tracing::error!(%dev, "cannot remove the virtual MAC device: {e}"),
                }
            }
            for (ifname, addr, prefix) in addrs {
                match nl.del_address(&ifname, addr, prefix).await {
                    Ok(true) => tracing::warn!(%ifname, %addr, "removed shared address (takeover service gone)"),
                    Ok(false) => {}
                    Err(e) => tracing::error!(%ifname, %addr, "cannot remove shared address: {e}"),
                }
            }
        };
        if tokio::time::timeout(Duration::from_millis(500), work).await.is_err() {
            tracing::error!("removing the shared addresses took over 500 ms; handing over anyway");
        }
    }

    /// Saves the replay windows (E15) and, in SHA-256 mode, the counter's
    /// ceiling. The windows change with every advert received: they are
    /// written at most every [`REPLAY_SAVE_EVERY`] without an fsync (a
    /// process restarted after a crash finds them: every advert up to at
    /// most that long before the crash is refused if replayed), and durably
    /// at most every [`REPLAY_SYNC_EVERY`] and on stop (a power loss forgets
    /// at most that much). What the forgotten span allows: its adverts
    /// replayed once each, which can prolong a partner that died meanwhile
    /// by at most that span, and only across a restart of this process. The counter is saved only
    /// when it passes the saved ceiling: [`COUNTER_RESERVE`] adverts at a
    /// time, so that no counter is ever sent twice across restarts.
    fn save_state(&mut self, force: bool) {
        if !force && self.last_replay_save.elapsed() < REPLAY_SAVE_EVERY {
            return;
        }
        if let Some(r) = self.election.take_replay_if_dirty() {
            self.last_replay_save = Instant::now();
            let durable = force || self.last_replay_sync.elapsed() >= REPLAY_SYNC_EVERY;
            let d = if durable { Durability::Synced } else { Durability::Cached };
            match self.state.save_replay(&r, d) {
                Ok(()) if durable => self.last_replay_sync = Instant::now(),
                Ok(()) => {}
                Err(e) => tracing::error!("cannot save the replay windows: {e:#}"),
            }
        }
        if matches!(self.election.params().auth, duet_carp::AuthParams::Sha256 { .. }) {
            let next = self.election.next_counter();
            if next >= self.counter_ceiling {
                let ceiling = next.saturating_add(COUNTER_RESERVE);
                match self.state.save_counter(ceiling) {
                    Ok(()) => self.counter_ceiling = ceiling,
                    Err(e) => tracing::error!("cannot save the advert counter: {e:#}"),
                }
            }
        }
    }

    fn update_health(&mut self) {
        let role = self.election.role();
        let p = self.election.params();
        let any_checked_up = p.mode == duet_carp::HaMode::NonHa
            || p.interfaces.iter().zip(&self.link_up).any(|(i, up)| i.ha_check && *up);
        let serving = role != Role::Pacified && any_checked_up;
        if self.serving != Some(serving) {
            self.serving = Some(serving);
            let h = self.health.clone();
            tokio::spawn(async move { h.set(serving).await });
        }
    }
}

/// The start history changed (per the watch, or the poll without one).
async fn history_changed(
    watch: Option<&mut duet_net::watch::FileWatch>,
    poll: &mut tokio::time::Interval,
) -> std::io::Result<()> {
    match watch {
        Some(w) => w.changed().await,
        None => {
            poll.tick().await;
            Ok(())
        }
    }
}

/// The next tick of an optional interval; never, without one.
async fn tick(i: Option<&mut tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The next report of the witness's adapter; never, without one.
async fn next_check(rx: Option<&mut mpsc::Receiver<crate::track::CheckResult>>) -> Option<crate::track::CheckResult> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_report(w: Option<&mut WitnessLink>) -> Option<duet_witness::Report> {
    match w {
        Some(w) => w.reports.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes a notice to the log at its level; a readiness line carries the
/// component it is about as a field.
pub(crate) fn log_notice(n: &Notice) {
    if let Some(component) = n.component() {
        match n.level() {
            Level::Info => tracing::info!(target: "duet::election", %component, "{n}"),
            Level::Warning => tracing::warn!(target: "duet::election", %component, "{n}"),
            Level::Error | Level::Critical => tracing::error!(target: "duet::election", %component, "{n}"),
        }
        return;
    }
    match n.level() {
        Level::Info => tracing::info!(target: "duet::election", "{n}"),
        Level::Warning => tracing::warn!(target: "duet::election", "{n}"),
        Level::Error | Level::Critical => tracing::error!(target: "duet::election", "{n}"),
    }
}

/// What the service's tests build drivers and snapshots from: no sockets.
#[cfg(test)]
pub(crate) mod test_support {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use duet_carp::params::{AuthParams, Destination, HaMode, IfaceParams, Params, Preferred, Timing};
    use duet_proto::election::v1::election_service_server::ElectionServiceServer;

    use super::{Driver, Handles, Setup};
    use crate::state::StateDir;

    /// One unit of a pair on eth0, 198.18.0.1 (first) or .2 (second).
    pub(crate) fn params(mode: HaMode) -> Params {
        let (own, partner) = if mode == HaMode::Second { (2, 1) } else { (1, 2) };
        Params {
            mode,
            vhid: 10,
            timing: Timing::Standard { timeout: Duration::from_secs(3) },
            preferred: Preferred::None,
            initial_wait: Duration::ZERO,
            auth: AuthParams::Ucarp { password: b"secret".to_vec() },
            interfaces: vec![IfaceParams {
                name: "eth0".into(),
                unit_addr: Ipv4Addr::new(198, 18, 0, own),
                partner_addr: Some(Ipv4Addr::new(198, 18, 0, partner)),
                shared: Ipv4Addr::new(198, 18, 0, 10),
                ha_check: true,
                destination: Destination::Multicast,
            }],
            advskew: None,
            hard_reboot_on_link_failure: false,
            witness: None,
        }
    }

    /// A driver of a first unit keeping its state in `dir`, epoch 7.
    pub(crate) fn driver(dir: &std::path::Path) -> (Driver, Handles) {
        let (_, health) = duet_runtime::grpc::router::<ElectionServiceServer<crate::api::Api>>(
            &duet_runtime::admin::AdminAuth::new(None),
        )
        .expect("router");
        let setup = Setup {
            params: params(HaMode::First),
            config_generation: 0,
            state: StateDir::open(dir).expect("state dir"),
            status_port: 6973,
            handover_timeout: Duration::from_secs(3),
            pacify: duet_carp::PacifyRule::default(),
            shared_addrs: vec![("eth0".into(), Ipv4Addr::new(198, 18, 0, 10), 24)],
            vmac: false,
            drop_log_window: Duration::ZERO,
            witness: None,
            tracks: Vec::new(),
        };
        Driver::new(setup, 7, health).expect("driver")
    }
}
