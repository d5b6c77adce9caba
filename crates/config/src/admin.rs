//! Who may call the unit's gRPC APIs (O5): the `[admin]` section and its
//! tokens file, checked here once for `duet check` and for every service.
//!
//! ```toml
//! [admin]
//! tokens_file = "/etc/duet/admin-tokens"   # "<role> <token>" per line
//! # allow_plaintext_remote = false         # an API beyond loopback without TLS
//! ```
//!
//! The tokens file holds one `<role> <token>` per line (`#` starts a
//! comment): role `viewer` (status, configuration and watches) or
//! `operator` (everything). It must not be readable by group or others.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::problems::Problems;

/// `[admin]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Bearer tokens with their roles; without it the APIs are open to
    /// whoever reaches them (loopback only, unless allowed below).
    pub tokens_file: Option<PathBuf>,
    /// Lets an API listen beyond loopback without TLS: tokens and the
    /// configuration then travel in clear.
    pub allow_plaintext_remote: bool,
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdminRole {
    /// Read: status, configuration, history, watches.
    Viewer,
    /// Everything a viewer may, and change: handover, configuration,
    /// pacification, readiness and persistence reports.
    Operator,
}

impl AdminRole {
    /// The word used in the tokens file and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
        }
    }
}

impl fmt::Display for AdminRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shortest token accepted: 128 bits in hex.
const MIN_TOKEN_LEN: usize = 32;

/// The tokens of a unit, read from its tokens file.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminTokens {
    entries: Vec<(AdminRole, String)>,
    /// The unit's own services call each other with this one (operator):
    /// derived from the file, so every process that can read the file
    /// knows it and nothing else does.
    internal: String,
}

impl fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("AdminTokens").field("tokens", &self.entries.len()).finish_non_exhaustive()
    }
}

impl AdminTokens {
    /// Parses a tokens file's text; every problem found, by line.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(role), Some(token), None) = (words.next(), words.next(), words.next()) else {
                problems.push(format!("line {}: expected \"<role> <token>\" (two words)", n + 1));
                continue;
            };
            let role = match role {
                "viewer" => AdminRole::Viewer,
                "operator" => AdminRole::Operator,
                other => {
                    problems.push(format!("line {}: role \"{other}\" is not one of viewer, operator", n + 1));
                    continue;
                }
            };
            if token.len() < MIN_TOKEN_LEN || !token.is_ascii() {
                problems.push(format!(
                    "line {}: the token is too short or not ASCII: use at least {MIN_TOKEN_LEN} characters, e.g. from `openssl rand -hex 16`",
                    n + 1
                ));
                continue;
            }
            if entries.iter().any(|(_, t)| t == token) {
                problems.push(format!("line {}: the same token is listed twice", n + 1));
                continue;
            }
            entries.push((role, token.to_owned()));
        }
        if entries.is_empty() && problems.is_empty() {
            problems.push("no token in it: add a line \"operator <token>\"".into());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let internal = hex(&Sha256::new().chain_update(b"duet internal caller\n").chain_update(text).finalize());
        Ok(Self { entries, internal })
    }

    /// Reads and parses `path`, refusing a file that group or others can
    /// read.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let meta = std::fs::metadata(path).map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(vec![format!(
                "{} is readable by group or others (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            )]);
        }
        let text = std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        Self::parse(&text)
    }

    /// The role of a presented token, if it is one of them.
    pub fn role_of(&self, token: &str) -> Option<AdminRole> {
        if eq(token, &self.internal) {
            return Some(AdminRole::Operator);
        }
        self.entries.iter().find(|(_, t)| eq(token, t)).map(|(r, _)| *r)
    }

    /// The token the unit's own services present to each other.
    pub fn internal(&self) -> &str {
        &self.internal
    }

    /// The first token with `role`, for a local tool (duetctl reading the
    /// unit file).
    pub fn first(&self, role: AdminRole) -> Option<&str> {
        self.entries.iter().find(|(r, _)| *r == role).map(|(_, t)| t.as_str())
    }
}

/// Compares without stopping at the first difference.
fn eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `[admin]` against the APIs' listen addresses: the tokens file
/// (when set) read and parsed, and no API beyond loopback in clear unless
/// allowed. Returns the tokens.
pub(crate) fn resolve(
    admin: &AdminSection,
    listens: &[(&str, &str)],
    e: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<AdminTokens> {
    let tokens = admin.tokens_file.as_ref().and_then(|p| match AdminTokens::load(p) {
        Ok(t) => Some(t),
        Err(problems) => {
            for p in problems {
                e.add("admin.tokens_file", p);
            }
            None
        }
    });
    for &(field, value) in listens {
        let Ok(addr) = value.parse::<SocketAddr>() else { continue };
        if addr.ip().is_loopback() {
            continue;
        }
        if !admin.allow_plaintext_remote {
            e.add(
                field,
                format!(
                    "{addr} is beyond loopback and the API has no TLS: use 127.0.0.1:{}, or set admin.allow_plaintext_remote = true (with admin.tokens_file; tokens then travel in clear)",
                    addr.port()
                ),
            );
        } else if admin.tokens_file.is_none() {
            warnings.push(format!(
                "{field} = \"{addr}\" without admin.tokens_file: anyone who reaches it can hand over and change the configuration"
            ));
        } else {
            warnings.push(format!(
                "{field} = \"{addr}\" in clear (admin.allow_plaintext_remote): tokens travel unencrypted"
            ));
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    const OP: &str = "0123456789abcdef0123456789abcdef";
    const VIEW: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn roles_come_from_the_file_and_the_internal_token_is_an_operator() {
        let t = AdminTokens::parse(&format!("# comment\noperator {OP}\n\nviewer {VIEW}  # the dashboard\n")).unwrap();
        assert_eq!(t.role_of(OP), Some(AdminRole::Operator));
        assert_eq!(t.role_of(VIEW), Some(AdminRole::Viewer));
        assert_eq!(t.role_of("nope"), None);
        assert_eq!(t.role_of(&OP[1..]), None);
        assert_eq!(t.role_of(t.internal()), Some(AdminRole::Operator));
        assert_eq!(t.first(AdminRole::Viewer), Some(VIEW));
        assert!(!format!("{t:?}").contains(OP), "Debug shows a token");
        // Another file, another internal token.
        let u = AdminTokens::parse(&format!("operator {VIEW}\n")).unwrap();
        assert_ne!(t.internal(), u.internal());
    }

    #[test]
    fn every_bad_line_is_reported_at_once() {
        let errs = AdminTokens::parse(&format!("admin {OP}\noperator short\noperator\nviewer {VIEW}\nviewer {VIEW}\n"))
            .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].starts_with("line 1: role \"admin\" is not one of viewer, operator"), "{errs:?}");
        assert!(errs[1].starts_with("line 2: the token is too short"), "{errs:?}");
        assert!(errs[2].starts_with("line 3: expected"), "{errs:?}");
        assert!(errs[3].starts_with("line 5: the same token"), "{errs:?}");
        assert!(AdminTokens::parse("# nothing\n").unwrap_err()[0].contains("no token"));
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("duet-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tokens");
        std::fs::write(&p, format!("operator {OP}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(AdminTokens::load(&p).unwrap_err()[0].contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(AdminTokens::load(&p).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_api_beyond_loopback_needs_to_be_allowed() {
        let mut e = Problems::default();
        let mut w = Vec::new();
        let listens = [("election.listen", "0.0.0.0:7870"), ("takeover.listen", "127.0.0.1:7871")];
        resolve(&AdminSection::default(), &listens, &mut e, &mut w);
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].field, "election.listen");
        assert!(e.0[0].message.contains("admin.allow_plaintext_remote = true"), "{:?}", e.0);
        let mut e = Problems::default();
        let allowed = AdminSection { tokens_file: None, allow_plaintext_remote: true };
        resolve(&allowed, &listens, &mut e, &mut w);
        assert!(e.0.is_empty());
        assert!(w[0].contains("anyone who reaches it"), "{w:?}");
    }
}
