//! configsync in namespaces: push on change, periodic repair, force update,
//! writes on the active only, mutual TLS identity, crash safety, split
//! merge, local settings, HA/non-HA restore, and the HA settings driving
//! the election live (and from the store when it restarts).

use std::time::{Duration, Instant};

use anyhow::ensure;
use duet_image::store::Store;
use duet_proto::common::v1::Role;
use duet_proto::config::v1::{HaSettings, Image, LocalSettings, Protocol, RealServer, Scheduler, VirtualService};
use duet_proto::configsync::v1 as cs;
use duet_proto::configsync::v1::apply_config_request::Change;
use duet_testkit::{Proc, wait_for};
use duet_tests::*;

const T: Duration = Duration::from_secs(20);

struct Pair {
    c1: UnitConfig,
    c2: UnitConfig,
    _e1: Proc,
    _e2: Proc,
    s1: Proc,
    s2: Proc,
}

fn start(l: &mut PairLab, sync_s: u64) -> anyhow::Result<Pair> {
    let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
    let mut c2 = UnitConfig::new("lb2", "second", l.lab.dir());
    l.with_configsync(&mut c1, "lb1", "lb2", sync_s)?;
    l.with_configsync(&mut c2, "lb2", "lb1", sync_s)?;
    let e1 = l.election(l.a, &c1)?;
    let e2 = l.election(l.b, &c2)?;
    let s1 = l.configsync(l.a, &c1)?;
    let s2 = l.configsync(l.b, &c2)?;
    l.wait_role(l.a, Role::Active, T)?;
    l.wait_role(l.b, Role::Standby, T)?;
    // The active bootstraps generation 1 from its unit file and pushes it.
    wait_generation(l, l.b, 1, Duration::from_secs(10))?;
    Ok(Pair { c1, c2, _e1: e1, _e2: e2, s1, s2 })
}

fn status(l: &PairLab, h: duet_testkit::HostId) -> anyhow::Result<cs::GetStatusResponse> {
    configsync_call(&l.lab.ns(h), |mut c| async move { Ok(c.get_status(cs::GetStatusRequest {}).await?.into_inner()) })
}

fn current(l: &PairLab, h: duet_testkit::HostId) -> anyhow::Result<Image> {
    configsync_call(&l.lab.ns(h), |mut c| async move {
        Ok(c.get_config(cs::GetConfigRequest { section: String::new() }).await?.into_inner().image.unwrap_or_default())
    })
}

fn wait_generation(l: &PairLab, h: duet_testkit::HostId, g: u64, timeout: Duration) -> anyhow::Result<Image> {
    Ok(wait_for(&format!("generation {g} on {}", l.lab.ns(h)), timeout, Duration::from_millis(50), || {
        current(l, h).ok().filter(|i| i.generation >= g)
    })?)
}

fn apply(
    l: &PairLab,
    h: duet_testkit::HostId,
    base: u64,
    change: Change,
) -> Result<cs::ApplyConfigResponse, tonic::Status> {
    configsync_call(&l.lab.ns(h), move |mut c| async move {
        Ok(c.apply_config(cs::ApplyConfigRequest {
            base_generation: base,
            comment: "test".into(),
            change: Some(change),
        })
        .await)
    })
    .expect("configsync reachable")
    .map(tonic::Response::into_inner)
}

fn vs(name: &str, port: u32) -> VirtualService {
    VirtualService {
        name: name.into(),
        address: SHARED.into(),
        port,
        protocol: Protocol::Tcp as i32,
        scheduler: Scheduler::RoundRobin as i32,
        real_servers: vec![RealServer { address: "198.18.1.1".into(), port: 8080, weight: 1, enabled: true }],
        persistence: None,
        enabled: true,
    }
}

#[test]
fn a_change_on_the_active_is_on_the_standby_at_once_and_the_standby_refuses_writes() {
    lab_test("cs_push", false, |l| {
        let _p = start(l, 120)?;
        let g = current(l, l.a)?.generation;
        let t0 = Instant::now();
        let r = apply(l, l.a, g, Change::UpsertVirtualService(vs("web", 80))).map_err(|s| anyhow::anyhow!("{s}"))?;
        let on_b = wait_generation(l, l.b, r.generation, Duration::from_secs(3))?;
        eprintln!("commit on lb1 -> on lb2: {:?}", t0.elapsed());
        assert_eq!(on_b.hash, r.hash);
        assert_eq!(on_b.virtual_services[0].name, "web");
        let st = status(l, l.a)?;
        assert!(st.in_sync, "{st:?}");

        let e = apply(l, l.b, on_b.generation, Change::UpsertVirtualService(vs("other", 81))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("standby") && e.message().contains("lb1") && e.message().contains("198.18.0.1"),
            "{e}"
        );
        // A stale base is refused too.
        let e = apply(l, l.a, g, Change::UpsertVirtualService(vs("late", 82))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Aborted, "{e}");
        // An invalid image names the field, and nothing is half-applied.
        let mut bad = vs("bad", 0);
        bad.real_servers[0].weight = 5000;
        let e = apply(l, l.a, r.generation, Change::UpsertVirtualService(bad)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("virtual_services[bad].port") && e.message().contains("real_servers[0].weight"),
            "{e}"
        );
        assert_eq!(current(l, l.a)?.generation, r.generation);
        Ok(())
    });
}

#[test]
fn periodic_sync_repairs_a_standby_changed_by_hand() {
    lab_test("cs_repair", false, |l| {
        let mut p = start(l, 5)?;
        let a = current(l, l.a)?;
        // Stop lb2's configsync and change its store by hand.
        p.s2.terminate(Duration::from_secs(5))?;
        let dir = p.c2.state_dir.join("config");
        {
            let mut s = Store::open(&dir, 20)?;
            let mut hand = s.current().clone();
            hand.ha = Some(HaSettings { timeout_s: 15, ..hand.ha.unwrap_or_default() });
            s.commit(&hand, duet_image::store::provenance("someone", "committed", "changed by hand"))?;
        }
        p.s2 = l.configsync_labeled(l.b, &p.c2.clone(), "configsync-lb2-again")?;
        let repaired =
            wait_for("lb2 repaired by the periodic sync", Duration::from_secs(15), Duration::from_millis(200), || {
                current(l, l.b).ok().filter(|i| i.hash == a.hash)
            })?;
        assert!(repaired.generation > a.generation, "re-based above the hand-made generation");
        let hist = configsync_call(&l.lab.ns(l.b), |mut c| async move {
            Ok(c.history(cs::HistoryRequest {}).await?.into_inner())
        })?;
        assert!(
            hist.backups.iter().any(|b| b
                .generations
                .iter()
                .any(|g| g.provenance.as_ref().is_some_and(|p| p.comment == "changed by hand"))),
            "{hist:?}"
        );
        Ok(())
    });
}

#[test]
fn force_update_is_refused_while_the_partner_is_down() {
    lab_test("cs_force", false, |l| {
        let mut p = start(l, 120)?;
        let ok = configsync_call(&l.lab.ns(l.a), |mut c| async move {
            Ok(c.force_update(cs::ForceUpdateRequest {}).await?.into_inner())
        })?;
        assert_eq!(ok.generation, current(l, l.a)?.generation);
        p.s2.kill()?;
        let e = wait_for("the partner seen down", Duration::from_secs(15), Duration::from_millis(200), || {
            configsync_call(&l.lab.ns(l.a), |mut c| async move { Ok(c.force_update(cs::ForceUpdateRequest {}).await) })
                .ok()
                .and_then(Result::err)
        })?;
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(e.message().contains("lb2") && e.message().contains("not reachable"), "{e}");
        Ok(())
    });
}

#[test]
fn a_wrong_peer_certificate_is_refused_and_logged() {
    lab_test("cs_badcert", false, |l| {
        let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
        let mut c2 = UnitConfig::new("lb2", "second", l.lab.dir());
        l.with_configsync(&mut c1, "lb1", "lb2", 5)?;
        // lb2 presents a certificate of the right CA but issued to lb3.
        l.with_configsync(&mut c2, "lb3", "lb1", 5)?;
        let _e1 = l.election(l.a, &c1)?;
        let _e2 = l.election(l.b, &c2)?;
        let s1 = l.configsync(l.a, &c1)?;
        let _s2 = l.configsync(l.b, &c2)?;
        l.wait_role(l.a, Role::Active, T)?;
        s1.wait_log("its certificate is not issued to configsync.partner_name", Duration::from_secs(10))?;
        std::thread::sleep(Duration::from_secs(6));
        assert_eq!(current(l, l.b)?.generation, 0, "nothing from lb1 was accepted by lb3, nor the other way");
        let st = status(l, l.a)?;
        assert!(!st.in_sync);
        // Strangers at lb1's peer port, from the client's namespace: a
        // certificate of another CA, and none at all. Each is refused in the
        // handshake, counted by reason and logged with the caller.
        let other = l.lab.dir().join("other-ca");
        duet_testkit::write_certs(&other, &["lb2"])?;
        let pair = l.certs()?;
        let tries = [("unknown_ca", Some((other.join("lb2.pem"), other.join("lb2.key")))), ("no_certificate", None)];
        for (reason, identity) in tries {
            let ca = std::fs::read(pair.join("ca.pem"))?;
            let identity = identity.map(|(c, k)| anyhow::Ok((std::fs::read(c)?, std::fs::read(k)?))).transpose()?;
            let refused = duet_testkit::in_netns(&l.lab.ns(l.c), move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let mut tls = tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                        .domain_name("lb1");
                    if let Some((c, k)) = identity {
                        tls = tls.identity(tonic::transport::Identity::from_pem(c, k));
                    }
                    let ep =
                        tonic::transport::Endpoint::from_shared(format!("https://{UNIT1}:6973"))?.tls_config(tls)?;
                    let ch = ep.connect().await;
                    let call = match ch {
                        Ok(ch) => cs::peer_sync_service_client::PeerSyncServiceClient::new(ch)
                            .held(cs::HeldRequest {})
                            .await
                            .is_err(),
                        Err(_) => true,
                    };
                    anyhow::Ok(call)
                })
            })??;
            assert!(refused, "{reason}: a stranger was served");
            s1.wait_log(&format!("reason=\"{reason}\""), Duration::from_secs(5))
                .or_else(|_| s1.wait_log(&format!("reason={reason}"), Duration::from_secs(1)))?;
        }
        let st = status(l, l.a)?;
        let line = st.warnings.iter().find(|w| w.starts_with("the peer link refused")).cloned().unwrap_or_default();
        assert!(
            line.contains("unknown_ca") && line.contains("no_certificate") && line.contains("wrong_name"),
            "{:?}",
            st.warnings
        );
        // lb2's own view of lb1's certificate (for lb3's name, from lb1's
        // point of view lb2's is wrong): a refusal, not an unreachable partner.
        assert!(!st.warnings.iter().any(|w| w.contains("unreachable (invalid peer certificate")), "{:?}", st.warnings);
        assert!(s1.log().contains("peer=198.18.0.100"), "the caller is named:\n{}", s1.log());
        Ok(())
    });
}

#[test]
fn kill_9_during_writes_never_corrupts_the_store_or_loses_an_acknowledged_commit() {
    lab_test("cs_kill9", false, |l| {
        let mut p = start(l, 120)?;
        let dir = p.c1.state_dir.join("config");
        let mut acked = 0u64;
        for round in 0..8 {
            // Commit as fast as possible from a client, and kill -9 the
            // service after a random-ish delay.
            let ns = l.lab.ns(l.a);
            let writer = std::thread::spawn(move || {
                configsync_call(&ns, move |mut c| async move {
                    let mut last = 0;
                    for k in 0..10_000u32 {
                        let g = c
                            .get_config(cs::GetConfigRequest { section: "ha".into() })
                            .await?
                            .into_inner()
                            .image
                            .unwrap_or_default()
                            .generation;
                        let r = c
                            .apply_config(cs::ApplyConfigRequest {
                                base_generation: g,
                                comment: String::new(),
                                change: Some(Change::UpsertVirtualService(vs(&format!("vs{k}"), 1000 + k % 60_000))),
                            })
                            .await;
                        match r {
                            Ok(r) => last = r.into_inner().generation,
                            Err(_) => break,
                        }
                    }
                    Ok(last)
                })
                .unwrap_or(0)
            });
            std::thread::sleep(Duration::from_millis(150 + 97 * round));
            p.s1.kill()?;
            let last_acked = writer.join().unwrap_or(0);
            acked = acked.max(last_acked);
            let s = Store::open(&dir, 20)?;
            assert!(duet_image::hash_ok(s.current()), "round {round}: the current generation verifies");
            assert!(
                s.current().generation >= acked,
                "round {round}: acknowledged generation {acked} kept (current {})",
                s.current().generation
            );
            for g in s.history() {
                assert!(s.generation(g.generation).is_ok());
            }
            p.s1 = l.configsync_labeled(l.a, &p.c1.clone(), &format!("configsync-lb1-r{round}"))?;
            p.s1.wait_log("configsync started", Duration::from_secs(10))?;
        }
        assert!(acked > 0);
        Ok(())
    });
}

#[test]
fn a_split_is_merged_with_the_losers_generations_kept_as_a_backup() {
    lab_test("cs_split", false, |l| {
        let p = start(l, 120)?;
        let base = current(l, l.a)?.generation;
        // Partition: adverts and the peer link dropped at the switch.
        let r1 = l.lab.add_switch_rule("ip protocol 112 drop")?;
        let r2 = l.lab.add_switch_rule("tcp dport 6973 drop")?;
        let r3 = l.lab.add_switch_rule("udp dport 6973 drop")?;
        l.wait_role(l.b, Role::Active, Duration::from_secs(8))?;
        let a1 =
            apply(l, l.a, base, Change::UpsertVirtualService(vs("a-side", 80))).map_err(|s| anyhow::anyhow!("{s}"))?;
        let b1 =
            apply(l, l.b, base, Change::UpsertVirtualService(vs("b-side", 81))).map_err(|s| anyhow::anyhow!("{s}"))?;
        let b2 = apply(l, l.b, b1.generation, Change::UpsertVirtualService(vs("b-side-2", 82)))
            .map_err(|s| anyhow::anyhow!("{s}"))?;
        for r in [r1, r2, r3] {
            l.lab.remove_rule(r)?;
        }
        // The election settles on lb1 (first); lb2's generations lose.
        l.wait_role(l.b, Role::Standby, Duration::from_secs(8))?;
        let merged = wait_for("lb2 takes lb1's image", Duration::from_secs(15), Duration::from_millis(200), || {
            let a = current(l, l.a).ok()?;
            let b = current(l, l.b).ok()?;
            (a.hash == b.hash && a.generation == b.generation && a.generation > a1.generation).then_some(b)
        })?;
        assert!(merged.virtual_services.iter().any(|v| v.name == "a-side"));
        assert!(!merged.virtual_services.iter().any(|v| v.name.starts_with("b-side")));
        let st = status(l, l.b)?;
        assert_eq!(st.split_backups.len(), 1, "{st:?}");
        let hist = configsync_call(&l.lab.ns(l.b), |mut c| async move {
            Ok(c.history(cs::HistoryRequest {}).await?.into_inner())
        })?;
        let kept: Vec<u64> = hist.backups.iter().flat_map(|b| b.generations.iter().map(|g| g.generation)).collect();
        assert_eq!(kept, vec![b1.generation, b2.generation], "{hist:?}");
        p.s2.wait_log("configuration split merged", Duration::from_secs(1))?;
        Ok(())
    });
}

/// Found by the fault lab (`duet-bench chaos`, seed 107): a commit
/// acknowledged on the active just before the role moved, whose push had
/// not reached the partner. The new active held less, not something else:
/// it takes the newer generation from its partner (a fast forward) instead
/// of re-basing its older image over it, which lost the acknowledged commit
/// into a split backup.
#[test]
fn a_commit_acknowledged_just_before_a_handover_is_kept_by_the_new_active() {
    lab_test("cs_ackho", false, |l| {
        let _p = start(l, 120)?;
        let base = current(l, l.a)?.generation;
        // The peer link cut (the adverts and the peer status still flow):
        // the commit is acknowledged, its push does not arrive.
        let cut = l.lab.add_switch_rule("tcp dport 6973 drop")?;
        let acked =
            apply(l, l.a, base, Change::UpsertVirtualService(vs("acked", 80))).map_err(|s| anyhow::anyhow!("{s}"))?;
        std::thread::sleep(Duration::from_millis(300));
        ensure!(current(l, l.b)?.generation == base, "the push was cut");
        l.lab.run(l.a, &[&bin("duetctl").to_string_lossy(), "failover"])?;
        l.wait_role(l.b, Role::Active, T)?;
        l.wait_role(l.a, Role::Standby, T)?;
        l.lab.remove_rule(cut)?;
        let kept = wait_for("both units on one image", Duration::from_secs(20), Duration::from_millis(200), || {
            let a = current(l, l.a).ok()?;
            let b = current(l, l.b).ok()?;
            (a.hash == b.hash && a.generation == b.generation && b.generation >= acked.generation).then_some(b)
        })?;
        ensure!(kept.virtual_services.iter().any(|v| v.name == "acked"), "the acknowledged commit is kept: {kept:?}");
        ensure!(kept.generation == acked.generation, "taken as it was, not re-committed: {kept:?}");
        ensure!(status(l, l.a)?.split_backups.is_empty(), "nothing set aside as a split");
        Ok(())
    });
}

#[test]
fn local_settings_never_cross_and_restore_refuses_the_other_kind_of_unit() {
    lab_test("cs_local", false, |l| {
        let _p = start(l, 5)?;
        let mine = LocalSettings {
            ntp_servers: vec!["198.18.0.123".into()],
            hostname: "lb1-local".into(),
            ..Default::default()
        };
        let m = mine.clone();
        configsync_call(&l.lab.ns(l.a), move |mut c| async move {
            c.set_local(cs::SetLocalRequest { local: Some(m) }).await?;
            Ok(())
        })?;
        // A change and a full sync later, lb2's own settings are untouched.
        let g = current(l, l.a)?.generation;
        let r = apply(l, l.a, g, Change::UpsertVirtualService(vs("web", 80))).map_err(|s| anyhow::anyhow!("{s}"))?;
        wait_generation(l, l.b, r.generation, Duration::from_secs(3))?;
        std::thread::sleep(Duration::from_secs(6));
        let theirs = configsync_call(&l.lab.ns(l.b), |mut c| async move {
            Ok(c.get_local(cs::GetLocalRequest {}).await?.into_inner().local.unwrap_or_default())
        })?;
        assert_eq!(theirs, LocalSettings::default());
        // Local settings can be written on the standby.
        configsync_call(&l.lab.ns(l.b), |mut c| async move {
            c.set_local(cs::SetLocalRequest {
                local: Some(LocalSettings { hostname: "lb2-local".into(), ..Default::default() }),
            })
            .await?;
            Ok(())
        })?;
        let ours = configsync_call(&l.lab.ns(l.a), |mut c| async move {
            Ok(c.get_local(cs::GetLocalRequest {}).await?.into_inner().local.unwrap_or_default())
        })?;
        assert_eq!(ours, mine);

        // A backup of a non-HA unit cannot be restored onto an HA unit.
        let b =
            configsync_call(
                &l.lab.ns(l.a),
                |mut c| async move { Ok(c.backup(cs::BackupRequest {}).await?.into_inner()) },
            )?;
        let mut backup: duet_proto::config::v1::Backup = prost::Message::decode(b.backup.as_slice())?;
        backup.mode = duet_proto::common::v1::HaMode::NonHa as i32;
        let bytes = prost::Message::encode_to_vec(&backup);
        let g = current(l, l.a)?.generation;
        let e = configsync_call(&l.lab.ns(l.a), move |mut c| async move {
            Ok(c.restore(cs::RestoreRequest { backup: bytes, base_generation: g }).await)
        })?
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("non-HA unit") && e.message().contains("cannot be restored onto an HA unit"),
            "{e}"
        );
        // Its own backup restores fine.
        let good = b.backup;
        let r = configsync_call(&l.lab.ns(l.a), move |mut c| async move {
            Ok(c.restore(cs::RestoreRequest { backup: good, base_generation: g }).await?.into_inner())
        })?;
        assert_eq!(r.generation, g + 1);
        Ok(())
    });
}

#[test]
fn ha_settings_in_the_image_drive_the_election_live() {
    lab_test("cs_ha_live", false, |l| {
        let p = start(l, 120)?;
        let img = current(l, l.a)?;
        let mut ha = img.ha.unwrap_or_default();
        ha.timeout_s = 6;
        apply(l, l.a, img.generation, Change::Ha(ha)).map_err(|s| anyhow::anyhow!("{s}"))?;
        for h in [l.a, l.b] {
            wait_for("the new HA timeout in force", Duration::from_secs(6), Duration::from_millis(100), || {
                l.status(h).ok().and_then(|s| s.parameters).filter(|p| p.ha_timeout_ms == 6000)
            })?;
        }
        let _ = p;
        Ok(())
    });
}

#[test]
fn a_restarted_election_starts_from_the_stored_image_not_its_unit_file() {
    lab_test("cs_ha_restart", false, |l| {
        let mut p = start(l, 120)?;
        let img = current(l, l.a)?;
        let mut ha = img.ha.unwrap_or_default();
        ha.timeout_s = 6;
        let r = apply(l, l.a, img.generation, Change::Ha(ha)).map_err(|s| anyhow::anyhow!("{s}"))?;
        let params = |l: &PairLab, h| l.status(h).ok().and_then(|s| s.parameters);
        wait_for("the new HA timeout on lb2", Duration::from_secs(6), Duration::from_millis(100), || {
            params(l, l.b).filter(|p| p.ha_timeout_ms == 6000 && p.config_generation == r.generation)
        })?;
        // Without configsync on lb2, a new election there can only learn
        // the pair's settings from the store; its unit file says 3 s.
        p.s2.kill()?;
        p._e2.kill()?;
        p._e2 = l.election_labeled(l.b, &p.c2.clone(), "election-lb2-again")?;
        let first =
            wait_for("lb2's election back", Duration::from_secs(5), Duration::from_millis(50), || params(l, l.b))?;
        assert_eq!((first.ha_timeout_ms, first.config_generation), (6000, r.generation), "{first:?}");
        p._e2.wait_log("HA settings from the pair's image", Duration::from_secs(1))?;
        Ok(())
    });
}

/// duetctl in an operator's hands: a virtual service from stdin
/// (`--file -`), the same one again commits nothing, a backup is JSON that
/// `config check` and `config restore` read, `status --json` is one
/// document, and a dead partner is "unreachable", never "in sync".
#[test]
fn duetctl_reads_stdin_commits_no_op_writes_nothing_and_backs_up_as_json() {
    lab_test("cs_duetctl", false, |l| {
        let mut p = start(l, 120)?;
        let ctl = bin("duetctl").to_string_lossy().into_owned();
        let dir = l.lab.dir().to_path_buf();
        let vs_file = dir.join("web.json");
        std::fs::write(&vs_file, duet_proto::json::to_json(&vs("web", 80), "duet.config.v1.VirtualService")?)?;
        let set_vs = format!("{ctl} config set-vs --file - --comment web < {}", vs_file.display());
        let first = l.lab.run(l.a, &["sh", "-c", &set_vs])?;
        assert!(first.starts_with("committed generation 2"), "{first}");
        let again = l.lab.run(l.a, &["sh", "-c", &set_vs])?;
        assert!(again.starts_with("unchanged: generation 2"), "{again}");
        assert_eq!(current(l, l.a)?.generation, 2, "a no-op write made a generation");

        let backup = dir.join("backup.json");
        let b = backup.to_string_lossy().into_owned();
        l.lab.run(l.a, &[&ctl, "config", "backup", "--out", &b])?;
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&backup)?)?;
        assert_eq!(doc["image"]["generation"], "2", "{doc}");
        let checked = l.lab.run(l.a, &[&ctl, "config", "check", "--file", &b])?;
        assert!(checked.starts_with("valid"), "{checked}");
        let restored = l.lab.run(l.a, &[&ctl, "config", "restore", "--file", &b])?;
        assert!(restored.starts_with("restored as generation 3"), "{restored}");

        let status = l.lab.run(l.a, &[&ctl, "status", "--json"])?;
        let doc: serde_json::Value = serde_json::from_str(&status).map_err(|e| anyhow::anyhow!("{e}: {status}"))?;
        assert_eq!(doc["election"]["role"], "ROLE_ACTIVE", "{doc}");
        assert_eq!(doc["configsync"]["inSync"], true, "{doc}");
        assert!(doc["replicator"].is_null(), "{doc}");

        p.s2.kill()?;
        let line =
            wait_for("the partner seen unreachable", Duration::from_secs(25), Duration::from_millis(500), || {
                let out = l.lab.run(l.a, &[&ctl, "status"]).ok()?;
                out.lines().find(|l| l.starts_with("configuration:") && l.contains("unreachable")).map(str::to_owned)
            })?;
        assert!(line.contains("partner unreachable, last known gen 3"), "{line}");
        Ok(())
    });
}
