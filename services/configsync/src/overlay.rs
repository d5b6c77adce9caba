//! The HA settings of the synced image, written for the election (E12).
//!
//! The election reads the unit file and then `<state_dir>/ha-image.toml`
//! (see `duet_config::load`), so the pair's image drives the HA parameters
//! live while the unit file still bootstraps a unit with no image yet.

use std::fmt::Write as _;
use std::path::Path;

use duet_proto::config::v1::{Image, PreferredServer, TimingProfile};

/// The overlay text for `image`, or `None` when it has no HA settings.
pub(crate) fn render(image: &Image) -> Option<String> {
    let ha = image.ha?;
    let mut t = String::from("# Written by duet-configsync from the pair's configuration image; do not edit.\n");
    let _ = writeln!(t, "# generation {} hash {}\n[ha]", image.generation, image.hash);
    if ha.vhid != 0 {
        let _ = writeln!(t, "vhid = {}", ha.vhid);
    }
    let _ = writeln!(t, "timeout_s = {}", ha.timeout_s);
    let preferred = match PreferredServer::try_from(ha.preferred) {
        Ok(PreferredServer::First) => "first",
        Ok(PreferredServer::Second) => "second",
        _ => "none",
    };
    let _ = writeln!(t, "preferred = \"{preferred}\"");
    let _ = writeln!(t, "initial_wait_s = {}", ha.initial_wait_s);
    let _ = writeln!(t, "use_broadcast = {}", ha.use_broadcast);
    let _ = writeln!(t, "unicast = {}", ha.unicast);
    let profile = if TimingProfile::try_from(ha.profile) == Ok(TimingProfile::Fast) { "fast" } else { "standard" };
    let _ = writeln!(t, "profile = \"{profile}\"");
    if profile == "fast" {
        let _ = writeln!(t, "fast_interval_ms = {}\nfast_dead_factor = {}", ha.fast_interval_ms, ha.fast_dead_factor);
    }
    let _ = writeln!(t, "hard_reboot_on_link_failure = {}", ha.hard_reboot_on_link_failure);
    for i in &image.interfaces {
        let _ = writeln!(
            t,
            "\n[[interface]]\nname = \"{}\"\nunit1 = \"{}\"\nunit2 = \"{}\"\nshared = \"{}\"\nha_check = {}",
            i.name, i.unit1, i.unit2, i.shared, i.ha_check
        );
    }
    Some(t)
}

/// Writes (or, for an image without HA settings, removes) the overlay.
pub(crate) fn write(state_dir: &Path, image: &Image) -> std::io::Result<()> {
    let path = state_dir.join(duet_config::HA_OVERLAY);
    match render(image) {
        Some(text) => duet_runtime::fsutil::write_atomic(&path, text.as_bytes()),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use duet_proto::config::v1::{HaSettings, Interface};

    #[test]
    fn overlay_is_a_valid_unit_file_fragment() {
        let img = duet_proto::config::v1::Image {
            generation: 4,
            hash: "h".into(),
            ha: Some(HaSettings { timeout_s: 6, vhid: 20, ..Default::default() }),
            interfaces: vec![Interface {
                name: "eth0".into(),
                unit1: "198.18.0.1/24".into(),
                unit2: "198.18.0.2/24".into(),
                shared: "198.18.0.20/24".into(),
                ha_check: true,
            }],
            ..Default::default()
        };
        let o = super::render(&img).unwrap();
        let unit = format!("[unit]\nname = \"lb1\"\nmode = \"first\"\n{o}");
        let v = duet_config::from_toml(&unit).unwrap();
        assert_eq!(v.election.vhid, 20);
        assert_eq!(v.election.ha_timeout(), std::time::Duration::from_secs(6));
    }
}
