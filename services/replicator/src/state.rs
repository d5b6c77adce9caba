//! State shared by the replicator's tasks and its API.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use duet_carp::Role;
use duet_net::conntrack::{Conntrack, Flow, Tuple};
use duet_repl::{Outbox, Shadow};
use duet_runtime::shutdown::Shutdown;
use foldhash::fast::RandomState;
use tokio::sync::{Notify, watch};

use crate::model::{Key, Value};

pub(crate) use duet_runtime::sync::lock;

/// Milliseconds on the wall clock (expiry is carried as time to live on
/// the wire, so the two units' clocks need not agree).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Which flows are replicated: those to a virtual service's address, port
/// and protocol, and any to a shared address.
#[derive(Debug, Default, Clone)]
pub(crate) struct Filter {
    pub endpoints: HashSet<(Ipv4Addr, u16, u8), RandomState>,
    pub shared: HashSet<Ipv4Addr, RandomState>,
}

impl Filter {
    pub(crate) fn wants(&self, f: &Flow) -> bool {
        self.shared.contains(&f.orig.dst) || self.endpoints.contains(&(f.orig.dst, f.orig.dport, f.orig.proto))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.shared.is_empty()
    }
}

/// Counters of what went wrong, by reason.
#[derive(Debug, Default)]
pub(crate) struct Drops {
    pub overruns: AtomicU64,
    pub install_failures: AtomicU64,
    pub outbox_full: AtomicU64,
    pub refused_peers: AtomicU64,
    pub haproxy_errors: AtomicU64,
    pub malformed: AtomicU64,
    pub partial_events: AtomicU64,
}

impl Drops {
    /// The counters by name (each drop in one of them, so they add up);
    /// peers refused are `refused_peers.<reason>` (`tls`'s reasons, and
    /// `no_link` for a unit without a peer link).
    pub(crate) fn map(&self, tls: Option<&duet_runtime::tls::PeerTls>) -> HashMap<String, u64> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let refusals = tls.map(duet_runtime::tls::PeerTls::refusals);
        let by_reason = duet_runtime::peer_refusals::Reason::ALL
            .iter()
            .map(|r| (format!("refused_peers.{}", r.as_str()), refusals.map_or(0, |f| f.count(*r))));
        [
            ("kernel_event_overruns", g(&self.overruns)),
            ("install_failures", g(&self.install_failures)),
            ("outbox_full", g(&self.outbox_full)),
            ("refused_peers.no_link", g(&self.refused_peers)),
            ("haproxy_errors", g(&self.haproxy_errors)),
            ("malformed_changes", g(&self.malformed)),
            ("partial_events", g(&self.partial_events)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(by_reason)
        .collect()
    }
}

/// The sending side (this unit active).
#[derive(Debug, Default)]
pub(crate) struct SendState {
    pub connected: bool,
    pub resyncing: bool,
    pub resyncs: u64,
    pub last_ack: Option<SystemTime>,
    pub last_error: String,
}

/// The receiving side (this unit standby).
#[derive(Debug, Default)]
pub(crate) struct RecvState {
    pub connected: bool,
    pub stream_id: u64,
    /// A snapshot (bulk resync) of the current stream is being received.
    pub in_snapshot: bool,
    /// A snapshot was applied since this service started.
    pub synced: bool,
    pub partner: String,
    pub last_error: String,
}

/// What the active unit last sent about a flow: the standby's copy counts
/// down from `timeout_s` since `sent_ms`.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub flow: Flow,
    pub sent_ms: u64,
}

/// The active side's memory of what the partner holds.
#[derive(Debug, Default)]
pub(crate) struct Tracked {
    pub flows: HashMap<(Tuple, u16), Seen, RandomState>,
    /// Persistence read from the data plane and HAProxy: (table, key) to
    /// (server, expiry as sent).
    pub persist: HashMap<(String, String), (String, u64)>,
}

/// Sampled lag: when changes were recorded, and how long each took to be
/// acknowledged.
#[derive(Debug, Default)]
pub(crate) struct Lag {
    pending: VecDeque<(u64, Instant)>,
    done: VecDeque<u64>,
}

const LAG_SAMPLES: usize = 10_000;

impl Lag {
    /// Change `seq` was recorded now (sampled: at most one a millisecond).
    pub(crate) fn recorded(&mut self, seq: u64) {
        if self.pending.back().is_none_or(|(_, t)| t.elapsed() >= Duration::from_millis(1)) {
            self.pending.push_back((seq, Instant::now()));
        }
    }

    /// Everything up to `seq` is acknowledged.
    pub(crate) fn acked(&mut self, seq: u64) {
        while let Some((s, t)) = self.pending.front().copied() {
            if s > seq {
                break;
            }
            self.pending.pop_front();
            if self.done.len() >= LAG_SAMPLES {
                self.done.pop_front();
            }
            self.done.push_back(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// The pending samples are void (a snapshot replaced them).
    pub(crate) fn reset_pending(&mut self) {
        self.pending.clear();
    }

    /// Age of the oldest unacknowledged sample.
    pub(crate) fn oldest_ms(&self) -> u64 {
        self.pending.front().map_or(0, |(_, t)| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// p50, p99 and max of the acknowledged samples, in µs.
    pub(crate) fn percentiles(&self) -> (u64, u64, u64) {
        let s = duet_runtime::stats::Summary::of(self.done.iter().copied());
        (s.p50, s.p99, s.max)
    }
}

/// The data plane as applied on this unit.
#[derive(Debug, Default, Clone)]
pub(crate) struct DataplaneState {
    pub generation: u64,
    pub hash: String,
    pub services: u32,
    pub real_servers: u32,
    /// Some service has source-address persistence: its sets are worth
    /// reading (an `nft` run each time).
    pub source_persistence: bool,
    pub applied_at: Option<SystemTime>,
    pub error: String,
}

/// Everything the tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub unit: String,
    /// The role as the election last said (`None`: unknown). A watch, so
    /// a task that subscribed before it looked at the role never misses a
    /// change (no polling as a safety net).
    pub role: watch::Sender<Option<Role>>,
    pub outbox: Mutex<Outbox<Key, Value>>,
    pub outbox_changed: Notify,
    pub lag: Mutex<Lag>,
    pub tracked: Mutex<Tracked>,
    /// Persistence reported through the API on this unit: (table, key) to
    /// (server, expiry).
    pub local: Mutex<HashMap<(String, String), (String, u64)>>,
    pub shadow: Mutex<Shadow<Key, Value>>,
    pub filter: Mutex<Filter>,
    pub drops: Drops,
    pub send: Mutex<SendState>,
    pub recv: Mutex<RecvState>,
    /// A received batch is being installed in the kernel right now.
    pub installing: AtomicBool,
    pub installed: Notify,
    pub resync_wanted: AtomicBool,
    pub resync_now: Notify,
    /// Wakes the flow refresh early (after a kernel event overrun).
    pub refresh_now: Notify,
    /// Entries were added to the shadow table or the local persistence
    /// store: the expiry, which sleeps while both are empty, has work.
    pub entries_added: Notify,
    /// Something [`Shared::readiness`] reads changed (the receiver's state
    /// or the role): its reporter looks again at once.
    pub readiness_changed: Notify,
    /// A new image or L7 switch: the persistence poller, which sleeps
    /// while it has nothing to read, looks again.
    pub persistence_changed: Notify,
    pub changes_sent: AtomicU64,
    pub changes_received: AtomicU64,
    pub dataplane: Mutex<DataplaneState>,
    /// The kernel table handle of the blocking installer.
    pub conntrack: Mutex<Option<Conntrack>>,
    pub tls: Option<duet_runtime::tls::PeerTls>,
    pub cfg: duet_config::Replicator,
    pub started: Instant,
    /// The pair's "L4 updates" / "L7 updates" switches from the image's HA
    /// settings, and-ed with this unit's `[replicator]` l4 / l7.
    pub l4_on: AtomicBool,
    pub l7_on: AtomicBool,
}

impl Shared {
    pub(crate) fn new(unit: String, cfg: duet_config::Replicator, tls: Option<duet_runtime::tls::PeerTls>) -> Self {
        Self {
            unit,
            role: watch::Sender::new(None),
            outbox: Mutex::new(Outbox::new(cfg.outbox_capacity, 0)),
            outbox_changed: Notify::new(),
            lag: Mutex::new(Lag::default()),
            tracked: Mutex::new(Tracked::default()),
            local: Mutex::new(HashMap::new()),
            shadow: Mutex::new(Shadow::counting(|k| matches!(k, Key::Flow { .. }))),
            filter: Mutex::new(Filter::default()),
            drops: Drops::default(),
            send: Mutex::new(SendState::default()),
            recv: Mutex::new(RecvState::default()),
            installing: AtomicBool::new(false),
            installed: Notify::new(),
            resync_wanted: AtomicBool::new(false),
            resync_now: Notify::new(),
            refresh_now: Notify::new(),
            entries_added: Notify::new(),
            readiness_changed: Notify::new(),
            persistence_changed: Notify::new(),
            changes_sent: AtomicU64::new(0),
            changes_received: AtomicU64::new(0),
            dataplane: Mutex::new(DataplaneState::default()),
            conntrack: Mutex::new(None),
            tls,
            l4_on: AtomicBool::new(cfg.l4),
            l7_on: AtomicBool::new(cfg.l7),
            cfg,
            started: Instant::now(),
        }
    }

    pub(crate) fn role(&self) -> Option<Role> {
        *self.role.borrow()
    }

    /// Connection entries are replicated (R1).
    pub(crate) fn l4(&self) -> bool {
        self.l4_on.load(Ordering::Relaxed)
    }

    /// Persistence entries are replicated (R2).
    pub(crate) fn l7(&self) -> bool {
        self.l7_on.load(Ordering::Relaxed)
    }

    /// This unit's state is the pair's: it streams it to the partner
    /// (active, or stopping while it hands over).
    pub(crate) fn is_active(&self) -> bool {
        self.role().is_some_and(Role::is_authoritative)
    }

    /// Waits until this unit is active; `false` when `stop` fired first.
    pub(crate) async fn until_active(&self, stop: &mut Shutdown) -> bool {
        // Subscribed before the first look: no change is missed.
        let mut roles = self.role.subscribe();
        while !self.is_active() {
            tokio::select! {
                r = roles.changed() => if r.is_err() { return false },
                () = stop.wait() => return false,
            }
        }
        true
    }

    /// Records a change for the partner (when this unit is active and has
    /// one); an outbox over capacity asks for a bulk resync instead
    /// (bounded memory, R3).
    pub(crate) fn push(&self, op: duet_repl::Op<Key, Value>) {
        if self.cfg.peer.is_none() {
            return;
        }
        let mut o = lock(&self.outbox);
        match o.push(op) {
            Ok(seq) => lock(&self.lag).recorded(seq),
            Err(_) => {
                if !self.resync_wanted.swap(true, Ordering::Relaxed) {
                    self.drops.outbox_full.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        capacity = self.cfg.outbox_capacity,
                        "the partner is too far behind: the outbox is full, resyncing it in bulk"
                    );
                }
                self.resync_now.notify_one();
            }
        }
        drop(o);
        self.outbox_changed.notify_one();
    }

    /// Whether what was received from the partner is in the kernel (R4).
    pub(crate) fn installed_now(&self) -> bool {
        if self.installing.load(Ordering::Acquire) {
            return false;
        }
        let r = lock(&self.recv);
        !(r.connected && r.in_snapshot)
    }

    /// R4: whether this unit may take over from a healthy partner, and if
    /// not, why.
    pub(crate) fn readiness(&self) -> (bool, String) {
        if self.cfg.peer.is_none() || self.is_active() {
            return (true, String::new());
        }
        let r = lock(&self.recv);
        if r.synced && !r.in_snapshot {
            return (true, String::new());
        }
        if r.connected {
            return (false, format!("the start-up bulk resync from {} is not finished", r.partner));
        }
        drop(r);
        if self.started.elapsed() >= STARTUP_GRACE {
            // No active partner has connected: nothing to wait for.
            return (true, String::new());
        }
        (false, "waiting for the partner's start-up bulk resync".into())
    }
}

/// How long a starting unit waits for an active partner to resync it
/// before it counts as ready anyway (no partner, or one not active).
pub(crate) const STARTUP_GRACE: Duration = Duration::from_secs(6);
