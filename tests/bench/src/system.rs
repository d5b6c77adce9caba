//! The HA systems under test, each started as a pair on the standard lab:
//! duet (with and without the witness, E14), keepalived (VRRPv2 and
//! VRRPv3) and ucarp.
//!
//! A [`System`] starts both units, says when it is ready to be measured,
//! and applies the three faults to one unit. Which unit is active is not
//! its business: the benchmark looks at which namespace holds the shared
//! address ([`holders`]).
//!
//! Over 600 lines: one start, readiness check and fault set per system under
//! test (duet with and without the witness, keepalived v2 and v3, ucarp),
//! side by side so they stay comparable.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use duet_proto::common::v1::Role;
use duet_testkit::{EtcdCluster, HostId, Lab, Proc};
use nix::sys::signal::Signal;

use duet_tests::{PairLab, SHARED, UNIT1, UNIT2, UnitConfig, bin};

/// How long a graceful stop may take before the process is killed.
const STOP_GRACE: Duration = Duration::from_secs(6);

/// One unit of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Unit {
    /// Unit 1: 198.18.0.1, host `a`.
    One,
    /// Unit 2: 198.18.0.2, host `b`.
    Two,
}

impl Unit {
    pub const BOTH: [Self; 2] = [Self::One, Self::Two];

    /// The id its responder answers with: 1 or 2.
    pub fn id(self) -> u8 {
        match self {
            Self::One => 1,
            Self::Two => 2,
        }
    }

    fn index(self) -> usize {
        usize::from(self.id() - 1)
    }

    pub fn other(self) -> Self {
        match self {
            Self::One => Self::Two,
            Self::Two => Self::One,
        }
    }

    pub fn host(self, l: &PairLab) -> HostId {
        match self {
            Self::One => l.a,
            Self::Two => l.b,
        }
    }

    /// Its own address.
    pub fn addr(self) -> Ipv4Addr {
        match self {
            Self::One => UNIT1,
            Self::Two => UNIT2,
        }
        .parse()
        .expect("a literal address")
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unit {}", self.id())
    }
}

/// The systems the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum SystemKind {
    /// duet, HA timeout 3 s, preferred none.
    Duet,
    /// duet's fast profile: adverts every 20 ms, takeover after 4 missed
    /// (80 ms), preferred none.
    DuetFast,
    /// keepalived 2.2, VRRPv2, `advert_int 1`.
    KeepalivedV2,
    /// keepalived 2.2, VRRPv3, `advert_int 0.1`.
    KeepalivedV3,
    /// ucarp 1.5, advbase 1 s, deadratio 3.
    Ucarp,
    /// duet as [`Duet`](Self::Duet) with a witness (E14): a three-member
    /// etcd cluster with TLS in the lab, policy prefer, lease TTL 3 s (the
    /// HA timeout).
    DuetWitness,
    /// duet's fast profile with a witness (lease TTL 2 s, etcd's minimum).
    DuetFastWitness,
    /// duet's fast profile at keepalived VRRPv3's interval: adverts every
    /// 100 ms, takeover after 3 missed (keepalived's down interval is also 3
    /// adverts plus its skew).
    DuetFast100,
    /// issue 14's moonshot: adverts every 10 ms, takeover after 3 missed.
    DuetFast10,
}

impl SystemKind {
    /// The systems a run compares by default.
    pub const ALL: [Self; 6] =
        [Self::Duet, Self::DuetFast, Self::DuetFast100, Self::KeepalivedV2, Self::KeepalivedV3, Self::Ucarp];
    /// Not in a default run (named with `--systems`).
    pub const EXTRA: [Self; 1] = [Self::DuetFast10];
    /// duet with a witness (they need an etcd cluster in the lab).
    pub const WITNESS: [Self; 2] = [Self::DuetWitness, Self::DuetFastWitness];

    pub fn name(self) -> &'static str {
        match self {
            Self::Duet => "duet",
            Self::DuetFast => "duet-fast",
            Self::KeepalivedV2 => "keepalived-v2",
            Self::KeepalivedV3 => "keepalived-v3",
            Self::Ucarp => "ucarp",
            Self::DuetWitness => "duet-witness",
            Self::DuetFastWitness => "duet-fast-witness",
            Self::DuetFast100 => "duet-fast-100",
            Self::DuetFast10 => "duet-fast-10",
        }
    }

    /// Whether it needs the lab's etcd cluster.
    pub fn needs_etcd(self) -> bool {
        Self::WITNESS.contains(&self)
    }

    /// duet's kinds.
    pub fn is_duet(self) -> bool {
        matches!(
            self,
            Self::Duet
                | Self::DuetFast
                | Self::DuetWitness
                | Self::DuetFastWitness
                | Self::DuetFast100
                | Self::DuetFast10
        )
    }

    /// duet's fast profile settings of the kind, `None` for the standard
    /// profile and the other systems.
    pub fn fast(self) -> Option<FastProfile> {
        match self {
            Self::DuetFast | Self::DuetFastWitness => Some(FastProfile::BENCH),
            Self::DuetFast100 => Some(FastProfile::AT_100_MS),
            Self::DuetFast10 => Some(FastProfile::AT_10_MS),
            _ => None,
        }
    }

    /// How often the active unit adverts.
    pub fn advert_interval(self) -> Duration {
        match self {
            Self::KeepalivedV3 => Duration::from_millis(100),
            Self::DuetFast | Self::DuetFastWitness | Self::DuetFast100 | Self::DuetFast10 => {
                self.fast().map_or(Duration::ZERO, |f| Duration::from_millis(f.interval_ms))
            }
            Self::Duet | Self::DuetWitness | Self::KeepalivedV2 | Self::Ucarp => Duration::from_secs(1),
        }
    }

    /// A fresh, stopped instance; the witness kinds use `etcd` (which they
    /// need: see [`needs_etcd`](Self::needs_etcd)).
    pub fn system(self, duet: DuetLaunch, etcd: Option<&Arc<EtcdCluster>>) -> Box<dyn System> {
        match self {
            Self::Duet | Self::DuetFast | Self::DuetFast100 | Self::DuetFast10 => Box::new(Duet::new(duet, self)),
            Self::DuetWitness | Self::DuetFastWitness => {
                let mut d = Duet::new(duet, self);
                d.witness = etcd.cloned();
                Box::new(d)
            }
            Self::KeepalivedV2 => Box::new(Keepalived::new(2)),
            Self::KeepalivedV3 => Box::new(Keepalived::new(3)),
            Self::Ucarp => Box::new(Ucarp::default()),
        }
    }
}

impl fmt::Display for SystemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SystemKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let all = || Self::ALL.into_iter().chain(Self::WITNESS).chain(Self::EXTRA);
        all().find(|k| k.name() == s).ok_or_else(|| {
            format!("unknown system {s:?} (one of {})", all().map(Self::name).collect::<Vec<_>>().join(", "))
        })
    }
}

/// Timestamps of a duet unit's last role change and its takeover.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DuetTimes {
    /// The election's `role_since` (wall-clock seconds).
    pub role_since: Option<f64>,
    /// When the takeover service received the role event.
    pub role_received_at: Option<f64>,
    /// When it had added the shared addresses.
    pub addresses_at: Option<f64>,
    /// When it sent the first gratuitous ARP.
    pub first_garp_at: Option<f64>,
    /// Where the takeover times come from: "takeover" (its own GetStatus)
    /// or "election" (what takeover reported to the election).
    pub source: String,
}

/// Advert interval of duet's fast profile in the benchmark.
pub const FAST_INTERVAL_MS: u64 = 20;

/// A fast profile as the unit file sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastProfile {
    /// `ha.fast_interval_ms`.
    pub interval_ms: u64,
    /// `ha.fast_dead_factor`.
    pub dead_factor: u32,
}

impl FastProfile {
    /// The benchmark's fast profile: [`FAST_INTERVAL_MS`], four missed.
    pub const BENCH: Self = Self { interval_ms: FAST_INTERVAL_MS, dead_factor: 4 };
    /// keepalived VRRPv3's interval in the benchmark, three missed.
    pub const AT_100_MS: Self = Self { interval_ms: 100, dead_factor: 3 };
    /// issue 14's moonshot: 10 ms, three missed.
    pub const AT_10_MS: Self = Self { interval_ms: 10, dead_factor: 3 };

    /// Adverts on the wire are every `ceil(interval x 256) / 256` s (advskew
    /// in 1/256 s); the standby takes over after `dead_factor` of them.
    pub fn down_on_the_wire(self) -> Duration {
        let skew = (self.interval_ms * 256).div_ceil(1000);
        Duration::from_micros(skew * 1_000_000 / 256) * self.dead_factor
    }
}

/// An HA system started as a pair on a [`PairLab`].
pub trait System: fmt::Debug {
    fn kind(&self) -> SystemKind;

    /// Starts both units; `run` numbers the starts (for log labels).
    fn start(&mut self, l: &mut PairLab, run: usize) -> Result<()>;

    /// Whether the pair is ready to be measured, `active` holding the
    /// shared address (e.g. the standby knows it is standby).
    fn ready(&self, _l: &PairLab, _active: Unit) -> Result<bool> {
        Ok(true)
    }

    /// The unit loses its link and all its processes die at once.
    fn crash(&mut self, l: &PairLab, unit: Unit) -> Result<()> {
        crash_unit(l, unit, self.procs_mut(unit))
    }

    /// The unit's link goes down; its processes keep running.
    fn link_down(&mut self, l: &PairLab, unit: Unit) -> Result<()> {
        Ok(l.lab.link_down(unit.host(l), "eth0")?)
    }

    /// The unit is stopped the way an operator would (SIGTERM, or a planned
    /// handover first where the system has one). Returns once it stopped.
    /// By default SIGTERM to its processes' groups, as systemd does
    /// (keepalived: the VRRP child sends a priority 0 advert and removes the
    /// address; ucarp has no planned handover: it runs the down script and
    /// exits, the partner waits out the dead interval).
    fn graceful(&mut self, _l: &PairLab, unit: Unit) -> Result<()> {
        terminate_all(self.procs_mut(unit));
        Ok(())
    }

    /// Stops both units and puts the lab back as it was before `start`.
    fn stop(&mut self, l: &PairLab) -> Result<()> {
        for u in Unit::BOTH {
            terminate_all(self.procs_mut(u));
        }
        reset_units(l)
    }

    /// Role change and takeover timestamps of `unit` (duet only).
    fn duet_times(&self, _l: &PairLab, _unit: Unit) -> Option<Result<DuetTimes>> {
        None
    }

    /// The processes of `unit`.
    fn procs_mut(&mut self, unit: Unit) -> &mut Vec<Proc>;
}

/// The lab's etcd cluster (three members, TLS) when one of `systems`
/// needs it (the witness kinds), started once for the whole run.
pub fn etcd_for(l: &mut PairLab, systems: &[SystemKind]) -> Result<Option<Arc<EtcdCluster>>> {
    if !systems.iter().any(|k| k.needs_etcd()) {
        return Ok(None);
    }
    Ok(Some(Arc::new(l.etcd().context("starting the etcd cluster of the witness")?)))
}

/// Units holding the shared address right now (on any interface).
pub fn holders(l: &PairLab) -> Result<Vec<Unit>> {
    let mut out = Vec::new();
    for u in Unit::BOTH {
        if holds_shared(l, u.host(l))? {
            out.push(u);
        }
    }
    Ok(out)
}

fn holds_shared(l: &PairLab, host: HostId) -> Result<bool> {
    let out = l.lab.run(host, &["ip", "-4", "-o", "addr", "show"])?;
    let needle = format!(" {SHARED}/");
    Ok(out.lines().any(|line| line.contains(&needle)))
}

/// Link down, then SIGKILL to every process of the unit (its process
/// groups and anything else in its namespace), then reap.
pub fn crash_unit(l: &PairLab, unit: Unit, procs: &mut Vec<Proc>) -> Result<()> {
    let host = unit.host(l);
    l.lab.link_down(host, "eth0")?;
    for p in procs.iter() {
        let _ = p.signal(Signal::SIGKILL);
    }
    duet_testkit::kill_all_in(&l.lab.ns(host))?;
    for mut p in procs.drain(..) {
        p.kill()?;
    }
    Ok(())
}

/// SIGTERM to every process, all together and once, then a wait for all of
/// them to exit; whatever is left after the grace period is killed. Errors
/// are printed, not returned (this is clean-up).
///
/// One signal only: a second SIGTERM to the process group can hit a
/// script the daemon forked on the first (ucarp's down script) and leave
/// the shared address behind.
fn terminate_all(procs: &mut Vec<Proc>) {
    for p in procs.iter() {
        let _ = p.signal(Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for mut p in procs.drain(..) {
        loop {
            match p.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    eprintln!("duet-bench: {} did not stop within {STOP_GRACE:?}; killing it", p.label());
                    let _ = p.kill();
                    break;
                }
                Err(e) => {
                    eprintln!("duet-bench: stopping {}: {e:#}", p.label());
                    let _ = p.kill();
                    break;
                }
            }
        }
    }
}

/// After a pair has stopped: kill leftovers, links up, the shared address
/// removed everywhere, the client's ARP cache flushed.
pub fn reset_units(l: &PairLab) -> Result<()> {
    for u in Unit::BOTH {
        let host = u.host(l);
        duet_testkit::kill_all_in(&l.lab.ns(host))?;
        l.lab.link_up(host, "eth0")?;
        let out = l.lab.run(host, &["ip", "-4", "-o", "addr", "show"])?;
        let needle = format!(" {SHARED}/");
        for line in out.lines().filter(|line| line.contains(&needle)) {
            // "2: eth0    inet 198.18.0.10/24 scope global secondary eth0"
            let mut w = line.split_whitespace();
            let (Some(_), Some(dev), Some(_), Some(addr)) = (w.next(), w.next(), w.next(), w.next()) else { continue };
            let dev = dev.split('@').next().unwrap_or(dev);
            l.lab.run(host, &["ip", "addr", "del", addr, "dev", dev])?;
        }
    }
    l.lab.run(l.c, &["ip", "neigh", "flush", "all"])?;
    Ok(())
}

// ---------------------------------------------------------------- keepalived

/// keepalived in VRRP-only mode, one instance per unit, both `state
/// BACKUP` with priorities 100 (unit 1) and 90 (unit 2) and `nopreempt`:
/// that is duet's "preferred none" (a unit that comes back does not take
/// the role back); the higher priority only decides the first election.
/// Authentication none; gratuitous ARP settings left at their defaults.
#[derive(Debug)]
pub struct Keepalived {
    version: u8,
    /// A `vrrp_script` the instance tracks (none by default).
    pub script: Option<VrrpScript>,
    procs: [Vec<Proc>; 2],
}

/// A `vrrp_script` tracked by the instance without a weight (a failing
/// script puts the instance in FAULT: it gives up the address), run as root
/// (`script_user root` with `enable_script_security`: only the script's
/// own binary must be root's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpScript {
    /// The script's name in the file.
    pub name: String,
    /// The command of each unit ([`Unit::One`], [`Unit::Two`]).
    pub commands: [String; 2],
    /// `interval` in seconds, `fall` and `rise`.
    pub interval_s: u32,
    pub fall: u32,
    pub rise: u32,
}

impl Keepalived {
    /// VRRP version 2 (`advert_int 1`) or 3 (`advert_int 0.1`).
    pub fn new(version: u8) -> Self {
        Self { version, script: None, procs: Default::default() }
    }

    /// The configuration file of `unit`.
    pub fn config(&self, unit: Unit) -> String {
        let (priority, advert) =
            (if unit == Unit::One { 100 } else { 90 }, if self.version == 3 { "0.1" } else { "1" });
        let (globals, script, track) = match &self.script {
            Some(s) => (
                "  script_user root\n  enable_script_security\n".to_owned(),
                format!(
                    "vrrp_script {name} {{\n  script \"{cmd}\"\n  interval {i}\n  fall {f}\n  rise {r}\n}}\n\n",
                    name = s.name,
                    cmd = s.commands[unit.index()],
                    i = s.interval_s,
                    f = s.fall,
                    r = s.rise,
                ),
                format!("  track_script {{\n    {}\n  }}\n", s.name),
            ),
            None => (String::new(), String::new(), String::new()),
        };
        format!(
            "global_defs {{\n  router_id lb{id}\n{globals}}}\n\n{script}vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {priority}\n  nopreempt\n  version {v}\n  advert_int {advert}\n  virtual_ipaddress {{\n    {SHARED}/24 dev eth0\n  }}\n{track}}}\n",
            id = unit.id(),
            v = self.version,
        )
    }
}

impl System for Keepalived {
    fn kind(&self) -> SystemKind {
        if self.version == 3 { SystemKind::KeepalivedV3 } else { SystemKind::KeepalivedV2 }
    }

    fn start(&mut self, l: &mut PairLab, run: usize) -> Result<()> {
        for u in Unit::BOTH {
            let name = format!("keepalived-v{}-{}", self.version, u.id());
            let host = u.host(l);
            let p = spawn_keepalived(&mut l.lab, host, &name, &format!("{name}-r{run}"), &self.config(u))?;
            self.procs[u.index()].push(p);
        }
        Ok(())
    }

    fn procs_mut(&mut self, unit: Unit) -> &mut Vec<Proc> {
        &mut self.procs[unit.index()]
    }
}

// --------------------------------------------------------------------- ucarp

/// ucarp 1.5: vhid 10, advbase 1 s, deadratio 3, advskew 0 (unit 1) and 1
/// (unit 2), no preemption (duet's "preferred none"); up/down scripts add
/// and remove the shared address, the down script also at exit (`-z`).
#[derive(Debug, Default)]
pub struct Ucarp {
    procs: [Vec<Proc>; 2],
}

impl Ucarp {
    fn scripts(dir: &Path) -> Result<(String, String)> {
        use std::os::unix::fs::PermissionsExt;
        // ucarp runs `<script> <interface> <address> [extra]` (src/spawn.c).
        let up = dir.join("ucarp-up.sh");
        let down = dir.join("ucarp-down.sh");
        std::fs::write(&up, "#!/bin/sh\nexec ip addr add \"$2\"/24 dev \"$1\"\n")?;
        std::fs::write(&down, "#!/bin/sh\nexec ip addr del \"$2\"/24 dev \"$1\"\n")?;
        for p in [&up, &down] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok((path_str(&up), path_str(&down)))
    }
}

impl System for Ucarp {
    fn kind(&self) -> SystemKind {
        SystemKind::Ucarp
    }

    fn start(&mut self, l: &mut PairLab, run: usize) -> Result<()> {
        let (up, down) = Self::scripts(l.lab.dir())?;
        for u in Unit::BOTH {
            let own = u.addr().to_string();
            let skew = (u.id() - 1).to_string();
            let p = l.lab.spawn(
                u.host(l),
                &format!("ucarp-{}-r{run}", u.id()),
                &[
                    "ucarp", "-i", "eth0", "-s", &own, "-v", "10", "-p", "secret", "-a", SHARED, "-b", "1", "-k",
                    &skew, "-r", "3", "-u", &up, "-d", &down, "-z", "-n",
                ],
                &[],
            )?;
            self.procs[u.index()].push(p);
        }
        Ok(())
    }

    fn procs_mut(&mut self, unit: Unit) -> &mut Vec<Proc> {
        &mut self.procs[unit.index()]
    }
}

// ---------------------------------------------------------------------- duet

/// How a duet unit is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum DuetLaunch {
    /// `duet-election` and `duet-takeover` started one by one.
    #[default]
    Services,
    /// The whole unit: the supervisor, `duet unit --config`, running all
    /// four services (election, takeover, configsync, replicator), with
    /// configsync and the replicator linked to the partner
    /// ([`DuetUnit::whole_unit`]).
    Supervisor,
}

/// configsync's full-sync period in the whole unit: its default (the
/// unit file's `configsync.sync_interval_s`, the image setting none).
pub const CONFIGSYNC_FULL_SYNC_S: u64 = 120;

impl FromStr for DuetLaunch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "services" => Ok(Self::Services),
            "unit" | "supervisor" => Ok(Self::Supervisor),
            _ => Err(format!("unknown duet launch {s:?} (services or unit)")),
        }
    }
}

/// One running duet unit. The only place that starts and stops duet
/// processes, so switching to the supervisor is one match here.
#[derive(Debug)]
pub struct DuetUnit {
    launch: DuetLaunch,
    /// In start order: election then takeover, or the supervisor alone.
    pub procs: Vec<Proc>,
}

impl DuetUnit {
    /// The unit's configuration: the standard pair (HA timeout 3 s,
    /// preferred none), with a fresh state directory per start so that the
    /// benchmark's many restarts do not pacify the unit (E9).
    /// `fast`: the fast profile, when given. `witness`: a witness on that
    /// etcd cluster (E14), its key under a prefix of this start's own.
    pub fn config(
        l: &PairLab,
        unit: Unit,
        run: usize,
        fast: Option<FastProfile>,
        witness: Option<&EtcdCluster>,
    ) -> UnitConfig {
        let (name, mode) = match unit {
            Unit::One => ("lb1", "first"),
            Unit::Two => ("lb2", "second"),
        };
        let mut cfg = UnitConfig::new(name, mode, l.lab.dir());
        cfg.state_dir = l.lab.dir().join(format!("state-{name}-r{run}"));
        if let Some(f) = fast {
            cfg.ha.push_str(&format!(
                "profile = \"fast\"\nfast_interval_ms = {}\nfast_dead_factor = {}\n",
                f.interval_ms, f.dead_factor
            ));
        }
        if let Some(e) = witness {
            cfg.with_witness(e, "");
            // In the [witness] section just written.
            cfg.extra.push_str(&format!("key_prefix = \"/duet/bench-r{run}/\"\n"));
        }
        cfg
    }

    /// Makes `cfg` the whole unit: configsync and the replicator beside the
    /// election and the takeover, both linked to the partner over eth0 with
    /// mutual TLS (the lab's certificates of `lb1` and `lb2`), at their
    /// default periods: configsync's full sync every
    /// [`CONFIGSYNC_FULL_SYNC_S`], the replicator's refresh every 30 s.
    /// There is no back segment and no virtual service: the replicator
    /// links and follows configsync's (empty) image.
    pub fn whole_unit(l: &PairLab, unit: Unit, cfg: &mut UnitConfig) -> Result<()> {
        let (me, partner) = match unit {
            Unit::One => ("lb1", "lb2"),
            Unit::Two => ("lb2", "lb1"),
        };
        l.with_configsync(cfg, me, partner, CONFIGSYNC_FULL_SYNC_S)?;
        // Its peer link takes [configsync]'s partner name and certificates
        // (duet-tests has no helper for it without a back segment).
        cfg.extra.push_str("\n[replicator]\nenabled = true\n");
        Ok(())
    }

    /// Starts the unit's processes: with [`DuetLaunch::Supervisor`], the
    /// whole unit ([`whole_unit`](Self::whole_unit)).
    pub fn start(
        l: &mut PairLab,
        unit: Unit,
        run: usize,
        launch: DuetLaunch,
        fast: Option<FastProfile>,
        witness: Option<&EtcdCluster>,
    ) -> Result<Self> {
        Self::start_with(l, unit, run, launch, fast, witness, "")
    }

    /// [`start`](Self::start) with `extra` sections at the end of the unit
    /// file (e.g. `[[track]]` entries).
    pub fn start_with(
        l: &mut PairLab,
        unit: Unit,
        run: usize,
        launch: DuetLaunch,
        fast: Option<FastProfile>,
        witness: Option<&EtcdCluster>,
        extra: &str,
    ) -> Result<Self> {
        let mut cfg = Self::config(l, unit, run, fast, witness);
        if launch == DuetLaunch::Supervisor {
            Self::whole_unit(l, unit, &mut cfg)?;
        }
        if !extra.is_empty() {
            cfg.extra.push('\n');
            cfg.extra.push_str(extra);
        }
        let host = unit.host(l);
        let procs = match launch {
            DuetLaunch::Services => {
                // The file is written once, before both start: writing it
                // again for the second service (as `PairLab::election` then
                // `PairLab::takeover` would) truncates it under the first
                // one while it reads it.
                let path = path_str(&cfg.write(l.lab.dir())?);
                let mut procs = Vec::new();
                for (service, binary) in [("election", "duet-election"), ("takeover", "duet-takeover")] {
                    let exe = path_str(&bin(binary));
                    procs.push(l.lab.spawn(
                        host,
                        &format!("{service}-{}-r{run}", cfg.name),
                        &[&exe, "--config", &path],
                        &[("DUET_LOG", "info,duet=debug")],
                    )?);
                }
                procs
            }
            DuetLaunch::Supervisor => vec![l.unit(host, &cfg)?],
        };
        Ok(Self { launch, procs })
    }

    /// A process that exited already, with its log's tail.
    fn check_running(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.try_wait()? {
                let log = p.log();
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                bail!(
                    "{} exited at once ({status}); last lines:\n{}",
                    p.label(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    /// Planned stop: the election (or the supervisor) hands over to the
    /// partner on SIGTERM and exits; then the takeover service stops.
    pub fn graceful(mut self) -> Result<()> {
        match self.launch {
            DuetLaunch::Services => {
                let mut it = self.procs.drain(..);
                if let Some(mut election) = it.next() {
                    election.terminate(STOP_GRACE)?;
                }
                for mut p in it {
                    p.terminate(STOP_GRACE)?;
                }
            }
            DuetLaunch::Supervisor => terminate_all(&mut self.procs),
        }
        Ok(())
    }
}

/// duet, as `duet-election` plus `duet-takeover` per unit (or the whole
/// unit under the supervisor), HA timeout 3 s, preferred none; with a
/// witness when given an etcd cluster.
#[derive(Debug)]
pub struct Duet {
    launch: DuetLaunch,
    kind: SystemKind,
    /// E14: the lab's etcd cluster, for the witness kinds.
    pub witness: Option<Arc<EtcdCluster>>,
    /// Sections added at the end of both unit files (e.g. `[[track]]`
    /// entries); empty by default.
    pub extra: String,
    units: [Option<DuetUnit>; 2],
    /// Stand-in while a unit is not running, for `procs_mut`.
    none: Vec<Proc>,
}

impl Duet {
    /// `kind`: one of duet's ([`SystemKind::is_duet`]).
    pub fn new(launch: DuetLaunch, kind: SystemKind) -> Self {
        Self { launch, kind, witness: None, extra: String::new(), units: [None, None], none: Vec::new() }
    }
}

impl System for Duet {
    fn kind(&self) -> SystemKind {
        self.kind
    }

    fn start(&mut self, l: &mut PairLab, run: usize) -> Result<()> {
        for u in Unit::BOTH {
            let etcd = self.witness.as_deref();
            let unit = DuetUnit::start_with(l, u, run, self.launch, self.kind.fast(), etcd, &self.extra)?;
            self.units[u.index()] = Some(unit);
        }
        // A service that cannot run at all shows within a moment.
        thread::sleep(Duration::from_millis(300));
        for unit in self.units.iter_mut().flatten() {
            unit.check_running()?;
        }
        Ok(())
    }

    fn ready(&self, l: &PairLab, active: Unit) -> Result<bool> {
        let roles = (l.role(active.host(l)), l.role(active.other().host(l)));
        if roles != (Some(Role::Active), Some(Role::Standby)) {
            return Ok(false);
        }
        // The whole unit: the replicator's link is up and configsync holds
        // the same image on both units.
        if self.launch == DuetLaunch::Supervisor && !linked(l, active) {
            return Ok(false);
        }
        // With a witness: the active holds it and the standby has seen it
        // beat (a takeover judged now would wait for W, not for etcd).
        if self.witness.is_some() {
            let w = |u: Unit| l.status(u.host(l)).ok().and_then(|s| s.witness);
            let (a, s) = (w(active), w(active.other()));
            return Ok(a.is_some_and(|a| a.holder_is_self) && s.is_some_and(|s| s.reachable && !s.holder.is_empty()));
        }
        Ok(true)
    }

    fn graceful(&mut self, _l: &PairLab, unit: Unit) -> Result<()> {
        match self.units[unit.index()].take() {
            Some(u) => u.graceful(),
            None => bail!("duet {unit} is not running"),
        }
    }

    fn stop(&mut self, l: &PairLab) -> Result<()> {
        let mut all: Vec<Proc> = self.units.iter_mut().filter_map(Option::take).flat_map(|u| u.procs).collect();
        terminate_all(&mut all);
        reset_units(l)
    }

    fn duet_times(&self, l: &PairLab, unit: Unit) -> Option<Result<DuetTimes>> {
        Some(duet_times(l, unit.host(l)))
    }

    fn procs_mut(&mut self, unit: Unit) -> &mut Vec<Proc> {
        match &mut self.units[unit.index()] {
            Some(u) => &mut u.procs,
            None => &mut self.none,
        }
    }
}

/// Whether the whole unit's links are up (their GetStatus): the active's
/// replicator sends to a connected partner, the standby's is connected,
/// resynced and ready, and configsync on both units reaches the partner and
/// holds the same generation as it. A service that does not answer yet: not.
pub fn linked(l: &PairLab, active: Unit) -> bool {
    let repl = |u: Unit| {
        duet_tests::lblab::replicator_call(&l.lab.ns(u.host(l)), |mut c| async move {
            Ok(c.get_status(duet_proto::replicator::v1::GetStatusRequest {}).await?.into_inner())
        })
        .ok()
    };
    let sync = |u: Unit| {
        duet_tests::configsync_call(&l.lab.ns(u.host(l)), |mut c| async move {
            Ok(c.get_status(duet_proto::configsync::v1::GetStatusRequest {}).await?.into_inner())
        })
        .ok()
        .is_some_and(|s| s.partner_reachable && s.in_sync)
    };
    let (Some(ra), Some(rs)) = (repl(active), repl(active.other())) else { return false };
    ra.mode == "sending"
        && ra.partner_connected
        && rs.mode == "receiving"
        && rs.partner_connected
        && rs.resync == "done"
        && rs.ready
        && sync(active)
        && sync(active.other())
}

/// Seconds since the epoch of a protobuf timestamp.
macro_rules! secs {
    ($t:expr) => {
        $t.as_ref().map(|t| t.seconds as f64 + f64::from(t.nanos) * 1e-9)
    };
}

fn duet_times(l: &PairLab, host: HostId) -> Result<DuetTimes> {
    let s = l.status(host).context("election GetStatus")?;
    let mut t = DuetTimes { role_since: secs!(s.role_since), ..DuetTimes::default() };
    match l.takeover_status(host) {
        Ok(ts) if ts.addresses_at.is_some() => {
            t.role_received_at = secs!(ts.role_received_at);
            t.addresses_at = secs!(ts.addresses_at);
            t.first_garp_at = secs!(ts.first_garp_at);
            t.source = "takeover".into();
        }
        _ => {
            let tk = s.takeover.unwrap_or_default();
            t.addresses_at = secs!(tk.addresses_at);
            t.first_garp_at = secs!(tk.first_garp_at);
            t.source = "election".into();
        }
    }
    Ok(t)
}

/// Starts keepalived (VRRP only, in the foreground) in `host` with `config`
/// written to `<lab dir>/<name>.conf`, its pid files beside it. Stale pid
/// files of a killed run are removed first: keepalived would take them for
/// a live instance if their pid got reused.
pub fn spawn_keepalived(lab: &mut Lab, host: HostId, name: &str, label: &str, config: &str) -> Result<Proc> {
    let dir = lab.dir().to_owned();
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(&conf, config)?;
    let pid = dir.join(format!("{name}.pid"));
    let vrrp_pid = dir.join(format!("{name}-vrrp.pid"));
    let _ = std::fs::remove_file(&pid);
    let _ = std::fs::remove_file(&vrrp_pid);
    let argv = [
        "keepalived",
        "-n",
        "-l",
        "-D",
        "-G",
        "--vrrp",
        "-f",
        &path_str(&conf),
        "-p",
        &path_str(&pid),
        "-r",
        &path_str(&vrrp_pid),
    ];
    Ok(lab.spawn(host, label, &argv, &[])?)
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in SystemKind::ALL.into_iter().chain(SystemKind::WITNESS).chain(SystemKind::EXTRA) {
            assert_eq!(k.name().parse::<SystemKind>(), Ok(k));
        }
        assert!("vrrp".parse::<SystemKind>().is_err());
    }

    #[test]
    fn keepalived_v3_config() {
        let c = Keepalived::new(3).config(Unit::Two);
        for line in
            ["state BACKUP", "priority 90", "nopreempt", "version 3", "advert_int 0.1", "198.18.0.10/24 dev eth0"]
        {
            assert!(c.contains(line), "{line} missing in\n{c}");
        }
        assert!(!c.contains("vrrp_script") && !c.contains("script_user"), "no script unless asked:\n{c}");
    }

    #[test]
    fn keepalived_tracks_its_script() {
        let mut k = Keepalived::new(2);
        k.script = Some(VrrpScript {
            name: "chk_haproxy".into(),
            commands: ["/bin/true one".into(), "/bin/true two".into()],
            interval_s: 1,
            fall: 2,
            rise: 2,
        });
        let c = k.config(Unit::Two);
        for line in [
            "  script_user root\n  enable_script_security\n}",
            "vrrp_script chk_haproxy {\n  script \"/bin/true two\"\n  interval 1\n  fall 2\n  rise 2\n}",
            "  track_script {\n    chk_haproxy\n  }\n}",
        ] {
            assert!(c.contains(line), "{line} missing in\n{c}");
        }
        assert!(!c.contains("/bin/true one"));
    }
}
