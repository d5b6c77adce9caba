//! Notify hooks (O6): commands run when the unit's role changes, as
//! keepalived's notify_master / notify_backup / notify_fault.
//!
//! ```toml
//! [hooks]
//! on_active = ["/usr/local/bin/ha-notify", "active"]   # program and arguments
//! on_standby = ["/usr/local/bin/ha-notify", "standby"]
//! on_fault = ["/usr/local/bin/ha-notify", "fault"]      # pacified, or the role could not be applied
//! on_stopping = ["/usr/local/bin/ha-notify", "stopping"]
//! timeout_ms = 5000
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// `[hooks]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksSection {
    /// Run when the unit has taken the active role (its addresses are up).
    pub on_active: Vec<String>,
    /// Run when the unit is standby.
    pub on_standby: Vec<String>,
    /// Run when the unit is pacified, or its role could not be applied.
    pub on_fault: Vec<String>,
    /// Run when the unit is giving the role up or stopping.
    pub on_stopping: Vec<String>,
    /// A hook still running after this long is killed.
    pub timeout_ms: u64,
}

impl Default for HooksSection {
    fn default() -> Self {
        Self {
            on_active: Vec::new(),
            on_standby: Vec::new(),
            on_fault: Vec::new(),
            on_stopping: Vec::new(),
            timeout_ms: 5000,
        }
    }
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    Active,
    Standby,
    Fault,
    Stopping,
}

impl HookKind {
    /// The word in the environment (`DUET_ROLE`), logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Standby => "standby",
            Self::Fault => "fault",
            Self::Stopping => "stopping",
        }
    }
}

/// The hooks of a unit, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    commands: Vec<(HookKind, Vec<String>)>,
    pub timeout: Duration,
}

impl Hooks {
    /// The command (program and arguments) for `kind`, if one is set.
    pub fn command(&self, kind: HookKind) -> Option<&[String]> {
        self.commands.iter().find(|(k, _)| *k == kind).map(|(_, c)| c.as_slice())
    }

    /// Whether any hook is set.
    pub fn any(&self) -> bool {
        !self.commands.is_empty()
    }
}

/// Checks `[hooks]`: each program exists and may be executed (a name
/// without `/` is looked up in PATH), the timeout is in range.
pub(crate) fn resolve(h: &HooksSection, e: &mut Problems) -> Hooks {
    e.in_range("hooks.timeout_ms", h.timeout_ms, 100..=600_000, "ms");
    let mut commands = Vec::new();
    for (kind, field, cmd) in [
        (HookKind::Active, "hooks.on_active", &h.on_active),
        (HookKind::Standby, "hooks.on_standby", &h.on_standby),
        (HookKind::Fault, "hooks.on_fault", &h.on_fault),
        (HookKind::Stopping, "hooks.on_stopping", &h.on_stopping),
    ] {
        let Some(program) = cmd.first() else { continue };
        match executable(program) {
            Ok(_) => commands.push((kind, cmd.clone())),
            Err(why) => e.add(format!("{field}[0]"), why),
        }
    }
    Hooks { commands, timeout: Duration::from_millis(h.timeout_ms) }
}

/// Where `program` is, if it can be executed.
pub(crate) fn executable(program: &str) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    let runnable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    candidates.into_iter().find(|p| runnable(p)).ok_or_else(|| {
        if program.contains('/') {
            format!("\"{program}\" is not an executable file: give the program's path (chmod +x it)")
        } else {
            format!("\"{program}\" is not found in PATH: give the program's full path")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_must_exist_and_run_and_every_problem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("notify");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut e = Problems::default();
        let h = HooksSection {
            on_active: vec!["sh".into(), "-c".into(), "true".into()],
            on_standby: vec!["/nonexistent/notify".into()],
            on_fault: vec!["no-such-program-anywhere".into()],
            on_stopping: vec![plain.to_string_lossy().into_owned()],
            timeout_ms: 50,
        };
        let hooks = resolve(&h, &mut e);
        let fields: Vec<&str> = e.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["hooks.timeout_ms", "hooks.on_standby[0]", "hooks.on_fault[0]", "hooks.on_stopping[0]"],
            "{:?}",
            e.0
        );
        assert!(e.0[2].message.contains("not found in PATH"), "{:?}", e.0);
        assert_eq!(hooks.command(HookKind::Active).map(<[String]>::len), Some(3));
        assert!(hooks.command(HookKind::Standby).is_none());
    }
}
