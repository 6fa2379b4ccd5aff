//! Creations and deletions a controller has made but not yet seen in its cache — upstream's
//! `ControllerExpectations` (`pkg/controller/controller_utils.go`). Until the cache catches
//! up, acting again would count the same gap twice: two passes creating the same missing pod.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};

/// How long an unmet expectation blocks its owner before it is presumed lost (a pod created
/// and deleted again before our watch saw it); upstream waits 5 minutes, a simulation less.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Pending {
    created: HashSet<String>,
    deleted: HashSet<String>,
    since: Option<Instant>,
}

/// Expected pod creations and deletions per owner (`namespace/name`).
#[derive(Default)]
pub(crate) struct Expectations {
    pending: HashMap<String, Pending>,
}

impl Expectations {
    /// Records that `owner` created the pod `name`.
    pub(crate) fn created(&mut self, owner: &str, name: String) {
        let pending = self.pending.entry(owner.to_owned()).or_default();
        pending.since.get_or_insert_with(Instant::now);
        pending.created.insert(name);
    }

    /// Records that `owner` deleted the pod `name`.
    pub(crate) fn deleted(&mut self, owner: &str, name: String) {
        let pending = self.pending.entry(owner.to_owned()).or_default();
        pending.since.get_or_insert_with(Instant::now);
        pending.deleted.insert(name);
    }

    /// `None` when the cache reflects everything `owner` did in `namespace`, so it may act;
    /// otherwise how long until the expectations time out.
    pub(crate) fn wait(
        &mut self,
        owner: &str,
        namespace: &str,
        pods: &Store<Pod>,
    ) -> Option<Duration> {
        let pending = self.pending.get_mut(owner)?;
        let lookup = |name: &String| pods.get(&ObjectRef::new(name).within(namespace));
        pending.created.retain(|name| lookup(name).is_none());
        pending
            .deleted
            .retain(|name| lookup(name).is_some_and(|p| p.metadata.deletion_timestamp.is_none()));
        let age = pending.since.map_or(TIMEOUT, |since| since.elapsed());
        if (pending.created.is_empty() && pending.deleted.is_empty()) || age >= TIMEOUT {
            self.pending.remove(owner);
            return None;
        }
        Some(TIMEOUT - age)
    }
}
