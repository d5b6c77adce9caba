//! The load-balancer lab: the standard pair (units `a`, `b`, client `c` on
//! the front segment, 198.18.0.0/24, shared 198.18.0.10) plus a back
//! segment, 198.19.0.0/24, with the units at .1 and .2, a shared back
//! address .254 and a real server `s` at .100 whose default route is the
//! shared back address. A virtual service 198.18.0.10:80 (DNAT to
//! 198.19.0.100:8080) then carries client connections through whichever
//! unit is active.

use std::time::Duration;

use anyhow::Context;
use duet_proto::config::v1::{Protocol, RealServer, Scheduler, VirtualService};
use duet_proto::configsync::v1 as cs;
use duet_proto::configsync::v1::apply_config_request::Change;
use duet_proto::replicator::v1 as rp;
use duet_testkit::{HostId, Proc, in_netns, wait_for};

use crate::{PairLab, SHARED, UnitConfig, bin, configsync_call};

pub const BACK_UNIT1: &str = "198.19.0.1";
pub const BACK_UNIT2: &str = "198.19.0.2";
pub const BACK_SHARED: &str = "198.19.0.254";
pub const SERVER: &str = "198.19.0.100";
pub const SERVER_PORT: u16 = 8080;
pub const VS_PORT: u16 = 80;

/// Runs an end-to-end test body in a fresh [`LbLab`]. Skips (or, with
/// `CI` set, fails) without root; an error panics while the lab is alive,
/// so the lab prints the logs of every process it ran.
pub fn lb_test(name: &str, body: impl FnOnce(&mut LbLab) -> anyhow::Result<()>) {
    if !duet_testkit::require_root(name) {
        return;
    }
    let tag: String = name.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    let mut l = LbLab::new(&tag).expect("building the lab");
    if let Err(e) = body(&mut l) {
        panic!("{name}: {e:#}");
    }
}

/// The report of a [`LbLab::client`], once it has written it.
pub fn client_report(json: &std::path::Path, timeout: Duration) -> anyhow::Result<crate::conns::ClientReport> {
    let text = wait_for("the client's report", timeout, Duration::from_millis(200), || {
        std::fs::read_to_string(json).ok().filter(|t| t.ends_with('}'))
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// The replicator's local API inside a unit's namespace.
pub const REPLICATOR: &str = "http://127.0.0.1:7873";

/// A [`PairLab`] with a back segment and a real server.
#[derive(Debug)]
pub struct LbLab {
    pub l: PairLab,
    pub s: HostId,
}

impl LbLab {
    pub fn new(test: &str) -> anyhow::Result<Self> {
        let mut l = PairLab::new(test)?;
        let back = l.lab.segment("back")?;
        let s = l.lab.host("s")?;
        l.lab.attach(l.a, back, "eth1", &[&format!("{BACK_UNIT1}/24")])?;
        l.lab.attach(l.b, back, "eth1", &[&format!("{BACK_UNIT2}/24")])?;
        l.lab.attach(s, back, "eth0", &[&format!("{SERVER}/24")])?;
        l.lab.run(s, &["ip", "route", "add", "default", "via", BACK_SHARED])?;
        Ok(Self { l, s })
    }

    /// A unit of the pair with both interfaces, configsync and the
    /// replicator (certificate `cert`, partner `partner`).
    pub fn unit_config(&self, name: &str, mode: &'static str, cert: &str, partner: &str) -> anyhow::Result<UnitConfig> {
        let mut c = UnitConfig::new(name, mode, self.l.lab.dir());
        self.l.with_configsync(&mut c, cert, partner, 60)?;
        c.extra.push_str(&format!(
            "[replicator]\nenabled = true\nrefresh_interval_s = 5\n\n[[interface]]\nname = \"eth1\"\nunit1 = \"{BACK_UNIT1}/24\"\nunit2 = \"{BACK_UNIT2}/24\"\nshared = \"{BACK_SHARED}/24\"\n"
        ));
        Ok(c)
    }

    /// Starts the echo server in `s`.
    pub fn server(&mut self) -> anyhow::Result<Proc> {
        let exe = bin("duet-conns").to_string_lossy().into_owned();
        let listen = format!("{SERVER}:{SERVER_PORT}");
        Ok(self.l.lab.spawn(self.s, "server", &[&exe, "serve", "--listen", &listen], &[])?)
    }

    /// Starts `duet-conns client` in the client: `k` long-lived connections
    /// to the virtual service (the shared address, port 80) for
    /// `duration_s`. Returns it, its ready file (all open) and its report's
    /// path ([`client_report`]).
    pub fn client(
        &mut self,
        k: usize,
        duration_s: u64,
    ) -> anyhow::Result<(Proc, std::path::PathBuf, std::path::PathBuf)> {
        self.client_with(k, duration_s, &[])
    }

    /// [`client`](Self::client), kept until `stop_file` exists (at most an
    /// hour).
    pub fn client_until(
        &mut self,
        k: usize,
        stop_file: &std::path::Path,
    ) -> anyhow::Result<(Proc, std::path::PathBuf, std::path::PathBuf)> {
        self.client_with(k, 3600, &["--stop-file", &stop_file.to_string_lossy()])
    }

    fn client_with(
        &mut self,
        k: usize,
        duration_s: u64,
        extra: &[&str],
    ) -> anyhow::Result<(Proc, std::path::PathBuf, std::path::PathBuf)> {
        let ready = self.l.lab.dir().join("conns.ready");
        let json = self.l.lab.dir().join("conns.json");
        let exe = bin("duet-conns").to_string_lossy().into_owned();
        let (target, k, duration_s) = (format!("{SHARED}:{VS_PORT}"), k.to_string(), duration_s.to_string());
        let (ready_s, json_s) = (ready.to_string_lossy().into_owned(), json.to_string_lossy().into_owned());
        let mut argv = vec![
            exe.as_str(),
            "client",
            "--target",
            &target,
            "--conns",
            &k,
            "--duration-s",
            &duration_s,
            "--ramp-ms",
            "1000",
            "--ready-file",
            &ready_s,
            "--json",
            &json_s,
        ];
        argv.extend_from_slice(extra);
        let p = self.l.lab.spawn(self.l.c, "conns", &argv, &[])?;
        Ok((p, ready, json))
    }

    /// Adds the virtual service on `host` (the active unit), source
    /// persistence optional, and waits until both units have programmed it.
    pub fn add_service(&self, host: HostId, persistence_s: Option<u32>) -> anyhow::Result<u64> {
        self.add_service_on(host, persistence_s, &[self.l.a, self.l.b])
    }

    /// Adds the virtual service on `host` and waits until the units in
    /// `wait` have programmed it.
    pub fn add_service_on(&self, host: HostId, persistence_s: Option<u32>, wait: &[HostId]) -> anyhow::Result<u64> {
        let mut vs = service("web", VS_PORT);
        vs.persistence = persistence_s.map(|t| duet_proto::config::v1::Persistence {
            mode: duet_proto::config::v1::PersistenceMode::SourceAddress as i32,
            timeout_s: t,
            ..Default::default()
        });
        let generation = self.upsert_service(host, vs)?;
        for &h in wait {
            wait_for(
                &format!("generation {generation} programmed on {}", self.l.lab.ns(h)),
                Duration::from_secs(15),
                Duration::from_millis(100),
                || self.replicator_status(h).ok().and_then(|s| s.dataplane).filter(|d| d.generation >= generation),
            )?;
        }
        Ok(generation)
    }

    /// Commits `vs` (added or replaced by name) on `host`'s configsync;
    /// the new generation.
    pub fn upsert_service(&self, host: HostId, vs: VirtualService) -> anyhow::Result<u64> {
        upsert_service_in(&self.l.lab.ns(host), vs)
    }

    /// The configuration generation `host`'s configsync holds.
    pub fn generation(&self, host: HostId) -> anyhow::Result<u64> {
        configsync_call(&self.l.lab.ns(host), |mut c| async move {
            let s = c.get_status(cs::GetStatusRequest {}).await?.into_inner();
            Ok(s.local.map_or(0, |l| l.generation))
        })
    }

    /// GetStatus of the replicator in `host`.
    pub fn replicator_status(&self, host: HostId) -> anyhow::Result<rp::GetStatusResponse> {
        replicator_call(&self.l.lab.ns(host), |mut c| async move {
            Ok(c.get_status(rp::GetStatusRequest {}).await?.into_inner())
        })
    }

    /// Waits until the replicator of `host` has resynced and holds at
    /// least `flows` flows.
    pub fn wait_flows(&self, host: HostId, flows: u64, timeout: Duration) -> anyhow::Result<rp::GetStatusResponse> {
        Ok(wait_for(
            &format!("{flows} flows held by {}", self.l.lab.ns(host)),
            timeout,
            Duration::from_millis(100),
            || self.replicator_status(host).ok().filter(|s| s.flows >= flows),
        )?)
    }

    /// The kernel's conntrack entries to the virtual service in `host`
    /// (`conntrack -L`), as text lines.
    pub fn kernel_flows(&self, host: HostId) -> anyhow::Result<Vec<String>> {
        let out =
            self.l.lab.run(host, &["conntrack", "-L", "-p", "tcp", "--orig-dst", SHARED, "--orig-port-dst", "80"])?;
        Ok(out.lines().filter(|l| l.starts_with("tcp")).map(str::to_owned).collect())
    }
}

/// A TCP virtual service `name` on the shared address's `port`, to the
/// real server.
pub fn service(name: &str, port: u16) -> VirtualService {
    VirtualService {
        name: name.into(),
        address: SHARED.into(),
        port: u32::from(port),
        protocol: Protocol::Tcp as i32,
        scheduler: Scheduler::RoundRobin as i32,
        real_servers: vec![RealServer {
            address: SERVER.into(),
            port: u32::from(SERVER_PORT),
            weight: 1,
            enabled: true,
        }],
        persistence: None,
        enabled: true,
    }
}

/// Commits `vs` on the configsync inside namespace `ns` (the active's);
/// the new generation. A unit that has just started makes generation 1
/// from its file: before that a change is refused (no image yet) or, read
/// just before, stale; it is read again (bounded: 25 x 200 ms).
pub fn upsert_service_in(ns: &str, vs: VirtualService) -> anyhow::Result<u64> {
    configsync_call(ns, move |mut c| async move {
        let mut tries = 0;
        loop {
            let base = c.get_config(cs::GetConfigRequest { section: String::new() }).await?.into_inner();
            let base = base.image.map_or(0, |i| i.generation);
            let r = c
                .apply_config(cs::ApplyConfigRequest {
                    base_generation: base,
                    comment: format!("test service {} on port {}", vs.name, vs.port),
                    change: Some(Change::UpsertVirtualService(vs.clone())),
                })
                .await;
            match r {
                Ok(r) => return Ok(r.into_inner().generation),
                Err(s) if matches!(s.code(), tonic::Code::Aborted | tonic::Code::Unavailable) && tries < 25 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(s) => return Err(s.into()),
            }
        }
    })
}

/// Runs `f` with a replicator client connected inside namespace `ns`.
pub fn replicator_call<T, F, Fut>(ns: &str, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(
            duet_proto::replicator::v1::replicator_service_client::ReplicatorServiceClient<tonic::transport::Channel>,
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
                duet_proto::replicator::v1::replicator_service_client::ReplicatorServiceClient::connect(REPLICATOR),
            )
            .await
            .context("connecting to the replicator timed out")??;
            tokio::time::timeout(Duration::from_secs(30), f(c)).await.context("gRPC call timed out")?
        })
    })?
}
