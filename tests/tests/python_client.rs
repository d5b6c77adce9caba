//! An independent client (Python grpcio, not built from this repository's
//! Rust code) lists the services by reflection, sees health SERVING and
//! reads WatchRole.

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
        assert_eq!(v["health"], "SERVING");
        let ev = &v["events"][0];
        assert_eq!(ev["kind"], "ROLE_EVENT_KIND_SNAPSHOT", "{ev}");
        assert_eq!(ev["role"], "ROLE_ACTIVE", "{ev}");
        assert!(ev["epoch"].is_string(), "64-bit epoch as a JSON string: {ev}");
        Ok(())
    });
}
