//! The unit supervisor (`duet unit`): services as processes, restarts with
//! backoff, planned handover and ordered stop on SIGTERM, pacified after
//! repeated crashes, and the hard-reboot action (E8).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use duet_proto::common::v1::Role;
use duet_tests::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(20);

fn sigkill(pids: &[u32]) {
    for &p in pids {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
    }
}

#[test]
fn a_crashed_service_is_restarted() {
    lab_test("unit_restart", false, |l| {
        let cfg = UnitConfig::new("lb1", "first", l.lab.dir());
        let unit = l.unit(l.a, &cfg)?;
        l.wait_role(l.a, Role::Active, T)?;
        let before = pids_of(&l.lab, l.a, "duet-takeover");
        assert_eq!(before.len(), 1, "one takeover process");
        sigkill(&before);
        let after = duet_testkit::wait_for(
            "a new takeover process",
            Duration::from_secs(5),
            Duration::from_millis(50),
            || {
                let now = pids_of(&l.lab, l.a, "duet-takeover");
                (now.len() == 1 && now != before).then_some(now)
            },
        )?;
        assert_ne!(after, before);
        unit.wait_log("restart scheduled", Duration::from_secs(1))?;
        // The shared address is back on the unit (its election stays active
        // or takes the role again once its takeover follows).
        duet_testkit::wait_for("the shared address back", Duration::from_secs(10), Duration::from_millis(50), || {
            l.lab.addr_present(l.a, "eth0", SHARED).ok().filter(|p| *p)
        })?;
        Ok(())
    });
}

#[test]
fn sigterm_hands_over_then_stops_every_service() {
    lab_test("unit_sigterm", false, |l| {
        let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
        let mut c2 = UnitConfig::new("lb2", "second", l.lab.dir());
        for c in [&mut c1, &mut c2] {
            c.ha = "password = \"secret\"\ntimeout_s = 15\n".into();
        }
        let mut u1 = l.unit(l.a, &c1)?;
        let _u2 = l.unit(l.b, &c2)?;
        l.wait_role(l.a, Role::Active, Duration::from_secs(40))?;
        l.wait_role(l.b, Role::Standby, T)?;
        duet_testkit::wait_for("shared address on lb1", Duration::from_secs(5), Duration::from_millis(50), || {
            l.lab.addr_present(l.a, "eth0", SHARED).ok().filter(|p| *p)
        })?;
        let start = Instant::now();
        let status = u1.terminate(Duration::from_secs(10))?;
        assert!(status.is_some_and(|s| s.success()), "clean exit: {status:?}");
        assert!(start.elapsed() < Duration::from_secs(5), "no waiting for the 15 s timeout: {:?}", start.elapsed());
        assert_eq!(l.role(l.b), Some(Role::Active));
        assert!(l.lab.addr_present(l.b, "eth0", SHARED)?);
        assert!(!l.lab.addr_present(l.a, "eth0", SHARED)?, "the stopped unit released the address");
        assert!(pids_of(&l.lab, l.a, "duet-election").is_empty() && pids_of(&l.lab, l.a, "duet-takeover").is_empty());
        u1.wait_log("handed over to 198.18.0.2", Duration::from_secs(1))?;
        Ok(())
    });
}

/// A standby that stops tells the active (its last status says it is
/// leaving), so the active's stop does not wait for a handover to a unit
/// that is gone: each stops within a second (the handover timeout here is
/// 3 s, and the supervisor and the election each used to wait for it).
#[test]
fn a_unit_whose_partner_stopped_first_stops_at_once() {
    lab_test("unit_stop_order", false, |l| {
        let c1 = UnitConfig::new("lb1", "first", l.lab.dir());
        let c2 = UnitConfig::new("lb2", "second", l.lab.dir());
        let mut u1 = l.unit(l.a, &c1)?;
        let mut u2 = l.unit(l.b, &c2)?;
        l.wait_role(l.a, Role::Active, Duration::from_secs(40))?;
        l.wait_role(l.b, Role::Standby, T)?;
        std::thread::sleep(Duration::from_secs(2));
        for (u, who) in [(&mut u2, "the standby"), (&mut u1, "the active")] {
            let start = Instant::now();
            let status = u.terminate(Duration::from_secs(15))?;
            assert!(status.is_some_and(|s| s.success()), "{who}: clean exit: {status:?}");
            assert!(start.elapsed() < Duration::from_secs(1), "{who} took {:?} to stop:\n{}", start.elapsed(), u.log());
        }
        u1.wait_log("partner 198.18.0.2 is stopping", Duration::from_secs(1))?;
        assert!(!l.lab.addr_present(l.a, "eth0", SHARED)?, "the stopped unit released the address");
        Ok(())
    });
}

#[test]
fn repeated_crashes_pacify_the_unit() {
    lab_test("unit_pacify", false, |l| {
        let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
        c1.ha.push_str("pacify_window_s = 60\n");
        c1.extra.push_str("[supervisor]\nrestart_backoff_ms = 50\nrestart_backoff_max_ms = 200\n");
        let _u = l.unit(l.a, &c1)?;
        l.wait_role(l.a, Role::Active, T)?;
        let ctl = bin("duetctl").to_string_lossy().into_owned();
        let healthy = l.lab.run(l.a, &[&ctl, "health"])?;
        assert!(healthy.contains("election: serving") && healthy.contains("configsync: not running"), "{healthy}");
        // The election's own start counts once; three takeover crashes make four.
        for _ in 0..3 {
            let before = pids_of(&l.lab, l.a, "duet-takeover");
            sigkill(&before);
            duet_testkit::wait_for("takeover restarted", Duration::from_secs(5), Duration::from_millis(20), || {
                let now = pids_of(&l.lab, l.a, "duet-takeover");
                (now.len() == 1 && now != before).then_some(())
            })?;
        }
        l.wait_role(l.a, Role::Pacified, Duration::from_secs(6))?;
        // A pacified unit is not healthy (the container's health check).
        let out = l.lab.run_status(l.a, &[&ctl, "health"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && text.contains("election: not_serving"), "{text}");
        duet_testkit::wait_for("shared address released", Duration::from_secs(5), Duration::from_millis(50), || {
            l.lab.addr_present(l.a, "eth0", SHARED).ok().filter(|p| !*p)
        })?;
        Ok(())
    });
}

#[test]
fn hard_reboot_on_link_failure_restarts_the_services() {
    lab_test("unit_hardreboot", false, |l| {
        let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
        c1.ha.push_str("hard_reboot_on_link_failure = true\n");
        let u = l.unit(l.a, &c1)?;
        l.wait_role(l.a, Role::Active, T)?;
        let election = pids_of(&l.lab, l.a, "duet-election");
        let takeover = pids_of(&l.lab, l.a, "duet-takeover");
        l.lab.link_down(l.a, "eth0")?;
        u.wait_log("restarting all services of the unit", Duration::from_secs(5))?;
        duet_testkit::wait_for(
            "new election and takeover",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                let e = pids_of(&l.lab, l.a, "duet-election");
                let t = pids_of(&l.lab, l.a, "duet-takeover");
                (e.len() == 1 && t.len() == 1 && e != election && t != takeover).then_some(())
            },
        )?;
        l.lab.link_up(l.a, "eth0")?;
        l.wait_role(l.a, Role::Active, T)?;
        Ok(())
    });
}

/// `duetctl certs` makes a CA and unit certificates without any unit file,
/// even when DUET_CONFIG names one that does not exist (as in the image).
#[test]
fn duetctl_certs_needs_no_unit_file() {
    let dir = std::env::temp_dir().join(format!("duet-certs-test-{}", std::process::id()));
    let out = dir.join("certs");
    let status = std::process::Command::new(bin("duetctl"))
        .env("DUET_CONFIG", dir.join("no-such-unit.toml"))
        .args(["certs", "--out"])
        .arg(&out)
        .args(["--pair", "t", "--units", "lb1,lb2"])
        .output()
        .expect("running duetctl");
    assert!(status.status.success(), "duetctl certs failed: {}", String::from_utf8_lossy(&status.stderr));
    for f in ["ca.pem", "lb1.pem", "lb1.key", "lb2.pem", "lb2.key"] {
        assert!(out.join(f).is_file(), "{f} missing in {}", out.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without CAP_NET_ADMIN and CAP_NET_RAW the unit says so in one line,
/// with the ways to grant them, and exits with the configuration status:
/// no service starts, nothing restarts.
#[test]
fn a_unit_without_its_capabilities_says_so_once_and_exits() {
    lab_test("unit_caps", false, |l| {
        let cfg = UnitConfig::new("lb1", "first", l.lab.dir());
        let path = cfg.write(l.lab.dir())?.to_string_lossy().into_owned();
        let exe = bin("duet").to_string_lossy().into_owned();
        let start = Instant::now();
        let out = l.lab.run_status(
            l.a,
            &[
                "setpriv",
                "--bounding-set",
                "-net_admin,-net_raw",
                "--inh-caps",
                "-all",
                &exe,
                "unit",
                "--config",
                &path,
            ],
        )?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
        assert!(err.contains("needs CAP_NET_ADMIN and CAP_NET_RAW"), "{err}");
        assert!(err.contains("cap_add: [NET_ADMIN, NET_RAW]") && err.contains("AmbientCapabilities="), "{err}");
        assert!(pids_of(&l.lab, l.a, "duet-election").is_empty(), "a service was started");
        // A service started alone says the same of itself.
        let out = l.lab.run_status(
            l.a,
            &[
                "setpriv",
                "--bounding-set",
                "-net_raw",
                "--inh-caps",
                "-all",
                "bash",
                "-c",
                &format!("exec -a duet-election {exe} --config {path}"),
            ],
        )?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.starts_with("duet-election needs CAP_NET_RAW"), "{err}");
        Ok(())
    });
}

/// `duet check` reports every problem of the unit in one run: an API
/// beyond loopback in clear, a peer certificate from another CA, and a
/// replicator section that clashes with configsync's, each with its
/// setting.
#[test]
fn duet_check_reports_every_problem_of_the_unit_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pair = dir.path().join("pair");
    let other = dir.path().join("other");
    duet_testkit::write_certs(&pair, &["lb1", "lb2"]).expect("certs");
    duet_testkit::write_certs(&other, &["lb1"]).expect("certs");
    let mut cfg = UnitConfig::new("lb1", "first", dir.path());
    cfg.extra.push_str(&format!(
        "[election]\nlisten = \"0.0.0.0:7870\"\n\n[configsync]\npartner_name = \"lb2\"\ntls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n[replicator]\nenabled = true\npeer_port = 6973\n",
        pair.join("ca.pem").display(),
        other.join("lb1.pem").display(),
        other.join("lb1.key").display(),
    ));
    let path = cfg.write(dir.path()).expect("unit file");
    let run = |args: &[&str]| std::process::Command::new(bin("duet")).args(args).arg(&path).output().expect("duet");
    let out = run(&["check", "--config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // One run: the file's problem, and its certificate's.
    assert!(err.contains("election.listen"), "{err}");
    assert!(err.contains("configsync.tls_cert: not valid"), "{err}");
    // Without the file's problem, the sections' too.
    let text = std::fs::read_to_string(&path).unwrap().replace("0.0.0.0:7870", "127.0.0.1:7870");
    std::fs::write(&path, text).unwrap();
    let out = run(&["check", "--config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("configsync.tls_cert: not valid"), "{err}");
    assert!(err.contains("replicator.peer_port"), "{err}");
}

/// O6: notify hooks run in order with the role, the role before, the
/// reason and the unit in their environment, once the role is applied; a
/// hook that outlives its timeout is killed and said to be.
#[test]
fn notify_hooks_run_in_order_with_the_environment_and_time_out() {
    lab_test("unit_hooks", false, |l| {
        let dir = l.lab.dir().to_path_buf();
        let log = |u: &str| dir.join(format!("hooks-{u}.log"));
        let hook = |u: &str| {
            format!(
                "[\"sh\", \"-c\", \"echo \\\"$DUET_ROLE $DUET_UNIT $DUET_PREVIOUS: $DUET_REASON\\\" >> {}\"]",
                log(u).display()
            )
        };
        let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
        let mut c2 = UnitConfig::new("lb2", "second", l.lab.dir());
        c1.extra.push_str(&format!("[hooks]\non_active = {h}\non_standby = {h}\non_stopping = {h}\n", h = hook("lb1")));
        // lb2's standby hook hangs: killed after 300 ms, the next one runs.
        c2.extra.push_str(&format!(
            "[hooks]\non_standby = [\"sleep\", \"30\"]\non_active = {h}\ntimeout_ms = 300\n",
            h = hook("lb2")
        ));
        let mut u1 = l.unit(l.a, &c1)?;
        let u2 = l.unit(l.b, &c2)?;
        l.wait_role(l.a, Role::Active, Duration::from_secs(40))?;
        l.wait_role(l.b, Role::Standby, T)?;
        duet_testkit::wait_for("lb1's active hook", Duration::from_secs(5), Duration::from_millis(50), || {
            std::fs::read_to_string(log("lb1")).ok().filter(|s| s.contains("active lb1"))
        })?;
        u2.wait_log("notify hook sleep still running after 300 ms: killed", Duration::from_secs(5))?;
        u1.terminate(Duration::from_secs(10))?;
        let lines = std::fs::read_to_string(log("lb1"))?;
        let roles: Vec<&str> = lines.lines().filter_map(|l| l.split(' ').next()).collect();
        // Active; the planned handover at stop (giving the role up, then
        // standby once the partner has it); the service stopping.
        assert_eq!(roles, ["active", "stopping", "standby", "stopping"], "{lines}");
        assert!(lines.starts_with("active lb1 starting: "), "{lines}");
        assert!(
            lines.lines().nth(1).is_some_and(|l| l.starts_with("stopping lb1 active: planned handover")),
            "{lines}"
        );
        assert!(
            lines.lines().nth(3).is_some_and(|l| l.starts_with("stopping lb1 standby: takeover service stopping")),
            "{lines}"
        );
        duet_testkit::wait_for("lb2's active hook", Duration::from_secs(5), Duration::from_millis(50), || {
            std::fs::read_to_string(log("lb2")).ok().filter(|s| s.starts_with("active lb2 standby: "))
        })?;
        Ok(())
    });
}

/// `--version` names the commit the binaries were built from.
#[test]
fn version_names_the_commit() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    for exe in ["duet", "duetctl"] {
        let out = std::process::Command::new(bin(exe)).arg("--version").output().expect("runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(" (commit "), "{exe}: {text}");
        if let Some(h) = &head {
            // Built from this checkout (or from an earlier commit of it).
            let built = text.split("(commit ").nth(1).and_then(|t| t.split(')').next()).unwrap_or_default();
            assert!(built.len() == 12 && built.chars().all(|c| c.is_ascii_hexdigit()), "{exe}: {text} (HEAD {h})");
        }
    }
}

/// D1/D3: the .deb (deploy/deb/build-deb.sh, with the binaries of this
/// build) installs with its man pages, completions, systemd unit and
/// user, and runs a unit as that user with the two capabilities only (as
/// duet@.service does); duetctl reaches it. Removed again at the end.
#[test]
fn the_deb_installs_and_runs_a_unit_as_its_own_user() {
    lab_test("unit_deb", false, |l| {
        struct Removed;
        impl Drop for Removed {
            fn drop(&mut self) {
                // The package's postrm removes the user, the group and /var/lib/duet.
                let _ = std::process::Command::new("dpkg").args(["--purge", "duet"]).output();
            }
        }
        let top = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let bins = bin("duet").parent().expect("a directory").to_path_buf();
        let pkgs = tempfile::tempdir()?;
        let out = std::process::Command::new(top.join("deploy/deb/build-deb.sh"))
            .env("SKIP_CARGO", "1")
            .env("BIN_DIR", &bins)
            .env("OUT", pkgs.path())
            .env("COMPRESS", "none")
            .output()?;
        anyhow::ensure!(out.status.success(), "build-deb: {}", String::from_utf8_lossy(&out.stderr));
        let deb = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let _removed = Removed;
        let out = std::process::Command::new("dpkg").args(["-i", &deb]).output()?;
        anyhow::ensure!(out.status.success(), "dpkg -i: {}", String::from_utf8_lossy(&out.stderr));
        for f in [
            "/usr/bin/duet",
            "/usr/bin/duetctl",
            "/lib/systemd/system/duet@.service",
            "/usr/share/man/man1/duet.1.gz",
            "/usr/share/man/man1/duetctl-status.1.gz",
            "/usr/share/bash-completion/completions/duetctl",
        ] {
            anyhow::ensure!(std::path::Path::new(f).exists(), "{f} not installed");
        }
        // The unit's files where the duet user can read (and its state
        // where it can write).
        let dir = tempfile::tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let cfg = UnitConfig::new("lb1", "first", dir.path());
        std::fs::create_dir_all(&cfg.state_dir)?;
        let chown = std::process::Command::new("chown").args(["-R", "duet:duet"]).arg(&cfg.state_dir).output()?;
        anyhow::ensure!(chown.status.success(), "chown: {}", String::from_utf8_lossy(&chown.stderr));
        let path = cfg.write(dir.path())?.to_string_lossy().into_owned();
        let mut unit = l.lab.spawn(
            l.a,
            "unit-deb",
            &[
                "setpriv",
                "--reuid",
                "duet",
                "--regid",
                "duet",
                "--clear-groups",
                "--inh-caps",
                "+net_admin,+net_raw",
                "--ambient-caps",
                "+net_admin,+net_raw",
                "/usr/bin/duet",
                "unit",
                "--config",
                &path,
            ],
            &[],
        )?;
        duet_testkit::wait_for(
            "the shared address, held by the duet user",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || l.lab.addr_present(l.a, "eth0", SHARED).ok().filter(|p| *p),
        )?;
        let status = l.lab.run(l.a, &["/usr/bin/duetctl", "--config", &path, "status"])?;
        assert!(status.contains("role active"), "{status}");
        // This namespace's election (ps would list other tests' too).
        let duet_uid = l.lab.run(l.a, &["id", "-u", "duet"])?.trim().to_owned();
        let pids = pids_of(&l.lab, l.a, "duet-election");
        assert_eq!(pids.len(), 1, "one election: {pids:?}");
        let status = std::fs::read_to_string(format!("/proc/{}/status", pids[0]))?;
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|u| u.split_whitespace().next());
        assert_eq!(uid, Some(duet_uid.as_str()), "the election runs as duet ({duet_uid}):\n{status}");
        let stopped = unit.terminate(Duration::from_secs(10))?;
        assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}\n{}", unit.log());
        drop(_removed);
        let purged = std::process::Command::new("getent").args(["passwd", "duet"]).output()?;
        assert!(!purged.status.success(), "purge left the duet user");
        assert!(!std::path::Path::new("/var/lib/duet").exists(), "purge left /var/lib/duet");
        Ok(())
    });
}

/// `telemetry.log_format = "json"`: every line a service logs is one JSON
/// object (for log shippers), the role change among them.
#[test]
fn json_logs_are_one_object_per_line() {
    lab_test("unit_json_logs", false, |l| {
        let cfg = UnitConfig::new("lb1", "first", l.lab.dir());
        let text = cfg.toml().replace("[telemetry]\n", "[telemetry]\nlog_format = \"json\"\n");
        let path = l.lab.dir().join("lb1-json.toml");
        std::fs::write(&path, text)?;
        let p = path.to_string_lossy().into_owned();
        let exe = bin("duet-election").to_string_lossy().into_owned();
        let e = l.lab.spawn(l.a, "election-json", &[&exe, "--config", &p], &[])?;
        e.wait_log("Switching to state: Active", Duration::from_secs(20))?;
        let log = e.log();
        let mut lines = 0;
        for line in log.lines().filter(|l| l.starts_with('{')) {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|err| anyhow::anyhow!("{err}: {line}"))?;
            assert!(
                v["timestamp"].is_string() && v["level"].is_string() && v["fields"]["message"].is_string(),
                "{line}"
            );
            lines += 1;
        }
        assert!(lines >= 3, "{log}");
        assert!(log.lines().filter(|l| !l.trim().is_empty()).all(|l| l.starts_with('{')), "a line not JSON:\n{log}");
        Ok(())
    });
}

/// The image's way to run as non-root: the duet binary carries
/// CAP_NET_ADMIN and CAP_NET_RAW as file capabilities without the
/// effective bit, and duet makes them effective itself (and passes them
/// to its services and nft). Without them, duet's own line says so.
#[test]
fn a_non_root_duet_with_file_capabilities_raises_them_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let exe = dir.path().join("duet");
    std::fs::copy(bin("duet"), &exe).expect("copy");
    let cfg = UnitConfig::new("lb1", "first", dir.path()).write(dir.path()).expect("unit file");
    let as_nobody = || {
        std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(&exe)
            .args(["check", "--config"])
            .arg(&cfg)
            .output()
            .expect("setpriv")
    };
    let setcap = std::process::Command::new("setcap").arg("cap_net_admin,cap_net_raw+p").arg(&exe).status();
    assert!(setcap.is_ok_and(|s| s.success()), "setcap (libcap2-bin) failed");
    let out = as_nobody();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains(": OK"), "{stdout}{stderr}");
    let _ = std::process::Command::new("setcap").arg("-r").arg(&exe).status();
    let out = as_nobody();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs CAP_NET_ADMIN and CAP_NET_RAW"), "{stderr}");
}

/// The active's election SIGKILLed (SHA-256 mode): the supervisor restarts
/// it, the new run finds that the last one died active, and once its
/// takeover has released the addresses it resigns; the standby takes the
/// role well before the HA timeout (3 s) would have let it.
#[test]
fn an_election_killed_while_active_hands_the_role_over_when_it_restarts() {
    lab_test("unit_resign", false, |l| {
        const SHA256: &str =
            "timeout_s = 3\n[ha.auth]\nmode = \"sha256\"\nkeys = [{ id = 1, secret = \"first key, long enough\" }]\n";
        let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
        let mut c2 = UnitConfig::new("lb2", "second", l.lab.dir());
        c1.ha = SHA256.into();
        c2.ha = SHA256.into();
        let u1 = l.unit(l.a, &c1)?;
        l.wait_role(l.a, Role::Active, T)?;
        let _u2 = l.unit(l.b, &c2)?;
        l.wait_role(l.b, Role::Standby, T)?;
        std::thread::sleep(Duration::from_secs(1));
        let killed = Instant::now();
        sigkill(&pids_of(&l.lab, l.a, "duet-election"));
        let took = l.wait_role(l.b, Role::Active, Duration::from_secs(10))?;
        let after = killed.elapsed();
        eprintln!("the standby active {after:?} after the kill (waited {took:?})");
        u1.wait_log("resigning", Duration::from_secs(2))?;
        // Without the resign: 2-3 s (the HA timeout from the last advert).
        assert!(after < Duration::from_millis(1800), "taken over after {after:?}, not well before the HA timeout");
        l.wait_role(l.a, Role::Standby, T)?;
        Ok(())
    });
}
