//! The election state machine.
//!
//! [`Election`] is a plain struct. The adapter feeds it received packets,
//! link changes, operator commands and the current time, then drains what
//! it wants done with [`Election::poll_action`] and sleeps until
//! [`Election::poll_timeout`]. It never reads a clock, opens a socket or
//! spawns a task.
//!
//! ```text
//!             start ──► Init ──(active partner heard)──► Standby
//!                        │                                 │  ▲
//!        (startup wait   │        (down timer, partner     │  │ (better active heard,
//!         expires)       ▼         resigned, preemption)   ▼  │  handover confirmed)
//!                      Active ◄───────────────────────── Standby
//!                        │ ▲
//!          (Handover)    ▼ │ (not confirmed in time)
//!                      Stopping
//!   any ──(more than N starts in the window)──► Pacified ──(ClearPacified)──► Init
//! ```
//!
//! The rules on the wire are ucarp 1.5's: an active that hears an advert
//! with a shorter interval (advbase + advskew/256), or the same interval
//! from a lower address (compared as ucarp does on x86, see
//! [`ucarp_addr_less`]), gives way; a standby takes over when the active
//! is silent for the down interval, when the active's advert says it will
//! time out anyway (which is how a resigning unit, advbase 255 / advskew
//! 255, hands over at once), or by preemption when it is preferred.
//!
//! Over 600 lines: one state machine with every transition of the protocol;
//! drop reasons, readiness, pacify and the witness rule live in modules of
//! their own, what is left reads top to bottom as the protocol does.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use duet_wire::auth::{Sha1Key, Sha256Key, Sha256Signed};
use duet_wire::carp::{self, Advert, AuthData, CarpError};
use duet_wire::ipv4::{Ipv4Error, Ipv4Header, PROTO_CARP};
use duet_wire::peer::{self, PeerKey, PeerStatus};

use crate::drops::{DropCounters, DropReason, LogLimiter};
use crate::health::{Health, TrackParams};
use crate::notice::Notice;
use crate::pacify::{PacifyRule, Starts};
use crate::params::{AuthParams, Destination, HaMode, Params, ParamsError, RESIGN_ADVBASE, RESIGN_ADVSKEW};
use crate::readiness::Readiness;
use crate::replay::{Context, ReplayRule, ReplayState, Verdict};
use crate::role::Role;
use crate::status::{Square, Status};
use crate::time::Time;
use crate::witness::{
    ActiveVerdict, ActiveView, Decision, Expect, RequestKind, StepDown, Takeover, Waiting, Witness, WitnessEvent,
    WitnessRequest,
};

/// How often the peer-status datagram goes out (see [`PEER_STATUS_SLACK`]).
pub const PEER_STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// The peer status rides on adverts: sent with an advert sent or received
/// once it is due within this long, and otherwise by its own timer this
/// long after it was due. Two statuses are 0.875 to 1.125 s apart.
pub const PEER_STATUS_SLACK: Duration = Duration::from_millis(250);
/// A peer status older than this no longer describes the partner.
pub const PEER_STATUS_STALE: Duration = Duration::from_millis(3500);
/// Consecutive failed takeover reports that make an active unit resign.
const TAKEOVER_FAILURES_TO_RESIGN: u32 = 3;
/// After a partner resigns, its adverts with a lower counter (sent before
/// the resign, still in flight on another link) are stale for this long.
const RESIGN_GRACE: Duration = Duration::from_secs(1);
/// How long a handover waits for the takeover service to release the
/// addresses before it sends the resigning advert anyway.
pub const RELEASE_WAIT: Duration = Duration::from_millis(50);
/// Foreign (vhid, source) pairs remembered.
const MAX_FOREIGN: usize = 256;
/// E16: how long a handover for a failing check waits for the partner,
/// unless [`Init::health_handover_timeout`] says otherwise.
pub const HEALTH_HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);
/// E16: a handover for a failing check that did not happen is not tried
/// again sooner (a change of a check or of the partner's health retries).
pub const HEALTH_RETRY: Duration = Duration::from_secs(10);
/// Drop log lines per reason per window, and the window.
const LOG_PER_WINDOW: u32 = 3;
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// What the adapter must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a CARP payload (IPv4 header made by the kernel, TTL 255).
    SendAdvert { iface: usize, dst: Ipv4Addr, payload: Vec<u8> },
    /// Send a peer-status datagram to the partner (UDP 6973).
    SendPeerStatus { iface: usize, dst: Ipv4Addr, payload: [u8; peer::LEN] },
    /// The role changed; publish it to the followers.
    RoleChanged { from: Role, to: Role, reason: String },
    /// Still active after an active-active episode: re-announce the addresses.
    Reannounce { reason: String },
    /// A line for the operator.
    Log(Notice),
    /// E8: a checked link was lost and hard reboot is on: restart the services.
    LinkLostRestart { iface: usize },
    /// T4: the takeover service is gone while this unit held the addresses:
    /// remove them before the partner takes them.
    ScrubAddresses,
    /// A planned handover ended.
    HandoverFinished { confirmed: bool, partner: Option<Ipv4Addr>, took: Duration },
    /// The parameters changed; followers may need the new HA timeout.
    ParametersChanged,
    /// E14: ask the witness's adapter (answered with a [`WitnessEvent`]).
    Witness(WitnessRequest),
}

/// An operator or service command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Hand the active role to the partner (E11), waiting at most `timeout`.
    Handover { timeout: Duration },
    /// Leave the pacified state (E9).
    ClearPacified,
    /// New parameters (E12).
    Reload(Box<Params>),
    /// The takeover service started following the role stream.
    FollowerAttached,
    /// The takeover service stopped following the role stream.
    FollowerDetached,
    /// The takeover service applied (or failed to apply) a role.
    TakeoverReport { ok: bool },
    /// A component of the unit says whether its state is synced well
    /// enough to take over from a healthy partner (R4; a silent partner
    /// is replaced regardless). The unit is ready when every component
    /// heard from in the last [`READINESS_STALE`](crate::readiness::READINESS_STALE) is.
    SetReadiness { component: String, ready: bool, reason: String },
    /// The configuration generation this unit holds (told to the partner).
    SetGeneration(u64),
    /// The takeover service has released the shared addresses for the
    /// Stopping role: a handover may now send its resigning advert.
    TakeoverReleased,
    /// The start history as read now (E9): more starts within the window
    /// than [`Init::pacify`] allows put the unit out of HA at once.
    CheckStarts(Starts),
    /// The unit is stopping without a handover (it is not active): its
    /// last status tells the partner at once ([`peer::FLAG_LEAVING`]), so
    /// that the partner refuses a handover to it instead of waiting.
    Leaving,
    /// E16: a result of the tracked check `name` (its probe's success, its
    /// first output line, how long it took).
    CheckResult { name: String, ok: bool, output: String, took: Duration },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Only the active unit can hand over.
    NotActive(Role),
    /// The partner is known not to be able to take over.
    PartnerNotReady(String),
    /// The unit is not pacified.
    NotPacified,
    /// The new parameters cannot be applied live.
    Rejected(String),
    /// The new parameters break an invariant of the core.
    InvalidParams(ParamsError),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotActive(r) => {
                write!(f, "this unit is {} , not active: run the handover on the active unit", r.display_name())
            }
            Self::PartnerNotReady(why) => write!(f, "the partner cannot take over now: {why}"),
            Self::NotPacified => f.write_str("this unit is not pacified"),
            Self::Rejected(why) => f.write_str(why),
            Self::InvalidParams(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// What the adapter restores at start.
#[derive(Debug, Clone, Default)]
pub struct Init {
    /// First counter to send (random for ucarp mode; see [`sha256_counter_seed`]).
    pub counter_seed: u64,
    /// First peer-status counter (time-based, so it increases across restarts).
    pub peer_counter_seed: u64,
    /// Replay windows saved by the last run.
    pub replay: ReplayState,
    /// The pacified rule (E9): the window and the starts allowed in it.
    pub pacify: PacifyRule,
    /// The start history at start (`None`: none kept).
    pub starts: Option<Starts>,
    /// Window of the drop-log limiter (a few lines per reason per window,
    /// then one summary line); zero means the default, 60 s.
    pub drop_log_window: Duration,
    /// E16: the unit's tracked checks (the probes are the adapter's).
    pub tracks: Vec<TrackParams>,
    /// E16: how long a handover made because of a failing check waits for
    /// the partner (zero: [`HEALTH_HANDOVER_TIMEOUT`]).
    pub health_handover_timeout: Duration,
    /// The last run of this election held the role when it ended (killed
    /// or crashed while active). Once the takeover service has applied
    /// this run's role (the shared addresses released), the unit resigns
    /// once, so that a ready partner takes the role at once instead of
    /// after the HA timeout (SHA-256 mode; see the core).
    pub was_active: bool,
}

/// A counter start for HMAC-SHA256 mode that is above anything sent
/// before: milliseconds since the UNIX epoch shifted left 16 bits (room for
/// 65536 adverts per millisecond), and above the last counter saved.
pub fn sha256_counter_seed(unix_ms: u64, last_sent: Option<u64>) -> u64 {
    let t = unix_ms.saturating_mul(1 << 16);
    last_sent.map_or(t, |l| t.max(l.saturating_add(1)))
}

/// ucarp's tie-break between two actives with the same interval: the lower
/// `in_addr.s_addr` wins, compared as a native integer. On the little-endian
/// hosts ucarp runs on that is the address with its bytes reversed, so the
/// last octet weighs most. duet compares the same way so that both sides of
/// a duet/ucarp pair pick the same winner.
pub fn ucarp_addr_less(a: Ipv4Addr, b: Ipv4Addr) -> bool {
    u32::from_le_bytes(a.octets()) < u32::from_le_bytes(b.octets())
}

#[derive(Debug, Clone)]
enum IfaceKeys {
    Sha1(Sha1Key),
    Sha256(Vec<(u8, Sha256Key)>),
}

#[derive(Debug, Clone, Default)]
struct IfaceState {
    link_up: bool,
    sent: u64,
    received: u64,
}

/// The partner as last heard in an advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub addr: Ipv4Addr,
    pub iface: usize,
    pub advbase: u8,
    pub advskew: u8,
    pub at: Time,
    pub interval: Duration,
}

/// The partner's last peer-status datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub addr: Ipv4Addr,
    pub status: PeerStatus,
    pub at: Time,
}

#[derive(Debug, Clone)]
struct Handover {
    started: Time,
    deadline: Time,
    /// The resigning advert waits for the releases until then (`None`: sent).
    resign_at: Option<Time>,
    /// Releases not reported yet: the takeover's addresses, the witness's key.
    takeover_pending: bool,
    witness_pending: bool,
}

#[derive(Debug, Clone, Default)]
struct Follower {
    attached: bool,
    ever: bool,
    failures: u32,
}

/// Count of adverts with another vhid from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Foreign {
    pub count: u64,
    pub last_seen: Time,
}

/// A packet that passed every check.
struct Valid {
    src: Ipv4Addr,
    advert: Advert,
}

/// Why a packet failed, with what the log line needs.
struct Refused {
    reason: DropReason,
    src: Ipv4Addr,
    detail: String,
    vhid: Option<u8>,
}

impl Refused {
    fn new(reason: DropReason, src: Ipv4Addr) -> Self {
        Self { reason, src, detail: String::new(), vhid: None }
    }

    fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = d.into();
        self
    }
}

/// The election of one unit.
#[derive(Debug)]
pub struct Election {
    params: Params,
    keys: Vec<IfaceKeys>,
    peer_key: PeerKey,
    role: Role,
    role_since: Time,
    role_reason: String,
    down_deadline: Option<Time>,
    advert_deadline: Option<Time>,
    peer_status_deadline: Option<Time>,
    handover: Option<Handover>,
    ifaces: Vec<IfaceState>,
    heard: Option<Heard>,
    reported: Option<Reported>,
    peer_counters: BTreeMap<Ipv4Addr, u64>,
    counter: u64,
    peer_counter: u64,
    replay: ReplayState,
    replay_dirty: bool,
    drops: DropCounters,
    peer_drops: u64,
    foreign: BTreeMap<(u8, Ipv4Addr), Foreign>,
    limiter: LogLimiter,
    actions: VecDeque<Action>,
    last_active_active: Option<Time>,
    same_mode: Option<Ipv4Addr>,
    /// Both active per the partner's peer status, with no advert of its
    /// arriving (adverts filtered): the partner's address.
    blind_active: Option<Ipv4Addr>,
    mismatch_logged: Option<(Ipv4Addr, u64)>,
    follower: Follower,
    /// Counters this unit sent lately (ucarp adopts them; see `replay`).
    own_recent: Vec<u64>,
    /// The partner's last resign advert: its counter and when it came.
    last_resign: Option<(u64, Time)>,
    /// This unit handed the role over: it does not preempt it back until
    /// it becomes active by other means.
    preempt_suppressed: bool,
    adverts_sent: u64,
    adverts_received: u64,
    generation: u64,
    /// The components' readiness reports, and what they add up to.
    readiness: Readiness,
    ready: bool,
    /// Stopping without a handover ([`Command::Leaving`]).
    leaving: bool,
    pacify: PacifyRule,
    /// Starts within the pacify window, as last counted.
    recent_starts: u32,
    /// E14: the witness, when this unit has one.
    witness: Option<Witness>,
    /// When to judge the witness again.
    witness_deadline: Option<Time>,
    /// The partner fell silent and the takeover waits for the witness; why
    /// the unit will take over (for the role change).
    awaiting_witness: Option<String>,
    /// The current wait has been logged.
    witness_said: bool,
    /// The kind of takeover an acquire under way would be.
    acquiring: Option<Decision>,
    /// A failed acquire or release is not asked again before this.
    witness_retry_at: Option<Time>,
    /// Until when the partner promised (peer status `hold_ms`) not to take over.
    partner_promise: Option<Time>,
    /// E16: the tracked checks' states.
    health: Health,
    health_handover_timeout: Duration,
    /// E16: a handover for health is not tried again before this.
    health_retry_at: Option<Time>,
    /// E16: why this unit keeps the role although a check fails (status
    /// warning; logged when it changes).
    health_blocked: Option<String>,
    /// The last run ended while active: resign once the takeover service
    /// has applied this run's role ([`Init::was_active`]).
    resign_pending: bool,
}

impl Election {
    /// A new election at `now`. Panics if `params` break the invariants of
    /// [`Params::check`] (the configuration layer validates first).
    pub fn new(params: Params, now: Time, init: Init) -> Self {
        if let Err(e) = params.check() {
            panic!("invalid election parameters: {e}");
        }
        let keys = build_keys(&params);
        let peer_key = PeerKey::new(params.auth.peer_secret());
        let ifaces = params.interfaces.iter().map(|_| IfaceState { link_up: true, ..Default::default() }).collect();
        let judged = init.starts.as_ref().map(|s| init.pacify.judge(s));
        let mut e = Self {
            keys,
            peer_key,
            role: Role::Init,
            role_since: now,
            role_reason: "starting".into(),
            down_deadline: None,
            advert_deadline: None,
            peer_status_deadline: None,
            handover: None,
            ifaces,
            heard: None,
            reported: None,
            peer_counters: BTreeMap::new(),
            counter: init.counter_seed,
            peer_counter: init.peer_counter_seed,
            replay: init.replay,
            replay_dirty: false,
            drops: DropCounters::default(),
            peer_drops: 0,
            foreign: BTreeMap::new(),
            limiter: LogLimiter::new(
                if init.drop_log_window.is_zero() { LOG_WINDOW } else { init.drop_log_window },
                LOG_PER_WINDOW,
            ),
            actions: VecDeque::new(),
            last_active_active: None,
            same_mode: None,
            blind_active: None,
            mismatch_logged: None,
            follower: Follower::default(),
            own_recent: Vec::new(),
            last_resign: None,
            preempt_suppressed: false,
            leaving: false,
            adverts_sent: 0,
            adverts_received: 0,
            generation: 0,
            readiness: Readiness::default(),
            ready: true,
            pacify: init.pacify,
            recent_starts: judged.map_or(0, |j| j.recent),
            witness: params.witness.map(|w| Witness::new(w, now)),
            witness_deadline: None,
            awaiting_witness: None,
            witness_said: false,
            acquiring: None,
            witness_retry_at: None,
            partner_promise: None,
            health: Health::new(init.tracks, now),
            health_handover_timeout: if init.health_handover_timeout.is_zero() {
                HEALTH_HANDOVER_TIMEOUT
            } else {
                init.health_handover_timeout
            },
            health_retry_at: None,
            health_blocked: None,
            resign_pending: init.was_active,
            params,
        };
        // Checks that have not reported yet keep a demoting unit unready.
        e.ready = e.components_ready();
        if e.params.auth.no_password() && e.params.mode != HaMode::NonHa {
            e.log(Notice::NoPassword);
        }
        if e.params.mode == HaMode::NonHa {
            e.set_role(now, Role::Active, "non-HA mode: this unit is the only one".into());
        } else if let Some(j) = judged.filter(|j| j.pacified) {
            let (starts, window) = (j.recent, e.pacify.window);
            e.log(Notice::Pacified { starts, window });
            e.set_role(now, Role::Pacified, format!("{starts} starts within {} s", window.as_secs()));
            e.peer_status_deadline = Some(now);
        } else {
            e.down_deadline = Some(now + e.params.startup_wait());
            e.peer_status_deadline = Some(now);
            e.role_reason = format!("initial wait of {} ms", e.params.startup_wait().as_millis());
        }
        e
    }

    // ----- inputs -------------------------------------------------------

    /// A packet received on interface `iface`: the whole IPv4 packet as it
    /// came off the wire. Every field is checked before any state or timer
    /// is touched; a refused packet only moves counters (and, rate-limited,
    /// the log). Returns the reason when the packet was dropped.
    pub fn handle_packet(&mut self, now: Time, iface: usize, packet: &[u8]) -> Result<(), DropReason> {
        self.step_down_if_overslept(now);
        match self.validate(now, iface, packet) {
            Ok(v) => {
                self.on_advert(now, iface, v.src, &v.advert);
                self.peer_status_along(now);
                Ok(())
            }
            Err(r) => {
                self.drops.add(r.reason);
                if r.reason == DropReason::ForeignVhid {
                    self.count_foreign(now, r.vhid.unwrap_or(0), r.src);
                }
                if !r.reason.is_quiet() && self.limiter.allow(now, r.reason) {
                    let iface_name =
                        self.params.interfaces.get(iface).map_or_else(|| format!("#{iface}"), |i| i.name.clone());
                    self.log(Notice::Dropped { reason: r.reason, src: r.src, iface: iface_name, detail: r.detail });
                }
                Err(r.reason)
            }
        }
    }

    /// A peer-status datagram from `src` on interface `iface`.
    pub fn handle_peer_datagram(&mut self, now: Time, iface: usize, src: Ipv4Addr, bytes: &[u8]) -> bool {
        self.step_down_if_overslept(now);
        let Some(ip) = self.params.interfaces.get(iface) else {
            self.peer_drops += 1;
            return false;
        };
        if ip.partner_addr != Some(src) {
            self.peer_drops += 1;
            return false;
        }
        let Ok(status) = PeerStatus::parse(bytes, &self.peer_key, src) else {
            self.peer_drops += 1;
            return false;
        };
        let last = self.peer_counters.get(&src).copied();
        if last.is_some_and(|l| status.counter <= l) {
            self.peer_drops += 1;
            return false;
        }
        self.peer_counters.insert(src, status.counter);
        self.reported = Some(Reported { addr: src, status, at: now });
        // E14: the partner's promise not to take over, less the margin for
        // the datagram's way and the clocks.
        self.partner_promise = match &self.params.witness {
            Some(w) if status.hold_ms > 0 => {
                Some(now + Duration::from_millis(u64::from(status.hold_ms)) - w.margin(self.params.ha_timeout()))
            }
            _ => None,
        };
        let same = self.params.mode != HaMode::NonHa && status.mode == self.params.mode.code();
        if same && self.same_mode.is_none() {
            let local = ip.unit_addr;
            self.log(Notice::SameMode { mode: self.params.mode.as_str(), local, partner: src });
        }
        self.same_mode = same.then_some(src);
        // Both active, yet none of the partner's adverts arrive: the adverts
        // are filtered (multicast or broadcast blocked) while the unicast
        // peer status gets through. CARP cannot settle this; say so loudly.
        let partner_active = matches!(Role::from_code(status.role), Some(Role::Active | Role::Stopping));
        let adverts_heard = self.heard.is_some_and(|h| now.since(h.at) < self.down_interval());
        // Only an active unit: a stopping one has released the addresses,
        // and the partner it hands over to may report active before its
        // first advert arrives.
        let blind = self.role == Role::Active && partner_active && !adverts_heard;
        if blind && self.blind_active.is_none() {
            self.log(Notice::BothActiveBlind { partner: src });
        }
        self.blind_active = blind.then_some(src);
        if self.role == Role::Active {
            // A promise may have ended with this datagram.
            self.witness_check(now);
            // E16: the partner's health may have changed.
            self.health_verdict(now);
        }
        true
    }

    /// The link of interface `iface` went up or down.
    /// The link of interface `iface` as the adapter found it when it opened
    /// the interface. A link already down then is not a loss: no E8
    /// restart (the services would only start again into the same state,
    /// over and over until pacified), but the unit is demoted until the
    /// link comes up.
    pub fn handle_link_at_start(&mut self, iface: usize, up: bool) {
        let Some(st) = self.ifaces.get_mut(iface) else {
            return;
        };
        st.link_up = up;
        let ip = &self.params.interfaces[iface];
        if !up && ip.ha_check && self.params.mode != HaMode::NonHa {
            let iface = ip.name.clone();
            self.log(Notice::LinkLost { iface });
        }
    }

    pub fn handle_link(&mut self, now: Time, iface: usize, up: bool) {
        let Some(st) = self.ifaces.get_mut(iface) else {
            return;
        };
        if st.link_up == up {
            return;
        }
        st.link_up = up;
        let ip = &self.params.interfaces[iface];
        if !ip.ha_check || self.params.mode == HaMode::NonHa {
            return;
        }
        let name = ip.name.clone();
        if up {
            self.log(Notice::LinkRestored { iface: name.clone() });
            if !self.demoted() && matches!(self.role, Role::Standby | Role::Init) {
                self.down_deadline = Some(now + self.down_interval());
                self.role_reason = format!("link restored on {name}");
            }
            return;
        }
        self.log(Notice::LinkLost { iface: name.clone() });
        if self.params.hard_reboot_on_link_failure {
            self.actions.push_back(Action::LinkLostRestart { iface });
        }
        if self.role.advertises() {
            // Tell the partner on the links that still work, so it takes
            // over now instead of after the timeout.
            self.send_adverts(true);
            self.handover = None;
            self.advert_deadline = None;
            self.preempt_suppressed = true;
            self.set_role(now, Role::Standby, format!("link lost on HA-check interface {name}"));
        }
        if self.role != Role::Pacified {
            self.down_deadline = None;
        }
    }

    /// An operator or service command.
    pub fn handle_command(&mut self, now: Time, cmd: Command) -> Result<(), CommandError> {
        match cmd {
            Command::Handover { timeout } => self.start_handover(now, timeout, "planned handover".into()),
            Command::Leaving => {
                self.leaving = true;
                self.send_peer_status(now);
                Ok(())
            }
            Command::ClearPacified => {
                if self.role != Role::Pacified {
                    return Err(CommandError::NotPacified);
                }
                self.log(Notice::PacifiedCleared);
                self.set_role(now, Role::Init, "pacified state cleared".into());
                self.down_deadline = Some(now + self.params.startup_wait());
                Ok(())
            }
            Command::Reload(p) => self.reload(now, *p),
            Command::FollowerAttached => {
                self.follower.attached = true;
                self.follower.ever = true;
                self.follower.failures = 0;
                // A takeover of the role may have been held back for want
                // of a follower: re-arm the timer from the last advert.
                if matches!(self.role, Role::Standby | Role::Init) && self.down_deadline.is_none() && !self.demoted() {
                    let from = self.heard.map_or(now, |h| h.at);
                    self.down_deadline = Some((from + self.down_interval()).max(now));
                }
                // The partner learns at once that this unit can take the role again.
                self.peer_status_deadline = Some(now);
                Ok(())
            }
            Command::FollowerDetached => {
                self.follower.attached = false;
                // The partner learns at once that this unit cannot take the role.
                self.peer_status_deadline = Some(now);
                if self.role.advertises() {
                    self.takeover_lost(now);
                }
                Ok(())
            }
            Command::TakeoverReport { ok } => {
                // The takeover applied this run's first role (Init: nothing
                // held). A last run that died active left a partner waiting
                // out the HA timeout: resign now, so it takes the role at once.
                // In SHA-256 mode only: its counters carry on across restarts
                // (ucarp mode starts from a random one, which the partner
                // refuses as out of sequence while it still counts this
                // unit as live).
                if ok
                    && self.resign_pending
                    && self.role == Role::Init
                    && self.params.mode != HaMode::NonHa
                    && matches!(self.params.auth, AuthParams::Sha256 { .. })
                {
                    self.resign_pending = false;
                    self.log(Notice::ResignedAfterRestart);
                    self.send_adverts(true);
                }
                if ok {
                    self.follower.failures = 0;
                } else {
                    self.follower.failures += 1;
                    if self.follower.failures >= TAKEOVER_FAILURES_TO_RESIGN && self.role.advertises() {
                        self.takeover_lost(now);
                    }
                }
                Ok(())
            }
            Command::SetReadiness { component, ready, reason } => {
                if let Some(n) = self.readiness.set(now, component, ready, reason) {
                    self.log(n);
                }
                self.apply_readiness(now);
                Ok(())
            }
            Command::CheckResult { name, ok, output, took } => {
                let before = self.health.summary();
                if let Some(n) = self.health.observe(now, &name, ok, &output, took) {
                    self.log(n);
                }
                if self.health.summary() != before {
                    self.apply_readiness(now);
                    // The partner learns the new summary at once.
                    self.peer_status_deadline = Some(now);
                    self.health_retry_at = None;
                }
                self.health_verdict(now);
                Ok(())
            }
            Command::SetGeneration(g) => {
                self.generation = g;
                Ok(())
            }
            Command::TakeoverReleased => {
                if self.role == Role::Stopping
                    && let Some(h) = &mut self.handover
                    && h.resign_at.is_some()
                {
                    h.takeover_pending = false;
                    if !h.witness_pending {
                        self.resign_now(now);
                    }
                }
                Ok(())
            }
            Command::CheckStarts(s) => {
                let j = self.pacify.judge(&s);
                self.recent_starts = j.recent;
                if !j.pacified || self.role == Role::Pacified || self.params.mode == HaMode::NonHa {
                    return Ok(());
                }
                let (starts, window) = (j.recent, self.pacify.window);
                self.log(Notice::Pacified { starts, window });
                if self.role.advertises() {
                    // Hand over on the way out, as on a link loss.
                    self.send_adverts(true);
                }
                self.handover = None;
                self.advert_deadline = None;
                self.down_deadline = None;
                self.set_role(now, Role::Pacified, format!("{starts} starts within {} s", window.as_secs()));
                Ok(())
            }
        }
    }

    /// Timers: call when [`poll_timeout`](Self::poll_timeout) is reached.
    pub fn handle_timeout(&mut self, now: Time) {
        if let Some((window, counts)) = self.limiter.take_summary(now) {
            self.log(Notice::DropSummary { window, counts });
        }
        if self.readiness.next_expiry().is_some_and(|t| t <= now) {
            self.apply_readiness(now);
        }
        // A standby woken long after its deadline (its process was
        // stopped or starved) may have the active's adverts waiting unread:
        // it listens one more interval before it takes over.
        if let Some(d) = self.down_deadline
            && d <= now
            && self.role == Role::Standby
            && self.heard.is_some()
            && now.since(d) >= self.params.interval()
        {
            self.log(Notice::WokeLate { late: now.since(d) });
            self.down_deadline = Some(now + self.params.interval());
        }
        if let Some(d) = self.down_deadline
            && d <= now
            && matches!(self.role, Role::Init | Role::Standby)
        {
            self.down_deadline = None;
            if self.may_become_active() {
                let why = match self.heard {
                    Some(h) if self.role == Role::Standby => {
                        format!("partner {} silent for {} ms", h.addr, now.since(h.at).as_millis())
                    }
                    _ if self.role == Role::Standby => "no active partner heard".to_string(),
                    _ => "no active partner heard during the initial wait".to_string(),
                };
                if self.witness.is_some() {
                    // E14: the witness decides whether the silent partner
                    // may be replaced.
                    self.awaiting_witness = Some(why);
                    self.witness_said = false;
                    self.try_take_over(now);
                } else {
                    self.become_active(now, why);
                }
            }
        }
        if self.witness_deadline.is_some_and(|d| d <= now) {
            self.witness_deadline = None;
            self.witness_check(now);
        }
        if let Some(at) = self.handover.as_ref().and_then(|h| h.resign_at)
            && at <= now
            && self.role == Role::Stopping
        {
            let outcome = match self.handover.as_ref().map(|h| (h.takeover_pending, h.witness_pending)) {
                Some((_, true)) => "the witness's release (etcd) was not confirmed in time: resigning anyway",
                _ => "the takeover service did not confirm the release in time: resigning anyway",
            };
            self.log(Notice::Handover { partner: self.reported.map(|r| r.addr), outcome });
            self.resign_now(now);
        }
        if let Some(h) = &self.handover
            && h.deadline <= now
            && self.role == Role::Stopping
        {
            let took = now.since(h.started);
            self.handover = None;
            self.log(Notice::Handover {
                partner: self.heard.map(|h| h.addr),
                outcome: "not confirmed in time: staying active",
            });
            self.actions.push_back(Action::HandoverFinished { confirmed: false, partner: None, took });
            self.set_role(now, Role::Active, "handover not confirmed by the partner".into());
            self.advert_deadline = Some(now);
        }
        self.step_down_if_overslept(now);
        if let Some(d) = self.advert_deadline
            && d <= now
            && self.role.advertises()
        {
            self.send_adverts(self.role == Role::Stopping);
            self.peer_status_along(now);
            // Keep the cadence anchored to the schedule, not to when
            // this call happened, so jitter does not accumulate.
            let mut next = d + self.params.interval();
            if next <= now {
                next = now + self.params.interval();
            }
            self.advert_deadline = Some(next);
        }
        if let Some(d) = self.peer_status_deadline
            && d <= now
        {
            self.send_peer_status(now);
            self.peer_status_deadline = Some(now + PEER_STATUS_INTERVAL);
        }
    }

    /// Sends the peer-status datagram now if it is due within
    /// [`PEER_STATUS_SLACK`]: called when the unit is awake anyway (an
    /// advert sent or received), so that the status rides along instead of
    /// waking the unit on its own timer. With adverts at least once a
    /// second, the status goes out with them.
    fn peer_status_along(&mut self, now: Time) {
        if let Some(d) = self.peer_status_deadline
            && d <= now + PEER_STATUS_SLACK
        {
            self.send_peer_status(now);
            // The next one is due with the advert a second from now, which
            // may come a little early or late: its own timer only fires if
            // it does not come at all.
            self.peer_status_deadline = Some(now + PEER_STATUS_INTERVAL + PEER_STATUS_SLACK / 2);
        }
    }

    // ----- outputs ------------------------------------------------------

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        [
            self.down_deadline,
            self.advert_deadline,
            self.peer_status_deadline,
            self.handover.as_ref().map(|h| h.deadline),
            self.handover.as_ref().and_then(|h| h.resign_at),
            self.limiter.summary_due(),
            self.readiness.next_expiry(),
            self.witness_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// E16: whether the tracked check `name` passes (after fall/rise).
    pub fn check_passing(&self, name: &str) -> bool {
        self.health.passing(name)
    }

    /// Whether every component reporting its readiness lately is ready (R4).
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// The parameters in force.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The replay windows, if they changed since the last call (to persist).
    pub fn take_replay_if_dirty(&mut self) -> Option<ReplayState> {
        std::mem::take(&mut self.replay_dirty).then(|| self.replay.clone())
    }

    /// The next counter this unit would send (to persist in SHA-256 mode).
    pub fn next_counter(&self) -> u64 {
        self.counter
    }

    /// Counters of dropped packets.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// A snapshot for GetStatus.
    pub fn status(&self, now: Time) -> Status {
        let (local, partner) = self.squares(now);
        let mut warnings = Vec::new();
        if self.params.auth.no_password() && self.params.mode != HaMode::NonHa {
            warnings.push(Notice::NoPassword.to_string());
        }
        if let Some(p) = self.blind_active {
            warnings.push(Notice::BothActiveBlind { partner: p }.to_string());
        }
        if let Some(p) = self.same_mode {
            warnings.push(format!(
                "partner {p} is in HA mode {} too: set one unit first, the other second",
                self.params.mode.as_str()
            ));
        }
        if let Some(r) = self.reported
            && r.status.vhid != self.params.vhid
        {
            warnings.push(format!(
                "partner {} uses vhid {}, this unit {}: set the same ha.vhid",
                r.addr, r.status.vhid, self.params.vhid
            ));
        }
        if self.demoted() {
            warnings.push("an HA-check interface has no link: this unit will not become active".into());
        }
        if self.follower.ever && !self.follower.attached {
            warnings.push("the takeover service is not following the role".into());
        }
        if !self.foreign.is_empty() {
            warnings.push(format!("adverts with another vhid seen on the wire ({} sources)", self.foreign.len()));
        }
        if let Some(b) = &self.health_blocked {
            warnings.push(b.clone());
        }
        let witness = self.witness.as_ref().map(|w| w.view(now));
        if let Some(v) = &witness {
            let silent =
                v.since_ok.map_or_else(|| "never answered".to_string(), |d| format!("silent for {} ms", d.as_millis()));
            if v.fallback {
                warnings.push(format!(
                    "witness (etcd) unreachable ({silent}), longer than the lease TTL: policy prefer, a silent partner \
                     is replaced by plain CARP (a partition can leave two actives)"
                ));
            } else if !v.reachable {
                warnings.push(match v.policy {
                    crate::witness::WitnessPolicy::Required => format!(
                        "witness (etcd) unreachable ({silent}): policy required, this unit will not replace a silent partner"
                    ),
                    crate::witness::WitnessPolicy::Prefer => format!(
                        "witness (etcd) unreachable ({silent}): policy prefer, plain CARP once it has been silent for the lease TTL"
                    ),
                });
            }
        }
        if let Some(r) = self.reported
            && now.since(r.at) < PEER_STATUS_STALE
            && (r.status.flags & peer::FLAG_WITNESS != 0) != self.witness.is_some()
        {
            warnings.push(if self.witness.is_some() {
                format!("partner {} has no witness configured: give both units the same [witness]", r.addr)
            } else {
                format!("partner {} uses a witness, this unit does not: give both units the same [witness]", r.addr)
            });
        }
        Status {
            role: self.role,
            role_reason: self.role_reason.clone(),
            role_since: self.role_since,
            heard: self.heard,
            reported: self.reported,
            partner_reachable: self.partner_reachable(now),
            local_square: local,
            partner_square: partner,
            interfaces: self
                .params
                .interfaces
                .iter()
                .zip(&self.ifaces)
                .map(|(p, s)| crate::status::IfaceView {
                    name: p.name.clone(),
                    link_up: s.link_up,
                    ha_check: p.ha_check,
                    unit_addr: p.unit_addr,
                    shared: p.shared,
                    sent: s.sent,
                    received: s.received,
                })
                .collect(),
            drops: self.drops.nonzero(),
            peer_drops: self.peer_drops,
            foreign: self.foreign.iter().map(|(&(vhid, src), f)| (vhid, src, *f)).collect(),
            adverts_sent: self.adverts_sent,
            adverts_received: self.adverts_received,
            warnings,
            follower_attached: self.follower.attached,
            same_mode: self.same_mode.is_some(),
            ready: self.ready,
            recent_starts: self.recent_starts,
            witness,
            checks: self.health.view(now),
            penalty: self.health.penalty(),
            partner_hears_adverts: self
                .reported
                .is_some_and(|r| now.since(r.at) < PEER_STATUS_STALE && r.status.flags & peer::FLAG_HEARS_ADVERTS != 0),
        }
    }

    // ----- the protocol -------------------------------------------------

    fn validate(&self, now: Time, iface: usize, packet: &[u8]) -> Result<Valid, Refused> {
        let unknown = Ipv4Addr::UNSPECIFIED;
        let ip = Ipv4Header::parse(packet).map_err(|e| {
            let reason = match e {
                Ipv4Error::TooShort => DropReason::TooShort,
                Ipv4Error::BadVersion(_) => DropReason::BadIpVersion,
                Ipv4Error::BadLength => DropReason::BadIpLength,
                Ipv4Error::BadChecksum => DropReason::BadIpChecksum,
                Ipv4Error::Fragment => DropReason::Fragment,
            };
            // The source is only trustworthy once the header parsed; still
            // name it in the log when the bytes are there.
            let src = if packet.len() >= 16 {
                Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15])
            } else {
                unknown
            };
            Refused::new(reason, src)
        })?;
        let src = ip.src;
        if ip.protocol != PROTO_CARP {
            return Err(Refused::new(DropReason::NotCarp, src).detail(format!(": protocol {}", ip.protocol)));
        }
        let Some(ifp) = self.params.interfaces.get(iface).filter(|i| i.ha_check) else {
            return Err(Refused::new(DropReason::WrongInterface, src));
        };
        if self.params.interfaces.iter().any(|i| i.unit_addr == src || i.shared == src) {
            return Err(Refused::new(DropReason::OwnAddress, src));
        }
        if self.role == Role::Pacified {
            return Err(Refused::new(DropReason::Pacified, src));
        }
        if ip.ttl != 255 {
            return Err(Refused::new(DropReason::BadTtl, src).detail(ip.ttl.to_string()));
        }
        let payload = &packet[ip.header_len..ip.header_len + ip.payload_len];
        let advert = Advert::parse(payload).map_err(|e| {
            let reason = match e {
                CarpError::TooShort | CarpError::BadLength { .. } => DropReason::BadLength,
                CarpError::BadVersion(_) => DropReason::BadVersion,
                CarpError::BadType(_) => DropReason::BadType,
                CarpError::BadChecksum => DropReason::BadChecksum,
            };
            Refused::new(reason, src).detail(format!(": {e}"))
        })?;
        let expected_dst = match ifp.destination {
            Destination::Unicast => ifp.unit_addr,
            _ => ifp.advert_destination(),
        };
        if ip.dst != expected_dst {
            return Err(Refused::new(DropReason::BadDestination, src)
                .detail(format!(": sent to {}, this unit listens on {expected_dst}", ip.dst)));
        }
        // Another group's adverts first, whoever sends them: another pair
        // on the segment is what the foreign list is for (O4).
        if advert.vhid != self.params.vhid {
            let mut r = Refused::new(DropReason::ForeignVhid, src).detail(advert.vhid.to_string());
            r.vhid = Some(advert.vhid);
            return Err(r);
        }
        if let Some(p) = ifp.partner_addr
            && src != p
        {
            return Err(Refused::new(DropReason::NotPartner, src).detail(format!(": the partner is {p}")));
        }
        let rule = match (&self.keys[iface], &advert.auth) {
            (IfaceKeys::Sha1(k), AuthData::Sha1(d)) => {
                if !k.verify(advert.counter, d) {
                    return Err(Refused::new(DropReason::BadDigest, src));
                }
                ReplayRule::Unseen
            }
            (IfaceKeys::Sha256(keys), AuthData::Sha256 { key_id, digest }) => {
                let Some((_, k)) = keys.iter().find(|(id, _)| id == key_id) else {
                    return Err(Refused::new(DropReason::UnknownKey, src)
                        .detail(format!(": key id {key_id} is not configured")));
                };
                let signed = Sha256Signed {
                    vhid: advert.vhid,
                    advskew: advert.advskew,
                    advbase: advert.advbase,
                    key_id: *key_id,
                    counter: advert.counter,
                    src,
                };
                if !k.verify(&signed, digest) {
                    return Err(Refused::new(DropReason::BadDigest, src));
                }
                ReplayRule::Window
            }
            (IfaceKeys::Sha1(_), AuthData::Sha256 { .. }) => {
                return Err(Refused::new(DropReason::AuthModeMismatch, src)
                    .detail("sends duet HMAC-SHA256 adverts but this unit uses ucarp-sha1"));
            }
            (IfaceKeys::Sha256(_), AuthData::Sha1(_)) => {
                return Err(Refused::new(DropReason::AuthModeMismatch, src)
                    .detail("sends ucarp-compatible HMAC-SHA1 adverts but this unit uses sha256"));
            }
        };
        // Replay last: nothing unauthenticated may enter the windows.
        let live_for = self.params.down_interval(self.heard.map(|h| h.interval));
        let ctx = Context { now, live_for, own_recent: &self.own_recent };
        match self.replay.check(src, advert.counter, rule, &ctx) {
            Verdict::Fresh => Ok(Valid { src, advert }),
            Verdict::Replay => {
                Err(Refused::new(DropReason::Replay, src)
                    .detail(format!("(counter {:#x} already seen)", advert.counter)))
            }
            Verdict::OutOfSequence => Err(Refused::new(DropReason::Replay, src)
                .detail(format!("(counter {:#x} out of sequence while the sender is live)", advert.counter))),
        }
    }

    fn on_advert(&mut self, now: Time, iface: usize, src: Ipv4Addr, a: &Advert) {
        let rule = match a.auth {
            AuthData::Sha1(_) => ReplayRule::Unseen,
            AuthData::Sha256 { .. } => ReplayRule::Window,
        };
        self.replay.record(src, a.counter, rule, now);
        self.replay_dirty = true;
        self.ifaces[iface].received += 1;
        self.adverts_received += 1;
        let theirs = Duration::from_micros(a.interval_us());
        let ours = self.params.interval();
        let resign = a.advbase == RESIGN_ADVBASE && a.advskew == RESIGN_ADVSKEW;
        if resign {
            self.last_resign = Some((a.counter, now));
        } else if let Some((r, at)) = self.last_resign {
            // duet sends one counter sequence over all its links; an advert
            // numbered below the resign was sent before it.
            if now.since(at) < RESIGN_GRACE && a.counter < r && r - a.counter < 1 << 16 {
                return;
            }
        }
        if !resign {
            self.heard =
                Some(Heard { addr: src, iface, advbase: a.advbase, advskew: a.advskew, at: now, interval: theirs });
            let key = (src, a.interval_us());
            let far_apart = theirs > ours * 2 || ours > theirs * 2;
            if far_apart && self.mismatch_logged != Some(key) {
                self.mismatch_logged = Some(key);
                self.log(Notice::ProfileMismatch { partner: src, partner_interval: theirs, own_interval: ours });
            }
        }
        match self.role {
            Role::Pacified => {}
            Role::Init | Role::Standby => {
                if self.demoted() {
                    self.set_role(now, Role::Standby, "an HA-check interface has no link".into());
                    return;
                }
                // ucarp: a master that will time out anyway is as good as
                // down. A resign advert (255/255) is the extreme case.
                if resign || theirs > self.params.down_interval(None) {
                    if self.may_become_active() {
                        let why = if resign {
                            format!("partner {src} handed over")
                        } else {
                            format!(
                                "partner {src} advertises every {} ms, beyond this unit's timeout",
                                theirs.as_millis()
                            )
                        };
                        self.become_active(now, why);
                    }
                    return;
                }
                if self.params.preempt()
                    && !self.preempt_suppressed
                    && ours < theirs
                    && self.ready
                    && self.health.penalty() <= self.reported.map_or(0, |r| r.status.penalty)
                    && self.may_become_active()
                {
                    self.become_active(now, format!("preemption: this unit is the preferred server, {src} gives way"));
                    return;
                }
                if self.role == Role::Init {
                    self.set_role(now, Role::Standby, format!("active partner {src} heard"));
                }
                self.down_deadline = Some(now + self.params.down_interval(Some(theirs)));
                if self.witness.is_some() {
                    if self.awaiting_witness.take().is_some() {
                        self.role_reason = format!("active partner {src} heard again");
                        self.witness_check(now);
                    }
                    // E14: tell the active at once how long this unit will
                    // stay away (its promise); one reply per advert.
                    self.peer_status_deadline = Some(now);
                }
            }
            Role::Active => {
                if resign {
                    // Both held the role and the other is leaving: make sure
                    // every neighbour now points at this unit.
                    self.log(Notice::Handover {
                        partner: Some(src),
                        outcome: "partner resigned while this unit is active: re-announcing",
                    });
                    self.actions.push_back(Action::Reannounce { reason: format!("partner {src} resigned") });
                    return;
                }
                let own = self.params.interfaces[iface].unit_addr;
                self.last_active_active = Some(now);
                if theirs < ours || (theirs == ours && ucarp_addr_less(src, own)) {
                    // As ucarp: one more advert so the winner knows it must
                    // reassert, then give way.
                    self.send_adverts(false);
                    self.advert_deadline = None;
                    self.log(Notice::PreferredMasterAdvertised { partner: src });
                    self.set_role(now, Role::Standby, format!("preferred active {src} advertised"));
                    self.down_deadline = Some(now + self.params.down_interval(Some(theirs)));
                } else {
                    self.log(Notice::ActiveActive { partner: src });
                    self.actions.push_back(Action::Reannounce { reason: format!("active-active with {src}") });
                    // Tell the other active at once rather than at the next tick.
                    self.send_adverts(false);
                    self.advert_deadline = Some(now + ours);
                }
            }
            Role::Stopping => {
                if resign {
                    return;
                }
                let took = self.handover.take().map_or(Duration::ZERO, |h| now.since(h.started));
                self.log(Notice::Handover { partner: Some(src), outcome: "confirmed: the partner is active" });
                self.actions.push_back(Action::HandoverFinished { confirmed: true, partner: Some(src), took });
                self.advert_deadline = None;
                self.set_role(now, Role::Standby, format!("handed over to {src}"));
                self.down_deadline = Some(now + self.params.down_interval(Some(theirs)));
            }
        }
    }

    fn start_handover(&mut self, now: Time, timeout: Duration, reason: String) -> Result<(), CommandError> {
        if self.role != Role::Active || self.params.mode == HaMode::NonHa {
            return Err(CommandError::NotActive(self.role));
        }
        if let Some(why) = self.partner_cannot_take_over(now) {
            return Err(CommandError::PartnerNotReady(why));
        }
        self.log(Notice::Handover { partner: self.reported.map(|r| r.addr), outcome: "started" });
        self.preempt_suppressed = true;
        // Release first, resign second: the partner must never find the
        // addresses still here. With a takeover service following, the
        // resigning advert waits for its report (at most RELEASE_WAIT).
        // E14: the witness's key is released too (by leaving the active
        // role), so the partner finds it free.
        let witness_pending = self.witness.as_ref().is_some_and(Witness::names_this_unit);
        self.set_role(now, Role::Stopping, reason);
        let takeover_pending = self.follower.attached;
        let mut h =
            Handover { started: now, deadline: now + timeout, resign_at: None, takeover_pending, witness_pending };
        if takeover_pending || witness_pending {
            h.resign_at = Some(now + RELEASE_WAIT);
            self.handover = Some(h);
            self.advert_deadline = None;
        } else {
            self.handover = Some(h);
            self.resign_now(now);
        }
        Ok(())
    }

    fn resign_now(&mut self, now: Time) {
        if let Some(h) = &mut self.handover {
            h.resign_at = None;
        }
        self.send_adverts(true);
        self.advert_deadline = Some(now + self.params.interval());
    }

    fn takeover_lost(&mut self, now: Time) {
        if self.partner_cannot_take_over(now).is_some() {
            self.log(Notice::TakeoverGone { resigning: false });
            return;
        }
        self.log(Notice::TakeoverGone { resigning: true });
        self.actions.push_back(Action::ScrubAddresses);
        self.send_adverts(true);
        self.preempt_suppressed = true;
        self.handover = None;
        self.advert_deadline = None;
        self.set_role(now, Role::Standby, "takeover service gone: handed over".into());
        self.down_deadline = Some(now + self.down_interval());
    }

    fn reload(&mut self, now: Time, p: Params) -> Result<(), CommandError> {
        if p == self.params {
            return Ok(());
        }
        p.check().map_err(CommandError::InvalidParams)?;
        if p.mode != self.params.mode {
            return Err(CommandError::Rejected(format!(
                "ha.mode changed from {} to {}: a mode change needs a restart of the unit",
                self.params.mode.as_str(),
                p.mode.as_str()
            )));
        }
        self.log(Notice::ConfigReloaded);
        let old_links: BTreeMap<String, bool> =
            self.params.interfaces.iter().zip(&self.ifaces).map(|(i, s)| (i.name.clone(), s.link_up)).collect();
        self.ifaces = p
            .interfaces
            .iter()
            .map(|i| IfaceState { link_up: old_links.get(&i.name).copied().unwrap_or(true), ..Default::default() })
            .collect();
        self.keys = build_keys(&p);
        self.peer_key = PeerKey::new(p.auth.peer_secret());
        match (self.witness.as_mut(), p.witness) {
            (Some(w), Some(wp)) => w.set_params(wp),
            (None, Some(wp)) => self.witness = Some(Witness::new(wp, now)),
            (Some(_), None) => {
                self.witness_release(now);
                self.witness = None;
                self.witness_deadline = None;
                self.partner_promise = None;
                // A takeover that waited for the witness is plain CARP's
                // again: the down timer is re-armed below (standby) or here.
                if self.awaiting_witness.take().is_some() && self.role == Role::Init {
                    self.down_deadline = Some(now);
                }
            }
            (None, None) => {}
        }
        self.params = p;
        match self.role {
            Role::Active | Role::Stopping => self.advert_deadline = Some(now),
            Role::Standby => {
                let from = self.heard.map_or(now, |h| h.at);
                self.down_deadline = (!self.demoted()).then(|| from + self.down_interval());
            }
            Role::Init | Role::Pacified => {}
        }
        self.actions.push_back(Action::ParametersChanged);
        self.peer_status_deadline = Some(now);
        Ok(())
    }

    // ----- the witness (E14) ---------------------------------------------

    /// What the witness's adapter reported (see [`crate::witness`]).
    pub fn handle_witness(&mut self, now: Time, ev: WitnessEvent) {
        let Some(w) = self.witness.as_mut() else {
            return;
        };
        w.handle(now, &ev);
        match &ev {
            WitnessEvent::Failed { request: Some(RequestKind::Acquire | RequestKind::Release), .. } => {
                self.witness_retry_at = Some(now + self.witness_retry());
            }
            WitnessEvent::Acquired { .. } => {
                self.witness_retry_at = None;
                if self.awaiting_witness.is_some()
                    && matches!(self.role, Role::Init | Role::Standby)
                    && self.may_become_active()
                {
                    let decision = self.acquiring.take().unwrap_or(Decision::AcquiredStale);
                    if let Some(w) = self.witness.as_mut() {
                        w.decided(decision);
                    }
                    self.log(Notice::WitnessAcquired { decision });
                    let why = self.awaiting_witness.take().unwrap_or_default();
                    self.become_active(now, format!("{why}; witness acquired"));
                    return;
                }
            }
            _ => {}
        }
        if self.role == Role::Stopping
            && matches!(
                ev,
                WitnessEvent::Released
                    | WitnessEvent::LeaseLost
                    | WitnessEvent::Failed { request: Some(RequestKind::Release), .. }
            )
            && let Some(h) = &mut self.handover
            && h.witness_pending
            && h.resign_at.is_some()
        {
            // Released (or it cannot be: the partner takes the key after W).
            h.witness_pending = false;
            if !h.takeover_pending {
                self.resign_now(now);
            }
        }
        self.witness_check(now);
    }

    /// A failed acquire or release is asked again after this.
    fn witness_retry(&self) -> Duration {
        (self.down_interval() / 4).min(Duration::from_millis(250))
    }

    fn witness_beat(&mut self) {
        if let Some(w) = self.witness.as_mut() {
            w.beat();
        }
        self.actions.push_back(Action::Witness(WitnessRequest::Beat));
    }

    /// Asks for the release of a key naming this unit (none under way).
    fn witness_release(&mut self, now: Time) {
        let Some(w) = &self.witness else { return };
        if w.names_this_unit() && !w.pending(now) {
            if let Some(w) = self.witness.as_mut() {
                w.asked(now, WitnessRequest::Release);
            }
            self.actions.push_back(Action::Witness(WitnessRequest::Release));
        }
    }

    /// Judges the witness again for the current role.
    fn witness_check(&mut self, now: Time) {
        if self.witness.is_none() || self.params.mode == HaMode::NonHa {
            return;
        }
        self.witness_deadline = None;
        match self.role {
            Role::Active => self.judge_active(now),
            Role::Init | Role::Standby if self.awaiting_witness.is_some() => self.try_take_over(now),
            Role::Init | Role::Standby | Role::Pacified => {
                if self.witness_retry_at.is_some_and(|t| t > now) {
                    self.witness_deadline = self.witness_retry_at;
                } else {
                    self.witness_release(now);
                }
            }
            // Released when the handover started; it waits for the partner.
            Role::Stopping => {}
        }
    }

    /// Rule 1 of [`crate::witness`]: the partner is silent.
    fn try_take_over(&mut self, now: Time) {
        let Some(why) = self.awaiting_witness.clone() else { return };
        if !self.may_become_active() {
            self.awaiting_witness = None;
            return;
        }
        let wait = self.down_interval();
        let Some(w) = self.witness.as_mut() else {
            self.awaiting_witness = None;
            self.become_active(now, why);
            return;
        };
        match w.judge_silent_partner(now, wait) {
            Takeover::Fallback { unreachable_for } => {
                w.decided(Decision::Fallback);
                self.log(Notice::WitnessFallback { unreachable_for });
                self.become_active(
                    now,
                    format!(
                        "{why}; witness unreachable for {} ms: plain CARP (policy prefer)",
                        unreachable_for.as_millis()
                    ),
                );
            }
            Takeover::Acquire(expect) => {
                if self.witness_retry_at.is_some_and(|t| t > now) {
                    self.witness_deadline = self.witness_retry_at;
                    return;
                }
                self.acquiring = Some(match expect {
                    Expect::Absent => Decision::AcquiredAbsent,
                    Expect::ModRevision(_) if w.names_this_unit() => Decision::AcquiredOwn,
                    Expect::ModRevision(_) => Decision::AcquiredStale,
                });
                w.asked(now, WitnessRequest::Acquire(expect));
                self.actions.push_back(Action::Witness(WitnessRequest::Acquire(expect)));
            }
            Takeover::Wait { recheck, why: waiting } => {
                self.witness_deadline = recheck;
                match waiting {
                    Waiting::PartnerBeats { partner, since_beat } => {
                        if !self.witness_said {
                            w.decided(Decision::PartnerAlive);
                            self.witness_said = true;
                            self.role_reason =
                                format!("{why}, but {partner} holds the witness and beats: staying standby");
                            self.log(Notice::WitnessPartnerAlive { partner, since_beat });
                        }
                    }
                    Waiting::Unreachable { for_, policy } => {
                        if policy == crate::witness::WitnessPolicy::Required && !self.witness_said {
                            w.decided(Decision::Held);
                            self.witness_said = true;
                            self.role_reason = format!("{why}; witness unreachable: not taking over (policy required)");
                            self.log(Notice::WitnessHolding { unreachable_for: for_ });
                        }
                    }
                    Waiting::Pending => {}
                }
            }
        }
    }

    /// Rules 2-4 of [`crate::witness`] for the active unit.
    fn judge_active(&mut self, now: Time) {
        let view = ActiveView {
            since: self.role_since,
            wait: self.down_interval(),
            ha_timeout: self.params.ha_timeout(),
            partner_promise: self.partner_promise,
            partner_adverts_heard: self.heard.is_some_and(|h| now.since(h.at) < self.down_interval()),
        };
        let Some(w) = self.witness.as_mut() else { return };
        match w.judge_active(now, &view) {
            ActiveVerdict::Keep { recheck } => self.witness_deadline = recheck,
            ActiveVerdict::Acquire(expect) => {
                if self.witness_retry_at.is_some_and(|t| t > now) {
                    self.witness_deadline = self.witness_retry_at;
                    return;
                }
                w.asked(now, WitnessRequest::Acquire(expect));
                self.actions.push_back(Action::Witness(WitnessRequest::Acquire(expect)));
            }
            ActiveVerdict::StepDown(why) => {
                w.decided(match why {
                    StepDown::Unconfirmed { .. } => Decision::SteppedDownUnconfirmed,
                    StepDown::PartnerHolds { .. } => Decision::SteppedDownPartnerHolds,
                });
                let reason = match &why {
                    StepDown::Unconfirmed { unconfirmed_for } => format!(
                        "witness: no beat acknowledged for {} ms and the partner does not hear this unit",
                        unconfirmed_for.as_millis()
                    ),
                    StepDown::PartnerHolds { partner } => format!("witness: {partner} holds it and beats"),
                };
                self.log(Notice::WitnessStepDown(why));
                // As on a link loss: a partner that hears the resign takes
                // over at once (and then acquires the key).
                self.send_adverts(true);
                self.handover = None;
                self.advert_deadline = None;
                self.preempt_suppressed = true;
                self.set_role(now, Role::Standby, reason);
                self.down_deadline = Some(now + self.down_interval());
            }
        }
    }

    // ----- helpers ------------------------------------------------------

    /// The unit is ready when every component heard from lately is; the
    /// partner learns a change at once (peer status).
    fn apply_readiness(&mut self, now: Time) {
        for n in self.readiness.expire(now) {
            self.log(n);
        }
        let ready = self.components_ready();
        if self.ready != ready {
            self.ready = ready;
            self.peer_status_deadline = Some(now);
        }
    }

    /// Silent past the partner's patience (the process was stopped, the
    /// machine suspended or starved): the partner may hold the role by now.
    /// Advertising as active at once would put the addresses on both units
    /// until one yields; listening first does not. Checked before any input
    /// (a timer, an advert, a peer status) is acted on, since on waking the
    /// adverts that arrived meanwhile may come first.
    fn step_down_if_overslept(&mut self, now: Time) {
        if let Some(d) = self.advert_deadline
            && self.role == Role::Active
            && (self.heard.is_some() || self.reported.is_some())
            && d <= now
            && now.since(d) + self.params.interval() >= self.down_interval()
        {
            let silent = now.since(d) + self.params.interval();
            self.log(Notice::Overslept { silent });
            self.advert_deadline = None;
            self.set_role(
                now,
                Role::Standby,
                format!("no advert sent for {} ms: the partner may have taken over", silent.as_millis()),
            );
            self.down_deadline = Some(now + self.down_interval());
        }
    }

    /// R4 and E16: every component reporting lately is ready, and no
    /// check that demotes the unit fails.
    fn components_ready(&self) -> bool {
        self.readiness.ready() && !self.health.summary().demoted
    }

    fn down_interval(&self) -> Duration {
        self.params.down_interval(self.heard.map(|h| h.interval))
    }

    fn demoted(&self) -> bool {
        self.params.interfaces.iter().zip(&self.ifaces).any(|(p, s)| p.ha_check && !s.link_up)
    }

    /// Gates every way into Active: not while demoted, and not without a
    /// takeover service once one has followed (it would hold nothing).
    fn may_become_active(&self) -> bool {
        !self.demoted() && (!self.follower.ever || self.follower.attached)
    }

    fn partner_reachable(&self, now: Time) -> bool {
        let adverts = self.heard.is_some_and(|h| now.since(h.at) < self.down_interval());
        let reports = self.reported.is_some_and(|r| now.since(r.at) < PEER_STATUS_STALE);
        adverts || reports
    }

    /// Why the partner cannot take over now, when that is known. A partner
    /// that sends no peer status (ucarp) is given the benefit of the doubt.
    fn partner_cannot_take_over(&self, now: Time) -> Option<String> {
        let r = self.reported?;
        if now.since(r.at) >= PEER_STATUS_STALE {
            return Some(format!("partner {} not heard for {} ms", r.addr, now.since(r.at).as_millis()));
        }
        if r.status.flags & peer::FLAG_LEAVING != 0 {
            return Some(format!("partner {} is stopping", r.addr));
        }
        match Role::from_code(r.status.role) {
            Some(Role::Standby) if r.status.flags & peer::FLAG_UNHEALTHY != 0 => Some(format!(
                "partner {} is unhealthy too ({} tracked checks failing)",
                r.addr,
                r.status.failing.max(1)
            )),
            Some(Role::Standby) if r.status.flags & peer::FLAG_READY == 0 => Some(format!(
                "partner {} is not ready to take the role: its state sync (R4) is not done, or its takeover service \
                 is not running (its `duetctl status` says which)",
                r.addr
            )),
            Some(Role::Standby) => None,
            Some(other) => Some(format!("partner {} is {}", r.addr, other.display_name())),
            None => Some(format!("partner {} reports an unknown role", r.addr)),
        }
    }

    /// E16: an active unit whose checks fail hands the role to a partner
    /// that can take it (ready, healthy, less penalised); when none can,
    /// it keeps the role and says why (never zero actives because of
    /// checks). A handover that was started is not tried again for
    /// [`HEALTH_RETRY`] unless a check changes.
    fn health_verdict(&mut self, now: Time) {
        if self.role != Role::Active || self.params.mode == HaMode::NonHa || !self.health.any() {
            self.set_health_blocked(None);
            return;
        }
        let demoted = self.health.demoted_by();
        let penalty = self.health.penalty();
        let partner_penalty = self.reported.map_or(0, |r| r.status.penalty);
        let why = if !demoted.is_empty() {
            format!("check {} failing", demoted.join(", "))
        } else if penalty > partner_penalty {
            format!(
                "check {} failing (penalty {penalty}, the partner's {partner_penalty})",
                self.health.failing().join(", ")
            )
        } else {
            self.set_health_blocked(None);
            return;
        };
        if self.health_retry_at.is_some_and(|t| now < t) {
            return;
        }
        let cannot = match self.reported {
            None => Some("no partner has reported its status".to_owned()),
            Some(_) => self.partner_cannot_take_over(now),
        };
        if let Some(cannot) = cannot {
            self.set_health_blocked(Some(format!("{why}, but {cannot}: this unit keeps the role")));
            return;
        }
        self.set_health_blocked(None);
        self.health_retry_at = Some(now + HEALTH_RETRY);
        self.log(Notice::HealthHandover { why: why.clone() });
        let reason = format!("planned handover: {why}");
        match self.start_handover(now, self.health_handover_timeout, reason) {
            // Health, not this flag, keeps the unit from preempting back:
            // once its checks pass again a preferred unit may.
            Ok(()) => self.preempt_suppressed = false,
            Err(e) => self.set_health_blocked(Some(format!("{why}, but {e}: this unit keeps the role"))),
        }
    }

    /// Records why the unit keeps the role despite its checks, with a line
    /// when that changes.
    fn set_health_blocked(&mut self, blocked: Option<String>) {
        if blocked == self.health_blocked {
            return;
        }
        if let Some(why) = &blocked {
            self.log(Notice::HealthKept { why: why.clone() });
        }
        self.health_blocked = blocked;
    }

    fn become_active(&mut self, now: Time, reason: String) {
        let demoted = self.health.demoted_by();
        let reason = if demoted.is_empty() {
            reason
        } else {
            // Never zero actives because of checks (E16).
            format!("{reason} (although check {} fails: there is no healthy partner to take it)", demoted.join(", "))
        };
        self.down_deadline = None;
        self.preempt_suppressed = false;
        self.awaiting_witness = None;
        self.set_role(now, Role::Active, reason);
        self.send_adverts(false);
        self.advert_deadline = Some(now + self.params.interval());
        // E14: a unit active by CARP takes the role first and the key after.
        self.witness_check(now);
    }

    fn set_role(&mut self, now: Time, to: Role, reason: String) {
        // Out of the first role, a resign after a restart means nothing.
        self.resign_pending = false;
        self.role_reason.clone_from(&reason);
        if self.role == to {
            return;
        }
        let from = self.role;
        self.role = to;
        self.role_since = now;
        self.log(Notice::SwitchingTo(to));
        self.actions.push_back(Action::RoleChanged { from, to, reason });
        self.peer_status_deadline = Some(now);
        if from == Role::Active {
            // E14: a unit that leaves the active role releases the key.
            self.witness_release(now);
        }
    }

    fn send_adverts(&mut self, resign: bool) {
        if self.params.mode == HaMode::NonHa {
            return;
        }
        let (advbase, advskew) =
            if resign { (RESIGN_ADVBASE, RESIGN_ADVSKEW) } else { (self.params.advbase(), self.params.advskew()) };
        // E14: the holder beats with every advert round.
        if !resign && self.role == Role::Active && self.witness.as_ref().is_some_and(Witness::holds) {
            self.witness_beat();
        }
        for i in 0..self.params.interfaces.len() {
            let p = &self.params.interfaces[i];
            if !p.ha_check || !self.ifaces[i].link_up {
                continue;
            }
            let counter = self.counter;
            self.counter = self.counter.wrapping_add(1);
            if self.own_recent.len() >= 16 {
                self.own_recent.remove(0);
            }
            self.own_recent.push(counter);
            let auth = match &self.keys[i] {
                IfaceKeys::Sha1(k) => AuthData::Sha1(k.digest(counter)),
                IfaceKeys::Sha256(keys) => {
                    let AuthParams::Sha256 { send_key, .. } = self.params.auth else {
                        continue;
                    };
                    let Some((_, k)) = keys.iter().find(|(id, _)| *id == send_key) else {
                        continue;
                    };
                    let signed = Sha256Signed {
                        vhid: self.params.vhid,
                        advskew,
                        advbase,
                        key_id: send_key,
                        counter,
                        src: p.unit_addr,
                    };
                    AuthData::Sha256 { key_id: send_key, digest: k.digest(&signed) }
                }
            };
            let advert = Advert { vhid: self.params.vhid, advskew, advbase, counter, auth };
            self.actions.push_back(Action::SendAdvert {
                iface: i,
                dst: p.advert_destination(),
                payload: advert.to_bytes(),
            });
            self.ifaces[i].sent += 1;
            self.adverts_sent += 1;
        }
    }

    fn send_peer_status(&mut self, now: Time) {
        let mut flags = 0;
        // Ready to be handed the role: its state synced and healthy (R4,
        // E16), and able to take it (a takeover service following, no
        // checked link down). A unit whose takeover is being restarted is
        // not handed the role, to hold nothing until the handover times out.
        if self.ready && self.may_become_active() {
            flags |= peer::FLAG_READY;
        }
        if self.params.auth.no_password() {
            flags |= peer::FLAG_NO_PASSWORD;
        }
        if self.heard.is_some_and(|h| now.since(h.at) < self.down_interval()) {
            flags |= peer::FLAG_HEARS_ADVERTS;
        }
        if self.witness.is_some() {
            flags |= peer::FLAG_WITNESS;
        }
        if self.leaving {
            flags |= peer::FLAG_LEAVING;
        }
        let health = self.health.summary();
        if health.demoted {
            flags |= peer::FLAG_UNHEALTHY;
        }
        let failing = u8::try_from(health.failing).unwrap_or(u8::MAX);
        let penalty = health.penalty;
        // E14: the promise not to take over before the down timer fires.
        let hold = match (self.role, self.down_deadline) {
            (Role::Standby | Role::Init, Some(d)) => u32::try_from(d.since(now).as_millis()).unwrap_or(u32::MAX),
            _ => 0,
        };
        for i in 0..self.params.interfaces.len() {
            let p = &self.params.interfaces[i];
            let Some(dst) = p.partner_addr else { continue };
            if !p.ha_check || !self.ifaces[i].link_up {
                continue;
            }
            self.peer_counter += 1;
            let s = PeerStatus {
                mode: self.params.mode.code(),
                role: self.role.code(),
                vhid: self.params.vhid,
                flags,
                counter: self.peer_counter,
                generation: self.generation,
                hold_ms: hold,
                failing,
                penalty,
            };
            self.actions.push_back(Action::SendPeerStatus {
                iface: i,
                dst,
                payload: s.emit(&self.peer_key, p.unit_addr),
            });
        }
    }

    fn count_foreign(&mut self, now: Time, vhid: u8, src: Ipv4Addr) {
        if !self.foreign.contains_key(&(vhid, src))
            && self.foreign.len() >= MAX_FOREIGN
            && let Some(oldest) = self.foreign.iter().min_by_key(|(_, f)| f.last_seen).map(|(k, _)| *k)
        {
            self.foreign.remove(&oldest);
        }
        let f = self.foreign.entry((vhid, src)).or_insert(Foreign { count: 0, last_seen: now });
        f.count += 1;
        f.last_seen = now;
    }

    fn log(&mut self, n: Notice) {
        self.actions.push_back(Action::Log(n));
    }

    fn squares(&self, now: Time) -> ((Square, String), (Square, String)) {
        if self.params.mode == HaMode::NonHa {
            return ((Square::NotSetUp, "non-HA mode".into()), (Square::NotSetUp, "non-HA mode".into()));
        }
        if let Some(p) = self.same_mode {
            let why = format!("both units in HA mode {} (partner {p})", self.params.mode.as_str());
            return ((Square::Indeterminate, why.clone()), (Square::Indeterminate, why));
        }
        let recent_aa = self.last_active_active.is_some_and(|t| now.since(t) < self.params.interval() * 3)
            || (self.blind_active.is_some() && self.role.advertises());
        let fallback = self.witness.as_ref().is_some_and(|w| w.fallback(now));
        let reason = if fallback {
            format!("{}; witness unreachable: plain CARP", self.role_reason)
        } else {
            self.role_reason.clone()
        };
        let local = match self.role {
            _ if recent_aa => (Square::Indeterminate, "both units active".into()),
            Role::Init => (Square::Updating, reason),
            Role::Standby => (Square::Standby, reason),
            Role::Active | Role::Stopping => (Square::Active, reason),
            Role::Pacified => (Square::Pacified, reason),
        };
        let partner = match self.reported {
            Some(r) if now.since(r.at) < PEER_STATUS_STALE => {
                if r.status.mode == HaMode::NonHa.code() {
                    (Square::NotSetUp, format!("partner {} is in non-HA mode", r.addr))
                } else {
                    match Role::from_code(r.status.role) {
                        Some(Role::Active | Role::Stopping) if recent_aa => {
                            (Square::Indeterminate, "both units active".into())
                        }
                        Some(Role::Active | Role::Stopping)
                            if self.heard.is_none_or(|h| now.since(h.at) >= h.interval * 3) =>
                        {
                            (Square::Unreachable, format!("partner {} reported active but sends no adverts", r.addr))
                        }
                        Some(Role::Active | Role::Stopping) => {
                            (Square::Active, format!("partner {} is active", r.addr))
                        }
                        Some(Role::Standby) => (Square::Standby, format!("partner {} is standby", r.addr)),
                        Some(Role::Init) => (Square::Updating, format!("partner {} is starting", r.addr)),
                        Some(Role::Pacified) => (Square::Pacified, format!("partner {} is pacified", r.addr)),
                        None => (Square::Indeterminate, format!("partner {} reports an unknown role", r.addr)),
                    }
                }
            }
            _ => match self.heard {
                Some(h) if now.since(h.at) < h.interval * 3 => (Square::Active, format!("adverts from {}", h.addr)),
                _ => (Square::Unreachable, "partner not heard".into()),
            },
        };
        (local, partner)
    }
}

fn build_keys(p: &Params) -> Vec<IfaceKeys> {
    p.interfaces
        .iter()
        .map(|i| match &p.auth {
            AuthParams::Ucarp { password } => IfaceKeys::Sha1(Sha1Key::new(password, p.vhid, i.shared)),
            AuthParams::Sha256 { keys, .. } => {
                IfaceKeys::Sha256(keys.iter().map(|(id, s)| (*id, Sha256Key::new(s, i.shared))).collect())
            }
        })
        .collect()
}

/// The CARP payload length a given auth mode produces.
pub fn advert_len(auth: &AuthParams) -> usize {
    match auth {
        AuthParams::Ucarp { .. } => carp::LEN_SHA1,
        AuthParams::Sha256 { .. } => carp::LEN_SHA256,
    }
}
