//! Gratuitous ARP bursts and refreshes (T1, T3).
//!
//! The first frame of a burst goes out on the caller's task, at once, so
//! nothing stands between the addresses being in place and neighbours
//! hearing of it. The rest of the burst (`garp_count - 1` frames,
//! `garp_spacing` apart) runs on a spawned timer task, so the event loop is
//! never blocked by the spacing. Bursts are aborted when the addresses are
//! given up: a unit must never announce an address it no longer holds.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use duet_net::garp::GarpSender;
use tokio::task::JoinSet;

use crate::metrics::Metrics;

/// Where one announcement goes: a socket bound to the device that carries
/// the address, the MAC to announce it at, and the address.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub sender: Arc<GarpSender>,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
}

/// Counters the status shows, shared with the burst tasks.
#[derive(Debug, Default)]
pub(crate) struct GarpStats {
    pub sent: u64,
    pub last_at: Option<SystemTime>,
}

/// Sends gratuitous ARPs.
#[derive(Debug)]
pub(crate) struct Announcer {
    count: u32,
    spacing: Duration,
    bursts: JoinSet<()>,
    stats: Arc<Mutex<GarpStats>>,
    metrics: Metrics,
}

impl Announcer {
    pub(crate) fn new(count: u32, spacing: Duration, stats: Arc<Mutex<GarpStats>>, metrics: Metrics) -> Self {
        Self { count: count.max(1), spacing, bursts: JoinSet::new(), stats, metrics }
    }

    /// Sends the first frame for every target now and the rest of the
    /// burst from a timer task. Returns when the first frame left, if any
    /// did. A burst for every held address (`supersede`) replaces the
    /// bursts still running, so re-announcements in quick succession (an
    /// active-active episode reports itself more than once) do not pile up.
    pub(crate) fn burst(&mut self, targets: &[Target], supersede: bool) -> Option<Instant> {
        if targets.is_empty() {
            return None;
        }
        let first = send_all(targets, &self.stats, &self.metrics);
        if supersede {
            self.bursts.abort_all();
        }
        self.reap();
        if self.count > 1 {
            let targets = targets.to_vec();
            let (rest, spacing) = (self.count - 1, self.spacing);
            let (stats, metrics) = (Arc::clone(&self.stats), self.metrics.clone());
            self.bursts.spawn(async move {
                for _ in 0..rest {
                    tokio::time::sleep(spacing).await;
                    send_all(&targets, &stats, &metrics);
                }
            });
        }
        first
    }

    /// One frame per target (the periodic refresh).
    pub(crate) fn once(&mut self, targets: &[Target]) {
        send_all(targets, &self.stats, &self.metrics);
        self.reap();
    }

    /// Aborts every burst still running.
    pub(crate) fn stop(&mut self) {
        self.bursts.abort_all();
        self.reap();
    }

    /// Forgets bursts that have ended.
    fn reap(&mut self) {
        while self.bursts.try_join_next().is_some() {}
    }
}

/// Sends one frame per target; returns when the first one left.
fn send_all(targets: &[Target], stats: &Mutex<GarpStats>, metrics: &Metrics) -> Option<Instant> {
    let mut sent = 0u64;
    let mut first = None;
    let mut errors = Vec::new();
    for t in targets {
        match t.sender.send(t.mac, t.ip) {
            Ok(()) => {
                sent += 1;
                first.get_or_insert_with(Instant::now);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    // One line per round, not per frame: a link that is down fails them all.
    if !errors.is_empty() {
        crate::notice::garp_failed(&errors.join("; "));
    }
    if sent > 0 {
        metrics.garps_sent.add(sent, &[]);
        let mut s = stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.sent += sent;
        s.last_at = Some(SystemTime::now());
    }
    first
}
