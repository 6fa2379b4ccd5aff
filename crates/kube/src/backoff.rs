//! Jittered exponential backoff that honours the server's `Retry-After`.
//!
//! Karpenter's eviction queue backs off per pod from 100 ms to 10 s (`terminator/eviction.go`);
//! the API server asks for 10 s after a PDB refusal (`retryAfterSeconds` in the 429 Status).
//! We wait for the larger of the two, with ±20 % jitter so that many drainers hitting the same
//! budget do not retry in lockstep, and never past the deadline.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// First retry delay.
pub const INITIAL: Duration = Duration::from_millis(100);
/// Longest delay we choose ourselves (the server may ask for more).
pub const MAX: Duration = Duration::from_secs(10);

/// Backoff state for one operation (one pod's eviction, one read).
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The delay before the next attempt, at least `retry_after` when the server gave one.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let exp = INITIAL.saturating_mul(1 << self.attempt.min(16)).min(MAX);
        self.attempt += 1;
        let base = exp.max(retry_after.unwrap_or_default());
        let jitter = rand::rng().random_range(0.8..1.2);
        base.mul_f64(jitter)
    }

    /// Sleeps for the next delay; `false` (without sleeping) when it would end past `deadline`.
    pub async fn wait(&mut self, retry_after: Option<Duration>, deadline: Instant) -> bool {
        let wake = Instant::now() + self.next_delay(retry_after);
        if wake > deadline {
            return false;
        }
        tokio::time::sleep_until(wake).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_honours_retry_after() {
        let mut b = Backoff::default();
        let first = b.next_delay(None);
        assert!(
            first >= Duration::from_millis(80) && first <= Duration::from_millis(120),
            "{first:?}"
        );
        let second = b.next_delay(None);
        assert!(second >= Duration::from_millis(160), "{second:?}");
        for _ in 0..20 {
            assert!(b.next_delay(None) <= MAX.mul_f64(1.2));
        }
        let mut fresh = Backoff::default();
        assert!(fresh.next_delay(Some(Duration::from_secs(10))) >= Duration::from_secs(8));
    }

    #[tokio::test]
    async fn refuses_to_sleep_past_the_deadline() {
        let mut b = Backoff::default();
        assert!(
            !b.wait(
                Some(Duration::from_secs(60)),
                Instant::now() + Duration::from_secs(1)
            )
            .await
        );
    }
}
