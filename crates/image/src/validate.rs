//! Checks an image and reports every problem at once, each naming the
//! field (`virtual_services[web].real_servers[1].weight`) and what to do.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;

use duet_proto::config::v1::{
    HaSettings, Image, Interface, PersistenceMode, PreferredServer, Protocol, Scheduler, TimingProfile, VirtualService,
};

/// One problem with an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { field: field.into(), message: message.into() });
    }
}

/// Parses "a.b.c.d/len".
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    let addr: Ipv4Addr = a.parse().ok()?;
    let prefix: u8 = p.parse().ok().filter(|p| *p <= 32)?;
    Some((addr, prefix))
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
    u32::from(a) & mask == u32::from(b) & mask
}

/// Checks `image` for a unit that is in an HA mode (`ha_unit`) or not.
pub fn validate(image: &Image, ha_unit: bool) -> Result<(), Vec<Problem>> {
    let mut p = Problems(Vec::new());
    let ha = image.ha.unwrap_or_default();
    check_ha(&ha, &mut p);
    check_interfaces(&image.interfaces, ha_unit, &mut p);
    check_services(&image.virtual_services, &mut p);
    if p.0.is_empty() { Ok(()) } else { Err(p.0) }
}

fn check_ha(ha: &HaSettings, p: &mut Problems) {
    if ha.vhid > 255 {
        p.add("ha.vhid", format!("{} is out of range: use 1-255, or 0 for the default", ha.vhid));
    }
    if ![3, 6, 9, 12, 15].contains(&ha.timeout_s) {
        p.add("ha.timeout_s", format!("{} is not allowed: use 3, 6, 9, 12 or 15 (seconds)", ha.timeout_s));
    }
    if ha.initial_wait_s > 300 {
        p.add("ha.initial_wait_s", format!("{} is too long: use 0-300 seconds", ha.initial_wait_s));
    }
    if ha.use_broadcast && ha.unicast {
        p.add("ha.unicast", "unicast adverts and use_broadcast exclude each other: turn one off");
    }
    let preferred = PreferredServer::try_from(ha.preferred).unwrap_or(PreferredServer::Unspecified);
    if ha.hard_reboot_on_link_failure && !matches!(preferred, PreferredServer::None | PreferredServer::Unspecified) {
        p.add(
            "ha.hard_reboot_on_link_failure",
            "allowed only with preferred = NONE (with a preferred server the units could swap the role back and forth)",
        );
    }
    if TimingProfile::try_from(ha.profile) == Ok(TimingProfile::Fast) {
        if !(10..=500).contains(&ha.fast_interval_ms) {
            p.add("ha.fast_interval_ms", format!("{} is out of range: use 10-500 ms", ha.fast_interval_ms));
        }
        if !(3..=10).contains(&ha.fast_dead_factor) {
            p.add("ha.fast_dead_factor", format!("{} is out of range: use 3-10", ha.fast_dead_factor));
        }
    }
    if ha.sync_interval_s != 0 && !(5..=3600).contains(&ha.sync_interval_s) {
        p.add(
            "ha.sync_interval_s",
            format!("{} is out of range: use 5-3600 seconds, or 0 for 120", ha.sync_interval_s),
        );
    }
}

fn check_interfaces(ifs: &[Interface], ha_unit: bool, p: &mut Problems) {
    let mut names = HashSet::new();
    for (k, i) in ifs.iter().enumerate() {
        let f = |x: &str| format!("interfaces[{k}].{x}");
        if i.name.is_empty() || i.name.len() > 15 || i.name.contains(['/', ' ']) {
            p.add(f("name"), format!("\"{}\" is not a Linux interface name (1-15 characters)", i.name));
        }
        if !names.insert(i.name.as_str()) {
            p.add(f("name"), format!("interface \"{}\" is listed twice", i.name));
        }
        let Some((u1, len)) = parse_cidr(&i.unit1) else {
            p.add(f("unit1"), format!("\"{}\" is not an address with prefix, e.g. 198.18.0.1/24", i.unit1));
            continue;
        };
        if !ha_unit {
            continue;
        }
        for (label, v) in [("unit2", &i.unit2), ("shared", &i.shared)] {
            match parse_cidr(v) {
                None => p.add(f(label), format!("\"{v}\" is not an address with prefix, e.g. 198.18.0.10/24")),
                Some((a, l)) if l != len || !same_subnet(a, u1, len) => p.add(
                    f(label),
                    format!("{v} is not in the subnet of unit1 {}: the three addresses share one subnet", i.unit1),
                ),
                Some((a, _)) if a == u1 => p.add(f(label), format!("{v} is the same address as unit1")),
                _ => {}
            }
        }
        if i.unit2 == i.shared && !i.shared.is_empty() {
            p.add(f("shared"), "unit2 and shared must be different addresses");
        }
    }
    if ha_unit && !ifs.is_empty() && !ifs.iter().any(|i| i.ha_check) {
        p.add("interfaces[*].ha_check", "no interface is used for HA checks: the last one cannot be turned off");
    }
}

fn check_services(vss: &[VirtualService], p: &mut Problems) {
    let mut names = HashSet::new();
    let mut endpoints = HashSet::new();
    for (k, vs) in vss.iter().enumerate() {
        let id = if vs.name.is_empty() { k.to_string() } else { vs.name.clone() };
        let f = |x: &str| format!("virtual_services[{id}].{x}");
        let name_ok = !vs.name.is_empty()
            && vs.name.len() <= 64
            && vs.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            p.add(f("name"), format!("\"{}\" is not a usable name: 1-64 letters, digits, '-', '_' or '.'", vs.name));
        } else if !names.insert(vs.name.as_str()) {
            p.add(f("name"), format!("\"{}\" is used by two virtual services: names are unique", vs.name));
        }
        let addr = vs.address.parse::<Ipv4Addr>();
        if addr.is_err() {
            p.add(f("address"), format!("\"{}\" is not an IPv4 address", vs.address));
        }
        if vs.port == 0 || vs.port > 65535 {
            p.add(f("port"), format!("{} is not a port: use 1-65535", vs.port));
        }
        let proto = Protocol::try_from(vs.protocol).unwrap_or(Protocol::Unspecified);
        if proto == Protocol::Unspecified {
            p.add(f("protocol"), "set PROTOCOL_TCP or PROTOCOL_UDP");
        }
        if Scheduler::try_from(vs.scheduler).unwrap_or(Scheduler::Unspecified) == Scheduler::Unspecified {
            p.add(
                f("scheduler"),
                "set a scheduling method (ROUND_ROBIN, WEIGHTED_ROUND_ROBIN, SOURCE_HASH, LEAST_CONNECTION)",
            );
        }
        if let Ok(a) = addr
            && !endpoints.insert((a, vs.port, vs.protocol))
        {
            p.add(
                f("port"),
                format!("{}:{} {} is served by another virtual service", vs.address, vs.port, proto.as_str_name()),
            );
        }
        let mut reals = HashSet::new();
        for (r, rs) in vs.real_servers.iter().enumerate() {
            let rf = |x: &str| format!("virtual_services[{id}].real_servers[{r}].{x}");
            if rs.address.parse::<Ipv4Addr>().is_err() {
                p.add(rf("address"), format!("\"{}\" is not an IPv4 address", rs.address));
            }
            if rs.port == 0 || rs.port > 65535 {
                p.add(rf("port"), format!("{} is not a port: use 1-65535", rs.port));
            }
            if rs.weight > 1000 {
                p.add(rf("weight"), format!("{} is too high: use 0-1000 (0 drains the server)", rs.weight));
            }
            if !reals.insert((rs.address.as_str(), rs.port)) {
                p.add(rf("address"), format!("{}:{} is listed twice in this virtual service", rs.address, rs.port));
            }
        }
        if let Some(per) = &vs.persistence {
            let mode = PersistenceMode::try_from(per.mode).unwrap_or(PersistenceMode::Unspecified);
            if !matches!(mode, PersistenceMode::None | PersistenceMode::Unspecified)
                && !(1..=86_400).contains(&per.timeout_s)
            {
                p.add(f("persistence.timeout_s"), format!("{} is out of range: use 1-86400 seconds", per.timeout_s));
            }
            if mode == PersistenceMode::Cookie {
                if per.cookie.is_empty() {
                    p.add(f("persistence.cookie"), "cookie persistence needs the cookie's name");
                }
                if proto != Protocol::Tcp {
                    p.add(f("persistence.mode"), "cookie persistence needs a TCP (HTTP) virtual service");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use duet_proto::config::v1::{Persistence, RealServer};

    use super::*;

    pub(crate) fn good() -> Image {
        Image {
            ha: Some(HaSettings { timeout_s: 3, preferred: PreferredServer::None as i32, ..Default::default() }),
            interfaces: vec![Interface {
                name: "eth0".into(),
                unit1: "198.18.0.1/24".into(),
                unit2: "198.18.0.2/24".into(),
                shared: "198.18.0.10/24".into(),
                ha_check: true,
            }],
            virtual_services: vec![VirtualService {
                name: "web".into(),
                address: "198.18.0.10".into(),
                port: 80,
                protocol: Protocol::Tcp as i32,
                scheduler: Scheduler::RoundRobin as i32,
                real_servers: vec![RealServer { address: "198.18.1.1".into(), port: 8080, weight: 1, enabled: true }],
                persistence: Some(Persistence {
                    mode: PersistenceMode::SourceAddress as i32,
                    timeout_s: 600,
                    cookie: String::new(),
                }),
                enabled: true,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_good_image_passes() {
        assert_eq!(validate(&good(), true), Ok(()));
    }

    #[test]
    fn problems_name_the_field() {
        let mut i = good();
        i.ha.as_mut().unwrap().timeout_s = 4;
        i.virtual_services[0].real_servers[0].weight = 5000;
        i.virtual_services[0].port = 0;
        i.interfaces[0].shared = "198.18.1.10/24".into();
        let e: Vec<String> = validate(&i, true).unwrap_err().iter().map(ToString::to_string).collect();
        assert!(e.contains(&"ha.timeout_s: 4 is not allowed: use 3, 6, 9, 12 or 15 (seconds)".to_string()), "{e:?}");
        assert!(
            e.iter().any(|l| l.starts_with("virtual_services[web].real_servers[0].weight: 5000 is too high")),
            "{e:?}"
        );
        assert!(e.iter().any(|l| l.starts_with("virtual_services[web].port: 0 is not a port")), "{e:?}");
        assert!(e.iter().any(|l| l.starts_with("interfaces[0].shared: 198.18.1.10/24 is not in the subnet")), "{e:?}");
    }

    #[test]
    fn duplicate_endpoints_and_names() {
        let mut i = good();
        let mut dup = i.virtual_services[0].clone();
        i.virtual_services.push(dup.clone());
        dup.name = "web2".into();
        i.virtual_services.push(dup);
        let e: Vec<String> = validate(&i, true).unwrap_err().iter().map(ToString::to_string).collect();
        assert!(e.iter().any(|l| l.contains("used by two virtual services")), "{e:?}");
        assert!(
            e.iter().any(|l| l.starts_with("virtual_services[web2].port") && l.contains("served by another")),
            "{e:?}"
        );
    }

    #[test]
    fn ten_thousand_services_validate_quickly() {
        let mut i = good();
        let base = i.virtual_services[0].clone();
        i.virtual_services = (0..10_000u32)
            .map(|k| VirtualService {
                name: format!("vs{k}"),
                port: 1 + k % 60_000,
                address: format!("198.18.{}.{}", k / 250 % 250, k % 250 + 1),
                ..base.clone()
            })
            .collect();
        let t = std::time::Instant::now();
        assert_eq!(validate(&i, true), Ok(()));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }
}
