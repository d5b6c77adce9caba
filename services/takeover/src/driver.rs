//! The takeover driver: one task that follows the election's role stream
//! and makes the kernel match it.
//!
//! ```text
//!  role stream (read here directly) ──┐
//!  connector news ────────────────────┤            ┌─► netlink: addresses, macvlan
//!  netlink events (watch) ────────────┼─► driver ──┼─► gratuitous ARP (first frame here, rest on timer tasks)
//!  reconcile tick, refresh timer ─────┤            ├─► report (watch) ──► reporter task ──► election
//!  fail-safe deadline, shutdown ──────┘            └─► status (for the API), health
//! ```
//!
//! The select loop is biased towards the role stream: a role event is
//! acted on before anything else that is ready. Holding does every
//! interface's netlink work at once, then sends the first gratuitous ARP of
//! every interface, then leaves the rest of the bursts to timer tasks: no
//! sleep and no shell-out between the event and the first frame, only the
//! netlink requests themselves (one per address: the interface's index is
//! known, `Netlink::add_address_at`).
//!
//! Drift (T1): netlink events about the shared addresses and the devices
//! carrying them, and a periodic pass, look at what the kernel has and
//! repair what differs from the role. A repair counts as drift only when
//! the kernel confirms it changed something, so the notifications of the
//! driver's own changes, which arrive after the fact, never count.
//!
//! Fail-safe (T4): while the stream is down and the unit holds the
//! addresses, a deadline runs; when it passes, the addresses are given up
//! before the partner, which takes over one HA timeout after the last
//! advert, can hold them too.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use duet_config::Cidr;
use duet_net::garp::GarpSender;
use duet_net::netlink::{LinkInfo, NetEvent, Netlink};
use duet_proto::common::v1::Role;
use duet_proto::election::v1 as pb;
use duet_proto::election::v1::election_service_client::ElectionServiceClient;
use duet_runtime::grpc::Health;
use duet_runtime::shutdown::Shutdown;
use duet_runtime::tasks::Tasks;
use duet_wire::arp::format_mac;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Streaming;
use tonic::transport::Channel;

use crate::api::{RECENT_REPAIRS, Shared, Status, lock};
use crate::devices::{self, VmacSpec};
use crate::election::{FOLLOWER, Report, StreamNews};
use crate::garp::{Announcer, Target};
use crate::metrics::Metrics;
use crate::notice;
use crate::plan::{self, Repair, Want};
use crate::sequence::{Sequence, Verdict};
use crate::sysctls::Saved;

/// How long health stays NOT_SERVING after a task failed (and restarted).
const FAILURE_UNHEALTHY: Duration = Duration::from_secs(30);

/// Bound on releasing everything when the service stops; with the last
/// report and the tasks' grace it stays within the unit supervisor's
/// default stop grace (5 s).
const STOP_RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the driver is making true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No role received yet: touch nothing (a restarted service must not
    /// drop addresses the election still wants held) until the role
    /// arrives or the fail-safe deadline passes.
    Unknown,
    Hold,
    Release,
}

/// What the driver is built from.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// Per interface, its shared address.
    pub ifaces: Vec<(String, Cidr)>,
    pub vmac: bool,
    /// The vhid until the election says otherwise.
    pub vhid: u8,
    pub garp_count: u32,
    pub garp_spacing: Duration,
    /// `None`: no refresh.
    pub garp_refresh: Option<Duration>,
    pub reconcile_interval: Duration,
    /// HA timeout and advert interval until the election says otherwise.
    pub ha_timeout: Duration,
    pub advert_interval: Duration,
    /// Where kernel parameters to restore are kept (see [`crate::sysctls`]).
    pub sysctl_file: std::path::PathBuf,
    pub election_url: String,
    /// R4: the replicator to ask before adding the addresses, and how long
    /// to wait for it.
    pub replicator_url: Option<String>,
    pub state_wait: Duration,
}

/// The virtual MAC device this service created on an interface.
#[derive(Debug)]
struct VmacDevice {
    name: String,
    vhid: u8,
    index: u32,
    sender: Arc<GarpSender>,
}

/// One interface with a shared address.
#[derive(Debug)]
struct Iface {
    name: String,
    shared: Cidr,
    /// The interface as last seen.
    link: Option<LinkInfo>,
    /// Socket for gratuitous ARPs from the interface itself (without VMAC).
    sender: Option<Arc<GarpSender>>,
    /// The virtual MAC device carrying the address (with VMAC).
    vmac: Option<VmacDevice>,
    /// The shared address is in place here (as far as the driver knows).
    held: bool,
    /// Why the last apply or repair of this interface failed; it is
    /// retried on every reconcile pass.
    error: Option<String>,
}

impl Iface {
    fn open_sender(&mut self) {
        self.sender = None;
        if let Some(l) = &self.link {
            match GarpSender::open(&self.name, l.index) {
                Ok(s) => self.sender = Some(Arc::new(s)),
                Err(e) => self.error = Some(e.to_string()),
            }
        }
    }
}

/// What was last applied, for the report.
#[derive(Debug, Clone, Copy, Default)]
struct Applied {
    addresses_at: Option<SystemTime>,
    first_garp_at: Option<SystemTime>,
    state_installed: bool,
    state_wait_us: u64,
}

pub(crate) struct Driver {
    ifaces: Vec<Iface>,
    vmac: bool,
    vhid: u8,
    garp_refresh: Option<Duration>,
    reconcile_interval: Duration,
    ha_timeout: Duration,
    advert_interval: Duration,
    election_url: String,
    replicator_url: Option<String>,
    state_wait: Duration,
    nl: Arc<Netlink>,
    sysctls: Saved,
    announcer: Announcer,
    seq: Sequence,
    role: Role,
    mode: Mode,
    /// The addresses were given up by the fail-safe, not by the role.
    failsafe_released: bool,
    stream: Option<Streaming<pb::WatchRoleResponse>>,
    stream_ended: Option<oneshot::Sender<bool>>,
    /// The next message is the first of its stream.
    first_of_stream: bool,
    /// The stream delivered its first message and is still open.
    following: bool,
    /// A stream delivered a message once (so a new one is a return).
    ever_followed: bool,
    /// Since when the role stream is down (`None` while following).
    stream_lost_at: Option<(Instant, SystemTime)>,
    /// The last message of any kind (heartbeats included) on the stream.
    last_message_at: Option<(Instant, SystemTime)>,
    connect_failures: u32,
    news: mpsc::Receiver<StreamNews>,
    net_events: Option<mpsc::Receiver<NetEvent>>,
    reports: watch::Sender<Option<Report>>,
    report_client: ElectionServiceClient<Channel>,
    applied: Applied,
    next_refresh: Option<Instant>,
    reconcile_soon: bool,
    dead_tasks: Vec<String>,
    /// Failures of restarting tasks seen so far, and when the last new one
    /// was seen: health is NOT_SERVING for a while after one.
    failures_seen: usize,
    failure_at: Option<Instant>,
    st: Status,
    shared: Arc<Shared>,
    health: Health,
    serving: Option<bool>,
    metrics: Metrics,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("mode", &self.mode).field("role", &self.role).finish_non_exhaustive()
    }
}

/// The channels the driver is wired to.
pub(crate) struct Wiring {
    pub news: mpsc::Receiver<StreamNews>,
    pub reports: watch::Sender<Option<Report>>,
    pub report_client: ElectionServiceClient<Channel>,
    pub shared: Arc<Shared>,
    pub health: Health,
    pub metrics: Metrics,
}

impl Driver {
    /// Looks the interfaces up, opens the ARP sockets and subscribes to
    /// netlink events. A missing interface is reported (status, health)
    /// and looked for again on every pass, not fatal.
    pub(crate) async fn new(setup: Setup, nl: Arc<Netlink>, w: Wiring) -> anyhow::Result<Self> {
        let mut ifaces = Vec::new();
        for (name, shared) in &setup.ifaces {
            let mut i = Iface {
                name: name.clone(),
                shared: *shared,
                link: None,
                sender: None,
                vmac: None,
                held: false,
                error: None,
            };
            match nl.link(name).await {
                Ok(l) => {
                    i.link = Some(l);
                    if !setup.vmac {
                        i.open_sender();
                    }
                }
                Err(e) => {
                    tracing::error!("{e}; its shared address {shared} cannot be held until it exists");
                    i.error = Some(e.to_string());
                }
            }
            ifaces.push(i);
        }
        let net_events = match duet_net::netlink::watch() {
            Ok(rx) => Some(rx),
            Err(e) => {
                tracing::error!("no netlink events ({e}); drift is found by the periodic pass only");
                None
            }
        };
        let announcer =
            Announcer::new(setup.garp_count, setup.garp_spacing, Arc::clone(&w.shared.garp), w.metrics.clone());
        let now = (Instant::now(), SystemTime::now());
        let st = Status {
            vhid: setup.vhid,
            stream_lost_at: Some(now.1),
            failsafe_after: plan::failsafe_window(setup.ha_timeout, setup.advert_interval),
            ..Status::default()
        };
        Ok(Self {
            ifaces,
            vmac: setup.vmac,
            vhid: setup.vhid,
            garp_refresh: setup.garp_refresh,
            reconcile_interval: setup.reconcile_interval,
            ha_timeout: setup.ha_timeout,
            advert_interval: setup.advert_interval,
            election_url: setup.election_url,
            replicator_url: setup.replicator_url,
            state_wait: setup.state_wait,
            nl,
            sysctls: Saved::load(setup.sysctl_file),
            announcer,
            seq: Sequence::new(),
            role: Role::Unspecified,
            mode: Mode::Unknown,
            failsafe_released: false,
            stream: None,
            stream_ended: None,
            first_of_stream: false,
            following: false,
            ever_followed: false,
            stream_lost_at: Some(now),
            last_message_at: None,
            connect_failures: 0,
            news: w.news,
            net_events,
            reports: w.reports,
            report_client: w.report_client,
            applied: Applied::default(),
            next_refresh: None,
            reconcile_soon: false,
            dead_tasks: Vec::new(),
            failures_seen: 0,
            failure_at: None,
            st,
            shared: w.shared,
            health: w.health,
            serving: None,
            metrics: w.metrics,
        })
    }

    /// Runs until `shutdown`, then releases everything and reports.
    pub(crate) async fn run(mut self, mut shutdown: Shutdown, tasks: &mut Tasks) {
        let mut tick = tokio::time::interval(self.reconcile_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.publish().await;
        loop {
            let failsafe_at = self.failsafe_deadline();
            let stale_at = self.stale_deadline();
            tokio::select! {
                biased;
                () = shutdown.wait() => break,
                () = sleep_until(stale_at) => {
                    let quiet = self.last_message_at.map_or(Duration::ZERO, |(t, _)| t.elapsed());
                    self.stream_down(format!("no message, not even a heartbeat, for {} ms (the election hangs?)", quiet.as_millis()));
                }
                item = next_message(&mut self.stream) => {
                    let received = Instant::now();
                    match item {
                        Ok(Some(msg)) => self.on_message(msg, received).await,
                        Ok(None) => self.stream_down("the election closed it".into()),
                        Err(s) => self.stream_down(stream_error(&s)),
                    }
                }
                Some(news) = self.news.recv() => self.on_news(news),
                () = sleep_until(failsafe_at) => self.failsafe().await,
                ev = next_event(&mut self.net_events) => {
                    match ev {
                        Some(ev) => {
                            self.on_net_event(ev);
                            // Take what else is queued, then repair once.
                            while let Some(ev) = self.net_events.as_mut().and_then(|r| r.try_recv().ok()) {
                                self.on_net_event(ev);
                            }
                        }
                        None => {
                            tracing::error!("netlink events stopped; drift is found by the periodic pass until they are back");
                            self.net_events = None;
                        }
                    }
                }
                () = sleep_until(self.next_refresh) => self.refresh(),
                Some((name, outcome)) = tasks.next() => {
                    let why = outcome.err().unwrap_or_else(|| "ended".into());
                    tracing::error!("task {name} stopped: {why}");
                    self.dead_tasks.push(format!("{name}: {why}"));
                }
                _ = tick.tick() => {
                    if self.net_events.is_none() {
                        self.net_events = duet_net::netlink::watch().ok();
                    }
                    self.reconcile_soon = true;
                }
            }
            if std::mem::take(&mut self.reconcile_soon) {
                self.reconcile().await;
            }
            self.publish().await;
        }
        self.stop().await;
        self.publish().await;
    }

    // ----- the role stream ----------------------------------------------

    fn on_news(&mut self, news: StreamNews) {
        match news {
            StreamNews::Opened { stream, ended } => {
                tracing::debug!("role stream opened");
                self.stream = Some(*stream);
                self.stream_ended = Some(ended);
                self.first_of_stream = true;
            }
            StreamNews::Failed(e) => {
                self.connect_failures += 1;
                notice::cannot_connect(&self.election_url, &e, self.connect_failures == 1);
                self.st.last_error = format!("cannot follow the election's role stream at {}: {e}", self.election_url);
            }
        }
    }

    fn stream_down(&mut self, why: String) {
        self.stream = None;
        if let Some(tx) = self.stream_ended.take() {
            let _ = tx.send(self.following);
        }
        if self.following {
            self.following = false;
            // Count from the last sign of life, not from when the loss was
            // noticed: the partner's timer started no later than that.
            self.stream_lost_at = Some(self.last_message_at.unwrap_or((Instant::now(), SystemTime::now())));
            notice::stream_lost(&why, self.mode == Mode::Hold, self.window());
            self.st.last_error = format!("role stream from the election lost: {why}");
        } else {
            tracing::debug!("role stream ended before its first message: {why}");
        }
    }

    fn window(&self) -> Duration {
        plan::failsafe_window(self.ha_timeout, self.advert_interval)
    }

    /// The election sends a heartbeat every advert interval (at most every
    /// second) on a quiet stream; three missed ones mean it hangs even if
    /// its connection is still up.
    fn stale_deadline(&self) -> Option<Instant> {
        if !self.following {
            return None;
        }
        let beat = self.advert_interval.min(Duration::from_secs(1));
        self.last_message_at.map(|(t, _)| t + (beat * 3).max(Duration::from_millis(300)))
    }

    fn failsafe_deadline(&self) -> Option<Instant> {
        match (self.mode, self.stream_lost_at) {
            (Mode::Hold | Mode::Unknown, Some((since, _))) => Some(since + self.window()),
            _ => None,
        }
    }

    async fn on_message(&mut self, msg: pb::WatchRoleResponse, received: Instant) {
        let received_wall = SystemTime::now();
        self.last_message_at = Some((received, received_wall));
        if msg.kind == pb::RoleEventKind::Heartbeat as i32 && !self.first_of_stream {
            // Liveness only: not part of the sequence, changes nothing.
            return;
        }
        let first = std::mem::take(&mut self.first_of_stream);
        let role = Role::try_from(msg.role).unwrap_or(Role::Unspecified);
        let verdict = self.seq.accept(msg.epoch, msg.seq, first);
        if !verdict.applies() {
            tracing::debug!(epoch = msg.epoch, seq = msg.seq, "role event seen already; ignored");
            return;
        }
        let params_changed = self.take_parameters(&msg);
        if let Ok(vhid) = u8::try_from(msg.vhid)
            && vhid != 0
        {
            self.vhid = vhid;
        }
        self.role = role;
        self.st.role_received_at = Some(received_wall);
        let down = if first { self.stream_lost_at.take().map(|(since, _)| since.elapsed()) } else { None };

        // Apply first; what the operator is told can wait until the
        // addresses are where the role wants them.
        let kind = pb::RoleEventKind::try_from(msg.kind).unwrap_or(pb::RoleEventKind::Unspecified);
        let burst_sent = if plan::holds(role) { self.hold(Some(received)).await } else { self.release(role).await };
        let reannounce = kind == pb::RoleEventKind::Reannounce && self.mode == Mode::Hold && !burst_sent;
        if reannounce {
            let targets = self.targets(None);
            self.announcer.burst(&targets, true);
        }
        self.report();

        match verdict {
            Verdict::Gap { missed } => notice::gap(missed, msg.seq, role),
            Verdict::NewEpoch { previous: Some(p) } => notice::new_epoch(p, msg.epoch),
            _ => {}
        }
        if first {
            notice::following(&self.election_url, role, msg.epoch, msg.seq, down.filter(|_| self.ever_followed));
            self.following = true;
            self.ever_followed = true;
            self.connect_failures = 0;
            self.st.last_error.clear();
        }
        if params_changed {
            tracing::info!(
                "HA timeout {} ms, adverts every {} ms: the fail-safe gives the addresses up after {} ms without the role stream",
                self.ha_timeout.as_millis(),
                self.advert_interval.as_millis(),
                self.window().as_millis()
            );
        }
        if reannounce {
            let reason = if msg.reason.is_empty() { "the election asked" } else { msg.reason.as_str() };
            notice::reannounce(reason, &self.held_list());
        }
    }

    /// Takes the HA timeout and advert interval of a role event (they
    /// set the fail-safe window); returns whether they changed.
    fn take_parameters(&mut self, msg: &pb::WatchRoleResponse) -> bool {
        if msg.ha_timeout_ms == 0 || msg.advert_interval_ms == 0 {
            return false;
        }
        let (t, i) = (Duration::from_millis(msg.ha_timeout_ms), Duration::from_millis(msg.advert_interval_ms));
        if (t, i) == (self.ha_timeout, self.advert_interval) {
            return false;
        }
        self.ha_timeout = t;
        self.advert_interval = i;
        true
    }

    // ----- applying the role --------------------------------------------

    /// Makes sure the addresses are held; returns whether it sent a burst
    /// (it does when it had to take them).
    async fn hold(&mut self, received: Option<Instant>) -> bool {
        let stale_vmac = self.ifaces.iter().any(|i| i.vmac.as_ref().is_some_and(|v| v.vhid != self.vhid));
        if stale_vmac {
            // The vhid changed while holding: the old virtual MAC goes first.
            self.release_all().await;
            self.mode = Mode::Release;
        }
        if self.mode == Mode::Hold {
            return false;
        }
        self.wait_for_state().await;
        let started = Instant::now();
        let vhid = self.vhid;
        let mut sysctl_errors: Vec<Option<String>> = vec![None; self.ifaces.len()];
        if self.vmac {
            // Before the address exists anywhere: the parent must never
            // answer for it with its own MAC.
            for (k, i) in self.ifaces.iter().enumerate() {
                if let Err(e) = self.sysctls.set_parent(&i.name) {
                    sysctl_errors[k] = Some(format!("{}: {e}", i.name));
                }
            }
        }
        let parameters_set = started.elapsed();
        let nl = &*self.nl;
        let vmac = self.vmac;
        let jobs = self.ifaces.iter().map(|i| {
            let (name, shared, index) = (i.name.clone(), i.shared, i.link.as_ref().map(|l| l.index));
            async move {
                if vmac {
                    let spec = VmacSpec::new(&name, vhid);
                    devices::hold_vmac(nl, &name, &spec, shared).await.map(|index| Some((spec.device, index)))
                } else {
                    devices::hold_plain(nl, &name, index, shared).await.map(|()| None)
                }
            }
        });
        let results = futures::future::join_all(jobs).await;
        let addresses_at = SystemTime::now();
        let in_place = started.elapsed();
        for ((i, r), sysctl_error) in self.ifaces.iter_mut().zip(results).zip(sysctl_errors) {
            i.error = sysctl_error;
            match r {
                Ok(None) => i.held = true,
                Ok(Some((name, index))) => match GarpSender::open(&name, index) {
                    Ok(s) => {
                        i.vmac = Some(VmacDevice { name, vhid, index, sender: Arc::new(s) });
                        i.held = true;
                    }
                    Err(e) => {
                        i.held = true;
                        i.error.get_or_insert(e.to_string());
                    }
                },
                Err(e) => {
                    i.held = false;
                    i.error = Some(e);
                }
            }
        }
        let targets = self.targets(None);
        let first_garp_at = self.announcer.burst(&targets, true);
        let latency = received.map(|r| r.elapsed());
        self.mode = Mode::Hold;
        self.failsafe_released = false;
        self.applied = Applied { addresses_at: Some(addresses_at), first_garp_at, ..self.applied };
        self.next_refresh = self.garp_refresh.map(|r| Instant::now() + r);
        if let (Some(l), Some(_)) = (latency, first_garp_at) {
            self.metrics.garp_latency_ms.record(l.as_secs_f64() * 1000.0, &[]);
            self.st.garp_latency = Some(l);
        }
        self.st.addresses_at = Some(addresses_at);
        self.st.first_garp_at = first_garp_at;
        notice::holding(&self.held_list(), self.role, in_place, latency.filter(|_| first_garp_at.is_some()));
        tracing::debug!(
            waited_us = received.map_or(0, |r| started.duration_since(r).as_micros()),
            parameters_us = parameters_set.as_micros(),
            netlink_us = (in_place - parameters_set).as_micros(),
            "takeover timing"
        );
        let errors = self.errors();
        if !errors.is_empty() {
            notice::apply_failed(&errors.join("; "));
        }
        first_garp_at.is_some()
    }

    /// Makes sure the addresses are not held (role `role`); returns false
    /// (it never sends a burst).
    async fn release(&mut self, role: Role) -> bool {
        let was = self.mode;
        // The role says release: whatever the fail-safe did agrees with it.
        self.failsafe_released = false;
        if was == Mode::Release && self.errors().is_empty() {
            return false;
        }
        let removed = self.release_all().await;
        self.mode = Mode::Release;
        self.st.addresses_at = Some(SystemTime::now());
        self.st.first_garp_at = None;
        self.applied = Applied { addresses_at: self.st.addresses_at, first_garp_at: None, ..self.applied };
        if was == Mode::Hold || !removed.is_empty() {
            notice::released(&removed, &format!("role {}", notice::role_name(role)));
        } else if was == Mode::Unknown {
            notice::not_holding(role);
        }
        let errors = self.errors();
        if !errors.is_empty() {
            notice::apply_failed(&errors.join("; "));
        }
        false
    }

    /// Removes every shared address and virtual MAC device and puts the
    /// kernel parameters back. Returns what was actually removed.
    async fn release_all(&mut self) -> Vec<String> {
        // Never announce an address that is being given up.
        self.announcer.stop();
        self.next_refresh = None;
        let nl = &*self.nl;
        let jobs = self.ifaces.iter().map(|i| {
            let device = i
                .vmac
                .as_ref()
                .map(|v| v.name.clone())
                .or_else(|| self.vmac.then(|| duet_config::vmac_device(&i.name, self.vhid)));
            let (name, shared) = (i.name.clone(), i.shared);
            async move { devices::release(nl, &name, shared, device.as_deref()).await }
        });
        let results = futures::future::join_all(jobs).await;
        let mut removed = Vec::new();
        for (i, (gone, error)) in self.ifaces.iter_mut().zip(results) {
            removed.extend(gone);
            i.held = false;
            i.vmac = None;
            i.error = error;
        }
        if self.sysctls.applied() {
            self.sysctls.restore();
        }
        removed
    }

    /// T4: the role stream stayed down too long.
    async fn failsafe(&mut self) {
        let down = self.stream_lost_at.map_or(Duration::ZERO, |(since, _)| since.elapsed());
        let was = self.mode;
        let removed = self.release_all().await;
        self.mode = Mode::Release;
        self.st.addresses_at = Some(SystemTime::now());
        self.st.first_garp_at = None;
        self.applied = Applied { addresses_at: self.st.addresses_at, first_garp_at: None, ..self.applied };
        if was == Mode::Hold || !removed.is_empty() {
            self.failsafe_released = true;
            self.st.failsafe_releases += 1;
            self.metrics.failsafe_releases.add(1, &[]);
            notice::failsafe(down, self.ha_timeout, &removed);
            self.report();
        } else {
            tracing::info!(
                "no role from the election after {} ms: the shared addresses are not held until it says so",
                down.as_millis()
            );
        }
    }

    // ----- announcements --------------------------------------------------

    /// Where to announce: every interface holding its address (or only
    /// interface `only`).
    fn targets(&self, only: Option<usize>) -> Vec<Target> {
        self.ifaces
            .iter()
            .enumerate()
            .filter(|(k, i)| i.held && only.is_none_or(|o| o == *k))
            .filter_map(|(_, i)| {
                if self.vmac {
                    let v = i.vmac.as_ref()?;
                    Some(Target {
                        sender: Arc::clone(&v.sender),
                        mac: duet_wire::arp::virtual_mac(v.vhid),
                        ip: i.shared.addr,
                    })
                } else {
                    Some(Target {
                        sender: Arc::clone(i.sender.as_ref()?),
                        mac: i.link.as_ref()?.mac?,
                        ip: i.shared.addr,
                    })
                }
            })
            .collect()
    }

    /// T3: one gratuitous ARP per held address, every `garp_refresh_s`.
    fn refresh(&mut self) {
        self.next_refresh = self.garp_refresh.map(|r| Instant::now() + r);
        if self.mode == Mode::Hold {
            let targets = self.targets(None);
            tracing::debug!(frames = targets.len(), "gratuitous ARP refresh");
            self.announcer.once(&targets);
        }
    }

    // ----- drift ----------------------------------------------------------

    fn on_net_event(&mut self, ev: NetEvent) {
        let ours = |addr| self.ifaces.iter().any(|i| i.shared.addr == addr);
        match ev {
            NetEvent::AddressAdded { addr, .. } | NetEvent::AddressRemoved { addr, .. } if ours(addr) => {
                self.reconcile_soon = true;
            }
            NetEvent::LinkRemoved { name, .. } => {
                if let Some(i) = self.ifaces.iter_mut().find(|i| i.name == name) {
                    tracing::error!("interface {name} is gone; its shared address cannot be held until it is back");
                    i.link = None;
                    i.sender = None;
                    self.reconcile_soon = true;
                } else if self.ifaces.iter().any(|i| i.vmac.as_ref().is_some_and(|v| v.name == name)) {
                    self.reconcile_soon = true;
                }
            }
            NetEvent::Link(info) => {
                let holding = self.mode == Mode::Hold;
                let vmac = self.vmac;
                if let Some(k) = self.ifaces.iter().position(|i| i.name == info.name) {
                    let i = &mut self.ifaces[k];
                    let before = i.link.replace(info.clone());
                    let changed = before.as_ref().is_none_or(|b| b.index != info.index || b.mac != info.mac);
                    if changed {
                        if !vmac {
                            i.open_sender();
                        }
                        self.reconcile_soon = true;
                    }
                    let came_up = before.as_ref().is_some_and(|b| !b.up) && info.up;
                    if holding && came_up && i.held {
                        // The segment may have forgotten where the address lives.
                        notice::link_back(&info.name);
                        let targets = self.targets(Some(k));
                        self.announcer.burst(&targets, false);
                    }
                } else if let Some(i) =
                    self.ifaces.iter().find(|i| i.vmac.as_ref().is_some_and(|v| v.name == info.name))
                {
                    let v = i.vmac.as_ref().map(|v| (v.index, duet_wire::arp::virtual_mac(v.vhid)));
                    if !info.admin_up || v.is_some_and(|(index, mac)| index != info.index || info.mac != Some(mac)) {
                        self.reconcile_soon = true;
                    }
                }
            }
            _ => {}
        }
    }

    /// Looks at every interface and repairs what differs from the role.
    async fn reconcile(&mut self) {
        if self.mode == Mode::Unknown {
            return;
        }
        let hold = self.mode == Mode::Hold;
        let errors_before = self.errors();
        for k in 0..self.ifaces.len() {
            self.reconcile_one(k, hold).await;
        }
        if !hold && self.sysctls.applied() {
            self.sysctls.restore();
        }
        if self.errors() != errors_before {
            self.report();
        }
    }

    async fn reconcile_one(&mut self, k: usize, hold: bool) {
        let (name, shared) = (self.ifaces[k].name.clone(), self.ifaces[k].shared);
        let retry = self.ifaces[k].error.is_some();
        let spec = self.vmac.then(|| VmacSpec::new(&name, self.vhid));
        if self.ifaces[k].link.is_none() {
            match self.nl.link(&name).await {
                Ok(l) => {
                    self.ifaces[k].link = Some(l);
                    if !self.vmac {
                        self.ifaces[k].open_sender();
                    }
                }
                Err(e) => {
                    self.ifaces[k].error = Some(e.to_string());
                    return;
                }
            }
        }
        let seen = match devices::observe(&self.nl, &name, spec.as_ref().map(|s| s.device.as_str())).await {
            Ok(s) => s,
            Err(e) => {
                self.ifaces[k].error = Some(e);
                return;
            }
        };
        let want = Want { hold, shared, vmac: spec.as_ref().map(|s| (s.device.clone(), s.mac)) };
        let device = spec.as_ref().map_or(name.as_str(), |s| s.device.as_str());
        let mut failed = None;
        let mut announce = false;
        let mut fixed = Vec::new();
        let mut created = false;
        for r in plan::repairs(&want, &seen) {
            let what = r.describe(&name, shared, device);
            match self.execute(&name, shared, spec.as_ref(), r).await {
                Ok(true) => {
                    announce |= r.needs_announcement();
                    // The address on a device just made is part of that one repair.
                    if !(created && r == Repair::AddToVmac) {
                        fixed.push(what);
                    }
                    created |= matches!(r, Repair::CreateVmac | Repair::ReplaceVmac);
                }
                // Someone (the kernel, the operator, an earlier pass) was quicker.
                Ok(false) => {}
                Err(e) => {
                    notice::repair_failed(&what, &e);
                    failed.get_or_insert(format!("{what}: {e}"));
                }
            }
        }
        if hold && let Some(s) = &spec {
            match self.sysctls.set_parent(&name) {
                Ok(changed) => {
                    fixed.extend(changed.into_iter().map(|c| format!("{c} set back on {name} (changed by hand?)")))
                }
                Err(e) => {
                    failed.get_or_insert(format!("{name}: {e}"));
                }
            }
            if failed.is_none()
                && let Err(e) = self.ensure_vmac_sender(k, s, &seen, created).await
            {
                failed = Some(format!("{}: {e}", s.device));
            }
        }
        for what in fixed {
            if retry {
                notice::applied_after_retry(&what);
            } else {
                self.drift_repaired(what);
            }
        }
        let i = &mut self.ifaces[k];
        i.error = failed;
        i.held = hold && i.error.is_none();
        if hold && announce {
            let targets = self.targets(Some(k));
            self.announcer.burst(&targets, false);
        }
    }

    /// With VMAC, holding: the ARP socket must be bound to the device as it
    /// is now (a recreated device has a new index).
    async fn ensure_vmac_sender(
        &mut self,
        k: usize,
        spec: &VmacSpec,
        seen: &plan::Seen,
        recreated: bool,
    ) -> Result<(), String> {
        let known = self.ifaces[k].vmac.as_ref().map(|v| v.index);
        if !recreated && known.is_some() && seen.vmac.as_ref().map(|v| v.index) == known {
            return Ok(());
        }
        let index = self.nl.link(&spec.device).await.map_err(|e| e.to_string())?.index;
        let sender = GarpSender::open(&spec.device, index).map_err(|e| e.to_string())?;
        self.ifaces[k].vmac =
            Some(VmacDevice { name: spec.device.clone(), vhid: self.vhid, index, sender: Arc::new(sender) });
        Ok(())
    }

    /// Makes one repair; `Ok(true)` when the kernel confirms a change.
    async fn execute(&self, name: &str, shared: Cidr, spec: Option<&VmacSpec>, r: Repair) -> Result<bool, String> {
        let nl = &*self.nl;
        let s = |e: duet_net::netlink::NetlinkError| e.to_string();
        let spec = || spec.ok_or_else(|| "no virtual MAC configured".to_owned());
        match r {
            Repair::AddToInterface => nl.add_address(name, shared.addr, shared.prefix).await.map_err(s),
            Repair::RemoveFromInterface { prefix } => nl.del_address(name, shared.addr, prefix).await.map_err(s),
            Repair::CreateVmac => devices::create_vmac(nl, name, spec()?).await.map(|()| true),
            Repair::ReplaceVmac => {
                let v = spec()?;
                let l = nl.link(&v.device).await.map_err(s)?;
                if l.kind.as_deref() != Some("macvlan") {
                    return Err(format!(
                        "{}: an interface of that name exists and is not a macvlan; rename or remove it",
                        v.device
                    ));
                }
                nl.delete_link(&v.device).await.map_err(s)?;
                devices::create_vmac(nl, name, v).await.map(|()| true)
            }
            Repair::SetVmacUp => nl.set_up(&spec()?.device, true).await.map(|()| true).map_err(s),
            Repair::AddToVmac => nl.add_address(&spec()?.device, shared.addr, shared.prefix).await.map_err(s),
            Repair::DeleteVmac => nl.delete_link(&spec()?.device).await.map_err(s),
        }
    }

    fn drift_repaired(&mut self, what: String) {
        notice::drift_repaired(&what);
        self.metrics.drift_repairs.add(1, &[]);
        self.st.drift_repairs += 1;
        if self.st.recent_repairs.len() == RECENT_REPAIRS {
            self.st.recent_repairs.pop_front();
        }
        self.st.recent_repairs.push_back((SystemTime::now(), what));
    }

    // ----- reports, status, health ---------------------------------------

    fn errors(&self) -> Vec<String> {
        self.ifaces.iter().filter_map(|i| i.error.as_ref().map(|e| format!("{}: {e}", i.name))).collect()
    }

    /// "198.18.0.10/24 on eth0" per interface.
    fn held_list(&self) -> Vec<String> {
        self.ifaces
            .iter()
            .filter(|i| i.held)
            .map(|i| match &i.vmac {
                Some(v) => format!(
                    "{} on {} (virtual MAC {} on {})",
                    i.shared,
                    i.name,
                    format_mac(&duet_wire::arp::virtual_mac(v.vhid)),
                    v.name
                ),
                None => format!("{} on {}", i.shared, i.name),
            })
            .collect()
    }

    /// R4, state before address: the replicated connection state must be
    /// in the kernel before the addresses draw traffic here. The replicator
    /// installs what it receives as it arrives, so this is normally an
    /// immediate "yes"; it is bounded by `state_wait` either way.
    async fn wait_for_state(&mut self) {
        let Some(url) = self.replicator_url.clone() else {
            self.applied.state_installed = true;
            self.applied.state_wait_us = 0;
            return;
        };
        let t = Instant::now();
        let wait = self.state_wait;
        let ask = async {
            let ch = tonic::transport::Endpoint::from_shared(url)?.connect_timeout(wait).connect().await?;
            let mut c = duet_proto::replicator::v1::replicator_service_client::ReplicatorServiceClient::new(ch);
            let r = c
                .wait_installed(duet_proto::replicator::v1::WaitInstalledRequest {
                    timeout_ms: u64::try_from(wait.as_millis()).unwrap_or(500),
                })
                .await?;
            anyhow::Ok(r.into_inner().installed)
        };
        let installed = matches!(tokio::time::timeout(wait + Duration::from_millis(100), ask).await, Ok(Ok(true)));
        self.applied.state_installed = installed;
        self.applied.state_wait_us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
        if !installed {
            tracing::warn!(
                waited_ms = t.elapsed().as_millis() as u64,
                "the replicator did not confirm the partner's state installed in time: taking the addresses anyway"
            );
        }
    }

    fn build_report(&self) -> Option<Report> {
        let (epoch, seq) = self.seq.position()?;
        let errors = self.errors();
        let (ok, error) = if self.failsafe_released {
            (false, "fail-safe: the role stream was lost, the shared addresses were given up".to_owned())
        } else if errors.is_empty() {
            (true, String::new())
        } else {
            (false, errors.join("; "))
        };
        Some(Report {
            epoch,
            seq,
            role: self.role as i32,
            addresses_at: self.applied.addresses_at.map(prost_types::Timestamp::from),
            first_garp_at: self.applied.first_garp_at.map(prost_types::Timestamp::from),
            ok,
            error,
            follower: FOLLOWER.into(),
            state_installed: self.applied.state_installed,
            state_wait_us: self.applied.state_wait_us,
        })
    }

    /// Hands the current report to the reporter task (sent at once, then
    /// every second).
    fn report(&mut self) {
        if let Some(r) = self.build_report() {
            self.reports.send_replace(Some(r));
        }
    }

    async fn publish(&mut self) {
        let failures = lock(&self.shared.failures).len();
        if failures > self.failures_seen {
            self.failures_seen = failures;
            self.failure_at = Some(Instant::now());
        }
        let errors = self.errors();
        let st = &mut self.st;
        st.role = self.role;
        st.holding = self.mode == Mode::Hold && self.ifaces.iter().any(|i| i.held);
        st.following = self.following;
        if let Some((e, s)) = self.seq.position() {
            st.epoch = e;
            st.seq = s;
        }
        st.vhid = self.vhid;
        st.stream_lost_at = self.stream_lost_at.map(|(_, w)| w);
        st.failsafe_after = plan::failsafe_window(self.ha_timeout, self.advert_interval);
        st.interface_errors.clone_from(&errors);
        if !errors.is_empty() {
            st.last_error = errors.join("; ");
        }
        *lock(&self.shared.status) = st.clone();
        let serving = self.following
            && errors.is_empty()
            && !self.failsafe_released
            && self.dead_tasks.is_empty()
            && self.failure_at.is_none_or(|t| t.elapsed() > FAILURE_UNHEALTHY);
        if self.serving != Some(serving) {
            self.serving = Some(serving);
            self.health.set(serving).await;
        }
    }

    /// On shutdown: give everything up, tell the election, let go of the
    /// stream. Bounded.
    async fn stop(&mut self) {
        let was = self.mode;
        match tokio::time::timeout(STOP_RELEASE_TIMEOUT, self.release_all()).await {
            Ok(removed) => {
                if was == Mode::Hold || !removed.is_empty() {
                    notice::released(&removed, "takeover service stopping");
                }
            }
            Err(_) => tracing::error!(
                "could not release the shared addresses within {} s while stopping",
                STOP_RELEASE_TIMEOUT.as_secs()
            ),
        }
        self.sysctls.finish();
        self.mode = Mode::Release;
        self.applied = Applied { addresses_at: Some(SystemTime::now()), first_garp_at: None, ..self.applied };
        if let Some(mut r) = self.build_report() {
            if plan::holds(self.role) {
                r.ok = false;
                r.error = "the takeover service stopped; the shared addresses were released".into();
            }
            self.reports.send_replace(Some(r.clone()));
            if let Err(e) = crate::election::send_report(&mut self.report_client, r).await {
                tracing::debug!("last report not delivered: {e}");
            }
        }
        // Ending the stream tells the election its follower is gone.
        self.stream = None;
        self.stream_ended = None;
        self.following = false;
    }
}

fn stream_error(s: &tonic::Status) -> String {
    if s.message().is_empty() { format!("{:?}", s.code()) } else { s.message().to_owned() }
}

async fn next_message(
    stream: &mut Option<Streaming<pb::WatchRoleResponse>>,
) -> Result<Option<pb::WatchRoleResponse>, tonic::Status> {
    match stream {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

async fn next_event(events: &mut Option<mpsc::Receiver<NetEvent>>) -> Option<NetEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
