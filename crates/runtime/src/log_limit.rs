//! Logging a repeated event once per key (a caller and a reason) every so
//! often: the admin API's refusals and the peer links' share it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When each key was last logged; a key is due again after `every`.
#[derive(Debug)]
pub struct LogLimit<K> {
    every: Duration,
    logged: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq> LogLimit<K> {
    /// A key is logged at most once per `every`.
    pub fn new(every: Duration) -> Self {
        Self { every, logged: Mutex::new(HashMap::new()) }
    }

    /// Whether `key` is to be logged now (and, if so, remembered as
    /// logged); keys not logged within the interval are forgotten.
    pub fn due(&self, key: K) -> bool {
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if logged.get(&key).is_some_and(|t| now.duration_since(*t) < self.every) {
            return false;
        }
        logged.retain(|_, t| now.duration_since(*t) < self.every);
        logged.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_due_once_per_interval_and_other_keys_apart() {
        let l = LogLimit::new(Duration::from_secs(60));
        assert!(l.due(("a", 1)));
        assert!(!l.due(("a", 1)));
        assert!(l.due(("a", 2)));
        let short = LogLimit::new(Duration::from_millis(1));
        assert!(short.due(7));
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.due(7), "due again after the interval");
    }
}
