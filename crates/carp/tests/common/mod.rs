//! An in-memory network of election cores driven by a virtual clock, with
//! latency, seeded loss and partitions. Packets are wrapped in a real IPv4
//! header (TTL 255) exactly as the kernel would send them. With a witness
//! (E14) the network also holds an in-memory etcd ([`Store`]): one key,
//! leases, conditional puts, a watch, and per-unit reachability.

#![allow(dead_code, unreachable_pub)]

use std::collections::BinaryHeap;
use std::net::Ipv4Addr;
use std::time::Duration;

use duet_carp::params::{AuthParams, Destination, HaMode, IfaceParams, Params, Preferred, Timing};
use duet_carp::witness::{Expect, Holder, KeyState, RequestKind, WitnessEvent, WitnessRequest};
use duet_carp::{Action, Command, CommandError, Election, Init, Notice, Role, Time, WitnessParams, WitnessPolicy};
use duet_wire::ipv4::{Ipv4Header, PROTO_CARP};

pub const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const SHARED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

/// Parameters of one unit of a pair on one interface.
pub fn pair_params(mode: HaMode, preferred: Preferred, timing: Timing) -> Params {
    let (own, partner) = if mode == HaMode::Second { (B, A) } else { (A, B) };
    Params {
        mode,
        vhid: 10,
        timing,
        preferred,
        initial_wait: Duration::ZERO,
        auth: AuthParams::Ucarp { password: b"secret".to_vec() },
        interfaces: vec![IfaceParams {
            name: "eth0".into(),
            unit_addr: own,
            partner_addr: Some(partner),
            shared: SHARED,
            ha_check: true,
            destination: Destination::Multicast,
        }],
        advskew: None,
        hard_reboot_on_link_failure: false,
        witness: None,
    }
}

/// A pair (first and second) built by `params` with the same settings, on
/// a network seeded with `seed`.
pub fn pair_net(
    params: fn(HaMode, Preferred, Timing) -> Params,
    preferred: Preferred,
    timing: Timing,
    seed: u64,
) -> Net {
    Net::new(vec![params(HaMode::First, preferred, timing), params(HaMode::Second, preferred, timing)], seed)
}

pub fn standard(timeout_s: u64) -> Timing {
    Timing::Standard { timeout: Duration::from_secs(timeout_s) }
}

pub fn fast() -> Timing {
    Timing::Fast { interval: Duration::from_millis(20), dead_factor: 4 }
}

/// `p` with a witness of `policy` and a lease TTL of `ttl_s` seconds.
pub fn with_witness(mut p: Params, policy: WitnessPolicy, ttl_s: u64) -> Params {
    p.witness = Some(WitnessParams { policy, lease_ttl: Duration::from_secs(ttl_s) });
    p
}

/// A pair on two interfaces (two-arm): eth0 198.18.0.x, eth1 198.19.0.x.
pub fn two_arm_params(mode: HaMode, preferred: Preferred, timing: Timing) -> Params {
    let mut p = pair_params(mode, preferred, timing);
    let mut second = p.interfaces[0].clone();
    let o = |a: Ipv4Addr| Ipv4Addr::new(198, 19, 0, a.octets()[3]);
    second.name = "eth1".into();
    second.unit_addr = o(second.unit_addr);
    second.partner_addr = second.partner_addr.map(o);
    second.shared = o(second.shared);
    p.interfaces.push(second);
    p
}

/// Wraps a CARP payload in an IPv4 header as the kernel sends it.
pub fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let h = Ipv4Header {
        tos: 0,
        ident: 1,
        dont_fragment: true,
        ttl,
        protocol: PROTO_CARP,
        src,
        dst,
        header_len: 20,
        payload_len: payload.len(),
    };
    let mut b = vec![0; 20 + payload.len()];
    h.emit(&mut b);
    b[20..].copy_from_slice(payload);
    b
}

/// A tiny deterministic PRNG (xorshift64*), so runs replay from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// True with probability `p_percent`/100.
    pub fn chance(&mut self, p_percent: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 10_000.0 < p_percent
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Delivery {
    at: Time,
    seq: u64,
    to: usize,
    iface: usize,
    kind: Kind,
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Advert(Vec<u8>),
    Peer(Ipv4Addr, Vec<u8>),
    /// A request reaches etcd (from unit `to`), sent at the time given.
    EtcdApply(WitnessRequest, Time),
    /// etcd's answer or a watch event reaches unit `to`.
    Witness(WitnessEvent),
}

/// The in-memory etcd of the simulation: the witness's key and the units'
/// leases, with reachability per unit. A request from a unit that cannot
/// reach it fails after [`Store::op_timeout`]; one that can is applied after
/// the latency and answered after the latency again; every change is
/// watched by the units that reach it.
#[derive(Debug)]
pub struct Store {
    pub latency: Duration,
    pub op_timeout: Duration,
    pub ttl: Duration,
    /// `reach[i]`: unit i can talk to etcd.
    pub reach: Vec<bool>,
    key: Option<Entry>,
    revision: i64,
    /// Each unit's current lease: id and expiry.
    leases: Vec<Option<(u64, Time)>>,
    /// Leases of earlier sessions still alive (until they expire).
    old_leases: Vec<(u64, Time)>,
    next_lease: u64,
    next_keepalive: Vec<Time>,
    /// (time, unit that took the key, whom it took it from).
    pub takes: Vec<(Time, usize, Option<String>)>,
}

#[derive(Debug, Clone)]
struct Entry {
    value: String,
    lease: u64,
    mod_revision: i64,
}

/// The name unit `i` writes in the key.
pub fn unit_name(i: usize) -> String {
    format!("lb{}", i + 1)
}

impl Store {
    fn new(n: usize, ttl: Duration) -> Self {
        Self {
            latency: Duration::from_millis(1),
            op_timeout: Duration::from_millis(100),
            ttl,
            reach: vec![true; n],
            key: None,
            revision: 1,
            leases: vec![None; n],
            old_leases: Vec::new(),
            next_lease: 1,
            next_keepalive: vec![Time::ZERO; n],
            takes: Vec::new(),
        }
    }

    /// The key as unit `i` sees it.
    fn state_for(&self, i: usize) -> KeyState {
        match &self.key {
            None => KeyState::Absent,
            Some(e) => {
                let holder = if e.value != unit_name(i) {
                    Holder::Other(e.value.clone())
                } else if self.leases[i].is_some_and(|(id, _)| id == e.lease) {
                    Holder::This
                } else {
                    Holder::ThisStale
                };
                KeyState::Held { holder, mod_revision: e.mod_revision }
            }
        }
    }

    fn lease_alive(&self, id: u64, now: Time) -> bool {
        self.leases.iter().flatten().chain(self.old_leases.iter()).any(|(l, exp)| *l == id && *exp > now)
    }

    /// Who holds the key now.
    pub fn holder(&self) -> Option<String> {
        self.key.as_ref().map(|e| e.value.clone())
    }
}

impl Ord for Delivery {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.at.cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for Delivery {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// One unit in the simulation.
#[derive(Debug)]
pub struct Unit {
    pub params: Params,
    pub election: Option<Election>,
    pub notices: Vec<(Time, Notice)>,
    pub roles: Vec<(Time, Role)>,
    pub reannounces: u32,
    pub scrubs: u32,
    pub handovers: Vec<bool>,
    /// Raw packets this unit sent (a capture, for replay tests).
    pub sent: Vec<Vec<u8>>,
    /// Resigning adverts sent (advbase and advskew 255), when.
    pub resigns: Vec<Time>,
    /// Requests to the witness, when.
    pub witness_requests: Vec<(Time, WitnessRequest)>,
    pub started_at: Time,
    starts: u64,
    /// Times its own timer woke it (not a packet or a witness event).
    pub timer_wakes: u32,
    /// E16: its tracked checks (given at each start).
    pub tracks: Vec<duet_carp::TrackParams>,
}

/// The simulated network.
#[derive(Debug)]
pub struct Net {
    pub now: Time,
    pub units: Vec<Unit>,
    queue: BinaryHeap<Delivery>,
    seq: u64,
    pub rng: Rng,
    pub latency: Duration,
    pub jitter: Duration,
    pub loss_percent: f64,
    /// `cut[i]`: unit i can neither send nor receive.
    pub cut: Vec<bool>,
    /// Adverts are dropped on the way (multicast filtered); peer-status
    /// datagrams (unicast) still pass.
    pub drop_adverts: bool,
    /// `link_down[i][k]`: interface k of unit i has no link.
    pub link_down: Vec<Vec<bool>>,
    /// Packets injected by a third party are wrapped with this source.
    pub role_log: Vec<(Time, usize, Role)>,
    /// `mute_adverts[i]`: unit i's adverts are dropped on the way (one-way loss).
    pub mute_adverts: Vec<bool>,
    /// The witness's etcd, when the units have a witness.
    pub store: Option<Store>,
}

impl Net {
    pub fn new(params: Vec<Params>, seed: u64) -> Self {
        let n = params.len();
        let mut net = Self {
            now: Time::ZERO,
            units: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: Rng::new(seed),
            latency: Duration::from_micros(200),
            jitter: Duration::from_micros(100),
            loss_percent: 0.0,
            cut: vec![false; n],
            drop_adverts: false,
            link_down: params.iter().map(|p| vec![false; p.interfaces.len()]).collect(),
            role_log: Vec::new(),
            mute_adverts: vec![false; n],
            store: params.iter().find_map(|p| p.witness).map(|w| Store::new(n, w.lease_ttl)),
        };
        for p in params {
            net.units.push(Unit {
                params: p,
                election: None,
                notices: vec![],
                roles: vec![],
                reannounces: 0,
                scrubs: 0,
                handovers: vec![],
                sent: vec![],
                resigns: vec![],
                witness_requests: vec![],
                started_at: Time::ZERO,
                starts: 0,
                timer_wakes: 0,
                tracks: vec![],
            });
        }
        for i in 0..n {
            net.start(i);
        }
        net
    }

    /// (Re)starts unit `i` with fresh counters.
    pub fn start(&mut self, i: usize) {
        self.start_with(i, false);
    }

    /// (Re)starts unit `i`; `was_active`: its last run died holding the
    /// role. Counters go on from `counter_seed` when given (as the SHA-256
    /// mode's saved ceiling makes them), else start at random.
    pub fn start_with(&mut self, i: usize, was_active: bool) {
        self.start_counting(i, was_active, None);
    }

    pub fn start_counting(&mut self, i: usize, was_active: bool, counter_seed: Option<u64>) {
        let seed = counter_seed.unwrap_or_else(|| self.rng.next());
        let u = &mut self.units[i];
        u.starts += 1;
        u.started_at = self.now;
        let init = Init {
            counter_seed: seed,
            peer_counter_seed: (self.now.as_micros() << 16) + u.starts,
            tracks: u.tracks.clone(),
            was_active,
            ..Default::default()
        };
        u.election = Some(Election::new(u.params.clone(), self.now, init));
        u.roles.push((self.now, Role::Init));
        // A new session of the witness's adapter: a new lease, at once.
        let now = self.now;
        if let Some(st) = self.store.as_mut() {
            if let Some(old) = st.leases[i].take() {
                st.old_leases.push(old);
            }
            st.next_keepalive[i] = now;
        }
        self.drain(i);
    }

    /// Kills unit `i` (it stops sending and hearing).
    pub fn kill(&mut self, i: usize) {
        self.units[i].election = None;
        self.role_log.push((self.now, i, Role::Standby));
    }

    pub fn alive(&self, i: usize) -> bool {
        self.units[i].election.is_some()
    }

    pub fn role(&self, i: usize) -> Option<Role> {
        self.units[i].election.as_ref().map(Election::role)
    }

    pub fn e(&mut self, i: usize) -> &mut Election {
        self.units[i].election.as_mut().expect("unit alive")
    }

    /// Hands `cmd` to unit `i` now (its actions stay queued until it is
    /// drained).
    pub fn command(&mut self, i: usize, cmd: Command) -> Result<(), CommandError> {
        let now = self.now;
        self.e(i).handle_command(now, cmd)
    }

    pub fn actives(&self) -> usize {
        (0..self.units.len()).filter(|&i| self.role(i).is_some_and(Role::advertises)).count()
    }

    /// Injects a raw IPv4 packet to unit `to` now (an attacker on the segment).
    pub fn inject(&mut self, to: usize, packet: Vec<u8>) {
        self.push(self.now, to, 0, Kind::Advert(packet));
    }

    /// Sets the link of interface `k` of unit `i` and tells its election.
    pub fn set_link(&mut self, i: usize, k: usize, up: bool) {
        self.link_down[i][k] = !up;
        let now = self.now;
        if let Some(e) = self.units[i].election.as_mut() {
            e.handle_link(now, k, up);
        }
        self.drain(i);
    }

    fn push(&mut self, at: Time, to: usize, iface: usize, kind: Kind) {
        self.seq += 1;
        self.queue.push(Delivery { at, seq: self.seq, to, iface, kind });
    }

    fn deliver_at(&mut self) -> Time {
        let j = if self.jitter.is_zero() { 0 } else { self.rng.next() % (self.jitter.as_micros() as u64) };
        self.now + self.latency + Duration::from_micros(j)
    }

    /// Carries out unit i's pending actions.
    pub fn drain(&mut self, i: usize) {
        while let Some(a) = self.units[i].election.as_mut().and_then(Election::poll_action) {
            match a {
                Action::SendAdvert { iface, dst, payload } => {
                    let src = self.units[i].params.interfaces[iface].unit_addr;
                    let pkt = ip_packet(src, dst, 255, &payload);
                    if payload[2] == 255 && payload[5] == 255 {
                        self.units[i].resigns.push(self.now);
                    }
                    self.units[i].sent.push(pkt.clone());
                    self.broadcast(i, iface, Kind::Advert(pkt));
                }
                Action::SendPeerStatus { iface, payload, .. } => {
                    let src = self.units[i].params.interfaces[iface].unit_addr;
                    self.broadcast(i, iface, Kind::Peer(src, payload.to_vec()));
                }
                Action::RoleChanged { to, .. } => {
                    self.units[i].roles.push((self.now, to));
                    self.role_log.push((self.now, i, to));
                }
                Action::Reannounce { .. } => self.units[i].reannounces += 1,
                Action::Log(n) => self.units[i].notices.push((self.now, n)),
                Action::ScrubAddresses => self.units[i].scrubs += 1,
                Action::HandoverFinished { confirmed, .. } => self.units[i].handovers.push(confirmed),
                Action::LinkLostRestart { .. } | Action::ParametersChanged => {}
                Action::Witness(req) => {
                    self.units[i].witness_requests.push((self.now, req));
                    self.witness_request(i, req);
                }
            }
        }
    }

    fn broadcast(&mut self, from: usize, iface: usize, kind: Kind) {
        if self.cut[from] || self.link_down[from][iface] {
            return;
        }
        for to in 0..self.units.len() {
            if to == from || self.cut[to] || self.link_down[to].get(iface).is_none_or(|d| *d) {
                continue;
            }
            if self.loss_percent > 0.0 && self.rng.chance(self.loss_percent) {
                continue;
            }
            if (self.drop_adverts || self.mute_adverts[from]) && matches!(kind, Kind::Advert(_)) {
                continue;
            }
            let at = self.deliver_at();
            let k = match &kind {
                Kind::Advert(p) => Kind::Advert(p.clone()),
                Kind::Peer(s, p) => Kind::Peer(*s, p.clone()),
                Kind::EtcdApply(..) | Kind::Witness(_) => unreachable!("not sent on a segment"),
            };
            self.push(at, to, iface, k);
        }
    }

    // ----- the witness's etcd -------------------------------------------

    /// Whether unit `i` can reach etcd from now on.
    pub fn set_reach(&mut self, i: usize, reach: bool) {
        let now = self.now;
        if let Some(st) = self.store.as_mut() {
            st.reach[i] = reach;
            // The adapter notices at its next call; make that now.
            st.next_keepalive[i] = now;
        }
    }

    /// The store (units with a witness).
    pub fn store(&self) -> &Store {
        self.store.as_ref().expect("a pair with a witness")
    }

    fn push_witness(&mut self, at: Time, to: usize, ev: WitnessEvent) {
        self.push(at, to, 0, Kind::Witness(ev));
    }

    fn witness_next(&self) -> Option<Time> {
        let st = self.store.as_ref()?;
        let keepalives = (0..self.units.len()).filter(|&i| self.alive(i)).map(|i| st.next_keepalive[i]);
        let expiries = st.leases.iter().flatten().chain(st.old_leases.iter()).map(|(_, e)| *e);
        keepalives.chain(expiries).min()
    }

    /// Lease expiries and the adapters' keepalives (with their reconnects)
    /// due now.
    fn witness_tick(&mut self) {
        let now = self.now;
        let n = self.units.len();
        let alive: Vec<bool> = (0..n).map(|i| self.alive(i)).collect();
        let Some(st) = self.store.as_mut() else { return };
        let mut changed = false;
        let mut lost = vec![false; n];
        let mut expired = Vec::new();
        for (i, l) in st.leases.iter_mut().enumerate() {
            if let Some((id, exp)) = *l
                && exp <= now
            {
                *l = None;
                lost[i] = true;
                expired.push(id);
            }
        }
        st.old_leases.retain(|(id, exp)| {
            if *exp <= now {
                expired.push(*id);
            }
            *exp > now
        });
        if st.key.as_ref().is_some_and(|e| expired.contains(&e.lease)) {
            st.key = None;
            st.revision += 1;
            changed = true;
        }
        let mut out = Vec::new();
        for i in (0..n).filter(|&i| alive[i]) {
            if st.next_keepalive[i] > now {
                continue;
            }
            st.next_keepalive[i] = now + st.ttl / 3;
            if !st.reach[i] {
                out.push((
                    now + st.op_timeout,
                    i,
                    WitnessEvent::Failed { request: None, error: "etcd unreachable".into() },
                ));
                continue;
            }
            let at = now + st.latency * 2;
            if st.leases[i].is_none() {
                if lost[i] {
                    out.push((at, i, WitnessEvent::LeaseLost));
                }
                st.leases[i] = Some((st.next_lease, now + st.ttl));
                st.next_lease += 1;
            } else if let Some(l) = st.leases[i].as_mut() {
                l.1 = now + st.ttl;
            }
            out.push((at, i, WitnessEvent::LeaseKept { sent: now, ttl: st.ttl }));
            // The adapter reads the key whenever it (re)connects; reading it
            // every keepalive is the same to the core (a read of the same
            // revision is no beat).
            out.push((at, i, WitnessEvent::Observed { key: st.state_for(i), revision: st.revision }));
        }
        for (at, i, ev) in out {
            self.push_witness(at, i, ev);
        }
        if changed {
            self.witness_broadcast();
        }
    }

    /// The watch: every unit that reaches etcd sees the key as it is now.
    fn witness_broadcast(&mut self) {
        let now = self.now;
        let n = self.units.len();
        let alive: Vec<bool> = (0..n).map(|i| self.alive(i)).collect();
        let Some(st) = self.store.as_ref() else { return };
        let at = now + st.latency;
        let evs: Vec<(usize, WitnessEvent)> = (0..n)
            .filter(|&i| alive[i] && st.reach[i])
            .map(|i| (i, WitnessEvent::Observed { key: st.state_for(i), revision: st.revision }))
            .collect();
        for (i, ev) in evs {
            self.push_witness(at, i, ev);
        }
    }

    fn witness_request(&mut self, i: usize, req: WitnessRequest) {
        let now = self.now;
        let Some(st) = self.store.as_ref() else { return };
        if st.reach[i] {
            let at = now + st.latency;
            self.push(at, i, 0, Kind::EtcdApply(req, now));
        } else {
            let at = now + st.op_timeout;
            let ev = WitnessEvent::Failed { request: Some(req.kind()), error: "etcd unreachable".into() };
            self.push_witness(at, i, ev);
        }
    }

    /// A request of unit `i`, sent at `sent`, reaches etcd now.
    fn etcd_apply(&mut self, i: usize, req: WitnessRequest, sent: Time) {
        let now = self.now;
        let Some(st) = self.store.as_mut() else { return };
        if !st.reach[i] {
            let ev = WitnessEvent::Failed { request: Some(req.kind()), error: "etcd unreachable".into() };
            let at = sent + st.op_timeout;
            self.push_witness(at.max(now), i, ev);
            return;
        }
        let name = unit_name(i);
        let lease = st.leases[i].filter(|(_, e)| *e > now).map(|(id, _)| id);
        let mut changed = false;
        let reply = match req {
            WitnessRequest::Beat => match (&mut st.key, lease) {
                (Some(e), Some(l)) if e.value == name && e.lease == l => {
                    st.revision += 1;
                    e.mod_revision = st.revision;
                    changed = true;
                    WitnessEvent::BeatAcked { sent, mod_revision: st.revision }
                }
                _ => WitnessEvent::Refused { request: RequestKind::Beat, key: st.state_for(i), revision: st.revision },
            },
            WitnessRequest::Acquire(expect) => match lease {
                None => WitnessEvent::Failed { request: Some(RequestKind::Acquire), error: "no lease".into() },
                Some(l) => {
                    let ok = match expect {
                        Expect::Absent => st.key.is_none(),
                        Expect::ModRevision(r) => st.key.as_ref().is_some_and(|e| e.mod_revision == r),
                    };
                    if ok {
                        let prev = st.key.as_ref().map(|e| e.value.clone());
                        st.revision += 1;
                        st.key = Some(Entry { value: name, lease: l, mod_revision: st.revision });
                        st.takes.push((now, i, prev));
                        changed = true;
                        WitnessEvent::Acquired { sent, mod_revision: st.revision }
                    } else {
                        WitnessEvent::Refused {
                            request: RequestKind::Acquire,
                            key: st.state_for(i),
                            revision: st.revision,
                        }
                    }
                }
            },
            WitnessRequest::Release => {
                if st.key.as_ref().is_some_and(|e| e.value == name) {
                    st.key = None;
                    st.revision += 1;
                    changed = true;
                }
                WitnessEvent::Released
            }
        };
        let at = now + st.latency;
        self.push_witness(at, i, reply);
        if changed {
            self.witness_broadcast();
        }
    }

    /// Runs the network until `until`.
    pub fn run_until(&mut self, until: Time) {
        loop {
            let next_delivery = self.queue.peek().map(|d| d.at);
            let next_timer = (0..self.units.len())
                .filter_map(|i| self.units[i].election.as_ref().and_then(Election::poll_timeout).map(|t| (t, i)))
                .min();
            let next_witness = self.witness_next();
            let t =
                [next_delivery, next_timer.map(|(t, _)| t), next_witness].into_iter().flatten().min().unwrap_or(until);
            if t > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(t);
            if next_witness == Some(t) {
                self.witness_tick();
            } else if next_delivery == Some(t) {
                let d = self.queue.pop().expect("peeked");
                let reach = self.store.as_ref().is_none_or(|st| st.reach[d.to]);
                match d.kind {
                    Kind::EtcdApply(req, sent) => {
                        self.etcd_apply(d.to, req, sent);
                        continue;
                    }
                    // An answer or a watch event to a unit cut off from etcd
                    // is lost; its adapter times the request out.
                    Kind::Witness(ev) if !reach && !matches!(ev, WitnessEvent::Failed { .. }) => {
                        let request = match &ev {
                            WitnessEvent::BeatAcked { .. } => Some(RequestKind::Beat),
                            WitnessEvent::Acquired { .. } => Some(RequestKind::Acquire),
                            WitnessEvent::Released => Some(RequestKind::Release),
                            WitnessEvent::Refused { request, .. } => Some(*request),
                            _ => None,
                        };
                        if let (Some(request), Some(st)) = (request, self.store.as_ref()) {
                            let at = self.now + st.op_timeout;
                            let ev = WitnessEvent::Failed { request: Some(request), error: "timed out".into() };
                            self.push_witness(at, d.to, ev);
                        }
                        continue;
                    }
                    kind => {
                        if let Some(e) = self.units[d.to].election.as_mut() {
                            match kind {
                                Kind::Advert(p) => {
                                    let _ = e.handle_packet(self.now, d.iface, &p);
                                }
                                Kind::Peer(src, p) => {
                                    e.handle_peer_datagram(self.now, d.iface, src, &p);
                                }
                                Kind::Witness(ev) => e.handle_witness(self.now, ev),
                                Kind::EtcdApply(..) => {}
                            }
                        }
                    }
                }
                self.drain(d.to);
            } else if let Some((_, i)) = next_timer {
                let now = self.now;
                self.units[i].timer_wakes += 1;
                self.e(i).handle_timeout(now);
                self.drain(i);
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs until `cond` holds, at most `limit`; returns the time it took.
    pub fn run_until_cond(
        &mut self,
        limit: Duration,
        step: Duration,
        mut cond: impl FnMut(&Self) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now.since(start) <= limit {
            if cond(self) {
                return Some(self.now.since(start));
            }
            self.run_for(step);
        }
        None
    }

    pub fn status(&self, i: usize) -> duet_carp::Status {
        self.units[i].election.as_ref().expect("unit alive").status(self.now)
    }

    /// The role unit `i` had at `t` (from the role log; a dead unit is standby).
    pub fn role_at(&self, i: usize, t: Time) -> Role {
        self.role_log.iter().rev().find(|(at, u, _)| *u == i && *at <= t).map_or(Role::Init, |(_, _, r)| *r)
    }

    /// When unit `i` last changed to `role` at or after `from`.
    pub fn became(&self, i: usize, role: Role, from: Time) -> Option<Time> {
        self.role_log.iter().find(|(at, u, r)| *u == i && *r == role && *at >= from).map(|(t, _, _)| *t)
    }

    pub fn notices(&self, i: usize) -> Vec<String> {
        self.units[i].notices.iter().map(|(_, n)| n.to_string()).collect()
    }
}
