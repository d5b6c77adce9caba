//! Who answers ARP for an address, on a real segment: the host that has
//! it, and a second host that claims it too (both are found).

use std::net::Ipv4Addr;
use std::time::Duration;

use duet_net::arp_probe::{parse_mac, who_has};
use duet_testkit::{Lab, in_netns, when_root};

#[test]
fn every_host_that_answers_for_an_address_is_found() {
    let Some(lab) = when_root("arp_probe", || Lab::simple("arpprobe", &["asker", "owner", "intruder"])).unwrap() else {
        return;
    };
    let (asker, owner, intruder) = (lab.host_id("asker"), lab.host_id("owner"), lab.host_id("intruder"));
    // sysfs as each namespace shows it (`ip netns exec` mounts its own).
    let mac = |h| parse_mac("eth0", &lab.run(h, &["cat", "/sys/class/net/eth0/address"]).unwrap()).unwrap();
    let index: i32 = lab.run(asker, &["cat", "/sys/class/net/eth0/ifindex"]).unwrap().trim().parse().unwrap();
    let (owner_mac, own) = (mac(owner), mac(asker));
    let asked = Ipv4Addr::new(198, 18, 0, 2);
    let ask = |ip: Ipv4Addr, ms: u64| {
        in_netns(&lab.ns(asker), move || who_has(index, own, &[ip], Duration::from_millis(ms))).unwrap().unwrap()
    };
    let got = ask(asked, 300);
    assert_eq!(got.iter().map(|a| (a.ip, a.mac)).collect::<Vec<_>>(), [(asked, owner_mac)]);
    // The intruder puts the same address on its interface: two answers.
    lab.run(intruder, &["ip", "addr", "add", "198.18.0.2/32", "dev", "eth0"]).unwrap();
    let intruder_mac = mac(intruder);
    let got = ask(asked, 300);
    let macs: Vec<[u8; 6]> = got.iter().map(|a| a.mac).collect();
    assert!(macs.contains(&owner_mac) && macs.contains(&intruder_mac), "{got:?}");
    // Nobody has this one.
    let none = ask(Ipv4Addr::new(198, 18, 0, 99), 200);
    assert!(none.is_empty());
}
