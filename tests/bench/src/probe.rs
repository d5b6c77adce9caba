//! Probing a shared address from inside lab namespaces: threads that live
//! in a namespace until stopped, a UDP responder that says which unit
//! answered, a 1 ms prober that records every answer, and the analysis of
//! what the client saw.
//!
//! The wire format is ours and tiny: a probe is the 8-byte big-endian
//! sequence number; an answer is that sequence number followed by one byte,
//! the answering unit's id. With a virtual MAC both units look the same on
//! the wire, so the id byte is the only reliable way to tell them apart.
//!
//! Times are wall-clock seconds since the UNIX epoch (`f64`), the clock
//! tcpdump's `-tt` and the services' timestamps use, so all of them can be
//! compared. This is test code: it favours plain threads and bounded waits
//! over efficiency, and it is not a traffic generator.

use std::fs::File;
use std::io::ErrorKind;
use std::net::{SocketAddrV4, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

use duet_tests::epoch_now;

/// How long [`NsThread::spawn`] waits for the thread's setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long stopping an [`NsThread`] waits for it to finish.
const JOIN_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a probe thread blocks in a socket call before it looks at
/// its stop flag again.
const POLL: Duration = Duration::from_millis(20);
/// A prober further behind its schedule than this many intervals skips the
/// missed probes instead of sending them in one burst.
const MAX_BEHIND: u32 = 10;

/// A thread inside a network namespace that runs until it is stopped.
///
/// Unlike [`duet_testkit::in_netns`], which joins at once, the thread keeps
/// running in the background. Its body gets a stop flag and must look at it
/// at least every few tens of milliseconds (use socket timeouts).
/// [`stop`](Self::stop) (or dropping the handle) sets the flag and waits at
/// most 3 s for the result; a thread that does not finish in time is left
/// detached with an error rather than hanging the caller.
#[derive(Debug)]
pub struct NsThread<T> {
    name: String,
    stop: Arc<AtomicBool>,
    done: Receiver<thread::Result<T>>,
    handle: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> NsThread<T> {
    /// Starts a thread named `name` that enters namespace `ns` (a name
    /// under `/run/netns`), runs `setup` there and reports its error to the
    /// caller, then runs `run(state, stop)` until it returns.
    pub fn spawn<S, Setup, Run>(ns: &str, name: &str, setup: Setup, run: Run) -> Result<Self>
    where
        S: 'static,
        Setup: FnOnce() -> Result<S> + Send + 'static,
        Run: FnOnce(S, &AtomicBool) -> T + Send + 'static,
    {
        if ns.is_empty() || ns.contains('/') {
            bail!("invalid namespace name {ns:?}");
        }
        let path = format!("/run/netns/{ns}");
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<()>>(1);
        let (done_tx, done) = mpsc::sync_channel(1);
        let flag = Arc::clone(&stop);
        let ns_name = ns.to_owned();
        let handle = thread::Builder::new()
            .name(format!("{name} in {ns}"))
            .spawn(move || {
                let state = setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering netns {ns_name}"))
                    .and_then(|()| setup());
                drop(file);
                let state = match state {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let result = catch_unwind(AssertUnwindSafe(|| run(state, &flag)));
                let _ = done_tx.send(result);
            })
            .context("spawning a thread")?;
        let mut me = Self { name: name.to_owned(), stop, done, handle: Some(handle) };
        match ready_rx.recv_timeout(SETUP_TIMEOUT) {
            Ok(Ok(())) => Ok(me),
            Ok(Err(e)) => {
                me.join_quietly();
                Err(e.context(format!("starting {name} in {ns}")))
            }
            Err(_) => {
                me.stop.store(true, Ordering::Relaxed);
                me.handle = None;
                bail!("{name} in {ns}: no setup within {SETUP_TIMEOUT:?} (left detached)")
            }
        }
    }

    /// Whether the body has returned (or panicked).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Sets the stop flag and returns the body's result, waiting at most
    /// 3 s; a panic in the body becomes an error.
    pub fn stop(mut self) -> Result<T> {
        self.stop.store(true, Ordering::Relaxed);
        self.finish()
    }

    fn finish(&mut self) -> Result<T> {
        let Some(handle) = self.handle.take() else { bail!("{} was stopped already", self.name) };
        match self.done.recv_timeout(JOIN_TIMEOUT) {
            Ok(result) => {
                let _ = handle.join();
                result.map_err(|panic| {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    anyhow::anyhow!("{} panicked: {msg}", self.name)
                })
            }
            // The sender is gone without a result: setup failed, already
            // reported; the thread has ended.
            Err(RecvTimeoutError::Disconnected) => {
                let _ = handle.join();
                bail!("{} ended without a result", self.name)
            }
            Err(RecvTimeoutError::Timeout) => {
                bail!("{} did not stop within {JOIN_TIMEOUT:?}; left detached", self.name)
            }
        }
    }

    fn join_quietly(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl<T> Drop for NsThread<T> {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else { return };
        self.stop.store(true, Ordering::Relaxed);
        match self.done.recv_timeout(JOIN_TIMEOUT) {
            Ok(_) | Err(RecvTimeoutError::Disconnected) => {
                let _ = handle.join();
            }
            Err(RecvTimeoutError::Timeout) => {
                eprintln!("duet-tests: {} did not stop within {JOIN_TIMEOUT:?}; left detached", self.name);
            }
        }
    }
}

/// Length of a probe on the wire: the sequence number.
pub const PROBE_LEN: usize = 8;
/// Length of an answer: the sequence number and the unit id.
pub const ANSWER_LEN: usize = 9;

/// A UDP responder in a unit's namespace: bound to `0.0.0.0:<port>`, it
/// answers every probe with the probe's sequence number and its unit id.
///
/// Bound to the wildcard address it only ever sees probes the kernel
/// accepted as local, that is while the unit holds the shared address, as
/// a service bound to the shared address would. Its answers leave with the
/// source address the routing table picks (the unit's own address), which
/// the prober does not mind: it reads the unit id instead.
#[derive(Debug)]
pub struct Responder {
    unit: u8,
    thread: NsThread<u64>,
}

impl Responder {
    /// Starts answering on UDP `port` inside namespace `ns` as unit `unit`.
    pub fn start(ns: &str, port: u16, unit: u8) -> Result<Self> {
        let thread = NsThread::spawn(
            ns,
            &format!("responder {unit}"),
            move || {
                let s = UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("binding UDP port {port}"))?;
                s.set_read_timeout(Some(POLL))?;
                Ok(s)
            },
            move |s, stop| {
                let mut answered = 0u64;
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    match s.recv_from(&mut buf) {
                        Ok((n, from)) if n >= PROBE_LEN => {
                            let mut out = [0u8; ANSWER_LEN];
                            out[..PROBE_LEN].copy_from_slice(&buf[..PROBE_LEN]);
                            out[PROBE_LEN] = unit;
                            if s.send_to(&out, from).is_ok() {
                                answered += 1;
                            }
                        }
                        _ => {}
                    }
                }
                answered
            },
        )?;
        Ok(Self { unit, thread })
    }

    /// The unit id it answers with.
    pub fn unit(&self) -> u8 {
        self.unit
    }

    /// Stops it; returns how many probes it answered.
    pub fn stop(self) -> Result<u64> {
        self.thread.stop()
    }
}

/// One answer the prober received.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Answer {
    /// The probe's sequence number.
    pub seq: u64,
    /// The id of the unit that answered.
    pub unit: u8,
    /// When it was received (wall-clock seconds).
    pub at: f64,
}

/// One probe sent.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Sent {
    pub seq: u64,
    /// When it was sent (wall-clock seconds).
    pub at: f64,
}

/// Everything a prober saw, in receive order.
#[derive(Debug, Clone, Default)]
pub struct ProbeLog {
    pub sent: Vec<Sent>,
    pub answers: Vec<Answer>,
    /// Sends the kernel refused (e.g. no ARP answer).
    pub send_errors: u64,
    /// Probes not sent because the sender fell too far behind schedule.
    pub skipped: u64,
}

#[derive(Debug, Default)]
struct SendLog {
    sent: Vec<Sent>,
    errors: u64,
    skipped: u64,
}

/// A client sending one probe every `interval` (absolute deadlines, so
/// jitter does not accumulate) to a target, and recording every answer.
#[derive(Debug)]
pub struct Prober {
    answers: Arc<Mutex<Vec<Answer>>>,
    received: Arc<AtomicU64>,
    sender: NsThread<SendLog>,
    receiver: NsThread<()>,
}

impl Prober {
    /// Starts probing `target` from inside namespace `ns`.
    pub fn start(ns: &str, target: SocketAddrV4, interval: Duration) -> Result<Self> {
        if interval.is_zero() {
            bail!("a probe interval of 0");
        }
        let ns_owned = ns.to_owned();
        // One socket for both threads, opened inside the namespace (a
        // socket belongs to the namespace it was created in).
        let sock = duet_testkit::in_netns(&ns_owned, || -> Result<UdpSocket> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(POLL))?;
            s.set_write_timeout(Some(POLL))?;
            Ok(s)
        })??;
        let rx_sock = sock.try_clone()?;
        let answers = Arc::new(Mutex::new(Vec::with_capacity(1 << 14)));
        let received = Arc::new(AtomicU64::new(0));
        let (answers2, received2) = (Arc::clone(&answers), Arc::clone(&received));
        let receiver = NsThread::spawn(
            ns,
            "prober rx",
            move || Ok(rx_sock),
            move |s: UdpSocket, stop| {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    match s.recv_from(&mut buf) {
                        Ok((n, _)) if n >= ANSWER_LEN => {
                            let at = epoch_now();
                            let seq = u64::from_be_bytes(buf[..PROBE_LEN].try_into().expect("8 bytes"));
                            let a = Answer { seq, unit: buf[PROBE_LEN], at };
                            answers2.lock().unwrap_or_else(PoisonError::into_inner).push(a);
                            received2.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        // ICMP errors for earlier probes surface here; keep going.
                        Err(_) => {}
                    }
                }
            },
        )?;
        let sender = NsThread::spawn(
            ns,
            "prober tx",
            move || Ok(sock),
            move |s: UdpSocket, stop| {
                let mut log = SendLog::default();
                let start = Instant::now();
                let mut slot: u32 = 0;
                let mut seq: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let deadline = start + interval * slot;
                    let now = Instant::now();
                    if deadline > now {
                        thread::sleep(deadline - now);
                    } else if now - deadline > interval * MAX_BEHIND {
                        // Skip ahead rather than burst.
                        let behind = ((now - deadline).as_nanos() / interval.as_nanos()) as u32;
                        slot += behind;
                        log.skipped += u64::from(behind);
                    }
                    let at = epoch_now();
                    match s.send_to(&seq.to_be_bytes(), target) {
                        Ok(_) => log.sent.push(Sent { seq, at }),
                        Err(_) => log.errors += 1,
                    }
                    seq += 1;
                    slot += 1;
                }
                log
            },
        )?;
        Ok(Self { answers, received, sender, receiver })
    }

    /// How many answers have arrived so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// A copy of the answers received from index `from` on.
    pub fn answers_since(&self, from: usize) -> Vec<Answer> {
        let a = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        a.get(from..).map(<[Answer]>::to_vec).unwrap_or_default()
    }

    /// Waits (polling every 2 ms, at most `timeout`) for an answer that
    /// matches `pred`, and returns the first such one.
    pub fn wait_answer(&self, timeout: Duration, mut pred: impl FnMut(&Answer) -> bool) -> Result<Answer> {
        let deadline = Instant::now() + timeout;
        let mut checked = 0;
        loop {
            let fresh = self.answers_since(checked);
            checked += fresh.len();
            if let Some(a) = fresh.into_iter().find(|a| pred(a)) {
                return Ok(a);
            }
            if Instant::now() >= deadline {
                bail!("no matching answer within {timeout:?} ({} answers in all)", self.received());
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until the last `n` answers all came from `unit` and spread over
    /// at most `2 n` probe intervals' worth of sequence numbers (a steady
    /// stream), at most `timeout`.
    pub fn wait_steady(&self, unit: u8, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let a = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
                if a.len() >= n {
                    let tail = &a[a.len() - n..];
                    let span = tail[n - 1].seq.saturating_sub(tail[0].seq);
                    if tail.iter().all(|x| x.unit == unit) && span <= 2 * n as u64 {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                let units = self.answers_since(0).iter().rev().take(n).fold([0usize; 256], |mut c, a| {
                    c[usize::from(a.unit)] += 1;
                    c
                });
                let by_unit: Vec<String> =
                    units.iter().enumerate().filter(|(_, c)| **c > 0).map(|(u, c)| format!("unit {u}: {c}")).collect();
                bail!(
                    "no steady answers from unit {unit} within {timeout:?} (last {n}: {})",
                    if by_unit.is_empty() { "none".to_owned() } else { by_unit.join(", ") }
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops both threads and returns what they saw.
    pub fn stop(self) -> Result<ProbeLog> {
        let send = self.sender.stop()?;
        // Give answers to the last probes a moment to arrive.
        thread::sleep(Duration::from_millis(20));
        self.receiver.stop()?;
        let answers = std::mem::take(&mut *self.answers.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(ProbeLog { sent: send.sent, answers, send_errors: send.errors, skipped: send.skipped })
    }
}

/// The longest time without an answer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Gap {
    /// The last answer before the gap (or the window's start).
    pub start: f64,
    /// The first answer after it (or the window's end).
    pub end: f64,
}

impl Gap {
    pub fn ms(&self) -> f64 {
        (self.end - self.start) * 1e3
    }
}

/// The longest stretch of `[from, to]` without any answer, from any unit.
/// The window's ends count as answers, so a client that never hears back
/// gets a gap reaching the end of the window.
pub fn longest_gap(answers: &[Answer], from: f64, to: f64) -> Gap {
    let mut times: Vec<f64> = answers.iter().map(|a| a.at).filter(|t| *t >= from && *t <= to).collect();
    times.sort_by(f64::total_cmp);
    let mut best = Gap { start: from, end: from };
    let mut prev = from;
    for t in times.into_iter().chain(std::iter::once(to)) {
        if t - prev > best.end - best.start {
            best = Gap { start: prev, end: t };
        }
        prev = t;
    }
    best
}

/// The first answer (in receive order) from `unit` received after `after`.
pub fn first_answer_from(answers: &[Answer], unit: u8, after: f64) -> Option<Answer> {
    answers.iter().find(|a| a.unit == unit && a.at > after).copied()
}

/// Answers from `old` received (in receive order) after the first answer
/// from `new` that came after `after`. Must be 0: once the new unit
/// answers, the old one must be silent.
pub fn old_after_new(answers: &[Answer], old: u8, new: u8, after: f64) -> usize {
    let Some(i) = answers.iter().position(|a| a.unit == new && a.at > after) else { return 0 };
    answers[i + 1..].iter().filter(|a| a.unit == old).count()
}

/// Probes answered by more than one unit (both units held the address and
/// both got the frame). Must be 0.
pub fn answered_twice(answers: &[Answer]) -> usize {
    let mut by_seq: Vec<(u64, u8)> = answers.iter().map(|a| (a.seq, a.unit)).collect();
    by_seq.sort_unstable();
    by_seq.dedup();
    by_seq.windows(2).filter(|w| w[0].0 == w[1].0).count()
}

/// Probes sent within `[from, to]` that no unit answered.
pub fn lost_probes(sent: &[Sent], answers: &[Answer], from: f64, to: f64) -> usize {
    let mut answered: Vec<u64> = answers.iter().map(|a| a.seq).collect();
    answered.sort_unstable();
    sent.iter().filter(|s| s.at >= from && s.at <= to).filter(|s| answered.binary_search(&s.seq).is_err()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(seq: u64, unit: u8, at: f64) -> Answer {
        Answer { seq, unit, at }
    }

    #[test]
    fn longest_gap_counts_window_ends() {
        let ans = [a(0, 1, 10.0), a(1, 1, 10.001), a(5, 2, 10.5), a(6, 2, 10.501)];
        let g = longest_gap(&ans, 9.999, 10.6);
        assert_eq!((g.start, g.end), (10.001, 10.5));
        // Nobody answers after the fault: the gap runs to the window's end.
        let g = longest_gap(&ans[..2], 9.999, 12.0);
        assert_eq!((g.start, g.end), (10.001, 12.0));
        // An empty window is one gap.
        assert!((longest_gap(&[], 1.0, 2.0).ms() - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn old_after_new_uses_receive_order() {
        let ans = [a(0, 1, 1.0), a(1, 1, 1.1), a(3, 2, 1.2), a(2, 1, 1.21), a(4, 2, 1.3)];
        assert_eq!(old_after_new(&ans, 1, 2, 0.5), 1);
        assert_eq!(old_after_new(&ans, 1, 2, 1.25), 0);
        assert_eq!(old_after_new(&ans[..2], 1, 2, 0.0), 0, "the new unit never answered");
        assert_eq!(first_answer_from(&ans, 2, 0.0), Some(a(3, 2, 1.2)));
        assert_eq!(first_answer_from(&ans, 2, 1.2), Some(a(4, 2, 1.3)));
    }

    #[test]
    fn twice_and_lost() {
        let ans = [a(0, 1, 1.0), a(1, 1, 1.1), a(1, 2, 1.1), a(1, 2, 1.1)];
        assert_eq!(answered_twice(&ans), 1);
        let sent: Vec<Sent> = (0..4).map(|s| Sent { seq: s, at: 1.0 + s as f64 * 0.1 }).collect();
        assert_eq!(lost_probes(&sent, &ans, 0.0, 2.0), 2);
        assert_eq!(lost_probes(&sent, &ans, 0.0, 1.15), 0);
    }
}
