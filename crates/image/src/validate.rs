//! Checks an image: the one conversion to the model and the model's
//! validators, so an image and a unit file are held to the same rules.
//! Every problem is reported at once, each naming the field
//! (`virtual_services[web].real_servers[1].weight`) and what to do.

use duet_model::{ImageContent, Problem};
use duet_proto::config::v1::Image;

/// Checks `image` for a unit that is in an HA mode (`ha_unit`) or not.
pub fn validate(image: &Image, ha_unit: bool) -> Result<(), Vec<Problem>> {
    ImageContent::checked(image, ha_unit).map(drop)
}

#[cfg(test)]
mod tests {
    use duet_proto::config::v1::{
        HaSettings, Interface, Persistence, PersistenceMode, PreferredServer, Protocol, RealServer, Scheduler,
        VirtualService,
    };

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
    fn fields_that_do_not_convert_are_named() {
        let mut i = good();
        i.interfaces[0].unit2 = "198.18.0.2".into();
        i.virtual_services[0].protocol = 0;
        let e: Vec<String> = validate(&i, true).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            e,
            [
                "interfaces[0].unit2: \"198.18.0.2\" has no prefix length: write it as 198.18.0.1/24",
                "virtual_services[web].protocol: set PROTOCOL_TCP or PROTOCOL_UDP",
            ]
        );
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
