//! Whether the drainer's loops still go round. Every network call is bounded in time, so a
//! loop that stops coming round is stuck on something else (a deadlock, a starved runtime);
//! `/healthz` then fails and the kubelet restarts the pod instead of leaving a leader that
//! holds the Lease and does nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The loops' promises: each said when it would come round again.
#[derive(Debug, Default)]
pub struct Liveness {
    loops: Mutex<BTreeMap<&'static str, Instant>>,
}

impl Liveness {
    /// Loop `name` came round and promises to come round again within `within`.
    pub fn beat(&self, name: &'static str, within: Duration) {
        self.lock().insert(name, Instant::now() + within);
    }

    /// Loop `name` ended on purpose (this replica stopped leading): no promise stands.
    pub fn forget(&self, name: &'static str) {
        self.lock().remove(name);
    }

    /// The loops that broke their promise, with how long ago it fell due.
    pub fn stuck(&self) -> Vec<(&'static str, Duration)> {
        self.stuck_at(Instant::now())
    }

    fn stuck_at(&self, now: Instant) -> Vec<(&'static str, Duration)> {
        self.lock()
            .iter()
            .filter(|(_, due)| **due < now)
            .map(|(name, due)| (*name, now - *due))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Instant>> {
        self.loops.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_past_its_promise_is_stuck_until_it_beats_or_is_forgotten() {
        let live = Liveness::default();
        live.beat("queue", Duration::from_secs(30));
        live.beat("lease", Duration::from_secs(5));
        let start = Instant::now();
        assert!(live.stuck_at(start).is_empty());
        let later = live.stuck_at(start + Duration::from_secs(6));
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].0, "lease");
        live.beat("lease", Duration::from_secs(3600));
        live.forget("queue");
        assert!(live.stuck_at(start + Duration::from_secs(60)).is_empty());
    }
}
