//! An independent client (Python grpcio, not built from this repository's
//! Rust code) lists the services by reflection, sees health SERVING and
//! reads WatchRole.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use duet_proto::common::v1::Role;
use duet_tests::*;

#[test]
fn python_grpcio_client_uses_reflection_health_and_watch_role() {
    lab_test("python_client", false, |l| {
        let cfg = UnitConfig::new("lb1", "first", l.lab.dir());
        let _p = l.election(l.a, &cfg)?;
        l.wait_role(l.a, Role::Active, Duration::from_secs(20))?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/election_client.py");
        let out = l.lab.run(l.a, &["python3", script, "127.0.0.1:7870", "1"])?;
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        let services: Vec<&str> = v["services"].as_array().unwrap().iter().filter_map(|s| s.as_str()).collect();
        for s in
            ["duet.election.v1.ElectionService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]
        {
            assert!(services.contains(&s), "{s} missing from {services:?}");
        }
        assert!(
            !services.iter().any(|s| s.contains("Takeover") || s.contains("PeerSync")),
            "the election's port lists others' services: {services:?}"
        );
        assert_eq!(v["health"], "SERVING");
        let ev = &v["events"][0];
        assert_eq!(ev["kind"], "ROLE_EVENT_KIND_SNAPSHOT", "{ev}");
        assert_eq!(ev["role"], "ROLE_ACTIVE", "{ev}");
        assert!(ev["epoch"].is_string(), "64-bit epoch as a JSON string: {ev}");
        Ok(())
    });
}

/// With `admin.tokens_file`, the same client works with a viewer's token
/// (DUET_TOKEN) and is refused without one.
#[test]
fn python_grpcio_client_presents_a_token() {
    lab_test("python_client_token", false, |l| {
        let viewer = "python-viewer-0123456789abcdef0123456789";
        let tokens = l.lab.dir().join("admin-tokens");
        std::fs::write(&tokens, format!("viewer {viewer}\n"))?;
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600))?;
        let mut cfg = UnitConfig::new("lb1", "first", l.lab.dir());
        cfg.extra.push_str(&format!("[admin]\ntokens_file = \"{}\"\n", tokens.display()));
        let p = l.election(l.a, &cfg)?;
        p.wait_log("Switching to state: Active", Duration::from_secs(20))?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/election_client.py");
        let refused = l.lab.run_status(l.a, &["python3", script, "127.0.0.1:7870", "1"])?;
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && err.contains("UNAUTHENTICATED"), "{err}");
        let env = format!("DUET_TOKEN={viewer}");
        let out = l.lab.run(l.a, &["env", &env, "python3", script, "127.0.0.1:7870", "1"])?;
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        assert_eq!(v["events"][0]["role"], "ROLE_ACTIVE", "{v}");
        Ok(())
    });
}
