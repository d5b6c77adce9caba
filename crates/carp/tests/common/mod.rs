//! An in-memory network of election cores driven by a virtual clock, with
//! latency, seeded loss and partitions. Packets are wrapped in a real IPv4
//! header (TTL 255) exactly as the kernel would send them.

#![allow(dead_code, unreachable_pub)]

use std::collections::BinaryHeap;
use std::net::Ipv4Addr;
use std::time::Duration;

use duet_carp::params::{AuthParams, Destination, HaMode, IfaceParams, Params, Preferred, Timing};
use duet_carp::{Action, Command, CommandError, Election, Init, Notice, Role, Time};
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
    pub started_at: Time,
    starts: u64,
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
                started_at: Time::ZERO,
                starts: 0,
            });
        }
        for i in 0..n {
            net.start(i);
        }
        net
    }

    /// (Re)starts unit `i` with fresh counters.
    pub fn start(&mut self, i: usize) {
        let seed = self.rng.next();
        let u = &mut self.units[i];
        u.starts += 1;
        u.started_at = self.now;
        let init = Init {
            counter_seed: seed,
            peer_counter_seed: (self.now.as_micros() << 16) + u.starts,
            ..Default::default()
        };
        u.election = Some(Election::new(u.params.clone(), self.now, init));
        u.roles.push((self.now, Role::Init));
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
            if self.drop_adverts && matches!(kind, Kind::Advert(_)) {
                continue;
            }
            let at = self.deliver_at();
            let k = match &kind {
                Kind::Advert(p) => Kind::Advert(p.clone()),
                Kind::Peer(s, p) => Kind::Peer(*s, p.clone()),
            };
            self.push(at, to, iface, k);
        }
    }

    /// Runs the network until `until`.
    pub fn run_until(&mut self, until: Time) {
        loop {
            let next_delivery = self.queue.peek().map(|d| d.at);
            let next_timer = (0..self.units.len())
                .filter_map(|i| self.units[i].election.as_ref().and_then(Election::poll_timeout).map(|t| (t, i)))
                .min();
            let t = match (next_delivery, next_timer) {
                (Some(d), Some((tt, _))) => d.min(tt),
                (Some(d), None) => d,
                (None, Some((tt, _))) => tt,
                (None, None) => until,
            };
            if t > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(t);
            if next_delivery == Some(t) {
                let d = self.queue.pop().expect("peeked");
                if let Some(e) = self.units[d.to].election.as_mut() {
                    match d.kind {
                        Kind::Advert(p) => {
                            let _ = e.handle_packet(self.now, d.iface, &p);
                        }
                        Kind::Peer(src, p) => {
                            e.handle_peer_datagram(self.now, d.iface, src, &p);
                        }
                    }
                }
                self.drain(d.to);
            } else if let Some((_, i)) = next_timer {
                let now = self.now;
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

    pub fn notices(&self, i: usize) -> Vec<String> {
        self.units[i].notices.iter().map(|(_, n)| n.to_string()).collect()
    }
}
