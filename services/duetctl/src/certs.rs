//! Certificates for the peer links (S3, R5): one CA per pair and one
//! certificate per unit, issued to the unit's name (its `unit.name`),
//! usable as both TLS server and client. `duetctl certs` writes them for a
//! test pair; production pairs can use any CA that issues such certificates.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub ca: PathBuf,
    /// (unit, certificate, key)
    pub units: Vec<(String, PathBuf, PathBuf)>,
}

fn write(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Writes `ca.pem` (and `ca.key`) and `<unit>.pem`/`<unit>.key` for each
/// unit name into `dir`, valid for `days`.
pub fn generate(dir: &Path, pair: &str, units: &[&str], days: u32) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let now = std::time::SystemTime::now();
    let until = now + std::time::Duration::from_secs(u64::from(days) * 86_400);
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, format!("duet pair {pair} CA"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = now.into();
    ca.not_after = until.into();
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let ca_path = dir.join("ca.pem");
    write(&ca_path, &ca_cert.pem(), false)?;
    write(&dir.join("ca.key"), &issuer.key().serialize_pem(), true)?;
    let mut out = Written { ca: ca_path, units: Vec::new() };
    for unit in units {
        let mut p = CertificateParams::new(vec![(*unit).to_string()])
            .with_context(|| format!("\"{unit}\" is not usable as a certificate name"))?;
        p.distinguished_name.push(DnType::CommonName, *unit);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = now.into();
        p.not_after = until.into();
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        let c = dir.join(format!("{unit}.pem"));
        let k = dir.join(format!("{unit}.key"));
        write(&c, &cert.pem(), false)?;
        write(&k, &key.serialize_pem(), true)?;
        out.units.push(((*unit).to_string(), c, k));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_a_ca_and_one_pair_of_files_per_unit() {
        let d = tempfile::tempdir().unwrap();
        let w = super::generate(d.path(), "test", &["lb1", "lb2"], 2).unwrap();
        assert!(std::fs::read_to_string(&w.ca).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(w.units.len(), 2);
        for (_, c, k) in &w.units {
            assert!(std::fs::read_to_string(c).unwrap().contains("BEGIN CERTIFICATE"));
            assert!(std::fs::read_to_string(k).unwrap().contains("PRIVATE KEY"));
        }
    }
}
