//! Certificates for tests of the mutual-TLS peer links (configsync, the
//! replicator): a throw-away CA and one certificate per unit name, written
//! in the layout `duetctl certs` uses (`ca.pem`, `<name>.pem`, `<name>.key`),
//! so a test points a unit's `tls_ca`, `tls_cert` and `tls_key` at them.
//!
//! Deliberately minimal: it sets only what the peer links check, a CA and
//! the unit's name as the certificate's subject alternative name, and takes
//! rcgen's defaults for the rest (validity 1975-4096, no key usage
//! extensions, which webpki then does not require). Operators' certificates
//! come from `duetctl certs`, which also sets key usages, a path length, an
//! expiry and private-file modes; this is not a copy of it.

use std::fs;
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::error::{Error, Result};

/// Writes a fresh CA (`ca.pem`) and, for each of `names`, a certificate
/// issued by it to that name (`<name>.pem`) with its private key
/// (`<name>.key`), into `dir`, which is created if missing. Each call makes
/// a new CA: certificates from two calls do not trust each other.
pub fn write_certs(dir: &Path, names: &[&str]) -> Result<()> {
    fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(rcgen("CA"))?;
    ca.distinguished_name.push(DnType::CommonName, "duet test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().map_err(rcgen("CA"))?;
    write(&dir.join("ca.pem"), &ca.self_signed(&ca_key).map_err(rcgen("CA"))?.pem())?;
    let issuer = Issuer::new(ca, ca_key);
    for &name in names {
        let mut params = CertificateParams::new(vec![name.to_owned()]).map_err(rcgen(name))?;
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().map_err(rcgen(name))?;
        let cert = params.signed_by(&key, &issuer).map_err(rcgen(name))?;
        write(&dir.join(format!("{name}.pem")), &cert.pem())?;
        write(&dir.join(format!("{name}.key")), &key.serialize_pem())?;
    }
    Ok(())
}

/// An [`Error::Certificate`] for `name`.
fn rcgen(name: &str) -> impl FnOnce(rcgen::Error) -> Error {
    let name = name.to_owned();
    move |source| Error::Certificate { name, source }
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(Error::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_and_a_certificate_and_key_per_name() {
        let d = tempfile::tempdir().unwrap();
        write_certs(d.path(), &["lb1", "lb2"]).unwrap();
        let read = |f: &str| fs::read_to_string(d.path().join(f)).unwrap();
        assert!(read("ca.pem").starts_with("-----BEGIN CERTIFICATE-----"));
        for name in ["lb1", "lb2"] {
            assert!(read(&format!("{name}.pem")).starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(read(&format!("{name}.key")).contains("PRIVATE KEY"));
        }
    }
}
