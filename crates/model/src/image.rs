//! What a configuration image holds (S1), and the rules that span its parts.

use serde::{Deserialize, Serialize};

use crate::{HaSettings, Interface, Problem, VirtualService};

/// The content of a configuration image: what its hash covers. The
/// generation, hash and provenance are the store's and stay on the
/// protobuf message (`duet.config.v1.Image`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageContent {
    pub ha: HaSettings,
    pub interfaces: Vec<Interface>,
    pub virtual_services: Vec<VirtualService>,
}

impl ImageContent {
    /// Checks every rule, for a unit in an HA mode (`ha_unit`) or not.
    pub fn validate(&self, ha_unit: bool) -> Result<(), Vec<Problem>> {
        let mut p = validate_pair(&self.ha, &self.interfaces, ha_unit, "interfaces");
        p.extend(VirtualService::validate_list(&self.virtual_services, "virtual_services"));
        if p.is_empty() { Ok(()) } else { Err(p) }
    }

    /// The content of `image` if it converts and validates: the one way
    /// from a protobuf image to settings a unit may use. Conversion
    /// problems come first; the value rules are checked once it converts.
    pub fn checked(image: &duet_proto::config::v1::Image, ha_unit: bool) -> Result<Self, Vec<Problem>> {
        let content = Self::try_from(image)?;
        content.validate(ha_unit)?;
        Ok(content)
    }
}

/// Checks the pair's HA settings and interfaces together, for a unit in an
/// HA mode (`ha_unit`) or not: each one's rules and the rules that need
/// both (the default vhid comes from the first shared address).
/// `interfaces_at` is where the interfaces sit (`interfaces` in the image,
/// `interface` in the unit file); the HA settings sit at `ha`.
pub fn validate_pair(ha: &HaSettings, interfaces: &[Interface], ha_unit: bool, interfaces_at: &str) -> Vec<Problem> {
    let mut p = ha.validate("ha");
    p.extend(Interface::validate_list(interfaces, ha_unit, interfaces_at));
    // E4: the default vhid.
    if ha_unit
        && ha.vhid.is_none()
        && let Some(s) = interfaces.first().and_then(|i| i.shared)
        && s.addr.octets()[3] == 0
    {
        p.push(Problem::new("ha.vhid", format!("the default (last octet of {s}) is 0: set ha.vhid to 1-255")));
    }
    p
}
