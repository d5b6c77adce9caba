//! The election's parameters come from one function, whether the pair's
//! settings are read from the unit file or from a generation of the image:
//! a standby that follows the image runs with exactly the parameters the
//! same settings in its file would give.

use duet_config::election_params;
use duet_model::ImageContent;
use duet_proto::config::v1 as pb;

/// Every pair setting away from its default, two interfaces, and this
/// unit's own settings (password, advskew, a per-interface override).
const UNIT: &str = r#"
[unit]
name = "lb2"
mode = "second"

[ha]
password = "secret"
advskew = 7
vhid = 42
timeout_s = 6
preferred = "second"
initial_wait_s = 30
use_broadcast = true
profile = "fast"
fast_interval_ms = 50
fast_dead_factor = 5
sync_interval_s = 60
l4_updates = false
witness_policy = "required"
witness_lease_ttl_ms = 4000

[[interface]]
name = "eth0"
unit1 = "198.18.0.1/24"
unit2 = "198.18.0.2/24"
shared = "198.18.0.10/24"

[[interface]]
name = "eth1"
unit1 = "198.19.0.1/24"
unit2 = "198.19.0.2/24"
shared = "198.19.0.10/24"
ha_check = false
unicast = false
"#;

/// The same pair settings as the image carries them.
fn image() -> pb::Image {
    pb::Image {
        generation: 5,
        hash: "not checked here".into(),
        ha: Some(pb::HaSettings {
            vhid: 42,
            timeout_s: 6,
            preferred: pb::PreferredServer::Second as i32,
            initial_wait_s: 30,
            use_broadcast: true,
            unicast: false,
            profile: pb::TimingProfile::Fast as i32,
            fast_interval_ms: 50,
            fast_dead_factor: 5,
            hard_reboot_on_link_failure: false,
            sync_interval_s: 60,
            l4_updates: false,
            l7_updates: true,
            witness_policy: pb::WitnessPolicy::Required as i32,
            witness_lease_ttl_ms: 4000,
        }),
        interfaces: vec![
            pb::Interface {
                name: "eth0".into(),
                unit1: "198.18.0.1/24".into(),
                unit2: "198.18.0.2/24".into(),
                shared: "198.18.0.10/24".into(),
                ha_check: true,
            },
            pb::Interface {
                name: "eth1".into(),
                unit1: "198.19.0.1/24".into(),
                unit2: "198.19.0.2/24".into(),
                shared: "198.19.0.10/24".into(),
                ha_check: false,
            },
        ],
        ..Default::default()
    }
}

#[test]
fn an_image_gives_the_parameters_the_unit_file_gives() {
    let v = duet_config::from_toml(UNIT).expect("a valid unit file");
    let content = ImageContent::checked(&image(), true).expect("a valid image");
    let from_image = election_params(&v.local, &content.ha, &content.interfaces, "interfaces").expect("parameters");
    assert_eq!(from_image, v.election);
    // And the file's pair settings are the image's, through the one conversion.
    assert_eq!(content.ha, v.raw.ha.pair);
    assert_eq!(content.interfaces, v.interfaces());
    assert_eq!(pb::HaSettings::from(&v.raw.ha.pair), image().ha.unwrap());
}

#[test]
fn the_parameters_follow_the_image_and_keep_the_units_own_settings() {
    let v = duet_config::from_toml(UNIT).expect("a valid unit file");
    let mut img = image();
    let ha = img.ha.as_mut().unwrap();
    ha.timeout_s = 12;
    ha.profile = pb::TimingProfile::Standard as i32;
    ha.use_broadcast = false;
    let content = ImageContent::checked(&img, true).expect("a valid image");
    let p = election_params(&v.local, &content.ha, &content.interfaces, "interfaces").expect("parameters");
    assert_eq!(p.ha_timeout(), std::time::Duration::from_secs(12));
    assert_eq!((p.advskew, p.auth.clone()), (v.election.advskew, v.election.auth.clone()), "the unit's own");
    assert_eq!(p.interfaces[0].destination, duet_carp::Destination::Multicast);
    assert_eq!(p.interfaces[1].unit_addr.to_string(), "198.19.0.2", "mode second: unit2 is this unit");

    // This unit's override against an image that turns broadcast on names
    // the unit file's field.
    let unicast = duet_config::from_toml(
        &UNIT.replace("unicast = false", "unicast = true").replace("use_broadcast = true", "use_broadcast = false"),
    )
    .expect("valid without broadcast");
    let content = ImageContent::checked(&image(), true).expect("a valid image");
    let e = election_params(&unicast.local, &content.ha, &content.interfaces, "interfaces").unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "interface[1].unicast: unicast adverts and ha.use_broadcast exclude each other: turn one off"
    );
}

/// Every service of a unit starts from the same pair settings: the stored
/// image's when configsync runs on the unit and holds one (here with another
/// shared address and timeout than the file), else the file's; an image
/// that does not fit the unit is set aside with the reason.
#[test]
fn every_service_starts_from_the_stored_image_when_configsync_runs() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[configsync]\nstore_dir = \"{}\"\npartner_name = \"lb1\"\ntls_ca = \"/c\"\ntls_cert = \"/c\"\ntls_key = \"/k\"\n",
        UNIT.replace("use_broadcast = true\n", ""),
        dir.path().display()
    );
    let cfg = duet_config::from_toml(&text).unwrap();
    let (pair, _, why) = cfg.pair_at_start();
    assert_eq!((pair.generation, why), (0, None), "nothing stored yet: the file");
    let mut img = image();
    img.ha.as_mut().unwrap().use_broadcast = false;
    img.ha.as_mut().unwrap().timeout_s = 9;
    img.interfaces[0].shared = "198.18.0.20/24".into();
    let mut store = duet_image::store::Store::open(dir.path(), 5).unwrap();
    store.commit(&img, duet_image::store::provenance("lb1", "committed", "test")).unwrap();
    let (pair, params, why) = cfg.pair_at_start();
    assert_eq!(why, None);
    assert_eq!(pair.generation, 1);
    assert_eq!(pair.shared()[0].1.to_string(), "198.18.0.20/24");
    assert_eq!(params.interfaces[0].shared.to_string(), "198.18.0.20");
    let without = duet_config::from_toml(&format!("{text}enabled = false\n")).unwrap();
    assert_eq!(without.pair_at_start().0.generation, 0, "without configsync the file's");
    img.interfaces.truncate(0);
    store.commit(&img, duet_image::store::provenance("lb1", "committed", "test")).unwrap();
    let (pair, _, why) = cfg.pair_at_start();
    assert_eq!(pair.generation, 0);
    assert!(why.is_some_and(|w| w.contains("generation 2")));
}
