//! The fleet benchmark (O7, issue 13): pairs whose images live in etcd.
//!
//! One lab, one segment: a three-member etcd cluster with TLS (client
//! certificates for every unit and for `ops`, the operator), N pairs of
//! whole units (`duet unit`: election, takeover and configsync with
//! `configsync.store = "etcd"`, no replicator), each unit in a host of its
//! own, and a client host. Once every pair has a head in etcd (its active
//! seeds it), the client writes `changes` changes round-robin over the
//! pairs through etcd ([`duet_fleet::Fleet::apply`]), one at a time, and a
//! watcher inside each standby's namespace stamps every generation its
//! configsync reports (`WatchGenerations`). Figures: write's return ->
//! generation on the pair's standby (p50/p90/p99/max), every change
//! reaching its standby, no pair moving but by its own writes, every unit
//! ending on its pair's head, and the time of `duetctl fleet status` over
//! the whole fleet.
//!
//! Address plan (198.18.0.0/24): etcd .21-.23, pair k (from 1) shared
//! .(30+k), units .(100+2k) and .(101+2k), the client .200; vhid 10+k.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::report::{self, Goal, percentile};
use anyhow::{Context, Result, bail};
use duet_fleet::{Fleet, Settings, Written};
use duet_image::change::Change;
use duet_proto::common::v1::Role;
use duet_proto::config::v1::Provenance;
use duet_proto::configsync::v1 as cs;
use duet_proto::configsync::v1::config_sync_service_client::ConfigSyncServiceClient;
use duet_testkit::{EtcdCluster, HostId, Lab, Proc, in_netns, wait_for};
use duet_tests::{CONFIGSYNC, bin, configsync_call, lblab};
use duet_witness::TlsPems;
use serde::Serialize;

/// The goal: write through etcd -> the standby's generation, p99.
pub const GOAL_P99_MS: f64 = 200.0;
/// The goal for `duetctl fleet status` on 10 pairs.
pub const GOAL_STATUS_MS: f64 = 1000.0;
/// Pairs the address plan has room for.
pub const MAX_PAIRS: usize = 40;
/// Pairs started at once (then their roles are waited for).
const BATCH: usize = 2;
/// The fleet's key prefix (the default).
const PREFIX: &str = "/duet";
const CLIENT_ADDR: &str = "198.18.0.200";
/// The operator's etcd client certificate.
const OPS: &str = "ops";
/// `duetctl fleet status` runs (or their stand-in's).
const STATUS_RUNS: usize = 5;

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct FleetOptions {
    /// Pairs of whole units.
    pub pairs: usize,
    /// Changes written through etcd, round-robin over the pairs.
    pub changes: usize,
}

/// p50 / p90 / p99 / max (nearest rank) of a sample, in ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub n: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Latency {
    fn of(v: &[f64]) -> Self {
        Self {
            n: v.len(),
            p50: percentile(v, 50.0),
            p90: percentile(v, 90.0),
            p99: percentile(v, 99.0),
            max: percentile(v, 100.0),
        }
    }
}

/// One change written through etcd and when its pair's standby had it.
#[derive(Debug, Clone, Serialize)]
pub struct WriteFigure {
    pub change: usize,
    pub pair: String,
    /// The generation etcd committed (`None`: the write failed).
    pub generation: Option<u64>,
    /// How long `Fleet::apply` took (read the head and image, write).
    pub write_ms: f64,
    /// Write's return -> the generation on the standby, clamped at 0
    /// (`None`: never seen there).
    pub latency_ms: Option<f64>,
    /// The standby reported it before the write returned (by this many ms).
    pub early_ms: Option<f64>,
    /// How the standby got it: `fleet` (its own etcd watch) or `synced`
    /// (the active's push on the peer link).
    pub origin: String,
    pub error: Option<String>,
}

/// One pair at the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct PairFigure {
    pub pair: String,
    pub active: String,
    pub standby: String,
    pub vhid: u32,
    pub writes: usize,
    /// etcd's head at the start of the writes and at the end.
    pub head_before: u64,
    pub head_after: u64,
    /// Generation and hash each unit's configsync holds at the end.
    pub active_holds: String,
    pub standby_holds: String,
    pub latency_ms: Latency,
}

/// `duetctl fleet status`, or its stand-in while duetctl has no `--etcd`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusTiming {
    /// What was timed.
    pub method: String,
    pub runs_ms: Vec<f64>,
    pub median_ms: Option<f64>,
    /// Pairs and units the last run listed.
    pub pairs_listed: usize,
    pub units_listed: usize,
    /// The last run's output (duetctl's).
    pub output: String,
    pub error: Option<String>,
}

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetReport {
    pub pairs: usize,
    pub changes: usize,
    /// From the first unit started to every pair settled with a head in etcd.
    pub setup_s: f64,
    pub writes_committed: usize,
    pub write_errors: usize,
    pub writes_per_s: f64,
    /// `Fleet::apply` round trip, ms.
    pub write_ms: Latency,
    /// Committed changes whose generation reached their pair's standby.
    pub applied_on_standby: usize,
    /// Write's return -> generation on the standby, ms (negative clamped to 0).
    pub latency_ms: Latency,
    /// Standbys that reported the generation before the write returned.
    pub arrived_before_reply: usize,
    /// How the standbys got the generations: by their etcd watch (`fleet`)
    /// or the active's push (`synced`).
    pub via_fleet: usize,
    pub via_peer: usize,
    /// Every pair moved only by its own writes.
    pub other_pairs_untouched: bool,
    /// What moved that was not written (empty when untouched).
    pub foreign_moves: Vec<String>,
    /// Both units of every pair ended on its head in etcd.
    pub converged: bool,
    pub not_converged: Vec<String>,
    /// Role changes during the run (none expected).
    pub role_changes: Vec<String>,
    /// Watch streams that ended before the run did.
    pub watch_errors: Vec<String>,
    pub fleet_status: StatusTiming,
    pub per_pair: Vec<PairFigure>,
    pub writes: Vec<WriteFigure>,
}

/// Pair k's part of the address plan (k from 1).
#[derive(Debug, Clone)]
struct PairPlan {
    name: String,
    units: [String; 2],
    addrs: [String; 2],
    shared: String,
    vhid: u32,
}

impl PairPlan {
    fn new(k: usize) -> Self {
        Self {
            name: format!("edge-{k}"),
            units: [format!("p{k}a"), format!("p{k}b")],
            addrs: [format!("198.18.0.{}", 100 + 2 * k), format!("198.18.0.{}", 101 + 2 * k)],
            shared: format!("198.18.0.{}", 30 + k),
            vhid: 10 + u32::try_from(k).unwrap_or(0),
        }
    }

    /// Unit `i`'s file: the pair's image in etcd, no replicator.
    fn unit_toml(&self, i: usize, lab_dir: &Path, peer_certs: &Path, etcd: &EtcdCluster) -> String {
        let name = &self.units[i];
        let partner = &self.units[1 - i];
        let mode = if i == 0 { "first" } else { "second" };
        let eps: Vec<String> = etcd.endpoints().iter().map(|e| format!("\"{e}\"")).collect();
        let ec = etcd.certs();
        let p = |d: &Path, f: String| d.join(f).display().to_string();
        format!(
            "[unit]\nname = \"{name}\"\nmode = \"{mode}\"\npair = \"{pair}\"\nstate_dir = \"{state}\"\n\n\
             [ha]\npassword = \"secret\"\ntimeout_s = 3\nvhid = {vhid}\n\n\
             [[interface]]\nname = \"eth0\"\nunit1 = \"{a1}/24\"\nunit2 = \"{a2}/24\"\nshared = \"{sh}/24\"\n\n\
             [configsync]\npartner_name = \"{partner}\"\ntls_ca = \"{pca}\"\ntls_cert = \"{pcert}\"\ntls_key = \"{pkey}\"\n\
             store = \"etcd\"\n\n\
             [fleet]\nendpoints = [{eps}]\ntls_ca = \"{eca}\"\ntls_cert = \"{ecert}\"\ntls_key = \"{ekey}\"\n\n\
             [replicator]\nenabled = false\n\n\
             [telemetry]\nlog = \"info\"\n",
            pair = self.name,
            state = lab_dir.join(format!("state-{name}")).display(),
            vhid = self.vhid,
            a1 = self.addrs[0],
            a2 = self.addrs[1],
            sh = self.shared,
            pca = p(peer_certs, "ca.pem".into()),
            pcert = p(peer_certs, format!("{name}.pem")),
            pkey = p(peer_certs, format!("{name}.key")),
            eps = eps.join(", "),
            eca = p(ec, "ca.pem".into()),
            ecert = p(ec, format!("{name}.pem")),
            ekey = p(ec, format!("{name}.key")),
        )
    }
}

/// A pair in the lab.
#[derive(Debug)]
struct PairUnits {
    plan: PairPlan,
    hosts: [HostId; 2],
    /// Which unit (0 or 1) was active once the pair settled.
    active: usize,
}

impl PairUnits {
    fn standby(&self) -> usize {
        1 - self.active
    }
}

/// A generation a standby's configsync reported.
#[derive(Debug)]
enum Seen {
    Generation { pair: usize, generation: u64, origin: String, at: Instant },
    Ended { pair: usize, error: String },
}

/// One change as the writer saw it.
#[derive(Debug)]
struct Write {
    pair: usize,
    started: Instant,
    returned: Instant,
    result: Result<u64, String>,
}

/// Runs the benchmark in a fresh lab. When the run fails (or a correctness
/// goal does) the lab's logs and unit files are copied into `logs` first;
/// the lab is torn down in every case.
pub fn run(opts: &FleetOptions, logs: &Path, mut progress: impl FnMut(&str)) -> Result<FleetReport> {
    if !(1..=MAX_PAIRS).contains(&opts.pairs) {
        bail!("--pairs takes 1 to {MAX_PAIRS} (the lab's address plan)");
    }
    if opts.changes == 0 {
        bail!("--changes must be at least 1");
    }
    let mut lab = Lab::new("fleet").context("building the lab")?;
    progress(&format!("lab {} in {}", lab.prefix(), lab.dir().display()));
    let result = run_in(&mut lab, opts, &mut progress);
    let keep = match &result {
        Err(_) => true,
        Ok(r) => !report::correct(&goals(r)),
    };
    if keep {
        match copy_logs(&lab, logs) {
            Ok(dir) => progress(&format!("logs and unit files copied to {}", dir.display())),
            Err(e) => progress(&format!("could not copy the lab's logs: {e:#}")),
        }
    }
    drop(lab);
    result
}

fn copy_logs(lab: &Lab, logs: &Path) -> Result<PathBuf> {
    let dir = logs.join(lab.prefix().trim_end_matches('-'));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for e in std::fs::read_dir(lab.dir())? {
        let p = e?.path();
        let wanted = p.extension().is_some_and(|x| x == "log" || x == "toml");
        if wanted && p.is_file() {
            std::fs::copy(&p, dir.join(p.file_name().unwrap_or_default()))
                .with_context(|| format!("copying {}", p.display()))?;
        }
    }
    Ok(dir)
}

/// The election's role in `host`, `None` while it does not answer.
fn role(lab: &Lab, host: HostId) -> Option<Role> {
    duet_tests::grpc(&lab.ns(host), |mut c| async move {
        Ok(c.get_status(duet_proto::election::v1::GetStatusRequest {}).await?.into_inner())
    })
    .ok()
    .and_then(|s| Role::try_from(s.role).ok())
}

/// Which unit of the pair is active when one is active and the other standby.
fn settled(lab: &Lab, hosts: [HostId; 2]) -> Option<usize> {
    match (role(lab, hosts[0])?, role(lab, hosts[1])?) {
        (Role::Active, Role::Standby) => Some(0),
        (Role::Standby, Role::Active) => Some(1),
        _ => None,
    }
}

/// Generation and hash the configsync in `ns` holds.
fn holds(ns: &str) -> Result<(u64, String)> {
    configsync_call(ns, |mut c| async move {
        let s = c.get_status(cs::GetStatusRequest {}).await?.into_inner();
        Ok(s.local.map(|l| (l.generation, l.hash)).unwrap_or_default())
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The operator's way to the fleet's etcd.
fn settings(etcd: &EtcdCluster) -> Result<Settings> {
    let read = |f: &str| {
        let p = etcd.certs().join(f);
        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
    };
    Ok(Settings {
        endpoints: etcd.endpoints().iter().map(|e| format!("https://{e}")).collect(),
        tls: Some(TlsPems {
            ca: read("ca.pem")?,
            identity: Some((read(&format!("{OPS}.pem"))?, read(&format!("{OPS}.key"))?)),
        }),
        prefix: PREFIX.into(),
        op_timeout: Duration::from_secs(5),
    })
}

/// Runs `f` with a fleet client inside the client's namespace (one
/// current-thread runtime).
fn with_fleet<T, F, Fut>(ns: &str, s: &Settings, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Fleet) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let s = s.clone();
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let fleet = Fleet::connect(&s).await.context("connecting to etcd")?;
            f(fleet).await
        })
    })?
}

/// Every pair's head generation (0: none yet).
async fn heads(fleet: &Fleet, pairs: &[String]) -> Result<Vec<(u64, String)>> {
    let mut out = Vec::with_capacity(pairs.len());
    for p in pairs {
        out.push(fleet.head(p).await?.map(|(h, _)| (h.generation, h.hash)).unwrap_or_default());
    }
    Ok(out)
}

/// Watches the generations of the configsync in `ns` (pair `pair`'s
/// standby) from inside that namespace, until `stop`.
fn watch(pair: usize, ns: String, tx: mpsc::Sender<Seen>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let txg = tx.clone();
        let r = in_netns(&ns, move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let mut c = tokio::time::timeout(Duration::from_secs(3), ConfigSyncServiceClient::connect(CONFIGSYNC))
                    .await
                    .context("connecting to configsync timed out")??
                    .max_decoding_message_size(64 << 20);
                let mut s = c.watch_generations(cs::WatchGenerationsRequest {}).await?.into_inner();
                loop {
                    match tokio::time::timeout(Duration::from_millis(200), s.message()).await {
                        Ok(Ok(Some(m))) => {
                            let at = Instant::now();
                            let _ = txg.send(Seen::Generation { pair, generation: m.generation, origin: m.origin, at });
                        }
                        Ok(Ok(None)) => bail!("the stream ended"),
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) if stop.load(Ordering::Relaxed) => return Ok(()),
                        Err(_) => {}
                    }
                }
            })
        })
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
        // Ok only when stopped: only a stream that ended before is reported.
        if let Err(e) = r {
            let _ = tx.send(Seen::Ended { pair, error: format!("{e:#}") });
        }
    })
}

/// The generations each pair's standby reported, in order of arrival.
#[derive(Debug, Default)]
struct Arrivals {
    by_pair: Vec<Vec<(u64, String, Instant)>>,
    ended: Vec<String>,
}

impl Arrivals {
    fn new(pairs: usize) -> Self {
        Self { by_pair: vec![Vec::new(); pairs], ended: Vec::new() }
    }

    fn take(&mut self, m: Seen, names: &[String]) {
        match m {
            Seen::Generation { pair, generation, origin, at } => self.by_pair[pair].push((generation, origin, at)),
            Seen::Ended { pair, error } => {
                self.ended.push(format!("{}: {error}", names[pair]));
            }
        }
    }

    fn latest(&self, pair: usize) -> u64 {
        self.by_pair[pair].iter().map(|(g, _, _)| *g).max().unwrap_or(0)
    }

    /// Drains `rx` until every pair's standby has reported at least
    /// `want[pair]`, or `timeout`; whether it did.
    fn until(&mut self, rx: &mpsc::Receiver<Seen>, want: &[u64], names: &[String], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            while let Ok(m) = rx.try_recv() {
                self.take(m, names);
            }
            if want.iter().enumerate().all(|(p, g)| self.latest(p) >= *g) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if let Ok(m) = rx.recv_timeout((deadline - now).min(Duration::from_millis(50))) {
                self.take(m, names);
            }
        }
    }
}

/// `duetctl` takes `--etcd` (the fleet commands) in this build.
fn duetctl_has_etcd() -> bool {
    std::process::Command::new(bin("duetctl"))
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--etcd"))
}

fn run_in(lab: &mut Lab, opts: &FleetOptions, progress: &mut impl FnMut(&str)) -> Result<FleetReport> {
    let n = opts.pairs;
    let plans: Vec<PairPlan> = (1..=n).map(PairPlan::new).collect();
    let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    let unit_names: Vec<String> = plans.iter().flat_map(|p| p.units.clone()).collect();

    let lan = lab.segment("lan")?;
    let client = lab.host("c")?;
    lab.attach(client, lan, "eth0", &[&format!("{CLIENT_ADDR}/24")])?;
    let mut clients: Vec<&str> = unit_names.iter().map(String::as_str).collect();
    clients.push(OPS);
    progress("starting a 3-member etcd with TLS");
    let etcd = EtcdCluster::start(lab, lan, &duet_tests::ETCD, &clients, true).context("starting etcd")?;
    let peer_certs = lab.dir().join("certs");
    duet_testkit::write_certs(&peer_certs, &clients[..clients.len() - 1])?;
    let fs = settings(&etcd)?;
    let cns = lab.ns(client);

    // The pairs, a batch at a time: their units started, their roles waited for.
    let setup = Instant::now();
    let exe = bin("duet").to_string_lossy().into_owned();
    let mut procs: Vec<Proc> = Vec::new();
    let mut pairs: Vec<PairUnits> = Vec::new();
    for batch in plans.chunks(BATCH) {
        let mut started = Vec::new();
        for plan in batch {
            let mut hosts = Vec::new();
            for i in 0..2 {
                let h = lab.host(&plan.units[i])?;
                lab.attach(h, lan, "eth0", &[&format!("{}/24", plan.addrs[i])])?;
                let file = lab.dir().join(format!("{}.toml", plan.units[i]));
                std::fs::write(&file, plan.unit_toml(i, lab.dir(), &peer_certs, &etcd))?;
                let f = file.to_string_lossy().into_owned();
                procs.push(lab.spawn(
                    h,
                    &format!("unit-{}", plan.units[i]),
                    &[&exe, "unit", "--config", &f],
                    &[("DUET_LOG", "info")],
                )?);
                hosts.push(h);
            }
            started.push((plan.clone(), [hosts[0], hosts[1]]));
        }
        for (plan, hosts) in started {
            let active = wait_for(
                &format!("pair {} to settle (one active, one standby)", plan.name),
                Duration::from_secs(60),
                Duration::from_millis(200),
                || settled(lab, hosts),
            )?;
            progress(&format!(
                "pair {} settled: {} active, {} standby ({:.1} s)",
                plan.name,
                plan.units[active],
                plan.units[1 - active],
                setup.elapsed().as_secs_f64()
            ));
            pairs.push(PairUnits { plan, hosts, active });
        }
    }

    // Every pair's head in etcd (its active seeds it).
    let heads_before = {
        let names = names.clone();
        with_fleet(&cns, &fs, move |fleet| async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let h = heads(&fleet, &names).await?;
                if h.iter().all(|(g, _)| *g > 0) {
                    for p in &names {
                        fleet.require(p).await?;
                    }
                    return Ok(h);
                }
                if Instant::now() > deadline {
                    let missing: Vec<&str> =
                        names.iter().zip(&h).filter(|(_, (g, _))| *g == 0).map(|(p, _)| p.as_str()).collect();
                    bail!("no head in etcd after 60 s for {}", missing.join(", "));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })?
    };
    let setup_s = setup.elapsed().as_secs_f64();
    progress(&format!("every pair has a head in etcd ({setup_s:.1} s after the first unit started)"));

    // A watcher in every standby, and every standby on its head first.
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let watchers: Vec<JoinHandle<()>> = pairs
        .iter()
        .enumerate()
        .map(|(k, p)| watch(k, lab.ns(p.hosts[p.standby()]), tx.clone(), Arc::clone(&stop)))
        .collect();
    drop(tx);
    let mut seen = Arrivals::new(n);
    let base: Vec<u64> = heads_before.iter().map(|(g, _)| *g).collect();
    if !seen.until(&rx, &base, &names, Duration::from_secs(30)) {
        let behind: Vec<String> = (0..n)
            .filter(|p| seen.latest(*p) < base[*p])
            .map(|p| format!("{} standby at {} of {}", names[p], seen.latest(p), base[p]))
            .collect();
        stop.store(true, Ordering::Relaxed);
        bail!("standbys not on their pair's head before the writes: {}", behind.join(", "));
    }
    let baseline_len: Vec<usize> = seen.by_pair.iter().map(Vec::len).collect();

    // The changes, one at a time, round-robin over the pairs.
    progress(&format!("writing {} changes through etcd, round-robin over {n} pairs", opts.changes));
    let changes = opts.changes;
    let shared: Vec<String> = plans.iter().map(|p| p.shared.clone()).collect();
    let writer_names = names.clone();
    let t_writes = Instant::now();
    let writes: Vec<Write> = with_fleet(&cns, &fs, move |fleet| async move {
        let mut out = Vec::with_capacity(changes);
        for i in 0..changes {
            let p = i % writer_names.len();
            // A new port each time: every write is a real change.
            let port = 10_000 + u16::try_from(i % 50_000).unwrap_or(0);
            let vs =
                duet_proto::config::v1::VirtualService { address: shared[p].clone(), ..lblab::service("bench", port) };
            let provenance = Provenance {
                committed_at: Some(prost_types::Timestamp::from(SystemTime::now())),
                unit: OPS.into(),
                comment: format!("duet-bench fleet change {i}: bench on port {port}"),
                origin: "committed".into(),
            };
            let started = Instant::now();
            let r = fleet.apply(&writer_names[p], None, Change::UpsertVirtualService(vs), provenance, 20).await;
            let returned = Instant::now();
            let result = match r {
                Ok(Written::Committed(img)) => Ok(img.generation),
                Ok(Written::Unchanged(img)) => Err(format!("unchanged at generation {}", img.generation)),
                Err(e) => Err(e.to_string()),
            };
            out.push(Write { pair: p, started, returned, result });
        }
        Ok(out)
    })?;
    let write_time = t_writes.elapsed();
    let committed = writes.iter().filter(|w| w.result.is_ok()).count();
    progress(&format!(
        "{committed} of {changes} written in {:.1} s; waiting for the standbys",
        write_time.as_secs_f64()
    ));

    // Every standby on its last written generation.
    let mut last = base.clone();
    for w in &writes {
        if let Ok(g) = w.result {
            last[w.pair] = last[w.pair].max(g);
        }
    }
    let all_arrived = seen.until(&rx, &last, &names, Duration::from_secs(30));
    // A moment more, for a stray generation to show.
    std::thread::sleep(Duration::from_millis(500));
    while let Ok(m) = rx.try_recv() {
        seen.take(m, &names);
    }
    stop.store(true, Ordering::Relaxed);
    for w in watchers {
        let _ = w.join();
    }
    while let Ok(m) = rx.try_recv() {
        seen.take(m, &names);
    }
    if !all_arrived {
        progress("not every standby reached its last generation within 30 s");
    }

    // Figures per write.
    let mut figures = Vec::with_capacity(writes.len());
    let mut lat = Vec::new();
    let mut write_ms = Vec::new();
    let mut lat_by_pair: Vec<Vec<f64>> = vec![Vec::new(); n];
    let (mut early, mut via_fleet, mut via_peer) = (0, 0, 0);
    for (i, w) in writes.iter().enumerate() {
        write_ms.push(ms(w.returned - w.started));
        let mut f = WriteFigure {
            change: i,
            pair: names[w.pair].clone(),
            generation: w.result.as_ref().ok().copied(),
            write_ms: ms(w.returned - w.started),
            latency_ms: None,
            early_ms: None,
            origin: String::new(),
            error: w.result.as_ref().err().cloned(),
        };
        if let Ok(g) = w.result {
            let arrival = seen.by_pair[w.pair][baseline_len[w.pair]..]
                .iter()
                .filter(|(sg, _, at)| *sg >= g && *at >= w.started)
                .min_by_key(|(_, _, at)| *at);
            if let Some((_, origin, at)) = arrival {
                let l = match at.checked_duration_since(w.returned) {
                    Some(d) => ms(d),
                    None => {
                        early += 1;
                        f.early_ms = Some(ms(w.returned - *at));
                        0.0
                    }
                };
                match origin.as_str() {
                    "fleet" => via_fleet += 1,
                    _ => via_peer += 1,
                }
                f.origin.clone_from(origin);
                f.latency_ms = Some(l);
                lat.push(l);
                lat_by_pair[w.pair].push(l);
            }
        }
        figures.push(f);
    }

    // Pairs moved only by their own writes: every generation a standby
    // reported after the baseline is one written for its pair, and came
    // after that write started.
    let mut foreign = Vec::new();
    for (p, arrivals) in seen.by_pair.iter().enumerate() {
        for (g, origin, at) in &arrivals[baseline_len[p]..] {
            let own = writes.iter().find(|w| w.pair == p && w.result.as_ref().ok() == Some(g));
            match own {
                Some(w) if *at >= w.started => {}
                Some(_) => foreign.push(format!("{}: generation {g} ({origin}) before its write started", names[p])),
                None if *g == base[p] => {}
                None => foreign.push(format!("{}: generation {g} ({origin}) not written by the benchmark", names[p])),
            }
        }
    }

    // etcd's heads at the end, and both units of every pair on them.
    let heads_after = {
        let names = names.clone();
        with_fleet(&cns, &fs, move |fleet| async move { heads(&fleet, &names).await })?
    };
    for (p, (g, _)) in heads_after.iter().enumerate() {
        let own = writes.iter().filter(|w| w.pair == p && w.result.is_ok()).count() as u64;
        if *g != base[p] + own {
            foreign.push(format!("{}: head {g} in etcd, expected {} + {own} writes", names[p], base[p]));
        }
    }
    let holding =
        |pr: &PairUnits| -> [Result<(u64, String)>; 2] { [holds(&lab.ns(pr.hosts[0])), holds(&lab.ns(pr.hosts[1]))] };
    let on_head = |pr: &PairUnits, head: &(u64, String)| holding(pr).iter().all(|h| h.as_ref().ok() == Some(head));
    let converged =
        wait_for("every unit on its pair's head", Duration::from_secs(15), Duration::from_millis(250), || {
            pairs.iter().zip(&heads_after).all(|(pr, h)| on_head(pr, h)).then_some(())
        })
        .is_ok();
    let show = |h: &Result<(u64, String)>| match h {
        Ok((g, hash)) => format!("{g} {}", hash.get(..12).unwrap_or(hash)),
        Err(e) => format!("error: {e:#}"),
    };
    let mut not_converged = Vec::new();
    let mut per_pair = Vec::new();
    let mut role_changes = Vec::new();
    for (p, pr) in pairs.iter().enumerate() {
        let h = holding(pr);
        let head = &heads_after[p];
        for (i, x) in h.iter().enumerate() {
            if x.as_ref().ok() != Some(head) {
                not_converged.push(format!(
                    "{} {}: holds {}, head {} {}",
                    pr.plan.name,
                    pr.plan.units[i],
                    show(x),
                    head.0,
                    head.1.get(..12).unwrap_or(&head.1)
                ));
            }
        }
        match settled(lab, pr.hosts) {
            Some(a) if a == pr.active => {}
            Some(a) => role_changes.push(format!("{}: {} active now", pr.plan.name, pr.plan.units[a])),
            None => role_changes.push(format!(
                "{}: roles {:?} / {:?}",
                pr.plan.name,
                role(lab, pr.hosts[0]),
                role(lab, pr.hosts[1])
            )),
        }
        per_pair.push(PairFigure {
            pair: pr.plan.name.clone(),
            active: pr.plan.units[pr.active].clone(),
            standby: pr.plan.units[pr.standby()].clone(),
            vhid: pr.plan.vhid,
            writes: writes.iter().filter(|w| w.pair == p).count(),
            head_before: base[p],
            head_after: head.0,
            active_holds: show(&h[pr.active]),
            standby_holds: show(&h[pr.standby()]),
            latency_ms: Latency::of(&lat_by_pair[p]),
        });
    }

    // `duetctl fleet status`, or its stand-in.
    progress("timing the fleet's status");
    let fleet_status = status_timing(lab, client, &etcd, &fs, n);

    let n_ok = lat.len();
    Ok(FleetReport {
        pairs: n,
        changes,
        setup_s,
        writes_committed: committed,
        write_errors: changes - committed,
        writes_per_s: changes as f64 / write_time.as_secs_f64(),
        write_ms: Latency::of(&write_ms),
        applied_on_standby: n_ok,
        latency_ms: Latency::of(&lat),
        arrived_before_reply: early,
        via_fleet,
        via_peer,
        other_pairs_untouched: foreign.is_empty(),
        foreign_moves: foreign,
        converged: converged && not_converged.is_empty(),
        not_converged,
        role_changes,
        watch_errors: seen.ended,
        fleet_status,
        per_pair,
        writes: figures,
    })
}

/// `duetctl --etcd ... fleet status` from the client, [`STATUS_RUNS`]
/// times; while duetctl has no `--etcd`, what it would read instead: a
/// fresh connection, the pairs, and every pair's head and units.
fn status_timing(lab: &Lab, client: HostId, etcd: &EtcdCluster, fs: &Settings, pairs: usize) -> StatusTiming {
    let mut t = StatusTiming::default();
    if duetctl_has_etcd() {
        t.method = "duetctl --etcd ... fleet status (a process each run, from the client host)".into();
        let exe = bin("duetctl").to_string_lossy().into_owned();
        let c = etcd.certs();
        let f = |name: &str| c.join(name).to_string_lossy().into_owned();
        let (ca, cert, key) = (f("ca.pem"), f(&format!("{OPS}.pem")), f(&format!("{OPS}.key")));
        let eps = etcd.endpoints().join(",");
        for _ in 0..STATUS_RUNS {
            let start = Instant::now();
            let r = lab.run(
                client,
                &[&exe, "--etcd", &eps, "--etcd-ca", &ca, "--etcd-cert", &cert, "--etcd-key", &key, "fleet", "status"],
            );
            let took = ms(start.elapsed());
            match r {
                Ok(out) => {
                    t.runs_ms.push(took);
                    let words: std::collections::BTreeSet<&str> =
                        out.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).collect();
                    t.pairs_listed = (1..=pairs).filter(|k| words.contains(format!("edge-{k}").as_str())).count();
                    t.units_listed = (1..=pairs)
                        .flat_map(|k| [format!("p{k}a"), format!("p{k}b")])
                        .filter(|u| words.contains(u.as_str()))
                        .count();
                    t.output = out;
                }
                Err(e) => {
                    t.error = Some(format!("{e}"));
                    break;
                }
            }
        }
    } else {
        t.method = "duetctl has no --etcd yet: Fleet::connect + Fleet::pairs + Fleet::head and Fleet::units of \
                    every pair, in-process from the client host"
            .into();
        let s = fs.clone();
        let r = in_netns(&lab.ns(client), move || -> Result<(Vec<f64>, usize, usize)> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let mut runs = Vec::new();
                let (mut np, mut nu) = (0, 0);
                for _ in 0..STATUS_RUNS {
                    let start = Instant::now();
                    let fleet = Fleet::connect(&s).await?;
                    let ps = fleet.pairs().await?;
                    nu = 0;
                    for p in &ps {
                        fleet.head(p).await?;
                        nu += fleet.units(p).await?.len();
                    }
                    np = ps.len();
                    runs.push(ms(start.elapsed()));
                }
                Ok((runs, np, nu))
            })
        })
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
        match r {
            Ok((runs, np, nu)) => {
                t.runs_ms = runs;
                t.pairs_listed = np;
                t.units_listed = nu;
            }
            Err(e) => t.error = Some(format!("{e:#}")),
        }
    }
    t.median_ms = report::median(t.runs_ms.iter().copied());
    t
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.1}"))
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// The run as a table: the headline figures, then one row per pair.
pub fn table(r: &FleetReport) -> String {
    let l = &r.latency_ms;
    let verdict = match l.p99 {
        Some(p) if p <= GOAL_P99_MS => "PASS",
        Some(_) => "FAIL",
        None => "n/a",
    };
    let status = match (r.fleet_status.median_ms, &r.fleet_status.error) {
        (Some(m), _) => format!("{m:.0} ms"),
        (None, Some(e)) => format!("error: {e}"),
        (None, None) => "-".into(),
    };
    let head = vec![
        vec![
            "pairs".into(),
            "changes".into(),
            "applied".into(),
            "p50 ms".into(),
            "p90 ms".into(),
            "p99 ms".into(),
            "max ms".into(),
            format!("p99 <= {GOAL_P99_MS:.0} ms"),
            "others untouched".into(),
            "all converged".into(),
            "fleet status".into(),
        ],
        vec![
            r.pairs.to_string(),
            r.changes.to_string(),
            r.applied_on_standby.to_string(),
            fmt_ms(l.p50),
            fmt_ms(l.p90),
            fmt_ms(l.p99),
            fmt_ms(l.max),
            verdict.into(),
            yes(r.other_pairs_untouched),
            yes(r.converged),
            status,
        ],
    ];
    let mut rows = vec![vec![
        "pair".into(),
        "active".into(),
        "standby".into(),
        "writes".into(),
        "head".into(),
        "p50 ms".into(),
        "max ms".into(),
        "active holds".into(),
        "standby holds".into(),
    ]];
    for p in &r.per_pair {
        rows.push(vec![
            p.pair.clone(),
            p.active.clone(),
            p.standby.clone(),
            p.writes.to_string(),
            format!("{} -> {}", p.head_before, p.head_after),
            fmt_ms(p.latency_ms.p50),
            fmt_ms(p.latency_ms.max),
            p.active_holds.clone(),
            p.standby_holds.clone(),
        ]);
    }
    let mut out = format!(
        "fleet: a change written through etcd -> its generation on the pair's standby (write's return to the \
         standby's WatchGenerations)\n{}\n",
        report::aligned(&head)
    );
    out.push_str(&format!(
        "writes: {} committed, {} failed, {:.0}/s, Fleet::apply p50 {} ms p99 {} ms; {} reached the standby before \
         the write's reply (counted as 0 ms); by the standby's own etcd watch {}, by the active's push {}\n",
        r.writes_committed,
        r.write_errors,
        r.writes_per_s,
        fmt_ms(r.write_ms.p50),
        fmt_ms(r.write_ms.p99),
        r.arrived_before_reply,
        r.via_fleet,
        r.via_peer
    ));
    out.push_str(&format!("setup: every pair settled with a head in etcd in {:.1} s\n", r.setup_s));
    out.push_str(&format!(
        "fleet status: {} (runs {:?} ms), {} pairs and {} units listed\n",
        r.fleet_status.method,
        r.fleet_status.runs_ms.iter().map(|x| x.round() as i64).collect::<Vec<_>>(),
        r.fleet_status.pairs_listed,
        r.fleet_status.units_listed
    ));
    if !r.fleet_status.output.is_empty() {
        out.push_str("\n`duetctl fleet status`, its last run:\n");
        out.push_str(&r.fleet_status.output);
        if !r.fleet_status.output.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(&report::aligned(&rows));
    for (what, list) in [
        ("moved without a write", &r.foreign_moves),
        ("not on the head", &r.not_converged),
        ("role changes", &r.role_changes),
        ("watch streams ended", &r.watch_errors),
    ] {
        for line in list.iter().take(20) {
            out.push_str(&format!("{what}: {line}\n"));
        }
    }
    for w in r.writes.iter().filter(|w| w.error.is_some()).take(10) {
        out.push_str(&format!("write {} to {} failed: {}\n", w.change, w.pair, w.error.as_deref().unwrap_or("")));
    }
    out
}

/// The goals against the run.
pub fn goals(r: &FleetReport) -> Vec<Goal> {
    let p99 = r.latency_ms.p99;
    let status = r.fleet_status.median_ms;
    vec![
        Goal {
            goal: format!("write through etcd -> the pair's standby, p99 <= {GOAL_P99_MS:.0} ms"),
            measured: format!("{} ms (n={})", fmt_ms(p99), r.latency_ms.n),
            pass: p99.map(|p| p <= GOAL_P99_MS),
            correctness: false,
        },
        Goal {
            goal: "every change written through etcd reached its pair's standby".into(),
            measured: format!("{} of {} ({} writes failed)", r.applied_on_standby, r.changes, r.write_errors),
            pass: Some(r.applied_on_standby == r.changes),
            correctness: true,
        },
        Goal {
            goal: "other pairs untouched (each pair moved by its own writes only)".into(),
            measured: if r.other_pairs_untouched {
                "yes".into()
            } else {
                format!("{} unexpected moves", r.foreign_moves.len())
            },
            pass: Some(r.other_pairs_untouched),
            correctness: true,
        },
        Goal {
            goal: "every unit ends on its pair's head in etcd".into(),
            measured: if r.converged { "yes".into() } else { format!("{} units not", r.not_converged.len()) },
            pass: Some(r.converged),
            correctness: true,
        },
        Goal {
            goal: format!("fleet status of {} pairs <= {GOAL_STATUS_MS:.0} ms (median of {STATUS_RUNS})", r.pairs),
            measured: match (status, &r.fleet_status.error) {
                (Some(m), _) => format!("{m:.0} ms ({})", r.fleet_status.method),
                (None, Some(e)) => format!("not measured: {e}"),
                (None, None) => "not measured".into(),
            },
            pass: status.map(|m| m <= GOAL_STATUS_MS),
            correctness: false,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_plan_fits_one_segment() {
        let mut seen = std::collections::BTreeSet::new();
        for a in ["198.18.0.21", "198.18.0.22", "198.18.0.23", CLIENT_ADDR] {
            assert!(seen.insert(a.to_owned()));
        }
        for k in 1..=MAX_PAIRS {
            let p = PairPlan::new(k);
            for a in p.addrs.iter().chain([&p.shared]) {
                let last: u32 = a.rsplit('.').next().unwrap().parse().unwrap();
                assert!(last < 255, "{a}");
                assert!(seen.insert(a.clone()), "{a} twice");
            }
        }
        assert_eq!(PairPlan::new(1).vhid, 11);
    }
}
