//! The environment overrides the file, section by section.

#![allow(clippy::result_large_err)] // figment::Jail's closure signature

use std::io::Write;

#[test]
fn env_overrides_and_process_variables_are_ignored() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    write!(
        f,
        "[unit]\nname = \"lb1\"\nmode = \"first\"\n[ha]\npassword = \"pw\"\n[[interface]]\nname = \"eth0\"\nunit1 = \"198.18.0.1/24\"\nunit2 = \"198.18.0.2/24\"\nshared = \"198.18.0.10/24\"\n"
    )
    .unwrap();
    // figment::Jail isolates the environment for this closure.
    figment::Jail::expect_with(|jail| {
        jail.set_env("DUET_HA__TIMEOUT_S", "3");
        jail.set_env("DUET_LOG", "debug");
        jail.set_env("DUET_CONFIG", "/elsewhere.toml");
        let v = duet_config::load(f.path()).map_err(|e| e.to_string())?;
        assert_eq!(v.raw.ha.pair.timeout_s, 3);
        jail.set_env("DUET_HA__TIMEOUT_S", "4");
        let e = duet_config::load(f.path()).unwrap_err().to_string();
        assert!(e.contains("ha.timeout_s: 4 is not allowed"), "{e}");
        Ok(())
    });
}
