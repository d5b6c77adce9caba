//! Partners refused on a peer link, by reason: the TLS handshake's
//! (unknown CA, no certificate, a certificate not valid now, anything
//! else) and the name check after it. Each is counted, and logged once per
//! caller and reason every [`LOG_EVERY`]; status and metrics read the
//! counts.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::log_limit::LogLimit;

/// A refusal is logged at most this often per caller and reason.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Why a peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Its certificate is not signed by the pair's CA.
    UnknownCa,
    /// It presented no certificate.
    NoCertificate,
    /// Its certificate is expired, not yet valid or otherwise invalid.
    BadCertificate,
    /// The right CA, but not the partner's name.
    WrongName,
    /// The handshake failed otherwise (not TLS, a timeout, a protocol error).
    Handshake,
}

impl Reason {
    /// Every reason, in the order status lists them.
    pub const ALL: [Self; 5] =
        [Self::UnknownCa, Self::NoCertificate, Self::BadCertificate, Self::WrongName, Self::Handshake];

    /// Its word in logs, status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown_ca",
            Self::NoCertificate => "no_certificate",
            Self::BadCertificate => "bad_certificate",
            Self::WrongName => "wrong_name",
            Self::Handshake => "handshake",
        }
    }

    /// The reason of a failed server-side handshake.
    pub fn of_handshake(e: &std::io::Error) -> Self {
        use rustls::{CertificateError, Error};
        match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
            Some(Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)) => {
                Self::UnknownCa
            }
            Some(Error::InvalidCertificate(_)) => Self::BadCertificate,
            Some(Error::NoCertificatesPresented) => Self::NoCertificate,
            _ => Self::Handshake,
        }
    }

    /// What the operator should do about it.
    fn fix(self) -> &'static str {
        match self {
            Self::UnknownCa => "its certificate is from another CA: give both units certificates of the pair's CA",
            Self::NoCertificate => "it presented no client certificate: is it a duet unit of this pair?",
            Self::BadCertificate => "its certificate is not valid now (expired?): issue a new one",
            Self::WrongName => "its certificate is not issued to configsync.partner_name: check the names",
            Self::Handshake => "not a TLS peer of this pair, or the handshake did not finish",
        }
    }
}

/// The counts and the log's memory of one unit's peer links.
#[derive(Debug)]
pub struct PeerRefusals {
    counts: [AtomicU64; 5],
    logged: LogLimit<(Option<IpAddr>, Reason)>,
}

impl Default for PeerRefusals {
    fn default() -> Self {
        Self { counts: Default::default(), logged: LogLimit::new(LOG_EVERY) }
    }
}

impl PeerRefusals {
    /// Counts a refusal of `peer`, and logs it unless this caller was
    /// logged for it lately.
    pub fn record(&self, peer: Option<IpAddr>, reason: Reason, detail: &str) {
        let n = self.counts[reason as usize].fetch_add(1, Ordering::Relaxed) + 1;
        if !self.logged.due((peer, reason)) {
            return;
        }
        let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        tracing::warn!(
            peer = %peer,
            reason = reason.as_str(),
            "peer link refused {peer}: {} ({detail}; {n} so far for this reason, logged once per peer and reason every {} s)",
            reason.fix(),
            LOG_EVERY.as_secs()
        );
    }

    /// Refusals so far for `reason`.
    pub fn count(&self, reason: Reason) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }

    /// All refusals so far.
    pub fn total(&self) -> u64 {
        Reason::ALL.iter().map(|r| self.count(*r)).sum()
    }

    /// "unknown_ca 3, no_certificate 1", the reasons seen; empty if none.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = Reason::ALL
            .iter()
            .filter_map(|r| Some((r, self.count(*r))).filter(|(_, n)| *n > 0))
            .map(|(r, n)| format!("{} {n}", r.as_str()))
            .collect();
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_by_reason_and_summarised() {
        let r = PeerRefusals::default();
        let ip = Some(IpAddr::from([198, 18, 0, 9]));
        r.record(ip, Reason::UnknownCa, "x");
        r.record(ip, Reason::UnknownCa, "x");
        r.record(None, Reason::NoCertificate, "y");
        assert_eq!(r.count(Reason::UnknownCa), 2);
        assert_eq!(r.total(), 3);
        assert_eq!(r.summary(), "unknown_ca 2, no_certificate 1");
        let e = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::NoCertificatesPresented);
        assert_eq!(Reason::of_handshake(&e), Reason::NoCertificate);
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(Reason::of_handshake(&e), Reason::UnknownCa);
        assert_eq!(Reason::of_handshake(&std::io::Error::other("eof")), Reason::Handshake);
    }
}
