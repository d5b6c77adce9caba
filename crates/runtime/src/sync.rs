//! Locks the services share state with.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`. A poisoned lock only means that a task panicked while holding
/// it; what it guards here is plain values (status, counters, tables), still
/// usable, and the panic itself is logged and shown in health by
/// [`crate::tasks`]. So the guard is taken back instead of panicking again.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
