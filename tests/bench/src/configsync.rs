//! The configsync benchmark (issue 6): time from a committed change on the
//! active to its application on the standby, p50/p99 over many changes; and
//! a full sync of an image with 10,000 virtual services (time and bytes on
//! the wire). Two units with election and configsync in namespaces; the
//! watcher of the standby's committed generations runs inside its
//! namespace, so both ends stamp wall-clock time on the same host.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use duet_proto::common::v1::Role;
use duet_proto::config::v1::{Image, Protocol, RealServer, Scheduler, VirtualService};
use duet_proto::configsync::v1 as cs;
use duet_proto::configsync::v1::apply_config_request::Change;
use duet_testkit::HostId;
use serde::Serialize;

use duet_tests::{PairLab, UnitConfig, configsync_call, epoch_now};

use crate::report::{Goal, percentile};

/// The goal for commit on the active -> applied on the standby, p99.
pub const GOAL_P99_MS: f64 = 100.0;
/// The goal for an HA change committed on the active -> in force in the
/// standby's election, p99.
pub const GOAL_HA_P99_MS: f64 = 50.0;

/// What to run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigsyncOptions {
    /// Single-service commits on the active, back to back.
    pub changes: usize,
    /// Virtual services in the image of the full sync.
    pub services: usize,
    /// HA-settings commits on the active, back to back, each timed until
    /// the standby's election runs with it.
    pub ha_changes: usize,
}

impl Default for ConfigsyncOptions {
    fn default() -> Self {
        Self { changes: 1000, services: 10_000, ha_changes: 200 }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub changes: usize,
    pub applied_on_standby: usize,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub commits_per_s: f64,
    pub full_sync_services: usize,
    pub full_sync_ms: f64,
    pub full_sync_bytes: u64,
    pub force_update_ms: f64,
    pub force_update_bytes: u64,
    pub ha_changes: usize,
    pub ha_in_force_on_standby: usize,
    pub ha_latency_ms_p50: f64,
    pub ha_latency_ms_p99: f64,
    pub ha_latency_ms_max: f64,
}

fn vs(k: usize) -> VirtualService {
    VirtualService {
        name: format!("vs{k}"),
        address: format!("198.18.{}.{}", 100 + k / 250 % 100, k % 250 + 1),
        port: 80 + u32::try_from(k / 25_000).unwrap_or(0),
        protocol: Protocol::Tcp as i32,
        scheduler: Scheduler::WeightedRoundRobin as i32,
        real_servers: (0..4)
            .map(|r| RealServer {
                address: format!("198.19.{}.{}", k % 200, r + 1),
                port: 8080,
                weight: 10,
                enabled: true,
            })
            .collect(),
        persistence: None,
        enabled: true,
    }
}

fn tx_bytes(l: &PairLab, h: HostId) -> anyhow::Result<u64> {
    let out = l.lab.run(h, &["ip", "-s", "-j", "link", "show", "eth0"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["stats64"]["tx"]["bytes"].as_u64().context("tx bytes in `ip -s -j link`")
}

/// Watches the standby's generations from inside its namespace, recording
/// (generation, wall-clock seconds) until `stop`.
fn watch(
    ns: String,
    seen: Arc<Mutex<Vec<(u64, f64)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = configsync_call(&ns, move |mut c| async move {
            let mut s = c.watch_generations(cs::WatchGenerationsRequest {}).await?.into_inner();
            loop {
                match tokio::time::timeout(Duration::from_millis(200), s.message()).await {
                    Ok(Ok(Some(m))) => {
                        seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push((m.generation, epoch_now()))
                    }
                    Ok(_) => return Ok(()),
                    Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => return Ok(()),
                    Err(_) => {}
                }
            }
        });
    })
}

/// Watches the standby's election from inside its namespace, recording
/// (configuration generation, wall-clock seconds) of every role event that
/// says its parameters changed, until `stop`.
fn watch_election(
    ns: String,
    seen: Arc<Mutex<Vec<(u64, f64)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use duet_proto::election::v1::{RoleEventKind, WatchRoleRequest};
    std::thread::spawn(move || {
        let _ = duet_tests::grpc(&ns, move |mut c| async move {
            let mut s = c
                .watch_role(WatchRoleRequest { follower: String::new(), heartbeat_ms: 0, heartbeat_idle_ms: 0 })
                .await?
                .into_inner();
            loop {
                match tokio::time::timeout(Duration::from_millis(200), s.message()).await {
                    Ok(Ok(Some(m))) if m.kind == RoleEventKind::Parameters as i32 => {
                        seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push((m.config_generation, epoch_now()))
                    }
                    Ok(Ok(Some(_))) => {}
                    Ok(_) => return Ok(()),
                    Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => return Ok(()),
                    Err(_) => {}
                }
            }
        });
    })
}

fn applied_at(seen: &[(u64, f64)], g: u64, not_before: f64) -> Option<f64> {
    seen.iter().filter(|(n, t)| *n >= g && *t >= not_before - 0.001).map(|(_, t)| *t).reduce(f64::min)
}

/// Runs the benchmark: `opts.changes` small changes, then an image of
/// `opts.services` virtual services.
pub fn run(opts: &ConfigsyncOptions) -> anyhow::Result<SyncReport> {
    let ConfigsyncOptions { changes, services, ha_changes } = *opts;
    let mut l = PairLab::new("syncbench")?;
    let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
    let mut c2 = UnitConfig::new("lb2", "second", l.lab.dir());
    l.with_configsync(&mut c1, "lb1", "lb2", 3600)?;
    l.with_configsync(&mut c2, "lb2", "lb1", 3600)?;
    let _e1 = l.election(l.a, &c1)?;
    let _e2 = l.election(l.b, &c2)?;
    let _s1 = l.configsync(l.a, &c1)?;
    let _s2 = l.configsync(l.b, &c2)?;
    l.wait_role(l.a, Role::Active, Duration::from_secs(20))?;
    l.wait_role(l.b, Role::Standby, Duration::from_secs(20))?;
    let na = l.lab.ns(l.a);
    let nb = l.lab.ns(l.b);
    duet_testkit::wait_for("generation 1 on the standby", Duration::from_secs(15), Duration::from_millis(100), || {
        configsync_call(&nb, |mut c| async move {
            Ok(c.get_config(cs::GetConfigRequest { section: "ha".into() }).await?.into_inner())
        })
        .ok()
        .and_then(|r| r.image)
        .filter(|i| i.generation >= 1)
    })?;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch(nb.clone(), Arc::clone(&seen), Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(300));

    // 1. Small changes, back to back.
    let started = Instant::now();
    let commits: Vec<(u64, f64)> = configsync_call(&na, move |mut c| async move {
        let mut base = c
            .get_config(cs::GetConfigRequest { section: "ha".into() })
            .await?
            .into_inner()
            .image
            .map_or(0, |i| i.generation);
        let mut out = Vec::with_capacity(changes);
        for k in 0..changes {
            let r = c
                .apply_config(cs::ApplyConfigRequest {
                    base_generation: base,
                    comment: String::new(),
                    change: Some(Change::UpsertVirtualService(vs(k % 50))),
                })
                .await?
                .into_inner();
            out.push((r.generation, epoch_now()));
            base = r.generation;
        }
        Ok(out)
    })?;
    let commit_time = started.elapsed();
    let last = commits.last().map_or(0, |c| c.0);
    duet_testkit::wait_for(
        "the last change on the standby",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || seen.lock().ok()?.iter().any(|(g, _)| *g >= last).then_some(()),
    )?;
    let mut lat: Vec<f64> = {
        let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        commits.iter().filter_map(|(g, t)| applied_at(&s, *g, *t).map(|a| (a - t).max(0.0) * 1000.0)).collect()
    };
    lat.sort_by(f64::total_cmp);

    // 2. HA settings: committed on the active -> in force in the standby's
    // election (its role stream says so with the generation).
    let params_seen = Arc::new(Mutex::new(Vec::new()));
    let stop_ha = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let election_watcher = watch_election(nb.clone(), Arc::clone(&params_seen), Arc::clone(&stop_ha));
    std::thread::sleep(Duration::from_millis(300));
    let ha_commits: Vec<(u64, f64)> = configsync_call(&na, move |mut c| async move {
        let img = c.get_config(cs::GetConfigRequest { section: "ha".into() }).await?.into_inner().image;
        let (mut base, ha) = img.map(|i| (i.generation, i.ha.unwrap_or_default())).unwrap_or_default();
        let mut out = Vec::with_capacity(ha_changes);
        for k in 0..ha_changes {
            // A setting the standby's election takes live without a role
            // change: the initial wait (it matters only at start).
            let ha =
                duet_proto::config::v1::HaSettings { initial_wait_s: u32::try_from(k % 250).unwrap_or(0) + 1, ..ha };
            let r = c
                .apply_config(cs::ApplyConfigRequest {
                    base_generation: base,
                    comment: String::new(),
                    change: Some(Change::Ha(ha)),
                })
                .await?
                .into_inner();
            out.push((r.generation, epoch_now()));
            base = r.generation;
            // One at a time: each change timed on its own.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(out)
    })?;
    let ha_last = ha_commits.last().map_or(0, |c| c.0);
    let _ = duet_testkit::wait_for(
        "the last HA change in the standby's election",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || params_seen.lock().ok()?.iter().any(|(g, _)| *g >= ha_last).then_some(()),
    );
    stop_ha.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = election_watcher.join();
    let mut ha_lat: Vec<f64> = {
        let s = params_seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        ha_commits.iter().filter_map(|(g, t)| applied_at(&s, *g, *t).map(|a| (a - t).max(0.0) * 1000.0)).collect()
    };
    ha_lat.sort_by(f64::total_cmp);

    // 3. A whole image of `services` virtual services.
    let mut big = Image::default();
    let base_img = configsync_call(&na, |mut c| async move {
        Ok(c.get_config(cs::GetConfigRequest { section: String::new() }).await?.into_inner().image.unwrap_or_default())
    })?;
    big.ha = base_img.ha;
    big.interfaces = base_img.interfaces.clone();
    big.virtual_services = (0..services).map(vs).collect();
    let tx0 = tx_bytes(&l, l.a)?;
    let t0 = epoch_now();
    let g = base_img.generation;
    let r = configsync_call(&na, move |mut c| async move {
        Ok(c.apply_config(cs::ApplyConfigRequest {
            base_generation: g,
            comment: format!("{services} virtual services"),
            change: Some(Change::Image(big)),
        })
        .await?
        .into_inner())
    })?;
    let big_gen = r.generation;
    duet_testkit::wait_for("the big image on the standby", Duration::from_secs(60), Duration::from_millis(20), || {
        seen.lock().ok()?.iter().any(|(g, _)| *g >= big_gen).then_some(())
    })?;
    let t_applied = applied_at(&seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?, big_gen, t0).unwrap_or(f64::NAN);
    std::thread::sleep(Duration::from_millis(200));
    let full_bytes = tx_bytes(&l, l.a)?.saturating_sub(tx0);

    // 4. ForceUpdate of the same image (a full push the standby already has).
    let tx1 = tx_bytes(&l, l.a)?;
    let f =
        configsync_call(&na, |mut c| async move { Ok(c.force_update(cs::ForceUpdateRequest {}).await?.into_inner()) })?;
    std::thread::sleep(Duration::from_millis(200));
    let force_bytes = tx_bytes(&l, l.a)?.saturating_sub(tx1);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();

    Ok(SyncReport {
        changes,
        applied_on_standby: lat.len(),
        latency_ms_p50: percentile(&lat, 50.0).unwrap_or(f64::NAN),
        latency_ms_p99: percentile(&lat, 99.0).unwrap_or(f64::NAN),
        latency_ms_max: lat.last().copied().unwrap_or(f64::NAN),
        commits_per_s: changes as f64 / commit_time.as_secs_f64(),
        full_sync_services: services,
        full_sync_ms: (t_applied - t0) * 1000.0,
        full_sync_bytes: full_bytes,
        force_update_ms: f.took_ms as f64,
        force_update_bytes: force_bytes,
        ha_changes,
        ha_in_force_on_standby: ha_lat.len(),
        ha_latency_ms_p50: percentile(&ha_lat, 50.0).unwrap_or(f64::NAN),
        ha_latency_ms_p99: percentile(&ha_lat, 99.0).unwrap_or(f64::NAN),
        ha_latency_ms_max: ha_lat.last().copied().unwrap_or(f64::NAN),
    })
}

/// The report as text, one figure a line.
pub fn text(r: &SyncReport) -> String {
    [
        format!(
            "configsync: commit on the active -> applied on the standby ({} changes back to back, {:.0} commits/s)",
            r.changes, r.commits_per_s
        ),
        format!(
            "  p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   (the reference syncs every 2 minutes)",
            r.latency_ms_p50, r.latency_ms_p99, r.latency_ms_max
        ),
        format!(
            "full sync of {} virtual services: {:.0} ms commit -> applied, {} bytes on the wire ({:.1} MB)",
            r.full_sync_services,
            r.full_sync_ms,
            r.full_sync_bytes,
            r.full_sync_bytes as f64 / 1e6
        ),
        format!("force update of the same image: {:.0} ms, {} bytes", r.force_update_ms, r.force_update_bytes),
        format!(
            "HA settings: committed on the active -> in force in the standby's election ({} changes): p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
            r.ha_changes, r.ha_latency_ms_p50, r.ha_latency_ms_p99, r.ha_latency_ms_max
        ),
    ]
    .map(|l| l + "\n")
    .concat()
}

/// The goals against the run: the latency (performance) and every
/// change reaching the standby (correctness).
pub fn goals(r: &SyncReport) -> Vec<Goal> {
    vec![
        Goal {
            goal: format!("configsync commit on the active -> applied on the standby p99 <= {GOAL_P99_MS:.0} ms"),
            measured: format!("{:.2} ms (n={})", r.latency_ms_p99, r.applied_on_standby),
            pass: r.latency_ms_p99.is_finite().then_some(r.latency_ms_p99 <= GOAL_P99_MS),
            correctness: false,
        },
        Goal {
            goal: "every committed change applied on the standby".into(),
            measured: format!("{} of {}", r.applied_on_standby, r.changes),
            pass: Some(r.applied_on_standby == r.changes),
            correctness: true,
        },
        Goal {
            goal: format!(
                "HA change on the active -> in force in the standby's election p99 <= {GOAL_HA_P99_MS:.0} ms"
            ),
            measured: format!("{:.2} ms (n={})", r.ha_latency_ms_p99, r.ha_in_force_on_standby),
            pass: r.ha_latency_ms_p99.is_finite().then_some(r.ha_latency_ms_p99 <= GOAL_HA_P99_MS),
            correctness: false,
        },
        Goal {
            goal: "every committed HA change in force in the standby's election".into(),
            measured: format!("{} of {}", r.ha_in_force_on_standby, r.ha_changes),
            pass: Some(r.ha_in_force_on_standby == r.ha_changes),
            correctness: true,
        },
    ]
}
