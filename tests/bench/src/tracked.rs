//! Issue 18's figure: the role follows the health of the load balancer
//! itself. Each unit runs a real HAProxy (TCP `0.0.0.0:8081` to a backend
//! on `127.0.0.1:8090` in the same namespace, which answers every
//! connection with its unit's id), and the HA system watches it: duet with
//! a `[[track]]` process check, keepalived with a `vrrp_script`, both every
//! second with fall 2 and rise 2. Once the pair has settled, the active's
//! HAProxy is SIGKILLed. The client connects through the shared address
//! every 5 ms (each connection bounded, several under way at once) and
//! records which unit answered; a tcpdump in the client records the
//! gratuitous ARPs, `ip monitor` in both units the address moving.
//!
//! keepalived's check cannot be the usual `killall -0 haproxy`: the lab's
//! namespaces share one pid namespace, so it would see the other unit's
//! HAProxy. Each unit's script looks at its own HAProxy's pid file instead
//! (`kill -0 $(cat <pidfile>)`, the pid written by the benchmark when it
//! starts HAProxy). duet's check finds HAProxy by name among the processes
//! of its own network namespace.
//!
//! The kill comes at a phase that varies by repetition: repetition *i* of
//! *n* waits (*i* + 0.5)/*n* of the check interval. For keepalived the
//! phase is taken from its script's last run on the active (seen as the
//! script reading the pid file, through inotify), so that keepalived's
//! figures spread evenly over its timer; for duet the phase does not
//! matter (its process check holds a pidfd and sees the exit at once), and
//! the wait runs from the moment the pair was found settled.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use duet_proto::election::v1 as pb;
use duet_testkit::Proc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::capture::{self, Frame};
use crate::probe::NsThread;
use crate::report::{Goal, Spread, aligned, markdown, median, spread};
use crate::system::{Duet, DuetLaunch, Keepalived, System, SystemKind, Unit, VrrpScript, etcd_for, holders};
use duet_tests::{PairLab, SHARED, epoch_now, monitor_addresses, parse_addr_events};

/// HAProxy's frontend port (on every address of the unit).
pub const FRONT_PORT: u16 = 8081;
/// The backend each HAProxy forwards to, on the unit's loopback.
pub const BACKEND_PORT: u16 = 8090;
/// The check's name, in duet's unit file and keepalived's configuration.
pub const CHECK: &str = "haproxy";
/// keepalived's `vrrp_script`.
pub const VRRP_SCRIPT: &str = "chk_haproxy";

/// At most this many client connections under way at once.
const MAX_IN_FLIGHT: usize = 200;
/// How long a thread blocks before it looks at its stop flag again.
const POLL: Duration = Duration::from_millis(20);
/// Answers in a row from the active that make the client's view steady.
const STEADY: usize = 20;

/// What to run and the bounds of each step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrackedOptions {
    pub reps: usize,
    /// duet's kinds and keepalived's (v2, v3).
    pub systems: Vec<SystemKind>,
    pub duet_launch: DuetLaunch,
    /// The check's interval (keepalived: whole seconds), fall and rise.
    pub interval: Duration,
    pub fall: u32,
    pub rise: u32,
    /// A client connection starts every this long.
    pub probe_interval: Duration,
    /// Bound on a connection's handshake, then on its answer.
    pub connect_timeout: Duration,
    pub answer_timeout: Duration,
    /// How long the pair runs settled, serving, before the kill.
    pub settle: Duration,
    /// Bound on a pair's start (until one unit serves steadily).
    pub start_timeout: Duration,
    /// Bound on the move (until the other unit serves).
    pub recover_timeout: Duration,
    /// How long the client goes on after the other unit's first answer.
    pub tail: Duration,
}

impl Default for TrackedOptions {
    fn default() -> Self {
        Self {
            reps: 3,
            systems: vec![SystemKind::Duet, SystemKind::KeepalivedV2],
            duet_launch: DuetLaunch::Services,
            interval: Duration::from_secs(1),
            fall: 2,
            rise: 2,
            probe_interval: Duration::from_millis(5),
            connect_timeout: Duration::from_millis(50),
            answer_timeout: Duration::from_millis(200),
            settle: Duration::from_millis(1500),
            start_timeout: Duration::from_secs(30),
            recover_timeout: Duration::from_secs(15),
            tail: Duration::from_secs(1),
        }
    }
}

impl TrackedOptions {
    /// duet's check, as added to both unit files.
    pub fn track_toml(&self) -> String {
        format!(
            "[[track]]\nname = \"{CHECK}\"\nkind = \"process\"\nprocess = \"haproxy\"\ninterval_ms = {}\nfall = {}\nrise = {}\n",
            self.interval.as_millis(),
            self.fall,
            self.rise
        )
    }

    /// The bound of duet's goal: the exit is the first failure (seen at
    /// once), the others come an interval apart, then a planned handover.
    pub fn duet_bound_ms(&self) -> f64 {
        self.interval.as_secs_f64() * 1e3 * f64::from(self.fall.saturating_sub(1)) + 100.0
    }
}

// ------------------------------------------------------------------ client

/// How one client connection through the shared address ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Outcome {
    /// The unit with this id answered.
    Answered(u8),
    /// Refused (RST): the address is there, nothing listens.
    Refused,
    /// No handshake within the connect timeout (e.g. the client's ARP
    /// entry still points at a unit that gave the address up).
    ConnectTimeout,
    /// Connected, but no unit id within the answer timeout.
    NoAnswer,
    /// Any other error.
    Error,
}

/// One client connection.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Attempt {
    /// When it started and ended (wall-clock seconds).
    pub started: f64,
    pub done: f64,
    pub outcome: Outcome,
}

impl Attempt {
    pub fn answered_by(&self, unit: u8) -> bool {
        self.outcome == Outcome::Answered(unit)
    }
}

/// A client in a namespace that opens a TCP connection to a target every
/// interval (several may be under way at once, each bounded), reads the
/// answering unit's id, and records every attempt.
#[derive(Debug)]
pub struct TcpProber {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    thread: NsThread<()>,
}

impl TcpProber {
    pub fn start(ns: &str, target: SocketAddrV4, opts: &TrackedOptions) -> Result<Self> {
        let attempts = Arc::new(Mutex::new(Vec::with_capacity(1 << 12)));
        let log = Arc::clone(&attempts);
        let (every, connect, answer) = (opts.probe_interval, opts.connect_timeout, opts.answer_timeout);
        if every.is_zero() {
            bail!("a probe interval of 0");
        }
        let thread = NsThread::spawn(
            ns,
            "tcp prober",
            || Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?),
            move |rt: tokio::runtime::Runtime, stop| {
                rt.block_on(probe_loop(target, every, connect, answer, &log, stop));
            },
        )?;
        Ok(Self { attempts, thread })
    }

    /// The attempts finished so far, in the order they finished.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits for a finished attempt matching `pred`; returns it.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Attempt) -> bool) -> Result<Attempt> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = self.attempts.lock().unwrap_or_else(PoisonError::into_inner).iter().find(|a| pred(a)) {
                return Ok(*a);
            }
            if Instant::now() >= deadline {
                bail!("no such answer within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until the last [`STEADY`] attempts were all answered by
    /// `unit`, the latest of them in the last 200 ms.
    pub fn wait_steady(&self, unit: u8, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let a = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
                let n = a.len();
                if n >= STEADY
                    && a[n - STEADY..].iter().all(|x| x.answered_by(unit))
                    && a[n - 1].done > epoch_now() - 0.2
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("unit {unit} did not answer steadily within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops it; returns every attempt.
    pub fn stop(self) -> Result<Vec<Attempt>> {
        let Self { attempts, thread } = self;
        thread.stop()?;
        Ok(attempts.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

async fn probe_loop(
    target: SocketAddrV4,
    every: Duration,
    connect: Duration,
    answer: Duration,
    log: &Arc<Mutex<Vec<Attempt>>>,
    stop: &AtomicBool,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tasks = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        while tasks.try_join_next().is_some() {}
        if tasks.len() >= MAX_IN_FLIGHT {
            continue;
        }
        let log = Arc::clone(log);
        tasks.spawn(async move {
            let a = attempt(target, connect, answer).await;
            log.lock().unwrap_or_else(PoisonError::into_inner).push(a);
        });
    }
    // The attempts under way end within their bounds.
    let _ = tokio::time::timeout(connect + answer + POLL, async { while tasks.join_next().await.is_some() {} }).await;
}

async fn attempt(target: SocketAddrV4, connect: Duration, answer: Duration) -> Attempt {
    let started = epoch_now();
    let outcome = match tokio::time::timeout(connect, tokio::net::TcpStream::connect(target)).await {
        Err(_) => Outcome::ConnectTimeout,
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => Outcome::Refused,
        Ok(Err(_)) => Outcome::Error,
        Ok(Ok(mut s)) => match tokio::time::timeout(answer, read_unit(&mut s)).await {
            Ok(Some(u)) => Outcome::Answered(u),
            _ => Outcome::NoAnswer,
        },
    };
    Attempt { started, done: epoch_now(), outcome }
}

/// Reads one line, `unit <id>`, and returns the id.
async fn read_unit(s: &mut tokio::net::TcpStream) -> Option<u8> {
    let mut buf = Vec::with_capacity(16);
    let mut chunk = [0u8; 32];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.contains(&b'\n') || buf.len() > 64 {
            break;
        }
    }
    parse_answer(&buf)
}

/// `unit <id>\n` as the backend writes it.
pub fn parse_answer(b: &[u8]) -> Option<u8> {
    std::str::from_utf8(b).ok()?.lines().next()?.trim().strip_prefix("unit ")?.parse().ok()
}

// ----------------------------------------------------------------- backend

/// The real server behind a unit's HAProxy: `127.0.0.1:`[`BACKEND_PORT`]
/// in the unit's namespace, it writes `unit <id>\n` to every connection
/// and closes it.
#[derive(Debug)]
pub struct Backend {
    thread: NsThread<Result<u64>>,
}

impl Backend {
    pub fn start(ns: &str, unit: u8) -> Result<Self> {
        let thread = NsThread::spawn(
            ns,
            &format!("backend {unit}"),
            || {
                let l = std::net::TcpListener::bind(("127.0.0.1", BACKEND_PORT))
                    .with_context(|| format!("binding 127.0.0.1:{BACKEND_PORT}"))?;
                l.set_nonblocking(true)?;
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                Ok((l, rt))
            },
            move |(l, rt): (std::net::TcpListener, tokio::runtime::Runtime), stop| {
                rt.block_on(async move {
                    let l = tokio::net::TcpListener::from_std(l)?;
                    let line: Arc<str> = format!("unit {unit}\n").into();
                    let mut served = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(Ok((mut s, _))) = tokio::time::timeout(POLL, l.accept()).await {
                            served += 1;
                            let line = Arc::clone(&line);
                            tokio::spawn(async move {
                                let _ = s.write_all(line.as_bytes()).await;
                                let _ = s.shutdown().await;
                            });
                        }
                    }
                    Ok(served)
                })
            },
        )?;
        Ok(Self { thread })
    }

    /// Stops it; returns how many connections it answered.
    pub fn stop(self) -> Result<u64> {
        self.thread.stop()?
    }
}

// ----------------------------------------------------------------- HAProxy

/// HAProxy's configuration (the same in both units).
pub fn haproxy_config() -> String {
    format!(
        "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n\
         frontend fe\n  bind 0.0.0.0:{FRONT_PORT}\n  default_backend be\n\
         backend be\n  server s1 127.0.0.1:{BACKEND_PORT}\n"
    )
}

/// The pid file of `unit`'s HAProxy (written by the benchmark).
pub fn pidfile(l: &PairLab, unit: Unit) -> PathBuf {
    l.lab.dir().join(format!("haproxy-{}.pid", unit.id()))
}

/// keepalived's check of `unit`: its own HAProxy by pid file.
pub fn keepalived_check(l: &PairLab, unit: Unit) -> String {
    format!("/bin/sh -c 'kill -0 $(cat {})'", pidfile(l, unit).display())
}

/// Starts HAProxy (`haproxy -db -f`) in `unit`, writes its pid file, and
/// waits until it answers on its frontend inside the unit.
fn start_haproxy(l: &mut PairLab, unit: Unit, run: usize) -> Result<Proc> {
    let dir = l.lab.dir().to_owned();
    let cfg = dir.join(format!("haproxy-{}.cfg", unit.id()));
    std::fs::write(&cfg, haproxy_config())?;
    let pid_path = pidfile(l, unit);
    let _ = std::fs::remove_file(&pid_path);
    let host = unit.host(l);
    let mut p = l.lab.spawn(
        host,
        &format!("haproxy-{}-r{run}", unit.id()),
        &["haproxy", "-db", "-f", &cfg.to_string_lossy()],
        &[],
    )?;
    // `ip netns exec` execs HAProxy: the pid is HAProxy's.
    let tmp = dir.join(format!(".haproxy-{}.pid.tmp", unit.id()));
    std::fs::write(&tmp, format!("{}\n", p.pid()))?;
    std::fs::rename(&tmp, &pid_path)?;
    let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{FRONT_PORT} && read -t 1 line <&3 && echo \"$line\"");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = p.try_wait()? {
            bail!("HAProxy of {unit} exited at once ({status}): {}", p.log());
        }
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", p.pid())).unwrap_or_default();
        if comm.trim_end() == "haproxy"
            && let Ok(out) = l.lab.run(host, &["bash", "-c", &probe])
            && parse_answer(out.as_bytes()) == Some(unit.id())
        {
            return Ok(p);
        }
        if Instant::now() >= deadline {
            bail!("HAProxy of {unit} does not serve within 5 s (comm {:?}); log: {}", comm.trim_end(), p.log());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `path` is read (keepalived's script reading the pid file),
/// at most `timeout`; returns when.
fn next_read(path: &Path, timeout: Duration) -> Result<f64> {
    use nix::errno::Errno;
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).context("inotify")?;
    ino.add_watch(path, AddWatchFlags::IN_ACCESS).with_context(|| format!("watching {}", path.display()))?;
    let deadline = Instant::now() + timeout;
    loop {
        match ino.read_events() {
            Ok(ev) if !ev.is_empty() => return Ok(epoch_now()),
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(e) => return Err(e).context("reading inotify events"),
        }
        if Instant::now() >= deadline {
            bail!("{} was not read within {timeout:?} (the check did not run)", path.display());
        }
        thread::sleep(Duration::from_millis(1));
    }
}

// --------------------------------------------------------------- the run

/// One kill, measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TrackedResult {
    pub system: String,
    pub rep: usize,
    /// The unit whose HAProxy was killed (the active) and the other.
    pub old: u8,
    pub new: u8,
    /// Set when the harness could not measure this kill.
    pub error: Option<String>,
    /// The kill after the reference point: keepalived's script's last run
    /// on the active; for duet the moment the pair was found settled.
    pub phase_ms: Option<f64>,
    /// Kill to the client's first answer from the other unit.
    pub kill_to_serving_ms: Option<f64>,
    /// Kill to the first gratuitous ARP for the shared address from the
    /// other unit's MAC (client tcpdump).
    pub kill_to_garp_ms: Option<f64>,
    /// Kill to the other unit adding the shared address (`ip monitor`).
    pub kill_to_addr_ms: Option<f64>,
    /// Kill to the old unit removing it.
    pub kill_to_release_ms: Option<f64>,
    /// The client's last answer (any unit) before the kill to the first
    /// from the other unit.
    pub gap_ms: Option<f64>,
    /// Client connections started after the kill, until the other unit's
    /// first answer: refused, without handshake, without answer.
    pub refused: usize,
    pub connect_timeouts: usize,
    pub no_answer: usize,
    /// Answers from the old unit to connections started after the kill
    /// (must be 0: its HAProxy is dead).
    pub old_answers_after_kill: usize,
    /// Answers from the other unit in the last 500 ms of the run.
    pub answers_at_end: usize,
    pub old_holds_at_end: bool,
    pub new_holds_at_end: bool,
    /// The old unit's check is seen failing (duet: its GetStatus; keepalived:
    /// its log says the script failed).
    pub check_seen_failing: Option<bool>,
    pub attempts: usize,
}

impl TrackedResult {
    /// A correctness failure: the client not served again by the other
    /// unit, or the old unit keeping the address.
    pub fn correctness_failure(&self) -> Option<String> {
        if self.error.is_some() {
            return None;
        }
        if self.kill_to_serving_ms.is_none() || self.answers_at_end == 0 {
            return Some("the client was not served again by the other unit".into());
        }
        if self.old_holds_at_end {
            return Some("the unit whose HAProxy died kept the shared address".into());
        }
        if self.old_answers_after_kill > 0 {
            return Some(format!("{} answers from the old unit after the kill", self.old_answers_after_kill));
        }
        None
    }
}

/// Processes of one repetition besides the HA system's, killed after it.
#[derive(Debug, Default)]
struct RepProcs {
    haproxy: [Option<Proc>; 2],
    monitors: Vec<Proc>,
}

impl RepProcs {
    fn kill(&mut self) {
        for mut p in self.haproxy.iter_mut().filter_map(Option::take).chain(self.monitors.drain(..)) {
            if let Err(e) = p.kill() {
                eprintln!("duet-bench: stopping {}: {e:#}", p.label());
            }
        }
    }
}

fn slot(unit: Unit) -> usize {
    usize::from(unit.id() - 1)
}

/// Runs every system `opts.reps` times on `l` (systems interleaved within
/// a repetition); `progress` sees each result as it comes.
pub fn run_tracked(
    l: &mut PairLab,
    opts: &TrackedOptions,
    mut progress: impl FnMut(&TrackedResult),
) -> Result<Vec<TrackedResult>> {
    for k in &opts.systems {
        if !k.is_duet() && !matches!(k, SystemKind::KeepalivedV2 | SystemKind::KeepalivedV3) {
            bail!("{k} has no health check to track: duet's kinds and keepalived-v2, keepalived-v3 only");
        }
    }
    let keepalived = opts.systems.iter().any(|k| !k.is_duet());
    if keepalived && (opts.interval.subsec_nanos() != 0 || opts.interval.is_zero()) {
        bail!("keepalived's script interval is whole seconds: {:?}", opts.interval);
    }
    let etcd = etcd_for(l, &opts.systems)?;
    let backends = [Backend::start(&l.lab.ns(l.a), 1)?, Backend::start(&l.lab.ns(l.b), 2)?];
    let mut cap = capture::start(l, l.c, "tracked-capture")?;
    let macs = [l.lab.mac(l.a, "eth0")?, l.lab.mac(l.b, "eth0")?];
    let mut out = Vec::new();
    let mut run = 3000;
    for rep in 0..opts.reps {
        for &kind in &opts.systems {
            run += 1;
            let mut sys: Box<dyn System> = if kind.is_duet() {
                let mut d = Duet::new(opts.duet_launch, kind);
                d.witness = etcd.clone().filter(|_| kind.needs_etcd());
                d.extra = opts.track_toml();
                Box::new(d)
            } else {
                let mut k = Keepalived::new(if kind == SystemKind::KeepalivedV3 { 3 } else { 2 });
                let secs = u32::try_from(opts.interval.as_secs()).unwrap_or(u32::MAX);
                k.script = Some(VrrpScript {
                    name: VRRP_SCRIPT.into(),
                    commands: [keepalived_check(l, Unit::One), keepalived_check(l, Unit::Two)],
                    interval_s: secs,
                    fall: opts.fall,
                    rise: opts.rise,
                });
                Box::new(k)
            };
            let mut r = TrackedResult { system: kind.name().into(), rep, ..TrackedResult::default() };
            let mut procs = RepProcs::default();
            let outcome = start_haproxies(l, &mut procs, run)
                .and_then(|()| sys.start(l, run))
                .and_then(|()| measure(l, sys.as_mut(), &mut procs, &cap, &macs, opts, run, &mut r));
            if let Err(e) = outcome {
                r.error = Some(format!("{e:#}"));
            }
            if let Err(e) = sys.stop(l) {
                let msg = format!("stopping: {e:#}");
                r.error = Some(r.error.map_or(msg.clone(), |p| format!("{p}; {msg}")));
            }
            procs.kill();
            progress(&r);
            out.push(r);
        }
    }
    cap.kill()?;
    for b in backends {
        b.stop()?;
    }
    Ok(out)
}

fn start_haproxies(l: &mut PairLab, procs: &mut RepProcs, run: usize) -> Result<()> {
    for u in Unit::BOTH {
        procs.haproxy[slot(u)] = Some(start_haproxy(l, u, run)?);
    }
    Ok(())
}

/// Whether the system's checks pass on both units (duet: GetStatus; for
/// keepalived its readiness is the pair answering).
fn checks_pass(l: &PairLab, kind: SystemKind) -> bool {
    if !kind.is_duet() {
        return true;
    }
    Unit::BOTH.iter().all(|u| {
        l.status(u.host(l))
            .is_ok_and(|s| s.checks.iter().any(|c| c.name == CHECK && c.state == pb::CheckState::Passing as i32))
    })
}

/// Waits until exactly one unit holds the shared address, the system says
/// it is ready, the checks pass, and the client is served steadily by that
/// unit for the settle time; returns that unit.
fn settle(l: &PairLab, sys: &dyn System, prober: &TcpProber, opts: &TrackedOptions) -> Result<Unit> {
    let deadline = Instant::now() + opts.start_timeout;
    let mut last;
    loop {
        let h = holders(l)?;
        if let [active] = h[..] {
            if sys.ready(l, active)?
                && checks_pass(l, sys.kind())
                && prober.wait_steady(active.id(), Duration::from_secs(2)).is_ok()
            {
                thread::sleep(opts.settle);
                if holders(l)? == [active]
                    && checks_pass(l, sys.kind())
                    && prober.wait_steady(active.id(), Duration::from_millis(500)).is_ok()
                {
                    return Ok(active);
                }
                last = format!("{active} held the address but the pair was not stable");
            } else {
                last = format!("{active} holds the address; not ready, checks not passing or not serving yet");
            }
        } else {
            last = format!("holders of {SHARED}: {h:?}");
        }
        if Instant::now() >= deadline {
            bail!("{} did not settle within {:?}: {last}", sys.kind(), opts.start_timeout);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[allow(clippy::too_many_arguments)]
fn measure(
    l: &mut PairLab,
    sys: &mut dyn System,
    procs: &mut RepProcs,
    cap: &Proc,
    macs: &[String; 2],
    opts: &TrackedOptions,
    run: usize,
    r: &mut TrackedResult,
) -> Result<()> {
    let shared: Ipv4Addr = SHARED.parse().context("the shared address")?;
    let prober = TcpProber::start(&l.lab.ns(l.c), SocketAddrV4::new(shared, FRONT_PORT), opts)?;
    let old = settle(l, sys, &prober, opts)?;
    let new = old.other();
    (r.old, r.new) = (old.id(), new.id());
    for u in Unit::BOTH {
        let host = u.host(l);
        procs.monitors.push(monitor_addresses(&mut l.lab, host, &format!("addr-{}-r{run}", u.id()))?);
    }
    if holders(l)? != [old] {
        bail!("the active changed before the kill");
    }
    // The phase: repetition i of n waits (i + 0.5) / n of an interval after
    // the reference point.
    let fraction = (r.rep as f64 + 0.5) / opts.reps.max(1) as f64;
    let reference = if sys.kind().is_duet() {
        epoch_now()
    } else {
        next_read(&pidfile(l, old), opts.interval * 2 + Duration::from_millis(500))?
    };
    let at = reference + opts.interval.as_secs_f64() * fraction.min(1.0);
    let wait = at - epoch_now();
    if wait > 0.0 {
        thread::sleep(Duration::from_secs_f64(wait));
    }

    let t_kill = epoch_now();
    match procs.haproxy[slot(old)].take() {
        Some(mut p) => p.kill()?,
        None => bail!("HAProxy of {old} is not running"),
    }
    r.phase_ms = Some((t_kill - reference) * 1e3);
    let first = prober.wait_for(opts.recover_timeout, |a| a.answered_by(new.id()) && a.done > t_kill);
    if first.is_ok() {
        thread::sleep(opts.tail);
    }
    let held = holders(l)?;
    (r.old_holds_at_end, r.new_holds_at_end) = (held.contains(&old), held.contains(&new));
    r.check_seen_failing = Some(if sys.kind().is_duet() {
        l.status(old.host(l))
            .is_ok_and(|s| s.checks.iter().any(|c| c.name == CHECK && c.state == pb::CheckState::Failing as i32))
    } else {
        sys.procs_mut(old).first().is_some_and(|p| p.log().contains(&format!("VRRP_Script({VRRP_SCRIPT}) failed")))
    });
    let attempts = prober.stop()?;
    let t_end = attempts.iter().map(|a| a.done).fold(t_kill, f64::max);
    // tcpdump and `ip monitor` print a moment after the event.
    thread::sleep(Duration::from_millis(200));
    r.attempts = attempts.len();

    let first = attempts
        .iter()
        .filter(|a| a.answered_by(new.id()) && a.done > t_kill)
        .map(|a| a.done)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.min(t))));
    r.kill_to_serving_ms = first.map(|t| (t - t_kill) * 1e3);
    let last_before = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Answered(_)) && a.done <= t_kill)
        .map(|a| a.done)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    if let (Some(f), Some(b)) = (first, last_before) {
        r.gap_ms = Some((f - b) * 1e3);
    }
    let until = first.unwrap_or(t_end);
    let between = || attempts.iter().filter(|a| a.started > t_kill && a.started < until);
    r.refused = between().filter(|a| a.outcome == Outcome::Refused).count();
    r.connect_timeouts = between().filter(|a| a.outcome == Outcome::ConnectTimeout).count();
    r.no_answer = between().filter(|a| matches!(a.outcome, Outcome::NoAnswer | Outcome::Error)).count();
    r.old_answers_after_kill = attempts.iter().filter(|a| a.answered_by(old.id()) && a.started > t_kill).count();
    r.answers_at_end = attempts.iter().filter(|a| a.answered_by(new.id()) && a.done > t_end - 0.5).count();

    let new_mac = &macs[slot(new)];
    let frames: Vec<Frame> = capture::parse(&cap.log()).into_iter().filter(|f| f.at >= t_kill).collect();
    r.kill_to_garp_ms = frames
        .iter()
        .filter(|f| f.is_garp_for(shared) && &f.src_mac == new_mac)
        .map(|f| (f.at - t_kill) * 1e3)
        .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.min(d))));
    let event = |u: Unit, added: bool| {
        let log = procs.monitors[slot(u)].log();
        parse_addr_events(&log)
            .into_iter()
            .find(|e| e.added == added && e.at >= t_kill && e.addr.starts_with(&format!("{SHARED}/")))
            .map(|e| (e.at - t_kill) * 1e3)
    };
    r.kill_to_addr_ms = event(new, true);
    r.kill_to_release_ms = event(old, false);
    Ok(())
}

// ----------------------------------------------------------------- report

/// The figures of one system.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrackedSummary {
    pub system: String,
    pub reps: usize,
    pub errors: usize,
    pub kill_to_serving_ms: Option<Spread>,
    pub kill_to_garp_ms: Option<Spread>,
    pub kill_to_addr_ms: Option<f64>,
    pub kill_to_release_ms: Option<f64>,
    pub gap_ms: Option<f64>,
    /// Runs where the client was not served again by the other unit.
    pub not_served: usize,
    /// Runs where the old unit kept the address.
    pub old_held: usize,
    /// Runs where the old unit's check was seen failing.
    pub check_seen_failing: usize,
}

pub fn summarize(results: &[TrackedResult], opts: &TrackedOptions) -> Vec<TrackedSummary> {
    opts.systems
        .iter()
        .map(|k| {
            let all: Vec<&TrackedResult> = results.iter().filter(|r| r.system == k.name()).collect();
            let ok: Vec<&TrackedResult> = all.iter().copied().filter(|r| r.error.is_none()).collect();
            TrackedSummary {
                system: k.name().into(),
                reps: all.len(),
                errors: all.len() - ok.len(),
                kill_to_serving_ms: spread(ok.iter().filter_map(|r| r.kill_to_serving_ms)),
                kill_to_garp_ms: spread(ok.iter().filter_map(|r| r.kill_to_garp_ms)),
                kill_to_addr_ms: median(ok.iter().filter_map(|r| r.kill_to_addr_ms)),
                kill_to_release_ms: median(ok.iter().filter_map(|r| r.kill_to_release_ms)),
                gap_ms: median(ok.iter().filter_map(|r| r.gap_ms)),
                not_served: ok.iter().filter(|r| r.kill_to_serving_ms.is_none() || r.answers_at_end == 0).count(),
                old_held: ok.iter().filter(|r| r.old_holds_at_end).count(),
                check_seen_failing: ok.iter().filter(|r| r.check_seen_failing == Some(true)).count(),
            }
        })
        .collect()
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn sp(x: Option<Spread>) -> String {
    x.map_or_else(|| "-".into(), |g| format!("{:.1} / {:.1} / {:.1}", g.min, g.median, g.max))
}

fn rows(s: &[TrackedSummary]) -> Vec<Vec<String>> {
    let head = [
        "system",
        "reps",
        "kill->serving min/med/max ms",
        "kill->GARP min/med/max ms",
        "kill->addr ms",
        "kill->released ms",
        "gap ms",
        "old kept addr",
        "check failing",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| (*h).to_owned()).collect()];
    for x in s {
        let reps = if x.errors > 0 { format!("{} ({} err)", x.reps, x.errors) } else { x.reps.to_string() };
        rows.push(vec![
            x.system.clone(),
            reps,
            sp(x.kill_to_serving_ms),
            sp(x.kill_to_garp_ms),
            num(x.kill_to_addr_ms),
            num(x.kill_to_release_ms),
            num(x.gap_ms),
            x.old_held.to_string(),
            format!("{}/{}", x.check_seen_failing, x.reps - x.errors),
        ]);
    }
    rows
}

/// The summaries (medians), aligned, in ms.
pub fn table(s: &[TrackedSummary]) -> String {
    aligned(&rows(s))
}

pub fn table_markdown(s: &[TrackedSummary]) -> String {
    markdown(&rows(s))
}

fn rep_rows(results: &[TrackedResult]) -> Vec<Vec<String>> {
    let head = [
        "system",
        "rep",
        "unit",
        "phase ms",
        "kill->serving ms",
        "kill->GARP ms",
        "kill->addr ms",
        "kill->released ms",
        "refused/no SYN-ACK/no answer",
        "old kept addr",
        "check failing",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| (*h).to_owned()).collect()];
    for r in results {
        if let Some(e) = &r.error {
            rows.push(vec![r.system.clone(), (r.rep + 1).to_string(), format!("ERROR {e}")]);
            continue;
        }
        rows.push(vec![
            r.system.clone(),
            (r.rep + 1).to_string(),
            format!("{} -> {}", r.old, r.new),
            num(r.phase_ms),
            num(r.kill_to_serving_ms),
            num(r.kill_to_garp_ms),
            num(r.kill_to_addr_ms),
            num(r.kill_to_release_ms),
            format!("{}/{}/{}", r.refused, r.connect_timeouts, r.no_answer),
            if r.old_holds_at_end { "yes".into() } else { "no".into() },
            r.check_seen_failing.map_or_else(|| "-".into(), |c| if c { "yes".into() } else { "no".into() }),
        ]);
    }
    rows
}

/// One line per repetition, aligned, in ms.
pub fn rep_table(results: &[TrackedResult]) -> String {
    aligned(&rep_rows(results))
}

/// The goals: duet moves the role within its bound and no later than
/// keepalived; the client is served again and the old unit gives the
/// address up, every run.
pub fn goals(s: &[TrackedSummary], results: &[TrackedResult], opts: &TrackedOptions) -> Vec<Goal> {
    let mut out = Vec::new();
    let med = |name: &str| s.iter().find(|x| x.system == name).and_then(|x| x.kill_to_serving_ms).map(|g| g.median);
    let bound = opts.duet_bound_ms();
    for x in s.iter().filter(|x| x.system.starts_with("duet")) {
        let m = x.kill_to_serving_ms.map(|g| g.median);
        out.push(Goal {
            goal: format!(
                "{} kill->serving median <= interval x (fall - 1) + 100 ms ({bound:.0} ms): the exit seen at once",
                x.system
            ),
            measured: m.map_or_else(|| "-".into(), |m| format!("{m:.1} ms")),
            pass: m.map(|m| m <= bound),
            correctness: false,
        });
    }
    for duet in s.iter().filter(|x| x.system.starts_with("duet")) {
        for peer in ["keepalived-v2", "keepalived-v3"] {
            if let (Some(d), Some(k)) = (med(&duet.system), med(peer)) {
                out.push(Goal {
                    goal: format!("{} kill->serving median <= {peer}'s with vrrp_script (same run)", duet.system),
                    measured: format!("{d:.1} ms vs {k:.1} ms"),
                    pass: Some(d <= k),
                    correctness: false,
                });
            }
        }
    }
    let unserved: usize = s.iter().map(|x| x.not_served).sum();
    out.push(Goal {
        goal: "the client is served by the other unit after every kill".into(),
        measured: format!("{unserved} runs not"),
        pass: Some(unserved == 0),
        correctness: true,
    });
    let held: usize = s.iter().map(|x| x.old_held).sum();
    out.push(Goal {
        goal: "the unit whose HAProxy died gives the shared address up".into(),
        measured: format!("{held} runs kept it"),
        pass: Some(held == 0),
        correctness: true,
    });
    let old: usize = results.iter().filter(|r| r.error.is_none()).map(|r| r.old_answers_after_kill).sum();
    out.push(Goal {
        goal: "no answer from the old unit after the kill".into(),
        measured: format!("{old}"),
        pass: Some(old == 0),
        correctness: true,
    });
    let errors: usize = s.iter().map(|x| x.errors).sum();
    out.push(Goal {
        goal: "every run measured".into(),
        measured: format!("{errors} failed"),
        pass: Some(errors == 0),
        correctness: true,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(parse_answer(b"unit 2\n"), Some(2));
        assert_eq!(parse_answer(b"unit 1"), Some(1));
        assert_eq!(parse_answer(b""), None);
        assert_eq!(parse_answer(b"hello\n"), None);
    }

    #[test]
    fn duet_track_and_bound() {
        let o = TrackedOptions::default();
        let t = o.track_toml();
        for line in
            ["[[track]]", "kind = \"process\"", "process = \"haproxy\"", "interval_ms = 1000", "fall = 2", "rise = 2"]
        {
            assert!(t.contains(line), "{line} missing in\n{t}");
        }
        assert!((o.duet_bound_ms() - 1100.0).abs() < 1e-9);
    }

    #[test]
    fn summaries_and_goals() {
        let opts = TrackedOptions::default();
        let ok = |system: &str, ms: f64| TrackedResult {
            system: system.into(),
            old: 1,
            new: 2,
            kill_to_serving_ms: Some(ms),
            kill_to_garp_ms: Some(ms - 1.0),
            answers_at_end: 100,
            check_seen_failing: Some(true),
            ..TrackedResult::default()
        };
        let results = vec![ok("duet", 1003.0), ok("keepalived-v2", 2100.0), ok("duet", 1005.0)];
        let s = summarize(&results, &opts);
        assert_eq!(s[0].kill_to_serving_ms.map(|g| g.median), Some(1004.0));
        let g = goals(&s, &results, &opts);
        assert!(g.iter().all(|g| g.pass == Some(true)), "{g:?}");
        assert!(table(&s).contains("1003.0 / 1004.0 / 1005.0"));
        assert!(rep_table(&results).contains("1 -> 2"));
        let kept = TrackedResult { old_holds_at_end: true, ..ok("duet", 1000.0) };
        assert!(kept.correctness_failure().is_some());
        let g = goals(&summarize(&[kept], &opts), &[], &opts);
        assert_eq!(g.iter().filter(|g| g.correctness && g.pass == Some(false)).count(), 1);
    }
}
