//! The replication benchmark (issue 8): duet's replicator against
//! keepalived + conntrackd in FTFW mode ([`crate::conntrackd`]), in the same
//! run, on the load-balancer lab ([`LbLab`]: client, two units with the same
//! nftables DNAT data plane, a real server behind them).
//!
//! Three parts:
//!
//! - **Survival** ([`run_survival`]): per system and repetition a fresh lab
//!   and pair, the virtual service, K client connections each sending 16
//!   bytes every 100 ms (`duet-conns`); once all are answered and the
//!   standby holds K entries (duet: its replicator's flows; conntrackd: its
//!   external cache), bounded, the active is crashed (SIGKILL of everything
//!   in its namespace, then eth0 and eth1 down) and the client goes on for
//!   at least 8 s. Connections ok / reset / hung out of K and the data gap.
//! - **Throughput and cost** ([`run_throughput`]): on a settled pair, N
//!   synthetic established DNAT'd TCP flows go into the active's kernel in
//!   one ctnetlink upsert (the kernel sends the same NEW events as for real
//!   connections); the time until the standby holds all N (duet: its
//!   kernel's conntrack count; conntrackd: its external cache), entries/s,
//!   duet's lag, CPU per entry and RSS of the replication processes of both
//!   units (`duet-replicator`; `conntrackd`).
//! - **Role to state usable** (with the largest N): duet crashes the active
//!   and reads the new active's takeover report (`state_wait_us`) and its
//!   kernel's conntrack count when it is seen active; conntrackd times
//!   `conntrackd -c` (commit of the external cache) on the backup.
//!
//! Like the failover benchmark it is a measurement harness: figures that
//! miss a goal are reported, only runs that could not be measured count as
//! failures.
//!
//! Over 600 lines: three parts of one benchmark (survival, throughput, role
//! to state) over the same lab and the same two systems.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use duet_net::conntrack::{Conntrack, Flow};
use duet_proto::common::v1::Role;
use duet_proto::config::v1::{Image, Protocol, RealServer, Scheduler, VirtualService};
use duet_testkit::{Proc, in_netns, wait_for};

use crate::conntrack::established_flow;
use crate::conntrackd::{CtdPair, NotifyLine};
use crate::procfs;
use crate::report::{Goal, aligned, median};
use crate::system::Unit;
use duet_tests::conns::ClientReport;
use duet_tests::lblab::{self, LbLab};
use duet_tests::{SHARED, bin, pids_of};

/// duet's flow refresh period in the benchmark: the default (the lab's
/// unit configuration uses 5 s for the tests).
pub const DUET_REFRESH_S: u64 = 30;

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ReplSystem {
    /// duet: `duet unit` (election, takeover, configsync, replicator).
    Duet,
    /// keepalived 2.2 + conntrackd 1.4 FTFW, strict data plane
    /// (`nf_conntrack_tcp_loose=0`, as duet).
    Conntrackd,
    /// The same with `nf_conntrack_tcp_loose=1` (the kernel's default):
    /// mid-stream segments without state are picked up as new connections.
    ConntrackdLoose,
}

impl ReplSystem {
    pub const ALL: [Self; 3] = [Self::Duet, Self::Conntrackd, Self::ConntrackdLoose];

    pub fn name(self) -> &'static str {
        match self {
            Self::Duet => "duet",
            Self::Conntrackd => "conntrackd",
            Self::ConntrackdLoose => "conntrackd-loose",
        }
    }

    /// The command name of its replication processes.
    pub fn process(self) -> &'static str {
        match self {
            Self::Duet => "duet-replicator",
            Self::Conntrackd | Self::ConntrackdLoose => "conntrackd",
        }
    }
}

impl fmt::Display for ReplSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ReplSystem {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown system {s:?} (one of {})", Self::ALL.map(Self::name).join(", ")))
    }
}

/// What to run and the bounds of each step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicationOptions {
    /// Repetitions of the survival run per system.
    pub reps: usize,
    /// Client connections (K).
    pub conns: usize,
    /// Synthetic flow counts of the throughput runs (N); the largest also
    /// measures role -> state usable.
    pub flows: Vec<usize>,
    /// Systems of the survival runs.
    pub survival: Vec<ReplSystem>,
    /// Systems of the throughput runs.
    pub throughput: Vec<ReplSystem>,
    /// The client goes on at least this long after the crash.
    pub after_crash: Duration,
    /// Bound on the standby catching up with the K connections (from all
    /// of them answered); the crash comes then even if it has not.
    pub sync_bound: Duration,
    /// Least time between all connections answered and the crash.
    pub settle: Duration,
    /// Bound on a pair's start.
    pub start_timeout: Duration,
    /// Bound on the standby holding all N synthetic flows.
    pub flows_timeout: Duration,
    /// Wait after the standby holds all N before CPU and RSS are read
    /// (acknowledgements and other trailing work).
    pub trailing: Duration,
}

impl Default for ReplicationOptions {
    fn default() -> Self {
        Self {
            reps: 4,
            conns: 1000,
            flows: vec![10_000, 100_000],
            survival: vec![ReplSystem::Duet, ReplSystem::Conntrackd],
            throughput: vec![ReplSystem::Duet, ReplSystem::Conntrackd],
            after_crash: Duration::from_secs(8),
            sync_bound: Duration::from_secs(6),
            settle: Duration::from_secs(1),
            start_timeout: Duration::from_secs(30),
            flows_timeout: Duration::from_secs(90),
            trailing: Duration::from_secs(1),
        }
    }
}

// ------------------------------------------------------------------ results

/// One survival run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SurvivalRep {
    pub system: String,
    pub rep: usize,
    /// Set when the harness could not measure this run.
    pub error: Option<String>,
    pub conns: usize,
    /// The client's report.
    pub established: usize,
    pub ok: usize,
    pub reset: usize,
    pub hung: usize,
    pub failed_connect: usize,
    pub gap_p50_ms: f64,
    pub gap_p99_ms: f64,
    pub gap_max_ms: f64,
    pub client_errors: Vec<String>,
    /// Entries the standby held when the active was crashed.
    pub standby_entries: u64,
    /// All connections answered to the standby holding K entries.
    pub sync_ms: Option<f64>,
    /// How long the client went on after the crash.
    pub after_crash_s: f64,
    /// Crash to the shared address on the other unit (polled every 10 ms).
    pub crash_to_address_ms: Option<f64>,
    /// duet: the new active's takeover report (R4, state before address).
    pub state_installed: Option<bool>,
    pub state_wait_us: Option<u64>,
    /// conntrackd: the new master's notify script, from its start to
    /// `conntrackd -c` done, and whether the shared address was already up
    /// when it started (keepalived adds it first).
    pub commit_ms: Option<f64>,
    pub address_before_commit: Option<bool>,
    pub notify: Vec<NotifyLine>,
}

/// The survival runs of one system.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SurvivalSummary {
    pub system: String,
    pub reps: usize,
    pub errors: usize,
    pub conns: usize,
    /// Connections ok, per measured repetition.
    pub survived: Vec<usize>,
    pub reset: usize,
    pub hung: usize,
    pub failed_connect: usize,
    /// Every measured repetition kept all K.
    pub all_survived: bool,
    /// Median over the repetitions of the connections' p50 gap, and the
    /// largest p99 gap.
    pub gap_p50_ms: Option<f64>,
    pub gap_p99_ms: Option<f64>,
    pub crash_to_address_ms: Option<f64>,
    /// Medians: duet's state wait, conntrackd's commit in the notify script.
    pub state_wait_ms: Option<f64>,
    pub commit_ms: Option<f64>,
    /// Repetitions whose new master had the address before the commit.
    pub address_before_commit: usize,
}

/// Role -> state usable with N entries.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StateUsable {
    pub flows: usize,
    pub error: Option<String>,
    /// The figure against the goal: duet's takeover state wait;
    /// conntrackd's commit until the kernel holds all N.
    pub usable_ms: Option<f64>,
    /// Entries in the kernel table of the unit taking over (less those it
    /// had before the injection): for duet when it is first seen active,
    /// for conntrackd after the commit.
    pub kernel_entries: Option<u64>,
    /// duet: crash to the standby seen active (polled), and its takeover
    /// report.
    pub crash_to_active_ms: Option<f64>,
    pub state_installed: Option<bool>,
    pub state_wait_us: Option<u64>,
    /// conntrackd: `conntrackd -c` on the backup, and start of it to the
    /// kernel holding all N.
    pub commit_ms: Option<f64>,
    pub commit_to_kernel_ms: Option<f64>,
}

/// One throughput run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ThroughputRun {
    pub system: String,
    pub flows: usize,
    pub error: Option<String>,
    /// The upsert into the active's kernel: its duration and outcome.
    pub inject_ms: Option<f64>,
    pub injected: usize,
    pub inject_failed: usize,
    /// Start of the upsert to the standby holding all N.
    pub to_standby_ms: Option<f64>,
    pub entries_per_s: Option<f64>,
    /// What the standby holds after the run (duet: replicator flows;
    /// conntrackd: external cache).
    pub standby_held: Option<u64>,
    /// duet: the active replicator's lag (change to acknowledgement).
    pub lag_p50_us: Option<u64>,
    pub lag_p99_us: Option<u64>,
    /// CPU time of the replication processes over the run, per entry.
    pub active_cpu_us_per_entry: Option<f64>,
    pub standby_cpu_us_per_entry: Option<f64>,
    pub total_cpu_us_per_entry: Option<f64>,
    /// VmRSS of the replication processes before and after.
    pub active_rss_kib_before: Option<u64>,
    pub standby_rss_kib_before: Option<u64>,
    pub active_rss_kib: Option<u64>,
    pub standby_rss_kib: Option<u64>,
    /// Kernel event overruns on the active (duet's counter; conntrackd's
    /// "netlink overrun").
    pub overruns: Option<u64>,
    pub state: Option<StateUsable>,
}

// ------------------------------------------------------------------- the lab

/// The virtual service of [`LbLab::add_service`] as an image, for units
/// whose data plane is programmed directly.
pub fn service_image() -> Image {
    let vs = VirtualService {
        name: "web".into(),
        address: SHARED.into(),
        port: u32::from(lblab::VS_PORT),
        protocol: Protocol::Tcp as i32,
        scheduler: Scheduler::RoundRobin as i32,
        real_servers: vec![RealServer {
            address: lblab::SERVER.into(),
            port: u32::from(lblab::SERVER_PORT),
            weight: 1,
            enabled: true,
        }],
        persistence: None,
        enabled: true,
    };
    let mut image = Image { generation: 1, virtual_services: vec![vs], ..Image::default() };
    image.hash = duet_image::content_hash(&image);
    image
}

/// duet's data plane on both units of `l`: its nftables table for
/// [`service_image`] and its kernel settings (strict TCP tracking), then
/// `nf_conntrack_tcp_loose=1` if `loose`.
pub fn program_dataplane(l: &LbLab, loose: bool) -> Result<()> {
    let ruleset = duet_dataplane::render(&service_image()).map_err(|p| anyhow!("rendering the data plane: {p:?}"))?;
    for h in [l.l.a, l.l.b] {
        let rs = ruleset.clone();
        in_netns(&l.l.lab.ns(h), move || -> Result<()> {
            duet_dataplane::apply(&rs)?;
            // Not restored: the namespace goes with the lab.
            let _previous = duet_dataplane::set_sysctls()?;
            Ok(())
        })??;
        if loose {
            l.l.lab.run(h, &["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=1"])?;
        }
    }
    Ok(())
}

/// `n` established client connections to the virtual service, DNAT'd to
/// the real server, from 198.18.1.0/24 upwards (500 ports per address).
pub fn synthetic_flows(n: usize) -> Vec<Flow> {
    let vip = SocketAddrV4::new(SHARED.parse().expect("a literal address"), lblab::VS_PORT);
    let server = SocketAddrV4::new(lblab::SERVER.parse().expect("a literal address"), lblab::SERVER_PORT);
    (0..n)
        .map(|i| {
            let k = i / 500;
            let src = Ipv4Addr::new(198, 18, 1 + (k / 250 % 254) as u8, 1 + (k % 250) as u8);
            let sport = 10_000 + (i % 500) as u16;
            established_flow(SocketAddrV4::new(src, sport), vip, server, 0)
        })
        .collect()
}

/// The kernel's conntrack entry count in namespace `ns`.
pub fn kernel_count(ns: &str) -> Result<u64> {
    in_netns(ns, read_count)?
}

/// `nf_conntrack_count` of the calling thread's namespace (net sysctls
/// follow the thread).
fn read_count() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")?;
    Ok(text.trim().parse()?)
}

/// The kernel's conntrack entries for the virtual service (original
/// destination 198.18.0.10:80) in namespace `ns`, from a dump.
pub fn service_flows(ns: &str) -> Result<u64> {
    let vip: Ipv4Addr = SHARED.parse().expect("a literal address");
    in_netns(ns, move || -> Result<u64> {
        let mut ct = Conntrack::open()?;
        Ok(ct.dump_filtered(|f| f.orig.dst == vip && f.orig.dport == lblab::VS_PORT)?.len() as u64)
    })?
}

/// SIGSTOP to every process in namespace `ns`, three times over (a
/// process may fork while we look), so that none of them can react to
/// what comes next: a crash is a unit that stops at once. Without it
/// keepalived's VRRP process, whose parent-death signal is SIGTERM, may
/// resign with a priority 0 advert when its parent is killed first.
pub fn freeze_all(ns: &str) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for _ in 0..3 {
        for p in duet_testkit::pids_in(ns)? {
            if let Ok(raw) = i32::try_from(p) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGSTOP);
            }
        }
    }
    Ok(())
}

/// A pair of one system running on a lab.
#[derive(Debug)]
enum Pair {
    Duet { units: [Option<Proc>; 2] },
    Ctd(CtdPair),
}

impl Pair {
    /// Starts `sys` on `l` and waits until it is settled: unit 1 active with
    /// the virtual service programmed on both units, unit 2 standby and
    /// resynced.
    fn start(l: &mut LbLab, sys: ReplSystem, opts: &ReplicationOptions, run: &str) -> Result<Self> {
        match sys {
            ReplSystem::Duet => {
                let refresh = format!("refresh_interval_s = {DUET_REFRESH_S}\n");
                let mut c1 = l.unit_config("lb1", "first", "lb1", "lb2")?;
                let mut c2 = l.unit_config("lb2", "second", "lb2", "lb1")?;
                for c in [&mut c1, &mut c2] {
                    c.extra = c.extra.replace("refresh_interval_s = 5\n", &refresh);
                }
                let (a, b) = (l.l.a, l.l.b);
                let u1 = l.l.unit(a, &c1)?;
                let u2 = l.l.unit(b, &c2)?;
                let pair = Self::Duet { units: [Some(u1), Some(u2)] };
                l.l.wait_role(a, Role::Active, opts.start_timeout)?;
                l.l.wait_role(b, Role::Standby, opts.start_timeout)?;
                l.add_service(a, None)?;
                wait_for(
                    "duet's replicators linked and resynced",
                    opts.start_timeout,
                    Duration::from_millis(100),
                    || {
                        let sa = l.replicator_status(a).ok()?;
                        let sb = l.replicator_status(b).ok()?;
                        (sa.partner_connected && sa.mode == "sending" && sb.resync == "done" && sb.ready).then_some(())
                    },
                )?;
                Ok(pair)
            }
            ReplSystem::Conntrackd | ReplSystem::ConntrackdLoose => {
                program_dataplane(l, sys == ReplSystem::ConntrackdLoose)?;
                let pair = CtdPair::start(l, run)?;
                pair.wait_settled(l, opts.start_timeout)?;
                Ok(Self::Ctd(pair))
            }
        }
    }

    /// Entries the standby (unit 2) holds ready.
    fn standby_entries(&self, l: &LbLab) -> Result<u64> {
        match self {
            Self::Duet { .. } => Ok(l.replicator_status(l.l.b)?.flows),
            Self::Ctd(p) => p.external(Unit::Two),
        }
    }

    /// Everything in the unit's namespace stopped ([`freeze_all`]) and
    /// SIGKILLed, then eth0 and eth1 down (in this order, so that nothing
    /// of it can resign first).
    fn crash(&mut self, l: &LbLab, unit: Unit) -> Result<()> {
        let host = unit.host(&l.l);
        freeze_all(&l.l.lab.ns(host))?;
        duet_testkit::kill_all_in(&l.l.lab.ns(host))?;
        l.l.lab.link_down(host, "eth0")?;
        l.l.lab.link_down(host, "eth1")?;
        let procs: Vec<Proc> = match self {
            Self::Duet { units } => units[usize::from(unit.id() - 1)].take().into_iter().collect(),
            Self::Ctd(p) => p.procs_mut(unit).drain(..).collect(),
        };
        for mut p in procs {
            p.kill()?;
        }
        Ok(())
    }
}

/// What runs on a lab during one measurement. Dropped, it first kills
/// everything in the lab's namespaces (fast, and nothing is left to
/// linger), then reaps its processes.
#[derive(Debug)]
struct Running {
    namespaces: Vec<String>,
    procs: Vec<Proc>,
    pair: Option<Pair>,
}

impl Running {
    fn new(l: &LbLab) -> Self {
        let namespaces = [l.l.a, l.l.b, l.l.c, l.s].into_iter().map(|h| l.l.lab.ns(h)).collect();
        Self { namespaces, procs: Vec::new(), pair: None }
    }

    fn pair(&mut self) -> Result<&mut Pair> {
        self.pair.as_mut().context("no pair running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            if let Err(e) = duet_testkit::kill_all_in(ns) {
                eprintln!("duet-bench: clearing {ns}: {:#}", anyhow::Error::from(e));
            }
        }
    }
}

/// With `DUET_BENCH_TRACE=DIR`, the logs and configurations of a run that
/// could not be measured are copied to `DIR/<name>/`.
fn keep_logs(l: &LbLab, name: &str) {
    let Some(dir) = std::env::var_os(crate::failover::TRACE_ENV) else { return };
    let to = Path::new(&dir).join(name);
    let copy = || -> Result<()> {
        std::fs::create_dir_all(&to)?;
        for e in std::fs::read_dir(l.l.lab.dir())?.flatten() {
            let p = e.path();
            let keep = p.extension().is_some_and(|x| x == "log" || x == "conf" || x == "toml" || x == "sh");
            if keep && let Some(n) = p.file_name() {
                std::fs::copy(&p, to.join(n))?;
            }
        }
        Ok(())
    };
    if let Err(e) = copy() {
        eprintln!("duet-bench: keeping the logs of {name}: {e:#}");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Polls `f` every `every` until it holds, at most `timeout`; how long it
/// took.
fn poll_until(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        thread::sleep(every);
    }
}

// ------------------------------------------------------------------ survival

/// Runs the survival repetitions: for each repetition, every system in
/// `opts.survival` once, each on a fresh lab.
pub fn run_survival(opts: &ReplicationOptions, mut progress: impl FnMut(&SurvivalRep)) -> Vec<SurvivalRep> {
    let mut out = Vec::new();
    for rep in 0..opts.reps {
        for &sys in &opts.survival {
            let r = survival_rep(sys, rep, opts);
            progress(&r);
            out.push(r);
        }
    }
    out
}

/// One survival run of `sys`. Harness errors are in the result's `error`.
pub fn survival_rep(sys: ReplSystem, rep: usize, opts: &ReplicationOptions) -> SurvivalRep {
    let mut r = SurvivalRep { system: sys.name().into(), rep, conns: opts.conns, ..SurvivalRep::default() };
    match LbLab::new("rpsurv") {
        Ok(mut l) => {
            if let Err(e) = survival_measure(&mut l, sys, rep, opts, &mut r) {
                r.error = Some(format!("{e:#}"));
                keep_logs(&l, &format!("survival-{sys}-rep{}", rep + 1));
            }
        }
        Err(e) => r.error = Some(format!("building the lab: {e:#}")),
    }
    r
}

fn survival_measure(
    l: &mut LbLab,
    sys: ReplSystem,
    rep: usize,
    opts: &ReplicationOptions,
    r: &mut SurvivalRep,
) -> Result<()> {
    let mut run = Running::new(l);
    run.procs.push(l.server()?);
    run.pair = Some(Pair::start(l, sys, opts, &format!("r{}", rep + 1))?);
    let k = opts.conns;
    // The client keeps the connections this long once all are answered:
    // the crash comes at most `sync_bound` after that.
    let duration = opts.sync_bound + opts.after_crash + Duration::from_secs(1);
    let ready = l.l.lab.dir().join("conns.ready");
    let json = l.l.lab.dir().join("conns.json");
    let exe = bin("duet-conns").to_string_lossy().into_owned();
    let ramp_ms = (k as u64).clamp(100, 2000);
    run.procs.push(l.l.lab.spawn(
        l.l.c,
        "conns",
        &[
            &exe,
            "client",
            "--target",
            &format!("{SHARED}:{}", lblab::VS_PORT),
            "--conns",
            &k.to_string(),
            "--duration-s",
            &duration.as_secs().to_string(),
            "--ramp-ms",
            &ramp_ms.to_string(),
            "--ready-file",
            &ready.to_string_lossy(),
            "--json",
            &json.to_string_lossy(),
        ],
        &[],
    )?);
    wait_for("all connections open and answered", opts.start_timeout, Duration::from_millis(20), || {
        ready.exists().then_some(())
    })?;
    let ready_at = Instant::now();

    // The standby holds K entries (bounded), and the pair runs a moment.
    let mut synced = None;
    let entries = loop {
        let e = run.pair()?.standby_entries(l).unwrap_or(0);
        let el = ready_at.elapsed();
        if e >= k as u64 && synced.is_none() {
            synced = Some(el);
        }
        if (synced.is_some() && el >= opts.settle) || el >= opts.sync_bound {
            break e;
        }
        thread::sleep(Duration::from_millis(50));
    };
    r.standby_entries = entries;
    r.sync_ms = synced.map(ms);

    let crash_at = Instant::now();
    run.pair()?.crash(l, Unit::One)?;
    r.after_crash_s = (ready_at + duration).saturating_duration_since(crash_at).as_secs_f64();
    let b = l.l.b;
    r.crash_to_address_ms = poll_until(Duration::from_secs(15), Duration::from_millis(10), || {
        l.l.lab.addr_present(b, "eth0", SHARED).unwrap_or(false)
    })
    .map(|_| ms(crash_at.elapsed()));
    match run.pair()? {
        Pair::Duet { .. } => {
            l.l.wait_role(b, Role::Active, Duration::from_secs(15))?;
            let tk =
                wait_for("the takeover report of unit 2", Duration::from_secs(5), Duration::from_millis(20), || {
                    l.l.status(b).ok()?.takeover.filter(|t| t.applied_role == Role::Active as i32)
                })?;
            r.state_installed = Some(tk.state_installed);
            r.state_wait_us = Some(tk.state_wait_us);
        }
        Pair::Ctd(p) => {
            let lines =
                wait_for("the master notify of unit 2", Duration::from_secs(20), Duration::from_millis(50), || {
                    let lines = p.notify_lines(Unit::Two);
                    let start = lines.iter().rposition(|x| x.state == "master" && x.what.starts_with("begin"))?;
                    let tail = &lines[start..];
                    tail.iter().any(|x| x.what == "end").then(|| tail.to_vec())
                })?;
            let begin = &lines[0];
            r.address_before_commit = Some(begin.what.contains("vip=yes"));
            r.commit_ms =
                lines.iter().find(|x| x.what.starts_with("conntrackd -c ")).map(|x| (x.at - begin.at) * 1000.0);
            r.notify = lines;
        }
    }

    let text = wait_for("the client's report", duration + Duration::from_secs(30), Duration::from_millis(200), || {
        std::fs::read_to_string(&json).ok().filter(|t| t.trim_end().ends_with('}'))
    })?;
    let c: ClientReport = serde_json::from_str(&text).with_context(|| format!("the client's report {text:?}"))?;
    r.established = c.established;
    r.ok = c.ok;
    r.reset = c.reset;
    r.hung = c.hung;
    r.failed_connect = c.failed_connect;
    r.gap_p50_ms = c.gap_p50_ms;
    r.gap_p99_ms = c.gap_p99_ms;
    r.gap_max_ms = c.gap_max_ms;
    r.client_errors = c.errors;
    Ok(())
}

/// One summary per system of `opts.survival` present in `reps`.
pub fn summarize_survival(reps: &[SurvivalRep], opts: &ReplicationOptions) -> Vec<SurvivalSummary> {
    let mut out = Vec::new();
    for sys in &opts.survival {
        let all: Vec<&SurvivalRep> = reps.iter().filter(|r| r.system == sys.name()).collect();
        if all.is_empty() {
            continue;
        }
        let ok: Vec<&SurvivalRep> = all.iter().copied().filter(|r| r.error.is_none()).collect();
        out.push(SurvivalSummary {
            system: sys.name().into(),
            reps: all.len(),
            errors: all.len() - ok.len(),
            conns: opts.conns,
            survived: ok.iter().map(|r| r.ok).collect(),
            reset: ok.iter().map(|r| r.reset).sum(),
            hung: ok.iter().map(|r| r.hung).sum(),
            failed_connect: ok.iter().map(|r| r.failed_connect).sum(),
            all_survived: !ok.is_empty() && ok.iter().all(|r| r.ok == r.conns),
            gap_p50_ms: median(ok.iter().map(|r| r.gap_p50_ms)),
            gap_p99_ms: ok.iter().map(|r| r.gap_p99_ms).reduce(f64::max),
            crash_to_address_ms: median(ok.iter().filter_map(|r| r.crash_to_address_ms)),
            state_wait_ms: median(ok.iter().filter_map(|r| r.state_wait_us).map(|u| u as f64 / 1000.0)),
            commit_ms: median(ok.iter().filter_map(|r| r.commit_ms)),
            address_before_commit: ok.iter().filter(|r| r.address_before_commit == Some(true)).count(),
        });
    }
    out
}

// ---------------------------------------------------------------- throughput

/// Runs every system of `opts.throughput` at every flow count of
/// `opts.flows`, each on a fresh lab; the largest count also measures role
/// -> state usable.
pub fn run_throughput(opts: &ReplicationOptions, mut progress: impl FnMut(&ThroughputRun)) -> Vec<ThroughputRun> {
    let largest = opts.flows.iter().copied().max().unwrap_or(0);
    let mut out = Vec::new();
    for &n in &opts.flows {
        for &sys in &opts.throughput {
            let r = throughput_run(sys, n, n == largest, opts);
            progress(&r);
            out.push(r);
        }
    }
    out
}

/// One throughput run of `sys` with `n` flows (and the role -> state
/// measurement if `state`). Harness errors are in the result's `error`.
pub fn throughput_run(sys: ReplSystem, n: usize, state: bool, opts: &ReplicationOptions) -> ThroughputRun {
    let mut r = ThroughputRun { system: sys.name().into(), flows: n, ..ThroughputRun::default() };
    match LbLab::new("rpflows") {
        Ok(mut l) => {
            if let Err(e) = throughput_measure(&mut l, sys, n, state, opts, &mut r) {
                r.error = Some(format!("{e:#}"));
                keep_logs(&l, &format!("throughput-{sys}-{n}"));
            }
            if r.state.as_ref().is_some_and(|s| s.error.is_some()) {
                keep_logs(&l, &format!("state-{sys}-{n}"));
            }
        }
        Err(e) => r.error = Some(format!("building the lab: {e:#}")),
    }
    r
}

/// CPU time (ns) of each pid, as a map: from `/proc/<pid>/stat`, so that
/// a pool thread exiting inside the window keeps its time
/// ([`procfs::process_cpu_ns`]).
fn cpu_of(pids: &[u32], tick: u64) -> Vec<(u32, u64)> {
    pids.iter().filter_map(|&p| Some((p, procfs::process_cpu_ns(p, tick)?))).collect()
}

/// CPU time (ns) used since `before` by the pids still alive.
fn cpu_since(before: &[(u32, u64)], tick: u64) -> Option<u64> {
    let mut total = 0;
    for (p, t0) in before {
        total += procfs::process_cpu_ns(*p, tick)?.saturating_sub(*t0);
    }
    Some(total)
}

fn rss_of(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| procfs::rss_kib(p)).sum()
}

fn throughput_measure(
    l: &mut LbLab,
    sys: ReplSystem,
    n: usize,
    state: bool,
    opts: &ReplicationOptions,
    r: &mut ThroughputRun,
) -> Result<()> {
    let mut run = Running::new(l);
    run.pair = Some(Pair::start(l, sys, opts, "t")?);
    thread::sleep(opts.settle);
    let (a, b) = (l.l.a, l.l.b);
    let (ns_a, ns_b) = (l.l.lab.ns(a), l.l.lab.ns(b));
    let flows = synthetic_flows(n);
    let mut ct = in_netns(&ns_a, Conntrack::open)??;
    let base_b = kernel_count(&ns_b)?;
    let tick = procfs::clock_ticks();
    let pids: Vec<Vec<u32>> = [a, b].into_iter().map(|h| pids_of(&l.l.lab, h, sys.process())).collect();
    if pids.iter().any(Vec::is_empty) {
        bail!("no {} process on a unit: {pids:?}", sys.process());
    }
    let cpu0: Vec<Vec<(u32, u64)>> = pids.iter().map(|p| cpu_of(p, tick)).collect();
    r.active_rss_kib_before = rss_of(&pids[0]);
    r.standby_rss_kib_before = rss_of(&pids[1]);

    let t0 = Instant::now();
    let injector = thread::spawn(move || {
        let start = Instant::now();
        let report = ct.upsert(&flows);
        (report, start.elapsed())
    });
    let target = n as u64;
    let done = match run.pair()? {
        Pair::Duet { .. } => {
            // The standby's kernel, read from a thread in its namespace:
            // nothing asks the replicator anything meanwhile.
            let timeout = opts.flows_timeout;
            let raw = in_netns(&ns_b, move || -> Result<Option<Duration>> {
                loop {
                    if read_count()? >= base_b + target {
                        return Ok(Some(t0.elapsed()));
                    }
                    if t0.elapsed() >= timeout {
                        return Ok(None);
                    }
                    thread::sleep(Duration::from_millis(2));
                }
            })??;
            // Other entries (the harness's own gRPC calls) may have come
            // meanwhile: a dump confirms, or the wait goes on with dumps.
            match raw {
                Some(_) if service_flows(&ns_b)? >= target => raw,
                Some(_) => poll_until(timeout.saturating_sub(t0.elapsed()), Duration::from_millis(10), || {
                    service_flows(&ns_b).unwrap_or(0) >= target
                })
                .map(|_| t0.elapsed()),
                None => None,
            }
        }
        Pair::Ctd(p) => {
            poll_until(opts.flows_timeout, Duration::from_millis(20), || p.external(Unit::Two).unwrap_or(0) >= target)
                .map(|_| t0.elapsed())
        }
    };
    let (report, injected_in) = injector.join().map_err(|_| anyhow!("the injecting thread panicked"))?;
    let report = report.context("injecting the flows into the active's kernel")?;
    r.inject_ms = Some(ms(injected_in));
    r.injected = report.created + report.updated;
    r.inject_failed = report.failed;
    let Some(done) = done else {
        let held = match run.pair()? {
            Pair::Duet { .. } => service_flows(&ns_b)?,
            Pair::Ctd(p) => p.external(Unit::Two).unwrap_or(0),
        };
        bail!("the standby held {held} of {n} entries after {:?}", opts.flows_timeout);
    };
    r.to_standby_ms = Some(ms(done));
    r.entries_per_s = Some(n as f64 / done.as_secs_f64());

    thread::sleep(opts.trailing);
    let per_entry = |ns: Option<u64>| ns.map(|v| v as f64 / 1000.0 / n as f64);
    let (ca, cb) = (cpu_since(&cpu0[0], tick), cpu_since(&cpu0[1], tick));
    r.active_cpu_us_per_entry = per_entry(ca);
    r.standby_cpu_us_per_entry = per_entry(cb);
    r.total_cpu_us_per_entry = per_entry(ca.zip(cb).map(|(x, y)| x + y));
    r.active_rss_kib = rss_of(&pids[0]);
    r.standby_rss_kib = rss_of(&pids[1]);
    match run.pair()? {
        Pair::Duet { .. } => {
            let sa = l.replicator_status(a)?;
            r.lag_p50_us = Some(sa.lag_p50_us);
            r.lag_p99_us = Some(sa.lag_p99_us);
            r.overruns = sa.drops.get("kernel_event_overruns").copied();
            r.standby_held = Some(l.replicator_status(b)?.flows);
        }
        Pair::Ctd(p) => {
            r.overruns = p.stats(Unit::One).ok().map(|s| s.netlink_overruns);
            r.standby_held = p.stats(Unit::Two).ok().map(|s| s.external);
        }
    }

    if state {
        let mut s = StateUsable { flows: n, ..StateUsable::default() };
        if let Err(e) = state_measure(l, run.pair()?, n, base_b, &mut s) {
            s.error = Some(format!("{e:#}"));
        }
        r.state = Some(s);
    }
    Ok(())
}

/// Role -> state usable with `n` entries replicated (`base_b`: unit 2's
/// kernel entries before the injection).
fn state_measure(l: &LbLab, pair: &mut Pair, n: usize, base_b: u64, s: &mut StateUsable) -> Result<()> {
    let b = l.l.b;
    let ns_b = l.l.lab.ns(b);
    match pair {
        Pair::Duet { .. } => {
            let t = Instant::now();
            pair.crash(l, Unit::One)?;
            poll_until(Duration::from_secs(20), Duration::from_millis(5), || l.l.role(b) == Some(Role::Active))
                .context("unit 2 did not become active within 20 s")?;
            s.crash_to_active_ms = Some(ms(t.elapsed()));
            // Counted right away; nothing removes them afterwards.
            s.kernel_entries = Some(service_flows(&ns_b)?);
            let tk =
                wait_for("the takeover report of unit 2", Duration::from_secs(5), Duration::from_millis(20), || {
                    l.l.status(b).ok()?.takeover.filter(|t| t.applied_role == Role::Active as i32)
                })?;
            s.state_installed = Some(tk.state_installed);
            s.state_wait_us = Some(tk.state_wait_us);
            s.usable_ms = Some(tk.state_wait_us as f64 / 1000.0);
        }
        Pair::Ctd(p) => {
            let t = Instant::now();
            p.client(Unit::Two, &["-c"])?;
            s.commit_ms = Some(ms(t.elapsed()));
            let target = base_b + n as u64;
            let all = poll_until(Duration::from_secs(30), Duration::from_millis(2), || {
                kernel_count(&ns_b).unwrap_or(0) >= target
            });
            s.kernel_entries = Some(service_flows(&ns_b)?);
            let Some(_) = all else {
                bail!("after the commit unit 2's kernel held {:?} of {n} entries", s.kernel_entries);
            };
            s.commit_to_kernel_ms = Some(ms(t.elapsed()));
            s.usable_ms = s.commit_to_kernel_ms;
        }
    }
    Ok(())
}

// -------------------------------------------------------------------- report

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// Thousands separated by commas.
fn grouped(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The survival summaries (rows; the first is the header).
pub fn survival_rows(s: &[SurvivalSummary]) -> Vec<Vec<String>> {
    let head = [
        "system",
        "reps",
        "survived of K per rep",
        "reset",
        "hung",
        "no connect",
        "gap p50 ms",
        "gap p99 ms",
        "crash->address ms",
        "state",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| (*h).to_owned()).collect()];
    for x in s {
        let reps = if x.errors > 0 { format!("{} ({} err)", x.reps, x.errors) } else { x.reps.to_string() };
        let survived =
            format!("{} of {}", x.survived.iter().map(ToString::to_string).collect::<Vec<_>>().join(" / "), x.conns);
        let state = match (x.state_wait_ms, x.commit_ms) {
            (Some(w), _) => format!("state wait {w:.1} ms before the address"),
            (None, Some(c)) => {
                format!("commit {c:.0} ms after the address ({} of {} reps)", x.address_before_commit, x.survived.len())
            }
            (None, None) => "-".into(),
        };
        rows.push(vec![
            x.system.clone(),
            reps,
            survived,
            x.reset.to_string(),
            x.hung.to_string(),
            x.failed_connect.to_string(),
            opt(x.gap_p50_ms, 0),
            opt(x.gap_p99_ms, 0),
            opt(x.crash_to_address_ms, 0),
            state,
        ]);
    }
    rows
}

/// The throughput runs (rows; the first is the header).
pub fn throughput_rows(t: &[ThroughputRun]) -> Vec<Vec<String>> {
    let head = [
        "system",
        "flows",
        "to standby ms",
        "entries/s",
        "lag p50/p99 us",
        "CPU us/entry active/standby/total",
        "RSS MiB active/standby",
        "overruns",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| (*h).to_owned()).collect()];
    for x in t {
        if let Some(e) = &x.error {
            rows.push(vec![x.system.clone(), x.flows.to_string(), format!("ERROR {e}")]);
            continue;
        }
        let lag = match (x.lag_p50_us, x.lag_p99_us) {
            (Some(a), Some(b)) => format!("{} / {}", grouped(a as f64), grouped(b as f64)),
            _ => "-".into(),
        };
        rows.push(vec![
            x.system.clone(),
            grouped(x.flows as f64),
            opt(x.to_standby_ms, 0),
            x.entries_per_s.map_or_else(|| "-".into(), grouped),
            lag,
            format!(
                "{} / {} / {}",
                opt(x.active_cpu_us_per_entry, 2),
                opt(x.standby_cpu_us_per_entry, 2),
                opt(x.total_cpu_us_per_entry, 2)
            ),
            format!("{} / {}", mib(x.active_rss_kib), mib(x.standby_rss_kib)),
            x.overruns.map_or_else(|| "-".into(), |o| o.to_string()),
        ]);
    }
    rows
}

/// Role -> state usable (rows; the first is the header).
pub fn state_rows(t: &[ThroughputRun]) -> Vec<Vec<String>> {
    let head = ["system", "flows", "role->state usable ms", "how", "entries in the new active's kernel"];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| (*h).to_owned()).collect()];
    for x in t {
        let Some(s) = &x.state else { continue };
        if let Some(e) = &s.error {
            rows.push(vec![x.system.clone(), grouped(s.flows as f64), format!("ERROR {e}")]);
            continue;
        }
        let how = if s.state_wait_us.is_some() {
            format!(
                "takeover state wait (installed {}), crash->active {} ms; entries counted when seen active",
                s.state_installed.unwrap_or(false),
                opt(s.crash_to_active_ms, 0)
            )
        } else {
            format!("conntrackd -c returned after {} ms; entries counted after it", opt(s.commit_ms, 0))
        };
        rows.push(vec![
            x.system.clone(),
            grouped(s.flows as f64),
            opt(s.usable_ms, 1),
            how,
            s.kernel_entries.map_or_else(|| "-".into(), |k| grouped(k as f64)),
        ]);
    }
    rows
}

/// The three tables as aligned text.
pub fn tables(s: &[SurvivalSummary], t: &[ThroughputRun]) -> String {
    let mut out = String::new();
    if !s.is_empty() {
        out.push_str("Survival (crash of the active):\n");
        out.push_str(&aligned(&survival_rows(s)));
        out.push('\n');
    }
    if !t.is_empty() {
        out.push_str("Throughput and cost:\n");
        out.push_str(&aligned(&throughput_rows(t)));
        out.push('\n');
        if t.iter().any(|x| x.state.is_some()) {
            out.push_str("Role -> state usable:\n");
            out.push_str(&aligned(&state_rows(t)));
            out.push('\n');
        }
    }
    out
}

/// The goals against the run, conntrackd's figures beside duet's.
pub fn goals(surv: &[SurvivalRep], s: &[SurvivalSummary], t: &[ThroughputRun]) -> Vec<Goal> {
    let mut out = Vec::new();
    let find = |sys: ReplSystem| s.iter().find(|x| x.system == sys.name());
    if let Some(d) = find(ReplSystem::Duet) {
        let kept: usize = d.survived.iter().sum();
        let beside = find(ReplSystem::Conntrackd)
            .map(|c| format!(" (conntrackd: {} of {})", c.survived.iter().sum::<usize>(), c.survived.len() * c.conns))
            .unwrap_or_default();
        out.push(Goal {
            goal: "duet: all K connections survive a crash of the active, every repetition".into(),
            measured: format!("{kept} of {} in {} reps{beside}", d.survived.len() * d.conns, d.survived.len()),
            pass: (!d.survived.is_empty()).then_some(d.all_survived),
            correctness: false,
        });
    }
    let largest = t.iter().map(|x| x.flows).max();
    let at =
        |sys: ReplSystem| t.iter().find(|x| Some(x.flows) == largest && x.system == sys.name() && x.error.is_none());
    if let Some(n) = largest {
        let (d, c) = (at(ReplSystem::Duet), at(ReplSystem::Conntrackd));
        let beside =
            |f: &dyn Fn(&ThroughputRun) -> String| c.map(|c| format!(" (conntrackd: {})", f(c))).unwrap_or_default();
        let rate = |x: &ThroughputRun| x.entries_per_s.map_or_else(|| "-".into(), |v| format!("{}/s", grouped(v)));
        out.push(Goal {
            goal: format!("duet: >= 200,000 entries/s to the standby at {} flows", grouped(n as f64)),
            measured: format!("{}{}", d.map_or_else(|| "-".into(), rate), beside(&rate)),
            pass: d.and_then(|d| d.entries_per_s).map(|v| v >= 200_000.0),
            correctness: false,
        });
        let cpu = |x: &ThroughputRun| format!("{} us", opt(x.total_cpu_us_per_entry, 2));
        out.push(Goal {
            goal: format!("duet: <= 5 us CPU per entry, both units together, at {} flows", grouped(n as f64)),
            measured: format!("{}{}", d.map_or_else(|| "-".into(), cpu), beside(&cpu)),
            pass: d.and_then(|d| d.total_cpu_us_per_entry).map(|v| v <= 5.0),
            correctness: false,
        });
        let rss = |x: &ThroughputRun| format!("{} / {} MiB", mib(x.active_rss_kib), mib(x.standby_rss_kib));
        out.push(Goal {
            goal: format!(
                "duet: RSS <= 40 MB (38.1 MiB) on each unit at {} flows (active / standby)",
                grouped(n as f64)
            ),
            measured: format!("{}{}", d.map_or_else(|| "-".into(), rss), beside(&rss)),
            pass: d
                .and_then(|d| d.active_rss_kib.zip(d.standby_rss_kib))
                .map(|(x, y)| x.max(y) as f64 * 1024.0 <= 40e6),
            correctness: false,
        });
        let st = |x: &ThroughputRun| {
            x.state.as_ref().and_then(|s| s.usable_ms).map_or_else(|| "-".into(), |v| format!("{v:.1} ms"))
        };
        let d_state = d.and_then(|d| d.state.as_ref());
        let entries = d_state
            .and_then(|s| s.kernel_entries)
            .map_or_else(String::new, |k| format!(", {} entries in its kernel when active", grouped(k as f64)));
        out.push(Goal {
            goal: format!("duet: role -> state usable <= 100 ms (or zero) for {} flows", grouped(n as f64)),
            measured: format!("{}{entries}{}", d.map_or_else(|| "-".into(), st), beside(&st)),
            pass: d_state.and_then(|s| s.usable_ms.zip(s.kernel_entries)).map(|(v, k)| v <= 100.0 && k >= n as u64),
            correctness: false,
        });
    }
    let failed = surv.iter().filter(|r| r.error.is_some()).count()
        + t.iter().filter(|x| x.error.is_some()).count()
        + t.iter().filter(|x| x.state.as_ref().is_some_and(|s| s.error.is_some())).count();
    let total = surv.len() + t.len() + t.iter().filter(|x| x.state.is_some()).count();
    out.push(Goal {
        goal: "every run measured (no harness or start errors)".into(),
        measured: format!("{failed} of {total} failed"),
        pass: Some(failed == 0),
        correctness: true,
    });
    out
}

/// The whole run, as written to JSON.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicationReport {
    pub command: String,
    pub started_at: f64,
    pub finished_at: f64,
    pub host: crate::report::HostInfo,
    pub conntrackd: String,
    pub options: ReplicationOptions,
    pub survival_summaries: Vec<SurvivalSummary>,
    pub goals: Vec<Goal>,
    pub survival: Vec<SurvivalRep>,
    pub throughput: Vec<ThroughputRun>,
}

impl ReplicationReport {
    /// Whether every correctness goal holds (every run measured).
    pub fn correct(&self) -> bool {
        crate::report::correct(&self.goals)
    }
}

/// `conntrackd -v`'s first line.
pub fn conntrackd_version() -> String {
    std::process::Command::new("conntrackd")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ReplSystem::ALL {
            assert_eq!(k.name().parse::<ReplSystem>(), Ok(k));
        }
        assert!("keepalived".parse::<ReplSystem>().is_err());
    }

    #[test]
    fn synthetic_flows_are_distinct_dnat_flows() {
        let f = synthetic_flows(100_000);
        let set: std::collections::HashSet<duet_net::conntrack::Tuple> = f.iter().map(|x| x.orig).collect();
        assert_eq!(set.len(), 100_000);
        assert!(f.iter().all(|x| x.dnat() == Some((lblab::SERVER.parse().unwrap(), lblab::SERVER_PORT))));
        assert!(f.iter().all(|x| x.orig.src.octets()[..3] != [198, 18, 0]), "a lab address is used");
    }

    #[test]
    fn the_service_renders() {
        let rs = duet_dataplane::render(&service_image()).expect("renders");
        assert_eq!(rs.services().len(), 1);
    }

    #[test]
    fn goals_and_tables() {
        let rep = |system: &str, ok| SurvivalRep {
            system: system.into(),
            conns: 10,
            ok,
            reset: 10 - ok,
            ..SurvivalRep::default()
        };
        let reps = vec![rep("duet", 10), rep("conntrackd", 7)];
        let opts = ReplicationOptions { conns: 10, ..ReplicationOptions::default() };
        let s = summarize_survival(&reps, &opts);
        assert!(s[0].all_survived && !s[1].all_survived);
        let t = vec![ThroughputRun {
            system: "duet".into(),
            flows: 100_000,
            entries_per_s: Some(250_000.0),
            total_cpu_us_per_entry: Some(6.0),
            active_rss_kib: Some(20_000),
            standby_rss_kib: Some(30_000),
            ..ThroughputRun::default()
        }];
        let g = goals(&reps, &s, &t);
        let pass: Vec<Option<bool>> = g.iter().map(|g| g.pass).collect();
        assert_eq!(pass, [Some(true), Some(true), Some(false), Some(true), None, Some(true)], "{g:?}");
        assert!(g[0].measured.contains("conntrackd: 7 of 10"), "{}", g[0].measured);
        let text = tables(&s, &t);
        assert!(text.contains("10 of 10") && text.contains("250,000"), "{text}");
        assert_eq!(grouped(1_234_567.0), "1,234,567");
    }
}
