//! What the processes of a lab host cost, read from `/proc` (which they are:
//! [`duet_testkit::pids_in`]).

use std::collections::HashMap;
use std::fs;
use std::process::Command;

/// CPU time of the reaped children of a process (the scripts it ran) in
/// ns, at clock-tick precision; `None` once it has gone.
pub fn children_ns(pid: u32, ticks_per_s: u64) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after
    // the last ')' are fixed: state is field 3, cutime 16, cstime 17.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some((field(16)? + field(17)?) * 1_000_000_000 / ticks_per_s.max(1))
}

/// CPU time of a process so far in ns from `/proc/<pid>/stat` (utime,
/// stime, cutime, cstime): every thread it ever ran, exited ones included,
/// plus its reaped children, at clock-tick precision (10 ms); `None` once
/// it has gone. For windows of seconds of busy work, where a thread pool's
/// thread may exit inside the window (tokio's blocking threads do after
/// 10 s idle) and take its time out of a sum over the live threads.
pub fn process_cpu_ns(pid: u32, ticks_per_s: u64) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = field(14)? + field(15)? + field(16)? + field(17)?;
    Some(ticks * 1_000_000_000 / ticks_per_s.max(1))
}

/// The threads of a process and the timeslices each has run so far:
/// `(tid, n)`, `n` the third field of `/proc/<pid>/task/<tid>/schedstat`
/// (the times the scheduler has put the thread on a CPU). A thread that
/// sleeps and is woken runs one more timeslice, so over a window the
/// difference counts its wakeups (a preemption counts too: `n` is the
/// thread's `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches`, plus
/// one while it runs). The benchmarks count wakeups this way and no other.
/// `None` once the process has gone.
pub fn timeslices(pid: u32) -> Option<Vec<(u32, u64)>> {
    Some(thread_stats(pid)?.into_iter().map(|(tid, _, n)| (tid, n)).collect())
}

/// The threads of a process with the CPU time (ns) and the timeslices
/// ([`timeslices`]) each has run so far: `(tid, run_ns, slices)`.
pub fn thread_stats(pid: u32) -> Option<Vec<(u32, u64, u64)>> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        // A thread may exit while we look: skip it.
        let Ok(s) = fs::read_to_string(task.path().join("schedstat")) else { continue };
        let f: Vec<u64> = s.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if let [run, _, slices, ..] = f[..] {
            out.push((tid, run, slices));
        }
    }
    Some(out)
}

/// Timeslices run ([`timeslices`]) by the threads of a changing set of
/// processes since a start: each look adds what every thread ran since the
/// previous look; a process or thread first seen after the start counts
/// from zero. A thread that exits between two looks loses what it ran after
/// the first of them, so look often.
#[derive(Debug, Default, Clone)]
pub struct Wakeups {
    /// (pid, tid) -> timeslices at the last look.
    last: HashMap<(u32, u32), u64>,
    counted: u64,
    by_pid: HashMap<u32, u64>,
    /// The same for CPU time (ns): (pid, tid) -> run time at the last look.
    last_ns: HashMap<(u32, u32), u64>,
    ns_by_pid: HashMap<u32, u64>,
}

impl Wakeups {
    /// Starts counting from what the threads of `pids` have run so far.
    pub fn start(pids: &[u32]) -> Self {
        let mut w = Self::default();
        for &pid in pids {
            for (tid, ns, n) in thread_stats(pid).unwrap_or_default() {
                w.last.insert((pid, tid), n);
                w.last_ns.insert((pid, tid), ns);
            }
        }
        w
    }

    /// Adds what the threads of `pids` ran since the previous look.
    pub fn look(&mut self, pids: &[u32]) {
        for &pid in pids {
            for (tid, ns, n) in thread_stats(pid).unwrap_or_default() {
                self.seen(pid, tid, n);
                let d = match self.last_ns.insert((pid, tid), ns) {
                    Some(prev) if ns >= prev => ns - prev,
                    _ => ns,
                };
                *self.ns_by_pid.entry(pid).or_default() += d;
            }
        }
    }

    /// CPU time (ns) run since the start by the threads of `pid`: unlike a
    /// sum over the live threads at two instants, a thread that exited in
    /// between keeps what it ran up to the last look.
    pub fn cpu_ns_by(&self, pid: u32) -> u64 {
        self.ns_by_pid.get(&pid).copied().unwrap_or(0)
    }

    fn seen(&mut self, pid: u32, tid: u32, n: u64) {
        let d = match self.last.insert((pid, tid), n) {
            Some(prev) if n >= prev => n - prev,
            // New since the start, or a thread id reused: from zero.
            _ => n,
        };
        self.counted += d;
        *self.by_pid.entry(pid).or_default() += d;
    }

    /// Timeslices counted since the start by the threads of `pid`.
    pub fn counted_by(&self, pid: u32) -> u64 {
        self.by_pid.get(&pid).copied().unwrap_or(0)
    }

    /// Timeslices counted since the start.
    pub fn counted(&self) -> u64 {
        self.counted
    }
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
        // Clock-tick precision: spin (reading it) until a tick is counted.
        let (busy, tick) = (std::time::Instant::now(), clock_ticks());
        let mut cpu = 0;
        while cpu == 0 && busy.elapsed() < std::time::Duration::from_secs(5) {
            cpu = process_cpu_ns(me, tick).expect("own stat");
        }
        assert!(cpu > 0, "no CPU time in 5 s of spinning");
        assert!(children_ns(me, clock_ticks()).is_some());
        assert!(pss_kib(me).unwrap_or(0) > 0);
        assert!(!comm(me).is_empty());
        assert!(clock_ticks() > 0);
        let runs: u64 = timeslices(me).unwrap_or_default().iter().map(|(_, n)| n).sum();
        assert!(runs > 0, "no timeslices read for {me}");
        let mut w = Wakeups::start(&[]);
        w.look(&[me]);
        assert!(w.counted() > 0, "a process first seen after the start counts from zero");
    }

    #[test]
    fn wakeups_count_differences_and_new_threads_from_zero() {
        let mut w = Wakeups::default();
        // As `start` leaves it.
        w.last.insert((1, 1), 100);
        w.seen(1, 1, 130);
        w.seen(1, 2, 5);
        w.seen(1, 1, 131);
        // The id reused by a new thread: from zero.
        w.seen(1, 2, 2);
        assert_eq!(w.counted(), 30 + 5 + 1 + 2);
        assert_eq!(w.counted_by(1), w.counted());
        assert_eq!(w.counted_by(2), 0);
    }
}
