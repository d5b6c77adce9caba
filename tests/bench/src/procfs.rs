//! What the processes of a lab host cost, read from `/proc` (which they are:
//! [`duet_testkit::pids_in`]).

use std::fs;
use std::process::Command;

/// CPU time of a process so far in ns: the run time of each of its live
/// threads (`/proc/<pid>/task/*/schedstat`, ns precision) plus the CPU time
/// of its reaped children (scripts it ran, clock-tick precision); `None`
/// once it has gone.
pub fn cpu_ns(pid: u32, ticks_per_s: u64) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after
    // the last ')' are fixed: state is field 3, cutime 16, cstime 17.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let children = (field(16)? + field(17)?) * 1_000_000_000 / ticks_per_s.max(1);
    let mut threads = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread may exit while we look: skip it.
        if let Some(ns) = fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            threads += ns;
        }
    }
    Some(threads + children)
}

/// Proportional set size of a process in KiB; `None` once it has gone.
pub fn pss_kib(pid: u32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// Resident set size (VmRSS) of a process in KiB; `None` once it has gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// The number after `key` in a `/proc` file of "key: N kB" lines.
fn kib_field(path: &str, key: &str) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The command name of a process (`/proc/<pid>/comm`).
pub fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(cpu_ns(me, clock_ticks()).is_some_and(|ns| ns > 0));
        assert!(pss_kib(me).unwrap_or(0) > 0);
        assert!(!comm(me).is_empty());
        assert!(clock_ticks() > 0);
    }
}
