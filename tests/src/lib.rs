//! Shared helpers of duet's end-to-end tests, the demo and the benchmarks
//! (`tests/bench`, `duet-bench`): a lab of units in network namespaces,
//! their configuration files, the service binaries, gRPC calls made from
//! inside a unit's namespace, long-lived client connections (`duet-conns`),
//! and packet crafting for hostile-wire tests.

pub mod conns;
pub mod lblab;
pub mod otlp;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use duet_proto::common::v1::Role;
use duet_proto::election::v1 as pb;
use duet_proto::election::v1::election_service_client::ElectionServiceClient;
use duet_testkit::{EtcdCluster, HostId, Lab, Proc, SegmentId, in_netns};

/// The election's gRPC address inside a unit's namespace.
pub const ELECTION: &str = "http://127.0.0.1:7870";

/// The etcd members of a lab with a witness (E14).
pub const ETCD: [&str; 3] = ["198.18.0.21/24", "198.18.0.22/24", "198.18.0.23/24"];

/// Addresses of the standard lab.
pub const UNIT1: &str = "198.18.0.1";
pub const UNIT2: &str = "198.18.0.2";
pub const SHARED: &str = "198.18.0.10";
pub const CLIENT: &str = "198.18.0.100";
pub const ATTACKER: &str = "198.18.0.66";

/// Path of a workspace binary (built by `cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("DUET_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    // Tests run from target/<profile>/deps/, the demo from target/<profile>/.
    let exe = std::env::current_exe().expect("own binary path");
    let mut dir = exe.parent().expect("binary directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target directory");
    }
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing: run `cargo build --workspace --bins` first (or set DUET_BIN_DIR)", p.display());
    p
}

/// A unit's configuration file text.
#[derive(Debug, Clone)]
pub struct UnitConfig {
    pub name: String,
    pub mode: &'static str,
    pub state_dir: PathBuf,
    /// Extra lines in `[ha]`.
    pub ha: String,
    /// Extra lines in the `[[interface]]` of eth0.
    pub iface: String,
    /// Extra sections at the end.
    pub extra: String,
    /// The pair's addresses (unit 1, unit 2, shared, without the prefix
    /// length): the standard pair's by default.
    pub addresses: [String; 3],
    /// `unit.pair`, when set.
    pub pair: Option<String>,
}

impl UnitConfig {
    /// A unit of the standard pair: 198.18.0.1/2, shared .10, timeout 3 s.
    pub fn new(name: &str, mode: &'static str, lab_dir: &Path) -> Self {
        Self {
            name: name.into(),
            mode,
            state_dir: lab_dir.join(format!("state-{name}")),
            ha: "password = \"secret\"\ntimeout_s = 3\n".into(),
            iface: String::new(),
            extra: String::new(),
            addresses: [UNIT1.into(), UNIT2.into(), SHARED.into()],
            pair: None,
        }
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        format!(
            "[unit]\nname = \"{}\"\nmode = \"{}\"\nstate_dir = \"{}\"\n{}\n[ha]\n{}\n[[interface]]\nname = \"eth0\"\nunit1 = \"{}/24\"\nunit2 = \"{}/24\"\nshared = \"{}/24\"\n{}\n\n[telemetry]\nlog = \"info,duet=debug\"\n\n{}\n",
            self.name,
            self.mode,
            self.state_dir.display(),
            self.pair.as_ref().map(|p| format!("pair = \"{p}\"\n")).unwrap_or_default(),
            self.ha,
            self.addresses[0],
            self.addresses[1],
            self.addresses[2],
            self.iface,
            self.extra
        )
    }

    /// E14: a `[witness]` for this unit on `etcd` (its certificate is the
    /// cluster's client certificate of the unit's name), and the pair's
    /// witness settings `ha` (e.g. `witness_policy = "required"`) in `[ha]`.
    pub fn with_witness(&mut self, etcd: &EtcdCluster, ha: &str) {
        let eps: Vec<String> = etcd.endpoints().iter().map(|e| format!("\"{e}\"")).collect();
        let d = etcd.certs();
        self.ha.push_str(ha);
        if !ha.is_empty() && !ha.ends_with('\n') {
            self.ha.push('\n');
        }
        self.extra.push_str(&format!(
            "[witness]\nendpoints = [{}]\ntls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            eps.join(", "),
            d.join("ca.pem").display(),
            d.join(format!("{}.pem", self.name)).display(),
            d.join(format!("{}.key", self.name)).display(),
        ));
    }

    /// Writes the file into `dir` (atomically: a service reading it never
    /// sees half a file) and returns its path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let p = dir.join(format!("{}.toml", self.name));
        let tmp = dir.join(format!(".{}.toml.tmp", self.name));
        std::fs::write(&tmp, self.toml())?;
        std::fs::rename(&tmp, &p)?;
        Ok(p)
    }
}

/// The standard lab: units `a` (198.18.0.1) and `b` (198.18.0.2), a client
/// `c` (198.18.0.100), optionally an attacker `x` (198.18.0.66), all on one
/// bridge.
#[derive(Debug)]
pub struct PairLab {
    pub lab: Lab,
    /// The segment every host is on.
    pub lan: SegmentId,
    pub a: HostId,
    pub b: HostId,
    pub c: HostId,
    pub x: Option<HostId>,
}

impl PairLab {
    pub fn new(test: &str) -> anyhow::Result<Self> {
        Self::build(test, false)
    }

    pub fn with_attacker(test: &str) -> anyhow::Result<Self> {
        Self::build(test, true)
    }

    fn build(test: &str, attacker: bool) -> anyhow::Result<Self> {
        let mut lab = Lab::new(test)?;
        let lan = lab.segment("lan")?;
        let a = lab.host("a")?;
        let b = lab.host("b")?;
        let c = lab.host("c")?;
        lab.attach(a, lan, "eth0", &[&format!("{UNIT1}/24")])?;
        lab.attach(b, lan, "eth0", &[&format!("{UNIT2}/24")])?;
        lab.attach(c, lan, "eth0", &[&format!("{CLIENT}/24")])?;
        let x = if attacker {
            let x = lab.host("x")?;
            lab.attach(x, lan, "eth0", &[&format!("{ATTACKER}/24")])?;
            Some(x)
        } else {
            None
        };
        Ok(Self { lab, lan, a, b, c, x })
    }

    /// E14: a three-member etcd cluster with TLS on the lab's segment
    /// ([`ETCD`]), with client certificates for `lb1` and `lb2`.
    pub fn etcd(&mut self) -> anyhow::Result<EtcdCluster> {
        Ok(EtcdCluster::start(&mut self.lab, self.lan, &ETCD, &["lb1", "lb2"], true)?)
    }

    /// Starts `duet-election` in `host` with `cfg`.
    pub fn election(&mut self, host: HostId, cfg: &UnitConfig) -> anyhow::Result<Proc> {
        let label = format!("election-{}", cfg.name);
        self.election_labeled(host, cfg, &label)
    }

    /// Same, with its own log label (one log file per label).
    pub fn election_labeled(&mut self, host: HostId, cfg: &UnitConfig, label: &str) -> anyhow::Result<Proc> {
        let path = cfg.write(self.lab.dir())?;
        let exe = bin("duet-election");
        let exe = exe.to_string_lossy().into_owned();
        let p = path.to_string_lossy().into_owned();
        Ok(self.lab.spawn(host, label, &[&exe, "--config", &p], &[("DUET_LOG", "info,duet=debug")])?)
    }

    /// Starts `duet-takeover` in `host` with `cfg` (written by `election`
    /// or here).
    pub fn takeover(&mut self, host: HostId, cfg: &UnitConfig) -> anyhow::Result<Proc> {
        let path = cfg.write(self.lab.dir())?;
        let exe = bin("duet-takeover").to_string_lossy().into_owned();
        let p = path.to_string_lossy().into_owned();
        Ok(self.lab.spawn(
            host,
            &format!("takeover-{}", cfg.name),
            &[&exe, "--config", &p],
            &[("DUET_LOG", "info,duet=debug")],
        )?)
    }

    /// Starts `duet-configsync` in `host` with `cfg`.
    pub fn configsync(&mut self, host: HostId, cfg: &UnitConfig) -> anyhow::Result<Proc> {
        self.configsync_labeled(host, cfg, &format!("configsync-{}", cfg.name))
    }

    /// Same, with its own log label.
    pub fn configsync_labeled(&mut self, host: HostId, cfg: &UnitConfig, label: &str) -> anyhow::Result<Proc> {
        let path = cfg.write(self.lab.dir())?;
        let exe = bin("duet-configsync").to_string_lossy().into_owned();
        let p = path.to_string_lossy().into_owned();
        Ok(self.lab.spawn(host, label, &[&exe, "--config", &p], &[("DUET_LOG", "info,duet=debug")])?)
    }

    /// Certificates for units `lb1`, `lb2` (and `lb3`, a stranger with the
    /// same CA) in `<lab>/certs`; returns the directory.
    pub fn certs(&self) -> anyhow::Result<PathBuf> {
        let dir = self.lab.dir().join("certs");
        if !dir.join("ca.pem").exists() {
            duet_testkit::write_certs(&dir, &["lb1", "lb2", "lb3"])?;
        }
        Ok(dir)
    }

    /// Adds a `[configsync]` section to `cfg` for unit `cert_name`
    /// expecting `partner`, with a short full-sync period.
    pub fn with_configsync(
        &self,
        cfg: &mut UnitConfig,
        cert_name: &str,
        partner: &str,
        sync_interval_s: u64,
    ) -> anyhow::Result<()> {
        let d = self.certs()?;
        cfg.extra.push_str(&format!(
            "[configsync]\npartner_name = \"{partner}\"\ntls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nsync_interval_s = {sync_interval_s}\nstore_dir = \"{}\"\n",
            d.join("ca.pem").display(),
            d.join(format!("{cert_name}.pem")).display(),
            d.join(format!("{cert_name}.key")).display(),
            cfg.state_dir.join("config").display(),
        ));
        Ok(())
    }

    /// Starts a whole unit (`duet unit --config`) in `host`.
    pub fn unit(&mut self, host: HostId, cfg: &UnitConfig) -> anyhow::Result<Proc> {
        self.unit_with_env(host, cfg, &[])
    }

    /// Starts a whole unit in `host` with `env` (`NAME=value`) added to its
    /// environment (its services inherit it), e.g. an OTLP endpoint.
    pub fn unit_with_env(&mut self, host: HostId, cfg: &UnitConfig, env: &[&str]) -> anyhow::Result<Proc> {
        self.unit_from(host, cfg, &bin("duet"), env)
    }

    /// Starts a whole unit in `host` from the `duet` binary `exe` (another
    /// release's, in the mixed-version test).
    pub fn unit_from(&mut self, host: HostId, cfg: &UnitConfig, exe: &Path, env: &[&str]) -> anyhow::Result<Proc> {
        let path = cfg.write(self.lab.dir())?;
        let exe = exe.to_string_lossy().into_owned();
        let p = path.to_string_lossy().into_owned();
        let mut argv = vec!["env", "DUET_LOG=info,duet=debug"];
        argv.extend_from_slice(env);
        argv.extend_from_slice(&[&exe, "unit", "--config", &p]);
        Ok(self.lab.spawn(host, &format!("unit-{}", cfg.name), &argv, &[])?)
    }

    /// The attacker's namespace (labs built with an attacker).
    pub fn ns_attacker(&self) -> String {
        self.lab.ns(self.x.expect("a lab with an attacker"))
    }

    /// GetStatus of the election in `host`.
    pub fn status(&self, host: HostId) -> anyhow::Result<pb::GetStatusResponse> {
        grpc(&self.lab.ns(host), |mut c| async move { Ok(c.get_status(pb::GetStatusRequest {}).await?.into_inner()) })
    }

    /// GetStatus of the takeover service in `host`.
    pub fn takeover_status(&self, host: HostId) -> anyhow::Result<duet_proto::takeover::v1::GetStatusResponse> {
        use duet_proto::takeover::v1::GetStatusRequest;
        use duet_proto::takeover::v1::takeover_service_client::TakeoverServiceClient;
        in_netns(&self.lab.ns(host), || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut c = tokio::time::timeout(Duration::from_secs(2), TakeoverServiceClient::connect(TAKEOVER))
                    .await
                    .context("connecting to the takeover service timed out")??;
                let r = tokio::time::timeout(Duration::from_secs(5), c.get_status(GetStatusRequest {}))
                    .await
                    .context("takeover GetStatus timed out")??;
                Ok(r.into_inner())
            })
        })?
    }

    /// The role of the election in `host`, or `None` if it does not answer.
    pub fn role(&self, host: HostId) -> Option<Role> {
        self.status(host).ok().and_then(|s| Role::try_from(s.role).ok())
    }

    /// Waits until `host` has `role`; returns how long it took.
    pub fn wait_role(&self, host: HostId, role: Role, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if self.role(host) == Some(role) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!("{} did not become {role:?} within {timeout:?} (now {:?})", self.lab.ns(host), self.role(host));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `f` with an election client connected inside namespace `ns`.
pub fn grpc<T, F, Fut>(ns: &str, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(ElectionServiceClient<tonic::transport::Channel>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
{
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let c = tokio::time::timeout(Duration::from_secs(3), ElectionServiceClient::connect(ELECTION))
                .await
                .context("connecting to the election timed out")??;
            tokio::time::timeout(Duration::from_secs(15), f(c)).await.context("gRPC call timed out")?
        })
    })?
}

/// The takeover service's gRPC address inside a unit's namespace.
pub const TAKEOVER: &str = "http://127.0.0.1:7871";

/// The configsync service's gRPC address inside a unit's namespace.
pub const CONFIGSYNC: &str = "http://127.0.0.1:7872";

/// Runs `f` with a configsync client connected inside namespace `ns`.
pub fn configsync_call<T, F, Fut>(ns: &str, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(
            duet_proto::configsync::v1::config_sync_service_client::ConfigSyncServiceClient<tonic::transport::Channel>,
        ) -> Fut
        + Send
        + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
{
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let c = tokio::time::timeout(
                Duration::from_secs(3),
                duet_proto::configsync::v1::config_sync_service_client::ConfigSyncServiceClient::connect(CONFIGSYNC),
            )
            .await
            .context("connecting to configsync timed out")??
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
            tokio::time::timeout(Duration::from_secs(30), f(c)).await.context("gRPC call timed out")?
        })
    })?
}

/// Wraps a CARP payload in an IPv4 header with the given TTL.
pub fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let h = duet_wire::Ipv4Header {
        tos: 0,
        ident: 7,
        dont_fragment: true,
        ttl,
        protocol: 112,
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

/// Sends raw IPv4 packets (header included) from inside namespace `ns`,
/// `gap` apart.
pub fn send_raw(ns: &str, packets: Vec<Vec<u8>>, gap: Duration) -> anyhow::Result<()> {
    in_netns(ns, move || -> anyhow::Result<()> {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))?;
        s.set_header_included_v4(true)?;
        s.bind_device(Some(b"eth0"))?;
        s.set_broadcast(true)?;
        for p in packets {
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            s.send_to(&p, &SockAddr::from(std::net::SocketAddrV4::new(dst, 0)))?;
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
        }
        Ok(())
    })?
}

/// Sends IPv4 packets as whole Ethernet frames from `host`'s eth0, exactly
/// as given (a raw IP socket would fix a wrong IP checksum). Multicast
/// destinations get their group MAC, others the broadcast MAC.
pub fn send_frames(lab: &Lab, host: HostId, packets: Vec<Vec<u8>>) -> anyhow::Result<()> {
    let index: u32 = lab.run(host, &["cat", "/sys/class/net/eth0/ifindex"])?.trim().parse()?;
    in_netns(&lab.ns(host), move || -> anyhow::Result<()> {
        let s = duet_net::packet::FrameSender::open(index)?;
        for p in packets {
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            let mac = if dst.is_multicast() {
                let o = dst.octets();
                [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
            } else {
                [0xff; 6]
            };
            let mut f = Vec::with_capacity(14 + p.len());
            f.extend_from_slice(&mac);
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x66]);
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend_from_slice(&p);
            s.send(&f)?;
        }
        Ok(())
    })?
}

/// Starts `tcpdump` for protocol 112 sent from `mac` (a unit's own frames,
/// not spoofed copies) on eth0 of `host`.
pub fn capture_adverts_from(lab: &mut Lab, host: HostId, mac: &str, label: &str) -> anyhow::Result<Proc> {
    let filter = format!("ip proto 112 and ether src {mac}");
    let p = lab.spawn(host, label, &["tcpdump", "-l", "-n", "-tt", "-i", "eth0", &filter], &[])?;
    p.wait_log("listening on", Duration::from_secs(5))?;
    Ok(p)
}

/// Timestamps and sources of CARP adverts seen by a tcpdump in a host.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// Seconds since the UNIX epoch.
    pub at: f64,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

/// Starts `tcpdump` for protocol 112 on eth0 of `host`.
pub fn capture_adverts(lab: &mut Lab, host: HostId, label: &str) -> anyhow::Result<Proc> {
    let p = lab.spawn(host, label, &["tcpdump", "-l", "-n", "-tt", "-i", "eth0", "ip proto 112"], &[])?;
    p.wait_log("listening on", Duration::from_secs(5))?;
    Ok(p)
}

/// Parses tcpdump's `-tt -n` lines for protocol 112.
pub fn parse_adverts(log: &str) -> Vec<Seen> {
    log.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let at: f64 = it.next()?.parse().ok()?;
            if it.next()? != "IP" {
                return None;
            }
            let src: Ipv4Addr = it.next()?.parse().ok()?;
            if it.next()? != ">" {
                return None;
            }
            let dst: Ipv4Addr = it.next()?.trim_end_matches(':').parse().ok()?;
            Some(Seen { at, src, dst })
        })
        .collect()
}

/// Pids of the processes named `binary` (their comm: a service's name,
/// whether it runs from its own binary or from `duet`) inside `host`.
pub fn pids_of(lab: &Lab, host: HostId, binary: &str) -> Vec<u32> {
    let Ok(pids) = duet_testkit::pids_in(&lab.ns(host)) else { return Vec::new() };
    // By the process name (comm): a service started by `duet unit` runs
    // from the duet binary under its own name.
    pids.into_iter()
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|n| n.trim_end() == binary))
        .collect()
}

/// Starts `ip -ts monitor address` in `host`: every address added or
/// deleted there, timestamped by the (shared) wall clock in UTC, so the
/// times compare with [`epoch_now`].
pub fn monitor_addresses(lab: &mut Lab, host: HostId, label: &str) -> anyhow::Result<Proc> {
    let p = lab.spawn(host, label, &["ip", "-ts", "monitor", "address"], &[("TZ", "UTC")])?;
    // `ip monitor` prints nothing until an event; give it a moment to subscribe.
    std::thread::sleep(Duration::from_millis(200));
    Ok(p)
}

/// An address event of `ip -ts monitor address`.
#[derive(Debug, Clone, PartialEq)]
pub struct AddrEvent {
    /// Seconds since the UNIX epoch (as [`monitor_addresses`] makes `ip`
    /// print it, in UTC; the same clock for every namespace).
    pub at: f64,
    pub added: bool,
    /// The address with its prefix, e.g. `198.18.0.10/24`.
    pub addr: String,
}

/// Parses `ip -ts monitor address` output (IPv4 lines).
pub fn parse_addr_events(log: &str) -> Vec<AddrEvent> {
    log.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('[')?;
            let (stamp, rest) = rest.split_once(']')?;
            let at = stamp_secs(stamp)?;
            let rest = rest.trim_start();
            let (added, rest) = match rest.strip_prefix("Deleted ") {
                Some(r) => (false, r),
                None => (true, rest),
            };
            let mut w = rest.split_whitespace();
            while let Some(t) = w.next() {
                if t == "inet" {
                    return Some(AddrEvent { at, added, addr: w.next()?.to_owned() });
                }
            }
            None
        })
        .collect()
}

/// `2026-12-04T22:42:03.635564` (UTC) as seconds since the epoch.
fn stamp_secs(s: &str) -> Option<f64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?);
    let sec = t.next()?.parse::<f64>().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

/// When `p` (an address monitor, [`monitor_addresses`]) saw the shared
/// address added (or deleted) at or after `after`.
pub fn shared_event(p: &Proc, added: bool, after: f64) -> Option<f64> {
    parse_addr_events(&p.log())
        .into_iter()
        .find(|e| e.added == added && e.at >= after && e.addr.starts_with(&format!("{SHARED}/")))
        .map(|e| e.at)
}

/// `duetctl status` in `host`.
pub fn duetctl_status(l: &PairLab, host: HostId) -> anyhow::Result<String> {
    let exe = bin("duetctl").to_string_lossy().into_owned();
    Ok(l.lab.run(host, &[&exe, "status"])?)
}

/// Seconds since the UNIX epoch, now.
pub fn epoch_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Median of a non-empty slice.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs an end-to-end test body in a fresh [`PairLab`]. Skips (or, with
/// `CI` set, fails) without root. An error panics while the lab is still
/// alive, so the lab prints the logs of every process it ran.
pub fn lab_test(name: &str, attacker: bool, body: impl FnOnce(&mut PairLab) -> anyhow::Result<()>) {
    if !duet_testkit::require_root(name) {
        return;
    }
    let tag: String = name.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    let mut l = if attacker { PairLab::with_attacker(&tag) } else { PairLab::new(&tag) }.expect("building the lab");
    if let Err(e) = body(&mut l) {
        panic!("{name}: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn address_events_parse() {
        let log = "[2026-12-04T22:42:03.637053] 1: lo    inet 198.18.0.10/24 scope global lo\n       valid_lft forever preferred_lft forever\n[2026-12-04T22:42:03.638459] Deleted 1: lo    inet 198.18.0.10/24 scope global lo\n";
        let e = super::parse_addr_events(log);
        assert_eq!(e.len(), 2);
        assert!(e[0].added && !e[1].added && e[0].addr == "198.18.0.10/24");
        assert!((e[1].at - e[0].at - 0.001406).abs() < 1e-6, "{e:?}");
        let day = super::stamp_secs("1970-01-02T00:00:00.5").unwrap();
        assert!((day - 86_400.5).abs() < 1e-9);
    }
}
