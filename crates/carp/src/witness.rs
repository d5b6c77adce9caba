//! The witness (E14): an etcd key on a lease that breaks the tie when the
//! two units of a layer-2 pair cannot hear each other. This module is the
//! rule, pure: the witness's state as the adapter reported it and the time
//! go in, a decision comes out. The election core ([`crate::machine`])
//! asks it at its decision points; the adapter (`duet-witness`) talks to
//! etcd and never decides anything.
//!
//! # The key
//!
//! `<prefix>witness` holds the name of the unit that holds the witness,
//! attached to that unit's lease. Every unit keeps a lease of its own alive
//! (TTL `ha.witness_lease_ttl_ms`), so taking the key costs one
//! transaction, never a lease grant. The active *beats*: with every advert
//! round it puts the key again if it still names this unit with this
//! lease, which moves the key's `mod_revision`. Each unit watches the key.
//!
//! # The rules
//!
//! While the units hear each other CARP decides; the witness is only kept
//! current: a unit that becomes active by CARP (preemption, a partner's
//! resign, a handover) takes the role first and acquires the key after;
//! a unit that leaves the active role releases the key (deletes it if it
//! names this unit). In a planned handover the key is released *before*
//! the resigning advert, so the partner finds it free at once.
//!
//! 1. **Taking over from a silent partner** ([`Witness::judge_silent_partner`]:
//!    the down timer fired, or the initial wait ended with nobody heard).
//!    The unit takes over only once it has *acquired* the key:
//!    - the key is absent (released, or its holder's lease expired): a
//!      transaction creates it if it still does not exist;
//!    - it names this unit (an earlier session): a transaction on its
//!      `mod_revision` puts it on the current lease;
//!    - it names the partner and no beat has been seen for `W` (this unit's
//!      down interval), counted from when this unit *saw* the last beat: a
//!      transaction puts it if its `mod_revision` is still the one last seen
//!      (fencing: if the holder beat meanwhile, the transaction fails);
//!    - it names the partner and beats were seen within `W`: the partner is
//!      alive behind a partition; the unit stays standby (said once) and
//!      looks again when the beats have been silent for `W`.
//!
//!    When etcd has not answered this unit for the lease TTL (nothing
//!    acknowledged: no keepalive, no read), policy `prefer` *falls back* to
//!    plain CARP and takes over without the key (loudly: a warning in the
//!    status, the square's detail and the log); policy `required` never
//!    takes over without the key.
//!
//! 2. **Keeping the active role** ([`Witness::judge_active`]). An active unit
//!    steps down when both
//!    - it has no *confirmation*: the last beat (or acquire) etcd
//!      acknowledged was *sent* more than `D` ago by this unit's monotonic
//!      clock (counted from when it became active if that is later), or its
//!      lease may run out (last acknowledged keepalive sent + TTL − `M`); and
//!    - the partner does not *promise* to stay away: its peer-status
//!      datagram carries how long its own down timer still has to run
//!      (`hold_ms`, 0 when none runs); the promise holds until receipt +
//!      `hold_ms` − `M`.
//!
//!    `D = min(ha_timeout, lease TTL) − M`, `M = max(min(ha_timeout, lease
//!    TTL) / 4, 20 ms)` (standard profile, 3 s timeout, 3 s TTL: `D` =
//!    2.25 s; fast profile, 20 ms adverts x 4: `D` ≈ 70 ms). The partner's
//!    `W` is at least `ha_timeout`, so `D < W − M`.
//!    An active unit that is in fallback (`prefer`, etcd silent for the
//!    TTL) keeps the role as plain CARP would.
//!
//! 3. **Healing**: an active unit that sees the partner beat (a new
//!    `mod_revision` by the partner, seen after this unit became active)
//!    while it hears none of the partner's adverts steps down: both were
//!    active (etcd was out of reach) and the holder stays.
//!
//! 4. An active unit that does not hold the key acquires it as in rule 1
//!    (absent, its own, or the partner's beats silent for `W`).
//!
//! # Why the old active always yields first
//!
//! Let `s` be the send time of the active's last beat etcd acknowledged
//! (its clock). A standby that takes the key from it compares the key's
//! `mod_revision` with the one of the last beat `k` it saw, so its
//! transaction succeeds only if no beat was applied after `k`. Beat `k`
//! was sent at `s_k ≥ s` (it is the last applied one, the acknowledged `s`
//! is one of them or earlier), applied at `c_k ≥ s_k` and seen at
//! `o_k ≥ c_k`; the standby tries no earlier than `o_k + W ≥ s + W`. The
//! active stepped down at `s + D` at the latest, `D ≤ ha_timeout − M ≤
//! W − M`, or at the end of its partner's promise, which ends `M` before
//! the partner's down timer could fire. The key can also vanish with the
//! holder's lease, no sooner than the send time of its last acknowledged
//! keepalive + TTL; the holder steps down `M` before that. So the old
//! active has yielded at least `M` before anyone else may hold the key.
//!
//! Assumptions: monotonic clocks on both units whose rates differ by far
//! less than `M / W` (any quartz clock, NTP or not: 10⁻⁴ at worst); no
//! synchronised wall clocks; a peer-status datagram is delivered within a
//! few milliseconds (a LAN) or lost; etcd's reads and transactions are
//! linearizable (its default). `M` covers the old active's address
//! removal (milliseconds) and the datagram's delivery.
//!
//! Over 600 lines: the whole rule and its reasoning (bounds, clocks, fencing
//! order) in one module, with its unit tests; the scenarios are in the
//! simulator's tests.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Time;

/// What a unit does about taking over when etcd cannot be reached (E14),
/// in the unit file's words (`prefer`, `required`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WitnessPolicy {
    /// Fall back to plain CARP once etcd has been out of reach for the
    /// lease TTL (availability first; a partition then may leave two
    /// actives, as without a witness). The default.
    #[default]
    Prefer,
    /// Never take over from a silent partner without the key (one active
    /// at most; none while etcd and the partner are both out of reach).
    Required,
}

impl WitnessPolicy {
    /// `prefer` or `required`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prefer => "prefer",
            Self::Required => "required",
        }
    }
}

/// The witness as the election runs with it: the pair's policy and lease
/// TTL (equal on both units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WitnessParams {
    pub policy: WitnessPolicy,
    /// The TTL asked for the lease (etcd counts whole seconds).
    pub lease_ttl: Duration,
}

/// The smallest margin `M`.
const MIN_MARGIN: Duration = Duration::from_millis(20);
/// A request the adapter has not answered for this long is forgotten (the
/// adapter bounds every call well below it; this is a backstop).
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(5);

impl WitnessParams {
    fn base(&self, ha_timeout: Duration) -> Duration {
        ha_timeout.min(self.lease_ttl)
    }

    /// `M`: the margin between the old active yielding and the earliest
    /// moment the partner could hold the key.
    pub fn margin(&self, ha_timeout: Duration) -> Duration {
        (self.base(ha_timeout) / 4).max(MIN_MARGIN)
    }

    /// `D`: how long an active unit that hears no promise from its partner
    /// stays active without an acknowledged beat.
    pub fn yield_after(&self, ha_timeout: Duration) -> Duration {
        self.base(ha_timeout).saturating_sub(self.margin(ha_timeout))
    }
}

/// Whom a held key names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    /// This unit on its current lease: it holds the witness.
    This,
    /// This unit on another lease (an earlier session of this unit).
    ThisStale,
    /// Another unit (the partner), by the name it wrote.
    Other(String),
}

/// The key as the adapter read it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyState {
    Absent,
    Held { holder: Holder, mod_revision: i64 },
}

impl KeyState {
    fn names_this_unit(&self) -> bool {
        matches!(self, Self::Held { holder: Holder::This | Holder::ThisStale, .. })
    }
}

/// What an acquire transaction compares before it puts the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expect {
    /// The key does not exist.
    Absent,
    /// The key's `mod_revision` is this one (no beat since).
    ModRevision(i64),
}

/// What the core asks of the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WitnessRequest {
    /// Put the key again if it names this unit on its current lease.
    Beat,
    /// Put the key, naming this unit on its current lease, if it is as expected.
    Acquire(Expect),
    /// Delete the key if it names this unit.
    Release,
}

/// A request's kind, for reports and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    Beat,
    Acquire,
    Release,
}

impl WitnessRequest {
    pub fn kind(&self) -> RequestKind {
        match self {
            Self::Beat => RequestKind::Beat,
            Self::Acquire(_) => RequestKind::Acquire,
            Self::Release => RequestKind::Release,
        }
    }
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Beat => "beat",
            Self::Acquire => "acquire",
            Self::Release => "release",
        }
    }
}

/// What the adapter reports. Times are when the request was *sent*: on the
/// driver's clock for the core (`T` = [`Time`]); the adapter reports its
/// `Instant`s and the driver maps them ([`map_time`](Self::map_time)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WitnessEvent<T = Time> {
    /// The key as read, at store revision `revision` (a watch event, or a
    /// read after a (re)connect).
    Observed { key: KeyState, revision: i64 },
    /// The lease was granted or kept alive by a request sent at `sent`;
    /// `ttl` is what etcd said is left.
    LeaseKept { sent: T, ttl: Duration },
    /// The lease is gone (expired or not found); the adapter grants a new one.
    LeaseLost,
    /// A beat sent at `sent` was applied; the key has `mod_revision` now.
    BeatAcked { sent: T, mod_revision: i64 },
    /// An acquire sent at `sent` was applied.
    Acquired { sent: T, mod_revision: i64 },
    /// A beat or an acquire found the key otherwise: `key` as read in the
    /// same transaction, at store revision `revision`.
    Refused { request: RequestKind, key: KeyState, revision: i64 },
    /// The key no longer names this unit (deleted, or it named another).
    Released,
    /// A request (or, `None`, the session) failed; `error` for the status.
    Failed { request: Option<RequestKind>, error: String },
}

impl<T> WitnessEvent<T> {
    /// The same event with its send time mapped by `f`.
    pub fn map_time<U>(self, f: impl FnOnce(T) -> U) -> WitnessEvent<U> {
        match self {
            Self::Observed { key, revision } => WitnessEvent::Observed { key, revision },
            Self::LeaseKept { sent, ttl } => WitnessEvent::LeaseKept { sent: f(sent), ttl },
            Self::LeaseLost => WitnessEvent::LeaseLost,
            Self::BeatAcked { sent, mod_revision } => WitnessEvent::BeatAcked { sent: f(sent), mod_revision },
            Self::Acquired { sent, mod_revision } => WitnessEvent::Acquired { sent: f(sent), mod_revision },
            Self::Refused { request, key, revision } => WitnessEvent::Refused { request, key, revision },
            Self::Released => WitnessEvent::Released,
            Self::Failed { request, error } => WitnessEvent::Failed { request, error },
        }
    }
}

/// Why the witness decided what it did: counted and shown per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Took over with the key, which was absent.
    AcquiredAbsent,
    /// Took over with the key, which named this unit.
    AcquiredOwn,
    /// Took over with the key after the partner's beats stopped for `W`.
    AcquiredStale,
    /// Stayed standby: the partner beats (alive behind a partition).
    PartnerAlive,
    /// Took over without the key: etcd out of reach, policy prefer.
    Fallback,
    /// Did not take over: etcd out of reach, policy required.
    Held,
    /// Stepped down: no confirmation and no promise from the partner.
    SteppedDownUnconfirmed,
    /// Stepped down: the partner holds the key and beats (healing).
    SteppedDownPartnerHolds,
}

impl Decision {
    pub const ALL: [Self; 8] = [
        Self::AcquiredAbsent,
        Self::AcquiredOwn,
        Self::AcquiredStale,
        Self::PartnerAlive,
        Self::Fallback,
        Self::Held,
        Self::SteppedDownUnconfirmed,
        Self::SteppedDownPartnerHolds,
    ];

    /// Stable name (metrics, status).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AcquiredAbsent => "acquired_absent",
            Self::AcquiredOwn => "acquired_own",
            Self::AcquiredStale => "acquired_stale",
            Self::PartnerAlive => "partner_alive",
            Self::Fallback => "fallback",
            Self::Held => "held",
            Self::SteppedDownUnconfirmed => "stepped_down_unconfirmed",
            Self::SteppedDownPartnerHolds => "stepped_down_partner_holds",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|d| *d == self).unwrap_or(0)
    }
}

/// The judgement on a silent partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Takeover {
    /// Take over now without the key (fallback: etcd out of reach, prefer).
    Fallback { unreachable_for: Duration },
    /// Acquire the key; take over once it is acquired.
    Acquire(Expect),
    /// Not now. Look again at `recheck` (if any) or when the witness says
    /// something new.
    Wait { recheck: Option<Time>, why: Waiting },
}

/// Why a takeover waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// The partner holds the key and beat `since_beat` ago.
    PartnerBeats { partner: String, since_beat: Duration },
    /// etcd out of reach (or not read yet) for `for_`; policy `required`, or
    /// `prefer` before the lease TTL has passed.
    Unreachable { for_: Duration, policy: WitnessPolicy },
    /// A request to etcd is under way.
    Pending,
}

/// What an active unit knows besides the witness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveView {
    /// When the unit became active.
    pub since: Time,
    /// `W`: this unit's down interval (the partner's beats are stale after it).
    pub wait: Duration,
    /// The HA timeout (`D` and `M` follow from it).
    pub ha_timeout: Duration,
    /// Until when the partner promised not to take over (receipt of its
    /// peer status + its `hold_ms`), if it did.
    pub partner_promise: Option<Time>,
    /// Whether the partner's adverts were heard within the down interval
    /// (then CARP settles an active-active by itself).
    pub partner_adverts_heard: bool,
}

/// The judgement on an active unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveVerdict {
    /// Stay active; judge again at `recheck` (if any) or on news.
    Keep { recheck: Option<Time> },
    /// Stay active and acquire the key.
    Acquire(Expect),
    /// Step down.
    StepDown(StepDown),
}

/// Why an active unit steps down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepDown {
    /// No confirmation from etcd for `unconfirmed_for`, and no promise
    /// from the partner.
    Unconfirmed { unconfirmed_for: Duration },
    /// The partner holds the key and beats.
    PartnerHolds { partner: String },
}

/// The key as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    key: KeyState,
    /// The store revision it was read at (older reads are ignored).
    revision: i64,
    /// When this unit first saw this holder at this `mod_revision` (for the
    /// partner's key: its last beat as seen here).
    since: Time,
}

/// The witness's state in the core, as the adapter reported it.
#[derive(Debug, Clone)]
pub struct Witness {
    params: WitnessParams,
    /// When the unit started (etcd's silence counts from here until it answers).
    started: Time,
    /// The last answer of etcd of any kind.
    last_ok: Option<Time>,
    last_error: Option<(Time, String)>,
    seen: Option<Seen>,
    /// Send time of the last beat or acquire etcd applied.
    confirmed: Option<Time>,
    /// Send time of the last lease grant or keepalive etcd answered, and the TTL it gave.
    lease: Option<(Time, Duration)>,
    /// A request under way and when it was asked.
    pending: Option<(RequestKind, Time)>,
    /// When etcd answered again after a fallback (`prefer`).
    rejoined: Option<Time>,
    decisions: [u64; Decision::ALL.len()],
    beats_sent: u64,
    beats_acked: u64,
    failures: u64,
}

/// A snapshot of the witness for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessView {
    pub policy: WitnessPolicy,
    pub lease_ttl: Duration,
    /// etcd answered within the lease TTL.
    pub reachable: bool,
    /// How long since etcd last answered (`None`: never).
    pub since_ok: Option<Duration>,
    /// `prefer` and etcd out of reach for the TTL: a silent partner is
    /// replaced by plain CARP.
    pub fallback: bool,
    /// The key as last seen (`None`: not read yet).
    pub key: Option<KeyState>,
    /// How long since the holder's last beat as seen here.
    pub since_beat: Option<Duration>,
    /// This unit's lease: time left (as of its last keepalive) and TTL.
    pub lease_left: Option<Duration>,
    pub lease_granted_ttl: Option<Duration>,
    pub last_error: Option<(Time, String)>,
    pub beats_sent: u64,
    pub beats_acked: u64,
    pub failures: u64,
    pub decisions: Vec<(Decision, u64)>,
}

impl Witness {
    /// A witness with nothing heard from etcd yet, at `now`.
    pub fn new(params: WitnessParams, now: Time) -> Self {
        Self {
            params,
            started: now,
            last_ok: None,
            last_error: None,
            seen: None,
            confirmed: None,
            lease: None,
            pending: None,
            rejoined: None,
            decisions: [0; Decision::ALL.len()],
            beats_sent: 0,
            beats_acked: 0,
            failures: 0,
        }
    }

    /// New pair settings (policy, TTL); the state stays.
    pub fn set_params(&mut self, params: WitnessParams) {
        self.params = params;
    }

    pub fn params(&self) -> WitnessParams {
        self.params
    }

    // ----- inputs -------------------------------------------------------

    /// Takes in what the adapter reported at `now`.
    pub fn handle(&mut self, now: Time, ev: &WitnessEvent) {
        match ev {
            WitnessEvent::Failed { request, error } => {
                self.failures += 1;
                self.last_error = Some((now, error.clone()));
                if request.is_some() && self.pending.is_some_and(|(k, _)| Some(k) == *request) {
                    self.pending = None;
                }
                return;
            }
            WitnessEvent::LeaseLost => {
                self.lease = None;
                self.confirmed = None;
                // Whatever this unit held went with the lease.
                if let Some(s) = &mut self.seen
                    && let KeyState::Held { holder: h @ Holder::This, .. } = &mut s.key
                {
                    *h = Holder::ThisStale;
                }
                return;
            }
            _ => {}
        }
        if self.fallback(now) {
            // Back from plain CARP: an active unit gets `D` from now to
            // take the key (or to see the partner hold it) before rule 2.
            self.rejoined = Some(now);
        }
        self.last_ok = Some(now);
        match ev {
            WitnessEvent::Observed { key, revision } => self.observe(now, key.clone(), *revision),
            WitnessEvent::LeaseKept { sent, ttl } => {
                self.lease = Some((*sent, *ttl));
            }
            WitnessEvent::BeatAcked { sent, mod_revision } => {
                self.beats_acked += 1;
                self.confirm(*sent);
                self.observe(now, KeyState::Held { holder: Holder::This, mod_revision: *mod_revision }, *mod_revision);
            }
            WitnessEvent::Acquired { sent, mod_revision } => {
                self.pending = None;
                self.confirm(*sent);
                self.observe(now, KeyState::Held { holder: Holder::This, mod_revision: *mod_revision }, *mod_revision);
            }
            WitnessEvent::Refused { request, key, revision } => {
                if self.pending.is_some_and(|(k, _)| k == *request) {
                    self.pending = None;
                }
                self.observe(now, key.clone(), *revision);
            }
            WitnessEvent::Released => {
                if self.pending.is_some_and(|(k, _)| k == RequestKind::Release) {
                    self.pending = None;
                }
                if self.seen.as_ref().is_some_and(|s| s.key.names_this_unit()) {
                    // Until the watch says what is there now.
                    let revision = self.seen.as_ref().map_or(0, |s| s.revision);
                    self.seen = Some(Seen { key: KeyState::Absent, revision, since: now });
                }
                self.confirmed = None;
            }
            WitnessEvent::Failed { .. } | WitnessEvent::LeaseLost => {}
        }
    }

    fn confirm(&mut self, sent: Time) {
        self.confirmed = Some(self.confirmed.map_or(sent, |c| c.max(sent)));
    }

    fn observe(&mut self, now: Time, key: KeyState, revision: i64) {
        if let Some(s) = &self.seen {
            if revision < s.revision {
                return;
            }
            if s.key == key {
                // The same holder at the same mod_revision: nothing moved.
                self.seen = Some(Seen { revision, ..s.clone() });
                return;
            }
        }
        self.seen = Some(Seen { key, revision, since: now });
    }

    /// The core sends `req` at `now`.
    pub fn asked(&mut self, now: Time, req: WitnessRequest) {
        match req {
            WitnessRequest::Beat => self.beats_sent += 1,
            WitnessRequest::Acquire(_) | WitnessRequest::Release => self.pending = Some((req.kind(), now)),
        }
    }

    /// The core sends a beat.
    pub fn beat(&mut self) {
        self.beats_sent += 1;
    }

    /// Counts a decision.
    pub fn decided(&mut self, d: Decision) {
        self.decisions[d.index()] += 1;
    }

    // ----- questions ----------------------------------------------------

    /// Whether an acquire or release is under way (a stale one, older than
    /// [`PENDING_TIMEOUT`], is not).
    pub fn pending(&self, now: Time) -> bool {
        self.pending.is_some_and(|(_, at)| now.since(at) < PENDING_TIMEOUT)
    }

    /// Whether this unit holds the key (on its current lease).
    pub fn holds(&self) -> bool {
        self.seen.as_ref().is_some_and(|s| matches!(s.key, KeyState::Held { holder: Holder::This, .. }))
    }

    /// Whether the key names this unit, on any lease.
    pub fn names_this_unit(&self) -> bool {
        self.seen.as_ref().is_some_and(|s| s.key.names_this_unit())
    }

    /// How long etcd has been silent: since its last answer, or since the
    /// start if it never answered.
    fn silent_for(&self, now: Time) -> Duration {
        now.since(self.last_ok.unwrap_or(self.started))
    }

    /// etcd answered within the lease TTL.
    pub fn reachable(&self, now: Time) -> bool {
        self.last_ok.is_some() && self.silent_for(now) < self.params.lease_ttl
    }

    /// `prefer`, and etcd silent for the lease TTL.
    pub fn fallback(&self, now: Time) -> bool {
        self.params.policy == WitnessPolicy::Prefer && self.silent_for(now) >= self.params.lease_ttl
    }

    /// When a unit out of reach of etcd falls back (`prefer`).
    fn fallback_at(&self) -> Option<Time> {
        (self.params.policy == WitnessPolicy::Prefer)
            .then(|| self.last_ok.unwrap_or(self.started) + self.params.lease_ttl)
    }

    /// Rule 1: the partner is silent (down timer, or the initial wait);
    /// `wait` is `W`, this unit's down interval.
    pub fn judge_silent_partner(&self, now: Time, wait: Duration) -> Takeover {
        if self.pending(now) {
            return Takeover::Wait { recheck: None, why: Waiting::Pending };
        }
        let seen = match &self.seen {
            Some(s) if self.reachable(now) => s,
            _ if self.fallback(now) => return Takeover::Fallback { unreachable_for: self.silent_for(now) },
            _ => {
                return Takeover::Wait {
                    recheck: self.fallback_at(),
                    why: Waiting::Unreachable { for_: self.silent_for(now), policy: self.params.policy },
                };
            }
        };
        match &seen.key {
            KeyState::Absent => Takeover::Acquire(Expect::Absent),
            KeyState::Held { holder: Holder::This | Holder::ThisStale, mod_revision } => {
                Takeover::Acquire(Expect::ModRevision(*mod_revision))
            }
            KeyState::Held { holder: Holder::Other(partner), mod_revision } => {
                let since_beat = now.since(seen.since);
                if since_beat >= wait {
                    Takeover::Acquire(Expect::ModRevision(*mod_revision))
                } else {
                    // Fresh beats: alive behind a partition. Look again when
                    // they have been silent for W, or sooner on news.
                    Takeover::Wait {
                        recheck: Some(seen.since + wait),
                        why: Waiting::PartnerBeats { partner: partner.clone(), since_beat },
                    }
                }
            }
        }
    }

    /// Since when an active unit counts its confirmation: its last
    /// acknowledged beat or acquire, when it became active, or when etcd
    /// answered again after a fallback, whichever is latest.
    fn confirmed_from(&self, a: &ActiveView) -> Time {
        [self.confirmed, Some(a.since), self.rejoined].into_iter().flatten().max().unwrap_or(a.since)
    }

    /// Until when an active unit is confirmed by etcd (rule 2): `D` after
    /// [`confirmed_from`](Self::confirmed_from), and, while it holds the
    /// key, `M` before its lease could run out.
    fn confirmed_until(&self, a: &ActiveView) -> Time {
        let d = self.params.yield_after(a.ha_timeout);
        let from = self.confirmed_from(a);
        let mut until = from + d;
        if self.holds()
            && let Some((sent, ttl)) = self.lease
        {
            until = until.min(sent + ttl.saturating_sub(self.params.margin(a.ha_timeout)));
        }
        until
    }

    /// Rules 2-4 for an active unit at `now`.
    pub fn judge_active(&self, now: Time, a: &ActiveView) -> ActiveVerdict {
        match self.judge_active_at(now, a) {
            // Only moments to come are worth a look.
            ActiveVerdict::Keep { recheck } => ActiveVerdict::Keep { recheck: recheck.filter(|t| *t > now) },
            v => v,
        }
    }

    fn judge_active_at(&self, now: Time, a: &ActiveView) -> ActiveVerdict {
        let fallback = self.fallback(now);
        // Rule 2 (not in fallback: then the unit is plain CARP).
        let confirmed = self.confirmed_until(a);
        let promised = a.partner_promise.filter(|p| *p > now);
        if !fallback && now >= confirmed && promised.is_none() {
            let from = self.confirmed_from(a);
            return ActiveVerdict::StepDown(StepDown::Unconfirmed { unconfirmed_for: now.since(from) });
        }
        // The next moment rule 2 needs looking at.
        let recheck_confirm = (!fallback).then(|| confirmed.max(promised.unwrap_or(confirmed)));
        let Some(seen) = self.seen.as_ref().filter(|_| self.reachable(now)) else {
            return ActiveVerdict::Keep { recheck: [recheck_confirm, self.fallback_at()].into_iter().flatten().min() };
        };
        if self.pending(now) {
            return ActiveVerdict::Keep { recheck: recheck_confirm };
        }
        match &seen.key {
            KeyState::Held { holder: Holder::This, .. } => ActiveVerdict::Keep { recheck: recheck_confirm },
            KeyState::Absent => ActiveVerdict::Acquire(Expect::Absent),
            KeyState::Held { holder: Holder::ThisStale, mod_revision } => {
                ActiveVerdict::Acquire(Expect::ModRevision(*mod_revision))
            }
            KeyState::Held { holder: Holder::Other(partner), mod_revision } => {
                let since_beat = now.since(seen.since);
                // Rule 3: a beat of the partner seen since this unit became
                // active, and CARP cannot settle it (no adverts heard).
                if seen.since >= a.since && since_beat < a.wait && !a.partner_adverts_heard {
                    return ActiveVerdict::StepDown(StepDown::PartnerHolds { partner: partner.clone() });
                }
                if since_beat >= a.wait {
                    return ActiveVerdict::Acquire(Expect::ModRevision(*mod_revision));
                }
                let recheck = [recheck_confirm, Some(seen.since + a.wait)].into_iter().flatten().min();
                ActiveVerdict::Keep { recheck }
            }
        }
    }

    /// A snapshot for the status.
    pub fn view(&self, now: Time) -> WitnessView {
        WitnessView {
            policy: self.params.policy,
            lease_ttl: self.params.lease_ttl,
            reachable: self.reachable(now),
            since_ok: self.last_ok.map(|t| now.since(t)),
            fallback: self.fallback(now),
            key: self.seen.as_ref().map(|s| s.key.clone()),
            since_beat: self
                .seen
                .as_ref()
                .filter(|s| matches!(s.key, KeyState::Held { .. }))
                .map(|s| now.since(s.since)),
            lease_left: self.lease.map(|(sent, ttl)| ttl.saturating_sub(now.since(sent))),
            lease_granted_ttl: self.lease.map(|(_, ttl)| ttl),
            last_error: self.last_error.clone(),
            beats_sent: self.beats_sent,
            beats_acked: self.beats_acked,
            failures: self.failures,
            decisions: Decision::ALL.iter().map(|d| (*d, self.decisions[d.index()])).filter(|(_, n)| *n > 0).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);
    const TIMEOUT: Duration = Duration::from_secs(3);
    /// The standby's W (standard profile, 3 s, second unit's skew).
    const W: Duration = Duration::from_micros(3_003_906);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(n: u64) -> Time {
        Time::from_millis(n)
    }

    fn witness(policy: WitnessPolicy) -> Witness {
        Witness::new(WitnessParams { policy, lease_ttl: TTL }, Time::ZERO)
    }

    fn partner(rev: i64) -> KeyState {
        KeyState::Held { holder: Holder::Other("lb1".into()), mod_revision: rev }
    }

    fn mine(rev: i64) -> KeyState {
        KeyState::Held { holder: Holder::This, mod_revision: rev }
    }

    fn seen(w: &mut Witness, t: Time, key: KeyState, revision: i64) {
        w.handle(t, &WitnessEvent::Observed { key, revision });
    }

    fn keepalive(w: &mut Witness, t: Time) {
        w.handle(t, &WitnessEvent::LeaseKept { sent: t, ttl: TTL });
    }

    fn view(since: Time) -> ActiveView {
        ActiveView { since, wait: W, ha_timeout: TIMEOUT, partner_promise: None, partner_adverts_heard: false }
    }

    #[test]
    fn d_and_m_follow_from_the_timeout_and_the_ttl() {
        let p = WitnessParams { policy: WitnessPolicy::Prefer, lease_ttl: TTL };
        assert_eq!((p.margin(TIMEOUT), p.yield_after(TIMEOUT)), (ms(750), ms(2250)));
        // A shorter TTL shortens D: the key could vanish with the lease.
        let short = WitnessParams { lease_ttl: Duration::from_secs(2), ..p };
        assert_eq!(short.yield_after(Duration::from_secs(9)), ms(1500));
        // The fast profile: 4 x 23.4 ms.
        let fast = Duration::from_micros(93_750);
        assert_eq!(p.yield_after(fast), Duration::from_nanos(70_312_500));
        assert!(p.yield_after(fast) + p.margin(fast) <= fast, "D + M never exceeds the partner's W");
    }

    #[test]
    fn a_silent_partner_is_replaced_only_with_the_key() {
        let mut w = witness(WitnessPolicy::Required);
        keepalive(&mut w, at(10));
        seen(&mut w, at(10), KeyState::Absent, 5);
        assert_eq!(w.judge_silent_partner(at(20), W), Takeover::Acquire(Expect::Absent));
        seen(&mut w, at(30), KeyState::Held { holder: Holder::ThisStale, mod_revision: 6 }, 6);
        assert_eq!(w.judge_silent_partner(at(40), W), Takeover::Acquire(Expect::ModRevision(6)));
        // The partner's key, beat last seen at 1000 ms.
        seen(&mut w, at(1000), partner(7), 7);
        let Takeover::Wait { recheck, why: Waiting::PartnerBeats { partner: name, since_beat } } =
            w.judge_silent_partner(at(2000), W)
        else {
            panic!("fresh beats: wait")
        };
        assert_eq!((recheck, name.as_str(), since_beat), (Some(at(1000) + W), "lb1", ms(1000)));
        // The same revision read again (a reconnect) is no beat.
        keepalive(&mut w, at(3000));
        seen(&mut w, at(3000), partner(7), 8);
        assert!(matches!(w.judge_silent_partner(at(3000), W), Takeover::Wait { .. }));
        assert_eq!(w.judge_silent_partner(at(1000) + W, W), Takeover::Acquire(Expect::ModRevision(7)));
        // A read from before what is known changes nothing.
        seen(&mut w, at(3100), KeyState::Absent, 4);
        assert_eq!(w.view(at(3100)).key, Some(partner(7)));
    }

    #[test]
    fn one_request_at_a_time() {
        let mut w = witness(WitnessPolicy::Prefer);
        keepalive(&mut w, at(10));
        seen(&mut w, at(10), KeyState::Absent, 5);
        w.asked(at(20), WitnessRequest::Acquire(Expect::Absent));
        assert_eq!(w.judge_silent_partner(at(30), W), Takeover::Wait { recheck: None, why: Waiting::Pending });
        // Refused: someone was quicker; the key as read comes with it.
        w.handle(at(40), &WitnessEvent::Refused { request: RequestKind::Acquire, key: partner(6), revision: 6 });
        assert!(matches!(w.judge_silent_partner(at(50), W), Takeover::Wait { why: Waiting::PartnerBeats { .. }, .. }));
        // A request the adapter never answered does not block for ever.
        w.asked(at(100), WitnessRequest::Release);
        assert!(w.pending(at(100) + PENDING_TIMEOUT - ms(1)));
        assert!(!w.pending(at(100) + PENDING_TIMEOUT));
    }

    #[test]
    fn out_of_reach_prefer_falls_back_after_the_ttl_and_required_holds() {
        for policy in [WitnessPolicy::Prefer, WitnessPolicy::Required] {
            let mut w = witness(policy);
            keepalive(&mut w, at(1000));
            seen(&mut w, at(1000), partner(7), 7);
            w.handle(at(1500), &WitnessEvent::Failed { request: None, error: "connection refused".into() });
            // Within the TTL: the partner's fresh beats as last known.
            assert!(matches!(w.judge_silent_partner(at(2000), W), Takeover::Wait { .. }));
            let later = at(1000) + TTL;
            match (policy, w.judge_silent_partner(later, W)) {
                (WitnessPolicy::Prefer, Takeover::Fallback { unreachable_for }) => assert_eq!(unreachable_for, TTL),
                (WitnessPolicy::Required, Takeover::Wait { recheck: None, why: Waiting::Unreachable { .. } }) => {}
                (p, t) => panic!("{p:?}: {t:?}"),
            }
            assert_eq!(w.fallback(later), policy == WitnessPolicy::Prefer);
            assert!(!w.reachable(later));
            assert_eq!(w.view(later).last_error.map(|e| e.1), Some("connection refused".into()));
        }
        // Never heard from etcd: counted from the start.
        let w = witness(WitnessPolicy::Prefer);
        assert_eq!(
            w.judge_silent_partner(at(100), W),
            Takeover::Wait {
                recheck: Some(Time::ZERO + TTL),
                why: Waiting::Unreachable { for_: ms(100), policy: WitnessPolicy::Prefer }
            }
        );
        assert!(matches!(w.judge_silent_partner(Time::ZERO + TTL, W), Takeover::Fallback { .. }));
    }

    #[test]
    fn an_active_unit_yields_d_after_its_last_acknowledged_beat_unless_the_partner_promises() {
        let mut w = witness(WitnessPolicy::Prefer);
        keepalive(&mut w, at(0));
        w.handle(at(2), &WitnessEvent::Acquired { sent: at(0), mod_revision: 10 });
        let a = view(at(0));
        assert_eq!(w.judge_active(at(100), &a), ActiveVerdict::Keep { recheck: Some(at(2250)) });
        // Beats every second; the last acknowledged one was sent at 4000.
        for s in [1000, 2000, 3000, 4000] {
            keepalive(&mut w, at(s));
            w.handle(at(s + 2), &WitnessEvent::BeatAcked { sent: at(s), mod_revision: 10 + s as i64 });
        }
        // The beat sent at 5000 is never acknowledged (etcd out of reach).
        assert!(matches!(w.judge_active(at(6249), &a), ActiveVerdict::Keep { .. }));
        assert_eq!(
            w.judge_active(at(6250), &a),
            ActiveVerdict::StepDown(StepDown::Unconfirmed { unconfirmed_for: ms(2250) })
        );
        // A partner that promises to stay away for a while keeps it active.
        let promised = ActiveView { partner_promise: Some(at(7000)), ..a };
        assert_eq!(w.judge_active(at(6500), &promised), ActiveVerdict::Keep { recheck: Some(at(7000)) });
        assert!(matches!(w.judge_active(at(7000), &promised), ActiveVerdict::StepDown(_)));
        // In fallback (prefer, etcd silent for the TTL) it is plain CARP.
        assert!(matches!(w.judge_active(at(4002) + TTL, &a), ActiveVerdict::Keep { .. }));
        let mut r = w.clone();
        r.set_params(WitnessParams { policy: WitnessPolicy::Required, lease_ttl: TTL });
        assert!(matches!(r.judge_active(at(4002) + TTL, &a), ActiveVerdict::StepDown(_)));
    }

    #[test]
    fn the_holder_yields_before_its_lease_could_run_out() {
        let mut w = witness(WitnessPolicy::Required);
        let short = WitnessParams { policy: WitnessPolicy::Required, lease_ttl: Duration::from_secs(2) };
        w.set_params(short);
        w.handle(at(0), &WitnessEvent::LeaseKept { sent: at(0), ttl: Duration::from_secs(2) });
        w.handle(at(1), &WitnessEvent::Acquired { sent: at(0), mod_revision: 3 });
        // Beats go on being acknowledged, keepalives do not.
        w.handle(at(1301), &WitnessEvent::BeatAcked { sent: at(1300), mod_revision: 4 });
        let a = ActiveView { ha_timeout: Duration::from_secs(9), ..view(at(0)) };
        // M = 500 ms: out at 2000 - 500, although the last beat was at 1300.
        assert!(matches!(w.judge_active(at(1499), &a), ActiveVerdict::Keep { .. }));
        assert!(matches!(w.judge_active(at(1500), &a), ActiveVerdict::StepDown(_)));
    }

    #[test]
    fn fencing_the_old_active_yields_strictly_before_the_standby_can_acquire() {
        // Both reach etcd until the active loses it right after a beat.
        // Every combination of when that beat was sent, applied and seen.
        for (sent, applied, seen_at) in [(0, 1, 2), (0, 40, 41), (0, 1, 500), (990, 995, 996)] {
            let mut active = witness(WitnessPolicy::Prefer);
            let mut standby = witness(WitnessPolicy::Prefer);
            keepalive(&mut active, at(sent));
            active.handle(at(applied), &WitnessEvent::Acquired { sent: at(sent), mod_revision: 20 });
            keepalive(&mut standby, at(seen_at));
            seen(&mut standby, at(seen_at), partner(20), 20);
            let a = view(Time::ZERO);
            let yielded =
                (0..20_000).map(at).find(|t| matches!(active.judge_active(*t, &a), ActiveVerdict::StepDown(_)));
            // The standby keeps its lease (etcd reachable to it) and asks
            // every millisecond.
            let acquired = (seen_at..20_000).map(at).find(|t| {
                if t.as_micros() % 500_000 == 0 {
                    keepalive(&mut standby, *t);
                }
                matches!(standby.judge_silent_partner(*t, W), Takeover::Acquire(_))
            });
            let (y, q) = (yielded.expect("yields"), acquired.expect("acquires"));
            assert!(y < q, "sent {sent} applied {applied} seen {seen_at}: yielded at {y:?}, acquire at {q:?}");
            assert!(q.since(y) >= ms(750), "the margin M");
        }
    }

    #[test]
    fn an_active_unit_acquires_what_it_may_and_steps_down_for_a_partner_that_beats() {
        let mut w = witness(WitnessPolicy::Prefer);
        keepalive(&mut w, at(0));
        // The partner held the key until a while ago (seen before this unit
        // became active at 5000 by CARP).
        seen(&mut w, at(100), partner(7), 7);
        keepalive(&mut w, at(4900));
        let a = view(at(5000));
        assert_eq!(w.judge_active(at(5000), &a), ActiveVerdict::Acquire(Expect::ModRevision(7)));
        // The partner is active too and beats again (etcd was out of reach):
        // heal, unless CARP hears its adverts.
        keepalive(&mut w, at(6000));
        seen(&mut w, at(6000), partner(9), 9);
        assert_eq!(
            w.judge_active(at(6001), &a),
            ActiveVerdict::StepDown(StepDown::PartnerHolds { partner: "lb1".into() })
        );
        let heard = ActiveView { partner_adverts_heard: true, ..a };
        assert!(matches!(w.judge_active(at(6001), &heard), ActiveVerdict::Keep { .. }));
        // A beat seen before it became active is no reason (in flight at
        // a preemption): it waits for W, then takes the key.
        let later = view(at(6500));
        assert!(matches!(w.judge_active(at(6600), &later), ActiveVerdict::Keep { .. }));
        // Its own key on an old lease, or no key: take it.
        seen(&mut w, at(7000), KeyState::Held { holder: Holder::ThisStale, mod_revision: 11 }, 11);
        assert_eq!(w.judge_active(at(7000), &later), ActiveVerdict::Acquire(Expect::ModRevision(11)));
        seen(&mut w, at(7100), KeyState::Absent, 12);
        assert_eq!(w.judge_active(at(7100), &later), ActiveVerdict::Acquire(Expect::Absent));
        w.handle(at(7200), &WitnessEvent::Acquired { sent: at(7100), mod_revision: 13 });
        assert!(w.holds());
        assert_eq!(w.view(at(7200)).key, Some(mine(13)));
        // Losing the lease loses the key.
        w.handle(at(7300), &WitnessEvent::LeaseLost);
        assert!(!w.holds() && w.names_this_unit());
    }
}
