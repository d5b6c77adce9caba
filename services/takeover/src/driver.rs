//! The takeover driver: the I/O around the core ([`crate::machine`]). It
//! waits on the core's deadline and its inputs, feeds them to the core,
//! drains what the core wants done and does it with netlink, ARP sockets
//! and gRPC ([`crate::kernel`] for the interfaces).
//!
//! ```text
//!  role follower (runtime::follow) ──┐                    ┌─► kernel: netlink, macvlan, gratuitous ARP
//!  netlink events ───────────────────┤                    ├─► replicator: WaitInstalled (R4)
//!  the core's deadline ──────────────┼─► core ─► actions ─┼─► report (watch) ──► reporter task ──► election
//!  task failures, shutdown ──────────┘                    ├─► follower: reconnect
//!                                                         └─► status (for the API), health, log, metrics
//! ```
//!
//! The select loop is biased towards the role follower: a role event is
//! fed before anything else that is ready. The actions that ask for a
//! result are carried out inline and answered at once, so a role change,
//! its netlink work and its first gratuitous ARP are one step: nothing
//! else is looked at in between.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duet_config::Cidr;
use duet_net::netlink::{NetEvent, Netlink};
use duet_proto::convert::role_i32;
use duet_proto::election::v1::election_service_client::ElectionServiceClient;
use duet_proto::replicator::v1::replicator_service_client::ReplicatorServiceClient;
use duet_runtime::clock::Clock;
use duet_runtime::follow::{self, RoleNews, RoleStream};
use duet_runtime::grpc::Health;
use duet_runtime::shutdown::{self, Shutdown, Trigger};
use duet_runtime::tasks::Tasks;
use tokio::sync::{mpsc, watch};

use crate::api::{Shared, Status, lock};
use crate::election::{FOLLOWER, Report};
use crate::garp::Announcer;
use crate::kernel::{Kernel, Meaning};
use crate::machine::{self, Action, Config, Takeover};
use crate::metrics::Metrics;
use crate::notice::{self, Notice};
use crate::sysctls::Saved;

/// Bound on releasing everything when the service stops; with the last
/// report and the tasks' grace it stays within the unit supervisor's
/// default stop grace (5 s).
const STOP_RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

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
    /// O6: the notify hooks, and the unit's name for their environment.
    pub hooks: duet_config::Hooks,
    pub unit: String,
}

/// The channels the driver is wired to.
pub(crate) struct Wiring {
    pub reports: watch::Sender<Option<Report>>,
    pub report_client: ElectionServiceClient<duet_runtime::admin::AdminChannel>,
    pub shared: Arc<Shared>,
    pub health: Health,
    pub metrics: Metrics,
}

pub(crate) struct Driver {
    core: Takeover,
    kernel: Kernel,
    clock: Clock,
    election_url: String,
    roles: RoleStream,
    /// Ends the role follower; fired only after the last report, since
    /// the end of the stream tells the election its takeover is gone.
    follow_stop: Trigger,
    net_events: Option<mpsc::Receiver<NetEvent>>,
    /// When to try subscribing to netlink events again.
    resubscribe_at: Option<Instant>,
    resubscribe_every: Duration,
    reports: watch::Sender<Option<Report>>,
    report_client: ElectionServiceClient<duet_runtime::admin::AdminChannel>,
    /// The replicator's API (R4), connected on first use and kept: a fresh
    /// connection per role change cost a planned handover about 5 ms.
    replicator: Option<ReplicatorServiceClient<duet_runtime::admin::AdminChannel>>,
    shared: Arc<Shared>,
    health: Health,
    metrics: Metrics,
    /// Failures of restarting tasks seen so far.
    failures_seen: usize,
    stopping: bool,
    /// O6: runs the notify hooks for the roles applied.
    hooks: crate::hooks::Runner,
    /// The reason of the last role event (the hooks' `DUET_REASON`).
    last_reason: String,
    /// The core's next deadline (a timerfd: exact, one wakeup; a stale
    /// judgement moved by every beat never fires).
    timer: duet_net::timer::Timer,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("core", &self.core).finish_non_exhaustive()
    }
}

impl Driver {
    /// Looks the interfaces up, opens the ARP sockets, subscribes to
    /// netlink events and starts following the election. A missing
    /// interface is reported (status, health) and looked for again on
    /// every pass, not fatal.
    pub(crate) async fn new(setup: Setup, nl: Arc<Netlink>, w: Wiring) -> anyhow::Result<Self> {
        let clock = Clock::new();
        let announcer =
            Announcer::new(setup.garp_count, setup.garp_spacing, Arc::clone(&w.shared.garp), w.metrics.clone());
        let sysctls = Saved::load(setup.sysctl_file.clone());
        let (kernel, unusable) = Kernel::open(&setup.ifaces, setup.vmac, nl, sysctls, announcer).await;
        let net_events = match duet_net::netlink::watch() {
            Ok(rx) => Some(rx),
            Err(e) => {
                tracing::error!("no netlink events ({e}); drift is found by the periodic pass only");
                None
            }
        };
        let cfg = Config {
            ifaces: setup.ifaces,
            vmac: setup.vmac,
            vhid: setup.vhid,
            garp_refresh: setup.garp_refresh,
            reconcile_interval: setup.reconcile_interval,
            ha_timeout: setup.ha_timeout,
            advert_interval: setup.advert_interval,
            election_url: setup.election_url.clone(),
            state_wait: setup.replicator_url.is_some().then_some(setup.state_wait),
        };
        let now = clock.now();
        let mut core = Takeover::new(cfg, now);
        for (k, why) in unusable {
            core.handle_unusable(now, k, why);
        }
        let (follow_stop, stop) = shutdown::channel();
        let roles = follow::roles(setup.election_url.clone(), FOLLOWER, follow::Beat::EveryAdvert, stop);
        Ok(Self {
            core,
            kernel,
            clock,
            election_url: setup.election_url,
            roles,
            follow_stop,
            resubscribe_at: net_events.is_none().then(|| Instant::now() + setup.reconcile_interval),
            net_events,
            resubscribe_every: setup.reconcile_interval,
            reports: w.reports,
            report_client: w.report_client,
            replicator: setup.replicator_url.and_then(|url| {
                let ep = tonic::transport::Endpoint::from_shared(url).ok()?.connect_timeout(setup.state_wait);
                Some(ReplicatorServiceClient::new(duet_runtime::admin::authed(ep.connect_lazy())))
            }),
            shared: w.shared,
            health: w.health,
            metrics: w.metrics,
            failures_seen: 0,
            stopping: false,
            hooks: crate::hooks::Runner::spawn(setup.hooks, setup.unit),
            last_reason: String::new(),
            timer: duet_net::timer::Timer::new(),
        })
    }

    /// Runs until `shutdown`, then releases everything and reports.
    pub(crate) async fn run(mut self, mut shutdown: Shutdown, tasks: &mut Tasks) {
        if let Some(c) = self.replicator.clone() {
            // Connect to the replicator before the first role change needs
            // it (the connection took a handover about 5 ms): it starts
            // after this service, so tried every second for a while.
            tokio::spawn(warm_up(c));
        }
        self.act().await;
        self.publish();
        loop {
            let deadline = self.core.poll_timeout().map(|t| self.clock.to_instant(t));
            self.timer.set(deadline);
            tokio::select! {
                biased;
                () = shutdown.wait() => break,
                news = self.roles.news.recv() => match news {
                    Some(n) => self.on_news(n),
                    None => self.follower_gone(),
                },
                () = self.timer.fired() => self.core.handle_timeout(self.clock.now()),
                ev = next_event(&mut self.net_events) => match ev {
                    Some(ev) => self.on_net_events(ev),
                    None => {
                        tracing::error!("netlink events stopped; drift is found by the periodic pass until they are back");
                        self.net_events = None;
                        self.resubscribe_at = Some(Instant::now() + self.resubscribe_every);
                    }
                },
                () = sleep_until(self.resubscribe_at) => {
                    self.net_events = duet_net::netlink::watch().ok();
                    self.resubscribe_at = self.net_events.is_none().then(|| Instant::now() + self.resubscribe_every);
                }
                Some((name, outcome)) = tasks.next() => {
                    match outcome {
                        Ok(()) => tracing::error!("task {name} stopped: ended"),
                        Err(why) => tracing::error!("task {name} stopped: {why}"),
                    }
                    self.core.handle_task_ended(self.clock.now());
                }
            }
            let failures = lock(&self.shared.failures).len();
            if failures > self.failures_seen {
                self.failures_seen = failures;
                self.core.handle_task_failed(self.clock.now());
            }
            self.act().await;
            self.publish();
        }
        self.stop().await;
    }

    fn on_news(&mut self, news: RoleNews) {
        let now = self.clock.now();
        match news {
            RoleNews::Event { event, first_of_stream, received } => {
                if event.kind != duet_carp::RoleEventKind::Heartbeat {
                    self.last_reason.clone_from(&event.reason);
                }
                let received = self.clock.time_of(received);
                self.core.handle_role_event(now, received, first_of_stream, event);
            }
            RoleNews::Lost { why, .. } => self.core.handle_stream_lost(now, why),
            RoleNews::ConnectFailed { why, attempt } => self.core.handle_connect_failed(now, why, attempt),
        }
    }

    /// The follower task ended on its own (it only does on a bug): the
    /// stream is lost; follow again.
    fn follower_gone(&mut self) {
        tracing::error!("the role follower stopped; starting it again");
        self.core.handle_stream_lost(self.clock.now(), "the role follower stopped".into());
        self.roles =
            follow::roles(self.election_url.clone(), FOLLOWER, follow::Beat::EveryAdvert, self.follow_stop.subscribe());
    }

    /// One netlink event, and whatever else is queued, then the core is
    /// told once.
    fn on_net_events(&mut self, first: NetEvent) {
        let mut m = Meaning::default();
        self.kernel.on_event(first, &mut m);
        while let Some(ev) = self.net_events.as_mut().and_then(|r| r.try_recv().ok()) {
            self.kernel.on_event(ev, &mut m);
        }
        let now = self.clock.now();
        for (k, why) in m.unusable {
            self.core.handle_unusable(now, k, why);
        }
        for k in m.links_up {
            self.core.handle_link_up(now, k);
        }
        if m.look_again {
            self.core.handle_kernel_changed(now);
        }
    }

    /// Carries out everything the core asked for, feeding each answer back.
    async fn act(&mut self) {
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::WaitForState { timeout, trace } => {
                    let (installed, waited) = self.wait_for_state(timeout, &trace).await;
                    self.core.handle_state_answer(self.clock.now(), installed, waited);
                }
                Action::HoldAll { vmac_vhid } => {
                    let held = self.kernel.hold_all(vmac_vhid, &self.clock).await;
                    self.core.handle_held(self.clock.now(), held);
                }
                Action::ReleaseAll { vmac_vhid } if self.stopping => {
                    let r = tokio::time::timeout(STOP_RELEASE_TIMEOUT, self.kernel.release_all(vmac_vhid)).await;
                    self.kernel.finish_parameters();
                    match r {
                        Ok(r) => self.core.handle_released(self.clock.now(), r),
                        Err(_) => {
                            tracing::error!(
                                "could not release the shared addresses within {} s while stopping",
                                STOP_RELEASE_TIMEOUT.as_secs()
                            );
                            self.core.handle_release_timed_out(self.clock.now());
                        }
                    }
                }
                Action::ReleaseAll { vmac_vhid } => {
                    let r = self.kernel.release_all(vmac_vhid).await;
                    self.core.handle_released(self.clock.now(), r);
                }
                Action::Observe { iface, vmac_vhid } => {
                    let seen = self.kernel.observe(iface, vmac_vhid).await;
                    self.core.handle_observed(self.clock.now(), iface, seen);
                }
                Action::Repair { iface, repairs, hold, vmac_vhid } => {
                    let r = self.kernel.repair(iface, &repairs, hold, vmac_vhid).await;
                    self.core.handle_repaired(self.clock.now(), iface, r);
                }
                Action::RestoreParameters => self.kernel.restore_parameters(),
                Action::Announce { ifaces, how } => self.kernel.announce(&ifaces, how),
                Action::Reconnect => self.roles.reconnect(),
                Action::Report(r) => self.report(&r).await,
                Action::Health { serving } => self.health.set(serving).await,
                Action::Notice(n) => {
                    self.count(&n);
                    notice::log(&n);
                }
                Action::Trace(s) => self.trace(&s),
            }
        }
    }

    /// O3: records how the role was applied as a span of the role
    /// change's trace, with the times the core measured.
    fn trace(&self, s: &machine::HoldSpan) {
        use opentelemetry::KeyValue;
        let at = |t: duet_carp::Time| self.clock.to_system(t);
        let us = |a: duet_carp::Time, b: duet_carp::Time| i64::try_from(b.since(a).as_micros()).unwrap_or(i64::MAX);
        let mut attrs = vec![
            KeyValue::new("duet.role", s.role.as_str()),
            KeyValue::new("duet.addresses", s.addresses.join(", ")),
            KeyValue::new("duet.state_installed", s.state_installed),
            KeyValue::new("duet.state_wait_us", i64::try_from(s.state_wait.as_micros()).unwrap_or(i64::MAX)),
            KeyValue::new("duet.waited_us", us(s.received, s.started)),
            KeyValue::new("duet.parameters_us", us(s.started, s.parameters_set)),
            KeyValue::new("duet.netlink_us", us(s.parameters_set, s.in_place)),
        ];
        if let Some(g) = s.first_garp {
            attrs.push(KeyValue::new("duet.first_garp_us", us(s.received, g)));
        }
        let end = s.first_garp.unwrap_or(s.in_place).max(s.in_place);
        duet_runtime::trace::record("duet.takeover.hold", &s.trace, at(s.received), at(end), attrs);
    }

    /// The metrics that follow from a notice (O3).
    fn count(&self, n: &Notice) {
        match n {
            Notice::DriftRepaired { .. } => self.metrics.drift_repairs.add(1, &[]),
            Notice::Failsafe { .. } => self.metrics.failsafe_releases.add(1, &[]),
            Notice::Holding { first_garp: Some(l), .. } => {
                self.metrics.garp_latency_ms.record(l.as_secs_f64() * 1000.0, &[]);
            }
            _ => {}
        }
    }

    /// R4, state before address: asks the replicator whether the partner's
    /// connection state is in the kernel, waiting at most `wait`. The
    /// replicator installs what it receives as it arrives, so this is
    /// normally an immediate "yes". Returns the answer and how long it took.
    async fn wait_for_state(&self, wait: Duration, trace: &str) -> (bool, Duration) {
        let Some(mut c) = self.replicator.clone() else {
            return (true, Duration::ZERO);
        };
        let t = Instant::now();
        let ask = async {
            let mut req = tonic::Request::new(duet_proto::replicator::v1::WaitInstalledRequest {
                timeout_ms: u64::try_from(wait.as_millis()).unwrap_or(500),
            });
            // The replicator's span joins the role change's trace.
            duet_runtime::trace::inject(trace, req.metadata_mut());
            let r = c.wait_installed(req).await?;
            anyhow::Ok(r.into_inner().installed)
        };
        let installed = matches!(tokio::time::timeout(wait + Duration::from_millis(100), ask).await, Ok(Ok(true)));
        (installed, t.elapsed())
    }

    /// Hands the report to the reporter task (sent at once, then every
    /// second); the last one is also sent here, and waited for.
    async fn report(&mut self, r: &machine::Report) {
        let ts = |t: duet_carp::Time| prost_types::Timestamp::from(self.clock.to_system(t));
        let pb = Report {
            epoch: r.epoch,
            seq: r.seq,
            role: r.role.map_or(0, role_i32),
            addresses_at: r.addresses_at.map(ts),
            first_garp_at: r.first_garp_at.map(ts),
            ok: r.ok,
            error: r.error.clone(),
            follower: FOLLOWER.into(),
            state_installed: r.state_installed,
            state_wait_us: u64::try_from(r.state_wait.as_micros()).unwrap_or(u64::MAX),
        };
        self.reports.send_replace(Some(pb.clone()));
        // O6: the hook of the role now applied (a failure to apply is a fault).
        let kind = match (r.ok, r.role) {
            (false, _) => Some(duet_config::HookKind::Fault),
            (true, Some(duet_carp::Role::Active)) => Some(duet_config::HookKind::Active),
            (true, Some(duet_carp::Role::Standby)) => Some(duet_config::HookKind::Standby),
            (true, Some(duet_carp::Role::Pacified)) => Some(duet_config::HookKind::Fault),
            (true, Some(duet_carp::Role::Stopping)) => Some(duet_config::HookKind::Stopping),
            (true, _) => None,
        };
        if let Some(k) = kind {
            let reason = if r.ok { self.last_reason.clone() } else { r.error.clone() };
            let previous = self.hooks.last();
            self.hooks.fire(k, previous, &reason);
        }
        if r.last
            && let Err(e) = crate::election::send_report(&mut self.report_client, pb).await
        {
            tracing::debug!("last report not delivered: {e}");
        }
    }

    /// The core's status, with wall-clock times, for the API.
    fn publish(&self) {
        let s = self.core.status();
        let wall = |t: Option<duet_carp::Time>| t.map(|t| self.clock.to_system(t));
        let (epoch, seq) = s.position.unwrap_or_default();
        *lock(&self.shared.status) = Status {
            role: s.role,
            holding: s.holding,
            following: s.following,
            epoch,
            seq,
            vhid: s.vhid,
            role_received_at: wall(s.role_received_at),
            addresses_at: wall(s.addresses_at),
            first_garp_at: wall(s.first_garp_at),
            garp_latency: s.garp_latency,
            drift_repairs: s.drift_repairs,
            recent_repairs: s.recent_repairs.into_iter().map(|(t, w)| (self.clock.to_system(t), w)).collect(),
            stream_lost_at: wall(s.stream_lost_at),
            failsafe_releases: s.failsafe_releases,
            failsafe_after: s.failsafe_after,
            last_error: s.last_error,
            interface_errors: s.interface_errors,
        };
    }

    /// On shutdown: give everything up, tell the election, let go of the
    /// stream. Bounded.
    async fn stop(&mut self) {
        self.stopping = true;
        self.core.handle_stop(self.clock.now());
        self.act().await;
        self.publish();
        // Ending the stream tells the election its follower is gone.
        self.follow_stop.fire();
        let previous = self.hooks.last();
        self.hooks.fire(duet_config::HookKind::Stopping, previous, "takeover service stopping");
        self.hooks.stop(HOOKS_GRACE).await;
    }
}

/// How long a stop waits for the notify hooks still queued or running.
const HOOKS_GRACE: Duration = Duration::from_secs(2);

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

/// Opens the connection to the replicator ahead of need: a question that
/// waits for nothing, every second until one is answered (at most a
/// minute: after that the first role change connects).
async fn warm_up(mut c: ReplicatorServiceClient<duet_runtime::admin::AdminChannel>) {
    for _ in 0..60 {
        let req = duet_proto::replicator::v1::WaitInstalledRequest { timeout_ms: 0 };
        if tokio::time::timeout(Duration::from_secs(1), c.wait_installed(req)).await.is_ok_and(|r| r.is_ok()) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
