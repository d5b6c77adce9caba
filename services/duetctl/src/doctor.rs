//! `duetctl doctor` (O4): the reference's troubleshooting, run for the
//! operator. It asks the unit's four services (and through them what the
//! partner and the witness said), looks at what the kernel shows here (the
//! services' capabilities, the shared address on the wire), and names each
//! fault with its fix.
//!
//! [`diagnose`] is the whole judgement, pure: observations in, findings
//! out, tested without a unit. [`observe`] gathers the observations.

use std::net::Ipv4Addr;

use duet_proto::configsync::v1 as cs;
use duet_proto::election::v1 as el;
use duet_proto::replicator::v1 as rp;
use serde::Serialize;

/// Another group's adverts seen longer ago than this are history, not a
/// finding.
pub const FOREIGN_RECENT: std::time::Duration = std::time::Duration::from_secs(600);
/// Clocks further apart than this are a finding.
pub const CLOCK_SKEW_MS: i64 = 1000;
/// A change waiting this long for the partner's acknowledgement is a
/// finding.
pub const LAG_MS: u64 = 1000;

/// What to do about a peer link that refuses the partner.
const PEER_LINK_FIX: &str = "the units' peer-link certificates do not fit: both signed by the CA in tls_ca, each issued \
                             to its unit's name (`duetctl certs` makes a matching set)";

/// How bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

/// One fault, named, with its fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable name, e.g. `partner-unreachable`.
    pub code: &'static str,
    pub severity: Severity,
    pub what: String,
    pub fix: String,
}

/// A service's processes in this unit and the capabilities they lack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapsSeen {
    pub service: String,
    pub lacking: Vec<&'static str>,
}

/// What an ARP request for the shared address brought back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArpSeen {
    pub shared: Option<Ipv4Addr>,
    pub interface: String,
    /// The MACs that answered.
    pub answers: Vec<String>,
    /// The MACs that belong to the pair: this unit's, the partner's, the
    /// virtual MAC.
    pub pair_macs: Vec<String>,
}

/// Everything doctor looked at.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// `None`: the election did not answer (then most else is unknown).
    pub election: Option<el::GetStatusResponse>,
    pub election_error: String,
    pub configsync: Option<cs::GetStatusResponse>,
    pub replicator: Option<rp::GetStatusResponse>,
    pub caps: Vec<CapsSeen>,
    pub arp: Option<ArpSeen>,
    /// What the unit file's peer-link certificates fail (expired, not
    /// signed by the CA, issued to another name), when the file was read.
    pub cert_problems: Vec<String>,
    /// Kernel parameters the virtual MAC needs that are not as it needs
    /// them while this unit holds with it: (parameter, value, wanted).
    pub vmac_sysctls: Vec<(String, String, String)>,
}

fn find(out: &mut Vec<Finding>, code: &'static str, severity: Severity, what: String, fix: &str) {
    out.push(Finding { code, severity, what, fix: fix.to_owned() });
}

/// The findings, the worst first.
pub fn diagnose(o: &Observations) -> Vec<Finding> {
    use Severity::{Critical, Warning};
    let mut out = Vec::new();
    for c in &o.caps {
        find(
            &mut out,
            "capabilities",
            Critical,
            format!("{} runs without {}", c.service, c.lacking.join(", ")),
            "give the unit CAP_NET_ADMIN and CAP_NET_RAW (systemd: AmbientCapabilities; docker: cap_add), then restart it",
        );
    }
    let Some(e) = &o.election else {
        find(
            &mut out,
            "election-down",
            Critical,
            format!("the election does not answer: {}", o.election_error),
            "start the unit (`systemctl start duet@<unit>` or `duet unit --config ...`) and read its log",
        );
        out.sort_by_key(|f| std::cmp::Reverse(f.severity));
        return out;
    };
    let ha = e.unit.as_ref().is_some_and(|u| u.mode != duet_proto::common::v1::HaMode::NonHa as i32);
    let role = duet_proto::common::v1::Role::try_from(e.role).unwrap_or(duet_proto::common::v1::Role::Unspecified);
    let active = role == duet_proto::common::v1::Role::Active;
    if role == duet_proto::common::v1::Role::Pacified {
        find(
            &mut out,
            "pacified",
            Critical,
            format!("this unit is pacified ({} starts in the window): it takes no part in HA", e.recent_starts),
            "find why its services kept restarting (the log, `duetctl health`), fix it, then `duetctl clear-pacified`",
        );
    }
    let pacified = role == duet_proto::common::v1::Role::Pacified;
    // The squares say what the partner's peer status reports of its role.
    let own =
        if e.unit.as_ref().is_some_and(|u| u.mode == duet_proto::common::v1::HaMode::Second as i32) { 2 } else { 1 };
    let partner_pacified =
        e.squares.iter().any(|s| s.unit != own && s.status == duet_proto::common::v1::UnitStatus::Pacified as i32);
    if let Some(p) = e.partner.as_ref().filter(|_| ha) {
        if partner_pacified {
            // A pacified unit sends no adverts and heeds none: that is why
            // they seem not to flow, not the network.
            find(
                &mut out,
                "partner-pacified",
                Critical,
                format!("the partner {} is pacified: it takes no part in HA, so the pair has no standby", p.address),
                "on the partner: find why its services kept restarting (its log, `duetctl health`), fix it, then \
                 `duetctl clear-pacified` there",
            );
        } else if !p.reachable {
            find(
                &mut out,
                "partner-unreachable",
                Critical,
                if p.silent_ms > 0 {
                    format!("the partner {} is not heard: no advert for {} ms, no peer status", p.address, p.silent_ms)
                } else {
                    format!("the partner {} is not heard: its peer status stopped", p.address)
                },
                "check that the partner runs, that the link between the units is up, and that nothing drops \
                 IP protocol 112 (CARP) or UDP 6973 (peer status) between them",
            );
        } else if pacified {
            // This unit's own finding says it all: it neither sends nor
            // heeds adverts.
        } else if active && !p.hears_adverts {
            find(
                &mut out,
                "adverts-one-way",
                Critical,
                format!("the partner {} reports that this unit's adverts do not reach it", p.address),
                "multicast to 224.0.0.18 is filtered between the units (IGMP snooping on the switch, a firewall): \
                 allow IP protocol 112, or set use_broadcast / unicast in the [[interface]]",
            );
        } else if !active && p.silent_ms > e.parameters.as_ref().map_or(u64::MAX, |h| h.ha_timeout_ms) {
            find(
                &mut out,
                "adverts-one-way",
                Critical,
                format!(
                    "the partner {} is heard by its status, but none of its adverts for {} ms",
                    p.address, p.silent_ms
                ),
                "multicast to 224.0.0.18 is filtered between the units (IGMP snooping on the switch, a firewall): \
                 allow IP protocol 112, or set use_broadcast / unicast in the [[interface]]",
            );
        }
        if e.unit.as_ref().is_some_and(|u| u.mode == p.mode) {
            find(
                &mut out,
                "same-mode",
                Critical,
                "both units are configured with the same HA mode".into(),
                "set unit.mode = \"first\" on one unit and \"second\" on the other",
            );
        }
    }
    let drops = |r: el::DropReason| e.drops.iter().find(|d| d.reason == r as i32).map_or(0, |d| d.count);
    if drops(el::DropReason::BadDigest) > 0 || drops(el::DropReason::AuthModeMismatch) > 0 {
        find(
            &mut out,
            "password-mismatch",
            Critical,
            format!(
                "{} adverts dropped for a bad digest, {} for another authentication mode (Bad digest - Check vhid, \
                 password and virtual IP address)",
                drops(el::DropReason::BadDigest),
                drops(el::DropReason::AuthModeMismatch)
            ),
            "give both units the same ha.password and ha.auth (or another pair uses this vhid: give one pair \
             another ha.vhid)",
        );
    }
    for f in &e.foreign_vhids {
        find(
            &mut out,
            "foreign-vhid",
            Warning,
            format!("adverts of vhid {} from {} on this segment ({} seen)", f.vhid, f.source, f.count),
            "another CARP/VRRP group shares the segment: nothing breaks while the vhids differ, but make sure no \
             two pairs ever use the same one (ha.vhid)",
        );
    }
    if let Some(t) = &e.takeover
        && ha
        && !t.following
    {
        find(
            &mut out,
            "takeover-not-following",
            Critical,
            "the takeover service does not follow the role: nothing puts the shared addresses up or down".into(),
            "start the takeover service (the unit supervisor restarts it; see `duetctl health` and its log)",
        );
    }
    if let Some(w) = &e.witness
        && !w.reachable
    {
        find(
            &mut out,
            "witness-unreachable",
            Warning,
            format!("the witness (etcd) does not answer: {}", w.last_error),
            "check the etcd endpoints in [witness], the TLS files, and that etcd has a quorum",
        );
    }
    if let Some(c) = &o.configsync {
        let partner = c.partner.as_ref();
        if c.partner_reachable && partner.is_some_and(|p| p.known) && !c.in_sync {
            let (l, p) = (c.local.clone().unwrap_or_default(), partner.cloned().unwrap_or_default());
            find(
                &mut out,
                "config-out-of-sync",
                Warning,
                format!("this unit holds generation {}, the partner {}", l.generation, p.generation),
                "the active pushes on every commit and every sync interval: run `duetctl config force-update` on \
                 the active unit, and compare `duetctl config history` on both",
            );
        }
        if let Some(off) = c.partner_clock_offset_ms.filter(|o| o.abs() > CLOCK_SKEW_MS) {
            find(
                &mut out,
                "clock-skew",
                Warning,
                format!("the partner's clock is {off} ms off this unit's (± {} ms)", c.partner_clock_rtt_ms / 2),
                "run NTP (chrony, systemd-timesyncd) on both units: logs, traces, certificate validity and the \
                 SHA-256 replay counters depend on the clocks",
            );
        }
        for w in c.warnings.iter().filter(|w| w.contains("refused")) {
            find(&mut out, "peer-link-refused", Critical, format!("configsync's peer link: {w}"), PEER_LINK_FIX);
        }
        for w in c.warnings.iter().filter(|w| w.starts_with("the fleet's etcd is not reachable")) {
            find(
                &mut out,
                "fleet-unreachable",
                Warning,
                w.clone(),
                "check the etcd endpoints in [fleet], the TLS files, the unit's etcd role (its certificate's common \
                 name is the user), and that etcd has a quorum (`etcdctl endpoint health`)",
            );
        }
    }
    if let Some(r) = &o.replicator {
        if ha && !r.partner_connected && r.mode != "idle" {
            find(
                &mut out,
                "replication-unlinked",
                Warning,
                format!("the replicator has no link to the partner ({})", r.last_error),
                "connections would not survive a failover: check the partner's replicator and the peer link \
                 (replicator.peer_port open between the units, certificates)",
            );
        } else if r.lag_ms > LAG_MS {
            // Lagging now: a change waits for the partner. The p99 alone
            // remembers a past outage of the link for as long as its
            // samples last, which says nothing about now.
            find(
                &mut out,
                "replication-lag",
                Warning,
                format!(
                    "replication lags: the oldest change not yet acknowledged by the partner is {} ms old ({} waiting; \
                     p99 {} ms)",
                    r.lag_ms,
                    r.lag_changes,
                    r.lag_p99_us / 1000
                ),
                "the link between the units or the standby is too slow for the connection rate",
            );
        }
        let refused: u64 = r.drops.iter().filter(|(k, _)| k.starts_with("refused_peers")).map(|(_, n)| n).sum();
        if refused > 0 {
            find(
                &mut out,
                "peer-link-refused",
                Critical,
                format!("the replicator refused {refused} peer connection(s)"),
                PEER_LINK_FIX,
            );
        }
    }
    for p in &o.cert_problems {
        find(
            &mut out,
            "peer-certificate",
            Critical,
            p.clone(),
            "make a matching set (`duetctl certs --units <unit1>,<unit2>`: one CA, each unit's certificate issued \
             to its name), install it on both units and restart them",
        );
    }
    for (param, value, want) in &o.vmac_sysctls {
        find(
            &mut out,
            "vmac-sysctls",
            Critical,
            format!("{param} is {value}, the virtual MAC needs {want}"),
            "something changed it after the takeover set it (a sysctl.d file, another tool): with it, neighbours \
             learn the shared address at the wrong MAC or replies are dropped; restart the takeover or set it back",
        );
    }
    if let Some(a) = &o.arp {
        let strangers: Vec<&String> = a.answers.iter().filter(|m| !a.pair_macs.contains(m)).collect();
        if let (false, Some(ip)) = (strangers.is_empty(), a.shared) {
            find(
                &mut out,
                "address-conflict",
                Critical,
                format!(
                    "another host answers ARP for the shared address {ip} on {}: {}",
                    a.interface,
                    strangers.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
                "remove the shared address from that host (or give the pair another shared address): clients reach \
                 whichever answered last",
            );
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

/// Gathers the observations: the four services' status (what does not
/// answer is `None`), the running services' capabilities in this network
/// namespace, who answers ARP for the shared address, and, with the unit
/// file, its peer-link certificates.
pub async fn observe(a: &crate::client::Addrs, config: Option<&std::path::Path>) -> Observations {
    let mut o = Observations::default();
    match crate::client::election(a).await {
        Ok(mut c) => match c.get_status(el::GetStatusRequest {}).await {
            Ok(r) => {
                let mut s = r.into_inner();
                let now = std::time::SystemTime::now();
                s.foreign_vhids.retain(|f| {
                    f.last_seen
                        .and_then(|t| std::time::SystemTime::try_from(t).ok())
                        .is_none_or(|t| now.duration_since(t).unwrap_or_default() < FOREIGN_RECENT)
                });
                o.election = Some(s);
            }
            Err(s) => o.election_error = format!("{} at {}", s.message(), a.election),
        },
        Err(e) => o.election_error = format!("{e:#}"),
    }
    if let Ok(mut c) = crate::client::configsync(a).await {
        o.configsync = c.get_status(cs::GetStatusRequest {}).await.ok().map(tonic::Response::into_inner);
    }
    if let Ok(mut c) = crate::client::replicator(a).await {
        o.replicator = c.get_status(rp::GetStatusRequest {}).await.ok().map(tonic::Response::into_inner);
    }
    o.caps = capabilities();
    if let Ok(mut c) = crate::client::takeover(a).await
        && let Ok(t) = c.get_status(duet_proto::takeover::v1::GetStatusRequest {}).await
    {
        let t = t.into_inner();
        if t.vmac_enabled && t.holding {
            o.vmac_sysctls = vmac_sysctls(&t.vmacs);
        }
    }
    if let Some(e) = &o.election {
        let e = e.clone();
        o.arp = tokio::task::spawn_blocking(move || arp(&e)).await.ok().flatten();
    }
    if let Some(path) = config.filter(|p| p.exists())
        && let Ok(cfg) = duet_config::load(path)
        && let Ok(c) = cfg.configsync()
        && let Some(link) = &c.peer
    {
        match duet_runtime::tls::PeerTls::for_link(link) {
            Ok(tls) => o.cert_problems.extend(tls.verify(&cfg.raw.unit.name, "configsync")),
            Err(e) => o.cert_problems.push(e.to_string()),
        }
    }
    o
}

/// The virtual MAC's kernel parameters that are off, on each parent and
/// macvlan the takeover holds with.
fn vmac_sysctls(vmacs: &[duet_proto::takeover::v1::VirtualMac]) -> Vec<(String, String, String)> {
    use duet_net::sysctl::{VMAC_DEVICE, VMAC_PARENT, device_name, read};
    let mut off = Vec::new();
    for v in vmacs.iter().filter(|v| v.present) {
        for (dev, params) in [(&v.parent, VMAC_PARENT), (&v.device, VMAC_DEVICE)] {
            for (p, want) in params {
                let n = device_name(dev, p);
                if let Ok(value) = read(&n)
                    && value != *want
                {
                    off.push((n.replace('/', "."), value, (*want).to_owned()));
                }
            }
        }
    }
    off
}

/// The duet services running in this network namespace that lack a
/// capability they need.
fn capabilities() -> Vec<CapsSeen> {
    let own = std::fs::read_link("/proc/self/ns/net").ok();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out: Vec<CapsSeen> = Vec::new();
    for d in dir.flatten() {
        let pid = d.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else { continue };
        let Some((name, needed)) = duet_runtime::caps::BY_SERVICE.iter().find(|(n, _)| *n == comm.trim_end()) else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() != own {
            continue;
        }
        let Some(eff) = duet_runtime::caps::effective_of(&pid) else { continue };
        let lacking = duet_runtime::caps::lacking(eff, needed);
        if !lacking.is_empty() && !out.iter().any(|c| c.service == *name) {
            let names: Vec<&'static str> = lacking
                .iter()
                .map(|c| match c {
                    duet_runtime::caps::Cap::NetAdmin => "CAP_NET_ADMIN",
                    duet_runtime::caps::Cap::NetRaw => "CAP_NET_RAW",
                })
                .collect();
            out.push(CapsSeen { service: (*name).to_owned(), lacking: names });
        }
    }
    out
}

/// Who answers ARP for the first interface's shared address, and the MACs
/// that belong to the pair (this unit's, the partner's, the virtual MAC).
fn arp(e: &el::GetStatusResponse) -> Option<ArpSeen> {
    let i = e.interfaces.first()?;
    let shared: Ipv4Addr = i.shared_address.parse().ok()?;
    let partner: Option<Ipv4Addr> = e.partner.as_ref().and_then(|p| p.address.parse().ok());
    let (index, own) = duet_net::arp_probe::interface(&i.name).ok()?;
    let mut targets = vec![shared];
    targets.extend(partner);
    let answers = duet_net::arp_probe::who_has(index, own, &targets, std::time::Duration::from_millis(300)).ok()?;
    let vhid = e.unit.as_ref().map_or(0, |u| u.vhid);
    let mut pair_macs = vec![duet_wire::arp::format_mac(&own)];
    pair_macs.push(duet_wire::arp::format_mac(&duet_wire::arp::virtual_mac(u8::try_from(vhid).unwrap_or(0))));
    pair_macs.extend(answers.iter().filter(|a| Some(a.ip) == partner).map(|a| duet_wire::arp::format_mac(&a.mac)));
    Some(ArpSeen {
        shared: Some(shared),
        interface: i.name.clone(),
        answers: answers.iter().filter(|a| a.ip == shared).map(|a| duet_wire::arp::format_mac(&a.mac)).collect(),
        pair_macs,
    })
}

/// `duetctl doctor`: prints the findings (or that nothing is wrong); exits
/// 0 when nothing is wrong, 1 with warnings only, 2 with a critical one.
pub async fn run(a: &crate::client::Addrs, config: Option<&std::path::Path>, json: bool) -> anyhow::Result<i32> {
    let o = observe(a, config).await;
    let findings = diagnose(&o);
    let code = match findings.first().map(|f| f.severity) {
        None => 0,
        Some(Severity::Warning) => 1,
        Some(Severity::Critical) => 2,
    };
    if json {
        let looked = serde_json::json!({
            "election": o.election.is_some(),
            "configsync": o.configsync.is_some(),
            "replicator": o.replicator.is_some(),
            "arp": o.arp.is_some(),
            "certificates": config.is_some(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "findings": findings, "looked_at": looked }))?
        );
        return Ok(code);
    }
    let unit = o.election.as_ref().and_then(|e| e.unit.as_ref()).map_or("?", |u| u.name.as_str());
    if findings.is_empty() {
        println!("doctor: unit {unit}: nothing wrong found");
    } else {
        println!("doctor: unit {unit}: {} problem(s)", findings.len());
        for f in &findings {
            let sev = match f.severity {
                Severity::Critical => "CRITICAL",
                Severity::Warning => "warning",
            };
            println!("[{sev}] {}: {}\n    fix: {}", f.code, f.what, f.fix);
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_proto::common::v1 as common;

    /// A healthy active first unit with its partner heard both ways.
    fn healthy() -> Observations {
        Observations {
            election: Some(el::GetStatusResponse {
                unit: Some(common::UnitIdentity {
                    name: "lb1".into(),
                    mode: common::HaMode::First as i32,
                    ..Default::default()
                }),
                role: common::Role::Active as i32,
                partner: Some(el::PartnerStatus {
                    address: "198.18.0.2".into(),
                    reachable: true,
                    hears_adverts: true,
                    mode: common::HaMode::Second as i32,
                    ..Default::default()
                }),
                takeover: Some(el::TakeoverStatus { following: true, ..Default::default() }),
                parameters: Some(el::HaParameters { ha_timeout_ms: 3000, ..Default::default() }),
                ..Default::default()
            }),
            configsync: Some(cs::GetStatusResponse {
                partner_reachable: true,
                in_sync: true,
                partner: Some(cs::UnitConfigState { known: true, ..Default::default() }),
                partner_clock_offset_ms: Some(3),
                ..Default::default()
            }),
            replicator: Some(rp::GetStatusResponse {
                mode: "sending".into(),
                partner_connected: true,
                ..Default::default()
            }),
            arp: Some(ArpSeen {
                shared: Some(Ipv4Addr::new(198, 18, 0, 10)),
                interface: "eth0".into(),
                answers: vec!["02:00:00:00:00:01".into()],
                pair_macs: vec!["02:00:00:00:00:01".into(), "02:00:00:00:00:02".into()],
            }),
            ..Default::default()
        }
    }

    fn codes(o: &Observations) -> Vec<&'static str> {
        diagnose(o).iter().map(|f| f.code).collect()
    }

    fn election(o: &mut Observations) -> &mut el::GetStatusResponse {
        o.election.as_mut().expect("an election")
    }

    #[test]
    fn a_healthy_pair_has_nothing_wrong() {
        assert!(diagnose(&healthy()).is_empty(), "{:?}", diagnose(&healthy()));
        // A high p99 from a past outage of the link, with nothing waiting
        // now, is history, not a finding.
        let mut o = healthy();
        o.replicator.as_mut().unwrap().lag_p99_us = 3_340_000;
        assert!(diagnose(&o).is_empty(), "{:?}", diagnose(&o));
    }

    #[test]
    fn each_fault_is_named_with_its_fix() {
        type Fault = Box<dyn Fn(&mut Observations)>;
        let cases: Vec<(&str, Fault)> = vec![
            ("election-down", Box::new(|o| o.election = None)),
            ("pacified", Box::new(|o| election(o).role = common::Role::Pacified as i32)),
            // Pacified, this unit hears no adverts: its own finding says why.
            (
                "pacified",
                Box::new(|o| {
                    let e = election(o);
                    e.role = common::Role::Pacified as i32;
                    e.partner.as_mut().unwrap().silent_ms = 9000;
                }),
            ),
            // A pacified partner reports not hearing this unit's adverts:
            // named as pacified, not as a filtered network.
            (
                "partner-pacified",
                Box::new(|o| {
                    let e = election(o);
                    e.partner.as_mut().unwrap().hears_adverts = false;
                    e.squares[1].status = common::UnitStatus::Pacified as i32;
                }),
            ),
            ("partner-unreachable", Box::new(|o| election(o).partner.as_mut().unwrap().reachable = false)),
            ("adverts-one-way", Box::new(|o| election(o).partner.as_mut().unwrap().hears_adverts = false)),
            (
                "adverts-one-way",
                Box::new(|o| {
                    let e = election(o);
                    e.role = common::Role::Standby as i32;
                    e.partner.as_mut().unwrap().silent_ms = 9000;
                }),
            ),
            ("same-mode", Box::new(|o| election(o).partner.as_mut().unwrap().mode = common::HaMode::First as i32)),
            (
                "password-mismatch",
                Box::new(|o| {
                    election(o).drops.push(el::DropCount { reason: el::DropReason::BadDigest as i32, count: 4 })
                }),
            ),
            (
                "foreign-vhid",
                Box::new(|o| {
                    election(o).foreign_vhids.push(el::ForeignVhid {
                        vhid: 77,
                        source: "198.18.0.66".into(),
                        count: 3,
                        ..Default::default()
                    });
                }),
            ),
            ("takeover-not-following", Box::new(|o| election(o).takeover.as_mut().unwrap().following = false)),
            (
                "witness-unreachable",
                Box::new(|o| election(o).witness = Some(el::WitnessStatus { reachable: false, ..Default::default() })),
            ),
            ("config-out-of-sync", Box::new(|o| o.configsync.as_mut().unwrap().in_sync = false)),
            ("clock-skew", Box::new(|o| o.configsync.as_mut().unwrap().partner_clock_offset_ms = Some(-4200))),
            (
                "fleet-unreachable",
                Box::new(|o| {
                    o.configsync.as_mut().unwrap().warnings.push(
                        "the fleet's etcd is not reachable (no session yet): the pair runs on its local copy; \
                         configuration writes fail until etcd answers"
                            .into(),
                    );
                }),
            ),
            (
                "peer-link-refused",
                Box::new(|o| {
                    o.configsync
                        .as_mut()
                        .unwrap()
                        .warnings
                        .push("the peer link refused 2 connection(s): unknown_ca=2".into());
                }),
            ),
            ("replication-unlinked", Box::new(|o| o.replicator.as_mut().unwrap().partner_connected = false)),
            (
                "replication-lag",
                Box::new(|o| {
                    let r = o.replicator.as_mut().unwrap();
                    (r.lag_ms, r.lag_changes) = (2500, 40);
                }),
            ),
            (
                "peer-link-refused",
                Box::new(|o| {
                    o.replicator.as_mut().unwrap().drops.insert("refused_peers.wrong_name".into(), 1);
                }),
            ),
            (
                "peer-certificate",
                Box::new(|o| o.cert_problems.push("configsync.tls_cert: not valid ... (certificate expired)".into())),
            ),
            ("address-conflict", Box::new(|o| o.arp.as_mut().unwrap().answers.push("02:00:00:00:00:66".into()))),
            (
                "vmac-sysctls",
                Box::new(|o| o.vmac_sysctls.push(("net.ipv4.conf.eth0.arp_ignore".into(), "0".into(), "1".into()))),
            ),
            (
                "capabilities",
                Box::new(|o| o.caps.push(CapsSeen { service: "duet-election".into(), lacking: vec!["CAP_NET_RAW"] })),
            ),
        ];
        for (code, fault) in cases {
            let mut o = healthy();
            o.election.as_mut().unwrap().squares = vec![
                common::StatusSquare { unit: 1, status: common::UnitStatus::Active as i32, ..Default::default() },
                common::StatusSquare { unit: 2, status: common::UnitStatus::Standby as i32, ..Default::default() },
            ];
            fault(&mut o);
            let f = diagnose(&o);
            assert_eq!(f.iter().map(|f| f.code).collect::<Vec<_>>(), [code], "{f:?}");
            assert!(!f[0].fix.is_empty() && !f[0].what.is_empty());
        }
    }

    #[test]
    fn the_worst_comes_first_and_a_non_ha_unit_has_no_partner_findings() {
        let mut o = healthy();
        o.configsync.as_mut().unwrap().partner_clock_offset_ms = Some(5000);
        election(&mut o).partner.as_mut().unwrap().reachable = false;
        assert_eq!(codes(&o), ["partner-unreachable", "clock-skew"]);
        let mut o = healthy();
        let e = election(&mut o);
        e.unit.as_mut().unwrap().mode = common::HaMode::NonHa as i32;
        e.partner.as_mut().unwrap().reachable = false;
        assert!(codes(&o).is_empty());
    }
}
