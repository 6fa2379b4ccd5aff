//! Failure injection, so clients of the sandbox (the drain engine first) can be tested against
//! the 500s and slow answers a real control plane produces under load or during upgrades.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What an injected fault does to the request it hits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// Answer 500 InternalError without touching the store.
    InternalError,
    /// Wait this long, then serve the request normally.
    Delay(Duration),
    /// Wait this long, then answer 504 Timeout without touching the store, as a server whose
    /// storage stalled does.
    Timeout(Duration),
}

#[derive(Debug)]
struct Rule {
    method: Option<String>,
    plural: Option<String>,
    remaining: usize,
    kind: FaultKind,
}

/// Shared handle for arming faults; clones control the same server.
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    rules: Arc<Mutex<Vec<Rule>>>,
}

impl FaultInjector {
    /// Makes the next `count` requests with this HTTP method (`None`: any) to this resource
    /// (plural such as `pods`; `None`: any) fail or slow down as `kind` says.
    pub fn inject(
        &self,
        method: Option<&str>,
        plural: Option<&str>,
        count: usize,
        kind: FaultKind,
    ) {
        self.lock().push(Rule {
            method: method.map(str::to_ascii_uppercase),
            plural: plural.map(String::from),
            remaining: count,
            kind,
        });
    }

    /// Disarms every pending fault.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fault a request hits, consuming one use of the first matching rule.
    pub(crate) fn take(&self, method: &str, plural: &str) -> Option<FaultKind> {
        let mut rules = self.lock();
        let i = rules.iter().position(|r| {
            r.remaining > 0
                && r.method.as_deref().is_none_or(|m| m == method)
                && r.plural.as_deref().is_none_or(|p| p == plural)
        })?;
        rules[i].remaining -= 1;
        let kind = rules[i].kind;
        if rules[i].remaining == 0 {
            rules.remove(i);
        }
        Some(kind)
    }
}
