//! The adapter around the election core: one task owns the [`Election`],
//! waits on its timer, the sockets, link events and requests from the gRPC
//! API, feeds the core and carries out what it returns.
//!
//! ```text
//!  recv task (per interface) ──┐ bounded queue
//!  peer-status task ───────────┼──────────────►┌───────────┐── adverts ──► raw socket
//!  link watcher ───────────────┘               │  driver   │── role events ──► WatchRole streams
//!  gRPC API ──────── requests (bounded) ──────►│  (core)   │── logs, state files
//!                                              └───────────┘
//! ```
//!
//! The select loop is biased towards the timer: a flood of packets can
//! delay an advert by at most one packet's processing (microseconds), never
//! starve it. Receive tasks never block: when the queue is full the packet
//! is dropped and counted.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use duet_carp::params::Params;
use duet_carp::{Action, Command, Election, Level, Notice, Role, RoleEvent, RoleEventKind, Time};
use duet_net::carp_socket::{CarpSocket, SendMode};
use duet_net::netlink::{NetEvent, Netlink};
use duet_runtime::shutdown::Shutdown;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::state::StateDir;

/// What the receive side hands the driver.
#[derive(Debug)]
pub(crate) enum Inbound {
    Packet { iface: usize, bytes: Vec<u8>, at: Instant },
    Peer { iface: usize, src: Ipv4Addr, bytes: Vec<u8> },
    Link { name: String, up: bool },
}

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
        reply: oneshot::Sender<Result<HandoverOutcome, String>>,
    },
    ClearPacified(oneshot::Sender<Result<Role, String>>),
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
    pub wall: Wall,
    pub takeover: Option<TakeoverReport>,
    pub recent_starts: u32,
    pub queue_full: u64,
    pub send_errors: u64,
    pub timer_lateness: Delays,
    pub receive_delay: Delays,
}

/// Maps the core's monotonic time to wall-clock time for the API.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wall {
    origin: Instant,
    wall_origin: SystemTime,
}

impl Wall {
    fn new() -> Self {
        Self { origin: Instant::now(), wall_origin: SystemTime::now() }
    }

    pub(crate) fn now(&self) -> Time {
        Time::from_micros(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    pub(crate) fn to_instant(self, t: Time) -> Instant {
        self.origin + Duration::from_micros(t.as_micros())
    }

    pub(crate) fn to_system(self, t: Time) -> SystemTime {
        self.wall_origin + Duration::from_micros(t.as_micros())
    }
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
}

impl Shared {
    pub(crate) fn current(&self) -> RoleEvent {
        lock(&self.current).clone()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What made the driver stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown was requested.
    Shutdown,
    /// A checked link was lost with hard reboot on (E8): restart the services.
    RestartServices,
}

/// Inputs the driver is built from.
pub(crate) struct Setup {
    pub params: Params,
    /// The configuration generation `params` came from (0: the unit file).
    pub config_generation: u64,
    pub state: StateDir,
    pub status_port: u16,
    pub handover_timeout: Duration,
    pub pacify: (Duration, u32),
    pub shared_addrs: Vec<(String, Ipv4Addr, u8)>,
    /// The takeover service puts the shared addresses on VMAC macvlans.
    pub vmac: bool,
    pub drop_log_window: Duration,
}

pub(crate) struct Driver {
    election: Election,
    wall: Wall,
    sockets: Vec<Option<Arc<CarpSocket>>>,
    peer_sockets: Vec<Option<Arc<UdpSocket>>>,
    shared: Arc<Shared>,
    events: broadcast::Sender<RoleEvent>,
    inbound: mpsc::Receiver<Inbound>,
    requests: mpsc::Receiver<Request>,
    state: StateDir,
    seq: u64,
    pending_handovers: Vec<oneshot::Sender<Result<HandoverOutcome, String>>>,
    followers: u32,
    takeover: Option<TakeoverReport>,
    send_errors: u64,
    status_port: u16,
    handover_timeout: Duration,
    pacify: (Duration, u32),
    shared_addrs: Vec<(String, Ipv4Addr, u8)>,
    vmac: bool,
    exit: Option<Exit>,
    last_replay_save: Instant,
    health: duet_runtime::grpc::Health,
    serving: Option<bool>,
    link_up: Vec<bool>,
    metrics: crate::metrics::Metrics,
    timer_lateness: Delays,
    receive_delay: Delays,
    /// Per component: ready, why, and when it last said so.
    readiness: std::collections::BTreeMap<String, (bool, String, Instant)>,
    /// The configuration generation the parameters in force came from.
    config_generation: u64,
}

/// A component silent this long no longer holds the unit back.
const READINESS_STALE: Duration = Duration::from_secs(10);

/// Recent scheduling delays (the last 4096) and the largest ever.
#[derive(Debug, Clone, Default)]
pub(crate) struct Delays {
    recent: std::collections::VecDeque<u32>,
    max_us: u64,
    samples: u64,
}

impl Delays {
    fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if self.recent.len() >= 4096 {
            self.recent.pop_front();
        }
        self.recent.push_back(u32::try_from(us).unwrap_or(u32::MAX));
        self.max_us = self.max_us.max(us);
        self.samples += 1;
    }

    /// (p50, p99, max, samples) in microseconds.
    pub(crate) fn summary(&self) -> (u64, u64, u64, u64) {
        let mut v: Vec<u32> = self.recent.iter().copied().collect();
        if v.is_empty() {
            return (0, 0, 0, 0);
        }
        v.sort_unstable();
        let at = |p: f64| u64::from(v[((v.len() - 1) as f64 * p).round() as usize]);
        (at(0.5), at(0.99), self.max_us, self.samples)
    }
}

pub(crate) struct Handles {
    pub shared: Arc<Shared>,
    pub inbound: mpsc::Sender<Inbound>,
}

impl Driver {
    /// Builds the core from the saved state and opens nothing yet.
    pub(crate) fn new(setup: Setup, epoch: u64, health: duet_runtime::grpc::Health) -> anyhow::Result<(Self, Handles)> {
        let history = setup.state.start_history()?;
        let (is_pacified, starts) = crate::state::pacified(&history, setup.pacify.0, setup.pacify.1);
        let replay = setup.state.replay()?;
        let counter_seed = match &setup.params.auth {
            duet_carp::AuthParams::Sha256 { .. } => {
                duet_carp::machine::sha256_counter_seed(crate::state::unix_ms(), setup.state.last_counter()?)
            }
            duet_carp::AuthParams::Ucarp { .. } => rand::random(),
        };
        let wall = Wall::new();
        let init = duet_carp::Init {
            counter_seed,
            peer_counter_seed: crate::state::unix_ms() << 16,
            replay,
            pacified: is_pacified.then_some((starts, setup.pacify.0)),
            drop_log_window: setup.drop_log_window,
        };
        let mut election = Election::new(setup.params.clone(), wall.now(), init);
        let _ = election.handle_command(wall.now(), Command::SetGeneration(setup.config_generation));
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
        };
        let shared = Arc::new(Shared {
            epoch,
            requests: req_tx,
            current: Mutex::new(first),
            events: Mutex::new(events_rx),
            queue_full: AtomicU64::new(0),
        });
        let n = setup.params.interfaces.len();
        let d = Self {
            election,
            wall,
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
            pacify: setup.pacify,
            shared_addrs: setup.shared_addrs,
            vmac: setup.vmac,
            exit: None,
            last_replay_save: Instant::now(),
            health,
            serving: None,
            link_up: vec![true; n],
            metrics: crate::metrics::Metrics::new(),
            timer_lateness: Delays::default(),
            receive_delay: Delays::default(),
            readiness: std::collections::BTreeMap::new(),
            config_generation: setup.config_generation,
        };
        Ok((d, Handles { shared, inbound: in_tx }))
    }

    /// Opens the sockets and starts the receive tasks and the link watcher.
    pub(crate) async fn open(
        &mut self,
        inbound: &mpsc::Sender<Inbound>,
        tasks: &mut duet_runtime::tasks::Tasks,
    ) -> anyhow::Result<()> {
        let nl = Netlink::new()?;
        let params = self.election.params().clone();
        for (k, i) in params.interfaces.iter().enumerate() {
            let info = nl.link(&i.name).await.map_err(|e| {
                anyhow::anyhow!("interface {} (interface[{k}].name): {e}; check the name against `ip link`", i.name)
            })?;
            if !i.ha_check || params.mode == duet_carp::HaMode::NonHa {
                continue;
            }
            if !info.up {
                let now = self.wall.now();
                self.link_up[k] = false;
                self.election.handle_link(now, k, false);
            }
            let mode = match i.destination {
                duet_carp::Destination::Multicast => SendMode::Multicast,
                duet_carp::Destination::Broadcast => SendMode::Broadcast,
                duet_carp::Destination::Unicast => SendMode::Unicast,
            };
            let sock = Arc::new(CarpSocket::open(&i.name, info.index, i.unit_addr, mode)?);
            self.sockets[k] = Some(Arc::clone(&sock));
            let tx = inbound.clone();
            let shared = Arc::clone(&self.shared);
            tasks.spawn_restarting(&format!("receive adverts on {}", i.name), Duration::from_millis(100), move || {
                let sock = Arc::clone(&sock);
                let tx = tx.clone();
                let shared = Arc::clone(&shared);
                async move { receive_loop(k, &sock, &tx, &shared).await }
            });
            if i.partner_addr.is_some() {
                let udp = UdpSocket::bind((i.unit_addr, self.status_port)).await.map_err(|e| {
                    anyhow::anyhow!(
                        "cannot bind the peer-status port {}:{} on {}: {e}; the unit address must be configured on the interface and election.status_port free",
                        i.unit_addr,
                        self.status_port,
                        i.name
                    )
                })?;
                let udp = Arc::new(udp);
                self.peer_sockets[k] = Some(Arc::clone(&udp));
                let tx = inbound.clone();
                tasks.spawn_restarting::<_, _, std::io::Error>(
                    &format!("receive peer status on {}", i.name),
                    Duration::from_millis(100),
                    move || {
                        let udp = Arc::clone(&udp);
                        let tx = tx.clone();
                        async move {
                            let mut buf = [0u8; 512];
                            loop {
                                let (n, from) = udp.recv_from(&mut buf).await?;
                                if let std::net::SocketAddr::V4(v4) = from {
                                    let _ = tx.try_send(Inbound::Peer {
                                        iface: k,
                                        src: *v4.ip(),
                                        bytes: buf[..n].to_vec(),
                                    });
                                }
                            }
                        }
                    },
                );
            }
        }
        let mut events = duet_net::netlink::watch()?;
        let tx = inbound.clone();
        tasks.spawn::<_, std::convert::Infallible>("link watcher", async move {
            while let Some(ev) = events.recv().await {
                let msg = match ev {
                    NetEvent::Link(info) => Inbound::Link { name: info.name, up: info.up },
                    NetEvent::LinkRemoved { name, .. } => Inbound::Link { name, up: false },
                    _ => continue,
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
            Ok(())
        });
        Ok(())
    }

    /// Runs until shutdown (after a planned handover when active) or a
    /// hard-reboot exit.
    pub(crate) async fn run(mut self, mut shutdown: Shutdown) -> Exit {
        self.act().await;
        let mut stopping: Option<Instant> = None;
        // The unit supervisor records restarts of the other services in the
        // same start history; look at it now and then (E9).
        let mut history_check = tokio::time::interval(Duration::from_secs(2));
        history_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.election.poll_timeout().map(|t| self.wall.to_instant(t));
            let stop_deadline = stopping.map(|s| s + self.handover_timeout + Duration::from_millis(200));
            tokio::select! {
                biased;
                () = sleep_until(deadline) => {
                    if let Some(d) = deadline {
                        self.timer_lateness.record(d.elapsed());
                    }
                    let now = self.wall.now();
                    self.election.handle_timeout(now);
                }
                () = sleep_until(stop_deadline) => break,
                () = shutdown.wait(), if stopping.is_none() => {
                    stopping = Some(Instant::now());
                    if self.election.role() == Role::Active {
                        let now = self.wall.now();
                        if let Err(e) = self.election.handle_command(now, Command::Handover { timeout: self.handover_timeout }) {
                            tracing::warn!("no planned handover before stopping: {e}");
                            break;
                        }
                    } else {
                        break;
                    }
                }
                Some(r) = self.requests.recv() => self.request(r),
                _ = history_check.tick() => {
                    self.check_history();
                    let now = self.wall.now();
                    self.apply_readiness(now);
                    let now = self.wall.now();
                    self.metrics.update(&self.election.status(now), self.election.drops(), self.shared.queue_full.load(Ordering::Relaxed));
                }
                Some(first) = self.inbound.recv() => {
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
            if let Some(e) = self.exit {
                self.finish();
                return e;
            }
            if stopping.is_some() && self.election.role() != Role::Stopping {
                break;
            }
        }
        self.finish();
        Exit::Shutdown
    }

    fn finish(&mut self) {
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

    /// The unit is ready when every component that spoke lately is.
    fn apply_readiness(&mut self, now: Time) -> bool {
        self.readiness.retain(|c, (_, _, at)| {
            let fresh = at.elapsed() < READINESS_STALE;
            if !fresh {
                tracing::warn!(component = %c, "no readiness report for 10 s: no longer holding the unit back");
            }
            fresh
        });
        let ready = self.readiness.values().all(|(r, _, _)| *r);
        let _ = self.election.handle_command(now, Command::SetReady(ready));
        ready
    }

    fn check_history(&mut self) {
        if self.election.role() == Role::Pacified {
            return;
        }
        let history = match self.state.start_history() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("cannot read the start history: {e:#}");
                return;
            }
        };
        let (pacified, starts) = crate::state::pacified(&history, self.pacify.0, self.pacify.1);
        if pacified {
            let now = self.wall.now();
            let _ = self.election.handle_command(now, Command::Pacify { starts, window: self.pacify.0 });
        }
    }

    fn inbound_one(&mut self, i: Inbound) {
        let now = self.wall.now();
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

    fn request(&mut self, r: Request) {
        let now = self.wall.now();
        match r {
            Request::Status(reply) => {
                let history = self.state.start_history().unwrap_or_default();
                let (_, recent) = crate::state::pacified(&history, self.pacify.0, self.pacify.1);
                let _ = reply.send(Snapshot {
                    status: self.election.status(now),
                    params: self.election.params().clone(),
                    config_generation: self.config_generation,
                    epoch: self.shared.epoch,
                    seq: self.seq,
                    wall: self.wall,
                    takeover: self.takeover.clone(),
                    recent_starts: recent,
                    queue_full: self.shared.queue_full.load(Ordering::Relaxed),
                    send_errors: self.send_errors,
                    timer_lateness: self.timer_lateness.clone(),
                    receive_delay: self.receive_delay.clone(),
                });
            }
            Request::Handover { timeout, reply } => {
                match self.election.handle_command(now, Command::Handover { timeout }) {
                    Ok(()) => self.pending_handovers.push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Request::ClearPacified(reply) => {
                let r = self.election.handle_command(now, Command::ClearPacified).map_err(|e| e.to_string());
                if r.is_ok()
                    && let Err(e) = self.state.clear_starts()
                {
                    tracing::error!("cannot record the cleared start history: {e:#}");
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
                let was = self.readiness.get(&component).map(|(r, _, _)| *r);
                if was != Some(ready) {
                    if ready {
                        tracing::info!(%component, "ready: {reason}");
                    } else {
                        tracing::warn!(%component, "not ready to take over from a healthy partner: {reason}");
                    }
                }
                self.readiness.insert(component, (ready, reason, Instant::now()));
                let _ = reply.send(self.apply_readiness(now));
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
                    let ev = self.next_event(RoleEventKind::Changed, to, from, reason);
                    self.publish(ev);
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
                    for r in self.pending_handovers.drain(..) {
                        let _ = r.send(Ok(HandoverOutcome { confirmed, partner, took }));
                    }
                }
            }
        }
        self.save_state(false);
        self.update_health();
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

    fn save_state(&mut self, force: bool) {
        if !force && self.last_replay_save.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last_replay_save = Instant::now();
        if let Some(r) = self.election.take_replay_if_dirty()
            && let Err(e) = self.state.save_replay(&r)
        {
            tracing::error!("cannot save the replay windows: {e:#}");
        }
        if matches!(self.election.params().auth, duet_carp::AuthParams::Sha256 { .. })
            && let Err(e) = self.state.save_counter(self.election.next_counter())
        {
            tracing::error!("cannot save the advert counter: {e:#}");
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

async fn receive_loop(
    iface: usize,
    sock: &CarpSocket,
    tx: &mpsc::Sender<Inbound>,
    shared: &Shared,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 2048];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Never wait for the driver here: a full queue means a flood, and
        // the packet is dropped and counted.
        if tx.try_send(Inbound::Packet { iface, bytes: buf[..n].to_vec(), at: Instant::now() }).is_err() {
            shared.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Writes a notice to the log at its level.
pub(crate) fn log_notice(n: &Notice) {
    match n.level() {
        Level::Info => tracing::info!(target: "duet::election", "{n}"),
        Level::Warning => tracing::warn!(target: "duet::election", "{n}"),
        Level::Error | Level::Critical => tracing::error!(target: "duet::election", "{n}"),
    }
}
