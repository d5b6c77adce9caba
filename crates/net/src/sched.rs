//! Real-time scheduling for a latency-critical process (the election with
//! the fast profile): `SCHED_RR` at a given priority for the calling thread
//! only. What it forks or spawns later (a tracked check's command, a
//! blocking-pool thread) starts in the normal policy (`SCHED_RESET_ON_FORK`):
//! a check script must not compete with the adverts at real-time priority.

use std::io;

/// Puts the calling thread in `SCHED_RR` at `priority` (1-99); threads and
/// processes it creates afterwards do not inherit it. Call it on the thread
/// that runs the protocol (a current-thread runtime's). Needs
/// `CAP_SYS_NICE` (or an `RLIMIT_RTPRIO` that allows it).
#[allow(unsafe_code)]
pub fn set_realtime(priority: u8) -> io::Result<()> {
    if !(1..=99).contains(&priority) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "real-time priority must be 1-99"));
    }
    let param = libc::sched_param { sched_priority: libc::c_int::from(priority) };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the
    // call; pid 0 is the calling thread. No memory is retained by the kernel.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &raw const param) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The calling thread's scheduling policy (`libc::SCHED_*`, without the
/// reset-on-fork flag).
#[allow(unsafe_code)]
pub fn policy() -> io::Result<i32> {
    // SAFETY: no arguments besides the pid (0: the calling thread).
    let rc = unsafe { libc::sched_getscheduler(0) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc & !libc::SCHED_RESET_ON_FORK) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn out_of_range_priorities_are_refused() {
        assert!(super::set_realtime(0).is_err());
        assert!(super::set_realtime(100).is_err());
        assert!(super::policy().is_ok());
    }
}
