//! The one conversion between each model type and its protobuf message
//! (`duet.config.v1`), used wherever a setting crosses the wire or the
//! store and nowhere else.
//!
//! Model to message cannot fail (`From<&T>`). Message to model
//! (`TryFrom<&message>`) fails with every field that cannot be represented:
//! an address that does not parse, a port above 65535, an unknown enum
//! value. Their field paths are relative to the message converted
//! (`real_servers[1].address`); the image's conversion puts them under
//! `ha`, `interfaces[k]` and `virtual_services[<name>]` (see
//! [`crate::under`]). Value rules (a timeout of 4 s) are the validators'
//! business, not the conversion's.
//!
//! The image's semantics are kept exactly: `vhid = 0` is "the last octet of
//! the first shared address" and `sync_interval_s = 0` "the unit's
//! `configsync.sync_interval_s`" (both `None` here); an UNSPECIFIED
//! preferred server is `none`, an UNSPECIFIED profile `standard` and an
//! UNSPECIFIED persistence mode `none` (as every reader of the image has
//! always taken them); an UNSPECIFIED protocol or scheduler is a problem.
//! An empty address is `None`; a virtual service without persistence has
//! the default [`Persistence`] (mode `none`), written back as no message.

use std::net::Ipv4Addr;

use duet_proto::config::v1 as pb;

use crate::service::{not_a_port, service_id};
use crate::{
    Cidr, HaSettings, ImageContent, Interface, Persistence, PersistenceMode, Preferred, Problem, Profile, Protocol,
    RealServer, Scheduler, VirtualService, WitnessPolicy, under,
};

// ----- HA settings ----------------------------------------------------------

impl From<Profile> for pb::TimingProfile {
    fn from(p: Profile) -> Self {
        match p {
            Profile::Standard => Self::Standard,
            Profile::Fast => Self::Fast,
        }
    }
}

fn preferred(v: i32) -> Result<Preferred, Problem> {
    match duet_proto::convert::preferred(v) {
        Some(p) => Ok(p),
        None => Err(Problem::new(
            "preferred",
            format!(
                "{v} is not a preferred server: use PREFERRED_SERVER_NONE, PREFERRED_SERVER_FIRST or \
                 PREFERRED_SERVER_SECOND"
            ),
        )),
    }
}

fn profile(v: i32) -> Result<Profile, Problem> {
    match pb::TimingProfile::try_from(v) {
        Ok(pb::TimingProfile::Unspecified | pb::TimingProfile::Standard) => Ok(Profile::Standard),
        Ok(pb::TimingProfile::Fast) => Ok(Profile::Fast),
        Err(_) => Err(Problem::new(
            "profile",
            format!("{v} is not a timing profile: use TIMING_PROFILE_STANDARD or TIMING_PROFILE_FAST"),
        )),
    }
}

/// The default policy is written as UNSPECIFIED (no value on the wire), so
/// that an image which keeps it encodes, and hashes, as it did before the
/// witness: a unit of the previous version drops fields it does not know
/// and would otherwise find the hash of every pushed image wrong.
fn witness_policy_i32(p: WitnessPolicy) -> i32 {
    match p {
        WitnessPolicy::Prefer => pb::WitnessPolicy::Unspecified as i32,
        WitnessPolicy::Required => pb::WitnessPolicy::Required as i32,
    }
}

fn witness_policy(v: i32) -> Result<WitnessPolicy, Problem> {
    match pb::WitnessPolicy::try_from(v) {
        Ok(pb::WitnessPolicy::Unspecified | pb::WitnessPolicy::Prefer) => Ok(WitnessPolicy::Prefer),
        Ok(pb::WitnessPolicy::Required) => Ok(WitnessPolicy::Required),
        Err(_) => Err(Problem::new(
            "witness_policy",
            format!("{v} is not a witness policy: use WITNESS_POLICY_PREFER or WITNESS_POLICY_REQUIRED"),
        )),
    }
}

impl From<&HaSettings> for pb::HaSettings {
    fn from(h: &HaSettings) -> Self {
        Self {
            vhid: h.vhid.unwrap_or(0),
            timeout_s: h.timeout_s,
            preferred: pb::PreferredServer::from(h.preferred) as i32,
            initial_wait_s: h.initial_wait_s,
            use_broadcast: h.use_broadcast,
            unicast: h.unicast,
            profile: pb::TimingProfile::from(h.profile) as i32,
            fast_interval_ms: h.fast_interval_ms,
            fast_dead_factor: h.fast_dead_factor,
            hard_reboot_on_link_failure: h.hard_reboot_on_link_failure,
            sync_interval_s: h.sync_interval_s.unwrap_or(0),
            l4_updates: h.l4_updates,
            l7_updates: h.l7_updates,
            witness_policy: witness_policy_i32(h.witness_policy),
            witness_lease_ttl_ms: h.witness_lease_ttl_ms.unwrap_or(0),
        }
    }
}

impl TryFrom<&pb::HaSettings> for HaSettings {
    type Error = Vec<Problem>;

    fn try_from(m: &pb::HaSettings) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let preferred = preferred(m.preferred).map_err(|p| problems.push(p)).unwrap_or_default();
        let profile = profile(m.profile).map_err(|p| problems.push(p)).unwrap_or_default();
        let witness = witness_policy(m.witness_policy).map_err(|p| problems.push(p)).unwrap_or_default();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            vhid: (m.vhid != 0).then_some(m.vhid),
            timeout_s: m.timeout_s,
            preferred,
            initial_wait_s: m.initial_wait_s,
            use_broadcast: m.use_broadcast,
            unicast: m.unicast,
            profile,
            fast_interval_ms: m.fast_interval_ms,
            fast_dead_factor: m.fast_dead_factor,
            hard_reboot_on_link_failure: m.hard_reboot_on_link_failure,
            sync_interval_s: (m.sync_interval_s != 0).then_some(m.sync_interval_s),
            l4_updates: m.l4_updates,
            l7_updates: m.l7_updates,
            witness_policy: witness,
            witness_lease_ttl_ms: (m.witness_lease_ttl_ms != 0).then_some(m.witness_lease_ttl_ms),
        })
    }
}

// ----- interfaces -----------------------------------------------------------

impl From<&Interface> for pb::Interface {
    fn from(i: &Interface) -> Self {
        let text = |c: Option<Cidr>| c.map(|c| c.to_string()).unwrap_or_default();
        Self {
            name: i.name.clone(),
            unit1: text(i.unit1),
            unit2: text(i.unit2),
            shared: text(i.shared),
            ha_check: i.ha_check,
        }
    }
}

impl TryFrom<&pb::Interface> for Interface {
    type Error = Vec<Problem>;

    fn try_from(m: &pb::Interface) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut cidr = |field: &str, s: &str| -> Option<Cidr> {
            if s.is_empty() {
                return None;
            }
            s.parse().map_err(|e: crate::CidrError| problems.push(Problem::new(field, e.to_string()))).ok()
        };
        let (unit1, unit2, shared) = (cidr("unit1", &m.unit1), cidr("unit2", &m.unit2), cidr("shared", &m.shared));
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self { name: m.name.clone(), unit1, unit2, shared, ha_check: m.ha_check })
    }
}

// ----- virtual services -----------------------------------------------------

impl From<Protocol> for pb::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Tcp => Self::Tcp,
            Protocol::Udp => Self::Udp,
        }
    }
}

impl From<Scheduler> for pb::Scheduler {
    fn from(s: Scheduler) -> Self {
        match s {
            Scheduler::RoundRobin => Self::RoundRobin,
            Scheduler::WeightedRoundRobin => Self::WeightedRoundRobin,
            Scheduler::SourceHash => Self::SourceHash,
            Scheduler::LeastConnection => Self::LeastConnection,
        }
    }
}

impl From<PersistenceMode> for pb::PersistenceMode {
    fn from(m: PersistenceMode) -> Self {
        match m {
            PersistenceMode::None => Self::None,
            PersistenceMode::SourceAddress => Self::SourceAddress,
            PersistenceMode::Cookie => Self::Cookie,
        }
    }
}

fn protocol(v: i32) -> Result<Protocol, Problem> {
    match pb::Protocol::try_from(v) {
        Ok(pb::Protocol::Tcp) => Ok(Protocol::Tcp),
        Ok(pb::Protocol::Udp) => Ok(Protocol::Udp),
        Ok(pb::Protocol::Unspecified) => Err(Problem::new("protocol", "set PROTOCOL_TCP or PROTOCOL_UDP")),
        Err(_) => Err(Problem::new("protocol", format!("{v} is not a protocol: set PROTOCOL_TCP or PROTOCOL_UDP"))),
    }
}

fn scheduler(v: i32) -> Result<Scheduler, Problem> {
    const ALLOWED: &str = "ROUND_ROBIN, WEIGHTED_ROUND_ROBIN, SOURCE_HASH, LEAST_CONNECTION";
    match pb::Scheduler::try_from(v) {
        Ok(pb::Scheduler::RoundRobin) => Ok(Scheduler::RoundRobin),
        Ok(pb::Scheduler::WeightedRoundRobin) => Ok(Scheduler::WeightedRoundRobin),
        Ok(pb::Scheduler::SourceHash) => Ok(Scheduler::SourceHash),
        Ok(pb::Scheduler::LeastConnection) => Ok(Scheduler::LeastConnection),
        Ok(pb::Scheduler::Unspecified) => {
            Err(Problem::new("scheduler", format!("set a scheduling method ({ALLOWED})")))
        }
        Err(_) => Err(Problem::new("scheduler", format!("{v} is not a scheduling method: set one of {ALLOWED}"))),
    }
}

fn persistence_mode(v: i32) -> Result<PersistenceMode, Problem> {
    match pb::PersistenceMode::try_from(v) {
        Ok(pb::PersistenceMode::Unspecified | pb::PersistenceMode::None) => Ok(PersistenceMode::None),
        Ok(pb::PersistenceMode::SourceAddress) => Ok(PersistenceMode::SourceAddress),
        Ok(pb::PersistenceMode::Cookie) => Ok(PersistenceMode::Cookie),
        Err(_) => Err(Problem::new(
            "mode",
            format!(
                "{v} is not a persistence mode: use PERSISTENCE_MODE_NONE, PERSISTENCE_MODE_SOURCE_ADDRESS or \
                 PERSISTENCE_MODE_COOKIE"
            ),
        )),
    }
}

/// The value, or `None` with its problem pushed.
fn keep<T>(problems: &mut Vec<Problem>, r: Result<T, Problem>) -> Option<T> {
    r.map_err(|p| problems.push(p)).ok()
}

fn address(field: &str, s: &str) -> Result<Ipv4Addr, Problem> {
    s.parse().map_err(|_| Problem::new(field, format!("\"{s}\" is not an IPv4 address")))
}

fn port(field: &str, v: u32) -> Result<u16, Problem> {
    u16::try_from(v).map_err(|_| not_a_port(field.to_owned(), v))
}

impl From<&Persistence> for pb::Persistence {
    fn from(p: &Persistence) -> Self {
        Self { mode: pb::PersistenceMode::from(p.mode) as i32, timeout_s: p.timeout_s, cookie: p.cookie.clone() }
    }
}

impl TryFrom<&pb::Persistence> for Persistence {
    type Error = Vec<Problem>;

    fn try_from(m: &pb::Persistence) -> Result<Self, Vec<Problem>> {
        let mode = persistence_mode(m.mode).map_err(|p| vec![p])?;
        Ok(Self { mode, timeout_s: m.timeout_s, cookie: m.cookie.clone() })
    }
}

impl From<&RealServer> for pb::RealServer {
    fn from(r: &RealServer) -> Self {
        Self { address: r.address.to_string(), port: u32::from(r.port), weight: r.weight, enabled: r.enabled }
    }
}

impl TryFrom<&pb::RealServer> for RealServer {
    type Error = Vec<Problem>;

    fn try_from(m: &pb::RealServer) -> Result<Self, Vec<Problem>> {
        match (address("address", &m.address), port("port", m.port)) {
            (Ok(address), Ok(port)) => Ok(Self { address, port, weight: m.weight, enabled: m.enabled }),
            (a, p) => Err(a.err().into_iter().chain(p.err()).collect()),
        }
    }
}

impl From<&VirtualService> for pb::VirtualService {
    fn from(v: &VirtualService) -> Self {
        Self {
            name: v.name.clone(),
            address: v.address.to_string(),
            port: u32::from(v.port),
            protocol: pb::Protocol::from(v.protocol) as i32,
            scheduler: pb::Scheduler::from(v.scheduler) as i32,
            real_servers: v.real_servers.iter().map(pb::RealServer::from).collect(),
            persistence: (v.persistence != Persistence::default()).then(|| pb::Persistence::from(&v.persistence)),
            enabled: v.enabled,
        }
    }
}

impl TryFrom<&pb::VirtualService> for VirtualService {
    type Error = Vec<Problem>;

    fn try_from(m: &pb::VirtualService) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let address = keep(&mut problems, address("address", &m.address));
        let port = keep(&mut problems, port("port", m.port));
        let protocol = keep(&mut problems, protocol(m.protocol));
        let scheduler = keep(&mut problems, scheduler(m.scheduler));
        let mut real_servers = Vec::with_capacity(m.real_servers.len());
        for (r, rs) in m.real_servers.iter().enumerate() {
            match RealServer::try_from(rs) {
                Ok(rs) => real_servers.push(rs),
                Err(p) => problems.extend(under(&format!("real_servers[{r}]"), p)),
            }
        }
        let persistence = match m.persistence.as_ref().map(Persistence::try_from).transpose() {
            Ok(p) => p.unwrap_or_default(),
            Err(p) => {
                problems.extend(under("persistence", p));
                Persistence::default()
            }
        };
        match (address, port, protocol, scheduler) {
            (Some(address), Some(port), Some(protocol), Some(scheduler)) if problems.is_empty() => Ok(Self {
                name: m.name.clone(),
                address,
                port,
                protocol,
                scheduler,
                real_servers,
                persistence,
                enabled: m.enabled,
            }),
            _ => Err(problems),
        }
    }
}

// ----- lists and the image ----------------------------------------------------

/// Converts a list of interfaces; problems sit under `interfaces[k]`.
pub fn interfaces(list: &[pb::Interface]) -> Result<Vec<Interface>, Vec<Problem>> {
    convert_list(list, |k, _| format!("interfaces[{k}]"))
}

/// Converts a list of virtual services; problems sit under
/// `virtual_services[<name>]` (the index for a service without a name).
pub fn virtual_services(list: &[pb::VirtualService]) -> Result<Vec<VirtualService>, Vec<Problem>> {
    convert_list(list, |k, v: &pb::VirtualService| format!("virtual_services[{}]", service_id(&v.name, k)))
}

fn convert_list<'a, M, T>(list: &'a [M], path: impl Fn(usize, &M) -> String) -> Result<Vec<T>, Vec<Problem>>
where
    T: TryFrom<&'a M, Error = Vec<Problem>>,
{
    let mut out = Vec::with_capacity(list.len());
    let mut problems = Vec::new();
    for (k, m) in list.iter().enumerate() {
        match T::try_from(m) {
            Ok(t) => out.push(t),
            Err(p) => problems.extend(under(&path(k, m), p)),
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

impl From<&ImageContent> for pb::Image {
    /// The image message of `content`, with no generation, hash or
    /// provenance (the store sets them on commit).
    fn from(c: &ImageContent) -> Self {
        Self {
            generation: 0,
            hash: String::new(),
            ha: Some(pb::HaSettings::from(&c.ha)),
            interfaces: c.interfaces.iter().map(pb::Interface::from).collect(),
            virtual_services: c.virtual_services.iter().map(pb::VirtualService::from).collect(),
            provenance: None,
        }
    }
}

impl TryFrom<&pb::Image> for ImageContent {
    type Error = Vec<Problem>;

    /// The content of `image` (generation, hash and provenance are not
    /// content). An image without HA settings has the message's defaults,
    /// which do not validate (a timeout of 0).
    fn try_from(m: &pb::Image) -> Result<Self, Vec<Problem>> {
        let ha = HaSettings::try_from(&m.ha.unwrap_or_default()).map_err(|p| under("ha", p));
        let ifs = interfaces(&m.interfaces);
        let vss = virtual_services(&m.virtual_services);
        match (ha, ifs, vss) {
            (Ok(ha), Ok(interfaces), Ok(virtual_services)) => Ok(Self { ha, interfaces, virtual_services }),
            (ha, ifs, vss) => {
                Err(ha.err().into_iter().chain(ifs.err()).chain(vss.err()).flatten().collect::<Vec<Problem>>())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_preferred_and_profile_keep_their_meaning_and_unknown_values_are_named() {
        let m = pb::HaSettings { timeout_s: 3, ..Default::default() };
        let h = HaSettings::try_from(&m).unwrap();
        assert_eq!(
            (h.preferred, h.profile, h.vhid, h.sync_interval_s),
            (Preferred::None, Profile::Standard, None, None)
        );
        // An image from before the witness: prefer, the HA timeout's TTL;
        // and the default is written as no value (the image hashes as before).
        assert_eq!((h.witness_policy, h.witness_lease_ttl_ms), (WitnessPolicy::Prefer, None));
        let back = pb::HaSettings::from(&h);
        assert_eq!((back.witness_policy, back.witness_lease_ttl_ms), (0, 0));
        let bad = pb::HaSettings { preferred: 9, profile: 7, witness_policy: 5, ..m };
        let e: Vec<String> = HaSettings::try_from(&bad).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            e,
            [
                "preferred: 9 is not a preferred server: use PREFERRED_SERVER_NONE, PREFERRED_SERVER_FIRST or \
                 PREFERRED_SERVER_SECOND",
                "profile: 7 is not a timing profile: use TIMING_PROFILE_STANDARD or TIMING_PROFILE_FAST",
                "witness_policy: 5 is not a witness policy: use WITNESS_POLICY_PREFER or WITNESS_POLICY_REQUIRED",
            ]
        );
    }

    #[test]
    fn an_image_names_every_field_that_does_not_convert() {
        let img = pb::Image {
            ha: Some(pb::HaSettings { preferred: 9, ..Default::default() }),
            interfaces: vec![pb::Interface { name: "eth0".into(), unit1: "198.18.0.1".into(), ..Default::default() }],
            virtual_services: vec![pb::VirtualService {
                name: "web } flush ruleset".into(),
                address: "198.18.0.10".into(),
                port: 70_000,
                protocol: 0,
                scheduler: 1,
                real_servers: vec![pb::RealServer {
                    address: "198.19.0.1; flush ruleset".into(),
                    port: 80,
                    weight: 1,
                    enabled: true,
                }],
                persistence: Some(pb::Persistence { mode: 12, ..Default::default() }),
                enabled: true,
            }],
            ..Default::default()
        };
        let e: Vec<String> = ImageContent::try_from(&img).unwrap_err().iter().map(ToString::to_string).collect();
        for want in [
            "ha.preferred: 9 is not a preferred server",
            "interfaces[0].unit1: \"198.18.0.1\" has no prefix length: write it as 198.18.0.1/24",
            "virtual_services[web } flush ruleset].port: 70000 is not a port: use 1-65535",
            "virtual_services[web } flush ruleset].protocol: set PROTOCOL_TCP or PROTOCOL_UDP",
            "virtual_services[web } flush ruleset].real_servers[0].address: \"198.19.0.1; flush ruleset\" is not an \
             IPv4 address",
            "virtual_services[web } flush ruleset].persistence.mode: 12 is not a persistence mode",
        ] {
            assert!(e.iter().any(|l| l.starts_with(want)), "missing {want:?} in {e:#?}");
        }
        assert_eq!(e.len(), 6, "{e:#?}");
    }
}
