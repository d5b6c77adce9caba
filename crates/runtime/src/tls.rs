//! Mutual TLS for the links between the two units (configsync, replicator;
//! SPEC S3, R5, O5).
//!
//! Both units' certificates are signed by the pair's CA. Each side presents
//! its own certificate and checks the other's: the client checks that the
//! server's certificate is valid for the partner's name (standard host name
//! verification against the CA), and the server requires a client
//! certificate signed by the CA and then checks, per request, that it was
//! issued to the partner's name ([`PeerTls::check_peer`]). A certificate of
//! the right CA but for another name is refused and logged.

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

/// Where the PEM files are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The pair's CA certificate.
    pub ca: PathBuf,
    /// This unit's certificate (issued to its unit name).
    pub cert: PathBuf,
    /// This unit's private key.
    pub key: PathBuf,
}

/// The loaded material and the partner's expected name.
#[derive(Clone)]
pub struct PeerTls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    partner: String,
    /// Peers refused on the links this material serves (shared by clones).
    refusals: std::sync::Arc<crate::peer_refusals::PeerRefusals>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").field("partner", &self.partner).finish_non_exhaustive()
    }
}

/// Why the peer link's TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The partner's name is not a name a certificate can carry.
    #[error("{section}.partner_name \"{name}\" is not a usable certificate name")]
    BadPartnerName { section: String, name: String },
    /// A file cannot be read.
    #[error("{what} {}: {source}; set {field} (make a test pair with `duetctl certs`)", path.display())]
    Read { what: &'static str, field: String, path: PathBuf, source: std::io::Error },
    /// A file is not PEM.
    #[error("{what} {} is not PEM; set {field} to a PEM file", path.display())]
    NotPem { what: &'static str, field: String, path: PathBuf },
}

fn read(what: &'static str, field: String, p: &Path) -> Result<Vec<u8>, TlsError> {
    let b =
        std::fs::read(p).map_err(|source| TlsError::Read { what, field: field.clone(), path: p.to_owned(), source })?;
    if !String::from_utf8_lossy(&b).contains("-----BEGIN") {
        return Err(TlsError::NotPem { what, field, path: p.to_owned() });
    }
    Ok(b)
}

impl PeerTls {
    /// Loads the files; `partner` is the name the partner's certificate
    /// must be issued to. `section` names the config section in errors.
    pub fn load(files: &TlsFiles, partner: &str, section: &str) -> Result<Self, TlsError> {
        ServerName::try_from(partner.to_string())
            .map_err(|_| TlsError::BadPartnerName { section: section.to_owned(), name: partner.to_owned() })?;
        Ok(Self {
            ca: read("CA certificate", format!("{section}.tls_ca"), &files.ca)?,
            cert: read("certificate", format!("{section}.tls_cert"), &files.cert)?,
            key: read("private key", format!("{section}.tls_key"), &files.key)?,
            partner: partner.to_string(),
            refusals: std::sync::Arc::default(),
        })
    }

    /// The material of a peer link of the unit file (the partner's name and
    /// the files are `[configsync]`'s, whichever service's link it is).
    pub fn for_link(link: &duet_config::PeerLink) -> Result<Self, TlsError> {
        let files = TlsFiles { ca: link.tls_ca.clone(), cert: link.tls_cert.clone(), key: link.tls_key.clone() };
        Self::load(&files, &link.partner_name, "configsync")
    }

    /// Checks the material as the partner will see it: the certificate is
    /// signed by the CA and valid now for both ends of a link, issued to
    /// `unit` (this unit's name, what the partner expects), and the key is
    /// the certificate's. Every finding names its setting and the fix.
    pub fn verify(&self, unit: &str, section: &str) -> Vec<String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{PrivateKeyDer, UnixTime};
        let mut found = Vec::new();
        let (ca, cert, key) = match (
            CertificateDer::from_pem_slice(&self.ca),
            CertificateDer::from_pem_slice(&self.cert),
            PrivateKeyDer::from_pem_slice(&self.key),
        ) {
            (Ok(ca), Ok(cert), Ok(key)) => (ca, cert, key),
            (ca, cert, key) => {
                for (ok, field, what) in [
                    (ca.is_ok(), "tls_ca", "a CA certificate"),
                    (cert.is_ok(), "tls_cert", "a certificate"),
                    (key.is_ok(), "tls_key", "a private key"),
                ] {
                    if !ok {
                        found.push(format!("{section}.{field}: no {what} in it (PEM)"));
                    }
                }
                return found;
            }
        };
        let anchor = match webpki::anchor_from_trusted_cert(&ca) {
            Ok(a) => a,
            Err(e) => return vec![format!("{section}.tls_ca: not a usable CA certificate ({e})")],
        };
        let ee = match webpki::EndEntityCert::try_from(&cert) {
            Ok(c) => c,
            Err(e) => return vec![format!("{section}.tls_cert: not a usable certificate ({e})")],
        };
        for (usage, end) in [(webpki::KeyUsage::server_auth(), "server"), (webpki::KeyUsage::client_auth(), "client")] {
            let anchors = [anchor.clone()];
            if let Err(e) =
                ee.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &anchors, &[], UnixTime::now(), usage, None, None)
            {
                found.push(format!(
                    "{section}.tls_cert: not valid as the link's {end} certificate under {section}.tls_ca ({e}): \
                     issue it from that CA (a test pair: `duetctl certs`)"
                ));
                break;
            }
        }
        let named = ServerName::try_from(unit).ok().is_some_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok());
        if !named {
            found.push(format!(
                "{section}.tls_cert: not issued to this unit's name \"{unit}\" (unit.name), which the partner expects: \
                 issue one for it"
            ));
        }
        let matches = rustls::crypto::ring::sign::any_supported_type(&key)
            .ok()
            .map(|k| rustls::sign::CertifiedKey::new(vec![cert.clone()], k).keys_match());
        match matches {
            Some(Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch))) => {
                found
                    .push(format!("{section}.tls_key: not the key of {section}.tls_cert: give that certificate's key"));
            }
            // Matching, or a key that cannot tell its public half.
            Some(_) => {}
            None => found.push(format!("{section}.tls_key: a key type this build cannot use (ECDSA, Ed25519 or RSA)")),
        }
        found
    }

    /// The peers refused so far, by reason.
    pub fn refusals(&self) -> &crate::peer_refusals::PeerRefusals {
        &self.refusals
    }

    /// The server side as rustls takes it: this unit's certificate, a
    /// client certificate signed by the pair's CA required, HTTP/2.
    pub fn rustls_server(&self) -> Result<rustls::ServerConfig, String> {
        use rustls_pki_types::PrivateKeyDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&self.ca) {
            roots.add(c.map_err(|e| format!("the CA file: {e}"))?).map_err(|e| format!("the CA certificate: {e}"))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .map_err(|e| format!("the CA certificate: {e}"))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the certificate file: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| format!("the key file: {e}"))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| format!("the certificate and key: {e}"))?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(cfg)
    }

    /// The partner's expected name.
    pub fn partner(&self) -> &str {
        &self.partner
    }

    /// Server side: present this unit's certificate, require a client
    /// certificate signed by the pair's CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// Client side: present this unit's certificate, accept only a server
    /// certificate for the partner's name signed by the pair's CA.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
            .domain_name(self.partner.clone())
    }

    /// Checks that the client certificate of `req` (already verified against
    /// the CA by the TLS handshake) was issued to the partner.
    pub fn check_peer<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let peer = req.remote_addr().map(|a| a.ip());
        let certs = req.peer_certs().ok_or_else(|| {
            self.refusals.record(peer, crate::peer_refusals::Reason::NoCertificate, "a request without one");
            Status::unauthenticated("a client certificate is required")
        })?;
        let leaf: &CertificateDer<'_> =
            certs.first().ok_or_else(|| Status::unauthenticated("empty certificate chain"))?;
        let ok = webpki::EndEntityCert::try_from(leaf).ok().and_then(|c| {
            let name = ServerName::try_from(self.partner.as_str()).ok()?;
            c.verify_is_valid_for_subject_name(&name).ok()
        });
        if ok.is_none() {
            let detail = format!("expected \"{}\"", self.partner);
            self.refusals.record(peer, crate::peer_refusals::Reason::WrongName, &detail);
            return Err(Status::permission_denied(format!(
                "this unit accepts only its partner \"{}\"; the certificate presented is for another name",
                self.partner
            )));
        }
        Ok(())
    }
}
