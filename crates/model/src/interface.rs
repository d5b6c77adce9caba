//! An interface of the pair and its three addresses (U2, E7).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::{Cidr, Problem};

/// One interface of the pair. In non-HA mode only `unit1` (the unit's own
/// address) is needed; an HA unit needs all three, in one subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The Linux interface name.
    pub name: String,
    /// Unit 1's (mode `first`) address; in non-HA mode the unit's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit1: Option<Cidr>,
    /// Unit 2's (mode `second`) address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit2: Option<Cidr>,
    /// The shared address, held by the active unit only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<Cidr>,
    /// Use for HA checks (E7).
    #[serde(default = "yes")]
    pub ha_check: bool,
}

fn yes() -> bool {
    true
}

impl Interface {
    /// Checks every rule of a list of interfaces of a unit in an HA mode
    /// (`ha_unit`) or not; `path` is where the list sits (`interfaces` in
    /// the image, `interface` in the unit file).
    pub fn validate_list(list: &[Self], ha_unit: bool, path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut names = HashSet::new();
        for (k, i) in list.iter().enumerate() {
            let f = |x: &str| format!("{path}[{k}].{x}");
            if i.name.is_empty() || i.name.len() > 15 || i.name.contains(['/', ' ']) {
                p.push(Problem::new(
                    f("name"),
                    format!("\"{}\" is not a Linux interface name (1-15 characters, no '/' or spaces)", i.name),
                ));
            }
            if !names.insert(i.name.as_str()) {
                p.push(Problem::new(
                    f("name"),
                    format!("interface \"{}\" is listed twice: merge the two entries", i.name),
                ));
            }
            let Some(u1) = i.unit1 else {
                p.push(Problem::new(
                    f("unit1"),
                    "missing: set unit 1's address with its prefix, e.g. \"198.18.0.1/24\"",
                ));
                continue;
            };
            if !ha_unit {
                continue;
            }
            let (Some(u2), Some(sh)) = (i.unit2, i.shared) else {
                if i.unit2.is_none() {
                    p.push(Problem::new(f("unit2"), "missing: an HA unit needs unit 2's address on every interface"));
                }
                if i.shared.is_none() {
                    p.push(Problem::new(
                        f("shared"),
                        "missing: an HA unit needs the shared address on every interface",
                    ));
                }
                continue;
            };
            for (label, c) in [("unit2", u2), ("shared", sh)] {
                if !u1.contains(c.addr) || c.prefix != u1.prefix {
                    p.push(Problem::new(
                        f(label),
                        format!(
                            "{c} is not in the subnet of unit1 {u1}: the three addresses of an interface share one subnet"
                        ),
                    ));
                }
            }
            if u1.addr == u2.addr || u1.addr == sh.addr || u2.addr == sh.addr {
                p.push(Problem::new(
                    f("shared"),
                    format!("unit1 {u1}, unit2 {u2} and shared {sh} must be three different addresses"),
                ));
            }
            for (label, c) in [("unit1", u1), ("unit2", u2), ("shared", sh)] {
                if c.addr == c.network() || c.addr == c.broadcast() || c.addr.is_multicast() || c.addr.is_unspecified()
                {
                    p.push(Problem::new(
                        f(label),
                        format!("{c} is a network, broadcast or multicast address: use a host address"),
                    ));
                }
            }
        }
        if ha_unit && !list.is_empty() && !list.iter().any(|i| i.ha_check) {
            p.push(Problem::new(
                format!("{path}[*].ha_check"),
                "no interface is used for HA checks: the last one cannot be turned off; set ha_check = true on the \
                 interface that reaches the partner",
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth0() -> Interface {
        Interface {
            name: "eth0".into(),
            unit1: "198.18.0.1/24".parse().ok(),
            unit2: "198.18.0.2/24".parse().ok(),
            shared: "198.18.0.10/24".parse().ok(),
            ha_check: true,
        }
    }

    #[test]
    fn a_good_interface_and_a_non_ha_one_pass() {
        assert!(Interface::validate_list(&[eth0()], true, "interfaces").is_empty());
        let solo = Interface { unit2: None, shared: None, ha_check: false, ..eth0() };
        assert!(Interface::validate_list(&[solo], false, "interfaces").is_empty());
    }

    #[test]
    fn problems_name_the_field_under_the_lists_path() {
        let bad = Interface {
            name: "eth0/1".into(),
            shared: "198.18.1.10/24".parse().ok(),
            unit2: "198.18.0.255/24".parse().ok(),
            ha_check: false,
            ..eth0()
        };
        let e: Vec<String> =
            Interface::validate_list(&[bad.clone(), bad], true, "interface").iter().map(ToString::to_string).collect();
        for want in [
            "interface[0].name: \"eth0/1\" is not a Linux interface name",
            "interface[1].name: interface \"eth0/1\" is listed twice",
            "interface[0].shared: 198.18.1.10/24 is not in the subnet of unit1 198.18.0.1/24",
            "interface[0].unit2: 198.18.0.255/24 is a network, broadcast or multicast address",
            "interface[*].ha_check: no interface is used for HA checks: the last one cannot be turned off",
        ] {
            assert!(e.iter().any(|l| l.starts_with(want)), "missing {want:?} in {e:#?}");
        }
        let missing = Interface { unit1: None, ..eth0() };
        let e = Interface::validate_list(&[missing], true, "interfaces");
        assert_eq!(e[0].field, "interfaces[0].unit1");
    }
}
