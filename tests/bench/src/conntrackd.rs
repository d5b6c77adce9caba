//! keepalived + conntrackd (FTFW) as a load-balancer pair on the
//! [`LbLab`]: what the replication benchmark ([`crate::replication`])
//! compares duet with.
//!
//! Per unit: conntrackd in Sync Mode FTFW over UDP on eth0 between the two
//! unit addresses (its own UNIX socket, lock file and log under the lab
//! directory; IPv4 TCP only, the units' own addresses ignored, kernel-space
//! event filtering), and keepalived (VRRP only) with two instances, eth0
//! (198.18.0.10/24) and eth1 (198.19.0.254/24), in one sync group, `advert_int
//! 1`, `state BACKUP` and `nopreempt` on both (priority 100 on unit 1, 90 on
//! unit 2) as in the failover benchmark. The sync group's notify script
//! drives conntrackd the way its manual describes for a primary-backup pair
//! (see [`NOTIFY_SCRIPT`]) and logs every step with a timestamp, so the
//! benchmark can see when the state was committed relative to the address.
//!
//! The data plane (duet's nftables table and kernel settings) is programmed
//! by the caller; this module only runs the daemons.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use duet_testkit::Proc;

use crate::system::{Unit, spawn_keepalived};
use duet_tests::lblab::{BACK_SHARED, BACK_UNIT1, BACK_UNIT2, LbLab};
use duet_tests::{SHARED, UNIT1, UNIT2};

/// UDP port of the FTFW link.
pub const SYNC_PORT: u16 = 3780;

/// The keepalived sync group's notify script. Arguments: the state the
/// group entered (`master`, `backup`, `fault`), conntrackd's configuration
/// file, the log file. Each step is logged as `<epoch seconds> <state>
/// <what>`.
///
/// The steps are those conntrackd(8) and the conntrack-tools user manual
/// give for a primary-backup pair: a unit that becomes primary commits the
/// partner's states from its external cache into the kernel (`-c`),
/// empties both caches (`-f`), refills its internal cache from the kernel
/// table (`-R`) and sends all of it to the partner (`-B`); a unit that
/// becomes backup asks the partner for a full resync (`-n`) and shortens
/// the timers of the kernel's own entries so that stale ones go
/// (`-t`, PurgeTimeout); on a fault it only does the latter.
pub const NOTIFY_SCRIPT: &str = r#"#!/bin/sh
# keepalived notify script of duet's replication benchmark.
# $1: master | backup | fault, $2: conntrackd config, $3: log file.
state="$1"
conf="$2"
log="$3"
note() { echo "$(date +%s.%N) $state $*" >> "$log"; }
ctd() { conntrackd -C "$conf" "$@"; note "conntrackd $* exit $?"; }
if ip -4 -o addr show dev eth0 | grep -q " @VIP@/"; then vip=yes; else vip=no; fi
note "begin vip=$vip"
case "$state" in
master)
    ctd -c
    ctd -f
    ctd -R
    ctd -B
    ;;
backup)
    ctd -n
    ctd -t
    ;;
fault)
    ctd -t
    ;;
esac
note end
"#;

/// conntrackd's figures from `conntrackd -s` and `-s runtime`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CtdStats {
    /// Entries of this unit's own flows (internal cache) and of the
    /// partner's (external cache).
    pub internal: u64,
    pub external: u64,
    /// Times the kernel's event socket overflowed.
    pub netlink_overruns: u64,
}

/// One line of the notify script's log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NotifyLine {
    /// Seconds since the epoch.
    pub at: f64,
    pub state: String,
    pub what: String,
}

/// A running keepalived + conntrackd pair.
#[derive(Debug)]
pub struct CtdPair {
    dir: PathBuf,
    /// Per unit: conntrackd, then keepalived.
    procs: [Vec<Proc>; 2],
}

fn index(unit: Unit) -> usize {
    usize::from(unit.id() - 1)
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl CtdPair {
    /// conntrackd's configuration file of `unit` in `dir`.
    pub fn conf_path(dir: &Path, unit: Unit) -> PathBuf {
        dir.join(format!("conntrackd-{}.conf", unit.id()))
    }

    /// The notify script's log of `unit` in `dir`.
    pub fn notify_log_path(dir: &Path, unit: Unit) -> PathBuf {
        dir.join(format!("notify-{}.log", unit.id()))
    }

    /// conntrackd's configuration of `unit`.
    ///
    /// Buffers as large as duet's (a 32 MiB event socket); the cache's hash
    /// table sized for 100k entries with room (HashLimit twice the kernel's
    /// `nf_conntrack_max`, as its manual says); everything else at its
    /// defaults (ACK window, resend queue, RR scheduler).
    pub fn conntrackd_config(dir: &Path, unit: Unit) -> String {
        let (own, peer) = match unit {
            Unit::One => (UNIT1, UNIT2),
            Unit::Two => (UNIT2, UNIT1),
        };
        let id = unit.id();
        let d = dir.display();
        format!(
            "Sync {{\n\
             \tMode FTFW {{\n\
             \t\tDisableExternalCache no\n\
             \t}}\n\
             \tUDP {{\n\
             \t\tIPv4_address {own}\n\
             \t\tIPv4_Destination_Address {peer}\n\
             \t\tPort {SYNC_PORT}\n\
             \t\tInterface eth0\n\
             \t\tSndSocketBuffer 8388608\n\
             \t\tRcvSocketBuffer 8388608\n\
             \t\tChecksum on\n\
             \t}}\n\
             }}\n\
             General {{\n\
             \tSystemd no\n\
             \tHashSize 131072\n\
             \tHashLimit 524288\n\
             \tLogFile {d}/conntrackd-{id}.log\n\
             \tSyslog no\n\
             \tLockFile {d}/conntrackd-{id}.lock\n\
             \tUNIX {{\n\
             \t\tPath {d}/conntrackd-{id}.ctl\n\
             \t}}\n\
             \tNetlinkBufferSize 33554432\n\
             \tNetlinkBufferSizeMaxGrowth 67108864\n\
             \tFilter From Kernelspace {{\n\
             \t\tProtocol Accept {{\n\
             \t\t\tTCP\n\
             \t\t}}\n\
             \t\tAddress Ignore {{\n\
             \t\t\tIPv4_address 127.0.0.1\n\
             \t\t\tIPv4_address {UNIT1}\n\
             \t\t\tIPv4_address {UNIT2}\n\
             \t\t\tIPv4_address {BACK_UNIT1}\n\
             \t\t\tIPv4_address {BACK_UNIT2}\n\
             \t\t}}\n\
             \t}}\n\
             }}\n"
        )
    }

    /// keepalived's configuration of `unit`: both VRRP instances in one
    /// sync group whose transitions run the notify script.
    pub fn keepalived_config(dir: &Path, unit: Unit) -> String {
        let priority = if unit == Unit::One { 100 } else { 90 };
        let script = path_str(&dir.join("ctd-notify.sh"));
        let conf = path_str(&Self::conf_path(dir, unit));
        let log = path_str(&Self::notify_log_path(dir, unit));
        let notify = |state: &str| format!("  notify_{state} \"{script} {state} {conf} {log}\"\n");
        let instance = |name: &str, iface: &str, vrid: u8, vip: &str| {
            format!(
                "vrrp_instance {name} {{\n  state BACKUP\n  interface {iface}\n  virtual_router_id {vrid}\n  priority {priority}\n  nopreempt\n  advert_int 1\n  virtual_ipaddress {{\n    {vip}/24 dev {iface}\n  }}\n}}\n\n"
            )
        };
        format!(
            "global_defs {{\n  router_id lb{id}\n  script_user root\n}}\n\nvrrp_sync_group LB {{\n  group {{\n    FRONT\n    BACK\n  }}\n{}{}{}}}\n\n{}{}",
            notify("master"),
            notify("backup"),
            notify("fault"),
            instance("FRONT", "eth0", 51, SHARED),
            instance("BACK", "eth1", 52, BACK_SHARED),
            id = unit.id(),
        )
    }

    /// Writes the files and starts conntrackd, then keepalived, on both
    /// units. `run` labels the logs.
    pub fn start(l: &mut LbLab, run: &str) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = l.l.lab.dir().to_owned();
        let script = dir.join("ctd-notify.sh");
        std::fs::write(&script, NOTIFY_SCRIPT.replace("@VIP@", SHARED))?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        let mut pair = Self { dir: dir.clone(), procs: Default::default() };
        for u in Unit::BOTH {
            let conf = Self::conf_path(&dir, u);
            std::fs::write(&conf, Self::conntrackd_config(&dir, u))?;
            // A lock file left by a killed daemon stops the next one.
            let _ = std::fs::remove_file(dir.join(format!("conntrackd-{}.lock", u.id())));
            let _ = std::fs::remove_file(Self::notify_log_path(&dir, u));
            let p = l.l.lab.spawn(
                u.host(&l.l),
                &format!("conntrackd-{}-{run}", u.id()),
                &["conntrackd", "-C", &path_str(&conf)],
                &[],
            )?;
            pair.procs[index(u)].push(p);
        }
        // keepalived's first notify (backup) talks to conntrackd: it must
        // answer on its socket first.
        for u in Unit::BOTH {
            let deadline = Instant::now() + Duration::from_secs(10);
            while pair.stats(u).is_err() {
                if Instant::now() >= deadline {
                    bail!("conntrackd on {u} does not answer on its socket: {}", pair.log_tail(u));
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        for u in Unit::BOTH {
            let name = format!("keepalived-ctd-{}", u.id());
            let config = Self::keepalived_config(&dir, u);
            let host = u.host(&l.l);
            let p = spawn_keepalived(&mut l.l.lab, host, &name, &format!("{name}-{run}"), &config)?;
            pair.procs[index(u)].push(p);
        }
        Ok(pair)
    }

    /// Waits until unit 1 holds both shared addresses and has finished its
    /// master notify, and unit 2 holds none and has finished its backup
    /// notify.
    pub fn wait_settled(&self, l: &LbLab, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let (a, b) = (l.l.a, l.l.b);
        loop {
            let holds = |h, iface, addr| l.l.lab.addr_present(h, iface, addr).unwrap_or(false);
            let done = |u: Unit, state: &str| {
                let lines = self.notify_lines(u);
                // The last transition is `state` and it has ended.
                lines.last().is_some_and(|x| x.state == state && x.what == "end")
            };
            if holds(a, "eth0", SHARED)
                && holds(a, "eth1", BACK_SHARED)
                && !holds(b, "eth0", SHARED)
                && !holds(b, "eth1", BACK_SHARED)
                && done(Unit::One, "master")
                && done(Unit::Two, "backup")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "keepalived + conntrackd did not settle within {timeout:?} (unit 1 master with both addresses, \
                     unit 2 backup); notify logs: unit 1 {:?}, unit 2 {:?}",
                    self.notify_lines(Unit::One),
                    self.notify_lines(Unit::Two)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `conntrackd -C <conf> <args>` (a client of the daemon's UNIX socket,
    /// so it needs no namespace), bounded by 30 s.
    pub fn client(&self, unit: Unit, args: &[&str]) -> Result<String> {
        let conf = path_str(&Self::conf_path(&self.dir, unit));
        let mut argv = vec!["conntrackd", "-C", &conf];
        argv.extend_from_slice(args);
        let out = run_bounded(&argv, Duration::from_secs(30))?;
        Ok(out)
    }

    /// The daemon's cache counts and event overruns.
    pub fn stats(&self, unit: Unit) -> Result<CtdStats> {
        let general = self.client(unit, &["-s"])?;
        let mut s = parse_stats(&general).with_context(|| format!("conntrackd -s on {unit}: {general:?}"))?;
        if let Ok(rt) = self.client(unit, &["-s", "runtime"]) {
            s.netlink_overruns = parse_overruns(&rt).unwrap_or(0);
        }
        Ok(s)
    }

    /// The external cache's entry count only (one client call).
    pub fn external(&self, unit: Unit) -> Result<u64> {
        let general = self.client(unit, &["-s"])?;
        parse_stats(&general).map(|s| s.external).with_context(|| format!("conntrackd -s on {unit}: {general:?}"))
    }

    /// The notify script's log of `unit`.
    pub fn notify_lines(&self, unit: Unit) -> Vec<NotifyLine> {
        parse_notify(&std::fs::read_to_string(Self::notify_log_path(&self.dir, unit)).unwrap_or_default())
    }

    /// The processes of `unit` (conntrackd, keepalived).
    pub fn procs_mut(&mut self, unit: Unit) -> &mut Vec<Proc> {
        &mut self.procs[index(unit)]
    }

    fn log_tail(&self, unit: Unit) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("conntrackd-{}.log", unit.id()))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// Runs `argv` on the host with a bound; stdout, or an error with stderr.
fn run_bounded(argv: &[&str], timeout: Duration) -> Result<String> {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", argv.join(" ")))?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{}` did not finish within {timeout:?}", argv.join(" "));
        }
        thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", argv.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The "current active connections" of the internal and external caches
/// in `conntrackd -s`.
pub fn parse_stats(text: &str) -> Option<CtdStats> {
    let mut s = CtdStats::default();
    let mut section = "";
    let (mut internal, mut external) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("cache internal") {
            section = "internal";
        } else if line.starts_with("cache external") {
            section = "external";
        } else if let Some(v) = line.strip_prefix("current active connections:") {
            let n = v.trim().parse::<u64>().ok();
            match section {
                "internal" => internal = n,
                "external" => external = n,
                _ => {}
            }
        }
    }
    s.internal = internal?;
    s.external = external?;
    Some(s)
}

/// "netlink overrun" of `conntrackd -s runtime`.
pub fn parse_overruns(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.trim().strip_prefix("netlink overrun:")).and_then(|v| v.trim().parse().ok())
}

/// The notify script's log lines.
pub fn parse_notify(text: &str) -> Vec<NotifyLine> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let at = it.next()?.parse::<f64>().ok()?;
            let state = it.next()?.to_owned();
            let what = it.next().unwrap_or_default().to_owned();
            Some(NotifyLine { at, state, what })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_parsed() {
        let text = "cache internal:\ncurrent active connections:\t          12\nconnections created:\t\t 1\tfailed:\t 0\n\n\
                    cache external:\ncurrent active connections:\t        1000\nconnections created:\t\t 0\n";
        assert_eq!(parse_stats(text), Some(CtdStats { internal: 12, external: 1000, netlink_overruns: 0 }));
        assert_eq!(parse_stats("nothing"), None);
        assert_eq!(parse_overruns("netlink stats:\n\tnetlink overrun:\t\t           3\n"), Some(3));
    }

    #[test]
    fn notify_log_is_parsed() {
        let lines = parse_notify("1700000000.25 master begin vip=yes\n1700000000.50 master conntrackd -c exit 0\n");
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].state.as_str(), lines[0].what.as_str()), ("master", "begin vip=yes"));
        assert!((lines[1].at - 1_700_000_000.5).abs() < 1e-6);
    }

    #[test]
    fn configs_name_the_right_addresses() {
        let dir = Path::new("/tmp/lab");
        let c = CtdPair::conntrackd_config(dir, Unit::Two);
        for want in ["IPv4_address 198.18.0.2", "IPv4_Destination_Address 198.18.0.1", "Path /tmp/lab/conntrackd-2.ctl"]
        {
            assert!(c.contains(want), "{want} missing in\n{c}");
        }
        let k = CtdPair::keepalived_config(dir, Unit::One);
        for want in [
            "priority 100",
            "198.18.0.10/24 dev eth0",
            "198.19.0.254/24 dev eth1",
            "notify_master \"/tmp/lab/ctd-notify.sh master /tmp/lab/conntrackd-1.conf /tmp/lab/notify-1.log\"",
        ] {
            assert!(k.contains(want), "{want} missing in\n{k}");
        }
    }
}
