//! Any valid model value survives the trip to its protobuf message and back
//! unchanged: the one conversion loses nothing and invents nothing.

use std::net::Ipv4Addr;

use duet_model::{
    Cidr, HaSettings, Interface, Persistence, PersistenceMode, Preferred, Profile, Protocol, RealServer, Scheduler,
    VirtualService, WitnessPolicy,
};
use duet_proto::config::v1 as pb;
use proptest::prelude::*;

fn preferred() -> impl Strategy<Value = Preferred> {
    prop_oneof![Just(Preferred::None), Just(Preferred::First), Just(Preferred::Second)]
}

fn profile() -> impl Strategy<Value = Profile> {
    prop_oneof![Just(Profile::Standard), Just(Profile::Fast)]
}

prop_compose! {
    fn ha()(
        vhid in prop::option::of(1u32..=255),
        timeout_s in prop::sample::select(vec![3u32, 6, 9, 12, 15]),
        preferred in preferred(),
        initial_wait_s in 0u32..=300,
        (use_broadcast, unicast) in prop_oneof![Just((false, false)), Just((true, false)), Just((false, true))],
        profile in profile(),
        fast_interval_ms in 10u32..=500,
        fast_dead_factor in 3u32..=10,
        hard_reboot in any::<bool>(),
        sync_interval_s in prop::option::of(5u32..=3600),
        (l4_updates, l7_updates) in (any::<bool>(), any::<bool>()),
        (witness_policy, witness_lease_ttl_ms) in (
            prop_oneof![Just(WitnessPolicy::Prefer), Just(WitnessPolicy::Required)],
            prop::option::of((2u32..=60).prop_map(|s| s * 1000)),
        ),
    ) -> HaSettings {
        HaSettings {
            vhid,
            timeout_s,
            preferred,
            initial_wait_s,
            use_broadcast,
            unicast,
            profile,
            fast_interval_ms,
            fast_dead_factor,
            // E8: only without a preferred server.
            hard_reboot_on_link_failure: hard_reboot && preferred == Preferred::None,
            sync_interval_s,
            l4_updates,
            l7_updates,
            witness_policy,
            witness_lease_ttl_ms,
        }
    }
}

fn cidr() -> impl Strategy<Value = Cidr> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, prefix)| Cidr { addr: Ipv4Addr::from(a), prefix })
}

prop_compose! {
    fn interface()(
        name in "[a-z]{1,8}[0-9]{0,3}",
        unit1 in prop::option::of(cidr()),
        unit2 in prop::option::of(cidr()),
        shared in prop::option::of(cidr()),
        ha_check in any::<bool>(),
    ) -> Interface {
        Interface { name, unit1, unit2, shared, ha_check }
    }
}

prop_compose! {
    fn real_server()(a in any::<u32>(), port in 1u16.., weight in 0u32..=1000, enabled in any::<bool>()) -> RealServer {
        RealServer { address: Ipv4Addr::from(a), port, weight, enabled }
    }
}

prop_compose! {
    fn persistence()(
        mode in prop_oneof![
            Just(PersistenceMode::None),
            Just(PersistenceMode::SourceAddress),
            Just(PersistenceMode::Cookie),
        ],
        timeout_s in 1u32..=86_400,
        cookie in "[A-Za-z]{1,12}",
    ) -> Persistence {
        match mode {
            PersistenceMode::None => Persistence::default(),
            PersistenceMode::SourceAddress => Persistence { mode, timeout_s, cookie: String::new() },
            PersistenceMode::Cookie => Persistence { mode, timeout_s, cookie },
        }
    }
}

prop_compose! {
    fn virtual_service()(
        name in "[A-Za-z0-9_.-]{1,64}",
        a in any::<u32>(),
        port in 1u16..,
        protocol in prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)],
        scheduler in prop_oneof![
            Just(Scheduler::RoundRobin),
            Just(Scheduler::WeightedRoundRobin),
            Just(Scheduler::SourceHash),
            Just(Scheduler::LeastConnection),
        ],
        real_servers in prop::collection::vec(real_server(), 0..4),
        persistence in persistence(),
        enabled in any::<bool>(),
    ) -> VirtualService {
        // Real servers are unique by address and port; cookie persistence
        // needs TCP.
        let mut seen = std::collections::HashSet::new();
        let real_servers = real_servers.into_iter().filter(|r| seen.insert((r.address, r.port))).collect();
        let protocol = if persistence.mode == PersistenceMode::Cookie { Protocol::Tcp } else { protocol };
        VirtualService { name, address: Ipv4Addr::from(a), port, protocol, scheduler, real_servers, persistence, enabled }
    }
}

proptest! {
    #[test]
    fn ha_settings_round_trip(h in ha()) {
        prop_assert_eq!(h.validate("ha"), vec![]);
        let m = pb::HaSettings::from(&h);
        prop_assert_eq!(HaSettings::try_from(&m), Ok(h));
    }

    #[test]
    fn interfaces_round_trip(i in interface()) {
        let m = pb::Interface::from(&i);
        prop_assert_eq!(Interface::try_from(&m), Ok(i));
    }

    #[test]
    fn virtual_services_round_trip(v in virtual_service()) {
        prop_assert_eq!(VirtualService::validate_list(std::slice::from_ref(&v), "virtual_services"), vec![]);
        let m = pb::VirtualService::from(&v);
        prop_assert_eq!(VirtualService::try_from(&m), Ok(v));
    }
}
