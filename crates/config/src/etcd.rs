//! How a unit reaches an etcd cluster: the endpoints and TLS of `[witness]`
//! (E14) and `[fleet]` (O7), resolved by one rule.

use std::path::PathBuf;

use duet_model::Problem;

/// The CA to check etcd's certificates with, and this unit's client
/// certificate when etcd asks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// What a section says of its etcd client, as written.
pub(crate) struct ClientFields<'a> {
    /// The section's name, for the fields (`witness`, `fleet`).
    pub section: &'a str,
    /// What the connection is for, in the plaintext warning.
    pub purpose: &'a str,
    pub endpoints: &'a [String],
    pub tls_ca: &'a Option<PathBuf>,
    pub tls_cert: &'a Option<PathBuf>,
    pub tls_key: &'a Option<PathBuf>,
    pub insecure_plaintext: bool,
}

/// The endpoints as URLs (`https://host:port`, or `http://` in plaintext)
/// and the TLS settings; every problem names its field, and plaintext is
/// warned about. `None` when a problem was found.
pub(crate) fn resolve(
    f: &ClientFields<'_>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) -> Option<(Vec<String>, Option<EtcdTls>)> {
    let before = problems.len();
    let sec = f.section;
    let mut err = |field: &str, message: String| problems.push(Problem::new(format!("{sec}.{field}"), message));
    if f.endpoints.is_empty() {
        err(
            "endpoints",
            "no etcd endpoint: list the members of the etcd cluster, e.g. [\"198.18.0.21:2379\", \"198.18.0.22:2379\", \
             \"198.18.0.23:2379\"]"
                .into(),
        );
    }
    let mut endpoints = Vec::new();
    for (k, e) in f.endpoints.iter().enumerate() {
        let field = format!("endpoints[{k}]");
        match endpoint_url(e, f.insecure_plaintext) {
            Ok(url) => endpoints.push(url),
            Err(EndpointProblem::WrongScheme) => {
                let why = if f.insecure_plaintext {
                    format!("{sec}.insecure_plaintext is set: use http:// or no scheme")
                } else {
                    format!("the {sec} talks TLS: use https:// or no scheme (or set {sec}.insecure_plaintext = true)")
                };
                err(&field, format!("\"{e}\": {why}"));
            }
            Err(EndpointProblem::NotHostPort) => {
                err(&field, format!("\"{e}\" is not host:port, e.g. \"198.18.0.21:2379\""));
            }
        }
    }
    let tls = if f.insecure_plaintext {
        for (name, v) in [("tls_ca", f.tls_ca), ("tls_cert", f.tls_cert), ("tls_key", f.tls_key)] {
            if v.is_some() {
                err(name, format!("{sec}.insecure_plaintext = true and TLS exclude each other: remove one"));
            }
        }
        warnings.push(format!(
            "{sec}.insecure_plaintext = true: the {sec} talks to etcd without TLS; anyone on the way can read or \
             forge {}; give {sec}.tls_ca (and a client certificate)",
            f.purpose
        ));
        None
    } else {
        if f.tls_ca.is_none() {
            err(
                "tls_ca",
                format!(
                    "missing: the {sec} talks TLS to etcd; give the CA of the etcd members' certificates (or set \
                     {sec}.insecure_plaintext = true in a test setup)"
                ),
            );
        }
        let identity = match (f.tls_cert, f.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            (Some(_), None) => {
                err("tls_key", format!("missing: {sec}.tls_cert is set; give both (a client certificate) or neither"));
                None
            }
            (None, Some(_)) => {
                err("tls_cert", format!("missing: {sec}.tls_key is set; give both (a client certificate) or neither"));
                None
            }
        };
        f.tls_ca.clone().map(|ca| EtcdTls { ca, identity })
    };
    (problems.len() == before).then_some((endpoints, tls))
}

/// Why an etcd endpoint is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointProblem {
    /// `http://` where TLS is spoken, or `https://` in plaintext (or
    /// another scheme).
    WrongScheme,
    /// Not `host:port` with a port of 1-65535.
    NotHostPort,
}

/// An etcd endpoint as a URL: `host:port`, or with the scheme that
/// `plaintext` says (`http://` with it, `https://` without).
pub fn endpoint_url(e: &str, plaintext: bool) -> Result<String, EndpointProblem> {
    let scheme = if plaintext { "http" } else { "https" };
    let rest = match e.split_once("://") {
        Some((s, _)) if s != scheme => return Err(EndpointProblem::WrongScheme),
        Some((_, rest)) => rest,
        None => e,
    };
    let rest = rest.trim_end_matches('/');
    let port_ok = rest.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if !port_ok {
        return Err(EndpointProblem::NotHostPort);
    }
    Ok(format!("{scheme}://{rest}"))
}
