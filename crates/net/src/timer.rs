//! A deadline timer on a `timerfd`: it wakes its task once, at the
//! deadline.
//!
//! tokio's timer wheel parks its thread until the start of the wheel slot
//! that holds the next deadline, and a slot one level up is 64 ms wide (4 s
//! two levels up). So a `sleep` a second away costs two wakeups (the slot's
//! start, then the deadline), one ten seconds away three, and a `sleep`
//! reset before it fires still wakes the thread at its old slot. An idle
//! unit's timers are all of that kind (the next advert, a partner's
//! silence, the next probe), and those extra wakeups were most of an idle
//! service's wakeups. The kernel's timer fires at the deadline, and
//! re-arming it moves it.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::time::{Duration, Instant};

use rustix::time::{
    ClockId, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, clock_gettime, timerfd_create,
    timerfd_settime,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// One deadline at a time, moved with [`Timer::set`], awaited with
/// [`Timer::fired`]. If the kernel's timer cannot be had (or fails), it
/// says so once and falls back to tokio's: a few more wakeups, same
/// deadlines.
#[derive(Debug)]
pub struct Timer {
    /// Opened at the first [`Timer::set`] (in the runtime, which a
    /// registration needs; the timer itself may be made outside it).
    opened: bool,
    kernel: Option<AsyncFd<OwnedFd>>,
    fallback: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: Option<Instant>,
}

impl Timer {
    /// A disarmed timer on `CLOCK_MONOTONIC` (the clock of [`Instant`]).
    pub fn new() -> Self {
        Self { opened: false, kernel: None, fallback: None, armed: None }
    }

    /// The deadline now armed, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.armed
    }

    /// Arms the timer for `deadline` (at once if it has passed), or disarms
    /// it with `None`. Setting the deadline already armed costs nothing.
    pub fn set(&mut self, deadline: Option<Instant>) {
        if deadline == self.armed {
            return;
        }
        self.armed = deadline;
        if !self.opened {
            self.opened = true;
            self.kernel = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)
                .map_err(io::Error::from)
                .and_then(register)
                .map_err(|e| tracing::warn!("no timerfd ({e}): using tokio's timer, which wakes more often"))
                .ok();
        }
        if let Some(fd) = &self.kernel {
            match arm(fd, deadline) {
                Ok(()) => return,
                Err(e) => self.fall_back(&e),
            }
        }
        self.fallback = deadline.map(|d| Box::pin(tokio::time::sleep_until(d.into())));
    }

    /// Completes once the armed deadline has passed, and disarms the timer;
    /// never completes while it is disarmed. Cancel-safe: dropping the
    /// future keeps the deadline and its expiry.
    pub async fn fired(&mut self) {
        let Some(at) = self.armed else {
            return std::future::pending().await;
        };
        if let Some(fd) = &self.kernel {
            match expired(fd).await {
                Ok(()) => {
                    self.armed = None;
                    return;
                }
                Err(e) => {
                    self.fall_back(&e);
                    self.fallback = Some(Box::pin(tokio::time::sleep_until(at.into())));
                }
            }
        }
        if let Some(sleep) = self.fallback.as_mut() {
            sleep.as_mut().await;
        }
        self.fallback = None;
        self.armed = None;
    }

    fn fall_back(&mut self, e: &io::Error) {
        tracing::warn!("the timerfd failed ({e}): using tokio's timer, which wakes more often");
        self.kernel = None;
    }
}

impl Default for Timer {
    fn default() -> Self {
        Self::new()
    }
}

/// Arms (or with `None` disarms) the kernel's timer, absolute.
fn arm(fd: &AsyncFd<OwnedFd>, deadline: Option<Instant>) -> io::Result<()> {
    let value = match deadline {
        None => Timespec { tv_sec: 0, tv_nsec: 0 },
        Some(at) => {
            // Instant has no public timespec; it reads the same clock, so
            // the kernel's now plus what is left is the same point in time.
            let left = at.saturating_duration_since(Instant::now());
            add(clock_gettime(ClockId::Monotonic), left.max(Duration::from_nanos(1)))
        }
    };
    let spec = Itimerspec { it_interval: Timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
    timerfd_settime(fd.get_ref(), TimerfdTimerFlags::ABSTIME, &spec)?;
    Ok(())
}

/// Waits for the armed kernel timer to expire.
async fn expired(fd: &AsyncFd<OwnedFd>) -> io::Result<()> {
    loop {
        let mut guard = fd.readable().await?;
        // Eight bytes, the expirations since it was armed; re-arming resets
        // them, so a read that would block means not yet.
        match guard.try_io(|fd| rustix::io::read(fd.get_ref(), &mut [0u8; 8]).map_err(io::Error::from)) {
            Ok(r) => return r.map(drop),
            Err(_would_block) => {}
        }
    }
}

/// `t + d` (both normalised: nanoseconds below one second).
fn add(t: Timespec, d: Duration) -> Timespec {
    let nanos = t.tv_nsec + i64::from(d.subsec_nanos());
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
    Timespec {
        tv_sec: t.tv_sec.saturating_add(secs).saturating_add(nanos / 1_000_000_000),
        tv_nsec: nanos % 1_000_000_000,
    }
}

/// Registers a descriptor (a timer's, a pidfd) with tokio's reactor for readability.
#[allow(unsafe_code)]
pub(crate) fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` owns its descriptor and closes it on drop; it is
    // moved into the `AsyncFd`, which drops it last, and is never cloned.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLACK: Duration = Duration::from_millis(200);

    /// Each property holds for the kernel's timer and for the fallback.
    fn both() -> [Timer; 2] {
        let mut kernel = Timer::new();
        kernel.set(None);
        kernel.set(Some(Instant::now() + Duration::from_secs(60)));
        assert!(kernel.kernel.is_some(), "no timerfd here");
        kernel.set(None);
        [kernel, Timer { opened: true, kernel: None, fallback: None, armed: None }]
    }

    #[tokio::test]
    async fn fires_at_its_deadline_and_not_before() {
        for mut t in both() {
            let at = Instant::now() + Duration::from_millis(50);
            t.set(Some(at));
            t.fired().await;
            let now = Instant::now();
            assert!(now >= at, "fired {:?} early", at - now);
            assert!(now < at + SLACK, "fired {:?} late", now - at);
            assert_eq!(t.deadline(), None, "a fired timer is disarmed");
        }
    }

    #[tokio::test]
    async fn a_moved_deadline_is_the_one_that_fires_and_a_past_one_fires_at_once() {
        for mut t in both() {
            t.set(Some(Instant::now() + Duration::from_millis(20)));
            let later = Instant::now() + Duration::from_millis(150);
            t.set(Some(later));
            t.fired().await;
            assert!(Instant::now() >= later, "the first deadline fired after it was moved");
            let past = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
            t.set(Some(past));
            tokio::time::timeout(SLACK, t.fired()).await.expect("a past deadline did not fire");
        }
    }

    #[tokio::test]
    async fn a_disarmed_timer_never_fires_and_an_expiry_survives_a_dropped_wait() {
        for mut t in both() {
            t.set(Some(Instant::now() + Duration::from_millis(10)));
            t.set(None);
            assert!(
                tokio::time::timeout(Duration::from_millis(100), t.fired()).await.is_err(),
                "a disarmed timer fired"
            );
            t.set(Some(Instant::now() + Duration::from_millis(10)));
            // A wait dropped before the deadline (a select! that took
            // another branch) leaves the deadline armed for the next wait.
            assert!(tokio::time::timeout(Duration::from_millis(1), t.fired()).await.is_err());
            tokio::time::sleep(Duration::from_millis(30)).await;
            tokio::time::timeout(SLACK, t.fired()).await.expect("the expiry was lost");
        }
    }
}
