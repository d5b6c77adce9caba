//! O5: the unit's gRPC APIs with `admin.tokens_file`: a viewer reads, an
//! operator changes, no token or an unknown one is refused and logged with
//! the caller; the unit's own services keep following each other (they
//! present its internal token); duetctl finds the token in the unit file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use duet_proto::election::v1 as pb;
use duet_proto::election::v1::election_service_client::ElectionServiceClient;
use duet_testkit::in_netns;
use duet_tests::*;

const OPERATOR: &str = "op-0123456789abcdef0123456789abcdef";
const VIEWER: &str = "view-fedcba9876543210fedcba9876543210";

/// A tokens file in `dir`, mode 600.
fn tokens_file(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let p = dir.join("admin-tokens");
    std::fs::write(&p, format!("# test tokens\noperator {OPERATOR}\nviewer {VIEWER}\n"))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    Ok(p)
}

/// One call to the election at `addr` from namespace `ns`, with `token`.
fn call(ns: &str, addr: &str, token: Option<&str>, handover: bool) -> anyhow::Result<Result<(), tonic::Status>> {
    let (addr, token) = (addr.to_owned(), token.map(str::to_owned));
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let mut c = tokio::time::timeout(Duration::from_secs(3), ElectionServiceClient::connect(addr)).await??;
            let t = token.as_deref();
            let r = if handover {
                c.handover(with_token(pb::HandoverRequest { timeout_ms: 500 }, t)).await.map(drop)
            } else {
                c.get_status(with_token(pb::GetStatusRequest {}, t)).await.map(drop)
            };
            Ok(r)
        })
    })?
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().expect("ascii"));
    }
    r
}

#[test]
fn tokens_gate_every_call_by_role_from_another_namespace_and_the_unit_still_works() {
    lab_test("admin_tokens", false, |l| {
        let tokens = tokens_file(l.lab.dir())?;
        let mut cfg = UnitConfig::new("lb1", "first", l.lab.dir());
        cfg.extra.push_str(&format!(
            "[election]\nlisten = \"{UNIT1}:7870\"\n\n[admin]\ntokens_file = \"{}\"\nallow_plaintext_remote = true\n",
            tokens.display()
        ));
        let unit = l.unit(l.a, &cfg)?;
        // The takeover follows the election and adds the shared address:
        // the unit's services call each other with its internal token.
        duet_testkit::wait_for(
            "the shared address on lb1",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || l.lab.addr_present(l.a, "eth0", SHARED).ok().filter(|p| *p),
        )?;
        let client = l.lab.ns(l.c);
        let at = format!("http://{UNIT1}:7870");

        let none = call(&client, &at, None, false)?.expect_err("a call without a token went through");
        assert_eq!(none.code(), tonic::Code::Unauthenticated, "{none:?}");
        assert!(none.message().contains("authorization: Bearer"), "{}", none.message());
        let bogus = call(&client, &at, Some("not-a-token-of-this-unit-at-all"), false)?.expect_err("an unknown token");
        assert_eq!(bogus.code(), tonic::Code::Unauthenticated, "{bogus:?}");
        call(&client, &at, Some(VIEWER), false)?.expect("a viewer reads the status");
        let denied = call(&client, &at, Some(VIEWER), true)?.expect_err("a viewer handed over");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        // An operator may: the handover itself fails (no partner), not its access.
        if let Err(s) = call(&client, &at, Some(OPERATOR), true)? {
            assert!(
                !matches!(s.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied),
                "an operator was refused: {s:?}"
            );
        }
        // Health stays open (container and systemd checks).
        let health = in_netns(&client, move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let ch = tonic::transport::Endpoint::from_shared(at)?.connect().await?;
                let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
                anyhow::Ok(h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok())
            })
        })??;
        assert!(health, "health needs no token");
        unit.wait_log("refused a call to the admin API", Duration::from_secs(2))?;
        assert!(unit.log().contains("peer=198.18.0.100"), "the refusal names the caller:\n{}", unit.log());
        assert!(!unit.log().contains("peer=127.0.0.1"), "a service of the unit was refused:\n{}", unit.log());

        // duetctl on the unit: the operator's token from the unit file, or
        // a viewer's from DUET_TOKEN.
        let ctl = bin("duetctl").to_string_lossy().into_owned();
        let conf = l.lab.dir().join("lb1.toml").to_string_lossy().into_owned();
        let out = l.lab.run(l.a, &[&ctl, "--config", &conf, "status"])?;
        assert!(out.contains("lb1"), "duetctl status:\n{out}");
        // The API in clear beyond loopback is said in status too.
        assert!(out.contains("tokens travel unencrypted"), "duetctl status:\n{out}");
        let viewer_env = format!("DUET_TOKEN={VIEWER}");
        let r = l.lab.run_status(l.a, &["env", &viewer_env, &ctl, "--config", &conf, "clear-pacified"])?;
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains("needs an operator's token"), "{err}");
        Ok(())
    });
}

#[test]
fn duet_check_refuses_an_api_beyond_loopback_in_clear_and_a_readable_tokens_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = tokens_file(dir.path()).expect("tokens");
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut cfg = UnitConfig::new("lb1", "first", dir.path());
    cfg.extra.push_str(&format!(
        "[election]\nlisten = \"0.0.0.0:7870\"\n\n[admin]\ntokens_file = \"{}\"\n",
        tokens.display()
    ));
    let path = cfg.write(dir.path()).expect("unit file");
    let out = std::process::Command::new(bin("duet")).arg("check").arg("--config").arg(&path).output().expect("duet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // Both at once.
    assert!(err.contains("election.listen") && err.contains("admin.allow_plaintext_remote"), "{err}");
    assert!(err.contains("admin.tokens_file") && err.contains("chmod 600"), "{err}");
}
