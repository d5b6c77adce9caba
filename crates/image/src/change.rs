//! The edits the configsync API takes, applied to an image, and sections
//! of an image for `GetConfig`.

use duet_model::Problem;
use duet_proto::config::v1::{HaSettings, Image, Interface, VirtualService};

/// One change to the image.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Replace everything.
    Replace(Image),
    /// Replace the HA settings.
    Ha(HaSettings),
    /// Replace the interfaces.
    Interfaces(Vec<Interface>),
    /// Add a virtual service or replace the one with the same name.
    UpsertVirtualService(VirtualService),
    /// Remove the virtual service with this name.
    DeleteVirtualService(String),
}

/// The image with `change` applied (generation, hash and provenance are the
/// store's to set). Validation is the caller's next step.
pub fn apply(current: &Image, change: Change) -> Result<Image, Problem> {
    let mut next = Image {
        generation: 0,
        hash: String::new(),
        provenance: None,
        ha: current.ha,
        interfaces: current.interfaces.clone(),
        virtual_services: current.virtual_services.clone(),
    };
    match change {
        Change::Replace(i) => {
            next.ha = i.ha;
            next.interfaces = i.interfaces;
            next.virtual_services = i.virtual_services;
        }
        Change::Ha(h) => next.ha = Some(h),
        Change::Interfaces(i) => next.interfaces = i,
        Change::UpsertVirtualService(vs) => match next.virtual_services.iter_mut().find(|v| v.name == vs.name) {
            Some(v) => *v = vs,
            None => next.virtual_services.push(vs),
        },
        Change::DeleteVirtualService(name) => {
            let before = next.virtual_services.len();
            next.virtual_services.retain(|v| v.name != name);
            if next.virtual_services.len() == before {
                return Err(Problem::new(
                    format!("virtual_services[{name}]"),
                    "no such virtual service: list them with `duetctl config get virtual_services`",
                ));
            }
        }
    }
    Ok(next)
}

/// What a change makes of the current image: the next image's content
/// (validated), or `None` when it says what the current one says (nothing
/// to commit). The one rule for every writer of an image: a unit's store
/// and the fleet's etcd store.
pub fn next(current: &Image, change: Change, ha_unit: bool) -> Result<Option<Image>, Vec<Problem>> {
    let next = apply(current, change).map_err(|p| vec![p])?;
    if current.generation > 0 && crate::content_hash(&next) == current.hash {
        return Ok(None);
    }
    crate::validate(&next, ha_unit)?;
    Ok(Some(next))
}

/// The part of `image` named by `section`: "" (all), "ha", "interfaces",
/// "virtual_services" or "virtual_services/<name>".
pub fn section(image: &Image, section: &str) -> Result<Image, Problem> {
    let mut out = Image {
        generation: image.generation,
        hash: image.hash.clone(),
        provenance: image.provenance.clone(),
        ..Default::default()
    };
    match section {
        "" => return Ok(image.clone()),
        "ha" => out.ha = image.ha,
        "interfaces" => out.interfaces = image.interfaces.clone(),
        "virtual_services" => out.virtual_services = image.virtual_services.clone(),
        s => {
            let Some(name) = s.strip_prefix("virtual_services/") else {
                return Err(Problem::new(
                    "section",
                    format!(
                        "\"{s}\" is not a section: use ha, interfaces, virtual_services or virtual_services/<name>"
                    ),
                ));
            };
            let vs = image
                .virtual_services
                .iter()
                .find(|v| v.name == name)
                .ok_or_else(|| Problem::new(format!("virtual_services[{name}]"), "no such virtual service"))?;
            out.virtual_services = vec![vs.clone()];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(name: &str, port: u32) -> VirtualService {
        VirtualService { name: name.into(), port, ..Default::default() }
    }

    #[test]
    fn upsert_replaces_by_name_and_delete_names_the_missing_one() {
        let base = Image { virtual_services: vec![vs("a", 1)], ..Default::default() };
        let i = apply(&base, Change::UpsertVirtualService(vs("a", 2))).unwrap();
        assert_eq!(i.virtual_services, vec![vs("a", 2)]);
        let i = apply(&i, Change::UpsertVirtualService(vs("b", 3))).unwrap();
        assert_eq!(i.virtual_services.len(), 2);
        let i = apply(&i, Change::DeleteVirtualService("a".into())).unwrap();
        assert_eq!(i.virtual_services, vec![vs("b", 3)]);
        let e = apply(&i, Change::DeleteVirtualService("zz".into())).unwrap_err();
        assert_eq!(e.field, "virtual_services[zz]");
    }

    #[test]
    fn sections() {
        let base = Image { virtual_services: vec![vs("a", 1), vs("b", 2)], ..Default::default() };
        assert_eq!(section(&base, "virtual_services/b").unwrap().virtual_services, vec![vs("b", 2)]);
        assert!(section(&base, "bogus").is_err());
    }
}
