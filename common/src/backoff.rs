//! Per-object exponential backoff with jitter for reconcile retries (kube-runtime has none
//! built in). Entries exist only for objects that are failing right now, so memory is
//! bounded by the number of failing objects and never grows per retry.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

/// Retry delays per key: `base * 2^(failures-1)`, capped at `max`, with up to ±`jitter`
/// (a fraction) applied so that objects failing together do not retry in lockstep.
#[derive(Debug)]
pub struct Backoff<K> {
    base: Duration,
    max: Duration,
    jitter: f64,
    failures: Mutex<HashMap<K, u32>>,
}

impl<K: Eq + Hash + Clone> Backoff<K> {
    /// A backoff from `base` up to `max` with ±20% jitter.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, jitter: 0.2, failures: Mutex::default() }
    }

    /// Records a failure of `key` and returns how long to wait before retrying it.
    pub fn next_delay(&self, key: &K) -> Duration {
        let failures = {
            let mut map = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let failures = map.entry(key.clone()).or_insert(0);
            *failures = failures.saturating_add(1);
            *failures
        };
        let exponent = failures.saturating_sub(1).min(30);
        let delay = self.base.saturating_mul(1u32 << exponent).min(self.max);
        let factor = 1.0 + rand::rng().random_range(-self.jitter..=self.jitter);
        delay.mul_f64(factor).min(self.max)
    }

    /// Forgets `key` after a success, so its next failure starts from `base` again.
    pub fn reset(&self, key: &K) {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(key);
    }

    /// Number of keys currently backing off.
    pub fn len(&self) -> usize {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Whether no key is backing off.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for (attempt, expected) in [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0].into_iter().enumerate() {
            let delay = backoff.next_delay(&"a").as_secs_f64();
            let (low, high) = (expected * 0.8, (expected * 1.2f64).min(60.0));
            assert!(delay >= low - 1e-9 && delay <= high + 1e-9, "attempt {attempt}: {delay} not in [{low}, {high}]");
        }
    }

    #[test]
    fn keys_are_independent_and_reset_forgets() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..5 {
            backoff.next_delay(&"a");
        }
        assert!(backoff.next_delay(&"b") <= Duration::from_millis(1200));
        backoff.reset(&"a");
        backoff.reset(&"b");
        assert!(backoff.is_empty());
        assert!(backoff.next_delay(&"a") <= Duration::from_millis(1200));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for _ in 0..10_000 {
            assert!(backoff.next_delay(&1) <= Duration::from_secs(300));
        }
        assert_eq!(backoff.len(), 1);
    }
}
